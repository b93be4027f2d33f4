/* Keyed limiters: limiter state per key in sharded, bounded hash tables.
 *
 * A key hashes (with a random per-table secret) to one of up to 256 shards.
 * Each shard is an open-addressing table under its own lock, with linear
 * probing kept in Robin Hood order (every cluster sorted by home slot), so
 * a lookup stops as soon as it meets a slot whose home is past its own, and
 * deletion shifts the cluster back instead of leaving tombstones.
 *
 * A slot is a fixed number of bytes for the whole table:
 *
 *   [0, 8)    header: hash bits 0..31, key length << 32, tier << 48;
 *             0 means empty (keys are at least one byte long)
 *   [8, 24)   the key when it is at most 16 bytes, else a pointer to a
 *             private copy of it
 *   [24, ..)  the state words: one per rate for a token bucket (its TAT),
 *             two per rate for windows; as many as the largest tier needs
 *
 * so a single-rate token bucket costs 32 bytes a slot. A shard grows by a
 * quarter when it would pass 70% full (so growth leaves it 56% full), and
 * shrinks to half full when deletions leave it under a third.
 *
 * The number of keys is bounded by one atomic counter shared by all
 * shards. A new key that finds it at max_keys examines the next keys of
 * its own shard (from a cursor that goes round) and drops each whose state
 * is fresh (equal to a never-seen one: dropping it changes no decision);
 * if that made no room, it does the same in three more shards whose locks
 * are free, taken in turn from a cursor shared by all shards (so that
 * failed attempts together visit every shard), and otherwise fails with
 * ADMIT_EFULL. The 128 keys it may examine are split among the shards it
 * may visit, so a small table (few shards) is searched whole.
 *
 * A call hashes the key and prefetches its home slot before it reads the
 * clock, so that the likely cache miss of a large table overlaps the read.
 *
 * Time: each shard keeps the latest clock reading it has used, and a call
 * that read the clock a little earlier than another thread (before taking
 * the lock) decides at that latest time instead, so the state of a key
 * never sees time go backwards.
 */
#include "algo.h"
#include "keyed-hash.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/random.h>

enum {
  KEY_INLINE = 16,      /* keys up to this long are stored in the slot */
  SLOT_HEAD = 8 + KEY_INLINE,
  WORDS_MAX = 2 * ADMIT_RATES_MAX,
  SLOT_MAX = SLOT_HEAD + 8 * WORDS_MAX,
  SHARDS_MAX = 256,
  KEYS_PER_SHARD = 32,  /* fewer shards for small tables */
  SCAN_KEYS = 128,      /* keys examined, at most, to make room */
  SCAN_SHARDS = 4,      /* shards examined: the key's own and 3 more */
  CAP_MIN = 8,
  KEYLEN_DEFAULT = 512,
  KEYLEN_LIMIT = 65535, /* stored in 16 bits */
  TIERS_LIMIT = 65535,  /* stored in 16 bits */
  SPIN_TRIES = 64
};

#define MAX_KEYS_DEFAULT ((uint64_t)1 << 20)

/* Inlined into every caller: the few instructions of a call's fast path
 * should not pay for calls, register saves and reloads. */
#define HOT static inline __attribute__((always_inline))

/* The shard lock: test-and-test-and-set, yielding after a short spin. The
 * critical sections are a few dozen nanoseconds, for which this measured
 * faster than a pthread mutex (build with -DADMIT_KEYED_MUTEX and run
 * bench/bench-keyed.c to compare); yielding keeps a preempted holder from
 * costing waiters a whole time slice of spinning. */
#ifdef ADMIT_KEYED_MUTEX
typedef pthread_mutex_t shard_lock_t;

static inline void shard_lock_init(shard_lock_t* l) {
  pthread_mutex_init(l, NULL);
}

static inline void shard_lock_destroy(shard_lock_t* l) {
  pthread_mutex_destroy(l);
}

static inline void shard_lock(shard_lock_t* l) { pthread_mutex_lock(l); }

static inline bool shard_trylock(shard_lock_t* l) {
  return pthread_mutex_trylock(l) == 0;
}

static inline void shard_unlock(shard_lock_t* l) { pthread_mutex_unlock(l); }
#else
typedef atomic_int shard_lock_t;

static inline void shard_lock_init(shard_lock_t* l) { atomic_init(l, 0); }

static inline void shard_lock_destroy(shard_lock_t* l) { (void)l; }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static inline void shard_lock(shard_lock_t* l) {
  for (;;) {
    if (!atomic_exchange_explicit(l, 1, memory_order_acquire)) return;
    int n = 0;
    while (atomic_load_explicit(l, memory_order_relaxed)) {
      if (++n < SPIN_TRIES) {
        cpu_relax();
      } else {
        sched_yield();
        n = 0;
      }
    }
  }
}

static inline bool shard_trylock(shard_lock_t* l) {
  return !atomic_load_explicit(l, memory_order_relaxed) &&
         !atomic_exchange_explicit(l, 1, memory_order_acquire);
}

static inline void shard_unlock(shard_lock_t* l) {
  atomic_store_explicit(l, 0, memory_order_release);
}
#endif

/* Aligned so that no two shards share a cache line. */
typedef struct shard_s {
  _Alignas(64) shard_lock_t lock;
  uint64_t now;      /* latest clock reading used here */
  uint8_t* slots;    /* cap * slot_size bytes, 64-byte aligned in slots_mem */
  void* slots_mem;   /* the allocation (table_bytes) */
  size_t cap;        /* slots */
  size_t count;      /* keys held */
  /* Copies of slots and cap read without the lock, only to prefetch. */
  _Atomic(uint8_t*) hint_slots;
  _Atomic size_t hint_cap;
  size_t cursor;     /* where the next scan for room starts */
  uint64_t evicted;  /* fresh keys dropped to make room */
  uint64_t full;     /* ADMIT_EFULL answers */
  uint64_t bytes;    /* slot array plus out-of-line keys */
} shard_t;

typedef struct tier_s {
  admit__algo_t algo;
  uint64_t max_cost; /* the smallest limit among its rates */
  uint32_t words;    /* state words a key of this tier uses */
  uint32_t per_rate; /* 1 for a token bucket, 2 for windows */
  bool bucket1;      /* a single-rate token bucket: admit__bucket1_allow */
} tier_t;

struct admit_keyed_s {
  admit__clock_t clock;
  admit__khash_secret_t secret;
  uint64_t hash_mask;   /* all ones, except in tests that force collisions */
  uint64_t max_keys;
  uint32_t max_key_len;
  uint32_t ntiers;
  uint32_t nshards;
  uint32_t shard_shift; /* shard = hash >> shard_shift */
  size_t slot_size;
  size_t cap_limit;     /* no shard ever needs more slots */
  uint64_t fixed_bytes; /* this struct, the tiers and the shards */
  tier_t* tiers;
  shard_t* shards;      /* aligned to 64 inside shards_mem */
  void* shards_mem;
  /* Written by every insertion and deletion: kept off the lines above. */
  char pad0[64];
  _Atomic uint64_t nkeys;
  _Atomic uint32_t scan_next; /* the next shard to help make room */
  char pad1[64 - sizeof(uint64_t) - sizeof(uint32_t)];
};

/* --- slots ---------------------------------------------------------------- */

static inline uint8_t* slot_at(const admit_keyed_t* k, const shard_t* s,
                               size_t i) {
  return s->slots + i * k->slot_size;
}

static inline uint64_t slot_head(const uint8_t* sl) {
  uint64_t h;
  memcpy(&h, sl, 8);
  return h;
}

static inline uint64_t make_head(uint64_t hash, size_t keylen, uint32_t tier) {
  return (hash & 0xffffffffu) | ((uint64_t)keylen << 32) |
         ((uint64_t)tier << 48);
}

static inline size_t head_keylen(uint64_t h) {
  return (size_t)((h >> 32) & 0xffffu);
}

static inline uint32_t head_tier(uint64_t h) { return (uint32_t)(h >> 48); }

/* The home slot of a hash: the top of its low 32 bits scaled to cap. */
static inline size_t home_of(uint64_t head, size_t cap) {
  return (size_t)(((head & 0xffffffffu) * (uint64_t)cap) >> 32);
}

static inline size_t dist_of(uint64_t head, size_t i, size_t cap) {
  size_t h = home_of(head, cap);
  return i >= h ? i - h : i + cap - h;
}

static inline const uint8_t* slot_key(const uint8_t* sl, size_t keylen) {
  if (keylen <= KEY_INLINE) return sl + 8;
  const uint8_t* p;
  memcpy(&p, sl + 8, sizeof(p));
  return p;
}

static inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* A key as a call looks for it: its head, and the bytes of an inline key
 * as the slot holds them (zero-padded to 16 bytes), so that a probe
 * compares two words instead of calling memcmp: glibc's memcmp reads 32
 * bytes at once for short lengths, which would touch the next slot's cache
 * line as often as not. */
typedef struct probe_s {
  uint64_t hash;
  uint64_t head;
  const void* key;
  size_t keylen;
  uint64_t kw[2];
} probe_t;

static inline bool slot_has_key(const uint8_t* sl, const probe_t* p) {
  if (p->keylen <= KEY_INLINE) {
    return load64(sl + 8) == p->kw[0] && load64(sl + 16) == p->kw[1];
  }
  return memcmp(slot_key(sl, p->keylen), p->key, p->keylen) == 0;
}

static inline void cells_load(const tier_t* t, const uint8_t* sl,
                              admit__cell_t* c) {
  const uint8_t* w = sl + SLOT_HEAD;
  if (t->per_rate == 1) {
    for (uint32_t i = 0; i < t->algo.nrates; i++) {
      c[i].w0 = load64(w + 8 * i);
      c[i].w1 = 0;
    }
  } else {
    for (uint32_t i = 0; i < t->algo.nrates; i++) {
      c[i].w0 = load64(w + 16 * i);
      c[i].w1 = load64(w + 16 * i + 8);
    }
  }
}

static inline void cells_store(const tier_t* t, uint8_t* sl,
                               const admit__cell_t* c) {
  uint8_t* w = sl + SLOT_HEAD;
  if (t->per_rate == 1) {
    for (uint32_t i = 0; i < t->algo.nrates; i++) {
      memcpy(w + 8 * i, &c[i].w0, 8);
    }
  } else {
    for (uint32_t i = 0; i < t->algo.nrates; i++) {
      memcpy(w + 16 * i, &c[i].w0, 8);
      memcpy(w + 16 * i + 8, &c[i].w1, 8);
    }
  }
}

static bool slot_fresh(const admit_keyed_t* k, const uint8_t* sl,
                       uint64_t now) {
  const tier_t* t = &k->tiers[head_tier(slot_head(sl))];
  admit__cell_t c[ADMIT_RATES_MAX];
  cells_load(t, sl, c);
  return admit__algo_fresh(&t->algo, c, now);
}

/* Finds a key. Returns true with *pos at its slot, or false with *pos at
 * the slot where it belongs (the first empty slot or the first one whose
 * home lies past the key's). */
HOT bool shard_find(const admit_keyed_t* k, const shard_t* s,
                    const probe_t* p, size_t* pos) {
  size_t cap = s->cap;
  if (cap == 0) {
    *pos = 0;
    return false;
  }
  size_t i = home_of(p->head, cap);
  for (size_t d = 0;; d++) {
    const uint8_t* sl = slot_at(k, s, i);
    uint64_t h = slot_head(sl);
    if (h == 0) break;
    if (h == p->head && slot_has_key(sl, p)) {
      *pos = i;
      return true;
    }
    if (dist_of(h, i, cap) < d) break;
    if (++i == cap) i = 0;
  }
  *pos = i;
  return false;
}

/* Puts a slot's bytes at @p pos, shifting the rest of the cluster one slot
 * on. The table must have an empty slot. */
static void shard_place(const admit_keyed_t* k, shard_t* s, size_t pos,
                        const uint8_t* sl) {
  size_t cap = s->cap;
  size_t ss = k->slot_size;
  size_t e = pos;
  while (slot_head(slot_at(k, s, e)) != 0) {
    if (++e == cap) e = 0;
  }
  while (e != pos) {
    size_t p = e == 0 ? cap - 1 : e - 1;
    memcpy(slot_at(k, s, e), slot_at(k, s, p), ss);
    e = p;
  }
  memcpy(slot_at(k, s, pos), sl, ss);
}

/* Inserts into a table known not to hold the key (used by resizing). */
static void shard_put(const admit_keyed_t* k, shard_t* s, const uint8_t* sl) {
  uint64_t head = slot_head(sl);
  size_t cap = s->cap;
  size_t i = home_of(head, cap);
  for (size_t d = 0;; d++) {
    uint64_t h = slot_head(slot_at(k, s, i));
    if (h == 0 || dist_of(h, i, cap) < d) break;
    if (++i == cap) i = 0;
  }
  shard_place(k, s, i, sl);
}

/* Removes the key at @p pos, freeing its out-of-line copy, and shifts the
 * cluster after it back by one slot. */
static void shard_delete(admit_keyed_t* k, shard_t* s, size_t pos) {
  size_t cap = s->cap;
  size_t ss = k->slot_size;
  uint8_t* sl = slot_at(k, s, pos);
  size_t keylen = head_keylen(slot_head(sl));
  if (keylen > KEY_INLINE) {
    admit__free((void*)slot_key(sl, keylen));
    s->bytes -= keylen;
  }
  size_t i = pos;
  for (;;) {
    size_t n = i + 1 == cap ? 0 : i + 1;
    uint8_t* nx = slot_at(k, s, n);
    uint64_t h = slot_head(nx);
    if (h == 0 || dist_of(h, n, cap) == 0) break;
    memcpy(slot_at(k, s, i), nx, ss);
    i = n;
  }
  memset(slot_at(k, s, i), 0, ss);
  s->count--;
  atomic_fetch_sub_explicit(&k->nkeys, 1, memory_order_relaxed);
}

/* A table's allocation: its slots, and room to start them on a cache line,
 * so that a slot whose size divides 64 never straddles two lines. */
static inline uint64_t table_bytes(const admit_keyed_t* k, size_t cap) {
  return (uint64_t)cap * k->slot_size + 63;
}

/* Allocates a zeroed table of @p cap slots; returns its aligned slots and
 * sets *mem to the allocation, or returns NULL. */
static uint8_t* table_new(const admit_keyed_t* k, size_t cap, void** mem) {
  void* m = admit__calloc(1, (size_t)table_bytes(k, cap));
  if (m == NULL) return NULL;
  *mem = m;
  return (uint8_t*)(((uintptr_t)m + 63) & ~(uintptr_t)63);
}

static void shard_set_table(shard_t* s, uint8_t* slots, void* mem,
                            size_t cap) {
  s->slots = slots;
  s->slots_mem = mem;
  s->cap = cap;
  atomic_store_explicit(&s->hint_slots, slots, memory_order_relaxed);
  atomic_store_explicit(&s->hint_cap, cap, memory_order_relaxed);
}

/* Starts loading a key's home slot before the lock is taken and the clock
 * read, so that the likely cache miss overlaps that work. The hint may be
 * stale or torn (the table being resized): prefetching never faults. The
 * line after the home slot's is loaded too: a key sits past its home as
 * often as not, and a lookup that has to wait for a second miss costs
 * twice as much. */
static inline void shard_prefetch(const admit_keyed_t* k, const shard_t* s,
                                  uint64_t head) {
  uint8_t* slots = atomic_load_explicit(&s->hint_slots, memory_order_relaxed);
  size_t cap = atomic_load_explicit(&s->hint_cap, memory_order_relaxed);
  if (slots != NULL) {
    const uint8_t* at = slots + home_of(head, cap) * k->slot_size;
    __builtin_prefetch(at);
    __builtin_prefetch(at + 64);
  }
}

/* Moves every key into a table of @p cap slots. Returns 0 or ENOMEM. */
static int shard_resize(admit_keyed_t* k, shard_t* s, size_t cap) {
  void* mem;
  uint8_t* slots = table_new(k, cap, &mem);
  if (slots == NULL) return ADMIT_ENOMEM;
  uint8_t* old_slots = s->slots;
  void* old_mem = s->slots_mem;
  size_t old_cap = s->cap;
  shard_set_table(s, slots, mem, cap);
  s->cursor = 0;
  for (size_t i = 0; i < old_cap; i++) {
    const uint8_t* sl = old_slots + i * k->slot_size;
    if (slot_head(sl) != 0) shard_put(k, s, sl);
  }
  admit__free(old_mem);
  if (old_mem != NULL) s->bytes -= table_bytes(k, old_cap);
  s->bytes += table_bytes(k, cap);
  return 0;
}

/* Holding no more than 70% of the slots keeps probe sequences short: a
 * lookup in a table larger than the caches pays a miss for every cache
 * line it reads, and at 70% (56% after growing) it reads 1.4 lines on
 * average, against 1.7 between 64% and 80%; 1M keys of 16 bytes then take
 * about 50 bytes each instead of 43. */
static inline bool shard_fits(size_t count, size_t cap) {
  return count * 10 <= cap * 7;
}

static size_t shard_grown_cap(const admit_keyed_t* k, size_t cap) {
  size_t next = cap + cap / 4;
  if (next < cap + CAP_MIN) next = cap + CAP_MIN;
  return next < k->cap_limit ? next : k->cap_limit;
}

/* Gives memory back when a shard is less than a third full, leaving it
 * half full: far enough from both thresholds that a shard does not shrink
 * and grow by turns. Without this, a shard's size would follow the highest
 * count it ever held, and under churn every shard's count drifts up and
 * down around its share. */
static void shard_maybe_shrink(admit_keyed_t* k, shard_t* s) {
  if (s->count == 0) {
    admit__free(s->slots_mem);
    if (s->slots_mem != NULL) s->bytes -= table_bytes(k, s->cap);
    shard_set_table(s, NULL, NULL, 0);
    s->cursor = 0;
    return;
  }
  if (s->cap <= CAP_MIN || s->count * 3 >= s->cap) return;
  size_t cap = s->count * 2;
  if (cap < CAP_MIN) cap = CAP_MIN;
  /* On failure the bigger table simply stays. */
  (void)shard_resize(k, s, cap);
}

/* Examines up to @p budget keys from the shard's cursor on (or every key,
 * for budget SIZE_MAX) and drops each fresh one. Returns how many. */
static uint64_t shard_drop_fresh(admit_keyed_t* k, shard_t* s, uint64_t now,
                                 size_t budget) {
  size_t cap = s->cap;
  if (cap == 0 || s->count == 0) return 0;
  size_t i = budget == SIZE_MAX ? 0 : s->cursor % cap;
  size_t steps = 0;
  size_t seen = 0;
  uint64_t dropped = 0;
  while (steps < cap && seen < budget && s->count > 0) {
    uint8_t* sl = slot_at(k, s, i);
    if (slot_head(sl) != 0) {
      seen++;
      if (slot_fresh(k, sl, now)) {
        /* The next key of the cluster moves into this slot: look at it
         * again without advancing. */
        shard_delete(k, s, i);
        dropped++;
        continue;
      }
    }
    steps++;
    if (++i == cap) i = 0;
  }
  s->cursor = i;
  return dropped;
}

/* --- the table ------------------------------------------------------------ */

static inline bool key_reserve(admit_keyed_t* k) {
  uint64_t c = atomic_load_explicit(&k->nkeys, memory_order_relaxed);
  do {
    if (c >= k->max_keys) return false;
  } while (!atomic_compare_exchange_weak_explicit(
      &k->nkeys, &c, c + 1, memory_order_relaxed, memory_order_relaxed));
  return true;
}

static inline void key_unreserve(admit_keyed_t* k) {
  atomic_fetch_sub_explicit(&k->nkeys, 1, memory_order_relaxed);
}

static inline bool key_valid(const admit_keyed_t* k, const void* key,
                             size_t keylen) {
  return key != NULL && keylen >= 1 && keylen <= k->max_key_len;
}

/* Hashes a valid key and fills @p p for shard_find and shard_add. */
HOT void probe_init(const admit_keyed_t* k, uint32_t tier, const void* key,
                    size_t keylen, probe_t* p) {
  p->hash = admit__khash(&k->secret, tier, key, keylen) & k->hash_mask;
  p->head = make_head(p->hash, keylen, tier);
  p->key = key;
  p->keylen = keylen;
  p->kw[0] = 0;
  p->kw[1] = 0;
  if (keylen > KEY_INLINE) return;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  /* The words memcpy would give, from overlapping loads: the bytes past
   * the key are shifted out. */
  const uint8_t* b = (const uint8_t*)key;
  if (keylen >= 8) {
    p->kw[0] = load64(b);
    if (keylen > 8) p->kw[1] = load64(b + keylen - 8) >> (8 * (16 - keylen));
  } else if (keylen >= 4) {
    uint32_t lo, hi;
    memcpy(&lo, b, 4);
    memcpy(&hi, b + keylen - 4, 4);
    p->kw[0] = lo | ((uint64_t)hi >> (8 * (8 - keylen))) << 32;
  } else {
    for (size_t i = 0; i < keylen; i++) p->kw[0] |= (uint64_t)b[i] << (8 * i);
  }
#else
  memcpy(p->kw, key, keylen);
#endif
}

void admit__keyed_hash_mask(admit_keyed_t* k, uint64_t mask) {
  k->hash_mask = mask;
}

static inline shard_t* shard_of(const admit_keyed_t* k, uint64_t hash) {
  /* A shift by 64 is undefined: one shard takes no bits. */
  return k->nshards == 1 ? k->shards : &k->shards[hash >> k->shard_shift];
}

/* Locks the shard of a key and returns the time to decide at. */
static inline uint64_t shard_enter(shard_t* s, uint64_t now) {
  shard_lock(&s->lock);
  if (now < s->now) return s->now;
  s->now = now;
  return now;
}

static void random_secret(admit_keyed_t* k) {
  uint64_t raw[4] = {0, 0, 0, 0};
  ssize_t got = getrandom(raw, sizeof(raw), GRND_NONBLOCK);
  if (got != (ssize_t)sizeof(raw)) {
    /* No kernel entropy yet (early boot): fall back to what varies. */
    raw[0] ^= admit_now_ns();
    raw[1] ^= (uint64_t)(uintptr_t)k;
    raw[2] ^= admit__random();
    raw[3] ^= admit__random();
  }
  admit__khash_secret_init(&k->secret, raw);
}

int admit_keyed_new(admit_keyed_t** out, const admit_keyed_options_t* opts) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  if (opts == NULL || opts->quotas == NULL || opts->nquotas == 0 ||
      opts->nquotas > TIERS_LIMIT || opts->max_key_len > KEYLEN_LIMIT) {
    return ADMIT_EINVAL;
  }
  uint64_t max_keys = opts->max_keys != 0 ? opts->max_keys : MAX_KEYS_DEFAULT;
  /* Beyond this a shard's slot count could overflow size_t math. */
  if (max_keys > ((uint64_t)1 << 40)) return ADMIT_EINVAL;

  admit_keyed_t* k = (admit_keyed_t*)admit__calloc(1, sizeof(*k));
  if (k == NULL) return ADMIT_ENOMEM;
  k->tiers = (tier_t*)admit__calloc(opts->nquotas, sizeof(tier_t));
  if (k->tiers == NULL) {
    admit__free(k);
    return ADMIT_ENOMEM;
  }
  uint32_t words = 1;
  for (uint32_t i = 0; i < opts->nquotas; i++) {
    tier_t* t = &k->tiers[i];
    if (admit__algo_init(&t->algo, &opts->quotas[i]) != 0) {
      admit__free(k->tiers);
      admit__free(k);
      return ADMIT_EINVAL;
    }
    t->max_cost = UINT64_MAX;
    for (uint32_t r = 0; r < t->algo.nrates; r++) {
      if (t->algo.r[r].limit < t->max_cost) t->max_cost = t->algo.r[r].limit;
    }
    t->per_rate = t->algo.algo == ADMIT_TOKEN_BUCKET ? 1 : 2;
    t->bucket1 = t->algo.algo == ADMIT_TOKEN_BUCKET && t->algo.nrates == 1;
    t->words = t->per_rate * t->algo.nrates;
    if (t->words > words) words = t->words;
  }
  k->ntiers = opts->nquotas;
  k->max_keys = max_keys;
  k->max_key_len = opts->max_key_len != 0 ? opts->max_key_len
                                          : KEYLEN_DEFAULT;
  k->slot_size = SLOT_HEAD + 8 * (size_t)words;
  /* Room for max_keys at 70% full (shard_fits). */
  k->cap_limit = (size_t)(max_keys + max_keys / 2 + 2);
  admit__clock_init(&k->clock, opts->clock);
  random_secret(k);
  k->hash_mask = UINT64_MAX;

  uint32_t nshards = 1;
  while (nshards < SHARDS_MAX &&
         (uint64_t)nshards * 2 * KEYS_PER_SHARD <= max_keys) {
    nshards *= 2;
  }
  uint32_t bits = 0;
  while ((1u << bits) < nshards) bits++;
  k->nshards = nshards;
  k->shard_shift = 64 - bits;
  k->shards_mem = admit__calloc(1, nshards * sizeof(shard_t) + 64);
  if (k->shards_mem == NULL) {
    admit__free(k->tiers);
    admit__free(k);
    return ADMIT_ENOMEM;
  }
  uintptr_t at = ((uintptr_t)k->shards_mem + 63) & ~(uintptr_t)63;
  k->shards = (shard_t*)at;
  for (uint32_t i = 0; i < nshards; i++) shard_lock_init(&k->shards[i].lock);
  k->fixed_bytes = sizeof(*k) + (uint64_t)opts->nquotas * sizeof(tier_t) +
                   nshards * sizeof(shard_t) + 64;
  *out = k;
  return 0;
}

void admit_keyed_free(admit_keyed_t* k) {
  if (k == NULL) return;
  for (uint32_t i = 0; i < k->nshards; i++) {
    shard_t* s = &k->shards[i];
    for (size_t j = 0; j < s->cap; j++) {
      const uint8_t* sl = slot_at(k, s, j);
      size_t keylen = head_keylen(slot_head(sl));
      if (keylen > KEY_INLINE) admit__free((void*)slot_key(sl, keylen));
    }
    admit__free(s->slots_mem);
    shard_lock_destroy(&s->lock);
  }
  admit__free(k->shards_mem);
  admit__free(k->tiers);
  admit__free(k);
}

/* Makes room for one key when the table holds max_keys: drops the fresh
 * keys among the next few of the key's own shard, then, while no room came
 * of it, of other shards in turn that are not busy (trying their locks
 * while holding ours cannot deadlock). Returns true with a key reserved,
 * and sets *moved if keys of @p s moved. */
static bool make_room(admit_keyed_t* k, shard_t* s, uint64_t now,
                      bool* moved) {
  uint32_t nscan = k->nshards < SCAN_SHARDS ? k->nshards : SCAN_SHARDS;
  size_t budget = SCAN_KEYS / nscan;
  uint64_t dropped = shard_drop_fresh(k, s, now, budget);
  s->evicted += dropped;
  if (dropped > 0) {
    *moved = true;
    shard_maybe_shrink(k, s);
  }
  if (key_reserve(k)) return true;
  for (uint32_t j = 1; j < nscan; j++) {
    uint32_t next = atomic_fetch_add_explicit(&k->scan_next, 1,
                                              memory_order_relaxed);
    shard_t* o = &k->shards[next & (k->nshards - 1)];
    if (o == s) o = &k->shards[(next + 1) & (k->nshards - 1)];
    if (!shard_trylock(&o->lock)) continue;
    if (o->now < now) o->now = now;
    dropped = shard_drop_fresh(k, o, o->now, budget);
    o->evicted += dropped;
    if (dropped > 0) shard_maybe_shrink(k, o);
    shard_unlock(&o->lock);
    if (key_reserve(k)) return true;
  }
  return false;
}

/* Adds a new key whose state becomes @p cells. Called with the shard
 * locked after shard_find said the key belongs at *pos. */
static int shard_add(admit_keyed_t* k, shard_t* s, size_t pos,
                     const probe_t* p, uint64_t now, const tier_t* t,
                     const admit__cell_t* cells) {
  size_t keylen = p->keylen;
  bool moved = false;
  if (!key_reserve(k) && !make_room(k, s, now, &moved)) {
    s->full++;
    return ADMIT_EFULL;
  }
  if (!shard_fits(s->count + 1, s->cap) && s->cap < k->cap_limit) {
    if (shard_resize(k, s, shard_grown_cap(k, s->cap)) != 0) {
      key_unreserve(k);
      return ADMIT_ENOMEM;
    }
    moved = true;
  }
  uint8_t sl[SLOT_MAX];
  memset(sl, 0, k->slot_size);
  memcpy(sl, &p->head, 8);
  if (keylen <= KEY_INLINE) {
    memcpy(sl + 8, p->kw, KEY_INLINE);
  } else {
    void* copy = admit__malloc(keylen);
    if (copy == NULL) {
      key_unreserve(k);
      return ADMIT_ENOMEM;
    }
    memcpy(copy, p->key, keylen);
    memcpy(sl + 8, &copy, sizeof(copy));
    s->bytes += keylen;
  }
  cells_store(t, sl, cells);
  if (moved) shard_find(k, s, p, &pos);
  shard_place(k, s, pos, sl);
  s->count++;
  return 0;
}

int admit_keyed_try(admit_keyed_t* k, uint32_t tier, const void* key,
                    size_t keylen, uint64_t cost, admit_decision_t* out) {
  if (k == NULL || out == NULL || tier >= k->ntiers ||
      !key_valid(k, key, keylen) || cost == 0 ||
      cost > k->tiers[tier].max_cost) {
    if (out != NULL) memset(out, 0, sizeof(*out));
    return ADMIT_EINVAL;
  }
  const tier_t* t = &k->tiers[tier];
  probe_t pr;
  probe_init(k, tier, key, keylen, &pr);
  shard_t* s = shard_of(k, pr.hash);
  shard_prefetch(k, s, pr.head);
  uint64_t now = admit__clock_now(&k->clock);
  admit__cell_t cur[ADMIT_RATES_MAX];
  admit__cell_t next[ADMIT_RATES_MAX];
  size_t pos;
  now = shard_enter(s, now);
  if (shard_find(k, s, &pr, &pos)) {
    uint8_t* sl = slot_at(k, s, pos);
    uint64_t tat;
    /* The common case in a few instructions: the cache miss on the slot
     * has just been paid, and everything after it adds to the latency. */
    if (t->bucket1 && admit__bucket1_allow(&t->algo.r[0],
                                           load64(sl + SLOT_HEAD), now,
                                           cost, &tat, out)) {
      memcpy(sl + SLOT_HEAD, &tat, 8);
      shard_unlock(&s->lock);
      return 0;
    }
    cells_load(t, sl, cur);
    int rc = admit__algo_decide(&t->algo, cur, next, now, cost, out);
    if (rc == 1) cells_store(t, sl, next);
    shard_unlock(&s->lock);
    return rc < 0 ? rc : 0;
  }
  memset(cur, 0, sizeof(cur));
  int rc = admit__algo_decide(&t->algo, cur, next, now, cost, out);
  if (rc == 1) {
    /* A denial changes nothing, so only an admitted new key is stored. */
    rc = shard_add(k, s, pos, &pr, now, t, next);
    if (rc < 0) memset(out, 0, sizeof(*out));
  }
  shard_unlock(&s->lock);
  return rc < 0 ? rc : 0;
}

int admit_keyed_peek(admit_keyed_t* k, uint32_t tier, const void* key,
                     size_t keylen, admit_decision_t* out) {
  if (k == NULL || out == NULL || tier >= k->ntiers ||
      !key_valid(k, key, keylen)) {
    return ADMIT_EINVAL;
  }
  const tier_t* t = &k->tiers[tier];
  probe_t pr;
  probe_init(k, tier, key, keylen, &pr);
  shard_t* s = shard_of(k, pr.hash);
  shard_prefetch(k, s, pr.head);
  uint64_t now = admit__clock_now(&k->clock);
  admit__cell_t cur[ADMIT_RATES_MAX];
  size_t pos;
  now = shard_enter(s, now);
  if (shard_find(k, s, &pr, &pos)) {
    cells_load(t, slot_at(k, s, pos), cur);
  } else {
    memset(cur, 0, sizeof(cur));
  }
  admit__algo_peek(&t->algo, cur, now, out);
  shard_unlock(&s->lock);
  return 0;
}

int admit_keyed_refund(admit_keyed_t* k, uint32_t tier, const void* key,
                       size_t keylen, uint64_t cost) {
  if (k == NULL || tier >= k->ntiers || !key_valid(k, key, keylen)) {
    return ADMIT_EINVAL;
  }
  const tier_t* t = &k->tiers[tier];
  if (cost == 0 || cost > t->max_cost) return ADMIT_EINVAL;
  uint64_t now = admit__clock_now(&k->clock);
  probe_t pr;
  probe_init(k, tier, key, keylen, &pr);
  shard_t* s = shard_of(k, pr.hash);
  admit__cell_t cur[ADMIT_RATES_MAX];
  admit__cell_t next[ADMIT_RATES_MAX];
  size_t pos;
  int rc = ADMIT_ENOTFOUND;
  now = shard_enter(s, now);
  if (shard_find(k, s, &pr, &pos)) {
    uint8_t* sl = slot_at(k, s, pos);
    cells_load(t, sl, cur);
    /* The keyed limiter keeps no record of when units were taken: they
     * are given back as if taken now (see keyed.h). */
    admit__algo_refund(&t->algo, cur, next, now, cost, now);
    if (admit__algo_fresh(&t->algo, next, now)) {
      shard_delete(k, s, pos);
      shard_maybe_shrink(k, s);
    } else {
      cells_store(t, sl, next);
    }
    rc = 0;
  }
  shard_unlock(&s->lock);
  return rc;
}

int admit_keyed_reset(admit_keyed_t* k, uint32_t tier, const void* key,
                      size_t keylen) {
  if (k == NULL || tier >= k->ntiers || !key_valid(k, key, keylen)) {
    return ADMIT_EINVAL;
  }
  probe_t pr;
  probe_init(k, tier, key, keylen, &pr);
  shard_t* s = shard_of(k, pr.hash);
  size_t pos;
  int rc = ADMIT_ENOTFOUND;
  shard_lock(&s->lock);
  if (shard_find(k, s, &pr, &pos)) {
    shard_delete(k, s, pos);
    shard_maybe_shrink(k, s);
    rc = 0;
  }
  shard_unlock(&s->lock);
  return rc;
}

uint64_t admit_keyed_sweep(admit_keyed_t* k) {
  if (k == NULL) return 0;
  uint64_t dropped = 0;
  for (uint32_t i = 0; i < k->nshards; i++) {
    shard_t* s = &k->shards[i];
    /* One clock read per shard: a long sweep must not judge the last
     * shards by a stale time. */
    uint64_t now = shard_enter(s, admit__clock_now(&k->clock));
    dropped += shard_drop_fresh(k, s, now, SIZE_MAX);
    shard_maybe_shrink(k, s);
    shard_unlock(&s->lock);
  }
  return dropped;
}

int admit_keyed_stats(admit_keyed_t* k, admit_keyed_stats_t* out) {
  if (k == NULL || out == NULL) return ADMIT_EINVAL;
  memset(out, 0, sizeof(*out));
  out->max_keys = k->max_keys;
  out->bytes = k->fixed_bytes;
  /* The shared count, not a sum over shards taken one at a time: that sum
   * could count a key dropped in one shard and its successor in another. */
  out->keys = atomic_load_explicit(&k->nkeys, memory_order_relaxed);
  for (uint32_t i = 0; i < k->nshards; i++) {
    shard_t* s = &k->shards[i];
    shard_lock(&s->lock);
    out->evicted += s->evicted;
    out->full += s->full;
    out->bytes += s->bytes;
    shard_unlock(&s->lock);
  }
  return 0;
}
