/* Exactness across processes: several processes, each with several
 * threads, share one key through Redis. Together they admit no more than
 * the quota allows over the time they ran, and not much less. */
#include "test-redis.h"

#include <pthread.h>

typedef struct worker_s {
  admit_redis_limiter_t* l;
  pthread_barrier_t* ready;
  pthread_barrier_t* go;
  uint64_t until;
  uint64_t admitted;
  uint64_t errors;
} worker_t;

static void* worker(void* arg) {
  worker_t* w = arg;
  admit_decision_t d;
  /* Warm up (valgrind translates code on first use), then start together
   * with every thread of every process. */
  admit_redis_limiter_try(w->l, "warm-up", 7, 1, &d);
  pthread_barrier_wait(w->ready);
  pthread_barrier_wait(w->go);
  while (admit_now_ns() < w->until) {
    int rc = admit_redis_limiter_try(w->l, "shared", 6, 1, &d);
    if (rc != ADMIT_REDIS_OK)
      w->errors++;
    else if (d.allowed)
      w->admitted++;
  }
  return NULL;
}

typedef struct report_s {
  uint64_t admitted;
  uint64_t errors;
  uint64_t start;
  uint64_t end;
} report_t;

/* One process: its own connection, @p nthreads threads until @p until. */
/* The shared rate (and burst): 200/s, lower under valgrind, whose slow
 * round trips could not otherwise keep the quota saturated. */
static uint64_t rate(void) { return test_scale(200, 50); }

static report_t run_child(int nthreads, uint64_t duration, int go_fd,
                          int ready_fd) {
  report_t rep;
  memset(&rep, 0, sizeof(rep));
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-exact");
  o.command_timeout_ns = 2 * (uint64_t)ADMIT_SECOND;
  admit_redis_t* r = NULL;
  if (admit_redis_new(&r, &o) != 0) {
    rep.errors = 1;
    return rep;
  }
  admit_quota_t q;
  char spec[32];
  snprintf(spec, sizeof(spec), "%llu/s", (unsigned long long)rate());
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, spec, NULL);
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = "exact";
  admit_redis_limiter_t* l = NULL;
  admit_redis_limiter_new(&l, r, &lo);
  worker_t w[8];
  pthread_t t[8];
  pthread_barrier_t ready, go;
  pthread_barrier_init(&ready, NULL, (unsigned)nthreads + 1);
  pthread_barrier_init(&go, NULL, (unsigned)nthreads + 1);
  for (int i = 0; i < nthreads; i++) {
    memset(&w[i], 0, sizeof(w[i]));
    w[i].l = l;
    w[i].ready = &ready;
    w[i].go = &go;
    pthread_create(&t[i], NULL, worker, &w[i]);
  }
  pthread_barrier_wait(&ready);
  /* Tell the parent this process is ready, wait for its go, so every
   * process starts together. */
  char c = 'r';
  if (write(ready_fd, &c, 1) != 1 || read(go_fd, &c, 1) != 1) rep.errors++;
  rep.start = admit_now_ns();
  for (int i = 0; i < nthreads; i++) w[i].until = rep.start + duration;
  pthread_barrier_wait(&go);
  for (int i = 0; i < nthreads; i++) {
    pthread_join(t[i], NULL);
    rep.admitted += w[i].admitted;
    rep.errors += w[i].errors;
  }
  rep.end = admit_now_ns();
  pthread_barrier_destroy(&ready);
  pthread_barrier_destroy(&go);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  return rep;
}

static void test_processes_share_one_key(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  const int nproc = (int)test_scale(4, 2);
  const int nthreads = (int)test_scale(4, 2);
  const uint64_t duration = test_scale(3000, 1000) * ADMIT_MILLISECOND;
  int go[2], back[2], ready[2];
  assert_int_equal(pipe(go), 0);
  assert_int_equal(pipe(back), 0);
  assert_int_equal(pipe(ready), 0);
  pid_t pids[8];
  for (int i = 0; i < nproc; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      close(go[1]);
      close(back[0]);
      close(ready[0]);
      report_t rep = run_child(nthreads, duration, go[0], ready[1]);
      ssize_t n = write(back[1], &rep, sizeof(rep));
      _exit(n == (ssize_t)sizeof(rep) ? 0 : 1);
    }
  }
  close(go[0]);
  close(back[1]);
  close(ready[1]);
  /* Every child connected and warmed up: start them together. */
  char buf[8] = {0};
  for (int i = 0; i < nproc; i++) assert_int_equal(read(ready[0], buf, 1), 1);
  close(ready[0]);
  assert_int_equal(write(go[1], buf, (size_t)nproc), nproc);
  close(go[1]);
  uint64_t total = 0, errors = 0, first = UINT64_MAX, last = 0;
  for (int i = 0; i < nproc; i++) {
    report_t rep;
    assert_int_equal(read(back[0], &rep, sizeof(rep)), sizeof(rep));
    total += rep.admitted;
    errors += rep.errors;
    if (rep.start < first) first = rep.start;
    if (rep.end > last) last = rep.end;
  }
  close(back[0]);
  for (int i = 0; i < nproc; i++) {
    int st = 0;
    waitpid(pids[i], &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  /* R/s with a burst of R: over the span the processes ran (a little
   * more than the duration, as they did not start at the same ns), at
   * most burst + rate * span; and at least 95% of burst + rate * duration. */
  uint64_t span = last - first, R = rate();
  uint64_t upper = R + (R * span + ADMIT_SECOND - 1) / ADMIT_SECOND;
  uint64_t ideal = R + R * duration / ADMIT_SECOND;
  fprintf(stderr, "admitted %llu (ideal %llu, upper %llu), errors %llu\n",
          (unsigned long long)total, (unsigned long long)ideal,
          (unsigned long long)upper, (unsigned long long)errors);
  assert_int_equal(errors, 0);
  assert_true(total <= upper);
  assert_true(total * 100 >= ideal * 95);
  tr_flush_shared("t-exact");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_processes_share_one_key),
  };
  return cmocka_run_group_tests(tests, tr_group_setup, NULL);
}
