"""Redis-coordinated global limits over ``admit_redis_t``: one quota per
subject shared by every process and pod that uses the same Redis.

The C library owns the connection (a background I/O thread pipelining
every caller's requests) and runs one atomic Lua script per decision on
the server's clock. From asyncio, decisions are asked with
``admit_redis_limiter_try_cb`` and answered through the loop's completion
queue, so no network I/O ever happens on the event loop's thread; the
blocking forms release the GIL.
"""

import asyncio
import os
import random
import re
import threading
import time
import weakref
from typing import Any, NamedTuple, Optional, Set, Union

from ._admit import ffi, lib
from ._loop import Waiter, notifier
from ._util import NS, U64_MAX, address, check, key_bytes, native, \
    nonneg_int, positive_int, seconds_to_ns, text, timeout_ns
from .errors import AdmitError, Closed, RateLimited, error_for
from .limiter import Decision
from .rates import Algorithm, Quota, RateSpec, quota_of

__all__ = ["Redis", "RedisStats", "RedisLimiter", "RedisLimiterStats",
           "GlobalLimiter", "Reservation", "RedisSemaphore", "Lease"]

_DONE_CB = ffi.addressof(lib, "admit_py_done_post")
_ETIMEDOUT = lib.ADMIT_ETIMEDOUT

_POLICIES = {"fail_closed": 0, "fail_open": 1, "fallback": 2}


def _policy(value: Any) -> int:
    if isinstance(value, str):
        key = value.lower().replace("-", "_")
        if key in _POLICIES:
            return _POLICIES[key]
    raise ValueError("on_failure must be 'fail_closed', 'fail_open' or "
                     "'fallback', not %r" % (value,))


def _opt_ns(value: Any, name: str) -> int:
    return 0 if value is None else seconds_to_ns(value, name,
                                                  allow_zero=False)


class RedisStats(NamedTuple):
    """A point-in-time view of a Redis connection."""

    connected: int
    breaker: str
    instances: int
    last_error: int
    commands: int
    replies: int
    timeouts: int
    failures: int
    connects: int
    connect_errors: int
    disconnects: int
    script_loads: int
    breaker_trips: int
    breaker_skips: int


_BREAKER = {0: "closed", 1: "open", 2: "half_open"}


def _mask(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


class Redis:
    """A connection to one Redis server, shared by every thread.

    ``url`` is ``redis://[user:password@]host[:port][/db]`` or
    ``unix:///path.sock[?db=N]``; None means ``ADMIT_REDIS_URL``, else
    ``redis://localhost:6379/0``. Every call returns within its timeout
    whatever Redis does; an unreachable server does not fail here (calls
    follow their failure policy while the connection retries), but a
    misconfiguration raises :class:`admit.ConfigError`.
    """

    def __init__(self, url: Optional[str] = None, *,
                 prefix: Optional[str] = None,
                 connect_timeout: Optional[float] = None,
                 command_timeout: Optional[float] = None,
                 connections: Optional[int] = None,
                 max_queue: Optional[int] = None,
                 breaker_failures: Optional[int] = None,
                 breaker_cooldown: Optional[float] = None,
                 heartbeat: Optional[float] = None) -> None:
        if url is not None:
            text(url, "url")
        if prefix is not None:
            text(prefix, "prefix")
        opts = ffi.new("admit_redis_options_t*")
        keep = []
        if url is not None:
            keep.append(ffi.new("char[]", url.encode()))
            opts.url = keep[-1]
        if prefix is not None:
            keep.append(ffi.new("char[]", prefix.encode()))
            opts.prefix = keep[-1]
        opts.connect_timeout_ns = _opt_ns(connect_timeout, "connect_timeout")
        opts.command_timeout_ns = _opt_ns(command_timeout, "command_timeout")
        if connections is not None:
            opts.connections = positive_int(connections, "connections",
                                            maximum=64)
        if max_queue is not None:
            opts.max_queue = positive_int(max_queue, "max_queue",
                                          maximum=(1 << 32) - 1)
        if breaker_failures is not None:
            opts.breaker_failures = positive_int(
                breaker_failures, "breaker_failures", maximum=(1 << 32) - 1)
        opts.breaker_cooldown_ns = _opt_ns(breaker_cooldown,
                                           "breaker_cooldown")
        opts.heartbeat_ns = _opt_ns(heartbeat, "heartbeat")
        pp = ffi.new("admit_redis_t**")
        rc = lib.admit_redis_new(pp, opts)
        if rc < 0:
            raise error_for(rc, "cannot use Redis at %s: %s" % (
                _mask(url or os.environ.get("ADMIT_REDIS_URL") or
                      "redis://localhost:6379/0"),
                ffi.string(lib.admit_strerror(rc)).decode()))
        self._p: Any = pp[0]
        self.url = url or os.environ.get("ADMIT_REDIS_URL") or \
            "redis://localhost:6379/0"
        self.prefix = prefix or "admit"
        self._children: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._finalizer = weakref.finalize(self, lib.admit_redis_free,
                                           self._p)
        # Loops whose current iteration holds this connection's calls
        # (see _hold), and how many holds are outstanding.
        self._held_loops: Set[Any] = set()
        self._holds = 0
        self._hold_lock = threading.Lock()

    def _hold(self, loop: asyncio.AbstractEventLoop) -> None:
        """Holds this connection's asynchronous calls until the end of
        ``loop``'s current iteration (admit_redis_hold): the calls its tasks
        make in one iteration then reach Redis together, and tries on one
        limiter become one script call. Called before each asynchronous
        call; holds once per iteration."""
        if loop in self._held_loops:
            return
        with self._hold_lock:
            if self._p is None:
                return
            # A loop closed before its iteration's release ran must not keep
            # every other loop's calls held.
            for closed in [x for x in self._held_loops if x.is_closed()]:
                self._held_loops.discard(closed)
                self._holds -= 1
                lib.admit_redis_release(self._p)
            if lib.admit_redis_hold(self._p) != 0:
                return
            self._holds += 1
            self._held_loops.add(loop)
        loop.call_soon(self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._hold_lock:
            self._held_loops.discard(loop)
            if self._holds and self._p is not None:
                self._holds -= 1
                lib.admit_redis_release(self._p)

    def _ptr(self) -> Any:
        if self._p is None:
            raise Closed(lib.ADMIT_ECLOSED, "the Redis connection is closed")
        return self._p

    def ping(self, timeout: float = 1.0) -> None:
        """Sends PING; raises :class:`admit.BackendUnavailable` if no PONG
        comes within ``timeout`` seconds. Blocks (GIL released)."""
        t = seconds_to_ns(timeout, "timeout", allow_zero=False)
        check(lib.admit_redis_ping(self._ptr(), t))

    async def ping_async(self, timeout: float = 1.0) -> None:
        """:meth:`ping` in a worker thread, off the event loop."""
        await asyncio.get_running_loop().run_in_executor(
            None, self.ping, timeout)

    def stats(self) -> RedisStats:
        """Connection state and counters."""
        s = ffi.new("admit_redis_stats_t*")
        check(lib.admit_redis_stats(self._ptr(), s))
        return RedisStats(s.connected, _BREAKER.get(s.breaker, "unknown"),
                          s.instances, s.last_error, s.commands, s.replies,
                          s.timeouts, s.failures, s.connects,
                          s.connect_errors, s.disconnects, s.script_loads,
                          s.breaker_trips, s.breaker_skips)

    def close(self) -> None:
        """Frees the connection, then every limiter and semaphore made on
        it. Idempotent. Raises :class:`admit.AdmitError` (``ADMIT_EBUSY``)
        while asynchronous decisions are awaited."""
        if self._p is None:
            return
        if any(getattr(c, "_inflight", 0) for c in list(self._children)):
            raise AdmitError(lib.ADMIT_EBUSY, "asynchronous decisions are "
                             "still in flight on this connection")
        with self._hold_lock:
            # Held calls go out first; a release still scheduled finds the
            # connection gone.
            while self._holds:
                self._holds -= 1
                lib.admit_redis_release(self._p)
            # Calls nobody awaits any more (cancelled callers, refunds) may
            # still be in flight: freeing the connection completes them
            # (ADMIT_ECLOSED), and only then may their limiters go.
            self._finalizer()
            self._p = None
        for child in list(self._children):
            child._close()

    def __enter__(self) -> "Redis":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Redis(%r, prefix=%r%s)" % (
            _mask(self.url), self.prefix,
            "" if self._p is not None else ", closed")


class RedisLimiterStats(NamedTuple):
    """Counters of one Redis limiter.

    ``refunds`` and ``pauses`` count those Redis applied; ``refunds_lost``
    and ``pauses_lost`` those that failed or never reached Redis (never
    retried: a refund that timed out may have run).
    """

    degraded: bool
    instances: int
    decisions: int
    remote: int
    fail_open: int
    fallback: int
    unavailable: int
    errors: int
    refunds: int
    refunds_lost: int
    pauses: int
    pauses_lost: int


class Reservation(NamedTuple):
    """Units reserved with :meth:`RedisLimiter.reserve`, settled later."""

    reserved: bool
    local: bool
    cost: int
    taken_at_ns: int


class RedisLimiter:
    """A global limiter: one quota per subject key, enforced in Redis.

    Decisions mean what in-process decisions mean (same algorithms), with
    the Redis server's clock. ``on_failure`` says what happens when Redis
    cannot answer: ``"fail_closed"`` (raise
    :class:`admit.BackendUnavailable`), ``"fail_open"`` (admit) or
    ``"fallback"`` (a local limiter at this instance's share). Safe from
    any thread and event loop.

    >>> vendor = RedisLimiter(redis, "500/minute", name="openai")
    >>> await vendor.wait_and_acquire("org-1", timeout=3.0)
    """

    def __init__(self, redis: Redis, rate: Union[RateSpec, Quota], *,
                 algorithm: Union[Algorithm, str] = Algorithm.TOKEN_BUCKET,
                 burst: Any = None, name: Optional[str] = None,
                 on_failure: str = "fail_closed",
                 max_key_len: Optional[int] = None,
                 fallback_max_keys: Optional[int] = None) -> None:
        if not isinstance(redis, Redis):
            raise TypeError("redis must be an admit.Redis, not %s"
                            % type(redis).__name__)
        quota = quota_of(rate, algorithm, burst)
        opts = ffi.new("admit_redis_limiter_options_t*")
        opts.quota = quota._c
        cname = None
        if name is not None:
            text(name, "name")
            if not name or len(name.encode()) > 64 or "{" in name or \
                    "}" in name:
                raise ValueError("name must be 1..64 bytes without '{' or "
                                 "'}', not %r" % (name,))
            cname = ffi.new("char[]", name.encode())
            opts.name = cname
        opts.on_failure = _policy(on_failure)
        if max_key_len is not None:
            opts.max_key_len = positive_int(max_key_len, "max_key_len",
                                            maximum=(1 << 32) - 1)
        if fallback_max_keys is not None:
            opts.fallback_max_keys = positive_int(fallback_max_keys,
                                                  "fallback_max_keys")
        pp = ffi.new("admit_redis_limiter_t**")
        rc = lib.admit_redis_limiter_new(pp, redis._ptr(), opts)
        if rc == lib.ADMIT_EINVAL:
            raise ValueError("quota %r cannot be enforced in Redis (at most "
                             "2^52 ns per period, 2^32 per window)"
                             % (quota,))
        check(rc)
        self._p: Any = pp[0]
        self._redis = redis
        self._quota = quota
        self._name = name
        self._policy = on_failure
        self._inflight = 0
        self._finalizer = weakref.finalize(self, lib.admit_redis_limiter_free,
                                           self._p)
        ref = weakref.ref(self)

        def on_lost(k: bytes, cost: int) -> None:
            lim = ref()
            if lim is not None:
                lim._give_back(k, cost)

        # Submits asynchronous tries (fastpath.c). It holds the limiter
        # weakly (no cycle: reference counting frees it); each pending try
        # holds it until its completion.
        self._submit = native.redis_try(address(self._p), self._p, on_lost,
                                        Decision)
        redis._children.add(self)

    def _close(self) -> None:
        if self._p is not None:
            self._finalizer()
            self._p = None

    def _ptr(self) -> Any:
        if self._p is None:
            raise Closed(lib.ADMIT_ECLOSED, "the Redis connection is closed")
        return self._p

    @property
    def quota(self) -> Quota:
        """The quota enforced."""
        return self._quota

    def _fail(self, rc: int, key: Any, cost: Any) -> Exception:
        positive_int(cost, "cost")
        if rc == lib.ADMIT_EINVAL:
            k = key_bytes(key)
            if not k:
                return ValueError("key must not be empty")
            if cost > min(self._quota.burst):
                return ValueError("cost %d exceeds the burst %d of %s; it "
                                  "could never be admitted"
                                  % (cost, min(self._quota.burst),
                                     self._quota.spec))
            return ValueError("key is too long (%d bytes)" % len(k))
        return error_for(rc)

    def try_acquire(self, key: Union[str, bytes], cost: int = 1) -> Decision:
        """Decides now whether ``cost`` units may proceed for ``key``
        (one round trip; blocks this thread, GIL released)."""
        k = key.encode() if type(key) is str else key_bytes(key)
        d = ffi.new("admit_decision_t*")
        try:
            rc = lib.admit_redis_limiter_try(self._ptr(), k, len(k), cost, d)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc < 0:
            raise self._fail(rc, key, cost)
        return Decision._from_c(d)

    def hit(self, key: Union[str, bytes], cost: int = 1) -> bool:
        """:meth:`try_acquire`, returning only whether it was allowed."""
        return self.try_acquire(key, cost).allowed

    async def try_acquire_async(self, key: Union[str, bytes],
                                cost: int = 1) -> Decision:
        """Decides whether ``cost`` units may proceed for ``key``, without
        blocking the event loop (the reply comes back through the loop's
        completion queue). If the task is cancelled after Redis admitted
        the units, they are refunded."""
        k = key.encode() if type(key) is str else key_bytes(key)
        if self._p is None:         # closed: _submit's C limiter is freed
            self._ptr()
        loop = asyncio.get_running_loop()
        n = notifier(loop)
        fut = loop.create_future()
        self._redis._hold(loop)
        try:
            rc = self._submit(k, cost, fut, n.addr, self)
        except (TypeError, OverflowError):
            positive_int(cost, "cost")
            raise
        if rc < 0:
            raise self._fail(rc, key, cost)
        n.native_pending += 1
        self._inflight += 1
        try:
            res = await fut
        except BaseException:
            # A decision set before this task could resume is this task's
            # to give back; one that comes later, the completion's (it
            # finds the future cancelled).
            if fut.done() and not fut.cancelled():
                res = fut.result()
                if res.__class__ is Decision and res.allowed:
                    self._give_back(k, cost)
            raise
        finally:
            self._inflight -= 1
        if res.__class__ is int:
            raise self._fail(res, key, cost)
        return res

    def _give_back(self, k: bytes, cost: int) -> None:
        """Units admitted for a caller that is gone: give them back without
        waiting (a refund that fails is counted in the stats,
        ``refunds_lost``)."""
        if self._p is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                self.refund(k, cost)
            except Exception:
                pass
            return
        try:
            self._start_done(lib.admit_redis_limiter_refund_cb, k, cost,
                             loop)
        except Exception:
            pass    # not queued: counted in refunds_lost by the library

    def _start_done(self, fn: Any, k: bytes, arg: int,
                    loop: asyncio.AbstractEventLoop) -> Waiter:
        """Starts an asynchronous refund or pause (``fn``) whose outcome
        comes back through the loop's completion queue; returns its
        waiter (raises if it could not be queued)."""
        n = notifier(loop)
        w = Waiter(n, loop.create_future(), _nothing)
        # Registered until it completes: keeps this limiter (whose C object
        # serves the call) alive that long.
        w.extra = self
        rc = fn(self._ptr(), k, len(k), arg, _DONE_CB, w.node)
        if rc < 0:
            raise self._fail(rc, k, 1)
        n.register(w)
        return w

    async def _await_done(self, w: Waiter) -> int:
        """Waits for an asynchronous refund or pause; if the caller is
        cancelled, the operation still completes (it is already queued to
        Redis and its outcome is still drained)."""
        self._inflight += 1
        try:
            return await asyncio.shield(w.future)
        finally:
            self._inflight -= 1

    async def wait_and_acquire(self, key: Union[str, bytes], cost: int = 1,
                               *, timeout: float) -> Decision:
        """Waits on the event loop until ``cost`` units may proceed for
        ``key``, at most ``timeout`` seconds (``admit.FOREVER``: no
        deadline).

        When denied, sleeps the server-reported ``retry_after`` plus a
        little jitter and asks again; raises :class:`admit.RateLimited` at
        once, without sleeping, when the wait cannot fit what is left of
        the timeout.
        """
        t = timeout_ns(timeout)
        deadline = time.monotonic_ns() + t if t < U64_MAX else None
        while True:
            d = await self.try_acquire_async(key, cost)
            if d.allowed:
                return d
            left = U64_MAX if deadline is None else \
                max(0, deadline - time.monotonic_ns())
            if d.retry_after_ns > left:
                raise RateLimited(_ETIMEDOUT, retry_after=d.retry_after,
                                  decision=d)
            jitter = random.randint(0, max(1, min(d.retry_after_ns // 10,
                                                  10_000_000)))
            await asyncio.sleep(min(d.retry_after_ns + jitter, left) / NS)

    acquire = wait_and_acquire

    def acquire_blocking(self, key: Union[str, bytes], cost: int = 1, *,
                         timeout: float) -> Decision:
        """:meth:`wait_and_acquire` for threads: blocks (GIL released)."""
        t = timeout_ns(timeout)
        k = key_bytes(key)
        positive_int(cost, "cost")
        d = ffi.new("admit_decision_t*")
        rc = lib.admit_redis_limiter_acquire(self._ptr(), k, len(k), cost, t,
                                             d)
        if rc == _ETIMEDOUT:
            raise RateLimited(rc, retry_after=d.retry_after_ns / NS,
                              decision=Decision._from_c(d))
        if rc < 0:
            raise self._fail(rc, key, cost)
        return Decision._from_c(d)

    def peek(self, key: Union[str, bytes]) -> Decision:
        """What a check of ``key`` would see, consuming nothing."""
        k = key_bytes(key)
        d = ffi.new("admit_decision_t*")
        rc = lib.admit_redis_limiter_peek(self._ptr(), k, len(k), d)
        if rc < 0:
            raise self._fail(rc, key, 1)
        return Decision._from_c(d)

    def refund(self, key: Union[str, bytes], cost: int = 1) -> None:
        """Gives back ``cost`` units taken but not used (blocks)."""
        k = key_bytes(key)
        positive_int(cost, "cost")
        rc = lib.admit_redis_limiter_refund(self._ptr(), k, len(k), cost)
        if rc < 0:
            raise self._fail(rc, key, cost)

    async def refund_async(self, key: Union[str, bytes],
                           cost: int = 1) -> None:
        """Gives back ``cost`` units without blocking the event loop or
        using a thread: the refund is queued to the connection's I/O
        thread and its outcome comes back through the loop's completion
        queue. Cancelling the caller does not cancel the refund. A refund
        that fails raises (and is counted in the stats, ``refunds_lost``);
        it is never retried, as it may have run."""
        k = key_bytes(key)
        positive_int(cost, "cost")
        w = self._start_done(lib.admit_redis_limiter_refund_cb, k, cost,
                             asyncio.get_running_loop())
        status = await self._await_done(w)
        if status < 0:
            raise self._fail(status, key, cost)

    def reset(self, key: Union[str, bytes]) -> None:
        """Forgets ``key`` for every instance (blocks)."""
        k = key_bytes(key)
        rc = lib.admit_redis_limiter_reset(self._ptr(), k, len(k))
        if rc < 0:
            raise self._fail(rc, key, 1)

    def pause(self, key: Union[str, bytes], seconds: float) -> float:
        """Denies ``key`` everywhere for ``seconds`` (a vendor's 429
        ``Retry-After``); never shortens a longer pause. Returns the end of
        the pause as a Unix time (server clock). Blocks."""
        k = key_bytes(key)
        ns = seconds_to_ns(seconds, "seconds")
        until = ffi.new("uint64_t*")
        rc = lib.admit_redis_limiter_pause(self._ptr(), k, len(k), ns, until)
        if rc < 0:
            raise self._fail(rc, key, 1)
        return until[0] / NS

    async def pause_async(self, key: Union[str, bytes],
                          seconds: float) -> float:
        """:meth:`pause` without blocking the event loop or using a thread
        (the pause completes on the connection's I/O thread, even if the
        caller is cancelled); returns the end of the pause as a Unix time
        (server clock), or raises (the failure is counted in the stats,
        ``pauses_lost``)."""
        k = key_bytes(key)
        ns = seconds_to_ns(seconds, "seconds")
        w = self._start_done(lib.admit_redis_limiter_pause_cb, k, ns,
                             asyncio.get_running_loop())
        status = await self._await_done(w)
        if status < 0:
            raise self._fail(status, key, 1)
        return w.value / NS

    def pause_until(self, key: Union[str, bytes], unix_time: float) -> None:
        """Denies ``key`` everywhere until ``unix_time`` (server clock)."""
        k = key_bytes(key)
        ns = seconds_to_ns(unix_time, "unix_time")
        rc = lib.admit_redis_limiter_pause_until(self._ptr(), k, len(k), ns)
        if rc < 0:
            raise self._fail(rc, key, 1)

    def reserve(self, key: Union[str, bytes], cost: int) \
            -> "tuple[Reservation, Decision]":
        """Reserves an estimated ``cost`` now (e.g. tokens before an LLM
        call), to :meth:`settle` with the real cost later. Blocks."""
        k = key_bytes(key)
        positive_int(cost, "cost")
        r = ffi.new("admit_redis_reservation_t*")
        d = ffi.new("admit_decision_t*")
        rc = lib.admit_redis_limiter_reserve(self._ptr(), k, len(k), cost, r,
                                             d)
        if rc < 0:
            raise self._fail(rc, key, cost)
        return (Reservation(bool(r.reserved), bool(r.local), r.cost,
                            r.taken_at_ns), Decision._from_c(d))

    def settle(self, key: Union[str, bytes], reservation: Reservation,
               actual: int) -> Decision:
        """Settles a reservation with the real cost: refunds what was not
        used, charges the excess. Blocks."""
        if not isinstance(reservation, Reservation):
            raise TypeError("reservation must come from reserve()")
        k = key_bytes(key)
        nonneg_int(actual, "actual")
        r = ffi.new("admit_redis_reservation_t*")
        r.reserved = int(reservation.reserved)
        r.local = int(reservation.local)
        r.cost = reservation.cost
        r.taken_at_ns = reservation.taken_at_ns
        d = ffi.new("admit_decision_t*")
        rc = lib.admit_redis_limiter_settle(self._ptr(), k, len(k), r,
                                            actual, d)
        if rc < 0:
            raise self._fail(rc, key, 1)
        return Decision._from_c(d)

    def stats(self) -> RedisLimiterStats:
        """Decisions by Redis and by the failure policy; refunds and
        pauses applied and lost."""
        s = ffi.new("admit_redis_limiter_stats_t*")
        check(lib.admit_redis_limiter_stats(self._ptr(), s))
        return RedisLimiterStats(bool(s.degraded), s.instances, s.decisions,
                                 s.remote, s.fail_open, s.fallback,
                                 s.unavailable, s.errors, s.refunds,
                                 s.refunds_lost, s.pauses, s.pauses_lost)

    def __repr__(self) -> str:
        extra = ", name=%r" % self._name if self._name else ""
        return "RedisLimiter(%r, %s%s, on_failure=%r)" % (
            self._quota.spec, self._quota.algorithm.name, extra,
            self._policy)


GlobalLimiter = RedisLimiter
"""The seed's name for a Redis-backed limiter shared by every pod."""


class Lease(NamedTuple):
    """A permit held in a :class:`RedisSemaphore`."""

    key: bytes
    id: str
    local: bool
    expires_at_ns: int


class RedisSemaphore:
    """A global semaphore: at most ``capacity`` leases per subject key at
    once, across every instance; a crashed holder's lease lapses after
    ``lease`` seconds.

    The waits poll Redis, so from asyncio they run in a worker thread
    (never on the event loop's thread).
    """

    def __init__(self, redis: Redis, capacity: int, *,
                 lease: Optional[float] = None, name: Optional[str] = None,
                 rate: Optional[RedisLimiter] = None,
                 on_failure: str = "fail_closed",
                 max_key_len: Optional[int] = None) -> None:
        if not isinstance(redis, Redis):
            raise TypeError("redis must be an admit.Redis, not %s"
                            % type(redis).__name__)
        opts = ffi.new("admit_redis_semaphore_options_t*")
        opts.capacity = positive_int(capacity, "capacity")
        opts.lease_ns = _opt_ns(lease, "lease")
        cname = None
        if name is not None:
            text(name, "name")
            if not name or len(name.encode()) > 64 or "{" in name or \
                    "}" in name:
                raise ValueError("name must be 1..64 bytes without '{' or "
                                 "'}', not %r" % (name,))
            cname = ffi.new("char[]", name.encode())
            opts.name = cname
        if rate is not None:
            if not isinstance(rate, RedisLimiter):
                raise TypeError("rate must be an admit.RedisLimiter")
            opts.rate = rate._ptr()
        pol = _policy(on_failure)
        if pol == 2:
            raise ValueError("on_failure must be 'fail_closed' or "
                             "'fail_open' for a semaphore")
        opts.on_failure = pol
        if max_key_len is not None:
            opts.max_key_len = positive_int(max_key_len, "max_key_len",
                                            maximum=(1 << 32) - 1)
        pp = ffi.new("admit_redis_semaphore_t**")
        check(lib.admit_redis_semaphore_new(pp, redis._ptr(), opts))
        self._p: Any = pp[0]
        self._redis = redis
        self._rate = rate
        self._capacity = capacity
        self._name = name
        self._finalizer = weakref.finalize(
            self, lib.admit_redis_semaphore_free, self._p)
        redis._children.add(self)

    def _close(self) -> None:
        if self._p is not None:
            self._finalizer()
            self._p = None

    def _ptr(self) -> Any:
        if self._p is None:
            raise Closed(lib.ADMIT_ECLOSED, "the Redis connection is closed")
        return self._p

    def try_acquire(self, key: Union[str, bytes], cost: int = 1) \
            -> Optional[Lease]:
        """Takes a lease for ``key`` if one is free; None if not. Blocks
        for one round trip."""
        k = key_bytes(key)
        positive_int(cost, "cost")
        lease = ffi.new("admit_redis_lease_t*")
        d = ffi.new("admit_decision_t*")
        check(lib.admit_redis_semaphore_try(self._ptr(), k, len(k), cost,
                                            lease, d))
        if not d.allowed:
            return None
        return Lease(k, ffi.string(lease.id).decode(), bool(lease.local),
                     lease.expires_at_ns)

    def acquire_blocking(self, key: Union[str, bytes], cost: int = 1, *,
                         timeout: float) -> Lease:
        """Takes a lease, waiting at most ``timeout`` seconds (blocks)."""
        t = timeout_ns(timeout)
        k = key_bytes(key)
        positive_int(cost, "cost")
        lease = ffi.new("admit_redis_lease_t*")
        d = ffi.new("admit_decision_t*")
        rc = lib.admit_redis_semaphore_acquire(self._ptr(), k, len(k), cost,
                                               t, lease, d)
        check(rc)
        return Lease(k, ffi.string(lease.id).decode(), bool(lease.local),
                     lease.expires_at_ns)

    async def acquire(self, key: Union[str, bytes], cost: int = 1, *,
                      timeout: float) -> Lease:
        """:meth:`acquire_blocking` in a worker thread. If the task is
        cancelled, a lease granted meanwhile is released."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(
            None, lambda: self.acquire_blocking(key, cost, timeout=timeout))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            def give_back(f: "asyncio.Future[Lease]") -> None:
                if not f.cancelled() and f.exception() is None:
                    loop.run_in_executor(None, self._release_quiet,
                                         f.result())
            fut.add_done_callback(give_back)
            raise

    def _release_quiet(self, lease: Lease) -> None:
        try:
            self.release(lease)
        except Exception:
            pass

    def release(self, lease: Lease) -> bool:
        """Returns a lease; False if it had already lapsed. Blocks."""
        if not isinstance(lease, Lease):
            raise TypeError("lease must come from acquire()")
        c = ffi.new("admit_redis_lease_t*")
        c.id = lease.id.encode()
        c.local = int(lease.local)
        c.expires_at_ns = lease.expires_at_ns
        rc = lib.admit_redis_semaphore_release(self._ptr(), lease.key,
                                               len(lease.key), c)
        if rc == lib.ADMIT_ENOTFOUND:
            return False
        check(rc)
        return True

    def renew(self, lease: Lease) -> Lease:
        """Extends a lease by the lease time; raises
        :class:`admit.AdmitError` (ENOTFOUND) if it had lapsed."""
        if not isinstance(lease, Lease):
            raise TypeError("lease must come from acquire()")
        c = ffi.new("admit_redis_lease_t*")
        c.id = lease.id.encode()
        c.local = int(lease.local)
        c.expires_at_ns = lease.expires_at_ns
        check(lib.admit_redis_semaphore_renew(self._ptr(), lease.key,
                                              len(lease.key), c))
        return lease._replace(expires_at_ns=c.expires_at_ns)

    def held(self, key: Union[str, bytes]) -> int:
        """Leases of ``key`` held now."""
        k = key_bytes(key)
        n = ffi.new("uint64_t*")
        check(lib.admit_redis_semaphore_held(self._ptr(), k, len(k), n))
        return n[0]

    def __repr__(self) -> str:
        extra = ", name=%r" % self._name if self._name else ""
        return "RedisSemaphore(capacity=%d%s)" % (self._capacity, extra)


def _nothing(w: Waiter) -> None:
    """A refund or pause has nothing to give back when its caller is gone."""
