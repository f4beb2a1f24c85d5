/*
 * Embedding baatt in an application that owns its Vulkan objects.
 *
 * The application creates its instance and device through libvulkan (linked normally, with
 * prototypes), fills its own device-local Q/K/V buffers from a staging buffer, and records
 * baatt's stages into its own command buffer between its own barriers:
 *
 *   copy staging -> Q, K, V | barrier transfer -> compute | baatt_plan_record
 *   | barrier compute -> transfer | copy O -> readback | barrier transfer -> host
 *
 * then checks O against baatt's CPU reference. Exit status 0: match; 1: mismatch or error;
 * 77: no usable Vulkan device (a skip, as in the tests).
 */
#include <baatt.h>
#include <vulkan/vulkan.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKIP 77

typedef struct app {
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue;
    uint32_t family;
    uint32_t enabled; /* BAATT_FEATURE_* bits this device was created with */
    VkPhysicalDeviceMemoryProperties mem;
} app;

typedef struct buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    void *mapped; /* host-visible buffers only */
} buffer;

static int vk_ok(VkResult r, const char *what)
{
    if (r != VK_SUCCESS) fprintf(stderr, "embed: %s failed (VkResult %d)\n", what, (int)r);
    return r == VK_SUCCESS;
}

static int compute_family(VkPhysicalDevice pd, uint32_t *family)
{
    VkQueueFamilyProperties props[16];
    uint32_t n = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, props);
    for (uint32_t i = 0; i < n; i++)
        if (props[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            *family = i;
            return 1;
        }
    return 0;
}

/* The first device with a compute queue; fp16 storage/arithmetic enabled where present, and
 * told to baatt through `enabled` (it cannot query what an application enabled). */
static int create_device(app *a)
{
    VkPhysicalDevice pds[16];
    uint32_t n = 16;
    if (vkEnumeratePhysicalDevices(a->instance, &n, pds) < 0 || n == 0) return 0;
    uint32_t i = 0;
    while (i < n && !compute_family(pds[i], &a->family)) i++;
    if (i == n) return 0;
    a->phys = pds[i];
    VkPhysicalDeviceVulkan12Features have12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features have11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                               .pNext = &have12};
    VkPhysicalDeviceFeatures2 have = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &have11};
    vkGetPhysicalDeviceFeatures2(a->phys, &have);
    VkPhysicalDeviceVulkan12Features v12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                            .shaderFloat16 = have12.shaderFloat16};
    VkPhysicalDeviceVulkan11Features v11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                            .pNext = &v12,
                                            .storageBuffer16BitAccess = have11.storageBuffer16BitAccess};
    a->enabled = (have11.storageBuffer16BitAccess ? BAATT_FEATURE_FP16_STORAGE : 0) |
                 (have12.shaderFloat16 ? BAATT_FEATURE_FP16_ARITH : 0);
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                  .queueFamilyIndex = a->family,
                                  .queueCount = 1,
                                  .pQueuePriorities = &prio};
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                             .pNext = &v11,
                             .queueCreateInfoCount = 1,
                             .pQueueCreateInfos = &qi};
    if (!vk_ok(vkCreateDevice(a->phys, &ci, NULL, &a->device), "vkCreateDevice")) return 0;
    vkGetDeviceQueue(a->device, a->family, 0, &a->queue);
    vkGetPhysicalDeviceMemoryProperties(a->phys, &a->mem);
    return 1;
}

static int app_open(app *a)
{
    VkApplicationInfo ai = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                            .pApplicationName = "baatt-embed",
                            .apiVersion = VK_API_VERSION_1_2};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &ai};
    if (vkCreateInstance(&ci, NULL, &a->instance) != VK_SUCCESS) return 0;
    return create_device(a);
}

static void app_close(app *a)
{
    if (a->device) vkDestroyDevice(a->device, NULL);
    if (a->instance) vkDestroyInstance(a->instance, NULL);
}

static int memory_type(const app *a, uint32_t bits, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < a->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (a->mem.memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}

static int buffer_create(const app *a, VkDeviceSize size, int host, buffer *b)
{
    VkBufferUsageFlags usage =
        host ? VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT
             : VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size, .usage = usage};
    b->size = size;
    if (!vk_ok(vkCreateBuffer(a->device, &bi, NULL, &b->buffer), "vkCreateBuffer")) return 0;
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(a->device, b->buffer, &req);
    VkMemoryPropertyFlags want = host ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                                      : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    int type = memory_type(a, req.memoryTypeBits, want);
    VkMemoryAllocateInfo mi = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = (uint32_t)type};
    if (type < 0 || !vk_ok(vkAllocateMemory(a->device, &mi, NULL, &b->memory), "vkAllocateMemory")) return 0;
    if (!vk_ok(vkBindBufferMemory(a->device, b->buffer, b->memory, 0), "vkBindBufferMemory")) return 0;
    return !host || vk_ok(vkMapMemory(a->device, b->memory, 0, size, 0, &b->mapped), "vkMapMemory");
}

static void buffer_destroy(const app *a, buffer *b)
{
    if (b->buffer) vkDestroyBuffer(a->device, b->buffer, NULL);
    if (b->memory) vkFreeMemory(a->device, b->memory, NULL);
}

static void barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags src_access, VkPipelineStageFlags dst,
                    VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src_access, .dstAccessMask = dst_access};
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* The whole frame: uploads, baatt, download, in one command buffer of the application's. */
static int record(VkCommandBuffer cmd, baatt_plan *plan, const buffer *up, buffer dev[4], const buffer *down)
{
    VkDeviceSize off = 0;
    for (int i = 0; i < 3; i++) {
        VkBufferCopy c = {off, 0, dev[i].size};
        vkCmdCopyBuffer(cmd, up->buffer, dev[i].buffer, 1, &c);
        off += dev[i].size;
    }
    vkCmdFillBuffer(cmd, dev[3].buffer, 0, VK_WHOLE_SIZE, 0x7fc00000u); /* O starts as NaN */
    barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    baatt_tensors t = {{dev[0].buffer, 0}, {dev[1].buffer, 0}, {dev[2].buffer, 0}, {dev[3].buffer, 0}};
    baatt_status s = baatt_plan_record(plan, cmd, &t);
    if (s) return 0;
    barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_READ_BIT);
    VkBufferCopy c = {0, 0, dev[3].size};
    vkCmdCopyBuffer(cmd, dev[3].buffer, down->buffer, 1, &c);
    barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT);
    return 1;
}

/* Creates a pool and command buffer, records the frame, submits and waits on a fence. */
static int submit(const app *a, baatt_plan *plan, const buffer *up, buffer dev[4], const buffer *down)
{
    VkCommandPool pool = VK_NULL_HANDLE;
    VkFence fence = VK_NULL_HANDLE;
    VkCommandBuffer cmd;
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, .queueFamilyIndex = a->family};
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    int ok = vk_ok(vkCreateCommandPool(a->device, &pi, NULL, &pool), "vkCreateCommandPool");
    ai.commandPool = pool;
    ok = ok && vk_ok(vkAllocateCommandBuffers(a->device, &ai, &cmd), "vkAllocateCommandBuffers");
    ok = ok && vk_ok(vkCreateFence(a->device, &fi, NULL, &fence), "vkCreateFence");
    ok = ok && vk_ok(vkBeginCommandBuffer(cmd, &bi), "vkBeginCommandBuffer");
    ok = ok && record(cmd, plan, up, dev, down);
    ok = ok && vk_ok(vkEndCommandBuffer(cmd), "vkEndCommandBuffer");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
    ok = ok && vk_ok(vkQueueSubmit(a->queue, 1, &si, fence), "vkQueueSubmit");
    ok = ok && vk_ok(vkWaitForFences(a->device, 1, &fence, VK_TRUE, 600ull * 1000000000ull), "vkWaitForFences");
    if (fence) vkDestroyFence(a->device, fence, NULL);
    if (pool) vkDestroyCommandPool(a->device, pool, NULL);
    return ok;
}

static float uniform(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* Largest |got - want| relative to the largest |want|; NaN counts as a failure. */
static double max_error(const float *got, const float *want, size_t n)
{
    double err = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (isnan(got[i])) return INFINITY;
        if (d > err) err = d;
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    return err / scale;
}

/* Plans BA-Att (GQA, the default auto sort, keep 0.5) on the wrapped device, runs it through the
 * application's command buffer, and compares with the CPU reference. */
static int run(const app *a, baatt_context *ctx)
{
    baatt_config cfg = baatt_config_default();
    cfg.batch = 1, cfg.heads = 4, cfg.kv_heads = 2, cfg.q_len = cfg.kv_len = 512, cfg.head_dim = 64;
    size_t qn = (size_t)cfg.heads * cfg.q_len * cfg.head_dim, kn = (size_t)cfg.kv_heads * cfg.kv_len * cfg.head_dim;
    baatt_plan *plan = NULL;
    if (baatt_plan_create(ctx, &cfg, &plan)) {
        fprintf(stderr, "embed: baatt_plan_create: %s\n", baatt_context_error(ctx));
        return 0;
    }
    buffer dev[4] = {0}, up = {0}, down = {0};
    int ok = buffer_create(a, 4 * qn, 0, &dev[0]) && buffer_create(a, 4 * kn, 0, &dev[1]) &&
             buffer_create(a, 4 * kn, 0, &dev[2]) && buffer_create(a, 4 * qn, 0, &dev[3]) &&
             buffer_create(a, 4 * (qn + 2 * kn), 1, &up) && buffer_create(a, 4 * qn, 1, &down);
    float *want = malloc(4 * qn);
    if (ok && want) {
        uint64_t seed = 0x5eed;
        float *host = up.mapped; /* Q | K | V, uniform in [-1, 1) */
        for (size_t i = 0; i < qn + 2 * kn; i++) host[i] = uniform(&seed);
        ok = submit(a, plan, &up, dev, &down);
        if (!ok) fprintf(stderr, "embed: recording failed: %s\n", baatt_context_error(ctx));
        ok = ok && baatt_reference_baatt(&cfg, host, host + qn, host + qn + kn, want, NULL, NULL, NULL) == BAATT_OK;
    }
    if (ok) {
        double err = max_error(down.mapped, want, qn);
        printf("embed: %s: BA-Att [1, 4/2 heads, 512, 64] fp32 through the application's command buffer, "
               "max error %.3g of max |O| against the CPU reference\n",
               err <= 1e-4 ? "ok" : "MISMATCH", err);
        ok = err <= 1e-4;
    }
    free(want);
    for (int i = 0; i < 4; i++) buffer_destroy(a, &dev[i]);
    buffer_destroy(a, &up);
    buffer_destroy(a, &down);
    baatt_plan_destroy(plan);
    return ok;
}

int main(void)
{
    app a = {0};
    if (!app_open(&a)) {
        fprintf(stderr, "embed: skipped: no Vulkan instance or device with a compute queue\n");
        app_close(&a);
        return SKIP;
    }
    printf("embed: baatt %s (header %d.%d.%d)\n", baatt_version(), BAATT_VERSION_MAJOR, BAATT_VERSION_MINOR,
           BAATT_VERSION_PATCH);
    baatt_external_device ext = {.get_instance_proc_addr = vkGetInstanceProcAddr,
                                 .instance = a.instance,
                                 .physical_device = a.phys,
                                 .device = a.device,
                                 .queue = a.queue,
                                 .queue_family_index = a.family,
                                 .enabled = a.enabled};
    baatt_context *ctx = NULL;
    baatt_status s = baatt_context_wrap(&ext, &ctx);
    int ok = s == BAATT_OK;
    if (!ok) fprintf(stderr, "embed: baatt_context_wrap: %s\n", baatt_context_error(ctx));
    ok = ok && run(&a, ctx);
    baatt_context_destroy(ctx);
    app_close(&a);
    return ok ? 0 : 1;
}
