/**
 * @file admit/common.h
 * Version, errors, clocks, rates and decisions shared by every admit part.
 *
 * Include `<admit.h>` rather than this file.
 */
#ifndef ADMIT_COMMON_H
#define ADMIT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks a symbol exported from libadmit. */
#if defined(__GNUC__) || defined(__clang__)
#define ADMIT_EXTERN __attribute__((visibility("default")))
#else
#define ADMIT_EXTERN
#endif

/** Major version: changes break the API. */
#define ADMIT_VERSION_MAJOR 0
/** Minor version: changes add to the API. */
#define ADMIT_VERSION_MINOR 1
/** Patch version: changes fix bugs only. */
#define ADMIT_VERSION_PATCH 0
/** The version as one number, `0xMMmmpp`, comparable with `<`. */
#define ADMIT_VERSION_HEX                                                    \
  ((ADMIT_VERSION_MAJOR << 16) | (ADMIT_VERSION_MINOR << 8) |                \
   ADMIT_VERSION_PATCH)

/**
 * Returns the run-time library version as ADMIT_VERSION_HEX would spell it.
 *
 * Compare it with ADMIT_VERSION_HEX to detect a header/library mismatch.
 */
ADMIT_EXTERN unsigned admit_version(void);

/** Returns the run-time library version as a static string, e.g. "0.1.0". */
ADMIT_EXTERN const char* admit_version_string(void);

/**
 * Every error code: name, value and message, in one list.
 *
 * The enum, admit_strerror() and admit_err_name() are all generated from it.
 */
#define ADMIT_ERRNO_MAP(XX)                                                  \
  XX(EINVAL, -1, "invalid argument")                                         \
  XX(ENOMEM, -2, "out of memory")                                            \
  XX(ETIMEDOUT, -3, "the wait would not fit in the timeout")                 \
  XX(EFULL, -4, "the wait queue is full")                                    \
  XX(ECANCELED, -5, "the operation was cancelled")                           \
  XX(EBUSY, -6, "the resource is still in use")                              \
  XX(EUNAVAILABLE, -7, "the backend is unavailable")                         \
  XX(ECONFIG, -8, "the backend rejected the configuration")                  \
  XX(EPROTO, -9, "the backend sent an unexpected reply")                     \
  XX(ECLOSED, -10, "the handle is closed")                                   \
  XX(ELIMITED, -11, "rate limited")                                          \
  XX(EOPEN, -12, "the circuit breaker is open")                              \
  XX(ESHED, -13, "the request was shed under overload")                      \
  XX(ECALL, -14, "the guarded call failed")                                  \
  XX(ENOTFOUND, -15, "no such item")                                         \
  XX(ESYS, -16, "a system call failed")

/** Error codes. Every failing call returns one of these (all negative). */
typedef enum admit_errno_e {
  ADMIT_OK = 0,
#define ADMIT__ERRNO_ENUM(name, value, msg) ADMIT_##name = (value),
  ADMIT_ERRNO_MAP(ADMIT__ERRNO_ENUM)
#undef ADMIT__ERRNO_ENUM
} admit_errno_t;

/**
 * Returns a static, human-readable message for an error code.
 *
 * Unknown codes give "unknown error". Thread-safe.
 */
ADMIT_EXTERN const char* admit_strerror(int err);

/** Returns the static name of an error code, e.g. "ADMIT_EINVAL". */
ADMIT_EXTERN const char* admit_err_name(int err);

/** A timeout that never expires; waiting forever must be asked for. */
#define ADMIT_FOREVER UINT64_MAX

/** Constants that bindings cannot read from macros. */
enum admit_constants_e {
  /** Most rates one spec or limiter may hold ("10/s;100/min;..."). */
  ADMIT_RATES_MAX = 8,
  /** Priority classes of a semaphore; 0 is served first. */
  ADMIT_PRIORITIES_MAX = 8
};

/**
 * Replaces the allocator that admit uses for its own memory.
 *
 * Call it before any other admit_ function; the functions must be
 * thread-safe. It does not change the allocators of hiredis or libuv.
 * Returns 0, or ADMIT_EINVAL if any pointer is NULL.
 */
ADMIT_EXTERN int admit_replace_allocator(void* (*malloc_fn)(size_t),
                                         void* (*realloc_fn)(void*, size_t),
                                         void* (*calloc_fn)(size_t, size_t),
                                         void (*free_fn)(void*));

/**
 * A source of time, injected so tests can run on exact, simulated time.
 *
 * `now_ns` returns monotonic nanoseconds; `sleep_ns` blocks for that many
 * nanoseconds (a fake clock advances itself instead). A NULL `now_ns` means
 * the system monotonic clock; a NULL `sleep_ns` means a real sleep. Both are
 * called from whichever thread uses the primitive, so they must be
 * thread-safe.
 */
typedef struct admit_clock_s {
  uint64_t (*now_ns)(void* ud);      /**< Current time in nanoseconds. */
  void (*sleep_ns)(void* ud, uint64_t ns); /**< Sleep for @p ns. */
  void* ud;                          /**< Passed to both callbacks. */
} admit_clock_t;

/** Returns the system monotonic clock in nanoseconds. Thread-safe. */
ADMIT_EXTERN uint64_t admit_now_ns(void);

/** Sleeps for @p ns nanoseconds of real time (EINTR is retried). */
ADMIT_EXTERN void admit_sleep_ns(uint64_t ns);

/** Nanoseconds per unit, for readable literals: `5 * ADMIT_SECOND`. */
enum admit_durations_e {
  ADMIT_MICROSECOND = 1000,
  ADMIT_MILLISECOND = 1000 * 1000,
  ADMIT_SECOND = 1000 * 1000 * 1000
};

/** A rate: @p count units per @p period_ns nanoseconds. Both nonzero. */
typedef struct admit_rate_s {
  uint64_t count;     /**< Units admitted per period. */
  uint64_t period_ns; /**< Length of the period. */
} admit_rate_t;

/**
 * Parses a rate spec such as "100/s", "10 per minute", "5/10s" or
 * "10/minute;100/hour" into @p rates.
 *
 * The grammar (case-insensitive; `ws` is ASCII white space, all optional):
 *
 *     spec  = ws rate ws { sep ws rate ws }
 *     sep   = ";" | "," | "|"
 *     rate  = count ws ( "/" | "per" ) ws [ mult ws ] unit
 *     count = mult = decimal digits, nonzero, at most UINT64_MAX
 *
 * The period is mult (default 1) times the unit: ns, nsec(s),
 * nanosecond(s); us, usec(s), microsecond(s); ms, msec(s),
 * millisecond(s); s, sec(s), second(s); m, min(s), minute(s); h, hr(s),
 * hour(s); d, day(s); w, week(s); month(s) (30 days) and year(s) (360
 * days). Every spec the Python `limits` library (2.8) accepts with ASCII
 * white space parses to the same rates, except that zero counts and
 * multipliers (a zero multiplier means 1 there), numbers beyond 64 bits
 * and the stray ":" its pattern lets through before a separator are
 * errors here.
 *
 * Returns the number of rates (at least 1), having written them to
 * @p rates[0..cap-1]. With @p rates NULL and @p cap 0 nothing is written
 * and the rates are only counted. On error returns ADMIT_EINVAL, leaves
 * @p rates untouched and sets @p err_offset (if not NULL) to the byte
 * offset of the first problem from the left: a NULL or empty spec, no
 * rate where one was expected (white space only, "10/s;;5/m", a trailing
 * separator), a sign or zero, a number above UINT64_MAX, a period above
 * UINT64_MAX ns (at its multiplier), an unknown unit, trailing garbage, or
 * one rate more than @p cap (at its start); NULL @p rates with a nonzero
 * @p cap is an error at offset 0. Pure and thread-safe; allocates nothing.
 */
ADMIT_EXTERN int admit_rate_parse(const char* spec, admit_rate_t* rates,
                                  size_t cap, size_t* err_offset);

/**
 * Formats @p rate as "count/period" ("10/1m", "5/10s", "3/250ms") into
 * @p buf.
 *
 * The period is written with the largest of d, h, m, s, ms, us and ns that
 * divides it exactly, which is the shortest such form; it parses back to
 * the same rate. 64 bytes always suffice. Returns the length written
 * (without the NUL), or ADMIT_EINVAL for a NULL argument, a zero count or
 * period, or a @p buf too small (then @p buf, if @p size > 0, holds "").
 * Thread-safe.
 */
ADMIT_EXTERN int admit_rate_format(const admit_rate_t* rate, char* buf,
                                   size_t size);

/**
 * The answer to one check: may the work go ahead, and what a client needs
 * to know either way (HTTP 429 `Retry-After`, `RateLimit-*` headers).
 *
 * With several rates, the fields describe the most restrictive one.
 */
typedef struct admit_decision_s {
  int allowed;             /**< 1 if admitted (and consumed), 0 if not. */
  uint32_t limiting;       /**< Index of the rate that decided. */
  uint64_t limit;          /**< Units the deciding rate allows per burst. */
  uint64_t remaining;      /**< Units that could still be admitted now. */
  uint64_t retry_after_ns; /**< 0 if allowed; else wait before it fits
                              (UINT64_MAX: it never will). */
  uint64_t reset_after_ns; /**< Until the state is as fresh as a new one. */
} admit_decision_t;

#ifdef __cplusplus
}
#endif
#endif /* ADMIT_COMMON_H */
