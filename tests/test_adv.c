/* The adversarial term (src/train/adv.h) against the PyTorch oracle
 * (tests/data/adv_tiny.safetensors, ref/export_adv.py, float64): D's logits, the hinge loss
 * L_D, the generator term, D's weight gradients, the generator's gradient of the
 * reconstruction (through the D of before its step) and one AdamW step of D. Plus what the
 * oracle cannot see: the initialisation is a pure function of the seed, the passes are
 * deterministic and accumulate, the generator pass leaves D's gradients alone, bad sizes are
 * refused, and the autoencoder's backward with no adversarial gradient (--adv 0) is bit for
 * bit what it was. */
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "model/model.h"
#include "train/adv.h"
#include "train/checkpoint.h"
#include "train/train.h"
#include "testutil.h"
#include "train_oracle.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#define TOL 1e-5 /* relative L2, fp32 against float64 */

static st_file gold;

static const st_tensor *gt(const char *name, size_t numel) { return oracle_tensor(&gold, name, numel); }

static void check_l2(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double e = tu_rel_l2(got, ref, n);
    printf("  %-32s n=%-7zu rel L2 %.3e %s\n", what, n, e, e <= tol ? "ok" : "FAIL");
    if (!(e <= tol)) fail_msg("%s: relative L2 error %.3e over %.1e", what, e, tol);
}

static int setup(void **state) {
    return oracle_open(&gold, "adv_tiny.safetensors");
}

static int teardown(void **state) {
    st_close(&gold);
    return 0;
}

static void load_oracle_weights(adv_disc *ad) {
    for (int i = 0; i < ad->dp.n_tensors; i++) {
        char n[96];
        snprintf(n, sizeof n, "adv/param/%s", ad->dp.table[i].name);
        const st_tensor *t = gt(n, train_params_numel(&ad->dp, i));
        memcpy(ad->dp.param + ad->dp.offset[i], t->data, t->numel * sizeof(float));
    }
}

static void test_matches_oracle(void **state) {
    const st_tensor *img = st_find(&gold, "adv/img"), *rec = st_find(&gold, "adv/rec");
    assert_non_null(img);
    assert_non_null(rec);
    assert_int_equal(img->rank, 4);
    int B = (int)img->shape[0], H = (int)img->shape[1], W = (int)img->shape[2];
    size_t px = (size_t)H * W * 3, np = (size_t)(H / 8) * (W / 8);
    float wgen = strtof(st_meta_get(&gold, "w_gen"), NULL), scale = 1.0f / (float)B;
    adv_disc ad;
    TU_OK(adv_init(&ad, 0, H, W, 3));
    load_oracle_weights(&ad);
    const float *lr = gt("adv/logits_real", B * np)->data, *lf = gt("adv/logits_fake", B * np)->data;
    const float *drec = gt("adv/drec", B * px)->data;
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    adv_stats st = {0};
    for (int b = 0; b < B; b++) {
        const float *x = (const float *)img->data + b * px, *r = (const float *)rec->data + b * px;
        char what[64];
        TU_OK(adv_forward(&ad, x, H, W));
        snprintf(what, sizeof what, "logits real [%d]", b);
        check_l2(what, ad.act[ADV_LAYERS - 1], lr + b * np, np, TOL);
        TU_OK(adv_forward(&ad, r, H, W));
        snprintf(what, sizeof what, "logits fake [%d]", b);
        check_l2(what, ad.act[ADV_LAYERS - 1], lf + b * np, np, TOL);
        double ld;
        TU_OK(adv_image(&ad, x, r, H, W, scale, wgen, &ld, &st));
        snprintf(what, sizeof what, "dWG/drec [%d]", b);
        check_l2(what, ad.drec, drec + b * px, px, TOL);
    }
    float ld = (float)(st.ld / B), g = (float)(st.g / B), acc = (float)st.correct / (float)st.total;
    check_l2("L_D", &ld, gt("adv/ld", 1)->data, 1, TOL);
    check_l2("G = -mean D(rec)", &g, gt("adv/g", 1)->data, 1, TOL);
    assert_float_equal(acc, *(const float *)gt("adv/acc", 1)->data, 1e-6);
    for (int i = 0; i < ad.dp.n_tensors; i++) {
        char n[96];
        snprintf(n, sizeof n, "adv/grad/%s", ad.dp.table[i].name);
        check_l2(n, ad.dp.grad + ad.dp.offset[i], gt(n, train_params_numel(&ad.dp, i))->data,
                 train_params_numel(&ad.dp, i), TOL);
    }
    /* D's step: AdamW as the trainer runs it (the model's betas, weight decay of stage tae 0).
     * The first step moves an element by lr g / (|g| + eps): where the oracle's gradient is 0
     * (channels whose real and fake contributions cancel exactly in float64, as rec ~ img makes
     * the LeakyReLU patterns agree) fp32's rounding residue of ~1e-9 moves it by up to ~0.1 lr.
     * Those are held to |step| <= lr; the rest to the update's relative L2. */
    float alr = strtof(st_meta_get(&gold, "adamw_lr"), NULL);
    float *p0 = malloc(ad.dp.count * sizeof(float)), *g0 = malloc(ad.dp.count * sizeof(float));
    memcpy(p0, ad.dp.param, ad.dp.count * sizeof(float));
    memcpy(g0, ad.dp.grad, ad.dp.count * sizeof(float));
    adamw_opts o = adamw_defaults();
    o.weight_decay = 0.0f;
    adamw_step(&ad.dp, 0, ad.dp.n_tensors, 1, alr, &o);
    for (int i = 0; i < ad.dp.n_tensors; i++) {
        char n[96];
        snprintf(n, sizeof n, "adv/step1/%s", ad.dp.table[i].name);
        size_t ne = train_params_numel(&ad.dp, i), off = ad.dp.offset[i], kept = 0, flat = 0;
        const float *ref = gt(n, ne)->data;
        snprintf(n, sizeof n, "adv/grad/%s", ad.dp.table[i].name);
        const float *gref = gt(n, ne)->data;
        float *du = malloc(ne * sizeof(float)), *ru = malloc(ne * sizeof(float));
        for (size_t k = 0; k < ne; k++) {
            float d = ad.dp.param[off + k] - p0[off + k];
            if (fabsf(gref[k]) > 1e-6f) {
                du[kept] = d, ru[kept] = ref[k] - p0[off + k], kept++;
            } else {
                flat++;
                assert_true(fabsf(d) <= alr * 1.0001f);
            }
        }
        snprintf(n, sizeof n, "AdamW step %s", ad.dp.table[i].name);
        check_l2(n, du, ru, kept, 1e-4);
        if (flat) printf("    (%zu elements with an oracle gradient under 1e-6: |step| <= lr)\n", flat);
        free(du), free(ru);
    }
    free(p0), free(g0);
    adv_free(&ad);
}

static void test_init_is_seeded(void **state) {
    adv_disc a, b, c;
    TU_OK(adv_init(&a, 7, 16, 16, 3));
    TU_OK(adv_init(&b, 7, 32, 24, 3));
    TU_OK(adv_init(&c, 8, 16, 16, 3));
    assert_int_equal(a.dp.count, b.dp.count);
    assert_memory_equal(a.dp.param, b.dp.param, a.dp.count * sizeof(float));
    assert_true(memcmp(a.dp.param, c.dp.param, a.dp.count * sizeof(float)) != 0);
    int n = a.dp.n_tensors;
    assert_int_equal(n, 8);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        float bound = 1.0f / sqrtf((float)a.dp.table[i].fan_in), mx = 0.0f;
        for (size_t k = 0; k < train_params_numel(&a.dp, i); k++) {
            float v = fabsf(a.dp.param[a.dp.offset[i] + k]);
            mx = v > mx ? v : mx;
        }
        assert_true(mx <= bound);
        if (train_params_numel(&a.dp, i) >= 64) assert_true(mx > 0.5f * bound); /* the draws span the range */
        total += train_params_numel(&a.dp, i);
    }
    /* 3*64*9+64 + 2*(64*64*9+64) + 64*9+1 */
    assert_int_equal(total, 1792 + 2 * 36928 + 577);
    assert_int_equal(train_params_find(&a.dp, "disc.c3.weight"), 6);
    adv_free(&a), adv_free(&b), adv_free(&c);
}

static void test_deterministic_accumulates_and_refuses(void **state) {
    int H = 16, W = 24;
    size_t px = (size_t)H * W * 3;
    float *img = tu_frand(px, 0, 1, 11), *rec = tu_frand(px, -0.1f, 1.1f, 12);
    adv_disc ad;
    TU_OK(adv_init(&ad, 3, H, W, 3));
    size_t n = ad.dp.count;
    float *g1 = malloc(n * sizeof(float)), *d1 = malloc(px * sizeof(float));
    double l1, l2;
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    TU_OK(adv_image(&ad, img, rec, H, W, 0.5f, 0.25f, &l1, NULL));
    memcpy(g1, ad.dp.grad, n * sizeof(float));
    memcpy(d1, ad.drec, px * sizeof(float));
    /* the generator's weight: D's gradients do not depend on it, drec is linear in it */
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    TU_OK(adv_image(&ad, img, rec, H, W, 0.5f, 0.5f, &l2, NULL));
    assert_memory_equal(ad.dp.grad, g1, n * sizeof(float));
    assert_true(l1 == l2);
    for (size_t i = 0; i < px; i++) assert_float_equal(ad.drec[i], 2.0f * d1[i], 1e-9 + 1e-6 * fabsf(d1[i]));
    /* w_gen 0 (before --adv-start): drec untouched, D still learns */
    for (size_t i = 0; i < px; i++) ad.drec[i] = 123.0f;
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    TU_OK(adv_image(&ad, img, rec, H, W, 0.5f, 0.0f, &l2, NULL));
    assert_memory_equal(ad.dp.grad, g1, n * sizeof(float));
    for (size_t i = 0; i < px; i++) assert_true(ad.drec[i] == 123.0f);
    /* accumulation: a second call adds the same again (scale 0.5 twice = the sum) */
    TU_OK(adv_image(&ad, img, rec, H, W, 0.5f, 0.0f, &l2, NULL));
    for (size_t i = 0; i < n; i++) assert_float_equal(ad.dp.grad[i], 2.0f * g1[i], 1e-6 * (1 + fabsf(g1[i])));
    /* the gradient of rec is not zero and not NaN */
    assert_true(tu_rel_l2(d1, d1, px) == 0.0);
    double s = 0;
    for (size_t i = 0; i < px; i++) s += fabs(d1[i]);
    assert_true(s > 0);
    /* sizes it cannot take */
    assert_int_equal(adv_image(&ad, img, rec, 12, 16, 0.5f, 0.0f, &l2, NULL), MG_ERR_SHAPE);
    assert_int_equal(adv_forward(&ad, img, 32, 32), MG_ERR_SHAPE);
    assert_non_null(strstr(mg_last_error(), "multiples of 8"));
    adv_disc bad;
    assert_int_equal(adv_init(&bad, 0, 20, 16, 3), MG_ERR_SHAPE);
    adv_free(&ad);
    free(img), free(rec), free(g1), free(d1);
}

/* --adv 0 leaves training as it was: the trainer then sets no drec_add, and a drec_add of
 * zeros (what the hook adds) gives the same bits as none; a non-zero one changes them. */
static void test_tae_hook_neutral(void **state) {
    char path[600];
    train_params tp;
    TU_OK(oracle_tiny_params(&tp, path, sizeof path, "adv_model.safetensors", 1));
    tae_train tt;
    int H = 16, W = 16;
    size_t px = (size_t)H * W * 3, n = tp.offset[tp.dit_first];
    TU_OK(tae_train_init(&tt, &tp, H, W));
    float *img = tu_frand(px, 0, 1, 5), *zeros = calloc(px, sizeof(float)), *g0 = malloc(n * sizeof(float));
    float loss0, loss1;
    train_zero_grad(&tp, 0, tp.dit_first);
    TU_OK(tae_train_forward(&tt, img, H, W, &loss0));
    TU_OK(tae_train_backward(&tt, 0.5f));
    memcpy(g0, tp.grad, n * sizeof(float));
    train_zero_grad(&tp, 0, tp.dit_first);
    tt.drec_add = zeros;
    TU_OK(tae_train_forward(&tt, img, H, W, &loss1));
    TU_OK(tae_train_backward(&tt, 0.5f));
    assert_true(loss0 == loss1);
    assert_memory_equal(tp.grad, g0, n * sizeof(float));
    zeros[7] = 0.01f;
    train_zero_grad(&tp, 0, tp.dit_first);
    TU_OK(tae_train_forward(&tt, img, H, W, &loss1));
    TU_OK(tae_train_backward(&tt, 0.5f));
    assert_true(memcmp(tp.grad, g0, n * sizeof(float)) != 0);
    tae_train_free(&tt);
    train_params_free(&tp);
    free(img), free(zeros), free(g0);
}

/* D's state in the checkpoint (ckpt_save_aux / ckpt_load_aux): back exactly, beside an
 * unchanged model state; absent from a checkpoint saved without it (an error that says so);
 * shapes of another D refused. */
static void test_checkpoint_aux(void **state) {
    char model[600], path[600], plain[600];
    snprintf(path, sizeof path, "%s/adv.ckpt", tu_tmpdir());
    snprintf(plain, sizeof plain, "%s/plain.ckpt", tu_tmpdir());
    train_params tp, got;
    TU_OK(oracle_tiny_params(&tp, model, sizeof model, "ck_model.safetensors", 2));
    for (size_t i = 0; i < tp.count; i++) tp.m[i] = 0.25f * tp.param[i], tp.v[i] = 0.5f + tp.param[i] * tp.param[i];
    adv_disc a, b;
    TU_OK(adv_init(&a, 5, 16, 16, 3));
    TU_OK(adv_init(&b, 6, 16, 16, 3));
    for (int t = 0; t < a.dp.n_tensors; t++) /* the tensors, not the padding between them */
        for (size_t k = a.dp.offset[t]; k < a.dp.offset[t] + train_params_numel(&a.dp, t); k++)
            a.dp.m[k] = (float)k * 1e-6f, a.dp.v[k] = (float)k * 1e-7f;
    /* small parts: D's tensors share the roll-over with the model's */
    TU_OK(ckpt_save_aux(path, &tp, 0, tp.dit_first, "tae", 9, NULL, (size_t)1 << 20, ST_F32, &a.dp));
    char stage[8];
    long step;
    TU_OK(ckpt_load(path, &got, stage, &step, NULL));
    assert_int_equal(step, 9);
    assert_memory_equal(got.param, tp.param, tp.count * sizeof(float));
    size_t tae = tp.offset[tp.dit_first];
    assert_memory_equal(got.m, tp.m, tae * sizeof(float));
    train_params_free(&got);
    TU_OK(ckpt_load_aux(path, &b.dp));
    assert_memory_equal(b.dp.param, a.dp.param, a.dp.count * sizeof(float));
    assert_memory_equal(b.dp.m, a.dp.m, a.dp.count * sizeof(float));
    assert_memory_equal(b.dp.v, a.dp.v, a.dp.count * sizeof(float));
    /* a checkpoint without D */
    TU_OK(ckpt_save_ex(plain, &tp, 0, tp.dit_first, "tae", 9, NULL, (size_t)15 << 20, ST_F32));
    assert_int_equal(ckpt_load_aux(plain, &b.dp), MG_ERR_FORMAT);
    assert_non_null(strstr(mg_last_error(), "aux.param/disc.c0.weight missing"));
    /* another D's shapes: a renamed table entry is an unexpected tensor */
    snprintf(b.dp.table[0].name, sizeof b.dp.table[0].name, "disc.other.weight");
    assert_int_equal(ckpt_load_aux(path, &b.dp), MG_ERR_FORMAT);
    assert_non_null(strstr(mg_last_error(), "unexpected tensor aux.param/disc.c0.weight"));
    adv_free(&a), adv_free(&b);
    train_params_free(&tp);
}

/* Stage dit (adv_clips): D on 4-channel latents against the one-step estimate x0 - sigma (v -
 * (eps - x0)). Frames under ADV_SIGMA_MIN are skipped (dv_add 0, D untouched); the judged
 * frames train D exactly as adv_image on that estimate does; dv_add is the derivative of
 * W x (-mean D(estimate)) with respect to v (central differences along random directions, in
 * double from fp32 logits: agreement to 3e-2, a wrong sigma or sign is far outside); W = 0 leaves dv_add at zero and D's gradients
 * as with the term on. */
static double gen_term(adv_disc *ad, const float *x0, const float *eps, const float *v, float s, float w, int H, int W) {
    size_t n = (size_t)H * W * 4, np = (size_t)(H / 8) * (W / 8);
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = x0[i] - s * (v[i] - (eps[i] - x0[i]));
    TU_OK(adv_forward(ad, f, H, W));
    double m = 0.0;
    for (size_t p = 0; p < np; p++) m += ad->act[ADV_LAYERS - 1][p];
    free(f);
    return -(double)w * m / (double)np;
}

static void test_clip(void **state) {
    const int T = 3, H = 16, W = 24, Z = 4;
    const size_t lat = (size_t)H * W * Z;
    const float sigma[3] = {0.1f, 0.5f, 1.0f}, w = 0.7f, scale = 0.5f;
    float *x0 = tu_frand(T * lat, -1.5f, 1.5f, 11), *eps = tu_frand(T * lat, -2.0f, 2.0f, 12);
    float *v = tu_frand(T * lat, -2.0f, 2.0f, 13), *dv = tu_fpoison(T * lat), *dv0 = tu_fpoison(T * lat);
    dit_clip c = {.T = T, .lh = H, .lw = W, .x0 = x0, .eps = eps, .sigma = sigma, .prompt = 0, .window = 2};
    adv_disc ad, ref;
    TU_OK(adv_init(&ad, 21, H, W, Z));
    TU_OK(adv_init(&ref, 21, H, W, Z));
    assert_int_equal(ad.dp.table[0].shape[1], Z);
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    train_zero_grad(&ref.dp, 0, ref.dp.n_tensors);
    adv_stats st = {0}, sr = {0};
    TU_OK(adv_clips(&ad, &c, 1, v, dv, scale, w, &st));
    assert_int_equal(st.frames, 2);
    for (size_t i = 0; i < lat; i++) assert_true(dv[i] == 0.0f); /* sigma 0.1: the history */
    /* D's gradients: the same bits as adv_image on frames 1 and 2's estimates */
    float *f = malloc(lat * sizeof(float));
    for (int t = 1; t < T; t++) {
        for (size_t i = 0; i < lat; i++) f[i] = x0[t * lat + i] - sigma[t] * (v[t * lat + i] - (eps[t * lat + i] - x0[t * lat + i]));
        double ld;
        TU_OK(adv_image(&ref, x0 + t * lat, f, H, W, scale, 0.0f, &ld, &sr));
    }
    assert_memory_equal(ad.dp.grad, ref.dp.grad, ad.dp.count * sizeof(float));
    assert_true(st.ld == sr.ld && st.correct == sr.correct && st.total == sr.total);
    /* dv_add against central differences of the generator term (scale folded in) */
    for (int t = 1; t < T; t++) {
        float *u = tu_frand(lat, -1.0f, 1.0f, 30 + t), *vp = malloc(lat * sizeof(float)), *vm = malloc(lat * sizeof(float));
        const float h = 2e-4f; /* D is piecewise linear with many kinks: small steps (measured: 2e-3 is 3% off) */
        for (size_t i = 0; i < lat; i++) vp[i] = v[t * lat + i] + h * u[i], vm[i] = v[t * lat + i] - h * u[i];
        double gp = gen_term(&ad, x0 + t * lat, eps + t * lat, vp, sigma[t], w, H, W);
        double gm = gen_term(&ad, x0 + t * lat, eps + t * lat, vm, sigma[t], w, H, W);
        double fd = scale * (gp - gm) / (2.0 * h), an = 0.0;
        for (size_t i = 0; i < lat; i++) an += (double)dv[t * lat + i] * u[i];
        printf("  frame %d (sigma %.2f): d/dv along u: analytic %.6e, central difference %.6e\n", t, sigma[t], an, fd);
        assert_true(fabs(an - fd) <= 3e-2 * fabs(an) + 1e-7);
        assert_true(fabs(an) > 1e-6); /* the term moves v */
        free(u), free(vp), free(vm);
    }
    /* W = 0: D trains the same, nothing reaches v */
    train_zero_grad(&ref.dp, 0, ref.dp.n_tensors);
    memcpy(ref.dp.param, ad.dp.param, ad.dp.count * sizeof(float));
    adv_stats s0 = {0};
    TU_OK(adv_clips(&ref, &c, 1, v, dv0, scale, 0.0f, &s0));
    for (size_t i = 0; i < T * lat; i++) assert_true(dv0[i] == 0.0f);
    assert_memory_equal(ad.dp.grad, ref.dp.grad, ad.dp.count * sizeof(float));
    /* two clips at once on 1 and on 3 threads: the same frames judged, the same figures and
     * gradients up to rounding (a GEMM inside a parallel region runs on one thread, with its
     * own blocking: measured 1e-9 relative on L_D) */
    dit_clip cc[2] = {c, c};
    float *v2 = tu_frand(2 * T * lat, -2.0f, 2.0f, 14), *d1 = tu_fpoison(2 * T * lat), *d3 = tu_fpoison(2 * T * lat);
    float *g1 = malloc(ad.dp.count * sizeof(float));
    adv_stats a1 = {0}, a3 = {0};
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    TU_OK(adv_clips(&ad, cc, 2, v2, d1, scale, w, &a1));
    memcpy(g1, ad.dp.grad, ad.dp.count * sizeof(float));
#ifdef MG_HAVE_OPENMP
    omp_set_num_threads(3);
#endif
    train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
    TU_OK(adv_clips(&ad, cc, 2, v2, d3, scale, w, &a3));
#ifdef MG_HAVE_OPENMP
    omp_set_num_threads(1);
#endif
    printf("  1 thread: L_D sum %.12f, %ld right; 3 threads: %.12f, %ld right\n", a1.ld, a1.correct, a3.ld, a3.correct);
    assert_int_equal(a1.frames, 4);
    assert_int_equal(a3.frames, 4);
    assert_int_equal(a1.total, a3.total);
    assert_true(fabs(a1.ld - a3.ld) < 1e-6 * a1.ld);
    check_l2("dv_add, 3 threads vs 1", d3, d1, 2 * T * lat, 1e-5);
    check_l2("D's gradients, 3 threads vs 1", ad.dp.grad, g1, ad.dp.count, 1e-5);
    free(v2), free(d1), free(d3), free(g1);
    free(f), free(x0), free(eps), free(v), free(dv), free(dv0);
    adv_free(&ad), adv_free(&ref);
}

/* D can learn: on 4-channel 16x16 white noise (real) against the same noise's 2x2 box blur
 * (fake, another draw each time), 8 pairs a step, AdamW at 1e-3, D is right on over 90% of
 * the patches within 100 steps (measured: 98% at step 60). A D whose updates were lost or
 * whose gradients pointed the wrong way stays at 50%. */
static void test_learns(void **state) {
    const int H = 16, W = 16, C = 4, B = 8;
    const size_t n = (size_t)H * W * C;
    adv_disc ad;
    TU_OK(adv_init(&ad, 1, H, W, C));
    float *real = malloc(n * sizeof(float)), *fake = malloc(n * sizeof(float)), *tmp = malloc(n * sizeof(float));
    mg_rng r;
    mg_rng_seed(&r, 5);
    adamw_opts o = adamw_defaults();
    double acc = 0.0;
    for (int step = 1; step <= 100; step++) {
        train_zero_grad(&ad.dp, 0, ad.dp.n_tensors);
        adv_stats st = {0};
        for (int b = 0; b < B; b++) {
            mg_rng_normal_fill(&r, tmp, n);
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    for (int c = 0; c < C; c++) {
                        float s = 0.0f;
                        for (int dy = 0; dy < 2; dy++)
                            for (int dx = 0; dx < 2; dx++) s += tmp[(((y + dy) % H) * W + (x + dx) % W) * C + c];
                        fake[(y * W + x) * C + c] = 0.5f * s;
                    }
            mg_rng_normal_fill(&r, real, n);
            double ld;
            TU_OK(adv_image(&ad, real, fake, H, W, 1.0f / B, 0.1f, &ld, &st));
        }
        adamw_step(&ad.dp, 0, ad.dp.n_tensors, step, 1e-3f, &o);
        acc = (double)st.correct / (double)st.total;
        if (step % 20 == 0) printf("  step %3d: L_D %.4f, right on %.1f%% of the patches\n", step, st.ld / B, 100.0 * acc);
    }
    assert_true(acc > 0.9);
    free(real), free(fake), free(tmp);
    adv_free(&ad);
}

int main(void) {
#ifdef MG_HAVE_OPENMP
    omp_set_num_threads(1); /* tiny maps: threads only wait (see tests/test_train.c) */
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_oracle),
        cmocka_unit_test(test_init_is_seeded),
        cmocka_unit_test(test_deterministic_accumulates_and_refuses),
        cmocka_unit_test(test_tae_hook_neutral),
        cmocka_unit_test(test_checkpoint_aux),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_learns),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
