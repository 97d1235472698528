-- Deletes applied notes from this queue's flow outbox (see jobs_flow_lib.lua): each only
-- if it is still the note that was read (same number). O(notes).
--
-- ARGV[7] how many; then two arguments each: child id, note number.
-- Returns how many were deleted.
local n = tonumber(ARGV[7]) or 0
local deleted = 0
for i = 0, n - 1 do
  local id, num_ = ARGV[8 + i * 2], ARGV[9 + i * 2]
  local nk = P .. '/flow-note/' .. id
  if redis.call('HGET', nk, 'n') == num_ then
    redis.call('DEL', nk)
    redis.call('ZREM', P .. '/flow-outbox', id)
    deleted = deleted + 1
  end
end
return deleted
