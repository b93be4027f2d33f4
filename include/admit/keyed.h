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
 * another. Memory is bounded by @c max_keys: keys whose state equals a fresh
 * one are dropped first, so hostile unique keys cannot exhaust memory. Safe
 * to call from any thread (sharded locks).
 */
typedef struct admit_keyed_s admit_keyed_t;

/** Options for admit_keyed_new(); zero means the default. */
typedef struct admit_keyed_options_s {
  const admit_quota_t* quotas; /**< One quota per tier; copied. */
  uint32_t nquotas;            /**< Number of tiers, at least 1. */
  uint64_t max_keys;           /**< Live keys kept; 0 = 1048576. */
  uint32_t max_key_len;        /**< Longest key accepted; 0 = 512 bytes. */
  const admit_clock_t* clock;  /**< NULL = system monotonic clock. */
} admit_keyed_options_t;

/** A point-in-time view of a keyed limiter. */
typedef struct admit_keyed_stats_s {
  uint64_t keys;       /**< Keys held now. */
  uint64_t max_keys;   /**< The bound on keys. */
  uint64_t evicted;    /**< Fresh keys dropped to make room. */
  uint64_t full;       /**< Calls refused with ADMIT_EFULL. */
  uint64_t bytes;      /**< Memory held for keys and state. */
} admit_keyed_stats_t;

/**
 * Creates a keyed limiter. Options and quotas are copied.
 *
 * Returns 0 and sets @p *out, or ADMIT_EINVAL / ADMIT_ENOMEM.
 */
ADMIT_EXTERN int admit_keyed_new(admit_keyed_t** out,
                                 const admit_keyed_options_t* opts);

/** Frees a keyed limiter and every key. NULL is a no-op. */
ADMIT_EXTERN void admit_keyed_free(admit_keyed_t* k);

/**
 * Decides whether @p cost units may proceed for @p key in @p tier.
 *
 * Returns 0 and fills @p out (allowed or not); ADMIT_EINVAL for a bad tier,
 * key length or cost (0, or over the burst); ADMIT_EFULL if the key is new,
 * the table is at @c max_keys and no key is fresh enough to drop. A denial
 * consumes nothing. Thread-safe.
 */
ADMIT_EXTERN int admit_keyed_try(admit_keyed_t* k, uint32_t tier,
                                 const void* key, size_t keylen,
                                 uint64_t cost, admit_decision_t* out);

/**
 * Reports what a check of @p key would see, consuming nothing and creating
 * no key. Returns 0 or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_keyed_peek(admit_keyed_t* k, uint32_t tier,
                                  const void* key, size_t keylen,
                                  admit_decision_t* out);

/**
 * Gives back @p cost units to @p key (a reservation not used).
 *
 * Windows refund only within the window that was charged. Returns 0,
 * ADMIT_ENOTFOUND if the key is not held, or ADMIT_EINVAL.
 */
ADMIT_EXTERN int admit_keyed_refund(admit_keyed_t* k, uint32_t tier,
                                    const void* key, size_t keylen,
                                    uint64_t cost);

/** Forgets @p key in @p tier. Returns 0, ADMIT_ENOTFOUND or ADMIT_EINVAL. */
ADMIT_EXTERN int admit_keyed_reset(admit_keyed_t* k, uint32_t tier,
                                   const void* key, size_t keylen);

/** Drops every key whose state is fresh. Returns how many were dropped. */
ADMIT_EXTERN uint64_t admit_keyed_sweep(admit_keyed_t* k);

/** Fills @p out. Returns 0 or ADMIT_EINVAL. */
ADMIT_EXTERN int admit_keyed_stats(admit_keyed_t* k,
                                   admit_keyed_stats_t* out);

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_KEYED_H */
