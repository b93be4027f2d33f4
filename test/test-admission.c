/* Admission control: limit + bounded backlog, priorities, displacement,
 * CoDel-style shedding on simulated time, adaptive limits, cancellation,
 * blocking waits and a threaded stress run. */
#include "helpers.h"

#include <pthread.h>

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)

static fake_clock_t fc;
static admit_clock_t clk;

/* Records asynchronous completions in order. */
typedef struct log_s {
  uint64_t tickets[64];
  int status[64];
  int n;
} log_t;

static void record(void* ud, uint64_t ticket, int status) {
  log_t* l = ud;
  l->tickets[l->n] = ticket;
  l->status[l->n] = status;
  l->n++;
}

static admit_admission_t* make(uint32_t max, uint32_t backlog,
                               admit_admission_options_t* o) {
  clk = fake_clock(&fc, 1000 * SEC);
  admit_admission_options_t d = {0};
  if (o == NULL) o = &d;
  o->max_in_flight = max;
  o->backlog = backlog;
  o->clock = &clk;
  admit_admission_t* a = NULL;
  assert_int_equal(admit_admission_new(&a, o), 0);
  return a;
}

static admit_admission_stats_t stats(admit_admission_t* a) {
  admit_admission_stats_t st;
  assert_int_equal(admit_admission_stats(a, &st), 0);
  return st;
}

static void test_bad_args(void** state) {
  (void)state;
  admit_admission_t* a = NULL;
  admit_admission_options_t o = {0};
  admit_admission_permit_t p;
  assert_int_equal(admit_admission_new(NULL, NULL), ADMIT_EINVAL);
  o.adaptive = (admit_adaptive_t)9;
  assert_int_equal(admit_admission_new(&a, &o), ADMIT_EINVAL);
  o.adaptive = ADMIT_ADAPTIVE_AIMD;
  o.aimd_backoff = 1.5;
  assert_int_equal(admit_admission_new(&a, &o), ADMIT_EINVAL);
  o.aimd_backoff = 0;
  o.min_limit = 10;
  o.max_limit = 5;
  assert_int_equal(admit_admission_new(&a, &o), ADMIT_EINVAL);
  o.min_limit = o.max_limit = 0;
  o.gradient_smoothing = -1;
  assert_int_equal(admit_admission_new(&a, &o), ADMIT_EINVAL);
  assert_null(a);
  admit_admission_free(NULL);
  assert_int_equal(admit_admission_new(&a, NULL), 0);
  assert_int_equal(admit_admission_enter(NULL, 0, 0, &p), ADMIT_EINVAL);
  assert_int_equal(admit_admission_enter(a, -1, 0, &p), ADMIT_EINVAL);
  assert_int_equal(admit_admission_enter(a, ADMIT_PRIORITIES_MAX, 0, &p),
                   ADMIT_EINVAL);
  assert_int_equal(admit_admission_enter(a, 0, 0, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_admission_enter_async(a, 0, &p, NULL, NULL),
                   ADMIT_EINVAL);
  assert_int_equal(admit_admission_cancel(a, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_admission_leave(a, NULL, 0), ADMIT_EINVAL);
  assert_int_equal(admit_admission_set_limit(a, 0), ADMIT_EINVAL);
  assert_int_equal(admit_admission_set_limit(NULL, 1), ADMIT_EINVAL);
  assert_int_equal(admit_admission_stats(a, NULL), ADMIT_EINVAL);
  memset(&p, 0, sizeof(p));
  assert_int_equal(admit_admission_leave(a, &p, 0), ADMIT_EINVAL);
  assert_int_equal(admit_admission_enter(a, 0, 0, &p), 0);
  assert_int_equal(admit_admission_leave(a, &p, 7), ADMIT_EINVAL);
  assert_int_equal(admit_admission_leave(a, &p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(admit_admission_leave(a, &p, ADMIT_OUTCOME_SUCCESS),
                   ADMIT_EINVAL);
  admit_admission_stats_t st = stats(a);
  assert_int_equal(st.limit, 100);
  assert_int_equal(st.backlog, 200);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.completed, 1);
  admit_admission_free(a);
}

/* Beyond the limit and the backlog, refused at once. */
static void test_limit_and_backlog(void** state) {
  (void)state;
  admit_admission_t* a = make(2, 1, NULL);
  admit_admission_permit_t p1, p2, p3, p4, p5;
  log_t log = {0};
  assert_int_equal(admit_admission_enter(a, 1, 0, &p1), 0);
  assert_int_equal(admit_admission_enter(a, 1, SEC, &p2), 0);
  assert_int_equal(admit_admission_enter(a, 1, 0, &p3), ADMIT_EFULL);
  assert_int_equal(p3.status, ADMIT_EFULL);
  assert_int_equal(admit_admission_enter_async(a, 1, &p4, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &p5, record, &log),
                   ADMIT_EFULL);
  admit_admission_stats_t st = stats(a);
  assert_int_equal(st.in_flight, 2);
  assert_int_equal(st.waiting, 1);
  assert_int_equal(st.rejected, 2);
  fake_advance(&fc, 30 * MS);
  assert_int_equal(stats(a).oldest_wait_ns, 30 * MS);
  assert_int_equal(admit_admission_leave(a, &p1, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(log.n, 1);
  assert_int_equal(log.tickets[0], p4.ticket);
  assert_int_equal(log.status[0], 0);
  assert_int_equal(p4.status, 0);
  assert_int_equal(p4.admitted_ns, 1000 * SEC + 30 * MS);
  st = stats(a);
  assert_int_equal(st.in_flight, 2);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.queue_wait.count, 3);
  assert_int_equal(st.queue_wait.sum_ns, 30 * MS);
  assert_int_equal(st.latency.sum_ns, 30 * MS);
  admit_admission_leave(a, &p2, ADMIT_OUTCOME_FAILURE);
  admit_admission_leave(a, &p4, ADMIT_OUTCOME_TIMEOUT);
  st = stats(a);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.errors, 2);
  assert_int_equal(st.recent_calls, 3);
  assert_int_equal(st.recent_errors, 2);
  admit_admission_free(a);

  /* No backlog at all: uvicorn with --backlog 0. */
  admit_admission_options_t o = {0};
  o.no_backlog = 1;
  a = make(1, 0, &o);
  assert_int_equal(admit_admission_enter(a, 0, 0, &p1), 0);
  assert_int_equal(admit_admission_enter_async(a, 0, &p2, record, &log),
                   ADMIT_EFULL);
  admit_admission_leave(a, &p1, ADMIT_OUTCOME_SUCCESS);
  admit_admission_free(a);
}

/* Class 0 first, FIFO within a class. */
static void test_priority_order(void** state) {
  (void)state;
  admit_admission_options_t o = {0};
  o.no_shedding = 1;
  admit_admission_t* a = make(1, 10, &o);
  admit_admission_permit_t hold, l1, l2, h, m;
  log_t log = {0};
  assert_int_equal(admit_admission_enter(a, 0, 0, &hold), 0);
  assert_int_equal(admit_admission_enter_async(a, 3, &l1, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 3, &l2, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 0, &h, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &m, record, &log), 0);
  admit_admission_permit_t* order[] = {&h, &m, &l1, &l2};
  admit_admission_permit_t* cur = &hold;
  for (int i = 0; i < 4; i++) {
    admit_admission_leave(a, cur, ADMIT_OUTCOME_SUCCESS);
    assert_int_equal(log.n, i + 1);
    assert_int_equal(log.tickets[i], order[i]->ticket);
    cur = order[i];
  }
  admit_admission_leave(a, cur, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(stats(a).in_flight, 0);
  admit_admission_free(a);
}

/* A full backlog makes room for a more urgent class by shedding the newest
 * waiter of the least urgent one; never the other way round. */
static void test_displacement(void** state) {
  (void)state;
  admit_admission_t* a = make(1, 2, NULL);
  admit_admission_permit_t hold, l1, l2, h, x, h2, h3;
  log_t log = {0};
  assert_int_equal(admit_admission_enter(a, 0, 0, &hold), 0);
  assert_int_equal(admit_admission_enter_async(a, 2, &l1, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 2, &l2, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 0, &h, record, &log), 0);
  assert_int_equal(log.n, 1);
  assert_int_equal(log.tickets[0], l2.ticket);
  assert_int_equal(log.status[0], ADMIT_ESHED);
  assert_int_equal(l2.status, ADMIT_ESHED);
  assert_int_equal(admit_admission_enter_async(a, 2, &x, record, &log),
                   ADMIT_EFULL);
  assert_int_equal(admit_admission_enter_async(a, 0, &h2, record, &log), 0);
  assert_int_equal(log.tickets[1], l1.ticket);
  /* Only class 0 is left: another class 0 cannot displace its own. */
  assert_int_equal(admit_admission_enter_async(a, 0, &h3, record, &log),
                   ADMIT_EFULL);
  admit_admission_stats_t st = stats(a);
  assert_int_equal(st.displaced, 2);
  assert_int_equal(st.rejected, 2);
  assert_int_equal(st.waiting, 2);
  admit_admission_leave(a, &hold, ADMIT_OUTCOME_SUCCESS);
  admit_admission_leave(a, &h, ADMIT_OUTCOME_SUCCESS);
  admit_admission_leave(a, &h2, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(stats(a).in_flight, 0);
  admit_admission_free(a);
}

/* CoDel: waits above the target for a whole interval start shedding; class
 * 0 is never shed; shedding stops when the backlog drains. */
static void test_codel_shedding(void** state) {
  (void)state;
  admit_admission_options_t o = {0};
  o.shed_target_ns = 100 * MS;
  o.shed_interval_ns = 1 * SEC;
  admit_admission_t* a = make(1, 10, &o);
  admit_admission_permit_t pa, pb, pc, pd, pe, ph, pf;
  log_t log = {0};
  assert_int_equal(admit_admission_enter(a, 1, 0, &pa), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &pb, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &pc, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &pd, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &pe, record, &log), 0);
  fake_advance(&fc, 2 * SEC); /* t0 + 2 s: B waited 2 s, first above */
  admit_admission_leave(a, &pa, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(log.n, 1);
  assert_int_equal(log.status[0], 0);
  assert_int_equal(stats(a).shedding, 0);
  fake_advance(&fc, 500 * MS); /* t0 + 2.5 s: inside the interval */
  admit_admission_leave(a, &pb, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(log.n, 2);
  assert_int_equal(log.tickets[1], pc.ticket);
  assert_int_equal(log.status[1], 0);
  fake_advance(&fc, 100 * MS);
  assert_int_equal(admit_admission_enter_async(a, 0, &ph, record, &log), 0);
  fake_advance(&fc, 900 * MS); /* t0 + 3.5 s: the interval is over */
  admit_admission_leave(a, &pc, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(log.n, 3);
  assert_int_equal(log.tickets[2], ph.ticket); /* class 0: served */
  assert_int_equal(log.status[2], 0);
  admit_admission_stats_t st = stats(a);
  assert_int_equal(st.shedding, 1);
  assert_int_equal(st.waiting, 2);
  fake_advance(&fc, 100 * MS);
  admit_admission_leave(a, &ph, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(log.n, 5); /* D and E: shed, their clients gave up */
  assert_int_equal(log.tickets[3] + log.tickets[4], pd.ticket + pe.ticket);
  assert_int_equal(log.status[3], ADMIT_ESHED);
  assert_int_equal(log.status[4], ADMIT_ESHED);
  st = stats(a);
  assert_int_equal(st.shed, 2);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.shedding, 0);
  assert_int_equal(st.admitted, 4);
  /* A fresh arrival goes straight in. */
  assert_int_equal(admit_admission_enter_async(a, 1, &pf, record, &log), 1);
  admit_admission_leave(a, &pf, ADMIT_OUTCOME_SUCCESS);
  admit_admission_free(a);
}

/* A short wait in between resets CoDel's clock: no shedding. */
static void test_codel_recovers(void** state) {
  (void)state;
  admit_admission_options_t o = {0};
  o.shed_target_ns = 100 * MS;
  o.shed_interval_ns = 1 * SEC;
  admit_admission_t* a = make(1, 10, &o);
  admit_admission_permit_t p[4];
  log_t log = {0};
  assert_int_equal(admit_admission_enter(a, 1, 0, &p[0]), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &p[1], record, &log), 0);
  fake_advance(&fc, 2 * SEC);
  admit_admission_leave(a, &p[0], ADMIT_OUTCOME_SUCCESS); /* above */
  assert_int_equal(admit_admission_enter_async(a, 1, &p[2], record, &log), 0);
  fake_advance(&fc, 50 * MS);
  admit_admission_leave(a, &p[1], ADMIT_OUTCOME_SUCCESS); /* 50 ms: below */
  assert_int_equal(admit_admission_enter_async(a, 1, &p[3], record, &log), 0);
  fake_advance(&fc, 2 * SEC);
  admit_admission_leave(a, &p[2], ADMIT_OUTCOME_SUCCESS); /* above again */
  assert_int_equal(log.n, 3);
  for (int i = 0; i < 3; i++) assert_int_equal(log.status[i], 0);
  assert_int_equal(stats(a).shed, 0);
  admit_admission_leave(a, &p[3], ADMIT_OUTCOME_SUCCESS);
  admit_admission_free(a);
}

static void test_cancel(void** state) {
  (void)state;
  admit_admission_t* a = make(1, 4, NULL);
  admit_admission_permit_t hold, x, y;
  log_t log = {0};
  assert_int_equal(admit_admission_enter(a, 0, 0, &hold), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &x, record, &log), 0);
  assert_int_equal(admit_admission_enter_async(a, 1, &y, record, &log), 0);
  assert_int_equal(admit_admission_cancel(a, &x), 1);
  assert_int_equal(x.status, ADMIT_ECANCELED);
  assert_int_equal(admit_admission_cancel(a, &x), 0);
  assert_int_equal(admit_admission_leave(a, &x, 0), ADMIT_EINVAL);
  assert_int_equal(stats(a).waiting, 1);
  admit_admission_leave(a, &hold, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(log.n, 1);
  assert_int_equal(log.tickets[0], y.ticket);
  /* Cancelling after the grant: 0, and the place is the caller's. */
  assert_int_equal(admit_admission_cancel(a, &y), 0);
  assert_int_equal(y.status, 0);
  assert_int_equal(admit_admission_leave(a, &y, ADMIT_OUTCOME_CANCELLED), 0);
  admit_admission_stats_t st = stats(a);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.cancelled, 1);
  /* A permit of another controller is refused. */
  admit_admission_t* b = make(1, 1, NULL);
  assert_int_equal(admit_admission_cancel(b, &y), ADMIT_EINVAL);
  assert_int_equal(admit_admission_leave(b, &y, 0), ADMIT_EINVAL);
  admit_admission_free(b);
  admit_admission_free(a);
}

static void test_free_with_waiters(void** state) {
  (void)state;
  admit_admission_t* a = make(1, 4, NULL);
  admit_admission_permit_t hold, x, y;
  log_t log = {0};
  admit_admission_enter(a, 0, 0, &hold);
  admit_admission_enter_async(a, 1, &x, record, &log);
  admit_admission_enter_async(a, 2, &y, record, &log);
  admit_admission_free(a);
  assert_int_equal(log.n, 2);
  assert_int_equal(log.status[0], ADMIT_ECLOSED);
  assert_int_equal(log.status[1], ADMIT_ECLOSED);
}

static void test_set_limit(void** state) {
  (void)state;
  admit_admission_t* a = make(1, 4, NULL);
  admit_admission_permit_t p[3];
  log_t log = {0};
  admit_admission_enter(a, 0, 0, &p[0]);
  admit_admission_enter_async(a, 1, &p[1], record, &log);
  admit_admission_enter_async(a, 1, &p[2], record, &log);
  assert_int_equal(admit_admission_set_limit(a, 3), 0);
  assert_int_equal(log.n, 2);
  admit_admission_stats_t st = stats(a);
  assert_int_equal(st.limit, 3);
  assert_int_equal(st.in_flight, 3);
  for (int i = 0; i < 3; i++) admit_admission_leave(a, &p[i], 0);
  admit_admission_free(a);
}

/* AIMD, exactly: +1 per fast request while the limit is in use, times the
 * backoff per timeout or slow request, within [min, max]. */
static void test_aimd(void** state) {
  (void)state;
  admit_admission_options_t o = {0};
  o.adaptive = ADMIT_ADAPTIVE_AIMD;
  o.min_limit = 2;
  o.max_limit = 12;
  o.aimd_backoff = 0.5;
  o.aimd_latency_ns = 1 * SEC;
  admit_admission_t* a = make(10, 10, &o);
  admit_admission_permit_t p[12];
  for (int i = 0; i < 6; i++)
    assert_int_equal(admit_admission_enter(a, 0, 0, &p[i]), 0);
  fake_advance(&fc, 10 * MS);
  admit_admission_leave(a, &p[0], ADMIT_OUTCOME_SUCCESS); /* 6*2 >= 10 */
  assert_int_equal(stats(a).limit, 11);
  admit_admission_leave(a, &p[1], ADMIT_OUTCOME_SUCCESS); /* 5*2 < 11 */
  assert_int_equal(stats(a).limit, 11);
  admit_admission_leave(a, &p[2], ADMIT_OUTCOME_TIMEOUT); /* 5.5 */
  assert_int_equal(stats(a).limit, 5);
  admit_admission_leave(a, &p[5], ADMIT_OUTCOME_SUCCESS); /* 3*2 >= 5.5 */
  assert_int_equal(stats(a).limit, 6);                    /* 6.5 */
  fake_advance(&fc, 2 * SEC);
  admit_admission_leave(a, &p[3], ADMIT_OUTCOME_SUCCESS); /* slow: 3.25 */
  assert_int_equal(stats(a).limit, 3);
  admit_admission_leave(a, &p[4], ADMIT_OUTCOME_TIMEOUT); /* min 2 */
  assert_int_equal(stats(a).limit, 2);
  /* The limit binds: two admitted, the third refused. */
  for (int i = 6; i < 9; i++) {
    int rc = admit_admission_enter(a, 0, 0, &p[i]);
    assert_int_equal(rc, i < 8 ? 0 : ADMIT_EFULL);
  }
  fake_advance(&fc, 10 * MS);
  admit_admission_leave(a, &p[6], ADMIT_OUTCOME_SUCCESS); /* 2*2 >= 2: 3 */
  assert_int_equal(stats(a).limit, 3);
  admit_admission_leave(a, &p[7], ADMIT_OUTCOME_SUCCESS); /* 1*2 < 3 */
  assert_int_equal(stats(a).limit, 3);
  assert_int_equal(stats(a).in_flight, 0);
  admit_admission_free(a);
}

/* Gradient: steady latency lets the limit grow; latency far above its
 * long-term average shrinks it; never beyond [min, max]. */
static uint64_t gradient_round(admit_admission_t* a, uint64_t latency) {
  admit_admission_permit_t p[40];
  int n = 0;
  while (n < 40 && admit_admission_enter(a, 0, 0, &p[n]) == 0) n++;
  fake_advance(&fc, latency);
  for (int i = 0; i < n; i++)
    assert_int_equal(admit_admission_leave(a, &p[i], ADMIT_OUTCOME_SUCCESS),
                     0);
  return stats(a).limit;
}

static void test_gradient(void** state) {
  (void)state;
  admit_admission_options_t o = {0};
  o.adaptive = ADMIT_ADAPTIVE_GRADIENT;
  o.min_limit = 4;
  o.max_limit = 40;
  admit_admission_t* a = make(20, 100, &o);
  uint64_t limit = stats(a).limit;
  assert_int_equal(limit, 20);
  for (int r = 0; r < 5; r++) {
    uint64_t next = gradient_round(a, 10 * MS);
    assert_true(next >= limit);
    limit = next;
  }
  assert_int_equal(limit, 40); /* grew to the ceiling */
  for (int r = 0; r < 10; r++) {
    uint64_t next = gradient_round(a, 100 * MS);
    assert_true(next <= limit);
    limit = next;
  }
  /* Ten times slower pins the gradient at its floor, 0.5, where the limit
   * settles at l = 0.5 l + 4 (the queue allowance): 8. */
  assert_int_equal(limit, 8);
  assert_int_equal(stats(a).in_flight, 0);
  admit_admission_free(a);
}

/* Blocking waits on real time: woken by a leave, timed out, displaced. */
typedef struct blocker_s {
  admit_admission_t* a;
  int priority;
  uint64_t timeout;
  int rc;
  admit_admission_permit_t p;
} blocker_t;

static void* blocker(void* arg) {
  blocker_t* b = arg;
  b->rc = admit_admission_enter(b->a, b->priority, b->timeout, &b->p);
  return NULL;
}

static void wait_waiting(admit_admission_t* a, uint64_t n) {
  while (stats(a).waiting != n) admit_sleep_ns(ADMIT_MILLISECOND);
}

static void test_blocking(void** state) {
  (void)state;
  admit_admission_options_t o = {0};
  o.max_in_flight = 1;
  o.backlog = 1;
  admit_admission_t* a = NULL;
  assert_int_equal(admit_admission_new(&a, &o), 0);
  admit_admission_permit_t hold;
  assert_int_equal(admit_admission_enter(a, 0, 0, &hold), 0);
  /* Woken by a leave. */
  blocker_t b = {a, 1, ADMIT_FOREVER, 99, {0}};
  pthread_t t;
  pthread_create(&t, NULL, blocker, &b);
  wait_waiting(a, 1);
  admit_admission_leave(a, &hold, ADMIT_OUTCOME_SUCCESS);
  pthread_join(t, NULL);
  assert_int_equal(b.rc, 0);
  /* Timed out. */
  admit_admission_permit_t q;
  assert_int_equal(admit_admission_enter(a, 1, 20 * MS, &q), ADMIT_ETIMEDOUT);
  assert_int_equal(stats(a).timed_out, 1);
  assert_int_equal(stats(a).waiting, 0);
  /* Displaced by a more urgent arrival. */
  blocker_t c = {a, 3, 10 * SEC, 99, {0}};
  pthread_create(&t, NULL, blocker, &c);
  wait_waiting(a, 1);
  log_t log = {0};
  admit_admission_permit_t h;
  assert_int_equal(admit_admission_enter_async(a, 0, &h, record, &log), 0);
  pthread_join(t, NULL);
  assert_int_equal(c.rc, ADMIT_ESHED);
  admit_admission_leave(a, &b.p, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(log.n, 1);
  admit_admission_leave(a, &h, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(stats(a).in_flight, 0);
  admit_admission_free(a);
}

/* Threads entering (blocking and asynchronously), cancelling and leaving:
 * never more than the limit in flight, and everything adds up. */
typedef struct stress_s {
  admit_admission_t* a;
  _Atomic int64_t running;
  _Atomic int64_t peak;
  _Atomic uint64_t ok, refused, granted_async;
  int n;
} stress_t;

static void enter_run(stress_t* s) {
  int64_t r = atomic_fetch_add(&s->running, 1) + 1;
  int64_t pk = atomic_load(&s->peak);
  while (r > pk && !atomic_compare_exchange_weak(&s->peak, &pk, r)) {
  }
}

/* Sets the waiter's flag: 1 admitted, 2 not (shed). */
static void async_granted(void* ud, uint64_t ticket, int status) {
  (void)ticket;
  atomic_store((_Atomic int*)ud, status == 0 ? 1 : 2);
}

static void* stress_worker(void* arg) {
  stress_t* s = arg;
  for (int i = 0; i < s->n; i++) {
    admit_admission_permit_t p;
    if (i % 3 == 2) {
      _Atomic int granted = 0;
      int rc = admit_admission_enter_async(s->a, i % 4, &p, async_granted,
                                           &granted);
      if (rc == 0) {
        /* Give it a moment, then withdraw; a grant that raced is ours. */
        admit_sleep_ns(1000);
        if (admit_admission_cancel(s->a, &p) == 1) {
          atomic_fetch_add(&s->refused, 1);
          continue;
        }
        /* The wait has ended: its callback has run or is about to. */
        while (atomic_load(&granted) == 0) {
        }
        if (atomic_load(&granted) != 1) {
          atomic_fetch_add(&s->refused, 1);
          continue;
        }
        atomic_fetch_add(&s->granted_async, 1);
        rc = 1;
      }
      if (rc != 1) {
        atomic_fetch_add(&s->refused, 1);
        continue;
      }
    } else if (admit_admission_enter(s->a, i % 4, 5 * SEC, &p) != 0) {
      atomic_fetch_add(&s->refused, 1);
      continue;
    }
    enter_run(s);
    atomic_fetch_sub(&s->running, 1);
    atomic_fetch_add(&s->ok, 1);
    assert_int_equal(admit_admission_leave(s->a, &p, ADMIT_OUTCOME_SUCCESS),
                     0);
  }
  return NULL;
}

static void test_threads(void** state) {
  (void)state;
  admit_admission_options_t o = {0};
  o.max_in_flight = 2;
  o.backlog = 3;
  admit_admission_t* a = NULL;
  assert_int_equal(admit_admission_new(&a, &o), 0);
  enum { T = 4 };
  stress_t s = {.a = a, .n = (int)test_scale(20000, 1000)};
  pthread_t th[T];
  for (int i = 0; i < T; i++) pthread_create(&th[i], NULL, stress_worker, &s);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  assert_true(atomic_load(&s.peak) <= 2);
  admit_admission_stats_t st = stats(a);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(atomic_load(&s.ok) + atomic_load(&s.refused),
                   (uint64_t)T * (uint64_t)s.n);
  assert_int_equal(st.completed, atomic_load(&s.ok));
  assert_int_equal(st.admitted, atomic_load(&s.ok));
  admit_admission_free(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_limit_and_backlog),
      cmocka_unit_test(test_priority_order),
      cmocka_unit_test(test_displacement),
      cmocka_unit_test(test_codel_shedding),
      cmocka_unit_test(test_codel_recovers),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_free_with_waiters),
      cmocka_unit_test(test_set_limit),
      cmocka_unit_test(test_aimd),
      cmocka_unit_test(test_gradient),
      cmocka_unit_test(test_blocking),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
