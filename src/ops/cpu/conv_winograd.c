/* Winograd F(m x m, 3x3), m = 2 or 4, for the stride-1 3x3 convolutions (pad 1, HWC).
 *
 * The output is cut into m x m tiles; tile (ty, tx) reads the n x n input patch (n = m+2)
 * whose top-left pixel is (ty*m - 1, tx*m - 1), zeros outside the image. With the matrices of
 * Lavin & Gray 2015 (which compute PyTorch's cross-correlation, not a flipped convolution)
 *     U = G g G^T   (n x n per (ci, co): once, in conv3x3_wino_pack, in double)
 *     V = B^T d B   (n x n per (tile, ci))
 *     Y = A^T [sum_ci U(ci, co) * V(tile, ci)] A + b   (m x m per (tile, co))
 * and the sum over ci, done separately for each of the P = n*n positions, is a GEMM:
 *     M_p (tiles, Co) = V_p (tiles, Ci) @ U_p (Ci, Co),   p = 0..P-1.
 * Per output pixel that is P/m^2 * Ci*Co multiply-adds instead of 9*Ci*Co: 2.25x fewer for
 * F(2,3), 4x fewer for F(4,3).
 *
 * Threads take blocks of Tb tiles (consecutive in row-major tile order, so a block may span
 * tile rows) and run the three steps on each: input transform into V, the P GEMMs into M,
 * output transform with bias, residual and relu straight into out. A block's V and M (~0.5
 * MiB) stay in the core's L2; one fork/join per conv, for the reason conv.c gives. In HWC a
 * pixel's channels are contiguous, so the transforms work on 16 channels at a time, one
 * vector lane a channel, and the tiles inside the image read and write the feature maps in
 * place; only the edge tiles go through a zero-padded patch and an m x m output buffer.
 *
 * The GEMMs are small (K = Ci, N = Co, 32 or 64 in the autoencoder), so they run on register-
 * blocked kernels here rather than sgemm: 12 rows x 32 columns of zmm accumulators with
 * AVX-512, 6 x 16 of ymm with AVX2+FMA, picked at run time (the transforms are compiled for
 * AVX-512 too). Rows are padded to a multiple of 12, U's columns (Cop) and rows (Cip) to 16,
 * so no kernel has a remainder. Anywhere else (or with conv3x3_wino_limit_isa(0)) the GEMMs
 * are gemm_nn. One thread, 128x128 32->32, F(2,3): 1.47 ms on these kernels against 1.97 ms
 * with OpenBLAS's AVX-512 sgemm; with AVX2 only, 2.6 ms against 3.3 ms (OpenBLAS Haswell).
 *
 * dev/cpu/bench_conv.c on the 2-core dev VM (Xeon, Sapphire Rapids class, KVM), 2 OpenMP
 * threads, OPENBLAS_CORETYPE=SkylakeX, one quiet run (load 0.5-0.9), GFLOP/s counted as a
 * direct conv (2*H*W*9*Ci*Co), best of >= 5 calls; "im2col-blas" is conv.c's im2col with
 * OpenBLAS, the library before Winograd:
 *                          im2col-blas   im2col   wino-f2 (lib)   wino-f4
 *     256x256  32->32         148.7      210.0       395.8         629.8
 *     128x128  32->32         139.8      173.2       346.1         517.2
 *     256x256  64->64         197.7      229.0       404.8         729.0
 *     128x128  64->64         221.4      253.2       438.9         720.8
 *      32x32   32->32         154.2      207.2       357.7         544.7
 * F(2,3) is 2.0-2.7x the old library; F(4,3) another 1.5-1.8x.
 *
 * Accuracy, fp32, random data in [-1, 1], tests/test_ops.c's measure (max |err| / (|ref| +
 * rms(ref)) against a double reference, worst over the test cases): im2col 1.3e-6 (its K =
 * 9*Ci sums in fp32), F(2,3) 1.5e-6, about the same; F(4,3) 1.0e-5 at Ci = 64 (8e-6 at 32,
 * 1.2e-5 at 512x512x64 in the lab), at the test's tolerance of 1e-5, which is why the library
 * uses F(2,3) (conv.c). F(4,3) uses the points
 * 0, 1, -1, 1/2, -2 (below), about half the error of Lavin's 0, +-1, +-2; most of what is
 * left is the fp32 rounding of U and V themselves and the K = Ci accumulation, which no
 * reordering of the transforms removes. On the model (tests/test_model.c against PyTorch)
 * both stay near 1e-6: F(4,3) 7.8e-7 worst on the decoder against 4.0e-7 for F(2,3). */
#include "ops/cpu/conv_impl.h"

#include <string.h>

#include "ops/cpu/parallel.h"
#include "ops/ops.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define WINO_X86 1
#include <immintrin.h>
#endif

/* Tiles per block are a multiple of this: both kernels' row counts (12 and 6) divide it. */
#define WINO_ROWS 12
/* Total scratch: 8 MiB (or the whole image's transforms when smaller, or one block). */
#define WINO_SCRATCH_FLOATS ((size_t)2 * 1024 * 1024)
/* Target size of one block's V + M (floats): they stay in L2 between the three steps. */
#ifndef MG_WINO_BLOCK_FLOATS
#define MG_WINO_BLOCK_FLOATS (128 * 1024)
#endif
/* As in conv.c: several blocks per thread, so a thread that loses its core for a time slice
 * leaves blocks for the others to take. */
#define WINO_BLOCKS_PER_THREAD 4

static int round_up(int x, int a) { return (x + a - 1) / a * a; }

/* ---- weight transform ------------------------------------------------------------- */

static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
/* F(4,3) on the points 0, 1, -1, 1/2, -2 (and infinity) rather than Lavin's 0, +-1, +-2:
 * about half the fp32 error (Barabasz et al. 2020, "Error analysis and improving the
 * accuracy of Winograd convolution for deep neural networks"). */
static const double G4[6][3] = {{1, 0, 0},
                                {1.0 / 3, 1.0 / 3, 1.0 / 3},
                                {-1.0 / 3, 1.0 / 3, -1.0 / 3},
                                {-16.0 / 15, -8.0 / 15, -4.0 / 15},
                                {1.0 / 15, -2.0 / 15, 4.0 / 15},
                                {0, 0, 1}};

size_t conv3x3_wino_packed_floats(int Ci, int Co, int m) {
    int n = m + 2;
    return (size_t)n * n * round_up(Ci, 16) * round_up(Co, 16);
}

void conv3x3_wino_pack(float *wu, const float *w, int Ci, int Co, int m) {
    /* wu (P, Cip, Cop): position p = i*n + j (i the row frequency), row ci, column co */
    int n = m + 2, Cip = round_up(Ci, 16), Cop = round_up(Co, 16);
    const double(*G)[3] = m == 2 ? G2 : G4;
    memset(wu, 0, conv3x3_wino_packed_floats(Ci, Co, m) * sizeof(float));
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++) {
            const float *g = w + ((size_t)co * Ci + ci) * 9; /* g[ky*3 + kx] */
            double t[6][3];                                  /* G g */
            for (int i = 0; i < n; i++)
                for (int l = 0; l < 3; l++)
                    t[i][l] = G[i][0] * g[l] + G[i][1] * g[3 + l] + G[i][2] * g[6 + l];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    wu[((size_t)(i * n + j) * Cip + ci) * Cop + co] =
                        (float)(t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2]);
        }
}

/* ---- input and output transforms, 16 channels a vector, one channel a lane --------- */

/* 16 lanes: one zmm with AVX-512; the compiler splits it into two ymm (AVX2) or four
 * NEON registers elsewhere. Vectors are only passed by pointer (no ABI questions). */
typedef float v16 __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
/* Memory is accessed through this one: unaligned, and allowed to alias the float arrays. */
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
#define LD16(p) (*(const v16u *)(const void *)(p))
#define ST16(p, v) (*(v16u *)(void *)(p) = (v))
#define AI static inline __attribute__((always_inline))

/* B^T d for F(2,3) (n = 4) and F(4,3) (n = 6): d in, t out, n vectors each. */
AI void bt4(v16 *t, const v16 *d) {
    t[0] = d[0] - d[2];
    t[1] = d[1] + d[2];
    t[2] = d[2] - d[1];
    t[3] = d[1] - d[3];
}

AI void bt6(v16 *t, const v16 *d) {
    v16 c = d[4] - d[2];
    t[0] = d[0] + d[4] - 2.0f * d[2] + 1.5f * (d[3] - d[1]);
    t[1] = (d[4] - d[1]) + 0.5f * d[2] + 2.5f * d[3];
    t[2] = (d[4] + d[1]) - 2.5f * d[2] + 0.5f * d[3];
    t[3] = c + 2.0f * (d[3] - d[1]);
    t[4] = c + 0.5f * (d[1] - d[3]);
    t[5] = d[5] + d[1] - 2.0f * d[3] + 1.5f * (d[4] - d[2]);
}

/* A^T m for F(2,3) (4 -> 2) and F(4,3) (6 -> 4). */
AI void at4(v16 *y, const v16 *d) {
    y[0] = d[0] + d[1] + d[2];
    y[1] = d[1] - d[2] - d[3];
}

AI void at6(v16 *y, const v16 *d) {
    v16 s = d[1] + d[2], t = d[1] - d[2];
    y[0] = d[0] + s + d[3] + d[4];
    y[1] = t + 0.5f * d[3] - 2.0f * d[4];
    y[2] = s + 0.25f * d[3] + 4.0f * d[4];
    y[3] = t + 0.125f * d[3] - 8.0f * d[4] + d[5];
}

/* One tile's V = B^T d B over channels 0..Cip-1 (a multiple of 16, all of them readable):
 * patch pixel (i, j) at src + i*rs + j*ps; position p = i*n + j goes to V + p*ldp. */
AI void in_tile(float *V, size_t ldp, const float *src, size_t rs, size_t ps, int Cip, int m) {
    for (int c = 0; c < Cip; c += 16) {
        if (m == 4) {
            v16 t[6][6], d[6], o[6]; /* t[i]: patch row i after the transform along x */
            for (int i = 0; i < 6; i++) {
                for (int j = 0; j < 6; j++) d[j] = LD16(src + i * rs + j * ps + c);
                bt6(t[i], d);
            }
            for (int j = 0; j < 6; j++) {
                for (int i = 0; i < 6; i++) d[i] = t[i][j];
                bt6(o, d);
                for (int i = 0; i < 6; i++) ST16(V + (size_t)(i * 6 + j) * ldp + c, o[i]);
            }
        } else {
            v16 t[4][4], d[4], o[4];
            for (int i = 0; i < 4; i++) {
                for (int j = 0; j < 4; j++) d[j] = LD16(src + i * rs + j * ps + c);
                bt4(t[i], d);
            }
            for (int j = 0; j < 4; j++) {
                for (int i = 0; i < 4; i++) d[i] = t[i][j];
                bt4(o, d);
                for (int i = 0; i < 4; i++) ST16(V + (size_t)(i * 4 + j) * ldp + c, o[i]);
            }
        }
    }
}

/* Bias, residual, relu, store of one output vector. */
AI void emit(float *dst, const float *res, const v16 *yp, const v16 *bias, int relu) {
    v16 y = *yp + *bias;
    if (res) y += LD16(res);
    if (relu) y = (v16)((v16i)y & (y > (v16){0})); /* x > 0 ? x : 0, as relu_forward */
    ST16(dst, y);
}

/* One tile's Y = A^T M A + b (+ res, relu) over channels 0..Cv-1 (a multiple of 16): M
 * position p at M + p*ldp; output pixel (i, j) at dst + i*rs + j*ps, its residual at the
 * same offset from res (or none); b NULL for no bias. */
AI void out_tile(float *dst, const float *res, size_t rs, size_t ps, const float *M, size_t ldp,
                 const float *b, int Cv, int m, int relu) {
    for (int c = 0; c < Cv; c += 16) {
        v16 bias = {0};
        if (b) bias = LD16(b + c);
        if (m == 4) {
            v16 t[6][4], d[6], y[4]; /* t[i]: row i of M after the transform along x */
            for (int i = 0; i < 6; i++) {
                for (int j = 0; j < 6; j++) d[j] = LD16(M + (size_t)(i * 6 + j) * ldp + c);
                at6(t[i], d);
            }
            for (int j = 0; j < 4; j++) {
                for (int i = 0; i < 6; i++) d[i] = t[i][j];
                at6(y, d);
                for (int i = 0; i < 4; i++) {
                    size_t at = i * rs + j * ps + c;
                    emit(dst + at, res ? res + at : NULL, &y[i], &bias, relu);
                }
            }
        } else {
            v16 t[4][2], d[4], y[2];
            for (int i = 0; i < 4; i++) {
                for (int j = 0; j < 4; j++) d[j] = LD16(M + (size_t)(i * 4 + j) * ldp + c);
                at4(t[i], d);
            }
            for (int j = 0; j < 2; j++) {
                for (int i = 0; i < 4; i++) d[i] = t[i][j];
                at4(y, d);
                for (int i = 0; i < 2; i++) {
                    size_t at = i * rs + j * ps + c;
                    emit(dst + at, res ? res + at : NULL, &y[i], &bias, relu);
                }
            }
        }
    }
}

/* ---- the P GEMMs ------------------------------------------------------------------- */

static int wino_isa_limit = 2;

int conv3x3_wino_limit_isa(int level) {
    int prev = wino_isa_limit;
    wino_isa_limit = level;
    return prev;
}

/* M_p (rows, Cop) = V_p (rows, Cip) @ U_p (Cip, Cop) for every p; rows a multiple of 12,
 * Cip and Cop of 16. Row r of V_p at V + p*vps + r*vrs, of M_p at M + p*mps + r*mrs; U_p at
 * U + p*Cip*Cop. */
typedef void (*wino_gemm_fn)(float *M, size_t mps, int mrs, const float *V, size_t vps, int vrs,
                             const float *U, int P, int rows, int Cip, int Cop);

#ifdef WINO_X86
/* rows 12 x columns 16*NV of c (ldc) = a (12, K; lda) @ b (K, 16*NV; ldb) (+ c if beta) */
__attribute__((target("avx512f"), always_inline)) static inline void
kernel_avx512(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int K,
              const int NV, int beta) {
    __m512 acc[12][2];
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    if (beta)
#pragma GCC unroll 12
        for (int r = 0; r < 12; r++) {
            acc[r][0] = _mm512_loadu_ps(c + (size_t)r * ldc);
            if (NV > 1) acc[r][1] = _mm512_loadu_ps(c + (size_t)r * ldc + 16);
        }
    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(b + (size_t)k * ldb);
        __m512 b1 = NV > 1 ? _mm512_loadu_ps(b + (size_t)k * ldb + 16) : b0;
#pragma GCC unroll 12
        for (int r = 0; r < 12; r++) {
            __m512 av = _mm512_set1_ps(a[(size_t)r * lda + k]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            if (NV > 1) acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) {
        _mm512_storeu_ps(c + (size_t)r * ldc, acc[r][0]);
        if (NV > 1) _mm512_storeu_ps(c + (size_t)r * ldc + 16, acc[r][1]);
    }
}

__attribute__((target("avx512f"))) static void
wino_gemm_avx512(float *M, size_t mps, int mrs, const float *V, size_t vps, int vrs,
                 const float *U, int P, int rows, int Cip, int Cop) {
    for (int p = 0; p < P; p++) {
        const float *Vp = V + p * vps, *Up = U + (size_t)p * Cip * Cop;
        float *Mp = M + p * mps;
        int n0 = 0;
        for (; n0 + 32 <= Cop; n0 += 32)
            for (int r0 = 0; r0 < rows; r0 += 12)
                kernel_avx512(Mp + (size_t)r0 * mrs + n0, mrs, Vp + (size_t)r0 * vrs, vrs,
                              Up + n0, Cop, Cip, 2, 0);
        if (n0 < Cop)
            for (int r0 = 0; r0 < rows; r0 += 12)
                kernel_avx512(Mp + (size_t)r0 * mrs + n0, mrs, Vp + (size_t)r0 * vrs, vrs,
                              Up + n0, Cop, Cip, 1, 0);
    }
}

/* rows 6 x columns 16 */
__attribute__((target("avx2,fma"), always_inline)) static inline void
kernel_avx2(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int K, int beta) {
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
        acc[r][0] = beta ? _mm256_loadu_ps(c + (size_t)r * ldc) : _mm256_setzero_ps();
        acc[r][1] = beta ? _mm256_loadu_ps(c + (size_t)r * ldc + 8) : _mm256_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(b + (size_t)k * ldb), b1 = _mm256_loadu_ps(b + (size_t)k * ldb + 8);
#pragma GCC unroll 6
        for (int r = 0; r < 6; r++) {
            __m256 av = _mm256_set1_ps(a[(size_t)r * lda + k]);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
        _mm256_storeu_ps(c + (size_t)r * ldc, acc[r][0]);
        _mm256_storeu_ps(c + (size_t)r * ldc + 8, acc[r][1]);
    }
}

__attribute__((target("avx2,fma"))) static void
wino_gemm_avx2(float *M, size_t mps, int mrs, const float *V, size_t vps, int vrs,
               const float *U, int P, int rows, int Cip, int Cop) {
    for (int p = 0; p < P; p++) {
        const float *Vp = V + p * vps, *Up = U + (size_t)p * Cip * Cop;
        float *Mp = M + p * mps;
        for (int n0 = 0; n0 < Cop; n0 += 16)
            for (int r0 = 0; r0 < rows; r0 += 6)
                kernel_avx2(Mp + (size_t)r0 * mrs + n0, mrs, Vp + (size_t)r0 * vrs, vrs, Up + n0,
                            Cop, Cip, 0);
    }
}

/* One plain GEMM on the same kernels, for conv.c's im2col blocks: whole row blocks of 12
 * (AVX-512) or 6 (AVX2) here, the remaining rows through gemm_nn. */
__attribute__((target("avx512f"))) static int gemm_rows_avx512(float *c, int ldc, const float *a,
                                                              int lda, const float *b, int rows,
                                                              int N, int K, int beta) {
    int r0 = 0;
    for (; r0 + 12 <= rows; r0 += 12) {
        int n0 = 0;
        for (; n0 + 32 <= N; n0 += 32)
            kernel_avx512(c + (size_t)r0 * ldc + n0, ldc, a + (size_t)r0 * lda, lda, b + n0, N, K,
                          2, beta);
        if (n0 < N)
            kernel_avx512(c + (size_t)r0 * ldc + n0, ldc, a + (size_t)r0 * lda, lda, b + n0, N, K,
                          1, beta);
    }
    return r0;
}

__attribute__((target("avx2,fma"))) static int gemm_rows_avx2(float *c, int ldc, const float *a,
                                                              int lda, const float *b, int rows,
                                                              int N, int K, int beta) {
    int r0 = 0;
    for (; r0 + 6 <= rows; r0 += 6)
        for (int n0 = 0; n0 < N; n0 += 16)
            kernel_avx2(c + (size_t)r0 * ldc + n0, ldc, a + (size_t)r0 * lda, lda, b + n0, N, K,
                        beta);
    return r0;
}
#endif

int conv3x3_gemm_kernel(float *c, int ldc, const float *a, int lda, const float *b, int rows, int N,
                        int K, float beta) {
    if (N % 16 != 0) return 0;
    int done = -1;
#ifdef WINO_X86
    if (wino_isa_limit >= 2 && __builtin_cpu_supports("avx512f"))
        done = gemm_rows_avx512(c, ldc, a, lda, b, rows, N, K, beta != 0.0f);
    else if (wino_isa_limit >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        done = gemm_rows_avx2(c, ldc, a, lda, b, rows, N, K, beta != 0.0f);
#else
    (void)c, (void)ldc, (void)a, (void)lda, (void)b, (void)rows, (void)K, (void)beta;
#endif
    if (done < 0) return 0;
    if (done < rows)
        gemm_nn(c + (size_t)done * ldc, ldc, a + (size_t)done * lda, lda, b, N, rows - done, N, K,
                1.0f, beta);
    return 1;
}

/* Anything else: the library GEMM (OpenBLAS, or gemm_fallback.c), one call per position. */
static void wino_gemm_generic(float *M, size_t mps, int mrs, const float *V, size_t vps, int vrs,
                              const float *U, int P, int rows, int Cip, int Cop) {
    for (int p = 0; p < P; p++)
        gemm_nn(M + p * mps, mrs, V + p * vps, vrs, U + (size_t)p * Cip * Cop, Cop, rows, Cop, Cip,
                1.0f, 0.0f);
}

/* ---- the driver -------------------------------------------------------------------- */

typedef struct {
    float *out;
    const float *inp, *wu, *b, *res;
    int H, W, Ci, Co, Cip, Cop, m, n, P, ntx, relu;
    wino_gemm_fn gemm;
} wino_job;

/* A thread's slot: V (P, Tb, Cip), M (P, Tb, Cop), then a patch (n, n, Cip) and an output
 * tile (m, m, Cop) for the tiles on the image's edges. */
static size_t wino_tile_floats(int Ci, int Co, int m) {
    return (size_t)(m + 2) * (m + 2) * (round_up(Ci, 16) + round_up(Co, 16));
}

static size_t wino_edge_floats(int Ci, int Co, int m) {
    return (size_t)(m + 2) * (m + 2) * round_up(Ci, 16) + (size_t)m * m * round_up(Co, 16);
}

/* in_tile / out_tile with the channel count a constant where it is one of the common ones,
 * so that the P position offsets are immediates rather than P live pointers. V and M are
 * tile-major: a tile's P positions are consecutive rows of Cip (Cop) floats. */
#define WINO_SPECIALISE(C, call) \
    switch (C) {                 \
    case 16: { enum { CC = 16 }; call; } break; \
    case 32: { enum { CC = 32 }; call; } break; \
    case 64: { enum { CC = 64 }; call; } break; \
    default: { const int CC = C; call; } break; \
    }

AI void in_tile_c(float *Vt, const float *src, size_t rs, int Cip, int m, int direct) {
    if (m == 4)
        WINO_SPECIALISE(Cip, in_tile(Vt, CC, src, direct ? rs : (size_t)6 * CC, CC, CC, 4))
    else
        WINO_SPECIALISE(Cip, in_tile(Vt, CC, src, direct ? rs : (size_t)4 * CC, CC, CC, 2))
}

AI void out_tile_c(float *dst, const float *res, size_t rs, const float *Mt, const float *b,
                   int Cop, int m, int relu) {
    if (m == 4)
        WINO_SPECIALISE(Cop, out_tile(dst, res, rs, CC, Mt, CC, b, CC, 4, relu))
    else
        WINO_SPECIALISE(Cop, out_tile(dst, res, rs, CC, Mt, CC, b, CC, 2, relu))
}

/* Tiles t0 .. t0+nt-1 (nt <= Tb) through the three steps. Tiles whose patch leaves the image
 * (or any tile, when Ci is not a multiple of 16) are first copied into a zero-padded patch;
 * tiles that stick out of the image (or any, when Co is not a multiple of 16) are written to
 * an m x m buffer and the part inside the image copied out with the epilogue. */
AI void wino_block_body(const wino_job *j, float *slot, int Tb, long t0, int nt) {
    const int m = j->m, n = j->n, P = j->P, W = j->W, H = j->H, Ci = j->Ci, Co = j->Co;
    const int Cip = j->Cip, Cop = j->Cop;
    /* Tile-major: tile t's position p at V + t*P*Cip + p*Cip (M likewise). Position-major
     * (each V_p contiguous) measured the same in the lab before the transforms were
     * specialised; tile-major lets them use immediate offsets. */
    int vrs = P * Cip, mrs = P * Cop; /* tile (row) strides; the position strides are Cip, Cop */
    float *V = slot, *M = V + (size_t)Tb * vrs, *patch = M + (size_t)Tb * mrs;
    float *ytile = patch + (size_t)n * n * Cip;
    int rows = round_up(nt, WINO_ROWS);
    for (int t = 0; t < nt; t++) {
        long tile = t0 + t;
        int y0 = (int)(tile / j->ntx) * m - 1, x0 = (int)(tile % j->ntx) * m - 1;
        float *Vt = V + (size_t)t * vrs;
        if (Ci == Cip && y0 >= 0 && x0 >= 0 && y0 + n <= H && x0 + n <= W) {
            in_tile_c(Vt, j->inp + ((size_t)y0 * W + x0) * Ci, (size_t)W * Ci, Cip, m, 1);
            continue;
        }
        for (int i = 0; i < n; i++)
            for (int k = 0; k < n; k++) {
                int iy = y0 + i, ix = x0 + k;
                float *px = patch + (size_t)(i * n + k) * Cip;
                int in = iy >= 0 && iy < H && ix >= 0 && ix < W;
                if (in) memcpy(px, j->inp + ((size_t)iy * W + ix) * Ci, (size_t)Ci * sizeof(float));
                /* padding channels zero too: U's are, but 0 * NaN is not 0 */
                memset(px + (in ? Ci : 0), 0, (size_t)(in ? Cip - Ci : Cip) * sizeof(float));
            }
        in_tile_c(Vt, patch, 0, Cip, m, 0);
    }
    /* the last block's padding rows: zeros, not whatever the scratch held */
    if (rows > nt) memset(V + (size_t)nt * vrs, 0, (size_t)(rows - nt) * vrs * sizeof(float));
    j->gemm(M, Cop, mrs, V, Cip, vrs, j->wu, P, rows, Cip, Cop);
    for (int t = 0; t < nt; t++) {
        long tile = t0 + t;
        int y0 = (int)(tile / j->ntx) * m, x0 = (int)(tile % j->ntx) * m;
        const float *Mt = M + (size_t)t * mrs;
        size_t at = ((size_t)y0 * W + x0) * Co;
        if (Co == Cop && y0 + m <= H && x0 + m <= W) {
            out_tile_c(j->out + at, j->res ? j->res + at : NULL, (size_t)W * Co, Mt, j->b, Cop, m,
                       j->relu);
            continue;
        }
        out_tile_c(ytile, NULL, (size_t)m * Cop, Mt, NULL, Cop, m, 0);
        for (int i = 0; i < m && y0 + i < H; i++)
            for (int k = 0; k < m && x0 + k < W; k++) {
                const float *y = ytile + (size_t)(i * m + k) * Cop;
                size_t o = ((size_t)(y0 + i) * W + x0 + k) * Co;
                for (int c = 0; c < Co; c++) { /* the order of emit(): (y + b) + res */
                    float v = y[c] + (j->b ? j->b[c] : 0.0f);
                    if (j->res) v += j->res[o + c];
                    j->out[o + c] = j->relu && !(v > 0.0f) ? 0.0f : v;
                }
            }
    }
}

#ifdef WINO_X86
__attribute__((target("avx512f"))) static void wino_block_avx512(const wino_job *j, float *slot,
                                                                 int Tb, long t0, int nt) {
    wino_block_body(j, slot, Tb, t0, nt);
}
#endif

static void wino_block_generic(const wino_job *j, float *slot, int Tb, long t0, int nt) {
    wino_block_body(j, slot, Tb, t0, nt);
}

size_t conv3x3_wino_scratch_floats(int H, int W, int Ci, int Co, int m) {
    long ntiles = (long)((H + m - 1) / m) * ((W + m - 1) / m);
    size_t per = wino_tile_floats(Ci, Co, m), edge = wino_edge_floats(Ci, Co, m);
    size_t full = (size_t)((ntiles + WINO_ROWS - 1) / WINO_ROWS * WINO_ROWS) * per + edge;
    size_t one = WINO_ROWS * per + edge; /* one slot of the smallest block */
    size_t cap = WINO_SCRATCH_FLOATS > one ? WINO_SCRATCH_FLOATS : one;
    if (full < one) full = one;
    return full < cap ? full : cap;
}

void conv3x3_wino_forward(float *out, const float *inp, const float *wu, const float *b,
                          const float *residual, int act, float *scratch, int H, int W, int Ci,
                          int Co, int m) {
    if (H <= 0 || W <= 0 || Co <= 0) return;
    wino_job j = {out, inp, wu, b, residual, H, W, Ci, Co, round_up(Ci, 16), round_up(Co, 16), m,
                  m + 2, (m + 2) * (m + 2), (W + m - 1) / m, act == MG_ACT_RELU, wino_gemm_generic};
    void (*block)(const wino_job *, float *, int, long, int) = wino_block_generic;
#ifdef WINO_X86
    if (wino_isa_limit >= 2 && __builtin_cpu_supports("avx512f")) {
        j.gemm = wino_gemm_avx512;
        block = wino_block_avx512;
    } else if (wino_isa_limit >= 1 && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma")) {
        j.gemm = wino_gemm_avx2;
    }
#endif
    long ntiles = (long)((H + m - 1) / m) * j.ntx;
    size_t per = wino_tile_floats(Ci, Co, m), edge = wino_edge_floats(Ci, Co, m);
    /* As in conv.c: the scratch was sized without knowing the thread count, so the block
     * shrinks (and past that, the number of threads) until one slot per thread fits. */
    size_t S = conv3x3_wino_scratch_floats(H, W, Ci, Co, m);
    int nslots = 1;
#ifdef MG_HAVE_OPENMP
    nslots = omp_get_max_threads();
#endif
    while (nslots > 1 && S / nslots < WINO_ROWS * per + edge) nslots--;
    long cap = (long)((S / nslots - edge) / per) / WINO_ROWS * WINO_ROWS; /* >= WINO_ROWS */
    long Tb = (long)(MG_WINO_BLOCK_FLOATS / per);
    long spread = (ntiles + (long)nslots * WINO_BLOCKS_PER_THREAD - 1) /
                  ((long)nslots * WINO_BLOCKS_PER_THREAD);
    if (Tb > spread) Tb = spread;
    Tb = (Tb + WINO_ROWS - 1) / WINO_ROWS * WINO_ROWS;
    if (Tb > cap) Tb = cap;
    if (Tb < WINO_ROWS) Tb = WINO_ROWS;
    long nblocks = (ntiles + Tb - 1) / Tb;
    size_t slot_floats = (size_t)Tb * per + edge;
    double work = 9.0 * H * W * Ci * Co;
    (void)work; /* unused without OpenMP */
    MG_OMP(omp parallel num_threads(nslots) if (nblocks > 1 && work > 1e6))
    {
        int tid = 0;
#ifdef MG_HAVE_OPENMP
        tid = omp_get_thread_num();
#endif
        float *slot = scratch + (size_t)tid * slot_floats;
        MG_OMP(omp for schedule(dynamic, 1))
        for (long blk = 0; blk < nblocks; blk++) {
            long t0 = blk * Tb;
            block(&j, slot, (int)Tb, t0, (int)(ntiles - t0 < Tb ? ntiles - t0 : Tb));
        }
    }
}
