-- Claim or refresh this node's registry entry; refuses when another live process holds it.
-- KEYS: node key, node set. ARGV: node_id, instance, ttl_ms, then field/value pairs.
local cur = redis.call('HGET', KEYS[1], 'instance')
if cur and cur ~= ARGV[2] then return cur end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'instance', ARGV[2], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return false
