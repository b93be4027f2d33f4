#!/usr/bin/python3
"""``make demo``: admit's layers at work, in one command.

Starts a fake LLM vendor (``fake_vendor.py``, with its own quota) and the
example service (``app.py`` under uvicorn) on free 127.0.0.1 ports, drives
a burst of mixed traffic at it (users of every tier on every endpoint, a
flash crowd, voice-agent WebSocket sessions, and far more vendor demand
than the vendor's quota), shows progress once a second, then prints what
every layer decided and checks it against the design. Exit status 0 when
the run agrees with the design, 1 when it contradicts it, 2 when the demo
could not run.

- default (embedded): one service process, limits in process, no Redis;
- ``--redis`` (``make demo REDIS=1``): a throwaway redis-server and
  ``--pods`` service processes sharing every limit through it, the traffic
  spread over them; the vendor still never receives more than its quota.

Everything it starts is stopped on exit, on failure and on Ctrl-C.
"""

import argparse
import asyncio
import collections
import json
import math
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON = sys.executable or "/usr/bin/python3"

# The vendor's quota, which the service is told about (VENDOR_RATE_LIMIT).
VENDOR_QUOTA = 20
VENDOR_WINDOW_S = 5
# The service's settings for the demo: a small pod, so the layers show.
MAX_IN_FLIGHT = 32
BACKLOG = 32
AGENT_MAX = 10
AGENT_PER_USER = 2
QUEUE_TIMEOUT_S = 5
RETRIES = 3

TIER_LIMITS = {"free": 10, "pro": 100, "enterprise": 1000}    # per minute
ENDPOINT_LIMITS = {"/chat": 20, "/search": 100, "/analyze": 5}
VENDOR_ENDPOINTS = ("/chat", "/analyze")
# group: (tier, users, requests per second per user)
GROUPS = {"free": ("free", 4, 3.0), "pro": ("pro", 4, 8.0),
          "enterprise": ("enterprise", 4, 12.0)}
MIX = (("/chat", 0.35), ("/search", 0.45), ("/analyze", 0.20))
CROWD_PER_POD = 120

LIMIT_OUTCOMES = ("limited-tier", "limited-endpoint")
OUTCOME_COLUMNS = (("ok", "ok"), ("limited-tier", "429 tier"),
                   ("limited-endpoint", "429 endp"),
                   ("vendor-busy", "429 vendor"), ("admission", "503 busy"))


class DemoError(Exception):
    """The demo could not run (exit status 2)."""


def say(*args: Any) -> None:
    print(*args, flush=True)


def admit_rate(spec: str) -> Any:
    """(count, seconds) of a one-rate spec such as "20/5s"."""
    sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
    import admit
    r = admit.parse_rates(spec)[0]
    return r.count, r.period


# -- processes ----------------------------------------------------------------

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Processes:
    """The processes this demo started, and nothing else: stopped by pid."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []
        self.logs: Dict[int, str] = {}
        self.dir = tempfile.mkdtemp(prefix="admit-demo.")

    def start(self, name: str, cmd: List[str], env: Dict[str, str],
              cwd: str = ROOT, stdout: Any = None) -> subprocess.Popen:
        log = os.path.join(self.dir, name + ".log")
        with open(log, "wb") as f:
            p = subprocess.Popen(cmd, cwd=cwd, env=env,
                                 stdout=stdout if stdout else f, stderr=f,
                                 stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        self.procs.append(p)
        self.logs[p.pid] = log
        return p

    def tail(self, p: subprocess.Popen, lines: int = 15) -> str:
        try:
            with open(self.logs[p.pid], errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in self.procs:
            if p.stdout is not None:
                p.stdout.close()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def read_line(p: subprocess.Popen, prefix: str, timeout: float) -> str:
    """The first line of ``p``'s stdout starting with ``prefix``."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
        elif p.poll() is not None:
            break
    raise DemoError("no %r line from %s" % (prefix, p.args[:3]))


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError("exited with status %d" % proc.returncode)
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise DemoError("%s did not answer within %g s" % (url, timeout))


def start_vendor(ps: Processes, env: Dict[str, str]) -> str:
    cmd = [PYTHON, os.path.join(HERE, "fake_vendor.py"), "--port", "0",
           "--quota", str(VENDOR_QUOTA), "--window-s", str(VENDOR_WINDOW_S),
           "--latency-ms", "150", "--jitter-ms", "100",
           "--error-rate", "0.05", "--seed", "7"]
    p = ps.start("vendor", cmd, env, stdout=subprocess.PIPE)
    line = read_line(p, "listening on ", 15)
    url = line.split("listening on ", 1)[1].strip()
    wait_http(url + "/health", p, 10)
    return url


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(ps: Processes, env: Dict[str, str]) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise DemoError("redis-server is not installed (make deps installs "
                        "it; or run the embedded demo: make demo)")
    for _ in range(5):
        port = free_port()
        d = tempfile.mkdtemp(prefix="redis.", dir=ps.dir)
        p = ps.start("redis-%d" % port, [
            exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", d,
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--logfile", ""], env)
        for _ in range(100):
            if redis_ping(port):
                return "redis://127.0.0.1:%d/0" % port
            if p.poll() is not None:
                break
            time.sleep(0.05)
        if p.poll() is None:
            p.terminate()
            p.wait()
    raise DemoError("could not start redis-server")


def start_pods(ps: Processes, env: Dict[str, str], n: int) -> List[str]:
    """Starts ``n`` service processes at once; returns their URLs."""
    urls: List[Optional[str]] = [None] * n
    last = ""
    for _ in range(3):
        started = []
        for i in range(n):
            if urls[i] is not None:
                continue
            name = "pod-%d" % (i + 1)
            port = free_port()
            cmd = [PYTHON, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--limit-concurrency", "1000",
                   "--backlog", "2048", "--timeout-keep-alive", "5",
                   "--no-access-log", "--log-level", "warning"]
            p = ps.start(name, cmd, dict(env, POD_NAME=name), cwd=HERE)
            started.append((i, p, "http://127.0.0.1:%d" % port))
        for i, p, url in started:
            try:
                wait_http(url + "/health", p, 20)
                urls[i] = url
            except DemoError as e:
                last = "pod-%d: %s\n%s" % (i + 1, e, ps.tail(p))
                if p.poll() is None:
                    p.terminate()
                    p.wait()
        if all(urls):
            return [u for u in urls if u]
    raise DemoError("the service did not start:\n" + last)


# -- traffic ------------------------------------------------------------------

class Result:
    __slots__ = ("group", "user", "tier", "endpoint", "status", "outcome",
                 "latency", "server_time", "vendor_wait", "admission_wait",
                 "sent_at", "window")

    def __init__(self, group: str, user: str, tier: str, endpoint: str,
                 sent_at: float) -> None:
        self.group = group
        self.user = user
        self.tier = tier
        self.endpoint = endpoint
        self.sent_at = sent_at
        self.status = 0
        self.outcome = "no answer"
        self.latency = 0.0
        self.server_time: Optional[float] = None
        self.vendor_wait: Optional[float] = None
        self.admission_wait: Optional[float] = None
        # The minute window (on the limiter's clock) the request was sent
        # and answered in; None when it was in flight across an edge.
        self.window: Optional[int] = None


class Driver:
    def __init__(self, pods: List[str], vendor: str, seconds: float,
                 redis: bool) -> None:
        self.pods = pods
        self.vendor = vendor
        self.seconds = seconds
        self.redis = redis
        self.results: List[Result] = []
        self.tasks: set = set()
        self.rng = random.Random(2024)
        self.rr = collections.Counter()
        self.agent: List[Dict[str, Any]] = []
        self.window_clock = time.time if redis else time.monotonic
        self.windows: List[int] = []
        self.ready_log: List[str] = []

    def _pod(self, user: str) -> int:
        # Each user's requests go round the pods: with Redis, the pods
        # share the user's limits; without, there is one pod.
        self.rr[user] += 1
        return self.rr[user] % len(self.pods)

    async def _one(self, group: str, user: str, tier: str, endpoint: str
                   ) -> None:
        r = Result(group, user, tier, endpoint, time.monotonic())
        w0 = self._window()
        self.results.append(r)
        client = self.clients[self._pod(user)]
        h = {"X-User-Id": user, "X-Tier": tier}
        start = time.monotonic()
        try:
            if endpoint == "/search":
                resp = await client.get("/search", params={"q": "admit"},
                                        headers=h)
            elif endpoint == "/chat":
                resp = await client.post("/chat", headers=h, json={
                    "message": "hello from %s" % user})
            else:
                resp = await client.post("/analyze", headers=h, json={
                    "text": "a long text by %s" % user})
        except httpx.HTTPError as e:
            r.outcome = "error: " + type(e).__name__
            r.latency = time.monotonic() - start
            return
        r.latency = time.monotonic() - start
        r.window = w0 if self._window() == w0 else None
        r.status = resp.status_code
        r.outcome = resp.headers.get("x-admit-outcome", "?")
        for attr, name in (("vendor_wait", "x-vendor-queue-wait"),
                           ("admission_wait", "x-admission-wait"),
                           ("server_time", "x-response-time")):
            v = resp.headers.get(name)
            if v is not None:
                setattr(r, attr, float(v))

    def _window(self) -> int:
        """The current minute window of the fixed-window limiters: Redis
        aligns them on the server's clock (Unix time), in process on the
        monotonic clock."""
        return int(self.window_clock() // 60)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _user(self, group: str, user: str, tier: str, rate: float,
                    end: float) -> None:
        await asyncio.sleep(self.rng.random() / rate)
        while time.monotonic() < end:
            x = self.rng.random()
            for endpoint, w in MIX:
                x -= w
                if x < 0:
                    break
            self._spawn(self._one(group, user, tier, endpoint))
            await asyncio.sleep(self.rng.expovariate(rate))

    async def _crowd(self, at: float) -> None:
        """A flash crowd: many requests arriving at the same instant. The
        connections are opened beforehand and the requests written in one
        go, so they really arrive together (an HTTP client library would
        spread them over its own CPU time)."""
        n = CROWD_PER_POD * len(self.pods)
        conns = []
        await asyncio.sleep(max(0.0, at - 1.0))
        for i in range(n):
            pod = i % len(self.pods)
            host, port = self.pods[pod].split("//")[1].split(":")
            try:
                conns.append((i, await asyncio.open_connection(
                    host, int(port))))
            except OSError:
                pass
        await asyncio.sleep(max(0.0, self.start + at - time.monotonic()))
        say("  -- flash crowd: %d requests to /search at once, from %d new "
            "users --" % (n, n // 3))
        jobs = []
        for i, (reader, writer) in conns:
            user = "crowd-%03d" % (i // 3)
            r = Result("crowd", user, "pro", "/search", time.monotonic())
            r.window = self._window()
            self.results.append(r)
            writer.write((
                "GET /search?q=crowd HTTP/1.1\r\nHost: demo\r\n"
                "X-User-Id: %s\r\nX-Tier: pro\r\nConnection: close\r\n"
                "\r\n" % user).encode())
            jobs.append(self._raw_answer(r, reader, writer, self._window))
        await asyncio.gather(*jobs)

    @staticmethod
    async def _raw_answer(r: Result, reader: Any, writer: Any,
                          window: Any) -> None:
        try:
            data = await asyncio.wait_for(reader.read(), 60)
        except (OSError, asyncio.TimeoutError) as e:
            r.outcome = "error: " + type(e).__name__
            return
        finally:
            writer.close()
        r.latency = time.monotonic() - r.sent_at
        if window() != r.window:
            r.window = None
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        try:
            r.status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            r.outcome = "error: bad answer"
            return
        h = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            h[k.strip().lower()] = v.strip()
        r.outcome = h.get("x-admit-outcome", "?")
        for attr, name in (("admission_wait", "x-admission-wait"),
                           ("server_time", "x-response-time")):
            if name in h:
                setattr(r, attr, float(h[name]))

    async def _session(self, user: str, i: int, hold: float) -> None:
        import websockets
        from websockets.exceptions import ConnectionClosed
        url = self.pods[(i + hash(user)) % len(self.pods)].replace(
            "http://", "ws://") + "/agent"
        rec: Dict[str, Any] = {"user": user, "result": "error",
                               "opened": None, "closed": None}
        self.agent.append(rec)
        try:
            async with websockets.connect(
                    url, extra_headers={"X-User-Id": user},
                    open_timeout=10, close_timeout=2) as ws:
                try:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                except ConnectionClosed as e:
                    rec["result"] = "refused %d" % e.code
                    rec["reason"] = e.reason
                    return
                rec["result"] = "accepted"
                rec["opened"] = time.monotonic()
                rec["pod"] = hello.get("pod")
                end = time.monotonic() + hold
                while time.monotonic() < end:
                    await ws.send("audio chunk")
                    await asyncio.wait_for(ws.recv(), 10)
                    await asyncio.sleep(0.5)
                rec["closed"] = time.monotonic()
        except (OSError, asyncio.TimeoutError, ConnectionClosed) as e:
            rec["result"] = "error: " + type(e).__name__

    async def _agents(self, at: float, hold: float) -> None:
        await asyncio.sleep(at)
        users = ["pro-%d" % i for i in range(1, 5)] + \
            ["enterprise-%d" % i for i in range(1, 5)]
        say("  -- voice agent: %d users open %d /agent sessions each --"
            % (len(users), AGENT_PER_USER + 1))
        await asyncio.gather(*[self._session(u, i, hold) for u in users
                               for i in range(AGENT_PER_USER + 1)])

    async def _progress(self, start: float) -> None:
        say("   time   sent     ok  429 limits  429 vendor  503 busy"
            "   vendor calls  most/window  ready")
        async with httpx.AsyncClient(timeout=2.0) as c:
            while True:
                await asyncio.sleep(1.0)
                n = collections.Counter(r.outcome for r in self.results)
                try:
                    v = (await c.get(self.vendor + "/stats")).json()
                    vendor = "%13d  %6d / %d" % (
                        v["received"], v["max_received_in_window"],
                        VENDOR_QUOTA)
                except (httpx.HTTPError, ValueError):
                    vendor = "%13s  %11s" % ("?", "?")
                ready = []
                for p in self.pods:
                    try:
                        r = await c.get(p + "/ready")
                        ready.append("yes" if r.status_code == 200 else
                                     "NO (%s)" % r.json().get("status"))
                    except (httpx.HTTPError, ValueError):
                        ready.append("?")
                say("  %4.0fs  %5d  %5d  %10d  %10d  %8d  %s  %s" % (
                    time.monotonic() - start, len(self.results), n["ok"],
                    n["limited-tier"] + n["limited-endpoint"],
                    n["vendor-busy"], n["admission"], vendor,
                    " ".join(ready)))

    async def run(self) -> None:
        """Drives the traffic; Ctrl-C or SIGTERM cancel it cleanly (and
        raise KeyboardInterrupt once everything is cancelled)."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        stopped = []

        def stop() -> None:
            stopped.append(True)
            me.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            await self._run()
        except asyncio.CancelledError:
            if not stopped:
                raise
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            raise KeyboardInterrupt from None
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=1000,
                              max_keepalive_connections=300)
        self.clients = [httpx.AsyncClient(base_url=p, limits=limits,
                                          timeout=60.0) for p in self.pods]
        async with httpx.AsyncClient() as c:
            (await c.post(self.vendor + "/reset")).raise_for_status()
        start = self.start = time.monotonic()
        end = start + self.seconds
        self.windows.append(self._window())
        progress = asyncio.ensure_future(self._progress(start))
        jobs = [self._crowd(self.seconds * 0.4),
                self._agents(min(1.0, self.seconds * 0.1),
                             max(1.0, self.seconds * 0.4))]
        for group, (tier, users, rate) in GROUPS.items():
            for i in range(1, users + 1):
                jobs.append(self._user(group, "%s-%d" % (group, i), tier,
                                       rate, end))
        try:
            await asyncio.gather(*jobs)
            # Let what is in flight finish (vendor waits end within the
            # queue timeout of each attempt).
            drain = QUEUE_TIMEOUT_S * (RETRIES + 1) + 10
            if self.tasks:
                say("  -- traffic stopped; waiting for %d requests still in "
                    "flight --" % len(self.tasks))
                done, pending = await asyncio.wait(set(self.tasks),
                                                   timeout=drain)
                for t in pending:
                    t.cancel()
            self.windows.append(self._window())
            self.elapsed = time.monotonic() - start
        finally:
            progress.cancel()
            try:
                await progress
            except asyncio.CancelledError:
                pass
            for c in self.clients:
                await c.aclose()

    def stats(self) -> Any:
        out = []
        for p in self.pods:
            out.append(httpx.get(p + "/stats", timeout=5).json())
        return out, httpx.get(self.vendor + "/stats", timeout=5).json()


# -- the report ---------------------------------------------------------------

def pct(xs: List[float], p: float) -> Optional[float]:
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(math.ceil(p * len(xs))) - 1)]


def ms(x: Optional[float]) -> str:
    return "-" if x is None else "%.0f ms" % (x * 1000) if x >= 0.0095 \
        else "%.1f ms" % (x * 1000)


def table(title: str, header: List[str], rows: List[List[Any]],
          first_width: int = 14) -> None:
    say("")
    say(title)
    widths = [max(len(str(r[i])) for r in [header] + rows)
              for i in range(len(header))]
    widths[0] = max(widths[0], first_width)

    def fmt(row: List[Any]) -> str:
        return "  " + "  ".join(
            str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
            for i, c in enumerate(row))
    say(fmt(header))
    say("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        say(fmt(r))


def counts(rs: List[Result]) -> List[Any]:
    n = collections.Counter(r.outcome for r in rs)
    other = len(rs) - sum(n[k] for k, _ in OUTCOME_COLUMNS)
    return [len(rs)] + [n[k] for k, _ in OUTCOME_COLUMNS] + [other]


def report(d: Driver, pods: List[Dict[str, Any]], vendor: Dict[str, Any],
           mode: str) -> List[str]:
    """Prints the tables; returns the failed checks."""
    rs = d.results
    windows = d.windows[-1] - d.windows[0] + 1
    cols = [c for _, c in OUTCOME_COLUMNS]
    failures: List[str] = []
    checks: List[str] = []

    def check(ok: bool, text: str) -> None:
        checks.append(("  ok    " if ok else "  FAIL  ") + text)
        if not ok:
            failures.append(text)

    # Per user and minute window, what passed the user limits (everything
    # but 429 limits and requests refused before them). A request in
    # flight across a window edge cannot be placed: it is left out.
    before = LIMIT_OUTCOMES + ("admission",)
    passed_w: Dict[Any, int] = collections.Counter()
    passed_ep_w: Dict[Any, int] = collections.Counter()
    reached_w: Dict[Any, int] = collections.Counter()
    for r in rs:
        if not r.status or r.window is None or r.outcome == "admission":
            continue
        reached_w[(r.user, r.window)] += 1
        if r.outcome not in before:
            passed_w[(r.user, r.window)] += 1
            passed_ep_w[(r.user, r.endpoint, r.window)] += 1
    passed: Dict[str, int] = collections.Counter()
    for (u, _), n in passed_w.items():
        passed[u] = max(passed[u], n)
    passed_ep: Dict[Any, int] = collections.Counter()
    for (u, ep, _), n in passed_ep_w.items():
        passed_ep[(u, ep)] = max(passed_ep[(u, ep)], n)

    rows = []
    for group, (tier, users, rate) in list(GROUPS.items()) + [
            ("crowd", ("pro", 0, 0))]:
        g = [r for r in rs if r.group == group]
        if not g:
            continue
        names = sorted({r.user for r in g})
        most = max(passed[u] for u in names)
        rows.append([group if group != "crowd" else "flash crowd",
                     len(names), "%d/min" % TIER_LIMITS[tier]] + counts(g) +
                    [most])
    rows.append(["all", len({r.user for r in rs}), ""] + counts(rs) + [""])
    table("Requests by user group (tier limit per user; several users each)",
          ["group", "users", "tier limit"] + ["sent"] + cols +
          ["other", "most/user"], rows)

    rows = []
    for ep, lim in ENDPOINT_LIMITS.items():
        g = [r for r in rs if r.endpoint == ep]
        most = max([passed_ep[k] for k in passed_ep if k[1] == ep] or [0])
        rows.append([ep, "%d/min" % lim,
                     "yes" if ep in VENDOR_ENDPOINTS else "no"] +
                    counts(g) + [most])
    table("Requests by endpoint (endpoint limit per user)",
          ["endpoint", "limit", "vendor"] + ["sent"] + cols +
          ["other", "most/user"], rows)

    other = collections.Counter(r.outcome for r in rs if r.outcome not in
                                dict(OUTCOME_COLUMNS))
    if other:
        say("  other: " + ", ".join("%s %d" % kv for kv in
                                    sorted(other.items())))

    say("")
    say("  ok          200: served")
    say("  429 tier    the user's tier quota for this minute is used up"
        " (layer 4, Retry-After)")
    say("  429 endp    the user's limit on this endpoint is used up"
        " (layer 4)")
    say("  429 vendor  no vendor call possible within the %d s queue timeout:"
        " refused at once" % QUEUE_TIMEOUT_S)
    say("              when the wait could not fit, not after waiting it out"
        " (layer 5)")
    say("  503 busy    the process had %d requests running and %d waiting:"
        " refused at once (layer 3)" % (MAX_IN_FLIGHT, BACKLOG))
    say("  most/user   the most one user got past the user limits in one "
        "minute window (ok, 429 vendor,")
    say("              vendor errors)%s" % (
        "; the run crossed a minute edge, where the fixed windows start "
        "over" if windows > 1 else ""))

    # The vendor.
    guard = collections.Counter()
    for p in pods:
        guard.update({k: v for k, v in p["guard"].items()
                      if isinstance(v, int)})
    vendor_bound = [r for r in rs if r.endpoint in VENDOR_ENDPOINTS]
    demand = sum(1 for r in vendor_bound if r.outcome not in before and
                 r.status)
    per_window = [w["received"] for w in vendor.get("windows", [])]
    say("")
    say("The vendor (quota %d calls per %d s window, enforced by the fake "
        "vendor itself)" % (VENDOR_QUOTA, VENDOR_WINDOW_S))
    say("  requests that wanted a vendor call     %5d  (passed the user "
        "limits on /chat and /analyze)" % demand)
    say("  calls the vendor received              %5d  in %d windows: %s" % (
        vendor["received"], len(per_window),
        " ".join(str(x) for x in per_window)))
    say("  most calls received in one window      %5d  (quota %d)" % (
        vendor["max_received_in_window"], VENDOR_QUOTA))
    say("  vendor answered 429 (over its quota)   %5d" %
        vendor["rejected_429"])
    say("  vendor failures (5xx, injected 5%%)     %5d  -> retries by the "
        "guard %d (retry budget refused %d)" % (
            vendor["errors_5xx"], guard["retries"], guard["retries_denied"]))
    refused = guard["rejected_local"] + guard["rejected_global"] + \
        guard["rejected_pause"] + guard["queue_timeouts"] + \
        guard["rejected_semaphore"]
    if d.redis:
        how = "the pod's local share %d, the global limiter in Redis %d" % (
            guard["rejected_local"], guard["rejected_global"])
    else:
        how = "the vendor limiter %d" % guard["rejected_local"]
    say("  vendor calls the guard refused         %5d  (%s, vendor pause %d,"
        " queue timeout %d)" % (refused, how, guard["rejected_pause"],
                                guard["queue_timeouts"]))

    # Waits and latency.
    ok = [r for r in rs if r.outcome == "ok"]
    rows = []

    def row(label: str, sel: List[Result], attr: str = "latency") -> None:
        xs = [getattr(r, attr) for r in sel if getattr(r, attr) is not None]
        sv = [r.server_time for r in sel if r.server_time is not None]
        if attr != "latency":
            rows.append([label, len(xs), ms(pct(xs, .5)), ms(pct(xs, .99)),
                         "", ""])
        else:
            rows.append([label, len(xs), ms(pct(xs, .5)), ms(pct(xs, .99)),
                         ms(pct(sv, .5)), ms(pct(sv, .99))])

    row("queue wait, vendor pipeline (served)", ok, "vendor_wait")
    row("queue wait, vendor pipeline (429 vendor)", [
        r for r in rs if r.outcome == "vendor-busy"], "vendor_wait")
    row("wait for admission into the process", rs, "admission_wait")
    row("latency: /chat, /analyze served", [
        r for r in ok if r.endpoint in VENDOR_ENDPOINTS])
    row("latency: /search served", [r for r in ok if r.endpoint == "/search"])
    row("latency: 429 tier or endpoint", [
        r for r in rs if r.outcome in LIMIT_OUTCOMES])
    row("latency: 429 vendor", [r for r in rs if r.outcome == "vendor-busy"])
    row("latency: 503 busy", [r for r in rs if r.outcome == "admission"])
    table("Waits and latency (the service's own timing, and as the client "
          "saw it)", ["", "count", "p50", "p99", "service p50",
                      "service p99"], rows, 42)
    say("  (client-side times include the demo's own queueing on this "
        "machine's %d cores)" % (os.cpu_count() or 1))

    # The voice agent.
    acc = [a for a in d.agent if a["result"] == "accepted"]
    ref = [a for a in d.agent if a["result"].startswith("refused")]
    err = [a for a in d.agent if a["result"].startswith("error")]
    per_user = collections.Counter(a["user"] for a in acc)
    say("")
    say("Voice agent /agent (WebSocket; at most %d sessions per user, %d in "
        "total)" % (AGENT_PER_USER, AGENT_MAX))
    say("  sessions attempted %d: accepted %d, closed with 1013 \"try again "
        "later\" %d%s" % (len(d.agent), len(acc), len(ref),
                          ", errors %d" % len(err) if err else ""))
    why = collections.Counter(
        ("per user" if "you have" in a.get("reason", "") else "total")
        for a in ref)
    if ref:
        say("  refused because of the per-user limit %d, the total limit %d"
            % (why["per user"], why["total"]))
    max_open = 0
    events = sorted([(a["opened"], 1) for a in acc] +
                    [(a["closed"] or 1e18, -1) for a in acc],
                    key=lambda e: (e[0], e[1]))
    cur = 0
    for _, k in events:
        cur += k
        max_open = max(max_open, cur)

    # Pods.
    say("")
    say("Service processes (%s)" % mode)
    for p in pods:
        a = p["admission"]
        say("  %-8s most requests running at once %3d (limit %d); admitted "
            "%d, refused 503 %d" % (
                p["pod"], p["max_running"], p["config"]["max_in_flight"],
                a["admitted"], a["rejected"] + a["shed"] + a["timed_out"]))
    if d.ready_log:
        say("  readiness: " + "; ".join(d.ready_log))

    # Checks.
    say("")
    say("Checks against the design")
    check(vendor["max_received_in_window"] <= VENDOR_QUOTA,
          "the vendor never received more than its quota in a window "
          "(most %d <= %d)" % (vendor["max_received_in_window"],
                               VENDOR_QUOTA))
    check(vendor["rejected_429"] == 0,
          "so the vendor never had to answer 429 (%d)"
          % vendor["rejected_429"])
    check(demand > vendor["received"],
          "vendor demand exceeded what the quota allowed (%d wanted, %d "
          "sent)" % (demand, vendor["received"]))
    check(sum(1 for r in rs if r.outcome == "vendor-busy") > 0,
          "the excess vendor demand was refused at once with 429 "
          "(no unbounded queue)")
    for group, (tier, users, rate) in GROUPS.items():
        names = sorted({r.user for r in rs if r.group == group})
        lim = TIER_LIMITS[tier]
        most = max(passed[u] for u in names)
        check(most <= lim, "%s: no user got past the tier limit in a minute "
              "(most %d <= %d)" % (group, most, lim))
        # Requests that reached the user limits (not refused before).
        if max(n for (u, _), n in reached_w.items() if u in names) > lim:
            n429 = sum(1 for r in rs if r.group == group and
                       r.outcome in LIMIT_OUTCOMES)
            check(n429 > 0, "%s: users asking more than the limits got 429 "
                  "(%d)" % (group, n429))
    for ep, lim in ENDPOINT_LIMITS.items():
        most = max([passed_ep[k] for k in passed_ep if k[1] == ep] or [0])
        check(most <= lim, "%s: no user got past the endpoint limit in a "
              "minute (most %d <= %d)" % (ep, most, lim))
    crowd = [r for r in rs if r.group == "crowd"]
    check(any(r.outcome == "admission" for r in crowd),
          "the flash crowd beyond %d running + %d waiting per process got "
          "503 at once (%d)" % (MAX_IN_FLIGHT, BACKLOG, sum(
              1 for r in crowd if r.outcome == "admission")))
    most_running = max(p["max_running"] for p in pods)
    check(most_running <= MAX_IN_FLIGHT, "no process ran more than %d "
          "requests at once (most %d)" % (MAX_IN_FLIGHT, most_running))
    check(max(per_user.values(), default=0) <= AGENT_PER_USER and
          max_open <= AGENT_MAX and len(ref) > 0 and not err,
          "/agent: at most %d sessions per user (most %d) and %d in total "
          "(most open %d); the rest closed with 1013 (%d)" % (
              AGENT_PER_USER, max(per_user.values(), default=0), AGENT_MAX,
              max_open, len(ref)))
    broken = [r for r in rs if r.status >= 500 and r.outcome not in (
        "admission", "vendor-error", "vendor-timeout")] + \
        [r for r in rs if not r.status]
    check(not broken, "every request got an answer from admit's layers or "
          "the vendor (unexpected: %d)" % len(broken))
    for c in checks:
        say(c)
    return failures


# -- main ---------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", action="store_true",
                    help="share the limits through a local redis-server "
                    "across several service processes")
    ap.add_argument("--pods", type=int, default=3,
                    help="service processes with --redis (default 3)")
    ap.add_argument("--seconds", type=float, default=float(
        os.environ.get("DEMO_SECONDS", "15")),
        help="how long to send traffic (default 15, env DEMO_SECONDS)")
    ap.add_argument("--vendor-limit", default="%d/%ds" % (
        VENDOR_QUOTA, VENDOR_WINDOW_S), metavar="RATE",
        help="the vendor quota the service is told (VENDOR_RATE_LIMIT; "
        "default the truth, %(default)s): try 40/5s to see the vendor "
        "answer 429 and the checks fail")
    args = ap.parse_args(argv)
    if not 3 <= args.seconds <= 40:
        ap.error("--seconds must be in 3..40 (the demo must end within 60 s)")
    if not 1 <= args.pods <= 8:
        ap.error("--pods must be in 1..8")
    pods_n = args.pods if args.redis else 1
    mode = ("Redis: %d service processes share every limit through one "
            "redis-server" % pods_n) if args.redis else \
        "embedded: one service process, limits in process, no Redis"
    t0 = time.monotonic()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(ROOT, "bindings", "python")] +
        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for k in list(env):
        if k.startswith(("ADMIT_", "VENDOR_")):
            del env[k]

    say("admit demo -- %s" % mode)
    say("  the vendor:  a fake LLM API with a quota of %d calls per %d s "
        "window (429 beyond it)," % (VENDOR_QUOTA, VENDOR_WINDOW_S))
    say("               150-250 ms a call, 5% of calls fail")
    say("  the service: layer 3, admission: %d running + %d waiting per "
        "process, beyond that 503" % (MAX_IN_FLIGHT, BACKLOG))
    say("               layer 4, per user per minute: tier free %d, pro %d,"
        " enterprise %d;" % tuple(TIER_LIMITS.values()))
    say("                        /chat %d, /search %d, /analyze %d" %
        tuple(ENDPOINT_LIMITS.values()))
    say("               layer 5, vendor calls (/chat, /analyze): limiter "
        "%s%s," % (args.vendor_limit, " in Redis, one for all processes"
                   if args.redis else ""))
    say("                        50 at once, queue timeout %d s, %d retries"
        " with backoff" % (QUEUE_TIMEOUT_S, RETRIES))
    say("               /agent WebSocket: %d sessions per user, %d in total,"
        " beyond that close 1013" % (AGENT_PER_USER, AGENT_MAX))
    say("  the traffic: %g s; %d users per tier sending %s requests/s each "
        "(free/pro/enterprise)" % (
            args.seconds, GROUPS["free"][1],
            "/".join("%g" % g[2] for g in GROUPS.values())))
    say("               to %s;" % ", ".join("%d%% %s" % (w * 100, ep)
                                      for ep, w in MIX))
    say("               a flash crowd at %.0f s; 8 users open %d /agent "
        "sessions each" % (args.seconds * 0.4, AGENT_PER_USER + 1))

    ps = Processes()
    try:
        vendor = start_vendor(ps, env)
        svc = dict(env, ADMIT_BACKEND="redis" if args.redis else "local",
                   ADMIT_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
                   ADMIT_BACKLOG=str(BACKLOG),
                   ADMIT_AGENT_MAX_SESSIONS=str(AGENT_MAX),
                   ADMIT_AGENT_MAX_SESSIONS_PER_USER=str(AGENT_PER_USER),
                   ADMIT_READY_HOLD_S="3",
                   VENDOR_URL=vendor,
                   VENDOR_RATE_LIMIT=args.vendor_limit,
                   VENDOR_CONCURRENCY="50",
                   VENDOR_QUEUE_TIMEOUT_S=str(QUEUE_TIMEOUT_S),
                   VENDOR_CALL_TIMEOUT_S="30",
                   VENDOR_RETRIES=str(RETRIES),
                   SEARCH_LATENCY_S="0.25")
        if args.redis:
            svc["ADMIT_REDIS_URL"] = start_redis(ps, env)
            svc["ADMIT_FAILURE_POLICY"] = "closed"
            # Each pod smooths its share locally (refusing at once what
            # cannot fit), the global limiter in Redis holds the quota.
            told = admit_rate(args.vendor_limit)
            svc["VENDOR_LOCAL_RATE_LIMIT"] = "%d/%gs" % (
                -(-told[0] // pods_n), told[1])
        pods = start_pods(ps, svc, pods_n)
        say("  started in %.1f s: vendor %s%s, service %s" % (
            time.monotonic() - t0, vendor,
            ", " + svc["ADMIT_REDIS_URL"] if args.redis else "",
            " ".join(pods)))
        say("")
        d = Driver(pods, vendor, args.seconds, args.redis)
        asyncio.run(d.run())
        pod_stats, vendor_stats = d.stats()
        failures = report(d, pod_stats, vendor_stats, mode)
    except DemoError as e:
        say("demo: cannot run: %s" % e)
        return 2
    except KeyboardInterrupt:
        say("\ndemo: interrupted; stopping what it started")
        return 130
    finally:
        ps.stop_all()
    say("")
    if failures:
        say("demo: %d check(s) FAILED: the run contradicts the design "
            "(%.0f s)" % (len(failures), time.monotonic() - t0))
        return 1
    say("demo: every check passed (%.0f s); everything it started is "
        "stopped" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    # SIGTERM stops the demo as Ctrl-C does, so the cleanup runs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
