/**
 * @file admit/guard.h
 * The vendor-call guard: every outbound call to one vendor or dependency
 * passes a breaker, a vendor pause, a local limiter, a global limiter and a
 * semaphore, in that order, within one queue timeout; then the call runs
 * under its own timeout, and failed calls may be retried within a budget.
 *
 * The order follows one rule: reject before waiting, wait before reserving,
 * reserve before calling. A stage that can already tell its wait will not
 * fit the queue time left fails at once, without sleeping; a stage that
 * refuses gives back what earlier stages took; the semaphore slot, the
 * scarcest thing, is taken last and held only for the call.
 *
 * Three kinds of caller use the same attempt, an admit_guard_permit_t in
 * the caller's memory. A thread blocks:
 *
 * @code
 * admit_guard_permit_t p;
 * int rc = admit_guard_enter(g, &p, 5 * ADMIT_SECOND);  // queue timeout
 * if (rc == 0) {
 *   int outcome = call_vendor(p.call_deadline_ns);
 *   admit_guard_leave(&p, outcome);
 * }
 * @endcode
 *
 * An event loop (asyncio through cffi, libuv) steps, and never blocks:
 *
 * @code
 * admit_guard_start(g, &p, 5 * ADMIT_SECOND, wake_loop, ctx);
 * for (;;) {
 *   uint64_t wait;
 *   int rc = admit_guard_step(&p, &wait);
 *   if (rc == ADMIT_GUARD_READY) break;            // make the call, leave
 *   if (rc < 0) return rc;                         // refused: nothing held
 *   if (rc == ADMIT_GUARD_WAIT) sleep_on_loop(wait);
 *   else wait_for_wake_or(wait);                   // PENDING
 * }
 * // On cancellation at any point: admit_guard_cancel(&p).
 * @endcode
 *
 * Retries re-arm the same permit: after admit_guard_leave(), a 1 from
 * admit_guard_retry() makes it a new attempt whose first WAIT is the
 * backoff. admit_guard_call() does all of it for a thread.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_GUARD_H
#define ADMIT_GUARD_H

#include "common.h"
#include "limiter.h"
#include "semaphore.h"
#include "breaker.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Latency histogram buckets, including the last one, +Inf. */
enum admit_histogram_constants_e { ADMIT_HISTOGRAM_BUCKETS = 19 };

/**
 * A snapshot of a latency histogram with fixed bounds (100 us .. 60 s).
 *
 * `le[i]` counts observations of at most admit_histogram_bound_ns(i)
 * (cumulative, as Prometheus wants them); the last bucket is +Inf and
 * equals @c count.
 */
typedef struct admit_histogram_s {
  uint64_t count;                      /**< Observations. */
  uint64_t sum_ns;                     /**< Their sum. */
  uint64_t le[ADMIT_HISTOGRAM_BUCKETS]; /**< Cumulative bucket counts. */
} admit_histogram_t;

/**
 * Returns the upper bound of histogram bucket @p i in nanoseconds, or
 * UINT64_MAX for the last (+Inf) bucket and any index past it.
 */
ADMIT_EXTERN uint64_t admit_histogram_bound_ns(unsigned i);

/**
 * A global (cross-process) limiter as the guard sees it: a table of
 * callbacks, so that the Redis limiter, or anything else, can serve as the
 * guard's global stage.
 *
 * All callbacks get @c ud and must be thread-safe. A status below zero is an
 * ADMIT_E* code and fails the attempt with it (a backend's fail-open or
 * fall-back policy belongs inside the callbacks); a status above zero
 * counts as success. The guard calls @c refund and @c pause only from its
 * callers' threads, never from inside a @c try_async reply: units of a
 * reply that lands after its attempt was cancelled are given back by the
 * guard's next call (or by admit_guard_free()).
 */
typedef struct admit_guard_global_s {
  /**
   * Required. Decides @p cost units now, consuming them if allowed.
   * Returns 0 and fills @p d (allowed or not, with `retry_after_ns`), or a
   * negative code. May block (a network round trip).
   */
  int (*try_acquire)(void* ud, uint64_t cost, admit_decision_t* d);
  /**
   * Optional. The same decision without blocking: returns 0 if @p done will
   * be called exactly once (from any thread, perhaps before this returns)
   * with a status and the decision, or a negative code (then it is never
   * called). The step API uses it when present.
   */
  int (*try_async)(void* ud, uint64_t cost,
                   void (*done)(void* arg, int status,
                                const admit_decision_t* d),
                   void* arg);
  /** Optional. Gives back @p cost units that were taken but not used. */
  int (*refund)(void* ud, uint64_t cost);
  /** Optional. Pauses every user of the limiter for @p pause_ns. */
  int (*pause)(void* ud, uint64_t pause_ns);
  void* ud; /**< Passed to every callback. */
} admit_guard_global_t;

/** Options for admit_guard_new(); zero means the default. */
typedef struct admit_guard_options_s {
  const char* name;      /**< Label in metrics; copied; NULL = "default". */
  admit_breaker_t* breaker;    /**< Borrowed; NULL = no breaker. */
  admit_limiter_t* local;      /**< Borrowed; NULL = no local limiter. */
  const admit_guard_global_t* global; /**< Copied; NULL = no global stage. */
  admit_redis_limiter_t* redis; /**< Borrowed: the Redis limiter as the
                                     global stage (instead of @c global). */
  const char* redis_key;  /**< Its subject key; copied; NULL = @c name. */
  admit_semaphore_t* semaphore; /**< Borrowed; NULL = no semaphore. */
  uint64_t cost;          /**< Limiter units per call; 0 = 1. */
  int priority;           /**< Semaphore priority class; 0 = most urgent. */
  uint64_t call_timeout_ns; /**< Per-attempt call budget; 0 = 30 s. */
  uint32_t max_attempts;  /**< Attempts per call, first included; 0 = 3. */
  uint32_t retry_on;      /**< Outcomes admit_guard_call() retries, as bits
                               `1 << outcome`; 0 = failure, timeout and
                               vendor-limited. */
  uint64_t backoff_base_ns; /**< First retry's backoff cap; 0 = 100 ms. */
  uint64_t backoff_max_ns;  /**< Backoff cap; 0 = 10 s. */
  double retry_ratio;     /**< Retries allowed per call started; 0 = 0.2. */
  uint32_t retry_min;     /**< Retries always allowed per window; 0 = 10. */
  uint64_t window_ns;     /**< Retry budget and error-rate window;
                               0 = 10 s. */
  uint64_t quota_low_water; /**< Pause when a vendor reports at most this
                                 many requests remaining; 0 = 0. */
  const admit_clock_t* clock; /**< NULL = system monotonic clock. */
} admit_guard_options_t;

/**
 * A guard for calls to one vendor or dependency.
 *
 * It borrows its breaker, local limiter and semaphore (they must outlive
 * it, and may be shared with other guards) and copies its global stage.
 * Every function is safe to call from any thread; one permit belongs to one
 * caller at a time.
 */
typedef struct admit_guard_s admit_guard_t;

/** Where an attempt is, or which stage refused it. */
typedef enum admit_guard_stage_e {
  ADMIT_GUARD_STAGE_BACKOFF = 0,   /**< Waiting out a retry's backoff. */
  ADMIT_GUARD_STAGE_BREAKER = 1,   /**< Asking the circuit breaker. */
  ADMIT_GUARD_STAGE_PAUSE = 2,     /**< Waiting out a vendor's pause. */
  ADMIT_GUARD_STAGE_LOCAL = 3,     /**< The local limiter. */
  ADMIT_GUARD_STAGE_GLOBAL = 4,    /**< The global limiter. */
  ADMIT_GUARD_STAGE_SEMAPHORE = 5, /**< The semaphore. */
  ADMIT_GUARD_STAGE_CALL = 6,      /**< Admitted: the call may run. */
  ADMIT_GUARD_STAGE_DONE = 7       /**< Left, refused or cancelled. */
} admit_guard_stage_t;

/** Returns a static name for a stage ("local", ...), or "unknown". */
ADMIT_EXTERN const char* admit_guard_stage_name(int stage);

/** What admit_guard_step() asks of its caller. */
typedef enum admit_guard_step_e {
  ADMIT_GUARD_READY = 0,  /**< Admitted: make the call, then leave. */
  ADMIT_GUARD_WAIT = 1,   /**< Sleep the given time, then step again. */
  ADMIT_GUARD_PENDING = 2 /**< Queued: step again when notified, or when
                               the given time (the queue time left) ends. */
} admit_guard_step_t;

/**
 * Called when a pending attempt should be stepped again.
 *
 * It is called at most once for each ADMIT_GUARD_PENDING that
 * admit_guard_step() returned, and never otherwise. It runs on whichever
 * thread completed the wait (a semaphore release, a Redis reply), with no
 * lock held; it must be quick and must not call into the permit (schedule
 * a step on the caller's own loop instead). If the caller steps a pending
 * attempt before the call came (its queue time ran out), the call may still
 * come once, late; @p ud must stay valid until then, or until the attempt
 * is done.
 */
typedef void (*admit_guard_notify_cb)(void* ud);

/**
 * A ready-made admit_guard_notify_cb that posts @p ud, an
 * admit_notify_node_t, to its completion queue with status 0 (see
 * admit/notify.h), so an event loop can wait on the queue's descriptor.
 */
ADMIT_EXTERN void admit_guard_notify_post(void* ud);

/**
 * One attempt at a guarded call, in the caller's memory.
 *
 * Fill it with admit_guard_start() or admit_guard_enter(); the fields
 * marked internal belong to the guard. The memory must stay valid and
 * unmoved from start until the attempt is done (left, refused or
 * cancelled). Not thread-safe: one caller at a time.
 */
typedef struct admit_guard_permit_s {
  uint64_t call_deadline_ns; /**< When admitted: the call must end by this
                                  clock time. */
  uint64_t call_timeout_ns;  /**< When admitted: the call's budget. */
  uint64_t queue_deadline_ns; /**< All waiting must end by this time. */
  uint64_t retry_after_ns;   /**< When refused: a wait that would fit the
                                  stage that refused (0 if unknown). */
  uint32_t attempt;          /**< 0 for the first attempt, then 1, 2, ... */
  int32_t stage;             /**< An admit_guard_stage_t. */
  int32_t error;             /**< The code that ended the attempt, or 0. */
  /* Internal state. */
  uint32_t state_;           /**< Internal. */
  uint32_t held_;            /**< Internal. */
  uint32_t flags_;           /**< Internal. */
  admit_guard_t* guard_;     /**< Internal. */
  uint64_t started_ns_;      /**< Internal. */
  uint64_t admitted_ns_;     /**< Internal. */
  uint64_t not_before_ns_;   /**< Internal. */
  uint64_t breaker_token_;   /**< Internal. */
  admit_reservation_t local_; /**< Internal. */
  uint64_t sem_ticket_;      /**< Internal. */
  void* op_;                 /**< Internal. */
  admit_guard_notify_cb notify_; /**< Internal. */
  void* notify_ud_;          /**< Internal. */
} admit_guard_permit_t;

/**
 * Creates a guard. Options are copied (the handles in them are borrowed).
 *
 * With @c redis, the global stage is that limiter's quota for @c redis_key:
 * shared by every process and pod, decided asynchronously in the step API
 * (admit_redis_limiter_try_cb()), and paused for everyone by
 * admit_guard_pause() or admit_guard_pause_cb(). Its refunds never block
 * (admit_redis_limiter_refund_cb(); one that fails is counted in the
 * limiter's stats, `refunds_lost`), and units its failure policy took
 * locally go back to its local fallback, not to Redis. Returns 0 and sets
 * @p *out, or ADMIT_EINVAL (both @c global and @c redis, a global stage
 * without try_acquire, a priority out of range, a negative retry ratio, a
 * name or key over 128 bytes) / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_guard_new(admit_guard_t** out,
                                 const admit_guard_options_t* opts);

/**
 * Frees a guard. NULL is a no-op.
 *
 * Every attempt must be done; the borrowed handles are not freed. Waits
 * for the Redis stage's replies, refunds and pauses still on their way
 * (each at most the connection's command timeout).
 */
ADMIT_EXTERN void admit_guard_free(admit_guard_t* g);

/**
 * Begins an attempt in @p p without waiting for anything.
 *
 * All waiting of the attempt, across every stage, must end within
 * @p queue_timeout_ns (ADMIT_FOREVER to wait as long as needed). @p notify
 * (may be NULL if the caller never steps into ADMIT_GUARD_PENDING, e.g.
 * uses admit_guard_wait()) is called with @p ud when a pending attempt
 * should be stepped again. Then call admit_guard_step() (event loops) or
 * admit_guard_wait() (threads). The previous contents of @p p are not
 * read (a permit still in an attempt must be finished first). Returns 0 or
 * ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_guard_start(admit_guard_t* g, admit_guard_permit_t* p,
                                   uint64_t queue_timeout_ns,
                                   admit_guard_notify_cb notify, void* ud);

/**
 * Advances an attempt as far as it can go without blocking.
 *
 * Returns ADMIT_GUARD_READY (admitted: the call may run, by
 * `call_deadline_ns`); ADMIT_GUARD_WAIT with @p *wait_ns set (sleep that
 * long, then step again; the wait always fits the queue time left);
 * ADMIT_GUARD_PENDING with @p *wait_ns set to the queue time left (step
 * again when notified, or when that time is up, which then times out); or
 * a negative code, with everything the attempt held given back:
 * ADMIT_EOPEN (breaker), ADMIT_ETIMEDOUT (a wait would not fit the queue
 * time, or the time ran out; `stage` says where, `retry_after_ns` how long
 * the stage wanted), ADMIT_EFULL (semaphore queue full), a global stage's
 * own code, or ADMIT_EINVAL. Never blocks, unless a global stage without
 * try_async blocks in try_acquire (or a global table's refund blocks).
 */
ADMIT_EXTERN int admit_guard_step(admit_guard_permit_t* p, uint64_t* wait_ns);

/**
 * Runs an attempt to admission or refusal, blocking the calling thread.
 *
 * Sleeps the waits admit_guard_step() asks for (on the guard's clock) and
 * waits for the semaphore in its blocking form (which waits in real time:
 * the semaphore has no injected clock). Returns 0 when admitted or a
 * negative code as admit_guard_step() does.
 */
ADMIT_EXTERN int admit_guard_wait(admit_guard_permit_t* p);

/**
 * Begins an attempt and runs it to admission or refusal, blocking the
 * calling thread: admit_guard_start() then admit_guard_wait().
 *
 * Returns 0 when admitted (make the call, then admit_guard_leave()) or a
 * negative code as admit_guard_step() and admit_guard_start() do; after a
 * refusal there is nothing to release.
 */
ADMIT_EXTERN int admit_guard_enter(admit_guard_t* g, admit_guard_permit_t* p,
                                   uint64_t queue_timeout_ns);

/**
 * Ends an admitted attempt: records @p outcome (an admit_outcome_t) and the
 * call's latency, informs the breaker and releases the semaphore.
 *
 * Runs no retry, never calls Redis and never blocks (the seed's shielded
 * cleanup: only metrics and releases). Returns 0; ADMIT_EINVAL for a bad
 * outcome, or a permit that is not admitted (leaving twice releases
 * nothing the second time).
 */
ADMIT_EXTERN int admit_guard_leave(admit_guard_permit_t* p, int outcome);

/**
 * Abandons an attempt at whatever stage it is, giving back everything it
 * holds exactly once: a breaker probe, a local reservation, global units
 * (refunded), a semaphore place or permit.
 *
 * An admitted attempt is left with ADMIT_OUTCOME_CANCELLED (its units were
 * spent). Giving global units back never waits for Redis (the refund
 * completes on the connection's I/O thread); a global table's refund
 * callback is called as it is. Safe to call on a permit that is already
 * done (it does nothing). Returns 0, or ADMIT_EINVAL for a permit never
 * started.
 */
ADMIT_EXTERN int admit_guard_cancel(admit_guard_permit_t* p);

/**
 * Asks to retry a finished attempt, and if allowed re-arms @p p for the
 * next one.
 *
 * Allowed when attempts remain and the retry budget has room (retries in
 * the window at most `retry_min` + `retry_ratio` times the calls started).
 * Then returns 1, sets @p *delay_ns (may be NULL) to a capped exponential
 * backoff with full jitter, uniform in [0, min(max, base * 2^attempt)],
 * and @p p is a new attempt that first waits out that delay, then passes
 * every stage again within @p queue_timeout_ns; drive it with
 * admit_guard_step() or admit_guard_wait(). Returns 0 if not allowed (p
 * stays done; `error` is ADMIT_ELIMITED when the budget refused), or
 * ADMIT_EINVAL (p not done).
 */
ADMIT_EXTERN int admit_guard_retry(admit_guard_permit_t* p,
                                   uint64_t queue_timeout_ns,
                                   uint64_t* delay_ns);

/**
 * Pauses the guard for @p pause_ns: a vendor answered 429 with
 * Retry-After.
 *
 * New attempts wait out the pause (or fail at once if it outlasts their
 * queue time), and so do attempts already past the pause stage: after any
 * wait (the local or global limiter's, the semaphore's) an attempt checks
 * the pause again before going on, and waits it out within its queue time
 * (a semaphore slot just granted goes back meanwhile) or, if it does not
 * fit, gives back what it reserved and fails at once (ADMIT_ETIMEDOUT,
 * stage ADMIT_GUARD_STAGE_PAUSE). The global stage's pause is called so
 * that every process sharing it pauses too. A shorter pause never shortens a longer
 * one. Returns 0, or the global stage's error (the local pause holds
 * anyway), or ADMIT_EINVAL. With a Redis stage it waits for Redis (one
 * round trip, at most the command timeout): from an event loop, use
 * admit_guard_pause_cb().
 */
ADMIT_EXTERN int admit_guard_pause(admit_guard_t* g, uint64_t pause_ns);

/**
 * Receives the outcome of admit_guard_pause_cb(): 0, or the global stage's
 * error (e.g. ADMIT_EUNAVAILABLE: Redis could not answer in time).
 */
typedef void (*admit_guard_done_cb)(void* ud, int status);

/**
 * Like admit_guard_pause(), but never waits for Redis: pauses this process
 * at once and returns; the Redis stage's pause completes on the
 * connection's I/O thread, within its command timeout.
 *
 * @p cb (may be NULL) is then called once with the outcome: on the I/O
 * thread with a Redis stage, else before this returns. A Redis pause that
 * fails is counted in the limiter's stats (`pauses_lost`). The callback
 * must be quick and must not block or free the guard. Returns 0 (the
 * callback will run), or a negative code (it will not; the local pause
 * holds anyway): ADMIT_EINVAL, ADMIT_ENOMEM, ADMIT_EFULL, ADMIT_ECLOSED, or
 * a global table's pause error.
 */
ADMIT_EXTERN int admit_guard_pause_cb(admit_guard_t* g, uint64_t pause_ns,
                                      admit_guard_done_cb cb, void* ud);

/**
 * Feeds a vendor's remaining-quota figures back (e.g. the
 * `x-ratelimit-remaining-requests` and `-reset-requests` headers).
 *
 * When @p remaining is at most the `quota_low_water` option, pauses the
 * guard (everywhere, as admit_guard_pause_cb(), never waiting for Redis)
 * for @p reset_after_ns. Returns 1 if it paused, 0 if not, or a negative
 * code.
 */
ADMIT_EXTERN int admit_guard_vendor_quota(admit_guard_t* g,
                                          uint64_t remaining,
                                          uint64_t reset_after_ns);

/**
 * A call made under a guard: gets the admitted permit (for its deadline),
 * returns an admit_outcome_t.
 */
typedef int (*admit_guard_fn)(void* ud, const admit_guard_permit_t* p);

/**
 * Makes a guarded call from a thread, with retries: enters, calls @p fn,
 * leaves with its outcome, and retries the outcomes named by `retry_on`
 * while attempts and the retry budget allow.
 *
 * What is retried: only a call that ran and ended with an outcome in
 * `retry_on` (by default ADMIT_OUTCOME_FAILURE, ADMIT_OUTCOME_TIMEOUT, the
 * call timeout, and ADMIT_OUTCOME_VENDOR_LIMITED, the vendor's 429), while
 * attempts remain and the retry budget has room. What is never retried:
 * the guard's own refusals, returned at once -- the open breaker
 * (ADMIT_EOPEN), a vendor pause, local or global limiter wait that would
 * not fit the queue time left, the queue time running out while waiting
 * (ADMIT_ETIMEDOUT with `stage` before ADMIT_GUARD_STAGE_CALL), a full
 * semaphore queue (ADMIT_EFULL), a backend error (e.g. ADMIT_EUNAVAILABLE)
 * -- the same policy as the Python `Guard.call`.
 *
 * Time: @p queue_timeout_ns is one budget for all the waiting of the call,
 * across its attempts: a retry may wait in the stages only for what the
 * earlier attempts left of it (once spent, a retry passes only if no stage
 * makes it wait). The backoff before a retry is not queue time. Returns 0
 * when a call succeeded; otherwise the last attempt's code: a stage's
 * refusal, ADMIT_ECALL (failed), ADMIT_ETIMEDOUT (the call timed out) or
 * ADMIT_ELIMITED (the vendor refused); when the budget refuses a retry,
 * the last call's code too. @p last (may be NULL) gets the last attempt's
 * permit. Blocks.
 */
ADMIT_EXTERN int admit_guard_call(admit_guard_t* g, uint64_t queue_timeout_ns,
                                  admit_guard_fn fn, void* ud,
                                  admit_guard_permit_t* last);

/** Counters, gauges and histograms of one guard. */
typedef struct admit_guard_metrics_s {
  uint64_t started;            /**< Attempts started (calls and retries). */
  uint64_t admitted;           /**< Attempts that reached the call. */
  uint64_t rejected_breaker;   /**< Refused by the open breaker. */
  uint64_t rejected_pause;     /**< A vendor pause outlasted the queue time. */
  uint64_t rejected_local;     /**< The local limiter's wait would not fit. */
  uint64_t rejected_global;    /**< The global limiter's wait would not fit. */
  uint64_t rejected_semaphore; /**< The semaphore's wait queue was full. */
  uint64_t queue_timeouts;     /**< The queue time ran out while waiting. */
  uint64_t errors;             /**< A stage failed (e.g. backend down). */
  uint64_t cancelled;          /**< Cancelled while waiting or calling. */
  uint64_t succeeded;          /**< Calls left with SUCCESS. */
  uint64_t failed;             /**< Calls left with FAILURE. */
  uint64_t call_timeouts;      /**< Calls left with TIMEOUT. */
  uint64_t vendor_limited;     /**< Calls left with VENDOR_LIMITED. */
  uint64_t retries;            /**< Retries granted. */
  uint64_t retries_denied;     /**< Retries the budget refused. */
  uint64_t pauses;             /**< Vendor pauses applied. */
  uint64_t breaker_opened;     /**< The breaker's transitions to open. */
  uint64_t breaker_half_opened; /**< ... to half-open. */
  uint64_t breaker_closed;     /**< ... to closed. */
  int32_t breaker_state;       /**< admit_breaker_state_t, or -1 if none. */
  uint64_t in_flight;          /**< Admitted calls not yet left (gauge). */
  uint64_t capacity;           /**< The semaphore's capacity, 0 if none. */
  uint64_t capacity_in_use;    /**< Its permits held now (by any user). */
  uint64_t waiting;            /**< Attempts in the stages now (gauge). */
  uint64_t paused_for_ns;      /**< Local vendor pause left now. */
  int32_t global_degraded;     /**< 1 while the Redis stage decides locally
                                    (its failure policy), 0 if not, -1
                                    without a Redis stage. */
  uint64_t recent_calls;       /**< Calls left in the window. */
  uint64_t recent_errors;      /**< Of those, failures and timeouts. */
  admit_histogram_t queue_wait; /**< Start to admission, admitted only. */
  admit_histogram_t call_time;  /**< Admission to leave. */
} admit_guard_metrics_t;

/** Fills @p out. Returns 0 or ADMIT_EINVAL. Thread-safe. */
ADMIT_EXTERN int admit_guard_metrics(admit_guard_t* g,
                                     admit_guard_metrics_t* out);

/** Returns the guard's name (never NULL for a valid guard). */
ADMIT_EXTERN const char* admit_guard_name(const admit_guard_t* g);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_GUARD_H */
