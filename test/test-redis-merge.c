/* Held asynchronous calls (admit_redis_hold/release) and the merging of
 * tries on one limiter into one script call: every decision must be what
 * it would have been alone, in call order, whatever else is queued. */
#include "test-redis.h"

#include <pthread.h>

#define CALLS_MAX 256

typedef struct result_s {
  int done;
  int status;
  admit_decision_t d;
} result_t;

typedef struct results_s {
  pthread_mutex_t mu;
  int done;
  result_t r[CALLS_MAX];
} results_t;

typedef struct slot_s {
  results_t* rs;
  int i;
} slot_t;

static slot_t slots[CALLS_MAX];

static void on_decision(void* ud, int status, const admit_decision_t* d) {
  slot_t* s = ud;
  pthread_mutex_lock(&s->rs->mu);
  result_t* r = &s->rs->r[s->i];
  r->done++;
  r->status = status;
  if (d != NULL) r->d = *d;
  s->rs->done++;
  pthread_mutex_unlock(&s->rs->mu);
}

static void results_init(results_t* rs) {
  memset(rs, 0, sizeof(*rs));
  pthread_mutex_init(&rs->mu, NULL);
}

static int results_done(results_t* rs) {
  pthread_mutex_lock(&rs->mu);
  int n = rs->done;
  pthread_mutex_unlock(&rs->mu);
  return n;
}

/* Waits until @p n callbacks ran (each exactly once). */
static void results_wait(results_t* rs, int n) {
  uint64_t until = admit_now_ns() + test_scale(5000, 30000) * ADMIT_MILLISECOND;
  while (results_done(rs) < n && admit_now_ns() < until) tr_sleep_ms(1);
  assert_int_equal(results_done(rs), n);
  for (int i = 0; i < n; i++) assert_int_equal(rs->r[i].done, 1);
}

static int try_async(admit_redis_limiter_t* l, results_t* rs, int i,
                     const char* key, uint64_t cost) {
  slots[i].rs = rs;
  slots[i].i = i;
  return admit_redis_limiter_try_cb(l, key, strlen(key), cost, on_decision,
                                    &slots[i]);
}

static admit_redis_t* connect_shared(const char* prefix) {
  admit_redis_options_t o = tr_opts(test_redis_url(), prefix);
  o.command_timeout_ns = test_scale(1000, 5000) * (uint64_t)ADMIT_MILLISECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  return r;
}

static uint64_t commands(admit_redis_t* r) {
  admit_redis_stats_t st;
  assert_int_equal(admit_redis_stats(r, &st), 0);
  return st.commands;
}

/* 10 tries on each of 4 keys, interleaved, held and released at once:
 * per key exactly the first 5 are allowed, remaining counting down 4..0,
 * and the 40 decisions took a handful of commands, not 40. */
static void held_tries_merge(admit_algo_t algo, const char* prefix) {
  admit_redis_t* r = connect_shared(prefix);
  admit_redis_limiter_t* l =
      tr_limiter(r, algo, "5/h", "m", ADMIT_REDIS_FAIL_CLOSED);
  /* A first call loads the script and settles the connection. */
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "warm", 4, 1, &d), 0);
  static results_t rs;
  results_init(&rs);
  uint64_t c0 = commands(r);
  assert_int_equal(admit_redis_hold(r), 0);
  static const char* const keys[4] = {"k0", "k1", "k2", "k3"};
  for (int i = 0; i < 40; i++)
    assert_int_equal(try_async(l, &rs, i, keys[i % 4], 1), 0);
  assert_int_equal(admit_redis_release(r), 0);
  results_wait(&rs, 40);
  for (int i = 0; i < 40; i++) {
    const result_t* x = &rs.r[i];
    int nth = i / 4; /* this call's place among its key's calls */
    assert_int_equal(x->status, ADMIT_REDIS_OK);
    assert_int_equal(x->d.allowed, nth < 5);
    assert_int_equal(x->d.limit, 5);
    if (nth < 5) {
      assert_int_equal(x->d.remaining, 4 - nth);
      assert_int_equal(x->d.retry_after_ns, 0);
    } else {
      assert_int_equal(x->d.remaining, 0);
      assert_true(x->d.retry_after_ns > 0);
    }
  }
  uint64_t used = commands(r) - c0;
  fprintf(stderr, "%s: 40 decisions in %llu commands\n", prefix,
          (unsigned long long)used);
  /* One merged call, plus whatever heartbeats ran meanwhile. */
  assert_true(used <= 5);
  admit_redis_free(r);
  admit_redis_limiter_free(l);
  pthread_mutex_destroy(&rs.mu);
}

static void test_held_bucket_tries_merge(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  held_tries_merge(ADMIT_TOKEN_BUCKET, "t-merge-b");
}

static void test_held_window_tries_merge(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  held_tries_merge(ADMIT_FIXED_WINDOW, "t-merge-w");
}

/* Tries on two mergeable limiters, one that is not (two rates) and costs
 * of 1 to 3, interleaved in one hold: each limiter's decisions add up as
 * if sent one by one, in order. */
static void test_mixed_queue_keeps_order(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_t* r = connect_shared("t-merge-mix");
  admit_redis_limiter_t* a =
      tr_limiter(r, ADMIT_TOKEN_BUCKET, "10/h", "a", ADMIT_REDIS_FAIL_CLOSED);
  admit_redis_limiter_t* b =
      tr_limiter(r, ADMIT_FIXED_WINDOW, "7/h", "b", ADMIT_REDIS_FAIL_CLOSED);
  admit_redis_limiter_t* two = tr_limiter(r, ADMIT_TOKEN_BUCKET, "100/s;6/h",
                                       "two", ADMIT_REDIS_FAIL_CLOSED);
  admit_redis_limiter_t* ls[3] = {a, b, two};
  const uint64_t limits[3] = {10, 7, 6};
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(a, "warm", 4, 1, &d), 0);
  static results_t rs;
  results_init(&rs);
  const int n = 90;
  assert_int_equal(admit_redis_hold(r), 0);
  for (int i = 0; i < n; i++)
    assert_int_equal(try_async(ls[i % 3], &rs, i, "u", 1 + (i / 3) % 3), 0);
  assert_int_equal(admit_redis_release(r), 0);
  results_wait(&rs, n);
  /* Replay each limiter's calls in order against its limit. */
  uint64_t used[3] = {0, 0, 0};
  for (int i = 0; i < n; i++) {
    int w = i % 3;
    uint64_t cost = 1 + (uint64_t)(i / 3) % 3;
    const result_t* x = &rs.r[i];
    assert_int_equal(x->status, ADMIT_REDIS_OK);
    int fits = used[w] + cost <= limits[w];
    assert_int_equal(x->d.allowed, fits);
    if (fits) {
      used[w] += cost;
      assert_int_equal(x->d.remaining, limits[w] - used[w]);
    }
  }
  assert_int_equal(used[0], 10);
  assert_int_equal(used[1], 7);
  assert_int_equal(used[2], 6);
  admit_redis_free(r);
  for (int i = 0; i < 3; i++) admit_redis_limiter_free(ls[i]);
  pthread_mutex_destroy(&rs.mu);
}

/* Held calls wait for the last release, in order; holds nest; a blocking
 * call on the holding thread is never held back. */
static void test_hold_nests_and_never_blocks(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  assert_int_equal(admit_redis_hold(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_redis_release(NULL), ADMIT_EINVAL);
  admit_redis_t* r = connect_shared("t-merge-hold");
  assert_int_equal(admit_redis_release(r), ADMIT_EINVAL);
  admit_redis_limiter_t* l =
      tr_limiter(r, ADMIT_TOKEN_BUCKET, "3/h", "h", ADMIT_REDIS_FAIL_CLOSED);
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "warm", 4, 1, &d), 0);
  static results_t rs;
  results_init(&rs);
  assert_int_equal(admit_redis_hold(r), 0);
  assert_int_equal(admit_redis_hold(r), 0);
  assert_int_equal(try_async(l, &rs, 0, "x", 1), 0);
  assert_int_equal(try_async(l, &rs, 1, "x", 1), 0);
  assert_int_equal(admit_redis_release(r), 0);
  tr_sleep_ms(30);
  assert_int_equal(results_done(&rs), 0); /* still held by the outer hold */
  /* A blocking call is not held (it would wait for itself). */
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_redis_limiter_try(l, "y", 1, 1, &d), 0);
  assert_true(d.allowed);
  assert_true(admit_now_ns() - t0 < test_scale(500, 3000) * ADMIT_MILLISECOND);
  assert_int_equal(admit_redis_release(r), 0);
  results_wait(&rs, 2);
  assert_true(rs.r[0].d.allowed && rs.r[1].d.allowed);
  assert_int_equal(rs.r[0].d.remaining, 2);
  assert_int_equal(rs.r[1].d.remaining, 1);
  /* Not held any more: goes at once. */
  assert_int_equal(try_async(l, &rs, 2, "x", 1), 0);
  results_wait(&rs, 3);
  assert_true(rs.r[2].d.allowed);
  assert_int_equal(rs.r[2].d.remaining, 0);
  assert_int_equal(admit_redis_release(r), ADMIT_EINVAL);
  admit_redis_free(r);
  admit_redis_limiter_free(l);
  pthread_mutex_destroy(&rs.mu);
}

/* A merged call that meets NOSCRIPT is resent after the script is
 * loaded; every member still gets its own decision. */
static void test_merged_call_reloads_script(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_t* r = connect_shared("t-merge-noscript");
  admit_redis_limiter_t* l =
      tr_limiter(r, ADMIT_FIXED_WINDOW, "4/h", "s", ADMIT_REDIS_FAIL_CLOSED);
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "warm", 4, 1, &d), 0);
  redisContext* raw = tr_shared_raw();
  assert_non_null(raw);
  assert_true(tr_ok(raw, "SCRIPT FLUSH"));
  admit_redis_stats_t st0, st1;
  assert_int_equal(admit_redis_stats(r, &st0), 0);
  static results_t rs;
  results_init(&rs);
  assert_int_equal(admit_redis_hold(r), 0);
  for (int i = 0; i < 12; i++)
    assert_int_equal(try_async(l, &rs, i, i % 2 ? "p" : "q", 1), 0);
  assert_int_equal(admit_redis_release(r), 0);
  results_wait(&rs, 12);
  for (int i = 0; i < 12; i++) {
    assert_int_equal(rs.r[i].status, ADMIT_REDIS_OK);
    assert_int_equal(rs.r[i].d.allowed, i / 2 < 4);
  }
  assert_int_equal(admit_redis_stats(r, &st1), 0);
  assert_true(st1.script_loads > st0.script_loads);
  redisFree(raw);
  admit_redis_free(r);
  admit_redis_limiter_free(l);
  pthread_mutex_destroy(&rs.mu);
}

/* With Redis unreachable, a merged call's failure reaches every member
 * through its own limiter's policy, counted once each. */
static void test_merged_call_fails_per_member(void** state) {
  (void)state;
  if (!tr_have_server()) skip();
  char url[128];
  snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", tr_free_port());
  admit_redis_options_t o = tr_opts(url, "t-merge-down");
  o.breaker_failures = 1000; /* keep the calls going to the connection */
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* closed =
      tr_limiter(r, ADMIT_TOKEN_BUCKET, "5/h", "c", ADMIT_REDIS_FAIL_CLOSED);
  admit_redis_limiter_t* open =
      tr_limiter(r, ADMIT_TOKEN_BUCKET, "5/h", "o", ADMIT_REDIS_FAIL_OPEN);
  static results_t rs;
  results_init(&rs);
  assert_int_equal(admit_redis_hold(r), 0);
  for (int i = 0; i < 20; i++)
    assert_int_equal(try_async(i < 10 ? closed : open, &rs, i, "z", 1), 0);
  assert_int_equal(admit_redis_release(r), 0);
  results_wait(&rs, 20);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(rs.r[i].status,
                     i < 10 ? ADMIT_EUNAVAILABLE : ADMIT_REDIS_LOCAL);
    if (i >= 10) assert_true(rs.r[i].d.allowed);
  }
  admit_redis_limiter_stats_t ls;
  assert_int_equal(admit_redis_limiter_stats(closed, &ls), 0);
  assert_int_equal(ls.unavailable, 10);
  assert_int_equal(admit_redis_limiter_stats(open, &ls), 0);
  assert_int_equal(ls.fail_open, 10);
  admit_redis_free(r);
  admit_redis_limiter_free(closed);
  admit_redis_limiter_free(open);
  pthread_mutex_destroy(&rs.mu);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_held_bucket_tries_merge),
      cmocka_unit_test(test_held_window_tries_merge),
      cmocka_unit_test(test_mixed_queue_keeps_order),
      cmocka_unit_test(test_hold_nests_and_never_blocks),
      cmocka_unit_test(test_merged_call_reloads_script),
      cmocka_unit_test(test_merged_call_fails_per_member),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
