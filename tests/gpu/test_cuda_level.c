/* The autoencoder's small levels as one cluster-resident launch (src/cuda/conv_level.cu,
 * cu_tae_level), issue 4:
 *   - every version of the kernel, n = 1..3 Blocks (x = relu(c3(relu(c2(relu(c1 x)))) + x)) at 64x64 and 32x32 with 64 and
 *     32 channels and at odd sizes (bands of unequal height, widths that are not a multiple of
 *     16, one-row bands), on random weights and biases, against the CPU twin (conv3x3_forward,
 *     the intermediate maps rounded to bf16 as the GPU stores them) and against the per-conv
 *     path (three cu_conv3x3_igemm launches per Block) on the same GPU: relative L2 within
 *     bf16 tolerance overall and in every image row and column (an unwritten band or column
 *     keeps its input, which is far off), no NaN
 *   - sizes it does not take (C 48, 128x128x64) and bad Block counts: cu_tae_level_ok says no
 *     and cu_tae_level fails with a message and leaves x as it was
 *   - frames of config s at 256x256 (its 64x64 and 32x32 levels run the kernel): the stream
 *     with MG_CUDA_LEVEL=2 (everywhere) against MG_CUDA_LEVEL=0 (u8 frames and latents), its
 *     CUDA graph replay against eager launches, bit for bit, the kernel's launch counts, and
 *     what the switch's settings take
 * Skips cleanly (exit 0) without a GPU. */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_stream.h"
#include "model/model.h"
#include "ops/ops.h"
#include "testutil.h"
#include "gpu_util.h"

#define TOL 1e-2      /* relative L2, bf16 storage between convs, fp32 accumulation */
#define TOL_LINE 3e-2 /* the same in one image row or column */
#define FRAME_TOL 5e-2
#define LATENT_TOL 1e-2

/* out = bf16(relu(conv(in) + b [+ res])), as the GPU stores each map */
static void cpu_conv_relu(float *out, const float *in, const float *w, const float *b, const float *res, int H, int W,
                          int C) {
    float *o = malloc((size_t)H * W * C * 4);
    cpu_conv(o, in, w, b, H, W, C, C, 1);
    for (size_t i = 0; i < (size_t)H * W * C; i++) {
        float v = o[i] + (res ? res[i] : 0.0f);
        out[i] = v > 0 ? v : 0;
    }
    round_bf16(out, (size_t)H * W * C);
    free(o);
}

/* relative L2 of got against ref overall, and the worst image row and column; NaN fails */
static int check(const char *name, const float *got, const float *ref, int H, int W, int C) {
    size_t n = (size_t)H * W * C, nan = 0;
    double num = 0, den = 0, worst_line = 0;
    double *rn = calloc(H + W, sizeof(double)), *rd = calloc(H + W, sizeof(double));
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isinf(got[i])) { nan++; continue; }
        int y = (int)(i / ((size_t)W * C)), x = (int)(i / C % W);
        double e = (double)got[i] - ref[i], e2 = e * e, r2 = (double)ref[i] * ref[i];
        num += e2, den += r2;
        rn[y] += e2, rd[y] += r2, rn[H + x] += e2, rd[H + x] += r2;
    }
    for (int l = 0; l < H + W; l++) {
        double r = sqrt(rn[l] / (rd[l] > 0 ? rd[l] : 1e-30));
        if (r > worst_line) worst_line = r;
    }
    double r = nan ? INFINITY : sqrt(num / (den > 0 ? den : 1e-300));
    int ok = r <= TOL && worst_line <= TOL_LINE && !nan;
    printf("  %-52s rel L2 %.2e, worst row/column %.2e%s %s\n", name, r, worst_line, nan ? " NaN/unwritten!" : "",
           ok ? "ok" : "FAIL");
    free(rn), free(rd);
    return ok;
}

static void test_level_blocks(void **state) {
    (void)state;
    /* H, W, C, Blocks */
    static const int cases[][4] = {{64, 64, 64, 3}, {32, 32, 64, 3}, {64, 64, 32, 3}, {32, 32, 32, 2},
                                   {37, 29, 64, 2}, {23, 41, 32, 1}, {5, 7, 64, 1},   {8, 200, 64, 1},
                                   {64, 64, 64, 1}, {17, 64, 64, 3}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int H = cases[ci][0], W = cases[ci][1], C = cases[ci][2], nb = cases[ci][3];
        if (!cu_tae_level_ok(H, W, C)) { /* every case fits an H100/H200; elsewhere say so */
            printf("  level %dx%dx%d: not taken on this card (no clusters of this size), skipped\n", W, H, C);
            continue;
        }
        size_t n = (size_t)H * W * C, nw = (size_t)C * C * 9;
        float *x = rnd(n, -1, 1);
        round_bf16(x, n);
        bf16_t *dw[9];
        float *w[9], *b[9], *db[9];
        for (int i = 0; i < 3 * nb; i++) {
            w[i] = rnd(nw, -0.05f, 0.05f), b[i] = rnd(C, -0.2f, 0.2f);
            dw[i] = up_conv_w(w[i], C, C), db[i] = up_f32(b[i], C);
        }
        /* CPU twin */
        float *ref = malloc(n * 4), *t1 = malloc(n * 4), *t2 = malloc(n * 4);
        memcpy(ref, x, n * 4);
        for (int k = 0; k < nb; k++) {
            cpu_conv_relu(t1, ref, w[3 * k], b[3 * k], NULL, H, W, C);
            cpu_conv_relu(t2, t1, w[3 * k + 1], b[3 * k + 1], NULL, H, W, C);
            cpu_conv_relu(ref, t2, w[3 * k + 2], b[3 * k + 2], ref, H, W, C);
        }
        /* the per-conv path */
        bf16_t *px = up_bf16(x, n), *pt1 = poisoned(n * 2), *pt2 = poisoned(n * 2);
        for (int k = 0; k < nb; k++) {
            TU_OK(cu_conv3x3_igemm(pt1, px, dw[3 * k], db[3 * k], NULL, H, W, C, C, 1, 0, 1, st));
            TU_OK(cu_conv3x3_igemm(pt2, pt1, dw[3 * k + 1], db[3 * k + 1], NULL, H, W, C, C, 1, 0, 1, st));
            TU_OK(cu_conv3x3_igemm(px, pt2, dw[3 * k + 2], db[3 * k + 2], px, H, W, C, C, 1, 0, 1, st));
        }
        float *per = down_bf16(px, n);
        char name[128];
        snprintf(name, sizeof name, "per-conv path %dx%dx%d, %d Block%s vs CPU", W, H, C, nb, nb > 1 ? "s" : "");
        int ok = check(name, per, ref, H, W, C);
        /* every version of the level kernel, in place on a fresh copy */
        for (int v = 1; v <= CU_LEVEL_VERSIONS; v++) {
            if (!cu_tae_level_cluster(v, H, W, C)) {
                printf("  level v%d %dx%dx%d: does not apply\n", v, W, H, C);
                continue;
            }
            bf16_t *dx = up_bf16(x, n);
            TU_OK(cu_tae_level_v(v, dx, (const bf16_t *const *)dw, (const float *const *)db, nb, H, W, C, st));
            float *got = down_bf16(dx, n);
            snprintf(name, sizeof name, "level v%d %dx%dx%d, %d Block%s (cluster %d) vs CPU", v, W, H, C, nb,
                     nb > 1 ? "s" : "", cu_tae_level_cluster(v, H, W, C));
            ok &= check(name, got, ref, H, W, C);
            snprintf(name, sizeof name, "level v%d %dx%dx%d, %d Block%s vs per-conv path", v, W, H, C, nb,
                     nb > 1 ? "s" : "");
            ok &= check(name, got, per, H, W, C);
            free(got);
            cudaFree(dx);
        }
        assert_true(ok);
        for (int i = 0; i < 3 * nb; i++) free(w[i]), free(b[i]), cudaFree(dw[i]), cudaFree(db[i]);
        free(x), free(ref), free(t1), free(t2), free(per);
        cudaFree(px), cudaFree(pt1), cudaFree(pt2);
    }
}

static void test_level_refuses(void **state) {
    (void)state;
    assert_false(cu_tae_level_ok(64, 64, 48));
    assert_false(cu_tae_level_ok(128, 128, 64));
    assert_false(cu_tae_level_ok(0, 64, 64));
    assert_int_equal(cu_tae_level_cluster(0, 128, 128, 64), 0);
    assert_int_equal(cu_tae_level_cluster(CU_LEVEL_VERSIONS + 1, 32, 32, 64), 0);
    int H = 32, W = 32, C = 64;
    size_t n = (size_t)H * W * C;
    float *x = rnd(n, -1, 1), *w = rnd((size_t)C * C * 9, -0.05f, 0.05f), *b = rnd(C, -0.1f, 0.1f);
    bf16_t *dx = up_bf16(x, n), *dw1 = up_conv_w(w, C, C);
    float *db1 = up_f32(b, C);
    const bf16_t *dw[12];
    const float *db[12];
    for (int i = 0; i < 12; i++) dw[i] = dw1, db[i] = db1;
    assert_int_equal(cu_tae_level(dx, dw, db, 0, H, W, C, st), MG_ERR_UNSUPPORTED);
    assert_int_equal(cu_tae_level(dx, dw, db, CU_LEVEL_MAXBLOCKS + 1, H, W, C, st), MG_ERR_UNSUPPORTED);
    printf("  refused: %s\n", mg_last_error());
    assert_int_equal(cu_tae_level(dx, dw, db, 1, 128, 128, C, st), MG_ERR_UNSUPPORTED);
    printf("  refused: %s\n", mg_last_error());
    float *got = down_bf16(dx, n);
    assert_memory_equal(got, x, n * 4); /* x untouched */
    free(x), free(w), free(b), free(got);
    cudaFree(dx), cudaFree(dw1), cudaFree(db1);
}

static cuda_stream *new_stream(mg_model *m, const cuda_stream_cfg *cc, int mode) {
    cuda_stream *s = NULL;
    TU_OK(cuda_stream_new(m, cc, &s));
    cuda_stream_set_mode(s, mode);
    return s;
}

static void test_level_frames(void **state) {
    (void)state;
    /* first of the tests, so that the level kernel's plan is made inside the first graph
     * capture, as in mirage bench */
    const int W = 256, H = 256, T = 3;
    mg_model *m = load_model("s", 11);
    const mg_config *c = mg_model_config(m);
    cuda_stream_cfg cc = {W, H, 2, c->ring, 1.0f};
    setenv("MG_GEMM_AUTOTUNE", "0", 1); /* the same GEMM algorithms in every stream */
    cuda_stream *s0 = new_stream(m, &cc, CUDA_MODE_GRAPH), *s1 = new_stream(m, &cc, CUDA_MODE_GRAPH);
    cuda_stream *s1e = new_stream(m, &cc, CUDA_MODE_EAGER);
    unsetenv("MG_GEMM_AUTOTUNE");
    int prow = model_prompt_index(m, "restore");
    size_t img = (size_t)W * H * 3, lat = (size_t)(H / 8) * (W / 8) * c->z_ch;
    uint8_t *in = malloc(img * T), *o0 = malloc(img * T), *o1 = malloc(img * T), *o1e = malloc(img * T);
    float *noise = malloc(lat * 4 * T), *ctxn = malloc(lat * 4 * T), *z0 = malloc(lat * 4 * T), *z1 = malloc(lat * 4 * T);
    float *z1e = malloc(lat * 4 * T), *f0 = malloc(img * 4), *f1 = malloc(img * 4);
    mg_rng r;
    mg_rng_seed(&r, 5);
    frame_inputs(&r, in, img * T, noise, ctxn, lat * T); /* every frame's at once */
    memset(o1, 0xAB, img * T), memset(o1e, 0xCD, img * T);
    /* each stream's frames under its own setting (the graph is captured at the first frame) */
    struct { cuda_stream *s; const char *lv; uint8_t *o; float *z; } runs[3] = {
        {s0, "0", o0, z0}, {s1, "2", o1, z1}, {s1e, "2", o1e, z1e}}; /* 2: the level kernel wherever it applies */
    long launches[3];
    for (int k = 0; k < 3; k++) {
        setenv("MG_CUDA_LEVEL", runs[k].lv, 1);
        long before = cu_tae_level_launches();
        for (int t = 0; t < T; t++) {
            TU_OK(cuda_stream_step(runs[k].s, in + img * t, runs[k].o + img * t, noise + lat * t, ctxn + lat * t, prow, 0));
            TU_OK(cuda_stream_latent(runs[k].s, runs[k].z + lat * t));
        }
        launches[k] = cu_tae_level_launches() - before;
    }
    unsetenv("MG_CUDA_LEVEL");
    int ok = 1;
    for (int t = 0; t < T; t++) {
        for (size_t i = 0; i < img; i++) f0[i] = o0[img * t + i], f1[i] = o1[img * t + i];
        double ef = 0, ez = 0, nf = 0, dz = 0, nz = 0;
        for (size_t i = 0; i < img; i++) ef += (f1[i] - f0[i]) * (double)(f1[i] - f0[i]), nf += (double)f0[i] * f0[i];
        for (size_t i = 0; i < lat; i++) {
            double d = (double)z1[lat * t + i] - z0[lat * t + i];
            dz += d * d, nz += (double)z0[lat * t + i] * z0[lat * t + i];
        }
        ef = sqrt(ef / (nf > 0 ? nf : 1)), ez = sqrt(dz / (nz > 0 ? nz : 1));
        int same = !memcmp(o1 + img * t, o1e + img * t, img) && !memcmp(z1 + lat * t, z1e + lat * t, lat * 4);
        printf("  s %dx%d frame %d: level vs per-conv rel L2 u8 %.2e (bound %.0e), latent %.2e (bound %.0e); graph == "
               "eager: %s\n", W, H, t, ef, FRAME_TOL, ez, LATENT_TOL, same ? "yes" : "NO");
        ok &= ef <= FRAME_TOL && ez <= LATENT_TOL && same;
    }
    /* where the card takes the kernel, the level streams ran it: 4 launches a frame (the 64x64
     * and 32x32 levels of encode and decode), captured into the graph (launched again only
     * when the stream recaptures, not every frame), every frame in eager mode; the per-conv
     * stream none. The two paths multiply and add in the same order,
     * so they may agree bit for bit (reported, not required). */
    int taken = cu_tae_level_ok(64, 64, 64) && cu_tae_level_ok(32, 32, 64);
    printf("  level kernel taken on this card: %s (cluster %d at 64x64, %d at 32x32); level launches: per-conv "
           "stream %ld, graph stream %ld (captured), eager stream %ld; level == per-conv bit for bit: %s\n",
           taken ? "yes" : "no", cu_tae_level_cluster(0, 64, 64, 64), cu_tae_level_cluster(0, 32, 32, 64), launches[0],
           launches[1], launches[2], memcmp(o0, o1, img * T) || memcmp(z0, z1, lat * 4 * T) ? "no" : "yes");
    ok &= launches[0] == 0 && launches[2] == (taken ? 4 * T : 0);
    ok &= taken ? launches[1] >= 4 && launches[1] % 4 == 0 && launches[1] < 4 * T : launches[1] == 0;
    /* the switch: 0 never, 2 wherever it applies, 1 a subset of that */
    setenv("MG_CUDA_LEVEL", "0", 1);
    ok &= !cu_tae_level_use(32, 32, 64);
    setenv("MG_CUDA_LEVEL", "2", 1);
    ok &= cu_tae_level_use(64, 64, 64) == taken && cu_tae_level_use(32, 32, 64) == taken;
    ok &= !cu_tae_level_use(128, 128, 64);
    setenv("MG_CUDA_LEVEL", "1", 1);
    ok &= cu_tae_level_use(64, 64, 64) <= taken && cu_tae_level_use(32, 32, 64) <= taken;
    printf("  MG_CUDA_LEVEL=1 (the default) takes 64x64x64: %d, 32x32x64: %d\n", cu_tae_level_use(64, 64, 64),
           cu_tae_level_use(32, 32, 64));
    unsetenv("MG_CUDA_LEVEL");

    assert_true(ok);
    cuda_stream_free(s0), cuda_stream_free(s1), cuda_stream_free(s1e);
    mg_model_free(m);
    free(in), free(o0), free(o1), free(o1e), free(noise), free(ctxn), free(z0), free(z1), free(z1e), free(f0), free(f1);
}

static int setup(void **state) {
    (void)state;
    seed_ctr = 7000;
    return gpu_setup("test_cuda_level");
}

static int teardown(void **state) {
    (void)state;
    return gpu_teardown();
}

int main(void) {
    if (gpu_absent("test_cuda_level")) return 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_frames),
        cmocka_unit_test(test_level_blocks),
        cmocka_unit_test(test_level_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
