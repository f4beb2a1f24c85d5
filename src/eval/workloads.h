/* Attention workloads for the accuracy evaluation (`baatt eval`): seeded synthetic Q/K/V with known
 * structure, and .npy loading. Part of the baatt_eval harness (never installed). */
#ifndef BAATT_WORKLOADS_H
#define BAATT_WORKLOADS_H

#include <stdint.h>

#include "baatt.h"

/* One evaluation input: batch folded into heads (attention of each (batch, head) is independent)
 * and GQA expanded (every query head owns a copy of its kv head), so the evaluator sees plain
 * multi-head attention. All arrays fp32, row-major. */
typedef struct eval_data {
    uint32_t heads, q_len, kv_len, head_dim;
    float scale;        /* softmax scale; 0: 1/sqrt(head_dim). Set when head_dim was zero-padded */
    uint32_t valid_dim; /* columns from valid_dim on are zero padding (eval_data_load); 0: none */
    float *q;           /* [heads, q_len, head_dim] */
    float *k, *v;       /* [heads, kv_len, head_dim] */
} eval_data;

void eval_data_free(eval_data *d);

/* The synthetic workloads, in report order. */
typedef struct eval_workload_params {
    uint32_t heads, len, head_dim; /* head_dim 64 or 128 */
    uint64_t seed;
    float jitter; /* token norm jitter sigma (x *= exp(jitter z)) of the structured workloads;
                   * EVAL_DEFAULT_JITTER is the documented default, 0 turns it off */
} eval_workload_params;
#define EVAL_DEFAULT_JITTER 0.25f

/* NULL-terminated list of workload names ("iid", "clustered", ...). */
const char *const *eval_workload_names(void);
/* A multi-line description of every workload and its parameters (for --help and the report). */
const char *eval_workload_help(void);
/* Generates workload `name` deterministically from p->seed (same seed, same bits, on any host).
 * BAATT_ERROR_INVALID_ARGUMENT for an unknown name. */
baatt_status eval_workload_make(const char *name, const eval_workload_params *p, eval_data *out);

/* The drift model of a denoising sequence (issue 17; workloads.c says why and how large):
 * one step of x <- sqrt(1 - e^2) x + e rms(x) z on every token x of Q, K and V, with z ~ N(0, I)
 * fresh at every step and rms(x) = |x| / sqrt(dims) the token's own scale, so that the expected
 * squared norm of each token is kept and its correlation with step 0 after t steps is
 * (1 - e^2)^(t/2). e = drift in [0, 1]; step (>= 1) and seed pick the noise: the same (seed, step)
 * draws the same z for every e and head count. Zero-padded columns (valid_dim) stay zero. */
baatt_status eval_data_drift(eval_data *d, double drift, uint64_t seed, uint32_t step);
/* A deep copy of src into out (free with eval_data_free). */
baatt_status eval_data_copy(const eval_data *src, eval_data *out);

/* Loads Q, K, V from .npy files ([batch, heads, len, d] or [heads, len, d]; float32 or float16).
 * A head_dim below 64 is zero-padded to 64 (exact: q.k and the outputs' first d columns do not
 * change) with the scale kept at 1/sqrt(original head_dim) unless scale > 0 is given. */
baatt_status eval_data_load(const char *q_path, const char *k_path, const char *v_path, float scale, eval_data *out,
                            char *msg, size_t msg_size);

#endif
