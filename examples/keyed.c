/* Keyed limiters: one state per user in each tier, in bounded memory.
 * Tiers "free" (10/minute) and "pro" (100/minute) as token buckets; then a
 * flood of unique keys against a table bounded to 50 keys. Output:
 * doc/out/keyed.txt. */
#include <admit.h>
#include <stdio.h>
#include <string.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND;
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

enum { FREE = 0, PRO = 1 }; /* tier = index in the quota array */

/* Sends @p n requests for @p user in @p tier; prints how many passed. */
static void burst(admit_keyed_t* k, uint32_t tier, const char* user, int n) {
  admit_decision_t d;
  int ok = 0;
  for (int i = 0; i < n; i++) {
    if (admit_keyed_try(k, tier, user, strlen(user), 1, &d) == 0) {
      ok += d.allowed;
    }
  }
  printf("%-5s in %-4s: %2d of %d allowed, remaining=%llu, "
         "retry_after=%.0fs\n",
         user, tier == FREE ? "free" : "pro", ok, n,
         (unsigned long long)d.remaining, d.retry_after_ns / 1e9);
}

/* One request each for users u<from>..u<to - 1>; returns how many were
 * refused with ADMIT_EFULL. */
static int flood(admit_keyed_t* k, int from, int to) {
  int full = 0;
  for (int i = from; i < to; i++) {
    char key[32];
    admit_decision_t d;
    int len = snprintf(key, sizeof(key), "u%d", i);
    full += admit_keyed_try(k, FREE, key, (size_t)len, 1, &d) ==
            ADMIT_EFULL;
  }
  return full;
}

int main(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  //! [keyed]
  admit_quota_t tiers[2];
  admit_quota_parse(&tiers[FREE], ADMIT_TOKEN_BUCKET, "10/minute", NULL);
  admit_quota_parse(&tiers[PRO], ADMIT_TOKEN_BUCKET, "100/minute", NULL);
  admit_keyed_options_t o = {0};
  o.quotas = tiers;
  o.nquotas = 2;
  o.max_keys = 1000; /* memory bound: at most 1000 live keys */
  o.clock = &clock;
  admit_keyed_t* k;
  if (admit_keyed_new(&k, &o) < 0) return 1;

  burst(k, FREE, "alice", 11);
  burst(k, PRO, "bob", 11);
  burst(k, PRO, "alice", 11); /* the same key in another tier */
  //! [keyed]

  admit_keyed_free(k);

  /* A flood of unique keys (one request each) against a table bounded to
   * 50 keys, small so the numbers are easy to follow. */
  o.max_keys = 50;
  if (admit_keyed_new(&k, &o) < 0) return 1;
  admit_keyed_stats_t st;
  int full = flood(k, 0, 1000);
  admit_keyed_stats(k, &st);
  printf("1000 new keys at once: %d refused (EFULL), keys=%llu\n", full,
         (unsigned long long)st.keys);
  now_ns += 6ull * ADMIT_SECOND; /* one request refills in 6 s: fresh */
  full = flood(k, 1000, 2000);
  admit_keyed_stats(k, &st);
  printf("6 s later, 1000 more: %d refused, keys=%llu, evicted=%llu\n",
         full, (unsigned long long)st.keys,
         (unsigned long long)st.evicted);
  now_ns += 6ull * ADMIT_SECOND;
  printf("6 s later, sweep dropped %llu fresh keys\n",
         (unsigned long long)admit_keyed_sweep(k));
  admit_keyed_free(k);
  return 0;
}
