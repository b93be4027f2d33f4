/* The in-process limiter: admit_limiter_t over the math in algo.c.
 *
 * Three shapes, chosen at creation:
 *
 * - A single-rate token bucket is one atomic word, the TAT, updated with a
 *   compare-and-swap loop: one clock read, one load, a few multiplies and
 *   one CAS when uncontended.
 *
 * - A single-rate fixed window is also one atomic word: the window's tag in
 *   the high bits and the units used in it in the low `cbits` bits, where
 *   cbits is just wide enough for the count (count <= UINT32_MAX, so the
 *   tag has at least 32 bits). The tag is the window index relative to the
 *   window the limiter was created in, modulo 2^(64 - cbits). A tag that is
 *   not the caller's window is stale (count 0): before trusting that, the
 *   caller reads the clock again, because the word may have been moved on
 *   by a thread whose clock reading was later than ours; after the second
 *   reading, the stored window cannot be later than ours. Wraparound: a
 *   stale word whose tag is exactly 2^(64 - cbits) windows old looks
 *   current. That needs the limiter to be untouched for at least 2^32
 *   windows (136 years of 1 s windows, 49 days of 1 ms windows), and then
 *   costs at most one window of under-admission, never over-admission.
 *
 * - Everything else (sliding windows, several rates) keeps one cell per
 *   rate under a mutex, which makes a multi-rate check exactly
 *   all-or-nothing.
 *
 * The fast paths compute the same decision as admit__algo_decide (the tests
 * compare them); the slower operations (peek, reserve, cancel, denials)
 * turn the atomic word into cells and call algo.c directly. */
#include "algo.h"

#include <pthread.h>
#include <string.h>

enum limiter_kind_e { KIND_BUCKET, KIND_FIXED, KIND_LOCKED };

struct admit_limiter_s {
  /* Read-only after creation. */
  int kind;
  bool real_clock;
  admit__clock_t clock;
  admit__algo_t algo;
  admit_quota_t quota;
  uint64_t id;     /* stamps reservations: high 32 bits */
  uint64_t base_w; /* fixed window: index of the creation window */
  unsigned cbits;  /* fixed window: bits of the count field */
  uint64_t cmask;  /* (1 << cbits) - 1 */
  uint64_t tmask;  /* (1 << (64 - cbits)) - 1 */
  /* Bumped by admit_limiter_reset: reservations from before it are not
   * refunded, since their units were already forgotten. */
  _Atomic uint32_t gen;
  /* The hot word gets a cache line of its own, away from the read-only
   * fields every caller reads. */
  char pad0[64];
  _Atomic uint64_t word;
  char pad1[64];
  pthread_mutex_t mu;
  admit__cell_t cells[ADMIT_RATES_MAX];
};

static _Atomic uint32_t next_id;

static inline uint64_t lim_now(const admit_limiter_t* l) {
  return l->real_clock ? admit_now_ns() : l->clock.now_ns(l->clock.ud);
}

/* ---- packed fixed window ------------------------------------------------- */

static inline uint64_t fixed_window(const admit_limiter_t* l, uint64_t now) {
  const admit__rate_params_t* p = &l->algo.r[0];
  return admit__udiv(now, p->period_ns, p->period_inv);
}

static inline uint64_t fixed_tag(const admit_limiter_t* l, uint64_t w) {
  return (w - l->base_w) & l->tmask;
}

/* The cell a packed word stands for, seen from window @p w: the stored
 * window is taken to be at or before w (see the top comment). */
static admit__cell_t fixed_cell(const admit_limiter_t* l, uint64_t word,
                                uint64_t w) {
  admit__cell_t c;
  uint64_t back = (fixed_tag(l, w) - (word >> l->cbits)) & l->tmask;
  c.w0 = back > w ? 0 : admit__sat_add(w - back, 1);
  c.w1 = word & l->cmask;
  if (c.w0 == 0) c.w1 = 0;
  return c;
}

static uint64_t fixed_word(const admit_limiter_t* l, const admit__cell_t* c) {
  if (c->w0 == 0) return 0;
  return (fixed_tag(l, c->w0 - 1) << l->cbits) | c->w1;
}

/* Loads the word and reads a clock that is not older than the writer of
 * the word (see the top comment). Returns the word; sets *now and *w. */
static uint64_t fixed_load(admit_limiter_t* l, uint64_t* now, uint64_t* w) {
  uint64_t word = atomic_load_explicit(&l->word, memory_order_acquire);
  if ((word >> l->cbits) != fixed_tag(l, *w)) {
    *now = lim_now(l);
    *w = fixed_window(l, *now);
  }
  return word;
}

/* ---- creation ------------------------------------------------------------ */

int admit_quota_validate(const admit_quota_t* q) {
  admit__algo_t a;
  return admit__algo_init(&a, q);
}

int admit_limiter_new(admit_limiter_t** out, const admit_quota_t* q,
                      const admit_clock_t* clock) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  admit__algo_t a;
  int rc = admit__algo_init(&a, q);
  if (rc != 0) return rc;
  admit_limiter_t* l = admit__calloc(1, sizeof(*l));
  if (l == NULL) return ADMIT_ENOMEM;
  if (pthread_mutex_init(&l->mu, NULL) != 0) {
    admit__free(l);
    return ADMIT_ENOMEM;
  }
  l->algo = a;
  l->quota = *q;
  admit__clock_init(&l->clock, clock);
  l->real_clock = clock == NULL || clock->now_ns == NULL;
  /* Never 0, so a zeroed reservation is foreign to every limiter. */
  l->id = (uint64_t)((atomic_fetch_add(&next_id, 1) + 1) | 0x80000000u) << 32;
  atomic_init(&l->gen, 0);
  atomic_init(&l->word, 0);
  if (a.nrates == 1 && a.algo == ADMIT_TOKEN_BUCKET) {
    l->kind = KIND_BUCKET;
  } else if (a.nrates == 1 && a.algo == ADMIT_FIXED_WINDOW) {
    l->kind = KIND_FIXED;
    l->cbits = 64 - (unsigned)__builtin_clzll(a.r[0].limit);
    l->cmask = (UINT64_C(1) << l->cbits) - 1;
    l->tmask = UINT64_MAX >> l->cbits;
    /* Word 0 is "the creation window, nothing used": a fresh limiter. */
    l->base_w = fixed_window(l, lim_now(l));
  } else {
    l->kind = KIND_LOCKED;
  }
  *out = l;
  return 0;
}

void admit_limiter_free(admit_limiter_t* l) {
  if (l == NULL) return;
  pthread_mutex_destroy(&l->mu);
  admit__free(l);
}

int admit_limiter_quota(const admit_limiter_t* l, admit_quota_t* out) {
  if (l == NULL || out == NULL) return ADMIT_EINVAL;
  *out = l->quota;
  return 0;
}

/* ---- try ----------------------------------------------------------------- */

static int bucket_try(admit_limiter_t* l, uint64_t cost, admit_decision_t* d) {
  const admit__rate_params_t* p = &l->algo.r[0];
  /* cost - 1 wraps for 0, so one comparison rejects 0 and > burst. */
  if (cost - 1 >= p->limit) return ADMIT_EINVAL;
  uint64_t now = lim_now(l);
  uint64_t tat = atomic_load_explicit(&l->word, memory_order_relaxed);
  for (;;) {
    uint64_t new_tat;
    if (__builtin_expect(
            !admit__bucket1_allow(p, tat, now, cost, &new_tat, d), 0)) {
      /* Denied: let algo.c explain it from the same snapshot. */
      admit__cell_t c = {tat, 0}, n;
      admit__algo_decide(&l->algo, &c, &n, now, cost, d);
      return 0;
    }
    /* Relaxed is enough: every update is a CAS on this one word, so none
     * is lost, and the word publishes nothing else. A lost race decides
     * again from the TAT that won. */
    if (atomic_compare_exchange_weak_explicit(&l->word, &tat, new_tat,
                                              memory_order_relaxed,
                                              memory_order_relaxed)) {
      return 0;
    }
  }
}

static int fixed_try(admit_limiter_t* l, uint64_t cost, admit_decision_t* d) {
  const admit__rate_params_t* p = &l->algo.r[0];
  if (cost - 1 >= p->limit) return ADMIT_EINVAL;
  uint64_t now = lim_now(l);
  uint64_t word = atomic_load_explicit(&l->word, memory_order_acquire);
  bool reread = false;
  for (;;) {
    uint64_t w = admit__udiv(now, p->period_ns, p->period_inv);
    uint64_t tag = (w - l->base_w) & l->tmask;
    uint64_t used = word & l->cmask;
    if (__builtin_expect((word >> l->cbits) != tag, 0)) {
      /* Another window: ours may be the older clock reading (see the top
       * comment), so read the clock again before calling the word stale. */
      if (!reread) {
        now = lim_now(l);
        reread = true;
        continue;
      }
      used = 0;
    }
    uint64_t end;
    if (__builtin_expect(used + cost <= p->limit &&
                             !__builtin_add_overflow(w * p->period_ns,
                                                     p->period_ns, &end),
                         1)) {
      if (atomic_compare_exchange_weak_explicit(
              &l->word, &word, (tag << l->cbits) | (used + cost),
              memory_order_acq_rel, memory_order_acquire)) {
        d->allowed = 1;
        d->limiting = 0;
        d->limit = p->limit;
        d->remaining = p->limit - used - cost;
        d->retry_after_ns = 0;
        d->reset_after_ns = end - now;
        return 0;
      }
    } else {
      /* Denied, or the window ends past UINT64_MAX: algo.c decides. */
      admit__cell_t c = fixed_cell(l, word, w), n;
      if (admit__algo_decide(&l->algo, &c, &n, now, cost, d) == 0) return 0;
      if (atomic_compare_exchange_weak_explicit(
              &l->word, &word, fixed_word(l, &n), memory_order_acq_rel,
              memory_order_acquire)) {
        return 0;
      }
    }
    /* Lost a race: the word changed, perhaps to a later window. */
    reread = false;
  }
}

static int locked_reserve(admit_limiter_t* l, uint64_t cost,
                          uint64_t max_wait, uint64_t* now_out,
                          uint64_t* wait, uint32_t* gen,
                          admit_decision_t* d) {
  uint64_t now = lim_now(l);
  pthread_mutex_lock(&l->mu);
  int rc = admit__algo_reserve(&l->algo, l->cells, l->cells, now, cost,
                               max_wait, wait, d);
  if (gen != NULL) *gen = atomic_load_explicit(&l->gen, memory_order_relaxed);
  pthread_mutex_unlock(&l->mu);
  if (now_out != NULL) *now_out = now;
  return rc;
}

int admit_limiter_try(admit_limiter_t* l, uint64_t cost,
                      admit_decision_t* out) {
  if (l == NULL || out == NULL) return ADMIT_EINVAL;
  switch (l->kind) {
    case KIND_BUCKET:
      return bucket_try(l, cost, out);
    case KIND_FIXED:
      return fixed_try(l, cost, out);
    default: {
      int rc = locked_reserve(l, cost, 0, NULL, NULL, NULL, out);
      return rc < 0 ? rc : 0;
    }
  }
}

/* ---- peek ---------------------------------------------------------------- */

int admit_limiter_peek(admit_limiter_t* l, admit_decision_t* out) {
  if (l == NULL || out == NULL) return ADMIT_EINVAL;
  uint64_t now = lim_now(l);
  if (l->kind == KIND_BUCKET) {
    admit__cell_t c = {atomic_load_explicit(&l->word, memory_order_relaxed),
                       0};
    admit__algo_peek(&l->algo, &c, now, out);
  } else if (l->kind == KIND_FIXED) {
    uint64_t w = fixed_window(l, now);
    uint64_t word = fixed_load(l, &now, &w);
    admit__cell_t c = fixed_cell(l, word, w);
    admit__algo_peek(&l->algo, &c, now, out);
  } else {
    pthread_mutex_lock(&l->mu);
    admit__algo_peek(&l->algo, l->cells, now, out);
    pthread_mutex_unlock(&l->mu);
  }
  return 0;
}

/* ---- reserve and cancel -------------------------------------------------- */

/* Reserves on a lock-free word through algo.c: snapshot, decide, CAS. */
static int atomic_reserve(admit_limiter_t* l, uint64_t cost,
                          uint64_t max_wait, uint64_t* now_out,
                          uint64_t* wait, admit_decision_t* d) {
  uint64_t now = lim_now(l);
  uint64_t w = 0, word;
  if (l->kind == KIND_FIXED) {
    w = fixed_window(l, now);
    word = fixed_load(l, &now, &w);
  } else {
    word = atomic_load_explicit(&l->word, memory_order_relaxed);
  }
  for (;;) {
    admit__cell_t c, n;
    if (l->kind == KIND_FIXED) {
      c = fixed_cell(l, word, w);
    } else {
      c.w0 = word;
      c.w1 = 0;
    }
    int rc = admit__algo_reserve(&l->algo, &c, &n, now, cost, max_wait, wait,
                                 d);
    if (rc <= 0) {
      *now_out = now;
      return rc;
    }
    uint64_t nw = l->kind == KIND_FIXED ? fixed_word(l, &n) : n.w0;
    if (atomic_compare_exchange_weak_explicit(&l->word, &word, nw,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
      *now_out = now;
      return 1;
    }
    if (l->kind == KIND_FIXED && (word >> l->cbits) != fixed_tag(l, w)) {
      now = lim_now(l);
      w = fixed_window(l, now);
    }
  }
}

/* Reserves @p cost within @p max_wait. Returns 1 (reserved), 0 (not) or
 * ADMIT_EINVAL, and fills the reservation fields. */
static int reserve(admit_limiter_t* l, uint64_t cost, uint64_t max_wait,
                   admit_reservation_t* r, admit_decision_t* d,
                   uint64_t* now_out) {
  uint64_t now, wait = 0;
  uint32_t gen;
  int rc;
  if (l->kind == KIND_LOCKED) {
    rc = locked_reserve(l, cost, max_wait, &now, &wait, &gen, d);
  } else {
    /* Read the generation before the CAS: a reset that lands after the
     * read makes this reservation look stale, which only skips a refund. */
    gen = atomic_load(&l->gen);
    rc = atomic_reserve(l, cost, max_wait, &now, &wait, d);
  }
  if (rc < 0) return rc;
  r->reserved = rc;
  r->cost = cost;
  r->wait_ns = wait;
  r->ready_at_ns = admit__sat_add(now, wait);
  r->stamp = l->id | gen;
  *now_out = now;
  return rc;
}

int admit_limiter_reserve(admit_limiter_t* l, uint64_t cost,
                          uint64_t max_wait_ns, admit_reservation_t* r,
                          admit_decision_t* d) {
  if (l == NULL || r == NULL) return ADMIT_EINVAL;
  admit_decision_t tmp;
  if (d == NULL) d = &tmp;
  admit_reservation_t res;
  uint64_t now;
  int rc = reserve(l, cost, max_wait_ns, &res, d, &now);
  if (rc < 0) return rc;
  /* Not reserved: a window that fits later (wait_ns says when), or a wait
   * that is too long. */
  if (rc == 0 && (res.wait_ns > max_wait_ns || res.wait_ns == UINT64_MAX)) {
    return ADMIT_ETIMEDOUT;
  }
  *r = res;
  return 0;
}

int admit_limiter_cancel(admit_limiter_t* l, const admit_reservation_t* r) {
  if (l == NULL || r == NULL) return ADMIT_EINVAL;
  if ((r->stamp & ~(uint64_t)UINT32_MAX) != l->id) return ADMIT_EINVAL;
  if (r->reserved != 0 && r->reserved != 1) return ADMIT_EINVAL;
  for (uint32_t i = 0; i < l->algo.nrates; i++) {
    if (r->cost == 0 || r->cost > l->algo.r[i].limit) return ADMIT_EINVAL;
  }
  if (!r->reserved) return 0;
  uint32_t gen = (uint32_t)r->stamp;
  uint64_t taken_at = r->ready_at_ns - r->wait_ns;
  uint64_t now = lim_now(l);
  if (l->kind == KIND_LOCKED) {
    pthread_mutex_lock(&l->mu);
    if (atomic_load_explicit(&l->gen, memory_order_relaxed) == gen) {
      admit__algo_refund(&l->algo, l->cells, l->cells, now, r->cost,
                         taken_at);
    }
    pthread_mutex_unlock(&l->mu);
    return 0;
  }
  if (atomic_load(&l->gen) != gen) return 0;
  uint64_t w = 0, word;
  if (l->kind == KIND_FIXED) {
    w = fixed_window(l, now);
    word = fixed_load(l, &now, &w);
  } else {
    word = atomic_load_explicit(&l->word, memory_order_relaxed);
  }
  for (;;) {
    admit__cell_t c, n;
    if (l->kind == KIND_FIXED) {
      c = fixed_cell(l, word, w);
    } else {
      c.w0 = word;
      c.w1 = 0;
    }
    admit__algo_refund(&l->algo, &c, &n, now, r->cost, taken_at);
    if (n.w0 == c.w0 && n.w1 == c.w1) return 0;
    uint64_t nw = l->kind == KIND_FIXED ? fixed_word(l, &n) : n.w0;
    if (atomic_compare_exchange_weak_explicit(&l->word, &word, nw,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
      return 0;
    }
    if (l->kind == KIND_FIXED && (word >> l->cbits) != fixed_tag(l, w)) {
      now = lim_now(l);
      w = fixed_window(l, now);
    }
  }
}

/* ---- acquire ------------------------------------------------------------- */

static void sleep_until(admit_limiter_t* l, uint64_t at) {
  uint64_t now = lim_now(l);
  if (at > now) admit__clock_sleep(&l->clock, at - now);
}

int admit_limiter_acquire(admit_limiter_t* l, uint64_t cost,
                          uint64_t timeout_ns, admit_decision_t* out) {
  if (l == NULL) return ADMIT_EINVAL;
  admit_decision_t tmp;
  if (out == NULL) out = &tmp;
  admit_reservation_t r;
  if (l->algo.algo == ADMIT_TOKEN_BUCKET) {
    /* Take a place in the future if it fits, then sleep until it comes:
     * the place is held, so waiters cannot stampede. */
    uint64_t now;
    int rc = reserve(l, cost, timeout_ns, &r, out, &now);
    if (rc < 0) return rc;
    if (rc == 0) return ADMIT_ETIMEDOUT;
    if (r.wait_ns > 0) sleep_until(l, r.ready_at_ns);
    return 0;
  }
  /* Windows cannot hold a place in a later window: sleep until the
   * decision said it would fit, if that is before the deadline, and try
   * again. */
  uint64_t deadline = 0;
  for (int first = 1;; first = 0) {
    uint64_t now;
    int rc = reserve(l, cost, 0, &r, out, &now);
    if (rc < 0) return rc;
    if (rc == 1) return 0;
    if (first) deadline = admit__deadline(now, timeout_ns);
    uint64_t at = admit__sat_add(now, out->retry_after_ns);
    if (out->retry_after_ns == UINT64_MAX || at > deadline) {
      return ADMIT_ETIMEDOUT;
    }
    sleep_until(l, at);
  }
}

/* ---- reset --------------------------------------------------------------- */

void admit_limiter_reset(admit_limiter_t* l) {
  if (l == NULL) return;
  if (l->kind == KIND_LOCKED) {
    pthread_mutex_lock(&l->mu);
    memset(l->cells, 0, sizeof(l->cells));
    atomic_fetch_add(&l->gen, 1);
    pthread_mutex_unlock(&l->mu);
    return;
  }
  /* Forget the state first, then move the generation on: a reservation
   * that read the old generation is then never refunded into the new
   * state (see reserve()). */
  atomic_store(&l->word, 0);
  atomic_fetch_add(&l->gen, 1);
}
