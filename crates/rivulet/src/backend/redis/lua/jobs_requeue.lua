-- An operator's move of jobs to waiting (see jobs_lib.lua for the keys and the first
-- arguments).
--
-- ARGV[7] 'retry' | 'promote' | 'retry_failed'
-- ARGV[8] the job id ('retry', 'promote') or the most jobs to move ('retry_failed')
-- retry: a failed or cancelled job goes back to waiting with its attempts counted afresh
-- (its dedup key, released when it finished, is not taken back). promote: a delayed job
-- is waiting now. retry_failed: retry for up to ARGV[8] of the oldest failed jobs.
-- O(1) per job, O(ARGV[8]) in all.
-- Returns {'moved', from} | {'refused', state} | {'notfound'} | {'bulk', moved, left}.
local mode = ARGV[7]

local function requeue(id, retrying)
  local jk = job_key(id)
  redis.call('HDEL', jk, 'run_at')
  if retrying then
    redis.call('HDEL', jk, 'finished_at', 'error', 'cancel_requested')
    redis.call('HSET', jk, 'attempts_made', 0, 'stalls', 0)
  end
  link_waiting(id)
  local detail = 'promoted'
  if retrying then detail = 'retried' end
  event('added', id, redis.call('HGET', jk, 'attempt'), detail)
end

if mode == 'retry_failed' then
  local limit = tonumber(ARGV[8]) or 0
  local moved = 0
  if limit > 0 then
    local ids = redis.call('ZRANGE', K.failed, 0, limit - 1)
    for _, id in ipairs(ids) do
      if redis.call('HGET', job_key(id), 'state') == 'failed' then
        requeue(id, true)
        moved = moved + 1
      else
        -- A place without its record (or a stale one): drop the place.
        redis.call('ZREM', K.failed, id)
      end
    end
  end
  return { 'bulk', moved, redis.call('ZCARD', K.failed) }
end

local id = ARGV[8]
local state = redis.call('HGET', job_key(id), 'state')
if not state then return { 'notfound' } end
if mode == 'retry' then
  if state ~= 'failed' and state ~= 'cancelled' then return { 'refused', state } end
  requeue(id, true)
elseif mode == 'promote' then
  if state ~= 'delayed' then return { 'refused', state } end
  requeue(id, false)
else
  return redis.error_reply('unknown requeue mode ' .. tostring(mode))
end
return { 'moved', state }
