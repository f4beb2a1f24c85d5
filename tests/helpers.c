#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "choice.h"
#include "internal.h"
#include "rng.h"

uint64_t th_seed(void)
{
    static uint64_t seed;
    if (!seed) {
        const char *env = getenv("BAATT_TEST_SEED");
        seed = env ? strtoull(env, NULL, 0) : ((uint64_t)time(NULL) * 2654435761u) ^ ((uint64_t)getpid() << 20);
        if (!seed) seed = 1;
        fprintf(stderr, "[ seed     ] BAATT_TEST_SEED=%llu\n", (unsigned long long)seed);
    }
    return seed;
}

uint64_t th_next(uint64_t *s) { return eval_rng_next(s); }

float th_uniform(uint64_t *s) { return (float)((th_next(s) >> 40) * (1.0 / 16777216.0)); }

float th_normal(uint64_t *s) { return (float)eval_rng_normal(s); }

void *th_random_tensor(uint64_t *s, baatt_dtype dt, size_t n, float sigma)
{
    void *p = malloc(n * baatt_dtype_size(dt) + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) baatt_store(p, dt, i, sigma * th_normal(s));
    return p;
}

void th_poison(void *p, baatt_dtype dt, size_t n)
{
    for (size_t i = 0; i < n; i++) baatt_store(p, dt, i, NAN);
}

float *th_to_float(const void *p, baatt_dtype dt, size_t n)
{
    float *f = malloc(n * sizeof(float) + 1);
    assert_non_null(f);
    for (size_t i = 0; i < n; i++) f[i] = baatt_load(p, dt, i);
    return f;
}

double th_compare(const float *a, const float *b, size_t n, double atol, double rtol, const char *label)
{
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = isnan(a[i]) || isnan(b[i]) ? INFINITY : fabs((double)a[i] - b[i]) / (atol + rtol * fabs(b[i]));
        if (!(e <= worst)) { worst = e; wi = i; }
        if (isinf(worst)) break;
    }
    if (label && worst > 1)
        fprintf(stderr, "[ mismatch ] %s: element %zu got %.9g want %.9g (error %.3g of tolerance)\n", label, wi,
                (double)a[wi], (double)b[wi], worst);
    return worst;
}

baatt_context *th_context(void)
{
    baatt_context_options o = baatt_context_options_default();
    o.validation = getenv("BAATT_VALIDATION") && atoi(getenv("BAATT_VALIDATION"));
    baatt_context *ctx = NULL;
    baatt_status s = baatt_context_create(&o, &ctx);
    if (s == BAATT_ERROR_NO_VULKAN || s == BAATT_ERROR_NO_DEVICE) {
        fprintf(stderr, "SKIP: no Vulkan device: %s\n", baatt_context_error(ctx));
        baatt_context_destroy(ctx);
        exit(77);
    }
    if (s != BAATT_OK) fprintf(stderr, "context: %s: %s\n", baatt_status_string(s), baatt_context_error(ctx));
    assert_int_equal(s, BAATT_OK);
    return ctx;
}

void th_context_done(baatt_context *ctx)
{
    uint32_t msgs = baatt_context_validation_messages(ctx);
    baatt_context_destroy(ctx);
    assert_int_equal(msgs, 0);
}

void th_tolerance(baatt_dtype dt, double *atol, double *rtol)
{
    *atol = dt == BAATT_DTYPE_BF16 ? 8e-3 : dt == BAATT_DTYPE_F16 ? 1e-3 : 2e-5;
    *rtol = dt == BAATT_DTYPE_BF16 ? 8e-3 : dt == BAATT_DTYPE_F16 ? 2e-3 : 2e-5;
}

baatt_context *th_ctx;

baatt_tuning th_tuning(void) { return *baatt_context_tuning(th_ctx); }

baatt_status th_plan_create(const baatt_config *c, const baatt_tuning *t, baatt_plan **plan)
{
    return baatt_plan_create_tuned(th_ctx, c, t, plan);
}

int th_group_setup(void **state)
{
    (void)state;
    th_ctx = th_context();
    return 0;
}

int th_group_teardown(void **state)
{
    (void)state;
    th_context_done(th_ctx);
    return 0;
}

void th_expect_plan_error(baatt_config c, baatt_status want, const char *fragment)
{
    baatt_plan *plan = (baatt_plan *)0x1; /* must be reset to NULL on failure */
    assert_int_equal(baatt_plan_create(th_ctx, &c, &plan), want);
    assert_null(plan);
    const char *msg = baatt_context_error(th_ctx);
    if (!strstr(msg, fragment)) fprintf(stderr, "message '%s' lacks '%s'\n", msg, fragment);
    assert_non_null(strstr(msg, fragment));
}

const char *th_tmp_path(char *buf, size_t n, const char *name)
{
    const char *dir = getenv("BAATT_TEST_TMP");
    snprintf(buf, n, "%s/baatt-%d-%s", dir ? dir : "/tmp", (int)getpid(), name);
    return buf;
}
