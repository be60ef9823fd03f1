-- End a session for good (LOGOUT): its keys go, the player's state stays.
-- ARGV: prefix, sid, epoch, owner
local p, sid = ARGV[1], ARGV[2]
local sk = p .. 'sess:' .. sid
local h = redis.call('HMGET', sk, 'epoch', 'user_id', 'owner')
if h[1] ~= ARGV[3] or h[3] ~= ARGV[4] then return 0 end
redis.call('DEL', sk, sk .. ':resp', sk .. ':tomb')
local ukey = p .. 'user:' .. h[2] .. ':session'
if redis.call('GET', ukey) == sid then redis.call('DEL', ukey) end
return 1
