-- Moves scheduled retries that are due into their groups' retry lanes (B-RET-3).
-- Safe to run from several processes at once: a member is moved only by the call whose
-- ZREM removed it, and each member's lane append comes before its removal.
--
-- A retry of a group that is not known (neither on the topic nor in the group registry)
-- is never dropped: the first time it is seen it is rescheduled `grace` later, marked as
-- waiting (its nonce gets a 'w:' prefix), in case a reader re-creates the group; seen
-- again still without a group, it is returned to the caller, which dead-letters it with
-- reason group_gone (retry_dead_letter.lua).
--
-- KEYS[1]   the retry set
-- KEYS[2..] the lanes of the groups named in ARGV[4..], in the same order
-- ARGV[1]   now, ms since the epoch
-- ARGV[2]   the most members to look at in this call
-- ARGV[3]   grace, ms
-- ARGV[4..] names of the known groups
-- Returns {moved, waiting, members to dead-letter, score of the earliest member left}.

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

local function encode(items)
  local parts = {}
  for i, item in ipairs(items) do
    parts[i] = #item .. ':' .. item
  end
  return table.concat(parts)
end

local lanes = {}
for i = 4, #ARGV do
  lanes[ARGV[i]] = KEYS[i - 2]
end

local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved, waiting, gone = 0, 0, {}
for _, member in ipairs(due) do
  local items = parse(member)
  local valid = items and #items >= 4 and #items % 2 == 0 and #items <= 4100
  local lane = valid and lanes[items[1]] or nil
  if lane then
    redis.call('XADD', lane, '*', unpack(items, 3))
    redis.call('ZREM', KEYS[1], member)
    moved = moved + 1
  elseif valid and string.sub(items[2], 1, 2) ~= 'w:' then
    items[2] = 'w:' .. items[2]
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), encode(items))
    redis.call('ZREM', KEYS[1], member)
    waiting = waiting + 1
  else
    gone[#gone + 1] = member
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, waiting, gone, first[2]}
