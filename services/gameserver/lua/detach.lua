-- The session's socket is gone: keep it resumable for the grace period, then let it expire.
-- Only the current attachment (same epoch, same socket) may detach, so the teardown of an
-- old socket never touches a session that has since moved to a new one.
-- KEYS: session, its responses, its tombstone, the user's session id
-- ARGV: sid, epoch, socket, last_seq, grace_ms, tomb_ms, owner
local sid = ARGV[1]
local h = redis.call('HMGET', KEYS[1], 'epoch', 'socket', 'last_seq', 'owner')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] or h[4] ~= ARGV[7] then return 0 end
local last = tonumber(h[3] or '0')
if tonumber(ARGV[4]) > last then last = tonumber(ARGV[4]) end
redis.call('HSET', KEYS[1], 'attached', 0, 'socket', '', 'gateway', '', 'last_seq', last)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
-- RECONNECT after the grace answers SESSION_EXPIRED (not INVALID_SESSION) for a while.
redis.call('SET', KEYS[3], 1, 'PX', tonumber(ARGV[5]) + tonumber(ARGV[6]))
if redis.call('GET', KEYS[4]) == sid then redis.call('PEXPIRE', KEYS[4], ARGV[5]) end
return 1
