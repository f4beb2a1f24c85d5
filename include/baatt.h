/*
 * baatt: Block Approximate Sparse Attention (BA-Att) on any GPU through Vulkan compute.
 *
 * The whole public C API. Conventions:
 *  - every fallible call returns a baatt_status; BAATT_OK is 0;
 *  - a context owns (or wraps) one Vulkan device; its last error message says what failed;
 *  - a plan is created from a baatt_config, owns all scratch (sized once, nothing O(N^2)),
 *    and is then run on host arrays or recorded into the caller's command buffer;
 *  - nothing the caller passes in is modified; the library never prints;
 *  - what may run in several threads at once, and what a lost context is: "Threads" below.
 *
 * Tensor layouts (row-major, C order):
 *   Q, O : [batch, heads,    q_len,  head_dim]
 *   K, V : [batch, kv_heads, kv_len, head_dim]
 * Query head h uses kv head h / (heads / kv_heads) (GQA / MQA).
 * fp16 host data is passed as IEEE binary16 bit patterns (uint16_t), bf16 as the top 16 bits of fp32.
 */
#ifndef BAATT_H
#define BAATT_H

#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan_core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Before 1.0 the ABI may change with each minor version (0.2: baatt_device_info grew uuid and
 * external_memory_fd): rebuild against the header of the library you load. */
#define BAATT_VERSION_MAJOR 0
#define BAATT_VERSION_MINOR 3
#define BAATT_VERSION_PATCH 0

/* Marks the library's exported functions: libbaatt.so exports these and nothing else. */
#ifndef BAATT_API
#if defined(__GNUC__) || defined(__clang__)
#define BAATT_API __attribute__((visibility("default")))
#else
#define BAATT_API
#endif
#endif

/* The library's version at run time, "MAJOR.MINOR.PATCH" (the BAATT_VERSION_* it was built with),
 * e.g. to check that the libbaatt.so loaded matches the header compiled against. */
BAATT_API const char *baatt_version(void);

/* ---------------------------------------------------------------------------------------------
 * Status. Grouped by failure class: caller errors (1xx), environment (2xx), device (3xx), I/O (4xx).
 * ------------------------------------------------------------------------------------------- */
typedef enum baatt_status {
    BAATT_OK = 0,
    /* the caller's arguments */
    BAATT_ERROR_INVALID_ARGUMENT = 100, /* NULL pointer, bad enum value, bad option */
    BAATT_ERROR_BAD_SHAPE = 101,        /* zero or mismatched sizes, size overflow */
    BAATT_ERROR_GQA_MISMATCH = 102,     /* heads % kv_heads != 0 */
    BAATT_ERROR_UNSUPPORTED_HEAD_DIM = 103,
    BAATT_ERROR_UNSUPPORTED_DTYPE = 104,
    BAATT_ERROR_UNSUPPORTED_BLOCK_SIZE = 105,
    BAATT_ERROR_BAD_KEEP_RATIO = 106,   /* keep_ratio outside (0, 1] */
    BAATT_ERROR_BAD_THRESHOLD = 107,    /* mass_threshold outside (0, 1] */
    BAATT_ERROR_BAD_BLOCK_LIMITS = 108, /* min_blocks > max_blocks */
    BAATT_ERROR_BAD_SCALE = 109,        /* scale negative, NaN or infinite */
    BAATT_ERROR_TOO_LARGE = 110,        /* a buffer would exceed the device's limits */
    BAATT_ERROR_NOT_READY = 111,        /* results asked for before a run */
    BAATT_ERROR_NONFINITE_INPUT = 112,  /* baatt_find_nonfinite found a NaN or an infinity */
    BAATT_ERROR_NO_SELECTION = 113,     /* a run reuses a selection the plan does not hold yet */
    BAATT_ERROR_BAD_SELECTION = 114,    /* a given block mask or permutation is malformed */
    BAATT_ERROR_NO_LSE = 115,           /* log-sum-exp asked of a plan created without cfg.lse */
    /* the environment */
    BAATT_ERROR_NO_VULKAN = 200,        /* libvulkan.so.1 could not be loaded */
    BAATT_ERROR_NO_DEVICE = 201,        /* no Vulkan device, or none matching the selection */
    BAATT_ERROR_MISSING_FEATURE = 202,  /* the device lacks a feature this config needs */
    BAATT_ERROR_VALIDATION_LAYER = 203, /* validation requested but the layer is missing */
    BAATT_ERROR_OUT_OF_HOST_MEMORY = 204,
    /* the device */
    BAATT_ERROR_VULKAN = 300, /* a Vulkan call failed (the message names it) */
    BAATT_ERROR_OUT_OF_DEVICE_MEMORY = 301,
    BAATT_ERROR_DEVICE_LOST = 302,
    BAATT_ERROR_TIMEOUT = 303,
    /* files */
    BAATT_ERROR_IO = 400,          /* open/read/write failed */
    BAATT_ERROR_FILE_FORMAT = 401, /* malformed .npy, or a dtype/order we do not read */
} baatt_status;

/* A static English name for the status ("BAATT_ERROR_BAD_SHAPE: ..."). Never NULL. */
BAATT_API const char *baatt_status_string(baatt_status status);

typedef enum baatt_dtype {
    BAATT_DTYPE_F32 = 0,
    BAATT_DTYPE_F16 = 1,
    BAATT_DTYPE_BF16 = 2,
} baatt_dtype;

/* Bytes of one element of dtype (4 or 2). 0 for an unknown dtype. */
BAATT_API size_t baatt_dtype_size(baatt_dtype dtype);
BAATT_API const char *baatt_dtype_name(baatt_dtype dtype);

/* ---------------------------------------------------------------------------------------------
 * Devices and context.
 * ------------------------------------------------------------------------------------------- */
typedef enum baatt_device_type {
    BAATT_DEVICE_OTHER = 0,
    BAATT_DEVICE_DISCRETE_GPU = 1,
    BAATT_DEVICE_INTEGRATED_GPU = 2,
    BAATT_DEVICE_VIRTUAL_GPU = 3,
    BAATT_DEVICE_CPU = 4,
} baatt_device_type;

typedef struct baatt_device_info {
    uint32_t index; /* position in Vulkan's enumeration order */
    char name[256];
    char driver_name[256]; /* VkPhysicalDeviceDriverProperties, or "" */
    char driver_info[256];
    baatt_device_type type;
    uint32_t vendor_id, device_id;
    uint32_t api_version; /* VK_MAKE_API_VERSION form */
    uint32_t subgroup_size;
    uint32_t max_shared_memory; /* maxComputeSharedMemorySize, bytes */
    uint32_t max_workgroup_invocations;
    uint64_t max_storage_buffer_range;
    uint64_t device_local_bytes; /* largest device-local heap */
    float timestamp_period_ns;   /* 0: no compute timestamps */
    int fp16_storage;            /* storageBuffer16BitAccess */
    int fp16_arithmetic;         /* shaderFloat16 */
    int coopmat_nv;              /* VK_NV_cooperative_matrix */
    int coopmat_khr;             /* VK_KHR_cooperative_matrix */
    int coopmat2_nv;             /* VK_NV_cooperative_matrix2 */
    int bf16;                    /* VK_KHR_shader_bfloat16 */
    int picked;                  /* 1 for the device the default selection would use */
    /* Appended fields (the layout above is unchanged). */
    uint8_t uuid[16];       /* VkPhysicalDeviceIDProperties::deviceUUID: the same bytes as CUDA's
                               cuDeviceGetUuid / torch.cuda.get_device_properties(i).uuid for the
                               same GPU, to match a Vulkan device with a CUDA one */
    int external_memory_fd; /* VK_KHR_external_memory_fd: baatt_device_buffer_create_exportable */
} baatt_device_info;

/* Lists the Vulkan devices. Call with infos == NULL to get the count; then with an array of
 * *count entries. `picked` marks the default choice (honouring BAATT_DEVICE). */
BAATT_API baatt_status baatt_devices_list(baatt_device_info *infos, uint32_t *count);

typedef struct baatt_context baatt_context;

typedef struct baatt_context_options {
    /* Device choice, in order of precedence: device_index >= 0; then device_name (a
     * case-insensitive substring of the device name); then the environment variable BAATT_DEVICE
     * (an index or a name substring); then discrete GPU, integrated GPU, virtual GPU, CPU. */
    int device_index;        /* -1: not set */
    const char *device_name; /* NULL: not set */
    /* Enable VK_LAYER_KHRONOS_validation and count its messages (also set by BAATT_VALIDATION=1).
     * If the layer is missing, context creation fails with BAATT_ERROR_VALIDATION_LAYER. */
    int validation;
} baatt_context_options;

BAATT_API baatt_context_options baatt_context_options_default(void);

/* Creates a context with its own VkInstance and VkDevice. opts may be NULL (defaults).
 * On failure *ctx is still set when possible so that baatt_context_error can explain; always
 * call baatt_context_destroy on it. */
BAATT_API baatt_status baatt_context_create(const baatt_context_options *opts, baatt_context **ctx);

/* The embedding case: the application's own Vulkan objects. baatt never destroys them.
 * The device must have been created with the features listed in `enabled` (see BAATT_FEATURE_*):
 * baatt cannot query what an application enabled. */
enum {
    BAATT_FEATURE_FP16_STORAGE = 1u << 0,          /* storageBuffer16BitAccess */
    BAATT_FEATURE_FP16_ARITH = 1u << 1,            /* shaderFloat16 */
    BAATT_FEATURE_COOPMAT_NV = 1u << 2,            /* VK_NV_cooperative_matrix + vulkanMemoryModel: no
                                                       kernel uses it (accepted, ignored; contexts
                                                       baatt creates leave it off) */
    BAATT_FEATURE_COOPMAT2_NV = 1u << 4,           /* VK_KHR_cooperative_matrix + VK_NV_cooperative_matrix2
                                               (workgroup scope, flexible dimensions, reductions,
                                               conversions, per-element ops, tensor addressing);
                                               device API >= 1.3 */
    BAATT_FEATURE_BF16_COOPMAT = 1u << 5,          /* VK_KHR_shader_bfloat16: shaderBFloat16Type and
                                               shaderBFloat16CooperativeMatrix (with COOPMAT2_NV
                                               or COOPMAT_KHR: bf16 tensors on the tensor cores) */
    BAATT_FEATURE_COOPMAT_KHR = 1u << 6,           /* VK_KHR_cooperative_matrix (cooperativeMatrix) +
                                               vulkanMemoryModel: the vendor-neutral tensor-core
                                               kernel */
    BAATT_FEATURE_SUBGROUP_SIZE_CONTROL = 1u << 7, /* subgroupSizeControl and computeFullSubgroups
                                                       (Vulkan 1.3 or VK_EXT_subgroup_size_control):
                                                       needed by that kernel where the subgroup
                                                       size varies */
    BAATT_FEATURE_EXTERNAL_MEMORY_FD = 1u << 8,    /* VK_KHR_external_memory_fd (device API >= 1.1,
                                                       where VK_KHR_external_memory is core):
                                                       exportable device buffers */
};
typedef struct baatt_external_device {
    PFN_vkGetInstanceProcAddr get_instance_proc_addr; /* NULL: load libvulkan.so.1 */
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    VkQueue queue; /* a queue with compute support */
    uint32_t queue_family_index;
    uint32_t enabled; /* BAATT_FEATURE_* bits the device was created with */
} baatt_external_device;

BAATT_API baatt_status baatt_context_wrap(const baatt_external_device *ext, baatt_context **ctx);

/* The handles a context uses (its own or the wrapped ones), e.g. to record into its queue. */
BAATT_API baatt_status baatt_context_handles(const baatt_context *ctx, baatt_external_device *out);

BAATT_API void baatt_context_destroy(baatt_context *ctx);

/* The last failure's message ("vkAllocateMemory failed: VK_ERROR_OUT_OF_DEVICE_MEMORY ..."),
 * or "" if none: the calling thread's own when its latest failed baatt call was on ctx, else the
 * latest failure any thread had on ctx. Valid until the calling thread's next baatt call.
 * NULL ctx gives a static string. */
BAATT_API const char *baatt_context_error(const baatt_context *ctx);

BAATT_API baatt_status baatt_context_device_info(const baatt_context *ctx, baatt_device_info *info);

/* Number of validation-layer messages (warnings and errors) seen so far, from every thread; 0 if
 * not enabled. */
BAATT_API uint32_t baatt_context_validation_messages(const baatt_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Threads, errors and lost contexts (docs/RELIABILITY.md says how each rule is tested).
 *
 *  - A context may be used from any number of threads at once: creating, running, reading and
 *    destroying different plans, on one context or on several. baatt serialises its submissions
 *    to the context's one queue and its pipeline cache internally; each thread records into its
 *    own command pool. Concurrent runs overlap on the host; the GPU takes them in queue order.
 *  - A plan is used by one thread at a time: calls on the same plan (run_host, record, stats,
 *    read_*, destroy) must not overlap; synchronise them yourself if threads share a plan.
 *  - Destroy calls must not overlap any other call on the object, and every plan goes before
 *    its context.
 *  - A wrapped context submits to the application's queue inside baatt_plan_run_host and the
 *    read functions. Vulkan requires queues to be externally synchronised: the application must
 *    not use that VkQueue (nor another context wrapping it) during those calls.
 *  - Nothing process-wide is written after the first context: libvulkan.so.1 is opened once
 *    (never closed) and every context has its own Vulkan function tables.
 *  - A GPU wait longer than BAATT_TIMEOUT_S (seconds, default 600, read when a context is
 *    created; a value that is not a positive number fails creation with
 *    BAATT_ERROR_INVALID_ARGUMENT) returns BAATT_ERROR_TIMEOUT after about that long. The work
 *    is still pending on the GPU, so the context is then lost, as after
 *    BAATT_ERROR_DEVICE_LOST: every later call that would run work on it returns
 *    BAATT_ERROR_DEVICE_LOST at once with a message saying why. Destroying its plans and the
 *    context still frees everything, first waiting for the pending work to finish (or for the
 *    driver to report the device lost). Create a new context to go on.
 *  - BAATT_ERROR_OUT_OF_DEVICE_MEMORY and BAATT_ERROR_OUT_OF_HOST_MEMORY leave the context and
 *    the plan usable: free memory and call again.
 * ------------------------------------------------------------------------------------------- */

/* ---------------------------------------------------------------------------------------------
 * Configuration. Fill with baatt_config_default(), then set the shape.
 * ------------------------------------------------------------------------------------------- */
typedef enum baatt_select_mode {
    BAATT_SELECT_KEEP_RATIO = 0,     /* keep max(1, ceil(keep_ratio * nk)) blocks per query block */
    BAATT_SELECT_MASS_THRESHOLD = 1, /* shortest prefix of the sorted block map with mass >= threshold */
} baatt_select_mode;

/* Blocking of Q and K (docs/ALGORITHM.md step 1), the values of baatt_config.norm_sort. */
typedef enum baatt_sort_mode {
    BAATT_SORT_OFF = 0,  /* blocks are contiguous runs of the original order */
    BAATT_SORT_NORM = 1, /* blocks of the L2-norm-sorted order (ALGORITHM.md step 1) */
    /* Per kv head, whichever of the two blockings recalls more: both are estimated and selected,
     * then S = min(64, q_len) evenly spaced query rows (row s*q_len/S) of every query head get
     * exact attention over all keys, and each blocking's recall is the attention mass those rows
     * put on the key blocks selected for their query block. The query heads of a GQA group decide
     * together (their recalls are summed), because K's permutation belongs to the kv head.
     * Ties keep the sorted blocking. Costs about S/q_len of dense attention plus a second
     * estimate and selection. baatt_plan_read_head_sorted says which blocking each head got.
     * The default: the only mode within 0.01 recall of the best on every workload measured
     * (bench/results/accuracy.md, "Defaults"). */
    BAATT_SORT_AUTO = 2,
} baatt_sort_mode;

/* The covariance term of the block logit (docs/ALGORITHM.md step 3), the values of
 * baatt_config.covariance: lambda in  l_IJ = t qm.km + lambda (t^2/2) [variance terms] + ln n_J. */
typedef enum baatt_covariance_mode {
    BAATT_COVARIANCE_OFF = 0, /* lambda = 0: plain mean pooling */
    BAATT_COVARIANCE_ON = 1,  /* lambda = 1 */
    /* Per kv head, lambda 1 or 0, whichever recalls more of the same sampled exact rows that
     * BAATT_SORT_AUTO measures (see there). The candidates are the blockings of norm_sort (AUTO:
     * sorted, original; NORM: sorted; OFF: original) times the lambdas (AUTO: 1, 0); whenever
     * there is more than one, each is estimated and selected, and every kv head keeps the one
     * whose selection recalls the most (strictly more wins; ties keep the earlier candidate in
     * the order (sorted, 1), (original, 1), (sorted, 0), (original, 0); a NaN recall never
     * wins). baatt_plan_read_head_covariance says which lambda each head got. The default:
     * on real attention (MiniLM, 72 heads, bench/results/accuracy.md "Selection on real
     * attention", `baatt_auto_cov`) it lifts the recall at 50% sparsity from 0.773 (auto sort
     * alone) to 0.778 (oracle 0.804; 75%: 0.571 -> 0.577, 90%: 0.414 -> 0.423) and fixes the
     * worst layer (layer 0 at 90%: 0.305 -> 0.334), where the covariance term favours
     * high-variance key blocks over the diagonal one. Cost, with norm_sort AUTO: two more score
     * and select passes (the K statistics of each blocking are reused; its Q statistics are
     * recomputed without the term) and twice the recall sums on the same sampled rows: on the
     * H100 +0.7 ms at 32K, +6.6 ms at 128K x 32 heads (bench/results/h100_ab.md). */
    BAATT_COVARIANCE_AUTO = 2,
} baatt_covariance_mode;

typedef struct baatt_config {
    uint32_t batch, heads, kv_heads;
    uint32_t q_len, kv_len, head_dim; /* head_dim: 64 or 128 */
    baatt_dtype dtype;                /* of Q, K, V and O */
    float scale;                      /* 0: 1/sqrt(head_dim) */
    int dense;                        /* 1: exact dense attention; the BA-Att fields are ignored */
    /* BA-Att (see docs/ALGORITHM.md) */
    uint32_t block_size; /* 32, 64 (default) or 128 */
    int norm_sort;       /* a baatt_sort_mode: 2 (default) choose per kv head, 1 sort Q and K by
                            L2 norm before blocking, 0 do not */
    int covariance;      /* a baatt_covariance_mode: 2 (default) choose lambda per kv head,
                            1 lambda = 1 in the block logit, 0 lambda = 0 */
    baatt_select_mode select_mode;
    float keep_ratio;     /* default 0.5 */
    float mass_threshold; /* default 0.9; used in BAATT_SELECT_MASS_THRESHOLD mode */
    uint32_t min_blocks;  /* per query block; 0 or 1: at least one */
    uint32_t max_blocks;  /* 0: no limit */
    /* 1: the attention also writes each query row's log-sum-exp (baatt_plan_read_lse,
     * baatt_tensors.lse); 0 (default): no LSE, no buffer for it, no cost. */
    int lse;
} baatt_config;

BAATT_API baatt_config baatt_config_default(void);

/* Validates cfg. On failure writes a message naming the problem into msg (if msg != NULL). */
BAATT_API baatt_status baatt_config_check(const baatt_config *cfg, char *msg, size_t msg_size);

/* Derived sizes. */
BAATT_API uint32_t baatt_config_q_blocks(const baatt_config *cfg); /* ceil(q_len / block_size) */
BAATT_API uint32_t baatt_config_k_blocks(const baatt_config *cfg); /* ceil(kv_len / block_size) */
BAATT_API float baatt_config_scale(const baatt_config *cfg);       /* the effective scale */
/* Blocks kept per query block in keep-ratio mode, after min/max clamping. */
BAATT_API uint32_t baatt_config_keep_blocks(const baatt_config *cfg);

/* ---------------------------------------------------------------------------------------------
 * Plans.
 * ------------------------------------------------------------------------------------------- */
typedef struct baatt_plan baatt_plan;

BAATT_API baatt_status baatt_plan_create(baatt_context *ctx, const baatt_config *cfg, baatt_plan **plan);
BAATT_API void baatt_plan_destroy(baatt_plan *plan);

/* Device memory the plan owns besides the caller's tensors, in bytes. */
BAATT_API uint64_t baatt_plan_scratch_bytes(const baatt_plan *plan);

/* Runs on host arrays: uploads Q, K, V, runs every stage, waits, downloads O (in cfg->dtype).
 * Staging and device buffers for the tensors are owned by the plan and reused. */
BAATT_API baatt_status baatt_plan_run_host(baatt_plan *plan, const void *q, const void *k, const void *v, void *o);

/* The embedding path: records every stage into the caller's command buffer (in the recording
 * state, on a queue family with compute) over the caller's device buffers. The caller submits
 * and synchronises; buffers need VK_BUFFER_USAGE_STORAGE_BUFFER_BIT and the offsets must be
 * multiples of minStorageBufferOffsetAlignment. Recording rewrites the plan's descriptor set:
 * do not record the same plan again while an earlier recording is still pending.
 * A pipeline barrier (compute write -> compute read) is recorded before the first stage reads
 * Q/K/V and after O is written (compute write -> compute/transfer read). */
typedef struct baatt_device_tensor {
    VkBuffer buffer;
    VkDeviceSize offset;
} baatt_device_tensor;
typedef struct baatt_tensors {
    baatt_device_tensor q, k, v, o;
} baatt_tensors;
BAATT_API baatt_status baatt_plan_record(baatt_plan *plan, VkCommandBuffer cmd, const baatt_tensors *t);
/* The same, with the log-sum-exp (plans with cfg.lse; see baatt_plan_read_lse for what it holds)
 * written to lse: float32 [batch, heads, q_len] at lse->offset, written by the attention
 * dispatch and covered by the barrier after it. lse NULL: the plan's own buffer, read with
 * baatt_plan_read_lse once the recording has run (baatt_plan_record does that too). A tensor
 * given to a plan without cfg.lse is BAATT_ERROR_NO_LSE. */
BAATT_API baatt_status baatt_plan_record_lse(baatt_plan *plan, VkCommandBuffer cmd, const baatt_tensors *t,
                                             const baatt_device_tensor *lse);

/* Device buffers the library allocates on a context's device (device-local, storage and transfer
 * usage), for callers without Vulkan code of their own: tensors that stay on the device between
 * runs, as an embedding application's would (the CLI's bench times plans this way). */
typedef struct baatt_device_buffer baatt_device_buffer;
/* BAATT_ERROR_BAD_SHAPE for 0 bytes, BAATT_ERROR_TOO_LARGE beyond the device's storage-buffer
 * range. On failure *buf is NULL and the context's message says why. */
BAATT_API baatt_status baatt_device_buffer_create(baatt_context *ctx, uint64_t bytes, baatt_device_buffer **buf);
BAATT_API void baatt_device_buffer_destroy(baatt_device_buffer *buf);
/* The buffer as a tensor of baatt_plan_record (offset 0). */
BAATT_API baatt_device_tensor baatt_device_buffer_tensor(const baatt_device_buffer *buf);
/* Copies bytes between host memory and [offset, offset + bytes) of the buffer through a staging
 * buffer and waits. A range outside the buffer is BAATT_ERROR_INVALID_ARGUMENT. */
BAATT_API baatt_status baatt_device_buffer_write(baatt_device_buffer *buf, uint64_t offset, const void *src,
                                                 uint64_t bytes);
BAATT_API baatt_status baatt_device_buffer_read(baatt_device_buffer *buf, uint64_t offset, void *dst, uint64_t bytes);
/* Device buffers another API can import (CUDA: cuImportExternalMemory; HIP:
 * hipImportExternalMemory; another Vulkan device or instance: VkImportMemoryFdInfoKHR), so that
 * its tensors and baatt's are the same device memory and a run needs no copy through the host.
 * The memory is device-local and exported as an opaque POSIX file descriptor
 * (VK_KHR_external_memory_fd); it is a dedicated allocation where the driver requires or prefers
 * one. Usable with every baatt_device_buffer function (write, read, run_buffers, destroy).
 * BAATT_ERROR_MISSING_FEATURE where the context's device does not have VK_KHR_external_memory_fd
 * enabled (a wrapped device: BAATT_FEATURE_EXTERNAL_MEMORY_FD) or cannot export such buffers;
 * otherwise as baatt_device_buffer_create. baatt and the importer share no synchronisation:
 * finish the importer's writes before a baatt run (e.g. synchronise its stream), and read after
 * the run returns (baatt_plan_run_buffers waits for the GPU). */
BAATT_API baatt_status baatt_device_buffer_create_exportable(baatt_context *ctx, uint64_t bytes,
                                                             baatt_device_buffer **buf);
/* A new file descriptor for an exportable buffer's memory (vkGetMemoryFdKHR), owned by the
 * caller: close it, or hand it to an importer that takes ownership (CUDA's import does, on
 * success). *allocation_bytes: the size of the whole allocation, at least the buffer's bytes,
 * which the importer must be given (CUDA_EXTERNAL_MEMORY_HANDLE_DESC::size); *dedicated: 1 if
 * it is a dedicated allocation (import with CUDA_EXTERNAL_MEMORY_DEDICATED). The memory stays
 * valid while the buffer lives: destroy the importer's mapping before the buffer. Each call
 * gives a new descriptor. BAATT_ERROR_INVALID_ARGUMENT for NULL arguments or a buffer from
 * baatt_device_buffer_create (not exportable); BAATT_ERROR_VULKAN if the driver fails. */
BAATT_API baatt_status baatt_device_buffer_export_fd(baatt_device_buffer *buf, int *fd, uint64_t *allocation_bytes,
                                                     int *dedicated);
/* Records the plan over q, k, v, o (each holding its whole tensor at offset 0, as for
 * baatt_plan_record) into a command buffer of the context the buffers and the plan were created
 * on, submits it and waits (BAATT_TIMEOUT_S). Timings are read with baatt_plan_stats as usual.
 * BAATT_ERROR_INVALID_ARGUMENT if they belong to different contexts, BAATT_ERROR_BAD_SHAPE if a
 * buffer is smaller than its tensor. */
BAATT_API baatt_status baatt_plan_run_buffers(baatt_plan *plan, baatt_device_buffer *q, baatt_device_buffer *k,
                                              baatt_device_buffer *v, baatt_device_buffer *o);
/* The same, with the log-sum-exp written to lse (float32 [batch, heads, q_len] at offset 0; NULL:
 * the plan's own buffer, as run_buffers does). BAATT_ERROR_NO_LSE for a plan without cfg.lse
 * given a buffer, BAATT_ERROR_BAD_SHAPE if lse is too small. */
BAATT_API baatt_status baatt_plan_run_buffers_lse(baatt_plan *plan, baatt_device_buffer *q, baatt_device_buffer *k,
                                                  baatt_device_buffer *v, baatt_device_buffer *o,
                                                  baatt_device_buffer *lse);

/* ---------------------------------------------------------------------------------------------
 * Selections across runs, and from other selectors.
 *
 * A sparse plan holds one selection on the device: the block mask, the permutations of Q and K
 * and (auto sort) the blocking each kv head got, as the read functions below return them. A run
 * estimates it anew (sort, statistics, scoring, selection) unless reuse is on: then the run skips
 * those stages and attends its new Q, K and V on the selection the plan holds (their rows taken
 * through the held permutations, so the output is the attention of the new tensors restricted to
 * the old blocks). Diffusion models call the same shapes at every denoising step: estimate on
 * some steps, reuse on the others.
 * ------------------------------------------------------------------------------------------- */

/* reuse = 1: the plan's following runs (run_host, record, run_buffers) attend on the selection
 * the plan holds, the one of its last estimating run or of baatt_plan_set_selection; reuse = 0
 * (a new plan's setting): every run estimates its own. Call it before each run to decide per run
 * (e.g. estimate every R-th step). No GPU work; a dense plan ignores it. A run with reuse on
 * before the plan holds a selection fails with BAATT_ERROR_NO_SELECTION and does nothing.
 * Selections are per plan and stay on the device until the plan is destroyed. With
 * baatt_plan_record, the held selection is the one of the last estimating recording, whether or
 * not that one was submitted yet: submit in recording order. */
BAATT_API baatt_status baatt_plan_set_reuse(baatt_plan *plan, int reuse);

/* Gives the plan a selection made elsewhere (another selector, a flex_attention block mask, a
 * saved --mask-out) and turns reuse on: the following runs attend on it only, with no sort,
 * statistics, scoring or selection, until baatt_plan_set_reuse(plan, 0).
 *   mask    uint8 [batch, heads, q_blocks, k_blocks]: 1 where query block I attends to key
 *           block J, blocks of cfg.block_size consecutive positions of the permuted order (the
 *           last ones partial as the lengths give); the layout of baatt_plan_read_mask
 *   perm_q  int32 [batch, heads, q_len], perm_k int32 [batch, kv_heads, kv_len]: the original
 *           token index at each position, as baatt_plan_read_perms gives them. NULL: the
 *           identity, i.e. the blocks are runs of the original token order.
 * Checked on the host before anything is written; BAATT_ERROR_BAD_SELECTION with a message
 * naming the first bad entry for a mask byte other than 0 or 1, a query block that selects no
 * key block (its rows would attend to nothing: the kernels need at least one block a row) or a
 * perm row that is not a permutation of 0 .. len-1; the plan's selection and reuse setting are
 * then unchanged. BAATT_ERROR_INVALID_ARGUMENT for a NULL mask or a dense plan. Afterwards
 * baatt_plan_read_mask and _read_perms return what was given (once a run made results
 * readable), and baatt_plan_read_head_sorted 1 for the kv heads whose perm_k is not the
 * identity. Uploads and waits: not while a recording of the plan is pending. */
BAATT_API baatt_status baatt_plan_set_selection(baatt_plan *plan, const uint8_t *mask, const int32_t *perm_q,
                                                const int32_t *perm_k);
/* The same from device buffers holding those arrays at offset 0 (perm_q, perm_k may be NULL),
 * on the plan's context: read back and checked on the host like the arrays above (the selection
 * is small: nq x nk bytes and the perms a head), then packed and written. BAATT_ERROR_BAD_SHAPE if
 * a buffer is smaller than its array, BAATT_ERROR_INVALID_ARGUMENT for another context. */
BAATT_API baatt_status baatt_plan_set_selection_buffers(baatt_plan *plan, baatt_device_buffer *mask,
                                                        baatt_device_buffer *perm_q, baatt_device_buffer *perm_k);

/* A copy of a plan's held selection kept on the device: the mask bits, token counts and
 * permutations the attention reads, and the per-kv-head choice the read functions return (a few
 * MiB; none of the plan's scratch). One plan can then serve many call sites (e.g. every layer of
 * a model) and switch between their selections without host round trips or checks. */
typedef struct baatt_snapshot baatt_snapshot;
/* A new snapshot of the selection plan holds (its last estimating run's, a loaded snapshot's or
 * one given with baatt_plan_set_selection). GPU-to-GPU copies in one submission, waited for: the
 * plan's last estimating recording must have been submitted (as for the read functions).
 * BAATT_ERROR_NO_SELECTION if the plan holds none (before its first estimating run, a dense plan);
 * BAATT_ERROR_INVALID_ARGUMENT for a NULL argument. *out is NULL on failure. */
BAATT_API baatt_status baatt_plan_snapshot_save(baatt_plan *plan, baatt_snapshot **out);
/* Makes the snapshot's selection the one plan holds (GPU-to-GPU copies in one submission, waited
 * for; not while a recording of the plan is pending) and turns reuse on, as
 * baatt_plan_set_selection does but without host checks: the data came from a plan. The read
 * functions then return the snapshot's mask, perms, head_sorted and head_covariance (once a run
 * made results readable). BAATT_ERROR_INVALID_ARGUMENT with a message if the snapshot came from
 * another context or a plan of another batch, heads, kv_heads, q_len, kv_len, block_size,
 * head_dim or norm_sort / covariance candidates, or plan is dense; the plan is then unchanged.
 * The snapshot stays valid and can be loaded again, into any plan of the same shape. */
BAATT_API baatt_status baatt_plan_snapshot_load(baatt_plan *plan, const baatt_snapshot *snapshot);
/* Frees a snapshot (NULL: nothing); before its context is destroyed. */
BAATT_API void baatt_snapshot_destroy(baatt_snapshot *snapshot);

/* Non-finite inputs (docs/RELIABILITY.md). The library does not scan its inputs; NaN and
 * infinities propagate by one rule in every mode:
 *  - dense: an output row is NaN when any score of the row is NaN or +inf (a NaN or infinity in
 *    its query row, or in any key row, unless that score is exactly -inf), or when a selected
 *    value row holds a NaN or an infinity with nonzero weight; as IEEE arithmetic gives.
 *  - BA-Att: a key block holding a NaN or an infinity has a NaN block statistic (its variance is
 *    NaN), so its block logit is NaN for every query block; a query block with one has NaN logits
 *    in its whole row. A NaN logit ranks above every number (ties: lower block index first) and
 *    carries no softmax mass. So in keep-ratio mode such key blocks are taken first, and in
 *    threshold mode they are always taken and the threshold applies to the finite blocks' mass
 *    (a row with no finite logit takes max(min_blocks, 1) blocks); max_blocks still caps the row.
 *    A non-finite key therefore never vanishes from the sparse output: its rows are poisoned
 *    exactly where dense attention's are (as long as the row's selection has room for its
 *    blocks). A +inf logit (overflow of finite inputs) in threshold mode makes the row's mass
 *    NaN: the row takes all its blocks up to max_blocks.
 *  - V is not part of the selection: a non-finite value reaches the output rows whose selection
 *    holds its block (dense: every row).
 *  - auto sort / covariance: a NaN sampled recall (a sampled row that is NaN) never wins: the
 *    first candidate (sorted, lambda 1 where they are candidates) stays.
 *  - the norm sort: a row with a NaN norm sorts as the largest norm; an infinite norm as the
 *    next largest (the blocking differs, the rule above holds in either).
 * Opt-in check: baatt_find_nonfinite scans a host tensor before baatt_plan_run_host; it reads
 * the bit patterns once, vectorised: 34 ms for 256 MiB of fp32 (7.9 GB/s; fp16 6.7 GB/s) on one
 * shared core of the 2-core CI machine, where a memcpy of 128 MiB takes 12 ms, i.e. about the
 * copy into staging that run_host makes anyway. It is not run implicitly: callers opt in.
 * BAATT_OK if all n elements of x are finite; else BAATT_ERROR_NONFINITE_INPUT with *first the
 * index of the first NaN or infinity (*first = n when none; first may be NULL). */
BAATT_API baatt_status baatt_find_nonfinite(const void *x, baatt_dtype dtype, uint64_t n, uint64_t *first);

/* After a run (run_host, or a recorded run the caller waited for). */
enum {
    BAATT_STAGE_SORT = 0,   /* norms + argsort of Q and K */
    BAATT_STAGE_STATS = 1,  /* block means and variances */
    BAATT_STAGE_SCORE = 2,  /* corrected block logits */
    BAATT_STAGE_SELECT = 3, /* block selection */
    BAATT_STAGE_ATTEND = 4, /* block-sparse (or dense) attention */
    BAATT_STAGE_COUNT = 5,
};
BAATT_API const char *baatt_stage_name(int stage);

/* The kernel the plan chose at creation for stage (a BAATT_STAGE_*), a static string:
 *   SORT   "bitonic", "radix" (LSD radix sort, long sides on devices with subgroup ballots),
 *          "radix (q), bitonic (k)" / "bitonic (q), radix (k)", or "none" (dense, or sorting off)
 *   STATS  "stats"
 *   SCORE  "nv-coopmat2-bf16" (tensor cores, on bf16 hi/lo parts) or "scalar" (fp32)
 *   SELECT "row" (a subgroup per row), "subgroup" or "shared" (a workgroup per row, with
 *          subgroup or shared-memory reductions)
 *   ATTEND "nv-coopmat2", "khr-coopmat" (tensor cores) or "portable"
 * The names are those of the BAATT_TUNE string's paths. A dense plan runs ATTEND only: the
 * other stages are "none". NULL for a NULL plan or an unknown stage. */
BAATT_API const char *baatt_plan_path(const baatt_plan *plan, int stage);

typedef struct baatt_run_stats {
    double stage_ms[BAATT_STAGE_COUNT]; /* GPU time per stage; 0 for stages not run */
    double gpu_ms;                      /* GPU time of the whole run */
    double sparsity;                    /* 1 - selected key tokens / (q_blocks * kv_len), all heads */
    uint64_t selected_blocks;           /* over all (batch, head, query block) rows */
    int timed;                          /* 0 if the device has no timestamps */
} baatt_run_stats;
BAATT_API baatt_status baatt_plan_stats(baatt_plan *plan, baatt_run_stats *stats);

/* The selection of the last run: uint8 [batch, heads, q_blocks, k_blocks], 1 where key block J
 * was selected for query block I (sorted-block coordinates). All ones for a dense plan. After a
 * reusing run, the reused selection. */
BAATT_API baatt_status baatt_plan_read_mask(baatt_plan *plan, uint8_t *mask);
/* The permutations of the last run: int32 perm_q [batch, heads, q_len] and perm_k
 * [batch, kv_heads, kv_len], the original token index at each sorted position (identity when
 * sorting is off or the plan is dense). Either pointer may be NULL. */
BAATT_API baatt_status baatt_plan_read_perms(baatt_plan *plan, int32_t *perm_q, int32_t *perm_k);

/* The log-sum-exp of the last run, float32 [batch, heads, q_len] in the original row order:
 * lse_i = ln sum_j exp(scale * q_i . k_j) over the keys row i attended to (every key in a dense
 * plan, its query block's selected blocks in a sparse one), so O_i = sum_j exp(scale * q_i . k_j
 * - lse_i) v_j. Two attentions of the same queries over disjoint key sets merge into the one over
 * their union with baatt_lse_merge (ring / sequence-parallel attention, joint text + video
 * attention). Computed in fp32 from the kernel's running max and sum (the cooperative-matrix-2
 * kernel sums the probabilities rounded to the input type, as its P V product uses them).
 * BAATT_ERROR_NO_LSE for a plan created without cfg.lse; BAATT_ERROR_NOT_READY before a run, or
 * when the last run wrote its LSE to the caller's tensor (record_lse, run_buffers_lse) instead. */
BAATT_API baatt_status baatt_plan_read_lse(baatt_plan *plan, float *lse);

/* Which blocking each kv head got in the last run: uint8 [batch, kv_heads], 1 = norm-sorted,
 * 0 = original order. All ones with norm_sort = BAATT_SORT_NORM, all zeros with BAATT_SORT_OFF or
 * a dense plan; the per-head choice with BAATT_SORT_AUTO (its query heads share it). */
BAATT_API baatt_status baatt_plan_read_head_sorted(baatt_plan *plan, uint8_t *sorted);
/* Which lambda each kv head's selection was estimated with in the last estimating run: uint8
 * [batch, kv_heads], 1 = lambda 1 (covariance term on), 0 = lambda 0. All ones with covariance =
 * BAATT_COVARIANCE_ON, all zeros with BAATT_COVARIANCE_OFF; the per-head choice with
 * BAATT_COVARIANCE_AUTO. All zeros for a dense plan and for a selection given with
 * baatt_plan_set_selection (no lambda made it). */
BAATT_API baatt_status baatt_plan_read_head_covariance(baatt_plan *plan, uint8_t *cov);

/* ---------------------------------------------------------------------------------------------
 * CPU reference (the oracle for every GPU test). Inputs in cfg->dtype; outputs in fp32/fp64
 * as stated. Accumulation is in fp64. All functions validate cfg like baatt_config_check.
 * ------------------------------------------------------------------------------------------- */

/* Dense attention. o: float [batch, heads, q_len, head_dim]. */
BAATT_API baatt_status baatt_reference_attention(const baatt_config *cfg, const void *q, const void *k, const void *v,
                                                 float *o);

/* Stable argsort of token L2 norms, descending (ties: lower index first), per head.
 * x: [batch, nheads, len, head_dim] in cfg->dtype; perm: int32 [batch, nheads, len].
 * Norms are computed in fp64 and rounded to fp32 before sorting (what the GPU compares).
 * With cfg->norm_sort == 0, perm is the identity; with BAATT_SORT_AUTO it is the sorted candidate. */
BAATT_API baatt_status baatt_reference_sort(const baatt_config *cfg, const void *x, uint32_t nheads, uint32_t len,
                                            int32_t *perm);

/* Block means and diagonal variances over the valid tokens of each block of the sorted order.
 * mean, var: float [batch, nheads, ceil(len / block_size), head_dim]. */
BAATT_API baatt_status baatt_reference_block_stats(const baatt_config *cfg, const void *x, uint32_t nheads,
                                                   uint32_t len, const int32_t *perm, float *mean, float *var);

/* Corrected block logits l_IJ (ALGORITHM.md step 3, with ln(n_J)): float [batch, heads, nq, nk].
 * qmean/qvar: [batch, heads, nq, d]; kmean/kvar: [batch, kv_heads, nk, d]. */
BAATT_API baatt_status baatt_reference_block_logits(const baatt_config *cfg, const float *qmean, const float *qvar,
                                                    const float *kmean, const float *kvar, float *logits);

/* Block selection (ALGORITHM.md step 4) from logits [batch, heads, nq, nk] to mask uint8 (same shape). */
BAATT_API baatt_status baatt_reference_select(const baatt_config *cfg, const float *logits, uint8_t *mask);

/* Sparse attention over the selected blocks, rows written back in original order.
 * perm_q/perm_k as from baatt_reference_sort; mask from baatt_reference_select.
 * o: float [batch, heads, q_len, head_dim]. */
BAATT_API baatt_status baatt_reference_sparse_attention(const baatt_config *cfg, const void *q, const void *k,
                                                        const void *v, const int32_t *perm_q, const int32_t *perm_k,
                                                        const uint8_t *mask, float *o);

/* The log-sum-exp of each query row (see baatt_plan_read_lse) over the keys it attends to:
 * mask NULL, all keys (dense); else those of its query block's selected blocks, as
 * baatt_reference_sparse_attention takes them (perm_q, perm_k NULL: identities).
 * lse: float [batch, heads, q_len], original row order. */
BAATT_API baatt_status baatt_reference_lse(const baatt_config *cfg, const void *q, const void *k, const int32_t *perm_q,
                                           const int32_t *perm_k, const uint8_t *mask, float *lse);

/* Merges two attentions of the same query rows over disjoint key sets into the attention over
 * their union: lse = logaddexp(lse1, lse2), o = exp(lse1 - lse) o1 + exp(lse2 - lse) o2, per row
 * (rows rows of head_dim values each, float32). A partial with lse -inf (no keys) contributes
 * nothing; both -inf gives o = 0 and lse = -inf. o may alias o1 or o2 and lse lse1 or lse2. */
BAATT_API baatt_status baatt_lse_merge(uint64_t rows, uint32_t head_dim, const float *o1, const float *lse1,
                                       const float *o2, const float *lse2, float *o, float *lse);

/* The BAATT_SORT_AUTO choice (see baatt_sort_mode) for every kv head, whatever cfg->norm_sort
 * says, with cfg->covariance's lambdas as candidates (so with BAATT_COVARIANCE_AUTO the blocking of
 * the four-way winner): sorted uint8 [batch, kv_heads], 1 = norm-sorted blocking. The sampled recalls are summed in
 * fp64, so near-equal recalls may be decided differently from the GPU's fp32 sums. */
BAATT_API baatt_status baatt_reference_auto_sorted(const baatt_config *cfg, const void *q, const void *k,
                                                   uint8_t *sorted);
/* The per-kv-head choice among the candidates of cfg->norm_sort x cfg->covariance (see
 * BAATT_COVARIANCE_AUTO; one candidate: that one): sorted and cov uint8 [batch, kv_heads], 1 =
 * norm-sorted blocking / lambda 1. Either may be NULL (not both). Recalls summed in fp64, as
 * baatt_reference_auto_sorted. */
BAATT_API baatt_status baatt_reference_auto_choice(const baatt_config *cfg, const void *q, const void *k,
                                                   uint8_t *sorted, uint8_t *cov);

/* The whole BA-Att forward pass (cfg->dense == 1: dense attention). Any of mask, perm_q, perm_k
 * may be NULL. With more than one candidate (norm_sort == BAATT_SORT_AUTO or covariance ==
 * BAATT_COVARIANCE_AUTO) the perms and mask rows of each kv head (and its query heads) are those
 * of the candidate baatt_reference_auto_choice chose. */
BAATT_API baatt_status baatt_reference_baatt(const baatt_config *cfg, const void *q, const void *k, const void *v,
                                             float *o, uint8_t *mask, int32_t *perm_q, int32_t *perm_k);

/* Quality metrics (docs/ALGORITHM.md) against exact dense attention. */
typedef struct baatt_metrics {
    double mass_recall; /* mean over query rows of the dense attention mass on selected keys */
    double rel_l1;      /* sum|O - O_dense| / sum|O_dense| */
    double rel_l2;      /* ||O - O_dense|| / ||O_dense|| */
    double cosine;      /* cosine similarity of flattened outputs */
    double sparsity;    /* 1 - selected key tokens / (q_blocks * kv_len), all heads */
} baatt_metrics;
/* o: the approximate output (float, original order). mask/perm_q/perm_k describe the selection
 * (perms may be NULL for identity). o_dense may be NULL (then computed here). */
BAATT_API baatt_status baatt_reference_metrics(const baatt_config *cfg, const void *q, const void *k, const void *v,
                                               const uint8_t *mask, const int32_t *perm_q, const int32_t *perm_k,
                                               const float *o, const float *o_dense, baatt_metrics *m);

/* ---------------------------------------------------------------------------------------------
 * NumPy .npy files (format 1.0-3.0; little-endian float32, float16, int32, uint8; C order).
 * ------------------------------------------------------------------------------------------- */
typedef enum baatt_npy_dtype {
    BAATT_NPY_F32 = 0,
    BAATT_NPY_F16 = 1,
    BAATT_NPY_I32 = 2,
    BAATT_NPY_U8 = 3,
} baatt_npy_dtype;

#define BAATT_NPY_MAX_RANK 8
typedef struct baatt_npy {
    baatt_npy_dtype dtype;
    uint32_t rank;
    uint64_t shape[BAATT_NPY_MAX_RANK];
    uint64_t count; /* product of shape (1 for rank 0) */
    void *data;     /* count elements, owned (free with baatt_npy_free) */
} baatt_npy;

/* Reads path. On failure writes a message naming the problem into msg (if not NULL). */
BAATT_API baatt_status baatt_npy_read(const char *path, baatt_npy *out, char *msg, size_t msg_size);
BAATT_API baatt_status baatt_npy_write(const char *path, baatt_npy_dtype dtype, uint32_t rank, const uint64_t *shape,
                                       const void *data, char *msg, size_t msg_size);
BAATT_API void baatt_npy_free(baatt_npy *npy);
BAATT_API size_t baatt_npy_dtype_size(baatt_npy_dtype dtype);

/* ---------------------------------------------------------------------------------------------
 * Half-precision helpers (round to nearest even).
 * ------------------------------------------------------------------------------------------- */
BAATT_API uint16_t baatt_f32_to_f16(float f);
BAATT_API float baatt_f16_to_f32(uint16_t h);
BAATT_API uint16_t baatt_f32_to_bf16(float f);
BAATT_API float baatt_bf16_to_f32(uint16_t h);

/* Converts n elements from src (in src_dtype) to dst (in dst_dtype), as the functions above do
 * element by element. src and dst must not overlap. */
BAATT_API baatt_status baatt_dtype_convert(const void *src, baatt_dtype src_dtype, void *dst, baatt_dtype dst_dtype,
                                           uint64_t n);

#ifdef __cplusplus
}
#endif
#endif /* BAATT_H */
