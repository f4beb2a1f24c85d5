/* Per-context Vulkan function tables (see vk_table.h). The only process-wide state is the loader's
 * vkGetInstanceProcAddr, written once under pthread_once and read-only afterwards. */
#include "vk_table.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

static pthread_once_t loader_once = PTHREAD_ONCE_INIT;
static PFN_vkGetInstanceProcAddr loader_gipa;

static void open_loader(void)
{
    /* Never closed: contexts may live until exit, and the loader is process-wide anyway. */
    void *lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (lib) *(void **)&loader_gipa = dlsym(lib, "vkGetInstanceProcAddr");
}

int baatt_vk_load_global(baatt_vk_instance *t, PFN_vkGetInstanceProcAddr gipa)
{
    if (!gipa) {
        pthread_once(&loader_once, open_loader);
        gipa = loader_gipa;
    }
    if (!gipa) return 0;
    t->vkGetInstanceProcAddr = gipa;
#define LOAD(name) t->name = (PFN_##name)gipa(NULL, #name);
    BAATT_VK_GLOBAL_FUNCS(LOAD)
#undef LOAD
    return t->vkCreateInstance != NULL;
}

void baatt_vk_load_instance(baatt_vk_instance *t, VkInstance instance)
{
#define LOAD(name) t->name = (PFN_##name)t->vkGetInstanceProcAddr(instance, #name);
    BAATT_VK_INSTANCE_FUNCS(LOAD)
#undef LOAD
}

void baatt_vk_load_device(const baatt_vk_instance *t, VkDevice device, baatt_vk_device *d)
{
#define LOAD(name) d->name = (PFN_##name)t->vkGetDeviceProcAddr(device, #name);
    BAATT_VK_DEVICE_FUNCS(LOAD)
#undef LOAD
}
