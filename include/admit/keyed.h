/**
 * @file admit/keyed.h
 * Keyed limiters: one limiter state per user, tier, endpoint or any
 * binary key, in bounded memory.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_KEYED_H
#define ADMIT_KEYED_H

#include "limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Many limiters addressed by key, each created on first use.
 *
 * A keyed limiter holds one or more quotas ("tiers"); each call names the
 * tier, and a key's state in one tier is independent of the same key in
 * another. Keys are any bytes, 1 to @c max_key_len of them; a key's
 * decisions are exactly those an admit_limiter_t with the tier's quota and
 * the same clock would give.
 *
 * Memory is bounded by @c max_keys: a new key that finds the table full
 * drops keys whose state equals a fresh one (dropping them changes no
 * decision), so hostile unique keys cannot exhaust memory; when a bounded
 * scan finds none, the call fails with ADMIT_EFULL. A key costs about 32
 * to 50 bytes plus its length when over 16 bytes (single-rate token
 * bucket; each further rate adds 8 bytes, 16 for windows). Keys are hashed
 * with a random secret per limiter, so chosen keys cannot collide on
 * purpose. Safe to call from any thread (sharded locks).
 */
typedef struct admit_keyed_s admit_keyed_t;

/** Options for admit_keyed_new(); zero means the default. */
typedef struct admit_keyed_options_s {
  const admit_quota_t* quotas; /**< One quota per tier; copied. */
  uint32_t nquotas;            /**< Number of tiers, 1..65535. */
  uint64_t max_keys;           /**< Live keys kept; 0 = 1048576; <= 2^40. */
  uint32_t max_key_len;        /**< Longest key; 0 = 512, at most 65535. */
  const admit_clock_t* clock;  /**< NULL = system monotonic clock. */
} admit_keyed_options_t;

/** A point-in-time view of a keyed limiter. */
typedef struct admit_keyed_stats_s {
  uint64_t keys;       /**< Keys held now. */
  uint64_t max_keys;   /**< The bound on keys. */
  uint64_t evicted;    /**< Fresh keys dropped to make room for new ones. */
  uint64_t full;       /**< Calls refused with ADMIT_EFULL. */
  uint64_t bytes;      /**< Bytes held from the allocator, all included. */
} admit_keyed_stats_t;

/**
 * Creates a keyed limiter. Options and quotas are copied.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL (a NULL pointer, no quota, an
 * invalid quota, or a limit out of range) / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_keyed_new(admit_keyed_t** out,
                                 const admit_keyed_options_t* opts);

/** Frees a keyed limiter and every key. NULL is a no-op; no call may be in
 * progress. */
ADMIT_EXTERN void admit_keyed_free(admit_keyed_t* k);

/**
 * Decides whether @p cost units may proceed for @p key in @p tier.
 *
 * Returns 0 and fills @p out (allowed or not); ADMIT_EINVAL for a NULL
 * pointer, a bad tier, a key length of 0 or over @c max_key_len, or a cost
 * of 0 or over the tier's smallest burst/limit; ADMIT_EFULL if the key is
 * new, @c max_keys keys are held and a bounded scan (at most 128 keys,
 * resumed where the last one stopped) found none fresh to drop; ADMIT_ENOMEM. After an error, a non-NULL @p out says "not
 * allowed". A denial
 * consumes nothing and a denied new key is not stored. Thread-safe.
 */
ADMIT_EXTERN int admit_keyed_try(admit_keyed_t* k, uint32_t tier,
                                 const void* key, size_t keylen,
                                 uint64_t cost, admit_decision_t* out);

/**
 * Reports what a check of @p key would see, consuming nothing and creating
 * no key (an unknown key reports a fresh state).
 *
 * Returns 0 or ADMIT_EINVAL. Thread-safe.
 */
ADMIT_EXTERN int admit_keyed_peek(admit_keyed_t* k, uint32_t tier,
                                  const void* key, size_t keylen,
                                  admit_decision_t* out);

/**
 * Gives back @p cost units to @p key (units taken but not used).
 *
 * The units count as taken now: a token bucket moves its state back by
 * @p cost units (never below a full bucket); a window gives them back only
 * from its current window, so units charged in an earlier window are not
 * refunded. A key left fresh is dropped. Returns 0, ADMIT_ENOTFOUND if the
 * key is not held, or ADMIT_EINVAL (as admit_keyed_try()). Thread-safe.
 */
ADMIT_EXTERN int admit_keyed_refund(admit_keyed_t* k, uint32_t tier,
                                    const void* key, size_t keylen,
                                    uint64_t cost);

/**
 * Forgets @p key in @p tier, as if it had never been seen.
 *
 * Returns 0, ADMIT_ENOTFOUND or ADMIT_EINVAL. Thread-safe.
 */
ADMIT_EXTERN int admit_keyed_reset(admit_keyed_t* k, uint32_t tier,
                                   const void* key, size_t keylen);

/**
 * Drops every key whose state is fresh and gives back memory.
 *
 * Keys are otherwise dropped only when the table is full; call this from
 * time to time to keep memory near what busy keys need. Returns how many
 * keys were dropped (0 for NULL). Locks one shard at a time; thread-safe.
 */
ADMIT_EXTERN uint64_t admit_keyed_sweep(admit_keyed_t* k);

/** Fills @p out. Returns 0 or ADMIT_EINVAL. Thread-safe. */
ADMIT_EXTERN int admit_keyed_stats(admit_keyed_t* k,
                                   admit_keyed_stats_t* out);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_KEYED_H */
