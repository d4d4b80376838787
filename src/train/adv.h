/* The adversarial term (`mirage train tae|dit --adv W`, docs/TRAINING.md): a PatchGAN
 * discriminator D, trained with the hinge loss against the model's outputs, and the generator
 * term W x (-mean D(out)) added to the model's loss. A least-squares model draws the mean of
 * what its input leaves open, which is smooth (issue 6, DECISIONS 19); D charges it for looking
 * unlike real data instead.
 *   stage tae: D on the RGB image (cin 3) against the autoencoder's reconstruction;
 *   stage dit: D on the latent (cin Z) against the DiT's one-step estimate of the clean frame,
 *              x0 - sigma (v - (eps - x0)), for every frame at sigma >= ADV_SIGMA_MIN (adv_clips).
 *
 * D, HWC like the rest of the CPU trainer, one logit per 8x8 patch:
 *   c0 conv3x3 s2 cin -> 64, LeakyReLU(0.2); c1 conv3x3 s2 64 -> 64, LeakyReLU(0.2);
 *   c2 conv3x3 s2 64 -> 64, LeakyReLU(0.2); c3 conv3x3 s1 64 -> 1; all with biases.
 * Its tensors live in a train_params of their own ("disc.c0.weight" ... "disc.c3.bias",
 * PyTorch layouts) so adamw_step and the checkpoint treat them like the model's.
 *
 * Per image (adv_image), with scale = 1/B as the autoencoder's backward gets:
 *   L_D = mean relu(1 - D(img)) + mean relu(1 + D(rec))   (rec a constant)
 *   D's gradients  += scale x dL_D/dθ
 *   drec            = scale x d(W x (-mean D(rec)))/drec, through the D of before its step
 * so a batch's D gradient and generator gradient are both taken at the same D, which the
 * trainer then steps once (AdamW) after the batch: simultaneous updates (DECISIONS 21). */
#ifndef MG_TRAIN_ADV_H
#define MG_TRAIN_ADV_H

#include <stdint.h>

#include "train/train.h"

#define ADV_CH 64         /* D's width */
#define ADV_SLOPE 0.2f    /* LeakyReLU */
#define ADV_LAYERS 4
#define ADV_MAX_WORKERS 16
#define ADV_SIGMA_MIN 0.25f /* stage dit: frames noisier than the history are judged */

/* What a batch of adv_image calls measured (sums; the trainer divides). */
typedef struct adv_stats {
    double ld;       /* sum over images of L_D */
    double g;        /* sum over images of -mean D(rec) (the generator term before W) */
    long correct;    /* patches with D(img) > 0, plus patches with D(rec) < 0 */
    long total;      /* 2 x patches */
    long frames;     /* adv_clips: the frames judged */
} adv_stats;

typedef struct adv_disc {
    int cin;                   /* input channels: 3 (images) or the latent's Z */
    train_params dp;           /* D's tensors (param, grad, m, v; ema unused), 8 of them */
    tae_conv cv[ADV_LAYERS];   /* views into dp, packed copies in mem */
    int cap_H, cap_W;
    float *act[ADV_LAYERS];    /* (H/2, W/2, 64), (H/4, W/4, 64), (H/8, W/8, 64) after LeakyReLU;
                                * [3] (H/8, W/8, 1) the logits */
    float *g[3];               /* (H/2, W/2, 64) activation gradients, rotated */
    float *dlog;               /* (H/8, W/8) gradient of the logits */
    float *drec;               /* (H, W, cin) the generator term's gradient for the last image */
    float *fake;               /* (H, W, cin) adv_clips's one-step estimate */
    float *gw_dump;            /* (dp.count) weight gradients of the generator pass, discarded */
    float *fwd_scratch, *bwd_scratch;
    float *mem;                /* the one allocation (besides dp's) */
    struct adv_disc *work;     /* adv_clips' copies of D, n_work of them, made on first use */
    int n_work;
    struct adv_stats st;       /* a worker's figures */
    size_t mem_bytes;
} adv_disc;



/* Draws D from seed (uniform in +-1/sqrt(fan_in) for weights and biases, per-tensor seeds
 * seed ^ fnv1a(name) as the model's init: exact, reproducible) and sizes the activations for
 * inputs of cin channels up to H x W (multiples of 8). */
mg_status adv_init(adv_disc *ad, uint64_t seed, int H, int W, int cin);
void adv_free(adv_disc *ad);
/* The logits D(x) of one input x (H, W, cin): ad->act[3], (H/8, W/8). */
mg_status adv_forward(adv_disc *ad, const float *x, int H, int W);
/* One image of a training step (see the top of this file): D's gradients += scale x dL_D/dθ;
 * with w_gen != 0, ad->drec = scale x w_gen x d(-mean D(rec))/drec (else ad->drec is not
 * written). *ld gets this image's L_D; st (may be NULL) accumulates. */
mg_status adv_image(adv_disc *ad, const float *img, const float *rec, int H, int W, float scale, float w_gen,
                    double *ld, adv_stats *st);
/* Stage dit, n clips (same T, lh, lw) whose forward gave v (n, T, lh, lw, cin): for every frame
 * at sigma >= ADV_SIGMA_MIN, adv_image(real = x0, fake = x0 - sigma (v - (eps - x0))) (D's
 * gradients +=, scale and w_gen as there), and dv_add (n, T, lh, lw, cin) = the generator
 * term's gradient with respect to v, -sigma x drec; 0 for the other frames, and everywhere when
 * w_gen = 0. The frames go to up to ADV_MAX_WORKERS copies of D on the OpenMP threads (frame q
 * to copy q mod k), whose gradients are summed in order: the same sums for the same thread
 * count. st->frames counts the frames judged. */
mg_status adv_clips(adv_disc *ad, const dit_clip *c, int n, const float *v, float *dv_add, float scale, float w_gen,
                    adv_stats *st);

#endif
