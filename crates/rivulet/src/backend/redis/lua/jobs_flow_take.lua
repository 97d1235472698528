-- Reads the first notes of this queue's flow outbox (see jobs_flow_lib.lua), without
-- removing them: jobs_flow_ack.lua does that once they are applied. O(limit).
--
-- ARGV[7] limit
-- Returns one item per note: {child id, n, parent queue, parent id, member, kind,
-- payload, on-fail word, events cap}.
local ids = redis.call('ZRANGE', P .. '/flow-outbox', 0, (tonumber(ARGV[7]) or 1) - 1)
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', P .. '/flow-note/' .. id, 'n', 'queue', 'parent', 'member',
    'kind', 'payload', 'on_fail', 'cap')
  if h[1] then
    out[#out + 1] = { id, h[1], h[2], h[3], h[4], h[5], h[6] or '', h[7], h[8] or '' }
  else
    redis.call('ZREM', P .. '/flow-outbox', id)
  end
end
return out
