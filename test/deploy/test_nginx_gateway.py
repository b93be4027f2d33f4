"""Runs deploy/nginx/admit.conf for real and checks what the gateway does.

Debian's nginx is started unprivileged-style (all paths in a temporary
directory, loopback port) with deploy/nginx/admit.conf unchanged except for
addresses: `listen` moves to a free loopback port, upstream `admit_api`
points at the fake vendor (examples/fastapi/fake_vendor.py, so /api/v1/chat
reaches its /v1/chat), upstream `admit_agent` at a WebSocket echo server,
and the static root at deploy/ui. Each test gets a fresh nginx, so the
limit zones start empty.

Run: /usr/bin/python3 -m pytest -q test/deploy/test_nginx_gateway.py
"""

import asyncio
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONF = os.path.join(ROOT, "deploy", "nginx", "admit.conf")
UI = os.path.join(ROOT, "deploy", "ui")
FAKE_VENDOR = os.path.join(ROOT, "examples", "fastapi", "fake_vendor.py")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TIMEOUT_S = 20.0

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK),
    reason="nginx is not installed (make deps installs it)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("process exited: %s"
                                 % proc.stderr.read().decode())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on port %d" % port)


# --- upstreams: the fake vendor and a WebSocket echo server ---------------

@pytest.fixture(scope="module")
def vendor():
    proc = subprocess.Popen([sys.executable, FAKE_VENDOR, "--quiet",
                             "--latency-ms", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout],
                     daemon=True).start()
    try:
        line = lines.get(timeout=TIMEOUT_S)
        m = re.match(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert m, line
        yield int(m.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def echo_app(scope, receive, send):
    """ASGI: /agent echoes WebSocket text frames; HTTP answers 404."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send",
                        "text": "echo: " + (message.get("text") or "")})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404,
                    "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def agent():
    import uvicorn
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(echo_app, ws="websockets", lifespan="off",
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run,
                              kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    wait_port(port)
    yield port
    server.should_exit = True
    thread.join(TIMEOUT_S)
    sock.close()


# --- nginx -----------------------------------------------------------------

def gateway_conf(api_port, agent_port, listen_port):
    with open(CONF) as f:
        text = f.read()
    subs = [
        (r"(?m)^(\s*listen\s+)80(\s)", r"\g<1>127.0.0.1:%d\2" % listen_port),
        (r"(upstream admit_api \{[^}]*?server )api:8000",
         r"\g<1>127.0.0.1:%d" % api_port),
        (r"(upstream admit_agent \{[^}]*?server )api:8000",
         r"\g<1>127.0.0.1:%d" % agent_port),
        (r"root /usr/share/nginx/html;", "root %s;" % UI),
    ]
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl, text, flags=re.S)
        assert n >= 1, "deploy/nginx/admit.conf no longer has %r" % pattern
    return text


@pytest.fixture
def gateway(vendor, agent):
    tmp = tempfile.mkdtemp(prefix="admit-gateway-")
    port = free_port()
    with open(os.path.join(tmp, "admit.conf"), "w") as f:
        f.write(gateway_conf(vendor, agent, port))
    main = [
        "daemon off;",
        "master_process off;",
        # As root nginx would switch to "nobody", who may not read the repo.
        "user root;" if os.geteuid() == 0 else "",
        "pid %s/nginx.pid;" % tmp,
        "error_log %s/error.log warn;" % tmp,
        "events { worker_connections 256; }",
        "http {",
        "  include /etc/nginx/mime.types;",
        "  access_log off;",
    ] + ["  %s_temp_path %s/%s;" % (t, tmp, t) for t in
         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")] + [
        "  include %s/admit.conf;" % tmp, "}", ""]
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write("\n".join(main))
    proc = subprocess.Popen([NGINX, "-p", tmp + "/", "-c",
                             tmp + "/nginx.conf", "-e", tmp + "/error.log"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        with httpx.Client(base_url="http://127.0.0.1:%d" % vendor,
                          trust_env=False) as c:
            c.post("/reset", json={"quota": 1000, "window_s": 60,
                                   "latency_ms": 0})
        yield "http://127.0.0.1:%d" % port
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def client(url, **kw):
    return httpx.AsyncClient(base_url=url, trust_env=False, timeout=10.0,
                             **kw)


def test_static_ui_is_served_at_root(gateway):
    async def go():
        async with client(gateway) as c:
            return await c.get("/"), await c.get("/some/client/route")

    index, fallback = asyncio.run(go())
    assert index.status_code == 200
    assert "admit example" in index.text
    assert index.headers["content-type"].startswith("text/html")
    assert "server" not in index.headers or "/" not in index.headers["server"]
    assert fallback.status_code == 200 and fallback.text == index.text


def test_api_is_proxied_with_prefix_stripped(gateway):
    async def go():
        async with client(gateway) as c:
            r = await c.post("/api/v1/chat", json={"prompt": "hi"})
            return r, (await c.get("/api/stats")).json()

    r, stats = asyncio.run(go())
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert stats["received"] == 1


def test_service_429_passes_through_untouched(gateway, vendor):
    async def go():
        async with client(gateway) as c:
            await c.post("/api/reset", json={"quota": 1, "window_s": 60,
                                             "latency_ms": 0})
            return [await c.post("/api/v1/chat", json={}) for _ in range(2)]

    ok, limited = asyncio.run(go())
    assert ok.status_code == 200
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "60"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"


def test_per_ip_request_rate_answers_429_with_retry_after(gateway):
    # Zone admit_req_per_ip: 100 r/s, burst 200, nodelay. 15 at a time stays
    # under the 20-connection cap, so only the rate limit can refuse.
    async def go():
        limits = httpx.Limits(max_connections=15)
        async with client(gateway, limits=limits) as c:
            start = time.monotonic()
            rs = []
            for _ in range(40):
                rs += await asyncio.gather(*[c.get("/") for _ in range(15)])
            return rs, time.monotonic() - start

    rs, elapsed = asyncio.run(go())
    statuses = [r.status_code for r in rs]
    passed = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert passed >= 201                      # the burst is served at once
    assert passed <= 201 + 100 * elapsed + 1  # then 100 per second
    refused = [r for r in rs if r.status_code == 429]
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json() == {"error": "too many requests", "layer": "gateway"}


def test_per_ip_connection_cap_answers_429(gateway):
    async def go():
        async with client(gateway) as c:
            await c.post("/api/reset", json={"quota": 1000, "window_s": 60,
                                             "latency_ms": 1500})
            return await asyncio.gather(*[
                c.post("/api/v1/chat", json={}) for _ in range(25)])

    rs = asyncio.run(go())
    statuses = sorted(r.status_code for r in rs)
    assert statuses == [200] * 20 + [429] * 5
    for r in rs:
        if r.status_code == 429:
            assert r.json()["layer"] == "gateway"


def test_request_body_is_capped(gateway):
    async def go():
        async with client(gateway) as c:
            return await c.post("/api/v1/chat", content=b"x" * (2 << 20))

    assert asyncio.run(go()).status_code == 413


def test_websocket_is_upgraded_at_agent_and_capped_per_ip(gateway):
    import websockets

    url = gateway.replace("http://", "ws://") + "/agent"

    async def go():
        sessions = []
        try:
            for _ in range(5):
                ws = await websockets.connect(url, open_timeout=10)
                sessions.append(ws)
            await sessions[0].send("hello")
            reply = await asyncio.wait_for(sessions[0].recv(), 10)
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await websockets.connect(url, open_timeout=10)
            return reply, e.value.status_code
        finally:
            for ws in sessions:
                await ws.close()

    reply, refused = asyncio.run(go())
    assert reply == "echo: hello"
    assert refused == 429                     # 6th session from one IP
