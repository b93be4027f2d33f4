/* Redis failures, each on a private server this test may kill, stop or
 * restart: the configured policy applies, every call returns within its
 * timeout, and service comes back when Redis does. Also AUTH, ACL users,
 * SELECT and the misconfigurations that must never fail open. */
#include "test-redis.h"

#include <pthread.h>

/* Timeouts: short, but generous under sanitizers and valgrind. */
static uint64_t cmd_timeout(void) {
  return test_scale(200, 1500) * (uint64_t)ADMIT_MILLISECOND;
}
static uint64_t slack(void) {
  return test_scale(200, 2000) * (uint64_t)ADMIT_MILLISECOND;
}

/* 1 while a test runs with every call through the I/O thread (the
 * blocking calls otherwise mostly take the direct connection). */
static int pipeline_only;

static admit_redis_options_t fopts(const char* url) {
  admit_redis_options_t o = tr_opts(url, "t-fail");
  o.pipeline_only = pipeline_only;
  o.command_timeout_ns = cmd_timeout();
  o.connect_timeout_ns = cmd_timeout();
  o.breaker_failures = 3;
  return o;
}

static admit_redis_limiter_t* limiter(admit_redis_t* r, const char* spec,
                                      admit_redis_policy_t policy) {
  return tr_limiter(r, ADMIT_TOKEN_BUCKET, spec, "lim", policy);
}

/* Tries once and checks the call returned within its timeout. */
static int timed_try(admit_redis_limiter_t* l, const char* key,
                     admit_decision_t* d) {
  uint64_t t0 = admit_now_ns();
  int rc = admit_redis_limiter_try(l, key, strlen(key), 1, d);
  uint64_t took = admit_now_ns() - t0;
  if (took > cmd_timeout() + slack())
    fprintf(stderr, "call took %llu ms\n",
            (unsigned long long)(took / 1000000));
  assert_true(took <= cmd_timeout() + slack());
  return rc;
}

/* Waits (at most @p ms) until a try is decided by Redis again. */
static void wait_recovered(admit_redis_limiter_t* l, unsigned ms) {
  admit_decision_t d;
  for (unsigned i = 0; i < ms / 20; i++) {
    if (timed_try(l, "probe", &d) == ADMIT_REDIS_OK) return;
    tr_sleep_ms(20);
  }
  fail_msg("Redis did not come back within %u ms", ms);
}

/* --- configuration ---------------------------------------------------------*/

static void test_auth_acl_select(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, "requirepass secret\n"
                        "user alice on >alicepw ~* &* +@all\n"
                        "user bob on >bobpw ~* &* +@all -@scripting\n") != 0)
    skip();
  char url[600];
  admit_redis_t* r = (admit_redis_t*)1;
  admit_redis_options_t o;

  /* No password, a wrong one, a wrong user: configuration errors at once. */
  snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", s.port);
  o = fopts(url);
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  assert_null(r);
  snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d/0", s.port);
  o = fopts(url);
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  snprintf(url, sizeof(url), "redis://alice:wrong@127.0.0.1:%d/0", s.port);
  o = fopts(url);
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  /* An ACL user without the right to run scripts. */
  snprintf(url, sizeof(url), "redis://bob:bobpw@127.0.0.1:%d/0", s.port);
  o = fopts(url);
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  /* A database that does not exist. */
  snprintf(url, sizeof(url), "redis://:secret@127.0.0.1:%d/99", s.port);
  o = fopts(url);
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);

  /* The default user's password, then an ACL user; SELECT 3. */
  const char* forms[2] = {"redis://:secret@127.0.0.1:%d/3",
                          "redis://alice:alicepw@127.0.0.1:%d/3"};
  for (int i = 0; i < 2; i++) {
    snprintf(url, sizeof(url), forms[i], s.port);
    o = fopts(url);
    r = NULL;
    assert_int_equal(admit_redis_new(&r, &o), 0);
    admit_redis_limiter_t* l = limiter(r, "5/s", ADMIT_REDIS_FAIL_OPEN);
    admit_decision_t d;
    assert_int_equal(admit_redis_limiter_try(l, "k", 1, 1, &d),
                     ADMIT_REDIS_OK);
    assert_int_equal(d.remaining, 4 - (uint64_t)0);
    redisContext* c = tr_raw("127.0.0.1", s.port, -1);
    assert_true(tr_ok(c, "AUTH secret"));
    assert_true(tr_ok(c, "SELECT 3"));
    assert_int_equal(tr_int(c, "EXISTS t-fail:{k}:lim"), 1);
    assert_true(tr_int(c, "PTTL t-fail:{k}:lim") > 0);

    /* A key of the wrong type is a configuration error, even for a
     * fail-open limiter: never silently admitted. */
    assert_true(tr_ok(c, "SET t-fail:{wrong}:lim x"));
    assert_int_equal(admit_redis_limiter_try(l, "wrong", 5, 1, &d),
                     ADMIT_ECONFIG);
    admit_redis_limiter_stats_t ls;
    assert_int_equal(admit_redis_limiter_stats(l, &ls), 0);
    assert_int_equal(ls.fail_open, 0);
    assert_int_equal(ls.errors, 1);
    assert_true(tr_ok(c, "FLUSHDB"));
    redisFree(c);
    admit_redis_limiter_free(l);
    admit_redis_free(r);
  }
  tserver_stop(&s);
}

/* --- refused connections ---------------------------------------------------*/

static void test_refused_then_recovers(void** state) {
  (void)state;
  if (!tr_have_server()) skip();
  int port = tr_free_port();
  char url[128];
  snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
  admit_redis_options_t o = fopts(url);
  admit_redis_t* r = NULL;
  /* Unreachable at start is not an error: the policies take over. */
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_redis_new(&r, &o), 0);
  assert_true(admit_now_ns() - t0 <= cmd_timeout() + slack());
  admit_redis_limiter_t* closed = limiter(r, "5/s", ADMIT_REDIS_FAIL_CLOSED);
  admit_redis_limiter_t* open = limiter(r, "5/s", ADMIT_REDIS_FAIL_OPEN);
  admit_redis_limiter_t* fb = limiter(r, "5/s", ADMIT_REDIS_FALLBACK);
  admit_decision_t d;
  for (int i = 0; i < 10; i++) {
    assert_int_equal(timed_try(closed, "a", &d), ADMIT_EUNAVAILABLE);
    assert_int_equal(timed_try(open, "a", &d), ADMIT_REDIS_LOCAL);
    assert_true(d.allowed);
  }
  /* The fallback is a local bucket (one instance: the whole quota). */
  int allowed = 0;
  for (int i = 0; i < 10; i++) {
    assert_int_equal(timed_try(fb, "a", &d), ADMIT_REDIS_LOCAL);
    allowed += d.allowed;
  }
  assert_int_equal(allowed, 5);
  admit_redis_limiter_stats_t ls;
  assert_int_equal(admit_redis_limiter_stats(open, &ls), 0);
  assert_int_equal(ls.fail_open, 10);
  assert_int_equal(ls.degraded, 1);
  assert_int_equal(admit_redis_limiter_stats(fb, &ls), 0);
  assert_int_equal(ls.fallback, 10);
  assert_int_equal(admit_redis_limiter_stats(closed, &ls), 0);
  assert_int_equal(ls.unavailable, 10);
  admit_redis_stats_t st;
  assert_int_equal(admit_redis_stats(r, &st), 0);
  assert_int_equal(st.connected, 0);
  assert_true(st.connect_errors >= 1);
  assert_true(st.breaker_trips >= 1);
  assert_true(st.breaker_skips >= 1);
  assert_int_equal(admit_redis_ping(r, ADMIT_SECOND), ADMIT_EUNAVAILABLE);

  /* A server appears on that port: service resumes by itself. */
  tserver_t s;
  memset(&s, 0, sizeof(s));
  snprintf(s.dir, sizeof(s.dir), "%s/refused.XXXXXX",
           getenv("ADMIT_TEST_REDIS_DIR") ? getenv("ADMIT_TEST_REDIS_DIR")
                                          : "/tmp");
  assert_non_null(mkdtemp(s.dir));
  s.port = port;
  snprintf(s.conf, sizeof(s.conf), "%s/redis.conf", s.dir);
  FILE* f = fopen(s.conf, "w");
  assert_non_null(f);
  fprintf(f, "bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\n",
          port, s.dir);
  fclose(f);
  assert_int_equal(tserver_restart(&s), 0);
  wait_recovered(closed, 3000);
  assert_int_equal(timed_try(open, "b", &d), ADMIT_REDIS_OK);
  assert_int_equal(d.remaining, 4);
  assert_int_equal(admit_redis_stats(r, &st), 0);
  assert_int_equal(st.connected, 1);
  assert_int_equal(st.breaker, ADMIT_REDIS_BREAKER_CLOSED);
  admit_redis_limiter_free(closed);
  admit_redis_limiter_free(open);
  admit_redis_limiter_free(fb);
  admit_redis_free(r);
  tserver_stop(&s);
}

/* The semaphore's policies: fail closed, or grant a local lease. */
static void test_semaphore_policies(void** state) {
  (void)state;
  char url[128];
  snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", tr_free_port());
  admit_redis_options_t o = fopts(url);
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_semaphore_options_t so;
  memset(&so, 0, sizeof(so));
  so.capacity = 1;
  admit_redis_semaphore_t* closed = NULL;
  assert_int_equal(admit_redis_semaphore_new(&closed, r, &so), 0);
  so.on_failure = ADMIT_REDIS_FAIL_OPEN;
  admit_redis_semaphore_t* open = NULL;
  assert_int_equal(admit_redis_semaphore_new(&open, r, &so), 0);
  admit_redis_lease_t lease;
  admit_decision_t d;
  assert_int_equal(admit_redis_semaphore_try(closed, "v", 1, 1, &lease, &d),
                   ADMIT_EUNAVAILABLE);
  assert_int_equal(admit_redis_semaphore_try(open, "v", 1, 1, &lease, &d),
                   ADMIT_REDIS_LOCAL);
  assert_true(d.allowed);
  assert_true(lease.local);
  /* A local lease needs no Redis to renew or release. */
  assert_int_equal(admit_redis_semaphore_renew(open, "v", 1, &lease), 0);
  assert_int_equal(admit_redis_semaphore_release(open, "v", 1, &lease), 0);
  uint64_t held;
  assert_int_equal(admit_redis_semaphore_held(open, "v", 1, &held),
                   ADMIT_EUNAVAILABLE);
  admit_redis_semaphore_free(closed);
  admit_redis_semaphore_free(open);
  admit_redis_free(r);
}

/* --- a server killed mid-run, restarted with empty memory ------------------*/

typedef struct load_s {
  admit_redis_limiter_t* l;
  _Atomic int stop;
  _Atomic int ok, local, errors, late;
} load_t;

static void* load_thread(void* arg) {
  load_t* ld = arg;
  while (!atomic_load(&ld->stop)) {
    admit_decision_t d;
    uint64_t t0 = admit_now_ns();
    int rc = admit_redis_limiter_try(ld->l, "hot", 3, 1, &d);
    if (admit_now_ns() - t0 > cmd_timeout() + slack())
      atomic_fetch_add(&ld->late, 1);
    if (rc == ADMIT_REDIS_OK)
      atomic_fetch_add(&ld->ok, 1);
    else if (rc == ADMIT_REDIS_LOCAL)
      atomic_fetch_add(&ld->local, 1);
    else
      atomic_fetch_add(&ld->errors, 1);
  }
  return NULL;
}

static void test_killed_and_restarted_empty(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = fopts(s.url);
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l = limiter(r, "1000000/s", ADMIT_REDIS_FAIL_OPEN);
  admit_redis_limiter_t* hour = limiter(r, "10/h", ADMIT_REDIS_FAIL_CLOSED);
  admit_decision_t d;
  for (int i = 0; i < 10; i++)
    assert_int_equal(admit_redis_limiter_try(hour, "h", 1, 1, &d), 0);
  assert_false(d.allowed == 0);
  assert_int_equal(admit_redis_limiter_try(hour, "h", 1, 1, &d), 0);
  assert_false(d.allowed);

  load_t ld = {.l = l};
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, load_thread, &ld);
  tr_sleep_ms(200);
  tserver_kill(&s);
  tr_sleep_ms(400);
  int local_while_down = atomic_load(&ld.local);
  assert_int_equal(tserver_restart(&s), 0);
  tr_sleep_ms(100);
  wait_recovered(l, 3000);
  int ok_before = atomic_load(&ld.ok);
  tr_sleep_ms(200);
  atomic_store(&ld.stop, 1);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  /* Down: failed open, promptly; up again: decided by Redis. */
  assert_true(local_while_down > 0);
  assert_int_equal(atomic_load(&ld.errors), 0);
  assert_int_equal(atomic_load(&ld.late), 0);
  assert_true(atomic_load(&ld.ok) > ok_before);
  /* The restart lost the memory: the hourly quota starts fresh, and the
   * scripts were loaded again. */
  assert_int_equal(admit_redis_limiter_try(hour, "h", 1, 1, &d), 0);
  assert_true(d.allowed);
  assert_int_equal(d.remaining, 9);
  admit_redis_stats_t st;
  assert_int_equal(admit_redis_stats(r, &st), 0);
  assert_true(st.disconnects >= 1);
  assert_true(st.connects >= 2);
  admit_redis_limiter_free(l);
  admit_redis_limiter_free(hour);
  admit_redis_free(r);
  tserver_stop(&s);
}

/* --- a hung server (SIGSTOP): deadlines, breaker, recovery -----------------*/

static void test_hung_server_breaker(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = fopts(s.url);
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l = limiter(r, "100/s", ADMIT_REDIS_FALLBACK);
  admit_decision_t d;
  assert_int_equal(timed_try(l, "x", &d), ADMIT_REDIS_OK);

  tserver_pause(&s);
  /* Every call returns within its timeout, decided by the fallback. */
  for (int i = 0; i < 20; i++) {
    assert_int_equal(timed_try(l, "x", &d), ADMIT_REDIS_LOCAL);
    assert_true(d.allowed);
  }
  admit_redis_stats_t st;
  assert_int_equal(admit_redis_stats(r, &st), 0);
  /* After three failures in a row the breaker opened: most calls skipped
   * Redis instead of waiting out the timeout. */
  assert_true(st.breaker_trips >= 1);
  assert_true(st.breaker_skips >= 10);
  assert_true(st.timeouts >= 1);
  assert_int_equal(st.breaker == ADMIT_REDIS_BREAKER_CLOSED, 0);

  tserver_resume(&s);
  wait_recovered(l, 5000);
  assert_int_equal(admit_redis_stats(r, &st), 0);
  assert_int_equal(st.breaker, ADMIT_REDIS_BREAKER_CLOSED);
  assert_int_equal(st.connected, 1);
  admit_redis_limiter_stats_t ls;
  assert_int_equal(admit_redis_limiter_stats(l, &ls), 0);
  assert_int_equal(ls.degraded, 0);
  assert_true(ls.fallback >= 20);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tserver_stop(&s);
}

/* --- a slow server (DEBUG SLEEP) -------------------------------------------*/

typedef struct sleeper_s {
  int port;
  double seconds;
} sleeper_t;

static void* sleeper(void* arg) {
  sleeper_t* sl = arg;
  redisContext* c = tr_raw("127.0.0.1", sl->port, -1);
  if (c == NULL) return NULL;
  struct timeval tv = {10, 0};
  redisSetTimeout(c, tv);
  char buf[32];
  snprintf(buf, sizeof(buf), "%.3f", sl->seconds);
  redisReply* rep = redisCommand(c, "DEBUG SLEEP %s", buf);
  if (rep != NULL) freeReplyObject(rep);
  redisFree(c);
  return NULL;
}

static void test_slow_server(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = fopts(s.url);
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l = limiter(r, "100/s", ADMIT_REDIS_FAIL_CLOSED);
  admit_decision_t d;
  assert_int_equal(timed_try(l, "x", &d), ADMIT_REDIS_OK);
  sleeper_t sl = {s.port, (double)(cmd_timeout() * 3) / 1e9};
  pthread_t t;
  pthread_create(&t, NULL, sleeper, &sl);
  tr_sleep_ms(50);
  /* The command may have run after the server wakes: its outcome is
   * unknown, so it fails (closed) and is never retried. */
  uint64_t t0 = admit_now_ns();
  assert_int_equal(timed_try(l, "x", &d), ADMIT_EUNAVAILABLE);
  assert_true(admit_now_ns() - t0 >= cmd_timeout() / 2);
  pthread_join(t, NULL);
  wait_recovered(l, 5000);
  admit_redis_stats_t st;
  assert_int_equal(admit_redis_stats(r, &st), 0);
  assert_true(st.timeouts >= 1);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tserver_stop(&s);
}

/* --- SCRIPT FLUSH ---------------------------------------------------------*/

static void test_script_flush(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = fopts(s.url);
  /* No heartbeat after the first, whose own reload would count too. */
  o.heartbeat_ns = 3600 * (uint64_t)ADMIT_SECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l = limiter(r, "10/min", ADMIT_REDIS_FAIL_CLOSED);
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "k", 1, 1, &d), 0);
  assert_int_equal(d.remaining, 9);
  redisContext* c = tr_raw("127.0.0.1", s.port, -1);
  for (int round = 0; round < 3; round++) {
    assert_true(tr_ok(c, "SCRIPT FLUSH"));
    /* NOSCRIPT: the script certainly did not run, so it is loaded again
     * and the call goes through, counted once. */
    assert_int_equal(admit_redis_limiter_try(l, "k", 1, 1, &d), 0);
    assert_true(d.allowed);
    assert_int_equal(d.remaining, 8 - (uint64_t)round);
  }
  admit_redis_stats_t st;
  assert_int_equal(admit_redis_stats(r, &st), 0);
  /* One load per flush; on a slow run (valgrind) the first heartbeat may
   * land after a flush and load the scripts once more. */
  assert_true(st.script_loads >= 3 && st.script_loads <= 4);
  assert_int_equal(st.failures, 0);
  redisFree(c);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tserver_stop(&s);
}

/* --- the fallback's share, from heartbeats ---------------------------------*/

static void test_fallback_share(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = fopts(s.url);
  admit_redis_t* a = NULL;
  admit_redis_t* b = NULL;
  assert_int_equal(admit_redis_new(&a, &o), 0);
  assert_int_equal(admit_redis_new(&b, &o), 0);
  admit_redis_stats_t sa, sb;
  for (int i = 0; i < 200; i++) {
    admit_redis_stats(a, &sa);
    admit_redis_stats(b, &sb);
    if (sa.instances == 2 && sb.instances == 2) break;
    tr_sleep_ms(20);
  }
  assert_int_equal(sa.instances, 2);
  assert_int_equal(sb.instances, 2);
  redisContext* c = tr_raw("127.0.0.1", s.port, -1);
  assert_true(tr_int(c, "PTTL t-fail:{instances}") > 0);
  redisFree(c);

  /* 100/hour globally; Redis dies: each of the two falls back to half. */
  admit_redis_limiter_t* la = limiter(a, "100/h", ADMIT_REDIS_FALLBACK);
  admit_redis_limiter_t* lb = limiter(b, "100/h", ADMIT_REDIS_FALLBACK);
  tserver_kill(&s);
  int na = 0, nb = 0;
  admit_decision_t d;
  for (int i = 0; i < 120; i++) {
    int rc = admit_redis_limiter_try(la, "v", 1, 1, &d);
    assert_int_equal(rc, ADMIT_REDIS_LOCAL);
    na += d.allowed;
    rc = admit_redis_limiter_try(lb, "v", 1, 1, &d);
    assert_int_equal(rc, ADMIT_REDIS_LOCAL);
    nb += d.allowed;
  }
  assert_int_equal(na, 50);
  assert_int_equal(nb, 50);
  admit_redis_limiter_stats_t ls;
  assert_int_equal(admit_redis_limiter_stats(la, &ls), 0);
  assert_int_equal(ls.instances, 2);
  assert_int_equal(ls.degraded, 1);
  admit_redis_limiter_free(la);
  admit_redis_limiter_free(lb);
  admit_redis_free(a);
  admit_redis_free(b);
  tserver_stop(&s);
}

/* The same failures with every call through the I/O thread. */
#define PIPELINED(name)                        \
  static void name##_pipelined(void** state) { \
    pipeline_only = 1;                         \
    name(state);                               \
    pipeline_only = 0;                         \
  }
PIPELINED(test_refused_then_recovers)
PIPELINED(test_killed_and_restarted_empty)
PIPELINED(test_hung_server_breaker)
PIPELINED(test_slow_server)
PIPELINED(test_script_flush)

static int reset_mode(void** state) {
  (void)state;
  pipeline_only = 0;
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_auth_acl_select),
      cmocka_unit_test(test_refused_then_recovers),
      cmocka_unit_test(test_semaphore_policies),
      cmocka_unit_test(test_killed_and_restarted_empty),
      cmocka_unit_test(test_hung_server_breaker),
      cmocka_unit_test(test_slow_server),
      cmocka_unit_test(test_script_flush),
      cmocka_unit_test(test_fallback_share),
      cmocka_unit_test_teardown(test_refused_then_recovers_pipelined,
                                reset_mode),
      cmocka_unit_test_teardown(test_killed_and_restarted_empty_pipelined,
                                reset_mode),
      cmocka_unit_test_teardown(test_hung_server_breaker_pipelined,
                                reset_mode),
      cmocka_unit_test_teardown(test_slow_server_pipelined, reset_mode),
      cmocka_unit_test_teardown(test_script_flush_pipelined, reset_mode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
