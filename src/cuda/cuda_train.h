/* Training on the GPU: the same model, objective and optimizer as the CPU reference
 * (src/train/train.h), with bf16 GEMM/conv operands, fp32 accumulation, and fp32 master
 * weights, gradients, AdamW moments and EMA on the device.
 *
 * The device state mirrors train_params exactly: five flat fp32 arrays with the host's
 * offsets (tp->offset), so a tensor is at the same float offset on both sides and moving the
 * state between them is one copy per array. Gradients accumulate (+=) like the CPU backward
 * ops; zero them before a step. Every function returns an mg_status (MG_ERR_DEVICE naming file
 * and line on a CUDA failure); none allocates after its *_new. Host arrays passed in are
 * copied before the call returns. All work runs on one stream owned by the cuda_params.
 *
 * tests/gpu/test_cuda_train.c holds each piece to the CPU: gradients of the DiT and of the
 * autoencoder against dit_train_backward / tae_train_backward, AdamW, clipping and EMA against
 * optimizer.c, and ten optimizer steps of losses against ref/ (grads_tiny.safetensors). */
#ifndef MG_CUDA_TRAIN_H
#define MG_CUDA_TRAIN_H

#ifdef __cplusplus
extern "C" {
#endif
#include "train/train.h" /* C declarations: C linkage from the .cu files too */
#include "train/adv.h"
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the device copy of the training state (src/cuda/train.cu) -------------------------- */
typedef struct cuda_params {
    const train_params *tp;          /* the host layout (not owned; must outlive this) */
    float *param, *grad, *m, *v, *ema; /* device, tp->count floats each */
    void *impl;                      /* stream, cuBLASLt handle, bf16 weight copy, scratch */
} cuda_params;

/* MG_ERR_UNSUPPORTED "no CUDA device found" without a GPU. Uploads param, m, v and ema;
 * zeroes grad. */
mg_status cuda_params_new(cuda_params *cp, const train_params *tp);
void cuda_params_free(cuda_params *cp);
/* param, m, v, ema (and grad) device -> host, for checkpoints and validation on the CPU. */
mg_status cuda_params_download(const cuda_params *cp, train_params *tp);
const char *cuda_params_device_name(const cuda_params *cp);
/* The cudaStream_t every training kernel of this state runs on, and the cu_ctx (cuda_ops.h:
 * cuBLASLt handle and workspace) that goes with it; both owned by the cuda_params. */
void *cuda_params_stream(const cuda_params *cp);
struct cu_ctx *cuda_params_ctx(const cuda_params *cp);
/* Waits for the stream (the end of a step, before reading results on the host). */
mg_status cuda_params_sync(cuda_params *cp);
mg_status cuda_zero_grad(cuda_params *cp, int first, int last);
/* As grad_clip (optimizer.c): global norm over [first, last) in fp64-accurate sums, scales the
 * gradients by max_norm / (norm + 1e-6) where that is below 1; *norm gets the norm before. */
mg_status cuda_grad_clip(cuda_params *cp, int first, int last, double max_norm, double *norm);
/* As adamw_step: bias-corrected AdamW on [first, last), weight decay on rank >= 2 only. */
mg_status cuda_adamw_step(cuda_params *cp, int first, int last, long step, float lr, const adamw_opts *o);
/* ema = decay * ema + (1 - decay) * param over [first, last). */
mg_status cuda_ema_update(cuda_params *cp, int first, int last, float decay);
/* A bf16 copy of param (uint16 bf16 bits, tp->count of them, the same offsets) for GEMM
 * operands: cuda_params_to_bf16 refreshes tensors [first, last) from param (after each
 * optimizer step); the copy is uninitialised until then. */
const uint16_t *cuda_params_bf16(const cuda_params *cp);
mg_status cuda_params_to_bf16(cuda_params *cp, int first, int last);

/* Gradient-ready hook (data-parallel training, src/cuda/cuda_dist.h): a backward pass calls
 * cuda_params_grad_ready(cp, from) once it has enqueued the last write to every gradient at
 * float offsets >= from of the network it trains (from decreases within a pass: the DiT's
 * backward finishes its tensors from the last to the first). The hook runs on the host at
 * enqueue time and may order work after the stream's work so far (an event). No hook: a no-op.
 * The autoencoder's pass (a CUDA graph) reports nothing; its gradients are reduced after it. */
typedef mg_status (*cuda_grad_hook)(void *user, size_t from);
void cuda_params_set_grad_hook(cuda_params *cp, cuda_grad_hook fn, void *user);
mg_status cuda_params_grad_ready(cuda_params *cp, size_t from);

/* ---- the DiT (src/cuda/dit_train.cu) ----------------------------------------------------- */
typedef struct cuda_dit_train cuda_dit_train;
/* Sized once for batches of up to B clips of up to T frames of lh x lw latents. */
mg_status cuda_dit_train_new(cuda_dit_train **out, cuda_params *cp, int B, int T, int lh, int lw);
void cuda_dit_train_free(cuda_dit_train *dt);
/* Forward and backward over clips[0..n) (n <= B; same T, lh, lw, window for all): grad +=
 * scale * d(sum of the clips' losses)/d params over the DiT's tensors; losses[i] gets clip i's
 * loss (mean over its elements of (v - (ε - x0))^2), as dit_train_forward. */
mg_status cuda_dit_train_step(cuda_dit_train *dt, const dit_clip *clips, int n, float scale, float *losses);
/* --adv (adv.h): after each step's forward, v (n*T frames of lh x lw x Z, host) is handed to
 * fn, which writes dv_add (same shape, host; the caller's scale in it); the backward adds it to
 * the loss's gradient with respect to v. One round trip and a sync per step. NULL turns it off. */
typedef mg_status (*cuda_dv_hook)(void *user, const dit_clip *clips, int n, const float *v, float *dv_add);
mg_status cuda_dit_train_set_dv_hook(cuda_dit_train *dt, cuda_dv_hook fn, void *user);
/* The forward alone (validation): losses[i] as above; gradients untouched. */
mg_status cuda_dit_train_loss(cuda_dit_train *dt, const dit_clip *clips, int n, float *losses);
/* GEMM floating-point operations issued since cuda_dit_train_new (2*M*N*K each, the recomputed
 * attention scores and masked window keys included): for throughput reports. */
double cuda_dit_train_flops(const cuda_dit_train *dt);
/* Test hook (tests/gpu/test_cuda_dit_train.c): the first n floats of an fp32 activation of the
 * last pass ("x", "mod", "pr", "xm", "h", "f", "v", "c", "t1"), laid out as dit_acts (train.h)
 * for the pass's clips*T frames, device -> host. */
mg_status cuda_dit_train_peek(cuda_dit_train *dt, const char *what, float *host, size_t n);

/* ---- the autoencoder (src/cuda/tae_train.cu) --------------------------------------------- */
typedef struct cuda_tae_train cuda_tae_train;
/* Sized once for batches of up to B images of up to H x W (multiples of 8). */
mg_status cuda_tae_train_new(cuda_tae_train **out, cuda_params *cp, int B, int H, int W);
void cuda_tae_train_free(cuda_tae_train *tt);
/* img (n, H, W, 3) in [0, 1], host. grad += scale * d(sum of the images' losses)/d params over
 * the autoencoder's tensors; losses[i] = mean |rec - img| + mean (rec - img)^2 for image i, as
 * tae_train_forward. */
mg_status cuda_tae_train_step(cuda_tae_train *tt, const float *img, int n, int H, int W, float scale,
                              float *losses);
mg_status cuda_tae_train_loss(cuda_tae_train *tt, const float *img, int n, int H, int W, float *losses);
/* The encoder alone on u8 frames (n, H, W, 3), host: lat (n, H/8, W/8, Z) fp32, host. For the
 * DiT stage, whose autoencoder is frozen. */
mg_status cuda_tae_encode(cuda_tae_train *tt, const uint8_t *frames, int n, int H, int W, float *lat);
/* The decoder alone: lat (n, H/8, W/8, Z) host -> frames (n, H, W, 3) u8 host (samples). */
mg_status cuda_tae_decode(cuda_tae_train *tt, const float *lat, int n, int H, int W, uint8_t *frames);
/* GEMM FLOPs of the last step, loss, encode or decode (9 Ci Co multiply-adds per output pixel
 * and pass: the forward, the weight and the data gradients), for throughput reports; and the
 * bytes of device memory the state holds. */
/* The Laplacian term's weight (--hf-loss, tae_train.hf; 0 by default). */
void cuda_tae_train_set_hf(cuda_tae_train *tt, float hf);
/* --freeze-encoder (tae_train.freeze_encoder): on, the backward stops at dec.in's weight
 * gradient (no latent gradient, no encoder pass); the decoder's gradients are the same bits,
 * the encoder's are left as they were. Off by default. */
void cuda_tae_train_set_freeze_encoder(cuda_tae_train *tt, int on);
/* The adversarial term (--adv, train/adv.h) on the device. dcp: D's own device state, a
 * cuda_params over an adv_disc's dp (not owned; must outlive tt, or be detached with NULL);
 * w_gen: the generator weight of the next steps (0 before --adv-start: D still trains). With D
 * attached, cuda_tae_train_step also does what adv_image does for each image, batched: D's
 * gradients (dcp->grad, accumulated like the model's) += scale x dL_D/dθ, and with w_gen != 0
 * the reconstruction's gradient += scale x w_gen x d(-mean D(rec))/drec before the
 * autoencoder's backward; both at D's present weights (step D with cuda_adamw_step on dcp
 * after the batch, and sync dcp's stream before the next step: D's kernels run on tt's).
 * Attaching or detaching D makes a new device arena (the convs' scratch grows to D's needs),
 * so it is part of the setup; changing w_gen is free. On an error tt may only be freed. */
mg_status cuda_tae_train_set_adv(cuda_tae_train *tt, cuda_params *dcp, float w_gen);
/* D's figures of the last step (or adv_pass) as adv_image's: ld[i] (may be NULL) image i's
 * L_D; st (may be NULL) accumulates the sums (images of a step with D; none after a loss
 * pass). */
mg_status cuda_tae_train_adv_stats(const cuda_tae_train *tt, double *ld, adv_stats *st);
/* Test hook (tests/gpu/test_cuda_adv.c): D's part of a step alone, on host img and rec (n, H,
 * W, 3) with the scale and the attached w_gen: D's gradients += as a step; drec (n, H, W, 3),
 * host, gets the generator gradient alone (zeros when w_gen is 0); the stats as a step's. */
mg_status cuda_tae_train_adv_pass(cuda_tae_train *tt, const float *img, const float *rec, int n, int H, int W,
                                  float scale, float *drec);
double cuda_tae_train_flops(const cuda_tae_train *tt);
size_t cuda_tae_train_bytes(const cuda_tae_train *tt);

/* ---- the frozen encoder of the DiT stage (src/cuda/train_encode.cu) ---------------------- */
/* The inference engine's bf16 implicit-GEMM convs over many frames per launch: the latents
 * agree with cuda_tae_encode / tae_encode at bf16 level, several times faster. The encoder
 * weights are copied from cp->param at _new (frozen: make a new one after changing them). It
 * owns its stream and device buffers: one thread at a time may call _run, any thread. */
typedef struct cuda_tae_encoder cuda_tae_encoder;
/* Sized for chunks of n frames of H x W (multiples of 8); larger batches go in chunks. */
mg_status cuda_tae_encoder_new(cuda_tae_encoder **out, cuda_params *cp, int n, int H, int W);
void cuda_tae_encoder_free(cuda_tae_encoder *e);
/* frames (n, H, W, 3) u8, host -> lat (n, H/8, W/8, Z) fp32, host; any n >= 0, frames of at
 * most the size it was made for; returns when lat is written. styles (n, host) or NULL: frame
 * i is first given the target style_apply makes of it where styles[i] is STYLE_TOON or
 * STYLE_SKETCH (on the device, the same bytes: src/cuda/style.cu), so the CPU need not. */
mg_status cuda_tae_encoder_run(cuda_tae_encoder *e, const uint8_t *frames, const uint8_t *styles, int n, int H, int W,
                               float *lat);
/* The styling alone: out (n, H, W, 3) host = frames styled as _run would encode them. */
mg_status cuda_tae_encoder_style(cuda_tae_encoder *e, const uint8_t *frames, const uint8_t *styles, int n, int H, int W,
                                 uint8_t *out);
size_t cuda_tae_encoder_bytes(const cuda_tae_encoder *e);

#ifdef __cplusplus
}
#endif
#endif
