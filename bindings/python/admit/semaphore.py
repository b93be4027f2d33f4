"""A counting semaphore over ``admit_semaphore_t``: bounded, prioritised
FIFO waiting, usable from threads and from asyncio at the same time.

Asyncio waiters queue in C (``admit_semaphore_acquire_async``); the grant
travels back to the loop through its completion queue (see ``_loop``), so
no C wait ever runs on the loop thread. A waiter that times out or is
cancelled withdraws from the queue, and if the permit was granted at that
very moment it is released again: permits are never lost.
"""

import asyncio
import functools
from types import TracebackType
from typing import Any, Awaitable, Callable, NamedTuple, Optional, Type, \
    TypeVar

from ._admit import ffi, lib
from ._loop import ABANDONED, GRANTED, WAITING, Waiter, notifier
from ._util import U64_MAX, check, fmt_seconds, nonneg_int, positive_int, \
    timeout_ns
from .errors import Closed, QueueTimeout, Rejected, error_for

__all__ = ["Semaphore", "SemaphoreStats"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
_CAP_MAX = (1 << 62) - 1
_SEM_CB = ffi.addressof(lib, "admit_notify_semaphore_cb")
_EFULL = lib.ADMIT_EFULL
_ETIMEDOUT = lib.ADMIT_ETIMEDOUT


class SemaphoreStats(NamedTuple):
    """A point-in-time view of a semaphore."""

    capacity: int
    in_use: int
    waiting: int
    acquired: int
    rejected: int
    timed_out: int
    cancelled: int


def _noop(_: Waiter) -> None:
    pass


class Semaphore:
    """Capacity-bounded concurrency: at most ``capacity`` permits out.

    ``max_waiters`` bounds the queue (a full queue rejects at once with
    :class:`admit.Rejected`); None queues without bound, 0 never waits.
    Waiters are served by ``priority`` (0 first, up to 7) and FIFO within a
    priority. Safe from any thread and any event loop; a permit may be
    released by another thread or task than the one that took it.

    >>> sem = Semaphore(10, max_waiters=100)
    >>> async with sem.slot(timeout=5):
    ...     await call_vendor()
    """

    __slots__ = ("_p", "_max_waiters", "__weakref__")

    def __init__(self, capacity: int, *,
                 max_waiters: Optional[int] = None) -> None:
        positive_int(capacity, "capacity", maximum=_CAP_MAX)
        opts = ffi.new("admit_semaphore_options_t*")
        opts.capacity = capacity
        if max_waiters is None:
            opts.unbounded_waiters = 1
        else:
            opts.max_waiters = nonneg_int(max_waiters, "max_waiters")
        pp = ffi.new("admit_semaphore_t**")
        check(lib.admit_semaphore_new(pp, opts))
        self._p = ffi.gc(pp[0], lib.admit_semaphore_free)
        self._max_waiters = max_waiters

    # -- state ------------------------------------------------------------

    def stats(self) -> SemaphoreStats:
        """A consistent snapshot of capacity, permits held and waiters."""
        s = ffi.new("admit_semaphore_stats_t*")
        check(lib.admit_semaphore_stats(self._p, s))
        return SemaphoreStats(s.capacity, s.in_use, s.waiting, s.acquired,
                              s.rejected, s.timed_out, s.cancelled)

    @property
    def capacity(self) -> int:
        """The number of permits; assign to change it at run time (raising
        it wakes waiters, lowering it lets held permits drain)."""
        return self.stats().capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        positive_int(value, "capacity", maximum=_CAP_MAX)
        check(lib.admit_semaphore_set_capacity(self._p, value))

    @property
    def in_use(self) -> int:
        """Permits held now."""
        return self.stats().in_use

    @property
    def waiting(self) -> int:
        """Waiters queued now."""
        return self.stats().waiting

    def locked(self) -> bool:
        """True if a new caller would have to wait (asyncio's name)."""
        s = self.stats()
        return s.in_use >= s.capacity or s.waiting > 0

    # -- taking and giving back -------------------------------------------

    def try_acquire(self) -> bool:
        """Takes a permit if one is free and nobody is queued ahead."""
        return check(lib.admit_py_fast_semaphore_try(self._p)) == 1

    def release(self) -> None:
        """Returns a permit, handing it straight to the first waiter.

        Raises ValueError if no permit is held.
        """
        if lib.admit_semaphore_release(self._p) < 0:
            raise ValueError("release() without a permit held")

    def acquire_blocking(self, *, timeout: float, priority: int = 0) -> None:
        """Takes a permit, blocking this thread (GIL released) at most
        ``timeout`` seconds. Never call it on an event loop's thread."""
        t = timeout_ns(timeout)
        nonneg_int(priority, "priority", maximum=lib.ADMIT_PRIORITIES_MAX - 1)
        rc = lib.admit_semaphore_acquire(self._p, priority, t)
        if rc == 0:
            return
        raise self._error(rc, t)

    def _error(self, rc: int, t: int) -> Exception:
        if rc == _ETIMEDOUT:
            return QueueTimeout(rc, "no permit within %s s"
                                % fmt_seconds(t))
        if rc == _EFULL:
            return Rejected(rc, "the semaphore's wait queue is full (%d)"
                            % (self._max_waiters or 0))
        return error_for(rc)

    async def acquire(self, *, timeout: float, priority: int = 0) -> None:
        """Takes a permit, waiting on the event loop at most ``timeout``
        seconds (``admit.FOREVER`` for no deadline).

        Raises :class:`admit.QueueTimeout` when the time runs out and
        :class:`admit.Rejected` at once when the queue is full. If the task
        is cancelled, the wait is withdrawn and a permit granted at that
        instant is released, never lost.
        """
        t = timeout_ns(timeout)
        if priority:
            nonneg_int(priority, "priority",
                       maximum=lib.ADMIT_PRIORITIES_MAX - 1)
        p = self._p
        if lib.admit_py_fast_semaphore_try(p) == 1:
            return
        if t == 0:
            raise QueueTimeout(_ETIMEDOUT, "no permit free (timeout 0)")
        loop = asyncio.get_running_loop()
        n = notifier(loop)
        w = Waiter(n, loop.create_future(), _noop)
        ticket = ffi.new("uint64_t*")
        rc = lib.admit_semaphore_acquire_async(p, priority, _SEM_CB, w.node,
                                               ticket)
        if rc == 1:
            return
        if rc < 0:
            raise self._error(rc, t)
        w.extra = ticket[0]
        n.register(w)
        timer = None
        if t < U64_MAX:
            timer = loop.call_later(t / 1e9, self._expire, n, w, t)
        try:
            await w.future
        except BaseException:
            if w.state == GRANTED:
                # Granted, but the task was cancelled before it could run:
                # the permit goes back (gh-90155).
                self.release()
            elif w.state == WAITING:
                self._abandon(n, w)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if w.state != GRANTED:
            raise Closed(w.status)

    def _abandon(self, n: Any, w: Waiter) -> None:
        """Withdraws a waiter; if the grant won the race, releases it."""
        w.state = ABANDONED
        if lib.admit_semaphore_cancel(self._p, w.extra) == 1:
            n.forget(w)
        else:
            # Granted at this instant: the permit is ours and goes back
            # now; the completion still in flight is then ignored.
            self.release()

    def _expire(self, n: Any, w: Waiter, t: int) -> None:
        if w.state != WAITING:
            return
        self._abandon(n, w)
        if not w.future.done():
            w.future.set_exception(QueueTimeout(
                _ETIMEDOUT, "no permit within %s s" % fmt_seconds(t)))

    def slot(self, *, timeout: float, priority: int = 0) -> "_Slot":
        """An async context manager holding one permit for its body::

            async with sem.slot(timeout=5):
                ...
        """
        timeout_ns(timeout)
        nonneg_int(priority, "priority", maximum=lib.ADMIT_PRIORITIES_MAX - 1)
        return _Slot(self, timeout, priority)

    def limit(self, *, timeout: float, priority: int = 0) \
            -> Callable[[_F], _F]:
        """Decorates a coroutine function so each call holds a permit."""
        timeout_ns(timeout)
        nonneg_int(priority, "priority", maximum=lib.ADMIT_PRIORITIES_MAX - 1)

        def deco(fn: _F) -> _F:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError("limit() decorates coroutine functions; %r "
                                "is not one" % (fn,))

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                await self.acquire(timeout=timeout, priority=priority)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.release()
            return wrapper  # type: ignore[return-value]
        return deco

    def __repr__(self) -> str:
        s = self.stats()
        mw = "None" if self._max_waiters is None else str(self._max_waiters)
        return ("Semaphore(capacity=%d, max_waiters=%s, in_use=%d, "
                "waiting=%d)" % (s.capacity, mw, s.in_use, s.waiting))


class _Slot:
    """``async with`` support for :meth:`Semaphore.slot`."""

    __slots__ = ("_sem", "_timeout", "_priority")

    def __init__(self, sem: Semaphore, timeout: float, priority: int) -> None:
        self._sem = sem
        self._timeout = timeout
        self._priority = priority

    async def __aenter__(self) -> Semaphore:
        await self._sem.acquire(timeout=self._timeout,
                                priority=self._priority)
        return self._sem

    async def __aexit__(self, et: Optional[Type[BaseException]],
                        ev: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        # A plain C call: cancellation cannot interrupt it, so the permit
        # is always returned.
        self._sem.release()
