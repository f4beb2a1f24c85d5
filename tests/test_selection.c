/* The selection a plan holds across runs (include/baatt.h, "Selections across runs"), on fresh
 * random inputs with outputs poisoned with NaN before every run:
 *   reuse    -> on the same inputs, bit-identical to the estimating run (output, mask, perms);
 *               on new Q/K/V, the CPU reference's sparse attention of the new tensors on the OLD
 *               mask and permutations (sort norm, off and auto, keep ratio and threshold, host
 *               arrays and device buffers); the skipped stages are not timed; reuse before any
 *               selection is BAATT_ERROR_NO_SELECTION and writes nothing; a dense plan ignores it
 *   given    -> random masks, in the original order and with permutations (random ones and the
 *               plan's own norm sort), GQA, head_dim 64 and 128, fp32, fp16 and bf16, from host
 *               arrays and device buffers, against the reference on the given selection; what the
 *               read functions then report; malformed masks and perms refused with a message
 *               naming the entry, the arguments untouched and the held selection kept
 *   snapshot -> a plan's held selection saved on the device, replaced by a later estimate, loaded
 *               back: bit-identical output to a plan that kept it, the same read functions'
 *               answers (sort norm, off and auto, a given selection); refused loads (shape,
 *               geometry, candidates, dense, NULL) with a message and the plan unchanged. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

typedef struct tensors {
    baatt_config c;
    size_t qn, kn, rows, nq, nk;
    void *q, *k, *v, *o;
} tensors;

static baatt_config make(uint32_t b, uint32_t h, uint32_t hkv, uint32_t nq, uint32_t nk, uint32_t d, uint32_t block,
                         baatt_dtype dt)
{
    baatt_config c = baatt_config_default();
    c.batch = b, c.heads = h, c.kv_heads = hkv, c.q_len = nq, c.kv_len = nk, c.head_dim = d;
    c.block_size = block, c.dtype = dt, c.keep_ratio = 0.4f;
    return c;
}

/* Q/K/V with per-token norms that vary, so that the norm sort and the selection matter. */
static void *input(uint64_t *rng, const baatt_config *c, size_t n)
{
    void *x = th_random_tensor(rng, c->dtype, n, 1.0f);
    size_t d = c->head_dim;
    float *f = th_to_float(x, c->dtype, n);
    for (size_t t = 0; t < n / d; t++) {
        float g = 0.3f + 2.0f * th_uniform(rng);
        for (size_t a = 0; a < d; a++) f[t * d + a] *= g;
    }
    assert_int_equal(baatt_dtype_convert(f, BAATT_DTYPE_F32, x, c->dtype, n), BAATT_OK);
    free(f);
    return x;
}

static void fresh(uint64_t *rng, tensors *t)
{
    free(t->q), free(t->k), free(t->v);
    t->q = input(rng, &t->c, t->qn);
    t->k = input(rng, &t->c, t->kn);
    t->v = th_random_tensor(rng, t->c.dtype, t->kn, 1.0f);
}

static void tensors_init(uint64_t *rng, const baatt_config *c, tensors *t)
{
    memset(t, 0, sizeof *t);
    t->c = *c;
    t->qn = (size_t)c->batch * c->heads * c->q_len * c->head_dim;
    t->kn = (size_t)c->batch * c->kv_heads * c->kv_len * c->head_dim;
    t->nq = baatt_config_q_blocks(c), t->nk = baatt_config_k_blocks(c);
    t->rows = (size_t)c->batch * c->heads * t->nq;
    t->o = malloc(t->qn * baatt_dtype_size(c->dtype));
    fresh(rng, t);
}

static void tensors_free(tensors *t) { free(t->q), free(t->k), free(t->v), free(t->o); }

/* One run on host arrays, O poisoned first. */
static baatt_status run(baatt_plan *plan, tensors *t)
{
    th_poison(t->o, t->c.dtype, t->qn);
    return baatt_plan_run_host(plan, t->q, t->k, t->v, t->o);
}

typedef struct selection {
    uint8_t *mask;
    int32_t *pq, *pk;
} selection;

static void read_selection(baatt_plan *plan, const tensors *t, selection *s)
{
    s->mask = malloc(t->rows * t->nk);
    s->pq = malloc(4ull * t->c.batch * t->c.heads * t->c.q_len);
    s->pk = malloc(4ull * t->c.batch * t->c.kv_heads * t->c.kv_len);
    memset(s->mask, 0xAA, t->rows * t->nk);
    assert_int_equal(baatt_plan_read_mask(plan, s->mask), BAATT_OK);
    assert_int_equal(baatt_plan_read_perms(plan, s->pq, s->pk), BAATT_OK);
}

static void free_selection(selection *s) { free(s->mask), free(s->pq), free(s->pk); }

/* O against the reference's sparse attention of t's tensors on mask and perms (NULL: the identity). */
static void check_output(const tensors *t, const uint8_t *mask, const int32_t *pq, const int32_t *pk, const char *label)
{
    const baatt_config *c = &t->c;
    uint32_t hq = c->batch * c->heads, hk = c->batch * c->kv_heads;
    int32_t *iq = malloc(4ull * hq * c->q_len), *ik = malloc(4ull * hk * c->kv_len);
    for (uint32_t h = 0; h < hq; h++)
        for (uint32_t i = 0; i < c->q_len; i++) iq[(size_t)h * c->q_len + i] = (int32_t)i;
    for (uint32_t h = 0; h < hk; h++)
        for (uint32_t i = 0; i < c->kv_len; i++) ik[(size_t)h * c->kv_len + i] = (int32_t)i;
    float *ref = malloc(4 * t->qn), *got = th_to_float(t->o, t->c.dtype, t->qn);
    assert_int_equal(baatt_reference_sparse_attention(c, t->q, t->k, t->v, pq ? pq : iq, pk ? pk : ik, mask, ref),
                     BAATT_OK);
    free(iq), free(ik);
    double atol, rtol;
    th_tolerance(t->c.dtype, &atol, &rtol);
    assert_true(th_compare(got, ref, t->qn, atol, rtol, label) <= 1.0);
    free(ref), free(got);
}

static baatt_status plan_for(const baatt_config *c, baatt_plan **plan)
{
    baatt_status s = baatt_plan_create(th_ctx, c, plan);
    if (s == BAATT_ERROR_MISSING_FEATURE && c->dtype != BAATT_DTYPE_F32) skip();
    assert_int_equal(s, BAATT_OK);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* reuse                                                                                      */

/* Estimate on one set of inputs, reuse on the same (bit-identical) and on fresh ones (the old
 * selection, the new tensors), then estimate again. */
static void reuse_case(baatt_config c, uint64_t salt)
{
    uint64_t rng = th_seed() ^ salt;
    tensors t;
    tensors_init(&rng, &c, &t);
    size_t ob = t.qn * baatt_dtype_size(c.dtype);
    baatt_plan *plan = NULL;
    plan_for(&c, &plan);
    assert_int_equal(run(plan, &t), BAATT_OK);
    selection est;
    read_selection(plan, &t, &est);
    uint32_t nkv = c.batch * c.kv_heads;
    uint8_t *sorted = malloc(2 * nkv), *sorted2 = malloc(2 * nkv); /* blocking, then lambda */
    assert_int_equal(baatt_plan_read_head_sorted(plan, sorted), BAATT_OK);
    assert_int_equal(baatt_plan_read_head_covariance(plan, sorted + nkv), BAATT_OK);
    baatt_run_stats st0, st1;
    assert_int_equal(baatt_plan_stats(plan, &st0), BAATT_OK);
    void *first = malloc(ob);
    memcpy(first, t.o, ob);
    check_output(&t, est.mask, est.pq, est.pk, "estimating run");

    /* the same inputs: the same kernels on the same selection, the same bits */
    assert_int_equal(baatt_plan_set_reuse(plan, 1), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    assert_memory_equal(first, t.o, ob);
    selection again;
    read_selection(plan, &t, &again);
    assert_memory_equal(est.mask, again.mask, t.rows * t.nk);
    assert_memory_equal(est.pq, again.pq, 4ull * c.batch * c.heads * c.q_len);
    assert_memory_equal(est.pk, again.pk, 4ull * c.batch * c.kv_heads * c.kv_len);
    assert_int_equal(baatt_plan_read_head_sorted(plan, sorted2), BAATT_OK);
    assert_int_equal(baatt_plan_read_head_covariance(plan, sorted2 + nkv), BAATT_OK);
    assert_memory_equal(sorted, sorted2, 2 * nkv);
    assert_int_equal(baatt_plan_stats(plan, &st1), BAATT_OK);
    assert_int_equal(st1.selected_blocks, st0.selected_blocks);
    assert_true(st1.sparsity == st0.sparsity);
    for (int s = 0; s < BAATT_STAGE_ATTEND; s++) assert_true(st1.stage_ms[s] == 0.0); /* skipped */

    /* new tensors, twice: attended on the old selection */
    for (int step = 0; step < 2; step++) {
        fresh(&rng, &t);
        assert_int_equal(run(plan, &t), BAATT_OK);
        check_output(&t, est.mask, est.pq, est.pk, "reusing run on new inputs");
    }
    free_selection(&again);

    /* refresh: the next run estimates on the new tensors (its own selection) */
    assert_int_equal(baatt_plan_set_reuse(plan, 0), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    selection next;
    read_selection(plan, &t, &next);
    check_output(&t, next.mask, next.pq, next.pk, "estimating run after reuse");
    if (c.norm_sort == BAATT_SORT_NORM) /* new norms, new order */
        assert_true(memcmp(est.pq, next.pq, 4ull * c.batch * c.heads * c.q_len) != 0);
    free_selection(&next);
    free_selection(&est);
    free(first), free(sorted), free(sorted2);
    baatt_plan_destroy(plan);
    tensors_free(&t);
}

static void reuse_sorted_f32_gqa(void **s)
{
    (void)s;
    reuse_case(make(1, 4, 2, 200, 264, 64, 32, BAATT_DTYPE_F32), 0x5E1);
}

static void reuse_original_order_f16_d128(void **s)
{
    (void)s;
    baatt_config c = make(2, 2, 1, 192, 130, 128, 64, BAATT_DTYPE_F16);
    c.norm_sort = BAATT_SORT_OFF;
    reuse_case(c, 0x5E2);
}

/* Auto sort: the per-kv-head choice (BIND_AUTO) and its identity perms are part of what is reused. */
static void reuse_auto_threshold(void **s)
{
    (void)s;
    baatt_config c = make(1, 4, 2, 256, 256, 64, 32, BAATT_DTYPE_F32);
    c.norm_sort = BAATT_SORT_AUTO;
    reuse_case(c, 0x5E3);
    c.norm_sort = BAATT_SORT_NORM;
    c.select_mode = BAATT_SELECT_MASS_THRESHOLD, c.mass_threshold = 0.7f;
    reuse_case(c, 0x5E4);
}

static void reuse_bf16_block128(void **s)
{
    (void)s;
    reuse_case(make(1, 2, 2, 300, 400, 128, 128, BAATT_DTYPE_BF16), 0x5E5);
}

/* The same through device buffers (baatt_plan_run_buffers records the plan). */
static void reuse_device_buffers(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0x5E6;
    baatt_config c = make(1, 2, 1, 160, 224, 64, 32, BAATT_DTYPE_F16);
    tensors t;
    tensors_init(&rng, &c, &t);
    size_t es = baatt_dtype_size(c.dtype);
    baatt_plan *plan = NULL;
    plan_for(&c, &plan);
    baatt_device_buffer *b[4];
    size_t bytes[4] = {t.qn * es, t.kn * es, t.kn * es, t.qn * es};
    for (int i = 0; i < 4; i++) assert_int_equal(baatt_device_buffer_create(th_ctx, bytes[i], &b[i]), BAATT_OK);
    assert_int_equal(baatt_plan_set_reuse(plan, 1), BAATT_OK);
    assert_int_equal(baatt_plan_run_buffers(plan, b[0], b[1], b[2], b[3]), BAATT_ERROR_NO_SELECTION);
    assert_int_equal(baatt_plan_set_reuse(plan, 0), BAATT_OK);
    selection est = {0};
    for (int step = 0; step < 3; step++) {
        if (step) fresh(&rng, &t);
        void *src[3] = {t.q, t.k, t.v};
        for (int i = 0; i < 3; i++) assert_int_equal(baatt_device_buffer_write(b[i], 0, src[i], bytes[i]), BAATT_OK);
        th_poison(t.o, c.dtype, t.qn);
        assert_int_equal(baatt_device_buffer_write(b[3], 0, t.o, bytes[3]), BAATT_OK);
        assert_int_equal(baatt_plan_set_reuse(plan, step > 0), BAATT_OK);
        assert_int_equal(baatt_plan_run_buffers(plan, b[0], b[1], b[2], b[3]), BAATT_OK);
        assert_int_equal(baatt_device_buffer_read(b[3], 0, t.o, bytes[3]), BAATT_OK);
        if (!step) read_selection(plan, &t, &est);
        check_output(&t, est.mask, est.pq, est.pk, "device buffers");
    }
    free_selection(&est);
    for (int i = 0; i < 4; i++) baatt_device_buffer_destroy(b[i]);
    baatt_plan_destroy(plan);
    tensors_free(&t);
}

static void reuse_before_selection(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0x5E7;
    baatt_config c = make(1, 2, 1, 128, 128, 64, 64, BAATT_DTYPE_F32);
    tensors t;
    tensors_init(&rng, &c, &t);
    baatt_plan *plan = NULL;
    plan_for(&c, &plan);
    assert_int_equal(baatt_plan_set_reuse(NULL, 1), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_set_reuse(plan, 1), BAATT_OK);
    th_poison(t.o, c.dtype, t.qn);
    assert_int_equal(baatt_plan_run_host(plan, t.q, t.k, t.v, t.o), BAATT_ERROR_NO_SELECTION);
    assert_non_null(strstr(baatt_context_error(th_ctx), "holds no selection yet"));
    for (size_t i = 0; i < t.qn; i++) assert_true(isnan(((float *)t.o)[i])); /* nothing written */
    baatt_run_stats st;
    assert_int_equal(baatt_plan_stats(plan, &st), BAATT_ERROR_NOT_READY); /* nor run */
    assert_int_equal(baatt_plan_set_reuse(plan, 0), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    baatt_plan_destroy(plan);

    /* a dense plan has nothing to reuse: it runs dense attention either way */
    c.dense = 1;
    plan_for(&c, &plan);
    assert_int_equal(baatt_plan_set_reuse(plan, 1), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    th_check_dense(&c, t.q, t.k, t.v, t.o, "dense plan, reuse on");
    baatt_plan_destroy(plan);
    tensors_free(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* given selections                                                                           */

/* A random mask: every row keeps each block with probability density, and at least one. */
static uint8_t *random_mask(uint64_t *rng, const tensors *t, float density)
{
    uint8_t *m = malloc(t->rows * t->nk);
    for (size_t r = 0; r < t->rows; r++) {
        uint8_t *row = m + r * t->nk;
        int any = 0;
        for (size_t j = 0; j < t->nk; j++) any |= row[j] = th_uniform(rng) < density;
        if (!any) row[th_next(rng) % t->nk] = 1;
    }
    return m;
}

/* Random permutations of len for each of heads rows (Fisher-Yates). */
static int32_t *random_perm(uint64_t *rng, uint32_t heads, uint32_t len)
{
    int32_t *p = malloc(4ull * heads * len);
    for (uint32_t h = 0; h < heads; h++) {
        int32_t *row = p + (size_t)h * len;
        for (uint32_t i = 0; i < len; i++) row[i] = (int32_t)i;
        for (uint32_t i = len - 1; i > 0; i--) {
            uint32_t j = (uint32_t)(th_next(rng) % (i + 1));
            int32_t x = row[i];
            row[i] = row[j], row[j] = x;
        }
    }
    return p;
}

enum { ORDER_ORIGINAL, ORDER_RANDOM, ORDER_NORM_SORTED };

/* A given mask in one of the orders, from host arrays or device buffers; what the plan reports. */
static void given_case(baatt_config c, int order, int buffers, uint64_t salt)
{
    uint64_t rng = th_seed() ^ salt;
    tensors t;
    tensors_init(&rng, &c, &t);
    baatt_plan *plan = NULL;
    plan_for(&c, &plan);
    uint32_t hq = c.batch * c.heads, hk = c.batch * c.kv_heads;
    int32_t *pq = NULL, *pk = NULL;
    if (order == ORDER_RANDOM) {
        pq = random_perm(&rng, hq, c.q_len);
        pk = random_perm(&rng, hk, c.kv_len);
    } else if (order == ORDER_NORM_SORTED) { /* the norm sort of these tensors, by the reference */
        pq = malloc(4ull * hq * c.q_len), pk = malloc(4ull * hk * c.kv_len);
        assert_int_equal(baatt_reference_sort(&c, t.q, c.heads, c.q_len, pq), BAATT_OK);
        assert_int_equal(baatt_reference_sort(&c, t.k, c.kv_heads, c.kv_len, pk), BAATT_OK);
    }
    uint8_t *mask = random_mask(&rng, &t, 0.3f);
    /* copies: nothing the caller passes is modified */
    uint8_t *mask0 = malloc(t.rows * t.nk);
    memcpy(mask0, mask, t.rows * t.nk);
    if (buffers) {
        baatt_device_buffer *bm, *bq = NULL, *bk = NULL;
        assert_int_equal(baatt_device_buffer_create(th_ctx, t.rows * t.nk, &bm), BAATT_OK);
        assert_int_equal(baatt_device_buffer_write(bm, 0, mask, t.rows * t.nk), BAATT_OK);
        if (pq) {
            assert_int_equal(baatt_device_buffer_create(th_ctx, 4ull * hq * c.q_len, &bq), BAATT_OK);
            assert_int_equal(baatt_device_buffer_create(th_ctx, 4ull * hk * c.kv_len, &bk), BAATT_OK);
            assert_int_equal(baatt_device_buffer_write(bq, 0, pq, 4ull * hq * c.q_len), BAATT_OK);
            assert_int_equal(baatt_device_buffer_write(bk, 0, pk, 4ull * hk * c.kv_len), BAATT_OK);
            /* swapped: a buffer too small for its array */
            if (hq * c.q_len != hk * c.kv_len) {
                assert_int_equal(baatt_plan_set_selection_buffers(plan, bm, bk, bq), BAATT_ERROR_BAD_SHAPE);
                assert_non_null(strstr(baatt_context_error(th_ctx), "bytes, the plan's"));
            }
        }
        assert_int_equal(baatt_plan_set_selection_buffers(plan, bm, bq, bk), BAATT_OK);
        baatt_device_buffer_destroy(bm), baatt_device_buffer_destroy(bq), baatt_device_buffer_destroy(bk);
    } else {
        assert_int_equal(baatt_plan_set_selection(plan, mask, pq, pk), BAATT_OK);
    }
    assert_memory_equal(mask, mask0, t.rows * t.nk);
    for (int step = 0; step < 2; step++) { /* the given selection stays until reuse is turned off */
        if (step) fresh(&rng, &t);
        assert_int_equal(run(plan, &t), BAATT_OK);
        check_output(&t, mask, pq, pk, "given selection");
    }
    selection got;
    read_selection(plan, &t, &got);
    assert_memory_equal(got.mask, mask, t.rows * t.nk);
    for (uint32_t h = 0; h < hq; h++)
        for (uint32_t i = 0; i < c.q_len; i++)
            assert_int_equal(got.pq[(size_t)h * c.q_len + i], pq ? pq[(size_t)h * c.q_len + i] : (int32_t)i);
    uint8_t *sorted = malloc(hk);
    assert_int_equal(baatt_plan_read_head_sorted(plan, sorted), BAATT_OK);
    for (uint32_t h = 0; h < hk; h++) assert_int_equal(sorted[h], order != ORDER_ORIGINAL);
    memset(sorted, 0xAA, hk);
    assert_int_equal(baatt_plan_read_head_covariance(plan, sorted), BAATT_OK);
    for (uint32_t h = 0; h < hk; h++) assert_int_equal(sorted[h], 0); /* no lambda made a given selection */
    baatt_run_stats st;
    assert_int_equal(baatt_plan_stats(plan, &st), BAATT_OK);
    uint64_t blocks = 0, tokens = 0;
    for (size_t r = 0; r < t.rows; r++)
        for (size_t j = 0; j < t.nk; j++)
            if (mask[r * t.nk + j]) blocks++, tokens += j + 1 < t.nk ? c.block_size : c.kv_len - j * c.block_size;
    assert_int_equal(st.selected_blocks, blocks);
    assert_true(fabs(st.sparsity - (1.0 - (double)tokens / ((double)t.rows * c.kv_len))) < 1e-9);
    free_selection(&got);
    free(sorted), free(mask), free(mask0), free(pq), free(pk);
    baatt_plan_destroy(plan);
    tensors_free(&t);
}

static void given_original_order(void **s)
{
    (void)s;
    given_case(make(1, 4, 2, 200, 264, 64, 32, BAATT_DTYPE_F32), ORDER_ORIGINAL, 0, 0x6A1);
    given_case(make(2, 2, 1, 190, 300, 128, 64, BAATT_DTYPE_F16), ORDER_ORIGINAL, 0, 0x6A2);
}

static void given_permuted(void **s)
{
    (void)s;
    given_case(make(1, 4, 2, 256, 200, 128, 64, BAATT_DTYPE_F32), ORDER_NORM_SORTED, 0, 0x6A3);
    given_case(make(1, 4, 1, 200, 264, 64, 32, BAATT_DTYPE_F16), ORDER_RANDOM, 0, 0x6A4);
}

/* A plan whose own selection would differ (sorting off, auto sort, threshold) attends on what is
 * given all the same. */
static void given_any_plan(void **s)
{
    (void)s;
    baatt_config c = make(1, 2, 2, 160, 200, 64, 32, BAATT_DTYPE_F32);
    c.norm_sort = BAATT_SORT_OFF;
    given_case(c, ORDER_RANDOM, 0, 0x6A5);
    c.norm_sort = BAATT_SORT_AUTO;
    given_case(c, ORDER_NORM_SORTED, 0, 0x6A6);
    c.select_mode = BAATT_SELECT_MASS_THRESHOLD;
    given_case(c, ORDER_ORIGINAL, 0, 0x6A7);
}

static void given_bf16(void **s)
{
    (void)s;
    given_case(make(1, 4, 2, 150, 230, 128, 64, BAATT_DTYPE_BF16), ORDER_RANDOM, 0, 0x6A8);
}

static void given_device_buffers(void **s)
{
    (void)s;
    given_case(make(1, 4, 2, 200, 136, 64, 64, BAATT_DTYPE_F32), ORDER_RANDOM, 1, 0x6A9);
    given_case(make(1, 2, 1, 130, 190, 128, 32, BAATT_DTYPE_F16), ORDER_ORIGINAL, 1, 0x6AA);
}

/* Turning reuse off after a given selection: the next run estimates its own again. */
static void given_then_estimate(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0x6AB;
    baatt_config c = make(1, 2, 1, 128, 256, 64, 32, BAATT_DTYPE_F32);
    tensors t;
    tensors_init(&rng, &c, &t);
    baatt_plan *plan = NULL;
    plan_for(&c, &plan);
    uint8_t *mask = random_mask(&rng, &t, 0.9f);
    assert_int_equal(baatt_plan_set_selection(plan, mask, NULL, NULL), BAATT_OK);
    assert_int_equal(baatt_plan_set_reuse(plan, 0), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    selection est;
    read_selection(plan, &t, &est);
    uint32_t keep = baatt_config_keep_blocks(&c);
    for (size_t r = 0; r < t.rows; r++) {
        uint32_t n = 0;
        for (size_t j = 0; j < t.nk; j++) n += est.mask[r * t.nk + j];
        assert_int_equal(n, keep);
    }
    uint8_t sorted[1];
    assert_int_equal(baatt_plan_read_head_sorted(plan, sorted), BAATT_OK);
    assert_int_equal(sorted[0], 1);
    check_output(&t, est.mask, est.pq, est.pk, "estimate after a given selection");
    free_selection(&est);
    free(mask);
    baatt_plan_destroy(plan);
    tensors_free(&t);
}

static void expect_refused(baatt_plan *plan, const uint8_t *mask, const int32_t *pq, const int32_t *pk,
                           baatt_status want, const char *fragment)
{
    assert_int_equal(baatt_plan_set_selection(plan, mask, pq, pk), want);
    const char *msg = baatt_context_error(th_ctx);
    if (!strstr(msg, fragment)) fprintf(stderr, "message '%s' lacks '%s'\n", msg, fragment);
    assert_non_null(strstr(msg, fragment));
}

static void given_malformed(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0x6AC;
    baatt_config c = make(1, 2, 1, 100, 130, 64, 32, BAATT_DTYPE_F32); /* 4 x 5 blocks */
    tensors t;
    tensors_init(&rng, &c, &t);
    baatt_plan *plan = NULL;
    plan_for(&c, &plan);
    uint8_t *good = random_mask(&rng, &t, 0.5f), *bad = malloc(t.rows * t.nk);
    int32_t *pq = random_perm(&rng, 2, c.q_len), *pk = random_perm(&rng, 1, c.kv_len);
    int32_t *pq0 = malloc(4 * 2 * c.q_len);
    memcpy(pq0, pq, 4 * 2 * c.q_len);

    /* no selection yet: the refusals below must leave none */
    memcpy(bad, good, t.rows * t.nk);
    bad[1 * 4 * 5 + 2 * 5 + 3] = 2; /* head 1, query block 2, key block 3 */
    expect_refused(plan, bad, NULL, NULL, BAATT_ERROR_BAD_SELECTION, "mask[0][1][2][3] is 2");
    assert_int_equal(baatt_plan_set_reuse(plan, 1), BAATT_OK);
    assert_int_equal(baatt_plan_run_host(plan, t.q, t.k, t.v, t.o), BAATT_ERROR_NO_SELECTION);

    /* a selection held: kept through every refusal */
    assert_int_equal(baatt_plan_set_selection(plan, good, pq, pk), BAATT_OK);
    memcpy(bad, good, t.rows * t.nk);
    memset(bad + 3 * 5, 0, 5); /* head 0, query block 3 */
    expect_refused(plan, bad, pq, pk, BAATT_ERROR_BAD_SELECTION, "query block 3) selects no key block");
    pq[2 * c.q_len - 1] = (int32_t)c.q_len; /* head 1, last position */
    expect_refused(plan, good, pq, pk, BAATT_ERROR_BAD_SELECTION,
                   "perm_q is not a permutation: [batch 0, head 1] position 99 holds 100, outside [0, 100)");
    pq[2 * c.q_len - 1] = -1;
    expect_refused(plan, good, pq, pk, BAATT_ERROR_BAD_SELECTION, "holds -1, outside");
    pq[2 * c.q_len - 1] = pq[c.q_len]; /* a repeat */
    expect_refused(plan, good, pq, pk, BAATT_ERROR_BAD_SELECTION,
                   "perm_q is not a permutation: [batch 0, head 1] holds");
    memcpy(pq, pq0, 4 * 2 * c.q_len);
    int32_t keep = pk[7];
    pk[7] = pk[8];
    expect_refused(plan, good, pq, pk, BAATT_ERROR_BAD_SELECTION, "perm_k is not a permutation");
    pk[7] = keep;
    expect_refused(plan, NULL, pq, pk, BAATT_ERROR_INVALID_ARGUMENT, "mask is NULL");
    assert_int_equal(baatt_plan_set_selection(NULL, good, NULL, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_set_selection_buffers(plan, NULL, NULL, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_memory_equal(pq, pq0, 4 * 2 * c.q_len);
    assert_int_equal(run(plan, &t), BAATT_OK);
    check_output(&t, good, pq, pk, "the selection held before the refusals");
    baatt_plan_destroy(plan);

    c.dense = 1;
    plan_for(&c, &plan);
    expect_refused(plan, good, NULL, NULL, BAATT_ERROR_INVALID_ARGUMENT, "a dense plan takes no selection");
    baatt_plan_destroy(plan);
    free(good), free(bad), free(pq), free(pk), free(pq0);
    tensors_free(&t);
}

/* ------------------------------------------------------------------------------------------ */
/* snapshots                                                                                  */

typedef struct held_state {
    selection sel;
    uint8_t *choice; /* read_head_sorted, then read_head_covariance: [2][bhkv] */
} held_state;

static void read_held(baatt_plan *plan, const tensors *t, held_state *h)
{
    uint32_t nkv = t->c.batch * t->c.kv_heads;
    read_selection(plan, t, &h->sel);
    h->choice = malloc(2 * nkv);
    memset(h->choice, 0xAA, 2 * nkv);
    assert_int_equal(baatt_plan_read_head_sorted(plan, h->choice), BAATT_OK);
    assert_int_equal(baatt_plan_read_head_covariance(plan, h->choice + nkv), BAATT_OK);
}

static void expect_same_held(const held_state *a, const held_state *b, const tensors *t)
{
    const baatt_config *c = &t->c;
    assert_memory_equal(a->sel.mask, b->sel.mask, t->rows * t->nk);
    assert_memory_equal(a->sel.pq, b->sel.pq, 4ull * c->batch * c->heads * c->q_len);
    assert_memory_equal(a->sel.pk, b->sel.pk, 4ull * c->batch * c->kv_heads * c->kv_len);
    assert_memory_equal(a->choice, b->choice, 2ull * c->batch * c->kv_heads);
}

static void free_held(held_state *h) { free_selection(&h->sel), free(h->choice); }

/* Plan A estimates on X (snapshot S), then on Y (a new held selection), then loads S and runs Z:
 * the output of plan B that estimated on X and reused on Z, bit for bit, and what A reports is
 * X's selection. A fresh plan C that never ran takes S too. */
static void snapshot_case(baatt_config c, uint64_t salt)
{
    uint64_t rng = th_seed() ^ salt;
    tensors t;
    tensors_init(&rng, &c, &t);
    size_t ob = t.qn * baatt_dtype_size(c.dtype);
    baatt_plan *a = NULL, *b = NULL, *fresh_plan = NULL;
    plan_for(&c, &a), plan_for(&c, &b), plan_for(&c, &fresh_plan);
    baatt_snapshot *snap = NULL;
    assert_int_equal(run(a, &t), BAATT_OK); /* X */
    assert_int_equal(baatt_plan_snapshot_save(a, &snap), BAATT_OK);
    assert_non_null(snap);
    held_state x, y, loaded;
    read_held(a, &t, &x);
    assert_int_equal(run(b, &t), BAATT_OK);
    assert_int_equal(baatt_plan_set_reuse(b, 1), BAATT_OK);

    fresh(&rng, &t); /* Y: A's held selection changes */
    assert_int_equal(run(a, &t), BAATT_OK);
    read_held(a, &t, &y);
    assert_true(memcmp(x.sel.mask, y.sel.mask, t.rows * t.nk) != 0 ||
                memcmp(x.sel.pq, y.sel.pq, 4ull * c.batch * c.heads * c.q_len) != 0);

    fresh(&rng, &t); /* Z: A on the snapshot, B on its own reuse, C on the snapshot */
    assert_int_equal(baatt_plan_snapshot_load(a, snap), BAATT_OK);
    assert_int_equal(run(a, &t), BAATT_OK);
    void *out_a = malloc(ob);
    memcpy(out_a, t.o, ob);
    read_held(a, &t, &loaded);
    expect_same_held(&x, &loaded, &t);
    check_output(&t, x.sel.mask, x.sel.pq, x.sel.pk, "reusing a loaded snapshot");
    assert_int_equal(run(b, &t), BAATT_OK);
    assert_memory_equal(out_a, t.o, ob);
    assert_int_equal(baatt_plan_snapshot_load(fresh_plan, snap), BAATT_OK);
    assert_int_equal(run(fresh_plan, &t), BAATT_OK);
    assert_memory_equal(out_a, t.o, ob);

    /* the snapshot outlives its plan and a second load */
    baatt_plan_destroy(a);
    assert_int_equal(baatt_plan_set_reuse(fresh_plan, 0), BAATT_OK);
    assert_int_equal(run(fresh_plan, &t), BAATT_OK);
    assert_int_equal(baatt_plan_snapshot_load(fresh_plan, snap), BAATT_OK);
    assert_int_equal(run(fresh_plan, &t), BAATT_OK);
    assert_memory_equal(out_a, t.o, ob);
    free_held(&loaded);
    read_held(fresh_plan, &t, &loaded);
    expect_same_held(&x, &loaded, &t);

    free_held(&x), free_held(&y), free_held(&loaded), free(out_a);
    baatt_snapshot_destroy(snap);
    baatt_plan_destroy(b), baatt_plan_destroy(fresh_plan);
    tensors_free(&t);
}

static void snapshot_sorted_f32_gqa(void **s)
{
    (void)s;
    snapshot_case(make(1, 4, 2, 200, 264, 64, 32, BAATT_DTYPE_F32), 0x5A1);
}

/* Auto sort and lambda: the per-kv-head choice record travels with the snapshot. */
static void snapshot_auto_f16(void **s)
{
    (void)s;
    baatt_config c = make(2, 2, 1, 256, 192, 64, 32, BAATT_DTYPE_F16);
    c.norm_sort = BAATT_SORT_AUTO, c.covariance = BAATT_COVARIANCE_AUTO;
    snapshot_case(c, 0x5A2);
}

static void snapshot_original_order_d128(void **s)
{
    (void)s;
    baatt_config c = make(1, 2, 2, 320, 400, 128, 32, BAATT_DTYPE_F32); /* 10 x 13 blocks */
    c.norm_sort = BAATT_SORT_OFF;
    snapshot_case(c, 0x5A3);
}

/* A given selection's snapshot: what the read functions report for it comes back too. */
static void snapshot_given(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0x5A4;
    baatt_config c = make(1, 2, 1, 160, 200, 64, 32, BAATT_DTYPE_F32);
    c.norm_sort = BAATT_SORT_AUTO;
    tensors t;
    tensors_init(&rng, &c, &t);
    baatt_plan *plan = NULL;
    plan_for(&c, &plan);
    uint8_t *mask = random_mask(&rng, &t, 0.4f);
    int32_t *pk = random_perm(&rng, 1, c.kv_len);
    assert_int_equal(baatt_plan_set_selection(plan, mask, NULL, pk), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    held_state given, loaded;
    read_held(plan, &t, &given);
    assert_int_equal(given.choice[0], 1); /* perm_k not the identity */
    assert_int_equal(given.choice[1], 0); /* no lambda made it */
    baatt_snapshot *snap = NULL;
    assert_int_equal(baatt_plan_snapshot_save(plan, &snap), BAATT_OK);
    assert_int_equal(baatt_plan_set_reuse(plan, 0), BAATT_OK);
    fresh(&rng, &t);
    assert_int_equal(run(plan, &t), BAATT_OK); /* an estimate replaces it */
    assert_int_equal(baatt_plan_snapshot_load(plan, snap), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    check_output(&t, mask, NULL, pk, "a given selection's snapshot");
    read_held(plan, &t, &loaded);
    expect_same_held(&given, &loaded, &t);
    free_held(&given), free_held(&loaded), free(mask), free(pk);
    baatt_snapshot_destroy(snap);
    baatt_plan_destroy(plan);
    tensors_free(&t);
}

static void expect_load_refused(baatt_plan *plan, const baatt_snapshot *snap, const char *fragment)
{
    assert_int_equal(baatt_plan_snapshot_load(plan, snap), BAATT_ERROR_INVALID_ARGUMENT);
    const char *msg = baatt_context_error(th_ctx);
    if (!strstr(msg, fragment)) fprintf(stderr, "message '%s' lacks '%s'\n", msg, fragment);
    assert_non_null(strstr(msg, fragment));
}

static void snapshot_errors(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0x5A5;
    baatt_config c = make(1, 2, 1, 128, 160, 64, 32, BAATT_DTYPE_F32);
    tensors t;
    tensors_init(&rng, &c, &t);
    baatt_plan *plan = NULL, *other = NULL;
    plan_for(&c, &plan);
    baatt_snapshot *snap = (baatt_snapshot *)&rng; /* must come back NULL */
    assert_int_equal(baatt_plan_snapshot_save(plan, &snap), BAATT_ERROR_NO_SELECTION);
    assert_null(snap);
    assert_non_null(strstr(baatt_context_error(th_ctx), "holds no selection"));
    assert_int_equal(baatt_plan_snapshot_save(NULL, &snap), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_snapshot_save(plan, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(run(plan, &t), BAATT_OK);
    held_state before, after;
    read_held(plan, &t, &before);
    assert_int_equal(baatt_plan_snapshot_save(plan, &snap), BAATT_OK);
    assert_int_equal(baatt_plan_snapshot_load(NULL, snap), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_snapshot_load(plan, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(baatt_context_error(th_ctx), "snapshot is NULL"));

    /* plans of another shape, geometry or candidate set refuse it and keep what they hold */
    struct {
        baatt_config c;
        const char *fragment;
    } wrong[] = {{make(1, 2, 1, 160, 160, 64, 32, BAATT_DTYPE_F32), "q_len / kv_len"},
                 {make(1, 2, 2, 128, 160, 64, 32, BAATT_DTYPE_F32), "kv_heads"},
                 {make(1, 2, 1, 128, 160, 64, 64, BAATT_DTYPE_F32), "block_size / head_dim"},
                 {make(1, 2, 1, 128, 160, 128, 32, BAATT_DTYPE_F32), "block_size / head_dim"},
                 {c, "candidates"},
                 {c, "dense plan"}};
    wrong[4].c.norm_sort = BAATT_SORT_OFF;
    wrong[5].c.dense = 1;
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        plan_for(&wrong[i].c, &other);
        expect_load_refused(other, snap, wrong[i].fragment);
        baatt_plan_destroy(other);
    }
    assert_int_equal(baatt_plan_set_reuse(plan, 0), BAATT_OK);
    c.norm_sort = BAATT_SORT_OFF;
    plan_for(&c, &other);
    assert_int_equal(run(other, &t), BAATT_OK);
    expect_load_refused(other, snap, "candidates");
    baatt_plan_destroy(other);

    /* the refusals changed nothing: the plan still estimates, and the snapshot still loads */
    fresh(&rng, &t);
    assert_int_equal(run(plan, &t), BAATT_OK);
    assert_int_equal(baatt_plan_snapshot_load(plan, snap), BAATT_OK);
    assert_int_equal(run(plan, &t), BAATT_OK);
    read_held(plan, &t, &after);
    expect_same_held(&before, &after, &t);
    free_held(&before), free_held(&after);
    baatt_snapshot_destroy(snap);
    baatt_snapshot_destroy(NULL);
    baatt_plan_destroy(plan);

    c.dense = 1; /* a dense plan never holds one */
    plan_for(&c, &plan);
    assert_int_equal(run(plan, &t), BAATT_OK);
    assert_int_equal(baatt_plan_snapshot_save(plan, &snap), BAATT_ERROR_NO_SELECTION);
    baatt_plan_destroy(plan);
    tensors_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reuse_sorted_f32_gqa), cmocka_unit_test(reuse_original_order_f16_d128),
        cmocka_unit_test(reuse_auto_threshold), cmocka_unit_test(reuse_bf16_block128),
        cmocka_unit_test(reuse_device_buffers), cmocka_unit_test(reuse_before_selection),
        cmocka_unit_test(given_original_order), cmocka_unit_test(given_permuted),
        cmocka_unit_test(given_any_plan),       cmocka_unit_test(given_bf16),
        cmocka_unit_test(given_device_buffers), cmocka_unit_test(given_then_estimate),
        cmocka_unit_test(given_malformed),      cmocka_unit_test(snapshot_sorted_f32_gqa),
        cmocka_unit_test(snapshot_auto_f16),    cmocka_unit_test(snapshot_original_order_d128),
        cmocka_unit_test(snapshot_given),       cmocka_unit_test(snapshot_errors),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
