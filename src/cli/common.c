/* Helpers shared by the commands: errors, option values, opening a device, JSON strings. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    if (msgs) cli_fail(cmd, "the validation layer reported %u message%s (BAATT_VALIDATION=1)", msgs, msgs == 1 ? "" : "s");
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
