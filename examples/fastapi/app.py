"""The admit example service: seed 002's layered architecture, running.

Run it (from this directory, with the admit package importable)::

    python3 -m uvicorn app:app --host 127.0.0.1 --port 8000

Each layer of the seed owns one job, and admit does each job here:

==========================  =============================================
layer (seed 002)            here
==========================  =============================================
3. pod admission            ``AdmissionMiddleware``: at most
                            ``ADMIT_MAX_IN_FLIGHT`` requests run, up to
                            ``ADMIT_BACKLOG`` wait; beyond that 503 at once
2. readiness / liveness     ``GET /ready`` (admit's ``Health`` verdict over
                            the admission controller, the vendor guard and
                            Redis) and ``GET /health``
4. user fairness            ``RateLimit``: tiers free / pro / enterprise at
                            10 / 100 / 1000 per minute per user, and per
                            user per endpoint /chat 20, /search 100,
                            /analyze 5 per minute; 429 with Retry-After
5. vendor protection        a ``Guard`` around every outbound ``httpx``
                            call: breaker, vendor pause, the vendor limiter
                            (in process, or in Redis shared by every pod),
                            semaphore, queue timeout, call timeout, retries
                            with backoff; the vendor's own 429 Retry-After
                            pauses the limiter (for every pod)
voice agent (seed 001)      ``/agent`` WebSocket: sessions limited per user
                            and in total; when full, close code 1013
                            ("try again later")
==========================  =============================================

Requests carry the user's id in ``X-User-Id`` and tier in ``X-Tier``, as
set by the gateway after authentication (``lookup_tier`` is where your
service would ask its user database instead). Settings come from the
environment with localhost defaults; see README.md next to this file.

Every response carries ``X-Admit-Outcome`` (what admit decided: ``ok``,
``limited-tier``, ``limited-endpoint``, ``vendor-busy``, ``admission``,
...) and the waits it caused (``X-Admission-Wait``, ``X-Vendor-Queue-Wait``,
seconds), and ``GET /stats`` sums them up per process: the demo
(``make demo``) reads both.
"""

import asyncio
import collections
import math
import os
import re
import socket
import time
from typing import Any, Dict, Mapping, Optional

import httpx
from fastapi import (APIRouter, Depends, FastAPI, HTTPException, Request,
                     Response, WebSocket, WebSocketDisconnect)

import admit
from admit.fastapi import (AdmissionMiddleware, RateLimit, add_health_routes,
                           by_header, parse_retry_after, retry_after_seconds)

# -- the business rules (seed 002, layer 4) --------------------------------

TIERS = {"free": "10/minute", "pro": "100/minute",
         "enterprise": "1000/minute"}
"""Requests per user per minute, by tier (all endpoints together)."""

ENDPOINT_LIMITS = {"/chat": "20/minute", "/search": "100/minute",
                   "/analyze": "5/minute"}
"""Requests per user per minute on each endpoint, whatever the tier."""

VENDOR_ENDPOINTS = ("/chat", "/analyze")
"""The endpoints that call the vendor (the expensive, quota-bound API)."""


async def lookup_tier(request: Any) -> str:
    """The request's tier: ``X-Tier`` as the gateway sets it for an
    authenticated user (``X-User-Id``). A real service looks the user up
    in its database here (and caches it); an anonymous caller is "free"."""
    if not request.headers.get("x-user-id"):
        return "free"
    tier = request.headers.get("x-tier", "").strip().lower()
    return tier if tier in TIERS else "free"


# -- settings --------------------------------------------------------------

_POLICIES = {"closed": "fail_closed", "open": "fail_open",
             "local": "fallback"}


class Settings:
    """The service's settings, from environment variables with localhost
    defaults (deploy/k8s/configmap.yaml uses the same names)."""

    # attribute: (variable, type, default)
    FIELDS = {
        "redis_url": ("ADMIT_REDIS_URL", str, "redis://localhost:6379/0"),
        "backend": ("ADMIT_BACKEND", str, None),
        "failure_policy": ("ADMIT_FAILURE_POLICY", str, "local"),
        "fallback_share": ("ADMIT_FALLBACK_SHARE", float, None),
        "redis_prefix": ("ADMIT_REDIS_PREFIX", str, "admit"),
        "max_in_flight": ("ADMIT_MAX_IN_FLIGHT", int, 80),
        "backlog": ("ADMIT_BACKLOG", int, 100),
        "admission_timeout": ("ADMIT_ADMISSION_TIMEOUT_S", float, 5.0),
        "agent_max_sessions": ("ADMIT_AGENT_MAX_SESSIONS", int, 200),
        "agent_max_sessions_per_user": ("ADMIT_AGENT_MAX_SESSIONS_PER_USER",
                                        int, 2),
        "vendor_url": ("VENDOR_URL", str, "http://localhost:8001"),
        "vendor_path": ("VENDOR_PATH", str, "/v1/chat"),
        "vendor_api_key": ("VENDOR_API_KEY", str, ""),
        "vendor_rate_limit": ("VENDOR_RATE_LIMIT", str, "60/minute"),
        "vendor_burst": ("VENDOR_BURST", int, 0),
        "vendor_local_rate_limit": ("VENDOR_LOCAL_RATE_LIMIT", str, ""),
        "vendor_concurrency": ("VENDOR_CONCURRENCY", int, 50),
        "vendor_queue_timeout": ("VENDOR_QUEUE_TIMEOUT_S", float, 5.0),
        "vendor_call_timeout": ("VENDOR_CALL_TIMEOUT_S", float, 30.0),
        "vendor_retries": ("VENDOR_RETRIES", int, 3),
        "vendor_backoff_s": ("VENDOR_BACKOFF_S", float, 0.1),
        "search_latency": ("SEARCH_LATENCY_S", float, 0.02),
        "ready_hold": ("ADMIT_READY_HOLD_S", float, 5.0),
        "pod_name": ("POD_NAME", str, None),
    }

    def __init__(self, **values: Any) -> None:
        for name, (_, kind, default) in self.FIELDS.items():
            setattr(self, name, values.pop(name, default))
        if values:
            raise TypeError("unknown settings: " + ", ".join(sorted(values)))
        if self.backend is None:
            self.backend = "local"
        if self.pod_name is None:
            self.pod_name = "%s-%d" % (socket.gethostname(), os.getpid())
        self.validate()

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) \
            -> "Settings":
        """Reads every setting from ``environ`` (default ``os.environ``);
        a bad value raises ValueError naming its variable."""
        env = os.environ if environ is None else environ
        values: Dict[str, Any] = {}
        for name, (var, kind, _) in cls.FIELDS.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = kind(raw.strip())
            except ValueError:
                raise ValueError("%s=%r is not a valid %s"
                                 % (var, raw, kind.__name__)) from None
        if "backend" not in values:
            values["backend"] = "redis" if env.get("ADMIT_REDIS_URL") \
                else "local"
        return cls(**values)

    def validate(self) -> None:
        """Raises ValueError naming the first bad variable."""
        def bad(name: str, why: str) -> None:
            raise ValueError("%s %s" % (self.FIELDS[name][0], why))

        if self.backend not in ("local", "redis"):
            bad("backend", "must be 'local' or 'redis'")
        if self.failure_policy not in _POLICIES:
            bad("failure_policy", "must be 'closed', 'open' or 'local'")
        if self.fallback_share is not None and \
                not 0 < self.fallback_share <= 1:
            bad("fallback_share", "must be in (0, 1]")
        for name in ("max_in_flight", "agent_max_sessions",
                     "agent_max_sessions_per_user", "vendor_concurrency"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("backlog", "vendor_retries", "vendor_burst"):
            if getattr(self, name) < 0:
                bad(name, "must be at least 0")
        for name in ("admission_timeout", "vendor_queue_timeout",
                     "search_latency"):
            if not 0 <= getattr(self, name) < math.inf:
                bad(name, "must be a number of seconds >= 0")
        for name in ("vendor_call_timeout", "vendor_backoff_s", "ready_hold"):
            if not 0 < getattr(self, name) < math.inf:
                bad(name, "must be a number of seconds > 0")
        if not self.vendor_url.startswith(("http://", "https://")):
            bad("vendor_url", "must be an http:// or https:// URL")
        for name in ("vendor_rate_limit", "vendor_local_rate_limit"):
            spec = getattr(self, name)
            if not spec and name == "vendor_local_rate_limit":
                continue
            try:
                vendor_quota(spec, self.vendor_burst)
            except (TypeError, ValueError) as e:
                bad(name, "is not a rate such as '500/minute' (%s)" % e)

    @property
    def on_failure(self) -> str:
        """The failure policy in admit's words."""
        return _POLICIES[self.failure_policy]

    def __repr__(self) -> str:
        shown = {n: getattr(self, n) for n in self.FIELDS
                 if n != "vendor_api_key"}
        if self.redis_url:
            shown["redis_url"] = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@",
                                        self.redis_url)
        return "Settings(%s)" % ", ".join("%s=%r" % kv
                                          for kv in shown.items())


# -- the vendor pipeline (seed 002, layer 5) -------------------------------

def vendor_quota(spec: str, burst: int = 0) -> admit.Quota:
    """The token bucket that spends a vendor quota of ``spec`` (``N/W``,
    e.g. ``"500/minute"``) without ever exceeding it.

    The vendor counts calls in windows whose alignment we cannot see. A
    bucket with a burst of ``b`` and a steady rate of ``N - b`` per ``W``
    puts at most ``b + (N - b) - 1 < N`` calls into any ``W`` seconds, so
    no vendor window can ever see more than ``N``. ``burst`` 0 picks 10 %
    of ``N`` (at least 1).
    """
    rates = admit.parse_rates(spec)
    if len(rates) != 1:
        raise ValueError("give one rate, not %d" % len(rates))
    n, period_ns = rates[0]
    b = min(burst or max(1, n // 10), n)
    return admit.Quota(admit.Rate(max(1, n - b), period_ns),
                       admit.Algorithm.TOKEN_BUCKET, burst=b)


class VendorError(Exception):
    """The vendor failed (5xx or no answer): retried, counted as a failure
    by the breaker."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class VendorRefused(Exception):
    """The vendor refused the request itself (4xx other than 429): not
    retried, and not the vendor's fault (a success for the breaker)."""

    admit_outcome = admit.Outcome.SUCCESS

    def __init__(self, status: int, body: str) -> None:
        super().__init__("the vendor answered %d" % status)
        self.status = status
        self.body = body


def parse_duration(text: str) -> Optional[float]:
    """Seconds of an OpenAI-style duration (``20ms``, ``1.5s``, ``1m0s``)."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?"
                     r"(?:([\d.]+)ms)?", text.strip())
    if not m or not any(m.groups()):
        return None
    h, mi, s, ms = m.groups()
    return (int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0) +
            float(ms or 0) / 1000)


class VendorPipeline:
    """Every outbound vendor call passes one admit Guard, in the seed's
    order: circuit breaker, vendor pause, the vendor limiter (in process,
    or the global one in Redis), semaphore (local capacity), all within
    the queue timeout; then the call under its own timeout, retried with
    backoff. Refusals come at once when the wait cannot fit ("reject
    before waiting, wait before reserving, reserve before calling")."""

    def __init__(self, settings: Settings, redis: Optional[admit.Redis],
                 transport: Any = None) -> None:
        self.settings = settings
        quota = vendor_quota(settings.vendor_rate_limit,
                             settings.vendor_burst)
        self.quota = quota
        self.breaker = admit.CircuitBreaker(failure_rate=0.5, open_for=10.0)
        self.semaphore = admit.Semaphore(settings.vendor_concurrency,
                                         max_waiters=max(
                                             settings.max_in_flight, 1))
        stages: Dict[str, Any] = {}
        self.local: Optional[admit.TokenBucket] = None
        if redis is not None:
            # One quota for the whole account, shared by every pod.
            self.limiter: Any = admit.RedisLimiter(
                redis, quota, name="vendor", on_failure=settings.on_failure)
            stages.update(global_limiter=self.limiter, global_key="vendor")
            if settings.vendor_local_rate_limit:
                # The seed's optional local smoothing, this pod's share:
                # it reserves its slots, so a wait that cannot fit the
                # queue timeout is refused at once, before polling Redis.
                self.local = admit.TokenBucket(vendor_quota(
                    settings.vendor_local_rate_limit, settings.vendor_burst))
                stages.update(local=self.local)
        else:
            # One process: the in-process bucket is the vendor limiter.
            self.limiter = admit.TokenBucket(quota)
            stages.update(local=self.limiter)
        self.guard = admit.Guard(
            "vendor", breaker=self.breaker, semaphore=self.semaphore,
            call_timeout=settings.vendor_call_timeout,
            retries=settings.vendor_retries,
            backoff_base=settings.vendor_backoff_s,
            backoff_max=max(settings.vendor_backoff_s, 2.0), **stages)
        self.transport = transport
        self.client: Optional[httpx.AsyncClient] = None
        self.headers = {"user-agent": "admit-example/1"}
        if settings.vendor_api_key:
            self.headers["authorization"] = \
                "Bearer " + settings.vendor_api_key

    async def start(self) -> None:
        """Opens the connection pool (seed 002, "HTTP Client")."""
        s = self.settings
        kw: Dict[str, Any] = {}
        if self.transport is not None:
            kw["transport"] = self.transport
        self.client = httpx.AsyncClient(
            base_url=s.vendor_url, headers=self.headers,
            limits=httpx.Limits(max_connections=s.vendor_concurrency,
                                max_keepalive_connections=min(
                                    20, s.vendor_concurrency)),
            timeout=httpx.Timeout(connect=5.0, pool=5.0, write=10.0,
                                  read=s.vendor_call_timeout), **kw)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _quota_feedback(self, r: httpx.Response) -> None:
        """The vendor says its quota is used up until its window resets:
        pause now instead of collecting 429s."""
        remaining = r.headers.get("x-ratelimit-remaining-requests")
        reset = parse_duration(r.headers.get("x-ratelimit-reset-requests",
                                             ""))
        if remaining is None or not remaining.isdigit() or reset is None \
                or int(remaining) > 0 or reset <= 0:
            return
        # A Redis pause is a round trip: not on the event loop.
        await asyncio.get_running_loop().run_in_executor(
            None, self.guard.vendor_quota, int(remaining), reset)

    async def call(self, payload: Dict[str, Any], timing: Dict[str, float]) \
            -> Dict[str, Any]:
        """One vendor call through the guard; returns the vendor's JSON.
        ``timing["queue_wait"]`` gets the seconds spent before the first
        attempt started (limiter and semaphore waits), ``timing
        ["attempts"]`` the attempts made. Raises admit's refusals, or
        VendorError, VendorRefused, VendorLimited, TimeoutError."""
        assert self.client is not None, "VendorPipeline.start() first"
        client = self.client
        start = time.monotonic()
        timing["attempts"] = 0

        async def attempt() -> Dict[str, Any]:
            if not timing["attempts"]:
                timing["queue_wait"] = time.monotonic() - start
            timing["attempts"] += 1
            try:
                r = await client.post(self.settings.vendor_path, json=payload)
            except httpx.TimeoutException:
                raise TimeoutError("the vendor did not answer") from None
            except httpx.HTTPError as e:
                raise VendorError(502, "cannot reach the vendor: %s"
                                  % type(e).__name__) from None
            if r.status_code == 429:
                # Feed the vendor's own verdict back: the guard pauses (in
                # Redis: every pod) for Retry-After, then retries.
                pause = parse_retry_after(r.headers.get("retry-after"))
                raise admit.VendorLimited(r, retry_after=max(
                    pause if pause is not None else 1.0, 0.001))
            if r.status_code >= 500:
                raise VendorError(r.status_code,
                                  "the vendor failed with %d" % r.status_code)
            if r.status_code >= 400:
                raise VendorRefused(r.status_code, r.text[:200])
            await self._quota_feedback(r)
            return r.json()

        try:
            return await self.guard.call(
                attempt, queue_timeout=self.settings.vendor_queue_timeout)
        finally:
            timing.setdefault("queue_wait", time.monotonic() - start)


def vendor_failure(e: BaseException) -> HTTPException:
    """The HTTP answer for a vendor call that did not succeed."""
    if isinstance(e, admit.RateLimited) or \
            isinstance(e, admit.VendorLimited):
        # The vendor quota cannot serve this request within the queue
        # timeout. As in the seed: 429, with when to come back.
        ra = getattr(e, "retry_after", None) or 1.0
        return HTTPException(429, "Vendor rate limit exceeded", headers={
            "Retry-After": str(retry_after_seconds(int(ra * 1e9))),
            "X-Admit-Outcome": "vendor-busy"})
    if isinstance(e, admit.CircuitOpen):
        return HTTPException(503, "The vendor is failing; try again later",
                             headers={"Retry-After": str(retry_after_seconds(
                                 int((e.retry_after or 1.0) * 1e9))),
                                 "X-Admit-Outcome": "vendor-down"})
    if isinstance(e, admit.QueueTimeout):
        # The queue timeout ran out while waiting for the vendor limiter
        # (or a semaphore slot): no vendor call possible in time.
        return HTTPException(429, "Vendor rate limit exceeded", headers={
            "Retry-After": "1", "X-Admit-Outcome": "vendor-busy"})
    if isinstance(e, admit.Rejected):
        return HTTPException(503, "No capacity for vendor calls",
                             headers={"Retry-After": "1",
                                      "X-Admit-Outcome": "vendor-capacity"})
    if isinstance(e, admit.BackendUnavailable):
        return HTTPException(503, "Rate limiter unavailable",
                             headers={"Retry-After": "1",
                                      "X-Admit-Outcome": "backend-down"})
    if isinstance(e, VendorRefused):
        return HTTPException(502, "The vendor refused the request (%d)"
                             % e.status,
                             headers={"X-Admit-Outcome": "vendor-error"})
    if isinstance(e, VendorError):
        return HTTPException(502, str(e),
                             headers={"X-Admit-Outcome": "vendor-error"})
    if isinstance(e, TimeoutError):
        return HTTPException(504, "The vendor timed out",
                             headers={"X-Admit-Outcome": "vendor-timeout"})
    raise e


# -- voice agent sessions (seed 001's /agent) ------------------------------

class LocalSessions:
    """Concurrent sessions per user and in total, in this process."""

    def __init__(self, total: int, per_user: int) -> None:
        self.total = admit.Semaphore(total, max_waiters=0)
        self.per_user = per_user
        self.users: Dict[str, admit.Semaphore] = {}

    async def open(self, user: str) -> Optional[Any]:
        """A session token, or None with the reason in ``self.why``."""
        sem = self.users.get(user)
        if sem is None:
            sem = self.users[user] = admit.Semaphore(self.per_user,
                                                     max_waiters=0)
        if not sem.try_acquire():
            return "user"
        if not self.total.try_acquire():
            self._release_user(user, sem)
            return "total"
        return ("local", user, sem)

    def _release_user(self, user: str, sem: admit.Semaphore) -> None:
        sem.release()
        if sem.in_use == 0 and self.users.get(user) is sem:
            del self.users[user]

    async def close(self, token: Any) -> None:
        _, user, sem = token
        self._release_user(user, sem)
        self.total.release()

    def counts(self) -> Dict[str, int]:
        return {"open": self.total.in_use, "users": len(self.users)}


class RedisSessions:
    """The same limits shared by every pod through Redis semaphores; a
    pod that dies without closing its sessions frees them when their
    leases lapse (they are renewed while the session lives)."""

    LEASE = 30.0

    def __init__(self, redis: admit.Redis, total: int, per_user: int,
                 policy: str) -> None:
        on_failure = "fail_open" if policy == "fail_open" else "fail_closed"
        self.user_sem = admit.RedisSemaphore(
            redis, per_user, lease=self.LEASE, name="agent-user",
            on_failure=on_failure)
        self.total_sem = admit.RedisSemaphore(
            redis, total, lease=self.LEASE, name="agent-total",
            on_failure=on_failure)
        # Policy "local": sessions fall back to this pod's own limits.
        self.fallback = LocalSessions(total, per_user) \
            if policy == "fallback" else None
        self.renewals: Dict[int, asyncio.Task] = {}

    async def open(self, user: str) -> Any:
        run = asyncio.get_running_loop().run_in_executor
        try:
            u = await run(None, self.user_sem.try_acquire, user)
            if u is None:
                return "user"
            t = await run(None, self.total_sem.try_acquire, "all")
            if t is None:
                await run(None, self.user_sem.release, u)
                return "total"
        except admit.BackendUnavailable:
            if self.fallback is None:
                raise
            return await self.fallback.open(user)
        token = ["redis", u, t]
        self.renewals[id(token)] = asyncio.ensure_future(self._renew(token))
        return token

    async def _renew(self, token: list) -> None:
        run = asyncio.get_running_loop().run_in_executor
        while True:
            await asyncio.sleep(self.LEASE / 3)
            try:
                token[1] = await run(None, self.user_sem.renew, token[1])
                token[2] = await run(None, self.total_sem.renew, token[2])
            except admit.AdmitError:
                pass    # Redis is away; the lease lapses if it stays away

    async def close(self, token: Any) -> None:
        if token[0] == "local":
            await self.fallback.close(token)   # type: ignore[union-attr]
            return
        task = self.renewals.pop(id(token), None)
        if task is not None:
            task.cancel()
        run = asyncio.get_running_loop().run_in_executor
        for sem, lease in ((self.total_sem, token[2]),
                           (self.user_sem, token[1])):
            try:
                await run(None, sem.release, lease)
            except admit.AdmitError:
                pass    # it lapses on its own

    def counts(self) -> Dict[str, int]:
        try:
            return {"open": self.total_sem.held("all")}
        except admit.AdmitError:
            return {"open": -1}


# -- what the demo reads: outcomes and waits -------------------------------

class Recorder:
    """Per-process counters and recent samples for ``GET /stats``."""

    SAMPLES = 20000

    def __init__(self) -> None:
        self.counts: Dict[str, Dict[str, int]] = collections.defaultdict(
            lambda: collections.defaultdict(int))
        self.latency = collections.deque(maxlen=self.SAMPLES)
        self.queue_wait = collections.deque(maxlen=self.SAMPLES)
        self.admission_wait = collections.deque(maxlen=self.SAMPLES)
        self.running = 0
        self.max_running = 0
        self.agent = collections.defaultdict(int)

    def record(self, path: str, outcome: str, seconds: float) -> None:
        self.counts[path][outcome] += 1
        self.latency.append(seconds)

    def snapshot(self) -> Dict[str, Any]:
        return {
            "requests": {p: dict(c) for p, c in self.counts.items()},
            "latency": percentiles(self.latency),
            "vendor_queue_wait": percentiles(self.queue_wait),
            "admission_wait": percentiles(self.admission_wait),
            "max_running": self.max_running,
            "agent": dict(self.agent),
        }


def percentiles(samples: Any) -> Dict[str, Any]:
    """Count, p50, p99 and max of ``samples`` (seconds)."""
    xs = sorted(samples)
    if not xs:
        return {"count": 0, "p50": None, "p99": None, "max": None}

    def q(p: float) -> float:
        return round(xs[min(len(xs) - 1, int(math.ceil(p * len(xs))) - 1)],
                     6)
    return {"count": len(xs), "p50": q(0.5), "p99": q(0.99),
            "max": round(xs[-1], 6)}


def classify(status: int, headers: Any, admitted: bool) -> str:
    """What admit decided for a response (the ``X-Admit-Outcome`` value)."""
    given = headers.get("x-admit-outcome")
    if given:
        return given
    if status == 503 and not admitted:
        return "admission"
    if status == 429:
        # The denied policy is the last in RateLimit: "endpoint" or a tier.
        last = headers.get("ratelimit", "").split(",")[-1].strip()
        return "limited-endpoint" if last.startswith('"endpoint"') \
            else "limited-tier"
    if status < 400:
        return "ok"
    return "error"


class Observe:
    """Outermost ASGI middleware: times each request, classifies what
    admit decided and adds ``X-Admit-Outcome``, ``X-Admission-Wait``,
    ``X-Response-Time`` (seconds until the answer started) and ``X-Pod``
    to the response."""

    def __init__(self, app: Any, recorder: Recorder, pod: str) -> None:
        self.app = app
        self.rec = recorder
        self.pod = pod.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ENDPOINT_LIMITS:
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        scope["admit.start"] = start
        state = {"outcome": "error"}

        async def send_wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", []))
                view = {k.decode().lower(): v.decode() for k, v in hdrs}
                admitted = "admit.admitted" in scope
                outcome = classify(message["status"], view, admitted)
                state["outcome"] = outcome
                extra = [(b"x-pod", self.pod), (b"x-response-time", b"%.6f"
                                                % (time.monotonic() - start))]
                if "x-admit-outcome" not in view:
                    extra.append((b"x-admit-outcome", outcome.encode()))
                if admitted:
                    extra.append((b"x-admission-wait", b"%.6f" % (
                        scope["admit.admitted"] - start)))
                message = dict(message, headers=hdrs + extra)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            self.rec.record(scope["path"], state["outcome"],
                            time.monotonic() - start)


class Admitted:
    """ASGI middleware just inside admission: marks the moment a request
    to a limited endpoint was admitted and counts those running at once
    (the exempt /health, /ready, /metrics and /stats are not counted)."""

    def __init__(self, app: Any, recorder: Recorder) -> None:
        self.app = app
        self.rec = recorder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ENDPOINT_LIMITS:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        scope["admit.admitted"] = now
        if "admit.start" in scope:
            self.rec.admission_wait.append(now - scope["admit.start"])
        rec = self.rec
        rec.running += 1
        rec.max_running = max(rec.max_running, rec.running)
        try:
            await self.app(scope, receive, send)
        finally:
            rec.running -= 1


# -- the application -------------------------------------------------------

def create_app(settings: Optional[Settings] = None, *,
               vendor_transport: Any = None,
               redis: Optional[admit.Redis] = None,
               rate_clock: Optional[admit.ManualClock] = None) -> FastAPI:
    """Builds the service. ``vendor_transport`` (an httpx transport),
    ``redis`` (an :class:`admit.Redis`) and ``rate_clock`` (the user
    limits' clock, local backend only) are for tests."""
    s = settings or Settings.from_env()
    own_redis = False
    if s.backend == "redis" and redis is None:
        redis = admit.Redis(s.redis_url, prefix=s.redis_prefix)
        own_redis = True
    if s.backend == "local":
        redis = None

    rec = Recorder()
    app = FastAPI(title="admit example service",
                  description="seed 002's layered architecture over admit")
    app.state.settings = s
    app.state.recorder = rec

    # Layer 4: users, tiers and endpoints (in Redis: shared by all pods).
    limit = RateLimit(TIERS, key=by_header("X-User-Id"), tier=lookup_tier,
                      routes=ENDPOINT_LIMITS, backend=redis,
                      on_failure=s.on_failure, headers="both",
                      clock=rate_clock)
    app.state.limit = limit

    # Layer 5: the vendor pipeline.
    vendor = VendorPipeline(s, redis, transport=vendor_transport)
    app.state.vendor = vendor

    # Layer 3: pod admission (requests, not WebSocket sessions).
    controller = admit.AdmissionController(s.max_in_flight, s.backlog)
    app.state.admission = controller

    # Layer 2: readiness from the library's registry (with hysteresis):
    # not ready while more than half the backlog waits with every slot
    # taken, or while most requests fail. The vendor guard is left out of
    # the verdict (a vendor's trouble hits every pod alike, and Health
    # would add its capacity to the pod's); /metrics shows it.
    health = admit.Health(max_waiting=max(1, s.backlog // 2),
                          hold=s.ready_hold,
                          fail_on_degraded=s.failure_policy == "closed")
    health.add(controller, "http")
    metrics = admit.Health().add(controller, "http").add(vendor.guard)
    if redis is not None:
        health.add(redis)
        metrics.add(redis)
    add_health_routes(app, health=health)

    # Seed 001: the voice agent's sessions.
    if redis is not None:
        sessions: Any = RedisSessions(redis, s.agent_max_sessions,
                                      s.agent_max_sessions_per_user,
                                      s.on_failure)
    else:
        sessions = LocalSessions(s.agent_max_sessions,
                                 s.agent_max_sessions_per_user)
    app.state.sessions = sessions

    # ASGI middleware, innermost first: Admitted, admission, Observe.
    app.add_middleware(Admitted, recorder=rec)
    app.add_middleware(AdmissionMiddleware, controller=controller,
                       queue_timeout=s.admission_timeout,
                       exempt=("/health", "/ready", "/metrics", "/stats"))
    app.add_middleware(Observe, recorder=rec, pod=s.pod_name)

    @app.on_event("startup")
    async def startup() -> None:
        await vendor.start()

    @app.on_event("shutdown")
    async def shutdown() -> None:
        await vendor.close()
        if own_redis and redis is not None:
            redis.close()

    api = APIRouter(dependencies=[Depends(limit)])

    async def call_vendor(request: Request, response: Response,
                          payload: Dict[str, Any]) -> Dict[str, Any]:
        timing: Dict[str, float] = {}
        try:
            result = await vendor.call(payload, timing)
        except BaseException as e:
            wait = timing.get("queue_wait", 0.0)
            rec.queue_wait.append(wait)
            if isinstance(e, asyncio.CancelledError):
                raise
            http = vendor_failure(e)
            http.headers = dict(http.headers or {},
                                **{"X-Vendor-Queue-Wait": "%.6f" % wait})
            raise http from None
        wait = timing["queue_wait"]
        rec.queue_wait.append(wait)
        response.headers["X-Vendor-Queue-Wait"] = "%.6f" % wait
        response.headers["X-Vendor-Attempts"] = str(timing["attempts"])
        return result

    @api.post("/chat")
    async def chat(request: Request, response: Response) -> Dict[str, Any]:
        """One chat turn: a vendor (LLM) call."""
        body = await _json(request)
        message = str(body.get("message", ""))[:2000]
        result = await call_vendor(request, response, {
            "model": "fake", "messages": [{"role": "user",
                                           "content": message}]})
        reply = ""
        try:
            reply = result["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            pass
        return {"reply": reply}

    @api.post("/analyze")
    async def analyze(request: Request,
                      response: Response) -> Dict[str, Any]:
        """An analysis of a text: a (longer) vendor call."""
        body = await _json(request)
        text = str(body.get("text", ""))[:10000]
        result = await call_vendor(request, response, {
            "model": "fake", "messages": [
                {"role": "system", "content": "Analyze the text."},
                {"role": "user", "content": text}]})
        return {"analysis": result.get("choices", [{}])[0]
                .get("message", {}).get("content", "")}

    @api.get("/search")
    async def search(q: str = "") -> Dict[str, Any]:
        """A search in our own index: no vendor call, a short wait that
        stands for the database query."""
        if s.search_latency:
            await asyncio.sleep(s.search_latency)
        return {"query": q, "results": [q + " #1", q + " #2"]}

    app.include_router(api)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """Every admit counter of this process, as Prometheus text."""
        return Response(metrics.metrics(),
                        media_type="text/plain; version=0.0.4")

    @app.get("/stats", include_in_schema=False)
    async def stats() -> Dict[str, Any]:
        """What this process decided, for the demo."""
        m = vendor.guard.metrics()
        a = controller.stats()
        out = rec.snapshot()
        out.update({
            "pod": s.pod_name, "backend": s.backend,
            "config": {"max_in_flight": s.max_in_flight,
                       "backlog": s.backlog,
                       "vendor_rate_limit": s.vendor_rate_limit,
                       "vendor_bucket": repr(vendor.quota),
                       "vendor_local": repr(vendor.local),
                       "agent_max_sessions": s.agent_max_sessions,
                       "agent_max_sessions_per_user":
                           s.agent_max_sessions_per_user},
            "admission": {"in_flight": a.in_flight, "waiting": a.waiting,
                          "admitted": a.admitted, "rejected": a.rejected,
                          "shed": a.shed, "timed_out": a.timed_out},
            "guard": {"started": m.started, "admitted": m.admitted,
                      "succeeded": m.succeeded, "failed": m.failed,
                      "retries": m.retries,
                      "retries_denied": m.retries_denied,
                      "vendor_limited": m.vendor_limited,
                      "pauses": m.pauses,
                      "rejected_local": m.rejected_local,
                      "rejected_global": m.rejected_global,
                      "rejected_pause": m.rejected_pause,
                      "rejected_semaphore": m.rejected_semaphore,
                      "queue_timeouts": m.queue_timeouts,
                      "call_timeouts": m.call_timeouts,
                      "breaker": m.breaker_state,
                      "in_flight": m.in_flight, "waiting": m.waiting},
            "sessions": sessions.counts(),
        })
        return out

    @app.websocket("/agent")
    async def agent(ws: WebSocket) -> None:
        """The voice agent's connection (seed 001): at most
        ADMIT_AGENT_MAX_SESSIONS_PER_USER sessions per user and
        ADMIT_AGENT_MAX_SESSIONS in total; beyond that the session is
        closed with 1013 "try again later"."""
        user = ws.headers.get("x-user-id") or \
            ws.query_params.get("user") or \
            "ip:" + (ws.client.host if ws.client else "unknown")
        await ws.accept()
        try:
            token = await sessions.open(user)
        except admit.AdmitError:
            rec.agent["refused_backend"] += 1
            await ws.close(code=1013, reason="try again later: session "
                           "limits unavailable")
            return
        if isinstance(token, str):
            rec.agent["refused_" + token] += 1
            why = "you have %d sessions open" % \
                s.agent_max_sessions_per_user if token == "user" else \
                "the service is at %d sessions" % s.agent_max_sessions
            await ws.close(code=1013, reason="try again later: " + why)
            return
        rec.agent["accepted"] += 1
        try:
            await ws.send_json({"type": "ready", "user": user,
                                "pod": s.pod_name})
            while True:
                text = await ws.receive_text()
                await ws.send_json({"type": "transcript", "text": text})
        except WebSocketDisconnect:
            pass
        finally:
            await sessions.close(token)

    return app


async def _json(request: Request) -> Dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


app = create_app()
