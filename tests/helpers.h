/* Shared test helpers: deterministic-but-fresh random inputs, NaN poisoning, comparisons. */
#ifndef BAATT_TEST_HELPERS_H
#define BAATT_TEST_HELPERS_H
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "baatt.h"

/* A fresh seed per process (time and pid), printed so a failure can be replayed with
 * BAATT_TEST_SEED=<seed>. */
uint64_t th_seed(void);
/* The harness's xorshift64* stream (src/eval/rng.h). */
uint64_t th_next(uint64_t *state);
float th_uniform(uint64_t *state); /* [0, 1) */
float th_normal(uint64_t *state);  /* N(0, 1) */

/* n random N(0, sigma) elements in dtype (fp16/bf16 as bit patterns); caller frees. */
void *th_random_tensor(uint64_t *state, baatt_dtype dt, size_t n, float sigma);
/* Fill with NaN in dtype. */
void th_poison(void *p, baatt_dtype dt, size_t n);
/* Convert a dtype tensor to a newly allocated float array. */
float *th_to_float(const void *p, baatt_dtype dt, size_t n);

/* Max over elements of |a-b| / (atol + rtol*|b|) (<= 1 passes); any NaN in a gives +inf. Prints the
 * worst element on failure when label != NULL. */
double th_compare(const float *a, const float *b, size_t n, double atol, double rtol, const char *label);

/* Output tolerances of a GPU attention result against the fp64 reference, by dtype:
 * fp32: rounding of fp32 dot products and of the online softmax, ~1e-6 relative; 2e-5 leaves room.
 * fp16: inputs exact in both; output rounding 2^-11 (4.9e-4) relative plus fp32 accumulation.
 * bf16: inputs exact in both; output rounding 2^-8 (3.9e-3) relative. */
void th_tolerance(baatt_dtype dt, double *atol, double *rtol);
/* The same for the portable kernel's variants (BAATT_PORTABLE_* bits; th_tolerance takes those of
 * th_ctx's tuning, BAATT_TUNE's portable=). pv16: P in fp16 as the tensor-core kernels have it,
 * plus fp16 sums of 8 products p v, ~sqrt(8) * 2^-12 of the spread of V each: atol + 1e-3. qk16:
 * fp16 products and sums of 8 of them make each score (log2 units) off by ~2^-11 of the sum of
 * its |terms|, ~3e-3 at scores of 10: O moves by about that times the spread of V, the order of
 * bf16 inputs' rounding, so bf16's tolerance. */
void th_tolerance_variant(baatt_dtype dt, uint32_t portable, double *atol, double *rtol);
/* LSE tolerance, absolute on values of a few units (ln kv_len + O(1) for N(0, 1) inputs), for
 * the attention kernel named attend_path (baatt_plan_path): every kernel takes the row max and
 * sum in fp32 over exact products of the stored inputs, so the error is fp32 rounding of the dot
 * products and sums, ~1e-6; 2e-5 leaves room. The cooperative-matrix-2 kernel sums the
 * probabilities after rounding them to the input type (what its P V product uses): relative error
 * of the sum, hence absolute error of its log, at most the unit roundoff, 2^-11 (fp16) or 2^-8
 * (bf16). */
double th_lse_atol(const char *attend_path, baatt_dtype dt);
/* Asserts that o (in c->dtype) is dense attention of q, k, v within th_tolerance (label names a
 * mismatch). */
void th_check_dense(const baatt_config *c, const void *q, const void *k, const void *v, const void *o,
                    const char *label);

/* A context for GPU tests, with validation; skips (exit 77) if no Vulkan device exists.
 * th_context_done destroys the context and asserts that it raised no validation message, those
 * of its teardown (leaked objects) included. */
baatt_context *th_context(void);
void th_context_done(baatt_context *ctx);

/* Group fixtures for GPU test files: th_ctx is the shared context (th_context / th_context_done).
 * A validation message the group teardown sees exits the process with status 1 (cmocka would
 * report it and still exit 0). */
extern baatt_context *th_ctx;
int th_group_setup(void **state);
int th_group_teardown(void **state);

/* Per-test validation check: every test fails when a context from th_context (still alive) got a
 * validation message during it. cmocka_unit_test is redefined so that every test file gets the
 * check without listing it; tests with their own fixtures call these from them. */
int th_test_setup(void **state);
int th_test_teardown(void **state);
#undef cmocka_unit_test
#define cmocka_unit_test(f) cmocka_unit_test_setup_teardown(f, th_test_setup, th_test_teardown)

/* The tuning th_ctx gives its plans (the defaults, or BAATT_TUNE's), to change a field of, and a
 * plan on th_ctx with tuning t (NULL: th_ctx's). */
struct baatt_tuning th_tuning(void);
baatt_status th_plan_create(const baatt_config *c, const struct baatt_tuning *t, baatt_plan **plan);

/* Asserts that creating a plan for c on th_ctx fails with `want`, sets the plan to NULL, and
 * leaves a context message containing `fragment`. */
void th_expect_plan_error(baatt_config c, baatt_status want, const char *fragment);

/* A scratch path under BAATT_TEST_TMP (or /tmp), unique per process: th_tmp_path(buf, "q.npy"). */
const char *th_tmp_path(char *buf, size_t n, const char *name);
#endif
