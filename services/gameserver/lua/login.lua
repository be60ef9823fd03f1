-- Atomic login: replace the user's previous session (if any) with a new one.
-- KEYS: the user's session id, the player, the new session, its responses, its tombstone,
--       and, when ARGV[2] names the user's current session, that session's three keys.
-- ARGV: new_sid, current_sid ('' if none is known), user_id, key_hash, owner, node_id,
--       gateway, socket, login_seq, lease_ms, now_ms, tomb_ms, lz4 ('1' when the client
--       accepts LZ4), defer ('1': if another node owns the user's session, change nothing
--       and say so)
-- Returns: {sid, old_sid, old_node_id, old_gateway, old_socket, old_attached, x, y, moves}
--   or, changing nothing: {'CURRENT', sid} (the user's current session is not ARGV[2]: call
--   again with its keys declared), {'TAKEN'} (the new id is in use: draw another), or,
--   deferring, {'ELSEWHERE', old_sid, old_node_id, old_attached}
local old = redis.call('GET', KEYS[1])
if (old or '') ~= ARGV[2] then return {'CURRENT', old or ''} end
if redis.call('EXISTS', KEYS[3], KEYS[5]) > 0 then return {'TAKEN'} end
local old_node, old_gw, old_sock, old_att = false, false, false, false
if old then
  local f = redis.call('HMGET', KEYS[6], 'node_id', 'gateway', 'socket', 'attached')
  old_node, old_gw, old_sock, old_att = f[1] or false, f[2] or false, f[3] or false, f[4] or false
  if ARGV[14] == '1' and old_node and old_node ~= ARGV[6] then
    return {'ELSEWHERE', old, old_node, old_att or '0'}
  end
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8])
end
redis.call('HSET', KEYS[3], 'user_id', ARGV[3], 'key_hash', ARGV[4], 'owner', ARGV[5],
  'node_id', ARGV[6], 'epoch', 1, 'gateway', ARGV[7], 'socket', ARGV[8],
  'last_seq', ARGV[9], 'attached', 1, 'created_ms', ARGV[11], 'lz4', ARGV[13])
redis.call('PEXPIRE', KEYS[3], ARGV[10])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[10])
redis.call('SET', KEYS[5], 1, 'PX', ARGV[12])
local st = redis.call('HMGET', KEYS[2], 'x', 'y', 'moves')
return {ARGV[1], old or false, old_node, old_gw, old_sock, old_att,
  st[1] or false, st[2] or false, st[3] or false}
