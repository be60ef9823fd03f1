-- Atomic login: replace the user's previous session (if any) with a new one.
-- ARGV: prefix, user_id, key_hash, owner, node_id, gateway, socket, login_seq,
--       lease_ms, now_ms, tomb_ms, lz4 ('1' when the client accepts LZ4),
--       defer ('1': if another node owns the user's session, change nothing and say so)
-- Returns: {sid, old_sid, old_node_id, old_gateway, old_socket, old_attached, x, y, moves}
--       or, deferring, {'ELSEWHERE', old_sid, old_node_id, old_attached}
local p, uid = ARGV[1], ARGV[2]
local ukey = p .. 'user:' .. uid .. ':session'
local old = redis.call('GET', ukey)
local old_node, old_gw, old_sock, old_att = false, false, false, false
if old then
  local ok = p .. 'sess:' .. old
  local f = redis.call('HMGET', ok, 'node_id', 'gateway', 'socket', 'attached')
  old_node, old_gw, old_sock, old_att = f[1] or false, f[2] or false, f[3] or false, f[4] or false
  if ARGV[13] == '1' and old_node and old_node ~= ARGV[5] then
    return {'ELSEWHERE', old, old_node, old_att or '0'}
  end
  redis.call('DEL', ok, ok .. ':resp', ok .. ':tomb')
end
local sid = redis.call('INCR', p .. 'seq:session')
local sk = p .. 'sess:' .. sid
redis.call('HSET', sk, 'user_id', uid, 'key_hash', ARGV[3], 'owner', ARGV[4],
  'node_id', ARGV[5], 'epoch', 1, 'gateway', ARGV[6], 'socket', ARGV[7],
  'last_seq', ARGV[8], 'attached', 1, 'created_ms', ARGV[10], 'lz4', ARGV[12])
redis.call('PEXPIRE', sk, ARGV[9])
redis.call('SET', ukey, sid, 'PX', ARGV[9])
redis.call('SET', sk .. ':tomb', 1, 'PX', ARGV[11])
local st = redis.call('HMGET', p .. 'player:' .. uid, 'x', 'y', 'moves')
return {sid, old or false, old_node, old_gw, old_sock, old_att,
  st[1] or false, st[2] or false, st[3] or false}
