/* Threads (baatt.h, "Threads"): many threads x many runs on one shared context (a plan per thread,
 * plans created concurrently) and on a context per thread, every output bitwise equal to a
 * single-thread run of the same plan on the same inputs, outputs poisoned before each run; failing
 * calls from several threads each read their own message. CI also runs this file under
 * ThreadSanitizer (.ci/run). Usage: test_threads [runs per thread] (default 12). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "internal.h"

enum { THREADS = 6, NCFG = 2 };
static int g_runs = 12;

typedef struct job {
    baatt_config cfg;
    void *q, *k, *v;
    size_t qn, kn;
    void *want; /* the single-thread output */
} job;
static job g_jobs[NCFG];

static baatt_config make_cfg(int which)
{
    baatt_config c = baatt_config_default();
    c.batch = 1;
    c.heads = 4;
    c.kv_heads = 2;
    c.q_len = 200;
    c.kv_len = 300;
    c.head_dim = 64;
    c.block_size = 32;
    if (which == 1) c.dense = 1, c.dtype = BAATT_DTYPE_F16, c.head_dim = 128, c.q_len = 97;
    return c;
}

static size_t out_bytes(const job *j) { return j->qn * baatt_dtype_size(j->cfg.dtype); }

/* One run of plan on job j into a poisoned buffer; 1 when it succeeded and matched bitwise. */
static int run_matches(baatt_plan *plan, const job *j, void *o)
{
    th_poison(o, j->cfg.dtype, j->qn);
    if (baatt_plan_run_host(plan, j->q, j->k, j->v, o) != BAATT_OK) return 0;
    return !memcmp(o, j->want, out_bytes(j));
}

/* The reference outputs: one thread, one context; the dense one also against the CPU. */
static int setup(void **state)
{
    (void)state;
    th_ctx = th_context();
    uint64_t rng = th_seed();
    for (int i = 0; i < NCFG; i++) {
        job *j = &g_jobs[i];
        j->cfg = make_cfg(i);
        j->qn = (size_t)j->cfg.batch * j->cfg.heads * j->cfg.q_len * j->cfg.head_dim;
        j->kn = (size_t)j->cfg.batch * j->cfg.kv_heads * j->cfg.kv_len * j->cfg.head_dim;
        j->q = th_random_tensor(&rng, j->cfg.dtype, j->qn, 1.0f);
        j->k = th_random_tensor(&rng, j->cfg.dtype, j->kn, 1.0f);
        j->v = th_random_tensor(&rng, j->cfg.dtype, j->kn, 1.0f);
        j->want = malloc(out_bytes(j));
        th_poison(j->want, j->cfg.dtype, j->qn);
        baatt_plan *plan = NULL;
        assert_int_equal(baatt_plan_create(th_ctx, &j->cfg, &plan), BAATT_OK);
        assert_int_equal(baatt_plan_run_host(plan, j->q, j->k, j->v, j->want), BAATT_OK);
        baatt_plan_destroy(plan);
    }
    const job *d = &g_jobs[1];
    th_check_dense(&d->cfg, d->q, d->k, d->v, d->want, "single-thread dense");
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < NCFG; i++) free(g_jobs[i].q), free(g_jobs[i].k), free(g_jobs[i].v), free(g_jobs[i].want);
    return th_group_teardown(state);
}

typedef struct worker {
    pthread_t thread;
    int index;
    baatt_context *ctx; /* shared, or NULL: the worker opens its own */
    int runs, matched;
    baatt_status status; /* the first failure */
    char message[256];
} worker;

static void note(worker *w, baatt_status s, baatt_context *ctx)
{
    if (s && !w->status) {
        w->status = s;
        snprintf(w->message, sizeof w->message, "%s", baatt_context_error(ctx));
    }
}

/* Creates both plans (concurrently with the other workers), then alternates their runs. */
static void *work(void *arg)
{
    worker *w = arg;
    baatt_context *ctx = w->ctx;
    if (!ctx) {
        baatt_context_options o = baatt_context_options_default();
        note(w, baatt_context_create(&o, &ctx), ctx);
        if (w->status) {
            baatt_context_destroy(ctx);
            return NULL;
        }
    }
    baatt_plan *plans[NCFG] = {NULL};
    void *o[NCFG] = {NULL};
    for (int i = 0; i < NCFG && !w->status; i++) {
        note(w, baatt_plan_create(ctx, &g_jobs[i].cfg, &plans[i]), ctx);
        o[i] = malloc(out_bytes(&g_jobs[i]));
    }
    for (int r = 0; r < g_runs && !w->status; r++) {
        int i = (r + w->index) % NCFG;
        w->runs++;
        w->matched += run_matches(plans[i], &g_jobs[i], o[i]);
        if (w->runs != w->matched && !w->status) note(w, BAATT_ERROR_VULKAN, ctx);
    }
    for (int i = 0; i < NCFG; i++) baatt_plan_destroy(plans[i]), free(o[i]);
    if (!w->ctx) {
        if (baatt_context_validation_messages(ctx)) note(w, BAATT_ERROR_VULKAN, ctx);
        baatt_context_destroy(ctx);
    }
    return NULL;
}

static void run_workers(baatt_context *shared)
{
    worker w[THREADS];
    memset(w, 0, sizeof w);
    for (int t = 0; t < THREADS; t++) {
        w[t].index = t;
        w[t].ctx = shared;
        assert_int_equal(pthread_create(&w[t].thread, NULL, work, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(w[t].thread, NULL);
    for (int t = 0; t < THREADS; t++) {
        if (w[t].status || w[t].matched != g_runs)
            fprintf(stderr, "thread %d: %d of %d runs matched; %s: %s\n", t, w[t].matched, g_runs,
                    baatt_status_string(w[t].status), w[t].message);
        assert_int_equal(w[t].status, BAATT_OK);
        assert_int_equal(w[t].matched, g_runs);
    }
}

/* A fresh context: its pipeline cache starts empty, so the workers build and insert pipelines
 * concurrently too. */
static void one_context_many_threads(void **s)
{
    (void)s;
    baatt_context *ctx = th_context();
    run_workers(ctx);
    th_context_done(ctx);
}

static void context_per_thread(void **s)
{
    (void)s;
    run_workers(NULL);
}

/* Concurrent failures: each thread's baatt_context_error names its own bad head_dim. */
typedef struct failer {
    pthread_t thread;
    int index, wrong;
} failer;

static void *fail_often(void *arg)
{
    failer *f = arg;
    baatt_config c = make_cfg(0);
    c.head_dim = 1000 + (uint32_t)f->index;
    char want[64];
    snprintf(want, sizeof want, "head_dim %u ", c.head_dim);
    for (int r = 0; r < 200; r++) {
        baatt_plan *plan = NULL;
        if (baatt_plan_create(th_ctx, &c, &plan) != BAATT_ERROR_UNSUPPORTED_HEAD_DIM ||
            !strstr(baatt_context_error(th_ctx), want))
            f->wrong++;
    }
    return NULL;
}

static void errors_per_thread(void **s)
{
    (void)s;
    failer f[THREADS];
    memset(f, 0, sizeof f);
    for (int t = 0; t < THREADS; t++) {
        f[t].index = t;
        assert_int_equal(pthread_create(&f[t].thread, NULL, fail_often, &f[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(f[t].thread, NULL);
    for (int t = 0; t < THREADS; t++) assert_int_equal(f[t].wrong, 0);
    /* another thread's view: the context's latest failure, one of the workers' */
    assert_non_null(strstr(baatt_context_error(th_ctx), "head_dim 100"));
}

int main(int argc, char **argv)
{
    if (argc > 1) g_runs = atoi(argv[1]) > 0 ? atoi(argv[1]) : g_runs;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_context_many_threads),
        cmocka_unit_test(context_per_thread),
        cmocka_unit_test(errors_per_thread),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
