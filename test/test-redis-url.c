/* Redis URLs: every accepted form and the malformed ones (no server). */
#include <stdio.h>

#include "helpers.h"

#include "redis-url.h"

typedef struct url_case_s {
  const char* url;
  int is_unix;
  const char* host;
  int port;
  const char* path;
  const char* user;
  const char* password;
  int db;
} url_case_t;

static const url_case_t good[] = {
    {"redis://localhost:6379/0", 0, "localhost", 6379, NULL, NULL, NULL, 0},
    {"redis://localhost", 0, "localhost", 6379, NULL, NULL, NULL, 0},
    {"REDIS://LocalHost/", 0, "LocalHost", 6379, NULL, NULL, NULL, 0},
    {"redis://127.0.0.1:7000/15", 0, "127.0.0.1", 7000, NULL, NULL, NULL, 15},
    {"redis://:secret@h:1/2", 0, "h", 1, NULL, NULL, "secret", 2},
    {"redis://alice:pw@redis.internal:6380/3", 0, "redis.internal", 6380,
     NULL, "alice", "pw", 3},
    {"redis://alice@h", 0, "h", 6379, NULL, "alice", NULL, 0},
    {"redis://a%40b:p%3Aw%2F@h/1", 0, "h", 6379, NULL, "a@b", "p:w/", 1},
    {"redis://u:p@ss@h", 0, "h", 6379, NULL, "u", "p@ss", 0},
    {"redis://[::1]:6390/4", 0, "::1", 6390, NULL, NULL, NULL, 4},
    {"redis://[::1]", 0, "::1", 6379, NULL, NULL, NULL, 0},
    {"redis://h?db=9", 0, "h", 6379, NULL, NULL, NULL, 9},
    {"redis://h/?db=9&password=x&user=bob", 0, "h", 6379, NULL, "bob", "x",
     9},
    {"redis://", 0, "localhost", 6379, NULL, NULL, NULL, 0},
    {"redis://:@h", 0, "h", 6379, NULL, NULL, "", 0},
    {"redis://h:65535/2147483647", 0, "h", 65535, NULL, NULL, NULL,
     2147483647},
    {"unix:///tmp/redis.sock", 1, NULL, 0, "/tmp/redis.sock", NULL, NULL, 0},
    {"unix:///tmp/redis.sock?db=3", 1, NULL, 0, "/tmp/redis.sock", NULL, NULL,
     3},
    {"unix://:pw@/run/r.sock?db=1", 1, NULL, 0, "/run/r.sock", NULL, "pw", 1},
    {"unix://u:pw@/run/r.sock", 1, NULL, 0, "/run/r.sock", "u", "pw", 0},
    {"unix:///a%20b.sock?password=z", 1, NULL, 0, "/a b.sock", NULL, "z", 0},
};

static const char* const bad[] = {
    "",
    "localhost:6379",
    "http://h",
    "rediss://h",          /* TLS is not built in */
    "redis://h:0",
    "redis://h:65536",
    "redis://h:-1",
    "redis://h:12a",
    "redis://h:",
    "redis://h/x",
    "redis://h/1/2",
    "redis://h/-1",
    "redis://h/2147483648",
    "redis://h/99999999999",
    "redis://h?db",
    "redis://h?db=1&db=2",
    "redis://h/1?db=2",
    "redis://h?timeout=5", /* unknown settings are not ignored */
    "redis://h?db=1&",
    "redis://bad host",
    "redis://h\x01",
    "redis://[::1",
    "redis://[]:1",
    "redis://[::1]x",
    "redis://[zz]",
    "redis://:6379",
    "redis://u:%zz@h",
    "redis://u:%4@h",
    "redis://u:%00@h",
    "unix://",
    "unix:///",
    "unix://relative.sock",
    "unix://h/x.sock",
    "unix:///x.sock?db=a",
    "unix:///x.sock?foo=1",
};

static void test_good_urls(void** state) {
  (void)state;
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    const url_case_t* c = &good[i];
    admit__redis_url_t u;
    int rc = admit__redis_url_parse(&u, c->url);
    if (rc != 0) fprintf(stderr, "rejected: %s\n", c->url);
    assert_int_equal(rc, 0);
    assert_int_equal(u.is_unix, c->is_unix);
    if (c->host != NULL)
      assert_string_equal(u.host, c->host);
    else
      assert_null(u.host);
    assert_int_equal(u.port, c->port);
    if (c->path != NULL)
      assert_string_equal(u.path, c->path);
    else
      assert_null(u.path);
    if (c->user != NULL)
      assert_string_equal(u.user, c->user);
    else
      assert_null(u.user);
    if (c->password != NULL)
      assert_string_equal(u.password, c->password);
    else
      assert_null(u.password);
    assert_int_equal(u.db, c->db);
    admit__redis_url_free(&u);
    /* Freeing twice is safe: free zeroes. */
    admit__redis_url_free(&u);
  }
}

static void test_bad_urls(void** state) {
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    admit__redis_url_t u;
    int rc = admit__redis_url_parse(&u, bad[i]);
    if (rc != ADMIT_ECONFIG) fprintf(stderr, "accepted: %s\n", bad[i]);
    assert_int_equal(rc, ADMIT_ECONFIG);
    assert_null(u.host);
    assert_null(u.path);
    assert_null(u.user);
    assert_null(u.password);
  }
  admit__redis_url_t u;
  assert_int_equal(admit__redis_url_parse(&u, NULL), ADMIT_ECONFIG);
  assert_int_equal(admit__redis_url_parse(NULL, "redis://h"), ADMIT_EINVAL);
}

/* A bad URL or prefix is a configuration error from admit_redis_new, never
 * a connection that silently fails open later. */
static void test_new_rejects_misconfiguration(void** state) {
  (void)state;
  admit_redis_t* r = (admit_redis_t*)1;
  admit_redis_options_t o;
  memset(&o, 0, sizeof(o));
  o.url = "redis://h:99999";
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  assert_null(r);
  o.url = "rediss://h";
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  o.url = "redis://127.0.0.1:1/0";
  o.prefix = "bad{prefix}";
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  o.prefix = "";
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  o.prefix = "has space";
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  assert_int_equal(admit_redis_new(NULL, &o), ADMIT_EINVAL);
  /* The environment variable is read when the options give no URL. */
  setenv("ADMIT_REDIS_URL", "ftp://nope", 1);
  o.url = NULL;
  o.prefix = NULL;
  assert_int_equal(admit_redis_new(&r, &o), ADMIT_ECONFIG);
  assert_int_equal(admit_redis_new(&r, NULL), ADMIT_ECONFIG);
  unsetenv("ADMIT_REDIS_URL");
  admit_redis_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_urls),
      cmocka_unit_test(test_bad_urls),
      cmocka_unit_test(test_new_rejects_misconfiguration),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
