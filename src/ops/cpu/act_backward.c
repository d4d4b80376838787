/* Element-wise activations and the gated residual, reversed. Each derivative is taken of the
 * function the forward computes (act.c), in the same numerically safe form. */
#include "ops/ops_backward.h"

#include <math.h>

#include "ops/cpu/parallel.h"

void relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void add_relu_backward(float *da, float *db, const float *dout, const float *out, size_t n) {
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t i = 0; i < n; i++) {
        float g = out[i] > 0.0f ? dout[i] : 0.0f;
        da[i] += g;
        if (db) db[i] += g;
    }
}

void leaky_relu_backward(float *dinp, const float *dout, const float *out, float slope, size_t n) {
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : slope * dout[i];
}

void silu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* silu = x*s, s = sigmoid(x): silu' = s + x*s*(1-s) = s*(1 + x*(1-s)). For x -> -inf,
     * expf overflows to inf, s = 0 and the product is 0 (x finite). */
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], s = 1.0f / (1.0f + expf(-x));
        dinp[i] += dout[i] * s * (1.0f + x * (1.0f - s));
    }
}

void gelu_tanh_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* gelu = 0.5*x*(1 + tanh z), z = k*(x + 0.044715 x^3). With g = 0.5*(1 + tanh z) =
     * sigmoid(2z) (the forward's form) and sech^2 z = 4 g (1-g):
     *     gelu' = g + x * 2 g (1-g) * k * (1 + 3*0.044715 x^2).
     * No tanh or cosh: cosh overflows for |z| > 89, this stays finite everywhere. */
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], x2 = x * x;
        float g = 1.0f / (1.0f + expf(-2.0f * k * (x + 0.044715f * x2 * x)));
        float local = g + x * 2.0f * g * (1.0f - g) * k * (1.0f + 3.0f * 0.044715f * x2);
        dinp[i] += dout[i] * local;
    }
}

void gated_residual_backward(float *dy, float *dgate, const float *dx, const float *y,
                             const float *gate, int N, int C) {
    MG_OMP(omp parallel for schedule(static) if ((long)N * C > MG_OMP_MIN_ELEMS))
    for (int n = 0; n < N; n++) {
        float *dyr = dy + (size_t)n * C;
        const float *dxr = dx + (size_t)n * C;
        for (int c = 0; c < C; c++) dyr[c] += gate[c] * dxr[c];
    }
    /* the gate's sum over rows: one thread, rows in order */
    for (int n = 0; n < N; n++) {
        const float *dxr = dx + (size_t)n * C, *yr = y + (size_t)n * C;
        for (int c = 0; c < C; c++) dgate[c] += dxr[c] * yr[c];
    }
}
