/* A semaphore bounding concurrency: capacity 2, at most 1 waiter. Shows
 * the non-blocking try, a bounded wait queue (a full queue refuses at
 * once), a permit handed straight to the waiter on release, and the
 * blocking form around a call. Single-threaded, so the output is exact:
 * doc/out/semaphore.txt. */
#include <admit.h>
#include <stdio.h>

static void granted(void* ud, uint64_t ticket, int status) {
  (void)ud;
  (void)ticket;
  printf("  callback: the queued waiter got the permit, status %d\n",
         status);
}

static void stats(admit_semaphore_t* s) {
  admit_semaphore_stats_t st;
  admit_semaphore_stats(s, &st);
  printf("  in_use=%llu waiting=%llu acquired=%llu rejected=%llu "
         "timed_out=%llu\n",
         (unsigned long long)st.in_use, (unsigned long long)st.waiting,
         (unsigned long long)st.acquired, (unsigned long long)st.rejected,
         (unsigned long long)st.timed_out);
}

//! [call]
/* Runs one vendor call under the semaphore, waiting at most 5 s for a
 * slot. Returns 0, or ADMIT_EFULL / ADMIT_ETIMEDOUT (answer 503). */
static int guarded_call(admit_semaphore_t* s, void (*call)(void)) {
  int rc = admit_semaphore_acquire(s, 0, 5ull * ADMIT_SECOND);
  if (rc < 0) return rc;
  call();
  admit_semaphore_release(s);
  return 0;
}
//! [call]

static void vendor_call(void) { printf("  calling the vendor\n"); }

int main(void) {
  admit_semaphore_options_t o = {0};
  o.capacity = 2;
  o.max_waiters = 1;
  admit_semaphore_t* s;
  uint64_t ticket;
  if (admit_semaphore_new(&s, &o) < 0) return 1;

  int rc = guarded_call(s, vendor_call);
  printf("guarded_call -> %d\n", rc);
  printf("try -> %d\n", admit_semaphore_try(s));
  printf("try -> %d\n", admit_semaphore_try(s));
  printf("try -> %d (both permits out)\n", admit_semaphore_try(s));
  printf("acquire(timeout 0) -> %s\n",
         admit_err_name(admit_semaphore_acquire(s, 0, 0)));
  printf("acquire_async -> %d (queued)\n",
         admit_semaphore_acquire_async(s, 0, granted, NULL, &ticket));
  printf("acquire_async -> %s (queue of 1 is full)\n",
         admit_err_name(admit_semaphore_acquire_async(s, 0, granted, NULL,
                                                       &ticket)));
  stats(s);
  printf("release:\n");
  admit_semaphore_release(s); /* goes straight to the queued waiter */
  stats(s);
  admit_semaphore_release(s);
  admit_semaphore_release(s);
  stats(s);
  admit_semaphore_free(s);
  return 0;
}
