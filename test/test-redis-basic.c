/* The Redis limiter end to end on the shared test server: connection,
 * decisions, keys (hash tags, expiry), refund, reset, peek, ping, stats. */
#include "test-redis.h"

#include <pthread.h>

static admit_redis_t* connect_shared(const char* prefix) {
  admit_redis_options_t o = tr_opts(test_redis_url(), prefix);
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  assert_non_null(r);
  assert_int_equal(admit_redis_ping(r, ADMIT_SECOND), 0);
  return r;
}

static admit_redis_limiter_t* make_limiter(admit_redis_t* r,
                                           admit_algo_t algo,
                                           const char* spec,
                                           admit_redis_policy_t policy) {
  return tr_limiter(r, algo, spec, NULL, policy);
}

static void test_gcra_end_to_end(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_t* r = connect_shared("t-basic");
  admit_redis_limiter_t* l =
      make_limiter(r, ADMIT_TOKEN_BUCKET, "5/s", ADMIT_REDIS_FAIL_CLOSED);
  admit_decision_t d;
  for (uint64_t i = 0; i < 5; i++) {
    assert_int_equal(admit_redis_limiter_try(l, "alice", 5, 1, &d),
                     ADMIT_REDIS_OK);
    assert_true(d.allowed);
    assert_int_equal(d.limit, 5);
    assert_int_equal(d.remaining, 4 - i);
    assert_int_equal(d.retry_after_ns, 0);
    assert_true(d.reset_after_ns > 0 &&
                d.reset_after_ns <= (i + 1) * 200 * ADMIT_MILLISECOND);
  }
  assert_int_equal(admit_redis_limiter_try(l, "alice", 5, 1, &d), 0);
  assert_false(d.allowed);
  assert_int_equal(d.remaining, 0);
  /* Five taken within a few ms: the sixth waits about one interval. */
  assert_true(d.retry_after_ns > 100 * ADMIT_MILLISECOND &&
              d.retry_after_ns <= 200 * ADMIT_MILLISECOND);
  /* Another subject is independent. */
  assert_int_equal(admit_redis_limiter_try(l, "bob", 3, 5, &d), 0);
  assert_true(d.allowed);
  assert_int_equal(d.remaining, 0);
  /* A cost above the burst can never fit. */
  assert_int_equal(admit_redis_limiter_try(l, "bob", 3, 6, &d), ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_try(l, "bob", 3, 0, &d), ADMIT_EINVAL);

  /* Peek consumes nothing; refund gives back; reset forgets. */
  assert_int_equal(admit_redis_limiter_peek(l, "bob", 3, &d), 0);
  assert_int_equal(d.remaining, 0);
  assert_int_equal(admit_redis_limiter_refund(l, "bob", 3, 2), 0);
  assert_int_equal(admit_redis_limiter_peek(l, "bob", 3, &d), 0);
  assert_true(d.allowed);
  assert_int_equal(d.remaining, 2);
  assert_int_equal(admit_redis_limiter_reset(l, "bob", 3), 0);
  assert_int_equal(admit_redis_limiter_peek(l, "bob", 3, &d), 0);
  assert_int_equal(d.remaining, 5);
  assert_int_equal(d.reset_after_ns, 0);

  /* Every key written has an expiry. */
  redisContext* c = tr_shared_raw();
  assert_non_null(c);
  assert_true(tr_all_expire(c, "t-basic") >= 1);
  admit_redis_stats_t st;
  assert_int_equal(admit_redis_stats(r, &st), 0);
  assert_int_equal(st.connected, 1);
  assert_int_equal(st.breaker, ADMIT_REDIS_BREAKER_CLOSED);
  assert_true(st.commands >= 10);
  assert_int_equal(st.failures, 0);
  admit_redis_limiter_stats_t ls;
  assert_int_equal(admit_redis_limiter_stats(l, &ls), 0);
  assert_int_equal(ls.degraded, 0);
  assert_true(ls.remote >= 7);
  assert_int_equal(ls.remote, ls.decisions);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tr_flush_prefix(c, "t-basic");
  tr_flush_prefix(c, "admit");
  redisFree(c);
}

/* Keys are `prefix:{subject}:name`; braces in a subject are escaped so a
 * subject cannot choose another hash slot, and binary subjects work. */
static void test_keys_and_hash_tags(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_t* r = connect_shared("t-keys");
  admit_quota_t q = tr_quota(ADMIT_FIXED_WINDOW, "10/minute");
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = "api";
  admit_redis_limiter_t* l = NULL;
  assert_int_equal(admit_redis_limiter_new(&l, r, &lo), 0);
  admit_decision_t d;
  const char tricky[] = "u}{x%y";
  assert_int_equal(admit_redis_limiter_try(l, tricky, 6, 1, &d), 0);
  const char bin[] = {'a', 0, 'b', '\n', (char)0xff};
  assert_int_equal(admit_redis_limiter_try(l, bin, sizeof(bin), 3, &d), 0);
  assert_int_equal(d.remaining, 7);
  redisContext* c = tr_shared_raw();
  assert_int_equal(tr_int(c, "EXISTS %s", "t-keys:{u%7D%7Bx%25y}:api"), 1);
  assert_int_equal(tr_int(c, "EXISTS %b", "t-keys:{a\0b\n\xff}:api",
                          (size_t)18),
                   1);
  /* Two subjects and the instance heartbeat set. */
  assert_int_equal(tr_all_expire(c, "t-keys"), 3);
  /* Same slot as any other key of the same subject. */
  assert_int_equal(tr_int(c, "CLUSTER KEYSLOT %s", "t-keys:{u%7D%7Bx%25y}:api"),
                   tr_int(c, "CLUSTER KEYSLOT %s", "other:{u%7D%7Bx%25y}:z"));
  /* Bad arguments. */
  assert_int_equal(admit_redis_limiter_try(l, NULL, 1, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_try(l, "x", 0, 1, &d), ADMIT_EINVAL);
  char big[600];
  memset(big, 'k', sizeof(big));
  assert_int_equal(admit_redis_limiter_try(l, big, 513, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_try(l, big, 512, 1, &d), 0);
  assert_int_equal(admit_redis_limiter_try(NULL, "x", 1, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_try(l, "x", 1, 1, NULL), ADMIT_EINVAL);
  lo.name = "bad{name}";
  admit_redis_limiter_t* l2 = NULL;
  assert_int_equal(admit_redis_limiter_new(&l2, r, &lo), ADMIT_EINVAL);
  char longname[66];
  memset(longname, 'n', 65);
  longname[65] = '\0';
  lo.name = longname;
  assert_int_equal(admit_redis_limiter_new(&l2, r, &lo), ADMIT_EINVAL);
  longname[64] = '\0';
  assert_int_equal(admit_redis_limiter_new(&l2, r, &lo), 0);
  admit_redis_limiter_free(l2);
  l2 = NULL;
  lo.name = NULL;
  lo.quota = NULL;
  assert_int_equal(admit_redis_limiter_new(&l2, r, &lo), ADMIT_EINVAL);
  /* Quotas the scripts cannot hold exactly are refused. */
  admit_quota_t huge = tr_quota(ADMIT_TOKEN_BUCKET, "1/100d");
  lo.quota = &huge;
  assert_int_equal(admit_redis_limiter_new(&l2, r, &lo), ADMIT_EINVAL);
  assert_null(l2);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tr_flush_prefix(c, "t-keys");
  tr_flush_prefix(c, "admit");
  redisFree(c);
}

/* The unix socket form of the URL, and db selection. */
static void test_unix_socket(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  const char* sock = getenv("ADMIT_TEST_REDIS_SOCK");
  if (sock == NULL) skip();
  char url[600];
  snprintf(url, sizeof(url), "unix://%s?db=15", sock);
  admit_redis_options_t o = tr_opts(url, "t-unix");
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l =
      make_limiter(r, ADMIT_SLIDING_WINDOW, "3/s", ADMIT_REDIS_FAIL_CLOSED);
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "k", 1, 3, &d), 0);
  assert_true(d.allowed);
  redisContext* c = tr_shared_raw();
  assert_int_equal(tr_all_expire(c, "t-unix"), 2);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tr_flush_prefix(c, "t-unix");
  tr_flush_prefix(c, "admit");
  redisFree(c);
}

/* A host name is resolved off the I/O thread ("localhost" may list ::1
 * first while the server listens on 127.0.0.1 only). */
static void test_host_name(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  char url[128];
  snprintf(url, sizeof(url), "redis://localhost:%d/15", tr_shared_port());
  admit_redis_options_t o = tr_opts(url, "t-host");
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  int up = 0;
  for (int i = 0; i < 100 && !up; i++) {
    up = admit_redis_ping(r, ADMIT_SECOND) == 0;
    if (!up) tr_sleep_ms(20);
  }
  assert_true(up);
  admit_redis_free(r);
  tr_flush_shared("t-host");
}

/* A hash field of @p key as an integer, or -1 if it is missing. */
static long long hfield(redisContext* c, const char* key, const char* f) {
  redisReply* r = redisCommand(c, "HGET %s %s", key, f);
  long long v = -1;
  if (r != NULL && r->type == REDIS_REPLY_STRING) v = strtoll(r->str, NULL, 10);
  if (r != NULL) freeReplyObject(r);
  return v;
}

/* The expiry of a token bucket's key @p key: the one recorded in field
 * 'e' (which the script's fast path trusts), covering the state (the
 * arrival time 'b' s + 't1' ns, and @p pause_ms), by at most @p slack_ms
 * more than the later of the two. */
static void expect_expiry(redisContext* c, const char* key,
                          long long pause_ms, long long slack_ms) {
  long long at = tr_int(c, "PEXPIRETIME %s", key);
  assert_int_equal(at, hfield(c, key, "e"));
  long long b = hfield(c, key, "b"), t1 = hfield(c, key, "t1");
  assert_true(b > 1600000000 && t1 >= 0);
  long long tat_ms = b * 1000 + (t1 + 999999) / 1000000;
  long long need = tat_ms > pause_ms ? tat_ms : pause_ms;
  if (at < need || at > need + slack_ms)
    fprintf(stderr, "expiry %lld, state until %lld\n", at, need);
  assert_true(at >= need && at <= need + slack_ms);
}

/* A token bucket's key lives as long as its state matters, whichever path
 * wrote it last (try and peek take the script's fast path; refund and
 * pause the general one): the general path sets it exactly (within 100
 * ms), the fast path at most the burst window (1 s here) plus 100 ms
 * longer, so that admissions within it do not move it. */
static void test_bucket_expiry(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  redisContext* c = tr_shared_raw();
  assert_non_null(c);
  if (tr_int(c, "PEXPIRETIME nosuchkey") != -2) {
    redisFree(c);
    fprintf(stderr, "no PEXPIRETIME (Redis < 7): skipped\n");
    skip();
  }
  admit_redis_t* r = connect_shared("t-exp");
  admit_quota_t q = tr_quota(ADMIT_TOKEN_BUCKET, "10/s");
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = "exp";
  admit_redis_limiter_t* l = NULL;
  assert_int_equal(admit_redis_limiter_new(&l, r, &lo), 0);
  const char* key = "t-exp:{s}:exp";
  admit_decision_t d;
  const long long window = 1000 + 100;
  long long first_e = -1;
  uint64_t t0 = admit_now_ns();
  for (int i = 0; i < 6; i++) {
    assert_int_equal(admit_redis_limiter_try(l, "s", 1, 1, &d), 0);
    assert_true(d.allowed);
    expect_expiry(c, key, 0, window);
    if (i == 0) first_e = hfield(c, key, "e");
  }
  /* Six admissions (600 ms of arrival time) made within 400 ms fit the
   * expiry the first one set: none moved it. */
  if (admit_now_ns() - t0 < 400 * ADMIT_MILLISECOND)
    assert_int_equal(hfield(c, key, "e"), first_e);
  assert_int_equal(admit_redis_limiter_refund(l, "s", 1, 4), 0);
  expect_expiry(c, key, 0, 100);
  assert_int_equal(admit_redis_limiter_try(l, "s", 1, 3, &d), 0);
  assert_true(d.allowed);
  expect_expiry(c, key, 0, window);
  uint64_t until = 0;
  assert_int_equal(admit_redis_limiter_pause(l, "s", 1,
                                             700 * ADMIT_MILLISECOND, &until),
                   0);
  long long pause_ms = (long long)((until + 999999) / 1000000);
  expect_expiry(c, key, pause_ms, 100);
  /* A check during the pause writes nothing. */
  assert_int_equal(admit_redis_limiter_try(l, "s", 1, 1, &d), 0);
  assert_false(d.allowed);
  expect_expiry(c, key, pause_ms, 100);
  admit_redis_limiter_free(l);

  /* A fixed window's key lives until its window ends (set once per
   * window). */
  admit_quota_t fq = tr_quota(ADMIT_FIXED_WINDOW, "10/s");
  lo.quota = &fq;
  lo.name = "expw";
  assert_int_equal(admit_redis_limiter_new(&l, r, &lo), 0);
  const char* wkey = "t-exp:{s}:expw";
  for (int i = 0; i < 3; i++) {
    assert_int_equal(admit_redis_limiter_try(l, "s", 1, 1, &d), 0);
    assert_true(d.allowed);
    long long at = tr_int(c, "PEXPIRETIME %s", wkey);
    assert_int_equal(at, hfield(c, wkey, "e"));
    long long b = hfield(c, wkey, "b"), w1 = hfield(c, wkey, "w1");
    assert_true(b > 1600000000 && w1 >= -1000000000 && w1 <= 0);
    assert_int_equal(at, b * 1000 + (w1 + 1000000000 + 999999) / 1000000);
    assert_int_equal(hfield(c, wkey, "c1"), 10 - (long long)d.remaining);
  }
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tr_flush_prefix(c, "t-exp");
  tr_flush_prefix(c, "admit");
  redisFree(c);
}

typedef struct hammer_s {
  admit_redis_limiter_t* l;
  int n;
  _Atomic int allowed;
  _Atomic int errors;
} hammer_t;

static void* hammer(void* arg) {
  hammer_t* h = arg;
  for (int i = 0; i < h->n; i++) {
    admit_decision_t d;
    int rc = admit_redis_limiter_try(h->l, "shared", 6, 1, &d);
    if (rc != 0)
      atomic_fetch_add(&h->errors, 1);
    else if (d.allowed)
      atomic_fetch_add(&h->allowed, 1);
  }
  return NULL;
}

/* Many threads share the connection; the count is exact. */
static void test_threads_share_connection(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_t* r = connect_shared("t-thr");
  /* 1000 per hour: nothing refills during the test. */
  admit_redis_limiter_t* l = make_limiter(r, ADMIT_TOKEN_BUCKET, "1000/h",
                                          ADMIT_REDIS_FAIL_CLOSED);
  hammer_t h = {.l = l, .n = (int)test_scale(400, 100)};
  pthread_t t[8];
  for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, hammer, &h);
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  assert_int_equal(atomic_load(&h.errors), 0);
  int total = 8 * h.n;
  assert_int_equal(atomic_load(&h.allowed), total < 1000 ? total : 1000);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  redisContext* c = tr_shared_raw();
  tr_flush_prefix(c, "t-thr");
  tr_flush_prefix(c, "admit");
  redisFree(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gcra_end_to_end),
      cmocka_unit_test(test_keys_and_hash_tags),
      cmocka_unit_test(test_bucket_expiry),
      cmocka_unit_test(test_unix_socket),
      cmocka_unit_test(test_host_name),
      cmocka_unit_test(test_threads_share_connection),
  };
  return cmocka_run_group_tests(tests, tr_group_setup, NULL);
}
