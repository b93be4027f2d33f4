"""Call outcomes and the circuit breaker over ``admit_breaker_t``: closed,
open and half-open, opened by the failure rate or the slow-call rate over
a sliding window (resilience4j's defaults)."""

import asyncio
import enum
import functools
import time
from typing import Any, Awaitable, Callable, NamedTuple, Optional, TypeVar

from ._admit import ffi, lib
from ._util import check, positive_int, seconds_to_ns
from .errors import CircuitOpen
from .rates import ManualClock, clock_ptr

__all__ = ["Outcome", "CircuitBreaker", "BreakerStats", "outcome_of"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


class Outcome(enum.IntEnum):
    """How a call ended. FAILURE and TIMEOUT are errors; VENDOR_LIMITED
    and CANCELLED are counted but are neither successes nor errors."""

    SUCCESS = lib.ADMIT_OUTCOME_SUCCESS
    FAILURE = lib.ADMIT_OUTCOME_FAILURE
    TIMEOUT = lib.ADMIT_OUTCOME_TIMEOUT
    VENDOR_LIMITED = lib.ADMIT_OUTCOME_VENDOR_LIMITED
    CANCELLED = lib.ADMIT_OUTCOME_CANCELLED


def outcome_of(exc: Optional[BaseException]) -> Outcome:
    """The outcome an exception (or None) stands for: None is SUCCESS,
    ``asyncio.CancelledError`` CANCELLED, ``TimeoutError`` TIMEOUT, an
    exception with ``admit_outcome`` that outcome, anything else FAILURE."""
    if exc is None:
        return Outcome.SUCCESS
    o = getattr(exc, "admit_outcome", None)
    if o is not None:
        return Outcome(o)
    if isinstance(exc, asyncio.CancelledError):
        return Outcome.CANCELLED
    if isinstance(exc, TimeoutError):
        return Outcome.TIMEOUT
    return Outcome.FAILURE


class BreakerStats(NamedTuple):
    """A point-in-time view of a circuit breaker."""

    state: str
    calls: int
    failures: int
    slow: int
    failure_rate: float
    slow_rate: float
    permitted: int
    rejected: int
    opened: int
    half_opened: int
    closed: int


def _rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number, not %s"
                        % (name, type(value).__name__))
    if not 0 < value:
        raise ValueError("%s must be positive (above 1 disables it), not %r"
                         % (name, value))
    return float(value)


class CircuitBreaker:
    """A circuit breaker: fails calls fast with :class:`admit.CircuitOpen`
    while the dependency looks broken.

    ``window_calls`` (a count window) or ``window`` (seconds, a time
    window) is what the rates are measured over; once ``min_calls`` are in
    it and the failure rate reaches ``failure_rate`` (or the share of calls
    slower than ``slow_call`` seconds reaches ``slow_rate``), it opens for
    ``open_for`` seconds, then lets ``half_open_probes`` probe calls
    decide. Thread-safe.
    """

    def __init__(self, *, failure_rate: float = 0.5,
                 slow_rate: Optional[float] = None,
                 slow_call: Optional[float] = None,
                 window_calls: Optional[int] = None,
                 window: Optional[float] = None,
                 min_calls: Optional[int] = None,
                 open_for: float = 60.0,
                 half_open_probes: Optional[int] = None,
                 clock: Optional[ManualClock] = None) -> None:
        o = ffi.new("admit_breaker_options_t*")
        o.failure_rate = _rate(failure_rate, "failure_rate")
        if slow_rate is not None:
            o.slow_rate = _rate(slow_rate, "slow_rate")
        if slow_call is not None:
            o.slow_call_ns = seconds_to_ns(slow_call, "slow_call",
                                           allow_zero=False)
        if window_calls is not None and window is not None:
            raise ValueError("give window_calls or window, not both")
        if window is not None:
            o.window = lib.ADMIT_BREAKER_TIME_WINDOW
            o.window_ns = seconds_to_ns(window, "window", allow_zero=False)
        elif window_calls is not None:
            o.window_calls = positive_int(window_calls, "window_calls",
                                          maximum=1 << 20)
        if min_calls is not None:
            o.min_calls = positive_int(min_calls, "min_calls",
                                       maximum=(1 << 32) - 1)
        o.open_ns = seconds_to_ns(open_for, "open_for", allow_zero=False)
        if half_open_probes is not None:
            o.half_open_probes = positive_int(half_open_probes,
                                              "half_open_probes",
                                              maximum=(1 << 32) - 1)
        o.clock = clock_ptr(clock)
        pp = ffi.new("admit_breaker_t**")
        check(lib.admit_breaker_new(pp, o))
        self._p = ffi.gc(pp[0], lib.admit_breaker_free)
        self._clock = clock
        self._desc = "failure_rate=%g, open_for=%g%s" % (
            failure_rate, open_for,
            ", window=%gs" % window if window is not None else
            ", window_calls=%d" % window_calls if window_calls else "")

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (an open breaker
        whose time is up turns half-open here)."""
        s = check(lib.admit_breaker_state(self._p))
        return ffi.string(lib.admit_breaker_state_name(s)).decode()

    def enter(self) -> int:
        """Asks to make one call: returns a token for :meth:`leave` or
        :meth:`abandon`, or raises :class:`admit.CircuitOpen`."""
        tok = ffi.new("uint64_t*")
        rc = lib.admit_breaker_enter(self._p, tok)
        if rc == lib.ADMIT_EOPEN:
            raise CircuitOpen(rc, "the circuit breaker is open")
        check(rc)
        return tok[0]

    def leave(self, token: int, outcome: Outcome, duration: float) -> None:
        """Records how a call ended and how long (seconds) it took."""
        check(lib.admit_breaker_leave(self._p, token, int(Outcome(outcome)),
                                      seconds_to_ns(duration, "duration")))

    def abandon(self, token: int) -> None:
        """Gives back a permission that was not used."""
        check(lib.admit_breaker_abandon(self._p, token))

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                   **kwargs: Any) -> Any:
        """Awaits ``fn(*args, **kwargs)`` through the breaker, recording
        its outcome (see :func:`outcome_of`) and duration."""
        token = self.enter()
        start = time.monotonic_ns()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as e:
            lib.admit_breaker_leave(self._p, token, int(outcome_of(e)),
                                    time.monotonic_ns() - start)
            raise
        lib.admit_breaker_leave(self._p, token, lib.ADMIT_OUTCOME_SUCCESS,
                                time.monotonic_ns() - start)
        return result

    def protect(self, fn: _F) -> _F:
        """Decorates a coroutine function to run through :meth:`call`."""
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError("protect() decorates coroutine functions; %r "
                            "is not one" % (fn,))

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await self.call(fn, *args, **kwargs)
        return wrapper  # type: ignore[return-value]

    def trip(self) -> None:
        """Forces the breaker open now (an operator's switch)."""
        check(lib.admit_breaker_trip(self._p))

    def reset(self) -> None:
        """Closes the breaker and empties its window."""
        check(lib.admit_breaker_reset(self._p))

    def stats(self) -> BreakerStats:
        """State, window figures and counters."""
        s = ffi.new("admit_breaker_stats_t*")
        check(lib.admit_breaker_stats(self._p, s))
        return BreakerStats(
            ffi.string(lib.admit_breaker_state_name(s.state)).decode(),
            s.calls, s.failures, s.slow, s.failure_rate, s.slow_rate,
            s.permitted, s.rejected, s.opened, s.half_opened, s.closed)

    def __repr__(self) -> str:
        return "CircuitBreaker(%s, state=%s)" % (self._desc, self.state)

