-- Moves scheduled retries that are due into their groups' retry lanes (B-RET-3).
-- Safe to run from several processes at once: a member is moved only by the call whose
-- ZREM removed it. Members of groups that no longer exist (not listed, or whose lane is
-- gone) are dropped: nobody could ever read them.
--
-- KEYS[1]   the retry set
-- KEYS[2..] the lanes of the groups named in ARGV[3..], in the same order
-- ARGV[1]   now, ms since the epoch
-- ARGV[2]   the most members to move in this call
-- ARGV[3..] group names
-- Returns {moved, dropped, score of the earliest member left or nil}.

-- A member is a run of netstrings "<len>:<bytes>": group, nonce, then field/value pairs.
local function parse(s)
  local out, pos, n = {}, 1, #s
  while pos <= n do
    local colon = string.find(s, ':', pos, true)
    if not colon then return nil end
    local len = tonumber(string.sub(s, pos, colon - 1))
    if not len or len < 0 or colon + len > n then return nil end
    out[#out + 1] = string.sub(s, colon + 1, colon + len)
    pos = colon + len + 1
  end
  return out
end

local lanes = {}
for i = 3, #ARGV do
  lanes[ARGV[i]] = KEYS[i - 1]
end

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved, dropped = 0, 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local items = parse(member)
    local lane = nil
    if items and #items >= 4 and #items % 2 == 0 and #items <= 4100 then
      lane = lanes[items[1]]
    end
    if lane and redis.call('EXISTS', lane) == 1 then
      redis.call('XADD', lane, '*', unpack(items, 3))
      moved = moved + 1
    else
      dropped = dropped + 1
    end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, dropped, first[2]}
