/* Stage 2, statistics: per block, the mean and diagonal variance of its tokens, written as the
 * scoring features [mean, variance-weighted terms] (stats.comp; docs/ALGORITHM.md step 2).
 * Where the attention reads norm-sorted copies it writes them as it reads the rows (COPY), and
 * where the tensor-core score runs, the features' bf16 hi/lo parts (SPLIT). */
#include <stdio.h>

#include "plan.h"

/* The copies come from here unless auto sort may still rewrite the perms after the statistics
 * (then the attention stage's permute pass makes them). */
void baatt_stats_choose(const baatt_config *cfg, const baatt_attend_choice *a, const baatt_score_choice *s,
                        int auto_sort, baatt_stats_choice *out)
{
    out->copy = !cfg->dense && a->sorted && !auto_sort;
    out->split = !cfg->dense && s->path == BAATT_SCORE_CM2;
}

baatt_status baatt_stats_create(baatt_plan *p)
{
    const baatt_geometry *g = &p->ch.geo;
    uint64_t f = 3ull * p->cfg.head_dim * 4; /* fp32 features per block */
    BAATT_TRY(baatt_plan_scratch(p, BIND_QFEAT, f * g->bh * g->nq, "query block features"));
    BAATT_TRY(baatt_plan_scratch(p, BIND_KFEAT, f * g->bhkv * g->nk, "key block features"));
    if (p->ch.stats.split) { /* two bf16 parts per fp32 feature: as many bytes */
        BAATT_TRY(baatt_plan_scratch(p, BIND_QSPLIT, f * g->bh * g->nq, "query block features (bf16 parts)"));
        BAATT_TRY(baatt_plan_scratch(p, BIND_KSPLIT, f * g->bhkv * g->nk, "key block features (bf16 parts)"));
    }
    char name[32];
    snprintf(name, sizeof name, "stats_%s", baatt_dtype_name(p->cfg.dtype));
    uint32_t sc[SC_STATS_COUNT] = {[SC_STATS_D] = p->cfg.head_dim,
                                   [SC_STATS_COPY] = (uint32_t)p->ch.stats.copy,
                                   [SC_STATS_SPLIT] = (uint32_t)p->ch.stats.split};
    return baatt_plan_pipeline(p, K_STATS, name, sc, SC_STATS_COUNT);
}

static void record_side(baatt_rec *r, uint32_t identity, uint32_t which, float cov, uint32_t copy)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    pc.identity = identity, pc.which = which, pc.cov = cov, pc.copy = copy;
    baatt_dispatch(r, K_STATS, &pc, which ? pc.nk : pc.nq, which ? p->ch.geo.bhkv : p->ch.geo.bh, 1);
}

void baatt_stats_record(baatt_rec *r, uint32_t identity, float cov)
{
    for (uint32_t which = 0; which < 2; which++) record_side(r, identity, which, cov, !identity);
}

/* The K features carry no lambda, and the sorted copy of Q is already written. */
void baatt_stats_record_lambda(baatt_rec *r, uint32_t identity, float cov) { record_side(r, identity, 0, cov, 0); }
