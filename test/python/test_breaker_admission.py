"""The circuit breaker on a simulated clock, and the admission controller
from threads and asyncio (priorities, backlog, cancellation)."""

import asyncio
import random

import pytest

import admit
from admit import Outcome


def test_breaker_opens_and_recovers(clock):
    b = admit.CircuitBreaker(failure_rate=0.5, window_calls=4, min_calls=4,
                             open_for=10, half_open_probes=2, clock=clock)
    assert b.state == "closed"
    for o in (Outcome.SUCCESS, Outcome.FAILURE, Outcome.SUCCESS):
        b.leave(b.enter(), o, 0.01)
    assert b.state == "closed"
    b.leave(b.enter(), Outcome.FAILURE, 0.01)
    assert b.state == "open"
    with pytest.raises(admit.CircuitOpen):
        b.enter()
    clock.advance(10)
    assert b.state == "half_open"
    t1, t2 = b.enter(), b.enter()
    with pytest.raises(admit.CircuitOpen):
        b.enter()
    b.leave(t1, Outcome.SUCCESS, 0.01)
    b.leave(t2, Outcome.SUCCESS, 0.01)
    assert b.state == "closed"
    s = b.stats()
    assert (s.opened, s.half_opened, s.closed, s.rejected) == (1, 1, 1, 2)
    assert repr(b) == ("CircuitBreaker(failure_rate=0.5, open_for=10, "
                       "window_calls=4, state=closed)")


def test_breaker_vendor_limited_and_cancelled_do_not_count(clock):
    b = admit.CircuitBreaker(window_calls=2, min_calls=2, clock=clock)
    for _ in range(5):
        b.leave(b.enter(), Outcome.VENDOR_LIMITED, 0)
        b.leave(b.enter(), Outcome.CANCELLED, 0)
    assert b.state == "closed"
    assert b.stats().calls == 0


async def test_breaker_call_records_outcomes(clock):
    b = admit.CircuitBreaker(window_calls=3, min_calls=3, clock=clock)

    @b.protect
    async def flaky(fail):
        if fail == "timeout":
            raise TimeoutError()
        if fail:
            raise RuntimeError("boom")
        return "ok"

    assert await flaky(False) == "ok"
    with pytest.raises(RuntimeError):
        await flaky(True)
    with pytest.raises(TimeoutError):
        await flaky("timeout")
    assert b.state == "open"
    with pytest.raises(admit.CircuitOpen):
        await flaky(False)
    b.reset()
    assert b.state == "closed"
    b.trip()
    assert b.state == "open"


def test_outcome_of():
    assert admit.outcome_of(None) is Outcome.SUCCESS
    assert admit.outcome_of(asyncio.CancelledError()) is Outcome.CANCELLED
    assert admit.outcome_of(TimeoutError()) is Outcome.TIMEOUT
    assert admit.outcome_of(ValueError()) is Outcome.FAILURE
    e = RuntimeError()
    e.admit_outcome = Outcome.VENDOR_LIMITED
    assert admit.outcome_of(e) is Outcome.VENDOR_LIMITED


def test_admission_blocking():
    a = admit.AdmissionController(2, 1)
    p1 = a.enter_blocking(timeout=1)
    p2 = a.enter_blocking(timeout=1)
    with pytest.raises(admit.QueueTimeout):
        a.enter_blocking(timeout=0.02)
    p1.leave()
    p1.leave()          # a second leave does nothing
    p3 = a.enter_blocking(timeout=0)
    with pytest.raises(admit.Rejected):
        a.enter_blocking(timeout=0)
    p2.leave(Outcome.FAILURE)
    p3.leave()
    s = a.stats()
    assert (s.in_flight, s.admitted, s.completed, s.errors) == (0, 3, 3, 1)
    assert s.latency["count"] == 3
    assert s.latency["buckets"][-1] == (float("inf"), 3)


async def test_admission_async_priorities_and_backlog():
    a = admit.AdmissionController(1, 3, shedding=False)
    first = await a.enter(timeout=1)
    order = []

    async def req(name, prio):
        async with a.admit(timeout=5, priority=prio):
            order.append(name)

    tasks = [asyncio.ensure_future(req("b1", 2)),
             asyncio.ensure_future(req("b2", 2)),
             asyncio.ensure_future(req("health", 0))]
    await asyncio.sleep(0.01)
    assert a.stats().waiting == 3
    with pytest.raises(admit.Rejected):
        await a.enter(timeout=1, priority=2)
    first.leave()
    await asyncio.gather(*tasks)
    assert order == ["health", "b1", "b2"]
    s = a.stats()
    assert (s.in_flight, s.waiting, s.rejected) == (0, 0, 1)


async def test_admission_async_timeout_and_cancel_leak_nothing():
    rng = random.Random(7)
    a = admit.AdmissionController(3, 5000, shedding=False)
    done = {"ok": 0, "timeout": 0}

    async def req():
        try:
            async with a.admit(timeout=rng.choice([0.001, 0.01, 0.1, 1])):
                await asyncio.sleep(rng.random() * 0.002)
            done["ok"] += 1
        except admit.QueueTimeout:
            done["timeout"] += 1

    tasks = [asyncio.ensure_future(req()) for _ in range(2000)]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.001)
        for t in rng.sample(tasks, 10):
            t.cancel()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in res)
    assert done["ok"] + done["timeout"] + cancelled == 2000
    s = a.stats()
    assert s.in_flight == 0 and s.waiting == 0
    assert s.admitted == s.completed


def test_admission_set_limit_and_repr():
    a = admit.AdmissionController(2, 4, adaptive="aimd")
    a.limit = 5
    assert a.limit == 5
    assert repr(a) == ("AdmissionController(max_in_flight=2, backlog=4, "
                       "adaptive='aimd', in_flight=0, waiting=0)")
