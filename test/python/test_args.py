"""Bad arguments to every public constructor raise TypeError or ValueError
with a message naming the argument; every public name has a docstring;
reprs show the configuration."""

import inspect

import pytest

import admit
import admit.fastapi as af

BAD = [
    # (callable, args, kwargs, exception, text the message must contain)
    (admit.Rate.per, (0, 1), {}, ValueError, "count"),
    (admit.Rate.per, (1, 0), {}, ValueError, "seconds"),
    (admit.Rate.per, (1, "1"), {}, TypeError, "seconds"),
    (admit.parse_rates, (10,), {}, TypeError, "rate"),
    (admit.parse_rates, ("x",), {}, ValueError, "rate"),
    (admit.Quota, ("1/s",), {"algorithm": 3}, TypeError, "algorithm"),
    (admit.Quota, ("1/s",), {"algorithm": "leaky"}, ValueError, "algorithm"),
    (admit.Quota, ("1/s",), {"burst": 0}, ValueError, "burst"),
    (admit.Quota, ("1/s",), {"burst": "2"}, TypeError, "burst"),
    (admit.Quota, ("1/s;2/m",), {"burst": [1]}, ValueError, "burst"),
    (admit.Quota, ("1/s",), {"algorithm": "fixed", "burst": 2}, ValueError,
     "burst"),
    (admit.Quota, (None,), {}, TypeError, "rate"),
    (admit.ManualClock, ("0",), {}, TypeError, "start"),
    (admit.ManualClock, (0,), {}, ValueError, "start"),
    (admit.TokenBucket, (5,), {}, TypeError, "rate"),
    (admit.TokenBucket, ("5/s",), {"burst": -1}, ValueError, "burst"),
    (admit.TokenBucket, ("5/s",), {"clock": 1}, TypeError, "clock"),
    (admit.TokenBucket, (admit.Quota("1/s", "fixed"),), {}, ValueError,
     "TOKEN_BUCKET"),
    (admit.FixedWindow, ("five per second",), {}, ValueError, "rate"),
    (admit.FixedWindow, (admit.Quota("1/s"),), {}, ValueError,
     "FIXED_WINDOW"),
    (admit.SlidingWindow, ([],), {}, TypeError, "rate"),
    (admit.SlidingWindow, (admit.Quota("1/s"),), {}, ValueError,
     "SLIDING_WINDOW"),
    (admit.Limiter, ("1/s",), {"algorithm": "x"}, ValueError, "algorithm"),
    (admit.KeyedLimiter, ({},), {}, ValueError, "quotas"),
    (admit.KeyedLimiter, ({1: "1/s"},), {}, TypeError, "tier names"),
    (admit.KeyedLimiter, ({"a": 5},), {}, TypeError, "quotas['a']"),
    (admit.KeyedLimiter, ("1/s",), {"max_keys": 0}, ValueError, "max_keys"),
    (admit.KeyedLimiter, ("1/s",), {"max_key_len": "8"}, TypeError,
     "max_key_len"),
    (admit.Semaphore, (0,), {}, ValueError, "capacity"),
    (admit.Semaphore, (1.5,), {}, TypeError, "capacity"),
    (admit.Semaphore, (True,), {}, TypeError, "capacity"),
    (admit.Semaphore, (1 << 62,), {}, ValueError, "capacity"),
    (admit.Semaphore, (1,), {"max_waiters": -1}, ValueError, "max_waiters"),
    (admit.CircuitBreaker, (), {"failure_rate": 0}, ValueError,
     "failure_rate"),
    (admit.CircuitBreaker, (), {"failure_rate": "x"}, TypeError,
     "failure_rate"),
    (admit.CircuitBreaker, (), {"window": 1, "window_calls": 2}, ValueError,
     "window"),
    (admit.CircuitBreaker, (), {"window_calls": 0}, ValueError,
     "window_calls"),
    (admit.CircuitBreaker, (), {"open_for": -1}, ValueError, "open_for"),
    (admit.CircuitBreaker, (), {"slow_call": 0}, ValueError, "slow_call"),
    (admit.AdmissionController, (0,), {}, ValueError, "max_in_flight"),
    (admit.AdmissionController, (1, -1), {}, ValueError, "backlog"),
    (admit.AdmissionController, (1, 1), {"adaptive": "pid"}, ValueError,
     "adaptive"),
    (admit.AdmissionController, (1, 1), {"shed_target": 0}, ValueError,
     "shed_target"),
    (admit.AdmissionController, (1, 1), {"shedding": 1}, TypeError,
     "shedding"),
    (admit.AdmissionController, (1, 1), {"aimd_backoff": -1}, ValueError,
     "aimd_backoff"),
    (admit.AdmissionController, (1, 1), {"min_limit": 5, "max_limit": 2},
     ValueError, "min_limit"),
    (admit.Redis, (), {"url": 1}, TypeError, "url"),
    (admit.Redis, (), {"prefix": 1}, TypeError, "prefix"),
    (admit.Redis, (), {"command_timeout": 0}, ValueError, "command_timeout"),
    (admit.Redis, (), {"max_queue": 0}, ValueError, "max_queue"),
    (admit.RedisLimiter, (None, "1/s"), {}, TypeError, "redis"),
    (admit.RedisSemaphore, (None, 1), {}, TypeError, "redis"),
    (af.RateLimit, ("1/s",), {"tier": 5}, TypeError, "tier"),
    (af.RateLimit, ("1/s",), {"namespace": "a{b}"}, ValueError, "namespace"),
    (af.RateLimit, ("1/s",), {"routes": ["/x"]}, TypeError, "routes"),
    (af.by_header, (5,), {}, TypeError, "name"),
    (af.forwarded_ip, (0,), {}, ValueError, "trusted_hops"),
    (af.AdmissionMiddleware, (None,), {"retry_after": 0}, ValueError,
     "retry_after"),
    (af.AdmissionMiddleware, (None,), {"priority": 1}, TypeError,
     "priority"),
    (af.AdmissionMiddleware, (None,), {"controller": 1}, TypeError,
     "controller"),
    (af.add_health_routes, (None,), {"ready_path": 1}, TypeError,
     "ready_path"),
]


@pytest.mark.parametrize("fn,args,kwargs,exc,text", BAD,
                         ids=["%s-%d" % (b[0].__qualname__, i)
                              for i, b in enumerate(BAD)])
def test_bad_arguments(fn, args, kwargs, exc, text):
    with pytest.raises(exc) as e:
        fn(*args, **kwargs)
    assert text in str(e.value)


def test_bad_method_arguments():
    t = admit.TokenBucket("1/s")
    with pytest.raises(TypeError, match="timeout"):
        t.acquire_blocking(timeout="1")
    with pytest.raises(ValueError, match="timeout"):
        t.acquire_blocking(timeout=-1)
    with pytest.raises(ValueError, match="timeout must not be NaN"):
        t.acquire_blocking(timeout=float("nan"))
    s = admit.Semaphore(1)
    with pytest.raises(ValueError, match="priority"):
        s.slot(timeout=1, priority=8)
    with pytest.raises(TypeError, match="timeout"):
        s.slot(timeout=None)
    b = admit.CircuitBreaker()
    with pytest.raises(ValueError):
        b.leave(b.enter(), 9, 0)
    c = admit.ManualClock()
    with pytest.raises(ValueError, match="seconds"):
        c.advance(-1)


def _public(module):
    for name in getattr(module, "__all__", []):
        yield name, getattr(module, name)


@pytest.mark.parametrize("module", [admit, af], ids=["admit",
                                                     "admit.fastapi"])
def test_every_public_name_has_a_docstring(module):
    missing = []
    for name, obj in _public(module):
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                f = member.fget if isinstance(member, property) else member
                if (inspect.isfunction(f) or isinstance(member, property)) \
                        and not (f.__doc__ or "").strip():
                    missing.append("%s.%s" % (name, attr))
    assert missing == []


def test_package_is_typed():
    import os
    assert os.path.isfile(os.path.join(os.path.dirname(admit.__file__),
                                       "py.typed"))
