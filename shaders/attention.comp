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
// Variants (fp16 tensors only, tuning key portable=; NOTES.md #62-#65), packed fp16 arithmetic
// (shaderFloat16) on the tiles whose value range allows it, fp32 on the others (see below), in
// runs RUN times those below (RUN = 2: portable=...+long):
//  HALF_QK: S = Q K^T as f16vec2 FMAs over runs of 8 head dims, each run's sum added in fp32.
//  HALF_PV: P rounded to fp16 (as the tensor-core kernels do) and O += P V as f16vec4 FMAs over
//    runs of 8 keys, each run added to the fp32 O.
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_memory_scope_semantics : require
#if defined(HALF_QK) || defined(HALF_PV)
#if !defined(IN_F16)
#error "the packed-half variants read fp16 tensors"
#endif
#define HALF_MATH
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif
#include "common.glsl"
layout(local_size_x_id = SC_ATT_WG) in;
layout(constant_id = SC_ATT_WG) const uint WG = 128;
layout(constant_id = SC_ATT_D) const uint D = 64;
layout(constant_id = SC_ATT_BR) const uint BR = 64;
layout(constant_id = SC_ATT_BC) const uint BC = 32;
layout(constant_id = SC_ATT_SPARSE) const uint SPARSE = 0;
layout(constant_id = SC_ATT_LSE) const uint LSE = 0;
layout(constant_id = SC_ATT_RUN) const uint RUN = 1;
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
#if defined(HALF_PV)
#define PTYPE float16_t
#else
#define PTYPE float
#endif
shared PTYPE p_sh[BR * PS];
shared float red_sh[BR * LANES];

#if defined(HALF_MATH)
// fp16 words as packed halves (a bit cast, no conversion).
f16vec4 h_load(uvec2 w) { return f16vec4(unpackFloat2x16(w.x), unpackFloat2x16(w.y)); }
// The largest |element| of 8 halves as fp16 bits (inf and NaN above every finite value).
uint amax_bits(uvec4 w) {
    uvec4 m = w & 0x7fff7fffu;
    uvec4 x = max(m & 0xffffu, m >> 16);
    return max(max(x.x, x.y), max(x.z, x.w));
}
float bits_value(uint b) { return unpackHalf2x16(b).x; }
const uint HALF_INF = 0x7c00u;
// Range flags: put_kv sets one to the number of the tile it stages (from 1) when that tile must
// run in fp32; read after the next barrier, so every invocation takes the same branch.
uint tile_no = 0;
#endif
#if defined(HALF_QK)
// Q is staged times ts, the power of two at or below scale * log2(e) (exact: no rounding, and
// the products' range grows 8x at head_dim 128), capped at 1 so the staging cannot overflow.
float q_prescale() {
    float t = pc.scale * 1.4426950408889634;
    return t > 0.0 && t < 1.0 ? exp2(floor(log2(t))) : 1.0;
}
// Error and range: each product and each of a lane's 3 FMAs over a run rounds to fp16, so a
// score (log2 units) is off by ~2^-11 times the run partials' magnitudes: ~1e-3 on N(0, 1)
// inputs, O then off by about that fraction of V's spread, within bf16 inputs' tolerance
// (th_tolerance_variant). The error grows with the products, and outlier channels (|q|, |k| ~ 30,
// as diffusion models have) would put ~0.05 into near-tied scores; so a tile takes the fp16
// path only where max|q'| max|k| <= QK_MAX (the Q tile's and the K tile's largest elements),
// which also keeps every partial (<= 4 HRUN QK_MAX) far from overflow; other tiles run in fp32
// (test_portable.c checks both on outliers and on overflowing values).
const uint HRUN = 2 * RUN;  // shared words (4 head dims each) per fp16 partial sum of S
#define MAX_HRUN 4
const float QK_MAX = 4.0;   // N(0, 1) inputs give ~2.5 at head_dim 128 (64 x 32 tiles)
shared uint q_amax;         // the staged Q tile's largest |q'|, fp16 bits
shared uint k_big;          // the last tile number whose scores run in fp32
#endif
#if defined(HALF_PV)
// P <= 1 and sums of P V over 8 keys (relative error ~8 * 2^-11 of sum |p v|, the order of P's
// own fp16 rounding) stay finite while every |v| < 4096: put_kv flags a tile with a larger (or
// non-finite) V element, and that tile's P V runs in fp32.
const uint PRUN = 8 * RUN;  // keys per fp16 partial sum of P V
#define MAX_PRUN 16
// fp16 bits of 32768 / PRUN (4096 for runs of 8): |v| at or above it (or inf/NaN) flags the tile
uint v_big_bits() { return (30u - uint(findMSB(PRUN))) << 10; }
shared uint v_big;          // the last tile number whose P V runs in fp32
#endif

#include "attention_tiles.glsl"

// O rows, unnormalised: element (i, j) at i * OV + j
vec4 acc[MAX_ROWS * MAX_OV];
float row_m[MAX_ROWS], row_l[MAX_ROWS];   // running max (log2 units) and this lane's part of the sum

void put_kv() {
#if defined(HALF_MATH)
    uint ka = 0, va = 0;
    tile_no++;
#endif
    [[unroll]] for (uint j = 0; j < MAX_NPT; j++) {
        if (j >= NPT) break;
        uint e = j * WG + gl_LocalInvocationID.x, c = e / DV, a = (e % DV) * SPV;
        [[unroll]] for (uint h = 0; h < SPV; h++) {
            k_sh[c * QS + a + h] = sw_part(rk[j], h);
            v_sh[c * D4 + a + h] = sw_part(rv[j], h);
        }
#if defined(HALF_MATH)
        ka = max(ka, amax_bits(rk[j]));
        va = max(va, amax_bits(rv[j]));
#endif
    }
    // every writer writes the same value; q_amax is final (written before the loop's barrier)
#if defined(HALF_QK)
    if (max(ka, q_amax) >= HALF_INF || bits_value(ka) * bits_value(q_amax) > QK_MAX) k_big = tile_no;
#endif
#if defined(HALF_PV)
    if (va >= v_big_bits()) v_big = tile_no;
#endif
}

// The inner loops of Q K^T and P V run UNROLL steps an iteration (the host keeps D / 4 and BC
// multiples of it): drivers may leave them rolled, and independent steps let the shared-memory
// loads of one overlap the multiply-adds of another (8 was the fastest on the H100, NOTES #75).
const uint UNROLL = ATT_UNROLL;

// One step of S = Q K^T in fp32: head dims 4a..4a+3 of this invocation's rows and columns (Q as
// staged), an fma chain per score (4 instructions, where a dot product and an add take 5).
void qk_step(uint g, uint l, uint a, inout float s[MAX_ROWS * MAX_TC]) {
    vec4 qv[MAX_ROWS];
    [[unroll]] for (uint i = 0; i < ROWS; i++) qv[i] = sw_load(q_sh[(g * ROWS + i) * QS + a]);
    [[unroll]] for (uint j = 0; j < MAX_TC; j++) {
        if (j >= TC) break;
        vec4 kv = sw_load(k_sh[(l + LANES * j) * QS + a]);
        [[unroll]] for (uint i = 0; i < ROWS; i++) {
            float x = fma(qv[i].x, kv.x, s[i * MAX_TC + j]);
            x = fma(qv[i].y, kv.y, x);
            x = fma(qv[i].z, kv.z, x);
            s[i * MAX_TC + j] = fma(qv[i].w, kv.w, x);
        }
    }
}

void scores_f32(uint g, uint l, out float s[MAX_ROWS * MAX_TC]) {
    [[unroll]] for (uint x = 0; x < MAX_ROWS * MAX_TC; x++) s[x] = 0.0;
    for (uint a = 0; a < D4; a += UNROLL)
        [[unroll]] for (uint u = 0; u < UNROLL; u++) qk_step(g, l, a + u, s);
}

#if defined(HALF_QK)
// The same on packed halves: a run of HRUN words as f16vec2 FMAs, its two halves summed into fp32.
void scores_half(uint g, uint l, out float s[MAX_ROWS * MAX_TC]) {
    [[unroll]] for (uint x = 0; x < MAX_ROWS * MAX_TC; x++) s[x] = 0.0;
    for (uint a = 0; a < D4; a += HRUN) {
        f16vec4 qh[MAX_ROWS * MAX_HRUN];
        [[unroll]] for (uint i = 0; i < ROWS; i++)
            [[unroll]] for (uint h = 0; h < MAX_HRUN; h++)
                if (h < HRUN) qh[i * MAX_HRUN + h] = h_load(q_sh[(g * ROWS + i) * QS + a + h]);
        [[unroll]] for (uint j = 0; j < MAX_TC; j++) {
            if (j >= TC) break;
            f16vec4 kh[MAX_HRUN];
            [[unroll]] for (uint h = 0; h < MAX_HRUN; h++)
                if (h < HRUN) kh[h] = h_load(k_sh[(l + LANES * j) * QS + a + h]);
            [[unroll]] for (uint i = 0; i < ROWS; i++) {
                f16vec2 r = qh[i * MAX_HRUN].xy * kh[0].xy;
                r = fma(qh[i * MAX_HRUN].zw, kh[0].zw, r);
                [[unroll]] for (uint h = 1; h < MAX_HRUN; h++) {
                    if (h >= HRUN) break;
                    r = fma(qh[i * MAX_HRUN + h].xy, kh[h].xy, r);
                    r = fma(qh[i * MAX_HRUN + h].zw, kh[h].zw, r);
                }
                s[i * MAX_TC + j] += float(r.x) + float(r.y);
            }
        }
    }
}
#endif

// S = Q K^T in log2 units; padding keys get -inf.
void scores(uint g, uint l, uint valid, out float s[MAX_ROWS * MAX_TC]) {
#if defined(HALF_QK)
    if (k_big != tile_no) scores_half(g, l, s);
    else scores_f32(g, l, s);
    float t = pc.scale * 1.4426950408889634 / q_prescale();
#else
    scores_f32(g, l, s);
    float t = pc.scale * 1.4426950408889634;
#endif
    [[unroll]] for (uint j = 0; j < MAX_TC; j++)
        [[unroll]] for (uint i = 0; i < ROWS; i++)
            s[i * MAX_TC + j] = j < TC && l + LANES * j < valid ? s[i * MAX_TC + j] * t : -1.0 / 0.0;
}

// Each row's max over the tile, combined across the row group's lanes through red_sh, and
// the running max.
void tile_max(uint g, uint l, float s[MAX_ROWS * MAX_TC], out float mxs[MAX_ROWS]) {
    [[unroll]] for (uint i = 0; i < ROWS; i++) {
        float mx = s[i * MAX_TC];
        [[unroll]] for (uint j = 1; j < MAX_TC; j++)
            if (j < TC) mx = max(mx, s[i * MAX_TC + j]);
        red_sh[(g * ROWS + i) * LANES + l] = mx;
    }
    barrier_shared();
    [[unroll]] for (uint i = 0; i < ROWS; i++) {
        mxs[i] = row_m[i];
        [[unroll]] for (uint x = 0; x < LANES; x++) mxs[i] = max(mxs[i], red_sh[(g * ROWS + i) * LANES + x]);
    }
}

// Online softmax over one tile: the row max, P to p_sh, O rescaled. Caller barriers: red_sh free
// before, p_sh read after.
void softmax(uint g, uint l, inout float s[MAX_ROWS * MAX_TC]) {
    float mxs[MAX_ROWS];
    tile_max(g, l, s, mxs);
    [[unroll]] for (uint i = 0; i < ROWS; i++) {
        uint r = g * ROWS + i;
        float mx = mxs[i];
        float alpha = exp2(row_m[i] - mx), sum = 0.0;   // alpha 0 on the first tile (row_m = -inf)
        [[unroll]] for (uint j = 0; j < MAX_TC; j++) {
            if (j >= TC) break;
            float p = exp2(s[i * MAX_TC + j] - mx);
            p_sh[r * PS + l + LANES * j] = PTYPE(p);
            sum += p;   // of the unrounded P (the tensor-core kernels sum in fp32 too)
        }
        row_l[i] = row_l[i] * alpha + sum;
        row_m[i] = mx;
        [[unroll]] for (uint j = 0; j < MAX_OV; j++)
            if (j < OV) acc[i * OV + j] *= alpha;
    }
}

// One step of O += P V in fp32: key c for this invocation's rows and output words.
void pv_step(uint g, uint l, uint c) {
    float p[MAX_ROWS];
    [[unroll]] for (uint i = 0; i < ROWS; i++) p[i] = float(p_sh[(g * ROWS + i) * PS + c]);
    [[unroll]] for (uint j = 0; j < MAX_OV; j++) {
        if (j >= OV) break;
        vec4 vv = sw_load(v_sh[c * D4 + l + LANES * j]);
        [[unroll]] for (uint i = 0; i < ROWS; i++) acc[i * OV + j] = fma(vec4(p[i]), vv, acc[i * OV + j]);
    }
}

void accumulate_pv_f32(uint g, uint l) {
    for (uint c = 0; c < BC; c += UNROLL)
        [[unroll]] for (uint u = 0; u < UNROLL; u++) pv_step(g, l, c + u);
}

#if defined(HALF_PV)
// O += P V on packed halves: runs of PRUN keys as f16vec4 FMAs, each run added to the fp32 O.
void accumulate_pv_half(uint g, uint l) {
    for (uint c0 = 0; c0 < BC; c0 += PRUN) {
        f16vec4 part[MAX_ROWS * MAX_OV];
        [[unroll]] for (uint u = 0; u < MAX_PRUN; u++) {
            if (u >= PRUN) break;
            uint c = c0 + u;
            float16_t p[MAX_ROWS];
            [[unroll]] for (uint i = 0; i < ROWS; i++) p[i] = p_sh[(g * ROWS + i) * PS + c];
            [[unroll]] for (uint j = 0; j < MAX_OV; j++) {
                if (j >= OV) break;
                f16vec4 vv = h_load(v_sh[c * D4 + l + LANES * j]);
                [[unroll]] for (uint i = 0; i < ROWS; i++)
                    part[i * OV + j] = u == 0 ? p[i] * vv : fma(f16vec4(p[i]), vv, part[i * OV + j]);
            }
        }
        [[unroll]] for (uint j = 0; j < MAX_OV; j++)
            if (j < OV)
                [[unroll]] for (uint i = 0; i < ROWS; i++) acc[i * OV + j] += vec4(part[i * OV + j]);
    }
}
#endif

void accumulate_pv(uint g, uint l) {
#if defined(HALF_PV)
    if (v_big != tile_no) {   // uniform: a workgroup-wide flag set before the barrier
        accumulate_pv_half(g, l);
        return;
    }
#endif
    accumulate_pv_f32(g, l);
}

void load_q(uint hd, uint p0) {
    for (uint e = gl_LocalInvocationID.x; e < BR * DV; e += WG) {
        uint r = e / DV, a = (e % DV) * SPV, s = p0 + r;
        uvec4 w = s < pc.q_len ? q4[(hd * pc.q_len + src_row(hd, s, pc.q_len, 0)) * DV + e % DV] : uvec4(0);
#if defined(HALF_QK)
        float ts = q_prescale();
        [[unroll]] for (uint h = 0; h < 4; h++) w[h] = packHalf2x16(unpackHalf2x16(w[h]) * ts);
        atomicMax(q_amax, amax_bits(w));
#endif
        [[unroll]] for (uint h = 0; h < SPV; h++) q_sh[r * QS + a + h] = sw_part(w, h);
    }
    [[unroll]] for (uint i = 0; i < MAX_ROWS; i++) {
        row_m[i] = -1.0 / 0.0;
        row_l[i] = 0.0;
        [[unroll]] for (uint j = 0; j < MAX_OV; j++)
            if (j < OV) acc[i * OV + j] = vec4(0.0);
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
            vec4 y = sum != 0.0 ? acc[i * OV + j] / sum : vec4(0.0);   // no key: 0 (NaN still propagates)
            uint d = (l + LANES * j) * 4;
            [[unroll]] for (uint c = 0; c < 4; c++) o[row * D + d + c] = STORE(y[c]);
        }
        if (LSE != 0 && l == 0) lse[row] = (row_m[i] + log2(sum)) * 0.6931471805599453;
    }
}

void main() {
    uint hd = gl_WorkGroupID.y, kvhd = kv_of(hd), p0 = gl_WorkGroupID.x * BR;
    uint g = gl_LocalInvocationID.x / LANES, l = gl_LocalInvocationID.x % LANES;
#if defined(HALF_MATH)
    if (gl_LocalInvocationID.x == 0) {   // tile numbers start at 1
#if defined(HALF_QK)
        q_amax = 0;
        k_big = 0;
#endif
#if defined(HALF_PV)
        v_big = 0;
#endif
    }
    barrier_shared();
#endif
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
