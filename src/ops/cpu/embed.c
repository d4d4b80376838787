/* Sinusoidal embedding of the noise level, [cos(a), sin(a)] (cos first). */
#include "ops/ops.h"

#include <math.h>

void timestep_embedding(float *out, float sigma) {
    /* float64 throughout: a_j reaches 1000 rad at sigma = 1, where a float32 angle would
     * already be off by ~3e-5 rad before cos/sin. */
    const int half = 128;
    for (int j = 0; j < half; j++) {
        double a = (double)sigma * 1000.0 * exp(-log(10000.0) * j / half);
        out[j] = (float)cos(a);
        out[half + j] = (float)sin(a);
    }
}
