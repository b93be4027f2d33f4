/* Keyed limiter: exact decisions per key and tier on the fake clock, key
 * and tier independence, binary keys, the key bound and eviction of fresh
 * keys, memory accounting, refund/reset/peek and bad input. */
#include "helpers.h"

#include <stdio.h>

#include "keyed-hash.h" /* admit__keyed_hash_mask(), to force collisions */
#include "counting-alloc.h"

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)
#define T0 (36000 * SEC) /* fake clock start: a multiple of every window */

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

static admit_quota_t window(admit_algo_t algo, uint64_t count,
                            uint64_t period) {
  admit_quota_t q;
  memset(&q, 0, sizeof(q));
  q.algo = algo;
  q.nrates = 1;
  q.rates[0].count = count;
  q.rates[0].period_ns = period;
  return q;
}

typedef struct fx_s {
  fake_clock_t fc;
  admit_clock_t clk;
  admit_keyed_t* k;
} fx_t;

static fx_t* fx_new(const admit_quota_t* quotas, uint32_t n,
                    uint64_t max_keys, uint32_t max_key_len) {
  fx_t* fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  fx->clk = fake_clock(&fx->fc, T0);
  admit_keyed_options_t o;
  memset(&o, 0, sizeof(o));
  o.quotas = quotas;
  o.nquotas = n;
  o.max_keys = max_keys;
  o.max_key_len = max_key_len;
  o.clock = &fx->clk;
  assert_int_equal(admit_keyed_new(&fx->k, &o), 0);
  assert_non_null(fx->k);
  return fx;
}

static void fx_free(fx_t* fx) {
  admit_keyed_free(fx->k);
  free(fx);
}

static admit_keyed_stats_t stats_of(admit_keyed_t* k) {
  admit_keyed_stats_t st;
  assert_int_equal(admit_keyed_stats(k, &st), 0);
  return st;
}

/* try() on a string key, asserting it returns 0; gives the decision. */
static admit_decision_t try_s(admit_keyed_t* k, uint32_t tier,
                              const char* key, uint64_t cost) {
  admit_decision_t d;
  memset(&d, 0xa5, sizeof(d));
  assert_int_equal(admit_keyed_try(k, tier, key, strlen(key), cost, &d), 0);
  return d;
}

static void expect(admit_decision_t d, int allowed, uint64_t remaining,
                   uint64_t retry_after, uint64_t reset_after) {
  assert_int_equal(d.allowed, allowed);
  assert_int_equal(d.remaining, remaining);
  assert_int_equal(d.retry_after_ns, retry_after);
  assert_int_equal(d.reset_after_ns, reset_after);
}

/* --- decisions ------------------------------------------------------------ */

static void test_bucket_exact(void** state) {
  (void)state;
  admit_quota_t q = bucket(10, SEC, 10); /* one unit per 100 ms */
  fx_t* fx = fx_new(&q, 1, 0, 0);
  for (uint64_t i = 1; i <= 10; i++) {
    admit_decision_t d = try_s(fx->k, 0, "alice", 1);
    expect(d, 1, 10 - i, 0, i * 100 * MS);
    assert_int_equal(d.limit, 10);
  }
  expect(try_s(fx->k, 0, "alice", 1), 0, 0, 100 * MS, SEC);
  fake_advance(&fx->fc, 100 * MS);
  expect(try_s(fx->k, 0, "alice", 1), 1, 0, 0, SEC);
  fake_advance(&fx->fc, 99 * MS);
  expect(try_s(fx->k, 0, "alice", 1), 0, 0, 1 * MS, 901 * MS);
  fake_advance(&fx->fc, 1 * MS);
  expect(try_s(fx->k, 0, "alice", 1), 1, 0, 0, SEC);
  /* A cost of several units, and a denial that consumes nothing. */
  fake_advance(&fx->fc, 500 * MS);
  expect(try_s(fx->k, 0, "alice", 6), 0, 5, 100 * MS, 500 * MS);
  expect(try_s(fx->k, 0, "alice", 5), 1, 0, 0, SEC);
  assert_int_equal(stats_of(fx->k).keys, 1);
  fx_free(fx);
}

static void test_fixed_window_exact(void** state) {
  (void)state;
  admit_quota_t q = window(ADMIT_FIXED_WINDOW, 5, 60 * SEC);
  fx_t* fx = fx_new(&q, 1, 0, 0);
  fake_advance(&fx->fc, 40 * SEC); /* 20 s before the window ends */
  for (uint64_t i = 1; i <= 5; i++) {
    expect(try_s(fx->k, 0, "ep:/search", 1), 1, 5 - i, 0, 20 * SEC);
  }
  expect(try_s(fx->k, 0, "ep:/search", 1), 0, 0, 20 * SEC, 20 * SEC);
  fake_advance(&fx->fc, 20 * SEC - 1);
  expect(try_s(fx->k, 0, "ep:/search", 1), 0, 0, 1, 1);
  fake_advance(&fx->fc, 1);
  expect(try_s(fx->k, 0, "ep:/search", 2), 1, 3, 0, 60 * SEC);
  fx_free(fx);
}

static void test_sliding_window_exact(void** state) {
  (void)state;
  admit_quota_t q = window(ADMIT_SLIDING_WINDOW, 10, 10 * SEC);
  fx_t* fx = fx_new(&q, 1, 0, 0);
  for (uint64_t i = 1; i <= 10; i++) {
    expect(try_s(fx->k, 0, "u", 1), 1, 10 - i, 0, 20 * SEC);
  }
  /* Full now; the earliest fit is 1 s into the next window, when the
   * previous window's 10 weigh 9. */
  expect(try_s(fx->k, 0, "u", 1), 0, 0, 11 * SEC, 20 * SEC);
  fake_advance(&fx->fc, 11 * SEC - 1);
  admit_decision_t d = try_s(fx->k, 0, "u", 1);
  assert_int_equal(d.allowed, 0);
  assert_int_equal(d.retry_after_ns, 1);
  fake_advance(&fx->fc, 1);
  expect(try_s(fx->k, 0, "u", 1), 1, 0, 0, 19 * SEC);
  fx_free(fx);
}

static void test_multi_rate_all_or_nothing(void** state) {
  (void)state;
  admit_quota_t q = bucket(2, SEC, 2);
  q.nrates = 2;
  q.rates[1].count = 3;
  q.rates[1].period_ns = 60 * SEC;
  q.burst[1] = 3;
  fx_t* fx = fx_new(&q, 1, 0, 0);
  assert_int_equal(try_s(fx->k, 0, "m", 1).allowed, 1);
  assert_int_equal(try_s(fx->k, 0, "m", 1).allowed, 1);
  admit_decision_t d = try_s(fx->k, 0, "m", 1); /* per second is spent */
  assert_int_equal(d.allowed, 0);
  assert_int_equal(d.limiting, 0);
  assert_int_equal(d.retry_after_ns, 500 * MS);
  fake_advance(&fx->fc, SEC);
  assert_int_equal(try_s(fx->k, 0, "m", 1).allowed, 1); /* third of 3/min */
  fake_advance(&fx->fc, SEC);
  d = try_s(fx->k, 0, "m", 2); /* the minute rate denies */
  assert_int_equal(d.allowed, 0);
  assert_int_equal(d.limiting, 1);
  assert_int_equal(d.retry_after_ns, 38 * SEC);
  fake_advance(&fx->fc, 40 * SEC);
  d = try_s(fx->k, 0, "m", 2);
  assert_int_equal(d.allowed, 1);
  assert_int_equal(d.remaining, 0);
  fx_free(fx);
}

/* The same quota and clock give the same decisions as admit_limiter_t, for
 * every algorithm, over random costs and time steps (keys come and go as
 * they become fresh and are swept). */
static void test_matches_limiter(void** state) {
  (void)state;
  admit_quota_t qs[4] = {bucket(7, SEC, 4),
                         window(ADMIT_FIXED_WINDOW, 6, SEC),
                         window(ADMIT_SLIDING_WINDOW, 9, 2 * SEC),
                         bucket(3, SEC, 3)};
  qs[3].nrates = 2;
  qs[3].rates[1].count = 10;
  qs[3].rates[1].period_ns = 10 * SEC;
  qs[3].burst[1] = 5;
  fx_t* fx = fx_new(qs, 4, 0, 0);
  admit_limiter_t* lim[4];
  for (int t = 0; t < 4; t++) {
    assert_int_equal(admit_limiter_new(&lim[t], &qs[t], &fx->clk), 0);
  }
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (int step = 0; step < 40000; step++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint32_t t = (uint32_t)(x % 4);
    uint64_t cost = 1 + (x >> 8) % 3;
    admit_decision_t a;
    admit_decision_t b;
    assert_int_equal(admit_limiter_try(lim[t], cost, &a), 0);
    assert_int_equal(admit_keyed_try(fx->k, t, "same", 4, cost, &b), 0);
    assert_int_equal(b.allowed, a.allowed);
    assert_int_equal(b.limiting, a.limiting);
    assert_int_equal(b.limit, a.limit);
    assert_int_equal(b.remaining, a.remaining);
    assert_int_equal(b.retry_after_ns, a.retry_after_ns);
    assert_int_equal(b.reset_after_ns, a.reset_after_ns);
    assert_int_equal(admit_limiter_peek(lim[t], &a), 0);
    assert_int_equal(admit_keyed_peek(fx->k, t, "same", 4, &b), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    uint64_t r = (x >> 20) % 100;
    if (r < 40) fake_advance(&fx->fc, (x >> 30) % (400 * MS));
    if (r == 99) admit_keyed_sweep(fx->k);
  }
  for (int t = 0; t < 4; t++) admit_limiter_free(lim[t]);
  fx_free(fx);
}

/* --- independence of keys and tiers ------------------------------------- */

static void test_keys_independent(void** state) {
  (void)state;
  admit_quota_t q = bucket(3, SEC, 3);
  fx_t* fx = fx_new(&q, 1, 0, 0);
  for (int i = 0; i < 3; i++) try_s(fx->k, 0, "alice", 1);
  assert_int_equal(try_s(fx->k, 0, "alice", 1).allowed, 0);
  expect(try_s(fx->k, 0, "bob", 1), 1, 2, 0, 333333334);
  expect(try_s(fx->k, 0, "alic", 1), 1, 2, 0, 333333334);
  expect(try_s(fx->k, 0, "alicE", 1), 1, 2, 0, 333333334);
  assert_int_equal(try_s(fx->k, 0, "alice", 1).allowed, 0);
  assert_int_equal(stats_of(fx->k).keys, 4);
  fx_free(fx);
}

static void test_tiers_independent(void** state) {
  (void)state;
  admit_quota_t qs[3] = {bucket(2, SEC, 2), bucket(100, SEC, 50),
                         window(ADMIT_FIXED_WINDOW, 4, 60 * SEC)};
  fx_t* fx = fx_new(qs, 3, 0, 0);
  expect(try_s(fx->k, 0, "user:1", 2), 1, 0, 0, SEC);
  assert_int_equal(try_s(fx->k, 0, "user:1", 1).allowed, 0);
  /* The same key in another tier has its own state and its own quota. */
  admit_decision_t d = try_s(fx->k, 1, "user:1", 10);
  expect(d, 1, 40, 0, 100 * MS);
  assert_int_equal(d.limit, 50);
  d = try_s(fx->k, 2, "user:1", 4);
  expect(d, 1, 0, 0, 60 * SEC);
  assert_int_equal(d.limit, 4);
  assert_int_equal(try_s(fx->k, 2, "user:1", 1).allowed, 0);
  assert_int_equal(try_s(fx->k, 1, "user:1", 1).allowed, 1);
  assert_int_equal(stats_of(fx->k).keys, 3);
  /* Resetting one tier leaves the others alone. */
  assert_int_equal(admit_keyed_reset(fx->k, 0, "user:1", 6), 0);
  assert_int_equal(try_s(fx->k, 0, "user:1", 2).allowed, 1);
  assert_int_equal(try_s(fx->k, 2, "user:1", 1).allowed, 0);
  assert_int_equal(admit_keyed_reset(fx->k, 0, "user:2", 6),
                   ADMIT_ENOTFOUND);
  fx_free(fx);
}

/* --- binary keys ----------------------------------------------------------- */

static void binary_keys(uint64_t hash_mask) {
  admit_quota_t q = bucket(2, SEC, 2);
  fx_t* fx = fx_new(&q, 1, 0, 0);
  admit__keyed_hash_mask(fx->k, hash_mask);
  admit_decision_t d;
  /* Every single byte, NUL included, is a key of its own. */
  for (int c = 0; c < 256; c++) {
    unsigned char b = (unsigned char)c;
    assert_int_equal(admit_keyed_try(fx->k, 0, &b, 1, 1, &d), 0);
    assert_int_equal(d.remaining, 1);
  }
  /* Keys that differ only after a NUL, or only in length. */
  static const struct {
    const char* bytes;
    size_t len;
  } keys[] = {{"a\0b", 3}, {"a\0c", 3}, {"a\0", 2}, {"a\0\0", 3},
              {"\0\0\0\0", 4}, {"\0\0\0\0\0", 5}};
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    assert_int_equal(
        admit_keyed_try(fx->k, 0, keys[i].bytes, keys[i].len, 1, &d), 0);
    assert_int_equal(d.remaining, 1);
  }
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    assert_int_equal(
        admit_keyed_try(fx->k, 0, keys[i].bytes, keys[i].len, 1, &d), 0);
    assert_int_equal(d.remaining, 0);
  }
  /* Long keys (stored out of line) that differ in one byte anywhere. */
  unsigned char big[100];
  for (size_t len = 2; len <= sizeof(big); len++) {
    for (size_t at = 0; at < len; at += (len > 20 ? 7 : 1)) {
      memset(big, 0, sizeof(big));
      big[at] = 0x80;
      assert_int_equal(admit_keyed_try(fx->k, 0, big, len, 1, &d), 0);
      assert_int_equal(d.remaining, 1);
    }
  }
  unsigned char b = 0;
  assert_int_equal(admit_keyed_try(fx->k, 0, &b, 1, 1, &d), 0);
  assert_int_equal(d.allowed, 1);
  assert_int_equal(d.remaining, 0);
  fx_free(fx);
}

static void test_binary_keys(void** state) {
  (void)state;
  binary_keys(UINT64_MAX);
}

/* With every hash equal, only the key bytes tell keys apart. */
static void test_binary_keys_colliding(void** state) {
  (void)state;
  binary_keys(0);
}

/* --- bounded memory -------------------------------------------------------- */

static void key_of(char* buf, size_t cap, const char* prefix, unsigned i) {
  snprintf(buf, cap, "%s%u", prefix, i);
}

/* Fills a table of @p max_keys with busy keys, is refused, then lets them
 * become fresh and replaces every one. With several shards a bounded scan
 * may miss the fresh keys of a shard it did not visit, so a new key may be
 * refused a few times before one is found; @p retries allows for that. */
static void full_then_evict(uint64_t max_keys, unsigned retries) {
  admit_quota_t q = bucket(1, SEC, 1); /* a key stays busy for 1 s */
  fx_t* fx = fx_new(&q, 1, max_keys, 0);
  const unsigned n = (unsigned)max_keys;
  char key[32];
  for (unsigned i = 0; i < n; i++) {
    key_of(key, sizeof(key), "k", i);
    assert_int_equal(try_s(fx->k, 0, key, 1).allowed, 1);
  }
  admit_keyed_stats_t st = stats_of(fx->k);
  assert_int_equal(st.keys, n);
  assert_int_equal(st.max_keys, n);
  assert_int_equal(st.full, 0);
  admit_decision_t d;
  for (unsigned i = 0; i < 10; i++) {
    key_of(key, sizeof(key), "new", i);
    memset(&d, 0xa5, sizeof(d));
    assert_int_equal(admit_keyed_try(fx->k, 0, key, strlen(key), 1, &d),
                     ADMIT_EFULL);
    assert_int_equal(d.allowed, 0);
  }
  st = stats_of(fx->k);
  assert_int_equal(st.keys, n);
  assert_int_equal(st.full, 10);
  assert_int_equal(st.evicted, 0);
  /* Held keys still answer, and a peek of a new key creates nothing. */
  assert_int_equal(try_s(fx->k, 0, "k7", 1).allowed, 0);
  assert_int_equal(admit_keyed_peek(fx->k, 0, "new0", 4, &d), 0);
  assert_int_equal(d.remaining, 1);
  /* Nothing to sweep while every key is busy. */
  assert_int_equal(admit_keyed_sweep(fx->k), 0);

  /* One second on, every key is fresh and may be dropped. */
  fake_advance(&fx->fc, SEC);
  unsigned refused = 0;
  for (unsigned i = 0; i < n; i++) {
    key_of(key, sizeof(key), "new", i);
    int rc;
    unsigned tries = 0;
    while ((rc = admit_keyed_try(fx->k, 0, key, strlen(key), 1, &d)) ==
           ADMIT_EFULL) {
      assert_true(++tries <= retries);
      refused++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(d.allowed, 1);
    assert_true(stats_of(fx->k).keys <= max_keys);
  }
  st = stats_of(fx->k);
  assert_int_equal(st.keys, n); /* only new keys: all old ones dropped */
  assert_int_equal(st.evicted, n);
  assert_int_equal(st.full, 10 + refused);
  /* The new keys are held: each is busy now. */
  for (unsigned i = 0; i < n; i++) {
    key_of(key, sizeof(key), "new", i);
    assert_int_equal(try_s(fx->k, 0, key, 1).allowed, 0);
  }
  fake_advance(&fx->fc, SEC);
  assert_int_equal(admit_keyed_sweep(fx->k), n);
  st = stats_of(fx->k);
  assert_int_equal(st.keys, 0);
  assert_int_equal(st.evicted, n); /* a sweep is not an eviction */
  fx_free(fx);
}

/* A small table is one shard, which a scan for room covers whole. */
static void test_full_then_evict_fresh(void** state) {
  (void)state;
  full_then_evict(60, 0);
}

static void test_full_then_evict_fresh_sharded(void** state) {
  (void)state;
  full_then_evict(2000, 200);
}

/* Only fresh keys are dropped: a busy key keeps its state however many new
 * keys arrive. */
static void test_evicts_only_fresh(void** state) {
  (void)state;
  admit_quota_t q = bucket(1, SEC, 1);
  fx_t* fx = fx_new(&q, 1, 200, 0);
  char key[32];
  for (unsigned i = 0; i < 100; i++) {
    key_of(key, sizeof(key), "early", i);
    assert_int_equal(try_s(fx->k, 0, key, 1).allowed, 1);
  }
  fake_advance(&fx->fc, SEC / 2);
  for (unsigned i = 0; i < 100; i++) {
    key_of(key, sizeof(key), "late", i);
    assert_int_equal(try_s(fx->k, 0, key, 1).allowed, 1);
  }
  fake_advance(&fx->fc, SEC / 2); /* "early" keys are fresh, "late" not */
  unsigned ok = 0;
  unsigned full = 0;
  admit_decision_t d;
  for (unsigned i = 0; i < 1000; i++) {
    key_of(key, sizeof(key), "flood", i);
    int rc = admit_keyed_try(fx->k, 0, key, strlen(key), 1, &d);
    assert_true(rc == 0 || rc == ADMIT_EFULL);
    if (rc == 0) ok++;
    if (rc == ADMIT_EFULL) full++;
    assert_true(stats_of(fx->k).keys <= 200);
  }
  admit_keyed_stats_t st = stats_of(fx->k);
  assert_int_equal(st.full, full);
  /* Exactly the 100 fresh keys made room; then the table was full. */
  assert_int_equal(st.evicted, 100);
  assert_int_equal(ok, 100);
  assert_int_equal(st.keys, 200);
  for (unsigned i = 0; i < 100; i++) {
    key_of(key, sizeof(key), "late", i);
    d = try_s(fx->k, 0, key, 1);
    assert_int_equal(d.allowed, 0);
    assert_int_equal(d.retry_after_ns, SEC / 2);
  }
  fx_free(fx);
}

static void test_hostile_unique_keys(void** state) {
  (void)state;
  const uint64_t max_keys = 10000;
  const unsigned n = (unsigned)test_scale(1000000, 200000);
  admit_quota_t q = bucket(10, SEC, 1); /* busy for 100 ms after a hit */
  fx_t* fx = fx_new(&q, 1, max_keys, 0);
  /* Enough for the slots (at most 32 bytes each, at least 50% used) and
   * the out-of-line copies of every third key. */
  const uint64_t bound = max_keys * (64 + 24) + 64 * 1024;
  uint64_t ok = 0;
  uint64_t full = 0;
  uint64_t peak = 0;
  unsigned char key[24];
  admit_decision_t d;
  for (unsigned i = 0; i < n; i++) {
    /* 10 us per key: a key becomes fresh 10,000 keys later, right at the
     * bound, so the table both refuses and evicts. */
    fake_advance(&fx->fc, 10 * ADMIT_MICROSECOND);
    memset(key, 0xff, sizeof(key));
    memcpy(key, &i, sizeof(i));
    size_t len = i % 3 == 0 ? sizeof(key) : 4 + i % 7;
    int rc = admit_keyed_try(fx->k, 0, key, len, 1, &d);
    if (rc == 0) {
      assert_int_equal(d.allowed, 1);
      ok++;
    } else {
      assert_int_equal(rc, ADMIT_EFULL);
      full++;
    }
    if (i % 997 == 0) {
      admit_keyed_stats_t st = stats_of(fx->k);
      assert_true(st.keys <= max_keys);
      assert_true(st.bytes <= bound);
      if (st.bytes > peak) peak = st.bytes;
    }
  }
  admit_keyed_stats_t st = stats_of(fx->k);
  assert_true(st.keys <= max_keys);
  assert_true(st.bytes <= bound);
  assert_int_equal(st.full, full);
  assert_int_equal(ok, st.keys + st.evicted);
  assert_true(full > 0);
  assert_true(st.evicted > 0);
  print_message("    %u unique keys: %llu admitted, %llu full, %llu evicted,"
                " peak %llu bytes\n",
                n, (unsigned long long)ok, (unsigned long long)full,
                (unsigned long long)st.evicted, (unsigned long long)peak);
  fx_free(fx);
}

/* Every byte the limiter holds is in stats.bytes, as the allocator sees. */
static void test_bytes_exact(void** state) {
  (void)state;
  long long before = atomic_load(&live_bytes);
  admit_quota_t qs[2] = {bucket(1, SEC, 1),
                         window(ADMIT_SLIDING_WINDOW, 5, SEC)};
  fx_t* fx = fx_new(qs, 2, 0, 100);
  long long base = atomic_load(&live_bytes) - before;
  assert_int_equal(stats_of(fx->k).bytes, base);
  char key[128];
  for (unsigned i = 0; i < 3000; i++) {
    /* Short keys live in the slot, long ones are copied out. */
    memset(key, 'x', sizeof(key));
    size_t len = (size_t)snprintf(key, sizeof(key), "key-%u", i);
    key[len] = 'x';
    if (i % 4 == 0) len = 17 + i % 80;
    admit_decision_t d;
    assert_int_equal(admit_keyed_try(fx->k, i % 2, key, len, 1, &d), 0);
    if (i % 500 == 0) {
      assert_int_equal(stats_of(fx->k).bytes,
                       atomic_load(&live_bytes) - before);
    }
  }
  admit_keyed_stats_t st = stats_of(fx->k);
  assert_int_equal(st.keys, 3000);
  assert_int_equal(st.bytes, atomic_load(&live_bytes) - before);
  /* Forgetting keys gives memory back. */
  fake_advance(&fx->fc, 2 * SEC);
  assert_int_equal(admit_keyed_sweep(fx->k), 3000);
  st = stats_of(fx->k);
  assert_int_equal(st.keys, 0);
  assert_int_equal(st.bytes, base);
  assert_int_equal(st.bytes, atomic_load(&live_bytes) - before);
  fx_free(fx);
  assert_int_equal(atomic_load(&live_bytes), before);
}

/* Single-rate token bucket keys of 16 bytes: at most 64 bytes a key plus
 * the key bytes, at any fill level. */
static void test_bytes_per_key(void** state) {
  (void)state;
  admit_quota_t q = bucket(1, SEC, 1);
  fx_t* fx = fx_new(&q, 1, 0, 0);
  char key[17];
  admit_decision_t d;
  uint64_t worst = 0;
  admit_keyed_stats_t st0 = stats_of(fx->k);
  for (unsigned i = 1; i <= 100000; i++) {
    snprintf(key, sizeof(key), "user-%011u", i);
    assert_int_equal(admit_keyed_try(fx->k, 0, key, 16, 1, &d), 0);
    if (i >= 20000 && i % 1000 == 0) {
      admit_keyed_stats_t st = stats_of(fx->k);
      uint64_t per = (st.bytes - st0.bytes) / st.keys;
      if (per > worst) worst = per;
    }
  }
  print_message("    worst %llu bytes/key for 16-byte keys\n",
                (unsigned long long)worst);
  assert_true(worst <= 64 + 16);
  fx_free(fx);
}

/* Many keys in a small table, with growth, deletion and refusal, against a
 * model of the token bucket kept by the test. */
typedef struct model_s {
  uint64_t tat;
} model_t;

static void random_ops_model(uint64_t hash_mask) {
  enum { NKEYS = 300, BURST = 3 };
  const uint64_t T = 50 * MS;
  admit_quota_t q = bucket(20, SEC, BURST);
  fx_t* fx = fx_new(&q, 1, 64, 0);
  admit__keyed_hash_mask(fx->k, hash_mask);
  model_t m[NKEYS];
  memset(m, 0, sizeof(m));
  uint64_t x = 0x243f6a8885a308d3u;
  char key[40];
  for (unsigned step = 0; step < 200000; step++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    unsigned i = (unsigned)(x % NKEYS);
    unsigned op = (unsigned)((x >> 20) % 16);
    uint64_t cost = 1 + (x >> 30) % BURST;
    /* Long and short keys alike. */
    size_t len = (size_t)snprintf(key, sizeof(key), "%s%u",
                                  i % 2 ? "k" : "a-long-key-for-", i);
    uint64_t now = atomic_load(&fx->fc.now);
    uint64_t base = m[i].tat > now ? m[i].tat : now;
    admit_decision_t d;
    if (op < 10) {
      int rc = admit_keyed_try(fx->k, 0, key, len, cost, &d);
      if (rc == ADMIT_EFULL) {
        /* Only a key that is not held can be refused room, and a busy
         * key is always held. */
        assert_true(m[i].tat <= now);
        continue;
      }
      assert_int_equal(rc, 0);
      uint64_t next = base + cost * T;
      int allowed = next - now <= BURST * T;
      assert_int_equal(d.allowed, allowed);
      if (allowed) {
        m[i].tat = next;
        assert_int_equal(d.remaining, (BURST * T - (next - now)) / T);
      } else {
        assert_int_equal(d.retry_after_ns, next - now - BURST * T);
      }
    } else if (op < 12) {
      int rc = admit_keyed_refund(fx->k, 0, key, len, cost);
      if (m[i].tat > now) {
        assert_int_equal(rc, 0);
        uint64_t back = cost * T;
        m[i].tat = m[i].tat - now > back ? m[i].tat - back : now;
      } else {
        /* A fresh key may or may not still be held. */
        assert_true(rc == 0 || rc == ADMIT_ENOTFOUND);
      }
    } else if (op < 13) {
      int rc = admit_keyed_reset(fx->k, 0, key, len);
      if (m[i].tat > now) assert_int_equal(rc, 0);
      else assert_true(rc == 0 || rc == ADMIT_ENOTFOUND);
      m[i].tat = 0;
    } else if (op < 14) {
      assert_int_equal(admit_keyed_peek(fx->k, 0, key, len, &d), 0);
      assert_int_equal(d.remaining, (BURST * T - (base - now)) / T);
    } else if (op < 15) {
      fake_advance(&fx->fc, (x >> 40) % (2 * T));
    } else if ((x >> 40) % 64 == 0) {
      admit_keyed_sweep(fx->k);
    }
    assert_true(stats_of(fx->k).keys <= 64);
  }
  fx_free(fx);
}

static void test_random_ops_model(void** state) {
  (void)state;
  random_ops_model(UINT64_MAX);
}

/* Few distinct hashes: long clusters that wrap around the end of a table,
 * equal hashes and both shards. */
static void test_random_ops_model_colliding(void** state) {
  (void)state;
  random_ops_model(0x80000000c0000003u);
}

/* --- refund, reset, peek --------------------------------------------------- */

static void test_refund(void** state) {
  (void)state;
  admit_quota_t qs[2] = {bucket(10, SEC, 10),
                         window(ADMIT_FIXED_WINDOW, 10, 10 * SEC)};
  fx_t* fx = fx_new(qs, 2, 0, 0);
  assert_int_equal(admit_keyed_refund(fx->k, 0, "r", 1, 1), ADMIT_ENOTFOUND);
  expect(try_s(fx->k, 0, "r", 8), 1, 2, 0, 800 * MS);
  assert_int_equal(admit_keyed_refund(fx->k, 0, "r", 1, 3), 0);
  expect(try_s(fx->k, 0, "r", 1), 1, 4, 0, 600 * MS);
  /* Giving everything back leaves a fresh key, which is dropped. */
  assert_int_equal(admit_keyed_refund(fx->k, 0, "r", 1, 10), 0);
  assert_int_equal(stats_of(fx->k).keys, 0);
  assert_int_equal(admit_keyed_refund(fx->k, 0, "r", 1, 1), ADMIT_ENOTFOUND);
  /* The window refunds within the current window. */
  expect(try_s(fx->k, 1, "r", 10), 1, 0, 0, 10 * SEC);
  assert_int_equal(try_s(fx->k, 1, "r", 1).allowed, 0);
  assert_int_equal(admit_keyed_refund(fx->k, 1, "r", 1, 4), 0);
  expect(try_s(fx->k, 1, "r", 4), 1, 0, 0, 10 * SEC);
  assert_int_equal(try_s(fx->k, 1, "r", 1).allowed, 0);
  fx_free(fx);
}

static void test_reset(void** state) {
  (void)state;
  admit_quota_t q = bucket(5, SEC, 5);
  fx_t* fx = fx_new(&q, 1, 0, 0);
  try_s(fx->k, 0, "a", 5);
  try_s(fx->k, 0, "b", 5);
  assert_int_equal(try_s(fx->k, 0, "a", 1).allowed, 0);
  assert_int_equal(admit_keyed_reset(fx->k, 0, "a", 1), 0);
  assert_int_equal(stats_of(fx->k).keys, 1);
  assert_int_equal(admit_keyed_reset(fx->k, 0, "a", 1), ADMIT_ENOTFOUND);
  expect(try_s(fx->k, 0, "a", 5), 1, 0, 0, SEC);
  assert_int_equal(try_s(fx->k, 0, "b", 1).allowed, 0);
  fx_free(fx);
}

static void test_peek(void** state) {
  (void)state;
  admit_quota_t q = bucket(10, SEC, 10);
  fx_t* fx = fx_new(&q, 1, 0, 0);
  admit_decision_t d;
  assert_int_equal(admit_keyed_peek(fx->k, 0, "p", 1, &d), 0);
  assert_int_equal(d.allowed, 1);
  assert_int_equal(d.remaining, 10);
  assert_int_equal(d.limit, 10);
  assert_int_equal(d.reset_after_ns, 0);
  assert_int_equal(stats_of(fx->k).keys, 0); /* peek creates nothing */
  try_s(fx->k, 0, "p", 4);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(admit_keyed_peek(fx->k, 0, "p", 1, &d), 0);
    assert_int_equal(d.remaining, 6);
    assert_int_equal(d.reset_after_ns, 400 * MS);
  }
  expect(try_s(fx->k, 0, "p", 6), 1, 0, 0, SEC);
  assert_int_equal(admit_keyed_peek(fx->k, 0, "p", 1, &d), 0);
  assert_int_equal(d.remaining, 0);
  assert_int_equal(stats_of(fx->k).keys, 1);
  fx_free(fx);
}

/* --- bad input ------------------------------------------------------------- */

static void test_new_bad_input(void** state) {
  (void)state;
  admit_quota_t good = bucket(1, SEC, 1);
  admit_quota_t bad = bucket(0, SEC, 1);
  admit_quota_t qs[2] = {good, bad};
  admit_keyed_options_t o;
  memset(&o, 0, sizeof(o));
  o.quotas = &good;
  o.nquotas = 1;
  admit_keyed_t* k = (admit_keyed_t*)&o;
  assert_int_equal(admit_keyed_new(NULL, &o), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_new(&k, NULL), ADMIT_EINVAL);
  assert_null(k);
  o.nquotas = 0;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  o.nquotas = 1;
  o.quotas = NULL;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  o.quotas = qs;
  o.nquotas = 2; /* the second quota is invalid */
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  o.nquotas = 65536;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  o.nquotas = 1;
  o.max_key_len = 65536;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  o.max_key_len = 0;
  o.max_keys = UINT64_MAX;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  o.max_keys = 0;
  admit_quota_t odd = good;
  odd.algo = (admit_algo_t)7;
  o.quotas = &odd;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  odd = good;
  odd.nrates = 0;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  odd.nrates = ADMIT_RATES_MAX + 1;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  odd = good;
  odd.rates[0].period_ns = 0;
  assert_int_equal(admit_keyed_new(&k, &o), ADMIT_EINVAL);
  assert_null(k);
  admit_keyed_free(NULL);
  /* Both limits exactly at their maximum are accepted. */
  o.quotas = &good;
  o.max_key_len = 65535;
  assert_int_equal(admit_keyed_new(&k, &o), 0);
  admit_keyed_free(k);
}

static void test_calls_bad_input(void** state) {
  (void)state;
  admit_quota_t qs[2] = {bucket(10, SEC, 5),
                         window(ADMIT_FIXED_WINDOW, 3, SEC)};
  fx_t* fx = fx_new(qs, 2, 0, 8);
  admit_keyed_t* k = fx->k;
  admit_decision_t d;
  admit_keyed_stats_t st;
  const char* key = "12345678";
  /* try */
  assert_int_equal(admit_keyed_try(NULL, 0, key, 1, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, NULL, 1, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, key, 0, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, key, 9, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, key, SIZE_MAX, 1, &d),
                   ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 2, key, 1, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, UINT32_MAX, key, 1, 1, &d),
                   ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, key, 1, 0, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, key, 1, 6, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 1, key, 1, 4, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, key, 1, UINT64_MAX, &d),
                   ADMIT_EINVAL);
  assert_int_equal(admit_keyed_try(k, 0, key, 1, 1, NULL), ADMIT_EINVAL);
  memset(&d, 0xa5, sizeof(d));
  assert_int_equal(admit_keyed_try(k, 0, key, 1, 9, &d), ADMIT_EINVAL);
  assert_int_equal(d.allowed, 0); /* an error never reads as "allowed" */
  /* Limits that are exactly right pass. */
  assert_int_equal(admit_keyed_try(k, 0, key, 8, 5, &d), 0);
  assert_int_equal(admit_keyed_try(k, 1, key, 8, 3, &d), 0);
  /* peek */
  assert_int_equal(admit_keyed_peek(NULL, 0, key, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_peek(k, 0, NULL, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_peek(k, 0, key, 0, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_peek(k, 0, key, 9, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_peek(k, 2, key, 1, &d), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_peek(k, 0, key, 1, NULL), ADMIT_EINVAL);
  /* refund */
  assert_int_equal(admit_keyed_refund(NULL, 0, key, 8, 1), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_refund(k, 0, NULL, 8, 1), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_refund(k, 0, key, 0, 1), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_refund(k, 0, key, 9, 1), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_refund(k, 2, key, 8, 1), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_refund(k, 0, key, 8, 0), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_refund(k, 0, key, 8, 6), ADMIT_EINVAL);
  /* reset */
  assert_int_equal(admit_keyed_reset(NULL, 0, key, 8), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_reset(k, 0, NULL, 8), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_reset(k, 0, key, 0), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_reset(k, 0, key, 9), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_reset(k, 2, key, 8), ADMIT_EINVAL);
  /* stats and sweep */
  assert_int_equal(admit_keyed_stats(NULL, &st), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_stats(k, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_keyed_sweep(NULL), 0);
  /* None of it changed anything. */
  st = stats_of(k);
  assert_int_equal(st.keys, 2);
  assert_int_equal(st.full, 0);
  assert_int_equal(admit_keyed_refund(k, 0, key, 8, 5), 0);
  fx_free(fx);
}

int main(void) {
  if (admit_replace_allocator(count_malloc, count_realloc, count_calloc,
                              count_free) != 0) {
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bucket_exact),
      cmocka_unit_test(test_fixed_window_exact),
      cmocka_unit_test(test_sliding_window_exact),
      cmocka_unit_test(test_multi_rate_all_or_nothing),
      cmocka_unit_test(test_matches_limiter),
      cmocka_unit_test(test_keys_independent),
      cmocka_unit_test(test_tiers_independent),
      cmocka_unit_test(test_binary_keys),
      cmocka_unit_test(test_binary_keys_colliding),
      cmocka_unit_test(test_full_then_evict_fresh),
      cmocka_unit_test(test_full_then_evict_fresh_sharded),
      cmocka_unit_test(test_evicts_only_fresh),
      cmocka_unit_test(test_hostile_unique_keys),
      cmocka_unit_test(test_bytes_exact),
      cmocka_unit_test(test_bytes_per_key),
      cmocka_unit_test(test_random_ops_model),
      cmocka_unit_test(test_random_ops_model_colliding),
      cmocka_unit_test(test_refund),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_peek),
      cmocka_unit_test(test_new_bad_input),
      cmocka_unit_test(test_calls_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
