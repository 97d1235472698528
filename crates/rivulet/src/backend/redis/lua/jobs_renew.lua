-- Extends leases (see jobs_lib.lua for the keys and the first arguments).
--
-- ARGV[7] lease ms; then pairs id, token.
-- Returns per pair 'renewed', 'cancel' (cancelling was asked for: not renewed) or
-- 'lost'. O(pairs).
local lease_ms = tonumber(ARGV[7])
local out = {}
for i = 8, #ARGV - 1, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local h = redis.call('HMGET', job_key(id), 'state', 'token', 'cancel_requested')
  if h[1] ~= 'active' or h[2] ~= token then
    out[#out + 1] = 'lost'
  elseif h[3] == '1' then
    out[#out + 1] = 'cancel'
  else
    redis.call('ZADD', K.active, 'XX', num(NOW + lease_ms), id)
    out[#out + 1] = 'renewed'
  end
end
return out
