/* baatt bench: GPU-timestamp timing of every BA-Att stage, and of dense attention, over a sweep of
 * sequence lengths, keep ratios and dtypes.
 *
 * Why it is built this way:
 *  - inputs live in device-local buffers filled once per size (a host round trip per repetition
 *    would dominate and is not what an embedding application pays);
 *  - each repetition records the plan into a fresh command buffer (baatt_plan_record, the
 *    embedding path) and reads the plan's own GPU timestamps, so host submission jitter is out;
 *  - repetitions rotate among several input sets so that a set small enough for the L2 cache
 *    does not flatter the numbers; the median is reported, with the minimum beside it;
 *  - every failure of one configuration (out of memory, too large, unsupported) is reported and
 *    skipped, and the JSON file is rewritten after each configuration, so a sweep that is cut
 *    short still leaves valid, complete records of what ran. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "rng.h"

#define MAX_LIST 32
#define MAX_SETS 8
#define STAGING_CHUNK (256ull << 20) /* bounds the host memory of an upload */
#define CHECK_MAX_N 4096             /* the CPU reference of larger sizes takes too long */
/* Returns a failed library call's status from the enclosing function. */
#define CLI_TRY(expr)                                                                                                  \
    do {                                                                                                               \
        baatt_status s_ = (expr);                                                                                      \
        if (s_ != BAATT_OK) return s_;                                                                                 \
    } while (0)

typedef struct bopts {
    uint32_t n[MAX_LIST];
    float keep[MAX_LIST];
    baatt_dtype dt[MAX_LIST];
    int nn, nkeep, ndt;
    unsigned heads, kv_heads, dim, block, reps, warmup, rotate, dense_max_n;
    float max_seconds;
    int dense, check;
    int sort; /* baatt_sort_mode of the BA-Att plans; -1: the library default */
    int cov;  /* baatt_covariance_mode of the BA-Att plans; -1: the library default */
    const char *json, *device, *mask_dir;
} bopts;

/* One timed configuration (or a skipped one: ms is NAN and error says why). */
typedef struct bresult {
    baatt_config cfg;
    double ms, min_ms, stage_ms[BAATT_STAGE_COUNT];
    double sparsity, speedup, check_err; /* NAN when not measured */
    unsigned reps;
    int gpu_timer;            /* 0: host wall clock (device without timestamps) */
    const char *kernel;       /* attention kernel the plan chose (static string) */
    const char *score_kernel; /* its block-logit product (BA-Att plans; static string) */
    char error[512];
} bresult;

typedef struct bench {
    bopts o;
    baatt_context *ctx;
    baatt_device_info dev;
    bresult *res;
    size_t nres, cap;
    int check_failed;
    int io_failed; /* an output (--json, --mask-dir) could not be written: the exit status says so */
} bench;

/* Device-resident inputs of one size: rotate sets of Q, K, V and one shared O. */
typedef struct inputs {
    baatt_device_buffer *q[MAX_SETS], *k[MAX_SETS], *v[MAX_SETS], *o;
    uint32_t nsets;
} inputs;

static const char USAGE[] =
    "usage: baatt bench [options]\n"
    "\n"
    "Times BA-Att (every stage, from the GPU's timestamps) and dense attention on random inputs\n"
    "held on the device, for each dtype x N x (dense, keep ratios). Progress goes to stderr, a table\n"
    "to stdout. TFLOP/s counts 4*N*N*head_dim*heads*batch (dense-equivalent); 'useful' multiplies by\n"
    "(1 - sparsity). Speed-up is over this library's own dense attention at the same N and dtype.\n"
    "\n"
    "options:\n"
    "  --n LIST            sequence lengths, comma separated (default 4096,16384,32768 on a GPU,\n"
    "                      512,1024 on a CPU device)\n"
    "  --keep LIST         BA-Att keep ratios (default 0.5,0.25,0.1)\n"
    "  --dtype LIST        f16,f32 (default f16 where the device has 16-bit storage, else f32)\n"
    "  --heads H           query heads (default 32 on a GPU, 2 on a CPU device)\n"
    "  --kv-heads H        key/value heads (default: --heads)\n"
    "  --dim D             head_dim, 64 or 128 (default 128 on a GPU, 64 on a CPU device)\n"
    "  --block B           BA-Att block size (default 64)\n"
    "  --sort M            BA-Att blocking: auto (default), norm or off (baatt attention --help);\n"
    "                      BA-Att timings recorded before auto became the default are norm\n"
    "  --covariance M      BA-Att covariance term: auto (default: lambda chosen per kv head, two\n"
    "                      more score and select passes than on), on or off (baatt attention\n"
    "                      --help); timings recorded before auto became the default are on\n"
    "  --reps R            timed repetitions (default 10)\n"
    "  --warmup W          untimed warm-up runs (default 2; at least 0.3 s of them)\n"
    "  --rotate S          input sets the repetitions rotate among (default 2, at most 8)\n"
    "  --max-seconds T     stop repeating a configuration once T seconds have passed, after at\n"
    "                      least 3 repetitions (default 30); the table reports the count\n"
    "  --no-dense          do not time dense attention\n"
    "  --dense-max-n N     time dense attention only up to N (default: no limit)\n"
    "  --check             check head 0 of each configuration with N <= 4096 against the CPU\n"
    "                      reference (BA-Att with the GPU's own selection); exit 1 if one fails\n"
    "  --mask-dir DIR      write the selection of the first input set for every N and keep ratio as\n"
    "                      DIR/mask_n{N}_k{keep}.npy (uint8 [batch, heads, q_blocks, k_blocks]),\n"
    "                      DIR/permq_n{N}_k{keep}.npy and DIR/permk_n{N}_k{keep}.npy (int32), for\n"
    "                      bench/fa_baseline.py (its flex_attention uses these block masks)\n"
    "  --json FILE         also write the results as a JSON list of records\n"
    "  --device D          device index or name substring\n";

/* ------------------------------------------------------------------------------------------ */
/* options                                                                                    */

/* Splits a comma-separated list; parse_one converts one item into slot i. */
static int parse_list(const char *opt, const char *s, int max, int *count, int (*parse_one)(const char *, int, void *),
                      void *out)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    *count = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*count >= max) return cli_fail("bench", "%s: at most %d values", opt, max), 0;
        if (!parse_one(tok, *count, out)) return cli_fail("bench", "%s: bad value '%s'", opt, tok), 0;
        ++*count;
    }
    if (!*count) return cli_fail("bench", "%s: empty list", opt), 0;
    return 1;
}

static int one_u32(const char *t, int i, void *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(t, &end, 10);
    if (errno || *end || t[0] == '-' || v == 0 || v > 0xffffffffUL) return 0;
    ((uint32_t *)out)[i] = (uint32_t)v;
    return 1;
}

static int one_keep(const char *t, int i, void *out)
{
    char *end;
    double v = strtod(t, &end);
    if (*end || !(v > 0 && v <= 1)) return 0;
    ((float *)out)[i] = (float)v;
    return 1;
}

static int one_dtype(const char *t, int i, void *out)
{
    baatt_dtype d;
    if (!strcmp(t, "f16") || !strcmp(t, "fp16")) d = BAATT_DTYPE_F16;
    else if (!strcmp(t, "f32") || !strcmp(t, "fp32")) d = BAATT_DTYPE_F32;
    else if (!strcmp(t, "bf16")) d = BAATT_DTYPE_BF16;
    else return 0;
    ((baatt_dtype *)out)[i] = d;
    return 1;
}

static int parse_lists(bopts *o, int argc, char **argv, int *i, int *ok)
{
    const char *a = argv[*i], *s;
    if (!strcmp(a, "--n"))
        *ok = cli_arg_str("bench", argc, argv, i, &s) && parse_list(a, s, MAX_LIST, &o->nn, one_u32, o->n);
    else if (!strcmp(a, "--keep"))
        *ok = cli_arg_str("bench", argc, argv, i, &s) && parse_list(a, s, MAX_LIST, &o->nkeep, one_keep, o->keep);
    else if (!strcmp(a, "--dtype"))
        *ok = cli_arg_str("bench", argc, argv, i, &s) && parse_list(a, s, MAX_LIST, &o->ndt, one_dtype, o->dt);
    else return 0;
    return 1;
}

static int parse(int argc, char **argv, bopts *o)
{
    const char *c = "bench";
    o->block = 64, o->reps = 10, o->warmup = 2, o->rotate = 2, o->max_seconds = 30, o->dense = 1, o->sort = -1,
    o->cov = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int ok = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            exit(0);
        } else if (parse_lists(o, argc, argv, &i, &ok)) {
        } else if (!strcmp(a, "--heads")) ok = cli_arg_u32(c, argc, argv, &i, &o->heads);
        else if (!strcmp(a, "--kv-heads")) ok = cli_arg_u32(c, argc, argv, &i, &o->kv_heads);
        else if (!strcmp(a, "--dim")) ok = cli_arg_u32(c, argc, argv, &i, &o->dim);
        else if (!strcmp(a, "--block")) ok = cli_arg_u32(c, argc, argv, &i, &o->block);
        else if (!strcmp(a, "--sort")) ok = cli_arg_sort(c, argc, argv, &i, &o->sort);
        else if (!strcmp(a, "--covariance")) ok = cli_arg_cov(c, argc, argv, &i, &o->cov);
        else if (!strcmp(a, "--reps")) ok = cli_arg_u32(c, argc, argv, &i, &o->reps);
        else if (!strcmp(a, "--warmup")) ok = cli_arg_u32(c, argc, argv, &i, &o->warmup);
        else if (!strcmp(a, "--rotate")) ok = cli_arg_u32(c, argc, argv, &i, &o->rotate);
        else if (!strcmp(a, "--max-seconds")) ok = cli_arg_float(c, argc, argv, &i, &o->max_seconds);
        else if (!strcmp(a, "--dense-max-n")) ok = cli_arg_u32(c, argc, argv, &i, &o->dense_max_n);
        else if (!strcmp(a, "--no-dense")) o->dense = 0;
        else if (!strcmp(a, "--check")) o->check = 1;
        else if (!strcmp(a, "--json")) ok = cli_arg_str(c, argc, argv, &i, &o->json);
        else if (!strcmp(a, "--mask-dir")) ok = cli_arg_str(c, argc, argv, &i, &o->mask_dir);
        else if (!strcmp(a, "--device")) ok = cli_arg_str(c, argc, argv, &i, &o->device);
        else return cli_fail(c, "unknown option '%s' (try --help)", a), 0;
        if (!ok) return 0;
    }
    if (o->reps < 1) return cli_fail(c, "--reps must be at least 1"), 0;
    if (o->rotate < 1 || o->rotate > MAX_SETS) return cli_fail(c, "--rotate must be 1..%d", MAX_SETS), 0;
    if (!(o->max_seconds > 0)) return cli_fail(c, "--max-seconds must be positive"), 0;
    return 1;
}

/* Unset options get defaults that suit the device: a CPU driver is orders of magnitude slower. */
static void apply_defaults(bopts *o, const baatt_device_info *dev)
{
    int gpu = dev->type != BAATT_DEVICE_CPU;
    if (!o->nn) {
        static const uint32_t g[] = {4096, 16384, 32768}, c[] = {512, 1024};
        o->nn = gpu ? 3 : 2;
        memcpy(o->n, gpu ? g : c, o->nn * sizeof o->n[0]);
    }
    if (!o->nkeep) {
        o->nkeep = 3;
        o->keep[0] = 0.5f, o->keep[1] = 0.25f, o->keep[2] = 0.1f;
    }
    if (!o->ndt) o->ndt = 1, o->dt[0] = dev->fp16_storage ? BAATT_DTYPE_F16 : BAATT_DTYPE_F32;
    if (!o->heads) o->heads = gpu ? 32 : 2;
    if (!o->kv_heads) o->kv_heads = o->heads;
    if (!o->dim) o->dim = gpu ? 128 : 64;
}

/* ------------------------------------------------------------------------------------------ */
/* inputs                                                                                     */

/* The random stream of (input set, tensor): fixed, so --check can regenerate head 0 on the host. */
static uint64_t stream_seed(uint32_t set, uint32_t tensor)
{
    uint64_t s = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(set * 3 + tensor + 1) * 0xD1B54A32D192ED03ull);
    return s ? s : 1;
}

/* fp32 -> fp16, round to nearest even, inline for the normal range (the library's converter is
 * exact everywhere but an out-of-line call per element made a 1 GiB upload take seconds). */
static inline uint16_t to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t a = x & 0x7fffffffu;
    if (a < 0x38800000u || a >= 0x47800000u) return baatt_f32_to_f16(f); /* subnormal, huge, NaN */
    a += 0xfffu + ((a >> 13) & 1u);
    return (uint16_t)(((x >> 16) & 0x8000u) | ((a - 0x38000000u) >> 13));
}

/* Element i of stream `seed`: uniform in [-sqrt3, sqrt3), unit variance like the usual N(0,1)
 * inputs. Counter-based (splitmix64 of the index), so any range of a stream can be generated on
 * its own: in parallel, chunk by chunk, and again on the host for --check. */
static inline float uniform_at(uint64_t seed, uint64_t i)
{
    uint64_t z = eval_mix64(seed + i * 0x9E3779B97F4A7C15ull);
    return (float)(z >> 40) * (2.0f * 1.7320508f / 16777216.0f) - 1.7320508f;
}

typedef struct fill_job {
    void *dst;
    baatt_dtype dt;
    uint64_t seed, first, n;
} fill_job;

/* Elements first .. first+n-1 of stream seed into dst[0 .. n-1]. */
static void *fill_range(void *arg)
{
    const fill_job *j = arg;
    if (j->dt == BAATT_DTYPE_F32)
        for (uint64_t i = 0; i < j->n; i++) ((float *)j->dst)[i] = uniform_at(j->seed, j->first + i);
    else if (j->dt == BAATT_DTYPE_F16)
        for (uint64_t i = 0; i < j->n; i++) ((uint16_t *)j->dst)[i] = to_f16(uniform_at(j->seed, j->first + i));
    else
        for (uint64_t i = 0; i < j->n; i++)
            ((uint16_t *)j->dst)[i] = baatt_f32_to_bf16(uniform_at(j->seed, j->first + i));
    return NULL;
}

/* fill_range on up to 16 threads: one thread needs ~3 s per GiB of fp16. */
static void fill_uniform(void *dst, baatt_dtype dt, uint64_t seed, uint64_t first, uint64_t n)
{
    enum { MAX_THREADS = 16 };
    long nt = n < (1u << 20) ? 1 : sysconf(_SC_NPROCESSORS_ONLN);
    nt = nt < 1 ? 1 : nt > MAX_THREADS ? MAX_THREADS : nt;
    fill_job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    size_t es = baatt_dtype_size(dt);
    for (long t = 0; t < nt; t++) {
        uint64_t a = n * t / nt, b = n * (t + 1) / nt;
        jobs[t] = (fill_job){(char *)dst + a * es, dt, seed, first + a, b - a};
        if (t) started[t] = !pthread_create(&th[t], NULL, fill_range, &jobs[t]);
    }
    for (long t = 0; t < nt; t++)
        if (!started[t]) fill_range(&jobs[t]); /* thread 0, and any that could not start */
    for (long t = 1; t < nt; t++)
        if (started[t]) pthread_join(th[t], NULL);
}

/* Fills dst with the random stream `seed`, one host chunk at a time. */
static baatt_status upload_random(baatt_device_buffer *dst, void *chunk, uint64_t chunk_bytes, uint64_t bytes,
                                  baatt_dtype dt, uint64_t seed)
{
    uint64_t es = baatt_dtype_size(dt);
    for (uint64_t off = 0; off < bytes; off += chunk_bytes) {
        uint64_t n = bytes - off < chunk_bytes ? bytes - off : chunk_bytes;
        fill_uniform(chunk, dt, seed, off / es, n / es);
        CLI_TRY(baatt_device_buffer_write(dst, off, chunk, n));
    }
    return BAATT_OK;
}

static void inputs_destroy(inputs *in)
{
    for (uint32_t s = 0; s < MAX_SETS; s++) {
        baatt_device_buffer_destroy(in->q[s]);
        baatt_device_buffer_destroy(in->k[s]);
        baatt_device_buffer_destroy(in->v[s]);
    }
    baatt_device_buffer_destroy(in->o);
    memset(in, 0, sizeof *in);
}

static uint64_t q_bytes(const baatt_config *g)
{
    return baatt_dtype_size(g->dtype) * g->batch * g->heads * (uint64_t)g->q_len * g->head_dim;
}

static uint64_t kv_bytes(const baatt_config *g)
{
    return baatt_dtype_size(g->dtype) * g->batch * g->kv_heads * (uint64_t)g->kv_len * g->head_dim;
}

static baatt_status upload_sets(bench *b, inputs *in, const baatt_config *g, void *chunk, uint64_t chunk_bytes)
{
    uint64_t qn = q_bytes(g), kn = kv_bytes(g);
    for (uint32_t s = 0; s < in->nsets; s++) {
        CLI_TRY(baatt_device_buffer_create(b->ctx, qn, &in->q[s]));
        CLI_TRY(baatt_device_buffer_create(b->ctx, kn, &in->k[s]));
        CLI_TRY(baatt_device_buffer_create(b->ctx, kn, &in->v[s]));
        CLI_TRY(upload_random(in->q[s], chunk, chunk_bytes, qn, g->dtype, stream_seed(s, 0)));
        CLI_TRY(upload_random(in->k[s], chunk, chunk_bytes, kn, g->dtype, stream_seed(s, 1)));
        CLI_TRY(upload_random(in->v[s], chunk, chunk_bytes, kn, g->dtype, stream_seed(s, 2)));
    }
    return baatt_device_buffer_create(b->ctx, qn, &in->o);
}

/* Allocates and fills the input sets of size g; on failure frees everything and says why. */
static int inputs_create(bench *b, const baatt_config *g, inputs *in, char *why, size_t nwhy)
{
    memset(in, 0, sizeof *in);
    in->nsets = b->o.rotate;
    uint64_t qn = q_bytes(g), kn = kv_bytes(g), big = qn > kn ? qn : kn;
    if (big > b->dev.max_storage_buffer_range) {
        snprintf(why, nwhy, "a %.0f MiB tensor exceeds the device's %.0f MiB storage-buffer range", big / 1048576.0,
                 b->dev.max_storage_buffer_range / 1048576.0);
        return 0;
    }
    uint64_t chunk = big < STAGING_CHUNK ? big : STAGING_CHUNK;
    chunk -= chunk % 4; /* whole elements of either size */
    void *host = malloc(chunk);
    baatt_status s = host ? upload_sets(b, in, g, host, chunk) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    free(host);
    if (s) {
        snprintf(why, nwhy, "inputs (%u sets of %.0f MiB): %s: %s", in->nsets, (qn + 2 * kn) / 1048576.0,
                 baatt_status_string(s), baatt_context_error(b->ctx));
        inputs_destroy(in);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* timing                                                                                     */

/* One recorded run on input set `set`: fresh command buffer, submit, wait, read the plan's stats.
 * Without device timestamps the host's wall clock around recording and waiting stands in for gpu_ms. */
static baatt_status run_once(baatt_plan *plan, const inputs *in, uint32_t set, baatt_run_stats *st)
{
    double t0 = cli_now_ms();
    CLI_TRY(baatt_plan_run_buffers(plan, in->q[set], in->k[set], in->v[set], in->o));
    double wall = cli_now_ms() - t0;
    CLI_TRY(baatt_plan_stats(plan, st));
    if (!st->timed) st->gpu_ms = wall;
    return BAATT_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v). */
static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define WARMUP_MS 300.0

/* Warm-up (pipelines, clocks, caches of the driver), then up to --reps timed runs, ending early
 * after --max-seconds once 3 runs are in. Fills ms, min_ms, stage_ms, reps, sparsity. */
static baatt_status time_runs(bench *b, baatt_plan *plan, const inputs *in, bresult *r)
{
    const bopts *o = &b->o;
    unsigned cap = o->reps, min_reps = o->reps < 3 ? o->reps : 3, n = 0;
    double *ms = calloc((size_t)cap * (BAATT_STAGE_COUNT + 1), sizeof *ms), t0 = cli_now_ms(),
           limit = o->max_seconds * 1e3;
    if (!ms) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    baatt_run_stats st = {0};
    baatt_status s = BAATT_OK;
    /* At least --warmup runs and at least WARMUP_MS of them, so that the clocks have ramped up
     * after the idle input upload (short configurations measured 2.5x slow without it; a warm-up
     * that already took a quarter of the budget has done its job). */
    for (unsigned w = 0;
         !s && (w < o->warmup || cli_now_ms() - t0 < WARMUP_MS) && (w == 0 || cli_now_ms() - t0 < limit / 4); w++)
        s = run_once(plan, in, w % in->nsets, &st);
    for (; !s && n < cap && (n < min_reps || cli_now_ms() - t0 < limit); n++) {
        s = run_once(plan, in, n % in->nsets, &st);
        ms[n] = st.gpu_ms;
        for (int k = 0; k < BAATT_STAGE_COUNT; k++) ms[(size_t)cap * (k + 1) + n] = st.stage_ms[k];
    }
    if (!s) {
        r->reps = n;
        r->sparsity = st.sparsity;
        r->gpu_timer = st.timed;
        for (int k = 0; k < BAATT_STAGE_COUNT; k++) r->stage_ms[k] = median(ms + (size_t)cap * (k + 1), n);
        r->ms = median(ms, n);
        r->min_ms = ms[0]; /* sorted by median() */
    }
    free(ms);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* selection export and correctness check (both on input set 0, after one more run)           */

static int write_npy(const char *dir, const char *what, const baatt_config *g, baatt_npy_dtype dt, uint32_t rank,
                     const uint64_t *shape, const void *data)
{
    char path[1024], msg[512];
    snprintf(path, sizeof path, "%s/%s_n%u_k%g.npy", dir, what, g->q_len, (double)g->keep_ratio);
    if (baatt_npy_write(path, dt, rank, shape, data, msg, sizeof msg)) return cli_fail("bench", "%s", msg), 0;
    return 1;
}

typedef struct selection {
    uint8_t *mask;
    int32_t *pq, *pk;
} selection;

static void selection_free(selection *sel)
{
    free(sel->mask);
    free(sel->pq);
    free(sel->pk);
}

/* Reads the whole selection of the plan's last run. */
static baatt_status selection_read(baatt_plan *plan, const baatt_config *g, selection *sel)
{
    uint64_t bh = (uint64_t)g->batch * g->heads, bkv = (uint64_t)g->batch * g->kv_heads;
    sel->mask = malloc(bh * baatt_config_q_blocks(g) * baatt_config_k_blocks(g));
    sel->pq = malloc(4 * bh * g->q_len);
    sel->pk = malloc(4 * bkv * g->kv_len);
    if (!sel->mask || !sel->pq || !sel->pk) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    CLI_TRY(baatt_plan_read_mask(plan, sel->mask));
    return baatt_plan_read_perms(plan, sel->pq, sel->pk);
}

static int export_selection(const char *dir, const baatt_config *g, const selection *sel)
{
    if (mkdir(dir, 0755) && errno != EEXIST) return cli_fail("bench", "cannot create %s: %s", dir, strerror(errno)), 0;
    uint64_t ms[4] = {g->batch, g->heads, baatt_config_q_blocks(g), baatt_config_k_blocks(g)};
    uint64_t qs[3] = {g->batch, g->heads, g->q_len}, ks[3] = {g->batch, g->kv_heads, g->kv_len};
    return write_npy(dir, "mask", g, BAATT_NPY_U8, 4, ms, sel->mask) &&
           write_npy(dir, "permq", g, BAATT_NPY_I32, 3, qs, sel->pq) &&
           write_npy(dir, "permk", g, BAATT_NPY_I32, 3, ks, sel->pk);
}

/* Head 0 of batch 0 of set 0 against the CPU reference: its inputs are the first q_len*head_dim
 * elements of each random stream, so they are regenerated here instead of read back. */
static double check_head0(bench *b, const baatt_config *g, const inputs *in, const selection *sel)
{
    baatt_config one = *g;
    one.batch = one.heads = one.kv_heads = 1;
    uint64_t n = (uint64_t)g->q_len * g->head_dim, es = baatt_dtype_size(g->dtype);
    void *q = malloc(n * es), *k = malloc(n * es), *v = malloc(n * es), *o = malloc(n * es);
    float *ref = malloc(n * sizeof *ref);
    double err = NAN;
    baatt_status s =
        q && k && v && o && ref ? baatt_device_buffer_read(in->o, 0, o, n * es) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (!s) {
        fill_uniform(q, g->dtype, stream_seed(0, 0), 0, n);
        fill_uniform(k, g->dtype, stream_seed(0, 1), 0, n);
        fill_uniform(v, g->dtype, stream_seed(0, 2), 0, n);
        s = g->dense ? baatt_reference_attention(&one, q, k, v, ref)
                     : baatt_reference_sparse_attention(&one, q, k, v, sel->pq, sel->pk, sel->mask, ref);
    }
    if (!s) err = cli_max_rel(o, g->dtype, ref, n);
    else cli_fail_status("bench", s, b->ctx, "check");
    free(q), free(k), free(v), free(o), free(ref);
    return err;
}

/* Fills O with all-ones bits (NaN in every dtype) so that the check sees any element left unwritten. */
static baatt_status poison(baatt_device_buffer *o, uint64_t bytes)
{
    void *ones = malloc(bytes);
    if (!ones) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    memset(ones, 0xff, bytes);
    baatt_status s = baatt_device_buffer_write(o, 0, ones, bytes);
    free(ones);
    return s;
}

/* One more run on set 0, then the mask export and/or the check it feeds. */
static baatt_status after_timing(bench *b, baatt_plan *plan, const inputs *in, bresult *r)
{
    const baatt_config *g = &r->cfg;
    int want_mask = b->o.mask_dir && !g->dense, want_check = b->o.check && g->q_len <= CHECK_MAX_N;
    if (!want_mask && !want_check) return BAATT_OK;
    baatt_run_stats st;
    if (want_check) CLI_TRY(poison(in->o, q_bytes(g)));
    CLI_TRY(run_once(plan, in, 0, &st));
    selection sel = {0};
    baatt_status s = g->dense ? BAATT_OK : selection_read(plan, g, &sel);
    if (!s && want_mask && !export_selection(b->o.mask_dir, g, &sel)) s = BAATT_ERROR_IO, b->io_failed = 1;
    if (!s && want_check) {
        fprintf(stderr, "  checking head 0 against the CPU reference...\n");
        r->check_err = check_head0(b, g, in, &sel);
        double tol = g->dtype == BAATT_DTYPE_F32 ? 1e-4 : 2e-2;
        int pass = r->check_err <= tol;
        if (!pass) b->check_failed = 1;
        fprintf(stderr, "  check: max error %.3g of max|ref| (tolerance %.0e): %s\n", r->check_err, tol,
                pass ? "PASS" : "FAIL");
    }
    selection_free(&sel);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* reporting                                                                                  */

static double flops(const baatt_config *g)
{
    return 4.0 * g->batch * g->heads * (double)g->q_len * g->kv_len * g->head_dim;
}

static void method_name(const baatt_config *g, char *buf, size_t n)
{
    if (g->dense) snprintf(buf, n, "dense");
    else snprintf(buf, n, "baatt keep=%g", (double)g->keep_ratio);
}

static void print_header(void)
{
    printf("%7s %-5s %-17s %10s %10s %4s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "N", "dtype", "method", "median_ms",
           "min_ms", "reps", "sparsity", "TFLOP/s", "useful", "vs_dense", "sort", "stats", "score", "select", "attend");
    fflush(stdout);
}

static void print_row(const bresult *r)
{
    char m[64];
    method_name(&r->cfg, m, sizeof m);
    if (isnan(r->ms)) {
        printf("%7u %-5s %-17s skipped: %s\n", r->cfg.q_len, baatt_dtype_name(r->cfg.dtype), m, r->error);
        fflush(stdout);
        return;
    }
    double tf = flops(&r->cfg) / (r->ms * 1e9);
    char sp[16] = "-";
    if (!isnan(r->speedup)) snprintf(sp, sizeof sp, "%.2fx", r->speedup);
    printf("%7u %-5s %-17s %10.3f %10.3f %4u %8.4f %8.4g %8.4g %8s", r->cfg.q_len, baatt_dtype_name(r->cfg.dtype), m,
           r->ms, r->min_ms, r->reps, r->sparsity, tf, tf * (1 - r->sparsity), sp);
    for (int k = 0; k < BAATT_STAGE_COUNT; k++) printf(" %8.3f", r->stage_ms[k]);
    printf("%s\n", r->gpu_timer ? "" : "  (host clock)");
    fflush(stdout);
}

static void json_num(FILE *f, const char *key, double v, const char *fmt)
{
    fprintf(f, ", \"%s\": ", key);
    if (isnan(v) || isinf(v)) fputs("null", f);
    else fprintf(f, fmt, v);
}

static void json_record(FILE *f, const bench *b, const bresult *r)
{
    const baatt_config *g = &r->cfg;
    fprintf(f,
            "  {\"n\": %u, \"heads\": %u, \"kv_heads\": %u, \"head_dim\": %u, \"batch\": %u, \"block\": %u, "
            "\"dtype\": \"%s\", \"method\": \"%s\", \"sort\": ",
            g->q_len, g->heads, g->kv_heads, g->head_dim, g->batch, g->block_size, baatt_dtype_name(g->dtype),
            g->dense ? "baatt_dense" : "baatt");
    if (g->dense) fputs("null, \"keep\": null", f);
    else cli_json_string(f, cli_sort_name(g->norm_sort)), fprintf(f, ", \"keep\": %g", (double)g->keep_ratio);
    if (!g->dense) fputs(", \"covariance\": ", f), cli_json_string(f, cli_cov_name(g->covariance));
    double tf = flops(g) / (r->ms * 1e9);
    json_num(f, "ms", r->ms, "%.6f");
    json_num(f, "min_ms", r->min_ms, "%.6f");
    fprintf(f, ", \"reps\": %u", r->reps);
    json_num(f, "sparsity", r->sparsity, "%.6f");
    json_num(f, "tflops", tf, "%.3f");
    json_num(f, "tflops_useful", tf * (1 - r->sparsity), "%.3f");
    json_num(f, "speedup_vs_dense", r->speedup, "%.4f");
    json_num(f, "check_max_err", r->check_err, "%.4g");
    fprintf(f, ", \"timer\": %s, \"stages_ms\": ", isnan(r->ms) ? "null" : r->gpu_timer ? "\"gpu\"" : "\"host\"");
    if (isnan(r->ms)) fputs("null", f);
    for (int k = 0; !isnan(r->ms) && k < BAATT_STAGE_COUNT; k++)
        fprintf(f, "%s\"%s\": %.6f", k ? ", " : "{", baatt_stage_name(k), r->stage_ms[k]);
    fputs(isnan(r->ms) ? "" : "}", f);
    if (r->error[0]) fputs(", \"error\": ", f), cli_json_string(f, r->error);
    if (r->kernel) fputs(", \"kernel\": ", f), cli_json_string(f, r->kernel);
    if (r->score_kernel) fputs(", \"score_kernel\": ", f), cli_json_string(f, r->score_kernel);
    fputs(", \"device\": ", f), cli_json_string(f, b->dev.name);
    fputs(", \"driver\": ", f), cli_json_string(f, b->dev.driver_info);
    fputs("}", f);
}

/* Rewrites the whole file through a temporary and a rename, so it is always a valid list. */
static void write_json(bench *b)
{
    if (!b->o.json) return;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", b->o.json);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        cli_fail("bench", "cannot write %s: %s", tmp, strerror(errno));
        b->io_failed = 1;
        return;
    }
    fputs("[\n", f);
    for (size_t i = 0; i < b->nres; i++) {
        json_record(f, b, &b->res[i]);
        fputs(i + 1 < b->nres ? ",\n" : "\n", f);
    }
    fputs("]\n", f);
    if (fclose(f) || rename(tmp, b->o.json)) {
        cli_fail("bench", "cannot write %s: %s", b->o.json, strerror(errno));
        remove(tmp);
        b->io_failed = 1;
    }
}

static bresult *add_result(bench *b, const baatt_config *g)
{
    if (b->nres == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 32;
        bresult *r = realloc(b->res, cap * sizeof *r);
        if (!r) return NULL;
        b->res = r, b->cap = cap;
    }
    bresult *r = &b->res[b->nres++];
    memset(r, 0, sizeof *r);
    r->cfg = *g;
    r->ms = r->min_ms = r->sparsity = r->speedup = r->check_err = NAN;
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* the sweep                                                                                  */

/* Times one configuration on the given inputs; records a skip (with the reason) on failure. */
static bresult *bench_config(bench *b, const baatt_config *g, const inputs *in, double dense_ms)
{
    bresult *r = add_result(b, g);
    if (!r) return NULL;
    char m[64];
    method_name(g, m, sizeof m);
    fprintf(stderr, "[bench] %s N=%u %s\n", baatt_dtype_name(g->dtype), g->q_len, m);
    double t0 = cli_now_ms();
    baatt_plan *plan = NULL;
    baatt_status s = baatt_plan_create(b->ctx, g, &plan);
    if (!s) r->kernel = baatt_plan_path(plan, BAATT_STAGE_ATTEND);
    if (!s && !g->dense) r->score_kernel = baatt_plan_path(plan, BAATT_STAGE_SCORE);
    if (!s) s = time_runs(b, plan, in, r);
    if (!s) fprintf(stderr, "  %u reps, median %.3f ms (%.1f s)\n", r->reps, r->ms, (cli_now_ms() - t0) * 1e-3);
    if (!s) s = after_timing(b, plan, in, r);
    baatt_plan_destroy(plan);
    if (s) {
        snprintf(r->error, sizeof r->error, "%s: %s", baatt_status_string(s), baatt_context_error(b->ctx));
        r->ms = NAN;
        fprintf(stderr, "  skipped: %s\n", r->error);
    } else r->speedup = dense_ms / r->ms;
    print_row(r);
    write_json(b);
    return r;
}

static void record_skip(bench *b, const baatt_config *g, const char *why)
{
    bresult *r = add_result(b, g);
    if (!r) return;
    snprintf(r->error, sizeof r->error, "%s", why);
    print_row(r);
}

/* --json and --mask-dir, before any GPU work: the directory is created if missing. */
static int check_outputs(const bopts *o)
{
    const char *out[] = {o->json};
    if (o->json && !cli_check_outputs("bench", NULL, 0, out, 1)) return 0;
    if (!o->mask_dir) return 1;
    struct stat st;
    if (mkdir(o->mask_dir, 0755) && errno != EEXIST)
        return cli_fail("bench", "cannot create --mask-dir %s: %s", o->mask_dir, strerror(errno)), 0;
    if (stat(o->mask_dir, &st) || !S_ISDIR(st.st_mode))
        return cli_fail("bench", "--mask-dir %s is not a directory", o->mask_dir), 0;
    if (access(o->mask_dir, W_OK | X_OK))
        return cli_fail("bench", "cannot write in --mask-dir %s: %s", o->mask_dir, strerror(errno)), 0;
    return 1;
}

/* Every method at one N and dtype, on one allocation of inputs. */
static void bench_size(bench *b, baatt_config g)
{
    const bopts *o = &b->o;
    int dense = o->dense && (!o->dense_max_n || g.q_len <= o->dense_max_n);
    char why[512];
    inputs in;
    fprintf(stderr, "[bench] %s N=%u: uploading %u input sets...\n", baatt_dtype_name(g.dtype), g.q_len, o->rotate);
    if (!inputs_create(b, &g, &in, why, sizeof why)) {
        fprintf(stderr, "[bench] %s N=%u skipped: %s\n", baatt_dtype_name(g.dtype), g.q_len, why);
        g.dense = 1;
        if (dense) record_skip(b, &g, why);
        g.dense = 0;
        for (int i = 0; i < o->nkeep; i++) g.keep_ratio = o->keep[i], record_skip(b, &g, why);
        write_json(b);
        return;
    }
    double dense_ms = NAN;
    if (dense) {
        baatt_config d = g;
        d.dense = 1;
        bresult *r = bench_config(b, &d, &in, NAN);
        if (r) dense_ms = r->ms;
    }
    for (int i = 0; i < o->nkeep; i++) {
        g.keep_ratio = o->keep[i];
        bench_config(b, &g, &in, dense_ms);
    }
    inputs_destroy(&in);
}

/* A tiny plan tells whether the device runs this dtype at all, before gigabytes are uploaded. */
static int dtype_supported(bench *b, baatt_dtype dt)
{
    baatt_config g = baatt_config_default();
    g.dtype = dt;
    g.q_len = g.kv_len = 64;
    g.head_dim = b->o.dim;
    g.dense = 1;
    baatt_plan *p = NULL;
    baatt_status s = baatt_plan_create(b->ctx, &g, &p);
    baatt_plan_destroy(p);
    if (s)
        fprintf(stderr, "[bench] dtype %s skipped: %s: %s\n", baatt_dtype_name(dt), baatt_status_string(s),
                baatt_context_error(b->ctx));
    return !s;
}

static int timed_count(const bench *b)
{
    int n = 0;
    for (size_t i = 0; i < b->nres; i++) n += !isnan(b->res[i].ms);
    return n;
}

int cmd_bench(int argc, char **argv)
{
    bench b = {0};
    if (!parse(argc, argv, &b.o) || !check_outputs(&b.o)) return 1;
    if (!cli_open("bench", b.o.device, &b.ctx)) return 1;
    baatt_context_device_info(b.ctx, &b.dev);
    apply_defaults(&b.o, &b.dev);
    char line[900];
    cli_device_line(&b.dev, line, sizeof line);
    if (b.o.sort < 0) b.o.sort = baatt_config_default().norm_sort;
    if (b.o.cov < 0) b.o.cov = baatt_config_default().covariance;
    printf("device: %s\nshape: batch 1, heads %u (kv %u), head_dim %u, block %u, sort %s, covariance %s; reps %u "
           "(warm-up %u, %u input sets, max %.0f s per configuration)\n",
           line, b.o.heads, b.o.kv_heads, b.o.dim, b.o.block, cli_sort_name(b.o.sort), cli_cov_name(b.o.cov), b.o.reps,
           b.o.warmup, b.o.rotate, (double)b.o.max_seconds);
    print_header();
    write_json(&b); /* an empty list until the first result: the file exists even if nothing runs */
    if (b.io_failed) {
        baatt_context_destroy(b.ctx);
        return 1;
    }
    for (int t = 0; t < b.o.ndt; t++) {
        if (!dtype_supported(&b, b.o.dt[t])) continue;
        for (int i = 0; i < b.o.nn; i++) {
            baatt_config g = baatt_config_default();
            g.heads = b.o.heads, g.kv_heads = b.o.kv_heads, g.head_dim = b.o.dim, g.block_size = b.o.block;
            g.norm_sort = b.o.sort, g.covariance = b.o.cov;
            g.q_len = g.kv_len = b.o.n[i];
            g.dtype = b.o.dt[t];
            char msg[512];
            if (baatt_config_check(&g, msg, sizeof msg)) {
                record_skip(&b, &g, msg);
                continue;
            }
            bench_size(&b, g);
        }
    }
    write_json(&b);
    /* with BAATT_VALIDATION=1 the layer's messages count as failures, as in the tests */
    uint32_t vmsgs = baatt_context_validation_messages(b.ctx);
    int timed = timed_count(&b), rc = !timed || b.check_failed || vmsgs || b.io_failed;
    fprintf(stderr, "[bench] %d of %zu configurations timed%s%s", timed, b.nres,
            b.check_failed ? "; a check FAILED" : "", b.io_failed ? "; an output could not be written" : "");
    if (vmsgs) fprintf(stderr, "; %u validation messages", vmsgs);
    fputc('\n', stderr);
    free(b.res);
    baatt_context_destroy(b.ctx);
    return rc;
}
