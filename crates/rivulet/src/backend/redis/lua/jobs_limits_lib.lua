-- The limits and groups part of every job script (J-7, J-8), prepended after
-- jobs_lib.lua, which calls into it through the table `G`. Not a script on its own.
--
-- Keys, all built from the queue's tag P (same slot):
--   P/rate                  sorted set: the queue's start stamps in its rate window
--   P/groups-ready          sorted set: groups that may lease now, scored by rotation
--   P/groups-timed          sorted set: groups waiting for their window or hold, by time
--   P/groups-active         hash: group -> its active jobs
--   P/groups-paused         set: paused groups
--   P/groups-held           hash: group -> held until (ms; a handler said rate limited)
--   P/group/<g>/waiting     sorted set: the group's waiting jobs, scored like waiting
--   P/group/<g>/rate        sorted set: the group's start stamps in its rate window
-- and meta fields `cap`, `rate_max`, `rate_ms`, `group_cap`, `group_rate_max`,
-- `group_rate_ms` (the limits, 0 = none), `held` (the queue held until, ms), `grouped`
-- (1 once a job group was used: only then do fetches look for ready groups), `rot` (the
-- rotation counter), `uturn` (the ungrouped jobs' place in the rotation), `gwaiting`
-- (grouped waiting jobs, for counts).
-- The keys of the queue with tag T.
function G.keys_of(T)
  return {
    rate = T .. '/rate', ready = T .. '/groups-ready', timed = T .. '/groups-timed',
    active = T .. '/groups-active', paused = T .. '/groups-paused', held = T .. '/groups-held',
  }
end
local GK = G.keys_of(P)
-- Whether this script met limits or groups (set by a fetch; scripts that do not lease
-- leave it false).
local LIMITED = false
local function group_waiting_key(g) return P .. '/group/' .. g .. '/waiting' end
local function group_rate_key(g) return P .. '/group/' .. g .. '/rate' end

-- The queue's limits, read once per script when first needed.
local LIMITS
function G.limits()
  if LIMITS then return LIMITS end
  local h = redis.call('HMGET', K.meta, 'cap', 'rate_max', 'rate_ms', 'group_cap',
    'group_rate_max', 'group_rate_ms', 'held', 'paused', 'grouped')
  local n = function(i) return tonumber(h[i]) or 0 end
  LIMITS = { cap = n(1), rate_max = n(2), rate_ms = n(3), group_cap = n(4),
    group_rate_max = n(5), group_rate_ms = n(6), held = n(7), paused = h[8] == '1',
    grouped = h[9] == '1' }
  LIMITS.any = LIMITS.cap > 0 or LIMITS.rate_max > 0 or LIMITS.held > NOW
  return LIMITS
end

function G.next_rot()
  return redis.call('HINCRBY', K.meta, 'rot', 1)
end

-- When a sliding window of `max` starts per `ms` has room again (NOW when it has room).
-- Trims the stamps that left the window. O(log n + trimmed).
function G.window_open(key, max, ms)
  if max <= 0 then return NOW end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(NOW - ms))
  if redis.call('ZCARD', key) < max then return NOW end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(first[2]) + ms
end

-- Records a start in a window (member unique per activation).
function G.stamp(key, id, token)
  redis.call('ZADD', key, num(NOW), id .. ':' .. token)
end

-- Puts group `g` where it belongs: ready (keeping its rotation score when it is there
-- already), timed (until its window or hold ends), or out (paused, empty, at its cap).
-- `fresh`: it was just served, so it goes to the back of the rotation.
function G.ready(g, fresh)
  local L = G.limits()
  local out = redis.call('SISMEMBER', GK.paused, g) == 1
    or redis.call('ZCARD', group_waiting_key(g)) == 0
  if not out and L.group_cap > 0 then
    out = (tonumber(redis.call('HGET', GK.active, g)) or 0) >= L.group_cap
  end
  if out then
    redis.call('ZREM', GK.ready, g)
    return
  end
  local open = G.window_open(group_rate_key(g), L.group_rate_max, L.group_rate_ms)
  local held = tonumber(redis.call('HGET', GK.held, g)) or 0
  if held > NOW then
    open = math.max(open, held)
  elseif held > 0 then
    redis.call('HDEL', GK.held, g)
  end
  if open > NOW then
    redis.call('ZREM', GK.ready, g)
    redis.call('ZADD', GK.timed, num(open), g)
    return
  end
  redis.call('ZREM', GK.timed, g)
  if fresh or not redis.call('ZSCORE', GK.ready, g) then
    redis.call('ZADD', GK.ready, G.next_rot(), g)
    if not fresh then wake() end
  end
end

-- A job of group `g` becomes waiting (not parked) at `score`.
function G.link_waiting(g, id, score)
  local L = G.limits()
  if not L.grouped then
    -- From now on fetches look for ready groups (a queue never grouped need not).
    redis.call('HSET', K.meta, 'grouped', '1')
    L.grouped = true
  end
  if redis.call('ZADD', group_waiting_key(g), score, id) == 1 then
    redis.call('HINCRBY', K.meta, 'gwaiting', 1)
  end
  G.ready(g, false)
end

-- A waiting job of group `g` leaves it.
function G.unlink_waiting(g, id)
  if redis.call('ZREM', group_waiting_key(g), id) == 1 then
    redis.call('HINCRBY', K.meta, 'gwaiting', -1)
  end
  G.ready(g, false)
end

-- A job (of group `g`, or ungrouped when `g` is false) leaves active.
function G.left_active(g)
  if g then
    if redis.call('HINCRBY', GK.active, g, -1) <= 0 then redis.call('HDEL', GK.active, g) end
    G.ready(g, false)
  end
  -- A worker idle at the queue's cap may lease again.
  if G.limits().cap > 0 then wake() end
end

-- A handler said "rate limited, retry in `ms`": holds the job's group, or the queue.
function G.hold(g, ms)
  local untl = NOW + ms
  if g then
    local held = tonumber(redis.call('HGET', GK.held, g)) or 0
    if untl > held then redis.call('HSET', GK.held, g, num(untl)) end
  else
    local L = G.limits()
    if untl > L.held then
      redis.call('HSET', K.meta, 'held', num(untl))
      L.held, L.any = untl, true
    end
  end
end

-- Pauses or resumes group `g`; returns whether anything changed.
function G.pause(g, paused)
  if paused then
    if redis.call('SADD', GK.paused, g) == 0 then return false end
    redis.call('ZREM', GK.ready, g)
    redis.call('ZREM', GK.timed, g)
  else
    if redis.call('SREM', GK.paused, g) == 0 then return false end
    G.ready(g, false)
  end
  return true
end
