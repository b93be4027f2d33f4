-- admit: one limiter operation on the state hash KEYS[1].
--
-- ARGV: op, now ('' = server TIME), then the quota (see read_quota), then
-- the operation's arguments:
--   try    cost              decide; consume only if allowed
--   peek                     what a zero-cost check sees; writes nothing
--   refund cost taken_at     give back units (windows: only while the
--                            window charged at taken_at is current)
--   settle reserved actual taken_at
--                            replace a reservation's estimate by the real
--                            cost: refund the difference or charge the
--                            excess (even past the limit: it was spent)
--   pause  mode value        deny every check until server time now+value
--                            (mode 'rel') or value (mode 'abs'), in ns;
--                            a pause never shortens an existing one
--   tryn   cost1 .. costN    KEYS[1..N] each tried at one server time, in
--                            order (the connection merges concurrent
--                            tries); fast paths only (see below)
-- Every op replies with a decision (see reply() in _lib.lua); pause adds
-- the pause's end (ns string) as a ninth element; tryn replies with one
-- decision per key.

-- The fast paths: try and peek of a single-rate token bucket, or of a
-- single-rate fixed window whose period divides a second or is a whole
-- number of seconds (1 s, 1 min, 1 h, 100 ms...), the common cases. They
-- come before the prelude (tools/embed-lua.sh inserts it at the marker
-- below), so that a call pays for none of the prelude's closures, tables
-- and string building. They are the general path below specialised by
-- hand (window_view, eval_rate, decide, store_state and reply for one
-- rate): HMGET, TIME, and for an admitted try HSET (and now and then
-- PEXPIREAT, see below). Strings from Redis and ARGV are coerced by
-- arithmetic (exact for integers below 2^53), and numbers go back to
-- Redis as integers. test-redis-algo.c checks both paths against
-- lib/algo.c.
local fast_algo = ARGV[3]
local fast_p = 0
if fast_algo == '1' then
  fast_p = ARGV[6] + 0
  if fast_p % 1000000000 ~= 0 and 1000000000 % fast_p ~= 0 then
    fast_algo = ''
  end
end
if (fast_algo == '0' or fast_algo == '1') and ARGV[4] == '1' and
    (ARGV[1] == 'try' or ARGV[1] == 'peek' or ARGV[1] == 'tryn') then
  local bucket = fast_algo == '0'
  local s, ns
  local at = ARGV[2]
  if at == '' then
    local t = redis.call('TIME')
    s, ns = t[1] + 0, t[2] * 1000
  else
    -- A test's injected time (decimal ns).
    local l = #at
    if l <= 9 then
      s, ns = 0, at + 0
    else
      s, ns = string.sub(at, 1, l - 9) + 0, string.sub(at, l - 8) + 0
    end
  end
  -- One decision for key at (s, ns), consuming cost units if allowed.
  local function fast(key, cost)
    -- b: base second; t1 (bucket) or w1 (window): its time in ns after b;
    -- c1: the window's count; z: a pause; e: the key's expiry (ms).
    local v = redis.call('HMGET', key, 'b', bucket and 't1' or 'w1', 'c1',
                         'z', 'e')
    local ok, rem, retry, reset
    -- ttl: how long the new state matters; room: extra life for its key.
    local ttl, room, put1, put2, put3 = 0, 0, nil, nil, nil
    if bucket then
      local interval, tol = ARGV[7] + 0, ARGV[8] + 0
      -- d: how far the theoretical arrival time is ahead of now.
      local d = 0
      if v[1] and v[2] then
        d = v[2] + (v[1] - s) * 1000000000 - ns
        if d < 0 then d = 0 end
      end
      local nd = d + cost * interval
      ok = nd <= tol
      rem, retry, reset = 0, 0, nd
      if ok then
        rem = math.floor((tol - nd) / interval)
      else
        if tol > d then rem = math.floor((tol - d) / interval) end
        retry, reset = nd - tol, d
      end
      -- The new arrival time, after second s. When the key's expiry must
      -- move, it moves past the furthest arrival time an admission can set
      -- until now moves on (now + tol), plus 100 ms: a busy key renews it
      -- every 100 ms at most, a light one about once per burst window (an
      -- admission then costs no PEXPIREAT), and an idle key outlives its
      -- state by at most the burst window plus 100 ms.
      ttl, room, put1 = nd, math.ceil((tol - nd) / 1000000) + 100, nd + ns
    else
      local limit = ARGV[5] + 0
      -- The window of now: its start (ns after second s) and the offset e.
      local e
      if fast_p % 1000000000 == 0 then
        e = (s % (fast_p / 1000000000)) * 1000000000 + ns
      else
        e = ns % fast_p
      end
      local start = ns - e
      local lag, cur = 0, 0
      if v[1] and v[2] then
        local ws = v[2] + (v[1] - s) * 1000000000
        if ws > start then
          -- The cell is ahead (a server clock stepped back): decide at its
          -- window's start.
          lag, e, start = ws - ns, 0, ws
          cur = tonumber(v[3]) or 0
        elseif ws == start then
          cur = tonumber(v[3]) or 0
        end
      end
      local left = fast_p - e + lag
      local used = cur + cost
      ok = used <= limit
      if ok then
        rem, retry = limit - used, 0
        if used > 0 then reset = left else reset = 0 end
      else
        rem, retry = limit - cur, left
        if rem < 0 then rem = 0 end
        if cur > 0 then reset = left else reset = 0 end
      end
      ttl, put1, put2, put3 = left, start, used, 0
    end
    local z = v[4]
    if z then
      -- A pause (absolute ns) denies everything until it ends.
      local l = #z
      local zs, zn = 0, 0
      if l <= 9 then
        zn = z + 0
      else
        zs, zn = string.sub(z, 1, l - 9) + 0, string.sub(z, l - 8) + 0
      end
      if zs > s or (zs == s and zn > ns) then
        local left = (zs - s) * 1000000000 + (zn - ns)
        ok, rem = false, 0
        if left > retry then retry = left end
        if left > reset then reset = left end
      end
    end
    if ok and cost > 0 then
      local e = 0
      if at == '' then
        -- The key must live until its state no longer matters (absolute
        -- server ms, rounded up). When the expiry last set ('e') already
        -- covers that, nothing more is needed.
        local need = s * 1000 + math.ceil((ns + ttl) / 1000000)
        if v[5] and v[5] + 0 >= need then
          e = nil
        else
          e = need + room
        end
      end
      if bucket then
        if e then
          redis.call('HSET', key, 'b', s, 't1', put1, 'e', e)
        else
          redis.call('HSET', key, 'b', s, 't1', put1)
        end
      elseif e then
        redis.call('HSET', key, 'b', s, 'w1', put1, 'c1', put2, 'p1', put3,
                   'e', e)
      else
        redis.call('HSET', key, 'b', s, 'w1', put1, 'c1', put2, 'p1', put3)
      end
      if e == 0 then
        -- An injected time: kept long in real time (see store_state).
        local ms = math.floor((ttl + 999999) / 1000000)
        if ms < 600000 then ms = 600000 end
        redis.call('PEXPIRE', key, ms)
      elseif e then
        redis.call('PEXPIREAT', key, e)
      end
    end
    local a = 0
    if ok then a = 1 end
    return {a, 0, ARGV[5], rem, retry, reset, s, ns}
  end
  if ARGV[1] == 'tryn' then
    -- Several tries merged into one call (KEYS[i] costs ARGV[8 + i]), in
    -- order, at one server time: one decision reply each.
    local out = {}
    for i = 1, #KEYS do out[i] = fast(KEYS[i], ARGV[8 + i] + 0) end
    return out
  end
  if ARGV[1] == 'try' then return fast(KEYS[1], ARGV[9] + 0) end
  return fast(KEYS[1], 0)
end

-- @prelude

local key = KEYS[1]
local op = ARGV[1]
local now = read_now(ARGV[2])
local q, i = read_quota(3)
local st = load_state(key, q)

if op == 'try' then
  local cost = tonumber(ARGV[i])
  local d, res = decide(q, st, now, cost)
  if d.allowed then
    for k = 1, q.n do st[k] = res[k].ns end
    store_state(key, q, st, now)
  end
  return reply(d, now)
end

if op == 'peek' then
  local d = decide(q, st, now, 0)
  return reply(d, now)
end

-- Gives back cost units charged at time `at` to every rate of st.
local function refund(cost, at)
  for k = 1, q.n do
    local r, s = q[k], st[k]
    if q.algo == 0 then
      if s.tat ~= nil and t_cmp(s.tat, now) > 0 then
        local d = t_diff(s.tat, now)
        local back = cost * r.interval
        if back >= d then
          s.tat = now
        else
          s.tat = t_sub(s.tat, back)
        end
      end
    else
      -- Only while the charged window is the cell's and still current.
      local charged = t_sub(at, t_mod(at, r.period))
      local nowin = t_sub(now, t_mod(now, r.period))
      if s.win ~= nil and t_cmp(s.win, charged) == 0 and
          t_cmp(nowin, charged) <= 0 then
        local c = s.c - cost
        if c < 0 then c = 0 end
        st[k] = {win = s.win, c = c, p = s.p}
      end
    end
  end
end

-- Charges cost units now to every rate of st, whatever the limit.
local function charge(cost)
  for k = 1, q.n do
    local r, s = q[k], st[k]
    if q.algo == 0 then
      local d = 0
      if s.tat ~= nil and t_cmp(s.tat, now) > 0 then d = t_diff(s.tat, now) end
      -- A debt is capped at 2^52 ns (about 52 days) to stay exact.
      local room = 4503599627370496 - d
      local add = cost * r.interval
      if add > room then add = room end
      if add > 0 then s.tat = t_add(now, d + add) end
    else
      local v = window_view(r, s, now)
      st[k] = {win = v.start, c = v.cur + cost, p = v.prev}
    end
  end
end

if op == 'refund' then
  local cost = tonumber(ARGV[i])
  local at = t_parse(ARGV[i + 1]) or now
  refund(cost, at)
  store_state(key, q, st, now)
  return reply(decide(q, st, now, 0), now)
end

if op == 'settle' then
  local reserved = tonumber(ARGV[i])
  local actual = tonumber(ARGV[i + 1])
  local at = t_parse(ARGV[i + 2]) or now
  if actual < reserved then
    refund(reserved - actual, at)
  elseif actual > reserved then
    charge(actual - reserved)
  end
  store_state(key, q, st, now)
  return reply(decide(q, st, now, 0), now)
end

if op == 'pause' then
  local mode = ARGV[i]
  local v = ARGV[i + 1]
  local untl
  if mode == 'abs' then
    untl = t_parse(v)
  else
    untl = t_add(now, tonumber(v))
  end
  if st.pause == nil or t_cmp(untl, st.pause) > 0 then st.pause = untl end
  store_state(key, q, st, now)
  local out = reply(decide(q, st, now, 0), now)
  local p = st.pause
  if t_cmp(p, now) < 0 then p = now end
  out[9] = t_str(p)
  return out
end

return redis.error_reply('ERR admit: unknown op')
