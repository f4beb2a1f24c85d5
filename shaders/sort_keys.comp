#version 450
// Stage 1a: token L2 norms -> sort keys. keys[side][hd][i] = (~bits(norm_i), i) for i < len and
// (~0, ~0) padding up to pc.padded, so an ascending sort gives descending norms, stable by index.
// Grid: (ceil(padded / 256), heads of this side).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint D = 64;
layout(set = 0, binding = BIND_Q) readonly buffer QB { ELEM q[]; };
layout(set = 0, binding = BIND_K) readonly buffer KB { ELEM k[]; };
layout(set = 0, binding = BIND_KEYS) writeonly buffer KeyB { uvec2 keys[]; };

void main() {
    uint hd = gl_WorkGroupID.y, i = gl_GlobalInvocationID.x;
    uint len = pc.which == 0 ? pc.q_len : pc.kv_len;
    if (i >= pc.padded) return;
    uvec2 key = uvec2(0xffffffffu);
    if (i < len) {
        uint base = (hd * len + i) * D;
        float s = 0.0;
        for (uint a = 0; a < D; a++) {
            float x = pc.which == 0 ? float(q[base + a]) : float(k[base + a]);
            s += x * x;
        }
        key = uvec2(~floatBitsToUint(sqrt(s)), i);
    }
    keys[pc.key_offset + hd * pc.padded + i] = key;
}
