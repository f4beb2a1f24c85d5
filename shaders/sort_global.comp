#version 450
// Stage 1c: global bitonic compare-exchange steps of stage sort_k at distance sort_j >= the chunk
// N of sort_local: steps j and j/2 in one pass where j/2 >= N too (each invocation orders the
// four keys i, i + j/2, i + j, i + 3j/2, which meet only each other in those two steps: half the
// passes over the keys), else step j alone.
// Grid: (ceil(padded / 4 / 256) paired, else ceil(padded / 2 / 256), heads of this side).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = SC_GLOBAL_N) const uint N = 4096;
layout(set = 0, binding = BIND_KEYS) buffer KeyB { uvec2 keys[]; };

void main() {
    uint t = gl_GlobalInvocationID.x, j = pc.sort_j;
    bool pair = j / 2 >= N;
    if (t >= pc.padded / (pair ? 4 : 2)) return;
    uint base = pc.key_offset + gl_WorkGroupID.y * pc.padded;
    if (pair) {
        uint h = j >> 1, i = base + 2 * j * (t / h) + (t % h);
        bool up = ((i - base) & pc.sort_k) == 0;   // k >= 2j: one direction for the 2j-block
        uvec2 a = keys[i], b = keys[i + h], c = keys[i + j], d = keys[i + j + h];
        exchange4(a, b, c, d, up);
        keys[i] = a, keys[i + h] = b, keys[i + j] = c, keys[i + j + h] = d;
        return;
    }
    uint i = 2 * j * (t / j) + (t % j);
    bool up = (i & pc.sort_k) == 0;
    uvec2 a = keys[base + i], b = keys[base + i + j];
    if (key_less(b, a) == up) { keys[base + i] = b; keys[base + i + j] = a; }
}
