/* libFuzzer target for the rate-spec parser and formatter.
 *
 * Feeds arbitrary bytes (as a NUL-terminated copy) to admit_rate_parse()
 * and checks its contract: it either returns 1..cap rates, all nonzero,
 * that format and parse back to themselves, or ADMIT_EINVAL with an offset
 * inside the string; counting mode agrees; a failed parse writes nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

#define CAP 4

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char* spec = malloc(size + 1);
  if (spec == NULL) return 0;
  memcpy(spec, data, size);
  spec[size] = '\0';
  size_t len = strlen(spec); /* the input may hold NULs */

  admit_rate_t rates[CAP];
  memset(rates, 0xa5, sizeof(rates));
  admit_rate_t pristine[CAP];
  memcpy(pristine, rates, sizeof(rates));
  size_t off = SIZE_MAX;
  int n = admit_rate_parse(spec, rates, CAP, &off);
  size_t count_off = SIZE_MAX;
  int counted = admit_rate_parse(spec, NULL, 0, &count_off);

  if (n == ADMIT_EINVAL) {
    if (off > len) abort();
    if (memcmp(rates, pristine, sizeof(rates)) != 0) abort();
    /* Counting mode has no cap: it counts more than CAP rates, or fails
     * at the same place, or later when the cap was hit first. */
    if (counted > 0) {
      if (counted <= CAP) abort();
    } else if (counted != ADMIT_EINVAL || count_off < off) {
      abort();
    }
  } else if (n >= 1 && n <= CAP) {
    if (counted != n) abort();
    for (int i = 0; i < n; i++) {
      if (rates[i].count == 0 || rates[i].period_ns == 0) abort();
      char buf[64];
      int w = admit_rate_format(&rates[i], buf, sizeof(buf));
      if (w <= 0 || (size_t)w != strlen(buf)) abort();
      admit_rate_t back;
      if (admit_rate_parse(buf, &back, 1, NULL) != 1) abort();
      if (back.count != rates[i].count ||
          back.period_ns != rates[i].period_ns)
        abort();
      /* One byte short fails cleanly. */
      if (admit_rate_format(&rates[i], buf, (size_t)w) != ADMIT_EINVAL)
        abort();
      if (buf[0] != '\0') abort();
    }
  } else {
    abort();
  }

  /* The quota wrapper agrees with the parser on what is a syntax error. */
  admit_quota_t q;
  size_t qoff = SIZE_MAX;
  int qrc = admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, spec, &qoff);
  if (qrc != 0 && qrc != ADMIT_EINVAL) abort();
  if (qrc == 0 && (counted < 1 || counted > ADMIT_RATES_MAX ||
                   q.nrates != (uint32_t)counted))
    abort();
  if (qrc == ADMIT_EINVAL && qoff > len) abort();

  free(spec);
  return 0;
}
