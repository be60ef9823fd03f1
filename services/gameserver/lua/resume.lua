-- Take over an existing session for a new socket: RECONNECT (key given) or adoption of a
-- pinned socket after this node restarted (key empty: the socket must be the session's own).
-- The ownership epoch is bumped whenever the owning process changes (fencing token).
-- ARGV: prefix, sid, key_hash (or ''), new_key_hash (or ''), owner, node_id, gateway,
--       socket, lease_ms, lz4 ('0'/'1', or '' to keep the stored choice)
-- Returns {'ERR', code} or
--   {'OK', user_id, epoch, last_seq, old_gateway, old_socket, old_attached, old_node_id,
--    x, y, moves, lz4, resp1, resp2, ...}
local p, sid = ARGV[1], ARGV[2]
local sk = p .. 'sess:' .. sid
if redis.call('EXISTS', sk) == 0 then
  if redis.call('EXISTS', sk .. ':tomb') == 1 then return {'ERR', 'SESSION_EXPIRED'} end
  return {'ERR', 'INVALID_SESSION'}
end
local h = redis.call('HMGET', sk, 'key_hash', 'owner', 'epoch', 'gateway', 'socket',
  'attached', 'user_id', 'last_seq', 'node_id', 'lz4')
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
redis.call('HSET', sk, 'key_hash', key_hash, 'owner', ARGV[5], 'node_id', ARGV[6],
  'epoch', epoch, 'gateway', ARGV[7], 'socket', ARGV[8], 'attached', 1, 'lz4', lz4)
redis.call('PEXPIRE', sk, ARGV[9])
redis.call('PEXPIRE', sk .. ':resp', ARGV[9])
local uid = h[7]
redis.call('SET', p .. 'user:' .. uid .. ':session', sid, 'PX', ARGV[9])
local st = redis.call('HMGET', p .. 'player:' .. uid, 'x', 'y', 'moves')
local out = {'OK', uid, epoch, h[8], h[4] or false, h[5] or false, h[6] or false,
  h[9] or false, st[1] or false, st[2] or false, st[3] or false, lz4}
local resp = redis.call('LRANGE', sk .. ':resp', 0, -1)
for i = 1, #resp do out[#out + 1] = resp[i] end
return out
