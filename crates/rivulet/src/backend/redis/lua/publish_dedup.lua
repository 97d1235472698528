-- Idempotent publish (B-PUB-4): appends the message unless its id was published within
-- the dedup window, in which case the first entry's id is returned.
--
-- KEYS[1]  the topic stream
-- KEYS[2]  the message id's dedup marker
-- ARGV[1]  dedup window, ms
-- ARGV[2]  approximate max length to trim to, or '0' for none (only when safe
--          trimming is off)
-- ARGV[3..] field, value, ... of the entry
-- Returns {entry id, 1 if duplicate else 0}.
local first = redis.call('GET', KEYS[2])
if first then
  return {first, 1}
end
local id
if ARGV[2] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
end
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {id, 0}
