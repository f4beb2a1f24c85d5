/* Stage 5, attention (docs/ALGORITHM.md step 5): exact FlashAttention-2-style attention over the
 * selected key blocks (all of them in a dense plan). Three kernels, best first:
 *  - attention_cm2.comp: NVIDIA cooperative matrix 2 (workgroup scope), fp16 or bf16. Its sparse
 *    build reads norm-sorted copies of Q, K, V (contiguous key blocks for its tensor loads; made
 *    by stats.comp, or by permute.comp under auto sort) and scatters O back in its epilogue.
 *  - attention_khr.comp: KHR cooperative matrix (subgroup scope, any vendor), fp16, or bf16 where
 *    the device lists bf16 shapes (VK_KHR_shader_bfloat16).
 *  - attention.comp: portable, any subgroup size, tiles sized to the shared memory. */
#include <stdio.h>
#include <string.h>

#include "plan.h"

static int allows(const baatt_tuning *t, baatt_attend_path path)
{
    return t->attend == BAATT_ATTEND_AUTO || t->attend >= path;
}

/* A tile edge from the tuning (32, 64 or 128; at most the block in sparse plans, so a tile never
 * straddles a block), else the default. */
static uint32_t tile_edge(const baatt_config *cfg, const baatt_geometry *g, uint32_t tuned, uint32_t def)
{
    return tuned && (cfg->dense || tuned <= g->block) ? tuned : def;
}

/* Tiles: at head_dim 128, dense plans take 128 x 128 on 256 invocations (NOTES.md #45: 7-11%
 * faster than 64 x 64), and so do 128-token blocks where both lengths are multiples of 128 (with
 * the partial-tile code the sorted kernel spills); else 64 x 64, or 32 x 32 for 32-token blocks.
 * FULL bits only where the shape allows them, and as measured (NOTES.md #42, #47): all three for
 * the dense kernel and 128 x 128 tiles, the key bit alone for the sorted 64 x 64 kernel. */
static int choose_cm2(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t, const baatt_geometry *g,
                      baatt_attend_choice *out)
{
    int bf16 = cfg->dtype == BAATT_DTYPE_BF16;
    uint32_t built = bf16 ? BAATT_BUILT_CM2_BF16 : BAATT_BUILT_CM2_F16;
    if (!allows(t, BAATT_ATTEND_CM2) || !(caps->features & BAATT_FEATURE_COOPMAT2_NV) || !(caps->built & built))
        return 0;
    if (cfg->dtype != BAATT_DTYPE_F16 && !(bf16 && (caps->features & BAATT_FEATURE_BF16_COOPMAT))) return 0;
    uint32_t e = cfg->dense || g->block >= 64 ? 64 : 32;
    int whole = cfg->q_len % 128 == 0 && cfg->kv_len % 128 == 0;
    if (cfg->head_dim == 128 && (cfg->dense || (g->block == 128 && whole))) e = 128;
    out->path = BAATT_ATTEND_CM2;
    out->br = tile_edge(cfg, g, t->tile_rows, e);
    out->bc = tile_edge(cfg, g, t->tile_keys, e);
    out->wg = 2 * out->br;
    out->sorted = !cfg->dense;
    uint32_t q = cfg->q_len % out->br == 0, k = cfg->kv_len % out->bc == 0;
    uint32_t allowed = cfg->dense || out->br == 128 ? CM2_FULL_Q | CM2_FULL_K | CM2_FULL_O : CM2_FULL_K;
    out->full = (q * CM2_FULL_Q | k * CM2_FULL_K | q * CM2_FULL_O) & allowed;
    return 1;
}

/* The KHR kernel's fragment shape for fp16 or bf16 A/B at head_dim d: M 8 or 16, N and K
 * multiples of 8 up to 16 (16-byte shared addressing, the shader's fragment-array bounds); most
 * work per fragment. */
static int khr_shape(const baatt_caps *caps, uint32_t d, int bf16, baatt_mma_shape *out)
{
    int found = 0;
    for (uint32_t i = 0; i < caps->nshapes; i++) {
        baatt_mma_shape s = caps->shapes[i];
        if (!s.bf16 != !bf16 || (s.m != 8 && s.m != 16) || s.n % 8 || s.k % 8 || s.n > 16 || s.k > 16 || d % s.n ||
            d % s.k)
            continue;
        if (!found || s.m * s.n * s.k > out->m * out->n * out->k) *out = s, found = 1;
    }
    return found;
}

/* attention_khr.comp's shared memory: K and V tiles (padded rows), S and P per subgroup row, a
 * factor per row, the row-id table. */
static uint64_t khr_shared_bytes(uint32_t d, uint32_t br, uint32_t bc, baatt_mma_shape s)
{
    return 2ull * bc * (d + 8) * 2 + (uint64_t)br * (bc + 4) * 4 + (uint64_t)br * (bc + 8) * 2 + 4ull * br +
           8ull * s.m * s.n;
}

/* The KHR kernel runs this dtype here: fp16, or bf16 with VK_KHR_shader_bfloat16's cooperative
 * matrices; the variant built. */
static int khr_dtype_ok(const baatt_caps *caps, baatt_dtype dt)
{
    if (dt == BAATT_DTYPE_F16) return (caps->built & BAATT_BUILT_KHR_F16) != 0;
    return dt == BAATT_DTYPE_BF16 && (caps->features & BAATT_FEATURE_BF16_COOPMAT) &&
           (caps->built & BAATT_BUILT_KHR_BF16);
}

/* KHR cooperative matrices, fp16 or bf16: the best listed shape of the dtype; the subgroup size
 * the device's smallest (where the cooperative-matrix units run: Intel's SIMD8/16, AMD's wave32),
 * pinned with full subgroups where the size varies; then the first tile in the order of brs x bcs
 * (query rows: 1, 2 or 4 subgroups of MF * M rows, at most 2 BC rows, since Q is staged in the K/V
 * tiles; keys) that fits the shared memory and the registers that prefetch it, inside one block
 * in sparse plans. The order is the H100's: 32 x 16 beat 64 x 32 and 64 x 64 at head_dim 128 and
 * 64, dense and sparse (NOTES #76); other vendors are unmeasured. */
static int choose_khr(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t, const baatt_geometry *g,
                      baatt_attend_choice *out)
{
    static const uint32_t brs[] = {32, 64, 16, 128, 8}, bcs[] = {16, 32, 64};
    baatt_mma_shape s;
    uint32_t sg = caps->subgroup_min, d = cfg->head_dim;
    if (!allows(t, BAATT_ATTEND_KHR) || !(caps->features & BAATT_FEATURE_COOPMAT_KHR) ||
        !khr_dtype_ok(caps, cfg->dtype) || !khr_shape(caps, d, cfg->dtype == BAATT_DTYPE_BF16, &s))
        return 0;
    if (caps->subgroup_min != caps->subgroup_max && !(caps->features & BAATT_FEATURE_SUBGROUP_SIZE_CONTROL)) return 0;
    uint32_t mf = t->khr_mf ? t->khr_mf : sg / s.m > 8 ? 2 : 1, rs = mf * s.m, lpr = sg >= rs ? sg / rs : 1;
    if (sg / rs > 8 || rs / sg > 2) return 0; /* the softmax's lanes per row / rows per lane */
    for (size_t i = 0; i < sizeof brs / sizeof brs[0]; i++)
        for (size_t j = 0; j < sizeof bcs / sizeof bcs[0]; j++) {
            uint32_t br = brs[i], bc = bcs[j], nsg = br / rs;
            uint32_t wg = nsg * sg, vectors = bc * d / 8; /* a K or V tile's 16-byte vectors */
            if (br % rs || (nsg != 1 && nsg != 2 && nsg != 4) || bc % s.n || bc % s.k || bc % lpr || br > 2 * bc ||
                wg > caps->max_invocations || vectors % wg || vectors / wg > ATT_MAX_VECTORS ||
                khr_shared_bytes(d, br, bc, s) > caps->max_shared)
                continue;
            if (!cfg->dense && (bc > g->block || g->block % bc || br > g->block || g->block % br)) continue;
            if (t->khr_rows && (br != t->khr_rows || bc != t->khr_keys)) continue;
            *out = (baatt_attend_choice){.path = BAATT_ATTEND_KHR,
                                         .br = br,
                                         .bc = bc,
                                         .wg = wg,
                                         .shape = s,
                                         .subgroup = sg,
                                         .mf = mf,
                                         .sorted = !cfg->dense};
            return 1;
        }
    return 0;
}

/* attention.comp's shared memory: Q and K tiles (padded rows) and the V tile in 4-element words
 * of the storage type, P in fp32 (padded rows), the row-max exchange. */
static uint64_t portable_shared_bytes(uint32_t d, uint32_t br, uint32_t bc, uint64_t word)
{
    return word * ((uint64_t)(br + bc) * (d / 4 + 1) + (uint64_t)bc * d / 4) + 4ull * br * (bc + 1) +
           4ull * br * ATT_LANES;
}

/* The portable variants the tuning asks for that this device and dtype run (built for fp16
 * only; elsewhere the base kernel runs): packed halves need shaderFloat16; long P V runs (16 keys)
 * must tile the key tile (8 does: ATT_UNROLL; head_dim 64 or 128 holds whole runs of dims). */
static uint32_t portable_variant(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t, uint32_t bc)
{
    uint32_t v = cfg->dtype == BAATT_DTYPE_F16 ? t->portable : 0;
    if (!(caps->features & BAATT_FEATURE_FP16_ARITH)) v &= ~(uint32_t)(BAATT_PORTABLE_QK16 | BAATT_PORTABLE_PV16);
    if (bc % 16 || !(v & (BAATT_PORTABLE_QK16 | BAATT_PORTABLE_PV16))) v &= ~(uint32_t)BAATT_PORTABLE_LONG;
    return v;
}

/* The largest tile (BR query rows x BC keys) that fits the device's shared memory and the
 * kernel's register arrays (BC / ATT_LANES <= 8 score columns, a K/V prefetch of at most
 * ATT_MAX_VECTORS vectors per invocation). The variants need no more shared memory than the
 * base kernel. */
static baatt_status choose_portable(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t,
                                    const baatt_geometry *g, baatt_attend_choice *out, char *msg, size_t n)
{
    static const uint32_t tiles[][2] = {{64, 64}, {64, 32}, {32, 32}, {32, 16}, {16, 16}, {16, 8}};
    uint32_t d = cfg->head_dim, es = (uint32_t)baatt_dtype_size(cfg->dtype), dv = d * es / 16;
    for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
        uint32_t br = tiles[i][0], bc = tiles[i][1], wg = br / ATT_ROWS * ATT_LANES;
        /* the kernel's register arrays: BC / ATT_LANES <= 8 score columns, D / 4 / ATT_LANES <= 4
         * output words, whole (head_dim 64 and 128 give 2 and 4); whole unrolled loop steps */
        if (portable_shared_bytes(d, br, bc, 4ull * es) > caps->max_shared || wg > caps->max_invocations ||
            (bc * dv) % wg || bc * dv / wg > ATT_MAX_VECTORS || bc / ATT_LANES > 8 || (d / 4) % ATT_LANES ||
            d / 4 / ATT_LANES > 4 || (d / 4) % ATT_UNROLL || bc % ATT_UNROLL)
            continue;
        if (!cfg->dense && (br > g->block || g->block % br || bc > g->block || g->block % bc)) continue;
        *out = (baatt_attend_choice){
            .path = BAATT_ATTEND_PORTABLE, .br = br, .bc = bc, .wg = wg, .variant = portable_variant(caps, cfg, t, bc)};
        return BAATT_OK;
    }
    return baatt_msgf(msg, n, BAATT_ERROR_MISSING_FEATURE,
                      "device %s has %u bytes of compute shared memory; head_dim %u needs at least %llu", caps->name,
                      caps->max_shared, d, (unsigned long long)portable_shared_bytes(d, 16, 8, 4ull * es));
}

baatt_status baatt_attend_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t,
                                 const baatt_geometry *g, baatt_attend_choice *out, char *msg, size_t n)
{
    *out = (baatt_attend_choice){0};
    if (choose_cm2(caps, cfg, t, g, out) || choose_khr(caps, cfg, t, g, out)) return BAATT_OK;
    return choose_portable(caps, cfg, t, g, out, msg, n);
}

static baatt_status create_sorted_copies(baatt_plan *p)
{
    const baatt_config *c = &p->cfg;
    uint64_t es = baatt_dtype_size(c->dtype);
    uint64_t qbytes = es * p->ch.geo.bh * c->q_len * c->head_dim,
             kbytes = es * p->ch.geo.bhkv * c->kv_len * c->head_dim;
    BAATT_TRY(baatt_plan_scratch(p, BIND_QS, qbytes, "sorted Q"));
    BAATT_TRY(baatt_plan_scratch(p, BIND_KS, kbytes, "sorted K"));
    BAATT_TRY(baatt_plan_scratch(p, BIND_VS, kbytes, "sorted V"));
    if (p->ch.attend.path == BAATT_ATTEND_CM2) BAATT_TRY(baatt_plan_scratch(p, BIND_OS, qbytes, "sorted O"));
    /* where the statistics write the copies, a run that reuses a selection (no statistics) still
     * needs the gather */
    uint32_t sc[SC_PERM_COUNT] = {[SC_PERM_RV] = baatt_row_vectors(c)};
    return baatt_plan_pipeline(p, K_PERMUTE, "permute", sc, SC_PERM_COUNT);
}

/* Runs khr_layout.comp once: one subgroup writes where its accumulator elements lie. */
static baatt_status probe_layout(baatt_context *ctx, baatt_mma_shape s, uint32_t sg, uint32_t *cell)
{
    uint32_t sc[SC_KL_COUNT] = {[SC_KL_SG] = sg, [SC_KL_M] = s.m, [SC_KL_N] = s.n}, words = sg * KL_MAX_E + 1;
    uint32_t pin = ctx->features & BAATT_FEATURE_SUBGROUP_SIZE_CONTROL ? sg : 0;
    VkPipeline pl;
    BAATT_TRY(baatt_pipeline_get(ctx, "khr_layout", sc, SC_KL_COUNT, pin, &pl));
    baatt_buffer b = {0};
    VkDescriptorPool pool = VK_NULL_HANDLE;
    VkDescriptorSet set;
    VkCommandBuffer cmd;
    baatt_status st = baatt_buffer_create(ctx, 4ull * words, 1, &b);
    if (!st) st = baatt_descriptor_set_create(ctx, &pool, &set);
    if (!st) {
        VkDescriptorBufferInfo bi = {b.buffer, 0, VK_WHOLE_SIZE};
        VkWriteDescriptorSet w[BIND_COUNT]; /* every binding on the one buffer: the set layout wants them all */
        for (uint32_t i = 0; i < BIND_COUNT; i++)
            w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                          .dstSet = set,
                                          .dstBinding = i,
                                          .descriptorCount = 1,
                                          .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                          .pBufferInfo = &bi};
        ctx->vk.vkUpdateDescriptorSets(ctx->device, BIND_COUNT, w, 0, NULL);
        st = baatt_cmd_begin(ctx, &cmd);
    }
    if (!st) {
        ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pl);
        ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->pipeline_layout, 0, 1, &set, 0, NULL);
        ctx->vk.vkCmdDispatch(cmd, 1, 1, 1);
        baatt_cmd_host_barrier(ctx, cmd);
        st = baatt_cmd_submit_wait(ctx, cmd);
    }
    if (!st) memcpy(cell, b.mapped, 4ull * words);
    baatt_buffer_destroy(ctx, &b); /* first: after a timed-out wait it drains the GPU's work */
    if (pool) ctx->vk.vkDestroyDescriptorPool(ctx->device, pool, NULL);
    return st;
}

baatt_status baatt_khr_layout(baatt_context *ctx, baatt_mma_shape s, uint32_t sg, uint32_t *rg, uint32_t *rep)
{
    uint32_t key = s.m | (uint32_t)s.n << 8 | sg << 16, cell[64 * KL_MAX_E + 1] = {0};
    int found = 0;
    pthread_mutex_lock(&ctx->lock);
    for (uint32_t i = 0; i < ctx->nkhr_layouts && !found; i++)
        if (ctx->khr_layouts[i].key == key) *rg = ctx->khr_layouts[i].rg, *rep = ctx->khr_layouts[i].rep, found = 1;
    pthread_mutex_unlock(&ctx->lock);
    if (found) return BAATT_OK;
    *rg = *rep = 0;
    /* a probe that cannot run leaves the shared-memory softmax (cached: not tried again) */
    if (sg <= 64 && baatt_shader_available("khr_layout") && probe_layout(ctx, s, sg, cell) == BAATT_OK) {
        uint32_t e = cell[sg * KL_MAX_E];
        if (e * sg == (uint32_t)s.m * s.n) *rg = baatt_khr_layout_classify(cell, sg, e, s.n, rep);
    }
    pthread_mutex_lock(&ctx->lock); /* another thread may have probed it meanwhile: one entry a key */
    for (uint32_t i = 0; i < ctx->nkhr_layouts && !found; i++) found = ctx->khr_layouts[i].key == key;
    if (!found && ctx->nkhr_layouts < sizeof ctx->khr_layouts / sizeof ctx->khr_layouts[0])
        ctx->khr_layouts[ctx->nkhr_layouts++] = (baatt_khr_layout_entry){key, *rg, *rep};
    pthread_mutex_unlock(&ctx->lock);
    return BAATT_OK;
}

baatt_status baatt_attend_create(baatt_plan *p)
{
    const baatt_attend_choice *a = &p->ch.attend;
    const char *dt = baatt_dtype_name(p->cfg.dtype);
    uint32_t d = p->cfg.head_dim, sparse = !p->cfg.dense;
    uint32_t lse = (uint32_t)p->cfg.lse;
    char name[48];
    if (a->sorted) BAATT_TRY(create_sorted_copies(p));
    if (lse) BAATT_TRY(baatt_plan_scratch(p, BIND_LSE, baatt_plan_lse_bytes(p), "log-sum-exp"));
    if (a->path == BAATT_ATTEND_CM2) {
        snprintf(name, sizeof name, "attention_cm2%s_%s", sparse ? "_sorted" : "", dt);
        uint32_t sc[SC_CM2_COUNT] = {[SC_CM2_WG] = a->wg,
                                     [SC_CM2_D] = d,
                                     [SC_CM2_BR] = a->br,
                                     [SC_CM2_BC] = a->bc,
                                     [SC_CM2_TPB] = sparse ? p->ch.geo.block / a->bc : 1,
                                     [SC_CM2_FULL] = a->full,
                                     [SC_CM2_LSE] = lse};
        return baatt_plan_pipeline(p, K_ATTEND, name, sc, SC_CM2_COUNT);
    }
    if (a->path == BAATT_ATTEND_KHR) {
        uint32_t rg = 0, rep = 0;
        if (a->mf == 1 && !p->tuning.khr_shared_softmax)
            BAATT_TRY(baatt_khr_layout(p->ctx, a->shape, a->subgroup, &rg, &rep));
        p->khr_rg = rg;
        uint32_t sc[SC_KHR_COUNT] = {[SC_KHR_WG] = a->wg,
                                     [SC_KHR_D] = d,
                                     [SC_KHR_NSG] = a->wg / a->subgroup,
                                     [SC_KHR_BC] = a->bc,
                                     [SC_KHR_SPARSE] = sparse,
                                     [SC_KHR_SG] = a->subgroup,
                                     [SC_KHR_M] = a->shape.m,
                                     [SC_KHR_N] = a->shape.n,
                                     [SC_KHR_K] = a->shape.k,
                                     [SC_KHR_MF] = a->mf,
                                     [SC_KHR_LSE] = lse,
                                     [SC_KHR_RG] = rg,
                                     [SC_KHR_REP] = rep,
                                     [SC_KHR_P16] = p->cfg.dtype == BAATT_DTYPE_F16 && a->shape.c16};
        uint32_t pin = p->ctx->features & BAATT_FEATURE_SUBGROUP_SIZE_CONTROL ? a->subgroup : 0;
        snprintf(name, sizeof name, "attention_khr%s_%s", a->sorted ? "_sorted" : "", dt);
        return baatt_plan_pipeline_pinned(p, K_ATTEND, name, sc, SC_KHR_COUNT, pin);
    }
    snprintf(name, sizeof name, "attention_%s", dt);
    for (int i = 0; i < 2; i++) /* CMakeLists.txt names the variants so; "long" is a constant */
        if (a->variant & (1u << i))
            snprintf(name + strlen(name), sizeof name - strlen(name), "_%s", baatt_portable_tags[i]);
    uint32_t sc[SC_ATT_COUNT] = {[SC_ATT_WG] = a->wg,
                                 [SC_ATT_D] = d,
                                 [SC_ATT_BR] = a->br,
                                 [SC_ATT_BC] = a->bc,
                                 [SC_ATT_SPARSE] = sparse,
                                 [SC_ATT_LSE] = lse,
                                 [SC_ATT_RUN] = a->variant & BAATT_PORTABLE_LONG ? 2 : 1};
    return baatt_plan_pipeline(p, K_ATTEND, name, sc, SC_ATT_COUNT);
}

/* Row gather (which 0: Q, 1: K and V) into the sorted copies. */
static void record_permute(baatt_rec *r, uint32_t which)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    pc.which = which;
    uint32_t len = which ? pc.kv_len : pc.q_len, heads = which ? p->ch.geo.bhkv : p->ch.geo.bh;
    uint32_t rows = baatt_vector_rows_per_wg(&p->cfg);
    baatt_dispatch(r, K_PERMUTE, &pc, (len + rows - 1) / rows, heads, 1);
}

/* The sorted copies, unless this run's statistics wrote them (a reusing run has none). */
void baatt_attend_record(baatt_rec *r)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    if (p->ch.attend.sorted && (!p->ch.stats.copy || baatt_selection_reused(p))) {
        record_permute(r, 0);
        record_permute(r, 1);
        baatt_barrier(r);
    }
    baatt_dispatch(r, K_ATTEND, &pc, (pc.q_len + p->ch.attend.br - 1) / p->ch.attend.br, p->ch.geo.bh, 1);
    baatt_barrier(r);
}
