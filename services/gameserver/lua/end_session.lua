-- End a session no process holds (detached, in its reconnect grace): admin kick.
-- KEYS: session, its responses, its tombstone, the user's session id
-- ARGV: sid. Returns 1 if it ended, 0 if it is attached (its owner must end it) or already
-- gone.
local sid = ARGV[1]
local h = redis.call('HMGET', KEYS[1], 'attached', 'user_id')
if not h[2] or h[1] == '1' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if redis.call('GET', KEYS[4]) == sid then redis.call('DEL', KEYS[4]) end
return 1
