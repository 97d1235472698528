-- Creates a group (first on its retry lane, then on the topic) and registers it.
-- A group that rivulet had registered but that is gone from the topic (deleted outside
-- rivulet) is re-created at the start of the retained history, never at '$', so
-- nothing published meanwhile is skipped.
--
-- KEYS[1]  the stream
-- KEYS[2]  the group's retry lane
-- KEYS[3]  the group registry
-- KEYS[4]  the broadcast group registry
-- KEYS[5]  the groups' incarnations (a hash: group -> counter)
-- ARGV[1]  group
-- ARGV[2]  where a new group starts ('$', '0' or an entry id)
-- ARGV[3]  '1' for a broadcast group
-- ARGV[4]  '1' when ARGV[2] is where a vanished group must resume (a reader that knows
--          the last entry it read), used even for a registered group
-- Returns 'existed', 'created' or 'recreated'.
-- redis.pcall returns an error as a table {err = message} instead of raising it.
local function failed(reply)
  return type(reply) == 'table' and reply['err'] ~= nil
end
local function create(key, start)
  local r = redis.pcall('XGROUP', 'CREATE', key, ARGV[1], start, 'MKSTREAM')
  if failed(r) and not string.find(r['err'], 'BUSYGROUP', 1, true) then
    return r
  end
  return nil
end
local probe = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)
if failed(probe) and not string.find(probe['err'], 'NOGROUP', 1, true) then
  return probe
end
local exists = not failed(probe)
local registered = redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1
local err = create(KEYS[2], '0')
if err then
  return err
end
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[4], ARGV[1])
end
if exists then
  return 'existed'
end
local start, status = ARGV[2], 'created'
if registered then
  status = 'recreated'
  if ARGV[4] ~= '1' then
    start = '0'
  end
end
err = create(KEYS[1], start)
if err then
  return err
end
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
return status
