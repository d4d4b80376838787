/* The DiT stage's frozen encoder (src/cuda/train_encode.cu, cuda_tae_encoder_*) against the CPU's
 * tae_encode and the training autoencoder's cuda_tae_encode on the tiny model: latents of
 * random frames at 40x56 (a 5x7 latent) in chunks (five frames through an encoder made for
 * fewer, after a call at another size, so the gap rows between the frames of a chunk have
 * moved), frame by frame; bad calls refused; then the speed of both for the trainer's batch
 * (96 frames of 256x256: 16 clips x 6 frames) and their agreement there. Needs a GPU; without
 * one it says so and passes. */
#include <cuda_runtime_api.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "core/status.h"
#include "cuda/cuda_train.h"
#include "model/forward.h"
#include "model/model.h"
#include "ops/ops.h"
#include "train/train.h"
#include "testutil.h"

#define LAT_TOL 2e-2 /* relative L2: bf16 activations through 35 convs */

static char model_path[512];
static train_params tp;
static cuda_params cp;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void random_frames(uint8_t *f, size_t n, uint64_t seed) {
    mg_rng r;
    mg_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) f[i] = (uint8_t)(mg_rng_next(&r) >> 56);
}

static int setup(void **state) {
    mg_config cfg;
    mg_config_named("tiny", &cfg);
    snprintf(model_path, sizeof model_path, "%s/enc_tiny.safetensors", tu_tmpdir());
    if (mg_model_init_file(model_path, &cfg, 11, 1) != MG_OK || train_params_load(&tp, model_path) != MG_OK ||
        cuda_params_new(&cp, &tp) != MG_OK) {
        fprintf(stderr, "test_cuda_train_encode: %s\n", mg_last_error());
        return -1;
    }
    printf("test_cuda_train_encode on %s: tiny (tae_ch %d, z_ch %d)\n", cuda_params_device_name(&cp), tp.cfg.tae_ch,
           tp.cfg.z_ch);
    return 0;
}

static int teardown(void **state) {
    cuda_params_free(&cp);
    train_params_free(&tp);
    return 0;
}

/* CPU latents of n frames */
static void cpu_encode(const mg_model *m, float *lat, const uint8_t *frames, int n, int H, int W) {
    size_t hw = (size_t)H * W, lat_n = hw / 64 * tp.cfg.z_ch;
    float *img = malloc(hw * 3 * 4), *work = malloc(tae_work_floats(&tp.cfg, H, W) * 4);
    for (int b = 0; b < n; b++) {
        rgb_u8_to_float(img, frames + b * hw * 3, hw * 3);
        tae_encode(m, lat + b * lat_n, img, work, H, W);
    }
    free(img), free(work);
}

static void test_vs_cpu(void **state) {
    cuda_tae_encoder *e;
    TU_OK(cuda_tae_encoder_new(&e, &cp, 2, 64, 64)); /* chunks of 3 frames of 40x56 (48 x 56 with the gaps) */
    mg_model *m;
    TU_OK(mg_model_load(model_path, &m));
    /* first 2 frames of 64x64 (gap rows after row 64 of each), then 5 of 40x56 */
    for (int pass = 0; pass < 2; pass++) {
        int H = pass ? 40 : 64, W = pass ? 56 : 64, n = pass ? 5 : 2;
        size_t hw = (size_t)H * W, lat_n = hw / 64 * tp.cfg.z_ch;
        uint8_t *frames = malloc(n * hw * 3);
        random_frames(frames, n * hw * 3, 31 + pass);
        float *glat = malloc(n * lat_n * 4), *clat = malloc(n * lat_n * 4), *olat = malloc(n * lat_n * 4);
        tu_fill_uniform(glat, n * lat_n, NAN, NAN, 1); /* poisoned */
        TU_OK(cuda_tae_encoder_run(e, frames, n, H, W, glat));
        cpu_encode(m, clat, frames, n, H, W);
        double worst = 0;
        int wf = 0;
        for (int b = 0; b < n; b++) {
            double r = tu_rel_l2(glat + b * lat_n, clat + b * lat_n, lat_n);
            if (!(r <= worst)) worst = r, wf = b;
        }
        double all = tu_rel_l2(glat, clat, n * lat_n);
        /* the training autoencoder's encoder on the same frames */
        cuda_tae_train *tt;
        TU_OK(cuda_tae_train_new(&tt, &cp, 2, H, W));
        TU_OK(cuda_tae_encode(tt, frames, n, H, W, olat));
        cuda_tae_train_free(tt);
        double vs_old = tu_rel_l2(glat, olat, n * lat_n), old_cpu = tu_rel_l2(olat, clat, n * lat_n);
        printf("  %d frames %dx%d: latents vs tae_encode rel L2 %.2e (worst frame %d: %.2e); vs cuda_tae_encode "
               "%.2e (which is %.2e from the CPU) %s\n", n, W, H, all, wf, worst, vs_old, old_cpu,
               worst < LAT_TOL && vs_old < LAT_TOL ? "ok" : "FAIL");
        assert_true(worst < LAT_TOL);
        assert_true(vs_old < LAT_TOL);
        free(frames), free(glat), free(clat), free(olat);
    }
    mg_model_free(m);
    cuda_tae_encoder_free(e);
}

static void test_bad_calls(void **state) {
    cuda_tae_encoder *e, *bad = (cuda_tae_encoder *)1;
    TU_OK(cuda_tae_encoder_new(&e, &cp, 2, 32, 32));
    uint8_t frames[64 * 64 * 3] = {0};
    float lat[64 * 4];
    assert_int_equal(cuda_tae_encoder_run(e, frames, 1, 64, 64, lat), MG_ERR_SHAPE); /* larger than made for */
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_encoder_run(e, frames, 1, 12, 16, lat), MG_ERR_SHAPE);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_encoder_run(e, NULL, 1, 16, 16, lat), MG_ERR_ARG);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_encoder_run(NULL, frames, 1, 16, 16, lat), MG_ERR_ARG);
    assert_int_equal(cuda_tae_encoder_run(e, frames, 0, 16, 16, lat), MG_OK); /* nothing to do */
    assert_int_equal(cuda_tae_encoder_new(&bad, &cp, 2, 30, 64), MG_ERR_SHAPE);
    assert_null(bad);
    printf("  %s\n", mg_last_error());
    cuda_tae_encoder_free(e);
}

/* The trainer's encode: the inputs and the targets of a batch of 16 clips x 6 frames of 256x256,
 * 96 frames each call; the old path with its batch of 16, the new one in chunks of 32. */
static void test_speed(void **state) {
    int n = 96, H = 256, W = 256, reps = 3;
    size_t hw = (size_t)H * W, lat_n = hw / 64 * tp.cfg.z_ch;
    uint8_t *frames = malloc(n * hw * 3);
    /* smooth frames with noise, closer to video than white noise */
    for (int b = 0; b < n; b++)
        for (size_t i = 0; i < hw * 3; i++) {
            size_t y = i / 3 / W, x = i / 3 % W;
            frames[b * hw * 3 + i] = (uint8_t)((x * (b + 1) + y * (i % 3 + 1) + ((i * 2654435761u) >> 27)) & 255);
        }
    float *glat = malloc(n * lat_n * 4), *olat = malloc(n * lat_n * 4);
    cuda_tae_train *tt;
    cuda_tae_encoder *e;
    TU_OK(cuda_tae_train_new(&tt, &cp, 16, H, W));
    TU_OK(cuda_tae_encoder_new(&e, &cp, 32, H, W));
    double t_old = 0, t_new = 0;
    for (int r = 0; r <= reps; r++) {
        double t0 = now_s();
        TU_OK(cuda_tae_encode(tt, frames, n, H, W, olat));
        double t1 = now_s();
        TU_OK(cuda_tae_encoder_run(e, frames, n, H, W, glat));
        double t2 = now_s();
        if (r > 0) t_old += t1 - t0, t_new += t2 - t1; /* one warm-up */
    }
    t_old *= 1e3 / reps, t_new *= 1e3 / reps;
    double d = tu_rel_l2(glat, olat, n * lat_n);
    printf("  %d frames %dx%d, host u8 -> host latents: cuda_tae_encode (batch 16) %.2f ms (%.0f frames/s); "
           "cuda_tae_encoder (chunks of 32, %.0f MiB) %.2f ms (%.0f frames/s): %.2fx; latents rel L2 %.2e %s\n",
           n, W, H, t_old, n / (t_old / 1e3), cuda_tae_encoder_bytes(e) / 1048576.0, t_new, n / (t_new / 1e3),
           t_old / t_new, d, d < LAT_TOL ? "ok" : "FAIL");
    assert_true(d < LAT_TOL);
    cuda_tae_encoder_free(e);
    cuda_tae_train_free(tt);
    free(frames), free(glat), free(olat);
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_train_encode: skipped: no CUDA device found\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_cpu),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
