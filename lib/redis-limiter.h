/* Internals of the Redis limiter shared with the semaphore and the tests. */
#ifndef ADMIT_REDIS_LIMITER_H
#define ADMIT_REDIS_LIMITER_H

#include "redis-call.h"

/* Most arguments a quota takes in a script: algo, nrates, 4 per rate. */
#define ADMIT__QUOTA_ARGS (2 + 4 * ADMIT_RATES_MAX)

/* Writes the key `prefix:{escaped subject}:name` into @p buf (@p cap
 * bytes). '%', '{' and '}' in the subject are percent-encoded, so every
 * key of a subject shares one hash tag and no subject can pick another's
 * slot. Returns the length, or ADMIT_EINVAL if it does not fit. */
int admit__redis_key(const admit_redis_t* r, const void* subject,
                     size_t len, const char* name, char* buf, size_t cap);

/* The most bytes admit__redis_key() may need. */
size_t admit__redis_key_cap(const admit_redis_t* r, size_t len,
                            const char* name);

/* The limiter's connection, name and quota arguments for the scripts. */
admit_redis_t* admit__redis_limiter_conn(const admit_redis_limiter_t* l);
const char* admit__redis_limiter_name(const admit_redis_limiter_t* l);
int admit__redis_limiter_quota_args(const admit_redis_limiter_t* l,
                                    const char** argv, size_t* lens);
/* The number of rates of the limiter's quota. */
uint32_t admit__redis_limiter_nrates(const admit_redis_limiter_t* l);
/* 0 if @p cost is valid for every rate, else ADMIT_EINVAL. */
int admit__redis_limiter_check_cost(const admit_redis_limiter_t* l,
                                    uint64_t cost);

/* Runs one limit.lua operation with an injected server time (tests only;
 * @p now_ns 0 means the server's TIME) and no failure policy. @p args are
 * the operation's numeric arguments (see limit.lua). Returns 0 or a
 * negative code; fills @p d, @p server_now (may be NULL) and @p extra (may
 * be NULL: the pause end). */
int admit__redis_limiter_op_at(admit_redis_limiter_t* l, const char* op,
                               const void* key, size_t keylen,
                               uint64_t now_ns, const uint64_t* args,
                               int nargs, admit_decision_t* d,
                               uint64_t* server_now, uint64_t* extra);

/* Gives @p cost units back to the local fallback of a limiter whose
 * failure policy is ADMIT_REDIS_FALLBACK (units a local decision took);
 * a no-op for other policies. Never blocks on Redis. Returns 0 or
 * ADMIT_EINVAL. */
int admit__redis_limiter_refund_local(admit_redis_limiter_t* l,
                                      const void* key, size_t keylen,
                                      uint64_t cost);

#endif /* ADMIT_REDIS_LIMITER_H */
