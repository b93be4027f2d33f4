/* Pod admission control: a limit on requests in flight, a bounded backlog
 * with priority classes, CoDel-style shedding and an adaptive limit. */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/* Permit states (magic numbers, so a permit never filled is refused). */
enum {
  ST_QUEUED = 0x61610001u,
  ST_ADMITTED = 0x61610002u,
  ST_DONE = 0x61610003u
};

/* Gradient2's long-term latency: an exponential average over 600 samples
 * after a plain mean over the first 10 (Netflix's ExpAvgMeasurement). */
#define GRADIENT_LONG_WINDOW 600.0
#define GRADIENT_WARMUP 10
#define GRADIENT_QUEUE 4.0

typedef struct waiter_s waiter_t;
struct waiter_s {
  waiter_t* next;
  waiter_t* prev;
  waiter_t* next_done; /* callbacks to run once the lock is dropped */
  admit_admission_permit_t* p;
  uint64_t ticket;
  uint64_t enqueued;
  int priority;
  int async;
  int done;   /* set under the lock when the wait ends */
  int status;
  admit_admission_cb cb;
  void* ud;
  pthread_cond_t* cond; /* blocking waiters */
};

struct admit_admission_s {
  pthread_mutex_t mu;
  pthread_condattr_t cond_attr;
  admit__clock_t clock;
  /* Options. */
  uint64_t backlog;
  uint64_t target;
  uint64_t interval;
  int shedding_on;
  int shed_min_priority;
  admit_adaptive_t adaptive;
  double min_limit, max_limit;
  double aimd_backoff;
  uint64_t aimd_latency;
  double tolerance, smoothing;
  /* State, under mu. */
  double limit;
  uint64_t limit_int;
  uint64_t in_flight;
  uint64_t waiting;
  waiter_t* head[ADMIT_PRIORITIES_MAX];
  waiter_t* tail[ADMIT_PRIORITIES_MAX];
  uint64_t tickets;
  uint64_t first_above; /* CoDel: when waits above target turn to shedding */
  int shedding;
  double long_rtt;
  uint64_t rtt_samples;
  uint64_t admitted, rejected, shed, displaced, timed_out, cancelled;
  uint64_t completed, errors;
  /* Lock-free. */
  admit__histo_t queue_wait;
  admit__histo_t latency;
  admit__window_t window;
};

int admit_admission_new(admit_admission_t** out,
                        const admit_admission_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  admit_admission_options_t o = {0};
  if (opts != NULL) o = *opts;
  if (o.adaptive != ADMIT_ADAPTIVE_NONE && o.adaptive != ADMIT_ADAPTIVE_AIMD &&
      o.adaptive != ADMIT_ADAPTIVE_GRADIENT)
    return ADMIT_EINVAL;
  if (!(o.aimd_backoff >= 0 && o.aimd_backoff < 1) ||
      !(o.gradient_tolerance >= 0) ||
      !(o.gradient_smoothing >= 0 && o.gradient_smoothing <= 1))
    return ADMIT_EINVAL;
  if (o.shed_min_priority < 0 || o.shed_min_priority > ADMIT_PRIORITIES_MAX)
    return ADMIT_EINVAL;
  uint32_t start = o.max_in_flight ? o.max_in_flight : 100;
  uint64_t min = o.min_limit ? o.min_limit : 1;
  uint64_t max = o.max_limit ? o.max_limit : (uint64_t)start * 10;
  if (min > max) return ADMIT_EINVAL;
  admit_admission_t* a = admit__calloc(1, sizeof(*a));
  if (a == NULL) return ADMIT_ENOMEM;
  if (pthread_mutex_init(&a->mu, NULL) != 0) {
    admit__free(a);
    return ADMIT_ENOMEM;
  }
  if (pthread_condattr_init(&a->cond_attr) != 0 ||
      pthread_condattr_setclock(&a->cond_attr, CLOCK_MONOTONIC) != 0) {
    pthread_mutex_destroy(&a->mu);
    admit__free(a);
    return ADMIT_ENOMEM;
  }
  admit__clock_init(&a->clock, o.clock);
  a->backlog = o.no_backlog ? 0 : (o.backlog ? o.backlog : 200);
  a->target = o.shed_target_ns ? o.shed_target_ns : 100ull * ADMIT_MILLISECOND;
  a->interval = o.shed_interval_ns ? o.shed_interval_ns : 1ull * ADMIT_SECOND;
  a->shedding_on = !o.no_shedding;
  a->shed_min_priority = o.shed_min_priority ? o.shed_min_priority : 1;
  a->adaptive = o.adaptive;
  a->min_limit = (double)min;
  a->max_limit = (double)max;
  a->aimd_backoff = o.aimd_backoff > 0 ? o.aimd_backoff : 0.9;
  a->aimd_latency = o.aimd_latency_ns ? o.aimd_latency_ns
                                      : 5ull * ADMIT_SECOND;
  a->tolerance = o.gradient_tolerance > 0 ? o.gradient_tolerance : 1.5;
  a->smoothing = o.gradient_smoothing > 0 ? o.gradient_smoothing : 0.2;
  double l = (double)start;
  if (a->adaptive != ADMIT_ADAPTIVE_NONE) {
    if (l < a->min_limit) l = a->min_limit;
    if (l > a->max_limit) l = a->max_limit;
  }
  a->limit = l;
  a->limit_int = (uint64_t)l;
  admit__window_init(&a->window,
                     o.window_ns ? o.window_ns : 10ull * ADMIT_SECOND);
  *out = a;
  return 0;
}

/* --- the backlog ---------------------------------------------------------- */

static void queue_push(admit_admission_t* a, waiter_t* w) {
  int c = w->priority;
  w->next = NULL;
  w->prev = a->tail[c];
  if (a->tail[c] != NULL)
    a->tail[c]->next = w;
  else
    a->head[c] = w;
  a->tail[c] = w;
  a->waiting++;
}

static void queue_remove(admit_admission_t* a, waiter_t* w) {
  int c = w->priority;
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    a->head[c] = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    a->tail[c] = w->prev;
  w->next = w->prev = NULL;
  a->waiting--;
}

static waiter_t* queue_first(admit_admission_t* a) {
  for (int c = 0; c < ADMIT_PRIORITIES_MAX; c++)
    if (a->head[c] != NULL) return a->head[c];
  return NULL;
}

/* Ends @p w's wait with @p status (locked): blocking waiters are woken,
 * asynchronous ones collected in @p done for their callbacks. */
static void finish(waiter_t* w, int status, waiter_t** done) {
  w->done = 1;
  w->status = status;
  w->p->status = status;
  w->p->waiter_ = NULL;
  if (status != 0) __atomic_store_n(&w->p->state_, ST_DONE, __ATOMIC_RELEASE);
  if (w->async) {
    w->next_done = *done;
    *done = w;
  } else {
    pthread_cond_signal(w->cond);
  }
}

static void run_done(waiter_t* done) {
  while (done != NULL) {
    waiter_t* next = done->next_done;
    /* The permit is not touched here: once the wait has ended, a cancel
     * returns 0 and its owner may already have let go of it. */
    done->cb(done->ud, done->ticket, done->status);
    admit__free(done);
    done = next;
  }
}

/* Locked: takes a place for @p p now. */
static void grant(admit_admission_t* a, admit_admission_permit_t* p,
                  uint64_t now) {
  a->in_flight++;
  a->admitted++;
  p->admitted_ns = now;
  p->status = 0;
  __atomic_store_n(&p->state_, ST_ADMITTED, __ATOMIC_RELEASE);
  admit__histo_observe(&a->queue_wait, admit__sat_sub(now, p->enqueued_ns));
}

/* Locked: CoDel's verdict on a waiter leaving the backlog after
 * @p sojourn. Shedding starts once sojourns have stayed at or above the
 * target for a whole interval, and stops at the first one below it (or
 * when the backlog empties). */
static bool codel_shed(admit_admission_t* a, uint64_t now, uint64_t sojourn,
                       int priority) {
  if (!a->shedding_on) return false;
  if (sojourn < a->target) {
    a->first_above = 0;
    a->shedding = 0;
    return false;
  }
  if (a->first_above == 0) {
    a->first_above = admit__sat_add(now, a->interval);
    return false;
  }
  if (now < a->first_above) return false;
  a->shedding = 1;
  return priority >= a->shed_min_priority;
}

/* Locked: admits waiters while there is room. */
static void dispatch(admit_admission_t* a, uint64_t now, waiter_t** done) {
  while (a->in_flight < a->limit_int && a->waiting > 0) {
    waiter_t* w = queue_first(a);
    queue_remove(a, w);
    uint64_t sojourn = admit__sat_sub(now, w->enqueued);
    if (codel_shed(a, now, sojourn, w->priority)) {
      a->shed++;
      finish(w, ADMIT_ESHED, done);
      continue;
    }
    grant(a, w->p, now);
    finish(w, 0, done);
  }
  if (a->waiting == 0) {
    a->first_above = 0;
    a->shedding = 0;
  }
}

/* Locked: makes room in a full backlog for class @p priority by shedding
 * the newest waiter of the least urgent class below it. */
static bool displace(admit_admission_t* a, int priority, waiter_t** done) {
  for (int c = ADMIT_PRIORITIES_MAX - 1; c > priority; c--) {
    waiter_t* w = a->tail[c];
    if (w == NULL) continue;
    queue_remove(a, w);
    a->displaced++;
    finish(w, ADMIT_ESHED, done);
    return true;
  }
  return false;
}

/* Locked: the common start of both enter forms. Returns 1 if admitted now,
 * 0 if @p w should be queued, or ADMIT_EFULL. */
static int arrive(admit_admission_t* a, admit_admission_permit_t* p,
                  int priority, uint64_t now, int may_wait, waiter_t** done) {
  p->ticket = ++a->tickets;
  p->enqueued_ns = now;
  p->admitted_ns = 0;
  p->priority = priority;
  p->owner_ = a;
  p->waiter_ = NULL;
  if (a->waiting == 0 && a->in_flight < a->limit_int) {
    grant(a, p, now);
    return 1;
  }
  if (!may_wait || a->backlog == 0 ||
      (a->waiting >= a->backlog && !displace(a, priority, done))) {
    a->rejected++;
    p->status = ADMIT_EFULL;
    __atomic_store_n(&p->state_, ST_DONE, __ATOMIC_RELEASE);
    return ADMIT_EFULL;
  }
  return 0;
}

static void deadline_ts(uint64_t timeout_ns, struct timespec* ts) {
  uint64_t at = admit__sat_add(admit_now_ns(), timeout_ns);
  ts->tv_sec = (time_t)(at / ADMIT_SECOND);
  ts->tv_nsec = (long)(at % ADMIT_SECOND);
}

int admit_admission_enter(admit_admission_t* a, int priority,
                          uint64_t timeout_ns, admit_admission_permit_t* p) {
  if (a == NULL || p == NULL || priority < 0 ||
      priority >= ADMIT_PRIORITIES_MAX)
    return ADMIT_EINVAL;
  memset(p, 0, sizeof(*p));
  waiter_t* done = NULL;
  uint64_t now = admit__clock_now(&a->clock);
  pthread_mutex_lock(&a->mu);
  int rc = arrive(a, p, priority, now, timeout_ns > 0, &done);
  if (rc != 0) {
    pthread_mutex_unlock(&a->mu);
    run_done(done);
    return rc == 1 ? 0 : rc;
  }
  pthread_cond_t cond;
  pthread_cond_init(&cond, &a->cond_attr);
  waiter_t w;
  memset(&w, 0, sizeof(w));
  w.p = p;
  w.enqueued = now;
  w.priority = priority;
  w.cond = &cond;
  p->waiter_ = &w;
  __atomic_store_n(&p->state_, ST_QUEUED, __ATOMIC_RELEASE);
  queue_push(a, &w);
  struct timespec ts;
  if (timeout_ns != ADMIT_FOREVER) deadline_ts(timeout_ns, &ts);
  while (!w.done) {
    int e = timeout_ns == ADMIT_FOREVER
                ? pthread_cond_wait(&cond, &a->mu)
                : pthread_cond_timedwait(&cond, &a->mu, &ts);
    if (e == ETIMEDOUT && !w.done) {
      queue_remove(a, &w);
      a->timed_out++;
      p->waiter_ = NULL;
      p->status = ADMIT_ETIMEDOUT;
      __atomic_store_n(&p->state_, ST_DONE, __ATOMIC_RELEASE);
      w.done = 1;
      w.status = ADMIT_ETIMEDOUT;
      if (a->waiting == 0) {
        a->first_above = 0;
        a->shedding = 0;
      }
    }
  }
  pthread_mutex_unlock(&a->mu);
  pthread_cond_destroy(&cond);
  run_done(done);
  return w.status;
}

int admit_admission_enter_async(admit_admission_t* a, int priority,
                                admit_admission_permit_t* p,
                                admit_admission_cb cb, void* ud) {
  if (a == NULL || p == NULL || cb == NULL || priority < 0 ||
      priority >= ADMIT_PRIORITIES_MAX)
    return ADMIT_EINVAL;
  memset(p, 0, sizeof(*p));
  /* Allocated up front so that nothing can fail under the lock. */
  waiter_t* w = admit__calloc(1, sizeof(*w));
  if (w == NULL) return ADMIT_ENOMEM;
  waiter_t* done = NULL;
  uint64_t now = admit__clock_now(&a->clock);
  pthread_mutex_lock(&a->mu);
  int rc = arrive(a, p, priority, now, 1, &done);
  if (rc == 0) {
    w->p = p;
    w->ticket = p->ticket;
    w->enqueued = now;
    w->priority = priority;
    w->async = 1;
    w->cb = cb;
    w->ud = ud;
    p->waiter_ = w;
    __atomic_store_n(&p->state_, ST_QUEUED, __ATOMIC_RELEASE);
    queue_push(a, w);
    w = NULL;
  }
  pthread_mutex_unlock(&a->mu);
  admit__free(w);
  run_done(done);
  return rc;
}

int admit_admission_cancel(admit_admission_t* a, admit_admission_permit_t* p) {
  if (a == NULL || p == NULL || p->owner_ != a) return ADMIT_EINVAL;
  pthread_mutex_lock(&a->mu);
  waiter_t* w = p->waiter_;
  if (w == NULL || !w->async) {
    pthread_mutex_unlock(&a->mu);
    return w == NULL ? 0 : ADMIT_EINVAL;
  }
  queue_remove(a, w);
  a->cancelled++;
  p->waiter_ = NULL;
  p->status = ADMIT_ECANCELED;
  __atomic_store_n(&p->state_, ST_DONE, __ATOMIC_RELEASE);
  if (a->waiting == 0) {
    a->first_above = 0;
    a->shedding = 0;
  }
  pthread_mutex_unlock(&a->mu);
  admit__free(w);
  return 1;
}

/* Locked: moves the limit after a request that took @p rtt. */
static void adapt(admit_admission_t* a, uint64_t rtt, int outcome,
                  uint64_t in_flight) {
  double l = a->limit;
  if (a->adaptive == ADMIT_ADAPTIVE_AIMD) {
    if (outcome == ADMIT_OUTCOME_TIMEOUT || rtt > a->aimd_latency)
      l = l * a->aimd_backoff;
    else if ((double)in_flight * 2 >= l)
      l = l + 1;
  } else if (a->adaptive == ADMIT_ADAPTIVE_GRADIENT) {
    if (outcome == ADMIT_OUTCOME_CANCELLED) return;
    double r = rtt > 0 ? (double)rtt : 1.0;
    a->rtt_samples++;
    if (a->rtt_samples <= GRADIENT_WARMUP) {
      a->long_rtt += (r - a->long_rtt) / (double)a->rtt_samples;
    } else {
      double f = 2.0 / (GRADIENT_LONG_WINDOW + 1.0);
      a->long_rtt = a->long_rtt * (1.0 - f) + r * f;
    }
    /* A long average far above the recent one decays faster, so the limit
     * recovers after a slow period. */
    if (a->long_rtt / r > 2.0) a->long_rtt *= 0.95;
    /* An application that does not use its limit learns nothing. */
    if ((double)in_flight < l / 2) return;
    double gradient = a->tolerance * a->long_rtt / r;
    if (gradient > 1.0) gradient = 1.0;
    if (gradient < 0.5) gradient = 0.5;
    double next = l * gradient + GRADIENT_QUEUE;
    l = l * (1.0 - a->smoothing) + next * a->smoothing;
  } else {
    return;
  }
  if (l < a->min_limit) l = a->min_limit;
  if (l > a->max_limit) l = a->max_limit;
  a->limit = l;
  a->limit_int = (uint64_t)l;
}

int admit_admission_leave(admit_admission_t* a, admit_admission_permit_t* p,
                          int outcome) {
  if (a == NULL || p == NULL || p->owner_ != a ||
      outcome < ADMIT_OUTCOME_SUCCESS || outcome > ADMIT_OUTCOME_CANCELLED)
    return ADMIT_EINVAL;
  uint32_t from = ST_ADMITTED;
  if (!__atomic_compare_exchange_n(&p->state_, &from, ST_DONE, false,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return ADMIT_EINVAL;
  uint64_t now = admit__clock_now(&a->clock);
  uint64_t rtt = admit__sat_sub(now, p->admitted_ns);
  bool error =
      outcome == ADMIT_OUTCOME_FAILURE || outcome == ADMIT_OUTCOME_TIMEOUT;
  waiter_t* done = NULL;
  pthread_mutex_lock(&a->mu);
  uint64_t in_flight = a->in_flight;
  a->in_flight--;
  a->completed++;
  if (error) a->errors++;
  adapt(a, rtt, outcome, in_flight);
  dispatch(a, now, &done);
  pthread_mutex_unlock(&a->mu);
  admit__histo_observe(&a->latency, rtt);
  admit__window_add(&a->window, now, 0, 1);
  if (error) admit__window_add(&a->window, now, 1, 1);
  run_done(done);
  return 0;
}

int admit_admission_set_limit(admit_admission_t* a, uint32_t limit) {
  if (a == NULL || limit == 0) return ADMIT_EINVAL;
  waiter_t* done = NULL;
  uint64_t now = admit__clock_now(&a->clock);
  pthread_mutex_lock(&a->mu);
  a->limit = (double)limit;
  a->limit_int = limit;
  dispatch(a, now, &done);
  pthread_mutex_unlock(&a->mu);
  run_done(done);
  return 0;
}

int admit_admission_stats(admit_admission_t* a, admit_admission_stats_t* out) {
  if (a == NULL || out == NULL) return ADMIT_EINVAL;
  memset(out, 0, sizeof(*out));
  uint64_t now = admit__clock_now(&a->clock);
  pthread_mutex_lock(&a->mu);
  out->limit = a->limit_int;
  out->in_flight = a->in_flight;
  out->waiting = a->waiting;
  out->backlog = a->backlog;
  out->admitted = a->admitted;
  out->rejected = a->rejected;
  out->shed = a->shed;
  out->displaced = a->displaced;
  out->timed_out = a->timed_out;
  out->cancelled = a->cancelled;
  out->completed = a->completed;
  out->errors = a->errors;
  out->shedding = a->shedding;
  for (int c = 0; c < ADMIT_PRIORITIES_MAX; c++) {
    if (a->head[c] == NULL) continue;
    uint64_t waited = admit__sat_sub(now, a->head[c]->enqueued);
    if (waited > out->oldest_wait_ns) out->oldest_wait_ns = waited;
  }
  pthread_mutex_unlock(&a->mu);
  uint64_t w[ADMIT__WINDOW_COUNTERS];
  admit__window_sum(&a->window, now, w);
  out->recent_calls = w[0];
  out->recent_errors = w[1];
  admit__histo_read(&a->queue_wait, &out->queue_wait);
  admit__histo_read(&a->latency, &out->latency);
  return 0;
}

void admit_admission_free(admit_admission_t* a) {
  if (a == NULL) return;
  waiter_t* done = NULL;
  pthread_mutex_lock(&a->mu);
  for (int c = 0; c < ADMIT_PRIORITIES_MAX; c++) {
    while (a->head[c] != NULL) {
      waiter_t* w = a->head[c];
      queue_remove(a, w);
      finish(w, ADMIT_ECLOSED, &done);
    }
  }
  pthread_mutex_unlock(&a->mu);
  run_done(done);
  pthread_condattr_destroy(&a->cond_attr);
  pthread_mutex_destroy(&a->mu);
  admit__free(a);
}
