/* The CUDA frame step, top to bottom as in src/model/stream.c: take the frame, encode, denoise
 * N steps against the KV ring, refresh the ring, decode, hand the frame back. Same math as
 * the CPU (dit.c, tae.c), with bf16 storage and fp32 accumulation; the residual stream and
 * the latents stay fp32.
 *
 * Everything is allocated once in cuda_stream_new (one device arena, laid out by the same
 * function run twice: measure, then assign), the weights are converted to bf16 once, and the
 * GEMMs are planned once. The step is captured as a CUDA graph the first time it runs (one
 * per dream flag) and replayed afterwards. What changes from frame to frame is one device
 * block the graph reads: the input frame, the two noise draws, and a small parameter block
 * (ring slot, visible slots, the RoPE time angles computed on the host in float64 by
 * rope_tables). So the kernels read the per-frame values on the device, and the captured
 * launches stay valid for every frame. Frames are pipelined (cuda_stream_submit / collect, at
 * most 2 in flight): each frame's block is uploaded from its own pinned buffer into its own
 * staging block on a copy stream while the frame before computes, copied device-to-device into
 * the graph's block just before the graph, and its output is staged on the device and
 * downloaded on a second copy stream while the next frame computes; events order the three.
 *
 * The ring on the GPU keeps the same frames visible as kv_ring but not in the same slots:
 * frame f writes slot f mod (K+1) and sees slots [0, min(f, K)], so no slot is ever copied
 * (the CPU ring writes a spare slot and copies it over the oldest on push). Attention does
 * not depend on the order of the keys, only on which are visible.
 *
 * The conditioning (timestep embedding, t1, t2, prompt row) depends only on (sigma, prompt),
 * so it is computed on the host with the CPU ops for every pass of the step, and the adaLN
 * modulation of every layer and pass is one kernel over the concatenated ada weights, run
 * when the prompt changes (outside the graph), not every frame. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"
#include "cuda/cuda_stream.h"

extern "C" {
#include "core/timing.h"
#include "model/forward.h"
#include "ops/ops.h"
}

#define MAX_PASS_ROWS 129 /* conditioning rows: 64 steps x 2 (guidance) + refresh */
#define MAX_EVENTS 72

typedef struct cu_conv {
    bf16_t *w; /* (co, 9*ci) */
    float *b;  /* (co) or NULL */
    int ci, co;
} cu_conv;

typedef struct cu_tae {
    cu_conv enc_in, enc_down[3], enc_out, enc_b[MG_TAE_BLOCKS][3];
    cu_conv dec_in, dec_up[3], dec_out, dec_b[MG_TAE_BLOCKS][3];
} cu_tae;

typedef struct cu_layer {
    bf16_t *qkv_w, *qkv_b;  /* (3d, d), (3d) bf16: the GEMM writes bf16 */
    bf16_t *proj_w;         /* (d, d) */
    float *proj_b;          /* (d) fp32: the GEMM writes fp32 */
    bf16_t *fc1_w, *fc1_b;  /* (4d, d), (4d) */
    bf16_t *fc2_w;          /* (d, 4d) */
    float *fc2_b;           /* (d) */
    /* MG_CUDA_FP8=1: e4m3 copies of the four linears' weights and their scales (one per tensor:
     * cuBLASLt has no per-channel e4m3 scaling on sm_90), bf16 copies of the fp32 biases
     * (cuBLASLt's e4m3 kernels with fp32 output take a bf16 bias); NULL otherwise */
    fp8_t *qkv_q, *proj_q, *fc1_q, *fc2_q;
    float *qkv_s, *proj_s, *fc1_s, *fc2_s;
    bf16_t *proj_b16, *fc2_b16;
} cu_layer;

/* One model's weights on one GPU (see cuda_stream.h). The registry below finds it by (m, gpu). */
struct cuda_weights {
    const mg_model *m;
    int gpu, refs;
    int d, zpp, L, c;
    int fp8;          /* the e4m3 copies are made (MG_CUDA_FP8) */
    char *dev;        /* one device allocation, laid out by weights_layout */
    size_t bytes;
    cu_tae tae;
    bf16_t *in_w, *ada_w, *fout_w; /* (d, 2*zpp), (lmod, d): every layer's ada then the final's, (zpp, d) */
    float *in_b, *ada_b, *fout_b;
    cu_layer *layers; /* host array (L) of device pointers */
    cuda_weights *next;
};

/* One DiT pass's working set. The frame's passes use pe[0] on st; the deferred KV refresh (see
 * step_body_inner) runs on st3 beside the next frame's encode and first step, so it has its own
 * activations, its own cuBLASLt workspace (ctx3) and the previous frame's ring parameters. */
typedef struct pass_env {
    cudaStream_t st;
    cu_ctx *c;
    const cu_frame_params *p; /* ring slot, visible slots, RoPE time angles of the pass's frame */
    const float *cond;        /* what patchify reads as the condition (NULL: zeros, dream) */
    bf16_t *tok, *y, *qkv, *att, *hbuf;
    float *x, *y32, *att_scratch;
    /* per layer l: rec[l] recorded once the pass has read the ring (its attention) and written
     * its k,v; the pass waits on wait[l] before it writes the ring. NULL: none. */
    cudaEvent_t *rec, *wait;
} pass_env;

struct cuda_stream {
    const mg_model *m;
    cuda_weights *wts; /* shared, one reference held */
    int gpu;           /* the device everything of this stream lives on (-1: not yet known) */
    cuda_stream_cfg cfg;
    int H, W, lh, lw, N, d, L, heads, dh, Z, zpp, c, K, passes, rows, guided, lmod, splits;
    size_t lat;
    cu_ctx *ctx;
    cudaStream_t st, st2;  /* st2: the decode, concurrent with the KV refresh */
    cudaEvent_t ev_fork, ev_join;
    /* the deferred refresh (MG_CUDA_DEFER, default on where it applies): frame t's KV refresh
     * runs at the start of frame t+1 on st3, beside t+1's encode; t+1's first DiT pass waits
     * for it layer by layer (ev_lay). pending: frame t's refresh is still to run. */
    int defer, pending;
    long long deferred_run; /* frames whose step ran the frame before's refresh (cuda_stream_deferred) */
    cudaStream_t st3;
    cu_ctx *ctx3;
    cudaEvent_t ev_fork3, ev_join3, *ev_lay;
    float *d_cond_prev;             /* frame t's condition (zeros for a dream frame) */
    cu_frame_params *d_params_prev; /* frame t's ring parameters, in the frame block */
    cu_frame_params last_params;    /* host copy of the last submitted frame's */
    pass_env pe[2];
    int mode;
    /* the shared weights' device pointers, copied from wts (not owned) */
    cu_tae tae;
    bf16_t *in_w, *ada_w, *fout_w;
    float *in_b, *ada_b, *fout_b;
    const cu_layer *layers;
    /* device arena: the stream's own buffers */
    char *dev;
    size_t dev_bytes;
    uint8_t *d_in, *d_out;
    bf16_t *fm[3];    /* TAE feature maps (H, W, c) */
    float *d_noise;   /* z (lat) then ctx noise (lat): one upload; z is denoised in place */
    float *d_cond, *d_zc;
    const float *cond_in; /* what patchify reads as the condition: d_cond, or NULL (dream) */
    float *out_c, *out_u;
    bf16_t *ring_k, *ring_v; /* (L, K+1, N, d) */
    float *rope_cos, *rope_sin; /* (N, dh/2) spatial tables */
    float *mod;       /* (rows, lmod): every pass's modulation, all layers + final */
    float *d_sc;      /* (rows, d) silu(c) per pass */
    cu_frame_params *d_params;
    /* pinned host */
    float *h_sc;
    /* frames in flight (cuda_stream_submit / collect): what the graph reads per frame is one
     * device block, d_frame = d_params | d_noise | d_in; each of two buffer sets b has a pinned
     * copy of it (h_frame[b]), a device staging copy (d_stage[b]) it is uploaded into on st_up
     * while the previous frame computes, and the output's device staging and pinned copies
     * (d_ostage[b], h_out[b]) it is downloaded from on st_down while the next frame computes */
    char *d_frame, *h_frame[2], *d_stage[2];
    uint8_t *d_ostage[2], *h_out[2];
    size_t frame_bytes, off_noise, off_in;
    cudaStream_t st_up, st_down;
    cudaEvent_t ev_up[2], ev_done[2], ev_down[2], ev_t0[2], ev_t1[2], ev_sc;
    int q_head, q_n;  /* the oldest frame's buffer set, frames in flight (0..2) */
    double t_sub[2];  /* when each frame in flight was submitted (host ms) */
    /* plans: cuBLASLt (the general path), or the fused DiT kernels (dit.cu, d <= 768) */
    cu_gemm *g_in, *g_qkv, *g_proj, *g_fc1, *g_fc2, *g_out;
    cu_dgemm dg_in, dg_qkv, dg_proj, dg_fc1, dg_fc2, dg_out;
    int fused, pdl; /* the fused DiT path; programmatic dependent launch in the frame step */
    int ropeatt;    /* MG_CUDA_ROPEATT=1: RoPE folded into attention where it can be (rope_attention) */
    /* MG_CUDA_FP8=1 (dit_pass_fp8): the four linears' e4m3 plans, the quantised activations
     * (N x up to 4d), their scale and the quantiser's scratch, the layernorms' scales (2L, per
     * pass), fc1's output amax (when cuBLASLt computes it: fc1_amax) */
    int fp8, fc1_amax;
    cu_gemm *g8_qkv, *g8_proj, *g8_fc1, *g8_fc2;
    fp8_t *q8;
    float *q8s, *q8scr, *lnsc, *amax;
    /* graphs, one per (dream flag, deferred refresh at the start) */
    cudaGraphExec_t exec[2][2];
    int have_exec[2][2];
    /* state */
    long long frame;
    int cur_prompt;   /* prompt the modulation was computed for (-1: none yet) */
    float dt[64], sig[65];
    cudaEvent_t ev[MAX_EVENTS];
    mg_step_timing timing;
    double device_ms, flops;
};

/* ---- layout ---------------------------------------------------------------------------- */

static void *take(char *base, size_t *off, size_t bytes) {
    void *p = base ? base + *off : NULL;
    *off += (bytes + 255) & ~(size_t)255;
    return p;
}

static void conv_layout(cu_conv *cv, const conv_w *src, char *base, size_t *off) {
    cv->ci = src->ci, cv->co = src->co;
    cv->w = (bf16_t *)take(base, off, (size_t)9 * src->ci * src->co * 2);
    cv->b = src->b ? (float *)take(base, off, (size_t)src->co * 4) : NULL;
}

/* The weights' arena: the same function measures (base NULL) and assigns. */
static size_t weights_layout(cuda_weights *w, char *base) {
    const mg_model *m = w->m;
    const mg_config *mc = &m->cfg;
    size_t off = 0, d = (size_t)mc->d, zpp = (size_t)mc->z_ch * mc->patch * mc->patch;
    size_t lmod = (size_t)(mc->layers * 6 + 2) * d;
    const tae_weights *T = &m->tae;
    cu_tae *G = &w->tae;
    conv_layout(&G->enc_in, &T->enc_in, base, &off);
    conv_layout(&G->enc_out, &T->enc_out, base, &off);
    conv_layout(&G->dec_in, &T->dec_in, base, &off);
    conv_layout(&G->dec_out, &T->dec_out, base, &off);
    for (int i = 0; i < 3; i++) {
        conv_layout(&G->enc_down[i], &T->enc_down[i], base, &off);
        conv_layout(&G->dec_up[i], &T->dec_up[i], base, &off);
    }
    for (int i = 0; i < MG_TAE_BLOCKS; i++)
        for (int j = 0; j < 3; j++) {
            conv_layout(&G->enc_b[i][j], &T->enc_b[i][j], base, &off);
            conv_layout(&G->dec_b[i][j], &T->dec_b[i][j], base, &off);
        }
    w->in_w = (bf16_t *)take(base, &off, d * 2 * zpp * 2);
    w->in_b = (float *)take(base, &off, d * 4);
    w->ada_w = (bf16_t *)take(base, &off, lmod * d * 2);
    w->ada_b = (float *)take(base, &off, lmod * 4);
    w->fout_w = (bf16_t *)take(base, &off, zpp * d * 2);
    w->fout_b = (float *)take(base, &off, zpp * 4);
    for (int l = 0; l < mc->layers; l++) {
        cu_layer *Ly = &w->layers[l];
        Ly->qkv_w = (bf16_t *)take(base, &off, 3 * d * d * 2);
        Ly->qkv_b = (bf16_t *)take(base, &off, 3 * d * 2);
        Ly->proj_w = (bf16_t *)take(base, &off, d * d * 2);
        Ly->proj_b = (float *)take(base, &off, d * 4);
        Ly->fc1_w = (bf16_t *)take(base, &off, 4 * d * d * 2);
        Ly->fc1_b = (bf16_t *)take(base, &off, 4 * d * 2);
        Ly->fc2_w = (bf16_t *)take(base, &off, 4 * d * d * 2);
        Ly->fc2_b = (float *)take(base, &off, d * 4);
        if (w->fp8) {
            Ly->qkv_q = (fp8_t *)take(base, &off, 3 * d * d);
            Ly->proj_q = (fp8_t *)take(base, &off, d * d);
            Ly->fc1_q = (fp8_t *)take(base, &off, 4 * d * d);
            Ly->fc2_q = (fp8_t *)take(base, &off, 4 * d * d);
            Ly->qkv_s = (float *)take(base, &off, 4);
            Ly->proj_s = (float *)take(base, &off, 4);
            Ly->fc1_s = (float *)take(base, &off, 4);
            Ly->fc2_s = (float *)take(base, &off, 4);
            Ly->proj_b16 = (bf16_t *)take(base, &off, d * 2);
            Ly->fc2_b16 = (bf16_t *)take(base, &off, d * 2);
        }
    }
    return off;
}

/* One DiT pass's working set (pass_env's activations) in the stream's arena. */
static void pass_layout(pass_env *e, const cuda_stream *s, char *base, size_t *off) {
    size_t TN = (size_t)s->N, d = s->d;
    e->tok = (bf16_t *)take(base, off, TN * 2 * s->zpp * 2);
    e->x = (float *)take(base, off, TN * d * 4);
    e->y = (bf16_t *)take(base, off, TN * d * 2);
    e->y32 = (float *)take(base, off, TN * d * 4);
    e->qkv = (bf16_t *)take(base, off, TN * 3 * d * 2);
    e->att = (bf16_t *)take(base, off, TN * d * 2);
    e->hbuf = (bf16_t *)take(base, off, TN * 4 * d * 2);
    e->att_scratch = (float *)take(base, off, cu_attention_scratch_floats(s->N, s->heads, s->dh, s->splits) * 4 + 16);
}

/* The stream's own arena (everything but the weights). */
static size_t stream_layout(cuda_stream *s, char *base) {
    size_t off = 0, TN = (size_t)s->N, d = s->d;
    size_t px = (size_t)s->H * s->W;
    /* the per-frame block d_params (this frame's, then the previous frame's for the deferred
     * refresh) | d_noise (z, then the ctx noise) | d_in, and its staging */
    s->off_noise = (2 * sizeof(cu_frame_params) + 255) & ~(size_t)255;
    s->off_in = s->off_noise + ((2 * s->lat * 4 + 255) & ~(size_t)255);
    s->frame_bytes = s->off_in + px * 3;
    s->d_frame = (char *)take(base, &off, s->frame_bytes);
    s->d_params = (cu_frame_params *)s->d_frame;
    s->d_params_prev = base ? s->d_params + 1 : NULL;
    s->d_noise = base ? (float *)(s->d_frame + s->off_noise) : NULL;
    s->d_in = base ? (uint8_t *)(s->d_frame + s->off_in) : NULL;
    for (int b = 0; b < 2; b++) {
        s->d_stage[b] = (char *)take(base, &off, s->frame_bytes);
        s->d_ostage[b] = (uint8_t *)take(base, &off, px * 3);
    }
    s->d_out = (uint8_t *)take(base, &off, px * 3);
    for (int i = 0; i < 3; i++) s->fm[i] = (bf16_t *)take(base, &off, px * s->c * 2);
    s->d_cond = (float *)take(base, &off, s->lat * 4);
    s->d_zc = (float *)take(base, &off, s->lat * 4);
    pass_layout(&s->pe[0], s, base, &off); /* the frame's passes */
    if (s->defer) pass_layout(&s->pe[1], s, base, &off); /* the deferred refresh's */
    s->out_c = (float *)take(base, &off, TN * s->zpp * 4);
    s->out_u = (float *)take(base, &off, TN * s->zpp * 4);
    s->d_cond_prev = s->defer ? (float *)take(base, &off, s->lat * 4) : NULL;
    size_t ring = (size_t)s->L * (s->K + 1) * TN * d * 2;
    s->ring_k = (bf16_t *)take(base, &off, ring);
    s->ring_v = (bf16_t *)take(base, &off, ring);
    s->rope_cos = (float *)take(base, &off, TN * s->dh / 2 * 4);
    s->rope_sin = (float *)take(base, &off, TN * s->dh / 2 * 4);
    s->mod = (float *)take(base, &off, (size_t)s->rows * s->lmod * 4);
    s->d_sc = (float *)take(base, &off, (size_t)s->rows * d * 4);
    if (s->fp8) {
        s->q8 = (fp8_t *)take(base, &off, TN * 4 * d);
        s->q8s = (float *)take(base, &off, 4);
        s->q8scr = (float *)take(base, &off, cu_quant_fp8_scratch_floats() * 4);
        s->lnsc = (float *)take(base, &off, (size_t)2 * s->L * CU_FP8_SCALE_STRIDE * 4);
        s->amax = (float *)take(base, &off, 4);
    }
    return off;
}

/* ---- weight upload --------------------------------------------------------------------- */

/* bf16 copy of n floats (or of the transposed packed conv weight when co > 0). */
static mg_status upload_bf16(bf16_t *dst, const float *src, size_t n, bf16_t *stage) {
    for (size_t i = 0; i < n; i++) stage[i] = cu_f2bf(src[i]);
    CU_TRY(cudaMemcpy(dst, stage, n * 2, cudaMemcpyHostToDevice));
    return MG_OK;
}

static mg_status upload_f32(float *dst, const float *src, size_t n) {
    CU_TRY(cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice));
    return MG_OK;
}

static mg_status upload_conv(const cu_conv *cv, const conv_w *src, bf16_t *stage) {
    /* the CPU's packed (9*ci, co) -> ours (co, 9*ci) */
    size_t K = (size_t)9 * src->ci;
    for (int co = 0; co < src->co; co++)
        for (size_t k = 0; k < K; k++) stage[co * K + k] = cu_f2bf(src->wp[k * src->co + co]);
    CU_TRY(cudaMemcpy(cv->w, stage, K * src->co * 2, cudaMemcpyHostToDevice));
    if (src->b) CU_MG(upload_f32(cv->b, src->b, src->co));
    return MG_OK;
}

static mg_status upload_weights(cuda_weights *s, bf16_t *stage) {
    const mg_model *m = s->m;
    const tae_weights *T = &m->tae;
    cu_tae *G = &s->tae;
    const dit_weights *D = &m->dit;
    size_t d = s->d;
    CU_MG(upload_conv(&G->enc_in, &T->enc_in, stage));
    CU_MG(upload_conv(&G->enc_out, &T->enc_out, stage));
    CU_MG(upload_conv(&G->dec_in, &T->dec_in, stage));
    CU_MG(upload_conv(&G->dec_out, &T->dec_out, stage));
    for (int i = 0; i < 3; i++) {
        CU_MG(upload_conv(&G->enc_down[i], &T->enc_down[i], stage));
        CU_MG(upload_conv(&G->dec_up[i], &T->dec_up[i], stage));
    }
    for (int i = 0; i < MG_TAE_BLOCKS; i++)
        for (int j = 0; j < 3; j++) {
            CU_MG(upload_conv(&G->enc_b[i][j], &T->enc_b[i][j], stage));
            CU_MG(upload_conv(&G->dec_b[i][j], &T->dec_b[i][j], stage));
        }
    CU_MG(upload_bf16(s->in_w, D->in_w, d * 2 * s->zpp, stage));
    CU_MG(upload_f32(s->in_b, D->in_b, d));
    for (int l = 0; l < s->L; l++) {
        const dit_layer *Lc = &D->layers[l];
        cu_layer *Ly = &s->layers[l];
        CU_MG(upload_bf16(s->ada_w + (size_t)l * 6 * d * d, Lc->ada_w, 6 * d * d, stage));
        CU_MG(upload_f32(s->ada_b + (size_t)l * 6 * d, Lc->ada_b, 6 * d));
        CU_MG(upload_bf16(Ly->qkv_w, Lc->qkv_w, 3 * d * d, stage));
        CU_MG(upload_bf16(Ly->qkv_b, Lc->qkv_b, 3 * d, stage));
        CU_MG(upload_bf16(Ly->proj_w, Lc->proj_w, d * d, stage));
        CU_MG(upload_f32(Ly->proj_b, Lc->proj_b, d));
        CU_MG(upload_bf16(Ly->fc1_w, Lc->fc1_w, 4 * d * d, stage));
        CU_MG(upload_bf16(Ly->fc1_b, Lc->fc1_b, 4 * d, stage));
        CU_MG(upload_bf16(Ly->fc2_w, Lc->fc2_w, 4 * d * d, stage));
        CU_MG(upload_f32(Ly->fc2_b, Lc->fc2_b, d));
    }
    CU_MG(upload_bf16(s->ada_w + (size_t)s->L * 6 * d * d, D->fada_w, 2 * d * d, stage));
    CU_MG(upload_f32(s->ada_b + (size_t)s->L * 6 * d, D->fada_b, 2 * d));
    CU_MG(upload_bf16(s->fout_w, D->fout_w, (size_t)s->zpp * d, stage));
    CU_MG(upload_f32(s->fout_b, D->fout_b, s->zpp));
    return MG_OK;
}

/* The e4m3 copies of the four linears, quantised on the device from the bf16 weights. */
static mg_status weights_fp8(cuda_weights *w) {
    size_t d = w->d;
    float *scr = NULL;
    CU_TRY(cudaMalloc((void **)&scr, cu_quant_fp8_scratch_floats() * 4));
    mg_status st = MG_OK;
    for (int l = 0; l < w->L && st == MG_OK; l++) {
        cu_layer *Ly = &w->layers[l];
        struct { fp8_t *q; float *s; const bf16_t *x; size_t n, k; } t[4] = {
            {Ly->qkv_q, Ly->qkv_s, Ly->qkv_w, 3 * d, d}, {Ly->proj_q, Ly->proj_s, Ly->proj_w, d, d},
            {Ly->fc1_q, Ly->fc1_s, Ly->fc1_w, 4 * d, d}, {Ly->fc2_q, Ly->fc2_s, Ly->fc2_w, d, 4 * d}};
        for (int i = 0; i < 4 && st == MG_OK; i++) st = cu_quant_fp8_tensor(t[i].q, t[i].s, t[i].x, t[i].n * t[i].k, scr, 0);
        if (st == MG_OK) st = cu_f32_to_bf16(Ly->proj_b16, Ly->proj_b, d, 0);
        if (st == MG_OK) st = cu_f32_to_bf16(Ly->fc2_b16, Ly->fc2_b, d, 0);
    }
    cudaError_t e = cudaDeviceSynchronize();
    cudaFree(scr);
    if (st == MG_OK && e != cudaSuccess) st = cu_fail(__FILE__, __LINE__, "quantising the weights", cudaGetErrorString(e));
    return st;
}

/* ---- shared weights: one copy per (model, GPU) ------------------------------------------- */

/* Streams may be made, captured and freed by several threads at once (mirage serve's workers).
 * Making and freeing one does device-wide synchronising calls (cudaMalloc/cudaFree, legacy-stream
 * copies and memsets, the GEMM planner's cudaDeviceSynchronize); one of those while another
 * thread captures a graph fails with "operation not permitted when stream is capturing" and
 * breaks that capture too (measured: serve with 4 workers on one H200). So making a stream,
 * capturing its graphs and freeing it hold this lock; replaying a graph does not need it. */
static pthread_mutex_t g_setup_mu = PTHREAD_MUTEX_INITIALIZER;

static pthread_mutex_t g_wts_mu = PTHREAD_MUTEX_INITIALIZER;
static cuda_weights *g_wts;  /* every copy with a reference, under g_wts_mu */
static long g_wts_uploads;

static void weights_free(cuda_weights *w) {
    if (!w) return;
    if (w->dev) {
        int prev = 0;
        cudaGetDevice(&prev);
        cudaSetDevice(w->gpu);
        cudaFree(w->dev);
        cudaSetDevice(prev);
    }
    free(w->layers);
    free(w);
}

/* Uploads m's weights to gpu (the caller made it current). */
static mg_status weights_new(const mg_model *m, int gpu, cuda_weights **out) {
    *out = NULL;
    const mg_config *mc = &m->cfg;
    cuda_weights *w = (cuda_weights *)calloc(1, sizeof *w);
    if (!w) return mg_fail(MG_ERR_NOMEM, "out of memory");
    w->m = m, w->gpu = gpu;
    w->d = mc->d, w->zpp = mc->z_ch * mc->patch * mc->patch, w->L = mc->layers, w->c = mc->tae_ch;
    w->layers = (cu_layer *)calloc((size_t)w->L, sizeof(cu_layer));
    if (!w->layers) {
        weights_free(w);
        return mg_fail(MG_ERR_NOMEM, "out of memory");
    }
    w->fp8 = cu_opt("FP8", 0) && w->d % 16 == 0;
    w->bytes = weights_layout(w, NULL);
    cudaError_t e = cudaMalloc((void **)&w->dev, w->bytes);
    if (e != cudaSuccess) {
        double mib = w->bytes / 1048576.0;
        w->dev = NULL;
        weights_free(w);
        return mg_fail(MG_ERR_DEVICE, "--device cuda: cannot allocate %.1f MiB for the weights on GPU %d: %s", mib,
                       gpu, cudaGetErrorString(e));
    }
    weights_layout(w, w->dev);
    size_t stage_n = (size_t)6 * w->d * w->d, conv_n = (size_t)9 * w->c * w->c;
    if (conv_n > stage_n) stage_n = conv_n;
    bf16_t *stage = (bf16_t *)malloc(stage_n * 2);
    mg_status st = stage ? upload_weights(w, stage) : mg_fail(MG_ERR_NOMEM, "out of memory staging weights");
    free(stage);
    if (st == MG_OK && w->fp8) st = weights_fp8(w);
    if (st != MG_OK) {
        weights_free(w);
        return st;
    }
    *out = w;
    return MG_OK;
}

extern "C" int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear it so a later call does not report it */
        return 0;
    }
    return n;
}

extern "C" const char *cuda_device_name(int gpu, char *buf, size_t n) {
    cudaDeviceProp p;
    if (gpu < 0 || gpu >= cuda_device_count() || cudaGetDeviceProperties(&p, gpu) != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, n, "?");
    } else {
        snprintf(buf, n, "%s", p.name);
    }
    return buf;
}

extern "C" mg_status cuda_use_device(int gpu) {
    int n = cuda_device_count();
    if (n == 0) return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: no CUDA device found");
    if (gpu < 0 || gpu >= n)
        return mg_fail(MG_ERR_UNSUPPORTED, "GPU %d does not exist: this machine has %d (0..%d)", gpu, n, n - 1);
    CU_TRY(cudaSetDevice(gpu));
    return MG_OK;
}

extern "C" mg_status cuda_weights_acquire(const mg_model *m, int gpu, cuda_weights **out) {
    *out = NULL;
    int prev = -1;
    if (cudaGetDevice(&prev) != cudaSuccess) cudaGetLastError(), prev = -1;
    mg_status st = cuda_use_device(gpu);
    if (st != MG_OK) return st;
    pthread_mutex_lock(&g_wts_mu);
    cuda_weights *w = g_wts;
    /* a copy with e4m3 weights serves MG_CUDA_FP8=1 streams only, one without bf16 ones only */
    int fp8 = cu_opt("FP8", 0) && m->cfg.d % 16 == 0;
    while (w && !(w->m == m && w->gpu == gpu && w->fp8 == fp8)) w = w->next;
    if (w) {
        w->refs++;
    } else if ((st = weights_new(m, gpu, &w)) == MG_OK) {
        w->refs = 1;
        w->next = g_wts, g_wts = w;
        g_wts_uploads++;
    }
    pthread_mutex_unlock(&g_wts_mu);
    if (prev >= 0) cudaSetDevice(prev);
    if (st == MG_OK) *out = w;
    return st;
}

extern "C" void cuda_weights_release(cuda_weights *w) {
    if (!w) return;
    pthread_mutex_lock(&g_wts_mu);
    int last = --w->refs == 0;
    if (last) { /* unlink */
        cuda_weights **pp = &g_wts;
        while (*pp && *pp != w) pp = &(*pp)->next;
        if (*pp) *pp = w->next;
    }
    pthread_mutex_unlock(&g_wts_mu);
    if (last) weights_free(w);
}

extern "C" size_t cuda_weights_bytes(const cuda_weights *w) { return w->bytes; }
extern "C" int cuda_weights_refs(const cuda_weights *w) {
    pthread_mutex_lock(&g_wts_mu);
    int r = w->refs;
    pthread_mutex_unlock(&g_wts_mu);
    return r;
}
extern "C" long cuda_weights_uploads(void) {
    pthread_mutex_lock(&g_wts_mu);
    long n = g_wts_uploads;
    pthread_mutex_unlock(&g_wts_mu);
    return n;
}

/* ---- conditioning ---------------------------------------------------------------------- */

/* Row r's sigma and prompt: step i's passes (conditional, then unconditional with guidance),
 * then the refresh pass. */
static void pass_row(const cuda_stream *s, int r, int prompt, float *sigma, int *row_prompt) {
    int per = s->guided ? 2 : 1;
    if (r < s->cfg.steps * per) {
        *sigma = s->sig[r / per];
        *row_prompt = (s->guided && r % per == 1) ? 0 : prompt;
    } else {
        *sigma = s->m->cfg.sigma_ctx;
        *row_prompt = prompt;
    }
}

/* silu(c) for every pass on the host (dit.c's conditioning()), then the modulation of every
 * layer for every pass on the device. Outside the graph; runs when the prompt changes. */
static mg_status set_prompt(cuda_stream *s, int prompt) {
    const dit_weights *D = &s->m->dit;
    int d = s->d;
    float temb[256], *tmp = (float *)malloc((size_t)d * sizeof(float));
    if (!tmp) return mg_fail(MG_ERR_NOMEM, "out of memory");
    for (int r = 0; r < s->rows; r++) {
        float sigma;
        int p;
        pass_row(s, r, prompt, &sigma, &p);
        float *c = s->h_sc + (size_t)r * d;
        timestep_embedding(temb, sigma);
        linear_forward(tmp, temb, D->t1_w, D->t1_b, 1, 256, d);
        silu_forward(tmp, tmp, d);
        linear_forward(c, tmp, D->t2_w, D->t2_b, 1, d, d);
        add_inplace(c, D->prompt + (size_t)p * d, d);
        silu_forward(c, c, d);
    }
    free(tmp);
    CU_TRY(cudaMemcpyAsync(s->d_sc, s->h_sc, (size_t)s->rows * d * 4, cudaMemcpyHostToDevice, s->st));
    CU_MG(cu_linear_rows(s->mod, s->d_sc, s->ada_w, s->ada_b, s->rows, d, s->lmod, s->st));
    s->cur_prompt = prompt;
    return MG_OK;
}

/* ---- the networks ---------------------------------------------------------------------- */

static mg_status conv(cudaStream_t st, bf16_t *out, const bf16_t *in, const cu_conv *cv, const bf16_t *res, int H,
                      int W, int stride, int up, int relu) {
    if (cu_conv3x3_igemm_ok(cv->ci, cv->co))
        return cu_conv3x3_igemm(out, in, cv->w, cv->b, res, H, W, cv->ci, cv->co, stride, up, relu, st);
    if (!res) return cu_conv3x3_direct(out, CU_BF16, in, CU_BF16, cv->w, cv->b, H, W, cv->ci, cv->co, stride, up, relu, st);
    /* residual without the fused epilogue: conv into out's twin, then relu(res + it) */
    return mg_fail(MG_ERR_UNSUPPORTED, "CUDA TAE: width %d needs the implicit-GEMM conv (multiple of 32)", cv->ci);
}

/* x = relu(c3(relu(c2(relu(c1(x))))) + x), for n Blocks in a row at one size: one
 * cluster-resident launch where cu_tae_level_use says so (conv_level.cu, MG_CUDA_LEVEL), else
 * three conv launches per Block */
static mg_status block(cudaStream_t st, const cu_conv (*cv)[3], int n, bf16_t *x, bf16_t *t1, bf16_t *t2, int H,
                       int W) {
    int c = cv[0][0].ci, level = n <= CU_LEVEL_MAXBLOCKS && cu_tae_level_use(H, W, c);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 3; j++) level = level && cv[i][j].ci == c && cv[i][j].co == c;
    if (level) {
        const bf16_t *w[3 * CU_LEVEL_MAXBLOCKS];
        const float *b[3 * CU_LEVEL_MAXBLOCKS];
        for (int i = 0; i < 3 * n; i++) w[i] = cv[i / 3][i % 3].w, b[i] = cv[i / 3][i % 3].b;
        return cu_tae_level(x, w, b, n, H, W, c, st);
    }
    for (int i = 0; i < n; i++) {
        CU_MG(conv(st, t1, x, &cv[i][0], NULL, H, W, 1, 0, 1));
        CU_MG(conv(st, t2, t1, &cv[i][1], NULL, H, W, 1, 0, 1));
        CU_MG(conv(st, x, t2, &cv[i][2], x, H, W, 1, 0, 1));
    }
    return MG_OK;
}

static mg_status encode(const cuda_stream *s) {
    const cu_tae *T = &s->tae;
    bf16_t *cur = s->fm[0], *oth = s->fm[1], *tmp = s->fm[2];
    int h = s->H, w = s->W;
    CU_MG(cu_conv3x3_direct(cur, CU_BF16, s->d_in, CU_U8, T->enc_in.w, T->enc_in.b, h, w, 3, s->c, 1, 0, 0, s->st));
    for (int i = 0, n; i < MG_TAE_BLOCKS; i += n) { /* the levels: b0 | b1..b3 | b4..b6 | b7..b9 */
        if (i == 1 || i == 4 || i == 7) {
            CU_MG(conv(s->st, oth, cur, &T->enc_down[i / 3], NULL, h, w, 2, 0, 0));
            h = (h + 1) / 2, w = (w + 1) / 2;
            bf16_t *t = cur; cur = oth; oth = t;
        }
        n = i == 0 ? 1 : 3;
        CU_MG(block(s->st, &T->enc_b[i], n, cur, oth, tmp, h, w));
    }
    return cu_conv3x3_direct(s->d_cond, CU_F32, cur, CU_BF16, T->enc_out.w, T->enc_out.b, h, w, s->c, s->Z, 1, 0, 0, s->st);
}

static mg_status decode(const cuda_stream *s, const float *z, cudaStream_t st) {
    const cu_tae *T = &s->tae;
    bf16_t *cur = s->fm[0], *oth = s->fm[1], *tmp = s->fm[2];
    int h = s->lh, w = s->lw;
    CU_MG(cu_conv3x3_direct(cur, CU_BF16, z, CU_F32, T->dec_in.w, T->dec_in.b, h, w, s->Z, s->c, 1, 0, 1, st));
    for (int i = 0, n; i < MG_TAE_BLOCKS; i += n) { /* the levels: b0..b2 | b3..b5 | b6..b8 | b9 */
        if (i == 3 || i == 6 || i == 9) { /* nearest 2x fused into the conv's gather */
            h *= 2, w *= 2;
            CU_MG(conv(st, oth, cur, &T->dec_up[i / 3 - 1], NULL, h, w, 1, 1, 0));
            bf16_t *t = cur; cur = oth; oth = t;
        }
        n = i == 9 ? 1 : 3;
        CU_MG(block(st, &T->dec_b[i], n, cur, oth, tmp, h, w));
    }
    return cu_conv3x3_direct(s->d_out, CU_U8, cur, CU_BF16, T->dec_out.w, T->dec_out.b, h, w, s->c, 3, 1, 0, 0, st);
}

static mg_status dit_pass_fused(cuda_stream *s, const float *z, int row, int refresh, float *out);
static mg_status dit_pass_fp8(cuda_stream *s, const float *z, int row, int refresh, float *out);

/* RoPE on q and k, the current frame's k,v into the ring slot, attention: one launch
 * (cu_attention_rope) with MG_CUDA_ROPEATT=1 (read when the stream is made: s->ropeatt) where
 * the attention version has the folded form (off by default: not faster in the frame,
 * dev/cuda/README.md), else cu_rope_kv then cu_attention; kv_only (the refresh pass's last
 * block): the ring write alone. With the working set e's hooks (pass_env): wait before the ring is written,
 * record once it is written and read. */
static mg_status rope_attention(cuda_stream *s, const pass_env *e, int l, bf16_t *kr, bf16_t *vr, int kv_only) {
    int N = s->N, d = s->d;
    if (e->wait) { /* the deferred refresh has read the slot this pass overwrites */
        CU_TRY(cudaStreamWaitEvent(e->st, e->wait[l], 0));
        cu_pdl_fence();
    }
    if (!kv_only && s->ropeatt && cu_attention_rope_ok(s->dh, s->splits)) {
        CU_MG(cu_attention_rope(e->att, e->qkv, 3 * d, kr, vr, s->rope_cos, s->rope_sin, e->p, N, s->heads, s->dh,
                                s->splits, e->att_scratch, e->st));
    } else {
        CU_MG(cu_rope_kv(e->qkv, 3 * d, kr, vr, s->rope_cos, s->rope_sin, e->p, N, s->heads, s->dh, e->st));
        if (!kv_only)
            CU_MG(cu_attention(e->att, e->qkv, 3 * d, kr, vr, d, &e->p->vis, N, N, s->heads, s->dh, s->splits,
                               e->att_scratch, e->st));
    }
    if (e->rec) CU_TRY(cudaEventRecord(e->rec[l], e->st));
    return MG_OK;
}

/* One DiT pass over a frame (dit_forward with a ring, T = 1) with the working set e. row: the
 * conditioning row; refresh: stop after the last block's k,v are in the ring; out: velocity
 * tokens. The fused and FP8 paths run with pe[0] only (no deferred refresh). */
static mg_status dit_pass(cuda_stream *s, const pass_env *e, const float *z, int row, int refresh, float *out) {
    if (s->fused) return dit_pass_fused(s, z, row, refresh, out);
    if (s->fp8) return dit_pass_fp8(s, z, row, refresh, out);
    cu_ctx *c = e->c;
    cudaStream_t st = e->st;
    int N = s->N, d = s->d, L = s->L;
    const float *mrow = s->mod + (size_t)row * s->lmod;
    size_t slot_stride = (size_t)N * d, layer_stride = (size_t)(s->K + 1) * slot_stride;
    CU_MG(cu_patchify(e->tok, z, e->cond, s->lh, s->lw, s->Z, s->m->cfg.patch, st));
    CU_MG(cu_gemm_run(c, s->g_in, e->x, e->tok, s->in_w, s->in_b, st));
    CU_MG(cu_layernorm_modulate(e->y, e->x, mrow, mrow + d, N, d, st));
    for (int l = 0; l < L; l++) {
        const cu_layer *Ly = &s->layers[l];
        const float *mo = mrow + (size_t)l * 6 * d;
        bf16_t *kr = s->ring_k + l * layer_stride, *vr = s->ring_v + l * layer_stride;
        CU_MG(cu_gemm_run(c, s->g_qkv, e->qkv, e->y, Ly->qkv_w, Ly->qkv_b, st));
        CU_MG(rope_attention(s, e, l, kr, vr, refresh && l == L - 1));
        if (refresh && l == L - 1) return MG_OK; /* only the k,v were wanted */
        CU_MG(cu_gemm_run(c, s->g_proj, e->y32, e->att, Ly->proj_w, Ly->proj_b, st));
        CU_MG(cu_gated_residual_ln(e->x, e->y32, mo + 2 * d, e->y, mo + 3 * d, mo + 4 * d, N, d, st));
        CU_MG(cu_gemm_run(c, s->g_fc1, e->hbuf, e->y, Ly->fc1_w, Ly->fc1_b, st));
        CU_MG(cu_gemm_run(c, s->g_fc2, e->y32, e->hbuf, Ly->fc2_w, Ly->fc2_b, st));
        /* x += gate2 * mlp, then the next layer's (or the final) modulated norm */
        const float *nsh = l + 1 < L ? mo + 6 * d : mrow + (size_t)L * 6 * d;
        CU_MG(cu_gated_residual_ln(e->x, e->y32, mo + 5 * d, e->y, nsh, nsh + d, N, d, st));
    }
    return cu_gemm_run(c, s->g_out, out, e->y, s->fout_w, s->fout_b, st);
}

/* The same pass on the fused kernels (dit.cu): five launches per layer (six with the
 * attention's combine) instead of nine; x stays fp32 and is updated in the GEMM epilogues. */
static mg_status dit_pass_fused(cuda_stream *s, const float *z, int row, int refresh, float *out) {
    const pass_env *e = &s->pe[0];
    int N = s->N, d = s->d, L = s->L;
    const float *mrow = s->mod + (size_t)row * s->lmod;
    size_t slot_stride = (size_t)N * d, layer_stride = (size_t)(s->K + 1) * slot_stride;
    CU_MG(cu_patchify(e->tok, z, s->cond_in, s->lh, s->lw, s->Z, s->m->cfg.patch, s->st));
    cu_dgemm_args a;
    memset(&a, 0, sizeof a);
    a.a = e->tok, a.w = s->in_w, a.bias = s->in_b, a.out = e->x;
    CU_MG(cu_dgemm_run(&s->dg_in, &a, s->st));
    for (int l = 0; l < L; l++) {
        const cu_layer *Ly = &s->layers[l];
        const float *mo = mrow + (size_t)l * 6 * d;
        /* LN1 + modulation -> qkv + bias -> RoPE -> q, ring k and v */
        memset(&a, 0, sizeof a);
        a.x = e->x, a.shift = mo, a.scale = mo + d, a.w = Ly->qkv_w, a.bias = Ly->qkv_b, a.out = e->qkv;
        a.ldq = 3 * d, a.k_ring = s->ring_k + l * layer_stride, a.v_ring = s->ring_v + l * layer_stride;
        a.cos_sp = s->rope_cos, a.sin_sp = s->rope_sin, a.p = s->d_params, a.heads = s->heads, a.dh = s->dh;
        CU_MG(cu_dgemm_run(&s->dg_qkv, &a, s->st));
        if (refresh && l == L - 1) return MG_OK; /* only the k,v were wanted */
        CU_MG(cu_attention(e->att, e->qkv, 3 * d, a.k_ring, a.v_ring, d, &s->d_params->vis, N, N, s->heads, s->dh,
                           s->splits, e->att_scratch, s->st));
        /* x += gate1 * (proj(att) + b) */
        memset(&a, 0, sizeof a);
        a.a = e->att, a.w = Ly->proj_w, a.bias = Ly->proj_b, a.out = e->x, a.gate = mo + 2 * d;
        CU_MG(cu_dgemm_run(&s->dg_proj, &a, s->st));
        /* LN2 + modulation -> fc1 + bias -> GELU */
        memset(&a, 0, sizeof a);
        a.x = e->x, a.shift = mo + 3 * d, a.scale = mo + 4 * d, a.w = Ly->fc1_w, a.bias = Ly->fc1_b, a.out = e->hbuf;
        CU_MG(cu_dgemm_run(&s->dg_fc1, &a, s->st));
        /* x += gate2 * (fc2(h) + b) */
        memset(&a, 0, sizeof a);
        a.a = e->hbuf, a.w = Ly->fc2_w, a.bias = Ly->fc2_b, a.out = e->x, a.gate = mo + 5 * d;
        CU_MG(cu_dgemm_run(&s->dg_fc2, &a, s->st));
    }
    /* final LN + modulation -> out projection */
    memset(&a, 0, sizeof a);
    a.x = e->x, a.shift = mrow + (size_t)L * 6 * d, a.scale = mrow + (size_t)L * 6 * d + d, a.w = s->fout_w;
    a.bias = s->fout_b, a.out = out;
    return cu_dgemm_run(&s->dg_out, &a, s->st);
}

/* dit_pass with the four linears of every block on e4m3 GEMMs (MG_CUDA_FP8=1), per-tensor
 * scales, all on the device, so the pass is captured like the bf16 one. The layernorms write
 * e4m3 directly with scales bounded from the modulation (cu_dit_ln_fp8_scales, one small kernel
 * per pass); the attention output is quantised by a separate pass (amax, then convert); fc1's
 * GELU output by one pass reading the amax cuBLASLt computed in fc1's epilogue (two passes
 * where it does not). The input and output projections, attention, RoPE and the fp32
 * residual stream are dit_pass's. */
static mg_status dit_pass_fp8(cuda_stream *s, const float *z, int row, int refresh, float *out) {
    const pass_env *e = &s->pe[0];
    cu_ctx *c = s->ctx;
    int N = s->N, d = s->d, L = s->L;
    const float *mrow = s->mod + (size_t)row * s->lmod;
    size_t slot_stride = (size_t)N * d, layer_stride = (size_t)(s->K + 1) * slot_stride;
    const void *pb, *fb;
    CU_MG(cu_patchify(e->tok, z, s->cond_in, s->lh, s->lw, s->Z, s->m->cfg.patch, s->st));
    CU_MG(cu_gemm_run(c, s->g_in, e->x, e->tok, s->in_w, s->in_b, s->st));
    CU_MG(cu_dit_ln_fp8_scales(s->lnsc, mrow, L, d, s->st));
    CU_MG(cu_gated_residual_ln_fp8(e->x, NULL, NULL, s->q8, s->lnsc, mrow, mrow + d, N, d, s->st));
    for (int l = 0; l < L; l++) {
        const cu_layer *Ly = &s->layers[l];
        const float *mo = mrow + (size_t)l * 6 * d;
        bf16_t *kr = s->ring_k + l * layer_stride, *vr = s->ring_v + l * layer_stride;
        /* this block's norm1 and norm2 scales, the next block's norm1 scale */
        const float *sc1 = s->lnsc + (size_t)2 * l * CU_FP8_SCALE_STRIDE, *sc2 = sc1 + CU_FP8_SCALE_STRIDE;
        const float *scn = sc2 + CU_FP8_SCALE_STRIDE;
        CU_MG(cu_gemm_run_fp8(c, s->g8_qkv, e->qkv, s->q8, sc1, Ly->qkv_q, Ly->qkv_s, Ly->qkv_b, s->st));
        CU_MG(rope_attention(s, e, l, kr, vr, refresh && l == L - 1));
        if (refresh && l == L - 1) return MG_OK; /* only the k,v were wanted */
        CU_MG(cu_quant_fp8_tensor(s->q8, s->q8s, e->att, (size_t)N * d, s->q8scr, s->st));
        pb = cu_gemm_bias_bf16(s->g8_proj) ? (const void *)Ly->proj_b16 : (const void *)Ly->proj_b;
        CU_MG(cu_gemm_run_fp8(c, s->g8_proj, e->y32, s->q8, s->q8s, Ly->proj_q, Ly->proj_s, pb, s->st));
        /* x += gate1 * attn, then norm2 + modulation, quantised */
        CU_MG(cu_gated_residual_ln_fp8(e->x, e->y32, mo + 2 * d, s->q8, sc2, mo + 3 * d, mo + 4 * d, N, d, s->st));
        CU_MG(cu_gemm_run_fp8(c, s->g8_fc1, e->hbuf, s->q8, sc2, Ly->fc1_q, Ly->fc1_s, Ly->fc1_b, s->st));
        if (s->fc1_amax) CU_MG(cu_quant_fp8_tensor_amax(s->q8, s->q8s, e->hbuf, (size_t)N * 4 * d, s->amax, s->st));
        else CU_MG(cu_quant_fp8_tensor(s->q8, s->q8s, e->hbuf, (size_t)N * 4 * d, s->q8scr, s->st));
        fb = cu_gemm_bias_bf16(s->g8_fc2) ? (const void *)Ly->fc2_b16 : (const void *)Ly->fc2_b;
        CU_MG(cu_gemm_run_fp8(c, s->g8_fc2, e->y32, s->q8, s->q8s, Ly->fc2_q, Ly->fc2_s, fb, s->st));
        /* x += gate2 * mlp, then the next block's norm1 (quantised), or the final norm (bf16:
         * the output projection stays a bf16 GEMM) */
        if (l + 1 < L)
            CU_MG(cu_gated_residual_ln_fp8(e->x, e->y32, mo + 5 * d, s->q8, scn, mo + 6 * d, mo + 7 * d, N, d, s->st));
        else CU_MG(cu_gated_residual_ln(e->x, e->y32, mo + 5 * d, e->y, mrow + (size_t)L * 6 * d,
                                        mrow + (size_t)L * 6 * d + d, N, d, s->st));
    }
    return cu_gemm_run(c, s->g_out, out, e->y, s->fout_w, s->fout_b, s->st);
}

static mg_status mark(cuda_stream *s, int profile, int i) {
    if (profile) CU_TRY(cudaEventRecord(s->ev[i], s->st));
    return MG_OK;
}

/* The refresh of the frame before, on pe[1] / st3, recording ev_lay[l] per layer (deferred),
 * or on pe[0] / st when it is flushed on its own (pe[0]'s params point at this frame block's
 * current slot, which is still that frame's when a flush runs: see cuda_stream_submit). */
static mg_status refresh_pass(cuda_stream *s, pass_env *e) {
    CU_MG(dit_pass(s, e, s->d_zc, s->rows - 1, 1, NULL));
    return MG_OK;
}

/* Everything one frame enqueues: captured into the graph, or launched directly.
 *
 * pend (deferred refresh, s->defer): the KV refresh of the frame before runs first, on st3,
 * beside this frame's encode; this frame's first DiT pass waits for it layer by layer (before
 * writing its own k,v to the ring slot the refresh may still be reading), so the refresh
 * leaves the frame's critical path, which is encode + steps + decode. It reads d_zc and
 * d_cond_prev, written at the end of the frame before, and this frame overwrites them only
 * after its first pass, which is after the refresh's first layer, long after its patchify. */
static mg_status step_body_inner(cuda_stream *s, int dream, int pend, int profile) {
    cudaStream_t st = s->st;
    int per = s->guided ? 2 : 1, e = 0, defer = s->defer && !profile;
    float *z = s->d_noise, *ctx = s->d_noise + s->lat;
    /* the frame's inputs (d_frame) were copied in before, outside the body (cuda_stream_submit) */
    cu_pdl_fence(); /* the first kernel: a plain edge */
    if (pend) {
        pass_env *r = &s->pe[1];
        r->p = s->d_params_prev, r->cond = s->d_cond_prev, r->rec = s->ev_lay, r->wait = NULL;
        CU_TRY(cudaEventRecord(s->ev_fork3, st));
        CU_TRY(cudaStreamWaitEvent(s->st3, s->ev_fork3, 0));
        CU_MG(refresh_pass(s, r));
        CU_TRY(cudaEventRecord(s->ev_join3, s->st3));
        cu_pdl_fence();
    }
    CU_MG(mark(s, profile, e++));
    /* 1. encode the input frame (dream drops it: cond reads as zeros) */
    s->cond_in = dream ? NULL : s->d_cond;
    pass_env *m = &s->pe[0];
    m->p = s->d_params, m->cond = s->cond_in, m->rec = NULL, m->wait = NULL;
    if (!dream) CU_MG(encode(s));
    CU_MG(mark(s, profile, e++));
    /* 2. denoise from the noise with Euler steps, each attending to the ring */
    for (int i = 0; i < s->cfg.steps; i++) {
        m->wait = pend && i == 0 ? s->ev_lay : NULL;
        CU_MG(dit_pass(s, m, z, i * per, 0, s->out_c));
        m->wait = NULL; /* the guided pass writes the same slot after the conditional one */
        if (s->guided) CU_MG(dit_pass(s, m, z, i * per + 1, 0, s->out_u));
        CU_MG(cu_unpatchify_euler(z, s->out_c, s->guided ? s->out_u : NULL, s->cfg.guidance, s->dt[i], s->lh, s->lw,
                                  s->Z, s->m->cfg.patch, st));
        CU_MG(mark(s, profile, e++));
    }
    /* 3 and 4 both read only the final z: outside profiling, the decode runs on a second
     * stream (a fork and a join in the graph) so that its convolutions fill the SMs the
     * launch-bound refresh pass leaves idle. Profiling runs them one after the other. */
    cudaStream_t dst = profile ? st : s->st2;
    if (!profile) {
        CU_TRY(cudaEventRecord(s->ev_fork, st));
        CU_TRY(cudaStreamWaitEvent(s->st2, s->ev_fork, 0));
        CU_MG(decode(s, z, dst));
        CU_TRY(cudaEventRecord(s->ev_join, dst));
        cu_pdl_fence(); /* the refresh's first kernel: a plain edge after the fork */
    }
    /* 3. refresh the ring: the clean latent re-noised to sigma_ctx, seen once — now, or
     * (deferred) at the start of the next frame, from d_zc and this frame's condition */
    if (s->K > 0) {
        CU_MG(cu_renoise(s->d_zc, z, ctx, s->m->cfg.sigma_ctx, s->lat, st));
        if (defer) {
            if (dream) CU_TRY(cudaMemsetAsync(s->d_cond_prev, 0, s->lat * 4, st));
            else CU_TRY(cudaMemcpyAsync(s->d_cond_prev, s->d_cond, s->lat * 4, cudaMemcpyDeviceToDevice, st));
            cu_pdl_fence();
        } else {
            CU_MG(refresh_pass(s, m));
        }
    }
    CU_MG(mark(s, profile, e++));
    /* 4. decode, straight to u8 */
    if (profile) {
        CU_MG(decode(s, z, dst));
    } else {
        CU_TRY(cudaStreamWaitEvent(st, s->ev_join, 0));
    }
    if (pend) CU_TRY(cudaStreamWaitEvent(st, s->ev_join3, 0)); /* long done: the first pass waited on it */
    CU_MG(mark(s, profile, e++));
    return MG_OK;
}

/* With PDL on (outside profiling), consecutive kernels of one stream are launched with the
 * programmatic-serialization attribute: each waits on its predecessor inside the kernel
 * (cuda_common.h), so the arithmetic is unchanged and graph and eager runs stay identical. */
static mg_status step_body(cuda_stream *s, int dream, int pend, int profile) {
    cu_pdl_enable(s->pdl && !profile);
    mg_status st = step_body_inner(s, dream, pend, profile);
    cu_pdl_enable(0);
    return st;
}

static mg_status capture(cuda_stream *s, int dream, int pend) {
    cudaGraph_t g;
    CU_TRY(cudaStreamBeginCapture(s->st, cudaStreamCaptureModeThreadLocal));
    mg_status st = step_body(s, dream, pend, 0);
    cudaError_t e = cudaStreamEndCapture(s->st, &g);
    if (st != MG_OK) {
        if (e == cudaSuccess) cudaGraphDestroy(g);
        return st;
    }
    if (e != cudaSuccess) return cu_fail(__FILE__, __LINE__, "cudaStreamEndCapture", cudaGetErrorString(e));
    e = cudaGraphInstantiate(&s->exec[dream][pend], g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return cu_fail(__FILE__, __LINE__, "cudaGraphInstantiate", cudaGetErrorString(e));
    s->have_exec[dream][pend] = 1;
    return MG_OK;
}

/* ---- FLOPs of one frame (2 per multiply-add), with the ring full ------------------------ */

static double conv_flops(int Ho, int Wo, int ci, int co) { return 2.0 * Ho * Wo * 9.0 * ci * co; }

static double frame_flops(const cuda_stream *s) {
    int c = s->c, Z = s->Z, h = s->H, w = s->W;
    double f = conv_flops(h, w, 3, c);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) h = (h + 1) / 2, w = (w + 1) / 2, f += conv_flops(h, w, c, c);
        f += 3 * conv_flops(h, w, c, c);
    }
    f += conv_flops(h, w, c, Z);
    h = s->lh, w = s->lw;
    f += conv_flops(h, w, Z, c);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 3 || i == 6 || i == 9) h *= 2, w *= 2, f += conv_flops(h, w, c, c);
        f += 3 * conv_flops(h, w, c, c);
    }
    f += conv_flops(h, w, c, 3);
    double N = s->N, d = s->d, Nk = (double)(s->K + 1) * N;
    double qkv = 2 * N * d * 3 * d, rest = 4 * N * Nk * d + 2 * N * d * d + 2 * 2 * N * d * 4 * d;
    double in = 2 * N * 2 * s->zpp * d, pass = in + s->L * (qkv + rest) + 2 * N * d * s->zpp;
    f += s->cfg.steps * (s->guided ? 2 : 1) * pass;
    if (s->K > 0) f += in + s->L * qkv + (s->L - 1) * rest;
    return f;
}

/* ---- lifetime ---------------------------------------------------------------------------- */

static mg_status stream_init(cuda_stream *s) {
    const mg_config *mc = &s->m->cfg;
    CU_MG(cu_ctx_new(&s->ctx));
    CU_TRY(cudaGetDevice(&s->gpu));
    if (!cu_attention_ok(s->dh) || s->d % 8 || s->d > 2048 || s->dh / 2 / 4 > CU_MAX_TPAIRS ||
        !cu_conv3x3_igemm_ok(s->c, s->c) || s->rows > MAX_PASS_ROWS || (size_t)9 * s->c * 8 * 4 > 48 * 1024)
        return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: config %s (d %d, heads %d, tae_ch %d, %d passes) is outside "
                       "what the CUDA backend supports (head width 64 or 128, d <= 2048 and a multiple of 8, "
                       "tae_ch a multiple of 32 up to 160)", mc->name, s->d, s->heads, s->c, s->rows);
    s->splits = cu_attention_splits(s->ctx, s->N, (s->K + 1) * s->N, s->heads);
    for (int i = 0; i <= s->cfg.steps; i++) s->sig[i] = sampler_sigma(i, s->cfg.steps, mc->shift);
    for (int i = 0; i < s->cfg.steps; i++) s->dt[i] = s->sig[i + 1] - s->sig[i];
    CU_TRY(cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking));
    CU_TRY(cudaStreamCreateWithFlags(&s->st2, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreateWithFlags(&s->ev_fork, cudaEventDisableTiming));
    CU_TRY(cudaEventCreateWithFlags(&s->ev_join, cudaEventDisableTiming));
    for (int i = 0; i < MAX_EVENTS; i++) CU_TRY(cudaEventCreate(&s->ev[i]));
    CU_TRY(cudaStreamCreateWithFlags(&s->st_up, cudaStreamNonBlocking));
    CU_TRY(cudaStreamCreateWithFlags(&s->st_down, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreateWithFlags(&s->ev_sc, cudaEventDisableTiming));
    for (int b = 0; b < 2; b++) {
        CU_TRY(cudaEventCreateWithFlags(&s->ev_up[b], cudaEventDisableTiming));
        CU_TRY(cudaEventCreateWithFlags(&s->ev_done[b], cudaEventDisableTiming));
        CU_TRY(cudaEventCreateWithFlags(&s->ev_down[b], cudaEventDisableTiming));
        CU_TRY(cudaEventCreate(&s->ev_t0[b]));
        CU_TRY(cudaEventCreate(&s->ev_t1[b]));
    }

    s->fp8 = cu_opt("FP8", 0) && s->d % 16 == 0; /* dropped below on the fused path */
    /* the deferred refresh: the base DiT path only (the fused and FP8 passes keep one working set) */
    s->defer = cu_opt("DEFER", 1) && !cu_opt("FUSED", 0) && !s->fp8 && s->K > 0;
    if (s->defer) {
        CU_MG(cu_ctx_new(&s->ctx3));
        CU_TRY(cudaStreamCreateWithFlags(&s->st3, cudaStreamNonBlocking));
        CU_TRY(cudaEventCreateWithFlags(&s->ev_fork3, cudaEventDisableTiming));
        CU_TRY(cudaEventCreateWithFlags(&s->ev_join3, cudaEventDisableTiming));
        s->ev_lay = (cudaEvent_t *)calloc((size_t)s->L, sizeof(cudaEvent_t));
        if (!s->ev_lay) return mg_fail(MG_ERR_NOMEM, "out of memory");
        for (int l = 0; l < s->L; l++) CU_TRY(cudaEventCreateWithFlags(&s->ev_lay[l], cudaEventDisableTiming));
    }
    s->pe[0].st = s->st, s->pe[0].c = s->ctx;
    s->pe[1].st = s->st3, s->pe[1].c = s->ctx3;
    s->dev_bytes = stream_layout(s, NULL);
    CU_TRY(cudaMalloc((void **)&s->dev, s->dev_bytes));
    stream_layout(s, s->dev);
    CU_TRY(cudaMemset(s->dev, 0, s->dev_bytes));
    CU_TRY(cudaMallocHost((void **)&s->h_sc, (size_t)s->rows * s->d * 4));
    for (int b = 0; b < 2; b++) {
        CU_TRY(cudaMallocHost((void **)&s->h_frame[b], s->frame_bytes));
        CU_TRY(cudaMallocHost((void **)&s->h_out[b], (size_t)s->H * s->W * 3));
        memset(s->h_frame[b], 0, s->frame_bytes);
    }

    /* the weights: shared with every other stream of this model on this GPU */
    CU_MG(cuda_weights_acquire(s->m, s->gpu, &s->wts));
    const cuda_weights *w = s->wts;
    s->tae = w->tae;
    s->in_w = w->in_w, s->ada_w = w->ada_w, s->fout_w = w->fout_w;
    s->in_b = w->in_b, s->ada_b = w->ada_b, s->fout_b = w->fout_b;
    s->layers = w->layers;
    mg_status st;

    /* spatial RoPE tables (the time pairs come per frame) */
    size_t tab = (size_t)s->N * s->dh / 2;
    float *cs = (float *)malloc(tab * 2 * sizeof(float));
    if (!cs) return mg_fail(MG_ERR_NOMEM, "out of memory");
    rope_tables(cs, cs + tab, 0, s->lh / mc->patch, s->lw / mc->patch, s->dh, mc->rope_theta);
    st = upload_f32(s->rope_cos, cs, tab);
    if (st == MG_OK) st = upload_f32(s->rope_sin, cs + tab, tab);
    free(cs);
    CU_MG(st);

    int N = s->N, d = s->d;
    s->pdl = cu_opt("PDL", 0); /* measured slower in graph replay: off unless asked for */
    s->ropeatt = cu_opt("ROPEATT", 0); /* read once: rope_attention runs per layer and pass */
    /* the fused DiT kernels (d <= 768) only when asked for (MG_CUDA_FUSED=1): correct, but
     * measured slower than cuBLASLt's GEMMs plus the separate kernels (dev/cuda/README.md) */
    s->fused = cu_opt("FUSED", 0) && d <= 768 && cu_dgemm_ok(N, 3 * d, d, CU_DG_A_LN) &&
               cu_dgemm_ok(N, d, 2 * s->zpp, CU_DG_A_BF16) && cu_dgemm_ok(N, d, 4 * d, CU_DG_A_BF16) &&
               cu_dgemm_ok(N, s->zpp, d, CU_DG_A_LN);
    if (s->fused) {
        int split = cu_opt("SPLITK", 1) ? 4 : 1;
        CU_MG(cu_dgemm_plan(s->ctx, &s->dg_in, N, d, 2 * s->zpp, CU_DG_A_BF16, CU_DG_F32, split));
        CU_MG(cu_dgemm_plan(s->ctx, &s->dg_qkv, N, 3 * d, d, CU_DG_A_LN, CU_DG_QKV, split));
        CU_MG(cu_dgemm_plan(s->ctx, &s->dg_proj, N, d, d, CU_DG_A_BF16, CU_DG_RESID, split));
        CU_MG(cu_dgemm_plan(s->ctx, &s->dg_fc1, N, 4 * d, d, CU_DG_A_LN, CU_DG_GELU, split));
        CU_MG(cu_dgemm_plan(s->ctx, &s->dg_fc2, N, d, 4 * d, CU_DG_A_BF16, CU_DG_RESID, split));
        CU_MG(cu_dgemm_plan(s->ctx, &s->dg_out, N, s->zpp, d, CU_DG_A_LN, CU_DG_F32, split));
        s->fp8 = 0;
    } else {
        CU_MG(cu_gemm_plan(s->ctx, &s->g_in, N, d, 2 * s->zpp, 1, CU_EPI_BIAS));
        CU_MG(cu_gemm_plan(s->ctx, &s->g_qkv, N, 3 * d, d, 0, CU_EPI_BIAS));
        CU_MG(cu_gemm_plan(s->ctx, &s->g_proj, N, d, d, 1, CU_EPI_BIAS));
        CU_MG(cu_gemm_plan(s->ctx, &s->g_fc1, N, 4 * d, d, 0, CU_EPI_GELU_BIAS));
        CU_MG(cu_gemm_plan(s->ctx, &s->g_fc2, N, d, 4 * d, 1, CU_EPI_BIAS));
        CU_MG(cu_gemm_plan(s->ctx, &s->g_out, N, s->zpp, d, 1, CU_EPI_BIAS));
        if (s->fp8 && s->wts->fp8) { /* MG_CUDA_FP8_FAST=0: no fast accumulation */
            cu_fp8_scale sm = CU_FP8_TENSOR;
            int fast = cu_opt("FP8_FAST", 1);
            CU_MG(cu_gemm_plan_fp8(s->ctx, &s->g8_qkv, N, 3 * d, d, 0, CU_EPI_BIAS, sm, fast, NULL));
            CU_MG(cu_gemm_plan_fp8(s->ctx, &s->g8_proj, N, d, d, 1, CU_EPI_BIAS, sm, fast, NULL));
            /* fc1 computes its output's amax for the quantiser where cuBLASLt can */
            s->fc1_amax = cu_opt("FP8_AMAX", 1) &&
                          cu_gemm_plan_fp8(s->ctx, &s->g8_fc1, N, 4 * d, d, 0, CU_EPI_GELU_BIAS, sm, fast, s->amax) == MG_OK;
            if (!s->fc1_amax) CU_MG(cu_gemm_plan_fp8(s->ctx, &s->g8_fc1, N, 4 * d, d, 0, CU_EPI_GELU_BIAS, sm, fast, NULL));
            CU_MG(cu_gemm_plan_fp8(s->ctx, &s->g8_fc2, N, d, 4 * d, 1, CU_EPI_BIAS, sm, fast, NULL));
        } else s->fp8 = 0;
    }
    CU_TRY(cudaStreamSynchronize(s->st));
    s->flops = frame_flops(s);
    return MG_OK;
}

static void stream_destroy(cuda_stream *s);

extern "C" mg_status cuda_stream_new(const mg_model *m, const cuda_stream_cfg *cfg, cuda_stream **out) {
    *out = NULL;
    if (cfg->steps < 1 || cfg->steps > 64 || cfg->ring < 0)
        return mg_fail(MG_ERR_ARG, "--device cuda: steps %d / ring %d out of range", cfg->steps, cfg->ring);
    cuda_stream *s = (cuda_stream *)calloc(1, sizeof *s);
    if (!s) return mg_fail(MG_ERR_NOMEM, "out of memory creating a CUDA stream");
    const mg_config *mc = &m->cfg;
    s->m = m;
    s->cfg = *cfg;
    s->H = cfg->height, s->W = cfg->width, s->lh = s->H / 8, s->lw = s->W / 8;
    s->N = (s->lh / mc->patch) * (s->lw / mc->patch);
    s->d = mc->d, s->L = mc->layers, s->heads = mc->heads, s->dh = mc->d / mc->heads, s->Z = mc->z_ch;
    s->zpp = mc->z_ch * mc->patch * mc->patch, s->c = mc->tae_ch, s->K = cfg->ring;
    s->guided = cfg->guidance != 1.0f;
    s->rows = cfg->steps * (s->guided ? 2 : 1) + 1;
    s->lmod = (s->L * 6 + 2) * s->d;
    s->lat = (size_t)s->lh * s->lw * s->Z;
    s->cur_prompt = -1;
    s->gpu = -1;
    pthread_mutex_lock(&g_setup_mu);
    mg_status st = stream_init(s);
    if (st != MG_OK) stream_destroy(s);
    pthread_mutex_unlock(&g_setup_mu);
    if (st != MG_OK) return st;
    *out = s;
    return MG_OK;
}

extern "C" void cuda_stream_free(cuda_stream *s) {
    if (!s) return;
    pthread_mutex_lock(&g_setup_mu);
    stream_destroy(s);
    pthread_mutex_unlock(&g_setup_mu);
}

/* g_setup_mu held */
static void stream_destroy(cuda_stream *s) {
    int prev = -1;
    if (s->gpu >= 0) { /* any thread may free it: its calls go to its own GPU */
        if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
        cudaSetDevice(s->gpu);
    }
    if (s->st_up) cudaStreamSynchronize(s->st_up); /* frames still in flight finish first */
    if (s->st) cudaStreamSynchronize(s->st);
    if (s->st2) cudaStreamSynchronize(s->st2);
    if (s->st_down) cudaStreamSynchronize(s->st_down);
    if (s->st3) cudaStreamSynchronize(s->st3);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            if (s->have_exec[i][j]) cudaGraphExecDestroy(s->exec[i][j]);
    cu_gemm_free(s->g_in), cu_gemm_free(s->g_qkv), cu_gemm_free(s->g_proj);
    cu_gemm_free(s->g_fc1), cu_gemm_free(s->g_fc2), cu_gemm_free(s->g_out);
    cu_gemm_free(s->g8_qkv), cu_gemm_free(s->g8_proj), cu_gemm_free(s->g8_fc1), cu_gemm_free(s->g8_fc2);
    for (int i = 0; i < MAX_EVENTS; i++)
        if (s->ev[i]) cudaEventDestroy(s->ev[i]);
    for (int b = 0; b < 2; b++) {
        cudaEvent_t *evs[5] = {&s->ev_up[b], &s->ev_done[b], &s->ev_down[b], &s->ev_t0[b], &s->ev_t1[b]};
        for (int i = 0; i < 5; i++)
            if (*evs[i]) cudaEventDestroy(*evs[i]);
        if (s->h_frame[b]) cudaFreeHost(s->h_frame[b]);
        if (s->h_out[b]) cudaFreeHost(s->h_out[b]);
    }
    if (s->ev_sc) cudaEventDestroy(s->ev_sc);
    if (s->h_sc) cudaFreeHost(s->h_sc);
    if (s->dev) cudaFree(s->dev);
    if (s->st) cudaStreamDestroy(s->st);
    if (s->st2) cudaStreamDestroy(s->st2);
    if (s->st_up) cudaStreamDestroy(s->st_up);
    if (s->st_down) cudaStreamDestroy(s->st_down);
    if (s->ev_fork) cudaEventDestroy(s->ev_fork);
    if (s->ev_join) cudaEventDestroy(s->ev_join);
    if (s->st3) cudaStreamDestroy(s->st3);
    if (s->ev_fork3) cudaEventDestroy(s->ev_fork3);
    if (s->ev_join3) cudaEventDestroy(s->ev_join3);
    if (s->ev_lay) {
        for (int l = 0; l < s->L; l++)
            if (s->ev_lay[l]) cudaEventDestroy(s->ev_lay[l]);
        free(s->ev_lay);
    }
    cu_ctx_free(s->ctx3);
    cu_ctx_free(s->ctx);
    cuda_weights_release(s->wts);
    if (prev >= 0 && prev != s->gpu) cudaSetDevice(prev);
    free(s);
}

/* ---- one frame ------------------------------------------------------------------------- */

static float ev_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, a, b) != cudaSuccess) ms = 0.0f;
    return ms;
}

/* Frame f uses buffer set (q_head + q_n) % 2. Nothing of that set is still in use when it is
 * submitted: at most 2 frames are in flight, so the set's previous frame was collected, and
 * collect returned only after that frame's download, which follows its graph, which follows its
 * upload. So the only waits are the events between the three streams, and the host waits only
 * in collect (and, on a prompt change, for the previous change's upload of h_sc, see below). */
extern "C" mg_status cuda_stream_submit(cuda_stream *s, const uint8_t *in_rgb, const float *noise,
                                        const float *ctx_noise, int prompt, int dream) {
    if (s->q_n >= 2)
        return mg_fail(MG_ERR_ARG, "cuda_stream_submit: 2 frames are in flight already; collect one first");
    double t0 = mg_now_ms();
    CU_TRY(cudaSetDevice(s->gpu)); /* the thread stepping it may have another GPU current */
    const mg_config *mc = &s->m->cfg;
    int K = s->K, npairs = s->dh / 2, nt = npairs / 4, b = (s->q_head + s->q_n) % 2;
    long long f = s->frame;
    dream = dream ? 1 : 0;
    size_t px3 = (size_t)s->H * s->W * 3, up = dream ? s->off_in : s->frame_bytes;
    /* per-frame parameters: ring slot and visible slots, the RoPE time angles (float64) */
    char *hf = s->h_frame[b];
    cu_frame_params *hp = (cu_frame_params *)hf;
    hp->slot = (int)(f % (K + 1));
    hp->vis = (int)(f < K ? f : K) + 1;
    float tc[512], ts[512];
    rope_tables(tc, ts, f, 1, 1, s->dh, mc->rope_theta);
    for (int j = 0; j < nt; j++) hp->tcos[j] = tc[j], hp->tsin[j] = ts[j];
    hp[1] = s->last_params; /* the deferred refresh's: the frame before's */
    memcpy(hf + s->off_noise, noise, s->lat * 4);
    memcpy(hf + s->off_noise + s->lat * 4, ctx_noise, s->lat * 4);
    if (!dream) memcpy(hf + s->off_in, in_rgb, px3);
    /* 1. upload into the set's staging block while the frame before computes */
    CU_TRY(cudaMemcpyAsync(s->d_stage[b], hf, up, cudaMemcpyHostToDevice, s->st_up));
    CU_TRY(cudaEventRecord(s->ev_up[b], s->st_up));
    /* a refresh still owed to the frame before runs now, on st, when this frame cannot take it:
     * a new prompt (the refresh uses the old one's modulation) or a profiled frame (its stages
     * run one after the other). It reads d_frame's current parameters, which are still that
     * frame's: this frame's block is copied in after it, below. */
    if (s->pending && (prompt != s->cur_prompt || s->mode == CUDA_MODE_PROFILE)) {
        pass_env *e = &s->pe[0];
        e->p = s->d_params, e->cond = s->d_cond_prev, e->rec = NULL, e->wait = NULL;
        cu_pdl_fence();
        CU_MG(refresh_pass(s, e));
        s->pending = 0;
    }
    int pend = s->pending, defer = s->defer && s->mode != CUDA_MODE_PROFILE;
    /* a new prompt's modulation, on st after the frame before (which reads the old one). h_sc is
     * one pinned buffer: the previous change's copy from it may still wait behind a frame */
    if (prompt != s->cur_prompt) {
        CU_TRY(cudaEventSynchronize(s->ev_sc));
        CU_MG(set_prompt(s, prompt));
        CU_TRY(cudaEventRecord(s->ev_sc, s->st));
    }
    if (s->mode == CUDA_MODE_GRAPH && !s->have_exec[dream][pend]) {
        pthread_mutex_lock(&g_setup_mu);
        mg_status st = capture(s, dream, pend);
        pthread_mutex_unlock(&g_setup_mu);
        CU_MG(st);
    }
    /* 2. on st: the staged block into the one the graph reads, the frame, its output staged */
    CU_TRY(cudaStreamWaitEvent(s->st, s->ev_up[b], 0));
    CU_TRY(cudaMemcpyAsync(s->d_frame, s->d_stage[b], up, cudaMemcpyDeviceToDevice, s->st));
    CU_TRY(cudaEventRecord(s->ev_t0[b], s->st));
    if (s->mode == CUDA_MODE_GRAPH) CU_TRY(cudaGraphLaunch(s->exec[dream][pend], s->st));
    else CU_MG(step_body(s, dream, pend, s->mode == CUDA_MODE_PROFILE));
    s->deferred_run += pend;
    s->pending = defer;
    s->last_params = *hp;
    CU_TRY(cudaEventRecord(s->ev_t1[b], s->st));
    CU_TRY(cudaMemcpyAsync(s->d_ostage[b], s->d_out, px3, cudaMemcpyDeviceToDevice, s->st));
    CU_TRY(cudaEventRecord(s->ev_done[b], s->st));
    /* 3. download on st_down while the next frame computes */
    CU_TRY(cudaStreamWaitEvent(s->st_down, s->ev_done[b], 0));
    CU_TRY(cudaMemcpyAsync(s->h_out[b], s->d_ostage[b], px3, cudaMemcpyDeviceToHost, s->st_down));
    CU_TRY(cudaEventRecord(s->ev_down[b], s->st_down));
    s->t_sub[b] = t0;
    s->q_n++;
    s->frame++;
    return MG_OK;
}

extern "C" mg_status cuda_stream_collect(cuda_stream *s, uint8_t *out_rgb) {
    if (s->q_n == 0) return mg_fail(MG_ERR_ARG, "cuda_stream_collect: no frame in flight; submit one first");
    int b = s->q_head;
    s->q_head = (s->q_head + 1) % 2, s->q_n--; /* the frame leaves the queue, even on an error */
    CU_TRY(cudaSetDevice(s->gpu));
    CU_TRY(cudaEventSynchronize(s->ev_down[b]));
    s->device_ms = ev_ms(s->ev_t0[b], s->ev_t1[b]);
    if (s->mode == CUDA_MODE_PROFILE && s->q_n == 0) { /* the component events are this frame's */
        mg_step_timing *tm = &s->timing;
        int n = s->cfg.steps;
        tm->encode_ms = ev_ms(s->ev[0], s->ev[1]);
        for (int i = 0; i < n && i < 16; i++) tm->step_ms[i] = ev_ms(s->ev[1 + i], s->ev[2 + i]);
        tm->refresh_ms = ev_ms(s->ev[1 + n], s->ev[2 + n]);
        tm->decode_ms = ev_ms(s->ev[2 + n], s->ev[3 + n]);
    }
    memcpy(out_rgb, s->h_out[b], (size_t)s->H * s->W * 3);
    s->timing.total_ms = mg_now_ms() - s->t_sub[b];
    return MG_OK;
}

extern "C" mg_status cuda_stream_step(cuda_stream *s, const uint8_t *in_rgb, uint8_t *out_rgb, const float *noise,
                                      const float *ctx_noise, int prompt, int dream) {
    if (s->q_n) return mg_fail(MG_ERR_ARG, "cuda_stream_step: %d frame%s in flight; collect first", s->q_n,
                               s->q_n == 1 ? "" : "s");
    CU_MG(cuda_stream_submit(s, in_rgb, noise, ctx_noise, prompt, dream));
    return cuda_stream_collect(s, out_rgb);
}

extern "C" int cuda_stream_in_flight(const cuda_stream *s) { return s->q_n; }

/* The ring starts over: a refresh still owed to the last frame is dropped with it. */
extern "C" void cuda_stream_reset(cuda_stream *s) { s->frame = 0, s->pending = 0; }
extern "C" int64_t cuda_stream_frame_index(const cuda_stream *s) { return s->frame; }
extern "C" void cuda_stream_set_mode(cuda_stream *s, int mode) { s->mode = mode; }
extern "C" void cuda_stream_last_timing(const cuda_stream *s, mg_step_timing *t) { *t = s->timing; }
extern "C" double cuda_stream_last_device_ms(const cuda_stream *s) { return s->device_ms; }
extern "C" const char *cuda_stream_device_name(const cuda_stream *s) { return cu_ctx_device_name(s->ctx); }
extern "C" size_t cuda_stream_device_bytes(const cuda_stream *s) {
    return cuda_weights_bytes(s->wts) + cuda_stream_own_bytes(s);
}
/* The arena and each cuBLASLt workspace (32 MiB per cu_ctx: the frame's, and with the deferred
 * refresh its own) */
extern "C" size_t cuda_stream_own_bytes(const cuda_stream *s) {
    return s->dev_bytes + (size_t)(s->ctx3 ? 2 : 1) * ((size_t)32 << 20);
}
extern "C" int cuda_stream_gpu(const cuda_stream *s) { return s->gpu; }
extern "C" int cuda_stream_fp8(const cuda_stream *s) { return s->fp8; }
extern "C" int cuda_stream_defers(const cuda_stream *s) { return s->defer; }
extern "C" long long cuda_stream_deferred(const cuda_stream *s) { return s->deferred_run; }
extern "C" const cuda_weights *cuda_stream_weights(const cuda_stream *s) { return s->wts; }
extern "C" double cuda_stream_flops(const cuda_stream *s) { return s->flops; }

extern "C" double cuda_stream_device_used_mib(const cuda_stream *s) {
    size_t fr = 0, total = 0;
    if (cudaSetDevice(s->gpu) != cudaSuccess || cudaMemGetInfo(&fr, &total) != cudaSuccess) return 0.0;
    return (double)(total - fr) / 1048576.0;
}

extern "C" mg_status cuda_stream_latent(const cuda_stream *s, float *out) {
    if (s->q_n) return mg_fail(MG_ERR_ARG, "cuda_stream_latent: %d frame(s) in flight; collect first", s->q_n);
    CU_TRY(cudaSetDevice(s->gpu));
    CU_TRY(cudaMemcpy(out, s->d_noise, s->lat * 4, cudaMemcpyDeviceToHost));
    return MG_OK;
}
