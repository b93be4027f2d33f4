/* Decisions per second through the Redis limiter, beside what the same
 * server does with the same script without us:
 *
 *   1 caller (blocking)        vs a raw hiredis EVALSHA round trip
 *   16 callers (threads)       vs redis-benchmark, 16 clients
 *   async uv, 256 in flight    vs redis-benchmark, 50 clients x pipeline 16
 *   the same, each loop iteration's calls held and sent together (merged
 *   into one script call: admit_redis_hold/release around the iteration)
 *
 * and the ratios against the targets of issue 4 (0.8, 0.7, 0.6). Without
 * ADMIT_TEST_REDIS_URL it re-runs itself under test/run-redis.sh, which
 * starts a throwaway server. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "redis-limiter.h"

#define NKEYS 1000
#define PREFIX "bench"

static double secs = 3.0;
static admit_redis_t* conn;
static admit_redis_limiter_t* lim;
static char keys[NKEYS][16];

/* --- raw hiredis -----------------------------------------------------------*/

/* The exact command the limiter sends for a try of @p key. */
static int build_argv(const char* key, char* kbuf, size_t cap,
                      const char** argv, size_t* lens) {
  int n = 0;
  argv[n] = "EVALSHA";
  lens[n++] = 7;
  argv[n] = admit__redis_sha(conn, ADMIT__SCRIPT_LIMIT);
  lens[n++] = 40;
  argv[n] = "1";
  lens[n++] = 1;
  int klen = admit__redis_key(conn, key, strlen(key),
                              admit__redis_limiter_name(lim), kbuf, cap);
  argv[n] = kbuf;
  lens[n++] = (size_t)klen;
  argv[n] = "try";
  lens[n++] = 3;
  argv[n] = "";
  lens[n++] = 0;
  n += admit__redis_limiter_quota_args(lim, argv + n, lens + n);
  argv[n] = "1";
  lens[n++] = 1;
  return n;
}

/* Ops done and seconds taken: rates are summed over rounds. */
typedef struct tally_s {
  double ops;
  double secs;
} tally_t;

static void add(tally_t* t, double ops, double secs_) {
  t->ops += ops;
  t->secs += secs_;
}

static double rate_of(const tally_t* t) {
  return t->secs > 0 ? t->ops / t->secs : 0;
}

static redisContext* raw_ctx;

static void bench_raw(int port, double dur, tally_t* t) {
  if (raw_ctx == NULL) {
    raw_ctx = redisConnect("127.0.0.1", port);
    if (raw_ctx == NULL || raw_ctx->err) {
      fprintf(stderr, "raw connect failed\n");
      exit(1);
    }
    redisReply* r = redisCommand(raw_ctx, "SELECT 15");
    if (r != NULL) freeReplyObject(r);
  }
  const char* argv[64];
  size_t lens[64];
  char kbuf[256];
  uint64_t n = 0;
  double t0 = bench_now_s(), t1;
  do {
    for (int i = 0; i < 50; i++) {
      int argc = build_argv(keys[n % NKEYS], kbuf, sizeof(kbuf), argv, lens);
      redisReply* r = redisCommandArgv(raw_ctx, argc, argv, lens);
      if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "raw EVALSHA failed\n");
        exit(1);
      }
      freeReplyObject(r);
      n++;
    }
    t1 = bench_now_s();
  } while (t1 - t0 < dur);
  add(t, (double)n, t1 - t0);
}

/* --- blocking callers ------------------------------------------------------*/

typedef struct worker_s {
  double until;
  uint64_t n;
  uint64_t errors;
  int id;
} worker_t;

static void* worker(void* arg) {
  worker_t* w = arg;
  admit_decision_t d;
  uint64_t i = (uint64_t)w->id * 7919;
  while (bench_now_s() < w->until) {
    for (int k = 0; k < 20; k++) {
      const char* key = keys[i++ % NKEYS];
      if (admit_redis_limiter_try(lim, key, strlen(key), 1, &d) != 0)
        w->errors++;
      w->n++;
    }
  }
  return NULL;
}

static void bench_threads(int nthreads, double dur, tally_t* tl) {
  worker_t w[64];
  pthread_t t[64];
  double t0 = bench_now_s();
  for (int i = 0; i < nthreads; i++) {
    memset(&w[i], 0, sizeof(w[i]));
    w[i].until = t0 + dur;
    w[i].id = i;
    pthread_create(&t[i], NULL, worker, &w[i]);
  }
  uint64_t n = 0, errors = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(t[i], NULL);
    n += w[i].n;
    errors += w[i].errors;
  }
  double el = bench_now_s() - t0;
  if (errors) fprintf(stderr, "%llu errors\n", (unsigned long long)errors);
  add(tl, (double)n, el);
}

/* --- async on a uv loop ----------------------------------------------------*/

typedef struct async_s {
  admit_redis_loop_t* lp;
  int hold;    /* hold each loop iteration's calls (admit_redis_hold) */
  int holding; /* a hold is on until this iteration's check phase */
  double until;
  uint64_t done;
  uint64_t errors;
  uint64_t in_flight;
  uint64_t next;
} async_t;

static void on_done(void* ud, int status, const admit_decision_t* d);

static void submit(async_t* a) {
  const char* key = keys[a->next++ % NKEYS];
  if (a->hold && !a->holding && admit_redis_hold(conn) == 0) a->holding = 1;
  if (admit_redis_limiter_try_uv(lim, a->lp, key, strlen(key), 1, on_done,
                                 a) == 0)
    a->in_flight++;
  else
    a->errors++;
}

static void on_done(void* ud, int status, const admit_decision_t* d) {
  (void)d;
  async_t* a = ud;
  a->in_flight--;
  a->done++;
  if (status != 0) a->errors++;
  if (bench_now_s() < a->until) submit(a);
}

/* After each iteration's callbacks: send what they held, together. */
static void on_check(uv_check_t* h) {
  async_t* a = h->data;
  if (a->holding) {
    a->holding = 0;
    admit_redis_release(conn);
  }
}

static void bench_async(int depth, int hold, double dur, tally_t* t) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  async_t a;
  memset(&a, 0, sizeof(a));
  a.hold = hold;
  if (admit_redis_loop_new(&a.lp, &loop) != 0) return;
  uv_check_t check;
  uv_check_init(&loop, &check);
  check.data = &a;
  uv_check_start(&check, on_check);
  uv_unref((uv_handle_t*)&check);
  double t0 = bench_now_s();
  a.until = t0 + dur;
  for (int i = 0; i < depth; i++) submit(&a);
  on_check(&check);
  while (a.in_flight > 0) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t*)&check, NULL);
  double el = bench_now_s() - t0;
  admit_redis_loop_close(a.lp);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (a.errors) fprintf(stderr, "%llu errors\n", (unsigned long long)a.errors);
  add(t, (double)a.done, el);
}

/* --- redis-benchmark -------------------------------------------------------*/

/* Runs redis-benchmark with the same EVALSHA (keys spread like ours) and
 * returns its requests per second, or 0 if it is not installed. */
static double redis_benchmark(int port, int clients, int pipeline,
                              long requests) {
  if (system("command -v redis-benchmark >/dev/null 2>&1") != 0) return 0;
  const char* argv[64];
  size_t lens[64];
  char kbuf[256];
  int argc = build_argv("__rand_int__", kbuf, sizeof(kbuf), argv, lens);
  char cmd[2048];
  int n = snprintf(cmd, sizeof(cmd),
                   "redis-benchmark -h 127.0.0.1 -p %d --dbnum 15 -c %d -P %d "
                   "-n %ld -r %d --csv",
                   port, clients, pipeline, requests, NKEYS);
  for (int i = 0; i < argc; i++)
    n += snprintf(cmd + n, sizeof(cmd) - (size_t)n, " '%.*s'", (int)lens[i],
                  argv[i]);
  FILE* p = popen(cmd, "r");
  if (p == NULL) return 0;
  char line[512];
  double rps = 0;
  while (fgets(line, sizeof(line), p) != NULL) {
    /* "name","rps",...: the first line whose second field is a number. */
    char* c = strstr(line, "\",\"");
    if (c != NULL && c[3] >= '0' && c[3] <= '9') rps = atof(c + 3);
  }
  pclose(p);
  return rps;
}

/* One round of about @p dur seconds of redis-benchmark; @p est is the
 * rate last seen (it sizes the request count). */
static void bench_redis_benchmark(int port, int clients, int pipeline,
                                  double dur, double* est, tally_t* t) {
  long n = (long)(*est * dur);
  if (n < 2000) n = 2000;
  double rps = redis_benchmark(port, clients, pipeline, n);
  if (rps <= 0) return;
  *est = rps;
  add(t, (double)n, (double)n / rps);
}

/* Prints the server's own time per call of EVALSHA and of the commands
 * the script runs (INFO commandstats since the last CONFIG RESETSTAT). */
static void server_time(int port) {
  redisContext* c = redisConnect("127.0.0.1", port);
  if (c == NULL || c->err) {
    if (c != NULL) redisFree(c);
    return;
  }
  redisReply* r = redisCommand(c, "INFO commandstats");
  if (r != NULL && r->type == REDIS_REPLY_STRING) {
    static const char* const cmds[] = {"evalsha", "time", "hmget", "hset",
                                       "pexpireat", "pexpire", "del"};
    printf("\nserver time per call (INFO commandstats, all rows):\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
      char pat[64];
      snprintf(pat, sizeof(pat), "cmdstat_%s:calls=", cmds[i]);
      const char* p = strstr(r->str, pat);
      if (p == NULL) continue;
      long long calls = atoll(p + strlen(pat));
      const char* u = strstr(p, "usec_per_call=");
      if (u == NULL) continue;
      printf("  %-10s %12lld calls %8.2f us\n", cmds[i], calls,
             atof(u + strlen("usec_per_call=")));
    }
  }
  if (r != NULL) freeReplyObject(r);
  redisFree(c);
}

static void ratio(const char* what, double ours, double base, double target) {
  if (base <= 0) {
    printf("%-44s   n/a (no baseline)\n", what);
    return;
  }
  double r = ours / base;
  printf("%-44s %6.2fx (target >= %.1fx) %s\n", what, r, target,
         r >= target ? "ok" : "BELOW TARGET");
}

int main(int argc, char** argv) {
  (void)argc;
  if (getenv("ADMIT_TEST_REDIS_URL") == NULL) {
    /* Start a throwaway server and run again under it. */
    execl("test/run-redis.sh", "test/run-redis.sh", argv[0], (char*)NULL);
    fprintf(stderr, "bench-redis: no ADMIT_TEST_REDIS_URL and no "
                    "test/run-redis.sh: skipped\n");
    return 0;
  }
  if (getenv("ADMIT_BENCH_SECONDS") != NULL)
    secs = atof(getenv("ADMIT_BENCH_SECONDS"));
  int port = atoi(getenv("ADMIT_TEST_REDIS_PORT"));
  bench_go_multithreaded();
  for (int i = 0; i < NKEYS; i++) snprintf(keys[i], sizeof(keys[i]), "%d", i);

  admit_redis_options_t o;
  memset(&o, 0, sizeof(o));
  o.url = getenv("ADMIT_TEST_REDIS_URL");
  o.prefix = PREFIX;
  o.command_timeout_ns = 2 * (uint64_t)ADMIT_SECOND;
  if (admit_redis_new(&conn, &o) != 0) {
    fprintf(stderr, "bench-redis: cannot connect\n");
    return 1;
  }
  admit_quota_t q;
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "1000000/s", NULL);
  admit_redis_limiter_options_t lo;
  memset(&lo, 0, sizeof(lo));
  lo.quota = &q;
  lo.name = "gcra";
  admit_redis_limiter_new(&lim, conn, &lo);

  redisContext* rc = redisConnect("127.0.0.1", port);
  if (rc != NULL && !rc->err) {
    redisReply* r = redisCommand(rc, "CONFIG RESETSTAT");
    if (r != NULL) freeReplyObject(r);
  }
  if (rc != NULL) redisFree(rc);

  /* Each pair takes turns, round by round, so that a load change on a
   * shared machine falls on both sides of a ratio alike. */
  const int rounds = 5;
  double dur = secs / rounds;
  printf("Redis limiter, GCRA, %d keys, %.1f s per row in %d rounds\n",
         NKEYS, secs, rounds);
  tally_t raw = {0, 0}, one = {0, 0}, rb16 = {0, 0}, sixteen = {0, 0},
          rbp = {0, 0}, async = {0, 0}, held = {0, 0};
  double est16 = 20000, estp = 50000;
  for (int i = 0; i < rounds; i++) {
    bench_raw(port, dur, &raw);
    bench_threads(1, dur, &one);
  }
  for (int i = 0; i < rounds; i++) {
    bench_redis_benchmark(port, 16, 1, dur, &est16, &rb16);
    bench_threads(16, dur, &sixteen);
  }
  for (int i = 0; i < rounds; i++) {
    bench_redis_benchmark(port, 50, 16, dur, &estp, &rbp);
    bench_async(256, 0, dur, &async);
    bench_async(256, 1, dur, &held);
  }
  double r_raw = rate_of(&raw), r_one = rate_of(&one);
  double r_rb16 = rate_of(&rb16), r_16 = rate_of(&sixteen);
  double r_rbp = rate_of(&rbp), r_async = rate_of(&async);
  double r_held = rate_of(&held);
  bench_row("raw hiredis EVALSHA round trip", 1, 1e9 / r_raw, 0);
  bench_row("admit_redis_limiter_try, blocking", 1, 1e9 / r_one,
            1e9 / r_raw);
  if (r_rb16 > 0)
    bench_row("redis-benchmark EVALSHA, 16 clients", 16, 16e9 / r_rb16, 0);
  bench_row("admit_redis_limiter_try, blocking", 16, 16e9 / r_16,
            r_rb16 > 0 ? 16e9 / r_rb16 : 0);
  if (r_rbp > 0)
    bench_row("redis-benchmark EVALSHA, 50 clients x P16", 50,
              50e9 / r_rbp, 0);
  bench_row("admit_redis_limiter_try_uv, 256 in flight", 1, 1e9 / r_async,
            r_rbp > 0 ? 1e9 / r_rbp : 0);
  bench_row("the same, held per loop iteration (merged)", 1, 1e9 / r_held,
            r_rbp > 0 ? 1e9 / r_rbp : 0);
  printf("\n");
  ratio("1 caller / raw hiredis round trip", r_one, r_raw, 0.8);
  ratio("16 callers / redis-benchmark 16 clients", r_16, r_rb16, 0.7);
  ratio("async 256 / redis-benchmark 50 x P16", r_async, r_rbp, 0.6);
  ratio("async 256 held / redis-benchmark 50 x P16", r_held, r_rbp, 0.6);
  server_time(port);

  if (raw_ctx != NULL) redisFree(raw_ctx);
  admit_redis_limiter_free(lim);
  admit_redis_free(conn);
  redisContext* c = redisConnect("127.0.0.1", port);
  if (c != NULL && !c->err) {
    redisReply* r = redisCommand(c, "SELECT 15");
    if (r != NULL) freeReplyObject(r);
    /* Only our keys (redis-benchmark's share the prefix). */
    for (;;) {
      r = redisCommand(c, "SCAN 0 MATCH " PREFIX ":* COUNT 10000");
      if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
          r->element[1]->elements == 0) {
        if (r != NULL) freeReplyObject(r);
        break;
      }
      for (size_t i = 0; i < r->element[1]->elements; i++) {
        redisReply* k = r->element[1]->element[i];
        redisReply* dr = redisCommand(c, "DEL %b", k->str, k->len);
        if (dr != NULL) freeReplyObject(dr);
      }
      freeReplyObject(r);
    }
  }
  if (c != NULL) redisFree(c);
  return 0;
}
