#version 450
// Stage 2: per block of the sorted order (of the original order when pc.identity is set), mean m
// and diagonal variance v over its valid tokens, written straight into the scoring features
// (SPEC step 3's concatenated GEMM operands):
//   Q side: [t*m | c*v | c*m^2]     K side: [m | v + m^2 | v]      (c = lambda * t^2 / 2)
// features: float [heads of side, blocks, 3*D]. One workgroup of 256 invocations per block.
// Grid: (blocks, heads of this side).
#include "common.glsl"
// RV = D / VEC_N invocations read a row, 16 bytes each, and G = 256 / RV rows run side by side;
// partial sums meet in shared memory (one invocation per dimension with 2-byte loads was bound by
// load instructions, NOTES.md #26).
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint D = 64;
// COPY (the cooperative-matrix-2 sparse path with a fixed blocking): the first pass also writes
// the rows it reads, in sorted order, to the side's sorted copy (QS, or KS and V's rows to VS),
// so no permute.comp pass is needed.
layout(constant_id = 1) const bool COPY = false;
layout(set = 0, binding = BIND_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_QFEAT) writeonly buffer QF { float qfeat[]; };
layout(set = 0, binding = BIND_KFEAT) writeonly buffer KF { float kfeat[]; };
layout(set = 0, binding = BIND_QS) writeonly buffer QSB { uvec4 qs4[]; };
layout(set = 0, binding = BIND_KS) writeonly buffer KSB { uvec4 ks4[]; };
layout(set = 0, binding = BIND_V) readonly buffer VB { uvec4 v4[]; };
layout(set = 0, binding = BIND_VS) writeonly buffer VSB { uvec4 vs4[]; };

const uint RV = D / VEC_N, G = 256 / RV;
// Source rows of the block's tokens, read once per workgroup (both passes use them).
// pc.identity: the original-order blocking whatever the perms hold (auto sort).
shared uint rows[128];
shared float part[G * D];   // [row group][dim] partial sums
shared float mean_sh[D];

// Sum over this invocation's rows (t = g, g + G, ...) of its VEC_N dims, minus m, to the power p
// (1 or 2), reduced over the row groups: dimension d's total lands in part[d]. copy: also write
// the rows to the sorted copy (block row s0 + t), on the K side V's rows too.
void block_sums(uint hd, uint len, uint s0, uint n, uint g, uint a, vec4 mlo, vec4 mhi, bool square, bool copy) {
    vec4 slo = vec4(0.0), shi = vec4(0.0);
    for (uint t = g; t < n; t += G) {
        uint v = (hd * len + rows[t]) * RV + a, c = (hd * len + s0 + t) * RV + a;
        uvec4 w = pc.which == 0 ? q4[v] : k4[v];
        if (copy && pc.which == 0) qs4[c] = w;
        if (copy && pc.which != 0) ks4[c] = w, vs4[c] = v4[v];
        vec4 lo, hi;
        unpack_vec(w, lo, hi);
        lo -= mlo, hi -= mhi;
        slo += square ? lo * lo : lo;
        shi += square ? hi * hi : hi;
    }
    uint o = g * D + a * VEC_N;
    for (uint e = 0; e < 4; e++) part[o + e] = slo[e];
    for (uint e = 4; e < VEC_N; e++) part[o + e] = shi[e - 4];
    barrier();
    uint d = gl_LocalInvocationID.x;
    if (d < D) {
        float s = 0.0;
        for (uint h = 0; h < G; h++) s += part[h * D + d];
        part[d] = s;   // row group 0's slot: read only by d itself above
    }
    barrier();
}

void main() {
    uint tid = gl_LocalInvocationID.x, blk = gl_WorkGroupID.x, hd = gl_WorkGroupID.y;
    uint len = pc.which == 0 ? pc.q_len : pc.kv_len;
    uint nb = pc.which == 0 ? pc.nq : pc.nk;
    uint s0 = blk * pc.block, n = min(pc.block, len - s0);
    for (uint t = tid; t < n; t += 256)
        rows[t] = pc.identity != 0 ? s0 + t : uint(pc.which == 0 ? perm_q[hd * len + s0 + t] : perm_k[hd * len + s0 + t]);
    barrier();
    uint g = tid / RV, a = tid % RV;
    block_sums(hd, len, s0, n, g, a, vec4(0.0), vec4(0.0), false, COPY && pc.identity == 0u);
    if (tid < D) mean_sh[tid] = part[tid] / float(n);
    barrier();
    // two passes: no cancellation for tokens far from the origin
    vec4 mlo, mhi = vec4(0.0);
    for (uint e = 0; e < 4; e++) mlo[e] = mean_sh[a * VEC_N + e];
    for (uint e = 4; e < VEC_N; e++) mhi[e - 4] = mean_sh[a * VEC_N + e];
    block_sums(hd, len, s0, n, g, a, mlo, mhi, true, false);
    if (tid >= D) return;
    float m = mean_sh[tid], var = part[tid] / float(n);
    uint o = (hd * nb + blk) * 3 * D;
    if (pc.which == 0) {
        qfeat[o + tid] = pc.scale * m;
        qfeat[o + D + tid] = pc.cov * var;
        qfeat[o + 2 * D + tid] = pc.cov * m * m;
    } else {
        kfeat[o + tid] = m;
        kfeat[o + D + tid] = var + m * m;
        kfeat[o + 2 * D + tid] = var;
    }
}
