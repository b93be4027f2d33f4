/* Guard and admission controller overhead, 1 and 2 threads.
 *
 * The baseline, measured in the same run, is what the guard composes done
 * by hand: a bare limiter try plus a semaphore try and release. The guard
 * row does the same work through admit_guard_enter()/admit_guard_leave()
 * around an empty call (plus its stage machine, clock reads, counters and
 * histograms); the difference is the guard's own overhead (target: at most
 * 250 ns per call without Redis). */
#include "bench.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Each measurement runs this long per repetition; the configurations take
 * turns, REPS rounds, and each one's best round counts, since noise (other
 * processes on a shared machine) only ever adds time. */
#define RUN_S 0.05
#define REPS 11
#define CHUNK 500

typedef struct job_s job_t;
typedef void (*chunk_fn)(job_t* j);

typedef struct world_s {
  admit_limiter_t* local;
  admit_semaphore_t* sem;
  admit_guard_t* guard;
  admit_guard_t* bare;
  admit_admission_t* adm;
} world_t;

struct job_s {
  chunk_fn fn;
  world_t* w;
  _Atomic int* start;
  _Atomic int* stop;
  uint64_t ops;
  double elapsed;
};

static void chunk_baseline(job_t* j) {
  admit_decision_t d;
  for (int i = 0; i < CHUNK; i++) {
    if (admit_limiter_try(j->w->local, 1, &d) != 0 || !d.allowed) abort();
    if (admit_semaphore_try(j->w->sem) != 1) abort();
    admit_semaphore_release(j->w->sem);
  }
}

static void chunk_guard(job_t* j) {
  admit_guard_permit_t p;
  for (int i = 0; i < CHUNK; i++) {
    if (admit_guard_enter(j->w->guard, &p, 0) != 0) abort();
    /* the (empty) vendor call */
    admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS);
  }
}

static void chunk_bare_guard(job_t* j) {
  admit_guard_permit_t p;
  for (int i = 0; i < CHUNK; i++) {
    if (admit_guard_enter(j->w->bare, &p, 0) != 0) abort();
    admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS);
  }
}

static void chunk_step_guard(job_t* j) {
  admit_guard_permit_t p;
  uint64_t wait;
  for (int i = 0; i < CHUNK; i++) {
    admit_guard_start(j->w->guard, &p, 0, NULL, NULL);
    if (admit_guard_step(&p, &wait) != ADMIT_GUARD_READY) abort();
    admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS);
  }
}

static void chunk_admission(job_t* j) {
  admit_admission_permit_t p;
  for (int i = 0; i < CHUNK; i++) {
    if (admit_admission_enter(j->w->adm, 0, 0, &p) != 0) abort();
    admit_admission_leave(j->w->adm, &p, ADMIT_OUTCOME_SUCCESS);
  }
}

static void* job_main(void* arg) {
  job_t* j = arg;
  while (!atomic_load(j->start)) {
  }
  double t0 = bench_now_s();
  while (!atomic_load_explicit(j->stop, memory_order_relaxed)) {
    j->fn(j);
    j->ops += CHUNK;
  }
  j->elapsed = bench_now_s() - t0;
  return NULL;
}

/* Nanoseconds per operation per thread (wall time / ops of each thread),
 * for one round. */
static double measure_once(world_t* w, chunk_fn fn, int threads) {
  double best = 0;
  for (int rep = 0; rep < 1; rep++) {
    _Atomic int start = 0, stop = 0;
    job_t jobs[2];
    pthread_t th[2];
    for (int i = 0; i < threads; i++) {
      memset(&jobs[i], 0, sizeof(jobs[i]));
      jobs[i].fn = fn;
      jobs[i].w = w;
      jobs[i].start = &start;
      jobs[i].stop = &stop;
      pthread_create(&th[i], NULL, job_main, &jobs[i]);
    }
    atomic_store(&start, 1);
    double t0 = bench_now_s();
    while (bench_now_s() - t0 < RUN_S) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    atomic_store(&stop, 1);
    double ns = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(th[i], NULL);
      ns += jobs[i].elapsed * 1e9 / (double)jobs[i].ops;
    }
    ns /= threads;
    if (rep == 0 || ns < best) best = ns;
  }
  return best;
}

int main(void) {
  bench_go_multithreaded();
  world_t w;
  memset(&w, 0, sizeof(w));
  admit_quota_t q;
  /* Fast enough never to bind: an interval of 10 ns, a deep burst. */
  if (admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "100000000/s", NULL) != 0)
    abort();
  q.burst[0] = 100000000;
  admit_semaphore_options_t so = {0};
  so.capacity = 4;
  admit_guard_options_t go = {0};
  go.name = "bench";
  admit_admission_options_t ao = {0};
  ao.max_in_flight = 4;
  if (admit_limiter_new(&w.local, &q, NULL) != 0 ||
      admit_semaphore_new(&w.sem, &so) != 0)
    abort();
  go.local = w.local;
  go.semaphore = w.sem;
  if (admit_guard_new(&w.guard, &go) != 0) abort();
  admit_guard_options_t bo = {0};
  bo.name = "bare";
  if (admit_guard_new(&w.bare, &bo) != 0 ||
      admit_admission_new(&w.adm, &ao) != 0)
    abort();

  printf("guard overhead: local limiter + semaphore around an empty call\n");
  static const chunk_fn fns[] = {chunk_baseline, chunk_guard, chunk_step_guard,
                                 chunk_bare_guard, chunk_admission};
  enum { NF = sizeof(fns) / sizeof(fns[0]) };
  for (int threads = 1; threads <= 2; threads++) {
    double best[NF];
    for (int rep = 0; rep < REPS; rep++) {
      for (int f = 0; f < NF; f++) {
        double ns = measure_once(&w, fns[f], threads);
        if (rep == 0 || ns < best[f]) best[f] = ns;
      }
    }
    double base = best[0], guard = best[1], step = best[2], bare = best[3];
    double adm = best[4];
    bench_row("baseline: limiter try + sem try/release", threads, base, 0);
    bench_row("guard enter/leave (local + semaphore)", threads, guard, base);
    bench_row("guard start/step/leave (local + sem)", threads, step, base);
    bench_row("guard enter/leave (no stages)", threads, bare, base);
    bench_row("admission enter/leave", threads, adm, 0);
    printf("%-44s %2d thr %9.1f ns/call (target <= 250)\n",
           "=> guard overhead over baseline", threads, guard - base);
  }
  admit_admission_free(w.adm);
  admit_guard_free(w.bare);
  admit_guard_free(w.guard);
  admit_semaphore_free(w.sem);
  admit_limiter_free(w.local);
  return 0;
}
