/* Training batches: what one optimizer step (or one validation pass) trains on, built from the
 * dataset (src/data/data.h) and the prompts' degradations (src/eval/degrade.h).
 *
 * Every random choice is a pure function of (run seed, step, item index): the clip drawn, the
 * prompt, the degradation strengths, the noise, the per-frame noise levels, the history
 * corruption and the prompt dropout. A resumed run therefore trains on exactly the batches an
 * uninterrupted run would have, whatever the thread count or the prefetching.
 *
 * A batch is made in two phases so the trainer can overlap them with training:
 *   batch_sample   the dataset read, degradations and random draws (CPU, OpenMP over items)
 *   batch_encode   the frozen encoder over the inputs and targets (dit stage; CPU with
 *                  batch_encode_cpu, or the GPU with cuda_tae_encode into b->cond and b->x0),
 *                  then batch_finish applies history augmentation (needs the latents).
 * Stage tae needs only batch_sample. See docs/TRAINING.md for every distribution and why. */
#ifndef MG_TRAIN_BATCH_H
#define MG_TRAIN_BATCH_H

#include <stdint.h>

#include "core/rng.h"
#include "data/data.h"
#include "eval/degrade.h"
#include "model/model.h"
#include "train/train.h"

typedef enum train_stage { STAGE_TAE = 0, STAGE_DIT = 1 } train_stage;

typedef struct batch_cfg {
    train_stage stage;
    int B;                /* items per batch */
    int T;                /* frames per clip (dit); tae uses single frames */
    int S;                /* frame side, a multiple of 16 */
    int window;           /* K: history frames each frame sees (dit) */
    int hist_aug;         /* 1: corrupt the history's clean latents (dit) */
    float prompt_dropout; /* probability of training a clip with prompt row 0 (none) */
    float fades;          /* share of dit clips that fade to or from black, or hold black frames */
    uint64_t seed;        /* the run's seed */
    int item0;            /* the global index of item 0: a data-parallel rank makes items
                           * item0..item0+B-1 of the global batch (dist.h); 0 otherwise */
    int cpu_encode;       /* dit: allocate the scratch of batch_encode_cpu (CPU runs) */
    int device_styles;    /* dit: the toon and sketch targets are left as the real frames, their
                           * style in train_batch.style, for the GPU encoder to make them there
                           * (cuda_tae_encoder_run, the same bytes): on the CPU they were most of a
                           * batch's cost */
    mg_config cfg;        /* the model's sizes, sigma_ctx and shift */
    int n_prompts;
    char prompts[MG_MAX_PROMPTS][32];
    uint64_t prompt_mask; /* the rows items are drawn from (bit i: row i; --train-prompts); 0: every
                           * row with training pairs */
    int weighted;         /* 1: rows drawn in proportion to prompt_weight, else uniformly */
    float prompt_weight[MG_MAX_PROMPTS];
} batch_cfg;

/* One item's random draws (for logs and tests). */
typedef struct batch_item {
    int prompt;           /* the prompt whose (input, target) pair was made */
    int row;              /* the prompt row the model is given: prompt, or 0 after dropout */
    int dream;            /* 1: the input is dropped (cond NULL) */
    int aug[64];          /* dit: 1 where frame t's history latent is corrupted (t < 64) */
    degrade_params dp;    /* dit: the degradation strengths of the clip */
} batch_item;

typedef struct train_batch {
    int B, T, S, lh, lw, Z;
    uint8_t *in_rgb;      /* (B, T, S, S, 3) the model's input frames (tae: the images, T=1) */
    uint8_t *tgt_rgb;     /* (B, T, S, S, 3) the targets (dit) */
    float *img;           /* tae: (B, S, S, 3) the images in [0, 1] */
    float *cond, *x0;     /* dit: (B, T, lh, lw, Z) encoded inputs, encoded targets */
    float *x0_in;         /* dit: (B, T, lh, lw, Z) x0 with the history corrupted */
    float *eps;           /* dit: (B, T, lh, lw, Z) noise */
    float *sigma;         /* dit: (B, T) noise level per frame */
    float *aug_draw;      /* dit: (B, T, 8) history corruption parameters (see batch.c) */
    uint8_t *style;       /* dit: (B, T) the STYLE_* (eval/degrade.h) each target still needs:
                           * STYLE_NONE unless device_styles */
    batch_item *item;     /* (B) */
    float *enc_img;       /* (threads, S, S, 3) + */
    float *enc_work;      /* (threads, tae work) scratch of batch_encode_cpu */
    int enc_threads;
    size_t enc_work_floats;
    long step;            /* what batch_sample made: step, or -1 - k for validation batch k */
    void *mem;
    size_t mem_bytes;
} train_batch;

/* The cfg part of a train_params (sizes, prompts) into bc. */
void batch_cfg_from_params(batch_cfg *bc, const train_params *tp);
/* --train-prompts LIST (after batch_cfg_from_params): prompt_mask, and with NAME=W entries the
 * weights (1 where a name has none). A name that is not a prompt of the model with training
 * pairs, a weight not above 0 or an empty list is MG_ERR_ARG with a message. */
mg_status batch_cfg_prompts(batch_cfg *bc, const char *list);
mg_status batch_alloc(train_batch *b, const batch_cfg *bc);
void batch_free(train_batch *b);

/* Phase 1. step >= 0 draws a training batch from ds (the train split); step = -1 - k draws
 * validation batch k (fixed seeds, the same at every validation). */
mg_status batch_sample(train_batch *b, const batch_cfg *bc, dataset *ds, long step);
/* Phase 2 on the CPU: cond = enc(input), x0 = enc(target) with the frozen model's encoder,
 * then batch_finish. OpenMP over frames. */
mg_status batch_encode_cpu(train_batch *b, const batch_cfg *bc, const mg_model *frozen);
/* x0_in from x0 and the draws of batch_sample (history augmentation); call after cond and x0
 * are filled (batch_encode_cpu calls it). */
void batch_finish(train_batch *b, const batch_cfg *bc);
/* The dit clips of the batch, pointing into b. */
void batch_clips(const train_batch *b, const batch_cfg *bc, dit_clip *clips);

/* ---- the pieces, exposed for tests ---- */

/* A seed for (run seed, step, item, purpose): splitmix64 over the four. */
uint64_t batch_seed(uint64_t seed, long step, int item, int purpose);
/* Per-frame noise levels (diffusion forcing): each frame independently a history level near
 * sigma_ctx, or a denoising level (half uniform in (0, 1], half on the sampler's grids for 1..4
 * steps). is_ctx[t] (may be NULL) gets 1 for history-level frames. */
void sigma_sample(float *sigma, int *is_ctx, int T, const mg_config *cfg, mg_rng *r);
/* The history corruption of one latent frame (lh, lw, Z): a 3x3 blur mixed in by d[0], a
 * per-channel gain d[1..4]-ish and offset (see batch.c). In place on x. */
void hist_aug_apply(float *x, int lh, int lw, int Z, const float *d);

#endif
