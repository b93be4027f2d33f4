/* The vendor-call guard on exact, simulated time: stage order, reject
 * before waiting, one queue timeout over every stage, giving back on
 * refusal and cancellation, the step API, retries, budget and backoff. */
#include "helpers.h"

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)

/* --- a scripted global limiter ------------------------------------------ */

typedef void (*done_fn)(void* arg, int status, const admit_decision_t* d);

typedef struct fake_global_s {
  int calls;             /* try_acquire + try_async calls */
  int deny;              /* deny this many calls, then allow */
  uint64_t retry_after;  /* what a denial asks for */
  int fail;              /* nonzero: return this code */
  uint64_t taken;        /* units allowed */
  uint64_t refunded;     /* units given back */
  uint64_t paused_ns;    /* last pause asked for */
  int pauses;
  int pause_fail;        /* nonzero: pause returns this code */
  /* Asynchronous mode: 1 = reply later (by hand), 2 = reply at once. */
  int async_mode;
  done_fn done;
  void* arg;
  uint64_t cost;
  fake_clock_t* clock;
  uint64_t* call_times; /* when each call happened */
} fake_global_t;

static void decide(fake_global_t* f, uint64_t cost, admit_decision_t* d) {
  memset(d, 0, sizeof(*d));
  if (f->call_times != NULL) f->call_times[f->calls] = fake_now(f->clock);
  f->calls++;
  if (f->deny > 0) {
    f->deny--;
    d->allowed = 0;
    d->retry_after_ns = f->retry_after;
    return;
  }
  d->allowed = 1;
  f->taken += cost;
}

static int fg_try(void* ud, uint64_t cost, admit_decision_t* d) {
  fake_global_t* f = ud;
  if (f->fail) {
    f->calls++;
    return f->fail;
  }
  decide(f, cost, d);
  return 0;
}

static int fg_try_async(void* ud, uint64_t cost, done_fn done, void* arg) {
  fake_global_t* f = ud;
  if (f->fail) return f->fail;
  if (f->async_mode == 2) {
    admit_decision_t d;
    decide(f, cost, &d);
    done(arg, 0, &d);
    return 0;
  }
  f->done = done;
  f->arg = arg;
  f->cost = cost;
  return 0;
}

/* Delivers the pending asynchronous reply. */
static void fg_reply(fake_global_t* f) {
  admit_decision_t d;
  decide(f, f->cost, &d);
  done_fn done = f->done;
  f->done = NULL;
  done(f->arg, 0, &d);
}

static int fg_refund(void* ud, uint64_t cost) {
  ((fake_global_t*)ud)->refunded += cost;
  return 0;
}

static int fg_pause(void* ud, uint64_t ns) {
  fake_global_t* f = ud;
  if (f->pause_fail) return f->pause_fail;
  f->paused_ns = ns;
  f->pauses++;
  return 0;
}

/* --- fixtures ----------------------------------------------------------- */

typedef struct fx_s {
  fake_clock_t fc;
  admit_clock_t clk;
  admit_limiter_t* local;
  admit_semaphore_t* sem;
  admit_breaker_t* breaker;
  fake_global_t fg;
  admit_guard_global_t global;
  admit_guard_t* g;
  int notified;
} fx_t;

static fx_t fx;

static void notify_count(void* ud) { ((fx_t*)ud)->notified++; }

typedef struct setup_s {
  const char* local;   /* rate spec, NULL = none */
  uint64_t sem_cap;    /* 0 = none */
  uint64_t sem_waiters;
  int global;          /* 0 none, 1 sync, 2 async */
  int breaker;
  admit_guard_options_t o;
} setup_t;

static void fx_make(setup_t* s) {
  memset(&fx, 0, sizeof(fx));
  fx.clk = fake_clock(&fx.fc, 1000 * SEC);
  if (s->local != NULL) {
    admit_quota_t q;
    assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, s->local, NULL),
                     0);
    q.burst[0] = 1;
    assert_int_equal(admit_limiter_new(&fx.local, &q, &fx.clk), 0);
  }
  if (s->sem_cap > 0) {
    admit_semaphore_options_t so = {0};
    so.capacity = s->sem_cap;
    so.max_waiters = s->sem_waiters;
    assert_int_equal(admit_semaphore_new(&fx.sem, &so), 0);
  }
  if (s->breaker) {
    admit_breaker_options_t bo = {0};
    bo.window_calls = 2;
    bo.min_calls = 2;
    bo.open_ns = 10 * SEC;
    bo.half_open_probes = 1;
    bo.clock = &fx.clk;
    assert_int_equal(admit_breaker_new(&fx.breaker, &bo), 0);
  }
  fx.fg.clock = &fx.fc;
  if (s->global) {
    fx.global.try_acquire = fg_try;
    fx.global.try_async = s->global == 2 ? fg_try_async : NULL;
    fx.global.refund = fg_refund;
    fx.global.pause = fg_pause;
    fx.global.ud = &fx.fg;
    s->o.global = &fx.global;
  }
  s->o.local = fx.local;
  s->o.semaphore = fx.sem;
  s->o.breaker = fx.breaker;
  s->o.clock = &fx.clk;
  assert_int_equal(admit_guard_new(&fx.g, &s->o), 0);
}

static void fx_free(void) {
  admit_guard_free(fx.g);
  admit_limiter_free(fx.local);
  admit_semaphore_free(fx.sem);
  admit_breaker_free(fx.breaker);
}

static uint64_t slept(void) { return atomic_load(&fx.fc.slept); }
static uint64_t sleeps(void) { return atomic_load(&fx.fc.sleeps); }

static admit_semaphore_stats_t sem_stats(void) {
  admit_semaphore_stats_t st;
  assert_int_equal(admit_semaphore_stats(fx.sem, &st), 0);
  return st;
}

static admit_guard_metrics_t metrics(void) {
  admit_guard_metrics_t m;
  assert_int_equal(admit_guard_metrics(fx.g, &m), 0);
  return m;
}

/* True when the local limiter would admit one unit right now, i.e. no
 * reservation is left standing in it (burst is 1). */
static int local_free_now(void) {
  admit_decision_t d;
  assert_int_equal(admit_limiter_peek(fx.local, &d), 0);
  return d.remaining >= 1;
}

/* --- tests -------------------------------------------------------------- */

static void test_bad_args(void** state) {
  (void)state;
  admit_guard_t* g = NULL;
  admit_guard_options_t o = {0};
  admit_guard_global_t gl = {0};
  admit_guard_permit_t p;
  uint64_t w;
  assert_int_equal(admit_guard_new(NULL, &o), ADMIT_EINVAL);
  o.global = &gl; /* no try_acquire */
  assert_int_equal(admit_guard_new(&g, &o), ADMIT_EINVAL);
  assert_null(g);
  o.global = NULL;
  o.priority = ADMIT_PRIORITIES_MAX;
  assert_int_equal(admit_guard_new(&g, &o), ADMIT_EINVAL);
  o.priority = -1;
  assert_int_equal(admit_guard_new(&g, &o), ADMIT_EINVAL);
  o.priority = 0;
  o.retry_ratio = -1;
  assert_int_equal(admit_guard_new(&g, &o), ADMIT_EINVAL);
  o.retry_ratio = 0;
  char longname[200];
  memset(longname, 'x', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  o.name = longname;
  assert_int_equal(admit_guard_new(&g, &o), ADMIT_EINVAL);
  o.name = NULL;
  assert_int_equal(admit_guard_start(NULL, &p, 0, NULL, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_guard_step(NULL, &w), ADMIT_EINVAL);
  assert_int_equal(admit_guard_wait(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_guard_enter(NULL, &p, 0), ADMIT_EINVAL);
  assert_int_equal(admit_guard_leave(NULL, 0), ADMIT_EINVAL);
  assert_int_equal(admit_guard_cancel(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_guard_retry(NULL, 0, &w), ADMIT_EINVAL);
  assert_int_equal(admit_guard_pause(NULL, 1), ADMIT_EINVAL);
  assert_int_equal(admit_guard_vendor_quota(NULL, 0, 1), ADMIT_EINVAL);
  assert_int_equal(admit_guard_call(NULL, 0, NULL, NULL, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_guard_metrics(NULL, NULL), ADMIT_EINVAL);
  assert_null(admit_guard_name(NULL));
  admit_guard_free(NULL);

  assert_int_equal(admit_guard_new(&g, NULL), 0);
  assert_string_equal(admit_guard_name(g), "default");
  assert_int_equal(admit_guard_enter(g, NULL, 0), ADMIT_EINVAL);
  assert_int_equal(admit_guard_metrics(g, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_guard_call(g, 0, NULL, NULL, NULL), ADMIT_EINVAL);
  /* A permit that was never started is refused, not trusted. */
  memset(&p, 0, sizeof(p));
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_EINVAL);
  assert_int_equal(admit_guard_leave(&p, 0), ADMIT_EINVAL);
  assert_int_equal(admit_guard_cancel(&p), ADMIT_EINVAL);
  /* Garbage is refused too, without following its pointers. */
  memset(&p, 0xA5, sizeof(p));
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_EINVAL);
  assert_int_equal(admit_guard_wait(&p), ADMIT_EINVAL);
  assert_int_equal(admit_guard_leave(&p, 0), ADMIT_EINVAL);
  assert_int_equal(admit_guard_cancel(&p), ADMIT_EINVAL);
  assert_int_equal(admit_guard_retry(&p, 0, &w), ADMIT_EINVAL);
  /* Nothing configured: admitted at once. */
  assert_int_equal(admit_guard_enter(g, &p, 0), 0);
  assert_int_equal(admit_guard_step(&p, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_guard_retry(&p, 0, &w), ADMIT_EINVAL); /* not done */
  assert_int_equal(admit_guard_leave(&p, 5), ADMIT_EINVAL);
  assert_int_equal(admit_guard_leave(&p, -1), ADMIT_EINVAL);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), ADMIT_EINVAL);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_EINVAL);
  assert_int_equal(admit_guard_cancel(&p), 0);
  assert_string_equal(admit_guard_stage_name(ADMIT_GUARD_STAGE_GLOBAL),
                      "global");
  assert_string_equal(admit_guard_stage_name(99), "unknown");
  admit_guard_free(g);
}

/* The plain path: admitted at once, deadline set, released exactly once. */
static void test_enter_leave(void** state) {
  (void)state;
  setup_t s = {.local = "100/s", .sem_cap = 2};
  s.o.call_timeout_ns = 7 * SEC;
  s.o.name = "openai";
  fx_make(&s);
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, 5 * SEC), 0);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_CALL);
  assert_int_equal(p.call_timeout_ns, 7 * SEC);
  assert_int_equal(p.call_deadline_ns, 1007 * SEC);
  assert_int_equal(p.queue_deadline_ns, 1005 * SEC);
  assert_int_equal(sem_stats().in_use, 1);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.in_flight, 1);
  assert_int_equal(m.waiting, 0);
  assert_int_equal(m.admitted, 1);
  fake_advance(&fx.fc, 5 * MS);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(sem_stats().in_use, 0);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), ADMIT_EINVAL);
  assert_int_equal(admit_guard_cancel(&p), 0);
  assert_int_equal(sem_stats().in_use, 0);
  m = metrics();
  assert_int_equal(m.in_flight, 0);
  assert_int_equal(m.succeeded, 1);
  assert_int_equal(m.started, 1);
  assert_int_equal(m.recent_calls, 1);
  assert_int_equal(m.recent_errors, 0);
  assert_int_equal(m.call_time.count, 1);
  assert_int_equal(m.call_time.sum_ns, 5 * MS);
  assert_int_equal(m.call_time.le[4], 0); /* <= 2.5 ms */
  assert_int_equal(m.call_time.le[5], 1); /* <= 5 ms */
  assert_int_equal(m.queue_wait.count, 1);
  assert_int_equal(m.queue_wait.sum_ns, 0);
  assert_int_equal(sleeps(), 0);
  assert_string_equal(admit_guard_name(fx.g), "openai");
  fx_free();
}

/* A local wait that fits is slept exactly once, for exactly its length. */
static void test_local_wait_fits(void** state) {
  (void)state;
  setup_t s = {.local = "1/s", .sem_cap = 1};
  fx_make(&s);
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, 0), 0);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(admit_guard_enter(fx.g, &p, 2 * SEC), 0);
  assert_int_equal(sleeps(), 1);
  assert_int_equal(slept(), 1 * SEC);
  assert_int_equal(p.call_deadline_ns, 1031 * SEC);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.queue_wait.count, 2);
  assert_int_equal(m.queue_wait.sum_ns, 1 * SEC);
  fx_free();
}

/* Reject before waiting: a local wait that cannot fit fails at once,
 * sleeps nothing and takes nothing. */
static void test_no_sleep_when_wait_cannot_fit(void** state) {
  (void)state;
  setup_t s = {.local = "1/s", .sem_cap = 1, .global = 1};
  fx_make(&s);
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, 0), 0);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(fx.fg.calls, 1);
  assert_int_equal(admit_guard_enter(fx.g, &p, 500 * MS), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_LOCAL);
  assert_int_equal(p.error, ADMIT_ETIMEDOUT);
  assert_int_equal(p.retry_after_ns, 1 * SEC);
  assert_int_equal(sleeps(), 0);
  assert_int_equal(fx.fg.calls, 1); /* later stages never asked */
  assert_int_equal(sem_stats().acquired, 1);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.rejected_local, 1);
  assert_int_equal(m.waiting, 0);
  /* Nothing was reserved: the next attempt waits exactly the full 1 s. */
  assert_int_equal(admit_guard_enter(fx.g, &p, 1 * SEC), 0);
  assert_int_equal(slept(), 1 * SEC);
  admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS);
  fx_free();
}

/* One queue timeout bounds the local wait and the global waits together;
 * the refusal gives back the local reservation and never touches the
 * (full) semaphore. */
static void test_queue_timeout_covers_all_stages(void** state) {
  (void)state;
  setup_t s = {.local = "5/3s", .sem_cap = 1, .sem_waiters = 8, .global = 1};
  fx_make(&s);
  uint64_t times[8];
  fx.fg.call_times = times;
  admit_decision_t d;
  assert_int_equal(admit_limiter_try(fx.local, 1, &d), 0); /* t0: 600 ms */
  assert_int_equal(d.allowed, 1);
  assert_int_equal(admit_semaphore_try(fx.sem), 1); /* the semaphore full */
  fx.fg.deny = 2;
  fx.fg.retry_after = 300 * MS;
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, 1 * SEC), ADMIT_ETIMEDOUT);
  /* 600 ms local + 300 ms global = 900 ms; the next 300 ms would not fit
   * the 100 ms left, so it fails at once at the global stage. */
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_GLOBAL);
  assert_int_equal(p.retry_after_ns, 300 * MS);
  assert_int_equal(sleeps(), 2);
  assert_int_equal(slept(), 900 * MS);
  assert_int_equal(fx.fg.calls, 2);
  assert_int_equal(times[0], 1000 * SEC + 600 * MS);
  assert_int_equal(times[1], 1000 * SEC + 900 * MS);
  admit_semaphore_stats_t st = sem_stats();
  assert_int_equal(st.in_use, 1);
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.acquired, 1);
  assert_int_equal(st.rejected + st.timed_out + st.cancelled, 0);
  /* The local reservation was given back. */
  assert_true(local_free_now());
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.rejected_global, 1);
  assert_int_equal(m.waiting, 0);
  assert_int_equal(m.in_flight, 0);
  admit_semaphore_release(fx.sem);
  fx_free();
}

/* The semaphore gets only what the earlier stages left of the queue time:
 * 600 ms local + 300 ms global leave it 100 ms, then the attempt times out
 * and gives everything back. */
static void test_queue_timeout_reaches_semaphore(void** state) {
  (void)state;
  setup_t s = {.local = "5/3s", .sem_cap = 1, .sem_waiters = 4, .global = 2};
  fx_make(&s);
  admit_decision_t d;
  admit_limiter_try(fx.local, 1, &d);
  assert_int_equal(admit_semaphore_try(fx.sem), 1);
  fx.fg.async_mode = 2;
  fx.fg.deny = 1;
  fx.fg.retry_after = 300 * MS;
  admit_guard_permit_t p;
  uint64_t w;
  admit_guard_start(fx.g, &p, 1 * SEC, notify_count, &fx);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 600 * MS);
  fake_advance(&fx.fc, w);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 300 * MS);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_GLOBAL);
  fake_advance(&fx.fc, w);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_SEMAPHORE);
  assert_int_equal(w, 100 * MS);
  fake_advance(&fx.fc, 99 * MS);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(w, 1 * MS);
  fake_advance(&fx.fc, 1 * MS);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_SEMAPHORE);
  assert_int_equal(fx.fg.taken, 1);
  assert_int_equal(fx.fg.refunded, 1);
  assert_int_equal(sem_stats().waiting, 0);
  assert_int_equal(fx.notified, 0);
  assert_int_equal(metrics().queue_timeouts, 1);
  admit_semaphore_release(fx.sem);
  fx_free();
}

/* A full semaphore is never reserved before a global rejection; a global
 * wait that cannot fit sleeps nothing. */
static void test_semaphore_not_touched_before_global(void** state) {
  (void)state;
  setup_t s = {.local = "100/s", .sem_cap = 1, .sem_waiters = 8, .global = 1};
  fx_make(&s);
  assert_int_equal(admit_semaphore_try(fx.sem), 1);
  fx.fg.deny = 1;
  fx.fg.retry_after = 10 * SEC;
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, 5 * SEC), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_GLOBAL);
  assert_int_equal(p.retry_after_ns, 10 * SEC);
  assert_int_equal(sleeps(), 0);
  admit_semaphore_stats_t st = sem_stats();
  assert_int_equal(st.acquired, 1);
  assert_int_equal(st.waiting + st.rejected + st.timed_out + st.cancelled, 0);
  assert_true(local_free_now());
  assert_int_equal(fx.fg.refunded, 0); /* a denial took nothing */
  admit_semaphore_release(fx.sem);
  fx_free();
}

/* A later stage's refusal gives back what earlier stages took: a full
 * semaphore queue refunds the global units and the local reservation. */
static void test_semaphore_full_gives_back(void** state) {
  (void)state;
  setup_t s = {.local = "100/s", .sem_cap = 1, .sem_waiters = 0, .global = 1};
  fx_make(&s);
  assert_int_equal(admit_semaphore_try(fx.sem), 1);
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, 5 * SEC), ADMIT_EFULL);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_SEMAPHORE);
  assert_int_equal(fx.fg.taken, 1);
  assert_int_equal(fx.fg.refunded, 1);
  assert_true(local_free_now());
  assert_int_equal(sleeps(), 0);
  assert_int_equal(metrics().rejected_semaphore, 1);
  assert_int_equal(sem_stats().in_use, 1);
  admit_semaphore_release(fx.sem);
  fx_free();
}

/* The step API: WAIT with exact durations, then PENDING on the semaphore,
 * one notify when it is granted, READY after. */
static void test_step_api(void** state) {
  (void)state;
  setup_t s = {.local = "1/s", .sem_cap = 1, .sem_waiters = 4, .global = 1};
  fx_make(&s);
  admit_decision_t d;
  admit_limiter_try(fx.local, 1, &d);
  assert_int_equal(admit_semaphore_try(fx.sem), 1);
  admit_guard_permit_t p;
  uint64_t w = 0;
  assert_int_equal(admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx), 0);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 1 * SEC);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_LOCAL);
  /* Stepping early asks for the rest of the wait, and changes nothing. */
  fake_advance(&fx.fc, 400 * MS);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 600 * MS);
  fake_advance(&fx.fc, 600 * MS);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(w, 4 * SEC); /* the queue time left */
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_SEMAPHORE);
  assert_int_equal(sem_stats().waiting, 1);
  assert_int_equal(fx.notified, 0);
  /* A spurious step changes nothing. */
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(metrics().waiting, 1);
  fake_advance(&fx.fc, 1 * SEC);
  assert_int_equal(admit_semaphore_release(fx.sem), 0); /* hands it over */
  assert_int_equal(fx.notified, 1);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_READY);
  assert_int_equal(p.call_deadline_ns, 1032 * SEC);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_READY);
  assert_int_equal(sem_stats().in_use, 1);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.queue_wait.sum_ns, 2 * SEC);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(sem_stats().in_use, 0);
  assert_int_equal(fx.notified, 1);
  assert_int_equal(sleeps(), 0); /* the step API never sleeps */
  fx_free();
}

/* A pending semaphore wait that runs out of queue time: the waiter is
 * withdrawn and everything given back. */
static void test_step_pending_times_out(void** state) {
  (void)state;
  setup_t s = {.local = "100/s", .sem_cap = 1, .sem_waiters = 4, .global = 1};
  fx_make(&s);
  assert_int_equal(admit_semaphore_try(fx.sem), 1);
  admit_guard_permit_t p;
  uint64_t w;
  admit_guard_start(fx.g, &p, 1 * SEC, notify_count, &fx);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(w, 1 * SEC);
  fake_advance(&fx.fc, 1 * SEC);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_SEMAPHORE);
  admit_semaphore_stats_t st = sem_stats();
  assert_int_equal(st.waiting, 0);
  assert_int_equal(st.cancelled, 1);
  assert_int_equal(fx.fg.refunded, 1);
  assert_true(local_free_now());
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.queue_timeouts, 1);
  assert_int_equal(m.waiting, 0);
  /* The release now finds nobody waiting and nobody is notified. */
  admit_semaphore_release(fx.sem);
  assert_int_equal(sem_stats().in_use, 0);
  assert_int_equal(fx.notified, 0);
  fx_free();
}

/* Asynchronous global replies: notify once per PENDING; a reply that
 * lands before the owner parks is collected without a notify. */
static void test_global_async(void** state) {
  (void)state;
  setup_t s = {.local = "100/s", .sem_cap = 1, .global = 2};
  fx_make(&s);
  admit_guard_permit_t p;
  uint64_t w;
  fx.fg.async_mode = 1;
  admit_guard_start(fx.g, &p, 3 * SEC, notify_count, &fx);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_GLOBAL);
  assert_int_equal(w, 3 * SEC);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(fx.fg.calls, 0);
  fx.fg.deny = 1;
  fx.fg.retry_after = 250 * MS;
  fg_reply(&fx.fg); /* denied: wait 250 ms, then ask again */
  assert_int_equal(fx.notified, 1);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 250 * MS);
  fake_advance(&fx.fc, 250 * MS);
  fx.fg.async_mode = 2; /* the next reply comes at once */
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_READY);
  assert_int_equal(fx.notified, 1);
  assert_int_equal(fx.fg.taken, 1);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(fx.fg.refunded, 0);
  fx_free();
}

/* A reply that arrives for a cancelled attempt gives back what it took. */
static void test_global_async_reply_after_cancel(void** state) {
  (void)state;
  setup_t s = {.sem_cap = 1, .global = 2};
  fx_make(&s);
  admit_guard_permit_t p;
  uint64_t w;
  fx.fg.async_mode = 1;
  admit_guard_start(fx.g, &p, 3 * SEC, notify_count, &fx);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(admit_guard_cancel(&p), 0);
  assert_int_equal(p.error, ADMIT_ECANCELED);
  memset(&p, 0xA5, sizeof(p)); /* the permit is the caller's again */
  fg_reply(&fx.fg);
  assert_int_equal(fx.fg.taken, 1);
  /* Owed, not refunded inside the reply callback; the next call pays. */
  assert_int_equal(fx.fg.refunded, 0);
  admit_guard_start(fx.g, &p, SEC, NULL, NULL);
  assert_int_equal(fx.fg.refunded, 1);
  admit_guard_cancel(&p);
  assert_int_equal(fx.notified, 0);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.cancelled, 2);
  assert_int_equal(m.waiting, 0);
  assert_int_equal(m.global_degraded, -1);
  fx_free();
}

/* Cancellation at every stage leaves every in-use count at 0. Units of a
 * call that was already made (@p spent) are not given back. */
static void check_all_free(int spent) {
  admit_semaphore_stats_t st = sem_stats();
  assert_int_equal(st.in_use, 0);
  assert_int_equal(st.waiting, 0);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.waiting, 0);
  assert_int_equal(m.in_flight, 0);
  assert_int_equal(fx.fg.taken, fx.fg.refunded + (uint64_t)spent);
  assert_int_equal(local_free_now(), !spent);
  /* The breaker's single half-open probe place is free again. */
  uint64_t t;
  assert_int_equal(admit_breaker_enter(fx.breaker, &t), 0);
  assert_int_equal(admit_breaker_abandon(fx.breaker, t), 0);
}

static void test_cancel_at_every_stage(void** state) {
  (void)state;
  for (int stage = 0; stage < 8; stage++) {
    setup_t s = {.local = "1/s", .sem_cap = 1, .sem_waiters = 4,
                 .global = 2, .breaker = 1};
    s.o.retry_min = 5;
    fx_make(&s);
    /* Half-open breaker with one probe, so a held probe is visible. */
    admit_breaker_trip(fx.breaker);
    fake_advance(&fx.fc, 10 * SEC);
    admit_guard_permit_t p;
    uint64_t w;
    int expect_stage;
    admit_decision_t d;
    switch (stage) {
      case 0: /* backoff of a retry */
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        admit_guard_cancel(&p);
        assert_int_equal(admit_guard_retry(&p, 5 * SEC, &w), 1);
        if (w > 0) {
          assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
          expect_stage = ADMIT_GUARD_STAGE_BACKOFF;
        } else { /* a zero backoff goes straight on to the global stage */
          assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
          fg_reply(&fx.fg);
          expect_stage = ADMIT_GUARD_STAGE_GLOBAL;
        }
        break;
      case 1: /* vendor pause */
        admit_guard_pause(fx.g, 2 * SEC);
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
        expect_stage = ADMIT_GUARD_STAGE_PAUSE;
        break;
      case 2: /* local reservation waiting for its turn */
        admit_limiter_try(fx.local, 1, &d);
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
        expect_stage = ADMIT_GUARD_STAGE_LOCAL;
        break;
      case 3: /* waiting for the global reply */
        fx.fg.async_mode = 1;
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
        expect_stage = ADMIT_GUARD_STAGE_GLOBAL;
        break;
      case 4: /* waiting out a global denial */
        fx.fg.async_mode = 2;
        fx.fg.deny = 1;
        fx.fg.retry_after = 1 * SEC;
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
        expect_stage = ADMIT_GUARD_STAGE_GLOBAL;
        break;
      case 5: /* queued on the semaphore */
        fx.fg.async_mode = 2;
        admit_semaphore_try(fx.sem);
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
        expect_stage = ADMIT_GUARD_STAGE_SEMAPHORE;
        break;
      case 6: /* admitted, during the call */
        fx.fg.async_mode = 2;
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_READY);
        expect_stage = ADMIT_GUARD_STAGE_CALL;
        break;
      default: /* granted on the semaphore but not yet stepped */
        fx.fg.async_mode = 2;
        admit_semaphore_try(fx.sem);
        admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx);
        assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
        admit_semaphore_release(fx.sem); /* granted to p */
        assert_int_equal(fx.notified, 1);
        expect_stage = ADMIT_GUARD_STAGE_SEMAPHORE;
        break;
    }
    if (expect_stage >= 0) assert_int_equal(p.stage, expect_stage);
    assert_int_equal(admit_guard_cancel(&p), 0);
    assert_int_equal(admit_guard_cancel(&p), 0); /* idempotent */
    if (stage == 5) admit_semaphore_release(fx.sem);
    if (stage == 3) {
      fg_reply(&fx.fg); /* late reply for the cancelled; paid next call */
      admit_guard_permit_t q;
      admit_guard_start(fx.g, &q, SEC, NULL, NULL);
      admit_guard_cancel(&q);
    }
    if (stage == 2) fake_advance(&fx.fc, 1 * SEC); /* the test's own unit */
    check_all_free(stage == 6);
    admit_guard_metrics_t m = metrics();
    assert_int_equal(m.cancelled, stage == 0 || stage == 3 ? 2 : 1);
    fx_free();
  }
}

/* An open breaker refuses at once, before any other stage is asked. */
static void test_breaker_in_guard(void** state) {
  (void)state;
  setup_t s = {.local = "100/s", .sem_cap = 1, .global = 1, .breaker = 1};
  fx_make(&s);
  admit_guard_permit_t p;
  for (int i = 0; i < 2; i++) {
    assert_int_equal(admit_guard_enter(fx.g, &p, SEC), 0);
    assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_FAILURE), 0);
  }
  assert_int_equal(admit_breaker_state(fx.breaker), ADMIT_BREAKER_OPEN);
  int calls = fx.fg.calls;
  assert_int_equal(admit_guard_enter(fx.g, &p, SEC), ADMIT_EOPEN);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_BREAKER);
  assert_int_equal(fx.fg.calls, calls);
  assert_int_equal(sem_stats().acquired, 2);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.rejected_breaker, 1);
  assert_int_equal(m.breaker_opened, 1);
  assert_int_equal(m.breaker_state, ADMIT_BREAKER_OPEN);
  assert_int_equal(m.failed, 2);
  assert_int_equal(m.recent_errors, 2);
  /* Half-open: one probe through the guard closes it again. */
  fake_advance(&fx.fc, 10 * SEC);
  assert_int_equal(admit_guard_enter(fx.g, &p, SEC), 0);
  admit_guard_permit_t q;
  assert_int_equal(admit_guard_enter(fx.g, &q, SEC), ADMIT_EOPEN);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(admit_breaker_state(fx.breaker), ADMIT_BREAKER_CLOSED);
  m = metrics();
  assert_int_equal(m.breaker_half_opened, 1);
  assert_int_equal(m.breaker_closed, 1);
  fx_free();
}

/* A vendor's Retry-After pauses the guard here and the global limiter
 * everywhere; a pause that outlasts the queue time fails at once. */
static void test_vendor_pause(void** state) {
  (void)state;
  setup_t s = {.local = "100/s", .sem_cap = 1, .global = 1};
  s.o.quota_low_water = 2;
  fx_make(&s);
  assert_int_equal(admit_guard_pause(fx.g, 2 * SEC), 0);
  assert_int_equal(fx.fg.pauses, 1);
  assert_int_equal(fx.fg.paused_ns, 2 * SEC);
  assert_int_equal(admit_guard_pause(fx.g, 1 * SEC), 0); /* never shortens */
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, 1 * SEC), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_PAUSE);
  assert_int_equal(p.retry_after_ns, 2 * SEC);
  assert_int_equal(sleeps(), 0);
  assert_int_equal(fx.fg.calls, 0);
  assert_int_equal(metrics().paused_for_ns, 2 * SEC);
  assert_int_equal(admit_guard_enter(fx.g, &p, 3 * SEC), 0);
  assert_int_equal(slept(), 2 * SEC);
  admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS);
  /* Remaining-quota figures: 3 left is above the low water, 2 is not. */
  assert_int_equal(admit_guard_vendor_quota(fx.g, 3, 5 * SEC), 0);
  assert_int_equal(admit_guard_vendor_quota(fx.g, 2, 5 * SEC), 1);
  assert_int_equal(fx.fg.paused_ns, 5 * SEC);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.pauses, 3);
  assert_int_equal(m.rejected_pause, 1);
  assert_int_equal(m.paused_for_ns, 5 * SEC);
  fx_free();
}

static void on_paused(void* ud, int status) {
  int* st = ud;
  st[0]++;
  st[1] = status;
}

/* The pause that never waits: with a global table, its pause is called
 * and the callback runs before admit_guard_pause_cb() returns; a table's
 * error is returned (no callback), while the local pause holds. */
static void test_vendor_pause_cb(void** state) {
  (void)state;
  setup_t s = {.sem_cap = 1, .global = 1};
  fx_make(&s);
  int st[2] = {0, 99};
  assert_int_equal(admit_guard_pause_cb(fx.g, 2 * SEC, on_paused, st), 0);
  assert_int_equal(st[0], 1);
  assert_int_equal(st[1], 0);
  assert_int_equal(fx.fg.pauses, 1);
  assert_int_equal(fx.fg.paused_ns, 2 * SEC);
  assert_int_equal(metrics().paused_for_ns, 2 * SEC);
  /* Zero pauses nothing, and still answers. */
  assert_int_equal(admit_guard_pause_cb(fx.g, 0, on_paused, st), 0);
  assert_int_equal(st[0], 2);
  assert_int_equal(fx.fg.pauses, 1);
  /* No callback is fine. */
  assert_int_equal(admit_guard_pause_cb(fx.g, 3 * SEC, NULL, NULL), 0);
  assert_int_equal(fx.fg.pauses, 2);
  assert_int_equal(metrics().pauses, 2);
  assert_int_equal(metrics().paused_for_ns, 3 * SEC);
  fx.fg.pause_fail = ADMIT_EUNAVAILABLE;
  assert_int_equal(admit_guard_pause_cb(fx.g, 4 * SEC, on_paused, st),
                   ADMIT_EUNAVAILABLE);
  assert_int_equal(st[0], 2);
  assert_int_equal(metrics().paused_for_ns, 4 * SEC);
  assert_int_equal(admit_guard_pause_cb(NULL, SEC, on_paused, st),
                   ADMIT_EINVAL);
  assert_int_equal(st[0], 2);
  fx_free();
}

/* Retries: at most retry_min + ratio * calls per window. */
static void test_retry_budget(void** state) {
  (void)state;
  setup_t s = {0};
  s.o.max_attempts = 100;
  s.o.retry_ratio = 0.5;
  s.o.retry_min = 1;
  s.o.window_ns = 10 * SEC;
  fx_make(&s);
  admit_guard_permit_t p[4];
  for (int i = 0; i < 4; i++) {
    assert_int_equal(admit_guard_enter(fx.g, &p[i], SEC), 0);
    assert_int_equal(admit_guard_leave(&p[i], ADMIT_OUTCOME_FAILURE), 0);
  }
  /* 1 + 0.5 * 4 = 3 retries. */
  uint64_t d;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(admit_guard_retry(&p[i], SEC, &d), 1);
    assert_int_equal(p[i].attempt, 1);
    assert_int_equal(admit_guard_wait(&p[i]), 0);
    assert_int_equal(admit_guard_leave(&p[i], ADMIT_OUTCOME_FAILURE), 0);
  }
  uint64_t before = sleeps();
  assert_int_equal(admit_guard_retry(&p[3], SEC, &d), 0);
  assert_int_equal(p[3].error, ADMIT_ELIMITED);
  assert_int_equal(sleeps(), before);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.retries, 3);
  assert_int_equal(m.retries_denied, 1);
  assert_int_equal(m.started, 7);
  /* A window later the budget is fresh again. */
  fake_advance(&fx.fc, 10 * SEC);
  assert_int_equal(admit_guard_retry(&p[3], SEC, &d), 1);
  assert_int_equal(admit_guard_cancel(&p[3]), 0);
  fx_free();
}

static void test_max_attempts(void** state) {
  (void)state;
  setup_t s = {0};
  s.o.max_attempts = 3;
  fx_make(&s);
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, SEC), 0);
  admit_guard_leave(&p, ADMIT_OUTCOME_TIMEOUT);
  assert_int_equal(p.error, ADMIT_ETIMEDOUT);
  for (int i = 1; i < 3; i++) {
    assert_int_equal(admit_guard_retry(&p, SEC, NULL), 1);
    assert_int_equal(admit_guard_wait(&p), 0);
    assert_int_equal(p.attempt, (uint32_t)i);
    admit_guard_leave(&p, ADMIT_OUTCOME_TIMEOUT);
  }
  assert_int_equal(admit_guard_retry(&p, SEC, NULL), 0);
  assert_int_equal(metrics().call_timeouts, 3);
  assert_int_equal(metrics().recent_errors, 3);
  fx_free();
}

/* Capped exponential backoff with full jitter: each delay in
 * [0, min(max, base * 2^attempt)], spread over the whole range; the retry
 * waits exactly that long before its stages, and its queue time starts
 * after it. */
static void test_backoff_bounds(void** state) {
  (void)state;
  setup_t s = {0};
  s.o.max_attempts = 10;
  s.o.retry_min = 100000;
  s.o.backoff_base_ns = 100 * MS;
  s.o.backoff_max_ns = 1 * SEC;
  fx_make(&s);
  uint64_t caps[] = {100 * MS, 200 * MS, 400 * MS, 800 * MS, 1 * SEC,
                     1 * SEC,  1 * SEC,  1 * SEC,  1 * SEC};
  for (uint32_t a = 0; a < 9; a++) {
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < 300; i++) {
      admit_guard_permit_t p;
      admit_guard_start(fx.g, &p, SEC, NULL, NULL);
      admit_guard_cancel(&p);
      p.attempt = a; /* as if a attempts had been made */
      uint64_t d, w = 0;
      uint64_t now = fake_now(&fx.fc);
      assert_int_equal(admit_guard_retry(&p, 2 * SEC, &d), 1);
      assert_true(d <= caps[a]);
      if (d < lo) lo = d;
      if (d > hi) hi = d;
      assert_int_equal(p.queue_deadline_ns, now + d + 2 * SEC);
      int rc = admit_guard_step(&p, &w);
      if (d > 0) {
        assert_int_equal(rc, ADMIT_GUARD_WAIT);
        assert_int_equal(w, d);
        assert_int_equal(p.stage, ADMIT_GUARD_STAGE_BACKOFF);
      } else {
        assert_int_equal(rc, ADMIT_GUARD_READY);
      }
      admit_guard_cancel(&p);
    }
    /* 300 uniform draws: both ends of the range are reached. */
    assert_true(hi > caps[a] / 2);
    assert_true(lo < caps[a] / 2);
  }
  fx_free();
}

typedef struct script_s {
  int outcomes[8];
  int n;
  uint64_t deadlines[8];
} script_t;

static int scripted(void* ud, const admit_guard_permit_t* p) {
  script_t* s = ud;
  s->deadlines[s->n] = p->call_deadline_ns;
  fake_advance(&fx.fc, 10 * MS);
  return s->outcomes[s->n++];
}

/* admit_guard_call: retries within attempts, never on refusals other than
 * the global limiter's, and reports the last code. */
static void test_call_with_retries(void** state) {
  (void)state;
  setup_t s = {.sem_cap = 1, .global = 1};
  s.o.call_timeout_ns = 1 * SEC;
  fx_make(&s);
  script_t sc = {{ADMIT_OUTCOME_VENDOR_LIMITED, ADMIT_OUTCOME_FAILURE,
                  ADMIT_OUTCOME_SUCCESS}, 0, {0}};
  admit_guard_permit_t last;
  assert_int_equal(admit_guard_call(fx.g, SEC, scripted, &sc, &last), 0);
  assert_int_equal(sc.n, 3);
  assert_int_equal(last.attempt, 2);
  assert_int_equal(sem_stats().in_use, 0);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.retries, 2);
  assert_int_equal(m.vendor_limited, 1);
  assert_int_equal(m.failed, 1);
  assert_int_equal(m.succeeded, 1);
  assert_true(sc.deadlines[0] == 1000 * SEC + 1 * SEC);

  /* Three failures: out of attempts, ADMIT_ECALL. */
  script_t bad = {{1, 1, 1, 1}, 0, {0}};
  assert_int_equal(admit_guard_call(fx.g, SEC, scripted, &bad, NULL),
                   ADMIT_ECALL);
  assert_int_equal(bad.n, 3);

  /* A global refusal is the guard's own: never retried, the call never
   * runs. */
  script_t ok = {{0}, 0, {0}};
  fx.fg.deny = 1;
  fx.fg.retry_after = 100 * SEC;
  uint64_t retries = metrics().retries;
  assert_int_equal(admit_guard_call(fx.g, SEC, scripted, &ok, &last),
                   ADMIT_ETIMEDOUT);
  assert_int_equal(ok.n, 0);
  assert_int_equal(last.stage, ADMIT_GUARD_STAGE_GLOBAL);
  assert_int_equal(last.attempt, 0);
  assert_int_equal(metrics().retries, retries);
  assert_int_equal(fx.fg.deny, 0);
  assert_int_equal(admit_guard_call(fx.g, SEC, scripted, &ok, NULL), 0);
  assert_int_equal(ok.n, 1);

  /* A full semaphore is not retried. */
  admit_semaphore_try(fx.sem);
  assert_int_equal(admit_guard_call(fx.g, SEC, scripted, &ok, &last),
                   ADMIT_EFULL);
  assert_int_equal(last.attempt, 0);
  admit_semaphore_release(fx.sem);
  fx_free();

  /* retry_on narrows what is retried. */
  setup_t s2 = {0};
  s2.o.retry_on = 1u << ADMIT_OUTCOME_VENDOR_LIMITED;
  fx_make(&s2);
  script_t t = {{ADMIT_OUTCOME_TIMEOUT}, 0, {0}};
  assert_int_equal(admit_guard_call(fx.g, SEC, scripted, &t, NULL),
                   ADMIT_ETIMEDOUT);
  assert_int_equal(t.n, 1);
  fx_free();
}

/* A vendor pause that begins while an attempt waits in a later stage stops
 * it there: the hook pauses the guard from inside the blocking wait's
 * sleep, as a 429 on another thread would. */
static uint64_t hook_pause_ns;
static void hook_sleep(void* ud, uint64_t ns) {
  fake_sleep(ud, ns);
  if (hook_pause_ns != 0) {
    uint64_t pause = hook_pause_ns;
    hook_pause_ns = 0;
    assert_int_equal(admit_guard_pause(fx.g, pause), 0);
  }
}

static void test_pause_after_local_wait(void** state) {
  (void)state;
  uint64_t times[8] = {0};
  setup_t s = {.local = "1/s", .global = 1};
  fx_make(&s);
  admit_guard_free(fx.g);
  fx.clk.sleep_ns = hook_sleep;
  s.o.clock = &fx.clk;
  assert_int_equal(admit_guard_new(&fx.g, &s.o), 0);
  fx.fg.call_times = times;
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, SEC), 0); /* the token */
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  /* A 500 ms pause begins during the 1 s local wait: it fits the 2 s, so
   * the attempt waits it out before asking the global limiter. */
  hook_pause_ns = 500 * MS;
  assert_int_equal(admit_guard_enter(fx.g, &p, 2 * SEC), 0);
  assert_int_equal(fx.fg.calls, 2);
  assert_int_equal(times[1], 1001 * SEC + 500 * MS);
  assert_int_equal(slept(), 1500 * MS);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  /* A 5 s pause with 0.5 s of queue time left: refused at once at the
   * pause, the local reservation given back, the global never asked. */
  hook_pause_ns = 5 * SEC;
  assert_int_equal(admit_guard_enter(fx.g, &p, 1500 * MS), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_PAUSE);
  assert_int_equal(p.retry_after_ns, 5 * SEC);
  assert_int_equal(fx.fg.calls, 2);
  assert_int_equal(slept(), 2000 * MS); /* 1.5 s, then 0.5 s local */
  assert_true(local_free_now());
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.rejected_pause, 1);
  assert_int_equal(m.waiting, 0);
  assert_int_equal(m.in_flight, 0);
  fx_free();
}

/* The same in the step API, after the local wait and after the semaphore
 * wait (the granted slot goes back while the pause is waited out). */
static void test_pause_after_wait_step(void** state) {
  (void)state;
  setup_t s = {.local = "1/s", .sem_cap = 1, .sem_waiters = 4, .global = 1};
  fx_make(&s);
  admit_decision_t d;
  admit_limiter_try(fx.local, 1, &d);
  admit_guard_permit_t p;
  uint64_t w = 0;
  assert_int_equal(admit_guard_start(fx.g, &p, 2 * SEC, NULL, NULL), 0);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 1 * SEC);
  assert_int_equal(admit_guard_pause(fx.g, 3 * SEC), 0);
  fake_advance(&fx.fc, 1 * SEC);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_PAUSE);
  assert_int_equal(fx.fg.calls, 0);
  assert_true(local_free_now());
  fx_free();

  fx_make(&s);
  admit_limiter_try(fx.local, 1, &d);
  assert_int_equal(admit_semaphore_try(fx.sem), 1);
  assert_int_equal(admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx), 0);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(admit_guard_pause(fx.g, 1500 * MS), 0);
  fake_advance(&fx.fc, 1 * SEC);
  /* Paused during the local wait: wait it out, global not asked yet. */
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 500 * MS);
  assert_int_equal(fx.fg.calls, 0);
  fake_advance(&fx.fc, 500 * MS);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(fx.fg.calls, 1);
  assert_int_equal(sem_stats().waiting, 1);
  /* Paused while queued for the semaphore: the granted slot goes back. */
  assert_int_equal(admit_guard_pause(fx.g, 1 * SEC), 0);
  assert_int_equal(admit_semaphore_release(fx.sem), 0);
  assert_int_equal(fx.notified, 1);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_WAIT);
  assert_int_equal(w, 1 * SEC);
  assert_int_equal(sem_stats().in_use, 0);
  fake_advance(&fx.fc, 1 * SEC);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_READY);
  assert_int_equal(sem_stats().in_use, 1);
  assert_int_equal(fx.fg.calls, 1);
  assert_int_equal(admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS), 0);
  assert_int_equal(sem_stats().in_use, 0);
  /* A pause beyond the queue time after the semaphore wait: refused, the
   * slot and the global unit given back. */
  assert_int_equal(admit_semaphore_try(fx.sem), 1);
  assert_int_equal(admit_guard_start(fx.g, &p, 5 * SEC, notify_count, &fx), 0);
  fake_advance(&fx.fc, 1 * SEC);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_GUARD_PENDING);
  assert_int_equal(admit_guard_pause(fx.g, 60 * SEC), 0);
  assert_int_equal(admit_semaphore_release(fx.sem), 0);
  assert_int_equal(admit_guard_step(&p, &w), ADMIT_ETIMEDOUT);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_PAUSE);
  assert_int_equal(sem_stats().in_use, 0);
  assert_int_equal(fx.fg.refunded, 1);
  assert_int_equal(sleeps(), 0);
  fx_free();
}

/* admit_guard_call: the queue timeout is one budget across attempts. The
 * local limiter (1/s, burst 1) lets the first attempt through at once, the
 * second waits 0.99 s of the 1.5 s (each call takes 10 ms), and the third,
 * needing 0.99 s with 0.51 s left, is refused at once without sleeping
 * and without running (each attempt had its own 1.5 s before). */
static void test_call_queue_budget_across_attempts(void** state) {
  (void)state;
  setup_t s = {.local = "1/s"};
  s.o.call_timeout_ns = 1 * SEC;
  s.o.max_attempts = 5;
  s.o.backoff_base_ns = 1;
  s.o.backoff_max_ns = 1;
  fx_make(&s);
  script_t sc = {{ADMIT_OUTCOME_FAILURE, ADMIT_OUTCOME_FAILURE,
                  ADMIT_OUTCOME_SUCCESS}, 0, {0}};
  admit_guard_permit_t last;
  assert_int_equal(admit_guard_call(fx.g, 1500 * MS, scripted, &sc, &last),
                   ADMIT_ETIMEDOUT);
  assert_int_equal(sc.n, 2);
  assert_int_equal(last.attempt, 2);
  assert_int_equal(last.stage, ADMIT_GUARD_STAGE_LOCAL);
  admit_guard_metrics_t m = metrics();
  assert_int_equal(m.retries, 2);
  assert_int_equal(m.failed, 2);
  assert_int_equal(m.rejected_local, 1);
  /* Slept: the second attempt's 0.99 s, and the backoffs (0 or 1 ns). */
  assert_true(slept() >= 990 * MS - 2 && slept() <= 990 * MS + 2);
  fx_free();

  /* The same script with room for the third wait succeeds. */
  fx_make(&s);
  script_t sc2 = {{ADMIT_OUTCOME_FAILURE, ADMIT_OUTCOME_FAILURE,
                   ADMIT_OUTCOME_SUCCESS}, 0, {0}};
  assert_int_equal(admit_guard_call(fx.g, 2500 * MS, scripted, &sc2, &last),
                   0);
  assert_int_equal(sc2.n, 3);
  assert_int_equal(last.attempt, 2);
  fx_free();
}

/* A global backend error fails the attempt with its code and gives back
 * the local reservation. */
static void test_global_error(void** state) {
  (void)state;
  setup_t s = {.local = "1/s", .sem_cap = 1, .global = 1};
  fx_make(&s);
  fx.fg.fail = ADMIT_EUNAVAILABLE;
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(fx.g, &p, SEC), ADMIT_EUNAVAILABLE);
  assert_int_equal(p.stage, ADMIT_GUARD_STAGE_GLOBAL);
  assert_true(local_free_now());
  assert_int_equal(metrics().errors, 1);
  fx_free();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_enter_leave),
      cmocka_unit_test(test_local_wait_fits),
      cmocka_unit_test(test_no_sleep_when_wait_cannot_fit),
      cmocka_unit_test(test_queue_timeout_covers_all_stages),
      cmocka_unit_test(test_queue_timeout_reaches_semaphore),
      cmocka_unit_test(test_semaphore_not_touched_before_global),
      cmocka_unit_test(test_semaphore_full_gives_back),
      cmocka_unit_test(test_step_api),
      cmocka_unit_test(test_step_pending_times_out),
      cmocka_unit_test(test_global_async),
      cmocka_unit_test(test_global_async_reply_after_cancel),
      cmocka_unit_test(test_cancel_at_every_stage),
      cmocka_unit_test(test_breaker_in_guard),
      cmocka_unit_test(test_vendor_pause),
      cmocka_unit_test(test_vendor_pause_cb),
      cmocka_unit_test(test_pause_after_local_wait),
      cmocka_unit_test(test_pause_after_wait_step),
      cmocka_unit_test(test_retry_budget),
      cmocka_unit_test(test_max_attempts),
      cmocka_unit_test(test_backoff_bounds),
      cmocka_unit_test(test_call_with_retries),
      cmocka_unit_test(test_call_queue_budget_across_attempts),
      cmocka_unit_test(test_global_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
