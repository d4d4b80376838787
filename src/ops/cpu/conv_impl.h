/* The two implementations behind conv3x3_forward (ops.h), for conv.c, the tests and the lab
 * (dev/cpu/bench_conv.c), which call each directly:
 *   blocked im2col + GEMM (conv.c): any stride, any channel count;
 *   Winograd F(m x m, 3x3), m = 2 or 4 (conv_winograd.c): stride 1 only.
 * Both take the fused epilogue of conv3x3_forward_ex: out = act(conv + b + residual), with
 * residual NULL or (Ho, Wo, Co) and allowed to be out itself (not inp), act an enum mg_act. */
#ifndef MG_OPS_CPU_CONV_IMPL_H
#define MG_OPS_CPU_CONV_IMPL_H

#include <stddef.h>

/* wp: the im2col pack, (9*Ci, Co), the first 9*Ci*Co floats of conv3x3_pack's output. */
size_t conv3x3_im2col_scratch_floats(int H, int W, int Ci, int stride);
void conv3x3_im2col_forward(float *out, const float *inp, const float *wp, const float *b,
                            const float *residual, int act, float *scratch, int H, int W, int Ci,
                            int Co, int stride);

/* Transformed weight: (m+2)^2 positions, each a (Cip, Cop) matrix, Cip = Ci rounded up to 16
 * and Cop = Co rounded up to 16, zero-padded. */
size_t conv3x3_wino_packed_floats(int Ci, int Co, int m);
/* w (Co, Ci, 3, 3) PyTorch layout -> wu; U = G g G^T computed in double. */
void conv3x3_wino_pack(float *wu, const float *w, int Ci, int Co, int m);
/* Bounded: a few tile blocks per thread, not the whole image's transforms. */
size_t conv3x3_wino_scratch_floats(int H, int W, int Ci, int Co, int m);
/* out (H, W, Co), inp (H, W, Ci), b (Co) or NULL; stride 1, pad 1. */
void conv3x3_wino_forward(float *out, const float *inp, const float *wu, const float *b,
                          const float *residual, int act, float *scratch, int H, int W, int Ci,
                          int Co, int m);
/* c (rows, N) = a (rows, K; lda) @ b (K, N; row stride N) + beta*c (beta 0 or 1) on
 * conv_winograd.c's register-blocked kernels (AVX-512 or AVX2+FMA; rows past the last whole
 * block of 12 or 6 through gemm_nn), for N a multiple of 16. Returns 0 and does nothing where
 * there is no kernel for the CPU or for N: the caller then uses gemm_nn. */
int conv3x3_gemm_kernel(float *c, int ldc, const float *a, int lda, const float *b, int rows, int N,
                        int K, float beta);

/* For the tests and the lab: the widest code path conv3x3_wino_forward and
 * conv3x3_gemm_kernel may take, still only
 * where the CPU has it: 0 portable C with gemm_nn, 1 AVX2+FMA, 2 AVX-512 (the default).
 * Returns the previous limit. Not for use while convolutions run on other threads. */
int conv3x3_wino_limit_isa(int level);

#endif
