-- Adds the nodes of a flow that belong to one queue, all of one depth (see
-- jobs_lib.lua for the keys and the first arguments; jobs_add.lua, whose add_one this
-- reuses, comes before this file). The caller adds the depths in order, parents first.
-- O(nodes + children).
--
-- ARGV[7] how many nodes; then per node the 18 arguments of jobs_add.lua, then:
-- parent tag or '', parent queue, parent id, this node as its parent names it, on-fail
-- word, direct 0|1, the parent queue's events cap, how many children, the children
-- (`<queue>/<id>` each).
-- Returns one item per node: {'new', id, state} | {'existing', id} | {'conflict', id}.
local function flow_node(a)
  local id = ARGV[a]
  local jk = job_key(id)
  local b = a + PER_JOB
  local ptag, pqueue, pid, member = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local on_fail, direct, pcap = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local nc = tonumber(ARGV[b + 7]) or 0
  local after = b + 8 + nc
  if redis.call('EXISTS', jk) == 1 then
    -- A retried add: nothing is written again; a job outside this flow is a conflict.
    if ptag ~= '' then
      local link = redis.call('HMGET', jk, 'parent_tag', 'parent_id')
      if link[1] ~= ptag or link[2] ~= pid then return { 'conflict', id }, after end
    end
    return { 'existing', id }, after
  end
  local r = add_one(a)
  if ptag ~= '' then
    redis.call('HSET', jk, 'parent_tag', ptag, 'parent_queue', pqueue, 'parent_id', pid,
      'parent_member', member, 'parent_on_fail', on_fail, 'parent_direct', direct,
      'parent_cap', pcap)
  end
  if nc > 0 then
    for i = 1, nc do redis.call('SADD', deps_key(id), ARGV[b + 7 + i]) end
    unlink(id)
    redis.call('HSET', jk, 'state', 'waiting-children')
    redis.call('ZADD', K['waiting-children'], num(NOW), id)
    event('waiting-children', id, 0, tostring(nc))
    r = { 'new', id, 'waiting-children' }
  end
  return r, after
end

local n = tonumber(ARGV[7]) or 0
local out = {}
local a = 8
for _ = 1, n do
  local r
  r, a = flow_node(a)
  out[#out + 1] = r
end
if woke then wake() end
return out
