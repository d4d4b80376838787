/* The ops: one declaration per op, fp32, the CPU reference implementation (src/ops/cpu/).
 * Outputs first, sizes last. Feature maps are HWC (channels last); token rows are (N, C).
 * No op allocates memory: callers pass scratch sized by the *_scratch_floats() helpers.
 * Ops are multi-threaded inside (OpenMP, OpenBLAS); callers do not wrap them in threads. */
#ifndef MG_OPS_H
#define MG_OPS_H

#include <stddef.h>

/* out (M, N) = alpha * A (M, K) @ B^T (N, K) + beta * out. Row-major; lda/ldb/ldc are row
 * strides. With OpenBLAS this is cblas_sgemm; otherwise a blocked C loop. */
void gemm_nt(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
             int M, int N, int K, float alpha, float beta);
/* out (M, N) = alpha * A (M, K) @ B (K, N) + beta * out. */
void gemm_nn(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
             int M, int N, int K, float alpha, float beta);

/* out (N, OC) = inp (N, IC) @ w^T + b; w (OC, IC) PyTorch layout; b (OC) or NULL. */
void linear_forward(float *out, const float *inp, const float *w, const float *b,
                    int N, int IC, int OC);

/* 3x3 convolution, pad 1, stride 1 or 2, HWC. The weight is first packed once (at model
 * load) from PyTorch's (Co, Ci, 3, 3) into the layout conv3x3_forward wants. */
size_t conv3x3_packed_floats(int Ci, int Co);
void conv3x3_pack(float *wp, const float *w, int Ci, int Co);
size_t conv3x3_scratch_floats(int H, int W, int Ci, int Co, int stride);
/* out (Ho, Wo, Co), Ho = (H+1)/stride for stride 2 (H even: H/2); inp (H, W, Ci);
 * b (Co) or NULL. */
void conv3x3_forward(float *out, const float *inp, const float *wp, const float *b,
                     float *scratch, int H, int W, int Ci, int Co, int stride);
/* conv3x3_forward with the epilogue fused: out = act(conv(inp) + b + residual).
 * residual (Ho, Wo, Co) or NULL; it may be out itself (in place), never inp. act is one of
 * enum mg_act; relu is x > 0 ? x : 0 like relu_forward. Same pack and scratch as
 * conv3x3_forward, which is this with residual NULL and MG_ACT_NONE. */
enum mg_act { MG_ACT_NONE = 0, MG_ACT_RELU = 1 };
void conv3x3_forward_ex(float *out, const float *inp, const float *wp, const float *b,
                        const float *residual, int act, float *scratch, int H, int W, int Ci,
                        int Co, int stride);

void relu_forward(float *out, const float *inp, size_t n);              /* out may be inp */
void add_relu_forward(float *out, const float *a, const float *b, size_t n); /* relu(a+b) */
/* out = x > 0 ? x : slope * x (the discriminator's LeakyReLU, slope 0.2); out may be inp */
void leaky_relu_forward(float *out, const float *inp, float slope, size_t n);
/* Nearest-neighbour 2x upsample: out (2H, 2W, C) from inp (H, W, C). */
void upsample2x_forward(float *out, const float *inp, int H, int W, int C);

/* Per row: LayerNorm without affine (eps 1e-5), then out = y*(1+scale) + shift.
 * inp, out (N, C); shift, scale (C), shared by all rows. */
void layernorm_modulate_forward(float *out, const float *inp, const float *shift,
                                const float *scale, int N, int C);
void silu_forward(float *out, const float *inp, size_t n);
void gelu_tanh_forward(float *out, const float *inp, size_t n);
/* x (N, C) += gate (C) * y (N, C) */
void gated_residual_forward(float *x, const float *y, const float *gate, int N, int C);
/* x += y, n elements */
void add_inplace(float *x, const float *y, size_t n);

/* Sinusoidal embedding of sigma: out (256) = [cos(a), sin(a)], a_j = sigma*1000*exp(-ln(1e4)*j/128). */
void timestep_embedding(float *out, float sigma);

/* RoPE tables for one frame of Ty x Tx tokens at frame index f: cos, sin (N, dh/2), pairs split
 * time / row / column as in docs/ARCHITECTURE.md. Angles in float64, reduced mod 2*pi. */
void rope_tables(float *cos_t, float *sin_t, long long frame, int Ty, int Tx, int dh, double theta);
/* Rotates, in place, the first n_heads*dh columns of each of N rows (row stride ld). */
void rope_forward(float *x, int ld, const float *cos_t, const float *sin_t, int N, int n_heads, int dh);

/* Multi-head attention, softmax(q k^T / sqrt(dh)) v, all keys visible.
 * q (Nq rows, stride ldq), k and v (Nk rows, stride ldkv), out (Nq, n_heads*dh) contiguous.
 * Head j uses columns j*dh .. j*dh+dh-1. scratch: attention_scratch_floats(Nq, Nk). */
size_t attention_scratch_floats(int Nq, int Nk);
void attention_forward(float *out, const float *q, int ldq, const float *k, const float *v,
                       int ldkv, float *scratch, int Nq, int Nk, int n_heads, int dh);

/* Latent (H, W, Z) pair -> tokens (H/p * W/p, 2*Z*p*p): feature ch*p*p + py*p + px, ch < Z
 * from z, ch >= Z from cond. */
void patchify_forward(float *tokens, const float *z, const float *cond, int H, int W, int Z, int p);
/* tokens (H/p * W/p, Z*p*p) -> latent (H, W, Z), same feature order. */
void unpatchify_forward(float *z, const float *tokens, int H, int W, int Z, int p);

/* u8 RGB (H, W, 3) -> float in [0,1]; float -> u8 with clamp and round. */
void rgb_u8_to_float(float *out, const unsigned char *inp, size_t n);
void rgb_float_to_u8(unsigned char *out, const float *inp, size_t n);

#endif
