-- Settles entries a consumer handled.
-- Topic entries are acknowledged (XACK); retry-lane entries are acknowledged and deleted
-- (XACK + XDEL), since only this group ever reads its lane.
--
-- KEYS[1]  the stream (topic or dead-letter queue)
-- KEYS[2]  the group's retry lane
-- ARGV[1]  group
-- ARGV[2]  n: how many of the following ids are stream ids; the rest are lane ids
-- ARGV[3..] ids
-- Returns how many entries were pending.
local group = ARGV[1]
local n = tonumber(ARGV[2])
local acked = 0
for i = 3, 2 + n do
  acked = acked + redis.call('XACK', KEYS[1], group, ARGV[i])
end
for i = 3 + n, #ARGV do
  acked = acked + redis.call('XACK', KEYS[2], group, ARGV[i])
  redis.call('XDEL', KEYS[2], ARGV[i])
end
return acked
