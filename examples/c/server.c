/* A small HTTP service on libuv that embeds admit: what a C newcomer needs
 * to see. One event loop, one thread, and nothing on it ever blocks.
 *
 *   GET /health    liveness, always 200
 *   GET /ready     readiness (admit_health_check), 200 or 503
 *   GET /metrics   Prometheus text (admit_health_render_metrics)
 *   GET|POST /hello   per-client limit (429), then admission (503)
 *   GET|POST /vendor  the same, then an outbound call under a guard
 *
 * The "vendor" is simulated: a libuv timer of VENDOR_LATENCY_MS stands for
 * the network call, so the example needs no second program. The guard in
 * front of it is real: local limiter, optional Redis global limiter
 * (ADMIT_REDIS_URL), semaphore, queue timeout and call timeout, driven by
 * its non-blocking step API. See README.md for the settings. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <admit.h>
#include <uv.h>

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { BUF_SIZE = 16384, KEY_MAX = 64 };
typedef enum { C_READ, C_ADMISSION, C_GUARD, C_CALL, C_WRITE } state_t;
typedef struct conn_s conn_t;

typedef struct server_s {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_signal_t sigterm, sigint;
  uv_timer_t sweep, drain;
  admit_quota_t client_quota;
  admit_keyed_t* clients;          /* per-client limits */
  admit_admission_t* admission;    /* max in flight + backlog */
  admit_limiter_t* vendor_local;   /* guard stage: local smoothing */
  admit_semaphore_t* vendor_sem;   /* guard stage: concurrent calls */
  admit_redis_t* redis;            /* NULL without ADMIT_REDIS_URL */
  admit_redis_limiter_t* vendor_global; /* guard stage: shared quota */
  admit_guard_t* vendor;
  admit_health_t* health;
  uint64_t latency_ns, queue_timeout_ns;
  uint64_t limited;                /* 429 answers */
  conn_t* conns;                   /* open connections */
  int draining;
} server_t;

struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;    /* guard waits, then the simulated call */
  uv_async_t wake;     /* "step me": admission and guard callbacks */
  server_t* srv;
  conn_t *prev, *next;
  state_t state;
  int closing, handles;
  char buf[BUF_SIZE + 1];
  size_t len, req_len; /* bytes received; bytes of the current request */
  char method[8], path[256], client[KEY_MAX], peer[KEY_MAX];
  size_t body_len;
  int keep_alive;
  char limit_headers[160]; /* RateLimit-* of this request, if checked */
  admit_admission_permit_t adm;
  int adm_held;
  atomic_int adm_done; /* set by the admission callback */
  admit_guard_permit_t gp;
  uint64_t t_start, t_admitted;
  int call_times_out;  /* the simulated call outlasts its budget */
  uv_write_t wr;
  char* out;
};

static uint64_t env_u64(const char* name, uint64_t def) {
  const char* v = getenv(name);
  return v != NULL && *v != '\0' ? strtoull(v, NULL, 10) : def;
}

static const char* env_str(const char* name, const char* def) {
  const char* v = getenv(name);
  return v != NULL && *v != '\0' ? v : def;
}

/* Whole seconds, rounded up, at least 1: a client that waits that long
 * fits (Retry-After). */
static unsigned long long ceil_s(uint64_t ns) {
  unsigned long long s = ns / ADMIT_SECOND + (ns % ADMIT_SECOND != 0);
  return s < 1 ? 1 : s;
}

static uint64_t ceil_ms(uint64_t ns) {
  return ns / ADMIT_MILLISECOND + (ns % ADMIT_MILLISECOND != 0);
}

/* --- connections ------------------------------------------------------- */

static void on_handle_closed(uv_handle_t* h) {
  conn_t* c = h->data;
  if (--c->handles == 0) free(c);
}

/* Gives back whatever the request holds, then closes the connection. */
static void conn_close(conn_t* c) {
  server_t* s = c->srv;
  if (c->closing) return;
  c->closing = 1;
  if (c->state == C_ADMISSION &&
      admit_admission_cancel(s->admission, &c->adm) == 0 &&
      c->adm.status == 0)
    c->adm_held = 1; /* admitted just now: leave below */
  /* Cancel gives back every stage's hold exactly once, and after it no
   * notify can come (with Redis, a refund is one bounded round trip). */
  if (c->state == C_GUARD || c->state == C_CALL) admit_guard_cancel(&c->gp);
  if (c->adm_held) admit_admission_leave(s->admission, &c->adm,
                                         ADMIT_OUTCOME_CANCELLED);
  if (c->prev != NULL) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  uv_close((uv_handle_t*)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t*)&c->timer, on_handle_closed);
  uv_close((uv_handle_t*)&c->wake, on_handle_closed);
}

static const char* reason(int code) {
  switch (code) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 413: return "Content Too Large";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Error";
  }
}

static void on_written(uv_write_t* w, int status);

/* Ends the request: leaves admission (the request's work is done) and
 * writes the response. @p headers are extra lines, each ending in CRLF;
 * the client's RateLimit headers go on every answer to a limited path. */
static void reply(conn_t* c, int code, const char* headers, const char* body) {
  server_t* s = c->srv;
  if (c->adm_held) {
    c->adm_held = 0;
    admit_admission_leave(s->admission, &c->adm, code == 504
                          ? ADMIT_OUTCOME_FAILURE : ADMIT_OUTCOME_SUCCESS);
  }
  if (s->draining) c->keep_alive = 0;
  size_t blen = strlen(body), cap = blen + strlen(headers) + 416;
  c->out = malloc(cap);
  if (c->out == NULL) { conn_close(c); return; }
  int n = snprintf(c->out, cap, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n"
                   "Connection: %s\r\n%s%s\r\n%s", code, reason(code), blen,
                   c->keep_alive ? "keep-alive" : "close", c->limit_headers,
                   headers, body);
  c->state = C_WRITE;
  uv_buf_t b = uv_buf_init(c->out, (unsigned)n);
  if (uv_write(&c->wr, (uv_stream_t*)&c->tcp, &b, 1, on_written) < 0) {
    free(c->out);
    c->out = NULL;
    conn_close(c);
  }
}

static void reply_text(conn_t* c, int code, const char* text) {
  reply(c, code, "Content-Type: text/plain\r\n", text);
}

/* --- the guarded outbound call ----------------------------------------- */

static void on_call_done(uv_timer_t* t) {
  conn_t* c = t->data;
  uint64_t now = admit_now_ns();
  admit_guard_leave(&c->gp, c->call_times_out ? ADMIT_OUTCOME_TIMEOUT
                                              : ADMIT_OUTCOME_SUCCESS);
  if (c->call_times_out) {
    reply_text(c, 504, "vendor call timed out\n");
    return;
  }
  char body[256];
  snprintf(body, sizeof(body), "{\"client\":\"%s\",\"vendor\":\"ok\","
           "\"guard_wait_ms\":%llu,\"call_ms\":%llu}\n", c->client,
           (unsigned long long)((c->t_admitted - c->t_start) / 1000000),
           (unsigned long long)((now - c->t_admitted) / 1000000));
  reply(c, 200, "Content-Type: application/json\r\n", body);
}

static void guard_drive(conn_t* c);
static void on_guard_timer(uv_timer_t* t) { guard_drive(t->data); }

/* Runs on whichever thread completed a guard wait (a semaphore release, a
 * Redis reply): only wake the loop, never touch the permit here. */
static void on_guard_notify(void* ud) { uv_async_send(&((conn_t*)ud)->wake); }

/* Steps the attempt as far as it goes without blocking; a wait becomes a
 * timer, a pending wait a timer plus a wake-up from on_guard_notify. */
static void guard_drive(conn_t* c) {
  uint64_t wait_ns;
  int rc = admit_guard_step(&c->gp, &wait_ns);
  if (rc == ADMIT_GUARD_WAIT || rc == ADMIT_GUARD_PENDING) {
    uv_timer_start(&c->timer, on_guard_timer, ceil_ms(wait_ns), 0);
    return;
  }
  if (rc == ADMIT_GUARD_READY) {
    c->state = C_CALL;
    c->t_admitted = admit_now_ns();
    uint64_t budget = c->gp.call_deadline_ns > c->t_admitted
                      ? c->gp.call_deadline_ns - c->t_admitted : 0;
    /* The call ends at its latency or at its deadline, whichever comes
     * first: the caller enforces the guard's call timeout. */
    c->call_times_out = c->srv->latency_ns > budget;
    uv_timer_start(&c->timer, on_call_done,
                   ceil_ms(c->call_times_out ? budget : c->srv->latency_ns),
                   0);
    return;
  }
  /* Refused: the attempt holds nothing any more. */
  char headers[64] = "", body[192];
  if (c->gp.retry_after_ns != 0)
    snprintf(headers, sizeof(headers), "Retry-After: %llu\r\n",
             ceil_s(c->gp.retry_after_ns));
  snprintf(body, sizeof(body), "vendor busy: %s (stage %s)\n",
           admit_strerror(rc), admit_guard_stage_name(c->gp.stage));
  reply(c, 503, headers, body);
}

/* --- requests ---------------------------------------------------------- */

/* The request passed admission: do its work. */
static void handle_admitted(conn_t* c) {
  server_t* s = c->srv;
  if (strcmp(c->path, "/vendor") == 0) {
    c->state = C_GUARD;
    c->t_start = admit_now_ns();
    admit_guard_start(s->vendor, &c->gp, s->queue_timeout_ns,
                      on_guard_notify, c);
    guard_drive(c);
    return;
  }
  char body[160];
  snprintf(body, sizeof(body), "{\"client\":\"%s\",\"hello\":\"world\","
           "\"body_bytes\":%zu}\n", c->client, c->body_len);
  reply(c, 200, "Content-Type: application/json\r\n", body);
}

/* 503 for a request the pod had no room for; the client's unit is given
 * back, since it was not served. */
static void refuse_overloaded(conn_t* c, const char* why) {
  admit_keyed_refund(c->srv->clients, 0, c->client, strlen(c->client), 1);
  c->limit_headers[0] = '\0';
  reply(c, 503, "Retry-After: 1\r\n", why);
}

/* The admission controller's callback (any thread): wake the loop. */
static void on_admission(void* ud, uint64_t ticket, int status) {
  (void)ticket;
  (void)status; /* the permit says it too; read on the loop */
  conn_t* c = ud;
  atomic_store(&c->adm_done, 1);
  uv_async_send(&c->wake);
}

static void on_wake(uv_async_t* a) {
  conn_t* c = a->data;
  if (c->state == C_GUARD) {
    guard_drive(c);
  } else if (c->state == C_ADMISSION && atomic_load(&c->adm_done)) {
    if (c->adm.status != 0) {
      refuse_overloaded(c, "overloaded: shed\n");
      return;
    }
    c->adm_held = 1;
    handle_admitted(c);
  }
}

static void serve_metrics(conn_t* c) {
  server_t* s = c->srv;
  admit_keyed_stats_t ks;
  admit_keyed_stats(s->clients, &ks);
  size_t cap = 32768;
  char* text = NULL;
  for (;;) {
    char* t = realloc(text, cap);
    if (t == NULL) { free(text); conn_close(c); return; }
    text = t;
    int n = admit_health_render_metrics(s->health, text, cap);
    if (n < 0) { free(text); reply_text(c, 503, "no metrics\n"); return; }
    if ((size_t)n + 512 < cap) {
      snprintf(text + n, cap - (size_t)n,
               "# HELP example_client_keys Clients with a limiter state.\n"
               "# TYPE example_client_keys gauge\nexample_client_keys %llu\n"
               "# HELP example_client_limited_total Requests answered 429.\n"
               "# TYPE example_client_limited_total counter\n"
               "example_client_limited_total %llu\n",
               (unsigned long long)ks.keys, (unsigned long long)s->limited);
      break;
    }
    cap = (size_t)n + 1024;
  }
  reply(c, 200, "Content-Type: text/plain; version=0.0.4\r\n", text);
  free(text);
}

/* Routes a complete request. Limits apply to /hello and /vendor only. */
static void handle(conn_t* c) {
  server_t* s = c->srv;
  int get = strcmp(c->method, "GET") == 0;
  if (strcmp(c->path, "/health") == 0 && get) {
    reply_text(c, 200, "ok\n");
    return;
  }
  if (strcmp(c->path, "/ready") == 0 && get) {
    admit_health_snapshot_t snap;
    char body[512];
    int ready = admit_health_check(s->health, &snap);
    admit_health_render_json(&snap, body, sizeof(body) - 1);
    strcat(body, "\n");
    reply(c, ready == 1 ? 200 : 503, "Content-Type: application/json\r\n",
          body);
    return;
  }
  if (strcmp(c->path, "/metrics") == 0 && get) {
    serve_metrics(c);
    return;
  }
  if (strcmp(c->path, "/hello") != 0 && strcmp(c->path, "/vendor") != 0) {
    reply_text(c, 404, "not found\n");
    return;
  }
  if (!get && strcmp(c->method, "POST") != 0) {
    reply(c, 405, "Allow: GET, POST\r\n", "method not allowed\n");
    return;
  }
  /* 1. The client's own limit: cheap, never waits, so it comes first
   * (reject before waiting). */
  admit_decision_t d;
  size_t klen = strlen(c->client);
  if (admit_keyed_try(s->clients, 0, c->client, klen, 1, &d) < 0) {
    reply_text(c, 503, "too many clients\n");
    return;
  }
  const admit_rate_t* r = &s->client_quota.rates[d.limiting];
  snprintf(c->limit_headers, sizeof(c->limit_headers),
           "RateLimit-Policy: \"client\";q=%llu;w=%llu\r\n"
           "RateLimit: \"client\";r=%llu;t=%llu\r\n",
           (unsigned long long)r->count, ceil_s(r->period_ns),
           (unsigned long long)d.remaining, ceil_s(d.reset_after_ns));
  if (!d.allowed) {
    char retry[48];
    s->limited++;
    snprintf(retry, sizeof(retry), "Retry-After: %llu\r\n",
             ceil_s(d.retry_after_ns));
    reply(c, 429, retry, "rate limited\n");
    return;
  }
  /* 2. Admission: run now, wait in the backlog, or 503 at once. */
  atomic_store(&c->adm_done, 0);
  int rc = admit_admission_enter_async(s->admission, 1, &c->adm,
                                       on_admission, c);
  if (rc == 1) {
    c->adm_held = 1;
    handle_admitted(c);
  } else if (rc == 0) {
    c->state = C_ADMISSION; /* on_admission will wake us */
  } else {
    refuse_overloaded(c, "overloaded: admission full\n");
  }
}

/* Returns the header value of @p name in the header block @p h (NUL
 * terminated, lines end in CRLF), or NULL. */
static const char* header(const char* h, const char* name, size_t* len) {
  size_t nlen = strlen(name);
  for (const char* l = strstr(h, "\r\n"); l != NULL; l = strstr(l, "\r\n")) {
    l += 2;
    if (strncasecmp(l, name, nlen) == 0 && l[nlen] == ':') {
      const char* v = l + nlen + 1;
      while (*v == ' ' || *v == '\t') v++;
      const char* e = strstr(v, "\r\n");
      *len = (size_t)(e != NULL ? e - v : (long)strlen(v));
      while (*len > 0 && (v[*len - 1] == ' ' || v[*len - 1] == '\t')) (*len)--;
      return v;
    }
  }
  return NULL;
}

/* Parses one request from the buffer, enough HTTP/1.1 for GET and POST
 * with Content-Length. Returns 0 if more bytes are needed, 1 when the
 * request is complete, or an HTTP error status. */
static int parse(conn_t* c) {
  char* end = NULL;
  for (size_t i = 0; i + 3 < c->len && end == NULL; i++)
    if (memcmp(c->buf + i, "\r\n\r\n", 4) == 0) end = c->buf + i;
  if (end == NULL) return c->len >= BUF_SIZE ? 431 : 0;
  size_t head = (size_t)(end - c->buf) + 4;
  char saved = end[2];
  end[2] = '\0'; /* the head, with its last CRLF, as a C string */
  int minor = -1, n = -1;
  sscanf(c->buf, "%7[A-Z] %255[^ \r\n] HTTP/1.%1d%n", c->method, c->path,
         &minor, &n);
  size_t vlen;
  const char* v = header(c->buf, "Transfer-Encoding", &vlen);
  const char* cl = header(c->buf, "Content-Length", &vlen);
  char* cl_end = NULL;
  unsigned long long body = cl != NULL ? strtoull(cl, &cl_end, 10) : 0;
  int bad = n < 0 || minor < 0 || c->path[0] != '/' ||
            strncmp(c->buf + n, "\r\n", 2) != 0 ||
            (cl != NULL && (cl_end != cl + vlen || *cl < '0' || *cl > '9'));
  int status = bad ? 400 : v != NULL ? 501 : body > BUF_SIZE - head ? 413 : 1;
  if (status == 1) {
    c->path[strcspn(c->path, "?")] = '\0'; /* no query strings here */
    c->body_len = (size_t)body;
    const char* conn = header(c->buf, "Connection", &vlen);
    c->keep_alive = conn != NULL ? strncasecmp(conn, "close", 5) != 0
                                 : minor >= 1;
    /* The client is who the caller says (X-Client-Id), else its address. */
    const char* id = header(c->buf, "X-Client-Id", &vlen);
    if (id == NULL) {
      id = c->peer;
      vlen = strlen(id);
    } else if (vlen == 0 || vlen >= KEY_MAX) {
      status = 400;
    }
    for (size_t i = 0; status == 1 && i < vlen; i++)
      if (id[i] <= ' ' || id[i] == '"' || id[i] == '\\' || id[i] > '~')
        status = 400;
    if (status == 1) snprintf(c->client, sizeof(c->client), "%.*s",
                              (int)vlen, id);
  }
  end[2] = saved;
  if (status == 1 && c->len < head + body) return 0;
  c->req_len = head + (size_t)body;
  return status;
}

/* Serves the next request in the buffer, if it is complete. */
static void serve_next(conn_t* c) {
  int rc = parse(c);
  if (rc == 0) return;
  c->limit_headers[0] = '\0';
  if (rc == 1) {
    handle(c);
    return;
  }
  c->keep_alive = 0; /* after a bad request, the framing is lost */
  char text[64];
  snprintf(text, sizeof(text), "%s\n", reason(rc));
  reply_text(c, rc, text);
}

static void on_written(uv_write_t* w, int status) {
  conn_t* c = w->data;
  free(c->out);
  c->out = NULL;
  if (c->closing) return;
  if (status < 0 || !c->keep_alive || c->srv->draining) {
    conn_close(c);
    return;
  }
  memmove(c->buf, c->buf + c->req_len, c->len - c->req_len);
  c->len -= c->req_len;
  c->state = C_READ;
  serve_next(c); /* a pipelined request may be waiting */
}

static void on_alloc(uv_handle_t* h, size_t hint, uv_buf_t* b) {
  conn_t* c = h->data;
  (void)hint;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(BUF_SIZE - c->len));
}

static void on_read(uv_stream_t* st, ssize_t nread, const uv_buf_t* b) {
  conn_t* c = st->data;
  (void)b;
  if (nread < 0) { /* EOF, error, or a buffer filled while we were busy */
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  if (c->state == C_READ) serve_next(c);
}

static void on_connection(uv_stream_t* l, int status) {
  server_t* s = l->data;
  conn_t* c = status < 0 ? NULL : calloc(1, sizeof(*c));
  if (c == NULL) return;
  c->srv = s;
  c->handles = 3;
  uv_tcp_init(&s->loop, &c->tcp);
  uv_timer_init(&s->loop, &c->timer);
  uv_async_init(&s->loop, &c->wake, on_wake);
  c->tcp.data = c->timer.data = c->wake.data = c->wr.data = c;
  c->next = s->conns;
  if (s->conns != NULL) s->conns->prev = c;
  s->conns = c;
  struct sockaddr_storage sa;
  int salen = sizeof(sa);
  if (uv_accept(l, (uv_stream_t*)&c->tcp) < 0 ||
      uv_tcp_getpeername(&c->tcp, (struct sockaddr*)&sa, &salen) < 0 ||
      uv_ip_name((struct sockaddr*)&sa, c->peer, sizeof(c->peer)) < 0 ||
      uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
}

/* --- lifecycle --------------------------------------------------------- */

static void on_sweep(uv_timer_t* t) {
  server_t* s = t->data;
  admit_keyed_sweep(s->clients); /* drop idle clients' state */
}

static void on_drain_timeout(uv_timer_t* t) {
  server_t* s = t->data;
  while (s->conns != NULL) conn_close(s->conns);
}

/* SIGTERM: stop accepting, close idle connections, let the others finish
 * their request (at most 10 s; a second signal: at once), then the loop
 * runs out of handles. */
static void on_signal(uv_signal_t* sig, int signum) {
  server_t* s = sig->data;
  (void)signum;
  if (s->draining) {
    on_drain_timeout(&s->drain);
    return;
  }
  s->draining = 1;
  printf("shutting down\n");
  fflush(stdout);
  uv_close((uv_handle_t*)&s->listener, NULL);
  uv_close((uv_handle_t*)&s->sweep, NULL);
  for (conn_t *c = s->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->state == C_READ) conn_close(c);
  }
  uv_timer_start(&s->drain, on_drain_timeout, 10000, 0);
  /* These stay active but no longer keep the loop alive. */
  uv_unref((uv_handle_t*)&s->drain);
  uv_unref((uv_handle_t*)&s->sigterm);
  uv_unref((uv_handle_t*)&s->sigint);
}

static int fail(const char* what, const char* why) {
  fprintf(stderr, "%s: %s\n", what, why);
  return 1;
}

/* Creates every admit object from the environment. */
static int setup_admit(server_t* s) {
  int rc;
  const char* client_rate = env_str("CLIENT_RATE", "10/minute");
  if ((rc = admit_quota_parse(&s->client_quota, ADMIT_TOKEN_BUCKET,
                              client_rate, NULL)) < 0)
    return fail("CLIENT_RATE", admit_strerror(rc));
  admit_keyed_options_t ko = {0};
  ko.quotas = &s->client_quota;
  ko.nquotas = 1;
  ko.max_keys = 100000; /* bounded memory, whatever clients send */
  if ((rc = admit_keyed_new(&s->clients, &ko)) < 0)
    return fail("keyed", admit_strerror(rc));

  admit_admission_options_t ao = {0};
  ao.max_in_flight = (uint32_t)env_u64("MAX_IN_FLIGHT", 64);
  ao.backlog = (uint32_t)env_u64("BACKLOG", 128);
  ao.no_backlog = env_u64("BACKLOG", 128) == 0;
  if ((rc = admit_admission_new(&s->admission, &ao)) < 0)
    return fail("admission", admit_strerror(rc));

  admit_quota_t vq;
  if ((rc = admit_quota_parse(&vq, ADMIT_TOKEN_BUCKET,
                              env_str("VENDOR_RATE", "50/s"), NULL)) < 0 ||
      (rc = admit_limiter_new(&s->vendor_local, &vq, NULL)) < 0)
    return fail("VENDOR_RATE", admit_strerror(rc));
  admit_semaphore_options_t so = {0};
  so.capacity = env_u64("VENDOR_CONCURRENCY", 8);
  so.max_waiters = 1000;
  if ((rc = admit_semaphore_new(&s->vendor_sem, &so)) < 0)
    return fail("VENDOR_CONCURRENCY", admit_strerror(rc));

  admit_guard_options_t go = {0};
  go.name = "vendor";
  go.local = s->vendor_local;
  go.semaphore = s->vendor_sem;
  go.call_timeout_ns = env_u64("CALL_TIMEOUT_MS", 1000) * ADMIT_MILLISECOND;
  go.max_attempts = 1; /* the simulated vendor never fails: no retries */
  if (getenv("ADMIT_REDIS_URL") != NULL && *getenv("ADMIT_REDIS_URL")) {
    /* The vendor's quota, shared by every process using this Redis. */
    admit_quota_t gq;
    admit_redis_limiter_options_t ro = {0};
    ro.quota = &gq;
    ro.name = "vendor";
    ro.on_failure = ADMIT_REDIS_FALLBACK; /* local share if Redis is down */
    if ((rc = admit_redis_new(&s->redis, NULL)) < 0)
      return fail("ADMIT_REDIS_URL", admit_strerror(rc));
    if ((rc = admit_quota_parse(&gq, ADMIT_TOKEN_BUCKET,
                                env_str("VENDOR_GLOBAL_RATE", "100/s"),
                                NULL)) < 0 ||
        (rc = admit_redis_limiter_new(&s->vendor_global, s->redis, &ro)) < 0)
      return fail("VENDOR_GLOBAL_RATE", admit_strerror(rc));
    go.redis = s->vendor_global;
    printf("vendor global limit %s through Redis\n",
           env_str("VENDOR_GLOBAL_RATE", "100/s"));
  }
  if ((rc = admit_guard_new(&s->vendor, &go)) < 0)
    return fail("guard", admit_strerror(rc));

  if ((rc = admit_health_new(&s->health, NULL)) < 0 ||
      (rc = admit_health_add_guard(s->health, s->vendor)) < 0 ||
      (rc = admit_health_add_admission(s->health, s->admission, "http")) < 0 ||
      (s->redis != NULL &&
       (rc = admit_health_add_redis(s->health, s->redis)) < 0))
    return fail("health", admit_strerror(rc));
  return 0;
}

/* Frees in reverse order: the guard before what it borrows, the Redis
 * limiter before its connection. */
static void teardown_admit(server_t* s) {
  admit_health_free(s->health);
  admit_guard_free(s->vendor);
  admit_redis_limiter_free(s->vendor_global);
  admit_redis_free(s->redis);
  admit_semaphore_free(s->vendor_sem);
  admit_limiter_free(s->vendor_local);
  admit_admission_free(s->admission);
  admit_keyed_free(s->clients);
}

int main(void) {
  static server_t srv;
  server_t* s = &srv;
  int rc = setup_admit(s);
  s->latency_ns = env_u64("VENDOR_LATENCY_MS", 100) * ADMIT_MILLISECOND;
  s->queue_timeout_ns = env_u64("QUEUE_TIMEOUT_MS", 5000) * ADMIT_MILLISECOND;
  struct sockaddr_storage sa;
  const char* host = env_str("HOST", "127.0.0.1");
  int port = (int)env_u64("PORT", 8080);
  if (rc == 0 && uv_ip4_addr(host, port, (struct sockaddr_in*)&sa) < 0 &&
      (rc = uv_ip6_addr(host, port, (struct sockaddr_in6*)&sa)) < 0)
    rc = fail("HOST", uv_strerror(rc));
  if (rc == 0) {
    uv_loop_init(&s->loop);
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s->sigterm.data = s->sigint.data = s;
    s->sweep.data = s->drain.data = s;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr*)&sa, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t*)&s->listener, 511, on_connection)) < 0) {
      rc = fail("listen", uv_strerror(rc));
      uv_close((uv_handle_t*)&s->listener, NULL);
    } else {
      int salen = sizeof(sa);
      char name[64];
      uv_tcp_getsockname(&s->listener, (struct sockaddr*)&sa, &salen);
      uv_ip_name((struct sockaddr*)&sa, name, sizeof(name));
      printf("listening on http://%s:%d\n", name,
             ntohs(((struct sockaddr_in*)&sa)->sin_port));
      fflush(stdout);
      uv_signal_init(&s->loop, &s->sigterm);
      uv_signal_start(&s->sigterm, on_signal, SIGTERM);
      uv_signal_init(&s->loop, &s->sigint);
      uv_signal_start(&s->sigint, on_signal, SIGINT);
      uv_timer_init(&s->loop, &s->sweep);
      uv_timer_start(&s->sweep, on_sweep, 10000, 10000);
      uv_timer_init(&s->loop, &s->drain);
    }
    uv_run(&s->loop, UV_RUN_DEFAULT);
    if (rc == 0) {
      uv_close((uv_handle_t*)&s->drain, NULL);
      uv_close((uv_handle_t*)&s->sigterm, NULL);
      uv_close((uv_handle_t*)&s->sigint, NULL);
    }
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
  }
  teardown_admit(s);
  if (rc == 0) printf("bye\n");
  return rc;
}
