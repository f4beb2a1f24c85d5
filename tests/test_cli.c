/* The `baatt` command-line tool, driven as a user would (system() with stdout/stderr captured in
 * files): help and info, `attention` dense and BA-Att on .npy inputs checked against the CPU
 * reference on the tool's own selection, its side outputs and JSON, every argument error (exit
 * status and a one-line message naming the problem), selections reused over --steps and given with
 * --mask-in, `demo`, `bench --check` and `eval`. The binary is BAATT_CLI. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

enum { B = 1, H = 2, HKV = 1, NQ = 100, NK = 90, D = 64 };
#define PATH_MAX_ 1024
#define IO_MAX (8 * PATH_MAX_) /* room for several quoted paths */

static const char *g_cli;

/* One set of inputs per dtype, kept in memory for the reference. */
typedef struct input {
    baatt_dtype dt;
    void *q, *k, *v;
    char qp[PATH_MAX_], kp[PATH_MAX_], vp[PATH_MAX_];
} input;
static input g_f32, g_f16;

/* Files that exist only to be rejected; see bad_arguments. */
static char g_k128[PATH_MAX_], g_v128[PATH_MAX_], g_v91[PATH_MAX_], g_q3[PATH_MAX_], g_k2[PATH_MAX_], g_v2[PATH_MAX_],
    g_q80[PATH_MAX_], g_k80[PATH_MAX_], g_v80[PATH_MAX_], g_garbage[PATH_MAX_], g_missing[PATH_MAX_];

typedef struct cli_result {
    int rc; /* exit status; -1 if killed by a signal */
    char out[65536], err[65536];
} cli_result;

/* ------------------------------------------------------------------------------------------ */
/* files and processes                                                                        */

static char *tmp(char *buf, const char *name) { return (char *)th_tmp_path(buf, PATH_MAX_, name); }

/* Writes a random [B, h, n, d] tensor to tmp/name and returns its data (or NULL if not kept). */
static void *write_tensor(char *path, const char *name, baatt_dtype dt, uint32_t h, uint32_t n, uint32_t d,
                          uint64_t *rng, int keep)
{
    size_t count = (size_t)B * h * n * d;
    void *x = th_random_tensor(rng, dt, count, 1.0f);
    uint64_t shape[4] = {B, h, n, d};
    char msg[512];
    baatt_status s = baatt_npy_write(tmp(path, name), dt == BAATT_DTYPE_F16 ? BAATT_NPY_F16 : BAATT_NPY_F32, 4, shape,
                                     x, msg, sizeof msg);
    if (s) fprintf(stderr, "%s\n", msg);
    assert_int_equal(s, BAATT_OK);
    if (keep) return x;
    free(x);
    return NULL;
}

static void write_inputs(input *in, baatt_dtype dt, uint64_t *rng)
{
    const char *sfx = dt == BAATT_DTYPE_F16 ? "16" : "32";
    char name[32];
    in->dt = dt;
    snprintf(name, sizeof name, "q%s.npy", sfx);
    in->q = write_tensor(in->qp, name, dt, H, NQ, D, rng, 1);
    snprintf(name, sizeof name, "k%s.npy", sfx);
    in->k = write_tensor(in->kp, name, dt, HKV, NK, D, rng, 1);
    snprintf(name, sizeof name, "v%s.npy", sfx);
    in->v = write_tensor(in->vp, name, dt, HKV, NK, D, rng, 1);
}

static void write_bad_inputs(uint64_t *rng)
{
    const baatt_dtype f = BAATT_DTYPE_F32;
    write_tensor(g_k128, "k128.npy", f, HKV, NK, 128, rng, 0); /* head_dim differs from q's */
    write_tensor(g_v128, "v128.npy", f, HKV, NK, 128, rng, 0);
    write_tensor(g_v91, "v91.npy", f, HKV, NK + 1, D, rng, 0); /* kv_len differs from k's */
    write_tensor(g_q3, "q3.npy", f, 3, NQ, D, rng, 0);         /* 3 heads over 2 kv heads */
    write_tensor(g_k2, "k2.npy", f, 2, NK, D, rng, 0);
    write_tensor(g_v2, "v2.npy", f, 2, NK, D, rng, 0);
    write_tensor(g_q80, "q80.npy", f, H, NQ, 80, rng, 0); /* an unsupported head_dim */
    write_tensor(g_k80, "k80.npy", f, HKV, NK, 80, rng, 0);
    write_tensor(g_v80, "v80.npy", f, HKV, NK, 80, rng, 0);
    FILE *g = fopen(tmp(g_garbage, "garbage.npy"), "wb");
    assert_non_null(g);
    for (int i = 0; i < 300; i++) fputc((int)(th_next(rng) & 0xff) | 1, g); /* never the \x93NUMPY magic */
    fclose(g);
    tmp(g_missing, "missing.npy");
    unlink(g_missing);
}

static void read_file(const char *path, char *buf, size_t n)
{
    buf[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = 0;
    fclose(f);
}

/* Runs `baatt <args>` (args printf-style, already shell-quoted where needed). */
static void run_cli(cli_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_cli(cli_result *r, const char *fmt, ...)
{
    char args[4 * IO_MAX], cmd[5 * IO_MAX], op[PATH_MAX_], ep[PATH_MAX_];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    tmp(op, "stdout.txt");
    tmp(ep, "stderr.txt");
    /* the suite's wrapper (BAATT_TEST_WRAPPER: another driver's loader) runs the tool too */
    const char *w = getenv("BAATT_TEST_WRAPPER");
    snprintf(cmd, sizeof cmd, "%s%s%s'%s' %s >'%s' 2>'%s' </dev/null", w && *w ? "'" : "", w && *w ? w : "",
             w && *w ? "' " : "", g_cli, args, op, ep);
    int st = system(cmd);
    r->rc = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    read_file(op, r->out, sizeof r->out);
    read_file(ep, r->err, sizeof r->err);
    unlink(op);
    unlink(ep);
}

static void expect_ok(const cli_result *r)
{
    if (r->rc != 0) fprintf(stderr, "exit %d, stderr:\n%s\n", r->rc, r->err);
    assert_int_equal(r->rc, 0);
    /* the suite runs with BAATT_VALIDATION=1, which the tool inherits: it must stay silent */
    assert_null(strstr(r->err, "validation"));
}

static void expect_contains(const char *text, const char *fragment)
{
    if (!strstr(text, fragment)) fprintf(stderr, "'%s' lacks '%s'\n", text, fragment);
    assert_non_null(strstr(text, fragment));
}

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++) n += *s == c;
    return n;
}

static baatt_device_info picked_device(void)
{
    uint32_t n = 0;
    assert_int_equal(baatt_devices_list(NULL, &n), BAATT_OK);
    baatt_device_info *d = calloc(n, sizeof *d), best = {0};
    assert_int_equal(baatt_devices_list(d, &n), BAATT_OK);
    for (uint32_t i = 0; i < n; i++)
        if (d[i].picked) best = d[i];
    free(d);
    return best;
}

/* ------------------------------------------------------------------------------------------ */
/* setup                                                                                      */

static int setup(void **state)
{
    (void)state;
    g_cli = getenv("BAATT_CLI");
    if (!g_cli || !*g_cli || access(g_cli, X_OK) != 0) {
        fprintf(stderr, "SKIP: BAATT_CLI is not set to the baatt binary\n");
        exit(77);
    }
    uint32_t n = 0;
    if (baatt_devices_list(NULL, &n) != BAATT_OK || !n) {
        fprintf(stderr, "SKIP: no Vulkan device\n");
        exit(77);
    }
    uint64_t rng = th_seed() ^ 0xC11;
    write_inputs(&g_f32, BAATT_DTYPE_F32, &rng);
    write_inputs(&g_f16, BAATT_DTYPE_F16, &rng);
    write_bad_inputs(&rng);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    input *ins[2] = {&g_f32, &g_f16};
    for (int i = 0; i < 2; i++) {
        unlink(ins[i]->qp), unlink(ins[i]->kp), unlink(ins[i]->vp);
        free(ins[i]->q), free(ins[i]->k), free(ins[i]->v);
    }
    const char *bad[] = {g_k128, g_v128, g_v91, g_q3, g_k2, g_v2, g_q80, g_k80, g_v80, g_garbage};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) unlink(bad[i]);
    /* outputs a failed test may have left behind */
    const char *outs[] = {"o.npy", "mask.npy", "pq.npy", "pk.npy", "stdout.txt", "stderr.txt"};
    char p[PATH_MAX_];
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) unlink(tmp(p, outs[i]));
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* reading results back                                                                       */

static baatt_config input_config(const input *in)
{
    baatt_config c = baatt_config_default();
    c.batch = B, c.heads = H, c.kv_heads = HKV, c.q_len = NQ, c.kv_len = NK, c.head_dim = D, c.dtype = in->dt;
    return c;
}

/* Reads path and checks its dtype and shape. */
static void read_npy(const char *path, baatt_npy *t, baatt_npy_dtype dt, uint32_t rank, const uint64_t *shape)
{
    char msg[512];
    baatt_status s = baatt_npy_read(path, t, msg, sizeof msg);
    if (s) fprintf(stderr, "%s\n", msg);
    assert_int_equal(s, BAATT_OK);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->rank, rank);
    for (uint32_t i = 0; i < rank; i++) assert_int_equal(t->shape[i], shape[i]);
}

/* o.npy (Q's shape and dtype) against a float reference. */
static void check_output(const char *path, const input *in, const float *ref, double atol, double rtol)
{
    uint64_t shape[4] = {B, H, NQ, D};
    baatt_npy o;
    read_npy(path, &o, in->dt == BAATT_DTYPE_F16 ? BAATT_NPY_F16 : BAATT_NPY_F32, 4, shape);
    float *got = th_to_float(o.data, in->dt, o.count);
    assert_true(th_compare(got, ref, o.count, atol, rtol, path) <= 1.0);
    free(got);
    baatt_npy_free(&o);
}

/* Every row of perm ([rows, len]) holds each index 0..len-1 exactly once. */
static void check_perm(const int32_t *perm, uint32_t rows, uint32_t len, int identity)
{
    uint8_t *seen = malloc(len);
    for (uint32_t r = 0; r < rows; r++) {
        memset(seen, 0, len);
        for (uint32_t i = 0; i < len; i++) {
            int32_t x = perm[(size_t)r * len + i];
            assert_true(x >= 0 && (uint32_t)x < len && !seen[x]);
            seen[x] = 1;
            if (identity) assert_int_equal(x, i);
        }
    }
    free(seen);
}

typedef struct selection {
    baatt_npy mask, pq, pk;
} selection;

/* The three side outputs: shapes and dtypes, permutations, and `keep` ones per mask row
 * (keep 0: at least one). */
static void read_selection(selection *s, uint32_t block, uint32_t keep, int identity)
{
    char mp[PATH_MAX_], qp[PATH_MAX_], kp[PATH_MAX_];
    uint32_t nq = (NQ + block - 1) / block, nk = (NK + block - 1) / block;
    uint64_t ms[4] = {B, H, nq, nk}, qs[3] = {B, H, NQ}, ks[3] = {B, HKV, NK};
    read_npy(tmp(mp, "mask.npy"), &s->mask, BAATT_NPY_U8, 4, ms);
    read_npy(tmp(qp, "pq.npy"), &s->pq, BAATT_NPY_I32, 3, qs);
    read_npy(tmp(kp, "pk.npy"), &s->pk, BAATT_NPY_I32, 3, ks);
    unlink(mp), unlink(qp), unlink(kp);
    const uint8_t *m = s->mask.data;
    for (uint32_t r = 0; r < B * H * nq; r++) {
        uint32_t ones = 0;
        for (uint32_t j = 0; j < nk; j++) {
            assert_true(m[r * nk + j] <= 1);
            ones += m[r * nk + j];
        }
        if (keep) assert_int_equal(ones, keep);
        else assert_true(ones >= 1);
    }
    check_perm(s->pq.data, B * H, NQ, identity);
    check_perm(s->pk.data, B * HKV, NK, identity);
}

static void free_selection(selection *s) { baatt_npy_free(&s->mask), baatt_npy_free(&s->pq), baatt_npy_free(&s->pk); }

/* ------------------------------------------------------------------------------------------ */
/* tests                                                                                      */

static void help_and_info(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    run_cli(r, "--help");
    expect_ok(r);
    expect_contains(r->out, "usage");
    run_cli(r, "attention --help");
    expect_ok(r);
    expect_contains(r->out, "--keep");
    run_cli(r, "info");
    expect_ok(r);
    expect_contains(r->out, "*"); /* the device baatt would use */
    run_cli(r, "info --json");
    expect_ok(r);
    assert_int_equal(r->out[0], '[');
    free(r);
}

/* Builds "--q Q --k K --v V --out O" for in. */
static const char *io_args(char *buf, size_t n, const input *in, const char *out)
{
    snprintf(buf, n, "--q '%s' --k '%s' --v '%s' --out '%s'", in->qp, in->kp, in->vp, out);
    return buf;
}

static void dense(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], io[IO_MAX];
    run_cli(r, "attention %s --dense", io_args(io, sizeof io, &g_f32, tmp(op, "o.npy")));
    expect_ok(r);
    baatt_config c = input_config(&g_f32);
    c.dense = 1;
    float *ref = malloc(sizeof(float) * B * H * NQ * D);
    assert_int_equal(baatt_reference_attention(&c, g_f32.q, g_f32.k, g_f32.v, ref), BAATT_OK);
    check_output(op, &g_f32, ref, 2e-5, 2e-5);
    unlink(op);
    free(ref);
    free(r);
}

/* BA-Att with the given extra options; output against the reference on the tool's selection. */
static void sparse_run(const input *in, const char *opts, uint32_t block, uint32_t keep, int identity, double tol)
{
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], mp[PATH_MAX_], qp[PATH_MAX_], kp[PATH_MAX_], io[IO_MAX];
    run_cli(r, "attention %s %s --mask-out '%s' --perm-q-out '%s' --perm-k-out '%s'",
            io_args(io, sizeof io, in, tmp(op, "o.npy")), opts, tmp(mp, "mask.npy"), tmp(qp, "pq.npy"),
            tmp(kp, "pk.npy"));
    expect_ok(r);
    selection sel;
    read_selection(&sel, block, keep, identity);
    baatt_config c = input_config(in);
    c.block_size = block;
    float *ref = malloc(sizeof(float) * B * H * NQ * D);
    assert_int_equal(
        baatt_reference_sparse_attention(&c, in->q, in->k, in->v, sel.pq.data, sel.pk.data, sel.mask.data, ref),
        BAATT_OK);
    check_output(op, in, ref, tol, 2 * tol);
    unlink(op);
    free_selection(&sel);
    free(ref);
    free(r);
}

/* A dense run's side outputs: an all-ones mask on the --block grid (32: 4 x 3 blocks) and
 * identity permutations. Regression: the tool sized the mask on a 64 grid regardless of --block,
 * so the plan overflowed the buffer and the file had the wrong shape. */
static void dense_side_outputs(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], mp[PATH_MAX_], qp[PATH_MAX_], kp[PATH_MAX_], io[IO_MAX];
    run_cli(r, "attention %s --dense --block 32 --mask-out '%s' --perm-q-out '%s' --perm-k-out '%s'",
            io_args(io, sizeof io, &g_f32, tmp(op, "o.npy")), tmp(mp, "mask.npy"), tmp(qp, "pq.npy"),
            tmp(kp, "pk.npy"));
    expect_ok(r);
    unlink(op);
    selection sel;
    read_selection(&sel, 32, (NK + 31) / 32, 1);
    free_selection(&sel);
    free(r);
}

/* The "kernel" of the tool's --json output, "" when absent. */
static void json_kernel(const cli_result *r, char *out, size_t size)
{
    const char *k = strstr(r->out, "\"kernel\": \""), *e = k ? strchr(k + 11, '"') : NULL;
    size_t n = e ? (size_t)(e - (k + 11)) : 0;
    if (n >= size) n = size - 1;
    memcpy(out, k ? k + 11 : "", n);
    out[n] = 0;
}

/* --lse-out: float32 [B, H, NQ], against the reference LSE on the tool's own selection (BA-Att,
 * fp16) and over all keys (--dense, fp32), within th_lse_atol for the kernel that ran. */
static void lse_out(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], mp[PATH_MAX_], qp[PATH_MAX_], kp[PATH_MAX_], lp[PATH_MAX_], io[IO_MAX];
    const input *ins[2] = {&g_f16, &g_f32};
    for (int dense = 0; dense < 2; dense++) {
        const input *in = ins[dense];
        run_cli(r, "attention %s %s --json --lse-out '%s' --mask-out '%s' --perm-q-out '%s' --perm-k-out '%s'",
                io_args(io, sizeof io, in, tmp(op, "o.npy")), dense ? "--dense" : "", tmp(lp, "lse.npy"),
                tmp(mp, "mask.npy"), tmp(qp, "pq.npy"), tmp(kp, "pk.npy"));
        expect_ok(r);
        selection sel;
        read_selection(&sel, 64, dense ? 2 : 1, dense);
        baatt_config c = input_config(in);
        uint64_t shape[3] = {B, H, NQ};
        baatt_npy l;
        read_npy(lp, &l, BAATT_NPY_F32, 3, shape);
        float ref[B * H * NQ];
        assert_int_equal(baatt_reference_lse(&c, in->q, in->k, sel.pq.data, sel.pk.data, sel.mask.data, ref), BAATT_OK);
        char kernel[32];
        json_kernel(r, kernel, sizeof kernel);
        assert_true(kernel[0] != 0);
        assert_true(th_compare(l.data, ref, l.count, th_lse_atol(kernel, c.dtype), 1e-6, lp) <= 1.0);
        baatt_npy_free(&l);
        free_selection(&sel);
    }
    unlink(op), unlink(lp);
    free(r);
}

/* Defaults: block 64 gives 2 x 2 blocks, keep 0.5 of 2 is 1 block per row. */
static void baatt_default_f32(void **s)
{
    (void)s;
    sparse_run(&g_f32, "", 64, 1, 0, 2e-5);
}

/* fp16 in and out: output rounding is 2^-11 relative, as in test_attention. */
static void baatt_default_f16(void **s)
{
    (void)s;
    if (!picked_device().fp16_storage) skip();
    sparse_run(&g_f16, "", 64, 1, 0, 1e-3);
}

/* Mass-threshold selection without sorting: the permutations are identities. */
static void baatt_threshold_no_sort(void **s)
{
    (void)s;
    sparse_run(&g_f32, "--threshold 0.9 --block 32 --no-sort --no-cov", 32, 0, 1, 2e-5);
}

static void json_output(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], io[IO_MAX];
    run_cli(r, "attention %s --json", io_args(io, sizeof io, &g_f32, tmp(op, "o.npy")));
    expect_ok(r);
    unlink(op);
    assert_int_equal(r->out[0], '{');
    assert_int_equal(count_char(r->out, '\n'), 1); /* one line, so it can be appended to a .jsonl */
    expect_contains(r->out, "\"sparsity\"");
    expect_contains(r->out, "\"stages_ms\"");
    expect_contains(r->out, "\"sort_mode\": \"auto\"");       /* the default since issue 17 */
    expect_contains(r->out, "\"covariance_mode\": \"auto\""); /* the default since issue 17 item 5 */
    expect_contains(r->out, "\"cov_heads\": ");
    free(r);
}

/* --sort auto: the plan picks a blocking per kv head and says how many were sorted. */
static void sort_auto(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], io[IO_MAX];
    run_cli(r, "attention %s --sort auto --json", io_args(io, sizeof io, &g_f32, tmp(op, "o.npy")));
    expect_ok(r);
    unlink(op);
    expect_contains(r->out, "\"sort_mode\": \"auto\"");
    expect_contains(r->out, "\"sorted_heads\": ");
    run_cli(r, "attention %s --sort auto", io);
    expect_ok(r);
    unlink(op);
    expect_contains(r->out, "sort: auto, sorted kv heads: ");
    /* --covariance on: every kv head keeps the term (1 of 1 here), off: none */
    run_cli(r, "attention %s --covariance on", io);
    expect_ok(r);
    unlink(op);
    expect_contains(r->out, "covariance: on, lambda-1 kv heads: 1 of 1");
    run_cli(r, "attention %s --covariance off --json", io);
    expect_ok(r);
    unlink(op);
    expect_contains(r->out, "\"covariance_mode\": \"off\", \"cov_heads\": 0");
    free(r);
}

/* A failing command: exit status (want > 0, or any failure when 0), nothing on stdout and one
 * line on stderr that names the problem. */
static void expect_failure(cli_result *r, int want, const char *fragment)
{
    if (want) assert_int_equal(r->rc, want);
    if (r->rc <= 0 || r->rc >= 126) fprintf(stderr, "exit %d, stderr: %s\n", r->rc, r->err);
    assert_true(r->rc > 0 && r->rc < 126); /* a clean exit, not a crash or a shell error */
    assert_string_equal(r->out, "");
    if (count_char(r->err, '\n') != 1) fprintf(stderr, "stderr is not one line:\n%s", r->err);
    assert_int_equal(count_char(r->err, '\n'), 1);
    assert_int_equal(r->err[strlen(r->err) - 1], '\n');
    assert_int_equal(strncmp(r->err, "baatt", 5), 0);
    expect_contains(r->err, fragment);
}

/* ------------------------------------------------------------------------------------------ */
/* selections: --steps / --refresh, --mask-in / --perm-*-in                                   */

/* Writes a uint8 [B, H, nq, nk] mask (or int32 when as_i32) to tmp/name. */
static void write_mask(char *path, const char *name, const uint8_t *m, uint32_t nq, uint32_t nk, int as_i32)
{
    uint64_t shape[4] = {B, H, nq, nk};
    size_t n = (size_t)B * H * nq * nk;
    int32_t *w = malloc(4 * n);
    for (size_t i = 0; i < n; i++) w[i] = m[i];
    char msg[512];
    baatt_status s = baatt_npy_write(tmp(path, name), as_i32 ? BAATT_NPY_I32 : BAATT_NPY_U8, 4, shape,
                                     as_i32 ? (const void *)w : (const void *)m, msg, sizeof msg);
    free(w);
    if (s) fprintf(stderr, "%s\n", msg);
    assert_int_equal(s, BAATT_OK);
}

/* Steps that estimate every other step, then the last step's selection given back with
 * --mask-in and the perms: the same selection on the same inputs, the same output bytes. */
static void steps_and_mask_in(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], op2[PATH_MAX_], mp[PATH_MAX_], qp[PATH_MAX_], kp[PATH_MAX_], io[IO_MAX], io2[IO_MAX];
    run_cli(r, "attention %s --block 32 --steps 3 --refresh 2 --mask-out '%s' --perm-q-out '%s' --perm-k-out '%s'",
            io_args(io, sizeof io, &g_f32, tmp(op, "o.npy")), tmp(mp, "mask.npy"), tmp(qp, "pq.npy"),
            tmp(kp, "pk.npy"));
    expect_ok(r);
    expect_contains(r->out, "steps: 3; estimating 2, mean GPU time");
    expect_contains(r->out, "reusing 1, mean GPU time");
    run_cli(r, "attention %s --block 32 --mask-in '%s' --perm-q-in '%s' --perm-k-in '%s' --json",
            io_args(io2, sizeof io2, &g_f32, tmp(op2, "o2.npy")), mp, qp, kp);
    expect_ok(r);
    expect_contains(r->out, "\"selection\": \"given\"");
    expect_contains(r->out, "\"reusing_steps\": 1");
    baatt_npy a, b;
    uint64_t shape[4] = {B, H, NQ, D};
    read_npy(op, &a, BAATT_NPY_F32, 4, shape);
    read_npy(op2, &b, BAATT_NPY_F32, 4, shape);
    assert_memory_equal(a.data, b.data, 4 * a.count);
    baatt_npy_free(&a), baatt_npy_free(&b);
    unlink(op), unlink(op2), unlink(mp), unlink(qp), unlink(kp);
    free(r);
}

/* A random mask in the original token order (no perms), against the reference. */
static void mask_in_original_order(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], mp[PATH_MAX_], io[IO_MAX];
    uint32_t nq = (NQ + 31) / 32, nk = (NK + 31) / 32;
    size_t n = (size_t)B * H * nq * nk;
    uint8_t *m = malloc(n);
    uint64_t rng = th_seed() ^ 0xC12;
    for (size_t i = 0; i < n; i++) m[i] = i % nk == 0 || th_uniform(&rng) < 0.4f;
    write_mask(mp, "mask_in.npy", m, nq, nk, 0);
    run_cli(r, "attention %s --block 32 --mask-in '%s'", io_args(io, sizeof io, &g_f32, tmp(op, "o.npy")), mp);
    expect_ok(r);
    expect_contains(r->out, "selection: given (--mask-in), sorted kv heads: 0 of 1");
    baatt_config c = input_config(&g_f32);
    c.block_size = 32;
    int32_t pq[B * H * NQ], pk[B * HKV * NK];
    for (int i = 0; i < B * H * NQ; i++) pq[i] = i % NQ;
    for (int i = 0; i < B * HKV * NK; i++) pk[i] = i % NK;
    float *ref = malloc(sizeof(float) * B * H * NQ * D);
    assert_int_equal(baatt_reference_sparse_attention(&c, g_f32.q, g_f32.k, g_f32.v, pq, pk, m, ref), BAATT_OK);
    check_output(op, &g_f32, ref, 2e-5, 4e-5);
    unlink(op), unlink(mp);
    free(ref), free(m), free(r);
}

static void mask_in_errors(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], mp[PATH_MAX_], bp[PATH_MAX_], ip[PATH_MAX_], ep[PATH_MAX_], qp[PATH_MAX_], io[IO_MAX];
    io_args(io, sizeof io, &g_f32, tmp(op, "o.npy"));
    unlink(op);
    uint32_t nq = (NQ + 31) / 32, nk = (NK + 31) / 32;
    size_t n = (size_t)B * H * nq * nk;
    uint8_t *m = malloc(n);
    memset(m, 1, n);
    write_mask(mp, "mask_in.npy", m, nq, nk, 0);
    write_mask(ip, "mask_i32.npy", m, nq, nk, 1);
    m[nk + 2] = 2; /* head 0, query block 1, key block 2 */
    write_mask(bp, "mask_bad.npy", m, nq, nk, 0);
    memset(m, 1, n);
    memset(m + 3 * nk, 0, nk); /* head 0, query block 3: empty */
    write_mask(ep, "mask_empty.npy", m, nq, nk, 0);
    int32_t pq[B * H * NQ];
    for (int i = 0; i < B * H * NQ; i++) pq[i] = i % NQ;
    pq[NQ + 5] = 7; /* head 1: 7 twice */
    uint64_t qs[3] = {B, H, NQ};
    char msg[512];
    assert_int_equal(baatt_npy_write(tmp(qp, "pq_in.npy"), BAATT_NPY_I32, 3, qs, pq, msg, sizeof msg), BAATT_OK);

    run_cli(r, "attention %s --block 32 --mask-in '%s'", io, bp);
    expect_failure(r, 0, "mask[0][0][1][2] is 2: mask entries must be 0 or 1");
    run_cli(r, "attention %s --block 32 --mask-in '%s'", io, ep);
    expect_failure(r, 0, "query block 3) selects no key block");
    run_cli(r, "attention %s --block 32 --mask-in '%s'", io, ip);
    expect_failure(r, 0, "dtype must be uint8");
    run_cli(r, "attention %s --mask-in '%s'", io, mp); /* block 64: 2 x 2 blocks */
    expect_failure(r, 0, "shape [1, 2, 4, 3], these inputs need [1, 2, 2, 2] (blocks of --block 64)");
    run_cli(r, "attention %s --block 32 --mask-in '%s' --perm-q-in '%s'", io, mp, qp);
    expect_failure(r, 0, "perm_q is not a permutation: [batch 0, head 1] holds 7 twice");
    run_cli(r, "attention %s --block 32 --mask-in '%s' --perm-k-in '%s'", io, mp, qp);
    expect_failure(r, 0, "--perm-k-in");
    run_cli(r, "attention %s --perm-q-in '%s'", io, qp);
    expect_failure(r, 0, "need --mask-in");
    run_cli(r, "attention %s --dense --mask-in '%s'", io, mp);
    expect_failure(r, 0, "--mask-in and --dense");
    run_cli(r, "attention %s --steps 3 --refresh 2 --mask-in '%s'", io, mp);
    expect_failure(r, 0, "--refresh");
    run_cli(r, "attention %s --refresh 2", io);
    expect_failure(r, 0, "--refresh needs --steps");
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s' --block 32 --mask-in '%s'", g_f32.qp, g_f32.kp,
            g_f32.vp, mp, mp);
    expect_failure(r, 0, "is also an input");
    assert_int_equal(access(op, F_OK), -1);
    unlink(mp), unlink(bp), unlink(ip), unlink(ep), unlink(qp);
    free(m), free(r);
}

static void bad_options(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_], io[IO_MAX];
    const input *f = &g_f32;
    io_args(io, sizeof io, f, tmp(op, "o.npy"));
    unlink(op);
    run_cli(r, "attention --k '%s' --v '%s' --out '%s'", f->kp, f->vp, op);
    expect_failure(r, 0, "--q");
    run_cli(r, "attention %s --bogus", io);
    expect_failure(r, 0, "--bogus");
    run_cli(r, "attention %s --keep 0", io);
    expect_failure(r, 0, "keep");
    run_cli(r, "attention %s --keep 1.5", io);
    expect_failure(r, 0, "1.5");
    run_cli(r, "attention %s --block 48", io);
    expect_failure(r, 0, "48");
    run_cli(r, "attention %s --sort sideways", io);
    expect_failure(r, 0, "sideways");
    run_cli(r, "attention %s --covariance maybe", io);
    expect_failure(r, 0, "--covariance maybe: expected auto, on or off");
    run_cli(r, "nosuchcmd");
    expect_failure(r, 2, "nosuchcmd");
    assert_int_equal(access(op, F_OK), -1); /* no failed run leaves an output behind */
    free(r);
}

static void bad_inputs(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char op[PATH_MAX_];
    const input *f = &g_f32;
    unlink(tmp(op, "o.npy"));
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", g_missing, f->kp, f->vp, op);
    expect_failure(r, 0, "missing.npy");
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", g_garbage, f->kp, f->vp, op);
    expect_failure(r, 0, "garbage.npy");
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", f->qp, g_k128, g_v128, op);
    expect_failure(r, 0, "head_dim");
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", f->qp, f->kp, g_v91, op);
    expect_failure(r, 0, "k and v");
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", g_q3, g_k2, g_v2, op);
    expect_failure(r, 0, "kv_heads");
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", g_q80, g_k80, g_v80, op);
    expect_failure(r, 0, "head_dim 80");
    assert_int_equal(access(op, F_OK), -1);
    free(r);
}

/* A NaN or infinity in an input is refused, naming the tensor and the first bad index, unless
 * --allow-nonfinite: then a NaN key poisons every output row (docs/RELIABILITY.md). */
static void nonfinite_inputs(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    const input *f = &g_f32;
    char kp[PATH_MAX_], op[PATH_MAX_], msg[512];
    float *k = th_to_float(f->k, BAATT_DTYPE_F32, (size_t)B * HKV * NK * D);
    k[(37 * D) + 5] = NAN;
    k[(50 * D) + 1] = INFINITY; /* after the first: not the one named */
    uint64_t shape[4] = {B, HKV, NK, D};
    assert_int_equal(baatt_npy_write(tmp(kp, "k_nan.npy"), BAATT_NPY_F32, 4, shape, k, msg, sizeof msg), BAATT_OK);
    unlink(tmp(op, "o_nan.npy"));
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", f->qp, kp, f->vp, op);
    expect_failure(r, 1, "--k (");
    expect_contains(r->err, "non-finite value nan at [0, 0, 37, 5] (flat index 2373)");
    expect_contains(r->err, "--allow-nonfinite");
    assert_int_equal(access(op, F_OK), -1);
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s' --allow-nonfinite", f->qp, kp, f->vp, op);
    expect_ok(r);
    baatt_npy o;
    uint64_t oshape[4] = {B, H, NQ, D};
    read_npy(op, &o, BAATT_NPY_F32, 4, oshape);
    for (size_t i = 0; i < o.count; i++) assert_true(isnan(((const float *)o.data)[i]));
    baatt_npy_free(&o);
    unlink(op);
    unlink(kp);
    free(k);
    free(r);
}

/* Output paths are refused before any GPU work when they are an input (by another name too),
 * another output, a directory or in a missing directory; the input stays untouched. bench's
 * --json and --mask-dir likewise exit 1 at once. */
static void output_paths(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    const input *f = &g_f32;
    char op[PATH_MAX_], dir[PATH_MAX_], bad[PATH_MAX_ + 32], link[PATH_MAX_];
    size_t n0;
    baatt_npy before;
    read_npy(f->qp, &before, BAATT_NPY_F32, 4, (const uint64_t[]){B, H, NQ, D});
    n0 = before.count;
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", f->qp, f->kp, f->vp, f->qp);
    expect_failure(r, 1, "is also an input");
    unlink(tmp(link, "q_link.npy"));
    assert_int_equal(symlink(f->qp, link), 0);
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", f->qp, f->kp, f->vp, link);
    expect_failure(r, 1, "is also an input");
    unlink(link);
    baatt_npy after;
    read_npy(f->qp, &after, BAATT_NPY_F32, 4, (const uint64_t[]){B, H, NQ, D});
    assert_int_equal(after.count, n0);
    assert_memory_equal(after.data, before.data, n0 * 4);
    baatt_npy_free(&before);
    baatt_npy_free(&after);
    unlink(tmp(op, "o_twice.npy"));
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s' --mask-out '%s'", f->qp, f->kp, f->vp, op, op);
    expect_failure(r, 1, "given twice");
    snprintf(bad, sizeof bad, "%s/no/such/dir/o.npy", th_tmp_path(dir, sizeof dir, "outdir"));
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", f->qp, f->kp, f->vp, bad);
    expect_failure(r, 1, "cannot create");
    mkdir(dir, 0755);
    run_cli(r, "attention --q '%s' --k '%s' --v '%s' --out '%s'", f->qp, f->kp, f->vp, dir);
    expect_failure(r, 1, "is a directory");
    run_cli(r, "bench --n 64 --reps 3 --json '%s'", bad);
    expect_failure(r, 1, "cannot create");
    run_cli(r, "bench --n 64 --reps 3 --mask-dir '%s'", f->qp);
    expect_failure(r, 1, "not a directory");
    rmdir(dir);
    free(r);
}

static void demo(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    run_cli(r, "demo --n 128 --heads 1 --dim 64");
    expect_ok(r);
    /* the speed-up needs GPU timestamps */
    if (picked_device().timestamp_period_ns > 0) expect_contains(r->out, "speed-up");
    free(r);
}

/* bench through the public API (device buffers, baatt_plan_run_buffers): both dtypes checked
 * against the CPU reference, the JSON records name the kernels, and the selection export is a
 * valid mask and permutation pair. */
static void bench_check(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    char jp[PATH_MAX_], dir[PATH_MAX_], mp[PATH_MAX_ + 64], kp[PATH_MAX_ + 64], json[4096];
    tmp(jp, "bench.json");
    tmp(dir, "masks");
    run_cli(r,
            "bench --n 200 --keep 0.5 --heads 2 --dim 64 --dtype f32,f16 --reps 2 --warmup 0 --check --json '%s' "
            "--mask-dir '%s'",
            jp, dir);
    expect_ok(r);
    expect_contains(r->err, "4 of 4 configurations timed");
    assert_null(strstr(r->err, "FAIL"));
    int passes = 0;
    for (const char *p = r->err; (p = strstr(p, ": PASS")); p++) passes++;
    assert_int_equal(passes, 4); /* dense and BA-Att, f32 and f16 */
    read_file(jp, json, sizeof json);
    expect_contains(json, "\"kernel\": \"");
    expect_contains(json, "\"score_kernel\": \"");
    expect_contains(json, "\"check_max_err\": ");
    baatt_npy mask, pk;
    uint64_t ms[4] = {1, 2, 4, 4}, ks[3] = {1, 2, 200};
    snprintf(mp, sizeof mp, "%s/mask_n200_k0.5.npy", dir);
    snprintf(kp, sizeof kp, "%s/permk_n200_k0.5.npy", dir);
    read_npy(mp, &mask, BAATT_NPY_U8, 4, ms);
    read_npy(kp, &pk, BAATT_NPY_I32, 3, ks);
    for (uint32_t row = 0; row < 8; row++) {
        uint32_t ones = 0;
        for (uint32_t j = 0; j < 4; j++) ones += ((const uint8_t *)mask.data)[row * 4 + j];
        assert_int_equal(ones, 2); /* ceil(0.5 * 4) */
    }
    check_perm(pk.data, 2, 200, 0);
    baatt_npy_free(&mask), baatt_npy_free(&pk);
    const char *names[] = {"mask", "permq", "permk"};
    for (int i = 0; i < 3; i++) {
        snprintf(mp, sizeof mp, "%s/%s_n200_k0.5.npy", dir, names[i]);
        unlink(mp);
    }
    rmdir(dir);
    unlink(jp);
    free(r);
}

/* eval from the harness: one JSON record per (method, target), BA-Att's from the GPU. */
static void eval_json(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    run_cli(r, "eval --workload clustered --n 256 --heads 2 --methods baatt,baatt_auto,oracle --sparsity 0.5,0.75 "
               "--gpu --quiet --json -");
    expect_ok(r);
    assert_int_equal(r->out[0], '[');
    int records = 0;
    for (const char *p = r->out; (p = strstr(p, "\"workload\": \"clustered\"")); p++) records++;
    assert_int_equal(records, 6);
    expect_contains(r->out, "\"method\": \"baatt_auto\"");
    expect_contains(r->out, "\"selection\": \"gpu\"");
    run_cli(r, "eval --workload clustered --methods nosuch");
    expect_failure(r, 0, "nosuch");
    free(r);
}

/* eval's reuse study: one JSON record per (drift, step 0..max, method, target), no drift loses
 * nothing; bad lists and --gpu are refused. */
static void eval_reuse(void **s)
{
    (void)s;
    cli_result *r = malloc(sizeof *r);
    run_cli(r, "eval --workload clustered --n 256 --heads 2 --methods baatt,oracle --keep 0.5 --drift 0,0.2 "
               "--reuse-steps 1,3 --no-outputs --quiet --json -");
    expect_ok(r);
    int records = 0;
    for (const char *p = r->out; (p = strstr(p, "\"workload\": \"clustered\"")); p++) records++;
    assert_int_equal(records, 2 * 4 * 2);
    expect_contains(r->out, "\"drift\": 0.2, \"step\": 3");
    expect_contains(r->out, "\"reused_mass_recall\"");
    run_cli(r, "eval --workload clustered --n 256 --heads 2 --methods baatt --keep 0.5 --drift 0 --reuse-steps 2 "
               "--no-outputs --quiet");
    expect_ok(r);
    expect_contains(r->out, "-- drift 0, keep 0.5");
    expect_contains(r->out, "lost");
    run_cli(r, "eval --workload clustered --drift 1.5");
    expect_failure(r, 0, "--drift");
    run_cli(r, "eval --workload clustered --reuse-steps 0");
    expect_failure(r, 0, "--reuse-steps");
    run_cli(r, "eval --workload clustered --drift 0.1 --gpu");
    expect_failure(r, 0, "--gpu");
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(help_and_info),
        cmocka_unit_test(dense),
        cmocka_unit_test(dense_side_outputs),
        cmocka_unit_test(baatt_default_f32),
        cmocka_unit_test(baatt_default_f16),
        cmocka_unit_test(baatt_threshold_no_sort),
        cmocka_unit_test(json_output),
        cmocka_unit_test(sort_auto),
        cmocka_unit_test(bad_options),
        cmocka_unit_test(bad_inputs),
        cmocka_unit_test(nonfinite_inputs),
        cmocka_unit_test(output_paths),
        cmocka_unit_test(steps_and_mask_in),
        cmocka_unit_test(mask_in_original_order),
        cmocka_unit_test(mask_in_errors),
        cmocka_unit_test(demo),
        cmocka_unit_test(bench_check),
        cmocka_unit_test(eval_json),
        cmocka_unit_test(lse_out),
        cmocka_unit_test(eval_reuse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
