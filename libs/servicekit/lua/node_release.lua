-- Remove this node's registry entry if it is still ours (graceful shutdown).
-- KEYS: node key, node set. ARGV: node_id, instance
if redis.call('HGET', KEYS[1], 'instance') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
