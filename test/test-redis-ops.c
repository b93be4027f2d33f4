/* Waiting (wait_and_acquire), pauses (vendor Retry-After), reservations
 * settled with the real cost, and the global semaphore. */
#include "test-redis.h"

#include <pthread.h>

static admit_redis_t* conn;

static int setup(void** state) {
  if (tr_group_setup(state) != 0) return -1;
  if (test_redis_url() == NULL) return 0;
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-ops");
  o.command_timeout_ns = test_scale(1000, 3000) * (uint64_t)ADMIT_MILLISECOND;
  return admit_redis_new(&conn, &o) == 0 ? 0 : -1;
}

static int teardown(void** state) {
  (void)state;
  admit_redis_free(conn);
  conn = NULL;
  redisContext* c = tr_shared_raw();
  if (c != NULL) {
    tr_flush_prefix(c, "t-ops");
    redisFree(c);
  }
  return 0;
}

static admit_redis_limiter_t* limiter(admit_algo_t algo, const char* spec,
                                      const char* name) {
  admit_quota_t q = tr_quota(algo, spec);
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = name;
  admit_redis_limiter_t* l = NULL;
  assert_int_equal(admit_redis_limiter_new(&l, conn, &lo), 0);
  return l;
}

/* --- wait_and_acquire ------------------------------------------------------*/

static void test_acquire_waits_for_retry_after(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_limiter_t* l = limiter(ADMIT_TOKEN_BUCKET, "10/s", "acq");
  admit_decision_t d;
  for (int i = 0; i < 10; i++)
    assert_int_equal(admit_redis_limiter_try(l, "v", 1, 1, &d), 0);
  /* Empty: the next unit comes about 100 ms later; acquire sleeps that
   * (plus a little jitter) and takes it. */
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_redis_limiter_acquire(l, "v", 1, 1,
                                               3 * (uint64_t)ADMIT_SECOND, &d),
                   ADMIT_REDIS_OK);
  uint64_t took = admit_now_ns() - t0;
  assert_true(d.allowed);
  assert_true(took >= 50 * ADMIT_MILLISECOND);
  /* Several waiters share the refill: all get through, in time. */
  assert_int_equal(admit_redis_limiter_acquire(l, "v", 1, 3,
                                               3 * (uint64_t)ADMIT_SECOND, &d),
                   0);
  assert_true(d.allowed);
  admit_redis_limiter_free(l);
}

static void test_acquire_fails_at_once_when_it_cannot_fit(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_limiter_t* l = limiter(ADMIT_TOKEN_BUCKET, "1/s", "acq2");
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "v", 1, 1, &d), 0);
  /* The next unit is about 1 s away: a 300 ms budget cannot hold it, so
   * the call returns now instead of sleeping the budget out. */
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_redis_limiter_acquire(l, "v", 1, 1,
                                               300 * ADMIT_MILLISECOND, &d),
                   ADMIT_ETIMEDOUT);
  uint64_t took = admit_now_ns() - t0;
  assert_true(took < 250 * ADMIT_MILLISECOND);
  assert_false(d.allowed);
  assert_true(d.retry_after_ns > 300 * ADMIT_MILLISECOND);
  /* A zero timeout never waits either. */
  assert_int_equal(admit_redis_limiter_acquire(l, "v", 1, 1, 0, &d),
                   ADMIT_ETIMEDOUT);
  assert_int_equal(admit_redis_limiter_acquire(l, "v", 1, 2, ADMIT_SECOND,
                                               &d),
                   ADMIT_EINVAL);
  admit_redis_limiter_free(l);
}

/* --- pause (a vendor's Retry-After) ----------------------------------------*/

static void test_pause_blocks_every_instance(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_limiter_t* l = limiter(ADMIT_TOKEN_BUCKET, "100/s", "pz");
  /* A second instance (another pod) on the same key. */
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-ops");
  admit_redis_t* r2 = NULL;
  assert_int_equal(admit_redis_new(&r2, &o), 0);
  admit_quota_t q = tr_quota(ADMIT_TOKEN_BUCKET, "100/s");
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = "pz";
  admit_redis_limiter_t* l2 = NULL;
  assert_int_equal(admit_redis_limiter_new(&l2, r2, &lo), 0);

  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "vendor", 6, 1, &d), 0);
  uint64_t server_now = 0, until = 0;
  admit_redis_reservation_t rv;
  assert_int_equal(admit_redis_limiter_reserve(l, "vendor", 6, 1, &rv, &d), 0);
  server_now = rv.taken_at_ns;
  assert_true(server_now > UINT64_C(1600000000) * ADMIT_SECOND);
  uint64_t pause = 400 * (uint64_t)ADMIT_MILLISECOND;
  assert_int_equal(admit_redis_limiter_pause(l, "vendor", 6, pause, &until),
                   0);
  assert_true(until >= server_now + pause);
  assert_true(until <= server_now + pause + ADMIT_SECOND);
  /* Both instances are held back, with a retry_after up to the end. */
  assert_int_equal(admit_redis_limiter_try(l2, "vendor", 6, 1, &d), 0);
  assert_false(d.allowed);
  assert_int_equal(d.remaining, 0);
  assert_true(d.retry_after_ns > 200 * ADMIT_MILLISECOND &&
              d.retry_after_ns <= pause);
  assert_int_equal(admit_redis_limiter_try(l, "vendor", 6, 1, &d), 0);
  assert_false(d.allowed);
  /* A shorter pause does not shorten it. */
  uint64_t until2 = 0;
  assert_int_equal(admit_redis_limiter_pause(l2, "vendor", 6,
                                             ADMIT_MILLISECOND, &until2),
                   0);
  assert_int_equal(until2, until);
  /* Other subjects are not paused. */
  assert_int_equal(admit_redis_limiter_try(l, "other", 5, 1, &d), 0);
  assert_true(d.allowed);
  redisContext* c = tr_shared_raw();
  assert_true(tr_int(c, "PTTL t-ops:{vendor}:pz") > 0);
  /* wait_and_acquire sleeps the pause out. */
  assert_int_equal(admit_redis_limiter_acquire(l2, "vendor", 6, 1,
                                               2 * (uint64_t)ADMIT_SECOND, &d),
                   0);
  assert_true(d.allowed);
  /* pause_until: an absolute server time (an HTTP-date Retry-After). */
  assert_int_equal(admit_redis_limiter_reserve(l, "abs", 3, 1, &rv, &d), 0);
  assert_int_equal(admit_redis_limiter_pause_until(
                       l, "abs", 3, rv.taken_at_ns + 300 * ADMIT_MILLISECOND),
                   0);
  assert_int_equal(admit_redis_limiter_try(l2, "abs", 3, 1, &d), 0);
  assert_false(d.allowed);
  assert_true(d.retry_after_ns <= 300 * ADMIT_MILLISECOND);
  assert_int_equal(admit_redis_limiter_pause_until(l, "abs", 3, 0),
                   ADMIT_EINVAL);
  admit_redis_limiter_free(l);
  admit_redis_limiter_free(l2);
  admit_redis_free(r2);
  redisFree(c);
}

/* --- reserve, then settle with the real cost -------------------------------*/

static void test_reserve_settle(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  const admit_algo_t algos[3] = {ADMIT_TOKEN_BUCKET, ADMIT_FIXED_WINDOW,
                                 ADMIT_SLIDING_WINDOW};
  const char* names[3] = {"tok-tb", "tok-fw", "tok-sw"};
  for (int i = 0; i < 3; i++) {
    /* Tokens per hour: nothing refills during the test. */
    admit_redis_limiter_t* l = limiter(algos[i], "100/h", names[i]);
    admit_redis_reservation_t rv;
    admit_decision_t d;
    assert_int_equal(admit_redis_limiter_reserve(l, "u", 1, 30, &rv, &d), 0);
    assert_true(rv.reserved);
    assert_false(rv.local);
    assert_int_equal(rv.cost, 30);
    assert_int_equal(d.remaining, 70);
    /* Used less: the difference comes back. */
    assert_int_equal(admit_redis_limiter_settle(l, "u", 1, &rv, 10, &d), 0);
    assert_int_equal(d.remaining, 90);
    /* Used more: the excess is charged. */
    assert_int_equal(admit_redis_limiter_reserve(l, "u", 1, 50, &rv, &d), 0);
    assert_int_equal(d.remaining, 40);
    assert_int_equal(admit_redis_limiter_settle(l, "u", 1, &rv, 80, &d), 0);
    assert_int_equal(d.remaining, 10);
    /* Even past the limit: the tokens were spent; later calls wait. */
    assert_int_equal(admit_redis_limiter_reserve(l, "u", 1, 10, &rv, &d), 0);
    assert_int_equal(d.remaining, 0);
    assert_int_equal(admit_redis_limiter_settle(l, "u", 1, &rv, 60, &d), 0);
    assert_false(d.allowed);
    assert_int_equal(d.remaining, 0);
    assert_true(d.retry_after_ns > 0);
    /* A denied reservation settles as a no-op. */
    assert_int_equal(admit_redis_limiter_reserve(l, "u", 1, 1, &rv, &d), 0);
    assert_false(rv.reserved);
    assert_int_equal(admit_redis_limiter_settle(l, "u", 1, &rv, 100, &d), 0);
    assert_int_equal(admit_redis_limiter_settle(l, "u", 1, NULL, 1, &d),
                     ADMIT_EINVAL);
    admit_redis_limiter_free(l);
  }
}

/* --- the global semaphore -------------------------------------------------*/

static admit_redis_semaphore_t* semaphore(uint64_t cap, uint64_t lease_ms,
                                          admit_redis_limiter_t* rate,
                                          const char* name) {
  admit_redis_semaphore_options_t so;
  memset(&so, 0, sizeof(so));
  so.capacity = cap;
  so.lease_ns = lease_ms * ADMIT_MILLISECOND;
  so.rate = rate;
  so.name = name;
  admit_redis_semaphore_t* s = NULL;
  assert_int_equal(admit_redis_semaphore_new(&s, conn, &so), 0);
  return s;
}

static void test_semaphore_leases(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  uint64_t lease_ms = test_scale(300, 1500);
  admit_redis_semaphore_t* s = semaphore(2, lease_ms, NULL, "sem");
  admit_redis_lease_t a, b, c;
  admit_decision_t d;
  assert_int_equal(admit_redis_semaphore_try(s, "vendor", 6, 1, &a, &d), 0);
  assert_true(d.allowed);
  assert_int_equal(d.limit, 2);
  assert_int_equal(d.remaining, 1);
  assert_int_equal(strlen(a.id), 32);
  assert_true(a.expires_at_ns > 0);
  assert_int_equal(admit_redis_semaphore_try(s, "vendor", 6, 1, &b, &d), 0);
  assert_true(d.allowed);
  assert_string_not_equal(a.id, b.id);
  /* Full: denied, with the time until the oldest lease lapses. */
  assert_int_equal(admit_redis_semaphore_try(s, "vendor", 6, 1, &c, &d), 0);
  assert_false(d.allowed);
  assert_int_equal(d.limiting, 0);
  assert_int_equal(d.remaining, 0);
  assert_true(d.retry_after_ns > 0 &&
              d.retry_after_ns <= lease_ms * ADMIT_MILLISECOND);
  uint64_t held = 0;
  assert_int_equal(admit_redis_semaphore_held(s, "vendor", 6, &held), 0);
  assert_int_equal(held, 2);
  redisContext* rc = tr_shared_raw();
  assert_true(tr_int(rc, "PTTL t-ops:{vendor}:sem") > 0);
  /* Released by id. */
  assert_int_equal(admit_redis_semaphore_release(s, "vendor", 6, &a), 0);
  assert_int_equal(admit_redis_semaphore_release(s, "vendor", 6, &a),
                   ADMIT_ENOTFOUND);
  assert_int_equal(admit_redis_semaphore_try(s, "vendor", 6, 1, &c, &d), 0);
  assert_true(d.allowed);
  /* Renewal extends a held lease. */
  uint64_t before = c.expires_at_ns;
  tr_sleep_ms(5);
  assert_int_equal(admit_redis_semaphore_renew(s, "vendor", 6, &c), 0);
  assert_true(c.expires_at_ns > before);
  /* Crashed holders: nobody releases b or c, their leases lapse. */
  tr_sleep_ms((unsigned)lease_ms + 100);
  assert_int_equal(admit_redis_semaphore_held(s, "vendor", 6, &held), 0);
  assert_int_equal(held, 0);
  assert_int_equal(admit_redis_semaphore_renew(s, "vendor", 6, &b),
                   ADMIT_ENOTFOUND);
  assert_int_equal(admit_redis_semaphore_release(s, "vendor", 6, &c),
                   ADMIT_ENOTFOUND);
  /* Bad arguments. */
  assert_int_equal(admit_redis_semaphore_try(s, NULL, 1, 1, &c, &d),
                   ADMIT_EINVAL);
  memset(&c, 0, sizeof(c));
  assert_int_equal(admit_redis_semaphore_release(s, "vendor", 6, &c),
                   ADMIT_EINVAL);
  admit_redis_semaphore_options_t so;
  memset(&so, 0, sizeof(so));
  admit_redis_semaphore_t* bad = NULL;
  assert_int_equal(admit_redis_semaphore_new(&bad, conn, &so), ADMIT_EINVAL);
  so.capacity = 1;
  so.on_failure = ADMIT_REDIS_FALLBACK;
  assert_int_equal(admit_redis_semaphore_new(&bad, conn, &so), ADMIT_EINVAL);
  admit_redis_semaphore_free(s);
  redisFree(rc);
}

typedef struct releaser_s {
  admit_redis_semaphore_t* s;
  admit_redis_lease_t lease;
  unsigned after_ms;
} releaser_t;

static void* releaser(void* arg) {
  releaser_t* r = arg;
  tr_sleep_ms(r->after_ms);
  admit_redis_semaphore_release(r->s, "w", 1, &r->lease);
  return NULL;
}

static void test_semaphore_acquire_waits(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_semaphore_t* s = semaphore(1, 60000, NULL, "semw");
  releaser_t rel = {.s = s, .after_ms = 150};
  admit_decision_t d;
  assert_int_equal(admit_redis_semaphore_try(s, "w", 1, 1, &rel.lease, &d), 0);
  assert_true(d.allowed);
  /* Full, nobody releases: the wait runs out. */
  admit_redis_lease_t l2;
  assert_int_equal(admit_redis_semaphore_acquire(s, "w", 1, 1,
                                                 100 * ADMIT_MILLISECOND, &l2,
                                                 &d),
                   ADMIT_ETIMEDOUT);
  /* A release arrives: the waiter gets the lease. */
  pthread_t t;
  pthread_create(&t, NULL, releaser, &rel);
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_redis_semaphore_acquire(
                       s, "w", 1, 1, 5 * (uint64_t)ADMIT_SECOND, &l2, &d),
                   0);
  assert_true(d.allowed);
  assert_true(admit_now_ns() - t0 >= 100 * ADMIT_MILLISECOND);
  pthread_join(t, NULL);
  assert_int_equal(admit_redis_semaphore_release(s, "w", 1, &l2), 0);
  admit_redis_semaphore_free(s);
}

/* Capacity and rate together: both admit, or neither changes. */
static void test_semaphore_with_rate(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_limiter_t* rate = limiter(ADMIT_TOKEN_BUCKET, "2/h", "semrate");
  admit_redis_semaphore_t* s = semaphore(5, 60000, rate, "semr");
  admit_redis_lease_t l1, l2, l3;
  admit_decision_t d;
  assert_int_equal(admit_redis_semaphore_try(s, "v", 1, 1, &l1, &d), 0);
  assert_true(d.allowed);
  assert_int_equal(admit_redis_semaphore_try(s, "v", 1, 1, &l2, &d), 0);
  assert_true(d.allowed);
  /* The rate is spent: denied by the rate (limiting 0 < 1 rate); no lease
   * was taken. */
  assert_int_equal(admit_redis_semaphore_try(s, "v", 1, 1, &l3, &d), 0);
  assert_false(d.allowed);
  assert_int_equal(d.limiting, 0);
  assert_int_equal(d.limit, 2);
  assert_true(d.retry_after_ns > 60 * (uint64_t)ADMIT_SECOND);
  uint64_t held = 0;
  assert_int_equal(admit_redis_semaphore_held(s, "v", 1, &held), 0);
  assert_int_equal(held, 2);
  /* A cost above the rate's burst is an argument error. */
  assert_int_equal(admit_redis_semaphore_try(s, "v", 1, 3, &l3, &d),
                   ADMIT_EINVAL);
  /* Full capacity with rate to spare: the rate is not consumed. */
  admit_redis_semaphore_t* one = semaphore(1, 60000, rate, "semr1");
  assert_int_equal(admit_redis_semaphore_try(one, "z", 1, 1, &l1, &d), 0);
  assert_true(d.allowed);
  assert_int_equal(admit_redis_semaphore_try(one, "z", 1, 1, &l2, &d), 0);
  assert_false(d.allowed);
  assert_int_equal(d.limiting, 1); /* the capacity decided */
  assert_int_equal(d.limit, 1);
  assert_int_equal(admit_redis_limiter_peek(rate, "z", 1, &d), 0);
  assert_int_equal(d.remaining, 1);
  admit_redis_semaphore_free(one);
  admit_redis_semaphore_free(s);
  admit_redis_limiter_free(rate);
}

/* Every key the tests above left (limiter hashes, pauses, debts, lease
 * sets, the heartbeat set) has an expiry: none can leak memory. */
static void test_every_key_expires(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  redisContext* c = tr_shared_raw();
  assert_non_null(c);
  assert_true(tr_all_expire(c, "t-ops") >= 8);
  redisFree(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_acquire_waits_for_retry_after),
      cmocka_unit_test(test_acquire_fails_at_once_when_it_cannot_fit),
      cmocka_unit_test(test_pause_blocks_every_instance),
      cmocka_unit_test(test_reserve_settle),
      cmocka_unit_test(test_semaphore_leases),
      cmocka_unit_test(test_semaphore_acquire_waits),
      cmocka_unit_test(test_semaphore_with_rate),
      cmocka_unit_test(test_every_key_expires),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
