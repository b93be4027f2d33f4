/* The same traffic against a fixed window, a sliding-window counter and a
 * token bucket, all "5 per 10 seconds": 5 requests just before a window
 * edge, then 5 just after, then one more 2 seconds later. The fixed window
 * admits 10 in 0.1 s (up to 2x across an edge, by design); the sliding
 * window weights the previous window and admits none; the bucket refills
 * one unit every 2 s. Output: doc/out/window-edge.txt. */
#include <admit.h>
#include <stdio.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND; /* a window edge */
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

int main(void) {
  static const char* names[] = {"fixed window", "sliding window",
                                "token bucket"};
  static const admit_algo_t algos[] = {ADMIT_FIXED_WINDOW,
                                       ADMIT_SLIDING_WINDOW,
                                       ADMIT_TOKEN_BUCKET};
  /* Requests at these times (seconds after t0), 5, 5 and 1 of them. */
  static const double at[] = {9.9, 10.0, 12.0};
  static const int n[] = {5, 5, 1};
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  uint64_t t0 = now_ns;
  for (int a = 0; a < 3; a++) {
    admit_quota_t q;
    admit_limiter_t* l;
    admit_quota_parse(&q, algos[a], "5 per 10 seconds", NULL);
    if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
    printf("%s:\n", names[a]);
    for (int s = 0; s < 3; s++) {
      admit_decision_t d;
      int allowed = 0;
      now_ns = t0 + (uint64_t)(at[s] * 1e9 + 0.5);
      for (int i = 0; i < n[s]; i++) {
        admit_limiter_try(l, 1, &d);
        allowed += d.allowed;
      }
      printf("  t=%4.1fs  %d of %d allowed, remaining=%llu, "
             "retry_after=%.2fs\n",
             at[s], allowed, n[s], (unsigned long long)d.remaining,
             d.retry_after_ns / 1e9);
    }
    admit_limiter_free(l);
  }
  return 0;
}
