/* The sliding-window counter's weighting: "10 per minute". Ten requests
 * fill window 0; in window 1 the previous count weighs (60 - e) / 60,
 * where e is the time elapsed in window 1, so room comes back gradually.
 * Output: doc/out/sliding-window.txt. */
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
  admit_quota_parse(&q, ADMIT_SLIDING_WINDOW, "10/minute", NULL);
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
  now_ns = t0 + 30ull * ADMIT_SECOND;
  for (int i = 0; i < 10; i++) admit_limiter_try(l, 1, &d);
  printf("t=30s: 10 allowed, remaining=%llu\n",
         (unsigned long long)d.remaining);
  admit_limiter_try(l, 1, &d);
  printf("t=30s: 11th %s, retry_after=%.0fs\n",
         d.allowed ? "allowed" : "denied", d.retry_after_ns / 1e9);
  /* Window 1 starts at t=60s; look (peek consumes nothing) as it goes. */
  for (int s = 60; s <= 120; s += 15) {
    now_ns = t0 + (uint64_t)s * ADMIT_SECOND;
    admit_limiter_peek(l, &d);
    if (s < 120) {
      printf("t=%3ds: window 0 weighs %2d/60 -> remaining=%llu\n", s,
             120 - s, (unsigned long long)d.remaining);
    } else {
      printf("t=%3ds: window 0 no longer counts -> remaining=%llu\n", s,
             (unsigned long long)d.remaining);
    }
  }
  /* Back at t=75s: 2 fit (10 - 10 * 45/60 = 2.5), the third waits until
   * the previous window's weight has shrunk enough. */
  admit_limiter_reset(l);
  now_ns = t0 + 30ull * ADMIT_SECOND;
  for (int i = 0; i < 10; i++) admit_limiter_try(l, 1, &d);
  now_ns = t0 + 75ull * ADMIT_SECOND;
  for (int i = 0; i < 3; i++) {
    admit_limiter_try(l, 1, &d);
    printf("t=75s: request %d %s, remaining=%llu, retry_after=%.0fs\n",
           i + 1, d.allowed ? "allowed" : "denied",
           (unsigned long long)d.remaining, d.retry_after_ns / 1e9);
  }
  admit_limiter_free(l);
  return 0;
}
