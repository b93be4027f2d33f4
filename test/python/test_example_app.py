"""The example service (examples/fastapi/app.py) through FastAPI's
TestClient and httpx: tiers, endpoint limits, 429 headers, 503 admission,
/health and /ready, the vendor pipeline against the in-process fake vendor,
and the /agent WebSocket's session limits; with Redis, the same limits
shared by two "pods"."""

import asyncio
import importlib.util
import os
import time
import uuid

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import admit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "fastapi")


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(EXAMPLE, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ex = _load("example_app", "app.py")
fv = _load("example_fake_vendor", "fake_vendor.py")


def vendor(**kw):
    """An in-process fake vendor and an httpx transport to it."""
    kw.setdefault("latency_ms", 0)
    kw.setdefault("quota", 1000)
    v = fv.Vendor(fv.Settings(**kw))
    return v, httpx.ASGITransport(app=fv.App(v))


def settings(**kw):
    base = dict(vendor_url="http://vendor", search_latency=0.0,
                vendor_rate_limit="1000/minute", vendor_backoff_s=0.001,
                pod_name="test-pod")
    base.update(kw)
    return ex.Settings(**base)


def make(clock=None, vendor_kw=None, **kw):
    v, transport = vendor(**(vendor_kw or {}))
    app = ex.create_app(settings(**kw), vendor_transport=transport,
                        rate_clock=clock)
    return app, v


def user(uid, tier=None):
    h = {"X-User-Id": uid}
    if tier:
        h["X-Tier"] = tier
    return h


# -- settings ----------------------------------------------------------------

def test_settings_from_environment():
    s = ex.Settings.from_env({})
    assert (s.backend, s.max_in_flight, s.backlog) == ("local", 80, 100)
    assert (s.vendor_url, s.vendor_rate_limit) == ("http://localhost:8001",
                                                   "60/minute")
    assert (s.vendor_concurrency, s.vendor_queue_timeout,
            s.vendor_call_timeout, s.vendor_retries) == (50, 5.0, 30.0, 3)
    assert (s.agent_max_sessions, s.agent_max_sessions_per_user) == (200, 2)
    s = ex.Settings.from_env({"ADMIT_REDIS_URL": "redis://r:6379/0",
                              "ADMIT_MAX_IN_FLIGHT": "7",
                              "VENDOR_RATE_LIMIT": "500/minute",
                              "VENDOR_QUEUE_TIMEOUT_S": "2.5",
                              "ADMIT_FAILURE_POLICY": "closed"})
    assert (s.backend, s.redis_url, s.max_in_flight) == (
        "redis", "redis://r:6379/0", 7)
    assert (s.vendor_queue_timeout, s.on_failure) == (2.5, "fail_closed")
    assert ex.Settings.from_env({"ADMIT_REDIS_URL": "redis://r/0",
                                 "ADMIT_BACKEND": "local"}).backend == "local"
    assert "***" in repr(ex.Settings(redis_url="redis://:secret@r:1/0"))
    for env, var in (({"ADMIT_MAX_IN_FLIGHT": "many"}, "ADMIT_MAX_IN_FLIGHT"),
                     ({"ADMIT_MAX_IN_FLIGHT": "0"}, "ADMIT_MAX_IN_FLIGHT"),
                     ({"ADMIT_BACKEND": "memcached"}, "ADMIT_BACKEND"),
                     ({"ADMIT_FAILURE_POLICY": "maybe"},
                      "ADMIT_FAILURE_POLICY"),
                     ({"VENDOR_RATE_LIMIT": "lots"}, "VENDOR_RATE_LIMIT"),
                     ({"VENDOR_URL": "vendor:80"}, "VENDOR_URL"),
                     ({"VENDOR_CALL_TIMEOUT_S": "0"},
                      "VENDOR_CALL_TIMEOUT_S"),
                     ({"ADMIT_FALLBACK_SHARE": "2"}, "ADMIT_FALLBACK_SHARE")):
        with pytest.raises(ValueError, match=var):
            ex.Settings.from_env(env)


def test_vendor_bucket_never_exceeds_the_quota_in_any_window():
    q = ex.vendor_quota("20/5s")
    assert (q.rates, q.burst) == ((admit.Rate.per(18, 5),), (2,))
    q = ex.vendor_quota("500/minute")
    assert (q.rates, q.burst) == ((admit.Rate.per(450, 60),), (50,))
    q = ex.vendor_quota("1/minute")
    assert (q.rates, q.burst) == ((admit.Rate.per(1, 60),), (1,))
    assert ex.vendor_quota("10/s", burst=4).burst == (4,)
    with pytest.raises(ValueError):
        ex.vendor_quota("10/minute;100/hour")
    # Greedy callers every 10 ms for 30 s: no 5 s interval gets over 20.
    clock = admit.ManualClock(1.0)
    bucket = admit.TokenBucket(ex.vendor_quota("20/5s"), clock=clock)
    times = []
    for step in range(3000):
        while bucket.try_acquire().allowed:
            times.append(step)
        clock.advance(0.01)
    worst = max(sum(1 for t in times if s <= t < s + 500)
                for s in range(0, 2500))
    assert worst == 19
    # 2 at once, then one every 5/18 s until 29.99 s.
    assert len(times) == 2 + 107


def test_parse_duration():
    assert ex.parse_duration("20ms") == 0.02
    assert ex.parse_duration("1.5s") == 1.5
    assert ex.parse_duration("1m0s") == 60.0
    assert ex.parse_duration("1h2m3s") == 3723.0
    assert ex.parse_duration("soon") is None
    assert ex.parse_duration("") is None


# -- layer 4: tiers and endpoints ------------------------------------------

def test_tiers_free_pro_enterprise(clock):
    app, _ = make(clock)
    with TestClient(app) as c:
        # free: 10 per minute, then 429 with Retry-After and RateLimit.
        for i in range(10):
            r = c.get("/search", headers=user("f1", "free"))
            assert r.status_code == 200, i
            assert r.headers["X-Admit-Outcome"] == "ok"
        r = c.get("/search", headers=user("f1", "free"))
        assert r.status_code == 429
        assert r.json() == {"detail": "Rate limit exceeded"}
        assert r.headers["X-Admit-Outcome"] == "limited-tier"
        # The clock is 1000 s: 40 s into a minute, 20 s to the next one.
        assert r.headers["Retry-After"] == "20"
        assert r.headers["RateLimit-Policy"] == \
            '"endpoint";q=100;w=60, "free";q=10;w=60'
        assert r.headers["RateLimit"].endswith('"free";r=0;t=20')
        assert r.headers["X-RateLimit-Limit"] == "10"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        # Another free user is not affected; an unknown tier is free.
        assert c.get("/search", headers=user("f2")).status_code == 200
        for _ in range(9):
            c.get("/search", headers=user("g1", "gold"))
        r = c.get("/search", headers=user("g1", "gold"))
        assert r.status_code == 200 and '"free";r=0' in r.headers["RateLimit"]
        assert c.get("/search", headers=user("g1", "gold")).status_code == 429
        # pro: 100 per minute over all endpoints (95 /search + 5 /analyze).
        for i in range(95):
            assert c.get("/search", headers=user("p1", "pro")).status_code \
                == 200, i
        for i in range(5):
            r = c.post("/analyze", headers=user("p1", "pro"),
                       json={"text": "t"})
            assert r.status_code == 200, (i, r.text)
        r = c.get("/search", headers=user("p1", "pro"))
        assert r.status_code == 429
        assert r.headers["X-Admit-Outcome"] == "limited-tier"
        assert r.headers["RateLimit"].endswith('"pro";r=0;t=20')
        # enterprise: 1000 per minute, so /search's 100 binds first.
        for i in range(100):
            r = c.get("/search", headers=user("e1", "enterprise"))
            assert r.status_code == 200, i
        assert '"enterprise";r=900' in r.headers["RateLimit"]
        r = c.get("/search", headers=user("e1", "enterprise"))
        assert r.status_code == 429
        assert r.headers["X-Admit-Outcome"] == "limited-endpoint"
        # A minute later everything is allowed again.
        clock.advance(20)
        for uid in ("f1", "g1", "p1", "e1"):
            assert c.get("/search", headers=user(uid)).status_code == 200


def test_anonymous_callers_are_free_by_address(clock):
    app, _ = make(clock)
    with TestClient(app) as c:
        codes = [c.get("/search", headers={"X-Tier": "enterprise"})
                 .status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]


def test_endpoint_limits_per_user(clock):
    app, v = make(clock)
    with TestClient(app) as c:
        h = user("a1", "enterprise")
        for i in range(5):
            r = c.post("/analyze", headers=h, json={"text": "x"})
            assert r.status_code == 200, i
        r = c.post("/analyze", headers=h, json={"text": "x"})
        assert r.status_code == 429
        assert r.headers["X-Admit-Outcome"] == "limited-endpoint"
        assert r.headers["RateLimit"] == '"endpoint";r=0;t=20'
        assert r.headers["RateLimit-Policy"] == '"endpoint";q=5;w=60'
        assert r.headers["Retry-After"] == "20"
        # The refusal took nothing from the tier; other endpoints and
        # other users go on.
        assert c.get("/search", headers=h).status_code == 200
        assert c.post("/analyze", headers=user("a2", "enterprise"),
                      json={"text": "x"}).status_code == 200
        for i in range(20):
            assert c.post("/chat", headers=h,
                          json={"message": "m"}).status_code == 200, i
        r = c.post("/chat", headers=h, json={"message": "m"})
        assert r.status_code == 429
        assert r.headers["RateLimit-Policy"] == '"endpoint";q=20;w=60'
    # Refused requests never reached the vendor.
    assert v.stats()["received"] == 5 + 1 + 20


# -- layer 3: admission ------------------------------------------------------

async def test_admission_answers_503_beyond_in_flight_and_backlog():
    app, _ = make(max_in_flight=2, backlog=1, search_latency=0.3)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport,
                                 base_url="http://t") as client:
        jobs = [asyncio.ensure_future(client.get(
            "/search", headers=user("u%d" % i))) for i in range(6)]
        await asyncio.sleep(0.1)
        # Full: the probes are exempt and still answer.
        assert (await client.get("/health")).status_code == 200
        st = (await client.get("/stats")).json()
        assert (st["admission"]["in_flight"], st["admission"]["waiting"]) \
            == (2, 1)
        rs = await asyncio.gather(*jobs)
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 200, 503, 503, 503]
    for r in rs:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1"
            assert r.headers["X-Admit-Outcome"] == "admission"
            assert r.json() == {"detail": "Service overloaded"}
            assert "X-Admission-Wait" not in r.headers
        else:
            assert float(r.headers["X-Admission-Wait"]) >= 0
    waits = sorted(float(r.headers["X-Admission-Wait"]) for r in rs
                   if r.status_code == 200)
    assert waits[-1] > 0.2          # the backlogged one waited its turn
    st = app.state.recorder.snapshot()
    assert st["max_running"] == 2
    assert st["requests"]["/search"] == {"ok": 3, "admission": 3}


# -- layer 2: health and readiness -------------------------------------------

async def test_health_and_ready_follow_saturation():
    app, _ = make(max_in_flight=1, backlog=4, search_latency=0.4,
                  ready_hold=0.2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport,
                                 base_url="http://t") as client:
        r = await client.get("/ready")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        assert r.json()["capacity"] == 1
        jobs = [asyncio.ensure_future(client.get(
            "/search", headers=user("r%d" % i))) for i in range(4)]
        await asyncio.sleep(0.1)
        # One running and three waiting (> backlog/2): not ready.
        r = await client.get("/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "overloaded"
        assert (r.json()["in_flight"], r.json()["waiting"]) == (1, 3)
        r = await client.get("/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert [x.status_code for x in await asyncio.gather(*jobs)] == \
            [200] * 4
        r = await client.get("/ready")
        assert r.json()["status"] in ("recovering", "ready")
        await asyncio.sleep(0.25)
        r = await client.get("/ready")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        m = await client.get("/metrics")
        assert m.status_code == 200
        assert 'admit_admission_admitted_total{controller="http"} 4' in m.text
        assert "admit_guard_" in m.text


# -- layer 5: the vendor pipeline ------------------------------------------

def test_vendor_call_through_the_guard():
    app, v = make()
    with TestClient(app) as c:
        r = c.post("/chat", headers=user("c1"), json={"message": "hi"})
        assert r.status_code == 200
        assert r.json() == {"reply": "echo: hi"}
        assert r.headers["X-Admit-Outcome"] == "ok"
        assert r.headers["X-Vendor-Attempts"] == "1"
        assert 0 <= float(r.headers["X-Vendor-Queue-Wait"]) < 1
        st = c.get("/stats").json()
    assert v.stats()["received"] == 1
    assert st["guard"]["succeeded"] == 1
    assert st["vendor_queue_wait"]["count"] == 1
    assert st["requests"]["/chat"] == {"ok": 1}


def test_vendor_limiter_refuses_at_once_what_cannot_fit():
    # Our limiter: 5 per 2 s (burst 1, then 4 per 2 s); the queue timeout
    # is 0.3 s, so one call goes now and the rest cannot wait for theirs.
    app, v = make(vendor_kw={"quota": 5, "window_s": 2},
                  vendor_rate_limit="5/2s", vendor_queue_timeout=0.3)
    with TestClient(app) as c:
        start = time.monotonic()
        rs = [c.post("/chat", headers=user("v%d" % i), json={})
              for i in range(6)]
        took = time.monotonic() - start
    assert [r.status_code for r in rs] == [200] + [429] * 5
    for r in rs[1:]:
        assert r.headers["X-Admit-Outcome"] == "vendor-busy"
        assert r.json() == {"detail": "Vendor rate limit exceeded"}
        assert r.headers["Retry-After"] == "1"
        assert float(r.headers["X-Vendor-Queue-Wait"]) < 0.1
    assert took < 1.0
    s = v.stats()
    assert (s["received"], s["rejected_429"]) == (1, 0)


def test_vendor_quota_headers_pause_before_a_429():
    # The vendor allows 1 call per minute, we believe 100: its headers say
    # "0 remaining, reset in 60 s", so the guard pauses and the next call
    # is refused at once, without bothering the vendor.
    app, v = make(vendor_kw={"quota": 1, "window_s": 60},
                  vendor_rate_limit="100/minute")
    with TestClient(app) as c:
        assert c.post("/chat", headers=user("x1"), json={}).status_code \
            == 200
        r = c.post("/chat", headers=user("x2"), json={})
        assert r.status_code == 429
        assert r.headers["X-Admit-Outcome"] == "vendor-busy"
        assert 50 <= int(r.headers["Retry-After"]) <= 60
        g = c.get("/stats").json()["guard"]
    s = v.stats()
    assert (s["received"], s["rejected_429"]) == (1, 0)
    assert (g["pauses"], g["rejected_pause"], g["vendor_limited"]) == \
        (1, 1, 0)


def test_vendor_429_pauses_the_pipeline():
    # Someone else spends the vendor's quota: our next call gets its 429
    # with Retry-After, which pauses the guard; later calls never reach
    # the vendor until the pause ends.
    app, v = make(vendor_kw={"quota": 2, "window_s": 60},
                  vendor_rate_limit="100/minute")
    with TestClient(app) as c:
        assert c.post("/chat", headers=user("y1"), json={}).status_code \
            == 200
        assert v.admit()[0] == 0    # another client of the same account
        v.finish()
        r = c.post("/chat", headers=user("y2"), json={})
        assert r.status_code == 429
        assert r.headers["X-Admit-Outcome"] == "vendor-busy"
        assert 50 <= int(r.headers["Retry-After"]) <= 60
        r = c.post("/chat", headers=user("y3"), json={})
        assert r.status_code == 429
        assert r.headers["X-Admit-Outcome"] == "vendor-busy"
        g = c.get("/stats").json()["guard"]
    s = v.stats()
    assert (s["received"], s["rejected_429"]) == (3, 1)
    assert (g["vendor_limited"], g["pauses"]) == (1, 1)
    assert g["rejected_pause"] == 2


def test_vendor_failures_are_retried_then_502():
    app, v = make(vendor_kw={"error_rate": 1.0, "error_status": 500})
    with TestClient(app) as c:
        r = c.post("/chat", headers=user("e1"), json={"message": "x"})
        assert r.status_code == 502
        assert r.headers["X-Admit-Outcome"] == "vendor-error"
        assert c.get("/stats").json()["guard"]["retries"] == 3
    # The first attempt and 3 retries.
    assert v.stats()["received"] == 4
    assert v.stats()["errors_5xx"] == 4


def test_vendor_call_timeout_is_504():
    app, v = make(vendor_kw={"latency_ms": 500}, vendor_call_timeout=0.05,
                  vendor_retries=0)
    with TestClient(app) as c:
        r = c.post("/analyze", headers=user("t1"), json={"text": "x"})
        assert r.status_code == 504
        assert r.headers["X-Admit-Outcome"] == "vendor-timeout"
        assert c.get("/stats").json()["guard"]["call_timeouts"] == 1


# -- the voice agent's WebSocket ---------------------------------------------

def _settle(app, n):
    """Waits until ``n`` sessions are open: a closed session gives its
    place back a moment after the client's close."""
    for _ in range(200):
        if app.state.sessions.counts()["open"] == n:
            return
        time.sleep(0.01)
    assert app.state.sessions.counts()["open"] == n


def _refused(c, uid):
    with c.websocket_connect("/agent", headers={"X-User-Id": uid}) as ws:
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
    return e.value


def test_agent_sessions_per_user_and_in_total():
    app, _ = make(agent_max_sessions=3, agent_max_sessions_per_user=2)
    with TestClient(app) as c:
        a1 = c.websocket_connect("/agent", headers={"X-User-Id": "a"})
        a1.__enter__()
        assert a1.receive_json() == {"type": "ready", "user": "a",
                                     "pod": "test-pod"}
        with c.websocket_connect("/agent?user=a") as a2:
            assert a2.receive_json()["type"] == "ready"
            a2.send_text("hello")
            assert a2.receive_json() == {"type": "transcript",
                                         "text": "hello"}
            # a's third session: per-user limit.
            e = _refused(c, "a")
            assert e.code == 1013
            assert e.reason == "try again later: you have 2 sessions open"
            with c.websocket_connect("/agent",
                                     headers={"X-User-Id": "b"}) as b1:
                assert b1.receive_json()["user"] == "b"
                # c: the total limit (3 open).
                e = _refused(c, "c")
                assert e.code == 1013
                assert e.reason == \
                    "try again later: the service is at 3 sessions"
                assert app.state.sessions.counts()["open"] == 3
        # a2 and b1 closed: room again, for a as well.
        _settle(app, 1)
        with c.websocket_connect("/agent",
                                 headers={"X-User-Id": "c"}) as c1:
            assert c1.receive_json()["type"] == "ready"
            with c.websocket_connect("/agent",
                                     headers={"X-User-Id": "a"}) as a3:
                assert a3.receive_json()["type"] == "ready"
        a1.__exit__(None, None, None)
        st = c.get("/stats").json()
    assert st["agent"] == {"accepted": 5, "refused_user": 1,
                           "refused_total": 1}
    assert st["sessions"] == {"open": 0, "users": 0}


# -- several pods through Redis --------------------------------------------

def _redis_url():
    url = os.environ.get("ADMIT_TEST_REDIS_URL")
    if not url:
        pytest.skip("ADMIT_TEST_REDIS_URL is not set (run under "
                    "test/run-redis.sh)")
    return url


def _away_from_a_minute_edge():
    # Redis windows are aligned on the server's clock: keep a test's
    # requests inside one minute.
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


def _pods(url, n=2, vendor_kw=None, **kw):
    prefix = "ex" + uuid.uuid4().hex[:8]
    v, transport = vendor(**(vendor_kw or {}))
    apps = [ex.create_app(settings(backend="redis", redis_url=url,
                                   redis_prefix=prefix,
                                   failure_policy="closed",
                                   pod_name="pod-%d" % i, **kw),
                          vendor_transport=transport)
            for i in range(n)]
    return apps, v


def test_redis_pods_share_user_limits_and_sessions():
    url = _redis_url()
    _away_from_a_minute_edge()
    (p1, p2), _ = _pods(url, agent_max_sessions=3,
                        agent_max_sessions_per_user=2)
    with TestClient(p1) as c1, TestClient(p2) as c2:
        h = user("shared", "free")
        codes = [(c1 if i % 2 else c2).get("/search", headers=h).status_code
                 for i in range(10)]
        assert codes == [200] * 10
        for c in (c1, c2):
            r = c.get("/search", headers=h)
            assert r.status_code == 429
            assert r.headers["X-Admit-Outcome"] == "limited-tier"
            assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Sessions: 2 per user and 3 in total, across both pods.
        with c1.websocket_connect("/agent", headers={"X-User-Id": "s"}) as w1:
            assert w1.receive_json()["pod"] == "pod-0"
            with c2.websocket_connect("/agent",
                                      headers={"X-User-Id": "s"}) as w2:
                assert w2.receive_json()["pod"] == "pod-1"
                assert _refused(c1, "s").code == 1013
                with c2.websocket_connect("/agent",
                                          headers={"X-User-Id": "t"}) as w3:
                    assert w3.receive_json()["type"] == "ready"
                    e = _refused(c1, "u")
                    assert (e.code, e.reason) == (
                        1013, "try again later: the service is at 3 "
                        "sessions")
        _settle(p1, 0)
        with c1.websocket_connect("/agent", headers={"X-User-Id": "s"}) as w4:
            assert w4.receive_json()["type"] == "ready"


def test_redis_pods_share_the_vendor_quota():
    url = _redis_url()
    # The vendor takes 3 calls per 10 s; so do we, all pods together
    # (burst 1 then 2 per 10 s), and nobody waits more than 0.3 s.
    (p1, p2, p3), v = _pods(url, n=3, vendor_kw={"quota": 3,
                                                 "window_s": 10},
                            vendor_rate_limit="3/10s",
                            vendor_queue_timeout=0.3, vendor_retries=0)
    with TestClient(p1) as c1, TestClient(p2) as c2, TestClient(p3) as c3:
        rs = [c.post("/chat", headers=user("q%d%d" % (i, j)), json={})
              for i in range(3) for j, c in enumerate((c1, c2, c3))]
    outcomes = [r.headers["X-Admit-Outcome"] for r in rs]
    assert outcomes.count("ok") == 1
    assert outcomes.count("vendor-busy") == 8
    s = v.stats()
    assert (s["received"], s["rejected_429"]) == (1, 0)
