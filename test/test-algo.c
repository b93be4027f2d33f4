/* Exact boundary tests for the pure algorithms in lib/algo.c: every
 * decision field at and around every edge, on integer nanoseconds. */
#include "helpers.h"

#include "algo.h"

#define NS UINT64_C(1)
#define MS ((uint64_t)ADMIT_MILLISECOND)
#define S ((uint64_t)ADMIT_SECOND)
#define DAY (86400 * S)
#define YEAR (365 * DAY)
#define NEVER UINT64_MAX

#define EXPECT_D(d, al, li, lim, rem, ra, rs)                               \
  do {                                                                      \
    assert_int_equal((d).allowed, (al));                                    \
    assert_int_equal((d).limiting, (li));                                   \
    assert_int_equal((d).limit, (lim));                                     \
    assert_int_equal((d).remaining, (rem));                                 \
    assert_int_equal((d).retry_after_ns, (ra));                             \
    assert_int_equal((d).reset_after_ns, (rs));                             \
  } while (0)

static admit_quota_t quota(admit_algo_t algo, uint32_t n,
                           const uint64_t* counts, const uint64_t* periods,
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
  return q;
}

static admit_quota_t quota1(admit_algo_t algo, uint64_t count,
                            uint64_t period, uint64_t burst) {
  return quota(algo, 1, &count, &period, &burst);
}

/* An algorithm with its cells, decided in place. */
typedef struct sim_s {
  admit__algo_t a;
  admit__cell_t c[ADMIT_RATES_MAX];
} sim_t;

static void sim_init(sim_t* s, const admit_quota_t* q) {
  memset(s, 0, sizeof(*s));
  assert_int_equal(admit__algo_init(&s->a, q), 0);
}

/* Decides and checks that a denial leaves the cells alone and an allow
 * writes exactly what decide reported. */
static int sim_try(sim_t* s, uint64_t now, uint64_t cost,
                   admit_decision_t* d) {
  admit__cell_t before[ADMIT_RATES_MAX], next[ADMIT_RATES_MAX];
  memcpy(before, s->c, sizeof(before));
  memset(next, 0xa5, sizeof(next));
  int rc = admit__algo_decide(&s->a, s->c, next, now, cost, d);
  if (rc == 0) {
    assert_memory_equal(next, before, s->a.nrates * sizeof(admit__cell_t));
  }
  if (rc == 1) memcpy(s->c, next, s->a.nrates * sizeof(admit__cell_t));
  /* The in-place form must agree. */
  admit__cell_t inplace[ADMIT_RATES_MAX];
  admit_decision_t d2;
  memcpy(inplace, before, sizeof(inplace));
  assert_int_equal(admit__algo_decide(&s->a, inplace, inplace, now, cost, &d2),
                   rc);
  if (rc >= 0) {
    assert_memory_equal(inplace, s->c, s->a.nrates * sizeof(admit__cell_t));
    assert_memory_equal(&d2, d, sizeof(d2));
  }
  return rc;
}

/* ---- validation ---------------------------------------------------------- */

static void test_init_rejects(void** state) {
  (void)state;
  admit__algo_t a;
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 0);
  assert_int_equal(admit__algo_init(NULL, &q), ADMIT_EINVAL);
  assert_int_equal(admit__algo_init(&a, NULL), ADMIT_EINVAL);
  assert_int_equal(admit__algo_init(&a, &q), 0);

  q.algo = (admit_algo_t)3;
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
  q.algo = (admit_algo_t)-1;
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);

  q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 0);
  q.nrates = 0;
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
  q.nrates = ADMIT_RATES_MAX + 1;
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
  q.nrates = UINT32_MAX;
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);

  for (int algo = 0; algo < 3; algo++) {
    q = quota1((admit_algo_t)algo, 0, S, 0);
    assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
    q = quota1((admit_algo_t)algo, 10, 0, 0);
    assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
    /* A zero rate hidden behind a good one. */
    uint64_t counts[2] = {10, 0}, periods[2] = {S, S};
    q = quota((admit_algo_t)algo, 2, counts, periods, NULL);
    assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
  }

  /* A bucket: at most one unit per ns, and burst * interval must fit. */
  q = quota1(ADMIT_TOKEN_BUCKET, 1000000001, S, 0);
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
  q = quota1(ADMIT_TOKEN_BUCKET, 1000000000, S, 0);
  assert_int_equal(admit__algo_init(&a, &q), 0);
  assert_int_equal(a.r[0].interval_ns, 1);
  q = quota1(ADMIT_TOKEN_BUCKET, 1, 10 * YEAR, 58);
  assert_int_equal(admit__algo_init(&a, &q), 0);
  assert_int_equal(a.r[0].tolerance_ns, 58 * 10 * YEAR);
  q = quota1(ADMIT_TOKEN_BUCKET, 1, 10 * YEAR, 59);
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
  q = quota1(ADMIT_TOKEN_BUCKET, 1, S, UINT64_MAX);
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
  q = quota1(ADMIT_TOKEN_BUCKET, 1, UINT64_MAX, 1);
  assert_int_equal(admit__algo_init(&a, &q), 0);
  q = quota1(ADMIT_TOKEN_BUCKET, 1, UINT64_MAX, 2);
  assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);

  /* Windows count up to UINT32_MAX; a bucket ignores nothing, windows
   * ignore the burst. */
  for (int algo = 1; algo < 3; algo++) {
    q = quota1((admit_algo_t)algo, UINT32_MAX, S, 0);
    assert_int_equal(admit__algo_init(&a, &q), 0);
    q = quota1((admit_algo_t)algo, (uint64_t)UINT32_MAX + 1, S, 0);
    assert_int_equal(admit__algo_init(&a, &q), ADMIT_EINVAL);
    q = quota1((admit_algo_t)algo, 5, S, 1000);
    assert_int_equal(admit__algo_init(&a, &q), 0);
    assert_int_equal(a.r[0].limit, 5);
    /* Windows may run faster than one unit per ns. */
    q = quota1((admit_algo_t)algo, 1000, 1, 0);
    assert_int_equal(admit__algo_init(&a, &q), 0);
  }
}

static void test_init_params(void** state) {
  (void)state;
  admit__algo_t a;
  /* 3 per 10 ns: the interval rounds up to 4 ns. */
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 3, 10, 0);
  assert_int_equal(admit__algo_init(&a, &q), 0);
  assert_int_equal(a.nrates, 1);
  assert_int_equal(a.r[0].interval_ns, 4);
  assert_int_equal(a.r[0].limit, 3);
  assert_int_equal(a.r[0].tolerance_ns, 12);
  q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 25);
  assert_int_equal(admit__algo_init(&a, &q), 0);
  assert_int_equal(a.r[0].interval_ns, 100 * MS);
  assert_int_equal(a.r[0].limit, 25);
  assert_int_equal(a.r[0].tolerance_ns, 2500 * MS);
  /* The exact division helper against the divide instruction. */
  uint64_t ds[] = {1, 2, 3, 7, 10, 1000000007, S, UINT64_MAX / 3,
                   UINT64_MAX - 1, UINT64_MAX, UINT64_C(1) << 63};
  uint64_t ns[] = {0, 1, 2, 9, 10, 11, 999999999, S, UINT64_MAX / 2,
                   UINT64_MAX - 1, UINT64_MAX, (UINT64_C(1) << 63) - 1};
  for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
    for (size_t j = 0; j < sizeof(ns) / sizeof(ns[0]); j++) {
      for (uint64_t k = 0; k < 3; k++) {
        uint64_t n = ns[j] - k * (ns[j] >= 2);
        assert_int_equal(admit__udiv(n, ds[i], UINT64_MAX / ds[i]),
                         n / ds[i]);
        n = ds[i] * (ns[j] % 1000) + k;
        assert_int_equal(admit__udiv(n, ds[i], UINT64_MAX / ds[i]),
                         n / ds[i]);
      }
    }
  }
}

static void test_bad_cost(void** state) {
  (void)state;
  for (int algo = 0; algo < 3; algo++) {
    uint64_t counts[2] = {5, 7}, periods[2] = {S, 60 * S};
    admit_quota_t q = quota((admit_algo_t)algo, 2, counts, periods, NULL);
    sim_t s;
    sim_init(&s, &q);
    admit_decision_t d;
    assert_int_equal(sim_try(&s, 5 * S, 0, &d), ADMIT_EINVAL);
    assert_int_equal(sim_try(&s, 5 * S, 6, &d), ADMIT_EINVAL);
    assert_int_equal(sim_try(&s, 5 * S, UINT64_MAX, &d), ADMIT_EINVAL);
    assert_int_equal(sim_try(&s, 5 * S, 5, &d), 1);
    uint64_t wait = 7;
    admit__cell_t next[2];
    assert_int_equal(admit__algo_reserve(&s.a, s.c, next, 5 * S, 6, NEVER,
                                         &wait, &d),
                     ADMIT_EINVAL);
    assert_int_equal(wait, 7);
  }
}

/* ---- token bucket -------------------------------------------------------- */

static void test_bucket_burst_then_rate(void** state) {
  (void)state;
  /* 10/s, burst 5: T = 100 ms, tolerance = 500 ms. */
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 5);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t t = 1000 * S;
  for (uint64_t i = 1; i <= 5; i++) {
    assert_int_equal(sim_try(&s, t, 1, &d), 1);
    EXPECT_D(d, 1, 0, 5, 5 - i, 0, i * 100 * MS);
  }
  assert_int_equal(s.c[0].w0, t + 500 * MS);
  assert_int_equal(sim_try(&s, t, 1, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, 100 * MS, 500 * MS);
  /* A cost of 3 waits for three intervals. */
  assert_int_equal(sim_try(&s, t, 3, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, 300 * MS, 500 * MS);
  /* Exactly one interval later, not one ns before. */
  assert_int_equal(sim_try(&s, t + 100 * MS - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, 1, 400 * MS + 1);
  assert_int_equal(sim_try(&s, t + 100 * MS, 1, &d), 1);
  EXPECT_D(d, 1, 0, 5, 0, 0, 500 * MS);
  /* Steady state: one per interval, each exactly on time. */
  for (uint64_t k = 2; k < 50; k++) {
    uint64_t at = t + k * 100 * MS;
    assert_int_equal(sim_try(&s, at - 1, 1, &d), 0);
    assert_int_equal(d.retry_after_ns, 1);
    assert_int_equal(sim_try(&s, at, 1, &d), 1);
    EXPECT_D(d, 1, 0, 5, 0, 0, 500 * MS);
  }
  /* Idle refills to the burst, never beyond. */
  t += 49 * 100 * MS + 10 * S;
  assert_int_equal(sim_try(&s, t, 5, &d), 1);
  EXPECT_D(d, 1, 0, 5, 0, 0, 500 * MS);
  /* Partial refill: 250 ms later two units and a half are back. */
  assert_int_equal(sim_try(&s, t + 250 * MS, 3, &d), 0);
  EXPECT_D(d, 0, 0, 5, 2, 50 * MS, 250 * MS);
  assert_int_equal(sim_try(&s, t + 250 * MS, 2, &d), 1);
  EXPECT_D(d, 1, 0, 5, 0, 0, 450 * MS);
  assert_true(admit__algo_fresh(&s.a, s.c, t + 700 * MS));
  assert_false(admit__algo_fresh(&s.a, s.c, t + 700 * MS - 1));
}

static void test_bucket_rounding(void** state) {
  (void)state;
  /* 3 per 10 ns: T = 4 ns, so at most 3 + t/4 by time t. */
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 3, 10, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t admitted = 0;
  for (uint64_t t = 100; t < 1100; t++) {
    while (sim_try(&s, t, 1, &d) == 1) admitted++;
    assert_true(admitted <= 3 + (t - 100) / 4);
    assert_true(admitted >= 3 + (t - 100) / 4);
  }
}

static void test_bucket_reserve(void** state) {
  (void)state;
  /* 1/s, burst 2. */
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 1, S, 2);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t t = 50 * S, wait = 99;
  admit__cell_t next[1];
  assert_int_equal(
      admit__algo_reserve(&s.a, s.c, s.c, t, 2, 0, &wait, &d), 1);
  assert_int_equal(wait, 0);
  EXPECT_D(d, 1, 0, 2, 0, 0, 2 * S);
  /* Not within 999 ms: nothing taken, d says how long. */
  assert_int_equal(
      admit__algo_reserve(&s.a, s.c, next, t, 1, S - 1, &wait, &d), 0);
  assert_int_equal(wait, S);
  EXPECT_D(d, 0, 0, 2, 0, S, 2 * S);
  assert_int_equal(next[0].w0, s.c[0].w0);
  /* Within 1 s: a place one second ahead. */
  assert_int_equal(
      admit__algo_reserve(&s.a, s.c, s.c, t, 1, S, &wait, &d), 1);
  assert_int_equal(wait, S);
  EXPECT_D(d, 1, 0, 2, 0, 0, 3 * S);
  assert_int_equal(s.c[0].w0, t + 3 * S);
  /* The next one waits two seconds, and plain tries see the queue. */
  assert_int_equal(sim_try(&s, t + S, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, S, 2 * S);
  assert_int_equal(
      admit__algo_reserve(&s.a, s.c, s.c, t, 2, ADMIT_FOREVER, &wait, &d),
      1);
  assert_int_equal(wait, 3 * S);
  assert_int_equal(s.c[0].w0, t + 5 * S);
  /* A peek beyond the tolerance is denied with the wait. */
  admit__algo_peek(&s.a, s.c, t, &d);
  EXPECT_D(d, 0, 0, 2, 0, 3 * S, 5 * S);
  admit__algo_peek(&s.a, s.c, t + 3 * S, &d);
  EXPECT_D(d, 1, 0, 2, 0, 0, 2 * S);
  /* Refunds move TAT back, never below now. */
  admit__algo_refund(&s.a, s.c, s.c, t, 2, t);
  assert_int_equal(s.c[0].w0, t + 3 * S);
  admit__algo_refund(&s.a, s.c, s.c, t + 2 * S + 500 * MS, 1, t);
  assert_int_equal(s.c[0].w0, t + 2 * S + 500 * MS);
  admit__algo_refund(&s.a, s.c, s.c, t + 2 * S + 500 * MS, 2, t);
  assert_int_equal(s.c[0].w0, t + 2 * S + 500 * MS);
  admit__algo_refund(&s.a, s.c, s.c, t + 2 * S + 500 * MS, 0, t);
  assert_int_equal(s.c[0].w0, t + 2 * S + 500 * MS);
  /* A cell at or before now is fresh and untouched by a refund. */
  admit__algo_refund(&s.a, s.c, s.c, t + 9 * S, 2, t);
  assert_int_equal(s.c[0].w0, t + 2 * S + 500 * MS);
  /* A huge refund saturates instead of wrapping. */
  s.c[0].w0 = t + 3 * S;
  admit__algo_refund(&s.a, s.c, s.c, t, UINT64_MAX, t);
  assert_int_equal(s.c[0].w0, t);
}

static void test_bucket_end_of_time(void** state) {
  (void)state;
  /* 1/s, burst 5, the clock 10 s before UINT64_MAX: nothing wraps. */
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 1, S, 5);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t t = UINT64_MAX - 10 * S;
  assert_int_equal(sim_try(&s, t, 5, &d), 1);
  EXPECT_D(d, 1, 0, 5, 0, 0, 5 * S);
  assert_int_equal(sim_try(&s, t, 1, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, S, 5 * S);
  assert_int_equal(sim_try(&s, t + S, 1, &d), 1);
  EXPECT_D(d, 1, 0, 5, 0, 0, 5 * S);
  /* 3 s before the end a fresh bucket has room for three more TATs only. */
  sim_init(&s, &q);
  t = UINT64_MAX - 3 * S;
  admit__algo_peek(&s.a, s.c, t, &d);
  EXPECT_D(d, 1, 0, 5, 3, 0, 0);
  assert_int_equal(sim_try(&s, t, 2, &d), 1);
  EXPECT_D(d, 1, 0, 5, 1, 0, 2 * S);
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  EXPECT_D(d, 1, 0, 5, 0, 0, 3 * S);
  assert_int_equal(s.c[0].w0, UINT64_MAX);
  /* Saturating here would admit forever; it is denied, never to fit. */
  for (uint64_t k = 0; k < 4; k++) {
    assert_int_equal(sim_try(&s, t + k * S, 1, &d), 0);
    EXPECT_D(d, 0, 0, 5, 0, NEVER, 3 * S - k * S);
  }
  assert_int_equal(sim_try(&s, UINT64_MAX, 1, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, NEVER, 0);
  uint64_t wait = 0;
  assert_int_equal(admit__algo_reserve(&s.a, s.c, s.c, t, 1, ADMIT_FOREVER,
                                       &wait, &d),
                   0);
  assert_int_equal(wait, NEVER);
  assert_int_equal(s.c[0].w0, UINT64_MAX);
  /* A TAT of UINT64_MAX stays representable through refunds. */
  admit__algo_refund(&s.a, s.c, s.c, t, 1, t);
  assert_int_equal(s.c[0].w0, UINT64_MAX - S);
}

static void test_bucket_huge_and_tiny_rates(void** state) {
  (void)state;
  admit_decision_t d;
  sim_t s;
  /* 1e9/s: one unit per ns, burst 1e9. */
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 1000000000, S, 0);
  sim_init(&s, &q);
  uint64_t t = 7 * S;
  assert_int_equal(sim_try(&s, t, 1000000000, &d), 1);
  EXPECT_D(d, 1, 0, 1000000000, 0, 0, S);
  assert_int_equal(sim_try(&s, t, 1, &d), 0);
  EXPECT_D(d, 0, 0, 1000000000, 0, 1, S);
  assert_int_equal(sim_try(&s, t + 1, 1, &d), 1);
  assert_int_equal(sim_try(&s, t + 1001, 1000, &d), 1);
  EXPECT_D(d, 1, 0, 1000000000, 0, 0, S);
  assert_int_equal(sim_try(&s, t + 1001, 1, &d), 0);
  /* Huge burst with a huge rate: 1e9/s with a burst of 2^40. */
  q = quota1(ADMIT_TOKEN_BUCKET, 1000000000, S, UINT64_C(1) << 40);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, t, UINT64_C(1) << 40, &d), 1);
  EXPECT_D(d, 1, 0, UINT64_C(1) << 40, 0, 0, UINT64_C(1) << 40);

  /* 1/day. */
  q = quota1(ADMIT_TOKEN_BUCKET, 1, DAY, 0);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  EXPECT_D(d, 1, 0, 1, 0, 0, DAY);
  assert_int_equal(sim_try(&s, t + DAY - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 1, 0, 1, 1);
  assert_int_equal(sim_try(&s, t + DAY, 1, &d), 1);

  /* 1 per 10 years, burst 3. */
  q = quota1(ADMIT_TOKEN_BUCKET, 1, 10 * YEAR, 3);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, t, 3, &d), 1);
  EXPECT_D(d, 1, 0, 3, 0, 0, 30 * YEAR);
  assert_int_equal(sim_try(&s, t + 10 * YEAR - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 3, 0, 1, 20 * YEAR + 1);
  assert_int_equal(sim_try(&s, t + 10 * YEAR, 1, &d), 1);
  EXPECT_D(d, 1, 0, 3, 0, 0, 30 * YEAR);
  assert_int_equal(sim_try(&s, t + 10 * YEAR, 3, &d), 0);
  EXPECT_D(d, 0, 0, 3, 0, 30 * YEAR, 30 * YEAR);
}

/* ---- fixed window -------------------------------------------------------- */

static void test_fixed_window_edges(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_FIXED_WINDOW, 3, S, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t t = 10 * S + 500 * MS;
  admit__algo_peek(&s.a, s.c, t, &d);
  EXPECT_D(d, 1, 0, 3, 3, 0, 0);
  for (uint64_t i = 1; i <= 3; i++) {
    assert_int_equal(sim_try(&s, t, 1, &d), 1);
    EXPECT_D(d, 1, 0, 3, 3 - i, 0, 500 * MS);
  }
  assert_int_equal(s.c[0].w0, 11);
  assert_int_equal(s.c[0].w1, 3);
  assert_int_equal(sim_try(&s, t, 1, &d), 0);
  EXPECT_D(d, 0, 0, 3, 0, 500 * MS, 500 * MS);
  assert_int_equal(sim_try(&s, 11 * S - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 3, 0, 1, 1);
  assert_false(admit__algo_fresh(&s.a, s.c, 11 * S - 1));
  assert_true(admit__algo_fresh(&s.a, s.c, 11 * S));
  assert_int_equal(sim_try(&s, 11 * S, 1, &d), 1);
  EXPECT_D(d, 1, 0, 3, 2, 0, S);
  /* The documented 2x across an edge: 3 in the last ns of a window, 3
   * more in the first ns of the next. */
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 21 * S - 1, 3, &d), 1);
  EXPECT_D(d, 1, 0, 3, 0, 0, 1);
  assert_int_equal(sim_try(&s, 21 * S, 3, &d), 1);
  EXPECT_D(d, 1, 0, 3, 0, 0, S);
  /* Cost larger than what is left, but not than the limit: next window. */
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 30 * S + 1, 2, &d), 1);
  assert_int_equal(sim_try(&s, 30 * S + 2, 2, &d), 0);
  EXPECT_D(d, 0, 0, 3, 1, S - 2, S - 2);
  /* A long idle: the stale cell counts nothing. */
  assert_int_equal(sim_try(&s, 1000 * S, 3, &d), 1);
  EXPECT_D(d, 1, 0, 3, 0, 0, S);
}

static void test_fixed_window_refund(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_FIXED_WINDOW, 5, S, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  assert_int_equal(sim_try(&s, 4 * S, 4, &d), 1);
  admit__algo_refund(&s.a, s.c, s.c, 4 * S + 10, 3, 4 * S);
  assert_int_equal(s.c[0].w1, 1);
  admit__algo_refund(&s.a, s.c, s.c, 4 * S + 10, 3, 4 * S);
  assert_int_equal(s.c[0].w1, 0);
  assert_int_equal(sim_try(&s, 4 * S + 20, 5, &d), 1);
  /* Taken in an earlier window: nothing to give back. */
  admit__algo_refund(&s.a, s.c, s.c, 4 * S + 30, 5, 3 * S);
  assert_int_equal(s.c[0].w1, 5);
  /* After the charged window ended: nothing, and the cell stays. */
  admit__algo_refund(&s.a, s.c, s.c, 5 * S, 5, 4 * S);
  assert_int_equal(s.c[0].w0, 5);
  assert_int_equal(s.c[0].w1, 5);
  admit__algo_refund(&s.a, s.c, s.c, 5 * S - 1, 5, 4 * S);
  assert_int_equal(s.c[0].w1, 0);
}

static void test_fixed_window_ahead(void** state) {
  (void)state;
  /* A caller with an older clock reading finds the cell already in the
   * next window: its units count, they are not reset as stale. */
  admit_quota_t q = quota1(ADMIT_FIXED_WINDOW, 4, S, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  assert_int_equal(sim_try(&s, 8 * S, 4, &d), 1);
  assert_int_equal(sim_try(&s, 8 * S - 10, 1, &d), 0);
  EXPECT_D(d, 0, 0, 4, 0, S + 10, S + 10);
  assert_int_equal(s.c[0].w0, 9);
  assert_false(admit__algo_fresh(&s.a, s.c, 8 * S - 10));
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 8 * S, 2, &d), 1);
  assert_int_equal(sim_try(&s, 8 * S - 10, 1, &d), 1);
  EXPECT_D(d, 1, 0, 4, 1, 0, S + 10);
  assert_int_equal(s.c[0].w1, 3);
}

static void test_fixed_window_end_of_time(void** state) {
  (void)state;
  /* The last window is cut short by UINT64_MAX: the next never starts. */
  admit_quota_t q = quota1(ADMIT_FIXED_WINDOW, 2, S, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t t = UINT64_MAX - 100;
  assert_int_equal(sim_try(&s, t, 2, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, NEVER);
  assert_int_equal(sim_try(&s, UINT64_MAX, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, NEVER, NEVER);
  /* The window before it ends normally. */
  uint64_t last_start = UINT64_MAX / S * S;
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, last_start - 5, 2, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, 5);
  assert_int_equal(sim_try(&s, last_start - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, 1, 1);
  /* 1 ns windows up to the last ns. */
  q = quota1(ADMIT_FIXED_WINDOW, 1, 1, 0);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, UINT64_MAX - 1, 1, &d), 1);
  EXPECT_D(d, 1, 0, 1, 0, 0, 1);
  assert_int_equal(sim_try(&s, UINT64_MAX - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 1, 0, 1, 1);
  /* w0 = w + 1 saturates, so the last two 1 ns windows share a cell:
   * the very last one under-admits rather than wrapping to "never seen". */
  assert_int_equal(sim_try(&s, UINT64_MAX, 1, &d), 0);
  EXPECT_D(d, 0, 0, 1, 0, NEVER, NEVER);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, UINT64_MAX, 1, &d), 1);
  EXPECT_D(d, 1, 0, 1, 0, 0, NEVER);
  assert_int_equal(sim_try(&s, UINT64_MAX, 1, &d), 0);
  EXPECT_D(d, 0, 0, 1, 0, NEVER, NEVER);
}

/* ---- sliding window ------------------------------------------------------ */

static void test_sliding_weighting(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_SLIDING_WINDOW, 10, S, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  assert_int_equal(sim_try(&s, 10 * S, 10, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S);
  assert_int_equal(s.c[0].w0, 11);
  assert_int_equal(s.c[0].w1, 10);
  /* 250 ms into the next window the previous one weighs 7.5. */
  uint64_t t = 11 * S + 250 * MS;
  admit__algo_peek(&s.a, s.c, t, &d);
  EXPECT_D(d, 1, 0, 10, 2, 0, S - 250 * MS);
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  EXPECT_D(d, 1, 0, 10, 1, 0, 2 * S - 250 * MS);
  assert_int_equal(s.c[0].w0, 12);
  assert_int_equal(s.c[0].w1, 1 | (UINT64_C(10) << 32));
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S - 250 * MS);
  /* The third fits once prev weighs 7: at 300 ms, not 1 ns before. */
  assert_int_equal(sim_try(&s, t, 1, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 50 * MS, 2 * S - 250 * MS);
  assert_int_equal(sim_try(&s, 11 * S + 300 * MS - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 1, 2 * S - 300 * MS + 1);
  assert_int_equal(sim_try(&s, 11 * S + 300 * MS, 1, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S - 300 * MS);
  /* cost 2 at 300 ms: cur 3 + 2 = 5 needs prev * (P - e) <= 5 P: e = 500. */
  assert_int_equal(sim_try(&s, 11 * S + 300 * MS, 2, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 200 * MS, 2 * S - 300 * MS);
  assert_int_equal(sim_try(&s, 11 * S + 500 * MS, 2, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S - 500 * MS);
  /* Two windows later everything is forgotten. */
  assert_false(admit__algo_fresh(&s.a, s.c, 13 * S - 1));
  assert_true(admit__algo_fresh(&s.a, s.c, 13 * S));
  admit__algo_peek(&s.a, s.c, 12 * S + 900 * MS, &d);
  /* prev = 5 weighs 0.5 after 900 ms: room for floor(9.5) = 9. */
  EXPECT_D(d, 1, 0, 10, 9, 0, 100 * MS);
}

static void test_sliding_retry_next_window(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_SLIDING_WINDOW, 10, S, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  /* A full window: the next unit fits 100 ms into the next window. */
  assert_int_equal(sim_try(&s, 20 * S + 500 * MS, 10, &d), 1);
  assert_int_equal(sim_try(&s, 20 * S + 500 * MS, 1, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 600 * MS, S + 500 * MS);
  assert_int_equal(sim_try(&s, 21 * S + 100 * MS - 1, 1, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 1, 900 * MS + 1);
  assert_int_equal(sim_try(&s, 21 * S + 100 * MS, 1, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S - 100 * MS);
  /* Cost of the whole limit after a full window: the window after next. */
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 30 * S, 10, &d), 1);
  assert_int_equal(sim_try(&s, 30 * S + 1, 10, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 2 * S - 1, 2 * S - 1);
  assert_int_equal(sim_try(&s, 32 * S - 1, 10, &d), 0);
  EXPECT_D(d, 0, 0, 10, 9, 1, 1);
  assert_int_equal(sim_try(&s, 32 * S, 10, &d), 1);
  /* cur + cost == C exactly: fits at the very start of the next window. */
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 40 * S, 5, &d), 1);
  assert_int_equal(sim_try(&s, 41 * S + 500 * MS, 2, &d), 1);
  /* prev 5 weighs 2.5, cur 2: cost 3 makes 5 + 2.5 > ... no: 7.5 <= 10. */
  assert_int_equal(sim_try(&s, 41 * S + 500 * MS, 3, &d), 1);
  /* Now cur 5, prev 5 (weight 2.5): cost 5 needs prev * (P - e) <= 0,
   * which only the next window's start gives. */
  assert_int_equal(sim_try(&s, 41 * S + 500 * MS, 5, &d), 0);
  EXPECT_D(d, 0, 0, 10, 2, 500 * MS, S + 500 * MS);
  assert_int_equal(sim_try(&s, 42 * S - 1, 5, &d), 0);
  EXPECT_D(d, 0, 0, 10, 4, 1, S + 1);
  assert_int_equal(sim_try(&s, 42 * S, 5, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S);
}

static void test_sliding_refund_and_ahead(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_SLIDING_WINDOW, 10, S, 0);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  assert_int_equal(sim_try(&s, 10 * S, 6, &d), 1);
  assert_int_equal(sim_try(&s, 11 * S, 4, &d), 1);
  admit__algo_refund(&s.a, s.c, s.c, 11 * S + 5, 3, 11 * S);
  assert_int_equal(s.c[0].w1, 1 | (UINT64_C(6) << 32));
  /* Units charged to the previous window are not refunded. */
  admit__algo_refund(&s.a, s.c, s.c, 11 * S + 5, 3, 10 * S);
  assert_int_equal(s.c[0].w1, 1 | (UINT64_C(6) << 32));
  admit__algo_refund(&s.a, s.c, s.c, 12 * S, 1, 11 * S);
  assert_int_equal(s.c[0].w1, 1 | (UINT64_C(6) << 32));
  /* An older clock reading is decided at the start of the cell's window:
   * prev 6 weighs fully, cur 1: room 3, cost 4 waits. */
  assert_int_equal(sim_try(&s, 10 * S + 900 * MS, 4, &d), 0);
  /* prev*(P - e') <= (10 - 1 - 4) P: e' = ceil(P / 6) = 166666667. */
  EXPECT_D(d, 0, 0, 10, 3, 100 * MS + 166666667, 2 * S + 100 * MS);
  assert_int_equal(sim_try(&s, 10 * S + 900 * MS, 3, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S + 100 * MS);
  assert_int_equal(s.c[0].w0, 12);
  assert_int_equal(s.c[0].w1, 4 | (UINT64_C(6) << 32));
}

static void test_sliding_huge_and_tiny(void** state) {
  (void)state;
  admit_decision_t d;
  sim_t s;
  /* C * P far beyond 64 bits: UINT32_MAX per 10 years. */
  admit_quota_t q = quota1(ADMIT_SLIDING_WINDOW, UINT32_MAX, 10 * YEAR, 0);
  sim_init(&s, &q);
  uint64_t t = 10 * YEAR * 3;
  assert_int_equal(sim_try(&s, t, UINT32_MAX, &d), 1);
  EXPECT_D(d, 1, 0, UINT32_MAX, 0, 0, 20 * YEAR);
  /* Half way into the next window half of it is back. */
  uint64_t half = 5 * YEAR;
  admit__algo_peek(&s.a, s.c, t + 10 * YEAR + half, &d);
  EXPECT_D(d, 1, 0, UINT32_MAX, UINT32_MAX / 2, 0, half);
  assert_int_equal(sim_try(&s, t + 10 * YEAR, 1, &d), 0);
  /* ceil(P / UINT32_MAX) into the next window for one unit. */
  uint64_t e = (10 * YEAR + UINT32_MAX - 1) / UINT32_MAX;
  EXPECT_D(d, 0, 0, UINT32_MAX, 0, e, 10 * YEAR);
  assert_int_equal(sim_try(&s, t + 10 * YEAR + e - 1, 1, &d), 0);
  assert_int_equal(sim_try(&s, t + 10 * YEAR + e, 1, &d), 1);
  /* 1e9 per ns. */
  q = quota1(ADMIT_SLIDING_WINDOW, 1000000000, 1, 0);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 5, 1000000000, &d), 1);
  EXPECT_D(d, 1, 0, 1000000000, 0, 0, 2);
  assert_int_equal(sim_try(&s, 6, 1, &d), 0);
  EXPECT_D(d, 0, 0, 1000000000, 0, 1, 1);
  assert_int_equal(sim_try(&s, 7, 1000000000, &d), 1);
  /* The end of time. */
  q = quota1(ADMIT_SLIDING_WINDOW, 4, S, 0);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, UINT64_MAX - 5, 4, &d), 1);
  EXPECT_D(d, 1, 0, 4, 0, 0, NEVER);
  assert_int_equal(sim_try(&s, UINT64_MAX, 1, &d), 0);
  EXPECT_D(d, 0, 0, 4, 0, NEVER, NEVER);
}

/* ---- several rates ------------------------------------------------------- */

static void test_multi_all_or_nothing(void** state) {
  (void)state;
  /* 2/s and 3/min, bursts = counts: T = 500 ms and 20 s. */
  uint64_t counts[2] = {2, 3}, periods[2] = {S, 60 * S};
  admit_quota_t q = quota(ADMIT_TOKEN_BUCKET, 2, counts, periods, NULL);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t t = 100 * S;
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  /* Remaining: 1 and 2, the smallest decides. */
  EXPECT_D(d, 1, 0, 2, 1, 0, 20 * S);
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, 40 * S);
  /* The minute limit has room, the second limit not: nothing consumed. */
  assert_int_equal(sim_try(&s, t, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, 500 * MS, 40 * S);
  assert_int_equal(s.c[1].w0, t + 40 * S);
  assert_int_equal(sim_try(&s, t + 500 * MS, 1, &d), 1);
  /* Remaining 0 and 0: a tie goes to the lowest index. */
  EXPECT_D(d, 1, 0, 2, 0, 0, 60 * S - 500 * MS);
  /* Now the second limit has room, the minute one not: the minute
   * limit decides and the second limit is not consumed either. */
  assert_int_equal(sim_try(&s, t + 2 * S, 1, &d), 0);
  EXPECT_D(d, 0, 1, 3, 0, 18 * S, 58 * S);
  assert_int_equal(s.c[0].w0, t + 1500 * MS);
  assert_int_equal(sim_try(&s, t + 20 * S - 1, 2, &d), 0);
  EXPECT_D(d, 0, 1, 3, 0, 20 * S + 1, 40 * S + 1);
  assert_int_equal(sim_try(&s, t + 20 * S, 1, &d), 1);
  EXPECT_D(d, 1, 1, 3, 0, 0, 60 * S);

  /* Windows, the same rule: 2/s and 3 per 10 s. */
  periods[1] = 10 * S;
  q = quota(ADMIT_FIXED_WINDOW, 2, counts, periods, NULL);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 20 * S, 2, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, 10 * S);
  assert_int_equal(sim_try(&s, 20 * S, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, S, 10 * S);
  assert_int_equal(sim_try(&s, 21 * S, 2, &d), 0);
  EXPECT_D(d, 0, 1, 3, 1, 9 * S, 9 * S);
  assert_int_equal(s.c[0].w0, 21);
  assert_int_equal(sim_try(&s, 21 * S, 1, &d), 1);
  EXPECT_D(d, 1, 1, 3, 0, 0, 9 * S);
  assert_int_equal(sim_try(&s, 29 * S, 1, &d), 0);
  EXPECT_D(d, 0, 1, 3, 0, S, S);
  assert_int_equal(sim_try(&s, 30 * S, 2, &d), 1);

  q = quota(ADMIT_SLIDING_WINDOW, 2, counts, periods, NULL);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, 20 * S, 2, &d), 1);
  /* The second limit would wait 1 s; the 10 s limit has 2 of 3 used and
   * needs its next window plus 5 s (prev 2 must weigh <= 1): 14 s. */
  assert_int_equal(sim_try(&s, 21 * S, 2, &d), 0);
  EXPECT_D(d, 0, 1, 3, 1, 14 * S, 19 * S);
  assert_int_equal(s.c[1].w1, 2);
  assert_int_equal(sim_try(&s, 22 * S, 2, &d), 0);
  EXPECT_D(d, 0, 1, 3, 1, 13 * S, 18 * S);
  assert_int_equal(sim_try(&s, 35 * S - 1, 2, &d), 0);
  EXPECT_D(d, 0, 1, 3, 1, 1, 5 * S + 1);
  assert_int_equal(sim_try(&s, 35 * S, 2, &d), 1);
}

static void test_multi_reserve_charges_at_ready(void** state) {
  (void)state;
  /* 1/s burst 1, and 10/s burst 10. A reservation that waits 1 s for the
   * first rate is charged to the second as of when it runs. */
  uint64_t counts[2] = {1, 10}, periods[2] = {S, S}, bursts[2] = {1, 10};
  admit_quota_t q = quota(ADMIT_TOKEN_BUCKET, 2, counts, periods, bursts);
  sim_t s;
  sim_init(&s, &q);
  admit_decision_t d;
  uint64_t t = 9 * S, wait = 0;
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  assert_int_equal(s.c[1].w0, t + 100 * MS);
  assert_int_equal(admit__algo_reserve(&s.a, s.c, s.c, t, 1, S, &wait, &d),
                   1);
  assert_int_equal(wait, S);
  assert_int_equal(s.c[0].w0, t + 2 * S);
  assert_int_equal(s.c[1].w0, t + S + 100 * MS);
  /* Remaining now: 0 for the first rate (reserved ahead), the second
   * rate has 1100 ms of backlog: floor((1000 - 1100) / 100) = 0. */
  EXPECT_D(d, 1, 0, 1, 0, 0, 2 * S);
  /* Too long a wait: nothing changes. */
  admit__cell_t before[2];
  memcpy(before, s.c, sizeof(before));
  assert_int_equal(
      admit__algo_reserve(&s.a, s.c, s.c, t, 1, 2 * S - 1, &wait, &d), 0);
  assert_int_equal(wait, 2 * S);
  EXPECT_D(d, 0, 0, 1, 0, 2 * S, 2 * S);
  assert_memory_equal(before, s.c, sizeof(before));
  /* Windows never reserve the future. */
  q = quota(ADMIT_FIXED_WINDOW, 2, counts, periods, NULL);
  sim_init(&s, &q);
  assert_int_equal(sim_try(&s, t, 1, &d), 1);
  assert_int_equal(
      admit__algo_reserve(&s.a, s.c, s.c, t, 1, ADMIT_FOREVER, &wait, &d), 0);
  assert_int_equal(wait, S);
  EXPECT_D(d, 0, 0, 1, 0, S, S);
}

static void test_peek_and_fresh(void** state) {
  (void)state;
  for (int algo = 0; algo < 3; algo++) {
    uint64_t counts[3] = {5, 20, 100}, periods[3] = {S, 10 * S, 100 * S};
    admit_quota_t q = quota((admit_algo_t)algo, 3, counts, periods, NULL);
    sim_t s;
    sim_init(&s, &q);
    admit_decision_t d;
    uint64_t t = 1000 * S;
    assert_true(admit__algo_fresh(&s.a, s.c, t));
    admit__algo_peek(&s.a, s.c, t, &d);
    EXPECT_D(d, 1, 0, 5, 5, 0, 0);
    assert_int_equal(sim_try(&s, t, 4, &d), 1);
    assert_false(admit__algo_fresh(&s.a, s.c, t));
    admit__algo_peek(&s.a, s.c, t, &d);
    assert_int_equal(d.allowed, 1);
    assert_int_equal(d.limiting, 0);
    assert_int_equal(d.remaining, 1);
    /* A peek consumed nothing. */
    assert_int_equal(sim_try(&s, t, 1, &d), 1);
    assert_int_equal(d.remaining, 0);
    assert_true(admit__algo_fresh(&s.a, s.c, t + 1000 * S));
  }
}

/* ---- bounds over time ----------------------------------------------------- */

/* Random small quotas and random demand, every ns: what was admitted since
 * the first request never exceeds the algorithm's bound, checked after
 * every decision. The sliding-window bound C + C * elapsed / P is tight
 * (some patterns reach it), and these runs reach it too. */
static void test_bounds_brute_force(void** state) {
  (void)state;
  uint64_t seed = 99;
  uint64_t reached[3] = {0, 0, 0};
  for (int iter = 0; iter < 6000; iter++) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    admit_algo_t algo = (admit_algo_t)(iter % 3);
    uint64_t C = 1 + (seed >> 40) % 6, P = C + (seed >> 50) % 12;
    uint64_t B = algo == ADMIT_TOKEN_BUCKET ? (seed >> 20) % 5 : 0;
    admit_quota_t q = quota1(algo, C, P, B);
    sim_t s;
    sim_init(&s, &q);
    uint64_t t0 = 1000 + (seed >> 30) % 50, n = 0;
    uint64_t T = s.a.r[0].interval_ns, L = s.a.r[0].limit;
    for (uint64_t t = t0; t < t0 + 8 * P; t++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      for (uint64_t k = 0; k < (seed >> 60) % 4; k++) {
        uint64_t cost = 1 + ((seed >> (8 * k)) & 0xff) % L;
        admit_decision_t d;
        if (admit__algo_decide(&s.a, s.c, s.c, t, cost, &d) == 1) n += cost;
        uint64_t bound;
        if (algo == ADMIT_TOKEN_BUCKET) {
          bound = L + (t - t0) / T;
        } else if (algo == ADMIT_FIXED_WINDOW) {
          bound = C * (t / P - t0 / P + 1);
        } else {
          bound = C + C * (t - t0) / P;
        }
        assert_true(n <= bound);
        if (n == bound) reached[algo]++;
      }
    }
  }
  assert_true(reached[0] > 0 && reached[1] > 0 && reached[2] > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_rejects),
      cmocka_unit_test(test_init_params),
      cmocka_unit_test(test_bad_cost),
      cmocka_unit_test(test_bucket_burst_then_rate),
      cmocka_unit_test(test_bucket_rounding),
      cmocka_unit_test(test_bucket_reserve),
      cmocka_unit_test(test_bucket_end_of_time),
      cmocka_unit_test(test_bucket_huge_and_tiny_rates),
      cmocka_unit_test(test_fixed_window_edges),
      cmocka_unit_test(test_fixed_window_refund),
      cmocka_unit_test(test_fixed_window_ahead),
      cmocka_unit_test(test_fixed_window_end_of_time),
      cmocka_unit_test(test_sliding_weighting),
      cmocka_unit_test(test_sliding_retry_next_window),
      cmocka_unit_test(test_sliding_refund_and_ahead),
      cmocka_unit_test(test_sliding_huge_and_tiny),
      cmocka_unit_test(test_multi_all_or_nothing),
      cmocka_unit_test(test_multi_reserve_charges_at_ready),
      cmocka_unit_test(test_peek_and_fresh),
      cmocka_unit_test(test_bounds_brute_force),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
