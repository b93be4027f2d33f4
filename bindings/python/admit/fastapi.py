"""FastAPI and ASGI integration: per-user / per-tier / per-endpoint rate
limits as a dependency, an admission middleware, ``/health`` and
``/ready`` helpers, and a guarded ``httpx.AsyncClient`` for vendor calls.

Every decision is made by libadmit; this module only reads requests and
writes responses.

>>> from fastapi import Depends, FastAPI
>>> from admit.fastapi import RateLimit, by_header
>>> limit = RateLimit({"free": "10/minute", "pro": "100/minute"},
...                   key=by_header("X-API-Key"), tier=lookup_tier,
...                   routes={"/chat": "20/minute"})
>>> app = FastAPI(dependencies=[Depends(limit)])

Answers: 429 with ``Retry-After`` and the IETF ``RateLimit-Policy`` /
``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers), e.g.
``RateLimit-Policy: "free";q=10;w=60`` and ``RateLimit: "free";r=0;t=17``;
the older ``X-RateLimit-Limit/-Remaining/-Reset`` on request.
"""

import asyncio
import email.utils
import hashlib
import inspect
import json
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, \
    Mapping, Optional, Sequence, Tuple, Union

from ._util import NS, positive_int, nonneg_int, seconds_to_ns, text
from .errors import AdmitError, BackendUnavailable, QueueTimeout, Rejected
from .keyed import KeyedLimiter
from .limiter import Decision
from .rates import Algorithm, ManualClock, Quota, _algorithm_of, quota_of
from .admission import AdmissionController
from .breaker import Outcome, outcome_of
from .semaphore import Semaphore

try:  # FastAPI is optional for the rest of the package.
    from fastapi import HTTPException, Request, Response
    from fastapi.responses import JSONResponse
except ImportError:  # pragma: no cover
    HTTPException = Request = Response = JSONResponse = None  # type: ignore

__all__ = [
    "RateLimit", "client_ip", "by_header", "forwarded_ip",
    "AdmissionMiddleware", "Readiness", "add_health_routes",
    "GuardedClient", "retry_after_seconds", "rate_limit_headers",
    "parse_retry_after",
]

KeyFunc = Callable[[Any], Union[None, str, bytes, Awaitable[Any]]]
LimitSpec = Union[str, Quota, Sequence[Any]]


# -- keys ------------------------------------------------------------------

def client_ip(request: Any) -> str:
    """The peer address of the connection (``request.client.host``)."""
    c = request.client
    return c.host if c is not None else "unknown"


def forwarded_ip(trusted_hops: int = 1) -> Callable[[Any], str]:
    """Returns a key function reading the client address from
    ``X-Forwarded-For``, skipping ``trusted_hops - 1`` proxies from the
    right (use only behind proxies that set the header)."""
    positive_int(trusted_hops, "trusted_hops")

    def key(request: Any) -> str:
        xff = request.headers.get("x-forwarded-for")
        if xff:
            hops = [h.strip() for h in xff.split(",") if h.strip()]
            if hops:
                return hops[max(0, len(hops) - trusted_hops)]
        return client_ip(request)
    return key


def by_header(name: str, *,
              fallback: Optional[KeyFunc] = client_ip) -> KeyFunc:
    """Returns a key function reading header ``name`` (an API key, a user
    id set by the gateway); without it, ``fallback`` decides (None: the
    request is not limited by this key)."""
    text(name, "name")
    lname = name.lower()

    def key(request: Any) -> Any:
        v = request.headers.get(lname)
        if v:
            return v
        return fallback(request) if fallback is not None else None
    return key


async def _maybe(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


# -- headers ---------------------------------------------------------------

def retry_after_seconds(ns: int) -> int:
    """An HTTP ``Retry-After`` delay: whole seconds, rounded up, >= 1."""
    return max(1, -(-int(ns) // NS))


def _sf_string(s: str) -> str:
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


class _Check:
    """One limit applied to a request: a quota under a policy name."""

    __slots__ = ("kind", "name", "quota", "tier", "names")

    def __init__(self, kind: str, name: str, quota: Quota, tier: str) -> None:
        self.kind = kind
        self.name = name
        self.quota = quota
        self.tier = tier
        # One policy name per rate: "free", then "free-2", "free-3"...
        self.names = [name if i == 0 else "%s-%d" % (name, i + 1)
                      for i in range(len(quota.rates))]

    def policy_items(self) -> List[str]:
        return ["%s;q=%d;w=%d" % (_sf_string(n), r.count,
                                  max(1, -(-r.period_ns // NS)))
                for n, r in zip(self.names, self.quota.rates)]


def rate_limit_headers(results: Sequence[Tuple[Any, Decision]],
                       style: str = "ietf") -> Dict[str, str]:
    """The response headers for the (check, decision) pairs of a request.

    ``style`` is ``"ietf"`` (``RateLimit-Policy`` and ``RateLimit``),
    ``"x"`` (``X-RateLimit-Limit/-Remaining/-Reset``), ``"both"`` or
    ``"none"``.
    """
    h: Dict[str, str] = {}
    if not results or style == "none":
        return h
    if style in ("ietf", "both"):
        pol: List[str] = []
        cur: List[str] = []
        for check, d in results:
            pol.extend(check.policy_items())
            cur.append("%s;r=%d;t=%d" % (
                _sf_string(check.names[min(d.limiting,
                                            len(check.names) - 1)]),
                d.remaining, -(-d.reset_after_ns // NS)))
        h["RateLimit-Policy"] = ", ".join(pol)
        h["RateLimit"] = ", ".join(cur)
    if style in ("x", "both"):
        # The most restrictive check: a denial, else the fewest remaining.
        check, d = min(results, key=lambda cd: (cd[1].allowed,
                                                cd[1].remaining))
        r = check.quota.rates[min(d.limiting, len(check.quota.rates) - 1)]
        h["X-RateLimit-Limit"] = str(r.count)
        h["X-RateLimit-Remaining"] = str(d.remaining)
        h["X-RateLimit-Reset"] = str(-(-d.reset_after_ns // NS))
    return h


# -- backends --------------------------------------------------------------

class _LocalBackend:
    """Every check in one in-process KeyedLimiter (one tier per check)."""

    def __init__(self, checks: List[_Check], max_keys: Optional[int],
                 clock: Optional[ManualClock]) -> None:
        self.limiter = KeyedLimiter({c.tier: c.quota for c in checks},
                                    max_keys=max_keys, clock=clock)

    async def check(self, c: _Check, key: bytes, cost: int) -> Decision:
        return self.limiter.try_acquire(key, cost, tier=c.tier)

    async def refund(self, c: _Check, key: bytes,
                     cost: int) -> Optional[Decision]:
        self.limiter.refund(key, cost, tier=c.tier)
        return self.limiter.peek(key, tier=c.tier)

    def __repr__(self) -> str:
        return "local"


class _RedisBackend:
    """One Redis limiter per check, decided without blocking the loop."""

    def __init__(self, redis: Any, checks: List[_Check], namespace: str,
                 on_failure: str) -> None:
        from .redis import RedisLimiter
        self.redis = redis
        self.limiters: Dict[str, Any] = {}
        for c in checks:
            h = hashlib.sha1(("%s|%s|%s" % (c.tier, c.quota.spec,
                                            c.quota.algorithm.name)).encode())
            name = "%s-%s" % (namespace[:40], h.hexdigest()[:16])
            self.limiters[c.tier] = RedisLimiter(redis, c.quota, name=name,
                                                 on_failure=on_failure)

    async def check(self, c: _Check, key: bytes, cost: int) -> Decision:
        return await self.limiters[c.tier].try_acquire_async(key, cost)

    async def refund(self, c: _Check, key: bytes,
                     cost: int) -> Optional[Decision]:
        # The refund never blocks the loop (it completes on the Redis I/O
        # thread, even if this request is cancelled); the state is then
        # read back in a worker thread for the headers.
        lim = self.limiters[c.tier]
        await lim.refund_async(key, cost)

        def peek() -> Optional[Decision]:
            try:
                return lim.peek(key)
            except AdmitError:
                return None     # refunded, but the state is unknown
        return await asyncio.get_running_loop().run_in_executor(None, peek)

    def __repr__(self) -> str:
        return "redis"


# -- the dependency --------------------------------------------------------

class RateLimit:
    """A FastAPI dependency enforcing per-user, per-tier and per-endpoint
    limits; use it in ``dependencies=[Depends(limit)]`` of an app, router
    or route.

    ``limits``: one limit for everyone (``"100/minute"``), or a mapping of
    tier name to limit used with ``tier``, a function of the request
    (sync or async) returning the tier name; an unknown or None tier uses
    ``default_tier`` (default: the first). ``routes`` maps route paths (as
    declared, e.g. ``"/items/{item_id}"``) to extra per-key limits for that
    endpoint. ``key`` (sync or async) names the subject: a user id, an API
    key (:func:`by_header`) or the client address (:func:`client_ip`, the
    default); a None key is not limited. ``cost`` is an int or a function
    of the request.

    ``backend``: ``None`` or ``"local"`` keeps state in this process;
    ``"redis"`` (``ADMIT_REDIS_URL``), a ``redis://`` or ``unix://`` URL or
    an :class:`admit.Redis` shares it across processes and pods, so the
    switch is configuration alone. ``on_failure`` is the Redis failure
    policy (``"fail_closed"``: 503; ``"fail_open"``; ``"fallback"``).

    ``headers``: ``"ietf"`` (default), ``"x"``, ``"both"`` or ``"none"``.
    ``clock`` (a :class:`admit.ManualClock`, local backend only) is for
    tests.

    Checks run endpoint first, then tier, all or nothing: when one denies,
    the units the earlier ones took are refunded. Denials raise HTTP 429
    with ``Retry-After``; the headers (and ``request.state.rate_limit``,
    the (check, :class:`admit.Decision`) pairs left for handlers) show
    each check's state after any refund, as a check consuming nothing
    would see it.
    """

    def __init__(self, limits: Union[LimitSpec, Mapping[str, LimitSpec]], *,
                 key: Optional[KeyFunc] = client_ip,
                 tier: Optional[Callable[[Any], Any]] = None,
                 default_tier: Optional[str] = None,
                 routes: Optional[Mapping[str, LimitSpec]] = None,
                 cost: Union[int, Callable[[Any], int]] = 1,
                 algorithm: Union[Algorithm, str] = Algorithm.FIXED_WINDOW,
                 backend: Any = None, on_failure: str = "fail_closed",
                 headers: str = "ietf", policy_name: str = "default",
                 namespace: str = "http", max_keys: Optional[int] = None,
                 detail: str = "Rate limit exceeded",
                 clock: Optional[ManualClock] = None) -> None:
        algo = _algorithm_of(algorithm)
        if key is not None and not callable(key):
            raise TypeError("key must be a function of the request")
        if tier is not None and not callable(tier):
            raise TypeError("tier must be a function of the request")
        if callable(cost):
            self._cost: Any = cost
        else:
            self._cost = positive_int(cost, "cost")
        if headers not in ("ietf", "x", "both", "none"):
            raise ValueError("headers must be 'ietf', 'x', 'both' or 'none',"
                             " not %r" % (headers,))
        text(policy_name, "policy_name")
        text(namespace, "namespace")
        if "{" in namespace or "}" in namespace:
            raise ValueError("namespace must not contain '{' or '}'")
        self._tiers: Dict[str, _Check] = {}
        if isinstance(limits, Mapping):
            if not limits:
                raise ValueError("limits must name at least one tier")
            for name, spec in limits.items():
                text(name, "tier name")
                self._tiers[name] = _Check(
                    "tier", name, quota_of(spec, algo, None,
                                           name="limits[%r]" % name),
                    "tier:" + name)
            if tier is None and len(limits) > 1:
                raise ValueError("limits has several tiers: pass tier=, a "
                                 "function returning the request's tier")
        elif limits is not None:
            self._tiers[policy_name] = _Check(
                "tier", policy_name, quota_of(limits, algo, None,
                                              name="limits"),
                "tier:" + policy_name)
        if default_tier is not None and default_tier not in self._tiers:
            raise ValueError("default_tier %r is not one of the tiers %s"
                             % (default_tier, sorted(self._tiers)))
        self._default = default_tier or next(iter(self._tiers), None)
        self._routes: Dict[str, _Check] = {}
        if routes is not None:
            if not isinstance(routes, Mapping):
                raise TypeError("routes must map route paths to limits")
            for path, spec in routes.items():
                text(path, "route path")
                self._routes[path] = _Check(
                    "route", "endpoint", quota_of(
                        spec, algo, None, name="routes[%r]" % path),
                    "route:" + path)
        if not self._tiers and not self._routes:
            raise ValueError("give limits, routes or both")
        self._key = key
        self._tier_fn = tier
        self._style = headers
        self._detail = detail
        checks = list(self._tiers.values()) + list(self._routes.values())
        self._backend = self._make_backend(backend, checks, namespace,
                                           on_failure, max_keys, clock)

    @staticmethod
    def _make_backend(backend: Any, checks: List[_Check], namespace: str,
                      on_failure: str, max_keys: Optional[int],
                      clock: Optional[ManualClock]) -> Any:
        if backend is None or backend == "local":
            return _LocalBackend(checks, max_keys, clock)
        if clock is not None:
            raise ValueError("clock applies to the local backend only "
                             "(Redis uses its server's clock)")
        from .redis import Redis
        if backend == "redis":
            backend = Redis()
        elif isinstance(backend, str):
            if not backend.startswith(("redis://", "unix://", "rediss://")):
                raise ValueError("backend must be 'local', 'redis', a "
                                 "redis:// or unix:// URL or an "
                                 "admit.Redis, not %r" % (backend,))
            backend = Redis(backend)
        elif not isinstance(backend, Redis):
            raise TypeError("backend must be 'local', 'redis', a URL or an "
                            "admit.Redis, not %s" % type(backend).__name__)
        return _RedisBackend(backend, checks, namespace, on_failure)

    @property
    def backend(self) -> str:
        """``"local"`` or ``"redis"``."""
        return repr(self._backend)

    async def __call__(self, request: Request, response: Response) -> None:
        """Checks one request (FastAPI calls it as a dependency): sets the
        rate-limit headers on ``response``, or raises HTTP 429 (denied) or
        503 (the Redis backend is down and the policy is fail-closed)."""
        key = await _maybe(self._key(request)) if self._key else None
        if key is None:
            return
        k = key.encode() if isinstance(key, str) else bytes(key)
        cost = self._cost if isinstance(self._cost, int) else \
            positive_int(await _maybe(self._cost(request)), "cost")
        checks: List[_Check] = []
        route = request.scope.get("route")
        path = getattr(route, "path", None)
        if path is not None and path in self._routes:
            checks.append(self._routes[path])
        if self._tiers:
            t = self._default
            if self._tier_fn is not None:
                got = await _maybe(self._tier_fn(request))
                if got in self._tiers:
                    t = got
            checks.append(self._tiers[t])  # type: ignore[index]
        results: List[Tuple[_Check, Decision]] = []
        for c in checks:
            try:
                d = await self._backend.check(c, k, cost)
            except BaseException as e:
                await self._undo(results, k, cost)
                if isinstance(e, (BackendUnavailable, Rejected)):
                    raise HTTPException(503, "Rate limiter unavailable",
                                        headers={"Retry-After": "1"})
                raise
            results.append((c, d))
            if not d.allowed:
                # All or nothing: give back what earlier checks took, and
                # report what they have after the refund.
                results[:-1] = await self._undo(results[:-1], k, cost)
                request.state.rate_limit = results
                h = rate_limit_headers(results, self._style)
                h["Retry-After"] = str(retry_after_seconds(d.retry_after_ns))
                raise HTTPException(429, self._detail, headers=h)
        request.state.rate_limit = results
        for name, value in rate_limit_headers(results, self._style).items():
            response.headers[name] = value

    async def _undo(self, results: List[Tuple[_Check, Decision]], k: bytes,
                    cost: int) -> List[Tuple[_Check, Decision]]:
        """Refunds the units the allowed checks took; returns the checks
        with their state after the refund (a check whose refund failed
        keeps its decision: its units stay spent)."""
        out: List[Tuple[_Check, Decision]] = []
        for c, d in results:
            if d.allowed:
                try:
                    after = await self._backend.refund(c, k, cost)
                except AdmitError:
                    after = d
                if after is None:
                    # Refunded but not read back: the units are back.
                    after = Decision(True, d.limit,
                                     min(d.remaining + cost, d.limit), 0,
                                     d.reset_after_ns, d.limiting)
                d = after
            out.append((c, d))
        return out

    def __repr__(self) -> str:
        tiers = {n: c.quota.spec for n, c in self._tiers.items()}
        routes = {p: c.quota.spec for p, c in self._routes.items()}
        algo = next(iter(self._tiers.values() or self._routes.values()))
        return ("RateLimit(%r, routes=%r, algorithm=%s, backend=%r, "
                "headers=%r)" % (tiers, routes, algo.quota.algorithm.name,
                                 self.backend, self._style))


# -- admission -------------------------------------------------------------

class AdmissionMiddleware:
    """ASGI middleware bounding the requests a process works on, over an
    :class:`admit.AdmissionController`.

    At most ``max_in_flight`` requests run at once; up to ``backlog`` more
    wait (by priority, FIFO within one, at most ``queue_timeout`` seconds,
    shed CoDel-style when waits stay long); beyond that, requests are
    answered at once with 503 and ``Retry-After``. Paths in ``exempt``
    (prefix match, default ``/health`` and ``/ready``) pass untouched.
    ``priority`` (a function of the ASGI scope, 0 most urgent, default 1)
    picks the class. Pass ``controller`` to share one (e.g. with
    :class:`Readiness`).

    What feeds the error rate (``recent_errors`` of the controller, which
    :class:`admit.Health` and ``/ready`` read): each admitted request is
    left with an outcome. A response of 500 or more is a FAILURE, unless
    its status is in ``exclude_statuses`` (e.g. ``{503}`` for an app whose
    503s are deliberate); an exception out of the app is a FAILURE (or a
    TIMEOUT for a ``TimeoutError``; CANCELLED if the client went away);
    anything else is a SUCCESS. Refusals for load are never errors: this
    middleware's own 503s (backlog full, queue timeout, shed) are not
    admitted requests at all, and a request an inner admission layer
    refused (it sets ``scope["admit.rejected"]``, as this middleware
    does) or whose status is excluded is left as CANCELLED: counted among
    the recent requests but not as an error, and ignored by an adaptive
    limit.

        app.add_middleware(AdmissionMiddleware, max_in_flight=100,
                           backlog=200)
    """

    def __init__(self, app: Any, *, max_in_flight: int = 100,
                 backlog: int = 100, queue_timeout: float = 5.0,
                 exempt: Iterable[str] = ("/health", "/ready"),
                 retry_after: int = 1,
                 priority: Optional[Callable[[Any], int]] = None,
                 controller: Optional[AdmissionController] = None,
                 exclude_statuses: Iterable[int] = (),
                 **options: Any) -> None:
        seconds_to_ns(queue_timeout, "queue_timeout")
        if isinstance(exclude_statuses, (str, bytes)) or \
                not isinstance(exclude_statuses, Iterable):
            raise TypeError("exclude_statuses must be a set of HTTP status "
                            "codes")
        excluded = frozenset(exclude_statuses)
        for code in excluded:
            if isinstance(code, bool) or not isinstance(code, int):
                raise TypeError("exclude_statuses must hold ints, not %s"
                                % type(code).__name__)
            if not 100 <= code <= 599:
                raise ValueError("exclude_statuses: %d is not an HTTP "
                                 "status code" % code)
        positive_int(retry_after, "retry_after")
        if isinstance(exempt, str):
            raise TypeError("exempt must be a list of path prefixes")
        if priority is not None and not callable(priority):
            raise TypeError("priority must be a function of the scope")
        self.app = app
        self.exempt = tuple(text(p, "exempt path") for p in exempt)
        self.queue_timeout = float(queue_timeout)
        self.retry_after = retry_after
        self.priority = priority
        self.exclude_statuses = excluded
        if controller is None:
            controller = AdmissionController(max_in_flight, backlog,
                                             **options)
        elif not isinstance(controller, AdmissionController):
            raise TypeError("controller must be an admit."
                            "AdmissionController")
        self.controller = controller
        self._body = json.dumps({"detail": "Service overloaded"}).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry point: admits the request (or answers 503 at
        once), runs the app and leaves with the request's outcome."""
        if scope["type"] != "http" or \
                scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        prio = 1 if self.priority is None else self.priority(scope)
        try:
            permit = await self.controller.enter(timeout=self.queue_timeout,
                                                 priority=prio)
        except (Rejected, QueueTimeout):
            await self._reject(scope, send)
            return
        status = [0]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        outcome = Outcome.FAILURE
        try:
            await self.app(scope, receive, send_status)
            outcome = self.outcome(status[0], scope)
        except BaseException as e:
            outcome = outcome_of(e)
            raise
        finally:
            permit.leave(outcome)

    def outcome(self, status: int, scope: Any = None) -> Outcome:
        """The outcome an admitted request that answered ``status`` is left
        with (see the class documentation)."""
        if scope is not None and scope.get("admit.rejected"):
            return Outcome.CANCELLED
        if status in self.exclude_statuses:
            return Outcome.CANCELLED
        return Outcome.FAILURE if status >= 500 else Outcome.SUCCESS

    async def _reject(self, scope: Any, send: Any) -> None:
        # Tells outer admission layers this 503 is a refusal for load.
        scope["admit.rejected"] = True
        await send({"type": "http.response.start", "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(self._body)).encode()),
                        (b"retry-after", str(self.retry_after).encode())]})
        await send({"type": "http.response.body", "body": self._body})

    def saturation(self) -> Dict[str, int]:
        """In flight, waiting, limit and refusals, for /ready."""
        s = self.controller.stats()
        return {"in_flight": s.in_flight, "waiting": s.waiting,
                "limit": s.limit, "rejected": s.rejected + s.shed +
                s.displaced + s.timed_out}

    def __repr__(self) -> str:
        ex = ", exclude_statuses=%r" % sorted(self.exclude_statuses) \
            if self.exclude_statuses else ""
        return "AdmissionMiddleware(%r, queue_timeout=%g, exempt=%r%s)" % (
            self.controller, self.queue_timeout, self.exempt, ex)


# -- health ----------------------------------------------------------------

class Readiness:
    """Named readiness checks for ``/ready``: each returns None (ready) or
    a reason (not ready), sync or async."""

    def __init__(self) -> None:
        self._checks: List[Tuple[str, Callable[[], Any]]] = []

    def add(self, name: str, check: Callable[[], Any]) -> "Readiness":
        """Adds a check; returns self."""
        text(name, "name")
        if not callable(check):
            raise TypeError("check must be callable")
        self._checks.append((name, check))
        return self

    def add_semaphore(self, name: str, sem: Semaphore, *,
                      max_waiting: int) -> "Readiness":
        """Not ready while more than ``max_waiting`` wait on ``sem``."""
        nonneg_int(max_waiting, "max_waiting")

        def check() -> Optional[str]:
            s = sem.stats()
            if s.waiting > max_waiting:
                return "overloaded: %d waiting (max %d)" % (s.waiting,
                                                            max_waiting)
            return None
        return self.add(name, check)

    def add_admission(self, ctl: Any, *, max_waiting: int) -> "Readiness":
        """Not ready while more than ``max_waiting`` requests wait in an
        :class:`admit.AdmissionController` (or an AdmissionMiddleware's)."""
        nonneg_int(max_waiting, "max_waiting")
        if isinstance(ctl, AdmissionMiddleware):
            ctl = ctl.controller

        def check() -> Optional[str]:
            s = ctl.stats()
            if s.waiting > max_waiting:
                return "overloaded: %d waiting (max %d)" % (s.waiting,
                                                            max_waiting)
            return None
        return self.add("admission", check)

    async def run(self) -> Tuple[bool, Dict[str, str]]:
        """Runs every check: (ready, {name: "ok" or reason})."""
        out: Dict[str, str] = {}
        ok = True
        for name, check in self._checks:
            try:
                reason = await _maybe(check())
            except Exception as e:  # a failing check means not ready
                reason = "error: %s" % (e,)
            if reason:
                ok = False
                out[name] = str(reason)
            else:
                out[name] = "ok"
        return ok, out

    def __repr__(self) -> str:
        return "Readiness(%s)" % ", ".join(n for n, _ in self._checks)


def add_health_routes(app: Any, readiness: Any = None, *,
                      health: Any = None, health_path: str = "/health",
                      ready_path: str = "/ready",
                      metrics_path: Optional[str] = None) -> None:
    """Adds ``GET /health`` (liveness: 200 while the process serves) and
    ``GET /ready`` (200, or 503 with the reason) to a FastAPI app or
    router; with ``metrics_path``, also the Prometheus text of ``health``.

    ``health`` is an :class:`admit.Health` registry (the library's verdict,
    with hysteresis, as JSON); ``readiness`` a :class:`Readiness` of extra
    checks (either may be passed as the second argument). Both must pass.
    """
    from .health import Health
    if isinstance(readiness, Health) and health is None:
        health, readiness = readiness, None
    if readiness is not None and not isinstance(readiness, Readiness):
        raise TypeError("readiness must be an admit.fastapi.Readiness")
    if health is not None and not isinstance(health, Health):
        raise TypeError("health must be an admit.Health")
    text(health_path, "health_path")
    text(ready_path, "ready_path")
    if metrics_path is not None:
        text(metrics_path, "metrics_path")
        if health is None:
            raise ValueError("metrics_path needs health=admit.Health(...)")
    checks = readiness

    async def live() -> Dict[str, str]:
        return {"status": "ok"}

    async def ready() -> Any:
        ok = True
        body: Dict[str, Any] = {}
        if health is not None:
            ok, text_ = health.check_json()
            body = json.loads(text_)
        if checks is not None:
            ok2, detail = await checks.run()
            ok = ok and ok2
            body["checks"] = detail
            if not ok2 and "status" not in body:
                body["status"] = "not ready"
        body.setdefault("status", "ready" if ok else "not ready")
        if ok:
            return body
        if body.get("status") == "ready":
            body["status"] = "not ready"
        return JSONResponse(body, status_code=503)

    app.add_api_route(health_path, live, methods=["GET"],
                      include_in_schema=False)
    app.add_api_route(ready_path, ready, methods=["GET"],
                      include_in_schema=False)
    if metrics_path is not None:
        from fastapi.responses import PlainTextResponse

        async def metrics() -> Any:
            return PlainTextResponse(
                health.metrics(),
                media_type="text/plain; version=0.0.4; charset=utf-8")

        app.add_api_route(metrics_path, metrics, methods=["GET"],
                          include_in_schema=False)


# -- outbound --------------------------------------------------------------

def parse_retry_after(value: Optional[str], now: Optional[float] = None) \
        -> Optional[float]:
    """Parses a ``Retry-After`` value (seconds or an HTTP date) into
    seconds from now, or None if absent or unreadable."""
    if value is None:
        return None
    v = value.strip()
    if v.isdigit():
        return float(int(v))
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    if dt is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, dt.timestamp() - now)


class GuardedClient:
    """Sends ``httpx.AsyncClient`` requests through an :class:`admit.Guard`
    (queue timeout, local and global limiters, semaphore, call timeout,
    retries); a vendor's 429 with ``Retry-After`` pauses the guard, and so
    its global limiter for every pod, for that long.

        client = GuardedClient(httpx.AsyncClient(base_url=...), guard)
        r = await client.post("/v1/chat", json=payload)
    """

    def __init__(self, client: Any, guard: Any, *,
                 queue_timeout: float = 5.0,
                 default_pause: float = 1.0) -> None:
        from .guard import Guard
        if not isinstance(guard, Guard):
            raise TypeError("guard must be an admit.Guard, not %s"
                            % type(guard).__name__)
        if not hasattr(client, "request"):
            raise TypeError("client must be an httpx.AsyncClient")
        seconds_to_ns(queue_timeout, "queue_timeout")
        seconds_to_ns(default_pause, "default_pause")
        self.client = client
        self.guard = guard
        self.queue_timeout = queue_timeout
        self.default_pause = default_pause

    async def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        """Sends one request through the guard and returns the response.

        A 429 pauses the guard for its ``Retry-After`` (else
        ``default_pause``), for every pod sharing the guard's global
        limiter, and counts as vendor-limited, so it is retried within the
        guard's budget; the last 429 response is returned when retries run
        out. Other responses are returned as they are.
        """
        from .guard import VendorLimited

        async def attempt() -> Any:
            r = await self.client.request(method, url, **kwargs)
            if r.status_code == 429:
                pause = parse_retry_after(r.headers.get("retry-after"))
                raise VendorLimited(r, retry_after=self.default_pause
                                    if pause is None else max(pause, 0.001))
            return r

        try:
            return await self.guard.call(attempt,
                                         queue_timeout=self.queue_timeout)
        except VendorLimited as e:
            return e.response

    async def get(self, url: Any, **kw: Any) -> Any:
        """``request("GET", url, ...)``."""
        return await self.request("GET", url, **kw)

    async def post(self, url: Any, **kw: Any) -> Any:
        """``request("POST", url, ...)``."""
        return await self.request("POST", url, **kw)

    def __repr__(self) -> str:
        return "GuardedClient(%r, queue_timeout=%g)" % (self.guard,
                                                        self.queue_timeout)
