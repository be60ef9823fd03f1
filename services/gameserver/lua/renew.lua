-- Renew the lease of attached sessions this process still owns.
-- KEYS: per session, in order: the session, its responses, the user's session id.
-- ARGV: owner, lease_ms, sid_1 .. sid_n.
-- Returns {sid, reason} pairs for sessions no longer ours: 'moved' or 'gone'.
local owner, lease = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV do
  local k = (i - 3) * 3 + 1
  local owned_by = redis.call('HGET', KEYS[k], 'owner')
  if owned_by == owner then
    redis.call('PEXPIRE', KEYS[k], lease)
    redis.call('PEXPIRE', KEYS[k + 1], lease)
    if redis.call('GET', KEYS[k + 2]) == ARGV[i] then
      redis.call('PEXPIRE', KEYS[k + 2], lease)
    end
  else
    lost[#lost + 1] = ARGV[i]
    lost[#lost + 1] = owned_by and 'moved' or 'gone'
  end
end
return lost
