/* LayerNorm without affine, followed by adaLN modulation: out = y*(1+scale) + shift.
 * The statistics are two-pass in double: activations in a residual stream can carry a large
 * common offset, and the one-pass E[x^2]-E[x]^2 in float cancels catastrophically there. */
#include "ops/ops.h"

#include <math.h>

#include "ops/cpu/parallel.h"

void layernorm_modulate_forward(float *out, const float *inp, const float *shift,
                                const float *scale, int N, int C) {
    const double eps = 1e-5;
    MG_OMP(omp parallel for schedule(static) if ((long)N * C > MG_OMP_MIN_ELEMS / 4))
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double sum = 0.0;
        MG_OMP(omp simd reduction(+ : sum))
        for (int c = 0; c < C; c++) sum += x[c];
        double mean = sum / C;
        double ss = 0.0;
        MG_OMP(omp simd reduction(+ : ss))
        for (int c = 0; c < C; c++) {
            double d = x[c] - mean;
            ss += d * d;
        }
        double rstd = 1.0 / sqrt(ss / C + eps); /* biased variance, as torch LayerNorm */
        for (int c = 0; c < C; c++) {
            float y = (float)((x[c] - mean) * rstd);
            o[c] = y * (1.0f + scale[c]) + shift[c];
        }
    }
}
