-- Adds one job (see jobs_lib.lua for the keys and the first arguments). add_jobs sends
-- one of these per job in one pipeline. O(1).
--
-- ARGV[7] id  [8] name  [9] data  [10] priority  [11] lifo 0|1  [12] delay ms
-- [13] run-at ms or ''  [14] max attempts  [15] backoff base ms  [16] multiplier
-- [17] backoff max ms  [18] timeout ms or ''  [19] dedup key or ''  [20] dedup ttl ms
-- or ''  [21] remove on complete 0|1  [22] remove on fail 0|1
-- Returns {'existing', id} or {'new', id, state}.
local id = ARGV[7]
local jk = job_key(id)
if redis.call('EXISTS', jk) == 1 then
  return { 'existing', id }
end
local dedup = ARGV[19]
if dedup ~= '' then
  local dk = dedup_key(dedup)
  local holder = redis.call('GET', dk)
  if holder and redis.call('EXISTS', job_key(holder)) == 1 then
    return { 'existing', holder }
  end
  if ARGV[20] ~= '' then
    redis.call('SET', dk, id, 'PX', math.max(tonumber(ARGV[20]), 1))
  else
    redis.call('SET', dk, id)
  end
end
local seq = redis.call('HINCRBY', K.meta, 'seq', 1)
local priority = math.max(tonumber(ARGV[10]) or 0, 0)
-- The score clamps (the queue validates the range); the record keeps what was asked.
local place = math.min(priority, MAX_PRIORITY)
local order = seq
if ARGV[11] == '1' then order = -seq end
local score = place * 4294967296 + 2147483648 + order
local run_at = NOW + (tonumber(ARGV[12]) or 0)
if ARGV[13] ~= '' then run_at = tonumber(ARGV[13]) end
redis.call('HSET', jk, 'id', id, 'name', ARGV[8], 'data', ARGV[9], 'priority', num(priority),
  'lifo', ARGV[11], 'score', num(score), 'max_attempts', ARGV[14], 'attempts_made', 0,
  'attempt', 0, 'stalls', 0, 'token', 0, 'backoff_base', ARGV[15], 'backoff_mult', ARGV[16],
  'backoff_max', ARGV[17], 'added_at', num(NOW), 'cancel_requested', 0,
  'remove_on_complete', ARGV[21], 'remove_on_fail', ARGV[22])
if ARGV[18] ~= '' then redis.call('HSET', jk, 'timeout', ARGV[18]) end
if dedup ~= '' then
  local ttl = '0'
  if ARGV[20] ~= '' then ttl = '1' end
  redis.call('HSET', jk, 'dedup', dedup, 'dedup_ttl', ttl)
end
if run_at > NOW then
  link_delayed(id, run_at)
  event('delayed', id, 0, num(run_at))
  return { 'new', id, 'delayed' }
end
link_waiting(id)
event('added', id, 0)
return { 'new', id, 'waiting' }
