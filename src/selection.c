/* The selection a plan holds across runs (include/baatt.h, "Selections across runs"): the reuse
 * switch, selections the caller gives (checked on the host, then packed into the mask bits, token
 * counts and permutations the attention reads, as the selection stage writes them). A reusing run
 * records only the attention (attend.c then makes the norm-sorted copies of Q, K and V through the
 * held permutations where its kernel reads them). */
#include <stdlib.h>
#include <string.h>

#include "plan.h"

void baatt_selection_destroy(baatt_plan *p) { free(p->given_sorted); }

int baatt_selection_reused(const baatt_plan *p) { return !p->cfg.dense && p->reuse; }

baatt_status baatt_selection_check_run(baatt_plan *p)
{
    if (!baatt_selection_reused(p) || p->held) return BAATT_OK;
    return baatt_fail(p->ctx, BAATT_ERROR_NO_SELECTION,
                      "reuse is on but the plan holds no selection yet: run it once with reuse off "
                      "(baatt_plan_set_reuse(plan, 0)) or give one (baatt_plan_set_selection)");
}

void baatt_selection_recorded(baatt_plan *p)
{
    if (!p->cfg.dense && !p->reuse) p->held = BAATT_HELD_ESTIMATED;
}

baatt_status baatt_plan_set_reuse(baatt_plan *p, int reuse)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    p->reuse = reuse != 0;
    return BAATT_OK;
}

/* Each of the heads rows of perm (len entries) a permutation of 0 .. len-1; moved[h] = 1 where
 * row h is not the identity. first: len entries of scratch. */
static baatt_status check_perm(baatt_plan *p, const int32_t *perm, uint32_t heads, uint32_t per_batch, uint32_t len,
                               const char *name, uint32_t *first, uint8_t *moved)
{
    for (uint32_t h = 0; h < heads; h++) {
        const int32_t *row = perm + (uint64_t)h * len;
        memset(first, 0, 4ull * len);
        moved[h] = 0;
        for (uint32_t i = 0; i < len; i++) {
            int32_t x = row[i];
            if (x < 0 || (uint32_t)x >= len)
                return baatt_fail(p->ctx, BAATT_ERROR_BAD_SELECTION,
                                  "%s is not a permutation: [batch %u, head %u] position %u holds %d, outside [0, %u)",
                                  name, h / per_batch, h % per_batch, i, x, len);
            if (first[x])
                return baatt_fail(p->ctx, BAATT_ERROR_BAD_SELECTION,
                                  "%s is not a permutation: [batch %u, head %u] holds %d twice (positions %u and %u)",
                                  name, h / per_batch, h % per_batch, x, first[x] - 1, i);
            first[x] = i + 1;
            moved[h] |= (uint32_t)x != i;
        }
    }
    return BAATT_OK;
}

/* The mask checked and packed: bits [bh][nq][words] and selected key tokens [bh][nq]. */
static baatt_status pack_mask(baatt_plan *p, const uint8_t *mask, uint32_t *bits, uint32_t *counts)
{
    const baatt_geometry *g = &p->ch.geo;
    uint32_t nq = g->nq, nk = g->nk, heads = p->cfg.heads;
    for (uint64_t row = 0; row < (uint64_t)g->bh * nq; row++) {
        const uint8_t *m = mask + row * nk;
        uint32_t tokens = 0, i = (uint32_t)(row % nq), h = (uint32_t)(row / nq % heads),
                 b = (uint32_t)(row / nq / heads);
        for (uint32_t j = 0; j < nk; j++) {
            if (m[j] > 1)
                return baatt_fail(p->ctx, BAATT_ERROR_BAD_SELECTION,
                                  "mask[%u][%u][%u][%u] is %u: mask entries must be 0 or 1", b, h, i, j, m[j]);
            if (!m[j]) continue;
            bits[row * g->words + j / 32] |= 1u << (j % 32);
            tokens += j + 1 < nk ? g->block : p->cfg.kv_len - j * g->block;
        }
        if (!tokens)
            return baatt_fail(p->ctx, BAATT_ERROR_BAD_SELECTION,
                              "mask[%u][%u][%u] (batch %u, head %u, query block %u) selects no key block: every "
                              "query block needs at least one",
                              b, h, i, b, h, i);
        counts[row] = tokens;
    }
    return BAATT_OK;
}

static void identity(int32_t *perm, uint64_t heads, uint32_t len)
{
    for (uint64_t h = 0; h < heads; h++)
        for (uint32_t i = 0; i < len; i++) perm[h * len + i] = (int32_t)i;
}

/* Checks everything, then writes mask bits, counts and perms (slot 0, where the attention reads). */
static baatt_status set_selection(baatt_plan *p, const uint8_t *mask, const int32_t *perm_q, const int32_t *perm_k,
                                  uint32_t *bits, uint32_t *counts, uint32_t *scratch, uint8_t *moved_q,
                                  uint8_t *moved_k, int32_t *ident)
{
    const baatt_config *c = &p->cfg;
    const baatt_geometry *g = &p->ch.geo;
    BAATT_TRY(pack_mask(p, mask, bits, counts));
    if (perm_q) BAATT_TRY(check_perm(p, perm_q, g->bh, c->heads, c->q_len, "perm_q", scratch, moved_q));
    if (perm_k) BAATT_TRY(check_perm(p, perm_k, g->bhkv, c->kv_heads, c->kv_len, "perm_k", scratch, moved_k));
    p->held = 0; /* a failed upload leaves no usable selection */
    uint64_t rows = (uint64_t)g->bh * g->nq;
    BAATT_TRY(baatt_buffer_transfer(p->ctx, &p->buf[BIND_MASK], 0, bits, NULL, 4 * rows * g->words));
    BAATT_TRY(baatt_buffer_transfer(p->ctx, &p->buf[BIND_COUNTS], 0, counts, NULL, 4 * rows));
    if (!perm_q) identity(ident, g->bh, c->q_len);
    BAATT_TRY(baatt_buffer_transfer(p->ctx, &p->buf[BIND_PERM_Q], 0, perm_q ? (const void *)perm_q : ident, NULL,
                                    4ull * g->bh * c->q_len));
    if (!perm_k) identity(ident, g->bhkv, c->kv_len);
    return baatt_buffer_transfer(p->ctx, &p->buf[BIND_PERM_K], 0, perm_k ? (const void *)perm_k : ident, NULL,
                                 4ull * g->bhkv * c->kv_len);
}

baatt_status baatt_plan_set_selection(baatt_plan *p, const uint8_t *mask, const int32_t *perm_q, const int32_t *perm_k)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!mask) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "baatt_plan_set_selection: mask is NULL");
    if (p->cfg.dense)
        return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT,
                          "baatt_plan_set_selection: a dense plan takes no selection (create it with dense = 0)");
    const baatt_config *c = &p->cfg;
    const baatt_geometry *g = &p->ch.geo;
    uint64_t rows = (uint64_t)g->bh * g->nq, longest = c->q_len > c->kv_len ? c->q_len : c->kv_len;
    uint64_t ident_n = (uint64_t)g->bh * c->q_len > (uint64_t)g->bhkv * c->kv_len ? (uint64_t)g->bh * c->q_len
                                                                                  : (uint64_t)g->bhkv * c->kv_len;
    uint32_t *bits = calloc(rows * g->words, 4), *counts = malloc(4 * rows), *scratch = malloc(4 * longest);
    uint8_t *moved_q = malloc(g->bh), *moved_k = calloc(g->bhkv, 1);
    int32_t *ident = (!perm_q || !perm_k) ? malloc(4 * ident_n) : NULL;
    baatt_status s = BAATT_ERROR_OUT_OF_HOST_MEMORY;
    if (!bits || !counts || !scratch || !moved_q || !moved_k || ((!perm_q || !perm_k) && !ident))
        baatt_fail(p->ctx, s, "out of host memory");
    else s = set_selection(p, mask, perm_q, perm_k, bits, counts, scratch, moved_q, moved_k, ident);
    if (!s) {
        free(p->given_sorted);
        p->given_sorted = moved_k;
        moved_k = NULL;
        p->held = BAATT_HELD_GIVEN;
        p->reuse = 1;
    }
    free(bits), free(counts), free(scratch), free(moved_q), free(moved_k), free(ident);
    return s;
}

/* ---- snapshots: device copies of the held selection ---- */

enum { SNAP_MASK, SNAP_COUNTS, SNAP_PERM_Q, SNAP_PERM_K, SNAP_CHOICE, SNAP_PARTS };

struct baatt_snapshot {
    baatt_context *ctx;
    baatt_config cfg;        /* the plan's: shape and geometry checked on load */
    baatt_auto_cands cands;  /* what the choice record's indices mean */
    int held;                /* the plan's baatt_held when saved */
    uint8_t *given_sorted;   /* [bhkv], a given selection's (host: tiny, never on the device) */
    uint64_t at[SNAP_PARTS]; /* offset of each part in buf */
    baatt_buffer buf;        /* all parts, back to back */
};

/* Where each part lives in the plan: binding, offset, bytes (0: none, e.g. no auto choice). */
static void snapshot_parts(const baatt_plan *p, int bind[SNAP_PARTS], uint64_t at[SNAP_PARTS], uint64_t n[SNAP_PARTS])
{
    const baatt_geometry *g = &p->ch.geo;
    uint64_t rows = (uint64_t)g->bh * g->nq;
    int b[SNAP_PARTS] = {BIND_MASK, BIND_COUNTS, BIND_PERM_Q, BIND_PERM_K, BIND_AUTO};
    uint64_t bytes[SNAP_PARTS] = {4 * rows * g->words, 4 * rows, 4ull * g->bh * p->cfg.q_len,
                                  4ull * g->bhkv * p->cfg.kv_len, p->ch.auto_sort ? 4ull * g->bhkv : 0};
    for (int i = 0; i < SNAP_PARTS; i++) bind[i] = b[i], at[i] = 0, n[i] = bytes[i];
    at[SNAP_CHOICE] = p->ch.auto_sort ? baatt_auto_choice_offset(p) : 0;
}

/* One submission of GPU-to-GPU copies between the plan's buffers and the snapshot's, waited for.
 * The barriers order them after the plan's submitted runs and before its next ones. */
static baatt_status snapshot_copy(baatt_plan *p, const baatt_snapshot *s, int save)
{
    int bind[SNAP_PARTS];
    uint64_t at[SNAP_PARTS], n[SNAP_PARTS];
    snapshot_parts(p, bind, at, n);
    VkCommandBuffer cmd;
    BAATT_TRY(baatt_cmd_begin(p->ctx, &cmd));
    baatt_cmd_barrier(p->ctx, cmd);
    for (int i = 0; i < SNAP_PARTS; i++) {
        if (!n[i]) continue;
        VkBufferCopy c = {save ? at[i] : s->at[i], save ? s->at[i] : at[i], n[i]};
        VkBuffer plan_buf = p->buf[bind[i]].buffer;
        p->ctx->vk.vkCmdCopyBuffer(cmd, save ? plan_buf : s->buf.buffer, save ? s->buf.buffer : plan_buf, 1, &c);
    }
    baatt_cmd_barrier(p->ctx, cmd);
    return baatt_cmd_submit_wait(p->ctx, cmd);
}

void baatt_snapshot_destroy(baatt_snapshot *s)
{
    if (!s) return;
    baatt_buffer_destroy(s->ctx, &s->buf);
    free(s->given_sorted);
    free(s);
}

/* A snapshot sized for p's parts, its host fields set. */
static baatt_status snapshot_new(baatt_plan *p, baatt_snapshot **out)
{
    baatt_snapshot *s = calloc(1, sizeof *s);
    uint8_t *given = p->held == BAATT_HELD_GIVEN ? malloc(p->ch.geo.bhkv) : NULL;
    if (!s || (p->held == BAATT_HELD_GIVEN && !given)) {
        free(s), free(given);
        return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "baatt_plan_snapshot_save: out of host memory");
    }
    *s = (baatt_snapshot){.ctx = p->ctx, .cfg = p->cfg, .cands = p->ch.cands, .held = p->held, .given_sorted = given};
    int bind[SNAP_PARTS];
    uint64_t at[SNAP_PARTS], n[SNAP_PARTS], total = 0;
    snapshot_parts(p, bind, at, n);
    for (int i = 0; i < SNAP_PARTS; i++) s->at[i] = total, total += n[i];
    if (given) memcpy(given, p->given_sorted, p->ch.geo.bhkv);
    baatt_status st = baatt_buffer_create(p->ctx, total, 0, &s->buf);
    if (st) {
        baatt_snapshot_destroy(s);
        return st;
    }
    *out = s;
    return BAATT_OK;
}

baatt_status baatt_plan_snapshot_save(baatt_plan *p, baatt_snapshot **out)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!out) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "baatt_plan_snapshot_save: out is NULL");
    *out = NULL;
    if (p->cfg.dense || !p->held)
        return baatt_fail(p->ctx, BAATT_ERROR_NO_SELECTION,
                          "baatt_plan_snapshot_save: the plan holds no selection (%s)",
                          p->cfg.dense ? "a dense plan never does" : "run it once with reuse off, or give one");
    baatt_snapshot *s = NULL;
    BAATT_TRY(snapshot_new(p, &s));
    baatt_status st = snapshot_copy(p, s, 1);
    if (st) baatt_snapshot_destroy(s);
    else *out = s;
    return st;
}

/* NULL when s fits p, else what differs. */
static const char *snapshot_mismatch(const baatt_plan *p, const baatt_snapshot *s)
{
    const baatt_config *a = &p->cfg, *b = &s->cfg;
    if (s->ctx != p->ctx) return "the snapshot belongs to another context";
    if (a->dense) return "a dense plan takes no selection";
    if (a->batch != b->batch || a->heads != b->heads || a->kv_heads != b->kv_heads)
        return "the snapshot's batch / heads / kv_heads differ from the plan's";
    if (a->q_len != b->q_len || a->kv_len != b->kv_len) return "the snapshot's q_len / kv_len differ from the plan's";
    if (a->block_size != b->block_size || a->head_dim != b->head_dim)
        return "the snapshot's block_size / head_dim differ from the plan's";
    if (memcmp(&p->ch.cands, &s->cands, sizeof s->cands))
        return "the snapshot's sort / covariance candidates (norm_sort, covariance modes) differ from the plan's";
    return NULL;
}

baatt_status baatt_plan_snapshot_load(baatt_plan *p, const baatt_snapshot *s)
{
    if (!p) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!s) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "baatt_plan_snapshot_load: snapshot is NULL");
    const char *why = snapshot_mismatch(p, s);
    if (why) return baatt_fail(p->ctx, BAATT_ERROR_INVALID_ARGUMENT, "baatt_plan_snapshot_load: %s", why);
    uint8_t *given = NULL;
    if (s->held == BAATT_HELD_GIVEN && !(given = malloc(p->ch.geo.bhkv)))
        return baatt_fail(p->ctx, BAATT_ERROR_OUT_OF_HOST_MEMORY, "baatt_plan_snapshot_load: out of host memory");
    p->held = 0; /* a failed copy leaves no usable selection */
    baatt_status st = snapshot_copy(p, s, 0);
    if (st) {
        free(given);
        return st;
    }
    if (given) memcpy(given, s->given_sorted, p->ch.geo.bhkv);
    free(p->given_sorted);
    p->given_sorted = given;
    p->held = s->held;
    p->reuse = 1;
    return BAATT_OK;
}
