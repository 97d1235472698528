-- Applies notes of children (from other queues' outboxes) to parents of this queue (see
-- jobs_flow_lib.lua). Idempotent per note. O(notes).
--
-- ARGV[7] how many notes; then six arguments each: parent id, member, kind, payload,
-- on-fail word, events cap.
-- Returns {how many notes had an effect, how many notes this queue's outbox holds} (a
-- parent failed here leaves a note for its own parent in another slot).
local n = tonumber(ARGV[7]) or 0
local applied = 0
for i = 0, n - 1 do
  local a = 8 + i * 6
  EVENTS_CAP = math.max(tonumber(ARGV[a + 5]) or EVENTS_CAP, 1)
  applied = applied + flow_apply(ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
end
return { applied, redis.call('ZCARD', P .. '/flow-outbox') }
