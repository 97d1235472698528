-- Flows (J-9): the part of every job script that links children to parents. Follows
-- jobs_lib.lua and jobs_limits_lib.lua (it defines the hooks declared in the first, and
-- swaps the second's keys when it acts in another queue). Not a script on its own.
--
-- A parent `p` of a queue with tag T has `T/deps/<p>` (a set of pending children, each
-- `<queue>/<id>`), `T/results/<p>` (child -> result JSON) and `T/failures/<p>` (child ->
-- error, for children whose failure is ignored); it is in `T/waiting-children` while it
-- waits. A child's hash has `parent_tag`, `parent_queue`, `parent_id`, `parent_member`
-- (the child as its parent names it), `parent_on_fail` (fail|ignore|remove),
-- `parent_direct` (1: apply in the finishing script) and `parent_cap` (the parent
-- queue's events cap). Otherwise the note goes to the child's queue's outbox:
-- `P/flow-outbox` (a sorted set of child ids by note number) and `P/flow-note/<id>`.
local FLOW_ADD = false

local function deps_key(id) return P .. '/deps/' .. id end

-- The lib's keys of the queue with tag T.
local function keys_of(T)
  local k = {
    meta = T .. '/meta', waiting = T .. '/waiting', delayed = T .. '/delayed',
    active = T .. '/active', completed = T .. '/completed', failed = T .. '/failed',
    cancelled = T .. '/cancelled', events = T .. '/events', marker = T .. '/marker',
    paused_names = T .. '/paused-names',
  }
  k['waiting-children'] = T .. '/waiting-children'
  return k
end

-- Runs fn with the lib's keys naming the queue with tag T (one Redis only: keys of
-- another slot; see docs/decisions.md, "Flows").
local function in_queue(T, cap, fn)
  if T == P then return fn() end
  local k, p, c, gk, lim = K, P, EVENTS_CAP, GK, LIMITS
  K, P = keys_of(T), T
  -- The limits library's keys and cached limits are the other queue's too.
  GK, LIMITS = G.keys_of(T), nil
  EVENTS_CAP = math.max(tonumber(cap) or EVENTS_CAP, 1)
  local r = fn()
  K, P, EVENTS_CAP, GK, LIMITS = k, p, c, gk, lim
  return r
end

-- Applies a child's outcome to parent `pid` of the queue K/P name. Only the removal of
-- the child from the pending set has an effect, so a second application is a no-op.
-- Returns 1 when applied, 0 when it was a no-op.
local function flow_apply(pid, member, kind, payload, on_fail)
  if redis.call('SREM', deps_key(pid), member) == 0 then return 0 end
  local jk = job_key(pid)
  local h = redis.call('HMGET', jk, 'state', 'attempt')
  local waits = h[1] == 'waiting-children'
  if kind == 'completed' then
    redis.call('HSET', P .. '/results/' .. pid, member, payload)
  elseif on_fail == 'ignore' then
    redis.call('HSET', P .. '/failures/' .. pid, member, kind .. ': ' .. payload)
  elseif on_fail ~= 'remove' then
    if waits then
      redis.call('HSET', jk, 'error', 'child ' .. member .. ' ' .. kind .. ': ' .. payload)
      finish(pid, 'failed')
    end
    return 1
  end
  if waits and redis.call('SCARD', deps_key(pid)) == 0 then
    link_waiting(pid)
    event('children-completed', pid, h[2] or 0)
  end
  return 1
end

-- Job `id` of this queue finished in `state` (or is removed unfinished: 'removed').
flow_finished = function(id, state)
  local jk = job_key(id)
  local h = redis.call('HMGET', jk, 'parent_tag', 'parent_queue', 'parent_id',
    'parent_member', 'parent_on_fail', 'parent_direct', 'parent_cap', 'result', 'error')
  if not h[1] then return end
  local payload = h[9] or state
  if state == 'completed' then payload = h[8] or 'null' end
  if h[6] == '1' then
    in_queue(h[1], h[7], function()
      return flow_apply(h[3], h[4], state, payload, h[5])
    end)
    return
  end
  local n = redis.call('HINCRBY', K.meta, 'flow_seq', 1)
  redis.call('HSET', P .. '/flow-note/' .. id, 'queue', h[2], 'parent', h[3],
    'member', h[4], 'kind', state, 'payload', payload, 'on_fail', h[5], 'cap', h[7] or '',
    'n', n)
  redis.call('ZADD', P .. '/flow-outbox', n, id)
end

-- Job `id` of this queue, in `state`, is being deleted.
flow_deleted = function(id, state)
  redis.call('DEL', deps_key(id), P .. '/results/' .. id, P .. '/failures/' .. id)
  if state ~= 'completed' and state ~= 'failed' and state ~= 'cancelled' then
    flow_finished(id, 'removed')
  end
end
