-- Settles an entry and appends a new entry somewhere, in one step. Used to requeue into
-- the group's retry lane (a retry already due), and to dead-letter into the dead-letter
-- queue (B-RET-4). The checks and the append come before the acknowledgement, so a
-- failing call (a wrong key type, OOM) changes nothing and the entry stays pending.
--
-- KEYS[1]  the stream the entry was read from (topic, dead-letter queue or a lane)
-- KEYS[2]  where to append (the group's lane, or the dead-letter queue)
-- KEYS[3]  the groups' incarnations
-- ARGV[1]  group
-- ARGV[2]  entry id
-- ARGV[3]  '1' when KEYS[1] is the group's retry lane (the entry is then deleted)
-- ARGV[4]  the incarnation of the group that delivered the entry
-- ARGV[5..] field, value, ... of the new entry (bounded: at most ~2,000 arguments)
-- Returns the new entry's id, or false when the entry was not pending (already settled:
-- a settlement applied twice must not append twice). When the group no longer exists,
-- or was re-created since it delivered the entry, the entry is appended all the same
-- (never lost).
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. kind)
end
-- redis.pcall returns an error as a table {err = message} instead of raising it.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if pending['err'] then
  if string.find(pending['err'], 'NOGROUP', 1, true) then
    return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
  end
  return pending
end
if #pending == 0 then
  if tostring(redis.call('HGET', KEYS[3], ARGV[1]) or '0') == ARGV[4] then
    return false
  end
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return id
