/* Status strings, dtypes and configuration validation: shared by the GPU plan and the CPU
 * reference so both reject exactly the same inputs with the same messages. */
#include "baatt.h"
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

const char *baatt_status_string(baatt_status s)
{
    switch (s) {
    case BAATT_OK: return "BAATT_OK: success";
    case BAATT_ERROR_INVALID_ARGUMENT: return "BAATT_ERROR_INVALID_ARGUMENT: invalid argument";
    case BAATT_ERROR_BAD_SHAPE: return "BAATT_ERROR_BAD_SHAPE: bad or mismatched tensor shape";
    case BAATT_ERROR_GQA_MISMATCH: return "BAATT_ERROR_GQA_MISMATCH: heads is not a multiple of kv_heads";
    case BAATT_ERROR_UNSUPPORTED_HEAD_DIM: return "BAATT_ERROR_UNSUPPORTED_HEAD_DIM: head_dim must be 64 or 128";
    case BAATT_ERROR_UNSUPPORTED_DTYPE: return "BAATT_ERROR_UNSUPPORTED_DTYPE: unsupported data type";
    case BAATT_ERROR_UNSUPPORTED_BLOCK_SIZE:
        return "BAATT_ERROR_UNSUPPORTED_BLOCK_SIZE: block_size must be 32, 64 or 128";
    case BAATT_ERROR_BAD_KEEP_RATIO: return "BAATT_ERROR_BAD_KEEP_RATIO: keep_ratio must be in (0, 1]";
    case BAATT_ERROR_BAD_THRESHOLD: return "BAATT_ERROR_BAD_THRESHOLD: mass_threshold must be in (0, 1]";
    case BAATT_ERROR_BAD_BLOCK_LIMITS: return "BAATT_ERROR_BAD_BLOCK_LIMITS: min_blocks exceeds max_blocks";
    case BAATT_ERROR_BAD_SCALE: return "BAATT_ERROR_BAD_SCALE: scale must be finite and non-negative";
    case BAATT_ERROR_TOO_LARGE: return "BAATT_ERROR_TOO_LARGE: problem exceeds device limits";
    case BAATT_ERROR_NOT_READY: return "BAATT_ERROR_NOT_READY: no run has completed yet";
    case BAATT_ERROR_NONFINITE_INPUT: return "BAATT_ERROR_NONFINITE_INPUT: an input holds a NaN or an infinity";
    case BAATT_ERROR_NO_SELECTION: return "BAATT_ERROR_NO_SELECTION: reuse asked before the plan holds a selection";
    case BAATT_ERROR_BAD_SELECTION: return "BAATT_ERROR_BAD_SELECTION: malformed block mask or permutation";
    case BAATT_ERROR_NO_LSE: return "BAATT_ERROR_NO_LSE: log-sum-exp asked of a plan created without cfg.lse";
    case BAATT_ERROR_NO_VULKAN: return "BAATT_ERROR_NO_VULKAN: the Vulkan loader (libvulkan.so.1) could not be loaded";
    case BAATT_ERROR_NO_DEVICE: return "BAATT_ERROR_NO_DEVICE: no matching Vulkan device";
    case BAATT_ERROR_MISSING_FEATURE: return "BAATT_ERROR_MISSING_FEATURE: the device lacks a required feature";
    case BAATT_ERROR_VALIDATION_LAYER:
        return "BAATT_ERROR_VALIDATION_LAYER: VK_LAYER_KHRONOS_validation is not installed";
    case BAATT_ERROR_OUT_OF_HOST_MEMORY: return "BAATT_ERROR_OUT_OF_HOST_MEMORY: out of host memory";
    case BAATT_ERROR_VULKAN: return "BAATT_ERROR_VULKAN: a Vulkan call failed";
    case BAATT_ERROR_OUT_OF_DEVICE_MEMORY: return "BAATT_ERROR_OUT_OF_DEVICE_MEMORY: out of device memory";
    case BAATT_ERROR_DEVICE_LOST: return "BAATT_ERROR_DEVICE_LOST: the device was lost";
    case BAATT_ERROR_TIMEOUT: return "BAATT_ERROR_TIMEOUT: the device did not finish in time";
    case BAATT_ERROR_IO: return "BAATT_ERROR_IO: file input/output failed";
    case BAATT_ERROR_FILE_FORMAT: return "BAATT_ERROR_FILE_FORMAT: malformed or unsupported file";
    }
    return "BAATT_ERROR_UNKNOWN: unknown status";
}

size_t baatt_dtype_size(baatt_dtype d)
{
    switch (d) {
    case BAATT_DTYPE_F32: return 4;
    case BAATT_DTYPE_F16:
    case BAATT_DTYPE_BF16: return 2;
    }
    return 0;
}

const char *baatt_dtype_name(baatt_dtype d)
{
    switch (d) {
    case BAATT_DTYPE_F32: return "f32";
    case BAATT_DTYPE_F16: return "f16";
    case BAATT_DTYPE_BF16: return "bf16";
    }
    return "unknown";
}

baatt_config baatt_config_default(void)
{
    baatt_config c = {0};
    c.batch = 1;
    c.heads = 1;
    c.kv_heads = 1;
    c.head_dim = 64;
    c.dtype = BAATT_DTYPE_F32;
    c.block_size = 64;
    c.norm_sort = BAATT_SORT_AUTO;        /* bench/results/accuracy.md, "Defaults" */
    c.covariance = BAATT_COVARIANCE_AUTO; /* with norm_sort AUTO: accuracy.md, "Selection on real attention" */
    c.select_mode = BAATT_SELECT_KEEP_RATIO;
    c.keep_ratio = 0.5f;
    c.mass_threshold = 0.9f;
    return c;
}

/* Writes a printf-style message into msg (when given) and returns s; shared by every function
 * that reports into a caller's message buffer (config checks, .npy I/O, evaluation). */
baatt_status baatt_msgf(char *msg, size_t n, baatt_status s, const char *fmt, ...)
{
    if (msg && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, n, fmt, ap);
        va_end(ap);
    }
    return s;
}

baatt_auto_cands baatt_auto_candidates(const baatt_config *c)
{
    baatt_auto_cands a = {.blockings = c->norm_sort == BAATT_SORT_AUTO ? 2 : 1,
                          .lambdas = c->covariance == BAATT_COVARIANCE_AUTO ? 2 : 1};
    a.n = a.blockings * a.lambdas;
    for (uint32_t i = 0; i < a.n; i++) {
        uint32_t b = i % a.blockings, l = i / a.blockings;
        int sorted = a.blockings == 2 ? b == 0 : c->norm_sort == BAATT_SORT_NORM;
        int cov = a.lambdas == 2 ? l == 0 : c->covariance == BAATT_COVARIANCE_ON;
        a.sorted |= (uint32_t)sorted << i;
        a.cov |= (uint32_t)cov << i;
    }
    return a;
}

baatt_config baatt_auto_candidate_config(const baatt_config *c, const baatt_auto_cands *a, uint32_t x)
{
    baatt_config cx = *c;
    cx.norm_sort = (a->sorted >> x) & 1u ? BAATT_SORT_NORM : BAATT_SORT_OFF;
    cx.covariance = (a->cov >> x) & 1u ? BAATT_COVARIANCE_ON : BAATT_COVARIANCE_OFF;
    return cx;
}

baatt_status baatt_config_check(const baatt_config *c, char *msg, size_t n)
{
    if (msg && n) msg[0] = 0;
    if (!c) return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "config is NULL");
    if (!c->batch || !c->heads || !c->kv_heads || !c->q_len || !c->kv_len || !c->head_dim)
        return baatt_msgf(msg, n, BAATT_ERROR_BAD_SHAPE,
                          "every size must be > 0 (batch=%u heads=%u kv_heads=%u q_len=%u kv_len=%u head_dim=%u)",
                          c->batch, c->heads, c->kv_heads, c->q_len, c->kv_len, c->head_dim);
    if (c->heads % c->kv_heads)
        return baatt_msgf(msg, n, BAATT_ERROR_GQA_MISMATCH, "heads (%u) is not a multiple of kv_heads (%u)", c->heads,
                          c->kv_heads);
    if (c->head_dim != 64 && c->head_dim != 128)
        return baatt_msgf(msg, n, BAATT_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim %u is not supported (64 or 128)",
                          c->head_dim);
    if (c->dtype != BAATT_DTYPE_F32 && c->dtype != BAATT_DTYPE_F16 && c->dtype != BAATT_DTYPE_BF16)
        return baatt_msgf(msg, n, BAATT_ERROR_UNSUPPORTED_DTYPE, "dtype %d is not f32, f16 or bf16", (int)c->dtype);
    if (!isfinite(c->scale) || c->scale < 0)
        return baatt_msgf(msg, n, BAATT_ERROR_BAD_SCALE, "scale %g must be finite and >= 0 (0 means 1/sqrt(head_dim))",
                          (double)c->scale);
    /* Element counts must stay addressable by 32-bit shader indices (per tensor). */
    uint64_t qn = (uint64_t)c->batch * c->heads * c->q_len * c->head_dim;
    uint64_t kn = (uint64_t)c->batch * c->kv_heads * c->kv_len * c->head_dim;
    if (qn > 0x7fffffffull || kn > 0x7fffffffull)
        return baatt_msgf(msg, n, BAATT_ERROR_TOO_LARGE, "a tensor has more than 2^31-1 elements (Q %llu, K %llu)",
                          (unsigned long long)qn, (unsigned long long)kn);
    if (c->lse != 0 && c->lse != 1)
        return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "lse %d: expected 0 (no log-sum-exp) or 1", c->lse);
    if (c->dense) return BAATT_OK;
    if (c->block_size != 32 && c->block_size != 64 && c->block_size != 128)
        return baatt_msgf(msg, n, BAATT_ERROR_UNSUPPORTED_BLOCK_SIZE, "block_size %u is not supported (32, 64 or 128)",
                          c->block_size);
    if (c->norm_sort != BAATT_SORT_OFF && c->norm_sort != BAATT_SORT_NORM && c->norm_sort != BAATT_SORT_AUTO)
        return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT,
                          "norm_sort %d is not a baatt_sort_mode (0 off, 1 norm, 2 auto)", c->norm_sort);
    if (c->covariance != BAATT_COVARIANCE_OFF && c->covariance != BAATT_COVARIANCE_ON &&
        c->covariance != BAATT_COVARIANCE_AUTO)
        return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT,
                          "covariance %d is not a baatt_covariance_mode (0 off, 1 on, 2 auto)", c->covariance);
    if (c->select_mode == BAATT_SELECT_KEEP_RATIO) {
        if (!(c->keep_ratio > 0.0f && c->keep_ratio <= 1.0f))
            return baatt_msgf(msg, n, BAATT_ERROR_BAD_KEEP_RATIO, "keep_ratio %g is outside (0, 1]",
                              (double)c->keep_ratio);
    } else if (c->select_mode == BAATT_SELECT_MASS_THRESHOLD) {
        if (!(c->mass_threshold > 0.0f && c->mass_threshold <= 1.0f))
            return baatt_msgf(msg, n, BAATT_ERROR_BAD_THRESHOLD, "mass_threshold %g is outside (0, 1]",
                              (double)c->mass_threshold);
    } else {
        return baatt_msgf(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "select_mode %d is not a baatt_select_mode",
                          (int)c->select_mode);
    }
    if (c->max_blocks && c->min_blocks > c->max_blocks)
        return baatt_msgf(msg, n, BAATT_ERROR_BAD_BLOCK_LIMITS, "min_blocks (%u) exceeds max_blocks (%u)",
                          c->min_blocks, c->max_blocks);
    return BAATT_OK;
}

uint32_t baatt_config_q_blocks(const baatt_config *c)
{
    return c->block_size ? (c->q_len + c->block_size - 1) / c->block_size : 0;
}

uint32_t baatt_config_k_blocks(const baatt_config *c)
{
    return c->block_size ? (c->kv_len + c->block_size - 1) / c->block_size : 0;
}

float baatt_config_scale(const baatt_config *c)
{
    return c->scale > 0 ? c->scale : (float)(1.0 / sqrt((double)c->head_dim));
}

/* min/max clamping shared by both selection modes: at least one block, at most nk. */
static uint32_t clamp_blocks(const baatt_config *c, uint32_t k, uint32_t nk)
{
    uint32_t lo = c->min_blocks > 1 ? c->min_blocks : 1;
    uint32_t hi = c->max_blocks ? c->max_blocks : nk;
    if (hi > nk) hi = nk;
    if (lo > hi) lo = hi;
    return k < lo ? lo : k > hi ? hi : k;
}

uint32_t baatt_config_keep_blocks(const baatt_config *c)
{
    uint32_t nk = baatt_config_k_blocks(c);
    /* ceil in double with a tiny slack so that e.g. 0.5f * 6 is exactly 3, not 4. */
    double want = ceil((double)c->keep_ratio * nk - 1e-6);
    /* a ratio the check would refuse (NaN, > 1: possible on a threshold-mode config, which never
     * checks it) must not reach the float-to-int conversion, undefined outside uint32_t's range */
    uint32_t k = !(want >= 1) ? 1 : want > nk ? nk : (uint32_t)want;
    return clamp_blocks(c, k, nk);
}

/* Used by the threshold mode of both the reference and the GPU plan (after the prefix length m
 * is known). Declared in internal.h. */
uint32_t baatt_config_clamp_blocks(const baatt_config *c, uint32_t m)
{
    return clamp_blocks(c, m, baatt_config_k_blocks(c));
}
