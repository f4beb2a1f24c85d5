/* What a plan chose, for clients of the public API (the CLI reports it beside its timings). Thin
 * wrappers over the per-stage choices the plan makes at creation. */
#include <string.h>

#include "internal.h"

/* The sort's name for both sides: one name when Q and K agree (lengths differ: they may not). */
static const char *sort_path(const baatt_plan *p)
{
    const char *q = baatt_plan_sort_path(p, 0), *k = baatt_plan_sort_path(p, 1);
    if (!strcmp(q, k)) return q;
    return !strcmp(q, "radix") ? "radix (q), bitonic (k)" : "bitonic (q), radix (k)";
}

const char *baatt_plan_path(const baatt_plan *p, int stage)
{
    if (!p) return NULL;
    switch (stage) {
    case BAATT_STAGE_SORT: return sort_path(p);
    case BAATT_STAGE_STATS: return "stats";
    case BAATT_STAGE_SCORE: return baatt_plan_score_path(p);
    case BAATT_STAGE_SELECT: return baatt_plan_select_path(p);
    case BAATT_STAGE_ATTEND: return baatt_plan_attention_path(p);
    default: return NULL;
    }
}
