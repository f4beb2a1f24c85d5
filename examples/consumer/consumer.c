/*
 * The smallest program against an installed baatt: checks the library's run-time version against
 * the header, runs dense attention on host arrays on baatt's own device, and compares with the CPU
 * reference. Built by CI from the installed package both through find_package(baatt) and through
 * pkg-config (README, "Using the installed library"). Exit 0: match; 1: failure; 77: no device.
 */
#include <baatt.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_version(void)
{
    char header[32];
    snprintf(header, sizeof header, "%d.%d.%d", BAATT_VERSION_MAJOR, BAATT_VERSION_MINOR, BAATT_VERSION_PATCH);
    if (strcmp(header, baatt_version()) != 0) {
        fprintf(stderr, "consumer: header %s but library %s\n", header, baatt_version());
        return 0;
    }
    return 1;
}

/* Dense fp32 attention, [1, 2 heads, 200, 64]: not a multiple of any tile size. */
static int run(baatt_context *ctx)
{
    baatt_config cfg = baatt_config_default();
    cfg.batch = 1, cfg.heads = cfg.kv_heads = 2, cfg.q_len = cfg.kv_len = 200, cfg.head_dim = 64, cfg.dense = 1;
    size_t n = (size_t)cfg.heads * cfg.q_len * cfg.head_dim;
    float *qkv = malloc(3 * n * sizeof *qkv), *o = malloc(n * sizeof *o), *want = malloc(n * sizeof *want);
    baatt_plan *plan = NULL;
    int ok = qkv && o && want && baatt_plan_create(ctx, &cfg, &plan) == BAATT_OK;
    if (ok) {
        for (size_t i = 0; i < 3 * n; i++) qkv[i] = (float)sin(0.37 * (double)i) * 2.0f;
        for (size_t i = 0; i < n; i++) o[i] = NAN;
        ok = baatt_plan_run_host(plan, qkv, qkv + n, qkv + 2 * n, o) == BAATT_OK &&
             baatt_reference_attention(&cfg, qkv, qkv + n, qkv + 2 * n, want) == BAATT_OK;
    }
    if (!ok) fprintf(stderr, "consumer: %s\n", baatt_context_error(ctx));
    double err = 0;
    for (size_t i = 0; ok && i < n; i++) {
        double d = fabs((double)o[i] - want[i]);
        err = isnan(d) || d > err ? (isnan(d) ? INFINITY : d) : err;
    }
    if (ok)
        printf("consumer: baatt %s, dense attention max |error| %.3g against the CPU reference\n", baatt_version(),
               err);
    baatt_plan_destroy(plan);
    free(qkv), free(o), free(want);
    return ok && err <= 1e-4;
}

int main(void)
{
    if (!check_version()) return 1;
    baatt_context *ctx = NULL;
    baatt_status s = baatt_context_create(NULL, &ctx);
    if (s == BAATT_ERROR_NO_VULKAN || s == BAATT_ERROR_NO_DEVICE) {
        fprintf(stderr, "consumer: skipped: %s\n", baatt_context_error(ctx));
        baatt_context_destroy(ctx);
        return 77;
    }
    int ok = s == BAATT_OK && run(ctx);
    if (s != BAATT_OK) fprintf(stderr, "consumer: baatt_context_create: %s\n", baatt_context_error(ctx));
    baatt_context_destroy(ctx);
    return ok ? 0 : 1;
}
