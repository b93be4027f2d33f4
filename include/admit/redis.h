/**
 * @file admit/redis.h
 * Redis-coordinated global limits: one quota shared by every thread,
 * process and pod that talks to the same Redis.
 *
 * A connection (admit_redis_t) owns a background libuv I/O thread that
 * pipelines the requests of every caller over a few hiredis connections.
 * Limiters, semaphores and reservations on top of it run one atomic Lua
 * script per decision, with the Redis server's clock, and follow a failure
 * policy when Redis is down, hung or slow. Every call returns within its
 * timeout whatever Redis does.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_REDIS_H
#define ADMIT_REDIS_H

#include "common.h"
#include "limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uv_loop_s;

/**
 * A connection to one Redis server, shared by every thread of a process.
 *
 * Safe to call from any thread. Many callers share its few connections:
 * their requests are queued, pipelined by one I/O thread and answered in
 * order, so throughput with many callers approaches the server's own.
 */
typedef struct admit_redis_s admit_redis_t;

/** Options for admit_redis_new(); zero means the default. */
typedef struct admit_redis_options_s {
  /**
   * Where Redis is: `redis://[user:password@]host[:port][/db]` or
   * `unix:///path/to.sock[?db=N]` (user, password and db may also be given
   * as `?user=`, `?password=`, `?db=`). NULL means the environment
   * variable `ADMIT_REDIS_URL`, else `redis://localhost:6379/0`.
   */
  const char* url;
  /** Namespace of every key; NULL means "admit". No `{` or `}`. */
  const char* prefix;
  uint64_t connect_timeout_ns;  /**< Connect and handshake; 0 = 1 s. */
  uint64_t command_timeout_ns;  /**< Per command; 0 = 250 ms. */
  uint32_t connections;         /**< Pipelined connections; 0 = 1. */
  uint32_t breaker_failures;    /**< Failures in a row that open the
                                     backend breaker; 0 = 5. */
  uint64_t breaker_cooldown_ns; /**< Open time before a probe; 0 = 1 s. */
  uint64_t reconnect_min_ns;    /**< First reconnect delay; 0 = 50 ms. */
  uint64_t reconnect_max_ns;    /**< Cap on the delay; 0 = 5 s. */
  uint64_t heartbeat_ns;        /**< Instance heartbeat period; 0 = 1 s.
                                     An instance counts as live for three
                                     periods after its last beat. */
  uint32_t max_queue;           /**< Requests queued or in flight before
                                     calls fail with ADMIT_EFULL;
                                     0 = 65536. */
  /**
   * 1: every call goes through the I/O thread. By default a blocking call
   * that finds the connection's spare synchronous connection free uses it
   * directly (one round trip, no thread hand-off), which makes a lone
   * caller as fast as a plain client; concurrent callers pipeline.
   */
  int pipeline_only;
} admit_redis_options_t;

/** States of the backend breaker, as admit_redis_stats_t reports them. */
typedef enum admit_redis_breaker_e {
  ADMIT_REDIS_BREAKER_CLOSED = 0,   /**< Calls go to Redis. */
  ADMIT_REDIS_BREAKER_OPEN = 1,     /**< Calls skip Redis (policy). */
  ADMIT_REDIS_BREAKER_HALF_OPEN = 2 /**< One probe decides. */
} admit_redis_breaker_t;

/** A point-in-time view of a connection. */
typedef struct admit_redis_stats_s {
  uint32_t connected;      /**< Connections ready now. */
  uint32_t breaker;        /**< An admit_redis_breaker_t. */
  uint32_t instances;      /**< Live instances last seen (at least 1). */
  int last_error;          /**< Last connection error (ADMIT_E*), or 0. */
  uint64_t commands;       /**< Commands written to Redis. */
  uint64_t replies;        /**< Replies received. */
  uint64_t timeouts;       /**< Commands that ran out of time. */
  uint64_t failures;       /**< Calls that failed for want of Redis. */
  uint64_t connects;       /**< Successful (re)connections. */
  uint64_t connect_errors; /**< Failed connection attempts. */
  uint64_t disconnects;    /**< Connections lost or dropped. */
  uint64_t script_loads;   /**< Scripts reloaded after NOSCRIPT. */
  uint64_t breaker_trips;  /**< Times the breaker opened. */
  uint64_t breaker_skips;  /**< Calls answered without Redis. */
} admit_redis_stats_t;

/**
 * Connects to Redis as @p opts says (NULL for all defaults).
 *
 * Starts the I/O thread and waits for the first connection attempt (at
 * most the connect timeout). Returns 0 and sets @p *out even when Redis is
 * unreachable (calls then follow their failure policy while the
 * connection retries in the background). Returns ADMIT_ECONFIG for a bad
 * URL or prefix, a rejected password or user, a bad database index or a
 * build without scripts; ADMIT_EINVAL or ADMIT_ENOMEM otherwise. Options
 * are copied.
 */
ADMIT_EXTERN int admit_redis_new(admit_redis_t** out,
                                 const admit_redis_options_t* opts);

/**
 * Closes the connection and stops the I/O thread. NULL is a no-op.
 *
 * Calls still in flight (asynchronous ones included) complete with
 * ADMIT_ECLOSED before it returns. Free the limiters and semaphores of
 * @p r after it, or before it once none has a call in flight; no call may
 * start during or after this one.
 */
ADMIT_EXTERN void admit_redis_free(admit_redis_t* r);

/**
 * Sends PING and waits at most @p timeout_ns for PONG.
 *
 * Returns 0, ADMIT_EUNAVAILABLE, ADMIT_ECONFIG or ADMIT_EINVAL. Ignores
 * the breaker. Blocks the calling thread.
 */
ADMIT_EXTERN int admit_redis_ping(admit_redis_t* r, uint64_t timeout_ns);

/** Fills @p out. Returns 0 or ADMIT_EINVAL. Thread-safe. */
ADMIT_EXTERN int admit_redis_stats(admit_redis_t* r,
                                   admit_redis_stats_t* out);

/**
 * Holds back the asynchronous calls on @p r (the `_cb` and `_uv`
 * functions) until the matching admit_redis_release(), which sends them
 * together. Tries on one limiter whose quota takes the script's fast path
 * (one rate; a token bucket, or a fixed window whose period divides or is
 * a whole number of seconds) then go to Redis as one script call, which
 * costs the server a fraction of as many calls; each is still its own
 * decision, made in the order of the calls on that limiter.
 *
 * For event loops: hold when an iteration starts issuing calls and release
 * at its end (the Python binding does this for every asyncio iteration).
 * Blocking calls are never held back. A hold applies to every thread's
 * asynchronous calls on @p r and a call's deadline runs from the call, so
 * release promptly. Holds nest (from any threads); the last release sends.
 * Release before admit_redis_free() (which completes held calls with
 * ADMIT_ECLOSED).
 *
 * Returns 0 or ADMIT_EINVAL (NULL).
 */
ADMIT_EXTERN int admit_redis_hold(admit_redis_t* r);

/**
 * Ends one admit_redis_hold() of @p r; the last one sends what was held.
 *
 * Returns 0, or ADMIT_EINVAL if @p r is NULL or not held.
 */
ADMIT_EXTERN int admit_redis_release(admit_redis_t* r);

/**
 * What a limiter does when Redis cannot answer (down, hung, slow, or the
 * breaker open). A misconfiguration (ADMIT_ECONFIG) is never hidden by it.
 */
typedef enum admit_redis_policy_e {
  /** Fail the call with ADMIT_EUNAVAILABLE. */
  ADMIT_REDIS_FAIL_CLOSED = 0,
  /** Admit, and count it in the stats. */
  ADMIT_REDIS_FAIL_OPEN = 1,
  /** Decide with a local limiter at this instance's share of the quota:
      each rate divided by the number of live instances. */
  ADMIT_REDIS_FALLBACK = 2
} admit_redis_policy_t;

/** Non-error results of decisions (see admit_redis_limiter_try()). */
enum admit_redis_status_e {
  /** Redis decided. */
  ADMIT_REDIS_OK = 0,
  /** Redis could not answer; the failure policy decided, locally. */
  ADMIT_REDIS_LOCAL = 1
};

/**
 * A global limiter: one quota per subject key, enforced in Redis.
 *
 * Decisions mean exactly what admit_limiter_t decisions mean (same
 * algorithms, fields and rounding; times from the Redis server, whose
 * clock has microsecond resolution). Safe to call from any thread.
 */
typedef struct admit_redis_limiter_s admit_redis_limiter_t;

/** Options for admit_redis_limiter_new(); zero means the default. */
typedef struct admit_redis_limiter_options_s {
  /** The quota (required, copied). Durations up to 2^52 ns (52 days),
      window limits up to 2^32. */
  const admit_quota_t* quota;
  /** Names this limiter's keys: `prefix:{subject}:name`. NULL means a
      name derived from the quota, so changing the quota starts fresh. At
      most 64 bytes, no `{` or `}`. */
  const char* name;
  /** What to do when Redis cannot answer. */
  admit_redis_policy_t on_failure;
  /** Longest subject key accepted; 0 = 512 bytes. */
  uint32_t max_key_len;
  /** Subjects the local fallback keeps; 0 = 65536. */
  uint64_t fallback_max_keys;
} admit_redis_limiter_options_t;

/** Counters of one limiter. */
typedef struct admit_redis_limiter_stats_s {
  uint32_t degraded;   /**< 1 while the last decision was made locally. */
  uint32_t instances;  /**< Live instances the fallback divides by. */
  uint64_t decisions;  /**< Decisions returned (by Redis or locally). */
  uint64_t remote;     /**< Decided by Redis. */
  uint64_t fail_open;  /**< Admitted by the fail-open policy. */
  uint64_t fallback;   /**< Decided by the local fallback. */
  uint64_t unavailable; /**< Failed with ADMIT_EUNAVAILABLE. */
  uint64_t errors;     /**< Failed with any other error. */
  uint64_t refunds;    /**< Refunds Redis applied. */
  uint64_t refunds_lost; /**< Refunds that failed or never reached Redis
                              (down, hung, queue full, closing): their
                              units stay taken until they refill. */
  uint64_t pauses;     /**< Pauses Redis applied. */
  uint64_t pauses_lost; /**< Pauses that failed or never reached Redis. */
} admit_redis_limiter_stats_t;

/**
 * Creates a limiter on connection @p r.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL (bad quota, name or a quota
 * Redis cannot represent exactly) / ADMIT_ENOMEM. @p r must outlive it.
 */
ADMIT_EXTERN int admit_redis_limiter_new(
    admit_redis_limiter_t** out, admit_redis_t* r,
    const admit_redis_limiter_options_t* opts);

/**
 * Frees a limiter. NULL is a no-op.
 *
 * No call may be in progress, asynchronous ones included (their callbacks
 * use the limiter); admit_redis_free() completes those first.
 */
ADMIT_EXTERN void admit_redis_limiter_free(admit_redis_limiter_t* l);

/**
 * Decides whether @p cost units may proceed for subject @p key, consuming
 * them if so.
 *
 * The key is binary-safe (1..max_key_len bytes). Returns ADMIT_REDIS_OK
 * (Redis decided) or ADMIT_REDIS_LOCAL (the failure policy decided), with
 * @p out filled either way; or ADMIT_EUNAVAILABLE (fail closed),
 * ADMIT_ECONFIG (wrong password, ACL denial, a key of the wrong type),
 * ADMIT_EFULL (too many requests queued), ADMIT_EINVAL (bad key, cost 0 or
 * above a rate's limit). A denial consumes nothing. Returns within the
 * command timeout. Blocks the calling thread.
 */
ADMIT_EXTERN int admit_redis_limiter_try(admit_redis_limiter_t* l,
                                         const void* key, size_t keylen,
                                         uint64_t cost,
                                         admit_decision_t* out);

/**
 * Reports what a zero-cost check of @p key sees, consuming nothing.
 *
 * Returns as admit_redis_limiter_try() does (a fail-open peek reports an
 * untouched quota).
 */
ADMIT_EXTERN int admit_redis_limiter_peek(admit_redis_limiter_t* l,
                                          const void* key, size_t keylen,
                                          admit_decision_t* out);

/**
 * Gives back @p cost units to @p key (units taken but not used).
 *
 * The bucket moves back, never below a fresh state; windows refund only
 * within the current window. Give back only units Redis took (a decision
 * that returned ADMIT_REDIS_OK): units the failure policy admitted locally
 * were never taken from Redis. Returns 0, or a negative code (the failure
 * policy does not apply: nothing is given back when Redis is down; the
 * stats count it in `refunds_lost`). Blocks the calling thread, at most
 * the command timeout; admit_redis_limiter_refund_cb() does not.
 */
ADMIT_EXTERN int admit_redis_limiter_refund(admit_redis_limiter_t* l,
                                            const void* key, size_t keylen,
                                            uint64_t cost);

/**
 * Forgets @p key, as if it had never been seen, for every instance.
 *
 * Returns 0 or a negative code.
 */
ADMIT_EXTERN int admit_redis_limiter_reset(admit_redis_limiter_t* l,
                                           const void* key, size_t keylen);

/**
 * Waits until @p cost units may proceed for @p key, at most @p timeout_ns
 * (wait_and_acquire).
 *
 * Tries; when denied, sleeps the server-reported retry_after plus a small
 * random jitter (so waiters do not stampede) and tries again. If the next
 * try cannot fit in what is left of the timeout, returns ADMIT_ETIMEDOUT
 * at once instead of sleeping it out (@p out then says how long it would
 * have been). Returns ADMIT_REDIS_OK or ADMIT_REDIS_LOCAL when admitted,
 * or a negative code as admit_redis_limiter_try(). The timeout bounds the
 * waiting; each try is one round trip bounded by the command timeout (so
 * a timeout of 0 tries once). ADMIT_FOREVER waits as long as needed.
 * Blocks the calling thread.
 */
ADMIT_EXTERN int admit_redis_limiter_acquire(admit_redis_limiter_t* l,
                                             const void* key, size_t keylen,
                                             uint64_t cost,
                                             uint64_t timeout_ns,
                                             admit_decision_t* out);

/**
 * Denies every check of @p key, on every instance, for @p duration_ns
 * from now by the Redis server's clock (a vendor's 429 `Retry-After`).
 *
 * A pause never shortens a longer one already set. @p until_ns (may be
 * NULL) gets the end of the pause in server time (Unix epoch ns). Returns
 * 0 or a negative code (the failure policy does not apply; the stats count
 * it in `pauses_lost`). Blocks the calling thread, at most the command
 * timeout; admit_redis_limiter_pause_cb() does not.
 */
ADMIT_EXTERN int admit_redis_limiter_pause(admit_redis_limiter_t* l,
                                           const void* key, size_t keylen,
                                           uint64_t duration_ns,
                                           uint64_t* until_ns);

/**
 * Like admit_redis_limiter_pause(), until @p unix_ns (Unix epoch ns, e.g.
 * from an HTTP-date `Retry-After`) by the Redis server's clock.
 */
ADMIT_EXTERN int admit_redis_limiter_pause_until(admit_redis_limiter_t* l,
                                                 const void* key,
                                                 size_t keylen,
                                                 uint64_t unix_ns);

/**
 * Units reserved with admit_redis_limiter_reserve(), to settle later.
 *
 * A plain value; keep it until it is settled.
 */
typedef struct admit_redis_reservation_s {
  int reserved;         /**< 1 if the units were taken. */
  int local;            /**< 1 if the failure policy took them (settle is
                             then a no-op). */
  uint64_t cost;        /**< Units reserved (the estimate). */
  uint64_t taken_at_ns; /**< Server time of the reservation (Unix ns). */
} admit_redis_reservation_t;

/**
 * Reserves an estimated @p cost for @p key now (e.g. LLM tokens before
 * the call), to be settled with the real cost later.
 *
 * Returns as admit_redis_limiter_try() and fills @p r (reserved is 0 on a
 * denial) and @p d (may be NULL).
 */
ADMIT_EXTERN int admit_redis_limiter_reserve(admit_redis_limiter_t* l,
                                             const void* key, size_t keylen,
                                             uint64_t cost,
                                             admit_redis_reservation_t* r,
                                             admit_decision_t* d);

/**
 * Settles reservation @p r with the real cost @p actual, atomically:
 * refunds the difference if less was used, charges the excess if more
 * (even past the limit: the units were spent; later checks wait it off).
 *
 * A denied or local reservation settles as a no-op. @p d (may be NULL) gets
 * the state after. Returns 0 or a negative code (no failure policy).
 */
ADMIT_EXTERN int admit_redis_limiter_settle(admit_redis_limiter_t* l,
                                            const void* key, size_t keylen,
                                            const admit_redis_reservation_t* r,
                                            uint64_t actual,
                                            admit_decision_t* d);

/** Fills @p out. Returns 0 or ADMIT_EINVAL. Thread-safe. */
ADMIT_EXTERN int admit_redis_limiter_stats(admit_redis_limiter_t* l,
                                           admit_redis_limiter_stats_t* out);

/**
 * Receives the outcome of an asynchronous decision.
 *
 * @p status is what the blocking call would have returned; @p d is valid
 * during the call only, and filled when @p status >= 0.
 */
typedef void (*admit_redis_decision_cb)(void* ud, int status,
                                        const admit_decision_t* d);

/**
 * Like admit_redis_limiter_try(), but returns at once and calls @p cb
 * once, on the connection's I/O thread, with the outcome.
 *
 * The callback must be quick and must not block or free the limiter (it
 * may start other asynchronous calls). Returns 0 if queued, or a negative
 * code (then @p cb is never called). Usable from any thread and from
 * bindings that hop back to their own event loop.
 */
ADMIT_EXTERN int admit_redis_limiter_try_cb(admit_redis_limiter_t* l,
                                            const void* key, size_t keylen,
                                            uint64_t cost,
                                            admit_redis_decision_cb cb,
                                            void* ud);

/**
 * Receives the outcome of an asynchronous refund or pause.
 *
 * @p status is what the blocking call would have returned: 0, or a
 * negative code (ADMIT_EUNAVAILABLE when Redis could not answer in time:
 * the command may or may not have run; ADMIT_ECLOSED when the connection
 * was freed first). @p until_ns is a pause's end in server time (Unix
 * epoch ns) when it succeeded, else 0.
 */
typedef void (*admit_redis_done_cb)(void* ud, int status, uint64_t until_ns);

/**
 * Like admit_redis_limiter_refund(), but returns at once and calls @p cb
 * once, on the connection's I/O thread, within the command timeout.
 *
 * For an event loop (a later stage refused, a request was cancelled) that
 * must not wait for Redis. A refund that fails is never retried (it may
 * have run) and is counted in the stats (`refunds_lost`), as is one that
 * cannot be queued. A @p cost of 0 goes to Redis too, and gives nothing
 * back. The callback must be quick and must not block or free
 * the limiter (it may start other asynchronous calls). Returns 0 if
 * queued, or a negative code (then @p cb is never called): ADMIT_EINVAL,
 * ADMIT_EFULL, ADMIT_ECLOSED or ADMIT_ENOMEM. Usable from any thread.
 */
ADMIT_EXTERN int admit_redis_limiter_refund_cb(admit_redis_limiter_t* l,
                                               const void* key,
                                               size_t keylen, uint64_t cost,
                                               admit_redis_done_cb cb,
                                               void* ud);

/**
 * Like admit_redis_limiter_pause(), but returns at once and calls @p cb
 * once, on the connection's I/O thread, within the command timeout, with
 * the pause's end.
 *
 * A pause that fails is counted in the stats (`pauses_lost`). Returns as
 * admit_redis_limiter_refund_cb() does.
 */
ADMIT_EXTERN int admit_redis_limiter_pause_cb(admit_redis_limiter_t* l,
                                              const void* key,
                                              size_t keylen,
                                              uint64_t duration_ns,
                                              admit_redis_done_cb cb,
                                              void* ud);

/**
 * Binds a connection's completions to a caller's libuv loop, for the
 * `_uv` calls.
 *
 * Create, use and close it on the loop's thread only. It owns a uv_async_t
 * on that loop, so the loop stays alive until admit_redis_loop_close().
 */
typedef struct admit_redis_loop_s admit_redis_loop_t;

/**
 * Creates a binding on @p loop. Call on the loop's thread.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL / ADMIT_ENOMEM / ADMIT_ESYS.
 */
ADMIT_EXTERN int admit_redis_loop_new(admit_redis_loop_t** out,
                                      struct uv_loop_s* loop);

/**
 * Closes a binding. NULL is a no-op. Call on the loop's thread.
 *
 * Calls still in flight complete first (their callbacks run, on the loop,
 * within the command timeout); the memory is released after the last
 * libuv close callback, so keep running the loop.
 */
ADMIT_EXTERN void admit_redis_loop_close(admit_redis_loop_t* lp);

/**
 * Like admit_redis_limiter_try(), but never blocks: @p cb runs once on
 * @p lp's loop thread with the outcome.
 *
 * Call on the loop's thread. Returns 0 if queued, or a negative code (then
 * @p cb is never called): ADMIT_ECLOSED once admit_redis_loop_close() was
 * called, or as admit_redis_limiter_try_cb().
 */
ADMIT_EXTERN int admit_redis_limiter_try_uv(admit_redis_limiter_t* l,
                                            admit_redis_loop_t* lp,
                                            const void* key, size_t keylen,
                                            uint64_t cost,
                                            admit_redis_decision_cb cb,
                                            void* ud);

/**
 * Like admit_redis_limiter_refund_cb(), but @p cb runs on @p lp's loop
 * thread. Call on the loop's thread.
 *
 * Returns 0 if queued, or a negative code (then @p cb is never called):
 * ADMIT_ECLOSED once admit_redis_loop_close() was called, or as
 * admit_redis_limiter_refund_cb().
 */
ADMIT_EXTERN int admit_redis_limiter_refund_uv(admit_redis_limiter_t* l,
                                               admit_redis_loop_t* lp,
                                               const void* key,
                                               size_t keylen, uint64_t cost,
                                               admit_redis_done_cb cb,
                                               void* ud);

/**
 * Like admit_redis_limiter_pause_cb(), but @p cb runs on @p lp's loop
 * thread. Call on the loop's thread; returns as
 * admit_redis_limiter_refund_uv() does.
 */
ADMIT_EXTERN int admit_redis_limiter_pause_uv(admit_redis_limiter_t* l,
                                              admit_redis_loop_t* lp,
                                              const void* key,
                                              size_t keylen,
                                              uint64_t duration_ns,
                                              admit_redis_done_cb cb,
                                              void* ud);

/**
 * A global semaphore: at most @c capacity leases per subject key at once,
 * across every instance.
 *
 * A lease has a unique id and a server-time expiry, so a crashed holder's
 * permit comes back by itself. Safe to call from any thread.
 */
typedef struct admit_redis_semaphore_s admit_redis_semaphore_t;

/** Options for admit_redis_semaphore_new(); zero means the default. */
typedef struct admit_redis_semaphore_options_s {
  uint64_t capacity;   /**< Leases at once; at least 1. */
  uint64_t lease_ns;   /**< Lease lifetime; 0 = 30 s. Renew long work. */
  const char* name;    /**< Names the keys; NULL = "sem". */
  /** Optional: a limiter checked in the same atomic step as the capacity
      (both admit, or neither changes). Must use the same connection. */
  admit_redis_limiter_t* rate;
  /** ADMIT_REDIS_FAIL_CLOSED or ADMIT_REDIS_FAIL_OPEN (which grants a
      local lease that release ignores). */
  admit_redis_policy_t on_failure;
  uint32_t max_key_len; /**< Longest subject key; 0 = 512 bytes. */
} admit_redis_semaphore_options_t;

/** A permit held in a global semaphore. A plain value. */
typedef struct admit_redis_lease_s {
  char id[33];            /**< Unique id (hex), NUL-terminated. */
  int local;              /**< 1 if granted by the fail-open policy. */
  uint64_t expires_at_ns; /**< Server time (Unix ns) it lapses. */
} admit_redis_lease_t;

/**
 * Creates a semaphore on connection @p r.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_redis_semaphore_new(
    admit_redis_semaphore_t** out, admit_redis_t* r,
    const admit_redis_semaphore_options_t* opts);

/** Frees a semaphore. NULL is a no-op. Leases held stay until released
    or expired. */
ADMIT_EXTERN void admit_redis_semaphore_free(admit_redis_semaphore_t* s);

/**
 * Takes a lease for @p key if one is free (and, with a rate, @p cost units
 * of it are admitted).
 *
 * Returns ADMIT_REDIS_OK or ADMIT_REDIS_LOCAL with @p d filled: when
 * d->allowed is 1, @p lease holds the permit. When the capacity decided a
 * denial, d->limiting is the rate count (one past the last rate),
 * d->limit the capacity and d->retry_after_ns the time until the oldest
 * lease lapses (a release may come sooner). Negative codes as
 * admit_redis_limiter_try().
 */
ADMIT_EXTERN int admit_redis_semaphore_try(admit_redis_semaphore_t* s,
                                           const void* key, size_t keylen,
                                           uint64_t cost,
                                           admit_redis_lease_t* lease,
                                           admit_decision_t* d);

/**
 * Takes a lease, waiting at most @p timeout_ns (polling with jittered
 * backoff, bounded by retry_after).
 *
 * Returns ADMIT_REDIS_OK / ADMIT_REDIS_LOCAL with the lease, ADMIT_ETIMEDOUT
 * when the time runs out, or a negative code. Blocks the calling thread.
 */
ADMIT_EXTERN int admit_redis_semaphore_acquire(admit_redis_semaphore_t* s,
                                               const void* key,
                                               size_t keylen, uint64_t cost,
                                               uint64_t timeout_ns,
                                               admit_redis_lease_t* lease,
                                               admit_decision_t* d);

/**
 * Extends @p lease by the lease time from now (server clock).
 *
 * Returns 0, ADMIT_ENOTFOUND if it had lapsed or was released (the permit
 * may be someone else's now), or a negative code.
 */
ADMIT_EXTERN int admit_redis_semaphore_renew(admit_redis_semaphore_t* s,
                                             const void* key, size_t keylen,
                                             admit_redis_lease_t* lease);

/**
 * Returns @p lease to the semaphore. Release each lease once.
 *
 * Returns 0, ADMIT_ENOTFOUND if it had already lapsed, or a negative code.
 * A local lease returns 0 at once.
 */
ADMIT_EXTERN int admit_redis_semaphore_release(
    admit_redis_semaphore_t* s, const void* key, size_t keylen,
    const admit_redis_lease_t* lease);

/**
 * Counts the leases of @p key held now (lapsed ones dropped).
 *
 * Returns 0 and sets @p *held, or a negative code.
 */
ADMIT_EXTERN int admit_redis_semaphore_held(admit_redis_semaphore_t* s,
                                            const void* key, size_t keylen,
                                            uint64_t* held);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_REDIS_H */
