/* Workloads for the accuracy evaluation: seeded synthetic Q/K/V whose attention has a known
 * structure, and Q/K/V loaded from .npy files.
 *
 * Every synthetic head is generated from its own xorshift64* stream, seeded by splitmix64 from
 * (seed, workload, head): the same seed gives the same bits on any host, and a head does not change
 * when the head count does. Conventions shared by the generators (d = head_dim, t = 1/sqrt(d)):
 *  - a "direction" is an N(0, I) vector rescaled to norm sqrt(d), so two tokens carrying a*u and
 *    b*u get a logit t*a*b*d = a*b*sqrt(d) from it (8ab at d = 64) and unrelated directions add
 *    only O(ab) noise;
 *  - every token carries N(0, I) noise ("content" nobody else shares);
 *  - structured workloads multiply each token by a norm jitter exp(sigma z), z ~ N(0, 1), sigma =
 *    eval_workload_params.jitter (default 0.25): real Q/K norms vary from token to token, and it is
 *    what norm sorting keys on. It also concentrates attention on the high-norm keys, which favours
 *    sorted blockings: the report shows every workload with sigma = 0 as well (iid has none);
 *  - V is N(0, I) everywhere (the output metrics then weigh every key alike).
 * The parameter values below are the documented defaults; `baatt eval --help` prints
 * eval_workload_help(), which must be kept in step with them.
 *
 * Drift (eval_data_drift, issue 17: a selection reused across denoising steps). A diffusion
 * transformer sees the same shapes at every step, its Q/K/V changing a little from one step to the
 * next. The model: every token x of Q, K and V takes, per step, one Ornstein-Uhlenbeck step
 *   x <- sqrt(1 - e^2) x + e rms(x) z,   z ~ N(0, I) fresh per step, rms(x) = |x| / sqrt(dims),
 * starting from any workload (synthetic or loaded). The token's expected squared norm is kept (norm
 * sorting's key only diffuses), its correlation with step 0 after t steps is (1 - e^2)^(t/2), and
 * e is about the relative change per step, |x' - x| / |x| ~ e (cosine of x' and x ~ sqrt(1 - e^2)).
 * Chosen range: caching methods for diffusion transformers (TeaCache and the like) skip steps while
 * the accumulated relative change of a block's input stays under about 0.1-0.3, so consecutive steps
 * in the middle of a sampling schedule differ by a few percent, more near its ends: e = 0.05, 0.1,
 * 0.2 (cosine 0.9987, 0.995, 0.980 between steps) spans that, and 0.4 is a stress value. What the
 * model leaves out: real drift is coherent (content moving in a video shifts whole attention
 * patterns), where isotropic noise decorrelates every token alike; the study measures this model,
 * not a real sequence. Applying z after the rotary encoding equals applying a rotated z before it
 * (z is isotropic, rms is rotation-invariant). */
#include "workloads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#define CLUSTERS 16       /* clustered: centroids per head */
#define CLUSTER_A 0.75    /* clustered: centroid weight (same-cluster logit ~ 0.56 sqrt(d)) */
#define NEEDLES 8         /* needles: strong keys per head */
#define NEEDLE_G 1.25     /* needles: needle key weight on its direction */
#define NEEDLE_B 1.0      /* needles: weight of the needle direction a seeking query carries */
#define NEEDLE_P 0.75     /* needles: fraction of queries that seek a needle */
#define ROPE_A 1.0        /* rotary: weight of the shared content direction */
#define ROPE_BASE 10000.0 /* rotary: RoPE base (GPT-NeoX half-split pairs) */
#define STRIPES 8         /* sinks: vertical stripes besides the sink at position 0 */
#define SINK_G 1.6        /* sinks: weight of the sink key on the shared direction */
#define STRIPE_G 1.25     /* sinks: weight of a stripe key */
#define SINK_B 0.7        /* sinks: weight of the shared direction in every query */
#define SEGMENTS 4        /* shift: contiguous segments with their own statistics */
#define SEG_CLUSTERS 4    /* shift: centroids per segment */
#define SEG_MEAN 0.5      /* shift: weight of the segment's mean direction */
#define SEG_A 0.6         /* shift: weight of the token's centroid */
static const double SEG_SCALE[SEGMENTS] = {0.7, 1.0, 1.3, 1.6}; /* shift: norm scale per segment */

static const char HELP[] =
    "workloads (Q, K, V of shape [heads, n, d]; V ~ N(0, I) in all; 'direction' = N(0, I) rescaled\n"
    "to norm sqrt(d), so a*u against b*u adds a*b*sqrt(d) to the logit; every structured token also\n"
    "gets N(0, I) noise and a norm jitter exp(sigma z), sigma = --jitter, default 0.25):\n"
    "  iid            q, k ~ N(0, I): diffuse attention, no structure to find\n"
    "  clustered      16 centroids per head; each token takes a random one (scattered over positions):\n"
    "                 x = 0.75 c + noise; a query attends to its cluster's keys wherever they are\n"
    "  needles        8 needle keys at random positions, k = noise + 1.25 n_m; 75% of queries carry\n"
    "                 1.0 n_m for a random m: a few strong keys take most of their mass\n"
    "  rotary         x = RoPE_pos(1.0 c + noise) with one shared c (base 10000): nearby tokens\n"
    "                 attend (the slash / local-window pattern of positional heads)\n"
    "  rotary_needle  rotary, plus the needles above added after the rotation (position-free)\n"
    "  sinks          a sink key at position 0 (1.6 u) and 8 stripe keys at random positions (1.25 u)\n"
    "                 on a direction u that every query carries (0.7 u): vertical stripes\n"
    "  mixture        head h is rotary, clustered, sinks, needles, shift for h mod 5 (one per head)\n"
    "  shift          4 contiguous segments, each with its own mean direction (0.5), 4 centroids\n"
    "                 (0.6) and norm scale (0.7, 1.0, 1.3, 1.6): statistics change along the sequence\n"
    "drift between steps (--drift E, any workload or .npy input as step 0): every token x of Q, K, V\n"
    "becomes sqrt(1 - E^2) x + E (|x| / sqrt(d)) z per step, z ~ N(0, I) fresh each step (norms kept\n"
    "on average; correlation with step 0 after t steps (1 - E^2)^(t/2))\n";

const char *eval_workload_help(void) { return HELP; }

/* ---------------------------------------------------------------------------------------------
 * Random streams (rng.h): one xorshift64* state per head.
 * ------------------------------------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static double unif(rng *r) { return eval_rng_uniform(&r->s); }
static double gauss(rng *r) { return eval_rng_normal(&r->s); }
static uint32_t below(rng *r, uint32_t n) { return (uint32_t)((eval_rng_next(&r->s) >> 33) % n); }

/* ---------------------------------------------------------------------------------------------
 * Token building blocks.
 * ------------------------------------------------------------------------------------------- */

/* One head's arrays: q [n, d], k [n, d], v [n, d], and SCRATCH_DIRS directions of scratch for the
 * generator's centroids / needle directions (allocated once by the caller: generators cannot fail). */
#define SCRATCH_DIRS 32
typedef struct head_io {
    uint32_t n, d;
    float *q, *k, *v, *dirs;
    double jitter;
} head_io;

static void direction(rng *r, uint32_t d, float *u)
{
    double ss = 0;
    for (uint32_t a = 0; a < d; a++) {
        u[a] = (float)gauss(r);
        ss += (double)u[a] * u[a];
    }
    double f = sqrt(d / ss);
    for (uint32_t a = 0; a < d; a++) u[a] = (float)(u[a] * f);
}

/* The norm jitter factor of one token. The normal is drawn even when sigma = 0 so that the other
 * random draws (and hence the structure) do not change with sigma. */
static double jitter(rng *r, const head_io *h) { return exp(h->jitter * gauss(r)); }

/* x = scale * (noise + a1 u1 + a2 u2); either direction may be NULL. */
static void token(rng *r, uint32_t d, float *x, double scale, const float *u1, double a1, const float *u2, double a2)
{
    for (uint32_t a = 0; a < d; a++) {
        double e = gauss(r);
        if (u1) e += a1 * u1[a];
        if (u2) e += a2 * u2[a];
        x[a] = (float)(scale * e);
    }
}

static void fill_gauss(rng *r, float *x, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) x[i] = (float)gauss(r);
}

/* Rotary position encoding at position pos, GPT-NeoX layout: dimension a pairs with a + d/2 and
 * turns at frequency base^(-a / (d/2)). */
static void rope(float *x, uint32_t d, uint32_t pos)
{
    uint32_t h = d / 2;
    for (uint32_t a = 0; a < h; a++) {
        double ang = pos * pow(ROPE_BASE, -(double)a / h), c = cos(ang), s = sin(ang);
        double x1 = x[a], x2 = x[a + h];
        x[a] = (float)(x1 * c - x2 * s);
        x[a + h] = (float)(x1 * s + x2 * c);
    }
}

/* m distinct random positions in [0, n) (m <= n). */
static void distinct_positions(rng *r, uint32_t n, uint32_t m, uint32_t *pos)
{
    for (uint32_t i = 0; i < m; i++) {
        int dup;
        do {
            pos[i] = below(r, n);
            dup = 0;
            for (uint32_t j = 0; j < i; j++) dup |= pos[j] == pos[i];
        } while (dup);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The generators: each fills q and k of one head (V is filled by the caller).
 * ------------------------------------------------------------------------------------------- */

typedef void (*gen_fn)(rng *r, head_io *h, uint32_t head);

static void gen_iid(rng *r, head_io *h, uint32_t head)
{
    (void)head;
    fill_gauss(r, h->q, (uint64_t)h->n * h->d);
    fill_gauss(r, h->k, (uint64_t)h->n * h->d);
}

/* Tokens around a few centroids, the centroid of each token drawn independently of its position:
 * the attention mass of a query is spread over its cluster's keys all along the sequence. */
static void gen_clustered(rng *r, head_io *h, uint32_t head)
{
    (void)head;
    uint32_t d = h->d;
    float *c = h->dirs;
    for (uint32_t m = 0; m < CLUSTERS; m++) direction(r, d, c + m * d);
    for (uint32_t i = 0; i < 2 * h->n; i++) { /* queries, then keys */
        float *x = i < h->n ? h->q + (uint64_t)i * d : h->k + (uint64_t)(i - h->n) * d;
        const float *cm = c + below(r, CLUSTERS) * d; /* separate statements: argument order is unspecified */
        token(r, d, x, jitter(r, h), cm, CLUSTER_A, NULL, 0);
    }
}

/* Adds needle components to q and k as generated so far: NEEDLES keys at random positions get
 * NEEDLE_G n_m (and a fresh norm jitter), a NEEDLE_P share of the queries get NEEDLE_B n_m. */
static void add_needles(rng *r, head_io *h)
{
    uint32_t d = h->d, m = h->n < NEEDLES ? h->n : NEEDLES, pos[NEEDLES];
    float *u = h->dirs + CLUSTERS * d; /* past gen_rotary's direction */
    for (uint32_t i = 0; i < m; i++) direction(r, d, u + i * d);
    distinct_positions(r, h->n, m, pos);
    for (uint32_t i = 0; i < m; i++)
        token(r, d, h->k + (uint64_t)pos[i] * d, jitter(r, h), u + i * d, NEEDLE_G, NULL, 0);
    for (uint32_t i = 0; i < h->n; i++) {
        if (unif(r) >= NEEDLE_P) continue;
        const float *n = u + below(r, m) * d;
        for (uint32_t a = 0; a < d; a++) h->q[(uint64_t)i * d + a] += (float)(NEEDLE_B * n[a]);
    }
}

static void gen_needles(rng *r, head_io *h, uint32_t head)
{
    (void)head;
    for (uint32_t i = 0; i < h->n; i++) token(r, h->d, h->q + (uint64_t)i * h->d, jitter(r, h), NULL, 0, NULL, 0);
    for (uint32_t j = 0; j < h->n; j++) token(r, h->d, h->k + (uint64_t)j * h->d, jitter(r, h), NULL, 0, NULL, 0);
    add_needles(r, h);
}

/* Every token carries the same content direction c, then is rotated by its position: q_i . k_j
 * becomes sum_f |c_f|^2 cos(w_f (i - j)) plus noise, largest near i = j. */
static void gen_rotary(rng *r, head_io *h, uint32_t head)
{
    (void)head;
    uint32_t d = h->d;
    float *c = h->dirs;
    direction(r, d, c);
    for (uint32_t i = 0; i < h->n; i++) {
        token(r, d, h->q + (uint64_t)i * d, jitter(r, h), c, ROPE_A, NULL, 0);
        rope(h->q + (uint64_t)i * d, d, i);
    }
    for (uint32_t j = 0; j < h->n; j++) {
        token(r, d, h->k + (uint64_t)j * d, jitter(r, h), c, ROPE_A, NULL, 0);
        rope(h->k + (uint64_t)j * d, d, j);
    }
}

static void gen_rotary_needle(rng *r, head_io *h, uint32_t head)
{
    gen_rotary(r, h, head);
    add_needles(r, h);
}

/* A direction u in every query; the sink (position 0) and a few stripe keys carry it too: every
 * query sends mass to the same few columns. */
static void gen_sinks(rng *r, head_io *h, uint32_t head)
{
    (void)head;
    uint32_t d = h->d, m = h->n - 1 < STRIPES ? h->n - 1 : STRIPES, pos[STRIPES];
    float *u = h->dirs;
    direction(r, d, u);
    for (uint32_t i = 0; i < h->n; i++) token(r, d, h->q + (uint64_t)i * d, jitter(r, h), u, SINK_B, NULL, 0);
    for (uint32_t j = 0; j < h->n; j++) token(r, d, h->k + (uint64_t)j * d, jitter(r, h), NULL, 0, NULL, 0);
    token(r, d, h->k, jitter(r, h), u, SINK_G, NULL, 0);
    distinct_positions(r, h->n - 1, m, pos); /* stripes avoid the sink */
    for (uint32_t i = 0; i < m; i++) token(r, d, h->k + (uint64_t)(pos[i] + 1) * d, jitter(r, h), u, STRIPE_G, NULL, 0);
}

/* Contiguous segments (think text / image / text / image): each has its own mean direction,
 * centroids and norm scale, so block statistics change along the sequence. */
static void gen_shift(rng *r, head_io *h, uint32_t head)
{
    (void)head;
    uint32_t d = h->d;
    float *mean = h->dirs, *c = h->dirs + SEGMENTS * d;
    for (uint32_t s = 0; s < SEGMENTS; s++) direction(r, d, mean + s * d);
    for (uint32_t m = 0; m < SEGMENTS * SEG_CLUSTERS; m++) direction(r, d, c + m * d);
    for (int side = 0; side < 2; side++) {
        float *x = side ? h->k : h->q;
        for (uint32_t i = 0; i < h->n; i++) {
            uint32_t s = (uint32_t)((uint64_t)i * SEGMENTS / h->n);
            const float *cm = c + (s * SEG_CLUSTERS + below(r, SEG_CLUSTERS)) * d;
            token(r, d, x + (uint64_t)i * d, SEG_SCALE[s] * jitter(r, h), mean + s * d, SEG_MEAN, cm, SEG_A);
        }
    }
}

static void gen_mixture(rng *r, head_io *h, uint32_t head)
{
    static const gen_fn kinds[] = {gen_rotary, gen_clustered, gen_sinks, gen_needles, gen_shift};
    kinds[head % 5](r, h, head);
}

static const struct {
    const char *name;
    gen_fn gen;
} WORKLOADS[] = {
    {"iid", gen_iid},
    {"clustered", gen_clustered},
    {"needles", gen_needles},
    {"rotary", gen_rotary},
    {"rotary_needle", gen_rotary_needle},
    {"sinks", gen_sinks},
    {"mixture", gen_mixture},
    {"shift", gen_shift},
};
#define N_WORKLOADS (sizeof WORKLOADS / sizeof WORKLOADS[0])

const char *const *eval_workload_names(void)
{
    static const char *names[N_WORKLOADS + 1];
    for (size_t i = 0; i < N_WORKLOADS; i++) names[i] = WORKLOADS[i].name;
    return names;
}

void eval_data_free(eval_data *d)
{
    free(d->q);
    free(d->k);
    free(d->v);
    memset(d, 0, sizeof *d);
}

static baatt_status data_alloc(eval_data *d, uint32_t heads, uint32_t q_len, uint32_t kv_len, uint32_t dim)
{
    memset(d, 0, sizeof *d);
    d->heads = heads;
    d->q_len = q_len;
    d->kv_len = kv_len;
    d->head_dim = dim;
    d->q = calloc((size_t)heads * q_len * dim, sizeof(float));
    d->k = calloc((size_t)heads * kv_len * dim, sizeof(float));
    d->v = calloc((size_t)heads * kv_len * dim, sizeof(float));
    if (d->q && d->k && d->v) return BAATT_OK;
    eval_data_free(d);
    return BAATT_ERROR_OUT_OF_HOST_MEMORY;
}

baatt_status eval_workload_make(const char *name, const eval_workload_params *p, eval_data *out)
{
    size_t w = 0;
    while (w < N_WORKLOADS && strcmp(WORKLOADS[w].name, name)) w++;
    if (w == N_WORKLOADS || !p || !out) return BAATT_ERROR_INVALID_ARGUMENT;
    if (!p->heads || p->len < 2 || (p->head_dim != 64 && p->head_dim != 128)) return BAATT_ERROR_BAD_SHAPE;
    if (!(p->jitter >= 0 && p->jitter <= 4)) return BAATT_ERROR_INVALID_ARGUMENT;
    baatt_status s = data_alloc(out, p->heads, p->len, p->len, p->head_dim);
    float *dirs = s == BAATT_OK ? malloc(sizeof(float) * SCRATCH_DIRS * p->head_dim) : NULL;
    if (!dirs) {
        eval_data_free(out);
        return BAATT_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t h = 0; h < p->heads; h++) {
        uint64_t n = (uint64_t)p->len * p->head_dim;
        rng r = {eval_splitmix64(p->seed ^ eval_splitmix64((w + 1) * 0x100000001ull + h))};
        if (!r.s) r.s = 1;
        head_io io = {p->len, p->head_dim, out->q + h * n, out->k + h * n, out->v + h * n, dirs, p->jitter};
        WORKLOADS[w].gen(&r, &io, h);
        fill_gauss(&r, io.v, n);
    }
    free(dirs);
    return BAATT_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Drift across steps (the model is described at the top of this file).
 * ------------------------------------------------------------------------------------------- */

baatt_status eval_data_copy(const eval_data *src, eval_data *out)
{
    if (!src || !out || !src->q || !src->k || !src->v) return BAATT_ERROR_INVALID_ARGUMENT;
    baatt_status s = data_alloc(out, src->heads, src->q_len, src->kv_len, src->head_dim);
    if (s != BAATT_OK) return s;
    out->scale = src->scale;
    out->valid_dim = src->valid_dim;
    memcpy(out->q, src->q, sizeof(float) * src->heads * src->q_len * src->head_dim);
    memcpy(out->k, src->k, sizeof(float) * src->heads * src->kv_len * src->head_dim);
    memcpy(out->v, src->v, sizeof(float) * src->heads * src->kv_len * src->head_dim);
    return BAATT_OK;
}

/* One drift step of the n tokens at x (row stride d, the first dims columns live). */
static void drift_rows(rng *r, float *x, uint32_t n, uint32_t d, uint32_t dims, double e)
{
    double c = sqrt(1 - e * e);
    for (uint32_t i = 0; i < n; i++) {
        float *row = x + (uint64_t)i * d;
        double ss = 0;
        for (uint32_t a = 0; a < dims; a++) ss += (double)row[a] * row[a];
        double g = e * sqrt(ss / dims);
        for (uint32_t a = 0; a < dims; a++) row[a] = (float)(c * row[a] + g * gauss(r));
    }
}

baatt_status eval_data_drift(eval_data *d, double drift, uint64_t seed, uint32_t step)
{
    if (!d || !d->q || !d->k || !d->v || !(drift >= 0 && drift <= 1) || !step) return BAATT_ERROR_INVALID_ARGUMENT;
    if (drift == 0) return BAATT_OK;
    uint32_t dims = d->valid_dim && d->valid_dim < d->head_dim ? d->valid_dim : d->head_dim;
    for (uint32_t t = 0; t < 3; t++) { /* q, k, v: a stream per (seed, step, tensor, head) */
        float *x = t == 0 ? d->q : t == 1 ? d->k : d->v;
        uint32_t n = t == 0 ? d->q_len : d->kv_len;
        for (uint32_t h = 0; h < d->heads; h++) {
            uint64_t tag = 0xD21F7000000000ull + ((uint64_t)step << 8) + t;
            rng r = {eval_splitmix64(seed ^ eval_splitmix64(eval_splitmix64(tag) + h))};
            if (!r.s) r.s = 1;
            drift_rows(&r, x + (uint64_t)h * n * d->head_dim, n, d->head_dim, dims, drift);
        }
    }
    return BAATT_OK;
}

/* ---------------------------------------------------------------------------------------------
 * .npy input.
 * ------------------------------------------------------------------------------------------- */

/* Reads one tensor as [batch, heads, len, d] (rank 3 = batch 1). */
static baatt_status load_one(const char *path, const char *what, baatt_npy *t, uint64_t shape[4], char *msg, size_t n)
{
    baatt_status s = baatt_npy_read(path, t, msg, n);
    if (s != BAATT_OK) return s;
    if (t->dtype != BAATT_NPY_F32 && t->dtype != BAATT_NPY_F16) {
        snprintf(msg, n, "%s (%s): dtype must be float32 or float16", what, path);
        return BAATT_ERROR_FILE_FORMAT;
    }
    if (t->rank != 3 && t->rank != 4) {
        snprintf(msg, n, "%s (%s): expected [batch, heads, len, head_dim] or [heads, len, head_dim]", what, path);
        return BAATT_ERROR_BAD_SHAPE;
    }
    uint32_t off = t->rank == 3;
    shape[0] = 1;
    for (uint32_t i = 0; i < t->rank; i++) shape[i + off] = t->shape[i];
    return BAATT_OK;
}

static float npy_at(const baatt_npy *t, uint64_t i)
{
    return t->dtype == BAATT_NPY_F16 ? baatt_f16_to_f32(((const uint16_t *)t->data)[i]) : ((const float *)t->data)[i];
}

/* Copies src [batch, src_heads, len, d] into dst [batch * heads, len, pad_d]: query head h of batch b
 * reads source head h / (heads / src_heads); columns past d stay zero. */
static void expand(const baatt_npy *src, const uint64_t s[4], uint32_t heads, uint32_t pad_d, float *dst)
{
    uint64_t g = heads / s[1];
    for (uint64_t b = 0; b < s[0]; b++)
        for (uint64_t h = 0; h < heads; h++)
            for (uint64_t i = 0; i < s[2]; i++)
                for (uint64_t a = 0; a < s[3]; a++)
                    dst[((b * heads + h) * s[2] + i) * pad_d + a] =
                        npy_at(src, ((b * s[1] + h / g) * s[2] + i) * s[3] + a);
}

static baatt_status check_shapes(const uint64_t q[4], const uint64_t k[4], const uint64_t v[4], char *msg, size_t n)
{
    for (int i = 0; i < 4; i++)
        if (k[i] != v[i]) return snprintf(msg, n, "k and v shapes differ"), BAATT_ERROR_BAD_SHAPE;
    if (q[0] != k[0] || q[3] != k[3] || !k[1] || q[1] % k[1])
        return snprintf(msg, n, "q and k disagree on batch or head_dim, or heads %% kv_heads != 0"),
               BAATT_ERROR_BAD_SHAPE;
    if (!q[3] || q[3] > 128 || !q[2] || !k[2] || q[0] * q[1] > 0xffffffffull || q[2] > 0xffffffffull ||
        k[2] > 0xffffffffull)
        return snprintf(msg, n, "unsupported sizes (head_dim must be 1..128)"), BAATT_ERROR_BAD_SHAPE;
    return BAATT_OK;
}

baatt_status eval_data_load(const char *q_path, const char *k_path, const char *v_path, float scale, eval_data *out,
                            char *msg, size_t msg_size)
{
    baatt_npy q = {0}, k = {0}, v = {0};
    uint64_t sq[4], sk[4], sv[4];
    char dummy[8];
    if (!msg) msg = dummy, msg_size = sizeof dummy;
    baatt_status s = load_one(q_path, "q", &q, sq, msg, msg_size);
    if (s == BAATT_OK) s = load_one(k_path, "k", &k, sk, msg, msg_size);
    if (s == BAATT_OK) s = load_one(v_path, "v", &v, sv, msg, msg_size);
    if (s == BAATT_OK) s = check_shapes(sq, sk, sv, msg, msg_size);
    uint32_t d = s == BAATT_OK ? (uint32_t)sq[3] : 0, pad = d <= 64 ? 64 : 128;
    if (s == BAATT_OK) s = data_alloc(out, (uint32_t)(sq[0] * sq[1]), (uint32_t)sq[2], (uint32_t)sk[2], pad);
    if (s == BAATT_OK) {
        expand(&q, sq, (uint32_t)sq[1], pad, out->q);
        expand(&k, sk, (uint32_t)sq[1], pad, out->k);
        expand(&v, sv, (uint32_t)sq[1], pad, out->v);
        /* padding must not change the logits' scale: keep 1/sqrt(original d) */
        out->valid_dim = d;
        out->scale = scale > 0 ? scale : (float)(1.0 / sqrt((double)d));
    }
    baatt_npy_free(&q);
    baatt_npy_free(&k);
    baatt_npy_free(&v);
    return s;
}
