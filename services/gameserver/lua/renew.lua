-- Renew the lease of attached sessions this process still owns.
-- ARGV: prefix, owner, lease_ms, sid_1 .. sid_n.
-- Returns {sid, reason} pairs for sessions no longer ours: 'moved' or 'gone'.
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
    lost[#lost + 1] = h[1] and 'moved' or 'gone'
  end
end
return lost
