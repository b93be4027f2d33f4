/* Several rates, all or nothing: "3/second;5/minute" as fixed windows.
 * A request passes only if every rate admits it, a denial consumes from
 * none of them, and the decision describes the rate that decided
 * (`limiting` is its index). Output: doc/out/multi-limit.txt. */
#include <admit.h>
#include <stdio.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND; /* a window edge */
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

int main(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_quota_t q;
  admit_limiter_t* l;
  admit_decision_t d;
  uint64_t t0 = now_ns;
  admit_quota_parse(&q, ADMIT_FIXED_WINDOW, "3/second;5/minute", NULL);
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
  for (int s = 0; s < 2; s++) {
    now_ns = t0 + (uint64_t)s * ADMIT_SECOND;
    for (int i = 0; i < 4; i++) {
      admit_limiter_try(l, 1, &d);
      printf("t=%ds %-7s limiting=%u (%s) limit=%llu remaining=%llu "
             "retry_after=%.0fs\n",
             s, d.allowed ? "allowed" : "denied", d.limiting,
             d.limiting == 0 ? "3/second" : "5/minute",
             (unsigned long long)d.limit, (unsigned long long)d.remaining,
             d.retry_after_ns / 1e9);
    }
  }
  admit_limiter_free(l);
  return 0;
}
