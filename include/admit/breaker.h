/**
 * @file admit/breaker.h
 * Call outcomes and the circuit breaker: closed, open and half-open, opened
 * by the failure rate or the slow-call rate over a sliding window.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_BREAKER_H
#define ADMIT_BREAKER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * How a guarded call ended, as its caller reports it.
 *
 * The breaker, the guard, the admission controller and the health snapshot
 * all count outcomes the same way: FAILURE and TIMEOUT are errors;
 * VENDOR_LIMITED (the vendor answered 429) and CANCELLED (the caller gave
 * up) are counted but are neither successes nor errors.
 */
typedef enum admit_outcome_e {
  ADMIT_OUTCOME_SUCCESS = 0,        /**< The call did its work. */
  ADMIT_OUTCOME_FAILURE = 1,        /**< The call failed (5xx, I/O error). */
  ADMIT_OUTCOME_TIMEOUT = 2,        /**< The call ran out of its time. */
  ADMIT_OUTCOME_VENDOR_LIMITED = 3, /**< The vendor refused: rate limited. */
  ADMIT_OUTCOME_CANCELLED = 4       /**< The caller abandoned the call. */
} admit_outcome_t;

/** Returns a static name for an outcome ("success", ...), or "unknown". */
ADMIT_EXTERN const char* admit_outcome_name(int outcome);

/** The three states of a circuit breaker. */
typedef enum admit_breaker_state_e {
  ADMIT_BREAKER_CLOSED = 0,   /**< Calls pass; outcomes are counted. */
  ADMIT_BREAKER_OPEN = 1,     /**< Calls fail fast with ADMIT_EOPEN. */
  ADMIT_BREAKER_HALF_OPEN = 2 /**< A few probe calls decide what follows. */
} admit_breaker_state_t;

/** Returns a static name for a state ("closed", "open", "half_open"). */
ADMIT_EXTERN const char* admit_breaker_state_name(int state);

/** How the breaker's sliding window is measured. */
typedef enum admit_breaker_window_e {
  ADMIT_BREAKER_COUNT_WINDOW = 0, /**< The last @c window_calls calls. */
  ADMIT_BREAKER_TIME_WINDOW = 1   /**< Calls that ended in @c window_ns. */
} admit_breaker_window_t;

/**
 * Options for admit_breaker_new(); zero means the default.
 *
 * The defaults are those of resilience4j. A rate threshold above 1
 * disables that trigger.
 */
typedef struct admit_breaker_options_s {
  admit_breaker_window_t window; /**< Count (default) or time window. */
  uint32_t window_calls;   /**< Count window size; 0 = 100 calls. */
  uint64_t window_ns;      /**< Time window length; 0 = 60 s. */
  uint32_t min_calls;      /**< Calls in the window before it may open;
                                0 = 100 (capped at window_calls). */
  double failure_rate;     /**< Opens at this failure rate; 0 = 0.5. */
  double slow_rate;        /**< Opens at this slow-call rate; 0 = 1.0. */
  uint64_t slow_call_ns;   /**< A call this long is slow; 0 = 60 s. */
  uint64_t open_ns;        /**< Time spent open; 0 = 60 s. */
  uint32_t half_open_probes; /**< Probe calls in half-open; 0 = 10. */
  const admit_clock_t* clock; /**< NULL = system monotonic clock. */
} admit_breaker_options_t;

/**
 * A circuit breaker.
 *
 * While closed it counts outcomes in a sliding window; once the window
 * holds at least @c min_calls calls and the failure rate or the slow-call
 * rate reaches its threshold, it opens. Open, it refuses calls for
 * @c open_ns, then lets @c half_open_probes probe calls through; their
 * rates decide whether it closes again or reopens. Every function is safe
 * to call from any thread; entering a closed breaker is lock-free.
 */
typedef struct admit_breaker_s admit_breaker_t;

/** A point-in-time view of a breaker. */
typedef struct admit_breaker_stats_s {
  admit_breaker_state_t state; /**< State now. */
  uint64_t calls;          /**< Calls in the window (probes in half-open). */
  uint64_t failures;       /**< Of those, failures and timeouts. */
  uint64_t slow;           /**< Of those, slow calls. */
  double failure_rate;     /**< failures / calls, 0 without calls. */
  double slow_rate;        /**< slow / calls, 0 without calls. */
  uint64_t permitted;      /**< Calls let through since creation. */
  uint64_t rejected;       /**< Calls refused with ADMIT_EOPEN. */
  uint64_t opened;         /**< Transitions to open. */
  uint64_t half_opened;    /**< Transitions to half-open. */
  uint64_t closed;         /**< Transitions to closed. */
  uint64_t state_since_ns; /**< Clock time of the last transition. */
} admit_breaker_stats_t;

/**
 * Creates a breaker, closed. The options are copied; NULL means defaults.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL (a negative rate, a window
 * of calls over 1048576) / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_breaker_new(admit_breaker_t** out,
                                   const admit_breaker_options_t* opts);

/** Frees a breaker. NULL is a no-op; no call may be in progress. */
ADMIT_EXTERN void admit_breaker_free(admit_breaker_t* b);

/**
 * Asks to make one call.
 *
 * Returns 0 and sets @p *token (pass it to admit_breaker_leave() or
 * admit_breaker_abandon() exactly once); ADMIT_EOPEN at once while the
 * breaker is open or every half-open probe is taken; ADMIT_EINVAL.
 * An open breaker whose time is up becomes half-open here. Thread-safe.
 */
ADMIT_EXTERN int admit_breaker_enter(admit_breaker_t* b, uint64_t* token);

/**
 * Records how a call that admit_breaker_enter() let through ended.
 *
 * @p duration_ns is how long the call took (a call of at least
 * @c slow_call_ns is slow). Outcomes of calls that began before the last
 * state change are ignored, so a late result cannot reopen a breaker that
 * has since closed. VENDOR_LIMITED and CANCELLED are not counted. May
 * change the state. Returns 0 or ADMIT_EINVAL. Thread-safe.
 */
ADMIT_EXTERN int admit_breaker_leave(admit_breaker_t* b, uint64_t token,
                                     int outcome, uint64_t duration_ns);

/**
 * Gives back a permission that was not used (the call was never made),
 * freeing its half-open probe place. Returns 0 or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_breaker_abandon(admit_breaker_t* b, uint64_t token);

/**
 * Returns the state now (an admit_breaker_state_t), moving an open breaker
 * whose time is up to half-open; or ADMIT_EINVAL. Thread-safe.
 */
ADMIT_EXTERN int admit_breaker_state(admit_breaker_t* b);

/** Fills @p out with a consistent snapshot. Returns 0 or ADMIT_EINVAL. */
ADMIT_EXTERN int admit_breaker_stats(admit_breaker_t* b,
                                     admit_breaker_stats_t* out);

/**
 * Forces the breaker open now, for @c open_ns (an operator's switch).
 * Returns 0 or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_breaker_trip(admit_breaker_t* b);

/**
 * Closes the breaker and empties its window, whatever its state.
 * Returns 0 or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_breaker_reset(admit_breaker_t* b);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_BREAKER_H */
