-- Resumes the queue, or one job name a batch at a time (see jobs_lib.lua for the keys
-- and the first arguments).
--
-- ARGV[7] job name, or '' for the whole queue  [8] batch  [9] 1 on the first batch
-- The first batch takes the name off the paused set; later batches stop when the name
-- was paused again meanwhile. Each moves up to `batch` parked jobs back to waiting at
-- their places. O(batch).
-- Returns how many jobs of the name are still parked (0: done).
local name, batch = ARGV[7], tonumber(ARGV[8])
if name == '' then
  redis.call('HSET', K.meta, 'paused', '0')
  wake()
  return 0
end
if ARGV[9] == '1' then
  redis.call('SREM', K.paused_names, name)
elseif redis.call('SISMEMBER', K.paused_names, name) == 1 then
  return 0
end
local pk = parked_key(name)
local items = redis.call('ZRANGE', pk, 0, batch - 1, 'WITHSCORES')
local moved = 0
for i = 1, #items, 2 do
  local id, score = items[i], items[i + 1]
  redis.call('ZREM', pk, id)
  redis.call('HDEL', job_key(id), 'parked')
  local group = redis.call('HGET', job_key(id), 'group')
  if group then
    G.link_waiting(group, id, score)
  else
    redis.call('ZADD', K.waiting, score, id)
  end
  moved = moved + 1
end
if moved > 0 then redis.call('HINCRBY', K.meta, 'parked', -moved) end
wake()
return redis.call('ZCARD', pk)
