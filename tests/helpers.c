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
#include "runtime.h"

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
        if (!(e <= worst)) {
            worst = e;
            wi = i;
        }
        if (isinf(worst)) break;
    }
    if (label && worst > 1)
        fprintf(stderr, "[ mismatch ] %s: element %zu got %.9g want %.9g (error %.3g of tolerance)\n", label, wi,
                (double)a[wi], (double)b[wi], worst);
    return worst;
}

/* The live contexts from th_context and their message counts when the current test started. */
enum { TH_MAX_CONTEXTS = 16 };
static struct {
    baatt_context *ctx;
    uint32_t start;
} th_live[TH_MAX_CONTEXTS];

static void th_register(baatt_context *ctx)
{
    for (int i = 0; i < TH_MAX_CONTEXTS; i++)
        if (!th_live[i].ctx) {
            th_live[i].ctx = ctx;
            th_live[i].start = baatt_context_validation_messages(ctx);
            return;
        }
}

int th_test_setup(void **state)
{
    (void)state;
    for (int i = 0; i < TH_MAX_CONTEXTS; i++)
        if (th_live[i].ctx) th_live[i].start = baatt_context_validation_messages(th_live[i].ctx);
    return 0;
}

int th_test_teardown(void **state)
{
    (void)state;
    uint32_t fresh = 0;
    for (int i = 0; i < TH_MAX_CONTEXTS; i++)
        if (th_live[i].ctx) fresh += baatt_context_validation_messages(th_live[i].ctx) - th_live[i].start;
    if (fresh) fprintf(stderr, "[ FAILED   ] %u validation message(s) during this test (see above)\n", fresh);
    th_test_setup(state); /* counted once: the next test starts from here */
    assert_int_equal(fresh, 0);
    return 0;
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
    th_register(ctx);
    return ctx;
}

/* Unregisters and destroys ctx; returns its validation messages (teardown's included). */
static uint32_t th_context_close(baatt_context *ctx)
{
    for (int i = 0; i < TH_MAX_CONTEXTS; i++)
        if (th_live[i].ctx == ctx) th_live[i].ctx = NULL;
    return baatt_context_destroy_counted(ctx);
}

void th_context_done(baatt_context *ctx)
{
    uint32_t msgs = th_context_close(ctx);
    if (msgs) fprintf(stderr, "[ FAILED   ] %u validation message(s) on a context (see above)\n", msgs);
    assert_int_equal(msgs, 0);
}

void th_tolerance_variant(baatt_dtype dt, uint32_t portable, double *atol, double *rtol)
{
    *atol = dt == BAATT_DTYPE_BF16 ? 8e-3 : dt == BAATT_DTYPE_F16 ? 1e-3 : 2e-5;
    *rtol = dt == BAATT_DTYPE_BF16 ? 8e-3 : dt == BAATT_DTYPE_F16 ? 2e-3 : 2e-5;
    if (dt != BAATT_DTYPE_F16) return; /* the variants are fp16 builds */
    if (portable & BAATT_PORTABLE_QK16) *atol = *rtol = 8e-3;
    if (portable & BAATT_PORTABLE_PV16) *atol += 1e-3; /* on top of either */
}

void th_tolerance(baatt_dtype dt, double *atol, double *rtol)
{
    th_tolerance_variant(dt, th_ctx ? baatt_context_tuning(th_ctx)->portable : 0, atol, rtol);
}

double th_lse_atol(const char *attend_path, baatt_dtype dt)
{
    /* fp16 Q K^T (see th_tolerance_variant): a score's error, ~2^-11 of the sum of its |terms| */
    if (dt == BAATT_DTYPE_F16 && th_ctx && (baatt_context_tuning(th_ctx)->portable & BAATT_PORTABLE_QK16) &&
        !strcmp(attend_path, "portable"))
        return 8e-3;
    if (strcmp(attend_path, "nv-coopmat2")) return 2e-5;
    return dt == BAATT_DTYPE_BF16 ? 4e-3 + 2e-5 : dt == BAATT_DTYPE_F16 ? 5e-4 + 2e-5 : 2e-5;
}

void th_check_dense(const baatt_config *c, const void *q, const void *k, const void *v, const void *o,
                    const char *label)
{
    size_t n = (size_t)c->batch * c->heads * c->q_len * c->head_dim;
    float *ref = malloc(n * sizeof *ref), *got = th_to_float(o, c->dtype, n);
    assert_non_null(ref);
    assert_int_equal(baatt_reference_attention(c, q, k, v, ref), BAATT_OK);
    double atol, rtol;
    th_tolerance(c->dtype, &atol, &rtol);
    assert_true(th_compare(got, ref, n, atol, rtol, label) <= 1);
    free(ref), free(got);
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
    uint32_t msgs = th_context_close(th_ctx);
    th_ctx = NULL;
    if (msgs) {
        fprintf(stderr, "[ FAILED   ] %u validation message(s) on the group's context (see above)\n", msgs);
        exit(1);
    }
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
