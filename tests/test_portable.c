/* The portable attention kernel's variants (tuning key portable=, src/stages/attend.c, NOTES.md
 * #62-#65) against the CPU reference on fresh random inputs: the plan runs the variant asked
 * where the device has what it needs (else a visible skip), and each stays within its tolerance
 * (th_tolerance_variant) on inputs that stress fp16 range: outlier channels with |q|, |k| up to
 * 30 (as diffusion models have), and values that overflow the packed fp16 sums (the kernel's fp32
 * fallbacks). Every combination of qk16 and pv16, with and without long, and the base kernel, is
 * checked. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "choice.h"
#include "helpers.h"
#include "internal.h"

/* Each name and the BAATT_PORTABLE_* bits it asks for (qk16 1, pv16 2, long 4). */
static const struct {
    const char *name;
    uint32_t bits;
} variants[] = {{"base", 0},      {"qk16", 1},      {"pv16", 2},          {"qk16+pv16", 3},
                {"qk16+long", 5}, {"pv16+long", 6}, {"long+pv16+qk16", 7}};
#define NVARIANTS (sizeof variants / sizeof variants[0])

static baatt_tuning tuning_of(const char *variant)
{
    baatt_tuning t = th_tuning();
    char s[96], msg[256];
    snprintf(s, sizeof s, "attend=portable,portable=%s", variant);
    assert_int_equal(baatt_tuning_parse(s, &t, msg, sizeof msg), BAATT_OK);
    return t;
}

static baatt_config dense_f16(uint32_t q_len, uint32_t kv_len)
{
    baatt_config c = baatt_config_default();
    c.dense = 1, c.dtype = BAATT_DTYPE_F16;
    c.batch = 1, c.heads = 2, c.kv_heads = 2, c.q_len = q_len, c.kv_len = kv_len, c.head_dim = 128;
    return c;
}

/* Why the device drops variant bits (NULL: it keeps them all). */
static const char *missing(uint32_t asked, uint32_t got)
{
    if ((asked & ~got) & (BAATT_PORTABLE_QK16 | BAATT_PORTABLE_PV16)) return "shaderFloat16";
    if ((asked & ~got) & BAATT_PORTABLE_LONG) return "packed halves on a key tile of 16 or more";
    return NULL;
}

/* The plan runs exactly the bits asked, or fewer where the feature they need is missing: packed
 * halves with shaderFloat16 must run. */
static void variants_chosen(void **s)
{
    (void)s;
    const baatt_caps *caps = baatt_context_caps(th_ctx);
    baatt_config c = dense_f16(64, 64);
    int dropped = 0;
    for (uint32_t i = 0; i < NVARIANTS; i++) {
        baatt_tuning t = tuning_of(variants[i].name);
        assert_int_equal(t.portable, variants[i].bits);
        baatt_plan *plan = NULL;
        baatt_status st = th_plan_create(&c, &t, &plan);
        if (st == BAATT_ERROR_MISSING_FEATURE) skip(); /* no fp16 storage */
        assert_int_equal(st, BAATT_OK);
        uint32_t got = baatt_plan_choice(plan)->attend.variant;
        assert_string_equal(baatt_plan_path(plan, BAATT_STAGE_ATTEND), "portable");
        baatt_plan_destroy(plan);
        assert_int_equal(got & ~t.portable, 0);
        if (caps->features & BAATT_FEATURE_FP16_ARITH)
            assert_int_equal(got & (BAATT_PORTABLE_QK16 | BAATT_PORTABLE_PV16),
                             t.portable & (BAATT_PORTABLE_QK16 | BAATT_PORTABLE_PV16));
        if (got != t.portable) {
            fprintf(stderr, "[ SKIP     ] portable=%s runs without %s on %s\n", variants[i].name,
                    missing(t.portable, got), caps->name);
            dropped = 1;
        }
    }
    if (dropped) skip();
}

typedef enum { PLAIN, OUTLIERS, OVERFLOW } inputs_kind;

/* q, k, v ~ N(0, 1) with, in OUTLIERS, 4 channels of every q and k token at +-[10, 30] (the same
 * channels in q and k, as activation outliers are: scores reach ~+-200 in log2 units, the softmax
 * is peaked and its near ties magnify any score error: qk16 must take its fp32 path); in
 * OVERFLOW, channel 0 at 800 in query row 3 and key 3 (one q' k product of 0.125 * 800^2 = 8e4
 * would overflow fp16) and V elements at +-5000 in keys 0-7 (a run of p v could overflow): the
 * tiles holding them run in fp32, the others in fp16 (the big V in an fp32-scored tile: an fp16
 * score's error would move O by its fraction of 5000), every row's softmax well conditioned. */
static void *make(uint64_t *rng, const baatt_config *c, size_t n, inputs_kind kind, int is_q, int is_v)
{
    void *x = th_random_tensor(rng, c->dtype, n, 1.0f);
    size_t d = c->head_dim;
    for (size_t tok = 0; tok < n / d; tok++)
        for (size_t a = 0; a < 4; a++) {
            float u = th_uniform(rng), sign = th_uniform(rng) < 0.5f ? -1.0f : 1.0f;
            size_t i = tok * d + a * 29;
            if (kind == OUTLIERS && !is_v) baatt_store(x, c->dtype, i, sign * (10.0f + 20.0f * u));
            if (kind == OVERFLOW && is_v && tok % c->kv_len < 8) baatt_store(x, c->dtype, i, sign * 5000.0f);
            if (kind == OVERFLOW && !is_v && a == 0 && tok % (is_q ? c->q_len : c->kv_len) == 3)
                baatt_store(x, c->dtype, i, 800.0f);
        }
    return x;
}

/* max |got - want| / (atol + rtol |want| + pv * mass), mass = sum p |v| / sum p: P's fp16
 * rounding (2^-11 relative) and its fp16 sums of 8 (~3 roundings of that size in the worst
 * element) move O by up to ~4 * 2^-11 of the mass (pv16: pv = 2^-9), which outgrows atol where
 * |v| is large. */
static double worst(const float *got, const float *want, const float *mass, size_t n, double atol, double rtol,
                    double pv, const char *label)
{
    double e = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)got[i] - want[i]) / (atol + rtol * fabs(want[i]) + pv * mass[i]);
        if (!(x <= e)) e = x, at = i; /* NaN is worst */
    }
    if (!(e <= 1.0))
        fprintf(stderr, "[ mismatch ] %s: element %zu got %.9g want %.9g (error %.3g of tolerance)\n", label, at,
                (double)got[at], (double)want[at], e);
    return isnan(e) ? INFINITY : e;
}

/* The worst error over the tolerance of each variant (those with a bit of `only`, if not 0) on
 * one kind of inputs (printed), asserted <= 1. */
static void check_kind(inputs_kind kind, uint32_t q_len, uint32_t kv_len, float scale, uint32_t only)
{
    baatt_config c = dense_f16(q_len, kv_len);
    c.scale = scale;
    uint64_t rng = th_seed() ^ ((uint64_t)kind << 40) ^ q_len;
    size_t qn = (size_t)c.heads * c.q_len * c.head_dim, kn = (size_t)c.kv_heads * c.kv_len * c.head_dim;
    void *q = make(&rng, &c, qn, kind, 1, 0), *k = make(&rng, &c, kn, kind, 0, 0), *v = make(&rng, &c, kn, kind, 0, 1);
    void *o = malloc(2 * qn);
    float *ref = malloc(4 * qn), *mass = malloc(4 * qn);
    assert_int_equal(baatt_reference_attention(&c, q, k, v, ref), BAATT_OK);
    void *va = malloc(2 * kn);
    for (size_t i = 0; i < kn; i++) baatt_store(va, c.dtype, i, fabsf(baatt_load(v, c.dtype, i)));
    assert_int_equal(baatt_reference_attention(&c, q, k, va, mass), BAATT_OK);
    free(va);
    for (uint32_t i = 0; i < NVARIANTS; i++) {
        if (only && !(variants[i].bits & only)) continue;
        baatt_tuning t = tuning_of(variants[i].name);
        baatt_plan *plan = NULL;
        baatt_status st = th_plan_create(&c, &t, &plan);
        if (st == BAATT_ERROR_MISSING_FEATURE) skip(); /* no fp16 storage */
        assert_int_equal(st, BAATT_OK);
        th_poison(o, c.dtype, qn);
        assert_int_equal(baatt_plan_run_host(plan, q, k, v, o), BAATT_OK);
        uint32_t ran = baatt_plan_choice(plan)->attend.variant;
        baatt_plan_destroy(plan);
        /* qk16 on outliers: every tile in fp32, so fp16's tolerance; on overflow inputs the other
         * tiles run as qk16 does on N(0, 1) inputs, so its own */
        uint32_t as = kind == OUTLIERS ? ran & ~(uint32_t)BAATT_PORTABLE_QK16 : ran;
        double atol, rtol;
        th_tolerance_variant(c.dtype, as, &atol, &rtol);
        float *got = th_to_float(o, c.dtype, qn);
        char label[96];
        static const char *const kinds[] = {"N(0, 1)", "outlier", "overflow"};
        snprintf(label, sizeof label, "portable=%s, %s inputs, scale %g", variants[i].name, kinds[kind], (double)scale);
        double pv = ran & BAATT_PORTABLE_PV16 ? 1.0 / 512 : 0.0;
        double e = worst(got, ref, mass, qn, atol, rtol, pv, label);
        fprintf(stderr, "[ INFO     ] %s: worst error %.3f of tolerance (atol %g, rtol %g, %g of sum p|v|)\n", label, e,
                atol, rtol, pv);
        free(got);
        assert_true(e <= 1.0);
    }
    free(q), free(k), free(v), free(o), free(ref), free(mass);
}

static void outliers(void **s)
{
    (void)s;
    check_kind(OUTLIERS, 96, 257, 0.0f, 0);
}

static void overflow(void **s)
{
    (void)s;
    check_kind(OVERFLOW, 96, 257, 0.0f, 0);
}

/* Scales other than 1/sqrt(d): qk16 stages Q times a power of two at or below scale * log2(e),
 * capped at 1 (scale 2: none), and multiplies the rest back in fp32. */
static void scales(void **s)
{
    (void)s;
    check_kind(PLAIN, 40, 100, 0.01f, BAATT_PORTABLE_QK16);
    check_kind(PLAIN, 40, 100, 2.0f, BAATT_PORTABLE_QK16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(variants_chosen), cmocka_unit_test(outliers),
                                       cmocka_unit_test(overflow), cmocka_unit_test(scales)};
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
