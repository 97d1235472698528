-- Records the progress of an activation (see jobs_lib.lua for the keys and the first
-- arguments). O(1).
--
-- ARGV[7] id  [8] token  [9] progress (JSON)
-- Returns 1, or 0 when the job is not active under that token (nothing written).
local id, token = ARGV[7], ARGV[8]
local jk = job_key(id)
local h = redis.call('HMGET', jk, 'state', 'token', 'attempt')
if h[1] ~= 'active' or h[2] ~= token then return 0 end
redis.call('HSET', jk, 'progress', ARGV[9])
event('progress', id, h[3], ARGV[9])
return 1
