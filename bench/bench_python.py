#!/usr/bin/python3
"""admit's Python binding side by side with the ``limits`` library (Debian's
python3-limits 2.8), same scenarios, same run.

1. in-process fixed window: KeyedLimiter(fixed_window).hit vs limits
   FixedWindowRateLimiter over MemoryStorage;
2. in-process sliding window: KeyedLimiter(sliding_window).hit vs limits
   MovingWindowRateLimiter over MemoryStorage;
3. Redis, one caller: RedisLimiter.try_acquire vs limits
   FixedWindowRateLimiter over RedisStorage (admit's fixed window, and its
   token bucket, whose script is cheaper, in a second row);
4. Redis from asyncio, 100 concurrent tasks on one limiter:
   RedisLimiter.try_acquire_async vs limits RedisStorage (limits.aio needs
   coredis, which Debian lacks, so it runs in the default thread pool, and
   called directly from the tasks, blocking the loop; the better counts).

Every scenario uses 1000 keys and the limit "100/minute", so both sides
mix admissions and denials alike. The two sides take turns, round by
round; each ops/s figure is the best of its side's rounds, and a ratio is
the median of the ratios within each pair of rounds (the in-process rows
run 15 rounds of 0.3 s for it, timed in CPU time of this process since
they never wait), except in the asyncio rows, where it is best against
best across several ways of running ``limits``. Run under
test/run-redis.sh (ADMIT_TEST_REDIS_URL) for the Redis rows; they are
skipped without it. ``--quick`` shortens every round.
"""

import asyncio
import os
import statistics
import sys
import time
import uuid
from itertools import cycle, islice

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bindings", "python"))

import admit  # noqa: E402

try:
    import limits
    from limits.storage import MemoryStorage
    from limits.strategies import (FixedWindowRateLimiter,
                                   MovingWindowRateLimiter)
except ImportError:  # pragma: no cover
    limits = None

QUICK = "--quick" in sys.argv
ROUND_S = 0.25 if QUICK else 1.0
ROUNDS = 2 if QUICK else 5
# In process: many short rounds, for the median of their ratios.
IN_ROUND_S = 0.1 if QUICK else 0.3
IN_ROUNDS = 5 if QUICK else 15
NKEYS = 1000
LIMIT = "100/minute"
KEYS = ["user%d" % i for i in range(NKEYS)]

rows = []


def _size(loop_fn, n0, round_s=ROUND_S, clock=time.perf_counter):
    """Iterations for a round of about ``round_s`` seconds."""
    n = n0
    while True:
        t = clock()
        loop_fn(n)
        dt = clock() - t
        if dt > round_s / 4:
            return max(1, int(n * round_s / dt))
        n *= 4


def compare(ours_fn, theirs_fn, n0=20000, n1=5000, rounds=ROUNDS,
            round_s=ROUND_S, clock=time.perf_counter):
    """Best ops/s of each side, and the median of the rounds' ratios. The
    rounds take turns (ours, theirs, ...) so that a machine shared with
    other work slows both alike; a ratio is taken within each pair of
    rounds, a fraction of a second apart, so load that comes and goes
    between pairs cancels out (the ratio of the two bests would mix
    moments). ``clock`` times the rounds: wall time, or for loops that
    never wait, ``time.process_time`` (the CPU time of this process, so
    that time the machine gives to other work does not count)."""
    n_ours = _size(ours_fn, n0, round_s, clock)
    n_theirs = _size(theirs_fn, n1, round_s, clock)
    best = [0.0, 0.0]
    ratios = []
    for _ in range(rounds):
        ops = []
        for side, (fn, n) in enumerate(((ours_fn, n_ours),
                                        (theirs_fn, n_theirs))):
            t = clock()
            fn(n)
            ops.append(n / (clock() - t))
            best[side] = max(best[side], ops[-1])
        ratios.append(ops[0] / ops[1])
    return best[0], best[1], statistics.median(ratios)


def row(name, ours, theirs, target, ratio=None):
    if ratio is None:
        ratio = ours / theirs if theirs else float("nan")
    rows.append((name, ours, theirs, ratio, target))
    print("%-46s admit %9.0f/s  limits %9.0f/s  %6.2fx  (target "
          ">= %gx)%s" % (name, ours, theirs, ratio, target,
                         "" if ratio >= target else "  BELOW TARGET"))
    sys.stdout.flush()


# -- in process --------------------------------------------------------------

def in_process():
    item = limits.parse(LIMIT)
    for algo, strategy, name in (
            ("fixed_window", FixedWindowRateLimiter,
             "in-process fixed window"),
            ("sliding_window", MovingWindowRateLimiter,
             "in-process sliding/moving window")):
        ours = admit.KeyedLimiter(LIMIT, algorithm=algo)
        theirs = strategy(MemoryStorage())

        # The keys come from one iterator (no index arithmetic), so the
        # loop itself costs both sides as little as it can.
        def run_ours(n, hit=ours.hit, keys=KEYS):
            for k in islice(cycle(keys), n):
                hit(k)

        def run_theirs(n, hit=theirs.hit, keys=KEYS):
            for k in islice(cycle(keys), n):
                hit(item, k)

        a, b, ratio = compare(run_ours, run_theirs, rounds=IN_ROUNDS,
                              round_s=IN_ROUND_S, clock=time.process_time)
        row(name, a, b, 10, ratio)


# -- Redis --------------------------------------------------------------------

def redis_rows(url):
    from limits.storage import RedisStorage
    item = limits.parse(LIMIT)
    ns = "bench" + uuid.uuid4().hex[:8]
    redis = admit.Redis(url, prefix=ns)
    ours = admit.RedisLimiter(redis, LIMIT, algorithm="fixed_window",
                              name="single")
    storage = RedisStorage(url)
    theirs = FixedWindowRateLimiter(storage)

    def run_ours(n, hit=ours.try_acquire, keys=KEYS):
        for i in range(n):
            hit(keys[i % NKEYS])

    def run_theirs(n, hit=theirs.hit, keys=KEYS):
        for i in range(n):
            hit(item, keys[i % NKEYS], ns)

    run_ours(200)                    # connect and load scripts first
    run_theirs(200)
    a, b, ratio = compare(run_ours, run_theirs, 500, 500)
    row("Redis, one caller", a, b, 1.2, ratio)
    gcra = admit.RedisLimiter(redis, LIMIT, name="gcra")

    def run_gcra(n, hit=gcra.try_acquire, keys=KEYS):
        for i in range(n):
            hit(keys[i % NKEYS])

    run_gcra(200)
    a, b, ratio = compare(run_gcra, run_theirs, 500, 500)
    row("Redis, one caller (admit token bucket)", a, b, 1.2, ratio)

    # asyncio, 100 tasks on one limiter.
    aio = admit.RedisLimiter(redis, LIMIT, algorithm="fixed_window",
                             name="aio")
    tasks = 100

    def run_aio_ours(n):
        async def worker(w, per):
            call = aio.try_acquire_async
            for i in range(per):
                await call(KEYS[(w * per + i) % NKEYS])

        async def main():
            await asyncio.gather(*[worker(w, n // tasks)
                                   for w in range(tasks)])
        asyncio.run(main())

    def run_aio_pool(n):
        async def worker(w, per, loop):
            for i in range(per):
                await loop.run_in_executor(None, theirs.hit, item,
                                           KEYS[(w * per + i) % NKEYS], ns)

        async def main():
            loop = asyncio.get_running_loop()
            await asyncio.gather(*[worker(w, n // tasks, loop)
                                   for w in range(tasks)])
        asyncio.run(main())

    def run_aio_direct(n):
        async def worker(w, per):
            for i in range(per):
                theirs.hit(item, KEYS[(w * per + i) % NKEYS], ns)
                await asyncio.sleep(0)

        async def main():
            await asyncio.gather(*[worker(w, n // tasks)
                                   for w in range(tasks)])
        asyncio.run(main())

    a, b1, _ = compare(run_aio_ours, run_aio_pool, 2000, 2000)
    a2, b2, _ = compare(run_aio_ours, run_aio_direct, 2000, 2000)
    a = max(a, a2)
    print("  (limits from asyncio: thread pool %.0f/s, direct %.0f/s)"
          % (b1, b2))
    row("Redis, asyncio, 100 tasks", a, max(b1, b2), 5)
    aio = admit.RedisLimiter(redis, LIMIT, name="aio-gcra")
    a, b, _ = compare(run_aio_ours, run_aio_direct, 2000, 2000)
    row("Redis, asyncio, 100 tasks (admit token bucket)", a,
        max(b, b1, b2), 5)
    st = redis.stats()
    print("  (admit Redis: %d commands, %d replies, %d timeouts)"
          % (st.commands, st.replies, st.timeouts))
    redis.close()


def main():
    print("admit %s (Python %s) vs limits %s; %d keys, %r; %d rounds of "
          "%.2g s a side (in process %d of %.2g s); ratios are medians of "
          "the rounds'" % (admit.__version__, sys.version.split()[0],
                           getattr(limits, "__version__", "?"), NKEYS,
                           LIMIT, ROUNDS, ROUND_S, IN_ROUNDS, IN_ROUND_S))
    if limits is None:
        print("limits is not installed (python3-limits): nothing to "
              "compare with")
        return 0
    in_process()
    url = os.environ.get("ADMIT_TEST_REDIS_URL")
    if not url:
        print("Redis rows skipped: ADMIT_TEST_REDIS_URL is not set (run "
              "under test/run-redis.sh)")
    else:
        try:
            import redis  # noqa: F401  (limits' RedisStorage needs it)
        except ImportError:
            print("Redis rows skipped: python3-redis is not installed")
        else:
            redis_rows(url)
    below = [r[0] for r in rows if not r[3] >= r[4]]
    print("bench_python: %d comparisons, %d below target%s"
          % (len(rows), len(below), (": " + ", ".join(below)) if below
             else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
