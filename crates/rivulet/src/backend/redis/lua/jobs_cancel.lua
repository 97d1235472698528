-- Cancels a job (see jobs_lib.lua for the keys and the first arguments).
--
-- ARGV[7] id  [8] the cancel-hint channel
-- Waiting, delayed (or waiting for children): cancelled now. Active: the flag the next
-- renewal reads is set and the id is published on the channel. O(1).
-- Returns {'cancelled'} | {'requested'} | {'finished', state} | {'notfound'}.
local id = ARGV[7]
local jk = job_key(id)
local h = redis.call('HMGET', jk, 'state', 'attempt')
local state = h[1]
if not state then return { 'notfound' } end
if state == 'waiting' or state == 'delayed' or state == 'waiting-children' then
  redis.call('HSET', jk, 'error', 'cancelled')
  finish(id, 'cancelled')
  retain_touched()
  return { 'cancelled' }
end
if state == 'active' then
  redis.call('HSET', jk, 'cancel_requested', '1')
  event('cancelled', id, h[2], 'requested')
  redis.call('PUBLISH', ARGV[8], id)
  return { 'requested' }
end
return { 'finished', state }
