/* The weight-gradient GEMM (A transposed) and the Linear layer's backward.
 * With OpenBLAS gemm_tn is cblas_sgemm(Trans, NoTrans); without it, a row loop over the
 * output that streams rows of A^T's source and B, which the compiler vectorises over N. */
#include "ops/ops_backward.h"

#include "ops/ops.h"
#include "ops/cpu/parallel.h"

#ifdef MG_HAVE_OPENBLAS
#include <cblas.h>
#endif

void gemm_tn(float *out, int ldc, const float *a, int lda, const float *b, int ldb, int M, int N,
             int K, float alpha, float beta) {
    if (M <= 0 || N <= 0) return;
#ifdef MG_HAVE_OPENBLAS
    if (K > 0) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, alpha, a, lda, b, ldb, beta,
                    out, ldc);
        return;
    }
#endif
    /* out row i = beta*out_i + alpha * sum_k a[k][i] * b[k] (row k of B). beta == 0 writes
     * zeros first, so NaN in out never leaks through (as BLAS does). */
    MG_OMP(omp parallel for schedule(static) if ((double)M * N * K > 1e6))
    for (int i = 0; i < M; i++) {
        float *o = out + (size_t)i * ldc;
        for (int j = 0; j < N; j++) o[j] = beta == 0.0f ? 0.0f : beta * o[j];
        for (int k = 0; k < K; k++) {
            float s = alpha * a[(size_t)k * lda + i];
            const float *bk = b + (size_t)k * ldb;
            for (int j = 0; j < N; j++) o[j] += s * bk[j];
        }
    }
}

void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int N, int IC, int OC) {
    /* dinp (N, IC) += dout (N, OC) @ w (OC, IC) */
    if (dinp) gemm_nn(dinp, IC, dout, OC, w, IC, N, IC, OC, 1.0f, 1.0f);
    /* dw (OC, IC) += dout^T (OC, N) @ inp (N, IC) */
    gemm_tn(dw, IC, dout, OC, inp, IC, OC, IC, N, 1.0f, 1.0f);
    /* db (OC) += column sums of dout, rows in order (one thread: the same bits every run) */
    if (db)
        for (int n = 0; n < N; n++) {
            const float *r = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) db[o] += r[o];
        }
}
