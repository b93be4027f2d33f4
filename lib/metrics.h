/* Metrics internals shared by the guard, the admission controller and the
 * health registry: lock-free histograms, sliding-window counters and a
 * Prometheus text writer. Not installed. */
#ifndef ADMIT_METRICS_H
#define ADMIT_METRICS_H

#include "internal.h"

/* A latency histogram: one atomic counter per bucket (not cumulative). */
typedef struct admit__histo_s {
  _Atomic uint64_t sum_ns;
  _Atomic uint64_t bucket[ADMIT_HISTOGRAM_BUCKETS];
} admit__histo_t;

void admit__histo_observe(admit__histo_t* h, uint64_t ns);
/* The bucket @p ns falls in. */
unsigned admit__histo_bucket(uint64_t ns);
/* A snapshot, cumulative; count is the sum of the buckets read. */
void admit__histo_read(admit__histo_t* h, admit_histogram_t* out);

/* Counters over a sliding window of ADMIT__WINDOW_BUCKETS time buckets.
 * Lock-free; a bucket that is recycled while another thread adds to it may
 * lose that one addition (counts are approximate only at bucket edges). */
#define ADMIT__WINDOW_BUCKETS 10
#define ADMIT__WINDOW_COUNTERS 4

typedef struct admit__window_bucket_s {
  _Atomic uint64_t stamp; /* slot + 1; 0 = empty */
  _Atomic uint64_t v[ADMIT__WINDOW_COUNTERS];
} admit__window_bucket_t;

typedef struct admit__window_s {
  uint64_t bucket_ns;
  admit__window_bucket_t b[ADMIT__WINDOW_BUCKETS];
} admit__window_t;

void admit__window_init(admit__window_t* w, uint64_t window_ns);
void admit__window_add(admit__window_t* w, uint64_t now, unsigned counter,
                       uint64_t n);
/* Sums each counter over the buckets still inside the window at @p now. */
void admit__window_sum(admit__window_t* w, uint64_t now,
                       uint64_t out[ADMIT__WINDOW_COUNTERS]);

/* Appends text to a caller's buffer, snprintf-style: len counts every byte
 * that would be written, even past the end; the buffer is always
 * NUL-terminated when size > 0. */
typedef struct admit__text_s {
  char* buf;
  size_t size;
  size_t len;
} admit__text_t;

void admit__text_printf(admit__text_t* t, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends @p s as a Prometheus label value (\\, \" and \n escaped). */
void admit__text_label(admit__text_t* t, const char* s);
/* Appends "# HELP name help\n# TYPE name type\n". */
void admit__text_family(admit__text_t* t, const char* name, const char* type,
                        const char* help);
/* Appends @p ns as seconds, exactly ("1.500000000"). */
void admit__text_seconds(admit__text_t* t, uint64_t ns);
/* Appends one histogram's _bucket, _sum and _count samples, labelled
 * {@p label="@p value"} (no label when @p label is NULL). */
void admit__text_histogram(admit__text_t* t, const char* name,
                           const char* label, const char* value,
                           const admit_histogram_t* h);

#endif /* ADMIT_METRICS_H */
