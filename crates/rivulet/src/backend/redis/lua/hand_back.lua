-- Hands entries pending on a stopping consumer back to its group (B-REC-3): each is
-- copied to the group's retry lane and then settled, in one step, so any consumer takes
-- it at once. Only entries still pending on that consumer are touched (one another
-- subscription or process holds is left alone). The copy keeps every field; the
-- first-publish time is added when the entry relied on its id for it. Entries whose data
-- is gone stay pending (a reclaim reports them).
--
-- KEYS[1]  the stream the entries are pending in (topic, dead-letter queue or lane)
-- KEYS[2]  the group's retry lane
-- ARGV[1]  group
-- ARGV[2]  '1' when KEYS[1] is the group's retry lane
-- ARGV[3]  the consumer
-- ARGV[4..] entry ids (bounded by the caller's page size)
-- Returns how many entries were handed back.
local moved = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local found = nil
  if p[1] and p[1][2] == ARGV[3] then
    found = redis.call('XRANGE', KEYS[1], id, id)[1]
  end
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
    redis.call('XACK', KEYS[1], ARGV[1], id)
    if ARGV[2] == '1' then
      redis.call('XDEL', KEYS[1], id)
    end
    moved = moved + 1
  end
end
return moved
