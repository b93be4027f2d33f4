/* From a decision to HTTP: the status, `Retry-After` and the IETF
 * `RateLimit-Policy` / `RateLimit` fields, written the way admit.fastapi
 * writes them. "10/minute" as a fixed window, eleven requests 43 s into a
 * minute. Output: doc/out/http-headers.txt. */
#include <admit.h>
#include <stdio.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND; /* a window edge */
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

//! [headers]
/* Whole seconds, rounded up: a client that waits that long fits. */
static unsigned long long ceil_s(uint64_t ns) {
  return ns / ADMIT_SECOND + (ns % ADMIT_SECOND != 0);
}

static void respond(const char* policy, const admit_quota_t* q,
                    const admit_decision_t* d) {
  const admit_rate_t* r = &q->rates[d->limiting];
  printf("HTTP/1.1 %s\n", d->allowed ? "200 OK" : "429 Too Many Requests");
  printf("RateLimit-Policy: \"%s\";q=%llu;w=%llu\n", policy,
         (unsigned long long)r->count, ceil_s(r->period_ns));
  printf("RateLimit: \"%s\";r=%llu;t=%llu\n", policy,
         (unsigned long long)d->remaining, ceil_s(d->reset_after_ns));
  if (!d->allowed) {
    unsigned long long s = ceil_s(d->retry_after_ns);
    printf("Retry-After: %llu\n", s < 1 ? 1 : s);
  }
}
//! [headers]

int main(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_quota_t q;
  admit_limiter_t* l;
  admit_decision_t d;
  admit_quota_parse(&q, ADMIT_FIXED_WINDOW, "10/minute", NULL);
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
  now_ns += 43ull * ADMIT_SECOND;
  for (int i = 0; i < 11; i++) {
    admit_limiter_try(l, 1, &d);
    if (i == 0 || i >= 9) {
      printf("-- request %d\n", i + 1);
      respond("free", &q, &d);
    }
  }
  admit_limiter_free(l);
  return 0;
}
