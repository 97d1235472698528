-- Reads job schedulers (J-4). Standalone; read-only. The records' keys are built from
-- the queue's tag, like the per-job keys of the job scripts (docs/decisions.md).
--
-- KEYS[1] the scheduler index `{…}/schedulers`
-- ARGV[1] the queue's tag `{<prefix>/queue/<queue>}`
-- ARGV[2] 'due': up to ARGV[3] schedulers due by the server's clock;
--         'page': ARGV[3] schedulers from rank ARGV[4] (every one, by next fire time)
-- Returns {now ms, next fire ms after now or '', record, record, …}, each record a flat
-- HGETALL (an id whose record is gone is skipped).
local index, tag, mode, n = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = string.format('%.0f', now)
local ids
if mode == 'due' then
  ids = redis.call('ZRANGEBYSCORE', index, '-inf', now_s, 'LIMIT', 0, n)
else
  local from = tonumber(ARGV[4]) or 0
  ids = redis.call('ZRANGE', index, from, from + n - 1)
end
local after = redis.call('ZRANGEBYSCORE', index, '(' .. now_s, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local nxt = after[2] or ''
-- A scheduler with no tick left is scored +inf.
if nxt == 'inf' then nxt = '' end
local out = { now_s, nxt }
for _, id in ipairs(ids) do
  local rec = redis.call('HGETALL', tag .. '/scheduler/' .. id)
  if #rec > 0 then out[#out + 1] = rec end
end
return out
