#version 450
// Stage 2b (tensor-core scoring only): each fp32 block feature x split into two bf16 parts,
//   hi = bf16(x), lo = bf16(x - hi)        (x - hi is exact in fp32)
// so that score_cm2.comp can form the logit product on bf16 tensor cores as
//   q.k ~ hi_q.hi_k + hi_q.lo_k + lo_q.hi_k
// with a relative error of ~2^-16 per term (the dropped lo.lo term and the rounding of lo) where
// fp32 has 2^-24; the tests check the logits against the CPU reference's (double accumulation,
// 1e-4 relative). bf16, not fp16: the features' range is fp32's.
// In:  QFEAT / KFEAT  float [heads of side][blocks][F]        (F = 3 D, stats.comp)
// Out: QSPLIT / KSPLIT bf16 [heads of side][blocks][2][F]     (the hi row, then the lo row),
// written as packed pairs so no 16-bit storage is needed. One invocation per feature pair.
// Grid: (ceil(blocks * F / 2 / 256), heads of the side).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint D = 64;
layout(set = 0, binding = BIND_QFEAT) readonly buffer QF { vec2 qfeat[]; };
layout(set = 0, binding = BIND_KFEAT) readonly buffer KF { vec2 kfeat[]; };
layout(set = 0, binding = BIND_QSPLIT) writeonly buffer QX { uint qsplit[]; };
layout(set = 0, binding = BIND_KSPLIT) writeonly buffer KX { uint ksplit[]; };

const uint HF = 3 * D / 2;   // feature pairs per block (D is even)

void main() {
    uint hd = gl_WorkGroupID.y, e = gl_GlobalInvocationID.x;
    uint nb = pc.which == 0 ? pc.nq : pc.nk;
    if (e >= nb * HF) return;
    uint blk = e / HF, p = e % HF, row = hd * nb + blk;
    vec2 x = pc.which == 0 ? qfeat[row * HF + p] : kfeat[row * HF + p];
    uvec2 hi = uvec2(bf16_bits(x.x), bf16_bits(x.y));
    vec2 r = x - uintBitsToFloat(hi << 16);
    uint hw = hi.x | (hi.y << 16), lw = bf16_bits(r.x) | (bf16_bits(r.y) << 16);
    uint o = row * 2 * HF + p;   // a block's two rows are 2F bf16 = 2 HF words
    if (pc.which == 0) {
        qsplit[o] = hw;
        qsplit[o + HF] = lw;
    } else {
        ksplit[o] = hw;
        ksplit[o + HF] = lw;
    }
}
