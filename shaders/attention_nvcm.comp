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
// Shared memory (fp16 KV tile doubles as Q and O staging): 2*BC*D*2 + NSG*16*BC*(4+2) + ... bytes;
// BC = 32, D = 128, NSG = 4: 16 KiB + 12 KiB.
// Grid: (ceil(q_len / BR), batch * heads). Workgroup = NSG * SG threads.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint D = 128;
layout(constant_id = 2) const uint NSG = 4;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint SPARSE = 0;
layout(constant_id = 5) const uint SG = 32;

layout(set = 0, binding = BIND_Q) readonly buffer QB { float16_t q[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { float16_t k[]; };
layout(set = 0, binding = BIND_V) readonly buffer VB { float16_t v[]; };
layout(set = 0, binding = BIND_O) writeonly buffer OB { float16_t o[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };

#define ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define HALF fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>

const uint BR = 16 * NSG;
const uint KV_HALVES = 2 * BC * D;                               // K tile then V tile
const uint STAGE = (BR * D > KV_HALVES) ? BR * D : KV_HALVES;    // also Q / O staging
shared float16_t kv_sh[STAGE];
shared float s_sh[NSG * 16 * BC];
shared float16_t p_sh[NSG * 16 * BC];
shared float row_m[BR], row_l[BR], row_a[BR];
shared float rowid_sh[16 * 16];

HALF qf[D / 16];
ACC of[D / 16];
ACC rowid;

void load_kv_tile(uint kvhd, uint s0) {
    for (uint e = gl_LocalInvocationID.x; e < BC * D; e += WG) {
        uint c = e / D, a = e % D, s = s0 + c;
        float16_t kx = float16_t(0.0), vx = float16_t(0.0);
        if (s < pc.kv_len) {
            uint row = SPARSE != 0 ? uint(perm_k[kvhd * pc.kv_len + s]) : s;
            uint i = (kvhd * pc.kv_len + row) * D + a;
            kx = k[i];
            vx = v[i];
        }
        kv_sh[e] = kx;
        kv_sh[BC * D + e] = vx;
    }
}

// Lane r < 16 of subgroup sg: online softmax of its row over this tile's BC scores.
void softmax_rows(uint sg, uint s0) {
    uint lane = gl_SubgroupInvocationID;
    if (lane >= 16) return;
    uint r = sg * 16 + lane, base = (sg * 16 + lane) * BC;
    float mo = row_m[r], mx = mo;
    for (uint c = 0; c < BC; c++) {
        float s = s0 + c < pc.kv_len ? s_sh[base + c] * pc.scale : -1.0 / 0.0;
        s_sh[base + c] = s;
        mx = max(mx, s);
    }
    float sum = 0.0;
    for (uint c = 0; c < BC; c++) {
        float p = mx == -1.0 / 0.0 ? 0.0 : exp(s_sh[base + c] - mx);
        p_sh[base + c] = float16_t(p);
        sum += p;
    }
    float alpha = mo == -1.0 / 0.0 ? 0.0 : exp(mo - mx);
    row_l[r] = row_l[r] * alpha + sum;
    row_m[r] = mx;
    row_a[r] = alpha;
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
            coopMatLoadNV(kb, kv_sh, n * 16 * D + kk * 16, D, true);
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
            coopMatLoadNV(vb, kv_sh, BC * D + j * 16 * D + d * 16, D, false);
            of[d] = coopMatMulAddNV(pa, vb, of[d]);
        }
    }
}

void load_q(uint hd, uint p0) {
    for (uint e = gl_LocalInvocationID.x; e < BR * D; e += WG) {
        uint r = e / D, a = e % D, p = p0 + r;
        float16_t x = float16_t(0.0);
        if (p < pc.q_len) {
            uint row = SPARSE != 0 ? uint(perm_q[hd * pc.q_len + p]) : p;
            x = q[(hd * pc.q_len + row) * D + a];
        }
        kv_sh[e] = x;
    }
    for (uint e = gl_LocalInvocationID.x; e < 256; e += WG) rowid_sh[e] = float(e / 16);
    for (uint r = gl_LocalInvocationID.x; r < BR; r += WG) { row_m[r] = -1.0 / 0.0; row_l[r] = 0.0; }
    barrier();
    uint sg = gl_SubgroupID;
    for (uint kk = 0; kk < D / 16; kk++) coopMatLoadNV(qf[kk], kv_sh, sg * 16 * D + kk * 16, D, false);
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
        coopMatStoreNV(oh, kv_sh, sg * 16 * D + d * 16, D, false);
    }
    barrier();
    for (uint e = gl_LocalInvocationID.x; e < BR * D; e += WG) {
        uint r = e / D, a = e % D, p = p0 + r;
        if (p >= pc.q_len) continue;
        uint row = SPARSE != 0 ? uint(perm_q[hd * pc.q_len + p]) : p;
        o[(hd * pc.q_len + row) * D + a] = kv_sh[e];
    }
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
