-- Claims an idempotency key as a lease (B-IDEM-1/3).
--
-- KEYS[1]  the key
-- ARGV[1]  lease, ms
-- Returns 'acquired', or the key's current value ('claimed' or 'done').
if redis.call('SET', KEYS[1], 'claimed', 'NX', 'PX', ARGV[1]) then
  return 'acquired'
end
return redis.call('GET', KEYS[1])
