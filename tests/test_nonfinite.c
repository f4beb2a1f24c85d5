/* Non-finite inputs (docs/RELIABILITY.md): a NaN block logit ranks above every number and
 * carries no softmax mass, so a key block holding a NaN or an infinity (its variance is NaN) is
 * selected by every query row, and BA-Att's output is poisoned exactly where dense attention's is.
 * Checked on the GPU in both selection modes (the CMake variants run every select build) against
 * the CPU reference: the mask must equal the reference's, the NaN pattern of the sparse output
 * must equal the dense output's, and the finite elements must match the reference's.
 * Sorting is off so the blocks are known (a NaN norm has no meaningful sort position). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "internal.h"

enum { BLOCK = 32, NK = 8, NQ = 3, D = 64 };
/* Outputs are poisoned with a finite sentinel: NaN is an expected result here. */
#define POISON 12345.0f

typedef enum bad_input { NAN_IN_K, INF_IN_K, NAN_IN_Q } bad_input;

static baatt_config config(baatt_select_mode mode)
{
    baatt_config c = baatt_config_default();
    c.batch = 1, c.heads = 2, c.kv_heads = 1, c.head_dim = D;
    c.q_len = NQ * BLOCK, c.kv_len = NK * BLOCK, c.block_size = BLOCK;
    c.norm_sort = BAATT_SORT_OFF;
    c.select_mode = mode;
    c.keep_ratio = 0.5f;
    c.mass_threshold = 0.5f;
    return c;
}

/* Runs c (dense or not) on the GPU; returns the output as floats. mask: NULL or rows * NK. */
static float *gpu_run(const baatt_config *c, const void *q, const void *k, const void *v, uint8_t *mask)
{
    size_t qn = (size_t)c->heads * c->q_len * D;
    float *o = malloc(qn * sizeof *o);
    for (size_t i = 0; i < qn; i++) o[i] = POISON;
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, c, &plan), BAATT_OK);
    assert_int_equal(baatt_plan_run_host(plan, q, k, v, o), BAATT_OK);
    if (mask) assert_int_equal(baatt_plan_read_mask(plan, mask), BAATT_OK);
    baatt_plan_destroy(plan);
    for (size_t i = 0; i < qn; i++) assert_true(o[i] != POISON);
    return o;
}

/* Row r of o (D elements) has a NaN. */
static int row_nan(const float *o, size_t r)
{
    for (size_t a = 0; a < D; a++)
        if (isnan(o[r * D + a])) return 1;
    return 0;
}

static void check(bad_input what, baatt_select_mode mode)
{
    baatt_config c = config(mode), cd = c;
    cd.dense = 1;
    uint64_t rng = th_seed() ^ 0x4e614eu;
    size_t qn = (size_t)c.heads * c.q_len * D, kn = (size_t)c.kv_len * D;
    float *q = th_random_tensor(&rng, c.dtype, qn, 1.0f), *k = th_random_tensor(&rng, c.dtype, kn, 1.0f);
    float *v = th_random_tensor(&rng, c.dtype, kn, 1.0f);
    const uint32_t bad_block = 5, bad_row = 40; /* row 40: query block 1 of head 0 */
    if (what == NAN_IN_K) k[(bad_block * BLOCK + 3) * D + 7] = NAN;
    if (what == INF_IN_K) k[(bad_block * BLOCK + 9) * D + 2] = INFINITY;
    if (what == NAN_IN_Q) q[bad_row * D + 11] = NAN;
    uint32_t rows = c.heads * NQ;
    uint8_t mask[2 * NQ * NK], ref_mask[2 * NQ * NK];
    float *o = gpu_run(&c, q, k, v, mask), *od = gpu_run(&cd, q, k, v, NULL);
    float *ro = malloc(qn * sizeof *ro);
    assert_int_equal(baatt_reference_baatt(&c, q, k, v, ro, ref_mask, NULL, NULL), BAATT_OK);
    assert_memory_equal(mask, ref_mask, sizeof mask);
    for (uint32_t r = 0; r < rows; r++) {
        uint32_t sel = 0;
        for (uint32_t j = 0; j < NK; j++) sel += mask[r * NK + j];
        if (what != NAN_IN_Q) assert_int_equal(mask[r * NK + bad_block], 1); /* never dropped */
        /* A row of NaN logits (query block 1 under NAN_IN_Q): the lowest-numbered blocks, as
         * many as the mode takes with no finite mass (keep: 4; threshold: the minimum, 1). */
        if (what == NAN_IN_Q && r == 1)
            for (uint32_t j = 0; j < NK; j++)
                assert_int_equal(mask[r * NK + j], j < (mode == BAATT_SELECT_KEEP_RATIO ? NK / 2 : 1u));
        assert_true(sel >= 1);
    }
    size_t nan_rows = 0;
    for (size_t r = 0; r < qn / D; r++) {
        assert_int_equal(row_nan(o, r), row_nan(od, r)); /* sparse poisoned exactly where dense is */
        assert_int_equal(row_nan(o, r), row_nan(ro, r));
        nan_rows += row_nan(o, r);
        for (size_t a = 0; a < D; a++)
            if (!isnan(ro[r * D + a]))
                assert_true(fabs(o[r * D + a] - ro[r * D + a]) <= 2e-5 + 2e-5 * fabs(ro[r * D + a]));
    }
    /* NaN in K reaches every query row; in Q only its own row. */
    if (what == NAN_IN_K) assert_int_equal(nan_rows, qn / D);
    if (what == NAN_IN_Q) assert_int_equal(nan_rows, 1);
    if (what == INF_IN_K) assert_true(nan_rows >= 1);
    free(q), free(k), free(v), free(o), free(od), free(ro);
}

static void nan_k_keep(void **s)
{
    (void)s;
    check(NAN_IN_K, BAATT_SELECT_KEEP_RATIO);
}
static void nan_k_threshold(void **s)
{
    (void)s;
    check(NAN_IN_K, BAATT_SELECT_MASS_THRESHOLD);
}
static void inf_k_keep(void **s)
{
    (void)s;
    check(INF_IN_K, BAATT_SELECT_KEEP_RATIO);
}
static void inf_k_threshold(void **s)
{
    (void)s;
    check(INF_IN_K, BAATT_SELECT_MASS_THRESHOLD);
}
static void nan_q_keep(void **s)
{
    (void)s;
    check(NAN_IN_Q, BAATT_SELECT_KEEP_RATIO);
}
static void nan_q_threshold(void **s)
{
    (void)s;
    check(NAN_IN_Q, BAATT_SELECT_MASS_THRESHOLD);
}

/* The CPU rule alone: NaN first (ties by index), no mass; a row without finite mass selects the
 * minimum. */
static void reference_rule(void **s)
{
    (void)s;
    float l[6] = {1.0f, NAN, 3.0f, -NAN, 2.0f, 0.5f};
    int32_t order[6], tmp[6];
    baatt_argsort_desc(l, 6, order, tmp);
    const int32_t want[6] = {1, 3, 2, 4, 0, 5};
    assert_memory_equal(order, want, sizeof want);
    assert_int_equal(baatt_mass_prefix(l, order, 6, 0.5), 3); /* NaN, NaN, then 3.0 (mass 0.63) */
    float all_nan[3] = {NAN, NAN, NAN};
    baatt_argsort_desc(all_nan, 3, order, tmp);
    assert_int_equal(baatt_mass_prefix(all_nan, order, 3, 0.5), 0);
}

/* The opt-in check, in every dtype: the first NaN or infinity by index, or none. */
static void find_nonfinite(void **s)
{
    (void)s;
    const baatt_dtype dts[3] = {BAATT_DTYPE_F32, BAATT_DTYPE_F16, BAATT_DTYPE_BF16};
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int d = 0; d < 3; d++)
        for (int b = 0; b < 3; b++) {
            uint64_t rng = th_seed() ^ (uint64_t)(d * 3 + b), first = 7;
            void *x = th_random_tensor(&rng, dts[d], 1000, 1e3f);
            assert_int_equal(baatt_find_nonfinite(x, dts[d], 1000, &first), BAATT_OK);
            assert_int_equal(first, 1000);
            baatt_store(x, dts[d], 617, bad[b]);
            baatt_store(x, dts[d], 900, NAN);
            assert_int_equal(baatt_find_nonfinite(x, dts[d], 1000, &first), BAATT_ERROR_NONFINITE_INPUT);
            assert_int_equal(first, 617);
            assert_int_equal(baatt_find_nonfinite(x, dts[d], 617, NULL), BAATT_OK);
            free(x);
        }
    assert_int_equal(baatt_find_nonfinite(NULL, BAATT_DTYPE_F32, 0, NULL), BAATT_OK);
    assert_int_equal(baatt_find_nonfinite(NULL, BAATT_DTYPE_F32, 1, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_find_nonfinite(bad, (baatt_dtype)9, 1, NULL), BAATT_ERROR_UNSUPPORTED_DTYPE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(find_nonfinite),  cmocka_unit_test(reference_rule),  cmocka_unit_test(nan_k_keep),
        cmocka_unit_test(nan_k_threshold), cmocka_unit_test(inf_k_keep),      cmocka_unit_test(inf_k_threshold),
        cmocka_unit_test(nan_q_keep),      cmocka_unit_test(nan_q_threshold),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
