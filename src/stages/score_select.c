/* Stages 3 and 4, score and select (docs/ALGORITHM.md steps 3-4): the corrected block logits of
 * every (query block, key block) pair, one (nq x 3d)(3d x nk) product per head (score.comp in
 * fp32, or score_cm2.comp on bf16 hi/lo parts on cooperative matrix 2, ~2^-16 relative error a
 * term), then per query block the kept key blocks as a bit mask (select*.comp). The logits live
 * only in a bounded scratch, so both run chunk by chunk: whole heads when they fit the budget,
 * else row slices of one head. */
#include "plan.h"

static void choose_chunks(const baatt_tuning *t, const baatt_geometry *g, baatt_score_choice *out)
{
    uint64_t budget = (uint64_t)(t->logits_mib * 1048576.0);
    uint64_t row = (uint64_t)g->nk * 4, head = row * g->nq;
    if (head <= budget) {
        uint64_t h = budget / head;
        out->chunk_rows = g->nq;
        out->chunk_heads = h > g->bh ? g->bh : (uint32_t)h;
    } else {
        uint64_t r = budget / row;
        out->chunk_heads = 1;
        out->chunk_rows = r < 1 ? 1 : r > g->nq ? g->nq : (uint32_t)r;
    }
    if (out->chunk_heads > 65535) out->chunk_heads = 65535; /* a dispatch's z and y */
    if (out->chunk_rows > 65535) out->chunk_rows = 65535;
}

/* The tensor-core product where the device has bf16 cooperative matrix 2 and the variant was
 * built; every logit tile whole (the chunks' too) compiles out the clamped layouts (NOTES #43). */
void baatt_score_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t, const baatt_geometry *g,
                        baatt_score_choice *out)
{
    *out = (baatt_score_choice){.path = BAATT_SCORE_SCALAR, .tile = SCORE_FP32_TILE};
    choose_chunks(t, g, out);
    uint32_t need = BAATT_FEATURE_COOPMAT2_NV | BAATT_FEATURE_BF16_COOPMAT;
    if (cfg->dense || t->score == BAATT_SCORE_SCALAR || (caps->features & need) != need ||
        !(caps->built & BAATT_BUILT_SCORE_CM2))
        return;
    out->path = BAATT_SCORE_CM2;
    out->tile = 64;
    out->kc = 64; /* divides 3 x head_dim */
    out->full = g->nq % out->tile == 0 && g->nk % out->tile == 0 && out->chunk_rows % out->tile == 0;
}

/* One subgroup per row (no workgroup barriers) in keep-ratio mode where the device has subgroup
 * ballots and a row is at most 64 keys a lane (at 128, 256K on the H100, it was no faster);
 * else a workgroup per row, with subgroup or shared-memory reductions. select_row relies on
 * subgroups of exactly the reported size, which holds for SPIR-V 1.5 (the vulkan1.2 target). */
void baatt_select_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t,
                         const baatt_geometry *g, baatt_select_choice *out)
{
    uint32_t sg = caps->subgroup_size;
    baatt_select_path cap = t->select == BAATT_SELECTOR_AUTO ? BAATT_SELECTOR_ROW : t->select;
    *out = (baatt_select_choice){.path = BAATT_SELECTOR_SHARED, .wg = 256, .rows = 1};
    if (cap >= BAATT_SELECTOR_SUBGROUP && caps->subgroup_arith) out->path = BAATT_SELECTOR_SUBGROUP;
    int row_ok = caps->subgroup_ballot && cfg->select_mode == BAATT_SELECT_KEEP_RATIO && sg >= 4 && sg <= out->wg &&
                 (g->nk + sg - 1) / sg <= 64;
    if (cap >= BAATT_SELECTOR_ROW && row_ok) {
        out->path = BAATT_SELECTOR_ROW;
        out->rows = out->wg / sg;
    }
}

uint64_t baatt_score_select_chunks(const baatt_plan *p)
{
    const baatt_score_choice *s = &p->ch.score;
    const baatt_geometry *g = &p->ch.geo;
    return (uint64_t)((g->bh + s->chunk_heads - 1) / s->chunk_heads) * ((g->nq + s->chunk_rows - 1) / s->chunk_rows);
}

static baatt_status create_score(baatt_plan *p)
{
    const baatt_score_choice *s = &p->ch.score;
    uint32_t d = p->cfg.head_dim;
    if (s->path == BAATT_SCORE_CM2) {
        uint32_t sc[SC_SCM2_COUNT] = {[SC_SCM2_WG] = 2 * s->tile,
                                      [SC_SCM2_D] = d,
                                      [SC_SCM2_T] = s->tile,
                                      [SC_SCM2_KC] = s->kc,
                                      [SC_SCM2_FULL] = (uint32_t)s->full};
        return baatt_plan_pipeline(p, K_SCORE, "score_cm2", sc, SC_SCM2_COUNT);
    }
    uint32_t sc[SC_SCORE_COUNT] = {[SC_SCORE_D] = d};
    return baatt_plan_pipeline(p, K_SCORE, "score", sc, SC_SCORE_COUNT);
}

static baatt_status create_select(baatt_plan *p)
{
    const baatt_select_choice *s = &p->ch.select;
    uint32_t sg = p->ctx->caps.subgroup_size, nk = p->ch.geo.nk;
    if (s->path == BAATT_SELECTOR_ROW) {
        uint32_t sc[SC_SEL_COUNT] = {[SC_SEL_WG] = s->wg, [SC_SEL_PER] = (nk + sg - 1) / sg, [SC_SEL_SG] = sg};
        return baatt_plan_pipeline(p, K_SELECT, "select_row", sc, SC_SEL_COUNT);
    }
    uint32_t sc[SC_SEL_SG] = {[SC_SEL_WG] = s->wg, [SC_SEL_PER] = (nk + s->wg - 1) / s->wg};
    return baatt_plan_pipeline(p, K_SELECT, s->path == BAATT_SELECTOR_SUBGROUP ? "select_sg" : "select", sc, SC_SEL_SG);
}

baatt_status baatt_score_select_create(baatt_plan *p)
{
    const baatt_geometry *g = &p->ch.geo;
    const baatt_score_choice *s = &p->ch.score;
    uint64_t slots = p->ch.auto_sort ? p->ch.cands.n : 1, rows = slots * g->bh * g->nq;
    BAATT_TRY(baatt_plan_scratch(p, BIND_LOGITS, 4ull * s->chunk_heads * s->chunk_rows * g->nk, "block logits"));
    /* one mask per auto candidate: the name says how to need fewer where the buffer limit bites */
    BAATT_TRY(baatt_plan_scratch(p, BIND_MASK, 4ull * rows * g->words,
                                 slots > 1 ? "selection masks (one per auto candidate; covariance on or a fixed sort "
                                             "halves them)"
                                           : "selection mask"));
    BAATT_TRY(baatt_plan_scratch(p, BIND_COUNTS, 4ull * rows, "selection counts"));
    BAATT_TRY(create_score(p));
    return create_select(p);
}

void baatt_score_select_record(baatt_rec *r, uint32_t slot)
{
    baatt_plan *p = r->p;
    const baatt_score_choice *s = &p->ch.score;
    uint32_t bh = p->ch.geo.bh, t = s->tile, rpw = p->ch.select.rows;
    baatt_push pc = p->base;
    pc.slot = slot;
    for (uint32_t h0 = 0; h0 < bh; h0 += s->chunk_heads) {
        pc.head0 = h0;
        pc.nheads_chunk = bh - h0 < s->chunk_heads ? bh - h0 : s->chunk_heads;
        for (uint32_t r0 = 0; r0 < pc.nq; r0 += s->chunk_rows) {
            pc.row0 = r0;
            pc.rows = pc.nq - r0 < s->chunk_rows ? pc.nq - r0 : s->chunk_rows;
            baatt_dispatch(r, K_SCORE, &pc, (pc.nk + t - 1) / t, (pc.rows + t - 1) / t, pc.nheads_chunk);
            baatt_barrier(r);
            baatt_mark(r, BAATT_STAGE_SCORE);
            baatt_dispatch(r, K_SELECT, &pc, (pc.rows + rpw - 1) / rpw, pc.nheads_chunk, 1);
            baatt_barrier(r);
            baatt_mark(r, BAATT_STAGE_SELECT);
        }
    }
}
