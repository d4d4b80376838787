/* The C trainer against the PyTorch oracle (tests/data/grads_tiny.safetensors, made by
 * ref/export_grads.py in float64), as llm.c's test_gpt2 holds its trainer to PyTorch. For the
 * DiT (rectified flow, diffusion forcing, one clip) and for the autoencoder (L1 + L2, one
 * image): the loss, gradients (a few tensors in full, the norm of every trained tensor's
 * gradient) and the losses of 10 AdamW steps with clipping. Plus what the oracle cannot see:
 * the training forwards equal the inference forwards, backward passes are deterministic and
 * accumulate, bad calls are refused with a message, and the optimizer's pieces do what their
 * comments say. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "model/forward.h"
#include "model/model.h"
#include "train/train.h"
#include "testutil.h"
#include "train_oracle.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#define LOSS_TOL 1e-5 /* relative */
#define GRAD_TOL 1e-4 /* testutil's relative metric, and relative for norms */

static st_file gold;
static char model_path[512];
static train_params tp;
static float *init_param; /* tp.param as loaded, to start each test from */
static dit_clip clip;
static dit_train dt;
static tae_train tt;
static const float *tae_img;
static int tae_H, tae_W;

static const float *g(const char *name, size_t numel) { return oracle_tensor(&gold, name, numel)->data; }

static float meta_float(const char *key) {
    const char *v = st_meta_get(&gold, key);
    if (!v) fail_msg("oracle metadata %s missing", key);
    return strtof(v, NULL);
}

static int setup(void **state) {
    if (oracle_open(&gold, "grads_tiny.safetensors")) return -1;
    const char *seed = st_meta_get(&gold, "weights_seed");
    if (!seed) return -1;
    if (oracle_tiny_params(&tp, model_path, sizeof model_path, "train_model.safetensors", strtoull(seed, NULL, 10)) !=
        MG_OK) {
        fprintf(stderr, "%s\n", mg_last_error());
        return -1;
    }
    init_param = malloc(tp.count * sizeof(float));
    memcpy(init_param, tp.param, tp.count * sizeof(float));
    const st_tensor *x0 = st_find(&gold, "x0"), *meta = st_find(&gold, "meta"), *img = st_find(&gold, "tae/img");
    if (!x0 || x0->rank != 4 || !meta || !img || img->rank != 3) return -1;
    const int32_t *mi = meta->data;
    clip = (dit_clip){.T = (int)x0->shape[0], .lh = (int)x0->shape[1], .lw = (int)x0->shape[2], .x0 = x0->data,
                      .prompt = mi[0], .window = mi[1]};
    clip.eps = st_find(&gold, "eps")->data;
    clip.cond = st_find(&gold, "cond")->data;
    clip.sigma = st_find(&gold, "sigma")->data;
    tae_img = img->data, tae_H = (int)img->shape[0], tae_W = (int)img->shape[1];
    if (dit_train_init(&dt, &tp, clip.T, clip.lh, clip.lw) != MG_OK || tae_train_init(&tt, &tp, tae_H, tae_W) != MG_OK) {
        fprintf(stderr, "%s\n", mg_last_error());
        return -1;
    }
    printf("  oracle: DiT on %d frames of %dx%d latents (prompt %d, window %d); TAE on a %dx%d image\n", clip.T,
           clip.lh, clip.lw, clip.prompt, clip.window, tae_W, tae_H);
    printf("  memory: training state %.1f MiB (%d tensors), DiT activations %.2f MiB, TAE activations %.2f MiB\n",
           tp.mem_bytes / 1048576.0, tp.n_tensors, dt.mem_bytes / 1048576.0, tt.mem_bytes / 1048576.0);
    return 0;
}

static int teardown(void **state) {
    dit_train_free(&dt);
    tae_train_free(&tt);
    train_params_free(&tp);
    free(init_param);
    st_close(&gold);
    return 0;
}

/* Back to the weights as loaded, zero gradients and moments. */
static void reset_params(void) {
    memcpy(tp.param, init_param, tp.count * sizeof(float));
    memset(tp.grad, 0, tp.count * sizeof(float));
    memset(tp.m, 0, tp.count * sizeof(float));
    memset(tp.v, 0, tp.count * sizeof(float));
}

/* One objective: the DiT on the clip, or the autoencoder on the image. `step` runs a forward
 * and a backward from zero gradients and returns the loss. */
typedef struct objective {
    const char *tag, *prefix; /* "DiT", "" or "TAE", "tae/": names in the oracle file */
    int first, last;          /* the tensors it trains */
    float (*step)(void);
} objective;

static float dit_step(void) {
    float loss;
    train_zero_grad(&tp, tp.dit_first, tp.n_tensors);
    assert_int_equal(dit_train_forward(&dt, &clip, &loss), MG_OK);
    assert_int_equal(dit_train_backward(&dt, 1.0f), MG_OK);
    return loss;
}

static float tae_step(void) {
    float loss;
    train_zero_grad(&tp, 0, tp.dit_first);
    assert_int_equal(tae_train_forward(&tt, tae_img, tae_H, tae_W, &loss), MG_OK);
    assert_int_equal(tae_train_backward(&tt, 1.0f), MG_OK);
    return loss;
}

/* the autoencoder with the Laplacian term (--hf-loss) at the oracle's weight */
static float taehf_step(void) {
    tt.hf = meta_float("taehf/hf");
    float loss = tae_step();
    tt.hf = 0.0f;
    return loss;
}

static objective dit_obj(void) { return (objective){"DiT", "", tp.dit_first, tp.n_tensors, dit_step}; }
static objective tae_obj(void) { return (objective){"TAE", "tae/", 0, tp.dit_first, tae_step}; }
static objective taehf_obj(void) { return (objective){"TAE+HF", "taehf/", 0, tp.dit_first, taehf_step}; }

static const float *gp(const objective *o, const char *name, size_t numel) {
    char n[96];
    snprintf(n, sizeof n, "%s%s", o->prefix, name);
    return g(n, numel);
}

/* The loss, the gradients stored in full, and the norm of every trained tensor's gradient. */
static void check_gradients(const objective *o) {
    reset_params();
    float loss = o->step(), ref = gp(o, "loss", 1)[0];
    double lerr = fabs((double)loss - ref) / fabs(ref);
    printf("  %-28s got %.9g ref %.9g rel err %.3e %s\n", "loss", loss, ref, lerr, lerr <= LOSS_TOL ? "ok" : "FAIL");
    assert_true(lerr <= LOSS_TOL);

    char prefix[32];
    snprintf(prefix, sizeof prefix, "%sgrad/", o->prefix);
    int bad = 0, nfull = 0;
    double worst = 0;
    for (int i = 0; i < gold.n_tensors; i++) {
        const st_tensor *t = &gold.tensors[i];
        if (strncmp(t->name, prefix, strlen(prefix)) != 0) continue;
        const char *name = t->name + strlen(prefix);
        int k = train_params_find(&tp, name);
        assert_true(k >= o->first && k < o->last);
        assert_int_equal(train_params_numel(&tp, k), t->numel);
        double e = tu_check_close(name, tp.grad + tp.offset[k], t->data, t->numel, GRAD_TOL);
        bad += !(e <= GRAD_TOL);
        worst = e > worst ? e : worst;
        nfull++;
    }
    assert_true(nfull > 0);
    /* the norm of every trained tensor's gradient, in table order */
    char key[64];
    snprintf(key, sizeof key, "%sgrad_norms_first", o->prefix);
    const char *first = st_meta_get(&gold, key);
    assert_non_null(first);
    assert_string_equal(first, tp.table[o->first].name);
    int count = o->last - o->first;
    const float *norms = gp(o, "grad_norms", (size_t)count);
    double nworst = 0;
    int nwi = 0;
    for (int i = 0; i < count; i++) {
        int k = o->first + i;
        double s = 0;
        for (size_t j = 0; j < train_params_numel(&tp, k); j++) s += (double)tp.grad[tp.offset[k] + j] * tp.grad[tp.offset[k] + j];
        double e = fabs(sqrt(s) - norms[i]) / fmax(norms[i], 1e-30);
        if (e > nworst) nworst = e, nwi = i;
    }
    printf("  %-28s n=%-8d max rel err %.3e at %s %s\n", "grad norms (every tensor)", count, nworst,
           tp.table[o->first + nwi].name, nworst <= GRAD_TOL ? "ok" : "FAIL");
    /* the other network is not part of this objective: its gradients stay exactly zero */
    int zeros = 1;
    for (int k = 0; k < tp.n_tensors; k++)
        if (k < o->first || k >= o->last)
            for (size_t j = tp.offset[k]; j < tp.offset[k + 1]; j++) zeros &= tp.grad[j] == 0.0f;
    assert_true(zeros);
    printf("  verdict: %s loss %.1e, %d full gradients (worst %.1e), %d norms (worst %.1e) -> %s\n", o->tag, lerr,
           nfull, worst, count, nworst, (!bad && nworst <= GRAD_TOL) ? "match the oracle" : "DO NOT match the oracle");
    assert_int_equal(bad, 0);
    assert_true(nworst <= GRAD_TOL);
}

/* The losses (and clipped-at norms) of 10 AdamW steps with the oracle's settings. */
static void check_adamw(const objective *o) {
    reset_params();
    int steps = (int)meta_float("adamw_steps");
    const float *ref = gp(o, "adamw_losses", (size_t)steps), *ref_norm = gp(o, "adamw_grad_norms", (size_t)steps);
    adamw_opts ao = {.beta1 = meta_float("adamw_beta1"), .beta2 = meta_float("adamw_beta2"),
                     .eps = meta_float("adamw_eps"), .weight_decay = meta_float("adamw_weight_decay")};
    float lr = meta_float("adamw_lr"), max_norm = meta_float("adamw_clip");
    double worst = 0, nworst = 0;
    for (int s = 0; s < steps; s++) {
        float loss = o->step();
        double norm = grad_clip(&tp, o->first, o->last, max_norm);
        adamw_step(&tp, o->first, o->last, s + 1, lr, &ao);
        double e = fabs((double)loss - ref[s]) / ref[s], en = fabs(norm - ref_norm[s]) / ref_norm[s];
        printf("  step %2d | loss %.6f (oracle %.6f, rel err %.1e) | grad norm %.4f (%.1e)%s\n", s, loss, ref[s], e,
               norm, en, norm > max_norm ? " clipped" : "");
        worst = e > worst ? e : worst;
        nworst = en > nworst ? en : nworst;
    }
    printf("  verdict: %s, %d AdamW steps, worst loss rel err %.2e, worst grad norm rel err %.2e -> %s\n", o->tag,
           steps, worst, nworst, worst <= GRAD_TOL && nworst <= GRAD_TOL ? "match the oracle" : "DO NOT match the oracle");
    assert_true(worst <= GRAD_TOL);
    assert_true(nworst <= GRAD_TOL);
}

static void test_dit_gradients(void **state) { objective o = dit_obj(); check_gradients(&o); }
static void test_dit_adamw_steps(void **state) { objective o = dit_obj(); check_adamw(&o); }
static void test_tae_gradients(void **state) { objective o = tae_obj(); check_gradients(&o); }
static void test_tae_adamw_steps(void **state) { objective o = tae_obj(); check_adamw(&o); }
static void test_taehf_gradients(void **state) { objective o = taehf_obj(); check_gradients(&o); }
static void test_taehf_adamw_steps(void **state) { objective o = taehf_obj(); check_adamw(&o); }

/* The Laplacian term's pieces on their own: d is the stencil applied to rec - img, zero on the
 * border, and tae_lap_grad is the exact gradient of sum d^2 (a quadratic: central differences
 * are exact up to rounding). */
static void test_lap_pieces(void **state) {
    enum { H = 5, W = 6, N = H * W * 3 };
    float rec[N], img[N], d[N], g[N];
    uint64_t r = 7;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        rec[i] = (float)((r >> 40) & 1023) / 1023.0f;
        img[i] = (float)((r >> 20) & 1023) / 1023.0f;
    }
    double q = tae_lap_diff(d, rec, img, H, W);
    assert_true(tae_lap_count(H, W) == 3.0 * 4 * 3);
    /* pixel (2, 3), channel 1, by hand; a border pixel is 0 */
    int i = (2 * W + 3) * 3 + 1, rs = W * 3;
    float want = (4 * rec[i] - rec[i - 3] - rec[i + 3] - rec[i - rs] - rec[i + rs]) -
                 (4 * img[i] - img[i - 3] - img[i + 3] - img[i - rs] - img[i + rs]);
    assert_float_equal(d[i], want, 1e-6);
    assert_true(d[(0 * W + 2) * 3] == 0.0f && d[(2 * W + W - 1) * 3 + 2] == 0.0f);
    memset(g, 0, sizeof g);
    tae_lap_grad(g, d, H, W, 2.0f);
    double worst = 0.0;
    for (int k = 0; k < N; k++) {
        float keep = rec[k], h = 1e-2f;
        rec[k] = keep + h;
        double qp = tae_lap_diff(d, rec, img, H, W);
        rec[k] = keep - h;
        double qm = tae_lap_diff(d, rec, img, H, W);
        rec[k] = keep;
        double fd = (qp - qm) / (2.0 * h), e = fabs(fd - g[k]);
        worst = e > worst ? e : worst;
    }
    printf("  Laplacian term: sum d^2 %.6f, worst |finite difference - gradient| %.2e\n", q, worst);
    assert_true(worst < 1e-3);
}

/* The training forward is the inference forward (dit_forward, parallel mode) plus bookkeeping:
 * on the same noisy input it predicts the same velocity. */
static void test_forward_matches_inference(void **state) {
    reset_params();
    float loss;
    assert_int_equal(dit_train_forward(&dt, &clip, &loss), MG_OK);
    assert_int_equal(tae_train_forward(&tt, tae_img, tae_H, tae_W, &loss), MG_OK);
    mg_model *m;
    assert_int_equal(mg_model_load(model_path, &m), MG_OK);
    int N = (clip.lh / 2) * (clip.lw / 2);
    size_t nv = (size_t)clip.T * clip.lh * clip.lw * 4;
    float *wmem = aligned_alloc(64, dit_work_floats(&m->cfg, clip.T, N, clip.T * N) * sizeof(float));
    float *v = malloc(nv * sizeof(float)), *zeros = calloc(nv, sizeof(float));
    dit_work w;
    dit_work_init(&w, wmem, &m->cfg, clip.T, N, clip.T * N);
    dit_call a = {.T = clip.T, .lh = clip.lh, .lw = clip.lw, .z = dt.a.z, .cond = clip.cond, .sigma = clip.sigma,
                  .prompt = clip.prompt, .frame0 = 0, .window = clip.window, .v = v};
    /* the oracle's window, no history, a window of 1, and dream (no input frames) */
    static const struct { int window, dream; } cases[] = {{-1, 0}, {0, 0}, {1, 0}, {-1, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dit_clip cl = clip;
        if (cases[c].window >= 0) cl.window = cases[c].window;
        if (cases[c].dream) cl.cond = NULL;
        assert_int_equal(dit_train_forward(&dt, &cl, &loss), MG_OK);
        a.window = cl.window, a.cond = cl.cond ? cl.cond : zeros; /* dit_forward wants zeros */
        tu_poison(v, nv);
        dit_forward(m, &w, &a);
        char label[80];
        snprintf(label, sizeof label, "DiT: train vs dit_forward K=%d%s", cl.window, cases[c].dream ? " dream" : "");
        assert_close(label, dt.a.v, v, nv, 1e-6);
    }
    /* the autoencoder: tae_encode then tae_decode */
    size_t nlat = (size_t)(tae_H / 8) * (tae_W / 8) * 4, nimg = (size_t)tae_H * tae_W * 3;
    float *twork = aligned_alloc(64, tae_work_floats(&m->cfg, tae_H, tae_W) * sizeof(float));
    float *lat = malloc(nlat * sizeof(float)), *rec = malloc(nimg * sizeof(float));
    tu_poison(lat, nlat), tu_poison(rec, nimg);
    tae_encode(m, lat, tae_img, twork, tae_H, tae_W);
    tae_decode(m, rec, lat, twork, tae_H, tae_W);
    assert_close("TAE: train latent vs tae_encode", tt.a.lat, lat, nlat, 1e-6);
    assert_close("TAE: train rec vs tae_decode", tt.a.rec, rec, nimg, 1e-6);
    free(wmem), free(v), free(zeros), free(twork), free(lat), free(rec);
    mg_model_free(m);
}

/* Same inputs, same bits (resuming must reproduce a run); scale 1/2 twice = scale 1 once. */
/* Same inputs, same bits (resuming must reproduce a run); scale 1/2 twice = scale 1 once. */
static void test_backward_deterministic_and_accumulates(void **state) {
    reset_params();
    objective obj[2] = {dit_obj(), tae_obj()};
    for (int k = 0; k < 2; k++) {
        const objective *o = &obj[k];
        size_t n = tp.offset[o->last] - tp.offset[o->first];
        float *g1 = malloc(n * sizeof(float)), *gd = tp.grad + tp.offset[o->first];
        o->step();
        memcpy(g1, gd, n * sizeof(float));
        o->step();
        printf("  %s: two backward passes: %s\n", o->tag, memcmp(g1, gd, n * sizeof(float)) ? "DIFFER" : "bit-identical");
        assert_memory_equal(g1, gd, n * sizeof(float));
        train_zero_grad(&tp, o->first, o->last);
        float loss;
        if (k == 0) {
            assert_int_equal(dit_train_forward(&dt, &clip, &loss), MG_OK);
            assert_int_equal(dit_train_backward(&dt, 0.5f), MG_OK);
            assert_int_equal(dit_train_backward(&dt, 0.5f), MG_OK);
        } else {
            assert_int_equal(tae_train_forward(&tt, tae_img, tae_H, tae_W, &loss), MG_OK);
            assert_int_equal(tae_train_backward(&tt, 0.5f), MG_OK);
            assert_int_equal(tae_train_backward(&tt, 0.5f), MG_OK);
        }
        char name[64];
        snprintf(name, sizeof name, "%s: grads, 2 x scale 1/2 vs 1", o->tag);
        assert_close(name, gd, g1, n, 1e-5); /* rounding of a sum started from half of it */
        free(g1);
    }
}

/* CPU time of the process in ms: what a backward costs, whatever else the machine runs. */
static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* --freeze-encoder (tae_train.freeze_encoder): the backward ends at dec.in. The decoder's
 * gradients are bit for bit the full backward's, the encoder's are left as they were (not
 * computed), an AdamW step of the decoder gives the same weights everywhere (the encoder's
 * as loaded), and the backward costs less: the encoder's half of it is skipped. */
static void test_tae_frozen_encoder(void **state) {
    int dec = train_params_find(&tp, "dec.in.weight");
    size_t d0 = tp.offset[dec], d1 = tp.offset[tp.dit_first];
    float *gfull = malloc((d1 - d0) * sizeof(float)), *pfull = malloc(tp.count * sizeof(float));
    adamw_opts ao = adamw_defaults();
    double best[2] = {INFINITY, INFINITY};
    for (int frozen = 0; frozen < 2; frozen++) {
        reset_params();
        tt.freeze_encoder = frozen;
        for (int rep = 0; rep < 3; rep++) { /* the best of 3 */
            float loss;
            train_zero_grad(&tp, 0, tp.dit_first);
            for (size_t i = 0; i < d0; i++) tp.grad[i] = 0.25f; /* what the frozen backward must not touch */
            assert_int_equal(tae_train_forward(&tt, tae_img, tae_H, tae_W, &loss), MG_OK);
            double t0 = cpu_ms();
            assert_int_equal(tae_train_backward(&tt, 1.0f), MG_OK);
            double t = cpu_ms() - t0;
            best[frozen] = t < best[frozen] ? t : best[frozen];
        }
        tt.freeze_encoder = 0;
        if (!frozen) {
            memcpy(gfull, tp.grad + d0, (d1 - d0) * sizeof(float));
        } else {
            printf("  frozen encoder: decoder gradients vs the full backward's: %s\n",
                   memcmp(gfull, tp.grad + d0, (d1 - d0) * sizeof(float)) ? "DIFFER" : "bit-identical");
            assert_memory_equal(tp.grad + d0, gfull, (d1 - d0) * sizeof(float));
            int kept = 1;
            for (size_t i = 0; i < d0; i++) kept &= tp.grad[i] == 0.25f;
            assert_true(kept);
        }
        grad_clip(&tp, dec, tp.dit_first, 1.0);
        adamw_step(&tp, dec, tp.dit_first, 1, 1e-3f, &ao);
        if (!frozen) memcpy(pfull, tp.param, tp.count * sizeof(float));
    }
    assert_memory_equal(tp.param, pfull, tp.count * sizeof(float));
    assert_memory_equal(tp.param, init_param, d0 * sizeof(float)); /* the encoder as loaded */
    printf("  TAE backward (CPU time, best of 3): full %.2f ms, encoder frozen %.2f ms (%.2fx)\n", best[0], best[1],
           best[1] / best[0]);
    assert_true(best[1] < 0.8 * best[0]);
    free(gfull), free(pfull);
}

static void test_refuses_bad_calls(void **state) {
    dit_train d2;
    assert_int_equal(dit_train_init(&d2, &tp, 2, 3, 4), MG_ERR_SHAPE); /* odd latent height */
    printf("  init 3x4 -> %s\n", mg_last_error());
    assert_int_equal(dit_train_init(&d2, &tp, 2, clip.lh, clip.lw), MG_OK);
    assert_int_equal(dit_train_backward(&d2, 1.0f), MG_ERR_ARG); /* nothing to go back through */
    float loss;
    assert_int_equal(dit_train_forward(&d2, &clip, &loss), MG_ERR_SHAPE); /* 3 frames > 2 */
    printf("  forward -> %s\n", mg_last_error());
    dit_clip bad = clip;
    bad.T = 2, bad.prompt = 99;
    assert_int_equal(dit_train_forward(&d2, &bad, &loss), MG_ERR_ARG);
    dit_train_free(&d2);
    tae_train t2;
    assert_int_equal(tae_train_init(&t2, &tp, 20, 16), MG_ERR_SHAPE); /* not a multiple of 8 */
    assert_int_equal(tae_train_init(&t2, &tp, 8, 8), MG_OK);
    assert_int_equal(tae_train_backward(&t2, 1.0f), MG_ERR_ARG);
    assert_int_equal(tae_train_forward(&t2, tae_img, tae_H, tae_W, &loss), MG_ERR_SHAPE); /* bigger */
    printf("  forward -> %s\n", mg_last_error());
    tae_train_free(&t2);
    train_params p2;
    assert_int_equal(train_params_load(&p2, "/nonexistent/model.safetensors"), MG_ERR_IO);
}

static void test_optimizer_pieces(void **state) {
    /* warm-up then cosine: 1/4, 4/4 of lr_max in warm-up, lr_max at its end, halfway down at
     * the middle of the decay, lr_min at and after the end */
    assert_float_equal(lr_schedule(0, 4, 104, 1e-3f, 1e-4f), 2.5e-4f, 1e-9);
    assert_float_equal(lr_schedule(3, 4, 104, 1e-3f, 1e-4f), 1e-3f, 1e-9);
    assert_float_equal(lr_schedule(4, 4, 104, 1e-3f, 1e-4f), 1e-3f, 1e-9);
    assert_float_equal(lr_schedule(54, 4, 104, 1e-3f, 1e-4f), 5.5e-4f, 1e-8);
    assert_float_equal(lr_schedule(104, 4, 104, 1e-3f, 1e-4f), 1e-4f, 1e-9);
    assert_float_equal(lr_schedule(500, 4, 104, 1e-3f, 1e-4f), 1e-4f, 1e-9);
    /* clipping and AdamW on a known gradient: the first step moves each element by
     * lr * g / (|g| + eps) ~ lr * sign(g) after decay (rank >= 2 only) */
    reset_params();
    int w = train_params_find(&tp, "dit.t2.weight"), b = train_params_find(&tp, "dit.t2.bias");
    train_zero_grad(&tp, 0, tp.n_tensors);
    tp.grad[tp.offset[w]] = 3.0f, tp.grad[tp.offset[w] + 1] = -4.0f, tp.grad[tp.offset[b]] = 12.0f;
    double norm = grad_clip(&tp, 0, tp.n_tensors, 6.5);
    assert_float_equal(norm, 13.0, 1e-9);
    assert_float_equal(tp.grad[tp.offset[w] + 1], -4.0 * 6.5 / (13.0 + 1e-6), 1e-6);
    assert_float_equal(grad_global_norm(&tp, 0, tp.n_tensors), 6.5, 1e-5);
    float p0 = tp.param[tp.offset[w] + 1], pb = tp.param[tp.offset[b]], p2 = tp.param[tp.offset[w] + 2];
    adamw_opts o = adamw_defaults();
    adamw_step(&tp, 0, tp.n_tensors, 1, 1e-2f, &o);
    assert_float_equal(tp.param[tp.offset[w] + 1], p0 * (1 - 1e-2f * 0.1f) + 1e-2f, 1e-7);
    assert_float_equal(tp.param[tp.offset[b]], pb - 1e-2f, 1e-7);         /* no decay on biases */
    assert_float_equal(tp.param[tp.offset[w] + 2], p2 * (1 - 1e-3f), 1e-9); /* g = 0: decay only */
}

int main(void) {
#ifdef MG_HAVE_OPENMP
    /* One thread. The clip (12 tokens) and the image (24x16) are far too small for threads to
     * help, and each fork/join on a loaded 2-core machine can wait out another process's time
     * slice: measured 1.3 s on one thread, 1-20 s on two depending on the load. The numbers do
     * not depend on it; tests/test_ops_backward.c checks the ops' threaded paths. */
    omp_set_num_threads(1);
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dit_gradients),
        cmocka_unit_test(test_dit_adamw_steps),
        cmocka_unit_test(test_tae_gradients),
        cmocka_unit_test(test_tae_adamw_steps),
        cmocka_unit_test(test_taehf_gradients),
        cmocka_unit_test(test_taehf_adamw_steps),
        cmocka_unit_test(test_lap_pieces),
        cmocka_unit_test(test_forward_matches_inference),
        cmocka_unit_test(test_backward_deterministic_and_accumulates),
        cmocka_unit_test(test_tae_frozen_encoder),
        cmocka_unit_test(test_refuses_bad_calls),
        cmocka_unit_test(test_optimizer_pieces),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
