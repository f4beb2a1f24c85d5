/* The accuracy evaluator (src/eval/eval.c) and its workloads (src/eval/workloads.c): generators
 * are deterministic and shaped right; every method's masks hold the requested block counts; BA-Att's
 * selection and its auto-sort choice are the library reference's; the one-pass metrics equal
 * baatt_reference_metrics on baatt_reference_sparse_attention's output; the oracle bounds every
 * method on its blocking. */
#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "internal.h"
#include "workloads.h"

#define NM 9 /* the default methods */

static eval_workload_params params(uint32_t heads, uint32_t len, uint64_t seed)
{
    eval_workload_params p = {heads, len, 64, seed, EVAL_DEFAULT_JITTER};
    return p;
}

static eval_data make(const char *name, uint32_t heads, uint32_t len, uint64_t seed)
{
    eval_data d;
    eval_workload_params p = params(heads, len, seed);
    assert_int_equal(eval_workload_make(name, &p, &d), BAATT_OK);
    return d;
}

static size_t qn(const eval_data *d) { return (size_t)d->heads * d->q_len * d->head_dim; }
static size_t kn(const eval_data *d) { return (size_t)d->heads * d->kv_len * d->head_dim; }

/* The single-config view of d that the reference functions take. */
static baatt_config cfg_of(const eval_data *d, uint32_t block)
{
    baatt_config c = baatt_config_default();
    c.heads = c.kv_heads = d->heads;
    c.q_len = d->q_len;
    c.kv_len = d->kv_len;
    c.head_dim = d->head_dim;
    c.scale = d->scale;
    c.block_size = block;
    c.norm_sort = BAATT_SORT_NORM; /* the harness's `baatt` method */
    c.covariance = BAATT_COVARIANCE_ON;
    return c;
}

/* Runs eval with the default methods, capturing every mask and the sorted permutations. */
typedef struct captured {
    eval_record *rec;
    uint32_t n, nb;
    uint8_t *masks[NM * 8];
    int32_t *pq, *pk;
} captured;

static captured run_methods(const eval_data *d, uint32_t block, const eval_target *t, uint32_t nt, uint32_t threads,
                            const char *const *methods, uint32_t nm)
{
    captured c = {0};
    baatt_config cfg = cfg_of(d, block);
    c.nb = d->heads * baatt_config_q_blocks(&cfg) * baatt_config_k_blocks(&cfg);
    assert_true(nt <= 8);
    assert_true(nm <= NM);
    for (uint32_t i = 0; i < nm * nt; i++) assert_non_null(c.masks[i] = calloc(c.nb, 1));
    assert_non_null(c.pq = malloc(sizeof(int32_t) * d->heads * d->q_len));
    assert_non_null(c.pk = malloc(sizeof(int32_t) * d->heads * d->kv_len));
    eval_options o = {0};
    o.block_size = block;
    o.targets = t;
    o.n_targets = nt;
    o.outputs = 1;
    o.threads = threads;
    o.mask_out = c.masks;
    o.sorted_perm_q_out = c.pq;
    o.sorted_perm_k_out = c.pk;
    o.methods = methods;
    o.n_methods = methods ? nm : 0;
    char msg[256];
    assert_int_equal(eval_run(d, &o, &c.rec, &c.n, msg, sizeof msg), BAATT_OK);
    assert_int_equal(c.n, nm * nt);
    return c;
}

static captured run_capture(const eval_data *d, uint32_t block, const eval_target *t, uint32_t nt, uint32_t threads)
{
    return run_methods(d, block, t, nt, threads, NULL, NM);
}

static void captured_free(captured *c)
{
    free(c->rec);
    for (int i = 0; i < NM * 8; i++) free(c->masks[i]);
    free(c->pq);
    free(c->pk);
}

static int method_index(const char *name)
{
    const char *const *m = eval_default_methods();
    for (int i = 0; m[i]; i++)
        if (!strcmp(m[i], name)) return i;
    fail_msg("no method %s", name);
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Workloads.
 * ------------------------------------------------------------------------------------------- */

static void test_workloads_deterministic(void **state)
{
    (void)state;
    for (const char *const *w = eval_workload_names(); *w; w++) {
        eval_data a = make(*w, 2, 300, 7), b = make(*w, 2, 300, 7), c = make(*w, 2, 300, 8);
        assert_int_equal(a.heads, 2);
        assert_int_equal(a.q_len, 300);
        assert_int_equal(a.kv_len, 300);
        assert_int_equal(a.head_dim, 64);
        assert_memory_equal(a.q, b.q, qn(&a) * sizeof(float));
        assert_memory_equal(a.k, b.k, kn(&a) * sizeof(float));
        assert_memory_equal(a.v, b.v, kn(&a) * sizeof(float));
        assert_true(memcmp(a.q, c.q, qn(&a) * sizeof(float)) || memcmp(a.k, c.k, kn(&a) * sizeof(float)));
        for (size_t i = 0; i < qn(&a); i++) assert_true(isfinite(a.q[i]) && isfinite(a.k[i]) && isfinite(a.v[i]));
        eval_data_free(&a);
        eval_data_free(&b);
        eval_data_free(&c);
    }
}

/* A head does not change with the head count (each head has its own stream). */
static void test_workloads_head_stable(void **state)
{
    (void)state;
    eval_data one = make("mixture", 1, 256, 3), three = make("mixture", 3, 256, 3);
    assert_memory_equal(one.q, three.q, qn(&one) * sizeof(float));
    assert_memory_equal(one.k, three.k, kn(&one) * sizeof(float));
    eval_data_free(&one);
    eval_data_free(&three);
}

static void test_workloads_bad_arguments(void **state)
{
    (void)state;
    eval_data d;
    eval_workload_params p = params(2, 256, 1);
    assert_int_equal(eval_workload_make("nope", &p, &d), BAATT_ERROR_INVALID_ARGUMENT);
    p.head_dim = 32;
    assert_int_equal(eval_workload_make("iid", &p, &d), BAATT_ERROR_BAD_SHAPE);
    p = params(0, 256, 1);
    assert_int_equal(eval_workload_make("iid", &p, &d), BAATT_ERROR_BAD_SHAPE);
}

/* The structure each workload promises shows in its attention: a needle or sink key draws far
 * more than the uniform 1/N share. */
static void test_workloads_structure(void **state)
{
    (void)state;
    eval_data d = make("sinks", 1, 512, 5);
    double t = 1 / 8.0, *p = malloc(sizeof(double) * 512), col0 = 0;
    assert_non_null(p);
    for (uint32_t i = 0; i < 512; i++) {
        double mx = -INFINITY, sum = 0;
        for (uint32_t j = 0; j < 512; j++) {
            double s = 0;
            for (uint32_t a = 0; a < 64; a++) s += (double)d.q[i * 64 + a] * d.k[j * 64 + a];
            p[j] = t * s;
            mx = fmax(mx, p[j]);
        }
        for (uint32_t j = 0; j < 512; j++) sum += p[j] = exp(p[j] - mx);
        col0 += p[0] / sum / 512;
    }
    assert_true(col0 > 0.05); /* the sink at position 0 holds > 25x its uniform share */
    free(p);
    eval_data_free(&d);
}

/* .npy input: d = 32 in fp16 is zero-padded to 64 with scale 1/sqrt(32); GQA is expanded. */
static void test_npy_load_pad(void **state)
{
    (void)state;
    char pq[512], pk[512], pv[512], msg[256];
    uint64_t sq[3] = {4, 10, 32}, sk[3] = {2, 12, 32};
    uint16_t *q = malloc(2 * 4 * 10 * 32), *k = malloc(2 * 2 * 12 * 32);
    assert_true(q && k);
    for (int i = 0; i < 4 * 10 * 32; i++) q[i] = baatt_f32_to_f16((float)(i % 7) - 3);
    for (int i = 0; i < 2 * 12 * 32; i++) k[i] = baatt_f32_to_f16((float)(i % 5) * 0.5f);
    assert_int_equal(baatt_npy_write(th_tmp_path(pq, sizeof pq, "eq.npy"), BAATT_NPY_F16, 3, sq, q, msg, sizeof msg),
                     0);
    assert_int_equal(baatt_npy_write(th_tmp_path(pk, sizeof pk, "ek.npy"), BAATT_NPY_F16, 3, sk, k, msg, sizeof msg),
                     0);
    assert_int_equal(baatt_npy_write(th_tmp_path(pv, sizeof pv, "ev.npy"), BAATT_NPY_F16, 3, sk, k, msg, sizeof msg),
                     0);
    eval_data d;
    assert_int_equal(eval_data_load(pq, pk, pv, 0, &d, msg, sizeof msg), BAATT_OK);
    assert_int_equal(d.heads, 4);
    assert_int_equal(d.q_len, 10);
    assert_int_equal(d.kv_len, 12);
    assert_int_equal(d.head_dim, 64);
    assert_float_equal(d.scale, 1 / sqrt(32.0), 1e-7);
    for (uint32_t h = 0; h < 4; h++)
        for (uint32_t i = 0; i < 12; i++)
            for (uint32_t a = 0; a < 64; a++) {
                float want = a < 32 ? baatt_f16_to_f32(k[((h / 2) * 12 + i) * 32 + a]) : 0;
                assert_float_equal(d.k[(h * 12 + i) * 64 + a], want, 0);
                if (i < 10)
                    assert_float_equal(d.q[(h * 10 + i) * 64 + a],
                                       a < 32 ? baatt_f16_to_f32(q[(h * 10 + i) * 32 + a]) : 0, 0);
            }
    eval_data_free(&d);
    assert_int_not_equal(eval_data_load(pq, pq, pv, 0, &d, msg, sizeof msg), BAATT_OK); /* k and v differ */
    remove(pq);
    remove(pk);
    remove(pv);
    free(q);
    free(k);
}

/* ---------------------------------------------------------------------------------------------
 * Selection.
 * ------------------------------------------------------------------------------------------- */

/* Per-row counts: keep targets give step 4's ceil count in every row; sparsity targets floor or
 * ceil of the mean with the exact total; threshold targets match BA-Att's threshold total. */
static void test_mask_counts(void **state)
{
    (void)state;
    eval_data d = make("clustered", 2, 640, 11); /* nk = 10 */
    eval_target t[4] = {{EVAL_KEEP, 0.33}, {EVAL_SPARSITY, 0.5}, {EVAL_SPARSITY, 0.87}, {EVAL_THRESHOLD, 0.9}};
    captured c = run_capture(&d, 64, t, 4, 1);
    uint32_t nk = 10, rows = c.nb / nk;
    size_t thr_total = 0;
    for (uint32_t i = 0; i < c.nb; i++) thr_total += c.masks[method_index("baatt") * 4 + 3][i];
    for (int m = 0; m < NM; m++) {
        size_t total[4] = {0};
        for (uint32_t r = 0; r < rows; r++) {
            uint32_t cnt[4] = {0};
            for (int k = 0; k < 4; k++)
                for (uint32_t j = 0; j < nk; j++) cnt[k] += c.masks[m * 4 + k][r * nk + j];
            assert_int_equal(cnt[0], 4); /* ceil(0.33 * 10) */
            assert_int_equal(cnt[1], 5);
            assert_true(cnt[2] == 1 || cnt[2] == 2); /* mean 1.3 */
            assert_true(cnt[3] >= 1 && cnt[3] <= nk);
            for (int k = 0; k < 4; k++) total[k] += cnt[k];
        }
        assert_int_equal(total[2], (size_t)floor(rows * 1.3 + 1e-9));
        if (m != method_index("baatt")) assert_true(fabs((double)total[3] - (double)thr_total) <= 1.0);
        assert_float_equal(c.rec[m * 4 + 1].sparsity, 0.5, 1e-12);
    }
    captured_free(&c);
    eval_data_free(&d);
}

/* "baatt" is the library's reference pipeline: same permutations, same keep-ratio mask, same
 * threshold mask. */
static void test_baatt_is_reference(void **state)
{
    (void)state;
    eval_data d = make("needles", 2, 512, 12);
    eval_target t[2] = {{EVAL_KEEP, 0.5}, {EVAL_THRESHOLD, 0.8}};
    captured c = run_capture(&d, 64, t, 2, 2);
    baatt_config cfg = cfg_of(&d, 64);
    uint8_t *mask = malloc(c.nb);
    int32_t *pq = malloc(sizeof(int32_t) * d.heads * d.q_len), *pk = malloc(sizeof(int32_t) * d.heads * d.kv_len);
    float *o = malloc(sizeof(float) * qn(&d));
    assert_true(mask && pq && pk && o);
    for (int k = 0; k < 2; k++) {
        if (k == 1) {
            cfg.select_mode = BAATT_SELECT_MASS_THRESHOLD;
            cfg.mass_threshold = 0.8f;
        }
        assert_int_equal(baatt_reference_baatt(&cfg, d.q, d.k, d.v, o, mask, pq, pk), BAATT_OK);
        assert_memory_equal(pq, c.pq, sizeof(int32_t) * d.heads * d.q_len);
        assert_memory_equal(pk, c.pk, sizeof(int32_t) * d.heads * d.kv_len);
        assert_memory_equal(mask, c.masks[method_index("baatt") * 2 + k], c.nb);
    }
    free(mask);
    free(pq);
    free(pk);
    free(o);
    captured_free(&c);
    eval_data_free(&d);
}

/* The one-pass metrics equal baatt_reference_metrics on baatt_reference_sparse_attention's output,
 * for a sorted method, an unsorted one and a fractional budget. */
static void test_metrics_match_reference(void **state)
{
    (void)state;
    eval_data d = make("mixture", 2, 400, 13); /* partial last block: 400 = 6 * 64 + 16 */
    eval_target t[2] = {{EVAL_SPARSITY, 0.6}, {EVAL_KEEP, 0.25}};
    captured c = run_capture(&d, 64, t, 2, 1);
    baatt_config cfg = cfg_of(&d, 64);
    float *o = malloc(sizeof(float) * qn(&d)), *od = malloc(sizeof(float) * qn(&d));
    int32_t *id_q = malloc(sizeof(int32_t) * d.heads * d.q_len), *id_k = malloc(sizeof(int32_t) * d.heads * d.kv_len);
    assert_true(o && od && id_q && id_k);
    for (uint32_t i = 0; i < d.heads * d.q_len; i++) id_q[i] = (int32_t)(i % d.q_len);
    for (uint32_t i = 0; i < d.heads * d.kv_len; i++) id_k[i] = (int32_t)(i % d.kv_len);
    assert_int_equal(baatt_reference_attention(&cfg, d.q, d.k, d.v, od), BAATT_OK);
    const char *names[] = {"baatt", "meanpool", "probe", "oracle"};
    for (int n = 0; n < 4; n++) {
        int m = method_index(names[n]), sorted = !strcmp(names[n], "baatt") || !strcmp(names[n], "oracle");
        for (int k = 0; k < 2; k++) {
            const int32_t *pq = sorted ? c.pq : id_q, *pk = sorted ? c.pk : id_k;
            const uint8_t *mask = c.masks[m * 2 + k];
            baatt_metrics want;
            assert_int_equal(baatt_reference_sparse_attention(&cfg, d.q, d.k, d.v, pq, pk, mask, o), BAATT_OK);
            assert_int_equal(baatt_reference_metrics(&cfg, d.q, d.k, d.v, mask, pq, pk, o, od, &want), BAATT_OK);
            const eval_record *r = &c.rec[m * 2 + k];
            assert_float_equal(r->mass_recall, want.mass_recall, 1e-9);
            assert_float_equal(r->sparsity, want.sparsity, 1e-12);
            assert_float_equal(r->rel_l1, want.rel_l1, 1e-5 * want.rel_l1 + 1e-7);
            assert_float_equal(r->rel_l2, want.rel_l2, 1e-5 * want.rel_l2 + 1e-7);
            assert_float_equal(r->cosine, want.cosine, 1e-7);
        }
    }
    free(o);
    free(od);
    free(id_q);
    free(id_k);
    captured_free(&c);
    eval_data_free(&d);
}

/* Top-k of the true pooled map is optimal for its blocking and budget: no method on the same
 * blocking recalls more (same per-row budgets); all blocks recall everything exactly. */
static void test_oracle_bounds(void **state)
{
    (void)state;
    const char *wl[] = {"rotary_needle", "shift", "iid"};
    eval_target t[4] = {{EVAL_SPARSITY, 0.5}, {EVAL_SPARSITY, 0.8}, {EVAL_KEEP, 0.2}, {EVAL_SPARSITY, 0}};
    for (int w = 0; w < 3; w++) {
        eval_data d = make(wl[w], 2, 512, 14);
        captured c = run_capture(&d, 32, t, 4, 2);
        const char *const *m = eval_default_methods();
        for (int i = 0; i < NM; i++) {
            int sorted = !strcmp(m[i], "baatt") || !strcmp(m[i], "baatt_sort") || !strcmp(m[i], "oracle");
            int orc = method_index(sorted ? "oracle" : "oracle_unsorted");
            for (int k = 0; k < 3; k++)
                assert_true(c.rec[i * 4 + k].mass_recall <= c.rec[orc * 4 + k].mass_recall + 1e-12);
            const eval_record *all = &c.rec[i * 4 + 3];
            assert_float_equal(all->mass_recall, 1.0, 1e-12);
            assert_float_equal(all->sparsity, 0.0, 1e-12);
            assert_true(all->rel_l1 < 1e-12 && all->rel_l2 < 1e-12);
            assert_float_equal(all->cosine, 1.0, 1e-12);
        }
        captured_free(&c);
        eval_data_free(&d);
    }
}

/* Threads split the heads; the reduction runs in head order, so results are bit-identical. */
static void test_threads_deterministic(void **state)
{
    (void)state;
    eval_data d = make("sinks", 3, 256, 15);
    eval_target t[2] = {{EVAL_SPARSITY, 0.75}, {EVAL_THRESHOLD, 0.95}};
    captured a = run_capture(&d, 64, t, 2, 1), b = run_capture(&d, 64, t, 2, 3);
    for (uint32_t i = 0; i < a.n; i++) {
        assert_string_equal(a.rec[i].method, b.rec[i].method);
        assert_memory_equal(&a.rec[i].keep, &b.rec[i].keep, 6 * sizeof(double));
    }
    captured_free(&a);
    captured_free(&b);
    eval_data_free(&d);
}

/* baatt_auto's mask of every head is baatt's (sorted) or baatt_cov's (original order) - it only
 * picks a blocking - and oracle_best recalls at least as much as both oracles. */
static void test_auto_variants(void **state)
{
    (void)state;
    static const char *const ms[] = {"baatt", "baatt_cov", "baatt_auto", "oracle", "oracle_unsorted", "oracle_best"};
    eval_data d = make("mixture", 5, 512, 16);
    eval_target t[3] = {{EVAL_SPARSITY, 0.5}, {EVAL_SPARSITY, 0.9}, {EVAL_KEEP, 0.3}};
    captured c = run_methods(&d, 64, t, 3, 2, ms, 6);
    uint32_t per_head = c.nb / d.heads;
    for (uint32_t k = 0; k < 3; k++) {
        for (uint32_t h = 0; h < d.heads; h++) {
            const uint8_t *a = c.masks[2 * 3 + k] + h * per_head;
            assert_true(!memcmp(a, c.masks[0 * 3 + k] + h * per_head, per_head) ||
                        !memcmp(a, c.masks[1 * 3 + k] + h * per_head, per_head));
        }
        double best = c.rec[5 * 3 + k].mass_recall;
        assert_true(best >= c.rec[3 * 3 + k].mass_recall - 1e-12 && best >= c.rec[4 * 3 + k].mass_recall - 1e-12);
        assert_true(c.rec[2 * 3 + k].sorted_heads >= 0 && c.rec[2 * 3 + k].sorted_heads <= 1);
    }
    captured_free(&c);
    eval_data_free(&d);
}

/* baatt_auto measures the library's default (BAATT_SORT_AUTO, BAATT_COVARIANCE_AUTO) and
 * baatt_auto_blk the blocking-only rule (covariance on): at a keep ratio, every head keeps the
 * candidate baatt_reference_auto_choice chooses, so its mask is that of baatt (sorted, lambda 1),
 * baatt_cov (original, 1), baatt_sort (sorted, 0) or meanpool (original, 0). On the shift workload
 * (seed 17) one of the 8 heads takes lambda 0 and one the sorted blocking; the test asserts that
 * the lambda choice is not the same on every head, so a rule that ignored it would fail. */
static void test_auto_is_library_rule(void **state)
{
    (void)state;
    static const char *const ms[] = {"baatt", "baatt_cov", "baatt_sort", "meanpool", "baatt_auto", "baatt_auto_blk"};
    eval_data d = make("shift", 8, 512, 17);
    eval_target t = {EVAL_KEEP, 0.5};
    captured c = run_methods(&d, 64, &t, 1, 2, ms, 6);
    uint32_t per_head = c.nb / d.heads;
    for (int rule = 0; rule < 2; rule++) { /* 0: baatt_auto, 1: baatt_auto_blk */
        baatt_config cfg = cfg_of(&d, 64);
        cfg.norm_sort = BAATT_SORT_AUTO, cfg.covariance = rule ? BAATT_COVARIANCE_ON : BAATT_COVARIANCE_AUTO;
        uint8_t sorted[8], cov[8];
        assert_int_equal(baatt_reference_auto_choice(&cfg, d.q, d.k, sorted, cov), BAATT_OK);
        uint32_t n_sorted = 0, n_cov = 0;
        for (uint32_t h = 0; h < d.heads; h++) {
            const uint8_t *want = c.masks[(sorted[h] ? 0 : 1) + (cov[h] ? 0 : 2)] + h * per_head;
            assert_memory_equal(c.masks[4 + rule] + h * per_head, want, per_head);
            n_sorted += sorted[h], n_cov += cov[h];
        }
        assert_float_equal(c.rec[4 + rule].sorted_heads, n_sorted / (double)d.heads, 1e-12);
        if (rule) assert_int_equal(n_cov, d.heads);
        else assert_true(n_cov > 0 && n_cov < d.heads);
    }
    uint8_t sorted_blk[8];
    baatt_config cfg = cfg_of(&d, 64); /* auto_sorted: norm_sort AUTO whatever cfg says, cfg's lambda */
    assert_int_equal(baatt_reference_auto_sorted(&cfg, d.q, d.k, sorted_blk), BAATT_OK);
    for (uint32_t h = 0; h < d.heads; h++)
        assert_memory_equal(c.masks[5] + h * per_head, c.masks[sorted_blk[h] ? 0 : 1] + h * per_head, per_head);
    captured_free(&c);
    eval_data_free(&d);
}

/* A tie keeps the sorted blocking, as in the library: with one block per side both blockings
 * select the same keys, so their recalls are bit-identical, and every head stays sorted. */
static void test_auto_tie_keeps_sorted(void **state)
{
    (void)state;
    static const char *const ms[] = {"baatt_auto", "oracle_best"};
    eval_data d = make("clustered", 3, 64, 18);
    eval_target t = {EVAL_KEEP, 1.0};
    captured c = run_methods(&d, 64, &t, 1, 1, ms, 2);
    assert_float_equal(c.rec[0].sorted_heads, 1.0, 0);
    assert_float_equal(c.rec[1].sorted_heads, 1.0, 0);
    baatt_config cfg = cfg_of(&d, 64);
    uint8_t sorted[3] = {0, 0, 0};
    assert_int_equal(baatt_reference_auto_sorted(&cfg, d.q, d.k, sorted), BAATT_OK);
    for (int h = 0; h < 3; h++) assert_int_equal(sorted[h], 1);
    assert_int_equal(baatt_auto_pick((const double[2]){0.5, 0.5}, 2), 0); /* sorted, original */
    assert_int_equal(baatt_auto_pick((const double[2]){0.5, 0.5000001}, 2), 1);
    /* the general rule: strictly greater wins, ties and NaN keep the earlier candidate */
    assert_int_equal(baatt_auto_pick((const double[4]){0.5, 0.5, 0.5, 0.5}, 4), 0);
    assert_int_equal(baatt_auto_pick((const double[4]){0.5, 0.6, 0.6, 0.55}, 4), 1);
    assert_int_equal(baatt_auto_pick((const double[4]){0.5, NAN, 0.7, NAN}, 4), 2);
    assert_int_equal(baatt_auto_pick((const double[2]){NAN, 0.9}, 2), 0);
    captured_free(&c);
    eval_data_free(&d);
}

/* The issue 17 item 5 variants: scoring the heaviest sampled keys alone lifts the original-order
 * estimate where a few keys take most of the mass (the sinks workload's sink and stripes: 0.933 ->
 * 0.956 at seed 19), and the eight-way per-head choice never beats oracle_best, the exact best
 * selection of either blocking at the same per-row budgets. */
static void test_split_variants(void **state)
{
    (void)state;
    static const char *const ms[] = {"baatt_cov", "cov_split", "baatt_auto_split", "oracle_best"};
    eval_data d = make("sinks", 4, 512, 19);
    eval_target t[2] = {{EVAL_SPARSITY, 0.5}, {EVAL_KEEP, 0.25}};
    captured c = run_methods(&d, 64, t, 2, 2, ms, 4);
    assert_true(c.rec[1 * 2 + 0].mass_recall > c.rec[0 * 2 + 0].mass_recall + 0.01);
    for (uint32_t k = 0; k < 2; k++) {
        assert_true(c.rec[2 * 2 + k].mass_recall <= c.rec[3 * 2 + k].mass_recall + 1e-12);
        assert_float_equal(c.rec[2 * 2 + k].keep, c.rec[0 * 2 + k].keep, 1e-12);
    }
    captured_free(&c);
    eval_data_free(&d);
}

static void test_bad_options(void **state)
{
    (void)state;
    eval_data d = make("iid", 1, 128, 1);
    eval_target t = {EVAL_SPARSITY, 1.0};
    const char *bad[] = {"nope"};
    eval_options o = {0};
    o.block_size = 64;
    o.targets = &t;
    o.n_targets = 1;
    eval_record *rec = NULL;
    uint32_t n;
    char msg[256];
    assert_int_equal(eval_run(&d, &o, &rec, &n, msg, sizeof msg), BAATT_ERROR_INVALID_ARGUMENT); /* sparsity 1 */
    t.value = 0.5;
    o.block_size = 48;
    assert_int_equal(eval_run(&d, &o, &rec, &n, msg, sizeof msg), BAATT_ERROR_UNSUPPORTED_BLOCK_SIZE);
    o.block_size = 64;
    o.methods = bad;
    o.n_methods = 1;
    assert_int_equal(eval_run(&d, &o, &rec, &n, msg, sizeof msg), BAATT_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "nope"));
    assert_null(rec);
    eval_data_free(&d);
}

/* ---------------------------------------------------------------------------------------------
 * Drift and selection reuse (issue 17).
 * ------------------------------------------------------------------------------------------- */

/* Mean over tokens of the cosine between x and y ([n, d] rows), and the ratio of their mean
 * squared norms. */
static void row_stats(const float *x, const float *y, size_t n, uint32_t d, double *cos_mean, double *norm_ratio)
{
    double cs = 0, nx = 0, ny = 0;
    for (size_t i = 0; i < n; i++) {
        double xy = 0, xx = 0, yy = 0;
        for (uint32_t a = 0; a < d; a++) {
            xy += (double)x[i * d + a] * y[i * d + a];
            xx += (double)x[i * d + a] * x[i * d + a];
            yy += (double)y[i * d + a] * y[i * d + a];
        }
        cs += xy / sqrt(xx * yy);
        nx += xx;
        ny += yy;
    }
    *cos_mean = cs / n;
    *norm_ratio = ny / nx;
}

/* The drift model does what workloads.h says: e = 0 changes nothing; the same (seed, step) draws the
 * same noise, for any head count; after t steps a token keeps correlation (1 - e^2)^(t/2) with step 0
 * and its squared norm on average; padded columns stay zero. */
static void test_drift_model(void **state)
{
    (void)state;
    eval_data d0 = make("clustered", 3, 512, 21), a, b, one;
    assert_int_equal(eval_data_copy(&d0, &a), BAATT_OK);
    assert_int_equal(eval_data_drift(&a, 0, 1, 1), BAATT_OK);
    assert_memory_equal(a.q, d0.q, qn(&d0) * sizeof(float));
    assert_int_equal(eval_data_drift(&a, 0.1, 1, 0), BAATT_ERROR_INVALID_ARGUMENT); /* steps count from 1 */
    assert_int_equal(eval_data_drift(&a, 1.5, 1, 1), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(eval_data_copy(&d0, &b), BAATT_OK);
    for (uint32_t t = 1; t <= 8; t++) {
        assert_int_equal(eval_data_drift(&a, 0.2, 5, t), BAATT_OK);
        assert_int_equal(eval_data_drift(&b, 0.2, 5, t), BAATT_OK);
    }
    assert_memory_equal(a.q, b.q, qn(&d0) * sizeof(float));
    assert_memory_equal(a.k, b.k, kn(&d0) * sizeof(float));
    assert_memory_equal(a.v, b.v, kn(&d0) * sizeof(float));
    double want = pow(1 - 0.2 * 0.2, 4), cs, nr;
    const float *x0[] = {d0.q, d0.k, d0.v}, *x8[] = {a.q, a.k, a.v};
    for (int i = 0; i < 3; i++) {
        row_stats(x0[i], x8[i], (size_t)d0.heads * d0.q_len, d0.head_dim, &cs, &nr);
        assert_float_equal(cs, want, 0.01);
        assert_float_equal(nr, 1.0, 0.03);
    }
    assert_int_equal(eval_data_drift(&b, 0.2, 6, 9), BAATT_OK); /* another seed: other noise */
    assert_true(memcmp(a.q, b.q, qn(&d0) * sizeof(float)) != 0);
    one = make("clustered", 1, 512, 21); /* head 0 drifts alike with 1 or 3 heads */
    for (uint32_t t = 1; t <= 8; t++) assert_int_equal(eval_data_drift(&one, 0.2, 5, t), BAATT_OK);
    assert_memory_equal(one.q, a.q, qn(&one) * sizeof(float));
    eval_data_free(&b);
    assert_int_equal(eval_data_copy(&d0, &b), BAATT_OK); /* columns 32.. as padding */
    b.valid_dim = 32;
    for (size_t i = 0; i < qn(&b); i++)
        if (i % 64 >= 32) b.q[i] = 0;
    assert_int_equal(eval_data_drift(&b, 0.3, 1, 1), BAATT_OK);
    for (size_t i = 0; i < qn(&b); i++)
        if (i % 64 >= 32) assert_float_equal(b.q[i], 0, 0);
    eval_data_free(&d0);
    eval_data_free(&a);
    eval_data_free(&b);
    eval_data_free(&one);
}

static eval_options reuse_options(const eval_target *t, uint32_t nt, const char *const *methods, uint32_t nm)
{
    eval_options o = {0};
    o.block_size = 64;
    o.targets = t;
    o.n_targets = nt;
    o.methods = methods;
    o.n_methods = nm;
    o.threads = 2;
    return o;
}

/* A captured selection measured on the inputs it was made on gives back the selecting run's
 * records bit for bit, for every method (the auto choice, the sorted and the original blockings,
 * threshold masks); a capture of another shape is refused. */
static void test_reuse_same_inputs(void **state)
{
    (void)state;
    static const char *const ms[] = {"baatt", "baatt_cov", "meanpool", "probe", "oracle", "baatt_auto", "oracle_best"};
    eval_data d = make("mixture", 5, 448, 22);
    eval_target t[3] = {{EVAL_KEEP, 0.3}, {EVAL_SPARSITY, 0.6}, {EVAL_THRESHOLD, 0.9}};
    eval_options o = reuse_options(t, 3, ms, 7);
    o.outputs = 1;
    eval_selection sel = {0};
    eval_record *a = NULL, *b = NULL;
    uint32_t na, nb;
    char msg[256];
    o.reuse_out = &sel;
    assert_int_equal(eval_run(&d, &o, &a, &na, msg, sizeof msg), BAATT_OK);
    assert_int_equal(sel.ns, 21);
    o.reuse_out = NULL;
    o.reuse_in = &sel;
    assert_int_equal(eval_run(&d, &o, &b, &nb, msg, sizeof msg), BAATT_OK);
    assert_int_equal(na, nb);
    for (uint32_t i = 0; i < na; i++) {
        assert_string_equal(a[i].method, b[i].method);
        assert_memory_equal(&a[i].keep, &b[i].keep, 7 * sizeof(double)); /* keep .. sorted_heads */
    }
    free(b);
    o.n_targets = 2; /* another slot count */
    assert_int_equal(eval_run(&d, &o, &b, &nb, msg, sizeof msg), BAATT_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "reused selection"));
    eval_data small = make("mixture", 5, 384, 22);
    o.n_targets = 3;
    assert_int_equal(eval_run(&small, &o, &b, &nb, msg, sizeof msg), BAATT_ERROR_INVALID_ARGUMENT);
    free(a);
    eval_selection_free(&sel);
    eval_data_free(&d);
    eval_data_free(&small);
}

/* The study: without drift reuse loses nothing at any step; at step 0 the reused selection is the
 * fresh one; under drift (0.3 per step, fixed seed) the reused selection's recall falls with every
 * step it is kept (1, 2, 4, 8), and so does it against the fresh selection of the same step (the
 * loss grows; at step 1 it is about 0 and may be negative: the fresh blocking is not optimal). */
static void test_reuse_study(void **state)
{
    (void)state;
    static const char *const ms[] = {"baatt", "meanpool", "oracle"};
    eval_data d = make("clustered", 4, 512, 23);
    eval_target t = {EVAL_KEEP, 0.25};
    eval_options o = reuse_options(&t, 1, ms, 3);
    double drifts[2] = {0, 0.3};
    eval_reuse_record *rec = NULL;
    uint32_t n = 0, steps = 8, ns = 3;
    char msg[256];
    assert_int_equal(eval_reuse_run(&d, &o, drifts, 2, steps, 1, &rec, &n, msg, sizeof msg), BAATT_OK);
    assert_int_equal(n, 2 * (steps + 1) * ns);
    for (uint32_t e = 0; e < 2; e++)
        for (uint32_t s = 0; s <= steps; s++)
            for (uint32_t m = 0; m < ns; m++) {
                const eval_reuse_record *r = &rec[(e * (steps + 1) + s) * ns + m];
                assert_int_equal(r->step, s);
                assert_float_equal(r->drift, drifts[e], 0);
                assert_string_equal(r->fresh.method, ms[m]);
                if (e == 0 || s == 0) {
                    assert_float_equal(r->reused.mass_recall, r->fresh.mass_recall, 0);
                    assert_float_equal(r->fresh.mass_recall, rec[(e * (steps + 1)) * ns + m].fresh.mass_recall, 0);
                }
            }
    static const uint32_t lags[] = {0, 1, 2, 4, 8};
    for (uint32_t m = 0; m < ns; m += 2) { /* baatt, oracle (meanpool finds no structure here: noise) */
        const eval_reuse_record *r = rec + (steps + 1) * ns + m; /* drift 0.3, step 0 */
        for (int i = 1; i < 5; i++) {
            const eval_reuse_record *x = r + lags[i] * ns, *p = r + lags[i - 1] * ns;
            assert_true(x->reused.mass_recall < p->reused.mass_recall);
            assert_true(x->fresh.mass_recall - x->reused.mass_recall > p->fresh.mass_recall - p->reused.mass_recall);
        }
        assert_true(r[8 * ns].fresh.mass_recall - r[8 * ns].reused.mass_recall > 0.01);
    }
    free(rec);
    drifts[1] = 1.5;
    assert_int_equal(eval_reuse_run(&d, &o, drifts, 2, steps, 1, &rec, &n, msg, sizeof msg),
                     BAATT_ERROR_INVALID_ARGUMENT);
    eval_data_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workloads_deterministic),
        cmocka_unit_test(test_workloads_head_stable),
        cmocka_unit_test(test_workloads_bad_arguments),
        cmocka_unit_test(test_workloads_structure),
        cmocka_unit_test(test_npy_load_pad),
        cmocka_unit_test(test_mask_counts),
        cmocka_unit_test(test_baatt_is_reference),
        cmocka_unit_test(test_metrics_match_reference),
        cmocka_unit_test(test_oracle_bounds),
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_auto_variants),
        cmocka_unit_test(test_auto_is_library_rule),
        cmocka_unit_test(test_auto_tie_keeps_sorted),
        cmocka_unit_test(test_split_variants),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_drift_model),
        cmocka_unit_test(test_reuse_same_inputs),
        cmocka_unit_test(test_reuse_study),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
