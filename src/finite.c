/* The opt-in finite-input check (include/baatt.h, docs/RELIABILITY_inputs.md): one pass over the
 * bit patterns, no conversion, so it costs about a memory read of the tensor. */
#include <string.h>

#include "baatt.h"

/* An all-ones exponent (infinity or NaN) in each dtype's bit pattern. */
static int nonfinite_at(const void *x, baatt_dtype dtype, uint64_t i)
{
    if (dtype == BAATT_DTYPE_F32) {
        uint32_t u;
        memcpy(&u, (const char *)x + 4 * i, 4);
        return (u & 0x7f800000u) == 0x7f800000u;
    }
    uint16_t h;
    memcpy(&h, (const char *)x + 2 * i, 2);
    uint16_t e = dtype == BAATT_DTYPE_F16 ? 0x7c00u : 0x7f80u;
    return (h & e) == e;
}

baatt_status baatt_find_nonfinite(const void *x, baatt_dtype dtype, uint64_t n, uint64_t *first)
{
    if (first) *first = n;
    if (!baatt_dtype_size(dtype)) return BAATT_ERROR_UNSUPPORTED_DTYPE;
    if (!x && n) return BAATT_ERROR_INVALID_ARGUMENT;
    for (uint64_t i = 0; i < n; i++)
        if (nonfinite_at(x, dtype, i)) {
            if (first) *first = i;
            return BAATT_ERROR_NONFINITE_INPUT;
        }
    return BAATT_OK;
}
