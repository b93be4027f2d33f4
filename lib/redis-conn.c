/* The Redis connection: one libuv I/O thread, a few hiredis async contexts.
 *
 * Callers on any thread queue requests (admit__redis_submit) and wake the
 * loop with uv_async_send. The loop writes every queued request to a ready
 * context in one go, so concurrent callers share round trips (pipelining);
 * replies come back in order and complete their requests.
 *
 * Failures, following DESIGN.md's known traps:
 * - A context that saw any error, or whose oldest command outlived the
 *   command timeout, is dropped (never reused: a late reply would be read
 *   as the answer to the next command) and reconnected after a capped,
 *   jittered exponential backoff.
 * - A command whose outcome is unknown (written, then the connection died
 *   or it timed out) completes with ADMIT_EUNAVAILABLE and is never
 *   retried. Only what certainly did not run is retried: NOSCRIPT (the
 *   script is reloaded, then the command resent) and requests still queued
 *   while a connection is being made.
 * - Every request has a deadline, enforced by a 1 ms tick while requests
 *   are outstanding, so no call waits longer than its timeout whatever the
 *   server does (refused, killed, SIGSTOPped, DEBUG SLEEPing).
 * - hiredis 0.14's libuv adapter ignores poll errors (a refused connect
 *   would sit until the connect timeout), so its poll callback is replaced
 *   by one that lets hiredis see the socket error, as later hiredis does. */
#include "redis-conn.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "redis-call.h"
#include "redis-url.h"

enum conn_state_e {
  CONN_IDLE = 0,    /* not started */
  CONN_RESOLVING,   /* waiting for getaddrinfo */
  CONN_CONNECTING,  /* TCP connect and handshake in progress */
  CONN_READY,       /* handshake done: requests go here */
  CONN_BACKOFF      /* failed; the timer will start the next attempt */
};

enum breaker_state_e { B_CLOSED = 0, B_OPEN = 1, B_HALF = 2 };

typedef struct conn_s {
  admit_redis_t* r;
  redisAsyncContext* ac;
  int state;
  int hs_pending;   /* handshake replies still expected */
  int hs_status;    /* first handshake error, or 0 */
  uint32_t attempts; /* failed attempts in a row */
  uint32_t gen;     /* attempt number, to ignore stale resolutions */
  uv_timer_t timer; /* connect deadline or backoff delay */
  admit__rreq_t* head; /* written, reply pending, oldest first */
  admit__rreq_t* tail;
  uint32_t inflight;
} conn_t;

struct admit_redis_s {
  admit__redis_url_t url;
  char prefix[129];
  size_t prefix_len;
  uint64_t connect_timeout;
  uint64_t command_timeout;
  uint32_t breaker_failures;
  uint64_t breaker_cooldown;
  uint64_t reconnect_min;
  uint64_t reconnect_max;
  uint64_t heartbeat;
  uint32_t max_queue;
  int pipeline_only;
  const admit__script_t* scripts;
  char instance_id[33];
  char beat_key[160];

  /* Submission queue, any thread. */
  pthread_mutex_t qlock;
  admit__rreq_t* qhead;
  admit__rreq_t* qtail;
  int qwoken; /* a wake-up is on its way for what is queued */
  int holds;  /* admit_redis_hold() minus admit_redis_release() */
  _Atomic int stopping;
  _Atomic uint32_t outstanding; /* submitted, not yet completed */

  /* I/O thread only. */
  uv_thread_t thread;
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t tick;
  int tick_on;
  uv_timer_t beat;
  int beat_inflight;
  admit__rreq_t* phead; /* waiting for a ready connection */
  admit__rreq_t* ptail;
  conn_t* conns;
  uint32_t nconns;
  int resolving; /* getaddrinfo requests in flight */

  /* The first connection attempt's outcome, for admit_redis_new. */
  pthread_mutex_t first_lock;
  pthread_cond_t first_cond;
  int first_done;
  int first_status;

  /* The spare synchronous connection for uncontended blocking calls. */
  pthread_mutex_t dlock;
  redisContext* dctx;   /* under dlock */
  uint64_t d_timeout;   /* under dlock: the socket timeout set on dctx */
  uint64_t d_retry_at;  /* under dlock: no reconnect before */
  pthread_mutex_t iplock;
  char ip[64];          /* under iplock: the address last connected to */

  _Atomic uint32_t instances;
  _Atomic int last_error;
  _Atomic uint32_t connected;
  _Atomic int bstate;
  _Atomic uint32_t bfails;
  _Atomic uint64_t bopen_until;

  _Atomic uint64_t n_commands, n_replies, n_timeouts, n_failures, n_connects,
      n_connect_errors, n_disconnects, n_script_loads, n_breaker_trips,
      n_breaker_skips;
};

#define COUNT(r, field) atomic_fetch_add_explicit(&(r)->field, 1, \
                                                  memory_order_relaxed)
#define LOAD(r, field) atomic_load_explicit(&(r)->field, memory_order_relaxed)

static void conn_start(conn_t* c);
static void conn_drop(conn_t* c, int status);
static void dispatch(admit_redis_t* r, admit__rreq_t* q);
static void tick_ensure(admit_redis_t* r);
static void beat_send(admit_redis_t* r);

/* --- requests -------------------------------------------------------------*/

/* Appends the RESP bulk string header "$<len>\r\n" and the bytes. */
static char* resp_bulk(char* p, const char* s, size_t len) {
  *p++ = '$';
  p += admit__u64_dec(p, len);
  *p++ = '\r';
  *p++ = '\n';
  memcpy(p, s, len);
  p += len;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

admit__rreq_t* admit__rreq_new(size_t size, int argc, const char* const* argv,
                               const size_t* lens) {
  size_t need = 32;
  for (int i = 0; i < argc; i++) need += lens[i] + 32;
  size_t head = (size + 15) & ~(size_t)15;
  admit__rreq_t* q = admit__calloc(1, head + need);
  if (q == NULL) return NULL;
  char* p = (char*)q + head;
  q->cmd = p;
  *p++ = '*';
  p += admit__u64_dec(p, (uint64_t)argc);
  *p++ = '\r';
  *p++ = '\n';
  for (int i = 0; i < argc; i++) p = resp_bulk(p, argv[i], lens[i]);
  q->len = (size_t)(p - q->cmd);
  q->script = -1;
  atomic_init(&q->refs, 1);
  return q;
}

void admit__rreq_ref(admit__rreq_t* q) {
  atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
}

void admit__rreq_unref(admit__rreq_t* q) {
  if (q == NULL) return;
  if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (q->dtor != NULL) q->dtor(q);
  admit__free(q);
}

/* Calls done() once. The connection's reference is dropped separately,
 * when no list and no hiredis callback refers to the request any more. */
static void complete(admit_redis_t* r, admit__rreq_t* q, int status,
                     redisReply* reply) {
  if (q->completed) return;
  q->completed = 1;
  atomic_fetch_sub_explicit(&r->outstanding, 1, memory_order_relaxed);
  /* A merged request's failure is counted once per member it carries. */
  if (status == ADMIT_EUNAVAILABLE && !q->carrier) COUNT(r, n_failures);
  q->done(q, status, reply);
}

/* --- merged requests -------------------------------------------------------*/

typedef struct {
  admit__rreq_t req; /* first */
  admit_redis_t* r;
  int n;
  admit__rreq_t* members[ADMIT__RBATCH_MAX];
} rbatch_t;

/* Completes every member with its element of the reply (or with the whole
 * reply when it is not one element per member: an error reply, which each
 * member reports, or a malformed one, which each rejects). */
static void rbatch_done(admit__rreq_t* q, int status, redisReply* reply) {
  rbatch_t* b = (rbatch_t*)q;
  int split = status == 0 && reply->type == REDIS_REPLY_ARRAY &&
              reply->elements == (size_t)b->n;
  for (int i = 0; i < b->n; i++) {
    admit__rreq_t* m = b->members[i];
    b->members[i] = NULL;
    complete(b->r, m, status, split ? reply->element[i] : reply);
    admit__rreq_unref(m);
  }
  b->n = 0;
}

static void rbatch_dtor(admit__rreq_t* q) {
  rbatch_t* b = (rbatch_t*)q;
  for (int i = 0; i < b->n; i++) admit__rreq_unref(b->members[i]);
}

admit__rreq_t* admit__rbatch_new(admit_redis_t* r,
                                 admit__rreq_t* const* members, int n,
                                 int argc, const char* const* argv,
                                 const size_t* lens) {
  if (n < 1 || n > ADMIT__RBATCH_MAX) return NULL;
  admit__rreq_t* q = admit__rreq_new(sizeof(rbatch_t), argc, argv, lens);
  if (q == NULL) return NULL;
  rbatch_t* b = (rbatch_t*)q;
  b->r = r;
  b->n = n;
  q->done = rbatch_done;
  q->dtor = rbatch_dtor;
  q->carrier = 1;
  q->script = members[0]->script;
  q->deadline_ns = UINT64_MAX;
  for (int i = 0; i < n; i++) {
    b->members[i] = members[i];
    if (members[i]->deadline_ns < q->deadline_ns)
      q->deadline_ns = members[i]->deadline_ns;
  }
  /* Completed once, like a submitted request. */
  atomic_fetch_add_explicit(&r->outstanding, 1, memory_order_relaxed);
  return q;
}

static int down_status(admit_redis_t* r) {
  if (atomic_load(&r->stopping)) return ADMIT_ECLOSED;
  int e = atomic_load(&r->last_error);
  return e == ADMIT_ECONFIG ? ADMIT_ECONFIG : ADMIT_EUNAVAILABLE;
}

/* --- errors ----------------------------------------------------------------*/

static int starts(const char* msg, size_t len, const char* p) {
  size_t n = strlen(p);
  return len >= n && memcmp(msg, p, n) == 0;
}

int admit__redis_error_status(const char* msg, size_t len) {
  static const char* const config[] = {
      "WRONGPASS", "NOAUTH", "NOPERM", "WRONGTYPE", "ERR invalid password",
      "ERR AUTH", "ERR DB index", "ERR invalid DB index", "ERR SELECT",
      "MOVED", "ASK", "CROSSSLOT", "ERR unknown command",
      "ERR Client sent AUTH", "NOSCRIPT"};
  static const char* const unavailable[] = {
      "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "OOM",
      "READONLY", "NOREPLICAS", "MISCONF"};
  for (size_t i = 0; i < sizeof(config) / sizeof(config[0]); i++)
    if (starts(msg, len, config[i])) return ADMIT_ECONFIG;
  for (size_t i = 0; i < sizeof(unavailable) / sizeof(unavailable[0]); i++)
    if (starts(msg, len, unavailable[i])) return ADMIT_EUNAVAILABLE;
  return ADMIT_EPROTO;
}

/* --- the patched libuv adapter ---------------------------------------------*/

static void adapter_poll(uv_poll_t* h, int status, int events) {
  redisLibuvEvents* p = (redisLibuvEvents*)h->data;
  /* On a poll error (libuv reports POLLERR as a status and stops the
   * handle), let hiredis read or write so it finds the socket error. */
  int ev = status < 0 ? p->events : events;
  if (p->context != NULL && (ev & UV_READABLE))
    redisAsyncHandleRead(p->context);
  if (p->context != NULL && (ev & UV_WRITABLE))
    redisAsyncHandleWrite(p->context);
}

static void adapter_update(redisLibuvEvents* p) {
  if (p->events)
    uv_poll_start(&p->handle, p->events, adapter_poll);
  else
    uv_poll_stop(&p->handle);
}

static void adapter_add_read(void* d) {
  redisLibuvEvents* p = d;
  p->events |= UV_READABLE;
  adapter_update(p);
}

static void adapter_del_read(void* d) {
  redisLibuvEvents* p = d;
  p->events &= ~UV_READABLE;
  adapter_update(p);
}

static void adapter_add_write(void* d) {
  redisLibuvEvents* p = d;
  p->events |= UV_WRITABLE;
  adapter_update(p);
}

static void adapter_del_write(void* d) {
  redisLibuvEvents* p = d;
  p->events &= ~UV_WRITABLE;
  adapter_update(p);
}

static int adapter_attach(redisAsyncContext* ac, uv_loop_t* loop) {
  if (redisLibuvAttach(ac, loop) != REDIS_OK) return -1;
  ac->ev.addRead = adapter_add_read;
  ac->ev.delRead = adapter_del_read;
  ac->ev.addWrite = adapter_add_write;
  ac->ev.delWrite = adapter_del_write;
  return 0;
}

/* --- in-flight lists -------------------------------------------------------*/

static void list_push(admit__rreq_t** head, admit__rreq_t** tail,
                      admit__rreq_t* q) {
  q->next = NULL;
  if (*tail != NULL)
    (*tail)->next = q;
  else
    *head = q;
  *tail = q;
}

/* Removes @p q from the list (normally its head). Returns 1 if found. */
static int list_remove(admit__rreq_t** head, admit__rreq_t** tail,
                       admit__rreq_t* q) {
  admit__rreq_t* prev = NULL;
  for (admit__rreq_t* p = *head; p != NULL; prev = p, p = p->next) {
    if (p != q) continue;
    if (prev != NULL)
      prev->next = p->next;
    else
      *head = p->next;
    if (*tail == p) *tail = prev;
    p->next = NULL;
    return 1;
  }
  return 0;
}

/* --- sending and replies ---------------------------------------------------*/

static void on_script_load(redisAsyncContext* ac, void* reply, void* priv) {
  (void)ac;
  (void)reply;
  (void)priv;
}

static void on_reply(redisAsyncContext* ac, void* rv, void* priv);

static int send_on(conn_t* c, admit__rreq_t* q) {
  if (redisAsyncFormattedCommand(c->ac, on_reply, q, q->cmd, q->len) !=
      REDIS_OK)
    return -1;
  q->conn = c;
  q->sent_ns = admit_now_ns();
  list_push(&c->head, &c->tail, q);
  c->inflight++;
  COUNT(c->r, n_commands);
  return 0;
}

static void on_reply(redisAsyncContext* ac, void* rv, void* priv) {
  (void)ac;
  admit__rreq_t* q = priv;
  conn_t* c = q->conn;
  admit_redis_t* r = c->r;
  redisReply* reply = rv;
  if (list_remove(&c->head, &c->tail, q)) c->inflight--;
  if (reply == NULL) {
    /* The context is going away: the command may or may not have run. */
    complete(r, q, down_status(r), NULL);
    admit__rreq_unref(q);
    return;
  }
  COUNT(r, n_replies);
  if (reply->type == REDIS_REPLY_ERROR && q->script >= 0 && !q->completed &&
      q->reloads < 2 && starts(reply->str, reply->len, "NOSCRIPT") &&
      c->ac != NULL) {
    /* The script certainly did not run: load it and send the command
     * again, right behind the load on the same connection. */
    const admit__script_t* s = &r->scripts[q->script];
    q->reloads++;
    COUNT(r, n_script_loads);
    if (redisAsyncCommand(c->ac, on_script_load, NULL, "SCRIPT LOAD %b",
                          s->text, s->len) == REDIS_OK &&
        send_on(c, q) == 0)
      return;
    complete(r, q, ADMIT_EUNAVAILABLE, NULL);
    admit__rreq_unref(q);
    return;
  }
  complete(r, q, 0, reply);
  admit__rreq_unref(q);
}

/* Picks the ready connection with the fewest commands in flight. */
static conn_t* pick(admit_redis_t* r, int* connecting) {
  conn_t* best = NULL;
  *connecting = 0;
  for (uint32_t i = 0; i < r->nconns; i++) {
    conn_t* c = &r->conns[i];
    if (c->state == CONN_READY) {
      if (best == NULL || c->inflight < best->inflight) best = c;
    } else if (c->state == CONN_CONNECTING || c->state == CONN_RESOLVING) {
      *connecting = 1;
    }
  }
  return best;
}

static void dispatch(admit_redis_t* r, admit__rreq_t* q) {
  if (q->skip) {
    /* A request that must not touch Redis (breaker open): answer now. */
    complete(r, q, ADMIT_EUNAVAILABLE, NULL);
    admit__rreq_unref(q);
    return;
  }
  int connecting;
  conn_t* c = pick(r, &connecting);
  if (c != NULL) {
    if (send_on(c, q) == 0) {
      tick_ensure(r);
      return;
    }
    complete(r, q, ADMIT_EUNAVAILABLE, NULL);
    admit__rreq_unref(q);
    conn_drop(c, ADMIT_EUNAVAILABLE);
    return;
  }
  if (connecting) {
    /* Not sent yet, so it may wait for the connection (within its
     * deadline). */
    list_push(&r->phead, &r->ptail, q);
    tick_ensure(r);
    return;
  }
  complete(r, q, down_status(r), NULL);
  admit__rreq_unref(q);
}

/* Sends (or fails) every request waiting for a connection. */
static void flush_pending(admit_redis_t* r) {
  admit__rreq_t* p = r->phead;
  r->phead = r->ptail = NULL;
  while (p != NULL) {
    admit__rreq_t* next = p->next;
    p->next = NULL;
    if (p->completed)
      admit__rreq_unref(p);
    else
      dispatch(r, p);
    p = next;
  }
}

/* --- connection life -------------------------------------------------------*/

static void set_first(admit_redis_t* r, int status) {
  pthread_mutex_lock(&r->first_lock);
  if (!r->first_done) {
    r->first_done = 1;
    r->first_status = status;
    pthread_cond_broadcast(&r->first_cond);
  }
  pthread_mutex_unlock(&r->first_lock);
}

static void on_backoff_done(uv_timer_t* t) {
  conn_t* c = t->data;
  if (c->state == CONN_BACKOFF) conn_start(c);
}

/* Records a failed attempt or a lost connection and schedules the next
 * attempt after a capped exponential backoff with jitter. */
static void conn_failed(conn_t* c, int status) {
  admit_redis_t* r = c->r;
  int was_ready = c->state == CONN_READY;
  if (was_ready) atomic_fetch_sub(&r->connected, 1);
  c->state = CONN_BACKOFF;
  if (status == ADMIT_ECONFIG || !was_ready)
    atomic_store(&r->last_error, status);
  else
    atomic_store(&r->last_error, ADMIT_EUNAVAILABLE);
  set_first(r, status);
  uint64_t delay = r->reconnect_min;
  for (uint32_t i = 0; i < c->attempts && delay < r->reconnect_max; i++)
    delay *= 2;
  if (delay > r->reconnect_max) delay = r->reconnect_max;
  if (status == ADMIT_ECONFIG) delay = r->reconnect_max;
  c->attempts++;
  /* "Equal jitter": between half and all of the delay. */
  delay = delay / 2 + admit__random_below(delay / 2);
  uint64_t ms = (delay + 999999) / 1000000;
  if (!atomic_load(&r->stopping))
    uv_timer_start(&c->timer, on_backoff_done, ms ? ms : 1, 0);
  /* With nothing left to wait for, queued requests fail now rather than
   * at their deadline. */
  int connecting;
  if (pick(r, &connecting) == NULL && !connecting) {
    admit__rreq_t* p = r->phead;
    r->phead = r->ptail = NULL;
    while (p != NULL) {
      admit__rreq_t* next = p->next;
      p->next = NULL;
      complete(r, p, status == ADMIT_ECONFIG ? ADMIT_ECONFIG
                                             : down_status(r),
               NULL);
      admit__rreq_unref(p);
      p = next;
    }
  }
}

/* Drops the context (never reused after an error) and schedules a
 * reconnection. Requests in flight on it complete with @p status through
 * their hiredis callbacks (now, or when the current callback returns). */
static void conn_drop(conn_t* c, int status) {
  redisAsyncContext* ac = c->ac;
  if (ac == NULL) return;
  int was_ready = c->state == CONN_READY;
  c->ac = NULL;
  ac->data = NULL;
  uv_timer_stop(&c->timer);
  if (was_ready) COUNT(c->r, n_disconnects);
  conn_failed(c, status);
  redisAsyncFree(ac);
}

static void on_connect_timeout(uv_timer_t* t) {
  conn_t* c = t->data;
  if (c->state == CONN_RESOLVING) {
    /* A stale resolution is ignored by its generation number. */
    c->gen++;
    COUNT(c->r, n_connect_errors);
    conn_failed(c, ADMIT_EUNAVAILABLE);
    return;
  }
  if (c->state != CONN_CONNECTING) return;
  COUNT(c->r, n_connect_errors);
  conn_drop(c, ADMIT_EUNAVAILABLE);
}

static void on_ready(conn_t* c) {
  admit_redis_t* r = c->r;
  uv_timer_stop(&c->timer);
  c->state = CONN_READY;
  c->attempts = 0;
  atomic_fetch_add(&r->connected, 1);
  atomic_store(&r->last_error, 0);
  COUNT(r, n_connects);
  /* An open breaker may probe at once instead of waiting out its cool-down:
   * a connection was just made. */
  if (atomic_load(&r->bstate) == B_OPEN) atomic_store(&r->bopen_until, 0);
  set_first(r, 0);
  flush_pending(r);
  if (!r->beat_inflight) beat_send(r);
}

static void on_handshake(redisAsyncContext* ac, void* rv, void* priv) {
  conn_t* c = priv;
  redisReply* reply = rv;
  if (reply == NULL || c->ac != ac) return; /* context going away */
  if (reply->type == REDIS_REPLY_ERROR && c->hs_status == 0) {
    int st = admit__redis_error_status(reply->str, reply->len);
    c->hs_status = st == ADMIT_EPROTO ? ADMIT_ECONFIG : st;
  }
  if (--c->hs_pending > 0) return;
  if (c->hs_status != 0) {
    COUNT(c->r, n_connect_errors);
    conn_drop(c, c->hs_status);
    return;
  }
  on_ready(c);
}

static void on_connect(const redisAsyncContext* ac, int status) {
  conn_t* c = ac->data;
  if (c == NULL || status == REDIS_OK) return;
  /* hiredis frees the context right after this callback. */
  ((redisAsyncContext*)ac)->data = NULL;
  c->ac = NULL;
  uv_timer_stop(&c->timer);
  COUNT(c->r, n_connect_errors);
  conn_failed(c, ADMIT_EUNAVAILABLE);
}

static void on_disconnect(const redisAsyncContext* ac, int status) {
  (void)status;
  conn_t* c = ac->data;
  if (c == NULL) return; /* we dropped it ourselves */
  c->ac = NULL;
  COUNT(c->r, n_disconnects);
  conn_failed(c, ADMIT_EUNAVAILABLE);
}

static int handshake(conn_t* c) {
  admit_redis_t* r = c->r;
  redisAsyncContext* ac = c->ac;
  int n = 0;
  if (r->url.user != NULL && r->url.password != NULL) {
    if (redisAsyncCommand(ac, on_handshake, c, "AUTH %s %s", r->url.user,
                          r->url.password) != REDIS_OK)
      return -1;
    n++;
  } else if (r->url.password != NULL) {
    if (redisAsyncCommand(ac, on_handshake, c, "AUTH %s", r->url.password) !=
        REDIS_OK)
      return -1;
    n++;
  }
  if (r->url.db != 0) {
    if (redisAsyncCommand(ac, on_handshake, c, "SELECT %d", r->url.db) !=
        REDIS_OK)
      return -1;
    n++;
  }
  /* Load the scripts now so that the first calls find them. */
  for (int i = 0; i < ADMIT__SCRIPT_COUNT; i++) {
    if (redisAsyncCommand(ac, on_handshake, c, "SCRIPT LOAD %b",
                          r->scripts[i].text, r->scripts[i].len) != REDIS_OK)
      return -1;
    n++;
  }
  c->hs_pending = n;
  c->hs_status = 0;
  return 0;
}

static void conn_open(conn_t* c, const char* ip) {
  admit_redis_t* r = c->r;
  if (ip != NULL) {
    pthread_mutex_lock(&r->iplock);
    snprintf(r->ip, sizeof(r->ip), "%s", ip);
    pthread_mutex_unlock(&r->iplock);
  }
  redisAsyncContext* ac = r->url.is_unix
                              ? redisAsyncConnectUnix(r->url.path)
                              : redisAsyncConnect(ip, r->url.port);
  if (ac == NULL || ac->err) {
    if (ac != NULL) redisAsyncFree(ac);
    COUNT(r, n_connect_errors);
    conn_failed(c, ADMIT_EUNAVAILABLE);
    return;
  }
  ac->data = c;
  if (adapter_attach(ac, &r->loop) != 0) {
    redisAsyncFree(ac);
    COUNT(r, n_connect_errors);
    conn_failed(c, ADMIT_EUNAVAILABLE);
    return;
  }
  c->ac = ac;
  c->state = CONN_CONNECTING;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  if (handshake(c) != 0) {
    COUNT(r, n_connect_errors);
    conn_drop(c, ADMIT_EUNAVAILABLE);
  }
}

typedef struct resolve_s {
  uv_getaddrinfo_t req;
  conn_t* c;
  uint32_t gen;
} resolve_t;

static void on_resolved(uv_getaddrinfo_t* req, int status,
                        struct addrinfo* res) {
  resolve_t* rs = (resolve_t*)req;
  conn_t* c = rs->c;
  admit_redis_t* r = c->r;
  r->resolving--;
  int current = rs->gen == c->gen && c->state == CONN_RESOLVING &&
                !atomic_load(&r->stopping);
  /* IPv4 addresses first (a server bound to 127.0.0.1 is common, and
   * "localhost" often lists ::1 first); successive attempts rotate through
   * the list, so one dead address does not hide the others. */
  char addrs[8][INET6_ADDRSTRLEN];
  int n = 0;
  for (int fam = 0; fam < 2 && status == 0; fam++) {
    for (struct addrinfo* a = res; a != NULL && n < 8; a = a->ai_next) {
      if (fam == 0 && a->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in*)a->ai_addr)->sin_addr,
                  addrs[n++], INET6_ADDRSTRLEN);
      else if (fam == 1 && a->ai_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6*)a->ai_addr)->sin6_addr,
                  addrs[n++], INET6_ADDRSTRLEN);
    }
  }
  char ip[INET6_ADDRSTRLEN] = "";
  if (n > 0) memcpy(ip, addrs[c->attempts % (uint32_t)n], sizeof(ip));
  if (res != NULL) uv_freeaddrinfo(res);
  admit__free(rs);
  if (!current) return;
  if (ip[0] == '\0') {
    uv_timer_stop(&c->timer);
    COUNT(r, n_connect_errors);
    conn_failed(c, ADMIT_EUNAVAILABLE);
    return;
  }
  conn_open(c, ip);
}

static void conn_start(conn_t* c) {
  admit_redis_t* r = c->r;
  if (atomic_load(&r->stopping)) return;
  c->gen++;
  uint64_t ms = (r->connect_timeout + 999999) / 1000000;
  uv_timer_start(&c->timer, on_connect_timeout, ms ? ms : 1, 0);
  if (r->url.is_unix) {
    conn_open(c, NULL);
    return;
  }
  unsigned char buf[16];
  if (inet_pton(AF_INET, r->url.host, buf) == 1 ||
      inet_pton(AF_INET6, r->url.host, buf) == 1) {
    conn_open(c, r->url.host);
    return;
  }
  /* Resolve names on libuv's thread pool: getaddrinfo may block for
   * seconds, and the loop must keep serving deadlines meanwhile. */
  resolve_t* rs = admit__calloc(1, sizeof(*rs));
  if (rs == NULL) {
    conn_failed(c, ADMIT_EUNAVAILABLE);
    return;
  }
  rs->c = c;
  rs->gen = c->gen;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->state = CONN_RESOLVING;
  if (uv_getaddrinfo(&r->loop, &rs->req, on_resolved, r->url.host, NULL,
                     &hints) != 0) {
    admit__free(rs);
    uv_timer_stop(&c->timer);
    conn_failed(c, ADMIT_EUNAVAILABLE);
    return;
  }
  r->resolving++;
}

/* --- deadlines -------------------------------------------------------------*/

static int expire_list(admit_redis_t* r, admit__rreq_t** head,
                       admit__rreq_t** tail, uint64_t now, int remove) {
  int left = 0;
  admit__rreq_t* prev = NULL;
  admit__rreq_t* p = *head;
  while (p != NULL) {
    admit__rreq_t* next = p->next;
    if (!p->completed && now >= p->deadline_ns) {
      COUNT(r, n_timeouts);
      complete(r, p, ADMIT_EUNAVAILABLE, NULL);
    }
    if (remove && p->completed) {
      if (prev != NULL)
        prev->next = next;
      else
        *head = next;
      if (*tail == p) *tail = prev;
      p->next = NULL;
      admit__rreq_unref(p);
    } else {
      prev = p;
      left++;
    }
    p = next;
  }
  return left;
}

static void on_tick(uv_timer_t* t) {
  admit_redis_t* r = t->data;
  uint64_t now = admit_now_ns();
  int left = expire_list(r, &r->phead, &r->ptail, now, 1);
  for (uint32_t i = 0; i < r->nconns; i++) {
    conn_t* c = &r->conns[i];
    left += expire_list(r, &c->head, &c->tail, now, 0);
    /* A command unanswered for the whole command timeout means a hung
     * or overloaded server: drop the connection, never wait on it. */
    if (c->head != NULL && c->ac != NULL &&
        now - c->head->sent_ns >= r->command_timeout)
      conn_drop(c, ADMIT_EUNAVAILABLE);
  }
  if (left == 0) {
    uv_timer_stop(&r->tick);
    r->tick_on = 0;
  }
}

static void tick_ensure(admit_redis_t* r) {
  if (r->tick_on) return;
  r->tick_on = 1;
  uv_timer_start(&r->tick, on_tick, 1, 1);
}

/* --- heartbeat -------------------------------------------------------------*/

static void on_beat_done(admit__rreq_t* q, int status, redisReply* reply) {
  admit_redis_t* r = *(admit_redis_t**)(q + 1);
  r->beat_inflight = 0;
  if (status == 0 && reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
      reply->integer > 0) {
    uint64_t n = (uint64_t)reply->integer;
    atomic_store(&r->instances, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
  }
}

static int beat_argv(admit_redis_t* r, const char* op, const char** argv,
                     size_t* lens, char* ttl) {
  snprintf(ttl, 24, "%llu", (unsigned long long)(r->heartbeat * 3));
  argv[0] = "EVALSHA";
  argv[1] = r->scripts[ADMIT__SCRIPT_BEAT].sha;
  argv[2] = "1";
  argv[3] = r->beat_key;
  argv[4] = op;
  argv[5] = "";
  argv[6] = r->instance_id;
  argv[7] = ttl;
  for (int i = 0; i < 8; i++) lens[i] = strlen(argv[i]);
  return 8;
}

static void beat_send(admit_redis_t* r) {
  const char* argv[8];
  size_t lens[8];
  char ttl[24];
  int argc = beat_argv(r, "beat", argv, lens, ttl);
  admit__rreq_t* q = admit__rreq_new(
      sizeof(admit__rreq_t) + sizeof(admit_redis_t*), argc, argv, lens);
  if (q == NULL) return;
  *(admit_redis_t**)(q + 1) = r;
  q->done = on_beat_done;
  q->script = ADMIT__SCRIPT_BEAT;
  q->deadline_ns = admit_now_ns() + r->command_timeout;
  atomic_fetch_add(&r->outstanding, 1);
  r->beat_inflight = 1;
  dispatch(r, q);
}

static void on_beat_timer(uv_timer_t* t) {
  admit_redis_t* r = t->data;
  int connecting;
  if (!r->beat_inflight && pick(r, &connecting) != NULL) beat_send(r);
}

/* --- the loop --------------------------------------------------------------*/

static void close_cb(uv_handle_t* h) { (void)h; }

static void shutdown_loop(admit_redis_t* r) {
  uv_timer_stop(&r->tick);
  uv_close((uv_handle_t*)&r->tick, close_cb);
  uv_timer_stop(&r->beat);
  uv_close((uv_handle_t*)&r->beat, close_cb);
  for (uint32_t i = 0; i < r->nconns; i++) {
    conn_t* c = &r->conns[i];
    c->gen++;
    conn_drop(c, ADMIT_ECLOSED);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t*)&c->timer, close_cb);
    c->state = CONN_IDLE;
  }
  admit__rreq_t* p = r->phead;
  r->phead = r->ptail = NULL;
  while (p != NULL) {
    admit__rreq_t* next = p->next;
    p->next = NULL;
    complete(r, p, ADMIT_ECLOSED, NULL);
    admit__rreq_unref(p);
    p = next;
  }
  uv_close((uv_handle_t*)&r->wake, close_cb);
}

/* Requests with one batch tag met while draining the queue. */
typedef struct {
  const void* tag;
  admit__rreq_merge_fn merge;
  int n;
  admit__rreq_t* m[ADMIT__RBATCH_MAX];
} group_t;

#define GROUPS 4

static void group_flush(admit_redis_t* r, group_t* g) {
  admit__rreq_t* carrier = g->n >= 2 ? g->merge(g->m, g->n) : NULL;
  if (carrier != NULL)
    dispatch(r, carrier);
  else
    for (int i = 0; i < g->n; i++) dispatch(r, g->m[i]);
  g->n = 0;
  g->tag = NULL;
}

static void groups_flush(admit_redis_t* r, group_t* gs) {
  for (int i = 0; i < GROUPS; i++)
    if (gs[i].n > 0) group_flush(r, &gs[i]);
}

/* Sends what the queue held. Requests with the same batch tag are merged
 * (a burst of tries on one limiter becomes one script call, which costs
 * Redis far less than as many calls); any other request first sends the
 * merged ones before it, so that the order of the queue is kept. */
static void on_wake(uv_async_t* a) {
  admit_redis_t* r = a->data;
  pthread_mutex_lock(&r->qlock);
  admit__rreq_t* p = r->qhead;
  r->qhead = r->qtail = NULL;
  r->qwoken = 0;
  int stop = atomic_load(&r->stopping);
  pthread_mutex_unlock(&r->qlock);
  group_t gs[GROUPS];
  for (int i = 0; i < GROUPS; i++) gs[i].n = 0, gs[i].tag = NULL;
  while (p != NULL) {
    admit__rreq_t* next = p->next;
    p->next = NULL;
    if (stop) {
      complete(r, p, ADMIT_ECLOSED, NULL);
      admit__rreq_unref(p);
    } else if (p->batch_tag == NULL || p->merge == NULL || p->skip) {
      groups_flush(r, gs);
      dispatch(r, p);
    } else {
      group_t* g = NULL;
      for (int i = 0; i < GROUPS && g == NULL; i++)
        if (gs[i].n > 0 && gs[i].tag == p->batch_tag) g = &gs[i];
      for (int i = 0; i < GROUPS && g == NULL; i++)
        if (gs[i].n == 0) g = &gs[i];
      if (g == NULL) {
        groups_flush(r, gs);
        g = &gs[0];
      }
      g->tag = p->batch_tag;
      g->merge = p->merge;
      g->m[g->n++] = p;
      if (g->n == ADMIT__RBATCH_MAX) group_flush(r, g);
    }
    p = next;
  }
  groups_flush(r, gs);
  if (stop && !uv_is_closing((uv_handle_t*)&r->wake)) shutdown_loop(r);
}

static void io_main(void* arg) {
  admit_redis_t* r = arg;
  for (uint32_t i = 0; i < r->nconns; i++) conn_start(&r->conns[i]);
  uint64_t ms = (r->heartbeat + 999999) / 1000000;
  uv_timer_start(&r->beat, on_beat_timer, ms, ms);
  uv_run(&r->loop, UV_RUN_DEFAULT);
}

/* --- the direct path ------------------------------------------------------*/

/* A lone blocking caller pays two thread hand-offs through the I/O thread
 * (to it, and back), which is as much again as the round trip itself. So
 * one spare synchronous context serves whichever blocking caller finds it
 * free; everybody else pipelines. The same traps apply: a context that saw
 * any error (a timeout is an EAGAIN I/O error) is freed, never reused, and
 * a command whose outcome is unknown is not retried. */

static struct timeval tv_of(uint64_t ns) {
  if (ns < ADMIT_MILLISECOND) ns = ADMIT_MILLISECOND;
  struct timeval tv = {(time_t)(ns / 1000000000u),
                       (suseconds_t)(ns % 1000000000u / 1000u)};
  return tv;
}

static void direct_drop(admit_redis_t* r) {
  if (r->dctx != NULL) redisFree(r->dctx);
  r->dctx = NULL;
  r->d_retry_at = admit_now_ns() + r->reconnect_min;
}

/* Connects and authenticates within @p left ns; returns 0 or -1. */
static int direct_connect(admit_redis_t* r, uint64_t left) {
  struct timeval tv = tv_of(left);
  redisContext* ctx;
  if (r->url.is_unix) {
    ctx = redisConnectUnixWithTimeout(r->url.path, tv);
  } else {
    char ip[64];
    pthread_mutex_lock(&r->iplock);
    memcpy(ip, r->ip, sizeof(ip));
    pthread_mutex_unlock(&r->iplock);
    if (ip[0] == '\0') return -1;
    ctx = redisConnectWithTimeout(ip, r->url.port, tv);
  }
  if (ctx == NULL || ctx->err || redisSetTimeout(ctx, tv) != REDIS_OK) {
    if (ctx != NULL) redisFree(ctx);
    return -1;
  }
  redisReply* rep = NULL;
  int ok = 1;
  if (r->url.password != NULL) {
    rep = r->url.user != NULL
              ? redisCommand(ctx, "AUTH %s %s", r->url.user, r->url.password)
              : redisCommand(ctx, "AUTH %s", r->url.password);
    ok = rep != NULL && rep->type != REDIS_REPLY_ERROR;
    if (rep != NULL) freeReplyObject(rep);
  }
  if (ok && r->url.db != 0) {
    rep = redisCommand(ctx, "SELECT %d", r->url.db);
    ok = rep != NULL && rep->type != REDIS_REPLY_ERROR;
    if (rep != NULL) freeReplyObject(rep);
  }
  if (!ok) {
    redisFree(ctx);
    return -1;
  }
  r->dctx = ctx;
  r->d_timeout = left;
  return 0;
}

int admit__redis_direct(admit_redis_t* r, admit__rreq_t* q,
                        redisReply** reply, int* status) {
  *reply = NULL;
  if (r->pipeline_only || atomic_load(&r->connected) == 0 ||
      atomic_load(&r->stopping))
    return 0;
  if (pthread_mutex_trylock(&r->dlock) != 0) return 0;
  uint64_t now = admit_now_ns();
  if (now >= q->deadline_ns) {
    pthread_mutex_unlock(&r->dlock);
    return 0;
  }
  if (r->dctx == NULL &&
      (now < r->d_retry_at || direct_connect(r, q->deadline_ns - now) != 0)) {
    /* Nothing was sent: the I/O thread can still take it. */
    if (r->dctx == NULL && now >= r->d_retry_at)
      r->d_retry_at = now + r->reconnect_min;
    pthread_mutex_unlock(&r->dlock);
    return 0;
  }
  redisContext* ctx = r->dctx;
  redisReply* rep = NULL;
  int st = 0;
  for (;;) {
    now = admit_now_ns();
    if (now >= q->deadline_ns) {
      st = ADMIT_EUNAVAILABLE;
      break;
    }
    /* Calls mostly have the same timeout: skip the two setsockopt calls
     * unless it moved by more than a millisecond. */
    uint64_t left = q->deadline_ns - now;
    if (left + ADMIT_MILLISECOND < r->d_timeout ||
        left > r->d_timeout + ADMIT_MILLISECOND) {
      if (redisSetTimeout(ctx, tv_of(left)) != REDIS_OK) {
        st = ADMIT_EUNAVAILABLE;
        break;
      }
      r->d_timeout = left;
    }
    if (redisAppendFormattedCommand(ctx, q->cmd, q->len) != REDIS_OK) {
      st = ADMIT_EUNAVAILABLE;
      break;
    }
    COUNT(r, n_commands);
    void* out = NULL;
    if (redisGetReply(ctx, &out) != REDIS_OK || out == NULL) {
      /* Timed out (EAGAIN) or lost: the outcome is unknown. */
      if (ctx->err == REDIS_ERR_IO) COUNT(r, n_timeouts);
      st = ADMIT_EUNAVAILABLE;
      break;
    }
    COUNT(r, n_replies);
    rep = out;
    if (rep->type == REDIS_REPLY_ERROR && q->script >= 0 && q->reloads < 2 &&
        starts(rep->str, rep->len, "NOSCRIPT")) {
      /* Certainly not run: load the script, then send it again. */
      freeReplyObject(rep);
      rep = NULL;
      q->reloads++;
      COUNT(r, n_script_loads);
      const admit__script_t* s = &r->scripts[q->script];
      redisReply* lr = redisCommand(ctx, "SCRIPT LOAD %b", s->text, s->len);
      if (lr == NULL) {
        st = ADMIT_EUNAVAILABLE;
        break;
      }
      freeReplyObject(lr);
      continue;
    }
    break;
  }
  if (st < 0) {
    if (rep != NULL) freeReplyObject(rep);
    rep = NULL;
    COUNT(r, n_failures);
    direct_drop(r);
  }
  pthread_mutex_unlock(&r->dlock);
  *reply = rep;
  *status = st;
  return 1;
}

/* --- public ----------------------------------------------------------------*/

/* Wakes the I/O thread unless a wake-up is already on its way or a hold
 * defers it. Under qlock. Returns 1 if the caller must send it (after
 * unlocking). */
static int wake_needed(admit_redis_t* r, int may_hold) {
  if (r->qwoken || r->qhead == NULL || (may_hold && r->holds > 0)) return 0;
  r->qwoken = 1;
  return 1;
}

int admit_redis_hold(admit_redis_t* r) {
  if (r == NULL) return ADMIT_EINVAL;
  pthread_mutex_lock(&r->qlock);
  r->holds++;
  pthread_mutex_unlock(&r->qlock);
  return 0;
}

int admit_redis_release(admit_redis_t* r) {
  if (r == NULL) return ADMIT_EINVAL;
  pthread_mutex_lock(&r->qlock);
  if (r->holds == 0) {
    pthread_mutex_unlock(&r->qlock);
    return ADMIT_EINVAL;
  }
  r->holds--;
  int wake = wake_needed(r, 1);
  pthread_mutex_unlock(&r->qlock);
  if (wake) uv_async_send(&r->wake);
  return 0;
}

int admit__redis_submit(admit_redis_t* r, admit__rreq_t* q, int may_hold) {
  pthread_mutex_lock(&r->qlock);
  if (atomic_load(&r->stopping)) {
    pthread_mutex_unlock(&r->qlock);
    return ADMIT_ECLOSED;
  }
  if (atomic_load_explicit(&r->outstanding, memory_order_relaxed) >=
      r->max_queue) {
    pthread_mutex_unlock(&r->qlock);
    return ADMIT_EFULL;
  }
  atomic_fetch_add_explicit(&r->outstanding, 1, memory_order_relaxed);
  admit__rreq_ref(q);
  q->next = NULL;
  list_push(&r->qhead, &r->qtail, q);
  /* One wake-up per batch: the loop drains the whole queue. */
  int wake = wake_needed(r, may_hold);
  pthread_mutex_unlock(&r->qlock);
  if (wake) uv_async_send(&r->wake);
  return 0;
}

const char* admit__redis_prefix(const admit_redis_t* r, size_t* len) {
  if (len != NULL) *len = r->prefix_len;
  return r->prefix;
}

uint64_t admit__redis_command_timeout(const admit_redis_t* r) {
  return r->command_timeout;
}

uint32_t admit__redis_instances(const admit_redis_t* r) {
  uint32_t n = atomic_load(&((admit_redis_t*)r)->instances);
  return n ? n : 1;
}

const char* admit__redis_sha(const admit_redis_t* r, int id) {
  return r->scripts[id].sha;
}

void admit__redis_count_failure(admit_redis_t* r) { COUNT(r, n_failures); }

int admit__redis_breaker_allow(admit_redis_t* r, int* probe) {
  *probe = 0;
  int s = atomic_load(&r->bstate);
  if (s == B_CLOSED) return 1;
  if (s == B_OPEN && admit_now_ns() >= atomic_load(&r->bopen_until)) {
    int expected = B_OPEN;
    if (atomic_compare_exchange_strong(&r->bstate, &expected, B_HALF)) {
      *probe = 1;
      return 1;
    }
    if (expected == B_CLOSED) return 1;
  }
  COUNT(r, n_breaker_skips);
  return 0;
}

static void breaker_open(admit_redis_t* r) {
  atomic_store(&r->bopen_until, admit_now_ns() + r->breaker_cooldown);
  atomic_store(&r->bstate, B_OPEN);
  COUNT(r, n_breaker_trips);
}

void admit__redis_breaker_record(admit_redis_t* r, int ok, int probe) {
  if (ok) {
    if (atomic_load_explicit(&r->bfails, memory_order_relaxed) != 0)
      atomic_store(&r->bfails, 0);
    if (atomic_load_explicit(&r->bstate, memory_order_relaxed) != B_CLOSED)
      atomic_store(&r->bstate, B_CLOSED);
    return;
  }
  if (probe) {
    breaker_open(r);
    return;
  }
  uint32_t f = atomic_fetch_add(&r->bfails, 1) + 1;
  if (f >= r->breaker_failures) {
    int expected = B_CLOSED;
    if (atomic_compare_exchange_strong(&r->bstate, &expected, B_OPEN)) {
      atomic_store(&r->bopen_until, admit_now_ns() + r->breaker_cooldown);
      COUNT(r, n_breaker_trips);
    }
  }
}

static void make_instance_id(char out[33]) {
  unsigned char b[16];
  if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
    for (int i = 0; i < 16; i += 8) {
      uint64_t x = admit__random();
      memcpy(b + i, &x, 8);
    }
  }
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    out[2 * i] = hex[b[i] >> 4];
    out[2 * i + 1] = hex[b[i] & 15];
  }
  out[32] = '\0';
}

static int valid_prefix(const char* p) {
  size_t n = strlen(p);
  if (n == 0 || n > 128) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch == '{' || ch == '}' || ch < 0x21 || ch == 0x7f) return 0;
  }
  return 1;
}

static void redis_destroy(admit_redis_t* r) {
  if (r->dctx != NULL) redisFree(r->dctx);
  pthread_mutex_destroy(&r->dlock);
  pthread_mutex_destroy(&r->iplock);
  admit__redis_url_free(&r->url);
  pthread_mutex_destroy(&r->qlock);
  pthread_mutex_destroy(&r->first_lock);
  pthread_cond_destroy(&r->first_cond);
  admit__free(r->conns);
  admit__free(r);
}

int admit_redis_new(admit_redis_t** out, const admit_redis_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  admit_redis_options_t o;
  memset(&o, 0, sizeof(o));
  if (opts != NULL) o = *opts;
  const char* url = o.url;
  if (url == NULL) url = getenv("ADMIT_REDIS_URL");
  if (url == NULL || *url == '\0') url = "redis://localhost:6379/0";
  const char* prefix = o.prefix != NULL ? o.prefix : "admit";
  if (!valid_prefix(prefix)) return ADMIT_ECONFIG;
  if (o.connections > 64) return ADMIT_EINVAL;
  const admit__script_t* scripts = admit__scripts();
  if (scripts == NULL) return ADMIT_ECONFIG;

  admit_redis_t* r = admit__calloc(1, sizeof(*r));
  if (r == NULL) return ADMIT_ENOMEM;
  int rc = admit__redis_url_parse(&r->url, url);
  if (rc < 0) {
    admit__free(r);
    return rc;
  }
  r->scripts = scripts;
  r->prefix_len = strlen(prefix);
  memcpy(r->prefix, prefix, r->prefix_len + 1);
  r->connect_timeout = o.connect_timeout_ns ? o.connect_timeout_ns
                                            : (uint64_t)ADMIT_SECOND;
  r->command_timeout = o.command_timeout_ns ? o.command_timeout_ns
                                            : 250 * (uint64_t)ADMIT_MILLISECOND;
  r->nconns = o.connections ? o.connections : 1;
  r->breaker_failures = o.breaker_failures ? o.breaker_failures : 5;
  r->breaker_cooldown = o.breaker_cooldown_ns ? o.breaker_cooldown_ns
                                              : (uint64_t)ADMIT_SECOND;
  r->reconnect_min = o.reconnect_min_ns ? o.reconnect_min_ns
                                        : 50 * (uint64_t)ADMIT_MILLISECOND;
  r->reconnect_max = o.reconnect_max_ns ? o.reconnect_max_ns
                                        : 5 * (uint64_t)ADMIT_SECOND;
  if (r->reconnect_max < r->reconnect_min) r->reconnect_max = r->reconnect_min;
  r->heartbeat = o.heartbeat_ns ? o.heartbeat_ns : (uint64_t)ADMIT_SECOND;
  if (r->heartbeat < ADMIT_MILLISECOND) r->heartbeat = ADMIT_MILLISECOND;
  r->max_queue = o.max_queue ? o.max_queue : 65536;
  r->pipeline_only = o.pipeline_only != 0;
  make_instance_id(r->instance_id);
  snprintf(r->beat_key, sizeof(r->beat_key), "%s:{instances}", r->prefix);
  atomic_init(&r->instances, 1);
  pthread_mutex_init(&r->qlock, NULL);
  pthread_mutex_init(&r->dlock, NULL);
  pthread_mutex_init(&r->iplock, NULL);
  pthread_mutex_init(&r->first_lock, NULL);
  pthread_cond_init(&r->first_cond, NULL);
  r->conns = admit__calloc(r->nconns, sizeof(conn_t));
  if (r->conns == NULL) {
    redis_destroy(r);
    return ADMIT_ENOMEM;
  }
  if (uv_loop_init(&r->loop) != 0) {
    redis_destroy(r);
    return ADMIT_ESYS;
  }
  uv_async_init(&r->loop, &r->wake, on_wake);
  r->wake.data = r;
  uv_timer_init(&r->loop, &r->tick);
  r->tick.data = r;
  uv_timer_init(&r->loop, &r->beat);
  r->beat.data = r;
  for (uint32_t i = 0; i < r->nconns; i++) {
    conn_t* c = &r->conns[i];
    c->r = r;
    uv_timer_init(&r->loop, &c->timer);
    c->timer.data = c;
  }
  if (uv_thread_create(&r->thread, io_main, r) != 0) {
    uv_close((uv_handle_t*)&r->wake, NULL);
    uv_close((uv_handle_t*)&r->tick, NULL);
    uv_close((uv_handle_t*)&r->beat, NULL);
    for (uint32_t i = 0; i < r->nconns; i++)
      uv_close((uv_handle_t*)&r->conns[i].timer, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_loop_close(&r->loop);
    redis_destroy(r);
    return ADMIT_ESYS;
  }

  /* Wait for the first attempt so a wrong password or database is
   * reported here, not as a stream of failures later. */
  uint64_t deadline = admit_now_ns() + r->connect_timeout +
                      100 * (uint64_t)ADMIT_MILLISECOND;
  pthread_mutex_lock(&r->first_lock);
  while (!r->first_done && admit_now_ns() < deadline) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 10 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&r->first_cond, &r->first_lock, &ts);
  }
  int first = r->first_done ? r->first_status : 0;
  pthread_mutex_unlock(&r->first_lock);
  if (first == ADMIT_ECONFIG) {
    admit_redis_free(r);
    return ADMIT_ECONFIG;
  }
  *out = r;
  return 0;
}

static void leave(admit_redis_t* r) {
  if (atomic_load(&r->connected) == 0) return;
  const char* argv[8];
  size_t lens[8];
  char ttl[24];
  int argc = beat_argv(r, "leave", argv, lens, ttl);
  /* Best effort: the entry would lapse by itself within three periods. */
  admit__rcall_simple(r, argc, argv, lens, ADMIT__SCRIPT_BEAT,
                      100 * (uint64_t)ADMIT_MILLISECOND, NULL);
}

void admit_redis_free(admit_redis_t* r) {
  if (r == NULL) return;
  leave(r);
  pthread_mutex_lock(&r->qlock);
  atomic_store(&r->stopping, 1);
  pthread_mutex_unlock(&r->qlock);
  uv_async_send(&r->wake);
  uv_thread_join(&r->thread);
  /* Handles are closed; let close callbacks and resolutions finish. */
  while (uv_loop_close(&r->loop) == UV_EBUSY)
    uv_run(&r->loop, UV_RUN_DEFAULT);
  redis_destroy(r);
}

int admit_redis_ping(admit_redis_t* r, uint64_t timeout_ns) {
  if (r == NULL) return ADMIT_EINVAL;
  const char* argv[1] = {"PING"};
  size_t lens[1] = {4};
  return admit__rcall_simple(r, 1, argv, lens, -1, timeout_ns, NULL);
}

int admit_redis_stats(admit_redis_t* r, admit_redis_stats_t* out) {
  if (r == NULL || out == NULL) return ADMIT_EINVAL;
  memset(out, 0, sizeof(*out));
  out->connected = atomic_load(&r->connected);
  out->breaker = (uint32_t)atomic_load(&r->bstate);
  out->instances = admit__redis_instances(r);
  out->last_error = atomic_load(&r->last_error);
  out->commands = LOAD(r, n_commands);
  out->replies = LOAD(r, n_replies);
  out->timeouts = LOAD(r, n_timeouts);
  out->failures = LOAD(r, n_failures);
  out->connects = LOAD(r, n_connects);
  out->connect_errors = LOAD(r, n_connect_errors);
  out->disconnects = LOAD(r, n_disconnects);
  out->script_loads = LOAD(r, n_script_loads);
  out->breaker_trips = LOAD(r, n_breaker_trips);
  out->breaker_skips = LOAD(r, n_breaker_skips);
  return 0;
}
