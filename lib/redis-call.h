/* Calls: a request plus how its answer is parsed and delivered (blocking,
 * a callback on the I/O thread, or a callback on a caller's libuv loop).
 * Internal. */
#ifndef ADMIT_REDIS_CALL_H
#define ADMIT_REDIS_CALL_H

#include <pthread.h>

#include "redis-conn.h"

typedef struct admit__rcall_s admit__rcall_t;

/* Parses a reply (never NULL; may be an error reply) into the call, on the
 * I/O thread. Returns the status (0 or a negative code). */
typedef int (*admit__rcall_parse_fn)(admit__rcall_t* c,
                                     struct redisReply* reply);

/* Finishes a call where it is delivered (the blocking caller's thread, the
 * I/O thread for callbacks, the loop thread for uv calls): e.g. applies a
 * failure policy. Returns the final status. */
typedef int (*admit__rcall_finish_fn)(admit__rcall_t* c, int status);

enum admit__rcall_mode_e {
  ADMIT__RCALL_BLOCK = 0,
  ADMIT__RCALL_CB = 1,
  ADMIT__RCALL_UV = 2
};

struct admit__rcall_s {
  admit__rreq_t req; /* first: the connection sees only this */
  admit_redis_t* r;
  admit__rcall_parse_fn parse;   /* NULL: any non-error reply is 0 */
  admit__rcall_finish_fn finish; /* or NULL */
  void* owner;                   /* for parse/finish */
  int use_breaker;               /* consult and feed the breaker */
  int probe;                     /* this call is the breaker's probe */
  int mode;
  int status;

  /* Results. */
  admit_decision_t d;
  uint64_t now_ns;   /* server time of the decision (Unix ns) */
  uint64_t extra_ns; /* pause end, lease expiry */
  uint64_t held;     /* semaphore: leases held */
  long long integer; /* integer replies */
  int flag;          /* renew: still held */

  /* Arguments a finish function may need (the key is copied after the
   * struct). */
  uint64_t cost;
  uint64_t aux;
  const char* key;
  size_t keylen;

  /* Blocking delivery. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int finished;
  int abandoned;

  /* Asynchronous delivery: cb, or done_cb (with extra_ns) if set. */
  admit_redis_decision_cb cb;
  admit_redis_done_cb done_cb;
  void* ud;
  admit_redis_loop_t* loop;
  admit__rcall_t* loop_next;
};

/* Allocates a call for argv (RESP-encoded in the same block), copying
 * @p key (may be NULL). Returns NULL on ENOMEM. */
admit__rcall_t* admit__rcall_new(admit_redis_t* r, int argc,
                                 const char* const* argv, const size_t* lens,
                                 const void* key, size_t keylen);

/* Runs @p c and waits at most @p timeout_ns (clamped to the command
 * timeout) for it. Returns the final status (after finish). The caller
 * still owns its reference (admit__rreq_unref(&c->req) when done). */
int admit__rcall_run(admit__rcall_t* c, uint64_t timeout_ns);

/* Starts @p c and returns at once: 0 (the callback will run once) or a
 * negative code (it will not). Consumes the caller's reference either way.
 * @p loop is required for ADMIT__RCALL_UV and must be called on its
 * thread. With c->done_cb set, @p cb is ignored (may be NULL). */
int admit__rcall_start(admit__rcall_t* c, int mode, admit_redis_loop_t* loop,
                       admit_redis_decision_cb cb, void* ud);

/* Runs a command and returns 0 (any non-error reply; integers copied to
 * @p integer if not NULL) or a negative code. No breaker. */
int admit__rcall_simple(admit_redis_t* r, int argc, const char* const* argv,
                        const size_t* lens, int script, uint64_t timeout_ns,
                        long long* integer);

/* Parses a limit.lua/sem.lua decision reply (elements 1-6 the decision,
 * 7-8 the server time as seconds and nanoseconds) into c->d, c->now_ns
 * and (element 9, if a string) c->extra_ns, (element 10) c->held. */
int admit__rcall_parse_decision(admit__rcall_t* c, struct redisReply* reply);

/* Parses a decimal string of at most 20 digits into @p out. */
int admit__parse_u64(const char* s, size_t len, uint64_t* out);

#endif /* ADMIT_REDIS_CALL_H */
