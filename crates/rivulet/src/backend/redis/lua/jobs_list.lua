-- One page of the jobs in one state (see jobs_lib.lua for the keys and the first
-- arguments).
--
-- ARGV[7] state  [8] cursor score or ''  [9] cursor member  [10] limit
-- Order: by score, then member (the sorted set's order). When the cursor's member is
-- still in the set at the cursor's score, the page starts right after it (ZRANK);
-- otherwise members at the cursor's score are looked at up to `limit + 256` ahead
-- (bounded lookahead) and those not after the cursor's member skipped, then higher
-- scores follow.
-- Returns a flat list of {id, score, HGETALL of the job}. O(limit + 256).
local set = K[ARGV[7]]
if not set then return redis.error_reply('unknown state ' .. tostring(ARGV[7])) end
local cscore, cmember, limit = ARGV[8], ARGV[9], tonumber(ARGV[10])

-- Byte-wise a > b (the sorted set's order, independent of the server's locale).
local function after(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local items = {}
if cscore == '' then
  items = redis.call('ZRANGE', set, 0, limit - 1, 'WITHSCORES')
else
  local s = redis.call('ZSCORE', set, cmember)
  if s and tonumber(s) == tonumber(cscore) then
    local r = redis.call('ZRANK', set, cmember)
    items = redis.call('ZRANGE', set, r + 1, r + limit, 'WITHSCORES')
  else
    local same = redis.call('ZRANGEBYSCORE', set, cscore, cscore, 'WITHSCORES',
      'LIMIT', 0, limit + 256)
    for i = 1, #same, 2 do
      if #items < limit * 2 and after(same[i], cmember) then
        items[#items + 1] = same[i]
        items[#items + 1] = same[i + 1]
      end
    end
    if #items < limit * 2 then
      local more = redis.call('ZRANGEBYSCORE', set, '(' .. cscore, '+inf', 'WITHSCORES',
        'LIMIT', 0, limit - #items / 2)
      for _, v in ipairs(more) do items[#items + 1] = v end
    end
  end
end
local out = {}
for i = 1, #items, 2 do
  local h = redis.call('HGETALL', job_key(items[i]))
  local data = redis.call('GET', data_key(items[i]))
  if data and #h > 0 then
    h[#h + 1] = 'data'
    h[#h + 1] = data
  end
  out[#out + 1] = { items[i], items[i + 1], h }
end
return out
