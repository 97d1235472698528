-- Settles an entry and appends a new entry somewhere, in one step. Used to requeue into
-- the group's retry lane, and to dead-letter into the dead-letter queue (B-RET-4).
--
-- KEYS[1]  the stream the entry was read from (topic, dead-letter queue or a lane)
-- KEYS[2]  where to append (the group's lane, or the dead-letter queue)
-- ARGV[1]  group
-- ARGV[2]  entry id
-- ARGV[3]  '1' when KEYS[1] is the group's retry lane (the entry is then deleted)
-- ARGV[4..] field, value, ... of the new entry (bounded: at most ~2,000 arguments)
-- Returns the new entry's id, or false when the entry was not pending (already settled:
-- a settlement applied twice must not append twice).
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
if acked == 0 then
  return false
end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
