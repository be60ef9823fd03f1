-- Renew the lease of attached sessions this process still owns.
-- ARGV: prefix, owner, lease_ms, sid_1 .. sid_n. Returns the sids no longer owned.
local p, owner, lease = ARGV[1], ARGV[2], ARGV[3]
local lost = {}
for i = 4, #ARGV do
  local sk = p .. 'sess:' .. ARGV[i]
  local h = redis.call('HMGET', sk, 'owner', 'user_id')
  if h[1] == owner then
    redis.call('PEXPIRE', sk, lease)
    redis.call('PEXPIRE', sk .. ':resp', lease)
    redis.call('PEXPIRE', p .. 'user:' .. h[2] .. ':session', lease)
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
