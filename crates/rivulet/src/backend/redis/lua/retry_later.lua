-- Settles an entry and schedules its next attempt, in one step (B-RET-3): a crash can
-- never leave the entry acknowledged but not scheduled.
--
-- KEYS[1]  the stream the entry was read from (topic, dead-letter queue or a lane)
-- KEYS[2]  the retry set
-- ARGV[1]  group
-- ARGV[2]  entry id
-- ARGV[3]  '1' when KEYS[1] is the group's retry lane (the entry is then deleted)
-- ARGV[4]  due time, ms since the epoch (the score)
-- ARGV[5]  the member: group, nonce and fields of the next attempt (see wire.rs)
-- Returns 1 when the retry was scheduled, 0 when the entry was not pending (already
-- settled: a settlement applied twice must not schedule a second retry).
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
if acked == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
