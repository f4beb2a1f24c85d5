#version 450
// Probe of the KHR fp32 accumulator's element layout (src/stages/attend.c, khr_layout): which
// row and column of an M x N matrix element i of lane L holds, written as cell[L * KL_MAX_E + i] =
// row * N + column, and the element count in cell[SG * KL_MAX_E]. The host derives the register
// softmax's row groups from it (baatt_khr_layout_classify). One subgroup, pinned to SG.
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#include "interface.h"
layout(local_size_x_id = SC_KL_SG) in;
layout(constant_id = SC_KL_SG) const uint SG = 32;
layout(constant_id = SC_KL_M) const uint M = 16;
layout(constant_id = SC_KL_N) const uint N = 16;
layout(set = 0, binding = BIND_O) writeonly buffer OB { uint cell[]; };

shared float tab[2 * M * N];   // each element's row, then its column

void main() {
    uint lane = gl_LocalInvocationID.x;
    for (uint e = lane; e < M * N; e += SG) {
        tab[e] = float(e / N);
        tab[M * N + e] = float(e % N);
    }
    barrier();
    coopmat<float, gl_ScopeSubgroup, M, N, gl_MatrixUseAccumulator> r, c;
    coopMatLoad(r, tab, 0, N, gl_CooperativeMatrixLayoutRowMajor);
    coopMatLoad(c, tab, M * N, N, gl_CooperativeMatrixLayoutRowMajor);
    for (uint i = 0; i < r.length() && i < KL_MAX_E; i++) cell[lane * KL_MAX_E + i] = uint(r[i]) * N + uint(c[i]);
    if (lane == 0) cell[SG * KL_MAX_E] = uint(r.length());
}
