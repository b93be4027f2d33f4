"""Delivery of C completions to an asyncio event loop (private).

Each event loop gets one ``admit_notify_t``: C callbacks, running on any
thread, post a preallocated node into it (lock-free, never allocating);
its eventfd wakes the loop through ``loop.add_reader``, and the loop thread
drains the completions and resolves futures. Python code never runs on a
foreign thread, and nothing blocks the loop.

A waiter moves through WAITING -> GRANTED (the C side handed it what it
waited for) or WAITING -> ABANDONED (its task gave up first). Whoever
changes the state first decides who must give the permit back, so a grant
that races a cancellation is never lost (CPython gh-90155).
"""

import asyncio
import itertools
import weakref
from typing import Any, Callable, Dict, Optional

from ._admit import ffi, lib
from ._util import address, check, native

WAITING, GRANTED, FAILED, ABANDONED = 0, 1, 2, 3


class Waiter:
    """One pending asynchronous C wait, owned by the loop's notifier."""

    __slots__ = ("id", "node", "future", "state", "status", "on_grant_lost",
                 "value", "extra")

    # ``node`` is an admit_notify_decision_t: its first member is the
    # admit_notify_node_t, so it serves plain and decision callbacks alike.

    def __init__(self, notifier: "Notifier", future: "asyncio.Future[Any]",
                 on_grant_lost: Callable[["Waiter"], None]) -> None:
        self.id = next(notifier.ids)
        self.node = ffi.new("admit_notify_decision_t*")
        self.node.node.notify = notifier.ptr
        self.node.node.id = self.id
        self.future = future
        self.state = WAITING
        self.status = 0
        self.value = 0
        self.extra: Any = None
        # Called on the loop thread when a grant arrives for a waiter that
        # was abandoned without being able to withdraw (must give it back).
        self.on_grant_lost = on_grant_lost


class Notifier:
    """The completion queue of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        pp = ffi.new("admit_notify_t**")
        check(lib.admit_notify_new(pp))
        self.ptr = pp[0]
        self.addr = address(self.ptr)
        # Native pending tries (admit._native) not yet completed.
        self.native_pending = 0
        self.fd = lib.admit_notify_fd(self.ptr)
        # Weak, so the loop can be collected and close() can run.
        self._loop = weakref.ref(loop)
        self.ids = itertools.count(1)
        self.waiters: Dict[int, Waiter] = {}
        self._closed = False
        loop.add_reader(self.fd, self._on_readable)

    def register(self, w: Waiter) -> None:
        """Tracks ``w`` until its completion arrives."""
        self.waiters[w.id] = w

    def forget(self, w: Waiter) -> None:
        """Stops tracking a waiter whose C wait was withdrawn."""
        self.waiters.pop(w.id, None)

    def _on_readable(self) -> None:
        # Native pending tries are resolved inside drain(); the other
        # completions come back as (id, value, status).
        native_done, rest, taken = native.drain(self.addr, 1024)
        self.native_pending -= native_done
        for cid, value, status in rest:
            w = self.waiters.pop(cid, None)
            if w is None:
                continue
            w.status = status
            w.value = value
            if w.state == WAITING:
                w.state = GRANTED if status >= 0 else FAILED
                fut = w.future
                if not fut.done():
                    fut.set_result(status)
                # If the future is already cancelled, the task's cleanup
                # sees GRANTED and gives the permit back.
            elif w.state == ABANDONED and status >= 0:
                w.on_grant_lost(w)
        if taken >= 1024:
            # Let other callbacks run; the rest stays queued in C (the
            # descriptor was reset, so come back by call_soon).
            loop = self._loop()
            if loop is not None and not loop.is_closed():
                loop.call_soon(self._on_readable)

    def close(self) -> None:
        """Frees the queue if no wait can still post to it."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.fd)
        if not self.waiters and not self.native_pending:
            lib.admit_notify_free(self.ptr)
        # Otherwise a C callback may still post into it: keep it (a few
        # bytes and one descriptor) rather than risk a use after free.


_notifiers: "weakref.WeakKeyDictionary[Any, Notifier]" = \
    weakref.WeakKeyDictionary()


def notifier(loop: Optional[asyncio.AbstractEventLoop] = None) -> Notifier:
    """Returns the running loop's notifier, creating it on first use."""
    if loop is None:
        loop = asyncio.get_running_loop()
    n = _notifiers.get(loop)
    if n is None or n._closed:
        n = Notifier(loop)
        _notifiers[loop] = n
        weakref.finalize(loop, n.close)
    return n
