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


# Dunder methods that are part of a class's public behaviour.
_PUBLIC_DUNDERS = ("__call__", "__repr__")
# Values exported by name: their documentation is the string after them in
# the source (FOREVER in _util.py, __version__ in __init__.py).
_VALUES = {"FOREVER", "__version__"}


def _members(cls):
    """(name, function or property) of what a class defines itself and a
    user reaches: public methods, properties, static and class methods,
    ``__call__`` and ``__repr__``."""
    for attr, member in vars(cls).items():
        if attr.startswith("_") and attr not in _PUBLIC_DUNDERS:
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property) or inspect.isfunction(member):
            yield attr, member


@pytest.mark.parametrize("module", [admit, af], ids=["admit",
                                                     "admit.fastapi"])
def test_every_public_name_has_a_docstring(module):
    missing = []
    for name, obj in _public(module):
        if name in _VALUES:
            continue
        assert inspect.isclass(obj) or inspect.isfunction(obj), name
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in _members(obj):
                if attr == "__repr__":
                    continue    # documented by what it prints
                f = member.fget if isinstance(member, property) else member
                if not (f.__doc__ or "").strip():
                    missing.append("%s.%s" % (name, attr))
    assert missing == []


@pytest.mark.parametrize("module", [admit, af], ids=["admit",
                                                     "admit.fastapi"])
def test_every_public_callable_has_type_hints(module):
    missing = []

    def check(label, f):
        sig = inspect.signature(f)
        for pname, param in sig.parameters.items():
            if pname not in ("self", "cls") and \
                    param.annotation is inspect.Parameter.empty:
                missing.append("%s(%s)" % (label, pname))
        if sig.return_annotation is inspect.Signature.empty:
            missing.append("%s -> ?" % label)

    for name, obj in _public(module):
        if inspect.isfunction(obj):
            check(name, obj)
        elif inspect.isclass(obj) and not issubclass(obj, tuple):
            init = vars(obj).get("__init__")
            if inspect.isfunction(init):
                check(name + ".__init__", init)
            for attr, member in _members(obj):
                f = member.fget if isinstance(member, property) else member
                check("%s.%s" % (name, attr), f)
    assert missing == []


def test_modules_are_documented_and_export_their_public_names():
    import importlib
    import pkgutil
    for m in pkgutil.iter_modules(admit.__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module("admit." + m.name)
        assert (mod.__doc__ or "").strip(), m.name
    # admit.fastapi is used as a module: everything public is in __all__.
    public = [n for n, v in vars(af).items() if not n.startswith("_") and
              (inspect.isclass(v) or inspect.isfunction(v)) and
              v.__module__ == af.__name__]
    assert sorted(set(public) - set(af.__all__)) == []


def test_fast_paths_are_documented():
    for lim in (admit.TokenBucket("1/s"), admit.KeyedLimiter("1/s")):
        for name in ("hit", "try_acquire"):
            f = getattr(lim, name)
            assert f.__doc__ == getattr(type(lim), name).__doc__, name
            assert (f.__doc__ or "").strip()


def test_reprs_show_the_configuration():
    clock = admit.ManualClock(5)
    h = admit.Health(max_waiting=16, hold=5.0)
    h.add(admit.AdmissionController(4, 8))
    h.add(admit.Guard("openai"))
    sem = admit.Semaphore(3, max_waiters=6)
    cases = [
        (admit.KeyedLimiter({"free": "5/minute", "pro": "50/minute"},
                            algorithm="sliding_window", max_keys=100),
         "KeyedLimiter({'free': '5/1m', 'pro': '50/1m'}, "
         "algorithm=SLIDING_WINDOW, max_keys=100)"),
        (admit.Limiter("5/minute", "fixed_window"),
         "Limiter('5/1m', FIXED_WINDOW)"),
        (admit.TokenBucket("5/minute", burst=2),
         "TokenBucket('5/1m', burst=2)"),
        (admit.FixedWindow("5/minute"), "FixedWindow('5/1m')"),
        (admit.SlidingWindow("5/minute;50/hour"),
         "SlidingWindow('5/1m;50/1h')"),
        (clock, "ManualClock(now=5)"),
        (admit.Quota("5/minute", "fixed_window"),
         "Quota('5/1m', FIXED_WINDOW)"),
        (admit.Rate.per(5, 60), "Rate('5/1m')"),
        (sem, "Semaphore(capacity=3, max_waiters=6, in_use=0, waiting=0)"),
        (admit.CircuitBreaker(failure_rate=0.25, open_for=30),
         "CircuitBreaker(failure_rate=0.25, open_for=30, state=closed)"),
        (admit.AdmissionController(4, 8),
         "AdmissionController(max_in_flight=4, backlog=8, in_flight=0, "
         "waiting=0)"),
        (admit.Guard("openai", semaphore=sem, retries=3, call_timeout=20),
         "Guard('openai', stages=semaphore, call_timeout=20, retries=3)"),
        (h, "Health(http, openai; max_waiting=16, hold=5.0)"),
        (admit.Health(), "Health()"),
        (admit.Decision(False, 5, 0, 2 * 10**9, 3 * 10**9),
         "Decision(allowed=False, limit=5, remaining=0, retry_after=2, "
         "reset_after=3)"),
        (admit.VendorLimited(retry_after=2.5),
         "VendorLimited(retry_after=2.5)"),
        (admit.VendorLimited(), "VendorLimited()"),
        (admit.RateLimited(retry_after=1.5),
         "RateLimited(ADMIT_ELIMITED, retry_after=1.5)"),
        (af.Readiness().add("db", lambda: None), "Readiness(db)"),
        (af.RateLimit("5/minute", headers="both"),
         "RateLimit({'default': '5/1m'}, routes={}, "
         "algorithm=FIXED_WINDOW, backend='local', headers='both')"),
        (af.AdmissionMiddleware(None, max_in_flight=2, backlog=3,
                                exclude_statuses={503}),
         "AdmissionMiddleware(AdmissionController(max_in_flight=2, "
         "backlog=3, in_flight=0, waiting=0), queue_timeout=5, "
         "exempt=('/health', '/ready'), exclude_statuses=[503])"),
    ]
    for obj, text in cases:
        assert repr(obj) == text
    # Every public class has a repr of its own (a NamedTuple's or an
    # enum's counts), never object's "<... object at 0x...>".
    for name, obj in list(_public(admit)) + list(_public(af)):
        if inspect.isclass(obj):
            assert obj.__repr__ is not object.__repr__, name


def test_package_is_typed():
    import os
    assert os.path.isfile(os.path.join(os.path.dirname(admit.__file__),
                                       "py.typed"))
