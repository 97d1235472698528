-- Removes a job scheduler (J-4). Standalone.
-- KEYS[1] the scheduler index, KEYS[2] the scheduler's record; ARGV[1] the id.
-- Returns 1 when it existed. Jobs it added stay.
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
