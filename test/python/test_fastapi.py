"""admit.fastapi on real FastAPI apps through Starlette's TestClient
(httpx), with exact header values on a simulated clock."""

import asyncio
import threading
import time

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

import admit
from admit.fastapi import (AdmissionMiddleware, RateLimit, Readiness,
                           add_health_routes, by_header, client_ip,
                           forwarded_ip, parse_retry_after,
                           retry_after_seconds)
from starlette.testclient import TestClient

TIERS = {"free": "3/minute", "pro": "5/minute"}
USERS = {"alice": "free", "bob": "pro"}


def make_app(limit):
    app = FastAPI(dependencies=[Depends(limit)])

    @app.get("/chat")
    async def chat():
        return {"ok": True}

    @app.get("/search")
    async def search(request: Request):
        return {"n": len(request.state.rate_limit)}

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"id": item_id}

    return app


def test_single_limit_exact_headers(clock):
    # The clock is 1000 s: 40 s into a 60 s window, so it resets in 20 s.
    limit = RateLimit("3/minute", clock=clock)
    c = TestClient(make_app(limit))
    for remaining in (2, 1, 0):
        r = c.get("/chat")
        assert r.status_code == 200
        assert r.headers["RateLimit-Policy"] == '"default";q=3;w=60'
        assert r.headers["RateLimit"] == '"default";r=%d;t=20' % remaining
        assert "X-RateLimit-Limit" not in r.headers
    r = c.get("/chat")
    assert r.status_code == 429
    assert r.json() == {"detail": "Rate limit exceeded"}
    assert r.headers["Retry-After"] == "20"
    assert r.headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert r.headers["RateLimit"] == '"default";r=0;t=20'
    clock.advance(19.5)
    r = c.get("/chat")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.headers["RateLimit"] == '"default";r=0;t=1'
    clock.advance(0.5)
    assert c.get("/chat").status_code == 200


def test_tiers_keys_and_x_headers(clock):
    limit = RateLimit(TIERS, key=by_header("X-User"),
                      tier=lambda req: USERS.get(req.headers.get("x-user")),
                      headers="both", clock=clock)
    c = TestClient(make_app(limit))
    alice = {"X-User": "alice"}
    bob = {"X-User": "bob"}
    codes = [c.get("/chat", headers=alice).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    codes = [c.get("/chat", headers=bob).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    r = c.get("/chat", headers=alice)
    assert r.headers["RateLimit-Policy"] == '"free";q=3;w=60'
    assert r.headers["RateLimit"] == '"free";r=0;t=20'
    assert r.headers["X-RateLimit-Limit"] == "3"
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert r.headers["X-RateLimit-Reset"] == "20"
    # An unknown user gets the default (first) tier, keyed by its address.
    r = c.get("/chat")
    assert r.status_code == 200
    assert r.headers["RateLimit-Policy"] == '"free";q=3;w=60'
    assert r.headers["RateLimit"] == '"free";r=2;t=20'


def test_route_limits_and_all_or_nothing(clock):
    async def tier(req):             # async tier lookups work too
        await asyncio.sleep(0)
        return "pro"

    limit = RateLimit(TIERS, tier=tier, routes={"/chat": "2/minute",
                                                "/items/{item_id}":
                                                "1/minute"},
                      key=by_header("X-User"), clock=clock)
    c = TestClient(make_app(limit))
    h = {"X-User": "carol"}
    r = c.get("/chat", headers=h)
    assert r.status_code == 200
    assert r.headers["RateLimit-Policy"] == \
        '"endpoint";q=2;w=60, "pro";q=5;w=60'
    assert r.headers["RateLimit"] == '"endpoint";r=1;t=20, "pro";r=4;t=20'
    assert c.get("/chat", headers=h).status_code == 200
    r = c.get("/chat", headers=h)
    assert r.status_code == 429
    assert r.headers["RateLimit"] == '"endpoint";r=0;t=20'
    # The refused /chat did not consume the tier: 3 of 5 are left.
    r = c.get("/search", headers=h)
    assert r.status_code == 200
    assert r.headers["RateLimit"] == '"pro";r=2;t=20'
    assert r.json() == {"n": 1}
    # Per-route limits key on the route template, not the concrete path.
    assert c.get("/items/1", headers=h).status_code == 200
    assert c.get("/items/2", headers=h).status_code == 429


def test_denial_reports_refunded_checks_after_the_refund(clock):
    limit = RateLimit(TIERS, tier=lambda req: "free",
                      routes={"/chat": "10/minute"}, key=by_header("X-User"),
                      headers="both", clock=clock)
    c = TestClient(make_app(limit))
    h = {"X-User": "dave"}
    for left in (2, 1, 0):
        r = c.get("/chat", headers=h)
        assert r.status_code == 200
        assert r.headers["RateLimit"] == \
            '"endpoint";r=%d;t=20, "free";r=%d;t=20' % (7 + left, left)
    # The endpoint passes (7 left, then 6), the tier denies: the endpoint's
    # unit is refunded, and the headers say 7 remain, not 6.
    r = c.get("/chat", headers=h)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "20"
    assert r.headers["RateLimit-Policy"] == \
        '"endpoint";q=10;w=60, "free";q=3;w=60'
    assert r.headers["RateLimit"] == '"endpoint";r=7;t=20, "free";r=0;t=20'
    assert r.headers["X-RateLimit-Limit"] == "3"
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert r.headers["X-RateLimit-Reset"] == "20"
    assert limit._backend.limiter.peek(
        b"dave", tier="route:/chat").remaining == 7
    # A user whose tier is spent elsewhere: the endpoint's state after the
    # refund is as fresh as a new one (all 10 left, nothing to reset).
    e = {"X-User": "erin"}
    assert [c.get("/search", headers=e).status_code
            for _ in range(3)] == [200] * 3
    r = c.get("/chat", headers=e)
    assert r.status_code == 429
    assert r.headers["RateLimit"] == '"endpoint";r=10;t=0, "free";r=0;t=20'


def test_multi_rate_policy(clock):
    limit = RateLimit("2/second;3/minute", clock=clock)
    c = TestClient(make_app(limit))
    r = c.get("/chat")
    assert r.headers["RateLimit-Policy"] == \
        '"default";q=2;w=1, "default-2";q=3;w=60'
    # reset_after covers the whole state (every rate), as libadmit says.
    assert r.headers["RateLimit"] == '"default";r=1;t=20'
    c.get("/chat")
    r = c.get("/chat")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    clock.advance(1)
    assert c.get("/chat").status_code == 200
    clock.advance(1)
    r = c.get("/chat")
    assert r.status_code == 429
    assert r.headers["RateLimit"] == '"default-2";r=0;t=18'
    assert r.headers["Retry-After"] == "18"


def test_none_key_is_not_limited_and_cost(clock):
    limit = RateLimit("4/minute", key=by_header("X-Api-Key", fallback=None),
                      cost=lambda req: int(req.headers.get("x-cost", "1")),
                      headers="none", clock=clock)
    c = TestClient(make_app(limit))
    for _ in range(10):
        r = c.get("/chat")
        assert r.status_code == 200 and "RateLimit" not in r.headers
    k = {"X-Api-Key": "k1"}
    assert c.get("/chat", headers={**k, "X-Cost": "3"}).status_code == 200
    assert c.get("/chat", headers={**k, "X-Cost": "2"}).status_code == 429
    assert c.get("/chat", headers={**k, "X-Cost": "1"}).status_code == 200


def test_key_helpers():
    class Req:
        def __init__(self, headers, host="10.0.0.9"):
            self.headers = headers
            self.client = type("C", (), {"host": host})()

    assert client_ip(Req({})) == "10.0.0.9"
    f = forwarded_ip(1)
    assert f(Req({"x-forwarded-for": "1.1.1.1, 2.2.2.2"})) == "2.2.2.2"
    assert forwarded_ip(2)(Req({"x-forwarded-for": "1.1.1.1, 2.2.2.2"})) \
        == "1.1.1.1"
    assert f(Req({})) == "10.0.0.9"
    assert retry_after_seconds(1) == 1
    assert retry_after_seconds(2_000_000_001) == 3
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT",
                             now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_dependency_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        RateLimit("ten per minute")
    with pytest.raises(TypeError, match="limits\\['free'\\]"):
        RateLimit({"free": 10})
    with pytest.raises(ValueError, match="tier="):
        RateLimit(TIERS)
    with pytest.raises(ValueError, match="default_tier"):
        RateLimit(TIERS, tier=lambda r: None, default_tier="gold")
    with pytest.raises(ValueError, match="headers"):
        RateLimit("1/s", headers="draft")
    with pytest.raises(TypeError, match="key"):
        RateLimit("1/s", key="user")
    with pytest.raises(ValueError, match="cost"):
        RateLimit("1/s", cost=0)
    with pytest.raises(ValueError, match="backend"):
        RateLimit("1/s", backend="memcached://x")
    with pytest.raises(TypeError, match="backend"):
        RateLimit("1/s", backend=42)
    with pytest.raises(ValueError, match="give limits"):
        RateLimit(None)
    with pytest.raises(ValueError, match="algorithm"):
        RateLimit("1/s", algorithm="leaky")
    r = RateLimit(TIERS, tier=lambda r: None, routes={"/chat": "2/minute"})
    assert repr(r) == ("RateLimit({'free': '3/1m', 'pro': '5/1m'}, "
                       "routes={'/chat': '2/1m'}, algorithm=FIXED_WINDOW, "
                       "backend='local', headers='ietf')")


# -- admission -------------------------------------------------------------

def admission_app(**kw):
    app = FastAPI()
    gate = asyncio.Event
    state = {"event": None}

    @app.get("/work")
    async def work():
        if state["event"] is None:
            state["event"] = asyncio.Event()
        await state["event"].wait()
        return {"done": True}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    mw = AdmissionMiddleware(app, **kw)
    return mw, state, gate


async def test_admission_rejects_beyond_backlog():
    mw, state, _ = admission_app(max_in_flight=2, backlog=1,
                                 queue_timeout=5, retry_after=3)
    transport = httpx.ASGITransport(app=mw)
    async with httpx.AsyncClient(transport=transport,
                                 base_url="http://t") as client:
        running = [asyncio.ensure_future(client.get("/work"))
                   for _ in range(3)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            s = mw.saturation()
            if s["in_flight"] == 2 and s["waiting"] == 1:
                break
        assert mw.saturation() == {"in_flight": 2, "waiting": 1,
                                   "limit": 2, "rejected": 0}
        r = await client.get("/work")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "3"
        assert r.json() == {"detail": "Service overloaded"}
        # Exempt paths pass even when full.
        r = await client.get("/health")
        assert r.status_code == 200
        state["event"].set()
        done = await asyncio.gather(*running)
        assert [d.status_code for d in done] == [200, 200, 200]
    assert mw.saturation() == {"in_flight": 0, "waiting": 0,
                               "limit": 2, "rejected": 1}
    st = mw.controller.stats()
    assert (st.admitted, st.completed, st.errors) == (3, 3, 0)


async def test_admission_queue_timeout_answers_503():
    mw, state, _ = admission_app(max_in_flight=1, backlog=5,
                                 queue_timeout=0.05)
    transport = httpx.ASGITransport(app=mw)
    async with httpx.AsyncClient(transport=transport,
                                 base_url="http://t") as client:
        first = asyncio.ensure_future(client.get("/work"))
        await asyncio.sleep(0.02)
        r = await client.get("/work")
        assert r.status_code == 503
        state["event"].set()
        assert (await first).status_code == 200
    assert mw.controller.stats().in_flight == 0


async def test_admission_refusals_by_an_inner_layer_are_not_errors():
    # An outer admission layer (the whole process) around an inner one
    # (say, one expensive route): the inner layer's 503s are load, not
    # faults, so the outer error rate (which /ready reads) stays 0.
    inner, state, _ = admission_app(max_in_flight=1, backlog=0)
    outer = AdmissionMiddleware(inner, max_in_flight=10, backlog=10)
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport,
                                 base_url="http://t") as client:
        first = asyncio.ensure_future(client.get("/work"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if inner.saturation()["in_flight"] == 1:
                break
        codes = [(await client.get("/work")).status_code for _ in range(3)]
        assert codes == [503] * 3
        state["event"].set()
        assert (await first).status_code == 200
    st = outer.controller.stats()
    assert (st.admitted, st.completed, st.errors) == (4, 4, 0)
    assert (st.recent_calls, st.recent_errors) == (4, 0)
    st = inner.controller.stats()
    assert (st.admitted, st.rejected, st.completed, st.errors) == \
        (1, 3, 1, 0)


async def test_admission_app_5xx_count_unless_excluded():
    app = FastAPI()

    @app.get("/busy")
    async def busy():
        raise HTTPException(503, "deliberately unavailable")

    @app.get("/boom")
    async def boom():
        return JSONResponse({"detail": "broken"}, status_code=500)

    @app.get("/ok")
    async def fine():
        return {"ok": True}

    for excluded, errors in (((), 3), ({503}, 1)):
        mw = AdmissionMiddleware(app, exclude_statuses=excluded)
        transport = httpx.ASGITransport(app=mw)
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://t") as client:
            codes = [(await client.get(p)).status_code
                     for p in ("/busy", "/boom", "/ok", "/busy")]
        assert codes == [503, 500, 200, 503]
        st = mw.controller.stats()
        assert (st.completed, st.errors, st.recent_calls,
                st.recent_errors) == (4, errors, 4, errors)
    assert mw.outcome(503) == admit.Outcome.CANCELLED
    assert mw.outcome(502) == admit.Outcome.FAILURE
    assert mw.outcome(404) == admit.Outcome.SUCCESS
    assert mw.outcome(200, {"admit.rejected": True}) == \
        admit.Outcome.CANCELLED
    assert repr(mw).endswith("exclude_statuses=[503])")


def test_admission_bad_arguments():
    with pytest.raises(ValueError, match="max_in_flight"):
        AdmissionMiddleware(None, max_in_flight=0)
    with pytest.raises(ValueError, match="backlog"):
        AdmissionMiddleware(None, backlog=-1)
    with pytest.raises(TypeError, match="queue_timeout"):
        AdmissionMiddleware(None, queue_timeout="5")
    with pytest.raises(TypeError, match="exempt"):
        AdmissionMiddleware(None, exempt="/health")
    with pytest.raises(TypeError, match="exclude_statuses"):
        AdmissionMiddleware(None, exclude_statuses="503")
    with pytest.raises(TypeError, match="exclude_statuses"):
        AdmissionMiddleware(None, exclude_statuses=503)
    with pytest.raises(TypeError, match="exclude_statuses"):
        AdmissionMiddleware(None, exclude_statuses={"503"})
    with pytest.raises(ValueError, match="exclude_statuses"):
        AdmissionMiddleware(None, exclude_statuses={99})
    assert repr(AdmissionMiddleware(None, max_in_flight=4, backlog=8)) == (
        "AdmissionMiddleware(AdmissionController(max_in_flight=4, "
        "backlog=8, in_flight=0, waiting=0), queue_timeout=5, "
        "exempt=('/health', '/ready'))")


# -- health ----------------------------------------------------------------

def test_health_and_ready():
    app = FastAPI()
    sem = admit.Semaphore(1)
    flag = {"broken": False}
    ready = Readiness().add_semaphore("llm", sem, max_waiting=0)
    ready.add("db", lambda: "db down" if flag["broken"] else None)
    add_health_routes(app, ready)
    c = TestClient(app)
    assert c.get("/health").json() == {"status": "ok"}
    r = c.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready",
                        "checks": {"llm": "ok", "db": "ok"}}
    flag["broken"] = True
    r = c.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"status": "not ready",
                        "checks": {"llm": "ok", "db": "db down"}}
    assert c.get("/health").status_code == 200
    assert repr(ready) == "Readiness(llm, db)"


def test_testclient_loop_in_other_thread_with_semaphore():
    # TestClient runs the app's loop in another thread: the semaphore's
    # completions must reach that loop.
    sem = admit.Semaphore(1)
    app = FastAPI()

    @app.get("/slot")
    async def slot():
        async with sem.slot(timeout=2):
            await asyncio.sleep(0.01)
        return {"ok": True}

    with TestClient(app) as c:
        results = []

        def hit():
            results.append(c.get("/slot").status_code)

        th = [threading.Thread(target=hit) for _ in range(8)]
        for t in th:
            t.start()
        for t in th:
            t.join()
    assert results == [200] * 8
    assert sem.in_use == 0


# -- the library's health registry -----------------------------------------

def test_ready_from_health_registry_and_metrics(clock):
    ctl = admit.AdmissionController(1, 10, shedding=False)
    health = admit.Health(max_waiting=1, hold=5, clock=clock).add(ctl, "api")
    app = FastAPI()
    add_health_routes(app, health=health, metrics_path="/metrics")
    c = TestClient(app)
    r = c.get("/ready")
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["ready"] is True
    # Saturate: one in flight, two waiting (> max_waiting 1).
    p = ctl.enter_blocking(timeout=0)
    import threading
    waiters = [threading.Thread(target=lambda: ctl.enter_blocking(
        timeout=2).leave()) for _ in range(2)]
    for t in waiters:
        t.start()
    for _ in range(100):
        if ctl.stats().waiting == 2:
            break
        time.sleep(0.01)
    r = c.get("/ready")
    assert r.status_code == 503
    assert r.json()["status"] == "overloaded"
    assert r.json()["waiting"] == 2 and r.json()["in_flight"] == 1
    assert c.get("/health").status_code == 200     # liveness never fails
    p.leave()
    for t in waiters:
        t.join()
    # Hysteresis: still not ready until the hold time has passed.
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "recovering"
    clock.advance(5)
    assert c.get("/ready").status_code == 200
    m = c.get("/metrics")
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'admit_admission_admitted_total{controller="api"} 3' in m.text
    assert "# TYPE admit_admission_admitted_total counter" in m.text


def test_health_registry_bad_arguments():
    with pytest.raises(ValueError, match="max_error_rate"):
        admit.Health(max_error_rate=2)
    with pytest.raises(TypeError, match="fail_on_degraded"):
        admit.Health(fail_on_degraded=1)
    with pytest.raises(ValueError, match="max_waiting"):
        admit.Health(max_waiting=0)
    h = admit.Health()
    with pytest.raises(TypeError, match="obj"):
        h.add(object())
    with pytest.raises(ValueError, match="name"):
        h.add(admit.CircuitBreaker())
    with pytest.raises(ValueError, match="metrics_path"):
        add_health_routes(FastAPI(), metrics_path="/metrics")
    assert h.alive()
