"""The vendor-call guard over ``admit_guard_t``: every outbound call to one
vendor passes a circuit breaker, a vendor pause, a local limiter, a global
(Redis) limiter and a semaphore, in that order, within one queue timeout;
then it runs under its own call timeout and may be retried with backoff
within a retry budget.

From asyncio the guard is driven with its step API: the C side never
blocks, waits are ``asyncio.sleep``, and queued stages (the semaphore, a
Redis decision) signal the loop through its completion queue. Cancellation
at any point gives back everything the attempt held, exactly once.
"""

import asyncio
import functools
from typing import Any, Awaitable, Callable, Dict, Iterable, NamedTuple, \
    Optional, TypeVar, Union

from ._admit import ffi, lib
from ._loop import ABANDONED, WAITING, Waiter, notifier
from ._util import NS, U64_MAX, check, cstr, fmt_seconds, key_bytes, \
    nonneg_int, positive_int, seconds_to_ns, text, timeout_ns
from .admission import histogram
from .breaker import CircuitBreaker, Outcome, outcome_of
from .errors import AdmitError, CircuitOpen, QueueTimeout, RateLimited, \
    Rejected, error_for
from .limiter import Limiter
from .rates import ManualClock, clock_ptr
from .semaphore import Semaphore

__all__ = ["Guard", "GuardPermit", "GuardMetrics", "VendorLimited"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
_NOTIFY = ffi.addressof(lib, "admit_guard_notify_post")
_DONE = ffi.addressof(lib, "admit_py_guard_done_post")
_READY = lib.ADMIT_GUARD_READY
_WAIT = lib.ADMIT_GUARD_WAIT
_PENDING = lib.ADMIT_GUARD_PENDING
_DEFAULT_RETRY_ON = (Outcome.FAILURE, Outcome.TIMEOUT,
                     Outcome.VENDOR_LIMITED)


class VendorLimited(Exception):
    """Raise it from a guarded call when the vendor answered 429: the call
    counts as VENDOR_LIMITED (retried, not an error for the breaker), and
    ``retry_after`` (seconds, if known) pauses the guard everywhere.
    ``response`` is whatever the caller wants to keep (e.g. the httpx
    response)."""

    admit_outcome = Outcome.VENDOR_LIMITED

    def __init__(self, response: Any = None, *,
                 retry_after: Optional[float] = None) -> None:
        super().__init__("the vendor answered 429 (rate limited)")
        self.response = response
        self.retry_after = retry_after

    def __repr__(self) -> str:
        if self.retry_after is None:
            return "VendorLimited()"
        return "VendorLimited(retry_after=%g)" % self.retry_after


class GuardMetrics(NamedTuple):
    """Counters, gauges and latency histograms of one guard."""

    started: int
    admitted: int
    rejected_breaker: int
    rejected_pause: int
    rejected_local: int
    rejected_global: int
    rejected_semaphore: int
    queue_timeouts: int
    errors: int
    cancelled: int
    succeeded: int
    failed: int
    call_timeouts: int
    vendor_limited: int
    retries: int
    retries_denied: int
    pauses: int
    breaker_state: Optional[str]
    in_flight: int
    waiting: int
    paused_for: float
    recent_calls: int
    recent_errors: int
    queue_wait: Dict[str, Any]
    call_time: Dict[str, Any]


class GuardPermit:
    """An admitted attempt: make the call by ``deadline``, then
    :meth:`leave` with its outcome (once)."""

    __slots__ = ("_guard", "_c", "_w", "_left")

    def __init__(self, guard: "Guard", c: Any, w: Optional[Waiter]) -> None:
        self._guard = guard
        self._c = c
        self._w = w
        self._left = False

    @property
    def attempt(self) -> int:
        """0 for the first attempt, then 1, 2, ..."""
        return self._c.attempt

    @property
    def call_timeout(self) -> float:
        """The call's budget in seconds."""
        return self._c.call_timeout_ns / NS

    def leave(self, outcome: Outcome = Outcome.SUCCESS) -> None:
        """Ends the attempt: records the outcome and latency, informs the
        breaker and releases the semaphore. A second call does nothing."""
        if self._left:
            return
        self._left = True
        check(lib.admit_guard_leave(self._c, int(Outcome(outcome))))
        _finish(self._w)

    async def __aenter__(self) -> "GuardPermit":
        return self

    async def __aexit__(self, et: Any, ev: Optional[BaseException],
                        tb: Any) -> None:
        self.leave(outcome_of(ev))

    def __repr__(self) -> str:
        return "GuardPermit(%r, attempt=%d%s)" % (
            self._guard.name, self.attempt, ", left" if self._left else "")


def _finish(w: Optional[Waiter]) -> None:
    """Retires an attempt's notification node: once the attempt is done
    nothing posts it any more, but a post may still sit in the queue; then
    the node stays registered (ignored) until drained."""
    if w is None or w.extra is None:
        return
    n = w.extra
    w.extra = None
    w.state = ABANDONED
    if w.node.node.queued_:
        n.register(w)
    else:
        n.forget(w)


def _noop(_: Waiter) -> None:
    pass


class Guard:
    """Guards calls to one vendor or dependency.

    Stages, in order (each optional): ``breaker`` (a
    :class:`admit.CircuitBreaker`), the vendor pause, ``local`` (an
    in-process limiter for smoothing), ``global_limiter`` (an
    :class:`admit.RedisLimiter` shared by every pod, for ``global_key``),
    ``semaphore`` (an :class:`admit.Semaphore`, taken last and held only
    for the call). A stage that can tell its wait will not fit the queue
    time left refuses at once. The borrowed objects may be shared between
    guards and are kept alive by this one.

    ``retries`` is how many retries a call may make by default. Only calls
    that ran and failed with an outcome in ``retry_on`` (default FAILURE,
    TIMEOUT and VENDOR_LIMITED) are retried, never the stages' own
    refusals (see :meth:`call`), within a budget of ``retry_min`` plus
    ``retry_ratio`` times the calls started per ``window``; backoff is
    exponential with full jitter, capped by ``backoff_base`` times 2 to
    the attempt and by ``backoff_max`` seconds. A call's queue timeout
    bounds its waiting across all its attempts.

    >>> guard = Guard("openai", global_limiter=vendor, semaphore=sem)
    >>> await guard.call(client.post, url, json=body, queue_timeout=5,
    ...                  call_timeout=30, retries=3)
    """

    def __init__(self, name: str = "default", *,
                 breaker: Optional[CircuitBreaker] = None,
                 local: Optional[Limiter] = None,
                 global_limiter: Any = None,
                 global_key: Union[None, str, bytes] = None,
                 semaphore: Optional[Semaphore] = None,
                 cost: int = 1, priority: int = 0,
                 call_timeout: float = 30.0, retries: int = 2,
                 retry_on: Iterable[Outcome] = _DEFAULT_RETRY_ON,
                 backoff_base: float = 0.1, backoff_max: float = 10.0,
                 retry_ratio: float = 0.2, retry_min: int = 10,
                 window: float = 10.0, quota_low_water: int = 0,
                 clock: Optional[ManualClock] = None) -> None:
        text(name, "name")
        if not name or len(name.encode()) > 128:
            raise ValueError("name must be 1..128 bytes, not %r" % (name,))
        from .redis import RedisLimiter
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError("breaker must be an admit.CircuitBreaker")
        if local is not None and not isinstance(local, Limiter):
            raise TypeError("local must be an admit limiter (TokenBucket, "
                            "FixedWindow, SlidingWindow)")
        if global_limiter is not None and \
                not isinstance(global_limiter, RedisLimiter):
            raise TypeError("global_limiter must be an admit.RedisLimiter")
        if semaphore is not None and not isinstance(semaphore, Semaphore):
            raise TypeError("semaphore must be an admit.Semaphore")
        o = ffi.new("admit_guard_options_t*")
        keep = [ffi.new("char[]", name.encode())]
        o.name = keep[0]
        if breaker is not None:
            o.breaker = breaker._p
        if local is not None:
            o.local = local._p
        if global_limiter is not None:
            o.redis = global_limiter._ptr()
            if global_key is not None:
                k = key_bytes(global_key, "global_key")
                if not k or len(k) > 128:
                    raise ValueError("global_key must be 1..128 bytes")
                keep.append(ffi.new("char[]", k))
                o.redis_key = keep[-1]
        elif global_key is not None:
            raise ValueError("global_key needs a global_limiter")
        if semaphore is not None:
            o.semaphore = semaphore._p
        o.cost = positive_int(cost, "cost")
        o.priority = nonneg_int(priority, "priority",
                                maximum=lib.ADMIT_PRIORITIES_MAX - 1)
        o.call_timeout_ns = seconds_to_ns(call_timeout, "call_timeout",
                                          allow_zero=False)
        self._retries = nonneg_int(retries, "retries", maximum=1000)
        # Python counts the attempts (a call may ask for more or fewer);
        # the C side keeps the budget and the backoff.
        o.max_attempts = 1_000_000
        if isinstance(retry_on, (str, bytes)) or \
                not all(isinstance(x, Outcome) or
                        (isinstance(x, int) and not isinstance(x, bool))
                        for x in retry_on):
            raise TypeError("retry_on must be admit.Outcome values")
        self._retry_on = frozenset(Outcome(x) for x in retry_on)
        o.backoff_base_ns = seconds_to_ns(backoff_base, "backoff_base",
                                          allow_zero=False)
        o.backoff_max_ns = seconds_to_ns(backoff_max, "backoff_max",
                                         allow_zero=False)
        if isinstance(retry_ratio, bool) or \
                not isinstance(retry_ratio, (int, float)):
            raise TypeError("retry_ratio must be a number")
        if not retry_ratio > 0:
            raise ValueError("retry_ratio must be positive, not %r"
                             % (retry_ratio,))
        o.retry_ratio = float(retry_ratio)
        o.retry_min = nonneg_int(retry_min, "retry_min",
                                 maximum=(1 << 32) - 1) or 0
        o.window_ns = seconds_to_ns(window, "window", allow_zero=False)
        o.quota_low_water = nonneg_int(quota_low_water, "quota_low_water")
        o.clock = clock_ptr(clock)
        pp = ffi.new("admit_guard_t**")
        rc = lib.admit_guard_new(pp, o)
        if rc == lib.ADMIT_EINVAL:
            raise ValueError("the guard's options are inconsistent")
        check(rc)
        self._p = ffi.gc(pp[0], lib.admit_guard_free)
        self.name = name
        # The borrowed handles must outlive the guard.
        self._borrowed = (breaker, local, global_limiter, semaphore, clock)
        self._call_timeout = float(call_timeout)

    # -- one attempt ------------------------------------------------------

    def _refusal(self, c: Any, rc: int) -> Exception:
        stage = cstr(lib.admit_guard_stage_name(c.stage)) or "?"
        ra = c.retry_after_ns / NS
        if rc == lib.ADMIT_EOPEN:
            return CircuitOpen(rc, "%s: the circuit breaker is open"
                               % self.name, retry_after=ra)
        if rc == lib.ADMIT_ETIMEDOUT:
            if stage in ("pause", "local", "global") and c.retry_after_ns:
                return RateLimited(rc, "%s: the %s stage's wait (%s s) would "
                                   "not fit the queue time" %
                                   (self.name, stage, fmt_seconds(
                                       c.retry_after_ns)), retry_after=ra)
            return QueueTimeout(rc, "%s: queue time ran out at the %s stage"
                                % (self.name, stage))
        if rc == lib.ADMIT_EFULL:
            return Rejected(rc, "%s: the %s stage's queue is full"
                            % (self.name, stage))
        return error_for(rc, "%s: %s (at the %s stage)" % (
            self.name, cstr(lib.admit_strerror(rc)), stage))

    async def _drive(self, c: Any, w: Waiter) -> None:
        """Steps an attempt to admission, sleeping and waiting on the loop;
        raises the refusal. On cancellation, gives everything back."""
        loop = asyncio.get_running_loop()
        n = w.extra
        wait = ffi.new("uint64_t*")
        step = lib.admit_guard_step
        try:
            while True:
                r = step(c, wait)
                if r == _READY:
                    return
                if r < 0:
                    raise self._refusal(c, r)
                if r == _WAIT:
                    await asyncio.sleep(wait[0] / NS)
                    continue
                # PENDING: a stage queued us; its completion (or the end of
                # the queue time) says when to step again.
                w.future = loop.create_future()
                w.state = WAITING
                n.register(w)
                timer = None
                if wait[0] < U64_MAX:
                    timer = loop.call_later(wait[0] / NS, _wake, w.future)
                try:
                    await w.future
                finally:
                    if timer is not None:
                        timer.cancel()
                    if w.state == WAITING:
                        w.state = ABANDONED
        except AdmitError:
            raise           # refused: the C side gave everything back
        except BaseException:
            # Cancelled (or interrupted): the C side gives back what the
            # attempt holds, exactly once.
            lib.admit_guard_cancel(c)
            _finish(w)
            raise

    def _start(self, queue_timeout: float) -> Any:
        t = timeout_ns(queue_timeout, "queue_timeout")
        loop = asyncio.get_running_loop()
        n = notifier(loop)
        w = Waiter(n, loop.create_future(), _noop)
        w.extra = n
        c = ffi.new("admit_guard_permit_t*")
        check(lib.admit_guard_start(self._p, c, t, _NOTIFY, w.node))
        return c, w, t

    async def enter(self, *, queue_timeout: float) -> GuardPermit:
        """Passes every stage within ``queue_timeout`` seconds and returns
        the admitted permit (use ``async with`` or :meth:`GuardPermit.leave`).
        Raises the refusal: :class:`admit.CircuitOpen`,
        :class:`admit.RateLimited` (a limiter's or pause's wait would not
        fit), :class:`admit.QueueTimeout`, :class:`admit.Rejected`,
        :class:`admit.BackendUnavailable`."""
        c, w, _ = self._start(queue_timeout)
        try:
            await self._drive(c, w)
        except AdmitError:
            _finish(w)
            raise
        return GuardPermit(self, c, w)

    def enter_blocking(self, *, queue_timeout: float) -> GuardPermit:
        """:meth:`enter` for threads: blocks (GIL released)."""
        t = timeout_ns(queue_timeout, "queue_timeout")
        c = ffi.new("admit_guard_permit_t*")
        rc = lib.admit_guard_enter(self._p, c, t)
        if rc < 0:
            raise self._refusal(c, rc)
        return GuardPermit(self, c, None)

    # -- whole calls ------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any,
                   queue_timeout: float,
                   call_timeout: Optional[float] = None,
                   retries: Optional[int] = None, **kwargs: Any) -> Any:
        """Awaits ``fn(*args, **kwargs)`` through the guard and returns its
        result: passes the stages, runs the call under ``call_timeout``
        seconds (default: the guard's) and retries failed calls up to
        ``retries`` times (default: the guard's) with backoff.

        What is retried: only a call that ran and raised, when its outcome
        (:func:`admit.outcome_of`) is in the guard's ``retry_on`` -- by
        default FAILURE (any exception not named below), TIMEOUT (the call
        timeout, or a ``TimeoutError`` from ``fn``) and VENDOR_LIMITED
        (:class:`VendorLimited`, the vendor's 429, which also pauses the
        guard for its ``retry_after``) -- and only while attempts remain,
        and the guard's retry budget has room.

        What is never retried: the guard's own refusals, raised at once --
        :class:`admit.CircuitOpen`, :class:`admit.RateLimited` (the pause,
        the local or the global limiter would not let the call through
        within the queue time left), :class:`admit.QueueTimeout` (the queue
        time ran out while waiting), :class:`admit.Rejected` (the
        semaphore's queue is full), :class:`admit.BackendUnavailable` and
        any other :class:`admit.AdmitError` of a stage -- and
        ``asyncio.CancelledError``. A refusal of a retry's attempt is
        raised with the previous call's exception as its ``__cause__``;
        when retries run out (or the budget refuses one), the last call's
        exception is raised.

        Time: ``queue_timeout`` bounds all the waiting of the call, across
        its attempts: each retry may wait in the stages only for what the
        earlier attempts left of it (once it is spent, a retry passes only
        if no stage makes it wait, and is refused at once otherwise). The
        backoff before a retry (at most the guard's ``backoff_max``) is not
        queue time. So a call returns or raises
        within ``queue_timeout + retries * backoff_max + (retries + 1) *
        call_timeout`` (plus a vendor pause's round trip to Redis).
        """
        if not callable(fn):
            raise TypeError("fn must be a coroutine function")
        max_retries = self._retries if retries is None else \
            nonneg_int(retries, "retries", maximum=1000)
        budget = None if call_timeout is None else seconds_to_ns(
            call_timeout, "call_timeout", allow_zero=False) / NS
        c, w, qt = self._start(queue_timeout)
        # Queue time not spent yet (U64_MAX: no deadline), and this
        # attempt's share of it.
        left = qt
        attempt_qt = qt
        last: Optional[BaseException] = None
        delay = ffi.new("uint64_t*")
        while True:
            try:
                await self._drive(c, w)
            except AdmitError as e:
                # A stage refused: never retried (the C side gave back
                # everything the attempt held).
                _finish(w)
                if last is not None:
                    e.__cause__ = last
                raise
            if left != U64_MAX:
                # The attempt waited from its start (its queue deadline
                # less its queue time) to its admission (its call deadline
                # less its call time), on the guard's clock.
                waited = (c.call_deadline_ns - c.call_timeout_ns) - \
                    (c.queue_deadline_ns - attempt_qt)
                left = max(0, left - max(0, waited))
            limit = budget if budget is not None else c.call_timeout_ns / NS
            try:
                result = await asyncio.wait_for(fn(*args, **kwargs), limit)
            except asyncio.CancelledError:
                lib.admit_guard_leave(c, lib.ADMIT_OUTCOME_CANCELLED)
                _finish(w)
                raise
            except BaseException as e:
                outcome = outcome_of(e)
                lib.admit_guard_leave(c, int(outcome))
                if isinstance(e, VendorLimited) and e.retry_after:
                    try:
                        await self.pause_async(e.retry_after)
                    except BaseException:
                        _finish(w)
                        raise
                if outcome in self._retry_on and c.attempt < max_retries \
                        and lib.admit_guard_retry(c, left, delay) == 1:
                    attempt_qt = left
                    last = e
                    continue
                _finish(w)
                raise
            lib.admit_guard_leave(c, lib.ADMIT_OUTCOME_SUCCESS)
            _finish(w)
            return result

    def protect(self, *, queue_timeout: float,
                call_timeout: Optional[float] = None,
                retries: Optional[int] = None) -> Callable[[_F], _F]:
        """Decorates a coroutine function so each call goes through
        :meth:`call`."""
        timeout_ns(queue_timeout, "queue_timeout")

        def deco(fn: _F) -> _F:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError("protect() decorates coroutine functions; "
                                "%r is not one" % (fn,))

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.call(fn, *args,
                                       queue_timeout=queue_timeout,
                                       call_timeout=call_timeout,
                                       retries=retries, **kwargs)
            return wrapper  # type: ignore[return-value]
        return deco

    # -- feedback from the vendor -----------------------------------------

    def pause(self, seconds: float) -> None:
        """Pauses the guard (and its global limiter, for every pod) for
        ``seconds``: the vendor answered 429 with ``Retry-After``. With a
        Redis stage this is a blocking round trip; from asyncio use
        :meth:`pause_async`."""
        check(lib.admit_guard_pause(self._p, seconds_to_ns(
            seconds, "seconds", allow_zero=False)))

    async def pause_async(self, seconds: float) -> None:
        """:meth:`pause` without blocking the event loop or using a thread:
        this process pauses at once, and the Redis stage's pause completes
        on the connection's I/O thread; returns once it has (so every pod
        sharing the global limiter is paused by then), or raises its error
        (e.g. :class:`admit.BackendUnavailable`; the local pause holds
        anyway, and the limiter counts it in ``pauses_lost``). Cancelling
        the caller does not cancel the pause."""
        ns = seconds_to_ns(seconds, "seconds", allow_zero=False)
        loop = asyncio.get_running_loop()
        n = notifier(loop)
        w = Waiter(n, loop.create_future(), _nothing)
        check(lib.admit_guard_pause_cb(self._p, ns, _DONE, w.node))
        n.register(w)
        status = await asyncio.shield(w.future)
        check(status)

    def vendor_quota(self, remaining: int, reset_after: float) -> bool:
        """Feeds the vendor's remaining-quota headers back; pauses (and
        returns True) when ``remaining`` is at most ``quota_low_water``."""
        nonneg_int(remaining, "remaining")
        return check(lib.admit_guard_vendor_quota(
            self._p, remaining, seconds_to_ns(reset_after,
                                              "reset_after"))) == 1

    def metrics(self) -> GuardMetrics:
        """Counters, gauges and latency histograms."""
        m = ffi.new("admit_guard_metrics_t*")
        check(lib.admit_guard_metrics(self._p, m))
        bs = None if m.breaker_state < 0 else \
            cstr(lib.admit_breaker_state_name(m.breaker_state))
        return GuardMetrics(
            m.started, m.admitted, m.rejected_breaker, m.rejected_pause,
            m.rejected_local, m.rejected_global, m.rejected_semaphore,
            m.queue_timeouts, m.errors, m.cancelled, m.succeeded, m.failed,
            m.call_timeouts, m.vendor_limited, m.retries, m.retries_denied,
            m.pauses, bs, m.in_flight, m.waiting, m.paused_for_ns / NS,
            m.recent_calls, m.recent_errors, histogram(m.queue_wait),
            histogram(m.call_time))

    def __repr__(self) -> str:
        stages = [n for n, h in zip(("breaker", "local", "global",
                                     "semaphore"), self._borrowed) if h]
        return "Guard(%r, stages=%s, call_timeout=%g, retries=%d)" % (
            self.name, "+".join(stages) or "none", self._call_timeout,
            self._retries)


def _wake(fut: "asyncio.Future[Any]") -> None:
    if not fut.done():
        fut.set_result(None)


def _nothing(w: Waiter) -> None:
    """A pause has nothing to give back when its caller is gone."""
