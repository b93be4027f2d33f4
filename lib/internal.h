/* Internals shared by lib/ files. Not installed. */
#ifndef ADMIT_INTERNAL_H
#define ADMIT_INTERNAL_H

#include "admit.h"

#include <stdatomic.h>
#include <stdbool.h>

/* Allocation goes through these so admit_replace_allocator() applies. */
void* admit__malloc(size_t size);
void* admit__calloc(size_t count, size_t size);
void* admit__realloc(void* p, size_t size);
void admit__free(void* p);

/* A clock with its defaults filled in; copy of the caller's struct. */
typedef struct admit__clock_s {
  uint64_t (*now_ns)(void* ud);
  void (*sleep_ns)(void* ud, uint64_t ns);
  void* ud;
} admit__clock_t;

/* Fills @p out from @p in (NULL or partly NULL means the real clock). */
void admit__clock_init(admit__clock_t* out, const admit_clock_t* in);

static inline uint64_t admit__clock_now(const admit__clock_t* c) {
  return c->now_ns(c->ud);
}

static inline void admit__clock_sleep(const admit__clock_t* c, uint64_t ns) {
  c->sleep_ns(c->ud, ns);
}

/* Saturating arithmetic: time math never wraps. */
static inline uint64_t admit__sat_add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

static inline uint64_t admit__sat_sub(uint64_t a, uint64_t b) {
  return a > b ? a - b : 0;
}

static inline uint64_t admit__sat_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

/* Absolute deadline for a relative timeout; ADMIT_FOREVER stays forever. */
static inline uint64_t admit__deadline(uint64_t now, uint64_t timeout_ns) {
  return timeout_ns == ADMIT_FOREVER ? UINT64_MAX
                                     : admit__sat_add(now, timeout_ns);
}

/* Writes @p v in decimal at @p out (at least 21 bytes), NUL-terminated;
 * returns the number of digits. snprintf's format parsing cost more than
 * the rest of building a Redis command on the per-call paths. */
static inline int admit__u64_dec(char* out, uint64_t v) {
  char tmp[20];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  out[n] = '\0';
  return n;
}

/* A cheap per-thread pseudo-random number (xorshift), for jitter only. */
uint64_t admit__random(void);

/* Uniform random value in [0, bound]; 0 when bound is 0. */
uint64_t admit__random_below(uint64_t bound);

#endif /* ADMIT_INTERNAL_H */
