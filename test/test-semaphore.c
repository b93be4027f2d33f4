/* Semaphore: exact behaviour, ordering, capacity changes, async waiters. */
#include "helpers.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

/* --- helpers ------------------------------------------------------------- */

static admit_semaphore_t* make_sem(uint64_t capacity, uint64_t max_waiters,
                                   int unbounded) {
  admit_semaphore_options_t o;
  memset(&o, 0, sizeof(o));
  o.capacity = capacity;
  o.max_waiters = max_waiters;
  o.unbounded_waiters = unbounded;
  admit_semaphore_t* s = NULL;
  assert_int_equal(admit_semaphore_new(&s, &o), 0);
  assert_non_null(s);
  return s;
}

static admit_semaphore_stats_t stats_of(admit_semaphore_t* s) {
  admit_semaphore_stats_t st;
  memset(&st, 0xff, sizeof(st));
  assert_int_equal(admit_semaphore_stats(s, &st), 0);
  return st;
}

static uint64_t waiting_of(admit_semaphore_t* s) {
  admit_semaphore_stats_t st;
  admit_semaphore_stats(s, &st);
  return st.waiting;
}

/* Waits (10 s at most) until @p n waiters are queued. */
static void wait_waiting(admit_semaphore_t* s, uint64_t n) {
  uint64_t end = admit_now_ns() + 10ull * ADMIT_SECOND;
  while (waiting_of(s) != n && admit_now_ns() < end) {
    admit_sleep_ns(200 * ADMIT_MICROSECOND);
  }
  assert_int_equal(waiting_of(s), n);
}

/* The order in which waiters got their permits. */
typedef struct order_s {
  pthread_mutex_t mu;
  int n;
  int ids[64];
} order_t;

static void order_init(order_t* o) {
  pthread_mutex_init(&o->mu, NULL);
  o->n = 0;
}

static void order_push(order_t* o, int id) {
  pthread_mutex_lock(&o->mu);
  if (o->n < 64) o->ids[o->n] = id;
  o->n++;
  pthread_mutex_unlock(&o->mu);
}

static int order_count(order_t* o) {
  pthread_mutex_lock(&o->mu);
  int n = o->n;
  pthread_mutex_unlock(&o->mu);
  return n;
}

static void wait_order(order_t* o, int n) {
  uint64_t end = admit_now_ns() + 10ull * ADMIT_SECOND;
  while (order_count(o) < n && admit_now_ns() < end) {
    admit_sleep_ns(200 * ADMIT_MICROSECOND);
  }
  assert_int_equal(order_count(o), n);
}

/* A thread blocked in admit_semaphore_acquire(). */
typedef struct sync_arg_s {
  admit_semaphore_t* s;
  int priority;
  uint64_t timeout_ns;
  int id;
  order_t* order;
  int rc;
  pthread_t thread;
} sync_arg_t;

static void* sync_main(void* p) {
  sync_arg_t* a = p;
  a->rc = admit_semaphore_acquire(a->s, a->priority, a->timeout_ns);
  if (a->rc == 0 && a->order != NULL) order_push(a->order, a->id);
  return NULL;
}

static void sync_start(sync_arg_t* a, admit_semaphore_t* s, int priority,
                       uint64_t timeout_ns, int id, order_t* order) {
  a->s = s;
  a->priority = priority;
  a->timeout_ns = timeout_ns;
  a->id = id;
  a->order = order;
  a->rc = 99;
  assert_int_equal(pthread_create(&a->thread, NULL, sync_main, a), 0);
}

/* An asynchronous waiter's record of its callback. */
typedef struct async_rec_s {
  int id;
  order_t* order;
  _Atomic int calls;
  _Atomic int status;
  _Atomic uint64_t ticket;
  pthread_t caller;
  admit_semaphore_t* release_in_cb; /* release at once from the callback */
} async_rec_t;

static void async_cb(void* ud, uint64_t ticket, int status) {
  async_rec_t* r = ud;
  r->caller = pthread_self();
  atomic_store(&r->ticket, ticket);
  atomic_store(&r->status, status);
  if (status == 0 && r->order != NULL) order_push(r->order, r->id);
  if (status == 0 && r->release_in_cb != NULL) {
    admit_semaphore_release(r->release_in_cb);
  }
  atomic_fetch_add(&r->calls, 1);
}

static void rec_init(async_rec_t* r, int id, order_t* order) {
  memset(r, 0, sizeof(*r));
  r->id = id;
  r->order = order;
  atomic_store(&r->status, 99);
}

/* --- bad input ----------------------------------------------------------- */

static void test_new_bad_input(void** state) {
  (void)state;
  admit_semaphore_options_t o;
  memset(&o, 0, sizeof(o));
  admit_semaphore_t* s = (admit_semaphore_t*)&o;
  assert_int_equal(admit_semaphore_new(NULL, &o), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_new(&s, NULL), ADMIT_EINVAL);
  assert_null(s);
  s = (admit_semaphore_t*)&o;
  assert_int_equal(admit_semaphore_new(&s, &o), ADMIT_EINVAL); /* cap 0 */
  assert_null(s);
  o.capacity = UINT64_MAX;
  assert_int_equal(admit_semaphore_new(&s, &o), ADMIT_EINVAL);
  o.capacity = 1ull << 31;
  assert_int_equal(admit_semaphore_new(&s, &o), ADMIT_EINVAL);
  o.capacity = 1;
  o.unbounded_waiters = 2;
  assert_int_equal(admit_semaphore_new(&s, &o), ADMIT_EINVAL);
  o.unbounded_waiters = -1;
  assert_int_equal(admit_semaphore_new(&s, &o), ADMIT_EINVAL);
  assert_null(s);
  /* The largest capacity is accepted and usable. */
  o.unbounded_waiters = 0;
  o.capacity = (1ull << 31) - 1;
  assert_int_equal(admit_semaphore_new(&s, &o), 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_set_capacity(s, 1ull << 31), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_set_capacity(s, (1ull << 31) - 1), 0);
  admit_semaphore_free(s);
  admit_semaphore_free(NULL);
}

static void test_calls_bad_input(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 4, 0);
  uint64_t ticket = 0;
  async_rec_t r;
  rec_init(&r, 0, NULL);
  admit_semaphore_stats_t st;

  assert_int_equal(admit_semaphore_try(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_acquire(NULL, 0, 0), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_acquire(s, -1, 0), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_acquire(s, ADMIT_PRIORITIES_MAX, 0),
                   ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_acquire(s, 1000000, ADMIT_FOREVER),
                   ADMIT_EINVAL);
  assert_int_equal(
      admit_semaphore_acquire_async(NULL, 0, async_cb, &r, &ticket),
      ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, NULL, &r, &ticket),
                   ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, NULL),
                   ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_acquire_async(s, -1, async_cb, &r, &ticket),
                   ADMIT_EINVAL);
  assert_int_equal(
      admit_semaphore_acquire_async(s, ADMIT_PRIORITIES_MAX, async_cb, &r,
                                    &ticket),
      ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_cancel(NULL, 1), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_cancel(s, 0), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_cancel(s, UINT64_MAX), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_cancel(s, (1ull << 32) | 7), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_release(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_release(s), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_set_capacity(NULL, 1), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_set_capacity(s, 0), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_set_capacity(s, UINT64_MAX), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_stats(NULL, &st), ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_stats(s, NULL), ADMIT_EINVAL);

  /* A ticket with a generation never issued for its slot is refused. */
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &ticket),
                   0);
  assert_int_equal(admit_semaphore_cancel(s, ticket + (1ull << 32)),
                   ADMIT_EINVAL);
  assert_int_equal(admit_semaphore_cancel(s, ticket), 1);

  /* Nothing above changed the state or called the callback. */
  st = stats_of(s);
  assert_int_equal(st.capacity, 1);
  assert_int_equal(st.in_use, 1);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.acquired, 1);
  assert_int_equal(st.rejected, 0);
  assert_int_equal(st.timed_out, 0);
  assert_int_equal(st.cancelled, 1);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), ADMIT_EINVAL);
  assert_int_equal(stats_of(s).in_use, 0);
  admit_semaphore_free(s);
}

/* --- try, release, timeouts, bounds -------------------------------------- */

static void test_try_when_full(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(3, 0, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_try(s), 0);
  assert_int_equal(admit_semaphore_try(s), 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.in_use, 3);
  assert_int_equal(st.acquired, 3);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  for (int i = 0; i < 3; i++) assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), ADMIT_EINVAL);
  st = stats_of(s);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.acquired, 4);
  admit_semaphore_free(s);
}

static void test_timeout_zero_never_waits(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 10, 0);
  assert_int_equal(admit_semaphore_acquire(s, 0, 0), 0);
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_semaphore_acquire(s, 0, 0), ADMIT_ETIMEDOUT);
  assert_int_equal(admit_semaphore_acquire(s, 7, 0), ADMIT_ETIMEDOUT);
  /* Behaviour, not speed: it did not sit out any wait (1 s is absurdly
   * generous for two calls that never block). */
  assert_true(admit_now_ns() - t0 < ADMIT_SECOND);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.timed_out, 2);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.rejected, 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  admit_semaphore_free(s);
}

static void test_no_waiting_when_max_waiters_zero(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 0, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_semaphore_acquire(s, 0, 30ull * ADMIT_SECOND),
                   ADMIT_EFULL);
  assert_int_equal(admit_semaphore_acquire(s, 3, ADMIT_FOREVER), ADMIT_EFULL);
  assert_true(admit_now_ns() - t0 < 10ull * ADMIT_SECOND);
  uint64_t ticket = 0;
  async_rec_t r;
  rec_init(&r, 0, NULL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &ticket),
                   ADMIT_EFULL);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.rejected, 3);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.in_use, 1);
  /* With a permit free, max_waiters 0 does not stop an acquire. */
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_acquire(s, 0, ADMIT_SECOND), 0);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &ticket),
                   ADMIT_EFULL);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &ticket),
                   1);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&r.calls), 0);
  admit_semaphore_free(s);
}

static void test_efull_at_waiter_bound(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 2, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  sync_arg_t a[2];
  sync_start(&a[0], s, 0, ADMIT_FOREVER, 0, NULL);
  wait_waiting(s, 1);
  sync_start(&a[1], s, 5, ADMIT_FOREVER, 1, NULL);
  wait_waiting(s, 2);
  /* The bound counts every class: a more urgent waiter is refused too. */
  assert_int_equal(admit_semaphore_acquire(s, 0, ADMIT_FOREVER), ADMIT_EFULL);
  assert_int_equal(admit_semaphore_acquire(s, 7, 5ull * ADMIT_SECOND),
                   ADMIT_EFULL);
  uint64_t ticket = 0;
  async_rec_t r;
  rec_init(&r, 0, NULL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &ticket),
                   ADMIT_EFULL);
  assert_int_equal(admit_semaphore_try(s), 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.rejected, 3);
  assert_int_equal(st.waiting, 2);
  /* Each release hands over; the last one frees the permit. */
  for (int i = 0; i < 3; i++) assert_int_equal(admit_semaphore_release(s), 0);
  pthread_join(a[0].thread, NULL);
  pthread_join(a[1].thread, NULL);
  assert_int_equal(a[0].rc, 0);
  assert_int_equal(a[1].rc, 0);
  st = stats_of(s);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.acquired, 3);
  assert_int_equal(atomic_load(&r.calls), 0);
  admit_semaphore_free(s);
}

static void test_timed_acquire_times_out(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 8, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  uint64_t asked = 50 * ADMIT_MILLISECOND;
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_semaphore_acquire(s, 2, asked), ADMIT_ETIMEDOUT);
  uint64_t took = admit_now_ns() - t0;
  assert_true(took >= asked);
  assert_true(took < asked + 5ull * ADMIT_SECOND); /* not forever */
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.timed_out, 1);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.in_use, 1);
  /* The queue is empty again, so the lock-free paths work as before. */
  assert_int_equal(admit_semaphore_try(s), 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), ADMIT_EINVAL);
  admit_semaphore_free(s);
}

static void test_timed_acquire_granted_in_time(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 8, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  sync_arg_t a;
  sync_start(&a, s, 0, 60ull * ADMIT_SECOND, 0, NULL);
  wait_waiting(s, 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  pthread_join(a.thread, NULL);
  assert_int_equal(a.rc, 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.in_use, 1);
  assert_int_equal(st.timed_out, 0);
  /* Released by a thread other than the taker. */
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(stats_of(s).in_use, 0);
  admit_semaphore_free(s);
}

static void test_forever_waits_until_release(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 1, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  sync_arg_t a;
  sync_start(&a, s, 4, ADMIT_FOREVER, 0, NULL);
  wait_waiting(s, 1);
  admit_sleep_ns(20 * ADMIT_MILLISECOND);
  assert_int_equal(a.rc, 99); /* still waiting */
  assert_int_equal(waiting_of(s), 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  pthread_join(a.thread, NULL);
  assert_int_equal(a.rc, 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  admit_semaphore_free(s);
}

/* --- ordering ------------------------------------------------------------ */

/* A waiter that leaves from the middle of the queue (timeout) does not
 * disturb the order of the others. */
static void test_timeout_in_middle_keeps_order(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 8, 0);
  order_t order;
  order_init(&order);
  assert_int_equal(admit_semaphore_try(s), 1);
  sync_arg_t a[3];
  sync_start(&a[0], s, 2, ADMIT_FOREVER, 0, &order);
  wait_waiting(s, 1);
  /* Long enough for the third to queue first, even under valgrind. */
  sync_start(&a[1], s, 2, 400 * ADMIT_MILLISECOND, 1, &order);
  wait_waiting(s, 2);
  sync_start(&a[2], s, 2, ADMIT_FOREVER, 2, &order);
  wait_waiting(s, 3);
  pthread_join(a[1].thread, NULL);
  assert_int_equal(a[1].rc, ADMIT_ETIMEDOUT);
  assert_int_equal(waiting_of(s), 2);
  assert_int_equal(admit_semaphore_release(s), 0);
  wait_order(&order, 1);
  assert_int_equal(order.ids[0], 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  wait_order(&order, 2);
  assert_int_equal(order.ids[1], 2);
  pthread_join(a[0].thread, NULL);
  pthread_join(a[2].thread, NULL);
  assert_int_equal(a[0].rc, 0);
  assert_int_equal(a[2].rc, 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.timed_out, 1);
  assert_int_equal(st.acquired, 3);
  admit_semaphore_free(s);
  pthread_mutex_destroy(&order.mu);
}

/* Queues blocking waiters in the given priorities, one at a time, then
 * releases one permit at a time and checks who got each. */
static void check_grant_order(const int* prios, int n, const int* expect) {
  admit_semaphore_t* s = make_sem(1, 0, 1);
  order_t order;
  order_init(&order);
  assert_int_equal(admit_semaphore_try(s), 1);
  sync_arg_t a[16];
  for (int i = 0; i < n; i++) {
    sync_start(&a[i], s, prios[i], ADMIT_FOREVER, i, &order);
    wait_waiting(s, (uint64_t)i + 1);
  }
  for (int k = 0; k < n; k++) {
    assert_int_equal(admit_semaphore_try(s), 0); /* no barging */
    assert_int_equal(admit_semaphore_release(s), 0);
    wait_order(&order, k + 1);
    assert_int_equal(order.ids[k], expect[k]);
    assert_int_equal(waiting_of(s), (uint64_t)(n - k - 1));
  }
  for (int i = 0; i < n; i++) {
    pthread_join(a[i].thread, NULL);
    assert_int_equal(a[i].rc, 0);
  }
  assert_int_equal(admit_semaphore_release(s), 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.acquired, (uint64_t)n + 1);
  admit_semaphore_free(s);
  pthread_mutex_destroy(&order.mu);
}

static void test_fifo_within_class(void** state) {
  (void)state;
  const int prios[] = {3, 3, 3, 3, 3, 3};
  const int expect[] = {0, 1, 2, 3, 4, 5};
  check_grant_order(prios, 6, expect);
}

static void test_priority_across_classes(void** state) {
  (void)state;
  const int prios[] = {5, 2, 7, 0, 2, 5, 0, 7};
  const int expect[] = {3, 6, 1, 4, 0, 5, 2, 7};
  check_grant_order(prios, 8, expect);
}

/* Blocking and asynchronous waiters share one FIFO per class. */
static void test_fifo_mixed_sync_async(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 16, 0);
  order_t order;
  order_init(&order);
  assert_int_equal(admit_semaphore_try(s), 1);
  sync_arg_t a[2];
  async_rec_t r[3];
  uint64_t t[3];
  rec_init(&r[0], 0, &order);
  assert_int_equal(admit_semaphore_acquire_async(s, 1, async_cb, &r[0], &t[0]),
                   0);
  sync_start(&a[0], s, 1, ADMIT_FOREVER, 1, &order);
  wait_waiting(s, 2);
  rec_init(&r[1], 2, &order);
  assert_int_equal(admit_semaphore_acquire_async(s, 1, async_cb, &r[1], &t[1]),
                   0);
  sync_start(&a[1], s, 1, ADMIT_FOREVER, 3, &order);
  wait_waiting(s, 4);
  rec_init(&r[2], 4, &order);
  assert_int_equal(admit_semaphore_acquire_async(s, 1, async_cb, &r[2], &t[2]),
                   0);
  assert_int_equal(waiting_of(s), 5);
  for (int k = 0; k < 5; k++) {
    assert_int_equal(admit_semaphore_release(s), 0);
    wait_order(&order, k + 1);
    assert_int_equal(order.ids[k], k);
  }
  pthread_join(a[0].thread, NULL);
  pthread_join(a[1].thread, NULL);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(atomic_load(&r[i].calls), 1);
    assert_int_equal(atomic_load(&r[i].status), 0);
    assert_int_equal(atomic_load(&r[i].ticket), t[i]);
  }
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(stats_of(s).in_use, 0);
  admit_semaphore_free(s);
  pthread_mutex_destroy(&order.mu);
}

/* --- async waiters ------------------------------------------------------- */

static void test_async_immediate(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(2, 4, 0);
  async_rec_t r;
  rec_init(&r, 0, NULL);
  uint64_t ticket = 12345;
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &ticket),
                   1);
  assert_int_equal(ticket, 12345); /* not touched */
  assert_int_equal(admit_semaphore_acquire_async(s, 7, async_cb, &r, &ticket),
                   1);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.in_use, 2);
  assert_int_equal(st.acquired, 2);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&r.calls), 0);
  admit_semaphore_free(s);
}

typedef struct releaser_s {
  admit_semaphore_t* s;
  pthread_t self;
  int rc;
} releaser_t;

static void* releaser_main(void* p) {
  releaser_t* rl = p;
  rl->self = pthread_self();
  rl->rc = admit_semaphore_release(rl->s);
  return NULL;
}

static void test_async_granted_on_releasing_thread(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 4, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  async_rec_t r;
  rec_init(&r, 0, NULL);
  uint64_t ticket = 0;
  assert_int_equal(admit_semaphore_acquire_async(s, 3, async_cb, &r, &ticket),
                   0);
  assert_true(ticket != 0);
  assert_int_equal(waiting_of(s), 1);
  assert_int_equal(admit_semaphore_try(s), 0);
  releaser_t rl = {s, pthread_self(), 99};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, releaser_main, &rl), 0);
  pthread_join(th, NULL);
  assert_int_equal(rl.rc, 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(atomic_load(&r.status), 0);
  assert_int_equal(atomic_load(&r.ticket), ticket);
  assert_true(pthread_equal(r.caller, rl.self));
  /* Already granted: cancel says so and the permit is ours. */
  assert_int_equal(admit_semaphore_cancel(s, ticket), 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.in_use, 1);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.cancelled, 0);
  assert_int_equal(st.acquired, 2);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(stats_of(s).in_use, 0);
  admit_semaphore_free(s);
}

static void test_async_cancel(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 4, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  async_rec_t r[2];
  uint64_t t[2];
  rec_init(&r[0], 0, NULL);
  rec_init(&r[1], 1, NULL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r[0], &t[0]),
                   0);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r[1], &t[1]),
                   0);
  assert_true(t[0] != t[1]);
  assert_int_equal(admit_semaphore_cancel(s, t[0]), 1);
  assert_int_equal(admit_semaphore_cancel(s, t[0]), 0); /* documented */
  assert_int_equal(waiting_of(s), 1);
  /* The release skips nobody: the cancelled one is gone, the next gets it. */
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&r[0].calls), 0);
  assert_int_equal(atomic_load(&r[1].calls), 1);
  assert_int_equal(admit_semaphore_cancel(s, t[1]), 0);
  /* Cancelling the last waiter reopens the lock-free path. */
  async_rec_t r2;
  uint64_t t2;
  rec_init(&r2, 2, NULL);
  assert_int_equal(admit_semaphore_acquire_async(s, 5, async_cb, &r2, &t2), 0);
  assert_int_equal(admit_semaphore_cancel(s, t2), 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.cancelled, 2);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.acquired, 3);
  assert_int_equal(atomic_load(&r2.calls), 0);
  admit_semaphore_free(s);
}

/* A callback that releases at once passes the permit down the queue inside
 * the same release call, in order. */
static void test_async_callback_releases(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 8, 0);
  order_t order;
  order_init(&order);
  assert_int_equal(admit_semaphore_try(s), 1);
  async_rec_t r[4];
  uint64_t t;
  const int prios[4] = {2, 1, 2, 1};
  for (int i = 0; i < 4; i++) {
    rec_init(&r[i], i, &order);
    r[i].release_in_cb = s;
    assert_int_equal(
        admit_semaphore_acquire_async(s, prios[i], async_cb, &r[i], &t), 0);
  }
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(order_count(&order), 4);
  assert_int_equal(order.ids[0], 1);
  assert_int_equal(order.ids[1], 3);
  assert_int_equal(order.ids[2], 0);
  assert_int_equal(order.ids[3], 2);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.acquired, 5);
  admit_semaphore_free(s);
  pthread_mutex_destroy(&order.mu);
}

/* Many queued waiters grow the pool past one chunk; slots are reused. */
static void test_async_many_waiters(void** state) {
  (void)state;
  enum { N = 300 };
  admit_semaphore_t* s = make_sem(1, 0, 1);
  assert_int_equal(admit_semaphore_try(s), 1);
  static async_rec_t r[N];
  static uint64_t t[N];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < N; i++) {
      rec_init(&r[i], i, NULL);
      assert_int_equal(
          admit_semaphore_acquire_async(s, i % 3, async_cb, &r[i], &t[i]), 0);
    }
    for (int i = 1; i < N; i++) assert_true(t[i] != t[i - 1]);
    assert_int_equal(waiting_of(s), N);
    /* Cancel every other one, grant the rest. */
    int granted = 0;
    for (int i = 0; i < N; i += 2) {
      assert_int_equal(admit_semaphore_cancel(s, t[i]), 1);
    }
    /* Each release runs one callback here, in class order and FIFO
     * within a class, skipping the cancelled ones. */
    for (int p = 0; p < 3; p++) {
      for (int i = 1; i < N; i += 2) {
        if (i % 3 != p) continue;
        assert_int_equal(atomic_load(&r[i].calls), 0);
        assert_int_equal(admit_semaphore_release(s), 0);
        assert_int_equal(atomic_load(&r[i].calls), 1);
        granted++;
      }
    }
    for (int i = 0; i < N; i++) {
      assert_int_equal(atomic_load(&r[i].calls), i % 2);
    }
    assert_int_equal(granted, N / 2);
    assert_int_equal(waiting_of(s), 0);
    assert_int_equal(stats_of(s).in_use, 1);
  }
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(stats_of(s).in_use, 0);
  admit_semaphore_free(s);
}

static void test_free_with_async_waiters(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 8, 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  async_rec_t r[5];
  uint64_t t[5];
  for (int i = 0; i < 5; i++) {
    rec_init(&r[i], i, NULL);
    assert_int_equal(
        admit_semaphore_acquire_async(s, i % 2, async_cb, &r[i], &t[i]), 0);
  }
  assert_int_equal(admit_semaphore_cancel(s, t[2]), 1);
  admit_semaphore_free(s);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(atomic_load(&r[i].calls), i == 2 ? 0 : 1);
    if (i != 2) {
      assert_int_equal(atomic_load(&r[i].status), ADMIT_ECLOSED);
      assert_int_equal(atomic_load(&r[i].ticket), t[i]);
      assert_true(pthread_equal(r[i].caller, pthread_self()));
    }
  }
}

/* --- capacity changes ---------------------------------------------------- */

static void test_capacity_raise_wakes_in_order(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(1, 8, 0);
  order_t order;
  order_init(&order);
  assert_int_equal(admit_semaphore_try(s), 1);
  async_rec_t r[3];
  uint64_t t;
  const int prios[3] = {1, 0, 1};
  for (int i = 0; i < 3; i++) {
    rec_init(&r[i], i, &order);
    assert_int_equal(
        admit_semaphore_acquire_async(s, prios[i], async_cb, &r[i], &t), 0);
  }
  sync_arg_t a;
  sync_start(&a, s, 1, ADMIT_FOREVER, 3, &order);
  wait_waiting(s, 4);
  /* Raising by two grants the two most urgent, in order: 1 (class 0), then
   * 0 (first of class 1). The callbacks run here, before the call returns. */
  assert_int_equal(admit_semaphore_set_capacity(s, 3), 0);
  assert_int_equal(order_count(&order), 2);
  assert_int_equal(order.ids[0], 1);
  assert_int_equal(order.ids[1], 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.capacity, 3);
  assert_int_equal(st.in_use, 3);
  assert_int_equal(st.waiting, 2);
  assert_int_equal(admit_semaphore_set_capacity(s, 4), 0);
  assert_int_equal(order_count(&order), 3);
  assert_int_equal(order.ids[2], 2);
  assert_int_equal(waiting_of(s), 1);
  assert_int_equal(admit_semaphore_set_capacity(s, 10), 0);
  pthread_join(a.thread, NULL);
  assert_int_equal(a.rc, 0);
  assert_int_equal(order_count(&order), 4);
  assert_int_equal(order.ids[3], 3);
  st = stats_of(s);
  assert_int_equal(st.in_use, 5);
  assert_int_equal(st.waiting, 0);
  /* With nobody waiting, the new capacity is open to try. */
  for (int i = 0; i < 5; i++) assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_try(s), 0);
  for (int i = 0; i < 10; i++) assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), ADMIT_EINVAL);
  admit_semaphore_free(s);
  pthread_mutex_destroy(&order.mu);
}

static void test_capacity_lower_drains(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(3, 8, 0);
  for (int i = 0; i < 3; i++) assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_set_capacity(s, 1), 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.capacity, 1);
  assert_int_equal(st.in_use, 3);
  assert_int_equal(admit_semaphore_try(s), 0);
  async_rec_t r;
  uint64_t t;
  rec_init(&r, 0, NULL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &t), 0);
  /* Two releases retire permits; only the third hands one over. */
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(stats_of(s).in_use, 2);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&r.calls), 0);
  assert_int_equal(stats_of(s).in_use, 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&r.calls), 1);
  st = stats_of(s);
  assert_int_equal(st.in_use, 1);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  /* Without waiters the lowered capacity drains the lock-free way too. */
  for (int i = 0; i < 1; i++) assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_try(s), 0);
  assert_int_equal(admit_semaphore_set_capacity(s, 2), 0);
  assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_set_capacity(s, 1), 0);
  assert_int_equal(admit_semaphore_try(s), 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_try(s), 0); /* in_use 1 == capacity */
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), ADMIT_EINVAL);
  assert_int_equal(stats_of(s).in_use, 0);
  admit_semaphore_free(s);
}

static void test_stats_counters(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(2, 1, 0);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.capacity, 2);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.acquired, 0);
  assert_int_equal(st.rejected, 0);
  assert_int_equal(st.timed_out, 0);
  assert_int_equal(st.cancelled, 0);
  assert_int_equal(admit_semaphore_try(s), 1);                    /* acq 1 */
  assert_int_equal(admit_semaphore_acquire(s, 0, 0), 0);          /* acq 2 */
  assert_int_equal(admit_semaphore_try(s), 0);                    /* none */
  assert_int_equal(admit_semaphore_acquire(s, 0, 0), ADMIT_ETIMEDOUT);
  assert_int_equal(admit_semaphore_acquire(s, 0, ADMIT_MILLISECOND),
                   ADMIT_ETIMEDOUT);
  async_rec_t r;
  uint64_t t;
  rec_init(&r, 0, NULL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &t), 0);
  assert_int_equal(admit_semaphore_acquire(s, 0, ADMIT_SECOND), ADMIT_EFULL);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &t),
                   ADMIT_EFULL);
  st = stats_of(s);
  assert_int_equal(st.in_use, 2);
  assert_int_equal(st.waiting, 1);
  assert_int_equal(st.acquired, 2);
  assert_int_equal(st.rejected, 2);
  assert_int_equal(st.timed_out, 2);
  assert_int_equal(st.cancelled, 0);
  assert_int_equal(admit_semaphore_release(s), 0); /* handed over: acq 3 */
  assert_int_equal(atomic_load(&r.calls), 1);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &t), 0);
  assert_int_equal(admit_semaphore_cancel(s, t), 1);
  assert_int_equal(admit_semaphore_set_capacity(s, 5), 0);
  st = stats_of(s);
  assert_int_equal(st.capacity, 5);
  assert_int_equal(st.in_use, 2);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.acquired, 3);
  assert_int_equal(st.rejected, 2);
  assert_int_equal(st.timed_out, 2);
  assert_int_equal(st.cancelled, 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), 0);
  admit_semaphore_free(s);
}

/* The granted count carries past 32 bits on every path that grants. */
void admit__semaphore_set_acquired(admit_semaphore_t* s, uint64_t n);

static void test_acquired_count_carries(void** state) {
  (void)state;
  admit_semaphore_t* s = make_sem(8, 8, 0);
  const uint64_t edge = 1ull << 32;
  /* Lock-free try: the one that would wrap goes through the lock. */
  admit__semaphore_set_acquired(s, edge - 2);
  for (int i = 0; i < 4; i++) assert_int_equal(admit_semaphore_try(s), 1);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.acquired, edge + 2);
  assert_int_equal(st.in_use, 4);
  /* Timed acquire with a free permit, and asynchronous immediate grant. */
  admit__semaphore_set_acquired(s, 2 * edge - 1);
  assert_int_equal(admit_semaphore_acquire(s, 0, ADMIT_SECOND), 0);
  st = stats_of(s);
  assert_int_equal(st.acquired, 2 * edge);
  assert_int_equal(st.in_use, 5);
  async_rec_t r;
  rec_init(&r, 0, NULL);
  uint64_t t;
  admit__semaphore_set_acquired(s, 3 * edge - 1);
  assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &t), 1);
  assert_int_equal(stats_of(s).acquired, 3 * edge);
  /* Hand-over on release and grants on a capacity raise. */
  for (int i = 0; i < 2; i++) assert_int_equal(admit_semaphore_try(s), 1);
  assert_int_equal(admit_semaphore_try(s), 0);
  async_rec_t q[3];
  for (int i = 0; i < 3; i++) {
    rec_init(&q[i], i, NULL);
    assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &q[i], &t),
                     0);
  }
  admit__semaphore_set_acquired(s, 4 * edge - 1);
  assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(atomic_load(&q[0].calls), 1);
  st = stats_of(s);
  assert_int_equal(st.acquired, 4 * edge);
  assert_int_equal(st.in_use, 8);
  admit__semaphore_set_acquired(s, 5 * edge - 1);
  assert_int_equal(admit_semaphore_set_capacity(s, 10), 0);
  st = stats_of(s);
  assert_int_equal(st.acquired, 5 * edge + 1);
  assert_int_equal(st.in_use, 10);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.capacity, 10);
  for (int i = 0; i < 10; i++) assert_int_equal(admit_semaphore_release(s), 0);
  assert_int_equal(admit_semaphore_release(s), ADMIT_EINVAL);
  st = stats_of(s);
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.acquired, 5 * edge + 1);
  admit_semaphore_free(s);
}

/* --- races --------------------------------------------------------------- */

/* A worker that releases one permit each time it is told to, after
 * spinning for the round's delay. It spins rather than sleeps so that both
 * sides of a race start within a few nanoseconds of each other. */
typedef struct racer_s {
  admit_semaphore_t* s;
  _Atomic int go;   /* round number to run */
  _Atomic int seen; /* last round started */
  _Atomic int done; /* last round finished */
  _Atomic int stop;
  _Atomic int delay;
  int rc;
  pthread_t thread;
} racer_t;

/* Spins @p n times; yields now and then so valgrind's one-at-a-time
 * scheduling still makes progress. */
static void spin(int n) {
  static _Atomic int sink;
  for (int k = 0; k < n; k++) {
    atomic_fetch_add_explicit(&sink, 1, memory_order_relaxed);
  }
}

static void* racer_main(void* p) {
  racer_t* rc = p;
  int round = 0;
  for (;;) {
    for (unsigned k = 1; atomic_load(&rc->go) == round; k++) {
      if (atomic_load(&rc->stop)) return NULL;
      if (k % 256 == 0) sched_yield();
    }
    round++;
    atomic_store(&rc->seen, round);
    spin(atomic_load(&rc->delay));
    int r = admit_semaphore_release(rc->s);
    if (r != 0) rc->rc = r;
    atomic_store(&rc->done, round);
  }
}

/* Moves @p *x by a step that doubles while the outcome repeats and halves
 * when it flips, so it finds the meeting point of two racers quickly at
 * any speed (plain, sanitised or under valgrind). */
static void walk(int* x, int* step, int* last, int up) {
  if (up == *last) {
    if (*step < 1 << 14) *step *= 2;
  } else if (*step > 8) {
    *step /= 2;
  }
  *last = up;
  *x += up ? *step : -*step;
  if (*x > 1 << 20) *x = 1 << 20;
  if (*x < -(1 << 20)) *x = -(1 << 20);
}

static void racer_wait(_Atomic int* what, int round) {
  for (unsigned k = 1; atomic_load(what) != round; k++) {
    if (k % 256 == 0) sched_yield();
  }
}

/* Cancel races release from another thread: every time, exactly one of
 * "cancel removed it" and "the callback ran" holds, and the count
 * balances. */
static void test_cancel_races_release(void** state) {
  (void)state;
  int rounds = (int)test_scale(5000, 500);
  admit_semaphore_t* s = make_sem(1, 4, 0);
  racer_t rc;
  memset(&rc, 0, sizeof(rc));
  rc.s = s;
  assert_int_equal(pthread_create(&rc.thread, NULL, racer_main, &rc), 0);
  int removed = 0, granted = 0, off = 0, step = 8, last = 0;
  for (int i = 1; i <= rounds; i++) {
    assert_int_equal(admit_semaphore_try(s), 1);
    async_rec_t r;
    rec_init(&r, i, NULL);
    uint64_t t;
    assert_int_equal(admit_semaphore_acquire_async(s, 0, async_cb, &r, &t), 0);
    /* Walk the head start of one side over the other towards the point
     * where they meet: the cancel later after a removal, earlier after a
     * grant, with some jitter. */
    int jitter = (i * 37) % 64 - 32;
    atomic_store(&rc.delay, off + jitter < 0 ? -(off + jitter) : 0);
    atomic_store(&rc.go, i);
    racer_wait(&rc.seen, i);
    spin(off + jitter > 0 ? off + jitter : 0);
    int c = admit_semaphore_cancel(s, t);
    walk(&off, &step, &last, c == 1);
    racer_wait(&rc.done, i);
    if (c == 1) {
      removed++;
      assert_int_equal(atomic_load(&r.calls), 0);
    } else {
      assert_int_equal(c, 0);
      granted++;
      assert_int_equal(atomic_load(&r.calls), 1);
      assert_int_equal(atomic_load(&r.status), 0);
      assert_int_equal(admit_semaphore_release(s), 0); /* ours to give back */
    }
    admit_semaphore_stats_t st = stats_of(s);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.waiting, 0);
  }
  atomic_store(&rc.stop, 1);
  pthread_join(rc.thread, NULL);
  assert_int_equal(rc.rc, 0);
  assert_int_equal(removed + granted, rounds);
  admit_semaphore_stats_t st = stats_of(s);
  assert_int_equal(st.cancelled, (uint64_t)removed);
  assert_int_equal(st.acquired, (uint64_t)rounds + (uint64_t)granted);
  assert_int_equal(st.in_use, 0);
  print_message("cancel/release race: %d removed, %d granted\n", removed,
                granted);
  admit_semaphore_free(s);
}

/* A blocking waiter whose time runs out as the permit arrives keeps it or
 * leaves it free: never lost. */
static void test_timeout_races_release(void** state) {
  (void)state;
  int rounds = (int)test_scale(3000, 300);
  admit_semaphore_t* s = make_sem(1, 4, 0);
  racer_t rc;
  memset(&rc, 0, sizeof(rc));
  rc.s = s;
  assert_int_equal(pthread_create(&rc.thread, NULL, racer_main, &rc), 0);
  int got = 0, timed_out = 0, delay = 0, step = 8, last = 0;
  for (int i = 1; i <= rounds; i++) {
    assert_int_equal(admit_semaphore_try(s), 1);
    /* Walk the release's delay towards the deadline: later after a grant,
     * earlier after a timeout, with some jitter. */
    atomic_store(&rc.delay, (delay > 0 ? delay : 0) + (i * 37) % 64);
    atomic_store(&rc.go, i);
    int r = admit_semaphore_acquire(s, 0, 20 * ADMIT_MICROSECOND);
    racer_wait(&rc.done, i);
    walk(&delay, &step, &last, r == 0);
    if (r == 0) {
      got++;
      assert_int_equal(admit_semaphore_release(s), 0);
    } else {
      assert_int_equal(r, ADMIT_ETIMEDOUT);
      timed_out++;
    }
    admit_semaphore_stats_t st = stats_of(s);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.waiting, 0);
  }
  atomic_store(&rc.stop, 1);
  pthread_join(rc.thread, NULL);
  assert_int_equal(rc.rc, 0);
  assert_int_equal(got + timed_out, rounds);
  assert_int_equal(stats_of(s).timed_out, (uint64_t)timed_out);
  print_message("timeout/release race: %d granted, %d timed out\n", got,
                timed_out);
  admit_semaphore_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_bad_input),
      cmocka_unit_test(test_calls_bad_input),
      cmocka_unit_test(test_try_when_full),
      cmocka_unit_test(test_timeout_zero_never_waits),
      cmocka_unit_test(test_no_waiting_when_max_waiters_zero),
      cmocka_unit_test(test_efull_at_waiter_bound),
      cmocka_unit_test(test_timed_acquire_times_out),
      cmocka_unit_test(test_timed_acquire_granted_in_time),
      cmocka_unit_test(test_forever_waits_until_release),
      cmocka_unit_test(test_timeout_in_middle_keeps_order),
      cmocka_unit_test(test_fifo_within_class),
      cmocka_unit_test(test_priority_across_classes),
      cmocka_unit_test(test_fifo_mixed_sync_async),
      cmocka_unit_test(test_async_immediate),
      cmocka_unit_test(test_async_granted_on_releasing_thread),
      cmocka_unit_test(test_async_cancel),
      cmocka_unit_test(test_async_callback_releases),
      cmocka_unit_test(test_async_many_waiters),
      cmocka_unit_test(test_free_with_async_waiters),
      cmocka_unit_test(test_capacity_raise_wakes_in_order),
      cmocka_unit_test(test_capacity_lower_drains),
      cmocka_unit_test(test_stats_counters),
      cmocka_unit_test(test_acquired_count_carries),
      cmocka_unit_test(test_cancel_races_release),
      cmocka_unit_test(test_timeout_races_release),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
