-- Renews an idempotency claim while its handler runs (the keep-alive), but never a key
-- recorded as done, and never a claim that has already expired.
--
-- KEYS[1]  the key
-- ARGV[1]  the claim's new time to live, ms
-- Returns 1 when the claim was renewed.
if redis.call('GET', KEYS[1]) == 'claimed' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
