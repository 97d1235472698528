-- Hands back topic entries a stopping subscription read but did not start, and that are
-- pending nowhere because their group was deleted and re-created after they were read:
-- each is copied to the group's retry lane, so it is not lost. An entry pending on any
-- consumer is left alone (it was reclaimed, or is still held), and so is one whose
-- group's incarnation has not changed (it was settled: nothing to hand back).
--
-- KEYS[1]  the topic's stream
-- KEYS[2]  the group's retry lane
-- KEYS[3]  the groups' incarnations
-- ARGV[1]  group
-- ARGV[2..] pairs: entry id, the incarnation that delivered it (bounded by the caller)
-- Returns how many entries were copied.
local current = tostring(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local copied = 0
for i = 2, #ARGV - 1, 2 do
  local id, generation = ARGV[i], ARGV[i + 1]
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local nowhere = (pending['err'] ~= nil) or #pending == 0
  if nowhere and generation ~= current then
    local found = redis.call('XRANGE', KEYS[1], id, id)[1]
    if found and found[2] and #found[2] <= 4096 then
      local fields = found[2]
      local has_ts = false
      for j = 1, #fields, 2 do
        if fields[j] == 'ts' then
          has_ts = true
        end
      end
      if not has_ts then
        fields[#fields + 1] = 'ts'
        fields[#fields + 1] = string.match(id, '^(%d+)') or '0'
      end
      redis.call('XADD', KEYS[2], '*', unpack(fields))
      copied = copied + 1
    end
  end
end
return copied
