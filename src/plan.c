/* Plans: creation (the choice of paths, then each stage's scratch and pipelines), the top-level
 * recording of the BA-Att stages, and the host-array path. The stages themselves are in
 * src/stages/, one file each; results are read back in readback.c. */
#include <stdlib.h>
#include <string.h>

#include "plan.h"

/* ------------------------------------------------------------------------------------------ */
/* creation                                                                                   */

baatt_status baatt_plan_scratch(baatt_plan *p, int binding, uint64_t bytes, const char *what)
{
    if (bytes > p->ctx->info.max_storage_buffer_range)
        return baatt_fail(p->ctx, BAATT_ERROR_TOO_LARGE, "%s needs %.1f MiB, over this device's %.1f MiB buffer limit",
                          what, bytes / 1048576.0, p->ctx->info.max_storage_buffer_range / 1048576.0);
    return baatt_buffer_create(p->ctx, bytes, 0, &p->buf[binding]);
}

baatt_status baatt_plan_pipeline(baatt_plan *p, baatt_kernel kernel, const char *variant, const uint32_t *spec,
                                 uint32_t n)
{
    return baatt_pipeline_get(p->ctx, variant, spec, n, 0, &p->pipe[kernel]);
}

baatt_status baatt_plan_pipeline_pinned(baatt_plan *p, baatt_kernel kernel, const char *variant, const uint32_t *spec,
                                        uint32_t n, uint32_t subgroup)
{
    return baatt_pipeline_get(p->ctx, variant, spec, n, subgroup, &p->pipe[kernel]);
}

static baatt_push base_push(const baatt_config *c, const baatt_geometry *g)
{
    float t = baatt_config_scale(c);
    return (baatt_push){.batch = c->batch,
                        .heads = c->heads,
                        .kv_heads = c->kv_heads,
                        .q_len = c->q_len,
                        .kv_len = c->kv_len,
                        .head_dim = c->head_dim,
                        .block = g->block,
                        .nq = g->nq,
                        .nk = g->nk,
                        .words = g->words,
                        .mode = c->select_mode == BAATT_SELECT_MASS_THRESHOLD,
                        .keep = c->dense ? g->nk : baatt_config_keep_blocks(c),
                        .min_blocks = c->min_blocks,
                        .max_blocks = c->max_blocks,
                        .threshold = c->mass_threshold,
                        .scale = t,
                        .cov = c->covariance != BAATT_COVARIANCE_OFF ? 0.5f * t * t : 0.0f}; /* candidate 0's */
}

/* One timestamp per baatt_mark of record_stages: start, sort, stats, score and select per logit
 * chunk, attention; the auto choice adds stats and the chunks per further candidate, and the
 * choice. */
static uint64_t stage_marks(const baatt_plan *p)
{
    uint64_t chunks = p->cfg.dense ? 0 : baatt_score_select_chunks(p);
    return 4 + 2 * chunks + (p->ch.auto_sort ? (p->ch.cands.n - 1) * (1 + 2 * chunks) + 1 : 0);
}

/* Every stage the config runs creates its scratch and pipelines; the bindings no stage uses get
 * a placeholder, so one descriptor set serves every pipeline. */
static baatt_status create_stages(baatt_plan *p)
{
    if (!p->cfg.dense) {
        BAATT_TRY(baatt_sort_create(p));
        BAATT_TRY(baatt_stats_create(p));
        BAATT_TRY(baatt_score_select_create(p));
        if (p->ch.auto_sort) BAATT_TRY(baatt_auto_sort_create(p));
    }
    BAATT_TRY(baatt_attend_create(p));
    for (int b = BIND_FIRST_SCRATCH; b < BIND_COUNT; b++)
        if (!p->buf[b].buffer) BAATT_TRY(baatt_plan_scratch(p, b, 16, "placeholder"));
    BAATT_TRY(baatt_descriptor_set_create(p->ctx, &p->dpool, &p->set));
    return baatt_timing_create(p, stage_marks(p));
}

baatt_status baatt_plan_create_tuned(baatt_context *ctx, const baatt_config *cfg, const baatt_tuning *tuning,
                                     baatt_plan **out)
{
    if (!ctx || !out) return BAATT_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    char msg[512];
    baatt_status s = baatt_config_check(cfg, msg, sizeof msg);
    if (s) return baatt_fail(ctx, s, "invalid config: %s", msg);
    baatt_choice ch;
    s = baatt_choose(&ctx->caps, cfg, tuning ? tuning : &ctx->tuning, &ch, msg, sizeof msg);
    if (s) return baatt_fail(ctx, s, "%s", msg);
    baatt_plan *p = calloc(1, sizeof *p);
    if (!p) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    *p = (baatt_plan){.ctx = ctx, .cfg = *cfg, .tuning = tuning ? *tuning : ctx->tuning, .ch = ch};
    p->tuning.profile |= ctx->tuning.profile; /* BAATT_PROFILE=dispatch: an operator's switch for every plan */
    p->base = base_push(cfg, &ch.geo);
    s = create_stages(p);
    if (s) {
        baatt_plan_destroy(p);
        return s;
    }
    *out = p;
    return BAATT_OK;
}

baatt_status baatt_plan_create(baatt_context *ctx, const baatt_config *cfg, baatt_plan **out)
{
    return baatt_plan_create_tuned(ctx, cfg, NULL, out);
}

void baatt_plan_destroy(baatt_plan *p)
{
    if (!p) return;
    baatt_context *ctx = p->ctx;
    for (int b = 0; b < BIND_COUNT; b++) baatt_buffer_destroy(ctx, &p->buf[b]);
    for (int i = 0; i < 4; i++) baatt_buffer_destroy(ctx, &p->host[i]);
    baatt_buffer_destroy(ctx, &p->staging);
    if (p->dpool) ctx->vk.vkDestroyDescriptorPool(ctx->device, p->dpool, NULL);
    baatt_timing_destroy(p);
    baatt_selection_destroy(p);
    free(p);
}

uint64_t baatt_plan_scratch_bytes(const baatt_plan *p)
{
    uint64_t bytes = 0;
    for (int b = 0; p && b < BIND_COUNT; b++) bytes += p->buf[b].size;
    return bytes;
}

/* ------------------------------------------------------------------------------------------ */
/* recording                                                                                  */

void baatt_plan_tensor_bytes(const baatt_plan *p, uint64_t *q, uint64_t *kv)
{
    const baatt_config *c = &p->cfg;
    uint64_t es = baatt_dtype_size(c->dtype);
    *q = es * p->ch.geo.bh * c->q_len * c->head_dim;
    *kv = es * p->ch.geo.bhkv * c->kv_len * c->head_dim;
}

uint64_t baatt_plan_lse_bytes(const baatt_plan *p) { return 4ull * p->ch.geo.bh * p->cfg.q_len; }

/* The caller's tensors at their bindings, the plan's scratch at the others; the LSE binding takes
 * the caller's tensor where one is given (else the plan's buffer, or its placeholder). */
static void bind_tensors(baatt_plan *p, const baatt_tensors *t, const baatt_device_tensor *lse)
{
    uint64_t qn, kn;
    baatt_plan_tensor_bytes(p, &qn, &kn);
    const baatt_device_tensor *ten[4] = {&t->q, &t->k, &t->v, &t->o};
    VkDeviceSize tsz[4] = {qn, kn, kn, qn};
    VkDescriptorBufferInfo bi[BIND_COUNT];
    VkWriteDescriptorSet w[BIND_COUNT];
    for (uint32_t i = 0; i < BIND_COUNT; i++) {
        bi[i] = i < BIND_FIRST_SCRATCH ? (VkDescriptorBufferInfo){ten[i]->buffer, ten[i]->offset, tsz[i]}
                                       : (VkDescriptorBufferInfo){p->buf[i].buffer, 0, VK_WHOLE_SIZE};
        if (i == BIND_LSE && lse) bi[i] = (VkDescriptorBufferInfo){lse->buffer, lse->offset, baatt_plan_lse_bytes(p)};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstSet = p->set,
                                      .dstBinding = i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
    }
    p->ctx->vk.vkUpdateDescriptorSets(p->ctx->device, BIND_COUNT, w, 0, NULL);
}

/* sort -> statistics -> score and select per logit chunk -> (auto sort) -> attention; a run that
 * reuses the held selection: (sorted copies) -> attention. */
static void record_stages(baatt_rec *r)
{
    baatt_plan *p = r->p;
    int reuse = baatt_selection_reused(p);
    baatt_record_begin(r);
    baatt_barrier(r); /* the caller's (or our upload's) writes of Q, K, V */
    baatt_mark(r, -1);
    if (!reuse && !p->cfg.dense) {
        /* one side after the other: both at once was slower (NOTES.md #38: their keys outgrow
         * the L2); the barrier orders the Q side's reads of KEYS before the K side's writes */
        baatt_sort_record(r, 0);
        baatt_barrier(r);
        baatt_sort_record(r, 1);
        baatt_barrier(r);
        baatt_mark(r, BAATT_STAGE_SORT);
        baatt_stats_record(r, 0, p->base.cov);
        baatt_barrier(r);
        baatt_mark(r, BAATT_STAGE_STATS);
        baatt_score_select_record(r, 0);
        if (p->ch.auto_sort) baatt_auto_sort_record(r);
    }
    baatt_attend_record(r);
    baatt_mark(r, BAATT_STAGE_ATTEND);
    baatt_selection_recorded(p);
}

static baatt_status check_tensor(baatt_plan *p, const baatt_device_tensor *t, const char *name, uint64_t bytes)
{
    if (!t->buffer) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "tensor %s has no VkBuffer", name);
    if (t->offset % p->ctx->limits.minStorageBufferOffsetAlignment)
        return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT,
                          "tensor %s offset %llu is not a multiple of minStorageBufferOffsetAlignment (%llu)", name,
                          (unsigned long long)t->offset,
                          (unsigned long long)p->ctx->limits.minStorageBufferOffsetAlignment);
    /* each tensor is bound as one storage-buffer range */
    uint64_t limit = p->ctx->info.max_storage_buffer_range;
    if (bytes > limit)
        return baatt_fail(p->ctx, BAATT_ERROR_TOO_LARGE,
                          "tensor %s needs %.1f MiB, over this device's %.1f MiB buffer limit", name, bytes / 1048576.0,
                          limit / 1048576.0);
    return BAATT_OK;
}

baatt_status baatt_plan_record(baatt_plan *p, VkCommandBuffer cmd, const baatt_tensors *t)
{
    return baatt_plan_record_lse(p, cmd, t, NULL);
}

baatt_status baatt_plan_record_lse(baatt_plan *p, VkCommandBuffer cmd, const baatt_tensors *t,
                                   const baatt_device_tensor *lse)
{
    if (!p || !cmd || !t)
        return p ? baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "NULL command buffer or tensors")
                 : BAATT_ERROR_INVALID_ARGUMENT;
    uint64_t qn, kn;
    baatt_plan_tensor_bytes(p, &qn, &kn);
    BAATT_TRY(check_tensor(p, &t->q, "q", qn));
    BAATT_TRY(check_tensor(p, &t->k, "k", kn));
    BAATT_TRY(check_tensor(p, &t->v, "v", kn));
    BAATT_TRY(check_tensor(p, &t->o, "o", qn));
    if (lse && !p->cfg.lse)
        return baatt_fail(p->ctx, BAATT_ERROR_NO_LSE,
                          "tensor lse given to a plan created without cfg.lse (it computes no log-sum-exp)");
    if (lse) BAATT_TRY(check_tensor(p, lse, "lse", baatt_plan_lse_bytes(p)));
    BAATT_TRY(baatt_selection_check_run(p));
    bind_tensors(p, t, lse);
    baatt_rec r = {p, cmd};
    record_stages(&r);
    p->ran = 1;
    p->lse_here = p->cfg.lse && !lse;
    return BAATT_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* host path                                                                                  */

static baatt_status ensure_host_buffers(baatt_plan *p, uint64_t qn, uint64_t kn)
{
    /* Each buffer on its own: a call that failed part-way (too large, out of memory) keeps what
     * it made, and a retry must not create those again over the live handles. */
    static const char *const names[4] = {"Q", "K", "V", "O"};
    uint64_t bytes[4] = {qn, kn, kn, qn};
    for (int i = 0; i < 4; i++) {
        if (p->host[i].buffer) continue;
        if (bytes[i] > p->ctx->info.max_storage_buffer_range)
            return baatt_fail(p->ctx, BAATT_ERROR_TOO_LARGE,
                              "%s needs %.1f MiB, over this device's %.1f MiB buffer limit", names[i],
                              bytes[i] / 1048576.0, p->ctx->info.max_storage_buffer_range / 1048576.0);
        BAATT_TRY(baatt_buffer_create(p->ctx, bytes[i], 0, &p->host[i]));
    }
    if (!p->staging.buffer) BAATT_TRY(baatt_buffer_create(p->ctx, 2 * qn + 2 * kn, 1, &p->staging));
    return BAATT_OK;
}

static void copy(baatt_rec *r, VkBuffer src, VkDeviceSize so, VkBuffer dst, VkDeviceSize dof, VkDeviceSize n)
{
    VkBufferCopy c = {so, dof, n};
    r->p->ctx->vk.vkCmdCopyBuffer(r->cmd, src, dst, 1, &c);
}

baatt_status baatt_plan_run_host(baatt_plan *p, const void *q, const void *k, const void *v, void *o)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!q || !k || !v || !o) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "q, k, v and o must not be NULL");
    BAATT_TRY(baatt_selection_check_run(p));
    uint64_t qn, kn;
    baatt_plan_tensor_bytes(p, &qn, &kn);
    BAATT_TRY(ensure_host_buffers(p, qn, kn));
    char *st = p->staging.mapped;
    uint64_t at[4] = {0, qn, qn + kn, qn + 2 * kn}; /* staging: Q, K, V, O */
    memcpy(st + at[0], q, qn);
    memcpy(st + at[1], k, kn);
    memcpy(st + at[2], v, kn);
    baatt_rec r = {p, VK_NULL_HANDLE};
    BAATT_TRY(baatt_cmd_begin(p->ctx, &r.cmd));
    for (int i = 0; i < 3; i++) copy(&r, p->staging.buffer, at[i], p->host[i].buffer, 0, i ? kn : qn);
    baatt_tensors t = {{p->host[0].buffer, 0}, {p->host[1].buffer, 0}, {p->host[2].buffer, 0}, {p->host[3].buffer, 0}};
    bind_tensors(p, &t, NULL);
    record_stages(&r);
    copy(&r, p->host[3].buffer, 0, p->staging.buffer, at[3], qn);
    baatt_cmd_host_barrier(p->ctx, r.cmd);
    baatt_status s = baatt_cmd_submit_wait(p->ctx, r.cmd);
    if (s) {
        if (!baatt_selection_reused(p)) p->held = 0; /* an estimate that may have stopped part-way */
        return s;
    }
    memcpy(o, st + at[3], qn);
    p->ran = 1;
    p->lse_here = p->cfg.lse;
    return BAATT_OK;
}
