/* The frozen encoder of the DiT stage (cuda_train.h, cuda_tae_encoder_*): frames -> latents with
 * the inference engine's convs (src/cuda/conv.cu: cu_conv3x3_igemm for the c -> c layers,
 * bf16 activations, fp32 accumulation; cu_conv3x3_direct for enc.in from the u8 frame and
 * enc.out to the fp32 latent), over many frames per launch.
 *
 * Why not cuda_tae_encode: the training autoencoder's forward is an im2col gather (9x the map)
 * and a cuBLAS GEMM with an fp32 result, then an epilogue pass, for every conv: built for the
 * backward, it is memory-bound, and the DiT stage pushes 2 B T frames (input and target of
 * every frame: 192 at batch 16 x 6) through it per step. Measured in tests/gpu/
 * test_cuda_train_encode.c and docs/RESULTS.md ("trainer step").
 *
 * Batching without a batched kernel: the library's convs take one image. A chunk of k frames
 * is laid out as one tall image, frame after frame, with g zero rows after each frame (g = 8 at
 * full size, 4, 2, 1 at the 1/2, 1/4, 1/8 levels): a 3x3 conv with pad 1 reads one row above
 * and below, and the zero rows are exactly the padding each frame would see alone. The stride-2
 * convs keep the layout (a period of H + 8 rows halves to H/2 + 4, and output row b P/2 + j is
 * centred on input row b P + 2j). A conv's outputs on the gap rows read real rows, so they are
 * zeroed after every conv (one strided memset) before the next conv reads them. The cost: 8 of
 * every H + 8 rows computed for nothing (3% at 256x256).
 *
 * The weights are copied at cuda_tae_encoder_new (bf16 kernels, fp32 biases): the DiT stage's
 * autoencoder is frozen. The encoder owns its stream, so one thread can encode the next batch
 * while another trains on the cuda_params stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_train.h"

extern "C" {
#include "eval/degrade.h" /* STYLE_* */
}

#define ENC_GAP 8 /* zero rows after each frame at full size; 8 >> level below */

typedef struct enc_conv {
    bf16 *w;   /* (co, 9 ci), k = (ky*3 + kx)*ci + c: conv.cu's layout */
    float *b;  /* (co) */
    int w_idx, b_idx, ci, co;
} enc_conv;

#define ENC_NCONV (2 + 3 + 3 * MG_TAE_BLOCKS)

struct cuda_tae_encoder {
    int dev;
    cudaStream_t st;
    int c, Z;
    size_t cap_pix;  /* pixels of the full-size tall image a chunk may fill, gap rows included */
    enc_conv in, down[3], out, blk[MG_TAE_BLOCKS][3];
    uint8_t *u8;     /* (cap_pix, 3) */
    uint8_t *kinds;  /* (cap_pix / 128) the STYLE_* of a chunk's frames (at most that many of 8x8) */
    bf16 *fm[3];     /* (cap_pix, c) each */
    float *lat;      /* (cap_pix / 64, Z) the tall latent */
    void *mem;
    size_t bytes;
};

__global__ void k_enc_prep(bf16 *wt, const float *__restrict__ w, int ci, int co) {
    pdl_wait();
    pdl_trigger();
    int K = 9 * ci;
    size_t n = (size_t)co * K;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        int o = (int)(e / K), k = (int)(e % K);
        wt[e] = f2bf(w[((size_t)o * ci + k % ci) * 9 + k / ci]); /* PyTorch (co, ci, 3, 3) */
    }
}

static mg_status bind(const train_params *tp, enc_conv *cv, const char *name, int bias) {
    char nm[64];
    snprintf(nm, sizeof nm, "%.48s.weight", name);
    cv->w_idx = train_params_find(tp, nm);
    if (cv->w_idx < 0 || tp->table[cv->w_idx].rank != 4)
        return mg_fail(MG_ERR_FORMAT, "cuda_tae_encoder: tensor %s missing or not a conv kernel", nm);
    cv->co = (int)tp->table[cv->w_idx].shape[0];
    cv->ci = (int)tp->table[cv->w_idx].shape[1];
    cv->b_idx = -1;
    if (bias) {
        snprintf(nm, sizeof nm, "%.48s.bias", name);
        if ((cv->b_idx = train_params_find(tp, nm)) < 0)
            return mg_fail(MG_ERR_FORMAT, "cuda_tae_encoder: tensor %s missing", nm);
    }
    return MG_OK;
}

/* every conv of the encoder, in file order */
static int list_convs(cuda_tae_encoder *e, enc_conv **cv, char (*names)[48], int *bias) {
    int k = 0;
#define ADD(p, b, ...) (cv[k] = (p), snprintf(names[k], 48, __VA_ARGS__), bias[k] = (b), k++)
    ADD(&e->in, 1, "enc.in");
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) ADD(&e->down[i / 3], 0, "enc.down%d", i / 3 + 1);
        for (int j = 0; j < 3; j++) ADD(&e->blk[i][j], 1, "enc.b%d.c%d", i, j + 1);
    }
    ADD(&e->out, 1, "enc.out");
#undef ADD
    return k;
}

static size_t layout(cuda_tae_encoder *e, char *base, enc_conv **cv, int nconv) {
    size_t off = 0;
#define TAKE(ptr, bytes)                                                      \
    do {                                                                      \
        *(void **)&(ptr) = base ? (void *)(base + off) : NULL;                \
        off += ((size_t)(bytes) + 255) / 256 * 256;                           \
    } while (0)
    TAKE(e->u8, e->cap_pix * 3);
    TAKE(e->kinds, e->cap_pix / 128);
    for (int i = 0; i < 3; i++) TAKE(e->fm[i], e->cap_pix * e->c * 2);
    TAKE(e->lat, e->cap_pix / 64 * e->Z * 4);
    for (int k = 0; k < nconv; k++) {
        TAKE(cv[k]->w, (size_t)cv[k]->co * 9 * cv[k]->ci * 2);
        TAKE(cv[k]->b, (size_t)cv[k]->co * 4);
    }
#undef TAKE
    return off;
}

extern "C" mg_status cuda_tae_encoder_new(cuda_tae_encoder **out, cuda_params *cp, int n, int H, int W) {
    *out = NULL;
    if (!cp || !cp->impl) return mg_fail(MG_ERR_ARG, "cuda_tae_encoder_new: the device training state is not initialised");
    if (n < 1 || H < 8 || W < 8 || H % 8 || W % 8)
        return mg_fail(MG_ERR_SHAPE, "cuda_tae_encoder_new: %d frames of %dx%d: expected n >= 1 and sizes that are "
                       "multiples of 8", n, W, H);
    const train_params *tp = cp->tp;
    const mg_config *cf = &tp->cfg;
    if (!cu_conv3x3_igemm_ok(cf->tae_ch, cf->tae_ch) || cf->z_ch > 4 || (size_t)9 * cf->tae_ch * 8 * 4 > 48 * 1024)
        return mg_fail(MG_ERR_UNSUPPORTED, "cuda_tae_encoder: config %s (tae_ch %d, z_ch %d): needs tae_ch a multiple "
                       "of 32 up to 160 and z_ch <= 4 (the inference convs)", cf->name, cf->tae_ch, cf->z_ch);
    cuda_tae_encoder *e = (cuda_tae_encoder *)calloc(1, sizeof *e);
    if (!e) return mg_fail(MG_ERR_NOMEM, "out of memory for cuda_tae_encoder");
    e->c = cf->tae_ch, e->Z = cf->z_ch;
    e->cap_pix = (size_t)n * (H + ENC_GAP) * W;
    enc_conv *cv[ENC_NCONV];
    char names[ENC_NCONV][48];
    int bias[ENC_NCONV];
    int nconv = list_convs(e, cv, names, bias);
    mg_status s = MG_OK;
    for (int k = 0; k < nconv && s == MG_OK; k++) s = bind(tp, cv[k], names[k], bias[k]);
    if (s == MG_OK && (e->in.ci != 3 || e->in.co != e->c || e->out.ci != e->c || e->out.co != e->Z))
        s = mg_fail(MG_ERR_FORMAT, "cuda_tae_encoder: enc.in %d->%d, enc.out %d->%d: expected 3->%d and %d->%d",
                    e->in.ci, e->in.co, e->out.ci, e->out.co, e->c, e->c, e->Z);
    if (s != MG_OK) {
        free(e);
        return s;
    }
    e->bytes = layout(e, NULL, cv, nconv);
    if (cudaGetDevice(&e->dev) != cudaSuccess || cudaMalloc(&e->mem, e->bytes) != cudaSuccess) {
        cudaGetLastError();
        s = mg_fail(MG_ERR_NOMEM, "cuda_tae_encoder: cannot allocate %.1f MiB on the device for %d frames of %dx%d",
                    e->bytes / 1048576.0, n, W, H);
        free(e);
        return s;
    }
    layout(e, (char *)e->mem, cv, nconv);
    *out = e;
#define NEW_TRY(call)                                                               \
    do {                                                                            \
        if ((s = (call)) != MG_OK) {                                                \
            cuda_tae_encoder_free(e);                                               \
            *out = NULL;                                                            \
            return s;                                                               \
        }                                                                           \
    } while (0)
    NEW_TRY(cuda_params_sync(cp)); /* the parameters are written on the training stream */
    cudaError_t ce = cudaStreamCreateWithFlags(&e->st, cudaStreamNonBlocking);
    NEW_TRY(ce == cudaSuccess ? MG_OK : cu_fail(__FILE__, __LINE__, "cudaStreamCreateWithFlags", cudaGetErrorString(ce)));
    ce = cudaMemsetAsync(e->mem, 0, e->bytes, e->st);
    NEW_TRY(ce == cudaSuccess ? MG_OK : cu_fail(__FILE__, __LINE__, "cudaMemsetAsync", cudaGetErrorString(ce)));
    cu_pdl_fence();
    for (int k = 0; k < nconv; k++) {
        const float *w = cp->param + tp->offset[cv[k]->w_idx];
        size_t nw = (size_t)cv[k]->co * 9 * cv[k]->ci;
        ce = cu_launch(k_enc_prep, dim3(cu_blocks(nw, 256) < 1024 ? cu_blocks(nw, 256) : 1024), dim3(256), 0, e->st,
                       (bf16 *)cv[k]->w, w, cv[k]->ci, cv[k]->co);
        NEW_TRY(ce == cudaSuccess ? MG_OK : cu_fail(__FILE__, __LINE__, "k_enc_prep", cudaGetErrorString(ce)));
        if (cv[k]->b_idx >= 0) {
            ce = cudaMemcpyAsync(cv[k]->b, cp->param + tp->offset[cv[k]->b_idx], (size_t)cv[k]->co * 4,
                                 cudaMemcpyDeviceToDevice, e->st);
            cu_pdl_fence();
            NEW_TRY(ce == cudaSuccess ? MG_OK : cu_fail(__FILE__, __LINE__, "cudaMemcpyAsync", cudaGetErrorString(ce)));
        } else {
            cv[k]->b = NULL;
        }
    }
    ce = cudaStreamSynchronize(e->st);
    NEW_TRY(ce == cudaSuccess ? MG_OK : cu_fail(__FILE__, __LINE__, "cudaStreamSynchronize", cudaGetErrorString(ce)));
#undef NEW_TRY
    return MG_OK;
}

extern "C" void cuda_tae_encoder_free(cuda_tae_encoder *e) {
    if (!e) return;
    if (e->st) {
        cudaStreamSynchronize(e->st);
        cudaStreamDestroy(e->st);
    }
    cudaFree(e->mem);
    free(e);
}

extern "C" size_t cuda_tae_encoder_bytes(const cuda_tae_encoder *e) { return e ? e->bytes : 0; }

/* zero the gap rows of a tall map: k frames of h rows, then g gap rows, w pixels of ch elements
 * of es bytes */
static mg_status zero_gaps(cudaStream_t st, void *map, int k, int h, int g, int w, int ch, int es) {
    size_t row = (size_t)w * ch * es;
    CU_TRY(cudaMemset2DAsync((char *)map + (size_t)h * row, (size_t)(h + g) * row, 0, (size_t)g * row, (size_t)k, st));
    cu_pdl_fence();
    return MG_OK;
}

/* out = conv(in) on the tall image of k frames at level l (h x w per frame), gaps re-zeroed */
static mg_status conv(const cuda_tae_encoder *e, bf16 *out, const bf16 *in, const enc_conv *cv, const bf16 *res,
                      int k, int h, int w, int l, int stride, int relu) {
    int g = ENC_GAP >> l;
    CU_MG(cu_conv3x3_igemm((bf16_t *)out, (const bf16_t *)in, (const bf16_t *)cv->w, cv->b, (const bf16_t *)res, k * (h + g), w, cv->ci, cv->co, stride, 0, relu, e->st));
    if (stride == 2) h /= 2, w /= 2, g /= 2;
    return zero_gaps(e->st, out, k, h, g, w, cv->co, 2);
}

/* k frames (h, w, 3) host into the tall image (the gap rows zeroed: a call with other sizes moved
 * them), then those with a style (styles, host; NULL: none) styled there; fm[1] and fm[2] are
 * the styles' scratch (k h w 3 floats need 12 bytes a pixel, they have 2 c >= 64) */
static mg_status upload(cuda_tae_encoder *e, const uint8_t *frames, const uint8_t *styles, int k, int H, int W) {
    size_t frame = (size_t)H * W * 3;
    CU_TRY(cudaMemcpy2DAsync(e->u8, (size_t)(H + ENC_GAP) * W * 3, frames, frame, frame, (size_t)k,
                             cudaMemcpyHostToDevice, e->st));
    cu_pdl_fence();
    CU_MG(zero_gaps(e->st, e->u8, k, H, ENC_GAP, W, 3, 1));
    int any = 0;
    for (int i = 0; styles && i < k; i++) any |= styles[i] != STYLE_NONE;
    if (!any) return MG_OK;
    CU_TRY(cudaMemcpyAsync(e->kinds, styles, (size_t)k, cudaMemcpyHostToDevice, e->st));
    cu_pdl_fence();
    return cu_style_frames(e->u8, k, H, W, (size_t)(H + ENC_GAP) * W * 3, e->kinds, (float *)e->fm[1], (float *)e->fm[2],
                           e->st);
}

/* lat (k, h/8, w/8, Z) host = enc(frames (k, h, w, 3) host, styled where styles says) */
static mg_status encode_chunk(cuda_tae_encoder *e, const uint8_t *frames, const uint8_t *styles, int k, int H, int W,
                              float *lat) {
    size_t lh = H / 8, lw = W / 8, lrow = lw * e->Z * 4;
    CU_MG(upload(e, frames, styles, k, H, W));
    bf16 *cur = e->fm[0], *oth = e->fm[1], *tmp = e->fm[2];
    int h = H, w = W, l = 0;
    CU_MG(cu_conv3x3_direct(cur, CU_BF16, e->u8, CU_U8, (const bf16_t *)e->in.w, e->in.b, k * (H + ENC_GAP), W, 3, e->c, 1, 0, 0, e->st));
    CU_MG(zero_gaps(e->st, cur, k, h, ENC_GAP, w, e->c, 2));
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) {
            CU_MG(conv(e, oth, cur, &e->down[i / 3], NULL, k, h, w, l, 2, 0));
            h /= 2, w /= 2, l++;
            bf16 *t = cur;
            cur = oth, oth = t;
        }
        /* a Block: x = relu(c3(relu(c2(relu(c1(x))))) + x) */
        CU_MG(conv(e, oth, cur, &e->blk[i][0], NULL, k, h, w, l, 1, 1));
        CU_MG(conv(e, tmp, oth, &e->blk[i][1], NULL, k, h, w, l, 1, 1));
        CU_MG(conv(e, cur, tmp, &e->blk[i][2], cur, k, h, w, l, 1, 1));
    }
    int g = ENC_GAP >> l;
    CU_MG(cu_conv3x3_direct(e->lat, CU_F32, cur, CU_BF16, (const bf16_t *)e->out.w, e->out.b, k * (h + g), w, e->c, e->Z, 1, 0, 0, e->st));
    /* the frames' rows of the tall latent, without the gap rows */
    CU_TRY(cudaMemcpy2DAsync(lat, lh * lrow, e->lat, (lh + g) * lrow, lh * lrow, (size_t)k, cudaMemcpyDeviceToHost, e->st));
    cu_pdl_fence();
    return MG_OK;
}

/* the checks of _run and _style (`what`) */
static mg_status check_call(const char *what, const cuda_tae_encoder *e, const uint8_t *frames, int n, int H, int W,
                            const void *out) {
    if (!e) return mg_fail(MG_ERR_ARG, "%s: no encoder", what);
    if (n < 0 || (n > 0 && (!frames || !out)))
        return mg_fail(MG_ERR_ARG, "%s: %d frames, frames %p, out %p", what, n, (const void *)frames, out);
    if (H < 8 || W < 8 || H % 8 || W % 8 || (size_t)(H + ENC_GAP) * W > e->cap_pix)
        return mg_fail(MG_ERR_SHAPE, "%s: frames of %dx%d: expected multiples of 8 within the size it was made for", what,
                       W, H);
    return MG_OK;
}

extern "C" mg_status cuda_tae_encoder_run(cuda_tae_encoder *e, const uint8_t *frames, const uint8_t *styles, int n, int H,
                                          int W, float *lat) {
    MG_TRY(check_call("cuda_tae_encoder_run", e, frames, n, H, W, lat));
    if (n == 0) return MG_OK;
    CU_TRY(cudaSetDevice(e->dev)); /* the calling thread may be another than the one that made it */
    int chunk = (int)(e->cap_pix / ((size_t)(H + ENC_GAP) * W));
    size_t frame = (size_t)H * W * 3, lat_n = (size_t)(H / 8) * (W / 8) * e->Z;
    for (int b0 = 0; b0 < n; b0 += chunk) {
        int k = n - b0 < chunk ? n - b0 : chunk;
        CU_MG(encode_chunk(e, frames + b0 * frame, styles ? styles + b0 : NULL, k, H, W, lat + b0 * lat_n));
    }
    CU_TRY(cudaStreamSynchronize(e->st));
    return MG_OK;
}

extern "C" mg_status cuda_tae_encoder_style(cuda_tae_encoder *e, const uint8_t *frames, const uint8_t *styles, int n,
                                            int H, int W, uint8_t *out) {
    MG_TRY(check_call("cuda_tae_encoder_style", e, frames, n, H, W, n > 0 && !styles ? NULL : out));
    if (n == 0) return MG_OK;
    CU_TRY(cudaSetDevice(e->dev));
    int chunk = (int)(e->cap_pix / ((size_t)(H + ENC_GAP) * W));
    size_t frame = (size_t)H * W * 3;
    for (int b0 = 0; b0 < n; b0 += chunk) {
        int k = n - b0 < chunk ? n - b0 : chunk;
        CU_MG(upload(e, frames + b0 * frame, styles + b0, k, H, W));
        CU_TRY(cudaMemcpy2DAsync(out + b0 * frame, frame, e->u8, (size_t)(H + ENC_GAP) * W * 3, frame, (size_t)k,
                                 cudaMemcpyDeviceToHost, e->st));
        cu_pdl_fence();
    }
    CU_TRY(cudaStreamSynchronize(e->st));
    return MG_OK;
}
