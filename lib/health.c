/* Readiness with hysteresis, liveness, and Prometheus text exposition of
 * every registered guard, admission controller, breaker and Redis
 * connection. */
#include "metrics.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define NAME_MAX_LEN 128

/* Defined in guard.c: the guard's borrowed semaphore (NULL if none). */
admit_semaphore_t* admit__guard_semaphore(const admit_guard_t* g);

enum { SRC_GUARD, SRC_ADMISSION, SRC_BREAKER, SRC_REDIS };

typedef struct src_s {
  int kind;
  void* p;
  char name[NAME_MAX_LEN + 1];
} src_t;

struct admit_health_s {
  pthread_mutex_t mu;
  admit__clock_t clock;
  uint64_t max_waiting, ready_waiting;
  double max_error_rate, ready_error_rate;
  uint32_t min_calls;
  uint64_t hold;
  int fail_on_open_breaker;
  int fail_on_degraded;
  src_t* src;
  size_t n, cap;
  /* The verdict, under mu. */
  int ready;
  int reason;
  uint64_t since;
  uint64_t transitions;
};

static const char* const reason_names[] = {
    "ready",        "overloaded",       "high errors",
    "breaker open", "backend degraded", "recovering"};

const char* admit_health_reason_name(int reason) {
  if (reason < 0 || reason > ADMIT_HEALTH_RECOVERING) return "unknown";
  return reason_names[reason];
}

int admit_health_new(admit_health_t** out, const admit_health_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  admit_health_options_t o = {0};
  if (opts != NULL) o = *opts;
  if (!(o.max_error_rate >= 0) || !(o.ready_error_rate >= 0)) return ADMIT_EINVAL;
  uint64_t max_waiting = o.max_waiting ? o.max_waiting : 80;
  uint64_t ready_waiting = o.ready_waiting ? o.ready_waiting : max_waiting / 2;
  double max_rate = o.max_error_rate > 0 ? o.max_error_rate : 0.5;
  double ready_rate = o.ready_error_rate > 0 ? o.ready_error_rate
                                             : max_rate / 2;
  if (ready_waiting > max_waiting || ready_rate > max_rate) return ADMIT_EINVAL;
  admit_health_t* h = admit__calloc(1, sizeof(*h));
  if (h == NULL) return ADMIT_ENOMEM;
  if (pthread_mutex_init(&h->mu, NULL) != 0) {
    admit__free(h);
    return ADMIT_ENOMEM;
  }
  admit__clock_init(&h->clock, o.clock);
  h->max_waiting = max_waiting;
  h->ready_waiting = ready_waiting;
  h->max_error_rate = max_rate;
  h->ready_error_rate = ready_rate;
  h->min_calls = o.min_calls ? o.min_calls : 10;
  h->hold = o.hold_ns ? o.hold_ns : 10ull * ADMIT_SECOND;
  h->fail_on_open_breaker = o.fail_on_open_breaker;
  h->fail_on_degraded = o.fail_on_degraded;
  h->ready = 1;
  h->reason = ADMIT_HEALTH_OK;
  h->since = admit__clock_now(&h->clock);
  *out = h;
  return 0;
}

void admit_health_free(admit_health_t* h) {
  if (h == NULL) return;
  pthread_mutex_destroy(&h->mu);
  admit__free(h->src);
  admit__free(h);
}

static int add(admit_health_t* h, int kind, void* p, const char* name) {
  if (h == NULL || p == NULL) return ADMIT_EINVAL;
  if (name != NULL && strlen(name) > NAME_MAX_LEN) return ADMIT_EINVAL;
  pthread_mutex_lock(&h->mu);
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 8;
    src_t* s = admit__realloc(h->src, cap * sizeof(*s));
    if (s == NULL) {
      pthread_mutex_unlock(&h->mu);
      return ADMIT_ENOMEM;
    }
    h->src = s;
    h->cap = cap;
  }
  src_t* s = &h->src[h->n++];
  s->kind = kind;
  s->p = p;
  snprintf(s->name, sizeof(s->name), "%s", name ? name : "");
  pthread_mutex_unlock(&h->mu);
  return 0;
}

int admit_health_add_guard(admit_health_t* h, admit_guard_t* g) {
  return add(h, SRC_GUARD, g, g ? admit_guard_name(g) : NULL);
}

int admit_health_add_admission(admit_health_t* h, admit_admission_t* a,
                               const char* name) {
  if (name == NULL) return ADMIT_EINVAL;
  return add(h, SRC_ADMISSION, a, name);
}

int admit_health_add_breaker(admit_health_t* h, admit_breaker_t* b,
                             const char* name) {
  if (name == NULL) return ADMIT_EINVAL;
  return add(h, SRC_BREAKER, b, name);
}

int admit_health_add_redis(admit_health_t* h, admit_redis_t* r) {
  return add(h, SRC_REDIS, r, NULL);
}

static void count_breaker(admit_health_snapshot_t* s, int state) {
  if (state < 0) return;
  s->breakers++;
  if (state == ADMIT_BREAKER_OPEN) s->breakers_open++;
  if (state == ADMIT_BREAKER_HALF_OPEN) s->breakers_half_open++;
}

static void degraded(admit_health_snapshot_t* s, int d) {
  if (d > s->redis_degraded) s->redis_degraded = d;
}

/* What the verdict needs beyond the snapshot: whether any one component
 * is saturated, and the most waiting in one component. */
typedef struct load_s {
  bool saturated;
  uint64_t max_waiting;
} load_t;

/* One component: saturated when at capacity (or without one) with more
 * than max_waiting waiting. */
static void component(admit_health_t* h, load_t* l, uint64_t in_flight,
                      uint64_t waiting, uint64_t capacity) {
  if (waiting > h->max_waiting && (capacity == 0 || in_flight >= capacity))
    l->saturated = true;
  if (waiting > l->max_waiting) l->max_waiting = waiting;
}

/* Locked: a guard's component. Guards sharing a semaphore are one
 * component (decided at the first of them): their waiting summed, the
 * semaphore's use and capacity once. */
static void guard_component(admit_health_t* h, load_t* l, size_t i,
                            const admit_guard_metrics_t* m,
                            admit_health_snapshot_t* s) {
  admit_semaphore_t* sem = admit__guard_semaphore(h->src[i].p);
  if (sem == NULL) {
    s->capacity += m->capacity;
    component(h, l, m->in_flight, m->waiting, m->capacity);
    return;
  }
  for (size_t j = 0; j < i; j++)
    if (h->src[j].kind == SRC_GUARD &&
        admit__guard_semaphore(h->src[j].p) == sem)
      return; /* counted with an earlier guard */
  uint64_t waiting = m->waiting;
  for (size_t j = i + 1; j < h->n; j++) {
    admit_guard_metrics_t o;
    if (h->src[j].kind == SRC_GUARD &&
        admit__guard_semaphore(h->src[j].p) == sem &&
        admit_guard_metrics(h->src[j].p, &o) == 0)
      waiting += o.waiting;
  }
  s->capacity += m->capacity;
  component(h, l, m->capacity_in_use, waiting, m->capacity);
}

/* Locked: sums every source's figures into @p s and decides the load of
 * each component into @p l. */
static void gather(admit_health_t* h, admit_health_snapshot_t* s, load_t* l) {
  s->redis_degraded = -1;
  for (size_t i = 0; i < h->n; i++) {
    src_t* src = &h->src[i];
    switch (src->kind) {
      case SRC_GUARD: {
        admit_guard_metrics_t m;
        if (admit_guard_metrics(src->p, &m) != 0) break;
        s->in_flight += m.in_flight;
        s->waiting += m.waiting;
        guard_component(h, l, i, &m, s);
        s->recent_calls += m.recent_calls;
        s->recent_errors += m.recent_errors;
        count_breaker(s, m.breaker_state);
        degraded(s, m.global_degraded);
        break;
      }
      case SRC_ADMISSION: {
        admit_admission_stats_t st;
        if (admit_admission_stats(src->p, &st) != 0) break;
        s->in_flight += st.in_flight;
        s->waiting += st.waiting;
        s->capacity += st.limit;
        component(h, l, st.in_flight, st.waiting, st.limit);
        s->recent_calls += st.recent_calls;
        s->recent_errors += st.recent_errors;
        break;
      }
      case SRC_BREAKER:
        count_breaker(s, admit_breaker_state(src->p));
        break;
      default: {
        admit_redis_stats_t rs;
        if (admit_redis_stats(src->p, &rs) != 0) break;
        degraded(s, rs.connected == 0 ||
                            rs.breaker != ADMIT_REDIS_BREAKER_CLOSED
                        ? 1
                        : 0);
        break;
      }
    }
  }
  if (s->recent_calls > 0)
    s->error_rate = (double)s->recent_errors / (double)s->recent_calls;
}

int admit_health_check(admit_health_t* h, admit_health_snapshot_t* out) {
  if (h == NULL) return ADMIT_EINVAL;
  admit_health_snapshot_t s;
  memset(&s, 0, sizeof(s));
  pthread_mutex_lock(&h->mu);
  load_t load = {false, 0};
  gather(h, &s, &load);
  uint64_t now = admit__clock_now(&h->clock);
  bool rate_counts = s.recent_calls >= h->min_calls;
  bool breaker_bad = h->fail_on_open_breaker && s.breakers_open > 0;
  bool degraded_bad = h->fail_on_degraded && s.redis_degraded == 1;
  int fail = ADMIT_HEALTH_OK;
  /* The seed's test, per component: its semaphore (or limit) is all in
   * use and its queue is long. */
  if (load.saturated)
    fail = ADMIT_HEALTH_SATURATED;
  else if (rate_counts && s.error_rate > h->max_error_rate)
    fail = ADMIT_HEALTH_ERRORS;
  else if (breaker_bad)
    fail = ADMIT_HEALTH_BREAKER_OPEN;
  else if (degraded_bad)
    fail = ADMIT_HEALTH_DEGRADED;
  if (h->ready) {
    if (fail != ADMIT_HEALTH_OK) {
      h->ready = 0;
      h->reason = fail;
      h->since = now;
      h->transitions++;
    }
  } else {
    bool recovered = load.max_waiting <= h->ready_waiting &&
                     (!rate_counts || s.error_rate <= h->ready_error_rate) &&
                     !breaker_bad && !degraded_bad;
    if (recovered && now - h->since >= h->hold) {
      h->ready = 1;
      h->reason = ADMIT_HEALTH_OK;
      h->since = now;
      h->transitions++;
    } else {
      h->reason = fail != ADMIT_HEALTH_OK ? fail : ADMIT_HEALTH_RECOVERING;
    }
  }
  s.ready = h->ready;
  s.reason = (admit_health_reason_t)h->reason;
  s.state_since_ns = h->since;
  s.transitions = h->transitions;
  pthread_mutex_unlock(&h->mu);
  if (out != NULL) *out = s;
  return s.ready;
}

int admit_health_alive(const admit_health_t* h) {
  return h != NULL ? 1 : ADMIT_EINVAL;
}

static int text_result(const admit__text_t* t) {
  return t->len > (size_t)INT_MAX ? ADMIT_ENOMEM : (int)t->len;
}

int admit_health_render_json(const admit_health_snapshot_t* s, char* buf,
                             size_t size) {
  if (s == NULL || (buf == NULL && size > 0)) return ADMIT_EINVAL;
  admit__text_t t = {buf, size, 0};
  if (size > 0) buf[0] = '\0';
  admit__text_printf(
      &t,
      "{\"status\":\"%s\",\"ready\":%s,\"in_flight\":%" PRIu64
      ",\"waiting\":%" PRIu64 ",\"capacity\":%" PRIu64
      ",\"recent_calls\":%" PRIu64 ",\"recent_errors\":%" PRIu64
      ",\"error_rate\":%.4f,\"breakers_open\":%u,\"breakers_half_open\":%u"
      ",\"redis_degraded\":%s}",
      admit_health_reason_name(s->reason), s->ready ? "true" : "false",
      s->in_flight, s->waiting, s->capacity, s->recent_calls,
      s->recent_errors, s->error_rate, s->breakers_open,
      s->breakers_half_open,
      s->redis_degraded < 0 ? "null"
                            : (s->redis_degraded ? "true" : "false"));
  return text_result(&t);
}

/* --- Prometheus exposition ---------------------------------------------- */

typedef struct snap_s {
  int kind;
  const char* name;
  union {
    admit_guard_metrics_t g;
    admit_admission_stats_t a;
    admit_breaker_stats_t b;
    admit_redis_stats_t r;
  } u;
} snap_t;

/* One sample: name{label="value"[,extra="evalue"]} v. */
static void sample(admit__text_t* t, const char* name, const char* label,
                   const char* value, const char* extra, const char* evalue,
                   uint64_t v) {
  admit__text_printf(t, "%s{%s=\"", name, label);
  admit__text_label(t, value);
  admit__text_printf(t, "\"");
  if (extra != NULL) admit__text_printf(t, ",%s=\"%s\"", extra, evalue);
  admit__text_printf(t, "} %" PRIu64 "\n", v);
}

typedef struct field_s {
  const char* name;
  const char* type;
  const char* help;
  size_t off;
} field_t;

#define GF(n, ty, h, f) {n, ty, h, offsetof(admit_guard_metrics_t, f)}
static const field_t guard_fields[] = {
    GF("admit_guard_attempts_total", "counter",
       "Attempts started, first calls and retries.", started),
    GF("admit_guard_admitted_total", "counter",
       "Attempts that passed every stage.", admitted),
    GF("admit_guard_queue_timeouts_total", "counter",
       "Attempts whose queue time ran out while waiting.", queue_timeouts),
    GF("admit_guard_errors_total", "counter",
       "Attempts failed by a stage's error (e.g. backend down).", errors),
    GF("admit_guard_cancelled_total", "counter",
       "Attempts cancelled while waiting or calling.", cancelled),
    GF("admit_guard_retries_total", "counter", "Retries granted.", retries),
    GF("admit_guard_retries_denied_total", "counter",
       "Retries refused by the retry budget.", retries_denied),
    GF("admit_guard_pauses_total", "counter",
       "Vendor pauses (429 Retry-After) applied.", pauses),
    GF("admit_guard_in_flight", "gauge", "Admitted calls running.",
       in_flight),
    GF("admit_guard_waiting", "gauge", "Attempts waiting in the stages.",
       waiting),
    GF("admit_guard_capacity", "gauge", "Semaphore capacity.", capacity),
};

#define AF(n, ty, h, f) {n, ty, h, offsetof(admit_admission_stats_t, f)}
static const field_t admission_fields[] = {
    AF("admit_admission_limit", "gauge", "Current limit on requests in flight.",
       limit),
    AF("admit_admission_in_flight", "gauge", "Requests running.", in_flight),
    AF("admit_admission_waiting", "gauge", "Requests in the backlog.",
       waiting),
    AF("admit_admission_admitted_total", "counter", "Requests admitted.",
       admitted),
    AF("admit_admission_rejected_total", "counter",
       "Requests refused at once (limit and backlog full).", rejected),
    AF("admit_admission_timed_out_total", "counter",
       "Requests whose wait ran out of time.", timed_out),
    AF("admit_admission_cancelled_total", "counter",
       "Waits withdrawn by their caller.", cancelled),
    AF("admit_admission_completed_total", "counter", "Requests finished.",
       completed),
    AF("admit_admission_errors_total", "counter",
       "Requests finished with a failure or timeout.", errors),
};

static void render_fields(admit__text_t* t, const snap_t* s, size_t n,
                          int kind, const char* label, const field_t* f,
                          size_t nf) {
  for (size_t i = 0; i < nf; i++) {
    admit__text_family(t, f[i].name, f[i].type, f[i].help);
    for (size_t j = 0; j < n; j++) {
      if (s[j].kind != kind) continue;
      uint64_t v;
      memcpy(&v, (const char*)&s[j].u + f[i].off, sizeof(v));
      sample(t, f[i].name, label, s[j].name, NULL, NULL, v);
    }
  }
}

/* The breaker families of guards, when at least one guard has a breaker. */
static void render_guard_breakers(admit__text_t* t, const snap_t* s,
                                  size_t n) {
  admit__text_family(t, "admit_guard_breaker_transitions_total", "counter",
                     "Circuit breaker state changes, by new state.");
  for (size_t j = 0; j < n; j++) {
    if (s[j].kind != SRC_GUARD || s[j].u.g.breaker_state < 0) continue;
    const admit_guard_metrics_t* m = &s[j].u.g;
    uint64_t v[] = {m->breaker_closed, m->breaker_opened,
                    m->breaker_half_opened};
    for (int k = 0; k < 3; k++)
      sample(t, "admit_guard_breaker_transitions_total", "guard", s[j].name,
             "to", admit_breaker_state_name(k), v[k]);
  }
  admit__text_family(t, "admit_guard_breaker_state", "gauge",
                     "Circuit breaker state: 0 closed, 1 open, 2 half-open.");
  for (size_t j = 0; j < n; j++) {
    if (s[j].kind != SRC_GUARD || s[j].u.g.breaker_state < 0) continue;
    sample(t, "admit_guard_breaker_state", "guard", s[j].name, NULL, NULL,
           (uint64_t)s[j].u.g.breaker_state);
  }
}

static void render_guards(admit__text_t* t, const snap_t* s, size_t n) {
  render_fields(t, s, n, SRC_GUARD, "guard", guard_fields,
                sizeof(guard_fields) / sizeof(guard_fields[0]));
  static const char* stages[] = {"breaker", "pause", "local", "global",
                                 "semaphore"};
  admit__text_family(t, "admit_guard_rejected_total", "counter",
                     "Attempts refused at once, by the stage that refused.");
  for (size_t j = 0; j < n; j++) {
    if (s[j].kind != SRC_GUARD) continue;
    const admit_guard_metrics_t* m = &s[j].u.g;
    uint64_t v[] = {m->rejected_breaker, m->rejected_pause, m->rejected_local,
                    m->rejected_global, m->rejected_semaphore};
    for (int k = 0; k < 5; k++)
      sample(t, "admit_guard_rejected_total", "guard", s[j].name, "stage",
             stages[k], v[k]);
  }
  static const char* outcomes[] = {"success", "failure", "timeout",
                                   "vendor_limited"};
  admit__text_family(t, "admit_guard_calls_total", "counter",
                     "Calls ended, by outcome.");
  for (size_t j = 0; j < n; j++) {
    if (s[j].kind != SRC_GUARD) continue;
    const admit_guard_metrics_t* m = &s[j].u.g;
    uint64_t v[] = {m->succeeded, m->failed, m->call_timeouts,
                    m->vendor_limited};
    for (int k = 0; k < 4; k++)
      sample(t, "admit_guard_calls_total", "guard", s[j].name, "outcome",
             outcomes[k], v[k]);
  }
  for (size_t j = 0; j < n; j++) {
    if (s[j].kind == SRC_GUARD && s[j].u.g.breaker_state >= 0) {
      render_guard_breakers(t, s, n);
      break;
    }
  }
  admit__text_family(t, "admit_guard_queue_wait_seconds", "histogram",
                     "Time from an attempt's start to its admission.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_GUARD)
      admit__text_histogram(t, "admit_guard_queue_wait_seconds", "guard",
                            s[j].name, &s[j].u.g.queue_wait);
  admit__text_family(t, "admit_guard_call_seconds", "histogram",
                     "Time from admission to leave.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_GUARD)
      admit__text_histogram(t, "admit_guard_call_seconds", "guard", s[j].name,
                            &s[j].u.g.call_time);
}

static void render_admissions(admit__text_t* t, const snap_t* s, size_t n) {
  render_fields(t, s, n, SRC_ADMISSION, "controller", admission_fields,
                sizeof(admission_fields) / sizeof(admission_fields[0]));
  admit__text_family(t, "admit_admission_shed_total", "counter",
                     "Waiting requests shed, by reason.");
  for (size_t j = 0; j < n; j++) {
    if (s[j].kind != SRC_ADMISSION) continue;
    sample(t, "admit_admission_shed_total", "controller", s[j].name, "reason",
           "codel", s[j].u.a.shed);
    sample(t, "admit_admission_shed_total", "controller", s[j].name, "reason",
           "displaced", s[j].u.a.displaced);
  }
  admit__text_family(t, "admit_admission_queue_wait_seconds", "histogram",
                     "Time from arrival to admission.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_ADMISSION)
      admit__text_histogram(t, "admit_admission_queue_wait_seconds",
                            "controller", s[j].name, &s[j].u.a.queue_wait);
  admit__text_family(t, "admit_admission_latency_seconds", "histogram",
                     "Time from admission to leave.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_ADMISSION)
      admit__text_histogram(t, "admit_admission_latency_seconds", "controller",
                            s[j].name, &s[j].u.a.latency);
}

static void render_breakers(admit__text_t* t, const snap_t* s, size_t n) {
  admit__text_family(t, "admit_breaker_state", "gauge",
                     "Circuit breaker state: 0 closed, 1 open, 2 half-open.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_BREAKER)
      sample(t, "admit_breaker_state", "breaker", s[j].name, NULL, NULL,
             (uint64_t)s[j].u.b.state);
  admit__text_family(t, "admit_breaker_transitions_total", "counter",
                     "Circuit breaker state changes, by new state.");
  for (size_t j = 0; j < n; j++) {
    if (s[j].kind != SRC_BREAKER) continue;
    const admit_breaker_stats_t* b = &s[j].u.b;
    uint64_t v[] = {b->closed, b->opened, b->half_opened};
    for (int k = 0; k < 3; k++)
      sample(t, "admit_breaker_transitions_total", "breaker", s[j].name, "to",
             admit_breaker_state_name(k), v[k]);
  }
  admit__text_family(t, "admit_breaker_rejected_total", "counter",
                     "Calls refused by an open breaker.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_BREAKER)
      sample(t, "admit_breaker_rejected_total", "breaker", s[j].name, NULL,
             NULL, s[j].u.b.rejected);
}

static void render_redis(admit__text_t* t, const snap_t* s, size_t n) {
  admit__text_family(t, "admit_redis_connected", "gauge",
                     "Redis connections ready.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_REDIS)
      sample(t, "admit_redis_connected", "redis", s[j].name, NULL, NULL,
             s[j].u.r.connected);
  admit__text_family(t, "admit_redis_breaker_state", "gauge",
                     "Redis backend breaker: 0 closed, 1 open, 2 half-open.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_REDIS)
      sample(t, "admit_redis_breaker_state", "redis", s[j].name, NULL, NULL,
             s[j].u.r.breaker);
  admit__text_family(t, "admit_redis_failures_total", "counter",
                     "Calls that failed for want of Redis.");
  for (size_t j = 0; j < n; j++)
    if (s[j].kind == SRC_REDIS)
      sample(t, "admit_redis_failures_total", "redis", s[j].name, NULL, NULL,
             s[j].u.r.failures);
}

int admit_health_render_metrics(admit_health_t* h, char* buf, size_t size) {
  if (h == NULL || (buf == NULL && size > 0)) return ADMIT_EINVAL;
  if (size > 0) buf[0] = '\0';
  pthread_mutex_lock(&h->mu);
  snap_t* s = h->n ? admit__calloc(h->n, sizeof(*s)) : NULL;
  if (h->n > 0 && s == NULL) {
    pthread_mutex_unlock(&h->mu);
    return ADMIT_ENOMEM;
  }
  /* Redis connections have no name of their own: number them. */
  char (*rnames)[24] = h->n ? admit__calloc(h->n, sizeof(*rnames)) : NULL;
  if (h->n > 0 && rnames == NULL) {
    admit__free(s);
    pthread_mutex_unlock(&h->mu);
    return ADMIT_ENOMEM;
  }
  int nredis = 0;
  int kinds = 0;
  for (size_t i = 0; i < h->n; i++) {
    src_t* src = &h->src[i];
    s[i].kind = src->kind;
    s[i].name = src->name;
    kinds |= 1 << src->kind;
    switch (src->kind) {
      case SRC_GUARD:
        admit_guard_metrics(src->p, &s[i].u.g);
        break;
      case SRC_ADMISSION:
        admit_admission_stats(src->p, &s[i].u.a);
        break;
      case SRC_BREAKER:
        admit_breaker_stats(src->p, &s[i].u.b);
        break;
      default:
        admit_redis_stats(src->p, &s[i].u.r);
        snprintf(rnames[i], sizeof(rnames[i]), "%d", nredis++);
        s[i].name = rnames[i];
        break;
    }
  }
  int ready = h->ready;
  admit__text_t t = {buf, size, 0};
  if (kinds & (1 << SRC_GUARD)) render_guards(&t, s, h->n);
  if (kinds & (1 << SRC_ADMISSION)) render_admissions(&t, s, h->n);
  if (kinds & (1 << SRC_BREAKER)) render_breakers(&t, s, h->n);
  if (kinds & (1 << SRC_REDIS)) render_redis(&t, s, h->n);
  pthread_mutex_unlock(&h->mu);
  admit__text_family(&t, "admit_ready", "gauge",
                     "1 if the last readiness check said ready.");
  admit__text_printf(&t, "admit_ready %d\n", ready);
  admit__free(rnames);
  admit__free(s);
  return text_result(&t);
}
