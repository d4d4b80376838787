/* One stream: the path of one frame, top to bottom (docs/ARCHITECTURE.md, "One frame").
 * The model is shared and read-only; everything that changes lives here, in one arena
 * allocated at mg_stream_new. Nothing is allocated per frame. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/timing.h"
#include "model/forward.h"
#include "model/stream.h"
#include "ops/ops.h"
#ifdef MG_HAVE_CUDA
#include "cuda/cuda_stream.h"
#endif

struct mg_stream {
    const mg_model *m;
    int W, H, lh, lw, N, steps, prompt, dream;
    float guidance;
    mg_rng rng;
    kv_ring ring;
    dit_work dw;
    float *tae_work;
    float *img;             /* (H, W, 3) float frame in / out */
    float *cond, *z, *v, *vu, *noise, *ctx_noise, *zc; /* (lh, lw, Z) each */
    float *arena;
    size_t arena_bytes;
    mg_step_timing timing;
    void *cuda;             /* the cuda_stream doing the work for --device cuda, else NULL */
    /* frames in flight (mg_stream_submit / collect): the CPU computes a frame at its submit and
     * keeps its output and timing here until its collect; CUDA keeps them in the cuda_stream */
    int q_head, q_n;
    uint8_t *q_out[2];      /* (H, W, 3) each, CPU streams only */
    mg_step_timing q_tm[2];
};

mg_stream_opts mg_stream_opts_default(void) {
    mg_stream_opts o = {256, 256, 2, 0, 1.0f, 0, NULL, MG_DEVICE_CPU};
    return o;
}

static size_t stream_layout(mg_stream *s, float *base) {
    const mg_config *c = &s->m->cfg;
    size_t off = 0, lat = (size_t)s->lh * s->lw * c->z_ch;
    int K = s->ring.K;
    float *ring = arena_take(base, &off, kv_ring_floats(c->layers, K, s->N, c->d));
    float *dw = arena_take(base, &off, dit_work_floats(c, 1, s->N, (K + 1) * s->N));
    s->tae_work = arena_take(base, &off, tae_work_floats(c, s->H, s->W));
    s->img = arena_take(base, &off, (size_t)s->H * s->W * 3);
    s->cond = arena_take(base, &off, lat);
    s->z = arena_take(base, &off, lat);
    s->v = arena_take(base, &off, lat);
    s->vu = arena_take(base, &off, lat);
    s->noise = arena_take(base, &off, lat);
    s->ctx_noise = arena_take(base, &off, lat);
    s->zc = arena_take(base, &off, lat);
    if (base) {
        kv_ring_init(&s->ring, ring, c->layers, K, s->N, c->d);
        dit_work_init(&s->dw, dw, c, 1, s->N, (K + 1) * s->N);
    }
    return off;
}

/* --device cuda: the stream keeps its RNG, prompt and the two noise buffers on the host (the
 * noise is drawn here, in the CPU's order, so a CUDA and a CPU stream with one seed see the
 * same noise); everything else lives in the cuda_stream. */
static mg_status stream_new_cuda(mg_stream *s, mg_stream **out) {
#ifdef MG_HAVE_CUDA
    size_t lat = (size_t)s->lh * s->lw * s->m->cfg.z_ch;
    s->arena_bytes = 2 * lat * sizeof(float);
    s->arena = aligned_alloc(64, (s->arena_bytes + 63) & ~(size_t)63);
    if (!s->arena) {
        free(s);
        return mg_fail(MG_ERR_NOMEM, "out of memory creating a stream");
    }
    s->noise = s->arena, s->ctx_noise = s->arena + lat;
    cuda_stream_cfg cc = {s->W, s->H, s->steps, s->ring.K, s->guidance};
    cuda_stream *cs = NULL;
    mg_status st = cuda_stream_new(s->m, &cc, &cs);
    if (st != MG_OK) {
        free(s->arena);
        free(s);
        return st;
    }
    s->cuda = cs;
    *out = s;
    return MG_OK;
#else
    free(s);
    return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: this build has no CUDA backend");
#endif
}

mg_status mg_stream_new(const mg_model *m, const mg_stream_opts *o, mg_stream **out) {
    *out = NULL;
#ifndef MG_HAVE_CUDA
    if (o->device == MG_DEVICE_CUDA)
        return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: this build has no CUDA backend (built without nvcc)");
#endif
    if (o->width < 16 || o->height < 16 || o->width % 16 || o->height % 16 || o->width > 8192 || o->height > 8192)
        return mg_fail(MG_ERR_SHAPE, "frame size %dx%d: expected multiples of 16 between 16 and 8192",
                       o->width, o->height);
    if (o->steps < 1 || o->steps > 64)
        return mg_fail(MG_ERR_ARG, "steps %d: expected 1..64", o->steps);
    if (o->ring < 0 || o->ring > 64) return mg_fail(MG_ERR_ARG, "ring %d: expected 0..64", o->ring);
    if (!(o->guidance >= 0 && o->guidance <= 100))
        return mg_fail(MG_ERR_ARG, "guidance %g: expected 0..100", o->guidance);
    mg_stream *s = calloc(1, sizeof *s);
    if (!s) return mg_fail(MG_ERR_NOMEM, "out of memory creating a stream");
    s->m = m;
    s->W = o->width, s->H = o->height;
    s->lh = s->H / 8, s->lw = s->W / 8;
    s->N = (s->lh / m->cfg.patch) * (s->lw / m->cfg.patch);
    s->steps = o->steps;
    s->guidance = o->guidance;
    s->ring.K = o->ring ? o->ring : m->cfg.ring;
    mg_rng_seed(&s->rng, o->seed);
    const char *prompt = o->prompt ? o->prompt : (m->n_prompts > 1 ? m->prompts[1] : m->prompts[0]);
    mg_status st = mg_stream_set_prompt(s, prompt);
    if (st != MG_OK) {
        free(s);
        return st;
    }
    if (o->device == MG_DEVICE_CUDA) return stream_new_cuda(s, out);
    size_t n = stream_layout(s, NULL);
    s->arena_bytes = n * sizeof(float);
    s->arena = aligned_alloc(64, s->arena_bytes);
    if (!s->arena) {
        free(s);
        return mg_fail(MG_ERR_NOMEM, "cannot allocate %.1f MiB for a %dx%d stream", n * 4.0 / (1 << 20), o->width,
                       o->height);
    }
    stream_layout(s, s->arena);
    size_t fb = (size_t)s->W * s->H * 3;
    if (!(s->q_out[0] = malloc(2 * fb))) {
        free(s->arena);
        free(s);
        return mg_fail(MG_ERR_NOMEM, "cannot allocate %.1f MiB for a %dx%d stream", 2 * fb / 1048576.0, o->width,
                       o->height);
    }
    s->q_out[1] = s->q_out[0] + fb;
    *out = s;
    return MG_OK;
}

void mg_stream_free(mg_stream *s) {
    if (!s) return;
#ifdef MG_HAVE_CUDA
    cuda_stream_free(s->cuda);
#endif
    free(s->q_out[0]);
    free(s->arena);
    free(s);
}

mg_status mg_stream_set_prompt(mg_stream *s, const char *name) {
    int i = model_prompt_index(s->m, name);
    if (i < 0) {
        char known[512] = "";
        for (int j = 0; j < s->m->n_prompts; j++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", j ? ", " : "", s->m->prompts[j]);
        return mg_fail(MG_ERR_ARG, "unknown prompt '%s' (this model knows: %s)", name, known);
    }
    s->prompt = i;
    s->dream = strcmp(name, "dream") == 0;
    return MG_OK;
}

const char *mg_stream_prompt(const mg_stream *s) { return s->m->prompts[s->prompt]; }
void *stream_cuda(const mg_stream *s) { return s->cuda; }

#ifdef MG_HAVE_CUDA
void mg_stream_reset(mg_stream *s) {
    kv_ring_reset(&s->ring);
    if (s->cuda) cuda_stream_reset(s->cuda);
}
size_t mg_stream_bytes(const mg_stream *s) {
    return s->arena_bytes + sizeof *s + (s->cuda ? cuda_stream_device_bytes(s->cuda) : 2 * (size_t)s->W * s->H * 3);
}
int64_t mg_stream_frame_index(const mg_stream *s) { return s->cuda ? cuda_stream_frame_index(s->cuda) : s->ring.frame; }
void mg_stream_last_timing(const mg_stream *s, mg_step_timing *t) {
    if (s->cuda) cuda_stream_last_timing(s->cuda, t);
    else *t = s->timing;
}
#else
void mg_stream_reset(mg_stream *s) { kv_ring_reset(&s->ring); }
size_t mg_stream_bytes(const mg_stream *s) { return s->arena_bytes + sizeof *s + 2 * (size_t)s->W * s->H * 3; }
int64_t mg_stream_frame_index(const mg_stream *s) { return s->ring.frame; }
void mg_stream_last_timing(const mg_stream *s, mg_step_timing *t) { *t = s->timing; }
#endif

/* One velocity evaluation at sigma, with guidance when asked for. */
static void velocity(mg_stream *s, float sigma) {
    dit_call a = {.T = 1, .lh = s->lh, .lw = s->lw, .z = s->z, .cond = s->cond, .sigma = &sigma,
                  .prompt = s->prompt, .frame0 = s->ring.frame, .ring = &s->ring, .v = s->v};
    dit_forward(s->m, &s->dw, &a);
    if (s->guidance != 1.0f) {
        size_t n = (size_t)s->lh * s->lw * s->m->cfg.z_ch;
        a.prompt = 0, a.v = s->vu;
        dit_forward(s->m, &s->dw, &a);
        for (size_t i = 0; i < n; i++) s->v[i] = s->vu[i] + s->guidance * (s->v[i] - s->vu[i]);
    }
}

mg_status stream_step_f32(mg_stream *s, const uint8_t *in_rgb, float *out_img, const float *noise,
                          const float *ctx_noise) {
    if (s->cuda) return mg_fail(MG_ERR_UNSUPPORTED, "stream_step_f32: CPU streams only (see cuda_stream_step)");
    const mg_config *c = &s->m->cfg;
    size_t lat = (size_t)s->lh * s->lw * c->z_ch;
    mg_step_timing *tm = &s->timing;
    memset(tm, 0, sizeof *tm);
    double t0 = mg_now_ms(), t = t0;

    /* 1. encode the input frame (dream drops it) */
    if (s->dream) {
        memset(s->cond, 0, lat * sizeof(float));
    } else {
        rgb_u8_to_float(s->img, in_rgb, (size_t)s->H * s->W * 3);
        tae_encode(s->m, s->cond, s->img, s->tae_work, s->H, s->W);
    }
    tm->encode_ms = mg_now_ms() - t, t = mg_now_ms();

    /* 2. denoise from pure noise with Euler steps, each attending to the ring */
    if (noise) memcpy(s->z, noise, lat * sizeof(float));
    else mg_rng_normal_fill(&s->rng, s->z, lat);
    for (int i = 0; i < s->steps; i++) {
        float sig = sampler_sigma(i, s->steps, c->shift), next = sampler_sigma(i + 1, s->steps, c->shift);
        velocity(s, sig);
        for (size_t j = 0; j < lat; j++) s->z[j] += (next - sig) * s->v[j];
        if (i < 16) tm->step_ms[i] = mg_now_ms() - t;
        t = mg_now_ms();
    }

    /* 3. refresh the ring: the clean latent, lightly re-noised to sigma_ctx, seen once */
    if (ctx_noise) memcpy(s->ctx_noise, ctx_noise, lat * sizeof(float));
    else mg_rng_normal_fill(&s->rng, s->ctx_noise, lat);
    float sc = c->sigma_ctx;
    for (size_t j = 0; j < lat; j++) s->zc[j] = (1.0f - sc) * s->z[j] + sc * s->ctx_noise[j];
    if (s->ring.K > 0) {
        dit_call a = {.T = 1, .lh = s->lh, .lw = s->lw, .z = s->zc, .cond = s->cond, .sigma = &sc,
                      .prompt = s->prompt, .frame0 = s->ring.frame, .ring = &s->ring, .refresh = 1};
        dit_forward(s->m, &s->dw, &a);
    }
    kv_ring_push(&s->ring);
    tm->refresh_ms = mg_now_ms() - t, t = mg_now_ms();

    /* 4. decode */
    tae_decode(s->m, out_img ? out_img : s->img, s->z, s->tae_work, s->H, s->W);
    tm->decode_ms = mg_now_ms() - t;
    tm->total_ms = mg_now_ms() - t0;
    return MG_OK;
}

/* Frames in flight: the noise is drawn at submit, from the stream's RNG in the CPU order, and
 * the prompt, dream flag and ring (reset) are the ones in force at submit, so a frame's output
 * does not depend on when it is collected. */
mg_status mg_stream_submit(mg_stream *s, const uint8_t *in_rgb) {
    if (!in_rgb && !s->dream) return mg_fail(MG_ERR_ARG, "mg_stream_submit: no input frame");
    if (s->q_n >= 2)
        return mg_fail(MG_ERR_ARG, "mg_stream_submit: 2 frames are in flight already (the most there can be); "
                                   "collect one first");
#ifdef MG_HAVE_CUDA
    if (s->cuda) {
        size_t lat = (size_t)s->lh * s->lw * s->m->cfg.z_ch;
        mg_rng_normal_fill(&s->rng, s->noise, lat);
        mg_rng_normal_fill(&s->rng, s->ctx_noise, lat);
        MG_TRY(cuda_stream_submit(s->cuda, in_rgb, s->noise, s->ctx_noise, s->prompt, s->dream));
        s->q_n++;
        return MG_OK;
    }
#endif
    int b = (s->q_head + s->q_n) % 2;
    MG_TRY(stream_step_f32(s, in_rgb, NULL, NULL, NULL));
    rgb_float_to_u8(s->q_out[b], s->img, (size_t)s->H * s->W * 3);
    s->q_tm[b] = s->timing;
    s->q_n++;
    return MG_OK;
}

mg_status mg_stream_collect(mg_stream *s, uint8_t *out_rgb) {
    if (s->q_n == 0) return mg_fail(MG_ERR_ARG, "mg_stream_collect: no frame in flight; submit one first");
    s->q_n--;
#ifdef MG_HAVE_CUDA
    if (s->cuda) return cuda_stream_collect(s->cuda, out_rgb);
#endif
    int b = s->q_head;
    s->q_head = (s->q_head + 1) % 2;
    memcpy(out_rgb, s->q_out[b], (size_t)s->H * s->W * 3);
    s->timing = s->q_tm[b];
    return MG_OK;
}

mg_status mg_stream_step(mg_stream *s, const uint8_t *in_rgb, uint8_t *out_rgb) {
    if (!in_rgb && !s->dream) return mg_fail(MG_ERR_ARG, "mg_stream_step: no input frame");
    if (s->q_n)
        return mg_fail(MG_ERR_ARG, "mg_stream_step: %d frame%s in flight (mg_stream_submit); collect first", s->q_n,
                       s->q_n == 1 ? " is" : "s are");
    MG_TRY(mg_stream_submit(s, in_rgb));
    return mg_stream_collect(s, out_rgb);
}

const float *stream_latent(const mg_stream *s) { return s->z; }
