-- The shared part of every job script (prepended to each jobs_*.lua by scripts.rs, so
-- each script is self-contained on the server). Not a script on its own.
--
-- Every job script receives the same keys, all in the queue's slot (tag
-- `{<prefix>/queue/<queue>}`):
--   KEYS[1] meta   KEYS[2] waiting   KEYS[3] delayed   KEYS[4] active
--   KEYS[5] completed   KEYS[6] failed   KEYS[7] cancelled   KEYS[8] events
--   KEYS[9] marker   KEYS[10] paused-names   KEYS[11] waiting-children
-- and the same first arguments:
--   ARGV[1] the queue's tag prefix `{<prefix>/queue/<queue>}`: per-job keys
--           (`/job/<id>`, `/logs/<id>`, `/dedup/<key>`, `/parked/<name>`) are built from
--           it, in the same slot (see docs/decisions.md)
--   ARGV[2] events cap   ARGV[3] keep-completed count   ARGV[4] keep-completed age ms
--   ARGV[5] keep-failed count (also cancelled)   ARGV[6] keep-failed age ms
-- Script-specific arguments start at ARGV[7].
local K = {
  meta = KEYS[1], waiting = KEYS[2], delayed = KEYS[3], active = KEYS[4],
  completed = KEYS[5], failed = KEYS[6], cancelled = KEYS[7], events = KEYS[8],
  marker = KEYS[9], paused_names = KEYS[10],
}
K['waiting-children'] = KEYS[11]
local P = ARGV[1]
local EVENTS_CAP = math.max(tonumber(ARGV[2]) or 1, 1)
local KEEP = {
  completed = { count = tonumber(ARGV[3]) or 0, age = tonumber(ARGV[4]) or 0 },
  failed = { count = tonumber(ARGV[5]) or 0, age = tonumber(ARGV[6]) or 0 },
}
KEEP.cancelled = KEEP.failed
-- Retention removes at most this many finished jobs per script beyond the number of
-- jobs the script finished (see retain_touched).
local RETENTION_SLACK = 8
-- The finished states a script touched, and how many jobs it finished in each.
local TOUCHED = {}
local MAX_PRIORITY = 2097151 -- 2^21 - 1: priority * 2^32 + 2^32 stays below 2^53
-- Flow hooks, defined in jobs_flow_lib.lua (which follows this file in every script).
local flow_finished, flow_deleted
-- Limits and groups (J-7, J-8): filled by jobs_limits_lib.lua, which follows this file.
local G = {}

local function num(n)
  return string.format('%.0f', n)
end

local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function job_key(id) return P .. '/job/' .. id end
local function logs_key(id) return P .. '/logs/' .. id end
-- A job's data lives beside its record: a 100-byte value in the record would make Redis
-- store the whole hash as a hashtable (over `hash-max-listpack-value`, 64 bytes), about
-- four times the memory of the listpack the record stays in without it.
local function data_key(id) return P .. '/data/' .. id end
local function dedup_key(k) return P .. '/dedup/' .. k end
local function parked_key(name) return P .. '/parked/' .. name end

-- Cuts s to at most 200 bytes on a UTF-8 character boundary (as short_detail does).
local function short(s)
  if #s <= 200 then return s end
  local e = 200
  while e > 0 do
    local b = string.byte(s, e + 1)
    if b < 128 or b >= 192 then break end
    e = e - 1
  end
  return string.sub(s, 1, e)
end

local function event(kind, id, attempt, detail)
  local args = { 'XADD', K.events, 'MAXLEN' }
  if EVENTS_CAP >= 1000 then args[#args + 1] = '~' end
  args[#args + 1] = EVENTS_CAP
  args[#args + 1] = '*'
  args[#args + 1] = 'kind'
  args[#args + 1] = kind
  args[#args + 1] = 'job'
  args[#args + 1] = id
  args[#args + 1] = 'attempt'
  args[#args + 1] = attempt or 0
  if detail then
    args[#args + 1] = 'detail'
    args[#args + 1] = short(detail)
  end
  redis.call(unpack(args))
end

-- Wakes one idle worker (its BLPOP takes the marker).
local function wake()
  redis.call('LPUSH', K.marker, '1')
  redis.call('LTRIM', K.marker, 0, 0)
end

-- Takes a job out of the set of its state (or its parked set).
local function unlink(id)
  local jk = job_key(id)
  local h = redis.call('HMGET', jk, 'state', 'parked', 'name', 'group')
  local state = h[1]
  if not state then return end
  if state == 'waiting' and h[2] == '1' then
    if redis.call('ZREM', parked_key(h[3]), id) == 1 then
      redis.call('HINCRBY', K.meta, 'parked', -1)
    end
    redis.call('HDEL', jk, 'parked')
    return
  end
  if state == 'waiting' and h[4] then
    G.unlink_waiting(h[4], id)
    return
  end
  local set = K[state]
  if set and redis.call('ZREM', set, id) == 1 and state == 'active' then
    G.left_active(h[4] or false)
  end
end

-- Puts a job into waiting at its place (parked when its name is paused).
local function link_waiting(id)
  unlink(id)
  local jk = job_key(id)
  local h = redis.call('HMGET', jk, 'name', 'score', 'group')
  redis.call('HSET', jk, 'state', 'waiting')
  if h[1] and redis.call('SISMEMBER', K.paused_names, h[1]) == 1 then
    redis.call('ZADD', parked_key(h[1]), h[2], id)
    redis.call('HSET', jk, 'parked', '1')
    redis.call('HINCRBY', K.meta, 'parked', 1)
    return
  end
  if h[3] then
    G.link_waiting(h[3], id, h[2])
    return
  end
  redis.call('ZADD', K.waiting, h[2], id)
  wake()
end

local function link_delayed(id, at)
  unlink(id)
  local jk = job_key(id)
  redis.call('HSET', jk, 'state', 'delayed', 'run_at', num(at))
  local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
  redis.call('ZADD', K.delayed, num(at), id)
  -- An idle worker may sleep past this job's time: wake it to look again.
  if #first == 0 or tonumber(first[2]) > at then wake() end
end

-- Deletes the dedup key of job `id` when it still names it. `finished`: only keys
-- without a TTL (those are held until their job finishes).
local function release_dedup(id, finished)
  local h = redis.call('HMGET', job_key(id), 'dedup', 'dedup_ttl')
  if not h[1] then return end
  if finished and h[2] == '1' then return end
  local dk = dedup_key(h[1])
  if redis.call('GET', dk) == id then redis.call('DEL', dk) end
end

-- Removes a job: record, logs, dedup key, its place. Returns its state, or false.
local function delete_job(id)
  local jk = job_key(id)
  local state = redis.call('HGET', jk, 'state')
  if not state then return false end
  flow_deleted(id, state)
  release_dedup(id, false)
  unlink(id)
  redis.call('DEL', jk, logs_key(id), data_key(id))
  event('removed', id, 0)
  return state
end

-- Removes up to `budget` of the oldest finished jobs of `state` beyond its keep count or
-- older than its keep age.
local function retention(state, budget)
  local RETENTION_BUDGET = budget
  local set, keep = K[state], KEEP[state]
  local victims = {}
  local excess = redis.call('ZCARD', set) - keep.count
  if excess > 0 then
    victims = redis.call('ZRANGE', set, 0, math.min(excess, RETENTION_BUDGET) - 1)
  end
  if #victims < RETENTION_BUDGET then
    local old = redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. num(NOW - keep.age),
      'LIMIT', #victims, RETENTION_BUDGET - #victims)
    for _, id in ipairs(old) do victims[#victims + 1] = id end
  end
  for _, id in ipairs(victims) do
    if not delete_job(id) then redis.call('ZREM', set, id) end
  end
end

-- Finishes job `id`, already out of the set of its state, in `state` (completed, failed
-- or cancelled), with what the caller read of it: its attempt, error, removal flag for
-- this state, and dedup key and mode. Retention runs once per script (retain_touched).
-- `result`: a completed job's return value, written with the state; `leaf`: the caller
-- read the record and it has no flow parent to tell.
local function finish_out(id, state, attempt, err, remove, dedup, dedup_ttl, result, leaf)
  local jk = job_key(id)
  if result then
    redis.call('HSET', jk, 'state', state, 'finished_at', num(NOW), 'result', result)
  else
    redis.call('HSET', jk, 'state', state, 'finished_at', num(NOW))
  end
  redis.call('ZADD', K[state], num(NOW), id)
  -- A key without a TTL is held until its job finishes.
  if dedup and dedup_ttl ~= '1' then
    local dk = dedup_key(dedup)
    if redis.call('GET', dk) == id then redis.call('DEL', dk) end
  end
  if state == 'completed' then
    event('completed', id, attempt)
  elseif state == 'cancelled' then
    event('cancelled', id, attempt)
  else
    event('failed', id, attempt, err or nil)
  end
  if not leaf then flow_finished(id, state) end
  if remove == '1' then delete_job(id) end
  TOUCHED[state] = (TOUCHED[state] or 0) + 1
end

-- Finishes a job in `state`, wherever it is.
local function finish(id, state)
  unlink(id)
  local h = redis.call('HMGET', job_key(id), 'attempt', 'error', 'remove_on_complete',
    'remove_on_fail', 'dedup', 'dedup_ttl')
  local remove = h[4]
  if state == 'completed' then remove = h[3] end
  finish_out(id, state, h[1], h[2], remove, h[5], h[6])
end

-- Applies retention to every finished state the script touched: up to as many removals
-- as jobs it finished there, plus RETENTION_SLACK, so a steady load keeps the bounds.
local function retain_touched()
  for state, n in pairs(TOUCHED) do
    retention(state, n + RETENTION_SLACK)
  end
  TOUCHED = {}
end

-- The delay after failed attempt `attempt` (StoredBackoff::delay_ms).
local function backoff_ms(id, attempt)
  local h = redis.call('HMGET', job_key(id), 'backoff_base', 'backoff_mult', 'backoff_max')
  local base, mult, max = tonumber(h[1]) or 0, tonumber(h[2]) or 1, tonumber(h[3]) or 0
  local exp = math.min(math.max(attempt - 1, 0), 1000)
  local d = base * mult ^ exp
  if d ~= d or d >= max then return max end
  return math.floor(d)
end

-- A failed attempt: delayed (or waiting) for another, or failed without any left.
-- Returns the job's new state.
local function retry(id, delay, err)
  local jk = job_key(id)
  local h = redis.call('HMGET', jk, 'attempt', 'attempts_made', 'max_attempts')
  local attempt = tonumber(h[1]) or 0
  local made = math.max(attempt, (tonumber(h[2]) or 0) + 1)
  redis.call('HSET', jk, 'attempts_made', made, 'error', err)
  if made >= (tonumber(h[3]) or 1) then
    finish(id, 'failed')
    return 'failed'
  end
  local state = 'waiting'
  if delay <= 0 then
    link_waiting(id)
  else
    link_delayed(id, NOW + delay)
    state = 'delayed'
  end
  event('retried', id, attempt, err)
  return state
end

-- Applies one settlement; returns the new state or 'lost'.
local function settle_one(id, token, how, payload, delay)
  local jk = job_key(id)
  local h = redis.call('HMGET', jk, 'state', 'token', 'cancel_requested', 'attempt', 'error',
    'remove_on_complete', 'dedup', 'dedup_ttl', 'group', 'parent_tag')
  if h[1] ~= 'active' or h[2] ~= token then return 'lost' end
  if h[3] == '1' then
    if not h[5] then redis.call('HSET', jk, 'error', 'cancelled while active') end
    finish(id, 'cancelled')
    return 'cancelled'
  end
  if how == 'complete' then
    -- The common case, with what was read above: no second look at the record.
    redis.call('ZREM', K.active, id)
    G.left_active(h[9] or false)
    if h[5] then redis.call('HDEL', jk, 'error') end
    finish_out(id, 'completed', h[4], nil, h[6], h[7], h[8], payload, not h[10])
    return 'completed'
  elseif how == 'fail' then
    redis.call('HSET', jk, 'attempts_made', h[4] or 0, 'error', payload)
    finish(id, 'failed')
    return 'failed'
  elseif how == 'retry' then
    return retry(id, tonumber(delay) or 0, payload)
  elseif how == 'release' then
    redis.call('HDEL', jk, 'worker')
    link_waiting(id)
    event('released', id, h[4])
    return 'waiting'
  elseif how == 'limited' then
    -- Rate limited: back without spending the attempt, and its group (or the queue)
    -- held for the delay.
    local d = tonumber(delay) or 0
    redis.call('HDEL', jk, 'worker')
    G.hold(h[9] or false, d)
    if d <= 0 then link_waiting(id) else link_delayed(id, NOW + d) end
    event('rate-limited', id, h[4], num(d))
    if d <= 0 then return 'waiting' end
    return 'delayed'
  end
  return redis.error_reply('unknown settlement ' .. tostring(how))
end

-- Applies the settlements in ARGV[first], five arguments each (id, token, how,
-- payload, delay ms), `n` of them.
local function settle_all(first, n)
  local out = {}
  for i = 0, n - 1 do
    local a = first + i * 5
    out[#out + 1] = settle_one(ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  end
  retain_touched()
  return out
end
