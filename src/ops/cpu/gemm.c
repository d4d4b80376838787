/* GEMM entry points and the Linear layer. With OpenBLAS (MG_HAVE_OPENBLAS) the products are
 * cblas_sgemm, whose threads do the parallel work; without it, the blocked C loop in
 * gemm_fallback.c. */
#include "ops/ops.h"

#include "ops/cpu/gemm_fallback.h"
#include "ops/cpu/parallel.h"

#ifdef MG_HAVE_OPENBLAS
#include <cblas.h>
#endif

void gemm_nt(float *out, int ldc, const float *a, int lda, const float *b, int ldb, int M, int N,
             int K, float alpha, float beta) {
    if (M <= 0 || N <= 0) return;
#ifdef MG_HAVE_OPENBLAS
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, alpha, a, lda, b, ldb, beta,
                out, ldc);
#else
    gemm_nt_fallback(out, ldc, a, lda, b, ldb, M, N, K, alpha, beta);
#endif
}

void gemm_nn(float *out, int ldc, const float *a, int lda, const float *b, int ldb, int M, int N,
             int K, float alpha, float beta) {
    if (M <= 0 || N <= 0) return;
#ifdef MG_HAVE_OPENBLAS
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, alpha, a, lda, b, ldb, beta,
                out, ldc);
#else
    gemm_nn_fallback(out, ldc, a, lda, b, ldb, M, N, K, alpha, beta);
#endif
}

void linear_forward(float *out, const float *inp, const float *w, const float *b, int N, int IC,
                    int OC) {
    /* The bias goes in first and the GEMM accumulates onto it (beta 1): no second pass. */
    if (b) {
        MG_OMP(omp parallel for schedule(static) if ((long)N * OC > MG_OMP_MIN_ELEMS))
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] = b[o];
    }
    gemm_nt(out, OC, inp, IC, w, IC, N, OC, IC, 1.0f, b ? 1.0f : 0.0f);
}
