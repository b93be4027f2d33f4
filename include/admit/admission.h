/**
 * @file admit/admission.h
 * Pod admission control, as `uvicorn --limit-concurrency --backlog` does
 * it: at most @c max_in_flight requests run, at most @c backlog wait, and
 * anything beyond both is refused at once (the service answers 503). Adds
 * priority classes, CoDel-style load shedding and an optional adaptive
 * limit.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_ADMISSION_H
#define ADMIT_ADMISSION_H

#include "common.h"
#include "breaker.h"
#include "guard.h"

#ifdef __cplusplus
extern "C" {
#endif

/** How the admission limit moves, if at all. */
typedef enum admit_adaptive_e {
  ADMIT_ADAPTIVE_NONE = 0,    /**< A fixed limit, @c max_in_flight. */
  /**
   * Additive increase, multiplicative decrease (Netflix AIMDLimit): +1 per
   * request that finished in time while the limit was in use, times
   * @c aimd_backoff per timeout or request slower than @c aimd_latency_ns.
   */
  ADMIT_ADAPTIVE_AIMD = 1,
  /**
   * The gradient of long-term to recent latency (Netflix Gradient2Limit):
   * the limit shrinks as latency rises above its long-term average.
   */
  ADMIT_ADAPTIVE_GRADIENT = 2
} admit_adaptive_t;

/** Options for admit_admission_new(); zero means the default. */
typedef struct admit_admission_options_s {
  uint32_t max_in_flight; /**< Requests running at once (the starting limit
                               when adaptive); 0 = 100. */
  uint32_t backlog;       /**< Requests allowed to wait; 0 = 200. */
  int no_backlog;         /**< 1: nobody waits (backlog 0). */
  uint64_t shed_target_ns;   /**< Acceptable time in the backlog;
                                  0 = 100 ms. */
  uint64_t shed_interval_ns; /**< How long waits may stay above the target
                                  before shedding starts; 0 = 1 s. */
  int no_shedding;        /**< 1: never shed. */
  int shed_min_priority;  /**< Classes more urgent than this are never shed;
                               0 = 1 (class 0, e.g. health checks). */
  admit_adaptive_t adaptive; /**< Fixed (default), AIMD or gradient. */
  uint32_t min_limit;     /**< Adaptive floor; 0 = 1. */
  uint32_t max_limit;     /**< Adaptive ceiling; 0 = 10 * max_in_flight. */
  double aimd_backoff;    /**< AIMD decrease factor; 0 = 0.9. */
  uint64_t aimd_latency_ns; /**< AIMD: slower counts as a drop; 0 = 5 s. */
  double gradient_tolerance; /**< Gradient: latency ratio tolerated;
                                  0 = 1.5. */
  double gradient_smoothing; /**< Gradient: weight of a new limit;
                                  0 = 0.2. */
  uint64_t window_ns;     /**< Recent error-rate window; 0 = 10 s. */
  const admit_clock_t* clock; /**< NULL = system monotonic clock. */
} admit_admission_options_t;

/**
 * An admission controller for one pod or worker.
 *
 * Waiters are served by priority class (0 first, up to
 * ADMIT_PRIORITIES_MAX - 1), FIFO within a class. When the backlog is full,
 * a newcomer displaces the newest waiter of a less urgent class (that one
 * is shed) or is refused. Shedding follows CoDel: once the time waited by
 * the requests being admitted has stayed above @c shed_target_ns for
 * @c shed_interval_ns, waiters that waited longer than the target are shed
 * instead of served, until the backlog drains. Every function is safe to
 * call from any thread.
 */
typedef struct admit_admission_s admit_admission_t;

/**
 * One request's place, in the caller's memory.
 *
 * Filled by admit_admission_enter() or admit_admission_enter_async(); the
 * fields marked internal belong to the controller. For an asynchronous
 * wait the memory must stay valid and unmoved until the callback has run or
 * admit_admission_cancel() returned 1.
 */
typedef struct admit_admission_permit_s {
  uint64_t ticket;      /**< Identifies the request (and its async wait). */
  uint64_t enqueued_ns; /**< Clock time it arrived. */
  uint64_t admitted_ns; /**< Clock time it was admitted. */
  int32_t priority;     /**< Its class. */
  int32_t status;       /**< 0 admitted, or why not (ADMIT_ESHED, ...). */
  uint32_t state_;      /**< Internal. */
  void* waiter_;        /**< Internal. */
  admit_admission_t* owner_; /**< Internal. */
} admit_admission_permit_t;

/**
 * Called once when an asynchronous wait ends, with the request's ticket.
 *
 * @p status is 0 when admitted (the permit is filled: leave it when done),
 * ADMIT_ESHED when shed, or ADMIT_ECLOSED when the controller is freed. It
 * runs on the thread that freed the place (a leave) or shed the waiter,
 * with no lock held; it must be quick. The signature is that of
 * admit_semaphore_cb, so admit_notify_semaphore_cb() can be used to post
 * the result to an event loop.
 */
typedef void (*admit_admission_cb)(void* ud, uint64_t ticket, int status);

/** A point-in-time view of an admission controller. */
typedef struct admit_admission_stats_s {
  uint64_t limit;       /**< Current limit on requests in flight. */
  uint64_t in_flight;   /**< Requests running now. */
  uint64_t waiting;     /**< Requests in the backlog now. */
  uint64_t backlog;     /**< Bound on the backlog. */
  uint64_t admitted;    /**< Requests admitted since creation. */
  uint64_t rejected;    /**< Refused at once: ADMIT_EFULL. */
  uint64_t shed;        /**< Shed after waiting too long (CoDel). */
  uint64_t displaced;   /**< Shed to make room for a more urgent class. */
  uint64_t timed_out;   /**< Blocking waits that ran out of time. */
  uint64_t cancelled;   /**< Asynchronous waits withdrawn. */
  uint64_t completed;   /**< Requests left. */
  uint64_t errors;      /**< Left with FAILURE or TIMEOUT. */
  uint64_t recent_calls;  /**< Requests left in the window. */
  uint64_t recent_errors; /**< Of those, failures and timeouts. */
  int shedding;         /**< 1 while CoDel is shedding. */
  uint64_t oldest_wait_ns; /**< How long the oldest waiter has waited. */
  admit_histogram_t queue_wait; /**< Arrival to admission. */
  admit_histogram_t latency;    /**< Admission to leave. */
} admit_admission_stats_t;

/**
 * Creates an admission controller. The options are copied; NULL means
 * defaults.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL (an unknown adaptive mode, a
 * min_limit above max_limit, a negative factor) / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_admission_new(admit_admission_t** out,
                                     const admit_admission_options_t* opts);

/**
 * Frees a controller. NULL is a no-op.
 *
 * Queued asynchronous waiters get ADMIT_ECLOSED; no thread may be blocked
 * in admit_admission_enter() and no admitted request may still leave.
 */
ADMIT_EXTERN void admit_admission_free(admit_admission_t* a);

/**
 * Admits a request of class @p priority, waiting in the backlog at most
 * @p timeout_ns (0: never wait), blocking the calling thread.
 *
 * Returns 0 with @p p filled (leave it when done); ADMIT_EFULL at once when
 * the limit is reached and the backlog is full (or @p timeout_ns is 0);
 * ADMIT_ESHED when shed; ADMIT_ETIMEDOUT when the time ran out (measured on
 * the system clock); ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_admission_enter(admit_admission_t* a, int priority,
                                       uint64_t timeout_ns,
                                       admit_admission_permit_t* p);

/**
 * Admits a request without blocking, queueing it if it must wait.
 *
 * Returns 1 if admitted now (@p p filled; @p cb is never called); 0 if
 * queued (`p->ticket` set; @p cb will be called once with @p ud, unless
 * admit_admission_cancel() returns 1 first); ADMIT_EFULL at once; or
 * ADMIT_EINVAL. Waiting has no timeout of its own: the caller cancels.
 */
ADMIT_EXTERN int admit_admission_enter_async(admit_admission_t* a,
                                             int priority,
                                             admit_admission_permit_t* p,
                                             admit_admission_cb cb, void* ud);

/**
 * Withdraws a queued asynchronous request.
 *
 * Returns 1 if it was removed (its callback will never run); 0 if its wait
 * had already ended (the callback has run or is running; `p->status` says
 * how: 0 means admitted, and the caller must leave); ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_admission_cancel(admit_admission_t* a,
                                        admit_admission_permit_t* p);

/**
 * Ends an admitted request with @p outcome (an admit_outcome_t), recording
 * its latency, adapting the limit and admitting the next waiter.
 *
 * Returns 0, or ADMIT_EINVAL for a bad outcome or a permit that is not
 * admitted (leaving twice frees nothing the second time).
 */
ADMIT_EXTERN int admit_admission_leave(admit_admission_t* a,
                                       admit_admission_permit_t* p,
                                       int outcome);

/**
 * Sets the limit on requests in flight (at least 1), e.g. from an
 * operator; an adaptive limit moves on from there. Raising it admits
 * waiters at once. Returns 0 or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_admission_set_limit(admit_admission_t* a,
                                           uint32_t limit);

/** Fills @p out with a consistent snapshot. Returns 0 or ADMIT_EINVAL. */
ADMIT_EXTERN int admit_admission_stats(admit_admission_t* a,
                                       admit_admission_stats_t* out);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_ADMISSION_H */
