// What every attention kernel of stage 5 shares: row gathers through the permutations, the walk
// over the key tiles a workgroup visits, and the register prefetch of a K and V tile.
// Include after the bindings q4/k4/v4 (uvec4 views), perm_q, perm_k, mask and the constants
// SPARSE, BC (keys per tile), WG (invocations) and DV (16-byte vectors per row).
#ifndef BAATT_ATTENTION_TILES_GLSL
#define BAATT_ATTENTION_TILES_GLSL

// The stored row of sorted position s (which 0: a query row of head hd, 1: a key row).
uint src_row(uint hd, uint s, uint len, uint which) {
    if (SPARSE == 0) return s;
    return uint(which == 0 ? perm_q[hd * len + s] : perm_k[hd * len + s]);
}

void barrier_shared() {
    controlBarrier(gl_ScopeWorkgroup, gl_ScopeWorkgroup, gl_StorageSemanticsShared, gl_SemanticsAcquireRelease);
}

// The key tiles a workgroup visits, in order: dense, all of them; SPARSE, those of its query
// block's selected key blocks (tiles never straddle a block: the host keeps BC | block).
const uint END = 0xffffffffu;
uint it_row, it_w, it_bits, it_end;
uint next_tile(uint s0) {
    if (SPARSE == 0) return s0 + BC < pc.kv_len ? s0 + BC : END;
    if (s0 != END && s0 + BC < it_end) return s0 + BC;
    while (it_bits == 0u) {
        if (++it_w >= pc.words) return END;
        it_bits = mask[it_row + it_w];
    }
    uint J = it_w * 32 + uint(findLSB(it_bits));
    it_bits &= it_bits - 1u;
    it_end = min((J + 1) * pc.block, pc.kv_len);
    return J * pc.block;
}
uint first_tile(uint hd, uint p0) {
    if (SPARSE == 0) return 0;
    it_row = (hd * pc.nq + p0 / pc.block) * pc.words;
    it_w = 0;
    it_bits = mask[it_row];
    it_end = 0;
    return next_tile(END);
}

// The invocation's share of a K and V tile (NPT 16-byte vectors each, vector e = j * WG + tid is
// row e / DV, column vector e % DV), fetched into registers one tile ahead: the loads of tile i+1
// are in flight while tile i is computed (SPIR-V has no asynchronous copy to shared memory).
const uint NPT = BC * DV / WG;   // the host keeps BC * DV a multiple of WG
#ifndef KV_ROW
#define KV_ROW(kvhd, s) src_row(kvhd, s, pc.kv_len, 1)   // a kernel reading sorted copies: s
#endif
#define MAX_NPT ATT_MAX_VECTORS
uvec4 rk[MAX_NPT], rv[MAX_NPT];

void fetch_kv(uint kvhd, uint s0) {
    [[unroll]] for (uint j = 0; j < MAX_NPT; j++) {
        if (j >= NPT) break;
        uint e = j * WG + gl_LocalInvocationID.x, c = e / DV, a = e % DV, s = s0 + c;
        rk[j] = uvec4(0);
        rv[j] = uvec4(0);
        if (s < pc.kv_len) {
            uint i = (kvhd * pc.kv_len + KV_ROW(kvhd, s)) * DV + a;
            rk[j] = k4[i];
            rv[j] = v4[i];
        }
    }
}

#endif
