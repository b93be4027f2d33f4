/* An allocator that counts live bytes, for checking memory figures
 * (stats.bytes, bytes per key) against what the library really holds.
 * Install it with admit_replace_allocator() before creating anything.
 * Shared by test/test-keyed.c and bench/bench-keyed.c; one per binary. */
#ifndef ADMIT_TEST_COUNTING_ALLOC_H
#define ADMIT_TEST_COUNTING_ALLOC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bytes the library holds now, as it asked for them (no headers). */
static _Atomic long long live_bytes;

typedef union {
  size_t size;
  max_align_t align;
} count_head_t;

static void* count_malloc(size_t n) {
  count_head_t* h = malloc(sizeof(*h) + n);
  if (h == NULL) return NULL;
  h->size = n;
  atomic_fetch_add(&live_bytes, (long long)n);
  return h + 1;
}

static void count_free(void* p) {
  if (p == NULL) return;
  count_head_t* h = (count_head_t*)p - 1;
  atomic_fetch_sub(&live_bytes, (long long)h->size);
  free(h);
}

static void* count_calloc(size_t c, size_t n) {
  if (n != 0 && c > SIZE_MAX / n) return NULL;
  void* p = count_malloc(c * n);
  if (p != NULL) memset(p, 0, c * n);
  return p;
}

static void* count_realloc(void* p, size_t n) {
  if (p == NULL) return count_malloc(n);
  count_head_t* h = (count_head_t*)p - 1;
  size_t old = h->size;
  count_head_t* nh = realloc(h, sizeof(*nh) + n);
  if (nh == NULL) return NULL;
  nh->size = n;
  atomic_fetch_add(&live_bytes, (long long)n - (long long)old);
  return nh + 1;
}

#endif /* ADMIT_TEST_COUNTING_ALLOC_H */
