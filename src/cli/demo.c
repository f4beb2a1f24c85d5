/* baatt demo: BA-Att and dense attention on the same random inputs, side by side, each checked
 * against the CPU reference (on the first head when the problem is large). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "workloads.h"

typedef struct demo {
    baatt_config cfg;
    const char *device;
    int sized; /* the user gave a size: keep it */
    int kv_given;
    const char *workload; /* a src/eval/workloads.c generator; "random": iid N(0,1) at any GQA shape */
    int dtype_given;
} demo;

static const char USAGE[] =
    "usage: baatt demo [--n N] [--heads H] [--kv-heads H] [--dim D] [--batch B] [--dtype f32|f16]\n"
    "                  [--keep R] [--block B] [--sort auto|norm|off] [--covariance auto|on|off]\n"
    "                  [--device D] [--workload NAME]\n"
    "\n"
    "Runs BA-Att and dense attention on random inputs on one device and prints their GPU times, the\n"
    "speed-up, BA-Att's error against dense attention, and both outputs' errors against the CPU\n"
    "reference (BA-Att's with the GPU's own selection and permutations). Default size: 1 x 2 heads x\n"
    "1024 tokens x 64 on a CPU device, 1 x 8 x 8192 x 128 fp16 on a GPU.\n"
    "\n"
    "--workload picks the inputs: clustered (default: content clusters scattered over positions,\n"
    "where block selection matters), one of the other `baatt eval` workloads (iid, needles, rotary,\n"
    "rotary_needle, sinks, mixture, shift), or random (iid N(0,1), any --kv-heads).\n"
    "--sort picks the blocking as in `baatt attention`: auto (default), norm or off.\n"
    "--covariance picks the block logit's covariance term as there: auto (default: lambda 1 or 0\n"
    "per kv head, which lifts real-attention recall; bench/results/accuracy.md), on or off.\n";

static int parse(int argc, char **argv, demo *d)
{
    const char *c = "demo";
    d->cfg = baatt_config_default();
    d->workload = "clustered";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int ok = 1;
        unsigned u;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            exit(0);
        } else if (!strcmp(a, "--n")) {
            ok = cli_arg_u32(c, argc, argv, &i, &u);
            d->cfg.q_len = d->cfg.kv_len = u;
            d->sized = 1;
        } else if (!strcmp(a, "--heads")) {
            ok = cli_arg_u32(c, argc, argv, &i, &d->cfg.heads);
            d->sized = 1;
        } else if (!strcmp(a, "--kv-heads")) {
            ok = cli_arg_u32(c, argc, argv, &i, &d->cfg.kv_heads);
            d->kv_given = 1;
        } else if (!strcmp(a, "--dim")) {
            ok = cli_arg_u32(c, argc, argv, &i, &d->cfg.head_dim);
            d->sized = 1;
        } else if (!strcmp(a, "--batch")) ok = cli_arg_u32(c, argc, argv, &i, &d->cfg.batch);
        else if (!strcmp(a, "--keep")) ok = cli_arg_float(c, argc, argv, &i, &d->cfg.keep_ratio);
        else if (!strcmp(a, "--block")) ok = cli_arg_u32(c, argc, argv, &i, &d->cfg.block_size);
        else if (!strcmp(a, "--sort")) ok = cli_arg_sort(c, argc, argv, &i, &d->cfg.norm_sort);
        else if (!strcmp(a, "--covariance")) ok = cli_arg_cov(c, argc, argv, &i, &d->cfg.covariance);
        else if (!strcmp(a, "--device")) ok = cli_arg_str(c, argc, argv, &i, &d->device);
        else if (!strcmp(a, "--workload")) ok = cli_arg_str(c, argc, argv, &i, &d->workload);
        else if (!strcmp(a, "--dtype")) {
            const char *t;
            ok = cli_arg_str(c, argc, argv, &i, &t);
            d->dtype_given = 1;
            if (ok && !strcmp(t, "f16")) d->cfg.dtype = BAATT_DTYPE_F16;
            else if (ok && !strcmp(t, "f32")) d->cfg.dtype = BAATT_DTYPE_F32;
            else if (ok) return cli_fail(c, "--dtype must be f32 or f16, not '%s'", t), 0;
        } else return cli_fail(c, "unknown option '%s' (try --help)", a), 0;
        if (!ok) return 0;
    }
    int known = !strcmp(d->workload, "random");
    for (const char *const *w = eval_workload_names(); *w && !known; w++) known = !strcmp(*w, d->workload);
    if (!known) return cli_fail(c, "unknown --workload '%s' (see --help)", d->workload), 0;
    return 1;
}

/* Sizes left unset get defaults that suit the device: small on a CPU driver, realistic on a GPU. */
static void default_size(demo *d, const baatt_device_info *dev)
{
    baatt_config *g = &d->cfg;
    int gpu = dev->type != BAATT_DEVICE_CPU;
    if (!g->q_len) g->q_len = g->kv_len = gpu ? 8192 : 1024;
    if (!d->sized) {
        g->heads = g->kv_heads = gpu ? 8 : 2;
        g->head_dim = gpu ? 128 : 64;
    }
    if (!d->dtype_given && gpu && dev->fp16_storage) g->dtype = BAATT_DTYPE_F16;
    if (!d->kv_given || strcmp(d->workload, "random")) g->kv_heads = g->heads; /* workloads: one kv head per head */
}

typedef struct run {
    void *o;
    baatt_run_stats st;
    uint8_t *mask;
    int32_t *pq, *pk;
} run;

static int gpu_run(baatt_context *ctx, const baatt_config *g, const void *q, const void *k, const void *v, run *r)
{
    baatt_plan *plan = NULL;
    size_t on = (size_t)g->batch * g->heads * g->q_len * g->head_dim;
    r->o = malloc(on * baatt_dtype_size(g->dtype));
    baatt_status s = r->o ? baatt_plan_create(ctx, g, &plan) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (!s) s = baatt_plan_run_host(plan, q, k, v, r->o); /* warm-up: pipelines, caches */
    if (!s) s = baatt_plan_run_host(plan, q, k, v, r->o);
    if (!s) s = baatt_plan_stats(plan, &r->st);
    if (!s && !g->dense) {
        r->mask = malloc((size_t)g->batch * g->heads * baatt_config_q_blocks(g) * baatt_config_k_blocks(g));
        r->pq = malloc(4ull * g->batch * g->heads * g->q_len);
        r->pk = malloc(4ull * g->batch * g->kv_heads * g->kv_len);
        s = r->mask && r->pq && r->pk ? baatt_plan_read_mask(plan, r->mask) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
        if (!s) s = baatt_plan_read_perms(plan, r->pq, r->pk);
    }
    baatt_plan_destroy(plan);
    if (s) return cli_fail_status("demo", s, ctx, g->dense ? "dense attention failed" : "BA-Att failed"), 0;
    return 1;
}

/* Checks head 0 of batch 0 (or everything when small) against the CPU reference. */
static void check(const baatt_config *g, const void *q, const void *k, const void *v, const run *r, double *err)
{
    baatt_config one = *g;
    uint64_t flops = 4ull * g->batch * g->heads * g->q_len * g->kv_len * g->head_dim;
    int all = flops < 4e9;
    if (!all) one.batch = one.heads = one.kv_heads = 1;
    size_t on = (size_t)one.batch * one.heads * one.q_len * one.head_dim;
    float *ref = malloc(on * sizeof *ref);
    if (!ref) {
        *err = NAN;
        return;
    }
    baatt_status s = g->dense ? baatt_reference_attention(&one, q, k, v, ref)
                              : baatt_reference_sparse_attention(&one, q, k, v, r->pq, r->pk, r->mask, ref);
    *err = s ? NAN : cli_max_rel(r->o, g->dtype, ref, on);
    free(ref);
}

static void quality(const baatt_config *g, const run *sparse, const run *dense, double *l1, double *cos)
{
    size_t n = (size_t)g->batch * g->heads * g->q_len * g->head_dim;
    double d = 0, s = 0, ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        double a = cli_load(sparse->o, g->dtype, i), b = cli_load(dense->o, g->dtype, i);
        d += fabs(a - b), s += fabs(b), ab += a * b, aa += a * a, bb += b * b;
    }
    *l1 = d / s;
    *cos = ab / sqrt(aa * bb);
}

/* Q, K, V in cfg's dtype: a seeded workload (one kv head per query head), or iid random. */
static int make_inputs(const demo *d, void **q, void **k, void **v)
{
    const baatt_config *g = &d->cfg;
    size_t qn = (size_t)g->batch * g->heads * g->q_len * g->head_dim;
    size_t kn = (size_t)g->batch * g->kv_heads * g->kv_len * g->head_dim;
    if (!strcmp(d->workload, "random")) {
        uint64_t seed = 0x9E3779B97F4A7C15ull;
        *q = cli_random(&seed, g->dtype, qn), *k = cli_random(&seed, g->dtype, kn),
        *v = cli_random(&seed, g->dtype, kn);
        return *q && *k && *v ? 1 : (cli_fail("demo", "out of memory"), 0);
    }
    eval_workload_params wp = {g->batch * g->heads, g->q_len, g->head_dim, 1, EVAL_DEFAULT_JITTER};
    eval_data e = {0};
    baatt_status s = eval_workload_make(d->workload, &wp, &e);
    if (s) return cli_fail("demo", "cannot generate workload '%s': %s", d->workload, baatt_status_string(s)), 0;
    void **dst[3] = {q, k, v};
    const float *src[3] = {e.q, e.k, e.v};
    size_t n[3] = {qn, kn, kn};
    for (int t = 0; t < 3; t++) {
        *dst[t] = malloc(n[t] * baatt_dtype_size(g->dtype) + 1);
        if (*dst[t]) baatt_dtype_convert(src[t], BAATT_DTYPE_F32, *dst[t], g->dtype, n[t]);
    }
    eval_data_free(&e);
    return *q && *k && *v ? 1 : (cli_fail("demo", "out of memory"), 0);
}

static void free_run(run *r)
{
    free(r->o);
    free(r->mask);
    free(r->pq);
    free(r->pk);
}

int cmd_demo(int argc, char **argv)
{
    demo d = {0};
    if (!parse(argc, argv, &d)) return 1;
    baatt_context *ctx = NULL;
    if (!cli_open("demo", d.device, &ctx)) return 1;
    baatt_device_info dev;
    baatt_context_device_info(ctx, &dev);
    default_size(&d, &dev);
    baatt_config *g = &d.cfg;
    char msg[512], line[900];
    baatt_status s = baatt_config_check(g, msg, sizeof msg);
    if (s) {
        baatt_context_destroy(ctx);
        return cli_fail("demo", "%s", msg);
    }
    cli_device_line(&dev, line, sizeof line);
    printf("device : %s\n", line);
    printf("shape  : batch %u, heads %u (kv %u), seq %u, head_dim %u, %s\n", g->batch, g->heads, g->kv_heads, g->q_len,
           g->head_dim, baatt_dtype_name(g->dtype));
    printf("inputs : %s\n", d.workload);
    printf("BA-Att : block %u, keep %.2f, sort %s, covariance %s\n", g->block_size, (double)g->keep_ratio,
           cli_sort_name(g->norm_sort), cli_cov_name(g->covariance));
    fflush(stdout);
    void *q = NULL, *k = NULL, *v = NULL;
    run sp = {0}, dn = {0};
    baatt_config gd = *g;
    gd.dense = 1;
    int rc = 1;
    if (!make_inputs(&d, &q, &k, &v)) goto done;
    if (!gpu_run(ctx, &gd, q, k, v, &dn) || !gpu_run(ctx, g, q, k, v, &sp)) goto done;
    double e_dense, e_sparse, l1, cs;
    fprintf(stderr, "checking against the CPU reference...\n");
    check(&gd, q, k, v, &dn, &e_dense);
    check(g, q, k, v, &sp, &e_sparse);
    quality(g, &sp, &dn, &l1, &cs);
    int partial = 4.0 * g->batch * g->heads * g->q_len * g->kv_len * g->head_dim >= 4e9;
    const char *scope = partial ? " (head 0)" : "";
    printf("dense  : GPU %9.3f ms; max error vs CPU reference%s %.2e\n", dn.st.gpu_ms, scope, e_dense);
    printf("BA-Att : GPU %9.3f ms (sort %.3f, stats %.3f, score %.3f, select %.3f, attend %.3f)\n", sp.st.gpu_ms,
           sp.st.stage_ms[0], sp.st.stage_ms[1], sp.st.stage_ms[2], sp.st.stage_ms[3], sp.st.stage_ms[4]);
    printf("         sparsity %.3f; max error vs CPU reference on the same selection%s %.2e\n", sp.st.sparsity, scope,
           e_sparse);
    printf("         vs dense: relative L1 %.4f, cosine %.5f\n", l1, cs);
    if (sp.st.gpu_ms > 0) printf("speed-up of BA-Att over dense on this device: %.2fx\n", dn.st.gpu_ms / sp.st.gpu_ms);
    double tol = g->dtype == BAATT_DTYPE_F16 ? 2e-2 : 1e-4;
    if (!(e_dense <= tol && e_sparse <= tol)) {
        cli_fail("demo", "GPU output differs from the CPU reference beyond %.0e", tol);
        goto done;
    }
    rc = 0;
done:
    free(q);
    free(k);
    free(v);
    free_run(&sp);
    free_run(&dn);
    if (cli_close("demo", ctx)) rc = 1;
    return rc;
}
