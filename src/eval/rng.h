/* The one seeded random generator of the harness, the CLI and the tests: xorshift64* streams
 * seeded through splitmix64, uniforms in (0, 1) and Box-Muller normals. Header-only so the
 * generators' inner loops (GiB-sized benchmark inputs, synthetic workloads) inline it.
 * The same seed gives the same bits from the same binary; libm's log/cos may differ in the last
 * bit between hosts, which nothing here depends on. */
#ifndef BAATT_EVAL_RNG_H
#define BAATT_EVAL_RNG_H

#include <math.h>
#include <stdint.h>

/* splitmix64's output function: a bijective mix of all 64 bits. Counter-based streams call it
 * on seed + i * golden directly (any element computed on its own). */
static inline uint64_t eval_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One splitmix64 step from x: turns correlated seeds (seed ^ head) into independent stream states. */
static inline uint64_t eval_splitmix64(uint64_t x) { return eval_mix64(x + 0x9E3779B97F4A7C15ull); }

/* Next xorshift64* output; *state must not be 0 (a zero state stays zero). */
static inline uint64_t eval_rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in (0, 1), 53 bits: never 0, so log() of it is finite. */
static inline double eval_rng_uniform(uint64_t *state)
{
    return ((eval_rng_next(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* One N(0, 1) per call (Box-Muller, cosine branch: simpler than caching the sine's twin). */
static inline double eval_rng_normal(uint64_t *state)
{
    double u1 = eval_rng_uniform(state), u2 = eval_rng_uniform(state);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
