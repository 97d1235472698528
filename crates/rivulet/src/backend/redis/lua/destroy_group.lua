-- Destroys a group: its entry in the stream, its retry lane and its heartbeat.
-- With ARGV[2] == '1' it does so only when the heartbeat has expired (an orphaned
-- broadcast group, B-SUB-3), checked in the same step so a live group is never removed.
-- Scheduled retries of the group are dropped when they fall due (move_retries.lua).
--
-- KEYS[1]  the stream
-- KEYS[2]  the group's retry lane
-- KEYS[3]  the group's heartbeat
-- ARGV[1]  group
-- ARGV[2]  '1' to destroy only an orphan
-- Returns 1 when the group existed and was destroyed.
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
local destroyed = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  destroyed = redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
end
redis.call('DEL', KEYS[2], KEYS[3])
return destroyed
