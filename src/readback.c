/* A plan's results after a run: timings and sparsity, the selection mask, the permutations,
 * the auto-sort choices, its path names, and test access to intermediate buffers. */
#include <stdlib.h>
#include <string.h>

#include "plan.h"

/* n bytes at offset `at` of one of the plan's buffers, into dst. */
static baatt_status download_at(baatt_plan *p, const baatt_buffer *src, uint64_t at, void *dst, uint64_t n)
{
    return baatt_buffer_transfer(p->ctx, src, at, NULL, dst, n);
}

static baatt_status require_run(baatt_plan *p)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!p->ran) return baatt_fail(p->ctx, BAATT_ERROR_NOT_READY, "the plan has not been run yet");
    return BAATT_OK;
}

baatt_status baatt_plan_stats(baatt_plan *p, baatt_run_stats *st)
{
    BAATT_TRY(require_run(p));
    if (!st) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "stats is NULL");
    memset(st, 0, sizeof *st);
    baatt_timing_read(p, st);
    uint64_t rows = (uint64_t)p->ch.geo.bh * p->ch.geo.nq;
    if (p->cfg.dense) {
        st->selected_blocks = rows * p->ch.geo.nk;
        return BAATT_OK;
    }
    uint32_t *cnt = malloc(4 * rows);
    if (!cnt) return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    baatt_status s = download_at(p, &p->buf[BIND_COUNTS], 0, cnt, 4 * rows);
    if (!s) {
        /* Only the last key block can be partial, so a row's selected blocks are
         * ceil(tokens / block): no need to read the mask back. */
        uint64_t tokens = 0, B = p->ch.geo.block;
        for (uint64_t i = 0; i < rows; i++) {
            tokens += cnt[i];
            st->selected_blocks += (cnt[i] + B - 1) / B;
        }
        st->sparsity = 1.0 - (double)tokens / ((double)rows * p->cfg.kv_len);
    }
    free(cnt);
    return s;
}

baatt_status baatt_plan_read_mask(baatt_plan *p, uint8_t *mask)
{
    BAATT_TRY(require_run(p));
    if (!mask) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "mask is NULL");
    uint64_t rows = (uint64_t)p->ch.geo.bh * p->ch.geo.nq, nk = p->ch.geo.nk, words = p->ch.geo.words;
    if (p->cfg.dense) {
        memset(mask, 1, rows * nk);
        return BAATT_OK;
    }
    uint32_t *bits = malloc(4 * rows * words);
    if (!bits) return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    baatt_status s = download_at(p, &p->buf[BIND_MASK], 0, bits, 4 * rows * words);
    for (uint64_t i = 0; !s && i < rows; i++)
        for (uint64_t j = 0; j < nk; j++) mask[i * nk + j] = (bits[i * words + j / 32] >> (j % 32)) & 1u;
    free(bits);
    return s;
}

static void identity(int32_t *perm, uint64_t heads, uint32_t len)
{
    for (uint64_t h = 0; h < heads; h++)
        for (uint32_t i = 0; i < len; i++) perm[h * len + i] = (int32_t)i;
}

baatt_status baatt_plan_read_perms(baatt_plan *p, int32_t *perm_q, int32_t *perm_k)
{
    BAATT_TRY(require_run(p));
    const baatt_config *c = &p->cfg;
    const baatt_geometry *g = &p->ch.geo;
    if (c->dense) {
        if (perm_q) identity(perm_q, g->bh, c->q_len);
        if (perm_k) identity(perm_k, g->bhkv, c->kv_len);
        return BAATT_OK;
    }
    if (perm_q) BAATT_TRY(download_at(p, &p->buf[BIND_PERM_Q], 0, perm_q, 4ull * g->bh * c->q_len));
    if (perm_k) BAATT_TRY(download_at(p, &p->buf[BIND_PERM_K], 0, perm_k, 4ull * g->bhkv * c->kv_len));
    return BAATT_OK;
}

baatt_status baatt_plan_read_lse(baatt_plan *p, float *lse)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!p->cfg.lse)
        return baatt_fail(p->ctx, BAATT_ERROR_NO_LSE,
                          "baatt_plan_read_lse: the plan was created without cfg.lse (set it to 1 to get the LSE)");
    BAATT_TRY(require_run(p));
    if (!lse) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "lse is NULL");
    if (!p->lse_here)
        return baatt_fail(
            p->ctx, BAATT_ERROR_NOT_READY,
            "baatt_plan_read_lse: the last run wrote its LSE to the caller's tensor (record_lse / run_buffers_lse)");
    return download_at(p, &p->buf[BIND_LSE], 0, lse, baatt_plan_lse_bytes(p));
}

/* One property of each kv head's candidate (bits: bit c of baatt_auto_cands.sorted or .cov): the
 * chosen candidate's bit where the plan chooses, else candidate 0's (dense: 0). */
static baatt_status read_head_choice(baatt_plan *p, uint32_t bits, uint8_t *out)
{
    uint32_t n = p->ch.geo.bhkv;
    if (!p->ch.auto_sort) {
        memset(out, !p->cfg.dense && (bits & 1u), n);
        return BAATT_OK;
    }
    uint32_t *win = malloc(4ull * n);
    if (!win) return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    baatt_status s = download_at(p, &p->buf[BIND_AUTO], baatt_auto_choice_offset(p), win, 4ull * n);
    for (uint32_t i = 0; !s && i < n; i++) out[i] = win[i] < p->ch.cands.n && ((bits >> win[i]) & 1u);
    free(win);
    return s;
}

baatt_status baatt_plan_read_head_sorted(baatt_plan *p, uint8_t *sorted)
{
    BAATT_TRY(require_run(p));
    if (!sorted) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "sorted is NULL");
    if (p->held == BAATT_HELD_GIVEN && !p->cfg.dense) {
        memcpy(sorted, p->given_sorted, p->ch.geo.bhkv);
        return BAATT_OK;
    }
    return read_head_choice(p, p->ch.cands.sorted, sorted);
}

baatt_status baatt_plan_read_head_covariance(baatt_plan *p, uint8_t *cov)
{
    BAATT_TRY(require_run(p));
    if (!cov) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "cov is NULL");
    if (p->held == BAATT_HELD_GIVEN && !p->cfg.dense) { /* no lambda made a given selection */
        memset(cov, 0, p->ch.geo.bhkv);
        return BAATT_OK;
    }
    return read_head_choice(p, p->ch.cands.cov, cov);
}

const char *baatt_stage_name(int stage)
{
    static const char *names[BAATT_STAGE_COUNT] = {"sort", "stats", "score", "select", "attend"};
    return stage >= 0 && stage < BAATT_STAGE_COUNT ? names[stage] : "unknown";
}

const baatt_choice *baatt_plan_choice(const baatt_plan *p) { return &p->ch; }

const char *baatt_plan_sort_path(const baatt_plan *p, int side)
{
    return baatt_path_name(BAATT_STAGE_SORT, p->ch.sort.side[side != 0]);
}

const char *baatt_plan_path(const baatt_plan *p, int stage)
{
    if (!p || stage < 0 || stage >= BAATT_STAGE_COUNT) return NULL;
    const baatt_choice *ch = &p->ch;
    if (p->cfg.dense && stage != BAATT_STAGE_ATTEND) return "none";
    switch (stage) {
    case BAATT_STAGE_SORT:
        if (ch->sort.side[0] == ch->sort.side[1]) return baatt_plan_sort_path(p, 0);
        return ch->sort.side[0] == BAATT_SORTER_RADIX ? "radix (q), bitonic (k)" : "bitonic (q), radix (k)";
    case BAATT_STAGE_STATS: return "stats";
    case BAATT_STAGE_SCORE: return baatt_path_name(stage, ch->score.path);
    case BAATT_STAGE_SELECT: return baatt_path_name(stage, ch->select.path);
    default: return baatt_path_name(stage, ch->attend.path);
    }
}

baatt_status baatt_plan_debug_read(baatt_plan *p, int what, void *dst, uint64_t bytes)
{
    BAATT_TRY(require_run(p));
    int b = what == BAATT_DEBUG_QFEAT ? BIND_QFEAT : what == BAATT_DEBUG_KFEAT ? BIND_KFEAT : BIND_LOGITS;
    if (bytes > p->buf[b].size) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "debug read past the buffer");
    return download_at(p, &p->buf[b], 0, dst, bytes);
}

void baatt_plan_debug_chunks(const baatt_plan *p, uint32_t *heads, uint32_t *rows)
{
    *heads = p->ch.score.chunk_heads;
    *rows = p->ch.score.chunk_rows;
}
