/* LayerNorm (no affine) + adaLN modulation, reversed. With xhat = (x - mean) * rstd and
 * g = dout * (1 + scale):
 *     dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
 *     dshift = sum_rows dout,  dscale = sum_rows dout * xhat.
 * The statistics are recomputed from the input, two-pass in float64 exactly as the forward
 * (norm.c) does, so nothing has to be kept between the passes. */
#include "ops/ops_backward.h"

#include <math.h>

#include "ops/cpu/parallel.h"

static void row_stats(const float *x, int C, double *mean, double *rstd) {
    double sum = 0.0;
    for (int c = 0; c < C; c++) sum += x[c];
    double m = sum / C, ss = 0.0;
    for (int c = 0; c < C; c++) {
        double d = x[c] - m;
        ss += d * d;
    }
    *mean = m;
    *rstd = 1.0 / sqrt(ss / C + 1e-5); /* biased variance, eps 1e-5, as the forward */
}

void layernorm_modulate_backward(float *dinp, float *dshift, float *dscale, const float *dout,
                                 const float *inp, const float *scale, int N, int C) {
    if (dinp) {
        MG_OMP(omp parallel for schedule(static) if ((long)N * C > MG_OMP_MIN_ELEMS / 4))
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *go = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            double mean, rstd;
            row_stats(x, C, &mean, &rstd);
            double sg = 0.0, sgx = 0.0;
            for (int c = 0; c < C; c++) {
                double g = (double)go[c] * (1.0 + scale[c]);
                sg += g;
                sgx += g * (x[c] - mean) * rstd;
            }
            sg /= C, sgx /= C;
            for (int c = 0; c < C; c++) {
                double xhat = (x[c] - mean) * rstd, g = (double)go[c] * (1.0 + scale[c]);
                dx[c] += (float)(rstd * (g - sg - xhat * sgx));
            }
        }
    }
    /* the modulation's sums over rows: one thread, rows in order */
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *go = dout + (size_t)n * C;
        double mean, rstd;
        row_stats(x, C, &mean, &rstd);
        for (int c = 0; c < C; c++) {
            dshift[c] += go[c];
            dscale[c] += go[c] * (float)((x[c] - mean) * rstd);
        }
    }
}
