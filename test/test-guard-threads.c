/* The guard under real threads (run under TSan too): blocking callers, the
 * step API with a global stage that replies from its own thread, and
 * cancellations racing grants and replies. Whatever happens, nothing is
 * held at the end, no more than the capacity runs at once, and every unit
 * the global stage handed out is either spent on an admitted call or
 * given back. */
#include "helpers.h"

#include <pthread.h>
#include <sched.h>

#define US ((uint64_t)ADMIT_MICROSECOND)
#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)

/* --- a global stage that answers from its own "I/O" thread -------------- */

typedef void (*done_fn)(void* arg, int status, const admit_decision_t* d);

typedef struct req_s {
  done_fn done;
  void* arg;
} req_t;

typedef struct io_s {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  req_t q[1024];
  size_t head, n;
  int stop;
  pthread_t thread;
  _Atomic uint64_t taken, refunded, calls, seq;
} io_t;

static void decide(io_t* io, admit_decision_t* d) {
  memset(d, 0, sizeof(*d));
  uint64_t k = atomic_fetch_add(&io->seq, 1);
  if (k % 7 == 3) { /* a denial now and then: wait a little, ask again */
    d->allowed = 0;
    d->retry_after_ns = 50 * US;
    return;
  }
  d->allowed = 1;
  atomic_fetch_add(&io->taken, 1);
}

static int io_try(void* ud, uint64_t cost, admit_decision_t* d) {
  (void)cost;
  io_t* io = ud;
  atomic_fetch_add(&io->calls, 1);
  decide(io, d);
  return 0;
}

static int io_try_async(void* ud, uint64_t cost, done_fn done, void* arg) {
  (void)cost;
  io_t* io = ud;
  atomic_fetch_add(&io->calls, 1);
  pthread_mutex_lock(&io->mu);
  if (io->n == sizeof(io->q) / sizeof(io->q[0])) {
    pthread_mutex_unlock(&io->mu);
    return ADMIT_EFULL;
  }
  io->q[(io->head + io->n) % 1024] = (req_t){done, arg};
  io->n++;
  pthread_cond_signal(&io->cond);
  pthread_mutex_unlock(&io->mu);
  return 0;
}

static int io_refund(void* ud, uint64_t cost) {
  (void)cost;
  atomic_fetch_add(&((io_t*)ud)->refunded, 1);
  return 0;
}

static void* io_thread(void* arg) {
  io_t* io = arg;
  pthread_mutex_lock(&io->mu);
  for (;;) {
    while (io->n == 0 && !io->stop) pthread_cond_wait(&io->cond, &io->mu);
    if (io->n == 0 && io->stop) break;
    req_t r = io->q[io->head];
    io->head = (io->head + 1) % 1024;
    io->n--;
    pthread_mutex_unlock(&io->mu);
    admit_decision_t d;
    decide(io, &d);
    r.done(r.arg, 0, &d);
    pthread_mutex_lock(&io->mu);
  }
  pthread_mutex_unlock(&io->mu);
  return NULL;
}

static void io_start(io_t* io) {
  memset(io, 0, sizeof(*io));
  pthread_mutex_init(&io->mu, NULL);
  pthread_cond_init(&io->cond, NULL);
  pthread_create(&io->thread, NULL, io_thread, io);
}

static void io_stop(io_t* io) {
  pthread_mutex_lock(&io->mu);
  io->stop = 1;
  pthread_cond_signal(&io->cond);
  pthread_mutex_unlock(&io->mu);
  pthread_join(io->thread, NULL);
  pthread_cond_destroy(&io->cond);
  pthread_mutex_destroy(&io->mu);
}

/* --- shared fixture ------------------------------------------------------ */

typedef struct world_s {
  admit_limiter_t* local;
  admit_semaphore_t* sem;
  admit_guard_t* g;
  io_t io;
  admit_guard_global_t global;
  _Atomic int64_t calling;
  _Atomic int64_t peak;
  _Atomic uint64_t admitted, refused, cancelled;
  int n;
  int capacity;
} world_t;

static void world_open(world_t* w, int capacity, uint64_t waiters) {
  memset(w, 0, sizeof(*w));
  w->capacity = capacity;
  admit_quota_t q;
  assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "200000/s", NULL),
                   0);
  q.burst[0] = 64;
  assert_int_equal(admit_limiter_new(&w->local, &q, NULL), 0);
  admit_semaphore_options_t so = {0};
  so.capacity = (uint64_t)capacity;
  so.max_waiters = waiters;
  assert_int_equal(admit_semaphore_new(&w->sem, &so), 0);
  io_start(&w->io);
  w->global.try_acquire = io_try;
  w->global.try_async = io_try_async;
  w->global.refund = io_refund;
  w->global.ud = &w->io;
  admit_guard_options_t go = {0};
  go.name = "stress";
  go.local = w->local;
  go.semaphore = w->sem;
  go.global = &w->global;
  go.retry_min = 1000000;
  assert_int_equal(admit_guard_new(&w->g, &go), 0);
}

/* Frees the guard (which waits for replies still on their way and pays
 * what they took) and checks that everything adds up. */
static void world_close(world_t* w) {
  admit_guard_metrics_t m;
  assert_int_equal(admit_guard_metrics(w->g, &m), 0);
  assert_int_equal(m.in_flight, 0);
  assert_int_equal(m.waiting, 0);
  assert_int_equal(m.admitted, atomic_load(&w->admitted));
  assert_int_equal(m.succeeded + m.failed + m.call_timeouts +
                       m.vendor_limited,
                   m.admitted);
  assert_int_equal(m.started, m.admitted + m.rejected_breaker +
                                  m.rejected_pause + m.rejected_local +
                                  m.rejected_global + m.rejected_semaphore +
                                  m.queue_timeouts + m.errors + m.cancelled);
  admit_guard_free(w->g);
  io_stop(&w->io);
  /* Every unit the global stage took was spent on an admitted call or
   * given back. */
  assert_int_equal(atomic_load(&w->io.taken),
                   atomic_load(&w->io.refunded) + atomic_load(&w->admitted));
  admit_semaphore_stats_t st;
  assert_int_equal(admit_semaphore_stats(w->sem, &st), 0);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.waiting, 0);
  assert_true(atomic_load(&w->peak) <= w->capacity);
  admit_semaphore_free(w->sem);
  admit_limiter_free(w->local);
}

static void in_call(world_t* w) {
  int64_t c = atomic_fetch_add(&w->calling, 1) + 1;
  int64_t pk = atomic_load(&w->peak);
  while (c > pk && !atomic_compare_exchange_weak(&w->peak, &pk, c)) {
  }
  sched_yield();
  atomic_fetch_sub(&w->calling, 1);
}

/* --- blocking callers ----------------------------------------------------- */

static void* blocking_worker(void* arg) {
  world_t* w = arg;
  for (int i = 0; i < w->n; i++) {
    admit_guard_permit_t p;
    int rc = admit_guard_enter(w->g, &p, (i % 5 == 0) ? 0 : 20 * MS);
    if (rc != 0) {
      atomic_fetch_add(&w->refused, 1);
      continue;
    }
    atomic_fetch_add(&w->admitted, 1);
    in_call(w);
    int outcome = i % 11 == 0 ? ADMIT_OUTCOME_FAILURE : ADMIT_OUTCOME_SUCCESS;
    assert_int_equal(admit_guard_leave(&p, outcome), 0);
  }
  return NULL;
}

static void test_blocking_threads(void** state) {
  (void)state;
  world_t w;
  world_open(&w, 2, 4);
  w.n = (int)test_scale(20000, 1500);
  enum { T = 4 };
  pthread_t th[T];
  for (int i = 0; i < T; i++)
    pthread_create(&th[i], NULL, blocking_worker, &w);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&w.admitted) + atomic_load(&w.refused),
                   (uint64_t)T * (uint64_t)w.n);
  assert_true(atomic_load(&w.admitted) > 0);
  world_close(&w);
}

/* --- event-loop callers: the step API ------------------------------------ */

typedef struct waker_s {
  _Atomic uint64_t notified;
} waker_t;

static void wake(void* ud) { atomic_fetch_add(&((waker_t*)ud)->notified, 1); }

static void* step_worker(void* arg) {
  world_t* w = arg;
  uint64_t rnd = (uint64_t)(uintptr_t)&rnd;
  for (int i = 0; i < w->n; i++) {
    waker_t wk = {0};
    admit_guard_permit_t p;
    assert_int_equal(admit_guard_start(w->g, &p, 5 * MS, wake, &wk), 0);
    uint64_t pendings = 0;
    for (;;) {
      uint64_t wait = 0;
      int rc = admit_guard_step(&p, &wait);
      if (rc == ADMIT_GUARD_READY) {
        atomic_fetch_add(&w->admitted, 1);
        in_call(w);
        assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
        break;
      }
      if (rc < 0) {
        atomic_fetch_add(&w->refused, 1);
        break;
      }
      if (rc == ADMIT_GUARD_WAIT) {
        admit_sleep_ns(wait);
        continue;
      }
      /* PENDING: sometimes give up at once, racing the grant or reply. */
      pendings++;
      rnd ^= rnd << 13;
      rnd ^= rnd >> 7;
      rnd ^= rnd << 17;
      if (rnd % 5 == 0) {
        assert_int_equal(admit_guard_cancel(&p), 0);
        atomic_fetch_add(&w->cancelled, 1);
        break;
      }
      /* Otherwise wait for the notify, or for the queue time to run out. */
      uint64_t until = admit_now_ns() + wait;
      while (atomic_load(&wk.notified) < pendings && admit_now_ns() < until)
        sched_yield();
      /* Stepping without a notify is allowed: it may still come, once. */
    }
    /* A notify is never given more often than PENDING was returned. The
     * waker lives on this stack frame: a late notify has landed before the
     * attempt was done (the guard waits for it), or never comes. */
    assert_true(atomic_load(&wk.notified) <= pendings);
  }
  return NULL;
}

static void test_step_threads(void** state) {
  (void)state;
  world_t w;
  world_open(&w, 2, 64);
  w.n = (int)test_scale(8000, 600);
  enum { T = 4 };
  pthread_t th[T];
  for (int i = 0; i < T; i++) pthread_create(&th[i], NULL, step_worker, &w);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&w.admitted) + atomic_load(&w.refused) +
                       atomic_load(&w.cancelled),
                   (uint64_t)T * (uint64_t)w.n);
  assert_true(atomic_load(&w.admitted) > 0);
  world_close(&w);
}

/* Both kinds of caller at once, plus threads that pause the vendor and
 * read the metrics. */
static void* pauser(void* arg) {
  world_t* w = arg;
  for (int i = 0; i < w->n / 50; i++) {
    admit_guard_pause(w->g, 200 * US);
    admit_guard_metrics_t m;
    admit_guard_metrics(w->g, &m);
    admit_sleep_ns(500 * US);
  }
  return NULL;
}

static void test_mixed_threads(void** state) {
  (void)state;
  world_t w;
  world_open(&w, 3, 8);
  w.n = (int)test_scale(6000, 400);
  pthread_t th[5];
  pthread_create(&th[0], NULL, blocking_worker, &w);
  pthread_create(&th[1], NULL, blocking_worker, &w);
  pthread_create(&th[2], NULL, step_worker, &w);
  pthread_create(&th[3], NULL, step_worker, &w);
  pthread_create(&th[4], NULL, pauser, &w);
  for (int i = 0; i < 5; i++) pthread_join(th[i], NULL);
  world_close(&w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_blocking_threads),
      cmocka_unit_test(test_step_threads),
      cmocka_unit_test(test_mixed_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
