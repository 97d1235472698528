-- Fires one tick of a job scheduler (J-4): the compare-and-set part. The script sent to
-- Redis is jobs_lib.lua, then this file, then jobs_add.lua, which adds the tick's job
-- passed in its usual arguments (ARGV[7] = 1, then that job's arguments); so the job is
-- added exactly as Queue::add would add it, in the same atomic step.
--
-- KEYS: the fixed job keys (jobs_lib.lua), then the scheduler index and the scheduler's
--       record as the last two.
-- ARGV: the common and add arguments, then as the last five: scheduler id, expected
--       version, expected next fire ms, tick ms, next fire ms ('' = none left).
-- Returns {'stale'} (nothing written) when the record no longer has that version and
-- next fire time; otherwise what jobs_add.lua returns for the job.
local SCHED_INDEX, SCHED_KEY = KEYS[#KEYS - 1], KEYS[#KEYS]
local SCHED_ARG = #ARGV - 4
local SCHED_ID, SCHED_VERSION, SCHED_EXPECTED, SCHED_TICK, SCHED_NEXT =
  ARGV[SCHED_ARG], ARGV[SCHED_ARG + 1], ARGV[SCHED_ARG + 2], ARGV[SCHED_ARG + 3],
  ARGV[SCHED_ARG + 4]
do
  local h = redis.call('HMGET', SCHED_KEY, 'version', 'next')
  if h[1] ~= SCHED_VERSION or h[2] ~= SCHED_EXPECTED then
    return { 'stale' }
  end
  -- Every key this step writes has the type it needs, so it cannot fail half way.
  local want = { [K.meta] = 'hash', [K.waiting] = 'zset', [K.delayed] = 'zset',
    [K.events] = 'stream', [K.marker] = 'list', [SCHED_INDEX] = 'zset' }
  for k, ty in pairs(want) do
    local got = redis.call('TYPE', k)['ok']
    if got ~= 'none' and got ~= ty then
      return redis.error_reply('WRONGTYPE ' .. k .. ' is a ' .. got .. ', not a ' .. ty)
    end
  end
  local job = ARGV[8]
  if SCHED_NEXT == '' then
    -- No tick left: kept in the index (so it is listed) where no read finds it due.
    redis.call('ZADD', SCHED_INDEX, '+inf', SCHED_ID)
    redis.call('HDEL', SCHED_KEY, 'next')
  else
    redis.call('ZADD', SCHED_INDEX, SCHED_NEXT, SCHED_ID)
    redis.call('HSET', SCHED_KEY, 'next', SCHED_NEXT)
  end
  redis.call('HSET', SCHED_KEY, 'last', SCHED_TICK, 'last_job', job)
  event('scheduler-fired', job, 0, SCHED_ID .. '@' .. SCHED_TICK)
end
