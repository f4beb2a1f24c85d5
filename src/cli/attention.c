/* baatt attention: BA-Att (default) or dense attention on .npy tensors. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct opts {
    const char *q, *k, *v, *out, *device, *mask_out, *pq_out, *pk_out, *lse_out;
    const char *mask_in, *pq_in, *pk_in;
    int json, allow_nonfinite;
    uint32_t steps, refresh;
    baatt_config cfg;
} opts;

static const char USAGE[] =
    "usage: baatt attention --q q.npy --k k.npy --v v.npy --out o.npy [options]\n"
    "\n"
    "Q is [batch, heads, q_len, head_dim] (or [heads, q_len, head_dim]); K and V are\n"
    "[batch, kv_heads, kv_len, head_dim]; float32 or float16, all the same dtype. O has Q's shape\n"
    "and dtype. Runs BA-Att unless --dense is given.\n"
    "\n"
    "options:\n"
    "  --dense             exact dense attention\n"
    "  --keep R            keep ratio of key blocks per query block, in (0, 1] (default 0.5)\n"
    "  --threshold T       select by block-map mass >= T instead of a keep ratio\n"
    "  --block B           block size 32, 64 (default) or 128\n"
    "  --sort M            blocking: auto (default) chooses per kv head, by the recall of 64\n"
    "                      sampled exact query rows (costs ~64/q_len of dense attention), between\n"
    "                      norm (sort Q and K by L2 norm) and off (the original order); the default\n"
    "                      because it is the only mode within 0.01 recall of the best on every\n"
    "                      workload measured, where norm loses up to 0.3 on positional heads (real\n"
    "                      attention) and off up to 0.6 on content-addressed ones\n"
    "                      (bench/results/accuracy.md, \"Defaults\", which also says why block 64)\n"
    "  --no-sort           same as --sort off\n"
    "  --covariance M      the block logit's covariance term: auto (default) chooses lambda 1 or 0\n"
    "                      per kv head on the same sampled rows as --sort auto; the default because\n"
    "                      it lifts recall on real attention at 50% sparsity from 0.773 to 0.778\n"
    "                      (oracle 0.804) and fixes the worst layer, for two more score and select\n"
    "                      passes (bench/results/accuracy.md, \"Selection on real attention\");\n"
    "                      on (lambda 1) or off (plain mean pooling)\n"
    "  --no-cov            same as --covariance off\n"
    "  --min-blocks N, --max-blocks N   per-row limits on selected key blocks\n"
    "  --scale S           softmax scale (default 1/sqrt(head_dim))\n"
    "  --mask-out m.npy    uint8 [batch, heads, q_blocks, k_blocks] selection (sorted-block coords)\n"
    "  --perm-q-out f.npy  int32 [batch, heads, q_len]: original index at each sorted position\n"
    "  --perm-k-out f.npy  int32 [batch, kv_heads, kv_len]\n"
    "  --lse-out l.npy     float32 [batch, heads, q_len] (Q's leading dimensions): each query row's\n"
    "                      log-sum-exp, ln sum_j exp(scale * q.k_j) over the keys it attended to; with\n"
    "                      O it merges partial attentions over disjoint keys (baatt_lse_merge)\n"
    "  --mask-in m.npy     attend on this selection instead of estimating one (no sort, statistics,\n"
    "                      scoring or selection): uint8 [batch, heads, q_blocks, k_blocks] of 0/1, the\n"
    "                      layout --mask-out writes; blocks of the original token order unless\n"
    "                      --perm-q-in / --perm-k-in give permutations; every query block needs a key block\n"
    "  --perm-q-in f.npy   int32 [batch, heads, q_len] and\n"
    "  --perm-k-in f.npy   int32 [batch, kv_heads, kv_len]: what --perm-q-out / --perm-k-out write\n"
    "  --steps S           run S times on the same inputs (default 1), reusing the first run's\n"
    "                      selection: the time a reusing step saves (diffusion models run the same\n"
    "                      shapes at every denoising step); O and the outputs are the last step's\n"
    "  --refresh R         with --steps: estimate a new selection every R steps (default 0: the first only)\n"
    "  --device D          device index or name substring (default: BAATT_DEVICE, else best GPU)\n"
    "  --json              print device, timings and sparsity as one JSON object\n"
    "  --allow-nonfinite   run on inputs holding NaN or infinities (refused by default; how they\n"
    "                      propagate: docs/RELIABILITY.md)\n"
    "\n"
    "Output paths are checked before any GPU work: each must be writable and differ from the\n"
    "inputs and from each other.\n";

static int parse(int argc, char **argv, opts *o)
{
    const char *c = "attention";
    o->cfg = baatt_config_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int ok = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            exit(0);
        } else if (!strcmp(a, "--q")) ok = cli_arg_str(c, argc, argv, &i, &o->q);
        else if (!strcmp(a, "--k")) ok = cli_arg_str(c, argc, argv, &i, &o->k);
        else if (!strcmp(a, "--v")) ok = cli_arg_str(c, argc, argv, &i, &o->v);
        else if (!strcmp(a, "--out")) ok = cli_arg_str(c, argc, argv, &i, &o->out);
        else if (!strcmp(a, "--device")) ok = cli_arg_str(c, argc, argv, &i, &o->device);
        else if (!strcmp(a, "--mask-out")) ok = cli_arg_str(c, argc, argv, &i, &o->mask_out);
        else if (!strcmp(a, "--perm-q-out")) ok = cli_arg_str(c, argc, argv, &i, &o->pq_out);
        else if (!strcmp(a, "--perm-k-out")) ok = cli_arg_str(c, argc, argv, &i, &o->pk_out);
        else if (!strcmp(a, "--lse-out")) ok = cli_arg_str(c, argc, argv, &i, &o->lse_out);
        else if (!strcmp(a, "--mask-in")) ok = cli_arg_str(c, argc, argv, &i, &o->mask_in);
        else if (!strcmp(a, "--perm-q-in")) ok = cli_arg_str(c, argc, argv, &i, &o->pq_in);
        else if (!strcmp(a, "--perm-k-in")) ok = cli_arg_str(c, argc, argv, &i, &o->pk_in);
        else if (!strcmp(a, "--steps")) ok = cli_arg_u32(c, argc, argv, &i, &o->steps);
        else if (!strcmp(a, "--refresh")) ok = cli_arg_u32(c, argc, argv, &i, &o->refresh);
        else if (!strcmp(a, "--dense")) o->cfg.dense = 1;
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--allow-nonfinite")) o->allow_nonfinite = 1;
        else if (!strcmp(a, "--no-sort")) o->cfg.norm_sort = BAATT_SORT_OFF;
        else if (!strcmp(a, "--sort")) ok = cli_arg_sort(c, argc, argv, &i, &o->cfg.norm_sort);
        else if (!strcmp(a, "--no-cov")) o->cfg.covariance = BAATT_COVARIANCE_OFF;
        else if (!strcmp(a, "--covariance")) ok = cli_arg_cov(c, argc, argv, &i, &o->cfg.covariance);
        else if (!strcmp(a, "--keep")) ok = cli_arg_float(c, argc, argv, &i, &o->cfg.keep_ratio);
        else if (!strcmp(a, "--threshold")) {
            ok = cli_arg_float(c, argc, argv, &i, &o->cfg.mass_threshold);
            o->cfg.select_mode = BAATT_SELECT_MASS_THRESHOLD;
        } else if (!strcmp(a, "--block")) ok = cli_arg_u32(c, argc, argv, &i, &o->cfg.block_size);
        else if (!strcmp(a, "--min-blocks")) ok = cli_arg_u32(c, argc, argv, &i, &o->cfg.min_blocks);
        else if (!strcmp(a, "--max-blocks")) ok = cli_arg_u32(c, argc, argv, &i, &o->cfg.max_blocks);
        else if (!strcmp(a, "--scale")) ok = cli_arg_float(c, argc, argv, &i, &o->cfg.scale);
        else return cli_fail(c, "unknown option '%s' (try --help)", a), 0;
        if (!ok) return 0;
    }
    if (!o->q || !o->k || !o->v || !o->out) return cli_fail(c, "--q, --k, --v and --out are required (try --help)"), 0;
    if ((o->pq_in || o->pk_in) && !o->mask_in) return cli_fail(c, "--perm-q-in and --perm-k-in need --mask-in"), 0;
    if (o->mask_in && o->cfg.dense) return cli_fail(c, "--mask-in and --dense exclude each other"), 0;
    if (o->mask_in && o->refresh)
        return cli_fail(c, "--refresh estimates selections: it cannot go with --mask-in, whose selection is given"), 0;
    if (o->steps == 0 && o->refresh) return cli_fail(c, "--refresh needs --steps"), 0;
    if (!o->steps) o->steps = 1;
    const char *in[] = {o->q, o->k, o->v, o->mask_in, o->pq_in, o->pk_in},
               *out[] = {o->out, o->mask_out, o->pq_out, o->pk_out, o->lse_out};
    if (!cli_check_outputs(c, in, 6, out, 5)) return 0;
    o->cfg.lse = o->lse_out != NULL;
    if (o->cfg.dense && (o->mask_out || o->pq_out || o->pk_out))
        fprintf(stderr,
                "baatt attention: note: with --dense the mask is all ones and the permutations are identities\n");
    return 1;
}

/* Reads one tensor and checks rank, dtype and (unless allowed) finiteness; a rank-3 tensor is
 * taken as batch 1. */
static int load(const opts *o, const char *path, const char *name, baatt_npy *t, uint64_t shape[4])
{
    char msg[512];
    baatt_status s = baatt_npy_read(path, t, msg, sizeof msg);
    if (s) return cli_fail("attention", "%s: %s", name, msg), 0;
    if (t->dtype != BAATT_NPY_F32 && t->dtype != BAATT_NPY_F16)
        return cli_fail("attention", "%s (%s): dtype must be float32 or float16", name, path), 0;
    if (t->rank != 4 && t->rank != 3)
        return cli_fail("attention", "%s (%s): expected rank 4 [batch, heads, len, head_dim] (or 3), got rank %u", name,
                        path, t->rank),
               0;
    baatt_dtype dt = t->dtype == BAATT_NPY_F16 ? BAATT_DTYPE_F16 : BAATT_DTYPE_F32;
    if (!o->allow_nonfinite && !cli_check_finite("attention", name, path, t->data, dt, t->shape, t->rank)) return 0;
    int off = t->rank == 3;
    shape[0] = 1;
    for (uint32_t i = 0; i < t->rank; i++) shape[i + off] = t->shape[i];
    return 1;
}

static int shapes(opts *o, const baatt_npy *q, const baatt_npy *k, const baatt_npy *v, uint64_t sq[4], uint64_t sk[4],
                  uint64_t sv[4])
{
    const char *c = "attention";
    if (q->dtype != k->dtype || q->dtype != v->dtype) return cli_fail(c, "q, k and v must have the same dtype"), 0;
    for (int i = 0; i < 4; i++)
        if (sk[i] != sv[i])
            return cli_fail(c, "k and v shapes differ (dimension %d: %llu vs %llu)", i, (unsigned long long)sk[i],
                            (unsigned long long)sv[i]),
                   0;
    if (sq[0] != sk[0])
        return cli_fail(c, "q and k batch sizes differ (%llu vs %llu)", (unsigned long long)sq[0],
                        (unsigned long long)sk[0]),
               0;
    if (sq[3] != sk[3])
        return cli_fail(c, "q and k head_dim differ (%llu vs %llu)", (unsigned long long)sq[3],
                        (unsigned long long)sk[3]),
               0;
    for (int i = 0; i < 4; i++)
        if (sq[i] > 0xffffffffu || sk[i] > 0xffffffffu) return cli_fail(c, "a dimension exceeds 2^32-1"), 0;
    baatt_config *g = &o->cfg;
    g->batch = (uint32_t)sq[0];
    g->heads = (uint32_t)sq[1];
    g->q_len = (uint32_t)sq[2];
    g->head_dim = (uint32_t)sq[3];
    g->kv_heads = (uint32_t)sk[1];
    g->kv_len = (uint32_t)sk[2];
    g->dtype = q->dtype == BAATT_NPY_F16 ? BAATT_DTYPE_F16 : BAATT_DTYPE_F32;
    return 1;
}

static int save(const char *path, baatt_npy_dtype dt, uint32_t rank, const uint64_t *shape, const void *data)
{
    char msg[512];
    baatt_status s = baatt_npy_write(path, dt, rank, shape, data, msg, sizeof msg);
    if (s) return cli_fail("attention", "%s", msg), 0;
    return 1;
}

/* "a, b, c" of n dimensions into buf. */
static void dims(char *buf, size_t size, const uint64_t *shape, uint32_t n)
{
    buf[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, size - used, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    }
}

/* Reads one selection input: its dtype, and exactly the shape the plan's selection has. */
static int load_selection_part(const char *path, const char *name, baatt_npy_dtype dt, uint32_t rank,
                               const uint64_t *want, const char *hint, baatt_npy *t)
{
    const char *c = "attention";
    char msg[512], got[200], need[200];
    baatt_status s = baatt_npy_read(path, t, msg, sizeof msg);
    if (s) return cli_fail(c, "%s: %s", name, msg), 0;
    if (t->dtype != dt)
        return cli_fail(c, "%s (%s): dtype must be %s", name, path,
                        dt == BAATT_NPY_U8 ? "uint8 (0 or 1; save a bool mask with .astype(np.uint8))" : "int32"),
               0;
    int same = t->rank == rank;
    for (uint32_t i = 0; same && i < rank; i++) same = t->shape[i] == want[i];
    if (same) return 1;
    dims(got, sizeof got, t->shape, t->rank);
    dims(need, sizeof need, want, rank);
    return cli_fail(c, "%s (%s): shape [%s], these inputs need [%s]%s", name, path, got, need, hint), 0;
}

/* --mask-in (and --perm-*-in) given to the plan, which then attends on them at every step. */
static int give_selection(const opts *o, baatt_plan *plan, baatt_context *ctx)
{
    const baatt_config *g = &o->cfg;
    uint64_t ms[4] = {g->batch, g->heads, baatt_config_q_blocks(g), baatt_config_k_blocks(g)};
    uint64_t sq[3] = {g->batch, g->heads, g->q_len}, sk[3] = {g->batch, g->kv_heads, g->kv_len};
    baatt_npy m = {0}, pq = {0}, pk = {0};
    char hint[64];
    snprintf(hint, sizeof hint, " (blocks of --block %u)", g->block_size);
    int ok = load_selection_part(o->mask_in, "--mask-in", BAATT_NPY_U8, 4, ms, hint, &m) &&
             (!o->pq_in || load_selection_part(o->pq_in, "--perm-q-in", BAATT_NPY_I32, 3, sq, "", &pq)) &&
             (!o->pk_in || load_selection_part(o->pk_in, "--perm-k-in", BAATT_NPY_I32, 3, sk, "", &pk));
    if (ok) {
        baatt_status s = baatt_plan_set_selection(plan, m.data, pq.data, pk.data);
        if (s) ok = 0, cli_fail_status("attention", s, ctx, "--mask-in");
    }
    baatt_npy_free(&m);
    baatt_npy_free(&pq);
    baatt_npy_free(&pk);
    return ok;
}

/* Reads a result back; a failure (or no memory) prints why. */
static int read_back(baatt_status s, const void *buf, const char *what)
{
    if (!buf) return cli_fail("attention", "out of memory for the %s", what), 0;
    if (s) return cli_fail("attention", "cannot read the %s: %s", what, baatt_status_string(s)), 0;
    return 1;
}

/* --lse-out: Q's shape without head_dim. */
static int write_lse(const opts *o, baatt_plan *plan, const baatt_npy *q)
{
    const baatt_config *g = &o->cfg;
    float *lse = malloc(4ull * g->batch * g->heads * g->q_len);
    int ok = read_back(lse ? baatt_plan_read_lse(plan, lse) : BAATT_OK, lse, "log-sum-exp") &&
             save(o->lse_out, BAATT_NPY_F32, q->rank - 1, q->shape, lse);
    free(lse);
    return ok;
}

static int write_outputs(const opts *o, baatt_plan *plan, const baatt_npy *q, const void *out)
{
    const baatt_config *g = &o->cfg;
    if (!save(o->out, q->dtype, q->rank, q->shape, out)) return 0;
    if (o->lse_out && !write_lse(o, plan, q)) return 0;
    if (o->mask_out) {
        uint32_t nq = baatt_config_q_blocks(g), nk = baatt_config_k_blocks(g);
        /* a dense plan reports its mask on the configured block grid if valid, else 64 (plan.c fill_push) */
        int valid = g->block_size == 32 || g->block_size == 64 || g->block_size == 128;
        if (g->dense && !valid) nq = (g->q_len + 63) / 64, nk = (g->kv_len + 63) / 64;
        uint64_t shape[4] = {g->batch, g->heads, nq, nk};
        uint8_t *m = malloc(shape[0] * shape[1] * nq * nk + 1);
        int ok = read_back(m ? baatt_plan_read_mask(plan, m) : BAATT_OK, m, "selection mask") &&
                 save(o->mask_out, BAATT_NPY_U8, 4, shape, m);
        free(m);
        if (!ok) return 0;
    }
    int32_t *pq = NULL, *pk = NULL;
    if (o->pq_out) pq = malloc(4ull * g->batch * g->heads * g->q_len);
    if (o->pk_out) pk = malloc(4ull * g->batch * g->kv_heads * g->kv_len);
    int ok = (!o->pq_out || pq) && (!o->pk_out || pk);
    if (!ok) cli_fail("attention", "out of memory for the permutations");
    if (ok && (pq || pk)) ok = read_back(baatt_plan_read_perms(plan, pq, pk), "", "permutations");
    uint64_t sq[3] = {g->batch, g->heads, g->q_len}, sk[3] = {g->batch, g->kv_heads, g->kv_len};
    if (ok && pq) ok = save(o->pq_out, BAATT_NPY_I32, 3, sq, pq);
    if (ok && pk) ok = save(o->pk_out, BAATT_NPY_I32, 3, sk, pk);
    free(pq);
    free(pk);
    return ok;
}

/* GPU time of the steps that estimated their selection and of those that reused one. */
typedef struct steps {
    uint32_t estimated, reused;
    double estimate_ms, reuse_ms; /* sums */
} steps;

static double mean(double sum, uint32_t n) { return n ? sum / n : 0.0; }

/* heads: kv heads (over the batch) that got the norm-sorted blocking, and lambda 1. */
static void report(const opts *o, const baatt_device_info *dev, const baatt_run_stats *st, const char *kernel,
                   const uint32_t heads[2], const steps *sp)
{
    uint32_t sorted_heads = heads[0];
    const baatt_config *g = &o->cfg;
    char line[900];
    cli_device_line(dev, line, sizeof line);
    if (!o->json) {
        printf("device: %s\n", line);
        printf("%s: batch %u, heads %u/%u, q_len %u, kv_len %u, head_dim %u, %s\n", g->dense ? "dense" : "BA-Att",
               g->batch, g->heads, g->kv_heads, g->q_len, g->kv_len, g->head_dim, baatt_dtype_name(g->dtype));
        printf("GPU time: %.3f ms (attention kernel: %s)", st->gpu_ms, kernel);
        if (!g->dense) {
            printf(" (");
            for (int s = 0; s < BAATT_STAGE_COUNT; s++)
                printf("%s%s %.3f", s ? ", " : "", baatt_stage_name(s), st->stage_ms[s]);
            printf(")\nsparsity: %.4f\n%s%s, sorted kv heads: %u of %u", st->sparsity,
                   o->mask_in ? "selection: given (--mask-in)" : "sort: ",
                   o->mask_in ? "" : cli_sort_name(g->norm_sort), sorted_heads, g->batch * g->kv_heads);
            if (!o->mask_in)
                printf("\ncovariance: %s, lambda-1 kv heads: %u of %u", cli_cov_name(g->covariance), heads[1],
                       g->batch * g->kv_heads);
            if (o->steps > 1)
                printf("\nsteps: %u; estimating %u, mean GPU time %.3f ms; reusing %u, mean GPU time %.3f ms", o->steps,
                       sp->estimated, mean(sp->estimate_ms, sp->estimated), sp->reused, mean(sp->reuse_ms, sp->reused));
        }
        printf("\n");
        return;
    }
    printf("{\"device\": ");
    cli_json_string(stdout, dev->name);
    printf(", \"driver\": ");
    cli_json_string(stdout, dev->driver_info);
    printf(", \"method\": \"%s\", \"batch\": %u, \"heads\": %u, \"kv_heads\": %u, \"q_len\": %u, \"kv_len\": %u, "
           "\"head_dim\": %u, \"dtype\": \"%s\", \"kernel\": \"%s\", \"gpu_ms\": %.6f",
           g->dense ? "dense" : "baatt", g->batch, g->heads, g->kv_heads, g->q_len, g->kv_len, g->head_dim,
           baatt_dtype_name(g->dtype), kernel, st->gpu_ms);
    if (!g->dense) {
        /* "sort" stays a boolean (sorting enabled) for existing readers; "sort_mode" says which */
        printf(", \"block\": %u, \"sort\": %s, \"sort_mode\": \"%s\", \"sorted_heads\": %u, \"covariance\": %s, "
               "\"covariance_mode\": \"%s\", \"cov_heads\": %u, ",
               g->block_size, g->norm_sort ? "true" : "false", cli_sort_name(g->norm_sort), sorted_heads,
               g->covariance ? "true" : "false", cli_cov_name(g->covariance), heads[1]);
        if (g->select_mode == BAATT_SELECT_KEEP_RATIO) printf("\"keep\": %g", (double)g->keep_ratio);
        else printf("\"threshold\": %g", (double)g->mass_threshold);
        printf(", \"sparsity\": %.6f, \"stages_ms\": {", st->sparsity);
        for (int s = 0; s < BAATT_STAGE_COUNT; s++)
            printf("%s\"%s\": %.6f", s ? ", " : "", baatt_stage_name(s), st->stage_ms[s]);
        printf("}, \"selection\": \"%s\", \"steps\": %u, \"refresh\": %u, \"estimating_steps\": %u, "
               "\"estimate_ms_mean\": %.6f, \"reusing_steps\": %u, \"reuse_ms_mean\": %.6f",
               o->mask_in ? "given" : "estimated", o->steps, o->refresh, sp->estimated,
               mean(sp->estimate_ms, sp->estimated), sp->reused, mean(sp->reuse_ms, sp->reused));
    }
    printf("}\n");
}

/* n[0]: kv heads with the norm-sorted blocking, n[1]: with lambda 1. */
static int count_heads(baatt_plan *plan, const baatt_config *g, baatt_context *ctx, uint32_t n[2])
{
    uint32_t heads = g->batch * g->kv_heads;
    uint8_t *got = malloc(heads);
    if (!got) return cli_fail("attention", "out of memory"), 0;
    baatt_status s = BAATT_OK;
    for (int w = 0; w < 2 && !s; w++) {
        s = w ? baatt_plan_read_head_covariance(plan, got) : baatt_plan_read_head_sorted(plan, got);
        n[w] = 0;
        for (uint32_t i = 0; !s && i < heads; i++) n[w] += got[i];
    }
    free(got);
    if (s) cli_fail_status("attention", s, ctx, "cannot read the per-head choice");
    return !s;
}

int cmd_attention(int argc, char **argv)
{
    opts o = {0};
    if (!parse(argc, argv, &o)) return 1;
    baatt_npy q = {0}, k = {0}, v = {0};
    uint64_t sq[4], sk[4], sv[4];
    int rc = 1;
    baatt_context *ctx = NULL;
    baatt_plan *plan = NULL;
    void *out = NULL;
    if (!load(&o, o.q, "--q", &q, sq) || !load(&o, o.k, "--k", &k, sk) || !load(&o, o.v, "--v", &v, sv)) goto done;
    if (!shapes(&o, &q, &k, &v, sq, sk, sv)) goto done;
    char msg[512];
    baatt_status s = baatt_config_check(&o.cfg, msg, sizeof msg);
    if (s) {
        cli_fail("attention", "%s", msg);
        goto done;
    }
    if (!cli_open("attention", o.device, &ctx)) goto done;
    s = baatt_plan_create(ctx, &o.cfg, &plan);
    if (s) {
        cli_fail_status("attention", s, ctx, "cannot create the plan");
        goto done;
    }
    out = malloc(q.count * baatt_dtype_size(o.cfg.dtype) + 1);
    if (!out) {
        cli_fail("attention", "out of memory");
        goto done;
    }
    if (o.mask_in && !give_selection(&o, plan, ctx)) goto done;
    baatt_run_stats st;
    steps sp = {0};
    for (uint32_t step = 0; step < o.steps; step++) {
        /* a given selection at every step; else an estimate at the first and every refresh-th */
        int reuse = o.mask_in || (step && !(o.refresh && step % o.refresh == 0));
        s = baatt_plan_set_reuse(plan, reuse);
        if (!s) s = baatt_plan_run_host(plan, q.data, k.data, v.data, out);
        if (s) {
            cli_fail_status("attention", s, ctx, "run failed");
            goto done;
        }
        s = baatt_plan_stats(plan, &st);
        if (s) {
            cli_fail_status("attention", s, ctx, "cannot read results");
            goto done;
        }
        if (reuse && !o.cfg.dense) sp.reused++, sp.reuse_ms += st.gpu_ms;
        else sp.estimated++, sp.estimate_ms += st.gpu_ms;
    }
    if (!write_outputs(&o, plan, &q, out)) goto done;
    uint32_t heads[2];
    if (!count_heads(plan, &o.cfg, ctx, heads)) goto done;
    baatt_device_info dev;
    baatt_context_device_info(ctx, &dev);
    report(&o, &dev, &st, baatt_plan_path(plan, BAATT_STAGE_ATTEND), heads, &sp);
    rc = 0;
done:
    free(out);
    baatt_plan_destroy(plan);
    if (cli_close("attention", ctx)) rc = 1;
    baatt_npy_free(&q);
    baatt_npy_free(&k);
    baatt_npy_free(&v);
    return rc;
}
