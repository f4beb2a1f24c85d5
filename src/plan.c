/* Plans: validation, scratch sizing, pipeline choice and the recording of the BA-Att stages
 *   sort (norms -> keys -> bitonic sort -> permutations) -> block statistics ->
 *   [score -> select] per logit chunk -> (auto sort: the same on the original order, sampled
 *   recalls, per-kv-head choice) -> block-sparse (or dense) attention
 * into a command buffer, plus the host-array convenience path and result read-back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

/* Mirrors `Push` in shaders/common.glsl, field for field (std430-compatible scalars). */
typedef struct baatt_push {
    uint32_t batch, heads, kv_heads, q_len, kv_len, head_dim;
    uint32_t block, nq, nk, words;
    uint32_t which, padded, sort_k, sort_j, key_offset;
    uint32_t head0, nheads_chunk, row0, rows;
    uint32_t mode, keep, min_blocks, max_blocks;
    float threshold, scale, cov;
    uint32_t identity, slot;
} baatt_push;
_Static_assert(sizeof(baatt_push) <= BAATT_PUSH_BYTES, "push constants exceed the layout's range");

enum { PROF_KINDS = 13 }; /* pipeline kinds of the dispatch profile (prof_names) */
enum { RADIX_KPT = 16 };  /* radix sort: keys per invocation and tile (sort_radix.comp KPT) */

struct baatt_plan {
    baatt_context *ctx;
    baatt_config cfg;
    baatt_push base;
    uint32_t bh, bhkv;                  /* flattened (batch, head) counts of each side */
    uint32_t pq, pk;                    /* per-head lengths padded to powers of two (sort) */
    uint32_t chunk_heads, chunk_rows;   /* logit chunk: heads x query-block rows */
    uint32_t sort_wg, sort_chunk, select_wg, attn_wg, attn_br, attn_bc;
    uint32_t radix_wg;                  /* radix sort (sort_radix.comp) workgroup; 0: bitonic sort */
    int radix[2];                       /* per side (Q, K): sorted by the radix sort */
    int attn_nvcm;                      /* tensor-core path (attention_nvcm.comp) */
    int attn_cm2;                       /* cooperative matrix 2 path (attention_cm2.comp or attention_sg.comp) */
    int attn_sg;                        /* ... its subgroup-scope kernel (attention_sg.comp) */
    int stats_copy;                     /* stats.comp writes the sorted Q/K/V copies (its COPY) */
    int attn_scatter;                   /* the sparse cm2 kernel writes O to its original rows (SCATTER) */
    uint32_t select_rows;               /* select_row: rows per workgroup (one per subgroup); 0: one per workgroup */
    char attn_variant[48];              /* the cm2 shader variant (name in the embedded registry) */
    baatt_buffer qs, ks, vs, os;        /* norm-sorted Q/K/V/O copies (cm2 sparse path only) */
    VkPipeline p_permute;
    uint32_t score_t, score_kc;         /* logit tile; feature step of the tensor-core score (0: scalar) */
    int score_full;                     /* ... every tile whole: unclamped layouts (score_cm2 FULL) */
    baatt_buffer qsplit, ksplit;        /* bf16 hi/lo block features (tensor-core score only) */
    baatt_buffer keys, perm_q, perm_k, qfeat, kfeat, logits, mask, counts;
    baatt_buffer keys2, hist;           /* radix sort: second key buffer, per-tile digit counts */
    VkPipeline p_radix[3];              /* radix sort phases: histogram, scan, scatter */
    /* Auto sort (cfg.norm_sort == BAATT_SORT_AUTO): MASK and COUNTS hold two slots (slot 0 the
     * sorted selection, then the chosen one; slot 1 the original-order selection) and AUTO the
     * sampled recalls [bh][samples][2] and the choices [bhkv]. */
    int auto_sort;
    uint32_t samples;
    baatt_buffer autob;
    VkPipeline p_recall, p_choose;
    baatt_buffer tq, tk, tv, to, staging; /* run_host only, created on first use */
    VkDescriptorPool dpool;
    VkDescriptorSet set;
    VkQueryPool qpool;
    uint32_t max_ts;                    /* queries in qpool: every mark one recording writes */
    uint32_t nts;                       /* timestamps written by the last recording */
    int8_t *ts_stage;                   /* [max_ts] stage of the interval ending at timestamp i */
    uint8_t *ts_kind;                   /* BAATT_PROFILE: [max_ts] pipeline kind of a dispatch mark */
    int profile;                        /* BAATT_PROFILE=1: a timestamp after every dispatch */
    uint32_t recorded, profiled;        /* recordings made; the last one whose marks were summed */
    uint32_t prof_runs;                 /* runs summed into prof_ms */
    uint32_t prof_marks;                /* dispatch marks in the current recording */
    double prof_ms[PROF_KINDS];         /* per pipeline kind (prof_names), summed over runs */
    uint32_t prof_n[PROF_KINDS];
    VkPipeline p_keys, p_local, p_global, p_perm, p_stats, p_score, p_select, p_attn;
    int ran;
};

/* ------------------------------------------------------------------------------------------ */
/* geometry                                                                                   */

/* 16-byte vectors in a row of Q/K/V, and rows per 256-invocation workgroup of the stages that
 * read rows as such vectors (sort_keys, permute: one vector per invocation). */
static uint32_t row_vectors(const baatt_config *c) { return c->head_dim * (uint32_t)baatt_dtype_size(c->dtype) / 16; }
static uint32_t vector_rows_per_wg(const baatt_config *c) { return 256 / row_vectors(c); }

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

/* Largest FlashAttention tile (BR query rows x BC keys) whose shared memory fits the device;
 * BR must divide the block size so a workgroup never straddles two query blocks. */
/* The NV cooperative-matrix kernel: fp16 tensors, a device with 16x16x16 fp16 cooperative
 * matrices (checked at context creation), 32-wide subgroups, and the variant built in.
 * 16 query rows per subgroup, up to 4 subgroups, never wider than a query block. */
static int choose_nvcm(baatt_plan *p)
{
    const baatt_context *ctx = p->ctx;
    if (p->cfg.dtype != BAATT_DTYPE_F16 || !(ctx->features & BAATT_FEATURE_COOPMAT_NV)) return 0;
    if (ctx->info.subgroup_size != 32 || !baatt_shader_available("attention_nvcm_f16")) return 0;
    uint32_t nsg = p->cfg.dense ? 4 : p->base.block / 16 < 4 ? p->base.block / 16 : 4;
    p->attn_nvcm = 1;
    p->attn_br = 16 * nsg;
    p->attn_bc = 32;
    p->attn_wg = 32 * nsg;
    return 1;
}

/* Subgroup-scope tensor-core kernel (attention_sg.comp, FlashAttention-2's shape: 32 query rows
 * per subgroup, K/V tiles staged by the kernel), opt-in with BAATT_SG=1 while it is slower than
 * the workgroup-scope kernel (bench/NOTES.md #18): head_dim 128, 32-wide subgroups, 48 KiB of
 * shared memory; 128 x 32 tiles dense, 64 x 64 sparse, whose query blocks must be whole
 * multiples of 64 rows. */
static int choose_sg(baatt_plan *p)
{
    const baatt_context *ctx = p->ctx;
    if (!baatt_env_int("BAATT_SG", 0) || p->cfg.head_dim != 128 || ctx->info.subgroup_size != 32 ||
        ctx->info.max_shared_memory < 48 * 1024 || (!p->cfg.dense && p->base.block % 64))
        return 0;
    uint32_t br = p->cfg.dense ? 128 : 64;
    snprintf(p->attn_variant, sizeof p->attn_variant, "attention_sg%u%s_%s", br, p->cfg.dense ? "" : "_sorted",
             baatt_dtype_name(p->cfg.dtype));
    if (!baatt_shader_available(p->attn_variant)) return 0;
    p->attn_sg = 1;
    p->attn_br = br;
    p->attn_bc = br == 128 ? 32 : 64;
    p->attn_wg = br; /* 32 invocations per 32 rows */
    return 1;
}

/* cm2 tile edge (rows or keys) from a knob: 32, 64 or 128, at most the block in sparse plans (a
 * tile never straddles a block); else the default. */
static uint32_t cm2_edge(const baatt_plan *p, const char *knob, uint32_t def)
{
    int v = baatt_env_int(knob, 0);
    return (v == 32 || v == 64 || v == 128) && (p->cfg.dense || (uint32_t)v <= p->base.block) ? (uint32_t)v : def;
}

/* Cooperative matrix 2 (fp16, or bf16 where the device has bf16 cooperative matrices; the variants
 * need glslang >= 15, bf16 >= 16): the workgroup-scope kernel, or, opted in, the subgroup-scope
 * one. Tiles: at head_dim 128, dense plans take 128 x 128 on 256 invocations (255 registers, one
 * workgroup per SM; bench/NOTES.md #45: 7-11% faster than 64 x 64 where the lengths are
 * multiples of 128, 4-7% where they are not, though the partial-tile code spills 16 bytes), and
 * so do 128-token blocks where both lengths are multiples of 128 (4% faster; with the partial-tile
 * code the sorted kernel spills 112 bytes and is 5% slower, so only there); else 64 x 64 on 128
 * invocations, 32 x 32 for 32-token blocks (a tile never straddles a query or key block). Two
 * invocations per query row. BAATT_CM2_BR / BAATT_CM2_BC replace the choice, for experiments. */
static int choose_cm2(baatt_plan *p)
{
    const baatt_context *ctx = p->ctx;
    int bf16 = p->cfg.dtype == BAATT_DTYPE_BF16;
    if (!(ctx->features & BAATT_FEATURE_COOPMAT2_NV)) return 0;
    if (p->cfg.dtype != BAATT_DTYPE_F16 && !(bf16 && (ctx->features & BAATT_FEATURE_BF16_COOPMAT))) return 0;
    if (!baatt_shader_available("permute")) return 0;
    if (choose_sg(p)) return p->attn_cm2 = 1;
    snprintf(p->attn_variant, sizeof p->attn_variant, "attention_cm2%s_%s", p->cfg.dense ? "" : "_sorted",
             baatt_dtype_name(p->cfg.dtype));
    if (!baatt_shader_available(p->attn_variant)) return 0;
    p->attn_cm2 = 1;
    uint32_t t = p->cfg.dense || p->base.block >= 64 ? 64 : 32;
    int whole = p->cfg.q_len % 128 == 0 && p->cfg.kv_len % 128 == 0;
    if (p->cfg.head_dim == 128 && (p->cfg.dense || (p->base.block == 128 && whole))) t = 128;
    p->attn_br = cm2_edge(p, "BAATT_CM2_BR", t);
    p->attn_bc = cm2_edge(p, "BAATT_CM2_BC", t);
    p->attn_wg = 2 * p->attn_br;
    return 1;
}

/* Tensor-core logit product (score_cm2.comp on the bf16 hi/lo parts that stats.comp writes; ~2^-16
 * relative error per term) where the device has bf16 cooperative matrix 2 and the variants were
 * built; else, or with BAATT_SCORE_CM2=0, the fp32 scalar product (score.comp, 64 x 64 tiles).
 * Experiment knobs: BAATT_SCORE_T (output tile, 64 or 128), BAATT_SCORE_KC (feature step),
 * BAATT_SCORE_FULL=0 (clamped layouts even where every tile is whole). Needs choose_chunks first. */
static void choose_score(baatt_plan *p)
{
    const baatt_context *ctx = p->ctx;
    uint32_t need = BAATT_FEATURE_COOPMAT2_NV | BAATT_FEATURE_BF16_COOPMAT;
    p->score_t = 64;
    p->score_kc = 0;
    if (p->cfg.dense || !baatt_env_int("BAATT_SCORE_CM2", 1) || (ctx->features & need) != need ||
        !baatt_shader_available("score_cm2"))
        return;
    int kc = baatt_env_int("BAATT_SCORE_KC", 64);
    p->score_kc = kc == 16 || kc == 32 ? (uint32_t)kc : 64; /* all divide 3 x head_dim (64 or 128) */
    if (baatt_env_int("BAATT_SCORE_T", 64) == 128) p->score_t = 128;
    /* every logit tile whole (the chunks from choose_chunks too): unclamped layouts (NOTES #43) */
    uint32_t t = p->score_t;
    p->score_full = p->base.nq % t == 0 && p->base.nk % t == 0 && p->chunk_rows % t == 0 &&
                    baatt_env_int("BAATT_SCORE_FULL", 1);
}

/* Selection: one subgroup per row (select_row: no workgroup barriers) in keep-ratio mode where
 * the device has subgroup arithmetic and ballots and a row is at most 64 keys per lane (at 128,
 * 256K on the H100, it was no faster); else a workgroup per row (select_sg, or select with
 * shared-memory reductions). BAATT_SELECT_ROW=0 forces the latter. select_row relies on subgroups of exactly the reported size, which holds for
 * the SPIR-V 1.5 of the default build target (vulkan1.2); a vulkan1.3 target (SPIR-V 1.6) would
 * let a driver vary it, and needs a required subgroup size on the pipeline first. */
static void choose_select(baatt_plan *p)
{
    const baatt_context *ctx = p->ctx;
    uint32_t sg = ctx->info.subgroup_size;
    p->select_wg = 256;
    p->select_rows = 0;
    if (ctx->subgroup_ballot && p->base.mode == 0 && sg >= 4 && sg <= p->select_wg && (p->base.nk + sg - 1) / sg <= 64 &&
        baatt_env_int("BAATT_SELECT_ROW", 1))
        p->select_rows = p->select_wg / sg;
}

static baatt_status choose_attention_tiles(baatt_plan *p)
{
    if (choose_cm2(p) || choose_nvcm(p)) return BAATT_OK;
    static const uint32_t tiles[][2] = {{32, 32}, {16, 32}, {16, 16}};
    uint32_t d = p->cfg.head_dim, shmem = p->ctx->info.max_shared_memory;
    for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
        uint32_t br = tiles[i][0], bc = tiles[i][1];
        uint64_t bytes = 4ull * (br * d + bc * (d + 1) + bc * d + br * bc) + 12ull * br;
        if (bytes > shmem || (!p->cfg.dense && (br > p->cfg.block_size || bc > p->cfg.block_size))) continue;
        p->attn_br = br;
        p->attn_bc = bc;
        p->attn_wg = 128;
        return BAATT_OK;
    }
    return baatt_fail(p->ctx, BAATT_ERROR_MISSING_FEATURE,
                      "device %s has %u bytes of compute shared memory; head_dim %u needs at least %u",
                      p->ctx->info.name, shmem, d, 4 * (16 * d + 16 * (d + 1) + 16 * d + 256) + 192);
}

/* The logit scratch holds whole heads when they fit the budget, else row slices of one head.
 * BAATT_LOGITS_MIB overrides the 128 MiB budget (tests use it to force chunking). 128 rather than
 * 64: half the score/select dispatches, -0.12 ms at 128K on the H100 (NOTES.md #39). */
static void choose_chunks(baatt_plan *p)
{
    const char *env = getenv("BAATT_LOGITS_MIB");
    uint64_t budget = (env && atof(env) > 0 ? atof(env) : 128.0) * 1048576.0;
    uint64_t row = (uint64_t)p->base.nk * 4, head = row * p->base.nq;
    if (head <= budget) {
        p->chunk_rows = p->base.nq;
        uint64_t h = budget / head;
        p->chunk_heads = h > p->bh ? p->bh : (uint32_t)h;
    } else {
        p->chunk_heads = 1;
        uint64_t r = budget / row;
        p->chunk_rows = r < 1 ? 1 : r > p->base.nq ? p->base.nq : (uint32_t)r;
    }
    if (p->chunk_heads > 65535) p->chunk_heads = 65535;
    if (p->chunk_rows > 65535) p->chunk_rows = 65535;
}

static baatt_status fill_push(baatt_plan *p)
{
    const baatt_config *c = &p->cfg;
    baatt_push *b = &p->base;
    memset(b, 0, sizeof *b);
    b->batch = c->batch;
    b->heads = c->heads;
    b->kv_heads = c->kv_heads;
    b->q_len = c->q_len;
    b->kv_len = c->kv_len;
    b->head_dim = c->head_dim;
    /* A dense plan still reports its (all-ones) mask on a block grid: the configured block size
     * when it is a supported one, else 64. */
    int valid_block = c->block_size == 32 || c->block_size == 64 || c->block_size == 128;
    b->block = c->dense && !valid_block ? 64 : c->block_size;
    b->nq = (c->q_len + b->block - 1) / b->block;
    b->nk = (c->kv_len + b->block - 1) / b->block;
    b->words = (b->nk + 31) / 32;
    b->mode = c->select_mode == BAATT_SELECT_MASS_THRESHOLD;
    b->keep = c->dense ? b->nk : baatt_config_keep_blocks(c);
    b->min_blocks = c->min_blocks;
    b->max_blocks = c->max_blocks;
    b->threshold = c->mass_threshold;
    float t = baatt_config_scale(c);
    b->scale = t;
    b->cov = c->covariance ? 0.5f * t * t : 0.0f;
    p->bh = c->batch * c->heads;
    p->bhkv = c->batch * c->kv_heads;
    p->pq = pow2_at_least(c->q_len);
    p->pk = pow2_at_least(c->kv_len);
    return BAATT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* dispatch profile (BAATT_PROFILE=1, a developer diagnostic)                                 */

/* A timestamp after every dispatch (at most PROF_MAX_MARKS a recording), summed per pipeline
 * kind over the plan's runs and printed to stderr when the plan is destroyed: it splits a stage
 * into its dispatches (the sort's local and global passes, the permutations inside "attend").
 * Dispatches recorded without a barrier between them overlap; the later one gets the overlap. */
enum { PROF_MAX_MARKS = 4096, PROF_MARK = -2 };
static const char *const prof_names[PROF_KINDS] = {"sort_keys", "sort_local", "sort_global", "sort_radix", "sort_perm",
                                                    "stats", "score", "select", "auto_recall", "auto_choose",
                                                    "permute", "attention", "other"};

static int prof_kind(const baatt_plan *p, VkPipeline pipe)
{
    const VkPipeline k[PROF_KINDS - 1] = {p->p_keys,  p->p_local,  p->p_global, VK_NULL_HANDLE, p->p_perm,
                                          p->p_stats, p->p_score, p->p_select, p->p_recall,   p->p_choose,
                                          p->p_permute, p->p_attn};
    for (int i = 0; i < 3; i++)
        if (pipe && pipe == p->p_radix[i]) return 3; /* "sort_radix": its three phases together */
    for (int i = 0; i < PROF_KINDS - 1; i++)
        if (k[i] && k[i] == pipe) return i;
    return PROF_KINDS - 1;
}

static void prof_print(const baatt_plan *p)
{
    uint32_t runs = p->prof_runs;
    if (!p->profile || !runs) return;
    fprintf(stderr, "baatt: dispatch profile, mean of %u run(s) (BAATT_PROFILE):\n", runs);
    for (int i = 0; i < PROF_KINDS; i++)
        if (p->prof_n[i])
            fprintf(stderr, "  %-12s %9.3f ms  %6.1f dispatches\n", prof_names[i], p->prof_ms[i] / runs,
                    (double)p->prof_n[i] / runs);
}

/* ------------------------------------------------------------------------------------------ */
/* creation                                                                                   */

/* Radix sort (sort_radix.comp) for each side longer than 32K tokens, where the device can run it
 * (baatt_context_radix_wg; H100, NOTES.md #48: sort 1.03 -> 0.84 ms at 64K, 2.21 -> 1.59 at 128K;
 * the bitonic sort is faster up to 16K and as fast at 32K). BAATT_SORT_RADIX=0: always bitonic,
 * 2: radix at any length (tests). Needs fill_push (pq, pk). */
static void choose_radix(baatt_plan *p)
{
    int mode = baatt_env_int("BAATT_SORT_RADIX", 1);
    uint32_t padded[2] = {p->pq, p->pk};
    for (int side = 0; side < 2; side++)
        p->radix[side] = p->ctx->radix_wg && !p->cfg.dense && p->cfg.norm_sort && mode &&
                         (mode == 2 || padded[side] >= 65536);
    p->radix_wg = p->radix[0] || p->radix[1] ? p->ctx->radix_wg : 0;
}

static baatt_status check_device(baatt_plan *p)
{
    baatt_context *ctx = p->ctx;
    const baatt_config *c = &p->cfg;
    if (c->dtype != BAATT_DTYPE_F32 && !(ctx->features & BAATT_FEATURE_FP16_STORAGE))
        return baatt_fail(ctx, BAATT_ERROR_MISSING_FEATURE,
                          "%s tensors need storageBuffer16BitAccess, which %s lacks (or which was not enabled)",
                          baatt_dtype_name(c->dtype), ctx->info.name);
    if (ctx->info.max_workgroup_invocations < 256)
        return baatt_fail(ctx, BAATT_ERROR_MISSING_FEATURE, "device %s allows %u invocations per workgroup; baatt needs 256",
                          ctx->info.name, ctx->info.max_workgroup_invocations);
    uint32_t maxg = ctx->limits.maxComputeWorkGroupCount[0];
    if ((c->q_len + 15) / 16 > maxg || p->bh > ctx->limits.maxComputeWorkGroupCount[1] || p->base.nq > maxg)
        return baatt_fail(ctx, BAATT_ERROR_TOO_LARGE, "q_len %u x %u heads exceeds the device's workgroup-count limits",
                          c->q_len, p->bh);
    /* The K side's statistics dispatch one workgroup per key block; the row permutations one per
     * 256 / (head_dim * element size / 16) rows of the padded length (8 rows for fp32 at head_dim
     * 128), which bounds the sort's other passes too (the norm keys take 4 times as many rows). */
    if (!c->dense && p->base.nk > maxg)
        return baatt_fail(ctx, BAATT_ERROR_TOO_LARGE,
                          "kv_len %u in blocks of %u gives %u key blocks, over the device's workgroup-count limit (%u)",
                          c->kv_len, p->base.block, p->base.nk, maxg);
    uint32_t rows = vector_rows_per_wg(c), longest = p->pq > p->pk ? p->pq : p->pk;
    if (!c->dense && (longest + rows - 1) / rows > maxg)
        return baatt_fail(ctx, BAATT_ERROR_TOO_LARGE,
                          "sequence length %u (padded to %u) needs %u workgroups of %u rows for the row copies and norm keys, over the "
                          "device's workgroup-count limit (%u)",
                          c->q_len > c->kv_len ? c->q_len : c->kv_len, longest, (longest + rows - 1) / rows, rows, maxg);
    return BAATT_OK;
}

static baatt_status scratch(baatt_plan *p, baatt_buffer *b, uint64_t bytes, const char *what)
{
    if (bytes > p->ctx->info.max_storage_buffer_range)
        return baatt_fail(p->ctx, BAATT_ERROR_TOO_LARGE, "%s needs %.1f MiB, over this device's %.1f MiB buffer limit", what,
                          bytes / 1048576.0, p->ctx->info.max_storage_buffer_range / 1048576.0);
    return baatt_buffer_create(p->ctx, bytes, 0, b);
}

static baatt_status create_scratch(baatt_plan *p)
{
    const baatt_push *b = &p->base;
    uint64_t f = 3ull * b->head_dim * 4;
    int sparse = !p->cfg.dense;
    BAATT_TRY(scratch(p, &p->perm_q, sparse ? 4ull * p->bh * b->q_len : 4, "perm_q"));
    BAATT_TRY(scratch(p, &p->perm_k, sparse ? 4ull * p->bhkv * b->kv_len : 4, "perm_k"));
    uint64_t keys_bytes = 8ull * ((uint64_t)p->bh * p->pq + (uint64_t)p->bhkv * p->pk);
    BAATT_TRY(scratch(p, &p->keys, sparse && p->cfg.norm_sort ? keys_bytes : 8, "sort keys"));
    uint32_t rt = p->radix_wg * RADIX_KPT; /* radix tile: keys per workgroup */
    int radix = p->radix_wg != 0;
    BAATT_TRY(scratch(p, &p->keys2, radix ? keys_bytes : 8, "sort keys (radix copy)"));
    BAATT_TRY(scratch(p, &p->hist, radix ? 4ull * 256 * ((uint64_t)p->bh * ((b->q_len + rt - 1) / rt) +
                                                         (uint64_t)p->bhkv * ((b->kv_len + rt - 1) / rt)) : 4,
                      "radix sort digit counts"));
    BAATT_TRY(scratch(p, &p->qfeat, sparse ? f * p->bh * b->nq : 4, "query block features"));
    BAATT_TRY(scratch(p, &p->kfeat, sparse ? f * p->bhkv * b->nk : 4, "key block features"));
    int split = p->score_kc != 0; /* two bf16 parts per fp32 feature: as many bytes as the features */
    BAATT_TRY(scratch(p, &p->qsplit, split ? f * p->bh * b->nq : 4, "query block features (bf16 parts)"));
    BAATT_TRY(scratch(p, &p->ksplit, split ? f * p->bhkv * b->nk : 4, "key block features (bf16 parts)"));
    BAATT_TRY(scratch(p, &p->logits, sparse ? 4ull * p->chunk_heads * p->chunk_rows * b->nk : 4, "block logits"));
    uint64_t slots = p->auto_sort ? 2 : 1;
    BAATT_TRY(scratch(p, &p->mask, sparse ? 4ull * slots * p->bh * b->nq * b->words : 4, "selection mask"));
    BAATT_TRY(scratch(p, &p->autob, p->auto_sort ? 4ull * (2ull * p->bh * p->samples + p->bhkv) : 4, "auto sort recalls"));
    int sorted = sparse && p->attn_cm2;
    uint64_t es = baatt_dtype_size(p->cfg.dtype);
    uint64_t qbytes = es * p->bh * b->q_len * b->head_dim, kbytes = es * p->bhkv * b->kv_len * b->head_dim;
    BAATT_TRY(scratch(p, &p->qs, sorted ? qbytes : 16, "sorted Q"));
    BAATT_TRY(scratch(p, &p->ks, sorted ? kbytes : 16, "sorted K"));
    BAATT_TRY(scratch(p, &p->vs, sorted ? kbytes : 16, "sorted V"));
    BAATT_TRY(scratch(p, &p->os, sorted ? qbytes : 16, "sorted O"));
    return scratch(p, &p->counts, sparse ? 4ull * slots * p->bh * b->nq : 4, "selection counts");
}

/* attention_cm2's FULL bits, each set only where the shape allows it: 1 = Q loaded without
 * clamping (q_len a multiple of the query tile), 2 = key tiles without clamping or masking (kv_len
 * of the key tile), 4 = O stored without clamping. A set bit compiles that partial-tile code out.
 * Chosen by measurement on the H100 (NOTES.md #42, #47): all three for the dense kernel (1.5%
 * faster) and for the sorted one with 128 x 128 tiles (0.9%); the key bit alone for the sorted one
 * with 64 x 64 tiles (1.2% faster). There, compiling out the clamped Q load (which full tiles
 * never take) makes the loop 3% slower whatever the other bits, and the O bit 0.3%: the driver's
 * code for the loop changes with them (222 -> 236 registers), for reasons the SASS did not show.
 * BAATT_CM2_FULL (a bit mask) replaces the choice, for experiments. */
static uint32_t cm2_full_tiles(const baatt_plan *p)
{
    uint32_t q = p->cfg.q_len % p->attn_br == 0, k = p->cfg.kv_len % p->attn_bc == 0;
    return (q | k << 1 | q << 2) & (uint32_t)baatt_env_int("BAATT_CM2_FULL", p->cfg.dense || p->attn_br == 128 ? 7 : 2);
}

static baatt_status create_pipelines(baatt_plan *p)
{
    baatt_context *ctx = p->ctx;
    const char *io = baatt_dtype_name(p->cfg.dtype); /* variant suffix: f32, f16 or bf16 */
    char name[48];
    uint32_t d = p->cfg.head_dim;
    if (p->attn_cm2) {
        uint32_t pad = (uint32_t)baatt_env_int("BAATT_CM2_PAD", 0); /* occupancy probe, bytes */
        uint32_t cm[8] = {p->attn_wg, d, p->attn_br, p->attn_bc, p->cfg.dense ? 1 : p->base.block / p->attn_bc, pad,
                          (uint32_t)p->attn_scatter, cm2_full_tiles(p)};
        uint32_t rv = row_vectors(&p->cfg);
        BAATT_TRY(baatt_pipeline_get(ctx, p->attn_variant, cm, 8, &p->p_attn));
        if (!p->cfg.dense) BAATT_TRY(baatt_pipeline_get(ctx, "permute", &rv, 1, &p->p_permute));
    } else if (p->attn_nvcm) {
        uint32_t cm[6] = {p->attn_wg, d, p->attn_br / 16, p->attn_bc, (uint32_t)!p->cfg.dense, 32};
        BAATT_TRY(baatt_pipeline_get(ctx, "attention_nvcm_f16", cm, 6, &p->p_attn));
    } else {
        uint32_t attn[5] = {p->attn_wg, d, p->attn_br, p->attn_bc, (uint32_t)!p->cfg.dense};
        snprintf(name, sizeof name, "attention_%s", io);
        BAATT_TRY(baatt_pipeline_get(ctx, name, attn, 5, &p->p_attn));
    }
    if (p->cfg.dense) return BAATT_OK;
    snprintf(name, sizeof name, "sort_keys_%s", io);
    BAATT_TRY(baatt_pipeline_get(ctx, name, &d, 1, &p->p_keys));
    for (uint32_t phase = 0; phase < 3 && p->radix_wg; phase++) {
        uint32_t rs[3] = {p->radix_wg, RADIX_KPT, phase};
        BAATT_TRY(baatt_pipeline_get(ctx, "sort_radix", rs, 3, &p->p_radix[phase]));
    }
    if (!p->radix[0] || !p->radix[1]) {
        uint32_t sl[2] = {p->sort_wg, p->sort_chunk};
        BAATT_TRY(baatt_pipeline_get(ctx, "sort_local", sl, 2, &p->p_local));
        BAATT_TRY(baatt_pipeline_get(ctx, "sort_global", &p->sort_chunk, 1, &p->p_global));
    }
    BAATT_TRY(baatt_pipeline_get(ctx, "sort_perm", NULL, 0, &p->p_perm));
    snprintf(name, sizeof name, "stats_%s", io);
    uint32_t st[3] = {d, (uint32_t)p->stats_copy, p->score_kc != 0};
    BAATT_TRY(baatt_pipeline_get(ctx, name, st, 3, &p->p_stats));
    if (p->score_kc) {
        /* 4 or 8 subgroups (NOTES #21, #30) */
        uint32_t sc[5] = {2 * p->score_t, d, p->score_t, p->score_kc, (uint32_t)p->score_full};
        BAATT_TRY(baatt_pipeline_get(ctx, "score_cm2", sc, 5, &p->p_score));
    } else
        BAATT_TRY(baatt_pipeline_get(ctx, "score", &d, 1, &p->p_score));
    if (p->select_rows) {
        uint32_t sg = ctx->info.subgroup_size, sel[3] = {p->select_wg, (p->base.nk + sg - 1) / sg, sg};
        BAATT_TRY(baatt_pipeline_get(ctx, "select_row", sel, 3, &p->p_select));
    } else {
        uint32_t sel[2] = {p->select_wg, (p->base.nk + p->select_wg - 1) / p->select_wg};
        BAATT_TRY(baatt_pipeline_get(ctx, ctx->subgroup_arith ? "select_sg" : "select", sel, 2, &p->p_select));
    }
    if (!p->auto_sort) return BAATT_OK;
    uint32_t rec[2] = {d, BAATT_AUTO_ROWS}, rows = BAATT_AUTO_ROWS;
    snprintf(name, sizeof name, "auto_recall_%s", io);
    BAATT_TRY(baatt_pipeline_get(ctx, name, rec, 2, &p->p_recall));
    return baatt_pipeline_get(ctx, "auto_choose", &rows, 1, &p->p_choose);
}

static baatt_status create_descriptors(baatt_plan *p)
{
    baatt_context *ctx = p->ctx;
    VkDescriptorPoolSize size = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = BIND_COUNT};
    VkDescriptorPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 1,
                                     .poolSizeCount = 1, .pPoolSizes = &size};
    BAATT_VK(ctx, ctx->vk.vkCreateDescriptorPool(ctx->device, &pi, NULL, &p->dpool));
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = p->dpool,
                                      .descriptorSetCount = 1, .pSetLayouts = &ctx->set_layout};
    BAATT_VK(ctx, ctx->vk.vkAllocateDescriptorSets(ctx->device, &ai, &p->set));
    if (!ctx->info.timestamp_period_ns) return BAATT_OK;
    /* One timestamp per mark() of record_stages: start, sort, stats, score and select per logit
     * chunk, attention; auto sort adds stats, the second pass's chunks and the choice. */
    uint64_t chunks = p->cfg.dense ? 0
                                   : (uint64_t)((p->bh + p->chunk_heads - 1) / p->chunk_heads) *
                                         ((p->base.nq + p->chunk_rows - 1) / p->chunk_rows);
    uint64_t marks = 4 + 2 * chunks + (p->auto_sort ? 2 + 2 * chunks : 0) + (p->profile ? PROF_MAX_MARKS : 0);
    if (marks > UINT32_MAX) marks = UINT32_MAX;
    p->max_ts = (uint32_t)marks;
    p->ts_stage = calloc(p->max_ts, 1);
    p->ts_kind = calloc(p->max_ts, 1);
    if (!p->ts_stage || !p->ts_kind) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                .queryCount = p->max_ts};
    return baatt_vk(ctx, ctx->vk.vkCreateQueryPool(ctx->device, &qi, NULL, &p->qpool), "vkCreateQueryPool");
}

baatt_status baatt_plan_create(baatt_context *ctx, const baatt_config *cfg, baatt_plan **out)
{
    if (!ctx || !out) return BAATT_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    char msg[512];
    baatt_status s = baatt_config_check(cfg, msg, sizeof msg);
    if (s) return baatt_fail(ctx, s, "invalid config: %s", msg);
    baatt_plan *p = calloc(1, sizeof *p);
    if (!p) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    p->ctx = ctx;
    p->cfg = *cfg;
    /* Local sort chunks of 4096 keys (32 KiB) where the device allows, else 2 keys per invocation. */
    p->sort_wg = ctx->info.max_workgroup_invocations >= 1024 ? 1024 : ctx->info.max_workgroup_invocations >= 512 ? 512 : 256;
    p->sort_chunk = ctx->info.max_shared_memory >= 8 * 4096 && p->sort_wg == 1024 ? 4096 : 2 * p->sort_wg;
    p->auto_sort = !cfg->dense && cfg->norm_sort == BAATT_SORT_AUTO;
    p->samples = baatt_auto_samples(cfg->q_len);
    p->profile = baatt_env_int("BAATT_PROFILE", 0);
    s = fill_push(p);
    if (!s) choose_radix(p);
    if (!s) s = check_device(p);
    if (!s) s = choose_attention_tiles(p);
    if (!s) choose_chunks(p), choose_score(p), choose_select(p);
    /* Statistics write the sorted Q/K/V copies as they read them, unless auto sort may still
     * rewrite the perms after them (then permute.comp copies). BAATT_STATS_COPY=0: permute.comp. */
    p->stats_copy = !s && !cfg->dense && p->attn_cm2 && !p->auto_sort && baatt_env_int("BAATT_STATS_COPY", 1);
    /* The sparse cm2 kernel scatters its output itself (not the subgroup-scope one);
     * BAATT_CM2_SCATTER=0: permute.comp does. */
    p->attn_scatter = !s && !cfg->dense && p->attn_cm2 && !p->attn_sg && baatt_env_int("BAATT_CM2_SCATTER", 1);
    if (!s) s = create_scratch(p);
    if (!s) s = create_pipelines(p);
    if (!s) s = create_descriptors(p);
    if (s) {
        baatt_plan_destroy(p);
        return s;
    }
    *out = p;
    return BAATT_OK;
}

/* The plan's own device buffers (what baatt_plan_scratch_bytes counts); the host path's
 * staging buffers are apart. */
enum { N_SCRATCH = 17 };
static int scratch_list(baatt_plan *p, baatt_buffer *out[N_SCRATCH])
{
    baatt_buffer *b[N_SCRATCH] = {&p->keys, &p->perm_q, &p->perm_k, &p->qfeat,  &p->kfeat,
                                  &p->logits, &p->mask, &p->counts, &p->qs,     &p->ks,
                                  &p->vs,   &p->os,     &p->autob,  &p->qsplit, &p->ksplit,
                                  &p->keys2, &p->hist};
    memcpy(out, b, sizeof b);
    return N_SCRATCH;
}

void baatt_plan_destroy(baatt_plan *p)
{
    if (!p) return;
    baatt_context *ctx = p->ctx;
    baatt_buffer *bufs[N_SCRATCH];
    for (int i = 0, n = scratch_list(p, bufs); i < n; i++) baatt_buffer_destroy(ctx, bufs[i]);
    baatt_buffer *host[] = {&p->tq, &p->tk, &p->tv, &p->to, &p->staging};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) baatt_buffer_destroy(ctx, host[i]);
    if (p->qpool) ctx->vk.vkDestroyQueryPool(ctx->device, p->qpool, NULL);
    if (p->dpool) ctx->vk.vkDestroyDescriptorPool(ctx->device, p->dpool, NULL);
    prof_print(p);
    free(p->ts_stage);
    free(p->ts_kind);
    free(p);
}

uint64_t baatt_plan_scratch_bytes(const baatt_plan *p)
{
    if (!p) return 0;
    baatt_buffer *b[N_SCRATCH];
    uint64_t bytes = 0;
    for (int i = 0, n = scratch_list((baatt_plan *)p, b); i < n; i++) bytes += b[i]->size;
    return bytes;
}

/* ------------------------------------------------------------------------------------------ */
/* recording                                                                                  */

typedef struct rec {
    baatt_plan *p;
    VkCommandBuffer cmd;
} rec;

/* Closes the interval of `stage` with a timestamp (PROF_MARK: of dispatch kind `kind`). */
static void mark_kind(rec *r, int stage, int kind)
{
    baatt_plan *p = r->p;
    if (!p->qpool || p->nts >= p->max_ts) return;
    if (stage == PROF_MARK && p->prof_marks++ >= PROF_MAX_MARKS) return; /* stage marks keep their room */
    p->ts_stage[p->nts] = (int8_t)stage;
    p->ts_kind[p->nts] = (uint8_t)kind;
    p->ctx->vk.vkCmdWriteTimestamp(r->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p->qpool, p->nts++);
}

static void mark(rec *r, int stage) { mark_kind(r, stage, 0); }

static void dispatch(rec *r, VkPipeline pipe, const baatt_push *pc, uint32_t x, uint32_t y, uint32_t z)
{
    baatt_context *ctx = r->p->ctx;
    ctx->vk.vkCmdBindPipeline(r->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    ctx->vk.vkCmdPushConstants(r->cmd, ctx->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof *pc, pc);
    ctx->vk.vkCmdDispatch(r->cmd, x, y, z);
    if (r->p->profile) mark_kind(r, PROF_MARK, prof_kind(r->p, pipe));
}

static void barrier(rec *r) { baatt_cmd_barrier(r->p->ctx, r->cmd); }

/* The radix sort's four passes of 8 bits over one side's keys (sort_radix.comp): histogram, scan
 * and scatter each, KEYS -> KEYS2 -> KEYS -> KEYS2 -> KEYS. */
static void record_radix(rec *r, baatt_push *pc, uint32_t len, uint32_t heads)
{
    baatt_plan *p = r->p;
    uint32_t tiles = (len + p->radix_wg * RADIX_KPT - 1) / (p->radix_wg * RADIX_KPT);
    for (uint32_t pass = 0; pass < 4; pass++) {
        pc->sort_k = 8 * pass;
        pc->sort_j = pass & 1;
        dispatch(r, p->p_radix[0], pc, tiles, heads, 1);
        barrier(r);
        dispatch(r, p->p_radix[1], pc, 1, heads, 1);
        barrier(r);
        dispatch(r, p->p_radix[2], pc, tiles, heads, 1);
        barrier(r);
    }
}

/* The bitonic sort of one side's keys: local chunks, then global merge steps with local tails. */
static void record_bitonic(rec *r, baatt_push *pc, uint32_t heads)
{
    baatt_plan *p = r->p;
    uint32_t n = p->sort_chunk < pc->padded ? p->sort_chunk : pc->padded;
    pc->sort_k = 0;
    dispatch(r, p->p_local, pc, pc->padded / n, heads, 1);
    barrier(r);
    for (uint32_t k = 2 * n; k <= pc->padded; k <<= 1) {
        pc->sort_k = k;
        for (uint32_t j = k >> 1; j >= n; j >>= 1) {
            int pair = j / 2 >= n; /* two steps in one pass (sort_global.comp) */
            pc->sort_j = j;
            dispatch(r, p->p_global, pc, (pc->padded / (pair ? 4 : 2) + 255) / 256, heads, 1);
            barrier(r);
            if (pair) j >>= 1;
        }
        dispatch(r, p->p_local, pc, pc->padded / n, heads, 1);
        barrier(r);
    }
}

/* Norm keys, their sort (radix or bitonic) and the permutation of one side (which = 0: Q, 1: K). */
static void record_sort_side(rec *r, uint32_t which)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    uint32_t heads = which ? p->bhkv : p->bh, len = which ? pc.kv_len : pc.q_len;
    pc.which = which;
    pc.padded = which ? p->pk : p->pq;
    pc.key_offset = which ? p->bh * p->pq : 0;
    pc.identity = !p->cfg.norm_sort;
    if (which) barrier(r); /* Q's perm read the key buffer K's side writes (other ranges: sync validation sees one binding) */
    if (p->cfg.norm_sort) {
        uint32_t rows = 4 * vector_rows_per_wg(&p->cfg); /* sort_keys' C * R (C = 4 there) */
        dispatch(r, p->p_keys, &pc, (pc.padded + rows - 1) / rows, heads, 1);
        barrier(r);
        if (p->radix[which]) record_radix(r, &pc, len, heads);
        else record_bitonic(r, &pc, heads);
    }
    dispatch(r, p->p_perm, &pc, (len + 255) / 256, heads, 1);
}

/* identity: statistics of the original-order blocks, whatever the perms hold (auto sort). */
static void record_stats(rec *r, uint32_t identity)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    pc.identity = identity;
    for (uint32_t which = 0; which < 2; which++) {
        pc.which = which;
        dispatch(r, p->p_stats, &pc, which ? pc.nk : pc.nq, which ? p->bhkv : p->bh, 1);
    }
}

/* Score and select, chunk by chunk through the bounded logit scratch, into mask slot `slot`. */
static void record_score_select(rec *r, uint32_t slot)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    pc.slot = slot;
    for (uint32_t h0 = 0; h0 < p->bh; h0 += p->chunk_heads) {
        pc.head0 = h0;
        pc.nheads_chunk = p->bh - h0 < p->chunk_heads ? p->bh - h0 : p->chunk_heads;
        for (uint32_t r0 = 0; r0 < pc.nq; r0 += p->chunk_rows) {
            pc.row0 = r0;
            pc.rows = pc.nq - r0 < p->chunk_rows ? pc.nq - r0 : p->chunk_rows;
            uint32_t t = p->score_t;
            dispatch(r, p->p_score, &pc, (pc.nk + t - 1) / t, (pc.rows + t - 1) / t, pc.nheads_chunk);
            barrier(r);
            mark(r, BAATT_STAGE_SCORE);
            uint32_t rpw = p->select_rows ? p->select_rows : 1;
            dispatch(r, p->p_select, &pc, (pc.rows + rpw - 1) / rpw, pc.nheads_chunk, 1);
            barrier(r);
            mark(r, BAATT_STAGE_SELECT);
        }
    }
}

/* Auto sort, after the sorted blocking's selection (mask slot 0): the original-order blocking's
 * statistics, logits and selection (slot 1, reusing the feature and logit scratch), the sampled
 * recalls of both, and the per-kv-head choice, which rewrites the perms and slot 0 of the heads
 * that keep the original order. Timed as STATS, SCORE and SELECT (recall and choice). */
static void record_auto(rec *r)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    record_stats(r, 1);
    barrier(r);
    mark(r, BAATT_STAGE_STATS);
    record_score_select(r, 1);
    dispatch(r, p->p_recall, &pc, (p->samples + 7) / 8, p->bh, 1);   /* 8 rows a workgroup (RPW) */
    barrier(r);
    /* enough workgroups per kv head to rewrite its rows in parallel; each re-sums the recalls */
    uint32_t g = pc.heads / pc.kv_heads, work = pc.kv_len;
    if (g * pc.q_len > work) work = g * pc.q_len;
    if (g * pc.nq * pc.words > work) work = g * pc.nq * pc.words;
    uint32_t chunks = (work + 255) / 256;
    dispatch(r, p->p_choose, &pc, chunks < 1024 ? chunks : 1024, p->bhkv, 1);
    barrier(r);
    mark(r, BAATT_STAGE_SELECT);
}

/* Row gather (which 0: Q, 1: K and V) or scatter (2: O) through the permutations. */
static void record_permute(rec *r, uint32_t which)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    pc.which = which;
    int kv = which == 1;
    uint32_t len = kv ? pc.kv_len : pc.q_len, heads = kv ? p->bhkv : p->bh;
    uint32_t rows = vector_rows_per_wg(&p->cfg);
    dispatch(r, p->p_permute, &pc, (len + rows - 1) / rows, heads, 1);
}

/* The attention stage; the cooperative-matrix-2 sparse path reads norm-sorted copies of Q, K, V
 * (contiguous key blocks for its tensor loads; the statistics wrote them with stats_copy, else
 * permute.comp does) and its sorted output goes back to the original rows (attention_cm2.comp's
 * epilogue with attn_scatter, else a permute.comp pass). */
static void record_attention(rec *r)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    int sorted = p->attn_cm2 && !p->cfg.dense;
    if (sorted && !p->stats_copy) {
        record_permute(r, 0);
        record_permute(r, 1);
        barrier(r);
    }
    dispatch(r, p->p_attn, &pc, (pc.q_len + p->attn_br - 1) / p->attn_br, p->bh, 1);
    barrier(r);
    if (sorted && !p->attn_scatter) {
        record_permute(r, 2);
        barrier(r);
    }
}

static void bind_tensors(baatt_plan *p, const baatt_tensors *t)
{
    const baatt_config *c = &p->cfg;
    VkDeviceSize es = baatt_dtype_size(c->dtype);
    VkDeviceSize qn = es * p->bh * c->q_len * c->head_dim, kn = es * p->bhkv * c->kv_len * c->head_dim;
    const baatt_device_tensor *ten[4] = {&t->q, &t->k, &t->v, &t->o};
    VkDeviceSize tsz[4] = {qn, kn, kn, qn};
    baatt_buffer *own[BIND_COUNT] = {NULL,     NULL,      NULL,      NULL,    &p->perm_q, &p->perm_k,
                                     &p->keys, &p->qfeat, &p->kfeat, &p->logits, &p->mask, &p->counts,
                                     &p->qs,   &p->ks,    &p->vs,    &p->os, &p->autob, &p->qsplit, &p->ksplit,
                                     &p->keys2, &p->hist};
    VkDescriptorBufferInfo bi[BIND_COUNT];
    VkWriteDescriptorSet w[BIND_COUNT];
    for (uint32_t i = 0; i < BIND_COUNT; i++) {
        bi[i] = i < 4 ? (VkDescriptorBufferInfo){ten[i]->buffer, ten[i]->offset, tsz[i]}
                      : (VkDescriptorBufferInfo){own[i]->buffer, 0, VK_WHOLE_SIZE};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = p->set, .dstBinding = i,
                                      .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
    }
    p->ctx->vk.vkUpdateDescriptorSets(p->ctx->device, BIND_COUNT, w, 0, NULL);
}

static void record_stages(rec *r)
{
    baatt_plan *p = r->p;
    baatt_context *ctx = p->ctx;
    p->nts = 0;
    p->prof_marks = 0;
    p->recorded++;
    if (p->qpool) ctx->vk.vkCmdResetQueryPool(r->cmd, p->qpool, 0, p->max_ts);
    ctx->vk.vkCmdBindDescriptorSets(r->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->pipeline_layout, 0, 1, &p->set, 0, NULL);
    barrier(r); /* the caller's (or our upload's) writes of Q, K, V */
    mark(r, -1);
    if (!p->cfg.dense) {
        /* one side after the other: running both at once made the sort slower (2.17 -> 2.31 ms
         * at 128K, NOTES.md #38; their 2 x 32 MiB of keys outgrow the L2) */
        record_sort_side(r, 0);
        record_sort_side(r, 1);
        barrier(r);
        mark(r, BAATT_STAGE_SORT);
        record_stats(r, 0);
        barrier(r);
        mark(r, BAATT_STAGE_STATS);
        record_score_select(r, 0);
        if (p->auto_sort) record_auto(r);
    }
    record_attention(r);
    mark(r, BAATT_STAGE_ATTEND);
}

static baatt_status check_tensor(baatt_plan *p, const baatt_device_tensor *t, const char *name)
{
    if (!t->buffer) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "tensor %s has no VkBuffer", name);
    if (t->offset % p->ctx->limits.minStorageBufferOffsetAlignment)
        return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT,
                          "tensor %s offset %llu is not a multiple of minStorageBufferOffsetAlignment (%llu)", name,
                          (unsigned long long)t->offset,
                          (unsigned long long)p->ctx->limits.minStorageBufferOffsetAlignment);
    return BAATT_OK;
}

baatt_status baatt_plan_record(baatt_plan *p, VkCommandBuffer cmd, const baatt_tensors *t)
{
    if (!p || !cmd || !t) return p ? baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "NULL command buffer or tensors")
                                   : BAATT_ERROR_INVALID_ARGUMENT;
    BAATT_TRY(check_tensor(p, &t->q, "q"));
    BAATT_TRY(check_tensor(p, &t->k, "k"));
    BAATT_TRY(check_tensor(p, &t->v, "v"));
    BAATT_TRY(check_tensor(p, &t->o, "o"));
    /* Each tensor is bound as one storage-buffer range (run_host's own buffers are checked the
     * same way when they are created). */
    const baatt_config *c = &p->cfg;
    uint64_t es = baatt_dtype_size(c->dtype), limit = p->ctx->info.max_storage_buffer_range;
    uint64_t qn = es * p->bh * c->q_len * c->head_dim, kn = es * p->bhkv * c->kv_len * c->head_dim;
    if (qn > limit || kn > limit)
        return baatt_fail(p->ctx, BAATT_ERROR_TOO_LARGE, "tensor %s needs %.1f MiB, over this device's %.1f MiB buffer limit",
                          qn > limit ? "q" : "k", (qn > limit ? qn : kn) / 1048576.0, limit / 1048576.0);
    bind_tensors(p, t);
    rec r = {p, cmd};
    record_stages(&r);
    p->ran = 1;
    return BAATT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* host path                                                                                  */

static baatt_status ensure_host_buffers(baatt_plan *p, uint64_t qn, uint64_t kn)
{
    /* Each buffer on its own: a call that failed part-way (too large, out of memory) keeps what
     * it made, and a retry must not create those again over the live handles. */
    if (!p->tq.buffer) BAATT_TRY(scratch(p, &p->tq, qn, "Q"));
    if (!p->tk.buffer) BAATT_TRY(scratch(p, &p->tk, kn, "K"));
    if (!p->tv.buffer) BAATT_TRY(scratch(p, &p->tv, kn, "V"));
    if (!p->to.buffer) BAATT_TRY(scratch(p, &p->to, qn, "O"));
    if (!p->staging.buffer) BAATT_TRY(baatt_buffer_create(p->ctx, 2 * qn + 2 * kn, 1, &p->staging));
    return BAATT_OK;
}

static void copy(rec *r, VkBuffer src, VkDeviceSize so, VkBuffer dst, VkDeviceSize dof, VkDeviceSize n)
{
    VkBufferCopy c = {so, dof, n};
    r->p->ctx->vk.vkCmdCopyBuffer(r->cmd, src, dst, 1, &c);
}

baatt_status baatt_plan_run_host(baatt_plan *p, const void *q, const void *k, const void *v, void *o)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!q || !k || !v || !o) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "q, k, v and o must not be NULL");
    const baatt_config *c = &p->cfg;
    uint64_t es = baatt_dtype_size(c->dtype);
    uint64_t qn = es * p->bh * c->q_len * c->head_dim, kn = es * p->bhkv * c->kv_len * c->head_dim;
    BAATT_TRY(ensure_host_buffers(p, qn, kn));
    char *st = p->staging.mapped;
    memcpy(st, q, qn);
    memcpy(st + qn, k, kn);
    memcpy(st + qn + kn, v, kn);
    rec r = {p, VK_NULL_HANDLE};
    BAATT_TRY(baatt_cmd_begin(p->ctx, &r.cmd));
    copy(&r, p->staging.buffer, 0, p->tq.buffer, 0, qn);
    copy(&r, p->staging.buffer, qn, p->tk.buffer, 0, kn);
    copy(&r, p->staging.buffer, qn + kn, p->tv.buffer, 0, kn);
    baatt_tensors t = {{p->tq.buffer, 0}, {p->tk.buffer, 0}, {p->tv.buffer, 0}, {p->to.buffer, 0}};
    bind_tensors(p, &t);
    record_stages(&r);
    copy(&r, p->to.buffer, 0, p->staging.buffer, qn + 2 * kn, qn);
    baatt_cmd_host_barrier(p->ctx, r.cmd);
    BAATT_TRY(baatt_cmd_submit_wait(p->ctx, r.cmd));
    memcpy(o, st + qn + 2 * kn, qn);
    p->ran = 1;
    return BAATT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* results                                                                                    */

/* Copies n bytes at offset `at` of a device buffer into dst through a temporary staging buffer. */
static baatt_status download_at(baatt_plan *p, const baatt_buffer *src, uint64_t at, void *dst, uint64_t n)
{
    baatt_buffer st;
    BAATT_TRY(baatt_buffer_create(p->ctx, n, 1, &st));
    rec r = {p, VK_NULL_HANDLE};
    baatt_status s = baatt_cmd_begin(p->ctx, &r.cmd);
    if (!s) {
        copy(&r, src->buffer, at, st.buffer, 0, n);
        baatt_cmd_host_barrier(p->ctx, r.cmd);
        s = baatt_cmd_submit_wait(p->ctx, r.cmd);
    }
    if (!s) memcpy(dst, st.mapped, n);
    baatt_buffer_destroy(p->ctx, &st);
    return s;
}

static baatt_status download(baatt_plan *p, const baatt_buffer *src, void *dst, uint64_t n)
{
    return download_at(p, src, 0, dst, n);
}

static baatt_status require_run(baatt_plan *p)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!p->ran) return baatt_fail(p->ctx, BAATT_ERROR_NOT_READY, "the plan has not been run yet");
    return BAATT_OK;
}

static void read_timestamps(baatt_plan *p, baatt_run_stats *st)
{
    if (!p->qpool || p->nts < 2) return;
    uint64_t *ts = malloc(sizeof *ts * p->nts);
    if (!ts) return;
    VkResult r = p->ctx->vk.vkGetQueryPoolResults(p->ctx->device, p->qpool, 0, p->nts, sizeof *ts * p->nts, ts,
                                                  sizeof ts[0], VK_QUERY_RESULT_64_BIT);
    if (r != VK_SUCCESS) {
        free(ts);
        return;
    }
    double ns = p->ctx->info.timestamp_period_ns;
    /* interval i (ending at timestamp i) belongs to the stage of the first stage mark at or after
     * it; dispatch marks (BAATT_PROFILE) only split it */
    int stage = -1, sum = p->profile && p->profiled != p->recorded;
    for (uint32_t i = p->nts - 1; i >= 1; i--) {
        double ms = (double)(ts[i] - ts[i - 1]) * ns * 1e-6;
        if (p->ts_stage[i] != PROF_MARK) stage = p->ts_stage[i];
        else if (sum) p->prof_ms[p->ts_kind[i]] += ms, p->prof_n[p->ts_kind[i]]++;
        if (stage >= 0) st->stage_ms[stage] += ms;
    }
    if (sum) p->profiled = p->recorded, p->prof_runs++;
    st->gpu_ms = (double)(ts[p->nts - 1] - ts[0]) * ns * 1e-6;
    st->timed = 1;
    free(ts);
}

baatt_status baatt_plan_stats(baatt_plan *p, baatt_run_stats *st)
{
    BAATT_TRY(require_run(p));
    if (!st) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "stats is NULL");
    memset(st, 0, sizeof *st);
    read_timestamps(p, st);
    uint64_t rows = (uint64_t)p->bh * p->base.nq;
    if (p->cfg.dense) {
        st->selected_blocks = rows * p->base.nk;
        return BAATT_OK;
    }
    uint32_t *cnt = malloc(4 * rows);
    if (!cnt) return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    baatt_status s = download(p, &p->counts, cnt, 4 * rows);
    if (!s) {
        /* Only the last key block can be partial, so a row's selected blocks are
         * ceil(tokens / block): no need to read the mask back. */
        uint64_t tokens = 0, B = p->base.block;
        for (uint64_t i = 0; i < rows; i++) {
            tokens += cnt[i];
            st->selected_blocks += (cnt[i] + B - 1) / B;
        }
        st->sparsity = 1.0 - (double)tokens / ((double)rows * p->cfg.kv_len);
    }
    free(cnt);
    return s;
}

baatt_status baatt_plan_read_mask(baatt_plan *p, uint8_t *mask)
{
    BAATT_TRY(require_run(p));
    if (!mask) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "mask is NULL");
    uint64_t rows = (uint64_t)p->bh * p->base.nq, nk = p->base.nk, words = p->base.words;
    if (p->cfg.dense) {
        memset(mask, 1, rows * nk);
        return BAATT_OK;
    }
    uint32_t *bits = malloc(4 * rows * words);
    if (!bits) return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    baatt_status s = download(p, &p->mask, bits, 4 * rows * words);
    for (uint64_t i = 0; !s && i < rows; i++)
        for (uint64_t j = 0; j < nk; j++) mask[i * nk + j] = (bits[i * words + j / 32] >> (j % 32)) & 1u;
    free(bits);
    return s;
}

static void identity(int32_t *perm, uint64_t heads, uint32_t len)
{
    for (uint64_t h = 0; h < heads; h++)
        for (uint32_t i = 0; i < len; i++) perm[h * len + i] = (int32_t)i;
}

baatt_status baatt_plan_read_perms(baatt_plan *p, int32_t *perm_q, int32_t *perm_k)
{
    BAATT_TRY(require_run(p));
    const baatt_config *c = &p->cfg;
    if (c->dense) {
        if (perm_q) identity(perm_q, p->bh, c->q_len);
        if (perm_k) identity(perm_k, p->bhkv, c->kv_len);
        return BAATT_OK;
    }
    if (perm_q) BAATT_TRY(download(p, &p->perm_q, perm_q, 4ull * p->bh * c->q_len));
    if (perm_k) BAATT_TRY(download(p, &p->perm_k, perm_k, 4ull * p->bhkv * c->kv_len));
    return BAATT_OK;
}

baatt_status baatt_plan_read_head_sorted(baatt_plan *p, uint8_t *sorted)
{
    BAATT_TRY(require_run(p));
    if (!sorted) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "sorted is NULL");
    if (!p->auto_sort) {
        memset(sorted, !p->cfg.dense && p->cfg.norm_sort == BAATT_SORT_NORM, p->bhkv);
        return BAATT_OK;
    }
    uint32_t *flags = malloc(4ull * p->bhkv);
    if (!flags) return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    baatt_status s = download_at(p, &p->autob, 8ull * p->bh * p->samples, flags, 4ull * p->bhkv);
    for (uint32_t i = 0; !s && i < p->bhkv; i++) sorted[i] = flags[i] != 0;
    free(flags);
    return s;
}

const char *baatt_stage_name(int stage)
{
    static const char *names[BAATT_STAGE_COUNT] = {"sort", "stats", "score", "select", "attend"};
    return stage >= 0 && stage < BAATT_STAGE_COUNT ? names[stage] : "unknown";
}

/* ------------------------------------------------------------------------------------------ */
/* test access to intermediate results (internal.h)                                          */

baatt_status baatt_plan_debug_read(baatt_plan *p, int what, void *dst, uint64_t bytes)
{
    BAATT_TRY(require_run(p));
    const baatt_buffer *b = what == BAATT_DEBUG_QFEAT ? &p->qfeat : what == BAATT_DEBUG_KFEAT ? &p->kfeat : &p->logits;
    if (bytes > b->size) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "debug read past the buffer");
    return download(p, b, dst, bytes);
}

const char *baatt_plan_select_path(const baatt_plan *p)
{
    return p->select_rows ? "select_row" : p->ctx->subgroup_arith ? "select_sg" : "select";
}

const char *baatt_plan_sort_path(const baatt_plan *p, int which)
{
    return p->cfg.dense || !p->cfg.norm_sort ? "none" : p->radix[which != 0] ? "radix" : "bitonic";
}

const char *baatt_plan_score_path(const baatt_plan *p)
{
    return p->score_kc ? "nv-coopmat2-bf16-split" : "scalar-fp32";
}

const char *baatt_plan_attention_path(const baatt_plan *p)
{
    return p->attn_sg ? "nv-coopmat2-subgroup" : p->attn_cm2 ? "nv-coopmat2" : p->attn_nvcm ? "nv-coopmat" : "scalar";
}

void baatt_plan_debug_chunks(const baatt_plan *p, uint32_t *heads, uint32_t *rows)
{
    *heads = p->chunk_heads;
    *rows = p->chunk_rows;
}
