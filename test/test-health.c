/* Readiness with hysteresis on simulated time, liveness, the JSON body and
 * the Prometheus text exposition (checked line by line). */
#include "helpers.h"

#include <stdio.h>

#define MS ((uint64_t)ADMIT_MILLISECOND)
#define SEC ((uint64_t)ADMIT_SECOND)

static fake_clock_t fc;
static admit_clock_t clk;

static void nop_cb(void* ud, uint64_t ticket, int status) {
  (void)ud;
  (void)ticket;
  (void)status;
}

/* An admission controller of 2 slots on the fake clock, never shedding. */
static admit_admission_t* two_slot_admission(void) {
  admit_admission_options_t ao = {0};
  ao.max_in_flight = 2;
  ao.no_shedding = 1;
  ao.clock = &clk;
  admit_admission_t* a = NULL;
  assert_int_equal(admit_admission_new(&a, &ao), 0);
  return a;
}

static void test_bad_args(void** state) {
  (void)state;
  admit_health_t* h = NULL;
  admit_health_options_t o = {0};
  assert_int_equal(admit_health_new(NULL, NULL), ADMIT_EINVAL);
  o.max_error_rate = -1;
  assert_int_equal(admit_health_new(&h, &o), ADMIT_EINVAL);
  o.max_error_rate = 0.5;
  o.ready_error_rate = 0.6;
  assert_int_equal(admit_health_new(&h, &o), ADMIT_EINVAL);
  o.ready_error_rate = 0;
  o.max_waiting = 10;
  o.ready_waiting = 11;
  assert_int_equal(admit_health_new(&h, &o), ADMIT_EINVAL);
  assert_null(h);
  admit_health_free(NULL);
  assert_int_equal(admit_health_check(NULL, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_health_alive(NULL), ADMIT_EINVAL);
  assert_int_equal(admit_health_add_guard(NULL, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_health_render_json(NULL, NULL, 0), ADMIT_EINVAL);
  assert_int_equal(admit_health_render_metrics(NULL, NULL, 0), ADMIT_EINVAL);
  assert_int_equal(admit_health_new(&h, NULL), 0);
  assert_int_equal(admit_health_add_guard(h, NULL), ADMIT_EINVAL);
  assert_int_equal(admit_health_add_admission(h, NULL, "x"), ADMIT_EINVAL);
  assert_int_equal(admit_health_add_breaker(h, NULL, "x"), ADMIT_EINVAL);
  assert_int_equal(admit_health_add_redis(h, NULL), ADMIT_EINVAL);
  admit_breaker_t* b = NULL;
  assert_int_equal(admit_breaker_new(&b, NULL), 0);
  assert_int_equal(admit_health_add_breaker(h, b, NULL), ADMIT_EINVAL);
  char longname[200];
  memset(longname, 'n', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  assert_int_equal(admit_health_add_breaker(h, b, longname), ADMIT_EINVAL);
  assert_int_equal(admit_health_render_metrics(h, NULL, 5), ADMIT_EINVAL);
  assert_int_equal(admit_health_alive(h), 1);
  /* Nothing added: ready, and the exposition still has the verdict. */
  admit_health_snapshot_t s;
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.redis_degraded, -1);
  char buf[256];
  int n = admit_health_render_metrics(h, buf, sizeof(buf));
  assert_true(n > 0 && (size_t)n < sizeof(buf));
  assert_string_equal(buf,
                      "# HELP admit_ready 1 if the last readiness check said "
                      "ready.\n# TYPE admit_ready gauge\nadmit_ready 1\n");
  assert_string_equal(admit_health_reason_name(ADMIT_HEALTH_SATURATED),
                      "overloaded");
  assert_string_equal(admit_health_reason_name(ADMIT_HEALTH_ERRORS),
                      "high errors");
  assert_string_equal(admit_health_reason_name(42), "unknown");
  admit_health_free(h);
  admit_breaker_free(b);
}

/* The seed's "overloaded": capacity all in use and more than 80 waiting...
 * here 3; ready again only at or below 1 waiting and after the hold. */
static void test_saturation_hysteresis(void** state) {
  (void)state;
  clk = fake_clock(&fc, 1000 * SEC);
  admit_admission_t* a = two_slot_admission();
  admit_health_options_t ho = {0};
  ho.max_waiting = 3;
  ho.ready_waiting = 1;
  ho.hold_ns = 10 * SEC;
  ho.clock = &clk;
  admit_health_t* h = NULL;
  assert_int_equal(admit_health_new(&h, &ho), 0);
  assert_int_equal(admit_health_add_admission(h, a, "asgi"), 0);
  admit_admission_permit_t p[6];
  for (int i = 0; i < 6; i++) {
    int rc = admit_admission_enter_async(a, 1, &p[i], nop_cb, NULL);
    assert_int_equal(rc, i < 2 ? 1 : 0);
    admit_health_snapshot_t s;
    /* Up to 3 waiting is fine; the 4th makes it saturated. */
    assert_int_equal(admit_health_check(h, &s), i < 5 ? 1 : 0);
  }
  admit_health_snapshot_t s;
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.reason, ADMIT_HEALTH_SATURATED);
  assert_int_equal(s.in_flight, 2);
  assert_int_equal(s.waiting, 4);
  assert_int_equal(s.capacity, 2);
  assert_int_equal(s.transitions, 1);
  assert_int_equal(s.state_since_ns, 1000 * SEC);
  /* 2 waiting: below the limit, above the recovery level: not ready. */
  fake_advance(&fc, 20 * SEC);
  admit_admission_leave(a, &p[0], ADMIT_OUTCOME_SUCCESS);
  admit_admission_leave(a, &p[1], ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.waiting, 2);
  assert_int_equal(s.reason, ADMIT_HEALTH_RECOVERING);
  /* 1 waiting and the hold long over: ready again. */
  admit_admission_leave(a, &p[2], ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.reason, ADMIT_HEALTH_OK);
  assert_int_equal(s.transitions, 2);
  /* Flapping load: saturated again, then drained at once; the hold keeps
   * it not ready for 10 s. */
  admit_admission_permit_t q[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(admit_admission_enter_async(a, 1, &q[i], nop_cb, NULL),
                     0);
  assert_int_equal(admit_health_check(h, &s), 0); /* 4 waiting */
  for (int i = 3; i < 6; i++)
    admit_admission_leave(a, &p[i], ADMIT_OUTCOME_SUCCESS);
  for (int i = 0; i < 3; i++)
    admit_admission_leave(a, &q[i], ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.waiting, 0);
  assert_int_equal(s.reason, ADMIT_HEALTH_RECOVERING);
  fake_advance(&fc, 10 * SEC - 1);
  assert_int_equal(admit_health_check(h, &s), 0);
  fake_advance(&fc, 1);
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.transitions, 4);
  admit_health_free(h);
  admit_admission_free(a);
}

/* Saturation is per component: an admission controller full with a long
 * backlog makes the pod not ready even beside an idle guard whose spare
 * capacity would hide it in the sums; a semaphore shared by two guards is
 * counted once. */
static void test_saturation_per_component(void** state) {
  (void)state;
  clk = fake_clock(&fc, 1000 * SEC);
  admit_admission_t* a = two_slot_admission();
  admit_semaphore_options_t so = {0};
  so.capacity = 10;
  admit_semaphore_t* sem = NULL;
  assert_int_equal(admit_semaphore_new(&sem, &so), 0);
  admit_guard_options_t go = {0};
  go.name = "idle";
  go.semaphore = sem;
  go.clock = &clk;
  admit_guard_t* g1 = NULL;
  admit_guard_t* g2 = NULL;
  assert_int_equal(admit_guard_new(&g1, &go), 0);
  go.name = "idle2";
  assert_int_equal(admit_guard_new(&g2, &go), 0);
  admit_health_options_t ho = {0};
  ho.max_waiting = 3;
  ho.ready_waiting = 1;
  ho.hold_ns = 1;
  ho.clock = &clk;
  admit_health_t* h = NULL;
  assert_int_equal(admit_health_new(&h, &ho), 0);
  assert_int_equal(admit_health_add_guard(h, g1), 0);
  assert_int_equal(admit_health_add_admission(h, a, "asgi"), 0);
  assert_int_equal(admit_health_add_guard(h, g2), 0);
  admit_admission_permit_t p[6];
  for (int i = 0; i < 6; i++)
    assert_int_equal(admit_admission_enter_async(a, 1, &p[i], nop_cb, NULL),
                     i < 2 ? 1 : 0);
  /* One guard call running: the guard is far from full. */
  admit_guard_permit_t gp;
  assert_int_equal(admit_guard_enter(g1, &gp, SEC), 0);
  admit_health_snapshot_t s;
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.reason, ADMIT_HEALTH_SATURATED);
  /* The sums, for display: the shared semaphore's 10 once. */
  assert_int_equal(s.in_flight, 3);
  assert_int_equal(s.waiting, 4);
  assert_int_equal(s.capacity, 12);
  /* The backlog drains to 1: ready again. */
  for (int i = 0; i < 3; i++)
    admit_admission_leave(a, &p[i], ADMIT_OUTCOME_SUCCESS);
  fake_advance(&fc, 1);
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.waiting, 1);
  assert_int_equal(s.in_flight, 3);
  for (int i = 3; i < 6; i++)
    admit_admission_leave(a, &p[i], ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(admit_guard_leave(&gp, ADMIT_OUTCOME_SUCCESS), 0);
  admit_health_free(h);
  admit_guard_free(g1);
  admit_guard_free(g2);
  admit_semaphore_free(sem);
  admit_admission_free(a);
}

static void run_calls(admit_guard_t* g, int n, int outcome) {
  for (int i = 0; i < n; i++) {
    admit_guard_permit_t p;
    assert_int_equal(admit_guard_enter(g, &p, SEC), 0);
    assert_int_equal(admit_guard_leave(&p, outcome), 0);
  }
}

/* The seed's "high errors": above 0.5 over recent calls (with enough
 * calls), ready again at or below 0.25 after the hold. */
static void test_error_rate(void** state) {
  (void)state;
  clk = fake_clock(&fc, 1000 * SEC);
  admit_guard_options_t go = {0};
  go.name = "llm";
  go.window_ns = 1000 * SEC;
  go.clock = &clk;
  admit_guard_t* g = NULL;
  assert_int_equal(admit_guard_new(&g, &go), 0);
  admit_health_options_t ho = {0};
  ho.hold_ns = 5 * SEC;
  ho.clock = &clk;
  admit_health_t* h = NULL;
  assert_int_equal(admit_health_new(&h, &ho), 0);
  assert_int_equal(admit_health_add_guard(h, g), 0);
  admit_health_snapshot_t s;
  run_calls(g, 9, ADMIT_OUTCOME_FAILURE); /* under min_calls (10) */
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.recent_errors, 9);
  run_calls(g, 1, ADMIT_OUTCOME_SUCCESS); /* 9/10 */
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.reason, ADMIT_HEALTH_ERRORS);
  run_calls(g, 20, ADMIT_OUTCOME_SUCCESS); /* 9/30 = 0.3 */
  fake_advance(&fc, 6 * SEC);
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.reason, ADMIT_HEALTH_RECOVERING);
  run_calls(g, 6, ADMIT_OUTCOME_TIMEOUT); /* 15/36 > 0.25 */
  run_calls(g, 25, ADMIT_OUTCOME_VENDOR_LIMITED); /* not errors: 15/61 */
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.recent_calls, 61);
  assert_int_equal(s.recent_errors, 15);
  assert_true(s.error_rate > 0.245 && s.error_rate < 0.246);
  assert_int_equal(s.in_flight, 0);
  assert_int_equal(s.capacity, 0);
  admit_health_free(h);
  admit_guard_free(g);
}

/* Breakers are reported; they fail readiness only when asked to. */
static void test_breakers(void** state) {
  (void)state;
  clk = fake_clock(&fc, 1000 * SEC);
  admit_breaker_options_t bo = {0};
  bo.clock = &clk;
  admit_breaker_t *b1 = NULL, *b2 = NULL;
  assert_int_equal(admit_breaker_new(&b1, &bo), 0);
  assert_int_equal(admit_breaker_new(&b2, &bo), 0);
  admit_guard_options_t go = {0};
  go.breaker = b2;
  go.clock = &clk;
  admit_guard_t* g = NULL;
  assert_int_equal(admit_guard_new(&g, &go), 0);
  admit_health_options_t ho = {0};
  ho.clock = &clk;
  ho.hold_ns = 1;
  admit_health_t* h = NULL;
  assert_int_equal(admit_health_new(&h, &ho), 0);
  admit_health_add_breaker(h, b1, "search");
  admit_health_add_guard(h, g);
  admit_breaker_trip(b1);
  admit_health_snapshot_t s;
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.breakers, 2);
  assert_int_equal(s.breakers_open, 1);
  admit_health_free(h);
  ho.fail_on_open_breaker = 1;
  assert_int_equal(admit_health_new(&h, &ho), 0);
  admit_health_add_breaker(h, b1, "search");
  admit_health_add_guard(h, g);
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.reason, ADMIT_HEALTH_BREAKER_OPEN);
  fake_advance(&fc, 60 * SEC); /* b1 half-open now */
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.breakers_half_open, 1);
  admit_health_free(h);
  admit_guard_free(g);
  admit_breaker_free(b1);
  admit_breaker_free(b2);
}

/* A Redis connection that cannot connect is reported as degraded; it fails
 * readiness only when asked to. */
static void test_redis_degraded(void** state) {
  (void)state;
  admit_redis_options_t ro = {0};
  ro.url = "redis://127.0.0.1:1/0"; /* nothing listens there */
  ro.connect_timeout_ns = 100 * MS;
  admit_redis_t* r = NULL;
  assert_int_equal(admit_redis_new(&r, &ro), 0);
  admit_health_options_t ho = {0};
  admit_health_t* h = NULL;
  assert_int_equal(admit_health_new(&h, &ho), 0);
  assert_int_equal(admit_health_add_redis(h, r), 0);
  admit_health_snapshot_t s;
  assert_int_equal(admit_health_check(h, &s), 1);
  assert_int_equal(s.redis_degraded, 1);
  char buf[2048];
  int n = admit_health_render_metrics(h, buf, sizeof(buf));
  assert_true(n > 0 && (size_t)n < sizeof(buf));
  assert_non_null(strstr(buf, "admit_redis_connected{redis=\"0\"} 0\n"));
  admit_health_free(h);
  ho.fail_on_degraded = 1;
  assert_int_equal(admit_health_new(&h, &ho), 0);
  assert_int_equal(admit_health_add_redis(h, r), 0);
  assert_int_equal(admit_health_check(h, &s), 0);
  assert_int_equal(s.reason, ADMIT_HEALTH_DEGRADED);
  admit_health_free(h);
  admit_redis_free(r);
}

static void test_json(void** state) {
  (void)state;
  admit_health_snapshot_t s;
  memset(&s, 0, sizeof(s));
  s.ready = 0;
  s.reason = ADMIT_HEALTH_SATURATED;
  s.in_flight = 50;
  s.waiting = 81;
  s.capacity = 50;
  s.recent_calls = 200;
  s.recent_errors = 3;
  s.error_rate = 0.015;
  s.breakers_open = 1;
  s.redis_degraded = -1;
  const char* want =
      "{\"status\":\"overloaded\",\"ready\":false,\"in_flight\":50,"
      "\"waiting\":81,\"capacity\":50,\"recent_calls\":200,"
      "\"recent_errors\":3,\"error_rate\":0.0150,\"breakers_open\":1,"
      "\"breakers_half_open\":0,\"redis_degraded\":null}";
  char buf[512];
  int n = admit_health_render_json(&s, buf, sizeof(buf));
  assert_int_equal(n, (int)strlen(want));
  assert_string_equal(buf, want);
  /* Too small: cut, NUL-terminated, and the full length reported. */
  char small[10];
  assert_int_equal(admit_health_render_json(&s, small, sizeof(small)), n);
  assert_string_equal(small, "{\"status\"");
  assert_int_equal(admit_health_render_json(&s, NULL, 0), n);
  s.ready = 1;
  s.reason = ADMIT_HEALTH_OK;
  s.redis_degraded = 0;
  n = admit_health_render_json(&s, buf, sizeof(buf));
  assert_non_null(strstr(buf, "\"status\":\"ready\",\"ready\":true"));
  assert_non_null(strstr(buf, "\"redis_degraded\":false}"));
}

/* --- a line-by-line check of the text exposition format ----------------- */

typedef struct family_s {
  char name[96];
  char type[16];
} family_t;

static int starts_with(const char* s, const char* p) {
  return strncmp(s, p, strlen(p)) == 0;
}

/* Validates @p text; returns the number of samples. Every family has HELP
 * then TYPE, appears once, and owns the samples that follow it;
 * histogram buckets are cumulative and end with +Inf equal to _count. */
static int check_exposition(const char* text) {
  family_t fams[128];
  int nf = 0, samples = 0;
  family_t* cur = NULL;
  uint64_t last_bucket = 0;
  int in_buckets = 0;
  uint64_t inf_value = 0;
  const char* line = text;
  assert_true(text[strlen(text) - 1] == '\n');
  while (*line != '\0') {
    const char* end = strchr(line, '\n');
    assert_non_null(end);
    char buf[512];
    size_t len = (size_t)(end - line);
    assert_true(len < sizeof(buf));
    memcpy(buf, line, len);
    buf[len] = '\0';
    if (starts_with(buf, "# HELP ")) {
      char name[96];
      assert_int_equal(sscanf(buf, "# HELP %95s", name), 1);
      for (int i = 0; i < nf; i++) assert_string_not_equal(fams[i].name, name);
      assert_true(nf < 128);
      cur = &fams[nf++];
      snprintf(cur->name, sizeof(cur->name), "%s", name);
      cur->type[0] = '\0';
    } else if (starts_with(buf, "# TYPE ")) {
      char name[96], type[16];
      assert_int_equal(sscanf(buf, "# TYPE %95s %15s", name, type), 2);
      assert_non_null(cur);
      assert_string_equal(name, cur->name);
      assert_true(strcmp(type, "counter") == 0 ||
                  strcmp(type, "gauge") == 0 ||
                  strcmp(type, "histogram") == 0);
      if (strcmp(type, "counter") == 0)
        assert_true(strlen(name) > 6 &&
                    strcmp(name + strlen(name) - 6, "_total") == 0);
      snprintf(cur->type, sizeof(cur->type), "%s", type);
    } else {
      assert_non_null(cur);
      assert_true(cur->type[0] != '\0');
      samples++;
      /* The sample's name is the family's (plus a histogram suffix). */
      assert_true(starts_with(buf, cur->name));
      const char* rest = buf + strlen(cur->name);
      if (strcmp(cur->type, "histogram") == 0) {
        uint64_t v = 0;
        const char* sp = strrchr(buf, ' ');
        assert_non_null(sp);
        if (starts_with(rest, "_bucket{")) {
          v = strtoull(sp + 1, NULL, 10);
          if (!in_buckets) last_bucket = 0;
          assert_true(v >= last_bucket);
          last_bucket = v;
          in_buckets = 1;
          if (strstr(rest, "le=\"+Inf\"") != NULL) inf_value = v;
        } else if (starts_with(rest, "_sum")) {
          assert_true(in_buckets);
          in_buckets = 0;
          assert_non_null(strchr(sp + 1, '.'));
        } else {
          assert_true(starts_with(rest, "_count"));
          v = strtoull(sp + 1, NULL, 10);
          assert_int_equal(v, inf_value);
        }
      } else {
        assert_true(rest[0] == '{' || rest[0] == ' ');
      }
      /* Labels are closed and the value is a number. */
      const char* sp = strrchr(buf, ' ');
      assert_non_null(sp);
      char* endp = NULL;
      (void)strtod(sp + 1, &endp);
      assert_true(endp != NULL && *endp == '\0');
    }
    line = end + 1;
  }
  return samples;
}

static void test_metrics_exposition(void** state) {
  (void)state;
  clk = fake_clock(&fc, 1000 * SEC);
  admit_breaker_options_t bo = {0};
  bo.clock = &clk;
  admit_breaker_t* b = NULL;
  assert_int_equal(admit_breaker_new(&b, &bo), 0);
  admit_semaphore_options_t so = {0};
  so.capacity = 4;
  admit_semaphore_t* sem = NULL;
  assert_int_equal(admit_semaphore_new(&sem, &so), 0);
  admit_guard_options_t go = {0};
  go.name = "ven\"dor\\x";
  go.breaker = b;
  go.semaphore = sem;
  go.clock = &clk;
  admit_guard_t* g = NULL;
  assert_int_equal(admit_guard_new(&g, &go), 0);
  admit_guard_options_t go2 = {0};
  go2.name = "plain";
  go2.clock = &clk;
  admit_guard_t* g2 = NULL;
  assert_int_equal(admit_guard_new(&g2, &go2), 0);
  admit_admission_options_t ao = {0};
  ao.max_in_flight = 7;
  ao.clock = &clk;
  admit_admission_t* a = NULL;
  assert_int_equal(admit_admission_new(&a, &ao), 0);
  admit_health_t* h = NULL;
  assert_int_equal(admit_health_new(&h, NULL), 0);
  admit_health_add_guard(h, g);
  admit_health_add_guard(h, g2);
  admit_health_add_admission(h, a, "asgi");
  admit_health_add_breaker(h, b, "shared");
  /* One call of 5 ms, one of 2 s that fails, one refused by the pause. */
  admit_guard_permit_t p;
  assert_int_equal(admit_guard_enter(g, &p, SEC), 0);
  fake_advance(&fc, 5 * MS);
  admit_guard_leave(&p, ADMIT_OUTCOME_SUCCESS);
  assert_int_equal(admit_guard_enter(g, &p, SEC), 0);
  fake_advance(&fc, 2 * SEC);
  admit_guard_leave(&p, ADMIT_OUTCOME_FAILURE);
  admit_guard_pause(g, 5 * SEC);
  assert_int_equal(admit_guard_enter(g, &p, SEC), ADMIT_ETIMEDOUT);
  admit_admission_permit_t ap;
  assert_int_equal(admit_admission_enter(a, 0, 0, &ap), 0);
  admit_health_check(h, NULL);

  int n = admit_health_render_metrics(h, NULL, 0);
  assert_true(n > 0);
  char* text = malloc((size_t)n + 1);
  assert_int_equal(admit_health_render_metrics(h, text, (size_t)n + 1), n);
  assert_int_equal(strlen(text), (size_t)n);
  int samples = check_exposition(text);
  assert_true(samples > 100);
  const char* want[] = {
      "# HELP admit_guard_admitted_total Attempts that passed every stage.\n"
      "# TYPE admit_guard_admitted_total counter\n"
      "admit_guard_admitted_total{guard=\"ven\\\"dor\\\\x\"} 2\n"
      "admit_guard_admitted_total{guard=\"plain\"} 0\n",
      "admit_guard_rejected_total{guard=\"ven\\\"dor\\\\x\",stage=\"pause\"} "
      "1\n",
      "admit_guard_calls_total{guard=\"ven\\\"dor\\\\x\",outcome=\"failure\"} "
      "1\n",
      "admit_guard_capacity{guard=\"ven\\\"dor\\\\x\"} 4\n",
      "admit_guard_pauses_total{guard=\"plain\"} 0\n",
      "admit_guard_breaker_state{guard=\"ven\\\"dor\\\\x\"} 0\n",
      "admit_guard_call_seconds_bucket{guard=\"ven\\\"dor\\\\x\",le=\"0.0025\"} "
      "0\n"
      "admit_guard_call_seconds_bucket{guard=\"ven\\\"dor\\\\x\",le=\"0.005\"} "
      "1\n",
      "admit_guard_call_seconds_bucket{guard=\"ven\\\"dor\\\\x\",le=\"1\"} 1\n"
      "admit_guard_call_seconds_bucket{guard=\"ven\\\"dor\\\\x\",le=\"2.5\"} "
      "2\n",
      "admit_guard_call_seconds_bucket{guard=\"ven\\\"dor\\\\x\",le=\"+Inf\"} "
      "2\n"
      "admit_guard_call_seconds_sum{guard=\"ven\\\"dor\\\\x\"} 2.005000000\n"
      "admit_guard_call_seconds_count{guard=\"ven\\\"dor\\\\x\"} 2\n",
      "admit_guard_queue_wait_seconds_bucket{guard=\"plain\",le=\"0.0001\"} "
      "0\n",
      "# TYPE admit_admission_limit gauge\n"
      "admit_admission_limit{controller=\"asgi\"} 7\n",
      "admit_admission_in_flight{controller=\"asgi\"} 1\n",
      "admit_admission_shed_total{controller=\"asgi\",reason=\"codel\"} 0\n",
      "admit_breaker_state{breaker=\"shared\"} 0\n",
      "admit_breaker_transitions_total{breaker=\"shared\",to=\"open\"} 0\n",
      "# TYPE admit_ready gauge\nadmit_ready 1\n",
  };
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    if (strstr(text, want[i]) == NULL) {
      fprintf(stderr, "missing:\n%s\nin:\n%s\n", want[i], text);
      fail();
    }
  }
  /* Too small a buffer: cut, NUL-terminated, same length reported. */
  char small[64];
  assert_int_equal(admit_health_render_metrics(h, small, sizeof(small)), n);
  assert_int_equal(strlen(small), sizeof(small) - 1);
  assert_memory_equal(small, text, sizeof(small) - 1);
  free(text);
  admit_admission_leave(a, &ap, ADMIT_OUTCOME_SUCCESS);
  admit_health_free(h);
  admit_admission_free(a);
  admit_guard_free(g2);
  admit_guard_free(g);
  admit_semaphore_free(sem);
  admit_breaker_free(b);
}

static void test_histogram_bounds(void** state) {
  (void)state;
  assert_int_equal(admit_histogram_bound_ns(0), 100 * ADMIT_MICROSECOND);
  assert_int_equal(admit_histogram_bound_ns(17), 60 * SEC);
  assert_int_equal(admit_histogram_bound_ns(18), UINT64_MAX);
  assert_int_equal(admit_histogram_bound_ns(1000), UINT64_MAX);
  for (unsigned i = 1; i < ADMIT_HISTOGRAM_BUCKETS; i++)
    assert_true(admit_histogram_bound_ns(i) > admit_histogram_bound_ns(i - 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_saturation_hysteresis),
      cmocka_unit_test(test_saturation_per_component),
      cmocka_unit_test(test_error_rate),
      cmocka_unit_test(test_breakers),
      cmocka_unit_test(test_redis_degraded),
      cmocka_unit_test(test_json),
      cmocka_unit_test(test_metrics_exposition),
      cmocka_unit_test(test_histogram_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
