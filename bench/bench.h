/* Shared benchmark helpers: timing loops and table printing. */
#ifndef ADMIT_BENCH_H
#define ADMIT_BENCH_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "admit.h"

static inline double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A thread that only sleeps: glibc takes single-threaded fast paths in
 * locks and atomics until a second thread exists, which would flatter every
 * number, so benchmarks start one before timing anything. */
static void* bench_idle_thread(void* arg) {
  (void)arg;
  for (;;) {
    struct timespec ts = {3600, 0};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static inline void bench_go_multithreaded(void) {
  pthread_t t;
  pthread_create(&t, NULL, bench_idle_thread, NULL);
  pthread_detach(t);
}

static inline void bench_row(const char* name, int threads, double ns_per_op,
                             double floor_ns) {
  printf("%-44s %2d thr %9.1f ns/op %12.0f ops/s", name, threads, ns_per_op,
         threads * 1e9 / ns_per_op);
  if (floor_ns > 0) printf("  %5.2fx floor", ns_per_op / floor_ns);
  printf("\n");
}

#endif
