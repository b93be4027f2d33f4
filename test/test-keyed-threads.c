/* Keyed limiter under real threads and real time: no over-admission on a
 * hot key or on many keys, and the key bound under concurrent insertion,
 * eviction, sweeping, refunds and resets. */
#include "helpers.h"

#include <pthread.h>
#include <stdio.h>

#define NTHREADS 8
#define SEC ((uint64_t)ADMIT_SECOND)

static admit_quota_t bucket(uint64_t count, uint64_t period, uint64_t burst) {
  admit_quota_t q;
  memset(&q, 0, sizeof(q));
  q.algo = ADMIT_TOKEN_BUCKET;
  q.nrates = 1;
  q.rates[0].count = count;
  q.rates[0].period_ns = period;
  q.burst[0] = burst;
  return q;
}

static admit_keyed_t* keyed_new(const admit_quota_t* q, uint64_t max_keys) {
  admit_keyed_options_t o;
  memset(&o, 0, sizeof(o));
  o.quotas = q;
  o.nquotas = 1;
  o.max_keys = max_keys;
  admit_keyed_t* k = NULL;
  assert_int_equal(admit_keyed_new(&k, &o), 0);
  return k;
}

/* --- hammering a fixed set of keys ---------------------------------------- */

typedef struct hammer_s {
  admit_keyed_t* k;
  unsigned nkeys;
  char (*keys)[16];
  _Atomic uint64_t* admitted; /* per key */
  _Atomic int go;
  _Atomic int stop;
  _Atomic uint64_t calls;
  _Atomic int errors;
} hammer_t;

typedef struct worker_s {
  hammer_t* h;
  unsigned id;
} worker_t;

static void* hammer_thread(void* arg) {
  worker_t* w = (worker_t*)arg;
  hammer_t* h = w->h;
  while (!atomic_load(&h->go)) {
  }
  static const unsigned strides[NTHREADS] = {1, 3, 7, 9, 11, 13, 17, 19};
  unsigned stride = strides[w->id % NTHREADS];
  uint64_t n = 0;
  unsigned i = w->id % h->nkeys;
  while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
    admit_decision_t d;
    const char* key = h->keys[i];
    if (admit_keyed_try(h->k, 0, key, strlen(key), 1, &d) != 0) {
      atomic_fetch_add(&h->errors, 1);
      break;
    }
    if (d.allowed) atomic_fetch_add(&h->admitted[i], 1);
    n++;
    /* Threads walk the keys at different strides, each prime to the
     * number of keys, so they meet on keys and each visits every key. */
    i = (i + stride) % h->nkeys;
  }
  atomic_fetch_add(&h->calls, n);
  return NULL;
}

static void hammer(unsigned nkeys, uint64_t count, uint64_t burst) {
  const uint64_t period = SEC;
  const uint64_t interval = (period + count - 1) / count;
  admit_quota_t q = bucket(count, period, burst);
  hammer_t h;
  memset(&h, 0, sizeof(h));
  h.k = keyed_new(&q, 0);
  h.nkeys = nkeys;
  h.keys = calloc(nkeys, sizeof(*h.keys));
  h.admitted = calloc(nkeys, sizeof(*h.admitted));
  assert_non_null(h.keys);
  assert_non_null(h.admitted);
  for (unsigned i = 0; i < nkeys; i++) {
    snprintf(h.keys[i], sizeof(h.keys[i]), "user:%u", i);
  }
  pthread_t th[NTHREADS];
  worker_t w[NTHREADS];
  for (unsigned t = 0; t < NTHREADS; t++) {
    w[t].h = &h;
    w[t].id = t;
    assert_int_equal(pthread_create(&th[t], NULL, hammer_thread, &w[t]), 0);
  }
  uint64_t t0 = admit_now_ns();
  atomic_store(&h.go, 1);
  admit_sleep_ns(test_scale(2 * SEC, 3 * SEC / 10));
  atomic_store(&h.stop, 1);
  for (unsigned t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
  uint64_t elapsed = admit_now_ns() - t0;
  assert_int_equal(atomic_load(&h.errors), 0);

  /* Every decision was taken at a clock reading within [t0, t0+elapsed]:
   * GCRA admits at most the burst plus one unit per interval of it. */
  uint64_t bound = burst + elapsed / interval;
  uint64_t lo = UINT64_MAX;
  uint64_t hi = 0;
  for (unsigned i = 0; i < nkeys; i++) {
    uint64_t a = atomic_load(&h.admitted[i]);
    assert_true(a <= bound);
    if (a < lo) lo = a;
    if (a > hi) hi = a;
  }
  print_message("    %u key(s), %d threads, %.2f s, %llu calls: admitted "
                "%llu..%llu per key, bound %llu\n",
                nkeys, NTHREADS, (double)elapsed / 1e9,
                (unsigned long long)atomic_load(&h.calls),
                (unsigned long long)lo, (unsigned long long)hi,
                (unsigned long long)bound);
  if (test_scale(1, 0)) {
    /* Full scale: callers are never idle, so almost all of it is used. */
    assert_true(lo * 100 >= bound * 95);
  }
  admit_keyed_stats_t st;
  assert_int_equal(admit_keyed_stats(h.k, &st), 0);
  assert_int_equal(st.keys, nkeys);
  assert_int_equal(st.full, 0);
  admit_keyed_free(h.k);
  free(h.keys);
  free((void*)h.admitted);
}

static void test_hot_key(void** state) {
  (void)state;
  hammer(1, 1000, 50);
}

static void test_hundred_keys(void** state) {
  (void)state;
  hammer(100, 100, 10);
}

/* --- unique keys against a small bound ------------------------------------ */

enum { MAX_KEYS = 256 };

typedef struct churn_s {
  admit_keyed_t* k;
  _Atomic int stop;
  _Atomic uint64_t created; /* tries that stored a new key */
  _Atomic uint64_t full;    /* ADMIT_EFULL answers */
  _Atomic uint64_t swept;
  _Atomic uint64_t reset;   /* resets that dropped a key */
  _Atomic uint64_t refunded; /* refunds that dropped a key */
  _Atomic int errors;
  _Atomic uint64_t max_seen;
  uint64_t bytes_bound;
} churn_t;

typedef struct churner_s {
  churn_t* c;
  unsigned id;
} churner_t;

static void check_stats(churn_t* c) {
  admit_keyed_stats_t st;
  if (admit_keyed_stats(c->k, &st) != 0 || st.keys > MAX_KEYS ||
      st.bytes > c->bytes_bound) {
    atomic_fetch_add(&c->errors, 1);
  }
  uint64_t m = atomic_load(&c->max_seen);
  while (st.keys > m && !atomic_compare_exchange_weak(&c->max_seen, &m,
                                                      st.keys)) {
  }
}

static void* churn_thread(void* arg) {
  churner_t* w = (churner_t*)arg;
  churn_t* c = w->c;
  char key[40];
  for (uint64_t n = 0; !atomic_load_explicit(&c->stop, memory_order_relaxed);
       n++) {
    if (w->id == 0) {
      /* The sweeper. */
      atomic_fetch_add(&c->swept, admit_keyed_sweep(c->k));
      check_stats(c);
      continue;
    }
    /* Short keys live in the slot, long ones are copied out. */
    int len = snprintf(key, sizeof(key), n % 4 ? "t%u:%llu" :
                       "a-much-longer-key-t%u:%llu", w->id,
                       (unsigned long long)n);
    admit_decision_t d;
    int rc = admit_keyed_try(c->k, 0, key, (size_t)len, 1, &d);
    if (rc == ADMIT_EFULL) {
      atomic_fetch_add(&c->full, 1);
      continue;
    }
    if (rc != 0 || !d.allowed) {
      atomic_fetch_add(&c->errors, 1);
      continue;
    }
    atomic_fetch_add(&c->created, 1);
    if (w->id == 1 && n % 3 == 0) {
      /* A fresh-making refund drops the key; a sweep may have come first
       * if this thread stalled for the whole 100 ms. */
      rc = admit_keyed_refund(c->k, 0, key, (size_t)len, 1);
      if (rc == 0) atomic_fetch_add(&c->refunded, 1);
      else if (rc != ADMIT_ENOTFOUND) atomic_fetch_add(&c->errors, 1);
    } else if (w->id == 2 && n % 3 == 0) {
      rc = admit_keyed_reset(c->k, 0, key, (size_t)len);
      if (rc == 0) atomic_fetch_add(&c->reset, 1);
      else if (rc != ADMIT_ENOTFOUND) atomic_fetch_add(&c->errors, 1);
    } else if (w->id == 3 && n % 3 == 0) {
      if (admit_keyed_peek(c->k, 0, key, (size_t)len, &d) != 0) {
        atomic_fetch_add(&c->errors, 1);
      }
    }
    if (n % 64 == 0) check_stats(c);
  }
  return NULL;
}

static void test_unique_keys_bound(void** state) {
  (void)state;
  /* A key stays busy for 10 ms after its one hit, so the table is full
   * of busy keys at times and of fresh ones at others. */
  admit_quota_t q = bucket(100, SEC, 1);
  churn_t c;
  memset(&c, 0, sizeof(c));
  c.k = keyed_new(&q, MAX_KEYS);
  c.bytes_bound = MAX_KEYS * (64 + 26) + 64 * 1024;
  pthread_t th[NTHREADS];
  churner_t w[NTHREADS];
  for (unsigned t = 0; t < NTHREADS; t++) {
    w[t].c = &c;
    w[t].id = t;
    assert_int_equal(pthread_create(&th[t], NULL, churn_thread, &w[t]), 0);
  }
  admit_sleep_ns(test_scale(2 * SEC, 3 * SEC / 10));
  atomic_store(&c.stop, 1);
  for (unsigned t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
  assert_int_equal(atomic_load(&c.errors), 0);
  admit_keyed_stats_t st;
  assert_int_equal(admit_keyed_stats(c.k, &st), 0);
  print_message("    created %llu, full %llu, evicted %llu, swept %llu, "
                "reset %llu, refunded %llu, held %llu (max seen %llu)\n",
                (unsigned long long)c.created, (unsigned long long)c.full,
                (unsigned long long)st.evicted,
                (unsigned long long)c.swept, (unsigned long long)c.reset,
                (unsigned long long)c.refunded, (unsigned long long)st.keys,
                (unsigned long long)c.max_seen);
  assert_true(st.keys <= MAX_KEYS);
  assert_true(st.bytes <= c.bytes_bound);
  assert_int_equal(st.full, atomic_load(&c.full));
  /* Every key stored was dropped exactly once or is still held. */
  assert_int_equal(atomic_load(&c.created),
                   st.keys + st.evicted + atomic_load(&c.swept) +
                       atomic_load(&c.reset) + atomic_load(&c.refunded));
  assert_true(atomic_load(&c.created) > MAX_KEYS);
  admit_keyed_free(c.k);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hot_key),
      cmocka_unit_test(test_hundred_keys),
      cmocka_unit_test(test_unique_keys_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
