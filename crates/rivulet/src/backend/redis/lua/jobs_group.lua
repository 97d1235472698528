-- Pauses or resumes one group (see jobs_lib.lua and jobs_limits_lib.lua for the keys and
-- the first arguments).
--
-- ARGV[7] pause|resume  [8] group
-- A paused group leaves the rotation (its jobs stay waiting in its set, its active jobs
-- run to their end); resuming puts it back when it has work and room, and wakes a
-- worker. O(log groups). Returns 1 when the group's state changed, 0 when it was so
-- already.
local paused = ARGV[7] == 'pause'
local g = ARGV[8]
if not G.pause(g, paused) then return 0 end
if paused then
  event('group-paused', g, 0, 'group')
else
  event('group-resumed', g, 0, 'group')
  wake()
end
return 1
