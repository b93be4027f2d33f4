/**
 * @file admit/notify.h
 * A completion queue that carries the results of asynchronous waits from
 * any thread to one consumer (an event loop) through a file descriptor.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_NOTIFY_H
#define ADMIT_NOTIFY_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A multi-producer, single-consumer completion queue with a readable file
 * descriptor.
 *
 * Producers (callbacks running on any thread) post nodes; the consumer
 * watches admit_notify_fd() for readability (e.g. asyncio's `add_reader`)
 * and calls admit_notify_drain(). Posting never allocates, never blocks
 * and never fails, so a grant cannot be lost on the way. Posting is safe
 * from any thread; draining must be done by one thread at a time.
 */
typedef struct admit_notify_s admit_notify_t;

/**
 * One pending completion, owned by the waiter that queued it.
 *
 * Zero it, fill @c notify and @c id, then pass the node as the `ud` of an
 * asynchronous call (for example with admit_notify_semaphore_cb()). The
 * node must stay valid until admit_notify_drain() has returned its id and
 * no further post can come; the other fields are written by the queue. A
 * node posted again before it was drained is delivered once: posts
 * coalesce (the first status is kept), so a "step again" signal that fires
 * twice in a row cannot corrupt the queue.
 */
typedef struct admit_notify_node_s {
  struct admit_notify_node_s* next; /**< Internal: queue link. */
  admit_notify_t* notify;           /**< The queue to post to. */
  uint64_t id;                      /**< Caller's identifier for the wait. */
  uint64_t value;                   /**< Payload, e.g. a semaphore ticket. */
  int status;                       /**< Result of the wait. */
  int queued_;                      /**< Internal: posted, not drained. */
} admit_notify_node_t;

/** One drained completion: the node's id, value and status. */
typedef struct admit_completion_s {
  uint64_t id;    /**< admit_notify_node_t::id. */
  uint64_t value; /**< admit_notify_node_t::value. */
  int status;     /**< admit_notify_node_t::status. */
} admit_completion_t;

/**
 * Creates a completion queue with its file descriptor (an eventfd, or a
 * pipe where eventfd is missing; non-blocking and close-on-exec).
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL / ADMIT_ENOMEM / ADMIT_ESYS.
 */
ADMIT_EXTERN int admit_notify_new(admit_notify_t** out);

/**
 * Closes the file descriptor and frees the queue. NULL is a no-op.
 *
 * No producer may still hold a node that points to it.
 */
ADMIT_EXTERN void admit_notify_free(admit_notify_t* n);

/**
 * Returns the file descriptor that becomes readable when completions are
 * pending, or ADMIT_EINVAL for NULL.
 *
 * Do not read it yourself; admit_notify_drain() resets it.
 */
ADMIT_EXTERN int admit_notify_fd(const admit_notify_t* n);

/**
 * Posts @p node (with @p status) to the queue named by `node->notify` and
 * wakes the consumer.
 *
 * Returns 0, or ADMIT_EINVAL if @p node or its queue is NULL. Lock-free;
 * safe from any thread, including inside callbacks that hold no lock.
 */
ADMIT_EXTERN int admit_notify_post(admit_notify_node_t* node, int status);

/**
 * Takes up to @p cap completions, oldest first, into @p out.
 *
 * Returns how many were written (0 if none are pending), or ADMIT_EINVAL.
 * Once a completion is returned, its node is no longer referenced by the
 * queue and may be freed. Completions beyond @p cap stay queued for the next
 * call. One consumer thread at a time.
 */
ADMIT_EXTERN int admit_notify_drain(admit_notify_t* n, admit_completion_t* out,
                                    size_t cap);

/**
 * A ready-made admit_semaphore_cb that posts its result to a queue.
 *
 * Pass it to admit_semaphore_acquire_async() with an admit_notify_node_t as
 * `ud`; the ticket goes to the node's @c value and the status to its
 * @c status. Safe from any thread.
 */
ADMIT_EXTERN void admit_notify_semaphore_cb(void* ud, uint64_t ticket,
                                            int status);

/**
 * A completion node that also carries a decision, for callbacks of the
 * shape `void (*)(void* ud, int status, const admit_decision_t* d)`
 * (the Redis limiter's admit_redis_decision_cb, a guard's global stage).
 *
 * Fill `node.notify` and `node.id`. The node comes first, so a pointer to
 * this struct is also a valid admit_notify_node_t pointer.
 */
typedef struct admit_notify_decision_s {
  admit_notify_node_t node;  /**< The completion node. */
  admit_decision_t decision; /**< Copied from the callback before posting. */
} admit_notify_decision_t;

/**
 * A ready-made decision callback that copies @p d (when not NULL and
 * @p status >= 0) into the admit_notify_decision_t passed as `ud`, then
 * posts it with @p status. Safe from any thread.
 */
ADMIT_EXTERN void admit_notify_decision_cb(void* ud, int status,
                                           const admit_decision_t* d);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_NOTIFY_H */
