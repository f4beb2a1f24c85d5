#version 450
// The per-kv-head choice (BAATT_SORT_AUTO / BAATT_COVARIANCE_AUTO), step 1: how much exact
// attention each candidate's selection keeps. S = min(ROWS, q_len) sampled rows per query head,
// sample s at original row i = s * q_len / S (as src/internal.h baatt_auto_row). The row gets
// exact fp32 attention over all keys (S / q_len of the dense work, so plain scalar code), and one
// recall per candidate c (MASK slot c), by the candidate's blocking (bit c of SORTED):
//   sorted blocking: the mass on the key blocks selected for the row's sorted query block
//     (position of i in perm_q, over B); key at sorted position t is in block t / B;
//   original order:  the mass on the blocks selected for query block i / B; key j is in block
//     j / B.
// Keys are walked in sorted order (j = perm_k[t]), so neither blocking needs an inverse
// permutation. RPW sampled rows share a workgroup so each key row is read once (16-byte loads)
// for all of them; each thread keeps an online softmax per row (running max, total, one selected
// sum per candidate) and the workgroup merges them. Writes AUTO[(hd * S + s) * CANDS + c] = the
// recalls. Grid: (ceil(S / RPW), batch * heads).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = SC_RECALL_D) const uint D = 64;
layout(constant_id = SC_RECALL_ROWS) const uint ROWS = 64;
layout(constant_id = SC_RECALL_CANDS) const uint CANDS = 2;
layout(constant_id = SC_RECALL_SORTED) const uint SORTED = 1;
const uint WG = 256, RPW = AUTO_RPW;
layout(set = 0, binding = BIND_Q) readonly buffer QB { ELEM q[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };   // rows: whole 16-byte vectors
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_AUTO) writeonly buffer AU { float recall[]; };

#ifdef IN_F16
const uint PV = 8;   // elements per 16-byte vector
void unpack8(uvec4 w, out float x[8]) {
    for (uint j = 0; j < 4; j++) { vec2 h = unpackHalf2x16(w[j]); x[2 * j] = h.x; x[2 * j + 1] = h.y; }
}
#elif defined(IN_BF16)
const uint PV = 8;
void unpack8(uvec4 w, out float x[8]) {
    for (uint j = 0; j < 4; j++) { x[2 * j] = uintBitsToFloat(w[j] << 16); x[2 * j + 1] = uintBitsToFloat(w[j] & 0xffff0000u); }
}
#else
const uint PV = 4;
void unpack8(uvec4 w, out float x[8]) {
    vec4 f = uintBitsToFloat(w);
    x[0] = f.x, x[1] = f.y, x[2] = f.z, x[3] = f.w, x[4] = x[5] = x[6] = x[7] = 0.0;
}
#endif

shared float qrows[RPW * D];
shared float red[WG];
shared uint sh_pos[RPW];

float reduce(float v, bool is_max) {
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) red[t] = is_max ? max(red[t], red[t + s]) : red[t] + red[t + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

bool selected(uint row_word0, uint J) { return ((mask[row_word0 + J / 32] >> (J % 32)) & 1u) != 0u; }

void main() {
    uint tid = gl_LocalInvocationID.x, hd = gl_WorkGroupID.y, kvhd = kv_of(hd);
    uint S = min(ROWS, pc.q_len), s0 = gl_WorkGroupID.x * RPW;
    uint rows[RPW];
    for (uint r = 0; r < RPW; r++) rows[r] = min(s0 + r, S - 1) * pc.q_len / S;  // spare lanes repeat the last row
    for (uint e = tid; e < RPW * D; e += WG)
        qrows[e] = LOAD(q[(hd * pc.q_len + rows[e / D]) * D + e % D]) * pc.scale;
    if (tid < RPW) sh_pos[tid] = 0;   // defined even if perm_q were not a permutation
    barrier();
    for (uint p = tid; p < pc.q_len; p += WG) {
        int v = perm_q[hd * pc.q_len + p];
        for (uint r = 0; r < RPW; r++)
            if (v == int(rows[r])) sh_pos[r] = p;   // exactly one p matches each row
    }
    barrier();
    uint slot_words = pc.batch * pc.heads * pc.nq * pc.words;
    uint ws[RPW], wi[RPW];
    float m[RPW], tot[RPW], sel[RPW][AUTO_MAX_CANDS];
    for (uint r = 0; r < RPW; r++) {
        ws[r] = (hd * pc.nq + sh_pos[r] / pc.block) * pc.words;   // slot 0's word, sorted query block
        wi[r] = (hd * pc.nq + rows[r] / pc.block) * pc.words;     // original query block
        m[r] = -1.0 / 0.0, tot[r] = 0.0;
        for (uint c = 0; c < CANDS; c++) sel[r][c] = 0.0;
    }
    const uint RV = D / PV;   // vectors per key row
    for (uint t = tid; t < pc.kv_len; t += WG) {
        uint j = uint(perm_k[kvhd * pc.kv_len + t]);
        uint base = (kvhd * pc.kv_len + j) * RV;
        float l[RPW];
        for (uint r = 0; r < RPW; r++) l[r] = 0.0;
        for (uint c = 0; c < RV; c++) {
            float x[8];
            unpack8(k4[base + c], x);
            for (uint r = 0; r < RPW; r++)
                for (uint e = 0; e < PV; e++) l[r] += qrows[r * D + c * PV + e] * x[e];
        }
        for (uint r = 0; r < RPW; r++) {
            if (l[r] > m[r]) {   // rescale the running sums to the new max (exp(-inf) = 0 at first)
                float f = exp(m[r] - l[r]);
                tot[r] *= f;
                for (uint c = 0; c < CANDS; c++) sel[r][c] *= f;
                m[r] = l[r];
            }
            float e = exp(l[r] - m[r]);
            tot[r] += e;
            for (uint c = 0; c < CANDS; c++) {
                bool s = ((SORTED >> c) & 1u) != 0u;
                if (selected(c * slot_words + (s ? ws[r] : wi[r]), s ? t / pc.block : j / pc.block)) sel[r][c] += e;
            }
        }
    }
    for (uint r = 0; r < RPW; r++) {
        float gm = reduce(m[r], true);
        float f = tot[r] > 0.0 ? exp(m[r] - gm) : 0.0;   // idle threads (m = -inf) add nothing
        float T = reduce(tot[r] * f, false);
        for (uint c = 0; c < CANDS; c++) {
            float A = reduce(sel[r][c] * f, false);
            if (tid == 0 && s0 + r < S) recall[(hd * S + s0 + r) * CANDS + c] = A / T;
        }
    }
}
