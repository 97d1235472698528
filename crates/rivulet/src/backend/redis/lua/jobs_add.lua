-- Adds a batch of jobs, each decided on its own and in order (see jobs_lib.lua for the
-- keys and the first arguments). add_jobs sends batches of at most 100 jobs, all in one
-- pipeline. O(jobs).
--
-- ARGV[7] how many jobs, then 19 arguments per job: id, name, data, priority,
-- lifo 0|1, delay ms, run-at ms or '', max attempts, backoff base ms, multiplier,
-- backoff max ms, timeout ms or '', dedup key or '', dedup ttl ms or '',
-- remove on complete 0|1, remove on fail 0|1, traceparent or '', tracestate or '',
-- group or ''.
-- Returns one item per job: {'existing', id} or {'new', id, state}.
local PER_JOB = 19
local woke = false
-- Whether any job name of the queue is paused, read once per script (per queue).
local any_paused, paused_read = false, nil

-- A new job's place among waiting jobs: waiting, or parked when its name is paused.
local function place_waiting(id, name, score, group)
  local jk = job_key(id)
  if paused_read ~= K.paused_names then
    any_paused, paused_read = redis.call('SCARD', K.paused_names) > 0, K.paused_names
  end
  if any_paused and redis.call('SISMEMBER', K.paused_names, name) == 1 then
    redis.call('ZADD', parked_key(name), score, id)
    redis.call('HSET', jk, 'state', 'waiting', 'parked', '1')
    redis.call('HINCRBY', K.meta, 'parked', 1)
    return
  end
  redis.call('HSET', jk, 'state', 'waiting')
  if group ~= '' then
    G.link_waiting(group, id, score)
    return
  end
  redis.call('ZADD', K.waiting, score, id)
  woke = true
end

local function add_one(a)
  local id = ARGV[a]
  local jk = job_key(id)
  if redis.call('EXISTS', jk) == 1 then
    return { 'existing', id }
  end
  local dedup, dedup_ttl = ARGV[a + 12], ARGV[a + 13]
  if dedup ~= '' then
    local dk = dedup_key(dedup)
    local holder = redis.call('GET', dk)
    if holder and redis.call('EXISTS', job_key(holder)) == 1 then
      return { 'existing', holder }
    end
    if dedup_ttl ~= '' then
      redis.call('SET', dk, id, 'PX', math.max(tonumber(dedup_ttl), 1))
    else
      redis.call('SET', dk, id)
    end
  end
  local seq = redis.call('HINCRBY', K.meta, 'seq', 1)
  local priority = math.max(tonumber(ARGV[a + 3]) or 0, 0)
  -- The score clamps (the queue validates the range); the record keeps what was asked.
  local place = math.min(priority, MAX_PRIORITY)
  local order = seq
  if ARGV[a + 4] == '1' then order = -seq end
  local score = num(place * 4294967296 + 2147483648 + order)
  local run_at = NOW + (tonumber(ARGV[a + 5]) or 0)
  if ARGV[a + 6] ~= '' then run_at = tonumber(ARGV[a + 6]) end
  local name = ARGV[a + 1]
  redis.call('SET', data_key(id), ARGV[a + 2])
  redis.call('HSET', jk, 'id', id, 'name', name,
    'priority', num(priority), 'lifo', ARGV[a + 4], 'score', score,
    'max_attempts', ARGV[a + 7], 'attempts_made', 0, 'attempt', 0, 'stalls', 0, 'token', 0,
    'backoff_base', ARGV[a + 8], 'backoff_mult', ARGV[a + 9], 'backoff_max', ARGV[a + 10],
    'added_at', num(NOW), 'cancel_requested', 0,
    'remove_on_complete', ARGV[a + 14], 'remove_on_fail', ARGV[a + 15])
  if ARGV[a + 11] ~= '' then redis.call('HSET', jk, 'timeout', ARGV[a + 11]) end
  if ARGV[a + 16] ~= '' then redis.call('HSET', jk, 'traceparent', ARGV[a + 16]) end
  if ARGV[a + 17] ~= '' then redis.call('HSET', jk, 'tracestate', ARGV[a + 17]) end
  local group = ARGV[a + 18] or ''
  if group ~= '' then redis.call('HSET', jk, 'group', group) end
  if dedup ~= '' then
    local ttl = '0'
    if dedup_ttl ~= '' then ttl = '1' end
    redis.call('HSET', jk, 'dedup', dedup, 'dedup_ttl', ttl)
  end
  if run_at > NOW then
    link_delayed(id, run_at)
    event('delayed', id, 0, num(run_at))
    return { 'new', id, 'delayed' }
  end
  place_waiting(id, name, score, group)
  event('added', id, 0)
  return { 'new', id, 'waiting' }
end

-- jobs_flow_add.lua reuses add_one and has its own main part.
if not FLOW_ADD then
  local n = tonumber(ARGV[7]) or 0
  local out = {}
  for i = 0, n - 1 do
    out[#out + 1] = add_one(8 + i * PER_JOB)
  end
  -- One wake-up for the batch: the woken worker's fetch chains the others.
  if woke then wake() end
  return out
end
