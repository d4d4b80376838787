/* The CUDA ops: one launcher per op, C-callable, bf16 storage with fp32 accumulation.
 *
 * Each op has a CPU twin in src/ops/ops.h with the same meaning (tests/gpu/test_cuda.c holds
 * them to it); some are fused forms of two CPU ops (named in the comment). Pointers are device
 * pointers; every launcher enqueues on `st`, checks the launch, and returns an mg_status
 * (MG_ERR_DEVICE with file and line on a CUDA or cuBLAS failure). Nothing here allocates per
 * call: scratch comes from the caller, sized by the *_floats() helpers. Layouts as on the CPU:
 * feature maps HWC, token rows (N, C), Linear weights (out, in), conv weights (Co, 9*Ci) with
 * k = (ky*3 + kx)*Ci + ci (the transpose of conv3x3_pack's layout). */
#ifndef MG_CUDA_OPS_H
#define MG_CUDA_OPS_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "mirage.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t bf16_t; /* bfloat16 bits (device code reads it as __nv_bfloat16) */

/* Host-side conversions (round to nearest even; NaN stays NaN). */
bf16_t cu_f2bf(float x);
float cu_bf2f(bf16_t x);

/* Everything a kernel launch needs besides its arguments: the cuBLASLt handle, its workspace
 * and the card's properties. One per stream (or per test). */
typedef struct cu_ctx cu_ctx;
/* MG_ERR_UNSUPPORTED "no CUDA device found" when there is none (no driver, no card). */
mg_status cu_ctx_new(cu_ctx **out);
void cu_ctx_free(cu_ctx *c);
const char *cu_ctx_device_name(const cu_ctx *c);
int cu_ctx_sm_count(const cu_ctx *c);
/* Where a failure message is formatted: "file:line: call: cuda error string". */
mg_status cu_fail(const char *file, int line, const char *what, const char *err);
/* Programmatic dependent launch for this thread's launches (cuda_common.h): on/off, and
 * "the next launch follows a memcpy or an event" (no programmatic edge to it). Off unless
 * enabled; the frame step enables it. */
void cu_pdl_enable(int on);
void cu_pdl_fence(void);
/* An optimisation switch from the environment: MG_CUDA_<name>=0 or =1 overrides the default
 * (dflt), for A/B runs and as a fallback. The defaults are what measured fastest
 * (dev/cuda/README.md): FUSED 0, PDL 0, SPLITK 1 (with FUSED), CONVSPLIT 0, CONVHALO 1, LN2 1,
 * FP8 0 (the DiT's four linears on e4m3 GEMMs, cuda_stream.cu), ROPEATT 0 (RoPE and the ring
 * write folded into attention, cu_attention_rope). MG_CUDA_LN and MG_CUDA_ATTN take a version. */
int cu_opt(const char *name, int dflt);

/* ---- GEMM (cuBLASLt): out (M, N) = A (M, K) @ W (N, K)^T [+ bias] [then GELU-tanh] ------- */
typedef enum cu_epi { CU_EPI_NONE = 0, CU_EPI_BIAS, CU_EPI_GELU_BIAS } cu_epi;
typedef struct cu_gemm cu_gemm;
/* Plans once (heuristic query, outside any graph capture). out_f32: out and bias are float,
 * else bf16. Where cuBLASLt has no algorithm for the fused epilogue, the plan falls back to a
 * plain GEMM followed by our bias/GELU kernel (cu_gemm_fused() says which). */
mg_status cu_gemm_plan(cu_ctx *c, cu_gemm **out, int M, int N, int K, int out_f32, cu_epi epi);
mg_status cu_gemm_run(cu_ctx *c, const cu_gemm *g, void *out, const bf16_t *a, const bf16_t *w,
                      const void *bias, cudaStream_t st);
int cu_gemm_fused(const cu_gemm *g);
void cu_gemm_free(cu_gemm *g);

/* ---- FP8 e4m3 GEMMs (gemm.cu) and quantisation (fp8.cu): MG_CUDA_FP8=1 -------------------- */
typedef uint8_t fp8_t; /* e4m3 bits */
/* How the operands are scaled: one float per tensor (A and W each), or cuBLASLt's outer
 * vectors: one float per row of A (token) and one per row of W (output channel). */
typedef enum cu_fp8_scale { CU_FP8_TENSOR = 0, CU_FP8_ROWS = 1 } cu_fp8_scale;
/* out (M, N) = (sa . A8 (M, K)) @ (sw . W8 (N, K))^T [+ bias] [then GELU-tanh], fp32
 * accumulation; fast_accum sets CUBLASLT_MATMUL_DESC_FAST_ACCUM (no periodic promotion of the
 * tensor cores' partial sums); amax_out (device float or NULL): every run stores max |out| there
 * (CUBLASLT_MATMUL_DESC_AMAX_D_POINTER). Planned like cu_gemm_plan; MG_ERR_UNSUPPORTED when
 * cuBLASLt has no algorithm for it on this card (CUDA 13.0 on an H100: none for CU_FP8_ROWS).
 * Where cuBLASLt wants a bf16 bias for an fp32 output (it does on sm_90), cu_gemm_bias_bf16()
 * says so and run takes a bf16 bias. K % 16 == 0, N % 16 == 0. */
mg_status cu_gemm_plan_fp8(cu_ctx *c, cu_gemm **out, int M, int N, int K, int out_f32, cu_epi epi,
                           cu_fp8_scale scale, int fast_accum, float *amax_out);
/* a_scale, w_scale: device floats (1 or M, and 1 or N), read when the GEMM runs. */
mg_status cu_gemm_run_fp8(cu_ctx *c, const cu_gemm *g, void *out, const fp8_t *a, const float *a_scale,
                          const fp8_t *w, const float *w_scale, const void *bias, cudaStream_t st);
int cu_gemm_bias_bf16(const cu_gemm *g);
/* Quantise bf16 to e4m3 with scales computed on the device (scale = amax / 448, 1 for zeros):
 * per row (scale (M), one kernel; cu_quant_fp8_ok(K)) or per tensor (scale (1), two kernels,
 * scratch of cu_quant_fp8_scratch_floats(); one kernel where max |x| is known on the device,
 * e.g. from a GEMM's amax_out). n and K multiples of 16. */
int cu_quant_fp8_ok(int K);
mg_status cu_quant_fp8_rows(fp8_t *q, float *scale, const bf16_t *x, int M, int K, cudaStream_t st);
size_t cu_quant_fp8_scratch_floats(void);
mg_status cu_quant_fp8_tensor(fp8_t *q, float *scale, const bf16_t *x, size_t n, float *scratch,
                              cudaStream_t st);
mg_status cu_quant_fp8_tensor_amax(fp8_t *q, float *scale, const bf16_t *x, size_t n, const float *amax,
                                   cudaStream_t st);
/* The per-tensor e4m3 scales of a DiT pass's modulated layernorms, from the modulation alone:
 * out[(2l + j) * CU_FP8_SCALE_STRIDE] (j = 0: norm1, 1: norm2 of block l; each scale on its own
 * 256 bytes: cuBLASLt refused scale pointers 4 bytes apart, "not supported", on an H100)
 * = (sqrt(C - 1) max|1 + scale| + max|shift|)
 * / 448, with shift, scale = mod + l*6C + 3jC, + C (the layout of cuda_stream.cu's mod rows).
 * |LN(x)| <= sqrt(C - 1) for any row, so nothing saturates; the bound is loose by ~10x for
 * unit-variance rows, which only moves values below ~1/3000 of it into e4m3's subnormals. */
#define CU_FP8_SCALE_STRIDE 64
mg_status cu_dit_ln_fp8_scales(float *out, const float *mod, int L, int C, cudaStream_t st);
/* Host conversions (e4m3, saturating). */
float cu_fp82f(fp8_t v);
fp8_t cu_f2fp8(float x);

/* Conditioning rows: out (R, N) = x (R, K) fp32 @ w (N, K)^T bf16 + b (N), fp32 throughout
 * but the weights (a matrix-vector kernel; the adaLN modulation of every layer at once). */
mg_status cu_linear_rows(float *out, const float *x, const bf16_t *w, const float *b, int R, int K,
                         int N, cudaStream_t st);

/* ---- 3x3 convolution, pad 1 (conv3x3_forward) ---------------------------------------------- */
typedef enum cu_dtype { CU_U8 = 0, CU_F32, CU_BF16 } cu_dtype;
/* Implicit GEMM on tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate), for Ci % 32 == 0 and
 * Co % 8 == 0. The input is (H, W, Ci); with up = 1 it is (H/2, W/2, Ci) read as its nearest 2x
 * upsample (upsample2x_forward fused). out (Ho, Wo, Co) = act(conv + bias + res): bias (Co)
 * float or NULL, res (Ho, Wo, Co) or NULL (may be out itself), relu 0/1. */
int cu_conv3x3_igemm_ok(int Ci, int Co);
mg_status cu_conv3x3_igemm(bf16_t *out, const bf16_t *in, const bf16_t *wt, const float *bias,
                           const bf16_t *res, int H, int W, int Ci, int Co, int stride, int up,
                           int relu, cudaStream_t st);
/* Direct convolution in fp32 for the thin layers (3 or 4 channels in or out): any input type
 * (u8 reads as x/255, the encoder's rgb_u8_to_float fused), any output type (u8 clamps and
 * rounds, rgb_float_to_u8 fused). */
mg_status cu_conv3x3_direct(void *out, cu_dtype ot, const void *in, cu_dtype it, const bf16_t *wt,
                            const float *bias, int H, int W, int Ci, int Co, int stride, int up,
                            int relu, cudaStream_t st);

/* The lab's handles on the kernel versions (dev/cuda/conv3x3.cu). igemm version 1: 128-pixel
 * tiles, double buffer; version 2: 32-pixel tiles with 4 stages below 32768 output pixels,
 * 128-pixel tiles with 3 stages above; version 3: version 2 with ldmatrix fragment loads;
 * version 4 (the library's with MG_CUDA_CONVSPLIT=1 MG_CUDA_CONVHALO=0): version 3 with the K split over a
 * thread-block cluster of up to 6 below 32768 output pixels; version 5 (the library's with
 * default; MG_CUDA_CONVHALO=0 turns it off): halo tiles for stride 1, Ci 32 or 64, >= 16384 output pixels (weights
 * resident per block, each tile's input halo loaded once), version 3 elsewhere; version 6: the
 * halo tiles at every size (lab and tests). direct version 1: the generic kernel
 * only; version 2 (the library's): thin-layer kernels where they apply. */
mg_status cu_conv3x3_igemm_v(int version, bf16_t *out, const bf16_t *in, const bf16_t *wt, const float *bias,
                             const bf16_t *res, int H, int W, int Ci, int Co, int stride, int up, int relu,
                             cudaStream_t st);
mg_status cu_conv3x3_direct_v(int version, void *out, cu_dtype ot, const void *in, cu_dtype it, const bf16_t *wt,
                              const float *bias, int H, int W, int Ci, int Co, int stride, int up, int relu,
                              cudaStream_t st);

/* ---- a whole level of the autoencoder in one launch (conv_level.cu) ---------------------
 * n Blocks in a row at one size, x = relu(c3(relu(c2(relu(c1 x)))) + x) each, in place on x
 * (H, W, C): one thread-block cluster (up to 16 blocks) holds the feature map in its shared
 * memory and passes each band's edge rows to its neighbours through distributed shared memory.
 * w[3n]: the convs' weights in the igemm layout (C, 9*C), b[3n]: biases (C) (b or an entry
 * may be NULL). Same arithmetic as three cu_conv3x3_igemm launches per Block (fp32 accumulate,
 * bf16 between convs, the residual before the ReLU), even the same order of the products (k
 * tap-major, 16 per mma): on an H100 it equals the implicit GEMM bit for bit.
 * cu_tae_level_ok: whether it applies here (C 32 or 64, H*W*C <= 64*64*64, a card with
 * clusters whose shared memory holds the level); it sets the kernel's attributes once per
 * device (the frame step's first call is inside its graph capture, where that works). */
#define CU_LEVEL_MAXBLOCKS 3
int cu_tae_level_ok(int H, int W, int C);
/* What the frame step runs: MG_CUDA_LEVEL=0 never, =2 wherever cu_tae_level_ok, =1 (the
 * default) only where it measured faster than the per-conv path (conv_level.cu says where). */
int cu_tae_level_use(int H, int W, int C);
mg_status cu_tae_level(bf16_t *x, const bf16_t *const *w, const float *const *b, int nblocks, int H, int W, int C,
                       cudaStream_t st);
/* The lab's and the tests' handles: version 1 one weight tap per block barrier; 2 a row of
 * three taps per barrier; 3 = 2 with 16 warps; 4 = 3 with two m-tiles a warp (conv_level.cu).
 * cu_tae_level runs
 * MG_CUDA_LEVELV=<version>, else CU_LEVEL_DEFAULT. cu_tae_level_cluster: the cluster size a
 * version (0: the library's) launches at that size, 0 if it does not apply. */
#define CU_LEVEL_VERSIONS 4
#define CU_LEVEL_DEFAULT 2
int cu_tae_level_cluster(int version, int H, int W, int C);
long cu_tae_level_launches(void); /* level kernels launched (or captured) by this process */
mg_status cu_tae_level_v(int version, bf16_t *x, const bf16_t *const *w, const float *const *b, int nblocks, int H,
                         int W, int C, cudaStream_t st);

/* ---- norms, activations, residuals ----------------------------------------------------- */
/* out = LN(x)*(1+scale) + shift per row (layernorm_modulate_forward); x fp32, out bf16. */
mg_status cu_layernorm_modulate(bf16_t *out, const float *x, const float *shift, const float *scale,
                                int N, int C, cudaStream_t st);
/* x += gate * y (gated_residual_forward), then, if out != NULL, out = LN(x)*(1+scale)+shift. */
mg_status cu_gated_residual_ln(float *x, const float *y, const float *gate, bf16_t *out,
                               const float *shift, const float *scale, int N, int C, cudaStream_t st);
/* The same with the output quantised to e4m3 for the FP8 GEMMs: q (N, C) = e4m3(out / *qscale)
 * (qscale: one device float, cu_dit_ln_fp8_scales); y NULL: no residual (cu_layernorm_modulate). */
mg_status cu_gated_residual_ln_fp8(float *x, const float *y, const float *gate, fp8_t *q, const float *qscale,
                                   const float *shift, const float *scale, int N, int C, cudaStream_t st);
/* The versions, for the lab and the tests (y NULL: no residual, as cu_layernorm_modulate):
 * 1 a warp per row, loads and stores interleaved; 2 every load of a row before its stores;
 * 3 a warp per row, 2 rows per block, 16-byte loads, the modulation loaded with the row (C % 4
 * == 0, C <= 1024, 16-byte aligned rows; elsewhere 2); 4 and 5: 3 with 1 and 4 rows per block.
 * The library runs MG_CUDA_LN=<version>, else 1 if MG_CUDA_LN2=0, else the default (3;
 * dev/cuda/README.md says why). The FP8
 * form runs 3 to 5 where they apply and are chosen, else 2. */
mg_status cu_gated_residual_ln_v(int version, float *x, const float *y, const float *gate, bf16_t *out,
                                 const float *shift, const float *scale, int N, int C, cudaStream_t st);
mg_status cu_silu(float *out, const float *in, size_t n, cudaStream_t st);
mg_status cu_gelu_tanh(bf16_t *out, const bf16_t *in, size_t n, cudaStream_t st);
mg_status cu_relu(bf16_t *out, const bf16_t *in, size_t n, cudaStream_t st);
mg_status cu_add_relu(bf16_t *out, const bf16_t *a, const bf16_t *b, size_t n, cudaStream_t st);
/* out (M, N) += bias (N) [then GELU-tanh]: the GEMM epilogue when cuBLASLt has none. */
mg_status cu_bias_act(void *out, int out_f32, const void *bias, int M, int N, int gelu, cudaStream_t st);

/* ---- RoPE + KV ring write ---------------------------------------------------------------- */
#define CU_MAX_TPAIRS 64
/* Per-frame values, uploaded each frame (inside the graph) from pinned host memory: kernels
 * read them on the device, so one captured graph serves every frame. */
typedef struct cu_frame_params {
    int vis;   /* visible ring slots this frame (history + the current one) */
    int slot;  /* ring slot the current frame's k,v go to */
    int pad[2];
    float tcos[CU_MAX_TPAIRS], tsin[CU_MAX_TPAIRS]; /* the time pairs' cos/sin at this frame */
} cu_frame_params;
/* qkv (N rows, stride ldq): q = columns [0, d) rotated in place; k = [d, 2d) rotated and
 * written to k_ring + slot*N*d, v = [2d, 3d) copied to v_ring + slot*N*d (rows of d).
 * Pairs j < nt take cos/sin from p->tcos/tsin, the others from the spatial tables
 * (N, dh/2) (rope_tables at frame 0; their time columns are unused). */
mg_status cu_rope_kv(bf16_t *qkv, int ldq, bf16_t *k_ring, bf16_t *v_ring, const float *cos_sp,
                     const float *sin_sp, const cu_frame_params *p, int N, int H, int dh, cudaStream_t st);

/* ---- fused DiT GEMMs (dit.cu): out = epilogue(A (M, K) @ W (N, K)^T) --------------------- */
/* For the small token counts where a DiT layer is launch-bound (d <= 768). A is bf16 (M, K),
 * or LN mode: A = LN(x) * (1 + scale) + shift (layernorm_modulate_forward) computed in the
 * prologue from x fp32 (M, K), K a multiple of 64 up to 768. Epilogues (bias optional):
 *   F32    out fp32 (M, N) = acc + bias (fp32)
 *   GELU   out bf16 (M, N) = gelu_tanh(acc + bias (bf16))
 *   RESID  out is x fp32 (M, N): x += gate * (acc + bias (fp32))   (gated_residual_forward)
 *   QKV    N = 3 * heads * dh; v = acc + bias (bf16); RoPE (as cu_rope_kv) on q and k; q to
 *          out (bf16, row stride ldq), k and v to k_ring/v_ring + slot*M*d (rows of d) */
typedef enum cu_dg_amode { CU_DG_A_BF16 = 0, CU_DG_A_LN = 1 } cu_dg_amode;
typedef enum cu_dg_epi { CU_DG_F32 = 0, CU_DG_GELU = 1, CU_DG_RESID = 2, CU_DG_QKV = 3 } cu_dg_epi;
typedef struct cu_dgemm {
    int M, N, K, amode, epi;
    int tile, split; /* tile shape index (64x64, 32x64, 32x32) and K split (cluster size) */
    size_t smem;
} cu_dgemm;
typedef struct cu_dgemm_args {
    const bf16_t *a;            /* A_BF16 */
    const float *x;             /* A_LN */
    const float *shift, *scale; /* A_LN, (K) */
    const bf16_t *w;            /* (N, K) */
    const void *bias;           /* (N) or NULL */
    void *out;
    const float *gate; /* RESID */
    int ldq;           /* QKV */
    bf16_t *k_ring, *v_ring;
    const float *cos_sp, *sin_sp; /* QKV: spatial RoPE tables (M, dh/2) */
    const cu_frame_params *p;     /* QKV: slot and time pairs (device) */
    int heads, dh;
} cu_dgemm_args;
int cu_dgemm_ok(int M, int N, int K, int amode);
/* Picks the tile and the K split (max_split 1 = none; clusters of up to 4) and sets the
 * kernel's shared-memory limit: outside any graph capture. */
mg_status cu_dgemm_plan(const cu_ctx *c, cu_dgemm *g, int M, int N, int K, int amode, int epi, int max_split);
mg_status cu_dgemm_run(const cu_dgemm *g, const cu_dgemm_args *a, cudaStream_t st);

/* ---- attention: softmax(q k^T / sqrt(dh)) v, flash-style (attention_forward) ------------ */
/* q (Nq rows, stride ldq), k and v (Nk rows, stride ldkv), out (Nq, H*dh) bf16. The key count
 * is nk_slots[0] * Nk when nk_slots (a device int) is given, else Nk. Work is split over keys
 * into `splits` parts (combined in a second kernel) so that small frames fill the card;
 * scratch: cu_attention_scratch_floats(). dh must be 64 or 128. */
int cu_attention_ok(int dh);
mg_status cu_attention_setup(void); /* kernel attributes; once, by cu_ctx_new */
int cu_attention_splits(const cu_ctx *c, int Nq, int Nk_max, int H);
size_t cu_attention_scratch_floats(int Nq, int H, int dh, int splits);
mg_status cu_attention(bf16_t *out, const bf16_t *q, int ldq, const bf16_t *k, const bf16_t *v,
                       int ldkv, const int *nk_slots, int Nk, int Nq, int H, int dh, int splits,
                       float *scratch, cudaStream_t st);

/* Attention with RoPE and the ring write folded in (cu_rope_kv + cu_attention in one launch):
 * q = columns [0, d) of qkv (N rows, stride ldq), rotated as loaded; the keys are the visible
 * ring slots, p->vis * N rows of k_ring / v_ring (rows of d; vis read on the device), where
 * slot p->slot (which must be < p->vis, as the frame step's is) is read from qkv instead
 * (k = [d, 2d) rotated, v = [2d, 3d)), and written to the ring: k rotated, v copied, each
 * element once. qkv itself is not changed. Same cos/sin as cu_rope_kv. The folded form
 * exists for every version at dh 64 and versions 1 to 4 at dh 128 (cu_attention_rope_v;
 * MG_ERR_UNSUPPORTED for the others); cu_attention_rope_ok(dh, splits) says where the frame
 * may use it (MG_CUDA_ROPEATT=1): dh 64 (dev/cuda/README.md has the measurements). */
int cu_attention_rope_ok(int dh, int splits);
mg_status cu_attention_rope(bf16_t *out, bf16_t *qkv, int ldq, bf16_t *k_ring, bf16_t *v_ring, const float *cos_sp,
                            const float *sin_sp, const cu_frame_params *p, int N, int H, int dh, int splits,
                            float *scratch, cudaStream_t st);
mg_status cu_attention_rope_v(int version, bf16_t *out, bf16_t *qkv, int ldq, bf16_t *k_ring, bf16_t *v_ring,
                              const float *cos_sp, const float *sin_sp, const cu_frame_params *p, int N, int H, int dh,
                              int splits, float *scratch, cudaStream_t st);

/* The lab's handle on the kernel versions (dev/cuda/attention.cu): version 1 builds K and V
 * fragments with plain shared loads, version 2 with ldmatrix; both combine the splits in a
 * second kernel (scratch). Version 3 = 2 with the combine folded into the kernel (the splits
 * of a query tile are one thread-block cluster; up to 8 splits, more use the combine kernel);
 * version 4 = 3 with 128-query blocks for dh 128; version 5 = wgmma (sm_90a) for dh 128;
 * version 6 = 5 with the two warpgroups half a tile apart; version 7 = 6 with the copies of
 * the next tile issued after this tile's products. At dh 64 versions 4 to 7 are 3.
 * cu_attention runs the fastest measured, or MG_CUDA_ATTN=<version>. */
#define CU_ATTN_VERSIONS 7
mg_status cu_attention_v(int version, bf16_t *out, const bf16_t *q, int ldq, const bf16_t *k, const bf16_t *v,
                         int ldkv, const int *nk_slots, int Nk, int Nq, int H, int dh, int splits, float *scratch,
                         cudaStream_t st);

/* ---- layout ---------------------------------------------------------------------------- */
/* tokens (H/p*W/p, 2*Z*p*p) bf16 from z and cond (H, W, Z) fp32; cond NULL reads zeros. */
mg_status cu_patchify(bf16_t *tok, const float *z, const float *cond, int H, int W, int Z, int p,
                      cudaStream_t st);
/* v = unpatchify(tok) (tokens (H/p*W/p, Z*p*p) fp32); with tok_u: v = v_u + g*(v - v_u);
 * then z += dt * v (the Euler step). dt = 1 onto z = 0 gives plain unpatchify. */
mg_status cu_unpatchify_euler(float *z, const float *tok, const float *tok_u, float g, float dt,
                              int H, int W, int Z, int p, cudaStream_t st);
/* zc = (1 - sigma) z + sigma eps */
mg_status cu_renoise(float *zc, const float *z, const float *eps, float sigma, size_t n, cudaStream_t st);
mg_status cu_upsample2x(bf16_t *out, const bf16_t *in, int H, int W, int C, cudaStream_t st);
mg_status cu_u8_to_float(float *out, const uint8_t *in, size_t n, cudaStream_t st);
mg_status cu_float_to_u8(uint8_t *out, const float *in, size_t n, cudaStream_t st);
mg_status cu_f32_to_bf16(bf16_t *out, const float *in, size_t n, cudaStream_t st);

/* ---- the trainer's style targets (style.cu) ----------------------------------------------- */
/* Frame f of n (H x W RGB u8, frame f at frames + f * pitch bytes) gets the target style_apply
 * (eval/degrade.h) gives it, byte for byte, where kinds[f] (device) is STYLE_TOON or
 * STYLE_SKETCH; every other frame is left as it is. scratch_a and scratch_b: n * H * W * 3
 * floats each. No CPU twin beyond style_apply itself. */
mg_status cu_style_frames(uint8_t *frames, int n, int H, int W, size_t pitch, const uint8_t *kinds, float *scratch_a,
                          float *scratch_b, cudaStream_t st);

#ifdef __cplusplus
}
#endif
#endif
