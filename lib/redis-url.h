/* Redis connection URLs: redis://[user:password@]host[:port][/db][?db=N]
 * and unix://[user:password@]/path/to.sock[?db=N]. Internal. */
#ifndef ADMIT_REDIS_URL_H
#define ADMIT_REDIS_URL_H

#include "internal.h"

/* The URL used when neither the options nor ADMIT_REDIS_URL give one. */
#define ADMIT__REDIS_DEFAULT_URL "redis://localhost:6379/0"

/* A parsed URL. Strings are owned (admit__malloc) and NUL-terminated. */
typedef struct admit__redis_url_s {
  int is_unix;    /* 1: connect to path; 0: to host:port */
  char* host;     /* TCP host, IPv6 brackets removed */
  int port;       /* TCP port, 1..65535 */
  char* path;     /* unix socket path */
  char* user;     /* ACL user, or NULL */
  char* password; /* password, or NULL (may be empty: "redis://:@h") */
  int db;         /* database index, 0..INT32_MAX */
} admit__redis_url_t;

/* Parses @p url into @p u (zeroed first). Returns 0, ADMIT_ECONFIG for a
 * malformed or unsupported URL (nothing to free then) or ADMIT_ENOMEM. */
int admit__redis_url_parse(admit__redis_url_t* u, const char* url);

/* Frees the strings of @p u and zeroes it. Safe on a zeroed struct. */
void admit__redis_url_free(admit__redis_url_t* u);

#endif /* ADMIT_REDIS_URL_H */
