-- admit: a global semaphore whose permits are leases in the sorted set
-- KEYS[1] (member: lease id, score: expiry in server microseconds), so a
-- crashed holder's permit comes back by itself when its lease expires.
-- With KEYS[2], a rate limit (a limiter hash, see limit.lua) is checked in
-- the same step: both admit, or neither changes.
--
-- ARGV: op, now ('' = server TIME), lease id, capacity, lease ns, then
-- with KEYS[2] the quota (see read_quota) and the cost. Ops:
--   acquire  reply: decision (see reply(), eight elements), lease expiry
--            (ns string), held permits after the call. When the capacity decided, limiting
--            is the number of rates (one past the last rate).
--   release  reply: 1 if the lease was held, else 0
--   renew    reply: {1, new expiry} if still held, else {0, ''}
--   count    reply: permits held now

local key = KEYS[1]
local op = ARGV[1]
local now = read_now(ARGV[2])
local id = ARGV[3]
local cap = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])

-- Server time in microseconds (below 2^53 for thousands of years).
local now_us = now[1] * 1000000 + math.floor(now[2] / 1000)
local lease_us = math.floor((lease + 999) / 1000)
local exp_us = now_us + lease_us

local function us_str(us)
  local s = math.floor(us / 1000000)
  return t_str({s, (us - s * 1000000) * 1000})
end

local function keep_alive()
  local want = math.floor((lease + 999999) / 1000000)
  if redis.call('PTTL', key) < want then redis.call('PEXPIRE', key, want) end
end

if op == 'release' then
  return redis.call('ZREM', key, id)
end

redis.call('ZREMRANGEBYSCORE', key, '-inf', now_us)

if op == 'count' then
  return redis.call('ZCARD', key)
end

if op == 'renew' then
  if redis.call('ZSCORE', key, id) then
    redis.call('ZADD', key, 'XX', exp_us, id)
    keep_alive()
    return {1, us_str(exp_us)}
  end
  return {0, ''}
end

if op ~= 'acquire' then
  return redis.error_reply('ERR admit: unknown op')
end

local held = redis.call('ZCARD', key)
local full = held >= cap
local d, res, q, st
if #KEYS >= 2 then
  local i
  q, i = read_quota(6)
  st = load_state(KEYS[2], q)
  d, res = decide(q, st, now, tonumber(ARGV[i]))
end

-- The capacity's own view: free permits, and when the oldest lease ends.
local wait = 0
if full then
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then wait = max(0, (tonumber(first[2]) - now_us) * 1000) end
end

if not full and (d == nil or d.allowed) then
  redis.call('ZADD', key, exp_us, id)
  keep_alive()
  held = held + 1
  if d ~= nil then
    for k = 1, q.n do st[k] = res[k].ns end
    store_state(KEYS[2], q, st, now)
  end
  local out
  if d ~= nil then
    out = reply(d, now)
  else
    out = {1, 0, cap, cap - held, 0, 0, now[1], now[2]}
  end
  out[9] = us_str(exp_us)
  out[10] = held
  return out
end

local out
if full and (d == nil or d.allowed or wait >= d.retry) then
  local nr = 0
  if q ~= nil then nr = q.n end
  out = {0, nr, cap, 0, wait, 0, now[1], now[2]}
  if d ~= nil then out[6] = d.reset end
else
  out = reply(d, now)
end
out[9] = ''
out[10] = held
return out
