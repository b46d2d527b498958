-- Send again the handed-off executions whose message no worker has claimed for a while (the
-- worker that handed them off may have died before sending). Each gets a fresh token and its
-- claim moves to it: only the new message runs, an older copy is dropped as a duplicate.
-- KEYS: 1 entries, 2 handing, 3 handing tokens
-- ARGV: 1 seconds after which a hand-off is stale, 2 claim:<id> prefix, 3 seconds a claim is kept
-- Returns a flat list: id, token, entry, ...
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local again = {}
for count, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]))) do
  local token = t[1] .. t[2] .. '-r' .. count
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('HSET', KEYS[3], id, token)
  redis.call('SET', ARGV[2] .. id, token, 'EX', ARGV[3])
  table.insert(again, id)
  table.insert(again, token)
  table.insert(again, redis.call('HGET', KEYS[1], id))
end
return again
