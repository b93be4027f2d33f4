"""Tests of examples/fastapi/fake_vendor.py, the demo's fake LLM vendor.

Two kinds: the quota arithmetic through ``Vendor`` with a fake clock (exact
Retry-After and reset values), and the real server started as a subprocess
on a free loopback port, driven with httpx.

Run: /usr/bin/python3 -m pytest -q test/python/test_fake_vendor.py
"""

import asyncio
import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "examples", "fastapi", "fake_vendor.py")
START_TIMEOUT_S = 20.0


def load_module():
    spec = importlib.util.spec_from_file_location("fake_vendor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fv = load_module()


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def make_vendor(**settings):
    clock = FakeClock()
    settings.setdefault("latency_ms", 0)
    return fv.Vendor(fv.Settings(**settings), clock=clock), clock


# --- quota arithmetic with a fake clock ------------------------------------


def test_quota_admits_exactly_quota_per_window():
    v, clock = make_vendor(quota=3, window_s=60)
    statuses = []
    for _ in range(5):
        status, headers, _ = v.admit()
        statuses.append(status)
        if status == 0:
            assert v.finish() == 200
    assert statuses == [0, 0, 0, 429, 429]
    s = v.stats()
    assert (s["received"], s["admitted"], s["served"], s["rejected_429"]) \
        == (5, 3, 3, 2)
    assert s["max_received_in_window"] == 5
    assert s["max_admitted_in_window"] == 3
    assert s["over_quota"] is True
    clock.now += 60.0  # window 1 starts: the quota is free again
    status, headers, _ = v.admit()
    assert status == 0
    assert dict(headers)["x-ratelimit-remaining-requests"] == "2"
    v.finish()
    assert [(w["index"], w["received"], w["admitted"], w["rejected_429"])
            for w in v.stats()["windows"]] == [(0, 5, 3, 2), (1, 1, 1, 0)]


def test_retry_after_is_exact_seconds_to_window_end_rounded_up():
    v, clock = make_vendor(quota=1, window_s=60)
    clock.now += 12.3
    assert v.admit()[0] == 0
    v.finish()
    status, headers, reason = v.admit()
    h = dict(headers)
    assert (status, reason) == (429, "rate_limit_exceeded")
    assert h["retry-after"] == "48"          # ceil(47.7)
    assert h["retry-after-ms"] == "47700"
    assert h["x-ratelimit-reset-requests"] == "47.7s"
    assert h["x-ratelimit-limit-requests"] == "1"
    assert h["x-ratelimit-remaining-requests"] == "0"
    clock.now += 47.0                        # 0.7 s left
    h = dict(v.admit()[1])
    assert h["retry-after"] == "1"           # never 0
    assert h["retry-after-ms"] == "700"
    assert h["x-ratelimit-reset-requests"] == "700ms"
    clock.now += 0.7                         # exactly the window edge
    assert v.admit()[0] == 0


def test_retry_after_with_long_window_and_minutes_format():
    v, clock = make_vendor(quota=0, window_s=3600)
    clock.now += 0.5
    h = dict(v.admit()[1])
    assert h["retry-after"] == "3600"
    assert h["x-ratelimit-reset-requests"] == "59m59.5s"
    assert fv.format_duration(60.0) == "1m0s"
    assert fv.format_duration(1.0) == "1s"
    assert fv.format_duration(0.02) == "20ms"


def test_refused_calls_do_not_use_quota_and_errors_do():
    v, _ = make_vendor(quota=3, window_s=10, max_concurrency=1,
                       error_rate=1.0, error_status=502)
    assert v.admit()[0] == 0                 # in flight: 1
    assert v.admit()[0] == 503               # concurrency cap, no quota used
    assert v.finish() == 502                 # injected failure, quota used
    assert v.admit()[0] == 0
    assert v.finish() == 502
    assert v.admit()[0] == 0
    assert v.finish() == 502
    assert v.admit()[0] == 429               # 3 admitted: quota spent
    s = v.stats()
    assert (s["received"], s["admitted"], s["errors_5xx"],
            s["rejected_concurrency"], s["rejected_429"], s["served"]) \
        == (5, 3, 3, 1, 1, 0)


def test_sliding_maximum_sees_bursts_across_a_window_edge():
    v, clock = make_vendor(quota=3, window_s=10)
    clock.now += 9.0
    for _ in range(3):
        assert v.admit()[0] == 0
        v.finish()
    clock.now += 1.5                         # window 1, 1.5 s later
    for _ in range(3):
        assert v.admit()[0] == 0
        v.finish()
    s = v.stats()
    assert s["max_received_in_window"] == 3
    assert s["over_quota"] is False
    assert s["max_received_sliding"] == 6
    clock.now += 10.0                        # the old arrivals slide out
    assert v.admit()[0] == 0
    v.finish()
    assert v.stats()["max_received_sliding"] == 6


def test_settings_are_validated():
    for bad in ({"quota": -1}, {"window_s": 0}, {"error_rate": 1.5},
                {"error_status": 404}, {"max_concurrency": -2},
                {"latency_ms": -1}):
        with pytest.raises(ValueError):
            fv.Settings(**bad)
    s = fv.Settings()
    for bad in ({"nope": 1}, {"quota": "5"}, {"quota": 1.5},
                {"quota": True}, [1]):
        with pytest.raises(ValueError):
            s.updated(bad)
    assert s.updated({"quota": 7}).quota == 7


def test_environment_gives_defaults_and_command_line_wins():
    args, s = fv.parse_args([], environ={"VENDOR_QUOTA": "7",
                                         "VENDOR_WINDOW_S": "2.5",
                                         "VENDOR_PORT": "1234"})
    assert (s.quota, s.window_s, args.port) == (7, 2.5, 1234)
    _, s = fv.parse_args(["--quota", "9"], environ={"VENDOR_QUOTA": "7"})
    assert s.quota == 9


# --- the real server -------------------------------------------------------


class Server:
    """fake_vendor.py as a subprocess; reads its stdout on a thread."""

    def __init__(self, *args, env=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, SCRIPT] + list(args), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=full_env)
        self.lines = queue.Queue()
        self.stdout = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = None

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_listening(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.stdout.append(line)
            if line.startswith("listening on http://127.0.0.1:"):
                self.url = line[len("listening on "):]
                return self.url
        self.kill()
        raise AssertionError("fake vendor did not start: stdout %r, "
                             "stderr %r" % (self.stdout,
                                            self.proc.stderr.read()))

    def rest_of_stdout(self):
        while True:
            line = self.lines.get(timeout=START_TIMEOUT_S)
            if line is None:
                return self.stdout
            self.stdout.append(line)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("fake vendor ignored SIGTERM")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server():
    srv = Server("--quiet")
    srv.wait_listening()
    yield srv
    srv.kill()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, trust_env=False,
                      timeout=10.0) as c:
        yield c


def reset(client, **settings):
    """Reset the server with the defaults (latency 0) plus ``settings``."""
    values = dict(fv.Settings(latency_ms=0).as_dict(), **settings)
    r = client.post("/reset", json=values)
    assert r.status_code == 200, r.text
    return r.json()["config"]


def chat(client, text="hello"):
    return client.post("/v1/chat", json={
        "messages": [{"role": "user", "content": text}]})


def test_server_answers_a_call_like_a_chat_api(client):
    reset(client, quota=5, window_s=60)
    r = chat(client, "ping")
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": "echo: ping"}
    assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert r.headers["x-ratelimit-remaining-requests"] == "4"
    assert "retry-after" not in r.headers
    for path in ("/v1/chat/completions", "/v1/complete"):
        assert client.post(path, json={"prompt": "x"}).status_code == 200
    assert client.get("/health").json() == {"status": "ok"}


def test_server_enforces_quota_with_exact_retry_after(client):
    reset(client, quota=5, window_s=60)
    statuses, remaining = [], []
    for _ in range(8):
        r = chat(client)
        statuses.append(r.status_code)
        remaining.append(r.headers["x-ratelimit-remaining-requests"])
        if r.status_code == 429:
            # The window started at the reset, well under 1 s ago.
            assert r.headers["retry-after"] == "60"
            ms = int(r.headers["retry-after-ms"])
            assert 59000 < ms <= 60000
            assert r.json()["error"]["type"] == "rate_limit_exceeded"
    assert statuses == [200] * 5 + [429] * 3
    assert remaining == ["4", "3", "2", "1", "0", "0", "0", "0"]
    s = client.get("/stats").json()
    assert (s["received"], s["admitted"], s["served"], s["rejected_429"],
            s["errors_5xx"], s["rejected_concurrency"]) == (8, 5, 5, 3, 0, 0)
    assert s["max_received_in_window"] == 8
    assert s["max_admitted_in_window"] == 5
    assert s["over_quota"] is True
    assert s["windows"] == [{"index": 0, "start_s": 0.0, "received": 8,
                             "admitted": 5, "served": 5, "rejected_429": 3,
                             "rejected_concurrency": 0, "errors_5xx": 0}]


def test_server_retry_after_counts_down_and_window_frees_quota(client):
    for _ in range(3):  # a very slow machine may cross the edge: try again
        reset(client, quota=2, window_s=2)
        assert chat(client).status_code == 200
        assert chat(client).status_code == 200
        while client.get("/stats").json()["uptime_s"] < 1.1:
            time.sleep(0.05)
        r = chat(client)
        after = client.get("/stats").json()
        if after["window_index"] != 0:
            continue
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        time.sleep(int(r.headers["retry-after-ms"]) / 1000.0 + 0.05)
        r = chat(client)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining-requests"] == "1"
        s = client.get("/stats").json()
        assert [(w["index"], w["received"], w["admitted"])
                for w in s["windows"]] == [(0, 3, 2), (1, 1, 1)]
        assert s["max_received_in_window"] == 3
        assert s["max_admitted_in_window"] == 2
        return
    pytest.fail("could not stay inside one 2 s window three times")


def test_server_never_admits_more_than_quota_under_concurrency(server):
    async def burst():
        async with httpx.AsyncClient(base_url=server.url, trust_env=False,
                                     timeout=10.0) as c:
            await c.post("/reset", json={"quota": 20, "window_s": 60,
                                         "latency_ms": 50})
            rs = await asyncio.gather(*[
                c.post("/v1/chat", json={"prompt": str(i)})
                for i in range(60)])
            return [r.status_code for r in rs], (await c.get("/stats")).json()

    statuses, s = asyncio.run(burst())
    assert statuses.count(200) == 20
    assert statuses.count(429) == 40
    assert (s["received"], s["served"], s["rejected_429"]) == (60, 20, 40)
    assert s["max_admitted_in_window"] == 20
    assert s["in_flight"] == 0
    assert s["max_concurrency_seen"] >= 2


def test_server_concurrency_cap_answers_503(server):
    async def burst():
        async with httpx.AsyncClient(base_url=server.url, trust_env=False,
                                     timeout=10.0) as c:
            await c.post("/reset", json={"quota": 100, "window_s": 60,
                                         "latency_ms": 1500,
                                         "max_concurrency": 3})
            rs = await asyncio.gather(*[
                c.post("/v1/chat", json={}) for _ in range(6)])
            return rs, (await c.get("/stats")).json()

    rs, s = asyncio.run(burst())
    statuses = sorted(r.status_code for r in rs)
    assert statuses == [200, 200, 200, 503, 503, 503]
    for r in rs:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "overloaded"
    assert s["max_concurrency_seen"] == 3
    assert (s["received"], s["admitted"], s["rejected_concurrency"]) \
        == (6, 3, 3)


def test_server_error_injection_is_counted_and_reproducible(server, client):
    async def calls(n):
        # One at a time, so that the seeded sequence is reproducible. Async:
        # httpx 0.23's sync client lacks TCP_NODELAY (40 ms per POST).
        async with httpx.AsyncClient(base_url=server.url, trust_env=False,
                                     timeout=10.0) as c:
            return [(await c.post("/v1/chat", json={})).status_code
                    for _ in range(n)]

    def run(seed):
        reset(client, quota=1000, window_s=60, error_rate=0.3,
              error_status=503, seed=seed)
        statuses = asyncio.run(calls(200))
        return statuses, client.get("/stats").json()

    first, s = run(42)
    failures = first.count(503)
    assert set(first) == {200, 503}
    assert 30 <= failures <= 90              # binomial(200, 0.3): 60 +- 6.5
    assert s["errors_5xx"] == failures
    assert s["served"] == 200 - failures
    assert s["admitted"] == 200              # failures use quota too
    again, _ = run(42)
    assert again == first                    # same seed, same sequence

    reset(client, quota=3, window_s=60, error_rate=1.0)
    r = chat(client)
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    assert r.headers["x-ratelimit-remaining-requests"] == "2"


def test_server_reset_validates_and_routes_are_strict(client):
    assert client.post("/reset", content=b"{not json").status_code == 400
    r = client.post("/reset", json={"quota": -1})
    assert r.status_code == 400 and "quota" in r.json()["error"]
    assert client.post("/reset", json={"bogus": 1}).status_code == 400
    assert client.get("/v1/chat").status_code == 405
    assert client.post("/stats").status_code == 405
    assert client.get("/nope").status_code == 404
    # A refused reset changes nothing; an empty body resets counters only.
    config = reset(client, quota=4, window_s=30)
    chat(client)
    r = client.post("/reset")
    assert r.status_code == 200 and r.json()["config"] == config
    assert client.get("/stats").json()["received"] == 0


def test_server_binds_loopback_only(server):
    port = int(server.url.rsplit(":", 1)[1])
    with open("/proc/net/tcp") as f:
        listening = [line.split()[1] for line in f.readlines()[1:]
                     if line.split()[3] == "0A"]    # state LISTEN
    assert "0100007F:%04X" % port in listening
    assert "00000000:%04X" % port not in listening


def test_fixed_port_environment_and_clean_shutdown():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = Server("--port", str(port), env={"VENDOR_QUOTA": "2",
                                           "VENDOR_LATENCY_MS": "0"})
    try:
        assert srv.wait_listening() == "http://127.0.0.1:%d" % port
        with httpx.Client(base_url=srv.url, trust_env=False) as c:
            assert [chat(c).status_code for _ in range(3)] == [200, 200, 429]
            assert c.get("/stats").json()["config"]["quota"] == 2
        # A second server on the same port fails clearly.
        other = subprocess.run([sys.executable, SCRIPT, "--port", str(port)],
                               capture_output=True, text=True, timeout=30)
        assert other.returncode == 1
        assert "cannot bind" in other.stderr
        assert srv.stop() == 0
        out = srv.rest_of_stdout()
        stopped = [line for line in out if line.startswith("stopped: ")]
        assert len(stopped) == 1
        final = json.loads(stopped[0][len("stopped: "):])
        assert (final["received"], final["served"],
                final["rejected_429"]) == (3, 2, 1)
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/health", trust_env=False)
    finally:
        srv.kill()


def test_bad_configuration_exits_with_usage_error():
    for args, env in ((["--error-rate", "2"], {}), ([], {"VENDOR_QUOTA": "x"}),
                      (["--window-s", "0"], {}), (["--port", "70000"], {})):
        full_env = dict(os.environ)
        full_env.update(env)
        r = subprocess.run([sys.executable, SCRIPT] + args, env=full_env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (args, env, r.stderr)
        assert "error:" in r.stderr
        assert "listening" not in r.stdout
