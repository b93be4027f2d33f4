/* The Redis connection: an I/O thread that pipelines requests over a few
 * hiredis async contexts, with deadlines, reconnection and a backend
 * breaker. Internal. */
#ifndef ADMIT_REDIS_CONN_H
#define ADMIT_REDIS_CONN_H

#include "internal.h"
#include "redis-script.h"

struct redisReply;
typedef struct admit__rreq_s admit__rreq_t;

/* Called exactly once per submitted request, on the I/O thread, with 0 and
 * the reply, or a negative status (reply NULL): ADMIT_EUNAVAILABLE (no
 * connection, timed out, connection lost: the command may or may not have
 * run), ADMIT_ECONFIG (handshake refused), ADMIT_ECLOSED (shutting down).
 * Error replies arrive as status 0 with a REDIS_REPLY_ERROR reply, except
 * NOSCRIPT, which the connection handles by reloading the script. */
typedef void (*admit__rreq_done_fn)(admit__rreq_t* q, int status,
                                    struct redisReply* reply);

/* Builds one request that carries @p n (2 .. ADMIT__RBATCH_MAX) requests
 * queued together with the same batch tag, with admit__rbatch_new(); or
 * returns NULL, and they are sent one by one. On the I/O thread. */
typedef admit__rreq_t* (*admit__rreq_merge_fn)(admit__rreq_t* const* members,
                                                int n);

/* A request. Allocated by its submitter with admit__rreq_new() (the RESP
 * command lives in the same block) and reference-counted: the connection
 * holds one reference from submission until it has no more use for it. */
struct admit__rreq_s {
  admit__rreq_t* next;      /* I/O thread lists */
  admit__rreq_done_fn done; /* see above */
  void (*dtor)(admit__rreq_t* q); /* before the memory is freed; or NULL */
  _Atomic int refs;
  int script;               /* admit__script_id_t to reload, or -1 */
  int reloads;              /* NOSCRIPT reloads so far */
  int completed;            /* I/O thread: done() was called */
  int skip;                 /* 1: complete with ADMIT_EUNAVAILABLE without
                               touching Redis (breaker open) */
  void* conn;               /* I/O thread: the connection it was sent on */
  uint64_t deadline_ns;     /* admit_now_ns() time at which it fails */
  uint64_t sent_ns;         /* when it was written, or 0 */
  char* cmd;                /* RESP bytes */
  size_t len;
  /* Requests queued together with the same non-NULL tag may be merged
   * into one command by merge() (a limiter's tries: one script call). */
  const void* batch_tag;
  admit__rreq_merge_fn merge;
  int carrier;              /* 1: a merged request (admit__rbatch_new) */
};

/* The most requests one merged command carries. */
#define ADMIT__RBATCH_MAX 64

/* Allocates a request of @p size bytes (at least sizeof(admit__rreq_t),
 * zeroed; a caller's struct may embed the request first) followed by the
 * RESP encoding of argv. One reference is held. Returns NULL on ENOMEM. */
admit__rreq_t* admit__rreq_new(size_t size, int argc, const char* const* argv,
                               const size_t* lens);

/* A request carrying @p members (the connection's references to them pass
 * to it) as the one command argv: its reply must be an array with one
 * element per member, in order, each completing its member as if it had
 * been that member's own reply; an error reply or a failure completes
 * every member with it. Its deadline is the earliest of theirs. Returns
 * NULL on ENOMEM (the members are untouched). */
admit__rreq_t* admit__rbatch_new(admit_redis_t* r,
                                 admit__rreq_t* const* members, int n,
                                 int argc, const char* const* argv,
                                 const size_t* lens);

void admit__rreq_ref(admit__rreq_t* q);
void admit__rreq_unref(admit__rreq_t* q);

/* Queues @p q for the I/O thread. On success the connection takes its own
 * reference and done() will be called once; returns 0. Otherwise returns
 * ADMIT_ECLOSED or ADMIT_EFULL and done() is never called. With @p may_hold
 * (an asynchronous call), the I/O thread is not woken while this thread
 * holds @p r (admit_redis_hold). */
int admit__redis_submit(admit_redis_t* r, admit__rreq_t* q, int may_hold);

/* Runs @p q on the spare synchronous connection if it is free and usable,
 * in the calling thread, within q->deadline_ns. Returns 1 if it ran, with
 * *status 0 and *reply set (free it with freeReplyObject) or *status < 0
 * (ADMIT_EUNAVAILABLE: outcome unknown); returns 0 if the caller should
 * queue @p q to the I/O thread instead (nothing was sent). */
int admit__redis_direct(admit_redis_t* r, admit__rreq_t* q,
                        struct redisReply** reply, int* status);

/* The key prefix (NUL-terminated) and its length. */
const char* admit__redis_prefix(const admit_redis_t* r, size_t* len);

/* The configured command timeout. */
uint64_t admit__redis_command_timeout(const admit_redis_t* r);

/* The live-instance count last seen by the heartbeat (at least 1). */
uint32_t admit__redis_instances(const admit_redis_t* r);

/* The SHA-1 hex of script @p id. */
const char* admit__redis_sha(const admit_redis_t* r, int id);

/* The backend breaker. allow() returns 1 if a call may go to Redis (in
 * half-open state only one probe at a time may, and *probe is set to 1),
 * else 0 and counts a skip. record() reports the outcome of a call that
 * went: ok = 1 (Redis answered), 0 (it could not). */
int admit__redis_breaker_allow(admit_redis_t* r, int* probe);
void admit__redis_breaker_record(admit_redis_t* r, int ok, int probe);

/* Counts a call that failed for want of Redis (stats). */
void admit__redis_count_failure(admit_redis_t* r);

/* Classifies an error reply: ADMIT_ECONFIG for authentication, ACL and
 * type errors, ADMIT_EUNAVAILABLE for a busy or loading server,
 * ADMIT_EPROTO otherwise. */
int admit__redis_error_status(const char* msg, size_t len);

#endif /* ADMIT_REDIS_CONN_H */
