/* Path choice as data: what a device offers (baatt_caps), what the caller tunes (baatt_tuning)
 * and what a plan runs (baatt_choice), related by one pure function, baatt_choose. Each stage's
 * part of the choice is made in its own file (src/stages/); baatt_choose calls them in the order
 * of their inputs. Nothing here touches Vulkan, so tests run it on described devices. */
#ifndef BAATT_CHOICE_H
#define BAATT_CHOICE_H

#include "baatt.h"
#include "internal.h" /* baatt_auto_cands */

/* Shader variants that only a newer glslang builds: which ones this library holds. */
enum {
    BAATT_BUILT_CM2_F16 = 1u << 1,   /* attention_cm2_f16 and attention_cm2_sorted_f16 */
    BAATT_BUILT_CM2_BF16 = 1u << 2,  /* attention_cm2_bf16 and attention_cm2_sorted_bf16 */
    BAATT_BUILT_SCORE_CM2 = 1u << 3, /* score_cm2 */
    BAATT_BUILT_KHR_F16 = 1u << 4,   /* attention_khr_f16 and attention_khr_sorted_f16 */
    BAATT_BUILT_KHR_BF16 = 1u << 5,  /* attention_khr(_sorted)_bf16 (glslang >= 16: GL_EXT_bfloat16) */
};

/* A KHR cooperative-matrix shape the device lists at subgroup scope with fp32 accumulation
 * (vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR): M x N x K, A and B fp16 or bf16. */
typedef struct baatt_mma_shape {
    uint8_t m, n, k;
    uint8_t bf16; /* A and B bf16 (else fp16) */
    uint8_t c16;  /* fp16 A and B: the device also lists an M x N fp16 accumulator (P converts to it) */
} baatt_mma_shape;
#define BAATT_MAX_MMA_SHAPES 16

/* What the choice needs to know of a device (the context fills it; tests describe devices). */
typedef struct baatt_caps {
    char name[64];
    uint32_t features;                   /* BAATT_FEATURE_* enabled on the device */
    uint32_t built;                      /* BAATT_BUILT_* variants in this library */
    uint32_t subgroup_size;              /* the reported size */
    uint32_t subgroup_min, subgroup_max; /* the range a pipeline may get (subgroup size control) */
    int subgroup_arith;                  /* basic + arithmetic subgroup operations in compute shaders */
    int subgroup_ballot;                 /* ... and ballots */
    uint32_t max_shared;                 /* maxComputeSharedMemorySize, bytes */
    uint32_t max_invocations;            /* maxComputeWorkGroupInvocations */
    uint32_t max_groups[3];              /* maxComputeWorkGroupCount */
    uint64_t max_buffer;                 /* maxStorageBufferRange */
    uint32_t nshapes;                    /* KHR cooperative-matrix shapes (BAATT_FEATURE_COOPMAT_KHR) */
    baatt_mma_shape shapes[BAATT_MAX_MMA_SHAPES];
} baatt_caps;

/* Per-stage paths. In a tuning, a value caps the path (AUTO: the best one): a plan takes the
 * best path at or below it that the device, the build and the config allow. */
typedef enum baatt_attend_path {
    BAATT_ATTEND_AUTO = 0,
    BAATT_ATTEND_PORTABLE, /* attention.comp: any device, fp32/fp16/bf16 */
    BAATT_ATTEND_KHR,      /* attention_khr.comp: KHR cooperative matrix (any vendor), fp16/bf16 */
    BAATT_ATTEND_CM2,      /* attention_cm2.comp: NV cooperative matrix 2, fp16/bf16 */
    BAATT_ATTEND_COUNT
} baatt_attend_path;
typedef enum baatt_sort_path {
    BAATT_SORTER_AUTO = 0, /* radix from tuning.radix_min keys where the device can */
    BAATT_SORTER_NONE,     /* not sorted (dense plans, sorting off) */
    BAATT_SORTER_BITONIC,  /* sort_local/sort_global: any device */
    BAATT_SORTER_RADIX,    /* sort_radix: subgroup ballots; in a tuning, at any length */
    BAATT_SORTER_COUNT
} baatt_sort_path;
typedef enum baatt_score_path {
    BAATT_SCORE_AUTO = 0,
    BAATT_SCORE_SCALAR, /* score.comp: fp32 */
    BAATT_SCORE_CM2,    /* score_cm2.comp: bf16 hi/lo parts on cooperative matrix 2 */
    BAATT_SCORE_COUNT
} baatt_score_path;
typedef enum baatt_select_path {
    BAATT_SELECTOR_AUTO = 0,
    BAATT_SELECTOR_SHARED,   /* select: a workgroup per row, shared-memory reductions */
    BAATT_SELECTOR_SUBGROUP, /* select_sg: a workgroup per row, subgroup reductions */
    BAATT_SELECTOR_ROW,      /* select_row: a subgroup per row (keep-ratio mode) */
    BAATT_SELECTOR_COUNT
} baatt_select_path;

/* How a plan may run, beyond what its config says. Defaults: baatt_tuning_default(). */
typedef struct baatt_tuning {
    baatt_attend_path attend;      /* AUTO */
    baatt_sort_path sort;          /* AUTO; NONE is not accepted */
    baatt_score_path score;        /* AUTO */
    baatt_select_path select;      /* AUTO */
    uint32_t tile_rows, tile_keys; /* cooperative-matrix-2 attention tile; 0: chosen (32, 64 or 128) */
    uint32_t khr_rows, khr_keys;   /* KHR attention tile BR x BC; 0: chosen (16 to 128; none if it
                                       does not fit: the next path runs) */
    uint32_t khr_mf;               /* KHR fragments of M rows per subgroup, 1 or 2; 0: chosen */
    uint32_t portable;             /* BAATT_PORTABLE_* bits asked of the portable kernel; 0 (base) */
    int khr_shared_softmax;        /* KHR softmax through shared memory even where the accumulator
                                      layout allows it in registers (khr_softmax=shared); 0 */
    uint32_t radix_min;            /* AUTO sort: radix for sides padded to at least this; 65536 */
    double logits_mib;             /* block-logit scratch budget, MiB; 128 */
    int robust;                    /* context: keep the driver's buffer robustness; 0 */
    int profile;                   /* a timestamp after every dispatch, printed when the plan
                                       is destroyed (also BAATT_PROFILE=dispatch); 0 */
} baatt_tuning;

baatt_tuning baatt_tuning_default(void);
/* Parses "key=value,key=value" (BAATT_TUNE) onto *t. Keys: attend, sort, score, select (a path
 * name, see baatt_path_name), tile (RxC), khr_tile (RxC), khr_mf, khr_softmax (shared, registers), portable
 * ("base" or a '+' list of qk16, pv16, long: BAATT_PORTABLE_* bits), radix_min, logits_mib, robust, profile
 * (on/off). An unknown key or value is BAATT_ERROR_INVALID_ARGUMENT with a message; *t is then unchanged. */
baatt_status baatt_tuning_parse(const char *s, baatt_tuning *t, char *msg, size_t msg_size);

/* Sizes every stage derives from the config. */
typedef struct baatt_geometry {
    uint32_t block, nq, nk, words; /* block size, query/key blocks, mask words per row */
    uint32_t bh, bhkv;             /* (batch, head) rows of each side */
    uint32_t pq, pk;               /* per-head lengths padded to powers of two (sort) */
} baatt_geometry;

typedef struct baatt_sort_choice {
    baatt_sort_path side[2]; /* Q, K: NONE, BITONIC or RADIX */
    uint32_t wg, chunk;      /* bitonic: sort_local's workgroup and keys per workgroup */
    uint32_t radix_wg;       /* radix: workgroup; 0 where no side uses it */
} baatt_sort_choice;
/* Variants of the portable kernel (attention.comp; fp16 tensors only; NOTES.md #62-#65). */
enum {
    BAATT_PORTABLE_QK16 = 1u << 0, /* "qk16": Q K^T on packed fp16 (shaderFloat16; bf16-class accuracy) */
    BAATT_PORTABLE_PV16 = 1u << 1, /* "pv16": P V on packed fp16 (shaderFloat16) */
    BAATT_PORTABLE_LONG = 1u << 2, /* "long": qk16 / pv16 runs twice as long (16 dims, 16 keys) */
};
typedef struct baatt_attend_choice {
    baatt_attend_path path;
    uint32_t br, bc, wg;   /* query rows x keys per tile; invocations */
    baatt_mma_shape shape; /* KHR: the fragment shape */
    uint32_t subgroup;     /* KHR: the subgroup size the pipeline is created with */
    uint32_t mf;           /* KHR: row fragments per subgroup */
    uint32_t full;         /* CM2_FULL_* bits (interface.h) */
    int sorted;            /* sparse: reads norm-sorted copies of Q, K, V (cm2: and scatters O from its own) */
    uint32_t variant;      /* portable: the BAATT_PORTABLE_* bits this device and dtype allow */
} baatt_attend_choice;
typedef struct baatt_score_choice {
    baatt_score_path path;
    uint32_t tile, kc;                /* logit tile; feature step (cm2) */
    int full;                         /* cm2: every tile whole */
    uint32_t chunk_heads, chunk_rows; /* the logit scratch holds this many heads x rows */
} baatt_score_choice;
typedef struct baatt_select_choice {
    baatt_select_path path;
    uint32_t wg, rows; /* invocations; rows per workgroup */
} baatt_select_choice;
typedef struct baatt_stats_choice {
    int copy;  /* also write the sorted Q/K/V copies */
    int split; /* also write the bf16 feature parts (cm2 score) */
} baatt_stats_choice;

typedef struct baatt_choice {
    baatt_geometry geo;
    baatt_sort_choice sort;
    baatt_attend_choice attend;
    baatt_score_choice score;
    baatt_select_choice select;
    baatt_stats_choice stats;
    int auto_sort;          /* more than one candidate (BAATT_SORT_AUTO and/or BAATT_COVARIANCE_AUTO):
                               each estimated, one kept per kv head */
    baatt_auto_cands cands; /* the candidates (one: the config's blocking and lambda) */
    uint32_t samples;       /* auto sort: sampled query rows per head */
} baatt_choice;

/* The whole choice for cfg (already checked) on a device with caps under tuning. Fails with
 * BAATT_ERROR_MISSING_FEATURE or BAATT_ERROR_TOO_LARGE and a message where the device cannot
 * run the config at all. Pure: the same inputs give the same choice. */
baatt_status baatt_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *tuning,
                          baatt_choice *out, char *msg, size_t msg_size);

/* Names of the paths ("portable", "nv-coopmat2", "radix", ...): the tuning string's values and
 * what reports print. stage: BAATT_STAGE_SORT, SCORE, SELECT or ATTEND. NULL if out of range. */
const char *baatt_path_name(int stage, int path);
/* The tuning names of the BAATT_PORTABLE_* bits (bit i: baatt_portable_tags[i]). */
extern const char *const baatt_portable_tags[3];

/* 16-byte vectors in a row of Q/K/V, and rows per 256-invocation workgroup of the stages that
 * read one vector per invocation (sort_keys, permute). */
uint32_t baatt_row_vectors(const baatt_config *c);
uint32_t baatt_vector_rows_per_wg(const baatt_config *c);

/* Per-stage choices (src/stages/), in the order baatt_choose calls them. */
void baatt_sort_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t, const baatt_geometry *g,
                       baatt_sort_choice *out);
uint32_t baatt_radix_workgroup(const baatt_caps *caps); /* 0: the device cannot run it */
/* The register softmax's row groups in a KHR accumulator layout: cell[L * KL_MAX_E + i] = row * n +
 * column of element i (of e) in lane L (of sg), as khr_layout.comp writes it. Returns rg, the
 * smallest power of two such that lanes L ^ x (x < rg) hold each element in one row and, with
 * their elements of that row, every column; *rep gets 4 bits per element: the first element of
 * the lane in its row (the same in every lane). 0 where no rg fits (or e > 8). */
uint32_t baatt_khr_layout_classify(const uint32_t *cell, uint32_t sg, uint32_t e, uint32_t n, uint32_t *rep);
baatt_status baatt_attend_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t,
                                 const baatt_geometry *g, baatt_attend_choice *out, char *msg, size_t n);
void baatt_score_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t, const baatt_geometry *g,
                        baatt_score_choice *out);
void baatt_select_choose(const baatt_caps *caps, const baatt_config *cfg, const baatt_tuning *t,
                         const baatt_geometry *g, baatt_select_choice *out);
void baatt_stats_choose(const baatt_config *cfg, const baatt_attend_choice *a, const baatt_score_choice *s,
                        int auto_sort, baatt_stats_choice *out);

#endif
