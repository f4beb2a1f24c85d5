/* Auto sort (BAATT_SORT_AUTO; docs/ALGORITHM.md, "auto sort"): after the norm-sorted blocking's
 * selection (mask slot 0), the original-order blocking's statistics, logits and selection (slot
 * 1, reusing the feature and logit scratch), the attention mass that sampled query rows put on
 * each selection (auto_recall.comp), and per kv head the blocking that recalls more
 * (auto_choose.comp), which rewrites the perms and slot 0 of the heads that keep the original
 * order. Timed as STATS, SCORE and SELECT. */
#include <stdio.h>

#include "plan.h"

baatt_status baatt_auto_sort_create(baatt_plan *p)
{
    const baatt_choice *ch = &p->ch;
    BAATT_TRY(
        baatt_plan_scratch(p, BIND_AUTO, 4ull * (2ull * ch->geo.bh * ch->samples + ch->geo.bhkv), "auto sort recalls"));
    char name[32];
    snprintf(name, sizeof name, "auto_recall_%s", baatt_dtype_name(p->cfg.dtype));
    uint32_t rec[SC_RECALL_COUNT] = {[SC_RECALL_D] = p->cfg.head_dim, [SC_RECALL_ROWS] = AUTO_SAMPLE_ROWS};
    uint32_t cho[SC_CHOOSE_COUNT] = {[SC_CHOOSE_ROWS] = AUTO_SAMPLE_ROWS};
    BAATT_TRY(baatt_plan_pipeline(p, K_AUTO_RECALL, name, rec, SC_RECALL_COUNT));
    return baatt_plan_pipeline(p, K_AUTO_CHOOSE, "auto_choose", cho, SC_CHOOSE_COUNT);
}

void baatt_auto_sort_record(baatt_rec *r)
{
    baatt_plan *p = r->p;
    baatt_push pc = p->base;
    baatt_stats_record(r, 1);
    baatt_barrier(r);
    baatt_mark(r, BAATT_STAGE_STATS);
    baatt_score_select_record(r, 1);
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
