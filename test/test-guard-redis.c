/* The guard with the Redis limiter as its global stage: a vendor's
 * Retry-After pauses every process, the step API waits for Redis without
 * blocking, and units taken for refused or cancelled attempts go back. */
#include "test-redis.h"

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)
#define PREFIX "t-guard"

/* Deletes this test's keys from the shared server (DB 15). */
static void flush_keys(void) {
  const char* port = getenv("ADMIT_TEST_REDIS_PORT");
  if (port == NULL) return;
  struct timeval tv = {2, 0};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", atoi(port), tv);
  if (c == NULL || c->err) {
    if (c != NULL) redisFree(c);
    return;
  }
  redisReply* r = redisCommand(c, "SELECT 15");
  if (r != NULL) freeReplyObject(r);
  char cursor[32] = "0";
  do {
    r = redisCommand(c, "SCAN %s MATCH " PREFIX ":* COUNT 1000", cursor);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      if (r != NULL) freeReplyObject(r);
      break;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      redisReply* d = redisCommand(c, "DEL %b", r->element[1]->element[i]->str,
                                   r->element[1]->element[i]->len);
      if (d != NULL) freeReplyObject(d);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  redisFree(c);
}

/* One process's view: a connection, a limiter and a guard for "vendor". */
typedef struct side_s {
  admit_redis_t* conn;
  admit_redis_limiter_t* lim;
  admit_semaphore_t* sem;
  admit_guard_t* g;
} side_t;

/* Opens a side on @p ro (NULL: the shared server with defaults), with
 * the limiter's failure policy @p policy; with @p ro, the semaphore queues
 * up to 8 waiters. */
static int side_open_with(side_t* s, const admit_redis_options_t* ro,
                          const char* rate, uint64_t sem_cap,
                          admit_redis_policy_t policy) {
  memset(s, 0, sizeof(*s));
  admit_redis_options_t o = {0};
  if (ro != NULL) o = *ro;
  if (o.url == NULL) o.url = test_redis_url();
  o.prefix = PREFIX;
  int rc = admit_redis_new(&s->conn, &o);
  if (rc < 0) return rc;
  admit_quota_t q;
  rc = admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, rate, NULL);
  if (rc < 0) return rc;
  admit_redis_limiter_options_t lo = {0};
  lo.quota = &q;
  lo.name = "guard";
  lo.on_failure = policy;
  rc = admit_redis_limiter_new(&s->lim, s->conn, &lo);
  if (rc < 0) return rc;
  if (sem_cap > 0) {
    admit_semaphore_options_t so = {0};
    so.capacity = sem_cap;
    so.max_waiters = ro != NULL ? 8 : 0;
    rc = admit_semaphore_new(&s->sem, &so);
    if (rc < 0) return rc;
  }
  admit_guard_options_t go = {0};
  go.name = "vendor";
  go.redis = s->lim;
  go.semaphore = s->sem;
  return admit_guard_new(&s->g, &go);
}

static int side_open(side_t* s, const char* rate, uint64_t sem_cap) {
  return side_open_with(s, NULL, rate, sem_cap, ADMIT_REDIS_FAIL_CLOSED);
}

static void side_close(side_t* s) {
  admit_guard_free(s->g);
  admit_semaphore_free(s->sem);
  admit_redis_limiter_free(s->lim);
  admit_redis_free(s->conn);
}

/* The second process. Plain checks (not cmocka's, which would unwind into
 * the parent's runner); the exit code names the first that failed. */
static int child_main(int rd, int wr) {
  side_t s;
  if (side_open(&s, "100/s", 0) != 0) return 10;
  char b = 0;
  if (write(wr, "r", 1) != 1) return 11; /* ready */
  if (read(rd, &b, 1) != 1) return 12;   /* the parent paused the vendor */
  admit_guard_permit_t p;
  /* The pause outlasts 200 ms of queue time: refused at once at the global
   * stage, having taken nothing, with the wait it would have needed. */
  int rc = admit_guard_enter(s.g, &p, 200 * MS);
  if (rc != ADMIT_ETIMEDOUT) return 13;
  if (p.stage != ADMIT_GUARD_STAGE_GLOBAL) return 14;
  if (p.retry_after_ns <= 200 * MS) return 15;
  admit_guard_metrics_t m;
  admit_guard_metrics(s.g, &m);
  if (m.rejected_global != 1 || m.paused_for_ns != 0) return 16;
  if (m.global_degraded != 0) return 17;
  /* With room to wait, it waits the pause out, then goes. */
  rc = admit_guard_enter(s.g, &p, 10 * SEC);
  if (rc != 0) return 18;
  admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS);
  admit_guard_metrics(s.g, &m);
  if (m.admitted != 1) return 19;
  if (m.queue_wait.sum_ns < 500 * MS) return 20;
  side_close(&s);
  return 0;
}

/* A vendor's 429 Retry-After seen by one process pauses the other. */
static void test_retry_after_across_processes(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  flush_keys();
  int to_child[2], to_parent[2];
  assert_int_equal(pipe(to_child), 0);
  assert_int_equal(pipe(to_parent), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(to_child[1]);
    close(to_parent[0]);
    _exit(child_main(to_child[0], to_parent[1]));
  }
  close(to_child[0]);
  close(to_parent[1]);
  side_t s;
  assert_int_equal(side_open(&s, "100/s", 0), 0);
  char b = 0;
  assert_int_equal(read(to_parent[0], &b, 1), 1);
  /* The vendor answered 429 with Retry-After: 2 s. The pause reaches
   * Redis asynchronously: the child is told once it is there. */
  assert_int_equal(admit_guard_pause(s.g, 2 * SEC), 0);
  admit_redis_limiter_stats_t st;
  for (int i = 0; i < 5000; i++) {
    assert_int_equal(admit_redis_limiter_stats(s.lim, &st), 0);
    if (st.pauses + st.pauses_lost > 0) break;
    admit_sleep_ns(ADMIT_MILLISECOND);
  }
  assert_int_equal(st.pauses, 1);
  assert_int_equal(write(to_child[1], "p", 1), 1);
  /* This process pauses too, locally, before even asking Redis. */
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(s.g, &p, 100 * MS), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_PAUSE);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  close(to_child[1]);
  close(to_parent[0]);
  side_close(&s);
  flush_keys();
}

typedef struct flag_s {
  _Atomic int n;
} flag_t;

static void on_notify(void* ud) { atomic_fetch_add(&((flag_t*)ud)->n, 1); }

static void wait_flag(flag_t* f, int n) {
  for (int i = 0; i < 5000 && atomic_load(&f->n) < n; i++)
    admit_sleep_ns(ADMIT_MILLISECOND);
}

/* The step API asks Redis without blocking: PENDING, one notify from the
 * I/O thread, then READY. */
static void test_step_waits_for_redis(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  flush_keys();
  side_t s;
  assert_int_equal(side_open(&s, "100/s", 1), 0);
  flag_t f = {0};
  admit_guard_permit_t p;
  uint64_t w;
  assert_int_equal(admit_guard_start(s.g, &p, 5 * SEC, on_notify, &f), 0);
  int rc = admit_guard_step(&p, &w);
  assert_int_equal(rc, ADMIT_GUARD_PENDING);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_GLOBAL);
  wait_flag(&f, 1);
  assert_int_equal(atomic_load(&f.n), 1);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_READY);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(atomic_load(&f.n), 1);
  admit_guard_metrics_t m;
  admit_guard_metrics(s.g, &m);
  assert_int_equal(m.global_degraded, 0);
  assert_int_equal(m.admitted, 1);
  side_close(&s);
  flush_keys();
}

/* Waits (at most 5 s) until the limiter has applied @p n refunds: the
 * guard gives units back asynchronously. */
static void wait_refunds(side_t* s, uint64_t n) {
  admit_redis_limiter_stats_t st;
  for (int i = 0; i < 5000; i++) {
    assert_int_equal(admit_redis_limiter_stats(s->lim, &st), 0);
    if (st.refunds + st.refunds_lost >= n) break;
    admit_sleep_ns(ADMIT_MILLISECOND);
  }
  assert_int_equal(st.refunds, n);
  assert_int_equal(st.refunds_lost, 0);
}

static uint64_t remaining(side_t* s) {
  admit_decision_t d;
  assert_true(admit_redis_limiter_peek(s->lim, "vendor", 6, &d) >= 0);
  return d.remaining;
}

/* Units the global stage took come back when the semaphore refuses, and
 * when the attempt was cancelled before Redis answered. */
static void test_redis_units_given_back(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  flush_keys();
  side_t s;
  /* One unit per hour: a unit not given back would show for an hour. */
  assert_int_equal(side_open(&s, "3/h", 1), 0);
  assert_int_equal(remaining(&s), 3);
  assert_int_equal(admit_semaphore_try(s.sem), 1);
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(s.g, &p, 5 * SEC), ADMIT_EFULL);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_SEMAPHORE);
  wait_refunds(&s, 1);
  assert_int_equal(remaining(&s), 3);
  admit_semaphore_release(s.sem);
  admit_guard_permit_t q;
  assert_int_equal(admit_guard_enter(s.g, &q, 5 * SEC), 0);
  assert_int_equal(remaining(&s), 2); /* q's unit is spent on its call */
  assert_int_equal(admit_guard_leave(&q, ADMIT_OUTCOME_SUCCESS), 0);
  /* Cancelled while Redis decides: the late reply's unit goes back when it
   * lands, and freeing the guard waits for replies and refunds still on
   * their way. */
  uint64_t w;
  admit_guard_start(s.g, &p, 5 * SEC, NULL, NULL);
  /* Usually Redis has not answered yet (PENDING); on a slow run (TSan) the
   * reply may already have landed (READY). Either way the cancel must give
   * the unit back. */
  int rc = admit_guard_step(&p, &w);
  assert_true(rc == ADMIT_GUARD_PENDING || rc == ADMIT_GUARD_READY);
  assert_int_equal(admit_guard_cancel(&p), 0);
  admit_guard_free(s.g);
  s.g = NULL;
  assert_int_equal(remaining(&s), 2);
  side_close(&s);
  flush_keys();
}

/* Waits (at most @p ms) until the limiter counts @p lost lost refunds
 * and @p plost lost pauses; returns the time it took. */
static uint64_t wait_lost(side_t* s, uint64_t lost, uint64_t plost,
                          unsigned ms) {
  uint64_t t0 = admit_now_ns();
  admit_redis_limiter_stats_t st;
  for (unsigned i = 0; i < ms; i++) {
    assert_int_equal(admit_redis_limiter_stats(s->lim, &st), 0);
    if (st.refunds_lost >= lost && st.pauses_lost >= plost) break;
    admit_sleep_ns(ADMIT_MILLISECOND);
  }
  assert_int_equal(st.refunds, 0);
  assert_int_equal(st.refunds_lost, lost);
  assert_int_equal(st.pauses, 0);
  assert_int_equal(st.pauses_lost, plost);
  return admit_now_ns() - t0;
}

/* Parks an attempt at the (full) semaphore, holding a unit of the Redis
 * stage: PENDING at the global stage, one notify, PENDING again. */
static void park_at_semaphore(side_t* s, admit_guard_permit_t* p,
                              flag_t* f) {
  uint64_t w;
  int before = atomic_load(&f->n);
  assert_int_equal(admit_guard_start(s->g, p, 60 * SEC, on_notify, f), 0);
  int rc = admit_guard_step(p, &w);
  if (rc == ADMIT_GUARD_PENDING && p->stage == ADMIT_GUARD_STAGE_GLOBAL) {
    wait_flag(f, before + 1);
    rc = admit_guard_step(p, &w);
  }
  assert_int_equal(rc, ADMIT_GUARD_PENDING);
  assert_int_equal(p->stage, ADMIT_GUARD_STAGE_SEMAPHORE);
}

/* Records admit_guard_pause_cb() outcomes. */
typedef struct pauses_s {
  _Atomic int calls;
  _Atomic int unavailable;
  _Atomic int ok;
} pauses_t;

static void on_paused(void* ud, int status) {
  pauses_t* pz = ud;
  if (status == 0) atomic_fetch_add(&pz->ok, 1);
  if (status == ADMIT_EUNAVAILABLE) atomic_fetch_add(&pz->unavailable, 1);
  atomic_fetch_add(&pz->calls, 1);
}

/* With Redis hung, no guard function an event loop calls waits for it:
 * cancelling an attempt that holds Redis units and pausing the vendor
 * return at once; the refund and pauses fail within the command timeout,
 * counted in the limiter's stats, while the local pause holds; freeing the
 * guard waits for what is still on its way. */
static void test_never_waits_for_hung_redis(void** state) {
  (void)state;
  tserver_t srv;
  if (tserver_start(&srv, NULL) != 0) skip();
  uint64_t timeout = test_scale(300, 1500) * MS;
  admit_redis_options_t ro = {0};
  ro.url = srv.url;
  ro.command_timeout_ns = timeout;
  side_t s;
  assert_int_equal(side_open_with(&s, &ro, "100/s", 1,
                                  ADMIT_REDIS_FAIL_CLOSED),
                   0);
  assert_int_equal(admit_semaphore_try(s.sem), 1);
  flag_t f = {0};
  admit_guard_permit_t p1, p2;
  park_at_semaphore(&s, &p1, &f);
  park_at_semaphore(&s, &p2, &f);

  tserver_pause(&srv);
  pauses_t pz = {0};
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_guard_cancel(&p1), 0);
  assert_int_equal(admit_guard_pause_cb(s.g, 2 * SEC, on_paused, &pz), 0);
  assert_int_equal(admit_guard_vendor_quota(s.g, 0, 3 * SEC), 1);
  uint64_t took = admit_now_ns() - t0;
  if (took >= timeout / 2)
    fprintf(stderr, "cancel and pauses took %llu ms\n",
            (unsigned long long)(took / MS));
  assert_true(took < timeout / 2);
  assert_int_equal(p1.error, ADMIT_ECANCELED);
  admit_guard_metrics_t m;
  assert_int_equal(admit_guard_metrics(s.g, &m), 0);
  assert_int_equal(m.pauses, 2);
  assert_true(m.paused_for_ns > 2 * SEC);
  assert_int_equal(m.cancelled, 1);
  /* Within the command timeout: one refund and two pauses lost. */
  wait_lost(&s, 1, 2, (unsigned)(timeout / MS) + 5000);
  uint64_t all = admit_now_ns() - t0;
  assert_int_equal(atomic_load(&pz.calls), 1);
  assert_int_equal(atomic_load(&pz.unavailable), 1);
  if (all > timeout + 250 * MS)
    fprintf(stderr, "lost after %llu ms\n", (unsigned long long)(all / MS));
  assert_true(all <= timeout + 250 * MS);

  /* Freed with a refund on its way: the guard waits for it. */
  t0 = admit_now_ns();
  assert_int_equal(admit_guard_cancel(&p2), 0);
  assert_true(admit_now_ns() - t0 < timeout / 2);
  admit_guard_free(s.g);
  s.g = NULL;
  wait_lost(&s, 2, 2, 10);
  tserver_resume(&srv);
  assert_int_equal(atomic_load(&pz.calls), 1);
  admit_semaphore_release(s.sem);
  side_close(&s);
  tserver_stop(&srv);
}

/* The pause that never waits reaches Redis: the callback reports it, and
 * another instance of the limiter is paused. */
static void test_pause_cb_reaches_redis(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  flush_keys();
  side_t s;
  assert_int_equal(side_open(&s, "100/s", 0), 0);
  pauses_t pz = {0};
  assert_int_equal(admit_guard_pause_cb(s.g, 2 * SEC, on_paused, &pz), 0);
  for (int i = 0; i < 5000 && atomic_load(&pz.calls) == 0; i++)
    admit_sleep_ns(ADMIT_MILLISECOND);
  assert_int_equal(atomic_load(&pz.calls), 1);
  assert_int_equal(atomic_load(&pz.ok), 1);
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(s.lim, "vendor", 6, 1, &d), 0);
  assert_false(d.allowed);
  assert_true(d.retry_after_ns > SEC && d.retry_after_ns <= 2 * SEC);
  admit_redis_limiter_stats_t st;
  assert_int_equal(admit_redis_limiter_stats(s.lim, &st), 0);
  assert_int_equal(st.pauses, 1);
  assert_int_equal(st.pauses_lost, 0);
  assert_int_equal(admit_guard_pause_cb(NULL, SEC, on_paused, &pz),
                   ADMIT_EINVAL);
  side_close(&s);
  assert_int_equal(atomic_load(&pz.calls), 1);
  flush_keys();
}

/* Units the Redis stage's failure policy took locally (here the fallback,
 * with the backend breaker open) go back to the local fallback, never to
 * Redis, which did not take them. */
static void test_local_units_not_refunded_to_redis(void** state) {
  (void)state;
  tserver_t srv;
  if (tserver_start(&srv, NULL) != 0) skip();
  uint64_t timeout = test_scale(300, 1500) * MS;
  admit_redis_options_t ro = {0};
  ro.url = srv.url;
  ro.command_timeout_ns = timeout;
  ro.breaker_failures = 1;
  ro.breaker_cooldown_ns = 3600 * SEC;
  side_t s;
  assert_int_equal(side_open_with(&s, &ro, "3/h", 1, ADMIT_REDIS_FALLBACK),
                   0);
  /* A second instance, to read Redis while the first one's breaker is
   * open. */
  side_t o;
  ro.breaker_failures = 0;
  ro.breaker_cooldown_ns = 0;
  assert_int_equal(side_open_with(&o, &ro, "3/h", 0, ADMIT_REDIS_FAIL_CLOSED),
                   0);
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(s.lim, "vendor", 6, 1, &d),
                   ADMIT_REDIS_OK);
  /* Hung for one call: the breaker opens (and that call may still run
   * when the server wakes). */
  tserver_pause(&srv);
  assert_int_equal(admit_redis_limiter_try(s.lim, "x", 1, 1, &d),
                   ADMIT_REDIS_LOCAL);
  tserver_resume(&srv);
  admit_redis_stats_t rs;
  assert_int_equal(admit_redis_stats(s.conn, &rs), 0);
  assert_int_equal(rs.breaker, ADMIT_REDIS_BREAKER_OPEN);
  uint64_t before = 0;
  for (int i = 0; i < 500; i++) {
    if (admit_redis_limiter_peek(o.lim, "vendor", 6, &d) == ADMIT_REDIS_OK)
      break;
    tr_sleep_ms(10);
  }
  assert_int_equal(admit_redis_limiter_peek(o.lim, "vendor", 6, &d),
                   ADMIT_REDIS_OK);
  before = d.remaining;
  assert_int_equal(before, 2);

  /* The attempt's unit comes from the fallback; cancelled, it goes back
   * there. */
  assert_int_equal(admit_semaphore_try(s.sem), 1);
  flag_t f = {0};
  admit_guard_permit_t p;
  park_at_semaphore(&s, &p, &f);
  admit_guard_metrics_t m;
  assert_int_equal(admit_guard_metrics(s.g, &m), 0);
  assert_int_equal(m.global_degraded, 1);
  assert_int_equal(admit_guard_cancel(&p), 0);
  admit_guard_free(s.g); /* waits for any refund on its way */
  s.g = NULL;
  admit_redis_limiter_stats_t st;
  assert_int_equal(admit_redis_limiter_stats(s.lim, &st), 0);
  assert_int_equal(st.refunds + st.refunds_lost, 0);
  assert_int_equal(admit_redis_limiter_peek(o.lim, "vendor", 6, &d),
                   ADMIT_REDIS_OK);
  assert_int_equal(d.remaining, before);
  admit_semaphore_release(s.sem);
  side_close(&o);
  side_close(&s);
  tserver_stop(&srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_retry_after_across_processes),
      cmocka_unit_test(test_step_waits_for_redis),
      cmocka_unit_test(test_redis_units_given_back),
      cmocka_unit_test(test_never_waits_for_hung_redis),
      cmocka_unit_test(test_pause_cb_reaches_redis),
      cmocka_unit_test(test_local_units_not_refunded_to_redis),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
