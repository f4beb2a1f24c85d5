/* Exportable device buffers (baatt_device_buffer_create_exportable / _export_fd): the exported
 * fd imported into a fresh VkDeviceMemory + VkBuffer on the same VkDevice (as CUDA would import
 * it) sees the bytes baatt wrote, and a copy out of it lands in a second baatt buffer; a plan runs
 * on exportable buffers and matches the CPU reference; the errors (a plain buffer, NULL
 * arguments) are specific. Skips (exit 77) where the device has no VK_KHR_external_memory_fd. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "vk_table.h"

/* Raw Vulkan on the context's device through the project's loader helpers. */
typedef struct raw_vk {
    baatt_external_device h;
    baatt_vk_instance vki;
    baatt_vk_device vk;
} raw_vk;

static void raw_init(raw_vk *r)
{
    assert_int_equal(baatt_context_handles(th_ctx, &r->h), BAATT_OK);
    assert_true(baatt_vk_load_global(&r->vki, r->h.get_instance_proc_addr));
    baatt_vk_load_instance(&r->vki, r->h.instance);
    baatt_vk_load_device(&r->vki, r->h.device, &r->vk);
}

static int missing_export; /* the device lacks the extension: the run exits 77 */

static int skip_without_export(void)
{
    baatt_external_device h;
    assert_int_equal(baatt_context_handles(th_ctx, &h), BAATT_OK);
    if (h.enabled & BAATT_FEATURE_EXTERNAL_MEMORY_FD) return 0;
    baatt_device_info info;
    assert_int_equal(baatt_context_device_info(th_ctx, &info), BAATT_OK);
    assert_false(info.external_memory_fd && info.api_version >= VK_API_VERSION_1_1); /* offered: must be on */
    fprintf(stderr, "SKIP: device %s has no VK_KHR_external_memory_fd\n", info.name);
    missing_export = 1;
    return 1;
}

/* A VkBuffer over memory imported from fd (ownership passes to Vulkan on success). */
static void import_fd(raw_vk *r, int fd, uint64_t alloc, int dedicated, uint64_t bytes, VkBuffer *buf,
                      VkDeviceMemory *mem)
{
    VkExternalMemoryBufferCreateInfo ext = {.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
                                            .handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                             .pNext = &ext,
                             .size = bytes,
                             .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    assert_int_equal(r->vk.vkCreateBuffer(r->h.device, &bi, NULL, buf), VK_SUCCESS);
    VkMemoryRequirements req;
    r->vk.vkGetBufferMemoryRequirements(r->h.device, *buf, &req);
    assert_true(req.size <= alloc);
    /* Opaque fds import into the exporter's memory type: the first device-local one, as baatt picks. */
    VkPhysicalDeviceMemoryProperties mp;
    r->vki.vkGetPhysicalDeviceMemoryProperties(r->h.physical_device, &mp);
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < mp.memoryTypeCount && type == UINT32_MAX; i++)
        if ((req.memoryTypeBits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT))
            type = i;
    assert_true(type != UINT32_MAX);
    VkMemoryDedicatedAllocateInfo dai = {.sType = VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO, .buffer = *buf};
    VkImportMemoryFdInfoKHR imp = {.sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR,
                                   .pNext = dedicated ? &dai : NULL,
                                   .handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT,
                                   .fd = fd};
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .pNext = &imp,
                               .allocationSize = alloc,
                               .memoryTypeIndex = type};
    assert_int_equal(r->vk.vkAllocateMemory(r->h.device, &ai, NULL, mem), VK_SUCCESS);
    assert_int_equal(r->vk.vkBindBufferMemory(r->h.device, *buf, *mem, 0), VK_SUCCESS);
}

/* Copies bytes from src to dst on the context's queue and waits. */
static void copy_buffer(raw_vk *r, VkBuffer src, VkBuffer dst, uint64_t bytes)
{
    VkDevice dev = r->h.device;
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .queueFamilyIndex = r->h.queue_family_index};
    VkCommandPool pool;
    assert_int_equal(r->vk.vkCreateCommandPool(dev, &pi, NULL, &pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    VkCommandBuffer cmd;
    assert_int_equal(r->vk.vkAllocateCommandBuffers(dev, &ai, &cmd), VK_SUCCESS);
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    assert_int_equal(r->vk.vkBeginCommandBuffer(cmd, &bi), VK_SUCCESS);
    VkBufferCopy c = {0, 0, bytes};
    r->vk.vkCmdCopyBuffer(cmd, src, dst, 1, &c);
    assert_int_equal(r->vk.vkEndCommandBuffer(cmd), VK_SUCCESS);
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    assert_int_equal(r->vk.vkCreateFence(dev, &fi, NULL, &fence), VK_SUCCESS);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
    assert_int_equal(r->vk.vkQueueSubmit(r->h.queue, 1, &si, fence), VK_SUCCESS);
    assert_int_equal(r->vk.vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
    r->vk.vkDestroyFence(dev, fence, NULL);
    r->vk.vkDestroyCommandPool(dev, pool, NULL);
}

static void export_import_round_trip(void **s)
{
    (void)s;
    if (skip_without_export()) skip();
    raw_vk r;
    raw_init(&r);
    uint64_t rng = th_seed() ^ 0xE7F;
    enum { N = 40000 };
    uint8_t *src = malloc(N), *back = malloc(N);
    assert_true(src && back);
    for (int i = 0; i < N; i++) src[i] = (uint8_t)th_next(&rng);
    baatt_device_buffer *a = NULL, *b = NULL;
    assert_int_equal(baatt_device_buffer_create_exportable(th_ctx, N, &a), BAATT_OK);
    assert_int_equal(baatt_device_buffer_create(th_ctx, N, &b), BAATT_OK);
    assert_int_equal(baatt_device_buffer_write(a, 0, src, N), BAATT_OK);
    memset(back, 0, N);
    assert_int_equal(baatt_device_buffer_write(b, 0, back, N), BAATT_OK);
    int fd = -1, fd2 = -1, dedicated = -1;
    uint64_t alloc = 0, alloc2 = 0;
    assert_int_equal(baatt_device_buffer_export_fd(a, &fd, &alloc, &dedicated), BAATT_OK);
    assert_true(fd >= 0);
    assert_true(alloc >= N);
    assert_true(dedicated == 0 || dedicated == 1);
    /* a new descriptor each call, for the same allocation */
    assert_int_equal(baatt_device_buffer_export_fd(a, &fd2, &alloc2, &dedicated), BAATT_OK);
    assert_true(fd2 >= 0 && fd2 != fd);
    assert_int_equal(alloc2, alloc);
    close(fd2);
    VkBuffer ib;
    VkDeviceMemory im;
    import_fd(&r, fd, alloc, dedicated, N, &ib, &im); /* takes fd */
    copy_buffer(&r, ib, baatt_device_buffer_tensor(b).buffer, N);
    assert_int_equal(baatt_device_buffer_read(b, 0, back, N), BAATT_OK);
    assert_memory_equal(src, back, N);
    r.vk.vkDestroyBuffer(r.h.device, ib, NULL);
    r.vk.vkFreeMemory(r.h.device, im, NULL);
    /* baatt's buffer outlives the import's release and still holds its bytes */
    memset(back, 0, N);
    assert_int_equal(baatt_device_buffer_read(a, 0, back, N), BAATT_OK);
    assert_memory_equal(src, back, N);
    baatt_device_buffer_destroy(a);
    baatt_device_buffer_destroy(b);
    free(src), free(back);
}

/* A plan over exportable buffers (GQA, fp16, dense and sparse) against the CPU reference. */
static void plan_on_exportable_buffers(void **s)
{
    (void)s;
    if (skip_without_export()) skip();
    uint64_t rng = th_seed() ^ 0xE80;
    for (int dense = 0; dense < 2; dense++) {
        baatt_config c = baatt_config_default();
        c.batch = 1, c.heads = 4, c.kv_heads = 2, c.q_len = 192, c.kv_len = 256, c.head_dim = 64;
        c.dtype = BAATT_DTYPE_F16, c.dense = dense;
        size_t es = 2, qn = (size_t)c.heads * c.q_len * 64, kn = (size_t)c.kv_heads * c.kv_len * 64;
        void *q = th_random_tensor(&rng, c.dtype, qn, 1), *k = th_random_tensor(&rng, c.dtype, kn, 1);
        void *v = th_random_tensor(&rng, c.dtype, kn, 1), *o = malloc(qn * es);
        float *ref = malloc(qn * sizeof *ref);
        assert_true(o && ref);
        th_poison(o, c.dtype, qn);
        baatt_device_buffer *b[4];
        size_t n[4] = {qn, kn, kn, qn};
        void *host[4] = {q, k, v, o};
        for (int i = 0; i < 4; i++) {
            assert_int_equal(baatt_device_buffer_create_exportable(th_ctx, n[i] * es, &b[i]), BAATT_OK);
            assert_int_equal(baatt_device_buffer_write(b[i], 0, host[i], n[i] * es), BAATT_OK);
        }
        baatt_plan *plan = NULL;
        assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), BAATT_OK);
        assert_int_equal(baatt_plan_run_buffers(plan, b[0], b[1], b[2], b[3]), BAATT_OK);
        assert_int_equal(baatt_device_buffer_read(b[3], 0, o, qn * es), BAATT_OK);
        if (dense) th_check_dense(&c, q, k, v, o, "dense on exportable buffers");
        else {
            uint8_t *mask = malloc((size_t)c.heads * baatt_config_q_blocks(&c) * baatt_config_k_blocks(&c));
            int32_t *pq = malloc(qn / 64 * 4), *pk = malloc(kn / 64 * 4);
            assert_true(mask && pq && pk);
            assert_int_equal(baatt_plan_read_mask(plan, mask), BAATT_OK);
            assert_int_equal(baatt_plan_read_perms(plan, pq, pk), BAATT_OK);
            assert_int_equal(baatt_reference_sparse_attention(&c, q, k, v, pq, pk, mask, ref), BAATT_OK);
            float *f = th_to_float(o, c.dtype, qn);
            double atol, rtol;
            th_tolerance(c.dtype, &atol, &rtol);
            assert_true(th_compare(f, ref, qn, atol, rtol, "sparse on exportable buffers") <= 1);
            free(f), free(mask), free(pq), free(pk);
        }
        baatt_plan_destroy(plan);
        for (int i = 0; i < 4; i++) baatt_device_buffer_destroy(b[i]);
        free(q), free(k), free(v), free(o), free(ref);
    }
}

static void export_errors(void **s)
{
    (void)s;
    int fd = 123, dedicated;
    uint64_t alloc;
    baatt_device_buffer *plain = NULL, *e = (baatt_device_buffer *)0x1;
    assert_int_equal(baatt_device_buffer_export_fd(NULL, &fd, &alloc, &dedicated), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_device_buffer_create_exportable(NULL, 64, &e), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_device_buffer_create_exportable(th_ctx, 64, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_device_buffer_create_exportable(th_ctx, 0, &e), BAATT_ERROR_BAD_SHAPE);
    assert_null(e);
    assert_int_equal(baatt_device_buffer_create(th_ctx, 64, &plain), BAATT_OK);
    assert_int_equal(baatt_device_buffer_export_fd(plain, &fd, &alloc, &dedicated), BAATT_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(baatt_context_error(th_ctx), "not exportable"));
    assert_int_equal(fd, -1); /* no descriptor to close */
    assert_int_equal(baatt_device_buffer_export_fd(plain, NULL, &alloc, &dedicated), BAATT_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(baatt_context_error(th_ctx), "must be set"));
    baatt_device_buffer_destroy(plain);
    if (skip_without_export()) {
        /* without the extension: the specific status, and a message naming it */
        assert_int_equal(baatt_device_buffer_create_exportable(th_ctx, 64, &e), BAATT_ERROR_MISSING_FEATURE);
        assert_non_null(strstr(baatt_context_error(th_ctx), "VK_KHR_external_memory_fd"));
        return;
    }
    assert_int_equal(baatt_device_buffer_create_exportable(th_ctx, 64, &e), BAATT_OK);
    assert_int_equal(baatt_device_buffer_export_fd(e, &fd, NULL, &dedicated), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_device_buffer_export_fd(e, &fd, &alloc, NULL), BAATT_ERROR_INVALID_ARGUMENT);
    baatt_device_buffer_destroy(e);
}

/* A wrapped device: exportable buffers only where the application says it enabled the extension
 * (BAATT_FEATURE_EXTERNAL_MEMORY_FD); th_ctx's own device did enable it. */
static void wrapped_feature_bit(void **s)
{
    (void)s;
    if (skip_without_export()) skip();
    baatt_external_device ext;
    assert_int_equal(baatt_context_handles(th_ctx, &ext), BAATT_OK);
    for (int on = 0; on < 2; on++) {
        baatt_external_device e = ext;
        if (!on) e.enabled &= ~(uint32_t)BAATT_FEATURE_EXTERNAL_MEMORY_FD;
        baatt_context *w = NULL;
        assert_int_equal(baatt_context_wrap(&e, &w), BAATT_OK);
        baatt_device_buffer *b = NULL;
        baatt_status st = baatt_device_buffer_create_exportable(w, 256, &b);
        if (on) {
            assert_int_equal(st, BAATT_OK);
            int fd = -1, dedicated;
            uint64_t alloc;
            assert_int_equal(baatt_device_buffer_export_fd(b, &fd, &alloc, &dedicated), BAATT_OK);
            assert_true(fd >= 0 && alloc >= 256);
            close(fd);
        } else {
            assert_int_equal(st, BAATT_ERROR_MISSING_FEATURE);
            assert_null(b);
            assert_non_null(strstr(baatt_context_error(w), "BAATT_FEATURE_EXTERNAL_MEMORY_FD"));
        }
        baatt_device_buffer_destroy(b);
        baatt_context_destroy(w);
    }
}

/* The device's UUID is reported (what matches it with a CUDA device). */
static void device_uuid(void **s)
{
    (void)s;
    baatt_device_info info;
    assert_int_equal(baatt_context_device_info(th_ctx, &info), BAATT_OK);
    int nonzero = 0;
    for (int i = 0; i < 16; i++) nonzero |= info.uuid[i];
    assert_true(nonzero);
    uint32_t n = 0;
    assert_int_equal(baatt_devices_list(NULL, &n), BAATT_OK);
    baatt_device_info *all = calloc(n, sizeof *all);
    assert_non_null(all);
    assert_int_equal(baatt_devices_list(all, &n), BAATT_OK);
    assert_memory_equal(all[info.index].uuid, info.uuid, 16);
    assert_int_equal(all[info.index].external_memory_fd, info.external_memory_fd);
    free(all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(device_uuid),
        cmocka_unit_test(export_errors),
        cmocka_unit_test(export_import_round_trip),
        cmocka_unit_test(plan_on_exportable_buffers),
        cmocka_unit_test(wrapped_feature_bit),
    };
    int failed = cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
    return failed ? failed : missing_export ? 77 : 0;
}
