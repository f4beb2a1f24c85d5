#version 450
// Stage 1b (devices with subgroup ballots): the norm keys sorted by an LSD radix sort, 8 bits a
// pass, four passes (sort_k = the digit's shift, sort_j = the direction: 0 reads KEYS and writes
// KEYS2, 1 the reverse, so the sorted keys end in KEYS). Only the x word (~bits(norm)) is a digit;
// each pass is stable and the keys start in index order, so ties keep ascending index: the order
// the bitonic path (sort_local/sort_global) gives. Only the first len keys of a head are sorted;
// its padding keys already sort last.
// One pass is three dispatches over tiles of T = WG x KPT keys, PHASE:
//   0 histogram: each tile's 256 digit counts -> HIST[head][tile][digit];
//   1 scan: per head, the exclusive prefix of the counts in digit-major order (digit, then tile)
//     = where each tile's run of each digit starts in the output;
//   2 scatter: each subgroup of a tile holds a run of its keys in registers; a key's place is its
//     digit's start for the tile, plus the keys of that digit in earlier subgroups' runs, in
//     earlier rounds of its own run and in earlier lanes of its round (a match mask of 8
//     ballots, one per digit bit).
// WG holds 8 subgroups at most, whole ones (the context sizes it for the smallest subgroup the
// device may use and requires it to hold the largest: context.c radix_workgroup): SG_MAX below.
// HIST holds one segment of 256 x ceil(len / T) counts per head and side, Q side first.
// Grid: (tiles, heads of this side); the scan (1, heads).
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = SC_RADIX_WG) const uint WG = 256;
layout(constant_id = SC_RADIX_KPT) const uint KPT = 16;   // keys per invocation and tile
layout(constant_id = SC_RADIX_PHASE) const uint PHASE = 0;
const uint T = WG * KPT, SG_MAX = RADIX_MAX_SUBGROUPS;
layout(set = 0, binding = BIND_KEYS) buffer KeyA { uvec2 keys[]; };
layout(set = 0, binding = BIND_KEYS2) buffer KeyB { uvec2 keys2[]; };
layout(set = 0, binding = BIND_HIST) buffer HistB { uint hist[]; };

shared uint cnt[256];               // histogram; scan: digit totals
shared uint sgc[SG_MAX * 256];      // scatter: per subgroup, its digit counts, then where each goes next

uvec2 load_key(uint i) { return pc.sort_j == 0 ? keys[i] : keys2[i]; }
void store_key(uint i, uvec2 k) {
    if (pc.sort_j == 0) keys2[i] = k;
    else keys[i] = k;
}
uint digit(uvec2 k) { return (k.x >> pc.sort_k) & 255u; }
// The lanes of this subgroup that hold a key with digit d (8 ballots, one per digit bit); every
// lane must call it.
uvec4 match_digit(uint d, bool valid) {
    uvec4 peers = subgroupBallot(valid);
    [[unroll]] for (uint b = 0; b < 8; b++) {
        bool bit = ((d >> b) & 1u) != 0u;
        uvec4 v = subgroupBallot(bit);
        peers &= bit ? v : ~v;
    }
    return peers;
}
bool leads(uvec4 peers) { return subgroupBallotFindLSB(peers) == gl_SubgroupInvocationID; }

void main() {
    uint t = gl_LocalInvocationID.x, hd = gl_WorkGroupID.y, tile = gl_WorkGroupID.x;
    uint len = pc.which == 0 ? pc.q_len : pc.kv_len, nt = (len + T - 1) / T;
    uint base = pc.key_offset + hd * pc.padded;
    uint hbase = ((pc.which == 0 ? 0 : pc.batch * pc.heads * ((pc.q_len + T - 1) / T)) + hd * nt) * 256;
    uint first = tile * T;
    if (PHASE == 1) {
        // Digit totals, their inclusive prefix (Hillis-Steele in shared memory), then each
        // digit's tiles from its exclusive start.
        for (uint d = t; d < 256; d += WG) {
            uint s = 0;
            for (uint j = 0; j < nt; j++) s += hist[hbase + j * 256 + d];
            cnt[d] = s;
        }
        for (uint off = 1; off < 256; off <<= 1) {
            barrier();
            uint v[256 / WG + 1];
            for (uint d = t, e = 0; d < 256; d += WG, e++) v[e] = d >= off ? cnt[d - off] : 0u;
            barrier();
            for (uint d = t, e = 0; d < 256; d += WG, e++) cnt[d] += v[e];
        }
        barrier();
        for (uint d = t; d < 256; d += WG) {
            uint run = d == 0 ? 0u : cnt[d - 1];
            for (uint j = 0; j < nt; j++) {
                uint s = hist[hbase + j * 256 + d];
                hist[hbase + j * 256 + d] = run;
                run += s;
            }
        }
        return;
    }
    if (PHASE == 0) {
        for (uint d = t; d < 256; d += WG) cnt[d] = 0;
        barrier();
        // one shared atomic per digit and subgroup: the leading digits of norms are mostly equal
        [[unroll]] for (uint r = 0; r < KPT; r++) {
            uint i = first + r * WG + t;
            uint d = i < len ? digit(load_key(base + i)) : 0u;
            uvec4 peers = match_digit(d, i < len);
            if (i < len && leads(peers)) atomicAdd(cnt[d], subgroupBallotBitCount(peers));
        }
        barrier();
        for (uint d = t; d < 256; d += WG) hist[hbase + tile * 256 + d] = cnt[d];
        return;
    }
    // Each subgroup walks its own run of SGS x KPT keys (round r, lane l: key r x SGS + l of the
    // run): a first walk counts its digits and keeps each key's rank in its round, then the
    // digits' starts are spread over the subgroups, then a second walk places the keys. The
    // walks touch only their subgroup's row of SGC: no workgroup barrier inside them.
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID, sgs = gl_SubgroupSize;
    uint run0 = first + sg * sgs * KPT;
    for (uint d = t; d < 256; d += WG)
        for (uint s = 0; s < SG_MAX; s++) sgc[s * 256 + d] = 0;
    barrier();
    uvec2 kk[KPT];
    uint info[KPT];   // rank among its round's keys of its digit | their count << 8 | leader << 16
    [[unroll]] for (uint r = 0; r < KPT; r++) {
        uint i = run0 + r * sgs + lane;
        kk[r] = i < len ? load_key(base + i) : uvec2(0);
    }
    [[unroll]] for (uint r = 0; r < KPT; r++) {
        bool valid = run0 + r * sgs + lane < len;
        uint d = digit(kk[r]);
        uvec4 peers = match_digit(d, valid);
        uint n = subgroupBallotBitCount(peers);
        bool lead = valid && leads(peers);
        info[r] = subgroupBallotExclusiveBitCount(peers) | (n << 8) | (lead ? 1u << 16 : 0u);
        if (lead) sgc[sg * 256 + d] += n;
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
    barrier();
    for (uint d = t; d < 256; d += WG) {
        uint run = hist[hbase + tile * 256 + d];
        for (uint s = 0; s < gl_NumSubgroups; s++) {
            uint c = sgc[s * 256 + d];
            sgc[s * 256 + d] = run;
            run += c;
        }
    }
    barrier();
    [[unroll]] for (uint r = 0; r < KPT; r++) {
        bool valid = run0 + r * sgs + lane < len;
        uint d = digit(kk[r]);
        if (valid) store_key(base + sgc[sg * 256 + d] + (info[r] & 255u), kk[r]);
        subgroupBarrier();
        if ((info[r] >> 16) != 0u) sgc[sg * 256 + d] += (info[r] >> 8) & 255u;
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
}
