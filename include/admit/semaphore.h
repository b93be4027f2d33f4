/**
 * @file admit/semaphore.h
 * A counting semaphore with bounded, prioritised FIFO waiting.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_SEMAPHORE_H
#define ADMIT_SEMAPHORE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Capacity-bounded concurrency: at most @c capacity permits out at once.
 *
 * Waiters are served by priority class (0 first) and strictly FIFO within a
 * class. Every function is safe to call from any thread; a permit may be
 * released by a thread other than the one that took it.
 */
typedef struct admit_semaphore_s admit_semaphore_t;

/** Options for admit_semaphore_new(); zero means the default. */
typedef struct admit_semaphore_options_s {
  uint64_t capacity;    /**< Permits; 1 to 2^31 - 1. */
  uint64_t max_waiters; /**< Bound on queued waiters; 0 = no waiting. */
  int unbounded_waiters; /**< 1: ignore max_waiters, queue without bound. */
} admit_semaphore_options_t;

/**
 * A point-in-time view of a semaphore.
 *
 * @c capacity, @c in_use and @c waiting are taken at one instant; the
 * counters are read at about the same time.
 */
typedef struct admit_semaphore_stats_s {
  uint64_t capacity;  /**< Current capacity. */
  uint64_t in_use;    /**< Permits held now (may exceed a lowered capacity). */
  uint64_t waiting;   /**< Waiters queued now. */
  uint64_t acquired;  /**< Permits granted since creation. */
  uint64_t rejected;  /**< ADMIT_EFULL answers: the wait queue was full. */
  uint64_t timed_out; /**< ADMIT_ETIMEDOUT answers (timeout 0 included). */
  uint64_t cancelled; /**< Asynchronous waits removed by their owner. */
} admit_semaphore_stats_t;

/**
 * Creates a semaphore. The options are copied.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL (NULL, capacity 0 or above
 * 2^31 - 1, @c unbounded_waiters neither 0 nor 1) or
 * ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_semaphore_new(admit_semaphore_t** out,
                                     const admit_semaphore_options_t* opts);

/**
 * Frees a semaphore. NULL is a no-op.
 *
 * Asynchronous waiters still queued get their callback with ADMIT_ECLOSED,
 * on this thread, before the memory goes. No thread may be blocked in
 * admit_semaphore_acquire() or be using the semaphore in any other way:
 * that is undefined behaviour.
 */
ADMIT_EXTERN void admit_semaphore_free(admit_semaphore_t* s);

/**
 * Takes a permit if one is free and nobody is queued ahead.
 *
 * Never waits and never passes a queued waiter. Lock-free while nobody
 * waits. Returns 1 if taken, 0 if not, or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_semaphore_try(admit_semaphore_t* s);

/**
 * Takes a permit, waiting at most @p timeout_ns behind earlier waiters of
 * the same or a more urgent @p priority (0..ADMIT_PRIORITIES_MAX-1).
 *
 * Returns 0 with the permit held; ADMIT_EFULL at once if it would have to
 * wait and the wait queue is full; ADMIT_ETIMEDOUT when the time runs out
 * (a timeout of 0 never waits and answers ADMIT_ETIMEDOUT at once);
 * ADMIT_EINVAL. ADMIT_FOREVER waits without a deadline. Timeouts run on
 * the monotonic clock. Blocks the calling thread; a permit granted at the
 * instant the time runs out is kept (0 is returned).
 */
ADMIT_EXTERN int admit_semaphore_acquire(admit_semaphore_t* s, int priority,
                                         uint64_t timeout_ns);

/**
 * Called once when an asynchronous wait ends.
 *
 * @p status is 0 when the permit was granted (the receiver now holds it and
 * must release it) or ADMIT_ECLOSED if the semaphore is being freed (no
 * permit; the semaphore must not be used again). It runs on the thread that
 * released the permit or raised the capacity, with no lock held; it must be
 * quick and must not free the semaphore, but it may call the other
 * functions (releasing at once passes the permit on to the next waiter).
 */
typedef void (*admit_semaphore_cb)(void* ud, uint64_t ticket, int status);

/**
 * Queues an asynchronous waiter for a permit.
 *
 * Returns 1 if a permit was free and is now held (the callback is never
 * called); 0 if queued (the callback will be called once, unless
 * admit_semaphore_cancel() removes the waiter first), with @p ticket set
 * (never 0); ADMIT_EFULL if the queue is full; ADMIT_ENOMEM; ADMIT_EINVAL
 * (NULL @p s, @p cb or @p ticket, bad @p priority). Never blocks; the
 * waiter's memory comes from a pool reused after warm-up.
 */
ADMIT_EXTERN int admit_semaphore_acquire_async(admit_semaphore_t* s,
                                               int priority,
                                               admit_semaphore_cb cb,
                                               void* ud, uint64_t* ticket);

/**
 * Withdraws a queued asynchronous waiter.
 *
 * Returns 1 if the waiter was removed (its callback will never run), or 0
 * if it had already been granted (its callback has run or is running: the
 * permit is the caller's to release). A grant is never lost. Cancel a ticket
 * at most once: after 1, or once its callback has run, the ticket reads as
 * granted (0). Returns ADMIT_EINVAL for NULL or a ticket never issued.
 */
ADMIT_EXTERN int admit_semaphore_cancel(admit_semaphore_t* s,
                                        uint64_t ticket);

/**
 * Returns a permit, handing it straight to the first waiter if any.
 *
 * Returns 0, or ADMIT_EINVAL if no permit is held (the count never goes
 * below zero).
 */
ADMIT_EXTERN int admit_semaphore_release(admit_semaphore_t* s);

/**
 * Changes the capacity at run time (at least 1).
 *
 * Raising it grants to waiters at once, in queue order (asynchronous
 * callbacks run on this thread); lowering it lets held permits drain, so
 * @c in_use may exceed @c capacity until enough are released. Returns 0 or
 * ADMIT_EINVAL (NULL, 0 or above 2^31 - 1).
 */
ADMIT_EXTERN int admit_semaphore_set_capacity(admit_semaphore_t* s,
                                              uint64_t capacity);

/** Fills @p out with a consistent snapshot. Returns 0 or ADMIT_EINVAL. */
ADMIT_EXTERN int admit_semaphore_stats(admit_semaphore_t* s,
                                       admit_semaphore_stats_t* out);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_SEMAPHORE_H */
