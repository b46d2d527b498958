-- Take a cancelled execution out of its tenant's line, without a slot, to be sent at once (the
-- worker that receives it ends it as cancelled). Atomic: of all the workers that hear of the
-- cancellation, one takes it. The caller passes the lines of the tenant it read from the
-- execution's entry; if the entry names another tenant (or none), nothing happens.
-- Uses common.lua: clock, hand_out.
-- Returns id, token, entry; or an empty list if the execution was not parked.
local parked = KEYS[1]
local parked_tenants = KEYS[2]
local interactive_line = KEYS[3]        -- parked:<tenant>:0
local batch_line = KEYS[4]              -- parked:<tenant>:1
local record = {entries = KEYS[5], handing = KEYS[6], handing_tokens = KEYS[7], claims = KEYS[8],
                claim_expiry = KEYS[9]}
local id = ARGV[1]
local tenant = ARGV[2]
local claim_seconds = tonumber(ARGV[3])

local entry = redis.call('HGET', record.entries, id)
if not entry or cjson.decode(entry).tenant ~= tenant or redis.call('SREM', parked, id) == 0 then
  return {}
end
local now, stamp = clock()
redis.call('LREM', interactive_line, 0, id)
redis.call('LREM', batch_line, 0, id)
if redis.call('LLEN', interactive_line) + redis.call('LLEN', batch_line) == 0 then
  redis.call('ZREM', parked_tenants, tenant)
end
local taken = {}
hand_out(taken, record, id, stamp .. '-c', now, claim_seconds)
return taken
