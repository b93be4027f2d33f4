/* Limits shared through Redis, and what each failure policy does when
 * Redis cannot answer. Run it with a Redis server:
 *   ADMIT_REDIS_URL=redis://localhost:6379/0 build/release/examples/redis
 * (`make check` runs it against a throwaway server; its output is
 * doc/out/redis.txt). */
#include <admit.h>
#include <stdio.h>
#include <stdlib.h>

static const char* rc_name(int rc) {
  return rc == ADMIT_REDIS_OK      ? "ADMIT_REDIS_OK"
         : rc == ADMIT_REDIS_LOCAL ? "ADMIT_REDIS_LOCAL"
                                   : admit_err_name(rc);
}

int main(void) {
  admit_redis_t* r;
  admit_decision_t d;
  int rc;
  //! [limiter]
  /* NULL url: $ADMIT_REDIS_URL, else redis://localhost:6379/0. */
  admit_redis_options_t ro = {0};
  if ((rc = admit_redis_new(&r, &ro)) < 0 ||
      (rc = admit_redis_ping(r, ADMIT_SECOND)) < 0) {
    fprintf(stderr, "redis: %s\n", admit_strerror(rc));
    return 1;
  }
  admit_quota_t q;
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "10/minute", NULL);
  admit_redis_limiter_options_t lo = {0};
  lo.quota = &q;
  lo.name = "api";                      /* keys: admit:{<user>}:api */
  lo.on_failure = ADMIT_REDIS_FALLBACK; /* see below */
  admit_redis_limiter_t* l;
  if (admit_redis_limiter_new(&l, r, &lo) < 0) return 1;
  int allowed = 0;
  for (int i = 0; i < 11; i++) {
    rc = admit_redis_limiter_try(l, "user:42", 7, 1, &d);
    allowed += rc >= 0 && d.allowed;
  }
  //! [limiter]
  printf("user:42: %d of 11 allowed; last: %s, retry_after=%.0fs\n",
         allowed, rc_name(rc), d.retry_after_ns / 1e9);
  admit_redis_limiter_reset(l, "user:42", 7);

  admit_redis_semaphore_options_t so = {0};
  so.capacity = 2;
  so.lease_ns = 30ull * ADMIT_SECOND;
  admit_redis_semaphore_t* s;
  admit_redis_lease_t lease[3];
  if (admit_redis_semaphore_new(&s, r, &so) < 0) return 1;
  for (int i = 0; i < 3; i++) {
    rc = admit_redis_semaphore_try(s, "vendor", 6, 1, &lease[i], &d);
    printf("semaphore try %d: %s, allowed=%d\n", i + 1, rc_name(rc),
           d.allowed);
  }
  for (int i = 0; i < 2; i++) {
    admit_redis_semaphore_release(s, "vendor", 6, &lease[i]);
  }
  admit_redis_semaphore_free(s);
  admit_redis_limiter_free(l);
  admit_redis_free(r);

  /* Nothing listens on port 1: every call finds Redis unavailable. */
  static const char* names[] = {"fail closed", "fail open", "fallback"};
  for (int p = 0; p < 3; p++) {
    ro.url = "redis://127.0.0.1:1/0";
    if (admit_redis_new(&r, &ro) < 0) return 1;
    lo.on_failure = (admit_redis_policy_t)p;
    if (admit_redis_limiter_new(&l, r, &lo) < 0) return 1;
    allowed = 0;
    for (int i = 0; i < 12; i++) {
      rc = admit_redis_limiter_try(l, "user:42", 7, 1, &d);
      allowed += rc >= 0 && d.allowed;
    }
    admit_redis_stats_t st;
    admit_redis_stats(r, &st);
    printf("Redis down, %-11s: last %-18s %2d of 12 allowed, breaker %s\n",
           names[p], rc_name(rc), allowed,
           st.breaker == ADMIT_REDIS_BREAKER_OPEN ? "open" : "not open");
    admit_redis_limiter_free(l);
    admit_redis_free(r);
  }
  return 0;
}
