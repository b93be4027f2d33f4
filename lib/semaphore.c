/* The counting semaphore: an atomic fast path for try and release while
 * nobody waits, a mutex with per-waiter condition variables otherwise. */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

/*
 * One atomic word, `state`, holds a flag, SEM_WAITERS (bit 0), that is set
 * exactly while the wait queue is not empty; the permits in use (bits 1 to
 * 31); and the low 32 bits of the count of permits ever granted (bits 32
 * to 63), so that a try counts itself with the same CAS that takes the
 * permit. The count carries into `acquired_hi` only under the mutex: the
 * lock-free try leaves the one increment that would wrap to the locked
 * path, so a reader under the mutex always sees both halves agree.
 *
 * The rules that keep the fast path honest:
 *
 * - The flag changes only under the mutex.
 * - While the flag is clear, try and release change the count with a CAS
 *   and no lock. A try never barges: it fails as soon as the flag is set.
 * - While the flag is set, the word changes only under the mutex (every
 *   lock-free CAS expects the flag clear and fails), so the lock holder
 *   sees a stable count. A release that finds the flag set takes the lock
 *   and hands its permit straight to the first waiter; the count does not
 *   move, so nobody can slip in between.
 * - A waiter sets the flag with a CAS that also checks the count is still
 *   at capacity, so a lock-free release that happens first is seen and the
 *   waiter takes that permit instead of queueing (no lost wake-up).
 * - Invariant: flag set => queue not empty and in_use >= capacity. Every
 *   change that could break it (release, raising the capacity) grants to
 *   waiters under the lock until it holds again.
 */
#define SEM_WAITERS ((uint64_t)1)
#define SEM_ONE ((uint64_t)2)
#define SEM_IN_USE_MASK ((uint64_t)0xfffffffe)
#define SEM_ACQ_ONE ((uint64_t)1 << 32)
#define SEM_ACQ_LAST 0xffffffffu /* the low count about to wrap */
/* in_use never exceeds the largest capacity ever set, so it fits 31 bits. */
#define SEM_CAPACITY_MAX ((uint64_t)0x7fffffff)

static inline uint64_t in_use_of(uint64_t st) {
  return (st & SEM_IN_USE_MASK) >> 1;
}

static inline uint32_t acq_lo_of(uint64_t st) { return (uint32_t)(st >> 32); }

/* Asynchronous waiters live in a slab of chunks, reused through a free
 * list, so a steady state allocates nothing. */
#define SEM_CHUNK 64u
#define SEM_NO_SLOT UINT32_MAX

typedef struct waiter_s waiter_t;
struct waiter_s {
  waiter_t* next;
  waiter_t* prev;
  uint8_t priority;
  uint8_t async;
  uint8_t granted; /* blocking waiters: set under the lock on grant */
};

/* A blocking waiter lives on the waiting thread's stack. */
typedef struct sync_waiter_s {
  waiter_t w;
  pthread_cond_t cond;
} sync_waiter_t;

typedef struct async_waiter_s {
  waiter_t w; /* first: a waiter_t* converts back to this */
  admit_semaphore_cb cb;
  void* ud;
  uint32_t gen;       /* generation of the latest ticket of this slot */
  uint32_t slot;      /* index in the slab */
  uint32_t next_free; /* free-list link */
  uint8_t queued;     /* 1 while in the wait queue */
  waiter_t* next_done; /* callbacks still to run, outside the lock */
} async_waiter_t;

struct admit_semaphore_s {
  /* Hot: every try and release touch these, so they share a line. */
  _Atomic uint64_t state;
  _Atomic uint64_t capacity; /* written under mu */
  char pad_hot[64 - 2 * sizeof(uint64_t)];

  pthread_mutex_t mu;
  pthread_condattr_t cond_attr; /* CLOCK_MONOTONIC */
  waiter_t* head[ADMIT_PRIORITIES_MAX];
  waiter_t* tail[ADMIT_PRIORITIES_MAX];
  unsigned nonempty; /* bit p set when class p has waiters */
  uint64_t waiting;
  uint64_t acquired_hi; /* high 32 bits of the granted count; under mu */
  uint64_t max_waiters;
  int unbounded;
  _Atomic uint64_t rejected;
  _Atomic uint64_t timed_out;
  _Atomic uint64_t cancelled;

  async_waiter_t** chunks;
  uint32_t nchunks;
  uint32_t chunks_cap;
  uint32_t free_head;
};

/* --- the queue (all under mu) -------------------------------------------- */

static void queue_push(admit_semaphore_t* s, waiter_t* w) {
  unsigned p = w->priority;
  w->next = NULL;
  w->prev = s->tail[p];
  if (s->tail[p] != NULL) {
    s->tail[p]->next = w;
  } else {
    s->head[p] = w;
  }
  s->tail[p] = w;
  s->nonempty |= 1u << p;
  s->waiting++;
}

/* Unlinks @p w and clears the flag when the queue empties; the count stays
 * where it is (the caller changes it if it must). */
static void queue_remove(admit_semaphore_t* s, waiter_t* w) {
  unsigned p = w->priority;
  if (w->prev != NULL) {
    w->prev->next = w->next;
  } else {
    s->head[p] = w->next;
  }
  if (w->next != NULL) {
    w->next->prev = w->prev;
  } else {
    s->tail[p] = w->prev;
  }
  if (s->head[p] == NULL) s->nonempty &= ~(1u << p);
  w->next = w->prev = NULL;
  if (--s->waiting == 0) {
    atomic_fetch_and_explicit(&s->state, ~SEM_WAITERS, memory_order_release);
  }
}

static waiter_t* queue_first(admit_semaphore_t* s) {
  if (s->nonempty == 0) return NULL;
  return s->head[__builtin_ctz(s->nonempty)];
}

/* --- the slab of asynchronous waiters (under mu) ------------------------- */

static async_waiter_t* slot_node(admit_semaphore_t* s, uint32_t slot) {
  return &s->chunks[slot / SEM_CHUNK][slot % SEM_CHUNK];
}

static int slab_grow(admit_semaphore_t* s) {
  if (s->nchunks >= (SEM_NO_SLOT - 1) / SEM_CHUNK) return ADMIT_ENOMEM;
  if (s->nchunks == s->chunks_cap) {
    uint32_t cap = s->chunks_cap ? s->chunks_cap * 2 : 4;
    async_waiter_t** c = admit__realloc(s->chunks, cap * sizeof(*c));
    if (c == NULL) return ADMIT_ENOMEM;
    s->chunks = c;
    s->chunks_cap = cap;
  }
  async_waiter_t* chunk = admit__calloc(SEM_CHUNK, sizeof(*chunk));
  if (chunk == NULL) return ADMIT_ENOMEM;
  uint32_t base = s->nchunks * SEM_CHUNK;
  s->chunks[s->nchunks++] = chunk;
  for (uint32_t i = SEM_CHUNK; i-- > 0;) {
    chunk[i].slot = base + i;
    chunk[i].next_free = s->free_head;
    s->free_head = base + i;
  }
  return 0;
}

static async_waiter_t* slab_take(admit_semaphore_t* s) {
  if (s->free_head == SEM_NO_SLOT && slab_grow(s) != 0) return NULL;
  async_waiter_t* a = slot_node(s, s->free_head);
  s->free_head = a->next_free;
  a->gen++;
  return a;
}

static void slab_put(admit_semaphore_t* s, async_waiter_t* a) {
  a->queued = 0;
  a->cb = NULL;
  a->ud = NULL;
  /* A slot whose generation is exhausted is retired, so a ticket can never
   * name two waiters. */
  if (a->gen == UINT32_MAX) return;
  a->next_free = s->free_head;
  s->free_head = a->slot;
}

static uint64_t ticket_of(const async_waiter_t* a) {
  return ((uint64_t)a->gen << 32) | a->slot;
}

/* --- the permit count ---------------------------------------------------- */

static int take_or_mark(admit_semaphore_t* s, int mark);

/* Once every 2^32 grants: the same as fast_try, under the lock, where the
 * granted count may carry. */
static int try_locked(admit_semaphore_t* s) {
  pthread_mutex_lock(&s->mu);
  int r = take_or_mark(s, 0) == 1;
  pthread_mutex_unlock(&s->mu);
  return r;
}

/* Takes a permit without the lock if one is free and nobody waits. */
static inline int fast_try(admit_semaphore_t* s) {
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  for (;;) {
    if (st & SEM_WAITERS) return 0;
    uint64_t cap = atomic_load_explicit(&s->capacity, memory_order_acquire);
    if (in_use_of(st) >= cap) return 0;
    if (acq_lo_of(st) == SEM_ACQ_LAST) return try_locked(s);
    if (atomic_compare_exchange_weak_explicit(&s->state, &st,
                                              st + SEM_ONE + SEM_ACQ_ONE,
                                              memory_order_acquire,
                                              memory_order_relaxed)) {
      return 1;
    }
  }
}

/*
 * Under mu: takes a free permit (returns 1), or finds the queue in use
 * (returns 0, flag set), or finds no permit and an empty queue: then, if
 * @p mark, sets the flag so the caller may queue (returns 0), else
 * returns -1.
 */
static int take_or_mark(admit_semaphore_t* s, int mark) {
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  uint64_t cap = atomic_load_explicit(&s->capacity, memory_order_relaxed);
  for (;;) {
    if (st & SEM_WAITERS) return 0;
    if (in_use_of(st) < cap) {
      /* The count's top half overflows out of the word when it wraps. */
      if (atomic_compare_exchange_weak_explicit(
              &s->state, &st, st + SEM_ONE + SEM_ACQ_ONE,
              memory_order_acquire, memory_order_relaxed)) {
        if (acq_lo_of(st) == SEM_ACQ_LAST) s->acquired_hi++;
        return 1;
      }
    } else if (!mark) {
      return -1;
    } else if (atomic_compare_exchange_weak_explicit(
                   &s->state, &st, st | SEM_WAITERS, memory_order_relaxed,
                   memory_order_relaxed)) {
      return 0;
    }
  }
}

static int can_queue(const admit_semaphore_t* s) {
  return s->unbounded || s->waiting < s->max_waiters;
}

/*
 * Under mu: hands a permit (already counted in use) to @p w, which the
 * caller has removed from the queue. A blocking waiter is signalled now,
 * while its stack is certainly alive; an asynchronous one is pushed on
 * @p done for its callback to run after the lock is dropped.
 */
static void grant(admit_semaphore_t* s, waiter_t* w, waiter_t** done) {
  /* An add, not a store: the flag may be clear by now, so lock-free
   * releases may be changing the word at the same time. */
  uint64_t old = atomic_fetch_add_explicit(&s->state, SEM_ACQ_ONE,
                                           memory_order_relaxed);
  if (acq_lo_of(old) == SEM_ACQ_LAST) s->acquired_hi++;
  if (w->async) {
    async_waiter_t* a = (async_waiter_t*)w;
    a->queued = 0;
    a->next_done = *done;
    *done = w;
  } else {
    w->granted = 1;
    pthread_cond_signal(&((sync_waiter_t*)w)->cond);
  }
}

/* Runs the callbacks on @p done (newest first, so reverse it), then gives
 * their slots back. Called without the lock. */
static void run_done(admit_semaphore_t* s, waiter_t* done, int status,
                     int relock) {
  waiter_t* rev = NULL;
  while (done != NULL) {
    async_waiter_t* a = (async_waiter_t*)done;
    done = a->next_done;
    a->next_done = rev;
    rev = &a->w;
  }
  for (waiter_t* w = rev; w != NULL; w = ((async_waiter_t*)w)->next_done) {
    async_waiter_t* a = (async_waiter_t*)w;
    a->cb(a->ud, ticket_of(a), status);
  }
  if (rev == NULL || !relock) return;
  pthread_mutex_lock(&s->mu);
  while (rev != NULL) {
    async_waiter_t* a = (async_waiter_t*)rev;
    rev = a->next_done;
    slab_put(s, a);
  }
  pthread_mutex_unlock(&s->mu);
}

/* --- public API ---------------------------------------------------------- */

int admit_semaphore_new(admit_semaphore_t** out,
                        const admit_semaphore_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  if (opts == NULL || opts->capacity == 0 ||
      opts->capacity > SEM_CAPACITY_MAX ||
      (opts->unbounded_waiters != 0 && opts->unbounded_waiters != 1)) {
    return ADMIT_EINVAL;
  }
  admit_semaphore_t* s = admit__calloc(1, sizeof(*s));
  if (s == NULL) return ADMIT_ENOMEM;
  if (pthread_mutex_init(&s->mu, NULL) != 0) {
    admit__free(s);
    return ADMIT_ENOMEM;
  }
  if (pthread_condattr_init(&s->cond_attr) != 0) {
    pthread_mutex_destroy(&s->mu);
    admit__free(s);
    return ADMIT_ENOMEM;
  }
  pthread_condattr_setclock(&s->cond_attr, CLOCK_MONOTONIC);
  atomic_init(&s->state, 0);
  atomic_init(&s->capacity, opts->capacity);
  atomic_init(&s->rejected, 0);
  atomic_init(&s->timed_out, 0);
  atomic_init(&s->cancelled, 0);
  s->max_waiters = opts->max_waiters;
  s->unbounded = opts->unbounded_waiters;
  s->free_head = SEM_NO_SLOT;
  *out = s;
  return 0;
}

void admit_semaphore_free(admit_semaphore_t* s) {
  if (s == NULL) return;
  /* Asynchronous waiters hear ADMIT_ECLOSED; blocking ones are forbidden by
   * the contract (their threads would wake into freed memory). */
  waiter_t* done = NULL;
  pthread_mutex_lock(&s->mu);
  for (waiter_t* w = queue_first(s); w != NULL; w = queue_first(s)) {
    queue_remove(s, w);
    if (w->async) {
      async_waiter_t* a = (async_waiter_t*)w;
      a->queued = 0;
      a->next_done = done;
      done = w;
    }
  }
  pthread_mutex_unlock(&s->mu);
  run_done(s, done, ADMIT_ECLOSED, 0);
  for (uint32_t i = 0; i < s->nchunks; i++) admit__free(s->chunks[i]);
  admit__free(s->chunks);
  pthread_condattr_destroy(&s->cond_attr);
  pthread_mutex_destroy(&s->mu);
  admit__free(s);
}

int admit_semaphore_try(admit_semaphore_t* s) {
  if (s == NULL) return ADMIT_EINVAL;
  return fast_try(s);
}

/* Fills @p ts with the absolute CLOCK_MONOTONIC time @p ns. */
static void to_timespec(uint64_t ns, struct timespec* ts) {
  ts->tv_sec = (time_t)(ns / 1000000000u);
  ts->tv_nsec = (long)(ns % 1000000000u);
}

int admit_semaphore_acquire(admit_semaphore_t* s, int priority,
                            uint64_t timeout_ns) {
  if (s == NULL || priority < 0 || priority >= ADMIT_PRIORITIES_MAX) {
    return ADMIT_EINVAL;
  }
  if (fast_try(s)) return 0;
  if (timeout_ns == 0) {
    atomic_fetch_add_explicit(&s->timed_out, 1, memory_order_relaxed);
    return ADMIT_ETIMEDOUT;
  }
  int forever = timeout_ns == ADMIT_FOREVER;
  struct timespec deadline = {0, 0};
  if (!forever) {
    to_timespec(admit__deadline(admit_now_ns(), timeout_ns), &deadline);
  }

  pthread_mutex_lock(&s->mu);
  int queue_ok = can_queue(s);
  int r = take_or_mark(s, queue_ok);
  if (r == 1) {
    pthread_mutex_unlock(&s->mu);
    return 0;
  }
  if (!queue_ok) {
    atomic_fetch_add_explicit(&s->rejected, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    return ADMIT_EFULL;
  }

  sync_waiter_t sw;
  sw.w.priority = (uint8_t)priority;
  sw.w.async = 0;
  sw.w.granted = 0;
  pthread_cond_init(&sw.cond, &s->cond_attr);
  queue_push(s, &sw.w);
  /* A thread cancelled inside the wait would leave its stack node queued;
   * waiting is therefore not a cancellation point. */
  int old_cancel;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old_cancel);
  int rc = 0;
  while (!sw.w.granted) {
    int e = forever ? pthread_cond_wait(&sw.cond, &s->mu)
                    : pthread_cond_timedwait(&sw.cond, &s->mu, &deadline);
    /* The grant is decided under the lock: a waiter whose time ran out just
     * as it was granted sees `granted` here and keeps the permit. */
    if (e == ETIMEDOUT && !sw.w.granted) {
      queue_remove(s, &sw.w);
      atomic_fetch_add_explicit(&s->timed_out, 1, memory_order_relaxed);
      rc = ADMIT_ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock(&s->mu);
  pthread_setcancelstate(old_cancel, NULL);
  pthread_cond_destroy(&sw.cond);
  return rc;
}

int admit_semaphore_acquire_async(admit_semaphore_t* s, int priority,
                                  admit_semaphore_cb cb, void* ud,
                                  uint64_t* ticket) {
  if (s == NULL || priority < 0 || priority >= ADMIT_PRIORITIES_MAX ||
      cb == NULL || ticket == NULL) {
    return ADMIT_EINVAL;
  }
  if (fast_try(s)) return 1;
  pthread_mutex_lock(&s->mu);
  int queue_ok = can_queue(s);
  int r = take_or_mark(s, queue_ok);
  if (r == 1) {
    pthread_mutex_unlock(&s->mu);
    return 1;
  }
  if (!queue_ok) {
    atomic_fetch_add_explicit(&s->rejected, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    return ADMIT_EFULL;
  }
  async_waiter_t* a = slab_take(s);
  if (a == NULL) {
    /* The flag may have been set for us; clear it if nobody else waits. */
    if (s->waiting == 0) {
      atomic_fetch_and_explicit(&s->state, ~SEM_WAITERS,
                                memory_order_release);
    }
    pthread_mutex_unlock(&s->mu);
    return ADMIT_ENOMEM;
  }
  a->w.priority = (uint8_t)priority;
  a->w.async = 1;
  a->w.granted = 0;
  a->cb = cb;
  a->ud = ud;
  a->queued = 1;
  a->next_done = NULL;
  queue_push(s, &a->w);
  *ticket = ticket_of(a);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

int admit_semaphore_cancel(admit_semaphore_t* s, uint64_t ticket) {
  if (s == NULL) return ADMIT_EINVAL;
  uint32_t slot = (uint32_t)ticket;
  uint32_t gen = (uint32_t)(ticket >> 32);
  int rc;
  pthread_mutex_lock(&s->mu);
  if (gen == 0 || slot >= s->nchunks * SEM_CHUNK) {
    rc = ADMIT_EINVAL;
  } else {
    async_waiter_t* a = slot_node(s, slot);
    if (gen > a->gen) {
      rc = ADMIT_EINVAL; /* never issued */
    } else if (gen == a->gen && a->queued) {
      queue_remove(s, &a->w);
      slab_put(s, a);
      atomic_fetch_add_explicit(&s->cancelled, 1, memory_order_relaxed);
      rc = 1;
    } else {
      rc = 0; /* granted: the callback has run or is running */
    }
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

static int release_slow(admit_semaphore_t* s) {
  pthread_mutex_lock(&s->mu);
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  while (!(st & SEM_WAITERS)) {
    /* The queue emptied (timeout or cancel) since we looked. */
    if (in_use_of(st) == 0) {
      pthread_mutex_unlock(&s->mu);
      return ADMIT_EINVAL;
    }
    if (atomic_compare_exchange_weak_explicit(&s->state, &st, st - SEM_ONE,
                                              memory_order_release,
                                              memory_order_relaxed)) {
      pthread_mutex_unlock(&s->mu);
      return 0;
    }
  }
  uint64_t in_use = in_use_of(st);
  uint64_t cap = atomic_load_explicit(&s->capacity, memory_order_relaxed);
  if (in_use == 0) { /* unreachable while the invariant holds */
    pthread_mutex_unlock(&s->mu);
    return ADMIT_EINVAL;
  }
  if (in_use > cap) {
    /* A lowered capacity is draining: this permit retires. */
    atomic_fetch_sub_explicit(&s->state, SEM_ONE, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    return 0;
  }
  waiter_t* w = queue_first(s);
  waiter_t* done = NULL;
  queue_remove(s, w);
  grant(s, w, &done);
  admit_semaphore_cb cb = NULL;
  void* ud = NULL;
  uint64_t ticket = 0;
  if (done != NULL) {
    /* One grant: copy the callback and give the slot back now, sparing a
     * second trip through the lock. */
    async_waiter_t* a = (async_waiter_t*)done;
    cb = a->cb;
    ud = a->ud;
    ticket = ticket_of(a);
    slab_put(s, a);
  }
  pthread_mutex_unlock(&s->mu);
  if (cb != NULL) cb(ud, ticket, 0);
  return 0;
}

int admit_semaphore_release(admit_semaphore_t* s) {
  if (s == NULL) return ADMIT_EINVAL;
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  while (!(st & SEM_WAITERS)) {
    if (in_use_of(st) == 0) return ADMIT_EINVAL;
    if (atomic_compare_exchange_weak_explicit(&s->state, &st, st - SEM_ONE,
                                              memory_order_release,
                                              memory_order_relaxed)) {
      return 0;
    }
  }
  return release_slow(s);
}

int admit_semaphore_set_capacity(admit_semaphore_t* s, uint64_t capacity) {
  if (s == NULL || capacity == 0 || capacity > SEM_CAPACITY_MAX) {
    return ADMIT_EINVAL;
  }
  waiter_t* done = NULL;
  pthread_mutex_lock(&s->mu);
  atomic_store_explicit(&s->capacity, capacity, memory_order_release);
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  if (st & SEM_WAITERS) {
    /* The word is stable while the flag is set: grant in queue order until
     * the new capacity is reached or nobody is left. */
    uint64_t in_use = in_use_of(st);
    while (in_use < capacity && s->waiting > 0) {
      waiter_t* w = queue_first(s);
      in_use++;
      atomic_fetch_add_explicit(&s->state, SEM_ONE, memory_order_relaxed);
      queue_remove(s, w); /* clears the flag after the last one */
      grant(s, w, &done);
    }
  }
  pthread_mutex_unlock(&s->mu);
  run_done(s, done, 0, 1);
  return 0;
}

int admit_semaphore_stats(admit_semaphore_t* s, admit_semaphore_stats_t* out) {
  if (s == NULL || out == NULL) return ADMIT_EINVAL;
  pthread_mutex_lock(&s->mu);
  uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
  out->capacity = atomic_load_explicit(&s->capacity, memory_order_relaxed);
  out->in_use = in_use_of(st);
  out->waiting = s->waiting;
  out->acquired = (s->acquired_hi << 32) | acq_lo_of(st);
  out->rejected = atomic_load_explicit(&s->rejected, memory_order_relaxed);
  out->timed_out = atomic_load_explicit(&s->timed_out, memory_order_relaxed);
  out->cancelled = atomic_load_explicit(&s->cancelled, memory_order_relaxed);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

/* For tests only (not exported): sets the granted count, so that the carry
 * from 32 to 33 bits can be tested without 2^32 grants. */
void admit__semaphore_set_acquired(admit_semaphore_t* s, uint64_t n);

void admit__semaphore_set_acquired(admit_semaphore_t* s, uint64_t n) {
  pthread_mutex_lock(&s->mu);
  s->acquired_hi = n >> 32;
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(
      &s->state, &st, (st & 0xffffffffu) | (n << 32), memory_order_relaxed,
      memory_order_relaxed)) {
  }
  pthread_mutex_unlock(&s->mu);
}
