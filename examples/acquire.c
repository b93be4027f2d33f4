/* Acquire waits only when the wait fits its timeout, and otherwise fails
 * at once instead of sleeping the timeout out. The fake clock's sleep
 * advances it, so the times printed are the times a real caller would
 * have slept. Output: doc/out/acquire.txt. */
#include <admit.h>
#include <stdio.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND;
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

static void run(admit_limiter_t* l, double timeout_s, uint64_t t0) {
  admit_decision_t d;
  uint64_t before = now_ns;
  int rc = admit_limiter_acquire(l, 1, (uint64_t)(timeout_s * 1e9), &d);
  printf("t=%.1fs acquire(timeout=%.1fs) -> %-15s slept %.1fs",
         (before - t0) / 1e9, timeout_s, rc == 0 ? "0" : admit_err_name(rc),
         (now_ns - before) / 1e9);
  if (rc == ADMIT_ETIMEDOUT) {
    printf(" (would need %.1fs)", d.retry_after_ns / 1e9);
  }
  printf("\n");
}

int main(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_quota_t q;
  admit_limiter_t* l;
  uint64_t t0 = now_ns;
  printf("token bucket, 1/second:\n");
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "1/second", NULL);
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
  run(l, 3.0, t0);
  run(l, 3.0, t0);
  run(l, 3.0, t0);
  run(l, 0.5, t0);
  admit_limiter_free(l);

  printf("fixed window, 2 per 10 seconds, from 4 s into a window:\n");
  now_ns = t0 + 4ull * ADMIT_SECOND;
  admit_quota_parse(&q, ADMIT_FIXED_WINDOW, "2 per 10 seconds", NULL);
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
  run(l, 10.0, t0);
  run(l, 10.0, t0);
  run(l, 5.0, t0);
  run(l, 10.0, t0);
  admit_limiter_free(l);
  return 0;
}
