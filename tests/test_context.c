/* Devices and contexts: listing, every way of choosing a device (options, BAATT_DEVICE), status
 * strings, the buffer/submission internals, and the embedding path (an application's VkDevice
 * wrapped in a second context, a plan recorded into the application's own command buffer). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "runtime.h"

#define NO_SUCH_DEVICE "no-such-gpu-xyzzy"

static baatt_context *g_ctx; /* the default context, shared by the tests that need no other */
static char *g_saved_env;    /* BAATT_DEVICE as the process started, restored after env tests */

static int setup(void **state)
{
    (void)state;
    g_ctx = th_context();
    const char *e = getenv("BAATT_DEVICE");
    g_saved_env = e ? strdup(e) : NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_context_done(g_ctx);
    free(g_saved_env);
    return 0;
}

/* Runs after each env test, also when an assertion failed mid-way, so later tests see the
 * environment the process started with. */
static int restore_env(void **state)
{
    (void)state;
    if (g_saved_env) setenv("BAATT_DEVICE", g_saved_env, 1);
    else unsetenv("BAATT_DEVICE");
    return 0;
}

/* A context with validation when the suite runs with it (as th_context), choosing by index/name. */
static baatt_status open_ctx(int index, const char *name, baatt_context **ctx)
{
    baatt_context_options o = baatt_context_options_default();
    o.device_index = index;
    o.device_name = name;
    o.validation = getenv("BAATT_VALIDATION") && atoi(getenv("BAATT_VALIDATION"));
    *ctx = NULL;
    return baatt_context_create(&o, ctx);
}

static void expect_message(const char *msg, const char *fragment)
{
    if (!strstr(msg, fragment)) fprintf(stderr, "message '%s' lacks '%s'\n", msg, fragment);
    assert_non_null(strstr(msg, fragment));
}

static int contains_nocase(const char *s, const char *pat)
{
    for (; *s; s++) {
        size_t j = 0;
        while (pat[j] && tolower((unsigned char)s[j]) == tolower((unsigned char)pat[j])) j++;
        if (!pat[j]) return 1;
    }
    return 0;
}

/* The device list (count, then fill) on its own, freshly allocated. */
static baatt_device_info *list_devices(uint32_t *n)
{
    *n = 0;
    assert_int_equal(baatt_devices_list(NULL, n), BAATT_OK);
    assert_true(*n >= 1);
    baatt_device_info *d = calloc(*n, sizeof *d);
    assert_non_null(d);
    uint32_t got = *n;
    assert_int_equal(baatt_devices_list(d, &got), BAATT_OK);
    assert_int_equal(got, *n);
    return d;
}

/* ------------------------------------------------------------------------------------------ */
/* listing and choosing                                                                       */

static void devices_list(void **s)
{
    (void)s;
    assert_int_equal(baatt_devices_list(NULL, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    uint32_t n;
    baatt_device_info *d = list_devices(&n);
    int picked = 0;
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(d[i].index, i);
        assert_true(d[i].name[0] != 0);
        assert_true(d[i].subgroup_size >= 1);
        assert_true(d[i].max_shared_memory >= 16 * 1024);
        assert_true(d[i].max_workgroup_invocations >= 1);
        assert_true(d[i].max_storage_buffer_range > 0);
        picked += d[i].picked == 1;
        assert_true(d[i].picked == 0 || d[i].picked == 1);
    }
    assert_int_equal(picked, 1);
    free(d);
}

/* The default context (options NULL, or th_context's defaults) is on the device the list marks
 * as picked. */
static void create_default(void **s)
{
    (void)s;
    uint32_t n;
    baatt_device_info *d = list_devices(&n), info;
    const char *picked = NULL;
    for (uint32_t i = 0; i < n; i++)
        if (d[i].picked) picked = d[i].name;
    assert_non_null(picked);
    assert_int_equal(baatt_context_device_info(g_ctx, &info), BAATT_OK);
    assert_int_equal(info.picked, 1);
    assert_string_equal(info.name, picked);
    assert_string_equal(baatt_context_error(g_ctx), "");
    baatt_context *ctx = NULL;
    assert_int_equal(baatt_context_create(NULL, &ctx), BAATT_OK);
    assert_int_equal(baatt_context_device_info(ctx, &info), BAATT_OK);
    assert_string_equal(info.name, picked);
    th_context_done(ctx);
    assert_int_equal(baatt_context_device_info(NULL, &info), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_context_device_info(g_ctx, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    free(d);
}

static void select_by_index(void **s)
{
    (void)s;
    uint32_t n;
    baatt_device_info *d = list_devices(&n), info;
    baatt_context *ctx;
    assert_int_equal(open_ctx(0, NULL, &ctx), BAATT_OK);
    assert_int_equal(baatt_context_device_info(ctx, &info), BAATT_OK);
    assert_int_equal(info.index, 0);
    assert_string_equal(info.name, d[0].name);
    th_context_done(ctx);
    free(d);
}

/* Part of device 0's name with every letter's case flipped: matching must ignore case. */
static void select_by_name(void **s)
{
    (void)s;
    uint32_t n;
    baatt_device_info *d = list_devices(&n), info;
    char pat[9] = {0};
    for (size_t i = 0; i < 8 && d[0].name[i]; i++) {
        unsigned char c = (unsigned char)d[0].name[i];
        pat[i] = (char)(islower(c) ? toupper(c) : tolower(c));
    }
    baatt_context *ctx;
    assert_int_equal(open_ctx(-1, pat, &ctx), BAATT_OK);
    assert_int_equal(baatt_context_device_info(ctx, &info), BAATT_OK);
    assert_true(contains_nocase(info.name, pat));
    th_context_done(ctx);
    free(d);
}

static void select_bad_index(void **s)
{
    (void)s;
    baatt_context *ctx;
    assert_int_equal(open_ctx(99, NULL, &ctx), BAATT_ERROR_NO_DEVICE);
    assert_non_null(ctx); /* so that the caller can ask why */
    expect_message(baatt_context_error(ctx), "99");
    th_context_done(ctx);
}

static void select_bad_name(void **s)
{
    (void)s;
    baatt_context *ctx;
    assert_int_equal(open_ctx(-1, NO_SUCH_DEVICE, &ctx), BAATT_ERROR_NO_DEVICE);
    expect_message(baatt_context_error(ctx), NO_SUCH_DEVICE);
    th_context_done(ctx);
}

static void env_device_index(void **s)
{
    (void)s;
    baatt_device_info info;
    baatt_context *ctx;
    setenv("BAATT_DEVICE", "0", 1);
    assert_int_equal(open_ctx(-1, NULL, &ctx), BAATT_OK);
    assert_int_equal(baatt_context_device_info(ctx, &info), BAATT_OK);
    assert_int_equal(info.index, 0);
    th_context_done(ctx);
}

/* A BAATT_DEVICE that matches nothing fails creation and leaves no device picked in the list;
 * an explicit option still wins over it (the documented precedence). */
static void env_device_bad_name(void **s)
{
    (void)s;
    baatt_context *ctx;
    setenv("BAATT_DEVICE", NO_SUCH_DEVICE, 1);
    assert_int_equal(open_ctx(-1, NULL, &ctx), BAATT_ERROR_NO_DEVICE);
    expect_message(baatt_context_error(ctx), NO_SUCH_DEVICE);
    th_context_done(ctx);
    uint32_t n;
    baatt_device_info *d = list_devices(&n);
    for (uint32_t i = 0; i < n; i++) assert_int_equal(d[i].picked, 0);
    free(d);
    assert_int_equal(open_ctx(0, NULL, &ctx), BAATT_OK);
    th_context_done(ctx);
}

/* The operator's strings are parsed strictly: a bad BAATT_TUNE or BAATT_PROFILE fails context
 * creation with a message naming the variable and the item; a good one reaches the plans. */
static void env_tune_and_profile(void **s)
{
    (void)s;
    static const struct {
        const char *var, *value, *fragment;
    } bad[] = {{"BAATT_TUNE", "sort=on", "BAATT_TUNE: bad value \"on\" for tuning key \"sort\""},
               {"BAATT_TUNE", "attend", "no '='"},
               {"BAATT_PROFILE", "dispatch,bogus", "BAATT_PROFILE: unknown item \"bogus\""}};
    baatt_context *ctx;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(bad[i].var, bad[i].value, 1);
        baatt_status st = open_ctx(-1, NULL, &ctx);
        unsetenv(bad[i].var);
        assert_int_equal(st, BAATT_ERROR_INVALID_ARGUMENT);
        expect_message(baatt_context_error(ctx), bad[i].fragment);
        baatt_context_destroy(ctx);
    }
    setenv("BAATT_TUNE", "attend=portable,sort=bitonic,logits_mib=0.5", 1);
    assert_int_equal(open_ctx(-1, NULL, &ctx), BAATT_OK);
    unsetenv("BAATT_TUNE");
    const baatt_tuning *t = baatt_context_tuning(ctx);
    assert_true(t->attend == BAATT_ATTEND_PORTABLE && t->sort == BAATT_SORTER_BITONIC && t->logits_mib == 0.5);
    th_context_done(ctx);
}

/* ------------------------------------------------------------------------------------------ */
/* status strings and errors                                                                  */

static void status_strings(void **s)
{
    (void)s;
    static const struct {
        baatt_status s;
        const char *name;
    } all[] = {
#define S(x) {x, #x}
        S(BAATT_OK),
        S(BAATT_ERROR_INVALID_ARGUMENT),
        S(BAATT_ERROR_BAD_SHAPE),
        S(BAATT_ERROR_GQA_MISMATCH),
        S(BAATT_ERROR_UNSUPPORTED_HEAD_DIM),
        S(BAATT_ERROR_UNSUPPORTED_DTYPE),
        S(BAATT_ERROR_UNSUPPORTED_BLOCK_SIZE),
        S(BAATT_ERROR_BAD_KEEP_RATIO),
        S(BAATT_ERROR_BAD_THRESHOLD),
        S(BAATT_ERROR_BAD_BLOCK_LIMITS),
        S(BAATT_ERROR_BAD_SCALE),
        S(BAATT_ERROR_TOO_LARGE),
        S(BAATT_ERROR_NOT_READY),
        S(BAATT_ERROR_NONFINITE_INPUT),
        S(BAATT_ERROR_NO_SELECTION),
        S(BAATT_ERROR_BAD_SELECTION),
        S(BAATT_ERROR_NO_VULKAN),
        S(BAATT_ERROR_NO_DEVICE),
        S(BAATT_ERROR_MISSING_FEATURE),
        S(BAATT_ERROR_VALIDATION_LAYER),
        S(BAATT_ERROR_OUT_OF_HOST_MEMORY),
        S(BAATT_ERROR_VULKAN),
        S(BAATT_ERROR_OUT_OF_DEVICE_MEMORY),
        S(BAATT_ERROR_DEVICE_LOST),
        S(BAATT_ERROR_TIMEOUT),
        S(BAATT_ERROR_IO),
        S(BAATT_ERROR_FILE_FORMAT),
#undef S
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *str = baatt_status_string(all[i].s);
        size_t len = strlen(all[i].name);
        assert_non_null(str);
        if (strncmp(str, all[i].name, len) != 0) fprintf(stderr, "%s -> '%s'\n", all[i].name, str);
        /* the name, then the end or ':' (so BAATT_ERROR_IO cannot pass as a prefix of another) */
        assert_int_equal(strncmp(str, all[i].name, len), 0);
        assert_true(str[len] == 0 || str[len] == ':');
    }
    const baatt_status unknown[] = {(baatt_status)-1, (baatt_status)99, (baatt_status)12345};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(strncmp(baatt_status_string(unknown[i]), "BAATT_ERROR_UNKNOWN", 19), 0);
}

static void context_error_null(void **s)
{
    (void)s;
    assert_non_null(baatt_context_error(NULL));
    assert_int_equal(baatt_context_validation_messages(NULL), 0);
    baatt_context_destroy(NULL); /* a no-op, like free(NULL) */
}

static void wrap_invalid(void **s)
{
    (void)s;
    baatt_context *ctx = NULL;
    assert_int_equal(baatt_context_wrap(NULL, &ctx), BAATT_ERROR_INVALID_ARGUMENT);
    baatt_context_destroy(ctx);
    baatt_external_device ext = {0}; /* all handles missing */
    ctx = NULL;
    assert_int_equal(baatt_context_wrap(&ext, &ctx), BAATT_ERROR_INVALID_ARGUMENT);
    if (ctx) expect_message(baatt_context_error(ctx), "device");
    baatt_context_destroy(ctx);
    assert_int_equal(baatt_context_wrap(&ext, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_context_handles(NULL, &ext), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_context_handles(g_ctx, NULL), BAATT_ERROR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------------------------------------ */
/* buffers and submission (src/runtime.h)                                                     */

/* host -> device-local -> host through two vkCmdCopyBuffer; the bytes must come back intact. */
static void round_trip(baatt_context *ctx, VkDeviceSize n, uint64_t *rng)
{
    baatt_buffer up, dev, down;
    assert_int_equal(baatt_buffer_create(ctx, n, 1, &up), BAATT_OK);
    assert_int_equal(baatt_buffer_create(ctx, n, 0, &dev), BAATT_OK);
    assert_int_equal(baatt_buffer_create(ctx, n, 1, &down), BAATT_OK);
    assert_non_null(up.mapped);
    assert_null(dev.mapped); /* device-local buffers are never mapped */
    assert_true(up.size == n && dev.size == n);
    for (VkDeviceSize i = 0; i < n; i++) ((uint8_t *)up.mapped)[i] = (uint8_t)th_next(rng);
    memset(down.mapped, 0xA5, n);
    VkCommandBuffer cmd;
    assert_int_equal(baatt_cmd_begin(ctx, &cmd), BAATT_OK);
    VkBufferCopy c = {0, 0, n};
    ctx->vk.vkCmdCopyBuffer(cmd, up.buffer, dev.buffer, 1, &c);
    baatt_cmd_barrier(ctx, cmd); /* transfer write -> transfer read */
    ctx->vk.vkCmdCopyBuffer(cmd, dev.buffer, down.buffer, 1, &c);
    assert_int_equal(baatt_cmd_submit_wait(ctx, cmd), BAATT_OK);
    assert_memory_equal(down.mapped, up.mapped, n);
    baatt_buffer_destroy(ctx, &up);
    baatt_buffer_destroy(ctx, &dev);
    baatt_buffer_destroy(ctx, &down);
    assert_null(up.buffer); /* destroy clears the handle */
}

static void buffer_round_trip(void **s)
{
    (void)s;
    uint64_t rng = th_seed() ^ 0xB0FFE5;
    round_trip(g_ctx, (1u << 20) + 4, &rng); /* not a multiple of any page or alignment */
    round_trip(g_ctx, 4, &rng);
    baatt_buffer z;
    assert_int_equal(baatt_buffer_create(g_ctx, 0, 0, &z), BAATT_OK); /* empty scratch stays bindable */
    assert_true(z.size >= 4);
    baatt_buffer_destroy(g_ctx, &z);
}

/* ------------------------------------------------------------------------------------------ */
/* embedding: context B wraps context A's device; the test plays the application             */

typedef struct embed {
    baatt_context *a, *b;
    baatt_external_device ext;
    baatt_config cfg;
    size_t qn, kn; /* elements */
    void *q, *k, *v;
    baatt_buffer dev[4];   /* Q, K, V, O on the device: the application's tensors */
    baatt_buffer up, down; /* staging: Q | K | V | O(NaN) in, O out */
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
} embed;

static void embed_open(embed *e)
{
    assert_int_equal(open_ctx(-1, NULL, &e->a), BAATT_OK);
    assert_int_equal(baatt_context_handles(e->a, &e->ext), BAATT_OK);
    assert_true(e->ext.device == e->a->device && e->ext.queue == e->a->queue);
    assert_int_equal(baatt_context_wrap(&e->ext, &e->b), BAATT_OK);
    assert_int_equal(e->b->owns_device, 0);
    assert_true(e->b->device == e->a->device);
    baatt_device_info ia, ib;
    assert_int_equal(baatt_context_device_info(e->b, &ib), BAATT_OK);
    assert_int_equal(baatt_context_device_info(e->a, &ia), BAATT_OK);
    assert_string_equal(ia.name, ib.name);
}

/* The application's tensors, allocated with A's allocator, and their staging contents. */
static void embed_buffers(embed *e)
{
    const baatt_config *c = &e->cfg;
    uint64_t rng = th_seed() ^ 0xE3BED;
    e->qn = (size_t)c->batch * c->heads * c->q_len * c->head_dim;
    e->kn = (size_t)c->batch * c->kv_heads * c->kv_len * c->head_dim;
    e->q = th_random_tensor(&rng, c->dtype, e->qn, 1.0f);
    e->k = th_random_tensor(&rng, c->dtype, e->kn, 1.0f);
    e->v = th_random_tensor(&rng, c->dtype, e->kn, 1.0f);
    size_t bytes[4] = {4 * e->qn, 4 * e->kn, 4 * e->kn, 4 * e->qn};
    for (int i = 0; i < 4; i++) assert_int_equal(baatt_buffer_create(e->a, bytes[i], 0, &e->dev[i]), BAATT_OK);
    assert_int_equal(baatt_buffer_create(e->a, 8 * (e->qn + e->kn), 1, &e->up), BAATT_OK);
    assert_int_equal(baatt_buffer_create(e->a, 4 * e->qn, 1, &e->down), BAATT_OK);
    char *st = e->up.mapped;
    memcpy(st, e->q, bytes[0]);
    memcpy(st + bytes[0], e->k, bytes[1]);
    memcpy(st + bytes[0] + bytes[1], e->v, bytes[2]);
    th_poison(st + bytes[0] + 2 * bytes[1], BAATT_DTYPE_F32, e->qn); /* O must be fully written */
    memset(e->down.mapped, 0, bytes[3]);
}

/* Our own pool, command buffer and fence, through B's device table (the application's). */
static void embed_begin(embed *e)
{
    const baatt_vk_device *vk = &e->b->vk;
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .queueFamilyIndex = e->ext.queue_family_index};
    assert_int_equal(vk->vkCreateCommandPool(e->ext.device, &pi, NULL, &e->pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = e->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    assert_int_equal(vk->vkAllocateCommandBuffers(e->ext.device, &ai, &e->cmd), VK_SUCCESS);
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    assert_int_equal(vk->vkCreateFence(e->ext.device, &fi, NULL, &e->fence), VK_SUCCESS);
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    assert_int_equal(vk->vkBeginCommandBuffer(e->cmd, &bi), VK_SUCCESS);
}

/* Staging -> Q, K, V, O, then the application's own transfer -> compute barrier: baatt promises
 * only a compute-write -> compute-read barrier before its first stage. */
static void record_uploads(embed *e)
{
    const baatt_vk_device *vk = &e->b->vk;
    VkDeviceSize off = 0;
    for (int i = 0; i < 4; i++) {
        VkBufferCopy c = {off, 0, e->dev[i].size};
        vk->vkCmdCopyBuffer(e->cmd, e->up.buffer, e->dev[i].buffer, 1, &c);
        off += e->dev[i].size;
    }
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
    vk->vkCmdPipelineBarrier(e->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0,
                             NULL, 0, NULL);
}

/* Bad recordings fail before anything is recorded, so the command buffer stays usable. */
static void check_record_errors(embed *e, baatt_plan *plan, const baatt_tensors *good)
{
    baatt_tensors t = *good;
    VkDeviceSize align = e->b->limits.minStorageBufferOffsetAlignment;
    if (align > 4) {
        t.q.offset = 4;
        assert_int_equal(baatt_plan_record(plan, e->cmd, &t), BAATT_ERROR_INVALID_ARGUMENT);
        expect_message(baatt_context_error(e->b), "minStorageBufferOffsetAlignment");
    } else {
        fprintf(stderr, "note: minStorageBufferOffsetAlignment is %llu; misaligned-offset check skipped\n",
                (unsigned long long)align);
    }
    t = *good;
    t.k.buffer = VK_NULL_HANDLE;
    assert_int_equal(baatt_plan_record(plan, e->cmd, &t), BAATT_ERROR_INVALID_ARGUMENT);
    expect_message(baatt_context_error(e->b), "tensor k");
    assert_int_equal(baatt_plan_record(plan, e->cmd, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_record(plan, VK_NULL_HANDLE, good), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_plan_record(NULL, e->cmd, good), BAATT_ERROR_INVALID_ARGUMENT);
}

/* O -> staging after baatt's own compute-write -> transfer-read barrier; submit on the shared
 * queue and wait on our fence. */
static void submit_and_wait(embed *e)
{
    const baatt_vk_device *vk = &e->b->vk;
    VkBufferCopy c = {0, 0, e->dev[3].size};
    vk->vkCmdCopyBuffer(e->cmd, e->dev[3].buffer, e->down.buffer, 1, &c);
    assert_int_equal(vk->vkEndCommandBuffer(e->cmd), VK_SUCCESS);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &e->cmd};
    assert_int_equal(vk->vkQueueSubmit(e->ext.queue, 1, &si, e->fence), VK_SUCCESS);
    assert_int_equal(vk->vkWaitForFences(e->ext.device, 1, &e->fence, VK_TRUE, 120ull * 1000000000ull), VK_SUCCESS);
}

/* O against the reference on the plan's own selection; each mask row keeps exactly k blocks. */
static void check_output(embed *e, baatt_plan *plan)
{
    const baatt_config *c = &e->cfg;
    uint32_t nq = baatt_config_q_blocks(c), nk = baatt_config_k_blocks(c), keep = baatt_config_keep_blocks(c);
    size_t rows = (size_t)c->batch * c->heads * nq;
    uint8_t *mask = malloc(rows * nk);
    int32_t *pq = malloc(4 * (size_t)c->batch * c->heads * c->q_len);
    int32_t *pk = malloc(4 * (size_t)c->batch * c->kv_heads * c->kv_len);
    float *ref = malloc(4 * e->qn);
    assert_int_equal(baatt_plan_read_mask(plan, mask), BAATT_OK);
    assert_int_equal(baatt_plan_read_perms(plan, pq, pk), BAATT_OK);
    for (size_t r = 0; r < rows; r++) {
        uint32_t ones = 0;
        for (uint32_t j = 0; j < nk; j++) ones += mask[r * nk + j];
        assert_int_equal(ones, keep);
    }
    assert_int_equal(baatt_reference_sparse_attention(c, e->q, e->k, e->v, pq, pk, mask, ref), BAATT_OK);
    assert_true(th_compare(e->down.mapped, ref, e->qn, 2e-5, 2e-5, "embedded BA-Att") <= 1.0);
    free(mask), free(pq), free(pk), free(ref);
}

/* B goes first and must leave A's device alive: A then still runs a copy and is destroyed
 * cleanly, and no validation message was raised by either (they share A's messenger). */
static void embed_close(embed *e)
{
    const baatt_vk_device *vk = &e->a->vk;
    vk->vkDestroyFence(e->ext.device, e->fence, NULL);
    vk->vkDestroyCommandPool(e->ext.device, e->pool, NULL);
    for (int i = 0; i < 4; i++) baatt_buffer_destroy(e->a, &e->dev[i]);
    baatt_buffer_destroy(e->a, &e->up);
    baatt_buffer_destroy(e->a, &e->down);
    baatt_context_destroy(e->b);
    uint64_t rng = th_seed() ^ 0xA11CE;
    round_trip(e->a, 4096, &rng);
    th_context_done(e->a);
    free(e->q), free(e->k), free(e->v);
}

/* BAATT_PROFILE=pipelines on a wrapped context: the application's device never enabled pipeline
 * executable properties, so baatt must not ask the driver for statistics (it used to call a
 * function the device table left NULL). The plan is created and runs. */
static void wrapped_profile_pipelines(void **s)
{
    (void)s;
    baatt_context *a, *b;
    baatt_external_device ext;
    assert_int_equal(open_ctx(-1, NULL, &a), BAATT_OK);
    assert_int_equal(baatt_context_handles(a, &ext), BAATT_OK);
    setenv("BAATT_PROFILE", "pipelines", 1);
    baatt_status st = baatt_context_wrap(&ext, &b);
    unsetenv("BAATT_PROFILE");
    assert_int_equal(st, BAATT_OK);
    baatt_config c = baatt_config_default();
    c.batch = c.heads = c.kv_heads = 1, c.q_len = c.kv_len = 64, c.head_dim = 64, c.dense = 1;
    float *x = calloc(64 * 64, sizeof *x), *o = calloc(64 * 64, sizeof *o);
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(b, &c, &plan), BAATT_OK);
    assert_int_equal(baatt_plan_run_host(plan, x, x, x, o), BAATT_OK);
    baatt_plan_destroy(plan);
    baatt_context_destroy(b);
    th_context_done(a);
    free(x), free(o);
}

static void embedded_record(void **s)
{
    (void)s;
    embed e = {0};
    e.cfg = baatt_config_default();
    e.cfg.heads = e.cfg.kv_heads = 2;
    e.cfg.q_len = 100, e.cfg.kv_len = 130, e.cfg.head_dim = 64;
    e.cfg.block_size = 32, e.cfg.keep_ratio = 0.5f;
    embed_open(&e);
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(e.b, &e.cfg, &plan), BAATT_OK);
    embed_buffers(&e);
    embed_begin(&e);
    record_uploads(&e);
    baatt_tensors t = {{e.dev[0].buffer, 0}, {e.dev[1].buffer, 0}, {e.dev[2].buffer, 0}, {e.dev[3].buffer, 0}};
    check_record_errors(&e, plan, &t);
    assert_int_equal(baatt_plan_record(plan, e.cmd, &t), BAATT_OK);
    submit_and_wait(&e);
    check_output(&e, plan);
    baatt_run_stats st;
    assert_int_equal(baatt_plan_stats(plan, &st), BAATT_OK);
    assert_true(st.sparsity > 0.0 && st.sparsity < 1.0);
    baatt_plan_destroy(plan);
    embed_close(&e);
}

/* ------------------------------------------------------------------------------------------ */
/* device limits and host-path resources (review fixes)                                       */

/* A plan whose K tensor alone exceeds the device's largest storage buffer: dense (no K-sized
 * scratch), so creation succeeds; returns 0 (and skips) when the device has no such size. */
static int k_over_buffer_limit(baatt_config *c)
{
    uint64_t range = g_ctx->info.max_storage_buffer_range;
    uint64_t kv_len = range / (4 * 64) + 1;
    if (kv_len * 64 > 0x7fffffffull) return 0;
    *c = baatt_config_default();
    c->q_len = 64;
    c->kv_len = (uint32_t)kv_len;
    c->head_dim = 64;
    c->dense = 1;
    return 1;
}

/* baatt_plan_record binds each caller tensor as one storage-buffer range: one over
 * maxStorageBufferRange is refused (as run_host refuses its own), not written into the set. */
static void record_tensor_over_buffer_limit(void **s)
{
    (void)s;
    baatt_config c;
    if (!k_over_buffer_limit(&c)) skip();
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(g_ctx, &c, &plan), BAATT_OK);
    baatt_buffer b;
    assert_int_equal(baatt_buffer_create(g_ctx, 64, 0, &b), BAATT_OK);
    baatt_tensors t = {{b.buffer, 0}, {b.buffer, 0}, {b.buffer, 0}, {b.buffer, 0}};
    VkCommandBuffer cmd;
    assert_int_equal(baatt_cmd_begin(g_ctx, &cmd), BAATT_OK);
    baatt_status st = baatt_plan_record(plan, cmd, &t);
    baatt_cmd_discard(g_ctx, cmd); /* never submitted */
    baatt_plan_destroy(plan);
    baatt_buffer_destroy(g_ctx, &b);
    assert_int_equal(st, BAATT_ERROR_TOO_LARGE);
    expect_message(baatt_context_error(g_ctx), "buffer limit");
}

/* Live VkBuffers of g_ctx, counted through its device table. */
static PFN_vkCreateBuffer g_real_create_buffer;
static PFN_vkDestroyBuffer g_real_destroy_buffer;
static int g_live_buffers;

static VKAPI_ATTR VkResult VKAPI_CALL counting_create_buffer(VkDevice d, const VkBufferCreateInfo *ci,
                                                             const VkAllocationCallbacks *a, VkBuffer *out)
{
    VkResult r = g_real_create_buffer(d, ci, a, out);
    if (r == VK_SUCCESS) g_live_buffers++;
    return r;
}

static VKAPI_ATTR void VKAPI_CALL counting_destroy_buffer(VkDevice d, VkBuffer b, const VkAllocationCallbacks *a)
{
    if (b) g_live_buffers--;
    g_real_destroy_buffer(d, b, a);
}

/* run_host creates its tensor buffers on first use; when that fails part-way (Q made, K too
 * large), a second call must not create Q again over the live handle, and destroying the plan
 * must leave no buffer behind. */
static void run_host_retry_leaks_nothing(void **s)
{
    (void)s;
    baatt_config c;
    if (!k_over_buffer_limit(&c)) skip();
    g_real_create_buffer = g_ctx->vk.vkCreateBuffer;
    g_real_destroy_buffer = g_ctx->vk.vkDestroyBuffer;
    g_live_buffers = 0;
    g_ctx->vk.vkCreateBuffer = counting_create_buffer;
    g_ctx->vk.vkDestroyBuffer = counting_destroy_buffer;
    baatt_plan *plan = NULL;
    baatt_status st = baatt_plan_create(g_ctx, &c, &plan);
    float dummy = 0; /* never read: the K buffer is refused before any upload */
    baatt_status r1 = st ? st : baatt_plan_run_host(plan, &dummy, &dummy, &dummy, &dummy);
    baatt_status r2 = st ? st : baatt_plan_run_host(plan, &dummy, &dummy, &dummy, &dummy);
    baatt_plan_destroy(plan);
    g_ctx->vk.vkCreateBuffer = g_real_create_buffer;
    g_ctx->vk.vkDestroyBuffer = g_real_destroy_buffer;
    assert_int_equal(st, BAATT_OK);
    assert_int_equal(r1, BAATT_ERROR_TOO_LARGE);
    assert_int_equal(r2, BAATT_ERROR_TOO_LARGE);
    assert_int_equal(g_live_buffers, 0);
}

/* The K side's sort and statistics dispatch one workgroup per key block along x: a kv_len with
 * more key blocks than maxComputeWorkGroupCount[0] is refused at plan creation. */
static void kv_blocks_over_workgroup_limit(void **s)
{
    (void)s;
    uint64_t maxg = g_ctx->limits.maxComputeWorkGroupCount[0];
    uint64_t kv_len = (maxg + 1) * 32;
    if (kv_len * 64 > 0x7fffffffull) skip(); /* the element cap comes first on this device */
    baatt_config c = baatt_config_default();
    c.q_len = 64;
    c.kv_len = (uint32_t)kv_len;
    c.head_dim = 64;
    c.block_size = 32;
    baatt_plan *plan = (baatt_plan *)0x1;
    baatt_status st = baatt_plan_create(g_ctx, &c, &plan);
    if (st == BAATT_OK) baatt_plan_destroy(plan);
    assert_int_equal(st, BAATT_ERROR_TOO_LARGE);
    expect_message(baatt_context_error(g_ctx), "key blocks");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(devices_list),
        cmocka_unit_test(create_default),
        cmocka_unit_test(select_by_index),
        cmocka_unit_test(select_by_name),
        cmocka_unit_test(select_bad_index),
        cmocka_unit_test(select_bad_name),
        cmocka_unit_test_teardown(env_device_index, restore_env),
        cmocka_unit_test_teardown(env_device_bad_name, restore_env),
        cmocka_unit_test(status_strings),
        cmocka_unit_test(context_error_null),
        cmocka_unit_test(wrap_invalid),
        cmocka_unit_test(buffer_round_trip),
        cmocka_unit_test(embedded_record),
        cmocka_unit_test(wrapped_profile_pipelines),
        cmocka_unit_test(env_tune_and_profile),
        cmocka_unit_test(record_tensor_over_buffer_limit),
        cmocka_unit_test(run_host_retry_leaks_nothing),
        cmocka_unit_test(kv_blocks_over_workgroup_limit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
