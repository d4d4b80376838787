/* Random numbers: xoshiro256** seeded by splitmix64. Uniforms use only exact integer and
 * IEEE operations, so a seed gives identical bits on every machine (weights init).
 * Normals use Box-Muller (libm log/cos/sin), used for noise only. */
#ifndef MG_CORE_RNG_H
#define MG_CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_rng { uint64_t s[4]; int has_spare; float spare; } mg_rng;

uint64_t mg_splitmix64(uint64_t *state);
uint64_t mg_fnv1a64(const void *data, size_t n);
void mg_rng_seed(mg_rng *r, uint64_t seed);
uint64_t mg_rng_next(mg_rng *r);
float mg_rng_uniform(mg_rng *r);            /* [0, 1), 24 bits */
void mg_rng_normal_fill(mg_rng *r, float *out, size_t n);

#endif
