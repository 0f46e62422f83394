-- The one atomic Redis step per batch (speed-layer/apply.ts builds KEYS and ARGV from the fold
-- and loads this file at startup). BINGE_STREAM_MAXLEN is defined by the loader, from
-- common/speed-keys.ts, so the stream's bound has one source.
--
-- ARGV: partition, first offset, next offset, accept, then operations, each as
--   code, KEYS index, expire-at ms (0 = leave), n, n arguments.
-- accept: '' normally; 'init' lets the step set a partition's missing offset (a step from offset 0
--   may always: nothing precedes it); a stored offset
--   (as written) lets the step apply over that stored offset although it is below the first offset
--   (the consumer checked that Kafka no longer holds the messages in between).
-- Codes: D dedupe (base index, packed 8-byte hashes, KEYS index of the previous arrival epoch's set, the most ids
-- the set may hold), I HINCRBY (field, by)…,
-- W HSET (field, value)…, P PFADD members…, Z ZINCRBY (member, by)…,
-- G ZADD GT (score, member)…, T trim a zset below a score, B binge (stream
-- KEYS index, then (user, day, ts)…: SADD to the day's set and XADD when new), U one user's features
-- (user_op below). USER_SLOTS, WATCH_INTERVAL_CAP_MS and SESSION_GAP_MS are defined by the loader too.
--
-- Returns {'applied', unremembered} | {'skipped', stored} | {'partial', stored} | {'gap', stored} | {'missing'} |
-- {'duplicates', i…} (indexes into the batch's dedupe hashes already seen; nothing written).
-- 'gap' and 'missing' write nothing: Redis is behind the consumer (it lost applied steps, e.g. the
-- last second of an AOF with appendfsync everysec, or a restart from an older AOF), and applying
-- would move the offset over effects that are no longer there.
-- unremembered: ids counted but not added to a dedupe set that was full (SPEED_DEDUPE_MAX_IDS): a later copy
-- of them counts again. The bound is on a set's cardinality (SCARD is O(1)), so memory stays bounded whatever the rate.

local offsets = KEYS[1]
local partition = ARGV[1]
local first = tonumber(ARGV[2])
local nxt = tonumber(ARGV[3])
local accept = ARGV[4]
local stored = redis.call('HGET', offsets, partition)
if stored then
  local s = tonumber(stored)
  if s >= nxt then return {'skipped', stored} end
  if s > first then return {'partial', stored} end
  if s < first and stored ~= accept then return {'gap', stored} end
elseif accept ~= 'init' and first > 0 then
  return {'missing'}
end

local function each_op(fn)
  local i = 5
  local total = #ARGV
  while i <= total do
    local n = tonumber(ARGV[i + 3])
    fn(ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2]), i + 4, n)
    i = i + 4 + n
  end
end

-- Lua's unpack is limited to a few thousand values: call in chunks.
local CHUNK = 1000
local function chunked(list, fn)
  for c = 1, #list, CHUNK do
    fn(unpack(list, c, math.min(c + CHUNK - 1, #list)))
  end
end
local function split8(packed)
  local out = {}
  for j = 1, #packed, 8 do out[#out + 1] = string.sub(packed, j, j + 7) end
  return out
end
-- The same over ARGV[a .. a+n-1] in place (no copy). CHUNK is even, so (field, value) pairs stay whole.
local function chunked_args(a, n, fn)
  local last = a + n - 1
  for c = a, last, CHUNK do
    fn(unpack(ARGV, c, math.min(c + CHUNK - 1, last)))
  end
end

-- A ring slot of a user's hash (common/speed-keys.ts, "User features"): `<index>:<value>…`. A slot holding an
-- older bucket is reset; one holding a newer bucket means this one has left the window: nothing to add.
local function fmt(x) return string.format('%.0f', x) end
local function slot_add(key, kind, idx, incs)
  local field = kind .. fmt(idx % USER_SLOTS[kind])
  local cur = redis.call('HGET', key, field)
  local vals = {}
  if cur then
    local parts = {}
    for p in string.gmatch(cur, '[^:]+') do parts[#parts + 1] = tonumber(p) end
    if parts[1] > idx then return end
    if parts[1] == idx then vals = parts end
  end
  local out = {fmt(idx)}
  for j = 1, #incs do out[j + 1] = fmt((vals[j + 1] or 0) + incs[j]) end
  redis.call('HSET', key, field, table.concat(out, ':'))
end

local DAY_MS = 86400000
local function same_day(x, y) return math.floor(x / DAY_MS) == math.floor(y / DAY_MS) end

-- U: per user, (KEYS index, numbers, strings). The numbers are comma-separated integers (-1 = none): first ts,
-- last ts, last content's ts, first watch event's ts, the play left open, the numbers of minutes, hours, days
-- and session runs (at most 2), the byte lengths of the strings, then (minute, events, plays)…,
-- (hour, events, plays, watch ms)…, day…, (start, end, events)…. The strings, concatenated: the last content_id,
-- then one device_type per run (speed-layer/fold.ts, UserBatch). exp: the key's expiry.
local function user_op(key, packed, strings, exp)
  local v = {}
  for x in string.gmatch(packed, '[^,]+') do v[#v + 1] = tonumber(x) end
  local nm, nh, nd, nr = v[6], v[7], v[8], v[9]
  local str = {}
  local at = 1
  for s = 1, 1 + nr do
    str[s] = string.sub(strings, at, at + v[9 + s] - 1)
    at = at + v[9 + s]
  end
  local i = 11 + nr
  local state = redis.call('HMGET', key, 'fs', 'lt', 'lct', 'wo', 'ss', 'sl', 'sn')
  local num = function(s) return tonumber(s or '') end
  -- The interval an earlier batch left open ends at this batch's first playback event.
  local extra_hour, extra = nil, 0
  if v[4] >= 0 then
    local wo = num(state[4])
    if wo and v[4] >= wo then
      extra = math.min(v[4] - wo, WATCH_INTERVAL_CAP_MS)
      extra_hour = math.floor(v[4] / 3600000)
    end
    redis.call('HSET', key, 'wo', v[5] >= 0 and fmt(v[5]) or '')
  end
  for _ = 1, nm do
    slot_add(key, 'm', v[i], {v[i + 1], v[i + 2]})
    i = i + 3
  end
  for _ = 1, nh do
    local w = v[i + 3]
    if v[i] == extra_hour then w = w + extra end
    slot_add(key, 'h', v[i], {v[i + 1], v[i + 2], w})
    i = i + 4
  end
  for _ = 1, nd do
    slot_add(key, 'd', v[i], {})
    i = i + 1
  end
  local fs, lt, lct = num(state[1]), num(state[2]), num(state[3])
  if not fs or v[1] < fs then redis.call('HSET', key, 'fs', fmt(v[1])) end
  if not lt or v[2] > lt then redis.call('HSET', key, 'lt', fmt(v[2])) end
  if v[3] >= 0 and (not lct or v[3] >= lct) then redis.call('HSET', key, 'lct', fmt(v[3]), 'lc', str[1]) end
  -- The current session: a run continues it (30-minute gap, same day), starts a new one, or is an older one (left).
  local ss, sl, sn, sd = num(state[5]), num(state[6]), num(state[7]), nil
  for r = 1, nr do
    local rs, re, rn, rd = v[i], v[i + 1], v[i + 2], str[1 + r]
    i = i + 3
    if not ss then
      ss, sl, sn, sd = rs, re, rn, rd
    elseif re < ss then
      if ss - re <= SESSION_GAP_MS and same_day(re, ss) then ss, sn, sd = rs, sn + rn, rd end
    elseif rs > sl then
      if rs - sl <= SESSION_GAP_MS and same_day(rs, sl) then
        sl, sn = re, sn + rn
      else
        ss, sl, sn, sd = rs, re, rn, rd
      end
    else
      if rs < ss then ss, sd = rs, rd end
      if re > sl then sl = re end
      sn = sn + rn
    end
  end
  if nr > 0 then
    redis.call('HSET', key, 'ss', fmt(ss), 'sl', fmt(sl), 'sn', fmt(sn))
    if sd then redis.call('HSET', key, 'sd', sd) end
  end
  redis.call('PEXPIREAT', key, exp)
end

local dups = {'duplicates'}
each_op(function(code, key, exp, a, n)
  if code == 'D' then
    local base = tonumber(ARGV[a])
    local members = split8(ARGV[a + 1])
    local previous = KEYS[tonumber(ARGV[a + 2])]
    local offset = 0
    chunked(members, function(...)
      local r = redis.call('SMISMEMBER', key, ...)
      local q = redis.call('SMISMEMBER', previous, ...)
      for m = 1, #r do
        if r[m] == 1 or q[m] == 1 then dups[#dups + 1] = base + offset + m - 1 end
      end
      offset = offset + #r
    end)
  end
end)
if #dups > 1 then return dups end

local unremembered = 0
each_op(function(code, key, exp, a, n)
  if code == 'D' then
    local members = split8(ARGV[a + 1])
    local room = tonumber(ARGV[a + 3]) - redis.call('SCARD', key)
    if room < #members then
      unremembered = unremembered + #members - math.max(room, 0)
      for j = #members, math.max(room, 0) + 1, -1 do members[j] = nil end
    end
    chunked(members, function(...) redis.call('SADD', key, ...) end)
  elseif code == 'I' then
    for j = a, a + n - 1, 2 do redis.call('HINCRBY', key, ARGV[j], ARGV[j + 1]) end
  elseif code == 'W' then
    chunked_args(a, n, function(...) redis.call('HSET', key, ...) end)
  elseif code == 'P' then
    chunked_args(a, n, function(...) redis.call('PFADD', key, ...) end)
  elseif code == 'Z' then
    for j = a, a + n - 1, 2 do redis.call('ZINCRBY', key, ARGV[j + 1], ARGV[j]) end
  elseif code == 'G' then
    chunked_args(a, n, function(...) redis.call('ZADD', key, 'GT', ...) end)
  elseif code == 'T' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[a])
  elseif code == 'B' then
    local stream = KEYS[tonumber(ARGV[a])]
    for j = a + 1, a + n - 1, 3 do
      if redis.call('SADD', key, ARGV[j]) == 1 then
        redis.call('XADD', stream, 'MAXLEN', '~', BINGE_STREAM_MAXLEN, '*', 'user', ARGV[j], 'day', ARGV[j + 1], 'ts', ARGV[j + 2])
      end
    end
  elseif code == 'U' then
    for j = a, a + n - 1, 3 do user_op(KEYS[tonumber(ARGV[j])], ARGV[j + 1], ARGV[j + 2], exp) end
  end
  if exp > 0 then redis.call('PEXPIREAT', key, exp) end
end)
redis.call('HSET', offsets, partition, ARGV[3])
return {'applied', unremembered}
