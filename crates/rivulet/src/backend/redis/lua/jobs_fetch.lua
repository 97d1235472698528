-- Settles, promotes due delayed jobs and leases (see jobs_lib.lua for the keys and the
-- first arguments).
--
-- ARGV[7] worker  [8] limit  [9] lease ms  [10] promote limit  [11] how many
-- settlements, then five arguments each as in jobs_settle.lua.
-- O(settlements + promote limit + 5 × limit + 16): jobs of paused names met at the head
-- of waiting are parked, at most about 4 × limit + 16 of them per fetch (a popped batch
-- is always handled whole).
-- Returns {settled states, leased jobs, next due ms or '', paused 0|1}; a leased job is
-- {id, name, data, attempt, max attempts, backoff base, multiplier, backoff max,
-- timeout or '', token, added at, ready at or '', traceparent or '', tracestate or ''}.
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

local paused = redis.call('HGET', K.meta, 'paused') == '1'
local jobs = {}
if not paused and limit > 0 then
  local names_paused = redis.call('SCARD', K.paused_names) > 0
  local skips = limit * 4 + 16
  while #jobs < limit and skips > 0 do
    -- The head of waiting, as many as still wanted; each is leased or parked below.
    local popped = redis.call('ZPOPMIN', K.waiting, limit - #jobs)
    if #popped == 0 then break end
    for i = 1, #popped, 2 do
      local id, score = popped[i], popped[i + 1]
      local jk = job_key(id)
      local f = redis.call('HMGET', jk, 'name', 'data', 'max_attempts', 'backoff_base',
        'backoff_mult', 'backoff_max', 'timeout', 'added_at', 'attempts_made', 'ready_at',
        'traceparent', 'tracestate')
      local name = f[1]
      if not name then
        -- No record: nothing to lease (popped, so it is gone from waiting too).
        skips = skips - 1
      elseif names_paused and redis.call('SISMEMBER', K.paused_names, name) == 1 then
        skips = skips - 1
        redis.call('ZADD', parked_key(name), score, id)
        redis.call('HSET', jk, 'parked', '1')
        redis.call('HINCRBY', K.meta, 'parked', 1)
      else
        local token = redis.call('HINCRBY', jk, 'token', 1)
        local attempt = (tonumber(f[9]) or 0) + 1
        redis.call('HSET', jk, 'state', 'active', 'attempt', attempt, 'started_at', num(NOW),
          'worker', worker)
        redis.call('ZADD', K.active, num(NOW + lease_ms), id)
        jobs[#jobs + 1] = { id, name, f[2] or '', num(attempt), f[3] or '', f[4] or '',
          f[5] or '', f[6] or '', f[7] or '', num(token), f[8] or '', f[10] or '',
          f[11] or '', f[12] or '' }
        event('active', id, attempt)
      end
    end
  end
  -- Work left behind: wake the next idle worker (wake-ups chain).
  if #jobs > 0 and redis.call('ZCARD', K.waiting) > 0 then wake() end
end

local next_due = ''
local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
if #first > 0 then next_due = first[2] end
local p = '0'
if paused then p = '1' end
return { settled, jobs, next_due, p }
