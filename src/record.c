/* Recording primitives of every stage: dispatches, barriers and the timestamps behind
 * baatt_plan_stats (one per stage mark) and the dispatch profile (tuning.profile: one per
 * dispatch, summed per kernel over the plan's runs, printed to stderr when it is destroyed;
 * dispatches recorded without a barrier between them overlap, and the later one gets the
 * overlap). */
#include <stdio.h>
#include <stdlib.h>

#include "plan.h"

enum { PROF_MAX_MARKS = 4096, PROF_MARK = -2 };
static const char *const kernel_names[K_COUNT] = {
    "sort_keys", "sort_local", "sort_global", "radix_hist",  "radix_scan",  "radix_scatter", "sort_perm",
    "stats",     "score",      "select",      "auto_recall", "auto_choose", "permute",       "attention"};

static void write_mark(baatt_rec *r, int stage, baatt_kernel kind)
{
    baatt_timing *t = &r->p->timing;
    if (!t->pool || t->n >= t->max) return;
    if (stage == PROF_MARK && t->marks++ >= PROF_MAX_MARKS) return; /* stage marks keep their room */
    t->stage[t->n] = (int8_t)stage;
    t->kind[t->n] = (uint8_t)kind;
    r->p->ctx->vk.vkCmdWriteTimestamp(r->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, t->pool, t->n++);
}

void baatt_mark(baatt_rec *r, int stage) { write_mark(r, stage, 0); }

void baatt_dispatch(baatt_rec *r, baatt_kernel k, const baatt_push *pc, uint32_t x, uint32_t y, uint32_t z)
{
    baatt_context *ctx = r->p->ctx;
    ctx->vk.vkCmdBindPipeline(r->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, r->p->pipe[k]);
    ctx->vk.vkCmdPushConstants(r->cmd, ctx->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof *pc, pc);
    ctx->vk.vkCmdDispatch(r->cmd, x, y, z);
    if (r->p->timing.profile) write_mark(r, PROF_MARK, k);
}

void baatt_barrier(baatt_rec *r) { baatt_cmd_barrier(r->p->ctx, r->cmd); }

void baatt_record_begin(baatt_rec *r)
{
    baatt_plan *p = r->p;
    baatt_context *ctx = p->ctx;
    p->timing.n = 0;
    p->timing.marks = 0;
    p->timing.recorded++;
    if (p->timing.pool) ctx->vk.vkCmdResetQueryPool(r->cmd, p->timing.pool, 0, p->timing.max);
    ctx->vk.vkCmdBindDescriptorSets(r->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->pipeline_layout, 0, 1, &p->set, 0,
                                    NULL);
}

baatt_status baatt_timing_create(baatt_plan *p, uint64_t stage_marks)
{
    baatt_context *ctx = p->ctx;
    baatt_timing *t = &p->timing;
    t->profile = p->tuning.profile;
    if (!ctx->info.timestamp_period_ns) return BAATT_OK;
    uint64_t marks = stage_marks + (t->profile ? PROF_MAX_MARKS : 0);
    t->max = marks > UINT32_MAX ? UINT32_MAX : (uint32_t)marks;
    t->stage = calloc(t->max, 1);
    t->kind = calloc(t->max, 1);
    if (!t->stage || !t->kind) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    VkQueryPoolCreateInfo qi = {
        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = t->max};
    return baatt_vk(ctx, ctx->vk.vkCreateQueryPool(ctx->device, &qi, NULL, &t->pool), "vkCreateQueryPool");
}

static void profile_print(const baatt_timing *t)
{
    if (!t->profile || !t->runs) return;
    fprintf(stderr, "baatt: dispatch profile, mean of %u run(s):\n", t->runs);
    for (int i = 0; i < K_COUNT; i++)
        if (t->count[i])
            fprintf(stderr, "  %-13s %9.3f ms  %6.1f dispatches\n", kernel_names[i], t->ms[i] / t->runs,
                    (double)t->count[i] / t->runs);
}

void baatt_timing_destroy(baatt_plan *p)
{
    baatt_timing *t = &p->timing;
    if (t->pool) p->ctx->vk.vkDestroyQueryPool(p->ctx->device, t->pool, NULL);
    profile_print(t);
    free(t->stage);
    free(t->kind);
}

void baatt_timing_read(baatt_plan *p, baatt_run_stats *st)
{
    baatt_timing *t = &p->timing;
    if (!t->pool || t->n < 2) return;
    uint64_t *ts = malloc(sizeof *ts * t->n);
    if (!ts) return;
    VkResult r = p->ctx->vk.vkGetQueryPoolResults(p->ctx->device, t->pool, 0, t->n, sizeof *ts * t->n, ts, sizeof ts[0],
                                                  VK_QUERY_RESULT_64_BIT);
    if (r != VK_SUCCESS) {
        free(ts);
        return;
    }
    double ns = p->ctx->info.timestamp_period_ns;
    /* interval i (ending at timestamp i) belongs to the stage of the first stage mark at or after
     * it; dispatch marks only split it */
    int stage = -1, sum = t->profile && t->profiled != t->recorded;
    for (uint32_t i = t->n - 1; i >= 1; i--) {
        double ms = (double)(ts[i] - ts[i - 1]) * ns * 1e-6;
        if (t->stage[i] != PROF_MARK) stage = t->stage[i];
        else if (sum) t->ms[t->kind[i]] += ms, t->count[t->kind[i]]++;
        if (stage >= 0) st->stage_ms[stage] += ms;
    }
    if (sum) t->profiled = t->recorded, t->runs++;
    st->gpu_ms = (double)(ts[t->n - 1] - ts[0]) * ns * 1e-6;
    st->timed = 1;
    free(ts);
}
