#version 450
// Stage 3 on the tensor cores (NV cooperative matrix 2, bf16): the corrected block logits of
// score.comp,  l[I][J] = qfeat[I] . kfeat[J] + ln(n_J),  as a workgroup-scope T x T tile of a
// (rows x F) by (F x nk) product per head, each operand in the hi/lo bf16 parts that stats.comp
// writes (SPLIT):
//   l ~ hi_q.hi_k + hi_q.lo_k + lo_q.hi_k     (fp32 accumulation; the dropped lo.lo is ~2^-16)
// QSPLIT [heads][nq][2][F], KSPLIT [kv heads][nk][2][F] bf16 (rows: hi then lo); logits into the
// chunk's scratch [nheads_chunk][rows][nk] like score.comp. Rows past the chunk and columns past
// nk are loaded as zeros (clamped layouts) and dropped by the clamped store; where every tile is
// full (FULL) the layouts are unclamped.
// Grid: (ceil(nk / T), ceil(rows / T), nheads_chunk). Needs glslang >= 16 (GL_EXT_bfloat16).
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_bfloat16 : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = SC_SCM2_WG) const uint WG = 128;
layout(constant_id = SC_SCM2_D) const uint D = 64;
layout(constant_id = SC_SCM2_T) const uint T = 64;    // output tile T x T
layout(constant_id = SC_SCM2_KC) const uint KC = 32;   // feature step; divides F
// nq, nk and the chunk's rows are multiples of T: every tile is full.
layout(constant_id = SC_SCM2_FULL) const bool FULL = false;
layout(set = 0, binding = BIND_QSPLIT) readonly buffer QX { bfloat16_t qsplit[]; };
layout(set = 0, binding = BIND_KSPLIT) readonly buffer KX { bfloat16_t ksplit[]; };
layout(set = 0, binding = BIND_LOGITS) writeonly buffer LG { float logits[]; };

const uint F = 3 * D;
#define ACC coopmat<float, gl_ScopeWorkgroup, T, T, gl_MatrixUseAccumulator>
#define AMAT coopmat<bfloat16_t, gl_ScopeWorkgroup, T, KC, gl_MatrixUseA>
#define BMAT coopmat<bfloat16_t, gl_ScopeWorkgroup, KC, T, gl_MatrixUseB>

// + ln(n_J): n_J tokens in key block J (the last may be partial); J past nk is never stored.
float add_log_n(const in uint r, const in uint c, const in float x, const in uint c0) {
    uint s = min((c0 + c) * pc.block, pc.kv_len - 1u);
    return x + log(float(min(pc.block, pc.kv_len - s)));
}

// One T x T tile with tensor layouts of clamp mode MODE: Constant (zeros past the ends, the
// clamped store drops them) in general, Undefined (no bounds code in the loads and the store)
// where every tile is full (FULL).
#define SCORE_TILE(MODE) {                                                                          \
    tensorLayoutNV<2, MODE> tq = createTensorLayoutNV(2, MODE);                                     \
    tensorLayoutNV<2, MODE> tk = createTensorLayoutNV(2, MODE);                                     \
    tensorLayoutNV<2, MODE> tl = createTensorLayoutNV(2, MODE);                                     \
    tq = setTensorLayoutDimensionNV(tq, pc.nq, 2 * F);                                              \
    tk = setTensorLayoutDimensionNV(tk, pc.nk, 2 * F);                                              \
    tl = setTensorLayoutDimensionNV(tl, pc.rows, pc.nk);                                            \
    ACC acc = ACC(0.0);                                                                             \
    for (uint f = 0; f < F; f += KC) {                                                              \
        AMAT ah, al;                                                                                \
        BMAT bh, bl;   /* K^T through a transposing view of the [nk][2F] rows */                    \
        coopMatLoadTensorNV(ah, qsplit, qb, sliceTensorLayoutNV(tq, qr, T, f, KC));                 \
        coopMatLoadTensorNV(al, qsplit, qb, sliceTensorLayoutNV(tq, qr, T, F + f, KC));             \
        coopMatLoadTensorNV(bh, ksplit, kb, sliceTensorLayoutNV(tk, c0, T, f, KC), createTensorViewNV(2, false, 1, 0)); \
        coopMatLoadTensorNV(bl, ksplit, kb, sliceTensorLayoutNV(tk, c0, T, F + f, KC), createTensorViewNV(2, false, 1, 0)); \
        acc = coopMatMulAdd(ah, bh, acc);                                                           \
        acc = coopMatMulAdd(ah, bl, acc);                                                           \
        acc = coopMatMulAdd(al, bh, acc);                                                           \
    }                                                                                               \
    coopMatPerElementNV(acc, acc, add_log_n, c0);                                                   \
    coopMatStoreTensorNV(acc, logits, hl * pc.rows * pc.nk, sliceTensorLayoutNV(tl, r0, T, c0, T)); \
}

void main() {
    uint hl = gl_WorkGroupID.z, hd = pc.head0 + hl;
    uint r0 = gl_WorkGroupID.y * T, c0 = gl_WorkGroupID.x * T;
    uint qb = hd * pc.nq * 2 * F, kb = kv_of(hd) * pc.nk * 2 * F, qr = pc.row0 + r0;
    if (FULL) SCORE_TILE(gl_CooperativeMatrixClampModeUndefinedNV)
    else SCORE_TILE(gl_CooperativeMatrixClampModeConstantNV)
}
