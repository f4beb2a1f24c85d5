#version 450
// Stage 2: per block of the sorted order (of the original order when pc.identity is set), mean m
// and diagonal variance v over its valid tokens, written straight into the scoring features
// (SPEC step 3's concatenated GEMM operands):
//   Q side: [t*m | c*v | c*m^2]     K side: [m | v + m^2 | v]      (c = lambda * t^2 / 2)
// features: float [heads of side, blocks, 3*D]. One workgroup per block, one thread per dim.
// Grid: (blocks, heads of this side).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint D = 64;
layout(set = 0, binding = BIND_Q) readonly buffer QB { ELEM q[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { ELEM k[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_QFEAT) writeonly buffer QF { float qfeat[]; };
layout(set = 0, binding = BIND_KFEAT) writeonly buffer KF { float kfeat[]; };

// Source rows of the block's tokens, read once per workgroup (both passes and every dimension
// use them). pc.identity: the original-order blocking whatever the perms hold (auto sort).
shared uint rows[128];

float load(uint hd, uint len, uint t, uint a) {
    uint i = (hd * len + rows[t]) * D + a;
    return pc.which == 0 ? LOAD(q[i]) : LOAD(k[i]);
}

void main() {
    uint a = gl_LocalInvocationID.x, blk = gl_WorkGroupID.x, hd = gl_WorkGroupID.y;
    uint len = pc.which == 0 ? pc.q_len : pc.kv_len;
    uint nb = pc.which == 0 ? pc.nq : pc.nk;
    uint s0 = blk * pc.block, n = min(pc.block, len - s0);
    for (uint t = a; t < n; t += D)
        rows[t] = pc.identity != 0 ? s0 + t : uint(pc.which == 0 ? perm_q[hd * len + s0 + t] : perm_k[hd * len + s0 + t]);
    barrier();
    float sum = 0.0;
    for (uint t = 0; t < n; t++) sum += load(hd, len, t, a);
    float m = sum / float(n);
    float var = 0.0;  // two passes: no cancellation for tokens far from the origin
    for (uint t = 0; t < n; t++) { float d = load(hd, len, t, a) - m; var += d * d; }
    var /= float(n);
    uint o = (hd * nb + blk) * 3 * D;
    if (pc.which == 0) {
        qfeat[o + a] = pc.scale * m;
        qfeat[o + D + a] = pc.cov * var;
        qfeat[o + 2 * D + a] = pc.cov * m * m;
    } else {
        kfeat[o + a] = m;
        kfeat[o + D + a] = var + m * m;
        kfeat[o + 2 * D + a] = var;
    }
}
