/* libFuzzer target for the Redis URL parser (lib/redis-url.c).
 *
 * Feeds arbitrary bytes (as a NUL-terminated copy) to
 * admit__redis_url_parse() and checks its contract: it never crashes; it
 * rejects with ADMIT_ECONFIG (or ADMIT_EINVAL) and leaves the result
 * zeroed; or it accepts a redis:// or unix:// URL whose fields are within
 * bounds (a host of host characters or an IPv6 address, a port in
 * 1..65535, an absolute socket path, a database in 0..INT_MAX, no control
 * characters anywhere), and a canonical URL written back from those fields
 * parses to exactly the same fields. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "redis-url.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static int zeroed(const admit__redis_url_t* u) {
  return u->is_unix == 0 && u->host == NULL && u->port == 0 &&
         u->path == NULL && u->user == NULL && u->password == NULL &&
         u->db == 0;
}

/* A decoded string: at most @p max bytes, none a control character. */
static void check_text(const char* s, size_t max) {
  if (s == NULL) return;
  size_t n = strlen(s);
  if (n > max) abort();
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) abort();
  }
}

static int host_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static int hex_char(int c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

static void check_fields(const admit__redis_url_t* u, const char* url,
                         size_t len) {
  if (u->is_unix != 0 && u->is_unix != 1) abort();
  if (u->db < 0) abort();
  check_text(u->user, len);
  check_text(u->password, len);
  if (u->is_unix) {
    if (strncasecmp(url, "unix://", 7) != 0) abort();
    if (u->host != NULL || u->port != 0 || u->path == NULL) abort();
    check_text(u->path, len);
    if (u->path[0] != '/' || strlen(u->path) < 2) abort();
    return;
  }
  if (strncasecmp(url, "redis://", 8) != 0) abort();
  if (u->path != NULL || u->host == NULL) abort();
  if (u->port < 1 || u->port > 65535) abort();
  size_t hlen = strlen(u->host);
  if (hlen == 0 || (hlen > len && strcmp(u->host, "localhost") != 0)) abort();
  /* A name, or what was inside IPv6 brackets. */
  int name = 1, ipv6 = 1;
  for (size_t i = 0; i < hlen; i++) {
    int c = (unsigned char)u->host[i];
    if (!host_char(c)) name = 0;
    if (!(hex_char(c) || c == ':' || c == '.')) ipv6 = 0;
  }
  if (!name && !ipv6) abort();
}

/* Appends @p s percent-encoded (all but unreserved characters, and '/'
 * when @p keep_slash) to @p out at *n, within @p cap. */
static void put_enc(char* out, size_t* n, size_t cap, const char* s,
                    int keep_slash) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                c == '_' || c == '~' || (keep_slash && c == '/');
    if (*n + 4 > cap) abort();
    if (plain) {
      out[(*n)++] = (char)c;
    } else {
      out[(*n)++] = '%';
      out[(*n)++] = hex[c >> 4];
      out[(*n)++] = hex[c & 15];
    }
  }
  out[*n] = '\0';
}

static void put(char* out, size_t* n, size_t cap, const char* s) {
  size_t l = strlen(s);
  if (*n + l + 1 > cap) abort();
  memcpy(out + *n, s, l + 1);
  *n += l;
}

static int same(const char* a, const char* b) {
  if (a == NULL || b == NULL) return a == b;
  return strcmp(a, b) == 0;
}

/* Writes @p u back as a canonical URL (user and password as query
 * parameters, so that empty ones survive) and checks it parses to the same
 * fields. */
static void check_round_trip(const admit__redis_url_t* u, size_t len) {
  size_t cap = 9 * len + 128;
  char* out = malloc(cap);
  if (out == NULL) return;
  size_t n = 0;
  char num[32];
  if (u->is_unix) {
    put(out, &n, cap, "unix://");
    put_enc(out, &n, cap, u->path, 1);
  } else {
    put(out, &n, cap, "redis://");
    int v6 = strchr(u->host, ':') != NULL;
    if (v6) put(out, &n, cap, "[");
    put(out, &n, cap, u->host);
    if (v6) put(out, &n, cap, "]");
    snprintf(num, sizeof(num), ":%d", u->port);
    put(out, &n, cap, num);
  }
  snprintf(num, sizeof(num), "?db=%d", u->db);
  put(out, &n, cap, num);
  if (u->user != NULL) {
    put(out, &n, cap, "&user=");
    put_enc(out, &n, cap, u->user, 0);
  }
  if (u->password != NULL) {
    put(out, &n, cap, "&password=");
    put_enc(out, &n, cap, u->password, 0);
  }
  admit__redis_url_t v;
  int rc = admit__redis_url_parse(&v, out);
  if (rc != 0) {
    fprintf(stderr, "canonical form rejected (%d): %s\n", rc, out);
    abort();
  }
  if (v.is_unix != u->is_unix || !same(v.host, u->host) ||
      v.port != u->port || !same(v.path, u->path) ||
      !same(v.user, u->user) || !same(v.password, u->password) ||
      v.db != u->db) {
    fprintf(stderr, "canonical form differs: %s\n", out);
    abort();
  }
  admit__redis_url_free(&v);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char* url = malloc(size + 1);
  if (url == NULL) return 0;
  memcpy(url, data, size);
  url[size] = '\0';
  size_t len = strlen(url); /* the input may hold NULs */

  admit__redis_url_t u;
  memset(&u, 0xa5, sizeof(u));
  int rc = admit__redis_url_parse(&u, url);
  if (rc == ADMIT_ECONFIG || rc == ADMIT_EINVAL) {
    if (!zeroed(&u)) abort();
  } else if (rc == 0) {
    check_fields(&u, url, len);
    check_round_trip(&u, len);
  } else {
    abort();
  }
  admit__redis_url_free(&u);
  if (!zeroed(&u)) abort();
  /* Freeing twice (a zeroed struct) and NULL are no-ops. */
  admit__redis_url_free(&u);
  admit__redis_url_free(NULL);
  if (admit__redis_url_parse(NULL, url) != ADMIT_EINVAL) abort();
  free(url);
  return 0;
}
