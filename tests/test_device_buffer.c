/* The public entry points the CLI runs on: device buffers (bytes round-trip at an offset, bad
 * ranges and sizes rejected with a message), baatt_plan_run_buffers (bit-identical to run_host on
 * the same inputs, every output element written), baatt_plan_path's documented names, and
 * baatt_dtype_convert. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void buffer_round_trip(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0xB0F;
    enum { N = 3000 };
    uint8_t src[N], back[N], seg[100];
    for (int i = 0; i < N; i++) src[i] = (uint8_t)th_next(&rng);
    baatt_device_buffer *b = NULL;
    assert_int_equal(baatt_device_buffer_create(th_ctx, N, &b), BAATT_OK);
    assert_non_null(baatt_device_buffer_tensor(b).buffer);
    assert_int_equal(baatt_device_buffer_write(b, 0, src, N), BAATT_OK);
    memset(back, 0, N);
    assert_int_equal(baatt_device_buffer_read(b, 0, back, N), BAATT_OK);
    assert_memory_equal(src, back, N);
    memset(seg, 0x5A, sizeof seg);
    assert_int_equal(baatt_device_buffer_write(b, 1234, seg, sizeof seg), BAATT_OK);
    assert_int_equal(baatt_device_buffer_read(b, 1200, back, 200), BAATT_OK);
    assert_memory_equal(back, src + 1200, 34);
    assert_memory_equal(back + 34, seg, sizeof seg);
    assert_memory_equal(back + 134, src + 1334, 66);
    baatt_device_buffer_destroy(b);
}

static void buffer_errors(void **s)
{
    (void)s;
    baatt_device_buffer *b = (baatt_device_buffer *)0x1;
    assert_int_equal(baatt_device_buffer_create(th_ctx, 0, &b), BAATT_ERROR_BAD_SHAPE);
    assert_null(b);
    baatt_device_info info;
    assert_int_equal(baatt_context_device_info(th_ctx, &info), BAATT_OK);
    assert_int_equal(baatt_device_buffer_create(th_ctx, info.max_storage_buffer_range + 1, &b), BAATT_ERROR_TOO_LARGE);
    assert_non_null(strstr(baatt_context_error(th_ctx), "storage-buffer range"));
    assert_int_equal(baatt_device_buffer_create(th_ctx, 64, &b), BAATT_OK);
    uint8_t x[65] = {0};
    assert_int_equal(baatt_device_buffer_write(b, 1, x, 64), BAATT_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(baatt_context_error(th_ctx), "outside the 64-byte buffer"));
    assert_int_equal(baatt_device_buffer_read(b, 65, x, 0), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_device_buffer_read(b, 0, NULL, 8), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_device_buffer_read(b, 64, x, 0), BAATT_OK); /* an empty range at the end */
    assert_int_equal(baatt_device_buffer_write(NULL, 0, x, 1), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_run_buffers(NULL, b, b, b, b), BAATT_ERROR_INVALID_ARGUMENT);
    baatt_device_buffer_destroy(b);
    baatt_device_buffer_destroy(NULL);
}

static baatt_config small_config(baatt_dtype dt)
{
    baatt_config c = baatt_config_default();
    c.batch = 1, c.heads = 2, c.kv_heads = 1, c.q_len = 200, c.kv_len = 150, c.head_dim = 64, c.dtype = dt;
    return c;
}

/* The same plan on host arrays and on device buffers: same kernels, same inputs, same bits. */
static void run_buffers_matches_host(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0xB1F;
    baatt_dtype dts[2] = {BAATT_DTYPE_F32, BAATT_DTYPE_F16};
    for (int t = 0; t < 2; t++) {
        baatt_config c = small_config(dts[t]);
        size_t es = baatt_dtype_size(c.dtype), qn = (size_t)c.heads * c.q_len * 64, kn = (size_t)c.kv_len * 64;
        void *q = th_random_tensor(&rng, c.dtype, qn, 1), *k = th_random_tensor(&rng, c.dtype, kn, 1);
        void *v = th_random_tensor(&rng, c.dtype, kn, 1), *oh = malloc(qn * es), *od = malloc(qn * es);
        assert_true(oh && od);
        th_poison(oh, c.dtype, qn);
        th_poison(od, c.dtype, qn);
        baatt_plan *plan = NULL;
        assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
        assert_int_equal(baatt_plan_run_host(plan, q, k, v, oh), BAATT_OK);
        baatt_device_buffer *bq, *bk, *bv, *bo;
        assert_int_equal(baatt_device_buffer_create(th_ctx, qn * es, &bq), BAATT_OK);
        assert_int_equal(baatt_device_buffer_create(th_ctx, kn * es, &bk), BAATT_OK);
        assert_int_equal(baatt_device_buffer_create(th_ctx, kn * es, &bv), BAATT_OK);
        assert_int_equal(baatt_device_buffer_create(th_ctx, qn * es, &bo), BAATT_OK);
        assert_int_equal(baatt_device_buffer_write(bq, 0, q, qn * es), BAATT_OK);
        assert_int_equal(baatt_device_buffer_write(bk, 0, k, kn * es), BAATT_OK);
        assert_int_equal(baatt_device_buffer_write(bv, 0, v, kn * es), BAATT_OK);
        assert_int_equal(baatt_device_buffer_write(bo, 0, od, qn * es), BAATT_OK); /* NaN everywhere */
        /* K's buffer where Q's belongs: too small, refused before any work */
        assert_int_equal(baatt_plan_run_buffers(plan, bk, bk, bv, bo), qn > kn ? BAATT_ERROR_BAD_SHAPE : BAATT_OK);
        if (qn > kn) assert_non_null(strstr(baatt_context_error(th_ctx), "buffer q holds"));
        assert_int_equal(baatt_plan_run_buffers(plan, bq, bk, bv, bo), BAATT_OK);
        assert_int_equal(baatt_device_buffer_read(bo, 0, od, qn * es), BAATT_OK);
        float *f = th_to_float(od, c.dtype, qn);
        for (size_t i = 0; i < qn; i++) assert_true(isfinite(f[i]));
        free(f);
        assert_memory_equal(oh, od, qn * es);
        baatt_run_stats st;
        assert_int_equal(baatt_plan_stats(plan, &st), BAATT_OK);
        assert_int_equal(st.selected_blocks, 2 * 4 * 2); /* heads x query blocks x ceil(0.5 * 3) */
        assert_true(st.sparsity > 0 && st.sparsity < 0.5);
        baatt_device_buffer_destroy(bq), baatt_device_buffer_destroy(bk);
        baatt_device_buffer_destroy(bv), baatt_device_buffer_destroy(bo);
        baatt_plan_destroy(plan);
        free(q), free(k), free(v), free(oh), free(od);
    }
}

static int one_of(const char *s, const char *const *names)
{
    for (; s && *names; names++)
        if (!strcmp(s, *names)) return 1;
    return 0;
}

static void plan_paths(void **s)
{
    (void)s;
    static const char *const sorts[] = {"bitonic", "radix", "radix (q), bitonic (k)", "bitonic (q), radix (k)", NULL};
    static const char *const scores[] = {"nv-coopmat2-bf16", "scalar", NULL};
    static const char *const selects[] = {"row", "subgroup", "shared", NULL};
    static const char *const attends[] = {"nv-coopmat2", "khr-coopmat", "portable", NULL};
    baatt_config c = small_config(BAATT_DTYPE_F32);
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
    assert_true(one_of(baatt_plan_path(plan, BAATT_STAGE_SORT), sorts));
    assert_string_equal(baatt_plan_path(plan, BAATT_STAGE_STATS), "stats");
    assert_true(one_of(baatt_plan_path(plan, BAATT_STAGE_SCORE), scores));
    assert_true(one_of(baatt_plan_path(plan, BAATT_STAGE_SELECT), selects));
    assert_true(one_of(baatt_plan_path(plan, BAATT_STAGE_ATTEND), attends));
    assert_string_equal(baatt_plan_path(plan, BAATT_STAGE_ATTEND), "portable"); /* fp32 has no tensor-core kernel */
    assert_null(baatt_plan_path(plan, BAATT_STAGE_COUNT));
    assert_null(baatt_plan_path(plan, -1));
    assert_null(baatt_plan_path(NULL, BAATT_STAGE_SORT));
    baatt_plan_destroy(plan);
    c.norm_sort = BAATT_SORT_OFF;
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
    assert_string_equal(baatt_plan_path(plan, BAATT_STAGE_SORT), "none");
    baatt_plan_destroy(plan);
    c.dense = 1; /* a dense plan runs only the attention */
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
    for (int st = 0; st < BAATT_STAGE_ATTEND; st++) assert_string_equal(baatt_plan_path(plan, st), "none");
    assert_string_equal(baatt_plan_path(plan, BAATT_STAGE_ATTEND), "portable");
    baatt_plan_destroy(plan);
}

static void dtype_convert(void **s)
{
    (void)s;
    float src[5] = {1.0f, -2.5f, 65504.0f, 1e-8f, NAN}, back[5];
    uint16_t h[5], b[5];
    assert_int_equal(baatt_dtype_convert(src, BAATT_DTYPE_F32, h, BAATT_DTYPE_F16, 5), BAATT_OK);
    assert_int_equal(baatt_dtype_convert(h, BAATT_DTYPE_F16, b, BAATT_DTYPE_BF16, 5), BAATT_OK);
    assert_int_equal(baatt_dtype_convert(b, BAATT_DTYPE_BF16, back, BAATT_DTYPE_F32, 5), BAATT_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(h[i], baatt_f32_to_f16(src[i]));
        assert_int_equal(b[i], baatt_f32_to_bf16(baatt_f16_to_f32(h[i])));
        float want = baatt_bf16_to_f32(b[i]);
        if (isnan(want)) assert_true(isnan(back[i]));
        else assert_float_equal(back[i], want, 0);
    }
    assert_int_equal(baatt_dtype_convert(src, (baatt_dtype)7, h, BAATT_DTYPE_F16, 5), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_dtype_convert(NULL, BAATT_DTYPE_F32, h, BAATT_DTYPE_F16, 5), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_dtype_convert(NULL, BAATT_DTYPE_F32, NULL, BAATT_DTYPE_F16, 0), BAATT_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buffer_round_trip),
        cmocka_unit_test(buffer_errors),
        cmocka_unit_test(run_buffers_matches_host),
        cmocka_unit_test(plan_paths),
        cmocka_unit_test(dtype_convert),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
