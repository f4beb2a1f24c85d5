/* Block-selection accuracy: the methods of docs/ALGORITHM.md ("Methods the evaluation compares")
 * and the shared metric routine. The method of computation is described in eval.h.
 *
 * Layout: methods (a table of name, blocking, scorer) -> per-head context (inputs in fp64, the
 * blockings, scratch) -> dense pass 1 (pooled mass) -> selection -> dense pass 2 (outputs) ->
 * reduction over heads in head order (so the result does not depend on the thread count). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under a strict -std=c11 */
#include "eval.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* The blockings a method can work on: contiguous runs of the original order, the norm-sorted
 * order of ALGORITHM.md step 1, or permutations given by the caller (the GPU plan's). */
enum { BLK_IDENTITY = 0, BLK_SORTED = 1, BLK_EXTERNAL = 2, BLK_COUNT = 3 };
/* A method whose blocking is chosen per head and target (select_auto); its scorer reads the
 * blocking to score from head_ctx.auto_blk. */
#define BLK_AUTO (-1)

/* Query rows per QK tile: each key row is then read once per tile, not once per query. */
#define TILE 8
#define MAX_OWNED 80 /* allocations of one head_ctx (about 65 used) */
/* Rows of exact attention that baatt_auto samples per head: evenly spaced query rows, the same
 * rows as the GPU plan's BAATT_SORT_AUTO (internal.h). */
#define AUTO_ROWS BAATT_AUTO_ROWS
/* Estimates a BLK_AUTO method chooses among per head: {sorted, original} x {covariance on, off} x
 * {heavy keys split, not}. */
#define AUTO_CANDS 9

typedef struct run run;
typedef struct head_ctx head_ctx;
typedef struct method method;

/* Fills scores [nq, nk] (higher = more worth keeping) for one head on the method's blocking. */
typedef baatt_status (*score_fn)(head_ctx *c, const method *m, float *scores);

struct method {
    const char *name;
    int blocking; /* BLK_IDENTITY, BLK_SORTED or BLK_AUTO */
    score_fn score;
    int param;    /* scorer-specific: covariance on/off, antidiagonal stride */
    int adaptive; /* selects by mass threshold in EVAL_THRESHOLD targets */
    const char *about;
    int split;         /* score_pooled: the head's `split` heaviest keys (on the sampled rows) scored alone */
    int cov_auto;      /* BLK_AUTO: also choose the covariance on/off per head, not only the blocking */
    int split_exact;   /* split keys take their exact logit against each query block, not the Gaussian one */
    int split_auto;    /* BLK_AUTO: also choose per head whether to split the heavy keys */
    int auto_antidiag; /* BLK_AUTO: antidiagonal scoring at this stride is one more candidate (0: none) */
};

/* Sums of one (method, target) over a head, reduced over heads at the end. */
typedef struct acc {
    double recall;                 /* dense mass on selected keys, summed over query rows */
    double sel_tokens, all_tokens; /* selected key tokens, and q_blocks * kv_len */
    double sel_blocks, all_blocks;
    double l1, l1d, l2, l2d, l2o, cross; /* output error sums (see output_errors in reference.c) */
    double sorted;                       /* 1 if the head was measured on the norm-sorted blocking */
} acc;

struct run {
    const eval_data *d;
    const eval_options *o;
    baatt_config cfg;            /* one head of d, as the reference stages want it */
    uint32_t nq, nk, nm, nt, ns; /* blocks, methods, targets, slots = nm * nt */
    const method **methods;
    double *k_avg;                  /* per target: mean blocks per row (sparsity, threshold) */
    uint32_t *k_fixed;              /* per target: blocks per row (keep ratio) */
    int need[BLK_COUNT];            /* blockings some slot uses */
    int need_sample;                /* a BLK_AUTO or splitting method is run */
    const int32_t *ext_pq, *ext_pk; /* BLK_EXTERNAL's permutations: o->ext_perm_* or o->reuse_in's */
    acc *acc;                       /* [heads, ns] */
    pthread_mutex_t lock;
    uint32_t next_head, done_heads;
    baatt_status status;
    double t0;
};

struct head_ctx {
    const run *r;
    uint32_t h;
    const float *q, *k;   /* fp32 slices of head h (what the reference stages read) */
    double *qd, *kd, *vd; /* fp64 copies, original order */
    int32_t *perm_q[BLK_COUNT], *perm_k[BLK_COUNT];
    uint32_t *qblk[BLK_COUNT], *kblk[BLK_COUNT]; /* original index -> block of that blocking */
    double *ks[BLK_COUNT], *vs[BLK_COUNT];       /* K, V rows in the blocking's key order */
    double *pooled[BLK_COUNT];                   /* [nq, nk]: sum_{i in I, j in J} A_ij */
    double *s, *sg;                              /* [TILE, kv_len] scores of a tile; [kv_len] one row gathered */
    double *bm[BLK_COUNT], *bz[BLK_COUNT], *bu[BLK_COUNT]; /* per key block: max, sum, value sum */
    double *od, *o;                                        /* [d]: dense and sparse output of one row */
    float *scores;                                         /* [nq, nk] of one method */
    int32_t *order, *tmp;                                  /* [nq, nk] per-row ranking; [nk] sort scratch */
    uint8_t *masks;                                        /* [ns, nq, nk] */
    int *slot_blk;                                         /* [ns] blocking each slot is measured on */
    int auto_blk, auto_cov, auto_split; /* the blocking, covariance, split a BLK_AUTO method is scored with */
    float *cand_scores[AUTO_CANDS];     /* [nq, nk] a BLK_AUTO method's scores per candidate */
    int32_t *cand_order[AUTO_CANDS];    /* [nq, nk] and their ranking */
    double *sample, *mass;              /* [AUTO_ROWS, kv_len] exact sampled rows; [nk] scratch */
    uint32_t n_sample, n_heavy;         /* sampled rows taken so far (0: not yet); heavy keys marked */
    float *colsum;                      /* [kv_len] sampled mass per key */
    int32_t *key_order, *key_tmp;       /* [kv_len] keys by sampled mass; sort scratch */
    uint8_t *heavy;                     /* [kv_len] 1 for the n_heavy heaviest keys */
    acc *acc;                           /* [ns] this head's sums (points into run.acc) */
    void *owned[MAX_OWNED];
    int n_owned;
};

/* ---------------------------------------------------------------------------------------------
 * Small helpers.
 * ------------------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *grab(head_ctx *c, size_t bytes)
{
    if (c->n_owned == MAX_OWNED) return NULL;
    void *p = calloc(1, bytes ? bytes : 1);
    if (p) c->owned[c->n_owned++] = p;
    return p;
}

static uint32_t block_len(uint32_t len, uint32_t b, uint32_t j)
{
    uint32_t start = j * b;
    return len - start < b ? len - start : b;
}

/* ---------------------------------------------------------------------------------------------
 * Scorers.
 * ------------------------------------------------------------------------------------------- */

static uint32_t ensure_sample(head_ctx *c);

/* Marks the n heaviest keys of the head: the largest mean mass over the sampled exact rows. */
static void mark_heavy(head_ctx *c, uint32_t n)
{
    uint32_t kl = c->r->cfg.kv_len, rows = ensure_sample(c);
    if (n > kl) n = kl;
    if (c->n_heavy == n) return;
    memset(c->colsum, 0, sizeof(float) * kl);
    memset(c->heavy, 0, kl);
    for (uint32_t s = 0; s < rows; s++)
        for (uint32_t j = 0; j < kl; j++) c->colsum[j] += (float)c->sample[(uint64_t)s * kl + j];
    baatt_argsort_desc(c->colsum, kl, c->key_order, c->key_tmp);
    for (uint32_t i = 0; i < n; i++) c->heavy[c->key_order[i]] = 1;
    c->n_heavy = n;
}

static double log_add(double a, double b)
{
    double m = a > b ? a : b;
    return m == -INFINITY ? m : m + log(exp(a - m) + exp(b - m));
}

/* log of the mean over query block I (blocking b) of exp(t q_i . k_j): the heavy key's exact
 * logit against the block, no Gaussian assumption about the queries. */
static double exact_key_logit(const head_ctx *c, int b, uint32_t I, uint32_t j)
{
    const run *r = c->r;
    uint32_t d = r->cfg.head_dim, B = r->cfg.block_size, p0 = I * B, n = block_len(r->cfg.q_len, B, I);
    double t = baatt_config_scale(&r->cfg), l = -INFINITY;
    for (uint32_t p = p0; p < p0 + n; p++)
        l = log_add(l, t * baatt_dot_f64(c->qd + (uint64_t)c->perm_q[b][p] * d, c->kd + (uint64_t)j * d, d));
    return l - log((double)n);
}

/* Heavy keys scored alone (m->split): every key block J of blocking b that holds some of the head's
 * heavy keys gets its logit again, from the moments of its other keys, log-sum-exp'd with one logit
 * per heavy key (step 3's logit of a one-key block: kv = 0, n = 1). An attention sink ([CLS] takes
 * 5-30% of every row's mass in MiniLM's layers 1-5) barely moves its block's mean, so the pooled
 * estimate of the block misses it; its own logit does not. */
static baatt_status split_heavy(head_ctx *c, const method *m, int b, double lambda, const float *qm, const float *qv,
                                float *scores)
{
    const run *r = c->r;
    uint32_t d = r->cfg.head_dim, B = r->cfg.block_size, kl = r->cfg.kv_len;
    double t = baatt_config_scale(&r->cfg);
    float *km = calloc(3 * (size_t)d, sizeof(float)), *kv = km + d, *zero = km + 2 * d;
    if (!km) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t J = 0; J < r->nk; J++) {
        uint32_t p0 = J * B, p1 = p0 + block_len(kl, B, J), n = 0, nh = 0;
        for (uint32_t p = p0; p < p1; p++) nh += c->heavy[c->perm_k[b][p]];
        if (!nh) continue;
        for (uint32_t a = 0; a < d; a++) {
            double sum = 0, ss = 0;
            n = 0;
            for (uint32_t p = p0; p < p1; p++) {
                uint32_t j = (uint32_t)c->perm_k[b][p];
                if (c->heavy[j]) continue;
                sum += c->k[(uint64_t)j * d + a];
                n++;
            }
            double mean = n ? sum / n : 0;
            for (uint32_t p = p0; p < p1; p++) {
                uint32_t j = (uint32_t)c->perm_k[b][p];
                double e = c->k[(uint64_t)j * d + a] - mean;
                if (!c->heavy[j]) ss += e * e;
            }
            km[a] = (float)mean;
            kv[a] = n ? (float)(ss / n) : 0;
        }
        for (uint32_t I = 0; I < r->nq; I++) {
            const float *qmi = qm + (uint64_t)I * d, *qvi = qv + (uint64_t)I * d;
            double l = n ? baatt_block_logit(d, t, lambda, qmi, qvi, km, kv, n) : -INFINITY;
            for (uint32_t p = p0; p < p1; p++) {
                uint32_t j = (uint32_t)c->perm_k[b][p];
                if (c->heavy[j])
                    l = log_add(l, m->split_exact
                                       ? exact_key_logit(c, b, I, j)
                                       : baatt_block_logit(d, t, lambda, qmi, qvi, c->k + (uint64_t)j * d, zero, 1));
            }
            scores[(uint64_t)I * r->nk + J] = (float)l;
        }
    }
    free(km);
    return BAATT_OK;
}

/* Mean pooling with or without the covariance correction (m->param, or the candidate's for a
 * covariance-choosing BLK_AUTO method), on the method's blocking: exactly the library's CPU
 * reference stages 2 and 3 (block stats, block logits), then the heavy-key split if m->split. */
static baatt_status score_pooled(head_ctx *c, const method *m, float *scores)
{
    const run *r = c->r;
    baatt_config cfg = r->cfg;
    cfg.covariance = m->cov_auto ? c->auto_cov : m->param;
    size_t d = cfg.head_dim;
    float *qm = malloc(sizeof(float) * r->nq * d), *qv = malloc(sizeof(float) * r->nq * d);
    float *km = malloc(sizeof(float) * r->nk * d), *kv = malloc(sizeof(float) * r->nk * d);
    baatt_status s = qm && qv && km && kv ? BAATT_OK : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    int b = m->blocking == BLK_AUTO ? c->auto_blk : m->blocking;
    if (s == BAATT_OK) s = baatt_reference_block_stats(&cfg, c->q, 1, cfg.q_len, c->perm_q[b], qm, qv);
    if (s == BAATT_OK) s = baatt_reference_block_stats(&cfg, c->k, 1, cfg.kv_len, c->perm_k[b], km, kv);
    if (s == BAATT_OK) s = baatt_reference_block_logits(&cfg, qm, qv, km, kv, scores);
    if (s == BAATT_OK && (m->blocking == BLK_AUTO ? c->auto_split : m->split)) {
        mark_heavy(c, (uint32_t)m->split);
        s = split_heavy(c, m, b, cfg.covariance ? 1.0 : 0.0, qm, qv, scores);
    }
    free(qm);
    free(qv);
    free(km);
    free(kv);
    return s;
}

/* XAttention-style antidiagonal scoring with stride S (m->param), on the original order, as in
 * XAttention's reference code: query group u (rows uS..uS+S-1) and key group v meet in one logit,
 * the mean of t q.k along the group pair's antidiagonal,
 *   a_uv = (t / S) sum_m q_{uS + S-1-m} . k_{vS + m},
 * a softmax over v turns each row of a into a distribution, and a block's score is the sum of
 * that distribution over its (B/S) x (B/S) groups. Pairs past the end of the sequence are
 * skipped. (ALGORITHM.md's one-line summary softmaxes the block sums of a instead; this follows the
 * published method, which estimates mass at the finer group granularity.) */
static baatt_status score_antidiag(head_ctx *c, const method *m, float *scores)
{
    const run *r = c->r;
    uint32_t S = (uint32_t)m->param, d = r->cfg.head_dim, B = r->cfg.block_size;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len, nu = (ql + S - 1) / S, nv = (kl + S - 1) / S;
    double t = baatt_config_scale(&r->cfg) / S;
    double *a = malloc(sizeof(double) * nv), *mass = calloc((size_t)r->nq * r->nk, sizeof(double));
    if (!a || !mass) {
        free(a);
        free(mass);
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t u = 0; u < nu; u++) {
        for (uint32_t v = 0; v < nv; v++) {
            double sum = 0;
            for (uint32_t i = 0; i < S; i++) {
                uint64_t qi = (uint64_t)u * S + S - 1 - i, kj = (uint64_t)v * S + i;
                if (qi < ql && kj < kl) sum += baatt_dot_f64(c->qd + qi * d, c->kd + kj * d, d);
            }
            a[v] = t * sum;
        }
        baatt_softmax_f64(a, nv);
        double *row = mass + (uint64_t)(u * S / B) * r->nk;
        for (uint32_t v = 0; v < nv; v++) row[v * S / B] += a[v];
    }
    for (uint64_t i = 0; i < (uint64_t)r->nq * r->nk; i++) scores[i] = (float)mass[i];
    free(a);
    free(mass);
    return BAATT_OK;
}

/* The probe's two profiles from exact attention of the last query block (original order):
 * vcol[j], the mean mass the probe rows put on key j (vertical lines), and slash[o + q_len - 1],
 * the mean mass on the diagonal j - i = o. A bidirectional probe at the end of the sequence sees
 * offsets up to only B - 1 ahead; an unseen offset o takes the value of -o (a slash pattern is
 * symmetric when attention is). */
static void probe_profiles(head_ctx *c, double *vcol, double *slash)
{
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len, d = r->cfg.head_dim;
    uint32_t np = ql < r->cfg.block_size ? ql : r->cfg.block_size, L = ql + kl - 1;
    double t = baatt_config_scale(&r->cfg);
    uint8_t *seen = calloc(L, 1);
    for (uint32_t p = 0; p < np; p++) {
        uint32_t i = ql - np + p;
        for (uint32_t j = 0; j < kl; j++)
            c->sg[j] = t * baatt_dot_f64(c->qd + (uint64_t)i * d, c->kd + (uint64_t)j * d, d);
        baatt_softmax_f64(c->sg, kl);
        for (uint32_t j = 0; j < kl; j++) {
            vcol[j] += c->sg[j] / np;
            slash[j + ql - 1 - i] += c->sg[j] / np;
            if (seen) seen[j + ql - 1 - i] = 1;
        }
    }
    for (uint32_t x = ql; x < L && seen; x++) { /* offset o = x - (ql - 1) > 0 */
        uint32_t o = x - (ql - 1);
        if (!seen[x] && o <= ql - 1 && seen[ql - 1 - o]) slash[x] = slash[ql - 1 - o];
    }
    free(seen);
}

/* Last-block probe (FlexPrefill / MInference-style vertical-slash) on the original order: a block
 * (I, J) scores the probe's column mass on J plus the mean, over I's rows, of the slash mass that
 * falls into J: score = sum_{j in J} vcol_j + (1/|I|) sum_{i in I} sum_{j in J} slash(j - i).
 * Both terms estimate the share of a row's mass in J; their sum ranks the blocks that hold the
 * heaviest columns and diagonals first (MInference keeps the union of the top columns and top
 * diagonals, which is this ranking's top end). */
static baatt_status score_probe(head_ctx *c, const method *m, float *scores)
{
    (void)m;
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len, B = r->cfg.block_size, L = ql + kl - 1;
    double *vcol = calloc(kl, sizeof(double)), *slash = calloc(L, sizeof(double));
    double *cum = calloc((size_t)L + 1, sizeof(double));
    if (!vcol || !slash || !cum) {
        free(vcol);
        free(slash);
        free(cum);
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    probe_profiles(c, vcol, slash);
    for (uint32_t x = 0; x < L; x++) cum[x + 1] = cum[x] + slash[x]; /* sum over offsets < x */
    for (uint32_t J = 0; J < r->nk; J++) {
        uint32_t j0 = J * B, j1 = j0 + block_len(kl, B, J);
        double vj = 0;
        for (uint32_t j = j0; j < j1; j++) vj += vcol[j];
        for (uint32_t I = 0; I < r->nq; I++) {
            uint32_t i0 = I * B, i1 = i0 + block_len(ql, B, I);
            double sl = 0; /* offsets j - i for j in [j0, j1): indices j0 - i + ql - 1 .. j1 - i + ql - 2 */
            for (uint32_t i = i0; i < i1; i++) sl += cum[j1 + ql - 1 - i] - cum[j0 + ql - 1 - i];
            scores[(uint64_t)I * r->nk + J] = (float)(vj + sl / (i1 - i0));
        }
    }
    free(vcol);
    free(slash);
    free(cum);
    return BAATT_OK;
}

/* The oracle: the true pooled map of the method's blocking (top-k of it maximises recall). */
static baatt_status score_oracle(head_ctx *c, const method *m, float *scores)
{
    const double *p = c->pooled[m->blocking == BLK_AUTO ? c->auto_blk : m->blocking];
    for (uint64_t i = 0; i < (uint64_t)c->r->nq * c->r->nk; i++) scores[i] = (float)p[i];
    return BAATT_OK;
}

static const method METHODS[] = {
    {"baatt", BLK_SORTED, score_pooled, 1, 1, "BA-Att: norm sort + covariance-corrected pooled logits (ALGORITHM.md)",
     0, 0, 0, 0, 0},
    {"baatt_sort", BLK_SORTED, score_pooled, 0, 0, "ablation: norm sort, plain mean-pooled logits", 0, 0, 0, 0, 0},
    {"baatt_cov", BLK_IDENTITY, score_pooled, 1, 0, "ablation: no sort, covariance-corrected logits", 0, 0, 0, 0, 0},
    {"meanpool", BLK_IDENTITY, score_pooled, 0, 0, "mean pooling, no sort (SpargeAttn / FlexPrefill / PBS-style)", 0, 0,
     0, 0, 0},
    {"antidiag8", BLK_IDENTITY, score_antidiag, 8, 0, "XAttention-style antidiagonal scoring, stride 8", 0, 0, 0, 0, 0},
    {"antidiag16", BLK_IDENTITY, score_antidiag, 16, 0, "XAttention-style antidiagonal scoring, stride 16", 0, 0, 0, 0,
     0},
    {"probe", BLK_IDENTITY, score_probe, 0, 0, "last-block vertical-slash probe (FlexPrefill / MInference-style)", 0, 0,
     0, 0, 0},
    {"oracle", BLK_SORTED, score_oracle, 0, 0, "top-k of the true pooled map on the sorted blocking", 0, 0, 0, 0, 0},
    {"oracle_unsorted", BLK_IDENTITY, score_oracle, 0, 0, "top-k of the true pooled map, original order", 0, 0, 0, 0,
     0},
    /* variants beyond the nine (not run by default) */
    {"baatt_auto", BLK_AUTO, score_pooled, 1, 0,
     "BA-Att as the library's default (sort auto, covariance auto): {norm-sorted, original blocking} x "
     "{covariance on, off} per head, chosen on 64 sampled exact rows",
     0, 1, 0, 0, 0},
    {"baatt_auto_blk", BLK_AUTO, score_pooled, 1, 0,
     "BA-Att, norm-sorted or original blocking per head (covariance on), chosen on 64 sampled exact rows "
     "(baatt_auto before the lambda choice: the older tables' baatt_auto)",
     0, 0, 0, 0, 0},
    {"oracle_best", BLK_AUTO, score_oracle, 0, 0,
     "top-k of the true pooled map on whichever blocking recalls more, per head (bounds baatt_auto)", 0, 0, 0, 0, 0},
    /* issue 17 item 5 study (bench/results/accuracy.md, "Selection on real attention"): fields
     * split (heavy keys scored alone), cov_auto, split_exact, split_auto */
    {"cov_split", BLK_IDENTITY, score_pooled, 1, 0, "study: baatt_cov, 8 heaviest sampled keys scored alone", 8, 0, 0,
     0, 0},
    {"baatt_auto_cov", BLK_AUTO, score_pooled, 1, 0,
     "study: baatt_auto_blk choosing covariance on/off too (the rule baatt_auto now runs)", 0, 1, 0, 0, 0},
    {"baatt_auto_h8", BLK_AUTO, score_pooled, 1, 0, "study: baatt_auto_cov, 8 heavy keys scored alone (Gaussian)", 8, 1,
     0, 0, 0},
    {"baatt_auto_x64", BLK_AUTO, score_pooled, 1, 0, "study: baatt_auto_cov, 64 heavy keys scored alone (exact)", 64, 1,
     1, 0, 0},
    {"baatt_auto_split", BLK_AUTO, score_pooled, 1, 0,
     "proposed: per head the best of 8 estimates on 64 sampled rows: {sorted, original} x {covariance on, off} x "
     "{64 heaviest sampled keys scored exactly, not}",
     64, 1, 1, 1, 0},
    {"baatt_auto_split_ad", BLK_AUTO, score_pooled, 1, 0, "study: baatt_auto_split and antidiag8 as a ninth candidate",
     64, 1, 1, 1, 8},
};
#define N_METHODS (sizeof METHODS / sizeof METHODS[0])
#define N_DEFAULT 9

static const method *find_method(const char *name)
{
    for (size_t i = 0; i < N_METHODS; i++)
        if (!strcmp(METHODS[i].name, name)) return &METHODS[i];
    return NULL;
}

const char *const *eval_method_names(void)
{
    static const char *names[N_METHODS + 1];
    for (size_t i = 0; i < N_METHODS; i++) names[i] = METHODS[i].name;
    return names;
}

const char *const *eval_default_methods(void)
{
    static const char *names[N_DEFAULT + 1];
    for (size_t i = 0; i < N_DEFAULT; i++) names[i] = METHODS[i].name;
    return names;
}

const char *eval_method_about(const char *name)
{
    const method *m = find_method(name);
    return m ? m->about : NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Per-head context: inputs in fp64, the blockings, scratch.
 * ------------------------------------------------------------------------------------------- */

static void head_free(head_ctx *c)
{
    for (int i = 0; i < c->n_owned; i++) free(c->owned[i]);
    c->n_owned = 0;
}

static void to_double(const float *x, uint64_t n, double *out)
{
    for (uint64_t i = 0; i < n; i++) out[i] = x[i];
}

/* Permutations of blocking b for this head: identity, norm-sorted (the reference's step 1), or
 * the caller's. */
static baatt_status make_perms(head_ctx *c, int b)
{
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len;
    int32_t *pq = c->perm_q[b] = grab(c, sizeof(int32_t) * ql), *pk = c->perm_k[b] = grab(c, sizeof(int32_t) * kl);
    if (!pq || !pk) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (b == BLK_EXTERNAL) {
        memcpy(pq, r->ext_pq + (uint64_t)c->h * ql, sizeof(int32_t) * ql);
        memcpy(pk, r->ext_pk + (uint64_t)c->h * kl, sizeof(int32_t) * kl);
        return BAATT_OK;
    }
    baatt_config cfg = r->cfg;
    cfg.norm_sort = b == BLK_SORTED;
    baatt_status s = baatt_reference_sort(&cfg, c->q, 1, ql, pq);
    return s == BAATT_OK ? baatt_reference_sort(&cfg, c->k, 1, kl, pk) : s;
}

/* Block maps and the K/V copies in the blocking's key order. */
static baatt_status make_blocking(head_ctx *c, int b)
{
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len, d = r->cfg.head_dim, B = r->cfg.block_size;
    baatt_status s = make_perms(c, b);
    if (s != BAATT_OK) return s;
    c->qblk[b] = grab(c, sizeof(uint32_t) * ql);
    c->kblk[b] = grab(c, sizeof(uint32_t) * kl);
    c->pooled[b] = grab(c, sizeof(double) * r->nq * r->nk);
    c->bm[b] = grab(c, sizeof(double) * r->nk);
    c->bz[b] = grab(c, sizeof(double) * r->nk);
    c->bu[b] = grab(c, sizeof(double) * r->nk * d);
    c->ks[b] = b == BLK_IDENTITY ? c->kd : grab(c, sizeof(double) * kl * d);
    c->vs[b] = b == BLK_IDENTITY ? c->vd : grab(c, sizeof(double) * kl * d);
    if (!c->qblk[b] || !c->kblk[b] || !c->pooled[b] || !c->bm[b] || !c->bz[b] || !c->bu[b] || !c->ks[b] || !c->vs[b])
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t p = 0; p < ql; p++) c->qblk[b][c->perm_q[b][p]] = p / B;
    for (uint32_t p = 0; p < kl; p++) {
        uint32_t j = (uint32_t)c->perm_k[b][p];
        c->kblk[b][j] = p / B;
        if (b == BLK_IDENTITY) continue;
        memcpy(c->ks[b] + (uint64_t)p * d, c->kd + (uint64_t)j * d, sizeof(double) * d);
        memcpy(c->vs[b] + (uint64_t)p * d, c->vd + (uint64_t)j * d, sizeof(double) * d);
    }
    return BAATT_OK;
}

static baatt_status head_setup(head_ctx *c, const run *r, uint32_t h)
{
    memset(c, 0, sizeof *c);
    c->r = r;
    c->h = h;
    const eval_data *d = r->d;
    uint64_t nq = (uint64_t)d->q_len * d->head_dim, nk = (uint64_t)d->kv_len * d->head_dim;
    c->q = d->q + h * nq;
    c->k = d->k + h * nk;
    c->qd = grab(c, sizeof(double) * nq);
    c->kd = grab(c, sizeof(double) * nk);
    c->vd = grab(c, sizeof(double) * nk);
    c->s = grab(c, sizeof(double) * TILE * d->kv_len);
    c->sg = grab(c, sizeof(double) * d->kv_len);
    c->od = grab(c, sizeof(double) * d->head_dim);
    c->o = grab(c, sizeof(double) * d->head_dim);
    c->scores = grab(c, sizeof(float) * r->nq * r->nk);
    c->order = grab(c, sizeof(int32_t) * r->nq * r->nk);
    c->tmp = grab(c, sizeof(int32_t) * r->nk);
    c->masks = grab(c, (size_t)r->ns * r->nq * r->nk);
    c->slot_blk = grab(c, sizeof(int) * r->ns);
    for (int i = 0; i < AUTO_CANDS; i++) {
        c->cand_scores[i] = grab(c, sizeof(float) * r->nq * r->nk);
        c->cand_order[i] = grab(c, sizeof(int32_t) * r->nq * r->nk);
        if (!c->cand_scores[i] || !c->cand_order[i]) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    c->mass = grab(c, sizeof(double) * r->nk);
    uint32_t ks = r->need_sample ? d->kv_len : 1;
    c->sample = r->need_sample ? grab(c, sizeof(double) * AUTO_ROWS * d->kv_len) : c->mass;
    c->colsum = grab(c, sizeof(float) * ks);
    c->key_order = grab(c, sizeof(int32_t) * ks);
    c->key_tmp = grab(c, sizeof(int32_t) * ks);
    c->heavy = grab(c, ks);
    if (!c->mass || !c->sample || !c->colsum || !c->key_order || !c->key_tmp || !c->heavy)
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (!c->qd || !c->kd || !c->vd || !c->s || !c->sg || !c->od || !c->o || !c->scores || !c->order || !c->tmp ||
        !c->masks || !c->slot_blk)
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    to_double(c->q, nq, c->qd);
    to_double(c->k, nk, c->kd);
    to_double(d->v + h * nk, nk, c->vd);
    baatt_status s = BAATT_OK;
    for (int b = 0; b < BLK_COUNT && s == BAATT_OK; b++)
        if (r->need[b]) s = make_blocking(c, b);
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * Dense passes.
 * ------------------------------------------------------------------------------------------- */

/* c->s[r * kv_len + j] = t q_i . k_j for the nr rows from i0 (original order). */
static void qk_tile(head_ctx *c, uint32_t i0, uint32_t nr)
{
    uint32_t kl = c->r->cfg.kv_len, d = c->r->cfg.head_dim;
    double t = baatt_config_scale(&c->r->cfg);
    for (uint32_t j = 0; j < kl; j++) {
        const double *kr = c->kd + (uint64_t)j * d;
        for (uint32_t r = 0; r < nr; r++)
            c->s[(uint64_t)r * kl + j] = t * baatt_dot_f64(c->qd + (uint64_t)(i0 + r) * d, kr, d);
    }
}

/* Pass 1: pooled[b][I, J] += A_ij for every row i and blocking b in use. */
static void pass_pooled(head_ctx *c)
{
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len;
    for (uint32_t i0 = 0; i0 < ql; i0 += TILE) {
        uint32_t nr = ql - i0 < TILE ? ql - i0 : TILE;
        qk_tile(c, i0, nr);
        for (uint32_t t = 0; t < nr; t++) {
            double *p = c->s + (uint64_t)t * kl;
            baatt_softmax_f64(p, kl);
            for (int b = 0; b < BLK_COUNT; b++) {
                if (!r->need[b]) continue;
                double *row = c->pooled[b] + (uint64_t)c->qblk[b][i0 + t] * r->nk;
                const uint32_t *kb = c->kblk[b];
                for (uint32_t j = 0; j < kl; j++) row[kb[j]] += p[j];
            }
        }
    }
}

/* One row's per-key-block max logit, exp-sum and value sum on blocking b (srow: logits in the
 * original key order). Per-block maxima keep every combination exact, however far apart the
 * blocks' logits are. */
static void block_sums(head_ctx *c, int b, const double *srow)
{
    const run *r = c->r;
    uint32_t kl = r->cfg.kv_len, d = r->cfg.head_dim, B = r->cfg.block_size;
    const double *sg = srow;
    if (b != BLK_IDENTITY) {
        for (uint32_t p = 0; p < kl; p++) c->sg[p] = srow[c->perm_k[b][p]];
        sg = c->sg;
    }
    for (uint32_t J = 0; J < r->nk; J++) {
        uint32_t p0 = J * B, p1 = p0 + block_len(kl, B, J);
        double mx = -INFINITY, z = 0, *u = c->bu[b] + (uint64_t)J * d;
        for (uint32_t p = p0; p < p1; p++) mx = sg[p] > mx ? sg[p] : mx;
        memset(u, 0, sizeof(double) * d);
        for (uint32_t p = p0; p < p1; p++) {
            double w = exp(sg[p] - mx);
            const double *v = c->vs[b] + (uint64_t)p * d;
            z += w;
            for (uint32_t a = 0; a < d; a++) u[a] += w * v[a];
        }
        c->bm[b][J] = mx;
        c->bz[b][J] = z;
    }
}

/* out = softmax-weighted value over the selected blocks of blocking b (mrow NULL: all blocks). */
static void combine(const head_ctx *c, int b, const uint8_t *mrow, double *out)
{
    uint32_t nk = c->r->nk, d = c->r->cfg.head_dim;
    double mx = -INFINITY, z = 0;
    for (uint32_t J = 0; J < nk; J++)
        if ((!mrow || mrow[J]) && c->bm[b][J] > mx) mx = c->bm[b][J];
    memset(out, 0, sizeof(double) * d);
    for (uint32_t J = 0; J < nk; J++) {
        if (mrow && !mrow[J]) continue;
        double w = exp(c->bm[b][J] - mx);
        const double *u = c->bu[b] + (uint64_t)J * d;
        z += w * c->bz[b][J];
        for (uint32_t a = 0; a < d; a++) out[a] += w * u[a];
    }
    for (uint32_t a = 0; a < d; a++) out[a] = z > 0 ? out[a] / z : 0;
}

static void add_errors(acc *a, const double *o, const double *od, uint32_t d)
{
    for (uint32_t i = 0; i < d; i++) {
        double x = o[i], y = od[i];
        a->l1 += fabs(x - y);
        a->l1d += fabs(y);
        a->l2 += (x - y) * (x - y);
        a->l2d += y * y;
        a->l2o += x * x;
        a->cross += x * y;
    }
}

/* Pass 2: every slot's sparse output of every row against the dense one. */
static void pass_outputs(head_ctx *c)
{
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len, d = r->cfg.head_dim;
    size_t nb = (size_t)r->nq * r->nk;
    for (uint32_t i0 = 0; i0 < ql; i0 += TILE) {
        uint32_t nr = ql - i0 < TILE ? ql - i0 : TILE;
        qk_tile(c, i0, nr);
        for (uint32_t t = 0; t < nr; t++) {
            uint32_t i = i0 + t;
            for (int b = 0; b < BLK_COUNT; b++)
                if (r->need[b]) block_sums(c, b, c->s + (uint64_t)t * kl);
            combine(c, BLK_IDENTITY, NULL, c->od);
            for (uint32_t sl = 0; sl < r->ns; sl++) {
                int b = c->slot_blk[sl];
                combine(c, b, c->masks + sl * nb + (uint64_t)c->qblk[b][i] * r->nk, c->o);
                add_errors(&c->acc[sl], c->o, c->od, d);
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Selection.
 * ------------------------------------------------------------------------------------------- */

/* Blocks per row for target t at (head h, query block I) for a budgeted (non-threshold) selection.
 * A fractional mean k is spread so that rows 0..R-1 (all heads) take floor or ceil and their total
 * is floor(R k): each row's count is floor((row + 1) k) - floor(row k). */
static uint32_t row_budget(const run *r, uint32_t t, uint32_t h, uint32_t I)
{
    if (r->o->targets[t].kind == EVAL_KEEP) return r->k_fixed[t];
    double k = r->k_avg[t];
    uint64_t row = (uint64_t)h * r->nq + I;
    double n = floor((row + 1) * k + 1e-9) - floor(row * k + 1e-9);
    return n < 1 ? 1 : n > r->nk ? r->nk : (uint32_t)n;
}

/* Scores method m on blocking b and ranks every row (ties: lower J first). */
static baatt_status rank_on(head_ctx *c, const method *m, int b, float *scores, int32_t *order)
{
    const run *r = c->r;
    c->auto_blk = b;
    baatt_status s = m->score(c, m, scores);
    for (uint32_t I = 0; s == BAATT_OK && I < r->nq; I++)
        baatt_argsort_desc(scores + (uint64_t)I * r->nk, r->nk, order + (uint64_t)I * r->nk, c->tmp);
    return s;
}

/* How many blocks row I keeps for (method m, target t), given m's scores and ranking. */
static uint32_t row_keep(const head_ctx *c, const method *m, uint32_t t, uint32_t I, const float *scores,
                         const int32_t *order)
{
    const run *r = c->r;
    const eval_target *tg = &r->o->targets[t];
    if (tg->kind == EVAL_THRESHOLD && m->adaptive) {
        uint64_t at = (uint64_t)I * r->nk;
        return baatt_config_clamp_blocks(&r->cfg, baatt_mass_prefix(scores + at, order + at, r->nk, tg->value));
    }
    return row_budget(r, t, c->h, I);
}

/* The caller's mask for (m, t) on this head, if it gave one ("baatt" from the GPU). */
static const uint8_t *external_mask(const run *r, const method *m, uint32_t t, uint32_t h)
{
    if (!r->o->ext_masks || !r->o->ext_masks[t] || strcmp(m->name, "baatt")) return NULL;
    return r->o->ext_masks[t] + (uint64_t)h * r->nq * r->nk;
}

/* The mask of slot (method index mi, target t) on blocking b from m's scores and ranking. */
static void fill_slot(head_ctx *c, uint32_t mi, uint32_t t, int b, const float *scores, const int32_t *order)
{
    const run *r = c->r;
    const method *m = r->methods[mi];
    size_t nb = (size_t)r->nq * r->nk;
    uint32_t sl = mi * r->nt + t;
    uint8_t *mask = c->masks + sl * nb;
    const uint8_t *ext = external_mask(r, m, t, c->h);
    c->slot_blk[sl] = ext ? BLK_EXTERNAL : b;
    if (ext) {
        memcpy(mask, ext, nb);
        return;
    }
    for (uint32_t I = 0; I < r->nq; I++) {
        uint32_t keep = row_keep(c, m, t, I, scores, order);
        for (uint32_t p = 0; p < keep; p++) mask[(uint64_t)I * r->nk + order[(uint64_t)I * r->nk + p]] = 1;
    }
}

/* Exact softmax rows of the sampled queries: p [rows, kv_len]. Returns the row count. */
static uint32_t sample_rows(head_ctx *c, double *p)
{
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len, d = r->cfg.head_dim, n = baatt_auto_samples(ql);
    double t = baatt_config_scale(&r->cfg);
    for (uint32_t s = 0; s < n; s++) {
        uint64_t i = baatt_auto_row(s, n, ql);
        double *row = p + (uint64_t)s * kl;
        for (uint32_t j = 0; j < kl; j++) row[j] = t * baatt_dot_f64(c->qd + i * d, c->kd + (uint64_t)j * d, d);
        baatt_softmax_f64(row, kl);
    }
    return n;
}

/* The sampled rows of this head, computed once (every BLK_AUTO and splitting method reads them). */
static uint32_t ensure_sample(head_ctx *c)
{
    if (!c->n_sample) c->n_sample = sample_rows(c, c->sample);
    return c->n_sample;
}

/* Recall that the ranking `order` on blocking b achieves at target t's per-row budgets, measured
 * on the sampled exact rows: the true mass of the top blocks of each sampled row's query block. */
static double sampled_recall(head_ctx *c, int b, const int32_t *order, uint32_t t, uint32_t n)
{
    const run *r = c->r;
    uint32_t ql = r->cfg.q_len, kl = r->cfg.kv_len, nk = r->nk;
    double total = 0;
    for (uint32_t s = 0; s < n; s++) {
        uint32_t I = c->qblk[b][baatt_auto_row(s, n, ql)], keep = row_budget(r, t, c->h, I);
        const double *row = c->sample + (uint64_t)s * kl;
        memset(c->mass, 0, sizeof(double) * nk);
        for (uint32_t j = 0; j < kl; j++) c->mass[c->kblk[b][j]] += row[j];
        for (uint32_t k = 0; k < keep; k++) total += c->mass[order[(uint64_t)I * nk + k]];
    }
    return total / n;
}

/* The exact recall (all rows, from the pooled map) of ranking `order` on blocking b at target t. */
static double pooled_recall(const head_ctx *c, int b, const int32_t *order, uint32_t t)
{
    const run *r = c->r;
    double total = 0;
    for (uint32_t I = 0; I < r->nq; I++) {
        uint32_t keep = row_budget(r, t, c->h, I);
        for (uint32_t k = 0; k < keep; k++) total += c->pooled[b][(uint64_t)I * r->nk + order[(uint64_t)I * r->nk + k]];
    }
    return total;
}

/* A BLK_AUTO method (baatt_auto): scored and ranked on the norm-sorted and on the original order
 * (and, with cov_auto, with the covariance on and off: the library's BAATT_COVARIANCE_AUTO, in
 * the same candidate order); for each target the head keeps the candidate whose selection recalls
 * the most of the sampled rows' exact attention at that target's budget (ties keep the earlier
 * one: the library's rule, baatt_auto_pick; a threshold target is judged at its matched budget). Norm sorting pays where token norms predict attention and breaks positional
 * structure where they do not (bench/results/accuracy.md), and which wins can depend on the
 * sparsity; the choice costs AUTO_ROWS dense rows and a second estimate per head. (The estimated
 * maps cannot make the choice: a sorted blocking's estimate looks more concentrated than its true
 * map, and choosing by it kept sorting on real heads where it loses.) */
static baatt_status select_auto(head_ctx *c, uint32_t mi)
{
    const run *r = c->r;
    const method *m = r->methods[mi];
    int nc = 0, blk[AUTO_CANDS], cov[AUTO_CANDS], split[AUTO_CANDS];
    for (int w = 0; w < (m->split_auto ? 2 : 1); w++) /* tie order: m's split, m's covariance, sorted first */
        for (int v = 0; v < (m->cov_auto ? 2 : 1); v++)
            for (int u = 0; u < 2; u++, nc++)
                blk[nc] = u ? BLK_IDENTITY : BLK_SORTED, cov[nc] = v ? !m->param : m->param, split[nc] = !w;
    int pooled = nc;
    if (m->auto_antidiag) blk[nc++] = BLK_IDENTITY; /* last: scored by antidiagonals, not pooling */
    method ad = {"antidiag", BLK_IDENTITY, score_antidiag, m->auto_antidiag, 0, "", 0, 0, 0, 0, 0};
    baatt_status s = BAATT_OK;
    for (int i = 0; i < nc && s == BAATT_OK; i++) {
        c->auto_cov = i < pooled ? cov[i] : 0;
        c->auto_split = i < pooled && split[i] && m->split;
        s = rank_on(c, i < pooled ? m : &ad, blk[i], c->cand_scores[i], c->cand_order[i]);
    }
    if (s != BAATT_OK) return s;
    int exact = m->score == score_oracle; /* oracle_best: the choice may use the true map */
    uint32_t n = exact ? 0 : ensure_sample(c);
    for (uint32_t t = 0; t < r->nt; t++) {
        double rec[AUTO_CANDS];
        for (int i = 0; i < nc; i++)
            rec[i] = exact ? pooled_recall(c, blk[i], c->cand_order[i], t)
                           : sampled_recall(c, blk[i], c->cand_order[i], t, n);
        /* the library's own rule (ties keep the earlier candidate), so baatt_auto measures it */
        uint32_t best = baatt_auto_pick(rec, (uint32_t)nc);
        fill_slot(c, mi, t, blk[best], c->cand_scores[best], c->cand_order[best]);
    }
    return BAATT_OK;
}

/* Masks of method index mi for every target. */
static baatt_status select_method(head_ctx *c, uint32_t mi)
{
    const method *m = c->r->methods[mi];
    if (m->blocking == BLK_AUTO) return select_auto(c, mi);
    baatt_status s = rank_on(c, m, m->blocking, c->scores, c->order);
    for (uint32_t t = 0; s == BAATT_OK && t < c->r->nt; t++) fill_slot(c, mi, t, m->blocking, c->scores, c->order);
    return s;
}

/* Recall and size sums of every slot from the pooled maps. */
static void slot_sums(head_ctx *c)
{
    const run *r = c->r;
    size_t nb = (size_t)r->nq * r->nk;
    for (uint32_t sl = 0; sl < r->ns; sl++) {
        const uint8_t *mask = c->masks + sl * nb;
        const double *p = c->pooled[c->slot_blk[sl]];
        acc *a = &c->acc[sl];
        for (uint32_t I = 0; I < r->nq; I++) {
            for (uint32_t J = 0; J < r->nk; J++) {
                if (!mask[(uint64_t)I * r->nk + J]) continue;
                a->recall += p[(uint64_t)I * r->nk + J];
                a->sel_tokens += block_len(r->cfg.kv_len, r->cfg.block_size, J);
                a->sel_blocks += 1;
            }
        }
        a->sorted = c->slot_blk[sl] != BLK_IDENTITY;
        a->all_tokens = (double)r->nq * r->cfg.kv_len;
        a->all_blocks = (double)nb;
    }
}

/* Every slot's mask of this head from o->reuse_in, measured on the captured blocking. */
static void reuse_head(head_ctx *c)
{
    const run *r = c->r;
    const eval_selection *in = r->o->reuse_in;
    size_t nb = (size_t)r->nq * r->nk;
    memcpy(c->masks, in->masks + (uint64_t)c->h * r->ns * nb, r->ns * nb);
    for (uint32_t sl = 0; sl < r->ns; sl++)
        c->slot_blk[sl] = in->sorted[(uint64_t)c->h * r->ns + sl] ? BLK_EXTERNAL : BLK_IDENTITY;
}

/* Copies this head's masks and sorted permutations to the caller's arrays, if any. */
static void export_head(const head_ctx *c)
{
    const run *r = c->r;
    const eval_options *o = r->o;
    size_t nb = (size_t)r->nq * r->nk;
    eval_selection *out = o->reuse_out;
    if (out) { /* a reusing run's blocking is BLK_EXTERNAL, a selecting run's BLK_SORTED */
        int b = o->reuse_in ? BLK_EXTERNAL : BLK_SORTED;
        memcpy(out->masks + (uint64_t)c->h * r->ns * nb, c->masks, r->ns * nb);
        for (uint32_t sl = 0; sl < r->ns; sl++)
            out->sorted[(uint64_t)c->h * r->ns + sl] = c->slot_blk[sl] != BLK_IDENTITY;
        memcpy(out->perm_q + (uint64_t)c->h * r->cfg.q_len, c->perm_q[b], sizeof(int32_t) * r->cfg.q_len);
        memcpy(out->perm_k + (uint64_t)c->h * r->cfg.kv_len, c->perm_k[b], sizeof(int32_t) * r->cfg.kv_len);
    }
    for (uint32_t sl = 0; o->mask_out && sl < r->ns; sl++)
        if (o->mask_out[sl]) memcpy(o->mask_out[sl] + c->h * nb, c->masks + sl * nb, nb);
    if (o->sorted_perm_q_out && c->perm_q[BLK_SORTED])
        memcpy(o->sorted_perm_q_out + (uint64_t)c->h * r->cfg.q_len, c->perm_q[BLK_SORTED],
               sizeof(int32_t) * r->cfg.q_len);
    if (o->sorted_perm_k_out && c->perm_k[BLK_SORTED])
        memcpy(o->sorted_perm_k_out + (uint64_t)c->h * r->cfg.kv_len, c->perm_k[BLK_SORTED],
               sizeof(int32_t) * r->cfg.kv_len);
}

/* ---------------------------------------------------------------------------------------------
 * The run: threshold matching, heads in parallel, reduction.
 * ------------------------------------------------------------------------------------------- */

static void progress(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(run *r, const char *fmt, ...)
{
    if (!r->o->progress) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->o->progress(r->o->user, line);
}

/* Everything for head h. */
static baatt_status eval_head(run *r, uint32_t h)
{
    head_ctx c;
    baatt_status s = head_setup(&c, r, h);
    c.acc = r->acc + (uint64_t)h * r->ns;
    if (s == BAATT_OK) pass_pooled(&c);
    if (s == BAATT_OK && r->o->reuse_in) reuse_head(&c);
    for (uint32_t m = 0; s == BAATT_OK && !r->o->reuse_in && m < r->nm; m++) s = select_method(&c, m);
    if (s == BAATT_OK) {
        slot_sums(&c);
        export_head(&c);
        if (r->o->outputs) pass_outputs(&c);
    }
    head_free(&c);
    return s;
}

static void *worker(void *arg)
{
    run *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        uint32_t h = r->next_head++;
        int stop = h >= r->d->heads || r->status != BAATT_OK;
        pthread_mutex_unlock(&r->lock);
        if (stop) return NULL;
        baatt_status s = eval_head(r, h);
        pthread_mutex_lock(&r->lock);
        if (s != BAATT_OK && r->status == BAATT_OK) r->status = s;
        r->done_heads++;
        progress(r, "head %u/%u done (%.1f s)", r->done_heads, r->d->heads, now_s() - r->t0);
        pthread_mutex_unlock(&r->lock);
    }
}

/* Threshold targets: BA-Att's ("baatt", ALGORITHM.md) achieved mean block count over all heads sets the
 * budget of every non-adaptive method. */
static baatt_status match_thresholds(run *r)
{
    const method *ad = find_method("baatt");
    double *total = calloc(r->nt, sizeof(double));
    if (!total) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    baatt_status s = BAATT_OK;
    for (uint32_t h = 0; h < r->d->heads && s == BAATT_OK; h++) {
        head_ctx c;
        s = head_setup(&c, r, h);
        if (s == BAATT_OK) s = rank_on(&c, ad, ad->blocking, c.scores, c.order);
        for (uint32_t t = 0; s == BAATT_OK && t < r->nt; t++) {
            if (r->o->targets[t].kind != EVAL_THRESHOLD) continue;
            const uint8_t *ext = external_mask(r, ad, t, h);
            for (uint64_t i = 0; ext && i < (uint64_t)r->nq * r->nk; i++) total[t] += ext[i];
            for (uint32_t I = 0; !ext && I < r->nq; I++) total[t] += row_keep(&c, ad, t, I, c.scores, c.order);
        }
        head_free(&c);
    }
    for (uint32_t t = 0; t < r->nt; t++)
        if (r->o->targets[t].kind == EVAL_THRESHOLD) r->k_avg[t] = total[t] / ((double)r->d->heads * r->nq);
    free(total);
    return s;
}

static baatt_status check_targets(run *r, char *msg, size_t n)
{
    for (uint32_t t = 0; t < r->nt; t++) {
        const eval_target *tg = &r->o->targets[t];
        double v = tg->value;
        int ok = tg->kind == EVAL_SPARSITY                             ? v >= 0 && v < 1
                 : tg->kind == EVAL_KEEP || tg->kind == EVAL_THRESHOLD ? v > 0 && v <= 1
                                                                       : 0;
        if (!ok)
            return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT,
                              "target %u (kind %d) has value %g outside its range", t, (int)tg->kind, v);
        if (tg->kind == EVAL_SPARSITY) r->k_avg[t] = (1 - v) * r->nk;
        baatt_config c = r->cfg;
        c.keep_ratio = (float)v;
        if (tg->kind == EVAL_KEEP) r->k_fixed[t] = baatt_config_keep_blocks(&c);
    }
    return BAATT_OK;
}

static baatt_status run_init(run *r, const eval_data *d, const eval_options *o, char *msg, size_t n)
{
    memset(r, 0, sizeof *r);
    r->d = d;
    r->o = o;
    r->cfg = baatt_config_default();
    r->cfg.q_len = d->q_len;
    r->cfg.kv_len = d->kv_len;
    r->cfg.head_dim = d->head_dim;
    r->cfg.scale = d->scale;
    r->cfg.block_size = o->block_size;
    baatt_status s = baatt_config_check(&r->cfg, msg, n);
    if (s != BAATT_OK) return s;
    r->nq = baatt_config_q_blocks(&r->cfg);
    r->nk = baatt_config_k_blocks(&r->cfg);
    const char *const *names = o->methods ? o->methods : eval_default_methods();
    r->nm = o->methods ? o->n_methods : N_DEFAULT;
    r->nt = o->n_targets;
    r->ns = r->nm * r->nt;
    r->methods = calloc(r->nm ? r->nm : 1, sizeof *r->methods);
    r->k_avg = calloc(r->nt ? r->nt : 1, sizeof(double));
    r->k_fixed = calloc(r->nt ? r->nt : 1, sizeof(uint32_t));
    r->acc = calloc((size_t)d->heads * r->ns + 1, sizeof(acc));
    if (!r->methods || !r->k_avg || !r->k_fixed || !r->acc) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    r->need[BLK_IDENTITY] = 1; /* the dense output is combined on it */
    for (uint32_t m = 0; m < r->nm; m++) {
        if (!(r->methods[m] = find_method(names[m])))
            return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "unknown method '%s'", names[m]);
        if (r->methods[m]->blocking == BLK_AUTO) r->need[BLK_IDENTITY] = r->need[BLK_SORTED] = r->need_sample = 1;
        else r->need[r->methods[m]->blocking] = 1;
        if (r->methods[m]->split) r->need_sample = 1;
    }
    r->need[BLK_SORTED] = 1; /* threshold matching and the sorted-perm export use it */
    if (o->ext_masks && o->ext_perm_q && o->ext_perm_k) {
        r->need[BLK_EXTERNAL] = 1;
        r->ext_pq = o->ext_perm_q;
        r->ext_pk = o->ext_perm_k;
    }
    if ((o->reuse_in || o->reuse_out) && o->ext_masks)
        return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "selection reuse does not go with external masks");
    const eval_selection *in = o->reuse_in;
    if (in) {
        if (in->heads != d->heads || in->q_len != d->q_len || in->kv_len != d->kv_len || in->nq != r->nq ||
            in->nk != r->nk || in->ns != r->ns || !in->masks || !in->sorted || !in->perm_q || !in->perm_k)
            return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT,
                              "the reused selection is of another shape, block size or slot count");
        r->need[BLK_EXTERNAL] = 1;
        r->ext_pq = in->perm_q;
        r->ext_pk = in->perm_k;
    }
    return check_targets(r, msg, n);
}

static void run_free(run *r)
{
    free(r->methods);
    free(r->k_avg);
    free(r->k_fixed);
    free(r->acc);
}

/* Sums over heads (in head order) into one record per slot. */
static void reduce(const run *r, eval_record *rec)
{
    for (uint32_t sl = 0; sl < r->ns; sl++) {
        acc a = {0};
        for (uint32_t h = 0; h < r->d->heads; h++) {
            const acc *x = &r->acc[(uint64_t)h * r->ns + sl];
            a.recall += x->recall, a.sel_tokens += x->sel_tokens, a.all_tokens += x->all_tokens;
            a.sel_blocks += x->sel_blocks, a.all_blocks += x->all_blocks;
            a.l1 += x->l1, a.l1d += x->l1d, a.l2 += x->l2, a.l2d += x->l2d, a.l2o += x->l2o, a.cross += x->cross;
            a.sorted += x->sorted;
        }
        eval_record *e = &rec[sl];
        e->method = r->methods[sl / r->nt]->name;
        e->target = r->o->targets[sl % r->nt];
        e->keep = a.sel_blocks / a.all_blocks;
        e->sparsity = 1 - a.sel_tokens / a.all_tokens;
        e->mass_recall = a.recall / ((double)r->d->heads * r->cfg.q_len);
        e->sorted_heads = a.sorted / r->d->heads;
        e->rel_l1 = e->rel_l2 = e->cosine = NAN;
        if (!r->o->outputs) continue;
        e->rel_l1 = a.l1d > 0 ? a.l1 / a.l1d : 0;
        e->rel_l2 = a.l2d > 0 ? sqrt(a.l2 / a.l2d) : 0;
        e->cosine = a.l2d > 0 && a.l2o > 0 ? a.cross / sqrt(a.l2d * a.l2o) : 1;
    }
}

void eval_selection_free(eval_selection *s)
{
    if (!s) return;
    free(s->perm_q);
    free(s->perm_k);
    free(s->masks);
    free(s->sorted);
    memset(s, 0, sizeof *s);
}

static baatt_status selection_alloc(const run *r, eval_selection *s)
{
    const eval_data *d = r->d;
    memset(s, 0, sizeof *s);
    s->heads = d->heads;
    s->q_len = d->q_len;
    s->kv_len = d->kv_len;
    s->nq = r->nq;
    s->nk = r->nk;
    s->ns = r->ns;
    s->perm_q = malloc(sizeof(int32_t) * d->heads * d->q_len);
    s->perm_k = malloc(sizeof(int32_t) * d->heads * d->kv_len);
    s->masks = calloc((size_t)d->heads * r->ns * r->nq * r->nk + 1, 1);
    s->sorted = calloc((size_t)d->heads * r->ns + 1, 1);
    if (s->perm_q && s->perm_k && s->masks && s->sorted) return BAATT_OK;
    eval_selection_free(s);
    return BAATT_ERROR_OUT_OF_HOST_MEMORY;
}

static baatt_status run_heads(run *r)
{
    uint32_t n = r->o->threads > 1 ? r->o->threads : 1;
    if (n > r->d->heads) n = r->d->heads;
    pthread_t tid[64];
    if (n > 64) n = 64;
    uint32_t started = 0;
    pthread_mutex_init(&r->lock, NULL);
    for (uint32_t i = 1; i < n; i++)
        if (!pthread_create(&tid[started], NULL, worker, r)) started++;
    worker(r); /* this thread works too */
    for (uint32_t i = 0; i < started; i++) pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&r->lock);
    return r->status;
}

baatt_status eval_run(const eval_data *d, const eval_options *o, eval_record **records, uint32_t *count, char *msg,
                      size_t msg_size)
{
    if (!d || !o || !records || !count || !d->q || !d->k || !d->v || !d->heads) return BAATT_ERROR_INVALID_ARGUMENT;
    if (msg && msg_size) msg[0] = 0;
    run r;
    baatt_status s = run_init(&r, d, o, msg, msg_size);
    r.t0 = now_s();
    int thr = 0;
    for (uint32_t t = 0; t < o->n_targets; t++) thr |= o->targets[t].kind == EVAL_THRESHOLD;
    if (s == BAATT_OK && thr && !o->reuse_in) s = match_thresholds(&r); /* a reused mask has its size */
    if (s == BAATT_OK && o->reuse_out) s = selection_alloc(&r, o->reuse_out);
    if (s == BAATT_OK) s = run_heads(&r);
    if (s != BAATT_OK && o->reuse_out) eval_selection_free(o->reuse_out);
    eval_record *rec = s == BAATT_OK ? calloc(r.ns + 1, sizeof *rec) : NULL;
    if (s == BAATT_OK && !rec) s = BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (s == BAATT_OK) {
        reduce(&r, rec);
        *records = rec;
        *count = r.ns;
    }
    if (s != BAATT_OK && msg && msg_size && !msg[0]) baatt_msgf(msg, msg_size, s, "%s", baatt_status_string(s));
    run_free(&r);
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * The reuse study (eval.h).
 * ------------------------------------------------------------------------------------------- */

/* Records of one step: a fresh run and a run on step 0's selection (sel). On step 0 the fresh run
 * captures sel first. */
static baatt_status reuse_step(const eval_data *d, const eval_options *o, eval_selection *sel, double drift,
                               uint32_t step, eval_reuse_record *out, char *msg, size_t n)
{
    eval_options fo = *o, ro = *o;
    fo.progress = ro.progress = NULL;
    fo.reuse_out = step == 0 ? sel : NULL;
    ro.reuse_in = sel;
    eval_record *fresh = NULL, *reused = NULL;
    uint32_t nf = 0, nr = 0;
    baatt_status s = eval_run(d, &fo, &fresh, &nf, msg, n);
    if (s == BAATT_OK) s = eval_run(d, &ro, &reused, &nr, msg, n);
    for (uint32_t i = 0; s == BAATT_OK && i < nf; i++) out[i] = (eval_reuse_record){drift, step, fresh[i], reused[i]};
    free(fresh);
    free(reused);
    return s;
}

baatt_status eval_reuse_run(const eval_data *d, const eval_options *o, const double *drifts, uint32_t n_drifts,
                            uint32_t steps, uint64_t seed, eval_reuse_record **records, uint32_t *count, char *msg,
                            size_t msg_size)
{
    char dummy[8];
    if (!msg || !msg_size) msg = dummy, msg_size = sizeof dummy;
    msg[0] = 0;
    if (!d || !o || !records || !count || (!drifts && n_drifts) || o->reuse_in || o->reuse_out || o->ext_masks)
        return BAATT_ERROR_INVALID_ARGUMENT;
    for (uint32_t i = 0; i < n_drifts; i++)
        if (!(drifts[i] >= 0 && drifts[i] <= 1))
            return baatt_msgf(msg, msg_size, BAATT_ERROR_INVALID_ARGUMENT, "drift %g is outside [0, 1]", drifts[i]);
    uint32_t ns = (o->methods ? o->n_methods : N_DEFAULT) * o->n_targets;
    eval_reuse_record *rec = calloc((size_t)n_drifts * (steps + 1) * ns + 1, sizeof *rec);
    if (!rec) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    baatt_status s = BAATT_OK;
    double t0 = now_s();
    for (uint32_t e = 0; e < n_drifts && s == BAATT_OK; e++) {
        eval_data x = {0};
        eval_selection sel = {0};
        s = eval_data_copy(d, &x);
        for (uint32_t t = 0; t <= steps && s == BAATT_OK; t++) {
            if (t) s = eval_data_drift(&x, drifts[e], seed, t);
            if (s == BAATT_OK)
                s = reuse_step(&x, o, &sel, drifts[e], t, rec + ((size_t)e * (steps + 1) + t) * ns, msg, msg_size);
            if (s == BAATT_OK && o->progress) {
                char line[128];
                snprintf(line, sizeof line, "drift %g step %u/%u done (%.1f s)", drifts[e], t, steps, now_s() - t0);
                o->progress(o->user, line);
            }
        }
        eval_selection_free(&sel);
        eval_data_free(&x);
    }
    if (s != BAATT_OK) {
        free(rec);
        if (!msg[0]) baatt_msgf(msg, msg_size, s, "%s", baatt_status_string(s));
        return s;
    }
    *records = rec;
    *count = n_drifts * (steps + 1) * ns;
    return BAATT_OK;
}
