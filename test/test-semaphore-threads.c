/* Semaphore under load: many threads mixing try, timed and asynchronous
 * waits (with random cancels) for a stretch of real time. */
#include "helpers.h"

#include <pthread.h>
#include <sched.h>

enum { THREADS = 8, CAPACITY = 3, MAX_WAITERS = 4, PENDING_MAX = 64 };

/* Few classes, so that waits of one class often overlap. */
enum { CLASSES = 3 };

/* An asynchronous wait that is still queued, or granted with its callback
 * not yet finished. Used to check FIFO order within a class. */
typedef struct pending_s {
  int used;
  uint64_t seq;
  uint64_t ticket;
  struct async_wait_s* wait;
} pending_t;

typedef struct world_s {
  admit_semaphore_t* s;
  _Atomic int stop;
  _Atomic int inside;     /* threads inside the critical section now */
  _Atomic int max_inside;
  _Atomic uint64_t limit; /* the largest capacity ever set */
  /* FIFO bookkeeping: enqueues and probes are serialised by mu. */
  pthread_mutex_t mu;
  uint64_t next_seq;
  pending_t pending[ADMIT_PRIORITIES_MAX][PENDING_MAX];
  _Atomic uint64_t fifo_checks;
  _Atomic uint64_t fifo_violations;
  _Atomic uint64_t bad_status;
  _Atomic uint64_t capacity_errors;
} world_t;

typedef struct async_wait_s {
  world_t* w;
  int priority;
  uint64_t seq;
  _Atomic int granted;  /* the callback delivered the permit */
  _Atomic int stolen;   /* a FIFO probe removed it (a failure) */
} async_wait_t;

typedef struct counts_s {
  uint64_t acquired; /* permits obtained, every way */
  uint64_t rejected; /* ADMIT_EFULL */
  uint64_t timed_out;
  uint64_t cancelled; /* cancel returned 1 */
  uint64_t async_granted;
  uint64_t errors;    /* any unexpected return code */
} counts_t;

typedef struct worker_s {
  world_t* w;
  int id;
  uint64_t rng;
  counts_t c;
  pthread_t thread;
} worker_t;

static uint64_t rnd(worker_t* k) {
  uint64_t x = k->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  k->rng = x;
  return x;
}

static void spin_for(uint64_t n) {
  static _Atomic int sink;
  for (uint64_t i = 0; i < n; i++) {
    atomic_fetch_add_explicit(&sink, 1, memory_order_relaxed);
  }
}

/* Holds a permit for a moment, checking that no more than the capacity
 * are held at once. */
static void critical(world_t* w, worker_t* k) {
  int now = atomic_fetch_add(&w->inside, 1) + 1;
  int max = atomic_load(&w->max_inside);
  while (now > max &&
         !atomic_compare_exchange_weak(&w->max_inside, &max, now)) {
  }
  if ((uint64_t)now > atomic_load(&w->limit)) {
    atomic_fetch_add(&w->capacity_errors, 1);
  }
  spin_for(rnd(k) % 200);
  atomic_fetch_sub(&w->inside, 1);
  if (admit_semaphore_release(w->s) != 0) k->c.errors++;
}

/* Under mu: FIFO within a class means every earlier wait of this class is
 * granted or gone by the time this one is granted. Probing an earlier one
 * with cancel must therefore find it granted (0); 1 means it was still
 * queued behind us. */
static void fifo_probe_locked(world_t* w, async_wait_t* me) {
  pending_t* row = w->pending[me->priority];
  for (int i = 0; i < PENDING_MAX; i++) {
    if (!row[i].used) continue;
    if (row[i].wait == me) {
      row[i].used = 0;
      continue;
    }
    if (row[i].seq > me->seq) continue;
    atomic_fetch_add(&w->fifo_checks, 1);
    int c = admit_semaphore_cancel(w->s, row[i].ticket);
    if (c != 0) {
      atomic_fetch_add(&w->fifo_violations, 1);
      if (c == 1) {
        row[i].used = 0;
        atomic_store(&row[i].wait->stolen, 1);
      }
    }
  }
}

static void on_grant(void* ud, uint64_t ticket, int status) {
  (void)ticket;
  async_wait_t* a = ud;
  world_t* w = a->w;
  if (status != 0) {
    atomic_fetch_add(&w->bad_status, 1);
    return;
  }
  pthread_mutex_lock(&w->mu);
  fifo_probe_locked(w, a);
  pthread_mutex_unlock(&w->mu);
  atomic_store(&a->granted, 1);
}

/* Waits until the callback has delivered the permit. */
static void wait_granted(async_wait_t* a) {
  for (unsigned k = 1; !atomic_load(&a->granted) && !atomic_load(&a->stolen);
       k++) {
    if (k % 64 == 0) sched_yield();
  }
}

static void do_async(worker_t* k) {
  world_t* w = k->w;
  async_wait_t a;
  a.w = w;
  a.priority = (int)(rnd(k) % CLASSES);
  atomic_init(&a.granted, 0);
  atomic_init(&a.stolen, 0);
  uint64_t ticket = 0;
  pthread_mutex_lock(&w->mu);
  a.seq = w->next_seq++;
  int rc = admit_semaphore_acquire_async(w->s, a.priority, on_grant, &a,
                                         &ticket);
  if (rc == 0) {
    pending_t* row = w->pending[a.priority];
    int i = 0;
    while (i < PENDING_MAX && row[i].used) i++;
    if (i == PENDING_MAX) {
      k->c.errors++; /* cannot happen: at most THREADS are pending */
    } else {
      row[i].used = 1;
      row[i].seq = a.seq;
      row[i].ticket = ticket;
      row[i].wait = &a;
    }
  }
  pthread_mutex_unlock(&w->mu);

  if (rc == 1) {
    k->c.acquired++;
    critical(w, k);
    return;
  }
  if (rc == ADMIT_EFULL) {
    k->c.rejected++;
    return;
  }
  if (rc != 0) {
    k->c.errors++;
    return;
  }
  /* Queued: wait a little, then maybe give up, as a cancelled task
   * would. */
  uint64_t patience = rnd(k) % 4000;
  for (uint64_t i = 0; i < patience && !atomic_load(&a.granted); i++) {
    if (i % 64 == 63) sched_yield();
  }
  if (!atomic_load(&a.granted) && rnd(k) % 2 == 0) {
    pthread_mutex_lock(&w->mu);
    int c = admit_semaphore_cancel(w->s, ticket);
    if (c == 1) {
      pending_t* row = w->pending[a.priority];
      for (int i = 0; i < PENDING_MAX; i++) {
        if (row[i].used && row[i].wait == &a) row[i].used = 0;
      }
    }
    pthread_mutex_unlock(&w->mu);
    if (c == 1) {
      k->c.cancelled++;
      return;
    }
    if (c != 0) k->c.errors++;
    /* 0: granted as we cancelled; the permit is ours. */
  }
  wait_granted(&a);
  if (atomic_load(&a.stolen)) return; /* counted as a FIFO violation */
  k->c.acquired++;
  k->c.async_granted++;
  critical(w, k);
}

static void* worker_main(void* p) {
  worker_t* k = p;
  world_t* w = k->w;
  while (!atomic_load(&w->stop)) {
    uint64_t op = rnd(k) % 8;
    if (op < 2) {
      int r = admit_semaphore_try(w->s);
      if (r == 1) {
        k->c.acquired++;
        critical(w, k);
      } else if (r != 0) {
        k->c.errors++;
      }
    } else if (op < 5) {
      int prio = (int)(rnd(k) % CLASSES);
      uint64_t timeout = rnd(k) % 16 == 0 ? ADMIT_FOREVER
                                           : rnd(k) % (200 * ADMIT_MICROSECOND);
      int r = admit_semaphore_acquire(w->s, prio, timeout);
      if (r == 0) {
        k->c.acquired++;
        critical(w, k);
      } else if (r == ADMIT_ETIMEDOUT) {
        k->c.timed_out++;
      } else if (r == ADMIT_EFULL) {
        k->c.rejected++;
      } else {
        k->c.errors++;
      }
    } else {
      do_async(k);
    }
  }
  return NULL;
}

/* Changes the capacity now and then while the workers run. */
static void* resizer_main(void* p) {
  world_t* w = p;
  uint64_t caps[] = {CAPACITY, 1, CAPACITY + 2, 2, CAPACITY};
  int i = 0;
  while (!atomic_load(&w->stop)) {
    admit_sleep_ns(2 * ADMIT_MILLISECOND);
    if (admit_semaphore_set_capacity(w->s, caps[i % 5]) != 0) {
      atomic_fetch_add(&w->capacity_errors, 1);
    }
    i++;
  }
  admit_semaphore_set_capacity(w->s, CAPACITY);
  return NULL;
}

static void hammer(int resize) {
  static world_t w; /* large: keep it off the stack */
  memset(&w, 0, sizeof(w));
  pthread_mutex_init(&w.mu, NULL);
  admit_semaphore_options_t o;
  memset(&o, 0, sizeof(o));
  o.capacity = CAPACITY;
  /* A bounded queue that fills now and then, or an unbounded one. */
  o.max_waiters = MAX_WAITERS;
  o.unbounded_waiters = resize;
  assert_int_equal(admit_semaphore_new(&w.s, &o), 0);
  atomic_store(&w.limit, resize ? CAPACITY + 2 : CAPACITY);

  worker_t k[THREADS];
  for (int i = 0; i < THREADS; i++) {
    memset(&k[i], 0, sizeof(k[i]));
    k[i].w = &w;
    k[i].id = i;
    k[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) ^ admit_now_ns();
    if (k[i].rng == 0) k[i].rng = 1;
    assert_int_equal(pthread_create(&k[i].thread, NULL, worker_main, &k[i]),
                     0);
  }
  pthread_t resizer;
  if (resize) {
    assert_int_equal(pthread_create(&resizer, NULL, resizer_main, &w), 0);
  }
  admit_sleep_ns(test_scale(2ull * ADMIT_SECOND, 300 * ADMIT_MILLISECOND));
  atomic_store(&w.stop, 1);
  for (int i = 0; i < THREADS; i++) pthread_join(k[i].thread, NULL);
  if (resize) pthread_join(resizer, NULL);

  counts_t sum;
  memset(&sum, 0, sizeof(sum));
  for (int i = 0; i < THREADS; i++) {
    sum.acquired += k[i].c.acquired;
    sum.rejected += k[i].c.rejected;
    sum.timed_out += k[i].c.timed_out;
    sum.cancelled += k[i].c.cancelled;
    sum.async_granted += k[i].c.async_granted;
    sum.errors += k[i].c.errors;
  }
  admit_semaphore_stats_t st;
  assert_int_equal(admit_semaphore_stats(w.s, &st), 0);
  print_message("%s: %llu acquired (%llu by async grant), %llu rejected, "
                "%llu timed out, %llu cancelled, max inside %d, "
                "%llu FIFO probes\n",
                resize ? "with resizing" : "fixed capacity",
                (unsigned long long)sum.acquired,
                (unsigned long long)sum.async_granted,
                (unsigned long long)sum.rejected,
                (unsigned long long)sum.timed_out,
                (unsigned long long)sum.cancelled,
                atomic_load(&w.max_inside),
                (unsigned long long)atomic_load(&w.fifo_checks));

  assert_int_equal(sum.errors, 0);
  assert_int_equal(atomic_load(&w.capacity_errors), 0);
  assert_int_equal(atomic_load(&w.fifo_violations), 0);
  assert_int_equal(atomic_load(&w.bad_status), 0);
  assert_true(atomic_load(&w.max_inside) >= 1);
  assert_true((uint64_t)atomic_load(&w.max_inside) <= atomic_load(&w.limit));
  assert_int_equal(atomic_load(&w.inside), 0);
  /* Nothing lost, nothing invented: every counter matches what the
   * callers saw, and every permit came back. */
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.capacity, CAPACITY);
  assert_int_equal(st.acquired, sum.acquired);
  assert_int_equal(st.rejected, sum.rejected);
  assert_int_equal(st.timed_out, sum.timed_out);
  assert_int_equal(st.cancelled, sum.cancelled);
  assert_true(sum.acquired > 0);
  /* The full capacity is usable again. */
  for (int i = 0; i < CAPACITY; i++) {
    assert_int_equal(admit_semaphore_try(w.s), 1);
  }
  assert_int_equal(admit_semaphore_try(w.s), 0);
  for (int i = 0; i < CAPACITY; i++) {
    assert_int_equal(admit_semaphore_release(w.s), 0);
  }
  admit_semaphore_free(w.s);
  pthread_mutex_destroy(&w.mu);
}

static void test_hammer_fixed_capacity(void** state) {
  (void)state;
  hammer(0);
}

static void test_hammer_with_resizing(void** state) {
  (void)state;
  hammer(1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hammer_fixed_capacity),
      cmocka_unit_test(test_hammer_with_resizing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
