/* Soak: plans created and destroyed over and over, thousands of small runs, with host memory (the
 * malloc heap and the resident set) and device memory (live vkAllocateMemory bytes, counted through
 * the context's function table) measured: flat after a warm-up, every output bitwise equal to the
 * first run of its config, every first run against the CPU reference.
 * Usage: test_soak [cycles] (default 40 cycles of 50 runs). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "internal.h"
#include "runtime.h"

enum { RUNS = 50, WARMUP = 4, NCFG = 3, MAX_ALLOCS = 1024 };

/* Under AddressSanitizer mallinfo2 sees nothing and freed memory sits in its quarantine (the
 * resident set grows by design): the host bounds are then LeakSanitizer's job. */
#if defined(__SANITIZE_ADDRESS__)
#define HOST_MEMORY_MEASURED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HOST_MEMORY_MEASURED 0
#endif
#endif
#ifndef HOST_MEMORY_MEASURED
#define HOST_MEMORY_MEASURED 1
#endif
static int g_cycles = 40;

/* ---- device memory: live allocations through the context's table ---- */

static PFN_vkAllocateMemory g_real_alloc;
static PFN_vkFreeMemory g_real_free;
static struct {
    VkDeviceMemory mem;
    VkDeviceSize size;
} g_allocs[MAX_ALLOCS];
static VkDeviceSize g_live_bytes;
static int g_untracked;

static VKAPI_ATTR VkResult VKAPI_CALL counting_alloc(VkDevice d, const VkMemoryAllocateInfo *ai,
                                                     const VkAllocationCallbacks *a, VkDeviceMemory *m)
{
    VkResult r = g_real_alloc(d, ai, a, m);
    if (r != VK_SUCCESS) return r;
    int i = 0;
    while (i < MAX_ALLOCS && g_allocs[i].mem) i++;
    if (i == MAX_ALLOCS) g_untracked++;
    else g_allocs[i].mem = *m, g_allocs[i].size = ai->allocationSize, g_live_bytes += ai->allocationSize;
    return r;
}

static VKAPI_ATTR void VKAPI_CALL counting_free(VkDevice d, VkDeviceMemory m, const VkAllocationCallbacks *a)
{
    for (int i = 0; m && i < MAX_ALLOCS; i++)
        if (g_allocs[i].mem == m) g_live_bytes -= g_allocs[i].size, g_allocs[i].mem = VK_NULL_HANDLE;
    g_real_free(d, m, a);
}

/* ---- host memory ---- */

typedef struct usage {
    double heap_mib, rss_mib, device_mib;
} usage;

static usage measure(void)
{
    struct mallinfo2 mi = mallinfo2();
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    usage u = {(double)(mi.uordblks + mi.hblkhd) / 1048576.0, (double)resident * sysconf(_SC_PAGESIZE) / 1048576.0,
               (double)g_live_bytes / 1048576.0};
    return u;
}

/* ---- the work ---- */

typedef struct job {
    baatt_config cfg;
    void *q, *k, *v, *o, *want;
    size_t qn, kn;
} job;
static job g_jobs[NCFG];

static baatt_config make_cfg(int i)
{
    baatt_config c = baatt_config_default();
    c.heads = 2;
    c.kv_heads = 1;
    c.q_len = 96;
    c.kv_len = 160;
    c.head_dim = 64;
    c.block_size = 32;
    if (i == 1) c.dense = 1, c.dtype = BAATT_DTYPE_F16;
    if (i == 2) c.norm_sort = BAATT_SORT_AUTO, c.select_mode = BAATT_SELECT_MASS_THRESHOLD;
    return c;
}

static void job_make(job *j, int i, uint64_t *rng)
{
    j->cfg = make_cfg(i);
    j->qn = (size_t)j->cfg.heads * j->cfg.q_len * j->cfg.head_dim;
    j->kn = (size_t)j->cfg.kv_heads * j->cfg.kv_len * j->cfg.head_dim;
    j->q = th_random_tensor(rng, j->cfg.dtype, j->qn, 1.0f);
    j->k = th_random_tensor(rng, j->cfg.dtype, j->kn, 1.0f);
    j->v = th_random_tensor(rng, j->cfg.dtype, j->kn, 1.0f);
    j->o = malloc(j->qn * baatt_dtype_size(j->cfg.dtype));
    j->want = NULL;
}

/* The first output of a config: against the CPU reference (the full BA-Att oracle). */
static void check_first(const job *j)
{
    float *ref = malloc(j->qn * sizeof *ref), *got = th_to_float(j->o, j->cfg.dtype, j->qn);
    assert_int_equal(baatt_reference_baatt(&j->cfg, j->q, j->k, j->v, ref, NULL, NULL, NULL), BAATT_OK);
    double atol, rtol;
    th_tolerance(j->cfg.dtype, &atol, &rtol);
    assert_true(th_compare(got, ref, j->qn, atol, rtol, "soak, first run") <= 1);
    free(ref), free(got);
}

/* One cycle: a fresh plan for config i, RUNS runs, each bitwise equal to the config's first;
 * the plan's device memory is the same after its last run as after its first. */
static void cycle(int i)
{
    VkDeviceSize after_first = 0;
    job *j = &g_jobs[i];
    size_t bytes = j->qn * baatt_dtype_size(j->cfg.dtype);
    baatt_plan *plan = NULL;
    assert_int_equal(baatt_plan_create(th_ctx, &j->cfg, &plan), BAATT_OK);
    for (int r = 0; r < RUNS; r++) {
        th_poison(j->o, j->cfg.dtype, j->qn);
        assert_int_equal(baatt_plan_run_host(plan, j->q, j->k, j->v, j->o), BAATT_OK);
        if (!j->want) {
            check_first(j);
            j->want = malloc(bytes);
            memcpy(j->want, j->o, bytes);
        }
        assert_memory_equal(j->o, j->want, bytes);
        if (!r) after_first = g_live_bytes;
    }
    assert_true(g_live_bytes == after_first);
    baatt_plan_destroy(plan);
}

static void plans_and_runs_leave_memory_flat(void **s)
{
    (void)s;
    uint64_t rng = th_seed();
    for (int i = 0; i < NCFG; i++) job_make(&g_jobs[i], i, &rng);
    g_real_alloc = th_ctx->vk.vkAllocateMemory;
    g_real_free = th_ctx->vk.vkFreeMemory;
    th_ctx->vk.vkAllocateMemory = counting_alloc;
    th_ctx->vk.vkFreeMemory = counting_free;
    usage base = {0}, peak = {0};
    for (int c = 0; c < g_cycles; c++) {
        cycle(c % NCFG);
        usage u = measure();
        if (c == WARMUP - 1) base = u;
        if (c >= WARMUP) {
            peak.heap_mib = u.heap_mib > peak.heap_mib ? u.heap_mib : peak.heap_mib;
            peak.rss_mib = u.rss_mib > peak.rss_mib ? u.rss_mib : peak.rss_mib;
            peak.device_mib = u.device_mib > peak.device_mib ? u.device_mib : peak.device_mib;
        }
    }
    th_ctx->vk.vkAllocateMemory = g_real_alloc;
    th_ctx->vk.vkFreeMemory = g_real_free;
    fprintf(stderr,
            "[ soak     ] %d plans, %d runs; after warm-up: heap %.2f -> max %.2f MiB, resident %.1f -> max %.1f MiB, "
            "device %.3f -> max %.3f MiB (between plans)\n",
            g_cycles, g_cycles * RUNS, base.heap_mib, peak.heap_mib, base.rss_mib, peak.rss_mib, base.device_mib,
            peak.device_mib);
    assert_int_equal(g_untracked, 0);
    /* Between plans the context holds no device memory at all. The heap may move by allocator
     * and validation-layer bookkeeping (about 0.1 MiB on lavapipe); a leak of 256 bytes a run
     * would add 0.45 MiB. */
    assert_true(peak.device_mib == 0 && base.device_mib == 0);
    if (HOST_MEMORY_MEASURED) {
        assert_true(peak.heap_mib - base.heap_mib < 0.4);
        assert_true(peak.rss_mib - base.rss_mib < 16.0);
    }
    for (int i = 0; i < NCFG; i++)
        free(g_jobs[i].q), free(g_jobs[i].k), free(g_jobs[i].v), free(g_jobs[i].o), free(g_jobs[i].want);
}

int main(int argc, char **argv)
{
    if (argc > 1 && atoi(argv[1]) > WARMUP) g_cycles = atoi(argv[1]);
    const struct CMUnitTest tests[] = {cmocka_unit_test(plans_and_runs_leave_memory_flat)};
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
