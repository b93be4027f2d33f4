/* The default monotonic clock and real sleeping, plus per-thread jitter. */
#include "internal.h"

#include <errno.h>
#include <time.h>

uint64_t admit_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void admit_sleep_ns(uint64_t ns) {
  if (ns == 0) return;
  struct timespec ts;
  ts.tv_sec = (time_t)(ns / 1000000000u);
  ts.tv_nsec = (long)(ns % 1000000000u);
  /* Sleeping against an absolute deadline keeps EINTR from stretching it. */
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  ts.tv_sec += now.tv_sec;
  ts.tv_nsec += now.tv_nsec;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static uint64_t real_now(void* ud) {
  (void)ud;
  return admit_now_ns();
}

static void real_sleep(void* ud, uint64_t ns) {
  (void)ud;
  admit_sleep_ns(ns);
}

void admit__clock_init(admit__clock_t* out, const admit_clock_t* in) {
  out->now_ns = (in != NULL && in->now_ns != NULL) ? in->now_ns : real_now;
  out->sleep_ns =
      (in != NULL && in->sleep_ns != NULL) ? in->sleep_ns : real_sleep;
  out->ud = in != NULL ? in->ud : NULL;
}

uint64_t admit__random(void) {
  static _Thread_local uint64_t state;
  if (state == 0) {
    /* Seed from the clock and the address of this thread's state. */
    state = admit_now_ns() ^ (uint64_t)(uintptr_t)&state ^ 0x9e3779b97f4a7c15u;
    if (state == 0) state = 1;
  }
  uint64_t x = state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  state = x;
  return x * 0x2545f4914f6cdd1du;
}

uint64_t admit__random_below(uint64_t bound) {
  if (bound == 0) return 0;
  if (bound == UINT64_MAX) return admit__random();
  return admit__random() % (bound + 1);
}
