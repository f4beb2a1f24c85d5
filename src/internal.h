/* Library-internal declarations shared across src/ files (never installed). */
#ifndef BAATT_INTERNAL_H
#define BAATT_INTERNAL_H

#include "baatt.h"
#include "../shaders/interface.h"

#define BAATT_TRY(expr)                                                                                                \
    do {                                                                                                               \
        baatt_status s_ = (expr);                                                                                      \
        if (s_ != BAATT_OK) return s_;                                                                                 \
    } while (0)

/* Formats a message into msg (if msg && n) and returns s. */
baatt_status baatt_msgf(char *msg, size_t n, baatt_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Stable argsort, descending (ties: lower index first): idx[p] = index of the p-th largest key.
 * tmp: n entries of scratch. The order docs/ALGORITHM.md steps 1 and 4 rank tokens and blocks in. */
void baatt_argsort_desc(const float *key, uint32_t n, int32_t *idx, int32_t *tmp);

/* Dot product of fp64 rows with four partial sums (n a multiple of 4: head_dim is 64 or 128):
 * splitting the sum costs nothing in accuracy and breaks the add-latency chain of the CPU
 * reference's and evaluator's QK loops, which dominate their run time. */
static inline double baatt_dot_f64(const double *a, const double *b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    return (s0 + s1) + (s2 + s3);
}

/* In place: p[j] = exp(p[j] - max) / sum, in double (the block map M of docs/ALGORITHM.md step 3).
 * Returns ln sum_j exp(p[j]) of the input (max + ln sum). */
double baatt_softmax_f64(double *p, uint32_t n);

/* min/max clamping of a per-row block count (>= 1, <= nk, honouring min/max_blocks). */
uint32_t baatt_config_clamp_blocks(const baatt_config *c, uint32_t m);

/* Per-head blocking choice (BAATT_SORT_AUTO, and eval's baatt_auto): at most this many query rows
 * per head get exact attention, evenly spaced: sample s of n sits at original row s * q_len / n
 * (AUTO_SAMPLE_ROWS of interface.h, which the shaders share). */
#define BAATT_AUTO_ROWS AUTO_SAMPLE_ROWS
static inline uint32_t baatt_auto_samples(uint32_t q_len) { return q_len < BAATT_AUTO_ROWS ? q_len : BAATT_AUTO_ROWS; }
static inline uint32_t baatt_auto_row(uint32_t s, uint32_t n, uint32_t q_len)
{
    return (uint32_t)((uint64_t)s * q_len / n);
}

/* The candidates a per-kv-head choice runs over (BAATT_SORT_AUTO x BAATT_COVARIANCE_AUTO), in tie
 * order: index = lambda index * blockings + blocking index, sorted before original, lambda 1
 * before 0 (eval's baatt_auto enumerates them the same way). Bit i of sorted / cov: candidate i
 * is on the norm-sorted blocking / has lambda 1. The GPU gets the bits as specialization
 * constants. */
#define BAATT_AUTO_MAX_CANDS AUTO_MAX_CANDS
typedef struct baatt_auto_cands {
    uint32_t n, blockings, lambdas;
    uint32_t sorted, cov;
} baatt_auto_cands;
baatt_auto_cands baatt_auto_candidates(const baatt_config *c);
/* Candidate x of a (from c) as a config of that one candidate: its blocking and lambda. */
baatt_config baatt_auto_candidate_config(const baatt_config *c, const baatt_auto_cands *a, uint32_t x);

/* The shared selection rules (reference.c), called by the reference and the accuracy harness so
 * both measure the rule the GPU runs. Threshold mode: the length (>= 1) of the shortest prefix of
 * `order` (l ranked descending) whose softmax mass reaches theta. Per-head choice: the index of
 * the candidate with the largest sampled recall, a later one winning only when strictly greater
 * (so ties and NaN keep the earlier one; shaders/auto_choose.comp runs the same loop). */
uint32_t baatt_mass_prefix(const float *l, const int32_t *order, uint32_t nk, double theta);
uint32_t baatt_auto_pick(const double *recall, uint32_t n);
/* ALGORITHM.md step 3's block logit of one (query block, key block) pair from their moments
 * (n_j keys); the accuracy harness also scores single keys with it (kv = 0, n_j = 1). */
double baatt_block_logit(uint32_t d, double t, double lambda, const float *qm, const float *qv, const float *km,
                         const float *kv, uint32_t n_j);

/* Element i of a host tensor in dtype, as float. */
static inline float baatt_load(const void *p, baatt_dtype dt, uint64_t i)
{
    switch (dt) {
    case BAATT_DTYPE_F16: return baatt_f16_to_f32(((const uint16_t *)p)[i]);
    case BAATT_DTYPE_BF16: return baatt_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static inline void baatt_store(void *p, baatt_dtype dt, uint64_t i, float v)
{
    switch (dt) {
    case BAATT_DTYPE_F16: ((uint16_t *)p)[i] = baatt_f32_to_f16(v); break;
    case BAATT_DTYPE_BF16: ((uint16_t *)p)[i] = baatt_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/* Test access to a plan's intermediate buffers after a run: the block features
 * (float [heads, blocks, 3*head_dim], see shaders/stats.comp) and the logit scratch of the last
 * chunk (float [chunk_heads, chunk_rows, nk]). */
enum { BAATT_DEBUG_QFEAT = 0, BAATT_DEBUG_KFEAT = 1, BAATT_DEBUG_LOGITS = 2 };
baatt_status baatt_plan_debug_read(baatt_plan *p, int what, void *dst, uint64_t bytes);
void baatt_plan_debug_chunks(const baatt_plan *p, uint32_t *heads, uint32_t *rows);
/* The plan's choice of paths, tiles and sizes (choice.h), and its sort's path on one side
 * (0 Q, 1 K: "none", "bitonic" or "radix"). */
const struct baatt_choice *baatt_plan_choice(const baatt_plan *p);
const char *baatt_plan_sort_path(const baatt_plan *p, int side);
/* A plan with tuning instead of the context's (BAATT_TUNE) tuning. */
struct baatt_tuning;
baatt_status baatt_plan_create_tuned(baatt_context *ctx, const baatt_config *cfg, const struct baatt_tuning *tuning,
                                     baatt_plan **plan);
/* The context's device as the choice sees it (choice.h), and the tuning its plans get. */
const struct baatt_caps *baatt_context_caps(const baatt_context *ctx);
const struct baatt_tuning *baatt_context_tuning(const baatt_context *ctx);
/* The BAATT_FEATURE_* bits the context's device was created (or wrapped) with. */
uint32_t baatt_context_enabled_features(const baatt_context *ctx);
int baatt_shader_available(const char *name);

#endif
