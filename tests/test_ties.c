/* Exact ties in the block logits on the GPU. Random inputs never tie, so the selection's tie path
 * (lower J first, docs/ALGORITHM.md step 4) needs inputs built to tie: with sorting off, every key
 * block is a copy of the same 32 tokens, so all key blocks of a row have bit-identical statistics
 * and logits, and the GPU must keep exactly the lowest-numbered blocks, in both selection modes,
 * and attend over them to the reference's output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "internal.h"

enum { BLOCK = 32, NK = 8, D = 64 };

static baatt_config tie_config(baatt_select_mode mode)
{
    baatt_config c = baatt_config_default();
    c.batch = 1, c.heads = 2, c.kv_heads = 1, c.head_dim = D;
    c.q_len = 3 * BLOCK, c.kv_len = NK * BLOCK, c.block_size = BLOCK;
    c.norm_sort = BAATT_SORT_OFF;
    c.select_mode = mode;
    c.keep_ratio = 0.5f;     /* 4 of 8 blocks */
    c.mass_threshold = 0.5f; /* 8 equal masses of 1/8: the shortest prefix reaching 0.5 is 4 */
    return c;
}

/* K and V: block 0's 32 random tokens repeated in every key block. */
static void *repeated_blocks(uint64_t *rng, const baatt_config *c)
{
    void *x = th_random_tensor(rng, c->dtype, (size_t)BLOCK * D, 1.0f);
    float *out = malloc((size_t)c->kv_len * D * sizeof *out);
    for (uint32_t j = 0; j < c->kv_len; j++)
        for (uint32_t a = 0; a < D; a++) out[(size_t)j * D + a] = baatt_load(x, c->dtype, (size_t)(j % BLOCK) * D + a);
    free(x);
    return out;
}

static void check_ties(baatt_select_mode mode)
{
    baatt_config c = tie_config(mode);
    uint64_t rng = th_seed() ^ 0x7135u;
    size_t qn = (size_t)c.heads * c.q_len * D;
    void *q = th_random_tensor(&rng, c.dtype, qn, 1.0f);
    void *k = repeated_blocks(&rng, &c), *v = repeated_blocks(&rng, &c);
    void *o = malloc(qn * sizeof(float));
    th_poison(o, c.dtype, qn);
    uint32_t nq = baatt_config_q_blocks(&c), rows = c.heads * nq;
    uint8_t *mask = malloc((size_t)rows * NK), *ref = malloc((size_t)rows * NK);
    memset(mask, 0xAA, (size_t)rows * NK);
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
    assert_int_equal(baatt_plan_run_host(plan, q, k, v, o), BAATT_OK);
    assert_int_equal(baatt_plan_read_mask(plan, mask), BAATT_OK);
    float *ro = malloc(qn * sizeof *ro);
    assert_int_equal(baatt_reference_baatt(&c, q, k, v, ro, ref, NULL, NULL), BAATT_OK);
    /* fp32 in and out: the GPU's fp32 dot products and online softmax against fp64 (helpers.h) */
    double atol, rtol;
    th_tolerance(c.dtype, &atol, &rtol);
    assert_true(th_compare(o, ro, qn, atol, rtol, "tied output") <= 1);
    free(ro);
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t j = 0; j < NK; j++) {
            if (mask[r * NK + j] != (j < NK / 2)) fprintf(stderr, "row %u block %u: got %u\n", r, j, mask[r * NK + j]);
            assert_int_equal(mask[r * NK + j], j < NK / 2);
        }
    assert_memory_equal(mask, ref, (size_t)rows * NK);
    baatt_plan_destroy(plan);
    free(q), free(k), free(v), free(o), free(mask), free(ref);
}

static void ties_keep_ratio(void **s)
{
    (void)s;
    check_ties(BAATT_SELECT_KEEP_RATIO);
}
static void ties_threshold(void **s)
{
    (void)s;
    check_ties(BAATT_SELECT_MASS_THRESHOLD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(ties_keep_ratio), cmocka_unit_test(ties_threshold)};
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
