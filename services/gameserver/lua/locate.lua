-- Where does a user's (or a session's) session live right now?
-- ARGV: prefix, user_id ('' to look up by session), session_id ('' to look up by user)
-- Returns {session_id, owner node_id, attached} or false.
local p = ARGV[1]
local sid = ARGV[3]
if ARGV[2] ~= '' then
  sid = redis.call('GET', p .. 'user:' .. ARGV[2] .. ':session')
  if not sid then return false end
end
local h = redis.call('HMGET', p .. 'sess:' .. sid, 'node_id', 'attached')
if not h[1] then return false end
return {sid, h[1], h[2] or '0'}
