/* Library-internal declarations shared across src/ files (never installed). */
#ifndef BAATT_INTERNAL_H
#define BAATT_INTERNAL_H

#include "baatt.h"

/* min/max clamping of a per-row block count (>= 1, <= nk, honouring min/max_blocks). */
uint32_t baatt_config_clamp_blocks(const baatt_config *c, uint32_t m);

/* Per-head blocking choice (BAATT_SORT_AUTO, and eval's baatt_auto): at most this many query rows
 * per head get exact attention, evenly spaced: sample s of n sits at original row s * q_len / n.
 * The GPU plan passes BAATT_AUTO_ROWS to its shaders, so this is the one place it is set. */
#define BAATT_AUTO_ROWS 64
static inline uint32_t baatt_auto_samples(uint32_t q_len)
{
    return q_len < BAATT_AUTO_ROWS ? q_len : BAATT_AUTO_ROWS;
}
static inline uint32_t baatt_auto_row(uint32_t s, uint32_t n, uint32_t q_len)
{
    return (uint32_t)((uint64_t)s * q_len / n);
}

/* Element i of a host tensor in dtype, as float. */
static inline float baatt_load(const void *p, baatt_dtype dt, uint64_t i)
{
    switch (dt) {
    case BAATT_DTYPE_F16: return baatt_f16_to_f32(((const uint16_t *)p)[i]);
    case BAATT_DTYPE_BF16: return baatt_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static inline void baatt_store(void *p, baatt_dtype dt, uint64_t i, float v)
{
    switch (dt) {
    case BAATT_DTYPE_F16: ((uint16_t *)p)[i] = baatt_f32_to_f16(v); break;
    case BAATT_DTYPE_BF16: ((uint16_t *)p)[i] = baatt_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/* Test access to a plan's intermediate buffers after a run: the block features
 * (float [heads, blocks, 3*head_dim], see shaders/stats.comp) and the logit scratch of the last
 * chunk (float [chunk_heads, chunk_rows, nk]). */
enum { BAATT_DEBUG_QFEAT = 0, BAATT_DEBUG_KFEAT = 1, BAATT_DEBUG_LOGITS = 2 };
baatt_status baatt_plan_debug_read(baatt_plan *p, int what, void *dst, uint64_t bytes);
void baatt_plan_debug_chunks(const baatt_plan *p, uint32_t *heads, uint32_t *rows);
/* Which attention kernel the plan uses: "nv-coopmat2" or "nv-coopmat" (tensor cores) or
 * "scalar" (portable). */
const char *baatt_plan_attention_path(const baatt_plan *p);

#endif
