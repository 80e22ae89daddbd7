// A small deterministic random generator (splitmix64), identical natively and in wasm.
#ifndef BNL_RNG_H
#define BNL_RNG_H
#include <math.h>
#include <stdint.h>

typedef struct { uint64_t s; } bnl_rng;

static inline bnl_rng bnl_rng_seed(uint64_t seed) { bnl_rng r = {seed * 0x9E3779B97F4A7C15ull + 1}; return r; }
static inline uint64_t bnl_rng_u64(bnl_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// uniform in [0, 1)
static inline double bnl_rng_uniform(bnl_rng *r) { return (double)(bnl_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
// standard normal (Box-Muller, one value per call)
static inline double bnl_rng_normal(bnl_rng *r) {
    double u1 = bnl_rng_uniform(r), u2 = bnl_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static inline uint32_t bnl_rng_below(bnl_rng *r, uint32_t n) { return (uint32_t)((bnl_rng_u64(r) >> 32) * n >> 32); }
#endif
