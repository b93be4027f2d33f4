/* Rate specs: parsing ("10/minute;100/hour") and exact formatting.
 *
 * The grammar is documented on admit_rate_parse() in include/admit/common.h.
 * Everything here is pure: no allocation, no global state, no locale. */
#include "internal.h"

#include <limits.h>
#include <string.h>

typedef struct rate_unit_s {
  const char* name;
  uint64_t ns;
} rate_unit_t;

#define NS_SECOND UINT64_C(1000000000)
#define NS_MINUTE (60 * NS_SECOND)
#define NS_HOUR (60 * NS_MINUTE)
#define NS_DAY (24 * NS_HOUR)

/* Every accepted unit name, compared case-insensitively and in full.
 * Month and year follow the Python `limits` library: 30 and 360 days. */
static const rate_unit_t rate_units[] = {
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
    {"s", NS_SECOND},
    {"sec", NS_SECOND},
    {"secs", NS_SECOND},
    {"second", NS_SECOND},
    {"seconds", NS_SECOND},
    {"m", NS_MINUTE},
    {"min", NS_MINUTE},
    {"mins", NS_MINUTE},
    {"minute", NS_MINUTE},
    {"minutes", NS_MINUTE},
    {"h", NS_HOUR},
    {"hr", NS_HOUR},
    {"hrs", NS_HOUR},
    {"hour", NS_HOUR},
    {"hours", NS_HOUR},
    {"d", NS_DAY},
    {"day", NS_DAY},
    {"days", NS_DAY},
    {"w", 7 * NS_DAY},
    {"week", 7 * NS_DAY},
    {"weeks", 7 * NS_DAY},
    {"month", 30 * NS_DAY},
    {"months", 30 * NS_DAY},
    {"year", 360 * NS_DAY},
    {"years", 360 * NS_DAY},
};

/* The units admit_rate_format() writes, largest first. */
static const rate_unit_t format_units[] = {
    {"d", NS_DAY},  {"h", NS_HOUR},   {"m", NS_MINUTE}, {"s", NS_SECOND},
    {"ms", 1000000}, {"us", 1000},     {"ns", 1},
};

/* ASCII only, so the result never depends on the locale. */
static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static int is_separator(char c) { return c == ';' || c == ',' || c == '|'; }

static size_t skip_space(const char* s, size_t p) {
  while (is_space(s[p])) p++;
  return p;
}

/* Reads a nonzero decimal number at s[*p]. Returns 0 and advances *p, or
 * ADMIT_EINVAL (no digit, zero, or more than UINT64_MAX) leaving *p at the
 * number's first byte. */
static int read_number(const char* s, size_t* p, uint64_t* out) {
  size_t q = *p;
  uint64_t v = 0;
  int overflow = 0;
  if (!is_digit(s[q])) return ADMIT_EINVAL;
  for (; is_digit(s[q]); q++) {
    if (__builtin_mul_overflow(v, 10, &v) ||
        __builtin_add_overflow(v, (uint64_t)(s[q] - '0'), &v))
      overflow = 1;
  }
  if (overflow || v == 0) return ADMIT_EINVAL;
  *out = v;
  *p = q;
  return 0;
}

/* Looks up the unit of @p len letters at @p s; returns its length in ns or 0
 * when unknown. */
static uint64_t unit_ns(const char* s, size_t len) {
  for (size_t i = 0; i < sizeof(rate_units) / sizeof(rate_units[0]); i++) {
    const char* name = rate_units[i].name;
    size_t j = 0;
    while (j < len && name[j] != '\0' && to_lower(s[j]) == name[j]) j++;
    if (j == len && name[j] == '\0') return rate_units[i].ns;
  }
  return 0;
}

/* Parses one rate starting at s[*p] (whitespace already skipped). Returns 0
 * and advances *p past it, or ADMIT_EINVAL with *p at the failing byte. */
static int parse_item(const char* s, size_t* p, admit_rate_t* out) {
  size_t q = *p;
  uint64_t count, mult = 1, unit;
  if (read_number(s, &q, &count) < 0) goto fail;
  q = skip_space(s, q);
  if (s[q] == '/') {
    q++;
  } else if (to_lower(s[q]) == 'p' && to_lower(s[q + 1]) == 'e' &&
             to_lower(s[q + 2]) == 'r') {
    /* Like `limits`, "per" needs no surrounding space: "10per5seconds". */
    q += 3;
  } else {
    goto fail;
  }
  q = skip_space(s, q);
  size_t mult_at = q;
  if (is_digit(s[q])) {
    if (read_number(s, &q, &mult) < 0) goto fail;
    q = skip_space(s, q);
  }
  size_t unit_at = q;
  while (is_alpha(s[q])) q++;
  unit = unit_ns(s + unit_at, q - unit_at);
  if (unit == 0) {
    q = unit_at;
    goto fail;
  }
  if (__builtin_mul_overflow(mult, unit, &out->period_ns)) {
    q = mult_at;
    goto fail;
  }
  out->count = count;
  *p = q;
  return 0;
fail:
  *p = q;
  return ADMIT_EINVAL;
}

/* The parser behind admit_rate_parse() and admit_quota_parse(). Accepts at
 * most @p cap rates and, when @p rates is not NULL, writes them there (and,
 * if @p starts is not NULL, the offset of each rate's first byte). Returns
 * the number of rates, or ADMIT_EINVAL with *err at the first problem from
 * the left. */
static int parse_spec(const char* spec, admit_rate_t* rates, size_t cap,
                      size_t* starts, size_t* err) {
  size_t p = 0;
  int n = 0;
  *err = 0;
  if (spec == NULL) return ADMIT_EINVAL;
  for (;;) {
    admit_rate_t r;
    p = skip_space(spec, p);
    size_t start = p;
    if (parse_item(spec, &p, &r) < 0) {
      *err = p;
      return ADMIT_EINVAL;
    }
    if ((size_t)n >= cap || n == INT_MAX) {
      *err = start;
      return ADMIT_EINVAL;
    }
    if (rates != NULL) rates[n] = r;
    if (starts != NULL) starts[n] = start;
    n++;
    p = skip_space(spec, p);
    if (spec[p] == '\0') return n;
    if (!is_separator(spec[p])) {
      *err = p;
      return ADMIT_EINVAL;
    }
    p++;
  }
}

int admit_rate_parse(const char* spec, admit_rate_t* rates, size_t cap,
                     size_t* err_offset) {
  size_t err = 0;
  int n;
  if (rates == NULL && cap == 0) {
    /* Counting mode: validate and count, write nothing. */
    n = parse_spec(spec, NULL, SIZE_MAX, NULL, &err);
  } else if (rates == NULL) {
    n = ADMIT_EINVAL;
  } else {
    /* Validate first so that a failed parse leaves @p rates untouched. */
    n = parse_spec(spec, NULL, cap, NULL, &err);
    if (n >= 0) n = parse_spec(spec, rates, cap, NULL, &err);
  }
  if (n < 0 && err_offset != NULL) *err_offset = err;
  return n;
}

int admit_rate_format(const admit_rate_t* rate, char* buf, size_t size) {
  if (buf != NULL && size > 0) buf[0] = '\0';
  if (rate == NULL || buf == NULL || rate->count == 0 ||
      rate->period_ns == 0)
    return ADMIT_EINVAL;
  /* The largest unit that divides the period gives the fewest digits, and
   * larger units never have longer names, so it is the shortest form. */
  const rate_unit_t* u = &format_units[0];
  while (rate->period_ns % u->ns != 0) u++;
  char tmp[64];
  size_t n = (size_t)admit__u64_dec(tmp, rate->count);
  tmp[n++] = '/';
  n += (size_t)admit__u64_dec(tmp + n, rate->period_ns / u->ns);
  size_t ulen = strlen(u->name);
  memcpy(tmp + n, u->name, ulen);
  n += ulen;
  if (n >= size) return ADMIT_EINVAL;
  memcpy(buf, tmp, n);
  buf[n] = '\0';
  return (int)n;
}

int admit_quota_parse(admit_quota_t* q, admit_algo_t algo, const char* spec,
                      size_t* err_offset) {
  size_t err = 0;
  size_t starts[ADMIT_RATES_MAX];
  if (q == NULL) {
    if (err_offset != NULL) *err_offset = 0;
    return ADMIT_EINVAL;
  }
  memset(q, 0, sizeof(*q));
  int n = parse_spec(spec, q->rates, ADMIT_RATES_MAX, starts, &err);
  if (n < 0) {
    memset(q, 0, sizeof(*q));
    if (err_offset != NULL) *err_offset = err;
    return n;
  }
  q->algo = algo;
  q->nrates = (uint32_t)n;
  int rc = admit_quota_validate(q);
  if (rc < 0 && err_offset != NULL) {
    /* Point at the first rate the algorithm cannot take on its own; a
     * problem with the whole (e.g. an unknown algorithm) is at offset 0. */
    *err_offset = 0;
    for (int i = 0; i < n; i++) {
      admit_quota_t one;
      memset(&one, 0, sizeof(one));
      one.algo = algo;
      one.nrates = 1;
      one.rates[0] = q->rates[i];
      if (admit_quota_validate(&one) < 0) {
        *err_offset = starts[i];
        break;
      }
    }
  }
  return rc;
}
