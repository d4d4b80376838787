/* Multi-head attention, softmax(q k^T / sqrt(dh)) v, all keys visible.
 *
 * Heads run one after another, and each head's queries in blocks of ATT_QBLOCK rows: the
 * (qb, Nk) score block lives in scratch, the two products are GEMMs (threaded by OpenBLAS or
 * the fallback) and the softmax between them is OpenMP over rows. Blocking the queries keeps
 * scratch at ATT_QBLOCK*Nk floats (8 MiB at Nk = 8192) instead of Nq*Nk, and the score
 * block warm in cache between the three passes. */
#include "ops/ops.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/cpu/parallel.h"

#define ATT_QBLOCK 256

size_t attention_scratch_floats(int Nq, int Nk) {
    return (size_t)(Nq < ATT_QBLOCK ? Nq : ATT_QBLOCK) * Nk;
}

/* exp(x) for x <= 0 (scores minus their row max), accurate to ~2 ulp. libm's expf does not
 * vectorise without -ffast-math and would cost as much as both GEMMs; this is Cephes' expf
 * (range reduction by ln 2 in two parts, degree-5 polynomial), written branch-free so the
 * loop that calls it vectorises. Below -87.3 the result clamps to ~1e-38, i.e. zero weight. */
static inline float exp_nonpos(float x) {
    x = x > -87.3f ? x : -87.3f;
    float fx = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)fx + 127) << 23; /* 2^fx, fx in [-126, 0] */
    float pow2;
    memcpy(&pow2, &bits, sizeof pow2);
    return p * pow2;
}

/* In place: row = softmax(row). */
static void softmax_row(float *row, int n) {
    float m = row[0];
    for (int j = 1; j < n; j++) m = row[j] > m ? row[j] : m;
    double sum = 0.0; /* 8192 terms: float would lose ~1e-5 */
    MG_OMP(omp simd reduction(+ : sum))
    for (int j = 0; j < n; j++) {
        float e = exp_nonpos(row[j] - m);
        row[j] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < n; j++) row[j] *= inv;
}

void attention_forward(float *out, const float *q, int ldq, const float *k, const float *v,
                       int ldkv, float *scratch, int Nq, int Nk, int n_heads, int dh) {
    const int D = n_heads * dh;
    const float scale = (float)(1.0 / sqrt((double)dh));
    for (int h = 0; h < n_heads; h++) {
        for (int q0 = 0; q0 < Nq; q0 += ATT_QBLOCK) {
            int qb = Nq - q0 < ATT_QBLOCK ? Nq - q0 : ATT_QBLOCK;
            /* scores (qb, Nk) = scale * q_h (qb, dh) @ k_h^T */
            gemm_nt(scratch, Nk, q + (size_t)q0 * ldq + h * dh, ldq, k + h * dh, ldkv, qb, Nk,
                    dh, scale, 0.0f);
            MG_OMP(omp parallel for schedule(static) if ((long)qb * Nk > MG_OMP_MIN_ELEMS))
            for (int i = 0; i < qb; i++) softmax_row(scratch + (size_t)i * Nk, Nk);
            /* out_h (qb, dh) = P (qb, Nk) @ v_h (Nk, dh) */
            gemm_nn(out + (size_t)q0 * D + h * dh, D, scratch, Nk, v + h * dh, ldkv, qb, dh, Nk,
                    1.0f, 0.0f);
        }
    }
}
