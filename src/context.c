/* Context: loading Vulkan (per-context tables, vk_table.h), choosing a device, creating (or
 * wrapping) it, errors, validation messages and thread-safe submission. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"

#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

/* Debian 12's Vulkan headers (1.3.239) predate VK_KHR_cooperative_matrix and
 * VK_NV_cooperative_matrix2: the two feature structs, as the registry defines them. */
typedef struct baatt_coopmat_khr_features {
    VkStructureType sType; /* 1000506000 */
    void *pNext;
    VkBool32 cooperativeMatrix;
    VkBool32 cooperativeMatrixRobustBufferAccess;
} baatt_coopmat_khr_features;
typedef struct baatt_coopmat2_nv_features {
    VkStructureType sType; /* 1000593000 */
    void *pNext;
    VkBool32 workgroupScope, flexibleDimensions, reductions, conversions, perElementOperations, tensorAddressing,
        blockLoads;
} baatt_coopmat2_nv_features;
/* VK_KHR_shader_bfloat16 (not in the 1.3.239 headers either). */
typedef struct baatt_bf16_features {
    VkStructureType sType; /* 1000141000 */
    void *pNext;
    VkBool32 shaderBFloat16Type, shaderBFloat16DotProduct, shaderBFloat16CooperativeMatrix;
} baatt_bf16_features;
#define STYPE_BF16_FEATURES ((VkStructureType)1000141000)
#define STYPE_COOPMAT_KHR_FEATURES ((VkStructureType)1000506000)
#define STYPE_COOPMAT2_NV_FEATURES ((VkStructureType)1000593000)

/* ------------------------------------------------------------------------------------------ */
/* errors                                                                                     */

const char *baatt_vkresult_name(VkResult r)
{
    // clang-format off
    switch (r) {
#define N(x) case x: return #x;
    N(VK_SUCCESS) N(VK_NOT_READY) N(VK_TIMEOUT) N(VK_INCOMPLETE)
    N(VK_ERROR_OUT_OF_HOST_MEMORY) N(VK_ERROR_OUT_OF_DEVICE_MEMORY) N(VK_ERROR_INITIALIZATION_FAILED)
    N(VK_ERROR_DEVICE_LOST) N(VK_ERROR_MEMORY_MAP_FAILED) N(VK_ERROR_LAYER_NOT_PRESENT)
    N(VK_ERROR_EXTENSION_NOT_PRESENT) N(VK_ERROR_FEATURE_NOT_PRESENT) N(VK_ERROR_INCOMPATIBLE_DRIVER)
    N(VK_ERROR_TOO_MANY_OBJECTS) N(VK_ERROR_FORMAT_NOT_SUPPORTED) N(VK_ERROR_FRAGMENTED_POOL)
    N(VK_ERROR_UNKNOWN) N(VK_ERROR_OUT_OF_POOL_MEMORY) N(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    N(VK_ERROR_FRAGMENTATION) N(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
#undef N
    default: return "VK_ERROR_(unnamed)";
    }
    // clang-format on
}

/* The calling thread's last failure and the context it happened on, so that concurrent failures
 * on one context do not overwrite each other's messages (baatt.h, "Threads"). */
static _Thread_local struct {
    uint64_t ctx_id;
    char msg[1024];
} tls_error;
static _Thread_local char tls_error_view[1024]; /* a copy of a context's shared message */

static void set_error(baatt_context *ctx, const char *msg)
{
    tls_error.ctx_id = ctx->id;
    snprintf(tls_error.msg, sizeof tls_error.msg, "%s", msg);
    pthread_mutex_lock(&ctx->error_lock);
    snprintf(ctx->error, sizeof ctx->error, "%s", msg);
    pthread_mutex_unlock(&ctx->error_lock);
}

baatt_status baatt_fail(baatt_context *ctx, baatt_status status, const char *fmt, ...)
{
    if (ctx) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        set_error(ctx, msg);
    }
    return status;
}

/* Marks ctx lost (first reason wins) and records the failure. */
static baatt_status mark_lost(baatt_context *ctx, baatt_status status, const char *msg)
{
    pthread_mutex_lock(&ctx->error_lock);
    if (!ctx->lost_reason[0]) snprintf(ctx->lost_reason, sizeof ctx->lost_reason, "%s", msg);
    pthread_mutex_unlock(&ctx->error_lock);
    int none = 0;
    atomic_compare_exchange_strong(&ctx->lost, &none, (int)status);
    return baatt_fail(ctx, status, "%s", msg);
}

baatt_status baatt_vk(baatt_context *ctx, VkResult r, const char *what)
{
    if (r == VK_SUCCESS) return BAATT_OK;
    baatt_status s = BAATT_ERROR_VULKAN;
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY) s = BAATT_ERROR_OUT_OF_DEVICE_MEMORY;
    else if (r == VK_ERROR_OUT_OF_HOST_MEMORY) s = BAATT_ERROR_OUT_OF_HOST_MEMORY;
    else if (r == VK_ERROR_DEVICE_LOST) s = BAATT_ERROR_DEVICE_LOST;
    else if (r == VK_TIMEOUT) s = BAATT_ERROR_TIMEOUT;
    if (s == BAATT_ERROR_DEVICE_LOST && ctx) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "%s failed: VK_ERROR_DEVICE_LOST (the context is lost: destroy its plans and "
                 "the context, then create a new one)",
                 what);
        return mark_lost(ctx, s, msg);
    }
    return baatt_fail(ctx, s, "%s failed: %s", what, baatt_vkresult_name(r));
}

const char *baatt_context_error(const baatt_context *ctx)
{
    if (!ctx) return "no context (creation failed before one existed)";
    if (tls_error.ctx_id == ctx->id) return tls_error.msg;
    baatt_context *c = (baatt_context *)ctx; /* the lock is not part of the context's value */
    pthread_mutex_lock(&c->error_lock);
    snprintf(tls_error_view, sizeof tls_error_view, "%s", c->error);
    pthread_mutex_unlock(&c->error_lock);
    return tls_error_view;
}

uint32_t baatt_context_validation_messages(const baatt_context *ctx)
{
    return ctx ? atomic_load(&ctx->validation_messages) : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* loader and instance                                                                        */

static baatt_status load_vulkan(baatt_context *ctx, PFN_vkGetInstanceProcAddr gipa)
{
    if (baatt_vk_load_global(&ctx->vki, gipa)) return BAATT_OK;
    if (gipa)
        return baatt_fail(ctx, BAATT_ERROR_NO_VULKAN,
                          "the application's vkGetInstanceProcAddr has no vkCreateInstance");
    return baatt_fail(ctx, BAATT_ERROR_NO_VULKAN,
                      "could not load the Vulkan loader libvulkan.so.1 (install libvulkan1 and a driver, "
                      "e.g. mesa-vulkan-drivers)");
}

/* An operator's switch (BAATT_VALIDATION): set by any value but "" and "0". */
static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

/* The operator's settings: BAATT_TUNE (the tuning every plan of this context gets, choice.h)
 * and BAATT_PROFILE (diagnostics: "dispatch" timestamps, driver "pipelines" statistics,
 * "cache=DIR" to keep each pipeline's driver binary), both parsed strictly. */
static baatt_status read_environment(baatt_context *ctx)
{
    char msg[256];
    ctx->tuning = baatt_tuning_default();
    const char *tune = getenv("BAATT_TUNE");
    if (tune && baatt_tuning_parse(tune, &ctx->tuning, msg, sizeof msg))
        return baatt_fail(ctx, BAATT_ERROR_INVALID_ARGUMENT, "BAATT_TUNE: %s", msg);
    const char *prof = getenv("BAATT_PROFILE");
    char item[512];
    for (const char *p = prof ? prof : ""; *p;) {
        size_t len = strcspn(p, ",");
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        if (!strcmp(item, "dispatch") || !strcmp(item, "1")) ctx->tuning.profile = 1;
        else if (!strcmp(item, "pipelines")) ctx->want_pipeline_stats = 1;
        else if (!strncmp(item, "cache=", 6) && item[6])
            snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%.255s", item + 6);
        else if (strcmp(item, "0"))
            return baatt_fail(ctx, BAATT_ERROR_INVALID_ARGUMENT,
                              "BAATT_PROFILE: unknown item \"%s\" (items: dispatch, pipelines, cache=DIR)", item);
        p += len + (p[len] == ',');
    }
    return BAATT_OK;
}

static int has_layer(const baatt_vk_instance *vki, const char *name)
{
    uint32_t n = 0;
    if (vki->vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || !n) return 0;
    VkLayerProperties *p = calloc(n, sizeof *p);
    int found = 0;
    if (p && vki->vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = !strcmp(p[i].layerName, name);
    free(p);
    return found;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                    VkDebugUtilsMessageTypeFlagsEXT type,
                                                    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    (void)type;
    baatt_context *ctx = user;
    atomic_fetch_add(&ctx->validation_messages, 1);
    baatt_fail(ctx, BAATT_ERROR_VULKAN, "validation: %s", data->pMessage);
    /* Validation is an explicit debugging mode: the message itself is the point, so show it. */
    fprintf(stderr, "baatt validation %s: %s\n",
            sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? "error" : "warning", data->pMessage);
    return VK_FALSE;
}

static baatt_status create_instance(baatt_context *ctx, int validation)
{
    const char *layers[1] = {VALIDATION_LAYER};
    const char *exts[1] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    const baatt_vk_instance *vki = &ctx->vki;
    if (validation && !has_layer(vki, VALIDATION_LAYER))
        return baatt_fail(ctx, BAATT_ERROR_VALIDATION_LAYER,
                          "validation requested but " VALIDATION_LAYER
                          " is not installed (Debian: vulkan-validationlayers)");
    uint32_t api = VK_API_VERSION_1_0;
    if (vki->vkEnumerateInstanceVersion) vki->vkEnumerateInstanceVersion(&api);
    if (api < VK_API_VERSION_1_2)
        return baatt_fail(ctx, BAATT_ERROR_NO_VULKAN, "the Vulkan loader supports only %u.%u; baatt needs 1.2",
                          VK_API_VERSION_MAJOR(api), VK_API_VERSION_MINOR(api));
    /* 1.3 where the loader has it: the cooperative-matrix-2 shaders are SPIR-V 1.6. */
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "baatt",
                             .pEngineName = "baatt",
                             .apiVersion = api >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3 : VK_API_VERSION_1_2};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                               .pApplicationInfo = &app,
                               .enabledLayerCount = validation ? 1 : 0,
                               .ppEnabledLayerNames = layers,
                               .enabledExtensionCount = validation ? 1 : 0,
                               .ppEnabledExtensionNames = exts};
    VkResult r = vki->vkCreateInstance(&ci, NULL, &ctx->instance);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
        return baatt_fail(ctx, BAATT_ERROR_NO_DEVICE, "vkCreateInstance: no compatible Vulkan driver is installed");
    BAATT_TRY(baatt_vk(ctx, r, "vkCreateInstance"));
    baatt_vk_load_instance(&ctx->vki, ctx->instance);
    if (!validation) return BAATT_OK;
    VkDebugUtilsMessengerCreateInfoEXT mi = {.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
                                             .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                                                                VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
                                             .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                                                            VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT,
                                             .pfnUserCallback = on_validation,
                                             .pUserData = ctx};
    return baatt_vk(ctx, vki->vkCreateDebugUtilsMessengerEXT(ctx->instance, &mi, NULL, &ctx->messenger),
                    "vkCreateDebugUtilsMessengerEXT");
}

/* ------------------------------------------------------------------------------------------ */
/* device description and choice                                                              */

static int has_device_ext(const baatt_vk_instance *vki, VkPhysicalDevice pd, const char *name)
{
    uint32_t n = 0;
    if (vki->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS) return 0;
    VkExtensionProperties *p = calloc(n ? n : 1, sizeof *p);
    int found = 0;
    if (p && vki->vkEnumerateDeviceExtensionProperties(pd, NULL, &n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = !strcmp(p[i].extensionName, name);
    free(p);
    return found;
}

static void describe(const baatt_vk_instance *vki, VkPhysicalDevice pd, uint32_t index, baatt_device_info *info)
{
    memset(info, 0, sizeof *info);
    VkPhysicalDeviceIDProperties id = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
    VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, .pNext = &id};
    VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                                              .pNext = &drv};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sub};
    vki->vkGetPhysicalDeviceProperties2(pd, &p2);
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES, .pNext = &s16};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f16};
    vki->vkGetPhysicalDeviceFeatures2(pd, &f2);
    const VkPhysicalDeviceProperties *p = &p2.properties;
    info->index = index;
    snprintf(info->name, sizeof info->name, "%s", p->deviceName);
    snprintf(info->driver_name, sizeof info->driver_name, "%s", drv.driverName);
    snprintf(info->driver_info, sizeof info->driver_info, "%s", drv.driverInfo);
    switch (p->deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: info->type = BAATT_DEVICE_DISCRETE_GPU; break;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: info->type = BAATT_DEVICE_INTEGRATED_GPU; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: info->type = BAATT_DEVICE_VIRTUAL_GPU; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: info->type = BAATT_DEVICE_CPU; break;
    default: info->type = BAATT_DEVICE_OTHER; break;
    }
    info->vendor_id = p->vendorID;
    info->device_id = p->deviceID;
    info->api_version = p->apiVersion;
    info->subgroup_size = sub.subgroupSize;
    info->max_shared_memory = p->limits.maxComputeSharedMemorySize;
    info->max_workgroup_invocations = p->limits.maxComputeWorkGroupInvocations;
    info->max_storage_buffer_range = p->limits.maxStorageBufferRange;
    info->timestamp_period_ns = p->limits.timestampComputeAndGraphics ? p->limits.timestampPeriod : 0;
    info->fp16_storage = s16.storageBuffer16BitAccess;
    info->fp16_arithmetic = f16.shaderFloat16;
    info->coopmat_nv = has_device_ext(vki, pd, "VK_NV_cooperative_matrix");
    info->coopmat_khr = has_device_ext(vki, pd, "VK_KHR_cooperative_matrix");
    info->coopmat2_nv = has_device_ext(vki, pd, "VK_NV_cooperative_matrix2");
    info->bf16 = has_device_ext(vki, pd, "VK_KHR_shader_bfloat16");
    memcpy(info->uuid, id.deviceUUID, sizeof info->uuid);
    info->external_memory_fd = has_device_ext(vki, pd, "VK_KHR_external_memory_fd");
    VkPhysicalDeviceMemoryProperties mp;
    vki->vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    for (uint32_t i = 0; i < mp.memoryHeapCount; i++)
        if ((mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mp.memoryHeaps[i].size > info->device_local_bytes)
            info->device_local_bytes = mp.memoryHeaps[i].size;
}

static int type_rank(baatt_device_type t)
{
    switch (t) {
    case BAATT_DEVICE_DISCRETE_GPU: return 0;
    case BAATT_DEVICE_INTEGRATED_GPU: return 1;
    case BAATT_DEVICE_VIRTUAL_GPU: return 2;
    case BAATT_DEVICE_CPU: return 3;
    default: return 4;
    }
}

static int name_matches(const char *name, const char *pattern)
{
    size_t n = strlen(name), m = strlen(pattern);
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && tolower((unsigned char)name[i + j]) == tolower((unsigned char)pattern[j])) j++;
        if (j == m) return 1;
    }
    return 0;
}

/* Index into infos of the device to use, or -1 with a message. Precedence documented in baatt.h. */
static int choose(baatt_context *ctx, const baatt_device_info *infos, uint32_t n, int index, const char *name)
{
    const char *env = getenv("BAATT_DEVICE");
    if (index < 0 && !name && env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == 0) index = (int)v;
        else name = env;
    }
    if (index >= 0) {
        if ((uint32_t)index < n) return index;
        baatt_fail(ctx, BAATT_ERROR_NO_DEVICE, "device index %d is out of range (%u Vulkan device%s)", index, n,
                   n == 1 ? "" : "s");
        return -1;
    }
    int best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (name && !name_matches(infos[i].name, name)) continue;
        if (best < 0 || type_rank(infos[i].type) < type_rank(infos[best].type)) best = (int)i;
    }
    if (best < 0)
        baatt_fail(ctx, BAATT_ERROR_NO_DEVICE, name ? "no Vulkan device name contains \"%s\"" : "no Vulkan device%s",
                   name ? name : "");
    return best;
}

static baatt_status enumerate(baatt_context *ctx, VkInstance inst, VkPhysicalDevice **pds, uint32_t *n)
{
    *pds = NULL;
    *n = 0;
    const baatt_vk_instance *vki = &ctx->vki;
    BAATT_VK(ctx, vki->vkEnumeratePhysicalDevices(inst, n, NULL));
    if (!*n) return baatt_fail(ctx, BAATT_ERROR_NO_DEVICE, "Vulkan reports no physical device");
    *pds = calloc(*n, sizeof **pds);
    if (!*pds) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    return baatt_vk(ctx, vki->vkEnumeratePhysicalDevices(inst, n, *pds), "vkEnumeratePhysicalDevices");
}

static baatt_status context_alloc(baatt_context **out);

baatt_status baatt_devices_list(baatt_device_info *infos, uint32_t *count)
{
    if (!count) return BAATT_ERROR_INVALID_ARGUMENT;
    baatt_context *tmp = NULL; /* an instance only, destroyed below like any context */
    baatt_status s = context_alloc(&tmp);
    if (!s) tmp->owns_device = 1;
    if (!s) s = load_vulkan(tmp, NULL);
    if (!s) s = create_instance(tmp, 0);
    VkPhysicalDevice *pds = NULL;
    uint32_t n = 0;
    if (!s) s = enumerate(tmp, tmp->instance, &pds, &n);
    baatt_device_info *all = s ? NULL : calloc(n, sizeof *all);
    if (!s && !all) s = BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (!s) {
        for (uint32_t i = 0; i < n; i++) describe(&tmp->vki, pds[i], i, &all[i]);
        int pick = choose(tmp, all, n, -1, NULL);
        if (pick >= 0) all[pick].picked = 1;
        if (infos && n) memcpy(infos, all, (n < *count ? n : *count) * sizeof *all);
        *count = n;
    }
    free(all);
    free(pds);
    baatt_context_destroy(tmp);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* device creation                                                                            */

static baatt_status pick_queue(baatt_context *ctx)
{
    uint32_t n = 0;
    const baatt_vk_instance *vki = &ctx->vki;
    vki->vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, NULL);
    VkQueueFamilyProperties *q = calloc(n ? n : 1, sizeof *q);
    if (!q) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vki->vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, q);
    uint32_t found = UINT32_MAX;
    for (uint32_t i = 0; i < n && found == UINT32_MAX; i++)
        if ((q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && q[i].timestampValidBits) found = i;
    for (uint32_t i = 0; i < n && found == UINT32_MAX; i++)
        if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) found = i;
    free(q);
    if (found == UINT32_MAX)
        return baatt_fail(ctx, BAATT_ERROR_NO_DEVICE, "device %s has no compute queue", ctx->info.name);
    ctx->queue_family = found;
    return BAATT_OK;
}

/* Whether the device lists an M x N fp16 accumulator for fp16 A and B at subgroup scope. */
static int lists_f16_accumulator(const baatt_coopmat_khr_properties *p, uint32_t n, uint32_t m, uint32_t cols)
{
    enum { F16 = 0, SUBGROUP = 3 };
    for (uint32_t i = 0; i < n; i++)
        if ((int)p[i].AType == F16 && (int)p[i].BType == F16 && (int)p[i].CType == F16 && (int)p[i].ResultType == F16 &&
            (int)p[i].scope == SUBGROUP && p[i].MSize == m && p[i].NSize == cols)
            return 1;
    return 0;
}

/* The KHR cooperative-matrix shapes the KHR kernel can use: subgroup scope, A and B fp16 or bf16,
 * fp32 accumulator and result, not saturating; for fp16, whether an fp16 accumulator of the
 * shape is listed too. Returns how many (at most max). */
static uint32_t khr_shapes(const baatt_vk_instance *vki, VkPhysicalDevice pd, baatt_mma_shape *out, uint32_t max)
{
    enum { F16 = 0, F32 = 1, BF16 = 1000141000, SUBGROUP = 3 };
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR get = vki->vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR;
    uint32_t n = 0, kept = 0;
    if (!get || get(pd, &n, NULL) != VK_SUCCESS || !n) return 0;
    baatt_coopmat_khr_properties *p = calloc(n, sizeof *p);
    for (uint32_t i = 0; p && i < n; i++) p[i].sType = (VkStructureType)1000506001;
    if (p && get(pd, &n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && kept < max; i++) {
            int ab = (int)p[i].AType == (int)p[i].BType && ((int)p[i].AType == F16 || (int)p[i].AType == BF16);
            if (!ab || (int)p[i].CType != F32 || (int)p[i].ResultType != F32 || (int)p[i].scope != SUBGROUP ||
                p[i].saturatingAccumulation || p[i].MSize > 255 || p[i].NSize > 255 || p[i].KSize > 255)
                continue;
            out[kept++] =
                (baatt_mma_shape){.m = (uint8_t)p[i].MSize,
                                  .n = (uint8_t)p[i].NSize,
                                  .k = (uint8_t)p[i].KSize,
                                  .bf16 = (int)p[i].AType == BF16,
                                  .c16 = (int)p[i].AType == F16 && lists_f16_accumulator(p, n, p[i].MSize, p[i].NSize)};
        }
    free(p);
    return kept;
}

/* KHR cooperative matrices alone (no cooperative matrix 2): the feature, on a 1.3 device (the
 * kernel is SPIR-V 1.6) that lists a usable shape. */
static int want_coopmat_khr(baatt_context *ctx, baatt_coopmat_khr_features *khr)
{
    baatt_mma_shape shapes[BAATT_MAX_MMA_SHAPES];
    if (!ctx->info.coopmat_khr || ctx->info.api_version < VK_API_VERSION_1_3 ||
        !khr_shapes(&ctx->vki, ctx->phys, shapes, BAATT_MAX_MMA_SHAPES))
        return 0;
    *khr = (baatt_coopmat_khr_features){.sType = STYPE_COOPMAT_KHR_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = khr};
    ctx->vki.vkGetPhysicalDeviceFeatures2(ctx->phys, &f2);
    khr->cooperativeMatrixRobustBufferAccess = VK_FALSE;
    return khr->cooperativeMatrix;
}

/* Cooperative matrix 2 (workgroup scope): every feature attention_cm2.comp uses, a 1.3 device
 * (SPIR-V 1.6). Fills the two structs to chain. */
static int want_coopmat2(baatt_context *ctx, uint32_t api, baatt_coopmat_khr_features *khr,
                         baatt_coopmat2_nv_features *cm2)
{
    if (!ctx->info.coopmat2_nv || !ctx->info.coopmat_khr || api < VK_API_VERSION_1_3) return 0;
    *khr = (baatt_coopmat_khr_features){.sType = STYPE_COOPMAT_KHR_FEATURES};
    *cm2 = (baatt_coopmat2_nv_features){.sType = STYPE_COOPMAT2_NV_FEATURES, .pNext = khr};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = cm2};
    ctx->vki.vkGetPhysicalDeviceFeatures2(ctx->phys, &f2);
    int ok = khr->cooperativeMatrix && cm2->workgroupScope && cm2->flexibleDimensions && cm2->reductions &&
             cm2->conversions && cm2->perElementOperations && cm2->tensorAddressing;
    khr->cooperativeMatrixRobustBufferAccess = VK_FALSE;
    cm2->blockLoads = VK_FALSE;
    return ok;
}

/* bf16 cooperative matrices (the bf16 variants of the cm2 and KHR kernels): VK_KHR_shader_bfloat16
 * with its type and cooperative-matrix features, on top of cooperative matrix 2 or KHR. */
static int want_bf16_coopmat(baatt_context *ctx, baatt_bf16_features *bf)
{
    if (!ctx->info.bf16) return 0;
    *bf = (baatt_bf16_features){.sType = STYPE_BF16_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = bf};
    ctx->vki.vkGetPhysicalDeviceFeatures2(ctx->phys, &f2);
    bf->shaderBFloat16DotProduct = VK_FALSE;
    return bf->shaderBFloat16Type && bf->shaderBFloat16CooperativeMatrix;
}

/* Enables what baatt can use and the device offers: 16-bit storage and fp16 arithmetic for fp16
 * tensors; the Vulkan memory model with KHR cooperative matrices (subgroup scope) and/or NV
 * cooperative matrix 2 (workgroup scope) for the tensor-core paths. NV cooperative matrices
 * (subgroup scope) stay off: no kernel uses them (NOTES.md #56). */
static baatt_status create_device(baatt_context *ctx)
{
    BAATT_TRY(pick_queue(ctx));
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                  .queueFamilyIndex = ctx->queue_family,
                                  .queueCount = 1,
                                  .pQueuePriorities = &prio};
    VkPhysicalDeviceVulkan12Features v12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features v11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                            .pNext = &v12};
    VkPhysicalDeviceFeatures2 have = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &v11};
    ctx->vki.vkGetPhysicalDeviceFeatures2(ctx->phys, &have);

    baatt_coopmat_khr_features khr;
    baatt_coopmat2_nv_features cm2;
    VkPhysicalDeviceVulkan12Features e12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features e11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                            .pNext = &e12};
    VkPhysicalDeviceFeatures2 want = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &e11};
    const char *exts[12];
    uint32_t next = 0;
    void **tail = &e12.pNext;
    e11.storageBuffer16BitAccess = v11.storageBuffer16BitAccess;
    e12.shaderFloat16 = v12.shaderFloat16;
    if (v11.storageBuffer16BitAccess) ctx->features |= BAATT_FEATURE_FP16_STORAGE;
    if (v12.shaderFloat16) ctx->features |= BAATT_FEATURE_FP16_ARITH;
    int tensor_ok = v12.vulkanMemoryModel && v12.shaderFloat16 && v11.storageBuffer16BitAccess;
    if (tensor_ok && want_coopmat2(ctx, ctx->info.api_version, &khr, &cm2)) {
        *tail = &cm2; /* cm2 -> khr already chained */
        tail = &khr.pNext;
        exts[next++] = "VK_KHR_cooperative_matrix";
        exts[next++] = "VK_NV_cooperative_matrix2";
        ctx->features |= BAATT_FEATURE_COOPMAT2_NV;
        if (want_coopmat_khr(ctx, &(baatt_coopmat_khr_features){0})) ctx->features |= BAATT_FEATURE_COOPMAT_KHR;
    } else if (tensor_ok && want_coopmat_khr(ctx, &khr)) {
        *tail = &khr;
        tail = &khr.pNext;
        exts[next++] = "VK_KHR_cooperative_matrix";
        ctx->features |= BAATT_FEATURE_COOPMAT_KHR;
    }
    /* 1.3 devices: maintenance4 (SPIR-V 1.6 shaders with LocalSizeId), and subgroup size control
     * with full subgroups, with which the KHR kernel pins its subgroup size. */
    VkPhysicalDeviceVulkan13Features v13 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
    if (ctx->info.api_version >= VK_API_VERSION_1_3) {
        VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &v13};
        ctx->vki.vkGetPhysicalDeviceFeatures2(ctx->phys, &f2);
        VkPhysicalDeviceVulkan13Features have13 = v13;
        v13 = (VkPhysicalDeviceVulkan13Features){.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES,
                                                 .maintenance4 = have13.maintenance4};
        if (have13.subgroupSizeControl && have13.computeFullSubgroups) {
            v13.subgroupSizeControl = v13.computeFullSubgroups = VK_TRUE;
            ctx->features |= BAATT_FEATURE_SUBGROUP_SIZE_CONTROL;
        }
        *tail = &v13;
        tail = &v13.pNext;
    }
    baatt_bf16_features bf;
    if ((ctx->features & (BAATT_FEATURE_COOPMAT2_NV | BAATT_FEATURE_COOPMAT_KHR)) && want_bf16_coopmat(ctx, &bf)) {
        *tail = &bf;
        tail = &bf.pNext;
        exts[next++] = "VK_KHR_shader_bfloat16";
        ctx->features |= BAATT_FEATURE_BF16_COOPMAT;
    }
    /* Developer diagnostic: BAATT_PROFILE=pipelines prints the driver's statistics (registers,
     * spills, shared memory) for every pipeline built (pipelines.c). */
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pe = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE};
    if (ctx->want_pipeline_stats && has_device_ext(&ctx->vki, ctx->phys, "VK_KHR_pipeline_executable_properties")) {
        *tail = &pe;
        tail = &pe.pNext;
        exts[next++] = "VK_KHR_pipeline_executable_properties";
        ctx->pipeline_stats = 1;
    }
    /* Our shaders bound-check every access themselves; VK_EXT_pipeline_robustness lets the
     * pipelines say so (pipelines.c): the NVIDIA driver otherwise guards every buffer load
     * against the descriptor's size (seen in the SASS), which cost the sparse path 2% on the H100
     * (bench/NOTES.md #20). The tuning's robust=on keeps the driver's default. */
    VkPhysicalDevicePipelineRobustnessFeaturesEXT rb = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_ROBUSTNESS_FEATURES_EXT, .pipelineRobustness = VK_TRUE};
    if (!ctx->tuning.robust && has_device_ext(&ctx->vki, ctx->phys, "VK_EXT_pipeline_robustness")) {
        *tail = &rb;
        tail = &rb.pNext;
        exts[next++] = "VK_EXT_pipeline_robustness";
        ctx->no_robustness = 1;
    }
    /* Exportable buffers (device_buffer.c), e.g. for CUDA to import: VK_KHR_external_memory,
     * which it needs, is core from 1.1. */
    if (ctx->info.external_memory_fd && ctx->info.api_version >= VK_API_VERSION_1_1) {
        exts[next++] = "VK_KHR_external_memory_fd";
        ctx->features |= BAATT_FEATURE_EXTERNAL_MEMORY_FD;
    }
    if (ctx->features & (BAATT_FEATURE_COOPMAT2_NV | BAATT_FEATURE_COOPMAT_KHR)) {
        e12.vulkanMemoryModel = VK_TRUE;
        e12.vulkanMemoryModelDeviceScope = v12.vulkanMemoryModelDeviceScope;
    }
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                             .pNext = &want,
                             .queueCreateInfoCount = 1,
                             .pQueueCreateInfos = &qi,
                             .enabledExtensionCount = next,
                             .ppEnabledExtensionNames = exts};
    BAATT_VK(ctx, ctx->vki.vkCreateDevice(ctx->phys, &ci, NULL, &ctx->device));
    return BAATT_OK;
}

/* The range of subgroup sizes a pipeline may get: where the size may vary
 * (VK_EXT_subgroup_size_control, core in 1.3: e.g. 8-32 lanes), the driver's min and max. */
static void subgroup_range(const baatt_context *ctx, uint32_t size, uint32_t *lo, uint32_t *hi)
{
    *lo = *hi = size;
    if (ctx->info.api_version < VK_API_VERSION_1_3 &&
        !has_device_ext(&ctx->vki, ctx->phys, "VK_EXT_subgroup_size_control"))
        return;
    VkPhysicalDeviceSubgroupSizeControlProperties sc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sc};
    ctx->vki.vkGetPhysicalDeviceProperties2(ctx->phys, &p2);
    if (sc.minSubgroupSize && sc.minSubgroupSize < *lo) *lo = sc.minSubgroupSize;
    if (sc.maxSubgroupSize > *hi) *hi = sc.maxSubgroupSize;
}

static uint32_t built_variants(void)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } v[] = {{"attention_cm2_f16", BAATT_BUILT_CM2_F16},
             {"attention_cm2_sorted_f16", BAATT_BUILT_CM2_F16},
             {"attention_cm2_bf16", BAATT_BUILT_CM2_BF16},
             {"attention_cm2_sorted_bf16", BAATT_BUILT_CM2_BF16},
             {"score_cm2", BAATT_BUILT_SCORE_CM2},
             {"attention_khr_f16", BAATT_BUILT_KHR_F16},
             {"attention_khr_sorted_f16", BAATT_BUILT_KHR_F16},
             {"attention_khr_bf16", BAATT_BUILT_KHR_BF16},
             {"attention_khr_sorted_bf16", BAATT_BUILT_KHR_BF16}};
    uint32_t built = 0, missing = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (baatt_shader_available(v[i].name)) built |= v[i].bit;
        else missing |= v[i].bit;
    }
    return built & ~missing; /* a path needs all of its variants */
}

/* The device as the path choice sees it (choice.h). */
static void fill_caps(baatt_context *ctx, const VkPhysicalDeviceSubgroupProperties *sub)
{
    baatt_caps *c = &ctx->caps;
    VkSubgroupFeatureFlags ops = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
    snprintf(c->name, sizeof c->name, "%.63s", ctx->info.name);
    c->features = ctx->features;
    c->built = built_variants();
    c->subgroup_size = sub->subgroupSize;
    subgroup_range(ctx, sub->subgroupSize, &c->subgroup_min, &c->subgroup_max);
    c->subgroup_arith = (sub->supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) && (sub->supportedOperations & ops) == ops;
    c->subgroup_ballot = c->subgroup_arith && (sub->supportedOperations & VK_SUBGROUP_FEATURE_BALLOT_BIT);
    c->max_shared = ctx->limits.maxComputeSharedMemorySize;
    c->max_invocations = ctx->limits.maxComputeWorkGroupInvocations;
    memcpy(c->max_groups, ctx->limits.maxComputeWorkGroupCount, sizeof c->max_groups);
    c->max_buffer = ctx->limits.maxStorageBufferRange;
    if (ctx->features & BAATT_FEATURE_COOPMAT_KHR)
        c->nshapes = khr_shapes(&ctx->vki, ctx->phys, c->shapes, BAATT_MAX_MMA_SHAPES);
}

/* Everything after the VkDevice exists, common to owned and wrapped devices. */
static baatt_status finish_setup(baatt_context *ctx)
{
    VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sub};
    ctx->vki.vkGetPhysicalDeviceProperties2(ctx->phys, &p2);
    const VkPhysicalDeviceProperties p = p2.properties;
    ctx->limits = p.limits;
    fill_caps(ctx, &sub);
    if (p.limits.maxPerStageDescriptorStorageBuffers < BIND_COUNT)
        return baatt_fail(ctx, BAATT_ERROR_MISSING_FEATURE,
                          "device %s allows %u storage buffers per stage; baatt needs %u", ctx->info.name,
                          p.limits.maxPerStageDescriptorStorageBuffers, (unsigned)BIND_COUNT);
    ctx->vki.vkGetPhysicalDeviceMemoryProperties(ctx->phys, &ctx->mem);
    baatt_vk_load_device(&ctx->vki, ctx->device, &ctx->vk);
    if (!ctx->queue) ctx->vk.vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);
    return baatt_pipelines_init(ctx);
}

uint32_t baatt_context_enabled_features(const baatt_context *ctx) { return ctx ? ctx->features : 0; }

const baatt_caps *baatt_context_caps(const baatt_context *ctx) { return &ctx->caps; }

const baatt_tuning *baatt_context_tuning(const baatt_context *ctx) { return &ctx->tuning; }

baatt_context_options baatt_context_options_default(void)
{
    baatt_context_options o = {.device_index = -1, .device_name = NULL, .validation = 0};
    return o;
}

static baatt_status context_alloc(baatt_context **out)
{
    static atomic_uint_fast64_t next_id;
    if (!out) return BAATT_ERROR_INVALID_ARGUMENT;
    baatt_context *ctx = *out = calloc(1, sizeof **out);
    if (!ctx) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    ctx->id = atomic_fetch_add(&next_id, 1) + 1; /* 0: no context, as in a fresh thread's error */
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_mutex_init(&ctx->error_lock, NULL);
    ctx->timeout_s = 600;
    return BAATT_OK;
}

/* BAATT_TIMEOUT_S: seconds (a positive decimal number) one GPU wait may take. */
static baatt_status read_timeout(baatt_context *ctx)
{
    const char *v = getenv("BAATT_TIMEOUT_S");
    if (!v || !*v) return BAATT_OK;
    char *end;
    double secs = strtod(v, &end);
    if (*end || !(secs > 0) || !isfinite(secs) || secs > 1e9)
        return baatt_fail(ctx, BAATT_ERROR_INVALID_ARGUMENT,
                          "BAATT_TIMEOUT_S='%s' is not a positive number of seconds (e.g. 0.5 or 600)", v);
    ctx->timeout_s = secs;
    return BAATT_OK;
}

baatt_status baatt_context_create(const baatt_context_options *opts, baatt_context **out)
{
    BAATT_TRY(context_alloc(out));
    baatt_context *ctx = *out;
    baatt_context_options o = opts ? *opts : baatt_context_options_default();
    ctx->owns_device = 1;
    BAATT_TRY(read_environment(ctx));
    BAATT_TRY(read_timeout(ctx));
    BAATT_TRY(load_vulkan(ctx, NULL));
    BAATT_TRY(create_instance(ctx, o.validation || env_flag("BAATT_VALIDATION")));
    VkPhysicalDevice *pds;
    uint32_t n;
    baatt_status s = enumerate(ctx, ctx->instance, &pds, &n);
    baatt_device_info *infos = s ? NULL : calloc(n, sizeof *infos);
    if (!s && !infos) s = baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (!s) {
        for (uint32_t i = 0; i < n; i++) describe(&ctx->vki, pds[i], i, &infos[i]);
        int pick = choose(ctx, infos, n, o.device_index, o.device_name);
        if (pick < 0) s = BAATT_ERROR_NO_DEVICE;
        else {
            ctx->phys = pds[pick];
            ctx->info = infos[pick];
            ctx->info.picked = 1;
        }
    }
    free(infos);
    free(pds);
    if (!s) s = create_device(ctx);
    if (!s) s = finish_setup(ctx);
    return s;
}

baatt_status baatt_context_wrap(const baatt_external_device *ext, baatt_context **out)
{
    BAATT_TRY(context_alloc(out));
    baatt_context *ctx = *out;
    if (!ext || !ext->instance || !ext->physical_device || !ext->device || !ext->queue)
        return baatt_fail(ctx, BAATT_ERROR_INVALID_ARGUMENT,
                          "baatt_context_wrap: instance, physical_device, device and queue must all be set");
    BAATT_TRY(read_environment(ctx));
    BAATT_TRY(read_timeout(ctx));
    BAATT_TRY(load_vulkan(ctx, ext->get_instance_proc_addr));
    baatt_vk_load_instance(&ctx->vki, ext->instance);
    ctx->instance = ext->instance;
    ctx->phys = ext->physical_device;
    ctx->device = ext->device;
    ctx->queue = ext->queue;
    ctx->queue_family = ext->queue_family_index;
    ctx->features = ext->enabled;
    VkPhysicalDevice *pds = NULL;
    uint32_t n = 0, index = 0;
    if (enumerate(ctx, ctx->instance, &pds, &n) == BAATT_OK)
        for (uint32_t i = 0; i < n; i++)
            if (pds[i] == ctx->phys) index = i;
    free(pds);
    set_error(ctx, "");
    describe(&ctx->vki, ctx->phys, index, &ctx->info);
    ctx->info.picked = 1;
    return finish_setup(ctx);
}

baatt_status baatt_context_handles(const baatt_context *ctx, baatt_external_device *out)
{
    if (!ctx || !out) return BAATT_ERROR_INVALID_ARGUMENT;
    *out = (baatt_external_device){.get_instance_proc_addr = ctx->vki.vkGetInstanceProcAddr,
                                   .instance = ctx->instance,
                                   .physical_device = ctx->phys,
                                   .device = ctx->device,
                                   .queue = ctx->queue,
                                   .queue_family_index = ctx->queue_family,
                                   .enabled = ctx->features};
    return BAATT_OK;
}

baatt_status baatt_context_device_info(const baatt_context *ctx, baatt_device_info *info)
{
    if (!ctx || !info) return BAATT_ERROR_INVALID_ARGUMENT;
    *info = ctx->info;
    return BAATT_OK;
}

static void slot_free(baatt_context *ctx, baatt_submit_slot *sl)
{
    if (!sl) return;
    if (sl->fence) ctx->vk.vkDestroyFence(ctx->device, sl->fence, NULL);
    if (sl->pool) ctx->vk.vkDestroyCommandPool(ctx->device, sl->pool, NULL); /* frees its cmd */
    free(sl);
}

static void destroy_slots(baatt_context *ctx)
{
    for (baatt_submit_slot *sl = ctx->slots, *next; sl; sl = next) {
        next = sl->next;
        slot_free(ctx, sl);
    }
    ctx->slots = NULL;
}

void baatt_context_destroy(baatt_context *ctx) { (void)baatt_context_destroy_counted(ctx); }

uint32_t baatt_context_destroy_counted(baatt_context *ctx)
{
    if (!ctx) return 0;
    if (ctx->device) {
        pthread_mutex_lock(&ctx->lock); /* vkDeviceWaitIdle needs every queue to itself */
        ctx->vk.vkDeviceWaitIdle(ctx->device);
        pthread_mutex_unlock(&ctx->lock);
        baatt_pipelines_destroy(ctx);
        destroy_slots(ctx);
        if (ctx->owns_device) ctx->vk.vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->owns_device && ctx->instance) {
        if (ctx->messenger) ctx->vki.vkDestroyDebugUtilsMessengerEXT(ctx->instance, ctx->messenger, NULL);
        ctx->vki.vkDestroyInstance(ctx->instance, NULL);
    }
    uint32_t msgs = atomic_load(&ctx->validation_messages); /* with those the teardown raised */
    pthread_mutex_destroy(&ctx->lock);
    pthread_mutex_destroy(&ctx->error_lock);
    free(ctx);
    return msgs;
}

/* ------------------------------------------------------------------------------------------ */
/* submission                                                                                 */

/* Fails with the status that lost ctx, if it is lost. */
static baatt_status check_lost(baatt_context *ctx)
{
    baatt_status why = (baatt_status)atomic_load(&ctx->lost);
    if (!why) return BAATT_OK;
    char reason[512];
    pthread_mutex_lock(&ctx->error_lock);
    snprintf(reason, sizeof reason, "%s", ctx->lost_reason);
    pthread_mutex_unlock(&ctx->error_lock);
    return baatt_fail(ctx, BAATT_ERROR_DEVICE_LOST,
                      "the context is lost and runs nothing more (earlier: %s); destroy its plans and the "
                      "context, then create a new one",
                      reason);
}

static baatt_status slot_create(baatt_context *ctx, baatt_submit_slot **out)
{
    baatt_submit_slot *sl = calloc(1, sizeof *sl);
    if (!sl) return baatt_fail(ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    *out = sl;
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT,
                                  .queueFamilyIndex = ctx->queue_family};
    BAATT_VK(ctx, ctx->vk.vkCreateCommandPool(ctx->device, &pi, NULL, &sl->pool));
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = sl->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    BAATT_VK(ctx, ctx->vk.vkAllocateCommandBuffers(ctx->device, &ai, &sl->cmd));
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    return baatt_vk(ctx, ctx->vk.vkCreateFence(ctx->device, &fi, NULL, &sl->fence), "vkCreateFence");
}

/* A free slot, marked busy: an idle one, else a new one (kept for reuse until the context goes). */
static baatt_status slot_take(baatt_context *ctx, baatt_submit_slot **out)
{
    pthread_mutex_lock(&ctx->lock);
    baatt_submit_slot *sl = ctx->slots;
    while (sl && sl->busy) sl = sl->next;
    if (sl) sl->busy = 1;
    pthread_mutex_unlock(&ctx->lock);
    if (sl) {
        *out = sl;
        return BAATT_OK;
    }
    sl = NULL;
    baatt_status s = slot_create(ctx, &sl);
    if (s) {
        slot_free(ctx, sl);
        return s;
    }
    sl->busy = 1;
    pthread_mutex_lock(&ctx->lock);
    sl->next = ctx->slots;
    ctx->slots = sl;
    pthread_mutex_unlock(&ctx->lock);
    *out = sl;
    return BAATT_OK;
}

/* The busy slot recording cmd; NULL (a caller bug) when cmd did not come from baatt_cmd_begin. */
static baatt_submit_slot *slot_of(baatt_context *ctx, VkCommandBuffer cmd)
{
    pthread_mutex_lock(&ctx->lock);
    baatt_submit_slot *sl = ctx->slots;
    while (sl && !(sl->busy && sl->cmd == cmd)) sl = sl->next;
    pthread_mutex_unlock(&ctx->lock);
    return sl;
}

/* Recycles the slot's command buffer and gives the slot back (unless its work is still pending). */
static void slot_give_back(baatt_context *ctx, baatt_submit_slot *sl)
{
    if (sl->pending) return; /* the GPU may still read the command buffer: never reused */
    ctx->vk.vkResetCommandPool(ctx->device, sl->pool, 0);
    pthread_mutex_lock(&ctx->lock);
    sl->busy = 0;
    pthread_mutex_unlock(&ctx->lock);
}

baatt_status baatt_cmd_begin(baatt_context *ctx, VkCommandBuffer *cmd)
{
    BAATT_TRY(check_lost(ctx));
    baatt_submit_slot *sl;
    BAATT_TRY(slot_take(ctx, &sl));
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    baatt_status s = baatt_vk(ctx, ctx->vk.vkBeginCommandBuffer(sl->cmd, &bi), "vkBeginCommandBuffer");
    if (s) slot_give_back(ctx, sl);
    else *cmd = sl->cmd;
    return s;
}

void baatt_cmd_discard(baatt_context *ctx, VkCommandBuffer cmd)
{
    baatt_submit_slot *sl = slot_of(ctx, cmd);
    if (sl) slot_give_back(ctx, sl);
}

void baatt_cmd_drain(baatt_context *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    for (baatt_submit_slot *sl = ctx->slots; sl; sl = sl->next)
        if (sl->pending && ctx->vk.vkWaitForFences(ctx->device, 1, &sl->fence, VK_TRUE, UINT64_MAX) != VK_TIMEOUT)
            sl->pending = 0; /* finished, or the device is lost: nothing runs any more */
    pthread_mutex_unlock(&ctx->lock);
}

void baatt_cmd_host_barrier(baatt_context *ctx, VkCommandBuffer cmd)
{
    /* Device writes (copies into staging, or shader stores into a host-visible buffer) made
     * visible to host reads after the fence. */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
    ctx->vk.vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                 VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Waits for the slot's fence at most ctx->timeout_s. A timeout leaves the work pending (the
 * command buffer and everything it uses stay alive) and marks the context lost: waiting for the
 * device to go idle instead would not bound the caller's wall time. */
static baatt_status wait_slot(baatt_context *ctx, baatt_submit_slot *sl, double t0)
{
    VkResult r = ctx->vk.vkWaitForFences(ctx->device, 1, &sl->fence, VK_TRUE, (uint64_t)(ctx->timeout_s * 1e9));
    if (r == VK_SUCCESS) {
        sl->pending = 0;
        return baatt_vk(ctx, ctx->vk.vkResetFences(ctx->device, 1, &sl->fence), "vkResetFences");
    }
    if (r != VK_TIMEOUT)
        return baatt_vk(ctx, r, "vkWaitForFences (the GPU's completion of a submitted command buffer)");
    char msg[512];
    snprintf(msg, sizeof msg,
             "timed out after %.3g s waiting for the GPU to finish a submitted command buffer (limit %g s, "
             "BAATT_TIMEOUT_S); the work is still pending, so the context is marked lost",
             now_s() - t0, ctx->timeout_s);
    return mark_lost(ctx, BAATT_ERROR_TIMEOUT, msg);
}

baatt_status baatt_cmd_submit_wait(baatt_context *ctx, VkCommandBuffer cmd)
{
    baatt_submit_slot *sl = slot_of(ctx, cmd);
    if (!sl) return baatt_fail(ctx, BAATT_ERROR_INVALID_ARGUMENT, "command buffer not from baatt_cmd_begin");
    baatt_status s = baatt_vk(ctx, ctx->vk.vkEndCommandBuffer(cmd), "vkEndCommandBuffer");
    if (!s) s = check_lost(ctx);
    double t0 = now_s();
    if (!s) {
        VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
        pthread_mutex_lock(&ctx->lock); /* the queue is externally synchronised */
        VkResult r = ctx->vk.vkQueueSubmit(ctx->queue, 1, &si, sl->fence);
        sl->pending = r == VK_SUCCESS;
        pthread_mutex_unlock(&ctx->lock);
        s = baatt_vk(ctx, r, "vkQueueSubmit");
    }
    if (!s) s = wait_slot(ctx, sl, t0);
    slot_give_back(ctx, sl);
    return s;
}

void baatt_cmd_barrier(baatt_context *ctx, VkCommandBuffer cmd)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask =
                              VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT};
    ctx->vk.vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                                 VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0,
                                 NULL, 0, NULL);
}
