/* The global limiter: one limit.lua call per decision, a failure policy
 * when Redis cannot answer, and a local fallback at this instance's share.
 *
 * Each subject's state is one hash `prefix:{subject}:name` holding every
 * rate's cells (see lib/lua/_lib.lua), so a multi-rate check is one key in
 * one slot, decided all-or-nothing by one script. */
#include "redis-limiter.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "algo.h"

/* Scripts hold exact integers below 2^53; durations and limits stay below
 * 2^52 so that sums of two stay exact. */
#define LUA_MAX (UINT64_C(1) << 52)
#define NAME_MAX_LEN 200

enum op_e {
  OP_TRY = 0,
  OP_PEEK = 1,
  OP_OTHER = 2,
  OP_REFUND = 3,
  OP_PAUSE = 4
};

struct admit_redis_limiter_s {
  admit_redis_t* r;
  admit_quota_t quota;
  admit__algo_t algo;
  char name[NAME_MAX_LEN + 1];
  admit_redis_policy_t policy;
  uint32_t max_key_len;
  uint64_t fallback_max_keys;

  /* The quota as script arguments, formatted once. */
  char qtext[ADMIT__QUOTA_ARGS][24];
  size_t qlens[ADMIT__QUOTA_ARGS];
  int qargc;
  /* 1: limit.lua's fast path serves this quota, so concurrent tries may be
   * merged into one call (op tryn). */
  int mergeable;

  /* The local fallback, rebuilt when the instance count changed between
   * two degraded episodes. */
  pthread_rwlock_t fb_lock;
  admit_keyed_t* fb;
  uint32_t fb_share;
  _Atomic int fb_stale;

  _Atomic uint32_t degraded;
  _Atomic uint64_t n_decisions, n_remote, n_fail_open, n_fallback,
      n_unavailable, n_errors;
  _Atomic uint64_t n_refunds, n_refunds_lost, n_pauses, n_pauses_lost;
};

#define BUMP(l, f) atomic_fetch_add_explicit(&(l)->f, 1, memory_order_relaxed)

/* --- keys ------------------------------------------------------------------*/

size_t admit__redis_key_cap(const admit_redis_t* r, size_t len,
                            const char* name) {
  size_t plen;
  admit__redis_prefix(r, &plen);
  return plen + 2 + 3 * len + 2 + strlen(name) + 1;
}

int admit__redis_key(const admit_redis_t* r, const void* subject, size_t len,
                     const char* name, char* buf, size_t cap) {
  size_t plen;
  const char* prefix = admit__redis_prefix(r, &plen);
  size_t nlen = strlen(name);
  if (admit__redis_key_cap(r, len, name) > cap) return ADMIT_EINVAL;
  char* p = buf;
  memcpy(p, prefix, plen);
  p += plen;
  *p++ = ':';
  *p++ = '{';
  const unsigned char* s = subject;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = s[i];
    if (ch == '%' || ch == '{' || ch == '}') {
      static const char hex[] = "0123456789ABCDEF";
      *p++ = '%';
      *p++ = hex[ch >> 4];
      *p++ = hex[ch & 15];
    } else {
      *p++ = (char)ch;
    }
  }
  *p++ = '}';
  *p++ = ':';
  memcpy(p, name, nlen);
  p += nlen;
  *p = '\0';
  return (int)(p - buf);
}

/* --- construction ----------------------------------------------------------*/

static int valid_name(const char* n) {
  size_t len = strlen(n);
  if (len == 0 || len > NAME_MAX_LEN) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)n[i];
    if (ch == '{' || ch == '}' || ch < 0x21 || ch == 0x7f) return 0;
  }
  return 1;
}

/* "gcra:10/1s;100/1h" ("fw", "sw"; ",bN" for an explicit burst). */
static int derive_name(const admit_quota_t* q, char* out, size_t cap) {
  static const char* const algos[] = {"gcra", "fw", "sw"};
  int n = snprintf(out, cap, "%s:", algos[q->algo]);
  for (uint32_t i = 0; i < q->nrates; i++) {
    char rate[64];
    if (admit_rate_format(&q->rates[i], rate, sizeof(rate)) < 0)
      return ADMIT_EINVAL;
    n += snprintf(out + n, cap > (size_t)n ? cap - (size_t)n : 0, "%s%s",
                  i ? ";" : "", rate);
    if (q->algo == ADMIT_TOKEN_BUCKET && q->burst[i] != 0)
      n += snprintf(out + n, cap > (size_t)n ? cap - (size_t)n : 0,
                    ",b%llu", (unsigned long long)q->burst[i]);
    if ((size_t)n >= cap) return ADMIT_EINVAL;
  }
  return 0;
}

int admit_redis_limiter_new(admit_redis_limiter_t** out, admit_redis_t* r,
                            const admit_redis_limiter_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  if (r == NULL || opts == NULL || opts->quota == NULL) return ADMIT_EINVAL;
  if ((unsigned)opts->on_failure > (unsigned)ADMIT_REDIS_FALLBACK)
    return ADMIT_EINVAL;
  admit__algo_t algo;
  if (admit__algo_init(&algo, opts->quota) < 0) return ADMIT_EINVAL;
  for (uint32_t i = 0; i < algo.nrates; i++) {
    const admit__rate_params_t* p = &algo.r[i];
    if (p->period_ns >= LUA_MAX || p->limit >= LUA_MAX ||
        p->tolerance_ns >= LUA_MAX)
      return ADMIT_EINVAL;
  }
  admit_redis_limiter_t* l = admit__calloc(1, sizeof(*l));
  if (l == NULL) return ADMIT_ENOMEM;
  l->r = r;
  l->quota = *opts->quota;
  l->algo = algo;
  l->policy = opts->on_failure;
  l->max_key_len = opts->max_key_len ? opts->max_key_len : 512;
  l->fallback_max_keys =
      opts->fallback_max_keys ? opts->fallback_max_keys : 65536;
  if (opts->name != NULL) {
    if (strlen(opts->name) > 64 || !valid_name(opts->name)) {
      admit__free(l);
      return ADMIT_EINVAL;
    }
    strcpy(l->name, opts->name);
  } else if (derive_name(opts->quota, l->name, sizeof(l->name)) < 0) {
    admit__free(l);
    return ADMIT_EINVAL;
  }
  /* The quota as arguments: algo, nrates, then limit, period, interval and
   * tolerance per rate, exactly as admit__algo_init computed them. */
  int k = 0;
  snprintf(l->qtext[k++], 24, "%d", (int)algo.algo);
  snprintf(l->qtext[k++], 24, "%u", algo.nrates);
  for (uint32_t i = 0; i < algo.nrates; i++) {
    const admit__rate_params_t* p = &algo.r[i];
    snprintf(l->qtext[k++], 24, "%llu", (unsigned long long)p->limit);
    snprintf(l->qtext[k++], 24, "%llu", (unsigned long long)p->period_ns);
    snprintf(l->qtext[k++], 24, "%llu", (unsigned long long)p->interval_ns);
    snprintf(l->qtext[k++], 24, "%llu", (unsigned long long)p->tolerance_ns);
  }
  l->qargc = k;
  for (int i = 0; i < k; i++) l->qlens[i] = strlen(l->qtext[i]);
  /* The same test as limit.lua's fast path. */
  uint64_t p0 = algo.r[0].period_ns;
  l->mergeable = algo.nrates == 1 &&
                 (algo.algo == ADMIT_TOKEN_BUCKET ||
                  (algo.algo == ADMIT_FIXED_WINDOW &&
                   (p0 % ADMIT_SECOND == 0 || ADMIT_SECOND % p0 == 0)));
  pthread_rwlock_init(&l->fb_lock, NULL);
  *out = l;
  return 0;
}

void admit_redis_limiter_free(admit_redis_limiter_t* l) {
  if (l == NULL) return;
  admit_keyed_free(l->fb);
  pthread_rwlock_destroy(&l->fb_lock);
  admit__free(l);
}

admit_redis_t* admit__redis_limiter_conn(const admit_redis_limiter_t* l) {
  return l->r;
}

const char* admit__redis_limiter_name(const admit_redis_limiter_t* l) {
  return l->name;
}

int admit__redis_limiter_quota_args(const admit_redis_limiter_t* l,
                                    const char** argv, size_t* lens) {
  for (int i = 0; i < l->qargc; i++) {
    argv[i] = l->qtext[i];
    lens[i] = l->qlens[i];
  }
  return l->qargc;
}

uint32_t admit__redis_limiter_nrates(const admit_redis_limiter_t* l) {
  return l->algo.nrates;
}

int admit__redis_limiter_check_cost(const admit_redis_limiter_t* l,
                                    uint64_t cost) {
  if (cost == 0) return ADMIT_EINVAL;
  for (uint32_t i = 0; i < l->algo.nrates; i++)
    if (cost > l->algo.r[i].limit) return ADMIT_EINVAL;
  return 0;
}

/* --- the local fallback ----------------------------------------------------*/

/* This instance's share of @p q when @p n instances are live: never more
 * than q / n, so n fallbacks together never exceed the global quota. */
static void share_quota(const admit_quota_t* q, uint32_t n,
                        admit_quota_t* out) {
  *out = *q;
  if (n <= 1) return;
  for (uint32_t i = 0; i < q->nrates; i++) {
    admit_rate_t* rt = &out->rates[i];
    if (q->algo == ADMIT_TOKEN_BUCKET) {
      /* Stretch the period: exactly count / (n * period). */
      uint64_t period;
      if (!__builtin_mul_overflow(rt->period_ns, (uint64_t)n, &period)) {
        rt->period_ns = period;
      } else {
        rt->count = rt->count / n ? rt->count / n : 1;
      }
      uint64_t burst = q->burst[i] ? q->burst[i] : q->rates[i].count;
      out->burst[i] = burst / n ? burst / n : 1;
    } else if (rt->count >= n) {
      rt->count /= n;
    } else {
      /* Fewer units than instances: one unit per stretched window. */
      uint64_t k = (n + rt->count - 1) / rt->count;
      rt->period_ns = admit__sat_mul(rt->period_ns, k);
      rt->count = 1;
    }
  }
}

/* Runs @p op on the fallback (held for reading), rebuilding it first if
 * needed. Returns 0 or a negative code. */
static int fallback(admit_redis_limiter_t* l, int op, const void* key,
                    size_t keylen, uint64_t cost, admit_decision_t* d) {
  uint32_t n = admit__redis_instances(l->r);
  pthread_rwlock_rdlock(&l->fb_lock);
  if (l->fb == NULL || (atomic_load(&l->fb_stale) && l->fb_share != n)) {
    pthread_rwlock_unlock(&l->fb_lock);
    pthread_rwlock_wrlock(&l->fb_lock);
    if (l->fb == NULL || (atomic_load(&l->fb_stale) && l->fb_share != n)) {
      admit_quota_t q;
      share_quota(&l->quota, n, &q);
      admit_keyed_options_t ko;
      memset(&ko, 0, sizeof(ko));
      ko.quotas = &q;
      ko.nquotas = 1;
      ko.max_keys = l->fallback_max_keys;
      ko.max_key_len = l->max_key_len;
      admit_keyed_t* k = NULL;
      int rc = admit_keyed_new(&k, &ko);
      if (rc < 0) {
        pthread_rwlock_unlock(&l->fb_lock);
        return rc;
      }
      admit_keyed_free(l->fb);
      l->fb = k;
      l->fb_share = n;
    }
    atomic_store(&l->fb_stale, 0);
    pthread_rwlock_unlock(&l->fb_lock);
    pthread_rwlock_rdlock(&l->fb_lock);
  }
  int rc = op == OP_PEEK ? admit_keyed_peek(l->fb, 0, key, keylen, d)
                         : admit_keyed_try(l->fb, 0, key, keylen, cost, d);
  pthread_rwlock_unlock(&l->fb_lock);
  return rc < 0 ? rc : 0;
}

/* --- the failure policy ----------------------------------------------------*/

/* Applies the policy to a decision call (try or peek) that ended with
 * @p status; fills c->d for local decisions. */
static int decision_finish(admit__rcall_t* c, int status) {
  admit_redis_limiter_t* l = c->owner;
  BUMP(l, n_decisions);
  if (status >= 0) {
    BUMP(l, n_remote);
    if (atomic_load_explicit(&l->degraded, memory_order_relaxed))
      atomic_store(&l->degraded, 0);
    if (!atomic_load_explicit(&l->fb_stale, memory_order_relaxed))
      atomic_store(&l->fb_stale, 1);
    return ADMIT_REDIS_OK;
  }
  if (status != ADMIT_EUNAVAILABLE) {
    BUMP(l, n_errors);
    return status;
  }
  switch (l->policy) {
    case ADMIT_REDIS_FAIL_OPEN:
      BUMP(l, n_fail_open);
      atomic_store(&l->degraded, 1);
      memset(&c->d, 0, sizeof(c->d));
      c->d.allowed = 1;
      c->d.limit = l->algo.r[0].limit;
      c->d.remaining = l->algo.r[0].limit - (c->aux == OP_PEEK ? 0 : c->cost);
      c->now_ns = 0;
      return ADMIT_REDIS_LOCAL;
    case ADMIT_REDIS_FALLBACK: {
      int rc = fallback(l, (int)c->aux, c->key, c->keylen, c->cost, &c->d);
      if (rc < 0) {
        BUMP(l, n_errors);
        return rc;
      }
      BUMP(l, n_fallback);
      atomic_store(&l->degraded, 1);
      c->now_ns = 0;
      return ADMIT_REDIS_LOCAL;
    }
    default:
      BUMP(l, n_unavailable);
      atomic_store(&l->degraded, 1);
      return ADMIT_EUNAVAILABLE;
  }
}

/* --- calls -----------------------------------------------------------------*/

static int check_key(const admit_redis_limiter_t* l, const void* key,
                     size_t keylen) {
  if (key == NULL || keylen == 0 || keylen > l->max_key_len)
    return ADMIT_EINVAL;
  return 0;
}

/* Builds a limit.lua call: EVALSHA sha 1 key op now quota... args... */
static admit__rcall_t* make_call(admit_redis_limiter_t* l, const char* op,
                                 const void* key, size_t keylen,
                                 uint64_t now_ns, const char* const* extra,
                                 int nextra) {
  size_t cap = admit__redis_key_cap(l->r, keylen, l->name);
  char stackbuf[2048];
  char* kbuf = cap <= sizeof(stackbuf) ? stackbuf : admit__malloc(cap);
  if (kbuf == NULL) return NULL;
  int klen = admit__redis_key(l->r, key, keylen, l->name, kbuf, cap);
  const char* argv[6 + ADMIT__QUOTA_ARGS + 4];
  size_t lens[6 + ADMIT__QUOTA_ARGS + 4];
  char nowbuf[24] = "";
  if (now_ns != 0) snprintf(nowbuf, sizeof(nowbuf), "%llu",
                            (unsigned long long)now_ns);
  int n = 0;
  argv[n] = "EVALSHA";
  lens[n++] = 7;
  argv[n] = admit__redis_sha(l->r, ADMIT__SCRIPT_LIMIT);
  lens[n++] = 40;
  argv[n] = "1";
  lens[n++] = 1;
  argv[n] = kbuf;
  lens[n++] = (size_t)klen;
  argv[n] = op;
  lens[n++] = strlen(op);
  argv[n] = nowbuf;
  lens[n++] = strlen(nowbuf);
  n += admit__redis_limiter_quota_args(l, argv + n, lens + n);
  for (int i = 0; i < nextra && i < 4; i++) {
    argv[n] = extra[i];
    lens[n++] = strlen(extra[i]);
  }
  admit__rcall_t* c = admit__rcall_new(l->r, n, argv, lens, key, keylen);
  if (kbuf != stackbuf) admit__free(kbuf);
  if (c == NULL) return NULL;
  c->req.script = ADMIT__SCRIPT_LIMIT;
  c->owner = l;
  c->parse = admit__rcall_parse_decision;
  return c;
}

/* Merges tries on one limiter queued together into one tryn call: one
 * script run (and one server time) for all, each still its own decision.
 * On the I/O thread. */
static admit__rreq_t* merge_tries(admit__rreq_t* const* m, int n) {
  admit_redis_limiter_t* l = ((admit__rcall_t*)m[0])->owner;
  const char* argv[3 + 2 * ADMIT__RBATCH_MAX + 2 + ADMIT__QUOTA_ARGS];
  size_t lens[3 + 2 * ADMIT__RBATCH_MAX + 2 + ADMIT__QUOTA_ARGS];
  size_t cap = 0;
  for (int i = 0; i < n; i++) {
    const admit__rcall_t* c = (const admit__rcall_t*)m[i];
    cap += admit__redis_key_cap(l->r, c->keylen, l->name) + 24;
  }
  char* buf = admit__malloc(cap);
  if (buf == NULL) return NULL;
  char* p = buf;
  char nkeys[24];
  int k = 0;
  argv[k] = "EVALSHA";
  lens[k++] = 7;
  argv[k] = admit__redis_sha(l->r, ADMIT__SCRIPT_LIMIT);
  lens[k++] = 40;
  argv[k] = nkeys;
  lens[k++] = (size_t)admit__u64_dec(nkeys, (uint64_t)n);
  for (int i = 0; i < n; i++) {
    const admit__rcall_t* c = (const admit__rcall_t*)m[i];
    int len = admit__redis_key(l->r, c->key, c->keylen, l->name, p,
                               cap - (size_t)(p - buf));
    if (len < 0) {
      admit__free(buf);
      return NULL;
    }
    argv[k] = p;
    lens[k++] = (size_t)len;
    p += len + 1;
  }
  argv[k] = "tryn";
  lens[k++] = 4;
  argv[k] = "";
  lens[k++] = 0;
  k += admit__redis_limiter_quota_args(l, argv + k, lens + k);
  for (int i = 0; i < n; i++) {
    argv[k] = p;
    lens[k++] = (size_t)admit__u64_dec(p, ((const admit__rcall_t*)m[i])->cost);
    p += lens[k - 1] + 1;
  }
  admit__rreq_t* q = admit__rbatch_new(l->r, m, n, k, argv, lens);
  admit__free(buf);
  return q;
}

static admit__rcall_t* decision_call(admit_redis_limiter_t* l, int op,
                                     const void* key, size_t keylen,
                                     uint64_t cost) {
  char costbuf[24];
  admit__u64_dec(costbuf, cost);
  const char* extra[1] = {costbuf};
  admit__rcall_t* c =
      op == OP_PEEK ? make_call(l, "peek", key, keylen, 0, NULL, 0)
                    : make_call(l, "try", key, keylen, 0, extra, 1);
  if (c == NULL) return NULL;
  c->finish = decision_finish;
  c->use_breaker = 1;
  c->cost = cost;
  c->aux = (uint64_t)op;
  if (op == OP_TRY && l->mergeable) {
    c->req.batch_tag = l;
    c->req.merge = merge_tries;
  }
  return c;
}

/* One blocking decision within @p timeout_ns. Fills @p out and, if not
 * NULL, @p now (server time, 0 for a local decision). */
static int decide_once(admit_redis_limiter_t* l, int op, const void* key,
                       size_t keylen, uint64_t cost, uint64_t timeout_ns,
                       admit_decision_t* out, uint64_t* now) {
  admit__rcall_t* c = decision_call(l, op, key, keylen, cost);
  if (c == NULL) return ADMIT_ENOMEM;
  int rc = admit__rcall_run(c, timeout_ns);
  if (rc >= 0) {
    *out = c->d;
    if (now != NULL) *now = c->now_ns;
  }
  admit__rreq_unref(&c->req);
  return rc;
}

int admit_redis_limiter_try(admit_redis_limiter_t* l, const void* key,
                            size_t keylen, uint64_t cost,
                            admit_decision_t* out) {
  if (l == NULL || out == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0 || (rc = admit__redis_limiter_check_cost(l, cost)) < 0)
    return rc;
  return decide_once(l, OP_TRY, key, keylen, cost, ADMIT_FOREVER, out, NULL);
}

int admit_redis_limiter_peek(admit_redis_limiter_t* l, const void* key,
                             size_t keylen, admit_decision_t* out) {
  if (l == NULL || out == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  return decide_once(l, OP_PEEK, key, keylen, 0, ADMIT_FOREVER, out, NULL);
}

int admit_redis_limiter_try_cb(admit_redis_limiter_t* l, const void* key,
                               size_t keylen, uint64_t cost,
                               admit_redis_decision_cb cb, void* ud) {
  if (l == NULL || cb == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0 || (rc = admit__redis_limiter_check_cost(l, cost)) < 0)
    return rc;
  admit__rcall_t* c = decision_call(l, OP_TRY, key, keylen, cost);
  if (c == NULL) return ADMIT_ENOMEM;
  return admit__rcall_start(c, ADMIT__RCALL_CB, NULL, cb, ud);
}

int admit_redis_limiter_try_uv(admit_redis_limiter_t* l,
                               admit_redis_loop_t* lp, const void* key,
                               size_t keylen, uint64_t cost,
                               admit_redis_decision_cb cb, void* ud) {
  if (l == NULL || lp == NULL || cb == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0 || (rc = admit__redis_limiter_check_cost(l, cost)) < 0)
    return rc;
  admit__rcall_t* c = decision_call(l, OP_TRY, key, keylen, cost);
  if (c == NULL) return ADMIT_ENOMEM;
  return admit__rcall_start(c, ADMIT__RCALL_UV, lp, cb, ud);
}

int admit__redis_limiter_op_at(admit_redis_limiter_t* l, const char* op,
                               const void* key, size_t keylen,
                               uint64_t now_ns, const uint64_t* args,
                               int nargs, admit_decision_t* d,
                               uint64_t* server_now, uint64_t* extra) {
  if (l == NULL || op == NULL || nargs < 0 || nargs > 3) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  char buf[4][24];
  const char* ex[4];
  int n = 0;
  if (strcmp(op, "pause") == 0) {
    /* pause takes a mode word first. */
    ex[n++] = "rel";
  }
  for (int i = 0; i < nargs; i++) {
    snprintf(buf[i], sizeof(buf[i]), "%llu", (unsigned long long)args[i]);
    ex[n++] = buf[i];
  }
  admit__rcall_t* c = make_call(l, op, key, keylen, now_ns, ex, n);
  if (c == NULL) return ADMIT_ENOMEM;
  rc = admit__rcall_run(c, ADMIT_FOREVER);
  if (rc >= 0) {
    if (d != NULL) *d = c->d;
    if (server_now != NULL) *server_now = c->now_ns;
    if (extra != NULL) *extra = c->extra_ns;
  }
  admit__rreq_unref(&c->req);
  return rc;
}

/* Counts a refund or pause that ended with @p status (counted = 1: it
 * was queued; 0: it never started). */
static void count_plain(admit_redis_limiter_t* l, int op, int status) {
  if (op == OP_REFUND) {
    if (status >= 0)
      BUMP(l, n_refunds);
    else
      BUMP(l, n_refunds_lost);
  } else if (op == OP_PAUSE) {
    if (status >= 0)
      BUMP(l, n_pauses);
    else
      BUMP(l, n_pauses_lost);
  }
}

/* Finishes a refund or pause where it is delivered: counts it. */
static int plain_finish(admit__rcall_t* c, int status) {
  count_plain(c->owner, (int)c->aux, status);
  return status < 0 ? status : 0;
}

/* Builds a plain operation (no failure policy): op is OP_REFUND, OP_PAUSE
 * or OP_OTHER (not counted). */
static admit__rcall_t* plain_call(admit_redis_limiter_t* l, int kind,
                                  const char* op, const void* key,
                                  size_t keylen, const char* const* ex,
                                  int n) {
  admit__rcall_t* c = make_call(l, op, key, keylen, 0, ex, n);
  if (c == NULL) return NULL;
  c->finish = plain_finish;
  c->aux = (uint64_t)kind;
  return c;
}

/* A plain operation (no failure policy) with string arguments. */
static int plain_op(admit_redis_limiter_t* l, int kind, const char* op,
                    const void* key, size_t keylen, const char* const* ex,
                    int n, admit_decision_t* d, uint64_t* extra,
                    uint64_t* now) {
  admit__rcall_t* c = plain_call(l, kind, op, key, keylen, ex, n);
  if (c == NULL) {
    count_plain(l, kind, ADMIT_ENOMEM);
    return ADMIT_ENOMEM;
  }
  int rc = admit__rcall_run(c, ADMIT_FOREVER);
  if (rc >= 0) {
    if (d != NULL) *d = c->d;
    if (extra != NULL) *extra = c->extra_ns;
    if (now != NULL) *now = c->now_ns;
  }
  admit__rreq_unref(&c->req);
  return rc < 0 ? rc : 0;
}

static uint64_t lua_clamp(uint64_t v) { return v < LUA_MAX ? v : LUA_MAX; }

int admit_redis_limiter_refund(admit_redis_limiter_t* l, const void* key,
                               size_t keylen, uint64_t cost) {
  if (l == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  if (cost == 0) return 0;
  char costbuf[24];
  snprintf(costbuf, sizeof(costbuf), "%llu",
           (unsigned long long)lua_clamp(cost));
  const char* ex[2] = {costbuf, ""};
  return plain_op(l, OP_REFUND, "refund", key, keylen, ex, 2, NULL, NULL,
                  NULL);
}

/* Starts a refund or pause with string arguments @p ex; the callback runs
 * on the I/O thread (@p lp NULL) or on @p lp's loop. */
static int plain_start(admit_redis_limiter_t* l, admit_redis_loop_t* lp,
                       int kind, const char* op, const void* key,
                       size_t keylen, const char* const* ex,
                       admit_redis_done_cb cb, void* ud) {
  admit__rcall_t* c = plain_call(l, kind, op, key, keylen, ex, 2);
  if (c == NULL) {
    count_plain(l, kind, ADMIT_ENOMEM);
    return ADMIT_ENOMEM;
  }
  c->done_cb = cb;
  int rc = admit__rcall_start(c, lp != NULL ? ADMIT__RCALL_UV : ADMIT__RCALL_CB,
                              lp, NULL, ud);
  if (rc < 0) count_plain(l, kind, rc);
  return rc;
}

static int refund_start(admit_redis_limiter_t* l, admit_redis_loop_t* lp,
                        const void* key, size_t keylen, uint64_t cost,
                        admit_redis_done_cb cb, void* ud) {
  if (l == NULL || cb == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  char costbuf[24];
  snprintf(costbuf, sizeof(costbuf), "%llu",
           (unsigned long long)lua_clamp(cost));
  const char* ex[2] = {costbuf, ""};
  return plain_start(l, lp, OP_REFUND, "refund", key, keylen, ex, cb, ud);
}

int admit_redis_limiter_refund_cb(admit_redis_limiter_t* l, const void* key,
                                  size_t keylen, uint64_t cost,
                                  admit_redis_done_cb cb, void* ud) {
  return refund_start(l, NULL, key, keylen, cost, cb, ud);
}

int admit_redis_limiter_refund_uv(admit_redis_limiter_t* l,
                                  admit_redis_loop_t* lp, const void* key,
                                  size_t keylen, uint64_t cost,
                                  admit_redis_done_cb cb, void* ud) {
  if (lp == NULL) return ADMIT_EINVAL;
  return refund_start(l, lp, key, keylen, cost, cb, ud);
}

static int pause_start(admit_redis_limiter_t* l, admit_redis_loop_t* lp,
                       const void* key, size_t keylen, uint64_t duration_ns,
                       admit_redis_done_cb cb, void* ud) {
  if (l == NULL || cb == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  char buf[24];
  snprintf(buf, sizeof(buf), "%llu",
           (unsigned long long)lua_clamp(duration_ns));
  const char* ex[2] = {"rel", buf};
  return plain_start(l, lp, OP_PAUSE, "pause", key, keylen, ex, cb, ud);
}

int admit_redis_limiter_pause_cb(admit_redis_limiter_t* l, const void* key,
                                 size_t keylen, uint64_t duration_ns,
                                 admit_redis_done_cb cb, void* ud) {
  return pause_start(l, NULL, key, keylen, duration_ns, cb, ud);
}

int admit_redis_limiter_pause_uv(admit_redis_limiter_t* l,
                                 admit_redis_loop_t* lp, const void* key,
                                 size_t keylen, uint64_t duration_ns,
                                 admit_redis_done_cb cb, void* ud) {
  if (lp == NULL) return ADMIT_EINVAL;
  return pause_start(l, lp, key, keylen, duration_ns, cb, ud);
}

int admit__redis_limiter_refund_local(admit_redis_limiter_t* l,
                                      const void* key, size_t keylen,
                                      uint64_t cost) {
  if (l == NULL || check_key(l, key, keylen) < 0) return ADMIT_EINVAL;
  if (l->policy != ADMIT_REDIS_FALLBACK || cost == 0) return 0;
  pthread_rwlock_rdlock(&l->fb_lock);
  int rc = l->fb != NULL ? admit_keyed_refund(l->fb, 0, key, keylen, cost)
                         : 0;
  pthread_rwlock_unlock(&l->fb_lock);
  /* A subject the fallback no longer holds has nothing to give back. */
  return rc < 0 && rc != ADMIT_ENOTFOUND ? rc : 0;
}

int admit_redis_limiter_reset(admit_redis_limiter_t* l, const void* key,
                              size_t keylen) {
  if (l == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  size_t cap = admit__redis_key_cap(l->r, keylen, l->name);
  char* kbuf = admit__malloc(cap);
  if (kbuf == NULL) return ADMIT_ENOMEM;
  int klen = admit__redis_key(l->r, key, keylen, l->name, kbuf, cap);
  const char* argv[2] = {"DEL", kbuf};
  size_t lens[2] = {3, (size_t)klen};
  rc = admit__rcall_simple(l->r, 2, argv, lens, -1, ADMIT_FOREVER, NULL);
  admit__free(kbuf);
  return rc < 0 ? rc : 0;
}

int admit_redis_limiter_pause(admit_redis_limiter_t* l, const void* key,
                              size_t keylen, uint64_t duration_ns,
                              uint64_t* until_ns) {
  if (l == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  char buf[24];
  snprintf(buf, sizeof(buf), "%llu",
           (unsigned long long)lua_clamp(duration_ns));
  const char* ex[2] = {"rel", buf};
  uint64_t until = 0;
  rc = plain_op(l, OP_PAUSE, "pause", key, keylen, ex, 2, NULL, &until,
                NULL);
  if (rc >= 0 && until_ns != NULL) *until_ns = until;
  return rc;
}

int admit_redis_limiter_pause_until(admit_redis_limiter_t* l,
                                    const void* key, size_t keylen,
                                    uint64_t unix_ns) {
  if (l == NULL || unix_ns == 0) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  char buf[24];
  snprintf(buf, sizeof(buf), "%llu", (unsigned long long)unix_ns);
  const char* ex[2] = {"abs", buf};
  return plain_op(l, OP_PAUSE, "pause", key, keylen, ex, 2, NULL, NULL,
                  NULL);
}

int admit_redis_limiter_acquire(admit_redis_limiter_t* l, const void* key,
                                size_t keylen, uint64_t cost,
                                uint64_t timeout_ns, admit_decision_t* out) {
  if (l == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0 || (rc = admit__redis_limiter_check_cost(l, cost)) < 0)
    return rc;
  admit_decision_t d;
  uint64_t deadline = admit__deadline(admit_now_ns(), timeout_ns);
  for (;;) {
    /* Each try is one round trip, bounded by the command timeout like any
     * call; the timeout bounds the waiting between tries. */
    rc = decide_once(l, OP_TRY, key, keylen, cost, ADMIT_FOREVER, &d, NULL);
    if (out != NULL && rc >= 0) *out = d;
    if (rc < 0 || d.allowed) return rc;
    /* Denied: sleep the reported retry_after plus a little jitter, if the
     * retry fits in what is left; else fail now, not at the deadline. */
    uint64_t now = admit_now_ns();
    uint64_t left = deadline > now ? deadline - now : 0;
    uint64_t wait = d.retry_after_ns;
    if (wait > left) return ADMIT_ETIMEDOUT;
    uint64_t jitter_cap = wait / 8 + ADMIT_MILLISECOND;
    if (jitter_cap > 50 * (uint64_t)ADMIT_MILLISECOND)
      jitter_cap = 50 * (uint64_t)ADMIT_MILLISECOND;
    wait = admit__sat_add(wait, admit__random_below(jitter_cap));
    admit_sleep_ns(wait < left ? wait : left);
  }
}

int admit_redis_limiter_reserve(admit_redis_limiter_t* l, const void* key,
                                size_t keylen, uint64_t cost,
                                admit_redis_reservation_t* r,
                                admit_decision_t* d) {
  if (l == NULL || r == NULL) return ADMIT_EINVAL;
  memset(r, 0, sizeof(*r));
  int rc = check_key(l, key, keylen);
  if (rc < 0 || (rc = admit__redis_limiter_check_cost(l, cost)) < 0)
    return rc;
  admit_decision_t dd;
  uint64_t now = 0;
  rc = decide_once(l, OP_TRY, key, keylen, cost, ADMIT_FOREVER, &dd, &now);
  if (rc < 0) return rc;
  r->reserved = dd.allowed;
  r->local = rc == ADMIT_REDIS_LOCAL;
  r->cost = cost;
  r->taken_at_ns = now;
  if (d != NULL) *d = dd;
  return rc;
}

int admit_redis_limiter_settle(admit_redis_limiter_t* l, const void* key,
                               size_t keylen,
                               const admit_redis_reservation_t* r,
                               uint64_t actual, admit_decision_t* d) {
  if (l == NULL || r == NULL) return ADMIT_EINVAL;
  int rc = check_key(l, key, keylen);
  if (rc < 0) return rc;
  if (d != NULL) memset(d, 0, sizeof(*d));
  if (!r->reserved || r->local) return 0;
  char b[3][24];
  snprintf(b[0], 24, "%llu", (unsigned long long)lua_clamp(r->cost));
  snprintf(b[1], 24, "%llu", (unsigned long long)lua_clamp(actual));
  snprintf(b[2], 24, "%llu", (unsigned long long)r->taken_at_ns);
  const char* ex[3] = {b[0], b[1], b[2]};
  return plain_op(l, OP_OTHER, "settle", key, keylen, ex, 3, d, NULL, NULL);
}

int admit_redis_limiter_stats(admit_redis_limiter_t* l,
                              admit_redis_limiter_stats_t* out) {
  if (l == NULL || out == NULL) return ADMIT_EINVAL;
  memset(out, 0, sizeof(*out));
  out->degraded = atomic_load(&l->degraded);
  out->instances = admit__redis_instances(l->r);
  out->decisions = atomic_load(&l->n_decisions);
  out->remote = atomic_load(&l->n_remote);
  out->fail_open = atomic_load(&l->n_fail_open);
  out->fallback = atomic_load(&l->n_fallback);
  out->unavailable = atomic_load(&l->n_unavailable);
  out->errors = atomic_load(&l->n_errors);
  out->refunds = atomic_load(&l->n_refunds);
  out->refunds_lost = atomic_load(&l->n_refunds_lost);
  out->pauses = atomic_load(&l->n_pauses);
  out->pauses_lost = atomic_load(&l->n_pauses_lost);
  return 0;
}
