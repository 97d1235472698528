-- Appends a log line of an activation, keeping the last `cap` (see jobs_lib.lua for the
-- keys and the first arguments). O(1) amortized.
--
-- ARGV[7] id  [8] token  [9] line  [10] cap
-- Returns 1, or 0 when the job is not active under that token (nothing written).
local id, token, cap = ARGV[7], ARGV[8], tonumber(ARGV[10])
local h = redis.call('HMGET', job_key(id), 'state', 'token')
if h[1] ~= 'active' or h[2] ~= token then return 0 end
local lk = logs_key(id)
if cap <= 0 then
  redis.call('DEL', lk)
  return 1
end
redis.call('RPUSH', lk, ARGV[9])
redis.call('LTRIM', lk, -cap, -1)
return 1
