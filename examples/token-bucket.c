/* Token bucket (GCRA) with a burst: 5 requests a second on average, up to
 * 10 at once. A fake clock makes every number exact; the output is
 * doc/out/token-bucket.txt, which `make check` compares. */
#include <admit.h>
#include <stdio.h>

/* A clock that only moves when told to. */
static uint64_t now_ns = 3600ull * ADMIT_SECOND;
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

static void show(uint64_t t0, const admit_decision_t* d) {
  printf("t=%.1fs %-7s remaining=%-2llu retry_after=%.1fs "
         "reset_after=%.1fs\n",
         (double)(now_ns - t0) / 1e9, d->allowed ? "allowed" : "denied",
         (unsigned long long)d->remaining, d->retry_after_ns / 1e9,
         d->reset_after_ns / 1e9);
}

int main(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_quota_t q;
  admit_limiter_t* l;
  admit_decision_t d;
  uint64_t t0 = now_ns;
  //! [bucket]
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "5/second", NULL);
  q.burst[0] = 10; /* 10 at once, then one every 200 ms */
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;

  for (int i = 0; i < 11; i++) { /* 11 requests at t=0 */
    admit_limiter_try(l, 1, &d);
    show(t0, &d);
  }
  now_ns += ADMIT_SECOND; /* one second later: 5 tokens are back */
  admit_limiter_peek(l, &d);
  show(t0, &d);
  admit_limiter_try(l, 3, &d); /* a request costing 3 units */
  show(t0, &d);
  //! [bucket]
  printf("cost 11 > burst 10: %s\n",
         admit_err_name(admit_limiter_try(l, 11, &d)));
  admit_limiter_free(l);
  return 0;
}
