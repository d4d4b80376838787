/* The autoencoder's training forward and backward on the GPU (cuda_train.h), the same
 * network and loss as src/train/tae_train.c, over a batch of B images.
 *
 * Every 3x3 conv, forward and backward, is an im2col gather into a bf16 matrix and one cuBLAS
 * GEMM with fp32 accumulation (bf16 operands, fp32 results):
 *   forward      Y (M, Co)   = col(X) (M, 9Ci) @ Wg (Co, 9Ci)^T, then bias/residual/ReLU
 *   weights      dW (Co, 9Ci) = dY^T (Co, M) @ col(X) (M, 9Ci), added into the fp32 gradient
 *   data         dX (Mi, Ci) = col'(dY) (Mi, 9Co) @ Wf (Ci, 9Co)^T: the conv with the kernel
 *                flipped and Ci/Co swapped. For the stride-2 downsample convs col' reads dY
 *                dilated (zeros between its pixels), which is exactly the transposed conv;
 *                for the upsample convs the conv's input is the nearest-2x map, whose
 *                gradient is then summed over each 2x2 block.
 * Rows are pixels of the whole batch, (b, y, x); the K columns (ky*3 + kx)*Ci + ci are padded
 * to a multiple of 8 (zero weights), and the thin maps (rgb, latent) keep 8 channels per
 * pixel (the extra ones zero) so every GEMM operand row is 16-byte aligned.
 *
 * Saved for the backward, as on the CPU: every conv input and every ReLU output, in bf16 (the
 * latent and the reconstruction in fp32). Gradients of the maps are fp32; each conv's output
 * gradient is rounded to bf16 once, as the GEMM operand. A step (forward, loss, backward) is
 * captured once per shape as a CUDA graph and replayed.
 *
 * With --adv (cuda_tae_train_set_adv) a step also runs the PatchGAN discriminator D of
 * train/adv.h between the loss and the backward (adv_pass), on the same machinery: its three
 * stride-2 convs are the encoder's downsample convs with a LeakyReLU in the epilogue and in the
 * gradient's mask (tconv.slope), its tensors in a cuda_params of their own, its generator
 * gradient added into drec by the last data-gradient GEMM (beta 1). It is in the graph too.
 *
 * Measured on an H200, B=16 at 128x128, forward+backward+AdamW: tiny 9.5 ms/step (1686
 * images/s, 21 TFLOP/s of conv GEMMs), s 15.9 ms/step (1008 images/s, 50 TFLOP/s). The
 * im2col matrices are 9x the maps they come from, so the step is bound by memory traffic;
 * an implicit-GEMM kernel made for batched training shapes is the next step for speed. The
 * library's inference conv (cu_conv3x3_igemm, one launch per image) was tried for the forward
 * and the stride-1 data gradients: 1.8x slower per step (tiny 17.0 vs 9.5 ms, s 29.9 vs
 * 15.9 ms) and, its data gradient being rounded to bf16, less accurate; removed. */
#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"
#include "cuda/cuda_train.h"

#define CUBLAS2_TRY(call)                                                                           \
    do {                                                                                            \
        cublasStatus_t cb2_e_ = (call);                                                             \
        if (cb2_e_ != CUBLAS_STATUS_SUCCESS) return cu_fail(__FILE__, __LINE__, #call, cublasGetStatusString(cb2_e_)); \
    } while (0)

#define TAE_NCONV (1 + 3 + 1 + 1 + 3 + 1 + 2 * 3 * MG_TAE_BLOCKS)
#define BIAS_BLOCKS 256 /* partial sums of the bias gradients */
#define LOSS_BLOCKS 64  /* per image */
#define CUBLAS_WS (32u << 20)

enum { MODE_PLAIN = 0, MODE_UP = 1, MODE_DIL = 2 };

static int round8(int x) { return (x + 7) / 8 * 8; }

typedef struct tconv {
    cuda_params *cp;      /* whose tensors: the model's, or D's (--adv) */
    int w_idx, b_idx;     /* tensor indices in cp's train_params (b_idx -1: no bias) */
    int ci, co, kp, kpf;  /* kp = round8(9 ci), kpf = round8(9 co) */
    float slope;          /* the activation after it, where it has one: 0 ReLU, ADV_SLOPE LeakyReLU */
    bf16 *wg;             /* (co, kp) the GEMM weights, k = (ky*3 + kx)*ci + c */
    bf16 *wf;             /* (ci, kpf) flipped for the data gradient, k = (ky*3 + kx)*co + c */
} tconv;

typedef struct prep_desc { /* one conv of the weight re-layout kernel */
    const float *w;
    bf16 *wg, *wf;
    int ci, co, kp, kpf;
} prep_desc;

typedef struct tae_graph { /* a captured pass and the shape it was captured for */
    cudaGraphExec_t exec;
    int n, H, W, gen;      /* gen: with the generator pass of --adv (see adv_pass) */
    double flops;
} tae_graph;

struct cuda_tae_train {
    cuda_params *cp;
    cudaStream_t st;
    cublasHandle_t blas;
    int B, cap_pix, c, Z; /* batch, H*W of the largest image, channels */
    tconv enc_in, enc_down[3], enc_out, enc_b[MG_TAE_BLOCKS][3];
    tconv dec_in, dec_up[3], dec_out, dec_b[MG_TAE_BLOCKS][3];
    int nconv;         /* convs re-laid out by k_prep: TAE_NCONV, + ADV_LAYERS with D */
    prep_desc *d_prep; /* (nconv) */
    /* saved maps (bf16 unless said), batch-major (b, y, x, channel) */
    float *img;        /* (P, 3) the batch, in [0, 1] */
    uint8_t *u8;       /* (P, 3) frames in and out */
    bf16 *e_in, *e_blk[MG_TAE_BLOCKS][3], *e_down[3];
    float *lat;        /* (P/64, 8) */
    bf16 *d_in, *d_blk[MG_TAE_BLOCKS][3], *d_up[3];
    float *rec;        /* (P, 8) */
    /* backward */
    float *gbuf[3];    /* (P, c) map gradients */
    float *tf;         /* (P, c) the current conv's output gradient after the ReLU mask */
    bf16 *tb;          /* (P, round8(max(c, 8))) the same in bf16: the GEMM operand */
    float *drec, *dlat; /* (P, 8), (P/64, 8) */
    float *tmp;        /* (P, c) GEMM results before the epilogue; the upsample's gradient */
    bf16 *col;         /* (P, round8(9c)) im2col */
    float *dwtmp;      /* (c, round8(9c)) one conv's weight gradient */
    float *bias_part;  /* (BIAS_BLOCKS, c) */
    float *dlap;       /* (P, 3) lap(rec) - lap(img) (the --hf-loss term), 0 on each image's border */
    float hf;          /* the Laplacian term's weight (0: L1 + L2 alone) */
    int freeze_encoder; /* --freeze-encoder: the backward ends at dec.in's weight gradient */
    double *loss_part; /* (B, LOSS_BLOCKS, 3) */
    double *loss_sum;  /* (B, 3) sums of |r|, r^2 and dlap^2 per image */
    float *d_scale;    /* (1) the step's gradient scale (a graph replays with any) */
    double *h_loss;    /* (B, 3) pinned */
    void *ws;          /* cuBLAS workspace */
    void *mem;
    size_t mem_bytes;
    double flops;      /* GEMM FLOPs of the last call (9 ci co per output pixel and pass) */
    int use_graph;     /* MG_CUDA_TAEGRAPH (default 1) */
    tae_graph graph[2]; /* [0] the loss pass, [1] the step */
    /* --adv (cuda_tae_train_set_adv): the discriminator of train/adv.h, its state in dcp */
    cuda_params *dcp;  /* NULL: no D */
    tconv disc[ADV_LAYERS];
    bf16 *d_act[3];    /* (P/4, 64), (P/16, 64), (P/64, 64) after LeakyReLU, the pass's input's */
    float *d_logit;    /* (P/64) D's logits, one per 8x8 patch, batch-major */
    float *d_dlog;     /* (P/64) their gradient */
    double *adv_sum;   /* (B, 5) per image: sums of relu(1 - D(img)), relu(1 + D(rec)), D(rec);
                        * patches with D(img) > 0, with D(rec) < 0 */
    double *h_adv;     /* (B, 5) pinned */
    float *d_advw;     /* (1) the generator weight (a graph replays with any) */
    float adv_w;       /* the generator weight of the next steps (0: D alone trains) */
    int adv_n, adv_np; /* images and patches per image of the last pass that ran D (0: none) */
};

/* ---- kernels ----------------------------------------------------------------------------- */

__global__ void k_prep(const prep_desc *d) {
    pdl_wait();
    pdl_trigger();
    prep_desc p = d[blockIdx.y];
    size_t ng = (size_t)p.co * p.kp, n = ng + (size_t)p.ci * p.kpf;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        if (e < ng) {
            int o = (int)(e / p.kp), k = (int)(e % p.kp);
            float v = 0.0f;
            if (k < 9 * p.ci) v = p.w[((size_t)o * p.ci + k % p.ci) * 9 + k / p.ci];
            p.wg[e] = f2bf(v);
        } else {
            size_t e2 = e - ng;
            int i = (int)(e2 / p.kpf), k = (int)(e2 % p.kpf);
            float v = 0.0f;
            if (k < 9 * p.co) v = p.w[((size_t)(k % p.co) * p.ci + i) * 9 + (8 - k / p.co)];
            p.wf[e2] = f2bf(v);
        }
    }
}

/* The input element (b, iy, ix, c) of the logical grid Hg x Wg a conv reads, or -1 for zero:
 * plain (stored as is), up (stored at half size, read as its nearest-2x upsample), dilated
 * (stored at half size at the even positions, zeros between). */
__device__ __forceinline__ long long src_pixel(int b, int iy, int ix, int Hg, int Wg, int mode) {
    if (iy < 0 || iy >= Hg || ix < 0 || ix >= Wg) return -1;
    if (mode == MODE_PLAIN) return ((long long)b * Hg + iy) * Wg + ix;
    if (mode == MODE_DIL && ((iy | ix) & 1)) return -1;
    int sH = Hg >> 1, sW = Wg >> 1;
    return ((long long)b * sH + (iy >> 1)) * sW + (ix >> 1);
}

/* col (M, Kp), M = n Ho Wo output pixels: 8 channels per thread (bf16 input, Ci and ld
 * multiples of 8: one 16-byte load and store) */
__global__ void k_im2col_v8(bf16 *__restrict__ col, int Kp, const bf16 *__restrict__ in, int ld, int Ci, int Hg,
                            int Wg, int Ho, int Wo, int stride, int mode, long long M) {
    pdl_wait();
    pdl_trigger();
    int chunks = Kp / 8;
    long long total = M * chunks;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long row = e / chunks;
        int k = (int)(e % chunks) * 8, tap = k / Ci, c = k % Ci;
        int hw = Ho * Wo, b = (int)(row / hw), r = (int)(row % hw), oy = r / Wo, ox = r % Wo;
        long long sp = src_pixel(b, oy * stride + tap / 3 - 1, ox * stride + tap % 3 - 1, Hg, Wg, mode);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (sp >= 0) v = *reinterpret_cast<const uint4 *>(in + sp * ld + c);
        *reinterpret_cast<uint4 *>(col + row * Kp + k) = v;
    }
}

/* the general case, one element per thread: fp32 or bf16 input, any Ci and ld */
__global__ void k_im2col_1(bf16 *__restrict__ col, int Kp, const void *__restrict__ in, int in_f32, int ld, int Ci,
                           int Hg, int Wg, int Ho, int Wo, int stride, int mode, long long M) {
    pdl_wait();
    pdl_trigger();
    long long total = M * Kp;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long row = e / Kp;
        int k = (int)(e % Kp);
        float v = 0.0f;
        if (k < 9 * Ci) {
            int tap = k / Ci, c = k % Ci;
            int hw = Ho * Wo, b = (int)(row / hw), r = (int)(row % hw), oy = r / Wo, ox = r % Wo;
            long long sp = src_pixel(b, oy * stride + tap / 3 - 1, ox * stride + tap % 3 - 1, Hg, Wg, mode);
            if (sp >= 0)
                v = in_f32 ? ((const float *)in)[sp * ld + c] : bf2f(((const bf16 *)in)[sp * ld + c]);
        }
        col[e] = f2bf(v);
    }
}

/* out (M, ld) = act(tmp (M, Co) + bias + res), channels Co..ld zero; bf16 or fp32 out; act:
 * none, or (relu) x > 0 ? x : slope x (ReLU at slope 0) */
__global__ void k_fwd_epi(void *out, int out_f32, int ld, const float *__restrict__ tmp, const float *__restrict__ bias,
                          const bf16 *__restrict__ res, int relu, float slope, int Co, long long M) {
    pdl_wait();
    pdl_trigger();
    long long total = M * ld;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long m = e / ld;
        int c = (int)(e % ld);
        float v = 0.0f;
        if (c < Co) {
            v = tmp[m * Co + c];
            if (bias) v += bias[c];
            if (res) v += bf2f(res[m * Co + c]);
            if (relu) v = v > 0.0f ? v : slope == 0.0f ? 0.0f : slope * v;
        }
        if (out_f32) ((float *)out)[e] = v;
        else ((bf16 *)out)[e] = f2bf(v);
    }
}

/* A conv's output gradient: t = dy through the activation whose output is act (dy where
 * act > 0, else slope dy: ReLU at slope 0, LeakyReLU; act NULL: none), into tb (M, ldb) bf16
 * with zero padding, tf (M, C) fp32 when given, copy (M, C) fp32 (the residual's skip path)
 * when given. */
__global__ void k_grad_prep(bf16 *__restrict__ tb, int ldb, float *__restrict__ tf, float *__restrict__ copy,
                            const float *__restrict__ dy, int ldy, const bf16 *__restrict__ act, float slope, int C,
                            long long M) {
    pdl_wait();
    pdl_trigger();
    long long total = M * ldb;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long m = e / ldb;
        int c = (int)(e % ldb);
        float v = 0.0f;
        if (c < C) {
            v = dy[m * ldy + c];
            if (act && !(bf2f(act[m * C + c]) > 0.0f)) v = slope == 0.0f ? 0.0f : slope * v;
            if (tf) tf[m * C + c] = v;
            if (copy) copy[m * C + c] = v;
        }
        tb[e] = f2bf(v);
    }
}

/* part[block][c] = sum over this block's rows of g (M, ld) channel c, C <= 256 */
__global__ void k_bias_part(float *part, const float *__restrict__ g, int ld, int C, long long M) {
    pdl_wait();
    pdl_trigger();
    __shared__ float sh[256];
    int per = blockDim.x / C, t = threadIdx.x, c = t % C, r0 = t / C;
    long long rows = (M + gridDim.x - 1) / gridDim.x, a = blockIdx.x * rows, b = a + rows < M ? a + rows : M;
    float s = 0.0f;
    if (r0 < per)
        for (long long m = a + r0; m < b; m += per) s += g[m * ld + c];
    sh[t] = r0 < per ? s : 0.0f;
    __syncthreads();
    if (t < C) {
        float tot = 0.0f;
        for (int r = 0; r < per; r++) tot += sh[r * C + t];
        part[blockIdx.x * C + t] = tot;
    }
}

__global__ void k_bias_final(float *gb, const float *part, int nparts, int C) {
    pdl_wait();
    pdl_trigger();
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s = 0.0;
    for (int i = 0; i < nparts; i++) s += part[i * C + c];
    gb[c] += (float)s;
}

/* gw (co, ci, 3, 3) += dw (co, kp), k = tap*ci + c */
__global__ void k_dw_add(float *gw, const float *__restrict__ dw, int ci, int co, int kp) {
    pdl_wait();
    pdl_trigger();
    int n = co * ci * 9;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
        int tap = e % 9, c = (e / 9) % ci, o = e / (9 * ci);
        gw[e] += dw[(size_t)o * kp + tap * ci + c];
    }
}

/* out (n, h, w, C) = the 2x2 sums of in (n, 2h, 2w, C): upsample2x_backward */
__global__ void k_up_bwd(float *out, const float *__restrict__ in, int h, int w, int C, long long total) {
    pdl_wait();
    pdl_trigger();
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int c = (int)(e % C);
        long long p = e / C;
        int x = (int)(p % w), y = (int)((p / w) % h);
        long long b = p / ((long long)w * h);
        const float *s = in + (((b * 2 * h + 2 * y) * 2 * w) + 2 * x) * C + c;
        long long rs = (long long)2 * w * C;
        out[e] = (s[0] + s[C]) + (s[rs] + s[rs + C]);
    }
}

/* per image b (blockIdx.y), the Laplacian term (tae_lap_diff): d = lap(rec) - lap(img) per
 * channel at interior pixels, 0 on the border; partial sums of d^2 into part's third slot */
__global__ void k_lap(double *part, float *dlap, const float *__restrict__ rec, const float *__restrict__ img, int H,
                      int W) {
    pdl_wait();
    pdl_trigger();
    __shared__ double s3[256];
    int b = blockIdx.y, HW = H * W, n3 = HW * 3;
    const float *im = img + (size_t)b * n3;
    const float *rc = rec + (size_t)b * HW * 8;
    double q = 0.0;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n3; e += gridDim.x * blockDim.x) {
        int p = e / 3, ch = e % 3, y = p / W, x = p % W;
        float d = 0.0f;
        if (y > 0 && x > 0 && y < H - 1 && x < W - 1) {
            float lr = 4.0f * rc[p * 8 + ch] - rc[(p - 1) * 8 + ch] - rc[(p + 1) * 8 + ch] - rc[(p - W) * 8 + ch] -
                       rc[(p + W) * 8 + ch];
            float li = 4.0f * im[e] - im[e - 3] - im[e + 3] - im[e - 3 * W] - im[e + 3 * W];
            d = lr - li;
        }
        dlap[(size_t)b * n3 + e] = d;
        q += (double)d * d;
    }
    s3[threadIdx.x] = q;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) s3[threadIdx.x] += s3[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[((size_t)b * gridDim.x + blockIdx.x) * 3 + 2] = s3[0];
}

/* per image b (blockIdx.y): partial sums of |r| and r^2, r = rec - img, in float64, and
 * drec = scale (sign r + 2 r) / n as tae_train_backward (drec NULL: the loss alone); with hf > 0
 * drec also gets scale 2 hf / n_interior lap(dlap) (tae_lap_grad; k_lap ran first), else the
 * third slot of part is 0 */
__global__ void k_loss(double *part, float *drec, const float *__restrict__ rec, const float *__restrict__ img,
                       const float *__restrict__ dlap, int H, int W, float hf, const float *scale_p) {
    pdl_wait();
    pdl_trigger();
    float scale = *scale_p;
    __shared__ double s1[256], s2[256];
    int b = blockIdx.y, HW = H * W, n3 = HW * 3;
    float k2 = hf > 0.0f ? (float)(2.0 * hf / ((double)(H - 2) * (W - 2) * 3)) : 0.0f;
    const float *dl = dlap + (size_t)b * n3;
    double l1 = 0.0, l2 = 0.0;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n3; e += gridDim.x * blockDim.x) {
        long long p = (long long)b * HW + e / 3;
        int ch = e % 3;
        float rv = rec[p * 8 + ch], iv = img[(long long)b * n3 + e];
        double r = (double)rv - iv;
        l1 += fabs(r);
        l2 += r * r;
        if (drec) {
            float rf = rv - iv;
            float sg = rf > 0.0f ? 1.0f : rf < 0.0f ? -1.0f : 0.0f;
            float g = (float)((double)scale * (sg + 2.0f * rf) / (double)n3);
            if (hf > 0.0f) {
                int q = e / 3, y = q / W, x = q % W;
                float v = 4.0f * dl[e];
                if (x > 0) v -= dl[e - 3];
                if (x < W - 1) v -= dl[e + 3];
                if (y > 0) v -= dl[e - 3 * W];
                if (y < H - 1) v -= dl[e + 3 * W];
                g += scale * k2 * v;
            }
            drec[p * 8 + ch] = g;
        }
    }
    s1[threadIdx.x] = l1, s2[threadIdx.x] = l2;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) s1[threadIdx.x] += s1[threadIdx.x + w], s2[threadIdx.x] += s2[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        part[((size_t)b * gridDim.x + blockIdx.x) * 3] = s1[0];
        part[((size_t)b * gridDim.x + blockIdx.x) * 3 + 1] = s2[0];
        if (!(hf > 0.0f)) part[((size_t)b * gridDim.x + blockIdx.x) * 3 + 2] = 0.0;
    }
}

__global__ void k_loss_final(double *out, const double *part, int nparts) {
    pdl_wait();
    pdl_trigger();
    int b = blockIdx.x;
    if (threadIdx.x != 0) return;
    double a = 0.0, q = 0.0, l = 0.0;
    for (int i = 0; i < nparts; i++) {
        const double *pp = part + ((size_t)b * nparts + i) * 3;
        a += pp[0], q += pp[1], l += pp[2];
    }
    out[b * 3] = a, out[b * 3 + 1] = q, out[b * 3 + 2] = l;
}

/* D's hinge loss (adv_image) per image b (blockIdx.x) over its np patch logits l (the image's
 * rows of logit). mode 0, the real image: sums of relu(1 - l) and of l > 0 into sum[b][0],
 * [3]; dlog = -scale/np where l < 1, else 0 (0 at the kink, as torch's relu). mode 1, the
 * reconstruction: relu(1 + l), l and l < 0 into [1], [2], [4]; dlog = scale/np where l > -1.
 * mode 2, the generator: dlog = -scale w/np everywhere. Sums in float64. */
__global__ void k_adv_hinge(double *sum, float *dlog, const float *__restrict__ logit, int np, int mode,
                            const float *scale_p, const float *w_p) {
    pdl_wait();
    pdl_trigger();
    __shared__ double sa[256], sm[256], sc[256];
    int b = blockIdx.x;
    double scale = *scale_p;
    float k = (float)(mode == 0 ? -scale / np : mode == 1 ? scale / np : -scale * (double)*w_p / np);
    const float *lg = logit + (size_t)b * np;
    float *dl = dlog + (size_t)b * np;
    double a = 0.0, m = 0.0, c = 0.0;
    for (int p = threadIdx.x; p < np; p += blockDim.x) {
        float l = lg[p];
        if (mode == 0) {
            a += l < 1.0f ? 1.0 - l : 0.0;
            c += l > 0.0f;
            dl[p] = l < 1.0f ? k : 0.0f;
        } else if (mode == 1) {
            a += l > -1.0f ? 1.0 + l : 0.0;
            m += l;
            c += l < 0.0f;
            dl[p] = l > -1.0f ? k : 0.0f;
        } else {
            dl[p] = k;
        }
    }
    if (mode == 2) return; /* the same for every thread of the block */
    sa[threadIdx.x] = a, sm[threadIdx.x] = m, sc[threadIdx.x] = c;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w)
            sa[threadIdx.x] += sa[threadIdx.x + w], sm[threadIdx.x] += sm[threadIdx.x + w], sc[threadIdx.x] += sc[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double *o = sum + (size_t)b * 5;
        if (mode == 0) o[0] = sa[0], o[3] = sc[0];
        else o[1] = sa[0], o[2] = sm[0], o[4] = sc[0];
    }
}

/* frames (n*HW, 3) u8 = rec (n*HW, 8) clamped and rounded as rgb_float_to_u8 */
__global__ void k_rec_u8(uint8_t *out, const float *__restrict__ rec, long long n3) {
    pdl_wait();
    pdl_trigger();
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n3; e += (long long)gridDim.x * blockDim.x)
        out[e] = to_u8(rec[(e / 3) * 8 + e % 3]);
}

static unsigned grid_of(long long n) {
    long long b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > 8192 ? 8192 : b);
}

/* ---- the conv passes -------------------------------------------------------------------- */

/* a conv's tensor idx in the state it belongs to (the model's or D's) */
static float *param_of(const tconv *cv, int idx) { return cv->cp->param + cv->cp->tp->offset[idx]; }
static float *grad_of(const tconv *cv, int idx) { return cv->cp->grad + cv->cp->tp->offset[idx]; }

static mg_status im2col(cuda_tae_train *tt, int Kp, const void *in, int in_f32, int ld, int Ci, int n, int Hg, int Wg,
                        int Ho, int Wo, int stride, int mode) {
    long long M = (long long)n * Ho * Wo;
    if (!in_f32 && Ci % 8 == 0 && ld % 8 == 0 && Kp == 9 * Ci)
        CU_LAUNCH(k_im2col_v8, dim3(grid_of(M * (Kp / 8))), dim3(256), 0, tt->st, tt->col, Kp, (const bf16 *)in, ld,
                  Ci, Hg, Wg, Ho, Wo, stride, mode, M);
    else
        CU_LAUNCH(k_im2col_1, dim3(grid_of(M * Kp)), dim3(256), 0, tt->st, tt->col, Kp, in, in_f32, ld, Ci, Hg, Wg, Ho,
                  Wo, stride, mode, M);
    return MG_OK;
}

/* C (M, N) row-major, ldc, = A (M, K) @ W (N, K)^T (+ beta C): bf16 operands, fp32 out */
static mg_status gemm_nt(cuda_tae_train *tt, float *C, int ldc, const bf16 *A, const bf16 *W, long long M, int N, int K,
                         float beta) {
    float alpha = 1.0f;
    CUBLAS2_TRY(cublasGemmEx(tt->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, (int)M, K, &alpha, W, CUDA_R_16BF, K, A,
                             CUDA_R_16BF, K, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return MG_OK;
}

/* out = act(conv(in) + bias [+ res]); the input is the logical grid Hg x Wg (mode as
 * src_pixel), the output Ho x Wo with ld channels per pixel */
static mg_status conv_fwd(cuda_tae_train *tt, const tconv *cv, void *out, int out_f32, int ld_out, const void *in,
                          int in_f32, int ld_in, int n, int Hg, int Wg, int stride, int mode, const bf16 *res, int relu) {
    int Ho = stride == 2 ? Hg / 2 : Hg, Wo = stride == 2 ? Wg / 2 : Wg;
    long long M = (long long)n * Ho * Wo;
    const float *bias = cv->b_idx >= 0 ? param_of(cv, cv->b_idx) : NULL;
    tt->flops += 2.0 * (double)M * cv->co * 9.0 * cv->ci;
    CU_MG(im2col(tt, cv->kp, in, in_f32, ld_in, cv->ci, n, Hg, Wg, Ho, Wo, stride, mode));
    CU_MG(gemm_nt(tt, tt->tmp, cv->co, tt->col, cv->wg, M, cv->co, cv->kp, 0.0f));
    cu_pdl_fence();
    CU_LAUNCH(k_fwd_epi, dim3(grid_of(M * ld_out)), dim3(256), 0, tt->st, out, out_f32, ld_out, (const float *)tt->tmp,
              bias, res, relu, cv->slope, cv->co, M);
    return MG_OK;
}

/* conv_bwd's weight and bias gradients (k_grad_prep has put the masked output gradient in
 * tb, and in tf when need_tf) */
static mg_status conv_bwd_w(cuda_tae_train *tt, const tconv *cv, const float *dy, int ldy, int need_tf, const void *x,
                            int x_f32, int ld_x, int n, int Hg, int Wg, int stride, int mode) {
    int Ho = stride == 2 ? Hg / 2 : Hg, Wo = stride == 2 ? Wg / 2 : Wg, ldb = round8(cv->co);
    long long M = (long long)n * Ho * Wo;
    if (cv->b_idx >= 0) {
        const float *g = need_tf ? tt->tf : dy;
        int ld = need_tf ? cv->co : ldy;
        CU_LAUNCH(k_bias_part, dim3(BIAS_BLOCKS), dim3(256), 0, tt->st, tt->bias_part, g, ld, cv->co, M);
        CU_LAUNCH(k_bias_final, dim3(cu_blocks((size_t)cv->co, 64)), dim3(64), 0, tt->st, grad_of(cv, cv->b_idx),
                  (const float *)tt->bias_part, BIAS_BLOCKS, cv->co);
    }
    /* weights: dW (co, kp) = tb^T @ col(x) */
    CU_MG(im2col(tt, cv->kp, x, x_f32, ld_x, cv->ci, n, Hg, Wg, Ho, Wo, stride, mode));
    float alpha = 1.0f, zero = 0.0f;
    CUBLAS2_TRY(cublasGemmEx(tt->blas, CUBLAS_OP_N, CUBLAS_OP_T, cv->kp, cv->co, (int)M, &alpha, tt->col, CUDA_R_16BF,
                             cv->kp, tt->tb, CUDA_R_16BF, ldb, &zero, tt->dwtmp, CUDA_R_32F, cv->kp, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
    cu_pdl_fence();
    CU_LAUNCH(k_dw_add, dim3(cu_blocks((size_t)cv->co * cv->ci * 9, 256)), dim3(256), 0, tt->st, grad_of(cv, cv->w_idx),
              (const float *)tt->dwtmp, cv->ci, cv->co, cv->kp);
    tt->flops += 2.0 * (double)M * cv->co * 9.0 * cv->ci;
    return MG_OK;
}

/* The backward of conv_fwd given dy (the gradient of its output, (M, ldy) fp32), act (its
 * activation's output, or NULL) and its input x: with want_w the weight and bias gradients are
 * added into the parameters' gradients (want_w 0: the generator pass of --adv, which must not
 * train D); dx (the input's gradient on the logical grid, (n Hg Wg, ld_dx)) gets beta dx + the
 * data gradient, unless NULL; copy (when given) gets the masked dy. */
static mg_status conv_bwd_ex(cuda_tae_train *tt, const tconv *cv, const float *dy, int ldy, const bf16 *act,
                             float *copy, const void *x, int x_f32, int ld_x, int n, int Hg, int Wg, int stride, int mode,
                             float *dx, int ld_dx, float beta, int want_w) {
    int Ho = stride == 2 ? Hg / 2 : Hg, Wo = stride == 2 ? Wg / 2 : Wg, ldb = round8(cv->co);
    long long M = (long long)n * Ho * Wo, Mi = (long long)n * Hg * Wg;
    int need_tf = want_w && act && cv->b_idx >= 0;
    CU_LAUNCH(k_grad_prep, dim3(grid_of(M * ldb)), dim3(256), 0, tt->st, tt->tb, ldb, need_tf ? tt->tf : (float *)NULL,
              copy, dy, ldy, act, cv->slope, cv->co, M);
    if (want_w) CU_MG(conv_bwd_w(tt, cv, dy, ldy, need_tf, x, x_f32, ld_x, n, Hg, Wg, stride, mode));
    if (!dx) return MG_OK;
    /* data: the flipped conv over the output gradient, on the input's grid */
    tt->flops += 2.0 * (double)M * cv->co * 9.0 * cv->ci;
    int dmode = stride == 2 ? MODE_DIL : MODE_PLAIN;
    CU_MG(im2col(tt, cv->kpf, tt->tb, 0, ldb, cv->co, n, Hg, Wg, Hg, Wg, 1, dmode));
    CU_MG(gemm_nt(tt, dx, ld_dx, tt->col, cv->wf, Mi, cv->ci, cv->kpf, beta));
    cu_pdl_fence();
    return MG_OK;
}

static mg_status conv_bwd(cuda_tae_train *tt, const tconv *cv, const float *dy, int ldy, const bf16 *act, float *copy,
                          const void *x, int x_f32, int ld_x, int n, int Hg, int Wg, int stride, int mode, float *dx,
                          int ld_dx, float beta) {
    return conv_bwd_ex(tt, cv, dy, ldy, act, copy, x, x_f32, ld_x, n, Hg, Wg, stride, mode, dx, ld_dx, beta, 1);
}

/* ---- the network ------------------------------------------------------------------------- */

static const bf16 *enc_block_in(const cuda_tae_train *tt, int i) {
    return i == 0 ? tt->e_in : (i == 1 || i == 4 || i == 7) ? tt->e_down[i / 3] : tt->e_blk[i - 1][2];
}
static const bf16 *dec_block_in(const cuda_tae_train *tt, int i) {
    return i == 0 ? tt->d_in : (i == 3 || i == 6 || i == 9) ? tt->d_up[i / 3 - 1] : tt->d_blk[i - 1][2];
}

static mg_status block_fwd(cuda_tae_train *tt, const tconv cv[3], bf16 *const act[3], const bf16 *x, int n, int h, int w) {
    int c = tt->c;
    CU_MG(conv_fwd(tt, &cv[0], act[0], 0, c, x, 0, c, n, h, w, 1, MODE_PLAIN, NULL, 1));
    CU_MG(conv_fwd(tt, &cv[1], act[1], 0, c, act[0], 0, c, n, h, w, 1, MODE_PLAIN, NULL, 1));
    return conv_fwd(tt, &cv[2], act[2], 0, c, act[1], 0, c, n, h, w, 1, MODE_PLAIN, x, 1);
}

static mg_status prep_weights(cuda_tae_train *tt) {
    CU_LAUNCH(k_prep, dim3(64, tt->nconv), dim3(256), 0, tt->st, (const prep_desc *)tt->d_prep);
    return MG_OK;
}

/* lat = enc(img) for n images of H x W already in tt->img */
static mg_status encoder_fwd(cuda_tae_train *tt, int n, int H, int W) {
    int c = tt->c, h = H, w = W;
    CU_MG(conv_fwd(tt, &tt->enc_in, tt->e_in, 0, c, tt->img, 1, 3, n, h, w, 1, MODE_PLAIN, NULL, 0));
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) {
            CU_MG(conv_fwd(tt, &tt->enc_down[i / 3], tt->e_down[i / 3], 0, c, tt->e_blk[i - 1][2], 0, c, n, h, w, 2,
                           MODE_PLAIN, NULL, 0));
            h /= 2, w /= 2;
        }
        CU_MG(block_fwd(tt, tt->enc_b[i], tt->e_blk[i], enc_block_in(tt, i), n, h, w));
    }
    return conv_fwd(tt, &tt->enc_out, tt->lat, 1, 8, tt->e_blk[MG_TAE_BLOCKS - 1][2], 0, c, n, h, w, 1, MODE_PLAIN,
                    NULL, 0);
}

/* rec = dec(lat) */
static mg_status decoder_fwd(cuda_tae_train *tt, int n, int H, int W) {
    int c = tt->c, h = H / 8, w = W / 8;
    CU_MG(conv_fwd(tt, &tt->dec_in, tt->d_in, 0, c, tt->lat, 1, 8, n, h, w, 1, MODE_PLAIN, NULL, 1));
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 3 || i == 6 || i == 9) { /* nearest 2x, then a conv without bias: the gather reads the small map */
            h *= 2, w *= 2;
            CU_MG(conv_fwd(tt, &tt->dec_up[i / 3 - 1], tt->d_up[i / 3 - 1], 0, c, tt->d_blk[i - 1][2], 0, c, n, h, w, 1,
                           MODE_UP, NULL, 0));
        }
        CU_MG(block_fwd(tt, tt->dec_b[i], tt->d_blk[i], dec_block_in(tt, i), n, h, w));
    }
    return conv_fwd(tt, &tt->dec_out, tt->rec, 1, 8, tt->d_blk[MG_TAE_BLOCKS - 1][2], 0, c, n, h, w, 1, MODE_PLAIN,
                    NULL, 0);
}

/* A Block reversed (tae_train.c's block_bwd): g is the gradient of act[2]; gin gets the
 * gradient of the block's input x (skip path + through c1); t is a temporary. */
static mg_status block_bwd(cuda_tae_train *tt, const tconv cv[3], bf16 *const act[3], const bf16 *x, const float *g,
                           float *gin, float *t, int n, int h, int w) {
    int c = tt->c;
    CU_MG(conv_bwd(tt, &cv[2], g, c, act[2], gin, act[1], 0, c, n, h, w, 1, MODE_PLAIN, t, c, 0.0f));
    CU_MG(conv_bwd(tt, &cv[1], t, c, act[1], NULL, act[0], 0, c, n, h, w, 1, MODE_PLAIN, t, c, 0.0f));
    return conv_bwd(tt, &cv[0], t, c, act[0], NULL, x, 0, c, n, h, w, 1, MODE_PLAIN, gin, c, 1.0f);
}

static mg_status backward(cuda_tae_train *tt, int n, int H, int W) {
    int c = tt->c, h = H, w = W;
    float *g = tt->gbuf[0], *gn = tt->gbuf[1], *t = tt->gbuf[2], *sw;
    CU_MG(conv_bwd(tt, &tt->dec_out, tt->drec, 8, NULL, NULL, tt->d_blk[MG_TAE_BLOCKS - 1][2], 0, c, n, h, w, 1,
                   MODE_PLAIN, g, c, 0.0f));
    for (int i = MG_TAE_BLOCKS - 1; i >= 0; i--) {
        CU_MG(block_bwd(tt, tt->dec_b[i], tt->d_blk[i], dec_block_in(tt, i), g, gn, t, n, h, w));
        sw = g, g = gn, gn = sw;
        if (i == 3 || i == 6 || i == 9) { /* d_up = up(upsample(previous block's output)) */
            int k = i / 3 - 1;
            CU_MG(conv_bwd(tt, &tt->dec_up[k], g, c, NULL, NULL, tt->d_blk[i - 1][2], 0, c, n, h, w, 1, MODE_UP,
                           tt->tmp, c, 0.0f));
            h /= 2, w /= 2;
            long long tot = (long long)n * h * w * c;
            CU_LAUNCH(k_up_bwd, dim3(grid_of(tot)), dim3(256), 0, tt->st, g, (const float *)tt->tmp, h, w, c, tot);
        }
    }
    /* d_in = relu(dec.in(lat)), then the latent's gradient into the encoder; with the encoder
     * frozen nothing below dec.in trains: its weight gradient only, no latent gradient */
    if (tt->freeze_encoder)
        return conv_bwd(tt, &tt->dec_in, g, c, tt->d_in, NULL, tt->lat, 1, 8, n, h, w, 1, MODE_PLAIN, NULL, 0, 0.0f);
    CU_MG(conv_bwd(tt, &tt->dec_in, g, c, tt->d_in, NULL, tt->lat, 1, 8, n, h, w, 1, MODE_PLAIN, tt->dlat, 8, 0.0f));
    CU_MG(conv_bwd(tt, &tt->enc_out, tt->dlat, 8, NULL, NULL, tt->e_blk[MG_TAE_BLOCKS - 1][2], 0, c, n, h, w, 1,
                   MODE_PLAIN, g, c, 0.0f));
    for (int i = MG_TAE_BLOCKS - 1; i >= 0; i--) {
        CU_MG(block_bwd(tt, tt->enc_b[i], tt->e_blk[i], enc_block_in(tt, i), g, gn, t, n, h, w));
        sw = g, g = gn, gn = sw;
        if (i == 1 || i == 4 || i == 7) { /* e_down = down(previous block's output), stride 2 */
            h *= 2, w *= 2;
            CU_MG(conv_bwd(tt, &tt->enc_down[i / 3], g, c, NULL, NULL, tt->e_blk[i - 1][2], 0, c, n, h, w, 2,
                           MODE_PLAIN, gn, c, 0.0f));
            sw = g, g = gn, gn = sw;
        }
    }
    return conv_bwd(tt, &tt->enc_in, g, c, NULL, NULL, tt->img, 1, 3, n, h, w, 1, MODE_PLAIN, NULL, 0, 0.0f);
}

/* ---- the discriminator of --adv (train/adv.h) ------------------------------------------- */

/* D's logits (d_logit, one per 8x8 patch) of n images x (fp32, ld floats per pixel: 3 for the
 * batch, 8 for rec): three stride-2 convs with LeakyReLU, then the 64 -> 1 conv */
static mg_status disc_fwd(cuda_tae_train *tt, const float *x, int ld, int n, int H, int W) {
    const int C = ADV_CH;
    CU_MG(conv_fwd(tt, &tt->disc[0], tt->d_act[0], 0, C, x, 1, ld, n, H, W, 2, MODE_PLAIN, NULL, 1));
    CU_MG(conv_fwd(tt, &tt->disc[1], tt->d_act[1], 0, C, tt->d_act[0], 0, C, n, H / 2, W / 2, 2, MODE_PLAIN, NULL, 1));
    CU_MG(conv_fwd(tt, &tt->disc[2], tt->d_act[2], 0, C, tt->d_act[1], 0, C, n, H / 4, W / 4, 2, MODE_PLAIN, NULL, 1));
    return conv_fwd(tt, &tt->disc[3], tt->d_logit, 1, 1, tt->d_act[2], 0, C, n, H / 8, W / 8, 1, MODE_PLAIN, NULL, 0);
}

/* The reverse of disc_fwd(x) from d_dlog: with want_w D's weight and bias gradients are added
 * into dcp->grad (want_w 0: the generator pass, which must not train D); dx (n H W pixels, 8
 * floats each) += the input's gradient unless NULL. The map gradients use gbuf[0..1], free
 * until the autoencoder's backward. */
static mg_status disc_bwd(cuda_tae_train *tt, const float *x, int ld, int n, int H, int W, int want_w, float *dx) {
    const int C = ADV_CH;
    float *g0 = tt->gbuf[0], *g1 = tt->gbuf[1];
    CU_MG(conv_bwd_ex(tt, &tt->disc[3], tt->d_dlog, 1, NULL, NULL, tt->d_act[2], 0, C, n, H / 8, W / 8, 1, MODE_PLAIN,
                      g0, C, 0.0f, want_w));
    CU_MG(conv_bwd_ex(tt, &tt->disc[2], g0, C, tt->d_act[2], NULL, tt->d_act[1], 0, C, n, H / 4, W / 4, 2, MODE_PLAIN,
                      g1, C, 0.0f, want_w));
    CU_MG(conv_bwd_ex(tt, &tt->disc[1], g1, C, tt->d_act[1], NULL, tt->d_act[0], 0, C, n, H / 2, W / 2, 2, MODE_PLAIN,
                      g0, C, 0.0f, want_w));
    return conv_bwd_ex(tt, &tt->disc[0], g0, C, tt->d_act[0], NULL, x, 1, ld, n, H, W, 2, MODE_PLAIN, dx, 8, 1.0f,
                       want_w);
}

/* D's part of a step, after k_loss has written drec (adv_image's three passes, batched):
 *   real: D(img), L_D's relu(1 - l), D's gradients += scale dL/dθ;
 *   fake: D(rec), relu(1 + l), the same (rec a constant for D);
 *   gen (w_gen != 0): drec += scale w_gen d(-mean D(rec))/drec through the same D, whose maps
 *   of the fake pass are still in place; its weight gradients are not formed at all.
 * All at the D of before its step: the trainer steps D (cuda_adamw_step on dcp) afterwards. */
static mg_status adv_pass(cuda_tae_train *tt, int n, int H, int W, int gen) {
    int np = (H / 8) * (W / 8);
    const float *sc = tt->d_scale, *wg = tt->d_advw, *lg = tt->d_logit;
    CU_MG(disc_fwd(tt, tt->img, 3, n, H, W));
    CU_LAUNCH(k_adv_hinge, dim3(n), dim3(256), 0, tt->st, tt->adv_sum, tt->d_dlog, lg, np, 0, sc, wg);
    CU_MG(disc_bwd(tt, tt->img, 3, n, H, W, 1, NULL));
    CU_MG(disc_fwd(tt, tt->rec, 8, n, H, W));
    CU_LAUNCH(k_adv_hinge, dim3(n), dim3(256), 0, tt->st, tt->adv_sum, tt->d_dlog, lg, np, 1, sc, wg);
    CU_MG(disc_bwd(tt, tt->rec, 8, n, H, W, 1, NULL));
    if (gen) {
        CU_LAUNCH(k_adv_hinge, dim3(n), dim3(256), 0, tt->st, tt->adv_sum, tt->d_dlog, lg, np, 2, sc, wg);
        CU_MG(disc_bwd(tt, tt->rec, 8, n, H, W, 0, tt->drec));
    }
    return MG_OK;
}

/* ---- setup ------------------------------------------------------------------------------- */

static mg_status bind(cuda_params *cp, tconv *cv, const char *name, int bias) {
    const train_params *tp = cp->tp;
    char nm[64];
    cv->cp = cp;
    cv->slope = 0.0f;
    snprintf(nm, sizeof nm, "%s.weight", name);
    cv->w_idx = train_params_find(tp, nm);
    if (cv->w_idx < 0 || tp->table[cv->w_idx].rank != 4)
        return mg_fail(MG_ERR_FORMAT, "cuda_tae_train: tensor %s missing or not a conv kernel", nm);
    cv->co = (int)tp->table[cv->w_idx].shape[0];
    cv->ci = (int)tp->table[cv->w_idx].shape[1];
    cv->kp = round8(9 * cv->ci), cv->kpf = round8(9 * cv->co);
    cv->b_idx = -1;
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", name);
        if ((cv->b_idx = train_params_find(tp, nm)) < 0) return mg_fail(MG_ERR_FORMAT, "cuda_tae_train: tensor %s missing", nm);
    }
    return MG_OK;
}

/* every conv in file order (tae_train.c's TAE_FOR_EACH_CONV) */
static int list_convs(cuda_tae_train *tt, tconv **out, const char **names, int *bias, char (*buf)[48]) {
    int k = 0;
#define ADD(cv, nm, b) (out[k] = (cv), snprintf(buf[k], 48, "%s", (nm)), names[k] = buf[k], bias[k] = (b), k++)
    ADD(&tt->enc_in, "enc.in", 1);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        char n[48];
        if (i == 1 || i == 4 || i == 7) {
            snprintf(n, sizeof n, "enc.down%d", i / 3 + 1);
            ADD(&tt->enc_down[i / 3], n, 0);
        }
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "enc.b%d.c%d", i, j + 1);
            ADD(&tt->enc_b[i][j], n, 1);
        }
    }
    ADD(&tt->enc_out, "enc.out", 1);
    ADD(&tt->dec_in, "dec.in", 1);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        char n[48];
        if (i == 3 || i == 6 || i == 9) {
            snprintf(n, sizeof n, "dec.up%d", i / 3);
            ADD(&tt->dec_up[i / 3 - 1], n, 0);
        }
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "dec.b%d.c%d", i, j + 1);
            ADD(&tt->dec_b[i][j], n, 1);
        }
    }
    ADD(&tt->dec_out, "dec.out", 1);
#undef ADD
    return k;
}

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }
static int adv_on(const cuda_tae_train *tt) { return tt->dcp != NULL; }

/* one arena: measured with base NULL, then placed */
static size_t layout(cuda_tae_train *tt, char *base, tconv **convs, int nconv) {
    size_t off = 0;
#define TAKE(ptr, bytes)                                                      \
    do {                                                                      \
        *(void **)&(ptr) = base ? (void *)(base + off) : NULL;                \
        off += ((size_t)(bytes) + 255) / 256 * 256;                           \
    } while (0)
    size_t P = (size_t)tt->B * tt->cap_pix, c = (size_t)tt->c, full = P * c;
    size_t kmax = (size_t)round8(9 * tt->c);
    /* with D (--adv) the scratch the convs share must hold D's too: its widest map (P/4, 64),
     * and the im2col of its first conv's data gradient, (P, round8(9 x 64)) */
    const size_t dk = adv_on(tt) ? (size_t)round8(9 * ADV_CH) : 0, dc = adv_on(tt) ? ADV_CH : 0;
    const size_t fullx = zmax(full, P / 4 * dc), cbias = zmax(zmax(c, 8), dc);
    const size_t colx = P * zmax(kmax, dk), dwx = zmax(c * kmax, dc * dk);
    TAKE(tt->img, P * 3 * 4);
    TAKE(tt->u8, P * 3);
    TAKE(tt->e_in, full * 2);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        int s = i == 0 ? 0 : (i - 1) / 3 + 1;
        if (i == 1 || i == 4 || i == 7) TAKE(tt->e_down[i / 3], (full >> (2 * s)) * 2);
        for (int j = 0; j < 3; j++) TAKE(tt->e_blk[i][j], (full >> (2 * s)) * 2);
    }
    TAKE(tt->lat, P / 64 * 8 * 4);
    TAKE(tt->d_in, (full >> 6) * 2);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        int s = 3 - i / 3;
        if (i == 3 || i == 6 || i == 9) TAKE(tt->d_up[i / 3 - 1], (full >> (2 * s)) * 2);
        for (int j = 0; j < 3; j++) TAKE(tt->d_blk[i][j], (full >> (2 * s)) * 2);
    }
    TAKE(tt->rec, P * 8 * 4);
    for (int k = 0; k < 3; k++) TAKE(tt->gbuf[k], fullx * 4);
    TAKE(tt->tf, fullx * 4);
    TAKE(tt->tb, zmax(P * zmax(c, 8), P / 4 * dc) * 2);
    TAKE(tt->drec, P * 8 * 4);
    TAKE(tt->dlat, P / 64 * 8 * 4);
    TAKE(tt->tmp, fullx * 4);
    TAKE(tt->col, colx * 2);
    TAKE(tt->dwtmp, dwx * 4);
    TAKE(tt->bias_part, (size_t)BIAS_BLOCKS * cbias * 4);
    TAKE(tt->dlap, P * 3 * 4);
    TAKE(tt->loss_part, (size_t)tt->B * LOSS_BLOCKS * 3 * 8);
    TAKE(tt->loss_sum, (size_t)tt->B * 3 * 8);
    TAKE(tt->d_scale, 4);
    TAKE(tt->d_prep, (size_t)nconv * sizeof(prep_desc));
    if (adv_on(tt)) {
        TAKE(tt->d_act[0], P / 4 * ADV_CH * 2);
        TAKE(tt->d_act[1], P / 16 * ADV_CH * 2);
        TAKE(tt->d_act[2], P / 64 * ADV_CH * 2);
        TAKE(tt->d_logit, P / 64 * 4);
        TAKE(tt->d_dlog, P / 64 * 4);
        TAKE(tt->adv_sum, (size_t)tt->B * 5 * 8);
        TAKE(tt->d_advw, 4);
    }
    TAKE(tt->ws, CUBLAS_WS);
    for (int k = 0; k < nconv; k++) {
        TAKE(convs[k]->wg, (size_t)convs[k]->co * convs[k]->kp * 2);
        TAKE(convs[k]->wf, (size_t)convs[k]->ci * convs[k]->kpf * 2);
    }
#undef TAKE
    return off;
}

/* every conv k_prep re-lays out: the autoencoder's (list_convs), then D's */
static int all_convs(cuda_tae_train *tt, tconv **convs) {
    const char *names[TAE_NCONV];
    int bias[TAE_NCONV];
    char buf[TAE_NCONV][48];
    int k = list_convs(tt, convs, names, bias, buf);
    if (tt->dcp)
        for (int l = 0; l < ADV_LAYERS; l++) convs[k++] = &tt->disc[l];
    return k;
}

/* The one arena for the present configuration (with D or without): measured, allocated,
 * zeroed once (the padding channels of the thin maps stay zero), the weight re-layout's
 * descriptors uploaded, the cuBLAS workspace set. */
static mg_status place(cuda_tae_train *tt) {
    tconv *convs[TAE_NCONV + ADV_LAYERS];
    int nconv = all_convs(tt, convs);
    tt->nconv = nconv;
    tt->mem_bytes = layout(tt, NULL, convs, nconv);
    if (cudaMalloc(&tt->mem, tt->mem_bytes) != cudaSuccess) {
        cudaGetLastError();
        tt->mem = NULL;
        return mg_fail(MG_ERR_NOMEM, "cuda_tae_train: cannot allocate %.1f MiB on the device for a batch of %d images of "
                       "%d pixels%s", tt->mem_bytes / 1048576.0, tt->B, tt->cap_pix, tt->dcp ? " and the discriminator" : "");
    }
    layout(tt, (char *)tt->mem, convs, nconv);
    CU_TRY(cudaMemsetAsync(tt->mem, 0, tt->mem_bytes, tt->st));
    prep_desc pd[TAE_NCONV + ADV_LAYERS];
    for (int k = 0; k < nconv; k++)
        pd[k] = (prep_desc){param_of(convs[k], convs[k]->w_idx), convs[k]->wg, convs[k]->wf, convs[k]->ci, convs[k]->co,
                            convs[k]->kp, convs[k]->kpf};
    CU_TRY(cudaMemcpyAsync(tt->d_prep, pd, (size_t)nconv * sizeof *pd, cudaMemcpyHostToDevice, tt->st));
    cu_pdl_fence();
    CUBLAS2_TRY(cublasSetWorkspace(tt->blas, tt->ws, CUBLAS_WS));
    CU_TRY(cudaStreamSynchronize(tt->st)); /* pd is on this stack */
    return MG_OK;
}

extern "C" mg_status cuda_tae_train_new(cuda_tae_train **out, cuda_params *cp, int B, int H, int W) {
    *out = NULL;
    if (!cp || !cp->impl) return mg_fail(MG_ERR_ARG, "cuda_tae_train_new: the device training state is not initialised");
    if (B < 1 || H < 8 || W < 8 || H % 8 || W % 8)
        return mg_fail(MG_ERR_SHAPE, "cuda_tae_train_new: batch %d of %dx%d: expected B >= 1 and sizes that are "
                       "multiples of 8", B, W, H);
    const mg_config *cf = &cp->tp->cfg;
    if (cf->tae_ch % 8 || cf->tae_ch > 256 || cf->z_ch > 8)
        return mg_fail(MG_ERR_UNSUPPORTED, "cuda_tae_train: config %s (tae_ch %d, z_ch %d): needs tae_ch a multiple "
                       "of 8 up to 256 and z_ch <= 8", cf->name, cf->tae_ch, cf->z_ch);
    cuda_tae_train *tt = (cuda_tae_train *)calloc(1, sizeof *tt);
    if (!tt) return mg_fail(MG_ERR_NOMEM, "out of memory for cuda_tae_train");
    tt->cp = cp;
    tt->st = (cudaStream_t)cuda_params_stream(cp);
    tt->B = B, tt->cap_pix = H * W, tt->c = cf->tae_ch, tt->Z = cf->z_ch;
    tt->use_graph = cu_opt("TAEGRAPH", 1);
    tconv *convs[TAE_NCONV];
    const char *names[TAE_NCONV];
    int bias[TAE_NCONV];
    char buf[TAE_NCONV][48];
    int nconv = list_convs(tt, convs, names, bias, buf);
    mg_status s = MG_OK;
    for (int k = 0; k < nconv && s == MG_OK; k++) s = bind(cp, convs[k], names[k], bias[k]);
    if (s != MG_OK) {
        free(tt);
        return s;
    }
    *out = tt;
#define NEW_TRY(call)                                                               \
    do {                                                                            \
        if ((s = (call)) != MG_OK) {                                                \
            cuda_tae_train_free(tt);                                                \
            *out = NULL;                                                            \
            return s;                                                               \
        }                                                                           \
    } while (0)
    cudaError_t e = cudaMallocHost(&tt->h_loss, (size_t)B * 3 * sizeof(double));
    if (e == cudaSuccess) e = cudaMallocHost(&tt->h_adv, (size_t)B * 5 * sizeof(double));
    NEW_TRY(e == cudaSuccess ? MG_OK : cu_fail(__FILE__, __LINE__, "cudaMallocHost", cudaGetErrorString(e)));
    cublasStatus_t bs = cublasCreate(&tt->blas);
    NEW_TRY(bs == CUBLAS_STATUS_SUCCESS ? MG_OK : cu_fail(__FILE__, __LINE__, "cublasCreate", cublasGetStatusString(bs)));
    bs = cublasSetStream(tt->blas, tt->st);
    NEW_TRY(bs == CUBLAS_STATUS_SUCCESS ? MG_OK : cu_fail(__FILE__, __LINE__, "cublasSetStream", cublasGetStatusString(bs)));
    NEW_TRY(place(tt));
#undef NEW_TRY
    return MG_OK;
}

extern "C" void cuda_tae_train_free(cuda_tae_train *tt) {
    if (!tt) return;
    if (tt->st) cudaStreamSynchronize(tt->st);
    for (int k = 0; k < 2; k++)
        if (tt->graph[k].exec) cudaGraphExecDestroy(tt->graph[k].exec);
    if (tt->blas) cublasDestroy(tt->blas);
    if (tt->h_loss) cudaFreeHost(tt->h_loss);
    if (tt->h_adv) cudaFreeHost(tt->h_adv);
    cudaFree(tt->mem);
    free(tt);
}

static void drop_graphs(cuda_tae_train *tt) {
    for (int k = 0; k < 2; k++)
        if (tt->graph[k].exec) cudaGraphExecDestroy(tt->graph[k].exec), tt->graph[k].exec = NULL;
}

extern "C" mg_status cuda_tae_train_set_adv(cuda_tae_train *tt, cuda_params *dcp, float w_gen) {
    if (!tt) return mg_fail(MG_ERR_ARG, "cuda_tae_train_set_adv: no autoencoder training state");
    if (!(w_gen >= 0.0f && w_gen < 1e30f)) return mg_fail(MG_ERR_ARG, "cuda_tae_train_set_adv: generator weight %g", w_gen);
    tt->adv_w = dcp ? w_gen : 0.0f;
    if (dcp == tt->dcp) return MG_OK; /* the weight is read from d_advw: no new capture */
    if (dcp && !dcp->impl)
        return mg_fail(MG_ERR_ARG, "cuda_tae_train_set_adv: the discriminator's device state is not initialised");
    tconv disc[ADV_LAYERS];
    memset(disc, 0, sizeof disc);
    for (int l = 0; dcp && l < ADV_LAYERS; l++) {
        char nm[32];
        snprintf(nm, sizeof nm, "disc.c%d", l);
        MG_TRY(bind(dcp, &disc[l], nm, 1));
        int ci = l == 0 ? 3 : ADV_CH, co = l == ADV_LAYERS - 1 ? 1 : ADV_CH;
        if (disc[l].ci != ci || disc[l].co != co)
            return mg_fail(MG_ERR_FORMAT, "cuda_tae_train_set_adv: %s.weight is %d -> %d channels, expected %d -> %d "
                           "(train/adv.h)", nm, disc[l].ci, disc[l].co, ci, co);
        disc[l].slope = l < ADV_LAYERS - 1 ? ADV_SLOPE : 0.0f;
    }
    /* a new arena (the shared scratch grows to D's needs) and new captures */
    CU_TRY(cudaStreamSynchronize(tt->st));
    drop_graphs(tt);
    cudaFree(tt->mem);
    tt->mem = NULL;
    tt->dcp = dcp;
    memcpy(tt->disc, disc, sizeof disc);
    tt->adv_n = 0;
    mg_status s = place(tt);
    if (s != MG_OK) tt->dcp = NULL; /* tt->mem NULL: only cuda_tae_train_free is safe now */
    return s;
}

extern "C" mg_status cuda_tae_train_adv_stats(const cuda_tae_train *tt, double *ld, adv_stats *st) {
    if (!tt || !tt->dcp) return mg_fail(MG_ERR_ARG, "cuda_tae_train_adv_stats: no discriminator attached");
    double np = (double)tt->adv_np;
    for (int b = 0; b < tt->adv_n; b++) {
        const double *h = tt->h_adv + 5 * b;
        double l = (h[0] + h[1]) / np;
        if (ld) ld[b] = l;
        if (st) {
            st->ld += l;
            st->g += -h[2] / np;
            st->correct += (long)(h[3] + h[4]);
            st->total += 2 * (long)tt->adv_np;
        }
    }
    return MG_OK;
}

extern "C" void cuda_tae_train_set_hf(cuda_tae_train *tt, float hf) {
    if (!tt || tt->hf == hf) return;
    tt->hf = hf;
    drop_graphs(tt); /* the captured passes launched with the old weight */
}

extern "C" void cuda_tae_train_set_freeze_encoder(cuda_tae_train *tt, int on) {
    if (!tt || tt->freeze_encoder == !!on) return;
    tt->freeze_encoder = !!on;
    drop_graphs(tt); /* the captured backward went on into the encoder, or stopped */
}

extern "C" double cuda_tae_train_flops(const cuda_tae_train *tt) { return tt ? tt->flops : 0.0; }
extern "C" size_t cuda_tae_train_bytes(const cuda_tae_train *tt) { return tt ? tt->mem_bytes : 0; }

static mg_status check_call(const cuda_tae_train *tt, int n, int H, int W, const char *fn) {
    if (!tt) return mg_fail(MG_ERR_ARG, "%s: no autoencoder training state", fn);
    if (n < 1 || n > tt->B)
        return mg_fail(MG_ERR_ARG, "%s: batch of %d images: expected 1..%d (the size it was made for)", fn, n, tt->B);
    if (H < 8 || W < 8 || H % 8 || W % 8 || (long long)H * W > tt->cap_pix)
        return mg_fail(MG_ERR_SHAPE, "%s: image %dx%d: expected multiples of 8 within the %d pixels it was sized for",
                       fn, W, H, tt->cap_pix);
    return MG_OK;
}

/* forward on img (host), the losses to the host; with drec the gradient of the output too */
/* The device work of a step (want_grad) or of a loss pass, after the batch is in tt->img; a
 * step with D attached runs D's part (adv_pass, with the generator pass when gen) between the
 * loss and the autoencoder's backward, which then carries its generator gradient. */
static mg_status pass_body(cuda_tae_train *tt, int n, int H, int W, int want_grad, int gen) {
    CU_MG(prep_weights(tt));
    CU_MG(encoder_fwd(tt, n, H, W));
    CU_MG(decoder_fwd(tt, n, H, W));
    if (tt->hf > 0.0f)
        CU_LAUNCH(k_lap, dim3(LOSS_BLOCKS, n), dim3(256), 0, tt->st, tt->loss_part, tt->dlap, (const float *)tt->rec,
                  (const float *)tt->img, H, W);
    CU_LAUNCH(k_loss, dim3(LOSS_BLOCKS, n), dim3(256), 0, tt->st, tt->loss_part, want_grad ? tt->drec : (float *)NULL,
              (const float *)tt->rec, (const float *)tt->img, (const float *)tt->dlap, H, W, tt->hf,
              (const float *)tt->d_scale);
    CU_LAUNCH(k_loss_final, dim3(n), dim3(32), 0, tt->st, tt->loss_sum, (const double *)tt->loss_part, LOSS_BLOCKS);
    if (want_grad && tt->dcp) CU_MG(adv_pass(tt, n, H, W, gen));
    if (want_grad) CU_MG(backward(tt, n, H, W));
    return MG_OK;
}

/* A step is ~800 launches (70 convs, each an im2col, a GEMM and an epilogue forward and up to
 * eight kernels backward): small images are launch-bound, so the pass is captured once per
 * shape as a CUDA graph and replayed (MG_CUDA_TAEGRAPH=0: plain launches). The graph reads
 * the weights and the batch from the same device buffers every time, so a replay computes
 * what the launches compute. */
static mg_status run_pass(cuda_tae_train *tt, int n, int H, int W, int want_grad) {
    tae_graph *g = &tt->graph[want_grad];
    /* D's part is captured with the rest (D's weights are re-laid out from dcp->param inside
     * the pass, the scale and the generator weight read from the device); whether the
     * generator pass runs is part of the shape: --adv-start recaptures once */
    int gen = want_grad && tt->dcp && tt->adv_w != 0.0f;
    tt->adv_n = want_grad && tt->dcp ? n : 0, tt->adv_np = (H / 8) * (W / 8);
    if (!tt->use_graph) {
        tt->flops = 0;
        return pass_body(tt, n, H, W, want_grad, gen);
    }
    if (!g->exec || g->n != n || g->H != H || g->W != W || g->gen != gen) {
        if (g->exec) cudaGraphExecDestroy(g->exec);
        g->exec = NULL;
        cudaGraph_t graph = NULL;
        cu_pdl_fence();
        CU_TRY(cudaStreamBeginCapture(tt->st, cudaStreamCaptureModeThreadLocal));
        tt->flops = 0;
        mg_status s = pass_body(tt, n, H, W, want_grad, gen);
        cudaError_t e = cudaStreamEndCapture(tt->st, &graph);
        if (s != MG_OK) {
            if (graph) cudaGraphDestroy(graph);
            return s;
        }
        CU_TRY(e);
        e = cudaGraphInstantiate(&g->exec, graph, 0);
        cudaGraphDestroy(graph);
        CU_TRY(e);
        g->n = n, g->H = H, g->W = W, g->gen = gen, g->flops = tt->flops;
    }
    CU_TRY(cudaGraphLaunch(g->exec, tt->st));
    cu_pdl_fence();
    tt->flops = g->flops;
    return MG_OK;
}

static mg_status read_losses(cuda_tae_train *tt, int n, int H, int W, float *losses) {
    CU_TRY(cudaMemcpyAsync(tt->h_loss, tt->loss_sum, (size_t)n * 3 * sizeof(double), cudaMemcpyDeviceToHost, tt->st));
    if (tt->adv_n)
        CU_TRY(cudaMemcpyAsync(tt->h_adv, tt->adv_sum, (size_t)tt->adv_n * 5 * sizeof(double), cudaMemcpyDeviceToHost,
                               tt->st));
    cu_pdl_fence();
    CU_TRY(cudaStreamSynchronize(tt->st));
    double n3 = (double)H * W * 3, ni = (double)(H - 2) * (W - 2) * 3;
    for (int b = 0; b < n; b++)
        losses[b] = (float)((tt->h_loss[3 * b] + tt->h_loss[3 * b + 1]) / n3 + tt->hf * tt->h_loss[3 * b + 2] / ni);
    return MG_OK;
}

/* the pass's inputs onto the stream: the images, the gradient scale and (--adv) D's weight W */
static mg_status stage_inputs(cuda_tae_train *tt, const float *img, int n, int H, int W, float scale) {
    CU_TRY(cudaMemcpyAsync(tt->img, img, (size_t)n * H * W * 3 * sizeof(float), cudaMemcpyHostToDevice, tt->st));
    CU_TRY(cudaMemcpyAsync(tt->d_scale, &scale, sizeof scale, cudaMemcpyHostToDevice, tt->st)); /* staged: may return at once */
    if (tt->dcp) CU_TRY(cudaMemcpyAsync(tt->d_advw, &tt->adv_w, sizeof tt->adv_w, cudaMemcpyHostToDevice, tt->st));
    return MG_OK;
}

static mg_status step_or_loss(cuda_tae_train *tt, const float *img, int n, int H, int W, float scale, int want_grad,
                              float *losses) {
    CU_MG(stage_inputs(tt, img, n, H, W, scale));
    cu_pdl_fence();
    CU_MG(run_pass(tt, n, H, W, want_grad));
    return read_losses(tt, n, H, W, losses);
}

extern "C" mg_status cuda_tae_train_step(cuda_tae_train *tt, const float *img, int n, int H, int W, float scale,
                                         float *losses) {
    CU_MG(check_call(tt, n, H, W, "cuda_tae_train_step"));
    return step_or_loss(tt, img, n, H, W, scale, 1, losses);
}

extern "C" mg_status cuda_tae_train_loss(cuda_tae_train *tt, const float *img, int n, int H, int W, float *losses) {
    CU_MG(check_call(tt, n, H, W, "cuda_tae_train_loss"));
    return step_or_loss(tt, img, n, H, W, 1.0f, 0, losses);
}

extern "C" mg_status cuda_tae_train_adv_pass(cuda_tae_train *tt, const float *img, const float *rec, int n, int H,
                                             int W, float scale, float *drec) {
    CU_MG(check_call(tt, n, H, W, "cuda_tae_train_adv_pass"));
    if (!tt->dcp) return mg_fail(MG_ERR_ARG, "cuda_tae_train_adv_pass: no discriminator attached");
    size_t P = (size_t)n * H * W;
    CU_MG(stage_inputs(tt, img, n, H, W, scale));
    CU_TRY(cudaMemcpy2DAsync(tt->rec, 8 * sizeof(float), rec, 3 * sizeof(float), 3 * sizeof(float), P,
                             cudaMemcpyHostToDevice, tt->st));
    CU_TRY(cudaMemsetAsync(tt->drec, 0, P * 8 * sizeof(float), tt->st));
    cu_pdl_fence();
    tt->flops = 0;
    tt->adv_n = n, tt->adv_np = (H / 8) * (W / 8);
    CU_MG(prep_weights(tt));
    CU_MG(adv_pass(tt, n, H, W, tt->adv_w != 0.0f));
    CU_TRY(cudaMemcpy2DAsync(drec, 3 * sizeof(float), tt->drec, 8 * sizeof(float), 3 * sizeof(float), P,
                             cudaMemcpyDeviceToHost, tt->st));
    CU_TRY(cudaMemcpyAsync(tt->h_adv, tt->adv_sum, (size_t)n * 5 * sizeof(double), cudaMemcpyDeviceToHost, tt->st));
    cu_pdl_fence();
    CU_TRY(cudaStreamSynchronize(tt->st));
    return MG_OK;
}

extern "C" mg_status cuda_tae_encode(cuda_tae_train *tt, const uint8_t *frames, int n, int H, int W, float *lat) {
    if (!tt) return mg_fail(MG_ERR_ARG, "cuda_tae_encode: no autoencoder state");
    CU_MG(check_call(tt, 1, H, W, "cuda_tae_encode"));
    tt->flops = 0;
    CU_MG(prep_weights(tt));
    size_t hw = (size_t)H * W, lhw = hw / 64;
    for (int b0 = 0; b0 < n; b0 += tt->B) { /* any n: chunks of the batch size */
        int k = n - b0 < tt->B ? n - b0 : tt->B;
        CU_TRY(cudaMemcpyAsync(tt->u8, frames + b0 * hw * 3, k * hw * 3, cudaMemcpyHostToDevice, tt->st));
        cu_pdl_fence();
        CU_MG(cu_u8_to_float(tt->img, tt->u8, k * hw * 3, tt->st));
        CU_MG(encoder_fwd(tt, k, H, W));
        CU_TRY(cudaMemcpy2DAsync(lat + b0 * lhw * tt->Z, (size_t)tt->Z * 4, tt->lat, 8 * 4, (size_t)tt->Z * 4, k * lhw,
                                 cudaMemcpyDeviceToHost, tt->st));
        cu_pdl_fence();
        CU_TRY(cudaStreamSynchronize(tt->st));
    }
    return MG_OK;
}

extern "C" mg_status cuda_tae_decode(cuda_tae_train *tt, const float *lat, int n, int H, int W, uint8_t *frames) {
    if (!tt) return mg_fail(MG_ERR_ARG, "cuda_tae_decode: no autoencoder state");
    CU_MG(check_call(tt, 1, H, W, "cuda_tae_decode"));
    tt->flops = 0;
    CU_MG(prep_weights(tt));
    size_t hw = (size_t)H * W, lhw = hw / 64;
    for (int b0 = 0; b0 < n; b0 += tt->B) {
        int k = n - b0 < tt->B ? n - b0 : tt->B;
        CU_TRY(cudaMemcpy2DAsync(tt->lat, 8 * 4, lat + b0 * lhw * tt->Z, (size_t)tt->Z * 4, (size_t)tt->Z * 4, k * lhw,
                                 cudaMemcpyHostToDevice, tt->st));
        cu_pdl_fence();
        CU_MG(decoder_fwd(tt, k, H, W));
        CU_LAUNCH(k_rec_u8, dim3(grid_of((long long)k * hw * 3)), dim3(256), 0, tt->st, tt->u8, (const float *)tt->rec,
                  (long long)k * hw * 3);
        CU_TRY(cudaMemcpyAsync(frames + b0 * hw * 3, tt->u8, k * hw * 3, cudaMemcpyDeviceToHost, tt->st));
        cu_pdl_fence();
        CU_TRY(cudaStreamSynchronize(tt->st));
    }
    return MG_OK;
}
