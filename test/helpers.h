/* Shared test helpers: a fake clock, real-time scale, Redis discovery. */
#ifndef ADMIT_TEST_HELPERS_H
#define ADMIT_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>

#include <cmocka.h>

#include "admit.h"

/* A simulated clock: now_ns reads it, sleep_ns advances it. Atomic so
 * threaded tests may share one. */
typedef struct fake_clock_s {
  _Atomic uint64_t now;
  _Atomic uint64_t slept; /* total nanoseconds "slept" */
  _Atomic uint64_t sleeps; /* number of sleep calls */
} fake_clock_t;

static inline uint64_t fake_now(void* ud) {
  return atomic_load(&((fake_clock_t*)ud)->now);
}

static inline void fake_sleep(void* ud, uint64_t ns) {
  fake_clock_t* c = (fake_clock_t*)ud;
  atomic_fetch_add(&c->now, ns);
  atomic_fetch_add(&c->slept, ns);
  atomic_fetch_add(&c->sleeps, 1);
}

/* Starts a fake clock at @p start (nonzero: 0 means "never seen" to GCRA). */
static inline admit_clock_t fake_clock(fake_clock_t* c, uint64_t start) {
  atomic_store(&c->now, start);
  atomic_store(&c->slept, 0);
  atomic_store(&c->sleeps, 0);
  admit_clock_t clk = {fake_now, fake_sleep, c};
  return clk;
}

static inline void fake_advance(fake_clock_t* c, uint64_t ns) {
  atomic_fetch_add(&c->now, ns);
}

/* Real-time tests shrink under sanitizers and valgrind
 * (ADMIT_TEST_SCALE=short): returns @p full or @p short_. */
static inline uint64_t test_scale(uint64_t full, uint64_t short_) {
  const char* s = getenv("ADMIT_TEST_SCALE");
  return (s != NULL && strcmp(s, "short") == 0) ? short_ : full;
}

/* The throwaway server's URL from test/run-redis.sh, or NULL. */
static inline const char* test_redis_url(void) {
  const char* u = getenv("ADMIT_TEST_REDIS_URL");
  return (u != NULL && *u != '\0') ? u : NULL;
}

#endif
