-- Safe retention (B-TRIM-1): removes the oldest entries of a topic that the limits ask
-- for (beyond the max length, older than the max age), but never an entry that some
-- group has not been delivered or has not acknowledged. The boundary is, over all
-- groups, the oldest pending entry, or else everything up to the last delivered id.
-- Work is bounded by the scan budget; the caller repeats while `more` is 1.
--
-- KEYS[1]  the topic stream
-- ARGV[1]  max length, or '-1' for none
-- ARGV[2]  age cutoff (entries with a time below it are too old), ms, or '-1' for none
-- ARGV[3]  scan budget (entries)
-- ARGV[4]  '1' for a dry run: count, remove nothing (optional). A dry run continues
--          where the previous call stopped: ARGV[5] the last id it scanned, ARGV[6]
--          how many entries it scanned before (all free: a call stops at a kept one).
-- Returns {removed, kept_unacked, more, last scanned id} (counts of what a dry run would
-- do).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0, ''}
end
local dry = ARGV[4] == '1'

local max_len = tonumber(ARGV[1])
local cutoff = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])

-- Stream ids compared as (ms, seq) decimal strings, without float rounding.
local function numcmp(a, b)
  if #a ~= #b then
    if #a < #b then return -1 else return 1 end
  end
  if a == b then return 0 end
  if a < b then return -1 else return 1 end
end
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms or '0', seq or '0'
end
local function idcmp(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  local c = numcmp(am, bm)
  if c ~= 0 then return c end
  return numcmp(as, bs)
end

-- The boundary: {id, strict}. Entries below id (or at id when not strict) are free.
local bound = nil
local function tighten(id, strict)
  if bound == nil then
    bound = {id, strict}
    return
  end
  local c = idcmp(id, bound[1])
  if c < 0 or (c == 0 and strict) then
    bound = {id, strict}
  end
end

local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do
    info[g[i]] = g[i + 1]
  end
  local pending = tonumber(info['pending']) or 0
  if pending > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    if summary[2] then
      tighten(summary[2], true)
    else
      tighten('0-0', true)
    end
  else
    tighten(info['last-delivered-id'] or '0-0', false)
  end
end

local function free(id)
  if bound == nil then return true end
  local c = idcmp(id, bound[1])
  return c < 0 or (c == 0 and not bound[2])
end

local len = redis.call('XLEN', KEYS[1])
local over = 0
if max_len >= 0 and len > max_len then
  over = len - max_len
end

local function wanted(index, id)
  if index < over then return true end
  if cutoff >= 0 then
    local ms = split(id)
    return numcmp(ms, ARGV[2]) < 0
  end
  return false
end

local removed, kept, index = 0, 0, 0
local last_free = nil
local first_kept = nil
local more = 0
local start = '-'
local scanned = 0
local last_scanned = ''
if dry and ARGV[5] and ARGV[5] ~= '' then
  start = '(' .. ARGV[5]
  index = tonumber(ARGV[6]) or 0
end
local stopped = false
while not stopped do
  local page = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 100)
  if #page == 0 then break end
  for _, e in ipairs(page) do
    local id = e[1]
    if not wanted(index, id) then
      if first_kept == nil then first_kept = id end
      stopped = true
      break
    end
    if first_kept == nil and free(id) then
      last_free = id
      removed = removed + 1
    else
      if first_kept == nil then first_kept = id end
      kept = kept + 1
    end
    index = index + 1
    scanned = scanned + 1
    last_scanned = id
    if scanned >= budget then
      more = 1
      stopped = true
      break
    end
    start = '(' .. id
  end
end

if dry then
  -- Everything scanned in earlier calls was free (they stop at the first kept entry).
  local before = tonumber(ARGV[6]) or 0
  if kept > 0 then
    if over - before - removed > kept then kept = over - before - removed end
    more = 0
  end
  return {removed, kept, more, last_scanned}
end
if removed > 0 then
  if first_kept == nil then
    -- Everything scanned is free: cut right after the last free entry.
    local nxt = redis.call('XRANGE', KEYS[1], '(' .. last_free, '+', 'COUNT', 1)
    if nxt[1] then
      first_kept = nxt[1][1]
    end
  end
  if first_kept == nil then
    redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
  else
    redis.call('XTRIM', KEYS[1], 'MINID', first_kept)
  end
end
if kept > 0 then
  -- Kept entries were counted only up to the budget; the length limit tells the rest.
  if over - removed > kept then
    kept = over - removed
  end
  more = 0
end
return {removed, kept, more, last_scanned}
