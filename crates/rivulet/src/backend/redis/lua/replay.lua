-- Replays a dead letter: appends its message (attempt 1) to the group's retry lane and
-- removes it from the dead-letter queue, in one step, after checking that the group
-- still exists on the topic (a lane nobody reads would swallow it). A dead letter that
-- is already gone (replayed or purged by someone else) is not replayed twice.
--
-- KEYS[1]  the dead-letter queue
-- KEYS[2]  the topic's stream
-- KEYS[3]  the group's retry lane on the topic
-- ARGV[1]  the dead letter's id
-- ARGV[2]  the group
-- ARGV[3..] field, value, ... of the message
-- Returns 1 when replayed, 0 when the dead letter no longer exists, -1 when the group
-- does not exist (nothing changed).
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return 0
end
-- redis.pcall returns an error as a table {err = message} instead of raising it.
local probe = redis.pcall('XPENDING', KEYS[2], ARGV[2], '-', '+', 1)
if type(probe) == 'table' and probe['err'] then
  if string.find(probe['err'], 'NOGROUP', 1, true) then
    return -1
  end
  return probe
end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
