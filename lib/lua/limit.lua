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
-- Every op replies with a decision (see reply() in _lib.lua); pause adds
-- the pause's end (ns string) as an eighth element.

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
  out[8] = t_str(p)
  return out
end

return redis.error_reply('ERR admit: unknown op')
