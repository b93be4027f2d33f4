"""In-process limiters over ``admit_limiter_t``: token bucket (GCRA), fixed
window and sliding-window counter, one or several rates all-or-nothing.

Waiting in asyncio reserves the units in C (``admit_limiter_reserve``)
and sleeps with ``asyncio.sleep``; a cancelled or timed-out waiter gives
its reservation back. Nothing ever sleeps on the event loop's thread.
"""

import asyncio
import functools
import time
import weakref
from typing import Any, Awaitable, Callable, Optional, TypeVar, Union

from ._admit import ffi, lib
from ._util import NATIVE_LIMITER, NS, U64_MAX, check, native_hit, \
    positive_int, timeout_ns
from .errors import RateLimited, error_for
from .rates import Algorithm, ManualClock, Quota, RateSpec, clock_ptr, \
    quota_of

__all__ = ["Decision", "Limiter", "TokenBucket", "FixedWindow",
           "SlidingWindow"]

_ETIMEDOUT = lib.ADMIT_ETIMEDOUT
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


class Decision:
    """The answer to one check, with what HTTP 429 and ``RateLimit``
    headers need. True when allowed.

    Times are in seconds: ``retry_after`` (0 if allowed) and
    ``reset_after`` (until the state is as fresh as a new one).
    ``limiting`` is the index of the rate that decided.
    """

    __slots__ = ("allowed", "limit", "remaining", "retry_after_ns",
                 "reset_after_ns", "limiting")

    allowed: bool
    limit: int
    remaining: int
    retry_after_ns: int
    reset_after_ns: int
    limiting: int

    def __init__(self, allowed: bool, limit: int, remaining: int,
                 retry_after_ns: int = 0, reset_after_ns: int = 0,
                 limiting: int = 0) -> None:
        self.allowed = bool(allowed)
        self.limit = limit
        self.remaining = remaining
        self.retry_after_ns = retry_after_ns
        self.reset_after_ns = reset_after_ns
        self.limiting = limiting

    @classmethod
    def _from_c(cls, d: Any) -> "Decision":
        self = cls.__new__(cls)
        self.allowed = d.allowed != 0
        self.limit = d.limit
        self.remaining = d.remaining
        self.retry_after_ns = d.retry_after_ns
        self.reset_after_ns = d.reset_after_ns
        self.limiting = d.limiting
        return self

    @property
    def retry_after(self) -> float:
        """Seconds to wait before the request would fit (0 if allowed)."""
        return self.retry_after_ns / NS

    @property
    def reset_after(self) -> float:
        """Seconds until the limiter is as fresh as a new one."""
        return self.reset_after_ns / NS

    def __bool__(self) -> bool:
        return self.allowed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k)
                   for k in Decision.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        return (Decision, (self.allowed, self.limit, self.remaining,
                           self.retry_after_ns, self.reset_after_ns,
                           self.limiting))

    def __repr__(self) -> str:
        return ("Decision(allowed=%s, limit=%d, remaining=%d, "
                "retry_after=%.6g, reset_after=%.6g)"
                % (self.allowed, self.limit, self.remaining,
                   self.retry_after, self.reset_after))


class _CDecision(Decision):
    """A Decision read lazily from the C struct it owns: building one costs
    a single attribute store, and each field is read when asked for (the
    fast paths of try_acquire, where a caller often reads only
    ``allowed``). Only for a struct this object alone refers to (a fresh
    ``ffi.new``), never for one inside memory owned by something else."""

    __slots__ = ("_d",)

    @property  # type: ignore[override]
    def allowed(self) -> bool:  # type: ignore[override]
        """True when admitted (and consumed)."""
        return self._d.allowed != 0

    @property  # type: ignore[override]
    def limit(self) -> int:  # type: ignore[override]
        """Units the deciding rate allows per burst."""
        return self._d.limit

    @property  # type: ignore[override]
    def remaining(self) -> int:  # type: ignore[override]
        """Units that could still be admitted now."""
        return self._d.remaining

    @property  # type: ignore[override]
    def retry_after_ns(self) -> int:  # type: ignore[override]
        """Nanoseconds to wait before the request would fit (0 if
        allowed)."""
        return self._d.retry_after_ns

    @property  # type: ignore[override]
    def reset_after_ns(self) -> int:  # type: ignore[override]
        """Nanoseconds until the state is as fresh as a new one."""
        return self._d.reset_after_ns

    @property  # type: ignore[override]
    def limiting(self) -> int:  # type: ignore[override]
        """The index of the rate that decided."""
        return self._d.limiting

    def __bool__(self) -> bool:
        return self._d.allowed != 0


_DECISION_T = ffi.typeof("admit_decision_t*")


def _fast_paths(lim: "Limiter") -> None:
    """Gives ``lim`` its own ``hit`` and ``try_acquire``: closures over the
    C function, the limiter's pointer and what they need, so a call makes
    no attribute lookups and validates nothing up front (a bad argument
    fails in cffi or C, and only then is explained). They hold the limiter
    weakly, so it is still freed by reference count; the C handle they
    hold outlives it safely."""
    p = lim._p
    hit_fn = lim._hit
    try_fn = lim._try
    ref = weakref.ref(lim)
    new = ffi.new
    dt = _DECISION_T
    make = object.__new__
    cdecision = _CDecision

    def hit(cost: int = 1) -> bool:
        try:
            rc = hit_fn(p, cost)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc > 0:
            return True
        if rc == 0:
            return False
        ref()._bad_cost(cost, rc)
        raise AssertionError("unreachable")

    def try_acquire(cost: int = 1) -> Decision:
        d = new(dt)
        try:
            rc = try_fn(p, cost, d)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc < 0:
            ref()._bad_cost(cost, rc)
        r = make(cdecision)
        r._d = d
        return r

    hit.__doc__ = Limiter.hit.__doc__
    try_acquire.__doc__ = Limiter.try_acquire.__doc__
    if lim._clock is None:
        def fail(cost: int, rc: int) -> None:
            ref()._bad_cost(cost, rc)

        hit = native_hit(NATIVE_LIMITER, p, hit, fail)
    lim.hit = hit  # type: ignore[method-assign]
    lim.try_acquire = try_acquire  # type: ignore[method-assign]


class Limiter:
    """An in-process limiter enforcing one :class:`admit.Quota`.

    Safe to use from any thread and any event loop. Prefer the subclasses
    :class:`TokenBucket`, :class:`FixedWindow` and :class:`SlidingWindow`.
    """

    # No __slots__: each instance gets its own ``hit`` and ``try_acquire``
    # closures (see _fast_paths), which shadow the methods below.

    def __init__(self, rate: Union[RateSpec, Quota],
                 algorithm: Union[Algorithm, str] = Algorithm.TOKEN_BUCKET,
                 *, burst: Any = None,
                 clock: Optional[ManualClock] = None) -> None:
        quota = quota_of(rate, algorithm, burst)
        pp = ffi.new("admit_limiter_t**")
        check(lib.admit_limiter_new(pp, quota._c, clock_ptr(clock)))
        self._p = ffi.gc(pp[0], lib.admit_limiter_free)
        self._quota = quota
        self._clock = clock
        # Fast paths keep the GIL; on a Python clock they must not (the
        # clock's callback may need the GIL on a thread holding a lock).
        if clock is None:
            self._try = lib.admit_py_fast_limiter_try
            self._hit = lib.admit_py_fast_limiter_hit
        else:
            self._try = lib.admit_limiter_try
            self._hit = lib.admit_py_limiter_hit
        _fast_paths(self)

    @property
    def quota(self) -> Quota:
        """The quota this limiter enforces."""
        return self._quota

    def try_acquire(self, cost: int = 1) -> Decision:
        """Decides whether ``cost`` units may proceed now, consuming them if
        so. A denial consumes nothing.

        Raises ValueError when ``cost`` is 0 or over the burst (it could
        never succeed).
        """
        d = ffi.new("admit_decision_t*")
        try:
            rc = self._try(self._p, cost, d)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc < 0:
            self._bad_cost(cost, rc)
        return Decision._from_c(d)

    def hit(self, cost: int = 1) -> bool:
        """Like :meth:`try_acquire` but returns only whether it was allowed
        (the fast path: no Decision is built)."""
        try:
            rc = self._hit(self._p, cost)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc > 0:
            return True
        if rc == 0:
            return False
        self._bad_cost(cost, rc)
        raise AssertionError("unreachable")

    def peek(self) -> Decision:
        """The decision a zero-cost check would give; consumes nothing."""
        d = ffi.new("admit_decision_t*")
        check(lib.admit_limiter_peek(self._p, d))
        return Decision._from_c(d)

    def reset(self) -> None:
        """Forgets all consumption, as if the limiter were new."""
        lib.admit_limiter_reset(self._p)

    def _bad_cost(self, cost: Any, rc: int) -> None:
        positive_int(cost, "cost")
        if rc == lib.ADMIT_EINVAL:
            raise ValueError("cost %d exceeds the burst %d of %s; it could "
                             "never be admitted"
                             % (cost, min(self._quota.burst), self._quota))
        raise error_for(rc)

    def acquire_blocking(self, cost: int = 1, *, timeout: float) -> Decision:
        """Waits in this thread until ``cost`` units may proceed.

        Blocks the calling thread (with the GIL released); never call it on
        an event loop. Raises :class:`admit.RateLimited` at once, without
        sleeping, if the wait would exceed ``timeout`` seconds
        (``admit.FOREVER`` waits as long as needed).
        """
        t = timeout_ns(timeout)
        positive_int(cost, "cost")
        d = ffi.new("admit_decision_t*")
        rc = lib.admit_limiter_acquire(self._p, cost, t, d)
        if rc == _ETIMEDOUT:
            raise RateLimited(rc, retry_after=d.retry_after_ns / NS,
                              decision=Decision._from_c(d))
        if rc < 0:
            self._bad_cost(cost, rc)
        return Decision._from_c(d)

    async def acquire(self, cost: int = 1, *, timeout: float) -> Decision:
        """Waits on the event loop until ``cost`` units may proceed.

        The units are reserved in C and the task sleeps with
        ``asyncio.sleep``; cancellation gives the reservation back. Raises
        :class:`admit.RateLimited` at once if the wait would exceed
        ``timeout`` seconds (``admit.FOREVER`` to wait as long as needed).
        """
        t = timeout_ns(timeout)
        positive_int(cost, "cost")
        p = self._p
        r = ffi.new("admit_reservation_t*")
        d = ffi.new("admit_decision_t*")
        deadline = time.monotonic_ns() + t if t < U64_MAX else None
        while True:
            rc = lib.admit_limiter_reserve(p, cost, t, r, d)
            if rc == _ETIMEDOUT:
                raise RateLimited(rc, retry_after=d.retry_after_ns / NS,
                                  decision=Decision._from_c(d))
            if rc < 0:
                self._bad_cost(cost, rc)
            if r.reserved:
                if r.wait_ns:
                    try:
                        await asyncio.sleep(r.wait_ns / NS)
                    except BaseException:
                        # Cancelled or interrupted: the units go back
                        # (a plain C call, so nothing can interrupt it).
                        lib.admit_limiter_cancel(p, r)
                        raise
                return Decision._from_c(d)
            # A window cannot hold a place in a later window: wait for it
            # and ask again with what is left of the timeout.
            await asyncio.sleep(r.wait_ns / NS)
            if deadline is not None:
                t = max(0, deadline - time.monotonic_ns())

    def limit(self, *, timeout: float, cost: int = 1) -> Callable[[_F], _F]:
        """Decorates a coroutine function so each call first waits for
        ``cost`` units (see :meth:`acquire`)."""
        timeout_ns(timeout)
        positive_int(cost, "cost")

        def deco(fn: _F) -> _F:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError("limit() decorates coroutine functions; %r "
                                "is not one" % (fn,))

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                await self.acquire(cost, timeout=timeout)
                return await fn(*args, **kwargs)
            return wrapper  # type: ignore[return-value]
        return deco

    def __repr__(self) -> str:
        return "%s(%r%s)" % (type(self).__name__, self._quota.spec,
                             self._extra_repr())

    def _extra_repr(self) -> str:
        if type(self) is Limiter:
            return ", %s" % self._quota.algorithm.name
        return ""


class TokenBucket(Limiter):
    """A token bucket (GCRA): ``burst`` units at once (default: the rate's
    count), then one unit every period/count. Lock-free in C.

    >>> TokenBucket("100/second", burst=20)
    """

    __slots__ = ()

    def __init__(self, rate: Union[RateSpec, Quota], *,
                 burst: Union[None, int, list] = None,
                 clock: Optional[ManualClock] = None) -> None:
        if isinstance(rate, Quota) and \
                rate.algorithm != Algorithm.TOKEN_BUCKET:
            raise ValueError("rate is a %s quota; TokenBucket needs "
                             "TOKEN_BUCKET" % rate.algorithm.name)
        super().__init__(rate, Algorithm.TOKEN_BUCKET, burst=burst,
                         clock=clock)

    def _extra_repr(self) -> str:
        q = self._quota
        if any(b != r.count for b, r in zip(q.burst, q.rates)):
            return ", burst=%s" % (q.burst[0] if len(q.burst) == 1
                                   else list(q.burst))
        return ""


class FixedWindow(Limiter):
    """At most the rate's count per aligned window. Cheap and lock-free, but
    up to twice the limit can pass across a window edge."""

    __slots__ = ()

    def __init__(self, rate: Union[RateSpec, Quota], *,
                 clock: Optional[ManualClock] = None) -> None:
        if isinstance(rate, Quota) and \
                rate.algorithm != Algorithm.FIXED_WINDOW:
            raise ValueError("rate is a %s quota; FixedWindow needs "
                             "FIXED_WINDOW" % rate.algorithm.name)
        super().__init__(rate, Algorithm.FIXED_WINDOW, clock=clock)


class SlidingWindow(Limiter):
    """A sliding-window counter: the current window plus the previous one
    weighted by its overlap (``limits``' moving window, in O(1) memory)."""

    __slots__ = ()

    def __init__(self, rate: Union[RateSpec, Quota], *,
                 clock: Optional[ManualClock] = None) -> None:
        if isinstance(rate, Quota) and \
                rate.algorithm != Algorithm.SLIDING_WINDOW:
            raise ValueError("rate is a %s quota; SlidingWindow needs "
                             "SLIDING_WINDOW" % rate.algorithm.name)
        super().__init__(rate, Algorithm.SLIDING_WINDOW, clock=clock)

