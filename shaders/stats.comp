#version 450
// Stage 2: per block of the sorted order (of the original order when pc.identity is set), mean m
// and diagonal variance v over its valid tokens, written straight into the scoring features
// (docs/ALGORITHM.md step 3's concatenated GEMM operands):
//   Q side: [t*m | c*v | c*m^2]     K side: [m | v + m^2 | v]      (c = lambda * t^2 / 2)
// features: float [heads of side, blocks, 3*D]. One workgroup of 256 invocations per block.
// SPLIT (tensor-core scoring): the features also go out as two bf16 parts each, for score_cm2:
//   hi = bf16(x), lo = bf16(x - hi)  (x - hi is exact in fp32),  so that
//   q.k ~ hi_q.hi_k + hi_q.lo_k + lo_q.hi_k  with ~2^-16 relative error per term where fp32 has
// 2^-24 (the tests check the logits against the CPU reference's, 1e-4 relative). bf16, not
// fp16: the features' range is fp32's. QSPLIT / KSPLIT: bf16 [heads of side][blocks][2][3*D]
// (the hi row, then the lo row), written as packed pairs.
// Grid: (blocks, heads of this side).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
// RV = D / VEC_N invocations read a row, 16 bytes each, and G = 256 / RV rows run side by side;
// partial sums meet in shared memory (one invocation per dimension with 2-byte loads was bound by
// load instructions, NOTES.md #26).
layout(local_size_x = 256) in;
layout(constant_id = SC_STATS_D) const uint D = 64;
// COPY (the cooperative-matrix-2 sparse path with a fixed blocking): the first pass also writes
// the rows it reads, in sorted order, to the side's sorted copy (QS, or KS and V's rows to VS),
// so no permute.comp pass is needed.
layout(constant_id = SC_STATS_COPY) const bool COPY = false;
layout(constant_id = SC_STATS_SPLIT) const bool SPLIT = false;
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
layout(set = 0, binding = BIND_QSPLIT) writeonly buffer QX { uint qsplit[]; };
layout(set = 0, binding = BIND_KSPLIT) writeonly buffer KX { uint ksplit[]; };

const uint RV = D / VEC_N, G = 256 / RV;
// Source rows of the block's tokens, read once per workgroup (both passes use them).
// pc.identity: the original-order blocking whatever the perms hold (auto sort).
shared uint rows[128];
shared float part[G * D];   // [row group][dim] partial sums
shared float mean_sh[D];
shared float feat_sh[3 * D];   // the block's features (SPLIT)

// Sum over this invocation's rows (t = g, g + G, ...) of its VEC_N dims, minus m, to the power p
// (1 or 2), reduced over the row groups: dimension d's total lands in part[d]. copy: also write
// the rows to the sorted copy (block row s0 + t), on the K side V's rows too. held: the rows are
// still in w from the previous call (a block of at most B * G tokens is one batch).
const uint B = 4;   // rows per invocation and batch, all loaded first: more bytes in flight (NOTES.md #37)
uvec4 w[B];
void block_sums(uint hd, uint len, uint s0, uint n, uint g, uint a, vec4 mlo, vec4 mhi, bool square, bool copy,
                bool held) {
    vec4 slo = vec4(0.0), shi = vec4(0.0);
    for (uint t0 = g; t0 < n; t0 += B * G) {
        uvec4 x[B];   // V's rows (K side, copy)
        [[unroll]] for (uint b = 0; b < B && !held; b++) {
            uint t = t0 + b * G, v = (hd * len + rows[min(t, n - 1)]) * RV + a;
            w[b] = t < n ? (pc.which == 0 ? q4[v] : k4[v]) : uvec4(0);
            if (copy && pc.which != 0 && t < n) x[b] = v4[v];
        }
        [[unroll]] for (uint b = 0; b < B; b++) {
            uint t = t0 + b * G;
            if (t >= n) break;
            if (copy) {   // stores after all loads: they could alias the loads' buffers
                uint c = (hd * len + s0 + t) * RV + a;
                if (pc.which == 0) qs4[c] = w[b];
                else ks4[c] = w[b], vs4[c] = x[b];
            }
            vec4 lo, hi;
            unpack_vec(w[b], lo, hi);
            lo -= mlo, hi -= mhi;
            slo += square ? lo * lo : lo;
            shi += square ? hi * hi : hi;
        }
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
    block_sums(hd, len, s0, n, g, a, vec4(0.0), vec4(0.0), false, COPY && pc.copy != 0u, false);
    if (tid < D) mean_sh[tid] = part[tid] / float(n);
    barrier();
    // two passes: no cancellation for tokens far from the origin (the second one re-reads the
    // rows only for blocks of more than B * G tokens)
    vec4 mlo, mhi = vec4(0.0);
    for (uint e = 0; e < 4; e++) mlo[e] = mean_sh[a * VEC_N + e];
    for (uint e = 4; e < VEC_N; e++) mhi[e - 4] = mean_sh[a * VEC_N + e];
    block_sums(hd, len, s0, n, g, a, mlo, mhi, true, false, n <= B * G);
    uint row = hd * nb + blk, o = row * 3 * D;
    if (tid < D) {
        float m = mean_sh[tid], var = part[tid] / float(n);
        vec3 f = pc.which == 0 ? vec3(pc.scale * m, pc.cov * var, pc.cov * m * m) : vec3(m, var + m * m, var);
        for (uint e = 0; e < 3; e++) {
            if (pc.which == 0) qfeat[o + e * D + tid] = f[e];
            else kfeat[o + e * D + tid] = f[e];
            feat_sh[e * D + tid] = f[e];
        }
    }
    if (!SPLIT) return;
    barrier();
    const uint HF = 3 * D / 2;   // feature pairs, one packed word each
    if (tid >= HF) return;
    vec2 x = vec2(feat_sh[2 * tid], feat_sh[2 * tid + 1]);
    uvec2 hi = uvec2(bf16_bits(x.x), bf16_bits(x.y));
    vec2 r = x - uintBitsToFloat(hi << 16);
    uint hw = hi.x | (hi.y << 16), lw = bf16_bits(r.x) | (bf16_bits(r.y) << 16);
    uint at = row * 2 * HF + tid;
    if (pc.which == 0) qsplit[at] = hw, qsplit[at + HF] = lw;
    else ksplit[at] = hw, ksplit[at + HF] = lw;
}
