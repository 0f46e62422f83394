-- Read-only check before the fold (RedisApplier.seenBefore): KEYS are (epoch set, previous epoch's set)
-- pairs, ARGV[i] the packed 8-byte hashes checked against the i-th pair. Returns the 0-based indexes
-- (over all ARGV, in order) of the hashes either set holds.
local found = {}
local base = 0
for i = 1, #ARGV do
  local packed = ARGV[i]
  local members = {}
  for j = 1, #packed, 8 do members[#members + 1] = string.sub(packed, j, j + 7) end
  for c = 1, #members, 1000 do
    local last = math.min(c + 999, #members)
    local r = redis.call('SMISMEMBER', KEYS[2 * i - 1], unpack(members, c, last))
    local q = redis.call('SMISMEMBER', KEYS[2 * i], unpack(members, c, last))
    for m = 1, #r do
      if r[m] == 1 or q[m] == 1 then found[#found + 1] = base + c + m - 2 end
    end
  end
  base = base + #members
end
return found
