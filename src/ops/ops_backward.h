/* The backward ops: one declaration per op, fp32, the CPU reference (src/ops/cpu/..._backward.c).
 * Each is the reverse of the forward op of the same name in ops.h, same layouts (HWC feature
 * maps, (N, C) token rows, PyTorch weight layouts), outputs first, sizes last.
 *
 * The rule for every gradient an op writes, parameter or activation alike: it ADDS (+=), as
 * llm.c's backward does. Parameter gradients accumulate over a batch; activation gradients
 * that several paths feed (the residual stream, keys seen by several frames) just sum. The
 * caller zeroes gradient buffers before a backward pass. A gradient pointer may be NULL where
 * it says so; then that gradient is not computed. Gradient outputs never alias inputs.
 * The one exception is rope_backward, which works in place like rope_forward.
 *
 * Sums over rows (bias and modulation gradients) run in a fixed order on one thread, so a
 * backward pass gives the same bits on every run with the same thread count: resuming a
 * training run must reproduce its losses exactly. */
#ifndef MG_OPS_BACKWARD_H
#define MG_OPS_BACKWARD_H

#include <stddef.h>

/* out (M, N) = alpha * A^T @ B + beta * out, where A is (K, M) and B is (K, N), row-major
 * with row strides lda, ldb, ldc: the weight-gradient product (dW = dout^T @ inp). */
void gemm_tn(float *out, int ldc, const float *a, int lda, const float *b, int ldb,
             int M, int N, int K, float alpha, float beta);

/* linear_forward's reverse. dout (N, OC), inp (N, IC), w (OC, IC).
 * dinp (N, IC) += dout @ w;  dw (OC, IC) += dout^T @ inp;  db (OC) += sum over rows of dout.
 * dinp and db may be NULL (an input that is data; a layer without bias). */
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int N, int IC, int OC);

/* conv3x3_forward's reverse (pad 1, stride 1 or 2, HWC) by GEMMs over blocks of im2col rows.
 * dout (Ho, Wo, Co), inp (H, W, Ci), w (Co, Ci, 3, 3) PyTorch layout (not packed).
 * dinp (H, W, Ci) += conv^T(dout);  dw (Co, Ci, 3, 3) += dout^T (x) patches;
 * db (Co) += sum over pixels of dout. dinp and db may be NULL.
 * scratch: conv3x3_backward_scratch_floats(H, W, Ci, Co, stride). */
size_t conv3x3_backward_scratch_floats(int H, int W, int Ci, int Co, int stride);
void conv3x3_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                      const float *w, float *scratch, int H, int W, int Ci, int Co, int stride);

/* out = relu(inp): dinp += dout * (out > 0). Takes the forward's output, which is all the
 * autoencoder keeps (relu(x) > 0 exactly where x > 0). */
void relu_backward(float *dinp, const float *dout, const float *out, size_t n);
/* out = leaky_relu(inp, slope), slope > 0: dinp += dout * (out > 0 ? 1 : slope). Takes the
 * forward's output (with a positive slope its sign is the input's), so the map is kept once. */
void leaky_relu_backward(float *dinp, const float *dout, const float *out, float slope, size_t n);
/* out = relu(a + b): da += dout * (out > 0), db += the same. db may be NULL. */
void add_relu_backward(float *da, float *db, const float *dout, const float *out, size_t n);
/* upsample2x_forward's reverse: dinp (H, W, C) += the sum of each 2x2 block of dout (2H, 2W, C). */
void upsample2x_backward(float *dinp, const float *dout, int H, int W, int C);

/* layernorm_modulate_forward's reverse (LN without affine, eps 1e-5, then y*(1+scale)+shift).
 * dout, inp (N, C); scale (C). The row statistics are recomputed from inp in float64, as the
 * forward computes them. dinp (N, C) += ...; dshift (C) += sum_n dout; dscale (C) +=
 * sum_n dout * LN(inp). dinp may be NULL. */
void layernorm_modulate_backward(float *dinp, float *dshift, float *dscale, const float *dout,
                                 const float *inp, const float *scale, int N, int C);

/* dinp += dout * silu'(inp) */
void silu_backward(float *dinp, const float *dout, const float *inp, size_t n);
/* dinp += dout * gelu_tanh'(inp) */
void gelu_tanh_backward(float *dinp, const float *dout, const float *inp, size_t n);
/* gated_residual_forward (x += gate * y) reverse. dx (N, C) is the gradient of the residual
 * stream after the add; it passes through to x unchanged, so the op only adds:
 * dy (N, C) += gate * dx;  dgate (C) += sum_n dx * y. */
void gated_residual_backward(float *dy, float *dgate, const float *dx, const float *y,
                             const float *gate, int N, int C);

/* rope_forward's reverse, IN PLACE: the rotation is orthogonal, so the gradient of the input
 * is the gradient of the output turned back by the same angle. Same tables and strides as
 * rope_forward. */
void rope_backward(float *dx, int ld, const float *cos_t, const float *sin_t, int N, int n_heads,
                   int dh);

/* attention_forward's reverse. q (Nq rows, stride ldq), k and v (Nk rows, stride ldkv), dout
 * (Nq, n_heads*dh) contiguous. dq (stride lddq) += ..., dk, dv (stride lddkv) += ... The
 * probabilities are recomputed per head (softmax in float64 sums) and materialised in
 * scratch: attention_backward_scratch_floats(Nq, Nk, n_heads). Heads run in parallel;
 * each writes only its own columns. */
size_t attention_backward_scratch_floats(int Nq, int Nk, int n_heads);
void attention_backward(float *dq, int lddq, float *dk, float *dv, int lddkv, const float *dout,
                        const float *q, int ldq, const float *k, const float *v, int ldkv,
                        float *scratch, int Nq, int Nk, int n_heads, int dh);

/* patchify_forward's reverse: dz, dcond (H, W, Z) += the token gradients (H/p * W/p, 2*Z*p*p)
 * put back where they came from. Either may be NULL. */
void patchify_backward(float *dz, float *dcond, const float *dtokens, int H, int W, int Z, int p);
/* unpatchify_forward's reverse: dtokens (H/p * W/p, Z*p*p) += the latent gradient dz (H, W, Z)
 * gathered into token order. */
void unpatchify_backward(float *dtokens, const float *dz, int H, int W, int Z, int p);

/* timestep_embedding has no backward: sigma is data, never a parameter. The conditioning
 * path above it (t1, silu, t2, + prompt row) is linear_backward and silu_backward. */

#endif
