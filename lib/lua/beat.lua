-- admit: instance heartbeats, so a local fallback knows its share of a
-- global rate. KEYS[1] is a sorted set (member: instance id, score: expiry
-- in server milliseconds); it expires as a whole when nobody beats.
--
-- ARGV: op ('beat' or 'leave'), now ('' = server TIME), instance id, ttl
-- in ns. Replies with the number of live instances (this one included
-- after a beat).

local key = KEYS[1]
local now = read_now(ARGV[2])
local id = ARGV[3]
local ttl_ms = math.floor((tonumber(ARGV[4]) + 999999) / 1000000)
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000000)

if ARGV[1] == 'leave' then
  redis.call('ZREM', key, id)
  return redis.call('ZCARD', key)
end

redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
redis.call('ZADD', key, now_ms + ttl_ms, id)
if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
return redis.call('ZCARD', key)
