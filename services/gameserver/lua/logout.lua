-- End a session for good (LOGOUT): its keys go, the player's state stays.
-- ARGV: prefix, sid, epoch
local p, sid = ARGV[1], ARGV[2]
local sk = p .. 'sess:' .. sid
local h = redis.call('HMGET', sk, 'epoch', 'user_id')
if h[1] ~= ARGV[3] then return 0 end
redis.call('DEL', sk, sk .. ':resp', sk .. ':tomb')
local ukey = p .. 'user:' .. h[2] .. ':session'
if redis.call('GET', ukey) == sid then redis.call('DEL', ukey) end
return 1
