/* The asynchronous forms: callbacks on the I/O thread (for bindings) and
 * callbacks on a caller's libuv loop, which never blocks. */
#include "test-redis.h"

#include <pthread.h>
#include <uv.h>

static admit_redis_limiter_t* limiter(admit_redis_t* r, const char* spec,
                                      admit_redis_policy_t policy,
                                      const char* name) {
  return tr_limiter(r, ADMIT_TOKEN_BUCKET, spec, name, policy);
}

typedef struct tally_s {
  uv_thread_t loop_thread; /* the thread callbacks must run on */
  int check_thread;
  int calls;
  int allowed;
  int ok;
  int local;
  int unavailable;
  int other;
  int wrong_thread;
  int max_in_flight;
} tally_t;

static void on_decision(void* ud, int status, const admit_decision_t* d) {
  tally_t* t = ud;
  if (t->check_thread) {
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &t->loop_thread)) t->wrong_thread++;
  }
  t->calls++;
  if (status == ADMIT_REDIS_OK)
    t->ok++;
  else if (status == ADMIT_REDIS_LOCAL)
    t->local++;
  else if (status == ADMIT_EUNAVAILABLE)
    t->unavailable++;
  else
    t->other++;
  if (status >= 0 && d != NULL && d->allowed) t->allowed++;
}

/* 256 decisions in flight at once from one loop thread. */
static void test_uv_many_in_flight(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-async");
  o.command_timeout_ns = test_scale(1000, 5000) * (uint64_t)ADMIT_MILLISECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l =
      limiter(r, "100/h", ADMIT_REDIS_FAIL_CLOSED, "uv");
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  admit_redis_loop_t* lp = NULL;
  assert_int_equal(admit_redis_loop_new(&lp, &loop), 0);
  tally_t t;
  memset(&t, 0, sizeof(t));
  t.loop_thread = uv_thread_self();
  t.check_thread = 1;
  for (int i = 0; i < 256; i++)
    assert_int_equal(admit_redis_limiter_try_uv(l, lp, "k", 1, 1,
                                                on_decision, &t),
                     0);
  /* Nothing ran inside the calls: callbacks come from the loop. */
  assert_int_equal(t.calls, 0);
  while (t.calls < 256) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(t.ok, 256);
  assert_int_equal(t.allowed, 100);
  assert_int_equal(t.wrong_thread, 0);
  /* Bad arguments fail at once and never call back. */
  assert_int_equal(admit_redis_limiter_try_uv(l, lp, "k", 1, 0, on_decision,
                                              &t),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_try_uv(l, NULL, "k", 1, 1,
                                              on_decision, &t),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_try_uv(l, lp, "k", 1, 1, NULL, &t),
                   ADMIT_EINVAL);
  admit_redis_loop_t* nolp = NULL;
  assert_int_equal(admit_redis_loop_new(&nolp, NULL), ADMIT_EINVAL);
  assert_null(nolp);

  /* Closing with calls in flight: they still complete, then the binding
   * goes away and the loop has nothing left. */
  memset(&t, 0, sizeof(t));
  for (int i = 0; i < 50; i++)
    assert_int_equal(admit_redis_limiter_try_uv(l, lp, "k2", 2, 1,
                                                on_decision, &t),
                     0);
  admit_redis_loop_close(lp);
  assert_int_equal(admit_redis_limiter_try_uv(l, lp, "k2", 2, 1, on_decision,
                                              &t),
                   ADMIT_ECLOSED);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(t.calls, 50);
  assert_int_equal(t.allowed, 50);
  assert_int_equal(uv_loop_close(&loop), 0);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tr_flush_shared("t-async");
}

/* The loop is never blocked: a timer keeps ticking while Redis is hung. */
static void on_tick(uv_timer_t* h) { (*(int*)h->data)++; }

static void test_uv_never_blocks_on_hung_server(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = tr_opts(s.url, "t-async");
  o.command_timeout_ns = test_scale(300, 1500) * (uint64_t)ADMIT_MILLISECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l = limiter(r, "100/s", ADMIT_REDIS_FAIL_OPEN, "hung");
  uv_loop_t loop;
  uv_loop_init(&loop);
  admit_redis_loop_t* lp = NULL;
  assert_int_equal(admit_redis_loop_new(&lp, &loop), 0);
  int ticks = 0;
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  timer.data = &ticks;
  uv_timer_start(&timer, on_tick, 10, 10);
  tserver_pause(&s);
  tally_t t;
  memset(&t, 0, sizeof(t));
  for (int i = 0; i < 20; i++)
    assert_int_equal(admit_redis_limiter_try_uv(l, lp, "k", 1, 1,
                                                on_decision, &t),
                     0);
  while (t.calls < 20) uv_run(&loop, UV_RUN_ONCE);
  /* Failed open after the timeout, while the timer kept running. */
  assert_int_equal(t.local, 20);
  assert_int_equal(t.allowed, 20);
  assert_true(ticks >= 5);
  /* With the breaker open, answers come without touching Redis, still on
   * the loop. */
  memset(&t, 0, sizeof(t));
  for (int i = 0; i < 10; i++)
    assert_int_equal(admit_redis_limiter_try_uv(l, lp, "k", 1, 1,
                                                on_decision, &t),
                     0);
  while (t.calls < 10) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(t.local, 10);
  tserver_resume(&s);
  uv_close((uv_handle_t*)&timer, NULL);
  admit_redis_loop_close(lp);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  tserver_stop(&s);
}

/* Callbacks on the I/O thread, from many threads (the bindings' form). */
typedef struct cbwait_s {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  tally_t t;
} cbwait_t;

static void on_cb(void* ud, int status, const admit_decision_t* d) {
  cbwait_t* w = ud;
  pthread_mutex_lock(&w->mu);
  on_decision(&w->t, status, d);
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

typedef struct cbthread_s {
  admit_redis_limiter_t* l;
  cbwait_t* w;
  int n;
} cbthread_t;

static void* cb_submitter(void* arg) {
  cbthread_t* ct = arg;
  for (int i = 0; i < ct->n; i++)
    if (admit_redis_limiter_try_cb(ct->l, "cb", 2, 1, on_cb, ct->w) != 0)
      abort();
  return NULL;
}

static void test_cb_from_threads(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-async");
  o.command_timeout_ns = test_scale(1000, 5000) * (uint64_t)ADMIT_MILLISECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l =
      limiter(r, "500/h", ADMIT_REDIS_FAIL_CLOSED, "cb");
  cbwait_t w;
  memset(&w, 0, sizeof(w));
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  int per = (int)test_scale(200, 50);
  cbthread_t ct = {l, &w, per};
  pthread_t th[4];
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, cb_submitter, &ct);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  pthread_mutex_lock(&w.mu);
  while (w.t.calls < 4 * per) pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
  assert_int_equal(w.t.ok, 4 * per);
  assert_int_equal(w.t.allowed, 4 * per < 500 ? 4 * per : 500);
  assert_int_equal(admit_redis_limiter_try_cb(l, "cb", 2, 501, on_cb, &w),
                   ADMIT_EINVAL);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  pthread_mutex_destroy(&w.mu);
  pthread_cond_destroy(&w.cv);
  tr_flush_shared("t-async");
}

/* Freeing the connection completes whatever is still queued. */
static void test_free_completes_pending(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = tr_opts(s.url, "t-async");
  o.command_timeout_ns = 5 * (uint64_t)ADMIT_SECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l =
      limiter(r, "100/s", ADMIT_REDIS_FAIL_CLOSED, "fr");
  cbwait_t w;
  memset(&w, 0, sizeof(w));
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  tserver_pause(&s);
  for (int i = 0; i < 10; i++)
    assert_int_equal(admit_redis_limiter_try_cb(l, "k", 1, 1, on_cb, &w), 0);
  tr_sleep_ms(50);
  admit_redis_free(r);
  /* Every callback ran, with ADMIT_ECLOSED, before free returned. */
  assert_int_equal(w.t.calls, 10);
  assert_int_equal(w.t.other, 10);
  admit_redis_limiter_free(l);
  tserver_stop(&s);
  pthread_mutex_destroy(&w.mu);
  pthread_cond_destroy(&w.cv);
}

/* --- refunds and pauses that never block ---------------------------------*/

typedef struct done_s {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uv_thread_t thread; /* the thread callbacks must run on, if check */
  int check;
  int wrong_thread;
  int calls;
  int ok;
  int unavailable;
  int other;
  uint64_t until; /* the last pause end */
  uint64_t done_at; /* admit_now_ns() of the last callback */
} done_t;

static void done_init(done_t* w) {
  memset(w, 0, sizeof(*w));
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
}

static void done_destroy(done_t* w) {
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
}

static void on_done(void* ud, int status, uint64_t until_ns) {
  done_t* w = ud;
  pthread_mutex_lock(&w->mu);
  if (w->check) {
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &w->thread)) w->wrong_thread++;
  }
  w->calls++;
  if (status == 0)
    w->ok++;
  else if (status == ADMIT_EUNAVAILABLE)
    w->unavailable++;
  else
    w->other++;
  if (status == 0 && until_ns != 0) w->until = until_ns;
  if (status < 0 && until_ns != 0) w->other++; /* no end on failure */
  w->done_at = admit_now_ns();
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void done_wait(done_t* w, int n) {
  pthread_mutex_lock(&w->mu);
  while (w->calls < n) pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
}

static void expect_stats(admit_redis_limiter_t* l, uint64_t refunds,
                         uint64_t refunds_lost, uint64_t pauses,
                         uint64_t pauses_lost) {
  admit_redis_limiter_stats_t st;
  assert_int_equal(admit_redis_limiter_stats(l, &st), 0);
  assert_int_equal(st.refunds, refunds);
  assert_int_equal(st.refunds_lost, refunds_lost);
  assert_int_equal(st.pauses, pauses);
  assert_int_equal(st.pauses_lost, pauses_lost);
}

/* A refund and a pause with callbacks on the I/O thread: the same effect
 * as the blocking calls, counted in the stats. */
static void test_refund_pause_cb(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-async");
  o.command_timeout_ns = test_scale(1000, 5000) * (uint64_t)ADMIT_MILLISECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l =
      limiter(r, "3/h", ADMIT_REDIS_FAIL_CLOSED, "rp");
  admit_decision_t d;
  for (int i = 0; i < 3; i++)
    assert_int_equal(admit_redis_limiter_try(l, "k", 1, 1, &d), 0);
  assert_int_equal(d.remaining, 0);
  done_t w;
  done_init(&w);
  assert_int_equal(admit_redis_limiter_refund_cb(l, "k", 1, 2, on_done, &w),
                   0);
  done_wait(&w, 1);
  assert_int_equal(w.ok, 1);
  assert_int_equal(w.until, 0);
  assert_int_equal(admit_redis_limiter_peek(l, "k", 1, &d), 0);
  assert_int_equal(d.remaining, 2);
  expect_stats(l, 1, 0, 0, 0);

  /* A pause: denied until its end, which the callback reports. */
  admit_redis_reservation_t rv;
  assert_int_equal(admit_redis_limiter_reserve(l, "k", 1, 1, &rv, &d), 0);
  uint64_t pause = 800 * (uint64_t)ADMIT_MILLISECOND;
  assert_int_equal(admit_redis_limiter_pause_cb(l, "k", 1, pause, on_done,
                                                &w),
                   0);
  done_wait(&w, 2);
  assert_int_equal(w.ok, 2);
  assert_true(w.until >= rv.taken_at_ns + pause);
  assert_true(w.until <= rv.taken_at_ns + pause + o.command_timeout_ns);
  assert_int_equal(admit_redis_limiter_try(l, "k", 1, 1, &d), 0);
  assert_false(d.allowed);
  assert_true(d.retry_after_ns > 0 && d.retry_after_ns <= pause);
  expect_stats(l, 1, 0, 1, 0);
  /* A refund of 0 units goes through too (and changes nothing). */
  assert_int_equal(admit_redis_limiter_refund_cb(l, "k", 1, 0, on_done, &w),
                   0);
  done_wait(&w, 3);
  assert_int_equal(w.ok, 3);
  expect_stats(l, 2, 0, 1, 0);

  /* Bad arguments fail at once and never call back. */
  assert_int_equal(admit_redis_limiter_refund_cb(NULL, "k", 1, 1, on_done,
                                                 &w),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_refund_cb(l, "k", 1, 1, NULL, &w),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_refund_cb(l, NULL, 1, 1, on_done, &w),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_refund_cb(l, "k", 0, 1, on_done, &w),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_pause_cb(NULL, "k", 1, 1, on_done,
                                                &w),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_pause_cb(l, "k", 1, 1, NULL, &w),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_pause_cb(l, NULL, 0, 1, on_done, &w),
                   ADMIT_EINVAL);
  tr_sleep_ms(20);
  assert_int_equal(w.calls, 3);
  assert_int_equal(w.other, 0);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  done_destroy(&w);
  tr_flush_shared("t-async");
}

/* The same on a caller's libuv loop: callbacks on the loop's thread,
 * never inside the call. */
static void test_refund_pause_uv(void** state) {
  (void)state;
  REDIS_OR_SKIP();
  admit_redis_options_t o = tr_opts(test_redis_url(), "t-async");
  o.command_timeout_ns = test_scale(1000, 5000) * (uint64_t)ADMIT_MILLISECOND;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l =
      limiter(r, "3/h", ADMIT_REDIS_FAIL_CLOSED, "rpuv");
  admit_decision_t d;
  for (int i = 0; i < 3; i++)
    assert_int_equal(admit_redis_limiter_try(l, "k", 1, 1, &d), 0);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  admit_redis_loop_t* lp = NULL;
  assert_int_equal(admit_redis_loop_new(&lp, &loop), 0);
  done_t w;
  done_init(&w);
  w.thread = uv_thread_self();
  w.check = 1;
  assert_int_equal(admit_redis_limiter_refund_uv(l, lp, "k", 1, 1, on_done,
                                                 &w),
                   0);
  assert_int_equal(admit_redis_limiter_pause_uv(l, lp, "k", 1,
                                                ADMIT_MILLISECOND, on_done,
                                                &w),
                   0);
  assert_int_equal(w.calls, 0);
  while (w.calls < 2) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(w.ok, 2);
  assert_int_equal(w.wrong_thread, 0);
  assert_true(w.until > 0);
  expect_stats(l, 1, 0, 1, 0);
  assert_int_equal(admit_redis_limiter_peek(l, "k", 1, &d), 0);
  assert_true(d.remaining <= 1);
  assert_int_equal(admit_redis_limiter_refund_uv(l, NULL, "k", 1, 1, on_done,
                                                 &w),
                   ADMIT_EINVAL);
  assert_int_equal(admit_redis_limiter_pause_uv(l, NULL, "k", 1, 1, on_done,
                                                &w),
                   ADMIT_EINVAL);
  admit_redis_loop_close(lp);
  assert_int_equal(admit_redis_limiter_refund_uv(l, lp, "k", 1, 1, on_done,
                                                 &w),
                   ADMIT_ECLOSED);
  assert_int_equal(admit_redis_limiter_pause_uv(l, lp, "k", 1, 1, on_done,
                                                &w),
                   ADMIT_ECLOSED);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(w.calls, 2);
  assert_int_equal(uv_loop_close(&loop), 0);
  /* A refund or pause that could not even start is lost, and counted. */
  expect_stats(l, 1, 1, 1, 1);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  done_destroy(&w);
  tr_flush_shared("t-async");
}

/* With the server hung, every form returns at once; the callbacks come
 * within the command timeout with ADMIT_EUNAVAILABLE, and the lost
 * refunds and pauses are counted. */
static void test_refund_pause_hung_server(void** state) {
  (void)state;
  tserver_t s;
  if (tserver_start(&s, NULL) != 0) skip();
  admit_redis_options_t o = tr_opts(s.url, "t-async");
  uint64_t timeout = test_scale(300, 1500) * (uint64_t)ADMIT_MILLISECOND;
  o.command_timeout_ns = timeout;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &o), 0);
  admit_redis_limiter_t* l = limiter(r, "100/s", ADMIT_REDIS_FAIL_OPEN, "hr");
  admit_decision_t d;
  assert_int_equal(admit_redis_limiter_try(l, "k", 1, 1, &d), ADMIT_REDIS_OK);
  uv_loop_t loop;
  uv_loop_init(&loop);
  admit_redis_loop_t* lp = NULL;
  assert_int_equal(admit_redis_loop_new(&lp, &loop), 0);
  done_t w, wl;
  done_init(&w);
  done_init(&wl);
  wl.thread = uv_thread_self();
  wl.check = 1;
  tserver_pause(&s);
  uint64_t t0 = admit_now_ns();
  for (int i = 0; i < 5; i++) {
    assert_int_equal(admit_redis_limiter_refund_cb(l, "k", 1, 1, on_done,
                                                   &w),
                     0);
    assert_int_equal(admit_redis_limiter_pause_cb(l, "k", 1, ADMIT_SECOND,
                                                  on_done, &w),
                     0);
    assert_int_equal(admit_redis_limiter_refund_uv(l, lp, "k", 1, 1,
                                                   on_done, &wl),
                     0);
    assert_int_equal(admit_redis_limiter_pause_uv(l, lp, "k", 1,
                                                  ADMIT_SECOND, on_done,
                                                  &wl),
                     0);
  }
  /* Twenty calls returned without waiting for the hung server. */
  uint64_t issued = admit_now_ns() - t0;
  if (issued >= timeout / 2)
    fprintf(stderr, "issuing took %llu ms\n",
            (unsigned long long)(issued / ADMIT_MILLISECOND));
  assert_true(issued < timeout / 2);
  assert_int_equal(w.calls + wl.calls, 0);
  done_wait(&w, 10);
  while (wl.calls < 10) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(w.unavailable, 10);
  assert_int_equal(wl.unavailable, 10);
  assert_int_equal(w.other + wl.other + wl.wrong_thread, 0);
  /* Within the command timeout (and the I/O thread's millisecond ticks). */
  uint64_t last = w.done_at > wl.done_at ? w.done_at : wl.done_at;
  if (last - t0 > timeout + 250 * ADMIT_MILLISECOND)
    fprintf(stderr, "callbacks after %llu ms\n",
            (unsigned long long)((last - t0) / ADMIT_MILLISECOND));
  assert_true(last - t0 <= timeout + 250 * ADMIT_MILLISECOND);
  expect_stats(l, 0, 10, 0, 10);
  tserver_resume(&s);
  admit_redis_loop_close(lp);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  admit_redis_limiter_free(l);
  admit_redis_free(r);
  done_destroy(&w);
  done_destroy(&wl);
  tserver_stop(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uv_many_in_flight),
      cmocka_unit_test(test_uv_never_blocks_on_hung_server),
      cmocka_unit_test(test_cb_from_threads),
      cmocka_unit_test(test_free_completes_pending),
      cmocka_unit_test(test_refund_pause_cb),
      cmocka_unit_test(test_refund_pause_uv),
      cmocka_unit_test(test_refund_pause_hung_server),
  };
  return cmocka_run_group_tests(tests, tr_group_setup, NULL);
}
