/* Rotary position embedding over (frame, token row, token column), docs/ARCHITECTURE.md "RoPE".
 * The tables are built once per frame; angles are float64 and reduced mod 2*pi before cos/sin
 * because absolute frame indices grow without bound in a stream (frame 10^6 at omega = 1 is
 * an angle float32 could only place to within ~0.06 rad). */
#include "ops/ops.h"
#include "ops/ops_backward.h"

#include <math.h>

#include "ops/cpu/parallel.h"

void rope_tables(float *cos_t, float *sin_t, long long frame, int Ty, int Tx, int dh,
                 double theta) {
    const double two_pi = 6.283185307179586476925;
    int npairs = dh / 2;
    int nt = npairs / 4, ny = (npairs - nt) / 2, nx = npairs - nt - ny;
    for (int ty = 0; ty < Ty; ty++) {
        for (int tx = 0; tx < Tx; tx++) {
            size_t row = ((size_t)ty * Tx + tx) * npairs;
            for (int j = 0; j < npairs; j++) {
                /* which axis this pair belongs to, its index i within the axis, and n */
                double pos;
                int i, n;
                if (j < nt) { pos = (double)frame; i = j; n = nt; }
                else if (j < nt + ny) { pos = ty; i = j - nt; n = ny; }
                else { pos = tx; i = j - nt - ny; n = nx; }
                double angle = fmod(pos * pow(theta, -(double)i / n), two_pi);
                cos_t[row + j] = (float)cos(angle);
                sin_t[row + j] = (float)sin(angle);
            }
        }
    }
}

/* Turns each pair (x0, x1) of every head by its angle, or by minus its angle when sign is -1:
 * the forward rotation and its transpose (the gradient) are one loop. sign is +-1, so
 * s * sign is exact and the forward is bit-identical to a loop without it. */
static void rope_rotate(float *x, int ld, const float *cos_t, const float *sin_t, int N, int n_heads, int dh,
                        float sign) {
    int npairs = dh / 2;
    MG_OMP(omp parallel for schedule(static) if ((long)N * n_heads * dh > MG_OMP_MIN_ELEMS))
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)n * npairs, *s = sin_t + (size_t)n * npairs;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (size_t)n * ld + h * dh;
            for (int j = 0; j < npairs; j++) {
                float x0 = xh[2 * j], x1 = xh[2 * j + 1], sj = sign * s[j];
                xh[2 * j] = x0 * c[j] - x1 * sj;
                xh[2 * j + 1] = x0 * sj + x1 * c[j];
            }
        }
    }
}

void rope_forward(float *x, int ld, const float *cos_t, const float *sin_t, int N, int n_heads,
                  int dh) {
    rope_rotate(x, ld, cos_t, sin_t, N, n_heads, dh, 1.0f);
}

/* Each pair was turned by an angle a, x' = R(a) x; the gradient of x is R(a)^T dx' = R(-a) dx',
 * the same tables with the sign of sin flipped. In place. */
void rope_backward(float *dx, int ld, const float *cos_t, const float *sin_t, int N, int n_heads,
                   int dh) {
    rope_rotate(dx, ld, cos_t, sin_t, N, n_heads, dh, -1.0f);
}
