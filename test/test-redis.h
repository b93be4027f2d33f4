/* Helpers shared by the test-redis-*.c tests: the shared throwaway server
 * from test/run-redis.sh (DB 15, must start empty), private servers that a
 * test may kill, stop or restart, and a raw hiredis connection for
 * inspecting keys. */
#ifndef ADMIT_TEST_REDIS_H
#define ADMIT_TEST_REDIS_H

#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

/* Skips the current test when no server was started for us. */
#define REDIS_OR_SKIP()                                                     \
  do {                                                                      \
    if (test_redis_url() == NULL) {                                         \
      fprintf(stderr, "no ADMIT_TEST_REDIS_URL: skipped\n");                \
      skip();                                                               \
    }                                                                       \
  } while (0)

static inline void tr_sleep_ms(unsigned ms) {
  admit_sleep_ns((uint64_t)ms * ADMIT_MILLISECOND);
}

/* A raw connection to host:port (db 15 unless db < 0 is given). */
static inline redisContext* tr_raw(const char* host, int port, int db) {
  struct timeval tv = {2, 0};
  redisContext* c = redisConnectWithTimeout(host, port, tv);
  if (c == NULL || c->err) {
    if (c != NULL) redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  if (db >= 0) {
    redisReply* r = redisCommand(c, "SELECT %d", db);
    if (r != NULL) freeReplyObject(r);
  }
  return c;
}

/* The shared server's port, or -1. */
static inline int tr_shared_port(void) {
  const char* p = getenv("ADMIT_TEST_REDIS_PORT");
  return p != NULL ? atoi(p) : -1;
}

static inline redisContext* tr_shared_raw(void) {
  return tr_raw("127.0.0.1", tr_shared_port(), 15);
}

static inline long long tr_int(redisContext* c, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply* r = redisvCommand(c, fmt, ap);
  va_end(ap);
  long long v = -999;
  if (r != NULL && r->type == REDIS_REPLY_INTEGER) v = r->integer;
  if (r != NULL) freeReplyObject(r);
  return v;
}

static inline int tr_ok(redisContext* c, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply* r = redisvCommand(c, fmt, ap);
  va_end(ap);
  int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
  if (r != NULL) freeReplyObject(r);
  return ok;
}

/* Deletes every key matching "prefix:*"; returns how many. */
static inline long long tr_flush_prefix(redisContext* c, const char* prefix) {
  long long n = 0;
  char cursor[32] = "0";
  do {
    redisReply* r =
        redisCommand(c, "SCAN %s MATCH %s:* COUNT 1000", cursor, prefix);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      if (r != NULL) freeReplyObject(r);
      break;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      redisReply* d = redisCommand(c, "DEL %b", r->element[1]->element[i]->str,
                                   r->element[1]->element[i]->len);
      if (d != NULL) freeReplyObject(d);
      n++;
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  return n;
}

/* Deletes the shared server's keys under @p prefix (a test's leftovers). */
static inline void tr_flush_shared(const char* prefix) {
  redisContext* c = tr_shared_raw();
  if (c == NULL) return;
  tr_flush_prefix(c, prefix);
  redisFree(c);
}

/* Asserts that every key matching "prefix:*" has a positive PTTL; returns
 * the number of keys checked. */
static inline long long tr_all_expire(redisContext* c, const char* prefix) {
  long long n = 0;
  char cursor[32] = "0";
  do {
    redisReply* r =
        redisCommand(c, "SCAN %s MATCH %s:* COUNT 1000", cursor, prefix);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      redisReply* k = r->element[1]->element[i];
      long long ttl = tr_int(c, "PTTL %b", k->str, k->len);
      if (ttl <= 0) fprintf(stderr, "key without expiry: %.*s (pttl %lld)\n",
                            (int)k->len, k->str, ttl);
      assert_true(ttl > 0);
      n++;
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  return n;
}

/* The test binary's guard: DB 15 of the shared server must be empty when
 * it starts (someone else's data must never be touched). */
static inline int tr_group_setup(void** state) {
  (void)state;
  if (test_redis_url() == NULL) return 0;
  redisContext* c = tr_shared_raw();
  if (c == NULL) {
    fprintf(stderr, "cannot reach the test redis\n");
    return -1;
  }
  long long n = tr_int(c, "DBSIZE");
  redisFree(c);
  if (n != 0) {
    fprintf(stderr, "redis DB 15 is not empty (%lld keys): refusing\n", n);
    return -1;
  }
  return 0;
}

/* --- private servers ------------------------------------------------------*/

/* Whether redis-server can be started here. */
static inline int tr_have_server(void) {
  return system("command -v redis-server >/dev/null 2>&1") == 0;
}

typedef struct tserver_s {
  pid_t pid;
  int port;
  char dir[256];
  char conf[300];
  char url[512];
} tserver_t;

static inline int tr_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(fd, (struct sockaddr*)&a, sizeof(a)) != 0 ||
      getsockname(fd, (struct sockaddr*)&a, &len) != 0) {
    close(fd);
    return -1;
  }
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/* Waits until the server answers PING (a NOAUTH error counts: it is up). */
static inline int tr_wait_up(int port, int ms) {
  for (int i = 0; i < ms / 10; i++) {
    redisContext* c = tr_raw("127.0.0.1", port, -1);
    if (c != NULL) {
      redisReply* r = redisCommand(c, "PING");
      int up = r != NULL;
      if (r != NULL) freeReplyObject(r);
      redisFree(c);
      if (up) return 0;
    }
    tr_sleep_ms(10);
  }
  return -1;
}

static inline int tserver_spawn(tserver_t* s) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    /* The server dies with the test, whatever happens to the test. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execlp("redis-server", "redis-server", s->conf, (char*)NULL);
    _exit(127);
  }
  s->pid = pid;
  if (tr_wait_up(s->port, 5000) != 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s->pid = 0;
    return -1;
  }
  return 0;
}

/* Starts a private server on a free port. @p extra is appended to its
 * configuration file (e.g. "requirepass secret\n"). Returns 0 or -1. */
static inline int tserver_start(tserver_t* s, const char* extra) {
  memset(s, 0, sizeof(*s));
  const char* base = getenv("ADMIT_TEST_REDIS_DIR");
  snprintf(s->dir, sizeof(s->dir), "%s/priv.XXXXXX",
           base != NULL ? base : "/tmp");
  if (mkdtemp(s->dir) == NULL) return -1;
  for (int attempt = 0; attempt < 5; attempt++) {
    s->port = tr_free_port();
    snprintf(s->conf, sizeof(s->conf), "%s/redis.conf", s->dir);
    FILE* f = fopen(s->conf, "w");
    if (f == NULL) return -1;
    fprintf(f,
            "bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\n"
            "daemonize no\nenable-debug-command yes\n%s",
            s->port, s->dir, extra != NULL ? extra : "");
    fclose(f);
    snprintf(s->url, sizeof(s->url), "redis://127.0.0.1:%d/0", s->port);
    if (tserver_spawn(s) == 0) return 0;
  }
  return -1;
}

/* Kills the server at once (SIGKILL): memory lost, connections reset. */
static inline void tserver_kill(tserver_t* s) {
  if (s->pid <= 0) return;
  kill(s->pid, SIGCONT);
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
}

/* Starts it again on the same port with the same configuration. */
static inline int tserver_restart(tserver_t* s) {
  for (int i = 0; i < 50; i++) {
    if (tserver_spawn(s) == 0) return 0;
    tr_sleep_ms(50);
  }
  return -1;
}

static inline void tserver_pause(tserver_t* s) { kill(s->pid, SIGSTOP); }
static inline void tserver_resume(tserver_t* s) { kill(s->pid, SIGCONT); }

static inline void tserver_stop(tserver_t* s) {
  tserver_kill(s);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
  if (s->dir[0] != '\0' && system(cmd) != 0) {
    /* Leftovers in a temp dir are harmless. */
  }
  s->dir[0] = '\0';
}

/* Options pointing at @p url with short timeouts suitable for tests
 * (ten times longer under sanitizers and valgrind, which run slowly). */
static inline admit_redis_options_t tr_opts(const char* url,
                                            const char* prefix) {
  admit_redis_options_t o;
  memset(&o, 0, sizeof(o));
  o.url = url;
  o.prefix = prefix;
  o.connect_timeout_ns = test_scale(300, 3000) * (uint64_t)ADMIT_MILLISECOND;
  o.command_timeout_ns = test_scale(200, 2000) * (uint64_t)ADMIT_MILLISECOND;
  o.reconnect_min_ns = 20 * (uint64_t)ADMIT_MILLISECOND;
  o.reconnect_max_ns = 200 * (uint64_t)ADMIT_MILLISECOND;
  o.breaker_cooldown_ns = 200 * (uint64_t)ADMIT_MILLISECOND;
  o.heartbeat_ns = 100 * (uint64_t)ADMIT_MILLISECOND;
  return o;
}

static inline admit_quota_t tr_quota(admit_algo_t algo, const char* spec) {
  admit_quota_t q;
  assert_int_equal(admit_quota_parse(&q, algo, spec, NULL), 0);
  return q;
}

/* A limiter on @p r enforcing @p spec (parsed for @p algo) under @p policy;
 * @p name NULL derives one from the quota. */
static inline admit_redis_limiter_t* tr_limiter(admit_redis_t* r,
                                                admit_algo_t algo,
                                                const char* spec,
                                                const char* name,
                                                admit_redis_policy_t policy) {
  admit_quota_t q = tr_quota(algo, spec);
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = name;
  lo.on_failure = policy;
  admit_redis_limiter_t* l = NULL;
  assert_int_equal(admit_redis_limiter_new(&l, r, &lo), 0);
  return l;
}

#endif /* ADMIT_TEST_REDIS_H */
