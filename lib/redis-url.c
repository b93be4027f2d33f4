/* Parsing Redis connection URLs.
 *
 * Accepted forms (scheme case-insensitive):
 *   redis://[[user]:password@]host[:port][/db][?query]
 *   unix://[[user]:password@]/path/to.sock[?query]
 * where query is db=N, user=NAME or password=SECRET joined by '&'. User,
 * password, path and query values are percent-decoded. Anything else,
 * including rediss:// (TLS is not built in), is a configuration error:
 * a URL that cannot be understood must never be half-used. */
#include "redis-url.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes @p len bytes at @p s into a new string. A NUL byte, a control
 * character or a bad escape is an error. */
static int decode(const char* s, size_t len, char** out) {
  char* d = admit__malloc(len + 1);
  if (d == NULL) return ADMIT_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      if (i + 2 >= len) {
        admit__free(d);
        return ADMIT_ECONFIG;
      }
      int a = hexval((unsigned char)s[i + 1]);
      int b = hexval((unsigned char)s[i + 2]);
      if (a < 0 || b < 0) {
        admit__free(d);
        return ADMIT_ECONFIG;
      }
      c = a * 16 + b;
      i += 2;
    }
    if (c == 0 || c < 0x20 || c == 0x7f) {
      admit__free(d);
      return ADMIT_ECONFIG;
    }
    d[n++] = (char)c;
  }
  d[n] = '\0';
  *out = d;
  return 0;
}

/* Parses a decimal number of @p len bytes in [lo, hi]. */
static int parse_num(const char* s, size_t len, long lo, long hi, int* out) {
  if (len == 0 || len > 10) return ADMIT_ECONFIG;
  long v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return ADMIT_ECONFIG;
    v = v * 10 + (s[i] - '0');
  }
  if (v < lo || v > hi) return ADMIT_ECONFIG;
  *out = (int)v;
  return 0;
}

/* Splits "user:password" (either part may be empty; no colon means only
 * a user, as in redis-py). */
static int parse_userinfo(admit__redis_url_t* u, const char* s, size_t len) {
  const char* colon = memchr(s, ':', len);
  size_t ulen = colon != NULL ? (size_t)(colon - s) : len;
  int rc;
  if (ulen > 0 && (rc = decode(s, ulen, &u->user)) < 0) return rc;
  if (colon != NULL) {
    size_t plen = len - ulen - 1;
    if ((rc = decode(colon + 1, plen, &u->password)) < 0) return rc;
  }
  return 0;
}

static int parse_query(admit__redis_url_t* u, const char* s, int* have_db) {
  while (*s != '\0') {
    const char* end = strchr(s, '&');
    size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
    const char* eq = memchr(s, '=', len);
    if (eq == NULL) return ADMIT_ECONFIG;
    size_t klen = (size_t)(eq - s);
    const char* v = eq + 1;
    size_t vlen = len - klen - 1;
    int rc;
    if (klen == 2 && memcmp(s, "db", 2) == 0) {
      if (*have_db) return ADMIT_ECONFIG;
      if ((rc = parse_num(v, vlen, 0, INT_MAX, &u->db)) < 0) return rc;
      *have_db = 1;
    } else if ((klen == 4 && memcmp(s, "user", 4) == 0) ||
               (klen == 8 && memcmp(s, "username", 8) == 0)) {
      if (u->user != NULL) return ADMIT_ECONFIG;
      if ((rc = decode(v, vlen, &u->user)) < 0) return rc;
    } else if (klen == 8 && memcmp(s, "password", 8) == 0) {
      if (u->password != NULL) return ADMIT_ECONFIG;
      if ((rc = decode(v, vlen, &u->password)) < 0) return rc;
    } else {
      /* An unknown parameter may be a setting the user relies on. */
      return ADMIT_ECONFIG;
    }
    if (end == NULL) break;
    s = end + 1;
    if (*s == '\0') return ADMIT_ECONFIG;
  }
  return 0;
}

static int valid_host_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static int parse_tcp(admit__redis_url_t* u, const char* p) {
  /* The authority ends at the first '/' or '?'. */
  size_t alen = strcspn(p, "/?");
  const char* rest = p + alen;
  const char* at = NULL;
  for (size_t i = 0; i < alen; i++)
    if (p[i] == '@') at = p + i;
  int rc;
  const char* host = p;
  if (at != NULL) {
    if ((rc = parse_userinfo(u, p, (size_t)(at - p))) < 0) return rc;
    host = at + 1;
  }
  size_t hlen = (size_t)(rest - host);
  const char* port = NULL;
  size_t portlen = 0;
  const char* h = host;
  size_t nlen;
  if (hlen > 0 && host[0] == '[') {
    const char* close = memchr(host, ']', hlen);
    if (close == NULL || close == host + 1) return ADMIT_ECONFIG;
    h = host + 1;
    nlen = (size_t)(close - h);
    for (size_t i = 0; i < nlen; i++) {
      int c = (unsigned char)h[i];
      if (!(hexval(c) >= 0 || c == ':' || c == '.')) return ADMIT_ECONFIG;
    }
    const char* after = close + 1;
    if (after < rest) {
      if (*after != ':') return ADMIT_ECONFIG;
      port = after + 1;
      portlen = (size_t)(rest - port);
    }
  } else {
    const char* colon = memchr(host, ':', hlen);
    nlen = colon != NULL ? (size_t)(colon - host) : hlen;
    if (colon != NULL) {
      port = colon + 1;
      portlen = (size_t)(rest - port);
    }
    for (size_t i = 0; i < nlen; i++)
      if (!valid_host_char((unsigned char)h[i])) return ADMIT_ECONFIG;
  }
  if (nlen == 0) {
    if (port != NULL) return ADMIT_ECONFIG;
    h = "localhost";
    nlen = 9;
  }
  u->host = admit__malloc(nlen + 1);
  if (u->host == NULL) return ADMIT_ENOMEM;
  memcpy(u->host, h, nlen);
  u->host[nlen] = '\0';
  u->port = 6379;
  if (port != NULL && (rc = parse_num(port, portlen, 1, 65535, &u->port)) < 0)
    return rc;
  int have_db = 0;
  if (*rest == '/') {
    rest++;
    size_t dlen = strcspn(rest, "?");
    if (dlen > 0) {
      if ((rc = parse_num(rest, dlen, 0, INT_MAX, &u->db)) < 0) return rc;
      have_db = 1;
    }
    rest += dlen;
  }
  if (*rest == '?') return parse_query(u, rest + 1, &have_db);
  return *rest == '\0' ? 0 : ADMIT_ECONFIG;
}

static int parse_unix(admit__redis_url_t* u, const char* p) {
  int rc;
  const char* slash = strchr(p, '/');
  if (slash == NULL) return ADMIT_ECONFIG;
  if (slash != p) {
    /* Only userinfo may come before the path: "user:pass@/path". */
    if (slash[-1] != '@') return ADMIT_ECONFIG;
    if ((rc = parse_userinfo(u, p, (size_t)(slash - 1 - p))) < 0) return rc;
  }
  size_t plen = strcspn(slash, "?");
  if (plen < 2) return ADMIT_ECONFIG; /* "/" alone is no socket */
  if ((rc = decode(slash, plen, &u->path)) < 0) return rc;
  u->is_unix = 1;
  int have_db = 0;
  const char* rest = slash + plen;
  if (*rest == '?') return parse_query(u, rest + 1, &have_db);
  return 0;
}

int admit__redis_url_parse(admit__redis_url_t* u, const char* url) {
  if (u == NULL) return ADMIT_EINVAL;
  memset(u, 0, sizeof(*u));
  if (url == NULL) return ADMIT_ECONFIG;
  int rc;
  if (strncasecmp(url, "redis://", 8) == 0)
    rc = parse_tcp(u, url + 8);
  else if (strncasecmp(url, "unix://", 7) == 0)
    rc = parse_unix(u, url + 7);
  else
    rc = ADMIT_ECONFIG; /* includes rediss:// : no TLS */
  if (rc < 0) admit__redis_url_free(u);
  return rc;
}

void admit__redis_url_free(admit__redis_url_t* u) {
  if (u == NULL) return;
  admit__free(u->host);
  admit__free(u->path);
  admit__free(u->user);
  if (u->password != NULL) {
    /* Do not leave the secret lying in freed memory. */
    volatile char* v = u->password;
    while (*v != '\0') *v++ = '\0';
  }
  admit__free(u->password);
  memset(u, 0, sizeof(*u));
}
