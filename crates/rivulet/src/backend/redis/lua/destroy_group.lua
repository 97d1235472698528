-- Destroys a group: its entry in the stream, its retry lane, its heartbeat and its
-- registrations. With ARGV[2] == '1' it does so only for an orphaned broadcast group
-- (B-SUB-3): one registered as a broadcast group whose heartbeat has expired, checked in
-- the same step, so neither a live broadcast group nor a regular group whose name looks
-- like a broadcast group's is ever removed. Scheduled retries of the group are not
-- touched: move_retries.lua dead-letters them once the group has been gone long enough.
--
-- KEYS[1]  the stream
-- KEYS[2]  the group's retry lane
-- KEYS[3]  the group's heartbeat
-- KEYS[4]  the group registry
-- KEYS[5]  the broadcast group registry
-- KEYS[6]  the groups' incarnations
-- ARGV[1]  group
-- ARGV[2]  '1' to destroy only an orphan
-- Returns 1 when the group existed (on the topic or in a registry) and was destroyed.
if ARGV[2] == '1' then
  if redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 0 then
    return 0
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
  end
end
local destroyed = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  destroyed = redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
end
destroyed = destroyed + redis.call('SREM', KEYS[4], ARGV[1]) + redis.call('SREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[6], ARGV[1])
if destroyed > 0 then
  return 1
end
return 0
