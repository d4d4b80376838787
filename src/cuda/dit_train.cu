/* The DiT's training forward and backward on the GPU (cuda_train.h), over a batch of n clips
 * in one pass: the same computation as model_train.c (dit_train_forward / dit_train_backward),
 * layer by layer, with bf16 GEMM operands and fp32 accumulation.
 *
 * Precision: the token GEMMs (in, qkv, proj, fc1, fc2, final.out, and their transposed
 * backward products) and the attention GEMMs take bf16 operands (the weights from the bf16
 * copy of cuda_params, refreshed from the fp32 master at each call) and accumulate in fp32.
 * The residual stream, the pre-activation h, the branch outputs pr and f, norm statistics,
 * softmax probabilities and every gradient that feeds a sum are fp32. The conditioning rows
 * (t1, t2, every ada and final.ada: n*T rows) are fp32 GEMMs on the fp32 master weights:
 * they are tiny, and their errors would reach every token through the modulation.
 *
 * Batching: the n clips' n*T frames are stacked, frame-major: row r of a (M, C) token matrix
 * is token r % N of stacked frame r / N, which is frame (r / N) % T of clip r / (N*T). Every
 * per-frame vector (modulation rows, sigma, RoPE position) is indexed by the stacked frame.
 *
 * Attention is materialised per head: for each stacked frame, its N queries against a fixed
 * window of Kw+1 frames of keys (Kw = min(window, T-1)), starting Kw frames before it. One
 * strided-batched GEMM covers every frame of every clip (the window start advances one frame
 * per batch entry); keys of frames before the clip's first (rows of the previous clip, or
 * zero padding before the first) are masked in the softmax, and their probabilities and
 * score gradients are written as exact zeros. The key and value gradients of each window are
 * computed per query frame and then summed onto the key frames by a gather kernel (a frame's
 * keys are seen by up to Kw+1 query frames), in a fixed order: deterministic.
 *
 * Row sums (bias gradients, modulation gradients per frame) use fixed-order reductions:
 * a step gives the same bits on every run. */
#include <cublas_v2.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"

extern "C" {
#include "ops/ops.h"
#include "train/train.h"
}
#include "cuda/cuda_train.h"

#define CB_TRY(call)                                                                                  \
    do {                                                                                              \
        cublasStatus_t cb_s_ = (call);                                                                \
        if (cb_s_ != CUBLAS_STATUS_SUCCESS) return cu_fail(__FILE__, __LINE__, #call, cublasGetStatusString(cb_s_)); \
    } while (0)

typedef struct layer_off {
    size_t ada_w, ada_b, qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b;
} layer_off;

struct cuda_dit_train {
    cuda_params *cp;
    const train_params *tp;
    mg_config cf;
    int capB, capT, caplh, caplw, capN, capM; /* capM = capB*capT*capN token rows */
    int pad_rows;                             /* zero rows before each layer's qkv: (capT-1)*capN */
    cudaStream_t st;
    cublasHandle_t cb;
    /* float offsets of the DiT's tensors in the flat arrays */
    size_t in_w, in_b, t1_w, t1_b, t2_w, t2_b, prompt, fada_w, fada_b, fout_w, fout_b;
    layer_off *lo;
    size_t *lo_first;  /* (L) the lowest float offset of block l's tensors (grad-ready hook) */
    size_t first_off;  /* the lowest float offset of the DiT's tensors */
    /* inputs (device) */
    float *x0, *x0in, *eps, *cond, *sigma, *temb;
    int *prow;
    /* activations */
    float *z;
    bf16 *tok;
    float *t1, *t1s, *c, *sc;
    float *x;     /* (L+1, M, d) */
    float *mod;   /* (L, BT, 6d) */
    float *fmod;  /* (BT, 2d) */
    bf16 *y1, *y2, *att, *hg, *yf;
    float *st1, *st2, *stf; /* (L, M, 2) / (M, 2): mean, rstd */
    bf16 *qkv;    /* L blocks of (pad_rows + M, 3d) */
    float *pr, *xm, *h, *f;
    float *v;     /* (BT, lh, lw, Z) */
    float *rcos, *rsin; /* (T, N, dh/2) */
    /* gradients */
    float *dv, *dout, *dx, *dy, *dbr, *dqkv, *dh, *dmod, *dsc, *dc, *dt1s, *dt1, *dprompt_tmp;
    bf16 *dout_b, *dbr_b, *datt_b, *dqkv_b, *dh_b;
    /* attention scratch, one head */
    float *S, *dP, *dKw, *dVw;
    bf16 *Pb, *dSb;
    float *ones;    /* (capM) 1.0 */
    double *d_loss; /* (capB) */
    double *h_loss; /* pinned (capB) */
    void *h_pin;    /* pinned staging of the inputs: x0, x0_in, eps, cond (capB*capT*lat each), temb,
                     * sigma, prompt rows */
    float *h_x0, *h_x0in, *h_eps, *h_cond;
    void *mem;
    size_t mem_bytes;
    /* host staging */
    float *h_temb, *h_sigma, *h_rcos, *h_rsin;
    int *h_prow;
    int rope_T, rope_lh, rope_lw; /* the tables on the device are for this clip shape */
    double flops;                 /* GEMM FLOPs issued since new (cuda_dit_train_flops) */
    size_t att_chunk_bytes;       /* attention scratch per pass of the score GEMMs: frames are taken in
                                   * chunks whose scores fit this (0: all at once) */
    cudaEvent_t *ev;              /* MG_DIT_PROFILE=1: 4L+3 timing events, else NULL */
    /* cuda_dit_train_set_dv_hook (--adv): v to the host, the hook's dv_add back */
    cuda_dv_hook dv_hook;
    void *dv_user;
    float *h_v, *h_dvadd;         /* pinned (capB*capT*lat each) */
    float *d_dvadd;               /* (capB*capT*lat) */
};

/* MG_DIT_PROFILE=1: events at phase boundaries, a line on stderr per pass */
static void prof(cuda_dit_train *dt, int k) {
    if (dt->ev) cudaEventRecord(dt->ev[k], dt->st);
}

/* ---- GEMMs: row-major through cuBLAS (column-major) ---------------------------------------
 * Row-major C (M, N) = op(A) (M, K) @ op(B) (K, N) is column-major C^T = op(B)^T op(A)^T, and
 * a row-major X's memory is column-major X^T: the same op flags, operands and sizes swapped. */
static mg_status gemm_rm(cuda_dit_train *dt, int ta, int tb, int M, int N, int K, float alpha, const void *A,
                         cudaDataType_t at, int lda, long long sA, const void *B, cudaDataType_t bt, int ldb,
                         long long sB, float beta, void *C, cudaDataType_t ct, int ldc, long long sC, int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return MG_OK;
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    dt->flops += 2.0 * M * N * K * batch;
    if (batch == 1)
        CB_TRY(cublasGemmEx(dt->cb, ob, oa, N, M, K, &alpha, B, bt, ldb, A, at, lda, &beta, C, ct, ldc,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    else
        CB_TRY(cublasGemmStridedBatchedEx(dt->cb, ob, oa, N, M, K, &alpha, B, bt, ldb, sB, A, at, lda, sA, &beta, C,
                                          ct, ldc, sC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return MG_OK;
}

#define BF CUDA_R_16BF
#define F32 CUDA_R_32F

/* y (M, N) fp32 = x (M, K) bf16 @ w (N, K)^T bf16 */
static mg_status lin_fwd(cuda_dit_train *dt, float *y, const bf16 *x, const bf16 *w, int M, int K, int N) {
    return gemm_rm(dt, 0, 1, M, N, K, 1.0f, x, BF, K, 0, w, BF, K, 0, 0.0f, y, F32, N, 0, 1);
}
/* dx (M, K) = dy (M, N) @ w (N, K); out fp32 or bf16 */
static mg_status lin_dx(cuda_dit_train *dt, void *dx, cudaDataType_t xt, const bf16 *dy, const bf16 *w, int M, int K,
                        int N) {
    return gemm_rm(dt, 0, 0, M, K, N, 1.0f, dy, BF, N, 0, w, BF, K, 0, 0.0f, dx, xt, K, 0, 1);
}
/* dw (N, K) += dy^T (N, M) @ x (M, K); db (N) += column sums of dy32 (M, N) */
static mg_status lin_dw(cuda_dit_train *dt, float *dw, float *db, const bf16 *dy, const float *dy32, const bf16 *x,
                        int M, int K, int N) {
    CU_MG(gemm_rm(dt, 1, 0, N, K, M, 1.0f, dy, BF, N, 0, x, BF, K, 0, 1.0f, dw, F32, K, 0, 1));
    if (db) {
        const float one = 1.0f;
        CB_TRY(cublasSgemv(dt->cb, CUBLAS_OP_N, N, M, &one, dy32, N, dt->ones, 1, &one, db, 1));
    }
    return MG_OK;
}
/* fp32 conditioning rows: y (R, N) = x (R, K) @ w (N, K)^T, fp32 master weights */
static mg_status row_fwd(cuda_dit_train *dt, float *y, const float *x, const float *w, int R, int K, int N) {
    return gemm_rm(dt, 0, 1, R, N, K, 1.0f, x, F32, K, 0, w, F32, K, 0, 0.0f, y, F32, N, 0, 1);
}
/* dx (R, K) (+)= dy @ w; dw (N, K) += dy^T x; db += column sums */
static mg_status row_bwd(cuda_dit_train *dt, float *dx, float dx_beta, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int R, int K, int N) {
    if (dx) CU_MG(gemm_rm(dt, 0, 0, R, K, N, 1.0f, dy, F32, N, 0, w, F32, K, 0, dx_beta, dx, F32, K, 0, 1));
    CU_MG(gemm_rm(dt, 1, 0, N, K, R, 1.0f, dy, F32, N, 0, x, F32, K, 0, 1.0f, dw, F32, K, 0, 1));
    const float one = 1.0f;
    CB_TRY(cublasSgemv(dt->cb, CUBLAS_OP_N, N, R, &one, dy, N, dt->ones, 1, &one, db, 1));
    return MG_OK;
}

/* ---- kernels ------------------------------------------------------------------------------ */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float dsilu_f(float x) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}
#define GELU_K 0.7978845608028654f

/* z = (1 - σ) x0 + σ ε per stacked frame (lat elements each) */
__global__ void k_noise(float *z, const float *x0, const float *eps, const float *sigma, size_t lat, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float s = sigma[i / lat];
    z[i] = (1.0f - s) * x0[i] + s * eps[i];
}

/* y (R, C) += b; ys = silu(y) if ys */
__global__ void k_bias_silu(float *y, const float *b, float *ys, int R, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)R * C) return;
    float v = y[i] + b[i % C];
    y[i] = v;
    if (ys) ys[i] = silu_f(v);
}

/* c (BT, d) += t2 bias + prompt row of the frame's clip; sc = silu(c) */
__global__ void k_cond(float *c, float *sc, const float *b, const float *prompt, const int *prow, int T, int d, int BT) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)BT * d) return;
    int j = (int)(i % d), bt = (int)(i / d);
    float v = c[i] + b[j] + prompt[(size_t)prow[bt / T] * d + j];
    c[i] = v;
    sc[i] = silu_f(v);
}

/* One warp per row r (M rows of C), frame f = r / N (rows of gate gstride apart, of shift and
 * scale mstride apart):
 *   if y: y += ybias (kept), x = xin + gate[f] * y, written to xout; else x = xin.
 *   out = LN(x) * (1 + scale[f]) + shift[f] (bf16), stats = (mean, rstd). */
__global__ void k_ln_fwd(const float *xin, float *y, const float *ybias, const float *gate, int gstride, float *xout,
                         bf16 *out, float *stats, const float *shift, const float *scale, int mstride, int M, int N,
                         int C) {
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= M) return;
    size_t f = (size_t)(r / N) * mstride;
    const float *xr = xin + (size_t)r * C;
    float s = 0.0f;
    if (y) {
        float *yr = y + (size_t)r * C, *xo = xout + (size_t)r * C;
        const float *g = gate + (size_t)(r / N) * gstride;
        for (int c = lane; c < C; c += 32) {
            float yv = yr[c] + (ybias ? ybias[c] : 0.0f);
            yr[c] = yv;
            float xv = xr[c] + g[c] * yv;
            xo[c] = xv;
            s += xv;
        }
        xr = xo;
        __syncwarp();
    } else {
        for (int c = lane; c < C; c += 32) s += xr[c];
    }
    float mean = warp_sum(s) / C, ss = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float dd = xr[c] - mean;
        ss += dd * dd;
    }
    float rstd = rsqrtf(warp_sum(ss) / C + 1e-5f);
    const float *sh = shift + f, *scl = scale + f;
    bf16 *o = out + (size_t)r * C;
    for (int c = lane; c < C; c += 32) o[c] = f2bf((xr[c] - mean) * rstd * (1.0f + scl[c]) + sh[c]);
    if (lane == 0) stats[2 * (size_t)r] = mean, stats[2 * (size_t)r + 1] = rstd;
}

/* h += b (kept, fp32); hg = gelu_tanh(h) (bf16), in the CPU's sigmoid form */
__global__ void k_bias_gelu(float *h, const float *b, bf16 *hg, size_t n, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = h[i] + b[i % C];
    h[i] = x;
    hg[i] = f2bf(x / (1.0f + expf(-2.0f * GELU_K * (x + 0.044715f * x * x * x))));
}

/* qkv (M, 3d) bf16 = RoPE(tmp + b) on q and k, v = tmp + b; one thread per (row, head, pair).
 * Tables (T, N, dh/2): row r uses table row r % (T*N). */
__global__ void k_qkv_rope(bf16 *qkv, const float *tmp, const float *b, const float *rc, const float *rs, int M, int TN,
                           int H, int dh) {
    int np = dh / 2, d = H * dh;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)M * H * np) return;
    int j = (int)(i % np), h = (int)(i / np % H);
    size_t r = i / ((size_t)np * H);
    size_t tab = (r % TN) * np + j;
    float cs = rc[tab], sn = rs[tab];
    int col = h * dh + 2 * j;
    const float *t = tmp + r * 3 * d;
    bf16 *o = qkv + r * 3 * d;
    for (int part = 0; part < 2; part++) {
        int cc = part * d + col;
        float x0 = t[cc] + b[cc], x1 = t[cc + 1] + b[cc + 1];
        o[cc] = f2bf(x0 * cs - x1 * sn);
        o[cc + 1] = f2bf(x0 * sn + x1 * cs);
    }
    int cc = 2 * d + col;
    o[cc] = f2bf(t[cc] + b[cc]);
    o[cc + 1] = f2bf(t[cc + 1] + b[cc + 1]);
}

/* dqkv (M, 3d) fp32: RoPE reversed on dq and dk in place; dqkv_b = bf16 copy of all of it */
__global__ void k_rope_bwd(float *dq, bf16 *dqb, const float *rc, const float *rs, int M, int TN, int H, int dh) {
    int np = dh / 2, d = H * dh;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)M * H * np) return;
    int j = (int)(i % np), h = (int)(i / np % H);
    size_t r = i / ((size_t)np * H);
    size_t tab = (r % TN) * np + j;
    float cs = rc[tab], sn = rs[tab];
    int col = h * dh + 2 * j;
    float *t = dq + r * 3 * d;
    bf16 *o = dqb + r * 3 * d;
    for (int part = 0; part < 2; part++) {
        int cc = part * d + col;
        float d0 = t[cc], d1 = t[cc + 1];
        float a = d0 * cs + d1 * sn, bb = -d0 * sn + d1 * cs;
        t[cc] = a, t[cc + 1] = bb;
        o[cc] = f2bf(a), o[cc + 1] = f2bf(bb);
    }
    int cc = 2 * d + col;
    o[cc] = f2bf(t[cc]), o[cc + 1] = f2bf(t[cc + 1]);
}

/* Masked softmax over one head's scores, one warp per query row. Row R + r0 = bt*N + n of S
 * (rows of Nk = (Kw+1)*N): key j is in window frame j / N, which is frame t - Kw + j / N of
 * the clip (t = bt % T); frames below 0 are masked. The row is read three times (max, sum,
 * write), from L1 after the first: S stays as it is; Pb gets the bf16 probabilities, exact
 * zeros on the masked keys. Returns the row's max and 1/sum through m_out, inv_out. */
__device__ __forceinline__ void softmax_row(const float *s, int j0, int Nk, int lane, float *m_out, float *inv_out) {
    float m = -INFINITY;
    for (int j = j0 + lane; j < Nk; j += 32) m = fmaxf(m, s[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = j0 + lane; j < Nk; j += 32) sum += expf(s[j] - m);
    *m_out = m;
    *inv_out = 1.0f / warp_sum(sum);
}

__global__ void k_softmax(const float *S, bf16 *Pb, int r0, int rows, int N, int T, int Kw, int Nk) {
    int R = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (R >= rows) return;
    int t = ((R + r0) / N) % T, j0 = (Kw - t) * N;
    if (j0 < 0) j0 = 0;
    const float *s = S + (size_t)R * Nk;
    bf16 *pb = Pb + (size_t)R * Nk;
    float m, inv;
    softmax_row(s, j0, Nk, lane, &m, &inv);
    for (int j = lane; j < Nk; j += 32) pb[j] = f2bf(j < j0 ? 0.0f : expf(s[j] - m) * inv);
}

/* The backward's softmax, fused: P recomputed from the scores S (as the forward computed it),
 * Pb = bf16(P) for dV = P^T dO, and dS = scale * P * (dP - rowsum(P * dP)) in bf16 on the
 * unmasked keys, exact zeros on the masked. */
__global__ void k_softmax_bwd(const float *S, const float *dP, bf16 *Pb, bf16 *dSb, float scale, int r0, int rows, int N,
                              int T, int Kw, int Nk) {
    int R = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (R >= rows) return;
    int t = ((R + r0) / N) % T, j0 = (Kw - t) * N;
    if (j0 < 0) j0 = 0;
    const float *s = S + (size_t)R * Nk, *dp = dP + (size_t)R * Nk;
    bf16 *o = dSb + (size_t)R * Nk, *pb = Pb + (size_t)R * Nk;
    float m, inv;
    softmax_row(s, j0, Nk, lane, &m, &inv);
    float dot = 0.0f;
    for (int j = j0 + lane; j < Nk; j += 32) dot += expf(s[j] - m) * inv * dp[j];
    dot = warp_sum(dot);
    for (int j = lane; j < Nk; j += 32) {
        float p = j < j0 ? 0.0f : expf(s[j] - m) * inv;
        pb[j] = f2bf(p);
        o[j] = f2bf(j < j0 ? 0.0f : scale * p * (dp[j] - dot));
    }
}

/* The same two kernels with the row held in registers (PER values a lane, key j = lane + 32*i),
 * for rows of up to 32*PER keys: S and dP are read from memory once. The forward and the
 * backward use the same variant for a given Nk, so the backward's P is the forward's. */
template <int PER>
__device__ __forceinline__ void softmax_regs(float *e, const float *s, int j0, int Nk, int lane, float *inv_out) {
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int j = lane + 32 * i;
        e[i] = j >= j0 && j < Nk ? s[j] : -INFINITY;
        m = fmaxf(m, e[i]);
    }
    m = warp_max(m);
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int j = lane + 32 * i;
        e[i] = j >= j0 && j < Nk ? expf(e[i] - m) : 0.0f;
        sum += e[i];
    }
    *inv_out = 1.0f / warp_sum(sum);
}

template <int PER>
__global__ void k_softmax_r(const float *S, bf16 *Pb, int r0, int rows, int N, int T, int Kw, int Nk) {
    int R = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (R >= rows) return;
    int t = ((R + r0) / N) % T, j0 = (Kw - t) * N;
    if (j0 < 0) j0 = 0;
    float e[PER], inv;
    softmax_regs<PER>(e, S + (size_t)R * Nk, j0, Nk, lane, &inv);
    bf16 *pb = Pb + (size_t)R * Nk;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int j = lane + 32 * i;
        if (j < Nk) pb[j] = f2bf(e[i] * inv);
    }
}

template <int PER>
__global__ void k_softmax_bwd_r(const float *S, const float *dP, bf16 *Pb, bf16 *dSb, float scale, int r0, int rows,
                                int N, int T, int Kw, int Nk) {
    int R = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (R >= rows) return;
    int t = ((R + r0) / N) % T, j0 = (Kw - t) * N;
    if (j0 < 0) j0 = 0;
    const float *dp = dP + (size_t)R * Nk;
    float e[PER], g[PER], inv, dot = 0.0f;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int j = lane + 32 * i;
        g[i] = j >= j0 && j < Nk ? dp[j] : 0.0f;
    }
    softmax_regs<PER>(e, S + (size_t)R * Nk, j0, Nk, lane, &inv);
#pragma unroll
    for (int i = 0; i < PER; i++) {
        e[i] *= inv;
        dot += e[i] * g[i];
    }
    dot = warp_sum(dot);
    bf16 *pb = Pb + (size_t)R * Nk, *o = dSb + (size_t)R * Nk;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int j = lane + 32 * i;
        if (j < Nk) {
            pb[j] = f2bf(e[i]);
            o[j] = f2bf(j < j0 ? 0.0f : scale * e[i] * (g[i] - dot));
        }
    }
}

/* The softmax launches: the register variants up to 1024 keys, the looping ones above. */
static mg_status softmax_fwd(cuda_dit_train *dt, int r0, int rows, int N, int T, int Kw, int Nk) {
    dim3 g(cu_blocks((size_t)rows * 32, 256)), b(256);
    const float *S = dt->S;
    if (Nk <= 256) CU_LAUNCH(k_softmax_r<8>, g, b, 0, dt->st, S, dt->Pb, r0, rows, N, T, Kw, Nk);
    else if (Nk <= 512) CU_LAUNCH(k_softmax_r<16>, g, b, 0, dt->st, S, dt->Pb, r0, rows, N, T, Kw, Nk);
    else if (Nk <= 1024) CU_LAUNCH(k_softmax_r<32>, g, b, 0, dt->st, S, dt->Pb, r0, rows, N, T, Kw, Nk);
    else CU_LAUNCH(k_softmax, g, b, 0, dt->st, S, dt->Pb, r0, rows, N, T, Kw, Nk);
    return MG_OK;
}

static mg_status softmax_bwd(cuda_dit_train *dt, float scale, int r0, int rows, int N, int T, int Kw, int Nk) {
    dim3 g(cu_blocks((size_t)rows * 32, 256)), b(256);
    const float *S = dt->S, *dP = dt->dP;
    if (Nk <= 256)
        CU_LAUNCH(k_softmax_bwd_r<8>, g, b, 0, dt->st, S, dP, dt->Pb, dt->dSb, scale, r0, rows, N, T, Kw, Nk);
    else if (Nk <= 512)
        CU_LAUNCH(k_softmax_bwd_r<16>, g, b, 0, dt->st, S, dP, dt->Pb, dt->dSb, scale, r0, rows, N, T, Kw, Nk);
    else if (Nk <= 1024)
        CU_LAUNCH(k_softmax_bwd_r<32>, g, b, 0, dt->st, S, dP, dt->Pb, dt->dSb, scale, r0, rows, N, T, Kw, Nk);
    else
        CU_LAUNCH(k_softmax_bwd, g, b, 0, dt->st, S, dP, dt->Pb, dt->dSb, scale, r0, rows, N, T, Kw, Nk);
    return MG_OK;
}

/* The key/value gradients of the windows (bt, Nk, dh) summed onto their frames: frame s of a
 * clip is window frame s - t + Kw of query frames t = s..min(T-1, s+Kw). Writes head h's
 * columns of dk and dv in dqkv (M, 3d). */
__global__ void k_kv_gather(float *dqkv, const float *dKw, const float *dVw, int BT, int T, int N, int Kw, int dh, int h,
                            int d) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)BT * N * dh) return;
    int c = (int)(i % dh), n = (int)(i / dh % N), bs = (int)(i / ((size_t)dh * N));
    int s = bs % T, tmax = s + Kw < T - 1 ? s + Kw : T - 1;
    int Nk = (Kw + 1) * N;
    float ak = 0.0f, av = 0.0f;
    for (int t = s; t <= tmax; t++) {
        size_t k = ((size_t)(bs - s + t) * Nk + (size_t)(s - t + Kw) * N + n) * dh + c;
        ak += dKw[k], av += dVw[k];
    }
    float *o = dqkv + ((size_t)bs * N + n) * 3 * d + h * dh + c;
    o[d] = ak, o[2 * d] = av;
}

/* v = unpatchify(out + b): stacked frames as one tall image of BT*lh rows */
__global__ void k_unpatchify(float *v, const float *out, const float *b, int H, int W, int Z, int p) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)H * W * Z) return;
    int ch = (int)(i % Z), x = (int)(i / Z % W), y = (int)(i / ((size_t)Z * W));
    int Tx = W / p, f = ch * p * p + (y % p) * p + (x % p);
    v[i] = out[((size_t)(y / p) * Tx + x / p) * Z * p * p + f] + b[f];
}

/* dout (tokens, Z*p*p) = unpatchify_backward(dv): fp32 and bf16 */
__global__ void k_unpatchify_bwd(float *dout, bf16 *doutb, const float *dv, int H, int W, int Z, int p) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)H * W * Z) return;
    int ch = (int)(i % Z), x = (int)(i / Z % W), y = (int)(i / ((size_t)Z * W));
    int Tx = W / p;
    size_t o = ((size_t)(y / p) * Tx + x / p) * Z * p * p + ch * p * p + (y % p) * p + (x % p);
    dout[o] = dv[i];
    doutb[o] = f2bf(dv[i]);
}

/* Per clip (one block each): loss = mean of (v - (ε - x0))^2 in float64; dv = k * residual
 * when dv != NULL. */
__global__ void k_loss(double *loss, float *dv, const float *v, const float *eps, const float *x0, size_t per, float k) {
    __shared__ double part[32];
    size_t base = (size_t)blockIdx.x * per;
    double s = 0.0;
    for (size_t i = threadIdx.x; i < per; i += blockDim.x) {
        float r32 = v[base + i] - (eps[base + i] - x0[base + i]);
        double r = (double)v[base + i] - ((double)eps[base + i] - x0[base + i]);
        s += r * r;
        if (dv) dv[base + i] = k * r32;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) t += part[w];
        loss[blockIdx.x] = t / (double)per;
    }
}

/* LayerNorm + modulation reversed, one warp per row: dx += rstd * (g - mean(g) - xhat *
 * mean(g * xhat)), g = dy * (1 + scale[f]). */
__global__ void k_ln_bwd(float *dx, const float *dy, const float *x, const float *stats, const float *scale, int mstride,
                         int M, int N, int C) {
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= M) return;
    const float *scl = scale + (size_t)(r / N) * mstride, *xr = x + (size_t)r * C, *g = dy + (size_t)r * C;
    float mean = stats[2 * (size_t)r], rstd = stats[2 * (size_t)r + 1];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float gg = g[c] * (1.0f + scl[c]), xh = (xr[c] - mean) * rstd;
        sg += gg, sgx += gg * xh;
    }
    sg = warp_sum(sg) / C, sgx = warp_sum(sgx) / C;
    float *o = dx + (size_t)r * C;
    for (int c = lane; c < C; c += 32) {
        float gg = g[c] * (1.0f + scl[c]), xh = (xr[c] - mean) * rstd;
        o[c] += rstd * (gg - sg - xh * sgx);
    }
}

/* Per-frame column sums, fixed order: out[f*ostride + c] += sum over the frame's N rows of
 * a[r][c] * w, w = b[r][c] (b given), or LN(x)[r][c] (x given, with stats), or 1.
 * Block (32, 8): 32 columns, 8 row phases summed in order at the end. */
__global__ void k_frame_sum(float *out, int ostride, const float *a, const float *b, const float *x, const float *stats,
                            int N, int C) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x, f = blockIdx.y;
    float s = 0.0f;
    if (c < C)
        for (int n = threadIdx.y; n < N; n += 8) {
            size_t r = (size_t)f * N + n, i = r * C + c;
            float w = 1.0f;
            if (b) w = b[i];
            else if (x) w = (x[i] - stats[2 * r]) * stats[2 * r + 1];
            s += a[i] * w;
        }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (int k = 0; k < 8; k++) t += part[k][threadIdx.x];
        out[(size_t)f * ostride + c] += t;
    }
}

/* dbr = gate[f] * dx (fp32 and bf16) */
__global__ void k_gate_bwd(float *dbr, bf16 *dbrb, const float *dx, const float *gate, int mstride, int N, int C, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t r = i / C;
    float v = gate[(r / N) * mstride + i % C] * dx[i];
    dbr[i] = v;
    dbrb[i] = f2bf(v);
}

/* dh = dh * gelu'(h) in place (fp32) and its bf16 copy */
__global__ void k_gelu_bwd(float *dh, bf16 *dhb, const float *h, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = h[i], x2 = x * x;
    float g = 1.0f / (1.0f + expf(-2.0f * GELU_K * (x + 0.044715f * x2 * x)));
    float local = g + x * 2.0f * g * (1.0f - g) * GELU_K * (1.0f + 3.0f * 0.044715f * x2);
    float v = dh[i] * local;
    dh[i] = v;
    dhb[i] = f2bf(v);
}

/* out = dout * silu'(inp) */
__global__ void k_silu_bwd(float *out, const float *dout, const float *inp, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = dout[i] * dsilu_f(inp[i]);
}

/* dprompt[prow[b]] += sum over the clip's frames of dc, clips in order (one thread a column) */
__global__ void k_prompt_bwd(float *dprompt, const float *dc, const int *prow, int nclips, int T, int d) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    for (int b = 0; b < nclips; b++) {
        float s = 0.0f;
        for (int t = 0; t < T; t++) s += dc[((size_t)b * T + t) * d + j];
        dprompt[(size_t)prow[b] * d + j] += s;
    }
}

__global__ void k_add(float *y, const float *x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}

__global__ void k_fill(float *x, float v, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}

__global__ void k_to_bf16_rows(bf16 *o, const float *x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) o[i] = f2bf(x[i]);
}

#define EW(n) cu_blocks((n), 256), 256, 0, dt->st
#define ROWS(m) cu_blocks((size_t)(m) * 32, 256), 256, 0, dt->st

/* ---- setup -------------------------------------------------------------------------------- */

static int find(const train_params *tp, const char *name) {
    for (int i = 0; i < tp->n_tensors; i++)
        if (!strcmp(tp->table[i].name, name)) return i;
    return -1;
}

static mg_status off_of(const train_params *tp, const char *name, size_t *o) {
    int i = find(tp, name);
    if (i < 0) return mg_fail(MG_ERR_FORMAT, "cuda_dit_train: tensor %s missing from the parameters", name);
    *o = tp->offset[i];
    return MG_OK;
}

/* Places every buffer in one allocation (measure with base == NULL). Returns bytes. */
static size_t layout(cuda_dit_train *dt, char *base) {
    const mg_config *c = &dt->cf;
    size_t d = c->d, L = c->layers, zpp = (size_t)c->z_ch * c->patch * c->patch, dh = d / c->heads;
    size_t BT = (size_t)dt->capB * dt->capT, M = dt->capM, N = dt->capN;
    size_t lat = (size_t)dt->caplh * dt->caplw * c->z_ch, Nk = (size_t)dt->capT * N;
    size_t off = 0;
#define PUT(ptr, type, count)                                       \
    do {                                                            \
        ptr = base ? (type *)(base + off) : NULL;                   \
        off += ((size_t)(count) * sizeof(type) + 255) & ~(size_t)255; \
    } while (0)
    PUT(dt->x0, float, BT * lat);
    PUT(dt->x0in, float, BT * lat);
    PUT(dt->eps, float, BT * lat);
    PUT(dt->cond, float, BT * lat);
    PUT(dt->sigma, float, BT);
    PUT(dt->temb, float, BT * 256);
    PUT(dt->prow, int, dt->capB);
    PUT(dt->z, float, BT * lat);
    PUT(dt->tok, bf16, M * 2 * zpp);
    PUT(dt->t1, float, BT * d);
    PUT(dt->t1s, float, BT * d);
    PUT(dt->c, float, BT * d);
    PUT(dt->sc, float, BT * d);
    PUT(dt->x, float, (L + 1) * M * d);
    PUT(dt->mod, float, L * BT * 6 * d);
    PUT(dt->fmod, float, BT * 2 * d);
    PUT(dt->y1, bf16, L * M * d);
    PUT(dt->y2, bf16, L * M * d);
    PUT(dt->att, bf16, L * M * d);
    PUT(dt->hg, bf16, L * M * 4 * d);
    PUT(dt->yf, bf16, M * d);
    PUT(dt->st1, float, L * M * 2);
    PUT(dt->st2, float, L * M * 2);
    PUT(dt->stf, float, M * 2);
    PUT(dt->qkv, bf16, L * (dt->pad_rows + M) * 3 * d);
    PUT(dt->pr, float, L * M * d);
    PUT(dt->xm, float, L * M * d);
    PUT(dt->h, float, L * M * 4 * d);
    PUT(dt->f, float, L * M * d);
    PUT(dt->v, float, BT * lat);
    PUT(dt->rcos, float, (size_t)dt->capT * N * dh / 2);
    PUT(dt->rsin, float, (size_t)dt->capT * N * dh / 2);
    PUT(dt->dv, float, BT * lat);
    PUT(dt->dout, float, M * zpp);
    PUT(dt->dout_b, bf16, M * zpp);
    PUT(dt->dx, float, M * d);
    PUT(dt->dy, float, M * d);
    PUT(dt->dbr, float, M * d);
    PUT(dt->dbr_b, bf16, M * d);
    PUT(dt->datt_b, bf16, M * d);
    PUT(dt->dqkv, float, M * 3 * d);
    PUT(dt->dqkv_b, bf16, M * 3 * d);
    PUT(dt->dh, float, M * 4 * d);
    PUT(dt->dh_b, bf16, M * 4 * d);
    PUT(dt->dmod, float, BT * 6 * d);
    PUT(dt->dsc, float, BT * d);
    PUT(dt->dc, float, BT * d);
    PUT(dt->dt1s, float, BT * d);
    PUT(dt->dt1, float, BT * d);
    PUT(dt->S, float, BT * N * Nk);
    PUT(dt->dP, float, BT * N * Nk);
    PUT(dt->Pb, bf16, BT * N * Nk);
    PUT(dt->dSb, bf16, BT * N * Nk);
    PUT(dt->dKw, float, BT * Nk * dh);
    PUT(dt->dVw, float, BT * Nk * dh);
    PUT(dt->ones, float, M > BT ? M : BT);
    PUT(dt->d_loss, double, dt->capB);
#undef PUT
    return off;
}

extern "C" void cuda_dit_train_free(cuda_dit_train *dt) {
    if (!dt) return;
    if (dt->cb) cublasDestroy(dt->cb);
    if (dt->ev) {
        for (int i = 0; i < 4 * dt->cf.layers + 3; i++) cudaEventDestroy(dt->ev[i]);
        free(dt->ev);
    }
    cudaFree(dt->mem);
    cudaFreeHost(dt->h_loss);
    cudaFreeHost(dt->h_pin);
    cudaFreeHost(dt->h_v);
    cudaFreeHost(dt->h_dvadd);
    cudaFree(dt->d_dvadd);
    free(dt->lo);
    free(dt->lo_first);
    free(dt->h_rcos), free(dt->h_rsin);
    free(dt);
}

extern "C" mg_status cuda_dit_train_new(cuda_dit_train **out, cuda_params *cp, int B, int T, int lh, int lw) {
    *out = NULL;
    if (!cp || !cp->impl || !cp->tp) return mg_fail(MG_ERR_ARG, "cuda_dit_train_new: the device training state is not initialised");
    const train_params *tp = cp->tp;
    const mg_config *c = &tp->cfg;
    int p = c->patch, dh = c->d / c->heads;
    if (B < 1 || T < 1 || lh < p || lw < p || lh % p || lw % p)
        return mg_fail(MG_ERR_SHAPE, "cuda_dit_train_new: batches of %d clips of %d frames of %dx%d latents: expected "
                       "B, T >= 1 and sizes multiples of the patch (%d)", B, T, lh, lw, p);
    if (dh % 2 || c->d % c->heads)
        return mg_fail(MG_ERR_UNSUPPORTED, "cuda_dit_train_new: head width %d not supported", dh);
    cuda_dit_train *dt = (cuda_dit_train *)calloc(1, sizeof *dt);
    if (!dt) return mg_fail(MG_ERR_NOMEM, "cuda_dit_train_new: out of memory");
    dt->cp = cp, dt->tp = tp, dt->cf = *c;
    dt->capB = B, dt->capT = T, dt->caplh = lh, dt->caplw = lw;
    dt->capN = (lh / p) * (lw / p);
    dt->capM = B * T * dt->capN;
    dt->pad_rows = (T - 1) * dt->capN;
    dt->st = (cudaStream_t)cuda_params_stream(cp);
    mg_status s = MG_OK;
#define NEW_TRY(expr)                   \
    do {                                \
        s = (expr);                     \
        if (s != MG_OK) goto fail;      \
    } while (0)
    {
        dt->lo = (layer_off *)calloc((size_t)c->layers, sizeof *dt->lo);
        size_t BT = (size_t)B * T, tab = (size_t)T * dt->capN * dh / 2;
        dt->h_rcos = (float *)malloc(tab * sizeof(float));
        dt->h_rsin = (float *)malloc(tab * sizeof(float));
        if (!dt->lo || !dt->h_rcos || !dt->h_rsin)
            NEW_TRY(mg_fail(MG_ERR_NOMEM, "cuda_dit_train_new: out of host memory"));
        NEW_TRY(off_of(tp, "dit.in.weight", &dt->in_w));
        NEW_TRY(off_of(tp, "dit.in.bias", &dt->in_b));
        NEW_TRY(off_of(tp, "dit.t1.weight", &dt->t1_w));
        NEW_TRY(off_of(tp, "dit.t1.bias", &dt->t1_b));
        NEW_TRY(off_of(tp, "dit.t2.weight", &dt->t2_w));
        NEW_TRY(off_of(tp, "dit.t2.bias", &dt->t2_b));
        NEW_TRY(off_of(tp, "dit.prompt", &dt->prompt));
        NEW_TRY(off_of(tp, "dit.final.ada.weight", &dt->fada_w));
        NEW_TRY(off_of(tp, "dit.final.ada.bias", &dt->fada_b));
        NEW_TRY(off_of(tp, "dit.final.out.weight", &dt->fout_w));
        NEW_TRY(off_of(tp, "dit.final.out.bias", &dt->fout_b));
        static const char *leaf[10] = {"ada.weight", "ada.bias", "qkv.weight", "qkv.bias", "proj.weight",
                                       "proj.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
        for (int l = 0; l < c->layers; l++) {
            size_t *field[10] = {&dt->lo[l].ada_w, &dt->lo[l].ada_b, &dt->lo[l].qkv_w, &dt->lo[l].qkv_b,
                                 &dt->lo[l].proj_w, &dt->lo[l].proj_b, &dt->lo[l].fc1_w, &dt->lo[l].fc1_b,
                                 &dt->lo[l].fc2_w, &dt->lo[l].fc2_b};
            for (int j = 0; j < 10; j++) {
                char n[64];
                snprintf(n, sizeof n, "dit.blocks.%d.%s", l, leaf[j]);
                NEW_TRY(off_of(tp, n, field[j]));
            }
        }
        dt->lo_first = (size_t *)malloc((size_t)c->layers * sizeof(size_t));
        if (!dt->lo_first) NEW_TRY(mg_fail(MG_ERR_NOMEM, "cuda_dit_train_new: out of host memory"));
        for (int l = 0; l < c->layers; l++) {
            const size_t *f = &dt->lo[l].ada_w; /* layer_off is ten size_t */
            size_t m = f[0];
            for (int j = 1; j < 10; j++) m = f[j] < m ? f[j] : m;
            dt->lo_first[l] = m;
        }
        {
            size_t o[7] = {dt->in_w, dt->in_b, dt->t1_w, dt->t1_b, dt->t2_w, dt->t2_b, dt->prompt};
            dt->first_off = o[0];
            for (int j = 1; j < 7; j++) dt->first_off = o[j] < dt->first_off ? o[j] : dt->first_off;
        }
        /* the grad-ready hook reports suffixes of the flat array: the file order (model.c) must
         * be in, t1, t2, prompt, blocks 0..L-1, final */
        for (int l = 0; l < c->layers; l++)
            if ((l == 0 ? dt->prompt >= dt->lo_first[0] : dt->lo_first[l - 1] >= dt->lo_first[l]) ||
                dt->lo_first[l] >= dt->fada_w || dt->fada_w >= dt->fout_w)
                NEW_TRY(mg_fail(MG_ERR_FORMAT, "cuda_dit_train_new: the DiT's tensors are not in the order in, t1, t2, "
                                "prompt, blocks, final (the backward's gradient buckets rely on it)"));
        dt->mem_bytes = layout(dt, NULL);
        cudaError_t e = cudaMalloc(&dt->mem, dt->mem_bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            dt->mem = NULL;
            NEW_TRY(mg_fail(MG_ERR_NOMEM, "cuda_dit_train_new: cannot allocate %.1f MiB on the GPU for %d clips of %d "
                            "frames of %dx%d latents (%s)", dt->mem_bytes / 1048576.0, B, T, lh, lw,
                            cudaGetErrorString(e)));
        }
        layout(dt, (char *)dt->mem);
        size_t lat = (size_t)lh * lw * c->z_ch, pin = (4 * BT * lat + BT * 257 + B) * sizeof(float);
        e = cudaMallocHost(&dt->h_loss, (size_t)B * sizeof(double));
        if (e == cudaSuccess) e = cudaMallocHost(&dt->h_pin, pin);
        if (e != cudaSuccess) {
            cudaGetLastError();
            NEW_TRY(mg_fail(MG_ERR_NOMEM, "cuda_dit_train_new: cannot allocate pinned memory"));
        }
        /* zeros everywhere: the qkv padding is read (masked) by the first frames' windows,
         * and cond rows of clips without a cond stay zero */
        dt->h_x0 = (float *)dt->h_pin, dt->h_x0in = dt->h_x0 + BT * lat, dt->h_eps = dt->h_x0in + BT * lat;
        dt->h_cond = dt->h_eps + BT * lat, dt->h_temb = dt->h_cond + BT * lat, dt->h_sigma = dt->h_temb + BT * 256;
        dt->h_prow = (int *)(dt->h_sigma + BT);
        e = cudaMemsetAsync(dt->mem, 0, dt->mem_bytes, dt->st);
        if (e != cudaSuccess) NEW_TRY(cu_fail(__FILE__, __LINE__, "cudaMemsetAsync", cudaGetErrorString(e)));
        size_t nones = dt->capM > (int)BT ? (size_t)dt->capM : BT;
        k_fill<<<cu_blocks(nones, 256), 256, 0, dt->st>>>(dt->ones, 1.0f, nones);
        e = cudaGetLastError();
        if (e != cudaSuccess) NEW_TRY(cu_fail(__FILE__, __LINE__, "k_fill", cudaGetErrorString(e)));
        cublasStatus_t be = cublasCreate(&dt->cb);
        if (be != CUBLAS_STATUS_SUCCESS) {
            dt->cb = NULL;
            NEW_TRY(cu_fail(__FILE__, __LINE__, "cublasCreate", cublasGetStatusString(be)));
        }
        if ((be = cublasSetStream(dt->cb, dt->st)) != CUBLAS_STATUS_SUCCESS ||
            (be = cublasSetMathMode(dt->cb, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
            NEW_TRY(cu_fail(__FILE__, __LINE__, "cublasSetStream", cublasGetStatusString(be)));
        e = cudaStreamSynchronize(dt->st);
        if (e != cudaSuccess) NEW_TRY(cu_fail(__FILE__, __LINE__, "cudaStreamSynchronize", cudaGetErrorString(e)));
        dt->rope_T = -1;
        /* MG_DIT_ATT_CHUNK_MB=x: the attention GEMMs in chunks of frames whose scores (S, dP
         * fp32, P, dS bf16) take at most x MB, so that they stay in L2 between the GEMM that
         * writes them and the kernel that reads them. Off by default: measured slower on an H200
         * (s, B 8, T 8, 32x32, window 3: 35.9 ms/step all at once; 43.3 at 50 MB, 58.4 at 25,
         * 110.9 at 12), the extra launches cost more than the DRAM traffic saved. */
        const char *env = getenv("MG_DIT_ATT_CHUNK_MB");
        dt->att_chunk_bytes = env && *env ? (size_t)(atof(env) * 1048576.0) : 0;
        env = getenv("MG_DIT_PROFILE");
        if (env && *env && strcmp(env, "0")) {
            int ne = 4 * c->layers + 3;
            dt->ev = (cudaEvent_t *)calloc((size_t)ne, sizeof(cudaEvent_t));
            if (!dt->ev) NEW_TRY(mg_fail(MG_ERR_NOMEM, "cuda_dit_train_new: out of memory"));
            for (int i = 0; i < ne; i++)
                if ((e = cudaEventCreate(&dt->ev[i])) != cudaSuccess) {
                    for (int j = 0; j < i; j++) cudaEventDestroy(dt->ev[j]);
                    free(dt->ev);
                    dt->ev = NULL;
                    NEW_TRY(cu_fail(__FILE__, __LINE__, "cudaEventCreate", cudaGetErrorString(e)));
                }
        }
    }
#undef NEW_TRY
    *out = dt;
    return MG_OK;
fail:
    cuda_dit_train_free(dt);
    return s;
}

/* ---- the pass ------------------------------------------------------------------------------ */

static mg_status check_clips(const cuda_dit_train *dt, const dit_clip *clips, int n, const char *fn) {
    if (!clips || n < 1 || n > dt->capB)
        return mg_fail(MG_ERR_ARG, "%s: %d clips for a batch sized for 1..%d", fn, n, dt->capB);
    const dit_clip *c0 = &clips[0];
    int p = dt->cf.patch;
    if (c0->T < 1 || c0->T > dt->capT || c0->lh < p || c0->lw < p || c0->lh % p || c0->lw % p ||
        (c0->lh / p) * (c0->lw / p) > dt->capN)
        return mg_fail(MG_ERR_SHAPE, "%s: clip of %d frames of %dx%d latents does not fit the %d frames of %dx%d it "
                       "was sized for", fn, c0->T, c0->lh, c0->lw, dt->capT, dt->caplh, dt->caplw);
    for (int i = 0; i < n; i++) {
        const dit_clip *ci = &clips[i];
        if (ci->T != c0->T || ci->lh != c0->lh || ci->lw != c0->lw || ci->window != c0->window)
            return mg_fail(MG_ERR_SHAPE, "%s: clip %d is %d frames of %dx%d with window %d; clip 0 is %d of %dx%d "
                           "with window %d (a batch shares them)", fn, i, ci->T, ci->lh, ci->lw, ci->window, c0->T,
                           c0->lh, c0->lw, c0->window);
        if (ci->prompt < 0 || ci->prompt >= dt->tp->n_prompts || ci->window < 0)
            return mg_fail(MG_ERR_ARG, "%s: clip %d: prompt row %d (of %d), window %d", fn, i, ci->prompt,
                           dt->tp->n_prompts, ci->window);
        if (!ci->x0 || !ci->eps || !ci->sigma)
            return mg_fail(MG_ERR_ARG, "%s: clip %d: x0, eps and sigma are required", fn, i);
        for (int t = 0; t < ci->T; t++)
            if (!(ci->sigma[t] >= 0.0f && ci->sigma[t] <= 1.0f))
                return mg_fail(MG_ERR_ARG, "%s: clip %d frame %d: sigma %g outside [0, 1]", fn, i, t, ci->sigma[t]);
    }
    return MG_OK;
}

/* Uploads the clips, runs the forward (all activations kept), and if grad_scale is given the
 * backward into cp->grad; losses[i] for each clip. */
static mg_status pass(cuda_dit_train *dt, const dit_clip *clips, int n, const float *grad_scale, float *losses,
                      const char *fn) {
    CU_MG(check_clips(dt, clips, n, fn));
    const mg_config *cf = &dt->cf;
    const train_params *tp = dt->tp;
    cuda_params *cp = dt->cp;
    const int T = clips[0].T, lh = clips[0].lh, lw = clips[0].lw, p = cf->patch, Z = cf->z_ch;
    const int d = cf->d, L = cf->layers, H = cf->heads, dh = d / H, zpp = Z * p * p;
    const int Ty = lh / p, Tx = lw / p, N = Ty * Tx, BT = n * T, M = BT * N, TN = T * N;
    const int Kw = clips[0].window < T - 1 ? clips[0].window : T - 1, Nk = (Kw + 1) * N;
    const size_t lat = (size_t)lh * lw * Z, Md = (size_t)M * d;
    const float ascale = (float)(1.0 / sqrt((double)dh));
    cudaStream_t st = dt->st;

    /* weights: the bf16 copy refreshed from the fp32 master */
    CU_MG(cuda_params_to_bf16(cp, tp->dit_first, tp->n_tensors));
    const bf16 *WB = (const bf16 *)cuda_params_bf16(cp);
    const float *WP = cp->param;
    float *G = cp->grad;

    /* inputs: gathered into the pinned staging (free: every earlier pass ended with a sync,
     * and this one waits for a failed one's leftovers), then one copy per array */
    CU_TRY(cudaStreamSynchronize(st));
    const size_t cl = lat * T, cb = cl * sizeof(float), nb = (size_t)n * cb;
    for (int i = 0; i < n; i++) {
        const dit_clip *ci = &clips[i];
        memcpy(dt->h_x0 + i * cl, ci->x0, cb);
        memcpy(dt->h_x0in + i * cl, ci->x0_in ? ci->x0_in : ci->x0, cb);
        memcpy(dt->h_eps + i * cl, ci->eps, cb);
        if (ci->cond) memcpy(dt->h_cond + i * cl, ci->cond, cb);
        else memset(dt->h_cond + i * cl, 0, cb);
        for (int t = 0; t < T; t++) {
            dt->h_sigma[i * T + t] = ci->sigma[t];
            timestep_embedding(dt->h_temb + ((size_t)i * T + t) * 256, ci->sigma[t]);
        }
        dt->h_prow[i] = ci->prompt;
    }
    CU_TRY(cudaMemcpyAsync(dt->x0, dt->h_x0, nb, cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyAsync(dt->x0in, dt->h_x0in, nb, cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyAsync(dt->eps, dt->h_eps, nb, cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyAsync(dt->cond, dt->h_cond, nb, cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyAsync(dt->sigma, dt->h_sigma, BT * sizeof(float), cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyAsync(dt->temb, dt->h_temb, (size_t)BT * 256 * sizeof(float), cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyAsync(dt->prow, dt->h_prow, n * sizeof(int), cudaMemcpyHostToDevice, st));
    if (dt->rope_T != T || dt->rope_lh != lh || dt->rope_lw != lw) {
        size_t tab = (size_t)N * dh / 2;
        for (int t = 0; t < T; t++) rope_tables(dt->h_rcos + t * tab, dt->h_rsin + t * tab, t, Ty, Tx, dh, cf->rope_theta);
        CU_TRY(cudaMemcpyAsync(dt->rcos, dt->h_rcos, T * tab * sizeof(float), cudaMemcpyHostToDevice, st));
        CU_TRY(cudaMemcpyAsync(dt->rsin, dt->h_rsin, T * tab * sizeof(float), cudaMemcpyHostToDevice, st));
        dt->rope_T = T, dt->rope_lh = lh, dt->rope_lw = lw;
    }
    /* (pageable tables: the copy has taken them when it returns) */

    /* ---- forward ---- */
    int chunk = BT;
    if (dt->att_chunk_bytes) {
        size_t per = (size_t)N * Nk * 12, c = dt->att_chunk_bytes / per;
        chunk = c < 1 ? 1 : c > (size_t)BT ? BT : (int)c;
    }
    prof(dt, 0);
    size_t nlat = (size_t)BT * lat;
    CU_LAUNCH(k_noise, EW(nlat), dt->z, (const float *)dt->x0in, (const float *)dt->eps, (const float *)dt->sigma, lat, nlat);
    /* conditioning rows */
    CU_MG(row_fwd(dt, dt->t1, dt->temb, WP + dt->t1_w, BT, 256, d));
    CU_LAUNCH(k_bias_silu, EW((size_t)BT * d), dt->t1, WP + dt->t1_b, dt->t1s, BT, d);
    CU_MG(row_fwd(dt, dt->c, dt->t1s, WP + dt->t2_w, BT, d, d));
    CU_LAUNCH(k_cond, EW((size_t)BT * d), dt->c, dt->sc, WP + dt->t2_b, WP + dt->prompt, (const int *)dt->prow, T, d, BT);
    for (int l = 0; l < L; l++) {
        float *mod = dt->mod + (size_t)l * BT * 6 * d;
        CU_MG(row_fwd(dt, mod, dt->sc, WP + dt->lo[l].ada_w, BT, d, 6 * d));
        CU_LAUNCH(k_bias_silu, EW((size_t)BT * 6 * d), mod, WP + dt->lo[l].ada_b, (float *)NULL, BT, 6 * d);
    }
    CU_MG(row_fwd(dt, dt->fmod, dt->sc, WP + dt->fada_w, BT, d, 2 * d));
    CU_LAUNCH(k_bias_silu, EW((size_t)BT * 2 * d), dt->fmod, WP + dt->fada_b, (float *)NULL, BT, 2 * d);
    /* tokens and dit.in (stacked frames are one tall image) */
    CU_MG(cu_patchify((bf16_t *)dt->tok, dt->z, dt->cond, BT * lh, lw, Z, p, st));
    CU_MG(lin_fwd(dt, dt->x, dt->tok, WB + dt->in_w, M, 2 * zpp, d));
    CU_LAUNCH(k_bias_silu, EW(Md), dt->x, WP + dt->in_b, (float *)NULL, M, d);
    CU_LAUNCH(k_ln_fwd, ROWS(M), (const float *)dt->x, (float *)NULL, (const float *)NULL, (const float *)NULL, 0,
              (float *)NULL, dt->y1, dt->st1, (const float *)dt->mod, (const float *)dt->mod + d, 6 * d, M, N, d);

    for (int l = 0; l < L; l++) {
        const layer_off *lo = &dt->lo[l];
        float *x = dt->x + l * Md, *xo = dt->x + (l + 1) * Md, *mod = dt->mod + (size_t)l * BT * 6 * d;
        bf16 *y1 = dt->y1 + l * Md, *y2 = dt->y2 + l * Md, *att = dt->att + l * Md, *hg = dt->hg + l * Md * 4;
        bf16 *qkv = dt->qkv + (size_t)l * (dt->pad_rows + dt->capM) * 3 * d + (size_t)dt->pad_rows * 3 * d;
        float *pr = dt->pr + l * Md, *xm = dt->xm + l * Md, *h = dt->h + l * Md * 4, *f = dt->f + l * Md;
        float *st2 = dt->st2 + (size_t)l * M * 2;
        /* qkv, RoPE */
        CU_MG(lin_fwd(dt, dt->dqkv, y1, WB + lo->qkv_w, M, d, 3 * d));
        CU_LAUNCH(k_qkv_rope, EW((size_t)M * H * (dh / 2)), qkv, (const float *)dt->dqkv, WP + lo->qkv_b,
                  (const float *)dt->rcos, (const float *)dt->rsin, M, TN, H, dh);
        /* attention, one head at a time over every frame of every clip */
        prof(dt, 2 + 4 * l);
        for (int hh = 0; hh < H; hh++)
            for (int c0 = 0; c0 < BT; c0 += chunk) {
                const int cn = BT - c0 < chunk ? BT - c0 : chunk;
                const size_t qo = (size_t)c0 * N * 3 * d;
                const bf16 *q = qkv + qo + hh * dh, *k = qkv + qo + d + hh * dh - (size_t)Kw * N * 3 * d, *vv = k + d;
                CU_MG(gemm_rm(dt, 0, 1, N, Nk, dh, ascale, q, BF, 3 * d, (long long)N * 3 * d, k, BF, 3 * d,
                              (long long)N * 3 * d, 0.0f, dt->S, F32, Nk, (long long)N * Nk, cn));
                CU_MG(softmax_fwd(dt, c0 * N, cn * N, N, T, Kw, Nk));
                CU_MG(gemm_rm(dt, 0, 0, N, dh, Nk, 1.0f, dt->Pb, BF, Nk, (long long)N * Nk, vv, BF, 3 * d,
                              (long long)N * 3 * d, 0.0f, att + (size_t)c0 * N * d + hh * dh, BF, d, (long long)N * d, cn));
            }
        prof(dt, 3 + 4 * l);
        /* proj, xm = x + gate1 * pr, y2 = LN(xm) modulated */
        CU_MG(lin_fwd(dt, pr, att, WB + lo->proj_w, M, d, d));
        CU_LAUNCH(k_ln_fwd, ROWS(M), (const float *)x, pr, WP + lo->proj_b, (const float *)mod + 2 * d, 6 * d, xm, y2, st2,
                  (const float *)mod + 3 * d, (const float *)mod + 4 * d, 6 * d, M, N, d);
        /* MLP */
        CU_MG(lin_fwd(dt, h, y2, WB + lo->fc1_w, M, d, 4 * d));
        CU_LAUNCH(k_bias_gelu, EW(Md * 4), h, WP + lo->fc1_b, hg, Md * 4, 4 * d);
        CU_MG(lin_fwd(dt, f, hg, WB + lo->fc2_w, M, 4 * d, d));
        /* x_{l+1} = xm + gate2 * f, then the next LN: layer l+1's first, or the final layer's */
        if (l + 1 < L) {
            const float *nm = dt->mod + (size_t)(l + 1) * BT * 6 * d;
            CU_LAUNCH(k_ln_fwd, ROWS(M), (const float *)xm, f, WP + lo->fc2_b, (const float *)mod + 5 * d, 6 * d, xo,
                      dt->y1 + (l + 1) * Md, dt->st1 + (size_t)(l + 1) * M * 2, nm, nm + d, 6 * d, M, N, d);
        } else {
            CU_LAUNCH(k_ln_fwd, ROWS(M), (const float *)xm, f, WP + lo->fc2_b, (const float *)mod + 5 * d, 6 * d, xo, dt->yf,
                      dt->stf, (const float *)dt->fmod, (const float *)dt->fmod + d, 2 * d, M, N, d);
        }
    }
    /* final: out, unpatchify, loss */
    float *outf = dt->dout; /* (M, zpp) scratch: the forward's out is not kept */
    CU_MG(lin_fwd(dt, outf, dt->yf, WB + dt->fout_w, M, d, zpp));
    CU_LAUNCH(k_unpatchify, EW(nlat), dt->v, (const float *)outf, WP + dt->fout_b, BT * lh, lw, Z, p);
    float kk = grad_scale ? (float)(2.0 * *grad_scale / (double)(T * lat)) : 0.0f;
    CU_LAUNCH(k_loss, dim3(n), dim3(1024), 0, st, dt->d_loss, grad_scale ? dt->dv : (float *)NULL, (const float *)dt->v,
              (const float *)dt->eps, (const float *)dt->x0, (size_t)T * lat, kk);
    prof(dt, 1);
    CU_TRY(cudaMemcpyAsync(dt->h_loss, dt->d_loss, n * sizeof(double), cudaMemcpyDeviceToHost, st));
    if (grad_scale && dt->dv_hook) { /* --adv: the host adds its term to dv */
        CU_TRY(cudaMemcpyAsync(dt->h_v, dt->v, nlat * sizeof(float), cudaMemcpyDeviceToHost, st));
        CU_TRY(cudaStreamSynchronize(st));
        CU_MG(dt->dv_hook(dt->dv_user, clips, n, dt->h_v, dt->h_dvadd));
        CU_TRY(cudaMemcpyAsync(dt->d_dvadd, dt->h_dvadd, nlat * sizeof(float), cudaMemcpyHostToDevice, st));
        CU_LAUNCH(k_add, EW(nlat), dt->dv, (const float *)dt->d_dvadd, nlat);
    }

    if (grad_scale) {
        /* ---- backward ---- */
        CU_LAUNCH(k_unpatchify_bwd, EW(nlat), dt->dout, dt->dout_b, (const float *)dt->dv, BT * lh, lw, Z, p);
        CU_MG(lin_dx(dt, dt->dy, F32, dt->dout_b, WB + dt->fout_w, M, d, zpp));
        CU_MG(lin_dw(dt, G + dt->fout_w, G + dt->fout_b, dt->dout_b, dt->dout, dt->yf, M, d, zpp));
        const float *xL = dt->x + (size_t)L * Md;
        CU_TRY(cudaMemsetAsync(dt->dx, 0, Md * sizeof(float), st));
        CU_TRY(cudaMemsetAsync(dt->dmod, 0, (size_t)BT * 2 * d * sizeof(float), st));
        CU_TRY(cudaMemsetAsync(dt->dsc, 0, (size_t)BT * d * sizeof(float), st));
        dim3 fs_grid(cu_blocks(d, 32), BT), fs_block(32, 8);
        CU_LAUNCH(k_ln_bwd, ROWS(M), dt->dx, (const float *)dt->dy, xL, (const float *)dt->stf,
                  (const float *)dt->fmod + d, 2 * d, M, N, d);
        CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod, 2 * d, (const float *)dt->dy, (const float *)NULL,
                  (const float *)NULL, (const float *)NULL, N, d);
        CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod + d, 2 * d, (const float *)dt->dy, (const float *)NULL,
                  xL, (const float *)dt->stf, N, d);
        CU_MG(row_bwd(dt, dt->dsc, 1.0f, G + dt->fada_w, G + dt->fada_b, dt->dmod, dt->sc, WP + dt->fada_w, BT, d, 2 * d));
        /* data-parallel buckets: the final layer's gradients are complete (cuda_params_grad_ready) */
        CU_MG(cuda_params_grad_ready(cp, dt->fada_w < dt->fout_w ? dt->fada_w : dt->fout_w));

        for (int l = L - 1; l >= 0; l--) {
            const layer_off *lo = &dt->lo[l];
            const float *x = dt->x + l * Md, *mod = dt->mod + (size_t)l * BT * 6 * d;
            const bf16 *y1 = dt->y1 + l * Md, *y2 = dt->y2 + l * Md, *att = dt->att + l * Md, *hg = dt->hg + l * Md * 4;
            const bf16 *qkv = dt->qkv + (size_t)l * (dt->pad_rows + dt->capM) * 3 * d + (size_t)dt->pad_rows * 3 * d;
            const float *pr = dt->pr + l * Md, *xm = dt->xm + l * Md, *h = dt->h + l * Md * 4, *f = dt->f + l * Md;
            const float *st1 = dt->st1 + (size_t)l * M * 2, *st2 = dt->st2 + (size_t)l * M * 2;
            CU_TRY(cudaMemsetAsync(dt->dmod, 0, (size_t)BT * 6 * d * sizeof(float), st));
            /* x_{l+1} = xm + gate2 * f */
            CU_LAUNCH(k_gate_bwd, EW(Md), dt->dbr, dt->dbr_b, (const float *)dt->dx, mod + 5 * d, 6 * d, N, d, Md);
            CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod + 5 * d, 6 * d, (const float *)dt->dx, f,
                      (const float *)NULL, (const float *)NULL, N, d);
            /* f = fc2(gelu(fc1(y2))) */
            CU_MG(lin_dx(dt, dt->dh, F32, dt->dbr_b, WB + lo->fc2_w, M, 4 * d, d));
            CU_MG(lin_dw(dt, G + lo->fc2_w, G + lo->fc2_b, dt->dbr_b, dt->dbr, hg, M, 4 * d, d));
            CU_LAUNCH(k_gelu_bwd, EW(Md * 4), dt->dh, dt->dh_b, h, Md * 4);
            CU_MG(lin_dx(dt, dt->dy, F32, dt->dh_b, WB + lo->fc1_w, M, d, 4 * d));
            CU_MG(lin_dw(dt, G + lo->fc1_w, G + lo->fc1_b, dt->dh_b, dt->dh, y2, M, d, 4 * d));
            /* y2 = LN(xm) modulated */
            CU_LAUNCH(k_ln_bwd, ROWS(M), dt->dx, (const float *)dt->dy, xm, st2, mod + 4 * d, 6 * d, M, N, d);
            CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod + 3 * d, 6 * d, (const float *)dt->dy,
                      (const float *)NULL, (const float *)NULL, (const float *)NULL, N, d);
            CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod + 4 * d, 6 * d, (const float *)dt->dy,
                      (const float *)NULL, xm, st2, N, d);
            /* xm = x + gate1 * pr */
            CU_LAUNCH(k_gate_bwd, EW(Md), dt->dbr, dt->dbr_b, (const float *)dt->dx, mod + 2 * d, 6 * d, N, d, Md);
            CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod + 2 * d, 6 * d, (const float *)dt->dx, pr,
                      (const float *)NULL, (const float *)NULL, N, d);
            CU_MG(lin_dx(dt, dt->datt_b, BF, dt->dbr_b, WB + lo->proj_w, M, d, d));
            CU_MG(lin_dw(dt, G + lo->proj_w, G + lo->proj_b, dt->dbr_b, dt->dbr, att, M, d, d));
            /* attention, head by head: recompute the scores, then dP, P and dS, dV, dQ, dK */
            prof(dt, 4 + 4 * l);
            for (int hh = 0; hh < H; hh++) {
                for (int c0 = 0; c0 < BT; c0 += chunk) {
                    const int cn = BT - c0 < chunk ? BT - c0 : chunk;
                    const size_t qo = (size_t)c0 * N * 3 * d;
                    const bf16 *q = qkv + qo + hh * dh, *k = qkv + qo + d + hh * dh - (size_t)Kw * N * 3 * d, *vv = k + d;
                    const bf16 *dO = dt->datt_b + (size_t)c0 * N * d + hh * dh;
                    CU_MG(gemm_rm(dt, 0, 1, N, Nk, dh, ascale, q, BF, 3 * d, (long long)N * 3 * d, k, BF, 3 * d,
                                  (long long)N * 3 * d, 0.0f, dt->S, F32, Nk, (long long)N * Nk, cn));
                    /* dP = dO V^T; P (bf16) and dS from S and dP in one pass; dVw = P^T dO */
                    CU_MG(gemm_rm(dt, 0, 1, N, Nk, dh, 1.0f, dO, BF, d, (long long)N * d, vv, BF, 3 * d,
                                  (long long)N * 3 * d, 0.0f, dt->dP, F32, Nk, (long long)N * Nk, cn));
                    CU_MG(softmax_bwd(dt, ascale, c0 * N, cn * N, N, T, Kw, Nk));
                    CU_MG(gemm_rm(dt, 1, 0, Nk, dh, N, 1.0f, dt->Pb, BF, Nk, (long long)N * Nk, dO, BF, d,
                                  (long long)N * d, 0.0f, dt->dVw + (size_t)c0 * Nk * dh, F32, dh, (long long)Nk * dh, cn));
                    /* dQ = dS K (into dqkv directly), dKw = dS^T Q */
                    CU_MG(gemm_rm(dt, 0, 0, N, dh, Nk, 1.0f, dt->dSb, BF, Nk, (long long)N * Nk, k, BF, 3 * d,
                                  (long long)N * 3 * d, 0.0f, dt->dqkv + qo + hh * dh, F32, 3 * d, (long long)N * 3 * d,
                                  cn));
                    CU_MG(gemm_rm(dt, 1, 0, Nk, dh, N, 1.0f, dt->dSb, BF, Nk, (long long)N * Nk, q, BF, 3 * d,
                                  (long long)N * 3 * d, 0.0f, dt->dKw + (size_t)c0 * Nk * dh, F32, dh,
                                  (long long)Nk * dh, cn));
                }
                CU_LAUNCH(k_kv_gather, EW((size_t)M * dh), dt->dqkv, (const float *)dt->dKw, (const float *)dt->dVw, BT, T,
                          N, Kw, dh, hh, d);
            }
            prof(dt, 5 + 4 * l);
            CU_LAUNCH(k_rope_bwd, EW((size_t)M * H * (dh / 2)), dt->dqkv, dt->dqkv_b, (const float *)dt->rcos,
                      (const float *)dt->rsin, M, TN, H, dh);
            CU_MG(lin_dx(dt, dt->dy, F32, dt->dqkv_b, WB + lo->qkv_w, M, d, 3 * d));
            CU_MG(lin_dw(dt, G + lo->qkv_w, G + lo->qkv_b, dt->dqkv_b, dt->dqkv, y1, M, d, 3 * d));
            /* y1 = LN(x) modulated */
            CU_LAUNCH(k_ln_bwd, ROWS(M), dt->dx, (const float *)dt->dy, x, st1, mod + d, 6 * d, M, N, d);
            CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod, 6 * d, (const float *)dt->dy, (const float *)NULL,
                      (const float *)NULL, (const float *)NULL, N, d);
            CU_LAUNCH(k_frame_sum, fs_grid, fs_block, 0, st, dt->dmod + d, 6 * d, (const float *)dt->dy,
                      (const float *)NULL, x, st1, N, d);
            /* mod = ada(sc) */
            CU_MG(row_bwd(dt, dt->dsc, 1.0f, G + lo->ada_w, G + lo->ada_b, dt->dmod, dt->sc, WP + lo->ada_w, BT, d, 6 * d));
            CU_MG(cuda_params_grad_ready(cp, dt->lo_first[l])); /* block l is complete */
        }
        /* x_0 = dit.in(tok) */
        CU_LAUNCH(k_to_bf16_rows, EW(Md), dt->dbr_b, (const float *)dt->dx, Md);
        CU_MG(lin_dw(dt, G + dt->in_w, G + dt->in_b, dt->dbr_b, dt->dx, dt->tok, M, 2 * zpp, d));
        /* sc = silu(c), c = t2(t1s) + b + prompt row, t1s = silu(t1), t1 = dit.t1(temb) */
        CU_LAUNCH(k_silu_bwd, EW((size_t)BT * d), dt->dc, (const float *)dt->dsc, (const float *)dt->c, (size_t)BT * d);
        CU_LAUNCH(k_prompt_bwd, cu_blocks(d, 128), 128, 0, st, G + dt->prompt, (const float *)dt->dc,
                  (const int *)dt->prow, n, T, d);
        CU_MG(row_bwd(dt, dt->dt1s, 0.0f, G + dt->t2_w, G + dt->t2_b, dt->dc, dt->t1s, WP + dt->t2_w, BT, d, d));
        CU_LAUNCH(k_silu_bwd, EW((size_t)BT * d), dt->dt1, (const float *)dt->dt1s, (const float *)dt->t1, (size_t)BT * d);
        CU_MG(row_bwd(dt, NULL, 0.0f, G + dt->t1_w, G + dt->t1_b, dt->dt1, dt->temb, WP + dt->t1_w, BT, 256, d));
        CU_MG(cuda_params_grad_ready(cp, dt->first_off)); /* in, t1, t2, prompt: the whole DiT */
        prof(dt, 2 + 4 * L);
    }
    CU_TRY(cudaStreamSynchronize(st));
    if (dt->ev) {
        float ms, fwd = 0, fatt = 0, bwd = 0, batt = 0;
        cudaEventElapsedTime(&fwd, dt->ev[0], dt->ev[1]);
        for (int l = 0; l < L; l++) {
            if (cudaEventElapsedTime(&ms, dt->ev[2 + 4 * l], dt->ev[3 + 4 * l]) == cudaSuccess) fatt += ms;
            if (grad_scale && cudaEventElapsedTime(&ms, dt->ev[4 + 4 * l], dt->ev[5 + 4 * l]) == cudaSuccess) batt += ms;
        }
        if (grad_scale) cudaEventElapsedTime(&bwd, dt->ev[1], dt->ev[2 + 4 * L]);
        cudaGetLastError();
        fprintf(stderr, "dit_train profile: %d clips, attention chunks of %d frames: forward %.3f ms (attention %.3f), "
                "backward %.3f ms (attention %.3f)\n", n, chunk, fwd, fatt, bwd, batt);
    }
    for (int i = 0; i < n; i++) losses[i] = (float)dt->h_loss[i];
    return MG_OK;
}

extern "C" mg_status cuda_dit_train_set_dv_hook(cuda_dit_train *dt, cuda_dv_hook fn, void *user) {
    if (!dt) return mg_fail(MG_ERR_ARG, "cuda_dit_train_set_dv_hook: not initialised");
    if (fn && !dt->h_v) {
        size_t bytes = (size_t)dt->capB * dt->capT * dt->caplh * dt->caplw * dt->cf.z_ch * sizeof(float);
        cudaError_t e = cudaMallocHost(&dt->h_v, bytes);
        if (e == cudaSuccess) e = cudaMallocHost(&dt->h_dvadd, bytes);
        if (e == cudaSuccess) e = cudaMalloc(&dt->d_dvadd, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            cudaFreeHost(dt->h_v), cudaFreeHost(dt->h_dvadd), cudaFree(dt->d_dvadd);
            dt->h_v = dt->h_dvadd = dt->d_dvadd = NULL;
            return mg_fail(MG_ERR_NOMEM, "cuda_dit_train_set_dv_hook: cannot allocate 3 x %.1f MiB (%s)", bytes / 1048576.0,
                           cudaGetErrorString(e));
        }
    }
    dt->dv_hook = fn, dt->dv_user = user;
    return MG_OK;
}

extern "C" mg_status cuda_dit_train_step(cuda_dit_train *dt, const dit_clip *clips, int n, float scale, float *losses) {
    if (!dt) return mg_fail(MG_ERR_ARG, "cuda_dit_train_step: not initialised");
    return pass(dt, clips, n, &scale, losses, "cuda_dit_train_step");
}

extern "C" mg_status cuda_dit_train_loss(cuda_dit_train *dt, const dit_clip *clips, int n, float *losses) {
    if (!dt) return mg_fail(MG_ERR_ARG, "cuda_dit_train_loss: not initialised");
    return pass(dt, clips, n, NULL, losses, "cuda_dit_train_loss");
}

/* Test hook: the first n floats of an fp32 activation of the last pass, laid out as the CPU's
 * dit_acts for the pass's n*T frames: "x", "mod", "pr", "xm", "h", "f", "v", "c", "t1". */
extern "C" mg_status cuda_dit_train_peek(cuda_dit_train *dt, const char *what, float *host, size_t n) {
    const float *src = !strcmp(what, "x") ? dt->x : !strcmp(what, "mod") ? dt->mod : !strcmp(what, "pr") ? dt->pr
                     : !strcmp(what, "xm") ? dt->xm : !strcmp(what, "h") ? dt->h : !strcmp(what, "f") ? dt->f
                     : !strcmp(what, "v") ? dt->v : !strcmp(what, "c") ? dt->c : !strcmp(what, "t1") ? dt->t1 : NULL;
    if (!src) return mg_fail(MG_ERR_ARG, "cuda_dit_train_peek: no activation called %s", what);
    CU_TRY(cudaStreamSynchronize(dt->st));
    CU_TRY(cudaMemcpy(host, src, n * sizeof(float), cudaMemcpyDeviceToHost));
    return MG_OK;
}

extern "C" double cuda_dit_train_flops(const cuda_dit_train *dt) { return dt ? dt->flops : 0.0; }
