#version 450
// Stage 5 (portable path): FlashAttention-2 style exact attention over the selected key blocks,
// on plain fp32 arithmetic, for every device (no subgroup or cooperative-matrix assumption).
// A workgroup owns BR consecutive sorted query positions (inside one query block). Register
// blocking as in a scalar GEMM: invocation (g, l) of the BR / ROWS row groups x LANES lanes holds
// ROWS query rows; for S = Q K^T it computes the ROWS x (BC / LANES) scores of columns
// l + LANES * j, for O += P V the ROWS x (D / LANES) outputs of 4-wide column groups l + LANES * j,
// so every operand read from shared memory feeds ROWS or BC / LANES multiply-adds. Q, K and V
// tiles sit in shared memory in their storage type (16-bit types unpacked on read), K and V
// prefetched into registers one tile ahead. The online softmax's row max is combined across the
// LANES invocations of a row group through shared memory; the row sum only once, at the end.
// SPARSE = 1 walks the row's selection bit mask and gathers rows through perm_q / perm_k; SPARSE
// = 0 is dense attention in the original order. Grid: (ceil(q_len / BR), batch * heads).
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_memory_scope_semantics : require
#include "common.glsl"
layout(local_size_x_id = SC_ATT_WG) in;
layout(constant_id = SC_ATT_WG) const uint WG = 128;
layout(constant_id = SC_ATT_D) const uint D = 64;
layout(constant_id = SC_ATT_BR) const uint BR = 64;
layout(constant_id = SC_ATT_BC) const uint BC = 32;
layout(constant_id = SC_ATT_SPARSE) const uint SPARSE = 0;
layout(constant_id = SC_ATT_LSE) const uint LSE = 0;
layout(set = 0, binding = BIND_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };
layout(set = 0, binding = BIND_V) readonly buffer VB { uvec4 v4[]; };
layout(set = 0, binding = BIND_O) writeonly buffer OB { ELEM o[]; };
layout(set = 0, binding = BIND_PERM_Q) readonly buffer PQ { int perm_q[]; };
layout(set = 0, binding = BIND_PERM_K) readonly buffer PK { int perm_k[]; };
layout(set = 0, binding = BIND_MASK) readonly buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_LSE) writeonly buffer LB { float lse[]; };

// Shared-memory words: 4 elements each (uvec2 of 16-bit values, or uvec4 of fp32 bits).
#if defined(IN_F16) || defined(IN_BF16)
#define SW uvec2
SW sw_part(uvec4 w, uint h) { return h == 0 ? w.xy : w.zw; }
#else
#define SW uvec4
SW sw_part(uvec4 w, uint h) { return w; }
#endif
vec4 sw_load(SW w) {
#if defined(IN_F16)
    return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
#elif defined(IN_BF16)
    return uintBitsToFloat(uvec4(w.x << 16, w.x & 0xffff0000u, w.y << 16, w.y & 0xffff0000u));
#else
    return uintBitsToFloat(w);
#endif
}

const uint ROWS = ATT_ROWS, LANES = ATT_LANES;
const uint TC = BC / LANES;       // score columns per invocation
const uint D4 = D / 4;            // shared words per row
const uint OV = D4 / LANES;       // output words per invocation
const uint DV = D / VEC_N;        // 16-byte global vectors per row
const uint SPV = VEC_N / 4;       // shared words per global vector
const uint QS = D4 + 1;           // padded Q and K rows: the LANES rows a step reads hit new banks
const uint PS = BC + 1;           // padded P row
#define MAX_ROWS ATT_ROWS
#define MAX_TC 8
#define MAX_OV 4

shared SW q_sh[BR * QS];
shared SW k_sh[BC * QS];
shared SW v_sh[BC * D4];
shared float p_sh[BR * PS];
shared float red_sh[BR * LANES];

#include "attention_tiles.glsl"

vec4 acc[MAX_ROWS * MAX_OV];      // O rows, unnormalised
float row_m[MAX_ROWS], row_l[MAX_ROWS];   // running max (log2 units) and this lane's part of the sum

void put_kv() {
    [[unroll]] for (uint j = 0; j < MAX_NPT; j++) {
        if (j >= NPT) break;
        uint e = j * WG + gl_LocalInvocationID.x, c = e / DV, a = (e % DV) * SPV;
        [[unroll]] for (uint h = 0; h < SPV; h++) {
            k_sh[c * QS + a + h] = sw_part(rk[j], h);
            v_sh[c * D4 + a + h] = sw_part(rv[j], h);
        }
    }
}

// S = Q K^T for this invocation's rows and columns, in log2 units; padding keys get -inf.
void scores(uint g, uint l, uint valid, out float s[MAX_ROWS * MAX_TC]) {
    [[unroll]] for (uint x = 0; x < MAX_ROWS * MAX_TC; x++) s[x] = 0.0;
    for (uint a = 0; a < D4; a++) {
        vec4 qv[MAX_ROWS];
        [[unroll]] for (uint i = 0; i < ROWS; i++) qv[i] = sw_load(q_sh[(g * ROWS + i) * QS + a]);
        [[unroll]] for (uint j = 0; j < MAX_TC; j++) {
            if (j >= TC) break;
            vec4 kv = sw_load(k_sh[(l + LANES * j) * QS + a]);
            [[unroll]] for (uint i = 0; i < ROWS; i++) s[i * MAX_TC + j] += dot(qv[i], kv);
        }
    }
    float t = pc.scale * 1.4426950408889634;
    [[unroll]] for (uint j = 0; j < MAX_TC; j++)
        [[unroll]] for (uint i = 0; i < ROWS; i++)
            s[i * MAX_TC + j] = j < TC && l + LANES * j < valid ? s[i * MAX_TC + j] * t : -1.0 / 0.0;
}

// Online softmax over one tile: the row max across the row group's lanes (through red_sh), P to
// p_sh, O rescaled. Caller barriers: red_sh free before, p_sh read after.
void softmax(uint g, uint l, inout float s[MAX_ROWS * MAX_TC]) {
    [[unroll]] for (uint i = 0; i < ROWS; i++) {
        float mx = s[i * MAX_TC];
        [[unroll]] for (uint j = 1; j < MAX_TC; j++)
            if (j < TC) mx = max(mx, s[i * MAX_TC + j]);
        red_sh[(g * ROWS + i) * LANES + l] = mx;
    }
    barrier_shared();
    [[unroll]] for (uint i = 0; i < ROWS; i++) {
        uint r = g * ROWS + i;
        float mx = row_m[i];
        [[unroll]] for (uint x = 0; x < LANES; x++) mx = max(mx, red_sh[r * LANES + x]);
        float alpha = exp2(row_m[i] - mx), sum = 0.0;   // alpha 0 on the first tile (row_m = -inf)
        [[unroll]] for (uint j = 0; j < MAX_TC; j++) {
            if (j >= TC) break;
            float p = exp2(s[i * MAX_TC + j] - mx);
            p_sh[r * PS + l + LANES * j] = p;
            sum += p;
        }
        row_l[i] = row_l[i] * alpha + sum;
        row_m[i] = mx;
        [[unroll]] for (uint j = 0; j < MAX_OV; j++)
            if (j < OV) acc[i * MAX_OV + j] *= alpha;
    }
}

void accumulate_pv(uint g, uint l) {
    for (uint c = 0; c < BC; c++) {
        float p[MAX_ROWS];
        [[unroll]] for (uint i = 0; i < ROWS; i++) p[i] = p_sh[(g * ROWS + i) * PS + c];
        [[unroll]] for (uint j = 0; j < MAX_OV; j++) {
            if (j >= OV) break;
            vec4 vv = sw_load(v_sh[c * D4 + l + LANES * j]);
            [[unroll]] for (uint i = 0; i < ROWS; i++) acc[i * MAX_OV + j] += p[i] * vv;
        }
    }
}

void load_q(uint hd, uint p0) {
    for (uint e = gl_LocalInvocationID.x; e < BR * DV; e += WG) {
        uint r = e / DV, a = (e % DV) * SPV, s = p0 + r;
        uvec4 w = s < pc.q_len ? q4[(hd * pc.q_len + src_row(hd, s, pc.q_len, 0)) * DV + e % DV] : uvec4(0);
        [[unroll]] for (uint h = 0; h < SPV; h++) q_sh[r * QS + a + h] = sw_part(w, h);
    }
    [[unroll]] for (uint i = 0; i < MAX_ROWS; i++) {
        row_m[i] = -1.0 / 0.0;
        row_l[i] = 0.0;
        [[unroll]] for (uint j = 0; j < MAX_OV; j++) acc[i * MAX_OV + j] = vec4(0.0);
    }
}

// O / l (the row sum combined across the lanes) and each row's log-sum-exp, at the original rows.
void store(uint hd, uint p0, uint g, uint l) {
    barrier_shared();   // red_sh is free
    [[unroll]] for (uint i = 0; i < ROWS; i++) red_sh[(g * ROWS + i) * LANES + l] = row_l[i];
    barrier_shared();
    [[unroll]] for (uint i = 0; i < ROWS; i++) {
        uint r = g * ROWS + i, s = p0 + r;
        float sum = 0.0;
        [[unroll]] for (uint x = 0; x < LANES; x++) sum += red_sh[r * LANES + x];
        if (s >= pc.q_len) continue;
        uint row = hd * pc.q_len + src_row(hd, s, pc.q_len, 0);
        [[unroll]] for (uint j = 0; j < MAX_OV; j++) {
            if (j >= OV) break;
            vec4 y = sum != 0.0 ? acc[i * MAX_OV + j] / sum : vec4(0.0);   // no key: 0 (NaN still propagates)
            uint d = (l + LANES * j) * 4;
            [[unroll]] for (uint c = 0; c < 4; c++) o[row * D + d + c] = STORE(y[c]);
        }
        if (LSE != 0 && l == 0) lse[row] = (row_m[i] + log2(sum)) * 0.6931471805599453;
    }
}

void main() {
    uint hd = gl_WorkGroupID.y, kvhd = kv_of(hd), p0 = gl_WorkGroupID.x * BR;
    uint g = gl_LocalInvocationID.x / LANES, l = gl_LocalInvocationID.x % LANES;
    load_q(hd, p0);
    uint s0 = first_tile(hd, p0);
    if (s0 != END) fetch_kv(kvhd, s0);
    [[dont_unroll]] while (s0 != END) {
        barrier_shared();   // the previous tile's K, V and P are consumed (and Q is staged)
        put_kv();
        uint s1 = next_tile(s0);
        if (s1 != END) fetch_kv(kvhd, s1);
        barrier_shared();
        float s[MAX_ROWS * MAX_TC];
        scores(g, l, min(BC, pc.kv_len - s0), s);
        softmax(g, l, s);
        barrier_shared();
        accumulate_pv(g, l);
        s0 = s1;
    }
    store(hd, p0, g, l);
}
