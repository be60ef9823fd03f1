-- End a session for good (LOGOUT): its keys go, the player's state stays.
-- KEYS: session, its responses, its tombstone, the user's session id
-- ARGV: sid, epoch, owner
local sid = ARGV[1]
local h = redis.call('HMGET', KEYS[1], 'epoch', 'owner')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if redis.call('GET', KEYS[4]) == sid then redis.call('DEL', KEYS[4]) end
return 1
