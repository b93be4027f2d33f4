/* The guard with the Redis limiter as its global stage: a vendor's
 * Retry-After pauses every process, the step API waits for Redis without
 * blocking, and units taken for refused or cancelled attempts go back. */
#include "helpers.h"

#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)
#define PREFIX "t-guard"

#define REDIS_OR_SKIP()                                                     \
  do {                                                                      \
    if (test_redis_url() == NULL) {                                         \
      fprintf(stderr, "no ADMIT_TEST_REDIS_URL: skipped\n");                \
      skip();                                                               \
    }                                                                       \
  } while (0)

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

static int side_open(side_t* s, const char* rate, uint64_t sem_cap) {
  memset(s, 0, sizeof(*s));
  admit_redis_options_t ro = {0};
  ro.url = test_redis_url();
  ro.prefix = PREFIX;
  int rc = admit_redis_new(&s->conn, &ro);
  if (rc < 0) return rc;
  admit_quota_t q;
  rc = admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, rate, NULL);
  if (rc < 0) return rc;
  admit_redis_limiter_options_t lo = {0};
  lo.quota = &q;
  lo.name = "guard";
  rc = admit_redis_limiter_new(&s->lim, s->conn, &lo);
  if (rc < 0) return rc;
  if (sem_cap > 0) {
    admit_semaphore_options_t so = {0};
    so.capacity = sem_cap;
    rc = admit_semaphore_new(&s->sem, &so);
    if (rc < 0) return rc;
  }
  admit_guard_options_t go = {0};
  go.name = "vendor";
  go.redis = s->lim;
  go.semaphore = s->sem;
  return admit_guard_new(&s->g, &go);
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
  /* The vendor answered 429 with Retry-After: 2 s. */
  assert_int_equal(admit_guard_pause(s.g, 2 * SEC), 0);
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
  assert_int_equal(remaining(&s), 3);
  admit_semaphore_release(s.sem);
  admit_guard_permit_t q;
  assert_int_equal(admit_guard_enter(s.g, &q, 5 * SEC), 0);
  assert_int_equal(remaining(&s), 2); /* q's unit is spent on its call */
  assert_int_equal(admit_guard_leave(&q, ADMIT_OUTCOME_SUCCESS), 0);
  /* Cancelled while Redis decides: the late reply's unit is owed, and paid
   * back by the guard's next call, at the latest when it is freed (which
   * waits for replies still on their way). */
  uint64_t w;
  admit_guard_start(s.g, &p, 5 * SEC, NULL, NULL);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(admit_guard_cancel(&p), 0);
  admit_guard_free(s.g);
  s.g = NULL;
  assert_int_equal(remaining(&s), 2);
  side_close(&s);
  flush_keys();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_retry_after_across_processes),
      cmocka_unit_test(test_step_waits_for_redis),
      cmocka_unit_test(test_redis_units_given_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
