/* Helpers shared by the commands: errors, option values, opening a device, JSON strings. */
#define _XOPEN_SOURCE 700 /* realpath, access under a strict -std=c11 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "rng.h"

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "baatt %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_status(const char *cmd, baatt_status s, const baatt_context *ctx, const char *what)
{
    const char *msg = ctx ? baatt_context_error(ctx) : "";
    return cli_fail(cmd, "%s: %s%s%s", what, baatt_status_string(s), *msg ? ": " : "", msg);
}

int cli_arg_str(const char *cmd, int argc, char **argv, int *i, const char **out)
{
    if (*i + 1 >= argc) {
        cli_fail(cmd, "option %s needs a value", argv[*i]);
        return 0;
    }
    *out = argv[++*i];
    return 1;
}

int cli_arg_u32(const char *cmd, int argc, char **argv, int *i, unsigned *out)
{
    const char *s;
    if (!cli_arg_str(cmd, argc, argv, i, &s)) return 0;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || !*s || s[0] == '-' || v > 0xffffffffUL) {
        cli_fail(cmd, "option %s: '%s' is not a non-negative integer", argv[*i - 1], s);
        return 0;
    }
    *out = (unsigned)v;
    return 1;
}

static const char *const SORT_NAMES[] = {"off", "norm", "auto"}; /* indexed by baatt_sort_mode */

const char *cli_sort_name(int mode)
{
    return mode >= BAATT_SORT_OFF && mode <= BAATT_SORT_AUTO ? SORT_NAMES[mode] : "?";
}

/* An option whose value is one of three names, indexed by the mode (off, on/norm, auto). */
static int arg_named(const char *cmd, int argc, char **argv, int *i, const char *const names[3], int *mode)
{
    const char *v, *opt = argv[*i];
    if (!cli_arg_str(cmd, argc, argv, i, &v)) return 0;
    for (int m = 0; m < 3; m++)
        if (!strcmp(v, names[m])) return *mode = m, 1;
    return cli_fail(cmd, "%s %s: expected %s, %s or %s", opt, v, names[2], names[1], names[0]), 0;
}

int cli_arg_sort(const char *cmd, int argc, char **argv, int *i, int *mode)
{
    return arg_named(cmd, argc, argv, i, SORT_NAMES, mode);
}

static const char *const COV_NAMES[] = {"off", "on", "auto"}; /* indexed by baatt_covariance_mode */

const char *cli_cov_name(int mode)
{
    return mode >= BAATT_COVARIANCE_OFF && mode <= BAATT_COVARIANCE_AUTO ? COV_NAMES[mode] : "?";
}

int cli_arg_cov(const char *cmd, int argc, char **argv, int *i, int *mode)
{
    return arg_named(cmd, argc, argv, i, COV_NAMES, mode);
}

int cli_arg_float(const char *cmd, int argc, char **argv, int *i, float *out)
{
    const char *s;
    if (!cli_arg_str(cmd, argc, argv, i, &s)) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !*s || !isfinite(v)) {
        cli_fail(cmd, "option %s: '%s' is not a finite number", argv[*i - 1], s);
        return 0;
    }
    *out = (float)v;
    return 1;
}

int cli_open(const char *cmd, const char *device, baatt_context **ctx)
{
    baatt_context_options o = baatt_context_options_default();
    if (device) {
        char *end;
        long v = strtol(device, &end, 10);
        if (*device && !*end && v >= 0) o.device_index = (int)v;
        else o.device_name = device;
    }
    baatt_status s = baatt_context_create(&o, ctx);
    if (s) {
        cli_fail_status(cmd, s, *ctx, "cannot open a Vulkan device");
        baatt_context_destroy(*ctx);
        *ctx = NULL;
        return 0;
    }
    return 1;
}

int cli_close(const char *cmd, baatt_context *ctx)
{
    uint32_t msgs = baatt_context_validation_messages(ctx);
    baatt_context_destroy(ctx);
    if (msgs)
        cli_fail(cmd, "the validation layer reported %u message%s (BAATT_VALIDATION=1)", msgs, msgs == 1 ? "" : "s");
    return msgs != 0;
}

const char *cli_device_type(baatt_device_type t)
{
    switch (t) {
    case BAATT_DEVICE_DISCRETE_GPU: return "discrete GPU";
    case BAATT_DEVICE_INTEGRATED_GPU: return "integrated GPU";
    case BAATT_DEVICE_VIRTUAL_GPU: return "virtual GPU";
    case BAATT_DEVICE_CPU: return "CPU";
    default: return "other";
    }
}

void cli_device_line(const baatt_device_info *d, char *buf, size_t n)
{
    snprintf(buf, n, "%s (%s, %s %s)", d->name, cli_device_type(d->type), d->driver_name, d->driver_info);
}

void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

void *cli_random(uint64_t *state, baatt_dtype dt, size_t n)
{
    float *f = malloc(n * sizeof *f + 1);
    void *p = f ? malloc(n * baatt_dtype_size(dt) + 1) : NULL;
    if (p) {
        for (size_t i = 0; i < n; i++) f[i] = (float)eval_rng_normal(state);
        baatt_dtype_convert(f, BAATT_DTYPE_F32, p, dt, n);
    }
    free(f);
    return p;
}

float cli_load(const void *p, baatt_dtype dt, size_t i)
{
    float x = NAN;
    baatt_dtype_convert((const char *)p + i * baatt_dtype_size(dt), dt, &x, BAATT_DTYPE_F32, 1);
    return x;
}

double cli_max_rel(const void *a, baatt_dtype dt, const float *ref, size_t n)
{
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        double x = cli_load(a, dt, i), d = isnan(x) ? INFINITY : fabs(x - ref[i]);
        if (!(d <= e)) e = d;
    }
    return e / (1e-6 + m);
}

double cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

int cli_check_finite(const char *cmd, const char *name, const char *path, const void *data, baatt_dtype dt,
                     const uint64_t *shape, uint32_t rank)
{
    uint64_t n = 1, at;
    for (uint32_t i = 0; i < rank; i++) n *= shape[i];
    if (baatt_find_nonfinite(data, dt, n, &at) == BAATT_OK) return 1;
    char idx[8 * 24 + 4] = "";
    size_t len = 0;
    uint64_t rest = at, stride = n;
    for (uint32_t i = 0; i < rank && len < sizeof idx; i++) {
        stride /= shape[i];
        len +=
            (size_t)snprintf(idx + len, sizeof idx - len, "%s%llu", i ? ", " : "", (unsigned long long)(rest / stride));
        rest %= stride;
    }
    float x = cli_load(data, dt, (size_t)at);
    return cli_fail(cmd,
                    "%s (%s): non-finite value %s at [%s] (flat index %llu); NaN and infinities propagate "
                    "(docs/RELIABILITY.md): pass --allow-nonfinite to run anyway",
                    name, path,
                    isnan(x) ? "nan"
                    : x > 0  ? "inf"
                             : "-inf",
                    idx, (unsigned long long)at),
           0;
}

/* The absolute path a name refers to, also for a file not created yet (its directory resolved). */
static void canonical(const char *path, char *out)
{
    if (realpath(path, out)) return;
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash == path ? 1 : slash - path) : 1, slash ? path : ".");
    if (!realpath(dir, real)) snprintf(real, sizeof real, "%s", dir);
    if (snprintf(out, PATH_MAX, "%s/%s", real, slash ? slash + 1 : path) >= PATH_MAX)
        snprintf(out, PATH_MAX, "%s", path);
}

/* Same file: the same inode where both exist (hard links too), else the same canonical path. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char ca[PATH_MAX], cb[PATH_MAX];
    canonical(a, ca);
    canonical(b, cb);
    return !strcmp(ca, cb);
}

/* An existing path must be a writable non-directory; a new one needs a writable directory. */
static int writable(const char *cmd, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return cli_fail(cmd, "output %s is a directory", path), 0;
        if (access(path, W_OK)) return cli_fail(cmd, "cannot write %s: %s", path, strerror(errno)), 0;
        return 1;
    }
    if (errno != ENOENT) return cli_fail(cmd, "cannot write %s: %s", path, strerror(errno)), 0;
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash == path ? 1 : slash - path), path);
    if (stat(dir, &st) || !S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK))
        return cli_fail(cmd, "cannot create %s: directory %s is %s", path, dir,
                        stat(dir, &st)        ? "missing"
                        : S_ISDIR(st.st_mode) ? "not writable"
                                              : "not a directory"),
               0;
    return 1;
}

int cli_check_outputs(const char *cmd, const char *const *in, int nin, const char *const *out, int nout)
{
    for (int i = 0; i < nout; i++) {
        if (!out[i]) continue;
        for (int j = 0; j < nin; j++)
            if (in[j] && same_file(out[i], in[j]))
                return cli_fail(cmd, "output %s is also an input: refusing to overwrite it", out[i]), 0;
        for (int j = 0; j < i; j++)
            if (out[j] && same_file(out[i], out[j]))
                return cli_fail(cmd, "output %s is given twice: each output needs its own file", out[i]), 0;
        if (!writable(cmd, out[i])) return 0;
    }
    return 1;
}
