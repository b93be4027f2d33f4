"""The semaphore from threads and asyncio: FIFO and priorities, bounded
queues, timeouts, and no permit ever lost to a cancellation."""

import asyncio
import random
import threading
import time

import pytest

import admit


def test_try_release_and_stats():
    s = admit.Semaphore(2, max_waiters=3)
    assert s.try_acquire() and s.try_acquire()
    assert not s.try_acquire()
    assert s.in_use == 2 and s.locked()
    s.release()
    s.release()
    with pytest.raises(ValueError, match="without a permit"):
        s.release()
    st = s.stats()
    assert st == admit.SemaphoreStats(2, 0, 0, 2, 0, 0, 0)
    assert repr(s) == ("Semaphore(capacity=2, max_waiters=3, in_use=0, "
                       "waiting=0)")


def test_blocking_acquire_across_threads():
    s = admit.Semaphore(1)
    s.acquire_blocking(timeout=1)
    with pytest.raises(admit.QueueTimeout):
        s.acquire_blocking(timeout=0.02)
    threading.Timer(0.05, s.release).start()
    start = time.monotonic()
    s.acquire_blocking(timeout=5)
    assert time.monotonic() - start >= 0.04
    s.release()


def test_no_waiting_rejects():
    s = admit.Semaphore(1, max_waiters=0)
    s.acquire_blocking(timeout=1)
    with pytest.raises(admit.Rejected):
        s.acquire_blocking(timeout=1)
    s.release()


async def test_async_fifo_order():
    s = admit.Semaphore(1)
    await s.acquire(timeout=1)
    order = []

    async def waiter(i):
        async with s.slot(timeout=5):
            order.append(i)
            await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(20)]
    await asyncio.sleep(0.01)
    assert s.waiting == 20
    s.release()
    await asyncio.gather(*tasks)
    assert order == list(range(20))
    assert s.in_use == 0


async def test_async_priorities():
    s = admit.Semaphore(1)
    await s.acquire(timeout=1)
    order = []

    async def waiter(name, prio):
        await s.acquire(timeout=5, priority=prio)
        order.append(name)
        s.release()

    tasks = [asyncio.ensure_future(waiter("low1", 3)),
             asyncio.ensure_future(waiter("low2", 3)),
             asyncio.ensure_future(waiter("high", 0))]
    await asyncio.sleep(0.01)
    s.release()
    await asyncio.gather(*tasks)
    assert order == ["high", "low1", "low2"]


async def test_async_timeout_and_full_queue():
    s = admit.Semaphore(1, max_waiters=1)
    await s.acquire(timeout=1)
    with pytest.raises(admit.QueueTimeout):
        await s.acquire(timeout=0)
    t = asyncio.ensure_future(s.acquire(timeout=0.05))
    await asyncio.sleep(0.01)
    with pytest.raises(admit.Rejected):
        await s.acquire(timeout=1)
    with pytest.raises(admit.QueueTimeout) as e:
        await t
    assert isinstance(e.value, TimeoutError)
    st = s.stats()
    assert (st.in_use, st.waiting, st.rejected) == (1, 0, 1)
    s.release()


async def test_release_from_thread_wakes_loop():
    s = admit.Semaphore(1)
    await s.acquire(timeout=1)
    start = time.monotonic()
    threading.Timer(0.03, s.release).start()
    await s.acquire(timeout=5)
    assert time.monotonic() - start >= 0.025
    s.release()


async def test_cancel_after_grant_hands_permit_on():
    # gh-90155: the permit is granted, then the task is cancelled before it
    # runs again. The permit must go to the next waiter, not be lost.
    s = admit.Semaphore(1)
    await s.acquire(timeout=1)
    a = asyncio.ensure_future(s.acquire(timeout=5))
    b = asyncio.ensure_future(s.acquire(timeout=5))
    await asyncio.sleep(0.01)
    s.release()           # granted to a, in C, right now
    a.cancel()            # ...but a is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await a
    await asyncio.wait_for(b, 1)   # b got the permit a gave back
    assert s.in_use == 1
    s.release()
    assert s.in_use == 0


@pytest.mark.parametrize("spins", [0, 1, 2, 3, 5])
async def test_cancel_racing_grant_at_every_step(spins):
    # The grant reaches the loop after 0..5 loop iterations; the
    # cancellation lands before or after it: either way nothing leaks.
    s = admit.Semaphore(1)
    await s.acquire(timeout=1)
    a = asyncio.ensure_future(s.acquire(timeout=5))
    b = asyncio.ensure_future(s.acquire(timeout=5))
    await asyncio.sleep(0.01)
    s.release()
    for _ in range(spins):
        await asyncio.sleep(0)
    a.cancel()
    try:
        await a
        s.release()       # a won before the cancellation landed
    except asyncio.CancelledError:
        pass
    await asyncio.wait_for(b, 1)
    s.release()
    assert s.stats().in_use == 0 and s.stats().waiting == 0


async def test_capacity_change_wakes_waiters():
    s = admit.Semaphore(1)
    await s.acquire(timeout=1)
    t = [asyncio.ensure_future(s.acquire(timeout=5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    s.capacity = 4
    await asyncio.gather(*t)
    assert s.in_use == 4 and s.capacity == 4
    for _ in range(4):
        s.release()


async def test_decorator_releases_on_error():
    s = admit.Semaphore(1)

    @s.limit(timeout=1)
    async def boom():
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        await boom()
    assert s.in_use == 0


async def test_ten_thousand_tasks_random_cancel_and_timeout():
    """10,000 tasks acquire a semaphore of 8 with random timeouts while
    random tasks are cancelled at random moments: every permit is returned
    and the queue is empty at the end."""
    rng = random.Random(1234)
    s = admit.Semaphore(8)
    held = 0
    peak = 0
    finished = {"ok": 0, "timeout": 0}

    async def worker():
        nonlocal held, peak
        try:
            async with s.slot(timeout=rng.choice([0, 0.001, 0.005, 0.05,
                                                  0.5, admit.FOREVER])):
                held += 1
                peak = max(peak, held)
                try:
                    await asyncio.sleep(rng.random() * 0.001)
                finally:
                    held -= 1
                finished["ok"] += 1
        except admit.QueueTimeout:
            finished["timeout"] += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(10_000)]
    # Cancel random tasks at random moments, including just after a
    # release (when grants are in flight through the completion queue).
    cancelled = 0
    while not all(t.done() for t in tasks):
        await asyncio.sleep(rng.random() * 0.002)
        for t in rng.sample(tasks, 25):
            if not t.done():
                t.cancel()
                cancelled += 1
    results = await asyncio.gather(*tasks, return_exceptions=True)
    n_cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert all(r is None or isinstance(r, asyncio.CancelledError)
               for r in results)
    assert finished["ok"] + finished["timeout"] + n_cancelled == 10_000
    assert finished["ok"] > 0 and finished["timeout"] > 0 and n_cancelled > 0
    assert peak <= 8
    st = s.stats()
    assert st.in_use == 0
    assert st.waiting == 0


def test_blocking_waits_release_the_gil():
    """A thread blocked in a C wait must not hold the GIL: the main thread
    keeps running Python meanwhile."""
    s = admit.Semaphore(1)
    s.acquire_blocking(timeout=1)
    t = admit.TokenBucket("1/minute")
    t.hit()
    errors = []

    def waiter():
        try:
            s.acquire_blocking(timeout=0.3)
        except admit.QueueTimeout:
            pass
        except Exception as e:  # pragma: no cover
            errors.append(e)

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.02)
    spins = 0
    start = time.monotonic()
    while th.is_alive() and time.monotonic() - start < 2:
        spins += 1
    th.join()
    assert errors == []
    # Hundreds of thousands of spins while the other thread waited in C;
    # with the GIL held there would be only a handful (switch interval).
    assert spins > 1000
    s.release()
