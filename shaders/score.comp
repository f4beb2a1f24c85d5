#version 450
// Stage 3: corrected block logits, one (rows x 3D) by (3D x nk) product per head (docs/ALGORITHM.md step 3),
// in fp32 on any device (score_cm2.comp does it on bf16 tensor cores where the device has them):
//   l[I][J] = qfeat[I] . kfeat[J] + ln(n_J)
// for query blocks I = row0 .. row0+rows-1 of heads head0 .. head0+nheads_chunk-1, into the
// chunk's scratch logits [nheads_chunk][rows][nk]. 64x64 output tile per workgroup, 4x4 per thread
// (rows ty+16i, cols tx+16j: conflict-free shared reads), K-steps of 16 through shared memory.
// Grid: (ceil(nk / 64), ceil(rows / 64), nheads_chunk).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = SC_SCORE_D) const uint D = 64;
layout(set = 0, binding = BIND_QFEAT) readonly buffer QF { float qfeat[]; };
layout(set = 0, binding = BIND_KFEAT) readonly buffer KF { float kfeat[]; };
layout(set = 0, binding = BIND_LOGITS) writeonly buffer LG { float logits[]; };

const uint TILE = SCORE_FP32_TILE, TK = 16, F = 3 * D;
shared float As[TK][TILE];
shared float Bs[TK][TILE];

void main() {
    uint tid = gl_LocalInvocationID.x, tx = tid % 16, ty = tid / 16;
    uint hl = gl_WorkGroupID.z, hd = pc.head0 + hl, kvhd = kv_of(hd);
    uint r0 = gl_WorkGroupID.y * TILE, c0 = gl_WorkGroupID.x * TILE;
    float acc[4][4];
    for (uint i = 0; i < 4; i++) for (uint j = 0; j < 4; j++) acc[i][j] = 0.0;
    for (uint kk = 0; kk < F; kk += TK) {
        for (uint e = tid; e < TK * TILE; e += 256) {
            uint r = e / TK, c = e % TK;   // consecutive threads read consecutive features
            uint I = pc.row0 + r0 + r, J = c0 + r;
            As[c][r] = (r0 + r < pc.rows) ? qfeat[(hd * pc.nq + I) * F + kk + c] : 0.0;
            Bs[c][r] = (J < pc.nk) ? kfeat[(kvhd * pc.nk + J) * F + kk + c] : 0.0;
        }
        barrier();
        for (uint c = 0; c < TK; c++) {
            float a[4], b[4];
            for (uint i = 0; i < 4; i++) { a[i] = As[c][ty + 16 * i]; b[i] = Bs[c][tx + 16 * i]; }
            for (uint i = 0; i < 4; i++) for (uint j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        barrier();
    }
    for (uint i = 0; i < 4; i++) {
        uint r = r0 + ty + 16 * i;
        if (r >= pc.rows) continue;
        for (uint j = 0; j < 4; j++) {
            uint J = c0 + tx + 16 * j;
            if (J >= pc.nk) continue;
            float nJ = float(min(pc.block, pc.kv_len - J * pc.block));
            logits[(hl * pc.rows + r) * pc.nk + J] = acc[i][j] + log(nJ);
        }
    }
}
