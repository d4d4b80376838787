/* The built-in GEMM used when OpenBLAS is absent. Exposed (internally) so the tests can hold
 * it to the same reference as the OpenBLAS path even in a build that has OpenBLAS. */
#ifndef MG_OPS_CPU_GEMM_FALLBACK_H
#define MG_OPS_CPU_GEMM_FALLBACK_H

/* Same contracts as gemm_nt / gemm_nn in ops.h. beta == 0 overwrites out (NaN in out does
 * not propagate), as BLAS does. */
void gemm_nt_fallback(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
                      int M, int N, int K, float alpha, float beta);
void gemm_nn_fallback(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
                      int M, int N, int K, float alpha, float beta);

#endif
