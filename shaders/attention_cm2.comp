#version 450
// Stage 5 (NVIDIA cooperative matrix 2 path, fp16 or bf16 with IN_BF16): FlashAttention-2 with
// workgroup-scope cooperative matrices. The driver tiles the BR x BC and BR x D products across
// the workgroup's subgroups and stages operands itself; rows and columns are addressed with
// tensor layouts, and the online softmax runs on the accumulators with row reductions and
// per-element operations, so nothing goes through our own shared memory. Accumulators are fp32;
// P is rounded to the input type for the P V product, as FlashAttention does.
// Dense (default build): Q, K, V, O in the caller's layout. SORTED build: the sparse path, where
// Q, K, V were gathered into norm-sorted copies (by stats.comp, or permute.comp under auto sort;
// blocks are then contiguous rows) and O is written in sorted order, then scattered back to its
// original rows by the epilogue.
// Row statistics (max M, sum L, rescale alpha) live in narrow BR x 16 accumulators; they reach
// the BR x BC and BR x D shapes through row reductions that smear a row's value (per-element
// operations only take extra matrices of the operand's own shape). The softmax scale is folded
// into the exponent: max is scale-invariant for scale > 0.
// Register pressure rules this kernel (240-255 registers on the H100, bench/NOTES.md #10-#15):
// code that looks free (helper functions, a prefetch, 32 rows per subgroup) spills and costs
// 20-100%; check BAATT_PROFILE=pipelines after any change.
// Grid: (ceil(q_len / BR), batch * heads). Needs glslang >= 15, >= 16 for bf16 (built only where
// it compiles).
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#ifdef IN_BF16
#extension GL_EXT_bfloat16 : require
#define ELT bfloat16_t   // Q/K/V/O and the P operand; needs glslang >= 16
#else
#define ELT float16_t
#endif
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = SC_CM2_WG) const uint WG = 128;
layout(constant_id = SC_CM2_D) const uint D = 128;
layout(constant_id = SC_CM2_BR) const uint BR = 64;
layout(constant_id = SC_CM2_BC) const uint BC = 64;
// TPB (SORTED build): key tiles per key block (block / BC, at least 1), so that loop unrolls.
layout(constant_id = SC_CM2_TPB) const uint TPB = 1;
// Partial-tile code left out: bit 0, Q's clamped load (q_len is a multiple of BR); bit 1, the
// key tiles' clamped loads and masking (kv_len of BC); bit 2, O's clamped store. The host sets
// only the bits the shape allows and that measured faster (NOTES.md #42).
layout(constant_id = SC_CM2_FULL) const uint FULL = 0;
layout(constant_id = SC_CM2_LSE) const uint LSE = 0;
const bool QFULL = (FULL & CM2_FULL_Q) != 0u, KFULL = (FULL & CM2_FULL_K) != 0u, OFULL = (FULL & CM2_FULL_O) != 0u;

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
layout(set = 0, binding = SRC_Q) readonly buffer QB { ELT q[]; };
layout(set = 0, binding = SRC_K) readonly buffer KB { ELT k[]; };
layout(set = 0, binding = SRC_V) readonly buffer VB { ELT v[]; };
#ifdef SORTED
// The sorted output is stored to OS, read back as 16-byte vectors by the whole workgroup and
// written to its original rows of O here, in the epilogue: a separate scatter pass would read all
// of OS back from device memory (NOTES.md #34). coherent: the workgroup's stores to OS must be
// visible to its loads after the barrier.
layout(set = 0, binding = DST_O) coherent writeonly buffer OB { ELT o[]; };
layout(set = 0, binding = BIND_OS) coherent readonly buffer OSV { uvec4 os4[]; };
layout(set = 0, binding = BIND_O) writeonly buffer OV { uvec4 o4[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
#else
layout(set = 0, binding = DST_O) writeonly buffer OB { ELT o[]; };
#endif
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_LSE) writeonly buffer LB { float lse[]; };

#define SACC coopmat<float, gl_ScopeWorkgroup, BR, BC, gl_MatrixUseAccumulator>
#define OACC coopmat<float, gl_ScopeWorkgroup, BR, D, gl_MatrixUseAccumulator>
#define PMAT coopmat<ELT, gl_ScopeWorkgroup, BR, BC, gl_MatrixUseA>
#define RACC coopmat<float, gl_ScopeWorkgroup, BR, 16, gl_MatrixUseAccumulator>   // per-row values
// A large finite "minus infinity": M_old - M stays finite, so exp needs no special case.
const float LOW = -3.0e38;

float max_op(const in float a, const in float b) { return max(a, b); }
float first_op(const in float a, const in float b) { return a; }   // smear a row's value
float max_el(const in uint r, const in uint c, const in float a, const in float b) { return max(a, b); }
float exp_scaled(const in uint r, const in uint c, const in float x) { return exp(x * pc.scale); }
// P's exp((x - m) * scale) as one FMA and an exp2, m pre-multiplied by scale * log2(e) in the
// narrow row matrix (was a subtract and two multiplies per element: -0.5% at 128K, NOTES.md #33).
const float L2E = 1.4426950408889634;
float exp_fma(const in uint r, const in uint c, const in float x, const in float m) { return exp2(fma(x, pc.scale * L2E, -m)); }
float mask_el(const in uint r, const in uint c, const in float x, const in uint valid) {
    return c < valid ? x : LOW;
}

// Row r's log-sum-exp from column 0 of the row matrices (M in unscaled score units, L the sum of
// exp((s - M) * scale)), at its original row; a per-element operation, as nothing else addresses
// a workgroup-scope matrix's rows (it returns m: only the stores matter).
float store_lse(const in uint r, const in uint c, const in float m, const in float l, const in uint qrow,
                const in uint first) {
    if (c == 0u && first + r < pc.q_len) {
#ifdef SORTED
        uint row = uint(perm_q[qrow + first + r]);
#else
        uint row = first + r;
#endif
        lse[qrow + row] = m * pc.scale + log(l);
    }
    return m;
}

coopmat<ELT, gl_ScopeWorkgroup, BR, D, gl_MatrixUseA> qm;
OACC O;
RACC M, L;   // row max and row sum, each row's value repeated over 16 columns
// Clamped layouts (zeros past the end) only for the last, partial tiles; full tiles use
// unclamped ones, whose loads need no bounds checks.
tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> tq, tk;
tensorLayoutNV<2> tqu, tku;
uint q_base, p0;   // this workgroup's query rows
bool qfull;

// One tile of BC keys at sorted/original position s0. The softmax scale is folded into the
// exponent (max is scale-invariant); per-row statistics live in narrow BR x 16 matrices and are
// smeared into the S and O shapes where needed; row sums come from a product with a ones matrix
// (tensor cores, not a reduction).
void process_tile(uint kv_base, uint s0, bool full) {
    coopmat<ELT, gl_ScopeWorkgroup, D, BC, gl_MatrixUseB> kt;   // K^T: a transposing view
    if (full) coopMatLoadTensorNV(kt, k, kv_base, sliceTensorLayoutNV(tku, s0, BC, 0, D), createTensorViewNV(2, false, 1, 0));
    else coopMatLoadTensorNV(kt, k, kv_base, sliceTensorLayoutNV(tk, s0, BC, 0, D), createTensorViewNV(2, false, 1, 0));
    SACC S = SACC(0.0);
    S = coopMatMulAdd(qm, kt, S);
    if (!full) coopMatPerElementNV(S, S, mask_el, pc.kv_len - s0);
    RACC rowmax, mold = M, em;
    coopMatReduceNV(rowmax, S, gl_CooperativeMatrixReduceRowNV, max_op);
    coopMatPerElementNV(M, rowmax, max_el, mold);
    coopMatPerElementNV(em, mold - M, exp_scaled);
    SACC ms, P;
    coopMatReduceNV(ms, M * (pc.scale * L2E), gl_CooperativeMatrixReduceRowNV, first_op);
    coopMatPerElementNV(P, S, exp_fma, ms);
    PMAT pa = PMAT(P);
    coopmat<ELT, gl_ScopeWorkgroup, BC, 16, gl_MatrixUseB> ones = coopmat<ELT, gl_ScopeWorkgroup, BC, 16, gl_MatrixUseB>(1.0);
    RACC rowsum = RACC(0.0);
    rowsum = coopMatMulAdd(pa, ones, rowsum);
    L = em * L + rowsum;
    OACC em_o;
    coopMatReduceNV(em_o, em, gl_CooperativeMatrixReduceRowNV, first_op);
    coopmat<ELT, gl_ScopeWorkgroup, BC, D, gl_MatrixUseB> vm;
    if (full) coopMatLoadTensorNV(vm, v, kv_base, sliceTensorLayoutNV(tku, s0, BC, 0, D));
    else coopMatLoadTensorNV(vm, v, kv_base, sliceTensorLayoutNV(tk, s0, BC, 0, D));
    O = O * em_o;
    O = coopMatMulAdd(pa, vm, O);
}

void main() {
    uint hd = gl_WorkGroupID.y;
    p0 = gl_WorkGroupID.x * BR;
    q_base = hd * pc.q_len * D;
    uint kv_base = kv_of(hd) * pc.kv_len * D;
    tq = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    tq = setTensorLayoutDimensionNV(tq, pc.q_len, D);
    tk = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    tk = setTensorLayoutDimensionNV(tk, pc.kv_len, D);
    tqu = createTensorLayoutNV(2);
    tqu = setTensorLayoutDimensionNV(tqu, pc.q_len, D);
    tku = createTensorLayoutNV(2);
    tku = setTensorLayoutDimensionNV(tku, pc.kv_len, D);
    qfull = p0 + BR <= pc.q_len;
    if (QFULL || qfull) coopMatLoadTensorNV(qm, q, q_base, sliceTensorLayoutNV(tqu, p0, BR, 0, D));
    else coopMatLoadTensorNV(qm, q, q_base, sliceTensorLayoutNV(tq, p0, BR, 0, D));
    O = OACC(0.0);
    L = RACC(0.0);
    M = RACC(LOW);
#ifdef SORTED
    uint mrow = hd * pc.nq + p0 / pc.block;
    [[dont_unroll]] for (uint w = 0; w < pc.words; w++) {
        uint bits = mask[mrow * pc.words + w];
        while (bits != 0u) {
            uint J = w * 32 + uint(findLSB(bits));
            bits &= bits - 1u;
            // Only the last key block can be partial, and only in its last tile.
            [[unroll]] for (uint t = 0; t < TPB; t++) {
                uint s0 = J * pc.block + t * BC;
                if (KFULL || s0 + BC <= pc.kv_len) {
                    if (s0 < pc.kv_len) process_tile(kv_base, s0, true);
                } else if (s0 < pc.kv_len) process_tile(kv_base, s0, false);
            }
        }
    }
#else
    // Full tiles in a loop with no bounds code (measured 14% faster, NOTES.md #11), then the tail.
    uint nfull = pc.kv_len / BC * BC;
    [[dont_unroll]] for (uint s0 = 0; s0 < nfull; s0 += BC) process_tile(kv_base, s0, true);
    if (!KFULL && nfull < pc.kv_len) process_tile(kv_base, nfull, false);
#endif
    OACC lo;
    coopMatReduceNV(lo, L, gl_CooperativeMatrixReduceRowNV, first_op);
    O = O / lo;
    coopmat<ELT, gl_ScopeWorkgroup, BR, D, gl_MatrixUseAccumulator> o16 = coopmat<ELT, gl_ScopeWorkgroup, BR, D, gl_MatrixUseAccumulator>(O);
    if (OFULL || qfull) coopMatStoreTensorNV(o16, o, q_base, sliceTensorLayoutNV(tqu, p0, BR, 0, D));
    else coopMatStoreTensorNV(o16, o, q_base, sliceTensorLayoutNV(tq, p0, BR, 0, D));
    if (LSE != 0) {
        RACC unused;
        coopMatPerElementNV(unused, M, store_lse, L, hd * pc.q_len, p0);
    }
#ifdef SORTED
    // The workgroup's buffer writes made visible to its own later reads: a workgroup-scope
    // acquire-release barrier on buffer memory, the Vulkan memory model's form (both views
    // coherent; as fast as memoryBarrierBuffer() + barrier(), NOTES.md #41).
    controlBarrier(gl_ScopeWorkgroup, gl_ScopeWorkgroup, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease);
    const uint RV = D / 8;   // 16-byte vectors per row of 16-bit elements
    uint qrow = hd * pc.q_len, n = min(BR, pc.q_len - p0);
    for (uint e = gl_LocalInvocationID.x; e < n * RV; e += WG) {
        uint r = p0 + e / RV, a = e % RV;
        o4[(qrow + uint(perm_q[qrow + r])) * RV + a] = os4[(qrow + r) * RV + a];
    }
#endif
}
