/**
 * @file admit/limiter.h
 * Quotas and in-process limiters: token bucket (GCRA), fixed window and
 * sliding-window counter, with one or several rates checked all-or-nothing.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_LIMITER_H
#define ADMIT_LIMITER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The algorithm a quota is enforced with. */
typedef enum admit_algo_e {
  /** GCRA: @c burst at once, then one unit every period/count. */
  ADMIT_TOKEN_BUCKET = 0,
  /** At most count units per aligned window; up to 2x across an edge. */
  ADMIT_FIXED_WINDOW = 1,
  /** Current window plus the previous one weighted by its overlap. */
  ADMIT_SLIDING_WINDOW = 2
} admit_algo_t;

/**
 * What is allowed: an algorithm and one or more rates, all of which must
 * admit a request for it to pass.
 *
 * A plain value: fill it by hand or with admit_quota_parse(). For the token
 * bucket, `burst[i]` is how many units rate i admits at once (0 means
 * `rates[i].count`) and a rate may be at most one unit per nanosecond;
 * windows ignore `burst` and need counts of at most UINT32_MAX.
 */
typedef struct admit_quota_s {
  admit_algo_t algo;                     /**< How the rates are enforced. */
  uint32_t nrates;                       /**< 1..ADMIT_RATES_MAX. */
  admit_rate_t rates[ADMIT_RATES_MAX];   /**< The rates. */
  uint64_t burst[ADMIT_RATES_MAX];       /**< Token bucket bursts. */
} admit_quota_t;

/**
 * Fills @p q from @p algo and a rate spec (see admit_rate_parse()).
 *
 * Bursts are set to 0 (the rate's count). Returns 0, or ADMIT_EINVAL with
 * @p err_offset (if not NULL) set where parsing failed.
 */
ADMIT_EXTERN int admit_quota_parse(admit_quota_t* q, admit_algo_t algo,
                                   const char* spec, size_t* err_offset);

/**
 * Checks that @p q is usable: known algorithm, 1..ADMIT_RATES_MAX rates,
 * nonzero counts and periods, and values the algorithm can represent.
 *
 * Returns 0 or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_quota_validate(const admit_quota_t* q);

/**
 * An in-process limiter enforcing one quota.
 *
 * Safe to call from any thread; a single-rate token bucket or fixed window
 * is one atomic word updated lock-free.
 */
typedef struct admit_limiter_s admit_limiter_t;

/**
 * Creates a limiter for quota @p q, reading time from @p clock (NULL for the
 * system monotonic clock).
 *
 * Both are copied. Returns 0 and sets @p *out, or ADMIT_EINVAL/ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_limiter_new(admit_limiter_t** out,
                                   const admit_quota_t* q,
                                   const admit_clock_t* clock);

/** Frees a limiter. NULL is a no-op; no call may be in progress. */
ADMIT_EXTERN void admit_limiter_free(admit_limiter_t* l);

/**
 * Decides whether @p cost units may proceed now, consuming them if so.
 *
 * Returns 0 and fills @p out (required; allowed or not), or a negative
 * code: ADMIT_EINVAL if @p cost is 0 or exceeds the burst/limit of any rate
 * (it could never succeed). A denial consumes nothing. Thread-safe.
 */
ADMIT_EXTERN int admit_limiter_try(admit_limiter_t* l, uint64_t cost,
                                   admit_decision_t* out);

/**
 * Reports the decision a zero-cost check would give, consuming nothing.
 *
 * Useful for headers and health pages. Returns 0 or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_limiter_peek(admit_limiter_t* l,
                                    admit_decision_t* out);

/**
 * A place taken in a limiter's future, or a promise to come back.
 *
 * When @c reserved is 1 the units are already counted and may be used once
 * @c wait_ns has passed; give them back with admit_limiter_cancel() if they
 * will not be used. When @c reserved is 0 (windows, which cannot hold a
 * place in a later window) nothing was taken: wait @c wait_ns and try again.
 */
typedef struct admit_reservation_s {
  int reserved;         /**< 1 if the units were taken. */
  uint64_t cost;        /**< Units reserved. */
  uint64_t wait_ns;     /**< Delay from the reservation until it may run. */
  uint64_t ready_at_ns; /**< Clock time at which it may run. */
  uint64_t stamp;       /**< Internal: identifies the state it changed. */
} admit_reservation_t;

/**
 * Reserves @p cost units if they can be used within @p max_wait_ns.
 *
 * Returns 0 and fills @p r; or ADMIT_ETIMEDOUT at once, taking nothing, if
 * the wait would exceed @p max_wait_ns (then @p d, if not NULL, says how
 * long); or ADMIT_EINVAL. Reserving holds the caller's turn, so waiters do
 * not stampede. Thread-safe.
 */
ADMIT_EXTERN int admit_limiter_reserve(admit_limiter_t* l, uint64_t cost,
                                       uint64_t max_wait_ns,
                                       admit_reservation_t* r,
                                       admit_decision_t* d);

/**
 * Gives back the units of a reservation that will not be used.
 *
 * Call at most once per reservation. A window refunds only while its window
 * is current. Returns 0, or ADMIT_EINVAL for a NULL or foreign reservation.
 */
ADMIT_EXTERN int admit_limiter_cancel(admit_limiter_t* l,
                                      const admit_reservation_t* r);

/**
 * Waits until @p cost units may proceed, at most @p timeout_ns.
 *
 * Sleeps only when the wait fits the timeout (holding its turn); otherwise
 * returns ADMIT_ETIMEDOUT at once, without sleeping. Returns 0 when the
 * units were taken. @p out (may be NULL) gets the decision. Blocks the
 * calling thread; ADMIT_FOREVER waits as long as needed.
 */
ADMIT_EXTERN int admit_limiter_acquire(admit_limiter_t* l, uint64_t cost,
                                       uint64_t timeout_ns,
                                       admit_decision_t* out);

/**
 * Forgets all consumption, as if the limiter were new. Thread-safe.
 *
 * Reservations made before the reset are not refunded by a later cancel.
 */
ADMIT_EXTERN void admit_limiter_reset(admit_limiter_t* l);

/** Copies the limiter's quota into @p out. Returns 0 or ADMIT_EINVAL. */
ADMIT_EXTERN int admit_limiter_quota(const admit_limiter_t* l,
                                     admit_quota_t* out);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_LIMITER_H */
