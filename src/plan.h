/* A plan's internals, shared by plan.c (lifecycle, top-level recording, host path), record.c
 * (dispatch, barriers, timestamps), readback.c (results) and the stages in src/stages/. */
#ifndef BAATT_PLAN_H
#define BAATT_PLAN_H

#include "choice.h"
#include "runtime.h"

/* The push-constant block of interface.h, as C. */
#define PUSH_U(name) uint32_t name;
#define PUSH_F(name) float name;
typedef struct baatt_push {
    BAATT_PUSH_FIELDS(PUSH_U, PUSH_F)
} baatt_push;
#undef PUSH_U
#undef PUSH_F
_Static_assert(sizeof(baatt_push) <= BAATT_PUSH_BYTES, "push constants exceed the layout's range");

/* Every pipeline a plan may use; also the kinds of the dispatch profile (record.c's names). */
typedef enum baatt_kernel {
    K_SORT_KEYS,
    K_SORT_LOCAL,
    K_SORT_GLOBAL,
    K_RADIX_HIST,
    K_RADIX_SCAN,
    K_RADIX_SCATTER,
    K_SORT_PERM,
    K_STATS,
    K_SCORE,
    K_SELECT,
    K_AUTO_RECALL,
    K_AUTO_CHOOSE,
    K_PERMUTE,
    K_ATTEND,
    K_COUNT
} baatt_kernel;

/* Timestamps: one per stage mark, plus one per dispatch with tuning.profile. */
typedef struct baatt_timing {
    VkQueryPool pool;
    uint32_t max;  /* queries in pool: every mark one recording writes */
    uint32_t n;    /* timestamps written by the last recording */
    int8_t *stage; /* [max] stage of the interval ending at timestamp i */
    uint8_t *kind; /* [max] kernel of a dispatch mark */
    int profile;
    uint32_t recorded, profiled; /* recordings made; the last one whose marks were summed */
    uint32_t runs, marks;        /* runs summed into ms; dispatch marks in this recording */
    double ms[K_COUNT];          /* per kernel, summed over runs */
    uint32_t count[K_COUNT];
} baatt_timing;

struct baatt_plan {
    baatt_context *ctx;
    baatt_config cfg;
    baatt_tuning tuning;
    baatt_choice ch;
    baatt_push base;              /* the push constants every dispatch starts from */
    baatt_buffer buf[BIND_COUNT]; /* scratch by binding; below BIND_FIRST_SCRATCH unused */
    VkPipeline pipe[K_COUNT];
    baatt_buffer host[4], staging; /* run_host only: Q, K, V, O, created on first use */
    VkDescriptorPool dpool;
    VkDescriptorSet set;
    baatt_timing timing;
    int ran;
    int reuse;             /* baatt_plan_set_reuse: runs attend on the held selection */
    int held;              /* the selection on the device: 0 none, or a baatt_held */
    uint8_t *given_sorted; /* [bhkv] of a given selection: 1 where its perm_k is not the identity */
    int lse_here;          /* cfg.lse: the last recording wrote the LSE to buf[BIND_LSE] (not the caller's) */
    uint32_t khr_rg;       /* KHR attention: the register softmax's row-group lanes from the context's
                              layout probe (0: softmax in shared memory) */
};

/* Where the selection a plan holds came from. */
typedef enum baatt_held { BAATT_HELD_ESTIMATED = 1, BAATT_HELD_GIVEN = 2 } baatt_held;

/* A recording in progress. */
typedef struct baatt_rec {
    baatt_plan *p;
    VkCommandBuffer cmd;
} baatt_rec;

/* Bytes of the Q (and O) and of the K (and V) tensors. */
void baatt_plan_tensor_bytes(const baatt_plan *p, uint64_t *q, uint64_t *kv);
/* Bytes of the log-sum-exp: a float per query row. */
uint64_t baatt_plan_lse_bytes(const baatt_plan *p);

/* ---- creation helpers (plan.c) ---- */
/* The register softmax's row groups for the KHR kernel's M x N fp32 accumulator at subgroup sg
 * (baatt_khr_layout_classify), probed once per context (attend.c); rg 0: the softmax goes through
 * shared memory. */
baatt_status baatt_khr_layout(baatt_context *ctx, baatt_mma_shape s, uint32_t sg, uint32_t *rg, uint32_t *rep);
/* Device scratch for binding (bytes, checked against the device's buffer range). */
baatt_status baatt_plan_scratch(baatt_plan *p, int binding, uint64_t bytes, const char *what);
/* Pipeline kernel from shader variant with specialization constants 0..n-1. */
baatt_status baatt_plan_pipeline(baatt_plan *p, baatt_kernel kernel, const char *variant, const uint32_t *spec,
                                 uint32_t n);
/* ... created with a required subgroup size and full subgroups (0: the driver's size). */
baatt_status baatt_plan_pipeline_pinned(baatt_plan *p, baatt_kernel kernel, const char *variant, const uint32_t *spec,
                                        uint32_t n, uint32_t subgroup);

/* ---- recording (record.c) ---- */
void baatt_dispatch(baatt_rec *r, baatt_kernel k, const baatt_push *pc, uint32_t x, uint32_t y, uint32_t z);
void baatt_barrier(baatt_rec *r);
void baatt_mark(baatt_rec *r, int stage); /* closes the interval of stage with a timestamp (-1: start) */
void baatt_record_begin(baatt_rec *r);    /* resets the queries and binds the descriptor set */
baatt_status baatt_timing_create(baatt_plan *p, uint64_t stage_marks);
void baatt_timing_destroy(baatt_plan *p);
void baatt_timing_read(baatt_plan *p, baatt_run_stats *st);

/* ---- stages (src/stages/): scratch and pipelines, then recording ---- */
baatt_status baatt_sort_create(baatt_plan *p);
void baatt_sort_record(baatt_rec *r, uint32_t which); /* which: 0 Q, 1 K */
baatt_status baatt_stats_create(baatt_plan *p);
/* identity: original-order blocks; cov: lambda * t^2 / 2 of the Q features (the lambda the logits get) */
void baatt_stats_record(baatt_rec *r, uint32_t identity, float cov);
/* The Q features again with another lambda (a further candidate on the same blocking) */
void baatt_stats_record_lambda(baatt_rec *r, uint32_t identity, float cov);
baatt_status baatt_score_select_create(baatt_plan *p);
void baatt_score_select_record(baatt_rec *r, uint32_t slot); /* into mask slot `slot` */
uint64_t baatt_score_select_chunks(const baatt_plan *p);
baatt_status baatt_auto_sort_create(baatt_plan *p);
/* BIND_AUTO holds the sampled recalls [bh][samples][candidates], then the chosen candidate of each
 * kv head [bhkv]: the byte offset of that record. */
uint64_t baatt_auto_choice_offset(const baatt_plan *p);
void baatt_auto_sort_record(baatt_rec *r);
baatt_status baatt_attend_create(baatt_plan *p);
void baatt_attend_record(baatt_rec *r);

/* ---- the held selection (selection.c): reuse across runs, given selections ---- */
void baatt_selection_destroy(baatt_plan *p);
int baatt_selection_reused(const baatt_plan *p);       /* the next recording attends on the held selection */
baatt_status baatt_selection_check_run(baatt_plan *p); /* NO_SELECTION: reuse on, nothing held */
void baatt_selection_recorded(baatt_plan *p);          /* after a recording: an estimate is now held */

#endif
