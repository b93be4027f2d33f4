/* The circuit breaker: closed / open / half-open over a sliding window. */
#include "internal.h"

#include <pthread.h>
#include <string.h>

/* Buckets of a time window: outcomes older than the window fall out one
 * bucket (window/10) at a time, as in resilience4j's time-based window. */
#define BREAKER_TIME_BUCKETS 10
#define BREAKER_MAX_WINDOW_CALLS (1u << 20)

enum { OUT_FAILED = 1, OUT_SLOW = 2 };

typedef struct bucket_s {
  uint64_t stamp; /* bucket slot + 1; 0 = empty */
  uint64_t calls;
  uint64_t failures;
  uint64_t slow;
} bucket_t;

struct admit_breaker_s {
  /* (epoch << 2) | state; written under the lock, read lock-free. */
  _Atomic uint64_t word;
  _Atomic uint64_t permitted;
  pthread_mutex_t lock;
  admit__clock_t clock;
  admit_breaker_window_t window;
  uint32_t window_calls;
  uint64_t window_ns;
  uint64_t bucket_ns;
  uint32_t min_calls;
  double failure_rate;
  double slow_rate;
  uint64_t slow_call_ns;
  uint64_t open_ns;
  uint32_t probes;
  /* Everything below is guarded by the lock. */
  uint64_t open_until;
  uint64_t state_since;
  uint64_t rejected;
  uint64_t opened, half_opened, closed;
  /* Count window: a ring of outcome bits. */
  uint8_t* ring;
  uint32_t ring_pos, ring_len;
  uint64_t calls, failures, slow;
  /* Time window. */
  bucket_t buckets[BREAKER_TIME_BUCKETS];
  /* Half-open probes. */
  uint32_t probes_issued, probes_done, probe_failures, probe_slow;
};

static const char* const state_names[] = {"closed", "open", "half_open"};
static const char* const outcome_names[] = {"success", "failure", "timeout",
                                            "vendor_limited", "cancelled"};

const char* admit_breaker_state_name(int state) {
  if (state < 0 || state > ADMIT_BREAKER_HALF_OPEN) return "unknown";
  return state_names[state];
}

const char* admit_outcome_name(int outcome) {
  if (outcome < 0 || outcome > ADMIT_OUTCOME_CANCELLED) return "unknown";
  return outcome_names[outcome];
}

static inline int word_state(uint64_t w) { return (int)(w & 3); }
static inline uint64_t word_epoch(uint64_t w) { return w >> 2; }

int admit_breaker_new(admit_breaker_t** out,
                      const admit_breaker_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  admit_breaker_options_t o = {0};
  if (opts != NULL) o = *opts;
  if (o.window != ADMIT_BREAKER_COUNT_WINDOW &&
      o.window != ADMIT_BREAKER_TIME_WINDOW)
    return ADMIT_EINVAL;
  /* NaN fails both comparisons and is refused with the negatives. */
  if (!(o.failure_rate >= 0) || !(o.slow_rate >= 0)) return ADMIT_EINVAL;
  if (o.window_calls > BREAKER_MAX_WINDOW_CALLS) return ADMIT_EINVAL;
  admit_breaker_t* b = admit__calloc(1, sizeof(*b));
  if (b == NULL) return ADMIT_ENOMEM;
  admit__clock_init(&b->clock, o.clock);
  b->window = o.window;
  b->window_calls = o.window_calls ? o.window_calls : 100;
  b->window_ns = o.window_ns ? o.window_ns : 60ull * ADMIT_SECOND;
  b->bucket_ns = b->window_ns / BREAKER_TIME_BUCKETS;
  if (b->bucket_ns == 0) b->bucket_ns = 1;
  b->min_calls = o.min_calls ? o.min_calls : 100;
  if (b->window == ADMIT_BREAKER_COUNT_WINDOW &&
      b->min_calls > b->window_calls)
    b->min_calls = b->window_calls;
  b->failure_rate = o.failure_rate > 0 ? o.failure_rate : 0.5;
  b->slow_rate = o.slow_rate > 0 ? o.slow_rate : 1.0;
  b->slow_call_ns = o.slow_call_ns ? o.slow_call_ns : 60ull * ADMIT_SECOND;
  b->open_ns = o.open_ns ? o.open_ns : 60ull * ADMIT_SECOND;
  b->probes = o.half_open_probes ? o.half_open_probes : 10;
  if (b->window == ADMIT_BREAKER_COUNT_WINDOW) {
    b->ring = admit__calloc(b->window_calls, 1);
    if (b->ring == NULL) {
      admit__free(b);
      return ADMIT_ENOMEM;
    }
  }
  if (pthread_mutex_init(&b->lock, NULL) != 0) {
    admit__free(b->ring);
    admit__free(b);
    return ADMIT_ENOMEM;
  }
  b->state_since = admit__clock_now(&b->clock);
  atomic_init(&b->word, (uint64_t)ADMIT_BREAKER_CLOSED);
  atomic_init(&b->permitted, 0);
  *out = b;
  return 0;
}

void admit_breaker_free(admit_breaker_t* b) {
  if (b == NULL) return;
  pthread_mutex_destroy(&b->lock);
  admit__free(b->ring);
  admit__free(b);
}

static void window_clear(admit_breaker_t* b) {
  if (b->ring != NULL) memset(b->ring, 0, b->window_calls);
  b->ring_pos = b->ring_len = 0;
  b->calls = b->failures = b->slow = 0;
  memset(b->buckets, 0, sizeof(b->buckets));
}

/* Locked. Moves to @p state, starting a new epoch so that outcomes of calls
 * admitted before the change are ignored. */
static void transition(admit_breaker_t* b, int state, uint64_t now) {
  uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
  uint64_t next = ((word_epoch(w) + 1) << 2) | (uint64_t)state;
  b->state_since = now;
  switch (state) {
    case ADMIT_BREAKER_OPEN:
      b->open_until = admit__sat_add(now, b->open_ns);
      b->opened++;
      break;
    case ADMIT_BREAKER_HALF_OPEN:
      b->probes_issued = b->probes_done = 0;
      b->probe_failures = b->probe_slow = 0;
      b->half_opened++;
      break;
    default:
      b->closed++;
      break;
  }
  window_clear(b);
  atomic_store_explicit(&b->word, next, memory_order_release);
}

/* Locked. An open breaker whose time is up becomes half-open. */
static void advance(admit_breaker_t* b, uint64_t now) {
  uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
  if (word_state(w) == ADMIT_BREAKER_OPEN && now >= b->open_until)
    transition(b, ADMIT_BREAKER_HALF_OPEN, now);
}

/* Locked. Sums the time window's live buckets. */
static void time_window_sum(admit_breaker_t* b, uint64_t now, uint64_t* calls,
                            uint64_t* failures, uint64_t* slow) {
  uint64_t slot = now / b->bucket_ns;
  *calls = *failures = *slow = 0;
  for (int i = 0; i < BREAKER_TIME_BUCKETS; i++) {
    const bucket_t* k = &b->buckets[i];
    if (k->stamp == 0) continue;
    uint64_t s = k->stamp - 1;
    if (s > slot || slot - s >= BREAKER_TIME_BUCKETS) continue;
    *calls += k->calls;
    *failures += k->failures;
    *slow += k->slow;
  }
}

/* Locked. Fills the window totals now. */
static void window_totals(admit_breaker_t* b, uint64_t now, uint64_t* calls,
                          uint64_t* failures, uint64_t* slow) {
  if (b->window == ADMIT_BREAKER_COUNT_WINDOW) {
    *calls = b->calls;
    *failures = b->failures;
    *slow = b->slow;
  } else {
    time_window_sum(b, now, calls, failures, slow);
  }
}

static void window_add(admit_breaker_t* b, uint64_t now, unsigned bits) {
  if (b->window == ADMIT_BREAKER_COUNT_WINDOW) {
    if (b->ring_len == b->window_calls) {
      unsigned old = b->ring[b->ring_pos];
      b->calls--;
      if (old & OUT_FAILED) b->failures--;
      if (old & OUT_SLOW) b->slow--;
    } else {
      b->ring_len++;
    }
    b->ring[b->ring_pos] = (uint8_t)bits;
    b->ring_pos = (b->ring_pos + 1) % b->window_calls;
    b->calls++;
    if (bits & OUT_FAILED) b->failures++;
    if (bits & OUT_SLOW) b->slow++;
    return;
  }
  uint64_t slot = now / b->bucket_ns;
  bucket_t* k = &b->buckets[slot % BREAKER_TIME_BUCKETS];
  if (k->stamp != slot + 1) {
    k->stamp = slot + 1;
    k->calls = k->failures = k->slow = 0;
  }
  k->calls++;
  if (bits & OUT_FAILED) k->failures++;
  if (bits & OUT_SLOW) k->slow++;
}

static bool over_threshold(const admit_breaker_t* b, uint64_t calls,
                           uint64_t failures, uint64_t slow) {
  if (calls == 0) return false;
  return (double)failures / (double)calls >= b->failure_rate ||
         (double)slow / (double)calls >= b->slow_rate;
}

int admit_breaker_enter(admit_breaker_t* b, uint64_t* token) {
  if (b == NULL || token == NULL) return ADMIT_EINVAL;
  uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
  if (word_state(w) == ADMIT_BREAKER_CLOSED) {
    *token = word_epoch(w) << 1;
    atomic_fetch_add_explicit(&b->permitted, 1, memory_order_relaxed);
    return 0;
  }
  uint64_t now = admit__clock_now(&b->clock);
  int rc = 0;
  pthread_mutex_lock(&b->lock);
  advance(b, now);
  w = atomic_load_explicit(&b->word, memory_order_relaxed);
  switch (word_state(w)) {
    case ADMIT_BREAKER_CLOSED:
      *token = word_epoch(w) << 1;
      break;
    case ADMIT_BREAKER_HALF_OPEN:
      if (b->probes_issued < b->probes) {
        b->probes_issued++;
        *token = (word_epoch(w) << 1) | 1;
      } else {
        rc = ADMIT_EOPEN;
      }
      break;
    default:
      rc = ADMIT_EOPEN;
      break;
  }
  if (rc == 0)
    atomic_fetch_add_explicit(&b->permitted, 1, memory_order_relaxed);
  else
    b->rejected++;
  pthread_mutex_unlock(&b->lock);
  return rc;
}

int admit_breaker_leave(admit_breaker_t* b, uint64_t token, int outcome,
                        uint64_t duration_ns) {
  if (b == NULL || outcome < ADMIT_OUTCOME_SUCCESS ||
      outcome > ADMIT_OUTCOME_CANCELLED)
    return ADMIT_EINVAL;
  if (outcome == ADMIT_OUTCOME_VENDOR_LIMITED ||
      outcome == ADMIT_OUTCOME_CANCELLED)
    return admit_breaker_abandon(b, token);
  unsigned bits = 0;
  if (outcome != ADMIT_OUTCOME_SUCCESS) bits |= OUT_FAILED;
  if (duration_ns >= b->slow_call_ns) bits |= OUT_SLOW;
  uint64_t now = admit__clock_now(&b->clock);
  pthread_mutex_lock(&b->lock);
  uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
  int probe = (int)(token & 1);
  if (word_epoch(w) != token >> 1) {
    /* A call from an earlier epoch: its outcome no longer matters. */
  } else if (word_state(w) == ADMIT_BREAKER_CLOSED && !probe) {
    window_add(b, now, bits);
    uint64_t calls, failures, slow;
    window_totals(b, now, &calls, &failures, &slow);
    if (calls >= b->min_calls && over_threshold(b, calls, failures, slow))
      transition(b, ADMIT_BREAKER_OPEN, now);
  } else if (word_state(w) == ADMIT_BREAKER_HALF_OPEN && probe) {
    b->probes_done++;
    if (bits & OUT_FAILED) b->probe_failures++;
    if (bits & OUT_SLOW) b->probe_slow++;
    if (b->probes_done >= b->probes) {
      bool bad =
          over_threshold(b, b->probes_done, b->probe_failures, b->probe_slow);
      transition(b, bad ? ADMIT_BREAKER_OPEN : ADMIT_BREAKER_CLOSED, now);
    }
  }
  pthread_mutex_unlock(&b->lock);
  return 0;
}

int admit_breaker_abandon(admit_breaker_t* b, uint64_t token) {
  if (b == NULL) return ADMIT_EINVAL;
  if ((token & 1) == 0) return 0; /* only probes hold a place */
  pthread_mutex_lock(&b->lock);
  uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
  if (word_epoch(w) == token >> 1 &&
      word_state(w) == ADMIT_BREAKER_HALF_OPEN && b->probes_issued > 0 &&
      b->probes_issued > b->probes_done)
    b->probes_issued--;
  pthread_mutex_unlock(&b->lock);
  return 0;
}

int admit_breaker_state(admit_breaker_t* b) {
  if (b == NULL) return ADMIT_EINVAL;
  uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
  if (word_state(w) != ADMIT_BREAKER_OPEN) return word_state(w);
  uint64_t now = admit__clock_now(&b->clock);
  pthread_mutex_lock(&b->lock);
  advance(b, now);
  w = atomic_load_explicit(&b->word, memory_order_relaxed);
  pthread_mutex_unlock(&b->lock);
  return word_state(w);
}

int admit_breaker_stats(admit_breaker_t* b, admit_breaker_stats_t* out) {
  if (b == NULL || out == NULL) return ADMIT_EINVAL;
  uint64_t now = admit__clock_now(&b->clock);
  memset(out, 0, sizeof(*out));
  pthread_mutex_lock(&b->lock);
  advance(b, now);
  uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
  out->state = (admit_breaker_state_t)word_state(w);
  if (out->state == ADMIT_BREAKER_HALF_OPEN) {
    out->calls = b->probes_done;
    out->failures = b->probe_failures;
    out->slow = b->probe_slow;
  } else {
    window_totals(b, now, &out->calls, &out->failures, &out->slow);
  }
  if (out->calls > 0) {
    out->failure_rate = (double)out->failures / (double)out->calls;
    out->slow_rate = (double)out->slow / (double)out->calls;
  }
  out->permitted = atomic_load_explicit(&b->permitted, memory_order_relaxed);
  out->rejected = b->rejected;
  out->opened = b->opened;
  out->half_opened = b->half_opened;
  out->closed = b->closed;
  out->state_since_ns = b->state_since;
  pthread_mutex_unlock(&b->lock);
  return 0;
}

int admit_breaker_trip(admit_breaker_t* b) {
  if (b == NULL) return ADMIT_EINVAL;
  uint64_t now = admit__clock_now(&b->clock);
  pthread_mutex_lock(&b->lock);
  transition(b, ADMIT_BREAKER_OPEN, now);
  pthread_mutex_unlock(&b->lock);
  return 0;
}

int admit_breaker_reset(admit_breaker_t* b) {
  if (b == NULL) return ADMIT_EINVAL;
  uint64_t now = admit__clock_now(&b->clock);
  pthread_mutex_lock(&b->lock);
  uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
  if (word_state(w) != ADMIT_BREAKER_CLOSED) {
    transition(b, ADMIT_BREAKER_CLOSED, now);
  } else {
    window_clear(b);
  }
  pthread_mutex_unlock(&b->lock);
  return 0;
}
