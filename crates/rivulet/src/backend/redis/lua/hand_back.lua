-- Hands entries pending on a stopping consumer back to its group (B-REC-3): each is
-- settled and copied to the group's retry lane, in one step, so any consumer takes it at
-- once. The copy keeps every field; the first-publish time is added when the entry relied
-- on its id for it. Entries whose data is gone stay pending (a reclaim reports them).
--
-- KEYS[1]  the stream the entries are pending in (topic, dead-letter queue or lane)
-- KEYS[2]  the group's retry lane
-- ARGV[1]  group
-- ARGV[2]  '1' when KEYS[1] is the group's retry lane
-- ARGV[3..] entry ids (bounded by the caller's page size)
-- Returns how many entries were handed back.
local moved = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  local e = found[1]
  if e and e[2] and #e[2] <= 4096 then
    local fields = e[2]
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
    redis.call('XACK', KEYS[1], ARGV[1], id)
    if ARGV[2] == '1' then
      redis.call('XDEL', KEYS[1], id)
    end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    moved = moved + 1
  end
end
return moved
