/* The DiT stage's frozen encoder (src/cuda/train_encode.cu, cuda_tae_encoder_*) against the CPU's
 * tae_encode and the training autoencoder's cuda_tae_encode on the tiny model: latents of
 * random frames at 40x56 (a 5x7 latent) in chunks (five frames through an encoder made for
 * fewer, after a call at another size, so the gap rows between the frames of a chunk have
 * moved), frame by frame; bad calls refused; then the speed of both for the trainer's batch
 * (96 frames of 256x256: 16 clips x 6 frames) and their agreement there; the toon and sketch
 * targets it makes on the way (test_styles), and their cost at that size. Needs a GPU; without
 * one it says so and passes. */
#include <cuda_runtime_api.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "core/status.h"
#include "cuda/cuda_train.h"
#include "eval/degrade.h"
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
        TU_OK(cuda_tae_encoder_run(e, frames, NULL, n, H, W, glat));
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
    assert_int_equal(cuda_tae_encoder_run(e, frames, NULL, 1, 64, 64, lat), MG_ERR_SHAPE); /* larger than made for */
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_encoder_run(e, frames, NULL, 1, 12, 16, lat), MG_ERR_SHAPE);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_encoder_run(e, NULL, NULL, 1, 16, 16, lat), MG_ERR_ARG);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_encoder_run(NULL, frames, NULL, 1, 16, 16, lat), MG_ERR_ARG);
    assert_int_equal(cuda_tae_encoder_run(e, frames, NULL, 0, 16, 16, lat), MG_OK); /* nothing to do */
    uint8_t styles[1] = {STYLE_TOON};
    assert_int_equal(cuda_tae_encoder_style(e, frames, NULL, 1, 16, 16, frames), MG_ERR_ARG); /* no styles */
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_tae_encoder_style(e, frames, styles, 1, 64, 64, frames), MG_ERR_SHAPE);
    assert_int_equal(cuda_tae_encoder_new(&bad, &cp, 2, 30, 64), MG_ERR_SHAPE);
    assert_null(bad);
    printf("  %s\n", mg_last_error());
    cuda_tae_encoder_free(e);
}

/* Frames like video at the edges the styles care about: smooth ramps, hard-edged blocks, some
 * noise (seed), and a saturated corner */
static void scene_frames(uint8_t *f, int n, int H, int W, uint64_t seed) {
    mg_rng r;
    mg_rng_seed(&r, seed);
    for (int b = 0; b < n; b++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < 3; c++) {
                    int v = (x * (2 + c) + y * (b + 1)) % 200 + ((x / 9 + y / 7 + b) % 3 == 0 ? 55 : 0);
                    v += (int)(mg_rng_next(&r) >> 60) - 8;
                    if (x < 6 && y < 6) v = c == b % 3 ? 255 : 0;
                    f[(((size_t)b * H + y) * W + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
}

/* The targets the trainer has the GPU make (src/cuda/style.cu): byte for byte style_apply's,
 * toon and sketch, on video-like and on random frames, in chunks (5 frames through an encoder
 * made for 2 of 64x64) at two sizes; frames without a style left as they were; and the latents
 * of _run with styles those of the CPU-styled frames, bit for bit. */
static void test_styles(void **state) {
    cuda_tae_encoder *e;
    TU_OK(cuda_tae_encoder_new(&e, &cp, 2, 64, 64));
    static const char *names[] = {"none", "style:toon", "style:sketch"};
    for (int pass = 0; pass < 3; pass++) {
        int H = pass == 1 ? 40 : 64, W = pass == 1 ? 56 : 64, n = 5;
        size_t fb = (size_t)H * W * 3, lat_n = (size_t)H * W / 64 * tp.cfg.z_ch;
        uint8_t *frames = malloc(n * fb), *want = malloc(n * fb), *got = malloc(n * fb), styles[5];
        if (pass == 2) random_frames(frames, n * fb, 77);
        else scene_frames(frames, n, H, W, 5 + pass);
        for (int b = 0; b < n; b++) {
            const char *p = names[(b + pass) % 3];
            styles[b] = (uint8_t)style_kind(p);
            TU_OK(style_apply(p, frames + b * fb, want + b * fb, W, H));
        }
        memset(got, 0x5a, n * fb); /* poisoned */
        TU_OK(cuda_tae_encoder_style(e, frames, styles, n, H, W, got));
        size_t diff = 0, first = 0;
        for (size_t i = 0; i < n * fb; i++)
            if (got[i] != want[i] && !diff++) first = i;
        float *glat = malloc(n * lat_n * 4), *clat = malloc(n * lat_n * 4);
        TU_OK(cuda_tae_encoder_run(e, frames, styles, n, H, W, glat));
        TU_OK(cuda_tae_encoder_run(e, want, NULL, n, H, W, clat));
        int same = memcmp(glat, clat, n * lat_n * 4) == 0;
        printf("  %d %s frames %dx%d, styles %d %d %d %d %d: %zu of %zu bytes differ from style_apply", n,
               pass == 2 ? "random" : "scene", W, H, styles[0], styles[1], styles[2], styles[3], styles[4], diff, n * fb);
        if (diff) printf(" (first: byte %zu, %d for %d)", first, got[first], want[first]);
        printf("; latents %s %s\n", same ? "bit-identical" : "DIFFER", !diff && same ? "ok" : "FAIL");
        assert_int_equal(diff, 0);
        assert_true(same);
        free(frames), free(want), free(got), free(glat), free(clat);
    }
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
        TU_OK(cuda_tae_encoder_run(e, frames, NULL, n, H, W, glat));
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
    /* every target styled, toon and sketch in turn: the encode's extra cost, against the CPU's
     * (style_apply, one thread, a frame of each) */
    uint8_t *styles = malloc(n), *one = malloc(hw * 3);
    for (int b = 0; b < n; b++) styles[b] = b % 2 ? STYLE_SKETCH : STYLE_TOON;
    double t_sty = 0, t0 = now_s();
    for (int r = 0; r <= reps; r++) {
        double t1 = now_s();
        TU_OK(cuda_tae_encoder_run(e, frames, styles, n, H, W, glat));
        if (r > 0) t_sty += now_s() - t1;
    }
    t_sty *= 1e3 / reps;
    t0 = now_s();
    TU_OK(style_apply("style:toon", frames, one, W, H));
    double t_toon = (now_s() - t0) * 1e3;
    t0 = now_s();
    TU_OK(style_apply("style:sketch", frames, one, W, H));
    double t_sketch = (now_s() - t0) * 1e3;
    printf("  the same %d targets styled on the way (toon, sketch in turn): %.2f ms, +%.2f ms; the CPU: toon %.2f ms, "
           "sketch %.2f ms a frame, one thread\n", n, t_sty, t_sty - t_new, t_toon, t_sketch);
    free(styles), free(one);
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
        cmocka_unit_test(test_styles),
        cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
