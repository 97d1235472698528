-- Settles, promotes due delayed jobs and leases (see jobs_lib.lua for the keys and the
-- first arguments).
--
-- ARGV[7] worker  [8] limit  [9] lease ms  [10] promote limit  [11] how many
-- settlements, then five arguments each as in jobs_settle.lua.
-- O(settlements + promote limit + 5 × limit + 16): jobs of paused names met at the head
-- of waiting are parked, at most about 4 × limit + 16 of them per fetch (a popped batch
-- is always handled whole).
-- With limits or groups (jobs_limits_lib.lua) the jobs leased are at most the room under
-- the queue's cap and rate window, and ready groups take turns with the ungrouped jobs:
-- each turn leases the head of the member with the lowest rotation score, which then
-- goes to the back (O(log n) per job).
-- Returns {settled states, leased jobs, next due ms or '', paused 0|1, limited until ms
-- or ''}; a leased job is {id, name, data, attempt, max attempts, backoff base,
-- multiplier, backoff max, timeout or '', token, added at, ready at or '', traceparent or
-- '', tracestate or ''}; `limited until` is when a
-- limit that held back work opens (the earliest window or hold).
local worker, limit, lease_ms = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local promote_limit = tonumber(ARGV[10])
local settled = settle_all(12, tonumber(ARGV[11]))

if promote_limit > 0 then
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', num(NOW), 'LIMIT', 0, promote_limit)
  for _, id in ipairs(due) do
    local jk = job_key(id)
    if redis.call('EXISTS', jk) == 1 then
      -- ready_at: when it became ready (its due time), for the wait-time metric.
      redis.call('HSET', jk, 'ready_at', redis.call('HGET', jk, 'run_at') or num(NOW))
      redis.call('HDEL', jk, 'run_at')
      link_waiting(id)
      event('added', id, redis.call('HGET', jk, 'attempt'), 'promoted')
    else
      redis.call('ZREM', K.delayed, id)
    end
  end
end

-- One read of the meta hash: the pause flag and the limits.
local paused = G.limits().paused
local jobs = {}
local names_paused = false
if not paused and limit > 0 then names_paused = redis.call('SCARD', K.paused_names) > 0 end

-- Leases or parks the head of waiting set `set`, up to `want` jobs; returns how many it
-- looked at. Grouped jobs (of group `g`) count their group's active jobs and stamps.
local function lease_from(set, want, g)
  local popped = redis.call('ZPOPMIN', set, want)
  for i = 1, #popped, 2 do
    local id, score = popped[i], popped[i + 1]
    local jk = job_key(id)
    local f = redis.call('HMGET', jk, 'name', 'data', 'max_attempts', 'backoff_base',
      'backoff_mult', 'backoff_max', 'timeout', 'added_at', 'attempts_made', 'ready_at',
      'traceparent', 'tracestate', 'token')
    local name = f[1]
    if g then redis.call('HINCRBY', K.meta, 'gwaiting', -1) end
    if not name then
      -- No record: nothing to lease (popped, so it is gone from waiting too).
    elseif names_paused and redis.call('SISMEMBER', K.paused_names, name) == 1 then
      redis.call('ZADD', parked_key(name), score, id)
      redis.call('HSET', jk, 'parked', '1')
      redis.call('HINCRBY', K.meta, 'parked', 1)
    else
      -- The lease's fencing token: the record's, plus one (written with the lease).
      local token = (tonumber(f[13]) or 0) + 1
      local attempt = (tonumber(f[9]) or 0) + 1
      redis.call('HSET', jk, 'state', 'active', 'attempt', attempt, 'started_at', num(NOW),
        'worker', worker, 'token', token)
      redis.call('ZADD', K.active, num(NOW + lease_ms), id)
      if LIMITED then
        local L = G.limits()
        if L.rate_max > 0 then G.stamp(GK.rate, id, token) end
        if g then
          redis.call('HINCRBY', GK.active, g, 1)
          if L.group_rate_max > 0 then G.stamp(group_rate_key(g), id, token) end
        end
      end
      -- The data beside the record (a record written before it moved holds it).
      local data = redis.call('GET', data_key(id)) or f[2] or ''
      jobs[#jobs + 1] = { id, name, data, num(attempt), f[3] or '', f[4] or '',
        f[5] or '', f[6] or '', f[7] or '', num(token), f[8] or '', f[10] or '',
        f[11] or '', f[12] or '' }
      event('active', id, attempt)
    end
  end
  return #popped / 2
end

local limited_until = nil
local function limited_at(t)
  if not limited_until or t < limited_until then limited_until = t end
end

if not paused and limit > 0 then
  local skips = limit * 4 + 16
  local L = G.limits()
  LIMITED = L.any or (L.grouped and redis.call('EXISTS', GK.ready, GK.timed) > 0)
  if not LIMITED then
    -- The fast path: no limits, no groups.
    while #jobs < limit and skips > 0 do
      local before = #jobs
      local looked = lease_from(K.waiting, limit - #jobs, false)
      if looked == 0 then break end
      skips = skips - (looked - (#jobs - before))
    end
  else
    -- Groups whose window or hold ended take part again.
    local due = redis.call('ZRANGEBYSCORE', GK.timed, '-inf', num(NOW), 'LIMIT', 0, 64)
    for _, g in ipairs(due) do
      redis.call('ZREM', GK.timed, g)
      G.ready(g, false)
    end
    local room = limit
    if L.held > NOW then
      room = 0
      limited_at(L.held)
    end
    if room > 0 and L.cap > 0 then
      room = math.min(room, L.cap - redis.call('ZCARD', K.active))
    end
    if room > 0 and L.rate_max > 0 then
      local open = G.window_open(GK.rate, L.rate_max, L.rate_ms)
      if open > NOW then
        room = 0
        limited_at(open)
      else
        room = math.min(room, L.rate_max - redis.call('ZCARD', GK.rate))
      end
    end
    local uturn = tonumber(redis.call('HGET', K.meta, 'uturn')) or 0
    local served_ungrouped = false
    while #jobs < room and skips > 0 do
      local head = redis.call('ZRANGE', GK.ready, 0, 0, 'WITHSCORES')
      local ungrouped = redis.call('ZCARD', K.waiting) > 0
      if #head == 0 and not ungrouped then break end
      local before = #jobs
      local looked
      if ungrouped and (#head == 0 or uturn < tonumber(head[2])) then
        -- The ungrouped jobs' turn: all the room when no group is ready.
        local want = 1
        if #head == 0 then want = room - #jobs end
        looked = lease_from(K.waiting, want, false)
        uturn = G.next_rot()
        served_ungrouped = true
      else
        local g = head[1]
        looked = lease_from(group_waiting_key(g), 1, g)
        G.ready(g, true)
      end
      skips = skips - math.max(looked - (#jobs - before), 0)
      if looked == 0 then skips = skips - 1 end
    end
    if served_ungrouped then redis.call('HSET', K.meta, 'uturn', uturn) end
    if room > 0 and L.rate_max > 0 and #jobs >= room then
      local open = G.window_open(GK.rate, L.rate_max, L.rate_ms)
      if open > NOW then limited_at(open) end
    end
    local first = redis.call('ZRANGE', GK.timed, 0, 0, 'WITHSCORES')
    if #first > 0 then limited_at(tonumber(first[2])) end
  end
  -- Work left behind: wake the next idle worker (wake-ups chain).
  if #jobs > 0 and (redis.call('ZCARD', K.waiting) > 0
      or (LIMITED and redis.call('ZCARD', GK.ready) > 0)) then
    wake()
  end
end

local next_due = ''
local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
if #first > 0 then next_due = first[2] end
local p = '0'
if paused then p = '1' end
local lu = ''
if limited_until then lu = num(limited_until) end
return { settled, jobs, next_due, p, lu }
