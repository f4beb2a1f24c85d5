#version 450
// Stage 1c: one global bitonic compare-exchange step (stage sort_k, distance sort_j >= the chunk of
// sort_local). Grid: (ceil(padded / 2 / 256), heads of this side).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = BIND_KEYS) buffer KeyB { uvec2 keys[]; };

void main() {
    uint t = gl_GlobalInvocationID.x;
    if (t >= pc.padded / 2) return;
    uint j = pc.sort_j;
    uint i = 2 * j * (t / j) + (t % j);
    bool up = (i & pc.sort_k) == 0;
    uint base = pc.key_offset + gl_WorkGroupID.y * pc.padded;
    uvec2 a = keys[base + i], b = keys[base + i + j];
    if (key_less(b, a) == up) { keys[base + i] = b; keys[base + i + j] = a; }
}
