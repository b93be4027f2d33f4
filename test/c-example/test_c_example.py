"""examples/c/server over real HTTP on loopback.

Each test starts its own server (PORT=0: the server picks a free port and
prints it), talks to it with http.client or raw sockets, and stops it with
SIGTERM, which must end it cleanly (exit 0, "bye"). The server binary comes
from ADMIT_C_EXAMPLE; ADMIT_C_EXAMPLE_WRAP prefixes it (e.g. valgrind with
--error-exitcode, so that a leak or memory error fails the test that
stopped it). The Redis test needs ADMIT_TEST_REDIS_URL (test/run-redis.sh)
and is skipped without it.

Run: ./test/run-redis.sh env ADMIT_C_EXAMPLE=build/release/examples/c/server \
       /usr/bin/python3 -m pytest -q -p no:cacheprovider test/c-example
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SERVER = os.environ.get(
    "ADMIT_C_EXAMPLE", os.path.join(ROOT, "build/release/examples/c/server"))
WRAP = os.environ.get("ADMIT_C_EXAMPLE_WRAP", "").split()
REDIS_URL = os.environ.get("ADMIT_TEST_REDIS_URL")
# Generous: valgrind makes start-up and every request much slower.
WAIT_S = 60.0 if WRAP else 10.0


class Server:
    """One server process, configured through its environment."""

    def __init__(self, **settings):
        env = dict(os.environ, HOST="127.0.0.1", PORT="0")
        env.pop("ADMIT_REDIS_URL", None)
        env.update({k: str(v) for k, v in settings.items()})
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(WRAP + [SERVER], env=env,
                                     stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.out = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.fail("exited before listening")
            self.out.append(line)
            if line.startswith("listening on http://"):
                self.port = int(line.rsplit(":", 1)[1])
                break
        self.stopped = False

    def fail(self, why):
        self.proc.kill()
        self.proc.wait()
        self.stderr.seek(0)
        pytest.fail("server %s: %s\nstdout: %s\nstderr: %s" % (
            why, self.proc.returncode, "".join(self.out),
            self.stderr.read().decode(errors="replace")))

    def stop(self):
        """SIGTERM; the server must exit 0 after "shutting down", "bye"."""
        if self.stopped:
            return
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.fail("did not stop on SIGTERM")
        self.out.append(rest)
        lines = "".join(self.out).splitlines()
        if self.proc.returncode != 0 or lines[-2:] != ["shutting down",
                                                       "bye"]:
            self.fail("unclean exit")

    def request(self, method, path, body=None, headers=None, conn=None):
        """Returns (status, lowercase headers, body text)."""
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=WAIT_S)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        text = r.read().decode()
        if conn is None:
            c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, text

    def get(self, path, client=None):
        return self.request("GET", path, headers={"X-Client-Id": client}
                            if client else None)

    def metrics(self):
        """Returns {"name{labels}": value} from GET /metrics."""
        status, headers, text = self.get("/metrics")
        assert status == 200
        assert headers["content-type"] == "text/plain; version=0.0.4"
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def wait_metrics(self, **want):
        """Polls /metrics until every given gauge/counter has its value
        (keys use __ for the label part: see metric())."""
        deadline = time.monotonic() + WAIT_S
        while True:
            m = self.metrics()
            if all(m.get(metric(k)) == v for k, v in want.items()):
                return m
            if time.monotonic() > deadline:
                pytest.fail("metrics never reached %r: %r" % (want, m))
            time.sleep(0.02)

    def raw(self, data, shut=False):
        """Sends raw bytes on a new connection; returns all bytes read
        until the server closes it."""
        with socket.create_connection(("127.0.0.1", self.port),
                                      timeout=WAIT_S) as s:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)


GUARD = '{guard="vendor"}'
ADM = '{controller="http"}'


def metric(short):
    """Spells the metrics wait_metrics() polls: guard_in_flight ->
    admit_guard_in_flight{guard="vendor"}, admission_waiting -> ...{http}."""
    if short.startswith("guard_"):
        return "admit_" + short + GUARD
    return "admit_" + short + ADM


@pytest.fixture
def start():
    servers = []

    def _start(**settings):
        s = Server(**settings)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


def parallel(n, fn):
    """Runs fn(i) for i in range(n) on threads released together; returns
    the results in order."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# --- the tests ---------------------------------------------------------------


def test_health_ready_and_routing(start):
    s = start()
    assert s.get("/health") == (200, s.get("/health")[1], "ok\n")
    status, headers, body = s.get("/ready")
    assert status == 200
    assert headers["content-type"] == "application/json"
    ready = json.loads(body)
    assert ready["status"] == "ready" and ready["ready"] is True
    assert s.get("/nope")[0] == 404
    status, headers, _ = s.request("PUT", "/hello")
    assert status == 405 and headers["allow"] == "GET, POST"
    # Without X-Client-Id the client is its address.
    status, _, body = s.get("/hello")
    assert status == 200
    assert json.loads(body) == {"client": "127.0.0.1", "hello": "world",
                                "body_bytes": 0}


def test_client_limit_answers_429_with_exact_headers(start):
    s = start(CLIENT_RATE="5/minute")
    for i in range(5):
        status, h, _ = s.get("/hello", "alice")
        assert status == 200
        assert h["ratelimit-policy"] == '"client";q=5;w=60'
        # t: seconds until the bucket is full again, 12 s per unit used.
        assert h["ratelimit"] == '"client";r=%d;t=%d' % (4 - i, 12 * (i + 1))
        assert "retry-after" not in h
    status, h, body = s.get("/hello", "alice")
    assert (status, body) == (429, "rate limited\n")
    # One unit per 12 s: the next fits 12 s after the first (less the
    # milliseconds this test took), rounded up to whole seconds.
    assert h["retry-after"] == "12"
    assert h["ratelimit"] == '"client";r=0;t=60'
    # A denial consumed nothing; another client is not affected.
    assert s.get("/hello", "alice")[1]["retry-after"] == "12"
    assert s.get("/hello", "bob")[0] == 200
    m = s.metrics()
    assert m["example_client_limited_total"] == 2
    assert m["example_client_keys"] == 2
    assert m[metric("admission_admitted_total")] == 6


def test_admission_full_answers_503(start):
    s = start(MAX_IN_FLIGHT=2, BACKLOG=2, VENDOR_LATENCY_MS=800)
    conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=WAIT_S)
             for _ in range(6)]
    for c in conns:
        c.connect()
    results = parallel(6, lambda i: s.request(
        "GET", "/vendor", headers={"X-Client-Id": "c%d" % i}, conn=conns[i]))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 200, 200, 503, 503]
    for status, headers, body in results:
        if status == 503:
            assert body == "overloaded: admission full\n"
            assert headers["retry-after"] == "1"
        else:
            assert json.loads(body)["vendor"] == "ok"
    m = s.metrics()
    assert m[metric("admission_rejected_total")] == 2
    assert m[metric("admission_admitted_total")] == 4
    assert m[metric("admission_completed_total")] == 4
    assert m[metric("guard_admitted_total")] == 4
    # The refused clients got their unit back (it was never used): only
    # the four served clients still have a state.
    assert m["example_client_keys"] == 4


def test_guarded_call_and_its_metrics(start):
    s = start(VENDOR_LATENCY_MS=50)
    status, headers, body = s.get("/vendor", "alice")
    assert status == 200
    assert headers["content-type"] == "application/json"
    reply = json.loads(body)
    assert reply["client"] == "alice" and reply["vendor"] == "ok"
    m = s.metrics()
    assert m[metric("guard_attempts_total")] == 1
    assert m[metric("guard_admitted_total")] == 1
    assert m['admit_guard_calls_total{guard="vendor",outcome="success"}'] == 1
    assert m[metric("guard_call_seconds_count")] == 1
    assert m['admit_guard_call_seconds_bucket{guard="vendor",le="+Inf"}'] == 1
    assert m[metric("guard_in_flight")] == 0
    assert m[metric("guard_capacity")] == 8
    assert m["admit_ready"] == 1


def test_semaphore_waiters_are_woken(start):
    # One call at a time: the others park (PENDING) and are woken by the
    # guard's notify through a uv_async_t; none reaches its queue timeout.
    s = start(VENDOR_CONCURRENCY=1, VENDOR_LATENCY_MS=300,
              QUEUE_TIMEOUT_MS=5000)
    results = parallel(3, lambda i: s.get("/vendor", "c%d" % i))
    assert [r[0] for r in results] == [200, 200, 200]
    waits = sorted(json.loads(r[2])["guard_wait_ms"] for r in results)
    assert waits[1] > 0 and waits[2] > 0
    m = s.metrics()
    assert m[metric("guard_queue_timeouts_total")] == 0
    assert m[metric("guard_queue_wait_seconds_count")] == 3
    assert m['admit_guard_calls_total{guard="vendor",outcome="success"}'] == 3


def test_guard_refusal_and_call_timeout(start):
    s = start(VENDOR_RATE="1/s", QUEUE_TIMEOUT_MS=100, VENDOR_LATENCY_MS=300,
              CALL_TIMEOUT_MS=100)
    # The simulated call outlasts its 100 ms budget: 504.
    status, _, body = s.get("/vendor", "a")
    assert (status, body) == (504, "vendor call timed out\n")
    # The local limiter's next unit is ~1 s away, more than the 100 ms
    # queue timeout: refused at once, nothing held.
    status, headers, body = s.get("/vendor", "b")
    assert status == 503
    assert body == ("vendor busy: the wait would not fit in the timeout "
                    "(stage local)\n")
    assert headers["retry-after"] == "1"
    m = s.metrics()
    assert m['admit_guard_calls_total{guard="vendor",outcome="timeout"}'] == 1
    assert m['admit_guard_rejected_total{guard="vendor",stage="local"}'] == 1
    assert m[metric("admission_errors_total")] == 1  # the 504


def test_http_parsing(start):
    s = start()
    status, _, body = s.request("POST", "/hello", body=b"abc",
                                headers={"X-Client-Id": "p"})
    assert status == 200 and json.loads(body)["body_bytes"] == 3
    # Keep-alive: two requests on one connection.
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=WAIT_S)
    assert s.request("GET", "/hello", conn=c)[0] == 200
    sock = c.sock
    assert s.request("GET", "/hello", conn=c)[0] == 200
    assert c.sock is sock
    c.close()
    # Pipelined requests, and a body that arrives late.
    two = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    out = s.raw(two)
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2
    first, second = out.split(b"ok\n")[:2]
    assert b"Connection: keep-alive\r\n" in first
    assert b"Connection: close\r\n" in second
    with socket.create_connection(("127.0.0.1", s.port)) as sk:
        sk.sendall(b"POST /hello HTTP/1.1\r\nContent-Length: 5\r\n"
                   b"Connection: close\r\n\r\nab")
        time.sleep(0.1)
        sk.sendall(b"cde")
        reply = sk.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"body_bytes":5' in reply
    # HTTP/1.0 closes by default.
    assert b"Connection: close" in s.raw(b"GET /health HTTP/1.0\r\n\r\n")
    # Errors close the connection.
    cases = [
        (b"BAD\r\n\r\n", b"400 Bad Request"),
        (b"GET /hello HTTP/2.0\r\n\r\n", b"400 Bad Request"),
        (b"GET nothing HTTP/1.1\r\n\r\n", b"400 Bad Request"),
        (b"POST /hello HTTP/1.1\r\nContent-Length: x\r\n\r\n",
         b"400 Bad Request"),
        (b"POST /hello HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
         b"400 Bad Request"),
        (b"GET /hello HTTP/1.1\r\nX-Client-Id: a b\r\n\r\n",
         b"400 Bad Request"),
        (b"GET /hello HTTP/1.1\r\nX-Client-Id: " + b"x" * 64 + b"\r\n\r\n",
         b"400 Bad Request"),
        (b"POST /hello HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
         b"501 Not Implemented"),
        (b"POST /hello HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
         b"413 Content Too Large"),
        # Exactly the server's 16 KiB buffer, with no end of headers (more
        # would be unread at close, and the kernel would reset).
        (b"GET /hello HTTP/1.1\r\nX-Pad: " + b"x" * (16384 - 28),
         b"431 Request Header Fields Too Large"),
    ]
    for request, want in cases:
        out = s.raw(request)
        assert out.startswith(b"HTTP/1.1 " + want + b"\r\n"), (request, out)
        assert b"Connection: close\r\n" in out
    # A client that goes away mid-request is simply dropped.
    assert s.raw(b"GET /hel", shut=True) == b""
    assert s.get("/health")[0] == 200


def test_disconnects_give_everything_back(start):
    # A is in the call, B waits for the semaphore, C in the admission
    # backlog; each client goes away and what it held is given back.
    s = start(MAX_IN_FLIGHT=2, BACKLOG=2, VENDOR_CONCURRENCY=1,
              VENDOR_LATENCY_MS=10000)
    socks = []
    for name in "ABC":
        sk = socket.create_connection(("127.0.0.1", s.port))
        sk.sendall(b"GET /vendor HTTP/1.1\r\nX-Client-Id: %s\r\n\r\n"
                   % name.encode())
        socks.append(sk)
        s.wait_metrics(**{
            "A": {"guard_in_flight": 1},
            "B": {"guard_waiting": 1},
            "C": {"admission_waiting": 1}}[name])
    socks[2].close()
    s.wait_metrics(admission_cancelled_total=1, admission_waiting=0)
    socks[1].close()
    s.wait_metrics(guard_cancelled_total=1, guard_waiting=0)
    socks[0].close()
    m = s.wait_metrics(guard_cancelled_total=2, guard_in_flight=0,
                       admission_in_flight=0)
    assert m['admit_guard_calls_total{guard="vendor",outcome="success"}'] == 0
    # The semaphore is free again.
    assert s.get("/health")[0] == 200


def test_sigterm_finishes_requests_in_flight(start):
    s = start(VENDOR_LATENCY_MS=500)
    idle = socket.create_connection(("127.0.0.1", s.port))
    result = []
    t = threading.Thread(target=lambda: result.append(
        s.get("/vendor", "late")))
    t.start()
    s.wait_metrics(guard_in_flight=1)
    s.proc.send_signal(signal.SIGTERM)
    t.join()
    status, headers, body = result[0]
    assert status == 200 and headers["connection"] == "close"
    assert json.loads(body)["vendor"] == "ok"
    assert idle.recv(1) == b""  # idle connections are closed
    idle.close()
    s.stopped = True
    try:
        out, _ = s.proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        s.fail("did not stop")
    if s.proc.returncode != 0 or not out.endswith("shutting down\nbye\n"):
        s.fail("unclean exit after draining: %r" % out)


def test_second_signal_closes_everything(start):
    s = start(VENDOR_LATENCY_MS=60000)
    sk = socket.create_connection(("127.0.0.1", s.port), timeout=WAIT_S)
    sk.sendall(b"GET /vendor HTTP/1.1\r\n\r\n")
    s.wait_metrics(guard_in_flight=1)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.stdout.readline() == "shutting down\n"
    s.proc.send_signal(signal.SIGTERM)  # do not wait for the call
    s.stopped = True
    try:
        out, _ = s.proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        s.fail("did not stop on the second signal")
    if s.proc.returncode != 0 or out != "bye\n":
        s.fail("unclean exit: %r" % out)
    assert sk.recv(1) == b""  # closed without an answer
    sk.close()


@pytest.mark.skipif(not REDIS_URL, reason="needs ADMIT_TEST_REDIS_URL "
                    "(run under test/run-redis.sh with redis-server)")
def test_redis_global_limit_is_shared(start):
    # Two servers ("pods") share the vendor's quota through Redis.
    settings = dict(ADMIT_REDIS_URL=REDIS_URL, VENDOR_GLOBAL_RATE="2/minute",
                    VENDOR_LATENCY_MS=10, QUEUE_TIMEOUT_MS=500)
    a, b = start(**settings), start(**settings)
    assert "vendor global limit 2/minute through Redis\n" in a.out
    assert a.get("/vendor", "x")[0] == 200
    assert b.get("/vendor", "x")[0] == 200
    for s in (a, b):
        status, headers, body = s.get("/vendor", "y")
        assert status == 503
        assert body.endswith("(stage global)\n")
        assert headers["retry-after"] == "30"  # 2/minute: 30 s apart
    for s in (a, b):
        m = s.metrics()
        assert m['admit_guard_rejected_total{guard="vendor",stage="global"}'] \
            == 1
        assert m['admit_guard_calls_total{guard="vendor",outcome="success"}'] \
            == 1
        assert m[metric("guard_errors_total")] == 0
        assert [v for k, v in m.items()
                if k.startswith("admit_redis_connected{")] == [1]
