"""Keyed in-process limiters: one limiter state per user, API key, client
address or endpoint, in bounded memory, over ``admit_keyed_t``.

A keyed limiter holds one quota per *tier*; each call names the tier (by
name or index) and a key's state in one tier is independent of the same
key in another.
"""

import asyncio
import functools
import time
import weakref
from typing import Any, Awaitable, Callable, Dict, List, Mapping, \
    NamedTuple, Optional, TypeVar, Union

from ._admit import ffi, lib
from ._util import NATIVE_KEYED, NS, U64_MAX, check, key_bytes, \
    native_hit, positive_int, timeout_ns
from .errors import RateLimited, error_for
from .limiter import _DECISION_T, Decision, _CDecision
from .rates import Algorithm, ManualClock, Quota, RateSpec, clock_ptr, \
    quota_of

__all__ = ["KeyedLimiter", "KeyedStats"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
Key = Union[str, bytes]


class KeyedStats(NamedTuple):
    """A point-in-time view of a keyed limiter."""

    keys: int
    max_keys: int
    evicted: int
    full: int
    bytes: int


def _fast_paths(lim: "KeyedLimiter") -> None:
    """Gives ``lim`` its own ``hit`` and ``try_acquire``: closures over the
    C functions, the table's pointer and what they need, so the commonest
    calls (a str or bytes key; for ``hit`` the first tier and cost 1, for
    ``try_acquire`` a tier by name or None) make no attribute lookups and
    validate nothing up front; anything else, and every error, goes
    through the methods. They hold the limiter weakly, so it is still
    freed by reference count."""
    p = lim._p
    hit1 = lim._hit1
    try_fn = lim._try
    tiers = lim._tiers
    ref = weakref.ref(lim)
    new = ffi.new
    dt = _DECISION_T
    make = object.__new__
    cdecision = _CDecision
    _bytes = bytes
    _len = len

    def hit(key: Any, cost: int = 1, tier: Any = None) -> bool:
        if tier is None and cost == 1:
            # A str key costs no type check (the commonest call, kept as
            # short as it can be); bytes pay for the exception instead.
            try:
                k = key.encode()
            except AttributeError:
                if key.__class__ is not _bytes:
                    return KeyedLimiter.hit(ref(), key, cost, tier)
                k = key
            rc = hit1(p, k, _len(k))
            if rc > 0:
                return True
            if rc == 0:
                return False
            ref()._fail(key, cost, 0, rc)
        return KeyedLimiter.hit(ref(), key, cost, tier)

    def try_acquire(key: Any, cost: int = 1, *,
                    tier: Any = None) -> Decision:
        t = tiers.get(tier)
        if t is None or not (key.__class__ is _bytes or
                             key.__class__ is str):
            return KeyedLimiter.try_acquire(ref(), key, cost, tier=tier)
        k = key if key.__class__ is _bytes else key.encode()
        d = new(dt)
        try:
            rc = try_fn(p, t, k, _len(k), cost, d)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc < 0:
            ref()._fail(key, cost, t, rc)
        r = make(cdecision)
        r._d = d
        return r

    hit.__doc__ = KeyedLimiter.hit.__doc__
    try_acquire.__doc__ = KeyedLimiter.try_acquire.__doc__
    if lim._clock is None:
        def fail(key: Any, rc: int) -> None:
            ref()._fail(key, 1, 0, rc)

        hit = native_hit(NATIVE_KEYED, p, hit, fail)
    lim.hit = hit  # type: ignore[method-assign]
    lim.try_acquire = try_acquire  # type: ignore[method-assign]


class KeyedLimiter:
    """Many limiters addressed by key, each created on first use.

    ``quotas`` is one quota (a rate string, Rate, list of Rates or
    :class:`admit.Quota`) for a single tier named ``"default"``, or a
    mapping of tier name to quota::

        KeyedLimiter({"free": "10/minute", "pro": "100/minute"},
                     algorithm="sliding_window")

    ``max_keys`` bounds memory (keys whose state is fresh are dropped
    first); ``max_key_len`` bounds key size in bytes. Thread-safe.
    """

    # No __slots__: each instance gets its own ``hit`` and ``try_acquire``
    # closures (see _fast_paths), which shadow the methods below.

    def __init__(self, quotas: Union[RateSpec, Quota,
                                     Mapping[str, Union[RateSpec, Quota]]],
                 *, algorithm: Union[Algorithm, str] = Algorithm.TOKEN_BUCKET,
                 burst: Any = None, max_keys: Optional[int] = None,
                 max_key_len: Optional[int] = None,
                 clock: Optional[ManualClock] = None) -> None:
        if isinstance(quotas, Mapping):
            if not quotas:
                raise ValueError("quotas must name at least one tier")
            items = list(quotas.items())
        else:
            items = [("default", quotas)]
        names: List[str] = []
        qs: List[Quota] = []
        for name, spec in items:
            if not isinstance(name, str):
                raise TypeError("tier names must be str, not %s"
                                % type(name).__name__)
            qs.append(quota_of(spec, algorithm, burst,
                               name="quotas[%r]" % name
                               if isinstance(quotas, Mapping) else "quotas"))
            names.append(name)
        arr = ffi.new("admit_quota_t[]", len(qs))
        for i, q in enumerate(qs):
            arr[i] = q._c[0]
        opts = ffi.new("admit_keyed_options_t*")
        opts.quotas = arr
        opts.nquotas = len(qs)
        if max_keys is not None:
            opts.max_keys = positive_int(max_keys, "max_keys")
        if max_key_len is not None:
            opts.max_key_len = positive_int(max_key_len, "max_key_len",
                                            maximum=(1 << 32) - 1)
        opts.clock = clock_ptr(clock)
        pp = ffi.new("admit_keyed_t**")
        check(lib.admit_keyed_new(pp, opts))
        self._p = ffi.gc(pp[0], lib.admit_keyed_free)
        self._names = tuple(names)
        self._tiers: Dict[Any, int] = {n: i for i, n in enumerate(names)}
        self._tiers[None] = 0
        self._quotas = tuple(qs)
        self._clock = clock
        self._max_keys = max_keys
        # Fast paths keep the GIL; on a Python clock they must not (the
        # clock's callback may need the GIL on a thread holding a lock).
        if clock is None:
            self._try = lib.admit_py_fast_keyed_try
            self._hit1 = lib.admit_py_fast_keyed_hit1
            self._hit = lib.admit_py_fast_keyed_hit
        else:
            self._try = lib.admit_keyed_try
            self._hit1 = lib.admit_py_keyed_hit1
            self._hit = lib.admit_py_keyed_hit
        _fast_paths(self)

    @property
    def tiers(self) -> Dict[str, Quota]:
        """Tier name to quota."""
        return dict(zip(self._names, self._quotas))

    def quota(self, tier: Union[None, str, int] = None) -> Quota:
        """The quota of ``tier`` (default: the first)."""
        return self._quotas[self._tier(tier)]

    def _tier(self, tier: Any) -> int:
        t = self._tiers.get(tier)
        if t is not None:
            return t
        if isinstance(tier, int) and not isinstance(tier, bool) and \
                0 <= tier < len(self._names):
            return tier
        if isinstance(tier, (str, int)) and not isinstance(tier, bool):
            raise ValueError("tier %r is not one of %s"
                             % (tier, ", ".join(map(repr, self._names))))
        raise TypeError("tier must be a tier name, an index or None, not %s"
                        % type(tier).__name__)

    def _fail(self, key: Any, cost: Any, tier: int, rc: int) -> None:
        positive_int(cost, "cost")
        if rc == lib.ADMIT_EINVAL:
            k = key_bytes(key)
            if not k:
                raise ValueError("key must not be empty")
            q = self._quotas[tier]
            if cost > min(q.burst):
                raise ValueError("cost %d exceeds the burst %d of tier %r "
                                 "(%s); it could never be admitted"
                                 % (cost, min(q.burst), self._names[tier],
                                    q.spec))
            raise ValueError("key is too long (%d bytes)" % len(k))
        raise error_for(rc)

    def try_acquire(self, key: Key, cost: int = 1, *,
                    tier: Union[None, str, int] = None) -> Decision:
        """Decides whether ``cost`` units may proceed for ``key`` in
        ``tier``, consuming them if so; a denial consumes nothing.

        Raises :class:`admit.Rejected` if the key is new and the table is
        full of keys that are not fresh.
        """
        t = self._tiers.get(tier)
        if t is None:
            t = self._tier(tier)
        k = key.encode() if type(key) is str else key_bytes(key)
        d = ffi.new("admit_decision_t*")
        try:
            rc = self._try(self._p, t, k, len(k), cost, d)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc < 0:
            self._fail(key, cost, t, rc)
        return Decision._from_c(d)

    def hit(self, key: Key, cost: int = 1,
            tier: Union[None, str, int] = None) -> bool:
        """Like :meth:`try_acquire` but returns only whether it was allowed
        (the fast path: no Decision is built)."""
        t = self._tiers.get(tier)
        if t is None:
            t = self._tier(tier)
        k = key.encode() if type(key) is str else key_bytes(key)
        try:
            rc = self._hit(self._p, t, k, len(k), cost)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc > 0:
            return True
        if rc == 0:
            return False
        self._fail(key, cost, t, rc)
        raise AssertionError("unreachable")

    def peek(self, key: Key, *,
             tier: Union[None, str, int] = None) -> Decision:
        """What a check of ``key`` would see; consumes nothing and creates
        no key."""
        t = self._tier(tier)
        k = key_bytes(key)
        d = ffi.new("admit_decision_t*")
        rc = lib.admit_keyed_peek(self._p, t, k, len(k), d)
        if rc < 0:
            self._fail(key, 1, t, rc)
        return Decision._from_c(d)

    def refund(self, key: Key, cost: int = 1, *,
               tier: Union[None, str, int] = None) -> bool:
        """Gives back ``cost`` units to ``key`` (work that did not happen).

        Returns False if the key is not held. Windows refund only within the
        window that was charged.
        """
        t = self._tier(tier)
        k = key_bytes(key)
        positive_int(cost, "cost")
        rc = lib.admit_keyed_refund(self._p, t, k, len(k), cost)
        if rc == lib.ADMIT_ENOTFOUND:
            return False
        if rc < 0:
            self._fail(key, cost, t, rc)
        return True

    def reset(self, key: Key, *, tier: Union[None, str, int] = None) -> bool:
        """Forgets ``key`` in ``tier``; returns False if it was not held."""
        t = self._tier(tier)
        k = key_bytes(key)
        rc = lib.admit_keyed_reset(self._p, t, k, len(k))
        if rc == lib.ADMIT_ENOTFOUND:
            return False
        if rc < 0:
            self._fail(key, 1, t, rc)
        return True

    def sweep(self) -> int:
        """Drops every key whose state is fresh; returns how many."""
        return int(lib.admit_keyed_sweep(self._p))

    def stats(self) -> KeyedStats:
        """Keys held, the bound, evictions and memory."""
        s = ffi.new("admit_keyed_stats_t*")
        check(lib.admit_keyed_stats(self._p, s))
        return KeyedStats(s.keys, s.max_keys, s.evicted, s.full, s.bytes)

    def __len__(self) -> int:
        return self.stats().keys

    def acquire_blocking(self, key: Key, cost: int = 1, *, timeout: float,
                         tier: Union[None, str, int] = None) -> Decision:
        """Waits in this thread (sleeping, GIL released) until ``cost``
        units may proceed for ``key``.

        Raises :class:`admit.RateLimited` at once, without sleeping, when
        the wait would exceed ``timeout`` seconds.
        """
        t = timeout_ns(timeout)
        deadline = time.monotonic_ns() + t if t < U64_MAX else None
        while True:
            d = self.try_acquire(key, cost, tier=tier)
            if d.allowed:
                return d
            left = self._left(deadline)
            if d.retry_after_ns > left:
                raise RateLimited(lib.ADMIT_ETIMEDOUT,
                                  retry_after=d.retry_after, decision=d)
            lib.admit_sleep_ns(d.retry_after_ns)

    @staticmethod
    def _left(deadline: Optional[int]) -> int:
        if deadline is None:
            return U64_MAX
        return max(0, deadline - time.monotonic_ns())

    async def acquire(self, key: Key, cost: int = 1, *, timeout: float,
                      tier: Union[None, str, int] = None) -> Decision:
        """Waits on the event loop until ``cost`` units may proceed for
        ``key``; raises :class:`admit.RateLimited` at once when the wait
        would not fit ``timeout`` seconds. Nothing is held while waiting,
        so cancellation leaks nothing."""
        t = timeout_ns(timeout)
        deadline = time.monotonic_ns() + t if t < U64_MAX else None
        while True:
            d = self.try_acquire(key, cost, tier=tier)
            if d.allowed:
                return d
            if d.retry_after_ns > self._left(deadline):
                raise RateLimited(lib.ADMIT_ETIMEDOUT,
                                  retry_after=d.retry_after, decision=d)
            await asyncio.sleep(d.retry_after_ns / NS)

    def limit(self, key: Callable[..., Key], *, timeout: float,
              cost: int = 1, tier: Union[None, str, int] = None) \
            -> Callable[[_F], _F]:
        """Decorates a coroutine function: ``key(*args, **kwargs)`` names
        the key, and each call first waits for ``cost`` units."""
        if not callable(key):
            raise TypeError("key must be a callable returning the key")
        timeout_ns(timeout)
        positive_int(cost, "cost")
        self._tier(tier)

        def deco(fn: _F) -> _F:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError("limit() decorates coroutine functions; %r "
                                "is not one" % (fn,))

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                await self.acquire(key(*args, **kwargs), cost,
                                   timeout=timeout, tier=tier)
                return await fn(*args, **kwargs)
            return wrapper  # type: ignore[return-value]
        return deco

    def __repr__(self) -> str:
        if self._names == ("default",):
            body = repr(self._quotas[0].spec)
        else:
            body = "{%s}" % ", ".join("%r: %r" % (n, q.spec) for n, q in
                                      zip(self._names, self._quotas))
        algos = {q.algorithm for q in self._quotas}
        algo = ", algorithm=%s" % algos.pop().name if len(algos) == 1 else ""
        mk = ", max_keys=%d" % self._max_keys if self._max_keys else ""
        return "KeyedLimiter(%s%s%s)" % (body, algo, mk)

