#version 450
// Stage 1b (devices with subgroup ballots): the norm keys sorted by an LSD radix sort, 8 bits a
// pass, four passes (sort_k = the digit's shift, sort_j = the direction: 0 reads KEYS and writes
// KEYS2, 1 the reverse, so the sorted keys end in KEYS). Only the x word (~bits(norm)) is a digit;
// each pass is stable and the keys start in index order, so ties keep ascending index: the order
// the bitonic path (sort_local/sort_global) gives. Only the first len keys of a head are sorted;
// its padding keys already sort last.
// One pass is three dispatches over tiles of T = WG x KPT keys, PHASE:
//   0 histogram: each tile's 256 digit counts -> HIST[head][digit][tile] (digit-major);
//   1 scan: per head, the exclusive prefix of HIST in that order = where each tile's run of each
//     digit starts in the output;
//   2 scatter: each tile walks its keys in order, WG at a time; a key's place is its digit's start
//     for the tile, plus the keys of that digit in earlier rounds, in earlier subgroups of this
//     round (per-subgroup digit counts in shared memory) and in earlier lanes of its subgroup
//     (a match mask of 8 ballots, one per digit bit).
// WG = 8 subgroups at most (the host sets WG <= 8 x subgroup size: SG_MAX below).
// HIST holds one segment of 256 x ceil(len / T) counts per head and side, Q side first.
// Grid: (tiles, heads of this side); the scan (1, heads).
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(constant_id = 1) const uint KPT = 16;   // keys per invocation and tile
layout(constant_id = 2) const uint PHASE = 0;
const uint T = WG * KPT, SG_MAX = 8;
layout(set = 0, binding = BIND_KEYS) buffer KeyA { uvec2 keys[]; };
layout(set = 0, binding = BIND_KEYS2) buffer KeyB { uvec2 keys2[]; };
layout(set = 0, binding = BIND_HIST) buffer HistB { uint hist[]; };

shared uint cnt[256];               // histogram; scatter: where each digit goes next
shared uint sgc[SG_MAX * 256];      // scatter: this round's digit counts per subgroup

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
        // Digit totals, then their exclusive prefix (one invocation: 256 additions), then each
        // digit's tiles from there.
        for (uint d = t; d < 256; d += WG) {
            uint s = 0;
            for (uint j = 0; j < nt; j++) s += hist[hbase + d * nt + j];
            cnt[d] = s;
        }
        barrier();
        if (t == 0) {
            uint run = 0;
            for (uint d = 0; d < 256; d++) {
                uint s = cnt[d];
                cnt[d] = run;
                run += s;
            }
        }
        barrier();
        for (uint d = t; d < 256; d += WG) {
            uint run = cnt[d];
            for (uint j = 0; j < nt; j++) {
                uint s = hist[hbase + d * nt + j];
                hist[hbase + d * nt + j] = run;
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
        for (uint d = t; d < 256; d += WG) hist[hbase + d * nt + tile] = cnt[d];
        return;
    }
    uint sg = gl_SubgroupID;
    for (uint d = t; d < 256; d += WG) {
        cnt[d] = hist[hbase + d * nt + tile];
        for (uint s = 0; s < SG_MAX; s++) sgc[s * 256 + d] = 0;
    }
    barrier();
    for (uint r = 0; r < KPT; r++) {
        uint i = first + r * WG + t;
        bool valid = i < len;
        uvec2 key = valid ? load_key(base + i) : uvec2(0);
        uint d = digit(key);
        uvec4 peers = match_digit(d, valid);
        if (valid && leads(peers)) sgc[sg * 256 + d] = subgroupBallotBitCount(peers);
        barrier();
        if (valid) {
            uint pos = cnt[d] + subgroupBallotExclusiveBitCount(peers);
            for (uint s = 0; s < sg; s++) pos += sgc[s * 256 + d];
            store_key(base + pos, key);
        }
        barrier();
        for (uint e = t; e < 256; e += WG) {
            uint s = 0;
            for (uint j = 0; j < SG_MAX; j++) {
                s += sgc[j * 256 + e];
                sgc[j * 256 + e] = 0;
            }
            cnt[e] += s;
        }
        barrier();
    }
}
