#version 450
// Stage 5 (tensor-core path, fp16 Q/K/V/O): the same contract as attention.comp, with the two
// matrix products on NVIDIA cooperative matrices (GL_NV_cooperative_matrix, 16x16x16 fp16 ->
// fp32, subgroup scope), which Debian 12's glslc compiles.
//
// Work split: NSG subgroups per workgroup, each owning 16 query rows (BR = 16*NSG rows, inside
// one query block). Q lives in registers as D/16 A-fragments; K and V tiles of BC keys are
// gathered through perm_k into shared memory once per workgroup; each subgroup computes its
// S = Q K^T (BC/16 accumulators), passes S through shared memory for the row-wise online softmax
// (one lane per row), reads P back as A-fragments and accumulates O += P V in D/16 fp32
// accumulators. Rescaling O by the per-row factor happens in registers: `rowid` is an
// accumulator loaded from a table of row indices, so element i of every accumulator of this type
// belongs to row rowid[i] (one fragment layout per matrix type).
// Shared memory (the fp16 KV tile doubles as Q and O staging): 2*BC*D*2 + NSG*16*BC*(4+2) bytes
// plus row statistics; BC = 32, D = 128, NSG = 4: 16 KiB + 12 KiB.
// Grid: (ceil(q_len / BR), batch * heads). Workgroup = NSG * SG threads.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = SC_NVCM_WG) const uint WG = 128;
layout(constant_id = SC_NVCM_D) const uint D = 128;
layout(constant_id = SC_NVCM_NSG) const uint NSG = 4;
layout(constant_id = SC_NVCM_BC) const uint BC = 32;
layout(constant_id = SC_NVCM_SPARSE) const uint SPARSE = 0;
layout(constant_id = SC_NVCM_SG) const uint SG = 32;
layout(constant_id = SC_NVCM_LSE) const uint LSE = 0;

// 16-byte views (8 halves): rows are D = 64 or 128 halves, so a row is 8 or 16 whole vectors.
layout(set = 0, binding = BIND_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };
layout(set = 0, binding = BIND_V) readonly buffer VB { uvec4 v4[]; };
layout(set = 0, binding = BIND_O) writeonly buffer OB { uvec4 o4[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_LSE) writeonly buffer LB { float lse[]; };

#define ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define HALF fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>

const uint BR = 16 * NSG;
const uint KV_HALVES = 2 * BC * D;                               // K tile then V tile
const uint STAGE = (BR * D > KV_HALVES) ? BR * D : KV_HALVES;    // also Q / O staging
shared uvec4 kv4[STAGE / 8];   // fp16 data as 16-byte vectors: one store per 8 halves
shared float s_sh[NSG * 16 * BC];
shared float16_t p_sh[NSG * 16 * BC];
shared float row_m[BR], row_l[BR], row_a[BR];
shared float rowid_sh[16 * 16];
shared uint tile_rows[BR > BC ? BR : BC];   // gathered source rows of the current tile (or of Q)

const uint DV = D / 8;   // vectors per row

// Offsets below are in halves; the shared tile is addressed in 8-half vectors (element and
// stride of coopMatLoadNV/StoreNV are in units of the array's element type).
void put8(uint at, uvec4 w) { kv4[at / 8] = w; }
uvec4 get8(uint at) { return kv4[at / 8]; }

// tile_rows[i] = source row of sorted position first + i (UINT_MAX past the end), one lane each.
void gather_rows(uint n, uint first, uint len, uint base, uint which) {
    for (uint i = gl_LocalInvocationID.x; i < n; i += WG) {
        uint s = first + i;
        uint row = s;
        if (SPARSE != 0 && s < len) row = uint(which == 0 ? perm_q[base + s] : perm_k[base + s]);
        tile_rows[i] = s < len ? row : 0xffffffffu;
    }
}

HALF qf[D / 16];
ACC of[D / 16];
ACC rowid;

void load_kv_tile(uint kvhd, uint s0) {
    gather_rows(BC, s0, pc.kv_len, kvhd * pc.kv_len, 1);
    barrier();
    for (uint e = gl_LocalInvocationID.x; e < BC * DV; e += WG) {
        uint c = e / DV, a = e % DV, row = tile_rows[c];
        uvec4 kx = uvec4(0), vx = uvec4(0);
        if (row != 0xffffffffu) {
            uint i = (kvhd * pc.kv_len + row) * DV + a;
            kx = k4[i];
            vx = v4[i];
        }
        put8(e * 8, kx);
        put8(BC * D + e * 8, vx);
    }
}

// Online softmax of the subgroup's 16 rows over this tile: two lanes per row (SG = 32), each
// over half of the BC scores, combined with one shuffle.
void softmax_rows(uint sg, uint s0) {
    uint lane = gl_SubgroupInvocationID, half_ = lane & 1u;
    uint r = sg * 16 + (lane >> 1), base = r * BC + half_ * (BC / 2);
    uint c0 = s0 + half_ * (BC / 2);
    float mo = row_m[r], mx = mo;
    for (uint c = 0; c < BC / 2; c++) {
        float s = c0 + c < pc.kv_len ? s_sh[base + c] * pc.scale : -1.0 / 0.0;
        s_sh[base + c] = s;
        mx = max(mx, s);
    }
    mx = max(mx, subgroupShuffleXor(mx, 1u));
    float sum = 0.0;
    for (uint c = 0; c < BC / 2; c++) {
        float p = mx == -1.0 / 0.0 ? 0.0 : exp(s_sh[base + c] - mx);
        p_sh[base + c] = float16_t(p);
        sum += p;
    }
    sum += subgroupShuffleXor(sum, 1u);
    subgroupBarrier();   // both lanes of a row have read row_m before it changes
    if (half_ == 0u) {
        float alpha = mo == -1.0 / 0.0 ? 0.0 : exp(mo - mx);
        row_l[r] = row_l[r] * alpha + sum;
        row_m[r] = mx;
        row_a[r] = alpha;
    }
}

void process_tile(uint kvhd, uint s0) {
    uint sg = gl_SubgroupID;
    barrier();
    load_kv_tile(kvhd, s0);
    barrier();
    for (uint n = 0; n < BC / 16; n++) {
        ACC acc = ACC(0.0);
        for (uint kk = 0; kk < D / 16; kk++) {
            HALF kb;  // B[k][n] = K[n][k]: column-major view of the row-major K tile
            coopMatLoadNV(kb, kv4, (n * 16 * D + kk * 16) / 8, D / 8, true);
            acc = coopMatMulAddNV(qf[kk], kb, acc);
        }
        coopMatStoreNV(acc, s_sh, sg * 16 * BC + n * 16, BC, false);
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    softmax_rows(sg, s0);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    for (uint i = 0; i < rowid.length(); i++) {
        float a = row_a[sg * 16 + uint(rowid[i])];
        for (uint d = 0; d < D / 16; d++) of[d][i] *= a;
    }
    for (uint j = 0; j < BC / 16; j++) {
        HALF pa;
        coopMatLoadNV(pa, p_sh, sg * 16 * BC + j * 16, BC, false);
        for (uint d = 0; d < D / 16; d++) {
            HALF vb;
            coopMatLoadNV(vb, kv4, (BC * D + j * 16 * D + d * 16) / 8, D / 8, false);
            of[d] = coopMatMulAddNV(pa, vb, of[d]);
        }
    }
}

void load_q(uint hd, uint p0) {
    gather_rows(BR, p0, pc.q_len, hd * pc.q_len, 0);
    barrier();
    for (uint e = gl_LocalInvocationID.x; e < BR * DV; e += WG) {
        uint r = e / DV, a = e % DV, row = tile_rows[r];
        put8(e * 8, row != 0xffffffffu ? q4[(hd * pc.q_len + row) * DV + a] : uvec4(0));
    }
    for (uint e = gl_LocalInvocationID.x; e < 256; e += WG) rowid_sh[e] = float(e / 16);
    for (uint r = gl_LocalInvocationID.x; r < BR; r += WG) { row_m[r] = -1.0 / 0.0; row_l[r] = 0.0; }
    barrier();
    uint sg = gl_SubgroupID;
    for (uint kk = 0; kk < D / 16; kk++) coopMatLoadNV(qf[kk], kv4, (sg * 16 * D + kk * 16) / 8, D / 8, false);
    coopMatLoadNV(rowid, rowid_sh, 0, 16, false);
    for (uint d = 0; d < D / 16; d++) of[d] = ACC(0.0);
}

void store_o(uint hd, uint p0) {
    uint sg = gl_SubgroupID;
    for (uint i = 0; i < rowid.length(); i++) {
        float l = row_l[sg * 16 + uint(rowid[i])];
        float inv = l > 0.0 ? 1.0 / l : 0.0;
        for (uint d = 0; d < D / 16; d++) of[d][i] *= inv;
    }
    barrier();  // every subgroup is done with the KV tile: reuse it for O
    for (uint d = 0; d < D / 16; d++) {
        HALF oh = HALF(of[d]);
        coopMatStoreNV(oh, kv4, (sg * 16 * D + d * 16) / 8, D / 8, false);
    }
    gather_rows(BR, p0, pc.q_len, hd * pc.q_len, 0);
    barrier();
    for (uint e = gl_LocalInvocationID.x; e < BR * DV; e += WG) {
        uint r = e / DV, a = e % DV, row = tile_rows[r];
        if (row != 0xffffffffu) o4[(hd * pc.q_len + row) * DV + a] = get8(e * 8);
    }
    // row_m is in natural units (softmax_rows scales S): log sum exp = m + log l.
    for (uint r = gl_LocalInvocationID.x; LSE != 0 && r < BR; r += WG)
        if (tile_rows[r] != 0xffffffffu) lse[hd * pc.q_len + tile_rows[r]] = row_m[r] + log(row_l[r]);
}

void main() {
    uint hd = gl_WorkGroupID.y, kvhd = kv_of(hd), p0 = gl_WorkGroupID.x * BR;
    load_q(hd, p0);
    if (SPARSE != 0) {
        uint mrow = hd * pc.nq + p0 / pc.block;
        for (uint w = 0; w < pc.words; w++) {
            uint bits = mask[mrow * pc.words + w];
            while (bits != 0u) {
                uint J = w * 32 + uint(findLSB(bits));
                bits &= bits - 1u;
                uint end = min((J + 1) * pc.block, pc.kv_len);
                for (uint s0 = J * pc.block; s0 < end; s0 += BC) process_tile(kvhd, s0);
            }
        }
    } else {
        for (uint s0 = 0; s0 < pc.kv_len; s0 += BC) process_tile(kvhd, s0);
    }
    store_o(hd, p0);
}
