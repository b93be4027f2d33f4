/* admit_limiter_t on the fake clock: exact decisions, reserve/cancel,
 * acquire (how long it sleeps, and that it does not sleep when it cannot
 * succeed), reset, and bad input for every public function. */
#include "helpers.h"

#include "algo.h"

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define S ((uint64_t)ADMIT_SECOND)
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

static admit_quota_t quota1(admit_algo_t algo, uint64_t count,
                            uint64_t period, uint64_t burst) {
  admit_quota_t q;
  memset(&q, 0, sizeof(q));
  q.algo = algo;
  q.nrates = 1;
  q.rates[0].count = count;
  q.rates[0].period_ns = period;
  q.burst[0] = burst;
  return q;
}

static admit_quota_t quota2(admit_algo_t algo, uint64_t c0, uint64_t p0,
                            uint64_t c1, uint64_t p1) {
  admit_quota_t q = quota1(algo, c0, p0, 0);
  q.nrates = 2;
  q.rates[1].count = c1;
  q.rates[1].period_ns = p1;
  return q;
}

typedef struct fx_s {
  fake_clock_t fc;
  admit_clock_t clk;
  admit_limiter_t* l;
} fx_t;

static void fx_new(fx_t* f, const admit_quota_t* q, uint64_t start) {
  f->clk = fake_clock(&f->fc, start);
  f->l = NULL;
  assert_int_equal(admit_limiter_new(&f->l, q, &f->clk), 0);
  assert_non_null(f->l);
}

static void fx_at(fx_t* f, uint64_t t) { atomic_store(&f->fc.now, t); }

static int fx_try(fx_t* f, uint64_t cost, admit_decision_t* d) {
  memset(d, 0xee, sizeof(*d));
  int rc = admit_limiter_try(f->l, cost, d);
  assert_int_equal(rc, 0);
  return d->allowed;
}

/* ---- bad input ----------------------------------------------------------- */

static void test_bad_input(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 0);
  admit_limiter_t* l = (admit_limiter_t*)0x1;
  assert_int_equal(admit_limiter_new(NULL, &q, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_limiter_new(&l, NULL, NULL), ADMIT_EINVAL);
  assert_null(l);

  admit_quota_t bad[12];
  int nbad = 0;
  bad[nbad++] = quota1((admit_algo_t)3, 10, S, 0);
  bad[nbad++] = quota1((admit_algo_t)-1, 10, S, 0);
  bad[nbad++] = quota1(ADMIT_TOKEN_BUCKET, 0, S, 0);
  bad[nbad++] = quota1(ADMIT_FIXED_WINDOW, 10, 0, 0);
  bad[nbad++] = quota1(ADMIT_SLIDING_WINDOW, 0, 0, 0);
  bad[nbad++] = quota1(ADMIT_TOKEN_BUCKET, 2 * S, S, 0);
  bad[nbad++] = quota1(ADMIT_TOKEN_BUCKET, 1, S, UINT64_MAX / 2);
  bad[nbad++] = quota1(ADMIT_FIXED_WINDOW, (uint64_t)UINT32_MAX + 1, S, 0);
  bad[nbad++] = quota1(ADMIT_SLIDING_WINDOW, UINT64_MAX, S, 0);
  bad[nbad] = quota1(ADMIT_TOKEN_BUCKET, 10, S, 0);
  bad[nbad++].nrates = 0;
  bad[nbad] = quota1(ADMIT_TOKEN_BUCKET, 10, S, 0);
  bad[nbad++].nrates = ADMIT_RATES_MAX + 1;
  bad[nbad++] = quota2(ADMIT_FIXED_WINDOW, 10, S, 10, 0);
  for (int i = 0; i < nbad; i++) {
    l = (admit_limiter_t*)0x1;
    assert_int_equal(admit_quota_validate(&bad[i]), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_new(&l, &bad[i], NULL), ADMIT_EINVAL);
    assert_null(l);
  }
  assert_int_equal(admit_quota_validate(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_quota_validate(&q), 0);

  admit_limiter_free(NULL);
  admit_limiter_reset(NULL);
  admit_decision_t d;
  admit_reservation_t r;
  memset(&r, 0, sizeof(r));
  assert_int_equal(admit_limiter_try(NULL, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_limiter_peek(NULL, &d), ADMIT_EINVAL);
  assert_int_equal(admit_limiter_reserve(NULL, 1, 0, &r, &d), ADMIT_EINVAL);
  assert_int_equal(admit_limiter_cancel(NULL, &r), ADMIT_EINVAL);
  assert_int_equal(admit_limiter_acquire(NULL, 1, 0, &d), ADMIT_EINVAL);
  assert_int_equal(admit_limiter_quota(NULL, &q), ADMIT_EINVAL);

  /* Every shape of limiter rejects the same things. */
  admit_quota_t shapes[4] = {
      quota1(ADMIT_TOKEN_BUCKET, 10, S, 5),
      quota1(ADMIT_FIXED_WINDOW, 5, S, 0),
      quota1(ADMIT_SLIDING_WINDOW, 5, S, 0),
      quota2(ADMIT_TOKEN_BUCKET, 5, S, 100, 60 * S),
  };
  for (int i = 0; i < 4; i++) {
    fx_t f, g;
    fx_new(&f, &shapes[i], 10 * S);
    fx_new(&g, &shapes[i], 10 * S);
    assert_int_equal(admit_limiter_try(f.l, 1, NULL), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_try(f.l, 0, &d), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_try(f.l, 6, &d), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_try(f.l, UINT64_MAX, &d), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_peek(f.l, NULL), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_reserve(f.l, 1, 0, NULL, &d),
                     ADMIT_EINVAL);
    assert_int_equal(admit_limiter_reserve(f.l, 0, 0, &r, &d), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_reserve(f.l, 6, ADMIT_FOREVER, &r, &d),
                     ADMIT_EINVAL);
    assert_int_equal(admit_limiter_acquire(f.l, 0, S, &d), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_acquire(f.l, 6, ADMIT_FOREVER, NULL),
                     ADMIT_EINVAL);
    assert_int_equal(admit_limiter_quota(f.l, NULL), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_cancel(f.l, NULL), ADMIT_EINVAL);
    /* A zeroed, a foreign and a tampered reservation. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(admit_limiter_cancel(f.l, &r), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_reserve(g.l, 2, 0, &r, &d), 0);
    assert_int_equal(admit_limiter_cancel(f.l, &r), ADMIT_EINVAL);
    admit_reservation_t t = r;
    t.cost = 0;
    assert_int_equal(admit_limiter_cancel(g.l, &t), ADMIT_EINVAL);
    t.cost = 6;
    assert_int_equal(admit_limiter_cancel(g.l, &t), ADMIT_EINVAL);
    t = r;
    t.reserved = 7;
    assert_int_equal(admit_limiter_cancel(g.l, &t), ADMIT_EINVAL);
    assert_int_equal(admit_limiter_cancel(g.l, &r), 0);
    /* Nothing was consumed by any of it, and nothing slept. */
    admit_limiter_peek(f.l, &d);
    assert_int_equal(d.remaining, 5);
    admit_limiter_peek(g.l, &d);
    assert_int_equal(d.remaining, 5);
    assert_int_equal(atomic_load(&f.fc.sleeps), 0);
    admit_limiter_free(f.l);
    admit_limiter_free(g.l);
  }
}

static void test_quota_copy_and_parse(void** state) {
  (void)state;
  admit_quota_t q, out;
  assert_int_equal(
      admit_quota_parse(&q, ADMIT_SLIDING_WINDOW, "10/minute;100/hour", NULL),
      0);
  assert_int_equal(admit_quota_validate(&q), 0);
  fx_t f;
  fx_new(&f, &q, 3600 * S);
  memset(&out, 0xab, sizeof(out));
  assert_int_equal(admit_limiter_quota(f.l, &out), 0);
  assert_memory_equal(&out, &q, sizeof(q));
  /* All-or-nothing with a parsed spec: 10 in the first minute. */
  admit_decision_t d;
  assert_int_equal(fx_try(&f, 10, &d), 1);
  /* The hour limit is fresh only two hours later. */
  EXPECT_D(d, 1, 0, 10, 0, 0, 7200 * S);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  /* Next minute's start: prev 10 weighs fully, so 6 s into it 1 fits. */
  EXPECT_D(d, 0, 0, 10, 0, 66 * S, 7200 * S);
  admit_limiter_free(f.l);

  /* The real clock when none is given, or when now_ns is NULL. */
  admit_limiter_t* l;
  q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 0);
  assert_int_equal(admit_limiter_new(&l, &q, NULL), 0);
  assert_int_equal(admit_limiter_try(l, 10, &d), 0);
  assert_int_equal(d.allowed, 1);
  assert_int_equal(admit_limiter_try(l, 10, &d), 0);
  assert_int_equal(d.allowed, 0);
  assert_true(d.retry_after_ns > 0 && d.retry_after_ns <= S);
  admit_limiter_free(l);
  admit_clock_t half = {NULL, NULL, NULL};
  q = quota1(ADMIT_FIXED_WINDOW, 3, 3600 * S, 0);
  assert_int_equal(admit_limiter_new(&l, &q, &half), 0);
  assert_int_equal(admit_limiter_try(l, 3, &d), 0);
  assert_int_equal(d.allowed, 1);
  assert_int_equal(admit_limiter_try(l, 1, &d), 0);
  assert_int_equal(d.allowed, 0);
  admit_limiter_free(l);
}

/* ---- decisions ----------------------------------------------------------- */

static void test_bucket_exact(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 5);
  fx_t f;
  fx_new(&f, &q, 1000 * S);
  admit_decision_t d;
  for (uint64_t i = 1; i <= 5; i++) {
    assert_int_equal(fx_try(&f, 1, &d), 1);
    EXPECT_D(d, 1, 0, 5, 5 - i, 0, i * 100 * MS);
  }
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, 100 * MS, 500 * MS);
  assert_int_equal(fx_try(&f, 2, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, 200 * MS, 500 * MS);
  for (uint64_t k = 1; k <= 20; k++) {
    fx_at(&f, 1000 * S + k * 100 * MS - 1);
    assert_int_equal(fx_try(&f, 1, &d), 0);
    EXPECT_D(d, 0, 0, 5, 0, 1, 400 * MS + 1);
    fake_advance(&f.fc, 1);
    assert_int_equal(fx_try(&f, 1, &d), 1);
    EXPECT_D(d, 1, 0, 5, 0, 0, 500 * MS);
  }
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 5, 0, 0, 500 * MS);
  fake_advance(&f.fc, 350 * MS);
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 5, 3, 0, 150 * MS);
  admit_limiter_reset(f.l);
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 5, 5, 0, 0);
  assert_int_equal(fx_try(&f, 5, &d), 1);
  admit_limiter_free(f.l);
}

static void test_bucket_end_of_time(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 1, S, 5);
  fx_t f;
  fx_new(&f, &q, UINT64_MAX - 3 * S);
  admit_decision_t d;
  assert_int_equal(fx_try(&f, 2, &d), 1);
  EXPECT_D(d, 1, 0, 5, 1, 0, 2 * S);
  assert_int_equal(fx_try(&f, 1, &d), 1);
  EXPECT_D(d, 1, 0, 5, 0, 0, 3 * S);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, NEVER, 3 * S);
  /* Never fits, so even a wait without deadline does not sleep. */
  assert_int_equal(admit_limiter_acquire(f.l, 1, ADMIT_FOREVER, &d),
                   ADMIT_ETIMEDOUT);
  EXPECT_D(d, 0, 0, 5, 0, NEVER, 3 * S);
  assert_int_equal(atomic_load(&f.fc.sleeps), 0);
  fx_at(&f, UINT64_MAX);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 5, 0, NEVER, 0);
  admit_limiter_free(f.l);
}

static void test_fixed_exact(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_FIXED_WINDOW, 3, S, 0);
  fx_t f;
  fx_new(&f, &q, 10 * S + 500 * MS);
  admit_decision_t d;
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 3, 3, 0, 0);
  for (uint64_t i = 1; i <= 3; i++) {
    assert_int_equal(fx_try(&f, 1, &d), 1);
    EXPECT_D(d, 1, 0, 3, 3 - i, 0, 500 * MS);
  }
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 3, 0, 500 * MS, 500 * MS);
  fx_at(&f, 11 * S - 1);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 3, 0, 1, 1);
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 3, 0, 0, 1);
  /* The documented 2x across the edge: 3 at 11 s - 1 ns was refused only
   * because the window was full; a fresh limiter admits 3 + 3 in 1 ns. */
  fx_at(&f, 11 * S);
  assert_int_equal(fx_try(&f, 1, &d), 1);
  EXPECT_D(d, 1, 0, 3, 2, 0, S);
  admit_limiter_free(f.l);

  fx_new(&f, &q, 21 * S - 1);
  assert_int_equal(fx_try(&f, 3, &d), 1);
  EXPECT_D(d, 1, 0, 3, 0, 0, 1);
  fake_advance(&f.fc, 1);
  assert_int_equal(fx_try(&f, 3, &d), 1);
  EXPECT_D(d, 1, 0, 3, 0, 0, S);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  /* Long idle, then reset. */
  fake_advance(&f.fc, 1000000 * S + 10);
  assert_int_equal(fx_try(&f, 2, &d), 1);
  EXPECT_D(d, 1, 0, 3, 1, 0, S - 10);
  admit_limiter_reset(f.l);
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 3, 3, 0, 0);
  assert_int_equal(fx_try(&f, 3, &d), 1);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  admit_limiter_free(f.l);
}

static void test_fixed_packing_limits(void** state) {
  (void)state;
  admit_decision_t d;
  fx_t f;
  /* The largest count: the count field takes 32 bits. */
  admit_quota_t q = quota1(ADMIT_FIXED_WINDOW, UINT32_MAX, S, 0);
  fx_new(&f, &q, 5 * S);
  assert_int_equal(fx_try(&f, UINT32_MAX - 1, &d), 1);
  EXPECT_D(d, 1, 0, UINT32_MAX, 1, 0, S);
  assert_int_equal(fx_try(&f, 1, &d), 1);
  EXPECT_D(d, 1, 0, UINT32_MAX, 0, 0, S);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, UINT32_MAX, 0, S, S);
  fake_advance(&f.fc, S);
  assert_int_equal(fx_try(&f, UINT32_MAX, &d), 1);
  admit_limiter_free(f.l);

  /* Tag wraparound, documented: 2^31 per 1 ns leaves a 32-bit tag, so a
   * word untouched for exactly 2^32 windows looks current and that one
   * window under-admits; one window more or less and it is stale. */
  q = quota1(ADMIT_FIXED_WINDOW, UINT64_C(1) << 31, 1, 0);
  uint64_t wrap = UINT64_C(1) << 32;
  for (int k = -1; k <= 1; k++) {
    fx_new(&f, &q, 1000);
    assert_int_equal(fx_try(&f, UINT64_C(1) << 31, &d), 1);
    fx_at(&f, 1000 + wrap + (uint64_t)k);
    assert_int_equal(fx_try(&f, UINT64_C(1) << 31, &d), k != 0);
    if (k == 0) EXPECT_D(d, 0, 0, UINT64_C(1) << 31, 0, 1, 1);
    admit_limiter_free(f.l);
  }

  /* Created near the end of time: the last window never ends. */
  q = quota1(ADMIT_FIXED_WINDOW, 2, S, 0);
  fx_new(&f, &q, UINT64_MAX - 100);
  assert_int_equal(fx_try(&f, 2, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, NEVER);
  fx_at(&f, UINT64_MAX);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, NEVER, NEVER);
  assert_int_equal(admit_limiter_acquire(f.l, 1, ADMIT_FOREVER, &d),
                   ADMIT_ETIMEDOUT);
  assert_int_equal(atomic_load(&f.fc.sleeps), 0);
  admit_limiter_free(f.l);
  /* And one window before the end. */
  uint64_t last = UINT64_MAX / S * S;
  fx_new(&f, &q, last - 10);
  assert_int_equal(fx_try(&f, 2, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, 10);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, 10, 10);
  fx_at(&f, last);
  assert_int_equal(fx_try(&f, 2, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, NEVER);
  admit_limiter_free(f.l);
}

static void test_sliding_exact(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_SLIDING_WINDOW, 10, S, 0);
  fx_t f;
  fx_new(&f, &q, 10 * S);
  admit_decision_t d;
  assert_int_equal(fx_try(&f, 10, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S);
  fx_at(&f, 11 * S + 250 * MS);
  assert_int_equal(fx_try(&f, 2, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S - 250 * MS);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 50 * MS, 2 * S - 250 * MS);
  fx_at(&f, 11 * S + 300 * MS - 1);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 10, 0, 1, 2 * S - 300 * MS + 1);
  fake_advance(&f.fc, 1);
  assert_int_equal(fx_try(&f, 1, &d), 1);
  EXPECT_D(d, 1, 0, 10, 0, 0, 2 * S - 300 * MS);
  admit_limiter_reset(f.l);
  assert_int_equal(fx_try(&f, 10, &d), 1);
  admit_limiter_free(f.l);
}

static void test_multi_all_or_nothing(void** state) {
  (void)state;
  /* "2/s;3/min" as a bucket: a refused minute limit leaves the second
   * limit untouched. */
  admit_quota_t q = quota2(ADMIT_TOKEN_BUCKET, 2, S, 3, 60 * S);
  fx_t f;
  uint64_t t = 100 * S;
  fx_new(&f, &q, t);
  admit_decision_t d;
  assert_int_equal(fx_try(&f, 2, &d), 1);
  EXPECT_D(d, 1, 0, 2, 0, 0, 40 * S);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, 500 * MS, 40 * S);
  fx_at(&f, t + S);
  assert_int_equal(fx_try(&f, 1, &d), 1);
  EXPECT_D(d, 1, 1, 3, 0, 0, 60 * S - S);
  fx_at(&f, t + 2 * S);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(fx_try(&f, 1, &d), 0);
    EXPECT_D(d, 0, 1, 3, 0, 18 * S, 58 * S);
  }
  /* The second limit still has its full burst. */
  fx_at(&f, t + 20 * S);
  assert_int_equal(fx_try(&f, 1, &d), 1);
  EXPECT_D(d, 1, 1, 3, 0, 0, 60 * S);
  admit_limiter_free(f.l);

  q = quota2(ADMIT_FIXED_WINDOW, 2, S, 3, 10 * S);
  fx_new(&f, &q, 20 * S);
  assert_int_equal(fx_try(&f, 2, &d), 1);
  fx_at(&f, 21 * S);
  assert_int_equal(fx_try(&f, 2, &d), 0);
  EXPECT_D(d, 0, 1, 3, 1, 9 * S, 9 * S);
  assert_int_equal(fx_try(&f, 1, &d), 1);
  EXPECT_D(d, 1, 1, 3, 0, 0, 9 * S);
  fx_at(&f, 22 * S);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 1, 3, 0, 8 * S, 8 * S);
  admit_limiter_free(f.l);
}

/* ---- reserve and cancel -------------------------------------------------- */

static void test_bucket_reserve_cancel(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 1, S, 2);
  fx_t f;
  uint64_t t = 50 * S;
  fx_new(&f, &q, t);
  admit_decision_t d;
  admit_reservation_t r1, r2, r3;
  assert_int_equal(admit_limiter_reserve(f.l, 2, 0, &r1, &d), 0);
  assert_int_equal(r1.reserved, 1);
  assert_int_equal(r1.cost, 2);
  assert_int_equal(r1.wait_ns, 0);
  assert_int_equal(r1.ready_at_ns, t);
  EXPECT_D(d, 1, 0, 2, 0, 0, 2 * S);
  /* A wait longer than allowed takes nothing and says how long. */
  assert_int_equal(admit_limiter_reserve(f.l, 1, S - 1, &r2, &d),
                   ADMIT_ETIMEDOUT);
  EXPECT_D(d, 0, 0, 2, 0, S, 2 * S);
  assert_int_equal(admit_limiter_reserve(f.l, 1, S, &r2, NULL), 0);
  assert_int_equal(r2.reserved, 1);
  assert_int_equal(r2.wait_ns, S);
  assert_int_equal(r2.ready_at_ns, t + S);
  assert_int_equal(admit_limiter_reserve(f.l, 2, ADMIT_FOREVER, &r3, &d), 0);
  assert_int_equal(r3.wait_ns, 3 * S);
  EXPECT_D(d, 1, 0, 2, 0, 0, 5 * S);
  /* Tries queue behind the reservations. */
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, 4 * S, 5 * S);
  /* Cancelling gives the units back: the last one's two seconds. */
  assert_int_equal(admit_limiter_cancel(f.l, &r3), 0);
  assert_int_equal(fx_try(&f, 1, &d), 0);
  EXPECT_D(d, 0, 0, 2, 0, 2 * S, 3 * S);
  assert_int_equal(admit_limiter_cancel(f.l, &r2), 0);
  assert_int_equal(admit_limiter_cancel(f.l, &r1), 0);
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 2, 2, 0, 0);
  /* A reservation from before a reset is not refunded into the new
   * state. */
  assert_int_equal(admit_limiter_reserve(f.l, 2, 0, &r1, &d), 0);
  admit_limiter_reset(f.l);
  assert_int_equal(admit_limiter_reserve(f.l, 2, 0, &r2, &d), 0);
  assert_int_equal(admit_limiter_cancel(f.l, &r1), 0);
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 2, 0, 0, 2 * S);
  assert_int_equal(admit_limiter_cancel(f.l, &r2), 0);
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 2, 2, 0, 0);
  admit_limiter_free(f.l);
}

static void test_window_reserve_cancel(void** state) {
  (void)state;
  for (int algo = 1; algo <= 2; algo++) {
    admit_quota_t q = quota1((admit_algo_t)algo, 4, S, 0);
    fx_t f;
    fx_new(&f, &q, 30 * S + 500 * MS);
    admit_decision_t d;
    admit_reservation_t r1, r2;
    assert_int_equal(admit_limiter_reserve(f.l, 3, 0, &r1, &d), 0);
    assert_int_equal(r1.reserved, 1);
    assert_int_equal(r1.wait_ns, 0);
    assert_int_equal(d.allowed, 1);
    assert_int_equal(d.remaining, 1);
    /* A window cannot hold a place in the next window: not reserved,
     * come back in wait_ns. */
    memset(&r2, 0, sizeof(r2));
    assert_int_equal(admit_limiter_reserve(f.l, 2, S, &r2, &d), 0);
    assert_int_equal(r2.reserved, 0);
    assert_int_equal(d.allowed, 0);
    /* Sliding: cost 2 fits in the next window once prev 3 weighs 2. */
    uint64_t wait = algo == 1 ? 500 * MS : 500 * MS + 333333334;
    assert_int_equal(r2.wait_ns, wait);
    assert_int_equal(d.retry_after_ns, wait);
    assert_int_equal(r2.ready_at_ns, 30 * S + 500 * MS + wait);
    assert_int_equal(admit_limiter_reserve(f.l, 2, wait - 1, &r2, &d),
                     ADMIT_ETIMEDOUT);
    /* Cancelling a non-reservation changes nothing. */
    assert_int_equal(admit_limiter_cancel(f.l, &r2), 0);
    admit_limiter_peek(f.l, &d);
    assert_int_equal(d.remaining, 1);
    /* Within the window the units come back. */
    fake_advance(&f.fc, 100 * MS);
    assert_int_equal(admit_limiter_cancel(f.l, &r1), 0);
    admit_limiter_peek(f.l, &d);
    assert_int_equal(d.remaining, 4);
    /* Not after the window ended. */
    assert_int_equal(admit_limiter_reserve(f.l, 4, 0, &r1, &d), 0);
    fx_at(&f, 31 * S);
    assert_int_equal(admit_limiter_cancel(f.l, &r1), 0);
    admit_limiter_peek(f.l, &d);
    assert_int_equal(d.remaining, algo == 1 ? 4 : 0);
    admit_limiter_free(f.l);
  }
}

static void test_multi_reserve_cancel(void** state) {
  (void)state;
  admit_quota_t q = quota2(ADMIT_TOKEN_BUCKET, 1, S, 10, S);
  q.burst[0] = 1;
  fx_t f;
  uint64_t t = 9 * S;
  fx_new(&f, &q, t);
  admit_decision_t d;
  admit_reservation_t r1, r2;
  assert_int_equal(admit_limiter_reserve(f.l, 1, 0, &r1, &d), 0);
  assert_int_equal(admit_limiter_reserve(f.l, 1, S, &r2, &d), 0);
  assert_int_equal(r2.wait_ns, S);
  EXPECT_D(d, 1, 0, 1, 0, 0, 2 * S);
  assert_int_equal(admit_limiter_cancel(f.l, &r2), 0);
  assert_int_equal(admit_limiter_cancel(f.l, &r1), 0);
  /* The 10/s rate was charged as of t + 1 s, when r2 would have run; the
   * refund gives back its 100 ms but not the 900 ms it skipped ahead, so
   * it stays conservative for 900 ms. */
  admit_limiter_peek(f.l, &d);
  EXPECT_D(d, 1, 0, 1, 1, 0, 900 * MS);
  admit_limiter_free(f.l);
}

/* ---- acquire ------------------------------------------------------------- */

static void test_acquire_bucket(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_TOKEN_BUCKET, 10, S, 2);
  fx_t f;
  uint64_t t = 70 * S;
  fx_new(&f, &q, t);
  admit_decision_t d;
  assert_int_equal(admit_limiter_acquire(f.l, 2, 0, &d), 0);
  EXPECT_D(d, 1, 0, 2, 0, 0, 200 * MS);
  assert_int_equal(atomic_load(&f.fc.sleeps), 0);
  /* Does not fit 99 ms: refused at once, without sleeping. */
  assert_int_equal(admit_limiter_acquire(f.l, 1, 100 * MS - 1, &d),
                   ADMIT_ETIMEDOUT);
  EXPECT_D(d, 0, 0, 2, 0, 100 * MS, 200 * MS);
  assert_int_equal(atomic_load(&f.fc.sleeps), 0);
  assert_int_equal(atomic_load(&f.fc.now), t);
  /* Fits: sleeps exactly the wait, once. */
  assert_int_equal(admit_limiter_acquire(f.l, 1, 100 * MS, &d), 0);
  assert_int_equal(d.allowed, 1);
  assert_int_equal(atomic_load(&f.fc.sleeps), 1);
  assert_int_equal(atomic_load(&f.fc.slept), 100 * MS);
  assert_int_equal(atomic_load(&f.fc.now), t + 100 * MS);
  /* Forever: the wait is whatever it takes. */
  assert_int_equal(admit_limiter_acquire(f.l, 2, ADMIT_FOREVER, NULL), 0);
  assert_int_equal(atomic_load(&f.fc.sleeps), 2);
  assert_int_equal(atomic_load(&f.fc.slept), 300 * MS);
  admit_limiter_free(f.l);

  /* Two rates: the longer wait decides. */
  q = quota2(ADMIT_TOKEN_BUCKET, 10, S, 20, 10 * S);
  fx_new(&f, &q, t);
  assert_int_equal(admit_limiter_acquire(f.l, 10, 0, &d), 0);
  assert_int_equal(admit_limiter_acquire(f.l, 10, 2 * S, &d), 0);
  assert_int_equal(atomic_load(&f.fc.slept), S);
  /* Cost 5 at t + 1 s: the first rate waits 500 ms, the second 1.5 s. */
  assert_int_equal(admit_limiter_acquire(f.l, 5, 500 * MS, &d),
                   ADMIT_ETIMEDOUT);
  EXPECT_D(d, 0, 1, 20, 2, 1500 * MS, 9 * S);
  assert_int_equal(atomic_load(&f.fc.sleeps), 1);
  assert_int_equal(admit_limiter_acquire(f.l, 5, 1500 * MS, &d), 0);
  assert_int_equal(atomic_load(&f.fc.slept), S + 1500 * MS);
  admit_limiter_free(f.l);
}

static void test_acquire_windows(void** state) {
  (void)state;
  for (int algo = 1; algo <= 2; algo++) {
    admit_quota_t q = quota1((admit_algo_t)algo, 4, S, 0);
    fx_t f;
    uint64_t t = 30 * S + 500 * MS;
    fx_new(&f, &q, t);
    admit_decision_t d;
    assert_int_equal(admit_limiter_acquire(f.l, 4, 0, &d), 0);
    uint64_t wait = algo == 1 ? 500 * MS : 500 * MS + 250 * MS;
    assert_int_equal(admit_limiter_acquire(f.l, 1, wait - 1, &d),
                     ADMIT_ETIMEDOUT);
    assert_int_equal(d.allowed, 0);
    assert_int_equal(d.retry_after_ns, wait);
    assert_int_equal(atomic_load(&f.fc.sleeps), 0);
    assert_int_equal(admit_limiter_acquire(f.l, 1, wait, &d), 0);
    assert_int_equal(d.allowed, 1);
    assert_int_equal(atomic_load(&f.fc.sleeps), 1);
    assert_int_equal(atomic_load(&f.fc.slept), wait);
    assert_int_equal(admit_limiter_acquire(f.l, 4, ADMIT_FOREVER, &d), 0);
    assert_int_equal(atomic_load(&f.fc.sleeps), 2);
    admit_limiter_free(f.l);
  }
}

/* A clock whose sleeps let a rival take the window that was waited for. */
typedef struct rival_s {
  fake_clock_t fc;
  admit_limiter_t* l;
  int steals;
} rival_t;

static uint64_t rival_now(void* ud) { return fake_now(&((rival_t*)ud)->fc); }

static void rival_sleep(void* ud, uint64_t ns) {
  rival_t* r = ud;
  fake_sleep(&r->fc, ns);
  if (r->steals > 0) {
    r->steals--;
    admit_decision_t d;
    assert_int_equal(admit_limiter_try(r->l, 4, &d), 0);
    assert_int_equal(d.allowed, 1);
  }
}

static void test_acquire_windows_contended(void** state) {
  (void)state;
  admit_quota_t q = quota1(ADMIT_FIXED_WINDOW, 4, S, 0);
  rival_t r;
  admit_clock_t clk = {rival_now, rival_sleep, &r};
  atomic_store(&r.fc.now, 10 * S);
  atomic_store(&r.fc.slept, 0);
  atomic_store(&r.fc.sleeps, 0);
  assert_int_equal(admit_limiter_new(&r.l, &q, &clk), 0);
  admit_decision_t d;
  assert_int_equal(admit_limiter_try(r.l, 4, &d), 0);
  /* The rival takes the next window as we wake: the window after that
   * starts at 12 s, past a deadline of 11.5 s, so no second sleep. */
  r.steals = 1;
  assert_int_equal(admit_limiter_acquire(r.l, 1, 1500 * MS, &d),
                   ADMIT_ETIMEDOUT);
  assert_int_equal(atomic_load(&r.fc.sleeps), 1);
  assert_int_equal(atomic_load(&r.fc.slept), S);
  assert_int_equal(d.retry_after_ns, S);
  /* With room for it, the second sleep happens and it succeeds. */
  r.steals = 1;
  assert_int_equal(admit_limiter_acquire(r.l, 1, 2 * S, &d), 0);
  assert_int_equal(atomic_load(&r.fc.sleeps), 3);
  assert_int_equal(atomic_load(&r.fc.slept), 3 * S);
  assert_int_equal(atomic_load(&r.fc.now), 13 * S);
  admit_limiter_free(r.l);
}

/* ---- parity with algo.c -------------------------------------------------- */

/* The lock-free fast paths must decide exactly as admit__algo_decide. */
static void test_fast_paths_match_algo(void** state) {
  (void)state;
  admit_quota_t qs[4] = {
      quota1(ADMIT_TOKEN_BUCKET, 7, 3 * S, 5),
      quota1(ADMIT_TOKEN_BUCKET, 1000000000, S, 3),
      quota1(ADMIT_FIXED_WINDOW, 7, 3 * S, 0),
      quota1(ADMIT_FIXED_WINDOW, 3, 1, 0),
  };
  uint64_t seed = 12345;
  for (int i = 0; i < 4; i++) {
    admit__algo_t a;
    admit__cell_t c = {0, 0};
    assert_int_equal(admit__algo_init(&a, &qs[i]), 0);
    fx_t f;
    uint64_t t = 1000 * S + 17;
    fx_new(&f, &qs[i], t);
    for (int n = 0; n < 20000; n++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      uint64_t r = seed >> 33;
      if (r % 3 == 0) t += (r >> 4) % (qs[i].rates[0].period_ns + 2);
      fx_at(&f, t);
      uint64_t cost = 1 + (r >> 8) % a.r[0].limit;
      admit_decision_t d1, d2;
      memset(&d2, 0, sizeof(d2));
      assert_int_equal(admit_limiter_try(f.l, cost, &d1), 0);
      int rc = admit__algo_decide(&a, &c, &c, t, cost, &d2);
      assert_int_equal(rc, d1.allowed);
      assert_memory_equal(&d1, &d2, sizeof(d1));
    }
    admit_limiter_free(f.l);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_quota_copy_and_parse),
      cmocka_unit_test(test_bucket_exact),
      cmocka_unit_test(test_bucket_end_of_time),
      cmocka_unit_test(test_fixed_exact),
      cmocka_unit_test(test_fixed_packing_limits),
      cmocka_unit_test(test_sliding_exact),
      cmocka_unit_test(test_multi_all_or_nothing),
      cmocka_unit_test(test_bucket_reserve_cancel),
      cmocka_unit_test(test_window_reserve_cancel),
      cmocka_unit_test(test_multi_reserve_cancel),
      cmocka_unit_test(test_acquire_bucket),
      cmocka_unit_test(test_acquire_windows),
      cmocka_unit_test(test_acquire_windows_contended),
      cmocka_unit_test(test_fast_paths_match_algo),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
