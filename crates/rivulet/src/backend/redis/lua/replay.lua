-- Replays a dead letter: removes it from the dead-letter queue and appends its message
-- (attempt 1) to the group's retry lane on the topic, in one step. A dead letter that is
-- already gone (replayed or purged by someone else) is not replayed twice.
--
-- KEYS[1]  the dead-letter queue
-- KEYS[2]  the group's retry lane on the topic
-- ARGV[1]  the dead letter's id
-- ARGV[2..] field, value, ... of the message
-- Returns 1 when replayed, 0 when the dead letter no longer exists.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
