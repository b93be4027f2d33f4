"""Rates, quotas, limiters and keyed limiters, on a simulated clock where
the answer must be exact."""

import asyncio
import threading
import time

import pytest

import admit
from admit import Algorithm, Decision, Quota, Rate


# -- rates and quotas ------------------------------------------------------

@pytest.mark.parametrize("spec,rates", [
    ("10/minute", [Rate(10, 60 * 10**9)]),
    ("10 per minute", [Rate(10, 60 * 10**9)]),
    ("100/s", [Rate(100, 10**9)]),
    ("5/10 seconds", [Rate(5, 10 * 10**9)]),
    ("5 per 10 seconds", [Rate(5, 10 * 10**9)]),
    ("10/minute;100/hour", [Rate(10, 60 * 10**9), Rate(100, 3600 * 10**9)]),
    ("10/minute,100/hour", [Rate(10, 60 * 10**9), Rate(100, 3600 * 10**9)]),
    ("1/day", [Rate(1, 86400 * 10**9)]),
])
def test_parse_limits_notation(spec, rates):
    assert admit.parse_rates(spec) == rates


@pytest.mark.parametrize("spec", ["", "ten/minute", "10/fortnight",
                                  "0/minute", "10/minute;", "-1/s",
                                  ";".join(["1/s"] * 9)])
def test_parse_rejects(spec):
    with pytest.raises(ValueError, match="rate"):
        admit.parse_rates(spec)


def test_parse_error_names_offset():
    with pytest.raises(ValueError, match="offset 3"):
        admit.parse_rates("10/fortnight")


def test_rate_format_and_helpers():
    assert str(Rate(10, 60 * 10**9)) == "10/1m"
    assert repr(Rate.per(5, 10)) == "Rate('5/10s')"
    assert Rate.per(5, 0.5) == Rate(5, 500_000_000)
    assert Rate(3, 2 * 10**9).period == 2.0


def test_quota_repr_and_equality():
    q = Quota("10/minute;100/hour", "sliding_window")
    assert repr(q) == "Quota('10/1m;100/1h', SLIDING_WINDOW)"
    assert q == Quota([Rate(10, 60 * 10**9), Rate(100, 3600 * 10**9)],
                      Algorithm.SLIDING_WINDOW)
    assert q.spec == "10/1m;100/1h"
    tb = Quota("10/s", burst=3)
    assert repr(tb) == "Quota('10/1s', TOKEN_BUCKET, burst=[3])"
    assert tb.burst == (3,)


# -- token bucket ----------------------------------------------------------

def test_token_bucket_exact(clock):
    t = admit.TokenBucket("10/second", burst=5, clock=clock)
    got = [t.try_acquire() for _ in range(6)]
    assert [d.allowed for d in got] == [True] * 5 + [False]
    assert [d.remaining for d in got] == [4, 3, 2, 1, 0, 0]
    assert got[0] == Decision(True, 5, 4, 0, 100_000_000, 0)
    assert got[5].retry_after_ns == 100_000_000
    assert got[5].retry_after == pytest.approx(0.1)
    assert got[5].reset_after_ns == 500_000_000
    assert not got[5]
    clock.advance(0.099)
    assert not t.hit()
    clock.advance(0.001)
    assert t.hit()
    assert not t.hit()


def test_token_bucket_cost_and_too_big(clock):
    t = admit.TokenBucket("10/second", clock=clock)
    assert t.try_acquire(10).remaining == 0
    assert not t.try_acquire(1)
    with pytest.raises(ValueError, match="cost 11 exceeds the burst 10"):
        t.try_acquire(11)
    with pytest.raises(ValueError, match="cost"):
        t.hit(0)
    with pytest.raises(TypeError, match="cost"):
        t.try_acquire("1")
    with pytest.raises(ValueError, match="cost"):
        t.try_acquire(-1)


def test_multi_rate_all_or_nothing(clock):
    t = admit.TokenBucket("2/second;3/minute", clock=clock)
    assert t.hit() and t.hit()
    d = t.try_acquire()
    assert not d.allowed and d.limiting == 0
    clock.advance(1)
    assert t.hit()
    d = t.try_acquire()
    assert not d.allowed and d.limiting == 1 and d.limit == 3


def test_reset_and_peek(clock):
    t = admit.TokenBucket("3/second", clock=clock)
    for _ in range(3):
        t.hit()
    assert t.peek().remaining == 0
    t.reset()
    assert t.peek().remaining == 3


def test_fixed_window_edges(clock):
    # The clock starts at 1000 s, a multiple of 10 s: a window begins.
    f = admit.FixedWindow("3/10 seconds", clock=clock)
    assert [f.hit() for _ in range(4)] == [True, True, True, False]
    d = f.try_acquire()
    assert d.retry_after_ns == 10 * 10**9
    clock.advance(9.999)
    assert not f.hit()
    clock.advance(0.001)
    assert [f.hit() for _ in range(4)] == [True, True, True, False]


def test_sliding_window_weights_previous(clock):
    s = admit.SlidingWindow("3/minute", clock=clock)
    # 1000 s is 40 s into a 60 s window.
    assert [s.hit() for _ in range(4)] == [True, True, True, False]
    # In the next window the previous one counts 3 * (1 - elapsed/60), so
    # one more fits 20 s into it: 40 s from now.
    d = s.try_acquire()
    assert d.retry_after_ns == 40 * 10**9
    clock.advance(39.999)
    assert not s.hit()
    clock.advance(0.001)
    assert s.hit()
    assert not s.hit()


def test_limiter_reprs():
    assert repr(admit.TokenBucket("100/s", burst=20)) == \
        "TokenBucket('100/1s', burst=20)"
    assert repr(admit.TokenBucket("100/s")) == "TokenBucket('100/1s')"
    assert repr(admit.FixedWindow("10/minute")) == "FixedWindow('10/1m')"
    assert repr(admit.SlidingWindow("10/minute;100/hour")) == \
        "SlidingWindow('10/1m;100/1h')"
    assert repr(admit.Limiter("1/s", "fixed")) == \
        "Limiter('1/1s', FIXED_WINDOW)"


def test_limiter_threads_share_exactly():
    t = admit.TokenBucket("1000/hour")
    got = []

    def worker():
        got.append(sum(t.hit() for _ in range(500)))

    th = [threading.Thread(target=worker) for _ in range(4)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    assert sum(got) == 1000


def test_acquire_blocking_timeout_and_wait():
    t = admit.TokenBucket("20/second", burst=1)
    assert t.hit()
    with pytest.raises(admit.RateLimited) as e:
        t.acquire_blocking(timeout=0.01)
    assert e.value.retry_after == pytest.approx(0.05, abs=0.01)
    start = time.monotonic()
    t.acquire_blocking(timeout=1)
    assert time.monotonic() - start >= 0.03


# -- asyncio ---------------------------------------------------------------

async def test_async_acquire_waits_its_turn():
    t = admit.TokenBucket("50/second", burst=1)
    start = time.monotonic()
    for _ in range(4):
        await t.acquire(timeout=1)
    # Three waits of 20 ms each, served in order.
    assert time.monotonic() - start >= 0.055


async def test_async_acquire_refuses_what_cannot_fit():
    t = admit.TokenBucket("1/minute")
    await t.acquire(timeout=0)
    with pytest.raises(admit.RateLimited) as e:
        await t.acquire(timeout=5)
    assert 59 < e.value.retry_after <= 60
    assert e.value.decision.allowed is False


async def test_async_cancel_returns_reservation():
    t = admit.TokenBucket("10/second", burst=1)
    assert t.hit()
    task = asyncio.ensure_future(t.acquire(timeout=1))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancelled waiter's place was given back: the next unit is due
    # 100 ms after the first, not 200 ms.
    d = t.try_acquire()
    assert not d.allowed
    assert d.retry_after < 0.1


async def test_async_window_waits_for_next_window(clock):
    f = admit.FixedWindow([Rate(2, 50_000_000)])
    for _ in range(5):
        d = await f.acquire(timeout=1)
        assert d.allowed
    # A wait that cannot fit fails at once, without sleeping (so the
    # simulated clock is enough).
    f2 = admit.FixedWindow("1/minute", clock=clock)
    await f2.acquire(timeout=1)
    with pytest.raises(admit.RateLimited) as e:
        await f2.acquire(timeout=1)
    assert e.value.retry_after == 20.0


async def test_decorator():
    t = admit.TokenBucket("100/second", burst=2)
    calls = []

    @t.limit(timeout=1)
    async def work(x):
        calls.append(x)
        return x * 2

    assert await work(3) == 6
    assert await work(4) == 8
    assert calls == [3, 4]
    with pytest.raises(TypeError, match="coroutine"):
        t.limit(timeout=1)(lambda: None)


async def test_timeout_is_required():
    t = admit.TokenBucket("1/s")
    with pytest.raises(TypeError, match="'timeout'"):
        await t.acquire()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="timeout is required"):
        await t.acquire(timeout=None)
    await t.acquire(timeout=admit.FOREVER)


# -- keyed -----------------------------------------------------------------

def test_keyed_tiers_independent(clock):
    k = admit.KeyedLimiter({"free": "2/minute", "pro": "5/minute"},
                           algorithm="fixed_window", clock=clock)
    assert [k.hit("u1", tier="free") for _ in range(3)] == \
        [True, True, False]
    assert k.hit("u2", tier="free")
    assert [k.hit("u1", tier="pro") for _ in range(6)] == \
        [True] * 5 + [False]
    d = k.try_acquire("u1", tier="free")
    assert d == Decision(False, 2, 0, 20 * 10**9, 20 * 10**9, 0)
    assert k.tiers["pro"] == Quota("5/minute", "fixed_window")
    assert k.quota("free").rates == (Rate(2, 60 * 10**9),)
    assert repr(k) == ("KeyedLimiter({'free': '2/1m', 'pro': '5/1m'}, "
                       "algorithm=FIXED_WINDOW)")


def test_keyed_bytes_str_refund_reset(clock):
    k = admit.KeyedLimiter("2/minute", clock=clock)
    assert k.hit("é")
    assert k.hit("é".encode())
    assert not k.hit("é")
    assert k.refund("é")
    assert k.hit("é")
    assert k.peek("é").remaining == 0
    assert k.reset("é")
    assert not k.reset("é")
    assert not k.refund("nobody")
    assert k.peek("é").remaining == 2
    assert len(k) == 0


def test_fast_paths_take_no_detour(monkeypatch):
    """The commonest calls never reach the general methods: hit with a str
    or bytes key, try_acquire with a str or bytes key and a tier by name,
    and a plain limiter's hit and try_acquire."""
    slow = []

    def counting(name, method):
        def wrapper(*args, **kw):
            slow.append(name)
            return method(*args, **kw)
        return wrapper

    K, L = admit.KeyedLimiter, admit.Limiter
    for cls, name in ((K, "hit"), (K, "try_acquire"), (L, "hit"),
                      (L, "try_acquire")):
        monkeypatch.setattr(cls, name, counting(cls.__name__ + "." + name,
                                                getattr(cls, name)))
    k = admit.KeyedLimiter({"free": "3/minute", "pro": "5/minute"},
                           algorithm="fixed_window")
    assert k.hit("u") and k.hit(b"u")
    d = k.try_acquire(b"u", tier="free")
    assert (d.allowed, d.remaining) == (True, 0)
    assert not k.try_acquire("u")
    assert k.try_acquire("u", tier="pro").remaining == 4
    t = admit.TokenBucket("2/minute")
    assert t.hit() and t.try_acquire().remaining == 0
    assert slow == []
    # Anything else goes the general way, with its checks.
    assert k.hit("v", 2) and k.hit("w", tier="pro")
    assert k.try_acquire("x", tier=1).remaining == 4
    assert k.hit(bytearray(b"y"))
    with pytest.raises(TypeError, match="key must be str or bytes"):
        k.try_acquire(12)
    assert slow == ["KeyedLimiter.hit", "KeyedLimiter.hit",
                    "KeyedLimiter.try_acquire", "KeyedLimiter.hit",
                    "KeyedLimiter.try_acquire"]


def test_fast_decisions_read_like_any_decision(clock):
    import copy
    import pickle
    k = admit.KeyedLimiter("2/minute", algorithm="fixed_window", clock=clock)
    t = admit.FixedWindow("2/minute", clock=clock)
    for lim, args in ((k, ("u",)), (t, ())):
        d = lim.try_acquire(*args)
        assert d == Decision(True, 2, 1, 0, 20 * 10**9, 0)
        assert bool(d) and d.allowed is True and d.retry_after == 0
        assert repr(d) == ("Decision(allowed=True, limit=2, remaining=1, "
                           "retry_after=0, reset_after=20)")
        lim.try_acquire(*args)
        d = lim.try_acquire(*args)
        assert not d and d.allowed is False
        assert (d.limit, d.remaining, d.retry_after_ns, d.reset_after_ns,
                d.limiting) == (2, 0, 20 * 10**9, 20 * 10**9, 0)
        for c in (pickle.loads(pickle.dumps(d)), copy.copy(d)):
            assert type(c) is Decision and c == d
        assert isinstance(d, Decision) and d != Decision(True, 2, 0)


def test_keyed_bad_tier_key_cost():
    k = admit.KeyedLimiter({"free": "2/minute"})
    with pytest.raises(ValueError, match="tier 'gold' is not one of 'free'"):
        k.hit("u", tier="gold")
    with pytest.raises(TypeError, match="tier"):
        k.hit("u", tier=1.5)
    with pytest.raises(TypeError, match="key must be str or bytes"):
        k.hit(12)
    with pytest.raises(ValueError, match="key must not be empty"):
        k.try_acquire("")
    with pytest.raises(ValueError, match="exceeds the burst 2"):
        k.try_acquire("u", 3)
    small = admit.KeyedLimiter("1/s", max_key_len=4)
    with pytest.raises(ValueError, match="key is too long"):
        small.hit("12345")


def test_keyed_bounded_memory():
    k = admit.KeyedLimiter("1/hour", max_keys=64)
    for i in range(64):
        assert k.hit("k%d" % i)
    with pytest.raises(admit.Rejected):
        k.hit("one-too-many")
    s = k.stats()
    assert s.keys == 64 and s.max_keys == 64 and s.full == 1


async def test_keyed_async_acquire():
    k = admit.KeyedLimiter("20/second", burst=1)
    await k.acquire("a", timeout=1)
    start = time.monotonic()
    await k.acquire("a", timeout=1)
    assert time.monotonic() - start >= 0.04
    await k.acquire("b", timeout=0)
    with pytest.raises(admit.RateLimited) as e:
        await k.acquire("b", timeout=0.001)
    assert e.value.retry_after > 0.001

    @k.limit(lambda user: user, timeout=1)
    async def per_user(user):
        return user

    assert await per_user("c") == "c"


def test_python_clock_from_threads_does_not_deadlock(clock):
    # A ManualClock is read through a Python callback that takes the GIL;
    # with several threads using the limiter the C locks and the GIL must
    # never wait on each other.
    k = admit.KeyedLimiter("1000/second", clock=clock)
    t = admit.TokenBucket("10/second;100/minute", clock=clock)
    stop = threading.Event()

    def worker(i):
        while not stop.is_set():
            k.hit("k%d" % (i % 3))
            k.peek("k1")
            k.refund("k2")
            t.try_acquire()
            clock.advance(0.001)

    th = [threading.Thread(target=worker, args=(i,), daemon=True)
          for i in range(4)]
    for x in th:
        x.start()
    time.sleep(0.5)
    stop.set()
    for x in th:
        x.join(5)
    assert not any(x.is_alive() for x in th)
