/* Errors, version, the real clock and the replaceable allocator. */
#include "helpers.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>

#include "internal.h"

/* --- errors ---------------------------------------------------------------*/

typedef struct err_case_s {
  int code;
  const char* name;
  const char* msg;
} err_case_t;

static const err_case_t err_cases[] = {
#define XX(name, value, msg) {ADMIT_##name, "ADMIT_" #name, msg},
    ADMIT_ERRNO_MAP(XX)
#undef XX
};
#define NERR (sizeof(err_cases) / sizeof(err_cases[0]))

static void test_every_error_code(void** state) {
  (void)state;
  assert_true(NERR >= 16);
  for (size_t i = 0; i < NERR; i++) {
    const err_case_t* c = &err_cases[i];
    /* Codes are negative and distinct. */
    assert_true(c->code < 0);
    for (size_t j = 0; j < i; j++)
      assert_int_not_equal(err_cases[j].code, c->code);
    assert_string_equal(admit_err_name(c->code), c->name);
    assert_string_equal(admit_strerror(c->code), c->msg);
    /* Messages are distinct, so a message identifies its code. */
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(err_cases[j].msg, c->msg);
    /* The code's own name and message, not the lookalike "unknown". */
    assert_string_not_equal(admit_strerror(c->code), "unknown error");
  }
  assert_string_equal(admit_err_name(ADMIT_OK), "ADMIT_OK");
  assert_string_equal(admit_strerror(ADMIT_OK), "success");
  assert_string_equal(admit_err_name(ADMIT_EINVAL), "ADMIT_EINVAL");
  assert_string_equal(admit_strerror(ADMIT_EINVAL), "invalid argument");
  assert_string_equal(admit_err_name(ADMIT_ESYS), "ADMIT_ESYS");
}

static void test_unknown_error_codes(void** state) {
  (void)state;
  int lowest = 0;
  for (size_t i = 0; i < NERR; i++)
    if (err_cases[i].code < lowest) lowest = err_cases[i].code;
  const int unknown[] = {1,    2,       4096,    INT_MAX,     lowest - 1,
                         -100, INT_MIN, INT_MIN + 1, -1000000};
  for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    assert_string_equal(admit_strerror(unknown[i]), "unknown error");
    assert_string_equal(admit_err_name(unknown[i]), "ADMIT_UNKNOWN");
  }
}

/* --- version --------------------------------------------------------------*/

static void test_version(void** state) {
  (void)state;
  assert_int_equal(admit_version(), ADMIT_VERSION_HEX);
  assert_int_equal(ADMIT_VERSION_HEX, (ADMIT_VERSION_MAJOR << 16) |
                                          (ADMIT_VERSION_MINOR << 8) |
                                          ADMIT_VERSION_PATCH);
  char want[32];
  snprintf(want, sizeof(want), "%d.%d.%d", ADMIT_VERSION_MAJOR,
           ADMIT_VERSION_MINOR, ADMIT_VERSION_PATCH);
  assert_string_equal(admit_version_string(), want);
  /* The string and the number agree. */
  unsigned major, minor, patch;
  assert_int_equal(
      sscanf(admit_version_string(), "%u.%u.%u", &major, &minor, &patch), 3);
  assert_int_equal((major << 16) | (minor << 8) | patch, admit_version());
}

/* --- clock ----------------------------------------------------------------*/

static void test_now_monotonic(void** state) {
  (void)state;
  uint64_t prev = admit_now_ns();
  assert_true(prev > 0);
  for (int i = 0; i < 200000; i++) {
    uint64_t now = admit_now_ns();
    if (now < prev)
      fail_msg("clock went back: %llu after %llu", (unsigned long long)now,
               (unsigned long long)prev);
    prev = now;
  }
}

static void test_sleep_at_least(void** state) {
  (void)state;
  static const uint64_t asks[] = {1, 1000, 50000, 1000000, 3000000,
                                  ADMIT_SECOND / 50};
  for (size_t i = 0; i < sizeof(asks) / sizeof(asks[0]); i++) {
    uint64_t t0 = admit_now_ns();
    admit_sleep_ns(asks[i]);
    uint64_t slept = admit_now_ns() - t0;
    if (slept < asks[i])
      fail_msg("asked %llu ns, slept %llu", (unsigned long long)asks[i],
               (unsigned long long)slept);
  }
  /* Zero returns at once without a system call (no bound asserted). */
  admit_sleep_ns(0);
}

/* A sleep interrupted by signals still lasts at least as asked. */
static void on_usr1(int sig) { (void)sig; }

typedef struct sleeper_s {
  uint64_t ask;
  uint64_t slept;
  _Atomic int started;
} sleeper_t;

static void* sleeper_main(void* arg) {
  sleeper_t* s = arg;
  atomic_store(&s->started, 1);
  uint64_t t0 = admit_now_ns();
  admit_sleep_ns(s->ask);
  s->slept = admit_now_ns() - t0;
  return NULL;
}

static void test_sleep_eintr(void** state) {
  (void)state;
  struct sigaction sa, old;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_usr1; /* no SA_RESTART: the sleep sees EINTR */
  sigemptyset(&sa.sa_mask);
  assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
  sleeper_t s = {.ask = 30 * (uint64_t)ADMIT_MILLISECOND};
  atomic_init(&s.started, 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, sleeper_main, &s), 0);
  while (!atomic_load(&s.started)) admit_sleep_ns(100000);
  for (int i = 0; i < 10; i++) {
    pthread_kill(t, SIGUSR1);
    admit_sleep_ns(ADMIT_MILLISECOND);
  }
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
  if (s.slept < s.ask)
    fail_msg("asked %llu ns, slept %llu", (unsigned long long)s.ask,
             (unsigned long long)s.slept);
}

/* --- allocator ------------------------------------------------------------*/

static _Atomic int n_malloc, n_realloc, n_calloc, n_free;

static void* count_malloc(size_t size) {
  atomic_fetch_add(&n_malloc, 1);
  return malloc(size);
}

static void* count_realloc(void* p, size_t size) {
  atomic_fetch_add(&n_realloc, 1);
  return realloc(p, size);
}

static void* count_calloc(size_t n, size_t size) {
  atomic_fetch_add(&n_calloc, 1);
  return calloc(n, size);
}

static void count_free(void* p) {
  atomic_fetch_add(&n_free, 1);
  free(p);
}

static void test_replace_allocator_rejects_null(void** state) {
  (void)state;
  assert_int_equal(admit_replace_allocator(NULL, realloc, calloc, free),
                   ADMIT_EINVAL);
  assert_int_equal(admit_replace_allocator(malloc, NULL, calloc, free),
                   ADMIT_EINVAL);
  assert_int_equal(admit_replace_allocator(malloc, realloc, NULL, free),
                   ADMIT_EINVAL);
  assert_int_equal(admit_replace_allocator(malloc, realloc, calloc, NULL),
                   ADMIT_EINVAL);
  assert_int_equal(admit_replace_allocator(NULL, NULL, NULL, NULL),
                   ADMIT_EINVAL);
  /* A rejected call changed nothing: the counters stay at zero below. */
  atomic_store(&n_malloc, 0);
  atomic_store(&n_free, 0);
  assert_int_equal(admit_replace_allocator(count_malloc, NULL, count_calloc,
                                           count_free),
                   ADMIT_EINVAL);
  void* p = admit__malloc(16);
  assert_non_null(p);
  admit__free(p);
  assert_int_equal(atomic_load(&n_malloc), 0);
  assert_int_equal(atomic_load(&n_free), 0);
}

/* The allocator is process-global: each test that replaces it restores
 * malloc/realloc/calloc/free, even when an assertion fails. */
static int restore_allocator(void** state) {
  (void)state;
  return admit_replace_allocator(malloc, realloc, calloc, free);
}

static void test_replace_allocator_used(void** state) {
  (void)state;
  atomic_store(&n_malloc, 0);
  atomic_store(&n_realloc, 0);
  atomic_store(&n_calloc, 0);
  atomic_store(&n_free, 0);
  assert_int_equal(admit_replace_allocator(count_malloc, count_realloc,
                                           count_calloc, count_free),
                   0);
  char* p = admit__malloc(10);
  assert_non_null(p);
  memcpy(p, "0123456789", 10);
  p = admit__realloc(p, 1000);
  assert_non_null(p);
  assert_memory_equal(p, "0123456789", 10);
  int* z = admit__calloc(8, sizeof(int));
  assert_non_null(z);
  for (int i = 0; i < 8; i++) assert_int_equal(z[i], 0);
  admit__free(p);
  admit__free(z);
  admit__free(NULL); /* a no-op that never reaches the allocator */
  assert_int_equal(atomic_load(&n_malloc), 1);
  assert_int_equal(atomic_load(&n_realloc), 1);
  assert_int_equal(atomic_load(&n_calloc), 1);
  assert_int_equal(atomic_load(&n_free), 2);
  /* After restoring, the counters no longer move. */
  assert_int_equal(restore_allocator(NULL), 0);
  p = admit__malloc(10);
  admit__free(p);
  assert_int_equal(atomic_load(&n_malloc), 1);
  assert_int_equal(atomic_load(&n_free), 2);
}

/* A public object goes through the replaced allocator too. */
static void test_replace_allocator_public_api(void** state) {
  (void)state;
  admit_quota_t q;
  assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "10/s", NULL),
                   0);
  atomic_store(&n_malloc, 0);
  atomic_store(&n_realloc, 0);
  atomic_store(&n_calloc, 0);
  atomic_store(&n_free, 0);
  assert_int_equal(admit_replace_allocator(count_malloc, count_realloc,
                                           count_calloc, count_free),
                   0);
  admit_limiter_t* l = NULL;
  assert_int_equal(admit_limiter_new(&l, &q, NULL), 0);
  int allocs = atomic_load(&n_malloc) + atomic_load(&n_calloc) +
               atomic_load(&n_realloc);
  assert_true(allocs >= 1);
  assert_int_equal(atomic_load(&n_free), 0);
  admit_limiter_free(l);
  assert_int_equal(atomic_load(&n_free),
                   atomic_load(&n_malloc) + atomic_load(&n_calloc));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_error_code),
      cmocka_unit_test(test_unknown_error_codes),
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_now_monotonic),
      cmocka_unit_test(test_sleep_at_least),
      cmocka_unit_test(test_sleep_eintr),
      cmocka_unit_test_teardown(test_replace_allocator_rejects_null,
                                restore_allocator),
      cmocka_unit_test_teardown(test_replace_allocator_used,
                                restore_allocator),
      cmocka_unit_test_teardown(test_replace_allocator_public_api,
                                restore_allocator),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
