/**
 * @file admit/health.h
 * Readiness, liveness and metrics for a pod: a registry of guards,
 * admission controllers, breakers and Redis connections that answers
 * `/ready` with a verdict that does not flap, and renders every counter as
 * Prometheus text.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_HEALTH_H
#define ADMIT_HEALTH_H

#include "common.h"
#include "breaker.h"
#include "guard.h"
#include "admission.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Why a pod is, or is not, ready. */
typedef enum admit_health_reason_e {
  ADMIT_HEALTH_OK = 0,           /**< "ready". */
  ADMIT_HEALTH_SATURATED = 1,    /**< "overloaded": too many waiting. */
  ADMIT_HEALTH_ERRORS = 2,       /**< "high errors": recent error rate. */
  ADMIT_HEALTH_BREAKER_OPEN = 3, /**< "breaker open" (opt-in). */
  ADMIT_HEALTH_DEGRADED = 4,     /**< "backend degraded" (opt-in). */
  ADMIT_HEALTH_RECOVERING = 5    /**< "recovering": held not ready until
                                      below the recovery thresholds for the
                                      hold time. */
} admit_health_reason_t;

/** Returns the static text of a reason ("ready", "overloaded", ...). */
ADMIT_EXTERN const char* admit_health_reason_name(int reason);

/**
 * Options for admit_health_new(); zero means the default.
 *
 * The verdict has hysteresis: it turns not ready as soon as a limit is
 * crossed, and ready again only once every figure is at or below its
 * recovery level and at least @c hold_ns have passed.
 */
typedef struct admit_health_options_s {
  uint64_t max_waiting;     /**< A component is saturated above this
                                 many waiting while at capacity (see
                                 admit_health_check()); 0 = 80. */
  uint64_t ready_waiting;   /**< Ready again when no component has more
                                 waiting; 0 = half of max_waiting. */
  double max_error_rate;    /**< Not ready above this error rate; 0 = 0.5. */
  double ready_error_rate;  /**< Ready again at or below; 0 = half of
                                 max_error_rate. */
  uint32_t min_calls;       /**< Recent calls needed before the error rate
                                 counts; 0 = 10. */
  uint64_t hold_ns;         /**< Least time not ready; 0 = 10 s. */
  int fail_on_open_breaker; /**< 1: an open breaker makes the pod not
                                 ready (by default it is only reported: a
                                 vendor outage hits every pod alike). */
  int fail_on_degraded;     /**< 1: a degraded Redis backend makes the pod
                                 not ready (by default only reported). */
  const admit_clock_t* clock; /**< NULL = system monotonic clock. */
} admit_health_options_t;

/**
 * A pod's health registry.
 *
 * It borrows what is added to it (each must outlive it). Every function is
 * safe to call from any thread.
 */
typedef struct admit_health_s admit_health_t;

/** The answer to `/ready`, with the figures it was made from. */
typedef struct admit_health_snapshot_s {
  int ready;                   /**< 1 ready, 0 not. */
  admit_health_reason_t reason; /**< Why (ADMIT_HEALTH_OK when ready). */
  uint64_t in_flight;          /**< Calls and requests running, summed
                                    (for display). */
  uint64_t waiting;            /**< Calls and requests waiting, summed
                                    (for display). */
  uint64_t capacity;           /**< Semaphore capacities (a semaphore
                                    shared by guards once) and admission
                                    limits, summed (0 if none; for
                                    display). */
  uint64_t recent_calls;       /**< Calls and requests ended in the
                                    sources' windows. */
  uint64_t recent_errors;      /**< Of those, failures and timeouts. */
  double error_rate;           /**< recent_errors / recent_calls, or 0. */
  uint32_t breakers;           /**< Breakers seen (guards' and added). */
  uint32_t breakers_open;      /**< Of those, open now. */
  uint32_t breakers_half_open; /**< Of those, half-open now. */
  int redis_degraded;          /**< 1 if a Redis backend is down or a
                                    global stage decides locally; 0 if
                                    not; -1 if there is none. */
  uint64_t state_since_ns;     /**< Clock time the verdict last changed. */
  uint64_t transitions;        /**< Verdict changes since creation. */
} admit_health_snapshot_t;

/**
 * Creates a registry. The options are copied; NULL means defaults.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL (a negative rate, recovery
 * levels above the limits) / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_health_new(admit_health_t** out,
                                  const admit_health_options_t* opts);

/** Frees a registry (not what was added to it). NULL is a no-op. */
ADMIT_EXTERN void admit_health_free(admit_health_t* h);

/**
 * Adds a guard; its name labels its metrics. Returns 0, or ADMIT_EINVAL /
 * ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_health_add_guard(admit_health_t* h, admit_guard_t* g);

/**
 * Adds an admission controller under @p name (copied, at most 128 bytes).
 * Returns 0, or ADMIT_EINVAL / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_health_add_admission(admit_health_t* h,
                                            admit_admission_t* a,
                                            const char* name);

/**
 * Adds a breaker used outside any guard under @p name (copied, at most
 * 128 bytes). Returns 0, or ADMIT_EINVAL / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_health_add_breaker(admit_health_t* h,
                                          admit_breaker_t* b,
                                          const char* name);

/**
 * Adds a Redis connection, whose backend state (no connection, or its
 * backend breaker not closed) counts as degraded. Returns 0, or
 * ADMIT_EINVAL / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_health_add_redis(admit_health_t* h, admit_redis_t* r);

/**
 * Answers `/ready`: gathers the figures, applies the limits with
 * hysteresis, and fills @p out (may be NULL).
 *
 * Saturation is decided per component, not on the sums: each admission
 * controller is one component (its in flight against its limit, its
 * backlog), and so is each guard, except that guards sharing a semaphore
 * are one component (the semaphore's slots in use against its capacity,
 * the guards' waiting summed). A component is saturated when it is at
 * capacity (or has none) and more than `max_waiting` are waiting in it;
 * one saturated component makes the pod not ready ("overloaded"), and it
 * is ready again only once no component has more than `ready_waiting`
 * waiting. The snapshot's in_flight, waiting and capacity are the sums,
 * for display.
 *
 * Returns 1 if ready, 0 if not, or ADMIT_EINVAL. Each call moves the
 * verdict's state, so call it from the readiness probe (it is cheap).
 */
ADMIT_EXTERN int admit_health_check(admit_health_t* h,
                                    admit_health_snapshot_t* out);

/**
 * Answers `/health` (liveness): returns 1 for a registry that exists.
 *
 * Liveness asks only whether the process is alive; it never fails on load,
 * errors or backends (a restart would not help them). ADMIT_EINVAL for
 * NULL.
 */
ADMIT_EXTERN int admit_health_alive(const admit_health_t* h);

/**
 * Writes @p s as a small JSON object, e.g.
 * `{"status":"overloaded","ready":false,"in_flight":50,...}`, into @p buf.
 *
 * Returns the length of the whole text (without the NUL) as snprintf does:
 * if it is @p size or more, the text was cut; call again with more room.
 * Returns ADMIT_EINVAL for a NULL @p s, or NULL @p buf with nonzero size.
 */
ADMIT_EXTERN int admit_health_render_json(const admit_health_snapshot_t* s,
                                          char* buf, size_t size);

/**
 * Writes the metrics of everything added (guards, admission controllers,
 * breakers, Redis connections) and the readiness verdict as Prometheus text
 * exposition (version 0.0.4) into @p buf.
 *
 * Families have `# HELP` and `# TYPE` lines, counters end in `_total`,
 * histograms have cumulative `_bucket{le="..."}` samples ending in
 * `le="+Inf"`, `_sum` in seconds and `_count`. Returns the length as
 * admit_health_render_json() does, or ADMIT_EINVAL / ADMIT_ENOMEM.
 * Does not move the verdict (it reports the last admit_health_check()).
 */
ADMIT_EXTERN int admit_health_render_metrics(admit_health_t* h, char* buf,
                                             size_t size);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_HEALTH_H */
