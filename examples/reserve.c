/* Reserve and cancel: a token bucket of 1 per second with a burst of 2
 * hands out places in its future; a place that will not be used is given
 * back; a wait longer than the caller accepts fails at once, taking
 * nothing. A window cannot hold a place in a later window: it only says
 * when to come back. Output: doc/out/reserve.txt. */
#include <admit.h>
#include <stdio.h>

static uint64_t now_ns = 3600ull * ADMIT_SECOND;
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

static void show(const char* what, int rc, const admit_reservation_t* r,
                 const admit_decision_t* d) {
  if (rc == 0) {
    printf("%-28s reserved=%d wait=%.1fs\n", what, r->reserved,
           r->wait_ns / 1e9);
  } else {
    printf("%-28s %s, retry_after=%.1fs\n", what, admit_err_name(rc),
           d->retry_after_ns / 1e9);
  }
}

int main(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_quota_t q;
  admit_limiter_t* l;
  admit_reservation_t r[4];
  admit_decision_t d;
  int rc;
  //! [reserve]
  admit_quota_parse(&q, ADMIT_TOKEN_BUCKET, "1/second", NULL);
  q.burst[0] = 2;
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
  for (int i = 0; i < 4; i++) { /* four places, waiting up to 5 s each */
    rc = admit_limiter_reserve(l, 1, 5ull * ADMIT_SECOND, &r[i], &d);
    show("reserve(1, max_wait=5s)", rc, &r[i], &d);
  }
  admit_limiter_cancel(l, &r[3]); /* the last will not be used after all */
  rc = admit_limiter_reserve(l, 1, ADMIT_SECOND / 2, &r[3], &d);
  show("reserve(1, max_wait=0.5s)", rc, &r[3], &d);
  rc = admit_limiter_reserve(l, 1, 2ull * ADMIT_SECOND, &r[3], &d);
  show("reserve(1, max_wait=2s)", rc, &r[3], &d);
  //! [reserve]
  admit_limiter_free(l);

  admit_quota_parse(&q, ADMIT_FIXED_WINDOW, "2 per 10 seconds", NULL);
  if (admit_limiter_new(&l, &q, &clock) < 0) return 1;
  now_ns += 4ull * ADMIT_SECOND; /* 4 s into a window */
  for (int i = 0; i < 3; i++) {
    rc = admit_limiter_reserve(l, 1, 10ull * ADMIT_SECOND, &r[0], &d);
    show("window reserve(1, 10s)", rc, &r[0], &d);
  }
  admit_limiter_free(l);
  return 0;
}
