/* The evaluation loop: clip -> (input, truth) -> model(s) -> metrics -> report. See eval.h. */
#include "eval/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"
#include "core/timing.h"
#include "eval/degrade.h"
#include "eval/files.h"
#include "eval/report.h"
#include "model/forward.h"
#include "ops/ops.h"

eval_opts eval_opts_default(void) {
    eval_opts o = {.prompt = "colorize", .frames = 1000, .steps = 2, .ring = 0, .guidance = 1.0f, .seed = 0,
                   .device = MG_DEVICE_CPU, .report_dir = "eval-report", .input_label = "", .log = NULL,
                   .progress_every = 100};
    o.thr = eval_thresholds_default();
    return o;
}

long eval_pingpong(long i, long L) {
    if (L <= 1) return 0;
    long period = 2 * (L - 1), k = i % period;
    return k < L ? k : period - k;
}

/* ---- the clip, played back and forth ---------------------------------------------------- */

typedef struct clip_player {
    source *src;
    size_t bytes;       /* one frame */
    int keep;           /* keep frames for playing back (the source can end) */
    uint8_t **frames;   /* (n) kept frames */
    long n, cap, limit; /* kept, allocated, the most ever needed */
    long length;        /* the clip's length once it ended, else 0 */
    uint8_t *buf;       /* (bytes + SOURCE_RGB_PAD) where the source reads into */
} clip_player;

static mg_status clip_init(clip_player *p, source *src, long limit) {
    memset(p, 0, sizeof *p);
    p->src = src;
    p->bytes = (size_t)src->width * src->height * 3;
    p->keep = !(src->live || !strcmp(src->name, "testsrc"));
    p->limit = limit;
    p->buf = malloc(p->bytes + SOURCE_RGB_PAD);
    return p->buf ? MG_OK : mg_fail(MG_ERR_NOMEM, "eval: out of memory");
}

static void clip_free(clip_player *p) {
    for (long i = 0; i < p->n; i++) free(p->frames[i]);
    free(p->frames);
    free(p->buf);
}

/* Frame i of the played sequence into dst (bytes). *ended is set when this call found the
 * clip's end (once). */
static mg_status clip_get(clip_player *p, long i, uint8_t *dst, int *ended) {
    *ended = 0;
    if (!p->length) {
        source_frame sf;
        mg_status s = source_read(p->src, p->buf, &sf);
        if (s == MG_OK) {
            memcpy(dst, p->buf, p->bytes);
            if (p->keep && p->n < p->limit) {
                if (p->n == p->cap) {
                    long nc = p->cap ? 2 * p->cap : 64;
                    uint8_t **f = realloc(p->frames, (size_t)nc * sizeof *f);
                    if (!f) return mg_fail(MG_ERR_NOMEM, "eval: out of memory keeping the clip's frames");
                    p->frames = f, p->cap = nc;
                }
                if (!(p->frames[p->n] = malloc(p->bytes)))
                    return mg_fail(MG_ERR_NOMEM, "eval: out of memory keeping frame %ld of the clip (%.1f MiB so far)", p->n,
                                   p->n * (double)p->bytes / 1048576.0);
                memcpy(p->frames[p->n++], dst, p->bytes);
            }
            return MG_OK;
        }
        if (s != MG_ERR_EOF) return s;
        if (i == 0) return mg_fail(MG_ERR_FORMAT, "%s: the input has no frames", p->src->name);
        if (!p->keep || p->n != i)
            return mg_fail(MG_ERR_IO, "%s: the input ended after %ld frames and was not kept for playing back", p->src->name, i);
        p->length = i;
        *ended = 1;
    }
    memcpy(dst, p->frames[eval_pingpong(i, p->length)], p->bytes);
    return MG_OK;
}

/* ---- the loop --------------------------------------------------------------------------- */

static uint64_t frame_seed(uint64_t seed, long f) {
    uint64_t st = seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(f + 1));
    return mg_splitmix64(&st);
}

static double block_mean(const double *x, long from, long to) {
    double s = 0;
    long k = 0;
    for (long i = from; i < to; i++)
        if (isfinite(x[i])) s += x[i], k++;
    return k ? s / k : NAN;
}

static void print_progress(FILE *log, long f, long N, int nm, eval_series *out, int has_truth, long from) {
    fprintf(log, "frame %ld/%ld", f, N);
    if (has_truth) {
        fprintf(log, " | psnr");
        for (int m = 0; m < nm; m++) fprintf(log, "%s%.2f", m ? " / " : " ", block_mean(out[m].psnr, from, f));
        fprintf(log, " dB | ssim");
        for (int m = 0; m < nm; m++) fprintf(log, "%s%.3f", m ? " / " : " ", block_mean(out[m].ssim, from, f));
    } else {
        fprintf(log, " | change");
        for (int m = 0; m < nm; m++) fprintf(log, "%s%.2f", m ? " / " : " ", block_mean(out[m].change, from, f));
        fprintf(log, " | colour std");
        for (int m = 0; m < nm; m++) fprintf(log, "%s%.1f", m ? " / " : " ", block_mean(out[m].colour_std, from, f));
        fprintf(log, " | detail");
        for (int m = 0; m < nm; m++) fprintf(log, "%s%.3g", m ? " / " : " ", block_mean(out[m].detail, from, f));
    }
    fprintf(log, " |");
    for (int m = 0; m < nm; m++) fprintf(log, "%s%.1f", m ? " / " : " ", block_mean(out[m].ms, from, f));
    fprintf(log, " ms/frame\n");
    fflush(log);
}

static const char *yesno_flag(const eval_flag *f, char *buf, size_t n) {
    if (!f->flagged) return "no";
    snprintf(buf, n, "YES at frame %ld (%s)", f->frame, f->why);
    return buf;
}

static void print_summary(FILE *log, const eval_summary *s, const char *label, const char *file) {
    char b1[160], b2[160], b3[160];
    report_verdict v = report_verdict_of(s);
    fprintf(log, "mirage eval | summary, model %s (%s), %d frames\n", label, file, s->frames);
    if (s->has_truth) {
        fprintf(log, "  psnr      %.2f dB mean | min %.2f | first %d frames %.2f, last %.2f\n", s->psnr_mean, s->psnr_min,
                s->frames < 50 ? s->frames : 50, s->psnr_first, s->psnr_last);
        fprintf(log, "  drift     %+.3f dB per 1000 frames (+- %.3f)   %s (bar: >= %.1f)\n", s->drift_db_per_1000,
                s->drift_se_per_1000, v.drift ? "pass" : "FAIL", REPORT_DRIFT_MIN_DB_PER_1000);
        fprintf(log, "  baseline  the model input itself: psnr %.2f dB, ssim %.4f, slope %+.3f dB per 1000 frames\n",
                s->base_psnr_mean, s->base_ssim_mean, s->base_drift_db_per_1000);
        fprintf(log, "  ssim      %.4f mean | min %.4f\n", s->ssim_mean, s->ssim_min);
        fprintf(log, "  flicker   %.3fx the truth's frame change (%.2f vs %.2f levels)   %s (bar: <= %.1fx)\n", s->flicker,
                s->change_mean, s->ref_change_mean, v.flicker ? "pass" : "FAIL", REPORT_FLICKER_MAX);
    } else {
        fprintf(log, "  change    %.2f levels per frame (the clip: %.2f; windows %.2f..%.2f)\n", s->change_mean, s->ref_change_mean,
                s->ref_change_range[0], s->ref_change_range[1]);
        fprintf(log, "  range     %.1f%% of 50-frame windows outside the clip's range of colour std, detail or change\n",
                100 * s->out_of_range);
    }
    fprintf(log, "  colour    mean bias R %+.1f G %+.1f B %+.1f | std ratio %.2f %.2f %.2f\n", s->mean_bias[0], s->mean_bias[1],
            s->mean_bias[2], s->std_ratio[0], s->std_ratio[1], s->std_ratio[2]);
    fprintf(log, "  detail    %.3gx the %s's\n", s->detail_ratio, s->has_truth ? "truth" : "clip");
    fprintf(log, "  flags     collapse %s | explosion %s | freeze %s\n", yesno_flag(&s->collapse, b1, sizeof b1),
            yesno_flag(&s->explosion, b2, sizeof b2), yesno_flag(&s->freeze, b3, sizeof b3));
    fprintf(log, "  time      %.1f ms/frame mean | %.1f p50 | %.1f max\n", s->ms_mean, s->ms_p50, s->ms_max);
    fprintf(log, "  verdict   %s\n", v.all ? "pass (issue 6 bars)" : "FAIL (issue 6 bars)");
}

/* The autoencoder alone: out = decode(encode(in)), u8 in and out as the frame step has them. */
typedef struct ae_buf {
    float *img, *lat, *work;
} ae_buf;

static mg_status ae_init(ae_buf *b, const mg_model *m, int W, int H) {
    const mg_config *c = mg_model_config(m);
    b->img = malloc((size_t)W * H * 3 * sizeof(float));
    b->lat = malloc((size_t)(W / 8) * (H / 8) * c->z_ch * sizeof(float));
    b->work = malloc(tae_work_floats(c, H, W) * sizeof(float));
    if (!b->img || !b->lat || !b->work) return mg_fail(MG_ERR_NOMEM, "eval: out of memory for the autoencoder at %dx%d", W, H);
    return MG_OK;
}

static void ae_free(ae_buf *b) {
    free(b->img);
    free(b->lat);
    free(b->work);
}

static void ae_step(ae_buf *b, const mg_model *m, const uint8_t *in, uint8_t *out, int W, int H) {
    size_t n = (size_t)W * H * 3;
    rgb_u8_to_float(b->img, in, n);
    tae_encode(m, b->lat, b->img, b->work, H, W);
    tae_decode(m, b->img, b->lat, b->work, H, W);
    rgb_float_to_u8(out, b->img, n);
}

mg_status eval_run(const eval_opts *o, source *src, const mg_model *a, const mg_model *b, eval_summary *sums) {
    const mg_model *models[2] = {a, b};
    int nm = b ? 2 : 1, W = src->width, H = src->height;
    long N = o->frames;
    if (!a) return mg_fail(MG_ERR_ARG, "eval: no model");
    if (N < 1 || N > 100000000) return mg_fail(MG_ERR_ARG, "eval: --frames must be 1..1e8, found %ld", N);
    if (!degrade_known(o->prompt))
        return mg_fail(MG_ERR_ARG,
                       "eval: prompt '%s' has no ground truth defined (known: none, colorize, upscale, restore, "
                       "style:toon, style:sketch, style:thermal, dream)",
                       o->prompt ? o->prompt : "(null)");
    if (W < 16 || H < 16 || W % 16 || H % 16) return mg_fail(MG_ERR_SHAPE, "eval: frame size %dx%d: the model needs multiples of 16", W, H);
    int has_truth = degrade_has_truth(o->prompt);
    size_t bytes = (size_t)W * H * 3, pad = bytes + SOURCE_RGB_PAD;

    if (o->autoencoder && (o->device != MG_DEVICE_CPU || !has_truth))
        return mg_fail(MG_ERR_ARG, "eval: --autoencoder measures the autoencoder alone on the prompt's truth: it runs on the CPU, "
                                   "with a prompt that has one (not dream)");
    mg_status s = MG_OK;
    mg_stream *st[2] = {NULL, NULL};
    ae_buf ae[2];
    memset(ae, 0, sizeof ae);
    eval_series out[2], ref;
    memset(out, 0, sizeof out);
    memset(&ref, 0, sizeof ref);
    eval_summary sum[2];
    clip_player clip;
    memset(&clip, 0, sizeof clip);
    /* frames: clip, input, truth, prev truth, out[2], prev out[2], then the strips */
    int n_strips = 0;
    long strip_frame[REPORT_MAX_STRIPS];
    const long want[REPORT_MAX_STRIPS] = {0, 100, 1000, N - 1};
    for (int i = 0; i < REPORT_MAX_STRIPS; i++)
        if (want[i] < N && (n_strips == 0 || want[i] > strip_frame[n_strips - 1])) strip_frame[n_strips++] = want[i];
    size_t n_bufs = 8 + (size_t)n_strips * 4;
    uint8_t *mem = calloc(n_bufs, pad);
    double *scratch = malloc(metric_ssim_scratch(W, H) * sizeof *scratch);
    if (!mem || !scratch) {
        s = mg_fail(MG_ERR_NOMEM, "eval: out of memory for %dx%d frames", W, H);
        goto done;
    }
    uint8_t *clipf = mem, *input = mem + pad, *truth = mem + 2 * pad, *prev_truth = mem + 3 * pad;
    uint8_t *outf[2] = {mem + 4 * pad, mem + 5 * pad}, *prev_out[2] = {mem + 6 * pad, mem + 7 * pad};
    uint8_t *strip_in[REPORT_MAX_STRIPS], *strip_out[2][REPORT_MAX_STRIPS], *strip_truth[REPORT_MAX_STRIPS];
    for (int i = 0; i < n_strips; i++) {
        uint8_t *base = mem + (8 + (size_t)i * 4) * pad;
        strip_in[i] = base, strip_truth[i] = base + pad, strip_out[0][i] = base + 2 * pad, strip_out[1][i] = base + 3 * pad;
    }

    for (int m = 0; m < nm; m++) {
        mg_stream_opts so = mg_stream_opts_default();
        so.width = W, so.height = H, so.steps = o->steps, so.ring = o->ring, so.guidance = o->guidance;
        so.seed = o->seed, so.prompt = o->prompt, so.device = o->device;
        if (o->autoencoder) {
            if ((s = ae_init(&ae[m], models[m], W, H)) != MG_OK) goto done;
        } else if ((s = mg_stream_new(models[m], &so, &st[m])) != MG_OK) {
            goto done;
        }
        if ((s = eval_series_init(&out[m], (int)N)) != MG_OK) goto done;
    }
    if ((s = eval_series_init(&ref, (int)N)) != MG_OK) goto done;
    if ((s = clip_init(&clip, src, N)) != MG_OK) goto done;

    char desc[2][128];
    for (int m = 0; m < nm; m++) {
        const mg_config *c = mg_model_config(models[m]);
        snprintf(desc[m], sizeof desc[m], "%s, %.2f M params", c->name, mg_model_params(models[m]) / 1e6);
    }
    const char *dev = o->device == MG_DEVICE_CUDA ? "cuda" : "cpu";
    int ring = o->ring ? o->ring : mg_model_config(a)->ring;
    if (o->log) {
        for (int m = 0; m < nm; m++)
            fprintf(o->log, "mirage eval | model %c %s (%s)\n", 'A' + m, o->model_label[m] ? o->model_label[m] : "", desc[m]);
        fprintf(o->log, "mirage eval | input %s (%s) | %dx%d | %ld frames | prompt %s | %d step%s | ring %d | guidance %g | seed %llu | %s (%s)\n",
                o->input_label, src->desc, W, H, N, o->prompt, o->steps, o->steps == 1 ? "" : "s", ring, o->guidance, (unsigned long long)o->seed, dev,
                mg_build_features());
        if (o->autoencoder)
            fprintf(o->log, "mirage eval | the autoencoder alone: decode(encode(truth)) against the truth (%s)\n", degrade_describe(o->prompt));
        else
            fprintf(o->log, "mirage eval | %s\n", degrade_describe(o->prompt));
        fprintf(o->log, "mirage eval | report -> %s (strips: PNG, %s)\n", o->report_dir, image_png_writer());
        fflush(o->log);
    }

    double t_start = mg_now_ms();
    long last_line = 0;
    for (long f = 0; f < N; f++) {
        int ended;
        if ((s = clip_get(&clip, f, clipf, &ended)) != MG_OK) goto done;
        if (ended && o->log)
            fprintf(o->log, "mirage eval | the input ended after %ld frames: playing it back and forth (%.1f MiB kept)\n",
                    clip.length, clip.length * (double)bytes / 1048576.0);
        const uint8_t *reference = clipf; /* the truth, or for dream the clip frame itself */
        if (has_truth) {
            if ((s = style_apply(o->prompt, clipf, truth, W, H)) != MG_OK) goto done;
            reference = truth;
        }
        if ((s = degrade_apply(o->prompt, clipf, input, W, H, frame_seed(o->seed, f))) != MG_OK) goto done;
        for (int m = 0; m < nm; m++) {
            double t0 = mg_now_ms();
            if (o->autoencoder) ae_step(&ae[m], models[m], truth, outf[m], W, H); /* the prompt's ceiling */
            else if ((s = mg_stream_step(st[m], input, outf[m])) != MG_OK) goto done;
            double ms = mg_now_ms() - t0;
            eval_series_push(&out[m], outf[m], f ? prev_out[m] : NULL, has_truth ? truth : NULL, W, H, ms, scratch);
        }
        /* the truth's psnr/ssim: the model input scored as if it were the output (baseline) */
        eval_series_push(&ref, reference, f ? prev_truth : NULL, has_truth ? input : NULL, W, H, NAN, scratch);
        for (int i = 0; i < n_strips; i++)
            if (strip_frame[i] == f) {
                memcpy(strip_in[i], input, bytes); /* dream: the clip frame, which the model drops */
                memcpy(strip_truth[i], reference, bytes);
                for (int m = 0; m < nm; m++) memcpy(strip_out[m][i], outf[m], bytes);
            }
        memcpy(prev_truth, reference, bytes);
        for (int m = 0; m < nm; m++) memcpy(prev_out[m], outf[m], bytes);
        if (o->log && o->progress_every > 0 && ((f + 1) % o->progress_every == 0 || f + 1 == N)) {
            print_progress(o->log, f + 1, N, nm, out, has_truth, last_line);
            last_line = f + 1;
        }
    }
    double wall_s = (mg_now_ms() - t_start) / 1000.0;

    for (int m = 0; m < nm; m++) eval_summarise(&out[m], &ref, has_truth, &o->thr, &sum[m]);

    eval_report r = {0};
    r.dir = o->report_dir;
    r.input = o->input_label, r.input_desc = src->desc, r.prompt = o->prompt, r.degradation = degrade_describe(o->prompt);
    r.device = dev, r.build = mg_build_features();
    r.n_models = nm;
    for (int m = 0; m < nm; m++) {
        r.model_file[m] = o->model_label[m] ? o->model_label[m] : "";
        r.model_desc[m] = desc[m];
        r.out[m] = &out[m], r.sum[m] = &sum[m];
    }
    r.width = W, r.height = H, r.steps = o->steps, r.ring = ring, r.guidance = o->guidance, r.seed = o->seed;
    r.frames = N, r.clip_frames = clip.length, r.has_truth = has_truth, r.wall_s = wall_s, r.thr = &o->thr;
    r.ref = &ref;
    r.n_strips = n_strips;
    for (int i = 0; i < n_strips; i++) {
        r.strip_frame[i] = strip_frame[i];
        r.strip_input[i] = strip_in[i], r.strip_truth[i] = strip_truth[i];
        for (int m = 0; m < nm; m++) r.strip_out[m][i] = strip_out[m][i];
    }
    if ((s = report_write(&r)) != MG_OK) goto done;

    if (o->log) {
        for (int m = 0; m < nm; m++) print_summary(o->log, &sum[m], m ? "B" : "A", r.model_file[m]);
        fprintf(o->log, "mirage eval | %ld frames in %.1f s | report: %s/index.html, %s/metrics.json\n", N, wall_s, o->report_dir,
                o->report_dir);
    }
    if (sums)
        for (int m = 0; m < nm; m++) sums[m] = sum[m];
done:
    for (int m = 0; m < 2; m++) {
        mg_stream_free(st[m]);
        ae_free(&ae[m]);
        eval_series_free(&out[m]);
    }
    eval_series_free(&ref);
    clip_free(&clip);
    free(mem);
    free(scratch);
    return s;
}
