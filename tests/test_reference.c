/* The CPU reference (src/reference.c) against naive re-implementations written here, hand-computed
 * cases and the invariants of docs/ALGORITHM.md. Every GPU test trusts this oracle, so it is checked
 * against code that shares nothing with it. */
#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---------------------------------------------------------------------------------------------
 * Helpers.
 * ------------------------------------------------------------------------------------------- */

/* A fresh random stream per test (the process seed mixed with a per-test salt). */
static uint64_t rng(uint64_t salt)
{
    uint64_t s = th_seed() ^ (salt * 0x9E3779B97F4A7C15ull);
    return s ? s : 1;
}

static baatt_config shape(uint32_t b, uint32_t h, uint32_t kvh, uint32_t ql, uint32_t kl)
{
    baatt_config c = baatt_config_default();
    c.batch = b;
    c.heads = h;
    c.kv_heads = kvh;
    c.q_len = ql;
    c.kv_len = kl;
    return c;
}

static size_t q_elems(const baatt_config *c) { return (size_t)c->batch * c->heads * c->q_len * c->head_dim; }
static size_t k_elems(const baatt_config *c) { return (size_t)c->batch * c->kv_heads * c->kv_len * c->head_dim; }
static size_t mask_elems(const baatt_config *c)
{
    return (size_t)c->batch * c->heads * baatt_config_q_blocks(c) * baatt_config_k_blocks(c);
}

/* Random Q, K, V (float) for cfg; caller frees. */
typedef struct qkv {
    float *q, *k, *v;
} qkv;

static qkv qkv_random(uint64_t *st, const baatt_config *c, float sigma)
{
    qkv t = {th_random_tensor(st, BAATT_DTYPE_F32, q_elems(c), sigma),
             th_random_tensor(st, BAATT_DTYPE_F32, k_elems(c), sigma),
             th_random_tensor(st, BAATT_DTYPE_F32, k_elems(c), 1.0f)};
    return t;
}

static void qkv_free(qkv *t)
{
    free(t->q);
    free(t->k);
    free(t->v);
}

static float *fbuf(size_t n)
{
    float *p = malloc(n * sizeof(float) + 1);
    assert_non_null(p);
    th_poison(p, BAATT_DTYPE_F32, n); /* an unwritten element shows up as NaN */
    return p;
}

/* Naive softmax row: p[j] = softmax_j(t q.k_j) over keys with allowed[j] (NULL: all), 0 elsewhere.
 * Plain loops, one accumulator: deliberately unlike the reference. */
static void naive_probs(const float *q, const float *k, const uint8_t *allowed, uint32_t n, uint32_t d, double t,
                        double *p)
{
    double mx = -INFINITY, sum = 0;
    for (uint32_t j = 0; j < n; j++) {
        double s = 0;
        for (uint32_t a = 0; a < d; a++) s += (double)q[a] * k[(size_t)j * d + a];
        p[j] = t * s;
        if ((!allowed || allowed[j]) && p[j] > mx) mx = p[j];
    }
    for (uint32_t j = 0; j < n; j++) {
        p[j] = !allowed || allowed[j] ? exp(p[j] - mx) : 0;
        sum += p[j];
    }
    for (uint32_t j = 0; j < n; j++) p[j] /= sum;
}

static void naive_row(const float *q, const float *k, const float *v, const uint8_t *allowed, uint32_t n, uint32_t d,
                      double t, float *o)
{
    double *p = malloc(sizeof(double) * n);
    assert_non_null(p);
    naive_probs(q, k, allowed, n, d, t, p);
    for (uint32_t a = 0; a < d; a++) {
        double acc = 0;
        for (uint32_t j = 0; j < n; j++) acc += p[j] * v[(size_t)j * d + a];
        o[a] = (float)acc;
    }
    free(p);
}

static const float *q_row(const baatt_config *c, const float *q, uint32_t b, uint32_t h, uint32_t i)
{
    return q + (((size_t)b * c->heads + h) * c->q_len + i) * c->head_dim;
}

static const float *kv_head(const baatt_config *c, const float *k, uint32_t b, uint32_t h)
{
    return k + ((size_t)b * c->kv_heads + h / (c->heads / c->kv_heads)) * c->kv_len * c->head_dim;
}

static void naive_dense(const baatt_config *c, const float *q, const float *k, const float *v, float *o)
{
    for (uint32_t b = 0; b < c->batch; b++)
        for (uint32_t h = 0; h < c->heads; h++)
            for (uint32_t i = 0; i < c->q_len; i++)
                naive_row(q_row(c, q, b, h, i), kv_head(c, k, b, h), kv_head(c, v, b, h), NULL, c->kv_len, c->head_dim,
                          baatt_config_scale(c), (float *)q_row(c, o, b, h, i));
}

/* Allowed keys (original indices) of original query row i under mask/perms: ALGORITHM.md steps 1 and 5. */
static void naive_allowed(const baatt_config *c, const int32_t *pq, const int32_t *pk, const uint8_t *mrows, uint32_t i,
                          uint8_t *allowed)
{
    uint32_t p = 0, nk = baatt_config_k_blocks(c);
    while ((uint32_t)pq[p] != i) p++;
    const uint8_t *m = mrows + (size_t)(p / c->block_size) * nk;
    for (uint32_t s = 0; s < c->kv_len; s++) allowed[pk[s]] = m[s / c->block_size];
}

/* Norm of token i as the reference defines it: fp64, rounded to fp32. */
static float token_norm(const float *x, uint32_t d)
{
    double s = 0;
    for (uint32_t a = 0; a < d; a++) s += (double)x[a] * x[a];
    return (float)sqrt(s);
}

/* ---------------------------------------------------------------------------------------------
 * Dense attention.
 * ------------------------------------------------------------------------------------------- */

static void test_dense_vs_naive(void **state)
{
    (void)state;
    uint64_t st = rng(1);
    baatt_config c = shape(2, 2, 1, 5, 7); /* q_len != kv_len, MQA */
    c.scale = 0.2f;
    qkv t = qkv_random(&st, &c, 1.0f);
    float *o = fbuf(q_elems(&c)), *want = fbuf(q_elems(&c));
    assert_int_equal(baatt_reference_attention(&c, t.q, t.k, t.v, o), BAATT_OK);
    naive_dense(&c, t.q, t.k, t.v, want);
    assert_true(th_compare(o, want, q_elems(&c), 1e-6, 1e-6, "dense") <= 1);
    free(o);
    free(want);
    qkv_free(&t);
}

/* Two keys: q.k0 = ln 3 (scale 1), k1 = 0, so weights are 3/4 and 1/4; a zero query averages. */
static void test_dense_two_tokens(void **state)
{
    (void)state;
    baatt_config c = shape(1, 1, 1, 2, 2);
    c.scale = 1.0f;
    float q[2 * 64] = {0}, k[2 * 64] = {0}, v[2 * 64] = {0}, o[2 * 64];
    q[0] = 1.0f;            /* query 0; query 1 stays zero */
    k[0] = (float)log(3.0); /* key 0; key 1 stays zero */
    for (int a = 0; a < 64; a++) {
        v[a] = 1.0f;
        v[64 + a] = 5.0f;
    }
    v[5] = -2.0f;
    v[64 + 5] = 2.0f;
    assert_int_equal(baatt_reference_attention(&c, q, k, v, o), BAATT_OK);
    assert_float_equal(o[0], 0.75 * 1 + 0.25 * 5, 1e-6);
    assert_float_equal(o[5], 0.75 * -2 + 0.25 * 2, 1e-6);
    assert_float_equal(o[64], 3.0, 1e-6);
    assert_float_equal(o[64 + 5], 0.0, 1e-6);
}

/* GQA: heads=4, kv_heads=2 equals running every (b, h) on its own with kv head h/2. */
static void test_dense_gqa(void **state)
{
    (void)state;
    uint64_t st = rng(2);
    baatt_config c = shape(2, 4, 2, 33, 41), one = shape(1, 1, 1, 33, 41);
    qkv t = qkv_random(&st, &c, 1.0f);
    float *o = fbuf(q_elems(&c)), *o1 = fbuf(q_elems(&one));
    assert_int_equal(baatt_reference_attention(&c, t.q, t.k, t.v, o), BAATT_OK);
    for (uint32_t b = 0; b < 2; b++) {
        for (uint32_t h = 0; h < 4; h++) {
            assert_int_equal(baatt_reference_attention(&one, q_row(&c, t.q, b, h, 0), kv_head(&c, t.k, b, h),
                                                       kv_head(&c, t.v, b, h), o1),
                             BAATT_OK);
            assert_true(th_compare(q_row(&c, o, b, h, 0), o1, q_elems(&one), 0, 1e-7, "gqa head") <= 1);
        }
    }
    free(o);
    free(o1);
    qkv_free(&t);
}

/* fp16 / bf16 inputs give exactly what fp32 inputs holding the same values give (dense and BA-Att). */
static void test_half_inputs(void **state)
{
    (void)state;
    uint64_t st = rng(3);
    baatt_dtype dts[2] = {BAATT_DTYPE_F16, BAATT_DTYPE_BF16};
    for (int n = 0; n < 2; n++) {
        baatt_config c = shape(1, 2, 2, 70, 90), cf;
        c.block_size = 32;
        c.dtype = dts[n];
        cf = c;
        cf.dtype = BAATT_DTYPE_F32;
        void *q = th_random_tensor(&st, c.dtype, q_elems(&c), 1.0f);
        void *k = th_random_tensor(&st, c.dtype, k_elems(&c), 1.0f);
        void *v = th_random_tensor(&st, c.dtype, k_elems(&c), 1.0f);
        float *qf = th_to_float(q, c.dtype, q_elems(&c)), *kf = th_to_float(k, c.dtype, k_elems(&c)),
              *vf = th_to_float(v, c.dtype, k_elems(&c));
        float *o = fbuf(q_elems(&c)), *of = fbuf(q_elems(&c));
        assert_int_equal(baatt_reference_attention(&c, q, k, v, o), BAATT_OK);
        assert_int_equal(baatt_reference_attention(&cf, qf, kf, vf, of), BAATT_OK);
        assert_memory_equal(o, of, q_elems(&c) * sizeof(float));
        assert_int_equal(baatt_reference_baatt(&c, q, k, v, o, NULL, NULL, NULL), BAATT_OK);
        assert_int_equal(baatt_reference_baatt(&cf, qf, kf, vf, of, NULL, NULL, NULL), BAATT_OK);
        assert_memory_equal(o, of, q_elems(&c) * sizeof(float));
        free(q), free(k), free(v), free(qf), free(kf), free(vf), free(o), free(of);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Step 1: sort.
 * ------------------------------------------------------------------------------------------- */

static void test_sort_random(void **state)
{
    (void)state;
    uint64_t st = rng(4);
    baatt_config c = shape(2, 3, 3, 77, 77);
    float *x = th_random_tensor(&st, BAATT_DTYPE_F32, q_elems(&c), 1.0f);
    int32_t perm[2 * 3 * 77];
    assert_int_equal(baatt_reference_sort(&c, x, 3, 77, perm), BAATT_OK);
    for (uint32_t r = 0; r < 6; r++) {
        const int32_t *p = perm + r * 77;
        uint8_t seen[77] = {0};
        for (uint32_t i = 0; i < 77; i++) {
            assert_true(p[i] >= 0 && p[i] < 77 && !seen[p[i]]);
            seen[p[i]] = 1;
        }
        for (uint32_t i = 1; i < 77; i++) {
            float a = token_norm(x + ((size_t)r * 77 + p[i - 1]) * 64, 64);
            float b = token_norm(x + ((size_t)r * 77 + p[i]) * 64, 64);
            assert_true(a > b || (a == b && p[i - 1] < p[i]));
        }
    }
    c.norm_sort = 0;
    assert_int_equal(baatt_reference_sort(&c, x, 3, 77, perm), BAATT_OK);
    for (uint32_t i = 0; i < 6 * 77; i++) assert_int_equal(perm[i], i % 77);
    free(x);
}

/* Equal norms by construction (sign flips of one vector, exact doublings/halvings): ties keep the
 * lower index first. */
static void test_sort_ties(void **state)
{
    (void)state;
    uint64_t st = rng(5);
    baatt_config c = shape(1, 1, 1, 10, 10);
    float u[64], x[10 * 64];
    const float mult[10] = {0.5f, 1, 0.5f, 2, 1, 0.5f, 0.5f, 1, 2, 0.5f};
    const int32_t want[10] = {3, 8, 1, 4, 7, 0, 2, 5, 6, 9};
    for (int a = 0; a < 64; a++) u[a] = th_normal(&st);
    for (int i = 0; i < 10; i++)
        for (int a = 0; a < 64; a++) x[i * 64 + a] = mult[i] * u[a] * (th_uniform(&st) < 0.5f ? -1.0f : 1.0f);
    int32_t perm[10];
    assert_int_equal(baatt_reference_sort(&c, x, 1, 10, perm), BAATT_OK);
    assert_memory_equal(perm, want, sizeof want);
    /* Norms 1 and sqrt(1 + 1e-7) differ in fp64 but both round to 1.0f: a tie, so token 0 stays
     * first (sorting by the fp64 norm or by the squared norm would put token 1 first). */
    c.q_len = c.kv_len = 2;
    memset(x, 0, sizeof x);
    x[0] = 1.0f;
    x[64] = 1.0f;
    x[65] = sqrtf(1e-7f);
    assert_true(token_norm(x, 64) == token_norm(x + 64, 64));
    assert_true((float)(1.0 + (double)x[65] * x[65]) > 1.0f);
    assert_int_equal(baatt_reference_sort(&c, x, 1, 2, perm), BAATT_OK);
    assert_int_equal(perm[0], 0);
    assert_int_equal(perm[1], 1);
}

/* ---------------------------------------------------------------------------------------------
 * Step 2: block statistics.
 * ------------------------------------------------------------------------------------------- */

/* Direct computation with the one-pass E[x^2] - E[x]^2 (a different formula than the reference's
 * two passes), over blocks of 32 of 100 tokens: the last block holds 4. */
static void check_stats(const baatt_config *c, const float *x, uint32_t nh, uint32_t len, const int32_t *perm,
                        const float *mean, const float *var)
{
    uint32_t nb = (len + c->block_size - 1) / c->block_size;
    for (uint32_t r = 0; r < c->batch * nh; r++) {
        for (uint32_t j = 0; j < nb; j++) {
            uint32_t lo = j * c->block_size, hi = lo + c->block_size < len ? lo + c->block_size : len;
            for (uint32_t a = 0; a < c->head_dim; a++) {
                double s = 0, ss = 0;
                for (uint32_t p = lo; p < hi; p++) {
                    double e = x[((size_t)r * len + perm[r * len + p]) * c->head_dim + a];
                    s += e;
                    ss += e * e;
                }
                double m = s / (hi - lo), vv = ss / (hi - lo) - m * m;
                size_t at = ((size_t)r * nb + j) * c->head_dim + a;
                assert_float_equal(mean[at], m, 1e-6);
                assert_float_equal(var[at], vv, 1e-5);
            }
        }
    }
}

static void test_block_stats(void **state)
{
    (void)state;
    uint64_t st = rng(6);
    baatt_config c = shape(2, 2, 2, 100, 100);
    c.block_size = 32;
    float *x = th_random_tensor(&st, BAATT_DTYPE_F32, q_elems(&c), 1.0f);
    int32_t perm[2 * 2 * 100];
    float mean[2 * 2 * 4 * 64], var[2 * 2 * 4 * 64];
    for (int sorted = 0; sorted < 2; sorted++) {
        c.norm_sort = sorted;
        assert_int_equal(baatt_reference_sort(&c, x, 2, 100, perm), BAATT_OK);
        assert_int_equal(baatt_reference_block_stats(&c, x, 2, 100, perm, mean, var), BAATT_OK);
        check_stats(&c, x, 2, 100, perm, mean, var);
    }
    /* A one-token last block has zero variance and its token as mean. */
    c.q_len = c.kv_len = 33;
    assert_int_equal(baatt_reference_sort(&c, x, 1, 33, perm), BAATT_OK);
    assert_int_equal(baatt_reference_block_stats(&c, x, 1, 33, perm, mean, var), BAATT_OK);
    check_stats(&c, x, 1, 33, perm, mean, var);
    for (int a = 0; a < 64; a++) {
        assert_true(var[64 + a] == 0.0f);
        assert_true(mean[64 + a] == x[perm[32] * 64 + a]);
    }
    free(x);
}

/* ---------------------------------------------------------------------------------------------
 * Step 3: block logits.
 * ------------------------------------------------------------------------------------------- */

static double formula_logit(const baatt_config *c, const float *qm, const float *qv, const float *km, const float *kv,
                            uint32_t nj)
{
    double t = baatt_config_scale(c), dot = 0, var = 0;
    for (uint32_t a = 0; a < c->head_dim; a++) {
        dot += (double)qm[a] * km[a];
        var += (double)qv[a] * (kv[a] + (double)km[a] * km[a]) + (double)qm[a] * qm[a] * kv[a];
    }
    return t * dot + (c->covariance ? t * t / 2 * var : 0) + log(nj);
}

static void test_block_logits(void **state)
{
    (void)state;
    uint64_t st = rng(7);
    baatt_config c = shape(1, 4, 2, 100, 70); /* nq = 4, nk = 3, n_J = 32, 32, 6 */
    c.block_size = 32;
    enum { NQ = 4, NK = 3, D = 64 };
    float qm[4 * NQ * D], qv[4 * NQ * D], km[2 * NK * D], kv[2 * NK * D], l[4 * NQ * NK];
    for (int i = 0; i < 4 * NQ * D; i++) qm[i] = th_normal(&st), qv[i] = fabsf(th_normal(&st));
    for (int i = 0; i < 2 * NK * D; i++) km[i] = th_normal(&st), kv[i] = fabsf(th_normal(&st));
    const uint32_t nj[NK] = {32, 32, 6};
    for (int cov = 0; cov < 2; cov++) {
        c.covariance = cov;
        c.scale = cov ? 0.3f : 0.0f;
        assert_int_equal(baatt_reference_block_logits(&c, qm, qv, km, kv, l), BAATT_OK);
        for (uint32_t h = 0; h < 4; h++)
            for (uint32_t i = 0; i < NQ; i++)
                for (uint32_t j = 0; j < NK; j++) {
                    size_t qa = ((size_t)h * NQ + i) * D, ka = ((size_t)(h / 2) * NK + j) * D;
                    double want = formula_logit(&c, qm + qa, qv + qa, km + ka, kv + ka, nj[j]);
                    assert_float_equal(l[(h * NQ + i) * NK + j], want, 1e-5 * (1 + fabs(want)));
                }
    }
    /* Zero statistics leave only ln(n_J). */
    memset(qm, 0, sizeof qm), memset(qv, 0, sizeof qv), memset(km, 0, sizeof km), memset(kv, 0, sizeof kv);
    assert_int_equal(baatt_reference_block_logits(&c, qm, qv, km, kv, l), BAATT_OK);
    for (int r = 0; r < 4 * NQ; r++)
        for (int j = 0; j < NK; j++) assert_float_equal(l[r * NK + j], log(nj[j]), 1e-6);
}

/* ---------------------------------------------------------------------------------------------
 * Step 4: selection.
 * ------------------------------------------------------------------------------------------- */

static uint32_t row_count(const uint8_t *m, uint32_t nk)
{
    uint32_t n = 0;
    for (uint32_t j = 0; j < nk; j++) n += m[j];
    return n;
}

static void test_select_keep_ratio(void **state)
{
    (void)state;
    uint64_t st = rng(8);
    baatt_config c = shape(1, 2, 2, 128, 640); /* nq = 2, nk = 10 */
    c.keep_ratio = 0.3f;
    float l[2 * 2 * 10];
    uint8_t m[2 * 2 * 10];
    for (int i = 0; i < 40; i++) l[i] = th_normal(&st);
    assert_int_equal(baatt_reference_select(&c, l, m), BAATT_OK);
    assert_int_equal(baatt_config_keep_blocks(&c), 3);
    for (int r = 0; r < 4; r++) {
        assert_int_equal(row_count(m + r * 10, 10), 3);
        float lo_sel = INFINITY, hi_unsel = -INFINITY;
        for (int j = 0; j < 10; j++) {
            float v = l[r * 10 + j];
            if (m[r * 10 + j]) lo_sel = fminf(lo_sel, v);
            else hi_unsel = fmaxf(hi_unsel, v);
        }
        assert_true(lo_sel > hi_unsel);
    }
}

static void test_select_ties(void **state)
{
    (void)state;
    baatt_config c = shape(1, 1, 1, 64, 640); /* nk = 10, keep 3 */
    c.keep_ratio = 0.3f;
    float l[10] = {0};
    uint8_t m[10];
    const uint8_t all_equal[10] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(baatt_reference_select(&c, l, m), BAATT_OK);
    assert_memory_equal(m, all_equal, 10);
    const float l2[10] = {1, 5, 1, 5, 2, 5, 5, 1, 5, 0}; /* five 5s: the lowest three J win */
    const uint8_t want2[10] = {0, 1, 0, 1, 0, 1, 0, 0, 0, 0};
    assert_int_equal(baatt_reference_select(&c, l2, m), BAATT_OK);
    assert_memory_equal(m, want2, 10);
    c.select_mode = BAATT_SELECT_MASS_THRESHOLD; /* equal masses 0.1: 0.25 needs three, lowest J */
    c.mass_threshold = 0.25f;
    assert_int_equal(baatt_reference_select(&c, l, m), BAATT_OK);
    assert_memory_equal(m, all_equal, 10);
}

/* Masses 0.05, 0.5, 0.15, 0.3 at J = 0..3: prefix J1, J3, J2, J0. */
static void check_threshold(baatt_config *c, float theta, const uint8_t want[4])
{
    const float l[4] = {logf(0.05f), logf(0.5f), logf(0.15f), logf(0.3f)};
    uint8_t m[4];
    c->mass_threshold = theta;
    assert_int_equal(baatt_reference_select(c, l, m), BAATT_OK);
    assert_memory_equal(m, want, 4);
}

static void test_select_threshold(void **state)
{
    (void)state;
    baatt_config c = shape(1, 1, 1, 64, 256); /* nk = 4 */
    c.select_mode = BAATT_SELECT_MASS_THRESHOLD;
    check_threshold(&c, 0.4f, (const uint8_t[4]){0, 1, 0, 0});
    check_threshold(&c, 0.75f, (const uint8_t[4]){0, 1, 0, 1});
    check_threshold(&c, 0.85f, (const uint8_t[4]){0, 1, 1, 1});
    check_threshold(&c, 1.0f, (const uint8_t[4]){1, 1, 1, 1});
}

/* Random rows: the kept set is a top set whose mass reaches theta, and one block fewer would not. */
static void test_select_threshold_minimal(void **state)
{
    (void)state;
    uint64_t st = rng(9);
    baatt_config c = shape(1, 1, 1, 64 * 8, 64 * 20); /* nq = 8, nk = 20 */
    c.select_mode = BAATT_SELECT_MASS_THRESHOLD;
    c.mass_threshold = 0.8f;
    float l[8 * 20];
    uint8_t m[8 * 20];
    for (int i = 0; i < 160; i++) l[i] = 3.0f * th_normal(&st);
    assert_int_equal(baatt_reference_select(&c, l, m), BAATT_OK);
    for (int r = 0; r < 8; r++) {
        const float *lr = l + r * 20;
        double mx = -INFINITY, sum = 0, kept = 0, smallest = INFINITY, best_unsel = 0;
        for (int j = 0; j < 20; j++) mx = fmax(mx, lr[j]);
        for (int j = 0; j < 20; j++) sum += exp(lr[j] - mx);
        for (int j = 0; j < 20; j++) {
            double p = exp(lr[j] - mx) / sum;
            if (m[r * 20 + j]) kept += p, smallest = fmin(smallest, p);
            else best_unsel = fmax(best_unsel, p);
        }
        assert_true(row_count(m + r * 20, 20) >= 1);
        assert_true(smallest >= best_unsel);
        assert_true(kept >= (double)0.8f - 1e-12); /* the reference compares with the float theta */
        assert_true(kept - smallest < (double)0.8f);
    }
}

static void test_select_clamp(void **state)
{
    (void)state;
    baatt_config c = shape(1, 1, 1, 64, 256);
    c.select_mode = BAATT_SELECT_MASS_THRESHOLD;
    c.min_blocks = 3; /* theta 0.4 alone keeps J1 only */
    check_threshold(&c, 0.4f, (const uint8_t[4]){0, 1, 1, 1});
    c.min_blocks = 10; /* more than nk: all */
    check_threshold(&c, 0.4f, (const uint8_t[4]){1, 1, 1, 1});
    c.min_blocks = 0;
    c.max_blocks = 2; /* theta 1 wants all four */
    check_threshold(&c, 1.0f, (const uint8_t[4]){0, 1, 0, 1});
    c.select_mode = BAATT_SELECT_KEEP_RATIO;
    c.keep_ratio = 1.0f;
    const float l[4] = {logf(0.05f), logf(0.5f), logf(0.15f), logf(0.3f)};
    uint8_t m[4];
    assert_int_equal(baatt_reference_select(&c, l, m), BAATT_OK);
    assert_memory_equal(m, ((const uint8_t[4]){0, 1, 0, 1}), 4);
    c.max_blocks = 0;
    c.min_blocks = 2;
    c.keep_ratio = 0.01f;
    assert_int_equal(baatt_reference_select(&c, l, m), BAATT_OK);
    assert_memory_equal(m, ((const uint8_t[4]){0, 1, 0, 1}), 4);
}

/* ---------------------------------------------------------------------------------------------
 * Step 5 and the whole pass.
 * ------------------------------------------------------------------------------------------- */

/* A random mask (every row keeps >= 1 block) against the naive masked softmax of each original row. */
static void test_sparse_vs_naive(void **state)
{
    (void)state;
    uint64_t st = rng(10);
    baatt_config c = shape(1, 4, 2, 100, 150);
    c.block_size = 32;
    qkv t = qkv_random(&st, &c, 1.0f);
    uint32_t nk = baatt_config_k_blocks(&c), nq = baatt_config_q_blocks(&c);
    int32_t pq[4 * 100], pk[2 * 150];
    uint8_t *m = malloc(mask_elems(&c)), allowed[150];
    float *o = fbuf(q_elems(&c)), want[64];
    assert_int_equal(baatt_reference_sort(&c, t.q, 4, 100, pq), BAATT_OK);
    assert_int_equal(baatt_reference_sort(&c, t.k, 2, 150, pk), BAATT_OK);
    for (size_t i = 0; i < mask_elems(&c); i++) m[i] = th_uniform(&st) < 0.4f || i % nk == 0;
    assert_int_equal(baatt_reference_sparse_attention(&c, t.q, t.k, t.v, pq, pk, m, o), BAATT_OK);
    for (uint32_t h = 0; h < 4; h++) {
        for (uint32_t i = 0; i < 100; i++) {
            naive_allowed(&c, pq + h * 100, pk + (h / 2) * 150, m + (size_t)h * nq * nk, i, allowed);
            naive_row(q_row(&c, t.q, 0, h, i), kv_head(&c, t.k, 0, h), kv_head(&c, t.v, 0, h), allowed, 150, 64,
                      baatt_config_scale(&c), want);
            assert_true(th_compare(q_row(&c, o, 0, h, i), want, 64, 1e-6, 1e-6, "sparse row") <= 1);
        }
    }
    free(m);
    free(o);
    qkv_free(&t);
}

/* keep_ratio = 1 selects everything: BA-Att equals dense to rounding (sorted, GQA, partial blocks). */
static void test_keep_all_equals_dense(void **state)
{
    (void)state;
    uint64_t st = rng(11);
    baatt_config c = shape(2, 4, 2, 150, 170);
    c.keep_ratio = 1.0f;
    qkv t = qkv_random(&st, &c, 1.5f);
    float *o = fbuf(q_elems(&c)), *od = fbuf(q_elems(&c));
    uint8_t *m = malloc(mask_elems(&c));
    assert_int_equal(baatt_reference_baatt(&c, t.q, t.k, t.v, o, m, NULL, NULL), BAATT_OK);
    assert_int_equal(baatt_reference_attention(&c, t.q, t.k, t.v, od), BAATT_OK);
    for (size_t i = 0; i < mask_elems(&c); i++) assert_int_equal(m[i], 1);
    assert_true(th_compare(o, od, q_elems(&c), 1e-6, 1e-6, "keep 1 vs dense") <= 1);
    free(o), free(od), free(m);
    qkv_free(&t);
}

/* baatt() is exactly the chain of the stage functions, and reports what it used. */
static void test_baatt_pipeline(void **state)
{
    (void)state;
    uint64_t st = rng(12);
    baatt_config c = shape(1, 4, 2, 200, 230);
    c.block_size = 32;
    c.keep_ratio = 0.4f;
    qkv t = qkv_random(&st, &c, 1.0f);
    uint32_t nq = baatt_config_q_blocks(&c), nk = baatt_config_k_blocks(&c);
    int32_t pq[4 * 200], pk[2 * 230], pq2[4 * 200], pk2[2 * 230];
    float *qm = fbuf(4 * nq * 64), *qv = fbuf(4 * nq * 64), *km = fbuf(2 * nk * 64), *kv = fbuf(2 * nk * 64);
    float *l = fbuf(4 * nq * nk), *o = fbuf(q_elems(&c)), *o2 = fbuf(q_elems(&c));
    uint8_t *m = malloc(mask_elems(&c)), *m2 = malloc(mask_elems(&c));
    assert_int_equal(baatt_reference_baatt(&c, t.q, t.k, t.v, o, m, pq, pk), BAATT_OK);
    assert_int_equal(baatt_reference_sort(&c, t.q, 4, 200, pq2), BAATT_OK);
    assert_int_equal(baatt_reference_sort(&c, t.k, 2, 230, pk2), BAATT_OK);
    assert_int_equal(baatt_reference_block_stats(&c, t.q, 4, 200, pq2, qm, qv), BAATT_OK);
    assert_int_equal(baatt_reference_block_stats(&c, t.k, 2, 230, pk2, km, kv), BAATT_OK);
    assert_int_equal(baatt_reference_block_logits(&c, qm, qv, km, kv, l), BAATT_OK);
    assert_int_equal(baatt_reference_select(&c, l, m2), BAATT_OK);
    assert_int_equal(baatt_reference_sparse_attention(&c, t.q, t.k, t.v, pq2, pk2, m2, o2), BAATT_OK);
    assert_memory_equal(pq, pq2, sizeof pq);
    assert_memory_equal(pk, pk2, sizeof pk);
    assert_memory_equal(m, m2, mask_elems(&c));
    assert_memory_equal(o, o2, q_elems(&c) * sizeof(float));
    for (uint32_t r = 0; r < 4 * nq; r++) assert_int_equal(row_count(m + r * nk, nk), baatt_config_keep_blocks(&c));
    free(qm), free(qv), free(km), free(kv), free(l), free(o), free(o2), free(m), free(m2);
    qkv_free(&t);
}

/* Dense config: dense output, all-ones mask of the fallback blocking (48 -> 64), identity perms;
 * the BA-Att fields (here an invalid keep_ratio) are ignored. */
static void test_baatt_dense_mode(void **state)
{
    (void)state;
    uint64_t st = rng(13);
    baatt_config c = shape(1, 2, 1, 130, 70);
    c.dense = 1;
    c.block_size = 48;
    c.keep_ratio = 0;
    qkv t = qkv_random(&st, &c, 1.0f);
    float *o = fbuf(q_elems(&c)), *od = fbuf(q_elems(&c));
    uint8_t m[2 * 3 * 2 + 1];
    int32_t pq[2 * 130], pk[70];
    memset(m, 7, sizeof m);
    assert_int_equal(baatt_reference_baatt(&c, t.q, t.k, t.v, o, m, pq, pk), BAATT_OK);
    assert_int_equal(baatt_reference_attention(&c, t.q, t.k, t.v, od), BAATT_OK);
    assert_memory_equal(o, od, q_elems(&c) * sizeof(float));
    for (int i = 0; i < 12; i++) assert_int_equal(m[i], 1); /* nq = 3, nk = 2 with B = 64 */
    assert_int_equal(m[12], 7);                             /* nothing past the mask */
    for (int i = 0; i < 260; i++) assert_int_equal(pq[i], i % 130);
    for (int i = 0; i < 70; i++) assert_int_equal(pk[i], i);
    free(o), free(od);
    qkv_free(&t);
}

/* ---------------------------------------------------------------------------------------------
 * Metrics.
 * ------------------------------------------------------------------------------------------- */

static void test_metrics_all_selected(void **state)
{
    (void)state;
    uint64_t st = rng(14);
    baatt_config c = shape(1, 2, 1, 100, 90);
    c.block_size = 32;
    qkv t = qkv_random(&st, &c, 1.0f);
    float *od = fbuf(q_elems(&c));
    uint8_t *m = malloc(mask_elems(&c));
    int32_t pq[2 * 100], pk[90];
    memset(m, 1, mask_elems(&c));
    assert_int_equal(baatt_reference_sort(&c, t.q, 2, 100, pq), BAATT_OK);
    assert_int_equal(baatt_reference_sort(&c, t.k, 1, 90, pk), BAATT_OK);
    assert_int_equal(baatt_reference_attention(&c, t.q, t.k, t.v, od), BAATT_OK);
    for (int with_perms = 0; with_perms < 2; with_perms++) {
        baatt_metrics mt;
        assert_int_equal(baatt_reference_metrics(&c, t.q, t.k, t.v, m, with_perms ? pq : NULL, with_perms ? pk : NULL,
                                                 od, with_perms ? od : NULL, &mt),
                         BAATT_OK);
        assert_float_equal(mt.mass_recall, 1.0, 1e-12);
        assert_float_equal(mt.rel_l1, 0.0, 1e-12);
        assert_float_equal(mt.rel_l2, 0.0, 1e-12);
        assert_float_equal(mt.cosine, 1.0, 1e-12);
        assert_float_equal(mt.sparsity, 0.0, 1e-12);
    }
    free(od), free(m);
    qkv_free(&t);
}

/* Dense mass on the keys a mask selects for original row i, recomputed naively. */
static double naive_recall(const baatt_config *c, const float *q, const float *k, const int32_t *pq, const int32_t *pk,
                           const uint8_t *m)
{
    double total = 0, p[100];
    uint8_t allowed[100];
    for (uint32_t i = 0; i < c->q_len; i++) {
        naive_allowed(c, pq, pk, m, i, allowed);
        naive_probs(q + (size_t)i * 64, k, NULL, c->kv_len, 64, baatt_config_scale(c), p);
        for (uint32_t j = 0; j < c->kv_len; j++) total += allowed[j] ? p[j] : 0;
    }
    return total / c->q_len;
}

/* Query block 0 keeps key block 1, query block 1 keeps the partial key block 3 (4 tokens):
 * sparsity 1 - (32 + 4) / (2 * 100); recall and output errors recomputed naively. Sorted perms,
 * then sorting off with NULL perms (identity). */
static void test_metrics_partial(void **state)
{
    (void)state;
    uint64_t st = rng(15);
    baatt_config c = shape(1, 1, 1, 50, 100);
    c.block_size = 32;
    c.scale = 0.2f;
    qkv t = qkv_random(&st, &c, 1.0f);
    float *o = fbuf(q_elems(&c)), *od = fbuf(q_elems(&c));
    const uint8_t m[2 * 4] = {0, 1, 0, 0, 0, 0, 0, 1};
    int32_t pq[50], pk[100];
    naive_dense(&c, t.q, t.k, t.v, od);
    for (int sorted = 1; sorted >= 0; sorted--) {
        baatt_metrics mt;
        c.norm_sort = sorted;
        assert_int_equal(baatt_reference_sort(&c, t.q, 1, 50, pq), BAATT_OK);
        assert_int_equal(baatt_reference_sort(&c, t.k, 1, 100, pk), BAATT_OK);
        assert_int_equal(baatt_reference_sparse_attention(&c, t.q, t.k, t.v, pq, pk, m, o), BAATT_OK);
        const int32_t *mpq = sorted ? pq : NULL, *mpk = sorted ? pk : NULL;
        assert_int_equal(baatt_reference_metrics(&c, t.q, t.k, t.v, m, mpq, mpk, o, NULL, &mt), BAATT_OK);
        double l1 = 0, l1d = 0, l2 = 0, l2d = 0, dot = 0, l2o = 0;
        for (int i = 0; i < 50 * 64; i++) {
            double e = (double)o[i] - od[i];
            l1 += fabs(e), l1d += fabs(od[i]), l2 += e * e, l2d += (double)od[i] * od[i];
            dot += (double)o[i] * od[i], l2o += (double)o[i] * o[i];
        }
        assert_float_equal(mt.mass_recall, naive_recall(&c, t.q, t.k, pq, pk, m), 1e-9);
        assert_float_equal(mt.sparsity, 1.0 - 36.0 / 200.0, 1e-12);
        assert_float_equal(mt.rel_l1, l1 / l1d, 1e-5);
        assert_float_equal(mt.rel_l2, sqrt(l2 / l2d), 1e-5);
        assert_float_equal(mt.cosine, dot / sqrt(l2d * l2o), 1e-6);
        assert_true(mt.mass_recall < 1 && mt.rel_l1 > 0);
    }
    free(o), free(od);
    qkv_free(&t);
}

/* ---------------------------------------------------------------------------------------------
 * Validation.
 * ------------------------------------------------------------------------------------------- */

/* Every reference function on cfg returns want. The buffers fit the default 1x1x64x64 shape and
 * are never touched on failure. */
static void expect_all(const baatt_config *c, baatt_status want)
{
    static float q[64 * 64], k[64 * 64], v[64 * 64], o[64 * 64], st[4][64 * 64], l[4];
    static int32_t pq[64], pk[64];
    static uint8_t m[4];
    baatt_metrics mt;
    assert_int_equal(baatt_reference_attention(c, q, k, v, o), want);
    assert_int_equal(baatt_reference_sort(c, q, 1, 64, pq), want);
    assert_int_equal(baatt_reference_block_stats(c, q, 1, 64, pq, st[0], st[1]), want);
    assert_int_equal(baatt_reference_block_logits(c, st[0], st[1], st[2], st[3], l), want);
    assert_int_equal(baatt_reference_select(c, l, m), want);
    assert_int_equal(baatt_reference_sparse_attention(c, q, k, v, pq, pk, m, o), want);
    assert_int_equal(baatt_reference_baatt(c, q, k, v, o, m, pq, pk), want);
    assert_int_equal(baatt_reference_metrics(c, q, k, v, m, pq, pk, o, o, &mt), want);
}

static void test_bad_configs(void **state)
{
    (void)state;
    const baatt_config ok = shape(1, 1, 1, 64, 64);
    baatt_config c;
#define BAD(field, value, status) (c = ok, c.field = value, expect_all(&c, status))
    BAD(batch, 0, BAATT_ERROR_BAD_SHAPE);
    BAD(heads, 0, BAATT_ERROR_BAD_SHAPE);
    BAD(kv_heads, 0, BAATT_ERROR_BAD_SHAPE);
    BAD(q_len, 0, BAATT_ERROR_BAD_SHAPE);
    BAD(kv_len, 0, BAATT_ERROR_BAD_SHAPE);
    BAD(head_dim, 0, BAATT_ERROR_BAD_SHAPE);
    BAD(kv_heads, 3, BAATT_ERROR_GQA_MISMATCH);
    BAD(head_dim, 80, BAATT_ERROR_UNSUPPORTED_HEAD_DIM);
    BAD(dtype, (baatt_dtype)7, BAATT_ERROR_UNSUPPORTED_DTYPE);
    BAD(scale, -1.0f, BAATT_ERROR_BAD_SCALE);
    BAD(keep_ratio, 0.0f, BAATT_ERROR_BAD_KEEP_RATIO);
    BAD(keep_ratio, 1.5f, BAATT_ERROR_BAD_KEEP_RATIO);
    BAD(block_size, 48, BAATT_ERROR_UNSUPPORTED_BLOCK_SIZE);
    BAD(select_mode, (baatt_select_mode)5, BAATT_ERROR_INVALID_ARGUMENT);
    c = ok, c.select_mode = BAATT_SELECT_MASS_THRESHOLD, c.mass_threshold = 0.0f;
    expect_all(&c, BAATT_ERROR_BAD_THRESHOLD);
    c = ok, c.min_blocks = 3, c.max_blocks = 2;
    expect_all(&c, BAATT_ERROR_BAD_BLOCK_LIMITS);
#undef BAD
    expect_all(NULL, BAATT_ERROR_INVALID_ARGUMENT);
}

static void test_null_and_bad_arguments(void **state)
{
    (void)state;
    const baatt_config c = shape(1, 1, 1, 64, 64);
    static float x[64 * 64], o[64 * 64], s[64], l[1];
    static int32_t p[64];
    static uint8_t m[1] = {1};
    baatt_metrics mt;
    const baatt_status E = BAATT_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < 64; i++) p[i] = i;
    assert_int_equal(baatt_reference_attention(&c, NULL, x, x, o), E);
    assert_int_equal(baatt_reference_attention(&c, x, x, x, NULL), E);
    assert_int_equal(baatt_reference_sort(&c, NULL, 1, 64, p), E);
    assert_int_equal(baatt_reference_sort(&c, x, 1, 64, NULL), E);
    assert_int_equal(baatt_reference_sort(&c, x, 0, 64, p), BAATT_ERROR_BAD_SHAPE);
    assert_int_equal(baatt_reference_block_stats(&c, x, 1, 64, NULL, s, s), E);
    assert_int_equal(baatt_reference_block_stats(&c, x, 1, 0, p, s, s), BAATT_ERROR_BAD_SHAPE);
    assert_int_equal(baatt_reference_block_logits(&c, s, s, s, NULL, l), E);
    assert_int_equal(baatt_reference_select(&c, NULL, m), E);
    assert_int_equal(baatt_reference_select(&c, l, NULL), E);
    assert_int_equal(baatt_reference_sparse_attention(&c, x, x, x, p, NULL, m, o), E);
    assert_int_equal(baatt_reference_sparse_attention(&c, x, x, x, p, p, NULL, o), E);
    assert_int_equal(baatt_reference_baatt(&c, x, x, NULL, o, NULL, NULL, NULL), E);
    assert_int_equal(baatt_reference_metrics(&c, x, x, x, NULL, NULL, NULL, o, NULL, &mt), E);
    assert_int_equal(baatt_reference_metrics(&c, x, x, x, m, NULL, NULL, o, NULL, NULL), E);
    /* A permutation with a repeated or out-of-range entry is rejected, not followed. */
    p[5] = 4;
    assert_int_equal(baatt_reference_block_stats(&c, x, 1, 64, p, s, s), E);
    assert_int_equal(baatt_reference_sparse_attention(&c, x, x, x, p, p, m, o), E);
    assert_int_equal(baatt_reference_metrics(&c, x, x, x, m, p, NULL, o, NULL, &mt), E);
    p[5] = 64;
    assert_int_equal(baatt_reference_block_stats(&c, x, 1, 64, p, s, s), E);
}

/* ---------------------------------------------------------------------------------------------
 * Quality (ALGORITHM.md, "Expected quality"): on a content-clustered workload, full BA-Att recalls at least as
 * much attention mass as plain mean pooling.
 * ------------------------------------------------------------------------------------------- */

/* Tokens drawn from 16 clusters in random order. Each cluster has its own direction and radius,
 * so contiguous blocks mix clusters (hard for mean pooling) while norm sorting regroups them. */
static void clustered(uint64_t *st, uint32_t n, float *x, const float *dirs, const float *radius)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cl = (uint32_t)(th_uniform(st) * 16) % 16;
        float r = radius[cl] * (1.0f + 0.05f * th_normal(st));
        for (int a = 0; a < 64; a++) x[i * 64 + a] = r * dirs[cl * 64 + a] + 0.3f * th_normal(st);
    }
}

static double recall_of(baatt_config c, const float *q, const float *k, const float *v, const float *od)
{
    float *o = fbuf(q_elems(&c));
    uint8_t *m = malloc(mask_elems(&c));
    int32_t *pq = malloc(sizeof(int32_t) * c.q_len), *pk = malloc(sizeof(int32_t) * c.kv_len);
    baatt_metrics mt;
    assert_int_equal(baatt_reference_baatt(&c, q, k, v, o, m, pq, pk), BAATT_OK);
    assert_int_equal(baatt_reference_metrics(&c, q, k, v, m, pq, pk, o, od, &mt), BAATT_OK);
    assert_float_equal(mt.sparsity, 0.5, 1e-12);
    free(o), free(m), free(pq), free(pk);
    return mt.mass_recall;
}

static void test_quality_clustered(void **state)
{
    (void)state;
    uint64_t st = rng(16);
    baatt_config c = shape(1, 1, 1, 1024, 1024);
    float dirs[16 * 64], radius[16];
    for (int cl = 0; cl < 16; cl++) {
        double n = 0;
        for (int a = 0; a < 64; a++) {
            dirs[cl * 64 + a] = th_normal(&st);
            n += dirs[cl * 64 + a] * dirs[cl * 64 + a];
        }
        for (int a = 0; a < 64; a++) dirs[cl * 64 + a] /= (float)sqrt(n);
        radius[cl] = 2.0f + 0.5f * cl;
    }
    qkv t = qkv_random(&st, &c, 1.0f);
    clustered(&st, 1024, t.q, dirs, radius);
    clustered(&st, 1024, t.k, dirs, radius);
    float *od = fbuf(q_elems(&c));
    assert_int_equal(baatt_reference_attention(&c, t.q, t.k, t.v, od), BAATT_OK);
    double full = recall_of(c, t.q, t.k, t.v, od);
    c.norm_sort = 0, c.covariance = 0;
    double pool = recall_of(c, t.q, t.k, t.v, od);
    fprintf(stderr, "[ quality  ] clustered N=1024 keep 0.5: BA-Att recall %.4f, mean-pool %.4f\n", full, pool);
    assert_true(full >= pool);
    free(od);
    qkv_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_vs_naive),
        cmocka_unit_test(test_dense_two_tokens),
        cmocka_unit_test(test_dense_gqa),
        cmocka_unit_test(test_half_inputs),
        cmocka_unit_test(test_sort_random),
        cmocka_unit_test(test_sort_ties),
        cmocka_unit_test(test_block_stats),
        cmocka_unit_test(test_block_logits),
        cmocka_unit_test(test_select_keep_ratio),
        cmocka_unit_test(test_select_ties),
        cmocka_unit_test(test_select_threshold),
        cmocka_unit_test(test_select_threshold_minimal),
        cmocka_unit_test(test_select_clamp),
        cmocka_unit_test(test_sparse_vs_naive),
        cmocka_unit_test(test_keep_all_equals_dense),
        cmocka_unit_test(test_baatt_pipeline),
        cmocka_unit_test(test_baatt_dense_mode),
        cmocka_unit_test(test_metrics_all_selected),
        cmocka_unit_test(test_metrics_partial),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_null_and_bad_arguments),
        cmocka_unit_test(test_quality_clustered),
    };
    th_seed();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
