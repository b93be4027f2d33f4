/* Circuit breaker: transitions on exact, simulated time. */
#include "helpers.h"

#include <pthread.h>

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)

static fake_clock_t fc;
static admit_clock_t clk;

static admit_breaker_t* make(uint32_t window_calls, uint32_t min_calls,
                             uint32_t probes) {
  clk = fake_clock(&fc, 1000 * SEC);
  admit_breaker_options_t o = {0};
  o.window_calls = window_calls;
  o.min_calls = min_calls;
  o.failure_rate = 0.5;
  o.slow_call_ns = 2 * SEC;
  o.slow_rate = 0.8;
  o.open_ns = 10 * SEC;
  o.half_open_probes = probes;
  o.clock = &clk;
  admit_breaker_t* b = NULL;
  assert_int_equal(admit_breaker_new(&b, &o), 0);
  return b;
}

static void call(admit_breaker_t* b, int outcome, uint64_t dur) {
  uint64_t t;
  assert_int_equal(admit_breaker_enter(b, &t), 0);
  assert_int_equal(admit_breaker_leave(b, t, outcome, dur), 0);
}

static void test_bad_args(void** state) {
  (void)state;
  admit_breaker_t* b = NULL;
  uint64_t t;
  admit_breaker_stats_t st;
  admit_breaker_options_t o = {0};
  assert_int_equal(admit_breaker_new(NULL, NULL), ADMIT_EINVAL);
  o.failure_rate = -0.1;
  assert_int_equal(admit_breaker_new(&b, &o), ADMIT_EINVAL);
  assert_null(b);
  o.failure_rate = 0;
  o.window = (admit_breaker_window_t)7;
  assert_int_equal(admit_breaker_new(&b, &o), ADMIT_EINVAL);
  o.window = ADMIT_BREAKER_COUNT_WINDOW;
  o.window_calls = (1u << 20) + 1;
  assert_int_equal(admit_breaker_new(&b, &o), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_enter(NULL, &t), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_leave(NULL, 0, 0, 0), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_abandon(NULL, 0), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_state(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_stats(NULL, &st), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_trip(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_reset(NULL), ADMIT_EINVAL);
  admit_breaker_free(NULL);
  assert_int_equal(admit_breaker_new(&b, NULL), 0);
  assert_int_equal(admit_breaker_enter(b, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_leave(b, 0, 5, 0), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_leave(b, 0, -1, 0), ADMIT_EINVAL);
  assert_int_equal(admit_breaker_stats(b, NULL), ADMIT_EINVAL);
  assert_string_equal(admit_breaker_state_name(1), "open");
  assert_string_equal(admit_breaker_state_name(9), "unknown");
  assert_string_equal(admit_outcome_name(3), "vendor_limited");
  assert_string_equal(admit_outcome_name(-1), "unknown");
  admit_breaker_free(b);
}

/* Below min_calls nothing opens, however bad; at min_calls with the failure
 * rate at the threshold it opens on exactly that call. */
static void test_opens_on_failure_rate(void** state) {
  (void)state;
  admit_breaker_t* b = make(10, 4, 2);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_CLOSED);
  call(b, ADMIT_OUTCOME_SUCCESS, MS); /* 4 calls, 3 failed: 0.75 >= 0.5 */
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_OPEN);
  uint64_t t;
  assert_int_equal(admit_breaker_enter(b, &t), ADMIT_EOPEN);
  admit_breaker_stats_t st;
  assert_int_equal(admit_breaker_stats(b, &st), 0);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.rejected, 1);
  assert_int_equal(st.permitted, 4);
  assert_int_equal(st.state_since_ns, 1000 * SEC);
  admit_breaker_free(b);
}

static void test_stays_closed_under_threshold(void** state) {
  (void)state;
  admit_breaker_t* b = make(4, 4, 2);
  /* One failure in every 4 calls: every window of 4 holds exactly one,
   * a rate of 0.25. */
  for (int i = 0; i < 30; i++)
    call(b, i % 4 == 0 ? ADMIT_OUTCOME_FAILURE : ADMIT_OUTCOME_SUCCESS, MS);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_CLOSED);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.calls, 4);
  assert_int_equal(st.opened, 0);
  /* The count window forgets: 4 successes then 2 failures in a window of
   * 4 is exactly 0.5, which opens. */
  for (int i = 0; i < 4; i++) call(b, ADMIT_OUTCOME_SUCCESS, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_CLOSED);
  call(b, ADMIT_OUTCOME_TIMEOUT, MS);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_OPEN);
  admit_breaker_free(b);
}

static void test_opens_on_slow_rate(void** state) {
  (void)state;
  admit_breaker_t* b = make(5, 5, 1);
  /* Successful but slow: 4 of 5 at >= 2 s is 0.8, the slow threshold. */
  call(b, ADMIT_OUTCOME_SUCCESS, 2 * SEC);
  call(b, ADMIT_OUTCOME_SUCCESS, 3 * SEC);
  call(b, ADMIT_OUTCOME_SUCCESS, 2 * SEC - 1); /* just under: not slow */
  call(b, ADMIT_OUTCOME_SUCCESS, 5 * SEC);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_CLOSED);
  call(b, ADMIT_OUTCOME_SUCCESS, 2 * SEC);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_OPEN);
  admit_breaker_free(b);
}

/* Open lasts exactly open_ns; then half-open lets exactly N probes through;
 * good probes close it. */
static void test_half_open_closes(void** state) {
  (void)state;
  admit_breaker_t* b = make(2, 2, 2);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_OPEN);
  uint64_t t1, t2, t3;
  fake_advance(&fc, 10 * SEC - 1);
  assert_int_equal(admit_breaker_enter(b, &t1), ADMIT_EOPEN);
  fake_advance(&fc, 1);
  assert_int_equal(admit_breaker_enter(b, &t1), 0);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_HALF_OPEN);
  assert_int_equal(admit_breaker_enter(b, &t2), 0);
  assert_int_equal(admit_breaker_enter(b, &t3), ADMIT_EOPEN);
  /* An abandoned probe frees its place. */
  assert_int_equal(admit_breaker_abandon(b, t2), 0);
  assert_int_equal(admit_breaker_enter(b, &t2), 0);
  assert_int_equal(admit_breaker_leave(b, t1, ADMIT_OUTCOME_SUCCESS, MS), 0);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_HALF_OPEN);
  assert_int_equal(admit_breaker_leave(b, t2, ADMIT_OUTCOME_SUCCESS, MS), 0);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_CLOSED);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.half_opened, 1);
  assert_int_equal(st.closed, 1);
  assert_int_equal(st.calls, 0); /* a fresh window */
  admit_breaker_free(b);
}

static void test_half_open_reopens(void** state) {
  (void)state;
  admit_breaker_t* b = make(2, 2, 2);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  fake_advance(&fc, 10 * SEC);
  call(b, ADMIT_OUTCOME_SUCCESS, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS); /* 1 of 2 probes failed: 0.5 */
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_OPEN);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.opened, 2);
  assert_int_equal(st.half_opened, 1);
  assert_int_equal(st.closed, 0);
  assert_int_equal(st.state_since_ns, 1010 * SEC);
  admit_breaker_free(b);
}

/* A result from before a state change does not count afterwards. */
static void test_stale_results_ignored(void** state) {
  (void)state;
  admit_breaker_t* b = make(2, 2, 1);
  uint64_t old;
  assert_int_equal(admit_breaker_enter(b, &old), 0);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  fake_advance(&fc, 10 * SEC);
  uint64_t probe;
  assert_int_equal(admit_breaker_enter(b, &probe), 0);
  /* The old call's success must not be taken as the probe's. */
  assert_int_equal(admit_breaker_leave(b, old, ADMIT_OUTCOME_SUCCESS, MS), 0);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_HALF_OPEN);
  assert_int_equal(admit_breaker_leave(b, probe, ADMIT_OUTCOME_SUCCESS, MS),
                   0);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_CLOSED);
  /* And an old failure cannot reopen it. */
  assert_int_equal(admit_breaker_leave(b, old, ADMIT_OUTCOME_FAILURE, MS), 0);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.calls, 0);
  admit_breaker_free(b);
}

/* Vendor 429s and cancellations are neither successes nor failures. */
static void test_uncounted_outcomes(void** state) {
  (void)state;
  admit_breaker_t* b = make(4, 2, 1);
  call(b, ADMIT_OUTCOME_VENDOR_LIMITED, MS);
  call(b, ADMIT_OUTCOME_CANCELLED, MS);
  call(b, ADMIT_OUTCOME_VENDOR_LIMITED, MS);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.calls, 0);
  assert_int_equal(st.state, ADMIT_BREAKER_CLOSED);
  admit_breaker_free(b);
}

static void test_time_window(void** state) {
  (void)state;
  clk = fake_clock(&fc, 1000 * SEC);
  admit_breaker_options_t o = {0};
  o.window = ADMIT_BREAKER_TIME_WINDOW;
  o.window_ns = 10 * SEC; /* buckets of 1 s */
  o.min_calls = 4;
  o.clock = &clk;
  admit_breaker_t* b = NULL;
  assert_int_equal(admit_breaker_new(&b, &o), 0);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.calls, 3);
  /* Ten seconds later those failures have left the window. */
  fake_advance(&fc, 10 * SEC);
  admit_breaker_stats(b, &st);
  assert_int_equal(st.calls, 0);
  call(b, ADMIT_OUTCOME_SUCCESS, MS);
  call(b, ADMIT_OUTCOME_SUCCESS, MS);
  call(b, ADMIT_OUTCOME_SUCCESS, MS);
  fake_advance(&fc, 9 * SEC); /* still inside the window */
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_CLOSED);
  call(b, ADMIT_OUTCOME_FAILURE, MS);
  call(b, ADMIT_OUTCOME_FAILURE, MS); /* 3 of 6 */
  assert_int_equal(admit_breaker_state(b), ADMIT_BREAKER_OPEN);
  admit_breaker_free(b);
}

static void test_trip_and_reset(void** state) {
  (void)state;
  admit_breaker_t* b = make(10, 10, 1);
  assert_int_equal(admit_breaker_trip(b), 0);
  uint64_t t;
  assert_int_equal(admit_breaker_enter(b, &t), ADMIT_EOPEN);
  assert_int_equal(admit_breaker_reset(b), 0);
  assert_int_equal(admit_breaker_enter(b, &t), 0);
  assert_int_equal(admit_breaker_leave(b, t, ADMIT_OUTCOME_SUCCESS, 0), 0);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.closed, 1);
  assert_int_equal(st.calls, 1);
  admit_breaker_free(b);
}

/* Many threads failing at once: exactly one transition to open, and the
 * counters add up. */
typedef struct {
  admit_breaker_t* b;
  int n;
  _Atomic uint64_t* refused;
} worker_t;

static void* worker(void* arg) {
  worker_t* w = arg;
  for (int i = 0; i < w->n; i++) {
    uint64_t t;
    if (admit_breaker_enter(w->b, &t) == 0)
      admit_breaker_leave(w->b, t, ADMIT_OUTCOME_FAILURE, 0);
    else
      atomic_fetch_add(w->refused, 1);
  }
  return NULL;
}

static void test_threads(void** state) {
  (void)state;
  admit_breaker_options_t o = {0};
  o.window_calls = 50;
  o.min_calls = 50;
  o.open_ns = 3600 * SEC;
  admit_breaker_t* b = NULL;
  assert_int_equal(admit_breaker_new(&b, &o), 0);
  enum { T = 4 };
  int n = (int)test_scale(20000, 2000);
  _Atomic uint64_t refused = 0;
  pthread_t th[T];
  worker_t w = {b, n, &refused};
  for (int i = 0; i < T; i++) pthread_create(&th[i], NULL, worker, &w);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  admit_breaker_stats_t st;
  admit_breaker_stats(b, &st);
  assert_int_equal(st.state, ADMIT_BREAKER_OPEN);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.permitted + st.rejected, (uint64_t)T * (uint64_t)n);
  assert_int_equal(st.rejected, atomic_load(&refused));
  admit_breaker_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_opens_on_failure_rate),
      cmocka_unit_test(test_stays_closed_under_threshold),
      cmocka_unit_test(test_opens_on_slow_rate),
      cmocka_unit_test(test_half_open_closes),
      cmocka_unit_test(test_half_open_reopens),
      cmocka_unit_test(test_stale_results_ignored),
      cmocka_unit_test(test_uncounted_outcomes),
      cmocka_unit_test(test_time_window),
      cmocka_unit_test(test_trip_and_reset),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
