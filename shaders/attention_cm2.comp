#version 450
// Stage 5 (NVIDIA cooperative matrix 2 path, fp16): FlashAttention-2 with workgroup-scope
// cooperative matrices. The driver tiles the BR x BC and BR x D products across the workgroup's
// subgroups and stages operands itself; rows and columns are addressed with tensor layouts, and
// the online softmax runs on the accumulators with row reductions and per-element operations, so
// nothing goes through our own shared memory.
// Dense (default build): Q, K, V, O in the caller's layout. SORTED build: the sparse path, where
// Q, K, V were gathered into norm-sorted copies by permute.comp (blocks are then contiguous
// rows) and O is written in sorted order for permute.comp to scatter back.
// Row statistics (max M, sum L, rescale alpha) live in the BR x BC accumulator shape, where P
// is made; alpha reaches the BR x D output through a row reduction into that shape (per-element
// operations only take extra matrices of the operand's own type). The softmax scale is folded
// into the exponent: max is scale-invariant for scale > 0.
// Grid: (ceil(q_len / BR), batch * heads). Needs glslang >= 15 (built only where it compiles).
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint D = 128;
layout(constant_id = 2) const uint BR = 64;
layout(constant_id = 3) const uint BC = 64;

#ifdef SORTED
#define SRC_Q BIND_QS
#define SRC_K BIND_KS
#define SRC_V BIND_VS
#define DST_O BIND_OS
#else
#define SRC_Q BIND_Q
#define SRC_K BIND_K
#define SRC_V BIND_V
#define DST_O BIND_O
#endif
layout(set = 0, binding = SRC_Q) readonly buffer QB { float16_t q[]; };
layout(set = 0, binding = SRC_K) readonly buffer KB { float16_t k[]; };
layout(set = 0, binding = SRC_V) readonly buffer VB { float16_t v[]; };
layout(set = 0, binding = DST_O) writeonly buffer OB { float16_t o[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };

#define SACC coopmat<float, gl_ScopeWorkgroup, BR, BC, gl_MatrixUseAccumulator>
#define OACC coopmat<float, gl_ScopeWorkgroup, BR, D, gl_MatrixUseAccumulator>
const float NEG_INF = -1.0 / 0.0;

float max_op(const in float a, const in float b) { return max(a, b); }
float add_op(const in float a, const in float b) { return a + b; }
float max_el(const in uint r, const in uint c, const in float a, const in float b) { return max(a, b); }
float mask_el(const in uint r, const in uint c, const in float x, const in uint valid) {
    return c < valid ? x : NEG_INF;
}

coopmat<float16_t, gl_ScopeWorkgroup, BR, D, gl_MatrixUseA> qm;
OACC O;
SACC M, L;
tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> tq, tk;

float exp_scaled(const in uint r, const in uint c, const in float x, const in float m) {
    return m == NEG_INF ? 0.0 : exp((x - m) * pc.scale);
}

void process_tile(uint kv_base, uint s0) {
    coopmat<float16_t, gl_ScopeWorkgroup, D, BC, gl_MatrixUseB> kt;   // K^T: a transposing view
    coopMatLoadTensorNV(kt, k, kv_base, sliceTensorLayoutNV(tk, s0, BC, 0, D), createTensorViewNV(2, false, 1, 0));
    SACC S = SACC(0.0);
    S = coopMatMulAdd(qm, kt, S);
    if (s0 + BC > pc.kv_len) coopMatPerElementNV(S, S, mask_el, pc.kv_len - s0);
    SACC rowmax, mnew, P, alpha, rowsum;
    coopMatReduceNV(rowmax, S, gl_CooperativeMatrixReduceRowNV, max_op);
    coopMatPerElementNV(mnew, M, max_el, rowmax);
    coopMatPerElementNV(P, S, exp_scaled, mnew);
    coopMatPerElementNV(alpha, M, exp_scaled, mnew);
    coopMatReduceNV(rowsum, P, gl_CooperativeMatrixReduceRowNV, add_op);
    L = L * alpha + rowsum;
    M = mnew;
    OACC alpha_o;
    coopMatReduceNV(alpha_o, alpha, gl_CooperativeMatrixReduceRowNV, max_op);
    O = O * alpha_o;
    coopmat<float16_t, gl_ScopeWorkgroup, BR, BC, gl_MatrixUseA> pa = coopmat<float16_t, gl_ScopeWorkgroup, BR, BC, gl_MatrixUseA>(P);
    coopmat<float16_t, gl_ScopeWorkgroup, BC, D, gl_MatrixUseB> vm;
    coopMatLoadTensorNV(vm, v, kv_base, sliceTensorLayoutNV(tk, s0, BC, 0, D));
    O = coopMatMulAdd(pa, vm, O);
}

void main() {
    uint hd = gl_WorkGroupID.y, p0 = gl_WorkGroupID.x * BR;
    uint q_base = hd * pc.q_len * D, kv_base = kv_of(hd) * pc.kv_len * D;
    tq = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    tq = setTensorLayoutDimensionNV(tq, pc.q_len, D);
    tk = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    tk = setTensorLayoutDimensionNV(tk, pc.kv_len, D);
    coopMatLoadTensorNV(qm, q, q_base, sliceTensorLayoutNV(tq, p0, BR, 0, D));
    O = OACC(0.0);
    L = SACC(0.0);
    M = SACC(NEG_INF);
#ifdef SORTED
    uint mrow = hd * pc.nq + p0 / pc.block;
    for (uint w = 0; w < pc.words; w++) {
        uint bits = mask[mrow * pc.words + w];
        while (bits != 0u) {
            uint J = w * 32 + uint(findLSB(bits));
            bits &= bits - 1u;
            uint end = min((J + 1) * pc.block, pc.kv_len);
            for (uint s0 = J * pc.block; s0 < end; s0 += BC) process_tile(kv_base, s0);
        }
    }
#else
    for (uint s0 = 0; s0 < pc.kv_len; s0 += BC) process_tile(kv_base, s0);
#endif
    OACC lo;
    coopMatReduceNV(lo, L, gl_CooperativeMatrixReduceRowNV, max_op);
    O = O / lo;
    coopmat<float16_t, gl_ScopeWorkgroup, BR, D, gl_MatrixUseAccumulator> o16 =
        coopmat<float16_t, gl_ScopeWorkgroup, BR, D, gl_MatrixUseAccumulator>(O);
    coopMatStoreTensorNV(o16, o, q_base, sliceTensorLayoutNV(tq, p0, BR, 0, D));
}
