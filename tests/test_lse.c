/* The log-sum-exp output (cfg.lse) against the CPU reference: dense and sparse, fp32/fp16/bf16,
 * GQA, head_dim 64 and 128, partial tiles, sort norm/off/auto, a reused selection, O and LSE
 * poisoned with NaN first; host arrays and device buffers; the errors of bad use; and the merge of
 * two partial attentions (baatt_lse_merge) on the reference and on the GPU. Whatever kernel the
 * device picks is the one tested (CI also runs this file with BAATT_TUNE=attend=portable). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

typedef struct inputs {
    void *q, *k, *v;
    size_t qn, kn, rows; /* elements of Q, of K; query rows */
} inputs;

static inputs make_inputs(const baatt_config *c, uint64_t *rng)
{
    inputs in = {.qn = (size_t)c->batch * c->heads * c->q_len * c->head_dim,
                 .kn = (size_t)c->batch * c->kv_heads * c->kv_len * c->head_dim,
                 .rows = (size_t)c->batch * c->heads * c->q_len};
    in.q = th_random_tensor(rng, c->dtype, in.qn, 1.0f);
    in.k = th_random_tensor(rng, c->dtype, in.kn, 1.0f);
    in.v = th_random_tensor(rng, c->dtype, in.kn, 1.0f);
    return in;
}

static void free_inputs(inputs *in) { free(in->q), free(in->k), free(in->v); }

static baatt_config make(uint32_t b, uint32_t h, uint32_t hkv, uint32_t nq, uint32_t nk, uint32_t d, baatt_dtype dt,
                         int dense)
{
    baatt_config c = baatt_config_default();
    c.batch = b, c.heads = h, c.kv_heads = hkv, c.q_len = nq, c.kv_len = nk, c.head_dim = d, c.dtype = dt;
    c.dense = dense, c.keep_ratio = 0.4f, c.lse = 1;
    return c;
}

/* A plan for c, or skip where the device lacks the dtype. */
static baatt_plan *plan_or_skip(const baatt_config *c)
{
    baatt_plan *plan = NULL;
    baatt_status s = baatt_plan_create(th_ctx, c, &plan);
    if (s == BAATT_ERROR_MISSING_FEATURE && c->dtype != BAATT_DTYPE_F32) skip();
    assert_int_equal(s, BAATT_OK);
    return plan;
}

/* O and LSE of the plan's last run (o in c->dtype, lse float) against the reference, on the plan's
 * own selection in a sparse plan. */
static void compare(baatt_plan *plan, const baatt_config *c, const inputs *in, const void *o, const float *lse,
                    const char *what)
{
    float *ref_o = malloc(4 * in->qn), *ref_l = malloc(4 * in->rows), *got = th_to_float(o, c->dtype, in->qn);
    if (c->dense) {
        assert_int_equal(baatt_reference_attention(c, in->q, in->k, in->v, ref_o), BAATT_OK);
        assert_int_equal(baatt_reference_lse(c, in->q, in->k, NULL, NULL, NULL, ref_l), BAATT_OK);
    } else {
        uint32_t nq = baatt_config_q_blocks(c), nk = baatt_config_k_blocks(c);
        uint8_t *mask = malloc((size_t)c->batch * c->heads * nq * nk);
        int32_t *pq = malloc(4 * in->rows), *pk = malloc(4 * (size_t)c->batch * c->kv_heads * c->kv_len);
        assert_int_equal(baatt_plan_read_mask(plan, mask), BAATT_OK);
        assert_int_equal(baatt_plan_read_perms(plan, pq, pk), BAATT_OK);
        assert_int_equal(baatt_reference_sparse_attention(c, in->q, in->k, in->v, pq, pk, mask, ref_o), BAATT_OK);
        assert_int_equal(baatt_reference_lse(c, in->q, in->k, pq, pk, mask, ref_l), BAATT_OK);
        free(mask), free(pq), free(pk);
    }
    char label[160];
    snprintf(label, sizeof label, "%s %s %s b%u h%u/%u q%u k%u d%u block %u sort %d (%s)", what,
             c->dense ? "dense" : "sparse", baatt_dtype_name(c->dtype), c->batch, c->heads, c->kv_heads, c->q_len,
             c->kv_len, c->head_dim, c->block_size, c->norm_sort, baatt_plan_path(plan, BAATT_STAGE_ATTEND));
    double atol, rtol;
    th_tolerance(c->dtype, &atol, &rtol);
    assert_true(th_compare(got, ref_o, in->qn, atol, rtol, label) <= 1.0);
    assert_true(th_compare(lse, ref_l, in->rows, th_lse_atol(baatt_plan_path(plan, BAATT_STAGE_ATTEND), c->dtype), 1e-6,
                           label) <= 1.0);
    free(ref_o), free(ref_l), free(got);
}

/* run_host with O and LSE poisoned, then both against the reference. */
static void check(baatt_config c)
{
    uint64_t rng = th_seed() ^ ((uint64_t)c.q_len << 32) ^ ((uint64_t)c.dtype << 24) ^ c.kv_len ^ c.norm_sort;
    inputs in = make_inputs(&c, &rng);
    void *o = malloc(in.qn * baatt_dtype_size(c.dtype));
    float *lse = malloc(4 * in.rows);
    th_poison(o, c.dtype, in.qn);
    th_poison(lse, BAATT_DTYPE_F32, in.rows);
    baatt_plan *plan = plan_or_skip(&c);
    assert_int_equal(baatt_plan_run_host(plan, in.q, in.k, in.v, o), BAATT_OK);
    assert_int_equal(baatt_plan_read_lse(plan, lse), BAATT_OK);
    compare(plan, &c, &in, o, lse, "run_host");
    baatt_plan_destroy(plan);
    free(o), free(lse);
    free_inputs(&in);
}

static void lse_dense(void **s)
{
    (void)s;
    check(make(2, 2, 2, 77, 131, 64, BAATT_DTYPE_F32, 1));   /* batch, partial tiles */
    check(make(1, 4, 2, 96, 257, 128, BAATT_DTYPE_F16, 1));  /* GQA */
    check(make(1, 2, 1, 128, 256, 128, BAATT_DTYPE_F16, 1)); /* whole tiles */
    check(make(1, 2, 1, 64, 192, 64, BAATT_DTYPE_F16, 1));
    check(make(2, 4, 2, 70, 129, 128, BAATT_DTYPE_BF16, 1));
    check(make(1, 1, 1, 1, 1, 64, BAATT_DTYPE_F16, 1)); /* one key: lse = the one score */
    baatt_config c = make(1, 3, 1, 40, 100, 128, BAATT_DTYPE_F32, 1);
    c.scale = 0.3f; /* the scale is applied: a wrong one moves every LSE */
    check(c);
}

static void lse_sparse(void **s)
{
    (void)s;
    const baatt_sort_mode sorts[] = {BAATT_SORT_NORM, BAATT_SORT_OFF, BAATT_SORT_AUTO};
    for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++) {
        baatt_config c = make(1, 4, 2, 200, 333, 64, BAATT_DTYPE_F32, 0);
        c.norm_sort = sorts[i];
        check(c);
        c = make(1, 4, 2, 300, 520, 128, BAATT_DTYPE_F16, 0);
        c.norm_sort = sorts[i];
        check(c);
        c = make(2, 2, 1, 150, 200, 64, BAATT_DTYPE_BF16, 0);
        c.norm_sort = sorts[i], c.block_size = 32;
        check(c);
    }
    baatt_config c = make(1, 2, 2, 256, 512, 128, BAATT_DTYPE_F16, 0); /* 128-token blocks of whole tiles */
    c.block_size = 128;
    check(c);
    c = make(1, 2, 1, 256, 384, 128, BAATT_DTYPE_BF16, 0);
    c.block_size = 128;
    check(c);
}

/* A reusing run: the LSE of the new inputs over the held selection. */
static void lse_reused_selection(void **s)
{
    (void)s;
    baatt_config c = make(1, 2, 1, 130, 200, 64, BAATT_DTYPE_F16, 0);
    uint64_t rng = th_seed() ^ 0x15E;
    inputs a = make_inputs(&c, &rng), b = make_inputs(&c, &rng);
    void *o = malloc(2 * a.qn);
    float *lse = malloc(4 * a.rows);
    baatt_plan *plan = plan_or_skip(&c);
    assert_int_equal(baatt_plan_run_host(plan, a.q, a.k, a.v, o), BAATT_OK);
    assert_int_equal(baatt_plan_set_reuse(plan, 1), BAATT_OK);
    th_poison(o, c.dtype, a.qn);
    th_poison(lse, BAATT_DTYPE_F32, a.rows);
    assert_int_equal(baatt_plan_run_host(plan, b.q, b.k, b.v, o), BAATT_OK);
    assert_int_equal(baatt_plan_read_lse(plan, lse), BAATT_OK);
    compare(plan, &c, &b, o, lse, "reused");
    baatt_plan_destroy(plan);
    free(o), free(lse);
    free_inputs(&a), free_inputs(&b);
}

static baatt_device_buffer *upload(const void *x, uint64_t bytes)
{
    baatt_device_buffer *b = NULL;
    assert_int_equal(baatt_device_buffer_create(th_ctx, bytes, &b), BAATT_OK);
    if (x) assert_int_equal(baatt_device_buffer_write(b, 0, x, bytes), BAATT_OK);
    return b;
}

/* run_buffers_lse into a poisoned device buffer; run_buffers into the plan's own. */
static void lse_device_buffers(void **s)
{
    (void)s;
    baatt_config c = make(1, 4, 2, 100, 170, 64, BAATT_DTYPE_F32, 0);
    uint64_t rng = th_seed() ^ 0xDB1;
    inputs in = make_inputs(&c, &rng);
    float *o = malloc(4 * in.qn), *lse = malloc(4 * in.rows);
    th_poison(o, c.dtype, in.qn);
    th_poison(lse, BAATT_DTYPE_F32, in.rows);
    baatt_device_buffer *q = upload(in.q, 4 * in.qn), *k = upload(in.k, 4 * in.kn), *v = upload(in.v, 4 * in.kn),
                        *ob = upload(o, 4 * in.qn), *lb = upload(lse, 4 * in.rows);
    baatt_plan *plan = plan_or_skip(&c);
    assert_int_equal(baatt_plan_run_buffers_lse(plan, q, k, v, ob, lb), BAATT_OK);
    /* the LSE went to the caller's buffer: the plan's own holds none */
    assert_int_equal(baatt_plan_read_lse(plan, lse), BAATT_ERROR_NOT_READY);
    assert_non_null(strstr(baatt_context_error(th_ctx), "caller's tensor"));
    assert_int_equal(baatt_device_buffer_read(ob, 0, o, 4 * in.qn), BAATT_OK);
    assert_int_equal(baatt_device_buffer_read(lb, 0, lse, 4 * in.rows), BAATT_OK);
    compare(plan, &c, &in, o, lse, "run_buffers_lse");
    float *own = malloc(4 * in.rows);
    th_poison(own, BAATT_DTYPE_F32, in.rows);
    assert_int_equal(baatt_plan_run_buffers(plan, q, k, v, ob), BAATT_OK);
    assert_int_equal(baatt_plan_read_lse(plan, own), BAATT_OK);
    assert_memory_equal(own, lse, 4 * in.rows); /* same kernel, same inputs, same bits */
    baatt_device_buffer *small = upload(NULL, 4 * in.rows - 4);
    assert_int_equal(baatt_plan_run_buffers_lse(plan, q, k, v, ob, small), BAATT_ERROR_BAD_SHAPE);
    baatt_plan_destroy(plan);
    baatt_device_buffer *bufs[] = {q, k, v, ob, lb, small};
    for (size_t i = 0; i < 6; i++) baatt_device_buffer_destroy(bufs[i]);
    free(o), free(lse), free(own);
    free_inputs(&in);
}

/* Bad use: a plan without cfg.lse, a plan not run yet, a config value other than 0/1. */
static void lse_errors(void **s)
{
    (void)s;
    baatt_config c = make(1, 1, 1, 64, 64, 64, BAATT_DTYPE_F32, 1);
    float lse[64], x[64 * 64] = {0};
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
    assert_int_equal(baatt_plan_read_lse(plan, lse), BAATT_ERROR_NOT_READY);
    assert_int_equal(baatt_plan_run_host(plan, x, x, x, x), BAATT_OK);
    assert_int_equal(baatt_plan_read_lse(plan, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_read_lse(plan, lse), BAATT_OK);
    for (int i = 0; i < 64; i++) assert_true(fabsf(lse[i] - logf(64.0f)) < 1e-5f); /* all scores 0 */
    baatt_plan_destroy(plan);
    c.lse = 0;
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
    assert_int_equal(baatt_plan_run_host(plan, x, x, x, x), BAATT_OK);
    assert_int_equal(baatt_plan_read_lse(plan, lse), BAATT_ERROR_NO_LSE);
    assert_non_null(strstr(baatt_context_error(th_ctx), "without cfg.lse"));
    baatt_device_buffer *b = upload(NULL, sizeof x);
    assert_int_equal(baatt_plan_run_buffers_lse(plan, b, b, b, b, b), BAATT_ERROR_NO_LSE);
    assert_non_null(strstr(baatt_context_error(th_ctx), "without cfg.lse"));
    baatt_device_buffer_destroy(b);
    baatt_plan_destroy(plan);
    c.lse = 2;
    th_expect_plan_error(c, BAATT_ERROR_INVALID_ARGUMENT, "lse 2");
    assert_int_equal(baatt_plan_read_lse(NULL, lse), BAATT_ERROR_INVALID_ARGUMENT);
}

/* The reference LSE where it is known: all scores 0 gives ln(keys attended). */
static void reference_lse_known(void **s)
{
    (void)s;
    baatt_config c = make(1, 2, 1, 100, 150, 64, BAATT_DTYPE_F32, 0);
    c.block_size = 32, c.norm_sort = BAATT_SORT_OFF;
    float *zeros = calloc(150 * 64 * 2, 4), lse[200];
    uint32_t nq = baatt_config_q_blocks(&c), nk = baatt_config_k_blocks(&c); /* 4 x 5, last key block 22 */
    uint8_t mask[2 * 4 * 5] = {0};
    for (uint32_t i = 0; i < 2 * nq; i++) mask[i * nk + i % nk] = 1, mask[i * nk + nk - 1] = 1;
    assert_int_equal(baatt_reference_lse(&c, zeros, zeros, NULL, NULL, mask, lse), BAATT_OK);
    for (uint32_t r = 0; r < 200; r++) {
        uint32_t i = r / 100 * nq + r % 100 / 32, keys = i % nk == nk - 1 ? 22 : 32 + 22;
        assert_true(fabs(lse[r] - log(keys)) < 1e-6);
    }
    assert_int_equal(baatt_reference_lse(&c, zeros, zeros, NULL, NULL, NULL, lse), BAATT_OK);
    for (uint32_t r = 0; r < 200; r++) assert_true(fabs(lse[r] - log(150.0)) < 1e-6);
    free(zeros);
}

/* K and V rows [first, first + n) of every kv head, as a tensor of kv_len n. */
static void *key_slice(const baatt_config *c, const void *x, uint32_t first, uint32_t n)
{
    size_t es = baatt_dtype_size(c->dtype), row = es * c->head_dim;
    char *out = malloc((size_t)c->batch * c->kv_heads * n * row);
    for (size_t h = 0; h < (size_t)c->batch * c->kv_heads; h++)
        memcpy(out + h * n * row, (const char *)x + (h * c->kv_len + first) * row, n * row);
    return out;
}

/* Attention over all keys = the merge of the attentions over two halves, on the reference
 * (fp64 in, fp32 out: agreement to fp32 rounding) and on the GPU (dense plans). */
static void merge_halves(baatt_config c, int gpu)
{
    uint64_t rng = th_seed() ^ 0x3E6 ^ ((uint64_t)gpu << 40) ^ c.dtype;
    inputs in = make_inputs(&c, &rng);
    uint32_t h = c.kv_len / 3; /* unequal parts */
    baatt_config c1 = c, c2 = c;
    c1.kv_len = h, c2.kv_len = c.kv_len - h;
    void *k1 = key_slice(&c, in.k, 0, h), *v1 = key_slice(&c, in.v, 0, h);
    void *k2 = key_slice(&c, in.k, h, c2.kv_len), *v2 = key_slice(&c, in.v, h, c2.kv_len);
    size_t es = baatt_dtype_size(c.dtype);
    float *o[3], *l[3];
    const baatt_config *cs[3] = {&c1, &c2, &c};
    const void *ks[3] = {k1, k2, in.k}, *vs[3] = {v1, v2, in.v};
    double atol = 2e-6, lt = 2e-6;
    for (int i = 0; i < 3; i++) {
        l[i] = malloc(4 * in.rows);
        th_poison(l[i], BAATT_DTYPE_F32, in.rows);
        if (!gpu) {
            o[i] = malloc(4 * in.qn);
            assert_int_equal(baatt_reference_attention(cs[i], in.q, ks[i], vs[i], o[i]), BAATT_OK);
            assert_int_equal(baatt_reference_lse(cs[i], in.q, ks[i], NULL, NULL, NULL, l[i]), BAATT_OK);
            continue;
        }
        void *raw = malloc(es * in.qn);
        th_poison(raw, c.dtype, in.qn);
        baatt_plan *plan = plan_or_skip(cs[i]);
        assert_int_equal(baatt_plan_run_host(plan, in.q, ks[i], vs[i], raw), BAATT_OK);
        assert_int_equal(baatt_plan_read_lse(plan, l[i]), BAATT_OK);
        lt = th_lse_atol(baatt_plan_path(plan, BAATT_STAGE_ATTEND), c.dtype);
        baatt_plan_destroy(plan);
        o[i] = th_to_float(raw, c.dtype, in.qn);
        free(raw);
    }
    if (gpu) { /* each GPU output is rounded to its dtype: the merge adds two such errors */
        double rtol;
        th_tolerance(c.dtype, &atol, &rtol);
        atol = 2 * (atol + rtol * 4); /* |O| < 4 for these N(0, 1) values */
    }
    float *mo = malloc(4 * in.qn), *ml = malloc(4 * in.rows);
    assert_int_equal(baatt_lse_merge(in.rows, c.head_dim, o[0], l[0], o[1], l[1], mo, ml), BAATT_OK);
    assert_true(th_compare(mo, o[2], in.qn, atol, 0, "merged O") <= 1.0);
    assert_true(th_compare(ml, l[2], in.rows, 2 * lt, 1e-6, "merged LSE") <= 1.0);
    /* in place, into the first part */
    assert_int_equal(baatt_lse_merge(in.rows, c.head_dim, o[0], l[0], o[1], l[1], o[0], l[0]), BAATT_OK);
    assert_memory_equal(o[0], mo, 4 * in.qn);
    assert_memory_equal(l[0], ml, 4 * in.rows);
    for (int i = 0; i < 3; i++) free(o[i]), free(l[i]);
    free(mo), free(ml), free(k1), free(v1), free(k2), free(v2);
    free_inputs(&in);
}

static void merge_reference(void **s)
{
    (void)s;
    merge_halves(make(1, 4, 2, 50, 301, 64, BAATT_DTYPE_F32, 1), 0);
}

static void merge_gpu(void **s)
{
    (void)s;
    merge_halves(make(1, 4, 2, 70, 301, 64, BAATT_DTYPE_F32, 1), 1);
    merge_halves(make(1, 2, 1, 65, 390, 128, BAATT_DTYPE_F16, 1), 1);
}

/* A part with no keys (lse -inf) leaves the other; two give zeros and -inf. */
static void merge_empty_parts(void **s)
{
    (void)s;
    float o1[2] = {1, 2}, o2[2] = {5, 7}, l1[1] = {-INFINITY}, l2[1] = {0.5f}, o[2], l[1];
    assert_int_equal(baatt_lse_merge(1, 2, o1, l1, o2, l2, o, l), BAATT_OK);
    assert_true(o[0] == 5 && o[1] == 7 && l[0] == 0.5f);
    l2[0] = -INFINITY;
    assert_int_equal(baatt_lse_merge(1, 2, o1, l1, o2, l2, o, l), BAATT_OK);
    assert_true(o[0] == 0 && o[1] == 0 && l[0] == -INFINITY);
    assert_int_equal(baatt_lse_merge(1, 2, NULL, l1, o2, l2, o, l), BAATT_ERROR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lse_dense),          cmocka_unit_test(lse_sparse), cmocka_unit_test(lse_reused_selection),
        cmocka_unit_test(lse_device_buffers), cmocka_unit_test(lse_errors), cmocka_unit_test(reference_lse_known),
        cmocka_unit_test(merge_reference),    cmocka_unit_test(merge_gpu),  cmocka_unit_test(merge_empty_parts),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
