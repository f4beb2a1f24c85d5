#version 450
// Stage 3: corrected block logits, one (rows x 3D) by (3D x nk) product per head (SPEC step 3):
//   l[I][J] = qfeat[I] . kfeat[J] + ln(n_J)
// for query blocks I = row0 .. row0+rows-1 of heads head0 .. head0+nheads_chunk-1, into the
// chunk's scratch logits [nheads_chunk][rows][nk]. 128x128 output tile per workgroup of 256, 8x8
// per thread (rows 4ty..4ty+3 and 64+4ty.., columns likewise with tx), feature steps of TK through
// shared memory read as vec4s: 4 shared loads feed 64 FMAs (the 64x64 tile with 4x4 per thread ran
// at 23 TFLOP/s, bench/NOTES.md #19). Register arrays have compile-time sizes: sized by
// specialization constants they went to local memory (#17).
// Grid: (ceil(nk / 128), ceil(rows / 128), nheads_chunk).
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint D = 64;
layout(set = 0, binding = BIND_QFEAT) readonly buffer QF { float qfeat[]; };
layout(set = 0, binding = BIND_KFEAT) readonly buffer KF { float kfeat[]; };
layout(set = 0, binding = BIND_LOGITS) writeonly buffer LG { float logits[]; };

#define TILE 128
#define TK 16
const uint F = 3 * D;
shared vec4 As[TK][TILE / 4];   // [feature][row / 4]
shared vec4 Bs[TK][TILE / 4];

void main() {
    uint tid = gl_LocalInvocationID.x, tx = tid % 16, ty = tid / 16;
    uint hl = gl_WorkGroupID.z, hd = pc.head0 + hl, kvhd = kv_of(hd);
    uint r0 = gl_WorkGroupID.y * TILE, c0 = gl_WorkGroupID.x * TILE;
    vec4 acc[8][2];   // acc[i][h]: row (i < 4 ? 4ty + i : 64 + 4ty + i - 4), columns 64h + 4tx .. +3
    [[unroll]] for (uint i = 0; i < 8; i++) acc[i][0] = acc[i][1] = vec4(0.0);
    for (uint kk = 0; kk < F; kk += TK) {
        // TILE x TK of each side: 8 elements per thread, consecutive threads on consecutive features
        [[unroll]] for (uint j = 0; j < TILE * TK / 256; j++) {
            uint e = j * 256 + tid, r = e / TK, c = e % TK;
            uint I = pc.row0 + r0 + r, J = c0 + r;
            As[c][r / 4][r % 4] = (r0 + r < pc.rows) ? qfeat[(hd * pc.nq + I) * F + kk + c] : 0.0;
            Bs[c][r / 4][r % 4] = (J < pc.nk) ? kfeat[(kvhd * pc.nk + J) * F + kk + c] : 0.0;
        }
        barrier();
        [[unroll]] for (uint c = 0; c < TK; c++) {
            vec4 a0 = As[c][ty], a1 = As[c][16 + ty], b0 = Bs[c][tx], b1 = Bs[c][16 + tx];
            [[unroll]] for (uint i = 0; i < 4; i++) {
                acc[i][0] += a0[i] * b0;
                acc[i][1] += a0[i] * b1;
                acc[4 + i][0] += a1[i] * b0;
                acc[4 + i][1] += a1[i] * b1;
            }
        }
        barrier();
    }
    [[unroll]] for (uint i = 0; i < 8; i++) {
        uint r = r0 + (i < 4 ? 4 * ty + i : 64 + 4 * ty + i - 4);
        if (r >= pc.rows) continue;
        [[unroll]] for (uint h = 0; h < 2; h++)
            [[unroll]] for (uint j = 0; j < 4; j++) {
                uint J = c0 + 64 * h + 4 * tx + j;
                if (J >= pc.nk) continue;
                float nJ = float(min(pc.block, pc.kv_len - J * pc.block));
                logits[(hl * pc.rows + r) * pc.nk + J] = acc[i][h][j] + log(nJ);
            }
    }
}
