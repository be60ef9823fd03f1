-- The session's socket is gone: keep it resumable for the grace period, then let it expire.
-- Only the current attachment (same epoch, same socket) may detach, so the teardown of an
-- old socket never touches a session that has since moved to a new one.
-- ARGV: prefix, sid, epoch, socket, last_seq, grace_ms, tomb_ms, owner
local p, sid = ARGV[1], ARGV[2]
local sk = p .. 'sess:' .. sid
local h = redis.call('HMGET', sk, 'epoch', 'socket', 'last_seq', 'user_id', 'owner')
if h[1] ~= ARGV[3] or h[2] ~= ARGV[4] or h[5] ~= ARGV[8] then return 0 end
local last = tonumber(h[3] or '0')
if tonumber(ARGV[5]) > last then last = tonumber(ARGV[5]) end
redis.call('HSET', sk, 'attached', 0, 'socket', '', 'gateway', '', 'last_seq', last)
redis.call('PEXPIRE', sk, ARGV[6])
redis.call('PEXPIRE', sk .. ':resp', ARGV[6])
-- RECONNECT after the grace answers SESSION_EXPIRED (not INVALID_SESSION) for a while.
redis.call('SET', sk .. ':tomb', 1, 'PX', tonumber(ARGV[6]) + tonumber(ARGV[7]))
local ukey = p .. 'user:' .. h[4] .. ':session'
if redis.call('GET', ukey) == sid then redis.call('PEXPIRE', ukey, ARGV[6]) end
return 1
