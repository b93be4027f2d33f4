"""The vendor-call guard from asyncio: stage order, refusals, retries,
cancellation at every stage, vendor 429 pauses (across "pods" through
Redis) and the httpx wrapper."""

import asyncio
import os
import random
import signal
import time
import uuid

import httpx
import pytest

import admit
from admit import Outcome
from admit.fastapi import GuardedClient
from loop_helpers import Heartbeat, eventually


async def ok(x=1):
    await asyncio.sleep(0)
    return x


async def test_call_passes_stages_and_records():
    sem = admit.Semaphore(2)
    local = admit.TokenBucket("100/second", burst=5)
    g = admit.Guard("vendor", local=local, semaphore=sem)
    assert await g.call(ok, 7, queue_timeout=1) == 7
    res = await asyncio.gather(*[g.call(ok, i, queue_timeout=5)
                                 for i in range(20)])
    assert res == list(range(20))
    m = g.metrics()
    assert m.admitted == 21 and m.succeeded == 21 and m.in_flight == 0
    assert m.call_time["count"] == 21
    assert sem.in_use == 0
    assert repr(g) == ("Guard('vendor', stages=local+semaphore, "
                       "call_timeout=30, retries=2)")


async def test_semaphore_is_taken_last_and_held_for_the_call():
    sem = admit.Semaphore(1)
    g = admit.Guard("v", semaphore=sem)
    inside = []

    async def work(i):
        inside.append(sem.in_use)
        await asyncio.sleep(0.01)
        return i

    res = await asyncio.gather(*[g.call(work, i, queue_timeout=5)
                                 for i in range(5)])
    assert res == list(range(5)) and inside == [1] * 5
    assert sem.in_use == 0


async def test_refusals_are_immediate_when_the_wait_cannot_fit():
    local = admit.TokenBucket("1/minute")
    g = admit.Guard("v", local=local)
    assert await g.call(ok, queue_timeout=1) == 1
    start = time.monotonic()
    with pytest.raises(admit.RateLimited) as e:
        await g.call(ok, queue_timeout=1)
    assert time.monotonic() - start < 0.5
    assert 59 < e.value.retry_after <= 60
    assert g.metrics().rejected_local == 1


async def test_breaker_stage():
    b = admit.CircuitBreaker(window_calls=2, min_calls=2)
    g = admit.Guard("v", breaker=b, retries=0)

    async def boom():
        raise RuntimeError("vendor down")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await g.call(boom, queue_timeout=1)
    with pytest.raises(admit.CircuitOpen):
        await g.call(ok, queue_timeout=1)
    assert g.metrics().breaker_state == "open"


async def test_retries_with_backoff_then_success():
    g = admit.Guard("v", retries=3, backoff_base=0.001, backoff_max=0.01)
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "done"

    assert await g.call(flaky, queue_timeout=1) == "done"
    assert len(calls) == 3
    m = g.metrics()
    assert (m.failed, m.succeeded, m.retries) == (2, 1, 2)


async def test_retries_run_out_and_call_timeout():
    g = admit.Guard("v", retries=1, backoff_base=0.001, backoff_max=0.002)

    async def slow():
        await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        await g.call(slow, queue_timeout=1, call_timeout=0.02)
    m = g.metrics()
    assert m.call_timeouts == 2 and m.retries == 1
    with pytest.raises(ValueError, match="call_timeout"):
        await g.call(ok, queue_timeout=1, call_timeout=0)
    with pytest.raises(ValueError, match="retries"):
        await g.call(ok, queue_timeout=1, retries=-1)


async def test_queue_time_is_one_budget_across_retries():
    # One token per second: the first attempt passes at once, the first
    # retry waits about 1 s for the next token, leaving about 0.6 s of the
    # 1.6 s queue time; the second retry would need about 1 s more, so it
    # is refused at once instead of queueing again with a fresh 1.6 s.
    local = admit.TokenBucket("1/second", burst=1)
    g = admit.Guard("v", local=local, retries=3, backoff_base=0.001,
                    backoff_max=0.002)
    calls = []

    async def down():
        calls.append(time.monotonic())
        raise ConnectionError("reset")

    start = time.monotonic()
    with pytest.raises(admit.RateLimited) as e:
        await g.call(down, queue_timeout=1.6)
    took = time.monotonic() - start
    assert len(calls) == 2
    assert isinstance(e.value.__cause__, ConnectionError)
    assert 0.4 < e.value.retry_after <= 1.0
    assert 0.9 < took < 1.6
    m = g.metrics()
    # The refused second retry was started (and counted) before the
    # local stage refused it.
    assert (m.started, m.admitted, m.failed, m.retries, m.rejected_local) \
        == (3, 2, 2, 2, 1)


async def test_queue_timeout_and_full_queue_are_not_retried():
    sem = admit.Semaphore(1, max_waiters=1)
    g = admit.Guard("v", semaphore=sem, retries=3, backoff_base=0.001,
                    backoff_max=0.002)
    held = await g.enter(queue_timeout=1)
    start = time.monotonic()
    with pytest.raises(admit.QueueTimeout):
        await g.call(ok, queue_timeout=0.2)
    assert 0.15 < time.monotonic() - start < 0.6
    waiter = asyncio.ensure_future(g.call(ok, 5, queue_timeout=5))
    await asyncio.sleep(0.05)
    with pytest.raises(admit.Rejected):
        await g.call(ok, queue_timeout=5)
    m = g.metrics()
    assert (m.retries, m.queue_timeouts, m.rejected_semaphore) == (0, 1, 1)
    held.leave()
    assert await waiter == 5
    assert sem.in_use == 0 and sem.waiting == 0


async def test_cancellation_at_every_stage_gives_everything_back():
    rng = random.Random(3)
    sem = admit.Semaphore(2)
    local = admit.TokenBucket("2000/second", burst=20)
    g = admit.Guard("v", local=local, semaphore=sem)

    async def work():
        await asyncio.sleep(rng.random() * 0.003)

    tasks = [asyncio.ensure_future(g.call(work, queue_timeout=rng.choice(
        [0.001, 0.01, 0.5]))) for _ in range(1000)]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.001)
        for t in rng.sample(tasks, 10):
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sem.in_use == 0 and sem.waiting == 0
    m = g.metrics()
    assert m.in_flight == 0 and m.waiting == 0


async def test_enter_and_leave_permit():
    sem = admit.Semaphore(1)
    g = admit.Guard("v", semaphore=sem)
    async with await g.enter(queue_timeout=1) as p:
        assert sem.in_use == 1 and p.attempt == 0
        assert p.call_timeout == 30
    assert sem.in_use == 0
    p = g.enter_blocking(queue_timeout=1)
    p.leave(Outcome.FAILURE)
    p.leave()
    assert g.metrics().failed == 1


async def test_vendor_limited_pauses_the_guard():
    g = admit.Guard("v", retries=0)

    async def limited():
        raise admit.VendorLimited(retry_after=30)

    with pytest.raises(admit.VendorLimited):
        await g.call(limited, queue_timeout=1)
    m = g.metrics()
    assert m.vendor_limited == 1 and m.pauses == 1
    assert 25 < m.paused_for <= 30
    with pytest.raises(admit.RateLimited) as e:
        await g.call(ok, queue_timeout=1)
    assert e.value.retry_after > 25


def test_guard_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        admit.Guard("")
    with pytest.raises(TypeError, match="breaker"):
        admit.Guard("v", breaker=1)
    with pytest.raises(TypeError, match="local"):
        admit.Guard("v", local=admit.Semaphore(1))
    with pytest.raises(TypeError, match="global_limiter"):
        admit.Guard("v", global_limiter=admit.TokenBucket("1/s"))
    with pytest.raises(TypeError, match="semaphore"):
        admit.Guard("v", semaphore=3)
    with pytest.raises(ValueError, match="global_key"):
        admit.Guard("v", global_key="k")
    with pytest.raises(ValueError, match="priority"):
        admit.Guard("v", priority=9)
    with pytest.raises(ValueError, match="call_timeout"):
        admit.Guard("v", call_timeout=0)
    with pytest.raises(ValueError, match="retries"):
        admit.Guard("v", retries=-1)
    with pytest.raises(TypeError, match="retry_on"):
        admit.Guard("v", retry_on="failure")
    with pytest.raises(ValueError, match="retry_ratio"):
        admit.Guard("v", retry_ratio=0)


# -- with Redis ------------------------------------------------------------

def _redis_or_skip():
    url = os.environ.get("ADMIT_TEST_REDIS_URL")
    if not url:
        pytest.skip("ADMIT_TEST_REDIS_URL is not set")
    return url


async def test_global_stage_in_redis_and_pause_across_pods():
    url = _redis_or_skip()
    prefix = "g" + uuid.uuid4().hex[:8]
    pods = []
    for _ in range(2):
        r = admit.Redis(url, prefix=prefix, command_timeout=2.0)
        lim = admit.RedisLimiter(r, "1000/second", name="vendor")
        pods.append((r, admit.Guard("vendor", global_limiter=lim,
                                    global_key="openai",
                                    semaphore=admit.Semaphore(4))))
    (r1, g1), (r2, g2) = pods
    res = await asyncio.gather(*[g.call(ok, i, queue_timeout=2)
                                 for i in range(10) for g in (g1, g2)])
    assert sorted(res) == sorted(list(range(10)) * 2)
    # Pod 1 sees a 429 with Retry-After: 2 s; pod 2 pauses too, through
    # Redis, and refuses at once what cannot wait that long.
    await g1.pause_async(2.0)
    start = time.monotonic()
    with pytest.raises(admit.RateLimited) as e:
        await g2.call(ok, queue_timeout=0.5, retries=0)
    assert time.monotonic() - start < 0.4
    assert e.value.retry_after > 1.0
    assert g2.metrics().rejected_global == 1
    for r, _ in pods:
        r.close()


async def test_global_refusal_is_not_retried():
    url = _redis_or_skip()
    r = admit.Redis(url, prefix="g" + uuid.uuid4().hex[:8],
                    command_timeout=2.0)
    lim = admit.RedisLimiter(r, "1/minute", name="vendor")
    g = admit.Guard("vendor", global_limiter=lim, global_key="k",
                    retries=3, backoff_base=0.001, backoff_max=0.002)
    assert await g.call(ok, queue_timeout=1) == 1
    start = time.monotonic()
    with pytest.raises(admit.RateLimited) as e:
        await g.call(ok, queue_timeout=1)
    assert time.monotonic() - start < 0.5
    assert 50 < e.value.retry_after <= 60
    m = g.metrics()
    assert (m.started, m.retries, m.rejected_global) == (2, 0, 1)
    r.close()


async def test_guarded_httpx_client_turns_429_into_pause():
    hits = {"n": 0}

    def handler(request):
        hits["n"] += 1
        if hits["n"] == 1:
            return httpx.Response(429, headers={"Retry-After": "1"})
        return httpx.Response(200, json={"ok": True})

    g = admit.Guard("vendor", retries=2, backoff_base=0.001,
                    backoff_max=0.002)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                 base_url="http://vendor") as client:
        gc = GuardedClient(client, g, queue_timeout=5)
        start = time.monotonic()
        r = await gc.post("/v1/chat", json={"q": 1})
        assert r.status_code == 200 and r.json() == {"ok": True}
        # The retry waited out the vendor's pause.
        assert time.monotonic() - start >= 0.9
    m = g.metrics()
    assert (m.vendor_limited, m.pauses, m.succeeded) == (1, 1, 1)
    assert hits["n"] == 2
    with pytest.raises(TypeError, match="guard"):
        GuardedClient(client, None)


def _no_executor(loop):
    def refuse(*a, **kw):
        raise AssertionError("run_in_executor was used")
    loop.run_in_executor = refuse


def _redis_pid_or_skip():
    pid = os.environ.get("ADMIT_TEST_REDIS_PID")
    if not pid:
        pytest.skip("ADMIT_TEST_REDIS_PID is not set")
    return int(pid)


async def test_pause_async_without_redis_uses_no_thread():
    g = admit.Guard("v")
    _no_executor(asyncio.get_running_loop())
    await g.pause_async(30)
    m = g.metrics()
    assert m.pauses == 1 and 25 < m.paused_for <= 30
    with pytest.raises(admit.RateLimited):
        await g.call(ok, queue_timeout=1)
    with pytest.raises(ValueError):
        await g.pause_async(0)


async def test_pause_async_with_redis_uses_no_thread_and_counts():
    url = _redis_or_skip()
    prefix = "g" + uuid.uuid4().hex[:8]
    r1 = admit.Redis(url, prefix=prefix, command_timeout=2.0)
    r2 = admit.Redis(url, prefix=prefix, command_timeout=2.0)
    l1 = admit.RedisLimiter(r1, "1000/second", name="vendor")
    l2 = admit.RedisLimiter(r2, "1000/second", name="vendor")
    g1 = admit.Guard("vendor", global_limiter=l1, global_key="openai")
    _no_executor(asyncio.get_running_loop())
    await g1.pause_async(5.0)
    # Paused in Redis by the time pause_async returned.
    d = l2.peek("openai")
    assert not d.allowed and 4.0 < d.retry_after <= 5.0
    s = l1.stats()
    assert (s.pauses, s.pauses_lost) == (1, 0)
    # The limiter's own asynchronous pause returns the server's end time.
    until = await l2.pause_async("other", 3.0)
    assert abs(until - (time.time() + 3.0)) < 1.0
    assert l2.stats().pauses == 1
    assert not l1.peek("other").allowed
    r1.close()
    r2.close()


async def test_cancelled_pause_async_still_pauses_everyone():
    url = _redis_or_skip()
    prefix = "g" + uuid.uuid4().hex[:8]
    r1 = admit.Redis(url, prefix=prefix, command_timeout=2.0)
    r2 = admit.Redis(url, prefix=prefix, command_timeout=2.0)
    l1 = admit.RedisLimiter(r1, "1000/second", name="vendor")
    l2 = admit.RedisLimiter(r2, "1000/second", name="vendor")
    g1 = admit.Guard("vendor", global_limiter=l1, global_key="k")
    t = asyncio.ensure_future(g1.pause_async(5.0))
    await asyncio.sleep(0)          # the pause is queued to Redis
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    await eventually(lambda: l1.stats().pauses == 1)
    assert l1.stats().pauses == 1
    assert not l2.peek("k").allowed
    r1.close()
    r2.close()


async def test_pause_and_vendor_quota_to_a_hung_redis_never_block():
    """With Redis SIGSTOPped, Guard.pause_async and vendor_quota pause this
    process at once and never block the loop: a heartbeat keeps ticking,
    the Redis pauses fail within the command timeout and are counted."""
    url = _redis_or_skip()
    pid = _redis_pid_or_skip()
    r = admit.Redis(url, prefix="g" + uuid.uuid4().hex[:8],
                    command_timeout=0.3, breaker_failures=1000)
    lim = admit.RedisLimiter(r, "1000/second", name="vendor")
    g = admit.Guard("vendor", global_limiter=lim, global_key="k",
                    quota_low_water=5)
    assert await g.call(ok, queue_timeout=1) == 1
    os.kill(pid, signal.SIGSTOP)
    try:
        hb = Heartbeat()
        start = time.monotonic()
        assert g.vendor_quota(3, 20.0) is True
        assert time.monotonic() - start < 0.1
        with pytest.raises(admit.BackendUnavailable):
            await g.pause_async(30.0)
        # The local pause holds anyway.
        with pytest.raises(admit.RateLimited):
            await g.call(ok, queue_timeout=1, retries=0)
        await eventually(lambda: lim.stats().pauses_lost == 2, seconds=2.0)
        await hb.stop()
    finally:
        os.kill(pid, signal.SIGCONT)
    s = lim.stats()
    assert (s.pauses, s.pauses_lost) == (0, 2)
    assert g.metrics().pauses == 2
    assert len(hb.gaps) >= 10
    assert max(hb.gaps) < 0.25
    r.close()
