-- Drops an idempotency claim, but never a key recorded as done.
--
-- KEYS[1]  the key
-- Returns 1 when a claim was dropped.
if redis.call('GET', KEYS[1]) == 'claimed' then
  return redis.call('DEL', KEYS[1])
end
return 0
