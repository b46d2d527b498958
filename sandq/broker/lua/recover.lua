-- Send again the handed-off executions whose message no worker has claimed for a while (the
-- worker that handed them off may have died before sending). Each gets a fresh token and its
-- claim moves to it: only the new message runs, an older copy is dropped as a duplicate.
-- Also forgets claims that have expired (at most `most` of them).
-- Uses common.lua: clock, hand_out, forget_expired_claims.
-- Returns a flat list: id, token, entry, id, token, entry, ...
local record = {entries = KEYS[1], handing = KEYS[2], handing_tokens = KEYS[3], claims = KEYS[4],
                claim_expiry = KEYS[5]}
local stale_seconds = tonumber(ARGV[1])  -- a hand-off unclaimed this long is sent again
local claim_seconds = tonumber(ARGV[2])
local most = tonumber(ARGV[3])

local now, stamp = clock()
local again = {}
for count, id in ipairs(redis.call('ZRANGEBYSCORE', record.handing, '-inf', now - stale_seconds)) do
  hand_out(again, record, id, stamp .. '-r' .. count, now, claim_seconds)
end
forget_expired_claims(record.claims, record.claim_expiry, now, most)
return again
