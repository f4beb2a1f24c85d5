/* The opt-in finite-input check (include/baatt.h, docs/RELIABILITY.md): one pass over the
 * bit patterns, no conversion. Chunks are copied to aligned words (the caller's pointer may be
 * unaligned, and floats are not read through integer pointers) and reduced without branches so
 * the compiler vectorises the scan; only a chunk that has a bad element is searched. */
#include <string.h>

#include "baatt.h"

#define CHUNK 1024 /* words: 4 KiB on the stack, stays in L1 */

/* Index of the first element of words w[0..n) whose exponent bits (mask e, per lane of `lanes`
 * elements per 32-bit word) are all ones; n * lanes when none. */
static uint64_t first_in_chunk(const uint32_t *w, size_t n, uint32_t e, int lanes)
{
    uint32_t any = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t lo = w[i] & e, hi = lanes == 2 ? (w[i] >> 16) & e : e + 1;
        any |= (lo == e) | (hi == e);
    }
    if (!any) return (uint64_t)n * lanes;
    for (size_t i = 0; i < n; i++) {
        if ((w[i] & e) == e) return (uint64_t)i * lanes;
        if (lanes == 2 && ((w[i] >> 16) & e) == e) return (uint64_t)i * 2 + 1;
    }
    return (uint64_t)n * lanes;
}

baatt_status baatt_find_nonfinite(const void *x, baatt_dtype dtype, uint64_t n, uint64_t *first)
{
    if (first) *first = n;
    size_t size = baatt_dtype_size(dtype);
    if (!size) return BAATT_ERROR_UNSUPPORTED_DTYPE;
    if (!x && n) return BAATT_ERROR_INVALID_ARGUMENT;
    const uint32_t e = dtype == BAATT_DTYPE_F32 ? 0x7f800000u : dtype == BAATT_DTYPE_F16 ? 0x7c00u : 0x7f80u;
    const int lanes = (int)(4 / size);
    uint32_t w[CHUNK];
    for (uint64_t at = 0; at < n; at += (uint64_t)CHUNK * lanes) {
        uint64_t left = n - at, count = left < (uint64_t)CHUNK * lanes ? left : (uint64_t)CHUNK * lanes;
        size_t words = (size_t)((count + lanes - 1) / lanes);
        w[words - 1] = 0; /* an odd half-precision tail: its missing upper lane reads as 0, finite */
        memcpy(w, (const char *)x + at * size, (size_t)count * size);
        uint64_t i = first_in_chunk(w, words, e, lanes);
        if (i < count) {
            if (first) *first = at + i;
            return BAATT_ERROR_NONFINITE_INPUT;
        }
    }
    return BAATT_OK;
}
