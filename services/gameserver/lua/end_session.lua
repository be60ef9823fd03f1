-- End a session no process holds (detached, in its reconnect grace): admin kick.
-- ARGV: prefix, sid. Returns 1 if it ended, 0 if it is attached (its owner must end it)
-- or already gone.
local p, sid = ARGV[1], ARGV[2]
local sk = p .. 'sess:' .. sid
local h = redis.call('HMGET', sk, 'attached', 'user_id')
if not h[2] or h[1] == '1' then return 0 end
redis.call('DEL', sk, sk .. ':resp', sk .. ':tomb')
local ukey = p .. 'user:' .. h[2] .. ':session'
if redis.call('GET', ukey) == sid then redis.call('DEL', ukey) end
return 1
