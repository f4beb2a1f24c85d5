#version 450
// Stage 5 (NVIDIA tensor cores, FlashAttention-2 shape): subgroup-scope 16x16 cooperative
// matrices with the cooperative-matrix-2 reductions, per-element operations and conversions, so
// the softmax never leaves registers, while operand staging is ours, not the driver's:
//  - the workgroup's BR = 32 * NSG query rows are copied to shared memory once; each subgroup owns
//    32 of them (two 16-row fragments) and re-reads its Q fragments from shared memory every key
//    tile (holding Q in registers would cost 64 more per invocation; the workgroup-scope kernel,
//    attention_cm2.comp, spilled at 32 rows per subgroup for that reason, bench/NOTES.md #15);
//  - each BC-key tile of K and V is copied to shared memory once for all subgroups, so 32 rows
//    per subgroup halve the shared-memory reads per flop against 16.
// Shared layout of every tile: "blocked" [HD / 16][rows][16 halves]: a 16x16 fragment is 512
// contiguous bytes (rows 32 B apart), so fragment loads hit every bank once, with no padding
// (Q + K + V fit 48 KiB exactly at BR = 64, BC = 64 or BR = 128, BC = 32).
// Accumulators are fp32; P is rounded to the input type for P V, as FlashAttention does.
// Dense build: Q, K, V, O in the caller's layout; SORTED build: the sparse path on norm-sorted
// copies (see attention_cm2.comp), one query block (BR rows) per workgroup.
// Shapes are compile-time (-DNSG, -DBC; head_dim 128): arrays of fragments sized by
// specialization constants go to local memory on this driver (NOTES.md #17).
// Status (H100, bench/NOTES.md #18): correct, but 2x slower than attention_cm2.comp, so it is
// opt-in (BAATT_SG=1). Its tensor core alone runs at 309 TFLOP/s; staging K/V through registers
// and the softmax each add as much again, because at 255 registers only 2 warps per scheduler
// are left to hide their latency.
// Grid: (ceil(q_len / BR), batch * heads).
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_vote : require
#ifdef IN_BF16
#extension GL_EXT_bfloat16 : require
#define ELT bfloat16_t
#else
#define ELT float16_t
#endif
#include "common.glsl"

#ifndef NSG
#define NSG 4          // subgroups (32 query rows each)
#endif
#ifndef BC
#define BC 32          // keys per tile
#endif
#define HD 128         // head_dim
#ifndef RS
#define RS 32          // query rows per subgroup: 16 or 32
#endif
#define MF (RS / 16)   // row fragments per subgroup
#define BR (RS * NSG)  // query rows per workgroup
#define WG (32 * NSG)
#define NF (BC / 16)   // key fragments of a tile
#define DF (HD / 16)   // head_dim fragments
#define RV (HD / 8)    // 16-byte vectors per row

layout(local_size_x = WG) in;
// SORTED build: key tiles per key block (block / BC), so that loop unrolls.
layout(constant_id = 4) const uint TPB = 1;

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
layout(set = 0, binding = SRC_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = SRC_K) readonly buffer KB { uvec4 k4[]; };
layout(set = 0, binding = SRC_V) readonly buffer VB { uvec4 v4[]; };
layout(set = 0, binding = DST_O) writeonly buffer OB { uvec4 o4[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };

shared uvec4 qsh[BR * RV];   // blocked [DF][BR][16]; reused for the output at the end
shared uvec4 ksh[BC * RV];   // blocked [DF][BC][16]
shared uvec4 vsh[BC * RV];

#define SF coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>
#define AF coopmat<ELT, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define BF coopmat<ELT, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB>
const float LOW = -3.0e38;   // finite "minus infinity": M_old - M stays finite
const uint END = 0xffffffffu;
#define NPT (BC * RV / WG)   // 16-byte vectors of a K or V tile per invocation

float max_op(const in float a, const in float b) { return max(a, b); }
float add_op(const in float a, const in float b) { return a + b; }
float first_op(const in float a, const in float b) { return a; }   // smear a row's value
float max_el(const in uint r, const in uint c, const in float a, const in float b) { return max(a, b); }
float exp_scaled(const in uint r, const in uint c, const in float x) { return exp(x * pc.scale); }
float mask_el(const in uint r, const in uint c, const in float x, const in int valid) {
    return int(c) < valid ? x : LOW;
}

SF O[MF][DF];      // this subgroup's RS x HD output rows
// Running row max M, repeated over the columns (row reductions return it in that shape, so no
// reduction is needed to smear it), and per-element partial row sums L, whose columns are added
// up once at the end instead of a sum reduction per tile (as FlashAttention-2 does).
SF M[MF], L[MF];
AF P[MF][NF];       // this tile's probabilities, rounded to the input type
uint sg;           // subgroup index: rows sg*32 .. sg*32+31 of the workgroup

// Invocation's share of the tile's rows [row0, row0 + ROWS) of a [*, HD] tensor (16-byte vectors
// from `base`), rows at or past `limit` as zeros, in the blocked shared order: element j_ lands at
// shared index j_ * WG + invocation, so 8 consecutive invocations write 128 contiguous bytes; each
// reads 32 contiguous global bytes.
#define FETCH(r, src, base, row0, ROWS, limit)                                         \
    [[unroll]] for (uint j_ = 0; j_ < ROWS * RV / WG; j_++) {                          \
        uint i_ = j_ * WG + gl_LocalInvocationIndex;                                   \
        uint r_ = (row0) + (i_ >> 1) % ROWS, u_ = ((i_ >> 1) / ROWS) * 2 + (i_ & 1);   \
        r[j_] = r_ < (limit) ? src[(base) + r_ * RV + u_] : uvec4(0);                  \
    }
#define PUT(sh, r, ROWS)                                                               \
    [[unroll]] for (uint j_ = 0; j_ < ROWS * RV / WG; j_++) sh[j_ * WG + gl_LocalInvocationIndex] = r[j_];

void sync() {
    controlBarrier(gl_ScopeWorkgroup, gl_ScopeWorkgroup, gl_StorageSemanticsShared,
                   gl_SemanticsAcquireRelease);
}

// S = Q K^T for the staged key tile, then the online softmax: P, and M, L and O rescaled.
// `valid` of its BC keys are real.
void scores(int valid) {
    SF S[MF][NF];
    [[unroll]] for (uint m = 0; m < MF; m++)
        [[unroll]] for (uint n = 0; n < NF; n++) S[m][n] = SF(0.0);
    [[unroll]] for (uint c = 0; c < DF; c++) {
        AF qa[MF];
        [[unroll]] for (uint m = 0; m < MF; m++)
            coopMatLoad(qa[m], qsh, (c * BR + sg * RS + m * 16) * 2, 2, gl_CooperativeMatrixLayoutRowMajor);
        [[unroll]] for (uint n = 0; n < NF; n++) {
            BF kb;   // K^T fragment: key rows of the blocked tile read column-major
            coopMatLoad(kb, ksh, (c * BC + n * 16) * 2, 2, gl_CooperativeMatrixLayoutColumnMajor);
            [[unroll]] for (uint m = 0; m < MF; m++) S[m][n] = coopMatMulAdd(qa[m], kb, S[m][n]);
        }
    }
    [[unroll]] for (uint m = 0; m < MF; m++) {
        if (valid < BC)
            [[unroll]] for (uint n = 0; n < NF; n++)
                coopMatPerElementNV(S[m][n], S[m][n], mask_el, valid - int(n * 16));
        SF t = S[m][0];
        [[unroll]] for (uint n = 1; n < NF; n++) coopMatPerElementNV(t, t, max_el, S[m][n]);
        SF rmax, mold = M[m], e;
        coopMatReduceNV(rmax, t, gl_CooperativeMatrixReduceRowNV, max_op);
        coopMatPerElementNV(M[m], rmax, max_el, mold);
        // O and L need rescaling only where a row max grew; after the first tiles that is rare,
        // and the test is subgroup-uniform (unlike in the workgroup-scope kernel, NOTES.md #7b).
        bool grew = false;
        [[unroll]] for (uint i = 0; i < rmax.length(); i++) grew = grew || rmax[i] > mold[i];
        if (subgroupAny(grew)) {
            SF alpha;
            coopMatPerElementNV(alpha, mold - M[m], exp_scaled);
            L[m] = L[m] * alpha;
            [[unroll]] for (uint d = 0; d < DF; d++) O[m][d] = O[m][d] * alpha;
        }
        [[unroll]] for (uint n = 0; n < NF; n++) {
            coopMatPerElementNV(e, S[m][n] - M[m], exp_scaled);
            L[m] += e;
            P[m][n] = AF(e);
        }
    }
}

// O += P V for the staged value tile.
void values() {
    [[unroll]] for (uint n = 0; n < NF; n++)
        [[unroll]] for (uint d = 0; d < DF; d++) {
            BF vb;
            coopMatLoad(vb, vsh, (d * BC + n * 16) * 2, 2, gl_CooperativeMatrixLayoutRowMajor);
            [[unroll]] for (uint m = 0; m < MF; m++) O[m][d] = coopMatMulAdd(P[m][n], vb, O[m][d]);
        }
}

// The key tiles this workgroup visits, in order: dense, all of them; SORTED, those of the
// selected key blocks (TPB per block; only the last block can be partial).
#ifdef SORTED
uint it_row, it_w, it_bits, it_t, it_J;
uint next_tile() {
    for (;;) {
        if (it_t < TPB) {
            uint s0 = it_J * pc.block + it_t * BC;
            it_t++;
            if (s0 < pc.kv_len) return s0;
            continue;
        }
        while (it_bits == 0u) {
            if (++it_w >= pc.words) return END;
            it_bits = mask[it_row + it_w];
        }
        it_J = it_w * 32 + uint(findLSB(it_bits));
        it_bits &= it_bits - 1u;
        it_t = 0;
    }
}
uint first_tile(uint hd, uint p0) {
    it_row = (hd * pc.nq + p0 / pc.block) * pc.words;
    it_w = 0;
    it_bits = mask[it_row];
    it_t = TPB;
    return next_tile();
}
#else
uint first_tile(uint hd, uint p0) { return 0; }
uint next_tile_after(uint s0) { return s0 + BC < pc.kv_len ? s0 + BC : END; }
#endif

void main() {
    uint hd = gl_WorkGroupID.y, p0 = gl_WorkGroupID.x * BR;
    sg = gl_LocalInvocationIndex / 32;
    uint qb = (hd * pc.q_len + p0) * RV, kvb = kv_of(hd) * pc.kv_len * RV;
    [[unroll]] for (uint m = 0; m < MF; m++) {
        M[m] = SF(LOW);
        L[m] = SF(0.0);
        [[unroll]] for (uint d = 0; d < DF; d++) O[m][d] = SF(0.0);
    }
    {
        uvec4 rq[BR * RV / WG];
        FETCH(rq, q4, qb, 0, BR, pc.q_len - p0);
        PUT(qsh, rq, BR);
    }
    // Software pipeline over key tiles: this tile's V and the next tile's K are loaded into
    // registers while this tile's scores are computed, and stored to shared memory after them
    // (V) and after P V (K). There is no asynchronous global-to-shared copy in SPIR-V, so the
    // data in flight costs registers (bench/NOTES.md #18).
    uvec4 rk[NPT], rv[NPT];
    uint s0 = first_tile(hd, p0);
    if (s0 != END) {
        FETCH(rk, k4, kvb, s0, BC, pc.kv_len);
        PUT(ksh, rk, BC);
    }
    sync();
    [[dont_unroll]] while (s0 != END) {
#ifdef SORTED
        uint s1 = next_tile();
#else
        uint s1 = next_tile_after(s0);
#endif
        FETCH(rv, v4, kvb, s0, BC, pc.kv_len);
        if (s1 != END) FETCH(rk, k4, kvb, s1, BC, pc.kv_len);
        scores(int(min(pc.kv_len - s0, uint(BC))));
        PUT(vsh, rv, BC);
        sync();   // V staged; every subgroup is done with this K
        values();
        if (s1 != END) PUT(ksh, rk, BC);
        sync();   // next K staged; every subgroup is done with this V
        s0 = s1;
    }
    // O / L, rounded to the input type, through this subgroup's rows of shared memory (row-major
    // [RS][HD] at vector sg * RS * RV) so the global stores are whole 16-byte vectors.
    [[unroll]] for (uint m = 0; m < MF; m++) {
        SF l16;
        coopMatReduceNV(l16, L[m], gl_CooperativeMatrixReduceRowNV, add_op);
        [[unroll]] for (uint d = 0; d < DF; d++) {
            coopmat<ELT, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> o16 =
                coopmat<ELT, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>(O[m][d] / l16);
            coopMatStore(o16, qsh, (sg * RS + m * 16) * RV + d * 2, RV, gl_CooperativeMatrixLayoutRowMajor);
        }
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    uint lane = gl_LocalInvocationIndex % 32, rows = min(uint(RS), pc.q_len - min(pc.q_len, p0 + sg * RS));
    [[unroll]] for (uint j = 0; j < RS * RV / 32; j++) {   // RS rows x RV vectors, one row per 16 lanes
        uint i = j * 32 + lane, r = i / RV;
        if (r < rows) o4[qb + (sg * RS + r) * RV + i % RV] = qsh[sg * RS * RV + i];
    }
}
