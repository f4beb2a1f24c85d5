/* Failures during a run (baatt.h, "Threads, errors and lost contexts"): a GPU wait past
 * BAATT_TIMEOUT_S returns within the limit and marks the context lost; device loss marks it lost;
 * out-of-memory returns its status and leaves the context usable. lavapipe neither loses its
 * device nor runs out of memory on demand, so those two are injected through the context's own
 * function table (the driver's real answer, returned where the driver would return it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"
#include "internal.h"
#include "runtime.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void expect_message(baatt_context *ctx, const char *fragment)
{
    const char *msg = baatt_context_error(ctx);
    if (!strstr(msg, fragment)) fprintf(stderr, "message '%s' lacks '%s'\n", msg, fragment);
    assert_non_null(strstr(msg, fragment));
}

typedef struct inputs {
    baatt_config cfg;
    void *q, *k, *v, *o;
    size_t qn, kn;
} inputs;

static void inputs_make(inputs *in, baatt_config c)
{
    uint64_t rng = th_seed() ^ c.heads;
    in->cfg = c;
    in->qn = (size_t)c.batch * c.heads * c.q_len * c.head_dim;
    in->kn = (size_t)c.batch * c.kv_heads * c.kv_len * c.head_dim;
    in->q = th_random_tensor(&rng, c.dtype, in->qn, 1.0f);
    in->k = th_random_tensor(&rng, c.dtype, in->kn, 1.0f);
    in->v = th_random_tensor(&rng, c.dtype, in->kn, 1.0f);
    in->o = malloc(in->qn * baatt_dtype_size(c.dtype));
    th_poison(in->o, c.dtype, in->qn);
}

static void inputs_free(inputs *in) { free(in->q), free(in->k), free(in->v), free(in->o); }

static baatt_status run(baatt_plan *plan, inputs *in)
{
    th_poison(in->o, in->cfg.dtype, in->qn);
    return baatt_plan_run_host(plan, in->q, in->k, in->v, in->o);
}

/* The output of the last run against the CPU reference (dense configs). */
static void check_output(const inputs *in)
{
    th_check_dense(&in->cfg, in->q, in->k, in->v, in->o, "after the failure");
}

static baatt_config dense(uint32_t heads, uint32_t len)
{
    baatt_config c = baatt_config_default();
    c.heads = c.kv_heads = heads;
    c.q_len = c.kv_len = len;
    c.head_dim = 64;
    c.dense = 1;
    return c;
}

/* ---- timeout ---- */

enum { TIMEOUT_MS = 20 };

/* A dense job that takes at least 0.3 s on th_ctx's device (heads doubled until it does), or 0
 * heads when even 64 heads of 1024 tokens run faster: nothing test-sized outlasts the limit. */
static uint32_t slow_heads(double *seconds)
{
    for (uint32_t heads = 4; heads <= 64; heads *= 2) {
        inputs in;
        inputs_make(&in, dense(heads, 1024));
        baatt_plan *plan = NULL;
        assert_int_equal(baatt_plan_create(th_ctx, &in.cfg, &plan), BAATT_OK);
        assert_int_equal(run(plan, &in), BAATT_OK); /* pipelines built, buffers made */
        double t0 = now_s();
        assert_int_equal(run(plan, &in), BAATT_OK);
        *seconds = now_s() - t0;
        baatt_plan_destroy(plan);
        inputs_free(&in);
        if (*seconds >= 0.3) return heads;
    }
    return 0;
}

/* BAATT_TIMEOUT_S bounds the wall time of a run: the call returns BAATT_ERROR_TIMEOUT near the
 * limit (not when the work ends), says what it waited for and for how long, and the context is
 * then lost: the next run fails at once, and destroying the plan and context waits for the
 * abandoned work and leaks nothing (the validation layer would report it). */
static void timeout_bounds_wall_time(void **s)
{
    (void)s;
    double full;
    uint32_t heads = slow_heads(&full);
    if (!heads) skip();
    setenv("BAATT_TIMEOUT_S", "0.02", 1);
    baatt_context *ctx = th_context(); /* the limit is read when a context is created */
    unsetenv("BAATT_TIMEOUT_S");
    inputs in;
    inputs_make(&in, dense(heads, 1024));
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(ctx, &in.cfg, &plan), BAATT_OK);
    double t0 = now_s();
    baatt_status st = run(plan, &in);
    double took = now_s() - t0;
    fprintf(stderr, "[ timeout  ] a %.2f s job under a %d ms limit returned after %.3f s\n", full, TIMEOUT_MS, took);
    assert_int_equal(st, BAATT_ERROR_TIMEOUT);
    expect_message(ctx, "waiting for the GPU to finish a submitted command buffer (limit 0.02 s");
    assert_true(took < full / 2);
    t0 = now_s();
    assert_int_equal(run(plan, &in), BAATT_ERROR_DEVICE_LOST);
    assert_true(now_s() - t0 < 0.1);
    expect_message(ctx, "the context is lost");
    expect_message(ctx, "timed out after");
    baatt_plan_destroy(plan);
    th_context_done(ctx);
    inputs_free(&in);
}

static void bad_timeout_refused(void **s)
{
    (void)s;
    const char *bad[] = {"abc", "0", "-1", "1s", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("BAATT_TIMEOUT_S", bad[i], 1);
        baatt_context *ctx = NULL;
        baatt_status st = baatt_context_create(NULL, &ctx);
        unsetenv("BAATT_TIMEOUT_S");
        assert_int_equal(st, BAATT_ERROR_INVALID_ARGUMENT);
        expect_message(ctx, "BAATT_TIMEOUT_S");
        baatt_context_destroy(ctx);
    }
}

/* ---- injected device loss and out-of-memory ---- */

static VkResult g_inject; /* what the hooked call returns while armed */
static int g_armed;       /* calls left to fail */
static PFN_vkQueueSubmit g_real_submit;
static PFN_vkAllocateMemory g_real_alloc;

static VKAPI_ATTR VkResult VKAPI_CALL failing_submit(VkQueue q, uint32_t n, const VkSubmitInfo *si, VkFence f)
{
    if (g_armed && g_armed--) return g_inject;
    return g_real_submit(q, n, si, f);
}

static VKAPI_ATTR VkResult VKAPI_CALL failing_alloc(VkDevice d, const VkMemoryAllocateInfo *ai,
                                                    const VkAllocationCallbacks *a, VkDeviceMemory *m)
{
    if (g_armed && g_armed--) return g_inject;
    return g_real_alloc(d, ai, a, m);
}

enum { AT_SUBMIT, AT_ALLOC };

/* The next vkQueueSubmit (at = AT_SUBMIT) or vkAllocateMemory of ctx returns r. */
static void hook(baatt_context *ctx, int at, VkResult r)
{
    g_real_submit = ctx->vk.vkQueueSubmit;
    g_real_alloc = ctx->vk.vkAllocateMemory;
    if (at == AT_SUBMIT) ctx->vk.vkQueueSubmit = failing_submit;
    else ctx->vk.vkAllocateMemory = failing_alloc;
    g_inject = r;
    g_armed = 1;
}

static void unhook(baatt_context *ctx)
{
    ctx->vk.vkQueueSubmit = g_real_submit;
    ctx->vk.vkAllocateMemory = g_real_alloc;
    g_armed = 0;
}

/* Device loss at submission: BAATT_ERROR_DEVICE_LOST, and every later run fails the same way with
 * a message saying the context is lost, even once the driver would answer again. */
static void device_loss_marks_context_lost(void **s)
{
    (void)s;
    baatt_context *ctx = th_context();
    inputs in;
    inputs_make(&in, dense(2, 100));
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(ctx, &in.cfg, &plan), BAATT_OK);
    assert_int_equal(run(plan, &in), BAATT_OK);
    hook(ctx, AT_SUBMIT, VK_ERROR_DEVICE_LOST);
    baatt_status st = run(plan, &in);
    unhook(ctx);
    assert_int_equal(st, BAATT_ERROR_DEVICE_LOST);
    expect_message(ctx, "vkQueueSubmit failed: VK_ERROR_DEVICE_LOST");
    assert_int_equal(run(plan, &in), BAATT_ERROR_DEVICE_LOST);
    expect_message(ctx, "the context is lost");
    baatt_plan_destroy(plan);
    th_context_done(ctx);
    inputs_free(&in);
}

/* Out of device memory, when the run's buffers are made and when the work is submitted: the
 * status says so, the message names the call, and the same plan then runs correctly. */
static void out_of_memory_leaves_context_usable(void **s)
{
    (void)s;
    inputs in;
    inputs_make(&in, dense(2, 100));
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, &in.cfg, &plan), BAATT_OK);
    hook(th_ctx, AT_ALLOC, VK_ERROR_OUT_OF_DEVICE_MEMORY); /* the first run's Q buffer */
    baatt_status st = run(plan, &in);
    unhook(th_ctx);
    assert_int_equal(st, BAATT_ERROR_OUT_OF_DEVICE_MEMORY);
    expect_message(th_ctx, "vkAllocateMemory");
    assert_int_equal(run(plan, &in), BAATT_OK);
    check_output(&in);
    hook(th_ctx, AT_SUBMIT, VK_ERROR_OUT_OF_DEVICE_MEMORY);
    st = run(plan, &in);
    unhook(th_ctx);
    assert_int_equal(st, BAATT_ERROR_OUT_OF_DEVICE_MEMORY);
    expect_message(th_ctx, "vkQueueSubmit failed: VK_ERROR_OUT_OF_DEVICE_MEMORY");
    assert_int_equal(run(plan, &in), BAATT_OK);
    check_output(&in);
    baatt_plan_destroy(plan);
    inputs_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timeout_bounds_wall_time),
        cmocka_unit_test(bad_timeout_refused),
        cmocka_unit_test(device_loss_marks_context_lost),
        cmocka_unit_test(out_of_memory_leaves_context_usable),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
