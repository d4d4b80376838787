/* The adversarial term (--adv, src/train/adv.h) on the GPU (src/cuda/tae_train.cu: D's passes
 * in the autoencoder's step) against the CPU's adv_image, on the tiny model and a D drawn from
 * a seed, at odd multiples of 8 (40x56: 5x7 patches; 24x40) with B = 2 and 3:
 *  - D's part alone (cuda_tae_train_adv_pass): every image's L_D, the generator term and D's
 *    accuracy, D's eight gradients and the generator's gradient of the reconstruction (drec),
 *    relative L2 with bf16 tolerances; with D's last bias at +3 and -3 too, so each hinge
 *    is cut off on one side (the masks and the exact accuracy); w = 0 leaves drec zero and
 *    D's gradients bit for bit as with w != 0 (the generator pass trains nothing);
 *  - one whole training step with --adv (cuda_tae_train_step, then AdamW on the model and on D,
 *    as the trainer does them) against the CPU trainer's step: the losses and D's figures, every
 *    autoencoder gradient (the generator term must move them well beyond the tolerance), D's
 *    gradients, and the updates AdamW made to four tensors (two of the decoder's, two of D's),
 *    in the CUDA graph and in plain launches (MG_CUDA_TAEGRAPH=0 is read at _new: a second
 *    state), and a second step after --adv-start switches the term on (a recapture).
 * Needs a GPU; without one it says so and passes. */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_train.h"
#include "model/model.h"
#include "train/adv.h"
#include "train/train.h"
#include "testutil.h"
#include "gpu_util.h"

#define GRAD_TOL 3e-2   /* relative L2 per tensor: bf16 operands (test_cuda_tae_train's) */
/* D's gradients: relative L2 per tensor. D near chance takes its gradient as the difference of
 * its passes over the image and the reconstruction, which cancel to a fraction of either, so the
 * bf16 rounding of D's activations and output gradients shows up magnified: measured on an H100
 * 7e-3 where one pass is cut off (the +-3 bias cases) and 3.6e-2 to 9.6e-2 where both count
 * (call 2 of session 6, dev/cuda/logs/h100-s6-call2.log). A wrong kernel is off by order 1. */
#define D_TOL 0.15
/* drec, the data gradient back through D's four convs, each output gradient rounded to bf16:
 * 3.1e-2 to 4.8e-2 measured (same call) */
#define DREC_TOL 8e-2
#define LD_TOL 3e-3     /* L_D (about 2), relative */
#define UPD_TOL 0.35    /* AdamW's first update is ~ lr sign(g): a few sign flips of tiny g */
#define ADV_W 10.0f /* the step's generator weight: moves the tiny model's gradients by ~0.3 (CPU, 40x56) */
#define TB 3
#define CAP 64

static char model_path[512];
static train_params tp;
static cuda_params cp, dcp;
static adv_disc ad;
static cuda_tae_train *tt;
static float *orig_param; /* tp.param before the conv kernels were rounded to bf16 */

static int setup(void **state) {
    mg_config cfg;
    mg_config_named("tiny", &cfg);
    snprintf(model_path, sizeof model_path, "%s/adv_tiny.safetensors", tu_tmpdir());
    if (mg_model_init_file(model_path, &cfg, 11, 1) != MG_OK || train_params_load(&tp, model_path) != MG_OK ||
        adv_init(&ad, 7, CAP, CAP, 3) != MG_OK) {
        fprintf(stderr, "test_cuda_adv: %s\n", mg_last_error());
        return -1;
    }
    /* the GPU's GEMMs read every conv kernel in bf16 (the biases in fp32): the CPU computes
     * with the same values (test_cuda_tae_train.c) */
    orig_param = malloc(tp.count * sizeof(float));
    memcpy(orig_param, tp.param, tp.count * sizeof(float));
    for (int i = 0; i < tp.dit_first; i++)
        if (tp.table[i].rank == 4) round_bf16(tp.param + tp.offset[i], train_params_numel(&tp, i));
    for (int i = 0; i < ad.dp.n_tensors; i++)
        if (ad.dp.table[i].rank == 4) round_bf16(ad.dp.param + ad.dp.offset[i], train_params_numel(&ad.dp, i));
    if (cuda_params_new(&cp, &tp) != MG_OK || cuda_params_new(&dcp, &ad.dp) != MG_OK ||
        cuda_tae_train_new(&tt, &cp, TB, CAP, CAP) != MG_OK || cuda_tae_train_set_adv(tt, &dcp, 0.5f) != MG_OK) {
        fprintf(stderr, "test_cuda_adv: %s\n", mg_last_error());
        return -1;
    }
    printf("test_cuda_adv on %s: tiny + D (%zu floats), state for %d images of %dx%d with D: %.1f MiB\n",
           cuda_params_device_name(&cp), ad.dp.count, TB, CAP, CAP, cuda_tae_train_bytes(tt) / 1048576.0);
    return 0;
}

static int teardown(void **state) {
    cuda_tae_train_free(tt);
    cuda_params_free(&dcp);
    cuda_params_free(&cp);
    adv_free(&ad);
    train_params_free(&tp);
    free(orig_param);
    return 0;
}

/* host -> device copy of D's (or the model's) weights, after the test changed them */
static void upload(cuda_params *c, const train_params *p) {
    CK(cudaMemcpy(c->param, p->param, p->count * sizeof(float), cudaMemcpyHostToDevice));
}

/* relative L2 with a floor: a gradient that is zero on both sides (D's last bias when every
 * patch is inside both hinges: the two passes cancel, to ~3e-8 on the CPU) compares as equal;
 * the floor is ~2% of the other tensors' gradients */
static double rel_l2_floor(const float *got, const float *ref, size_t n, double atol) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - ref[i];
        d += e * e, r += (double)ref[i] * ref[i];
    }
    return sqrt(d) / (sqrt(r) + atol * sqrt((double)n));
}

/* D's gradients (in ad.dp.grad after a download) against ref, per tensor; returns the failures */
static int check_d_grads(const float *ref, double scale) {
    int bad = 0;
    for (int i = 0; i < ad.dp.n_tensors; i++) {
        size_t o = ad.dp.offset[i], ne = train_params_numel(&ad.dp, i);
        double e = rel_l2_floor(ad.dp.grad + o, ref + o, ne, 1e-4 * scale);
        int ok = e <= D_TOL;
        bad += !ok;
        if (!ok || i == 0 || i == ad.dp.n_tensors - 1)
            printf("    grad %-16s rel L2 %.2e %s\n", ad.dp.table[i].name, e, ok ? "ok" : "FAIL");
    }
    return bad;
}

static void random_pair(float *img, float *rec, size_t n, uint64_t seed) {
    tu_fill_uniform(img, n, 0.0f, 1.0f, seed);
    /* a reconstruction, past [0, 1] in places; not much nearer (D's gradient is the difference
     * of its two passes: at +-0.25 it cancels to ~0.4 of its size, magnifying bf16 errors) */
    tu_fill_uniform(rec, n, -0.5f, 0.5f, seed + 1000);
    for (size_t i = 0; i < n; i++) rec[i] += img[i];
    round_bf16(img, n), round_bf16(rec, n);          /* D's first conv reads them in bf16 */
}

/* D's part alone: n images of H x W, D's last bias set to bias3 (NAN: as drawn) */
static void pass_case(int n, int H, int W, float scale, float w, float bias3, uint64_t seed) {
    size_t px = (size_t)H * W * 3, np = (size_t)(H / 8) * (W / 8);
    float *img = malloc(n * px * 4), *rec = malloc(n * px * 4), *cdrec = calloc(n * px, 4), *gdrec = malloc(n * px * 4);
    float *cgrad = malloc(ad.dp.count * 4), *gw0 = malloc(ad.dp.count * 4);
    random_pair(img, rec, n * px, seed);
    int b3 = train_params_find(&ad.dp, "disc.c3.bias");
    float saved = ad.dp.param[ad.dp.offset[b3]];
    if (!isnan(bias3)) ad.dp.param[ad.dp.offset[b3]] = bias3;
    upload(&dcp, &ad.dp);
    /* CPU, image by image */
    double cld[TB], gld[TB];
    adv_stats cst = {0}, gst = {0};
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    for (int b = 0; b < n; b++) {
        TU_OK(adv_image(&ad, img + b * px, rec + b * px, H, W, scale, w, &cld[b], &cst));
        if (w != 0.0f) memcpy(cdrec + b * px, ad.drec, px * 4);
    }
    memcpy(cgrad, ad.dp.grad, ad.dp.count * 4);
    /* GPU, batched; then again with w = 0: drec zero, D's gradients the same bits */
    TU_OK(cuda_zero_grad(&dcp, 0, ad.dp.n_tensors));
    TU_OK(cuda_params_sync(&dcp));
    TU_OK(cuda_tae_train_set_adv(tt, &dcp, w));
    tu_fill_uniform(gdrec, n * px, NAN, NAN, 1);
    TU_OK(cuda_tae_train_adv_pass(tt, img, rec, n, H, W, scale, gdrec));
    TU_OK(cuda_tae_train_adv_stats(tt, gld, &gst));
    TU_OK(cuda_params_download(&dcp, &ad.dp));
    memcpy(gw0, ad.dp.grad, ad.dp.count * 4);
    printf("  %dx%d, %d images (%zu patches each), scale %.3g, w %.3g, D's last bias %s%.3g:\n", W, H, n, np, scale, w,
           isnan(bias3) ? "as drawn " : "", isnan(bias3) ? saved : bias3);
    int bad = 0;
    for (int b = 0; b < n; b++) {
        double r = fabs(gld[b] - cld[b]) / cld[b];
        printf("    L_D[%d] gpu %.6f cpu %.6f rel %.1e %s\n", b, gld[b], cld[b], r, r <= LD_TOL ? "ok" : "FAIL");
        bad += !(r <= LD_TOL);
    }
    double dg = fabs(gst.g - cst.g), tg = 2e-3 * n + 2e-2 * fabs(cst.g);
    long dc = labs(gst.correct - cst.correct), tc = isnan(bias3) ? 2 + cst.total / 30 : 0;
    printf("    generator term sum gpu %.6f cpu %.6f (|diff| %.1e, tol %.1e) %s\n", gst.g, cst.g, dg, tg,
           dg <= tg ? "ok" : "FAIL");
    printf("    D correct gpu %ld cpu %ld of %ld / %ld (tol %ld) %s\n", gst.correct, cst.correct, gst.total, cst.total, tc,
           dc <= tc && gst.total == cst.total ? "ok" : "FAIL");
    bad += !(dg <= tg) + !(dc <= tc && gst.total == cst.total);
    if (!isnan(bias3)) { /* logits near +-3: every real right and every fake wrong (+3), or the reverse */
        printf("    with the bias at %+.0f D is right on exactly half the patches: %ld of %ld %s\n", bias3, cst.correct,
               cst.total, cst.correct == (long)(n * np) ? "ok" : "FAIL");
        bad += cst.correct != (long)(n * np);
    }
    bad += check_d_grads(cgrad, scale);
    if (w != 0.0f) {
        double e = tu_rel_l2(gdrec, cdrec, n * px);
        printf("    drec (the generator's gradient) rel L2 %.2e %s\n", e, e <= DREC_TOL ? "ok" : "FAIL");
        bad += !(e <= DREC_TOL);
        /* w = 0: no generator pass */
        TU_OK(cuda_zero_grad(&dcp, 0, ad.dp.n_tensors));
        TU_OK(cuda_params_sync(&dcp));
        TU_OK(cuda_tae_train_set_adv(tt, &dcp, 0.0f));
        TU_OK(cuda_tae_train_adv_pass(tt, img, rec, n, H, W, scale, gdrec));
        TU_OK(cuda_params_download(&dcp, &ad.dp));
        size_t nz = 0;
        for (size_t i = 0; i < n * px; i++) nz += gdrec[i] != 0.0f;
        int same = memcmp(gw0, ad.dp.grad, ad.dp.count * 4) == 0;
        printf("    w 0: drec nonzero %zu (0), D's gradients %s those with w %.3g %s\n", nz,
               same ? "the same bits as" : "DIFFER from", w, nz == 0 && same ? "ok" : "FAIL");
        bad += nz != 0 || !same;
    }
    ad.dp.param[ad.dp.offset[b3]] = saved;
    upload(&dcp, &ad.dp);
    TU_OK(cuda_tae_train_set_adv(tt, &dcp, 0.5f));
    assert_int_equal(bad, 0);
    free(img), free(rec), free(cdrec), free(gdrec), free(cgrad), free(gw0);
}

static void test_pass_40x56(void **state) { pass_case(3, 40, 56, 1.0f / 3, 0.5f, NAN, 31); }
static void test_pass_24x40(void **state) { pass_case(2, 24, 40, 0.5f, 2.0f, NAN, 32); }
static void test_pass_real_cut(void **state) { pass_case(2, 40, 56, 0.5f, 0.5f, 3.0f, 33); }
static void test_pass_fake_cut(void **state) { pass_case(3, 24, 40, 1.0f / 3, 0.5f, -3.0f, 34); }

/* The CPU trainer's step (trainer.c: batch_loss, then the step loop's optimizer calls) on n
 * images from the present weights: the losses, D's figures, the model's and D's gradients
 * (tp.grad, ad.dp.grad); AdamW (step 1) on both when lr > 0. */
static void cpu_step(const float *img, int n, int H, int W, float w, float lr, float *loss, adv_stats *st) {
    size_t px = (size_t)H * W * 3;
    float inv = 1.0f / (float)n;
    adamw_opts ao = adamw_defaults();
    tae_train ct;
    TU_OK(tae_train_init(&ct, &tp, H, W));
    train_zero_grad(&tp, 0, tp.n_tensors);
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    for (int b = 0; b < n; b++) {
        double ld;
        TU_OK(tae_train_forward(&ct, img + b * px, H, W, &loss[b]));
        TU_OK(adv_image(&ad, img + b * px, ct.a.rec, H, W, inv, w, &ld, st));
        ct.drec_add = w != 0.0f ? ad.drec : NULL;
        TU_OK(tae_train_backward(&ct, inv));
        ct.drec_add = NULL;
    }
    tae_train_free(&ct);
    if (lr > 0.0f) {
        adamw_step(&tp, 0, tp.dit_first, 1, lr, &ao);
        adamw_step(&ad.dp, 0, ad.dp.n_tensors, 1, lr, &ao);
    }
}

/* The same on the GPU, as the trainer runs it (its order of calls and syncs) */
static void gpu_step(cuda_tae_train *t, const float *img, int n, int H, int W, float w, float lr, float *loss,
                     adv_stats *st) {
    adamw_opts ao = adamw_defaults();
    double gn;
    TU_OK(cuda_zero_grad(&dcp, 0, ad.dp.n_tensors));
    TU_OK(cuda_params_sync(&dcp));
    TU_OK(cuda_tae_train_set_adv(t, &dcp, w));
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_tae_train_step(t, img, n, H, W, 1.0f / (float)n, loss));
    TU_OK(cuda_tae_train_adv_stats(t, NULL, st));
    TU_OK(cuda_grad_clip(&cp, 0, tp.dit_first, 1e30, &gn));
    TU_OK(cuda_adamw_step(&cp, 0, tp.dit_first, 1, lr, &ao));
    TU_OK(cuda_adamw_step(&dcp, 0, ad.dp.n_tensors, 1, lr, &ao));
    TU_OK(cuda_params_sync(&dcp));
    TU_OK(cuda_params_sync(&cp));
}

/* the host's param (moments zeroed, both sides) onto the device: a first step from p0 again */
static void reset(cuda_params *c, train_params *p, const float *p0) {
    memcpy(p->param, p0, p->count * 4);
    memset(p->m, 0, p->count * 4), memset(p->v, 0, p->count * 4);
    upload(c, p);
    CK(cudaMemset(c->m, 0, p->count * 4));
    CK(cudaMemset(c->v, 0, p->count * 4));
}

/* One step, GPU (state t) against CPU (see the top of the file) */
static void step_case(cuda_tae_train *t, const char *what, int n, int H, int W, float w, uint64_t seed) {
    size_t px = (size_t)H * W * 3, bytes = tp.count * 4, dbytes = ad.dp.count * 4;
    float lr = 1e-3f;
    float *img = malloc(n * px * 4);
    tu_fill_uniform(img, n * px, 0.0f, 1.0f, seed);
    round_bf16(img, n * px); /* the first conv reads it in bf16 */
    float *p0 = malloc(bytes), *dp0 = malloc(dbytes), *ref = malloc(bytes), *ref32 = malloc(bytes), *ref0 = malloc(bytes);
    float *dref = malloc(dbytes), *cp1 = malloc(bytes), *dcp1 = malloc(dbytes);
    memcpy(p0, tp.param, bytes), memcpy(dp0, ad.dp.param, dbytes);
    float cl[TB], gl[TB], l0[TB];
    adv_stats cst = {0}, gst = {0}, s0 = {0};
    /* the CPU without the term (how far the term moves the gradients); on the unrounded
     * kernels (the sensitivity to bf16 ReLU flips, as test_cuda_tae_train); the reference */
    cpu_step(img, n, H, W, 0.0f, 0.0f, l0, &s0);
    memcpy(ref0, tp.grad, bytes);
    memcpy(tp.param, orig_param, bytes);
    cpu_step(img, n, H, W, w, 0.0f, l0, &s0);
    memcpy(ref32, tp.grad, bytes);
    memcpy(tp.param, p0, bytes);
    cpu_step(img, n, H, W, w, lr, cl, &cst);
    memcpy(ref, tp.grad, bytes), memcpy(dref, ad.dp.grad, dbytes);
    memcpy(cp1, tp.param, bytes), memcpy(dcp1, ad.dp.param, dbytes);
    /* the GPU from the same state */
    reset(&cp, &tp, p0), reset(&dcp, &ad.dp, dp0);
    gpu_step(t, img, n, H, W, w, lr, gl, &gst);
    TU_OK(cuda_params_download(&cp, &tp));
    TU_OK(cuda_params_download(&dcp, &ad.dp));
    printf("  %s: one step with --adv %.3g, %dx%d, %d images:\n", what, w, W, H, n);
    int bad = 0;
    for (int b = 0; b < n; b++) {
        double r = fabs((double)gl[b] - cl[b]) / cl[b];
        printf("    loss[%d] gpu %.6f cpu %.6f rel %.1e %s\n", b, gl[b], cl[b], r, r < 1e-2 ? "ok" : "FAIL");
        bad += !(r < 1e-2);
    }
    double r = fabs(gst.ld - cst.ld) / cst.ld;
    int sok = r <= LD_TOL && gst.total == cst.total && cst.total > 0;
    printf("    L_D sum gpu %.6f cpu %.6f rel %.1e; generator term sum gpu %.6f cpu %.6f; accuracy gpu %.1f%% cpu "
           "%.1f%% %s\n", gst.ld, cst.ld, r, gst.g, cst.g, 100.0 * gst.correct / (gst.total ? gst.total : 1),
           100.0 * cst.correct / (cst.total ? cst.total : 1), sok ? "ok" : "FAIL");
    bad += !sok;
    /* the model's gradients: per tensor, GRAD_TOL or twice the CPU's own sensitivity; with the
     * term on, plus DREC_TOL: the decoder's output gradient then carries drec, and its error
     * (the bf16 of D's activations, which the sensitivity run leaves rounded) flows back through
     * the whole autoencoder (measured: up to 1.04e-1 on the encoder's first blocks at w 10,
     * dev/cuda/logs/h100-s6-call3.log, against 4.9e-2 with the term off) */
    size_t na = tp.offset[tp.dit_first];
    double worst = 0, eff = tu_rel_l2(ref0, ref, na), all = tu_rel_l2(tp.grad, ref, na);
    int nbad = 0, wi = 0;
    for (int i = 0; i < tp.dit_first; i++) {
        size_t o = tp.offset[i], ne = train_params_numel(&tp, i);
        double e = tu_rel_l2(tp.grad + o, ref + o, ne), sens = tu_rel_l2(ref32 + o, ref + o, ne);
        double tol = (2 * sens > GRAD_TOL ? 2 * sens : GRAD_TOL) + (w != 0.0f ? DREC_TOL : 0.0);
        if (!(e <= tol)) nbad++, printf("    grad %-22s rel L2 %.2e (tol %.2e) FAIL\n", tp.table[i].name, e, tol);
        if (!(e <= worst)) worst = e, wi = i;
    }
    /* w != 0: the term must move the gradients far more than the GPU's error, or the check
     * could not see it missing; w = 0: the CPU's two runs are the same */
    int eok = w != 0.0f ? eff > 5 * all : eff == 0.0;
    printf("    %d of %d autoencoder gradients within tolerance (worst %s %.2e); all together rel L2 %.2e, the term "
           "moves them by %.2e (%s) %s\n", tp.dit_first - nbad, tp.dit_first, tp.table[wi].name, worst, all, eff,
           w != 0.0f ? "must be > 5x" : "must be 0", nbad == 0 && eok ? "ok" : "FAIL");
    bad += nbad + !eok;
    bad += check_d_grads(dref, 1.0 / n);
    /* what AdamW did to a few tensors: the updates, GPU against CPU */
    const char *names[4] = {"dec.out.weight", "dec.out.bias", "disc.c0.weight", "disc.c3.weight"};
    for (int k = 0; k < 4; k++) {
        int d = k >= 2;
        const train_params *p = d ? &ad.dp : &tp;
        int i = train_params_find(p, names[k]);
        assert_true(i >= 0);
        size_t o = p->offset[i], ne = train_params_numel(p, i);
        const float *before = (d ? dp0 : p0) + o, *cpu = (d ? dcp1 : cp1) + o, *gpu = p->param + o;
        float *ug = malloc(ne * 4), *uc = malloc(ne * 4);
        for (size_t j = 0; j < ne; j++) ug[j] = gpu[j] - before[j], uc[j] = cpu[j] - before[j];
        double e = tu_rel_l2(ug, uc, ne);
        printf("    AdamW update of %-15s rel L2 %.2e %s\n", names[k], e, e <= UPD_TOL ? "ok" : "FAIL");
        bad += !(e <= UPD_TOL);
        free(ug), free(uc);
    }
    /* back to the state of before, for the next case */
    reset(&cp, &tp, p0), reset(&dcp, &ad.dp, dp0);
    assert_int_equal(bad, 0);
    free(img), free(p0), free(dp0), free(ref), free(ref32), free(ref0), free(dref), free(cp1), free(dcp1);
}

/* The step in the CUDA graph (the default) and with plain launches (MG_CUDA_TAEGRAPH=0, read at
 * _new): each first with the term off (D trains; before --adv-start), then on at the same shape
 * (the graph recaptured with the generator pass) */
static void test_step(void **state) {
    for (int graph = 1; graph >= 0; graph--) {
        setenv("MG_CUDA_TAEGRAPH", graph ? "1" : "0", 1);
        cuda_tae_train *t = NULL;
        TU_OK(cuda_tae_train_new(&t, &cp, TB, CAP, CAP));
        TU_OK(cuda_tae_train_set_adv(t, &dcp, 0.0f));
        const char *what = graph ? "CUDA graph" : "plain launches";
        step_case(t, what, 2, 40, 56, 0.0f, 41);
        step_case(t, what, 2, 40, 56, ADV_W, 42);
        step_case(t, what, 3, 24, 40, ADV_W, 43);
        cuda_tae_train_free(t);
    }
    unsetenv("MG_CUDA_TAEGRAPH");
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_adv: skipped: no CUDA device found\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass_40x56), cmocka_unit_test(test_pass_24x40), cmocka_unit_test(test_pass_real_cut),
        cmocka_unit_test(test_pass_fake_cut), cmocka_unit_test(test_step),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
