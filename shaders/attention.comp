#version 450
// Stage 5 (portable path): FlashAttention-2 style exact attention over the selected key blocks.
// One workgroup owns BR consecutive sorted query positions (inside one query block), keeps Q in
// shared memory, streams BC-key tiles of K and V through shared memory, and keeps the output rows
// in registers with an online softmax in fp32. SPARSE = 1 walks the row's selection bit mask and
// gathers rows through perm_q / perm_k; SPARSE = 0 is dense attention in the original order.
// No subgroup-size assumption; shared use = 4*(BR*D + BC*(D+1) + BC*D + BR*BC) bytes, chosen by
// the host to fit maxComputeSharedMemorySize. Grid: (ceil(q_len / BR), batch * heads).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = SC_ATT_WG) const uint WG = 128;
layout(constant_id = SC_ATT_D) const uint D = 64;
layout(constant_id = SC_ATT_BR) const uint BR = 16;
layout(constant_id = SC_ATT_BC) const uint BC = 16;
layout(constant_id = SC_ATT_SPARSE) const uint SPARSE = 0;
layout(constant_id = SC_ATT_LSE) const uint LSE = 0;
layout(set = 0, binding = BIND_Q) readonly buffer QB { ELEM q[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { ELEM k[]; };
layout(set = 0, binding = BIND_V) readonly buffer VB { ELEM v[]; };
layout(set = 0, binding = BIND_O) writeonly buffer OB { ELEM o[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_LSE) writeonly buffer LB { float lse[]; };

const uint PER_T = BR * D / WG;   // output elements per thread
const uint KS = D + 1;            // padded K row: conflict-free column reads
shared float Qs[BR * D];
shared float Ks[BC * KS];
shared float Vs[BC * D];
shared float S[BR * BC];
shared float row_m[BR], row_l[BR], row_a[BR];
float acc[PER_T];

void process_tile(uint kvhd, uint s0) {
    uint tid = gl_LocalInvocationID.x;
    for (uint e = tid; e < BC * D; e += WG) {
        uint c = e / D, a = e % D, s = s0 + c;
        float kx = 0.0, vx = 0.0;
        if (s < pc.kv_len) {
            uint row = SPARSE != 0 ? uint(perm_k[kvhd * pc.kv_len + s]) : s;
            uint i = (kvhd * pc.kv_len + row) * D + a;
            kx = LOAD(k[i]);
            vx = LOAD(v[i]);
        }
        Ks[c * KS + a] = kx;
        Vs[c * D + a] = vx;
    }
    barrier();
    for (uint e = tid; e < BR * BC; e += WG) {
        uint r = e / BC, c = e % BC;
        float dot = 0.0;
        for (uint a = 0; a < D; a++) dot += Qs[r * D + a] * Ks[c * KS + a];
        S[e] = s0 + c < pc.kv_len ? dot * pc.scale : -1.0 / 0.0;
    }
    barrier();
    for (uint r = tid; r < BR; r += WG) {
        float mo = row_m[r], mx = mo;
        for (uint c = 0; c < BC; c++) mx = max(mx, S[r * BC + c]);
        float sum = 0.0;
        for (uint c = 0; c < BC; c++) { float p = exp(S[r * BC + c] - mx); S[r * BC + c] = p; sum += p; }
        float alpha = exp(mo - mx);
        row_l[r] = row_l[r] * alpha + sum;
        row_m[r] = mx;
        row_a[r] = alpha;
    }
    barrier();
    for (uint i = 0; i < PER_T; i++) {
        uint e = tid + i * WG, r = e / D, a = e % D;
        float x = acc[i] * row_a[r];
        for (uint c = 0; c < BC; c++) x += S[r * BC + c] * Vs[c * D + a];
        acc[i] = x;
    }
    barrier();
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint hd = gl_WorkGroupID.y, kvhd = kv_of(hd), p0 = gl_WorkGroupID.x * BR;
    for (uint e = tid; e < BR * D; e += WG) {
        uint r = e / D, a = e % D, p = p0 + r;
        float x = 0.0;
        if (p < pc.q_len) {
            uint row = SPARSE != 0 ? uint(perm_q[hd * pc.q_len + p]) : p;
            x = LOAD(q[(hd * pc.q_len + row) * D + a]);
        }
        Qs[e] = x;
    }
    for (uint r = tid; r < BR; r += WG) { row_m[r] = -1.0 / 0.0; row_l[r] = 0.0; }
    for (uint i = 0; i < PER_T; i++) acc[i] = 0.0;
    barrier();
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
    for (uint i = 0; i < PER_T; i++) {
        uint e = tid + i * WG, r = e / D, a = e % D, p = p0 + r;
        if (p >= pc.q_len) continue;
        uint row = SPARSE != 0 ? uint(perm_q[hd * pc.q_len + p]) : p;
        o[(hd * pc.q_len + row) * D + a] = STORE(acc[i] / row_l[r]);
    }
    // row_m is in natural units (S holds scaled scores): log sum exp = m + log l.
    for (uint r = tid; LSE != 0 && r < BR && p0 + r < pc.q_len; r += WG) {
        uint row = SPARSE != 0 ? uint(perm_q[hd * pc.q_len + p0 + r]) : p0 + r;
        lse[hd * pc.q_len + row] = row_m[r] + log(row_l[r]);
    }
}
