/* Keyed limiter: try with 1,000,000 live keys (uniformly random order, so
 * nearly every call misses the caches; and Zipf-like popularity), 1 and 2
 * threads, and a hot key, against floors measured in the same run: one
 * clock read plus the hash of the same 16-byte key, and that plus one
 * dependent cache miss into an array as large as the table (what any table
 * bigger than the caches pays per call). Prints the memory per live key,
 * counted by a replaced allocator and by stats.bytes.
 *
 * One thread is timed by its CPU time (CLOCK_THREAD_CPUTIME_ID), not wall
 * time: on a shared machine other processes take the CPU away for whole
 * time slices, which wall time would charge to the calls. Two threads are
 * timed by wall time, since a thread waiting for a shard lock may yield
 * its CPU; their row says when the threads were off a CPU much of the
 * time. */
#include "bench.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "keyed-hash.h"
#include "../test/counting-alloc.h"

#define NKEYS 1000000u
#define KEYLEN 16
#define RUN_S 0.3
#define REPS 3
#define CHUNK 1000
#define NSKEW (1u << 22) /* precomputed skewed key indices */

/* --- the measured loops -------------------------------------------------- */

typedef struct job_s job_t;
typedef uint64_t (*chunk_fn)(job_t* j);

struct job_s {
  chunk_fn fn;
  uint64_t* chase; /* a single random cycle through a table-sized array */
  uint64_t at;
  admit_keyed_t* k;
  admit__khash_secret_t secret;
  uint64_t rng;
  uint64_t sink;
  _Atomic int* start;
  _Atomic int* stop;
  uint64_t ops;
  uint64_t ok;
  double elapsed; /* CPU time */
  double wall;
};

/* Key indices with Zipf(1)-like popularity (density 1/x: the 10 hottest
 * keys take about a sixth of the calls), as user traffic tends to be. */
static uint32_t* skewed;

static void skewed_init(void) {
  skewed = malloc(NSKEW * sizeof(*skewed));
  if (skewed == NULL) abort();
  uint64_t x = 0x2545f4914f6cdd1du;
  for (uint32_t i = 0; i < NSKEW; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    double u = (double)(x >> 11) * 0x1p-53;
    uint64_t v = (uint64_t)exp(u * log((double)NKEYS + 1));
    skewed[i] = (uint32_t)(v > 0 ? v - 1 : 0);
  }
}

/* Key i is 16 bytes: a fixed 8-byte prefix and i in binary. */
static inline void key_of(unsigned char* key, uint64_t i) {
  memcpy(key, "user-id:", 8);
  memcpy(key + 8, &i, 8);
}

static inline uint64_t next_index(job_t* j) {
  uint64_t x = j->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  j->rng = x;
  return (uint64_t)(((__uint128_t)x * NKEYS) >> 64);
}

static uint64_t chunk_floor(job_t* j) {
  unsigned char key[KEYLEN];
  for (int i = 0; i < CHUNK; i++) {
    key_of(key, next_index(j));
    j->sink += admit_now_ns() + admit__khash(&j->secret, 0, key, KEYLEN);
  }
  return CHUNK;
}

/* The floor for a table larger than the caches: the same, plus one cache
 * miss that depends on the previous one, as each keyed call's miss does. */
static uint64_t chunk_floor_miss(job_t* j) {
  unsigned char key[KEYLEN];
  for (int i = 0; i < CHUNK; i++) {
    key_of(key, next_index(j));
    j->at = j->chase[j->at * 8];
    j->sink += admit_now_ns() + admit__khash(&j->secret, 0, key, KEYLEN);
  }
  return CHUNK;
}

static uint64_t chunk_try(job_t* j) {
  unsigned char key[KEYLEN];
  uint64_t ok = 0;
  for (int i = 0; i < CHUNK; i++) {
    admit_decision_t d;
    key_of(key, next_index(j));
    if (admit_keyed_try(j->k, 0, key, KEYLEN, 1, &d) != 0) abort();
    ok += (uint64_t)d.allowed;
  }
  return ok;
}

static uint64_t chunk_try_skewed(job_t* j) {
  unsigned char key[KEYLEN];
  uint64_t ok = 0;
  for (int i = 0; i < CHUNK; i++) {
    admit_decision_t d;
    key_of(key, skewed[j->rng++ & (NSKEW - 1)]);
    if (admit_keyed_try(j->k, 0, key, KEYLEN, 1, &d) != 0) abort();
    ok += (uint64_t)d.allowed;
  }
  return ok;
}

static uint64_t chunk_try_hot(job_t* j) {
  unsigned char key[KEYLEN];
  uint64_t ok = 0;
  key_of(key, 12345);
  for (int i = 0; i < CHUNK; i++) {
    admit_decision_t d;
    if (admit_keyed_try(j->k, 0, key, KEYLEN, 1, &d) != 0) abort();
    ok += (uint64_t)d.allowed;
  }
  return ok;
}

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void* job_main(void* p) {
  job_t* j = p;
  while (!atomic_load(j->start)) {
  }
  double t0 = thread_cpu_s(), w0 = bench_now_s();
  while (!atomic_load_explicit(j->stop, memory_order_relaxed)) {
    j->ok += j->fn(j);
    j->ops += CHUNK;
  }
  j->elapsed = thread_cpu_s() - t0;
  j->wall = bench_now_s() - w0;
  return NULL;
}

/* Runs @p fn on @p threads threads for RUN_S; returns ns per operation as
 * each thread sees it (CPU time for one thread, wall time for two), the
 * best of REPS (noise only ever adds time). */
static uint64_t* chase;

/* Links the cache lines of a @p bytes array into one random cycle
 * (Sattolo's algorithm), so that following it misses every time. */
static void chase_init(uint64_t bytes) {
  uint64_t n = bytes / 64;
  chase = aligned_alloc(64, n * 64);
  if (chase == NULL) abort();
  for (uint64_t i = 0; i < n; i++) chase[i * 8] = i;
  uint64_t x = 0x853c49e6748fea9bu;
  for (uint64_t i = n - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t j = x % i;
    uint64_t t = chase[i * 8];
    chase[i * 8] = chase[j * 8];
    chase[j * 8] = t;
  }
}

/* The share of the wall time the threads of the last measure() ran. */
static double last_share;

static double measure(chunk_fn fn, int threads, admit_keyed_t* k,
                      const admit__khash_secret_t* sec, double* ok_ratio) {
  double best = 1e30;
  for (int rep = 0; rep < REPS; rep++) {
    _Atomic int start = 0, stop = 0;
    job_t jobs[2];
    pthread_t th[2];
    for (int i = 0; i < threads; i++) {
      memset(&jobs[i], 0, sizeof(jobs[i]));
      jobs[i].fn = fn;
      jobs[i].k = k;
      jobs[i].secret = *sec;
      jobs[i].chase = chase;
      jobs[i].at = (uint64_t)i * 1000;
      jobs[i].rng = 0x9e3779b97f4a7c15u * (uint64_t)(rep * 2 + i + 1);
      jobs[i].start = &start;
      jobs[i].stop = &stop;
      pthread_create(&th[i], NULL, job_main, &jobs[i]);
    }
    atomic_store(&start, 1);
    struct timespec ts = {0, (long)(RUN_S * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    uint64_t ops = 0, ok = 0;
    double elapsed = 0, wall = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(th[i], NULL);
      ops += jobs[i].ops;
      ok += jobs[i].ok;
      elapsed += jobs[i].elapsed;
      wall += jobs[i].wall;
    }
    double ns = (threads == 1 ? elapsed : wall) * 1e9 / (double)ops;
    if (ns < best) {
      best = ns;
      last_share = elapsed / wall;
      if (ok_ratio != NULL) *ok_ratio = (double)ok / (double)ops;
    }
  }
  return best;
}

/* Prints a row; for two threads, says when they were off a CPU much of
 * the time (waiting for a lock, or a busy machine). */
static void row(const char* name, int threads, double ns, double floor_ns) {
  bench_row(name, threads, ns, floor_ns);
  if (threads > 1 && last_share < 0.9) {
    printf("  (the threads were on a CPU %.0f%% of the wall time)\n",
           last_share * 100);
  }
}

int main(void) {
  if (admit_replace_allocator(count_malloc, count_realloc, count_calloc,
                              count_free) != 0) {
    return 1;
  }
  bench_go_multithreaded();
  skewed_init();

  /* Generous enough that most calls are admitted and state stays busy. */
  admit_quota_t q;
  memset(&q, 0, sizeof(q));
  q.algo = ADMIT_TOKEN_BUCKET;
  q.nrates = 1;
  q.rates[0].count = 100;
  q.rates[0].period_ns = ADMIT_SECOND;
  admit_keyed_options_t o;
  memset(&o, 0, sizeof(o));
  o.quotas = &q;
  o.nquotas = 1;
  long long before = atomic_load(&live_bytes);
  admit_keyed_t* k = NULL;
  if (admit_keyed_new(&k, &o) != 0) return 1;

  double t0 = thread_cpu_s();
  unsigned char key[KEYLEN];
  for (uint64_t i = 0; i < NKEYS; i++) {
    admit_decision_t d;
    key_of(key, i);
    if (admit_keyed_try(k, 0, key, KEYLEN, 1, &d) != 0) return 1;
  }
  double fill_ns = (thread_cpu_s() - t0) * 1e9 / NKEYS;
  admit_keyed_stats_t st;
  admit_keyed_stats(k, &st);
  long long held = atomic_load(&live_bytes) - before;

  uint64_t raw[4] = {1, 2, 3, 4};
  admit__khash_secret_t sec;
  admit__khash_secret_init(&sec, raw);

  printf("keyed limiter, %u live keys of %d bytes, token bucket 100/s "
         "(best of %d x %.1f s; 1 thread: CPU time)\n", (unsigned)st.keys,
         KEYLEN, REPS, RUN_S);
  printf("memory: %.1f bytes/key counted by the allocator, %.1f by "
         "stats.bytes (target <= 64 + %d key bytes = %d)\n",
         (double)held / (double)st.keys, (double)st.bytes / (double)st.keys,
         KEYLEN, 64 + KEYLEN);
  row("insert a new key (table growing to 1M)", 1, fill_ns, 0);

  chase_init(st.bytes);
  double ok = 0;
  double floor1 = measure(chunk_floor, 1, k, &sec, NULL);
  row("floor: clock read + hash of a 16-byte key", 1, floor1, 0);
  double miss1 = measure(chunk_floor_miss, 1, k, &sec, NULL);
  row("floor + one dependent miss (table-sized)", 1, miss1, 0);
  double hot = measure(chunk_try_hot, 1, k, &sec, &ok);
  row("keyed try, one hot key", 1, hot, floor1);
  double t1 = measure(chunk_try, 1, k, &sec, &ok);
  row("keyed try, random key of 1M", 1, t1, floor1);
  printf("  (%.0f%% admitted; %.2fx the floor with its miss; target <= 150 "
         "ns: %s)\n", ok * 100, t1 / miss1, t1 <= 150 ? "met" : "NOT met");
  double ts = measure(chunk_try_skewed, 1, k, &sec, &ok);
  row("keyed try, Zipf(1)-popular key of 1M", 1, ts, floor1);
  double floor2 = measure(chunk_floor, 2, k, &sec, NULL);
  row("floor: clock read + hash of a 16-byte key", 2, floor2, 0);
  double miss2 = measure(chunk_floor_miss, 2, k, &sec, NULL);
  row("floor + one dependent miss (table-sized)", 2, miss2, 0);
  double t2 = measure(chunk_try, 2, k, &sec, &ok);
  row("keyed try, random key of 1M", 2, t2, floor2);
  printf("  (%.2fx the floor with its miss)\n", t2 / miss2);
  double ts2 = measure(chunk_try_skewed, 2, k, &sec, &ok);
  row("keyed try, Zipf(1)-popular key of 1M", 2, ts2, floor2);
  double hot2 = measure(chunk_try_hot, 2, k, &sec, &ok);
  row("keyed try, one hot key (contended)", 2, hot2, floor2);

  admit_keyed_stats(k, &st);
  if (st.keys != NKEYS || st.full != 0) {
    printf("unexpected: %llu keys, %llu full\n", (unsigned long long)st.keys,
           (unsigned long long)st.full);
    return 1;
  }
  admit_keyed_free(k);
  free(skewed);
  free(chase);
  if (atomic_load(&live_bytes) != before) {
    printf("leak: %lld bytes\n", atomic_load(&live_bytes) - before);
    return 1;
  }
  return 0;
}
