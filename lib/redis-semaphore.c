/* The global semaphore: leases in a sorted set (lib/lua/sem.lua), each with
 * a unique id and a server-time expiry, optionally combined with a rate
 * limit in the same atomic script. */
#include "redis-limiter.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/hiredis.h>

struct admit_redis_semaphore_s {
  admit_redis_t* r;
  uint64_t capacity;
  uint64_t lease_ns;
  char name[201];
  admit_redis_limiter_t* rate;
  admit_redis_policy_t policy;
  uint32_t max_key_len;
  char cap_text[24];
  char lease_text[24];
  char idbase[17];
  _Atomic uint64_t seq;
};

static void hex64(uint64_t v, char out[17]) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; i--) {
    out[i] = hex[v & 15];
    v >>= 4;
  }
  out[16] = '\0';
}

int admit_redis_semaphore_new(admit_redis_semaphore_t** out,
                              admit_redis_t* r,
                              const admit_redis_semaphore_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  if (r == NULL || opts == NULL || opts->capacity == 0 ||
      opts->capacity >= (UINT64_C(1) << 52) ||
      opts->lease_ns >= (UINT64_C(1) << 52))
    return ADMIT_EINVAL;
  if (opts->on_failure != ADMIT_REDIS_FAIL_CLOSED &&
      opts->on_failure != ADMIT_REDIS_FAIL_OPEN)
    return ADMIT_EINVAL;
  if (opts->rate != NULL && admit__redis_limiter_conn(opts->rate) != r)
    return ADMIT_EINVAL;
  const char* name = opts->name != NULL ? opts->name : "sem";
  size_t nlen = strlen(name);
  if (nlen == 0 || nlen > 200 || strpbrk(name, "{} ") != NULL)
    return ADMIT_EINVAL;
  admit_redis_semaphore_t* s = admit__calloc(1, sizeof(*s));
  if (s == NULL) return ADMIT_ENOMEM;
  s->r = r;
  s->capacity = opts->capacity;
  s->lease_ns = opts->lease_ns ? opts->lease_ns : 30 * (uint64_t)ADMIT_SECOND;
  memcpy(s->name, name, nlen + 1);
  s->rate = opts->rate;
  s->policy = opts->on_failure;
  s->max_key_len = opts->max_key_len ? opts->max_key_len : 512;
  snprintf(s->cap_text, sizeof(s->cap_text), "%llu",
           (unsigned long long)s->capacity);
  snprintf(s->lease_text, sizeof(s->lease_text), "%llu",
           (unsigned long long)s->lease_ns);
  uint64_t seed;
  if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
    seed = admit__random();
  hex64(seed, s->idbase);
  *out = s;
  return 0;
}

void admit_redis_semaphore_free(admit_redis_semaphore_t* s) {
  admit__free(s);
}

static int check_key(const admit_redis_semaphore_t* s, const void* key,
                     size_t keylen) {
  if (key == NULL || keylen == 0 || keylen > s->max_key_len)
    return ADMIT_EINVAL;
  return 0;
}

/* Builds a sem.lua call. With @p with_rate, the limiter's key and quota
 * and @p cost follow. */
static admit__rcall_t* sem_call(admit_redis_semaphore_t* s, const char* op,
                                const void* key, size_t keylen,
                                const char* id, int with_rate,
                                uint64_t cost) {
  const char* rname = with_rate ? admit__redis_limiter_name(s->rate) : "";
  size_t cap = admit__redis_key_cap(s->r, keylen, s->name) +
               admit__redis_key_cap(s->r, keylen, rname);
  char* kbuf = admit__malloc(cap);
  if (kbuf == NULL) return NULL;
  size_t cap1 = admit__redis_key_cap(s->r, keylen, s->name);
  int k1 = admit__redis_key(s->r, key, keylen, s->name, kbuf, cap1);
  int k2 = 0;
  if (with_rate)
    k2 = admit__redis_key(s->r, key, keylen, rname, kbuf + cap1, cap - cap1);
  const char* argv[12 + ADMIT__QUOTA_ARGS];
  size_t lens[12 + ADMIT__QUOTA_ARGS];
  char costbuf[24];
  int n = 0;
  argv[n] = "EVALSHA";
  lens[n++] = 7;
  argv[n] = admit__redis_sha(s->r, ADMIT__SCRIPT_SEM);
  lens[n++] = 40;
  argv[n] = with_rate ? "2" : "1";
  lens[n++] = 1;
  argv[n] = kbuf;
  lens[n++] = (size_t)k1;
  if (with_rate) {
    argv[n] = kbuf + cap1;
    lens[n++] = (size_t)k2;
  }
  argv[n] = op;
  lens[n++] = strlen(op);
  argv[n] = "";
  lens[n++] = 0;
  argv[n] = id;
  lens[n++] = strlen(id);
  argv[n] = s->cap_text;
  lens[n++] = strlen(s->cap_text);
  argv[n] = s->lease_text;
  lens[n++] = strlen(s->lease_text);
  if (with_rate) {
    n += admit__redis_limiter_quota_args(s->rate, argv + n, lens + n);
    snprintf(costbuf, sizeof(costbuf), "%llu", (unsigned long long)cost);
    argv[n] = costbuf;
    lens[n++] = strlen(costbuf);
  }
  admit__rcall_t* c = admit__rcall_new(s->r, n, argv, lens, NULL, 0);
  admit__free(kbuf);
  if (c == NULL) return NULL;
  c->req.script = ADMIT__SCRIPT_SEM;
  c->owner = s;
  return c;
}

static int acquire_finish(admit__rcall_t* c, int status) {
  admit_redis_semaphore_t* s = c->owner;
  if (status >= 0) return ADMIT_REDIS_OK;
  if (status != ADMIT_EUNAVAILABLE || s->policy != ADMIT_REDIS_FAIL_OPEN)
    return status;
  memset(&c->d, 0, sizeof(c->d));
  c->d.allowed = 1;
  c->d.limit = s->capacity;
  c->extra_ns = 0;
  return ADMIT_REDIS_LOCAL;
}

int admit_redis_semaphore_try(admit_redis_semaphore_t* s, const void* key,
                              size_t keylen, uint64_t cost,
                              admit_redis_lease_t* lease,
                              admit_decision_t* d) {
  if (s == NULL || lease == NULL || d == NULL) return ADMIT_EINVAL;
  memset(lease, 0, sizeof(*lease));
  int rc = check_key(s, key, keylen);
  if (rc < 0) return rc;
  if (s->rate != NULL &&
      (rc = admit__redis_limiter_check_cost(s->rate, cost)) < 0)
    return rc;
  char id[33];
  hex64(atomic_fetch_add(&s->seq, 1), id + 16);
  memcpy(id, s->idbase, 16);
  admit__rcall_t* c =
      sem_call(s, "acquire", key, keylen, id, s->rate != NULL, cost);
  if (c == NULL) return ADMIT_ENOMEM;
  c->parse = admit__rcall_parse_decision;
  c->finish = acquire_finish;
  c->use_breaker = 1;
  rc = admit__rcall_run(c, ADMIT_FOREVER);
  if (rc >= 0) {
    *d = c->d;
    if (d->allowed) {
      memcpy(lease->id, id, sizeof(id));
      lease->local = rc == ADMIT_REDIS_LOCAL;
      lease->expires_at_ns = c->extra_ns;
    }
  }
  admit__rreq_unref(&c->req);
  return rc;
}

int admit_redis_semaphore_acquire(admit_redis_semaphore_t* s,
                                  const void* key, size_t keylen,
                                  uint64_t cost, uint64_t timeout_ns,
                                  admit_redis_lease_t* lease,
                                  admit_decision_t* d) {
  if (s == NULL || lease == NULL) return ADMIT_EINVAL;
  admit_decision_t dd;
  uint64_t deadline = admit__deadline(admit_now_ns(), timeout_ns);
  uint64_t poll = 2 * (uint64_t)ADMIT_MILLISECOND;
  uint32_t nrates =
      s->rate != NULL ? admit__redis_limiter_nrates(s->rate) : 0;
  for (;;) {
    int rc = admit_redis_semaphore_try(s, key, keylen, cost, lease, &dd);
    if (d != NULL && rc >= 0) *d = dd;
    if (rc < 0 || dd.allowed) return rc;
    uint64_t now = admit_now_ns();
    uint64_t left = deadline > now ? deadline - now : 0;
    uint64_t wait;
    if (dd.limiting < nrates) {
      /* The rate said when: if that is past the deadline, fail now. */
      wait = dd.retry_after_ns;
      if (wait > left) return ADMIT_ETIMEDOUT;
    } else {
      /* Full: a release can come any time, so poll with growing steps,
       * never past the oldest lease's expiry. */
      if (left == 0) return ADMIT_ETIMEDOUT;
      wait = poll;
      if (dd.retry_after_ns != 0 && dd.retry_after_ns < wait)
        wait = dd.retry_after_ns;
      if (poll < 50 * (uint64_t)ADMIT_MILLISECOND) poll *= 2;
    }
    wait += admit__random_below(wait / 4 + 1);
    admit_sleep_ns(wait < left ? wait : left);
  }
}

static int parse_renew(admit__rcall_t* c, redisReply* reply) {
  if (reply->type == REDIS_REPLY_ERROR)
    return admit__redis_error_status(reply->str, reply->len);
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
      reply->element[0]->type != REDIS_REPLY_INTEGER)
    return ADMIT_EPROTO;
  c->flag = reply->element[0]->integer != 0;
  redisReply* e = reply->element[1];
  if (c->flag && (e->type != REDIS_REPLY_STRING ||
                  admit__parse_u64(e->str, e->len, &c->extra_ns) < 0))
    return ADMIT_EPROTO;
  return 0;
}

int admit_redis_semaphore_renew(admit_redis_semaphore_t* s, const void* key,
                                size_t keylen, admit_redis_lease_t* lease) {
  if (s == NULL || lease == NULL) return ADMIT_EINVAL;
  int rc = check_key(s, key, keylen);
  if (rc < 0) return rc;
  if (lease->local) return 0;
  if (strlen(lease->id) != 32) return ADMIT_EINVAL;
  admit__rcall_t* c = sem_call(s, "renew", key, keylen, lease->id, 0, 0);
  if (c == NULL) return ADMIT_ENOMEM;
  c->parse = parse_renew;
  rc = admit__rcall_run(c, ADMIT_FOREVER);
  if (rc >= 0) {
    if (c->flag)
      lease->expires_at_ns = c->extra_ns;
    else
      rc = ADMIT_ENOTFOUND;
  }
  admit__rreq_unref(&c->req);
  return rc < 0 ? rc : 0;
}

int admit_redis_semaphore_release(admit_redis_semaphore_t* s,
                                  const void* key, size_t keylen,
                                  const admit_redis_lease_t* lease) {
  if (s == NULL || lease == NULL) return ADMIT_EINVAL;
  int rc = check_key(s, key, keylen);
  if (rc < 0) return rc;
  if (lease->local) return 0;
  if (strnlen(lease->id, sizeof(lease->id)) != 32) return ADMIT_EINVAL;
  admit__rcall_t* c = sem_call(s, "release", key, keylen, lease->id, 0, 0);
  if (c == NULL) return ADMIT_ENOMEM;
  rc = admit__rcall_run(c, ADMIT_FOREVER);
  if (rc >= 0 && c->integer == 0) rc = ADMIT_ENOTFOUND;
  admit__rreq_unref(&c->req);
  return rc < 0 ? rc : 0;
}

int admit_redis_semaphore_held(admit_redis_semaphore_t* s, const void* key,
                               size_t keylen, uint64_t* held) {
  if (s == NULL || held == NULL) return ADMIT_EINVAL;
  int rc = check_key(s, key, keylen);
  if (rc < 0) return rc;
  admit__rcall_t* c = sem_call(s, "count", key, keylen, "", 0, 0);
  if (c == NULL) return ADMIT_ENOMEM;
  rc = admit__rcall_run(c, ADMIT_FOREVER);
  if (rc >= 0) *held = c->integer < 0 ? 0 : (uint64_t)c->integer;
  admit__rreq_unref(&c->req);
  return rc < 0 ? rc : 0;
}
