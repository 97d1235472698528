-- Settles an entry and schedules its next attempt, in one step (B-RET-3): a crash can
-- never leave the entry acknowledged but not scheduled. Every check and every write
-- that can fail (a wrong key type, OOM) comes before the acknowledgement, so a failing
-- call changes nothing and the entry stays pending.
--
-- KEYS[1]  the stream the entry was read from (topic, dead-letter queue or a lane)
-- KEYS[2]  the retry set
-- KEYS[3]  the groups' incarnations
-- ARGV[1]  group
-- ARGV[2]  entry id
-- ARGV[3]  '1' when KEYS[1] is the group's retry lane (the entry is then deleted)
-- ARGV[4]  due time, ms since the epoch (the score)
-- ARGV[5]  the member: group, nonce and fields of the next attempt (see wire.rs)
-- ARGV[6]  the incarnation of the group that delivered the entry
-- Returns 1 when the retry was scheduled, 0 when the entry was not pending (already
-- settled: a settlement applied twice must not schedule a second retry), 2 when the
-- group no longer exists, or was re-created since it delivered the entry (its pending
-- list went with it): the retry is scheduled all the same, never lost.
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'zset' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE the retry set ' .. KEYS[2] .. ' holds a ' .. kind)
end
-- redis.pcall returns an error as a table {err = message} instead of raising it.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if pending['err'] then
  if string.find(pending['err'], 'NOGROUP', 1, true) then
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
    return 2
  end
  return pending
end
if #pending == 0 then
  if tostring(redis.call('HGET', KEYS[3], ARGV[1]) or '0') == ARGV[6] then
    return 0
  end
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
  return 2
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return 1
