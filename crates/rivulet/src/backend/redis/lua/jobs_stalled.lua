-- Takes back jobs whose lease expired (see jobs_lib.lua for the keys and the first
-- arguments).
--
-- ARGV[7] max stalled  [8] limit
-- Each counts a stall: cancelling asked for → cancelled; stalls ≤ max stalled → waiting
-- at its place; else a failed attempt (delayed by its backoff, or failed).
-- Returns {returned ids, failed-attempt ids, cancelled ids}. O(limit).
local max_stalled, limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local returned, failed_attempt, cancelled = {}, {}, {}
if limit > 0 then
  local expired = redis.call('ZRANGEBYSCORE', K.active, '-inf', num(NOW), 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    local jk = job_key(id)
    local h = redis.call('HMGET', jk, 'state', 'attempt', 'cancel_requested')
    if h[1] ~= 'active' then
      redis.call('ZREM', K.active, id)
    else
      local stalls = redis.call('HINCRBY', jk, 'stalls', 1)
      local attempt = tonumber(h[2]) or 0
      event('stalled', id, attempt)
      if h[3] == '1' then
        redis.call('HSET', jk, 'error', 'cancelled while active; its lease ran out')
        finish(id, 'cancelled')
        cancelled[#cancelled + 1] = id
      elseif stalls <= max_stalled then
        link_waiting(id)
        returned[#returned + 1] = id
      else
        local err = 'stalled ' .. stalls .. ' times (its lease expired)'
        retry(id, backoff_ms(id, attempt), err)
        failed_attempt[#failed_attempt + 1] = id
      end
    end
  end
end
retain_touched()
return { returned, failed_attempt, cancelled }
