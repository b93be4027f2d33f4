/* The Lua scripts decide exactly as lib/algo.c does: shared scenarios run
 * against both, on the same simulated times (injected into the script),
 * and every field of every decision must match. */
#include "test-redis.h"

#include "algo.h"
#include "redis-limiter.h"

/* A deterministic generator, so a failure can be replayed. */
static uint64_t rng_state;
static uint64_t rng(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  rng_state = x;
  return x;
}
static uint64_t rng_below(uint64_t n) { return n ? rng() % n : 0; }

static admit_redis_t* conn;

static int setup(void** state) {
  if (tr_group_setup(state) != 0) return -1;
  if (test_redis_url() == NULL) return 0;
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-algo");
  o.command_timeout_ns = 5 * (uint64_t)ADMIT_SECOND;
  return admit_redis_new(&conn, &o) == 0 ? 0 : -1;
}

static int teardown(void** state) {
  (void)state;
  admit_redis_free(conn);
  conn = NULL;
  redisContext* c = tr_shared_raw();
  if (c != NULL) {
    tr_flush_prefix(c, "t-algo");
    redisFree(c);
  }
  return 0;
}

static void expect_same(const admit_decision_t* want,
                        const admit_decision_t* got, const char* what,
                        int step, uint64_t now) {
  if (want->allowed == got->allowed && want->limiting == got->limiting &&
      want->limit == got->limit && want->remaining == got->remaining &&
      want->retry_after_ns == got->retry_after_ns &&
      want->reset_after_ns == got->reset_after_ns)
    return;
  fprintf(stderr,
          "%s step %d now %llu\n"
          "  algo.c: allowed %d limiting %u limit %llu remaining %llu "
          "retry %llu reset %llu\n"
          "  redis:  allowed %d limiting %u limit %llu remaining %llu "
          "retry %llu reset %llu\n",
          what, step, (unsigned long long)now, want->allowed,
          want->limiting, (unsigned long long)want->limit,
          (unsigned long long)want->remaining,
          (unsigned long long)want->retry_after_ns,
          (unsigned long long)want->reset_after_ns, got->allowed,
          got->limiting, (unsigned long long)got->limit,
          (unsigned long long)got->remaining,
          (unsigned long long)got->retry_after_ns,
          (unsigned long long)got->reset_after_ns);
  fail();
}

typedef struct scenario_s {
  admit_algo_t algo;
  const char* spec;
  uint64_t burst0; /* token bucket: burst of rate 0 (0 = count) */
} scenario_t;

static const scenario_t scenarios[] = {
    {ADMIT_TOKEN_BUCKET, "5/s", 0},
    {ADMIT_TOKEN_BUCKET, "3/s", 0}, /* interval 333333334 ns */
    {ADMIT_TOKEN_BUCKET, "10/s;100/min", 0},
    {ADMIT_TOKEN_BUCKET, "7/3s", 2},
    {ADMIT_TOKEN_BUCKET, "13/7ms;40/s;1000/h", 0},
    {ADMIT_TOKEN_BUCKET, "1/day", 0},
    {ADMIT_FIXED_WINDOW, "5/s", 0},
    {ADMIT_FIXED_WINDOW, "10/s;20/3s", 0},
    {ADMIT_FIXED_WINDOW, "7/300ms", 0}, /* period does not divide 1 s */
    {ADMIT_FIXED_WINDOW, "3/7ns;100/min", 0},
    {ADMIT_FIXED_WINDOW, "4294967295/h", 0},
    {ADMIT_FIXED_WINDOW, "7/200ms", 0}, /* the script's fast path */
    {ADMIT_FIXED_WINDOW, "9/2s", 0},    /* the script's fast path */
    {ADMIT_SLIDING_WINDOW, "5/s", 0},
    {ADMIT_SLIDING_WINDOW, "10/s;20/3s", 0},
    {ADMIT_SLIDING_WINDOW, "7/300ms", 0},
    {ADMIT_SLIDING_WINDOW, "100/min;1000/h", 0},
    {ADMIT_SLIDING_WINDOW, "3/7ns;9/13us", 0},
    {ADMIT_SLIDING_WINDOW, "4294967295/h", 0},
};

/* A step of simulated time: mostly forward, by amounts around the
 * quota's own intervals, sometimes not at all, rarely backwards (a server
 * clock stepping back, e.g. after a failover). */
static int64_t pick_dt(const admit__algo_t* a) {
  const admit__rate_params_t* p = &a->r[rng_below(a->nrates)];
  uint64_t unit = a->algo == ADMIT_TOKEN_BUCKET ? p->interval_ns : p->period_ns;
  switch (rng_below(10)) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return (int64_t)rng_below(unit / 4 + 1);
    case 3:
    case 4:
      return (int64_t)rng_below(unit + 1);
    case 5:
      return (int64_t)(unit - rng_below(3));
    case 6:
      return (int64_t)rng_below(3 * p->period_ns + 1);
    case 7:
      return (int64_t)rng_below(1000) * 1000; /* microsecond steps */
    case 8:
      return rng_below(20) == 0 ? -(int64_t)rng_below(unit / 2 + 1) : 17;
    default:
      return (int64_t)rng_below(unit / 16 + 2);
  }
}

static uint64_t pick_cost(const admit__algo_t* a) {
  uint64_t lim = UINT64_MAX;
  for (uint32_t i = 0; i < a->nrates; i++)
    if (a->r[i].limit < lim) lim = a->r[i].limit;
  if (rng_below(3) == 0) return 1 + rng_below(lim < 1000 ? lim : 1000);
  return 1 + rng_below(lim < 3 ? lim : 3);
}

static void run_scenario(const scenario_t* sc, uint64_t base, int steps,
                         int idx) {
  admit_quota_t q = tr_quota(sc->algo, sc->spec);
  q.burst[0] = sc->burst0;
  admit__algo_t a;
  assert_int_equal(admit__algo_init(&a, &q), 0);
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  char name[32];
  snprintf(name, sizeof(name), "s%d-%llu", idx, (unsigned long long)base);
  lo.name = name;
  admit_redis_limiter_t* l = NULL;
  assert_int_equal(admit_redis_limiter_new(&l, conn, &lo), 0);

  admit__cell_t cells[ADMIT_RATES_MAX];
  memset(cells, 0, sizeof(cells));
  uint64_t now = base;
  uint64_t taken[8] = {0};
  uint64_t taken_cost[8] = {0};
  int ntaken = 0;
  char what[128];
  int trace = getenv("ADMIT_TEST_TRACE") != NULL;
  for (int step = 0; step < steps; step++) {
    int64_t dt = pick_dt(&a);
    if (dt < 0 && (uint64_t)-dt > now - base) dt = 0;
    now = (uint64_t)((int64_t)now + dt);
    uint64_t r = rng_below(10);
    if (trace)
      fprintf(stderr, "%s step %d dt %lld now %llu op %d\n", sc->spec, step,
              (long long)dt, (unsigned long long)now, (int)r);
    admit_decision_t want, got;
    memset(&want, 0, sizeof(want));
    memset(&got, 0, sizeof(got));
    if (r < 7) {
      uint64_t cost = pick_cost(&a);
      admit__cell_t next[ADMIT_RATES_MAX];
      int ok = admit__algo_decide(&a, cells, next, now, cost, &want);
      assert_true(ok >= 0);
      memcpy(cells, next, sizeof(cells));
      assert_int_equal(admit__redis_limiter_op_at(l, "try", "k", 1, now,
                                                  &cost, 1, &got, NULL,
                                                  NULL),
                       0);
      snprintf(what, sizeof(what), "%s %s try %llu", sc->spec,
               sc->algo == 0 ? "gcra" : sc->algo == 1 ? "fixed" : "sliding",
               (unsigned long long)cost);
      expect_same(&want, &got, what, step, now);
      if (want.allowed) {
        taken[ntaken % 8] = now;
        taken_cost[ntaken % 8] = cost;
        ntaken++;
      }
    } else if (r < 9 || ntaken == 0) {
      admit__algo_peek(&a, cells, now, &want);
      assert_int_equal(admit__redis_limiter_op_at(l, "peek", "k", 1, now,
                                                  NULL, 0, &got, NULL, NULL),
                       0);
      snprintf(what, sizeof(what), "%s peek", sc->spec);
      expect_same(&want, &got, what, step, now);
    } else {
      /* Refund a recent charge (windows: only if its window is current). */
      int k = (int)rng_below(ntaken < 8 ? (uint64_t)ntaken : 8);
      uint64_t args[2] = {1 + rng_below(taken_cost[k]), taken[k]};
      admit__cell_t next[ADMIT_RATES_MAX];
      admit__algo_refund(&a, cells, next, now, args[0], args[1]);
      memcpy(cells, next, sizeof(cells));
      assert_int_equal(admit__redis_limiter_op_at(l, "refund", "k", 1, now,
                                                  args, 2, &got, NULL, NULL),
                       0);
      /* The refund replies with a peek after it. */
      admit__algo_peek(&a, cells, now, &want);
      snprintf(what, sizeof(what), "%s refund %llu taken at %llu", sc->spec,
               (unsigned long long)args[0], (unsigned long long)args[1]);
      expect_same(&want, &got, what, step, now);
    }
  }
  admit_redis_limiter_free(l);
}

static void test_vectors(void** state, uint64_t base) {
  (void)state;
  REDIS_OR_SKIP();
  int steps = (int)test_scale(400, 60);
  const char* env = getenv("ADMIT_TEST_STEPS");
  if (env != NULL) steps = atoi(env);
  for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
    rng_state = 0x9e3779b97f4a7c15u ^ (base * 31 + i);
    run_scenario(&scenarios[i], base, steps, (int)i);
  }
}

/* Small clock values (as a process's monotonic clock would give). */
static void test_vectors_small_clock(void** state) {
  test_vectors(state, 1000000000u);
}

/* Unix epoch nanoseconds, beyond 2^53: the scripts' split arithmetic. */
static void test_vectors_epoch_clock(void** state) {
  test_vectors(state, UINT64_C(1700000000123456789));
}

/* An odd offset and a base far in the future (year 2500). */
static void test_vectors_far_clock(void** state) {
  test_vectors(state, UINT64_C(16725225600987654321));
}

/* Hand-checked boundaries: exactly at the tolerance, one nanosecond
 * before, and the sliding window's exact retry time. */
static void test_exact_boundaries(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_quota_t q = tr_quota(ADMIT_TOKEN_BUCKET, "2/s");
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = "exact";
  admit_redis_limiter_t* l = NULL;
  assert_int_equal(admit_redis_limiter_new(&l, conn, &lo), 0);
  uint64_t t0 = UINT64_C(1700000000000000000), one = 1;
  admit_decision_t d;
  assert_int_equal(admit__redis_limiter_op_at(l, "try", "b", 1, t0, &one, 1,
                                              &d, NULL, NULL), 0);
  assert_int_equal(admit__redis_limiter_op_at(l, "try", "b", 1, t0, &one, 1,
                                              &d, NULL, NULL), 0);
  assert_true(d.allowed);
  assert_int_equal(d.reset_after_ns, ADMIT_SECOND);
  /* Full: the next unit fits exactly 500 ms later, not a ns before. */
  assert_int_equal(admit__redis_limiter_op_at(l, "try", "b", 1,
                                              t0 + 500000000 - 1, &one, 1, &d,
                                              NULL, NULL), 0);
  assert_false(d.allowed);
  assert_int_equal(d.retry_after_ns, 1);
  assert_int_equal(admit__redis_limiter_op_at(l, "try", "b", 1,
                                              t0 + 500000000, &one, 1, &d,
                                              NULL, NULL), 0);
  assert_true(d.allowed);
  assert_int_equal(d.remaining, 0);
  admit_redis_limiter_free(l);

  q = tr_quota(ADMIT_SLIDING_WINDOW, "10/s");
  lo.name = "exact-sw";
  assert_int_equal(admit_redis_limiter_new(&l, conn, &lo), 0);
  uint64_t ten = 10;
  assert_int_equal(admit__redis_limiter_op_at(l, "try", "s", 1, t0, &ten, 1,
                                              &d, NULL, NULL), 0);
  /* 250 ms into the next window prev weighs 7.5: ceil 8, so 2 fit. */
  uint64_t three = 3;
  assert_int_equal(admit__redis_limiter_op_at(l, "try", "s", 1,
                                              t0 + 1250000000, &three, 1, &d,
                                              NULL, NULL), 0);
  assert_false(d.allowed);
  assert_int_equal(d.remaining, 2);
  /* 3 fit once prev * (1 - e) <= 7: e = 0.3 s. */
  assert_int_equal(d.retry_after_ns, 50000000);
  admit_redis_limiter_free(l);
}

/* The same scenarios through the public in-process limiter (with a fake
 * clock) and the Redis limiter (with the same times): same decisions. */
static void test_same_as_local_limiter(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  const admit_algo_t algos[3] = {ADMIT_TOKEN_BUCKET, ADMIT_FIXED_WINDOW,
                                 ADMIT_SLIDING_WINDOW};
  const char* specs[3] = {"10/s;50/min", "4/250ms", "100/min"};
  int steps = (int)test_scale(500, 80);
  for (int ai = 0; ai < 3; ai++) {
    for (int si = 0; si < 3; si++) {
      rng_state = 12345 + (uint64_t)(ai * 3 + si);
      admit_quota_t q = tr_quota(algos[ai], specs[si]);
      fake_clock_t fc;
      admit_clock_t clk = fake_clock(&fc, 5 * (uint64_t)ADMIT_SECOND);
      admit_limiter_t* local = NULL;
      assert_int_equal(admit_limiter_new(&local, &q, &clk), 0);
      admit_redis_limiter_options_t lo;
      memset(&lo, 0, sizeof(lo));
      lo.quota = &q;
      char name[32];
      snprintf(name, sizeof(name), "pub%d%d", ai, si);
      lo.name = name;
      admit_redis_limiter_t* l = NULL;
      assert_int_equal(admit_redis_limiter_new(&l, conn, &lo), 0);
      admit__algo_t a;
      assert_int_equal(admit__algo_init(&a, &q), 0);
      for (int step = 0; step < steps; step++) {
        int64_t dt = pick_dt(&a);
        if (dt > 0) fake_advance(&fc, (uint64_t)dt);
        uint64_t now = fake_now(&fc);
        admit_decision_t want, got;
        if (rng_below(5) == 0) {
          assert_int_equal(admit_limiter_peek(local, &want), 0);
          assert_int_equal(admit__redis_limiter_op_at(l, "peek", "p", 1, now,
                                                      NULL, 0, &got, NULL,
                                                      NULL),
                           0);
        } else {
          uint64_t cost = pick_cost(&a);
          assert_int_equal(admit_limiter_try(local, cost, &want), 0);
          assert_int_equal(admit__redis_limiter_op_at(l, "try", "p", 1, now,
                                                      &cost, 1, &got, NULL,
                                                      NULL),
                           0);
        }
        expect_same(&want, &got, specs[si], step, now);
      }
      admit_limiter_free(local);
      admit_redis_limiter_free(l);
    }
  }
}

/* What a check during a pause must answer: the quota's own decision,
 * denied, with nothing remaining and retry and reset at least the time
 * left (see decide() in lib/lua/_lib.lua). */
static admit_decision_t paused(admit_decision_t d, uint64_t left) {
  if (d.allowed) d.retry_after_ns = 0;
  d.allowed = 0;
  d.remaining = 0;
  if (left > d.retry_after_ns) d.retry_after_ns = left;
  if (left > d.reset_after_ns) d.reset_after_ns = left;
  return d;
}

/* A pause (a vendor's Retry-After) denies every check until it ends and
 * consumes nothing; from its end on, decisions are algo.c's again. The
 * single-rate bucket and fixed window (the script's fast paths) and
 * two-rate ones (the general path) must agree to the nanosecond. */
static void test_pause_exact(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  const char* specs[4] = {"5/s", "5/s;1000/h", "5/s", "5/s;1000/h"};
  const char* names[4] = {"pause1", "pause2", "pause3", "pause4"};
  for (int si = 0; si < 4; si++) {
    admit_quota_t q = tr_quota(si < 2 ? ADMIT_TOKEN_BUCKET
                                      : ADMIT_FIXED_WINDOW,
                               specs[si]);
    admit__algo_t a;
    assert_int_equal(admit__algo_init(&a, &q), 0);
    admit_redis_limiter_options_t lo;
    memset(&lo, 0, sizeof(lo));
    lo.quota = &q;
    lo.name = names[si];
    admit_redis_limiter_t* l = NULL;
    assert_int_equal(admit_redis_limiter_new(&l, conn, &lo), 0);
    admit__cell_t cells[ADMIT_RATES_MAX], next[ADMIT_RATES_MAX];
    memset(cells, 0, sizeof(cells));
    uint64_t t0 = UINT64_C(1700000000123456789), two = 2;
    admit_decision_t want, got;
    assert_true(admit__algo_decide(&a, cells, next, t0, 2, &want) >= 0);
    memcpy(cells, next, sizeof(cells));
    assert_int_equal(admit__redis_limiter_op_at(l, "try", "k", 1, t0, &two,
                                                1, &got, NULL, NULL), 0);
    expect_same(&want, &got, "before the pause", 0, t0);

    /* Paused for 700 ms + 3 ns; the reply is a check during it. */
    uint64_t dur = 700 * (uint64_t)ADMIT_MILLISECOND + 3, until = 0, srv = 0;
    assert_int_equal(admit__redis_limiter_op_at(l, "pause", "k", 1, t0, &dur,
                                                1, &got, &srv, &until), 0);
    assert_int_equal(srv, t0);
    assert_int_equal(until, t0 + dur);
    admit__algo_peek(&a, cells, t0, &want);
    want = paused(want, dur);
    expect_same(&want, &got, "pause reply", 0, t0);
    /* A shorter pause leaves it as it is. */
    uint64_t one = 1;
    assert_int_equal(admit__redis_limiter_op_at(l, "pause", "k", 1, t0, &one,
                                                1, &got, NULL, &until), 0);
    assert_int_equal(until, t0 + dur);

    /* During the pause: denied, nothing consumed (algo.c's cells stay). */
    const uint64_t during[4] = {t0, t0 + 1, t0 + 350 * ADMIT_MILLISECOND,
                                t0 + dur - 1};
    for (int i = 0; i < 4; i++) {
      uint64_t now = during[i];
      assert_true(admit__algo_decide(&a, cells, next, now, 2, &want) >= 0);
      want = paused(want, t0 + dur - now);
      assert_int_equal(admit__redis_limiter_op_at(l, "try", "k", 1, now,
                                                  &two, 1, &got, NULL, NULL),
                       0);
      expect_same(&want, &got, "try during the pause", i, now);
      admit__algo_peek(&a, cells, now, &want);
      want = paused(want, t0 + dur - now);
      assert_int_equal(admit__redis_limiter_op_at(l, "peek", "k", 1, now,
                                                  NULL, 0, &got, NULL, NULL),
                       0);
      expect_same(&want, &got, "peek during the pause", i, now);
    }
    /* From its last nanosecond on, algo.c's decisions again. */
    for (int i = 0; i < 6; i++) {
      uint64_t now = t0 + dur + (uint64_t)i * 150 * ADMIT_MILLISECOND;
      assert_true(admit__algo_decide(&a, cells, next, now, 2, &want) >= 0);
      memcpy(cells, next, sizeof(cells));
      assert_int_equal(admit__redis_limiter_op_at(l, "try", "k", 1, now,
                                                  &two, 1, &got, NULL, NULL),
                       0);
      expect_same(&want, &got, "try after the pause", i, now);
    }
    admit_redis_limiter_free(l);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors_small_clock),
      cmocka_unit_test(test_vectors_epoch_clock),
      cmocka_unit_test(test_vectors_far_clock),
      cmocka_unit_test(test_exact_boundaries),
      cmocka_unit_test(test_pause_exact),
      cmocka_unit_test(test_same_as_local_limiter),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
