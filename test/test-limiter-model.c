/* Property tests: the limiter and the raw algorithms against a reference
 * model, over thousands of random operation sequences.
 *
 * The model is written from the definitions, not from algo.c's formulas:
 *
 * - Token bucket: the ITU-T I.371 "continuous-state leaky bucket" (a level
 *   X in nanoseconds and the time of the last conforming charge), the
 *   equivalent of the virtual-scheduling form algo.c uses.
 * - Windows: an explicit list of admissions with their timestamps; usage
 *   in a window is the sum over the list.
 * - Every derived value is found by search over the definition: retry_after
 *   is the smallest delay at which the same request fits (binary search
 *   over time), remaining the largest cost that fits now, reset_after the
 *   smallest delay after which the state is as fresh as a new one.
 *
 * Every decision field, every reservation wait and every refund must match
 * exactly; after a denial the test also checks at now + retry_after - 1
 * (denied) and now + retry_after (admitted). The seed is printed; set
 * ADMIT_TEST_SEED to replay one. */
#include "helpers.h"

#include <inttypes.h>
#include <stdio.h>

#include "algo.h"

typedef __int128 i128;
typedef unsigned __int128 u128;

#define MAXADM 256
#define MAXRES 64

/* ---- random numbers ------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void) {
  /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static uint64_t rnd_in(uint64_t lo, uint64_t hi) {
  return lo + rnd() % (hi - lo + 1);
}

/* ---- the model ----------------------------------------------------------- */

typedef struct adm_s {
  uint64_t t;
  uint64_t cost;
} adm_t;

typedef struct mrate_s {
  uint64_t limit; /* burst or count */
  uint64_t P;     /* period */
  uint64_t T;     /* bucket: interval */
  uint64_t tol;   /* bucket: limit * T */
  /* Bucket: continuous-state leaky bucket. */
  i128 X;
  uint64_t lct;
  /* Windows: the admissions still relevant (last two windows). */
  adm_t adm[MAXADM];
  int nadm;
} mrate_t;

typedef struct model_s {
  admit_algo_t algo;
  uint32_t n;
  mrate_t r[ADMIT_RATES_MAX];
} model_t;

static uint64_t m_backlog(const mrate_t* r, uint64_t t) {
  i128 b = r->X - ((i128)t - (i128)r->lct);
  return b > 0 ? (uint64_t)b : 0;
}

static uint64_t m_used(const mrate_t* r, uint64_t w) {
  uint64_t s = 0;
  for (int i = 0; i < r->nadm; i++) {
    if (r->adm[i].t / r->P == w) s += r->adm[i].cost;
  }
  return s;
}

static bool m_fits(const model_t* m, const mrate_t* r, uint64_t t,
                   uint64_t c) {
  switch (m->algo) {
    case ADMIT_TOKEN_BUCKET:
      return (u128)m_backlog(r, t) + (u128)c * r->T <= r->tol;
    case ADMIT_FIXED_WINDOW:
      return m_used(r, t / r->P) + c <= r->limit;
    default: {
      uint64_t w = t / r->P, e = t - w * r->P;
      uint64_t cur = m_used(r, w), prev = w > 0 ? m_used(r, w - 1) : 0;
      return (u128)(cur + c) * r->P + (u128)prev * (r->P - e) <=
             (u128)r->limit * r->P;
    }
  }
}

static bool m_fresh(const model_t* m, const mrate_t* r, uint64_t t) {
  if (m->algo == ADMIT_TOKEN_BUCKET) return m_backlog(r, t) == 0;
  uint64_t w = t / r->P;
  if (m_used(r, w) != 0) return false;
  return m->algo == ADMIT_FIXED_WINDOW || w == 0 || m_used(r, w - 1) == 0;
}

/* An upper bound on any delay the model searches for. */
static uint64_t m_horizon(const model_t* m, const mrate_t* r, uint64_t now,
                          uint64_t c) {
  if (m->algo == ADMIT_TOKEN_BUCKET) return m_backlog(r, now) + c * r->T + 1;
  return 3 * r->P;
}

/* Smallest d in [0, hi] with pred(now + d), given pred(now + hi). */
#define SEARCH(result, hi_, pred)                                          \
  do {                                                                     \
    uint64_t lo_ = 0, h_ = (hi_);                                          \
    uint64_t t_ = now + h_;                                                \
    assert_true(pred);                                                     \
    while (lo_ < h_) {                                                     \
      uint64_t mid_ = lo_ + (h_ - lo_) / 2;                                \
      t_ = now + mid_;                                                     \
      if (pred) h_ = mid_; else lo_ = mid_ + 1;                            \
    }                                                                      \
    (result) = lo_;                                                        \
  } while (0)

static uint64_t m_rate_retry(const model_t* m, const mrate_t* r, uint64_t now,
                             uint64_t c) {
  uint64_t d;
  SEARCH(d, m_horizon(m, r, now, c), m_fits(m, r, t_, c));
  return d;
}

static uint64_t m_rate_reset(const model_t* m, const mrate_t* r,
                             uint64_t now) {
  uint64_t d;
  SEARCH(d, m_horizon(m, r, now, 0), m_fresh(m, r, t_));
  return d;
}

static uint64_t m_rate_remaining(const model_t* m, const mrate_t* r,
                                 uint64_t now) {
  uint64_t k = 0;
  while (k < r->limit && m_fits(m, r, now, k + 1)) k++;
  return k;
}

static bool m_all_fit(const model_t* m, uint64_t t, uint64_t c) {
  for (uint32_t i = 0; i < m->n; i++) {
    if (!m_fits(m, &m->r[i], t, c)) return false;
  }
  return true;
}

static void m_charge(model_t* m, mrate_t* r, uint64_t at, uint64_t c) {
  if (m->algo == ADMIT_TOKEN_BUCKET) {
    r->X = (i128)m_backlog(r, at) + (i128)c * r->T;
    r->lct = at;
  } else {
    assert_true(r->nadm < MAXADM);
    r->adm[r->nadm].t = at;
    r->adm[r->nadm].cost = c;
    r->nadm++;
  }
}

/* Drops admissions that no decision at or after now can see. */
static void m_forget(model_t* m, uint64_t now) {
  for (uint32_t i = 0; i < m->n; i++) {
    mrate_t* r = &m->r[i];
    uint64_t w = now / r->P;
    int k = 0;
    for (int j = 0; j < r->nadm; j++) {
      if (r->adm[j].t / r->P + 1 >= w) r->adm[k++] = r->adm[j];
    }
    r->nadm = k;
  }
}

static void m_refund(model_t* m, uint64_t now, uint64_t c, uint64_t taken) {
  for (uint32_t i = 0; i < m->n; i++) {
    mrate_t* r = &m->r[i];
    if (m->algo == ADMIT_TOKEN_BUCKET) {
      i128 x = (i128)m_backlog(r, now) - (i128)c * r->T;
      r->X = x > 0 ? x : 0;
      r->lct = now;
    } else if (taken / r->P == now / r->P) {
      uint64_t left = c;
      for (int j = r->nadm - 1; j >= 0 && left > 0; j--) {
        if (r->adm[j].t / r->P != now / r->P) continue;
        uint64_t take = r->adm[j].cost < left ? r->adm[j].cost : left;
        r->adm[j].cost -= take;
        left -= take;
      }
    }
  }
}

/* The decision as seen at now from the current state (after a change). */
static void m_fill_allowed(const model_t* m, uint64_t now,
                           admit_decision_t* d) {
  uint64_t best = UINT64_MAX, reset = 0;
  uint32_t bi = 0;
  for (uint32_t i = 0; i < m->n; i++) {
    uint64_t rem = m_rate_remaining(m, &m->r[i], now);
    if (rem < best) {
      best = rem;
      bi = i;
    }
    uint64_t rs = m_rate_reset(m, &m->r[i], now);
    if (rs > reset) reset = rs;
  }
  d->allowed = 1;
  d->limiting = bi;
  d->limit = m->r[bi].limit;
  d->remaining = best;
  d->retry_after_ns = 0;
  d->reset_after_ns = reset;
}

/* A decision for cost @p c (0 = peek) that may take a place up to
 * @p max_wait ahead. Returns 1 if taken (charged), 0 if not. */
static int m_decide(model_t* m, uint64_t now, uint64_t c, uint64_t max_wait,
                    bool charge, admit_decision_t* d, uint64_t* wait_out) {
  uint64_t wait = 0, reset = 0;
  uint32_t worst = 0;
  for (uint32_t i = 0; i < m->n; i++) {
    uint64_t ra = m_rate_retry(m, &m->r[i], now, c);
    if (ra > wait) {
      wait = ra;
      worst = i;
    }
    uint64_t rs = m_rate_reset(m, &m->r[i], now);
    if (rs > reset) reset = rs;
  }
  /* The model checks itself: the earliest time all rates fit together is
   * the latest of the times each fits alone. */
  uint64_t hi = 0;
  for (uint32_t i = 0; i < m->n; i++) hi += m_horizon(m, &m->r[i], now, c);
  uint64_t joint;
  SEARCH(joint, hi, m_all_fit(m, t_, c));
  assert_int_equal(joint, wait);
  *wait_out = wait;

  if (!charge) {
    /* A peek: the decision of a zero cost, nothing changes. */
    if (wait == 0) {
      m_fill_allowed(m, now, d);
    } else {
      d->allowed = 0;
      d->limiting = worst;
      d->limit = m->r[worst].limit;
      d->remaining = m_rate_remaining(m, &m->r[worst], now);
      d->retry_after_ns = wait;
      d->reset_after_ns = reset;
    }
    return 0;
  }
  if (wait == 0 ||
      (m->algo == ADMIT_TOKEN_BUCKET && wait <= max_wait)) {
    for (uint32_t i = 0; i < m->n; i++) m_charge(m, &m->r[i], now + wait, c);
    m_fill_allowed(m, now, d);
    return 1;
  }
  d->allowed = 0;
  d->limiting = worst;
  d->limit = m->r[worst].limit;
  d->remaining = m_rate_remaining(m, &m->r[worst], now);
  d->retry_after_ns = wait;
  d->reset_after_ns = reset;
  return 0;
}

/* ---- the systems under test ---------------------------------------------- */

typedef struct res_s {
  admit_reservation_t lr; /* the limiter's reservation */
  uint64_t cost;
  uint64_t taken_at;
  int stale; /* made before a reset */
} res_t;

typedef struct run_s {
  model_t m;
  admit__algo_t a;
  admit__cell_t cells[ADMIT_RATES_MAX];
  fake_clock_t fc;
  admit_limiter_t* l;
  uint64_t now;
  uint64_t min_limit;
  res_t res[MAXRES];
  int nres;
  /* For failure messages. */
  uint64_t seed;
  int seq;
  int op;
} run_t;

static run_t* cur_run;

#define CHECK_EQ(a, b)                                                      \
  do {                                                                      \
    uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                        \
    if (a_ != b_) {                                                         \
      print_error("model mismatch: %s = %" PRIu64 ", %s = %" PRIu64         \
                  " (seed %" PRIu64 ", sequence %d, op %d, now %" PRIu64    \
                  ")\n",                                                    \
                  #a, a_, #b, b_, cur_run->seed, cur_run->seq,              \
                  cur_run->op, cur_run->now);                               \
      fail();                                                               \
    }                                                                       \
  } while (0)

static void check_d(const admit_decision_t* got, const admit_decision_t* want) {
  CHECK_EQ(got->allowed, want->allowed);
  CHECK_EQ(got->limiting, want->limiting);
  CHECK_EQ(got->limit, want->limit);
  CHECK_EQ(got->remaining, want->remaining);
  CHECK_EQ(got->retry_after_ns, want->retry_after_ns);
  CHECK_EQ(got->reset_after_ns, want->reset_after_ns);
}

static void set_now(run_t* r, uint64_t t) {
  assert_true(t >= r->now);
  r->now = t;
  atomic_store(&r->fc.now, t);
  m_forget(&r->m, t);
}

/* One try on all three; returns whether it was allowed. */
static int op_try_d(run_t* r, uint64_t cost, admit_decision_t* out) {
  admit_decision_t dm, dl, da;
  uint64_t wait;
  int want = m_decide(&r->m, r->now, cost, 0, true, &dm, &wait);
  assert_int_equal(admit_limiter_try(r->l, cost, &dl), 0);
  int got = admit__algo_decide(&r->a, r->cells, r->cells, r->now, cost, &da);
  CHECK_EQ(dl.allowed, want);
  CHECK_EQ(got, want);
  check_d(&dl, &dm);
  check_d(&da, &dm);
  if (out != NULL) *out = dl;
  return want;
}

static int op_try(run_t* r, uint64_t cost) { return op_try_d(r, cost, NULL); }

static void op_bad_cost(run_t* r) {
  admit_decision_t d;
  admit_reservation_t res;
  uint64_t cost = rnd() % 2 ? 0 : r->min_limit + 1 + rnd() % 3;
  CHECK_EQ(admit_limiter_try(r->l, cost, &d), ADMIT_EINVAL);
  CHECK_EQ(admit_limiter_reserve(r->l, cost, UINT64_MAX, &res, &d),
           ADMIT_EINVAL);
  CHECK_EQ(admit__algo_decide(&r->a, r->cells, r->cells, r->now, cost, &d),
           ADMIT_EINVAL);
}

static void op_peek(run_t* r) {
  admit_decision_t dm, dl, da;
  uint64_t wait;
  m_decide(&r->m, r->now, 0, 0, false, &dm, &wait);
  assert_int_equal(admit_limiter_peek(r->l, &dl), 0);
  admit__algo_peek(&r->a, r->cells, r->now, &da);
  check_d(&dl, &dm);
  check_d(&da, &dm);
  CHECK_EQ(admit__algo_fresh(&r->a, r->cells, r->now),
           dm.reset_after_ns == 0);
}

static void op_reserve(run_t* r, uint64_t cost) {
  uint64_t max_wait;
  switch (rnd() % 4) {
    case 0:
      max_wait = 0;
      break;
    case 1:
      max_wait = UINT64_MAX;
      break;
    default:
      max_wait = rnd_in(0, 2 * r->m.r[0].P + r->m.r[0].tol);
  }
  admit_decision_t dm, dl, da;
  uint64_t wm, wa = 12345;
  int want = m_decide(&r->m, r->now, cost, max_wait, true, &dm, &wm);
  admit_reservation_t lr;
  memset(&lr, 0, sizeof(lr));
  int rc = admit_limiter_reserve(r->l, cost, max_wait, &lr, &dl);
  admit__cell_t next[ADMIT_RATES_MAX];
  int ga = admit__algo_reserve(&r->a, r->cells, next, r->now, cost, max_wait,
                               &wa, &da);
  CHECK_EQ(ga, want);
  CHECK_EQ(wa, wm);
  check_d(&da, &dm);
  check_d(&dl, &dm);
  if (ga == 1) memcpy(r->cells, next, sizeof(next));
  if (want == 1) {
    CHECK_EQ(rc, 0);
    CHECK_EQ(lr.reserved, 1);
    CHECK_EQ(lr.wait_ns, wm);
    CHECK_EQ(lr.ready_at_ns, r->now + wm);
    CHECK_EQ(lr.cost, cost);
    if (r->nres < MAXRES) {
      res_t* x = &r->res[r->nres++];
      x->lr = lr;
      x->cost = cost;
      x->taken_at = r->now;
      x->stale = 0;
    }
  } else if (wm <= max_wait) {
    /* A window that fits later: nothing reserved, come back in wm. */
    CHECK_EQ(r->m.algo == ADMIT_TOKEN_BUCKET, 0);
    CHECK_EQ(rc, 0);
    CHECK_EQ(lr.reserved, 0);
    CHECK_EQ(lr.wait_ns, wm);
    CHECK_EQ(admit_limiter_cancel(r->l, &lr), 0);
  } else {
    CHECK_EQ(rc, ADMIT_ETIMEDOUT);
  }
}

static void op_cancel(run_t* r) {
  if (r->nres == 0) return;
  int k = (int)(rnd() % (uint64_t)r->nres);
  res_t x = r->res[k];
  r->res[k] = r->res[--r->nres];
  CHECK_EQ(admit_limiter_cancel(r->l, &x.lr), 0);
  if (x.stale) return;
  m_refund(&r->m, r->now, x.cost, x.taken_at);
  admit__algo_refund(&r->a, r->cells, r->cells, r->now, x.cost, x.taken_at);
}

static void op_reset(run_t* r) {
  admit_limiter_reset(r->l);
  memset(r->cells, 0, sizeof(r->cells));
  for (uint32_t i = 0; i < r->m.n; i++) {
    r->m.r[i].X = 0;
    r->m.r[i].lct = 0;
    r->m.r[i].nadm = 0;
  }
  for (int i = 0; i < r->nres; i++) r->res[i].stale = 1;
}

static void op_advance(run_t* r) {
  uint64_t P = r->m.r[rnd() % r->m.n].P;
  uint64_t step;
  switch (rnd() % 8) {
    case 0:
    case 1:
      step = 0;
      break;
    case 2:
      step = 1;
      break;
    case 3:
      step = rnd_in(0, P / 4 + 1);
      break;
    case 4:
    case 5:
      step = rnd_in(0, 2 * P);
      break;
    case 6:
      /* Land exactly on a window edge, or just before it. */
      step = P - r->now % P - (rnd() % 2);
      break;
    default:
      step = rnd_in(0, 100 * P);
      break;
  }
  set_now(r, r->now + step);
}

/* After a denial: denied at retry_after - 1, admitted at retry_after. */
static void op_probe(run_t* r, uint64_t cost) {
  admit_decision_t d;
  if (op_try_d(r, cost, &d)) return;
  uint64_t ra = d.retry_after_ns;
  CHECK_EQ(ra > 0, 1);
  set_now(r, r->now + ra - 1);
  CHECK_EQ(op_try(r, cost), 0);
  set_now(r, r->now + 1);
  CHECK_EQ(op_try(r, cost), 1);
}

/* ---- configurations ------------------------------------------------------ */

static void run_init(run_t* r, admit_algo_t algo, uint32_t n) {
  memset(r, 0, sizeof(*r));
  admit_quota_t q;
  memset(&q, 0, sizeof(q));
  q.algo = algo;
  q.nrates = n;
  uint64_t P = 0;
  for (uint32_t i = 0; i < n; i++) {
    /* Periods from 1 ns up, each rate longer than the last. */
    switch (rnd() % 4) {
      case 0:
        P = P * rnd_in(1, 3) + rnd_in(1, 20);
        break;
      case 1:
        P = P * rnd_in(2, 10) + rnd_in(1, 1000);
        break;
      case 2:
        P = P * rnd_in(2, 60) + rnd_in(1, 1000000);
        break;
      default:
        P = P * rnd_in(1, 5) + rnd_in(1, 3) * (uint64_t)ADMIT_SECOND;
        break;
    }
    uint64_t C = rnd_in(1, 12);
    if (algo == ADMIT_TOKEN_BUCKET && C > P) C = P;
    q.rates[i].count = C;
    q.rates[i].period_ns = P;
    q.burst[i] = rnd() % 3 == 0 ? rnd_in(1, 15) : 0;
  }
  assert_int_equal(admit__algo_init(&r->a, &q), 0);
  r->m.algo = algo;
  r->m.n = n;
  r->min_limit = UINT64_MAX;
  for (uint32_t i = 0; i < n; i++) {
    mrate_t* mr = &r->m.r[i];
    uint64_t C = q.rates[i].count;
    mr->P = q.rates[i].period_ns;
    if (algo == ADMIT_TOKEN_BUCKET) {
      mr->limit = q.burst[i] != 0 ? q.burst[i] : C;
      /* The slowest spacing that never admits faster than C per P. */
      mr->T = mr->P / C + (mr->P % C != 0);
      mr->tol = mr->limit * mr->T;
    } else {
      mr->limit = C;
    }
    if (mr->limit < r->min_limit) r->min_limit = mr->limit;
  }
  r->now = rnd_in(1, UINT64_C(1) << 50);
  admit_clock_t clk = fake_clock(&r->fc, r->now);
  assert_int_equal(admit_limiter_new(&r->l, &q, &clk), 0);
}

static void run_sequence(run_t* r, int ops) {
  for (r->op = 0; r->op < ops; r->op++) {
    uint64_t cost = rnd_in(1, r->min_limit);
    if (rnd() % 3 == 0) cost = 1;
    switch (rnd() % 20) {
      case 0: case 1: case 2: case 3: case 4: case 5:
        op_advance(r);
        break;
      case 6: case 7: case 8: case 9: case 10:
        op_try(r, cost);
        break;
      case 11: case 12:
        op_reserve(r, cost);
        break;
      case 13: case 14:
        op_cancel(r);
        break;
      case 15:
        op_peek(r);
        break;
      case 16:
        if (rnd() % 4 == 0) op_reset(r); else op_bad_cost(r);
        break;
      default:
        op_probe(r, cost);
        break;
    }
  }
}

static uint64_t base_seed(void) {
  const char* s = getenv("ADMIT_TEST_SEED");
  return s != NULL ? strtoull(s, NULL, 0) : UINT64_C(20240611);
}

static void run_many(admit_algo_t algo, uint32_t n) {
  uint64_t seed0 = base_seed() + (uint64_t)algo * 1000003 + n * 7919;
  int seqs = (int)test_scale(400, 40);
  static run_t r;
  cur_run = &r;
  print_message("algo %d, %u rate(s): %d sequences, seeds %" PRIu64
                "+k (ADMIT_TEST_SEED=%" PRIu64 ")\n",
                (int)algo, n, seqs, seed0, base_seed());
  for (int k = 0; k < seqs; k++) {
    rng_state = seed0 + (uint64_t)k;
    run_init(&r, algo, n);
    r.seed = seed0 + (uint64_t)k;
    r.seq = k;
    run_sequence(&r, 150);
    admit_limiter_free(r.l);
    r.l = NULL;
  }
}

#define MODEL_TEST(name, algo, n)                                          \
  static void name(void** state) {                                         \
    (void)state;                                                           \
    run_many(algo, n);                                                     \
  }
MODEL_TEST(test_bucket_1, ADMIT_TOKEN_BUCKET, 1)
MODEL_TEST(test_bucket_2, ADMIT_TOKEN_BUCKET, 2)
MODEL_TEST(test_bucket_3, ADMIT_TOKEN_BUCKET, 3)
MODEL_TEST(test_fixed_1, ADMIT_FIXED_WINDOW, 1)
MODEL_TEST(test_fixed_2, ADMIT_FIXED_WINDOW, 2)
MODEL_TEST(test_fixed_3, ADMIT_FIXED_WINDOW, 3)
MODEL_TEST(test_sliding_1, ADMIT_SLIDING_WINDOW, 1)
MODEL_TEST(test_sliding_2, ADMIT_SLIDING_WINDOW, 2)
MODEL_TEST(test_sliding_3, ADMIT_SLIDING_WINDOW, 3)

int main(void) {
  printf("model seed: %" PRIu64 " (set ADMIT_TEST_SEED to change)\n",
         base_seed());
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bucket_1),  cmocka_unit_test(test_bucket_2),
      cmocka_unit_test(test_bucket_3),  cmocka_unit_test(test_fixed_1),
      cmocka_unit_test(test_fixed_2),   cmocka_unit_test(test_fixed_3),
      cmocka_unit_test(test_sliding_1), cmocka_unit_test(test_sliding_2),
      cmocka_unit_test(test_sliding_3),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
