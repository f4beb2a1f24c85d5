/* baatt's own Vulkan function tables: one instance table and one device table per context, so that
 * no process-wide function pointer is ever rewritten (two contexts, ours or an application's, can be
 * created and used from different threads at once). The loader library is opened once per process
 * (pthread_once); a wrapped context may bring the application's vkGetInstanceProcAddr instead.
 * The member names are the Vulkan names: ctx->vk.vkCmdDispatch(...). */
#ifndef BAATT_VK_TABLE_H
#define BAATT_VK_TABLE_H

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan_core.h>

/* VK_KHR_cooperative_matrix's properties query (Debian 12's 1.3.239 headers predate it), as the
 * registry defines it. */
#ifdef VK_KHR_cooperative_matrix
typedef VkCooperativeMatrixPropertiesKHR baatt_coopmat_khr_properties;
#else
typedef struct baatt_coopmat_khr_properties {
    VkStructureType sType; /* 1000506001 */
    void *pNext;
    uint32_t MSize, NSize, KSize;
    int32_t AType, BType, CType, ResultType; /* VkComponentTypeKHR */
    VkBool32 saturatingAccumulation;
    int32_t scope; /* VkScopeKHR */
} baatt_coopmat_khr_properties;
typedef VkResult(VKAPI_PTR *PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)(VkPhysicalDevice, uint32_t *,
                                                                                   baatt_coopmat_khr_properties *);
#endif

/* Loaded with vkGetInstanceProcAddr(NULL, ...). */
#define BAATT_VK_GLOBAL_FUNCS(X)                                                                                       \
    X(vkCreateInstance)                                                                                                \
    X(vkEnumerateInstanceLayerProperties)                                                                              \
    X(vkEnumerateInstanceVersion)

/* Loaded with vkGetInstanceProcAddr(instance, ...); NULL where the instance lacks one. */
#define BAATT_VK_INSTANCE_FUNCS(X)                                                                                     \
    X(vkDestroyInstance)                                                                                               \
    X(vkEnumeratePhysicalDevices)                                                                                      \
    X(vkEnumerateDeviceExtensionProperties)                                                                            \
    X(vkGetPhysicalDeviceProperties2)                                                                                  \
    X(vkGetPhysicalDeviceFeatures2)                                                                                    \
    X(vkGetPhysicalDeviceMemoryProperties)                                                                             \
    X(vkGetPhysicalDeviceQueueFamilyProperties)                                                                        \
    X(vkGetPhysicalDeviceExternalBufferProperties)                                                                     \
    X(vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)                                                               \
    X(vkCreateDevice)                                                                                                  \
    X(vkGetDeviceProcAddr)                                                                                             \
    X(vkCreateDebugUtilsMessengerEXT)                                                                                  \
    X(vkDestroyDebugUtilsMessengerEXT)

/* Loaded with vkGetDeviceProcAddr(device, ...); extension functions are NULL unless enabled. */
#define BAATT_VK_DEVICE_FUNCS(X)                                                                                       \
    X(vkDestroyDevice)                                                                                                 \
    X(vkDeviceWaitIdle)                                                                                                \
    X(vkGetDeviceQueue)                                                                                                \
    X(vkQueueSubmit)                                                                                                   \
    X(vkQueueWaitIdle)                                                                                                 \
    X(vkCreateFence)                                                                                                   \
    X(vkDestroyFence)                                                                                                  \
    X(vkResetFences)                                                                                                   \
    X(vkGetFenceStatus)                                                                                                \
    X(vkWaitForFences)                                                                                                 \
    X(vkCreateSemaphore)                                                                                               \
    X(vkDestroySemaphore)                                                                                              \
    X(vkCreateBuffer)                                                                                                  \
    X(vkDestroyBuffer)                                                                                                 \
    X(vkGetBufferMemoryRequirements)                                                                                   \
    X(vkGetBufferMemoryRequirements2)                                                                                  \
    X(vkGetMemoryFdKHR)                                                                                                \
    X(vkAllocateMemory)                                                                                                \
    X(vkFreeMemory)                                                                                                    \
    X(vkBindBufferMemory)                                                                                              \
    X(vkMapMemory)                                                                                                     \
    X(vkUnmapMemory)                                                                                                   \
    X(vkFlushMappedMemoryRanges)                                                                                       \
    X(vkInvalidateMappedMemoryRanges)                                                                                  \
    X(vkCreateCommandPool)                                                                                             \
    X(vkDestroyCommandPool)                                                                                            \
    X(vkResetCommandPool)                                                                                              \
    X(vkAllocateCommandBuffers)                                                                                        \
    X(vkFreeCommandBuffers)                                                                                            \
    X(vkBeginCommandBuffer)                                                                                            \
    X(vkEndCommandBuffer)                                                                                              \
    X(vkResetCommandBuffer)                                                                                            \
    X(vkCreateShaderModule)                                                                                            \
    X(vkDestroyShaderModule)                                                                                           \
    X(vkCreatePipelineCache)                                                                                           \
    X(vkDestroyPipelineCache)                                                                                          \
    X(vkGetPipelineCacheData)                                                                                          \
    X(vkCreateComputePipelines)                                                                                        \
    X(vkDestroyPipeline)                                                                                               \
    X(vkCreatePipelineLayout)                                                                                          \
    X(vkDestroyPipelineLayout)                                                                                         \
    X(vkCreateDescriptorSetLayout)                                                                                     \
    X(vkDestroyDescriptorSetLayout)                                                                                    \
    X(vkCreateDescriptorPool)                                                                                          \
    X(vkDestroyDescriptorPool)                                                                                         \
    X(vkResetDescriptorPool)                                                                                           \
    X(vkAllocateDescriptorSets)                                                                                        \
    X(vkFreeDescriptorSets)                                                                                            \
    X(vkUpdateDescriptorSets)                                                                                          \
    X(vkCreateQueryPool)                                                                                               \
    X(vkDestroyQueryPool)                                                                                              \
    X(vkGetQueryPoolResults)                                                                                           \
    X(vkCmdResetQueryPool)                                                                                             \
    X(vkCmdWriteTimestamp)                                                                                             \
    X(vkCmdBindPipeline)                                                                                               \
    X(vkCmdBindDescriptorSets)                                                                                         \
    X(vkCmdPushConstants)                                                                                              \
    X(vkCmdDispatch)                                                                                                   \
    X(vkCmdDispatchIndirect)                                                                                           \
    X(vkCmdPipelineBarrier)                                                                                            \
    X(vkCmdCopyBuffer)                                                                                                 \
    X(vkCmdFillBuffer)                                                                                                 \
    X(vkCmdUpdateBuffer)                                                                                               \
    X(vkGetPipelineExecutablePropertiesKHR)                                                                            \
    X(vkGetPipelineExecutableStatisticsKHR)

#define BAATT_VK_MEMBER(name) PFN_##name name;
typedef struct baatt_vk_instance {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    BAATT_VK_GLOBAL_FUNCS(BAATT_VK_MEMBER)
    BAATT_VK_INSTANCE_FUNCS(BAATT_VK_MEMBER)
} baatt_vk_instance;
typedef struct baatt_vk_device {
    BAATT_VK_DEVICE_FUNCS(BAATT_VK_MEMBER)
} baatt_vk_device;
#undef BAATT_VK_MEMBER

/* Fills t's global functions from gipa, or (gipa == NULL) from libvulkan.so.1, opened once per
 * process. Returns 0 when no loader could be found. */
int baatt_vk_load_global(baatt_vk_instance *t, PFN_vkGetInstanceProcAddr gipa);
/* Fills t's instance-level functions for instance (after baatt_vk_load_global). */
void baatt_vk_load_instance(baatt_vk_instance *t, VkInstance instance);
/* Fills d from device through t's vkGetDeviceProcAddr. */
void baatt_vk_load_device(const baatt_vk_instance *t, VkDevice device, baatt_vk_device *d);

#endif
