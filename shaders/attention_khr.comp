#version 450
// Stage 5 on KHR cooperative matrices (subgroup scope): the vendor-neutral tensor-core kernel
// (AMD RDNA3+, Intel Arc, NVIDIA, Mesa lavapipe >= 26), with the contract of attention.comp.
// The fragment shape (M x N x K), the subgroup size and the tiles are specialization constants
// that the host picks from the shapes the device lists (src/stages/attend.c).
//
// KHR matrices have no reductions and no accumulator-to-operand conversion. Where the host's
// probe of the fp32 accumulator layout (khr_layout.comp, baatt_khr_layout_classify) finds lane
// groups of RG lanes that hold whole rows (REP: which of a lane's elements share a row), the
// online softmax runs in registers on the S accumulators: a row's max is the max over its
// elements in the lane, then subgroupShuffleXor across the group; every element carries its
// row's max and partial sum, so O is rescaled element by element and the sums are combined once
// at the end. P then reaches the A operand through shared memory: converted to an fp16
// accumulator and stored (P16: where the device lists one), else stored in fp32 and converted by
// the lanes. Otherwise (RG = 0, or khr_softmax=shared) S goes to shared memory, the softmax runs
// a row per lane group (scalar), P is written back and O rescaled through `rowid`, an
// accumulator loaded from a table of row numbers (element i of every accumulator of that type
// lies in row rowid[i]: one layout per type).
// Work split: NSG subgroups, each owning RS = MF * M query rows (Q as A fragments in registers);
// K and V tiles of BC keys are gathered (through perm_k when SPARSE) into registers one tile
// ahead and stored to shared memory once per workgroup. Fragment arrays have compile-time sizes
// and every loop over them is unrolled with spec-constant guards, so they stay in registers after
// specialization.
// Grid: (ceil(q_len / BR), batch * heads); workgroup = NSG * SG invocations, full subgroups.
// IN_F16 or IN_BF16: Q, K, V, O and the P operand of O += P V in that type (ELT), fp32
// accumulators. P in bf16 keeps 8 significant bits (rounded to nearest even), as many as the
// bf16 inputs (fp16: 11, like its inputs): rounding P costs no more than the inputs' own
// rounding. bf16 needs glslang >= 16 (GL_EXT_bfloat16) and VK_KHR_shader_bfloat16's cooperative
// matrices; built only where it compiles.
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#ifdef IN_BF16
#extension GL_EXT_bfloat16 : require
#define ELT bfloat16_t
#else
#define ELT float16_t
#endif
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_vote : require
#include "common.glsl"

layout(local_size_x_id = SC_KHR_WG) in;
layout(constant_id = SC_KHR_WG) const uint WG = 128;
layout(constant_id = SC_KHR_D) const uint D = 128;
layout(constant_id = SC_KHR_NSG) const uint NSG = 4;
layout(constant_id = SC_KHR_BC) const uint BC = 32;
layout(constant_id = SC_KHR_SPARSE) const uint SPARSE = 0;
layout(constant_id = SC_KHR_SG) const uint SG = 32;
layout(constant_id = SC_KHR_M) const uint M = 16;
layout(constant_id = SC_KHR_N) const uint N = 16;
layout(constant_id = SC_KHR_K) const uint K = 16;
layout(constant_id = SC_KHR_MF) const uint MF = 1;
layout(constant_id = SC_KHR_LSE) const uint LSE = 0;
layout(constant_id = SC_KHR_RG) const uint RG = 0;
layout(constant_id = SC_KHR_REP) const uint REP = 0;
layout(constant_id = SC_KHR_P16) const uint P16 = 0;

#ifdef SORTED   // sparse plans: Q, K and V from their norm-sorted copies (contiguous key tiles)
layout(set = 0, binding = BIND_QS) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_KS) readonly buffer KB { uvec4 k4[]; };
layout(set = 0, binding = BIND_VS) readonly buffer VB { uvec4 v4[]; };
#define IN_ROW(hd, s, len, which) (s)
#define KV_ROW(kvhd, s) (s)
#else
layout(set = 0, binding = BIND_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };
layout(set = 0, binding = BIND_V) readonly buffer VB { uvec4 v4[]; };
#define IN_ROW src_row
#endif
layout(set = 0, binding = BIND_O) writeonly buffer OB { uvec4 o4[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_LSE) writeonly buffer LB { float lse[]; };

#define AF coopmat<ELT, gl_ScopeSubgroup, M, K, gl_MatrixUseA>
#define BF coopmat<ELT, gl_ScopeSubgroup, K, N, gl_MatrixUseB>
#define CF coopmat<float, gl_ScopeSubgroup, M, N, gl_MatrixUseAccumulator>
#define HF coopmat<ELT, gl_ScopeSubgroup, M, N, gl_MatrixUseAccumulator>   // P16 (fp16 only)

const bool REGS = RG != 0 && MF == 1;   // the register softmax (one row fragment a subgroup)
const uint RS = MF * M;                 // query rows per subgroup
const uint BR = NSG * RS;               // query rows per workgroup (the host keeps BR <= 2 BC)
const uint DV = D / 8;                  // 16-byte vectors per row
const uint KVS = D + 8;                 // padded shared row, 16-bit elements: fragment rows hit new banks
const uint SST = BC + 4;                // padded score row, floats
const uint PST = BC + 8;                // padded probability row, 16-bit elements
const uint LPR = SG >= RS ? SG / RS : 1;  // lanes per row in the softmax
const uint RPL = RS > SG ? RS / SG : 1;   // rows per lane
const uint CPL = BC / LPR;              // columns per lane
// Compile-time bounds of the fragment arrays (head_dim <= 128, M >= 8, N >= 8, K >= 8, MF <= 2).
#define MAX_MF 2
#define MAX_DK 16
#define MAX_DN 16
#define MAX_RPL 2

shared uvec4 kv4[2 * BC * KVS / 8];     // K tile then V tile; Q and O staging (BR <= 2 BC)
shared float s_sh[NSG * RS * SST];
shared ELT p_sh[NSG * RS * PST];
shared float row_a[BR];                 // this tile's rescale factor per row, then 1 / l
shared float rowid_sh[2 * M * N];      // row, then column, of each element of an M x N matrix

AF qf[MAX_MF * MAX_DK];
CF of[MAX_MF * MAX_DN];
CF rowid;                               // each element's row (the shared-memory softmax)
float row_m[MAX_RPL], row_l[MAX_RPL];   // this lane's rows' running max (log2 units) and sum
#define MAX_E 8                         // accumulator elements a lane holds (the host checks)
#define MAX_NB 8                        // S fragments a tile (BC / N)
float em[MAX_E], el[MAX_E];             // register softmax: element i's row max (log2 units), partial sum

#include "attention_tiles.glsl"

// x rounded to the input type's precision, still in fp32 (bf16: to nearest even in integer
// arithmetic, so ELT(x) is then exact whatever rounding the driver's conversion uses); and two
// fp32 values in the input type, packed low first.
#ifdef IN_BF16
float elt_round(float x) { return uintBitsToFloat(bf16_bits(x) << 16); }
uint pack_pair(float a, float b) { return bf16_bits(a) | (bf16_bits(b) << 16); }
#else
float elt_round(float x) { return x; }
uint pack_pair(float a, float b) { return packHalf2x16(vec2(a, b)); }
#endif

void put_kv() {
    [[unroll]] for (uint j = 0; j < MAX_NPT; j++) {
        if (j >= NPT) break;
        uint e = j * WG + gl_LocalInvocationID.x, c = e / DV, a = e % DV;
        kv4[(c * KVS) / 8 + a] = rk[j];
        kv4[(BC * KVS + c * KVS) / 8 + a] = rv[j];
    }
}

// Online softmax of this subgroup's RS rows over the tile in s_sh (scores * log2(e) * scale):
// LPR lanes per row, each over CPL columns starting at a row-dependent rotation (bank spread);
// P to p_sh, the rescale factor to row_a. True if some row's max grew (O must be rescaled).
bool softmax_rows(uint sg, uint valid) {
    uint lane = gl_SubgroupInvocationID, part = lane % LPR;
    float t = pc.scale * 1.4426950408889634;
    bool grew = false;
    [[unroll]] for (uint j = 0; j < MAX_RPL; j++) {
        if (j >= RPL) break;
        uint r = j * SG / LPR + lane / LPR;   // row within the subgroup
        uint sb = (sg * RS + r) * SST, pb = (sg * RS + r) * PST;
        float mx = row_m[j];
        for (uint i = 0; i < CPL; i++) {
            uint c = part + LPR * ((i + r) % CPL);
            if (c < valid) mx = max(mx, s_sh[sb + c] * t);
        }
        [[unroll]] for (uint x = 1; x < 8; x *= 2)
            if (x < LPR) mx = max(mx, subgroupShuffleXor(mx, x));
        float sum = 0.0;
        for (uint i = 0; i < CPL; i++) {
            uint c = part + LPR * ((i + r) % CPL);
            float p = c < valid ? exp2(s_sh[sb + c] * t - mx) : 0.0;
            p_sh[pb + c] = ELT(elt_round(p));
            sum += p;
        }
        [[unroll]] for (uint x = 1; x < 8; x *= 2)
            if (x < LPR) sum += subgroupShuffleXor(sum, x);
        float alpha = exp2(row_m[j] - mx);   // 0 on the first tile (row_m = -inf)
        grew = grew || mx > row_m[j];
        row_l[j] = row_l[j] * alpha + sum;
        row_m[j] = mx;
        if (part == 0) row_a[sg * RS + r] = alpha;
    }
    return subgroupAny(grew);
}

// Multiplies each accumulator row of this subgroup's O by row_a.
void scale_rows(uint sg) {
    [[unroll]] for (uint m = 0; m < MAX_MF; m++) {
        if (m >= MF) break;
        for (uint i = 0; i < rowid.length(); i++) {
            float a = row_a[sg * RS + m * M + uint(rowid[i])];
            [[unroll]] for (uint d = 0; d < MAX_DN; d++)
                if (d < D / N) of[m * MAX_DN + d][i] *= a;
        }
    }
}

// acc[m]: S of this subgroup's row fragment m against keys n * N.. of the staged K tile.
void score_keys(uint n, out CF acc[MAX_MF]) {
    [[unroll]] for (uint m = 0; m < MAX_MF; m++) acc[m] = CF(0.0);
    [[unroll]] for (uint kk = 0; kk < MAX_DK; kk++) {
        if (kk >= D / K) break;
        BF kb;   // B[k][n] = K[n][k]: the row-major K tile read column-major
        coopMatLoad(kb, kv4, (n * N * KVS + kk * K) / 8, KVS / 8, gl_CooperativeMatrixLayoutColumnMajor);
        [[unroll]] for (uint m = 0; m < MAX_MF; m++)
            if (m < MF) acc[m] = coopMatMulAdd(qf[m * MAX_DK + kk], kb, acc[m]);
    }
}

// O += P V over keys j * K.. of the staged V tile, P of row fragment m in pa[m].
void add_pv(uint j, AF pa[MAX_MF]) {
    [[unroll]] for (uint d = 0; d < MAX_DN; d++) {
        if (d >= D / N) break;
        BF vb;
        coopMatLoad(vb, kv4, (BC * KVS + j * K * KVS + d * N) / 8, KVS / 8, gl_CooperativeMatrixLayoutRowMajor);
        [[unroll]] for (uint m = 0; m < MAX_MF; m++)
            if (m < MF) of[m * MAX_DN + d] = coopMatMulAdd(pa[m], vb, of[m * MAX_DN + d]);
    }
}

uint rep_of(uint i) { return (REP >> (4 * i)) & 15u; }

// Row max (op 0) or sum (op 1) of element values v: the elements of a row a lane holds
// (REP), then across the RG lanes of its row group; every element gets its row's value.
void row_reduce(inout float v[MAX_E], uint op) {
    const uint E = uint(rowid.length());
    [[unroll]] for (uint i = 1; i < MAX_E; i++) {
        if (i >= E) break;
        uint r = rep_of(i);
        if (r != i) v[r] = op == 0 ? max(v[r], v[i]) : v[r] + v[i];
    }
    [[unroll]] for (uint i = 0; i < MAX_E; i++) {
        if (i >= E) break;
        if (rep_of(i) != i) continue;
        [[unroll]] for (uint x = 1; x < 32; x *= 2) {
            if (x >= RG) break;
            float o = subgroupShuffleXor(v[i], x);
            v[i] = op == 0 ? max(v[i], o) : v[i] + o;
        }
    }
    [[unroll]] for (uint i = 1; i < MAX_E; i++) {
        if (i >= E) break;
        v[i] = v[rep_of(i)];
    }
}

// The last, partial key tile: scores of columns >= valid to -inf, each element's max again
// (the column table is loaded only here: it stays out of the loop's registers).
void mask_columns(inout CF sf[MAX_NB], out float mx[MAX_E], uint valid) {
    const uint E = uint(rowid.length()), NB = BC / N;
    CF col;
    coopMatLoad(col, rowid_sh, M * N, N, gl_CooperativeMatrixLayoutRowMajor);
    [[unroll]] for (uint i = 0; i < MAX_E; i++) {
        if (i >= E) break;
        mx[i] = em[i];
        [[unroll]] for (uint n = 0; n < MAX_NB; n++) {
            if (n >= NB) break;
            if (n * N + uint(col[i]) >= valid) sf[n][i] = -1.0 / 0.0;
            mx[i] = max(mx[i], sf[n][i]);
        }
    }
}

// One key tile with the softmax in registers: S fragments, row max per element, P = exp2 in
// place, O rescaled per element, P to shared memory as the A operand, O += P V.
void process_tile_regs(uint s0) {
    const uint E = uint(rowid.length()), NB = BC / N;
    uint sg = gl_SubgroupID, valid = min(BC, pc.kv_len - s0);
    float t = pc.scale * 1.4426950408889634;
    CF sf[MAX_NB];
    [[unroll]] for (uint n = 0; n < MAX_NB; n++) {
        if (n >= NB) break;
        CF acc[MAX_MF];
        score_keys(n, acc);
        sf[n] = acc[0];
    }
    float mx[MAX_E];
    [[unroll]] for (uint i = 0; i < MAX_E; i++) {
        if (i >= E) break;
        mx[i] = em[i];
        [[unroll]] for (uint n = 0; n < MAX_NB; n++) {
            if (n >= NB) break;
            sf[n][i] *= t;
            mx[i] = max(mx[i], sf[n][i]);
        }
    }
    if (valid < BC) mask_columns(sf, mx, valid);
    row_reduce(mx, 0);
    bool grew = false;
    [[unroll]] for (uint i = 0; i < MAX_E; i++) {
        if (i >= E) break;
        float a = exp2(em[i] - mx[i]), sum = 0.0;
        grew = grew || mx[i] > em[i];
        em[i] = mx[i];
        [[unroll]] for (uint n = 0; n < MAX_NB; n++) {
            if (n >= NB) break;
            float p = exp2(sf[n][i] - mx[i]);
            sf[n][i] = elt_round(p);
            sum += p;
        }
        el[i] = el[i] * a + sum;
        mx[i] = a;
    }
    if (subgroupAny(grew)) {
        [[unroll]] for (uint d = 0; d < MAX_DN; d++) {
            if (d >= D / N) break;
            [[unroll]] for (uint i = 0; i < MAX_E; i++)
                if (i < E) of[d][i] *= mx[i];
        }
    }
    uint pr = sg * RS;
    [[unroll]] for (uint n = 0; n < MAX_NB; n++) {
        if (n >= NB) break;
#ifndef IN_BF16
        if (P16 != 0) {
            HF ph = HF(sf[n]);
            coopMatStore(ph, p_sh, pr * PST + n * N, PST, gl_CooperativeMatrixLayoutRowMajor);
        } else
#endif
        {
            coopMatStore(sf[n], s_sh, pr * SST + n * N, SST, gl_CooperativeMatrixLayoutRowMajor);
        }
    }
    if (P16 == 0) {
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        uint lane = gl_SubgroupInvocationID;
        for (uint e = lane; e < RS * BC / 2; e += SG) {
            uint r = pr + e / (BC / 2), c = 2 * (e % (BC / 2));
            uint h = r * PST + c;   // 16-bit element, even
            p_sh[h] = ELT(s_sh[r * SST + c]);
            p_sh[h + 1] = ELT(s_sh[r * SST + c + 1]);
        }
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    for (uint j = 0; j < BC / K; j++) {
        AF pa[MAX_MF];
        coopMatLoad(pa[0], p_sh, pr * PST + j * K, PST, gl_CooperativeMatrixLayoutRowMajor);
        add_pv(j, pa);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();   // P read before the next tile overwrites it
}

// One key tile (staged in shared memory by the caller): S, the softmax, O.
void process_tile(uint s0) {
    uint sg = gl_SubgroupID;
    for (uint n = 0; n < BC / N; n++) {
        CF acc[MAX_MF];
        score_keys(n, acc);
        [[unroll]] for (uint m = 0; m < MAX_MF; m++)
            if (m < MF) coopMatStore(acc[m], s_sh, (sg * RS + m * M) * SST + n * N, SST, gl_CooperativeMatrixLayoutRowMajor);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    bool grew = softmax_rows(sg, min(BC, pc.kv_len - s0));
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    if (grew) scale_rows(sg);
    for (uint j = 0; j < BC / K; j++) {
        AF pa[MAX_MF];
        [[unroll]] for (uint m = 0; m < MAX_MF; m++)
            if (m < MF) coopMatLoad(pa[m], p_sh, (sg * RS + m * M) * PST + j * K, PST, gl_CooperativeMatrixLayoutRowMajor);
        add_pv(j, pa);
    }
}

// Q rows of the workgroup through shared memory into A fragments; state reset.
void load_q(uint hd, uint p0) {
    for (uint e = gl_LocalInvocationID.x; e < BR * DV; e += WG) {
        uint r = e / DV, a = e % DV, s = p0 + r;
        kv4[(r * KVS) / 8 + a] = s < pc.q_len ? q4[(hd * pc.q_len + IN_ROW(hd, s, pc.q_len, 0)) * DV + a] : uvec4(0);
    }
    for (uint e = gl_LocalInvocationID.x; e < M * N; e += WG) {
        rowid_sh[e] = float(e / N);
        rowid_sh[M * N + e] = float(e % N);
    }
    barrier_shared();
    if (REGS) {
        [[unroll]] for (uint i = 0; i < MAX_E; i++) {
            em[i] = -1.0 / 0.0;
            el[i] = 0.0;
        }
    }
    uint sg = gl_SubgroupID;
    [[unroll]] for (uint m = 0; m < MAX_MF; m++) {
        if (m >= MF) break;
        [[unroll]] for (uint kk = 0; kk < MAX_DK; kk++)
            if (kk < D / K)
                coopMatLoad(qf[m * MAX_DK + kk], kv4, ((sg * RS + m * M) * KVS + kk * K) / 8, KVS / 8,
                            gl_CooperativeMatrixLayoutRowMajor);
        [[unroll]] for (uint d = 0; d < MAX_DN; d++)
            if (d < D / N) of[m * MAX_DN + d] = CF(0.0);
    }
    if (!REGS) coopMatLoad(rowid, rowid_sh, 0, N, gl_CooperativeMatrixLayoutRowMajor);
    [[unroll]] for (uint j = 0; j < MAX_RPL; j++) {
        row_m[j] = -1.0 / 0.0;
        row_l[j] = 0.0;
    }
}

// Each row's log-sum-exp in natural units (row_m is in log2 units, scores * scale * log2(e)),
// from the lane that holds the row's statistics, at its original row.
void store_lse(uint hd, uint p0) {
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    if (REGS) {
        CF row;   // loaded here: a register softmax keeps no row table live through the loop
        coopMatLoad(row, rowid_sh, 0, N, gl_CooperativeMatrixLayoutRowMajor);
        [[unroll]] for (uint i = 0; i < MAX_E; i++) {
            if (i >= uint(rowid.length())) break;
            uint s = p0 + sg * RS + uint(row[i]);
            if (rep_of(i) == i && lane % RG == 0 && s < pc.q_len)
                lse[hd * pc.q_len + src_row(hd, s, pc.q_len, 0)] = (em[i] + log2(el[i])) * 0.6931471805599453;
        }
        return;
    }
    [[unroll]] for (uint j = 0; j < MAX_RPL; j++) {
        uint s = p0 + sg * RS + j * SG / LPR + lane / LPR;
        if (j < RPL && lane % LPR == 0 && s < pc.q_len)
            lse[hd * pc.q_len + src_row(hd, s, pc.q_len, 0)] = (row_m[j] + log2(row_l[j])) * 0.6931471805599453;
    }
}

// O / l rounded to the input type, through shared memory, scattered back through perm_q when SPARSE.
// Each fp32 fragment goes through the subgroup's score rows and is rounded by the lanes: a 16-bit
// accumulator to convert to is not a listed type everywhere (the H100 lists bf16 only as A and B).
void store_o(uint hd, uint p0) {
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    if (REGS) {
        row_reduce(el, 1);
        [[unroll]] for (uint d = 0; d < MAX_DN; d++) {
            if (d >= D / N) break;
            [[unroll]] for (uint i = 0; i < MAX_E; i++)
                if (i < uint(rowid.length())) of[d][i] *= el[i] > 0.0 ? 1.0 / el[i] : 0.0;
        }
    } else {
        [[unroll]] for (uint j = 0; j < MAX_RPL; j++)
            if (j < RPL && lane % LPR == 0) row_a[sg * RS + j * SG / LPR + lane / LPR] = row_l[j] > 0.0 ? 1.0 / row_l[j] : 0.0;
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        scale_rows(sg);
    }
    barrier_shared();   // every subgroup is done with the last tile: reuse it for O
    [[unroll]] for (uint m = 0; m < MAX_MF; m++) {
        if (m >= MF) break;
        [[unroll]] for (uint d = 0; d < MAX_DN; d++) {
            if (d >= D / N) break;
            uint r0 = sg * RS + m * M;
            coopMatStore(of[m * MAX_DN + d], s_sh, r0 * SST, SST, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < M * N / 2; e += SG) {
                uint r = r0 + e / (N / 2), c = 2 * (e % (N / 2)), h = r * KVS + d * N + c;   // h: 16-bit element
                kv4[h / 8][(h % 8) / 2] = pack_pair(s_sh[r * SST + c], s_sh[r * SST + c + 1]);
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();   // read before the next fragment overwrites the rows
        }
    }
    barrier_shared();
    for (uint e = gl_LocalInvocationID.x; e < BR * DV; e += WG) {
        uint r = e / DV, a = e % DV, s = p0 + r;
        if (s < pc.q_len) o4[(hd * pc.q_len + src_row(hd, s, pc.q_len, 0)) * DV + a] = kv4[(r * KVS) / 8 + a];
    }
}

void main() {
    uint hd = gl_WorkGroupID.y, kvhd = kv_of(hd), p0 = gl_WorkGroupID.x * BR;
    load_q(hd, p0);
    uint s0 = first_tile(hd, p0);
    if (s0 != END) fetch_kv(kvhd, s0);
    [[dont_unroll]] while (s0 != END) {
        barrier_shared();   // every subgroup is done with the previous tile (and Q staging)
        put_kv();
        uint s1 = next_tile(s0);
        if (s1 != END) fetch_kv(kvhd, s1);
        barrier_shared();
        if (REGS) process_tile_regs(s0);
        else process_tile(s0);
        s0 = s1;
    }
    store_o(hd, p0);
    if (LSE != 0) store_lse(hd, p0);
}
