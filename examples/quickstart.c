/* The README example: a token bucket allowing 10 a minute and 100 an hour,
 * asked 12 times in a row. The first 10 pass, the next 2 are told how long
 * to wait. Build: cc quickstart.c $(pkg-config --cflags --libs admit) */
#include <admit.h>
#include <stdio.h>

int main(void) {
  admit_quota_t q;
  admit_limiter_t* l;
  admit_decision_t d;
  int rc = admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "10/minute;100/hour", NULL);
  if (rc < 0 || (rc = admit_limiter_new(&l, &q, NULL)) < 0) {
    fprintf(stderr, "quickstart: %s\n", admit_strerror(rc));
    return 1;
  }
  for (int i = 0; i < 12; i++) {
    if ((rc = admit_limiter_try(l, 1, &d)) < 0) {
      fprintf(stderr, "quickstart: %s\n", admit_strerror(rc));
      break;
    }
    printf("%2d: %s, remaining %llu, retry after %.1f s\n", i,
           d.allowed ? "allowed" : "denied", (unsigned long long)d.remaining,
           d.retry_after_ns / 1e9);
  }
  admit_limiter_free(l);
  return rc < 0;
}
