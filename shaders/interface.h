/* The host/shader interface, one definition compiled as C (src/) and as GLSL (shaders/):
 * descriptor bindings, the push-constant block, each pipeline's specialization-constant ids and
 * the shader constants that the host's grid arithmetic depends on. Plain #defines and one
 * X-macro, which both preprocessors read the same way. */
#ifndef BAATT_INTERFACE_H
#define BAATT_INTERFACE_H

/* ---- descriptor bindings (set 0): one layout for every pipeline, bound once per recording ---- */
#define BIND_Q 0
#define BIND_K 1
#define BIND_V 2
#define BIND_O 3
#define BIND_PERM_Q 4     /* int [heads][q_len]: original row of each sorted position */
#define BIND_PERM_K 5
#define BIND_KEYS 6       /* sort keys, Q side then K side */
#define BIND_QFEAT 7      /* block features [heads][nq][3 * head_dim] (stats.comp) */
#define BIND_KFEAT 8
#define BIND_LOGITS 9     /* block logits of one chunk */
#define BIND_MASK 10      /* selection bits [slot][heads][nq][words] */
#define BIND_COUNTS 11    /* selected key tokens [slot][heads][nq] */
#define BIND_QS 12        /* norm-sorted copies of Q, K, V and O (cooperative-matrix-2 sparse path) */
#define BIND_KS 13
#define BIND_VS 14
#define BIND_OS 15
#define BIND_AUTO 16      /* auto choice: sampled recalls [heads][S][candidates] f32, then the
                             chosen candidate [kv heads] u32 */
#define BIND_QSPLIT 17    /* block features as bf16 hi/lo parts (tensor-core scoring) */
#define BIND_KSPLIT 18
#define BIND_KEYS2 19     /* radix sort: the key buffer it ping-pongs with KEYS */
#define BIND_HIST 20      /* radix sort: per-tile digit counts, then their prefix */
#define BIND_LSE 21       /* log-sum-exp per query row [heads][q_len] f32, original order (cfg.lse):
                             the plan's buffer or the caller's tensor; written only where the
                             attention's LSE constant is set */
/* BIND_AUTO's word where the chosen candidate of each kv head starts (after the recalls). */
#define AUTO_CHOICE_WORD(bh, samples, cands) ((bh) * (samples) * (cands))
#define BIND_COUNT 22
#define BIND_FIRST_SCRATCH BIND_PERM_Q /* bindings below it are the caller's tensors */

/* ---- push constants: U(name) a 32-bit unsigned field, F(name) a float ----
 * geometry: tensor sizes; block size, query/key block counts, mask words per row.
 * which: 0 the Q side, 1 the K side (sort, stats, permute). padded: sort length (power of two).
 * sort_k, sort_j: bitonic stage and step; radix: digit shift and direction. key_offset: first
 * key of this side in KEYS. head0, nheads_chunk, row0, rows: the score/select chunk. mode: 0
 * keep-ratio (keep blocks), 1 mass threshold. scale and cov: t and lambda * t^2 / 2.
 * identity: sort_perm writes the identity / stats reads the original order. slot: which
 * MASK/COUNTS slot select writes (the auto choice's candidate). copy: this stats pass writes the
 * sorted copies (where its COPY build does: the first pass on the sorted blocking). */
#define BAATT_PUSH_FIELDS(U, F)                                                                    \
    U(batch) U(heads) U(kv_heads) U(q_len) U(kv_len) U(head_dim)                                   \
    U(block) U(nq) U(nk) U(words)                                                                  \
    U(which) U(padded) U(sort_k) U(sort_j) U(key_offset)                                           \
    U(head0) U(nheads_chunk) U(row0) U(rows)                                                       \
    U(mode) U(keep) U(min_blocks) U(max_blocks)                                                    \
    F(threshold) F(scale) F(cov)                                                                   \
    U(identity) U(slot) U(copy)

/* ---- specialization constants, per shader ---- */
/* attention.comp (portable) */
#define SC_ATT_WG 0
#define SC_ATT_D 1
#define SC_ATT_BR 2
#define SC_ATT_BC 3
#define SC_ATT_SPARSE 4
#define SC_ATT_LSE 5      /* 1: also write each row's log-sum-exp to BIND_LSE (every attention kernel) */
#define SC_ATT_RUN 6      /* packed-half variants: fp16 runs of 1 (8 dims, 8 keys) or 2 times that */
#define SC_ATT_COUNT 7
#define ATT_MAX_VECTORS 16 /* 16-byte vectors of a K (and of a V) tile per invocation (portable, KHR) */
#define ATT_ROWS 4         /* portable: query rows per invocation */
#define ATT_LANES 8        /* portable: invocations sharing those rows (score columns, output dims) */
#define ATT_UNROLL 8       /* portable: inner-loop steps an iteration (head_dim / 4 and BC its multiples) */
/* khr_layout.comp: the KHR accumulator layout probe */
#define SC_KL_SG 0
#define SC_KL_M 1
#define SC_KL_N 2
#define SC_KL_COUNT 3
#define KL_MAX_E 16       /* elements a lane records */
/* attention_khr.comp */
#define SC_KHR_WG 0
#define SC_KHR_D 1
#define SC_KHR_NSG 2      /* subgroups, MF * M query rows each */
#define SC_KHR_BC 3
#define SC_KHR_SPARSE 4
#define SC_KHR_SG 5       /* the subgroup size the pipeline is created with */
#define SC_KHR_M 6        /* fragment shape M x N x K, as the device lists it */
#define SC_KHR_N 7
#define SC_KHR_K 8
#define SC_KHR_MF 9       /* row fragments per subgroup */
#define SC_KHR_LSE 10
#define SC_KHR_RG 11      /* register softmax: lanes per row group (0: softmax in shared memory) */
#define SC_KHR_REP 12     /* register softmax: per accumulator element, 4 bits: the first element of its row */
#define SC_KHR_P16 13     /* P converted in an fp16 accumulator (else through fp32 in shared memory) */
#define SC_KHR_COUNT 14
/* attention_cm2.comp */
#define SC_CM2_WG 0
#define SC_CM2_D 1
#define SC_CM2_BR 2
#define SC_CM2_BC 3
#define SC_CM2_TPB 4      /* key tiles per key block (sorted build) */
#define SC_CM2_FULL 5     /* CM2_FULL_* bits: partial-tile code compiled out */
#define SC_CM2_LSE 6
#define SC_CM2_COUNT 7
#define CM2_FULL_Q 1      /* q_len a multiple of BR: Q loaded unclamped */
#define CM2_FULL_K 2      /* kv_len a multiple of BC: key tiles unclamped and unmasked */
#define CM2_FULL_O 4      /* O stored unclamped */
/* permute.comp */
#define SC_PERM_RV 0      /* 16-byte vectors per row */
#define SC_PERM_COUNT 1
/* sort_keys.comp */
#define SC_KEYS_D 0
#define SC_KEYS_COUNT 1
#define SORT_KEYS_C 4     /* vectors read per invocation, rows SORT_KEYS_C * (256 / RV) apart */
/* sort_local.comp */
#define SC_LOCAL_WG 0
#define SC_LOCAL_N 1      /* keys per workgroup */
#define SC_LOCAL_COUNT 2
/* sort_global.comp */
#define SC_GLOBAL_N 0     /* sort_local's chunk: the steps below it are local */
#define SC_GLOBAL_COUNT 1
/* sort_radix.comp */
#define SC_RADIX_WG 0
#define SC_RADIX_KPT 1
#define SC_RADIX_PHASE 2  /* 0 histogram, 1 scan, 2 scatter */
#define SC_RADIX_COUNT 3
#define RADIX_KPT 16      /* keys per invocation and tile */
#define RADIX_MAX_SUBGROUPS 8
/* stats.comp */
#define SC_STATS_D 0
#define SC_STATS_COPY 1   /* also write the sorted Q/K/V copies */
#define SC_STATS_SPLIT 2  /* also write the bf16 hi/lo feature parts */
#define SC_STATS_COUNT 3
/* score.comp (fp32, 256 invocations, SCORE_FP32_TILE x SCORE_FP32_TILE logits a workgroup) */
#define SC_SCORE_D 0
#define SC_SCORE_COUNT 1
#define SCORE_FP32_TILE 64
/* score_cm2.comp */
#define SC_SCM2_WG 0
#define SC_SCM2_D 1
#define SC_SCM2_T 2       /* output tile T x T */
#define SC_SCM2_KC 3      /* feature step */
#define SC_SCM2_FULL 4    /* every tile whole: unclamped layouts */
#define SC_SCM2_COUNT 5
/* select.comp, select_sg and select_row */
#define SC_SEL_WG 0
#define SC_SEL_PER 1      /* logits per invocation */
#define SC_SEL_SG 2       /* select_row: the subgroup size */
#define SC_SEL_COUNT 3
/* auto_recall.comp (256 invocations, AUTO_RPW sampled rows a workgroup) and auto_choose.comp */
#define SC_RECALL_D 0
#define SC_RECALL_ROWS 1
#define SC_RECALL_CANDS 2   /* candidates (MASK slots), at most AUTO_MAX_CANDS */
#define SC_RECALL_SORTED 3  /* bit c: candidate c is on the norm-sorted blocking */
#define SC_RECALL_COUNT 4
#define SC_CHOOSE_ROWS 0
#define SC_CHOOSE_CANDS 1
#define SC_CHOOSE_SORTED 2
#define SC_CHOOSE_COUNT 3
#define AUTO_MAX_CANDS 4  /* {sorted, original} x {lambda 1, 0} */
#define AUTO_RPW 8
#define AUTO_SAMPLE_ROWS 64      /* at most this many sampled query rows per head (evenly spaced) */

#endif
