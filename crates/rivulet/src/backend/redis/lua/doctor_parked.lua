-- Counts the jobs in the parked sets of a queue's paused names and compares them with
-- the parked counter; with ARGV[2] = '1' it also sets the counter to that count.
--
-- KEYS[1] meta  [2] paused-names     ARGV[1] the queue's tag  [2] '1' to recount
-- Parked-set keys are built from the tag (`<tag>/parked/<name>`), as the job scripts do.
-- O(paused names). Returns {counter before, jobs in the parked sets}.
local names = redis.call('SMEMBERS', KEYS[2])
local jobs = 0
for _, name in ipairs(names) do
  jobs = jobs + redis.call('ZCARD', ARGV[1] .. '/parked/' .. name)
end
local counter = tonumber(redis.call('HGET', KEYS[1], 'parked') or '0') or 0
if ARGV[2] == '1' and counter ~= jobs then
  redis.call('HSET', KEYS[1], 'parked', jobs)
end
return { counter, jobs }
