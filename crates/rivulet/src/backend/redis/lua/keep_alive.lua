-- Resets the idle time of entries a consumer still owns (the keep-alive, B-REC-2),
-- without counting a delivery. An entry another consumer has reclaimed meanwhile is
-- left to it (never taken back), and one already settled is skipped.
--
-- KEYS[1]  the stream (topic, dead-letter queue or a lane)
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3..] entry ids (bounded by the caller's batch)
-- Returns how many entries were refreshed.
local refreshed = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    refreshed = refreshed + 1
  end
end
return refreshed
