/* The path choice (src/choice.c and the stages' choose functions) on described devices, no GPU:
 * capability sets from the drivers' published properties (docs/DESIGN.md's device table), each
 * config landing on the expected kernels, tiles and sizes; the tuning string's strict parsing. */
#include "helpers.h"

#include <stdio.h>
#include <string.h>

#include "choice.h"
#include "internal.h"

enum {
    ALL_BUILT =
        BAATT_BUILT_CM2_F16 | BAATT_BUILT_CM2_BF16 | BAATT_BUILT_SCORE_CM2 | BAATT_BUILT_KHR_F16 | BAATT_BUILT_KHR_BF16
};
enum { F16 = BAATT_FEATURE_FP16_STORAGE | BAATT_FEATURE_FP16_ARITH };
enum { KHR = BAATT_FEATURE_COOPMAT_KHR | BAATT_FEATURE_SUBGROUP_SIZE_CONTROL };

static baatt_caps device(const char *name, uint32_t features, uint32_t sg, uint32_t sg_min, uint32_t sg_max,
                         uint32_t shared, uint32_t invocations, uint32_t groups_x)
{
    baatt_caps c = {.features = features,
                    .built = ALL_BUILT,
                    .subgroup_size = sg,
                    .subgroup_min = sg_min,
                    .subgroup_max = sg_max,
                    .subgroup_arith = 1,
                    .subgroup_ballot = 1,
                    .max_shared = shared,
                    .max_invocations = invocations,
                    .max_groups = {groups_x, 65535, 65535},
                    .max_buffer = 0xffffffffu};
    snprintf(c.name, sizeof c.name, "%s", name);
    return c;
}

/* The KHR cooperative-matrix shapes a driver lists (fp32 accumulation, subgroup scope). */
static baatt_caps with_shapes(baatt_caps c, const baatt_mma_shape *s, uint32_t n)
{
    memcpy(c.shapes, s, n * sizeof *s);
    c.nshapes = n;
    return c;
}
/* {m, n, k, bf16, c16}: NVIDIA, RADV and lavapipe 26 list fp16 accumulators of their fp16 shapes */
static const baatt_mma_shape NV_SHAPES[] = {
    {16, 16, 16, 0, 1}, {16, 8, 16, 0, 1}, {16, 8, 8, 0, 1}, {16, 16, 16, 1, 0}};

/* NVIDIA H100, driver 580: NV cooperative matrix (16x16x16) and 2, KHR shapes, bf16. */
static baatt_caps h100(void)
{
    return with_shapes(
        device("H100", F16 | KHR | BAATT_FEATURE_COOPMAT_NV | BAATT_FEATURE_COOPMAT2_NV | BAATT_FEATURE_BF16_COOPMAT,
               32, 32, 32, 49152, 1024, 0x7fffffffu),
        NV_SHAPES, 4);
}
/* An NVIDIA GPU (Turing or later) whose driver has KHR and NV cooperative matrices but not 2. */
static baatt_caps nvidia_no_cm2(void)
{
    return with_shapes(device("RTX 2080", F16 | KHR | BAATT_FEATURE_COOPMAT_NV, 32, 32, 32, 49152, 1024, 0x7fffffffu),
                       NV_SHAPES, 3);
}
/* ... an older driver of it: NV cooperative matrix only (subgroup scope: no kernel uses it, NOTES.md
 * #56; an embedding application may still report it enabled). */
static baatt_caps nvidia_old_driver(void)
{
    return device("RTX 2080 (old driver)", F16 | BAATT_FEATURE_COOPMAT_NV, 32, 32, 32, 49152, 1024, 0x7fffffffu);
}
/* AMD RDNA3 (RADV): KHR 16x16x16 only, wave32/64. */
static baatt_caps rdna3(void)
{
    return with_shapes(device("RX 7900 XTX (RADV)", F16 | KHR, 64, 32, 64, 65536, 1024, 0xffffffffu),
                       (baatt_mma_shape[]){{16, 16, 16, 0, 1}}, 1);
}
/* AMD RDNA4 (RADV): RDNA3's with bf16 16x16x16 (VK_KHR_shader_bfloat16). */
static baatt_caps rdna4(void)
{
    return with_shapes(
        device("RX 9070 XT (RADV)", F16 | KHR | BAATT_FEATURE_BF16_COOPMAT, 64, 32, 64, 65536, 1024, 0xffffffffu),
        (baatt_mma_shape[]){{16, 16, 16, 0, 1}, {16, 16, 16, 1, 0}}, 2);
}
/* Intel Xe2 (ANV, B580): KHR 8x16x16 at subgroup 16; sizes 16-32. */
static baatt_caps xe2(void)
{
    return with_shapes(device("Arc B580 (ANV)", F16 | KHR, 32, 16, 32, 65536, 1024, 0xffffffffu),
                       (baatt_mma_shape[]){{8, 16, 16, 0, 0}}, 1);
}
/* Intel Arc A-series (ANV): KHR 8x8x16 at subgroup 8; sizes 8-32. */
static baatt_caps arc_a(void)
{
    return with_shapes(device("Arc A770 (ANV)", F16 | KHR, 32, 8, 32, 65536, 1024, 0xffffffffu),
                       (baatt_mma_shape[]){{8, 8, 16, 0, 0}}, 1);
}
/* Mesa lavapipe 25 (CPU): subgroup 8, 32 KiB, no cooperative matrix, 65535 workgroups. */
static baatt_caps lavapipe(void) { return device("llvmpipe", F16, 8, 8, 8, 32768, 1024, 65535); }
/* Mesa lavapipe 26: the same with KHR 8x8x8 (queried: docs/PLATFORM.md). */
static baatt_caps lavapipe26(void)
{
    return with_shapes(device("llvmpipe (Mesa 26)", F16 | KHR, 8, 8, 8, 32768, 1024, 65535),
                       (baatt_mma_shape[]){{8, 8, 8, 0, 1}}, 1);
}
/* A device without subgroup arithmetic or ballots, 512 invocations. */
static baatt_caps no_subgroups(void)
{
    baatt_caps c = device("no subgroup ops", F16, 16, 16, 16, 32768, 512, 65535);
    c.subgroup_arith = c.subgroup_ballot = 0;
    return c;
}

static baatt_config shape(uint32_t n, uint32_t d, uint32_t block, baatt_dtype dt, int dense)
{
    baatt_config c = baatt_config_default();
    c.batch = 1, c.heads = 32, c.kv_heads = 32, c.q_len = c.kv_len = n, c.head_dim = d;
    c.block_size = block, c.dtype = dt, c.dense = dense;
    c.norm_sort = BAATT_SORT_NORM; /* the paths below are norm sort's; auto sort's are checked on their own */
    return c;
}

static baatt_choice choose(baatt_caps caps, baatt_config c, const baatt_tuning *t)
{
    baatt_tuning def = baatt_tuning_default();
    baatt_choice ch;
    char msg[256] = "";
    baatt_status s = baatt_choose(&caps, &c, t ? t : &def, &ch, msg, sizeof msg);
    if (s) fprintf(stderr, "%s: %s\n", caps.name, msg);
    assert_int_equal(s, BAATT_OK);
    return ch;
}

static void expect_attend(const baatt_choice *ch, baatt_attend_path path, uint32_t br, uint32_t bc, uint32_t wg)
{
    assert_string_equal(baatt_path_name(BAATT_STAGE_ATTEND, ch->attend.path),
                        baatt_path_name(BAATT_STAGE_ATTEND, path));
    assert_int_equal(ch->attend.br, br);
    assert_int_equal(ch->attend.bc, bc);
    assert_int_equal(ch->attend.wg, wg);
}

/* The KHR kernel with fragment shape m x n x k (bf16 or fp16 A/B) on subgroups of sg lanes. */
static void expect_khr_of(const baatt_choice *ch, int bf16, uint32_t m, uint32_t n, uint32_t k, uint32_t sg,
                          uint32_t br, uint32_t bc)
{
    expect_attend(ch, BAATT_ATTEND_KHR, br, bc, br / (ch->attend.mf * m) * sg);
    assert_int_equal(ch->attend.shape.m, m);
    assert_int_equal(ch->attend.shape.n, n);
    assert_int_equal(ch->attend.shape.k, k);
    assert_int_equal(ch->attend.shape.bf16, bf16);
    assert_int_equal(ch->attend.subgroup, sg);
}
static void expect_khr(const baatt_choice *ch, uint32_t m, uint32_t n, uint32_t k, uint32_t sg, uint32_t br,
                       uint32_t bc)
{
    expect_khr_of(ch, 0, m, n, k, sg, br, bc);
}

static void expect_sort(const baatt_choice *ch, baatt_sort_path q, baatt_sort_path k)
{
    assert_int_equal(ch->sort.side[0], q);
    assert_int_equal(ch->sort.side[1], k);
}

static void choice_h100(void **s)
{
    (void)s;
    baatt_choice ch = choose(h100(), shape(32768, 128, 64, BAATT_DTYPE_F16, 1), NULL);
    expect_attend(&ch, BAATT_ATTEND_CM2, 128, 128, 256);
    assert_int_equal(ch.attend.full, CM2_FULL_Q | CM2_FULL_K | CM2_FULL_O);
    assert_false(ch.attend.sorted);
    expect_sort(&ch, BAATT_SORTER_NONE, BAATT_SORTER_NONE);
    ch = choose(h100(), shape(32768 - 64, 128, 64, BAATT_DTYPE_F16, 1), NULL); /* partial tiles */
    expect_attend(&ch, BAATT_ATTEND_CM2, 128, 128, 256);
    assert_int_equal(ch.attend.full, 0);
    /* sparse, 64-token blocks, 128K: 64 x 64 tiles with the key bit, radix sort, tensor-core
     * score on whole tiles, a subgroup per selection row, sorted copies from the statistics */
    ch = choose(h100(), shape(131072, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_CM2, 64, 64, 128);
    assert_int_equal(ch.attend.full, CM2_FULL_K);
    assert_true(ch.attend.sorted && ch.stats.copy && ch.stats.split);
    expect_sort(&ch, BAATT_SORTER_RADIX, BAATT_SORTER_RADIX);
    assert_int_equal(ch.sort.radix_wg, 256);
    assert_int_equal(ch.score.path, BAATT_SCORE_CM2);
    assert_int_equal(ch.score.tile, 64);
    assert_int_equal(ch.score.kc, 64);
    assert_true(ch.score.full);
    assert_int_equal(ch.select.path, BAATT_SELECTOR_ROW);
    assert_int_equal(ch.select.rows, 8);
    /* the logits of a head (2048 x 2048 blocks = 16 MiB) fit the 128 MiB budget 8 times */
    assert_int_equal(ch.score.chunk_rows, 2048);
    assert_int_equal(ch.score.chunk_heads, 8);
    /* 128-token blocks on multiples of 128: 128 x 128 tiles, every FULL bit */
    ch = choose(h100(), shape(131072, 128, 128, BAATT_DTYPE_F16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_CM2, 128, 128, 256);
    assert_int_equal(ch.attend.full, CM2_FULL_Q | CM2_FULL_K | CM2_FULL_O);
    /* ... not multiples of 128: 64 x 64 */
    ch = choose(h100(), shape(131072 - 64, 128, 128, BAATT_DTYPE_F16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_CM2, 64, 64, 128);
    /* 16K: the bitonic sort in chunks of 4096 keys on 1024 invocations */
    ch = choose(h100(), shape(16384, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    expect_sort(&ch, BAATT_SORTER_BITONIC, BAATT_SORTER_BITONIC);
    assert_int_equal(ch.sort.wg, 1024);
    assert_int_equal(ch.sort.chunk, 4096);
    assert_int_equal(ch.sort.radix_wg, 0);
    /* 32-token blocks, head_dim 64: 32 x 32 tiles */
    ch = choose(h100(), shape(4096, 64, 32, BAATT_DTYPE_F16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_CM2, 32, 32, 64);
    /* bf16 on bf16 cooperative matrices; fp32 on the portable kernel (32 x 16 fits 48 KiB) */
    ch = choose(h100(), shape(4096, 128, 64, BAATT_DTYPE_BF16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_CM2, 64, 64, 128);
    ch = choose(h100(), shape(4096, 128, 64, BAATT_DTYPE_F32, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 32, 16, 64);
    assert_false(ch.attend.sorted || ch.stats.copy);
    assert_int_equal(ch.score.path, BAATT_SCORE_CM2); /* the logits' path does not depend on dtype */
    /* auto sort: the perms change after the statistics, so permute.comp makes the copies */
    baatt_config a = shape(4096, 128, 64, BAATT_DTYPE_F16, 0);
    a.norm_sort = BAATT_SORT_AUTO;
    ch = choose(h100(), a, NULL);
    assert_true(ch.auto_sort && ch.attend.sorted && !ch.stats.copy);
    assert_int_equal(ch.samples, AUTO_SAMPLE_ROWS);
    /* the candidates, in tie order (sorted, 1), (original, 1), (sorted, 0), (original, 0) */
    assert_int_equal(ch.cands.n, 4);
    assert_int_equal(ch.cands.sorted, 0x5);
    assert_int_equal(ch.cands.cov, 0x3);
    /* lambda chosen on a fixed sorted blocking: the perms stay, so the statistics still copy */
    a.norm_sort = BAATT_SORT_NORM;
    ch = choose(h100(), a, NULL);
    assert_true(ch.auto_sort && ch.stats.copy);
    assert_true(ch.cands.n == 2 && ch.cands.sorted == 0x3 && ch.cands.cov == 0x1);
    /* one candidate: no choice */
    a.covariance = BAATT_COVARIANCE_OFF;
    ch = choose(h100(), a, NULL);
    assert_true(!ch.auto_sort && ch.cands.n == 1 && ch.cands.sorted == 1 && ch.cands.cov == 0);
    /* threshold mode: a workgroup per row */
    a = shape(4096, 128, 64, BAATT_DTYPE_F16, 0);
    a.select_mode = BAATT_SELECT_MASS_THRESHOLD;
    assert_int_equal(choose(h100(), a, NULL).select.path, BAATT_SELECTOR_SUBGROUP);
    /* without the variants built (an old glslang): the portable kernel, the scalar score */
    baatt_caps old = h100();
    old.built = 0;
    ch = choose(old, shape(4096, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 64, 32, 128);
    assert_int_equal(ch.score.path, BAATT_SCORE_SCALAR);
    assert_int_equal(ch.score.tile, SCORE_FP32_TILE);
    assert_false(ch.stats.split || ch.stats.copy);
}

/* NVIDIA without cooperative matrix 2: the KHR kernel on 16x16x16 (the most work of the listed
 * shapes), 2 subgroups of 16 rows, 16-key tiles (the order measured on the H100); an older driver
 * without KHR cooperative matrices: the portable kernel, its largest tile in 48 KiB. */
static void choice_nvidia_without_cm2(void **s)
{
    (void)s;
    baatt_choice ch = choose(nvidia_no_cm2(), shape(16384, 128, 64, BAATT_DTYPE_F16, 1), NULL);
    expect_khr(&ch, 16, 16, 16, 32, 32, 16);
    assert_int_equal(ch.attend.mf, 1);
    ch = choose(nvidia_no_cm2(), shape(16384, 128, 32, BAATT_DTYPE_F16, 0), NULL);
    expect_khr(&ch, 16, 16, 16, 32, 32, 16); /* never wider than a 32-token block */
    assert_int_equal(ch.score.path, BAATT_SCORE_SCALAR);
    ch = choose(nvidia_no_cm2(), shape(16384, 64, 64, BAATT_DTYPE_F16, 0), NULL);
    expect_khr(&ch, 16, 16, 16, 32, 32, 16);    /* head_dim 64: the same */
    baatt_tuning wide = baatt_tuning_default(); /* where 64-key tiles fit, an operator may ask */
    wide.khr_rows = 64, wide.khr_keys = 64;
    expect_khr((baatt_choice[]){choose(nvidia_no_cm2(), shape(16384, 64, 64, BAATT_DTYPE_F16, 0), &wide)}, 16, 16, 16,
               32, 64, 64);
    ch = choose(nvidia_no_cm2(), shape(16384, 128, 64, BAATT_DTYPE_BF16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 64, 32, 128);
    ch = choose(nvidia_old_driver(), shape(16384, 128, 64, BAATT_DTYPE_F16, 1), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 64, 32, 128);
    baatt_tuning tt = baatt_tuning_default(); /* an operator's tile: two 32-row subgroups */
    tt.khr_rows = 64, tt.khr_keys = 32, tt.khr_mf = 2;
    ch = choose(nvidia_no_cm2(), shape(16384, 128, 64, BAATT_DTYPE_F16, 1), &tt);
    expect_khr(&ch, 16, 16, 16, 32, 64, 32);
    assert_true(ch.attend.mf == 2 && ch.attend.wg == 64);
    tt.khr_rows = 32; /* one subgroup of 32 rows */
    ch = choose(nvidia_no_cm2(), shape(16384, 128, 64, BAATT_DTYPE_F16, 1), &tt);
    expect_khr(&ch, 16, 16, 16, 32, 32, 32);
    assert_true(ch.attend.mf == 2 && ch.attend.wg == 32);
    tt.khr_rows = 32, tt.khr_keys = 64, tt.khr_mf = 1; /* 48.1 KiB > 48: no KHR tile, the next path */
    ch = choose(nvidia_no_cm2(), shape(16384, 128, 64, BAATT_DTYPE_F16, 1), &tt);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 64, 32, 128);
    ch = choose(nvidia_old_driver(), shape(16384, 128, 32, BAATT_DTYPE_F16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 32, 32, 64); /* never wider than a 32-token block */
}

/* AMD and Intel: the KHR kernel on each device's shape, at its smallest subgroup size (pinned),
 * 32 x 16 tiles (2 or 4 subgroups); bf16 on the portable kernel with 32 x 32 tiles; radix workgroups sized for
 * the smallest subgroup, holding the largest. */
static void choice_amd_intel(void **s)
{
    (void)s;
    baatt_choice ch = choose(rdna3(), shape(131072, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    expect_khr(&ch, 16, 16, 16, 32, 32, 16);
    assert_int_equal(ch.score.path, BAATT_SCORE_SCALAR);
    assert_int_equal(ch.select.path, BAATT_SELECTOR_ROW);
    assert_int_equal(ch.select.rows, 4); /* 64-wide subgroups */
    expect_sort(&ch, BAATT_SORTER_RADIX, BAATT_SORTER_RADIX);
    assert_int_equal(ch.sort.radix_wg, 256);
    ch = choose(rdna3(), shape(131072, 128, 64, BAATT_DTYPE_BF16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 64, 32, 128);
    baatt_caps fixed = rdna3(); /* a wrapped device without subgroup size control */
    fixed.features &= ~BAATT_FEATURE_SUBGROUP_SIZE_CONTROL;
    expect_attend((baatt_choice[]){choose(fixed, shape(4096, 128, 64, BAATT_DTYPE_F16, 1), NULL)},
                  BAATT_ATTEND_PORTABLE, 64, 32, 128);
    ch = choose(xe2(), shape(131072, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    expect_khr(&ch, 8, 16, 16, 16, 32, 16);
    assert_int_equal(ch.attend.wg, 64); /* 4 subgroups of 8 rows */
    assert_int_equal(ch.sort.radix_wg, 128);
    assert_int_equal(ch.select.rows, 8);
    ch = choose(arc_a(), shape(131072, 128, 64, BAATT_DTYPE_F16, 1), NULL);
    expect_khr(&ch, 8, 8, 16, 8, 32, 16);
    ch = choose(arc_a(), shape(131072, 128, 64, BAATT_DTYPE_BF16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 64, 32, 128);
    assert_int_equal(ch.sort.radix_wg, 64);
    /* a row of more than 64 keys a lane takes a workgroup: 8192 blocks over 64 or 32 lanes */
    ch = choose(rdna3(), shape(524288, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    assert_int_equal(ch.select.path, BAATT_SELECTOR_SUBGROUP);
    ch = choose(arc_a(), shape(262144, 128, 32, BAATT_DTYPE_F16, 0), NULL);
    assert_int_equal(ch.select.path, BAATT_SELECTOR_SUBGROUP);
    expect_khr(&ch, 8, 8, 16, 8, 32, 16);
}

/* Mesa 26's lavapipe: 8x8x8 on 8 lanes in 32 KiB, 32 x 16 tiles (4 subgroups). */
static void choice_lavapipe26(void **s)
{
    (void)s;
    expect_khr((baatt_choice[]){choose(lavapipe26(), shape(4096, 128, 64, BAATT_DTYPE_F16, 0), NULL)}, 8, 8, 8, 8, 32,
               16);
    expect_khr((baatt_choice[]){choose(lavapipe26(), shape(4096, 64, 64, BAATT_DTYPE_F16, 1), NULL)}, 8, 8, 8, 8, 32,
               16);
    /* sparse plans read norm-sorted copies (contiguous key tiles), dense ones the tensors */
    assert_true(choose(lavapipe26(), shape(4096, 128, 64, BAATT_DTYPE_F16, 0), NULL).attend.sorted);
    assert_false(choose(lavapipe26(), shape(4096, 128, 64, BAATT_DTYPE_F16, 1), NULL).attend.sorted);
    expect_attend((baatt_choice[]){choose(lavapipe26(), shape(4096, 64, 64, BAATT_DTYPE_F32, 0), NULL)},
                  BAATT_ATTEND_PORTABLE, 32, 32, 64);
    baatt_caps old = lavapipe26(); /* a library built by an old glslang */
    old.built = 0;
    expect_attend((baatt_choice[]){choose(old, shape(4096, 128, 64, BAATT_DTYPE_F16, 0), NULL)}, BAATT_ATTEND_PORTABLE,
                  32, 32, 64);
}

/* bf16 on the KHR kernel: the device's bf16 shape where it has VK_KHR_shader_bfloat16's
 * cooperative matrices and the variant was built, with fp16's tiles (the same element size);
 * else the portable kernel. fp16 keeps its fp16 shape beside a bf16 one. */
static void choice_khr_bf16(void **s)
{
    (void)s;
    baatt_tuning t = baatt_tuning_default();
    t.attend = BAATT_ATTEND_KHR; /* the H100 with cm2 capped off: its one bf16 shape, 16x16x16 */
    baatt_config sparse = shape(16384, 128, 64, BAATT_DTYPE_BF16, 0);
    expect_khr_of((baatt_choice[]){choose(h100(), sparse, &t)}, 1, 16, 16, 16, 32, 32, 16);
    expect_khr_of((baatt_choice[]){choose(h100(), shape(16384, 64, 64, BAATT_DTYPE_BF16, 1), &t)}, 1, 16, 16, 16, 32,
                  32, 16);
    baatt_caps no_cm2 = h100(); /* its driver without cooperative matrix 2: the same, untuned */
    no_cm2.features &= ~BAATT_FEATURE_COOPMAT2_NV;
    expect_khr_of((baatt_choice[]){choose(no_cm2, sparse, NULL)}, 1, 16, 16, 16, 32, 32, 16);
    expect_khr((baatt_choice[]){choose(no_cm2, shape(16384, 128, 64, BAATT_DTYPE_F16, 0), NULL)}, 16, 16, 16, 32, 32,
               16);
    /* RDNA4: bf16 16x16x16 at wave32 (pinned), 32 x 16, dense and sparse */
    expect_khr_of((baatt_choice[]){choose(rdna4(), shape(131072, 128, 64, BAATT_DTYPE_BF16, 0), NULL)}, 1, 16, 16, 16,
                  32, 32, 16);
    expect_khr_of((baatt_choice[]){choose(rdna4(), shape(4096, 64, 64, BAATT_DTYPE_BF16, 1), NULL)}, 1, 16, 16, 16, 32,
                  32, 16);
    expect_khr((baatt_choice[]){choose(rdna4(), shape(131072, 128, 64, BAATT_DTYPE_F16, 0), NULL)}, 16, 16, 16, 32, 32,
               16);
    /* RDNA3 lists no bf16 shape (even with the feature bit); RDNA4 without the feature, without
     * the variant (an older glslang), or tuned to the portable kernel: portable */
    baatt_caps r3 = rdna3(), r4 = rdna4(), r4_old = rdna4();
    r3.features |= BAATT_FEATURE_BF16_COOPMAT;
    r4.features &= ~BAATT_FEATURE_BF16_COOPMAT;
    r4_old.built &= ~BAATT_BUILT_KHR_BF16;
    const baatt_caps portable[] = {rdna3(), r3, r4, r4_old};
    for (size_t i = 0; i < sizeof portable / sizeof portable[0]; i++)
        expect_attend((baatt_choice[]){choose(portable[i], shape(131072, 128, 64, BAATT_DTYPE_BF16, 0), NULL)},
                      BAATT_ATTEND_PORTABLE, 64, 32, 128);
    t.attend = BAATT_ATTEND_PORTABLE;
    expect_attend((baatt_choice[]){choose(rdna4(), shape(131072, 128, 64, BAATT_DTYPE_BF16, 0), &t)},
                  BAATT_ATTEND_PORTABLE, 64, 32, 128);
    /* fp32 never takes a tensor-core kernel */
    expect_attend((baatt_choice[]){choose(rdna4(), shape(4096, 64, 64, BAATT_DTYPE_F32, 0), NULL)},
                  BAATT_ATTEND_PORTABLE, 64, 32, 128);
}

static void choice_lavapipe_and_no_subgroups(void **s)
{
    (void)s;
    baatt_choice ch = choose(lavapipe(), shape(4096, 64, 64, BAATT_DTYPE_F32, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 32, 32, 64);
    ch = choose(lavapipe(), shape(4096, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 32, 32, 64); /* 32 KiB */
    expect_sort(&ch, BAATT_SORTER_BITONIC, BAATT_SORTER_BITONIC);
    assert_int_equal(ch.select.rows, 32);
    assert_int_equal(baatt_radix_workgroup(&(baatt_caps){.subgroup_min = 8, .subgroup_max = 8, .subgroup_ballot = 1}),
                     64);
    ch = choose(no_subgroups(), shape(131072, 128, 64, BAATT_DTYPE_F16, 0), NULL);
    assert_int_equal(ch.select.path, BAATT_SELECTOR_SHARED);
    expect_sort(&ch, BAATT_SORTER_BITONIC, BAATT_SORTER_BITONIC);
    assert_int_equal(ch.sort.wg, 512);
    assert_int_equal(ch.sort.chunk, 1024);
    /* sorting off and dense plans sort nothing */
    baatt_config off = shape(4096, 64, 64, BAATT_DTYPE_F16, 0);
    off.norm_sort = BAATT_SORT_OFF;
    ch = choose(lavapipe(), off, NULL);
    expect_sort(&ch, BAATT_SORTER_NONE, BAATT_SORTER_NONE);
}

/* A tuning caps each stage's path; the device still has to offer it. */
static void choice_tuned(void **s)
{
    (void)s;
    baatt_tuning t = baatt_tuning_default();
    baatt_config sparse = shape(131072, 128, 64, BAATT_DTYPE_F16, 0);
    t.attend = BAATT_ATTEND_PORTABLE;
    baatt_choice ch = choose(h100(), sparse, &t);
    expect_attend(&ch, BAATT_ATTEND_PORTABLE, 64, 32, 128);
    assert_false(ch.attend.sorted || ch.stats.copy);
    t = baatt_tuning_default();
    t.attend = BAATT_ATTEND_CM2; /* at most cm2: the best there is */
    assert_int_equal(choose(nvidia_no_cm2(), sparse, &t).attend.path, BAATT_ATTEND_KHR);
    t.attend = BAATT_ATTEND_KHR; /* the KHR kernel on the H100 */
    expect_khr((baatt_choice[]){choose(h100(), sparse, &t)}, 16, 16, 16, 32, 32, 16);
    t = baatt_tuning_default();
    t.sort = BAATT_SORTER_BITONIC;
    expect_sort((baatt_choice[]){choose(h100(), sparse, &t)}, BAATT_SORTER_BITONIC, BAATT_SORTER_BITONIC);
    t.sort = BAATT_SORTER_RADIX;
    expect_sort((baatt_choice[]){choose(h100(), shape(512, 64, 64, BAATT_DTYPE_F16, 0), &t)}, BAATT_SORTER_RADIX,
                BAATT_SORTER_RADIX);
    expect_sort((baatt_choice[]){choose(no_subgroups(), sparse, &t)}, BAATT_SORTER_BITONIC, BAATT_SORTER_BITONIC);
    t = baatt_tuning_default();
    t.radix_min = 1u << 20; /* radix only from 1M keys */
    expect_sort((baatt_choice[]){choose(h100(), sparse, &t)}, BAATT_SORTER_BITONIC, BAATT_SORTER_BITONIC);
    baatt_config lopsided = sparse;
    lopsided.q_len = 300;
    t = baatt_tuning_default();
    expect_sort((baatt_choice[]){choose(h100(), lopsided, &t)}, BAATT_SORTER_BITONIC, BAATT_SORTER_RADIX);
    t.score = BAATT_SCORE_SCALAR;
    assert_int_equal(choose(h100(), sparse, &t).score.path, BAATT_SCORE_SCALAR);
    t = baatt_tuning_default();
    t.select = BAATT_SELECTOR_SUBGROUP;
    assert_int_equal(choose(h100(), sparse, &t).select.path, BAATT_SELECTOR_SUBGROUP);
    t.select = BAATT_SELECTOR_SHARED;
    assert_int_equal(choose(h100(), sparse, &t).select.path, BAATT_SELECTOR_SHARED);
    t = baatt_tuning_default();
    t.tile_rows = 64, t.tile_keys = 128; /* dense: any edge; sparse: at most the block */
    expect_attend((baatt_choice[]){choose(h100(), shape(4096, 128, 64, BAATT_DTYPE_F16, 1), &t)}, BAATT_ATTEND_CM2, 64,
                  128, 128);
    expect_attend((baatt_choice[]){choose(h100(), sparse, &t)}, BAATT_ATTEND_CM2, 64, 64, 128);
    /* a small logit budget: row slices of one head, and no whole-tile score where they are partial */
    t = baatt_tuning_default();
    t.logits_mib = 0.5; /* 2048 x 4 bytes a row: 64 rows */
    ch = choose(h100(), sparse, &t);
    assert_int_equal(ch.score.chunk_heads, 1);
    assert_int_equal(ch.score.chunk_rows, 64);
    assert_true(ch.score.full);
    t.logits_mib = 0.4; /* 51 rows */
    ch = choose(h100(), sparse, &t);
    assert_int_equal(ch.score.chunk_rows, 51);
    assert_false(ch.score.full);
}

static void expect_error(baatt_caps caps, baatt_config c, baatt_status want, const char *fragment)
{
    baatt_tuning t = baatt_tuning_default();
    baatt_choice ch;
    char msg[256] = "";
    assert_int_equal(baatt_choose(&caps, &c, &t, &ch, msg, sizeof msg), want);
    if (!strstr(msg, fragment)) fprintf(stderr, "'%s' lacks '%s'\n", msg, fragment);
    assert_non_null(strstr(msg, fragment));
}

static void choice_errors(void **s)
{
    (void)s;
    baatt_caps c = lavapipe();
    c.features = 0;
    expect_error(c, shape(256, 64, 64, BAATT_DTYPE_F16, 0), BAATT_ERROR_MISSING_FEATURE, "storageBuffer16BitAccess");
    c = lavapipe();
    c.max_shared = 16384;
    expect_error(c, shape(256, 128, 64, BAATT_DTYPE_F32, 1), BAATT_ERROR_MISSING_FEATURE, "shared memory");
    c.max_invocations = 128;
    expect_error(c, shape(256, 128, 64, BAATT_DTYPE_F32, 1), BAATT_ERROR_MISSING_FEATURE, "invocations");
    /* fp32 at head_dim 128: 8 rows a norm-key workgroup, 2^19 rows need 65536 workgroups */
    expect_error(lavapipe(), shape(1u << 19, 128, 64, BAATT_DTYPE_F32, 0), BAATT_ERROR_TOO_LARGE, "norm keys");
    baatt_config wide = shape(256, 64, 64, BAATT_DTYPE_F32, 1);
    wide.heads = wide.kv_heads = 70000;
    expect_error(lavapipe(), wide, BAATT_ERROR_TOO_LARGE, "workgroup-count");
}

/* The portable kernel's variants (portable=): what each device, dtype and tile lets run. */
static uint32_t portable_bits(baatt_caps caps, baatt_dtype dt, const char *tuning, uint32_t *bc)
{
    baatt_tuning t = baatt_tuning_default();
    char msg[256];
    assert_int_equal(baatt_tuning_parse(tuning, &t, msg, sizeof msg), BAATT_OK);
    baatt_choice ch = choose(caps, shape(16384, 128, 64, dt, 1), &t);
    assert_int_equal(ch.attend.path, BAATT_ATTEND_PORTABLE);
    *bc = ch.attend.bc;
    return ch.attend.variant;
}

static void choice_portable_variants(void **s)
{
    (void)s;
    const char *all = "attend=portable,portable=qk16+pv16+long";
    const uint32_t qk_pv = BAATT_PORTABLE_QK16 | BAATT_PORTABLE_PV16;
    baatt_caps c = h100();
    uint32_t bc;
    assert_int_equal(portable_bits(c, BAATT_DTYPE_F16, all, &bc), qk_pv | BAATT_PORTABLE_LONG);
    assert_int_equal(bc, 32);
    assert_int_equal(portable_bits(c, BAATT_DTYPE_F16, "attend=portable", &bc), 0); /* base by default */
    assert_int_equal(portable_bits(c, BAATT_DTYPE_F16, "attend=portable,portable=pv16", &bc), BAATT_PORTABLE_PV16);
    assert_int_equal(portable_bits(c, BAATT_DTYPE_F32, all, &bc), 0); /* fp16 builds only */
    assert_int_equal(portable_bits(c, BAATT_DTYPE_BF16, all, &bc), 0);
    assert_int_equal(portable_bits(c, BAATT_DTYPE_F16, "attend=portable,portable=long", &bc),
                     0);                               /* long alone: no runs */
    c.features &= ~(uint32_t)BAATT_FEATURE_FP16_ARITH; /* no packed halves, so no long runs */
    assert_int_equal(portable_bits(c, BAATT_DTYPE_F16, all, &bc), 0);
    c = h100();
    c.max_shared = 10000; /* a 16 x 8 tile: no 16-key runs */
    assert_int_equal(portable_bits(c, BAATT_DTYPE_F16, all, &bc), qk_pv);
    assert_int_equal(bc, 8);
}

static void tuning_parse(void **s)
{
    (void)s;
    baatt_tuning t = baatt_tuning_default();
    char msg[256];
    assert_int_equal(baatt_tuning_parse("attend=portable,sort=radix,score=scalar,select=shared,tile=64x128,"
                                        "radix_min=1024,logits_mib=0.25,robust=on,profile=1,khr_tile=16x64,khr_mf=2,"
                                        "khr_softmax=shared",
                                        &t, msg, sizeof msg),
                     BAATT_OK);
    assert_int_equal(t.attend, BAATT_ATTEND_PORTABLE);
    assert_int_equal(t.sort, BAATT_SORTER_RADIX);
    assert_int_equal(t.score, BAATT_SCORE_SCALAR);
    assert_int_equal(t.select, BAATT_SELECTOR_SHARED);
    assert_true(t.tile_rows == 64 && t.tile_keys == 128 && t.radix_min == 1024 && t.logits_mib == 0.25);
    assert_true(t.robust && t.profile);
    assert_true(t.khr_rows == 16 && t.khr_keys == 64 && t.khr_mf == 2 && t.khr_shared_softmax);
    assert_int_equal(baatt_tuning_parse("portable=long+qk16+pv16", &t, msg, sizeof msg), BAATT_OK);
    assert_int_equal(t.portable, BAATT_PORTABLE_LONG | BAATT_PORTABLE_QK16 | BAATT_PORTABLE_PV16);
    assert_int_equal(baatt_tuning_parse("portable=base", &t, msg, sizeof msg), BAATT_OK);
    assert_int_equal(t.portable, 0);
    assert_int_equal(baatt_tuning_parse("attend=nv-coopmat2,select=row,sort=bitonic", &t, msg, sizeof msg), BAATT_OK);
    assert_int_equal(t.attend, BAATT_ATTEND_CM2);
    assert_int_equal(baatt_tuning_parse("", &t, msg, sizeof msg), BAATT_OK);
    static const struct {
        const char *s, *fragment;
    } bad[] = {{"sort=on", "bad value \"on\" for tuning key \"sort\""},
               {"sort=none", "\"none\""},
               {"attend=nv-coopmat", "bad value \"nv-coopmat\""}, /* the kernel went (NOTES.md #56) */
               {"atend=portable", "unknown tuning key \"atend\""},
               {"tile=48x64", "\"48x64\""},
               {"tile=64", "\"64\""},
               {"khr_tile=48x64", "\"48x64\""},
               {"khr_tile=8x64", "\"8x64\""},
               {"khr_tile=64x128", "\"64x128\""},
               {"khr_mf=3", "khr_mf"},
               {"portable=qk16+qk16", "\"qk16+qk16\""},
               {"portable=qk16+", "\"qk16+\""},
               {"portable=base+qk16", "\"base+qk16\""},
               {"portable=sg", "\"sg\""}, /* removed: it lost on the H100 (NOTES.md #64) */
               {"portable=qk16+sg+long", "\"qk16+sg+long\""},
               {"portable=h2", "\"h2\""},
               {"portable=", "\"\""},
               {"khr_softmax=scalar", "khr_softmax"},
               {"radix_min=-1", "radix_min"},
               {"radix_min=12abc", "radix_min"},
               {"logits_mib=0", "logits_mib"},
               {"robust=yes", "robust"},
               {"attend", "no '='"},
               {"attend=portable,,sort=radix", "bad tuning item"},
               {"select=row,", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        baatt_tuning before = t, after = t;
        msg[0] = 0;
        baatt_status st = baatt_tuning_parse(bad[i].s, &after, msg, sizeof msg);
        if (!bad[i].fragment) { /* a trailing comma ends the list */
            assert_int_equal(st, BAATT_OK);
            continue;
        }
        assert_int_equal(st, BAATT_ERROR_INVALID_ARGUMENT);
        if (!strstr(msg, bad[i].fragment)) fprintf(stderr, "'%s': '%s' lacks '%s'\n", bad[i].s, msg, bad[i].fragment);
        assert_non_null(strstr(msg, bad[i].fragment));
        assert_memory_equal(&before, &after, sizeof before); /* unchanged on error */
    }
    for (int stage = 0; stage < BAATT_STAGE_COUNT; stage++) {
        int n = stage == BAATT_STAGE_STATS ? 0 : 1;
        assert_int_equal(baatt_path_name(stage, 0) != NULL, n);
    }
    assert_null(baatt_path_name(BAATT_STAGE_ATTEND, BAATT_ATTEND_COUNT));
}

/* A layout as khr_layout.comp records it, from where(lane, i) = row * n + column. */
typedef uint32_t (*where_fn)(uint32_t lane, uint32_t i);
static void layout_of(where_fn where, uint32_t sg, uint32_t e, uint32_t *cell)
{
    for (uint32_t l = 0; l < sg; l++)
        for (uint32_t i = 0; i < e; i++) cell[l * KL_MAX_E + i] = where(l, i);
}
/* NVIDIA's m16n8 accumulator pairs, twice for N = 16: rows l/4 and l/4 + 8, columns 2 (l%4) (+1, +8) */
static uint32_t where_nvidia(uint32_t l, uint32_t i)
{
    return (l / 4 + 8 * ((i / 2) % 2)) * 16 + 8 * (i / 4) + 2 * (l % 4) + i % 2;
}
/* AMD RDNA3 wave32 16x16: a column per lane, rows 2i + l/16 */
static uint32_t where_amd(uint32_t l, uint32_t i) { return (2 * i + l / 16) * 16 + l % 16; }
/* A row per lane (8x8 at subgroup 8), and a column per lane (lavapipe 26's) */
static uint32_t where_row(uint32_t l, uint32_t i) { return l * 8 + i; }
static uint32_t where_col(uint32_t l, uint32_t i) { return i * 8 + l; }
/* Rows spread so that no power-of-two lane group holds one: l and l + 1 swap row halves */
static uint32_t where_odd(uint32_t l, uint32_t i) { return ((l * 3 + i) % 8) * 8 + (l + 5 * i) % 8; }

static void khr_layout_classify(void **s)
{
    (void)s;
    static const struct {
        where_fn where;
        uint32_t sg, e, n, rg, rep;
    } cases[] = {{where_nvidia, 32, 8, 16, 4, 0x22002200u},
                 {where_amd, 32, 8, 16, 16, 0x76543210u},
                 {where_row, 8, 8, 8, 1, 0u},
                 {where_col, 8, 8, 8, 8, 0x76543210u},
                 {where_odd, 8, 8, 8, 0, 0u}};
    uint32_t cell[32 * KL_MAX_E], rep = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        layout_of(cases[i].where, cases[i].sg, cases[i].e, cell);
        rep = 0;
        assert_int_equal(baatt_khr_layout_classify(cell, cases[i].sg, cases[i].e, cases[i].n, &rep), cases[i].rg);
        assert_int_equal(rep, cases[i].rep);
    }
    assert_int_equal(baatt_khr_layout_classify(cell, 8, 9, 8, &rep), 0); /* more elements than REP holds */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(choice_h100),         cmocka_unit_test(choice_nvidia_without_cm2),
        cmocka_unit_test(choice_amd_intel),    cmocka_unit_test(choice_lavapipe_and_no_subgroups),
        cmocka_unit_test(choice_lavapipe26),   cmocka_unit_test(choice_khr_bf16),
        cmocka_unit_test(choice_tuned),        cmocka_unit_test(choice_errors),
        cmocka_unit_test(tuning_parse),        cmocka_unit_test(choice_portable_variants),
        cmocka_unit_test(khr_layout_classify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
