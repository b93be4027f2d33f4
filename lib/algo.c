/* The limiting algorithms: pure integer math over state cells.
 *
 * The semantics are specified at the top of algo.h; this file follows it
 * line by line. Every rate is first evaluated on its own (does the cost fit
 * now, and if not, when), then the rates are combined all-or-nothing. */
#include "algo.h"

#include <string.h>

typedef unsigned __int128 u128;

/* A retry_after or reset_after that will never come. */
#define NEVER UINT64_MAX

/* The entry points below are written once, over any algorithm and any
 * number of rates, and instantiated for each algorithm (and separately for
 * a single rate) by passing constants to these always-inlined functions:
 * the compiler then drops the dispatch and the per-rate arrays and keeps
 * only the arithmetic the decision needs, while every instance stays the
 * same code, so the decisions cannot differ. */
#define INLINE static inline __attribute__((always_inline))

static uint64_t sat128(u128 x) {
  return x > UINT64_MAX ? UINT64_MAX : (uint64_t)x;
}

/* What one rate says about a cost at a time, before anything changes. */
typedef struct eval_s {
  uint64_t retry;     /* 0 if the cost fits now, NEVER if it never will */
  uint64_t remaining; /* largest cost that fits now */
  uint64_t reset;     /* until the cell is fresh */
  uint64_t reset_charged; /* the same once the cost is charged now */
  /* Windows: the (possibly clamped) window and the decoded counts. */
  uint64_t w;
  uint64_t cur;
  uint64_t prev;
} eval_t;

/* ---- token bucket -------------------------------------------------------- */

/* The largest k with base - now + k*T <= tolerance and base + k*T
 * representable. */
INLINE uint64_t bucket_room(const admit__rate_params_t* p, uint64_t base,
                            uint64_t now) {
  uint64_t backlog = base - now;
  if (backlog >= p->tolerance_ns) return 0;
  uint64_t k = admit__udiv(p->tolerance_ns - backlog, p->interval_ns,
                           p->interval_inv);
  if (base > UINT64_MAX - p->tolerance_ns) {
    uint64_t k2 = admit__udiv(UINT64_MAX - base, p->interval_ns,
                              p->interval_inv);
    if (k2 < k) k = k2;
  }
  return k;
}

INLINE void bucket_eval(const admit__rate_params_t* p, const admit__cell_t* c,
                        uint64_t now, uint64_t cost, eval_t* ev) {
  uint64_t tat = c->w0;
  uint64_t base = tat > now ? tat : now;
  /* cost <= limit (or 0 for a peek), so cost * T <= tolerance: no overflow. */
  uint64_t inc = cost * p->interval_ns;
  if (base > UINT64_MAX - inc) {
    ev->retry = NEVER;
  } else {
    uint64_t diff = base + inc - now;
    ev->retry = diff > p->tolerance_ns ? diff - p->tolerance_ns : 0;
  }
  ev->remaining = bucket_room(p, base, now);
  ev->reset = base - now;
  ev->reset_charged = ev->reset + inc;
}

/* ---- fixed window -------------------------------------------------------- */

/* The window index of @p now for a cell: now's, or the cell's own when the
 * cell is ahead (another caller saw a later clock). */
INLINE uint64_t window_of(const admit__rate_params_t* p,
                          const admit__cell_t* c, uint64_t now) {
  uint64_t w = admit__udiv(now, p->period_ns, p->period_inv);
  if (c->w0 != 0 && c->w0 - 1 > w) w = c->w0 - 1;
  return w;
}

INLINE void fixed_eval(const admit__rate_params_t* p, const admit__cell_t* c,
                       uint64_t now, uint64_t cost, eval_t* ev) {
  uint64_t w = window_of(p, c, now);
  uint64_t used = c->w0 == admit__sat_add(w, 1) ? c->w1 : 0;
  /* The next window: w + 1 as a 128-bit product, so w = UINT64_MAX works. */
  u128 next_start = ((u128)w + 1) * p->period_ns;
  uint64_t till =
      next_start > UINT64_MAX ? NEVER : (uint64_t)next_start - now;
  ev->w = w;
  ev->cur = used;
  ev->prev = 0;
  ev->retry = used + cost <= p->limit ? 0 : till;
  ev->remaining = admit__sat_sub(p->limit, used);
  ev->reset = used > 0 ? till : 0;
  ev->reset_charged = till;
}

/* ---- sliding window ------------------------------------------------------ */

static uint64_t ceil_div128(u128 n, uint64_t d) {
  return sat128((n + d - 1) / d);
}

INLINE void sliding_eval(const admit__rate_params_t* p,
                         const admit__cell_t* c, uint64_t now, uint64_t cost,
                         eval_t* ev) {
  uint64_t P = p->period_ns, C = p->limit;
  uint64_t w = window_of(p, c, now);
  u128 wstart = (u128)w * P;
  /* The cell may be ahead of now: then decide at its window's start. */
  uint64_t eff = wstart > now ? (uint64_t)wstart : now;
  uint64_t lag = eff - now;
  uint64_t e = eff - (uint64_t)wstart;
  uint64_t cur = 0, prev = 0;
  if (c->w0 != 0 && c->w0 == admit__sat_add(w, 1)) {
    cur = c->w1 & UINT32_MAX;
    prev = c->w1 >> 32;
  } else if (c->w0 != 0 && c->w0 == w) {
    prev = c->w1 & UINT32_MAX;
  }
  ev->w = w;
  ev->cur = cur;
  ev->prev = prev;

  u128 cap = (u128)C * P;
  u128 weighted = (u128)prev * (P - e);
  /* remaining = floor((C*P - cur*P - prev*(P - e)) / P)
   *           = C - cur - prev + floor(prev * e / P), or 0 if negative;
   * the division usually fits 64 bits and takes the reciprocal. */
  uint64_t pe, prod;
  if (!__builtin_mul_overflow(prev, e, &prod)) {
    pe = admit__udiv(prod, P, p->period_inv);
  } else {
    pe = (uint64_t)((u128)prev * e / P);
  }
  ev->remaining = C + pe >= cur + prev ? C + pe - cur - prev : 0;

  if ((u128)(cur + cost) * P + weighted <= cap) {
    ev->retry = 0;
  } else if (cur + cost <= C) {
    /* Fits later in this window, once prev's weight has shrunk enough:
     * prev * (P - e') <= R * P. Denied now, so prev > R >= 0. */
    uint64_t R = C - cur - cost;
    uint64_t e2 = ceil_div128((u128)(prev - R) * P, prev);
    ev->retry = admit__sat_add(e2 - e, lag);
  } else {
    /* Fits in window w + 1 (prev' = cur, cur' = 0) once
     * cost * P + cur * (P - e') <= C * P; cur > C - cost here. */
    uint64_t e2 = ceil_div128((u128)(cur - (C - cost)) * P, cur);
    u128 at = ((u128)w + 1) * P + e2;
    ev->retry = at > UINT64_MAX ? NEVER : (uint64_t)at - now;
  }

  u128 fresh_at = ((u128)w + 2) * P;
  ev->reset_charged =
      fresh_at > UINT64_MAX ? NEVER : (uint64_t)fresh_at - now;
  if (cur > 0) {
    ev->reset = ev->reset_charged;
  } else if (prev > 0) {
    u128 at = ((u128)w + 1) * P;
    ev->reset = at > UINT64_MAX ? NEVER : (uint64_t)at - now;
  } else {
    ev->reset = 0;
  }
}

/* ---- per-rate dispatch --------------------------------------------------- */

/* @p algo is a constant in every instance (see INLINE above). */
INLINE void rate_eval(admit_algo_t algo, const admit__rate_params_t* p,
                      const admit__cell_t* c, uint64_t now, uint64_t cost,
                      eval_t* ev) {
  switch (algo) {
    case ADMIT_TOKEN_BUCKET:
      bucket_eval(p, c, now, cost, ev);
      break;
    case ADMIT_FIXED_WINDOW:
      fixed_eval(p, c, now, cost, ev);
      break;
    default:
      sliding_eval(p, c, now, cost, ev);
      break;
  }
}

/* Charges @p cost to a window cell as evaluated in @p ev (it fits now). */
INLINE void window_apply(admit_algo_t algo, const eval_t* ev, uint64_t cost,
                         admit__cell_t* next) {
  next->w0 = admit__sat_add(ev->w, 1);
  if (algo == ADMIT_FIXED_WINDOW) {
    next->w1 = ev->cur + cost;
  } else {
    next->w1 = (ev->cur + cost) | (ev->prev << 32);
  }
}

INLINE bool cost_ok(const admit__algo_t* a, uint32_t n, uint64_t cost) {
  /* cost - 1 wraps for 0, so one comparison rejects 0 and > limit. */
  for (uint32_t i = 0; i < n; i++) {
    if (cost - 1 >= a->r[i].limit) return false;
  }
  return true;
}

/* Fills @p d for an allowed decision from the cells as they are after it. */
INLINE void fill_allowed(const admit__algo_t* a, admit_algo_t algo,
                         uint32_t n, const admit__cell_t* cells, uint64_t now,
                         admit_decision_t* d) {
  uint32_t best = 0;
  uint64_t best_rem = UINT64_MAX, reset = 0;
  for (uint32_t i = 0; i < n; i++) {
    eval_t ev;
    rate_eval(algo, &a->r[i], &cells[i], now, 0, &ev);
    if (ev.remaining < best_rem) {
      best_rem = ev.remaining;
      best = i;
    }
    if (ev.reset > reset) reset = ev.reset;
  }
  d->allowed = 1;
  d->limiting = best;
  d->limit = a->r[best].limit;
  d->remaining = best_rem;
  d->retry_after_ns = 0;
  d->reset_after_ns = reset;
}

/* ---- the decisions, written once ----------------------------------------- */

/* admit__algo_reserve for algorithm @p algo over @p n rates (both constant
 * in every instance; n is a->nrates). */
INLINE int reserve_impl(const admit__algo_t* a, admit_algo_t algo, uint32_t n,
                        const admit__cell_t* cur, admit__cell_t* next,
                        uint64_t now, uint64_t cost, uint64_t max_wait_ns,
                        uint64_t* wait_ns, admit_decision_t* d) {
  if (!cost_ok(a, n, cost)) return ADMIT_EINVAL;
  eval_t ev[ADMIT_RATES_MAX];
  uint64_t wait = 0, reset = 0;
  uint32_t worst = 0;
  for (uint32_t i = 0; i < n; i++) {
    rate_eval(algo, &a->r[i], &cur[i], now, cost, &ev[i]);
    if (ev[i].retry > wait) {
      wait = ev[i].retry;
      worst = i;
    }
    if (ev[i].reset > reset) reset = ev[i].reset;
  }

  if (wait == 0) {
    uint64_t best_rem = UINT64_MAX;
    uint32_t best = 0;
    reset = 0;
    for (uint32_t i = 0; i < n; i++) {
      if (algo == ADMIT_TOKEN_BUCKET) {
        uint64_t base = cur[i].w0 > now ? cur[i].w0 : now;
        next[i].w0 = base + cost * a->r[i].interval_ns;
        next[i].w1 = 0;
      } else {
        window_apply(algo, &ev[i], cost, &next[i]);
      }
      /* Charging cost units now takes exactly cost off what fits now
       * (each algorithm's remaining is linear in the units charged). */
      uint64_t rem = ev[i].remaining - cost;
      if (rem < best_rem) {
        best_rem = rem;
        best = i;
      }
      if (ev[i].reset_charged > reset) reset = ev[i].reset_charged;
    }
    if (wait_ns != NULL) *wait_ns = 0;
    if (d != NULL) {
      d->allowed = 1;
      d->limiting = best;
      d->limit = a->r[best].limit;
      d->remaining = best_rem;
      d->retry_after_ns = 0;
      d->reset_after_ns = reset;
    }
    return 1;
  }

  if (algo == ADMIT_TOKEN_BUCKET && wait != NEVER && wait <= max_wait_ns) {
    /* Charge every rate as of the time the units will be used, if every
     * new TAT is representable: checked first, so that nothing is written
     * on failure (next may be cur). */
    uint64_t at = now + wait; /* cannot overflow: the deciding TAT fits */
    bool ok = true;
    for (uint32_t i = 0; i < n; i++) {
      uint64_t base = cur[i].w0 > at ? cur[i].w0 : at;
      if (base > UINT64_MAX - cost * a->r[i].interval_ns) {
        /* Another rate's TAT would pass the end of time. */
        ok = false;
        wait = NEVER;
        worst = i;
        break;
      }
    }
    if (ok) {
      for (uint32_t i = 0; i < n; i++) {
        uint64_t base = cur[i].w0 > at ? cur[i].w0 : at;
        next[i].w0 = base + cost * a->r[i].interval_ns;
        next[i].w1 = 0;
      }
      if (wait_ns != NULL) *wait_ns = wait;
      if (d != NULL) fill_allowed(a, algo, n, next, now, d);
      return 1;
    }
  }

  if (next != cur) {
    for (uint32_t i = 0; i < n; i++) next[i] = cur[i];
  }
  if (wait_ns != NULL) *wait_ns = wait;
  if (d != NULL) {
    d->allowed = 0;
    d->limiting = worst;
    d->limit = a->r[worst].limit;
    d->remaining = ev[worst].remaining;
    d->retry_after_ns = wait;
    d->reset_after_ns = reset;
  }
  return 0;
}

/* admit__algo_peek for algorithm @p algo over @p n rates. */
INLINE void peek_impl(const admit__algo_t* a, admit_algo_t algo, uint32_t n,
                      const admit__cell_t* cur, uint64_t now,
                      admit_decision_t* d) {
  uint64_t wait = 0, reset = 0, best_rem = UINT64_MAX;
  uint32_t worst = 0, best = 0;
  eval_t ev[ADMIT_RATES_MAX];
  for (uint32_t i = 0; i < n; i++) {
    rate_eval(algo, &a->r[i], &cur[i], now, 0, &ev[i]);
    if (ev[i].retry > wait) {
      wait = ev[i].retry;
      worst = i;
    }
    if (ev[i].remaining < best_rem) {
      best_rem = ev[i].remaining;
      best = i;
    }
    if (ev[i].reset > reset) reset = ev[i].reset;
  }
  uint32_t k = wait > 0 ? worst : best;
  d->allowed = wait == 0;
  d->limiting = k;
  d->limit = a->r[k].limit;
  d->remaining = ev[k].remaining;
  d->retry_after_ns = wait;
  d->reset_after_ns = reset;
}

/* admit__algo_fresh for algorithm @p algo over @p n rates. */
INLINE bool fresh_impl(const admit__algo_t* a, admit_algo_t algo, uint32_t n,
                       const admit__cell_t* cur, uint64_t now) {
  for (uint32_t i = 0; i < n; i++) {
    eval_t ev;
    rate_eval(algo, &a->r[i], &cur[i], now, 0, &ev);
    if (ev.reset != 0) return false;
  }
  return true;
}

/* The instances: one function per algorithm and per rate count (the
 * constants 1 and 2, the common "10/minute;1000/day", or a->nrates), each
 * small enough to need few registers. */
#define INSTANCES(name, algo, n)                                             \
  static int reserve_##name(const admit__algo_t* a,                          \
                            const admit__cell_t* cur, admit__cell_t* next,   \
                            uint64_t now, uint64_t cost, uint64_t max_wait,  \
                            uint64_t* wait_ns, admit_decision_t* d) {        \
    return reserve_impl(a, algo, n, cur, next, now, cost, max_wait, wait_ns, \
                        d);                                                  \
  }                                                                          \
  static void peek_##name(const admit__algo_t* a, const admit__cell_t* cur,  \
                          uint64_t now, admit_decision_t* d) {               \
    peek_impl(a, algo, n, cur, now, d);                                      \
  }                                                                          \
  static bool fresh_##name(const admit__algo_t* a, const admit__cell_t* cur, \
                           uint64_t now) {                                   \
    return fresh_impl(a, algo, n, cur, now);                                 \
  }

INSTANCES(bucket1, ADMIT_TOKEN_BUCKET, 1)
INSTANCES(fixed1, ADMIT_FIXED_WINDOW, 1)
INSTANCES(sliding1, ADMIT_SLIDING_WINDOW, 1)
INSTANCES(bucket2, ADMIT_TOKEN_BUCKET, 2)
INSTANCES(fixed2, ADMIT_FIXED_WINDOW, 2)
INSTANCES(sliding2, ADMIT_SLIDING_WINDOW, 2)
INSTANCES(bucket, ADMIT_TOKEN_BUCKET, a->nrates)
INSTANCES(fixed, ADMIT_FIXED_WINDOW, a->nrates)
INSTANCES(sliding, ADMIT_SLIDING_WINDOW, a->nrates)

/* Calls the instance PREFIX##<shape>(a, ...) that fits @p a. */
#define DISPATCH(PREFIX, ...)                                                \
  do {                                                                       \
    if (a->nrates == 1) {                                                    \
      switch (a->algo) {                                                     \
        case ADMIT_TOKEN_BUCKET:                                             \
          return PREFIX##bucket1(a, __VA_ARGS__);                            \
        case ADMIT_FIXED_WINDOW:                                             \
          return PREFIX##fixed1(a, __VA_ARGS__);                             \
        default:                                                             \
          return PREFIX##sliding1(a, __VA_ARGS__);                           \
      }                                                                      \
    }                                                                        \
    if (a->nrates == 2) {                                                    \
      switch (a->algo) {                                                     \
        case ADMIT_TOKEN_BUCKET:                                             \
          return PREFIX##bucket2(a, __VA_ARGS__);                            \
        case ADMIT_FIXED_WINDOW:                                             \
          return PREFIX##fixed2(a, __VA_ARGS__);                             \
        default:                                                             \
          return PREFIX##sliding2(a, __VA_ARGS__);                           \
      }                                                                      \
    }                                                                        \
    switch (a->algo) {                                                       \
      case ADMIT_TOKEN_BUCKET:                                               \
        return PREFIX##bucket(a, __VA_ARGS__);                               \
      case ADMIT_FIXED_WINDOW:                                               \
        return PREFIX##fixed(a, __VA_ARGS__);                                \
      default:                                                               \
        return PREFIX##sliding(a, __VA_ARGS__);                              \
    }                                                                        \
  } while (0)

/* ---- public (internal) entry points -------------------------------------- */

int admit__algo_init(admit__algo_t* a, const admit_quota_t* q) {
  if (a == NULL || q == NULL) return ADMIT_EINVAL;
  if ((unsigned)q->algo > (unsigned)ADMIT_SLIDING_WINDOW) return ADMIT_EINVAL;
  if (q->nrates < 1 || q->nrates > ADMIT_RATES_MAX) return ADMIT_EINVAL;
  admit__algo_t t;
  memset(&t, 0, sizeof(t));
  t.algo = q->algo;
  t.nrates = q->nrates;
  for (uint32_t i = 0; i < q->nrates; i++) {
    uint64_t count = q->rates[i].count, period = q->rates[i].period_ns;
    admit__rate_params_t* p = &t.r[i];
    if (count == 0 || period == 0) return ADMIT_EINVAL;
    p->period_ns = period;
    p->period_inv = UINT64_MAX / period;
    if (q->algo == ADMIT_TOKEN_BUCKET) {
      /* More than one unit per nanosecond cannot be spaced in integer ns. */
      if (count > period) return ADMIT_EINVAL;
      uint64_t burst = q->burst[i] != 0 ? q->burst[i] : count;
      p->interval_ns = (period - 1) / count + 1;
      if (__builtin_mul_overflow(burst, p->interval_ns, &p->tolerance_ns)) {
        return ADMIT_EINVAL;
      }
      p->interval_inv = UINT64_MAX / p->interval_ns;
      p->limit = burst;
    } else {
      if (count > UINT32_MAX) return ADMIT_EINVAL;
      p->limit = count;
    }
  }
  *a = t;
  return 0;
}

int admit__algo_reserve(const admit__algo_t* a, const admit__cell_t* cur,
                        admit__cell_t* next, uint64_t now, uint64_t cost,
                        uint64_t max_wait_ns, uint64_t* wait_ns,
                        admit_decision_t* d) {
  DISPATCH(reserve_, cur, next, now, cost, max_wait_ns, wait_ns, d);
}

int admit__algo_decide(const admit__algo_t* a, const admit__cell_t* cur,
                       admit__cell_t* next, uint64_t now, uint64_t cost,
                       admit_decision_t* d) {
  DISPATCH(reserve_, cur, next, now, cost, 0, NULL, d);
}

void admit__algo_refund(const admit__algo_t* a, const admit__cell_t* cur,
                        admit__cell_t* next, uint64_t now, uint64_t cost,
                        uint64_t taken_at) {
  for (uint32_t i = 0; i < a->nrates; i++) {
    const admit__rate_params_t* p = &a->r[i];
    admit__cell_t c = cur[i];
    if (cost == 0) {
      /* Nothing to give back. */
    } else if (a->algo == ADMIT_TOKEN_BUCKET) {
      if (c.w0 > now) {
        uint64_t back = admit__sat_mul(cost, p->interval_ns);
        c.w0 = c.w0 - now > back ? c.w0 - back : now;
      }
    } else {
      /* Only while the charged window is the cell's and still current. */
      uint64_t tw = admit__udiv(taken_at, p->period_ns, p->period_inv);
      uint64_t nw = admit__udiv(now, p->period_ns, p->period_inv);
      if (c.w0 == admit__sat_add(tw, 1) && nw <= tw) {
        uint64_t used = c.w1 & UINT32_MAX;
        used -= cost < used ? cost : used;
        c.w1 = (c.w1 & ~(uint64_t)UINT32_MAX) | used;
      }
    }
    next[i] = c;
  }
}

void admit__algo_peek(const admit__algo_t* a, const admit__cell_t* cur,
                      uint64_t now, admit_decision_t* d) {
  DISPATCH(peek_, cur, now, d);
}

bool admit__algo_fresh(const admit__algo_t* a, const admit__cell_t* cur,
                       uint64_t now) {
  DISPATCH(fresh_, cur, now);
}
