/* Accuracy evaluation of block selection (issue 5, docs/ALGORITHM.md "Methods the evaluation
 * compares" and "Quality metrics"): every method selects key blocks on the same inputs, and one
 * shared routine measures each selection against exact dense attention. The harness is its own
 * static library (baatt_eval), linked by the CLI and the tests, never by libbaatt. Its selection
 * rules are the library's own functions (threshold prefix, auto-sort tie), not copies.
 *
 * How it is computed (per head, on the CPU, in fp64; nothing N x N is ever held):
 *  1. a dense pass over the query rows accumulates, for each blocking in use (original order, and
 *     norm-sorted order), the pooled mass P_IJ = sum_{i in I, j in J} A_ij. P / |I| is the oracle
 *     map Mhat, and the mass recall of any mask is sum_{I,J} mask_IJ P_IJ / Nq, exactly (a query
 *     block's rows share one selection);
 *  2. every method scores the (query block, key block) pairs of its blocking, ranks each row, and
 *     keeps a per-row number of blocks set by the target (below);
 *  3. a second dense pass computes, per query row and key block, the block's max logit m, its
 *     softmax sum Z = sum exp(s - m) and value sum U = sum exp(s - m) v. The sparse output of any
 *     selection is then sum U e^(m - M) / sum Z e^(m - M) over the selected blocks: exactly what
 *     baatt_reference_sparse_attention computes, for every method and target from one pass
 *     (tests/test_eval.c checks the two agree).
 *
 * Targets: a target sparsity s (every method keeps (1 - s) * nk blocks per row on average, rows
 * taking the floor or the ceiling so the mean is exact even when it is fractional); a keep ratio
 * rho (ALGORITHM.md step 4: k = max(1, ceil(rho * nk)) blocks in every row); or a mass threshold theta:
 * BA-Att ("baatt", and the other adaptive variants) selects by threshold, its achieved mean block
 * count over all heads is measured, and every other method then keeps that many blocks per row on
 * average ("matched achieved sparsity"). */
#ifndef BAATT_EVAL_H
#define BAATT_EVAL_H

#include <stdint.h>

#include "baatt.h"
#include "workloads.h"

typedef enum eval_target_kind {
    EVAL_SPARSITY = 0,  /* value: target sparsity in [0, 1) */
    EVAL_KEEP = 1,      /* value: keep ratio in (0, 1], step 4's ceil rule */
    EVAL_THRESHOLD = 2, /* value: mass threshold in (0, 1] for the adaptive methods */
} eval_target_kind;

typedef struct eval_target {
    eval_target_kind kind;
    double value;
} eval_target;

/* A selection captured from one run, to measure its reuse on other inputs of the same shape
 * (issue 17: a selection kept across denoising steps, as baatt_plan_set_reuse does). eval_run
 * fills it when eval_options.reuse_out points to one (free it with eval_selection_free); given as
 * eval_options.reuse_in, every (method, target) slot skips its own selection and is measured with
 * the captured mask on the captured blocking (the norm-sorted permutations of the capture, or the
 * original order where the method chose it), against the new inputs' exact attention. The run
 * that reuses must have the capture's methods, targets, block size and shapes. */
typedef struct eval_selection {
    uint32_t heads, q_len, kv_len, nq, nk, ns; /* ns = methods x targets */
    int32_t *perm_q, *perm_k;                  /* [heads, q_len], [heads, kv_len]: sorted blocking */
    uint8_t *masks;                            /* [heads, ns, nq, nk] */
    uint8_t *sorted;                           /* [heads, ns]: 1 if the slot's mask is on perm_q/perm_k */
} eval_selection;

void eval_selection_free(eval_selection *s);

typedef struct eval_options {
    uint32_t block_size;        /* 32, 64 or 128 */
    const char *const *methods; /* method names; NULL: eval_default_methods() */
    uint32_t n_methods;
    const eval_target *targets;
    uint32_t n_targets;
    int outputs;      /* 1: also rel_l1 / rel_l2 / cosine (a second dense pass) */
    uint32_t threads; /* heads evaluated in parallel; 0 or 1: one thread */
    /* Progress lines ("head 3/8 ...") for long runs; called under a lock. NULL: silent. */
    void (*progress)(void *user, const char *line);
    void *user;
    /* Optional: BA-Att's selection taken from elsewhere (the GPU plan) for method "baatt":
     * permutations [heads, q_len] / [heads, kv_len] and, per target, a mask [heads, nq, nk]
     * (NULL entries: computed here). Recall and outputs are measured on that blocking. */
    const int32_t *ext_perm_q, *ext_perm_k;
    const uint8_t *const *ext_masks;
    /* Optional, for tests and dumps: per (method m, target t) at index m * n_targets + t, a
     * caller-allocated [heads, nq, nk] array that receives the selection; and [heads, len]
     * arrays for the norm-sorted permutations. Any may be NULL. */
    uint8_t **mask_out;
    int32_t *sorted_perm_q_out, *sorted_perm_k_out;
    /* Optional: capture this run's selection (reuse_out), or measure a captured one instead of
     * selecting (reuse_in); see eval_selection. Neither goes with ext_masks. */
    eval_selection *reuse_out;
    const eval_selection *reuse_in;
} eval_options;

typedef struct eval_record {
    const char *method; /* static string */
    eval_target target;
    double keep;                   /* achieved mean fraction of key blocks kept per query block */
    double sparsity;               /* ALGORITHM.md: 1 - selected key tokens / (q_blocks * kv_len), all heads */
    double mass_recall;            /* mean over query rows of the dense mass on the selected keys */
    double rel_l1, rel_l2, cosine; /* NAN when options.outputs == 0 */
    double sorted_heads;           /* share of heads measured on a norm-sorted blocking (0 or 1 except
                             * for per-head choices such as baatt_auto) */
} eval_record;

/* NULL-terminated lists: every method eval_run knows, and the ones it runs by default (the nine
 * of issue 5, in report order). */
const char *const *eval_method_names(void);
const char *const *eval_default_methods(void);
/* One line describing a method, or NULL for an unknown name. */
const char *eval_method_about(const char *name);

/* Runs every method at every target on d. *records (n_methods * n_targets entries, method-major)
 * is allocated here; free() it. On failure msg says why. */
baatt_status eval_run(const eval_data *d, const eval_options *o, eval_record **records, uint32_t *count, char *msg,
                      size_t msg_size);

/* The reuse study (issue 17): how much recall a selection loses when it is kept for several steps
 * of a drifting sequence. d is step 0; for every drift level e, steps 1..steps apply
 * eval_data_drift(e, seed, step) one after the other to a copy of d, and at every step 0..steps
 * every (method, target) slot is measured twice: selected fresh on that step's inputs, and with
 * the selection made at step 0 (reuse_in). Records: [n_drifts, steps + 1, n_methods * n_targets],
 * step-major within a drift, slots in eval_run's order; free() them. o's reuse and external-mask
 * fields must be unset; its progress callback gets one line per step. */
typedef struct eval_reuse_record {
    double drift;
    uint32_t step;      /* steps since the selection was made (0: made on these inputs) */
    eval_record fresh;  /* selected on this step's inputs */
    eval_record reused; /* step 0's selection on this step's inputs */
} eval_reuse_record;

baatt_status eval_reuse_run(const eval_data *d, const eval_options *o, const double *drifts, uint32_t n_drifts,
                            uint32_t steps, uint64_t seed, eval_reuse_record **records, uint32_t *count, char *msg,
                            size_t msg_size);

#endif
