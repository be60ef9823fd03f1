-- Group commit of one event-loop tick's state changes, fenced per session by its epoch.
-- Fencing is by (epoch, owner): the epoch alone could match an unrelated session after
-- Redis lost its data and session ids started again.
-- ARGV: prefix, cache_size, lease_ms, owner, then per session:
--   'sid epoch user_id x y moves last_seq n' (one argument, fields separated by spaces:
--   packing eight arguments per session cost the GameServer more than the rest of a MOVE),
--   then resp_1 .. resp_n
-- Writes player state, the sequence watermark and the cached responses atomically.
-- Returns {sid, reason} pairs for sessions whose changes were NOT written: reason 'moved'
-- (another owner has a newer epoch) or 'gone' (the session no longer exists).
local p, cache, owner = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local fenced = {}
local i = 5
while i <= #ARGV do
  local sid, epoch, uid, x, y, moves, last_seq, n = string.match(ARGV[i],
    '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  n = tonumber(n)
  local sk = p .. 'sess:' .. sid
  local cur = redis.call('HMGET', sk, 'epoch', 'owner', 'last_seq')
  local current = cur[1]
  if current == epoch and cur[2] == owner then
    redis.call('HSET', p .. 'player:' .. uid, 'x', x, 'y', y, 'moves', moves)
    if tonumber(last_seq) > tonumber(cur[3] or '0') then
      redis.call('HSET', sk, 'last_seq', last_seq)
    end
    if n > 0 then
      local rk = sk .. ':resp'
      redis.call('LPUSH', rk, unpack(ARGV, i + 1, i + n))
      redis.call('LTRIM', rk, 0, cache - 1)
      local ttl = redis.call('PTTL', sk)
      if ttl > 0 then redis.call('PEXPIRE', rk, ttl) end
    end
  else
    fenced[#fenced + 1] = sid
    fenced[#fenced + 1] = current and 'moved' or 'gone'
  end
  i = i + 1 + n
end
return fenced
