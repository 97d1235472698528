-- Lists a queue's job groups in play (see jobs_lib.lua and jobs_limits_lib.lua for the
-- keys and the first arguments): those ready or timed in the rotation, with active jobs,
-- or paused. Every group with waiting jobs is in one of them (a group leaves the rotation
-- only when it is paused, empty or at its cap, and then it has active jobs).
--
-- ARGV[7] after ('' = from the first)  [8] limit
-- Returns {group, waiting, active, paused 0|1} per group, by name. O(groups in play) to
-- gather and sort the names, then O(limit) counts.
local after, limit = ARGV[7], tonumber(ARGV[8]) or 0
local names, seen = {}, {}
local function add(g)
  if not seen[g] and (after == '' or g > after) then
    seen[g] = true
    names[#names + 1] = g
  end
end
for _, g in ipairs(redis.call('ZRANGE', GK.ready, 0, -1)) do add(g) end
for _, g in ipairs(redis.call('ZRANGE', GK.timed, 0, -1)) do add(g) end
local active = redis.call('HGETALL', GK.active)
for i = 1, #active, 2 do add(active[i]) end
for _, g in ipairs(redis.call('SMEMBERS', GK.paused)) do add(g) end
table.sort(names)
local out = {}
for i = 1, math.min(#names, limit) do
  local g = names[i]
  out[#out + 1] = { g, redis.call('ZCARD', group_waiting_key(g)),
    tonumber(redis.call('HGET', GK.active, g)) or 0, redis.call('SISMEMBER', GK.paused, g) }
end
return out
