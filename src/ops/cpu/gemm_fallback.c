/* A blocked GEMM in plain C for builds without OpenBLAS. A 4x16 register tile (8 AVX2
 * accumulators) streams a packed panel of B, so the same micro-kernel serves B (K, N) and
 * B^T (N, K). Threads split the output into MC x NR tiles; each packs its own B panel into a
 * stack buffer (16 KiB). On the dev VM (Sapphire Rapids class, one thread, -march=x86-64-v3)
 * it runs 57 GFLOP/s at 1024^3 and 65-70 at the conv shape (4096, 64, 576): OpenBLAS 0.3.21
 * gets 21 with the SSE3 kernels it picks for this CPU, 64 (Haswell) and 150 (SkylakeX) when
 * told the core type. A 6x16 tile spilled and ran 45. */
#include "ops/cpu/gemm_fallback.h"

#include <stddef.h>

#include "ops/cpu/parallel.h"

#define MR 4   /* rows of A per micro-kernel call */
#define NR 16  /* columns of out per tile: two AVX2 vectors */
#define KC 256 /* depth of one packed B panel: KC*NR floats stay in L1 */
#define MC 64  /* rows of out per thread task: the packing is amortised over MC rows */

/* tile (MR, NR) = a (MR rows, given as row pointers, kc columns) @ bp (kc, NR).
 * Fixed trip counts and one named accumulator array per row (no runtime index into them), so
 * the compiler unrolls u, keeps all MR*NR sums in vector registers and emits broadcast-FMA. */
static void micro_kernel(float tile[MR][NR], const float *a[MR], const float *bp, int kc) {
    float c0[NR] = {0}, c1[NR] = {0}, c2[NR] = {0}, c3[NR] = {0};
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    for (int k = 0; k < kc; k++) {
        const float *bk = bp + (size_t)k * NR;
        float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
        for (int u = 0; u < NR; u++) {
            c0[u] += x0 * bk[u];
            c1[u] += x1 * bk[u];
            c2[u] += x2 * bk[u];
            c3[u] += x3 * bk[u];
        }
    }
    for (int u = 0; u < NR; u++) {
        tile[0][u] = c0[u];
        tile[1][u] = c1[u];
        tile[2][u] = c2[u];
        tile[3][u] = c3[u];
    }
}

/* out = beta * out, where beta == 0 writes zeros (a NaN-filled out must not leak through).
 * Only for K == 0 or alpha == 0; otherwise beta is applied as the first k-panel is stored. */
static void scale_out(float *out, int ldc, int M, int N, float beta) {
    if (beta == 1.0f) return;
    for (int i = 0; i < M; i++) {
        float *row = out + (size_t)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++) row[j] = 0.0f;
        else
            for (int j = 0; j < N; j++) row[j] *= beta;
    }
}

/* b_trans = 1: B is (N, K) (gemm_nt); 0: B is (K, N) (gemm_nn). */
static void gemm_fallback(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
                          int M, int N, int K, float alpha, float beta, int b_trans) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_out(out, ldc, M, N, beta);
        return;
    }
    int tiles_i = (M + MC - 1) / MC, tiles_j = (N + NR - 1) / NR;
    MG_OMP(omp parallel for collapse(2) schedule(static) if ((double)M * N * K > 1e6))
    for (int ti = 0; ti < tiles_i; ti++) {
        for (int tj = 0; tj < tiles_j; tj++) {
            float bp[KC * NR];
            int i0 = ti * MC, i1 = i0 + MC < M ? i0 + MC : M;
            int j0 = tj * NR, nr = N - j0 < NR ? N - j0 : NR;
            for (int k0 = 0; k0 < K; k0 += KC) {
                int kc = K - k0 < KC ? K - k0 : KC;
                for (int k = 0; k < kc; k++) {
                    for (int u = 0; u < NR; u++) {
                        float v = 0.0f;
                        if (u < nr)
                            v = b_trans ? b[(size_t)(j0 + u) * ldb + k0 + k]
                                        : b[(size_t)(k0 + k) * ldb + j0 + u];
                        bp[k * NR + u] = v;
                    }
                }
                for (int i = i0; i < i1; i += MR) {
                    /* rows past the end repeat the last row: computed, then not stored */
                    int mr = i1 - i < MR ? i1 - i : MR;
                    const float *ar[MR];
                    for (int r = 0; r < MR; r++)
                        ar[r] = a + (size_t)(i + (r < mr ? r : mr - 1)) * lda + k0;
                    float tile[MR][NR];
                    micro_kernel(tile, ar, bp, kc);
                    for (int r = 0; r < mr; r++) {
                        float *o = out + (size_t)(i + r) * ldc + j0;
                        if (k0 > 0 || beta == 1.0f)
                            for (int u = 0; u < nr; u++) o[u] += alpha * tile[r][u];
                        else if (beta == 0.0f) /* never read out: NaN in it must not leak */
                            for (int u = 0; u < nr; u++) o[u] = alpha * tile[r][u];
                        else
                            for (int u = 0; u < nr; u++) o[u] = beta * o[u] + alpha * tile[r][u];
                    }
                }
            }
        }
    }
}

void gemm_nt_fallback(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
                      int M, int N, int K, float alpha, float beta) {
    gemm_fallback(out, ldc, a, lda, b, ldb, M, N, K, alpha, beta, 1);
}

void gemm_nn_fallback(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
                      int M, int N, int K, float alpha, float beta) {
    gemm_fallback(out, ldc, a, lda, b, ldb, M, N, K, alpha, beta, 0);
}
