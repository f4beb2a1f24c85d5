/* Buffers: device-local storage buffers for tensors and scratch, host-visible coherent buffers
 * for staging. One allocation per buffer: baatt's buffers are few and large. */
#include <string.h>

#include "runtime.h"

/* Staging per submission: bounds host-visible memory for GiB-sized tensors. */
#define STAGING_MAX (64ull << 20)

static int find_memory(const baatt_context *ctx, uint32_t bits, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < ctx->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (ctx->mem.memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}

#define EXPORT_HANDLE VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT
#define BUFFER_USAGE                                                                                                   \
    (VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT)

/* The memory requirements of b; for an exportable buffer also whether the driver requires or
 * prefers a dedicated allocation (importers must then be told: CUDA_EXTERNAL_MEMORY_DEDICATED). */
static void requirements(baatt_context *ctx, baatt_buffer *b, VkMemoryRequirements *req)
{
    if (!b->exportable) {
        ctx->vk.vkGetBufferMemoryRequirements(ctx->device, b->buffer, req);
        return;
    }
    VkMemoryDedicatedRequirements ded = {.sType = VK_STRUCTURE_TYPE_MEMORY_DEDICATED_REQUIREMENTS};
    VkMemoryRequirements2 r2 = {.sType = VK_STRUCTURE_TYPE_MEMORY_REQUIREMENTS_2, .pNext = &ded};
    VkBufferMemoryRequirementsInfo2 ri = {.sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_REQUIREMENTS_INFO_2,
                                          .buffer = b->buffer};
    ctx->vk.vkGetBufferMemoryRequirements2(ctx->device, &ri, &r2);
    *req = r2.memoryRequirements;
    b->dedicated |= ded.prefersDedicatedAllocation || ded.requiresDedicatedAllocation;
}

static baatt_status alloc_failed(baatt_context *ctx, VkResult r, VkDeviceSize bytes, int host_visible)
{
    baatt_vk(ctx, r, "vkAllocateMemory");
    return baatt_fail(
        ctx, r == VK_ERROR_OUT_OF_HOST_MEMORY ? BAATT_ERROR_OUT_OF_HOST_MEMORY : BAATT_ERROR_OUT_OF_DEVICE_MEMORY,
        "vkAllocateMemory of %.1f MiB (%s) failed: %s", (double)bytes / 1048576.0,
        host_visible ? "staging" : "device-local", baatt_vkresult_name(r));
}

/* out->exportable (and out->dedicated, where only dedicated allocations export) set by the caller. */
static baatt_status buffer_create(baatt_context *ctx, VkDeviceSize size, int host_visible, baatt_buffer *out)
{
    if (!size) size = 16; /* keep every binding valid even for empty scratch */
    VkExternalMemoryBufferCreateInfo ext = {.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
                                            .handleTypes = EXPORT_HANDLE};
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                             .pNext = out->exportable ? &ext : NULL,
                             .size = size,
                             .usage = BUFFER_USAGE,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    BAATT_VK(ctx, ctx->vk.vkCreateBuffer(ctx->device, &bi, NULL, &out->buffer));
    out->size = size;
    VkMemoryRequirements req;
    requirements(ctx, out, &req);
    int type = host_visible ? find_memory(ctx, req.memoryTypeBits,
                                          VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
                            : find_memory(ctx, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (type < 0 && !host_visible) type = find_memory(ctx, req.memoryTypeBits, 0);
    if (type < 0) {
        baatt_buffer_destroy(ctx, out);
        return baatt_fail(ctx, BAATT_ERROR_VULKAN, "no %s memory type for a %llu-byte buffer",
                          host_visible ? "host-visible coherent" : "device-local", (unsigned long long)size);
    }
    VkMemoryDedicatedAllocateInfo dai = {.sType = VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO,
                                         .buffer = out->buffer};
    VkExportMemoryAllocateInfo exp = {.sType = VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO,
                                      .pNext = out->dedicated ? &dai : NULL,
                                      .handleTypes = EXPORT_HANDLE};
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .pNext = out->exportable ? &exp : NULL,
                               .allocationSize = req.size,
                               .memoryTypeIndex = (uint32_t)type};
    VkResult r = ctx->vk.vkAllocateMemory(ctx->device, &ai, NULL, &out->memory);
    if (r != VK_SUCCESS) {
        baatt_buffer_destroy(ctx, out);
        return alloc_failed(ctx, r, req.size, host_visible);
    }
    out->allocation = req.size;
    r = ctx->vk.vkBindBufferMemory(ctx->device, out->buffer, out->memory, 0);
    if (r == VK_SUCCESS && host_visible)
        r = ctx->vk.vkMapMemory(ctx->device, out->memory, 0, VK_WHOLE_SIZE, 0, &out->mapped);
    if (r != VK_SUCCESS) {
        baatt_buffer_destroy(ctx, out);
        return baatt_vk(ctx, r, host_visible ? "vkBindBufferMemory/vkMapMemory" : "vkBindBufferMemory");
    }
    return BAATT_OK;
}

baatt_status baatt_buffer_create(baatt_context *ctx, VkDeviceSize size, int host_visible, baatt_buffer *out)
{
    *out = (baatt_buffer){0};
    return buffer_create(ctx, size, host_visible, out);
}

baatt_status baatt_buffer_create_exportable(baatt_context *ctx, VkDeviceSize size, baatt_buffer *out)
{
    *out = (baatt_buffer){.exportable = 1};
    if (!(ctx->features & BAATT_FEATURE_EXTERNAL_MEMORY_FD))
        return baatt_fail(ctx, BAATT_ERROR_MISSING_FEATURE,
                          "exportable buffers need VK_KHR_external_memory_fd, which device %s %s", ctx->info.name,
                          ctx->owns_device ? "does not offer"
                                           : "was not created with (BAATT_FEATURE_EXTERNAL_MEMORY_FD)");
    /* A wrapped device whose application claimed the bit without enabling the extension, or a
     * 1.0 device: the functions are missing, and calling them would crash. */
    if (!ctx->vk.vkGetMemoryFdKHR || !ctx->vk.vkGetBufferMemoryRequirements2 ||
        !ctx->vki.vkGetPhysicalDeviceExternalBufferProperties)
        return baatt_fail(ctx, BAATT_ERROR_MISSING_FEATURE,
                          "exportable buffers: device %s has no vkGetMemoryFdKHR / vkGetBufferMemoryRequirements2 "
                          "(VK_KHR_external_memory_fd not enabled, or a Vulkan 1.0 device)",
                          ctx->info.name);
    VkPhysicalDeviceExternalBufferInfo info = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_BUFFER_INFO,
                                               .usage = BUFFER_USAGE,
                                               .handleType = EXPORT_HANDLE};
    VkExternalBufferProperties props = {.sType = VK_STRUCTURE_TYPE_EXTERNAL_BUFFER_PROPERTIES};
    ctx->vki.vkGetPhysicalDeviceExternalBufferProperties(ctx->phys, &info, &props);
    VkExternalMemoryFeatureFlags f = props.externalMemoryProperties.externalMemoryFeatures;
    if (!(f & VK_EXTERNAL_MEMORY_FEATURE_EXPORTABLE_BIT))
        return baatt_fail(ctx, BAATT_ERROR_MISSING_FEATURE,
                          "device %s cannot export storage buffers as opaque file descriptors", ctx->info.name);
    out->dedicated = (f & VK_EXTERNAL_MEMORY_FEATURE_DEDICATED_ONLY_BIT) != 0;
    return buffer_create(ctx, size, 0, out);
}

void baatt_buffer_destroy(baatt_context *ctx, baatt_buffer *b)
{
    if (!b) return;
    /* After a timed-out wait the GPU may still use this buffer: freeing waits for that work. */
    if (b->buffer && atomic_load(&ctx->lost)) baatt_cmd_drain(ctx);
    if (b->buffer) ctx->vk.vkDestroyBuffer(ctx->device, b->buffer, NULL);
    if (b->memory) ctx->vk.vkFreeMemory(ctx->device, b->memory, NULL);
    *b = (baatt_buffer){0};
}

/* One staged copy of n bytes at offset: staging -> buffer (up), or back. */
static baatt_status copy_chunk(baatt_context *ctx, const baatt_buffer *dev, const baatt_buffer *st, uint64_t offset,
                               uint64_t n, int up)
{
    VkCommandBuffer cmd;
    BAATT_TRY(baatt_cmd_begin(ctx, &cmd));
    VkBufferCopy c = {up ? 0 : offset, up ? offset : 0, n};
    if (up) ctx->vk.vkCmdCopyBuffer(cmd, st->buffer, dev->buffer, 1, &c);
    else {
        ctx->vk.vkCmdCopyBuffer(cmd, dev->buffer, st->buffer, 1, &c);
        baatt_cmd_host_barrier(ctx, cmd);
    }
    return baatt_cmd_submit_wait(ctx, cmd);
}

baatt_status baatt_buffer_transfer(baatt_context *ctx, const baatt_buffer *dev, uint64_t offset, const void *src,
                                   void *dst, uint64_t bytes)
{
    if (!bytes) return BAATT_OK;
    baatt_buffer st;
    BAATT_TRY(baatt_buffer_create(ctx, bytes < STAGING_MAX ? bytes : STAGING_MAX, 1, &st));
    baatt_status s = BAATT_OK;
    for (uint64_t done = 0; !s && done < bytes; done += st.size) {
        uint64_t n = bytes - done < st.size ? bytes - done : st.size;
        if (src) memcpy(st.mapped, (const char *)src + done, n);
        s = copy_chunk(ctx, dev, &st, offset + done, n, src != NULL);
        if (!s && !src) memcpy((char *)dst + done, st.mapped, n);
    }
    baatt_buffer_destroy(ctx, &st);
    return s;
}
