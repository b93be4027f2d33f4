/* The limiting algorithms as pure functions over small state cells.
 *
 * No I/O, no clock reads, no allocation: callers pass `now` and store the
 * cells wherever they like (an atomic word, a keyed table, Redis through the
 * Lua scripts in lib/lua/, which implement exactly the same math).
 *
 * Shared semantics (all integer nanoseconds, all arithmetic saturating):
 *
 * Token bucket (GCRA), rate count C per period P, burst B:
 *   interval T = ceil(P / C)  (rounding up never over-admits; a rate above
 *                              one unit per ns is rejected by validation)
 *   tolerance  = B * T        (must not overflow: validation)
 *   cell.w0 = TAT, 0 = never seen (treated as TAT <= now).
 *   base = max(TAT, now); new_tat = base + cost * T;
 *   allowed iff new_tat - now <= tolerance;
 *   on allow: remaining = (tolerance - (new_tat - now)) / T,
 *             reset_after = new_tat - now;
 *   on deny:  retry_after = (new_tat - now) - tolerance,
 *             remaining = (tolerance - (base - now)) / T,
 *             reset_after = base - now.
 *   limit = B. Fresh iff TAT <= now.
 *   The end of time: a new TAT that would pass UINT64_MAX does not fit
 *   (saturating it would admit everything in the last `tolerance` ns):
 *   retry_after = UINT64_MAX means "never", and remaining counts only units
 *   whose TAT is representable.
 *
 * Fixed window, count C per period P (windows aligned to multiples of P on
 * the clock; C <= UINT32_MAX by validation, so that the in-process limiter
 * can pack window and count into one atomic word): w = now / P;
 * cell.w0 = w + 1 (0 = never seen), cell.w1 = used in that window (a stale
 * w0 means used = 0).
 *   allowed iff used + cost <= C; remaining = C - used (after the decision);
 *   on deny retry_after = (w + 1) * P - now; reset_after = (w + 1) * P - now
 *   when used > 0 else 0. limit = C. Fresh iff used == 0 after staleness.
 *
 * Sliding-window counter, count C per period P: w = now / P, e = now - w*P;
 * cell.w0 = w + 1 (0 = never seen), cell.w1 = cur | (prev << 32)
 * (C <= UINT32_MAX by validation). If the stored window is w - 1, then
 * prev = stored cur and cur = 0; if older, both are 0.
 *   allowed iff (cur + cost) * P + prev * (P - e) <= C * P  (128-bit math);
 *   remaining = floor((C*P - cur*P - prev*(P - e)) / P) after the decision;
 *   on deny, retry_after is the exact earliest time the same request fits:
 *     if cur + cost <= C: need prev*(P - e') <= (C - cur - cost)*P within
 *       this window: e' = ceil((prev - (C - cur - cost)) * P / prev),
 *       retry_after = e' - e;
 *     else: in window w+1 prev' = cur, cur' = 0: e' = 0 if cur <= C - cost,
 *       else ceil((cur - (C - cost)) * P / cur); retry_after =
 *       (w + 1) * P - now + e'.
 *   reset_after = (w + 2) * P - now if cur > 0, else (w + 1) * P - now if
 *   prev > 0, else 0. limit = C. Fresh iff cur == 0 and prev == 0.
 *
 * Windows, both kinds: a cell whose window is later than now's (a caller
 * with a later clock reading got there first) is decided at the start of
 * that window, never reset as stale, since that would forget its units;
 * retry_after and reset_after still count from the caller's now. A window
 * that would start after UINT64_MAX never comes: retry_after (and
 * reset_after) = UINT64_MAX. w0 = w + 1 saturates.
 *
 * Remaining, in every algorithm, is the largest cost that would fit now
 * after the decision; reset_after is how long until the cells are fresh.
 *
 * Several rates: every rate must allow; a denial changes no cell. The
 * decision reports the deciding rate: on deny the one with the largest
 * retry_after, on allow the one with the smallest remaining (ties: the
 * lowest index); reset_after is the largest over all rates. A token bucket
 * reservation that waits charges every rate as of the time it may run
 * (base = max(TAT, now + wait)), so each rate sees the units when they are
 * used and none is over-admitted by a wait another rate imposed.
 *
 * Peek is a cost-0 decision: windows always allow it; a bucket reserved
 * beyond now + tolerance denies it with the wait. Refund: see below.
 *
 * Cost: 0 or more than any rate's limit is ADMIT_EINVAL (it can never fit).
 */
#ifndef ADMIT_ALGO_H
#define ADMIT_ALGO_H

#include "internal.h"

/* Per-rate parameters, precomputed from a quota by admit__algo_init. */
typedef struct admit__rate_params_s {
  uint64_t limit;        /* burst (bucket) or count (windows) */
  uint64_t period_ns;    /* the rate's period */
  uint64_t interval_ns;  /* bucket: ceil(period / count) */
  uint64_t tolerance_ns; /* bucket: limit * interval */
  uint64_t interval_inv; /* UINT64_MAX / interval_ns, for admit__udiv */
  uint64_t period_inv;   /* UINT64_MAX / period_ns, for admit__udiv */
} admit__rate_params_t;

/* A validated quota, ready for decisions. */
typedef struct admit__algo_s {
  admit_algo_t algo;
  uint32_t nrates;
  admit__rate_params_t r[ADMIT_RATES_MAX];
} admit__algo_t;

/* The state of one rate. See the comment at the top for each algorithm. */
typedef struct admit__cell_s {
  uint64_t w0;
  uint64_t w1;
} admit__cell_t;

/* Exact floor(n / d) for d >= 1 without a divide instruction, given
 * m = UINT64_MAX / d: with that m, mulhi(n, m) is floor(n / d) or one less,
 * and one multiply-compare corrects it. */
static inline uint64_t admit__udiv(uint64_t n, uint64_t d, uint64_t m) {
  uint64_t q = (uint64_t)(((unsigned __int128)n * m) >> 64);
  if (n - q * d >= d) q++;
  return q;
}

/* The allowed path of a single-rate token bucket, for callers that keep
 * the TAT themselves (a lock-free word, a keyed slot): if @p cost (1 to
 * the burst, checked by the caller) fits at @p now on a bucket whose TAT is
 * @p tat, sets *new_tat, fills @p d exactly as admit__algo_decide would,
 * and returns true; otherwise returns false and writes nothing, and
 * admit__algo_decide gives the denial. */
static inline bool admit__bucket1_allow(const admit__rate_params_t* p,
                                        uint64_t tat, uint64_t now,
                                        uint64_t cost, uint64_t* new_tat,
                                        admit_decision_t* d) {
  uint64_t base = tat > now ? tat : now;
  uint64_t nt = base + cost * p->interval_ns; /* cost * T <= tolerance */
  uint64_t diff = nt - now;
  if (nt < base || diff > p->tolerance_ns) return false;
  /* remaining = what bucket_room in algo.c gives for nt: the units that
   * still fit under the tolerance and before the end of time. */
  uint64_t room = p->tolerance_ns - diff;
  uint64_t rem = admit__udiv(room, p->interval_ns, p->interval_inv);
  if (nt > UINT64_MAX - room) {
    uint64_t k = admit__udiv(UINT64_MAX - nt, p->interval_ns,
                             p->interval_inv);
    if (k < rem) rem = k;
  }
  *new_tat = nt;
  d->allowed = 1;
  d->limiting = 0;
  d->limit = p->limit;
  d->remaining = rem;
  d->retry_after_ns = 0;
  d->reset_after_ns = diff;
  return true;
}

/* Validates @p q and precomputes parameters. Returns 0 or ADMIT_EINVAL. */
int admit__algo_init(admit__algo_t* a, const admit_quota_t* q);

/* Decides @p cost at @p now over a->nrates cells. Writes the cells to store
 * into @p next (equal to @p cur on a denial; @p next may be @p cur) and
 * fills @p d (may be NULL).
 * Returns 1 if allowed, 0 if denied, ADMIT_EINVAL for a bad cost. */
int admit__algo_decide(const admit__algo_t* a, const admit__cell_t* cur,
                       admit__cell_t* next, uint64_t now, uint64_t cost,
                       admit_decision_t* d);

/* Like admit__algo_decide, but a token bucket may take a place in the
 * future: it reserves when the wait is at most @p max_wait_ns and sets
 * @p *wait_ns (0 = now). Windows reserve only when the cost fits now.
 * Returns 1 if reserved (next holds the new cells), 0 if not (d says when
 * to retry), ADMIT_EINVAL for a bad cost. */
int admit__algo_reserve(const admit__algo_t* a, const admit__cell_t* cur,
                        admit__cell_t* next, uint64_t now, uint64_t cost,
                        uint64_t max_wait_ns, uint64_t* wait_ns,
                        admit_decision_t* d);

/* Gives back @p cost units taken at @p taken_at (windows refund only while
 * the window that was charged is current; the bucket moves TAT back, never
 * below now). Writes the new cells into @p next (may be @p cur). A bucket
 * rate that a waiting reservation charged as of a later time (see "Several
 * rates") gets cost * T back, not the gap it skipped: conservative. */
void admit__algo_refund(const admit__algo_t* a, const admit__cell_t* cur,
                        admit__cell_t* next, uint64_t now, uint64_t cost,
                        uint64_t taken_at);

/* Fills @p d with what a zero-cost check would see, consuming nothing. */
void admit__algo_peek(const admit__algo_t* a, const admit__cell_t* cur,
                      uint64_t now, admit_decision_t* d);

/* True when the cells equal a never-seen state at @p now: such a key can be
 * dropped without changing any future decision. */
bool admit__algo_fresh(const admit__algo_t* a, const admit__cell_t* cur,
                       uint64_t now);

#endif /* ADMIT_ALGO_H */
