/* Training batches: tasks (prompt and degradation strengths), noise levels, history
 * augmentation and prompt dropout, each drawn from (seed, step, item). Distributions and the
 * reasons for them are in docs/TRAINING.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"
#include "eval/degrade.h"
#include "model/forward.h"
#include "ops/cpu/parallel.h"
#include "train/batch.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#define AUG_DRAWS 8 /* floats of history-corruption parameters per frame */

/* What each seed is for: separate streams, so adding a draw to one never shifts another. */
enum { P_CLIP = 1, P_TASK, P_DEGRADE, P_NOISE, P_SIGMA, P_AUG, P_DROP, P_TAE_MIX, P_FADE };

uint64_t batch_seed(uint64_t seed, long step, int item, int purpose) {
    uint64_t s = seed ^ 0x6d69726167652d74ull; /* "mirage-t" */
    uint64_t h = mg_splitmix64(&s);
    s = h ^ (uint64_t)step * 0x9e3779b97f4a7c15ull;
    h = mg_splitmix64(&s);
    s = h ^ ((uint64_t)(uint32_t)item << 8 | (uint64_t)(purpose & 255));
    return mg_splitmix64(&s);
}

void batch_cfg_from_params(batch_cfg *bc, const train_params *tp) {
    bc->cfg = tp->cfg;
    bc->n_prompts = tp->n_prompts;
    memcpy(bc->prompts, tp->prompts, sizeof bc->prompts);
}

/* ---- noise levels ------------------------------------------------------------------------ */

/* Inference asks the model about two kinds of frame: the one being denoised, at the levels of
 * the shifted N-step schedule (N = 1..4 in practice: 1, .75, .667, .5, .333, .25 for shift 1),
 * and the history in the KV ring, refreshed at sigma_ctx. Half the frames get a history level
 * (uniform in [0, 2 sigma_ctx], so sigma_ctx is inside, not at an edge); the other half a
 * denoising level, half of those exactly on a grid the sampler uses and half uniform in
 * (0, 1] so the model is smooth between and can serve other step counts. */
void sigma_sample(float *sigma, int *is_ctx, int T, const mg_config *cfg, mg_rng *r) {
    for (int t = 0; t < T; t++) {
        float u = mg_rng_uniform(r), a = mg_rng_uniform(r), b = mg_rng_uniform(r);
        int ctx = u < 0.5f;
        if (ctx) {
            sigma[t] = 2.0f * cfg->sigma_ctx * a;
        } else if (b < 0.5f) {
            sigma[t] = 1.0f - a; /* (0, 1] */
        } else {
            int steps = 1 + (int)(a * 4.0f); /* 1..4 */
            int i = (int)(mg_rng_uniform(r) * (float)steps); /* 0..steps-1: never the final 0 */
            sigma[t] = sampler_sigma(i, steps, cfg->shift);
        }
        if (is_ctx) is_ctx[t] = ctx;
    }
}

/* ---- history augmentation ---------------------------------------------------------------- */

/* d[0]: how much of a 3x3 box blur replaces the latent (0..1); d[1]: a gain on every channel
 * (0.8..1.2); d[2..5]: per-channel offsets (channel c uses d[2 + c % 4]), in latent units
 * (the encoder's latents have a spread of order 1). Blur and a colour/brightness shift are the
 * errors a generated history actually shows: softened detail and a drifting palette. */
void hist_aug_apply(float *x, int lh, int lw, int Z, const float *d) {
    size_t n = (size_t)lh * lw * Z;
    float *tmp = malloc(n * sizeof(float));
    if (tmp) {
        memcpy(tmp, x, n * sizeof(float));
        for (int y = 0; y < lh; y++)
            for (int xx = 0; xx < lw; xx++)
                for (int c = 0; c < Z; c++) {
                    float s = 0.0f;
                    int k = 0;
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) {
                            int yy = y + dy, xc = xx + dx;
                            if (yy < 0 || yy >= lh || xc < 0 || xc >= lw) continue;
                            s += tmp[((size_t)yy * lw + xc) * Z + c];
                            k++;
                        }
                    float *p = &x[((size_t)y * lw + xx) * Z + c];
                    *p = (1.0f - d[0]) * *p + d[0] * (s / (float)k);
                }
        free(tmp);
    } /* no memory: the blur is skipped, the shift below still corrupts the frame */
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % (size_t)Z);
        x[i] = x[i] * d[1] + d[2 + c % 4];
    }
}

/* ---- allocation -------------------------------------------------------------------------- */

mg_status batch_alloc(train_batch *b, const batch_cfg *bc) {
    memset(b, 0, sizeof *b);
    if (bc->B < 1 || bc->S < 16 || bc->S % 16 || bc->T < 1 || bc->T > 64)
        return mg_fail(MG_ERR_ARG, "batch: bad sizes B=%d T=%d S=%d (S a multiple of 16, T 1..64)", bc->B, bc->T,
                       bc->S);
    int T = bc->stage == STAGE_TAE ? 1 : bc->T;
    b->B = bc->B, b->T = T, b->S = bc->S, b->lh = bc->S / 8, b->lw = bc->S / 8, b->Z = bc->cfg.z_ch;
    size_t B = (size_t)b->B, px = (size_t)bc->S * bc->S * 3, lat = (size_t)b->lh * b->lw * b->Z;
    int threads = 1;
#ifdef MG_HAVE_OPENMP
    threads = omp_get_max_threads();
#endif
    b->enc_threads = threads;
    b->enc_work_floats = tae_work_floats(&bc->cfg, bc->S, bc->S);
    size_t bytes = 0;
#define TAKE(n) (bytes += ((size_t)(n) + 63) / 64 * 64)
    TAKE(2 * B * T * px);                                   /* in_rgb, tgt_rgb */
    TAKE(B * sizeof(batch_item));
    if (bc->stage == STAGE_TAE) {
        TAKE(B * px * sizeof(float));
    } else {
        TAKE(4 * B * T * lat * sizeof(float));                /* cond, x0, x0_in, eps */
        TAKE(B * T * sizeof(float));
        TAKE(B * T * AUG_DRAWS * sizeof(float));
        TAKE(B * T);
        if (bc->cpu_encode) {
            TAKE((size_t)threads * px * sizeof(float));
            TAKE((size_t)threads * b->enc_work_floats * sizeof(float));
        }
    }
#undef TAKE
    b->mem = aligned_alloc(64, bytes);
    if (!b->mem) return mg_fail(MG_ERR_NOMEM, "batch: cannot allocate %zu bytes", bytes);
    memset(b->mem, 0, bytes);
    b->mem_bytes = bytes;
    char *p = b->mem;
#define GIVE(ptr, n) (ptr = (void *)p, p += ((size_t)(n) + 63) / 64 * 64)
    GIVE(b->in_rgb, 2 * B * T * px);
    b->tgt_rgb = b->in_rgb + B * T * px;
    GIVE(b->item, B * sizeof(batch_item));
    if (bc->stage == STAGE_TAE) {
        GIVE(b->img, B * px * sizeof(float));
    } else {
        GIVE(b->cond, 4 * B * T * lat * sizeof(float));
        b->x0 = b->cond + B * T * lat;
        b->x0_in = b->x0 + B * T * lat;
        b->eps = b->x0_in + B * T * lat;
        GIVE(b->sigma, B * T * sizeof(float));
        GIVE(b->aug_draw, B * T * AUG_DRAWS * sizeof(float));
        GIVE(b->style, B * T);
        if (bc->cpu_encode) {
            GIVE(b->enc_img, (size_t)threads * px * sizeof(float));
            GIVE(b->enc_work, (size_t)threads * b->enc_work_floats * sizeof(float));
        }
    }
#undef GIVE
    b->step = -1000000;
    return MG_OK;
}

void batch_free(train_batch *b) {
    free(b->mem);
    memset(b, 0, sizeof *b);
}

/* ---- phase 1: frames, tasks, draws ------------------------------------------------------- */

/* Prompt rows that make training pairs: every named prompt degrade.h knows, but not `none`
 * (row 0 is what prompt dropout trains). */
static int makes_pairs(const batch_cfg *bc, int row) { return row >= 1 && row < bc->n_prompts && degrade_known(bc->prompts[row]); }

mg_status batch_cfg_prompts(batch_cfg *bc, const char *list) {
    char buf[256];
    if (strlen(list) >= sizeof buf) return mg_fail(MG_ERR_ARG, "--train-prompts: the list is too long");
    snprintf(buf, sizeof buf, "%s", list);
    uint64_t mask = 0;
    for (char *save = NULL, *name = strtok_r(buf, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        float w = 1.0f;
        char *eq = strchr(name, '=');
        if (eq) {
            char *end;
            *eq = 0;
            w = strtof(eq + 1, &end);
            if (end == eq + 1 || *end || !(w > 0.0f) || w > 1e6f)
                return mg_fail(MG_ERR_ARG, "--train-prompts: '%s=%s': a weight is a number above 0", name, eq + 1);
            bc->weighted = 1;
        }
        int row = -1;
        for (int i = 1; i < bc->n_prompts && i < 64; i++)
            if (!strcmp(bc->prompts[i], name)) row = i;
        if (!makes_pairs(bc, row))
            return mg_fail(MG_ERR_ARG, "--train-prompts: '%s' is not a prompt of this model with training pairs "
                           "(colorize, upscale, restore, style:toon, style:sketch, style:thermal, dream)", name);
        mask |= (uint64_t)1 << row;
        bc->prompt_weight[row] = w;
    }
    if (!mask) return mg_fail(MG_ERR_ARG, "--train-prompts: no prompt named");
    bc->prompt_mask = mask;
    return MG_OK;
}

/* The rows that make pairs, and of those the rows of prompt_mask when it is set; drawn
 * uniformly, or in proportion to prompt_weight when weighted. */
static int pick_prompt(const batch_cfg *bc, mg_rng *r) {
    int rows[MG_MAX_PROMPTS], n = 0;
    for (int i = 1; i < bc->n_prompts; i++)
        if (makes_pairs(bc, i) && (!bc->prompt_mask || (bc->prompt_mask >> i & 1))) rows[n++] = i;
    if (n == 0) return 0;
    if (bc->weighted) { /* --train-prompts NAME=W: in proportion to the weights */
        double total = 0.0, acc = 0.0;
        for (int j = 0; j < n; j++) total += bc->prompt_weight[rows[j]];
        double u = mg_rng_uniform(r) * total;
        for (int j = 0; j < n; j++)
            if (u < (acc += bc->prompt_weight[rows[j]])) return rows[j];
        return rows[n - 1];
    }
    int k = (int)(mg_rng_uniform(r) * (float)n);
    return rows[k < n ? k : n - 1];
}

/* Strengths around the evaluation's defaults (degrade_params_default), so the model sees the
 * default case and its neighbourhood rather than one exact degradation. */
static degrade_params draw_degrade(mg_rng *r) {
    degrade_params p = degrade_params_default();
    static const int scales[] = {2, 3, 4, 4, 4, 6, 8};
    p.scale = scales[(int)(mg_rng_uniform(r) * 7.0f) % 7];
    p.nearest = mg_rng_uniform(r) < 0.2f;
    p.blur_sigma = 0.3f + 1.7f * mg_rng_uniform(r);
    p.noise_sigma = 16.0f * mg_rng_uniform(r);
    p.jpeg_quality = 10 + (int)(60.0f * mg_rng_uniform(r));
    return p;
}

static mg_status make_pair(const batch_cfg *bc, const char *prompt, const uint8_t *frame, uint8_t *in, uint8_t *tgt,
                           const degrade_params *dp, uint64_t seed) {
    MG_TRY(degrade_apply_params(prompt, frame, in, bc->S, bc->S, seed, dp));
    return style_apply(prompt, frame, tgt, bc->S, bc->S);
}

/* Fades and black frames (--fades): real streams have them (a camera covered, a scene fading
 * out, a clip that opens on black) and the data builder drops blank frames, so without this a
 * model never sees one and a black frame can send its history dark for good. A share of the
 * clips is scaled frame by frame before the pair is made, so input and target fade together:
 * a fade out (to black within 1..3 frames, staying black), a fade in (black, then up within
 * 1..3 frames) or a black gap of 1..2 frames in the middle. */
static void fade_clip(const batch_cfg *bc, uint8_t *frames, int T, uint64_t seed) {
    mg_rng r;
    mg_rng_seed(&r, seed);
    if (mg_rng_uniform(&r) >= bc->fades || T < 2) return;
    int kind = (int)(mg_rng_uniform(&r) * 3.0f) % 3;
    int at = 1 + (int)(mg_rng_uniform(&r) * (float)(T - 1)) % (T - 1); /* 1..T-1 */
    int len = 1 + (int)(mg_rng_uniform(&r) * 3.0f) % 3;                  /* 1..3 */
    size_t px = (size_t)bc->S * bc->S * 3;
    for (int t = 0; t < T; t++) {
        float g = 1.0f;
        if (kind == 0) g = t < at ? 1.0f : fmaxf(0.0f, 1.0f - (float)(t - at + 1) / (float)len);
        else if (kind == 1) g = t < at ? 0.0f : fminf(1.0f, (float)(t - at + 1) / (float)len);
        else g = t >= at && t < at + (len + 1) / 2 ? 0.0f : 1.0f;
        if (g >= 1.0f) continue;
        uint8_t *f = frames + (size_t)t * px;
        for (size_t k = 0; k < px; k++) f[k] = (uint8_t)((float)f[k] * g + 0.5f);
    }
}

static mg_status sample_item(train_batch *b, const batch_cfg *bc, dataset *ds, long step, int i) {
    size_t px = (size_t)bc->S * bc->S * 3;
    int T = b->T;
    uint8_t *in = b->in_rgb + (size_t)i * T * px, *tgt = b->tgt_rgb + (size_t)i * T * px;
    batch_item *it = &b->item[i];
    memset(it, 0, sizeof *it);
    /* the real frames go into tgt first; the pair is made frame by frame from them */
    MG_TRY(dataset_sample_clip(ds, batch_seed(bc->seed, step, bc->item0 + i, P_CLIP), T, bc->S, tgt));
    mg_rng r;
    mg_rng_seed(&r, batch_seed(bc->seed, step, bc->item0 + i, P_TASK));
    degrade_params dp;
    {
        mg_rng rd;
        mg_rng_seed(&rd, batch_seed(bc->seed, step, bc->item0 + i, P_DEGRADE));
        dp = draw_degrade(&rd);
    }
    if (bc->stage == STAGE_TAE) {
        /* The autoencoder must carry what the DiT reads and writes: degraded inputs (grey,
         * blocky, noisy) and styled targets (flat toon colours, pencil, ironbow), not only
         * natural frames. Half the images are plain frames, half a random prompt's input or
         * target. */
        mg_rng rm;
        mg_rng_seed(&rm, batch_seed(bc->seed, step, bc->item0 + i, P_TAE_MIX));
        float u = mg_rng_uniform(&rm);
        int prompt = pick_prompt(bc, &r);
        it->prompt = it->row = prompt;
        memcpy(in, tgt, px);
        if (u >= 0.5f && prompt > 0) {
            uint8_t *scratch = malloc(2 * px);
            if (!scratch) return mg_fail(MG_ERR_NOMEM, "batch: out of memory");
            mg_status s = make_pair(bc, bc->prompts[prompt], tgt, scratch, scratch + px, &dp,
                                    batch_seed(bc->seed, step, bc->item0 + i, P_NOISE));
            if (s == MG_OK) memcpy(in, u < 0.75f ? scratch : scratch + px, px);
            free(scratch);
            MG_TRY(s);
        }
        float *img = b->img + (size_t)i * px;
        for (size_t k = 0; k < px; k++) img[k] = (float)in[k] * (1.0f / 255.0f);
        return MG_OK;
    }

    if (bc->fades > 0.0f) fade_clip(bc, tgt, T, batch_seed(bc->seed, step, bc->item0 + i, P_FADE));
    int prompt = pick_prompt(bc, &r);
    it->prompt = prompt;
    it->dream = strcmp(bc->prompts[prompt], "dream") == 0;
    {
        mg_rng rp;
        mg_rng_seed(&rp, batch_seed(bc->seed, step, bc->item0 + i, P_DROP));
        it->row = mg_rng_uniform(&rp) < bc->prompt_dropout ? 0 : prompt;
    }
    it->dp = dp; /* the frames' pairs are made by make_frame, in parallel over the batch */
    int style = style_kind(bc->prompts[prompt]);
    memset(b->style + (size_t)i * T, bc->device_styles && (style == STYLE_TOON || style == STYLE_SKETCH) ? style : STYLE_NONE,
           (size_t)T);
    size_t lat = (size_t)b->lh * b->lw * b->Z;
    mg_rng rn;
    mg_rng_seed(&rn, batch_seed(bc->seed, step, bc->item0 + i, P_NOISE));
    mg_rng_normal_fill(&rn, b->eps + (size_t)i * T * lat, (size_t)T * lat);
    mg_rng rs;
    mg_rng_seed(&rs, batch_seed(bc->seed, step, bc->item0 + i, P_SIGMA));
    int is_ctx[64];
    float *sigma = b->sigma + (size_t)i * T;
    sigma_sample(sigma, is_ctx, T, &bc->cfg, &rs);
    /* History augmentation: half the history-level frames (those that stand for the ring at
     * run time) get a corrupted clean latent and extra noise, up to 0.25 on top of their level,
     * which the model is told through sigma. The last frame is never history for anyone. */
    mg_rng ra;
    mg_rng_seed(&ra, batch_seed(bc->seed, step, bc->item0 + i, P_AUG));
    for (int t = 0; t < T; t++) {
        float *d = b->aug_draw + ((size_t)i * T + t) * AUG_DRAWS;
        float u = mg_rng_uniform(&ra);
        for (int k = 0; k < AUG_DRAWS; k++) d[k] = mg_rng_uniform(&ra);
        int on = bc->hist_aug && is_ctx[t] && t < T - 1 && u < 0.5f;
        it->aug[t] = on;
        if (!on) continue;
        d[0] = d[0];                      /* blur mix 0..1 */
        d[1] = 0.8f + 0.4f * d[1];        /* gain */
        for (int c = 2; c < 6; c++) d[c] = 0.3f * (2.0f * d[c] - 1.0f); /* offsets +-0.3 */
        sigma[t] = fminf(1.0f, sigma[t] + 0.25f * d[6]);
    }
    return MG_OK;
}

/* Frame t of dit item i: the input from the real frame (kept in tgt until now), then the target
 * in place (unless the device makes it: b->style). Each frame its own noise seed (restore), the
 * strengths of its clip. */
static mg_status make_frame(train_batch *b, const batch_cfg *bc, long step, int i, int t) {
    size_t px = (size_t)bc->S * bc->S * 3, f = (size_t)i * b->T + t;
    const batch_item *it = &b->item[i];
    uint8_t *fi = b->in_rgb + f * px, *ft = b->tgt_rgb + f * px;
    MG_TRY(degrade_apply_params(bc->prompts[it->prompt], ft, fi, bc->S, bc->S,
                                batch_seed(bc->seed, step, (bc->item0 + i) * 64 + t, P_NOISE), &it->dp));
    if (b->style[f] != STYLE_NONE) return MG_OK;
    return style_apply(bc->prompts[it->prompt], ft, ft, bc->S, bc->S);
}

mg_status batch_sample(train_batch *b, const batch_cfg *bc, dataset *ds, long step) {
    mg_status st = MG_OK;
    /* one thread per item (the clip read and the draws), then one per frame (the degradations
     * and styles, the costly part); the first failure is the one reported */
    MG_OMP(omp parallel for schedule(dynamic, 1))
    for (int i = 0; i < b->B; i++) {
        mg_status s = sample_item(b, bc, ds, step, i);
        if (s != MG_OK) {
            MG_OMP(omp critical(batch_err))
            if (st == MG_OK) st = s;
        }
    }
    if (st == MG_OK && bc->stage == STAGE_DIT) {
        MG_OMP(omp parallel for schedule(dynamic, 1))
        for (int k = 0; k < b->B * b->T; k++) {
            mg_status s = make_frame(b, bc, step, k / b->T, k % b->T);
            if (s != MG_OK) {
                MG_OMP(omp critical(batch_err))
                if (st == MG_OK) st = s;
            }
        }
    }
    b->step = st == MG_OK ? step : -1000000;
    return st;
}

/* ---- phase 2 ----------------------------------------------------------------------------- */

void batch_finish(train_batch *b, const batch_cfg *bc) {
    size_t lat = (size_t)b->lh * b->lw * b->Z;
    int n = b->B * b->T;
    /* frame by frame (each its own draws, so the result does not depend on the threads) */
    MG_OMP(omp parallel for schedule(static) if ((size_t)n * lat > MG_OMP_MIN_ELEMS))
    for (int f = 0; f < n; f++) {
        float *x = b->x0_in + (size_t)f * lat;
        memcpy(x, b->x0 + (size_t)f * lat, lat * sizeof(float));
        if (b->item[f / b->T].aug[f % b->T]) hist_aug_apply(x, b->lh, b->lw, b->Z, b->aug_draw + (size_t)f * AUG_DRAWS);
    }
}

mg_status batch_encode_cpu(train_batch *b, const batch_cfg *bc, const mg_model *frozen) {
    if (!b->enc_work) return mg_fail(MG_ERR_ARG, "batch_encode_cpu: the batch was allocated without cpu_encode");
    size_t px = (size_t)b->S * b->S * 3, lat = (size_t)b->lh * b->lw * b->Z;
    int n = b->B * b->T;
    /* 2n encodes (input and target of every frame), each on one thread with its own work; at
     * most enc_threads threads, one scratch slot each */
    MG_OMP(omp parallel for schedule(dynamic, 1) num_threads(b->enc_threads))
    for (int k = 0; k < 2 * n; k++) {
        int tid = 0;
#ifdef MG_HAVE_OPENMP
        tid = omp_get_thread_num(); /* < enc_threads: the team is at most that */
#endif
        int f = k % n, which = k / n;
        if (which == 0 && b->item[f / b->T].dream) {
            memset(b->cond + (size_t)f * lat, 0, lat * sizeof(float));
            continue;
        }
        const uint8_t *src = (which ? b->tgt_rgb : b->in_rgb) + (size_t)f * px;
        float *img = b->enc_img + (size_t)tid * px;
        for (size_t q = 0; q < px; q++) img[q] = (float)src[q] * (1.0f / 255.0f);
        tae_encode(frozen, (which ? b->x0 : b->cond) + (size_t)f * lat, img,
                   b->enc_work + (size_t)tid * b->enc_work_floats, b->S, b->S);
    }
    batch_finish(b, bc);
    return MG_OK;
}

void batch_clips(const train_batch *b, const batch_cfg *bc, dit_clip *clips) {
    size_t lat = (size_t)b->lh * b->lw * b->Z;
    for (int i = 0; i < b->B; i++) {
        size_t o = (size_t)i * b->T * lat;
        clips[i] = (dit_clip){.T = b->T, .lh = b->lh, .lw = b->lw, .x0 = b->x0 + o, .x0_in = b->x0_in + o,
                              .eps = b->eps + o, .cond = b->item[i].dream ? NULL : b->cond + o,
                              .sigma = b->sigma + (size_t)i * b->T, .prompt = b->item[i].row,
                              .window = bc->window};
    }
}
