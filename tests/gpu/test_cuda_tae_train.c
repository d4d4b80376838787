/* The autoencoder's training on the GPU (src/cuda/tae_train.cu) against the CPU reference
 * (src/train/tae_train.c) on the tiny model: per-image losses and every autoencoder tensor's
 * gradient after one batched step, at 64x64 and at 40x56 (odd multiples of 8 down to a 5x7
 * latent), with bf16 tolerances (relative L2 per tensor; the worst is printed); the loss-only
 * pass; encode and decode against tae_encode/tae_decode (with a batch larger than the state's,
 * done in chunks); bad calls refused. Then the speed of a step for configs tiny and s, B=16 at
 * 128x128 (ms/step, images/s, TFLOP/s of the conv GEMMs). Needs a GPU; without one it says so
 * and passes. */
#include <cuda_runtime_api.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_train.h"
#include "model/forward.h"
#include "model/model.h"
#include "ops/ops.h"
#include "train/train.h"
#include "testutil.h"
#include "gpu_util.h"

#define GRAD_TOL 3e-2 /* relative L2 per tensor: bf16 operands through ~70 convs each way */
#define LOSS_TOL 1e-2 /* relative */
#define LAT_TOL 2e-2

static char model_path[512];
static train_params tp;
static cuda_params cp;
static cuda_tae_train *tt; /* B = 3 images of up to 64x64 */
static float *orig_param;  /* tp.param before the conv kernels were rounded to bf16 */
#define TB 3


static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int setup(void **state) {
    mg_config cfg;
    mg_config_named("tiny", &cfg);
    snprintf(model_path, sizeof model_path, "%s/tae_tiny.safetensors", tu_tmpdir());
    if (mg_model_init_file(model_path, &cfg, 11, 1) != MG_OK || train_params_load(&tp, model_path) != MG_OK) {
        fprintf(stderr, "test_cuda_tae_train: %s\n", mg_last_error());
        return -1;
    }
    /* The GPU's GEMMs read the conv kernels in bf16: the CPU computes with the same values, so
     * what is measured is the bf16 activations and gradients, not the rounding of the weights. */
    orig_param = malloc(tp.count * sizeof(float));
    memcpy(orig_param, tp.param, tp.count * sizeof(float));
    for (int i = 0; i < tp.dit_first; i++)
        if (tp.table[i].rank == 4) round_bf16(tp.param + tp.offset[i], train_params_numel(&tp, i));
    if (cuda_params_new(&cp, &tp) != MG_OK || cuda_tae_train_new(&tt, &cp, TB, 64, 64) != MG_OK) {
        fprintf(stderr, "test_cuda_tae_train: %s\n", mg_last_error());
        return -1;
    }
    printf("test_cuda_tae_train on %s: tiny (tae_ch %d), autoencoder tensors [0, %d), state for %d images of 64x64: "
           "%.1f MiB\n", cuda_params_device_name(&cp), tp.cfg.tae_ch, tp.dit_first, TB,
           cuda_tae_train_bytes(tt) / 1048576.0);
    return 0;
}

static int teardown(void **state) {
    cuda_tae_train_free(tt);
    cuda_params_free(&cp);
    train_params_free(&tp);
    free(orig_param);
    return 0;
}

static float g_hf; /* the Laplacian term's weight (--hf-loss) of the case being run */

/* The CPU's gradients (into out) and losses for n images, one by one, at the current tp.param. */
static void cpu_grads(float *out, float *loss, const float *img, int n, int H, int W, float scale) {
    size_t img_n = (size_t)H * W * 3;
    tae_train ct;
    TU_OK(tae_train_init(&ct, &tp, H, W));
    ct.hf = g_hf;
    train_zero_grad(&tp, 0, tp.n_tensors);
    for (int b = 0; b < n; b++) {
        TU_OK(tae_train_forward(&ct, img + b * img_n, H, W, &loss[b]));
        TU_OK(tae_train_backward(&ct, scale));
    }
    tae_train_free(&ct);
    memcpy(out, tp.grad, tp.count * sizeof(float));
}

/* One batched GPU step against the CPU, image by image, with the same scale.
 *
 * The tolerance per tensor: GRAD_TOL, or twice the CPU's own sensitivity where that is larger.
 * A bf16 forward flips some ReLUs whose input is near zero, and the gradient of the first
 * encoder layers comes back through ~70 of them; how much that moves a tensor's gradient is
 * measured here on the CPU in fp32, as the change that rounding the conv kernels to bf16
 * (and nothing else) makes. A wrong kernel gives errors of order 1, far above both. */
static void grads_case(int n, int H, int W, float scale, uint64_t seed) {
    size_t img_n = (size_t)H * W * 3, bytes = tp.count * sizeof(float);
    float *img = malloc(n * img_n * sizeof(float));
    tu_fill_uniform(img, n * img_n, 0.0f, 1.0f, seed);
    round_bf16(img, n * img_n); /* the GPU's first conv reads the image in bf16 */
    float cpu_loss[TB], l32[TB], gpu_loss[TB], gpu_loss2[TB];
    float *ref = malloc(bytes), *ref32 = malloc(bytes), *rounded = malloc(bytes);
    memcpy(rounded, tp.param, bytes);
    cpu_grads(ref, cpu_loss, img, n, H, W, scale);
    memcpy(tp.param, orig_param, bytes); /* the sensitivity: the same on the unrounded kernels */
    cpu_grads(ref32, l32, img, n, H, W, scale);
    memcpy(tp.param, rounded, bytes);
    /* GPU */
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    cuda_tae_train_set_hf(tt, g_hf);
    TU_OK(cuda_tae_train_step(tt, img, n, H, W, scale, gpu_loss));
    double flops = cuda_tae_train_flops(tt);
    TU_OK(cuda_tae_train_loss(tt, img, n, H, W, gpu_loss2)); /* must leave the gradients alone */
    TU_OK(cuda_params_download(&cp, &tp));
    cuda_tae_train_set_hf(tt, 0.0f);
    printf("  %dx%d, %d images, scale %.3g, hf %.3g (%.2f GFLOP in the step's GEMMs):\n", W, H, n, scale, g_hf,
           flops / 1e9);
    for (int b = 0; b < n; b++) {
        double r = fabs((double)gpu_loss[b] - cpu_loss[b]) / cpu_loss[b];
        printf("    loss[%d] gpu %.6f cpu %.6f rel %.1e (loss-only pass %.6f) %s\n", b, gpu_loss[b], cpu_loss[b], r,
               gpu_loss2[b], r < LOSS_TOL && gpu_loss2[b] == gpu_loss[b] ? "ok" : "FAIL");
        assert_true(r < LOSS_TOL);
        assert_true(gpu_loss2[b] == gpu_loss[b]);
    }
    /* every autoencoder tensor; the worst five printed, and the worst of each network */
    double worst[5] = {0}, wsens[5] = {0}, wnet[2] = {0}, snet[2] = {0}, wratio = 0;
    int wi[5] = {-1, -1, -1, -1, -1}, nbad = 0, n_loose = 0, wni[2] = {-1, -1};
    for (int i = 0; i < tp.dit_first; i++) {
        size_t o = tp.offset[i], ne = train_params_numel(&tp, i);
        double e = tu_rel_l2(tp.grad + o, ref + o, ne), sens = tu_rel_l2(ref32 + o, ref + o, ne);
        double tol = 2 * sens > GRAD_TOL ? 2 * sens : GRAD_TOL;
        n_loose += tol > GRAD_TOL;
        if (!(e <= tol)) nbad++;
        if (!(e / tol <= wratio)) wratio = e / tol;
        int net = strncmp(tp.table[i].name, "dec.", 4) == 0;
        if (!(e <= wnet[net])) wnet[net] = e, snet[net] = sens, wni[net] = i;
        for (int k = 0; k < 5; k++)
            if (!(e <= worst[k])) { /* NaN sorts first */
                for (int j = 4; j > k; j--) worst[j] = worst[j - 1], wsens[j] = wsens[j - 1], wi[j] = wi[j - 1];
                worst[k] = e, wsens[k] = sens, wi[k] = i;
                break;
            }
    }
    for (int k = 0; k < 5 && wi[k] >= 0; k++)
        printf("    grad %-22s rel L2 %.2e (cpu sensitivity %.2e)%s\n", tp.table[wi[k]].name, worst[k], wsens[k],
               k == 0 ? "  worst" : "");
    for (int k = 1; k >= 0; k--)
        if (wni[k] >= 0)
            printf("    worst of the %s: %-22s rel L2 %.2e (cpu sensitivity %.2e)\n", k ? "decoder" : "encoder",
                   tp.table[wni[k]].name, wnet[k], snet[k]);
    /* the DiT's gradients untouched */
    size_t dz = 0;
    for (size_t k = tp.offset[tp.dit_first]; k < tp.count; k++) dz += tp.grad[k] != 0.0f;
    printf("    %d of %d autoencoder tensors within tolerance (%.0e, or 2x the sensitivity for %d of them; worst "
           "error/tolerance %.2f); DiT gradients nonzero: %zu %s\n", tp.dit_first - nbad, tp.dit_first, GRAD_TOL,
           n_loose, wratio, dz, nbad == 0 && dz == 0 ? "ok" : "FAIL");
    assert_int_equal(nbad, 0);
    assert_int_equal(dz, 0);
    free(ref), free(ref32), free(rounded), free(img);
}

static void test_grads_64(void **state) { grads_case(2, 64, 64, 1.0f, 21); }
static void test_grads_40x56(void **state) { grads_case(3, 40, 56, 0.5f, 22); }
/* with the Laplacian term (--hf-loss 0.5): k_lap and the extra gradient in k_loss */
static void test_grads_hf(void **state) {
    g_hf = 0.5f;
    grads_case(2, 48, 40, 1.0f, 23);
    g_hf = 0.0f;
}

/* the gradients accumulate: two steps give twice one */
static void test_accumulate(void **state) {
    int H = 32, W = 48;
    float *img = malloc((size_t)H * W * 3 * sizeof(float)), l[1];
    tu_fill_uniform(img, (size_t)H * W * 3, 0, 1, 23);
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_tae_train_step(tt, img, 1, H, W, 1.0f, l));
    TU_OK(cuda_params_download(&cp, &tp));
    float *one = malloc(tp.count * sizeof(float));
    for (size_t k = 0; k < tp.count; k++) one[k] = 2.0f * tp.grad[k];
    TU_OK(cuda_tae_train_step(tt, img, 1, H, W, 1.0f, l));
    TU_OK(cuda_params_download(&cp, &tp));
    double e = tu_rel_l2(tp.grad, one, tp.count);
    printf("  two steps vs twice one: rel L2 %.1e %s\n", e, e < 1e-6 ? "ok" : "FAIL");
    assert_true(e < 1e-6);
    free(one), free(img);
}

/* --freeze-encoder: the backward stops at dec.in. The decoder's gradients are the same bits as
 * the full backward's, the encoder's stay as they were (zero here), the losses are the same. */
static void test_freeze_encoder(void **state) {
    int n = 2, H = 40, W = 56;
    size_t bytes = tp.count * sizeof(float);
    float *img = malloc((size_t)n * H * W * 3 * sizeof(float)), *full = malloc(bytes), l0[TB], l1[TB];
    tu_fill_uniform(img, (size_t)n * H * W * 3, 0, 1, 24);
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_tae_train_step(tt, img, n, H, W, 0.5f, l0));
    TU_OK(cuda_params_download(&cp, &tp));
    memcpy(full, tp.grad, bytes);
    cuda_tae_train_set_freeze_encoder(tt, 1);
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    mg_status st1 = cuda_tae_train_step(tt, img, n, H, W, 0.5f, l1);
    cuda_tae_train_set_freeze_encoder(tt, 0);
    TU_OK(st1);
    TU_OK(cuda_params_download(&cp, &tp));
    int d0 = train_params_find(&tp, "dec.in.weight");
    assert_true(d0 > 0);
    size_t dec0 = tp.offset[d0], dec1 = tp.offset[tp.dit_first], nz = 0, ndec = 0;
    for (size_t k = 0; k < dec0; k++) nz += tp.grad[k] != 0.0f;
    for (size_t k = dec0; k < dec1; k++) ndec += full[k] != 0.0f;
    int same = !memcmp(tp.grad + dec0, full + dec0, (dec1 - dec0) * sizeof(float));
    int lsame = !memcmp(l0, l1, (size_t)n * sizeof(float));
    printf("  frozen encoder: decoder gradients (%zu floats, %zu nonzero) %s the full backward's; encoder gradients "
           "nonzero %zu (0); losses %s %s\n", dec1 - dec0, ndec, same ? "the same bits as" : "DIFFER from", nz,
           lsame ? "equal" : "DIFFER", same && nz == 0 && lsame && ndec > 0 ? "ok" : "FAIL");
    assert_true(same && lsame && ndec > 0);
    assert_int_equal(nz, 0);
    free(img), free(full);
}

static void test_encode_decode(void **state) {
    int H = 40, W = 56, n = TB + 2; /* more than the state's batch: chunks */
    size_t hw = (size_t)H * W, lat_n = hw / 64 * tp.cfg.z_ch;
    uint8_t *frames = malloc(n * hw * 3), *gdec = malloc(n * hw * 3), *cdec = malloc(hw * 3);
    mg_rng r;
    mg_rng_seed(&r, 31);
    for (size_t i = 0; i < n * hw * 3; i++) frames[i] = (uint8_t)(mg_rng_next(&r) >> 56);
    float *glat = malloc(n * lat_n * 4), *clat = malloc(n * lat_n * 4), *img = malloc(hw * 3 * 4);
    memset(gdec, 0xAB, n * hw * 3);
    tu_fill_uniform(glat, n * lat_n, NAN, NAN, 1);
    TU_OK(cuda_tae_encode(tt, frames, n, H, W, glat));
    mg_model *m;
    TU_OK(mg_model_load(model_path, &m));
    float *work = malloc(tae_work_floats(&tp.cfg, H, W) * 4), *rec = malloc(hw * 3 * 4);
    for (int b = 0; b < n; b++) {
        rgb_u8_to_float(img, frames + b * hw * 3, hw * 3);
        tae_encode(m, clat + b * lat_n, img, work, H, W);
    }
    double e = tu_rel_l2(glat, clat, n * lat_n);
    printf("  encode %d frames %dx%d: latents rel L2 %.2e %s\n", n, W, H, e, e < LAT_TOL ? "ok" : "FAIL");
    assert_true(e < LAT_TOL);
    /* decode the CPU's latents on both */
    TU_OK(cuda_tae_decode(tt, clat, n, H, W, gdec));
    double sum = 0;
    int maxd = 0;
    for (int b = 0; b < n; b++) {
        tae_decode(m, rec, clat + b * lat_n, work, H, W);
        rgb_float_to_u8(cdec, rec, hw * 3);
        for (size_t i = 0; i < hw * 3; i++) {
            int d = abs((int)gdec[b * hw * 3 + i] - cdec[i]);
            sum += d;
            if (d > maxd) maxd = d;
        }
    }
    double mean = sum / (n * hw * 3);
    printf("  decode %d latents: frames differ by %.3f levels on average, %d at most %s\n", n, mean, maxd,
           mean < 1.0 && maxd <= 24 ? "ok" : "FAIL");
    assert_true(mean < 1.0 && maxd <= 24);
    mg_model_free(m);
    free(frames), free(gdec), free(cdec), free(glat), free(clat), free(img), free(work), free(rec);
}

static void test_bad_calls(void **state) {
    float img[64 * 64 * 3] = {0}, l[TB + 1];
    assert_int_equal(cuda_tae_train_step(tt, img, TB + 1, 8, 8, 1.0f, l), MG_ERR_ARG);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_train_step(tt, img, 1, 12, 16, 1.0f, l), MG_ERR_SHAPE);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_train_loss(tt, img, 1, 128, 64, l), MG_ERR_SHAPE);
    printf("  %s\n", mg_last_error());
    cuda_tae_train *bad = (cuda_tae_train *)1;
    assert_int_equal(cuda_tae_train_new(&bad, &cp, 2, 30, 64), MG_ERR_SHAPE);
    assert_null(bad);
    printf("  %s\n", mg_last_error());
}

/* ms per step (forward, backward, AdamW) for B = 16 at 128x128 */
static void bench(const char *config) {
    int B = 16, H = 128, W = 128, steps = 10;
    mg_config cfg;
    mg_config_named(config, &cfg);
    char path[600];
    snprintf(path, sizeof path, "%s/bench_%s.safetensors", tu_tmpdir(), config);
    train_params bp;
    cuda_params bc;
    cuda_tae_train *bt;
    TU_OK(mg_model_init_file(path, &cfg, 5, 1));
    TU_OK(train_params_load(&bp, path));
    TU_OK(cuda_params_new(&bc, &bp));
    TU_OK(cuda_tae_train_new(&bt, &bc, B, H, W));
    size_t n = (size_t)B * H * W * 3;
    float *img = malloc(n * 4), l[16];
    tu_fill_uniform(img, n, 0, 1, 41);
    adamw_opts o = adamw_defaults();
    double t_step = 0, t_fb = 0;
    for (int s = 0; s < steps + 2; s++) {
        double t0 = now_s();
        TU_OK(cuda_zero_grad(&bc, 0, bp.dit_first));
        TU_OK(cuda_tae_train_step(bt, img, B, H, W, 1.0f / B, l)); /* ends in a sync (the losses) */
        double t1 = now_s();
        TU_OK(cuda_grad_clip(&bc, 0, bp.dit_first, 1.0, NULL));
        TU_OK(cuda_adamw_step(&bc, 0, bp.dit_first, s + 1, 1e-4f, &o));
        TU_OK(cuda_params_sync(&bc));
        double t2 = now_s();
        if (s >= 2) t_step += t2 - t0, t_fb += t1 - t0; /* two warm-up steps */
    }
    double ms = 1e3 * t_step / steps, fb = 1e3 * t_fb / steps, fl = cuda_tae_train_flops(bt);
    printf("  %-4s tae_ch %-3d B=%d %dx%d: %.2f ms/step (%.2f forward+backward), %.0f images/s, %.1f GFLOP/step, "
           "%.1f TFLOP/s; loss %.4f; %.0f MiB\n", config, cfg.tae_ch, B, W, H, ms, fb, B / (ms / 1e3), fl / 1e9,
           fl / (fb / 1e3) / 1e12, l[0], cuda_tae_train_bytes(bt) / 1048576.0);
    /* the batch of 16 computes what the CPU does, image by image (first and last image), with
     * the weights the steps made */
    TU_OK(cuda_tae_train_loss(bt, img, B, H, W, l));
    TU_OK(cuda_params_download(&bc, &bp));
    tae_train ct;
    TU_OK(tae_train_init(&ct, &bp, H, W));
    for (int b = 0; b < B; b += B - 1) {
        float cl;
        TU_OK(tae_train_forward(&ct, img + (size_t)b * H * W * 3, H, W, &cl));
        double r = fabs((double)l[b] - cl) / cl;
        printf("       image %2d of the batch: loss gpu %.6f cpu %.6f rel %.1e %s\n", b, l[b], cl, r,
               r < LOSS_TOL ? "ok" : "FAIL");
        assert_true(r < LOSS_TOL);
    }
    tae_train_free(&ct);
    free(img);
    cuda_tae_train_free(bt);
    cuda_params_free(&bc);
    train_params_free(&bp);
}

static void test_speed(void **state) {
    bench("tiny");
    bench("s");
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_tae_train: skipped: no CUDA device found\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grads_64),      cmocka_unit_test(test_grads_40x56), cmocka_unit_test(test_grads_hf),
        cmocka_unit_test(test_accumulate),    cmocka_unit_test(test_freeze_encoder),
        cmocka_unit_test(test_encode_decode), cmocka_unit_test(test_bad_calls),   cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
