/* The vendor-call guard runs the seed's stages in order (breaker, vendor
 * pause, local limiter, global limiter, semaphore) within one queue
 * timeout, and refuses at once when a wait cannot fit. A fake clock makes
 * the run exact; an in-process keyed limiter stands in for the Redis
 * vendor limiter as the global stage. Output: doc/out/guard-order.txt. */
#include <admit.h>
#include <stdio.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND;
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

/* The global stage: "3 per minute" for the key "vendor". With Redis, set
 * the guard's `redis` option to an admit_redis_limiter_t instead. */
static int global_try(void* ud, uint64_t cost, admit_decision_t* d) {
  return admit_keyed_try(ud, 0, "vendor", 6, cost, d);
}
static int global_refund(void* ud, uint64_t cost) {
  return admit_keyed_refund(ud, 0, "vendor", 6, cost);
}

static admit_semaphore_t* sem;
static admit_keyed_t* vendor;

static void show(const char* what, int rc, const char* status,
                 const admit_guard_permit_t* p, uint64_t before) {
  admit_semaphore_stats_t st;
  admit_decision_t d;
  admit_semaphore_stats(sem, &st);
  admit_keyed_peek(vendor, 0, "vendor", 6, &d);
  if (status == NULL) status = rc == 0 ? "admitted" : admit_err_name(rc);
  printf("%-24s %-15s stage=%-9s slept=%.1fs", what, status,
         admit_guard_stage_name(p->stage), (now_ns - before) / 1e9);
  if (rc < 0 && p->retry_after_ns > 0) {
    printf(" wanted=%.1fs", p->retry_after_ns / 1e9);
  }
  printf(" | sem in_use=%llu vendor left=%llu\n",
         (unsigned long long)st.in_use, (unsigned long long)d.remaining);
}

static int enter(admit_guard_t* g, admit_guard_permit_t* p, double queue_s,
                 const char* what) {
  uint64_t before = now_ns;
  int rc = admit_guard_enter(g, p, (uint64_t)(queue_s * 1e9));
  show(what, rc, NULL, p, before);
  return rc;
}

int main(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_quota_t q;
  admit_limiter_t* local;
  admit_breaker_t* breaker;
  admit_breaker_options_t bo = {0};
  bo.clock = &clock;
  admit_semaphore_options_t so = {0};
  so.capacity = 1;
  so.max_waiters = 10;
  admit_keyed_options_t ko = {0};
  admit_quota_t vq;
  admit_quota_parse(&vq, ADMIT_FIXED_WINDOW, "3/minute", NULL);
  ko.quotas = &vq;
  ko.nquotas = 1;
  ko.clock = &clock;
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "1/second", NULL);
  if (admit_limiter_new(&local, &q, &clock) < 0 ||
      admit_breaker_new(&breaker, &bo) < 0 ||
      admit_semaphore_new(&sem, &so) < 0 ||
      admit_keyed_new(&vendor, &ko) < 0) {
    return 1;
  }
  //! [guard]
  admit_guard_global_t global = {0};
  global.try_acquire = global_try;
  global.refund = global_refund;
  global.ud = vendor;
  admit_guard_options_t o = {0};
  o.name = "llm";
  o.breaker = breaker;     /* fail fast while the vendor is down */
  o.local = local;         /* smoothing: 1 call a second from this pod */
  o.global = &global;      /* the vendor's quota, shared by every pod */
  o.semaphore = sem;       /* local capacity, taken last */
  o.call_timeout_ns = 30ull * ADMIT_SECOND;
  o.clock = &clock;
  admit_guard_t* g;
  if (admit_guard_new(&g, &o) < 0) return 1;

  admit_guard_permit_t a, b, c;
  if (enter(g, &a, 5, "call 1, queue 5 s") == 0) {
    /* ... the vendor call, by a.call_deadline_ns ... */
    admit_guard_leave(&a, ADMIT_OUTCOME_SUCCESS);
  }
  //! [guard]
  enter(g, &a, 0.5, "call 2, queue 0.5 s");
  enter(g, &a, 5, "call 3, queue 5 s"); /* held: the semaphore is full */

  /* An event loop uses the step API: it never blocks. */
  uint64_t wait, before = now_ns;
  admit_guard_start(g, &b, 5ull * ADMIT_SECOND, NULL, NULL);
  int r = admit_guard_step(&b, &wait);
  while (r == ADMIT_GUARD_WAIT) { /* the local limiter's wait */
    fake_sleep(NULL, wait);
    r = admit_guard_step(&b, &wait);
  }
  show("call 4, step API", r, r == ADMIT_GUARD_PENDING ? "pending" : NULL,
       &b, before);
  admit_guard_cancel(&b); /* the caller gave up: all is given back */
  show("call 4 cancelled", 0, "cancelled", &b, now_ns);
  admit_guard_leave(&a, ADMIT_OUTCOME_SUCCESS);

  enter(g, &c, 5, "call 5, queue 5 s");
  admit_guard_leave(&c, ADMIT_OUTCOME_SUCCESS);
  enter(g, &c, 5, "call 6, queue 5 s");
  admit_guard_pause(g, 30ull * ADMIT_SECOND); /* the vendor said 429 */
  enter(g, &c, 5, "call 7, after a 429");
  admit_breaker_trip(breaker); /* e.g. the vendor keeps failing */
  enter(g, &c, 5, "call 8, breaker open");

  admit_guard_metrics_t m;
  admit_guard_metrics(g, &m);
  printf("metrics: started=%llu admitted=%llu rejected local=%llu "
         "global=%llu pause=%llu breaker=%llu cancelled=%llu\n",
         (unsigned long long)m.started, (unsigned long long)m.admitted,
         (unsigned long long)m.rejected_local,
         (unsigned long long)m.rejected_global,
         (unsigned long long)m.rejected_pause,
         (unsigned long long)m.rejected_breaker,
         (unsigned long long)m.cancelled);
  admit_guard_free(g);
  admit_keyed_free(vendor);
  admit_semaphore_free(sem);
  admit_breaker_free(breaker);
  admit_limiter_free(local);
  return 0;
}
