/* The vendor-call guard: breaker, vendor pause, local limiter, global
 * limiter and semaphore, in that order, within one queue timeout. */
#include "metrics.h"
#include "redis-limiter.h"

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/*
 * An attempt is a small state machine in the caller's permit. The stages
 * run in order; each one either passes at once, asks for a wait that fits
 * the queue time left (WAIT, or PENDING for the semaphore and asynchronous
 * global replies), or refuses. A refusal gives back everything held, in
 * reverse order. `not_before_ns_` is the one "not yet" time: the backoff of
 * a retry, the end of a vendor pause, a local reservation's ready time or a
 * global limiter's retry-after.
 *
 * Two things can happen on other threads: a semaphore grant and a global
 * limiter's asynchronous reply. The owner "parks" just before it returns
 * PENDING; a completion calls the caller's notify callback only if it finds
 * the owner parked, so notify runs at most once per PENDING returned and
 * never otherwise (a reply that lands while the owner is still stepping is
 * simply collected). A completion's very last touch of the permit or reply
 * record is setting "notified"; the owner never lets go of the permit (or
 * frees the record) between "done" and "notified", so a callback never
 * writes into freed memory.
 */

#define GUARD_NAME_MAX 128

/* Permit states (magic numbers, so a permit never started is refused). */
enum {
  ST_WAITING = 0x61640001u,
  ST_READY = 0x61640002u,
  ST_DONE = 0x61640003u
};

/* What a permit holds (held_). */
enum {
  H_BREAKER = 1u,
  H_LOCAL = 2u,
  H_GLOBAL = 4u,
  H_SEM = 8u,    /* a semaphore permit */
  H_SEMQ = 16u,  /* a queued asynchronous semaphore waiter */
  H_OP = 32u,    /* an outstanding asynchronous global reply */
  H_GLOBAL_LOCAL = 64u /* with H_GLOBAL: the Redis stage's failure policy
                          decided locally (nothing was taken from Redis) */
};

/* Semaphore callback flags (flags_, atomic). */
enum {
  F_SEM_GRANTED = 1u,
  F_SEM_NOTIFIED = 2u,
  F_SEM_CLOSED = 4u,
  F_SEM_PARKED = 8u
};

/* Counters. */
enum {
  C_STARTED,
  C_ADMITTED,
  C_REJ_BREAKER,
  C_REJ_PAUSE,
  C_REJ_LOCAL,
  C_REJ_GLOBAL,
  C_REJ_SEM,
  C_QUEUE_TIMEOUT,
  C_ERRORS,
  C_CANCEL_WAIT, /* cancelled while waiting */
  C_CANCEL_CALL, /* left with CANCELLED */
  C_SUCCEEDED,
  C_FAILED,
  C_CALL_TIMEOUT,
  C_VENDOR_LIMITED,
  C_RETRIES,
  C_RETRIES_DENIED,
  C_PAUSES,
  C_COUNT
};

/* Window counters, derived from the totals. */
enum { W_CALLS, W_RETRIES, W_LEFT, W_ERRORS, W_COUNT };

/*
 * Counters and histograms are sharded: each thread adds to the shard of
 * its own index, so threads calling one guard do not fight over cache
 * lines, and readers sum the shards. Up to GUARD_SHARDS live threads each
 * own a shard index (taken at a thread's first use of any guard, given
 * back when it exits) and bump their counters with a plain atomic load and
 * store; threads beyond that share indexes round-robin and use atomic
 * read-modify-writes. The gauges (waiting, in flight) are differences of
 * counters, which costs nothing per call.
 */
#define GUARD_SHARDS 16

typedef struct shard_s {
  _Atomic uint64_t c[C_COUNT];
  admit__histo_t queue_wait;
  admit__histo_t call_time;
} shard_t;

/* A shard padded to whole cache lines. */
typedef union shard_slot_u {
  shard_t s;
  char pad[(sizeof(shard_t) + 63) / 64 * 64];
} shard_slot_t;

/*
 * The sliding window (retry budget, recent error rate) costs nothing per
 * call either: at the first call of each bucket (a tenth of the window)
 * one thread stores a snapshot of the totals, and a window's counts are
 * the totals now minus the oldest snapshot inside the window. Every event
 * is preceded by its bucket's snapshot, so this is exact except for events
 * that race the snapshot itself.
 */
#define WINDOW_BUCKETS 10
#define WINDOW_RING (WINDOW_BUCKETS + 1)

typedef struct wsnap_s {
  _Atomic uint64_t slot1; /* bucket index + 1; 0 = empty */
  _Atomic uint64_t v[W_COUNT];
} wsnap_t;

struct admit_guard_s {
  /* Read on every call, written rarely. */
  _Atomic uint64_t pause_until;
  _Atomic uint64_t next_edge; /* when the next window snapshot is due */
  _Atomic uint64_t debt; /* refunds owed by replies of cancelled attempts */
  _Atomic uint64_t ops; /* outstanding asynchronous global replies */
  _Atomic uint64_t bg; /* Redis refunds and pauses still on their way */
  shard_slot_t* shards;
  void* shards_mem;
  uint64_t bucket_ns;
  wsnap_t ring[WINDOW_RING];
  admit__clock_t clock;
  admit_breaker_t* breaker;
  admit_limiter_t* local;
  admit_semaphore_t* sem;
  admit_guard_global_t global;
  int has_global;
  admit_redis_limiter_t* redis;
  size_t key_len;
  char key[GUARD_NAME_MAX + 1];
  int priority;
  uint64_t cost;
  uint64_t call_timeout;
  uint32_t max_attempts;
  uint32_t retry_on;
  uint64_t backoff_base;
  uint64_t backoff_max;
  double retry_ratio;
  uint32_t retry_min;
  uint64_t low_water;
  char name[GUARD_NAME_MAX + 1];
};

/* A global limiter's asynchronous reply, shared between the permit's owner
 * and the replying thread; freed by whichever of them comes last. */
typedef struct gop_s {
  _Atomic int state;
  int status;
  admit_decision_t d;
  admit_guard_t* g;
  admit_guard_notify_cb notify;
  void* notify_ud;
} gop_t;

/* PENDING -> PARKED (owner waits) -> DONE (replied, notifying) -> NOTIFIED;
 * PENDING -> NOTIFIED (replied before the owner parked: no notify);
 * PENDING or PARKED -> ABANDONED (owner left; the reply frees the record). */
enum { OP_PENDING, OP_PARKED, OP_DONE, OP_NOTIFIED, OP_ABANDONED };

static const char* const stage_names[] = {
    "backoff", "breaker", "pause", "local", "global",
    "semaphore", "call", "done"};

const char* admit_guard_stage_name(int stage) {
  if (stage < 0 || stage > ADMIT_GUARD_STAGE_DONE) return "unknown";
  return stage_names[stage];
}

static pthread_once_t shard_once = PTHREAD_ONCE_INIT;
static pthread_key_t shard_key;
static _Atomic uint32_t shard_owned; /* bit i: index i has an owner */
static _Atomic unsigned shard_rr;
/* initial-exec: a plain %fs-relative load, not a __tls_get_addr call, on
 * every counter bump (8 bytes of static TLS, fine for dlopen too). */
#define GUARD_TLS _Thread_local __attribute__((tls_model("initial-exec")))
static GUARD_TLS int my_shard = -1;
static GUARD_TLS bool my_exclusive;

static void shard_release(void* v) {
  unsigned i = (unsigned)(uintptr_t)v - 1;
  atomic_fetch_and_explicit(&shard_owned, ~(1u << i), memory_order_release);
}

static void shard_key_init(void) {
  if (pthread_key_create(&shard_key, shard_release) != 0)
    atomic_store(&shard_owned, UINT32_MAX); /* no owners then: all shared */
}

static void shard_pick(void) {
  pthread_once(&shard_once, shard_key_init);
  const uint32_t all = (1u << GUARD_SHARDS) - 1;
  uint32_t owned = atomic_load_explicit(&shard_owned, memory_order_acquire);
  while ((owned & all) != all) {
    int i = __builtin_ctz(~owned);
    if (atomic_compare_exchange_weak_explicit(&shard_owned, &owned,
                                              owned | (1u << i),
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
      if (pthread_setspecific(shard_key, (void*)(uintptr_t)(i + 1)) != 0) {
        atomic_fetch_and(&shard_owned, ~(1u << i));
        break;
      }
      my_shard = i;
      my_exclusive = true;
      return;
    }
  }
  my_shard = (int)(atomic_fetch_add_explicit(&shard_rr, 1,
                                             memory_order_relaxed) %
                   GUARD_SHARDS);
  my_exclusive = false;
}

static inline shard_t* shard(admit_guard_t* g) {
  if (my_shard < 0) shard_pick();
  return &g->shards[my_shard].s;
}

/* Adds to a counter of this thread's shard. */
static inline void bump(_Atomic uint64_t* c, uint64_t n) {
  if (my_exclusive)
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
  else
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline void count(admit_guard_t* g, int i) {
  bump(&shard(g)->c[i], 1);
}

/* Observes a latency into this thread's shard of a histogram. */
static inline void observe(admit__histo_t* h, uint64_t ns) {
  bump(&h->bucket[admit__histo_bucket(ns)], 1);
  bump(&h->sum_ns, ns);
}

static void totals(admit_guard_t* g, uint64_t c[C_COUNT]) {
  memset(c, 0, sizeof(uint64_t) * C_COUNT);
  for (int k = 0; k < GUARD_SHARDS; k++)
    for (int i = 0; i < C_COUNT; i++)
      c[i] += atomic_load_explicit(&g->shards[k].s.c[i], memory_order_relaxed);
}

static void window_of(const uint64_t c[C_COUNT], uint64_t w[W_COUNT]) {
  w[W_CALLS] = admit__sat_sub(c[C_STARTED], c[C_RETRIES]);
  w[W_RETRIES] = c[C_RETRIES];
  w[W_LEFT] = c[C_SUCCEEDED] + c[C_FAILED] + c[C_CALL_TIMEOUT] +
              c[C_VENDOR_LIMITED] + c[C_CANCEL_CALL];
  w[W_ERRORS] = c[C_FAILED] + c[C_CALL_TIMEOUT];
}

static void tick_slow(admit_guard_t* g, uint64_t now) {
  uint64_t edge = atomic_load_explicit(&g->next_edge, memory_order_acquire);
  uint64_t slot = now / g->bucket_ns;
  uint64_t next = admit__sat_mul(slot + 1, g->bucket_ns);
  if (now < edge ||
      !atomic_compare_exchange_strong_explicit(&g->next_edge, &edge, next,
                                               memory_order_acq_rel,
                                               memory_order_acquire))
    return;
  uint64_t c[C_COUNT], w[W_COUNT];
  totals(g, c);
  window_of(c, w);
  wsnap_t* e = &g->ring[slot % WINDOW_RING];
  atomic_store_explicit(&e->slot1, 0, memory_order_release);
  for (int i = 0; i < W_COUNT; i++)
    atomic_store_explicit(&e->v[i], w[i], memory_order_relaxed);
  atomic_store_explicit(&e->slot1, slot + 1, memory_order_release);
}

/* Takes the bucket's snapshot at its first event. */
static inline void tick(admit_guard_t* g, uint64_t now) {
  if (now >= atomic_load_explicit(&g->next_edge, memory_order_relaxed))
    tick_slow(g, now);
}

/* The window's counts at @p now. */
static void window_sum(admit_guard_t* g, uint64_t now, uint64_t w[W_COUNT]) {
  tick(g, now);
  uint64_t c[C_COUNT];
  totals(g, c);
  window_of(c, w);
  uint64_t slot = now / g->bucket_ns;
  uint64_t first = slot + 1 > WINDOW_BUCKETS ? slot + 1 - WINDOW_BUCKETS : 0;
  const wsnap_t* base = NULL;
  uint64_t base_slot = UINT64_MAX;
  for (int i = 0; i < WINDOW_RING; i++) {
    uint64_t s1 = atomic_load_explicit(&g->ring[i].slot1, memory_order_acquire);
    if (s1 == 0 || s1 - 1 < first || s1 - 1 > slot) continue;
    if (s1 - 1 < base_slot) {
      base_slot = s1 - 1;
      base = &g->ring[i];
    }
  }
  if (base == NULL) {
    /* Nothing since before the window (a racing snapshot): all old. */
    memset(w, 0, sizeof(uint64_t) * W_COUNT);
    return;
  }
  for (int i = 0; i < W_COUNT; i++)
    w[i] = admit__sat_sub(
        w[i], atomic_load_explicit(&base->v[i], memory_order_relaxed));
}

static inline uint64_t now_of(admit_guard_t* g) {
  return admit__clock_now(&g->clock);
}

static inline uint32_t load_u32(const uint32_t* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline bool cas_u32(uint32_t* p, uint32_t from, uint32_t to) {
  return __atomic_compare_exchange_n(p, &from, to, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}

/* True when @p p holds an attempt (checked before trusting p->guard_). */
static bool in_attempt(const admit_guard_permit_t* p) {
  uint32_t st = load_u32(&p->state_);
  return (st == ST_WAITING || st == ST_READY) && p->guard_ != NULL;
}

static void spin_until_u32(const uint32_t* p, uint32_t bit) {
  while ((load_u32(p) & bit) == 0) sched_yield();
}

/* --- the Redis limiter as the global stage ------------------------------- */

static int redis_try(void* ud, uint64_t cost, admit_decision_t* d) {
  admit_guard_t* g = ud;
  return admit_redis_limiter_try(g->redis, g->key, g->key_len, cost, d);
}

static int redis_try_async(void* ud, uint64_t cost,
                           void (*done)(void* arg, int status,
                                        const admit_decision_t* d),
                           void* arg) {
  admit_guard_t* g = ud;
  return admit_redis_limiter_try_cb(g->redis, g->key, g->key_len, cost, done,
                                    arg);
}

/* The Redis stage's refunds and pauses never block: they complete on the
 * connection's I/O thread (a failed one is counted in the limiter's
 * stats), and admit_guard_free() waits for those still on their way. */
static void bg_done(void* ud, int status, uint64_t until_ns) {
  (void)status;
  (void)until_ns;
  admit_guard_t* g = ud;
  /* The last touch of the guard. */
  atomic_fetch_sub_explicit(&g->bg, 1, memory_order_release);
}

static int redis_refund_async(admit_guard_t* g, uint64_t cost) {
  atomic_fetch_add_explicit(&g->bg, 1, memory_order_relaxed);
  int rc = admit_redis_limiter_refund_cb(g->redis, g->key, g->key_len, cost,
                                         bg_done, g);
  if (rc < 0) atomic_fetch_sub_explicit(&g->bg, 1, memory_order_release);
  return rc;
}

/* An asynchronous pause and its caller's callback. */
typedef struct gpause_s {
  admit_guard_t* g;
  admit_guard_done_cb cb;
  void* ud;
} gpause_t;

static void pause_done(void* arg, int status, uint64_t until_ns) {
  (void)until_ns;
  gpause_t* gp = arg;
  admit_guard_t* g = gp->g;
  if (gp->cb != NULL) gp->cb(gp->ud, status);
  admit__free(gp);
  /* The last touch of the guard. */
  atomic_fetch_sub_explicit(&g->bg, 1, memory_order_release);
}

static int redis_pause_async(admit_guard_t* g, uint64_t pause_ns,
                             admit_guard_done_cb cb, void* ud) {
  gpause_t* gp = admit__calloc(1, sizeof(*gp));
  if (gp == NULL) return ADMIT_ENOMEM;
  gp->g = g;
  gp->cb = cb;
  gp->ud = ud;
  atomic_fetch_add_explicit(&g->bg, 1, memory_order_relaxed);
  int rc = admit_redis_limiter_pause_cb(g->redis, g->key, g->key_len,
                                        pause_ns, pause_done, gp);
  if (rc < 0) {
    admit__free(gp);
    atomic_fetch_sub_explicit(&g->bg, 1, memory_order_release);
  }
  return rc;
}

/* Gives back the units one admitted global decision took. With the Redis
 * stage: to Redis without waiting, or, when its failure policy decided
 * (@p local), to its local fallback (a fail-open took nothing). Else
 * through the global table's refund, from a caller's thread. */
static void give_back(admit_guard_t* g, bool local) {
  if (g->redis != NULL) {
    if (local)
      admit__redis_limiter_refund_local(g->redis, g->key, g->key_len,
                                        g->cost);
    else
      redis_refund_async(g, g->cost);
    return;
  }
  if (g->global.refund != NULL) g->global.refund(g->global.ud, g->cost);
}

/* Gives back what replies of cancelled attempts took; runs on a caller's
 * thread, never inside a reply callback. */
static void pay_debt(admit_guard_t* g) {
  if (atomic_load_explicit(&g->debt, memory_order_relaxed) == 0) return;
  uint64_t n = atomic_exchange_explicit(&g->debt, 0, memory_order_acq_rel);
  for (uint64_t i = 0; i < n; i++)
    if (g->global.refund != NULL) g->global.refund(g->global.ud, g->cost);
}

int admit_guard_new(admit_guard_t** out, const admit_guard_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  admit_guard_options_t o = {0};
  if (opts != NULL) o = *opts;
  if (o.global != NULL && o.global->try_acquire == NULL) return ADMIT_EINVAL;
  if (o.global != NULL && o.redis != NULL) return ADMIT_EINVAL;
  if (o.redis_key != NULL &&
      (strlen(o.redis_key) == 0 || strlen(o.redis_key) > GUARD_NAME_MAX))
    return ADMIT_EINVAL;
  if (o.priority < 0 || o.priority >= ADMIT_PRIORITIES_MAX)
    return ADMIT_EINVAL;
  if (!(o.retry_ratio >= 0)) return ADMIT_EINVAL;
  if (o.name != NULL && strlen(o.name) > GUARD_NAME_MAX) return ADMIT_EINVAL;
  admit_guard_t* g = admit__calloc(1, sizeof(*g));
  if (g == NULL) return ADMIT_ENOMEM;
  g->shards_mem = admit__calloc(1, sizeof(shard_slot_t) * GUARD_SHARDS + 64);
  if (g->shards_mem == NULL) {
    admit__free(g);
    return ADMIT_ENOMEM;
  }
  g->shards = (shard_slot_t*)(((uintptr_t)g->shards_mem + 63) & ~(uintptr_t)63);
  admit__clock_init(&g->clock, o.clock);
  snprintf(g->name, sizeof(g->name), "%s", o.name ? o.name : "default");
  g->breaker = o.breaker;
  g->local = o.local;
  g->sem = o.semaphore;
  if (o.global != NULL) {
    g->global = *o.global;
    g->has_global = 1;
  } else if (o.redis != NULL) {
    g->redis = o.redis;
    snprintf(g->key, sizeof(g->key), "%s", o.redis_key ? o.redis_key : g->name);
    g->key_len = strlen(g->key);
    /* Refunds go through give_back(), pauses through admit_guard_pause()
     * and admit_guard_pause_cb(). */
    g->global.try_acquire = redis_try;
    g->global.try_async = redis_try_async;
    g->global.ud = g;
    g->has_global = 1;
  }
  g->priority = o.priority;
  g->cost = o.cost ? o.cost : 1;
  g->call_timeout = o.call_timeout_ns ? o.call_timeout_ns
                                      : 30ull * ADMIT_SECOND;
  g->max_attempts = o.max_attempts ? o.max_attempts : 3;
  g->retry_on = o.retry_on ? o.retry_on
                           : (1u << ADMIT_OUTCOME_FAILURE) |
                                 (1u << ADMIT_OUTCOME_TIMEOUT) |
                                 (1u << ADMIT_OUTCOME_VENDOR_LIMITED);
  g->backoff_base = o.backoff_base_ns ? o.backoff_base_ns
                                      : 100ull * ADMIT_MILLISECOND;
  g->backoff_max = o.backoff_max_ns ? o.backoff_max_ns : 10ull * ADMIT_SECOND;
  g->retry_ratio = o.retry_ratio > 0 ? o.retry_ratio : 0.2;
  g->retry_min = o.retry_min ? o.retry_min : 10;
  g->low_water = o.quota_low_water;
  uint64_t window = o.window_ns ? o.window_ns : 10ull * ADMIT_SECOND;
  g->bucket_ns = window / WINDOW_BUCKETS ? window / WINDOW_BUCKETS : 1;
  *out = g;
  return 0;
}

void admit_guard_free(admit_guard_t* g) {
  if (g == NULL) return;
  /* Replies for cancelled attempts, and the Redis stage's refunds and
   * pauses, refer to the guard until they land; they are bounded by the
   * global stage's own timeouts. A reply may start a refund before it is
   * counted out, so ops is drained before bg is read. */
  while (atomic_load_explicit(&g->ops, memory_order_acquire) != 0 ||
         atomic_load_explicit(&g->bg, memory_order_acquire) != 0)
    admit_sleep_ns(ADMIT_MILLISECOND);
  pay_debt(g);
  admit__free(g->shards_mem);
  admit__free(g);
}

void admit_guard_notify_post(void* ud) {
  admit_notify_post((admit_notify_node_t*)ud, 0);
}

const char* admit_guard_name(const admit_guard_t* g) {
  return g != NULL ? g->name : NULL;
}

/* --- giving back ---------------------------------------------------------- */

/* Frees a reply record. Units it took for an attempt that is gone (@p
 * owe) go back: the Redis stage's at once (asynchronously, so this may run
 * in a reply callback); a global table's are owed, since a reply callback
 * must not make a blocking refund, and the guard's next caller pays them. */
static void op_finish(admit_guard_t* g, gop_t* op, bool owe) {
  if (owe && op->status >= 0 && op->d.allowed) {
    if (g->redis != NULL)
      give_back(g, op->status == ADMIT_REDIS_LOCAL);
    else
      atomic_fetch_add_explicit(&g->debt, 1, memory_order_relaxed);
  }
  admit__free(op);
  atomic_fetch_sub_explicit(&g->ops, 1, memory_order_release);
}

/* The replying thread's side of an asynchronous global decision. */
static void op_done(void* arg, int status, const admit_decision_t* d) {
  gop_t* op = arg;
  op->status = status;
  if (d != NULL) op->d = *d;
  if (status >= 0 && d == NULL) op->status = ADMIT_EPROTO;
  admit_guard_notify_cb notify = op->notify;
  void* ud = op->notify_ud;
  int expect = OP_PENDING;
  if (atomic_compare_exchange_strong_explicit(&op->state, &expect,
                                              OP_NOTIFIED,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
    return; /* the owner is still stepping and will collect it */
  expect = OP_PARKED;
  if (atomic_compare_exchange_strong_explicit(&op->state, &expect, OP_DONE,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
    if (notify != NULL) notify(ud);
    atomic_store_explicit(&op->state, OP_NOTIFIED, memory_order_release);
    return;
  }
  /* The owner walked away: give back what this reply took. */
  op_finish(op->g, op, true);
}

/* Owner side: abandons or collects an outstanding reply. */
static void op_abandon(admit_guard_t* g, gop_t* op) {
  int expect = atomic_load_explicit(&op->state, memory_order_acquire);
  while ((expect == OP_PENDING || expect == OP_PARKED) &&
         !atomic_compare_exchange_weak_explicit(&op->state, &expect,
                                                OP_ABANDONED,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
  }
  if (expect == OP_PENDING || expect == OP_PARKED) return; /* op_done frees */
  while (atomic_load_explicit(&op->state, memory_order_acquire) != OP_NOTIFIED)
    sched_yield();
  op_finish(g, op, true); /* a table's debt: paid by release_all */
}

/* The semaphore's grant for a queued asynchronous waiter. */
static void sem_granted(void* ud, uint64_t ticket, int status) {
  (void)ticket;
  admit_guard_permit_t* p = ud;
  admit_guard_notify_cb notify = p->notify_;
  void* nud = p->notify_ud_;
  uint32_t f = F_SEM_GRANTED | (status != 0 ? F_SEM_CLOSED : 0);
  uint32_t was = __atomic_fetch_or(&p->flags_, f, __ATOMIC_ACQ_REL);
  if ((was & F_SEM_PARKED) && notify != NULL) notify(nud);
  __atomic_fetch_or(&p->flags_, F_SEM_NOTIFIED, __ATOMIC_RELEASE);
}

/* Withdraws a queued semaphore waiter; returns 1 if it ended up holding
 * the permit after all. */
static int semq_withdraw(admit_guard_permit_t* p) {
  admit_guard_t* g = p->guard_;
  p->held_ &= ~H_SEMQ;
  if (admit_semaphore_cancel(g->sem, p->sem_ticket_) == 1) return 0;
  /* Granted already: wait for the callback's last touch. */
  spin_until_u32(&p->flags_, F_SEM_NOTIFIED);
  return (load_u32(&p->flags_) & F_SEM_CLOSED) ? 0 : 1;
}

/* Gives back everything @p p holds, latest stage first. */
static void release_all(admit_guard_permit_t* p) {
  admit_guard_t* g = p->guard_;
  if (p->held_ & H_SEMQ) {
    if (semq_withdraw(p)) p->held_ |= H_SEM;
  }
  if (p->held_ & H_SEM) admit_semaphore_release(g->sem);
  if (p->held_ & H_OP) op_abandon(g, (gop_t*)p->op_);
  p->op_ = NULL;
  if (p->held_ & H_GLOBAL) give_back(g, (p->held_ & H_GLOBAL_LOCAL) != 0);
  if (p->held_ & H_LOCAL) admit_limiter_cancel(g->local, &p->local_);
  if (p->held_ & H_BREAKER) admit_breaker_abandon(g->breaker, p->breaker_token_);
  p->held_ = 0;
  pay_debt(g);
}

/* Ends a waiting attempt with @p rc at its current stage. */
static int refuse(admit_guard_permit_t* p, int rc, int counter,
                  uint64_t retry_after) {
  admit_guard_t* g = p->guard_;
  release_all(p);
  p->error = rc;
  p->retry_after_ns = retry_after;
  count(g, counter);
  __atomic_store_n(&p->state_, ST_DONE, __ATOMIC_RELEASE);
  return rc;
}

/* --- the stages ----------------------------------------------------------- */

static void permit_init(admit_guard_t* g, admit_guard_permit_t* p,
                        uint64_t now, uint64_t queue_timeout,
                        admit_guard_notify_cb notify, void* ud) {
  memset(p, 0, sizeof(*p));
  p->guard_ = g;
  p->notify_ = notify;
  p->notify_ud_ = ud;
  p->started_ns_ = now;
  p->queue_deadline_ns = admit__deadline(now, queue_timeout);
  p->stage = ADMIT_GUARD_STAGE_BREAKER;
  p->state_ = ST_WAITING;
}

static int admitted(admit_guard_permit_t* p, uint64_t now) {
  admit_guard_t* g = p->guard_;
  p->admitted_ns_ = now;
  p->call_timeout_ns = g->call_timeout;
  p->call_deadline_ns = admit__sat_add(now, g->call_timeout);
  p->stage = ADMIT_GUARD_STAGE_CALL;
  shard_t* sh = shard(g);
  bump(&sh->c[C_ADMITTED], 1);
  observe(&sh->queue_wait, admit__sat_sub(now, p->started_ns_));
  __atomic_store_n(&p->state_, ST_READY, __ATOMIC_RELEASE);
  return ADMIT_GUARD_READY;
}

/* Acts on a global decision (from try_acquire or an asynchronous reply).
 * Returns -1 to go on to the next stage, or a step result. */
static int global_decided(admit_guard_permit_t* p, uint64_t now, int status,
                          const admit_decision_t* d, uint64_t* wait_ns) {
  if (status < 0) return refuse(p, status, C_ERRORS, 0);
  /* Status above 0 (e.g. ADMIT_REDIS_LOCAL) is a decision all the same. */
  if (d->allowed) {
    p->held_ |= H_GLOBAL;
    if (p->guard_->redis != NULL && status == ADMIT_REDIS_LOCAL)
      p->held_ |= H_GLOBAL_LOCAL;
    p->stage = ADMIT_GUARD_STAGE_SEMAPHORE;
    return -1;
  }
  /* A denial must name a wait; 0 would spin, so it counts as 1 ns. */
  uint64_t ra = d->retry_after_ns ? d->retry_after_ns : 1;
  uint64_t rem = admit__sat_sub(p->queue_deadline_ns, now);
  if (ra > rem) return refuse(p, ADMIT_ETIMEDOUT, C_REJ_GLOBAL, ra);
  p->not_before_ns_ = admit__sat_add(now, ra);
  *wait_ns = ra;
  return ADMIT_GUARD_WAIT;
}

/* Re-checks the vendor pause after a wait (a 429 may have come meanwhile).
 * Returns -1 to go on; else a step result: refused at once when the pause
 * outlasts the queue time left (everything held given back), or a WAIT
 * until it ends (the current stage then goes on). */
static int pause_recheck(admit_guard_permit_t* p, uint64_t now,
                         uint64_t* wait_ns) {
  uint64_t until =
      atomic_load_explicit(&p->guard_->pause_until, memory_order_acquire);
  if (until <= now) return -1;
  uint64_t w = until - now;
  if (w > admit__sat_sub(p->queue_deadline_ns, now)) {
    p->stage = ADMIT_GUARD_STAGE_PAUSE;
    return refuse(p, ADMIT_ETIMEDOUT, C_REJ_PAUSE, w);
  }
  p->not_before_ns_ = until;
  *wait_ns = w;
  return ADMIT_GUARD_WAIT;
}

/* Holding a semaphore slot: admits, unless a pause began while waiting for
 * it; then the slot goes back and the attempt waits the pause out (or is
 * refused) before asking the semaphore again. */
static int sem_admit(admit_guard_permit_t* p, uint64_t now,
                     uint64_t* wait_ns) {
  uint64_t until =
      atomic_load_explicit(&p->guard_->pause_until, memory_order_acquire);
  if (until <= now) return admitted(p, now);
  if (until - now <= admit__sat_sub(p->queue_deadline_ns, now)) {
    p->held_ &= ~H_SEM;
    admit_semaphore_release(p->guard_->sem);
  }
  return pause_recheck(p, now, wait_ns);
}

static int step_at(admit_guard_permit_t* p, uint64_t now, int blocking,
                   uint64_t* wait_ns) {
  admit_guard_t* g = p->guard_;
  uint32_t st = load_u32(&p->state_);
  if (st == ST_READY) return ADMIT_GUARD_READY;
  if (st != ST_WAITING) return ADMIT_EINVAL;
  *wait_ns = 0;
  if (now < p->not_before_ns_) {
    *wait_ns = p->not_before_ns_ - now;
    return ADMIT_GUARD_WAIT;
  }
  for (;;) {
    uint64_t rem = admit__sat_sub(p->queue_deadline_ns, now);
    switch (p->stage) {
      case ADMIT_GUARD_STAGE_BACKOFF:
        p->stage = ADMIT_GUARD_STAGE_BREAKER;
        break;

      case ADMIT_GUARD_STAGE_BREAKER:
        if (g->breaker != NULL) {
          int rc = admit_breaker_enter(g->breaker, &p->breaker_token_);
          if (rc < 0)
            return refuse(p, rc, rc == ADMIT_EOPEN ? C_REJ_BREAKER : C_ERRORS,
                          0);
          p->held_ |= H_BREAKER;
        }
        p->stage = ADMIT_GUARD_STAGE_PAUSE;
        break;

      case ADMIT_GUARD_STAGE_PAUSE: {
        uint64_t until =
            atomic_load_explicit(&g->pause_until, memory_order_acquire);
        if (until > now) {
          uint64_t w = until - now;
          if (w > rem) return refuse(p, ADMIT_ETIMEDOUT, C_REJ_PAUSE, w);
          p->not_before_ns_ = until;
          *wait_ns = w;
          return ADMIT_GUARD_WAIT;
        }
        p->stage = ADMIT_GUARD_STAGE_LOCAL;
        break;
      }

      case ADMIT_GUARD_STAGE_LOCAL:
        if (g->local != NULL && !(p->held_ & H_LOCAL)) {
          admit_decision_t d;
          int rc = admit_limiter_reserve(g->local, g->cost, rem, &p->local_,
                                         &d);
          if (rc == ADMIT_ETIMEDOUT)
            return refuse(p, rc, C_REJ_LOCAL, d.retry_after_ns);
          if (rc < 0) return refuse(p, rc, C_ERRORS, 0);
          if (p->local_.reserved) p->held_ |= H_LOCAL;
          if (p->local_.wait_ns > 0 || !p->local_.reserved) {
            /* Reserved: wait for its turn. A window took nothing and is
             * asked again after the wait (never less than 1 ns, so a
             * confused answer cannot spin). */
            uint64_t w = p->local_.wait_ns ? p->local_.wait_ns : 1;
            p->not_before_ns_ = admit__sat_add(now, w);
            *wait_ns = w;
            return ADMIT_GUARD_WAIT;
          }
        }
        p->stage = ADMIT_GUARD_STAGE_GLOBAL;
        break;

      case ADMIT_GUARD_STAGE_GLOBAL: {
        if (!(p->held_ & H_OP)) {
          /* After the local wait (or the global one): paused meanwhile? */
          int r = pause_recheck(p, now, wait_ns);
          if (r != -1) return r;
        }
        if (!g->has_global) {
          p->stage = ADMIT_GUARD_STAGE_SEMAPHORE;
          break;
        }
        if (p->held_ & H_OP) {
          gop_t* op = p->op_;
          int s = atomic_load_explicit(&op->state, memory_order_acquire);
          if (s == OP_PARKED) {
            *wait_ns = rem;
            if (rem == 0) return refuse(p, ADMIT_ETIMEDOUT, C_QUEUE_TIMEOUT, 0);
            return ADMIT_GUARD_PENDING;
          }
          while (s != OP_NOTIFIED) {
            sched_yield();
            s = atomic_load_explicit(&op->state, memory_order_acquire);
          }
          p->held_ &= ~H_OP;
          p->op_ = NULL;
          int status = op->status;
          admit_decision_t d = op->d;
          op_finish(g, op, false);
          int r = global_decided(p, now, status, &d, wait_ns);
          if (r != -1) return r;
          break;
        }
        if (!blocking && g->global.try_async != NULL) {
          gop_t* op = admit__calloc(1, sizeof(*op));
          if (op == NULL) return refuse(p, ADMIT_ENOMEM, C_ERRORS, 0);
          atomic_init(&op->state, OP_PENDING);
          op->g = g;
          op->notify = p->notify_;
          op->notify_ud = p->notify_ud_;
          atomic_fetch_add_explicit(&g->ops, 1, memory_order_relaxed);
          p->op_ = op;
          p->held_ |= H_OP;
          int rc = g->global.try_async(g->global.ud, g->cost, op_done, op);
          if (rc < 0) {
            p->held_ &= ~H_OP;
            p->op_ = NULL;
            admit__free(op);
            atomic_fetch_sub_explicit(&g->ops, 1, memory_order_release);
            return refuse(p, rc, C_ERRORS, 0);
          }
          /* Park, unless the reply is already in: then the loop collects
           * it and nobody is notified. */
          int expect = OP_PENDING;
          if (atomic_compare_exchange_strong_explicit(
                  &op->state, &expect, OP_PARKED, memory_order_acq_rel,
                  memory_order_acquire)) {
            *wait_ns = rem;
            return ADMIT_GUARD_PENDING;
          }
          break;
        }
        admit_decision_t d;
        memset(&d, 0, sizeof(d));
        int rc = g->global.try_acquire(g->global.ud, g->cost, &d);
        int r = global_decided(p, now, rc, &d, wait_ns);
        if (r != -1) return r;
        break;
      }

      case ADMIT_GUARD_STAGE_SEMAPHORE: {
        if (!(p->held_ & H_SEMQ)) {
          /* After the global stage's wait for its reply: paused? */
          int r = pause_recheck(p, now, wait_ns);
          if (r != -1) return r;
        }
        if (g->sem == NULL) return admitted(p, now);
        if (p->held_ & H_SEMQ) {
          uint32_t f = load_u32(&p->flags_);
          if (!(f & F_SEM_GRANTED) && rem > 0) {
            *wait_ns = rem;
            return ADMIT_GUARD_PENDING;
          }
          /* Granted, or out of time (a grant may still race the cancel). */
          if (!semq_withdraw(p)) {
            if (load_u32(&p->flags_) & F_SEM_CLOSED)
              return refuse(p, ADMIT_ECLOSED, C_ERRORS, 0);
            return refuse(p, ADMIT_ETIMEDOUT, C_QUEUE_TIMEOUT, 0);
          }
          p->held_ |= H_SEM;
          return sem_admit(p, now, wait_ns);
        }
        int rc = admit_semaphore_try(g->sem);
        if (rc == 1) {
          p->held_ |= H_SEM;
          return admitted(p, now);
        }
        if (rc < 0) return refuse(p, rc, C_ERRORS, 0);
        if (blocking) {
          rc = admit_semaphore_acquire(
              g->sem, g->priority,
              p->queue_deadline_ns == UINT64_MAX ? ADMIT_FOREVER : rem);
          if (rc == 0) {
            p->held_ |= H_SEM;
            return sem_admit(p, now_of(g), wait_ns);
          }
          if (rc == ADMIT_EFULL) return refuse(p, rc, C_REJ_SEM, 0);
          if (rc == ADMIT_ETIMEDOUT)
            return refuse(p, rc, C_QUEUE_TIMEOUT, 0);
          return refuse(p, rc, C_ERRORS, 0);
        }
        if (rem == 0) return refuse(p, ADMIT_ETIMEDOUT, C_QUEUE_TIMEOUT, 0);
        __atomic_store_n(&p->flags_, 0, __ATOMIC_RELEASE);
        rc = admit_semaphore_acquire_async(g->sem, g->priority, sem_granted, p,
                                           &p->sem_ticket_);
        if (rc == 1) {
          p->held_ |= H_SEM;
          return admitted(p, now);
        }
        if (rc == ADMIT_EFULL) return refuse(p, rc, C_REJ_SEM, 0);
        if (rc < 0) return refuse(p, rc, C_ERRORS, 0);
        p->held_ |= H_SEMQ;
        /* Park, unless the grant is already in (then nobody is notified
         * and the loop collects it). */
        if (__atomic_fetch_or(&p->flags_, F_SEM_PARKED, __ATOMIC_ACQ_REL) &
            F_SEM_GRANTED)
          break;
        *wait_ns = rem;
        return ADMIT_GUARD_PENDING;
      }

      default:
        return ADMIT_EINVAL;
    }
  }
}

/* --- the public API ------------------------------------------------------- */

int admit_guard_start(admit_guard_t* g, admit_guard_permit_t* p,
                      uint64_t queue_timeout_ns, admit_guard_notify_cb notify,
                      void* ud) {
  if (g == NULL || p == NULL) return ADMIT_EINVAL;
  pay_debt(g);
  uint64_t now = now_of(g);
  permit_init(g, p, now, queue_timeout_ns, notify, ud);
  tick(g, now);
  count(g, C_STARTED);
  return 0;
}

int admit_guard_step(admit_guard_permit_t* p, uint64_t* wait_ns) {
  if (p == NULL || wait_ns == NULL || !in_attempt(p)) return ADMIT_EINVAL;
  return step_at(p, now_of(p->guard_), 0, wait_ns);
}

static int wait_from(admit_guard_permit_t* p, uint64_t now) {
  admit_guard_t* g = p->guard_;
  for (;;) {
    uint64_t w = 0;
    int rc = step_at(p, now, 1, &w);
    if (rc == ADMIT_GUARD_READY) return 0;
    if (rc < 0) return rc;
    if (rc == ADMIT_GUARD_PENDING) {
      /* Only when a step() queued something asynchronously before this
       * blocking wait: poll it, at most every millisecond. */
      if (w > ADMIT_MILLISECOND) w = ADMIT_MILLISECOND;
      if (w == 0) w = 1;
    }
    admit__clock_sleep(&g->clock, w);
    now = now_of(g);
  }
}

int admit_guard_wait(admit_guard_permit_t* p) {
  if (p == NULL || !in_attempt(p)) return ADMIT_EINVAL;
  return wait_from(p, now_of(p->guard_));
}

int admit_guard_enter(admit_guard_t* g, admit_guard_permit_t* p,
                      uint64_t queue_timeout_ns) {
  if (g == NULL || p == NULL) return ADMIT_EINVAL;
  pay_debt(g);
  uint64_t now = now_of(g);
  permit_init(g, p, now, queue_timeout_ns, NULL, NULL);
  tick(g, now);
  count(g, C_STARTED);
  return wait_from(p, now);
}

int admit_guard_leave(admit_guard_permit_t* p, int outcome) {
  if (p == NULL || outcome < ADMIT_OUTCOME_SUCCESS ||
      outcome > ADMIT_OUTCOME_CANCELLED)
    return ADMIT_EINVAL;
  /* Exactly once, even if two threads race to leave. */
  if (!cas_u32(&p->state_, ST_READY, ST_DONE)) return ADMIT_EINVAL;
  admit_guard_t* g = p->guard_;
  uint64_t now = now_of(g);
  uint64_t took = admit__sat_sub(now, p->admitted_ns_);
  if (p->held_ & H_BREAKER)
    admit_breaker_leave(g->breaker, p->breaker_token_, outcome, took);
  if (p->held_ & H_SEM) admit_semaphore_release(g->sem);
  /* The limiters' units were spent on the call: nothing to give back. */
  p->held_ = 0;
  p->stage = ADMIT_GUARD_STAGE_DONE;
  static const int counters[] = {C_SUCCEEDED, C_FAILED, C_CALL_TIMEOUT,
                                 C_VENDOR_LIMITED, C_CANCEL_CALL};
  static const int errors[] = {0, ADMIT_ECALL, ADMIT_ETIMEDOUT,
                               ADMIT_ELIMITED, ADMIT_ECANCELED};
  p->error = errors[outcome];
  tick(g, now);
  shard_t* sh = shard(g);
  bump(&sh->c[counters[outcome]], 1);
  observe(&sh->call_time, took);
  return 0;
}

int admit_guard_cancel(admit_guard_permit_t* p) {
  if (p == NULL) return ADMIT_EINVAL;
  uint32_t st = load_u32(&p->state_);
  if (st == ST_DONE && p->guard_ != NULL) return 0;
  if (!in_attempt(p)) return ADMIT_EINVAL;
  if (st == ST_READY) {
    admit_guard_leave(p, ADMIT_OUTCOME_CANCELLED);
    return 0;
  }
  if (st != ST_WAITING) return ADMIT_EINVAL;
  refuse(p, ADMIT_ECANCELED, C_CANCEL_WAIT, 0);
  return 0;
}

/* Capped exponential backoff with full jitter. */
static uint64_t backoff(const admit_guard_t* g, uint32_t attempt) {
  uint64_t cap = g->backoff_base;
  for (uint32_t i = 0; i < attempt && cap < g->backoff_max; i++)
    cap = admit__sat_mul(cap, 2);
  if (cap > g->backoff_max) cap = g->backoff_max;
  return admit__random_below(cap);
}

int admit_guard_retry(admit_guard_permit_t* p, uint64_t queue_timeout_ns,
                      uint64_t* delay_ns) {
  if (p == NULL || p->guard_ == NULL) return ADMIT_EINVAL;
  if (load_u32(&p->state_) != ST_DONE) return ADMIT_EINVAL;
  admit_guard_t* g = p->guard_;
  if (p->attempt + 1 >= g->max_attempts) return 0;
  uint64_t now = now_of(g);
  uint64_t w[W_COUNT];
  window_sum(g, now, w);
  double allowed = (double)g->retry_min + g->retry_ratio * (double)w[W_CALLS];
  if ((double)(w[W_RETRIES] + 1) > allowed) {
    count(g, C_RETRIES_DENIED);
    p->error = ADMIT_ELIMITED;
    return 0;
  }
  tick(g, now);
  count(g, C_RETRIES);
  uint32_t attempt = p->attempt + 1;
  uint64_t delay = backoff(g, p->attempt);
  uint64_t begin = admit__sat_add(now, delay);
  permit_init(g, p, begin, queue_timeout_ns, p->notify_, p->notify_ud_);
  p->attempt = attempt;
  p->not_before_ns_ = begin;
  p->stage = ADMIT_GUARD_STAGE_BACKOFF;
  count(g, C_STARTED);
  if (delay_ns != NULL) *delay_ns = delay;
  return 1;
}

/* Pauses this process's guard until now + @p pause_ns (never shortening
 * a longer pause) and counts it. */
static void pause_local(admit_guard_t* g, uint64_t pause_ns) {
  uint64_t until = admit__sat_add(now_of(g), pause_ns);
  uint64_t cur = atomic_load_explicit(&g->pause_until, memory_order_relaxed);
  while (cur < until &&
         !atomic_compare_exchange_weak_explicit(&g->pause_until, &cur, until,
                                                memory_order_acq_rel,
                                                memory_order_relaxed)) {
  }
  count(g, C_PAUSES);
}

int admit_guard_pause(admit_guard_t* g, uint64_t pause_ns) {
  if (g == NULL) return ADMIT_EINVAL;
  if (pause_ns == 0) return 0;
  pause_local(g, pause_ns);
  if (g->redis != NULL) {
    int rc = admit_redis_limiter_pause(g->redis, g->key, g->key_len,
                                       pause_ns, NULL);
    return rc < 0 ? rc : 0;
  }
  if (g->has_global && g->global.pause != NULL) {
    int rc = g->global.pause(g->global.ud, pause_ns);
    if (rc < 0) return rc;
  }
  return 0;
}

int admit_guard_pause_cb(admit_guard_t* g, uint64_t pause_ns,
                         admit_guard_done_cb cb, void* ud) {
  if (g == NULL) return ADMIT_EINVAL;
  if (pause_ns > 0) pause_local(g, pause_ns);
  if (pause_ns > 0 && g->redis != NULL) {
    /* Never waits for Redis; a pause that fails is counted in the
     * limiter's stats, and this process's own pause holds anyway. */
    int rc = redis_pause_async(g, pause_ns, cb, ud);
    return rc < 0 ? rc : 0;
  }
  if (pause_ns > 0 && g->has_global && g->global.pause != NULL) {
    int rc = g->global.pause(g->global.ud, pause_ns);
    if (rc < 0) return rc;
  }
  if (cb != NULL) cb(ud, 0);
  return 0;
}

int admit_guard_vendor_quota(admit_guard_t* g, uint64_t remaining,
                             uint64_t reset_after_ns) {
  if (g == NULL) return ADMIT_EINVAL;
  if (remaining > g->low_water || reset_after_ns == 0) return 0;
  int rc = admit_guard_pause_cb(g, reset_after_ns, NULL, NULL);
  return rc < 0 ? rc : 1;
}

int admit_guard_call(admit_guard_t* g, uint64_t queue_timeout_ns,
                     admit_guard_fn fn, void* ud, admit_guard_permit_t* last) {
  if (g == NULL || fn == NULL) return ADMIT_EINVAL;
  admit_guard_permit_t local;
  admit_guard_permit_t* p = last != NULL ? last : &local;
  /* Queue time not spent yet, across attempts (ADMIT_FOREVER: none). */
  uint64_t left = queue_timeout_ns;
  int rc = admit_guard_enter(g, p, queue_timeout_ns);
  for (;;) {
    /* A stage refused: the guard's own refusal, never retried (the
     * attempt gave back everything it held). */
    if (rc != 0) return rc;
    /* The attempt waited from its start (after any backoff) to its
     * admission; the backoff is not queue time. */
    if (left != ADMIT_FOREVER)
      left = admit__sat_sub(left,
                            admit__sat_sub(p->admitted_ns_, p->started_ns_));
    int outcome = fn(ud, p);
    if (outcome < ADMIT_OUTCOME_SUCCESS || outcome > ADMIT_OUTCOME_CANCELLED)
      outcome = ADMIT_OUTCOME_FAILURE;
    admit_guard_leave(p, outcome);
    if (outcome == ADMIT_OUTCOME_SUCCESS) return 0;
    rc = p->error;
    if (!(g->retry_on & (1u << outcome)) ||
        admit_guard_retry(p, left, NULL) != 1)
      return rc;
    rc = admit_guard_wait(p);
  }
}

/* For health.c (declared there too): the guard's borrowed semaphore, so
 * that guards sharing one are counted once. */
admit_semaphore_t* admit__guard_semaphore(const admit_guard_t* g);
admit_semaphore_t* admit__guard_semaphore(const admit_guard_t* g) {
  return g != NULL ? g->sem : NULL;
}

static void histo_sum(admit_guard_t* g, size_t off, admit_histogram_t* out) {
  memset(out, 0, sizeof(*out));
  for (int k = 0; k < GUARD_SHARDS; k++) {
    admit_histogram_t h;
    admit__histo_read((admit__histo_t*)((char*)&g->shards[k].s + off), &h);
    out->count += h.count;
    out->sum_ns += h.sum_ns;
    for (int i = 0; i < ADMIT_HISTOGRAM_BUCKETS; i++) out->le[i] += h.le[i];
  }
}

int admit_guard_metrics(admit_guard_t* g, admit_guard_metrics_t* out) {
  if (g == NULL || out == NULL) return ADMIT_EINVAL;
  memset(out, 0, sizeof(*out));
  uint64_t now = now_of(g);
  uint64_t w[W_COUNT];
  window_sum(g, now, w);
  out->recent_calls = w[W_LEFT];
  out->recent_errors = w[W_ERRORS];
  uint64_t c[C_COUNT];
  totals(g, c);
  out->started = c[C_STARTED];
  out->admitted = c[C_ADMITTED];
  out->rejected_breaker = c[C_REJ_BREAKER];
  out->rejected_pause = c[C_REJ_PAUSE];
  out->rejected_local = c[C_REJ_LOCAL];
  out->rejected_global = c[C_REJ_GLOBAL];
  out->rejected_semaphore = c[C_REJ_SEM];
  out->queue_timeouts = c[C_QUEUE_TIMEOUT];
  out->errors = c[C_ERRORS];
  out->cancelled = c[C_CANCEL_WAIT] + c[C_CANCEL_CALL];
  out->succeeded = c[C_SUCCEEDED];
  out->failed = c[C_FAILED];
  out->call_timeouts = c[C_CALL_TIMEOUT];
  out->vendor_limited = c[C_VENDOR_LIMITED];
  out->retries = c[C_RETRIES];
  out->retries_denied = c[C_RETRIES_DENIED];
  out->pauses = c[C_PAUSES];
  /* The gauges are differences of counters (read a moment apart from each
   * other, hence saturating). */
  uint64_t left = c[C_SUCCEEDED] + c[C_FAILED] + c[C_CALL_TIMEOUT] +
                  c[C_VENDOR_LIMITED] + c[C_CANCEL_CALL];
  uint64_t refused = c[C_REJ_BREAKER] + c[C_REJ_PAUSE] + c[C_REJ_LOCAL] +
                     c[C_REJ_GLOBAL] + c[C_REJ_SEM] + c[C_QUEUE_TIMEOUT] +
                     c[C_ERRORS] + c[C_CANCEL_WAIT];
  out->in_flight = admit__sat_sub(c[C_ADMITTED], left);
  out->waiting = admit__sat_sub(c[C_STARTED], c[C_ADMITTED] + refused);
  out->breaker_state = -1;
  if (g->breaker != NULL) {
    admit_breaker_stats_t bs;
    if (admit_breaker_stats(g->breaker, &bs) == 0) {
      out->breaker_state = (int32_t)bs.state;
      out->breaker_opened = bs.opened;
      out->breaker_half_opened = bs.half_opened;
      out->breaker_closed = bs.closed;
    }
  }
  if (g->sem != NULL) {
    admit_semaphore_stats_t ss;
    if (admit_semaphore_stats(g->sem, &ss) == 0) {
      out->capacity = ss.capacity;
      out->capacity_in_use = ss.in_use;
    }
  }
  out->paused_for_ns = admit__sat_sub(
      atomic_load_explicit(&g->pause_until, memory_order_relaxed), now);
  out->global_degraded = -1;
  if (g->redis != NULL) {
    admit_redis_limiter_stats_t rs;
    if (admit_redis_limiter_stats(g->redis, &rs) == 0)
      out->global_degraded = rs.degraded ? 1 : 0;
  }
  histo_sum(g, offsetof(shard_t, queue_wait), &out->queue_wait);
  histo_sum(g, offsetof(shard_t, call_time), &out->call_time);
  return 0;
}
