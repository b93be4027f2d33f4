/* The keyed limiter's hash: a seeded 64-bit hash of a tier and key bytes.
 *
 * A multiply-mix hash in the style of wyhash: every 16 bytes of key are
 * folded with one 64x64->128-bit multiplication against secret words.
 * Each table draws its own random secrets, so a caller who does not know
 * them cannot choose keys that collide (hostile keys cannot turn probing
 * into a linear scan). Internal; bench/bench-keyed.c also times it.
 */
#ifndef ADMIT_KEYED_HASH_H
#define ADMIT_KEYED_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Per-table secret words; draw them at random. */
typedef struct admit__khash_secret_s {
  uint64_t s[4];
} admit__khash_secret_t;

/* 64x64->128 multiplication folded to 64 bits. */
static inline uint64_t admit__khash_fold(uint64_t a, uint64_t b) {
  __uint128_t r = (__uint128_t)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t admit__khash_r64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static inline uint64_t admit__khash_r32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Turns 32 bytes of (possibly poor) entropy into usable secret words. */
static inline void admit__khash_secret_init(admit__khash_secret_t* sec,
                                            const uint64_t raw[4]) {
  for (int i = 0; i < 4; i++) {
    /* splitmix64 finalizer, then force both halves to carry bits so no
     * multiplication degenerates. */
    uint64_t z = raw[i] + 0x9e3779b97f4a7c15u * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    sec->s[i] = z | 0x0000000100000001u;
  }
}

/* Hashes @p tier and @p len bytes at @p key (len may be 0). */
static inline uint64_t admit__khash(const admit__khash_secret_t* sec,
                                    uint32_t tier, const void* key,
                                    size_t len) {
  const uint8_t* p = (const uint8_t*)key;
  uint64_t seed =
      sec->s[0] ^ admit__khash_fold(tier ^ sec->s[1], (uint64_t)len ^ sec->s[2]);
  uint64_t a;
  uint64_t b;
  if (len <= 16) {
    if (len >= 4) {
      /* Two overlapping pairs of 4-byte reads cover every byte of 4..16. */
      size_t m = (len >> 3) << 2;
      a = (admit__khash_r32(p) << 32) | admit__khash_r32(p + m);
      b = (admit__khash_r32(p + len - 4) << 32) |
          admit__khash_r32(p + len - 4 - m);
    } else if (len > 0) {
      a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
      b = 0;
    } else {
      a = 0;
      b = 0;
    }
  } else {
    size_t i = len;
    while (i > 16) {
      seed = admit__khash_fold(admit__khash_r64(p) ^ sec->s[1],
                               admit__khash_r64(p + 8) ^ seed);
      p += 16;
      i -= 16;
    }
    /* The last 16 bytes, overlapping the previous block if short. */
    a = admit__khash_r64(p + i - 16);
    b = admit__khash_r64(p + i - 8);
  }
  __uint128_t r = (__uint128_t)(a ^ sec->s[1]) * (b ^ seed);
  return admit__khash_fold((uint64_t)r ^ sec->s[0] ^ (uint64_t)len,
                           (uint64_t)(r >> 64) ^ sec->s[3]);
}

/* Tests only: keeps just the bits of @p mask of every key's hash, so
 * tests can force collisions (mask 0 puts every key in one probe chain). */
struct admit_keyed_s;
void admit__keyed_hash_mask(struct admit_keyed_s* k, uint64_t mask);

#endif /* ADMIT_KEYED_HASH_H */
