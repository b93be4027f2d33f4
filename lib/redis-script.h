/* The Lua scripts of the Redis limiter, embedded at build time from
 * lib/lua/ by tools/embed-lua.sh into $(O)/gen/redis-lua.c. Internal. */
#ifndef ADMIT_REDIS_SCRIPT_H
#define ADMIT_REDIS_SCRIPT_H

#include "internal.h"

/* Script ids, in the order mk/redis.mk passes them to the generator
 * (checked by name at start-up). */
typedef enum admit__script_id_e {
  ADMIT__SCRIPT_LIMIT = 0, /* lib/lua/limit.lua: limiter decisions */
  ADMIT__SCRIPT_SEM = 1,   /* lib/lua/sem.lua: leases (+ rate) */
  ADMIT__SCRIPT_BEAT = 2,  /* lib/lua/beat.lua: instance heartbeat */
  ADMIT__SCRIPT_COUNT = 3
} admit__script_id_t;

/* One embedded script, as generated: the prelude lib/lua/_lib.lua
 * followed by the script itself. */
typedef struct admit__script_src_s {
  const char* name; /* file name without ".lua" */
  const char* text; /* NUL-terminated */
  size_t len;       /* bytes, without the NUL */
} admit__script_src_t;

/* Generated. */
extern const admit__script_src_t admit__script_srcs[];
extern const size_t admit__script_nsrcs;

/* A script ready for EVALSHA. */
typedef struct admit__script_s {
  const char* text;
  size_t len;
  char sha[41]; /* lowercase hex SHA-1 of text */
} admit__script_t;

/* Returns the script table (hashes computed once, thread-safe), or NULL if
 * the generated table does not match the ids above. */
const admit__script_t* admit__scripts(void);

/* Writes the lowercase hex SHA-1 of @p data into @p out. */
void admit__sha1_hex(const void* data, size_t len, char out[41]);

#endif /* ADMIT_REDIS_SCRIPT_H */
