#version 450
// Stage 4: per query block row, select key blocks (docs/ALGORITHM.md step 4) and write the row's bit mask
// (mask [heads, nq, words], bit J%32 of word J/32) and its selected key-token count.
// Top-k without sorting: keys are order-preserving uint images of the logits, and a 32-step
// bisection finds the largest T whose measure (count, or softmax mass) of {key >= T} reaches the
// target; ties at T are resolved by index (lower J first) in a serial pass only when needed.
// Threshold mode first finds the prefix length m that way, clamps it by min/max blocks, and
// re-selects by count only if the clamp changed it. One workgroup per row;
// grid: (rows, nheads_chunk). PER = ceil(nk / WG) logits per thread held in registers.
// Three builds: select_sg (subgroup arithmetic, where the device has it), select, and select_row
// (SG_ROW: one 32-wide subgroup per row, keep-ratio mode; see main below).
#ifdef SG_ROW
#define SG_OPS
#extension GL_KHR_shader_subgroup_ballot : require
#endif
#ifdef SG_OPS
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = SC_SEL_WG) const uint WG = 256;
layout(constant_id = SC_SEL_PER) const uint PER = 1;
layout(set = 0, binding = BIND_LOGITS) readonly buffer LG { float logits[]; };
layout(set = 0, binding = BIND_MASK) writeonly buffer MK { uint mask[]; };
layout(set = 0, binding = BIND_COUNTS) writeonly buffer CT { uint counts[]; };

shared float red_f[WG];
shared uint red_u[WG];
shared uint sh_cut;

// NaN of either sign maps to the largest key (NAN_KEY; no number maps there), so a NaN logit
// ranks above every other and its block is selected like the dense path attends to it
// (docs/RELIABILITY.md). An integer compare: drivers may fold an isnan() away.
const uint NAN_KEY = 0xffffffffu;
uint okey(float l) {
    uint u = floatBitsToUint(l);
    if ((u & 0x7fffffffu) > 0x7f800000u) return NAN_KEY;
    return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

#ifdef SG_OPS
// Subgroup reductions, then one shared slot per subgroup (any subgroup size): 2 barriers per
// reduction instead of log2(WG) + 1; the 32-step bisection below makes ~70 of them per row.
float reduce_sum(float v) {
    v = subgroupAdd(v);
    if (subgroupElect()) red_f[gl_SubgroupID] = v;
    barrier();
    float r = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++) r += red_f[i];
    barrier();
    return r;
}

float reduce_max(float v) {
    v = subgroupMax(v);
    if (subgroupElect()) red_f[gl_SubgroupID] = v;
    barrier();
    float r = red_f[0];
    for (uint i = 1; i < gl_NumSubgroups; i++) r = max(r, red_f[i]);
    barrier();
    return r;
}

uint reduce_count(uint v) {
    v = subgroupAdd(v);
    if (subgroupElect()) red_u[gl_SubgroupID] = v;
    barrier();
    uint r = 0;
    for (uint i = 0; i < gl_NumSubgroups; i++) r += red_u[i];
    barrier();
    return r;
}
#else
// Shared-memory tree reductions (devices without subgroup arithmetic in compute shaders).
float reduce_sum(float v) {
    uint t = gl_LocalInvocationID.x;
    red_f[t] = v;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) red_f[t] += red_f[t + s];
        barrier();
    }
    float r = red_f[0];
    barrier();
    return r;
}

float reduce_max(float v) {
    uint t = gl_LocalInvocationID.x;
    red_f[t] = v;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) red_f[t] = max(red_f[t], red_f[t + s]);
        barrier();
    }
    float r = red_f[0];
    barrier();
    return r;
}

uint reduce_count(uint v) {
    uint t = gl_LocalInvocationID.x;
    red_u[t] = v;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) red_u[t] += red_u[t + s];
        barrier();
    }
    uint r = red_u[0];
    barrier();
    return r;
}
#endif

uint keys[PER];
float mass[PER];   // exp(l - max): unnormalised block map

uint count_ge(uint T) {
    uint c = 0;
    for (uint i = 0; i < PER; i++) c += (keys[i] >= T && keys[i] != 0u) ? 1u : 0u;
    return reduce_count(c);
}

float mass_ge(uint T) {
    float m = 0.0;
    for (uint i = 0; i < PER; i++) m += (keys[i] >= T && keys[i] != 0u) ? mass[i] : 0.0;
    return reduce_sum(m);
}

// Measures of {key > T}: empty when T is the largest key value (a row of NaN logits), where T + 1
// would wrap to 0 and count everything.
uint count_gt(uint T) { return T == 0xffffffffu ? 0u : count_ge(T + 1u); }
float mass_gt(uint T) { return T == 0xffffffffu ? 0.0 : mass_ge(T + 1u); }

// Largest T with count(key >= T) >= k (the k-th largest key), or, as soon as a candidate has
// exactly k keys at or above it, that candidate: {key >= T} is then the top k with no tie to
// break, and the remaining steps (about a third of them on random logits) are skipped. exact is
// set in that case. Key 0 marks padding (no real logit maps to 0: that would be a negative NaN).
uint select_count(uint k, out bool exact) {
    uint T = 0;
    exact = false;
    for (int bit = 31; bit >= 0; bit--) {
        uint cand = T | (1u << uint(bit));
        uint c = count_ge(cand);   // the same value in every invocation: uniform control flow
        if (c >= k) T = cand;
        if (c == k) {
            exact = true;
            break;
        }
    }
    return T;
}

uint select_mass(float target) {
    uint T = 0;
    for (int bit = 31; bit >= 0; bit--) {
        uint cand = T | (1u << uint(bit));
        if (mass_ge(cand) >= target) T = cand;
    }
    return T;
}

#ifndef SG_ROW
void main() {
    uint tid = gl_LocalInvocationID.x;
    uint r = gl_WorkGroupID.x, hl = gl_WorkGroupID.y;
    uint I = pc.row0 + r, hd = pc.head0 + hl;
    uint lbase = (hl * pc.rows + r) * pc.nk;
    for (uint i = 0; i < PER; i++) {
        uint J = tid + i * WG;
        keys[i] = J < pc.nk ? okey(logits[lbase + J]) : 0u;
    }
    uint lo = max(pc.min_blocks, 1u);
    uint hi = pc.max_blocks != 0u ? min(pc.max_blocks, pc.nk) : pc.nk;
    lo = min(lo, hi);

    uint k, T;
    bool exact = false;
    if (pc.mode == 0u) {
        k = pc.keep;
        T = select_count(k, exact);
    } else {
        // NaN logits carry no mass (they still rank first): the mass is the finite blocks'.
        float mx = -1.0 / 0.0;
        for (uint i = 0; i < PER; i++) {
            uint J = tid + i * WG;
            if (J < pc.nk && keys[i] != NAN_KEY) mx = max(mx, logits[lbase + J]);
        }
        mx = reduce_max(mx);
        for (uint i = 0; i < PER; i++) {
            uint J = tid + i * WG;
            mass[i] = J < pc.nk && keys[i] != NAN_KEY ? exp(logits[lbase + J] - mx) : 0.0;
        }
        float target = pc.threshold * mass_ge(1u);
        T = select_mass(target);
        // m = blocks above T plus the ties at T needed (in J order) to reach the target; the
        // serial scan runs only when several blocks share T's logit exactly.
        float above = mass_gt(T);
        uint m = count_gt(T);
        uint tied = count_ge(T) - m;
        if (tid == 0) {
            uint need = 1;
            if (tied > 1u) {
                float acc = above;
                need = 0;
                for (uint J = 0; J < pc.nk && acc < target; J++)
                    if (okey(logits[lbase + J]) == T) { acc += exp(logits[lbase + J] - mx); need++; }
            }
            sh_cut = max(need, 1u);
        }
        barrier();
        m += sh_cut;
        barrier();
        k = clamp(m, lo, hi);
        if (k != m) T = select_count(k, exact);
    }
    // Ties at T: take the lowest J first until k blocks are selected (exact: none to break).
    uint above_n = exact ? 0u : count_gt(T);
    uint ties = exact ? 0u : count_ge(T) - above_n;
    uint need = k - above_n;
    if (tid == 0) {
        uint cut = pc.nk;
        if (!exact && need < ties) {
            uint seen = 0;
            for (uint J = 0; J < pc.nk; J++)
                if (okey(logits[lbase + J]) == T && ++seen == need) { cut = J; break; }
        }
        sh_cut = cut;
    }
    barrier();
    uint cut = sh_cut;
    uint row = pc.slot * pc.batch * pc.heads * pc.nq + hd * pc.nq + I;   // slot: see common.glsl
    uint tokens = 0;
    for (uint w = tid; w < pc.words; w += WG) {
        uint bits = 0;
        for (uint b = 0; b < 32; b++) {
            uint J = w * 32 + b;
            if (J >= pc.nk) break;
            uint key = okey(logits[lbase + J]);
            if (key > T || (key == T && J <= cut)) {
                bits |= 1u << b;
                tokens += min(pc.block, pc.kv_len - J * pc.block);
            }
        }
        mask[row * pc.words + w] = bits;
    }
    tokens = reduce_count(tokens);
    if (tid == 0) counts[row] = tokens;
}
#else
// select_row: one subgroup per row (WG / SG rows per workgroup), keep-ratio mode only; the same
// bisection (with its early exit) as select_count, on subgroup sums with no workgroup barrier
// (the workgroup-wide version spends most of its time on its reductions, bench/NOTES.md #25).
// SG: the subgroup size the host was told (fixed for the SPIR-V 1.5 this builds to). Key J lives
// in lane J % SG at index J / SG (PER = ceil(nk / SG)), so the mask bits of index i are one
// ballot: 32 / SG indices per mask word below 32 lanes, SG / 32 words per index above.
// Grid: (ceil(rows / (WG / SG)), nheads_chunk).
layout(constant_id = SC_SEL_SG) const uint SG = 32;

uint row_count(uint T, bool above) {   // keys >= T (above: > T); key 0 is padding
    uint c = 0;
    for (uint i = 0; i < PER; i++) c += (above ? keys[i] > T : keys[i] >= T) && keys[i] != 0u ? 1u : 0u;
    return subgroupAdd(c);
}

// Position J of the need-th (1-based) key equal to T in J order (index-major, then lane).
uint nth_tie(uint T, uint need) {
    uint seen = 0;
    for (uint i = 0; i < PER; i++) {
        uvec4 b = subgroupBallot(keys[i] == T);
        for (uint w = 0; w < (SG + 31u) / 32u; w++) {
            uint n = bitCount(b[w]);
            if (seen + n >= need) {
                uint x = b[w];
                for (uint m = need - seen; m > 1u; m--) x &= x - 1u;   // drop all but the need-th
                return SG * i + 32u * w + uint(findLSB(x));
            }
            seen += n;
        }
    }
    return pc.nk;
}

void main() {
    uint lane = gl_SubgroupInvocationID;
    uint r = gl_WorkGroupID.x * (WG / SG) + gl_SubgroupID, hl = gl_WorkGroupID.y;
    if (r >= pc.rows) return;   // the whole subgroup
    uint I = pc.row0 + r, hd = pc.head0 + hl;
    uint lbase = (hl * pc.rows + r) * pc.nk;
    for (uint i = 0; i < PER; i++) {
        uint J = lane + SG * i;
        keys[i] = J < pc.nk ? okey(logits[lbase + J]) : 0u;
    }
    // The k-th largest key lies between the row's smallest and largest real keys, so T shares the
    // bits above their highest differing bit: the bisection starts below it (the leading steps
    // only walked down the sign and exponent bits).
    uint lo = 0xffffffffu, hi = 0u;
    for (uint i = 0; i < PER; i++)
        if (keys[i] != 0u) lo = min(lo, keys[i]), hi = max(hi, keys[i]);
    lo = subgroupMin(lo), hi = subgroupMax(hi);
    int top = findMSB(lo ^ hi);   // -1 when every key is equal: T = hi, no step
    uint k = pc.keep, T = top < 0 ? hi : top == 31 ? 0u : hi & ~((2u << uint(top)) - 1u);
    bool exact = false;
    for (int bit = top; bit >= 0; bit--) {
        uint cand = T | (1u << uint(bit));
        uint c = row_count(cand, false);
        if (c >= k) T = cand;
        if (c == k) {
            exact = true;
            break;
        }
    }
    // Ties at T: the lowest J first; cut is the last tied J taken.
    uint cut = pc.nk;
    if (!exact) {
        uint above = row_count(T, true), need = k - above;
        if (need < row_count(T, false) - above) cut = nth_tie(T, need);
    }
    uint row = pc.slot * pc.batch * pc.heads * pc.nq + hd * pc.nq + I;   // slot: see common.glsl
    uint tokens = 0, word = 0;
    for (uint i = 0; i < PER; i++) {
        uint J = lane + SG * i;
        bool take = J < pc.nk && (keys[i] > T || (keys[i] == T && J <= cut));
        if (take) tokens += min(pc.block, pc.kv_len - J * pc.block);
        uvec4 b = subgroupBallot(take);
        if (SG >= 32u) {
            for (uint w = 0; w < SG / 32u; w++)
                if (lane == w && (SG * i) / 32u + w < pc.words) mask[row * pc.words + (SG * i) / 32u + w] = b[w];
        } else {
            word |= b.x << ((SG * i) % 32u);
            if (lane == 0u && ((SG * (i + 1u)) % 32u == 0u || i + 1u == PER)) mask[row * pc.words + (SG * i) / 32u] = word;
            if ((SG * (i + 1u)) % 32u == 0u) word = 0u;
        }
    }
    tokens = subgroupAdd(tokens);
    if (lane == 0u) counts[row] = tokens;
}
#endif
