/* Calls on the Redis connection: blocking, callback and libuv delivery. */
#include "redis-call.h"

#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <uv.h>

/* A blocked caller waits this much past its deadline before giving up on
 * the I/O thread (which enforces deadlines itself, to the millisecond). */
#define GRACE_NS (50 * (uint64_t)ADMIT_MILLISECOND)

struct admit_redis_loop_s {
  uv_async_t async;
  pthread_mutex_t mu;
  admit__rcall_t* head; /* delivered by the I/O thread, not yet run */
  admit__rcall_t* tail;
  uint64_t pending; /* loop thread: started, callback not yet run */
  int closing;
};

int admit__parse_u64(const char* s, size_t len, uint64_t* out) {
  if (len == 0 || len > 20) return ADMIT_EPROTO;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return ADMIT_EPROTO;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return ADMIT_EPROTO;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static int parse_error(redisReply* reply) {
  return admit__redis_error_status(reply->str, reply->len);
}

static int get_u64(redisReply* e, uint64_t* out) {
  if (e->type == REDIS_REPLY_INTEGER) {
    if (e->integer < 0) return ADMIT_EPROTO;
    *out = (uint64_t)e->integer;
    return 0;
  }
  if (e->type == REDIS_REPLY_STRING)
    return admit__parse_u64(e->str, e->len, out);
  return ADMIT_EPROTO;
}

int admit__rcall_parse_decision(admit__rcall_t* c, redisReply* reply) {
  if (reply->type == REDIS_REPLY_ERROR) return parse_error(reply);
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 8)
    return ADMIT_EPROTO;
  uint64_t v[8];
  for (int i = 0; i < 8; i++)
    if (get_u64(reply->element[i], &v[i]) < 0) return ADMIT_EPROTO;
  /* The server time comes as seconds and nanoseconds. */
  if (v[7] >= 1000000000u || v[6] > (UINT64_MAX - v[7]) / 1000000000u)
    return ADMIT_EPROTO;
  c->d.allowed = v[0] != 0;
  c->d.limiting = (uint32_t)v[1];
  c->d.limit = v[2];
  c->d.remaining = v[3];
  c->d.retry_after_ns = v[4];
  c->d.reset_after_ns = v[5];
  c->now_ns = v[6] * 1000000000u + v[7];
  c->extra_ns = 0;
  if (reply->elements >= 9) {
    redisReply* e = reply->element[8];
    if (e->type == REDIS_REPLY_STRING && e->len > 0 &&
        admit__parse_u64(e->str, e->len, &c->extra_ns) < 0)
      return ADMIT_EPROTO;
  }
  if (reply->elements >= 10 && get_u64(reply->element[9], &c->held) < 0)
    return ADMIT_EPROTO;
  return 0;
}

static int parse_any(admit__rcall_t* c, redisReply* reply) {
  if (reply->type == REDIS_REPLY_ERROR) return parse_error(reply);
  if (reply->type == REDIS_REPLY_INTEGER) c->integer = reply->integer;
  return 0;
}

static void call_dtor(admit__rreq_t* q) {
  admit__rcall_t* c = (admit__rcall_t*)q;
  if (c->mode == ADMIT__RCALL_BLOCK) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
  }
}

static void deliver_uv(admit__rcall_t* c) {
  admit_redis_loop_t* lp = c->loop;
  admit__rreq_ref(&c->req);
  /* Sending under the lock: the loop cannot run (and maybe close the
   * handle) between the push and the send. */
  pthread_mutex_lock(&lp->mu);
  c->loop_next = NULL;
  if (lp->tail != NULL)
    lp->tail->loop_next = c;
  else
    lp->head = c;
  lp->tail = c;
  uv_async_send(&lp->async);
  pthread_mutex_unlock(&lp->mu);
}

/* Runs the caller's callback with final status @p st. */
static void deliver(admit__rcall_t* c, int st) {
  if (c->done_cb != NULL)
    c->done_cb(c->ud, st, st >= 0 ? c->extra_ns : 0);
  else
    c->cb(c->ud, st, st >= 0 ? &c->d : NULL);
}

static int parse_reply(admit__rcall_t* c, int status, redisReply* reply) {
  if (status < 0) return status;
  if (reply->type == REDIS_REPLY_ERROR && c->parse == NULL)
    return parse_error(reply);
  return c->parse != NULL ? c->parse(c, reply) : parse_any(c, reply);
}

/* On the I/O thread, once per call. */
static void call_done(admit__rreq_t* q, int status, redisReply* reply) {
  admit__rcall_t* c = (admit__rcall_t*)q;
  if (c->use_breaker && !q->skip && status != ADMIT_ECLOSED)
    admit__redis_breaker_record(c->r, status != ADMIT_EUNAVAILABLE, c->probe);
  switch (c->mode) {
    case ADMIT__RCALL_BLOCK:
      pthread_mutex_lock(&c->mu);
      if (!c->abandoned) {
        c->status = parse_reply(c, status, reply);
        c->finished = 1;
        pthread_cond_signal(&c->cv);
      }
      pthread_mutex_unlock(&c->mu);
      break;
    case ADMIT__RCALL_CB: {
      int st = parse_reply(c, status, reply);
      if (c->finish != NULL) st = c->finish(c, st);
      deliver(c, st);
      break;
    }
    default:
      c->status = parse_reply(c, status, reply);
      deliver_uv(c);
      break;
  }
}

admit__rcall_t* admit__rcall_new(admit_redis_t* r, int argc,
                                 const char* const* argv, const size_t* lens,
                                 const void* key, size_t keylen) {
  admit__rreq_t* q =
      admit__rreq_new(sizeof(admit__rcall_t) + keylen + 1, argc, argv, lens);
  if (q == NULL) return NULL;
  admit__rcall_t* c = (admit__rcall_t*)q;
  c->r = r;
  q->done = call_done;
  q->dtor = call_dtor;
  char* k = (char*)(c + 1);
  if (key != NULL && keylen > 0) memcpy(k, key, keylen);
  k[keylen] = '\0';
  c->key = k;
  c->keylen = keylen;
  return c;
}

static uint64_t clamp_timeout(admit__rcall_t* c, uint64_t timeout_ns) {
  uint64_t t = admit__redis_command_timeout(c->r);
  return timeout_ns < t ? timeout_ns : t;
}

int admit__rcall_run(admit__rcall_t* c, uint64_t timeout_ns) {
  c->mode = ADMIT__RCALL_BLOCK;
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &ca);
  pthread_condattr_destroy(&ca);
  uint64_t now = admit_now_ns();
  c->req.deadline_ns = now + clamp_timeout(c, timeout_ns);
  int status;
  redisReply* direct = NULL;
  if (c->use_breaker && !admit__redis_breaker_allow(c->r, &c->probe)) {
    /* Skipping Redis costs microseconds, not a connect timeout. */
    admit__redis_count_failure(c->r);
    status = ADMIT_EUNAVAILABLE;
  } else if (admit__redis_direct(c->r, &c->req, &direct, &status)) {
    /* Ran in this thread on the spare connection. */
    if (c->use_breaker)
      admit__redis_breaker_record(c->r, status != ADMIT_EUNAVAILABLE,
                                  c->probe);
    status = parse_reply(c, status, direct);
    if (direct != NULL) freeReplyObject(direct);
  } else if ((status = admit__redis_submit(c->r, &c->req, 0)) == 0) {
    uint64_t until = c->req.deadline_ns + GRACE_NS;
    struct timespec ts = {(time_t)(until / 1000000000u),
                          (long)(until % 1000000000u)};
    pthread_mutex_lock(&c->mu);
    while (!c->finished) {
      if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0 &&
          admit_now_ns() >= until)
        break;
    }
    if (c->finished) {
      status = c->status;
    } else {
      /* The I/O thread is late; it will find the call abandoned. */
      c->abandoned = 1;
      status = ADMIT_EUNAVAILABLE;
    }
    pthread_mutex_unlock(&c->mu);
  } else if (c->probe) {
    /* The probe never went out; let another call probe. */
    admit__redis_breaker_record(c->r, 0, 1);
  }
  if (c->finish != NULL) status = c->finish(c, status);
  return status;
}

int admit__rcall_start(admit__rcall_t* c, int mode, admit_redis_loop_t* loop,
                       admit_redis_decision_cb cb, void* ud) {
  if (mode == ADMIT__RCALL_UV && loop->closing) {
    admit__rreq_unref(&c->req);
    return ADMIT_ECLOSED;
  }
  c->mode = mode;
  c->cb = cb;
  c->ud = ud;
  c->loop = loop;
  c->req.deadline_ns =
      admit_now_ns() + admit__redis_command_timeout(c->r);
  if (c->use_breaker && !admit__redis_breaker_allow(c->r, &c->probe)) {
    /* Still delivered through the I/O thread, so the callback always runs
     * where the caller expects it. */
    c->req.skip = 1;
    admit__redis_count_failure(c->r);
  }
  if (mode == ADMIT__RCALL_UV) loop->pending++;
  int rc = admit__redis_submit(c->r, &c->req, 1);
  if (rc < 0) {
    if (mode == ADMIT__RCALL_UV) loop->pending--;
    if (c->probe) admit__redis_breaker_record(c->r, 0, 1);
  }
  admit__rreq_unref(&c->req);
  return rc;
}

int admit__rcall_simple(admit_redis_t* r, int argc, const char* const* argv,
                        const size_t* lens, int script, uint64_t timeout_ns,
                        long long* integer) {
  admit__rcall_t* c = admit__rcall_new(r, argc, argv, lens, NULL, 0);
  if (c == NULL) return ADMIT_ENOMEM;
  c->req.script = script;
  int rc = admit__rcall_run(c, timeout_ns);
  if (rc >= 0 && integer != NULL) *integer = c->integer;
  admit__rreq_unref(&c->req);
  return rc;
}

/* --- the libuv binding -----------------------------------------------------*/

static void loop_freed(uv_handle_t* h) {
  admit_redis_loop_t* lp = (admit_redis_loop_t*)h;
  pthread_mutex_destroy(&lp->mu);
  admit__free(lp);
}

static void loop_maybe_close(admit_redis_loop_t* lp) {
  if (lp->closing && lp->pending == 0 &&
      !uv_is_closing((uv_handle_t*)&lp->async))
    uv_close((uv_handle_t*)&lp->async, loop_freed);
}

static void on_loop_async(uv_async_t* a) {
  admit_redis_loop_t* lp = (admit_redis_loop_t*)a;
  pthread_mutex_lock(&lp->mu);
  admit__rcall_t* c = lp->head;
  lp->head = lp->tail = NULL;
  pthread_mutex_unlock(&lp->mu);
  while (c != NULL) {
    admit__rcall_t* next = c->loop_next;
    int st = c->status;
    if (c->finish != NULL) st = c->finish(c, st);
    lp->pending--;
    deliver(c, st);
    admit__rreq_unref(&c->req);
    c = next;
  }
  loop_maybe_close(lp);
}

int admit_redis_loop_new(admit_redis_loop_t** out, struct uv_loop_s* loop) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  if (loop == NULL) return ADMIT_EINVAL;
  admit_redis_loop_t* lp = admit__calloc(1, sizeof(*lp));
  if (lp == NULL) return ADMIT_ENOMEM;
  if (uv_async_init(loop, &lp->async, on_loop_async) != 0) {
    admit__free(lp);
    return ADMIT_ESYS;
  }
  pthread_mutex_init(&lp->mu, NULL);
  *out = lp;
  return 0;
}

void admit_redis_loop_close(admit_redis_loop_t* lp) {
  if (lp == NULL || lp->closing) return;
  lp->closing = 1;
  loop_maybe_close(lp);
}
