/* Dense attention on the GPU against the CPU reference: fresh random inputs, NaN-poisoned outputs,
 * odd lengths, q_len != kv_len, batch, GQA, fp16, head_dim 64 and 128; plus plan validation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* Tolerances by dtype: see th_tolerance. */
static void check_dense(baatt_config cfg)
{
    uint64_t rng = th_seed() ^ ((uint64_t)cfg.q_len << 32) ^ cfg.kv_len ^ ((uint64_t)cfg.heads << 16);
    size_t qn = (size_t)cfg.batch * cfg.heads * cfg.q_len * cfg.head_dim;
    size_t kn = (size_t)cfg.batch * cfg.kv_heads * cfg.kv_len * cfg.head_dim;
    void *q = th_random_tensor(&rng, cfg.dtype, qn, 1.0f);
    void *k = th_random_tensor(&rng, cfg.dtype, kn, 1.0f);
    void *v = th_random_tensor(&rng, cfg.dtype, kn, 1.0f);
    void *o = malloc(qn * baatt_dtype_size(cfg.dtype));
    float *ref = malloc(qn * sizeof *ref);
    th_poison(o, cfg.dtype, qn);
    baatt_plan *plan = NULL;
    baatt_status s = baatt_plan_create(th_ctx, &cfg, &plan);
    if (s == BAATT_ERROR_MISSING_FEATURE && cfg.dtype != BAATT_DTYPE_F32) {
        baatt_plan_destroy(plan);
        free(q), free(k), free(v), free(o), free(ref);
        skip(); /* reported as SKIPPED by cmocka: the device lacks fp16 storage */
    }
    assert_int_equal(s, BAATT_OK);
    assert_int_equal(baatt_plan_run_host(plan, q, k, v, o), BAATT_OK);
    assert_int_equal(baatt_reference_attention(&cfg, q, k, v, ref), BAATT_OK);
    float *got = th_to_float(o, cfg.dtype, qn);
    double atol, rtol;
    th_tolerance(cfg.dtype, &atol, &rtol);
    char label[128];
    snprintf(label, sizeof label, "dense b%u h%u/%u q%u k%u d%u %s", cfg.batch, cfg.heads, cfg.kv_heads, cfg.q_len,
             cfg.kv_len, cfg.head_dim, baatt_dtype_name(cfg.dtype));
    assert_true(th_compare(got, ref, qn, atol, rtol, label) <= 1.0);
    free(got);
    baatt_run_stats st;
    assert_int_equal(baatt_plan_stats(plan, &st), BAATT_OK);
    assert_true(st.sparsity == 0.0);
    baatt_plan_destroy(plan);
    free(q), free(k), free(v), free(o), free(ref);
}

static baatt_config shape(uint32_t b, uint32_t h, uint32_t hkv, uint32_t nq, uint32_t nk, uint32_t d, baatt_dtype dt)
{
    baatt_config c = baatt_config_default();
    c.dense = 1;
    c.batch = b, c.heads = h, c.kv_heads = hkv, c.q_len = nq, c.kv_len = nk, c.head_dim = d, c.dtype = dt;
    return c;
}

static void dense_f32_d64(void **s)
{
    (void)s;
    check_dense(shape(1, 2, 2, 128, 128, 64, BAATT_DTYPE_F32));
}
static void dense_odd_lengths(void **s)
{
    (void)s;
    check_dense(shape(2, 2, 2, 77, 131, 64, BAATT_DTYPE_F32));
}
static void dense_gqa(void **s)
{
    (void)s;
    check_dense(shape(1, 4, 2, 65, 100, 64, BAATT_DTYPE_F32));
}
static void dense_mqa_d128(void **s)
{
    (void)s;
    check_dense(shape(1, 3, 1, 40, 300, 128, BAATT_DTYPE_F32));
}
static void dense_f16_d128(void **s)
{
    (void)s;
    check_dense(shape(1, 2, 1, 96, 257, 128, BAATT_DTYPE_F16));
}
static void dense_bf16_gqa(void **s)
{
    (void)s;
    check_dense(shape(2, 4, 2, 70, 129, 128, BAATT_DTYPE_BF16));
}
static void dense_f16_d64_single(void **s)
{
    (void)s;
    check_dense(shape(1, 1, 1, 1, 1, 64, BAATT_DTYPE_F16));
}
/* Lengths that are multiples of the tensor-core kernel's tiles (128 x 128 at head_dim 128, 64 x 64
 * at 64) on one side or both: its partial-tile code is compiled out per side there
 * (attention_cm2.comp FULL). */
static void dense_full_tiles(void **s)
{
    (void)s;
    check_dense(shape(1, 2, 1, 128, 192, 128, BAATT_DTYPE_F16));
    check_dense(shape(1, 2, 1, 128, 200, 128, BAATT_DTYPE_F16));
    check_dense(shape(1, 2, 1, 100, 256, 128, BAATT_DTYPE_F16));
    check_dense(shape(1, 2, 2, 64, 128, 128, BAATT_DTYPE_BF16));
    check_dense(shape(2, 4, 2, 256, 384, 128, BAATT_DTYPE_F16));
    check_dense(shape(1, 2, 1, 128, 256, 128, BAATT_DTYPE_BF16));
    /* head_dim 64: 64 x 64 tiles */
    check_dense(shape(1, 2, 1, 64, 192, 64, BAATT_DTYPE_F16));
    check_dense(shape(1, 2, 1, 128, 200, 64, BAATT_DTYPE_F16));
}

/* A custom scale reaches the kernel: compare with the reference at the same scale. */
static void dense_custom_scale(void **s)
{
    (void)s;
    baatt_config c = shape(1, 1, 1, 33, 70, 64, BAATT_DTYPE_F32);
    c.scale = 0.5f;
    check_dense(c);
}

static void bad_configs(void **s)
{
    (void)s;
    baatt_config c = shape(1, 2, 2, 64, 64, 64, BAATT_DTYPE_F32);
    baatt_config z = c;
    z.q_len = 0;
    th_expect_plan_error(z, BAATT_ERROR_BAD_SHAPE, "q_len=0");
    z = c, z.heads = 3;
    th_expect_plan_error(z, BAATT_ERROR_GQA_MISMATCH, "kv_heads");
    z = c, z.head_dim = 80;
    th_expect_plan_error(z, BAATT_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim 80");
    z = c, z.scale = -1.0f;
    th_expect_plan_error(z, BAATT_ERROR_BAD_SCALE, "scale");
    z = c, z.dtype = (baatt_dtype)7;
    th_expect_plan_error(z, BAATT_ERROR_UNSUPPORTED_DTYPE, "dtype");
    z = c, z.heads = z.kv_heads = 32, z.q_len = z.kv_len = 1u << 20, z.head_dim = 128;
    th_expect_plan_error(z, BAATT_ERROR_TOO_LARGE, "2^31-1");
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, NULL, &plan), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_create(NULL, &c, &plan), BAATT_ERROR_INVALID_ARGUMENT);
}

/* A problem within the element-count limit whose tensors exceed this device's largest storage
 * buffer (128 MiB on lavapipe) is refused at plan creation, naming the buffer. */
static void too_large_for_device(void **s)
{
    (void)s;
    baatt_device_info dev;
    assert_int_equal(baatt_context_device_info(th_ctx, &dev), BAATT_OK);
    baatt_config c = shape(1, 16, 16, 1u << 16, 1u << 16, 64, BAATT_DTYPE_F32);
    uint64_t bytes = 4ull * c.heads * c.q_len * c.head_dim;
    if (bytes <= dev.max_storage_buffer_range) skip(); /* the device takes it: nothing to refuse */
    c.dense = 0;
    baatt_plan *plan = NULL;
    baatt_status st = baatt_plan_create(th_ctx, &c, &plan);
    if (st == BAATT_OK) { /* scratch fits: the tensors themselves are refused at the first run */
        float one = 0;
        st = baatt_plan_run_host(plan, &one, &one, &one, &one);
        baatt_plan_destroy(plan);
    }
    assert_int_equal(st, BAATT_ERROR_TOO_LARGE);
    assert_non_null(strstr(baatt_context_error(th_ctx), "buffer limit"));
}

static void results_before_run(void **s)
{
    (void)s;
    baatt_config c = shape(1, 1, 1, 64, 64, 64, BAATT_DTYPE_F32);
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
    baatt_run_stats st;
    assert_int_equal(baatt_plan_stats(plan, &st), BAATT_ERROR_NOT_READY);
    uint8_t m[1];
    assert_int_equal(baatt_plan_read_mask(plan, m), BAATT_ERROR_NOT_READY);
    assert_int_equal(baatt_plan_run_host(plan, NULL, m, m, m), BAATT_ERROR_INVALID_ARGUMENT);
    baatt_plan_destroy(plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dense_f32_d64),  cmocka_unit_test(dense_odd_lengths),  cmocka_unit_test(dense_gqa),
        cmocka_unit_test(dense_mqa_d128), cmocka_unit_test(dense_f16_d128),     cmocka_unit_test(dense_f16_d64_single),
        cmocka_unit_test(dense_bf16_gqa), cmocka_unit_test(dense_full_tiles),   cmocka_unit_test(dense_custom_scale),
        cmocka_unit_test(bad_configs),    cmocka_unit_test(results_before_run), cmocka_unit_test(too_large_for_device),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
