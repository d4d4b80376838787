/* The training loop: see trainer.h and docs/TRAINING.md. One function, trainer_run, reads top to
 * bottom: set up (state, data, batches, device), then per step: take the prepared batch, ask
 * for the next one, forward/backward, clip, AdamW, EMA, log; now and then validate, write
 * samples and a checkpoint; stop at the end, at the time limit or on a signal, always with a
 * checkpoint and the model file written. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"
#include "core/timing.h"
#include "eval/degrade.h"
#include "eval/files.h"
#include "model/forward.h"
#include "ops/cpu/parallel.h"
#include "train/adv.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "core/tmpfile.h"
#ifdef MG_HAVE_CUDA
#include "cuda/cuda_dist.h"
#include "cuda/cuda_train.h"
#endif
#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#define VAL_SEED 0x76616c69646174ull /* "validat": validation batches do not depend on --seed */
#define ADV_SEED 0x646973637269ull  /* "discri": D's draw, from --seed ^ this */

train_opts train_opts_default(train_stage stage) {
    train_opts o;
    memset(&o, 0, sizeof o);
    o.stage = stage;
    o.steps = 2000;
    o.batch = stage == STAGE_TAE ? 8 : 4;
    o.size = 128;
    o.frames = 6;
    o.window = 0; /* the model's ring */
    o.val_clips = 8;
    o.hist_aug = 1;
    o.lr = stage == STAGE_TAE ? 1e-3f : 3e-4f;
    o.lr_min = 0.1f * o.lr;
    o.clip = 1.0f;
    o.ema = 0.999f;
    o.prompt_dropout = 0.1f;
    o.fades = 0.0f;
    o.sigma_ctx = -1.0f;
    o.weight_decay = stage == STAGE_TAE ? 0.0f : 0.05f;
    o.warmup = 100;
    o.val_every = 200;
    o.sample_every = 500;
    o.ckpt_every = 200;
    o.log_every = 1;
    o.device = MG_DEVICE_CPU;
    o.dtype = ST_F32;
    o.part_bytes = (size_t)15 << 20;
    o.ckpt_moments = ST_F32;
    o.sample_steps = 2;
    return o;
}

/* ---- FLOPs ------------------------------------------------------------------------------- */

static double conv_flops(int H, int W, int ci, int co) { return 2.0 * 9.0 * ci * co * (double)H * W; }

double train_step_flops(train_stage stage, const mg_config *c, int B, int T, int S, int window, int freeze_encoder) {
    double f = 0.0;
    if (stage == STAGE_TAE) {
        int C = c->tae_ch, Z = c->z_ch;
        double enc = 0.0, dec = 0.0, dec_in = conv_flops(S / 8, S / 8, Z, C);
        enc += conv_flops(S, S, 3, C) + 3 * conv_flops(S, S, C, C);
        for (int r = 2; r <= 8; r *= 2) enc += conv_flops(S / r, S / r, C, C) * (1 + 9);
        enc += conv_flops(S / 8, S / 8, C, Z);
        dec += dec_in + 9 * conv_flops(S / 8, S / 8, C, C);
        dec += conv_flops(S / 4, S / 4, C, C) * (1 + 9) + conv_flops(S / 2, S / 2, C, C) * (1 + 9);
        dec += conv_flops(S, S, C, C) * (1 + 3) + conv_flops(S, S, C, 3);
        /* forward, then a weight and a data gradient per conv; --freeze-encoder: the encoder's
         * forward alone, and dec.in without its data gradient */
        if (freeze_encoder) return (enc + 3.0 * dec - dec_in) * B;
        return 3.0 * (enc + dec) * B;
    }
    double d = c->d, N = (double)(S / 16) * (S / 16), zpp = (double)c->z_ch * c->patch * c->patch;
    double keys = 0.0; /* sum over frames of the keys each frame's queries see */
    for (int t = 0; t < T; t++) keys += ((t < window ? t : window) + 1) * N;
    double per_layer = 24.0 * d * d * N * T + 4.0 * d * N * keys + 12.0 * d * d * T;
    f = c->layers * per_layer + 2.0 * 2 * zpp * d * N * T + 2.0 * d * zpp * N * T + 4.0 * d * d * T +
        2.0 * (256.0 * d + d * d) * T;
    return 3.0 * f * B;
}

/* ---- the prefetching thread -------------------------------------------------------------- */

typedef struct prefetch {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, quit;
    long want_step;   /* the step to make, or LONG_MIN when idle */
    int want_buf;
    int done_buf;     /* the buffer finished last, -1 while working */
    mg_status status;
    char msg[512];
    train_batch *bufs; /* [2] */
    const batch_cfg *bc;
    dataset *ds;
    const mg_model *frozen; /* CPU dit: encode here; NULL: the main thread encodes */
    int threads;            /* --threads, 0 = the default */
} prefetch;

static void *prefetch_main(void *arg) {
    prefetch *p = arg;
#ifdef MG_HAVE_OPENMP
    if (p->threads > 0) omp_set_num_threads(p->threads); /* --threads: the ICV is per thread */
#endif
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->want_buf < 0) pthread_cond_wait(&p->cv, &p->mu);
        if (p->quit) break;
        int buf = p->want_buf;
        long step = p->want_step;
        p->want_buf = -1;
        pthread_mutex_unlock(&p->mu);
        train_batch *b = &p->bufs[buf];
        mg_status s = batch_sample(b, p->bc, p->ds, step);
        if (s == MG_OK && p->frozen) s = batch_encode_cpu(b, p->bc, p->frozen);
        pthread_mutex_lock(&p->mu);
        p->status = s;
        if (s != MG_OK) snprintf(p->msg, sizeof p->msg, "%s", mg_last_error());
        p->done_buf = buf;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void prefetch_request(prefetch *p, long step, int buf) {
    pthread_mutex_lock(&p->mu);
    p->want_step = step;
    p->want_buf = buf;
    p->done_buf = -1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static mg_status prefetch_wait(prefetch *p, int *buf) {
    pthread_mutex_lock(&p->mu);
    while (p->done_buf < 0) pthread_cond_wait(&p->cv, &p->mu);
    *buf = p->done_buf;
    mg_status s = p->status;
    pthread_mutex_unlock(&p->mu);
    if (s != MG_OK) return mg_fail(s, "%s", p->msg);
    return MG_OK;
}

static void prefetch_stop(prefetch *p) {
    if (!p->started) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    p->started = 0;
}

/* ---- signals ----------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

/* ---- helpers ----------------------------------------------------------------------------- */

static void ema_update(train_params *tp, int first, int last, float decay) {
    size_t a = tp->offset[first], n = tp->offset[last] - a;
    float *e = tp->ema + a;
    const float *p = tp->param + a;
    MG_OMP(omp parallel for schedule(static) if (n > MG_OMP_MIN_ELEMS))
    for (size_t k = 0; k < n; k++) e[k] = decay * e[k] + (1.0f - decay) * p[k];
}

/* The EMA's decay at a step: short runs would otherwise ship mostly the initial weights. */
static float ema_decay(float ema, long step) {
    float warm = (float)(1.0 + step) / (float)(10.0 + step);
    return ema < warm ? ema : warm;
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) s = 0;
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static mg_status load_ema_model(const train_params *tp, mg_model **out) {
    char tmp[128];
    int fd = mg_tmpfile(tmp, sizeof tmp, "train-ema");
    if (fd < 0) return mg_fail(MG_ERR_IO, "cannot create a temporary file: %s", strerror(errno));
    close(fd);
    mg_status s = ckpt_write_model(tmp, tp, tp->ema, ST_F32);
    if (s == MG_OK) s = mg_model_load(tmp, out);
    unlink(tmp); /* the mapping stays valid */
    return s;
}

static mg_status load_param_model(const train_params *tp, mg_model **out) {
    char tmp[128];
    int fd = mg_tmpfile(tmp, sizeof tmp, "train-frozen");
    if (fd < 0) return mg_fail(MG_ERR_IO, "cannot create a temporary file: %s", strerror(errno));
    close(fd);
    mg_status s = ckpt_write_model(tmp, tp, tp->param, ST_F32);
    if (s == MG_OK) s = mg_model_load(tmp, out);
    unlink(tmp);
    return s;
}

/* Samples: one PNG per call, a row per frame: model input | model output | target. stage tae:
 * the EMA autoencoder's reconstruction; stage dit: the EMA model streamed frame by frame
 * (mg_stream, the real inference) over a validation clip with its prompt. */
static mg_status write_samples(const train_opts *o, const char *dir, const train_params *tp, const batch_cfg *bc,
                               const train_batch *vb, long step) {
    mg_model *m;
    MG_TRY(load_ema_model(tp, &m));
    int S = vb->S, T = vb->T, rows = bc->stage == STAGE_TAE ? (vb->B < 4 ? vb->B : 4) : T;
    size_t px = (size_t)S * S * 3;
    uint8_t *img = calloc((size_t)rows * 3 * px, 1), *out = malloc(px);
    float *f = malloc(px * sizeof(float) * 2), *lat = malloc((size_t)(S / 8) * (S / 8) * tp->cfg.z_ch * sizeof(float));
    float *work = malloc(tae_work_floats(&tp->cfg, S, S) * sizeof(float));
    mg_status s = MG_OK;
    mg_stream *st = NULL;
    if (!img || !out || !f || !lat || !work) {
        s = mg_fail(MG_ERR_NOMEM, "samples: out of memory");
        goto done;
    }
    const char *prompt = bc->prompts[vb->item[0].prompt];
    if (bc->stage == STAGE_DIT) {
        mg_stream_opts so = mg_stream_opts_default();
        so.width = so.height = S;
        so.steps = o->sample_steps;
        so.ring = bc->window;
        so.seed = 1;
        so.prompt = prompt;
        so.device = MG_DEVICE_CPU;
        if ((s = mg_stream_new(m, &so, &st)) != MG_OK) goto done;
    }
    for (int r = 0; r < rows; r++) {
        const uint8_t *in = vb->in_rgb + (size_t)r * px, *tgt = bc->stage == STAGE_TAE ? in : vb->tgt_rgb + (size_t)r * px;
        if (bc->stage == STAGE_TAE) {
            for (size_t k = 0; k < px; k++) f[k] = in[k] * (1.0f / 255.0f);
            tae_encode(m, lat, f, work, S, S);
            tae_decode(m, f + px, lat, work, S, S);
            for (size_t k = 0; k < px; k++) {
                float v = f[px + k] < 0 ? 0 : f[px + k] > 1 ? 1 : f[px + k];
                out[k] = (uint8_t)lrintf(255.0f * v);
            }
        } else if ((s = mg_stream_step(st, in, out)) != MG_OK) {
            goto done;
        }
        const uint8_t *cols[3] = {in, out, tgt};
        for (int y = 0; y < S; y++)
            for (int c = 0; c < 3; c++)
                memcpy(img + (((size_t)r * S + y) * 3 * S + (size_t)c * S) * 3, cols[c] + (size_t)y * S * 3, (size_t)S * 3);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/step_%06ld%s%s.png", dir, step, bc->stage == STAGE_DIT ? "_" : "",
             bc->stage == STAGE_DIT ? prompt : "");
    for (char *p = strrchr(path, '/') + 1; *p; p++)
        if (*p == ':') *p = '-';
    if ((s = files_mkdir_p(dir)) == MG_OK) s = image_write_png(path, img, 3 * S, rows * S);
    if (s == MG_OK) printf("sample step %ld -> %s (input | output | target%s)\n", step, path,
                           bc->stage == STAGE_DIT ? ", streamed" : "");
done:
    if (st) mg_stream_free(st);
    free(img), free(out), free(f), free(lat), free(work);
    mg_model_free(m);
    return s;
}

/* ---- the run ----------------------------------------------------------------------------- */

typedef struct run {
    const train_opts *o;
    train_opts fx;          /* the options in force (the checkpoint's on resume) */
    train_params tp;
    int have_tp, first, last;
    batch_cfg bc, vbc;
    dataset *ds, *vds;
    train_batch bufs[2], vbuf;
    prefetch pf;
    mg_model *frozen;
    tae_train tt;
    dit_train dt;
    dit_clip *clips;
    int have_tt, have_dt;
    adv_disc ad;            /* --adv: the discriminator (stage tae on the GPU: its host copy) */
    int have_ad;
    float adv_w;            /* this step's generator weight: fx.adv, 0 before --adv-start */
    adv_stats ast;          /* this step's D figures */
    double adv_ms;          /* this step's time in D's passes (stage dit) */
    float *dv_add;          /* --adv, stage dit: (T, lh, lw, Z) the generator term's gradient for v
                             * (the CPU trainer's clip; the GPU's step uses its pinned staging) */
    char ckpt[4096], samples[4096];
    char prompts_buf[256];  /* --train-prompts as adopted from a checkpoint */
#ifdef MG_HAVE_CUDA
    cuda_params cp;
    cuda_tae_train *ctt;
    cuda_dit_train *cdt;
    cuda_tae_encoder *cenc;  /* dit: the frozen encoder (NULL with MG_TRAIN_ENCODE=tae: ctt's) */
    cuda_params dcp;        /* --adv on the GPU: D's state on the device (ad.dp's layout) */
    int have_cp, have_dcp;
    cuda_dist *cd;          /* data parallel: the communicator, NULL in a one-process run */
#endif
    int rank, nranks;       /* data parallel: this process's rank (0 in a one-process run) */
    float *losses;
} run;

/* --fresh-dit: the DiT of --init replaced by a fresh draw (the run's seed), its autoencoder
 * kept: a new DiT recipe on a trained autoencoder (ablations start this way). */
static mg_status fresh_dit(run *r) {
    char tmp[128];
    int fd = mg_tmpfile(tmp, sizeof tmp, "train-fresh");
    if (fd < 0) return mg_fail(MG_ERR_IO, "cannot create a temporary file: %s", strerror(errno));
    close(fd);
    train_params fresh;
    memset(&fresh, 0, sizeof fresh);
    mg_status s = mg_model_init_file(tmp, &r->tp.cfg, r->fx.seed, 0);
    if (s == MG_OK) s = train_params_load(&fresh, tmp);
    unlink(tmp);
    MG_TRY(s);
    if (fresh.n_tensors != r->tp.n_tensors || fresh.dit_first != r->tp.dit_first) {
        train_params_free(&fresh);
        return mg_fail(MG_ERR_FORMAT, "--fresh-dit: a fresh %s model does not match the layout of --init", r->tp.cfg.name);
    }
    size_t a = r->tp.offset[r->tp.dit_first], n = r->tp.offset[r->tp.n_tensors] - a;
    memcpy(r->tp.param + a, fresh.param + a, n * sizeof(float));
    memcpy(r->tp.ema + a, fresh.param + a, n * sizeof(float));
    train_params_free(&fresh);
    printf("init: the DiT drawn afresh (seed %llu); the autoencoder from %s\n", (unsigned long long)r->fx.seed,
           r->o->init);
    return MG_OK;
}

static const char *stage_name(train_stage s) { return s == STAGE_TAE ? "tae" : "dit"; }

static void fixed_meta(const run *r, ckpt_meta *cm) {
    const train_opts *f = &r->fx;
    memset(cm, 0, sizeof *cm);
    ckpt_meta_set(cm, "train_seed", "%llu", (unsigned long long)f->seed);
    ckpt_meta_set(cm, "train_steps", "%ld", f->steps);
    ckpt_meta_set(cm, "train_batch", "%d", f->batch);
    ckpt_meta_set(cm, "train_size", "%d", f->size);
    ckpt_meta_set(cm, "train_frames", "%d", f->frames);
    ckpt_meta_set(cm, "train_window", "%d", f->window);
    ckpt_meta_set(cm, "train_lr", "%.9g", f->lr);
    ckpt_meta_set(cm, "train_lr_min", "%.9g", f->lr_min);
    ckpt_meta_set(cm, "train_warmup", "%ld", f->warmup);
    ckpt_meta_set(cm, "train_clip", "%.9g", f->clip);
    ckpt_meta_set(cm, "train_ema", "%.9g", f->ema);
    ckpt_meta_set(cm, "train_weight_decay", "%.9g", f->weight_decay);
    ckpt_meta_set(cm, "train_hist_aug", "%d", f->hist_aug);
    ckpt_meta_set(cm, "train_prompt_dropout", "%.9g", f->prompt_dropout);
    ckpt_meta_set(cm, "train_fades", "%.9g", f->fades);
    ckpt_meta_set(cm, "train_hf_loss", "%.9g", f->hf_loss);
    ckpt_meta_set(cm, "train_freeze_encoder", "%d", f->freeze_encoder);
    ckpt_meta_set(cm, "train_val_clips", "%d", f->val_clips);
    ckpt_meta_set(cm, "train_adv", "%.9g", f->adv);
    ckpt_meta_set(cm, "train_adv_start", "%ld", f->adv_start);
    ckpt_meta_set(cm, "train_adv_lr", "%.9g", f->adv_lr);
    ckpt_meta_set(cm, "train_prompts", "%s", f->train_prompts ? f->train_prompts : "");
}

/* Takes the run-shaping options from the checkpoint; an explicit different value is an error. */
static mg_status adopt_fixed(run *r, const ckpt_meta *cm) {
    train_opts *f = &r->fx;
    const char *v;
    char mine[128];
#define ADOPT(bit, key, flag, fmtc, field, parse)                                                              \
    if (!(v = ckpt_meta_get(cm, key))) return mg_fail(MG_ERR_FORMAT, "%s: metadata '%s' missing", r->ckpt, key); \
    snprintf(mine, sizeof mine, fmtc, field);                                                                  \
    if ((r->o->given & (bit)) && strcmp(mine, v) != 0)                                                          \
        return mg_fail(MG_ERR_ARG, "%s %s differs from the checkpoint's %s (it shapes the run; drop it or start a new run)", flag, mine, v); \
    field = parse;
    unsigned long long seed = (unsigned long long)f->seed;
    ADOPT(TO_SEED, "train_seed", "--seed", "%llu", seed, strtoull(v, NULL, 10));
    f->seed = (uint64_t)seed;
    ADOPT(TO_STEPS, "train_steps", "--steps", "%ld", f->steps, strtol(v, NULL, 10));
    ADOPT(TO_BATCH, "train_batch", "--batch", "%d", f->batch, (int)strtol(v, NULL, 10));
    ADOPT(TO_SIZE, "train_size", "--size", "%d", f->size, (int)strtol(v, NULL, 10));
    ADOPT(TO_FRAMES, "train_frames", "--frames", "%d", f->frames, (int)strtol(v, NULL, 10));
    ADOPT(TO_WINDOW, "train_window", "--window", "%d", f->window, (int)strtol(v, NULL, 10));
    ADOPT(TO_LR, "train_lr", "--lr", "%.9g", f->lr, strtof(v, NULL));
    ADOPT(TO_LR_MIN, "train_lr_min", "--lr-min", "%.9g", f->lr_min, strtof(v, NULL));
    ADOPT(TO_WARMUP, "train_warmup", "--warmup", "%ld", f->warmup, strtol(v, NULL, 10));
    ADOPT(TO_CLIP, "train_clip", "--clip", "%.9g", f->clip, strtof(v, NULL));
    ADOPT(TO_EMA, "train_ema", "--ema", "%.9g", f->ema, strtof(v, NULL));
    ADOPT(TO_WD, "train_weight_decay", "--weight-decay", "%.9g", f->weight_decay, strtof(v, NULL));
    ADOPT(TO_HIST_AUG, "train_hist_aug", "--hist-aug", "%d", f->hist_aug, (int)strtol(v, NULL, 10));
    ADOPT(TO_DROPOUT, "train_prompt_dropout", "--prompt-dropout", "%.9g", f->prompt_dropout, strtof(v, NULL));
    ADOPT(TO_VAL_CLIPS, "train_val_clips", "--val-clips", "%d", f->val_clips, (int)strtol(v, NULL, 10));
    /* added after the first checkpoints were written: absent means the recipe of then (no fades) */
    if (ckpt_meta_get(cm, "train_fades")) {
        ADOPT(TO_FADES, "train_fades", "--fades", "%.9g", f->fades, strtof(v, NULL));
    } else if ((r->o->given & TO_FADES) && f->fades != 0.0f) {
        return mg_fail(MG_ERR_ARG, "--fades %g differs from the checkpoint's 0 (it shapes the run; drop it or start a new run)",
                       f->fades);
    }
    /* added in session 4: absent means neither */
    if (ckpt_meta_get(cm, "train_hf_loss")) {
        ADOPT(TO_HF, "train_hf_loss", "--hf-loss", "%.9g", f->hf_loss, strtof(v, NULL));
        ADOPT(TO_FREEZE, "train_freeze_encoder", "--freeze-encoder", "%d", f->freeze_encoder, (int)strtol(v, NULL, 10));
    } else if (((r->o->given & TO_HF) && f->hf_loss != 0.0f) || f->freeze_encoder) {
        return mg_fail(MG_ERR_ARG, "--hf-loss / --freeze-encoder differ from the checkpoint's run (it had neither)");
    }
    /* added in session 5: absent means no adversarial term */
    if (ckpt_meta_get(cm, "train_adv")) {
        ADOPT(TO_ADV, "train_adv", "--adv", "%.9g", f->adv, strtof(v, NULL));
        ADOPT(TO_ADV_START, "train_adv_start", "--adv-start", "%ld", f->adv_start, strtol(v, NULL, 10));
        /* added in session 7: absent means the model's */
        if (ckpt_meta_get(cm, "train_adv_lr")) {
            ADOPT(TO_ADV_LR, "train_adv_lr", "--adv-lr", "%.9g", f->adv_lr, strtof(v, NULL));
        } else if ((r->o->given & TO_ADV_LR) && f->adv_lr != 0.0f) {
            return mg_fail(MG_ERR_ARG, "--adv-lr %g differs from the checkpoint's (the model's lr; drop it or start a new run)",
                           f->adv_lr);
        }
    } else if (f->adv != 0.0f) {
        return mg_fail(MG_ERR_ARG, "--adv %g differs from the checkpoint's 0 (it shapes the run; drop it or start a new run)",
                       f->adv);
    }
    /* added in session 7: absent means every prompt */
    if (ckpt_meta_get(cm, "train_prompts")) {
        const char *given = f->train_prompts ? f->train_prompts : "";
        ADOPT(TO_PROMPTS, "train_prompts", "--train-prompts", "%s", given, v);
        snprintf(r->prompts_buf, sizeof r->prompts_buf, "%s", given);
        f->train_prompts = r->prompts_buf[0] ? r->prompts_buf : NULL;
    } else if (f->train_prompts) {
        return mg_fail(MG_ERR_ARG, "--train-prompts %s differs from the checkpoint's (every prompt; drop it or start a new "
                       "run)", f->train_prompts);
    }
#undef ADOPT
    if (f->steps < 1 || f->batch < 1 || f->size < 16 || f->size % 16 || f->frames < 1 || f->frames > 64 ||
        f->window < 1 || f->val_clips < 0)
        return mg_fail(MG_ERR_FORMAT, "%s: the run's options in the metadata are out of range", r->ckpt);
    return MG_OK;
}

static mg_status save_all(run *r, long step, double *ms) {
    double t0 = mg_now_ms();
#ifdef MG_HAVE_CUDA
    if (r->have_cp) MG_TRY(cuda_params_download(&r->cp, &r->tp));
    if (r->have_dcp) MG_TRY(cuda_params_download(&r->dcp, &r->ad.dp)); /* D's aux.* tensors */
#endif
    ckpt_meta cm;
    fixed_meta(r, &cm);
    MG_TRY(ckpt_save_aux(r->ckpt, &r->tp, r->first, r->last, stage_name(r->fx.stage), step, &cm, r->o->part_bytes,
                         r->o->ckpt_moments, r->have_ad ? &r->ad.dp : NULL));
    MG_TRY(ckpt_write_model(r->o->out, &r->tp, r->tp.ema, r->o->dtype));
    *ms = mg_now_ms() - t0;
    printf("ckpt step %ld -> %s (%.1f MiB in parts of <= %.0f MiB) + %s (%.1f MiB %s) in %.0f ms\n", step, r->ckpt,
           ckpt_bytes(&r->tp, r->first, r->last, r->o->ckpt_moments) / 1048576.0, r->o->part_bytes / 1048576.0, r->o->out,
           ckpt_model_bytes(&r->tp, r->o->dtype) / 1048576.0, st_dtype_name(r->o->dtype), *ms);
    fflush(stdout);
    return MG_OK;
}

/* Encodes a prepared dit batch on the device (GPU runs), then applies history augmentation;
 * *enc_ms and *aug_ms get the wall time of each. The frozen encoder (cenc) by default;
 * MG_TRAIN_ENCODE=tae: the training autoencoder's cuda_tae_encode, 2.2x slower (the A/B of
 * docs/RESULTS.md, "trainer step"). On the main thread, while the batch thread makes the next
 * batch: run on the batch thread, after the CPU's degradations, the encode measured slower per
 * step (106 against 84 ms), the CPU work being the longer of the two. */
static mg_status encode_device(run *r, train_batch *b, double *enc_ms, double *aug_ms) {
#ifdef MG_HAVE_CUDA
    size_t px = (size_t)b->S * b->S * 3, lat = (size_t)b->lh * b->lw * b->Z;
    int n = b->B * b->T;
    double t0 = mg_now_ms();
    if (r->cenc) {
        /* the targets, then the inputs of each run of clips that are not dream (whose cond is
         * dropped) */
        mg_status s = cuda_tae_encoder_run(r->cenc, b->tgt_rgb, b->style, n, b->S, b->S, b->x0);
        for (int i = 0; i < b->B && s == MG_OK;) {
            int j = i;
            while (j < b->B && !b->item[j].dream) j++;
            if (j > i)
                s = cuda_tae_encoder_run(r->cenc, b->in_rgb + (size_t)i * b->T * px, NULL, (j - i) * b->T, b->S, b->S,
                                         b->cond + (size_t)i * b->T * lat);
            i = j + 1;
        }
        MG_TRY(s);
    } else {
        for (int k = 0; k < n; k += b->B) {
            int c = n - k < b->B ? n - k : b->B;
            MG_TRY(cuda_tae_encode(r->ctt, b->in_rgb + k * px, c, b->S, b->S, b->cond + k * lat));
            MG_TRY(cuda_tae_encode(r->ctt, b->tgt_rgb + k * px, c, b->S, b->S, b->x0 + k * lat));
        }
    }
    double t1 = mg_now_ms();
    for (int i = 0; i < b->B; i++)
        if (b->item[i].dream) memset(b->cond + (size_t)i * b->T * lat, 0, (size_t)b->T * lat * sizeof(float));
    batch_finish(b, &r->bc);
    *enc_ms = t1 - t0;
    *aug_ms = mg_now_ms() - t1;
    return MG_OK;
#else
    (void)r, (void)b, (void)enc_ms, (void)aug_ms;
    return mg_fail(MG_ERR_UNSUPPORTED, "this build has no CUDA");
#endif
}

/* --adv, stage dit: D's passes over the clips' judged frames, timed for the step line; the CPU
 * trainer calls it a clip at a time, the GPU's step through cuda_dit_train_set_dv_hook (v to
 * the host, dv_add back) with its whole batch. */
static mg_status dit_adv_hook(void *user, const dit_clip *clips, int n, const float *v, float *dv_add) {
    run *r = user;
    double t0 = mg_now_ms();
    MG_TRY(adv_clips(&r->ad, clips, n, v, dv_add, 1.0f / (float)r->fx.batch, r->adv_w, &r->ast));
    r->adv_ms += mg_now_ms() - t0;
    return MG_OK;
}

/* Loss of one batch; train = 1 also accumulates gradients (scaled by 1/B). Data parallel: b is
 * this rank's slice of the global batch of fx.batch items; the scale is still 1/(global B),
 * the gradients are summed over the ranks by the step, and the loss is summed here. */
static mg_status batch_loss(run *r, train_batch *b, int train, double *loss) {
    int B = b->B, GB = r->fx.batch;
    float inv = 1.0f / (float)GB;
    double sum = 0.0;
    if (r->fx.device == MG_DEVICE_CUDA) {
#ifdef MG_HAVE_CUDA
        if (r->fx.stage == STAGE_TAE) {
            if (train) MG_TRY(cuda_tae_train_step(r->ctt, b->img, B, b->S, b->S, inv, r->losses));
            else MG_TRY(cuda_tae_train_loss(r->ctt, b->img, B, b->S, b->S, r->losses));
            if (train && r->have_dcp) MG_TRY(cuda_tae_train_adv_stats(r->ctt, NULL, &r->ast)); /* D's figures */
        } else {
            batch_clips(b, &r->bc, r->clips);
            if (train) MG_TRY(cuda_dit_train_step(r->cdt, r->clips, B, inv, r->losses));
            else MG_TRY(cuda_dit_train_loss(r->cdt, r->clips, B, r->losses));
        }
        for (int i = 0; i < B; i++) sum += r->losses[i];
        if (r->cd) MG_TRY(cuda_dist_sum(r->cd, &sum, 1));
#endif
    } else if (r->fx.stage == STAGE_TAE) {
        size_t px = (size_t)b->S * b->S * 3;
        for (int i = 0; i < B; i++) {
            float l;
            MG_TRY(tae_train_forward(&r->tt, b->img + i * px, b->S, b->S, &l));
            if (train && r->have_ad) { /* D learns from (img, rec); the generator's gradient joins drec */
                double ld;
                MG_TRY(adv_image(&r->ad, b->img + i * px, r->tt.a.rec, b->S, b->S, inv, r->adv_w, &ld, &r->ast));
                r->tt.drec_add = r->adv_w != 0.0f ? r->ad.drec : NULL;
            }
            if (train) MG_TRY(tae_train_backward(&r->tt, inv));
            r->tt.drec_add = NULL;
            sum += l;
        }
    } else {
        batch_clips(b, &r->bc, r->clips);
        for (int i = 0; i < B; i++) {
            float l;
            MG_TRY(dit_train_forward(&r->dt, &r->clips[i], &l));
            if (train && r->have_ad) { /* D learns from (x0, the one-step estimate); its term joins dv */
                MG_TRY(dit_adv_hook(r, &r->clips[i], 1, r->dt.a.v, r->dv_add));
                r->dt.dv_add = r->dv_add;
            }
            if (train) MG_TRY(dit_train_backward(&r->dt, inv));
            r->dt.dv_add = NULL;
            sum += l;
        }
    }
    *loss = sum / GB;
    return MG_OK;
}

static mg_status validate(run *r, long step) {
    if (!r->vds || r->fx.val_clips <= 0) return MG_OK;
    double t0 = mg_now_ms(), sum = 0.0;
    int nb = (r->fx.val_clips + r->fx.batch - 1) / r->fx.batch;
    for (int k = 0; k < nb; k++) {
        MG_TRY(batch_sample(&r->vbuf, &r->vbc, r->vds, -1 - k));
        if (r->fx.stage == STAGE_DIT) {
            double e_ms, a_ms;
            if (r->fx.device == MG_DEVICE_CUDA) MG_TRY(encode_device(r, &r->vbuf, &e_ms, &a_ms));
            else MG_TRY(batch_encode_cpu(&r->vbuf, &r->vbc, r->frozen));
        }
        double l;
        MG_TRY(batch_loss(r, &r->vbuf, 0, &l));
        sum += l;
    }
    printf("val  step %ld | loss %.9g | %d clips | %.0f ms\n", step, sum / nb, nb * r->fx.batch, mg_now_ms() - t0);
    fflush(stdout);
    return MG_OK;
}

static mg_status samples(run *r, long step) {
    if (!r->vds) return MG_OK;
    /* validation batch 0, whose first item gives the prompt */
    MG_TRY(batch_sample(&r->vbuf, &r->vbc, r->vds, -1));
#ifdef MG_HAVE_CUDA
    if (r->have_cp) MG_TRY(cuda_params_download(&r->cp, &r->tp));
#endif
    return write_samples(r->o, r->samples, &r->tp, &r->vbc, &r->vbuf, step);
}

static void run_free(run *r) {
    prefetch_stop(&r->pf);
#ifdef MG_HAVE_CUDA
    if (r->cd) cuda_dist_free(r->cd); /* before the gradients it reduces */
    if (r->cdt) cuda_dit_train_free(r->cdt);
    if (r->ctt) cuda_tae_train_free(r->ctt);
    if (r->have_dcp) cuda_params_free(&r->dcp); /* after ctt, which reads it */
    if (r->cenc) cuda_tae_encoder_free(r->cenc);
    if (r->have_cp) cuda_params_free(&r->cp);
#endif
    if (r->have_tt) tae_train_free(&r->tt);
    if (r->have_dt) dit_train_free(&r->dt);
    if (r->have_ad) adv_free(&r->ad);
    free(r->dv_add);
    batch_free(&r->bufs[0]);
    batch_free(&r->bufs[1]);
    batch_free(&r->vbuf);
    if (r->frozen) mg_model_free(r->frozen);
    if (r->ds) dataset_close(r->ds);
    if (r->vds) dataset_close(r->vds);
    if (r->have_tp) train_params_free(&r->tp);
    free(r->clips);
    free(r->losses);
}

static void derive_path(char *buf, size_t n, const char *given, const char *out, const char *suffix) {
    if (given) {
        snprintf(buf, n, "%s", given);
        return;
    }
    size_t len = strlen(out);
    const char *ext = ".safetensors";
    if (len > strlen(ext) && !strcmp(out + len - strlen(ext), ext)) len -= strlen(ext);
    snprintf(buf, n, "%.*s%s", (int)len, out, suffix);
}

void trainer_ckpt_path(const train_opts *o, char *buf, size_t n) { derive_path(buf, n, o->ckpt, o->out, ".ckpt"); }

static mg_status setup(run *r, long *start) {
    const train_opts *o = r->o;
    r->fx = *o;
    derive_path(r->ckpt, sizeof r->ckpt, o->ckpt, o->out, ".ckpt");
    derive_path(r->samples, sizeof r->samples, o->samples, o->out, ".samples");
    *start = 0;
    if (r->rank == 0) {
        ckpt_remove_stale(r->ckpt); /* temporaries of a killed run */
        ckpt_remove_stale(o->out);
    }
    /* the state: the checkpoint, or the initial weights */
    int resumed = 0;
    if (o->resume && access(r->ckpt, F_OK) == 0) {
        char stage[8];
        ckpt_meta cm;
        MG_TRY(ckpt_load(r->ckpt, &r->tp, stage, start, &cm));
        r->have_tp = 1;
        if (strcmp(stage, stage_name(o->stage)) != 0)
            return mg_fail(MG_ERR_ARG, "%s is a checkpoint of stage %s, not %s", r->ckpt, stage, stage_name(o->stage));
        MG_TRY(adopt_fixed(r, &cm));
        if (o->sigma_ctx >= 0.0f && fabsf(o->sigma_ctx - r->tp.cfg.sigma_ctx) > 1e-6f)
            return mg_fail(MG_ERR_ARG, "--sigma-ctx %g differs from the checkpoint's %g (it shapes the run; drop it or start "
                           "a new run)", o->sigma_ctx, r->tp.cfg.sigma_ctx);
        if (o->fresh_dit) printf("resume: --fresh-dit ignored: the DiT comes from the checkpoint\n");
        resumed = 1;
        printf("resume: %s at step %ld\n", r->ckpt, *start);
        const char *mom = ckpt_meta_get(&cm, "moments");
        if (mom && strcmp(mom, "f32") != 0)
            printf("resume: note: this checkpoint's AdamW moments were stored in %s (--ckpt-moments): the "
                   "continuation is close to an uninterrupted run, not bit-identical\n", mom);
    } else {
        if (o->resume) printf("resume: no checkpoint at %s yet: starting from the beginning\n", r->ckpt);
        if (o->init) {
            MG_TRY(train_params_load(&r->tp, o->init));
            if (o->fresh_dit) MG_TRY(fresh_dit(r));
        } else {
            mg_config cfg;
            MG_TRY(mg_config_named(o->config ? o->config : "tiny", &cfg));
            char tmp[128];
            int fd = mg_tmpfile(tmp, sizeof tmp, "train-init");
            if (fd < 0) return mg_fail(MG_ERR_IO, "cannot create a temporary file: %s", strerror(errno));
            close(fd);
            mg_status s = mg_model_init_file(tmp, &cfg, r->fx.seed, 0);
            if (s == MG_OK) s = train_params_load(&r->tp, tmp);
            unlink(tmp);
            MG_TRY(s);
        }
        r->have_tp = 1;
        if (o->sigma_ctx >= 0.0f) r->tp.cfg.sigma_ctx = o->sigma_ctx;
        if (r->fx.window <= 0) r->fx.window = r->tp.cfg.ring > 0 ? r->tp.cfg.ring : 3;
    }
    train_opts *f = &r->fx;
    if (f->stage == STAGE_TAE) f->frames = 1;
    if (f->adv > 0.0f) { /* the discriminator: fresh from the seed, or the checkpoint's */
        if (r->nranks > 1)
            return mg_fail(MG_ERR_UNSUPPORTED, "--adv with %d GPUs: D's gradients are not all-reduced across the ranks "
                           "yet; train with one GPU (--device cuda or --gpus 1)", r->nranks);
        if (f->stage == STAGE_DIT && (f->size / 8) % 8)
            return mg_fail(MG_ERR_SHAPE, "--adv with stage dit: D takes latents of multiples of 8, so --size must be a "
                           "multiple of 64 (found %d)", f->size);
        if (f->stage == STAGE_TAE) MG_TRY(adv_init(&r->ad, f->seed ^ ADV_SEED, f->size, f->size, 3));
        else MG_TRY(adv_init(&r->ad, f->seed ^ ADV_SEED, f->size / 8, f->size / 8, r->tp.cfg.z_ch));
        r->have_ad = 1;
        if (resumed) MG_TRY(ckpt_load_aux(r->ckpt, &r->ad.dp));
    }
    if (*start > f->steps) return mg_fail(MG_ERR_ARG, "%s: checkpoint at step %ld is past --steps %ld", r->ckpt, *start, f->steps);
    r->first = f->stage == STAGE_TAE ? 0 : r->tp.dit_first;
    if (f->stage == STAGE_TAE && f->freeze_encoder) r->first = train_params_find(&r->tp, "dec.in.weight");
    r->last = f->stage == STAGE_TAE ? r->tp.dit_first : r->tp.n_tensors;

    /* data */
    MG_TRY(dataset_open(&r->ds, o->data, "train"));
    if (dataset_open(&r->vds, o->data, "val") != MG_OK) {
        printf("data: no validation split in %s (%s): no validation loss or samples\n", o->data, mg_last_error());
        r->vds = NULL;
    }
    printf("data: %s: train %d sources, %ld video frames, %d photos", o->data, dataset_sources(r->ds),
           dataset_video_frames(r->ds), dataset_photos(r->ds));
    if (r->vds)
        printf("; val %d sources, %ld video frames, %d photos", dataset_sources(r->vds), dataset_video_frames(r->vds),
               dataset_photos(r->vds));
    printf("\n");

    /* batches */
    memset(&r->bc, 0, sizeof r->bc);
    r->bc.stage = f->stage;
    r->bc.B = f->batch, r->bc.T = f->frames, r->bc.S = f->size, r->bc.window = f->window;
    r->bc.hist_aug = f->hist_aug, r->bc.prompt_dropout = f->prompt_dropout, r->bc.fades = f->fades, r->bc.seed = f->seed;
    r->bc.cpu_encode = f->device == MG_DEVICE_CPU;
    if (r->nranks > 1) MG_TRY(dist_split(f->batch, r->nranks, r->rank, &r->bc.item0, &r->bc.B)); /* this rank's slice */
    batch_cfg_from_params(&r->bc, &r->tp);
    if (f->train_prompts) MG_TRY(batch_cfg_prompts(&r->bc, f->train_prompts));
    r->vbc = r->bc;
    r->vbc.seed = VAL_SEED;
    MG_TRY(batch_alloc(&r->bufs[0], &r->bc));
    MG_TRY(batch_alloc(&r->bufs[1], &r->bc));
    MG_TRY(batch_alloc(&r->vbuf, &r->vbc));
    int lb = r->bc.B; /* items per step on this process */
    r->clips = calloc((size_t)lb, sizeof *r->clips);
    r->losses = calloc((size_t)lb, sizeof *r->losses);
    if (!r->clips || !r->losses) return mg_fail(MG_ERR_NOMEM, "out of memory");
    int lh = f->size / 8;

    /* compute */
    if (f->device == MG_DEVICE_CUDA) {
#ifdef MG_HAVE_CUDA
        MG_TRY(cuda_params_new(&r->cp, &r->tp));
        r->have_cp = 1;
        const char *enc = getenv("MG_TRAIN_ENCODE");
        if (f->stage == STAGE_DIT && !(enc && !strcmp(enc, "tae"))) {
            /* chunks of up to 32 frames: ~0.4 GiB at 256x256 for tiny */
            int chunk = lb * f->frames < 32 ? lb * f->frames : 32;
            MG_TRY(cuda_tae_encoder_new(&r->cenc, &r->cp, chunk, f->size, f->size));
            /* the toon and sketch targets made there, not by the batch thread (batch.h);
             * MG_TRAIN_STYLES=cpu keeps them on the CPU (the A/B of docs/RESULTS.md) */
            const char *sty = getenv("MG_TRAIN_STYLES");
            r->bc.device_styles = !(sty && !strcmp(sty, "cpu"));
        } else {
            MG_TRY(cuda_tae_train_new(&r->ctt, &r->cp, lb, f->size, f->size));
            if (f->stage == STAGE_TAE) {
                cuda_tae_train_set_hf(r->ctt, f->hf_loss);
                cuda_tae_train_set_freeze_encoder(r->ctt, f->freeze_encoder);
            }
        }
        if (r->have_ad && f->stage == STAGE_TAE) { /* D's state beside the model's, its passes in the autoencoder's step */
            MG_TRY(cuda_params_new(&r->dcp, &r->ad.dp));
            r->have_dcp = 1;
            MG_TRY(cuda_tae_train_set_adv(r->ctt, &r->dcp, 0.0f));
        }
        if (f->stage == STAGE_DIT) MG_TRY(cuda_dit_train_new(&r->cdt, &r->cp, lb, f->frames, lh, lh));
        /* stage dit: D stays on the host; each step's v comes back for it (cuda_dit_train_set_dv_hook) */
        if (f->stage == STAGE_DIT && r->have_ad) MG_TRY(cuda_dit_train_set_dv_hook(r->cdt, dit_adv_hook, r));
        printf("device: %s\n", cuda_params_device_name(&r->cp));
        if (o->dist) {
            char nccl[4400] = "";
            MG_TRY(cuda_dist_probe(nccl, sizeof nccl));
            MG_TRY(cuda_dist_new(&r->cd, o->dist));
            MG_TRY(cuda_dist_attach(r->cd, &r->cp, r->first, r->last));
            printf("data parallel: %d ranks (GPUs", r->nranks);
            for (int i = 0; i < o->n_gpus; i++) printf("%s%d", i ? "," : " ", o->gpus[i]);
            printf("), %d of the %d items of a step each, gradients summed by %s\n", lb, f->batch, nccl);
        }
        if (f->stage == STAGE_DIT)
            printf("  encode: %s; toon and sketch targets made on the %s\n",
                   r->cenc ? "cuda_tae_encoder (bf16 implicit-GEMM convs)"
                           : "cuda_tae_encode (MG_TRAIN_ENCODE=tae: the training autoencoder's forward)",
                   r->bc.device_styles ? "GPU" : "CPU");
#else
        return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: this build has no CUDA (built without nvcc)");
#endif
    } else if (f->stage == STAGE_TAE) {
        MG_TRY(tae_train_init(&r->tt, &r->tp, f->size, f->size));
        r->tt.hf = f->hf_loss;
        r->tt.freeze_encoder = f->freeze_encoder; /* the backward stops at r->first, dec.in */
        r->have_tt = 1;
    } else {
        MG_TRY(dit_train_init(&r->dt, &r->tp, f->frames, lh, lh));
        r->have_dt = 1;
        if (r->have_ad && !(r->dv_add = malloc((size_t)f->frames * lh * lh * r->tp.cfg.z_ch * sizeof(float))))
            return mg_fail(MG_ERR_NOMEM, "out of memory for the adversarial gradient");
    }
    if (f->stage == STAGE_DIT && f->device == MG_DEVICE_CPU) MG_TRY(load_param_model(&r->tp, &r->frozen));

    size_t n_trained = r->tp.offset[r->last] - r->tp.offset[r->first];
    printf("train %s: config %s (%s), %zu trained floats, steps %ld, batch %d x %d frame%s of %dx%d, window %d\n",
           stage_name(f->stage), r->tp.cfg.name, resumed ? r->ckpt : o->init ? o->init : "fresh init", n_trained,
           f->steps, f->batch, f->frames, f->frames > 1 ? "s" : "", f->size, f->size, f->window);
    printf("  lr %.3g -> %.3g (warm-up %ld, cosine), AdamW wd %.3g, clip %.3g, ema %.4g, seed %llu", f->lr, f->lr_min,
           f->warmup, f->weight_decay, f->clip, f->ema, (unsigned long long)f->seed);
    if (f->stage == STAGE_DIT)
        printf(", hist-aug %d, prompt-dropout %.3g, fades %.3g, sigma_ctx %.3g", f->hist_aug, f->prompt_dropout, f->fades,
               r->tp.cfg.sigma_ctx);
    else
        printf(", hf-loss %.3g%s", f->hf_loss, f->freeze_encoder ? ", encoder frozen (decoder only)" : "");
    if (f->train_prompts) printf("\n  prompts: %s (--train-prompts: no others drawn)", f->train_prompts);
    if (r->have_ad)
        printf("\n  adv %.3g from step %ld: PatchGAN D on the %s (%zu floats, hinge loss, AdamW at %s)", f->adv, f->adv_start,
               f->stage == STAGE_TAE ? "image" : "latent", r->ad.dp.count, f->adv_lr > 0.0f ? "--adv-lr on the model's schedule" : "the model's lr");
    printf("\n  checkpoint %s (%.1f MiB), model %s (%.1f MiB %s), samples %s/\n", r->ckpt,
           ckpt_bytes(&r->tp, r->first, r->last, r->o->ckpt_moments) / 1048576.0, o->out, ckpt_model_bytes(&r->tp, o->dtype) / 1048576.0,
           st_dtype_name(o->dtype), r->samples);
    printf("  memory: training state %.1f MiB, batches %.1f MiB\n", r->tp.mem_bytes / 1048576.0,
           (r->bufs[0].mem_bytes * 2 + r->vbuf.mem_bytes) / 1048576.0);
    fflush(stdout);
    return MG_OK;
}

mg_status trainer_run(const train_opts *o) {
    if (!o->data || !o->out) return mg_fail(MG_ERR_ARG, "train: --data and --out are required");
#ifdef MG_HAVE_OPENMP
    if (o->threads > 0) omp_set_num_threads(o->threads);
    /* a data-parallel rank: the main thread's own team (history augmentation, samples) stays
     * small; the batch threads of the ranks keep the cores busy, and a wide team here waits
     * for descheduled threads (2 ranks on 32 cores: the aug phase 8 ms instead of 0.4) */
    if (o->dist && omp_get_max_threads() > 4) omp_set_num_threads(4);
#endif
    double t_begin = mg_now_ms(); /* the time limit counts the setup too */
    run r;
    memset(&r, 0, sizeof r);
    r.o = o;
    r.nranks = o->dist ? o->dist->nranks : 1;
    r.rank = o->dist ? o->dist->rank : 0;
#ifndef MG_HAVE_CUDA
    if (o->dist) return mg_fail(MG_ERR_UNSUPPORTED, "--gpus: this build has no CUDA (built without nvcc)");
#endif
    long step;
    mg_status s = setup(&r, &step);
    if (s != MG_OK) {
#ifdef MG_HAVE_CUDA
        if (r.cd) cuda_dist_abort(r.cd);
#endif
        run_free(&r);
        return s;
    }
    train_opts *f = &r.fx;
    adamw_opts ao = adamw_defaults();
    ao.weight_decay = f->weight_decay;
    int threads = 1;
#ifdef MG_HAVE_OPENMP
    threads = omp_get_max_threads();
#endif
    double peak = o->peak_tflops > 0 ? o->peak_tflops : f->device == MG_DEVICE_CUDA ? 989.0 : 0.15 * threads;
    peak *= r.nranks; /* the step's FLOPs are the global batch's, over every GPU */
    double flops = train_step_flops(f->stage, &r.tp.cfg, f->batch, f->frames, f->size, f->window, f->freeze_encoder);
    printf("  %.3g GFLOP per step; MFU against %.4g TFLOP/s (%s%s)\n", flops / 1e9, peak, r.nranks > 1 ? "all GPUs, " : "",
           o->peak_tflops > 0 ? "--peak-tflops" : f->device == MG_DEVICE_CUDA ? "H100 SXM dense bf16" : "0.15 a CPU thread, fp32");

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    stop_signal = 0;

    /* the prefetching thread: makes step+1's batch while step trains */
    prefetch *p = &r.pf;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->bufs = r.bufs, p->bc = &r.bc, p->ds = r.ds, p->want_buf = -1, p->done_buf = -1;
    p->frozen = f->stage == STAGE_DIT && f->device == MG_DEVICE_CPU ? r.frozen : NULL;
    p->threads = o->threads;
    if (step < f->steps) {
        if (pthread_create(&p->th, NULL, prefetch_main, p) != 0) {
            s = mg_fail(MG_ERR_NOMEM, "cannot start the batch thread");
            goto out;
        }
        p->started = 1;
        prefetch_request(p, step, 0);
    }

    double t_start = mg_now_ms(), ckpt_ms = 2000.0, avg_ms = 0.0;
    long step0 = step, last_saved = -1;
    const char *why = NULL;
    while (step < f->steps) {
        double t0 = mg_now_ms();
        int buf;
        if ((s = prefetch_wait(p, &buf)) != MG_OK) goto out;
        if (step + 1 < f->steps) prefetch_request(p, step + 1, 1 - buf);
        double t_data = mg_now_ms() - t0, t_enc = 0.0, t_aug = 0.0, t_step = 0.0, t_opt = 0.0;
        train_batch *b = &r.bufs[buf];
        if (f->stage == STAGE_DIT && f->device == MG_DEVICE_CUDA && (s = encode_device(&r, b, &t_enc, &t_aug)) != MG_OK)
            goto out;

        double loss = NAN, gnorm = 0.0; /* NAN: a path that sets no loss stops at the isfinite check */
        float lr = lr_schedule(step, f->warmup, f->steps, f->lr, f->lr_min);
        float decay = ema_decay(f->ema, step);
        float d_lr = f->adv_lr > 0.0f ? lr * (f->adv_lr / f->lr) : lr; /* D's, on the same schedule */
        if (r.have_ad) {
            memset(&r.ast, 0, sizeof r.ast);
            r.adv_ms = 0.0;
            r.adv_w = step >= f->adv_start ? f->adv : 0.0f;
        }
        if (f->device == MG_DEVICE_CUDA) {
#ifdef MG_HAVE_CUDA
            double t1 = mg_now_ms();
            if (r.have_dcp) { /* D's kernels run on the model's stream: its zeroed gradients first */
                if ((s = cuda_zero_grad(&r.dcp, 0, r.ad.dp.n_tensors)) != MG_OK || (s = cuda_params_sync(&r.dcp)) != MG_OK ||
                    (s = cuda_tae_train_set_adv(r.ctt, &r.dcp, r.adv_w)) != MG_OK)
                    goto out;
            }
            if (r.have_ad && !r.have_dcp) train_zero_grad(&r.ad.dp, 0, r.ad.dp.n_tensors); /* stage dit: D on the host */
            if ((s = cuda_zero_grad(&r.cp, r.first, r.last)) != MG_OK) goto out;
            if (r.cd && (s = cuda_dist_grads_begin(r.cd)) != MG_OK) goto out;
            if ((s = batch_loss(&r, b, 1, &loss)) != MG_OK) goto out; /* ends reading the losses back */
            if (r.cd && (s = cuda_dist_grads_finish(r.cd)) != MG_OK) goto out; /* the sums over the ranks */
            double t2 = mg_now_ms();
            t_step = t2 - t1;
            if ((s = cuda_grad_clip(&r.cp, r.first, r.last, f->clip > 0 ? f->clip : 1e30, &gnorm)) != MG_OK) goto out;
            if ((s = cuda_adamw_step(&r.cp, r.first, r.last, step + 1, lr, &ao)) != MG_OK) goto out;
            if ((s = cuda_ema_update(&r.cp, r.first, r.last, decay)) != MG_OK) goto out;
            /* D's step, after the model's, as on the CPU (the step's sync ordered it after D's
             * gradients; its own sync orders the next step's D passes after it) */
            if (r.have_dcp && ((s = cuda_adamw_step(&r.dcp, 0, r.ad.dp.n_tensors, step + 1, d_lr, &ao)) != MG_OK ||
                               (s = cuda_params_sync(&r.dcp)) != MG_OK))
                goto out;
            if (r.have_ad && !r.have_dcp) adamw_step(&r.ad.dp, 0, r.ad.dp.n_tensors, step + 1, d_lr, &ao);
            if ((s = cuda_params_sync(&r.cp)) != MG_OK) goto out;
            t_opt = mg_now_ms() - t2;
#endif
        } else {
            train_zero_grad(&r.tp, r.first, r.last);
            if (r.have_ad) train_zero_grad(&r.ad.dp, 0, r.ad.dp.n_tensors);
            if ((s = batch_loss(&r, b, 1, &loss)) != MG_OK) goto out;
            gnorm = f->clip > 0 ? grad_clip(&r.tp, r.first, r.last, f->clip) : grad_global_norm(&r.tp, r.first, r.last);
            adamw_step(&r.tp, r.first, r.last, step + 1, lr, &ao);
            ema_update(&r.tp, r.first, r.last, decay);
            /* D's step, after the model's: both gradients were taken at the same D (adv.h) */
            if (r.have_ad) adamw_step(&r.ad.dp, 0, r.ad.dp.n_tensors, step + 1, d_lr, &ao);
        }
        if (!isfinite(loss)) {
            s = mg_fail(MG_ERR_ARG, "step %ld: the loss is %g: stopping without a checkpoint (the last good one is "
                        "%s; try a lower --lr)", step + 1, loss, r.ckpt);
            goto out;
        }
        step++;
        double ms = mg_now_ms() - t0;
        avg_ms = step - step0 == 1 ? ms : 0.9 * avg_ms + 0.1 * ms;
        if (f->log_every > 0 && (step % f->log_every == 0 || step == f->steps || step == step0 + 1)) {
            char eta[32];
            fmt_eta(eta, sizeof eta, (f->steps - step) * avg_ms / 1000.0);
            /* GPU runs: the phases (docs/TRAINING.md, "Speed"); each ends in a sync or is host work */
            char phases[160];
            if (f->device != MG_DEVICE_CUDA)
                snprintf(phases, sizeof phases, "data %.1f", t_data);
            else if (f->stage == STAGE_DIT)
                snprintf(phases, sizeof phases, "data %.1f, encode %.1f, aug %.1f, step %.1f, opt %.1f", t_data, t_enc,
                         t_aug, t_step, t_opt);
            else
                snprintf(phases, sizeof phases, "data %.1f, step %.1f, opt %.1f", t_data, t_step, t_opt);
            /* --adv: D's hinge loss, the generator term W x (-mean D(out)), D's accuracy, per image
             * (stage tae) or per judged frame (stage dit: their count, and D's host time on the GPU) */
            char advs[160] = "";
            if (r.have_ad) {
                double per = f->stage == STAGE_DIT ? (double)(r.ast.frames > 0 ? r.ast.frames : 1) : (double)f->batch;
                int k = snprintf(advs, sizeof advs, " | adv D %.4f G %.4f%s acc %.1f%%", r.ast.ld / per,
                                 f->adv * r.ast.g / per, r.adv_w != 0.0f ? "" : " (off)",
                                 r.ast.total ? 100.0 * r.ast.correct / r.ast.total : 0.0);
                if (f->stage == STAGE_DIT && k > 0 && (size_t)k < sizeof advs)
                    snprintf(advs + k, sizeof advs - k, " on %ld frames, %.1f ms", r.ast.frames, r.adv_ms);
            }
            printf("step %ld/%ld | loss %.9g | gnorm %.4g | lr %.3e%s | %.1f ms (%s) | MFU %.2f%% | ETA %s\n", step,
                   f->steps, loss, gnorm, lr, advs, ms, phases, 100.0 * flops / (ms * 1e-3) / (peak * 1e12), eta);
            fflush(stdout);
        }
        if (o->val_every > 0 && step % o->val_every == 0 && (s = validate(&r, step)) != MG_OK) goto out;
        /* data parallel: samples and checkpoints are rank 0's (all ranks hold the same state) */
        if (r.rank == 0 && o->sample_every > 0 && step % o->sample_every == 0 && (s = samples(&r, step)) != MG_OK) goto out;
        if (o->ckpt_every > 0 && step % o->ckpt_every == 0 && step < f->steps) {
            if (r.rank == 0 && (s = save_all(&r, step, &ckpt_ms)) != MG_OK) goto out;
            last_saved = step;
        }
        double elapsed = (mg_now_ms() - t_begin) / 1000.0;
        /* a signal, the time limit: data-parallel ranks decide together (a signal to any rank
         * stops all of them at the same step) */
        double stop_flags[3] = {stop_signal == SIGINT, stop_signal == SIGTERM,
                                o->time_limit > 0 && step < f->steps &&
                                    elapsed + (2.0 * avg_ms + 1.5 * ckpt_ms) / 1000.0 + 1.0 > o->time_limit};
#ifdef MG_HAVE_CUDA
        if (r.cd && (s = cuda_dist_sum(r.cd, stop_flags, 3)) != MG_OK) goto out;
#endif
        if (stop_flags[0] > 0 || stop_flags[1] > 0) {
            why = stop_flags[0] > 0 ? "interrupted (SIGINT)" : "terminated (SIGTERM)";
            break;
        }
        if (o->stop_after > 0 && step - step0 >= o->stop_after && step < f->steps) {
            why = "--stop-after";
            break;
        }
        if (stop_flags[2] > 0) {
            why = "time limit";
            break;
        }
    }
    prefetch_stop(p);
    if (r.rank == 0 && (last_saved != step || step == f->steps)) {
        double ms;
        if ((s = save_all(&r, step, &ms)) != MG_OK) goto out;
    }
    if (step == f->steps && o->val_every > 0 && step % o->val_every != 0 && (s = validate(&r, step)) != MG_OK) goto out;
    if (why)
        printf("stopped at step %ld/%ld: %s; continue with the same command and --resume\n", step, f->steps, why);
    else
        printf("done: %ld steps in %.1f s; model %s\n", f->steps, (mg_now_ms() - t_start) / 1000.0, o->out);
#ifdef MG_HAVE_CUDA
    if (r.cd && step > step0) {
        long nb;
        double bytes;
        cuda_dist_stats(r.cd, &nb, &bytes);
        printf("data parallel: %.1f gradient buckets and %.1f MiB all-reduced per step, on each of %d ranks\n",
               (double)nb / (step - step0), bytes / 1048576.0 / (step - step0), r.nranks);
    }
#endif
out:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
#ifdef MG_HAVE_CUDA
    if (r.cd && s != MG_OK) cuda_dist_abort(r.cd); /* the peers must not wait for this rank */
#endif
    run_free(&r);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    return s;
}
