/* The replaceable allocator behind every admit allocation. */
#include "internal.h"

#include <stdlib.h>

static void* (*malloc_fn)(size_t) = malloc;
static void* (*realloc_fn)(void*, size_t) = realloc;
static void* (*calloc_fn)(size_t, size_t) = calloc;
static void (*free_fn)(void*) = free;

int admit_replace_allocator(void* (*m)(size_t), void* (*r)(void*, size_t),
                            void* (*c)(size_t, size_t), void (*f)(void*)) {
  if (m == NULL || r == NULL || c == NULL || f == NULL) return ADMIT_EINVAL;
  malloc_fn = m;
  realloc_fn = r;
  calloc_fn = c;
  free_fn = f;
  return 0;
}

void* admit__malloc(size_t size) { return malloc_fn(size); }
void* admit__calloc(size_t n, size_t size) { return calloc_fn(n, size); }
void* admit__realloc(void* p, size_t size) { return realloc_fn(p, size); }
void admit__free(void* p) {
  if (p != NULL) free_fn(p);
}
