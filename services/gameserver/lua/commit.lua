-- Group commit of one event-loop tick's state changes, fenced per session by its epoch.
-- Fencing is by (epoch, owner): the epoch alone could match an unrelated session after
-- Redis lost its data and session ids started again.
-- ARGV: prefix, cache_size, lease_ms, owner, then per session:
--   sid, epoch, user_id, x, y, moves, last_seq, n, resp_1 .. resp_n
-- Writes player state, the sequence watermark and the cached responses atomically.
-- Returns {sid, reason} pairs for sessions whose changes were NOT written: reason 'moved'
-- (another owner has a newer epoch) or 'gone' (the session no longer exists).
local p, cache, owner = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local fenced = {}
local i = 5
while i <= #ARGV do
  local sid, epoch, uid = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local n = tonumber(ARGV[i + 7])
  local sk = p .. 'sess:' .. sid
  local cur = redis.call('HMGET', sk, 'epoch', 'owner')
  local current = cur[1]
  if current == epoch and cur[2] == owner then
    redis.call('HSET', p .. 'player:' .. uid, 'x', ARGV[i + 3], 'y', ARGV[i + 4],
      'moves', ARGV[i + 5])
    local old = tonumber(redis.call('HGET', sk, 'last_seq') or '0')
    if tonumber(ARGV[i + 6]) > old then redis.call('HSET', sk, 'last_seq', ARGV[i + 6]) end
    if n > 0 then
      local rk = sk .. ':resp'
      for j = 1, n do redis.call('LPUSH', rk, ARGV[i + 7 + j]) end
      redis.call('LTRIM', rk, 0, cache - 1)
      local ttl = redis.call('PTTL', sk)
      if ttl > 0 then redis.call('PEXPIRE', rk, ttl) end
    end
  else
    fenced[#fenced + 1] = sid
    fenced[#fenced + 1] = current and 'moved' or 'gone'
  end
  i = i + 8 + n
end
return fenced
