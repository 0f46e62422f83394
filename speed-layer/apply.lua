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
-- KEYS index, then (user, day, ts)…: SADD to the day's set and XADD when new), U users' feature hashes
-- (per user: KEYS index, the version `v` the consumer read ('' = none), m, then m values: the (field, value)
-- pairs it computed, speed-layer/user-state.ts; written only when every user's `v` is still the one read).
--
-- Returns {'applied', unremembered} | {'skipped', stored} | {'partial', stored} | {'gap', stored} | {'missing'} |
-- {'duplicates', i…} (indexes into the batch's dedupe hashes already seen; nothing written) |
-- {'stale'} (a user's hash moved since the consumer read it; nothing written: read and compute again).
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

local dups = {'duplicates'}
local stale = false
each_op(function(code, key, exp, a, n)
  if code == 'U' then
    local j = a
    while j < a + n do
      if (redis.call('HGET', KEYS[tonumber(ARGV[j])], 'v') or '') ~= ARGV[j + 1] then stale = true end
      j = j + 3 + tonumber(ARGV[j + 2])
    end
  elseif code == 'D' then
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
if stale then return {'stale'} end

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
    local j = a
    while j < a + n do
      local user, m = KEYS[tonumber(ARGV[j])], tonumber(ARGV[j + 2])
      redis.call('HSET', user, unpack(ARGV, j + 3, j + 2 + m))
      redis.call('PEXPIREAT', user, exp)
      j = j + 3 + m
    end
  end
  if exp > 0 then redis.call('PEXPIREAT', key, exp) end
end)
redis.call('HSET', offsets, partition, ARGV[3])
return {'applied', unremembered}
