-- Extend the lease of an execution that still holds its slot.
-- KEYS: 1 inflight, 2 inflight:<tenant>; ARGV: 1 id, 2 lease seconds
-- Returns 1 if the slot was still held, 0 if its lease had already expired.
local t = redis.call('TIME')
local expires = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('ZADD', KEYS[2], expires, ARGV[1])
return 1
