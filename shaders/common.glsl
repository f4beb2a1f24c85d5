// Shared declarations for every baatt stage: the element type of Q/K/V/O, the push-constant
// block and bindings of interface.h, and the sort-key helpers.
#ifndef BAATT_COMMON_GLSL
#define BAATT_COMMON_GLSL

// Element type of Q/K/V/O and its conversions. bf16 is the top half of an fp32: loads shift it
// up, stores round to nearest even (NaN kept quiet); no bf16 extension needed.
#if defined(IN_F16)
#extension GL_EXT_shader_16bit_storage : require
#define ELEM float16_t
#define LOAD(x) float(x)
#define STORE(v) float16_t(v)
#elif defined(IN_BF16)
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#define ELEM uint16_t
#define LOAD(x) uintBitsToFloat(uint(x) << 16)
#define STORE(v) uint16_t(bf16_bits(v))
#else
#define ELEM float
#define LOAD(x) (x)
#define STORE(v) (v)
#endif

// A 16-byte vector of Q/K/V elements as floats: VEC_N of them (8 for the 16-bit types, 4 for
// fp32), in order, in lo then hi (hi is zero for fp32). Stages that read whole rows use these
// vector loads: one 2-byte load per invocation and row is bound by load instructions.
#if defined(IN_F16)
const uint VEC_N = 8;
void unpack_vec(uvec4 w, out vec4 lo, out vec4 hi) {
    lo = vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
    hi = vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w));
}
#elif defined(IN_BF16)
const uint VEC_N = 8;
void unpack_vec(uvec4 w, out vec4 lo, out vec4 hi) {
    lo = uintBitsToFloat(uvec4(w.x << 16, w.x & 0xffff0000u, w.y << 16, w.y & 0xffff0000u));
    hi = uintBitsToFloat(uvec4(w.z << 16, w.z & 0xffff0000u, w.w << 16, w.w & 0xffff0000u));
}
#else
const uint VEC_N = 4;
void unpack_vec(uvec4 w, out vec4 lo, out vec4 hi) {
    lo = uintBitsToFloat(w);
    hi = vec4(0.0);
}
#endif

// fp32 -> bf16 bits, round to nearest even (NaN kept quiet); bf16 is the top half of an fp32.
uint bf16_bits(float f) {
    uint u = floatBitsToUint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// Per-dispatch geometry (the push-constant block and the bindings are defined once, for both
// sides, in interface.h). Tensor layouts: Q,O [batch, heads, q_len, head_dim];
// K,V [batch, kv_heads, kv_len, head_dim]; "hd" below is a flattened (batch, head) index.
#include "interface.h"
#define PUSH_U(name) uint name;
#define PUSH_F(name) float name;
layout(push_constant) uniform Push { BAATT_PUSH_FIELDS(PUSH_U, PUSH_F) } pc;

// kv (batch, head) of query (batch, head) hd: GQA groups heads / kv_heads query heads per kv head.
uint kv_of(uint hd) {
    uint b = hd / pc.heads, h = hd % pc.heads;
    return b * pc.kv_heads + h / (pc.heads / pc.kv_heads);
}

// Bitonic sort key: descending norm, ties by ascending index, as one ascending (hi, lo) pair.
bool key_less(uvec2 a, uvec2 b) { return a.x < b.x || (a.x == b.x && a.y < b.y); }

// Orders a pair of sort keys: ascending if up.
void exchange(inout uvec2 a, inout uvec2 b, bool up) {
    if (key_less(b, a) == up) {
        uvec2 t = a;
        a = b;
        b = t;
    }
}

// Steps j and j/2 of a bitonic stage on the four keys at x, x + j/2, x + j, x + 3j/2 of a
// 2j-block (they meet only each other in those two steps), all in direction up.
void exchange4(inout uvec2 a, inout uvec2 b, inout uvec2 c, inout uvec2 d, bool up) {
    exchange(a, c, up);
    exchange(b, d, up);
    exchange(a, b, up);
    exchange(c, d, up);
}

#endif
