#version 450
// Stage 1b: bitonic sort inside shared memory, n = min(N, padded) keys per workgroup (N >= 2 WG,
// both powers of two; 4096 keys where shared memory allows: each global step it saves is a pass
// over all keys in device memory; bench/NOTES.md #19 has what it measured).
// sort_k == 0: sort each chunk completely (stages k = 2..n). sort_k > 0: the tail of global
// stage k, steps j = n/2..1 (the global steps j >= n ran before, in sort_global).
// Directions use the position inside the head, so chunks of one head merge correctly later.
// Grid: (padded / n, heads of this side).
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = SC_LOCAL_WG) const uint WG = 512;
layout(constant_id = SC_LOCAL_N) const uint N = 1024;
layout(set = 0, binding = BIND_KEYS) buffer KeyB { uvec2 keys[]; };
shared uvec2 sh[N];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint n = min(N, pc.padded);
    uint lbase = gl_WorkGroupID.x * n;
    uint base = pc.key_offset + gl_WorkGroupID.y * pc.padded + lbase;
    for (uint t = tid; t < n; t += WG) sh[t] = keys[base + t];
    barrier();
    uint k0 = pc.sort_k == 0 ? 2 : pc.sort_k;
    uint k1 = pc.sort_k == 0 ? n : pc.sort_k;
    for (uint k = k0; k <= k1; k <<= 1) {
        uint j = min(k, n) >> 1;
        // Steps j and j/2 together, one barrier for both: the four keys x, x + j/2, x + j,
        // x + 3j/2 of a 2j-block only meet each other in those two steps (halves the barriers,
        // which bound this kernel).
        for (; j >= 2; j >>= 2) {
            uint h = j >> 1;
            for (uint t = tid; t < n / 4; t += WG) {
                uint i = 2 * j * (t / h) + (t % h);
                bool up = ((lbase + i) & k) == 0;   // k >= 2j: one direction for the 2j-block
                uvec2 a = sh[i], b = sh[i + h], c = sh[i + j], d = sh[i + j + h];
                exchange4(a, b, c, d, up);
                sh[i] = a, sh[i + h] = b, sh[i + j] = c, sh[i + j + h] = d;
            }
            barrier();
        }
        if (j == 1) {
            for (uint t = tid; t < n / 2; t += WG) {
                bool up = ((lbase + 2 * t) & k) == 0;
                uvec2 a = sh[2 * t], b = sh[2 * t + 1];
                exchange(a, b, up);
                sh[2 * t] = a, sh[2 * t + 1] = b;
            }
            barrier();
        }
    }
    for (uint t = tid; t < n; t += WG) keys[base + t] = sh[t];
}
