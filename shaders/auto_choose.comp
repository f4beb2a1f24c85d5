#version 450
// Auto sort (BAATT_SORT_AUTO), step 2: per kv head, sum the sampled recalls of its query heads
// (auto_recall.comp) for each blocking; if the original order recalls strictly more, overwrite
// the kv head's perm_k and its query heads' perm_q with the identity and their MASK / COUNTS
// slot 0 rows with slot 1 (the original-order selection). The attention stage then needs no
// change. Every workgroup of a kv head recomputes the same sum in the same order (so they all
// agree) and rewrites a strided share of the rows; workgroup 0 records the choice in
// AUTO[heads * S * 2 + kvhd] (1 = sorted). Grid: (chunks, batch * kv_heads).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = SC_CHOOSE_ROWS) const uint ROWS = 64;
layout(set = 0, binding = BIND_PERM_Q) writeonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) writeonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_COUNTS) buffer CT { uint counts[]; };
layout(set = 0, binding = BIND_AUTO) buffer AU { uint au[]; };   // recalls as float bits

shared uint sh_sorted;

void main() {
    uint tid = gl_LocalInvocationID.x, kvhd = gl_WorkGroupID.y;
    uint g = pc.heads / pc.kv_heads, bh = pc.batch * pc.heads;
    uint hd0 = (kvhd / pc.kv_heads) * pc.heads + (kvhd % pc.kv_heads) * g;   // first query head
    uint S = min(ROWS, pc.q_len);
    if (tid == 0) {
        float rs = 0.0, ri = 0.0;
        for (uint e = 0; e < g * S; e++) {
            rs += uintBitsToFloat(au[(hd0 * S + e) * 2]);
            ri += uintBitsToFloat(au[(hd0 * S + e) * 2 + 1]);
        }
        sh_sorted = ri > rs ? 0u : 1u;   // ties (and NaN) keep the sorted blocking, as baatt_auto_keeps_sorted (reference.c)
        if (gl_WorkGroupID.x == 0) au[bh * S * 2 + kvhd] = sh_sorted;
    }
    barrier();
    if (sh_sorted != 0u) return;
    uint stride = gl_NumWorkGroups.x * 256, e0 = gl_WorkGroupID.x * 256 + tid;
    for (uint t = e0; t < pc.kv_len; t += stride) perm_k[kvhd * pc.kv_len + t] = int(t);
    for (uint e = e0; e < g * pc.q_len; e += stride) perm_q[hd0 * pc.q_len + e] = int(e % pc.q_len);
    uint mw = pc.nq * pc.words;
    for (uint e = e0; e < g * mw; e += stride) mask[hd0 * mw + e] = mask[bh * mw + hd0 * mw + e];
    for (uint e = e0; e < g * pc.nq; e += stride) counts[hd0 * pc.nq + e] = counts[bh * pc.nq + hd0 * pc.nq + e];
}
