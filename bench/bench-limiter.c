/* admit_limiter_try on every limiter shape, 1 and 2 threads, against the
 * floor measured in the same run: one admit_now_ns() clock read plus one
 * uncontended compare-and-swap. Every limiter here always admits, so the
 * numbers are the allowed fast path.
 *
 * One thread is timed by its CPU time (CLOCK_THREAD_CPUTIME_ID), not wall
 * time: on a shared machine other processes take the CPU away for whole
 * time slices, which wall time would charge to the calls. Several threads
 * are timed by wall time, since a thread blocked on a lock uses no CPU;
 * their row says when the threads were off a CPU much of the time. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* Each number is the best of REPS runs of RUN_SECONDS: the machine is
 * shared, and the minimum is the least disturbed estimate. */
#define RUN_SECONDS 0.15
#define REPS 3

typedef void (*op_fn)(void* ctx);

typedef struct job_s {
  op_fn op;
  void* ctx;
  _Atomic int go;
  _Atomic int stop;
  _Atomic uint64_t ops;
  _Atomic uint64_t cpu_ns;
} job_t;

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void* worker(void* arg) {
  job_t* j = arg;
  uint64_t n = 0;
  while (!atomic_load_explicit(&j->go, memory_order_acquire)) {
  }
  uint64_t t0 = thread_cpu_ns();
  while (!atomic_load_explicit(&j->stop, memory_order_relaxed)) {
    for (int i = 0; i < 64; i++) j->op(j->ctx);
    n += 64;
  }
  atomic_fetch_add(&j->cpu_ns, thread_cpu_ns() - t0);
  atomic_fetch_add(&j->ops, n);
  return NULL;
}

/* The share of the wall time the threads of the last measure() ran. */
static double last_share;

/* Runs @p op on @p threads threads for RUN_SECONDS; returns the time one
 * call takes on one thread (its CPU time / calls for one thread, wall time
 * / calls per thread for several) and sets *share to the share of the wall
 * time the threads were on a CPU. */
static double measure_once(op_fn op, void* ctx, int threads, double* share) {
  job_t j;
  memset(&j, 0, sizeof(j));
  j.op = op;
  j.ctx = ctx;
  pthread_t th[8];
  for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, worker, &j);
  double t0 = bench_now_s();
  atomic_store_explicit(&j.go, 1, memory_order_release);
  struct timespec ts = {0, (long)(RUN_SECONDS * 1e9)};
  nanosleep(&ts, NULL);
  atomic_store(&j.stop, 1);
  for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
  double wall = bench_now_s() - t0;
  double ops = (double)atomic_load(&j.ops);
  *share = (double)atomic_load(&j.cpu_ns) * 1e-9 / (wall * threads);
  if (threads == 1) return (double)atomic_load(&j.cpu_ns) / ops;
  return wall * 1e9 / (ops / threads);
}

static double measure(op_fn op, void* ctx, int threads) {
  double best = measure_once(op, ctx, threads, &last_share);
  for (int i = 1; i < REPS; i++) {
    double share;
    double x = measure_once(op, ctx, threads, &share);
    if (x < best) {
      best = x;
      last_share = share;
    }
  }
  return best;
}

/* Prints a row; for several threads, says when they were off a CPU much
 * of the time (blocked on a lock, or a busy machine). */
static void row(const char* name, int threads, double ns, double floor_ns) {
  bench_row(name, threads, ns, floor_ns);
  if (threads > 1 && last_share < 0.9) {
    printf("  (the threads were on a CPU %.0f%% of the wall time)\n",
           last_share * 100);
  }
}

/* ---- the floor ----------------------------------------------------------- */

static volatile uint64_t sink;

static void op_clock(void* ctx) {
  (void)ctx;
  sink = admit_now_ns();
}

static void op_cas(void* ctx) {
  _Atomic uint64_t* w = ctx;
  uint64_t v = atomic_load_explicit(w, memory_order_relaxed);
  atomic_compare_exchange_strong(w, &v, v + 1);
}

/* The raw baseline: what a hand-inlined GCRA costs with no API around it
 * (clock read, load, max, add, compare, CAS), 1 unit per ns. */
static void op_raw_gcra(void* ctx) {
  _Atomic uint64_t* tat = ctx;
  uint64_t now = admit_now_ns();
  uint64_t t = atomic_load_explicit(tat, memory_order_relaxed);
  for (;;) {
    uint64_t base = t > now ? t : now;
    uint64_t next = base + 1;
    if (next - now > 1000000) return;
    if (atomic_compare_exchange_weak_explicit(tat, &t, next,
                                              memory_order_relaxed,
                                              memory_order_relaxed)) {
      return;
    }
  }
}

/* ---- limiters ------------------------------------------------------------ */

static void op_try(void* ctx) {
  admit_decision_t d;
  if (admit_limiter_try(ctx, 1, &d) != 0 || !d.allowed) abort();
}

static admit_limiter_t* limiter(admit_algo_t algo, uint32_t n,
                                const uint64_t* counts,
                                const uint64_t* periods,
                                const uint64_t* bursts) {
  admit_quota_t q;
  memset(&q, 0, sizeof(q));
  q.algo = algo;
  q.nrates = n;
  for (uint32_t i = 0; i < n; i++) {
    q.rates[i].count = counts[i];
    q.rates[i].period_ns = periods[i];
    q.burst[i] = bursts != NULL ? bursts[i] : 0;
  }
  admit_limiter_t* l;
  if (admit_limiter_new(&l, &q, NULL) != 0) abort();
  return l;
}

int main(void) {
  bench_go_multithreaded();
  printf("admit_limiter_try, always admitted; floor = clock read + CAS, "
         "measured now (best of %d x %.2f s; 1 thread: CPU time)\n", REPS,
         RUN_SECONDS);

  _Atomic uint64_t word = 0;
  double clock_ns = measure(op_clock, NULL, 1);
  double cas_ns = measure(op_cas, (void*)&word, 1);
  double floor_ns = clock_ns + cas_ns;
  bench_row("floor: admit_now_ns()", 1, clock_ns, 0);
  bench_row("floor: uncontended CAS", 1, cas_ns, 0);
  printf("%-44s        %9.1f ns\n", "floor: clock + CAS", floor_ns);
  atomic_store(&word, 0);
  row("raw baseline: inline GCRA (no API)", 1,
      measure(op_raw_gcra, (void*)&word, 1), floor_ns);
  atomic_store(&word, 0);
  row("raw baseline: inline GCRA (no API)", 2,
      measure(op_raw_gcra, (void*)&word, 2), floor_ns);

  /* Rates far above what the threads can ask for, so every try admits. */
  uint64_t big[2] = {1000000000, 1000000000}, sec[2] = {ADMIT_SECOND,
                                                         ADMIT_SECOND};
  uint64_t bursts[2] = {UINT64_C(1) << 40, UINT64_C(1) << 40};
  uint64_t wc[2] = {UINT32_MAX, UINT32_MAX}, wp[2] = {ADMIT_SECOND,
                                                      60ull * ADMIT_SECOND};
  struct {
    const char* name;
    admit_limiter_t* l;
  } rows[4] = {
      {"try: token bucket (lock-free)",
       limiter(ADMIT_TOKEN_BUCKET, 1, big, sec, bursts)},
      {"try: fixed window (lock-free)",
       limiter(ADMIT_FIXED_WINDOW, 1, wc, wp, NULL)},
      {"try: sliding window (mutex)",
       limiter(ADMIT_SLIDING_WINDOW, 1, wc, wp, NULL)},
      {"try: 2-rate token bucket (mutex)",
       limiter(ADMIT_TOKEN_BUCKET, 2, big, sec, bursts)},
  };
  for (int threads = 1; threads <= 2; threads++) {
    for (int i = 0; i < 4; i++) {
      /* Start every run from a fresh state so each admits throughout. */
      admit_limiter_reset(rows[i].l);
      row(rows[i].name, threads, measure(op_try, rows[i].l, threads),
          floor_ns);
    }
  }
  for (int i = 0; i < 4; i++) admit_limiter_free(rows[i].l);
  return 0;
}
