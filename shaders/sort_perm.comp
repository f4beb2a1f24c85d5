#version 450
// Stage 1d: sorted keys -> permutation perm[hd][p] = original index at sorted position p
// (or the identity when sorting is off). Grid: (ceil(len / 256), heads of this side).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = BIND_KEYS) readonly buffer KeyB { uvec2 keys[]; };
layout(set = 0, binding = BIND_PERM_Q) writeonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) writeonly buffer PK { int perm_k[]; };

void main() {
    uint hd = gl_WorkGroupID.y, p = gl_GlobalInvocationID.x;
    uint len = pc.which == 0 ? pc.q_len : pc.kv_len;
    if (p >= len) return;
    int v = pc.identity != 0 ? int(p) : int(keys[pc.key_offset + hd * pc.padded + p].y);
    if (pc.which == 0) perm_q[hd * len + p] = v;
    else perm_k[hd * len + p] = v;
}
