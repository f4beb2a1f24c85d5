#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: baatt <command> [options]\n"
               "\n"
               "Block Approximate Sparse Attention (BA-Att) on any Vulkan GPU.\n"
               "\n"
               "commands:\n"
               "  info       list Vulkan devices and which one baatt would use\n"
               "  attention  run BA-Att (or --dense attention) on .npy files\n"
               "  demo       run BA-Att and dense attention on random inputs, compare with the CPU\n"
               "  bench      time every stage over a sweep of sizes and keep ratios\n"
               "  eval       block-selection quality of BA-Att and the alternatives\n"
               "\n"
               "Run `baatt <command> --help` for a command's options.\n"
               "Environment: BAATT_DEVICE (index or name substring), BAATT_VALIDATION=1,\n"
               "BAATT_TIMEOUT_S (GPU wait limit, default 600).\n");
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {
        {"info", cmd_info}, {"attention", cmd_attention}, {"demo", cmd_demo}, {"bench", cmd_bench}, {"eval", cmd_eval}};
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("baatt %d.%d.%d\n", BAATT_VERSION_MAJOR, BAATT_VERSION_MINOR, BAATT_VERSION_PATCH);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "baatt: unknown command '%s' (try baatt --help)\n", argv[1]);
    return 2;
}
