/* The per-kv-head choice (BAATT_SORT_AUTO and/or BAATT_COVARIANCE_AUTO; docs/ALGORITHM.md, "auto
 * sort"): candidate 0 (the first blocking and lambda) is selected into mask slot 0 by the main
 * pass; here every further candidate c gets its statistics, logits and selection (slot c, reusing
 * the feature and logit scratch), then the attention mass that sampled query rows put on each
 * candidate's selection (auto_recall.comp), and per kv head the candidate that recalls the most
 * (auto_choose.comp), which rewrites the perms (original-order winners) and slot 0 of the heads
 * whose winner is not candidate 0. Timed as STATS, SCORE and SELECT. */
#include <stdio.h>

#include "plan.h"

uint64_t baatt_auto_choice_offset(const baatt_plan *p)
{
    return 4ull * AUTO_CHOICE_WORD((uint64_t)p->ch.geo.bh, p->ch.samples, p->ch.cands.n);
}

baatt_status baatt_auto_sort_create(baatt_plan *p)
{
    const baatt_choice *ch = &p->ch;
    BAATT_TRY(
        baatt_plan_scratch(p, BIND_AUTO, baatt_auto_choice_offset(p) + 4ull * ch->geo.bhkv, "auto choice recalls"));
    char name[32];
    snprintf(name, sizeof name, "auto_recall_%s", baatt_dtype_name(p->cfg.dtype));
    uint32_t rec[SC_RECALL_COUNT] = {[SC_RECALL_D] = p->cfg.head_dim,
                                     [SC_RECALL_ROWS] = AUTO_SAMPLE_ROWS,
                                     [SC_RECALL_CANDS] = ch->cands.n,
                                     [SC_RECALL_SORTED] = ch->cands.sorted};
    uint32_t cho[SC_CHOOSE_COUNT] = {
        [SC_CHOOSE_ROWS] = AUTO_SAMPLE_ROWS, [SC_CHOOSE_CANDS] = ch->cands.n, [SC_CHOOSE_SORTED] = ch->cands.sorted};
    BAATT_TRY(baatt_plan_pipeline(p, K_AUTO_RECALL, name, rec, SC_RECALL_COUNT));
    return baatt_plan_pipeline(p, K_AUTO_CHOOSE, "auto_choose", cho, SC_CHOOSE_COUNT);
}

/* Candidates 1.. in blocking-major order, so a blocking's K statistics are computed once: its
 * first lambda writes both sides' features, the next one only the Q side's (lambda lives in the
 * Q features, stats.comp), so both score paths run unchanged. */
static void record_candidates(baatt_rec *r)
{
    baatt_plan *p = r->p;
    const baatt_auto_cands *a = &p->ch.cands;
    float t = p->base.scale;
    for (uint32_t b = 0; b < a->blockings; b++)
        for (uint32_t l = 0; l < a->lambdas; l++) {
            uint32_t c = l * a->blockings + b, identity = !((a->sorted >> c) & 1u);
            float cov = (a->cov >> c) & 1u ? 0.5f * t * t : 0.0f;
            if (c == 0) continue;
            if (l == 0) baatt_stats_record(r, identity, cov);
            else baatt_stats_record_lambda(r, identity, cov);
            baatt_barrier(r);
            baatt_mark(r, BAATT_STAGE_STATS);
            baatt_score_select_record(r, c);
        }
}

void baatt_auto_sort_record(baatt_rec *r)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    record_candidates(r);
    baatt_dispatch(r, K_AUTO_RECALL, &pc, (p->ch.samples + AUTO_RPW - 1) / AUTO_RPW, p->ch.geo.bh, 1);
    baatt_barrier(r);
    /* enough workgroups per kv head to rewrite its rows in parallel; each re-sums the recalls */
    uint32_t g = pc.heads / pc.kv_heads, work = pc.kv_len;
    if (g * pc.q_len > work) work = g * pc.q_len;
    if (g * pc.nq * pc.words > work) work = g * pc.nq * pc.words;
    uint32_t chunks = (work + 255) / 256;
    baatt_dispatch(r, K_AUTO_CHOOSE, &pc, chunks < 1024 ? chunks : 1024, p->ch.geo.bhkv, 1);
    baatt_barrier(r);
    baatt_mark(r, BAATT_STAGE_SELECT);
}
