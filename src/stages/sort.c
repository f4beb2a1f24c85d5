/* Stage 1, sort: per head, the tokens' L2 norms as sort keys (sort_keys), their stable
 * descending argsort (the LSD radix sort sort_radix where the device has subgroup ballots and
 * the side is long, else the bitonic sort_local/sort_global) and the permutation (sort_perm;
 * the identity with sorting off). docs/ALGORITHM.md step 1. */
#include <stdio.h>

#include "plan.h"

/* The radix sort's workgroup, or 0 where it cannot run: it needs subgroup ballots, at most
 * RADIX_MAX_SUBGROUPS subgroups a workgroup and whole subgroups. Where the subgroup size may
 * vary it is sized for the smallest and must hold the largest. */
uint32_t baatt_radix_workgroup(const baatt_caps *caps)
{
    uint32_t lo = caps->subgroup_min, hi = caps->subgroup_max;
    uint32_t wg = RADIX_MAX_SUBGROUPS * lo < 256 ? RADIX_MAX_SUBGROUPS * lo : 256;
    if (!caps->subgroup_ballot || lo < 4 || hi > wg || wg % hi) return 0;
    return wg;
}

/* Radix for sides padded to at least tuning.radix_min keys (H100: faster from 64K, the bitonic
 * sort faster up to 16K; NOTES.md #48); bitonic chunks of 4096 keys (32 KiB) where the device
 * allows, else 2 keys per invocation. */
void baatt_sort_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t, const baatt_geometry *g,
                       baatt_sort_choice *out)
{
    *out = (baatt_sort_choice){.side = {BAATT_SORTER_NONE, BAATT_SORTER_NONE}};
    out->wg = caps->max_invocations >= 1024 ? 1024 : caps->max_invocations >= 512 ? 512 : 256;
    out->chunk = caps->max_shared >= 8 * 4096 && out->wg == 1024 ? 4096 : 2 * out->wg;
    if (cfg->dense || cfg->norm_sort == BAATT_SORT_OFF) return;
    uint32_t radix_wg = t->sort == BAATT_SORTER_BITONIC ? 0 : baatt_radix_workgroup(caps);
    uint32_t padded[2] = {g->pq, g->pk};
    for (int side = 0; side < 2; side++) {
        int radix = radix_wg && (t->sort == BAATT_SORTER_RADIX || padded[side] >= t->radix_min);
        out->side[side] = radix ? BAATT_SORTER_RADIX : BAATT_SORTER_BITONIC;
        if (radix) out->radix_wg = radix_wg;
    }
}

static int sorted(const baatt_plan *p) { return p->ch.sort.side[0] != BAATT_SORTER_NONE; }

baatt_status baatt_sort_create(baatt_plan *p)
{
    const baatt_choice *ch = &p->ch;
    const baatt_geometry *g = &ch->geo;
    uint32_t d = p->cfg.head_dim;
    BAATT_TRY(baatt_plan_scratch(p, BIND_PERM_Q, 4ull * g->bh * p->cfg.q_len, "perm_q"));
    BAATT_TRY(baatt_plan_scratch(p, BIND_PERM_K, 4ull * g->bhkv * p->cfg.kv_len, "perm_k"));
    BAATT_TRY(baatt_plan_pipeline(p, K_SORT_PERM, "sort_perm", NULL, 0));
    if (!sorted(p)) return BAATT_OK;
    uint64_t keys = 8ull * ((uint64_t)g->bh * g->pq + (uint64_t)g->bhkv * g->pk);
    BAATT_TRY(baatt_plan_scratch(p, BIND_KEYS, keys, "sort keys"));
    char name[32];
    snprintf(name, sizeof name, "sort_keys_%s", baatt_dtype_name(p->cfg.dtype));
    uint32_t sk[SC_KEYS_COUNT] = {[SC_KEYS_D] = d};
    BAATT_TRY(baatt_plan_pipeline(p, K_SORT_KEYS, name, sk, SC_KEYS_COUNT));
    if (ch->sort.side[0] == BAATT_SORTER_BITONIC || ch->sort.side[1] == BAATT_SORTER_BITONIC) {
        uint32_t sl[SC_LOCAL_COUNT] = {[SC_LOCAL_WG] = ch->sort.wg, [SC_LOCAL_N] = ch->sort.chunk};
        uint32_t sg[SC_GLOBAL_COUNT] = {[SC_GLOBAL_N] = ch->sort.chunk};
        BAATT_TRY(baatt_plan_pipeline(p, K_SORT_LOCAL, "sort_local", sl, SC_LOCAL_COUNT));
        BAATT_TRY(baatt_plan_pipeline(p, K_SORT_GLOBAL, "sort_global", sg, SC_GLOBAL_COUNT));
    }
    if (!ch->sort.radix_wg) return BAATT_OK;
    uint64_t tile = (uint64_t)ch->sort.radix_wg * RADIX_KPT;
    uint64_t tiles = g->bh * ((p->cfg.q_len + tile - 1) / tile) + g->bhkv * ((p->cfg.kv_len + tile - 1) / tile);
    BAATT_TRY(baatt_plan_scratch(p, BIND_KEYS2, keys, "sort keys (radix copy)"));
    BAATT_TRY(baatt_plan_scratch(p, BIND_HIST, 4ull * 256 * tiles, "radix sort digit counts"));
    for (uint32_t phase = 0; phase < 3; phase++) {
        uint32_t rs[SC_RADIX_COUNT] = {
            [SC_RADIX_WG] = ch->sort.radix_wg, [SC_RADIX_KPT] = RADIX_KPT, [SC_RADIX_PHASE] = phase};
        BAATT_TRY(baatt_plan_pipeline(p, K_RADIX_HIST + phase, "sort_radix", rs, SC_RADIX_COUNT));
    }
    return BAATT_OK;
}

/* Four passes of 8 bits over one side's keys, each a histogram, a scan and a scatter,
 * KEYS -> KEYS2 -> KEYS -> KEYS2 -> KEYS. */
static void record_radix(baatt_rec *r, baatt_push *pc, uint32_t len, uint32_t heads)
{
    uint32_t tile = r->p->ch.sort.radix_wg * RADIX_KPT, tiles = (len + tile - 1) / tile;
    for (uint32_t pass = 0; pass < 4; pass++) {
        pc->sort_k = 8 * pass;
        pc->sort_j = pass & 1;
        baatt_dispatch(r, K_RADIX_HIST, pc, tiles, heads, 1);
        baatt_barrier(r);
        baatt_dispatch(r, K_RADIX_SCAN, pc, 1, heads, 1);
        baatt_barrier(r);
        baatt_dispatch(r, K_RADIX_SCATTER, pc, tiles, heads, 1);
        baatt_barrier(r);
    }
}

/* Local chunks, then the global merge steps (two a pass where both are global) with local tails. */
static void record_bitonic(baatt_rec *r, baatt_push *pc, uint32_t heads)
{
    uint32_t chunk = r->p->ch.sort.chunk, n = chunk < pc->padded ? chunk : pc->padded;
    pc->sort_k = 0;
    baatt_dispatch(r, K_SORT_LOCAL, pc, pc->padded / n, heads, 1);
    baatt_barrier(r);
    for (uint32_t k = 2 * n; k <= pc->padded; k <<= 1) {
        pc->sort_k = k;
        for (uint32_t j = k >> 1; j >= n; j >>= 1) {
            int pair = j / 2 >= n;
            pc->sort_j = j;
            baatt_dispatch(r, K_SORT_GLOBAL, pc, (pc->padded / (pair ? 4 : 2) + 255) / 256, heads, 1);
            baatt_barrier(r);
            if (pair) j >>= 1;
        }
        baatt_dispatch(r, K_SORT_LOCAL, pc, pc->padded / n, heads, 1);
        baatt_barrier(r);
    }
}

void baatt_sort_record(baatt_rec *r, uint32_t which)
{
    baatt_plan *p = r->p;
    const baatt_geometry *g = &p->ch.geo;
    baatt_push pc = p->base;
    uint32_t heads = which ? g->bhkv : g->bh, len = which ? pc.kv_len : pc.q_len;
    baatt_sort_path path = p->ch.sort.side[which];
    pc.which = which;
    pc.padded = which ? g->pk : g->pq;
    pc.key_offset = which ? g->bh * g->pq : 0;
    pc.identity = path == BAATT_SORTER_NONE;
    if (path != BAATT_SORTER_NONE) {
        uint32_t rows = SORT_KEYS_C * baatt_vector_rows_per_wg(&p->cfg);
        baatt_dispatch(r, K_SORT_KEYS, &pc, (pc.padded + rows - 1) / rows, heads, 1);
        baatt_barrier(r);
        if (path == BAATT_SORTER_RADIX) record_radix(r, &pc, len, heads);
        else record_bitonic(r, &pc, heads);
    }
    baatt_dispatch(r, K_SORT_PERM, &pc, (len + 255) / 256, heads, 1);
}
