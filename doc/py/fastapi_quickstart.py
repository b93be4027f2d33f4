"""The seed's per-tier and per-endpoint limits and pod admission in a
FastAPI app, driven by Starlette's TestClient on a simulated clock so
every number is exact. Output: doc/out/py-fastapi_quickstart.txt, compared
by `make check`."""
import admit
from starlette.testclient import TestClient

clock = admit.ManualClock(start=1000.0)  # 40 s into a minute

# [app]
import admit
from fastapi import Depends, FastAPI, Request
from admit.fastapi import (AdmissionMiddleware, RateLimit, add_health_routes,
                           by_header)

USERS = {"alice": "free", "bob": "pro"}  # your user database


def tier_of(request: Request) -> str:
    return USERS.get(request.headers.get("x-user"), "free")


limit = RateLimit(
    {"free": "10/minute", "pro": "100/minute", "enterprise": "1000/minute"},
    key=by_header("X-User"),  # the subject: a user id (else the client IP)
    tier=tier_of,
    routes={"/chat": "20/minute", "/search": "100/minute",
            "/analyze": "5/minute"},
    clock=clock,  # tests only: a simulated clock
)
app = FastAPI(dependencies=[Depends(limit)])

# Pod admission (uvicorn's --limit-concurrency 100 --backlog 200): beyond
# both, 503 at once. /health, /ready and /metrics read the same controller.
admission = admit.AdmissionController(max_in_flight=100, backlog=200)
app.add_middleware(AdmissionMiddleware, controller=admission)
health = admit.Health().add(admission, "http")
add_health_routes(app, health=health, metrics_path="/metrics")


@app.post("/chat")
async def chat() -> dict:
    return {"reply": "hello"}


@app.post("/analyze")
async def analyze() -> dict:
    return {"result": 42}
# [app]


def run(client, user, path, n):
    codes = [client.post(path, headers={"X-User": user}) for _ in range(n)]
    ok = sum(r.status_code == 200 for r in codes)
    print("%-5s %-8s x%-2d -> %d x 200, %d x 429" % (user, path, n, ok,
                                                    n - ok))
    last = codes[-1]
    for h in ("RateLimit-Policy", "RateLimit", "Retry-After"):
        if h in last.headers:
            print("    %s: %s" % (h, last.headers[h]))


with TestClient(app) as client:
    run(client, "alice", "/chat", 11)    # free tier: 10 a minute
    run(client, "bob", "/chat", 21)      # pro, but /chat allows 20
    run(client, "bob", "/analyze", 6)    # /analyze allows 5
    clock.advance(20)                    # the next minute
    run(client, "alice", "/chat", 1)
    print("GET /health ->", client.get("/health").json())
    r = client.get("/ready")
    print("GET /ready  ->", r.status_code, r.json()["status"])
    m = client.get("/metrics").text.splitlines()
    print("GET /metrics -> (two of its lines)")
    for line in m:
        if line.startswith(("admit_admission_admitted_total",
                            "admit_admission_limit")):
            print("   ", line)
