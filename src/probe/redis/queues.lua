-- depwatch: reads one queue in one call, so that a check reads every queue
-- in a single pipeline (one round trip). Read-only. Keys are derived from
-- ARGV (standalone Redis; a cluster would need them declared).
--   ARGV[1] type: bullmq | bull | list | zset | stream
--   ARGV[2] the key (list, zset, stream) or "<prefix>:<queue>" (bull, bullmq)
--   ARGV[3] how many active jobs to look at for stalled ones
local r = redis.call
local kind, base, maxscan = ARGV[1], ARGV[2], tonumber(ARGV[3])

if kind == 'list' then
  return { r('LLEN', base) }
elseif kind == 'zset' then
  return { r('ZCARD', base) }
elseif kind == 'stream' then
  if r('TYPE', base)['ok'] ~= 'stream' then
    return { 0, {} }
  end
  return { r('XLEN', base), r('XINFO', 'GROUPS', base) }
end

local p = base .. ':'
-- The key every queue of the layout has (discovery looks for it too):
-- without it there is no such queue, whatever its lists would count.
local marker = p .. (kind == 'bullmq' and 'meta' or 'id')
if r('EXISTS', marker) == 0 then
  return { 'missing', marker }
end
local wait = r('LLEN', p .. 'wait')
local active = r('LLEN', p .. 'active')
local paused = r('LLEN', p .. 'paused')
local delayed = r('ZCARD', p .. 'delayed')
local prioritized = 0
local children = 0
if kind == 'bullmq' then
  prioritized = r('ZCARD', p .. 'prioritized')
  children = r('ZCARD', p .. 'waiting-children')
end
local completed = r('ZCARD', p .. 'completed')
local failed = r('ZCARD', p .. 'failed')

-- BullMQ keeps the flag in the meta hash; Bull 3 in a meta-paused key
-- (and, since 3.x, the meta hash too).
local flag = 0
if r('HGET', p .. 'meta', 'paused') then flag = 1 end
if kind == 'bull' and r('EXISTS', p .. 'meta-paused') == 1 then flag = 1 end

-- A job's own time: field, else its creation timestamp; -1 when unknown.
local function stamp(id, field)
  if not id then return -1 end
  local v = r('HMGET', p .. id, field, 'timestamp')
  return tonumber(v[1]) or tonumber(v[2]) or -1
end

-- The oldest job of a list is at its right end (producers LPUSH, workers
-- take from the right); BullMQ 4 may leave a "0:<delay>" marker there.
local function tail(list)
  local id = r('LINDEX', list, -1)
  if id and string.sub(id, 1, 2) == '0:' then id = r('LINDEX', list, -2) end
  if id and string.sub(id, 1, 2) == '0:' then id = false end
  return id
end

local oldest_wait = -1
local function older(ts)
  if ts >= 0 and (oldest_wait < 0 or ts < oldest_wait) then oldest_wait = ts end
end
older(stamp(tail(p .. 'wait'), 'timestamp'))
older(stamp(tail(p .. 'paused'), 'timestamp'))
if prioritized > 0 then
  older(stamp(r('ZRANGE', p .. 'prioritized', 0, 0)[1], 'timestamp'))
end

local oldest_active = stamp(tail(p .. 'active'), 'processedOn')

-- Stalled: an active job whose lock key expired (its worker is gone).
-- EXISTS takes many keys and counts those present: one call per 500 jobs.
local stalled, scanned = 0, 0
if active > 0 and maxscan > 0 then
  local ids = r('LRANGE', p .. 'active', -maxscan, -1)
  local locks = {}
  local function flush()
    if #locks > 0 then
      stalled = stalled + #locks - r('EXISTS', unpack(locks))
      locks = {}
    end
  end
  for _, id in ipairs(ids) do
    if string.sub(id, 1, 2) ~= '0:' then
      scanned = scanned + 1
      locks[#locks + 1] = p .. id .. ':lock'
      if #locks == 500 then flush() end
    end
  end
  flush()
end

return { wait, active, paused, delayed, prioritized, children, completed, failed,
  flag, oldest_wait, oldest_active, stalled, scanned }
