#include "core/rng.h"

#include <math.h>

uint64_t mg_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t mg_fnv1a64(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

void mg_rng_seed(mg_rng *r, uint64_t seed) {
    uint64_t st = seed;
    for (int i = 0; i < 4; i++) r->s[i] = mg_splitmix64(&st);
    r->has_spare = 0;
    r->spare = 0;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mg_rng_next(mg_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float mg_rng_uniform(mg_rng *r) { return (float)(mg_rng_next(r) >> 40) * (1.0f / 16777216.0f); }

void mg_rng_normal_fill(mg_rng *r, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (r->has_spare) {
            out[i] = r->spare;
            r->has_spare = 0;
            continue;
        }
        /* u1 in (0, 1] so log never sees 0 */
        double u1 = ((double)(mg_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
        double u2 = (double)(mg_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
        double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
        out[i] = (float)(rad * cos(th));
        r->spare = (float)(rad * sin(th));
        r->has_spare = 1;
    }
}
