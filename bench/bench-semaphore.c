/* Semaphore: try+release and acquire+release, 1 and 2 threads, against a
 * mutex lock+unlock pair and an atomic compare-and-swap measured in the
 * same run. */
#include "bench.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Each measurement runs this long per repetition; the best of REPS counts,
 * since noise only ever adds time. */
#define RUN_S 0.1
#define REPS 5
#define CHUNK 1000

typedef struct job_s job_t;
/* Runs CHUNK operations; returns how many of them "succeeded". */
typedef uint64_t (*chunk_fn)(job_t* j);

struct job_s {
  chunk_fn fn;
  admit_semaphore_t* s;
  pthread_mutex_t* mu;
  _Atomic uint64_t* word;
  _Atomic int* start;
  _Atomic int* stop;
  uint64_t ops;
  uint64_t ok;
  double elapsed;
};

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t shared_word;

static uint64_t chunk_mutex(job_t* j) {
  for (int i = 0; i < CHUNK; i++) {
    pthread_mutex_lock(j->mu);
    pthread_mutex_unlock(j->mu);
  }
  return CHUNK;
}

static uint64_t chunk_cas(job_t* j) {
  for (int i = 0; i < CHUNK; i++) {
    uint64_t v = atomic_load_explicit(j->word, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        j->word, &v, v + 1, memory_order_acq_rel, memory_order_relaxed)) {
    }
  }
  return CHUNK;
}

static uint64_t chunk_try_release(job_t* j) {
  uint64_t ok = 0;
  for (int i = 0; i < CHUNK; i++) {
    if (admit_semaphore_try(j->s) == 1) {
      admit_semaphore_release(j->s);
      ok++;
    }
  }
  return ok;
}

static uint64_t chunk_acquire_release(job_t* j) {
  for (int i = 0; i < CHUNK; i++) {
    if (admit_semaphore_acquire(j->s, 0, ADMIT_FOREVER) != 0) abort();
    admit_semaphore_release(j->s);
  }
  return CHUNK;
}

static void* job_main(void* p) {
  job_t* j = p;
  while (!atomic_load(j->start)) {
  }
  double t0 = bench_now_s();
  while (!atomic_load_explicit(j->stop, memory_order_relaxed)) {
    j->ok += j->fn(j);
    j->ops += CHUNK;
  }
  j->elapsed = bench_now_s() - t0;
  return NULL;
}

/* Runs @p fn on @p threads threads for RUN_S; returns ns per operation as
 * each thread sees it (the best of REPS) and the success ratio. */
static double measure(chunk_fn fn, int threads, admit_semaphore_t* s,
                      double* ok_ratio) {
  double best = 1e30;
  for (int rep = 0; rep < REPS; rep++) {
    _Atomic int start = 0, stop = 0;
    job_t jobs[2];
    pthread_t th[2];
    for (int i = 0; i < threads; i++) {
      memset(&jobs[i], 0, sizeof(jobs[i]));
      jobs[i].fn = fn;
      jobs[i].s = s;
      jobs[i].mu = &shared_mu;
      jobs[i].word = &shared_word;
      jobs[i].start = &start;
      jobs[i].stop = &stop;
      pthread_create(&th[i], NULL, job_main, &jobs[i]);
    }
    atomic_store(&start, 1);
    struct timespec ts = {0, (long)(RUN_S * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    uint64_t ops = 0, ok = 0;
    double elapsed = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(th[i], NULL);
      ops += jobs[i].ops;
      ok += jobs[i].ok;
      elapsed += jobs[i].elapsed;
    }
    /* Per-thread latency: mean elapsed over mean ops per thread. */
    double ns = (elapsed / threads) * 1e9 / ((double)ops / threads);
    if (ns < best) {
      best = ns;
      if (ok_ratio != NULL) *ok_ratio = (double)ok / (double)ops;
    }
  }
  return best;
}

static admit_semaphore_t* make(uint64_t capacity) {
  admit_semaphore_options_t o;
  memset(&o, 0, sizeof(o));
  o.capacity = capacity;
  o.unbounded_waiters = 1;
  admit_semaphore_t* s = NULL;
  if (admit_semaphore_new(&s, &o) != 0) abort();
  return s;
}

int main(void) {
  bench_go_multithreaded();
  printf("semaphore (best of %d x %.1f s; floor = the raw primitive, same "
         "run)\n",
         REPS, RUN_S);

  double mutex1 = measure(chunk_mutex, 1, NULL, NULL);
  double cas1 = measure(chunk_cas, 1, NULL, NULL);
  double mutex2 = measure(chunk_mutex, 2, NULL, NULL);
  double cas2 = measure(chunk_cas, 2, NULL, NULL);
  bench_row("floor: pthread_mutex lock+unlock", 1, mutex1, 0);
  bench_row("floor: atomic CAS", 1, cas1, 0);
  bench_row("floor: pthread_mutex lock+unlock, shared", 2, mutex2, 0);
  bench_row("floor: atomic CAS, shared", 2, cas2, 0);

  admit_semaphore_t* s = make(4);
  double ok;
  double tr1 = measure(chunk_try_release, 1, s, &ok);
  bench_row("try+release, uncontended (vs mutex pair)", 1, tr1, mutex1);
  bench_row("try+release, uncontended (vs 2 CAS)", 1, tr1, 2 * cas1);
  double ar1 = measure(chunk_acquire_release, 1, s, NULL);
  bench_row("acquire+release, uncontended (vs mutex)", 1, ar1, mutex1);
  admit_semaphore_free(s);

  s = make(2);
  double tr2c2 = measure(chunk_try_release, 2, s, &ok);
  bench_row("try+release, capacity 2 (vs shared mutex)", 2, tr2c2, mutex2);
  printf("%-44s %.1f%% of tries got a permit\n", "", ok * 100);
  admit_semaphore_free(s);

  s = make(1);
  double tr2c1 = measure(chunk_try_release, 2, s, &ok);
  bench_row("try+release, capacity 1 (vs shared mutex)", 2, tr2c1, mutex2);
  printf("%-44s %.1f%% of tries got a permit\n", "", ok * 100);
  double ar2c1 = measure(chunk_acquire_release, 2, s, NULL);
  bench_row("acquire+release, capacity 1 (vs shared mtx)", 2, ar2c1, mutex2);
  admit_semaphore_free(s);

  printf("target: uncontended try+release <= 30 ns: %.1f ns (%s)\n", tr1,
         tr1 <= 30 ? "met" : "NOT met");
  return 0;
}
