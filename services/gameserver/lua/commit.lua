-- Group commit of one event-loop tick's state changes, fenced per session by its epoch.
-- Fencing is by (epoch, owner): the epoch alone could match an unrelated session after
-- Redis lost its data and session ids were drawn again.
-- KEYS: per session, in order: the session, its responses, the player.
-- ARGV: cache_size, owner, then per session:
--   'sid epoch x y moves last_seq n' (one argument, fields separated by spaces: packing
--   seven arguments per session cost the GameServer more than the rest of a MOVE),
--   then resp_1 .. resp_n
-- Writes player state, the sequence watermark and the cached responses atomically.
-- Returns {sid, reason} pairs for sessions whose changes were NOT written: reason 'moved'
-- (another owner has a newer epoch) or 'gone' (the session no longer exists).
local cache, owner = tonumber(ARGV[1]), ARGV[2]
local fenced = {}
local i, k = 3, 1
while i <= #ARGV do
  local sid, epoch, x, y, moves, last_seq, n = string.match(ARGV[i],
    '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  n = tonumber(n)
  local cur = redis.call('HMGET', KEYS[k], 'epoch', 'owner', 'last_seq')
  local current = cur[1]
  if current == epoch and cur[2] == owner then
    redis.call('HSET', KEYS[k + 2], 'x', x, 'y', y, 'moves', moves)
    if tonumber(last_seq) > tonumber(cur[3] or '0') then
      redis.call('HSET', KEYS[k], 'last_seq', last_seq)
    end
    if n > 0 then
      redis.call('LPUSH', KEYS[k + 1], unpack(ARGV, i + 1, i + n))
      redis.call('LTRIM', KEYS[k + 1], 0, cache - 1)
      local ttl = redis.call('PTTL', KEYS[k])
      if ttl > 0 then redis.call('PEXPIRE', KEYS[k + 1], ttl) end
    end
  else
    fenced[#fenced + 1] = sid
    fenced[#fenced + 1] = current and 'moved' or 'gone'
  end
  i = i + 1 + n
  k = k + 3
end
return fenced
