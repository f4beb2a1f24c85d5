#version 450
// Stage 1a: token L2 norms -> sort keys. keys[side][hd][i] = (~bits(norm_i), i) for i < len and
// (~0, ~0) padding up to pc.padded, so an ascending sort gives descending norms, stable by index.
// Grid: (ceil(padded / 256), heads of this side).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint D = 64;
// 16-byte views: a row is D * sizeof(ELEM) bytes, a whole number of vectors for D = 64, 128.
layout(set = 0, binding = BIND_Q) readonly buffer QB { uvec4 q4[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { uvec4 k4[]; };
#ifdef IN_F16
const uint PER_VEC = 8;
float sumsq(uvec4 w) {
    float s = 0.0;
    for (uint j = 0; j < 4; j++) { vec2 h = unpackHalf2x16(w[j]); s += h.x * h.x + h.y * h.y; }
    return s;
}
#elif defined(IN_BF16)
const uint PER_VEC = 8;
float sumsq(uvec4 w) {
    float s = 0.0;
    for (uint j = 0; j < 4; j++) {
        float lo = uintBitsToFloat(w[j] << 16), hi = uintBitsToFloat(w[j] & 0xffff0000u);
        s += lo * lo + hi * hi;
    }
    return s;
}
#else
const uint PER_VEC = 4;
float sumsq(uvec4 w) { vec4 f = uintBitsToFloat(w); return dot(f, f); }
#endif
layout(set = 0, binding = BIND_KEYS) writeonly buffer KeyB { uvec2 keys[]; };

void main() {
    uint hd = gl_WorkGroupID.y, i = gl_GlobalInvocationID.x;
    uint len = pc.which == 0 ? pc.q_len : pc.kv_len;
    if (i >= pc.padded) return;
    uvec2 key = uvec2(0xffffffffu);
    if (i < len) {
        const uint RV = D / PER_VEC;
        uint base = (hd * len + i) * RV;
        float s = 0.0;
        for (uint a = 0; a < RV; a++) s += sumsq(pc.which == 0 ? q4[base + a] : k4[base + a]);
        key = uvec2(~floatBitsToUint(sqrt(s)), i);
    }
    keys[pc.key_offset + hd * pc.padded + i] = key;
}
