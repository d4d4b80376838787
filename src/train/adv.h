/* The adversarial term of stage tae (`mirage train tae --adv W`, docs/TRAINING.md): a PatchGAN
 * discriminator D on the RGB image, trained with the hinge loss against the autoencoder's
 * reconstructions, and the generator term W x (-mean D(rec)) added to the autoencoder's loss.
 * An L1 + L2 decoder draws the mean of what the latent leaves open, which is smooth (issue 6,
 * DECISIONS 19); D charges it for looking unlike a real image instead.
 *
 * D, HWC like the rest of the CPU trainer, one logit per 8x8 patch:
 *   c0 conv3x3 s2 3 -> 64, LeakyReLU(0.2); c1 conv3x3 s2 64 -> 64, LeakyReLU(0.2);
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

typedef struct adv_disc {
    train_params dp;           /* D's tensors (param, grad, m, v; ema unused), 8 of them */
    tae_conv cv[ADV_LAYERS];   /* views into dp, packed copies in mem */
    int cap_H, cap_W;
    float *act[ADV_LAYERS];    /* (H/2, W/2, 64), (H/4, W/4, 64), (H/8, W/8, 64) after LeakyReLU;
                                * [3] (H/8, W/8, 1) the logits */
    float *g[3];               /* (H/2, W/2, 64) activation gradients, rotated */
    float *dlog;               /* (H/8, W/8) gradient of the logits */
    float *drec;               /* (H, W, 3) the generator term's gradient for the last image */
    float *gw_dump;            /* (dp.count) weight gradients of the generator pass, discarded */
    float *fwd_scratch, *bwd_scratch;
    float *mem;                /* the one allocation (besides dp's) */
    size_t mem_bytes;
} adv_disc;

/* What a batch of adv_image calls measured (sums; the trainer divides). */
typedef struct adv_stats {
    double ld;       /* sum over images of L_D */
    double g;        /* sum over images of -mean D(rec) (the generator term before W) */
    long correct;    /* patches with D(img) > 0, plus patches with D(rec) < 0 */
    long total;      /* 2 x patches */
} adv_stats;

/* Draws D from seed (uniform in +-1/sqrt(fan_in) for weights and biases, per-tensor seeds
 * seed ^ fnv1a(name) as the model's init: exact, reproducible) and sizes the activations for
 * images up to H x W (multiples of 8). */
mg_status adv_init(adv_disc *ad, uint64_t seed, int H, int W);
void adv_free(adv_disc *ad);
/* The logits D(x) of one image x (H, W, 3): ad->act[3], (H/8, W/8). */
mg_status adv_forward(adv_disc *ad, const float *x, int H, int W);
/* One image of a training step (see the top of this file): D's gradients += scale x dL_D/dθ;
 * with w_gen != 0, ad->drec = scale x w_gen x d(-mean D(rec))/drec (else ad->drec is not
 * written). *ld gets this image's L_D; st (may be NULL) accumulates. */
mg_status adv_image(adv_disc *ad, const float *img, const float *rec, int H, int W, float scale, float w_gen,
                    double *ld, adv_stats *st);

#endif
