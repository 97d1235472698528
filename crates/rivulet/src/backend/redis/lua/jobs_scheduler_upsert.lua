-- Creates or replaces a job scheduler (J-4). Standalone (not prefixed with jobs_lib.lua).
--
-- KEYS[1] the queue's scheduler index `{…}/schedulers` (sorted set: id by next fire ms)
-- KEYS[2] the scheduler's record `{…}/scheduler/<id>` (hash)
-- ARGV id, kind (cron|every), value (expression or ms), tz, job name, job data,
--      job options (JSON), next fire ms (used only when the schedule is new or changed)
-- Returns {outcome, version, next}: outcome created | replaced | updated | unchanged.
-- Checks the key types before writing, so a failing call changes nothing.
local set, key = KEYS[1], KEYS[2]
local id, kind, value, tz, name, data, opts, nxt =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local st = redis.call('TYPE', set)['ok']
if st ~= 'none' and st ~= 'zset' then
  return redis.error_reply('WRONGTYPE the scheduler index is not a sorted set')
end
local h = redis.call('HMGET', key, 'kind', 'value', 'tz', 'job_name', 'job_data', 'job_opts',
  'version', 'next')
if not h[7] then
  redis.call('HSET', key, 'id', id, 'kind', kind, 'value', value, 'tz', tz, 'job_name', name,
    'job_data', data, 'job_opts', opts, 'version', 1, 'next', nxt)
  redis.call('ZADD', set, nxt, id)
  return { 'created', 1, nxt }
end
local same_schedule = h[1] == kind and h[2] == value and h[3] == tz
local same_template = h[4] == name and h[5] == data and h[6] == opts
local version = tonumber(h[7]) or 0
if same_schedule and same_template then
  return { 'unchanged', version, h[8] or '' }
end
version = version + 1
redis.call('HSET', key, 'kind', kind, 'value', value, 'tz', tz, 'job_name', name,
  'job_data', data, 'job_opts', opts, 'version', version)
if same_schedule then
  return { 'updated', version, h[8] or '' }
end
redis.call('HSET', key, 'next', nxt)
redis.call('ZADD', set, nxt, id)
return { 'replaced', version, nxt }
