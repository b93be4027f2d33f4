/* Eight threads hammering one limiter on the real clock.
 *
 * Every run checks the exact upper bound of its algorithm over the time the
 * threads ran, [t0, t1] (all clock readings of the limiter fall inside):
 *
 * - token bucket, burst B, interval T:  admitted <= B + (t1 - t0) / T
 * - fixed window, count C per P:        admitted <= C * (windows touched)
 * - sliding window, count C per P:      admitted <= C + C * (t1 - t0) / P
 * - several rates: the smallest bound of its rates (for two nested fixed
 *   windows, the sum over the long windows of the smaller of its count and
 *   the short windows it overlaps)
 *
 * and, when ADMIT_TEST_SCALE is not "short" (sanitizers and valgrind slow
 * the threads down far below the rates), that at least 95% of the bound
 * was admitted (for a sliding window, of what the algorithm can admit at
 * most from a fresh start: the bound less the first window's burst, which
 * the next window's weighting pays back). Reservations with cancellations
 * must never over-admit either: every prefix of the kept reservations,
 * ordered by the time they may run, stays within the bound at that time. */
#include "helpers.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#define NTHREADS 8
#define MS ((uint64_t)ADMIT_MILLISECOND)
#define S ((uint64_t)ADMIT_SECOND)

static bool short_scale(void) { return test_scale(0, 1) == 1; }

/* The main hammers run 2 s; the others @p full, or 300 ms under sanitizers. */
static uint64_t duration_ns(uint64_t full) {
  return test_scale(full, 300 * MS);
}

static admit_quota_t quota(admit_algo_t algo, uint32_t n,
                           const uint64_t* counts, const uint64_t* periods,
                           const uint64_t* bursts) {
  admit_quota_t q;
  memset(&q, 0, sizeof(q));
  q.algo = algo;
  q.nrates = n;
  for (uint32_t i = 0; i < n; i++) {
    q.rates[i].count = counts[i];
    q.rates[i].period_ns = periods[i];
    q.burst[i] = bursts != NULL ? bursts[i] : 0;
  }
  return q;
}

/* The most a quota may admit between t0 and t1, both inclusive. */
static uint64_t bound_at(const admit_quota_t* q, uint64_t t0, uint64_t t1) {
  uint64_t best = UINT64_MAX;
  for (uint32_t i = 0; i < q->nrates; i++) {
    uint64_t C = q->rates[i].count, P = q->rates[i].period_ns, b;
    switch (q->algo) {
      case ADMIT_TOKEN_BUCKET: {
        uint64_t T = (P + C - 1) / C;
        b = (q->burst[i] != 0 ? q->burst[i] : C) + (t1 - t0) / T;
        break;
      }
      case ADMIT_FIXED_WINDOW:
        b = C * (t1 / P - t0 / P + 1);
        break;
      default:
        b = C + (uint64_t)((unsigned __int128)C * (t1 - t0) / P);
        break;
    }
    if (b < best) best = b;
  }
  if (q->algo == ADMIT_FIXED_WINDOW && q->nrates == 2 &&
      q->rates[1].period_ns % q->rates[0].period_ns == 0) {
    /* Nested windows: in each long window, at most its count and at most
     * the short windows it overlaps. */
    uint64_t C0 = q->rates[0].count, P0 = q->rates[0].period_ns;
    uint64_t C1 = q->rates[1].count, P1 = q->rates[1].period_ns;
    uint64_t sum = 0;
    for (uint64_t w = t0 / P1; w <= t1 / P1; w++) {
      uint64_t a = w * P1 > t0 ? w * P1 : t0;
      uint64_t b = (w + 1) * P1 - 1 < t1 ? (w + 1) * P1 - 1 : t1;
      uint64_t fine = C0 * (b / P0 - a / P0 + 1);
      sum += fine < C1 ? fine : C1;
    }
    if (sum < best) best = sum;
  }
  return best;
}

/* What infinitely fast threads would have admitted between t0 and t1: the
 * bound, except for a sliding window, whose first window's burst is paid
 * back by the next window's weight: C per window from the first, plus the
 * part of the last window that has passed. */
static uint64_t achievable(const admit_quota_t* q, uint64_t t0, uint64_t t1) {
  if (q->algo != ADMIT_SLIDING_WINDOW || q->nrates != 1) {
    return bound_at(q, t0, t1);
  }
  uint64_t C = q->rates[0].count, P = q->rates[0].period_ns;
  uint64_t F = t0 / P, L = t1 / P;
  return C * (L - F) + C * (t1 - L * P) / P;
}

/* ---- try hammer ---------------------------------------------------------- */

typedef struct hammer_s {
  admit_limiter_t* l;
  _Atomic int stop;
  _Atomic uint64_t admitted;
  _Atomic uint64_t tries;
  _Atomic int errors;
} hammer_t;

static void* try_thread(void* arg) {
  hammer_t* h = arg;
  uint64_t n = 0, tries = 0;
  admit_decision_t d;
  while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
    if (admit_limiter_try(h->l, 1, &d) != 0) atomic_fetch_add(&h->errors, 1);
    n += (uint64_t)d.allowed;
    tries++;
  }
  atomic_fetch_add(&h->admitted, n);
  atomic_fetch_add(&h->tries, tries);
  return NULL;
}

static void hammer_try(const char* name, const admit_quota_t* q,
                       uint64_t full) {
  hammer_t h;
  memset(&h, 0, sizeof(h));
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_limiter_new(&h.l, q, NULL), 0);
  pthread_t th[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    assert_int_equal(pthread_create(&th[i], NULL, try_thread, &h), 0);
  }
  /* Windows stop in the middle of a (shortest) window, so that the last
   * window had time to fill. */
  uint64_t stop_at = t0 + duration_ns(full);
  if (q->algo != ADMIT_TOKEN_BUCKET) {
    uint64_t P = q->rates[0].period_ns;
    stop_at = stop_at / P * P + P / 2;
  }
  uint64_t now = admit_now_ns();
  if (stop_at > now) admit_sleep_ns(stop_at - now);
  uint64_t t_stop = admit_now_ns();
  atomic_store(&h.stop, 1);
  for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
  uint64_t t1 = admit_now_ns();
  uint64_t got = atomic_load(&h.admitted), max = bound_at(q, t0, t1);
  uint64_t want = achievable(q, t0, t_stop);
  print_message("%-22s admitted %8" PRIu64 " of bound %8" PRIu64
                ", achievable %8" PRIu64 " (%.2f%%) in %.3f s, %" PRIu64
                " tries\n",
                name, got, max, want, 100.0 * (double)got / (double)want,
                (double)(t1 - t0) / 1e9, atomic_load(&h.tries));
  assert_int_equal(atomic_load(&h.errors), 0);
  assert_true(got <= max);
  if (!short_scale()) assert_true(got * 100 >= want * 95);
  admit_limiter_free(h.l);
}

static void test_bucket(void** state) {
  (void)state;
  uint64_t c = 200000, p = S, b = 20000;
  admit_quota_t q = quota(ADMIT_TOKEN_BUCKET, 1, &c, &p, &b);
  hammer_try("token bucket", &q, 2 * S);
}

static void test_fixed_window(void** state) {
  (void)state;
  uint64_t c = 20000, p = 100 * MS;
  admit_quota_t q = quota(ADMIT_FIXED_WINDOW, 1, &c, &p, NULL);
  hammer_try("fixed window", &q, 2 * S);
}

static void test_sliding_window(void** state) {
  (void)state;
  uint64_t c = 20000, p = 100 * MS;
  admit_quota_t q = quota(ADMIT_SLIDING_WINDOW, 1, &c, &p, NULL);
  hammer_try("sliding window", &q, 2 * S);
}

static void test_two_rates(void** state) {
  (void)state;
  /* 300k/s burst 30k, and 2M per 10 s (200k/s) burst 100k: the second
   * binds after its burst is spent. */
  uint64_t c[2] = {300000, 2000000}, p[2] = {S, 10 * S};
  uint64_t b[2] = {30000, 100000};
  admit_quota_t q = quota(ADMIT_TOKEN_BUCKET, 2, c, p, b);
  hammer_try("2-rate bucket", &q, 2 * S);
  /* The same pair of rates as fixed windows. */
  uint64_t wc[2] = {3000, 40000}, wp[2] = {10 * MS, 200 * MS};
  q = quota(ADMIT_FIXED_WINDOW, 2, wc, wp, NULL);
  hammer_try("2-rate fixed window", &q, S);
}

/* ---- reserve/cancel hammer ----------------------------------------------- */

typedef struct kept_s {
  uint64_t ready_at;
} kept_t;

typedef struct rhammer_s {
  admit_limiter_t* l;
  _Atomic int stop;
  _Atomic uint64_t nkept;
  _Atomic uint64_t cancelled;
  _Atomic int errors;
  uint64_t cap;
  kept_t* kept;
  uint64_t max_wait;
} rhammer_t;

static void* reserve_thread(void* arg) {
  rhammer_t* h = arg;
  uint64_t x = (uint64_t)(uintptr_t)&x * 0x9e3779b97f4a7c15u | 1;
  while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    admit_reservation_t r;
    admit_decision_t d;
    int rc = admit_limiter_reserve(h->l, 1, x % (h->max_wait + 1), &r, &d);
    if (rc == ADMIT_ETIMEDOUT) continue;
    if (rc != 0) {
      atomic_fetch_add(&h->errors, 1);
      continue;
    }
    if (!r.reserved) continue;
    if ((x >> 20) % 3 == 0) {
      if (admit_limiter_cancel(h->l, &r) != 0) atomic_fetch_add(&h->errors, 1);
      atomic_fetch_add(&h->cancelled, 1);
      continue;
    }
    uint64_t k = atomic_fetch_add(&h->nkept, 1);
    if (k < h->cap) {
      h->kept[k].ready_at = r.ready_at_ns;
    } else {
      /* Out of room: give it back rather than lose track of it. */
      admit_limiter_cancel(h->l, &r);
    }
  }
  return NULL;
}

static int cmp_kept(const void* a, const void* b) {
  uint64_t x = ((const kept_t*)a)->ready_at, y = ((const kept_t*)b)->ready_at;
  return x < y ? -1 : x > y;
}

static void hammer_reserve(const char* name, const admit_quota_t* q,
                           uint64_t max_wait) {
  uint64_t dur = duration_ns(S);
  rhammer_t h;
  memset(&h, 0, sizeof(h));
  uint64_t t0 = admit_now_ns();
  h.max_wait = max_wait;
  /* Room for twice the bound, with the wait included. */
  h.cap = 2 * bound_at(q, t0, t0 + dur + max_wait + S) + 1024;
  h.kept = calloc(h.cap, sizeof(kept_t));
  assert_non_null(h.kept);
  assert_int_equal(admit_limiter_new(&h.l, q, NULL), 0);
  pthread_t th[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    assert_int_equal(pthread_create(&th[i], NULL, reserve_thread, &h), 0);
  }
  admit_sleep_ns(dur);
  atomic_store(&h.stop, 1);
  for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&h.errors), 0);
  uint64_t n = atomic_load(&h.nkept);
  if (n > h.cap) n = h.cap;
  assert_true(n > 0);
  qsort(h.kept, n, sizeof(kept_t), cmp_kept);
  /* Every prefix: the first k + 1 kept units all run by ready_at[k]. */
  int64_t closest = INT64_MIN;
  for (uint64_t k = 0; k < n; k++) {
    uint64_t at = h.kept[k].ready_at;
    assert_true(at >= t0);
    uint64_t max = bound_at(q, t0, at);
    if (k + 1 > max) {
      print_error("%s: %" PRIu64 " units by t0 + %" PRIu64 " ns, bound %"
                  PRIu64 "\n", name, k + 1, at - t0, max);
      fail();
    }
    if ((int64_t)(k + 1) - (int64_t)max > closest) {
      closest = (int64_t)(k + 1) - (int64_t)max;
    }
  }
  print_message("%-22s kept %8" PRIu64 ", cancelled %8" PRIu64
                ", closest to the bound: %" PRId64 "\n",
                name, n, atomic_load(&h.cancelled), closest);
  admit_limiter_free(h.l);
  free(h.kept);
}

static void test_reserve_cancel(void** state) {
  (void)state;
  uint64_t c = 100000, p = S, b = 100;
  admit_quota_t q = quota(ADMIT_TOKEN_BUCKET, 1, &c, &p, &b);
  hammer_reserve("bucket reserve", &q, 2 * MS);
  uint64_t c2[2] = {100000, 20000}, p2[2] = {S, 100 * MS}, b2[2] = {50, 400};
  q = quota(ADMIT_TOKEN_BUCKET, 2, c2, p2, b2);
  hammer_reserve("2-rate bucket reserve", &q, 2 * MS);
  c = 1000;
  p = 10 * MS;
  q = quota(ADMIT_FIXED_WINDOW, 1, &c, &p, NULL);
  hammer_reserve("fixed window reserve", &q, 0);
  q = quota(ADMIT_SLIDING_WINDOW, 1, &c, &p, NULL);
  hammer_reserve("sliding window reserve", &q, 0);
}

/* ---- acquire hammer ------------------------------------------------------ */

typedef struct ahammer_s {
  admit_limiter_t* l;
  _Atomic int stop;
  _Atomic uint64_t admitted;
  _Atomic uint64_t timeouts;
  _Atomic int errors;
} ahammer_t;

static void* acquire_thread(void* arg) {
  ahammer_t* h = arg;
  while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
    int rc = admit_limiter_acquire(h->l, 1, 3 * MS, NULL);
    if (rc == 0) {
      atomic_fetch_add(&h->admitted, 1);
    } else if (rc == ADMIT_ETIMEDOUT) {
      atomic_fetch_add(&h->timeouts, 1);
    } else {
      atomic_fetch_add(&h->errors, 1);
    }
  }
  return NULL;
}

static void hammer_acquire(const char* name, const admit_quota_t* q) {
  ahammer_t h;
  memset(&h, 0, sizeof(h));
  uint64_t t0 = admit_now_ns();
  assert_int_equal(admit_limiter_new(&h.l, q, NULL), 0);
  pthread_t th[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    assert_int_equal(pthread_create(&th[i], NULL, acquire_thread, &h), 0);
  }
  admit_sleep_ns(duration_ns(500 * MS));
  atomic_store(&h.stop, 1);
  for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
  uint64_t t1 = admit_now_ns();
  uint64_t got = atomic_load(&h.admitted), max = bound_at(q, t0, t1);
  print_message("%-22s acquired %8" PRIu64 " of bound %8" PRIu64
                ", %" PRIu64 " timeouts\n",
                name, got, max, atomic_load(&h.timeouts));
  assert_int_equal(atomic_load(&h.errors), 0);
  assert_true(got > 0);
  assert_true(got <= max);
  admit_limiter_free(h.l);
}

static void test_acquire(void** state) {
  (void)state;
  uint64_t c = 20000, p = S, b = 10;
  admit_quota_t q = quota(ADMIT_TOKEN_BUCKET, 1, &c, &p, &b);
  hammer_acquire("bucket acquire", &q);
  c = 100;
  p = 5 * MS;
  q = quota(ADMIT_FIXED_WINDOW, 1, &c, &p, NULL);
  hammer_acquire("fixed window acquire", &q);
  q = quota(ADMIT_SLIDING_WINDOW, 1, &c, &p, NULL);
  hammer_acquire("sliding window acquire", &q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bucket),
      cmocka_unit_test(test_fixed_window),
      cmocka_unit_test(test_sliding_window),
      cmocka_unit_test(test_two_rates),
      cmocka_unit_test(test_reserve_cancel),
      cmocka_unit_test(test_acquire),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
