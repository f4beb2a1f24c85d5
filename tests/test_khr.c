/* The KHR cooperative-matrix attention kernel (attention_khr.comp) against the CPU reference:
 * dense and sparse, both block orders (sorted by norm, original order) and auto sort, GQA,
 * head_dim 64 and 128, 32/64/128-token blocks, partial tiles, fresh random inputs, outputs
 * poisoned, with the softmax in registers (where the accumulator layout allows it: required with
 * "require") and through shared memory; O and the log-sum-exp (cfg.lse, 2e-5 absolute: fp32 row statistics, see test_lse.c). Plans are tuned to attend=khr-coopmat, which caps the path at the KHR kernel.
 * Usage: test_khr [bf16] [require]. fp16 by default; "bf16" runs the bf16 variant (a second ctest
 * entry, test_khr_bf16). Skips (exit 77) where the device or the build has no KHR kernel for the
 * dtype, unless "require" is given or BAATT_TEST_REQUIRE_KHR=1 (CI's Mesa 26 run, fp16 only:
 * lavapipe has no bf16), where that is a failure: the run must not pass with the kernel unexercised. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "choice.h"
#include "internal.h"
#include "plan.h"

static baatt_dtype dtype = BAATT_DTYPE_F16; /* main's argument */
static int shared_softmax;                  /* check's tuning: khr_softmax=shared */
static int layout_regs;                     /* the device's accumulator layout allows the register softmax */
static uint32_t tile_rows, tile_keys;       /* check's tuning: khr_tile (0: the chosen tile) */

static baatt_config make(uint32_t b, uint32_t h, uint32_t hkv, uint32_t nq, uint32_t nk, uint32_t d, uint32_t block,
                         int dense)
{
    baatt_config c = baatt_config_default();
    c.batch = b, c.heads = h, c.kv_heads = hkv, c.q_len = nq, c.kv_len = nk, c.head_dim = d;
    c.block_size = block, c.dense = dense, c.dtype = dtype, c.keep_ratio = 0.4f, c.lse = 1;
    return c;
}

/* Runs c on the KHR kernel and compares with the reference (sparse: on the plan's own
 * permutations and mask). */
static void check_one(baatt_config c)
{
    uint64_t rng = th_seed() ^ ((uint64_t)c.q_len << 32) ^ ((uint64_t)c.block_size << 20) ^ c.kv_len ^ c.norm_sort;
    size_t qn = (size_t)c.batch * c.heads * c.q_len * c.head_dim,
           kn = (size_t)c.batch * c.kv_heads * c.kv_len * c.head_dim;
    void *q = th_random_tensor(&rng, c.dtype, qn, 1.0f), *k = th_random_tensor(&rng, c.dtype, kn, 1.0f),
         *v = th_random_tensor(&rng, c.dtype, kn, 1.0f), *o = malloc(qn * 2);
    size_t rows = (size_t)c.batch * c.heads * c.q_len;
    float *lse = malloc(4 * rows), *ref_lse = malloc(4 * rows);
    th_poison(o, c.dtype, qn);
    th_poison(lse, BAATT_DTYPE_F32, rows);
    baatt_tuning t = th_tuning();
    t.attend = BAATT_ATTEND_KHR;
    t.khr_shared_softmax = shared_softmax;
    t.khr_rows = tile_rows, t.khr_keys = tile_keys;
    baatt_plan *plan = NULL;
    assert_int_equal(th_plan_create(&c, &t, &plan), BAATT_OK);
    assert_string_equal(baatt_plan_path(plan, BAATT_STAGE_ATTEND), "khr-coopmat");
    if (tile_rows) assert_true(plan->ch.attend.br == tile_rows && plan->ch.attend.bc == tile_keys);
    /* the softmax asked for ran (registers need one row fragment a subgroup: khr_mf 1) */
    assert_int_equal(plan->khr_rg != 0, layout_regs && !shared_softmax && plan->ch.attend.mf == 1);
    assert_int_equal(baatt_plan_run_host(plan, q, k, v, o), BAATT_OK);
    assert_int_equal(baatt_plan_read_lse(plan, lse), BAATT_OK);
    float *ref = malloc(4 * qn), *got = th_to_float(o, c.dtype, qn);
    if (c.dense) {
        assert_int_equal(baatt_reference_attention(&c, q, k, v, ref), BAATT_OK);
        assert_int_equal(baatt_reference_lse(&c, q, k, NULL, NULL, NULL, ref_lse), BAATT_OK);
    } else {
        uint32_t nq = baatt_config_q_blocks(&c), nk = baatt_config_k_blocks(&c);
        uint8_t *mask = malloc((size_t)c.batch * c.heads * nq * nk);
        int32_t *pq = malloc(4 * (size_t)c.batch * c.heads * c.q_len),
                *pk = malloc(4 * (size_t)c.batch * c.kv_heads * c.kv_len);
        assert_int_equal(baatt_plan_read_mask(plan, mask), BAATT_OK);
        assert_int_equal(baatt_plan_read_perms(plan, pq, pk), BAATT_OK);
        assert_int_equal(baatt_reference_sparse_attention(&c, q, k, v, pq, pk, mask, ref), BAATT_OK);
        assert_int_equal(baatt_reference_lse(&c, q, k, pq, pk, mask, ref_lse), BAATT_OK);
        free(mask), free(pq), free(pk);
    }
    /* th_tolerance: bf16 8e-3 absolute + 8e-3 relative. Beyond the reference (fp32 on the same
     * bf16 inputs; the kernel's scores are exact bf16 products summed in fp32), the kernel rounds
     * P to bf16 (each weight by at most 2^-9 relative, so O by at most 2^-9 max|V|, and far less
     * for weights of random sign) and O to bf16 (2^-9 relative): within it at these sizes. */
    double atol, rtol;
    th_tolerance(c.dtype, &atol, &rtol);
    char label[128];
    snprintf(label, sizeof label, "khr %s%s %ux%u %s b%u h%u/%u q%u k%u d%u block %u sort %d",
             baatt_dtype_name(c.dtype), shared_softmax ? " shared-softmax" : "", plan->ch.attend.br, plan->ch.attend.bc,
             c.dense ? "dense" : "sparse", c.batch, c.heads, c.kv_heads, c.q_len, c.kv_len, c.head_dim, c.block_size,
             (int)c.norm_sort);
    assert_true(th_compare(got, ref, qn, atol, rtol, label) <= 1.0);
    assert_true(th_compare(lse, ref_lse, rows, 2e-5, 1e-6, label) <= 1.0);
    baatt_plan_destroy(plan);
    free(q), free(k), free(v), free(o), free(ref), free(got), free(lse), free(ref_lse);
}

/* Both softmaxes: in registers (where the accumulator layout allows: required below) and
 * through shared memory. */
static void check(baatt_config c)
{
    for (shared_softmax = 0; shared_softmax < 2; shared_softmax++) check_one(c);
}

static void khr_dense(void **s)
{
    (void)s;
    check(make(1, 2, 2, 200, 333, 128, 64, 1)); /* partial query and key tiles */
    check(make(2, 4, 2, 130, 190, 64, 64, 1));  /* GQA, batch */
    check(make(1, 2, 1, 256, 256, 128, 64, 1)); /* whole tiles */
    check(make(1, 1, 1, 1, 77, 64, 64, 1));     /* one query row */
}

static void khr_sparse_orders(void **s)
{
    (void)s;
    const baatt_sort_mode sorts[] = {BAATT_SORT_NORM, BAATT_SORT_OFF, BAATT_SORT_AUTO};
    for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++) {
        baatt_config c = make(1, 4, 2, 300, 520, 128, 64, 0);
        c.norm_sort = sorts[i];
        check(c);
        c = make(2, 2, 1, 200, 333, 64, 32, 0);
        c.norm_sort = sorts[i];
        check(c);
    }
}

static void khr_sparse_block128(void **s)
{
    (void)s;
    check(make(1, 2, 2, 300, 520, 128, 128, 0)); /* several key tiles per block */
    check(make(1, 2, 2, 256, 512, 64, 128, 0));
}

/* A wider tile than the chosen one (an operator's khr_tile; the choice before NOTES #76): several
 * S fragments a subgroup and 4 subgroups, where the device takes it (else a visible skip). */
static void khr_wide_tile(void **s)
{
    (void)s;
    baatt_config dense = make(1, 2, 2, 200, 333, 128, 64, 1), sparse = make(1, 4, 2, 300, 520, 128, 64, 0);
    baatt_tuning t = th_tuning();
    t.attend = BAATT_ATTEND_KHR, t.khr_rows = 32, t.khr_keys = 32;
    baatt_choice ch;
    char msg[256];
    if (baatt_choose(baatt_context_caps(th_ctx), &sparse, &t, &ch, msg, sizeof msg) ||
        ch.attend.path != BAATT_ATTEND_KHR) {
        fprintf(stderr, "[ SKIP     ] khr_tile=32x32 does not fit this device's KHR kernel\n");
        skip();
    }
    tile_rows = tile_keys = 32;
    check(dense);
    check(sparse);
    tile_rows = tile_keys = 0;
}

/* Whether a plan of the dtype may run the KHR kernel here: the choice for a small dense plan
 * capped at it (device features, a listed shape of the dtype, the variant built); *regs: whether
 * its accumulator layout lets the softmax run in registers. */
static int has_khr(baatt_context *ctx, int *regs)
{
    baatt_config c = make(1, 1, 1, 64, 64, 64, 64, 1);
    baatt_tuning t = *baatt_context_tuning(ctx);
    t.attend = BAATT_ATTEND_KHR;
    baatt_choice ch;
    char msg[256];
    if (baatt_choose(baatt_context_caps(ctx), &c, &t, &ch, msg, sizeof msg) || ch.attend.path != BAATT_ATTEND_KHR)
        return 0;
    uint32_t rg = 0, rep = 0;
    if (baatt_khr_layout(ctx, ch.attend.shape, ch.attend.subgroup, &rg, &rep)) return 0;
    fprintf(stderr,
            "test_khr: %ux%ux%u at subgroup %u, accumulator row groups of %u lanes (element partition 0x%x), "
            "fp16 accumulator listed: %s\n",
            ch.attend.shape.m, ch.attend.shape.n, ch.attend.shape.k, ch.attend.subgroup, rg, rep,
            ch.attend.shape.c16 ? "yes" : "no");
    *regs = rg != 0;
    return 1;
}

int main(int argc, char **argv)
{
    int require = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "bf16")) dtype = BAATT_DTYPE_BF16;
        else if (!strcmp(argv[i], "require")) require = 1;
        else {
            fprintf(stderr, "test_khr: unknown argument \"%s\" (usage: test_khr [bf16] [require])\n", argv[i]);
            return 2;
        }
    }
    const char *req = getenv("BAATT_TEST_REQUIRE_KHR");
    require = require || (dtype == BAATT_DTYPE_F16 && req && !strcmp(req, "1"));
    baatt_context *ctx = th_context();
    int regs = 0, has = has_khr(ctx, &regs);
    layout_regs = regs;
    th_context_done(ctx);
    const char *dt = baatt_dtype_name(dtype);
    if (!has && require) {
        fprintf(stderr, "test_khr: the %s KHR kernel is required (%s) but the device or this build has none\n", dt,
                dtype == BAATT_DTYPE_F16 ? "\"require\" or BAATT_TEST_REQUIRE_KHR=1" : "\"require\"");
        return 1;
    }
    if (has && require && !regs) {
        fprintf(stderr, "test_khr: the register softmax is required with the kernel, but this device's accumulator "
                        "layout has no lane groups holding whole rows\n");
        return 1;
    }
    if (!has) {
        fprintf(stderr, "test_khr: SKIPPED: no %s KHR cooperative matrices on this device (or kernel not built)\n", dt);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(khr_dense),
        cmocka_unit_test(khr_sparse_orders),
        cmocka_unit_test(khr_sparse_block128),
        cmocka_unit_test(khr_wide_tile),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
