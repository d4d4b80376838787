/* The training loop behind `mirage train tae|dit` (src/cli/cmd_train.c): batches (batch.h)
 * prepared on a thread one step ahead, the CPU reference passes (train.h) or the GPU ones
 * (cuda_train.h, in a CUDA build), AdamW with warm-up + cosine LR, clipping, EMA, validation,
 * samples, checkpoints (checkpoint.h) and a clean stop at a time limit or on SIGINT/SIGTERM.
 * docs/TRAINING.md documents every option and default. */
#ifndef MG_TRAIN_TRAINER_H
#define MG_TRAIN_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "core/safetensors.h"
#include "train/batch.h"
#include "train/dist.h"

/* Options that shape the run: fixed at the start and kept in the checkpoint; on --resume an
 * explicitly given value that differs is an error, an omitted one is taken from the checkpoint. */
enum {
    TO_SEED = 1 << 0, TO_STEPS = 1 << 1, TO_BATCH = 1 << 2, TO_SIZE = 1 << 3, TO_FRAMES = 1 << 4,
    TO_WINDOW = 1 << 5, TO_LR = 1 << 6, TO_LR_MIN = 1 << 7, TO_WARMUP = 1 << 8, TO_CLIP = 1 << 9,
    TO_EMA = 1 << 10, TO_HIST_AUG = 1 << 11, TO_DROPOUT = 1 << 12, TO_VAL_CLIPS = 1 << 13,
    TO_WD = 1 << 14, TO_FADES = 1 << 15, TO_SIGMA_CTX = 1 << 16, TO_HF = 1 << 17, TO_FREEZE = 1 << 18,
    TO_ADV = 1 << 19, TO_ADV_START = 1 << 20, TO_ADV_LR = 1 << 21, TO_PROMPTS = 1 << 22,
};

typedef struct train_opts {
    train_stage stage;
    const char *data;       /* dataset directory (train and val shards) */
    const char *out;        /* the model file (EMA weights) */
    const char *ckpt;       /* the checkpoint index (NULL: derived from out) */
    const char *samples;    /* sample directory (NULL: derived from out) */
    const char *init;       /* weights to start from (dit: the trained autoencoder) */
    const char *config;     /* or a fresh model of this config */
    int resume;             /* continue from ckpt when it exists */
    int fresh_dit;          /* dit with --init: keep the file's autoencoder, draw a fresh DiT */
    unsigned given;         /* TO_* bits of the options given on the command line */
    /* fixed for the run */
    uint64_t seed;
    long steps;
    int batch, size, frames, window, val_clips, hist_aug;
    float lr, lr_min, clip, ema, prompt_dropout, weight_decay;
    float fades;            /* dit: share of clips that fade to or from black (batch.c) */
    float sigma_ctx;        /* dit: the history's noise level written into the model; < 0 = the model's */
    float hf_loss;          /* tae: weight of the Laplacian term (tae_train.hf), 0 = L1 + L2 alone */
    int freeze_encoder;     /* tae: train the decoder only (the latents, and so a DiT, stay valid) */
    float adv;              /* weight W of the adversarial term W x (-mean D(out)) (adv.h), 0 = off */
    long adv_start;         /* the generator term is off for the first N steps (D still trains) */
    float adv_lr;           /* D's peak learning rate, on the model's schedule; 0 = the model's (--lr) */
    const char *train_prompts; /* comma-separated prompt names the items are drawn from; NULL = all */
    long warmup;
    /* free to change between runs */
    long val_every, sample_every, ckpt_every, log_every;
    mg_device device;
    double time_limit;      /* seconds, 0 = none */
    long stop_after;        /* end this call after this many steps (checkpoint written), 0 = none */
    int threads;            /* 0 = all */
    st_dtype dtype;         /* model file: ST_F32 or ST_BF16 */
    double peak_tflops;     /* for MFU; 0 = the device's default */
    size_t part_bytes;      /* checkpoint part size */
    st_dtype ckpt_moments;  /* ST_F32 (exact resume) or ST_BF16 (smaller, approximate) */
    int sample_steps;       /* denoising steps of the dit samples */
    /* data parallel (issue 8, dist.h): --gpus N or a list; src/cli/train_launch.c starts one
     * process per GPU, each runs trainer_run with dist set (rank 0 alone writes files) */
    int n_gpus;             /* 0: not given (one process) */
    int gpus[DIST_MAX_GPUS];
    const dist_rank *dist;  /* this process's rank when n_gpus > 1, else NULL */
} train_opts;

train_opts train_opts_default(train_stage stage);

/* Runs (or continues) a training run; prints the configuration and a line per step to stdout.
 * MG_OK when the run reached its steps or stopped cleanly (time limit, signal) with a
 * checkpoint written; otherwise the status of what failed (mg_last_error says what). */
mg_status trainer_run(const train_opts *o);
/* The checkpoint index the run uses (--ckpt, or --out without .safetensors plus .ckpt). */
void trainer_ckpt_path(const train_opts *o, char *buf, size_t n);

/* FLOPs of one optimizer step (forward + backward = 3x the forward's multiply-adds x 2), from
 * the shapes: the trained network only (the frozen encoder of stage dit is not counted; with
 * freeze_encoder, stage tae counts the encoder's forward alone). D (--adv) is not counted. */
double train_step_flops(train_stage stage, const mg_config *c, int B, int T, int S, int window, int freeze_encoder);

#endif
