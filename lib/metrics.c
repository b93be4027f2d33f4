/* Histograms, sliding-window counters and Prometheus text exposition. */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Prometheus-style latency bounds: 100 us to 60 s, then +Inf. */
static const uint64_t bounds_ns[ADMIT_HISTOGRAM_BUCKETS - 1] = {
    100 * ADMIT_MICROSECOND,  250 * ADMIT_MICROSECOND,
    500 * ADMIT_MICROSECOND,  1 * ADMIT_MILLISECOND,
    2500 * ADMIT_MICROSECOND, 5 * ADMIT_MILLISECOND,
    10 * ADMIT_MILLISECOND,   25 * ADMIT_MILLISECOND,
    50 * ADMIT_MILLISECOND,   100 * ADMIT_MILLISECOND,
    250 * ADMIT_MILLISECOND,  500 * ADMIT_MILLISECOND,
    1ull * ADMIT_SECOND,      2500ull * ADMIT_MILLISECOND,
    5ull * ADMIT_SECOND,      10ull * ADMIT_SECOND,
    30ull * ADMIT_SECOND,     60ull * ADMIT_SECOND,
};

uint64_t admit_histogram_bound_ns(unsigned i) {
  return i < ADMIT_HISTOGRAM_BUCKETS - 1 ? bounds_ns[i] : UINT64_MAX;
}

unsigned admit__histo_bucket(uint64_t ns) {
  unsigned i = 0;
  while (i < ADMIT_HISTOGRAM_BUCKETS - 1 && ns > bounds_ns[i]) i++;
  return i;
}

void admit__histo_observe(admit__histo_t* h, uint64_t ns) {
  unsigned i = admit__histo_bucket(ns);
  atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void admit__histo_read(admit__histo_t* h, admit_histogram_t* out) {
  uint64_t run = 0;
  for (unsigned i = 0; i < ADMIT_HISTOGRAM_BUCKETS; i++) {
    run += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
    out->le[i] = run;
  }
  out->count = run;
  out->sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}

void admit__window_init(admit__window_t* w, uint64_t window_ns) {
  w->bucket_ns = window_ns / ADMIT__WINDOW_BUCKETS;
  if (w->bucket_ns == 0) w->bucket_ns = 1;
  for (int i = 0; i < ADMIT__WINDOW_BUCKETS; i++) {
    atomic_init(&w->b[i].stamp, 0);
    for (int j = 0; j < ADMIT__WINDOW_COUNTERS; j++)
      atomic_init(&w->b[i].v[j], 0);
  }
}

void admit__window_add(admit__window_t* w, uint64_t now, unsigned counter,
                       uint64_t n) {
  uint64_t slot = now / w->bucket_ns;
  admit__window_bucket_t* b = &w->b[slot % ADMIT__WINDOW_BUCKETS];
  uint64_t stamp = atomic_load_explicit(&b->stamp, memory_order_acquire);
  if (stamp < slot + 1) {
    /* The bucket holds an older slot: whoever wins the CAS recycles it. */
    if (atomic_compare_exchange_strong_explicit(&b->stamp, &stamp, slot + 1,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
      for (int j = 0; j < ADMIT__WINDOW_COUNTERS; j++)
        atomic_store_explicit(&b->v[j], 0, memory_order_relaxed);
    }
  }
  atomic_fetch_add_explicit(&b->v[counter], n, memory_order_relaxed);
}

void admit__window_sum(admit__window_t* w, uint64_t now,
                       uint64_t out[ADMIT__WINDOW_COUNTERS]) {
  uint64_t slot = now / w->bucket_ns;
  for (int j = 0; j < ADMIT__WINDOW_COUNTERS; j++) out[j] = 0;
  for (int i = 0; i < ADMIT__WINDOW_BUCKETS; i++) {
    uint64_t stamp = atomic_load_explicit(&w->b[i].stamp, memory_order_acquire);
    if (stamp == 0) continue;
    uint64_t s = stamp - 1;
    if (s > slot || slot - s >= ADMIT__WINDOW_BUCKETS) continue;
    for (int j = 0; j < ADMIT__WINDOW_COUNTERS; j++)
      out[j] += atomic_load_explicit(&w->b[i].v[j], memory_order_relaxed);
  }
}

void admit__text_printf(admit__text_t* t, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char* at = t->len < t->size ? t->buf + t->len : NULL;
  size_t room = t->len < t->size ? t->size - t->len : 0;
  int n = vsnprintf(at, room, fmt, ap);
  va_end(ap);
  if (n > 0) t->len += (size_t)n;
}

void admit__text_label(admit__text_t* t, const char* s) {
  for (; *s != '\0'; s++) {
    switch (*s) {
      case '\\':
        admit__text_printf(t, "\\\\");
        break;
      case '"':
        admit__text_printf(t, "\\\"");
        break;
      case '\n':
        admit__text_printf(t, "\\n");
        break;
      default:
        admit__text_printf(t, "%c", *s);
        break;
    }
  }
}

void admit__text_family(admit__text_t* t, const char* name, const char* type,
                        const char* help) {
  admit__text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                     type);
}

void admit__text_seconds(admit__text_t* t, uint64_t ns) {
  admit__text_printf(t, "%" PRIu64 ".%09" PRIu64, ns / ADMIT_SECOND,
                     ns % ADMIT_SECOND);
}

static void labels(admit__text_t* t, const char* label, const char* value,
                   const char* le) {
  if (label == NULL && le == NULL) return;
  admit__text_printf(t, "{");
  if (label != NULL) {
    admit__text_printf(t, "%s=\"", label);
    admit__text_label(t, value);
    admit__text_printf(t, "\"");
  }
  if (le != NULL) admit__text_printf(t, "%sle=\"%s\"", label ? "," : "", le);
  admit__text_printf(t, "}");
}

void admit__text_histogram(admit__text_t* t, const char* name,
                           const char* label, const char* value,
                           const admit_histogram_t* h) {
  for (unsigned i = 0; i < ADMIT_HISTOGRAM_BUCKETS; i++) {
    char le[32];
    if (i == ADMIT_HISTOGRAM_BUCKETS - 1) {
      snprintf(le, sizeof(le), "+Inf");
    } else {
      /* Bounds are whole microseconds; print them as short decimals. */
      uint64_t us = bounds_ns[i] / ADMIT_MICROSECOND;
      char frac[8];
      snprintf(frac, sizeof(frac), "%06" PRIu64, us % 1000000);
      size_t n = strlen(frac);
      while (n > 0 && frac[n - 1] == '0') frac[--n] = '\0';
      if (n == 0)
        snprintf(le, sizeof(le), "%" PRIu64, us / 1000000);
      else
        snprintf(le, sizeof(le), "%" PRIu64 ".%s", us / 1000000, frac);
    }
    admit__text_printf(t, "%s_bucket", name);
    labels(t, label, value, le);
    admit__text_printf(t, " %" PRIu64 "\n", h->le[i]);
  }
  admit__text_printf(t, "%s_sum", name);
  labels(t, label, value, NULL);
  admit__text_printf(t, " ");
  admit__text_seconds(t, h->sum_ns);
  admit__text_printf(t, "\n%s_count", name);
  labels(t, label, value, NULL);
  admit__text_printf(t, " %" PRIu64 "\n", h->count);
}
