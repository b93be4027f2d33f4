#!/usr/bin/python3
"""A local fake LLM vendor that enforces its own quota and counts its calls.

Real LLM vendors enforce a quota per API key: N requests per window,
answered with ``429 Too Many Requests`` and a ``Retry-After`` header beyond
it. This server plays such a vendor on the loopback interface, so the admit
demo and tests can prove what the seed's vendor pipeline promises: *the
vendor never receives more than its quota*.

Endpoints:

- ``POST /v1/chat`` (aliases ``/v1/chat/completions`` and ``/v1/complete``):
  one vendor call. Answers 200 with a small OpenAI-like JSON body after the
  configured latency; 429 with ``Retry-After`` when this window's quota is
  used up; 503 with ``Retry-After: 1`` when the concurrency cap is full; the
  configured 5xx status with probability ``error_rate``.
- ``GET /stats``: what the vendor received, as JSON (see ``Vendor.stats``).
- ``POST /reset``: zero every counter and start a new window at once. An
  optional JSON object body changes settings (the names of ``/stats``'s
  ``config``), e.g. ``{"quota": 5, "window_s": 2}``.
- ``GET /health``: ``{"status": "ok"}``.

The quota is a fixed window anchored at start (or at the last ``/reset``):
window ``i`` covers ``[i * window_s, (i + 1) * window_s)`` seconds after the
anchor, and at most ``quota`` calls are *admitted* in each. A call is
admitted when it passes the quota check and the concurrency cap; it then
ends served (200) or as an injected error (5xx), and counts against the
quota either way, as with real vendors. Refused calls (429, 503) do not.

Every call answer carries OpenAI's headers ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests`` and ``x-ratelimit-reset-requests`` (a
duration such as ``59.734s`` or ``1m0s``); a 429 also carries
``Retry-After`` (whole seconds until the window ends, rounded up, at least
1) and ``retry-after-ms``.

Settings come from the command line or the environment (the command line
wins); see ``--help``. The server binds 127.0.0.1 only. With ``--port 0``
(the default) it picks a free port. Once the socket listens it prints
``listening on http://127.0.0.1:PORT`` on stdout (flushed), so a driver can
parse it. SIGINT or SIGTERM stop it gracefully with exit status 0, after it
prints ``stopped: {...}``: the final stats as one JSON line.

Only Debian packages are used: the standard library and uvicorn (h11).
"""

import argparse
import asyncio
import collections
import json
import math
import os
import random
import socket
import sys
import time

HOST = "127.0.0.1"
CALL_PATHS = ("/v1/chat", "/v1/chat/completions", "/v1/complete")
# Per-window counters kept for /stats (the totals cover every window).
MAX_WINDOWS_KEPT = 1000
MAX_BODY_BYTES = 1 << 20


class Settings:
    """The vendor's behaviour; ``POST /reset`` can change every field."""

    # name: (type, environment variable, default, help)
    FIELDS = {
        "quota": (int, "VENDOR_QUOTA", 60,
                  "calls admitted per window (0 refuses all)"),
        "window_s": (float, "VENDOR_WINDOW_S", 60.0,
                     "quota window, seconds"),
        "latency_ms": (float, "VENDOR_LATENCY_MS", 20.0,
                       "fixed latency of a call, ms"),
        "jitter_ms": (float, "VENDOR_JITTER_MS", 0.0,
                      "extra latency, uniform in [0, jitter], ms"),
        "error_rate": (float, "VENDOR_ERROR_RATE", 0.0,
                       "probability that an admitted call fails"),
        "error_status": (int, "VENDOR_ERROR_STATUS", 500,
                         "status of an injected failure (5xx)"),
        "max_concurrency": (int, "VENDOR_MAX_CONCURRENCY", 0,
                            "calls served at once; beyond it 503 (0: no cap)"),
        "seed": (int, "VENDOR_SEED", 0,
                 "random seed of jitter and failures (0: unseeded)"),
    }

    def __init__(self, **values):
        for name, spec in self.FIELDS.items():
            setattr(self, name, spec[0](values.pop(name, spec[2])))
        if values:
            raise ValueError("unknown setting(s): "
                             + ", ".join(sorted(values)))
        self.validate()

    def validate(self):
        """Raise ValueError naming the first bad field."""
        if self.quota < 0:
            raise ValueError("quota must be >= 0")
        if not 0 < self.window_s < math.inf:
            raise ValueError("window_s must be a finite number > 0")
        if not (self.latency_ms >= 0 and self.jitter_ms >= 0):
            raise ValueError("latency_ms and jitter_ms must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be in [0, 1]")
        if not 500 <= self.error_status <= 599:
            raise ValueError("error_status must be a 5xx status")
        if self.max_concurrency < 0:
            raise ValueError("max_concurrency must be >= 0")

    def updated(self, changes):
        """Return new Settings with ``changes`` (a dict) applied."""
        if not isinstance(changes, dict):
            raise ValueError("the reset body must be a JSON object")
        values = self.as_dict()
        for name, value in changes.items():
            if name not in self.FIELDS:
                raise ValueError("unknown setting: %s" % name)
            kind = self.FIELDS[name][0]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("%s must be a number" % name)
            if kind is int and value != int(value):
                raise ValueError("%s must be an integer" % name)
            values[name] = kind(value)
        return Settings(**values)

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


def format_duration(seconds):
    """Format a duration as OpenAI's reset headers do: 20ms, 1.5s, 1m0s."""
    if seconds < 1.0:
        return "%dms" % max(0, -(-round(seconds * 1e6) // 1000))
    minutes, rest = divmod(seconds, 60.0)
    text = ("%.3f" % rest).rstrip("0").rstrip(".") + "s"
    return "%dm%s" % (minutes, text) if minutes else text


class Window:
    """The counters of one quota window."""

    __slots__ = ("received", "admitted", "served", "rejected_429",
                 "rejected_concurrency", "errors_5xx")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class Vendor:
    """The quota, the counters and the call decisions, without HTTP."""

    def __init__(self, settings, clock=time.monotonic):
        self.clock = clock
        self.reset(settings)

    def reset(self, settings=None):
        """Zero every counter and start window 0 now."""
        if settings is not None:
            self.settings = settings
        s = self.settings
        self.rng = random.Random(s.seed if s.seed else None)
        self.anchor = self.clock()
        self.received = 0
        self.served = 0
        self.rejected_429 = 0
        self.rejected_concurrency = 0
        self.errors_5xx = 0
        self.in_flight = 0
        self.max_concurrency_seen = 0
        self.max_received_in_window = 0
        self.max_admitted_in_window = 0
        self.max_received_sliding = 0
        self.windows = collections.OrderedDict()
        self.recent = collections.deque()  # arrival times within window_s

    def _window(self, now):
        index = int((now - self.anchor) // self.settings.window_s)
        w = self.windows.get(index)
        if w is None:
            w = self.windows[index] = Window()
            while len(self.windows) > MAX_WINDOWS_KEPT:
                self.windows.popitem(last=False)
        return index, w

    def _quota_headers(self, index, w, now):
        s = self.settings
        reset_s = self.anchor + (index + 1) * s.window_s - now
        remaining = max(0, s.quota - w.admitted)
        headers = [
            ("x-ratelimit-limit-requests", str(s.quota)),
            ("x-ratelimit-remaining-requests", str(remaining)),
            ("x-ratelimit-reset-requests", format_duration(reset_s)),
        ]
        return headers, reset_s

    def admit(self):
        """Count one arriving call and decide it.

        Returns (status, headers, reason). Status 0 means admitted, and the
        caller must then call ``finish``; otherwise it is the refusal status
        to answer (429 over quota, 503 over the concurrency cap).
        """
        s = self.settings
        now = self.clock()
        index, w = self._window(now)
        self.received += 1
        w.received += 1
        self.max_received_in_window = max(self.max_received_in_window,
                                          w.received)
        self.recent.append(now)
        while self.recent[0] <= now - s.window_s:
            self.recent.popleft()
        self.max_received_sliding = max(self.max_received_sliding,
                                        len(self.recent))
        if w.admitted >= s.quota:
            self.rejected_429 += 1
            w.rejected_429 += 1
            headers, reset_s = self._quota_headers(index, w, now)
            # Rounded to the microsecond first: 47.7 s is 47700 ms, not 47701.
            reset_us = round(reset_s * 1e6)
            headers.append(("retry-after", str(max(1, -(-reset_us // 10**6)))))
            headers.append(("retry-after-ms",
                            str(max(1, -(-reset_us // 1000)))))
            return 429, headers, "rate_limit_exceeded"
        if s.max_concurrency and self.in_flight >= s.max_concurrency:
            self.rejected_concurrency += 1
            w.rejected_concurrency += 1
            headers, _ = self._quota_headers(index, w, now)
            headers.append(("retry-after", "1"))
            return 503, headers, "overloaded"
        w.admitted += 1
        self.max_admitted_in_window = max(self.max_admitted_in_window,
                                          w.admitted)
        self.in_flight += 1
        self.max_concurrency_seen = max(self.max_concurrency_seen,
                                        self.in_flight)
        headers, _ = self._quota_headers(index, w, now)
        return 0, headers, None

    def latency(self):
        """Seconds an admitted call takes: latency plus uniform jitter."""
        s = self.settings
        return (s.latency_ms + self.rng.uniform(0.0, s.jitter_ms)) / 1000.0

    def finish(self):
        """End an admitted call; return its status (200 or the 5xx)."""
        self.in_flight -= 1
        s = self.settings
        _, w = self._window(self.clock())
        if s.error_rate > 0.0 and self.rng.random() < s.error_rate:
            self.errors_5xx += 1
            w.errors_5xx += 1
            return s.error_status
        self.served += 1
        w.served += 1
        return 200

    def stats(self):
        """Everything counted since start or the last reset, as a dict.

        ``max_received_in_window`` is the most calls that arrived in one
        quota window, refused ones included: a client that respects the
        quota keeps it <= quota, and ``over_quota`` says it did not.
        ``max_received_sliding`` is the same over any interval of window_s
        seconds, which is stricter (a client limiting itself with a fixed
        window of its own may reach twice the quota there).
        ``max_admitted_in_window`` never exceeds the quota.
        """
        s = self.settings
        now = self.clock()
        index = int((now - self.anchor) // s.window_s)
        reset_s = self.anchor + (index + 1) * s.window_s - now
        return {
            "config": s.as_dict(),
            "uptime_s": round(now - self.anchor, 6),
            "window_index": index,
            "window_reset_s": round(reset_s, 6),
            "received": self.received,
            "admitted": self.served + self.errors_5xx + self.in_flight,
            "served": self.served,
            "rejected_429": self.rejected_429,
            "rejected_concurrency": self.rejected_concurrency,
            "errors_5xx": self.errors_5xx,
            "in_flight": self.in_flight,
            "max_concurrency_seen": self.max_concurrency_seen,
            "max_received_in_window": self.max_received_in_window,
            "max_admitted_in_window": self.max_admitted_in_window,
            "max_received_sliding": self.max_received_sliding,
            "over_quota": self.max_received_in_window > s.quota,
            "windows": [
                dict({"index": i, "start_s": round(i * s.window_s, 6)},
                     **{name: getattr(w, name) for name in Window.__slots__})
                for i, w in self.windows.items()
            ],
        }


class App:
    """The ASGI application around a Vendor."""

    def __init__(self, vendor):
        self.vendor = vendor
        self.calls = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return  # lifespan is off and websockets are not served
        body, too_big = await self._read_body(receive)
        path, method = scope["path"], scope["method"]
        if too_big:
            return await self._send(send, 413, {"error": "body too large"})
        if path in CALL_PATHS:
            if method != "POST":
                return await self._send(send, 405, {"error": "use POST"})
            return await self._call(send, body)
        if path == "/stats" and method == "GET":
            return await self._send(send, 200, self.vendor.stats())
        if path == "/health" and method == "GET":
            return await self._send(send, 200, {"status": "ok"})
        if path == "/reset" and method == "POST":
            try:
                changes = json.loads(body) if body.strip() else {}
                settings = self.vendor.settings.updated(changes)
            except ValueError as e:
                return await self._send(send, 400, {"error": str(e)})
            self.vendor.reset(settings)
            return await self._send(send, 200, {"reset": True,
                                                "config": settings.as_dict()})
        if path in ("/stats", "/health", "/reset"):
            return await self._send(send, 405, {"error": "method not allowed"})
        return await self._send(send, 404, {"error": "not found"})

    @staticmethod
    async def _read_body(receive):
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= MAX_BODY_BYTES:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), size > MAX_BODY_BYTES

    async def _call(self, send, body):
        v = self.vendor
        status, headers, reason = v.admit()
        if status:
            if status == 429:
                message = "quota of %d requests per %gs exceeded" % (
                    v.settings.quota, v.settings.window_s)
            else:
                message = "too many concurrent requests"
            return await self._send(send, status, {"error": {
                "type": reason, "message": message}}, headers)
        try:
            await asyncio.sleep(v.latency())
        finally:
            status = v.finish()
        if status != 200:
            return await self._send(send, status, {"error": {
                "type": "server_error", "message": "injected failure"}},
                headers)
        self.calls += 1
        return await self._send(send, 200, {
            "id": "fake-%d" % self.calls,
            "object": "chat.completion",
            "model": "fake-vendor",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "echo: " + _prompt(body)}}],
        }, headers)

    @staticmethod
    async def _send(send, status, payload, headers=()):
        body = json.dumps(payload, separators=(",", ":")).encode()
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in headers]
        await send({"type": "http.response.start", "status": status,
                    "headers": raw})
        await send({"type": "http.response.body", "body": body})


def _prompt(body):
    """The last message's content (or "prompt") of a request, if any."""
    try:
        request = json.loads(body) if body else {}
        messages = request.get("messages") or []
        if messages and isinstance(messages[-1], dict):
            return str(messages[-1].get("content", ""))[:200]
        return str(request.get("prompt", ""))[:200]
    except (ValueError, AttributeError):
        return ""


def parse_args(argv=None, environ=None):
    """Parse the command line; environment variables give the defaults."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        description="Local fake LLM vendor with its own quota; binds %s."
        % HOST)
    parser.add_argument("--port", type=int,
                        default=int(env.get("VENDOR_PORT", "0")),
                        help="TCP port, 0 picks a free one (env VENDOR_PORT)")
    for name, (kind, var, default, text) in Settings.FIELDS.items():
        try:
            value = kind(env.get(var, default))
        except ValueError:
            parser.error("%s=%r is not a valid %s"
                         % (var, env[var], kind.__name__))
        parser.add_argument("--" + name.replace("_", "-"), dest=name,
                            type=kind, default=value,
                            help="%s (env %s, default %s)"
                            % (text, var, default))
    parser.add_argument("--quiet", action="store_true",
                        help="print only the listening and stopped lines")
    args = parser.parse_args(argv)
    try:
        settings = Settings(**{n: getattr(args, n) for n in Settings.FIELDS})
    except ValueError as e:
        parser.error(str(e))
    if not 0 <= args.port <= 65535:
        parser.error("port must be in 0..65535")
    return args, settings


def main(argv=None):
    """Run the server until SIGINT or SIGTERM; return the exit status."""
    import uvicorn  # here, so that the module imports without uvicorn

    args, settings = parse_args(argv)
    vendor = Vendor(settings)
    # IPPROTO_TCP, so that asyncio sets TCP_NODELAY on accepted sockets.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, args.port))
    except OSError as e:
        print("fake_vendor: cannot bind %s:%d: %s" % (HOST, args.port, e),
              file=sys.stderr)
        return 1
    sock.listen(1024)
    port = sock.getsockname()[1]
    config = uvicorn.Config(App(vendor), http="h11", ws="none",
                            lifespan="off", log_level="warning",
                            access_log=False, backlog=1024,
                            timeout_keep_alive=5, server_header=False)
    server = uvicorn.Server(config)
    if not args.quiet:
        print("fake_vendor: quota %d per %gs, latency %g+%gms, error rate %g,"
              " max concurrency %d" % (
                  settings.quota, settings.window_s, settings.latency_ms,
                  settings.jitter_ms, settings.error_rate,
                  settings.max_concurrency), flush=True)
    print("listening on http://%s:%d" % (HOST, port), flush=True)
    server.run(sockets=[sock])
    sock.close()
    stats = vendor.stats()
    del stats["windows"]
    print("stopped: " + json.dumps(stats, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
