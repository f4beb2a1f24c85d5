#version 450
// The per-kv-head choice (BAATT_SORT_AUTO / BAATT_COVARIANCE_AUTO), step 2: per kv head, sum the
// sampled recalls of its query heads (auto_recall.comp) for each candidate and take the one with
// the largest sum, a later candidate winning only when strictly greater (ties and NaN keep the
// earlier one: baatt_auto_pick in src/reference.c runs the same loop). If the winner w is not
// candidate 0, overwrite the kv head's query heads' MASK / COUNTS slot 0 rows with slot w, and if
// w is on the original order where candidate 0 is sorted, its perm_k and the query heads' perm_q
// with the identity. The attention stage then needs no change. Every workgroup of a kv head
// recomputes the same sums in the same order (so they all agree) and rewrites a strided share of
// the rows; workgroup 0 records w in AUTO[heads * S * CANDS + kvhd]. Grid: (chunks, batch * kv_heads).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = SC_CHOOSE_ROWS) const uint ROWS = 64;
layout(constant_id = SC_CHOOSE_CANDS) const uint CANDS = 2;
layout(constant_id = SC_CHOOSE_SORTED) const uint SORTED = 1;   // bit c: candidate c is norm-sorted
layout(set = 0, binding = BIND_PERM_Q) writeonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) writeonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_COUNTS) buffer CT { uint counts[]; };
layout(set = 0, binding = BIND_AUTO) buffer AU { uint au[]; };   // recalls as float bits

shared uint sh_win;

void main() {
    uint tid = gl_LocalInvocationID.x, kvhd = gl_WorkGroupID.y;
    uint g = pc.heads / pc.kv_heads, bh = pc.batch * pc.heads;
    uint hd0 = (kvhd / pc.kv_heads) * pc.heads + (kvhd % pc.kv_heads) * g;   // first query head
    uint S = min(ROWS, pc.q_len);
    if (tid == 0) {
        float rec[AUTO_MAX_CANDS];
        for (uint c = 0; c < CANDS; c++) rec[c] = 0.0;
        for (uint e = 0; e < g * S; e++)
            for (uint c = 0; c < CANDS; c++) rec[c] += uintBitsToFloat(au[(hd0 * S + e) * CANDS + c]);
        uint w = 0;
        for (uint c = 1; c < CANDS; c++)
            if (rec[c] > rec[w]) w = c;
        sh_win = w;
        if (gl_WorkGroupID.x == 0) au[AUTO_CHOICE_WORD(bh, S, CANDS) + kvhd] = w;
    }
    barrier();
    uint w = sh_win;
    if (w == 0u) return;
    uint stride = gl_NumWorkGroups.x * 256, e0 = gl_WorkGroupID.x * 256 + tid;
    if ((SORTED & 1u) != 0u && ((SORTED >> w) & 1u) == 0u) {
        for (uint t = e0; t < pc.kv_len; t += stride) perm_k[kvhd * pc.kv_len + t] = int(t);
        for (uint e = e0; e < g * pc.q_len; e += stride) perm_q[hd0 * pc.q_len + e] = int(e % pc.q_len);
    }
    uint mw = pc.nq * pc.words;
    for (uint e = e0; e < g * mw; e += stride) mask[hd0 * mw + e] = mask[w * bh * mw + hd0 * mw + e];
    for (uint e = e0; e < g * pc.nq; e += stride) counts[hd0 * pc.nq + e] = counts[w * bh * pc.nq + hd0 * pc.nq + e];
}
