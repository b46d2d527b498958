-- Take a cancelled execution out of its tenant's line, without a slot, to be sent at once (the
-- worker that receives it ends it as cancelled). Atomic: of all the workers that hear of the
-- cancellation, one takes it.
-- KEYS: 1 parked, 2 entries, 3 handing, 4 handing tokens, 5 parked tenants
-- ARGV: 1 id, 2 parked:<tenant>:<lane> prefix, 3 claim:<id> prefix, 4 seconds a claim is kept
-- Returns id, token, entry; or an empty list if the execution was not parked.
local id = ARGV[1]
if redis.call('SREM', KEYS[1], id) == 0 then
  return {}
end
local entry = redis.call('HGET', KEYS[2], id)
local tenant = cjson.decode(entry).tenant
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local token = t[1] .. t[2] .. '-c'
redis.call('LREM', ARGV[2] .. tenant .. ':0', 0, id)
redis.call('LREM', ARGV[2] .. tenant .. ':1', 0, id)
if redis.call('LLEN', ARGV[2] .. tenant .. ':0') + redis.call('LLEN', ARGV[2] .. tenant .. ':1') == 0 then
  redis.call('ZREM', KEYS[5], tenant)
end
redis.call('ZADD', KEYS[3], now, id)
redis.call('HSET', KEYS[4], id, token)
redis.call('SET', ARGV[3] .. id, token, 'EX', ARGV[4])
return {id, token, entry}
