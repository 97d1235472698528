-- Takes over entries pending on any consumer of the group for at least min_idle
-- (B-REC-1), and reports each one's delivery count (which XAUTOCLAIM increments).
-- Scans at most 8 XAUTOCLAIM pages, so the work is bounded by the count.
--
-- KEYS[1]  the stream (topic, dead-letter queue or a lane)
-- KEYS[2]  the groups' incarnations
-- ARGV[1]  group
-- ARGV[2]  consumer taking the entries over
-- ARGV[3]  min idle, ms
-- ARGV[4]  the most entries to take
-- Returns {entries, ids whose data is gone (removed from the pending list), counts,
-- the group's incarnation}.
local want = tonumber(ARGV[4])
local claimed, gone, counts = {}, {}, {}
local cursor = '0-0'
for _ = 1, 8 do
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor,
    'COUNT', want - #claimed - #gone)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e[2] then
      claimed[#claimed + 1] = e
    else
      gone[#gone + 1] = e[1]
    end
  end
  if r[3] then
    for _, id in ipairs(r[3]) do
      gone[#gone + 1] = id
    end
  end
  if cursor == '0-0' or #claimed + #gone >= want then
    break
  end
end
for i, e in ipairs(claimed) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then
    counts[i] = p[1][4]
  else
    counts[i] = 1
  end
end
return {claimed, gone, counts, redis.call('HGET', KEYS[2], ARGV[1]) or '0'}
