"""The native hit callables (bindings/python/fastpath.c): the commonest
calls skip cffi, so they must answer exactly as the Python methods do, count
every call once, and keep the C object alive as long as they are held."""

import gc
import threading
import weakref

import pytest

import admit


def _is_native(f):
    return type(f).__module__ == "admit._native"


def test_real_clock_limiters_get_native_hits():
    assert _is_native(admit.KeyedLimiter("1/s").hit)
    assert _is_native(admit.TokenBucket("1/s").hit)
    assert _is_native(admit.FixedWindow("1/s").hit)
    # A Python clock's callback needs the GIL: the closures are kept there.
    clock = admit.ManualClock(1)
    assert not _is_native(admit.KeyedLimiter("1/s", clock=clock).hit)
    assert not _is_native(admit.TokenBucket("1/s", clock=clock).hit)


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window",
                                       "sliding_window"])
def test_native_keyed_hit_matches_try_acquire(algorithm):
    # Two limiters fed the same calls, one through hit, one through
    # try_acquire (never native): same answers, call by call.
    a = admit.KeyedLimiter("5/hour", algorithm=algorithm)
    b = admit.KeyedLimiter("5/hour", algorithm=algorithm)
    keys = ["u%d" % (i % 7) for i in range(60)] + ["é", "é".encode(), "é"]
    got = [a.hit(k) for k in keys]
    want = [b.try_acquire(k).allowed for k in keys]
    assert got == want
    assert got.count(True) == 8 * 5 - 2   # "é" and its UTF-8 are one key


def test_native_keyed_hit_other_shapes_and_errors():
    k = admit.KeyedLimiter({"free": "2/hour", "pro": "3/hour"}, max_keys=3,
                           max_key_len=4)
    assert k.hit("a") and k.hit("a", 1, "free") and not k.hit("a")
    assert k.hit("a", tier="pro") and k.hit("a", cost=2, tier="pro")
    with pytest.raises(TypeError, match="key must be str or bytes"):
        k.hit(12)
    with pytest.raises(ValueError, match="key must not be empty"):
        k.hit("")
    with pytest.raises(ValueError, match="key is too long"):
        k.hit("12345")
    with pytest.raises(UnicodeEncodeError):
        k.hit("\udc80")
    with pytest.raises(TypeError, match="unexpected keyword"):
        k.hit("a", colour="red")
    assert k.hit(b"b")                    # a third key: ("a", "pro") is one
    with pytest.raises(admit.Rejected):
        k.hit("c")
    # A refused key is counted once, not again by the fallback.
    assert k.stats().full == 1


def test_native_limiter_hit_costs():
    t = admit.TokenBucket("5/hour")
    assert t.hit() and t.hit(2) and t.hit(cost=1) and t.hit(1)
    assert not t.hit()
    for bad in (0, -1, 2**64, 6):
        with pytest.raises(ValueError, match="cost"):
            t.hit(bad)
    for bad in (1.5, "1", None):
        with pytest.raises(TypeError, match="cost must be an int"):
            t.hit(bad)


def test_native_hit_keeps_the_c_object_alive():
    k = admit.KeyedLimiter("1/hour")
    hit = k.hit
    ref = weakref.ref(k)
    del k
    assert ref() is None                  # freed by reference count alone
    gc.collect()
    assert hit("x") is True and hit("x") is False  # its C table lives on
    del hit
    gc.collect()


def test_native_hit_is_documented_and_named():
    k = admit.KeyedLimiter("1/s")
    assert k.hit.__doc__ == admit.KeyedLimiter.hit.__doc__
    assert k.hit.__name__ == "hit"
    assert "admit native hit" in repr(k.hit)


def test_native_hit_from_threads_is_exact():
    k = admit.KeyedLimiter("1000/hour", algorithm="fixed_window")
    counts = []

    def run():
        hit = k.hit
        counts.append(sum(hit(b"shared") for _ in range(2000)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 1000
