-- Dead-letters a scheduled retry whose group is gone (reason group_gone): appends the
-- dead letter, then removes the member, in one step. A member already gone (moved or
-- dead-lettered by another process) is left alone.
--
-- KEYS[1]  the retry set
-- KEYS[2]  the dead-letter queue
-- ARGV[1]  the member
-- ARGV[2..] field, value, ... of the dead letter
-- Returns 1 when dead-lettered, 0 when the member was gone.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
