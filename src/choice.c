/* The tuning string and the composition of the per-stage choices (src/stages/) into a plan's
 * choice; see choice.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "choice.h"
#include "internal.h"

baatt_tuning baatt_tuning_default(void) { return (baatt_tuning){.radix_min = 65536, .logits_mib = 128.0}; }

/* ---- names ---- */

static const char *const attend_names[BAATT_ATTEND_COUNT] = {"auto", "portable", "khr-coopmat", "nv-coopmat2"};
static const char *const sort_names[BAATT_SORTER_COUNT] = {"auto", "none", "bitonic", "radix"};
static const char *const score_names[BAATT_SCORE_COUNT] = {"auto", "scalar", "nv-coopmat2-bf16"};
static const char *const select_names[BAATT_SELECTOR_COUNT] = {"auto", "shared", "subgroup", "row"};

static const char *const *stage_names(int stage, int *count)
{
    switch (stage) {
    case BAATT_STAGE_SORT: *count = BAATT_SORTER_COUNT; return sort_names;
    case BAATT_STAGE_SCORE: *count = BAATT_SCORE_COUNT; return score_names;
    case BAATT_STAGE_SELECT: *count = BAATT_SELECTOR_COUNT; return select_names;
    case BAATT_STAGE_ATTEND: *count = BAATT_ATTEND_COUNT; return attend_names;
    default: *count = 0; return NULL;
    }
}

const char *baatt_path_name(int stage, int path)
{
    int n;
    const char *const *names = stage_names(stage, &n);
    return names && path >= 0 && path < n ? names[path] : NULL;
}

/* ---- the tuning string ---- */

static int parse_path(int stage, const char *v, int *out)
{
    int n;
    const char *const *names = stage_names(stage, &n);
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i]) && !(stage == BAATT_STAGE_SORT && i == BAATT_SORTER_NONE)) return *out = i, 1;
    return 0;
}

static int parse_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || end == v || *end || *v == '-' || x < lo || x > hi) return 0;
    *out = (uint32_t)x;
    return 1;
}

static int parse_onoff(const char *v, int *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "1")) return *out = 1, 1;
    if (!strcmp(v, "off") || !strcmp(v, "0")) return *out = 0, 1;
    return 0;
}

static int parse_edge(const char *v, uint32_t *out)
{
    return parse_u32(v, 32, 128, out) && (*out == 32 || *out == 64 || *out == 128);
}

static int parse_khr_rows(const char *v, uint32_t *out)
{
    return parse_u32(v, 16, 128, out) && (*out & (*out - 1)) == 0;
}

const char *const baatt_portable_tags[3] = {"qk16", "pv16", "long"}; /* BAATT_PORTABLE_* bit i */

/* "base", or a '+' list of baatt_portable_tags, each at most once. */
static int parse_portable(const char *v, uint32_t *out)
{
    uint32_t bits = 0;
    if (!strcmp(v, "base")) return *out = 0, 1;
    for (const char *p = v;; p++) {
        size_t len = strcspn(p, "+"), i = 0;
        while (i < 3 && (strlen(baatt_portable_tags[i]) != len || strncmp(p, baatt_portable_tags[i], len))) i++;
        if (i == 3 || (bits & (1u << i))) return 0;
        bits |= 1u << i;
        p += len;
        if (!*p) return *out = bits, 1;
    }
}

static int parse_khr_keys(const char *v, uint32_t *out)
{
    return parse_u32(v, 16, 64, out) && (*out & (*out - 1)) == 0; /* attend.c's key tiles */
}

/* "RxC" onto *rows, *cols, checked by row_ok() and col_ok(). */
static int parse_rxc(const char *v, int (*row_ok)(const char *, uint32_t *), int (*col_ok)(const char *, uint32_t *),
                     uint32_t *rows, uint32_t *cols)
{
    char a[16], b[16];
    const char *x = strchr(v, 'x');
    if (!x || x - v >= (long)sizeof a || strlen(x + 1) >= sizeof b) return 0;
    memcpy(a, v, (size_t)(x - v));
    a[x - v] = 0;
    strcpy(b, x + 1);
    uint32_t r, c;
    if (!row_ok(a, &r) || !col_ok(b, &c)) return 0;
    return *rows = r, *cols = c, 1;
}

/* One key=value onto t; 0 with a message if either is unknown. */
static int parse_item(const char *key, const char *v, baatt_tuning *t, char *msg, size_t n)
{
    static const struct {
        const char *key;
        int stage;
    } paths[] = {{"attend", BAATT_STAGE_ATTEND},
                 {"sort", BAATT_STAGE_SORT},
                 {"score", BAATT_STAGE_SCORE},
                 {"select", BAATT_STAGE_SELECT}};
    int *path_of[] = {(int *)&t->attend, (int *)&t->sort, (int *)&t->score, (int *)&t->select};
    int ok = -1;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (!strcmp(key, paths[i].key)) ok = parse_path(paths[i].stage, v, path_of[i]);
    if (!strcmp(key, "tile")) ok = parse_rxc(v, parse_edge, parse_edge, &t->tile_rows, &t->tile_keys);
    if (!strcmp(key, "khr_tile")) ok = parse_rxc(v, parse_khr_rows, parse_khr_keys, &t->khr_rows, &t->khr_keys);
    if (!strcmp(key, "khr_mf")) ok = parse_u32(v, 1, 2, &t->khr_mf);
    if (!strcmp(key, "portable")) ok = parse_portable(v, &t->portable);
    if (!strcmp(key, "khr_softmax")) {
        ok = !strcmp(v, "shared") || !strcmp(v, "registers");
        if (ok) t->khr_shared_softmax = !strcmp(v, "shared");
    }
    if (!strcmp(key, "radix_min")) ok = parse_u32(v, 1, 1u << 31, &t->radix_min);
    if (!strcmp(key, "logits_mib")) {
        char *end;
        double x = strtod(v, &end);
        ok = end != v && !*end && x > 0 && x <= 1048576.0;
        if (ok) t->logits_mib = x;
    }
    if (!strcmp(key, "robust")) ok = parse_onoff(v, &t->robust);
    if (!strcmp(key, "profile")) ok = parse_onoff(v, &t->profile);
    if (ok < 0)
        baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT,
                   "unknown tuning key \"%s\" (keys: attend, sort, score, select, tile, khr_tile, khr_mf, khr_softmax, "
                   "portable, radix_min, logits_mib, robust, profile)",
                   key);
    else if (!ok) baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "bad value \"%s\" for tuning key \"%s\"", v, key);
    return ok > 0;
}

baatt_status baatt_tuning_parse(const char *s, baatt_tuning *t, char *msg, size_t msg_size)
{
    if (!s || !t) return baatt_msgf(msg, msg_size, BAATT_ERROR_INVALID_ARGUMENT, "NULL tuning string or struct");
    baatt_tuning r = *t;
    char item[256];
    for (const char *p = s; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item)
            return baatt_msgf(msg, msg_size, BAATT_ERROR_INVALID_ARGUMENT, "bad tuning item at \"%s\"", p);
        memcpy(item, p, len);
        item[len] = 0;
        char *eq = strchr(item, '=');
        if (!eq) return baatt_msgf(msg, msg_size, BAATT_ERROR_INVALID_ARGUMENT, "tuning item \"%s\" has no '='", item);
        *eq = 0;
        if (!parse_item(item, eq + 1, &r, msg, msg_size)) return BAATT_ERROR_INVALID_ARGUMENT;
        p += len + (p[len] == ',');
    }
    *t = r;
    return BAATT_OK;
}

/* ---- the choice ---- */

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

static baatt_geometry geometry(const baatt_config *c)
{
    baatt_geometry g = {0};
    /* A dense plan still reports its (all-ones) mask on a block grid: the configured block
     * size when it is a supported one, else 64. */
    int valid_block = c->block_size == 32 || c->block_size == 64 || c->block_size == 128;
    g.block = c->dense && !valid_block ? 64 : c->block_size;
    g.nq = (c->q_len + g.block - 1) / g.block;
    g.nk = (c->kv_len + g.block - 1) / g.block;
    g.words = (g.nk + 31) / 32;
    g.bh = c->batch * c->heads;
    g.bhkv = c->batch * c->kv_heads;
    g.pq = pow2_at_least(c->q_len);
    g.pk = pow2_at_least(c->kv_len);
    return g;
}

uint32_t baatt_row_vectors(const baatt_config *c) { return c->head_dim * (uint32_t)baatt_dtype_size(c->dtype) / 16; }
uint32_t baatt_vector_rows_per_wg(const baatt_config *c) { return 256 / baatt_row_vectors(c); }

/* What every plan needs of the device, and the workgroup counts its dispatches reach. */
static baatt_status check_limits(const baatt_caps *caps, const baatt_config *c, const baatt_geometry *g, char *msg,
                                 size_t n)
{
    if (c->dtype != BAATT_DTYPE_F32 && !(caps->features & BAATT_FEATURE_FP16_STORAGE))
        return baatt_msgf(msg, n, BAATT_ERROR_MISSING_FEATURE,
                          "%s tensors need storageBuffer16BitAccess, which %s lacks (or which was not enabled)",
                          baatt_dtype_name(c->dtype), caps->name);
    if (caps->max_invocations < 256)
        return baatt_msgf(msg, n, BAATT_ERROR_MISSING_FEATURE,
                          "device %s allows %u invocations per workgroup; baatt needs 256", caps->name,
                          caps->max_invocations);
    uint32_t maxg = caps->max_groups[0];
    if ((c->q_len + 15) / 16 > maxg || g->bh > caps->max_groups[1] || g->nq > maxg)
        return baatt_msgf(msg, n, BAATT_ERROR_TOO_LARGE,
                          "q_len %u x %u heads exceeds the device's workgroup-count limits", c->q_len, g->bh);
    if (c->dense) return BAATT_OK;
    /* The K side's statistics take a workgroup per key block; the row copies and norm keys one
     * per baatt_vector_rows_per_wg rows of the padded length. */
    if (g->nk > maxg)
        return baatt_msgf(msg, n, BAATT_ERROR_TOO_LARGE,
                          "kv_len %u in blocks of %u gives %u key blocks, over the device's workgroup-count limit (%u)",
                          c->kv_len, g->block, g->nk, maxg);
    uint32_t rows = baatt_vector_rows_per_wg(c), longest = g->pq > g->pk ? g->pq : g->pk;
    if ((longest + rows - 1) / rows > maxg)
        return baatt_msgf(
            msg, n, BAATT_ERROR_TOO_LARGE,
            "sequence length %u (padded to %u) needs %u workgroups of %u rows for the row copies and norm "
            "keys, over the device's workgroup-count limit (%u)",
            c->q_len > c->kv_len ? c->q_len : c->kv_len, longest, (longest + rows - 1) / rows, rows, maxg);
    return BAATT_OK;
}

baatt_status baatt_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *tuning,
                          baatt_choice *out, char *msg, size_t msg_size)
{
    baatt_choice ch = {.geo = geometry(cfg)};
    const baatt_geometry *g = &ch.geo;
    BAATT_TRY(check_limits(caps, cfg, g, msg, msg_size));
    ch.cands = baatt_auto_candidates(cfg);
    ch.auto_sort = !cfg->dense && ch.cands.n > 1;
    ch.samples = baatt_auto_samples(cfg->q_len);
    baatt_sort_choose(caps, cfg, tuning, g, &ch.sort);
    BAATT_TRY(baatt_attend_choose(caps, cfg, tuning, g, &ch.attend, msg, msg_size));
    baatt_score_choose(caps, cfg, tuning, g, &ch.score);
    baatt_select_choose(caps, cfg, tuning, g, &ch.select);
    /* the perms change after the statistics only where the blocking is chosen */
    baatt_stats_choose(cfg, &ch.attend, &ch.score, ch.auto_sort && ch.cands.blockings > 1, &ch.stats);
    *out = ch;
    return BAATT_OK;
}

/* Element i's first partner in lane l's row (the partition the shader's REP encodes). */
static uint32_t first_in_row(const uint32_t *cell, uint32_t n, uint32_t l, uint32_t i)
{
    uint32_t j = 0;
    while (cell[l * KL_MAX_E + j] / n != cell[l * KL_MAX_E + i] / n) j++;
    return j;
}

/* Lanes l ^ x (x < g) hold rep element i in one row and cover its n columns. */
static int group_covers(const uint32_t *cell, uint32_t e, uint32_t n, uint32_t rep, uint32_t l, uint32_t i, uint32_t g)
{
    uint32_t row = cell[l * KL_MAX_E + i] / n, cols = 0;
    for (uint32_t x = 0; x < g; x++) {
        const uint32_t *c = cell + (l ^ x) * KL_MAX_E;
        if (c[i] / n != row) return 0;
        for (uint32_t j = 0; j < e; j++)
            if (((rep >> 4 * j) & 15u) == i) cols |= 1u << (c[j] % n);
    }
    return cols == (n >= 32 ? ~0u : (1u << n) - 1);
}

uint32_t baatt_khr_layout_classify(const uint32_t *cell, uint32_t sg, uint32_t e, uint32_t n, uint32_t *rep)
{
    uint32_t r = 0;
    if (e == 0 || e > 8 || n > 32 || sg == 0 || (sg & (sg - 1))) return 0;
    for (uint32_t i = 0; i < e; i++) r |= first_in_row(cell, n, 0, i) << 4 * i;
    for (uint32_t l = 1; l < sg; l++)
        for (uint32_t i = 0; i < e; i++)
            if (first_in_row(cell, n, l, i) != ((r >> 4 * i) & 15u)) return 0;
    for (uint32_t g = 1; g <= sg; g *= 2) {
        int ok = 1;
        for (uint32_t l = 0; l < sg && ok; l++)
            for (uint32_t i = 0; i < e && ok; i++)
                if (((r >> 4 * i) & 15u) == i) ok = group_covers(cell, e, n, r, l, i, g);
        if (ok) {
            *rep = r;
            return g;
        }
    }
    return 0;
}
