-- Extend the lease of an execution that still holds its slot.
-- Uses common.lua: clock.
-- Returns 1 if the slot was still held, 0 if its lease had run out and the slot was taken back
-- (a lease past its expiry that no script has collected yet still holds its slot).
local in_flight = KEYS[1]
local tenant_in_flight = KEYS[2]        -- inflight:<tenant>
local id = ARGV[1]
local lease_seconds = tonumber(ARGV[2])

local expires = clock() + lease_seconds
if not redis.call('ZSCORE', in_flight, id) then
  return 0
end
redis.call('ZADD', in_flight, expires, id)
redis.call('ZADD', tenant_in_flight, expires, id)
return 1
