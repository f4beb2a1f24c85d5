/* CPU reference of BA-Att (docs/ALGORITHM.md): the oracle every GPU test compares against.
 *
 * Clarity first, but it must stay usable up to ~16K tokens per head (about 17 s for a dense
 * 16K x 16K head of dimension 128 on one CPU core): attention is computed a few query rows at a
 * time (never an N x N array), each head's Q/K/V are converted to double once, and the only
 * quadratic-size arrays are the O(nq * nk) block arrays. Everything is single-threaded and
 * deterministic: the same inputs always give bit-identical outputs.
 *
 * Dense configs (cfg->dense == 1): config validation skips the BA-Att fields, so the stage
 * functions mirror what a dense plan reports: identity permutations, an all-ones mask, and a block
 * size of cfg->block_size if it is 32/64/128, else 64 (that block size gives the mask shape). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Small helpers.
 * ------------------------------------------------------------------------------------------- */

/* The config the block stages run under (see the file comment for the dense case). */
static baatt_status stage_config(const baatt_config *cfg, baatt_config *out)
{
    baatt_status s = baatt_config_check(cfg, NULL, 0);
    if (s != BAATT_OK) return s;
    *out = *cfg;
    if (cfg->dense) {
        if (out->block_size != 32 && out->block_size != 64 && out->block_size != 128) out->block_size = 64;
        out->norm_sort = 0;
    }
    return BAATT_OK;
}

/* Tokens in block J of a sequence of len tokens (the last block may be partial). */
static uint32_t block_count(const baatt_config *c, uint32_t len, uint32_t j)
{
    uint32_t start = j * c->block_size;
    return len - start < c->block_size ? len - start : c->block_size;
}

/* Query head h reads kv head h / group. */
static uint32_t gqa_group(const baatt_config *c) { return c->heads / c->kv_heads; }

/* Rows [first, first + rows) of a dtype tensor with d columns, converted to double. */
static void load_rows(const void *x, baatt_dtype dt, uint64_t first, uint32_t rows, uint32_t d, double *out)
{
    uint64_t n = (uint64_t)rows * d;
    for (uint64_t i = 0; i < n; i++) out[i] = baatt_load(x, dt, first * d + i);
}

/* out += p * v over n = head_dim elements (a multiple of 4), unrolled for the same reason. */
static void axpy(double *out, double p, const double *v, size_t n)
{
    for (size_t i = 0; i < n; i += 4) {
        out[i] += p * v[i];
        out[i + 1] += p * v[i + 1];
        out[i + 2] += p * v[i + 2];
        out[i + 3] += p * v[i + 3];
    }
}

/* 1 if perm (len entries) is a permutation of 0..len-1. A bad permutation coming from a GPU
 * read-back must be reported, not followed out of bounds. seen: len bytes of scratch. */
static int is_permutation(const int32_t *perm, uint32_t len, uint8_t *seen)
{
    memset(seen, 0, len);
    for (uint32_t i = 0; i < len; i++) {
        if (perm[i] < 0 || (uint32_t)perm[i] >= len || seen[perm[i]]) return 0;
        seen[perm[i]] = 1;
    }
    return 1;
}

/* Checks every per-head permutation of a [rows, len] array. */
static baatt_status check_perms(const int32_t *perm, uint64_t rows, uint32_t len)
{
    uint8_t *seen = malloc(len);
    if (!seen) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    baatt_status s = BAATT_OK;
    for (uint64_t r = 0; r < rows && s == BAATT_OK; r++)
        if (!is_permutation(perm + r * len, len, seen)) s = BAATT_ERROR_INVALID_ARGUMENT;
    free(seen);
    return s;
}

/* The selection's order: a NaN ranks above every number (select.comp's NAN_KEY), NaNs tie. */
static int key_gt(float x, float y) { return isnan(x) ? !isnan(y) : x > y; }

/* Stable argsort, descending by key (key_gt): idx[p] = index of the p-th largest key, ties keep the lower
 * index first. A bottom-up merge sort, stable by construction (the right run wins only when
 * strictly greater), so the result is deterministic and never reads out of bounds even with NaN
 * keys. tmp: n entries of scratch. */
void baatt_argsort_desc(const float *key, uint32_t n, int32_t *idx, int32_t *tmp)
{
    for (uint32_t i = 0; i < n; i++) idx[i] = (int32_t)i;
    for (uint32_t w = 1; w < n; w *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * w) {
            uint32_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            uint32_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi) tmp[o++] = key_gt(key[idx[b]], key[idx[a]]) ? idx[b++] : idx[a++];
            while (a < mid) tmp[o++] = idx[a++];
            while (b < hi) tmp[o++] = idx[b++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Attention core, shared by dense, sparse and the metrics.
 * ------------------------------------------------------------------------------------------- */

/* Query rows processed together: each key and value row is then read once per tile instead of
 * once per query (at long lengths K and V of a head are far larger than the caches). Rows of a
 * tile attend to the same keys (one query block's selection, or all keys). */
#define ROW_TILE 8

/* One head's inputs in double (Q of a query head, K and V of its kv head) and scratch: the K and
 * V rows a query block selected, gathered contiguous (kg, vg: sparse runs only; gathering once
 * per block beats chasing perm_k through memory for every tile), scores [ROW_TILE, kv_len] and
 * out [ROW_TILE, head_dim] of one row tile. */
typedef struct head_buf {
    double *q, *k, *v, *kg, *vg, *scores, *out;
    double lse[ROW_TILE]; /* log-sum-exp of each row of the tile */
    uint32_t d;
    double scale;
} head_buf;

static void head_free(head_buf *h)
{
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->kg);
    free(h->vg);
    free(h->scores);
    free(h->out);
}

static baatt_status head_alloc(const baatt_config *c, head_buf *h, int gather)
{
    size_t d = c->head_dim;
    h->d = c->head_dim;
    h->scale = baatt_config_scale(c); /* the fp32 scale the GPU uses, widened */
    h->q = malloc(sizeof(double) * c->q_len * d);
    h->k = malloc(sizeof(double) * c->kv_len * d);
    h->v = malloc(sizeof(double) * c->kv_len * d);
    h->scores = malloc(sizeof(double) * ROW_TILE * c->kv_len);
    h->out = malloc(sizeof(double) * ROW_TILE * d);
    if (gather) {
        h->kg = malloc(sizeof(double) * c->kv_len * d);
        h->vg = malloc(sizeof(double) * c->kv_len * d);
    }
    if (h->q && h->k && h->v && h->scores && h->out && (!gather || (h->kg && h->vg))) return BAATT_OK;
    head_free(h);
    return BAATT_ERROR_OUT_OF_HOST_MEMORY;
}

double baatt_softmax_f64(double *p, uint32_t n)
{
    double mx = -INFINITY, sum = 0;
    for (uint32_t j = 0; j < n; j++)
        if (p[j] > mx) mx = p[j];
    for (uint32_t j = 0; j < n; j++) sum += p[j] = exp(p[j] - mx);
    for (uint32_t j = 0; j < n; j++) p[j] /= sum;
    return mx + log(sum);
}

/* Query rows rows[0..nr) (nr <= ROW_TILE, original indices into h->q) against the n key rows k
 * with values v (contiguous, head_dim each): exact softmax in double. On return
 * h->scores[r * n + j] is the probability row r puts on key j, h->lse[r] its log-sum-exp and, if want_out,
 * h->out[r * d + a] = sum_j p v_j[a] (0 when there are no keys). */
static void attend_tile(head_buf *h, const uint32_t *rows, uint32_t nr, const double *k, const double *v, uint32_t n,
                        int want_out)
{
    uint32_t d = h->d;
    for (uint32_t j = 0; j < n; j++) {
        const double *kr = k + (uint64_t)j * d;
        for (uint32_t r = 0; r < nr; r++)
            h->scores[(uint64_t)r * n + j] = h->scale * baatt_dot_f64(h->q + (uint64_t)rows[r] * d, kr, d);
    }
    for (uint32_t r = 0; r < nr; r++) h->lse[r] = baatt_softmax_f64(h->scores + (uint64_t)r * n, n);
    if (!want_out) return;
    memset(h->out, 0, sizeof(double) * nr * d);
    for (uint32_t j = 0; j < n; j++)
        for (uint32_t r = 0; r < nr; r++)
            axpy(h->out + (uint64_t)r * d, h->scores[(uint64_t)r * n + j], v + (uint64_t)j * d, d);
}

/* The original rows of sorted positions [first, first + nr): perm[p], or p itself (perm NULL). */
static void tile_rows(const int32_t *perm, uint32_t first, uint32_t nr, uint32_t *rows)
{
    for (uint32_t r = 0; r < nr; r++) rows[r] = perm ? (uint32_t)perm[first + r] : first + r;
}

/* Loads K and V of (b, kv head kh) (v NULL: K only, for the log-sum-exp); Q is loaded per query
 * head by load_q. */
static void load_kv(const baatt_config *c, const void *k, const void *v, uint32_t b, uint32_t kh, head_buf *h)
{
    uint64_t first = ((uint64_t)b * c->kv_heads + kh) * c->kv_len;
    load_rows(k, c->dtype, first, c->kv_len, c->head_dim, h->k);
    if (v) load_rows(v, c->dtype, first, c->kv_len, c->head_dim, h->v);
}

static void load_q(const baatt_config *c, const void *q, uint32_t b, uint32_t qh, head_buf *h)
{
    load_rows(q, c->dtype, ((uint64_t)b * c->heads + qh) * c->q_len, c->q_len, c->head_dim, h->q);
}

/* Where finished rows go, at their original indices (either may be NULL): O [b, h, q_len, d] and
 * the log-sum-exp [b, h, q_len]. */
typedef struct outputs {
    float *o, *lse;
} outputs;

/* Writes the nr rows of a finished tile (h->out, h->lse) to out. */
static void store_tile(const baatt_config *c, outputs out, uint32_t b, uint32_t qh, const head_buf *h,
                       const uint32_t *rows, uint32_t nr)
{
    uint64_t first = ((uint64_t)b * c->heads + qh) * c->q_len;
    for (uint32_t r = 0; r < nr; r++) {
        if (out.lse) out.lse[first + rows[r]] = (float)h->lse[r];
        if (!out.o) continue;
        float *dst = out.o + (first + rows[r]) * c->head_dim;
        for (uint32_t a = 0; a < c->head_dim; a++) dst[a] = (float)h->out[(uint64_t)r * c->head_dim + a];
    }
}

/* ---------------------------------------------------------------------------------------------
 * Dense attention.
 * ------------------------------------------------------------------------------------------- */

/* Every row over every key: O and/or the log-sum-exp. */
static baatt_status dense_rows(const baatt_config *cfg, const void *q, const void *k, const void *v, outputs out)
{
    head_buf h = {0};
    baatt_status s;
    if ((s = head_alloc(cfg, &h, 0)) != BAATT_OK) return s;
    uint32_t g = gqa_group(cfg), rows[ROW_TILE];
    for (uint32_t b = 0; b < cfg->batch; b++) {
        for (uint32_t kh = 0; kh < cfg->kv_heads; kh++) {
            load_kv(cfg, k, v, b, kh, &h);
            for (uint32_t qh = kh * g; qh < (kh + 1) * g; qh++) {
                load_q(cfg, q, b, qh, &h);
                for (uint32_t i = 0; i < cfg->q_len; i += ROW_TILE) {
                    uint32_t nr = cfg->q_len - i < ROW_TILE ? cfg->q_len - i : ROW_TILE;
                    tile_rows(NULL, i, nr, rows);
                    attend_tile(&h, rows, nr, h.k, h.v, cfg->kv_len, out.o != NULL);
                    store_tile(cfg, out, b, qh, &h, rows, nr);
                }
            }
        }
    }
    head_free(&h);
    return BAATT_OK;
}

baatt_status baatt_reference_attention(const baatt_config *cfg, const void *q, const void *k, const void *v, float *o)
{
    baatt_status s = baatt_config_check(cfg, NULL, 0);
    if (s != BAATT_OK) return s;
    if (!q || !k || !v || !o) return BAATT_ERROR_INVALID_ARGUMENT;
    return dense_rows(cfg, q, k, v, (outputs){o, NULL});
}

/* ---------------------------------------------------------------------------------------------
 * Step 1: norm sorting.
 * ------------------------------------------------------------------------------------------- */

/* Norms of one head's len tokens: fp64 sum, rounded to fp32 (the value the GPU compares). */
static void head_norms(const baatt_config *c, const void *x, uint64_t first, uint32_t len, float *norm)
{
    for (uint32_t i = 0; i < len; i++) {
        double ss = 0;
        for (uint32_t a = 0; a < c->head_dim; a++) {
            double e = baatt_load(x, c->dtype, (first + i) * c->head_dim + a);
            ss += e * e;
        }
        norm[i] = (float)sqrt(ss);
    }
}

baatt_status baatt_reference_sort(const baatt_config *cfg, const void *x, uint32_t nheads, uint32_t len, int32_t *perm)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (!x || !perm) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!nheads || !len) return BAATT_ERROR_BAD_SHAPE;
    float *norm = malloc(sizeof(float) * len);
    int32_t *tmp = malloc(sizeof(int32_t) * len);
    if (!norm || !tmp) {
        free(norm);
        free(tmp);
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint64_t r = 0; r < (uint64_t)c.batch * nheads; r++) {
        int32_t *p = perm + r * len;
        if (!c.norm_sort) {
            for (uint32_t i = 0; i < len; i++) p[i] = (int32_t)i;
            continue;
        }
        head_norms(&c, x, r * len, len, norm);
        baatt_argsort_desc(norm, len, p, tmp);
    }
    free(norm);
    free(tmp);
    return BAATT_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Step 2: block statistics.
 * ------------------------------------------------------------------------------------------- */

/* Mean and population variance (two passes, fp64) of the n tokens rows[0..n) of one head. */
static void block_moments(const baatt_config *c, const void *x, uint64_t first, const int32_t *rows, uint32_t n,
                          double *acc, float *mean, float *var)
{
    uint32_t d = c->head_dim;
    memset(acc, 0, d * sizeof *acc);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t a = 0; a < d; a++) acc[a] += baatt_load(x, c->dtype, (first + rows[t]) * d + a);
    for (uint32_t a = 0; a < d; a++) {
        double m = acc[a] / n, ss = 0;
        for (uint32_t t = 0; t < n; t++) {
            double e = baatt_load(x, c->dtype, (first + rows[t]) * d + a) - m;
            ss += e * e;
        }
        mean[a] = (float)m;
        var[a] = (float)(ss / n);
    }
}

baatt_status baatt_reference_block_stats(const baatt_config *cfg, const void *x, uint32_t nheads, uint32_t len,
                                         const int32_t *perm, float *mean, float *var)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (!x || !perm || !mean || !var) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!nheads || !len) return BAATT_ERROR_BAD_SHAPE;
    uint64_t heads = (uint64_t)c.batch * nheads;
    if ((s = check_perms(perm, heads, len)) != BAATT_OK) return s;
    double *acc = malloc(sizeof(double) * c.head_dim);
    if (!acc) return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    uint32_t nb = (len + c.block_size - 1) / c.block_size;
    for (uint64_t r = 0; r < heads; r++) {
        for (uint32_t j = 0; j < nb; j++) {
            uint64_t at = (r * nb + j) * c.head_dim;
            block_moments(&c, x, r * len, perm + r * len + (uint64_t)j * c.block_size, block_count(&c, len, j), acc,
                          mean + at, var + at);
        }
    }
    free(acc);
    return BAATT_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Step 3: corrected block logits.
 * ------------------------------------------------------------------------------------------- */

/* l_IJ = t qm.km + lambda (t^2/2) sum_a [qv (kv + km^2) + qm^2 kv] + ln(n_J), in fp64. */
double baatt_block_logit(uint32_t d, double t, double lambda, const float *qm, const float *qv, const float *km,
                         const float *kv, uint32_t n_j)
{
    double mean_dot = 0, var = 0;
    for (uint32_t a = 0; a < d; a++) {
        double qma = qm[a], qva = qv[a], kma = km[a], kva = kv[a];
        mean_dot += qma * kma;
        var += qva * (kva + kma * kma) + qma * qma * kva;
    }
    return t * mean_dot + lambda * (t * t / 2) * var + log((double)n_j);
}

baatt_status baatt_reference_block_logits(const baatt_config *cfg, const float *qmean, const float *qvar,
                                          const float *kmean, const float *kvar, float *logits)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (!qmean || !qvar || !kmean || !kvar || !logits) return BAATT_ERROR_INVALID_ARGUMENT;
    uint32_t nq = baatt_config_q_blocks(&c), nk = baatt_config_k_blocks(&c), d = c.head_dim;
    uint32_t g = gqa_group(&c);
    double t = baatt_config_scale(&c), lambda = c.covariance != BAATT_COVARIANCE_OFF ? 1.0 : 0.0;
    for (uint32_t b = 0; b < c.batch; b++) {
        for (uint32_t h = 0; h < c.heads; h++) {
            uint64_t qrow = ((uint64_t)b * c.heads + h) * nq;
            uint64_t krow = ((uint64_t)b * c.kv_heads + h / g) * nk;
            for (uint32_t i = 0; i < nq; i++)
                for (uint32_t j = 0; j < nk; j++)
                    logits[(qrow + i) * nk + j] = (float)baatt_block_logit(
                        d, t, lambda, qmean + (qrow + i) * d, qvar + (qrow + i) * d, kmean + (krow + j) * d,
                        kvar + (krow + j) * d, block_count(&c, c.kv_len, j));
        }
    }
    return BAATT_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Step 4: block selection.
 * ------------------------------------------------------------------------------------------- */

/* Threshold mode: length of the shortest prefix of `order` whose softmax mass reaches theta
 * (0 when no logit is finite; callers clamp it). The accuracy harness calls it too, so its threshold rule is this one. */
uint32_t baatt_mass_prefix(const float *l, const int32_t *order, uint32_t nk, double theta)
{
    double mx = -INFINITY, sum = 0, cum = 0;
    for (uint32_t j = 0; j < nk; j++)
        if (l[j] > mx) mx = l[j];
    /* NaN logits carry no mass (they rank first, so every prefix holds them): the mass is the
     * finite blocks'. None: the empty prefix reaches it. A +inf logit makes sum NaN: all blocks. */
    for (uint32_t j = 0; j < nk; j++)
        if (!isnan(l[j])) sum += exp((double)l[j] - mx);
    if (sum == 0) return 0;
    uint32_t m = 0;
    while (m < nk) {
        float x = l[order[m++]];
        if (!isnan(x)) cum += exp((double)x - mx) / sum;
        if (cum >= theta) break;
    }
    return m;
}

baatt_status baatt_reference_select(const baatt_config *cfg, const float *logits, uint8_t *mask)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (!logits || !mask) return BAATT_ERROR_INVALID_ARGUMENT;
    uint32_t nk = baatt_config_k_blocks(&c);
    uint64_t rows = (uint64_t)c.batch * c.heads * baatt_config_q_blocks(&c);
    if (c.dense) { /* a dense run attends to every block */
        memset(mask, 1, rows * nk);
        return BAATT_OK;
    }
    int32_t *order = malloc(sizeof(int32_t) * nk), *tmp = malloc(sizeof(int32_t) * nk);
    if (!order || !tmp) {
        free(order);
        free(tmp);
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint64_t r = 0; r < rows; r++) {
        const float *l = logits + r * nk;
        uint8_t *m = mask + r * nk;
        baatt_argsort_desc(l, nk, order, tmp); /* (l descending, J ascending) */
        uint32_t keep = c.select_mode == BAATT_SELECT_KEEP_RATIO
                            ? baatt_config_keep_blocks(&c)
                            : baatt_config_clamp_blocks(&c, baatt_mass_prefix(l, order, nk, c.mass_threshold));
        memset(m, 0, nk);
        for (uint32_t p = 0; p < keep; p++) m[order[p]] = 1;
    }
    free(order);
    free(tmp);
    return BAATT_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Step 5: sparse attention.
 * ------------------------------------------------------------------------------------------- */

/* The original key indices selected by one mask row: perm_k[s] for s in every selected block.
 * Returns how many were written to keys (kv_len entries of room). */
static uint32_t selected_keys(const baatt_config *c, const uint8_t *mask_row, const int32_t *perm_k, int32_t *keys)
{
    uint32_t n = 0, nk = baatt_config_k_blocks(c);
    for (uint32_t j = 0; j < nk; j++) {
        if (!mask_row[j]) continue;
        uint32_t start = j * c->block_size, cnt = block_count(c, c->kv_len, j);
        for (uint32_t s = start; s < start + cnt; s++) keys[n++] = perm_k[s];
    }
    return n;
}

/* Perms of a sparse run must be real permutations (they index the tensors). */
static baatt_status check_run_perms(const baatt_config *c, const int32_t *perm_q, const int32_t *perm_k)
{
    baatt_status s = check_perms(perm_q, (uint64_t)c->batch * c->heads, c->q_len);
    return s != BAATT_OK ? s : check_perms(perm_k, (uint64_t)c->batch * c->kv_heads, c->kv_len);
}

/* All query blocks of one (b, query head): sorted position p in block I reads original row
 * perm_q[p] and writes it back there; the rows of a block share one key list. */
static void sparse_head(const baatt_config *c, head_buf *h, const int32_t *pq, const int32_t *pk, const uint8_t *mask,
                        int32_t *keys, outputs out, uint32_t b, uint32_t qh)
{
    uint32_t nq = baatt_config_q_blocks(c), nk = baatt_config_k_blocks(c), rows[ROW_TILE];
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t n = selected_keys(c, mask + (uint64_t)i * nk, pk, keys);
        for (uint32_t t = 0; t < n; t++) {
            memcpy(h->kg + (uint64_t)t * h->d, h->k + (uint64_t)keys[t] * h->d, sizeof(double) * h->d);
            if (out.o) memcpy(h->vg + (uint64_t)t * h->d, h->v + (uint64_t)keys[t] * h->d, sizeof(double) * h->d);
        }
        uint32_t start = i * c->block_size, end = start + block_count(c, c->q_len, i);
        for (uint32_t p = start; p < end; p += ROW_TILE) {
            uint32_t nr = end - p < ROW_TILE ? end - p : ROW_TILE;
            tile_rows(pq, p, nr, rows);
            attend_tile(h, rows, nr, h->kg, h->vg, n, out.o != NULL);
            store_tile(c, out, b, qh, h, rows, nr);
        }
    }
}

/* Every row over its query block's selected keys (c checked, perms checked): O and/or the
 * log-sum-exp. */
static baatt_status sparse_rows(const baatt_config *cfg, const void *q, const void *k, const void *v,
                                const int32_t *perm_q, const int32_t *perm_k, const uint8_t *mask, outputs out)
{
    baatt_config c = *cfg;
    baatt_status s;
    head_buf h = {0};
    int32_t *keys = malloc(sizeof(int32_t) * c.kv_len);
    if (!keys || (s = head_alloc(&c, &h, 1)) != BAATT_OK) {
        free(keys);
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    uint32_t g = gqa_group(&c), nq = baatt_config_q_blocks(&c), nk = baatt_config_k_blocks(&c);
    for (uint32_t b = 0; b < c.batch; b++) {
        for (uint32_t kh = 0; kh < c.kv_heads; kh++) {
            load_kv(&c, k, v, b, kh, &h);
            const int32_t *pk = perm_k + ((uint64_t)b * c.kv_heads + kh) * c.kv_len;
            for (uint32_t qh = kh * g; qh < (kh + 1) * g; qh++) {
                uint64_t bh = (uint64_t)b * c.heads + qh;
                load_q(&c, q, b, qh, &h);
                sparse_head(&c, &h, perm_q + bh * c.q_len, pk, mask + bh * nq * nk, keys, out, b, qh);
            }
        }
    }
    free(keys);
    head_free(&h);
    return BAATT_OK;
}

baatt_status baatt_reference_sparse_attention(const baatt_config *cfg, const void *q, const void *k, const void *v,
                                              const int32_t *perm_q, const int32_t *perm_k, const uint8_t *mask,
                                              float *o)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (!q || !k || !v || !perm_q || !perm_k || !mask || !o) return BAATT_ERROR_INVALID_ARGUMENT;
    if ((s = check_run_perms(&c, perm_q, perm_k)) != BAATT_OK) return s;
    return sparse_rows(&c, q, k, v, perm_q, perm_k, mask, (outputs){o, NULL});
}

/* Identity permutations [heads, len] (callers free). */
static int32_t *identity_perms(uint64_t heads, uint32_t len)
{
    int32_t *p = malloc(sizeof(int32_t) * heads * len + 1);
    for (uint64_t h = 0; p && h < heads; h++)
        for (uint32_t i = 0; i < len; i++) p[h * len + i] = (int32_t)i;
    return p;
}

baatt_status baatt_reference_lse(const baatt_config *cfg, const void *q, const void *k, const int32_t *perm_q,
                                 const int32_t *perm_k, const uint8_t *mask, float *lse)
{
    baatt_status s = baatt_config_check(cfg, NULL, 0);
    if (s != BAATT_OK) return s;
    if (!q || !k || !lse) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!mask) return dense_rows(cfg, q, k, NULL, (outputs){NULL, lse});
    baatt_config c;
    if ((s = stage_config(cfg, &c)) != BAATT_OK) return s;
    int32_t *pq = perm_q ? NULL : identity_perms((uint64_t)c.batch * c.heads, c.q_len);
    int32_t *pk = perm_k ? NULL : identity_perms((uint64_t)c.batch * c.kv_heads, c.kv_len);
    if ((!perm_q && !pq) || (!perm_k && !pk)) s = BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (!s) s = check_run_perms(&c, perm_q ? perm_q : pq, perm_k ? perm_k : pk);
    if (!s) s = sparse_rows(&c, q, k, NULL, perm_q ? perm_q : pq, perm_k ? perm_k : pk, mask, (outputs){NULL, lse});
    free(pq);
    free(pk);
    return s;
}

baatt_status baatt_lse_merge(uint64_t rows, uint32_t head_dim, const float *o1, const float *lse1, const float *o2,
                             const float *lse2, float *o, float *lse)
{
    if (!o1 || !lse1 || !o2 || !lse2 || !o || !lse) return BAATT_ERROR_INVALID_ARGUMENT;
    for (uint64_t r = 0; r < rows; r++) {
        double l1 = lse1[r], l2 = lse2[r], m = l1 > l2 ? l1 : l2;
        /* both empty: no keys at all, nothing to weigh (exp(-inf - -inf) would be NaN) */
        double l = m == -INFINITY ? m : m + log(exp(l1 - m) + exp(l2 - m));
        double w1 = m == -INFINITY ? 0 : exp(l1 - l), w2 = m == -INFINITY ? 0 : exp(l2 - l);
        for (uint64_t a = r * head_dim; a < (r + 1) * head_dim; a++) o[a] = (float)(w1 * o1[a] + w2 * o2[a]);
        lse[r] = (float)l;
    }
    return BAATT_OK;
}

/* ---------------------------------------------------------------------------------------------
 * The whole forward pass.
 * ------------------------------------------------------------------------------------------- */

/* Scratch of one BA-Att run; perm_q/perm_k/mask point at the caller's arrays when given. */
typedef struct run_buf {
    int32_t *perm_q, *perm_k;
    float *qmean, *qvar, *kmean, *kvar, *logits;
    uint8_t *mask;
    void *owned[3]; /* the perm/mask arrays allocated here */
} run_buf;

static void run_free(run_buf *r)
{
    free(r->qmean);
    free(r->qvar);
    free(r->kmean);
    free(r->kvar);
    free(r->logits);
    for (int i = 0; i < 3; i++) free(r->owned[i]);
}

/* The caller's array if given, else a new one remembered in *owned. */
static void *use_or_alloc(void *given, size_t bytes, void **owned)
{
    if (given) return given;
    return *owned = malloc(bytes);
}

static baatt_status run_alloc(const baatt_config *c, run_buf *r, uint8_t *mask, int32_t *perm_q, int32_t *perm_k)
{
    size_t bq = (size_t)c->batch * c->heads, bk = (size_t)c->batch * c->kv_heads;
    size_t nq = baatt_config_q_blocks(c), nk = baatt_config_k_blocks(c), d = c->head_dim;
    r->perm_q = use_or_alloc(perm_q, sizeof(int32_t) * bq * c->q_len, &r->owned[0]);
    r->perm_k = use_or_alloc(perm_k, sizeof(int32_t) * bk * c->kv_len, &r->owned[1]);
    r->mask = use_or_alloc(mask, bq * nq * nk, &r->owned[2]);
    r->qmean = malloc(sizeof(float) * bq * nq * d);
    r->qvar = malloc(sizeof(float) * bq * nq * d);
    r->kmean = malloc(sizeof(float) * bk * nk * d);
    r->kvar = malloc(sizeof(float) * bk * nk * d);
    r->logits = malloc(sizeof(float) * bq * nq * nk);
    if (r->perm_q && r->perm_k && r->mask && r->qmean && r->qvar && r->kmean && r->kvar && r->logits) return BAATT_OK;
    return BAATT_ERROR_OUT_OF_HOST_MEMORY;
}

/* Identity permutations for heads rows of len tokens. */
static void fill_identity(int32_t *perm, uint64_t heads, uint32_t len)
{
    for (uint64_t r = 0; r < heads; r++)
        for (uint32_t i = 0; i < len; i++) perm[r * len + i] = (int32_t)i;
}

/* Dense run: what a dense plan reports besides O (all-ones mask, identity perms). */
static baatt_status dense_run(const baatt_config *c, const void *q, const void *k, const void *v, float *o,
                              uint8_t *mask, int32_t *perm_q, int32_t *perm_k)
{
    baatt_status s = baatt_reference_attention(c, q, k, v, o);
    uint64_t rows = (uint64_t)c->batch * c->heads * baatt_config_q_blocks(c);
    if (s == BAATT_OK && mask) memset(mask, 1, rows * baatt_config_k_blocks(c));
    if (s == BAATT_OK && perm_q) fill_identity(perm_q, (uint64_t)c->batch * c->heads, c->q_len);
    if (s == BAATT_OK && perm_k) fill_identity(perm_k, (uint64_t)c->batch * c->kv_heads, c->kv_len);
    return s;
}

/* Steps 1-4 on one blocking (c->norm_sort: sorted unless 0): perms, statistics, logits, mask. */
static baatt_status estimate(const baatt_config *c, const void *q, const void *k, run_buf *r)
{
    baatt_status s = baatt_reference_sort(c, q, c->heads, c->q_len, r->perm_q);
    if (s == BAATT_OK) s = baatt_reference_sort(c, k, c->kv_heads, c->kv_len, r->perm_k);
    if (s == BAATT_OK) s = baatt_reference_block_stats(c, q, c->heads, c->q_len, r->perm_q, r->qmean, r->qvar);
    if (s == BAATT_OK) s = baatt_reference_block_stats(c, k, c->kv_heads, c->kv_len, r->perm_k, r->kmean, r->kvar);
    if (s == BAATT_OK) s = baatt_reference_block_logits(c, r->qmean, r->qvar, r->kmean, r->kvar, r->logits);
    if (s == BAATT_OK) s = baatt_reference_select(c, r->logits, r->mask);
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * BAATT_SORT_AUTO / BAATT_COVARIANCE_AUTO: the per-kv-head choice among the candidates
 * (blockings x lambdas).
 * ------------------------------------------------------------------------------------------- */

/* Sorted position of original row i in perm (len entries). */
static uint32_t position_of(const int32_t *perm, uint32_t len, uint32_t i)
{
    uint32_t p = 0;
    while (p < len && (uint32_t)perm[p] != i) p++;
    return p;
}

/* Adds to rec[x], for each of the n candidates (query positions pq[x], key blocks kblk[x * kv_len
 * + j] of key j, mask rows mk[x]), the exact attention mass that the sampled rows of one query head
 * put on the key blocks selected for their query block. h holds the head's Q and its kv head's K. */
static void sample_head(const baatt_config *c, head_buf *h, uint32_t n, const int32_t *const *pq, const uint32_t *kblk,
                        const uint8_t *const *mk, double *rec)
{
    uint32_t ns = baatt_auto_samples(c->q_len), nk = baatt_config_k_blocks(c), bs = c->block_size;
    for (uint32_t s = 0; s < ns; s++) {
        uint32_t i = baatt_auto_row(s, ns, c->q_len);
        attend_tile(h, &i, 1, h->k, h->v, c->kv_len, 0); /* one exact row, original key order */
        for (uint32_t x = 0; x < n; x++) {
            const uint8_t *row = mk[x] + (uint64_t)(position_of(pq[x], c->q_len, i) / bs) * nk;
            const uint32_t *kb = kblk + (uint64_t)x * c->kv_len;
            for (uint32_t j = 0; j < c->kv_len; j++)
                if (row[kb[j]]) rec[x] += h->scores[j];
        }
    }
}

/* One rule for the library (shaders/auto_choose.comp), this reference and the accuracy harness:
 * a later candidate wins only when it recalls strictly more, so ties (and NaN) keep the earlier
 * one and never undo the default. */
uint32_t baatt_auto_pick(const double *recall, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (recall[i] > recall[best]) best = i;
    return best;
}

/* win[b, kv head] = the candidate (runs[0 .. n-1]) whose selections recall the most of the sampled
 * rows of the group's query heads. kblk: n * kv_len entries of scratch. */
static void auto_choice(const baatt_config *c, const void *q, const void *k, run_buf *const *runs, uint32_t n,
                        head_buf *h, uint32_t *kblk, uint32_t *win)
{
    uint32_t g = gqa_group(c), nq = baatt_config_q_blocks(c), nk = baatt_config_k_blocks(c);
    for (uint32_t b = 0; b < c->batch; b++) {
        for (uint32_t kh = 0; kh < c->kv_heads; kh++) {
            uint64_t bk = (uint64_t)b * c->kv_heads + kh;
            load_rows(k, c->dtype, bk * c->kv_len, c->kv_len, c->head_dim, h->k);
            for (uint32_t x = 0; x < n; x++) {
                const int32_t *pk = runs[x]->perm_k + bk * c->kv_len;
                for (uint32_t t = 0; t < c->kv_len; t++) kblk[(uint64_t)x * c->kv_len + pk[t]] = t / c->block_size;
            }
            double rec[BAATT_AUTO_MAX_CANDS] = {0};
            for (uint32_t qh = kh * g; qh < (kh + 1) * g; qh++) {
                uint64_t bh = (uint64_t)b * c->heads + qh;
                const int32_t *pq[BAATT_AUTO_MAX_CANDS];
                const uint8_t *mk[BAATT_AUTO_MAX_CANDS];
                for (uint32_t x = 0; x < n; x++)
                    pq[x] = runs[x]->perm_q + bh * c->q_len, mk[x] = runs[x]->mask + bh * nq * nk;
                load_q(c, q, b, qh, h);
                sample_head(c, h, n, pq, kblk, mk, rec);
            }
            win[bk] = baatt_auto_pick(rec, n);
        }
    }
}

/* Replaces the perms and mask rows of every kv head whose winner is not candidate 0 (and of its
 * query heads) in runs[0] by those of the winner's run. */
static void auto_merge(const baatt_config *c, run_buf *const *runs, const uint32_t *win)
{
    uint32_t g = gqa_group(c);
    uint64_t mrow = (uint64_t)baatt_config_q_blocks(c) * baatt_config_k_blocks(c);
    run_buf *r = runs[0];
    for (uint64_t bk = 0; bk < (uint64_t)c->batch * c->kv_heads; bk++) {
        if (!win[bk]) continue;
        const run_buf *w = runs[win[bk]];
        memcpy(r->perm_k + bk * c->kv_len, w->perm_k + bk * c->kv_len, sizeof(int32_t) * c->kv_len);
        for (uint64_t bh = bk * g; bh < (bk + 1) * g; bh++) { /* (b * kv_heads + kh) * g = b * heads + kh * g */
            memcpy(r->perm_q + bh * c->q_len, w->perm_q + bh * c->q_len, sizeof(int32_t) * c->q_len);
            memcpy(r->mask + bh * mrow, w->mask + bh * mrow, mrow);
        }
    }
}

/* Every candidate estimated and selected (candidate 0 into r, the others into more[0 ..]), and
 * the per-kv-head choice win. */
static baatt_status auto_estimate(const baatt_config *c, const void *q, const void *k, run_buf *r, run_buf *more,
                                  uint32_t *win)
{
    baatt_auto_cands a = baatt_auto_candidates(c);
    run_buf *runs[BAATT_AUTO_MAX_CANDS] = {r};
    head_buf h = {0};
    uint32_t *kblk = malloc(sizeof(uint32_t) * a.n * c->kv_len);
    baatt_status s = kblk ? BAATT_OK : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t x = 1; x < a.n && s == BAATT_OK; x++) s = run_alloc(c, runs[x] = &more[x - 1], NULL, NULL, NULL);
    if (s == BAATT_OK) s = head_alloc(c, &h, 0); /* frees what it got on failure */
    if (s == BAATT_OK) {
        for (uint32_t x = 0; x < a.n && s == BAATT_OK; x++) {
            baatt_config cx = baatt_auto_candidate_config(c, &a, x);
            s = estimate(&cx, q, k, runs[x]);
        }
        if (s == BAATT_OK) auto_choice(c, q, k, runs, a.n, &h, kblk, win);
        if (s == BAATT_OK) auto_merge(c, runs, win);
        head_free(&h);
    }
    free(kblk);
    return s;
}

/* Steps 1-4 of every candidate and the choice; r ends up holding each kv head's winner. */
static baatt_status choose_blocks(const baatt_config *c, const void *q, const void *k, run_buf *r, uint32_t *win)
{
    run_buf more[BAATT_AUTO_MAX_CANDS - 1] = {{0}};
    baatt_status s = auto_estimate(c, q, k, r, more, win);
    for (int x = 0; x < BAATT_AUTO_MAX_CANDS - 1; x++) run_free(&more[x]);
    return s;
}

baatt_status baatt_reference_auto_choice(const baatt_config *cfg, const void *q, const void *k, uint8_t *sorted,
                                         uint8_t *cov)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (c.dense || !q || !k || (!sorted && !cov)) return BAATT_ERROR_INVALID_ARGUMENT;
    uint64_t nkv = (uint64_t)c.batch * c.kv_heads;
    baatt_auto_cands a = baatt_auto_candidates(&c);
    uint32_t *win = calloc(nkv, sizeof *win);
    run_buf r = {0};
    s = win ? run_alloc(&c, &r, NULL, NULL, NULL) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (s == BAATT_OK && a.n > 1) s = choose_blocks(&c, q, k, &r, win);
    for (uint64_t i = 0; s == BAATT_OK && i < nkv; i++) {
        if (sorted) sorted[i] = (uint8_t)((a.sorted >> win[i]) & 1u);
        if (cov) cov[i] = (uint8_t)((a.cov >> win[i]) & 1u);
    }
    run_free(&r);
    free(win);
    return s;
}

baatt_status baatt_reference_auto_sorted(const baatt_config *cfg, const void *q, const void *k, uint8_t *sorted)
{
    if (!cfg) return BAATT_ERROR_INVALID_ARGUMENT;
    baatt_config c = *cfg;
    c.norm_sort = BAATT_SORT_AUTO; /* whatever cfg says: the choice auto sort would make */
    return baatt_reference_auto_choice(&c, q, k, sorted, NULL);
}

/* Steps 1-4 as c->norm_sort and c->covariance say: one candidate, or each and the per-kv-head
 * choice. */
static baatt_status select_blocks(const baatt_config *c, const void *q, const void *k, run_buf *r)
{
    if (baatt_auto_candidates(c).n == 1) return estimate(c, q, k, r);
    uint32_t *win = malloc(sizeof(uint32_t) * c->batch * c->kv_heads);
    baatt_status s = win ? choose_blocks(c, q, k, r, win) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    free(win);
    return s;
}

baatt_status baatt_reference_baatt(const baatt_config *cfg, const void *q, const void *k, const void *v, float *o,
                                   uint8_t *mask, int32_t *perm_q, int32_t *perm_k)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (!q || !k || !v || !o) return BAATT_ERROR_INVALID_ARGUMENT;
    if (c.dense) return dense_run(&c, q, k, v, o, mask, perm_q, perm_k);
    run_buf r = {0};
    s = run_alloc(&c, &r, mask, perm_q, perm_k);
    if (s == BAATT_OK) s = select_blocks(&c, q, k, &r);
    if (s == BAATT_OK) s = baatt_reference_sparse_attention(&c, q, k, v, r.perm_q, r.perm_k, r.mask, o);
    run_free(&r);
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * Quality metrics.
 * ------------------------------------------------------------------------------------------- */

/* Dense attention mass that one (b, query head) puts on its selected keys, summed over rows.
 * sel: kv_len bytes of scratch (1 = key selected for the current query block). */
static double head_recall(const baatt_config *c, head_buf *h, const int32_t *pq, const int32_t *pk, const uint8_t *mask,
                          uint8_t *sel, int32_t *keys)
{
    uint32_t nq = baatt_config_q_blocks(c), nk = baatt_config_k_blocks(c), rows[ROW_TILE];
    double total = 0;
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t n = selected_keys(c, mask + (uint64_t)i * nk, pk, keys);
        memset(sel, 0, c->kv_len);
        for (uint32_t t = 0; t < n; t++) sel[keys[t]] = 1;
        uint32_t start = i * c->block_size, end = start + block_count(c, c->q_len, i);
        for (uint32_t p = start; p < end; p += ROW_TILE) {
            uint32_t nr = end - p < ROW_TILE ? end - p : ROW_TILE;
            tile_rows(pq, p, nr, rows);
            attend_tile(h, rows, nr, h->k, h->v, c->kv_len, 0); /* dense rows, original key order */
            for (uint32_t r = 0; r < nr; r++)
                for (uint32_t j = 0; j < c->kv_len; j++)
                    if (sel[j]) total += h->scores[(uint64_t)r * c->kv_len + j];
        }
    }
    return total;
}

/* Identity permutation of len when the caller passed NULL (owned: freed by the caller). */
static const int32_t *perm_or_identity(const int32_t *perm, uint64_t heads, uint32_t len, int32_t **owned)
{
    if (perm) return perm;
    *owned = malloc(sizeof(int32_t) * heads * len);
    if (*owned) fill_identity(*owned, heads, len);
    return *owned;
}

/* Mean over query rows of the dense mass on selected keys. */
static baatt_status mass_recall(const baatt_config *c, const void *q, const void *k, const void *v, const uint8_t *mask,
                                const int32_t *perm_q, const int32_t *perm_k, double *recall)
{
    head_buf h = {0};
    int32_t *keys = malloc(sizeof(int32_t) * c->kv_len);
    uint8_t *sel = malloc(c->kv_len);
    baatt_status s = keys && sel ? head_alloc(c, &h, 0) : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    uint32_t g = gqa_group(c), nq = baatt_config_q_blocks(c), nk = baatt_config_k_blocks(c);
    double total = 0;
    for (uint32_t b = 0; s == BAATT_OK && b < c->batch; b++) {
        for (uint32_t kh = 0; kh < c->kv_heads; kh++) {
            load_kv(c, k, v, b, kh, &h);
            const int32_t *pk = perm_k + ((uint64_t)b * c->kv_heads + kh) * c->kv_len;
            for (uint32_t qh = kh * g; qh < (kh + 1) * g; qh++) {
                uint64_t bh = (uint64_t)b * c->heads + qh;
                load_q(c, q, b, qh, &h);
                total += head_recall(c, &h, perm_q + bh * c->q_len, pk, mask + bh * nq * nk, sel, keys);
            }
        }
    }
    *recall = total / ((double)c->batch * c->heads * c->q_len);
    free(keys);
    free(sel);
    head_free(&h);
    return s;
}

/* rel_l1, rel_l2 and cosine of o against o_dense. A zero reference gives 0 error when o is also
 * zero and +inf otherwise; cosine is 1 for two zero vectors and 0 when only one is zero. */
static void output_errors(const float *o, const float *od, uint64_t n, baatt_metrics *m)
{
    double l1 = 0, l1d = 0, l2 = 0, l2d = 0, l2o = 0, cross = 0;
    for (uint64_t i = 0; i < n; i++) {
        double a = o[i], b = od[i];
        l1 += fabs(a - b);
        l1d += fabs(b);
        l2 += (a - b) * (a - b);
        l2d += b * b;
        l2o += a * a;
        cross += a * b;
    }
    m->rel_l1 = l1d > 0 ? l1 / l1d : (l1 > 0 ? INFINITY : 0);
    m->rel_l2 = l2d > 0 ? sqrt(l2 / l2d) : (l2 > 0 ? INFINITY : 0);
    m->cosine = l2d > 0 && l2o > 0 ? cross / sqrt(l2d * l2o) : (l2d == 0 && l2o == 0 ? 1 : 0);
}

/* 1 - selected key tokens / (rows * kv_len) over every (b, h, I) row of the mask. */
static double mask_sparsity(const baatt_config *c, const uint8_t *mask)
{
    uint32_t nk = baatt_config_k_blocks(c);
    uint64_t rows = (uint64_t)c->batch * c->heads * baatt_config_q_blocks(c);
    double selected = 0;
    for (uint64_t r = 0; r < rows; r++)
        for (uint32_t j = 0; j < nk; j++)
            if (mask[r * nk + j]) selected += block_count(c, c->kv_len, j);
    return 1.0 - selected / ((double)rows * c->kv_len);
}

baatt_status baatt_reference_metrics(const baatt_config *cfg, const void *q, const void *k, const void *v,
                                     const uint8_t *mask, const int32_t *perm_q, const int32_t *perm_k, const float *o,
                                     const float *o_dense, baatt_metrics *m)
{
    baatt_config c;
    baatt_status s = stage_config(cfg, &c);
    if (s != BAATT_OK) return s;
    if (!q || !k || !v || !mask || !o || !m) return BAATT_ERROR_INVALID_ARGUMENT;
    if ((perm_q && (s = check_perms(perm_q, (uint64_t)c.batch * c.heads, c.q_len)) != BAATT_OK) ||
        (perm_k && (s = check_perms(perm_k, (uint64_t)c.batch * c.kv_heads, c.kv_len)) != BAATT_OK))
        return s;
    uint64_t n = (uint64_t)c.batch * c.heads * c.q_len * c.head_dim;
    int32_t *own_q = NULL, *own_k = NULL;
    float *own_o = NULL;
    const int32_t *pq = perm_or_identity(perm_q, (uint64_t)c.batch * c.heads, c.q_len, &own_q);
    const int32_t *pk = perm_or_identity(perm_k, (uint64_t)c.batch * c.kv_heads, c.kv_len, &own_k);
    if (!o_dense) o_dense = own_o = malloc(sizeof(float) * n);
    s = pq && pk && o_dense ? BAATT_OK : BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (s == BAATT_OK && own_o) s = baatt_reference_attention(&c, q, k, v, own_o);
    if (s == BAATT_OK) s = mass_recall(&c, q, k, v, mask, pq, pk, &m->mass_recall);
    if (s == BAATT_OK) {
        output_errors(o, o_dense, n, m);
        m->sparsity = mask_sparsity(&c, mask);
    }
    free(own_q);
    free(own_k);
    free(own_o);
    return s;
}
