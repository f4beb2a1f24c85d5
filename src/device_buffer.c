/* Device buffers for callers without Vulkan code of their own (the CLI's bench): tensors that stay
 * on the device between plan runs, filled and read through a staging buffer. */
#include <stdlib.h>
#include <string.h>

#include "plan.h"

struct baatt_device_buffer {
    baatt_context *ctx;
    baatt_buffer buf;
    uint64_t bytes;
};

static baatt_status device_buffer_create(baatt_context *ctx, uint64_t bytes, int exportable, baatt_device_buffer **out,
                                         const char *fn)
{
    if (!ctx || !out) return BAATT_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (!bytes) return baatt_fail(ctx, BAATT_ERROR_BAD_SHAPE, "%s: size 0", fn);
    if (bytes > ctx->info.max_storage_buffer_range)
        return baatt_fail(ctx, BAATT_ERROR_TOO_LARGE, "%s: %llu bytes exceed the device's storage-buffer range (%llu)",
                          fn, (unsigned long long)bytes, (unsigned long long)ctx->info.max_storage_buffer_range);
    baatt_device_buffer *b = calloc(1, sizeof *b);
    if (!b) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    b->ctx = ctx;
    b->bytes = bytes;
    baatt_status s =
        exportable ? baatt_buffer_create_exportable(ctx, bytes, &b->buf) : baatt_buffer_create(ctx, bytes, 0, &b->buf);
    if (s) {
        free(b);
        return s;
    }
    *out = b;
    return BAATT_OK;
}

baatt_status baatt_device_buffer_create(baatt_context *ctx, uint64_t bytes, baatt_device_buffer **out)
{
    return device_buffer_create(ctx, bytes, 0, out, "baatt_device_buffer_create");
}

baatt_status baatt_device_buffer_create_exportable(baatt_context *ctx, uint64_t bytes, baatt_device_buffer **out)
{
    return device_buffer_create(ctx, bytes, 1, out, "baatt_device_buffer_create_exportable");
}

baatt_status baatt_device_buffer_export_fd(baatt_device_buffer *b, int *fd, uint64_t *allocation_bytes, int *dedicated)
{
    if (!b) return BAATT_ERROR_INVALID_ARGUMENT;
    const char *fn = "baatt_device_buffer_export_fd";
    if (!fd || !allocation_bytes || !dedicated)
        return baatt_fail(b->ctx, BAATT_ERROR_INVALID_ARGUMENT, "%s: fd, allocation_bytes and dedicated must be set",
                          fn);
    *fd = -1;
    if (!b->buf.exportable)
        return baatt_fail(b->ctx, BAATT_ERROR_INVALID_ARGUMENT,
                          "%s: the buffer is not exportable (create it with baatt_device_buffer_create_exportable)",
                          fn);
    baatt_context *ctx = b->ctx;
    VkMemoryGetFdInfoKHR gi = {.sType = VK_STRUCTURE_TYPE_MEMORY_GET_FD_INFO_KHR,
                               .memory = b->buf.memory,
                               .handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
    int got = -1;
    BAATT_VK(ctx, ctx->vk.vkGetMemoryFdKHR(ctx->device, &gi, &got));
    *fd = got;
    *allocation_bytes = b->buf.allocation;
    *dedicated = b->buf.dedicated;
    return BAATT_OK;
}

void baatt_device_buffer_destroy(baatt_device_buffer *b)
{
    if (!b) return;
    baatt_buffer_destroy(b->ctx, &b->buf);
    free(b);
}

baatt_device_tensor baatt_device_buffer_tensor(const baatt_device_buffer *b)
{
    baatt_device_tensor t = {b ? b->buf.buffer : VK_NULL_HANDLE, 0};
    return t;
}

/* Checks a host copy's arguments: a range inside the buffer, a host pointer. */
static baatt_status check_range(const baatt_device_buffer *b, uint64_t offset, const void *host, uint64_t bytes,
                                const char *what)
{
    if (!b) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!host && bytes) return baatt_fail(b->ctx, BAATT_ERROR_INVALID_ARGUMENT, "%s: NULL host pointer", what);
    if (offset > b->bytes || bytes > b->bytes - offset)
        return baatt_fail(b->ctx, BAATT_ERROR_INVALID_ARGUMENT, "%s: bytes [%llu, %llu) outside the %llu-byte buffer",
                          what, (unsigned long long)offset, (unsigned long long)(offset + bytes),
                          (unsigned long long)b->bytes);
    return BAATT_OK;
}

baatt_status baatt_device_buffer_write(baatt_device_buffer *b, uint64_t offset, const void *src, uint64_t bytes)
{
    BAATT_TRY(check_range(b, offset, src, bytes, "baatt_device_buffer_write"));
    return baatt_buffer_transfer(b->ctx, &b->buf, offset, src, NULL, bytes);
}

baatt_status baatt_device_buffer_read(baatt_device_buffer *b, uint64_t offset, void *dst, uint64_t bytes)
{
    BAATT_TRY(check_range(b, offset, dst, bytes, "baatt_device_buffer_read"));
    return baatt_buffer_transfer(b->ctx, &b->buf, offset, NULL, dst, bytes);
}

baatt_status baatt_plan_run_buffers(baatt_plan *plan, baatt_device_buffer *q, baatt_device_buffer *k,
                                    baatt_device_buffer *v, baatt_device_buffer *o)
{
    return baatt_plan_run_buffers_lse(plan, q, k, v, o, NULL);
}

/* The LSE buffer of a run: NULL, or one of the plan's context that holds the plan's LSE. */
static baatt_status check_lse_buffer(baatt_plan *plan, const baatt_device_buffer *lse)
{
    if (!lse) return BAATT_OK;
    const char *fn = "baatt_plan_run_buffers_lse";
    if (!plan->cfg.lse)
        return baatt_fail(plan->ctx, BAATT_ERROR_NO_LSE, "%s: lse given to a plan created without cfg.lse", fn);
    if (lse->ctx != plan->ctx)
        return baatt_fail(plan->ctx, BAATT_ERROR_INVALID_ARGUMENT, "%s: lse belongs to another context", fn);
    if (lse->bytes < baatt_plan_lse_bytes(plan))
        return baatt_fail(plan->ctx, BAATT_ERROR_BAD_SHAPE, "%s: lse holds %llu bytes, the plan's LSE %llu", fn,
                          (unsigned long long)lse->bytes, (unsigned long long)baatt_plan_lse_bytes(plan));
    return BAATT_OK;
}

baatt_status baatt_plan_run_buffers_lse(baatt_plan *plan, baatt_device_buffer *q, baatt_device_buffer *k,
                                        baatt_device_buffer *v, baatt_device_buffer *o, baatt_device_buffer *lse)
{
    if (!plan || !q || !k || !v || !o) return BAATT_ERROR_INVALID_ARGUMENT;
    BAATT_TRY(check_lse_buffer(plan, lse));
    baatt_context *ctx = q->ctx;
    if (k->ctx != ctx || v->ctx != ctx || o->ctx != ctx || plan->ctx != ctx)
        return baatt_fail(plan->ctx, BAATT_ERROR_INVALID_ARGUMENT,
                          "baatt_plan_run_buffers: the plan and the buffers belong to different contexts");
    uint64_t qn, kn;
    baatt_plan_tensor_bytes(plan, &qn, &kn);
    const baatt_device_buffer *b[4] = {q, k, v, o};
    for (int i = 0; i < 4; i++)
        if (b[i]->bytes < (i == 0 || i == 3 ? qn : kn))
            return baatt_fail(ctx, BAATT_ERROR_BAD_SHAPE,
                              "baatt_plan_run_buffers: buffer %c holds %llu bytes, the plan's tensor %llu", "qkvo"[i],
                              (unsigned long long)b[i] -> bytes, (unsigned long long)(i == 0 || i == 3 ? qn : kn));
    baatt_tensors t = {baatt_device_buffer_tensor(q), baatt_device_buffer_tensor(k), baatt_device_buffer_tensor(v),
                       baatt_device_buffer_tensor(o)};
    baatt_device_tensor lt = baatt_device_buffer_tensor(lse);
    VkCommandBuffer cmd;
    BAATT_TRY(baatt_cmd_begin(ctx, &cmd));
    int estimate = !baatt_selection_reused(plan);
    baatt_status s = baatt_plan_record_lse(plan, cmd, &t, lse ? &lt : NULL);
    if (s) {
        baatt_cmd_discard(ctx, cmd);
        return s;
    }
    s = baatt_cmd_submit_wait(ctx, cmd);
    if (s && estimate) plan->held = 0; /* an estimate that may have stopped part-way */
    return s;
}

baatt_status baatt_plan_set_selection_buffers(baatt_plan *plan, baatt_device_buffer *mask, baatt_device_buffer *perm_q,
                                              baatt_device_buffer *perm_k)
{
    if (!plan) return BAATT_ERROR_INVALID_ARGUMENT;
    const char *fn = "baatt_plan_set_selection_buffers";
    if (!mask) return baatt_fail(plan->ctx, BAATT_ERROR_INVALID_ARGUMENT, "%s: mask is NULL", fn);
    if (plan->cfg.dense)
        return baatt_fail(plan->ctx, BAATT_ERROR_INVALID_ARGUMENT, "%s: a dense plan takes no selection", fn);
    const baatt_geometry *g = &baatt_plan_choice(plan)->geo;
    baatt_device_buffer *b[3] = {mask, perm_q, perm_k};
    uint64_t need[3] = {(uint64_t)g->bh * g->nq * g->nk, 4ull * g->bh * plan->cfg.q_len,
                        4ull * g->bhkv * plan->cfg.kv_len};
    static const char *const names[3] = {"mask", "perm_q", "perm_k"};
    void *host[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        if (!b[i]) continue;
        if (b[i]->ctx != plan->ctx)
            return baatt_fail(plan->ctx, BAATT_ERROR_INVALID_ARGUMENT, "%s: %s belongs to another context", fn,
                              names[i]);
        if (b[i]->bytes < need[i])
            return baatt_fail(plan->ctx, BAATT_ERROR_BAD_SHAPE, "%s: %s holds %llu bytes, the plan's %s needs %llu", fn,
                              names[i], (unsigned long long)b[i]->bytes, names[i], (unsigned long long)need[i]);
    }
    baatt_status s = BAATT_OK;
    for (int i = 0; i < 3 && !s; i++) {
        if (!b[i]) continue;
        host[i] = malloc(need[i]);
        s = host[i] ? baatt_buffer_transfer(plan->ctx, &b[i]->buf, 0, NULL, host[i], need[i])
                    : baatt_fail(plan->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    if (!s) s = baatt_plan_set_selection(plan, host[0], host[1], host[2]);
    for (int i = 0; i < 3; i++) free(host[i]);
    return s;
}
