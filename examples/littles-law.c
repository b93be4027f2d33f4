/* Little's law, L = lambda * W, measured on admit's semaphore and
 * admission controller in simulated time (a fake clock and a seeded
 * generator, so the output is exact: doc/out/littles-law.txt).
 *
 * Part 1, sizing a semaphore: vendor calls arrive at 10/s (the global
 * limiter paces them) and take 1..3 s (90%) or 3..9 s (10%), 2.4 s on
 * average. Each arrival takes a permit with admit_semaphore_try() or is
 * refused.
 *
 * Part 2, sizing a backlog: an admission controller with 100 in flight and
 * a backlog of 200 serves 50 ms requests (2000/s at most) while 2500/s
 * arrive for 2 s. */
#include <admit.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t now_ns;
static uint64_t fake_now(void* ud) { (void)ud; return now_ns; }
static void fake_sleep(void* ud, uint64_t ns) { (void)ud; now_ns += ns; }

static uint64_t rng = 42;
static uint64_t next_rand(void) { /* xorshift64: the same on every host */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* A call's duration in ms: uniform 1000..3000 (90%) or 3000..9000. */
static uint64_t call_ms(void) {
  uint64_t r = next_rand();
  return r % 10 < 9 ? 1000 + (r >> 8) % 2001 : 3000 + (r >> 8) % 6001;
}

/* A min-heap of completion times. */
static uint64_t heap[4096];
static size_t nheap;

static void heap_push(uint64_t t) {
  size_t i = nheap++;
  while (i > 0 && heap[(i - 1) / 2] > t) {
    heap[i] = heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  heap[i] = t;
}

static uint64_t heap_pop(void) {
  uint64_t top = heap[0], last = heap[--nheap];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= nheap) break;
    if (c + 1 < nheap && heap[c + 1] < heap[c]) c++;
    if (heap[c] >= last) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = last;
  return top;
}

static void semaphore_run(uint64_t capacity) {
  enum { CALLS = 20000 };
  admit_semaphore_options_t o = {0};
  o.capacity = capacity;
  admit_semaphore_t* s;
  if (admit_semaphore_new(&s, &o) < 0) exit(1);
  rng = 42;
  nheap = 0;
  uint64_t refused = 0, busy_ns = 0, last = 0, in_use = 0, peak = 0;
  for (uint64_t i = 0; i < CALLS || nheap > 0;) {
    uint64_t arrival = i * (ADMIT_SECOND / 10);
    int done = nheap > 0 && (i >= CALLS || heap[0] <= arrival);
    now_ns = done ? heap[0] : arrival;
    busy_ns += in_use * (now_ns - last); /* integral of calls in flight */
    last = now_ns;
    if (done) {
      heap_pop();
      admit_semaphore_release(s);
      in_use--;
    } else {
      if (admit_semaphore_try(s) == 1) {
        heap_push(now_ns + call_ms() * ADMIT_MILLISECOND);
        if (++in_use > peak) peak = in_use;
      } else {
        refused++;
        (void)call_ms(); /* same draws whatever the capacity */
      }
      i++;
    }
  }
  double span = (double)(CALLS - 1) / 10;
  printf("  capacity %4llu: mean in flight %5.2f, peak %3llu, "
         "refused %5.2f%%\n",
         (unsigned long long)capacity, busy_ns / 1e9 / span,
         (unsigned long long)peak, 100.0 * refused / CALLS);
  admit_semaphore_free(s);
}

/* Part 2: requests in arrival order; a completion queue in time order. */
enum { REQS = 5000 };
static admit_admission_permit_t permits[REQS];
static uint64_t arrived[REQS];
static uint64_t fifo[REQS]; /* request ids by completion time */
static size_t fifo_head, fifo_tail;
static uint64_t done_at[REQS];
static uint64_t waited_max, waited_sum, admitted;

static void start(uint64_t id) {
  uint64_t w = now_ns - arrived[id];
  if (w > waited_max) waited_max = w;
  waited_sum += w;
  admitted++;
  done_at[id] = now_ns + 50 * ADMIT_MILLISECOND;
  fifo[fifo_tail++] = id;
}

static void on_admitted(void* ud, uint64_t ticket, int status) {
  (void)ticket;
  if (status == 0) start((uint64_t)(uintptr_t)ud);
}

static void admission_run(void) {
  admit_clock_t clock = {fake_now, fake_sleep, NULL};
  admit_admission_options_t o = {0};
  o.max_in_flight = 100;
  o.backlog = 200;
  o.no_shedding = 1;
  o.clock = &clock;
  admit_admission_t* a;
  now_ns = 0;
  if (admit_admission_new(&a, &o) < 0) exit(1);
  uint64_t rejected = 0, first_refusal = 0;
  for (uint64_t i = 0; i < REQS || fifo_head < fifo_tail;) {
    uint64_t arrival = i * (ADMIT_SECOND / 2500);
    int done = fifo_head < fifo_tail &&
               (i >= REQS || done_at[fifo[fifo_head]] <= arrival);
    if (done) {
      uint64_t id = fifo[fifo_head++];
      now_ns = done_at[id];
      admit_admission_leave(a, &permits[id], ADMIT_OUTCOME_SUCCESS);
    } else {
      now_ns = arrival;
      arrived[i] = now_ns;
      int rc = admit_admission_enter_async(a, 1, &permits[i], on_admitted,
                                           (void*)(uintptr_t)i);
      if (rc == 1) start(i);
      if (rc < 0 && rejected++ == 0) first_refusal = now_ns;
      i++;
    }
  }
  printf("  %d arrived in 2 s: %llu admitted, %llu refused at once (503)\n",
         REQS, (unsigned long long)admitted,
         (unsigned long long)rejected);
  printf("  first refusal at t=%.2fs, when the backlog had filled\n",
         first_refusal / 1e9);
  printf("  all served by t=%.2fs: %.0f per second\n", now_ns / 1e9,
         admitted / (now_ns / 1e9));
  printf("  queue wait: mean %.1f ms, max %.1f ms\n",
         waited_sum / 1e6 / admitted, waited_max / 1e6);
  admit_admission_free(a);
}

int main(void) {
  printf("semaphore, 10 calls/s of 2.4 s on average (L = 10 * 2.4 = 24):\n");
  static const uint64_t caps[] = {1000, 24, 30, 40, 50};
  for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
    semaphore_run(caps[i]);
  }
  printf("admission, 100 in flight x 50 ms = 2000/s, backlog 200, "
         "2500/s arriving:\n");
  admission_run();
  return 0;
}
