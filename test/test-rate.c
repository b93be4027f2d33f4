/* Rate specs: every accepted form with exact values, every rejection with
 * its exact offset, format/parse round trips, compatibility with the Python
 * `limits` library, quota parsing and bad input. */
#include "helpers.h"

#include <stdio.h>

#define S UINT64_C(1000000000)
#define MIN (60 * S)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

/* --- accepted specs -------------------------------------------------------*/

typedef struct accept_case_s {
  const char* spec;
  int n;
  admit_rate_t rates[ADMIT_RATES_MAX];
} accept_case_t;

static const accept_case_t accept_cases[] = {
    {"100/s", 1, {{100, S}}},
    {"100/second", 1, {{100, S}}},
    {"100/seconds", 1, {{100, S}}},
    {"100 per second", 1, {{100, S}}},
    {"100 per seconds", 1, {{100, S}}},
    {"10/minute", 1, {{10, MIN}}},
    {"10 per minute", 1, {{10, MIN}}},
    {"10/min", 1, {{10, MIN}}},
    {"10/m", 1, {{10, MIN}}},
    {"10/M", 1, {{10, MIN}}},
    {"5 per 10 seconds", 1, {{5, 10 * S}}},
    {"5/10s", 1, {{5, 10 * S}}},
    {"5/10 seconds", 1, {{5, 10 * S}}},
    {"5/10 second", 1, {{5, 10 * S}}},
    {"1000/hour", 1, {{1000, HOUR}}},
    {"1000/hr", 1, {{1000, HOUR}}},
    {"1000/h", 1, {{1000, HOUR}}},
    {"2/day", 1, {{2, DAY}}},
    {"2/d", 1, {{2, DAY}}},
    {"2 per 3 days", 1, {{2, 3 * DAY}}},
    {"1/week", 1, {{1, 7 * DAY}}},
    {"1/2w", 1, {{1, 14 * DAY}}},
    {"3/month", 1, {{3, 30 * DAY}}},
    {"4/year", 1, {{4, 360 * DAY}}},
    {"3/ms", 1, {{3, 1000000}}},
    {"3/250ms", 1, {{3, 250000000}}},
    {"3 per 250 milliseconds", 1, {{3, 250000000}}},
    {"7/us", 1, {{7, 1000}}},
    {"7/usec", 1, {{7, 1000}}},
    {"7 per microsecond", 1, {{7, 1000}}},
    {"9/ns", 1, {{9, 1}}},
    {"9/nsec", 1, {{9, 1}}},
    {"1/7ns", 1, {{1, 7}}},
    {"1 per 7 nanoseconds", 1, {{1, 7}}},
    /* Case, white space and leading zeros. */
    {"10/MINUTE", 1, {{10, MIN}}},
    {"10/Min", 1, {{10, MIN}}},
    {"10 Per 5 Seconds", 1, {{10, 5 * S}}},
    {"10 pEr minute", 1, {{10, MIN}}},
    {"10per5seconds", 1, {{10, 5 * S}}},
    {"10 persecond", 1, {{10, S}}},
    {" \t 10 \t/\t 5 \t s \t ", 1, {{10, 5 * S}}},
    {"\n\r\v\f10/s\n\r\v\f", 1, {{10, S}}},
    {"10 / 5 s", 1, {{10, 5 * S}}},
    {"10/ 5s", 1, {{10, 5 * S}}},
    {"0010/0005s", 1, {{10, 5 * S}}},
    /* Limits of the representable. */
    {"18446744073709551615/18446744073709551615ns", 1,
     {{UINT64_MAX, UINT64_MAX}}},
    {"18446744073709551615/s", 1, {{UINT64_MAX, S}}},
    {"1/18446744073s", 1, {{1, 18446744073 * S}}},
    {"1/18446744073709551us", 1, {{1, UINT64_C(18446744073709551000)}}},
    {"1/213503d", 1, {{1, 213503 * DAY}}},
    {"1/30500w", 1, {{1, 30500 * 7 * DAY}}},
    {"1/593 years", 1, {{1, 593 * 360 * DAY}}},
    {"1/307445734m", 1, {{1, 307445734 * MIN}}},
    /* Several rates and every separator. */
    {"10/minute;100/hour", 2, {{10, MIN}, {100, HOUR}}},
    {"10/minute ; 100/hour", 2, {{10, MIN}, {100, HOUR}}},
    {"10/minute,100/hour|1000/day", 3, {{10, MIN}, {100, HOUR}, {1000, DAY}}},
    {" 1/s ;\t2/2s , 3 per 3 s | 4/4 seconds ", 4,
     {{1, S}, {2, 2 * S}, {3, 3 * S}, {4, 4 * S}}},
    {"1/s;2/s;3/s;4/s;5/s;6/s;7/s;8/s", 8,
     {{1, S}, {2, S}, {3, S}, {4, S}, {5, S}, {6, S}, {7, S}, {8, S}}},
    {"5/s;5/s", 2, {{5, S}, {5, S}}},
};

static void test_accept_table(void** state) {
  (void)state;
  for (size_t i = 0; i < sizeof(accept_cases) / sizeof(accept_cases[0]); i++) {
    const accept_case_t* c = &accept_cases[i];
    admit_rate_t got[ADMIT_RATES_MAX];
    size_t off = 12345;
    memset(got, 0, sizeof(got));
    int n = admit_rate_parse(c->spec, got, ADMIT_RATES_MAX, &off);
    if (n != c->n) fail_msg("\"%s\": got %d rates, want %d", c->spec, n, c->n);
    assert_int_equal(off, 12345); /* untouched on success */
    for (int j = 0; j < n; j++) {
      if (got[j].count != c->rates[j].count ||
          got[j].period_ns != c->rates[j].period_ns)
        fail_msg("\"%s\" rate %d: got %llu/%lluns, want %llu/%lluns", c->spec,
                 j, (unsigned long long)got[j].count,
                 (unsigned long long)got[j].period_ns,
                 (unsigned long long)c->rates[j].count,
                 (unsigned long long)c->rates[j].period_ns);
    }
    /* Counting mode agrees, and needs no err_offset. */
    assert_int_equal(admit_rate_parse(c->spec, NULL, 0, NULL), c->n);
  }
}

/* Every unit name in every notation and case gives count/(mult*unit). */
typedef struct unit_case_s {
  const char* name;
  uint64_t ns;
} unit_case_t;

static const unit_case_t unit_cases[] = {
    {"ns", 1},
    {"nsec", 1},
    {"nsecs", 1},
    {"nanosecond", 1},
    {"nanoseconds", 1},
    {"us", 1000},
    {"usec", 1000},
    {"usecs", 1000},
    {"microsecond", 1000},
    {"microseconds", 1000},
    {"ms", 1000000},
    {"msec", 1000000},
    {"msecs", 1000000},
    {"millisecond", 1000000},
    {"milliseconds", 1000000},
    {"s", S},
    {"sec", S},
    {"secs", S},
    {"second", S},
    {"seconds", S},
    {"m", MIN},
    {"min", MIN},
    {"mins", MIN},
    {"minute", MIN},
    {"minutes", MIN},
    {"h", HOUR},
    {"hr", HOUR},
    {"hrs", HOUR},
    {"hour", HOUR},
    {"hours", HOUR},
    {"d", DAY},
    {"day", DAY},
    {"days", DAY},
    {"w", 7 * DAY},
    {"week", 7 * DAY},
    {"weeks", 7 * DAY},
    {"month", 30 * DAY},
    {"months", 30 * DAY},
    {"year", 360 * DAY},
    {"years", 360 * DAY},
};

/* Rewrites @p in into @p out in upper case (variant 1) or alternating case
 * (variant 2); variant 0 copies. */
static void recase(char* out, const char* in, int variant) {
  size_t i = 0;
  for (; in[i] != '\0'; i++) {
    char c = in[i];
    int up = variant == 1 || (variant == 2 && i % 2 == 0);
    out[i] = (up && c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
  }
  out[i] = '\0';
}

static void test_accept_every_unit(void** state) {
  (void)state;
  static const char* const forms[] = {
      "%llu/%s",         "%llu/%llu%s",       "%llu/%llu %s",
      "%llu per %s",     "%llu per %llu %s",  " %llu / %llu %s ",
      "%lluper%llu%s",   "\t%llu\tper\t%llu\t%s\t",
  };
  static const uint64_t counts[] = {1, 7, 1000, UINT64_MAX};
  static const uint64_t mults[] = {1, 3, 250};
  int checked = 0;
  for (size_t u = 0; u < sizeof(unit_cases) / sizeof(unit_cases[0]); u++) {
    for (int variant = 0; variant < 3; variant++) {
      char name[32];
      recase(name, unit_cases[u].name, variant);
      for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
        /* Forms with two numbers have a multiplier. */
        const char* second = strstr(strstr(forms[f], "%llu") + 1, "%llu");
        int has_mult = second != NULL;
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
          for (size_t m = 0; m < (has_mult ? 3u : 1u); m++) {
            char spec[128];
            if (has_mult)
              snprintf(spec, sizeof(spec), forms[f],
                       (unsigned long long)counts[c],
                       (unsigned long long)mults[m], name);
            else
              snprintf(spec, sizeof(spec), forms[f],
                       (unsigned long long)counts[c], name);
            admit_rate_t r = {0, 0};
            size_t off = 0;
            int n = admit_rate_parse(spec, &r, 1, &off);
            if (n != 1) fail_msg("\"%s\": rc %d at %zu", spec, n, off);
            uint64_t want = (has_mult ? mults[m] : 1) * unit_cases[u].ns;
            if (r.count != counts[c] || r.period_ns != want)
              fail_msg("\"%s\": got %llu/%llu", spec,
                       (unsigned long long)r.count,
                       (unsigned long long)r.period_ns);
            checked++;
          }
        }
      }
    }
  }
  /* 40 units x 3 cases x (2 forms + 6 forms x 3 mults) x 4 counts. */
  assert_int_equal(checked, 40 * 3 * (2 + 6 * 3) * 4);
}

/* --- rejected specs -------------------------------------------------------*/

typedef struct reject_case_s {
  const char* spec;
  size_t offset;
} reject_case_t;

static const reject_case_t reject_cases[] = {
    /* Nothing there. */
    {"", 0},
    {"   ", 3},
    {"\t\n", 2},
    /* No count, signs, zeros, fractions. */
    {"s", 0},
    {"/s", 0},
    {"per second", 0},
    {"-5/s", 0},
    {"+5/s", 0},
    {"0/s", 0},
    {"00/s", 0},
    {" 0/s", 1},
    {"5.5/s", 1},
    {"5/0s", 2},
    {"5/ 00 s", 3},
    {"5/-1s", 2},
    {"5/+1s", 2},
    {"5/1.5s", 3},
    {"ten/s", 0},
    /* Missing or broken pieces. */
    {"5", 1},
    {"5 ", 2},
    {"5 x", 2},
    {"5 s", 2},
    {"5/", 2},
    {"5/ ", 3},
    {"5/10", 4},
    {"5/10 ", 5},
    {"5//s", 2},
    {"10 pe second", 3},
    {"10 p", 3},
    {"10 per", 6},
    {"10 perr second", 6},
    {"10 per per second", 7},
    {"10 / per second", 5},
    /* Unknown units. */
    {"5/xs", 2},
    {"5/secondss", 2},
    {"5/fortnight", 2},
    {"5/S2", 3},
    {"1/\xc2\xb5s", 2},
    {"1/se\xc2\xb5", 2},
    /* Trailing garbage. */
    {"5/sec onds", 6},
    {"5/s x", 4},
    {"5/s5", 3},
    {"5/s.", 3},
    {"5/s\x01", 3},
    {"5/s/2", 3},
    {"1/s:;2/m", 3},
    {"10/s 5/m", 5},
    /* Empty items and separators. */
    {"10/s;;5/m", 5},
    {"10/s; ;5/m", 6},
    {"10/s,,5/m", 5},
    {"10/s;", 5},
    {"10/s; ", 6},
    {";10/s", 0},
    {" ; 10/s", 1},
    {"10/s;5/m;", 9},
    {"1/s;;", 4},
    {"10/s;-5/m", 5},
    /* Overflow: numbers above UINT64_MAX, periods above UINT64_MAX ns. */
    {"18446744073709551616/s", 0},
    {"99999999999999999999999/s", 0},
    {"1/18446744073709551616ns", 2},
    {"1/100000000000 days", 2},
    {"1 per 100000000000 days", 6},
    {"1/18446744074s", 2},
    {"1/18446744073709552us", 2},
    {"1/213504d", 2},
    {"1/30501w", 2},
    {"1/594 years", 2},
    {"1/307445735m", 2},
    {"1/s;1/213504d", 6},
};

static void test_reject_table(void** state) {
  (void)state;
  for (size_t i = 0; i < sizeof(reject_cases) / sizeof(reject_cases[0]); i++) {
    const reject_case_t* c = &reject_cases[i];
    admit_rate_t got[ADMIT_RATES_MAX];
    admit_rate_t pristine[ADMIT_RATES_MAX];
    memset(got, 0xa5, sizeof(got));
    memcpy(pristine, got, sizeof(got));
    size_t off = 12345;
    int rc = admit_rate_parse(c->spec, got, ADMIT_RATES_MAX, &off);
    if (rc != ADMIT_EINVAL)
      fail_msg("\"%s\": rc %d, want ADMIT_EINVAL", c->spec, rc);
    if (off != c->offset)
      fail_msg("\"%s\": offset %zu, want %zu", c->spec, off, c->offset);
    assert_true(off <= strlen(c->spec));
    /* A failed parse writes nothing. */
    assert_memory_equal(got, pristine, sizeof(got));
    /* Counting mode fails at the same place; err_offset may be NULL. */
    off = 12345;
    assert_int_equal(admit_rate_parse(c->spec, NULL, 0, &off), ADMIT_EINVAL);
    assert_int_equal(off, c->offset);
    assert_int_equal(admit_rate_parse(c->spec, got, ADMIT_RATES_MAX, NULL),
                     ADMIT_EINVAL);
  }
}

/* More rates than @p cap fail at the start of the first one too many, and
 * problems are reported left to right. */
static void test_cap(void** state) {
  (void)state;
  admit_rate_t r[3];
  size_t off = 0;
  const char* spec = "1/s;2/s; 3/s";
  assert_int_equal(admit_rate_parse(spec, r, 3, &off), 3);
  assert_int_equal(admit_rate_parse(spec, r, 2, &off), ADMIT_EINVAL);
  assert_int_equal(off, 9);
  assert_int_equal(admit_rate_parse(spec, r, 1, &off), ADMIT_EINVAL);
  assert_int_equal(off, 4);
  /* rates given with cap 0: the first rate is already one too many. */
  assert_int_equal(admit_rate_parse("  1/s", r, 0, &off), ADMIT_EINVAL);
  assert_int_equal(off, 2);
  /* The cap is hit before the later syntax error. */
  assert_int_equal(admit_rate_parse("1/s;2/s;x", r, 1, &off), ADMIT_EINVAL);
  assert_int_equal(off, 4);
  /* Counting mode has no cap. */
  char big[4 * 1000 + 1];
  for (int i = 0; i < 1000; i++) memcpy(big + 4 * i, "1/s;", 4);
  big[4 * 1000 - 1] = '\0';
  assert_int_equal(admit_rate_parse(big, NULL, 0, &off), 1000);
  assert_int_equal(admit_rate_parse(big, r, 3, &off), ADMIT_EINVAL);
  assert_int_equal(off, 12);
}

static void test_bad_input(void** state) {
  (void)state;
  admit_rate_t r[2] = {{7, 7}, {7, 7}};
  size_t off = 12345;
  assert_int_equal(admit_rate_parse(NULL, r, 2, &off), ADMIT_EINVAL);
  assert_int_equal(off, 0);
  off = 12345;
  assert_int_equal(admit_rate_parse(NULL, NULL, 0, &off), ADMIT_EINVAL);
  assert_int_equal(off, 0);
  assert_int_equal(admit_rate_parse(NULL, NULL, 0, NULL), ADMIT_EINVAL);
  off = 12345;
  assert_int_equal(admit_rate_parse("1/s", NULL, 2, &off), ADMIT_EINVAL);
  assert_int_equal(off, 0);
  assert_int_equal(admit_rate_parse("1/s", NULL, 2, NULL), ADMIT_EINVAL);
  assert_int_equal(r[0].count, 7);
  assert_int_equal(r[1].period_ns, 7);
  /* A long spec with the error far in. */
  char big[5000];
  memset(big, ' ', sizeof(big));
  memcpy(big + 4000, "1/s x", 5);
  big[sizeof(big) - 1] = '\0';
  assert_int_equal(admit_rate_parse(big, r, 2, &off), ADMIT_EINVAL);
  assert_int_equal(off, 4004);
}

/* --- formatting -----------------------------------------------------------*/

typedef struct format_case_s {
  admit_rate_t rate;
  const char* text;
} format_case_t;

static const format_case_t format_cases[] = {
    {{10, MIN}, "10/1m"},
    {{5, 10 * S}, "5/10s"},
    {{3, 250000000}, "3/250ms"},
    {{1, 7}, "1/7ns"},
    {{1, 1000}, "1/1us"},
    {{1, 1500}, "1/1500ns"},
    {{100, S}, "100/1s"},
    {{1, 90 * S}, "1/90s"},
    {{2, 120 * S}, "2/2m"},
    {{1, 30 * MIN}, "1/30m"},
    {{1, HOUR}, "1/1h"},
    {{1, 25 * HOUR}, "1/25h"},
    {{1, 7 * DAY}, "1/7d"},
    {{4, 360 * DAY}, "4/360d"},
    {{1, S + 1}, "1/1000000001ns"},
    {{1, 213503 * DAY}, "1/213503d"},
    {{UINT64_MAX, UINT64_MAX}, "18446744073709551615/18446744073709551615ns"},
    {{UINT64_MAX, 18446744073 * S}, "18446744073709551615/18446744073s"},
};

static void test_format_table(void** state) {
  (void)state;
  for (size_t i = 0; i < sizeof(format_cases) / sizeof(format_cases[0]); i++) {
    const format_case_t* c = &format_cases[i];
    char buf[64];
    int n = admit_rate_format(&c->rate, buf, sizeof(buf));
    assert_int_equal(n, strlen(c->text));
    assert_string_equal(buf, c->text);
    admit_rate_t back;
    assert_int_equal(admit_rate_parse(buf, &back, 1, NULL), 1);
    assert_int_equal(back.count, c->rate.count);
    assert_int_equal(back.period_ns, c->rate.period_ns);
  }
}

/* Every buffer size from 0 up: too small fails with "" and writes nothing
 * past @p size; exactly enough succeeds. */
static void test_format_small_buffers(void** state) {
  (void)state;
  for (size_t i = 0; i < sizeof(format_cases) / sizeof(format_cases[0]); i++) {
    const format_case_t* c = &format_cases[i];
    size_t len = strlen(c->text);
    for (size_t size = 0; size <= len + 1; size++) {
      char buf[80];
      memset(buf, 'X', sizeof(buf));
      int n = admit_rate_format(&c->rate, buf, size);
      if (size <= len) {
        assert_int_equal(n, ADMIT_EINVAL);
        if (size > 0) assert_int_equal(buf[0], '\0');
        for (size_t k = size > 0 ? 1 : 0; k < sizeof(buf); k++)
          assert_int_equal(buf[k], 'X');
      } else {
        assert_int_equal(n, len);
        assert_string_equal(buf, c->text);
        for (size_t k = size; k < sizeof(buf); k++)
          assert_int_equal(buf[k], 'X');
      }
    }
  }
}

static void test_format_bad_input(void** state) {
  (void)state;
  char buf[64];
  admit_rate_t ok = {1, S};
  admit_rate_t zero_count = {0, S};
  admit_rate_t zero_period = {1, 0};
  assert_int_equal(admit_rate_format(NULL, buf, sizeof(buf)), ADMIT_EINVAL);
  assert_int_equal(admit_rate_format(&ok, NULL, sizeof(buf)), ADMIT_EINVAL);
  assert_int_equal(admit_rate_format(&ok, NULL, 0), ADMIT_EINVAL);
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(admit_rate_format(&zero_count, buf, sizeof(buf)),
                   ADMIT_EINVAL);
  assert_int_equal(buf[0], '\0');
  memset(buf, 'X', sizeof(buf));
  assert_int_equal(admit_rate_format(&zero_period, buf, sizeof(buf)),
                   ADMIT_EINVAL);
  assert_int_equal(buf[0], '\0');
}

/* A reproducible generator for the property tests. */
static uint64_t rng_state = 0x853c49e6748fea9bu;

static uint64_t rng(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  rng_state = x;
  return x;
}

/* A nonzero value with a random number of significant bits, so small and
 * huge values are both common. */
static uint64_t rng_magnitude(void) {
  unsigned bits = 1 + (unsigned)(rng() % 64);
  uint64_t v = bits == 64 ? rng() : rng() & ((UINT64_C(1) << bits) - 1);
  return v == 0 ? 1 : v;
}

static const uint64_t format_unit_ns[] = {DAY, HOUR, MIN, S, 1000000, 1000,
                                          1};
static const char* const format_unit_name[] = {"d", "h", "m", "s",
                                               "ms", "us", "ns"};

/* A random rate whose period is often a whole number of some unit. */
static admit_rate_t random_rate(void) {
  admit_rate_t r;
  r.count = rng_magnitude();
  uint64_t unit = format_unit_ns[rng() % 7];
  uint64_t mult = rng() % 4 == 0 ? rng_magnitude() : 1 + rng() % 1000;
  if (rng() % 5 == 0 || __builtin_mul_overflow(mult, unit, &r.period_ns))
    r.period_ns = rng_magnitude();
  return r;
}

/* Thousands of random rates: format, parse back, same rate; and the form is
 * the shortest one (the largest unit dividing the period). */
static void test_roundtrip_random(void** state) {
  (void)state;
  for (int i = 0; i < 20000; i++) {
    admit_rate_t r = random_rate();
    char buf[64];
    int n = admit_rate_format(&r, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(strlen(buf), n);
    admit_rate_t back = {0, 0};
    size_t off = 0;
    if (admit_rate_parse(buf, &back, 1, &off) != 1)
      fail_msg("\"%s\" does not parse back (at %zu)", buf, off);
    if (back.count != r.count || back.period_ns != r.period_ns)
      fail_msg("%llu/%lluns -> \"%s\" -> %llu/%lluns",
               (unsigned long long)r.count, (unsigned long long)r.period_ns,
               buf, (unsigned long long)back.count,
               (unsigned long long)back.period_ns);
    int u = 0;
    while (r.period_ns % format_unit_ns[u] != 0) u++;
    char want[64];
    snprintf(want, sizeof(want), "%llu/%llu%s", (unsigned long long)r.count,
             (unsigned long long)(r.period_ns / format_unit_ns[u]),
             format_unit_name[u]);
    assert_string_equal(buf, want);
  }
}

/* Random joined lists of random rates in random notations parse to exactly
 * the rates they were written from. */
static void test_random_specs(void** state) {
  (void)state;
  static const char* const seps[] = {";", ",", "|", " ; ", "\t,\n"};
  for (int i = 0; i < 5000; i++) {
    admit_rate_t want[ADMIT_RATES_MAX];
    char spec[1024];
    size_t len = 0;
    int n = 1 + (int)(rng() % ADMIT_RATES_MAX);
    for (int j = 0; j < n; j++) {
      want[j] = random_rate();
      int u = 0;
      while (want[j].period_ns % format_unit_ns[u] != 0) u++;
      unsigned long long mult = want[j].period_ns / format_unit_ns[u];
      const char* per = rng() % 2 ? "/" : " per ";
      if (j > 0) len += (size_t)snprintf(spec + len, sizeof(spec) - len, "%s",
                                         seps[rng() % 5]);
      if (mult == 1 && rng() % 2)
        len += (size_t)snprintf(spec + len, sizeof(spec) - len, "%llu%s%s",
                                (unsigned long long)want[j].count, per,
                                format_unit_name[u]);
      else
        len += (size_t)snprintf(spec + len, sizeof(spec) - len, "%llu%s%llu %s",
                                (unsigned long long)want[j].count, per, mult,
                                format_unit_name[u]);
    }
    admit_rate_t got[ADMIT_RATES_MAX];
    size_t off = 0;
    int rc = admit_rate_parse(spec, got, ADMIT_RATES_MAX, &off);
    if (rc != n) fail_msg("\"%s\": rc %d at %zu, want %d", spec, rc, off, n);
    for (int j = 0; j < n; j++) {
      assert_int_equal(got[j].count, want[j].count);
      assert_int_equal(got[j].period_ns, want[j].period_ns);
    }
  }
}

/* --- compatibility with the Python `limits` library -----------------------*/

typedef enum compat_kind_e {
  COMPAT_SAME,   /* limits accepts; admit gives the same rates */
  COMPAT_STRICT, /* limits accepts; admit rejects (documented) */
  COMPAT_EXT,    /* limits rejects; admit accepts (its extra notation) */
  COMPAT_REJECT  /* both reject */
} compat_kind_t;

typedef struct compat_case_s {
  const char* spec;
  compat_kind_t kind;
  int limits_n; /* rates `limits.parse_many` returned (0: ValueError) */
  struct {
    uint64_t amount;
    uint64_t seconds; /* RateLimitItem.get_expiry() */
  } limits_rates[3];
} compat_case_t;

/* Generated once with python3-limits 2.8.0 by the script below, whose
 * output is pasted verbatim (the script also asserts that each row's kind
 * matches what `limits` does). To regenerate, save the script and run it
 * with /usr/bin/python3.
 *
 *   from limits.util import parse_many
 *   SPECS = [("1/second", "SAME"), ...]   # the first two columns below
 *   def c_str(s):
 *       out = ""
 *       for ch in s:
 *           out += {"\t": "\\t", "\n": "\\n", '"': '\\"',
 *                   "\\": "\\\\"}.get(ch, ch)
 *       return '"' + out + '"'
 *   for spec, kind in SPECS:
 *       try:
 *           items = parse_many(spec)
 *       except ValueError:
 *           items = []
 *       accepted = len(items) > 0
 *       assert accepted == (kind in ("SAME", "STRICT")), (spec, kind, items)
 *       # STRICT rows keep only the count: admit rejects them, and some of
 *       # their values do not fit in 64 bits.
 *       shown = items if kind == "SAME" else []
 *       rates = ", ".join("{%du, %du}" % (i.amount, i.get_expiry())
 *                         for i in shown) or "{0, 0}"
 *       line = "    {%s, %s, %d, {%s}}," % (c_str(spec), "COMPAT_" + kind,
 *                                             len(items), rates)
 *       if len(line) > 80:
 *           line = "    {%s, %s, %d,\n     {%s}}," % (
 *               c_str(spec), "COMPAT_" + kind, len(items), rates)
 *       print(line)
 */
static const compat_case_t compat_cases[] = {
    {"1/second", COMPAT_SAME, 1, {{1u, 1u}}},
    {"1/seconds", COMPAT_SAME, 1, {{1u, 1u}}},
    {"1 per second", COMPAT_SAME, 1, {{1u, 1u}}},
    {"1 PER SECOND", COMPAT_SAME, 1, {{1u, 1u}}},
    {"1/Second", COMPAT_SAME, 1, {{1u, 1u}}},
    {"10/minute", COMPAT_SAME, 1, {{10u, 60u}}},
    {"10 per minute", COMPAT_SAME, 1, {{10u, 60u}}},
    {"10/minutes", COMPAT_SAME, 1, {{10u, 60u}}},
    {"1000/hour", COMPAT_SAME, 1, {{1000u, 3600u}}},
    {"1000/HOURS", COMPAT_SAME, 1, {{1000u, 3600u}}},
    {"2/day", COMPAT_SAME, 1, {{2u, 86400u}}},
    {"2/days", COMPAT_SAME, 1, {{2u, 86400u}}},
    {"3/month", COMPAT_SAME, 1, {{3u, 2592000u}}},
    {"3/months", COMPAT_SAME, 1, {{3u, 2592000u}}},
    {"4/year", COMPAT_SAME, 1, {{4u, 31104000u}}},
    {"4 per 2 years", COMPAT_SAME, 1, {{4u, 62208000u}}},
    {"5 per 10 seconds", COMPAT_SAME, 1, {{5u, 10u}}},
    {"5/10 seconds", COMPAT_SAME, 1, {{5u, 10u}}},
    {"5/10seconds", COMPAT_SAME, 1, {{5u, 10u}}},
    {"5 / 10 seconds", COMPAT_SAME, 1, {{5u, 10u}}},
    {"  5/second  ", COMPAT_SAME, 1, {{5u, 1u}}},
    {"\t7/second\n", COMPAT_SAME, 1, {{7u, 1u}}},
    {"1/second;5/minute", COMPAT_SAME, 2, {{1u, 1u}, {5u, 60u}}},
    {"1/second; 5/minute", COMPAT_SAME, 2, {{1u, 1u}, {5u, 60u}}},
    {"1/second , 5/minute", COMPAT_SAME, 2, {{1u, 1u}, {5u, 60u}}},
    {"1/second|5/minute", COMPAT_SAME, 2, {{1u, 1u}, {5u, 60u}}},
    {"1/second ; 2/minute ; 3/hour", COMPAT_SAME, 3,
     {{1u, 1u}, {2u, 60u}, {3u, 3600u}}},
    {"1 per 1 second,2 per 3 days|4 per 5 hours", COMPAT_SAME, 3,
     {{1u, 1u}, {2u, 259200u}, {4u, 18000u}}},
    {"10per5seconds", COMPAT_SAME, 1, {{10u, 5u}}},
    {"10 persecond", COMPAT_SAME, 1, {{10u, 1u}}},
    {"10 per5 minutes", COMPAT_SAME, 1, {{10u, 300u}}},
    {"010/second", COMPAT_SAME, 1, {{10u, 1u}}},
    {"1/01second", COMPAT_SAME, 1, {{1u, 1u}}},
    {"18446744073709551615/second", COMPAT_SAME, 1,
     {{18446744073709551615u, 1u}}},
    {"1/213503 days", COMPAT_SAME, 1, {{1u, 18446659200u}}},
    {"0/second", COMPAT_STRICT, 1, {{0, 0}}},
    {"5/0 seconds", COMPAT_STRICT, 1, {{0, 0}}},
    {"1/second:;2/minute", COMPAT_STRICT, 2, {{0, 0}}},
    {"18446744073709551616/second", COMPAT_STRICT, 1, {{0, 0}}},
    {"1/100000000000 days", COMPAT_STRICT, 1, {{0, 0}}},
    {"1/213504 days", COMPAT_STRICT, 1, {{0, 0}}},
    {"100/s", COMPAT_EXT, 0, {{0, 0}}},
    {"100/sec", COMPAT_EXT, 0, {{0, 0}}},
    {"10/min", COMPAT_EXT, 0, {{0, 0}}},
    {"10/m", COMPAT_EXT, 0, {{0, 0}}},
    {"3/ms", COMPAT_EXT, 0, {{0, 0}}},
    {"7/us", COMPAT_EXT, 0, {{0, 0}}},
    {"9/ns", COMPAT_EXT, 0, {{0, 0}}},
    {"5/10s", COMPAT_EXT, 0, {{0, 0}}},
    {"2/d", COMPAT_EXT, 0, {{0, 0}}},
    {"1/h", COMPAT_EXT, 0, {{0, 0}}},
    {"1/2w", COMPAT_EXT, 0, {{0, 0}}},
    {"1/week", COMPAT_EXT, 0, {{0, 0}}},
    {"1/hr", COMPAT_EXT, 0, {{0, 0}}},
    {"1/millisecond", COMPAT_EXT, 0, {{0, 0}}},
    {"", COMPAT_REJECT, 0, {{0, 0}}},
    {" ", COMPAT_REJECT, 0, {{0, 0}}},
    {"second", COMPAT_REJECT, 0, {{0, 0}}},
    {"/second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/;", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/second;", COMPAT_REJECT, 0, {{0, 0}}},
    {";1/second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/second;;1/minute", COMPAT_REJECT, 0, {{0, 0}}},
    {"-1/second", COMPAT_REJECT, 0, {{0, 0}}},
    {"+1/second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1.5/second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/1.5 second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1 second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/fortnight", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/second extra", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/secondss", COMPAT_REJECT, 0, {{0, 0}}},
    {"1//second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1 per per second", COMPAT_REJECT, 0, {{0, 0}}},
    {"ten/second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/second second", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/5 5 seconds", COMPAT_REJECT, 0, {{0, 0}}},
    {"1 / -5 seconds", COMPAT_REJECT, 0, {{0, 0}}},
    {"1/second/2", COMPAT_REJECT, 0, {{0, 0}}},
};

static void test_limits_compat(void** state) {
  (void)state;
  int same = 0;
  for (size_t i = 0; i < sizeof(compat_cases) / sizeof(compat_cases[0]); i++) {
    const compat_case_t* c = &compat_cases[i];
    admit_rate_t got[ADMIT_RATES_MAX];
    size_t off = 0;
    int n = admit_rate_parse(c->spec, got, ADMIT_RATES_MAX, &off);
    switch (c->kind) {
      case COMPAT_SAME:
        if (n != c->limits_n)
          fail_msg("\"%s\": %d rates, limits has %d", c->spec, n,
                   c->limits_n);
        for (int j = 0; j < n; j++) {
          assert_int_equal(got[j].count, c->limits_rates[j].amount);
          assert_int_equal(got[j].period_ns, c->limits_rates[j].seconds * S);
        }
        same++;
        break;
      case COMPAT_STRICT:
      case COMPAT_REJECT:
        if (n != ADMIT_EINVAL) fail_msg("\"%s\": accepted", c->spec);
        assert_true(off <= strlen(c->spec));
        break;
      case COMPAT_EXT:
        if (n != 1) fail_msg("\"%s\": rc %d at %zu", c->spec, n, off);
        break;
    }
  }
  assert_true(same >= 30);
}

/* --- quotas ---------------------------------------------------------------*/

static void test_quota_parse(void** state) {
  (void)state;
  admit_quota_t q;
  size_t off = 12345;
  memset(&q, 0xa5, sizeof(q));
  assert_int_equal(
      admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "10/minute;100/hour", &off),
      0);
  assert_int_equal(off, 12345);
  assert_int_equal(q.algo, ADMIT_TOKEN_BUCKET);
  assert_int_equal(q.nrates, 2);
  assert_int_equal(q.rates[0].count, 10);
  assert_int_equal(q.rates[0].period_ns, MIN);
  assert_int_equal(q.rates[1].count, 100);
  assert_int_equal(q.rates[1].period_ns, HOUR);
  for (int i = 0; i < ADMIT_RATES_MAX; i++) assert_int_equal(q.burst[i], 0);
  for (int i = 2; i < ADMIT_RATES_MAX; i++) {
    assert_int_equal(q.rates[i].count, 0);
    assert_int_equal(q.rates[i].period_ns, 0);
  }
  assert_int_equal(
      admit_quota_parse(&q, ADMIT_FIXED_WINDOW, " 5 per 10 seconds ", NULL),
      0);
  assert_int_equal(q.algo, ADMIT_FIXED_WINDOW);
  assert_int_equal(q.nrates, 1);
  assert_int_equal(q.rates[0].count, 5);
  assert_int_equal(q.rates[0].period_ns, 10 * S);
  assert_int_equal(
      admit_quota_parse(&q, ADMIT_SLIDING_WINDOW,
                        "1/s;2/s;3/s;4/s;5/s;6/s;7/s;8/s", NULL),
      0);
  assert_int_equal(q.nrates, ADMIT_RATES_MAX);
  assert_int_equal(q.rates[7].count, 8);
}

static void test_quota_parse_errors(void** state) {
  (void)state;
  admit_quota_t q;
  size_t off = 12345;
  assert_int_equal(admit_quota_parse(NULL, ADMIT_TOKEN_BUCKET, "1/s", &off),
                   ADMIT_EINVAL);
  assert_int_equal(off, 0);
  off = 12345;
  assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, NULL, &off),
                   ADMIT_EINVAL);
  assert_int_equal(off, 0);
  assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "10/s;;5/m",
                                     &off),
                   ADMIT_EINVAL);
  assert_int_equal(off, 5);
  assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "1/s x", NULL),
                   ADMIT_EINVAL);
  /* A ninth rate is one more than a quota holds. */
  assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET,
                                     "1/s;2/s;3/s;4/s;5/s;6/s;7/s;8/s; 9/s",
                                     &off),
                   ADMIT_EINVAL);
  assert_int_equal(off, 33);
  /* Parsed but refused by admit_quota_validate: an unknown algorithm is a
   * problem of the whole (offset 0); a rate the algorithm cannot represent
   * is pointed at. */
  off = 12345;
  assert_int_equal(admit_quota_parse(&q, (admit_algo_t)7, "1/s", &off),
                   ADMIT_EINVAL);
  assert_int_equal(off, 0);
  /* The bucket cannot admit more than one unit per nanosecond. */
  assert_int_equal(admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "1/s; 9/ns",
                                     &off),
                   ADMIT_EINVAL);
  assert_int_equal(off, 5);
  /* The sliding window counts in 32 bits. */
  assert_int_equal(admit_quota_parse(&q, ADMIT_SLIDING_WINDOW,
                                     "10/s;4294967296/h", &off),
                   ADMIT_EINVAL);
  assert_int_equal(off, 5);
  assert_int_equal(admit_quota_parse(&q, ADMIT_SLIDING_WINDOW,
                                     "4294967295/h", &off),
                   0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accept_table),
      cmocka_unit_test(test_accept_every_unit),
      cmocka_unit_test(test_reject_table),
      cmocka_unit_test(test_cap),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_format_table),
      cmocka_unit_test(test_format_small_buffers),
      cmocka_unit_test(test_format_bad_input),
      cmocka_unit_test(test_roundtrip_random),
      cmocka_unit_test(test_random_specs),
      cmocka_unit_test(test_limits_compat),
      cmocka_unit_test(test_quota_parse),
      cmocka_unit_test(test_quota_parse_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
