/* fp16 / bf16 <-> fp32 conversions, round to nearest even, NaN and Inf preserved. */
#include "internal.h"

#include <string.h>

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t baatt_f32_to_f16(float f)
{
    uint32_t x = bits_of(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t h = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into the exponent: correct */
    return (uint16_t)(sign | h);
}

float baatt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return float_of(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (!man) return float_of(sign);
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        return float_of(sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13));
    }
    return float_of(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

uint16_t baatt_f32_to_bf16(float f)
{
    uint32_t x = bits_of(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

float baatt_bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

baatt_status baatt_dtype_convert(const void *src, baatt_dtype src_dtype, void *dst, baatt_dtype dst_dtype, uint64_t n)
{
    if (!baatt_dtype_size(src_dtype) || !baatt_dtype_size(dst_dtype) || (n && (!src || !dst)))
        return BAATT_ERROR_INVALID_ARGUMENT;
    for (uint64_t i = 0; i < n; i++) baatt_store(dst, dst_dtype, i, baatt_load(src, src_dtype, i));
    return BAATT_OK;
}
