/* The Vulkan runtime behind the public API: context internals, buffers, pipelines, submission.
 * Device-level calls go through the context's own volk device table (ctx->vk), so several
 * contexts (ours and an application's) can coexist in one process. */
#ifndef BAATT_RUNTIME_H
#define BAATT_RUNTIME_H

#include <volk.h>

#include "choice.h"
#include "internal.h"

/* Descriptor bindings (BIND_*, one layout for every pipeline) are in shaders/interface.h. */
#define BAATT_PUSH_BYTES 128
#define BAATT_MAX_SPEC 12               /* specialization constants per pipeline */

typedef struct baatt_pipeline_entry {
    char name[48];
    uint32_t spec[BAATT_MAX_SPEC];
    uint32_t nspec;
    VkPipeline pipeline;
} baatt_pipeline_entry;

struct baatt_context {
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    int owns_device;                  /* 0 when wrapping an application's objects */
    struct VolkDeviceTable vk;
    VkDebugUtilsMessengerEXT messenger;
    uint32_t validation_messages;
    uint32_t features;                /* BAATT_FEATURE_* enabled on the device */
    int pipeline_stats;               /* BAATT_PROFILE=pipelines: print driver statistics per pipeline */
    char cache_dir[256];              /* BAATT_PROFILE=cache=DIR: keep each pipeline's driver binary */
    int no_robustness;                /* pipelines say robustness is off (VK_EXT_pipeline_robustness) */
    baatt_caps caps;                  /* the device as the path choice sees it */
    baatt_tuning tuning;              /* what plans get unless created with their own (BAATT_TUNE) */
    baatt_device_info info;
    VkPhysicalDeviceMemoryProperties mem;
    VkPhysicalDeviceLimits limits;
    VkCommandPool pool;
    VkFence fence;
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout pipeline_layout;
    baatt_pipeline_entry *pipelines;
    uint32_t npipelines, cap_pipelines;
    char error[1024];
};

/* Records a failure message (printf-style) on ctx and returns status. */
baatt_status baatt_fail(baatt_context *ctx, baatt_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Maps a VkResult to a status; on failure records "<what> failed: VK_ERROR_...". */
baatt_status baatt_vk(baatt_context *ctx, VkResult r, const char *what);
const char *baatt_vkresult_name(VkResult r);

#define BAATT_VK(ctx, call) BAATT_TRY(baatt_vk((ctx), (call), #call))

/* ---- memory.c ---- */
typedef struct baatt_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    void *mapped;                     /* host-visible buffers only */
} baatt_buffer;
/* host_visible: staging (host-coherent, mapped); else device-local storage buffer. */
baatt_status baatt_buffer_create(baatt_context *ctx, VkDeviceSize size, int host_visible,
                                 baatt_buffer *out);
void baatt_buffer_destroy(baatt_context *ctx, baatt_buffer *b);

/* ---- submission (context.c) ---- */
baatt_status baatt_cmd_begin(baatt_context *ctx, VkCommandBuffer *cmd);
/* Ends, submits and waits for cmd (BAATT_TIMEOUT_S, default 600 s), then frees it. */
baatt_status baatt_cmd_submit_wait(baatt_context *ctx, VkCommandBuffer cmd);
/* Transfer-write -> host-read barrier: record after the last copy into a staging buffer. */
void baatt_cmd_host_barrier(baatt_context *ctx, VkCommandBuffer cmd);
/* Compute-write -> compute/transfer-read memory barrier. */
void baatt_cmd_barrier(baatt_context *ctx, VkCommandBuffer cmd);

/* ---- pipelines.c ---- */
baatt_status baatt_pipelines_init(baatt_context *ctx);
void baatt_pipelines_destroy(baatt_context *ctx);
/* A compute pipeline for embedded shader `name` with specialization constants 0..nspec-1,
 * created on first use and cached on the context. */
baatt_status baatt_pipeline_get(baatt_context *ctx, const char *name, const uint32_t *spec,
                                uint32_t nspec, VkPipeline *out);
int baatt_shader_available(const char *name);

#endif
