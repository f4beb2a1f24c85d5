/* baatt eval: block-selection quality of BA-Att, its ablations and the published alternatives,
 * on synthetic workloads or .npy tensors (src/eval/eval.h says how it is measured). */
#define _POSIX_C_SOURCE 200809L /* strtok_r, sysconf under a strict -std=c11 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "eval.h"

#define MAX_LIST 64

typedef struct opts {
    const char *workloads, *q, *k, *v, *name, *methods, *json, *device;
    eval_workload_params wp;
    uint32_t block, threads;
    float scale;
    eval_target targets[3 * MAX_LIST];
    uint32_t n_targets;
    const char *method_list[MAX_LIST];
    uint32_t n_methods;
    int outputs, gpu, quiet;
    double drifts[MAX_LIST]; /* the reuse study (--drift, --reuse-steps): on when n_drifts > 0 */
    uint32_t n_drifts, reuse_steps[MAX_LIST], n_reuse, max_step;
} opts;

static const char USAGE[] =
    "usage: baatt eval [--workload LIST | --q q.npy --k k.npy --v v.npy] [options]\n"
    "\n"
    "Runs every block-selection method on the same inputs and measures it against exact dense\n"
    "attention (CPU, fp64): mass recall, relative L1 and L2 error and cosine of the output, and the\n"
    "achieved sparsity (docs/ALGORITHM.md). Progress goes to stderr, a table per workload to stdout.\n"
    "\n"
    "inputs:\n"
    "  --workload LIST     comma-separated synthetic workloads, or 'all' (default: all; see below)\n"
    "  --n N               sequence length of the synthetic workloads (default 2048; 16K is fine)\n"
    "  --heads H           heads (default 4)\n"
    "  --dim D             head_dim, 64 (default) or 128\n"
    "  --seed S            seed of the synthetic workloads (default 1)\n"
    "  --jitter J          token norm jitter sigma of the structured workloads (default 0.25)\n"
    "  --q/--k/--v F.npy   evaluate these instead ([batch, heads, len, d] or [heads, len, d], float32\n"
    "                      or float16; batch is folded into heads, GQA expanded, d < 64 zero-padded)\n"
    "  --name NAME         workload name for .npy inputs (default 'npy')\n"
    "  --scale S           softmax scale (default 1/sqrt(d), of the unpadded d)\n"
    "targets (lists are comma-separated; several kinds may be combined):\n"
    "  --sparsity LIST     target sparsities: every method keeps (1-s)*nk blocks per row on average\n"
    "                      (default 0.5,0.75,0.9 when no target is given)\n"
    "  --keep LIST         keep ratios with step 4's rule k = max(1, ceil(rho * nk)) in every row\n"
    "  --threshold LIST    BA-Att selects by block-map mass >= T; every other method is run at\n"
    "                      BA-Att's achieved sparsity (matched)\n"
    "methods:\n"
    "  --methods LIST      default: baatt,baatt_sort,baatt_cov,meanpool,antidiag8,antidiag16,probe,\n"
    "                      oracle,oracle_unsorted (--methods help lists them all)\n"
    "  --block B           block size 32, 64 (default) or 128\n"
    "  --gpu               take BA-Att's selection from the GPU plan (keep and threshold targets,\n"
    "                      and sparsity targets with a whole number of blocks per row)\n"
    "  --device D          device for --gpu\n"
    "selection reuse across steps (issue 17; on when either option is given):\n"
    "  --drift LIST        per-step drift levels E of the drift model below (default 0.05,0.1,0.2)\n"
    "  --reuse-steps LIST  steps after the selection to report (default 1,2,4,8): at every step up to\n"
    "                      the largest, each method is measured selecting fresh on that step's inputs\n"
    "                      and reusing the selection it made at step 0 (--json has every step)\n"
    "output:\n"
    "  --no-outputs        mass recall and sparsity only (skips the second dense pass: ~2x faster)\n"
    "  --json FILE         also write the records as a JSON list ('-': stdout instead of the table)\n"
    "  --threads N         heads evaluated in parallel (default: the CPU count)\n"
    "  --quiet             no progress lines\n"
    "\n";

static void print_help(void)
{
    fputs(USAGE, stdout);
    fputs(eval_workload_help(), stdout);
}

static void print_methods(void)
{
    for (const char *const *m = eval_method_names(); *m; m++) printf("  %-16s %s\n", *m, eval_method_about(*m));
}

/* Appends the comma-separated numbers of s as targets of one kind. */
static int parse_targets(opts *o, const char *s, eval_target_kind kind)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        double v = strtod(tok, &end);
        if (*end || end == tok || o->n_targets == 3 * MAX_LIST)
            return cli_fail("eval", "bad target value '%s'", tok), 0;
        o->targets[o->n_targets++] = (eval_target){kind, v};
    }
    return 1;
}

/* The comma-separated numbers of s into v (at most MAX_LIST); u: whole numbers >= 1 only, else
 * values in [0, 1]. */
static int parse_list(const char *what, const char *s, double *v, uint32_t *n, int u)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        double x = strtod(tok, &end);
        int ok = u ? x >= 1 && x <= 1000 && x == floor(x) : x >= 0 && x <= 1;
        if (*end || end == tok || *n == MAX_LIST || !ok) return cli_fail("eval", "bad %s value '%s'", what, tok), 0;
        v[(*n)++] = x;
    }
    return *n ? 1 : (cli_fail("eval", "empty %s list", what), 0);
}

static int parse_reuse(opts *o, const char *drift, const char *steps)
{
    double st[MAX_LIST];
    if (!parse_list("--drift", drift ? drift : "0.05,0.1,0.2", o->drifts, &o->n_drifts, 0)) return 0;
    if (!parse_list("--reuse-steps", steps ? steps : "1,2,4,8", st, &o->n_reuse, 1)) return 0;
    for (uint32_t i = 0; i < o->n_reuse; i++) {
        o->reuse_steps[i] = (uint32_t)st[i];
        if (o->reuse_steps[i] > o->max_step) o->max_step = o->reuse_steps[i];
    }
    return 1;
}

static int parse_methods(opts *o)
{
    static char buf[1024];
    if (!strcmp(o->methods, "help")) {
        print_methods();
        exit(0);
    }
    snprintf(buf, sizeof buf, "%s", o->methods);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!eval_method_about(tok)) return cli_fail("eval", "unknown method '%s' (try --methods help)", tok), 0;
        if (o->n_methods == MAX_LIST) return cli_fail("eval", "too many methods"), 0;
        o->method_list[o->n_methods++] = tok;
    }
    return 1;
}

static int parse_option(opts *o, int argc, char **argv, int *i, const char **drift, const char **steps)
{
    const char *c = "eval", *a = argv[*i], *s;
    if (!strcmp(a, "--workload")) return cli_arg_str(c, argc, argv, i, &o->workloads);
    if (!strcmp(a, "--q")) return cli_arg_str(c, argc, argv, i, &o->q);
    if (!strcmp(a, "--k")) return cli_arg_str(c, argc, argv, i, &o->k);
    if (!strcmp(a, "--v")) return cli_arg_str(c, argc, argv, i, &o->v);
    if (!strcmp(a, "--name")) return cli_arg_str(c, argc, argv, i, &o->name);
    if (!strcmp(a, "--methods")) return cli_arg_str(c, argc, argv, i, &o->methods);
    if (!strcmp(a, "--json")) return cli_arg_str(c, argc, argv, i, &o->json);
    if (!strcmp(a, "--device")) return cli_arg_str(c, argc, argv, i, &o->device);
    if (!strcmp(a, "--n")) return cli_arg_u32(c, argc, argv, i, &o->wp.len);
    if (!strcmp(a, "--heads")) return cli_arg_u32(c, argc, argv, i, &o->wp.heads);
    if (!strcmp(a, "--dim")) return cli_arg_u32(c, argc, argv, i, &o->wp.head_dim);
    if (!strcmp(a, "--block")) return cli_arg_u32(c, argc, argv, i, &o->block);
    if (!strcmp(a, "--threads")) return cli_arg_u32(c, argc, argv, i, &o->threads);
    if (!strcmp(a, "--scale")) return cli_arg_float(c, argc, argv, i, &o->scale);
    if (!strcmp(a, "--jitter")) return cli_arg_float(c, argc, argv, i, &o->wp.jitter);
    if (!strcmp(a, "--seed")) {
        unsigned v;
        int ok = cli_arg_u32(c, argc, argv, i, &v);
        o->wp.seed = v;
        return ok;
    }
    if (!strcmp(a, "--sparsity")) return cli_arg_str(c, argc, argv, i, &s) && parse_targets(o, s, EVAL_SPARSITY);
    if (!strcmp(a, "--keep")) return cli_arg_str(c, argc, argv, i, &s) && parse_targets(o, s, EVAL_KEEP);
    if (!strcmp(a, "--threshold")) return cli_arg_str(c, argc, argv, i, &s) && parse_targets(o, s, EVAL_THRESHOLD);
    if (!strcmp(a, "--drift")) return cli_arg_str(c, argc, argv, i, drift);
    if (!strcmp(a, "--reuse-steps")) return cli_arg_str(c, argc, argv, i, steps);
    if (!strcmp(a, "--no-outputs")) return o->outputs = 0, 1;
    if (!strcmp(a, "--gpu")) return o->gpu = 1, 1;
    if (!strcmp(a, "--quiet")) return o->quiet = 1, 1;
    return cli_fail(c, "unknown option '%s' (try --help)", a), 0;
}

static int parse(int argc, char **argv, opts *o)
{
    o->wp = (eval_workload_params){4, 2048, 64, 1, EVAL_DEFAULT_JITTER};
    o->block = 64;
    o->outputs = 1;
    o->name = "npy";
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = cpus > 0 ? (uint32_t)cpus : 1;
    const char *drift = NULL, *steps = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help();
            exit(0);
        }
        if (!parse_option(o, argc, argv, &i, &drift, &steps)) return 0;
    }
    if ((drift || steps) && !parse_reuse(o, drift, steps)) return 0;
    if (o->n_drifts && o->gpu) return cli_fail("eval", "--drift/--reuse-steps measure the CPU selection: no --gpu"), 0;
    if (o->methods && !parse_methods(o)) return 0;
    if ((o->q || o->k || o->v) && !(o->q && o->k && o->v)) return cli_fail("eval", "--q, --k and --v go together"), 0;
    if (o->q && o->workloads) return cli_fail("eval", "give either --workload or --q/--k/--v, not both"), 0;
    if (!o->n_targets) parse_targets(o, "0.5,0.75,0.9", EVAL_SPARSITY);
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Output.
 * ------------------------------------------------------------------------------------------- */

static const char *kind_name(eval_target_kind k)
{
    return k == EVAL_KEEP ? "keep" : k == EVAL_THRESHOLD ? "threshold" : "sparsity";
}

static void print_table(const char *workload, const eval_data *d, uint32_t block, const eval_record *rec, uint32_t n,
                        uint32_t nt)
{
    printf("\n== %s: %u heads, q_len %u, kv_len %u, head_dim %u, block %u\n", workload, d->heads, d->q_len, d->kv_len,
           d->head_dim, block);
    for (uint32_t t = 0; t < nt; t++) {
        printf("-- %s %g\n%-16s %7s %8s %8s %8s %8s %8s\n", kind_name(rec[t].target.kind), rec[t].target.value,
               "method", "keep", "sparsity", "recall", "rel_l1", "rel_l2", "cosine");
        for (uint32_t i = t; i < n; i += nt)
            printf("%-16s %7.4f %8.4f %8.4f %8.4f %8.4f %8.5f\n", rec[i].method, rec[i].keep, rec[i].sparsity,
                   rec[i].mass_recall, rec[i].rel_l1, rec[i].rel_l2, rec[i].cosine);
    }
}

static void json_num(FILE *f, const char *key, double v)
{
    if (isfinite(v)) fprintf(f, ", \"%s\": %.6g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

static void write_records(FILE *f, int *first, const char *workload, const opts *o, const eval_data *d,
                          const eval_record *rec, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const eval_record *r = &rec[i];
        fprintf(f, "%s\n  {\"workload\": ", *first ? "" : ",");
        *first = 0;
        cli_json_string(f, workload);
        fprintf(f, ", \"method\": \"%s\", \"mode\": \"%s\", \"target\": %g", r->method, kind_name(r->target.kind),
                r->target.value);
        json_num(f, "keep", r->keep);
        json_num(f, "sparsity", r->sparsity);
        json_num(f, "mass_recall", r->mass_recall);
        json_num(f, "rel_l1", r->rel_l1);
        json_num(f, "rel_l2", r->rel_l2);
        json_num(f, "cosine", r->cosine);
        json_num(f, "sorted_heads", r->sorted_heads);
        fprintf(f,
                ", \"heads\": %u, \"q_len\": %u, \"kv_len\": %u, \"head_dim\": %u, \"block\": %u, \"seed\": %llu, "
                "\"selection\": \"%s\"}",
                d->heads, d->q_len, d->kv_len, d->head_dim, o->block, o->q ? 0ull : (unsigned long long)o->wp.seed,
                o->gpu && !strcmp(r->method, "baatt") ? "gpu" : "cpu");
    }
}

/* The reuse study's table: per drift and target, every method at step 0 and the listed steps. */
static void print_reuse_table(const char *workload, const eval_data *d, const opts *o, const eval_reuse_record *rec,
                              uint32_t ns)
{
    printf("\n== %s: %u heads, q_len %u, kv_len %u, head_dim %u, block %u: mass recall, fresh selection vs "
           "step 0's reused\n",
           workload, d->heads, d->q_len, d->kv_len, d->head_dim, o->block);
    uint32_t nt = o->n_targets, per_drift = (o->max_step + 1) * ns;
    for (uint32_t e = 0; e < o->n_drifts; e++) {
        for (uint32_t t = 0; t < nt; t++) {
            printf("-- drift %g, %s %g\n%-16s %5s %8s %8s %8s\n", o->drifts[e], kind_name(o->targets[t].kind),
                   o->targets[t].value, "method", "step", "fresh", "reused", "lost");
            for (uint32_t sl = t; sl < ns; sl += nt) {
                for (uint32_t k = 0; k <= o->n_reuse; k++) {
                    uint32_t step = k ? o->reuse_steps[k - 1] : 0;
                    const eval_reuse_record *r = &rec[e * per_drift + step * ns + sl];
                    printf("%-16s %5u %8.4f %8.4f %8.4f\n", r->fresh.method, step, r->fresh.mass_recall,
                           r->reused.mass_recall, r->fresh.mass_recall - r->reused.mass_recall);
                }
            }
        }
    }
}

/* One record's fresh_* or reused_* fields. */
static void reuse_fields(FILE *f, const char *p, const eval_record *x)
{
    const char *keys[] = {"keep", "sparsity", "mass_recall", "rel_l1", "cosine", "sorted_heads"};
    double v[] = {x->keep, x->sparsity, x->mass_recall, x->rel_l1, x->cosine, x->sorted_heads};
    for (int i = 0; i < 6; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s_%s", p, keys[i]);
        json_num(f, key, v[i]);
    }
}

static void write_reuse_records(FILE *f, int *first, const char *workload, const opts *o, const eval_data *d,
                                const eval_reuse_record *rec, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const eval_reuse_record *r = &rec[i];
        fprintf(f, "%s\n  {\"workload\": ", *first ? "" : ",");
        *first = 0;
        cli_json_string(f, workload);
        fprintf(f, ", \"method\": \"%s\", \"mode\": \"%s\", \"target\": %g, \"drift\": %g, \"step\": %u",
                r->fresh.method, kind_name(r->fresh.target.kind), r->fresh.target.value, r->drift, r->step);
        reuse_fields(f, "fresh", &r->fresh);
        reuse_fields(f, "reused", &r->reused);
        fprintf(f, ", \"heads\": %u, \"q_len\": %u, \"kv_len\": %u, \"head_dim\": %u, \"block\": %u, \"seed\": %llu}",
                d->heads, d->q_len, d->kv_len, d->head_dim, o->block, (unsigned long long)o->wp.seed);
    }
}

static void on_progress(void *user, const char *line)
{
    fprintf(stderr, "baatt eval: %s: %s\n", (const char *)user, line);
}

/* ---------------------------------------------------------------------------------------------
 * --gpu: BA-Att's selection from the plan.
 * ------------------------------------------------------------------------------------------- */

typedef struct gpu_sel {
    int32_t *perm_q, *perm_k;
    uint8_t *masks[3 * MAX_LIST];
} gpu_sel;

static void gpu_free(gpu_sel *g)
{
    free(g->perm_q);
    free(g->perm_k);
    for (int i = 0; i < 3 * MAX_LIST; i++) free(g->masks[i]);
    memset(g, 0, sizeof *g);
}

/* The plan config for target t, or 0 if the GPU cannot express it (a fractional block count). */
static int gpu_config(const opts *o, const eval_data *d, const eval_target *t, baatt_config *c)
{
    *c = baatt_config_default();
    c->heads = c->kv_heads = d->heads;
    c->q_len = d->q_len;
    c->kv_len = d->kv_len;
    c->head_dim = d->head_dim;
    c->scale = d->scale;
    c->block_size = o->block;
    c->norm_sort = BAATT_SORT_NORM; /* the `baatt` method is BA-Att as specified, whatever the default */
    c->covariance = BAATT_COVARIANCE_ON;
    if (t->kind == EVAL_THRESHOLD) {
        c->select_mode = BAATT_SELECT_MASS_THRESHOLD;
        c->mass_threshold = (float)t->value;
        return 1;
    }
    double k = t->kind == EVAL_KEEP ? t->value : 1 - t->value, blocks = k * baatt_config_k_blocks(c);
    if (t->kind == EVAL_SPARSITY && fabs(blocks - floor(blocks + 0.5)) > 1e-9) return 0;
    c->keep_ratio = (float)k;
    return 1;
}

/* One plan run for target t: fills g->masks[t] (and the perms on the first run). */
static int gpu_target(const opts *o, baatt_context *ctx, const eval_data *d, uint32_t t, gpu_sel *g)
{
    baatt_config c;
    if (!gpu_config(o, d, &o->targets[t], &c)) return 1;
    baatt_plan *plan = NULL;
    uint64_t qn = (uint64_t)d->heads * d->q_len * d->head_dim;
    float *out = malloc(sizeof(float) * qn);
    size_t nb = (size_t)d->heads * baatt_config_q_blocks(&c) * baatt_config_k_blocks(&c);
    g->masks[t] = malloc(nb);
    baatt_status s = out && g->masks[t] ? baatt_plan_create(ctx, &c, &plan) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (s == BAATT_OK) s = baatt_plan_run_host(plan, d->q, d->k, d->v, out);
    if (s == BAATT_OK) s = baatt_plan_read_mask(plan, g->masks[t]);
    if (s == BAATT_OK && !g->perm_q) {
        g->perm_q = malloc(sizeof(int32_t) * d->heads * d->q_len);
        g->perm_k = malloc(sizeof(int32_t) * d->heads * d->kv_len);
        s = g->perm_q && g->perm_k ? baatt_plan_read_perms(plan, g->perm_q, g->perm_k) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    baatt_plan_destroy(plan);
    free(out);
    if (s != BAATT_OK) return cli_fail_status("eval", s, ctx, "GPU plan"), 0;
    return 1;
}

static int gpu_select(const opts *o, const eval_data *d, gpu_sel *g)
{
    baatt_context *ctx = NULL;
    if (!cli_open("eval", o->device, &ctx)) return 0;
    int ok = 1;
    for (uint32_t t = 0; ok && t < o->n_targets; t++) ok = gpu_target(o, ctx, d, t, g);
    if (cli_close("eval", ctx)) ok = 0;
    return ok;
}

/* ---------------------------------------------------------------------------------------------
 * Driver.
 * ------------------------------------------------------------------------------------------- */

static int eval_one(const opts *o, const char *name, const eval_data *d, FILE *json, int *first)
{
    gpu_sel g = {0};
    if (o->gpu && !gpu_select(o, d, &g)) return gpu_free(&g), 0;
    eval_options eo = {0};
    eo.block_size = o->block;
    eo.methods = o->n_methods ? o->method_list : NULL;
    eo.n_methods = o->n_methods;
    eo.targets = o->targets;
    eo.n_targets = o->n_targets;
    eo.outputs = o->outputs;
    eo.threads = o->threads;
    eo.progress = o->quiet ? NULL : on_progress;
    eo.user = (void *)name;
    if (o->gpu) {
        eo.ext_perm_q = g.perm_q;
        eo.ext_perm_k = g.perm_k;
        eo.ext_masks = (const uint8_t *const *)g.masks;
    }
    char msg[512];
    if (o->n_drifts) { /* the reuse study */
        eval_reuse_record *rr = NULL;
        uint32_t nr = 0;
        baatt_status s =
            eval_reuse_run(d, &eo, o->drifts, o->n_drifts, o->max_step, o->wp.seed, &rr, &nr, msg, sizeof msg);
        if (s != BAATT_OK) return cli_fail("eval", "%s: %s", name, msg), 0;
        uint32_t ns = nr / (o->n_drifts * (o->max_step + 1));
        if (!o->json || strcmp(o->json, "-")) print_reuse_table(name, d, o, rr, ns);
        if (json) write_reuse_records(json, first, name, o, d, rr, nr);
        free(rr);
        return 1;
    }
    eval_record *rec = NULL;
    uint32_t n = 0;
    baatt_status s = eval_run(d, &eo, &rec, &n, msg, sizeof msg);
    gpu_free(&g);
    if (s != BAATT_OK) return cli_fail("eval", "%s: %s", name, msg), 0;
    if (!o->json || strcmp(o->json, "-")) print_table(name, d, o->block, rec, n, o->n_targets);
    if (json) write_records(json, first, name, o, d, rec, n);
    free(rec);
    return 1;
}

static int eval_workloads(const opts *o, FILE *json, int *first)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s", o->workloads && strcmp(o->workloads, "all") ? o->workloads : "");
    const char *const *all = eval_workload_names();
    char *save = NULL, *tok = buf[0] ? strtok_r(buf, ",", &save) : (char *)all[0];
    for (int i = 0; tok; i++) {
        eval_data d;
        baatt_status s = eval_workload_make(tok, &o->wp, &d);
        if (s != BAATT_OK)
            return cli_fail("eval", "workload '%s': %s (names: see --help)", tok, baatt_status_string(s)), 0;
        if (!o->quiet)
            fprintf(stderr, "baatt eval: %s: %u heads x %u tokens x %u\n", tok, d.heads, d.q_len, d.head_dim);
        int ok = eval_one(o, tok, &d, json, first);
        eval_data_free(&d);
        if (!ok) return 0;
        tok = buf[0] ? strtok_r(NULL, ",", &save) : (char *)all[i + 1];
    }
    return 1;
}

static int eval_npy(const opts *o, FILE *json, int *first)
{
    eval_data d;
    char msg[512];
    baatt_status s = eval_data_load(o->q, o->k, o->v, o->scale, &d, msg, sizeof msg);
    if (s != BAATT_OK) return cli_fail("eval", "%s", msg), 0;
    if (!o->quiet)
        fprintf(stderr, "baatt eval: %s: %u heads x %u/%u tokens x %u (scale %g)\n", o->name, d.heads, d.q_len,
                d.kv_len, d.head_dim, (double)d.scale);
    int ok = eval_one(o, o->name, &d, json, first);
    eval_data_free(&d);
    return ok;
}

int cmd_eval(int argc, char **argv)
{
    opts o = {0};
    if (!parse(argc, argv, &o)) return 1;
    FILE *json = NULL;
    const char *in[] = {o.q, o.k, o.v}, *out[] = {o.json && strcmp(o.json, "-") ? o.json : NULL};
    if (!cli_check_outputs("eval", in, 3, out, 1)) return 1;
    if (o.json) json = strcmp(o.json, "-") ? fopen(o.json, "w") : stdout;
    if (o.json && !json) return cli_fail("eval", "cannot write %s", o.json);
    if (json) fputc('[', json);
    int first = 1;
    int ok = o.q ? eval_npy(&o, json, &first) : eval_workloads(&o, json, &first);
    if (json) fputs("\n]\n", json);
    if (json && (json == stdout ? fflush(json) : fclose(json))) ok = (cli_fail("eval", "cannot write %s", o.json), 0);
    return ok ? 0 : 1;
}
