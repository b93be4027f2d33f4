/* How much a token bucket lets through in any span of time: a greedy
 * client asks every millisecond for 5 minutes, and we count the most
 * requests admitted in any 60 s span and in any 1 s span. A bucket admits
 * at most burst + rate * span in a span: to stay under a vendor's "600 per
 * minute" in every minute, the rate must leave room for the burst.
 * Output: doc/out/burst.txt. */
#include <admit.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND;
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

static uint64_t times[10000];

/* The most entries of times[0..n) in any span of @p span_ns. */
static size_t most_in(size_t n, uint64_t span_ns) {
  size_t best = 0;
  for (size_t lo = 0, hi = 0; hi < n; hi++) {
    while (times[hi] - times[lo] >= span_ns) lo++;
    if (hi - lo + 1 > best) best = hi - lo + 1;
  }
  return best;
}

static void run(const char* spec, uint64_t burst) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_quota_t q;
  admit_limiter_t* l;
  admit_decision_t d;
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, spec, NULL);
  q.burst[0] = burst;
  if (admit_limiter_new(&l, &q, &clock) < 0) exit(1);
  size_t n = 0;
  for (int i = 0; i < 300000; i++) { /* every ms for 300 s */
    admit_limiter_try(l, 1, &d);
    if (d.allowed && n < sizeof(times) / sizeof(times[0])) {
      times[n++] = now_ns;
    }
    now_ns += ADMIT_MILLISECOND;
  }
  printf("%-12s burst %3llu: most in any 60 s %4zu, in any 1 s %3zu\n",
         spec, (unsigned long long)burst, most_in(n, 60ull * ADMIT_SECOND),
         most_in(n, ADMIT_SECOND));
  admit_limiter_free(l);
}

int main(void) {
  run("600/minute", 600);
  run("600/minute", 60);
  run("600/minute", 1);
  run("540/minute", 60);
  return 0;
}
