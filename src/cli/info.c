/* baatt info: every Vulkan device with the facts that decide baatt's kernels. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void print_text(const baatt_device_info *d)
{
    printf("%c [%u] %s\n", d->picked ? '*' : ' ', d->index, d->name);
    printf("      type %s, vendor 0x%04x device 0x%04x, Vulkan %u.%u.%u\n", cli_device_type(d->type), d->vendor_id,
           d->device_id, VK_API_VERSION_MAJOR(d->api_version), VK_API_VERSION_MINOR(d->api_version),
           VK_API_VERSION_PATCH(d->api_version));
    printf("      driver %s %s\n", d->driver_name, d->driver_info);
    printf("      subgroup %u, shared memory %u KiB, %u invocations/workgroup, device-local %.1f GiB\n",
           d->subgroup_size, d->max_shared_memory / 1024, d->max_workgroup_invocations,
           d->device_local_bytes / 1073741824.0);
    printf("      fp16 storage %s, fp16 arithmetic %s, timestamps %s\n", d->fp16_storage ? "yes" : "no",
           d->fp16_arithmetic ? "yes" : "no", d->timestamp_period_ns > 0 ? "yes" : "no");
    printf("      cooperative matrix: NV %s, KHR %s, NV2 %s; bf16 %s\n", d->coopmat_nv ? "yes" : "no",
           d->coopmat_khr ? "yes" : "no", d->coopmat2_nv ? "yes" : "no", d->bf16 ? "yes" : "no");
}

static void print_json(const baatt_device_info *d, int last)
{
    printf("  {\"index\": %u, \"name\": ", d->index);
    cli_json_string(stdout, d->name);
    printf(", \"type\": \"%s\", \"driver\": ", cli_device_type(d->type));
    cli_json_string(stdout, d->driver_name);
    printf(", \"driver_info\": ");
    cli_json_string(stdout, d->driver_info);
    printf(", \"subgroup_size\": %u, \"shared_memory\": %u, \"fp16_storage\": %s, \"fp16\": %s, "
           "\"coopmat_nv\": %s, \"coopmat_khr\": %s, \"coopmat2_nv\": %s, \"bf16\": %s, \"picked\": %s}%s\n",
           d->subgroup_size, d->max_shared_memory, d->fp16_storage ? "true" : "false",
           d->fp16_arithmetic ? "true" : "false", d->coopmat_nv ? "true" : "false", d->coopmat_khr ? "true" : "false",
           d->coopmat2_nv ? "true" : "false", d->bf16 ? "true" : "false", d->picked ? "true" : "false",
           last ? "" : ",");
}

int cmd_info(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: baatt info [--json]\n\nLists every Vulkan device; * marks the one baatt uses by default\n"
                   "(discrete GPU, then integrated, virtual, CPU; BAATT_DEVICE overrides).\n");
            return 0;
        } else return cli_fail("info", "unknown option '%s' (try --help)", argv[i]);
    }
    uint32_t n = 0;
    baatt_status s = baatt_devices_list(NULL, &n);
    if (s) return cli_fail_status("info", s, NULL, "cannot list Vulkan devices");
    baatt_device_info *d = calloc(n, sizeof *d);
    if (!d) return cli_fail("info", "out of memory");
    s = baatt_devices_list(d, &n);
    if (s) {
        free(d);
        return cli_fail_status("info", s, NULL, "cannot list Vulkan devices");
    }
    if (json) printf("[\n");
    for (uint32_t i = 0; i < n; i++) json ? print_json(&d[i], i + 1 == n) : print_text(&d[i]);
    if (json) printf("]\n");
    free(d);
    return 0;
}
