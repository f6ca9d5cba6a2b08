-- depwatch: reads one queue in one call, so that a check reads every queue
-- in a single pipeline (one round trip). Read-only. Keys are derived from
-- ARGV (standalone Redis; a cluster would need them declared).
--   ARGV[1] type: bullmq | bull | list | zset | stream
--   ARGV[2] the key (list, zset, stream) or "<prefix>:<queue>" (bull, bullmq)
--   ARGV[3] how many items to look at one by one: active jobs for stalled
--           ones, a stream group's entries when Redis cannot tell its lag
--   ARGV[4] depwatch's clock, ms since the epoch (delayed jobs that are due:
--           their times are the producers', not Redis's; a stream's ages
--           are taken on Redis's own clock, which made its entry IDs)
--   ARGV[5] how many consumer groups of a stream to read (depwatch shows
--           that many: MAX_GROUPS in queues.rs)
-- A key that cannot be read (another type, a user without access to it)
-- answers { 'fault', key, error, its type, the type expected }, so that the
-- message names the key instead of a line of this script.
local kind, base, maxscan = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = tonumber(ARGV[4]) or 0
local maxgroups = tonumber(ARGV[5]) or 0

local fault
-- One read of `key`, which should be a `want`.
local function call(key, want, ...)
  local v = redis.pcall(...)
  if type(v) == 'table' and v.err then
    fault = { 'fault', key, v.err, want }
    error(v.err)
  end
  return v
end

-- The entries of a stream after `id`, up to `count`: how many (-1:
-- unknown) and the first one's ID ('' when none).
local function after(key, id, count)
  local v = redis.pcall('XRANGE', key, '(' .. id, '+', 'COUNT', count)
  if type(v) ~= 'table' or v.err then return -1, '' end
  return #v, (v[1] and v[1][1]) or ''
end

local function stream()
  local t = call(base, 'stream', 'TYPE', base)['ok']
  if t == 'none' then
    return { 'missing', base }
  elseif t ~= 'stream' then
    fault = { 'fault', base, 'WRONGTYPE', 'stream' }
    error('WRONGTYPE')
  end
  local groups = call(base, 'stream', 'XINFO', 'GROUPS', base)
  -- Per group, as many as depwatch shows (ARGV[5]):
  -- - where Redis gives no lag (entries deleted in the middle of the stream,
  --   a group set to an arbitrary ID, Redis before 7.0), the entries after
  --   its last delivered one, counted;
  -- - for the ages, the first entry not yet delivered (its ID holds the
  --   time it was added) and how long the oldest pending entry has been
  --   with its consumer (idle ms).
  local counted, next_ids, idles = {}, {}, {}
  for i = 1, math.min(#groups, maxgroups) do
    local g = groups[i]
    local lag, last, name = false, nil, nil
    for j = 1, #g - 1, 2 do
      if g[j] == 'lag' then lag = g[j + 1] end
      if g[j] == 'last-delivered-id' then last = g[j + 1] end
      if g[j] == 'name' then name = g[j + 1] end
    end
    counted[i], next_ids[i], idles[i] = -1, '', -1
    if last and not lag and maxscan > 0 then
      -- One read for both: the count and the first entry not delivered.
      counted[i], next_ids[i] = after(base, last, maxscan)
    elseif last and lag ~= 0 then
      local _, first = after(base, last, 1)
      next_ids[i] = first
    end
    if name then
      local pending = call(base, 'stream', 'XPENDING', base, name, '-', '+', 1)
      if pending[1] then idles[i] = pending[1][3] end
    end
  end
  -- Entry IDs hold Redis's clock: their ages are taken on it, not on
  -- depwatch's host's (ms since the epoch).
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return { call(base, 'stream', 'XLEN', base), groups, counted, next_ids, idles, clock }
end

-- Whether a meta hash is BullMQ's (Bull 3 keeps only `paused` there).
local function is_bullmq(meta)
  local v = call(meta, 'hash', 'HMGET', meta, 'opts.maxLenEvents', 'version')
  return v[1] ~= false or (v[2] ~= false and string.sub(v[2], 1, 6) == 'bullmq')
end

local function main()
  if kind == 'list' then
    return { call(base, 'list', 'LLEN', base) }
  elseif kind == 'zset' then
    return { call(base, 'zset', 'ZCARD', base) }
  elseif kind == 'stream' then
    return stream()
  end

  local p = base .. ':'
  -- The key every queue of the layout has (discovery looks for it too):
  -- without it there is no such queue, whatever its lists would count.
  local marker = p .. (kind == 'bullmq' and 'meta' or 'id')
  if call(marker, 'any', 'EXISTS', marker) == 0 then
    -- A Bull 3 queue has its id counter and no meta hash (but when paused).
    if kind == 'bullmq' and call(p .. 'id', 'any', 'EXISTS', p .. 'id') == 1 then
      return { 'missing', marker, p .. 'id' }
    end
    return { 'missing', marker }
  end
  -- BullMQ keeps an id counter too: a BullMQ queue read as Bull would miss
  -- its prioritized and waiting-children jobs. Its meta hash tells.
  if kind == 'bull' and is_bullmq(p .. 'meta') then
    return { 'layout', p .. 'meta' }
  end
  local function llen(k) return call(p .. k, 'list', 'LLEN', p .. k) end
  local function zcard(k) return call(p .. k, 'zset', 'ZCARD', p .. k) end
  local wait = llen('wait')
  local active = llen('active')
  local paused = llen('paused')
  local delayed = zcard('delayed')
  local prioritized = 0
  local children = 0
  if kind == 'bullmq' then
    prioritized = zcard('prioritized')
    children = zcard('waiting-children')
  end
  local completed = zcard('completed')
  local failed = zcard('failed')

  -- BullMQ keeps the flag in the meta hash; Bull 3 in a meta-paused key
  -- (and, since 3.x, the meta hash too).
  local flag = 0
  if call(p .. 'meta', 'hash', 'HGET', p .. 'meta', 'paused') then flag = 1 end
  if kind == 'bull' and call(p .. 'meta-paused', 'any', 'EXISTS', p .. 'meta-paused') == 1 then
    flag = 1
  end

  -- A job's own time: field, else its creation timestamp; -1 when unknown
  -- (no such job hash, or a value that is not a number).
  local function stamp(id, field)
    if not id then return -1 end
    local v = call(p .. id, 'hash', 'HMGET', p .. id, field, 'timestamp')
    return tonumber(v[1]) or tonumber(v[2]) or -1
  end

  -- The oldest job of a list is at its right end (producers LPUSH, workers
  -- take from the right), but a LIFO job is pushed to the right: in a LIFO
  -- queue the oldest, the one that starves, is at the left end. Both ends,
  -- then. BullMQ 4 may leave a "0:<delay>" marker there. A job without a
  -- readable time (its hash removed or evicted) does not hide the others:
  -- the next ones are looked at, a few at most from each end.
  local function first_stamp(ids, from, to, step, field)
    for i = from, to, step do
      if string.sub(ids[i], 1, 2) ~= '0:' then
        local ts = stamp(ids[i], field)
        if ts >= 0 then return ts end
      end
    end
    return -1
  end
  -- One end's first readable time: its end item, and the next nine only
  -- when that one has none (each item read costs the script a string).
  local function end_stamp(list, field, right)
    for _, span in ipairs({ { 0, 0 }, { 1, 9 } }) do
      local ids
      if right then
        ids = call(list, 'list', 'LRANGE', list, -1 - span[2], -1 - span[1])
      else
        ids = call(list, 'list', 'LRANGE', list, span[1], span[2])
      end
      local ts
      if right then ts = first_stamp(ids, #ids, 1, -1, field) else ts = first_stamp(ids, 1, #ids, 1, field) end
      if ts >= 0 or #ids < span[2] - span[1] + 1 then return ts end
    end
    return -1
  end
  local function oldest(list, field, len)
    local a = end_stamp(list, field, true)
    if len <= 1 then return a end
    local b = end_stamp(list, field, false)
    if a < 0 or (b >= 0 and b < a) then return b end
    return a
  end

  local oldest_wait = -1
  local function older(ts)
    if ts >= 0 and (oldest_wait < 0 or ts < oldest_wait) then oldest_wait = ts end
  end
  if wait > 0 then older(oldest(p .. 'wait', 'timestamp', wait)) end
  if paused > 0 then older(oldest(p .. 'paused', 'timestamp', paused)) end
  -- Prioritized scores are priority * 2^32 + a counter: the first job of a
  -- priority is its oldest, and the lowest priorities (highest scores) are
  -- the ones that starve. Their first jobs, from the lowest priority up, a
  -- few priorities at most (each step is O(log n)).
  if prioritized > 0 then
    local key = p .. 'prioritized'
    local below = '+inf'
    for _ = 1, 16 do
      local last = call(key, 'zset', 'ZREVRANGEBYSCORE', key, below, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
      if #last == 0 then break end
      local floor = math.floor(tonumber(last[2]) / 4294967296) * 4294967296
      local from = string.format('%.0f', floor)
      local first = call(key, 'zset', 'ZRANGEBYSCORE', key, from, '+inf', 'LIMIT', 0, 1)
      older(stamp(first[1], 'timestamp'))
      below = '(' .. from
    end
  end
  -- Delayed scores are the time a job is due (ms) * 0x1000 + a counter.
  -- A job past its time waits for a worker to promote it: with no worker
  -- left, repeatable jobs sit there for good.
  local due, due_at = 0, -1
  if delayed > 0 then
    local key = p .. 'delayed'
    local bound = string.format('(%.0f', (math.floor(now) + 1) * 4096)
    due = call(key, 'zset', 'ZCOUNT', key, '-inf', bound)
    if due > 0 then
      local first = call(key, 'zset', 'ZRANGE', key, 0, 0, 'WITHSCORES')
      if first[2] then due_at = math.floor(tonumber(first[2]) / 4096) end
    end
  end

  -- Rate limited (BullMQ): the limiter counter has reached its limit, the
  -- global one kept in meta (`max`) or the MAX_SAFE_INTEGER that
  -- rateLimit(ms) writes (a partner's 429, say); its TTL is how long the
  -- workers wait. A limit given to the workers alone is not in Redis.
  local limited_ms = -1
  if kind == 'bullmq' then
    local key = p .. 'limiter'
    local count = tonumber(call(key, 'string', 'GET', key))
    if count then
      local max = tonumber(call(p .. 'meta', 'hash', 'HGET', p .. 'meta', 'max'))
      if count >= 9007199254740991 or (max and count >= max) then
        limited_ms = call(key, 'string', 'PTTL', key)
      end
    end
  end

  local oldest_active = -1
  if active > 0 then oldest_active = oldest(p .. 'active', 'processedOn', active) end

  -- Stalled: an active job whose lock key expired (its worker is gone).
  -- EXISTS takes many keys and counts those present: one call per 500 jobs.
  local stalled, scanned = 0, 0
  if active > 0 and maxscan > 0 then
    local ids = call(p .. 'active', 'list', 'LRANGE', p .. 'active', -maxscan, -1)
    local locks = {}
    local function flush()
      if #locks > 0 then
        stalled = stalled + #locks - call(locks[1], 'any', 'EXISTS', unpack(locks))
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
    flag, oldest_wait, oldest_active, stalled, scanned, due, due_at, limited_ms }
end

local ok, answer = pcall(main)
if ok then return answer end
if not fault then error(answer) end
local t = redis.pcall('TYPE', fault[2])
fault[5] = fault[4]
fault[4] = (type(t) == 'table' and t['ok']) or ''
return fault
