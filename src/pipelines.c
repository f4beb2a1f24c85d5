/* Pipelines: one descriptor-set layout and pipeline layout shared by every stage, compute
 * pipelines built from the embedded SPIR-V on first use, keyed by (variant, spec constants). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"
#include "shaders_embedded.h"

static const baatt_embedded_shader *find_shader(const char *name)
{
    for (const baatt_embedded_shader *s = baatt_embedded_shaders; s->name; s++)
        if (!strcmp(s->name, name)) return s;
    return NULL;
}

int baatt_shader_available(const char *name) { return find_shader(name) != NULL; }

baatt_status baatt_pipelines_init(baatt_context *ctx)
{
    VkDescriptorSetLayoutBinding b[BIND_COUNT];
    for (uint32_t i = 0; i < BIND_COUNT; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo li = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = BIND_COUNT, .pBindings = b};
    BAATT_VK(ctx, ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &li, NULL, &ctx->set_layout));
    VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = BAATT_PUSH_BYTES};
    VkPipelineLayoutCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                     .setLayoutCount = 1,
                                     .pSetLayouts = &ctx->set_layout,
                                     .pushConstantRangeCount = 1,
                                     .pPushConstantRanges = &pr};
    return baatt_vk(ctx, ctx->vk.vkCreatePipelineLayout(ctx->device, &pi, NULL, &ctx->pipeline_layout),
                    "vkCreatePipelineLayout");
}

/* One descriptor set of the context's layout in a pool of its own (the caller destroys *pool,
 * also after a failure: it is VK_NULL_HANDLE where none was made). */
baatt_status baatt_descriptor_set_create(baatt_context *ctx, VkDescriptorPool *pool, VkDescriptorSet *set)
{
    VkDescriptorPoolSize size = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = BIND_COUNT};
    VkDescriptorPoolCreateInfo pi = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &size};
    BAATT_VK(ctx, ctx->vk.vkCreateDescriptorPool(ctx->device, &pi, NULL, pool));
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                      .descriptorPool = *pool,
                                      .descriptorSetCount = 1,
                                      .pSetLayouts = &ctx->set_layout};
    BAATT_VK(ctx, ctx->vk.vkAllocateDescriptorSets(ctx->device, &ai, set));
    return BAATT_OK;
}

void baatt_pipelines_destroy(baatt_context *ctx)
{
    for (uint32_t i = 0; i < ctx->npipelines; i++)
        ctx->vk.vkDestroyPipeline(ctx->device, ctx->pipelines[i].pipeline, NULL);
    free(ctx->pipelines);
    ctx->pipelines = NULL;
    ctx->npipelines = ctx->cap_pipelines = 0;
    if (ctx->pipeline_layout) ctx->vk.vkDestroyPipelineLayout(ctx->device, ctx->pipeline_layout, NULL);
    if (ctx->set_layout) ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, ctx->set_layout, NULL);
}

static baatt_pipeline_entry *lookup(baatt_context *ctx, const char *name, const uint32_t *spec, uint32_t nspec,
                                    uint32_t subgroup)
{
    for (uint32_t i = 0; i < ctx->npipelines; i++) {
        baatt_pipeline_entry *e = &ctx->pipelines[i];
        if (e->nspec == nspec && e->subgroup == subgroup && !strcmp(e->name, name) &&
            (!nspec || !memcmp(e->spec, spec, nspec * sizeof *spec)))
            return e;
    }
    return NULL;
}

/* BAATT_PROFILE=pipelines diagnostic: one stderr line per pipeline executable with the driver's
 * statistics (on NVIDIA: registers, local memory, shared memory), for kernel tuning. */
static void print_stats(baatt_context *ctx, const char *name, const uint32_t *spec, uint32_t nspec, VkPipeline pl)
{
    VkPipelineInfoKHR pi = {.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = pl};
    VkPipelineExecutablePropertiesKHR props[4];
    uint32_t ne = 4;
    for (uint32_t i = 0; i < ne; i++)
        props[i] = (VkPipelineExecutablePropertiesKHR){.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR};
    if (ctx->vk.vkGetPipelineExecutablePropertiesKHR(ctx->device, &pi, &ne, props) < 0) return;
    for (uint32_t e = 0; e < ne; e++) {
        VkPipelineExecutableInfoKHR ei = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, .pipeline = pl, .executableIndex = e};
        VkPipelineExecutableStatisticKHR st[32];
        uint32_t ns = 32;
        for (uint32_t i = 0; i < ns; i++)
            st[i] = (VkPipelineExecutableStatisticKHR){.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
        if (ctx->vk.vkGetPipelineExecutableStatisticsKHR(ctx->device, &ei, &ns, st) < 0) continue;
        fprintf(stderr, "baatt: pipeline %s spec[", name);
        for (uint32_t i = 0; i < nspec; i++) fprintf(stderr, i ? ",%u" : "%u", spec[i]);
        fprintf(stderr, "]");
        for (uint32_t i = 0; i < ns; i++) {
            fprintf(stderr, " | %s=", st[i].name);
            switch (st[i].format) {
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR: fprintf(stderr, "%u", st[i].value.b32); break;
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
                fprintf(stderr, "%lld", (long long)st[i].value.i64);
                break;
            case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
                fprintf(stderr, "%llu", (unsigned long long)st[i].value.u64);
                break;
            default: fprintf(stderr, "%g", st[i].value.f64); break;
            }
        }
        fprintf(stderr, "\n");
    }
}

/* BAATT_PROFILE=cache=DIR: each pipeline is created through its own pipeline cache, whose
 * data (the driver's compiled binary, in its own format) goes to DIR/NAME.bin for offline
 * inspection of what the driver made of a shader. */
static VkPipelineCache dump_cache_begin(baatt_context *ctx)
{
    VkPipelineCache c = VK_NULL_HANDLE;
    if (!ctx->cache_dir[0]) return c;
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    if (ctx->vk.vkCreatePipelineCache(ctx->device, &ci, NULL, &c) != VK_SUCCESS) return VK_NULL_HANDLE;
    return c;
}

static void dump_cache_end(baatt_context *ctx, VkPipelineCache c, const char *name)
{
    if (!c) return;
    size_t n = 0;
    void *data = NULL;
    if (ctx->vk.vkGetPipelineCacheData(ctx->device, c, &n, NULL) == VK_SUCCESS && n && (data = malloc(n)) &&
        ctx->vk.vkGetPipelineCacheData(ctx->device, c, &n, data) == VK_SUCCESS) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.bin", ctx->cache_dir, name);
        FILE *f = fopen(path, "wb");
        if (f) fwrite(data, 1, n, f), fclose(f);
        else fprintf(stderr, "baatt: BAATT_PROFILE=cache: cannot write %s\n", path);
    }
    free(data);
    ctx->vk.vkDestroyPipelineCache(ctx->device, c, NULL);
}

static baatt_status build(baatt_context *ctx, const baatt_embedded_shader *sh, const uint32_t *spec, uint32_t nspec,
                          uint32_t subgroup, VkPipeline *out)
{
    VkShaderModuleCreateInfo mi = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = *sh->size, .pCode = sh->code};
    VkShaderModule mod;
    BAATT_VK(ctx, ctx->vk.vkCreateShaderModule(ctx->device, &mi, NULL, &mod));
    VkSpecializationMapEntry map[BAATT_MAX_SPEC];
    for (uint32_t i = 0; i < nspec; i++)
        map[i] = (VkSpecializationMapEntry){.constantID = i, .offset = i * 4, .size = 4};
    VkSpecializationInfo si = {.mapEntryCount = nspec, .pMapEntries = map, .dataSize = nspec * 4, .pData = spec};
    VkComputePipelineCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
                                      .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                                                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                                                .module = mod,
                                                .pName = "main",
                                                .pSpecializationInfo = nspec ? &si : NULL},
                                      .layout = ctx->pipeline_layout,
                                      .flags = ctx->pipeline_stats ? VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR : 0};
    VkPipelineRobustnessCreateInfoEXT rb = {.sType = VK_STRUCTURE_TYPE_PIPELINE_ROBUSTNESS_CREATE_INFO_EXT,
                                            .storageBuffers = VK_PIPELINE_ROBUSTNESS_BUFFER_BEHAVIOR_DISABLED_EXT,
                                            .uniformBuffers = VK_PIPELINE_ROBUSTNESS_BUFFER_BEHAVIOR_DISABLED_EXT,
                                            .vertexInputs = VK_PIPELINE_ROBUSTNESS_BUFFER_BEHAVIOR_DEVICE_DEFAULT_EXT,
                                            .images = VK_PIPELINE_ROBUSTNESS_IMAGE_BEHAVIOR_DEVICE_DEFAULT_EXT};
    if (ctx->no_robustness) ci.pNext = &rb;
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rs = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO,
        .requiredSubgroupSize = subgroup};
    if (subgroup) {
        ci.stage.pNext = &rs;
        ci.stage.flags = VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT;
    }
    VkPipelineCache cache = dump_cache_begin(ctx);
    VkResult r = ctx->vk.vkCreateComputePipelines(ctx->device, cache, 1, &ci, NULL, out);
    dump_cache_end(ctx, cache, sh->name);
    ctx->vk.vkDestroyShaderModule(ctx->device, mod, NULL);
    if (r != VK_SUCCESS)
        return baatt_fail(ctx, BAATT_ERROR_VULKAN, "vkCreateComputePipelines(%s) failed: %s", sh->name,
                          baatt_vkresult_name(r));
    if (ctx->pipeline_stats) print_stats(ctx, sh->name, spec, nspec, *out);
    return BAATT_OK;
}

/* The cached pipeline for (name, spec), or VK_NULL_HANDLE; under the context lock. */
static VkPipeline cached(baatt_context *ctx, const char *name, const uint32_t *spec, uint32_t nspec, uint32_t subgroup)
{
    pthread_mutex_lock(&ctx->lock);
    baatt_pipeline_entry *e = lookup(ctx, name, spec, nspec, subgroup);
    VkPipeline pl = e ? e->pipeline : VK_NULL_HANDLE;
    pthread_mutex_unlock(&ctx->lock);
    return pl;
}

/* Adds a built pipeline to the cache; if another thread added the same one meanwhile, keeps
 * theirs and returns it (the caller destroys its own). Under the context lock. */
static baatt_status insert(baatt_context *ctx, const char *name, const uint32_t *spec, uint32_t nspec,
                           uint32_t subgroup, VkPipeline *pl, int *duplicate)
{
    baatt_status s = BAATT_OK;
    pthread_mutex_lock(&ctx->lock);
    baatt_pipeline_entry *e = lookup(ctx, name, spec, nspec, subgroup);
    *duplicate = e != NULL;
    if (e) *pl = e->pipeline;
    if (!e && ctx->npipelines == ctx->cap_pipelines) {
        uint32_t cap = ctx->cap_pipelines ? 2 * ctx->cap_pipelines : 16;
        baatt_pipeline_entry *p = realloc(ctx->pipelines, cap * sizeof *p);
        if (p) ctx->pipelines = p, ctx->cap_pipelines = cap;
        else s = BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (!e && !s) {
        e = &ctx->pipelines[ctx->npipelines++];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", name);
        if (nspec) memcpy(e->spec, spec, nspec * sizeof *spec);
        e->nspec = nspec;
        e->subgroup = subgroup;
        e->pipeline = *pl;
    }
    pthread_mutex_unlock(&ctx->lock);
    return s;
}

/* Pipelines are built outside the lock (compiling takes long; plans on other threads go on) and
 * inserted under it. */
baatt_status baatt_pipeline_get(baatt_context *ctx, const char *name, const uint32_t *spec, uint32_t nspec,
                                uint32_t subgroup, VkPipeline *out)
{
    if (nspec > BAATT_MAX_SPEC)
        return baatt_fail(ctx, BAATT_ERROR_INVALID_ARGUMENT, "too many specialization constants");
    if ((*out = cached(ctx, name, spec, nspec, subgroup))) return BAATT_OK;
    const baatt_embedded_shader *sh = find_shader(name);
    if (!sh)
        return baatt_fail(ctx, BAATT_ERROR_MISSING_FEATURE, "shader variant %s was not built into this library", name);
    VkPipeline pl = VK_NULL_HANDLE, built;
    BAATT_TRY(build(ctx, sh, spec, nspec, subgroup, &pl));
    built = pl;
    int duplicate = 0;
    baatt_status s = insert(ctx, name, spec, nspec, subgroup, &pl, &duplicate);
    if (s || duplicate) ctx->vk.vkDestroyPipeline(ctx->device, built, NULL);
    if (s) return baatt_fail(ctx, s, "out of host memory");
    *out = pl;
    return BAATT_OK;
}
