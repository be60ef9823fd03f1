-- Take over an existing session for a new socket: RECONNECT (key given) or adoption of a
-- pinned socket after this node restarted (key empty: the socket must be the session's own).
-- The ownership epoch is bumped whenever the owning process changes (fencing token).
-- KEYS: session, its responses, its tombstone, the user's session id, the player
--       (the caller read the session's user_id first, or knew it)
-- ARGV: sid, user_id, key_hash (or ''), new_key_hash (or ''), owner, node_id, gateway,
--       socket, lease_ms, lz4 ('0'/'1', or '' to keep the stored choice)
-- Returns {'ERR', code} or
--   {'OK', user_id, epoch, last_seq, old_gateway, old_socket, old_attached, old_node_id,
--    x, y, moves, lz4, resp1, resp2, ...}
local sid = ARGV[1]
local h = redis.call('HMGET', KEYS[1], 'key_hash', 'owner', 'epoch', 'gateway', 'socket',
  'attached', 'user_id', 'last_seq', 'node_id', 'lz4')
if not h[7] then
  if redis.call('EXISTS', KEYS[3]) == 1 then return {'ERR', 'SESSION_EXPIRED'} end
  return {'ERR', 'INVALID_SESSION'}
end
if h[7] ~= ARGV[2] then return {'ERR', 'INVALID_SESSION'} end
if ARGV[3] == '' then
  if h[5] ~= ARGV[8] or h[6] ~= '1' then return {'ERR', 'INVALID_SESSION'} end
elseif h[1] ~= ARGV[3] then
  return {'ERR', 'INVALID_SESSION'}
end
local epoch = tonumber(h[3])
if h[2] ~= ARGV[5] then epoch = epoch + 1 end
local key_hash = h[1]
if ARGV[4] ~= '' then key_hash = ARGV[4] end
local lz4 = h[10] or '0'
if ARGV[10] ~= '' then lz4 = ARGV[10] end
redis.call('HSET', KEYS[1], 'key_hash', key_hash, 'owner', ARGV[5], 'node_id', ARGV[6],
  'epoch', epoch, 'gateway', ARGV[7], 'socket', ARGV[8], 'attached', 1, 'lz4', lz4)
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
redis.call('SET', KEYS[4], sid, 'PX', ARGV[9])
local st = redis.call('HMGET', KEYS[5], 'x', 'y', 'moves')
local out = {'OK', h[7], epoch, h[8], h[4] or false, h[5] or false, h[6] or false,
  h[9] or false, st[1] or false, st[2] or false, st[3] or false, lz4}
local resp = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #resp do out[#out + 1] = resp[i] end
return out
