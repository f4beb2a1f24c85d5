#version 450
// Stage 1a: token L2 norms -> sort keys. keys[side][hd][i] = (~bits(norm_i), i) for i < len and
// (~0, ~0) padding up to pc.padded, so an ascending sort gives descending norms, stable by index.
// RV = D / VEC_N invocations read one row, 16 bytes each (consecutive invocations, consecutive
// bytes: one invocation per row read 256-byte strided vectors and reached 2 TB/s, NOTES.md #26);
// their partial sums meet in shared memory. Each invocation reads C vectors, of rows R apart
// (more bytes in flight per invocation: NOTES.md #36). R = 256 / RV, C * R rows per workgroup.
// Grid: (ceil(padded / (C * R)), heads of this side).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 256) in;
layout(constant_id = SC_KEYS_D) const uint D = 64;
// 16-byte views: a row is D * sizeof(ELEM) bytes, a whole number of vectors for D = 64, 128.
layout(set = 0, binding = BIND_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };
float sumsq(uvec4 w) {
    vec4 lo, hi;
    unpack_vec(w, lo, hi);
    return dot(lo, lo) + dot(hi, hi);
}
layout(set = 0, binding = BIND_KEYS) writeonly buffer KeyB { uvec2 keys[]; };

const uint RV = D / VEC_N, R = 256 / RV, C = SORT_KEYS_C;
shared float part[C * 256];

void main() {
    uint hd = gl_WorkGroupID.y, t = gl_LocalInvocationID.x;
    uint len = pc.which == 0 ? pc.q_len : pc.kv_len;
    uint row0 = gl_WorkGroupID.x * C * R + t / RV;
    uvec4 w[C];
    [[unroll]] for (uint c = 0; c < C; c++) {
        uint row = row0 + c * R, v = (hd * len + row) * RV + t % RV;
        w[c] = row < len ? (pc.which == 0 ? q4[v] : k4[v]) : uvec4(0);
    }
    [[unroll]] for (uint c = 0; c < C; c++) part[c * 256 + t] = sumsq(w[c]);
    barrier();
    uint i = gl_WorkGroupID.x * C * R + t;
    if (t >= C * R || i >= pc.padded) return;
    uvec2 key = uvec2(0xffffffffu);
    if (i < len) {
        float s = 0.0;
        for (uint a = 0; a < RV; a++) s += part[t * RV + a];
        key = uvec2(~floatBitsToUint(sqrt(s)), i);
    }
    keys[pc.key_offset + hd * pc.padded + i] = key;
}
