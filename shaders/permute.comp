#version 450
// Row gather through the permutations, 16 bytes per invocation (any dtype: rows are RV whole
// vectors). The cooperative-matrix-2 sparse path reads Q, K, V in norm-sorted order so that
// every key block is a contiguous run of rows its tensor loads can address; under auto sort the
// perms change after the statistics, so this pass makes the copies instead of stats.comp:
//   which 0: QS[hd][p] = Q[hd][perm_q[p]]
//   which 1: KS[hd][p] = K[hd][perm_k[p]], VS likewise
// Grid: (ceil(len * RV / 256), heads of the side).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = SC_PERM_RV) const uint RV = 16;
layout(set = 0, binding = BIND_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };
layout(set = 0, binding = BIND_V) readonly buffer VB { uvec4 v4[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_QS) writeonly buffer QS { uvec4 qs4[]; };
layout(set = 0, binding = BIND_KS) writeonly buffer KS { uvec4 ks4[]; };
layout(set = 0, binding = BIND_VS) writeonly buffer VS { uvec4 vs4[]; };

void main() {
    uint hd = gl_WorkGroupID.y, e = gl_GlobalInvocationID.x;
    uint len = pc.which == 1 ? pc.kv_len : pc.q_len;
    if (e >= len * RV) return;
    uint p = e / RV, a = e % RV, sorted = (hd * len + p) * RV + a;
    if (pc.which == 1) {
        uint src = (hd * len + uint(perm_k[hd * len + p])) * RV + a;
        ks4[sorted] = k4[src];
        vs4[sorted] = v4[src];
        return;
    }
    qs4[sorted] = q4[(hd * len + uint(perm_q[hd * len + p])) * RV + a];
}
