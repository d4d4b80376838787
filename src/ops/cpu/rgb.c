/* u8 RGB frames <-> float pixels in [0, 1]. */
#include "ops/ops.h"

#include <math.h>

#include "ops/cpu/parallel.h"

void rgb_u8_to_float(float *out, const unsigned char *inp, size_t n) {
    /* a true division, not * (1/255.f): bit-identical to the oracle's x/255 */
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t i = 0; i < n; i++) out[i] = (float)inp[i] / 255.0f;
}

void rgb_float_to_u8(unsigned char *out, const float *inp, size_t n) {
    /* clamp to [0, 1] (NaN -> 0), then round(255*x) to nearest, ties to even as torch.round */
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        x = x > 0.0f ? x : 0.0f;
        x = x < 1.0f ? x : 1.0f;
        out[i] = (unsigned char)lrintf(x * 255.0f);
    }
}
