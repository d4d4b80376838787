/* RoPE reversed: each pair was turned by an angle a, x' = R(a) x; the gradient of x is
 * R(a)^T dx' = R(-a) dx', the same tables with the sign of sin flipped. In place. */
#include "ops/ops_backward.h"

#include "ops/cpu/parallel.h"

void rope_backward(float *dx, int ld, const float *cos_t, const float *sin_t, int N, int n_heads,
                   int dh) {
    int npairs = dh / 2;
    MG_OMP(omp parallel for schedule(static) if ((long)N * n_heads * dh > MG_OMP_MIN_ELEMS))
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)n * npairs, *s = sin_t + (size_t)n * npairs;
        for (int h = 0; h < n_heads; h++) {
            float *xh = dx + (size_t)n * ld + h * dh;
            for (int j = 0; j < npairs; j++) {
                float d0 = xh[2 * j], d1 = xh[2 * j + 1];
                xh[2 * j] = d0 * c[j] + d1 * s[j];
                xh[2 * j + 1] = -d0 * s[j] + d1 * c[j];
            }
        }
    }
}
