/* The Vulkan runtime behind the public API: context internals, buffers, pipelines, submission.
 * Device-level calls go through the context's own device table (ctx->vk, vk_table.h), so several
 * contexts (ours and an application's) can coexist in one process and in several threads. */
#ifndef BAATT_RUNTIME_H
#define BAATT_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>

#include "vk_table.h"

#include "choice.h"
#include "internal.h"

/* Descriptor bindings (BIND_*, one layout for every pipeline) are in shaders/interface.h. */
#define BAATT_PUSH_BYTES 128
#define BAATT_MAX_SPEC 16 /* specialization constants per pipeline */

typedef struct baatt_pipeline_entry {
    char name[48];
    uint32_t spec[BAATT_MAX_SPEC];
    uint32_t nspec;
    uint32_t subgroup; /* required subgroup size, 0: the driver's */
    VkPipeline pipeline;
} baatt_pipeline_entry;

/* One in-flight submission's command pool, command buffer and fence. A thread takes a free slot in
 * baatt_cmd_begin and owns it (records without a lock) until baatt_cmd_submit_wait or
 * baatt_cmd_discard gives it back; only the queue submission itself is serialised. */
typedef struct baatt_submit_slot {
    struct baatt_submit_slot *next;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    int busy;           /* taken by a thread (under ctx->lock) */
    atomic_int pending; /* submitted, not seen finished (a timed-out wait) */
} baatt_submit_slot;

typedef struct baatt_khr_layout_entry {
    uint32_t key, rg, rep;
} baatt_khr_layout_entry;

struct baatt_context {
    uint64_t id;                /* unique per process: keys the per-thread error message */
    pthread_mutex_t lock;       /* queue submission, the slot list, the pipeline cache */
    pthread_mutex_t error_lock; /* error and lost_reason only (a leaf: no Vulkan call inside) */
    baatt_vk_instance vki;      /* instance-level functions of this context's loader */
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    int owns_device; /* 0 when wrapping an application's objects */
    baatt_vk_device vk;
    VkDebugUtilsMessengerEXT messenger;
    atomic_uint validation_messages; /* the layer may call back from any thread */
    atomic_int lost;                 /* 0, or the status (DEVICE_LOST, TIMEOUT) that lost it */
    double timeout_s;                /* GPU wait limit (BAATT_TIMEOUT_S, default 600) */
    uint32_t features;               /* BAATT_FEATURE_* enabled on the device */
    int want_pipeline_stats;         /* BAATT_PROFILE=pipelines asked for them */
    int pipeline_stats;              /* ... and the device baatt created enables them: print per pipeline */
    char cache_dir[256];             /* BAATT_PROFILE=cache=DIR: keep each pipeline's driver binary */
    int no_robustness;               /* pipelines say robustness is off (VK_EXT_pipeline_robustness) */
    baatt_caps caps;                 /* the device as the path choice sees it */
    baatt_tuning tuning;             /* what plans get unless created with their own (BAATT_TUNE) */
    baatt_device_info info;
    VkPhysicalDeviceMemoryProperties mem;
    VkPhysicalDeviceLimits limits;
    baatt_submit_slot *slots;
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout pipeline_layout;
    baatt_pipeline_entry *pipelines;
    uint32_t npipelines, cap_pipelines;
    /* KHR accumulator layouts probed so far (attend.c): key m | n << 8 | subgroup << 16, the
     * register softmax's row-group lanes and element partition (lock) */
    baatt_khr_layout_entry khr_layouts[4];
    uint32_t nkhr_layouts;
    char error[1024];      /* the last failure from any thread (error_lock) */
    char lost_reason[512]; /* why `lost` was set (error_lock) */
};

/* baatt_context_destroy, returning the validation messages counted up to the end, those raised
 * while tearing down (leaked objects) included: what tests check. */
uint32_t baatt_context_destroy_counted(baatt_context *ctx);

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
    void *mapped; /* host-visible buffers only */
    /* exportable buffers only (baatt_buffer_create_exportable): */
    VkDeviceSize allocation; /* the VkDeviceMemory's size */
    int exportable, dedicated;
} baatt_buffer;
/* host_visible: staging (host-coherent, mapped); else device-local storage buffer. */
baatt_status baatt_buffer_create(baatt_context *ctx, VkDeviceSize size, int host_visible, baatt_buffer *out);
/* A device-local storage buffer whose memory can be exported as an opaque fd (the context has
 * BAATT_FEATURE_EXTERNAL_MEMORY_FD), in a dedicated allocation where the driver requires or prefers
 * one. BAATT_ERROR_MISSING_FEATURE where the device cannot export such buffers. */
baatt_status baatt_buffer_create_exportable(baatt_context *ctx, VkDeviceSize size, baatt_buffer *out);
void baatt_buffer_destroy(baatt_context *ctx, baatt_buffer *b);
/* Copies bytes between host memory and [offset, offset + bytes) of dev through a staging buffer
 * (at most 64 MiB, one submission each): src != NULL uploads it, else downloads into dst. */
baatt_status baatt_buffer_transfer(baatt_context *ctx, const baatt_buffer *dev, uint64_t offset, const void *src,
                                   void *dst, uint64_t bytes);

/* ---- submission (context.c); safe from several threads on one context ---- */
/* A command buffer in the recording state, owned by the calling thread until it is given back by
 * baatt_cmd_submit_wait or baatt_cmd_discard. Fails with BAATT_ERROR_DEVICE_LOST once the context
 * is lost (device loss, or a wait that timed out with the work still pending). */
baatt_status baatt_cmd_begin(baatt_context *ctx, VkCommandBuffer *cmd);
/* Ends, submits and waits for cmd (ctx->timeout_s of wall time at most), then gives it back. On
 * a timeout the work stays pending and the context is marked lost. */
baatt_status baatt_cmd_submit_wait(baatt_context *ctx, VkCommandBuffer cmd);
/* Gives back a command buffer from baatt_cmd_begin without submitting it. */
void baatt_cmd_discard(baatt_context *ctx, VkCommandBuffer cmd);
/* Blocks until no submission of ctx is pending (after a timeout: before freeing what it uses). */
void baatt_cmd_drain(baatt_context *ctx);
/* Transfer- or shader-write -> host-read barrier: record after the last write to a mapped buffer. */
void baatt_cmd_host_barrier(baatt_context *ctx, VkCommandBuffer cmd);
/* Compute-write -> compute/transfer-read memory barrier. */
void baatt_cmd_barrier(baatt_context *ctx, VkCommandBuffer cmd);

/* ---- pipelines.c ---- */
baatt_status baatt_pipelines_init(baatt_context *ctx);
void baatt_pipelines_destroy(baatt_context *ctx);
/* One descriptor set of the context's layout in its own pool (pipelines.c). */
baatt_status baatt_descriptor_set_create(baatt_context *ctx, VkDescriptorPool *pool, VkDescriptorSet *set);
/* A compute pipeline for embedded shader `name` with specialization constants 0..nspec-1, created
 * on first use and cached on the context. subgroup: a required subgroup size with full subgroups
 * (BAATT_FEATURE_SUBGROUP_SIZE_CONTROL), or 0 for the driver's. */
baatt_status baatt_pipeline_get(baatt_context *ctx, const char *name, const uint32_t *spec, uint32_t nspec,
                                uint32_t subgroup, VkPipeline *out);

#endif
