"""Redis-backed limits against the throwaway redis-server of
test/run-redis.sh (skipped without ADMIT_TEST_REDIS_URL): exact decisions,
asyncio waits that never block the loop, cancellation, pauses, failure
policies and the FastAPI dependency on Redis."""

import asyncio
import os
import re
import signal
import socket
import time
import uuid

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

import admit
from admit.fastapi import RateLimit
from loop_helpers import Heartbeat, eventually


@pytest.fixture
def redis(redis_url):
    # A generous command timeout: the suite runs on loaded CI machines.
    r = admit.Redis(redis_url, prefix="t" + uuid.uuid4().hex[:8],
                    command_timeout=2.0)
    yield r
    r.close()


def name():
    return "n" + uuid.uuid4().hex[:12]


def test_connect_ping_repr(redis, redis_url):
    redis.ping()
    assert repr(redis).startswith("Redis('redis://127.0.0.1:")
    s = redis.stats()
    assert s.connected >= 1 and s.breaker == "closed"
    masked = repr(admit.Redis("redis://user:secret@127.0.0.1:1/0",
                              connect_timeout=0.05))
    assert "secret" not in masked and "***" in masked


def test_bad_url_is_config_error():
    with pytest.raises(admit.ConfigError):
        admit.Redis("redis://127.0.0.1:notaport/0")
    with pytest.raises(TypeError, match="url"):
        admit.Redis(6379)


def test_token_bucket_in_redis(redis):
    lim = admit.RedisLimiter(redis, "5/second", name=name())
    got = [lim.try_acquire("u") for _ in range(6)]
    assert [d.allowed for d in got] == [True] * 5 + [False]
    assert [d.remaining for d in got[:5]] == [4, 3, 2, 1, 0]
    assert got[0].limit == 5
    assert 0 < got[5].retry_after <= 0.2
    # Another key is independent; reset forgets.
    assert lim.hit("other")
    lim.reset("u")
    assert lim.try_acquire("u").remaining == 4


def test_fixed_and_sliding_windows_in_redis(redis):
    for algo in ("fixed_window", "sliding_window"):
        lim = admit.RedisLimiter(redis, "3/hour", algorithm=algo,
                                 name=name())
        assert [lim.hit("k") for _ in range(4)] == [True, True, True, False]
        d = lim.peek("k")
        assert d.remaining == 0
        lim.refund("k", 1)
        assert lim.hit("k")


def test_two_connections_share_the_limit(redis, redis_url):
    n = name()
    other = admit.Redis(redis_url, prefix=redis.prefix, command_timeout=2.0)
    try:
        a = admit.RedisLimiter(redis, "4/minute", name=n)
        b = admit.RedisLimiter(other, "4/minute", name=n)
        got = [a.hit("k"), b.hit("k"), a.hit("k"), b.hit("k"), a.hit("k"),
               b.hit("k")]
        assert got == [True, True, True, True, False, False]
    finally:
        other.close()


async def test_async_decisions_and_wait(redis):
    lim = admit.RedisLimiter(redis, "20/second", burst=2, name=name())
    d = await lim.try_acquire_async("a")
    assert d.allowed and d.remaining == 1
    await lim.try_acquire_async("a")
    assert not (await lim.try_acquire_async("a")).allowed
    start = time.monotonic()
    await lim.wait_and_acquire("a", timeout=3.0)
    assert time.monotonic() - start >= 0.03
    with pytest.raises(admit.RateLimited) as e:
        await lim.wait_and_acquire("a", timeout=0.001)
    assert e.value.retry_after > 0.001


async def test_many_concurrent_async_callers_exact(redis):
    lim = admit.RedisLimiter(redis, "250/hour", name=name())
    res = await asyncio.gather(*[lim.try_acquire_async("hot")
                                 for _ in range(400)])
    assert sum(d.allowed for d in res) == 250


async def test_loop_keeps_ticking_while_1000_wait():
    """A heartbeat task keeps ticking every 10 ms while 1,000 callers wait
    on a Redis limiter: no wait runs on the event loop's thread."""
    url = os.environ.get("ADMIT_TEST_REDIS_URL")
    if not url:
        pytest.skip("ADMIT_TEST_REDIS_URL is not set")
    redis = admit.Redis(url, prefix="hb" + uuid.uuid4().hex[:6],
                        command_timeout=5.0)
    lim = admit.RedisLimiter(redis, "500/second", burst=50, name=name())
    hb = Heartbeat()
    start = time.monotonic()
    res = await asyncio.gather(*[lim.wait_and_acquire("vendor",
                                                      timeout=30)
                                 for _ in range(1000)])
    elapsed = time.monotonic() - start
    await hb.stop()
    redis.close()
    assert all(d.allowed for d in res)
    # 1,000 units at 500/s after a burst of 50 take about 1.9 s; the loop
    # ticked all along (a blocked loop would show one long gap instead).
    # The ticks are late when the loop is busy serving 1,000 tasks on a
    # loaded machine, so the bounds are loose: at least one tick per 100 ms
    # on average, and never a gap of half a second.
    assert elapsed >= 1.5
    assert len(hb.gaps) >= elapsed / 0.1
    assert max(hb.gaps) < 0.5


async def test_cancelled_async_decision_is_refunded(redis):
    lim = admit.RedisLimiter(redis, "3/hour", name=name())
    tasks = [asyncio.ensure_future(lim.try_acquire_async("k"))
             for _ in range(3)]
    await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # The tries may not have reached Redis yet (remaining is 3 then too):
    # wait for the three refunds, which follow them.
    await eventually(lambda: lim.stats().refunds == 3)
    assert lim.stats().refunds == 3
    assert lim.peek("k").remaining == 3


async def test_decision_set_before_a_cancel_is_refunded_once(redis):
    # The decision reaches the future, then the task is cancelled before it
    # resumes (CPython gh-90155): the task itself gives the unit back, and
    # nothing else does.
    from admit._loop import notifier
    lim = admit.RedisLimiter(redis, "3/hour", name=name())
    n = notifier(asyncio.get_running_loop())
    t = asyncio.ensure_future(lim.try_acquire_async("k"))
    await asyncio.sleep(0)          # submitted; the hold is released next
    await asyncio.sleep(0)
    for _ in range(500):            # block the loop until the reply is in
        time.sleep(0.01)
        n._on_readable()            # resolves the future, task not resumed
        if n.native_pending == 0:
            break
    assert n.native_pending == 0
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    await eventually(lambda: lim.stats().refunds == 1)
    await asyncio.sleep(0.05)
    assert lim.stats().refunds == 1
    assert lim.peek("k").remaining == 3


async def test_pending_tries_keep_their_limiter_alive(redis):
    # The I/O thread still uses the C limiter until Redis answered, so a
    # pending try holds the limiter object even when nothing else does
    # (a cancelled caller, a dropped limiter); the last reply lets it go.
    import gc
    import weakref
    from admit._loop import notifier
    loop = asyncio.get_running_loop()
    n = notifier(loop)
    lim = admit.RedisLimiter(redis, "1000/hour", name=name())
    ref = weakref.ref(lim)
    futs = [loop.create_future() for _ in range(50)]
    for i, f in enumerate(futs):
        assert lim._submit(b"k%d" % i, 1, f, n.addr, lim) == 0
        n.native_pending += 1
    del lim
    gc.collect()
    assert ref() is not None
    for f in futs:
        f.cancel()                  # the callers gave up
    await eventually(lambda: n.native_pending == 0)
    assert n.native_pending == 0
    gc.collect()
    assert ref() is None


async def test_random_cancels_leave_exact_accounting(redis):
    # 600 tasks on 3 keys of 150 units, a third cancelled at random moments:
    # the units still taken are exactly those of the tasks that returned
    # an admitting decision.
    import random
    rng = random.Random(6)
    lim = admit.RedisLimiter(redis, "150/hour", name=name())
    tasks = [asyncio.ensure_future(lim.try_acquire_async("k%d" % (i % 3)))
             for i in range(600)]
    for _ in range(200):
        await asyncio.sleep(rng.choice((0, 0, 0.0005)))
        rng.choice(tasks).cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    kept = {}
    for i, r in enumerate(results):
        if isinstance(r, admit.Decision) and r.allowed:
            kept[i % 3] = kept.get(i % 3, 0) + 1
        else:
            assert isinstance(r, (admit.Decision, asyncio.CancelledError))
    # Every try has completed, and every refund it caused too.
    from admit._loop import notifier
    n = notifier(asyncio.get_running_loop())
    await eventually(lambda: n.native_pending == 0 and not n.waiters)
    assert n.native_pending == 0 and not n.waiters
    for j in range(3):
        assert lim.peek("k%d" % j).remaining == 150 - kept.get(j, 0), j


def test_a_closed_loop_leaves_nothing_held(redis):
    # A loop that holds the connection's calls and is closed before its
    # iteration ends (its release never runs) must not hold other loops'.
    lim = admit.RedisLimiter(redis, "5/hour", name=name())
    dead = asyncio.new_event_loop()
    redis._hold(dead)
    dead.close()

    async def one():
        return await asyncio.wait_for(lim.try_acquire_async("k"), 5)

    assert asyncio.run(one()).allowed
    assert dead not in redis._held_loops


def test_pause_blocks_everyone(redis):
    lim = admit.RedisLimiter(redis, "100/second", name=name())
    assert lim.hit("vendor")
    until = lim.pause("vendor", 2.0)
    assert until > time.time() + 1.5
    d = lim.try_acquire("vendor")
    assert not d.allowed and 1.5 < d.retry_after <= 2.0
    assert lim.hit("other")


def test_reserve_and_settle(redis):
    lim = admit.RedisLimiter(redis, "1000/hour", name=name())
    r, d = lim.reserve("tokens", 300)
    assert r.reserved and d.remaining == 700
    d = lim.settle("tokens", r, 120)
    assert d.remaining == 880


def test_failure_policies_when_redis_is_down():
    # A port nobody listens on.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = admit.Redis("redis://127.0.0.1:%d/0" % port, connect_timeout=0.05,
                    command_timeout=0.05)
    try:
        closed = admit.RedisLimiter(r, "1/s", name="c")
        with pytest.raises(admit.BackendUnavailable):
            closed.try_acquire("k")
        opened = admit.RedisLimiter(r, "1/s", name="o",
                                    on_failure="fail_open")
        assert opened.hit("k") and opened.hit("k")
        local = admit.RedisLimiter(r, "2/minute", name="f",
                                   on_failure="fallback")
        assert [local.hit("k") for _ in range(3)] == [True, True, False]
        assert local.stats().fallback == 3
    finally:
        r.close()


async def test_close_with_abandoned_tries_in_flight(redis_url):
    # Cancelled callers leave tries in flight that nobody awaits; close()
    # frees the connection first (completing them), then the limiter.
    from admit._loop import notifier
    n = notifier(asyncio.get_running_loop())
    for _ in range(5):
        r = admit.Redis(redis_url, prefix="t" + uuid.uuid4().hex[:8])
        lim = admit.RedisLimiter(r, "1000/hour", name=name())
        tasks = [asyncio.ensure_future(lim.try_acquire_async("k%d" % i))
                 for i in range(200)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)      # submitted, and the hold released
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        r.close()
        await eventually(lambda: n.native_pending == 0)
        assert n.native_pending == 0


def test_closed_connection_refuses(redis_url):
    r = admit.Redis(redis_url, command_timeout=2.0)
    lim = admit.RedisLimiter(r, "1/s", name=name())
    r.close()
    r.close()
    with pytest.raises(admit.Closed):
        lim.try_acquire("k")
    with pytest.raises(admit.Closed):
        asyncio.run(lim.try_acquire_async("k"))
    with pytest.raises(admit.Closed):
        asyncio.run(lim.wait_and_acquire("k", timeout=1))
    with pytest.raises(admit.Closed):
        r.ping()


def test_redis_constructor_bad_arguments(redis):
    with pytest.raises(TypeError, match="redis"):
        admit.RedisLimiter("redis://x", "1/s")
    with pytest.raises(ValueError, match="on_failure"):
        admit.RedisLimiter(redis, "1/s", on_failure="maybe")
    with pytest.raises(ValueError, match="name"):
        admit.RedisLimiter(redis, "1/s", name="a{b}")
    with pytest.raises(ValueError, match="rate"):
        admit.RedisLimiter(redis, "soon")
    with pytest.raises(ValueError, match="connect_timeout"):
        admit.Redis("redis://127.0.0.1:1/0", connect_timeout=-1)
    with pytest.raises(ValueError, match="connections"):
        admit.Redis("redis://127.0.0.1:1/0", connections=0)
    with pytest.raises(ValueError, match="capacity"):
        admit.RedisSemaphore(redis, 0)
    with pytest.raises(ValueError, match="on_failure"):
        admit.RedisSemaphore(redis, 1, on_failure="fallback")
    with pytest.raises(ValueError, match="cost"):
        admit.RedisLimiter(redis, "1/s", name=name()).try_acquire("k", 0)
    with pytest.raises(ValueError, match="exceeds the burst"):
        admit.RedisLimiter(redis, "1/s", name=name()).try_acquire("k", 2)


def test_redis_semaphore(redis):
    sem = admit.RedisSemaphore(redis, 2, lease=5, name=name())
    a = sem.try_acquire("gpu")
    b = sem.try_acquire("gpu")
    assert a is not None and b is not None and a.id != b.id
    assert sem.try_acquire("gpu") is None
    assert sem.held("gpu") == 2
    assert sem.release(a)
    assert not sem.release(a)
    c = sem.acquire_blocking("gpu", timeout=1)
    assert sem.held("gpu") == 2
    c2 = sem.renew(c)
    assert c2.expires_at_ns >= c.expires_at_ns
    sem.release(b)
    sem.release(c2)
    assert sem.held("gpu") == 0


def test_fastapi_on_redis_shares_across_apps(redis_url):
    """Two apps (two "pods") with the same Redis share one limit; the
    switch from local is the backend setting alone."""
    def app_with(limit):
        app = FastAPI(dependencies=[Depends(limit)])

        @app.get("/chat")
        async def chat():
            return {"ok": True}
        return app

    ns = name()
    a = TestClient(app_with(RateLimit("3/hour", backend=redis_url,
                                      namespace=ns)))
    # The second "pod" passes its own connection (a longer timeout).
    conn = admit.Redis(redis_url, command_timeout=2.0)
    b = TestClient(app_with(RateLimit("3/hour", backend=conn,
                                      namespace=ns)))
    h = {"X-Forwarded-For": "ignored"}
    codes = [a.get("/chat", headers=h).status_code,
             b.get("/chat").status_code,
             a.get("/chat").status_code,
             b.get("/chat").status_code]
    assert codes == [200, 200, 200, 429]
    r = b.get("/chat")
    assert r.headers["RateLimit-Policy"] == '"default";q=3;w=3600'
    # An hour window aligned to the server's clock: the wait is the rest
    # of it, and Retry-After agrees with the RateLimit field's t.
    assert r.headers["RateLimit"].startswith('"default";r=0;t=')
    t = int(r.headers["RateLimit"].rsplit("=", 1)[1])
    assert 1 <= t <= 3600
    assert r.headers["Retry-After"] == str(t)


def test_fastapi_on_redis_denial_reports_state_after_refund(redis_url):
    rl = RateLimit(
        {"free": "3/hour"}, routes={"/chat": "10/hour"},
        backend=admit.Redis(redis_url, command_timeout=2.0),
        namespace=name())
    app = FastAPI(dependencies=[Depends(rl)])

    @app.get("/chat")
    async def chat():
        return {"ok": True}

    c = TestClient(app)
    fields = re.compile(r'"endpoint";r=(\d+);t=(\d+), "free";r=(\d+);'
                        r't=(\d+)$')
    for left in (2, 1, 0):
        r = c.get("/chat")
        assert r.status_code == 200
        m = fields.match(r.headers["RateLimit"])
        assert (int(m[1]), int(m[3])) == (7 + left, left)
    # The endpoint passed (6 left), the tier denied: after the refund the
    # endpoint has 7 left, and the header says so.
    r = c.get("/chat")
    assert r.status_code == 429
    m = fields.match(r.headers["RateLimit"])
    assert m is not None, r.headers["RateLimit"]
    assert (int(m[1]), int(m[3])) == (7, 0)
    assert 1 <= int(m[2]) <= 3600 and 1 <= int(m[4]) <= 3600
    assert r.headers["Retry-After"] == m[4]
    # One refund, applied by Redis through the asynchronous path.
    stats = [lim.stats() for lim in rl._backend.limiters.values()]
    assert sum(s.refunds for s in stats) == 1
    assert sum(s.refunds_lost for s in stats) == 0


async def test_close_refuses_while_decisions_are_in_flight(redis_url):
    r = admit.Redis(redis_url, command_timeout=2.0)
    lim = admit.RedisLimiter(r, "100/s", name=name())
    task = asyncio.ensure_future(lim.try_acquire_async("k"))
    await asyncio.sleep(0)
    if not task.done():
        with pytest.raises(admit.AdmitError) as e:
            r.close()
        assert e.value.name == "ADMIT_EBUSY"
    assert (await task).allowed
    r.close()
    assert "closed" in repr(r)


def test_fastapi_redis_down_fail_closed_is_503_fail_open_passes():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    down = admit.Redis("redis://127.0.0.1:%d/0" % port, connect_timeout=0.05,
                       command_timeout=0.05)

    def app_with(limit):
        app = FastAPI(dependencies=[Depends(limit)])

        @app.get("/chat")
        async def chat():
            return {"ok": True}
        return app

    closed = TestClient(app_with(RateLimit("3/hour", backend=down)))
    r = closed.get("/chat")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert r.json() == {"detail": "Rate limiter unavailable"}
    opened = TestClient(app_with(RateLimit("3/hour", backend=down,
                                           on_failure="fail_open")))
    assert [opened.get("/chat").status_code for _ in range(5)] == [200] * 5
    down.close()


def test_limiter_stats_count_refunds_and_pauses(redis):
    lim = admit.RedisLimiter(redis, "5/hour", name=name())
    s = lim.stats()
    assert (s.refunds, s.refunds_lost, s.pauses, s.pauses_lost) == \
        (0, 0, 0, 0)
    assert lim.try_acquire("k", 2).remaining == 3
    lim.refund("k", 2)
    lim.pause("other", 1.0)
    s = lim.stats()
    assert isinstance(s, admit.RedisLimiterStats)
    assert (s.refunds, s.refunds_lost, s.pauses, s.pauses_lost) == \
        (1, 0, 1, 0)
    assert s._fields[-4:] == ("refunds", "refunds_lost", "pauses",
                              "pauses_lost")
    assert "refunds_lost" in admit.RedisLimiterStats.__doc__


def _no_executor(loop):
    def refuse(*a, **kw):
        raise AssertionError("run_in_executor was used")
    loop.run_in_executor = refuse


async def test_refund_async_uses_no_thread_and_applies(redis):
    lim = admit.RedisLimiter(redis, "3/hour", name=name())
    _no_executor(asyncio.get_running_loop())
    for _ in range(3):
        assert (await lim.try_acquire_async("k")).allowed
    await lim.refund_async("k", 2)
    assert lim.peek("k").remaining == 2
    s = lim.stats()
    assert (s.refunds, s.refunds_lost) == (1, 0)
    with pytest.raises(ValueError):
        await lim.refund_async("k", 0)
    with pytest.raises(ValueError):
        await lim.refund_async("", 1)


async def test_cancelled_refund_async_still_completes(redis):
    lim = admit.RedisLimiter(redis, "3/hour", name=name())
    for _ in range(3):
        assert lim.try_acquire("k").allowed
    t = asyncio.ensure_future(lim.refund_async("k", 3))
    await asyncio.sleep(0)          # the refund is queued to Redis
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    await eventually(lambda: lim.stats().refunds == 1)
    assert lim.stats().refunds == 1
    assert lim.peek("k").remaining == 3


async def test_cancelled_decision_refund_uses_no_thread(redis):
    lim = admit.RedisLimiter(redis, "3/hour", name=name())
    _no_executor(asyncio.get_running_loop())
    tasks = [asyncio.ensure_future(lim.try_acquire_async("k"))
             for _ in range(3)]
    await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await eventually(lambda: lim.stats().refunds == 3)
    assert lim.stats().refunds == 3
    assert lim.peek("k").remaining == 3


def _stopped_redis():
    pid = os.environ.get("ADMIT_TEST_REDIS_PID")
    if not pid:
        pytest.skip("ADMIT_TEST_REDIS_PID is not set")
    return int(pid)


async def test_refunds_to_a_hung_redis_never_block_the_loop(redis_url):
    """Refunds while Redis is SIGSTOPped: the loop keeps ticking, each
    refund fails within the command timeout, and each is counted lost."""
    pid = _stopped_redis()
    r = admit.Redis(redis_url, prefix="t" + uuid.uuid4().hex[:8],
                    command_timeout=0.3, breaker_failures=1000)
    lim = admit.RedisLimiter(r, "50/hour", name=name())
    assert lim.try_acquire("k", 20).allowed
    os.kill(pid, signal.SIGSTOP)
    try:
        hb = Heartbeat()
        res = await asyncio.gather(*[lim.refund_async("k", 1)
                                     for _ in range(20)],
                                   return_exceptions=True)
        await hb.stop()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert len(res) == 20
    assert all(isinstance(e, admit.BackendUnavailable) for e in res), res
    s = lim.stats()
    assert (s.refunds, s.refunds_lost) == (0, 20)
    assert len(hb.gaps) >= 10
    assert max(hb.gaps) < 0.25
    r.close()
