"""Pod admission control over ``admit_admission_t``: at most a limit of
requests in flight, a bounded backlog, priority classes, CoDel-style load
shedding and an optional adaptive (AIMD or gradient) limit.

Asyncio waiters queue in C and are admitted through the loop's completion
queue; a waiter that times out or is cancelled withdraws, and a place
granted at that instant is left again, never lost.
"""

import asyncio
from types import TracebackType
from typing import Any, Dict, NamedTuple, Optional, Type

from ._admit import ffi, lib
from ._loop import ABANDONED, GRANTED, WAITING, Waiter, notifier
from ._util import U64_MAX, check, fmt_seconds, nonneg_int, positive_int, \
    seconds_to_ns, timeout_ns
from .breaker import Outcome, outcome_of
from .errors import Closed, Overloaded, QueueTimeout, Rejected, error_for
from .rates import ManualClock, clock_ptr

__all__ = ["AdmissionController", "AdmissionStats", "Permit", "histogram"]

_CB = ffi.addressof(lib, "admit_notify_semaphore_cb")
_PRIO_MAX = lib.ADMIT_PRIORITIES_MAX - 1
_ADAPTIVE = {None: lib.ADMIT_ADAPTIVE_NONE, "none": lib.ADMIT_ADAPTIVE_NONE,
             "aimd": lib.ADMIT_ADAPTIVE_AIMD,
             "gradient": lib.ADMIT_ADAPTIVE_GRADIENT}


def histogram(h: Any) -> Dict[str, Any]:
    """A C latency histogram as a dict: count, sum (seconds) and the
    cumulative buckets as (upper bound in seconds, count) pairs."""
    n = lib.ADMIT_HISTOGRAM_BUCKETS
    buckets = []
    for i in range(n):
        b = lib.admit_histogram_bound_ns(i)
        buckets.append((float("inf") if b >= U64_MAX else b / 1e9, h.le[i]))
    return {"count": h.count, "sum": h.sum_ns / 1e9, "buckets": buckets}


class AdmissionStats(NamedTuple):
    """A point-in-time view of an admission controller."""

    limit: int
    in_flight: int
    waiting: int
    backlog: int
    admitted: int
    rejected: int
    shed: int
    displaced: int
    timed_out: int
    cancelled: int
    completed: int
    errors: int
    recent_calls: int
    recent_errors: int
    shedding: bool
    oldest_wait: float
    queue_wait: Dict[str, Any]
    latency: Dict[str, Any]


class Permit:
    """One admitted request: leave it (once) with its outcome."""

    __slots__ = ("_ctl", "_c", "_left")

    def __init__(self, ctl: "AdmissionController", c: Any) -> None:
        self._ctl = ctl
        self._c = c
        self._left = False

    @property
    def priority(self) -> int:
        """The request's class."""
        return self._c.priority

    @property
    def queue_wait(self) -> float:
        """Seconds it waited before admission."""
        return (self._c.admitted_ns - self._c.enqueued_ns) / 1e9

    def leave(self, outcome: Outcome = Outcome.SUCCESS) -> None:
        """Ends the request, admitting the next waiter. A second call does
        nothing."""
        if self._left:
            return
        self._left = True
        check(lib.admit_admission_leave(self._ctl._p, self._c,
                                        int(Outcome(outcome))))

    async def __aenter__(self) -> "Permit":
        return self

    async def __aexit__(self, et: Optional[Type[BaseException]],
                        ev: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        self.leave(outcome_of(ev))

    def __repr__(self) -> str:
        return "Permit(priority=%d, queue_wait=%.6g%s)" % (
            self.priority, self.queue_wait, ", left" if self._left else "")


class AdmissionController:
    """Admission control for one process, as ``uvicorn --limit-concurrency
    --backlog`` does it, plus priorities, shedding and adaptive limits.

    At most ``max_in_flight`` requests run and ``backlog`` wait; beyond
    both, :meth:`enter` raises :class:`admit.Rejected` at once. A waiter
    shed by CoDel (waits above ``shed_target`` seconds for
    ``shed_interval``) or displaced by a more urgent class raises
    :class:`admit.Overloaded`. ``adaptive`` is None, ``"aimd"`` or
    ``"gradient"``. Thread-safe and usable from any event loop.
    """

    def __init__(self, max_in_flight: int = 100, backlog: int = 200, *,
                 shed_target: Optional[float] = None,
                 shed_interval: Optional[float] = None,
                 shedding: bool = True, shed_min_priority: int = 1,
                 adaptive: Optional[str] = None,
                 min_limit: Optional[int] = None,
                 max_limit: Optional[int] = None,
                 aimd_backoff: Optional[float] = None,
                 aimd_latency: Optional[float] = None,
                 gradient_tolerance: Optional[float] = None,
                 gradient_smoothing: Optional[float] = None,
                 window: Optional[float] = None,
                 clock: Optional[ManualClock] = None) -> None:
        u32 = (1 << 32) - 1
        o = ffi.new("admit_admission_options_t*")
        o.max_in_flight = positive_int(max_in_flight, "max_in_flight",
                                       maximum=u32)
        nonneg_int(backlog, "backlog", maximum=u32)
        if backlog == 0:
            o.no_backlog = 1
        else:
            o.backlog = backlog
        if shed_target is not None:
            o.shed_target_ns = seconds_to_ns(shed_target, "shed_target",
                                             allow_zero=False)
        if shed_interval is not None:
            o.shed_interval_ns = seconds_to_ns(shed_interval, "shed_interval",
                                               allow_zero=False)
        if not isinstance(shedding, bool):
            raise TypeError("shedding must be a bool")
        o.no_shedding = 0 if shedding else 1
        o.shed_min_priority = positive_int(shed_min_priority,
                                           "shed_min_priority",
                                           maximum=lib.ADMIT_PRIORITIES_MAX)
        if adaptive not in _ADAPTIVE:
            raise ValueError("adaptive must be None, 'aimd' or 'gradient', "
                             "not %r" % (adaptive,))
        o.adaptive = _ADAPTIVE[adaptive]
        if min_limit is not None:
            o.min_limit = positive_int(min_limit, "min_limit", maximum=u32)
        if max_limit is not None:
            o.max_limit = positive_int(max_limit, "max_limit", maximum=u32)
        for name, value, field in (("aimd_backoff", aimd_backoff,
                                    "aimd_backoff"),
                                   ("gradient_tolerance", gradient_tolerance,
                                    "gradient_tolerance"),
                                   ("gradient_smoothing", gradient_smoothing,
                                    "gradient_smoothing")):
            if value is not None:
                if isinstance(value, bool) or \
                        not isinstance(value, (int, float)):
                    raise TypeError("%s must be a number" % name)
                if not value > 0:
                    raise ValueError("%s must be positive, not %r"
                                     % (name, value))
                setattr(o, field, float(value))
        if aimd_latency is not None:
            o.aimd_latency_ns = seconds_to_ns(aimd_latency, "aimd_latency",
                                              allow_zero=False)
        if window is not None:
            o.window_ns = seconds_to_ns(window, "window", allow_zero=False)
        o.clock = clock_ptr(clock)
        pp = ffi.new("admit_admission_t**")
        rc = lib.admit_admission_new(pp, o)
        if rc == lib.ADMIT_EINVAL:
            raise ValueError("inconsistent admission options (e.g. "
                             "min_limit above max_limit)")
        check(rc)
        self._p = ffi.gc(pp[0], lib.admit_admission_free)
        self._clock = clock
        self._desc = "max_in_flight=%d, backlog=%d%s" % (
            max_in_flight, backlog,
            ", adaptive=%r" % adaptive if adaptive else "")

    def _error(self, rc: int, timeout_ns_: int = 0) -> Exception:
        if rc == lib.ADMIT_EFULL:
            return Rejected(rc, "over capacity: the backlog is full")
        if rc == lib.ADMIT_ESHED:
            return Overloaded(rc, "shed under overload")
        if rc == lib.ADMIT_ETIMEDOUT:
            return QueueTimeout(rc, "not admitted within %s s"
                                % fmt_seconds(timeout_ns_))
        return error_for(rc)

    def enter_blocking(self, *, timeout: float, priority: int = 1) -> Permit:
        """Admits a request, blocking this thread (GIL released) at most
        ``timeout`` seconds in the backlog."""
        t = timeout_ns(timeout)
        nonneg_int(priority, "priority", maximum=_PRIO_MAX)
        c = ffi.new("admit_admission_permit_t*")
        rc = lib.admit_admission_enter(self._p, priority, t, c)
        if rc < 0:
            raise self._error(rc, t)
        return Permit(self, c)

    async def enter(self, *, timeout: float, priority: int = 1) -> Permit:
        """Admits a request, waiting on the event loop at most ``timeout``
        seconds; ``priority`` 0 is the most urgent class (never shed by
        default: health checks). Use the permit as ``async with`` or call
        :meth:`Permit.leave`."""
        t = timeout_ns(timeout)
        nonneg_int(priority, "priority", maximum=_PRIO_MAX)
        c = ffi.new("admit_admission_permit_t*")
        if t == 0:
            # Never waits, so the blocking form answers at once.
            rc = lib.admit_admission_enter(self._p, priority, 0, c)
            if rc < 0:
                raise self._error(rc, t)
            return Permit(self, c)
        loop = asyncio.get_running_loop()
        n = notifier(loop)
        w = Waiter(n, loop.create_future(), _noop)
        w.extra = c
        rc = lib.admit_admission_enter_async(self._p, priority, c, _CB, w.node)
        if rc == 1:
            return Permit(self, c)
        if rc < 0:
            raise self._error(rc, t)
        n.register(w)
        timer = None
        if t < U64_MAX:
            timer = loop.call_later(t / 1e9, self._expire, n, w, t)
        try:
            status = await w.future
        except BaseException:
            if w.state == GRANTED and w.status == 0:
                Permit(self, c).leave(Outcome.CANCELLED)
            elif w.state == WAITING:
                self._abandon(n, w)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if status == 0:
            return Permit(self, c)
        if status == lib.ADMIT_ECLOSED:
            raise Closed(status)
        raise self._error(status, t)

    def _abandon(self, n: Any, w: Waiter) -> None:
        w.state = ABANDONED
        if lib.admit_admission_cancel(self._p, w.extra) == 1:
            n.forget(w)
        elif w.extra.status == 0:
            # Admitted at this instant: leave again at once.
            lib.admit_admission_leave(self._p, w.extra,
                                      lib.ADMIT_OUTCOME_CANCELLED)

    def _expire(self, n: Any, w: Waiter, t: int) -> None:
        if w.state != WAITING:
            return
        self._abandon(n, w)
        if not w.future.done():
            w.future.set_exception(self._error(lib.ADMIT_ETIMEDOUT, t))

    def admit(self, *, timeout: float, priority: int = 1) -> "_Admit":
        """``async with ctl.admit(timeout=5): ...`` — enter, run the body,
        leave with the body's outcome."""
        timeout_ns(timeout)
        nonneg_int(priority, "priority", maximum=_PRIO_MAX)
        return _Admit(self, timeout, priority)

    @property
    def limit(self) -> int:
        """The limit on requests in flight; assign to set it (an adaptive
        limit moves on from there)."""
        return self.stats().limit

    @limit.setter
    def limit(self, value: int) -> None:
        positive_int(value, "limit", maximum=(1 << 32) - 1)
        check(lib.admit_admission_set_limit(self._p, value))

    def stats(self) -> AdmissionStats:
        """Limit, in flight, backlog, counters and latency histograms."""
        s = ffi.new("admit_admission_stats_t*")
        check(lib.admit_admission_stats(self._p, s))
        return AdmissionStats(
            s.limit, s.in_flight, s.waiting, s.backlog, s.admitted,
            s.rejected, s.shed, s.displaced, s.timed_out, s.cancelled,
            s.completed, s.errors, s.recent_calls, s.recent_errors,
            bool(s.shedding), s.oldest_wait_ns / 1e9,
            histogram(s.queue_wait), histogram(s.latency))

    def __repr__(self) -> str:
        s = self.stats()
        return "AdmissionController(%s, in_flight=%d, waiting=%d)" % (
            self._desc, s.in_flight, s.waiting)


def _noop(_: Waiter) -> None:
    pass


class _Admit:
    __slots__ = ("_ctl", "_timeout", "_priority", "_permit")

    def __init__(self, ctl: AdmissionController, timeout: float,
                 priority: int) -> None:
        self._ctl = ctl
        self._timeout = timeout
        self._priority = priority
        self._permit: Optional[Permit] = None

    async def __aenter__(self) -> Permit:
        self._permit = await self._ctl.enter(timeout=self._timeout,
                                             priority=self._priority)
        return self._permit

    async def __aexit__(self, et: Optional[Type[BaseException]],
                        ev: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        if self._permit is not None:
            self._permit.leave(outcome_of(ev))
