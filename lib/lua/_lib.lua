-- admit: the prelude of every script (tools/embed-lua.sh prepends it).
--
-- It implements on the Redis server exactly the math of lib/algo.h, so a
-- limiter decides the same whether its state lives in process or here.
--
-- Numbers: Lua numbers in Redis are doubles, exact for integers below 2^53,
-- and the C side refuses quotas whose durations could reach 2^52 ns (about
-- 52 days) or whose window limits exceed 2^32. Absolute times (nanoseconds
-- since the Unix epoch, about 2^61) do not fit, so they are held as pairs
-- {seconds, nanoseconds}. A limiter's hash stores them as nanoseconds
-- after a base second (field 'b', the second of the last write), small
-- enough to pass to and from Redis as plain numbers (no string building:
-- see the fast paths in limit.lua); a pause ('z') is stored as a decimal
-- string of nanoseconds. Products that could pass 2^53 (sliding windows)
-- use exact helpers.
--
-- Time: the server's TIME (microseconds, so server "now" is a multiple of
-- 1000 ns), unless the caller passes a "now" for tests (ARGV[2]).

local E9 = 1000000000

-- Parses a decimal string of nanoseconds (or false/nil/'') into a pair.
local function t_parse(s)
  if s == nil or s == false or s == '' then return nil end
  local l = #s
  if l <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, l - 9)), tonumber(string.sub(s, l - 8))}
end

local function t_str(t)
  if t[1] == 0 then return string.format('%d', t[2]) end
  return string.format('%d%09d', t[1], t[2])
end

local function t_cmp(a, b)
  if a[1] ~= b[1] then
    if a[1] < b[1] then return -1 end
    return 1
  end
  if a[2] ~= b[2] then
    if a[2] < b[2] then return -1 end
    return 1
  end
  return 0
end

-- a - b in nanoseconds, for a >= b and a - b below 2^53.
local function t_diff(a, b)
  return (a[1] - b[1]) * E9 + (a[2] - b[2])
end

-- t + d for 0 <= d < 2^53.
local function t_add(t, d)
  local r = d % E9
  local s = t[1] + (d - r) / E9
  local n = t[2] + r
  if n >= E9 then
    n = n - E9
    s = s + 1
  end
  return {s, n}
end

-- t - d for 0 <= d <= t.
local function t_sub(t, d)
  local r = d % E9
  local s = t[1] - (d - r) / E9
  local n = t[2] - r
  if n < 0 then
    n = n + E9
    s = s - 1
  end
  return {s, n}
end

-- floor(a * b / m) and a * b mod m, exactly, for 0 <= b < m < 2^52 and
-- 0 <= a < 2^53 (binary long multiplication keeps every value below 2m).
local function muldiv(a, b, m)
  local q, r = 0, 0
  local bq, br = 0, b
  while a > 0 do
    local bit = a % 2
    a = (a - bit) / 2
    if bit == 1 then
      q = q + bq
      r = r + br
      if r >= m then
        r = r - m
        q = q + 1
      end
    end
    bq = bq + bq
    br = br + br
    if br >= m then
      br = br - m
      bq = bq + 1
    end
  end
  return q, r
end

-- The offset of t within its window of length p (t mod p), exactly.
local function t_mod(t, p)
  if E9 % p == 0 then return t[2] % p end
  if p % E9 == 0 then return (t[1] % (p / E9)) * E9 + t[2] end
  local _, r = muldiv(t[1] % p, E9 % p, p)
  return (r + t[2] % p) % p
end

-- ceil(a * p / c) for 0 <= a <= c < 2^53, 0 < c, p < 2^52.
local function ceil_muldiv(a, p, c)
  local pq = math.floor(p / c)
  local pr = p - pq * c
  local q, r = muldiv(a, pr, c)
  q = q + a * pq
  if r > 0 then q = q + 1 end
  return q
end

local function max(a, b)
  if a > b then return a end
  return b
end

-- Reads the quota from ARGV starting at index i: algo, nrates, then per
-- rate: limit, period, interval, tolerance. Returns the quota and the index
-- after it.
local function read_quota(i)
  local q = {algo = tonumber(ARGV[i]), n = tonumber(ARGV[i + 1])}
  i = i + 2
  for k = 1, q.n do
    q[k] = {
      limit = tonumber(ARGV[i]),
      period = tonumber(ARGV[i + 1]),
      interval = tonumber(ARGV[i + 2]),
      tol = tonumber(ARGV[i + 3])
    }
    i = i + 4
  end
  return q, i
end

-- Set when a test injects the time: expiries then stay long in real time,
-- so that state never lapses between two simulated instants.
local injected = false

-- The server's time, or the test's injected one.
local function read_now(arg)
  if arg ~= nil and arg ~= '' then
    injected = true
    return t_parse(arg)
  end
  local t = redis.call('TIME')
  return {tonumber(t[1]), tonumber(t[2]) * 1000}
end

-- The time 'b' seconds plus off nanoseconds (off may be negative; both
-- may be strings), as a pair; nil if either is missing.
local function t_rel(b, off)
  if not b or not off then return nil end
  off = tonumber(off)
  local r = off % E9
  return {tonumber(b) + (off - r) / E9, r}
end

-- Nanoseconds from second b to pair t, for storing: exact below 2^53; a
-- time more than 2^52 ns in the past counts as that far back.
local function t_off(t, b)
  local off = (t[1] - b) * E9 + t[2]
  if off < -4503599627370496 then off = -4503599627370496 end
  return off
end

-- Loads the state of every rate of quota q from hash key k.
local function load_state(k, q)
  local fields = {'b'}
  for i = 1, q.n do
    if q.algo == 0 then
      fields[#fields + 1] = 't' .. i
    else
      fields[#fields + 1] = 'w' .. i
      fields[#fields + 1] = 'c' .. i
      fields[#fields + 1] = 'p' .. i
    end
  end
  fields[#fields + 1] = 'z'
  local v = redis.call('HMGET', k, unpack(fields))
  local st = {pause = t_parse(v[#v])}
  for i = 1, q.n do
    if q.algo == 0 then
      st[i] = {tat = t_rel(v[1], v[i + 1])}
    else
      local j = 1 + (i - 1) * 3
      st[i] = {win = t_rel(v[1], v[j + 1]), c = tonumber(v[j + 2]) or 0,
               p = tonumber(v[j + 3]) or 0}
    end
  end
  return st
end

-- The state of rate r (window algorithms) seen at now, as algo.c sees it:
-- the window (now's, or the cell's own when the cell is ahead, which a
-- server clock stepping back can cause), the offset e in it, the time
-- `left` until it ends, the lag (how far the window starts after now), and
-- the counts of the current and previous windows.
local function window_view(r, s, now)
  local e = t_mod(now, r.period)
  local start = t_sub(now, e)
  local lag = 0
  local cur, prev = 0, 0
  if s.win ~= nil then
    local c = t_cmp(s.win, start)
    if c > 0 then
      -- The cell is ahead: decide at its window's start.
      start = s.win
      lag = t_diff(s.win, now)
      e = 0
      cur = s.c
      prev = s.p
    elseif c == 0 then
      cur = s.c
      prev = s.p
    elseif t_cmp(t_add(s.win, r.period), start) == 0 then
      prev = s.c
    end
  end
  return {e = e, start = start, left = r.period - e + lag, lag = lag,
          cur = cur, prev = prev}
end

-- Until a window cell is as fresh as a new one (algo.c's reset_after).
local function window_reset(algo, r, v, cur)
  if cur > 0 then
    if algo == 1 then return v.left end
    return v.left + r.period
  end
  if algo == 2 and v.prev > 0 then return v.left end
  return 0
end

-- Evaluates one rate for cost units. Returns a table:
--   ok, rem (remaining if applied / if not), retry, reset_new, reset_cur,
--   and the new state `ns` (applied only if every rate allows).
local function eval_rate(algo, r, s, now, cost)
  if algo == 0 then
    -- GCRA: base = max(TAT, now); new_tat = base + cost * T.
    local d = 0
    if s.tat ~= nil and t_cmp(s.tat, now) > 0 then d = t_diff(s.tat, now) end
    local nd = d + cost * r.interval
    if nd <= r.tol then
      return {ok = true, rem = math.floor((r.tol - nd) / r.interval),
              retry = 0, reset_new = nd, reset_cur = d,
              ns = {tat = t_add(now, nd)}}
    end
    local rem = 0
    if r.tol > d then rem = math.floor((r.tol - d) / r.interval) end
    return {ok = false, rem = rem, retry = nd - r.tol, reset_new = d,
            reset_cur = d}
  end
  local v = window_view(r, s, now)
  local cur, prev = v.cur, v.prev
  local reset_cur = window_reset(algo, r, v, cur)
  if algo == 1 then
    -- Fixed window (prev is ignored).
    if cur + cost <= r.limit then
      local used = cur + cost
      return {ok = true, rem = r.limit - used, retry = 0,
              reset_new = window_reset(algo, r, v, used),
              reset_cur = reset_cur, ns = {win = v.start, c = used, p = 0}}
    end
    return {ok = false, rem = max(0, r.limit - cur), retry = v.left,
            reset_new = reset_cur, reset_cur = reset_cur}
  end
  -- Sliding-window counter: the previous window weighs (P - e) / P. Its
  -- weighted count, rounded up, is w = prev - floor(prev * e / P); a cost
  -- fits iff cur + cost + w <= C (the exact form of the 128-bit test
  -- (cur + cost) * P + prev * (P - e) <= C * P), and remaining is
  -- C - cur - w (floor((C*P - cur*P - prev*(P - e)) / P)).
  local e = v.e
  local w = prev
  if prev > 0 and e > 0 then w = prev - (muldiv(prev, e, r.period)) end
  if cur + cost + w <= r.limit then
    local used = cur + cost
    return {ok = true, rem = r.limit - used - w, retry = 0,
            reset_new = window_reset(algo, r, v, used),
            reset_cur = reset_cur, ns = {win = v.start, c = used, p = prev}}
  end
  local rem = 0
  if r.limit > cur + w then rem = r.limit - cur - w end
  local retry
  if cur + cost <= r.limit then
    -- Later in this window, once prev weighs little enough:
    -- prev * (P - e') <= k * P with k = C - cur - cost < prev.
    local k = r.limit - cur - cost
    retry = ceil_muldiv(prev - k, r.period, prev) - e + v.lag
  else
    -- In the next window, where prev' = cur and cur' = 0.
    local k = r.limit - cost
    retry = v.left + ceil_muldiv(cur - k, r.period, cur)
  end
  return {ok = false, rem = rem, retry = retry, reset_new = reset_cur,
          reset_cur = reset_cur}
end

-- Decides cost units for quota q over state st at now. Returns the
-- decision {allowed, limiting (1-based), limit, remaining, retry, reset}
-- and the per-rate results.
local function decide(q, st, now, cost)
  local res = {}
  local all = true
  for i = 1, q.n do
    res[i] = eval_rate(q.algo, q[i], st[i], now, cost)
    if not res[i].ok then all = false end
  end
  local best = 1
  local reset = 0
  for i = 1, q.n do
    local x = res[i]
    if all then
      if x.rem < res[best].rem then best = i end
      reset = max(reset, x.reset_new)
    else
      if (not x.ok) and (res[best].ok or x.retry > res[best].retry) then
        best = i
      end
      reset = max(reset, x.reset_cur)
    end
  end
  local d = {allowed = all, limiting = best, limit = q[best].limit,
             remaining = res[best].rem, retry = 0, reset = reset}
  if not all then d.retry = res[best].retry end
  -- A pause (a vendor's Retry-After, see limit.lua) denies everything
  -- until it ends.
  if st.pause ~= nil and t_cmp(st.pause, now) > 0 then
    local left = t_diff(st.pause, now)
    d.allowed = false
    d.remaining = 0
    d.retry = max(d.retry, left)
    d.reset = max(d.reset, left)
  end
  return d, res
end

-- Writes the state of quota q (st holds the new per-rate states) to hash
-- k with an expiry covering the longest-lived part; deletes it when every
-- part is as fresh as a new one (for a clock that moves forward, nothing
-- then depends on it). With an injected time the state is always kept, so
-- that simulated clocks stepping back see what lib/algo.c sees.
local function store_state(k, q, st, now)
  local ttl = 0
  -- Times are written after the base second now[1].
  local args = {'b', now[1]}
  for i = 1, q.n do
    local s = st[i]
    if q.algo == 0 then
      if s.tat ~= nil then
        args[#args + 1] = 't' .. i
        args[#args + 1] = t_off(s.tat, now[1])
        if t_cmp(s.tat, now) > 0 then ttl = max(ttl, t_diff(s.tat, now)) end
      end
    elseif s.win ~= nil then
      args[#args + 1] = 'w' .. i
      args[#args + 1] = t_off(s.win, now[1])
      args[#args + 1] = 'c' .. i
      args[#args + 1] = s.c
      args[#args + 1] = 'p' .. i
      args[#args + 1] = s.p
      local v = window_view(q[i], s, now)
      ttl = max(ttl, window_reset(q.algo, q[i], v, v.cur))
    end
  end
  if st.pause ~= nil then
    args[#args + 1] = 'z'
    args[#args + 1] = t_str(st.pause)
    if t_cmp(st.pause, now) > 0 then ttl = max(ttl, t_diff(st.pause, now)) end
  end
  if #args == 2 or (ttl == 0 and not injected) then
    redis.call('DEL', k)
    return
  end
  if not injected then
    -- The hash records its expiry (absolute server ms, rounded up so the
    -- state never vanishes too early) in field 'e', which the fast paths
    -- in limit.lua trust: every write of its expiry writes 'e' too.
    local e = now[1] * 1000 + math.ceil((now[2] + ttl) / 1000000)
    args[#args + 1] = 'e'
    args[#args + 1] = e
    redis.call('HSET', k, unpack(args))
    redis.call('PEXPIREAT', k, e)
    return
  end
  args[#args + 1] = 'e'
  args[#args + 1] = 0
  redis.call('HSET', k, unpack(args))
  -- Milliseconds, rounded up so the state never vanishes too early.
  local ms = math.floor((ttl + 999999) / 1000000)
  if injected and ms < 600000 then ms = 600000 end
  redis.call('PEXPIRE', k, ms)
end

-- The decision as a reply: allowed, limiting (0-based), limit, remaining,
-- retry_after_ns, reset_after_ns, server now (seconds, then nanoseconds:
-- two integers, which cost less than one formatted string).
local function reply(d, now)
  local a = 0
  if d.allowed then a = 1 end
  return {a, d.limiting - 1, d.limit, d.remaining, d.retry, d.reset,
          now[1], now[2]}
end
