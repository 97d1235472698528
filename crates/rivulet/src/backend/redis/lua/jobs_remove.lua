-- Removes a job that is not active, with its logs and dedup key (see jobs_lib.lua for
-- the keys and the first arguments). O(1).
--
-- ARGV[7] id
-- Returns {'removed', state} | {'active'} | {'notfound'}.
local id = ARGV[7]
local state = redis.call('HGET', job_key(id), 'state')
if not state then return { 'notfound' } end
if state == 'active' then return { 'active' } end
delete_job(id)
return { 'removed', state }
