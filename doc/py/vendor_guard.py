"""The seed's vendor pipeline with admit.Guard: a local limiter and a
semaphore around a flaky vendor, retries within a budget, and a vendor 429
that pauses the guard so later calls fail at once instead of waiting.
Output: doc/out/py-vendor_guard.txt, compared by `make check`."""
import asyncio
import time

import admit

calls = 0


async def flaky_vendor(payload: dict) -> dict:
    """Fails twice, then answers (stands in for an httpx call)."""
    global calls
    calls += 1
    if calls <= 2:
        raise ConnectionError("vendor hiccup")
    return {"echo": payload}


async def limited_vendor(payload: dict) -> dict:
    """Answers 429 with Retry-After: 30."""
    raise admit.VendorLimited(retry_after=30)


async def main() -> None:
    # [guard]
    guard = admit.Guard(
        "llm",
        local=admit.TokenBucket("20/second", burst=5),  # local smoothing
        semaphore=admit.Semaphore(50, max_waiters=100),  # local capacity
        call_timeout=30, retries=2)                      # per attempt
    result = await guard.call(flaky_vendor, {"q": 1}, queue_timeout=5)
    # [guard]
    m = guard.metrics()
    print("result:", result, "after", calls, "calls")
    print("attempts started=%d failed=%d succeeded=%d retries=%d"
          % (m.started, m.failed, m.succeeded, m.retries))

    try:
        await guard.call(limited_vendor, {"q": 2}, queue_timeout=5,
                         retries=0)
    except admit.VendorLimited:
        print("vendor answered 429: the guard pauses for 30 s")
    start = time.monotonic()
    try:
        await guard.call(flaky_vendor, {"q": 3}, queue_timeout=5)
    except admit.RateLimited as e:
        print("next call: %s, refused at once: %s, retry after ~%d s"
              % (type(e).__name__, time.monotonic() - start < 0.5,
                 round(e.retry_after)))
    m = guard.metrics()
    print("pauses=%d rejected_pause=%d in_flight=%d"
          % (m.pauses, m.rejected_pause, m.in_flight))


asyncio.run(main())
