-- Deletes a consumer of a group on both of the group's logs, but only if it has nothing
-- pending on either (checked in the same step, so no entry is dropped with it).
--
-- KEYS[1]  the topic stream   KEYS[2]  the group's retry lane
-- ARGV[1]  group              ARGV[2]  consumer
-- Returns 1 when deleted (or there was nothing to delete), 0 when it holds entries.
local function holds(key)
  if redis.call('EXISTS', key) == 0 then return false end
  local r = redis.pcall('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2])
  if type(r) == 'table' and r.err then return false end -- NOGROUP: nothing there
  return #r > 0
end
if holds(KEYS[1]) or holds(KEYS[2]) then return 0 end
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.pcall('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
  end
end
return 1
