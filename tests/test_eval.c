/* The evaluation (issue 6): every metric against hand-computed values (SSIM also against an
 * independent, direct double-precision implementation written here), the sequence checks
 * (drift slope, collapse / explosion / freeze windows) on synthetic series, the degradations and
 * styles (deterministic, shaped right), the PNG writer, and `mirage eval` end to end on a fresh
 * tiny model: testsrc at 64x48 (30 frames), and a short y4m clip played back and forth with two models and
 * the dream prompt. The report must exist and its metrics.json must parse with the expected
 * keys. Sizes are small: the whole file runs in a few seconds on 2 cores. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef MG_HAVE_PNG
#include <png.h>
#endif

#include "core/rng.h"
#include "eval/degrade.h"
#include "eval/eval.h"
#include "eval/files.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "io/source.h"
#include "io/testsrc.h"
#include "io/y4m.h"
#include "testutil.h"

static uint8_t *frame_new(int W, int H) { return calloc((size_t)W * H * 3 + SOURCE_RGB_PAD, 1); }

static void fill_random(uint8_t *p, size_t n, uint64_t seed) {
    mg_rng r;
    mg_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(mg_rng_next(&r) >> 56);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* ---- per-frame metrics ------------------------------------------------------------------ */

static void test_psnr_known(void **state) {
    (void)state;
    enum { N = 300 };
    uint8_t a[N], b[N];
    memset(a, 0, N);
    memset(b, 10, N);
    /* MSE 100: PSNR = 10 log10(255^2 / 100) = 10 log10(650.25) */
    assert_true(fabs(metric_mse(a, b, N) - 100.0) < 1e-12);
    double p = metric_psnr(a, b, N);
    printf("  psnr of MSE 100: %.6f dB (hand: 28.130804)\n", p);
    assert_true(fabs(p - 28.1308036) < 1e-6);
    /* half the bytes off by 2, half exact: MSE 2, PSNR = 10 log10(32512.5) */
    for (int i = 0; i < N; i++) b[i] = (uint8_t)(i % 2 ? 2 : 0);
    assert_true(fabs(metric_mse(a, b, N) - 2.0) < 1e-12);
    assert_true(fabs(metric_psnr(a, b, N) - 45.1205037) < 1e-6);
    /* identical: capped */
    assert_true(metric_psnr(a, a, N) == METRIC_PSNR_MAX);
    assert_true(metric_psnr_from_mse(0) == METRIC_PSNR_MAX);
    assert_true(metric_psnr_from_mse(1e-30) == METRIC_PSNR_MAX);
    /* all 255 vs all 0: MSE 65025, PSNR 0 */
    memset(b, 255, N);
    assert_true(fabs(metric_psnr(a, b, N)) < 1e-12);
}

/* Direct SSIM: for every 11x11 window, the 2D Gaussian weights normalised over the window, the
 * weighted means, then two-pass weighted (co)variances. No separable filtering, no E[x^2]-mu^2. */
static double ssim_reference(const uint8_t *a, const uint8_t *b, int W, int H) {
    double *x = malloc((size_t)W * H * sizeof *x), *y = malloc((size_t)W * H * sizeof *y);
    for (int i = 0; i < W * H; i++) {
        x[i] = 0.299 * a[3 * i] + 0.587 * a[3 * i + 1] + 0.114 * a[3 * i + 2];
        y[i] = 0.299 * b[3 * i] + 0.587 * b[3 * i + 1] + 0.114 * b[3 * i + 2];
    }
    double w[11][11], ws = 0;
    for (int i = 0; i < 11; i++)
        for (int j = 0; j < 11; j++) ws += w[i][j] = exp(-((i - 5) * (i - 5) + (j - 5) * (j - 5)) / (2 * 1.5 * 1.5));
    const double C1 = 6.5025, C2 = 58.5225; /* (0.01*255)^2, (0.03*255)^2 */
    double total = 0;
    for (int y0 = 0; y0 + 11 <= H; y0++)
        for (int x0 = 0; x0 + 11 <= W; x0++) {
            double mx = 0, my = 0;
            for (int i = 0; i < 11; i++)
                for (int j = 0; j < 11; j++) {
                    double ww = w[i][j] / ws;
                    mx += ww * x[(y0 + i) * W + x0 + j], my += ww * y[(y0 + i) * W + x0 + j];
                }
            double vx = 0, vy = 0, cxy = 0;
            for (int i = 0; i < 11; i++)
                for (int j = 0; j < 11; j++) {
                    double ww = w[i][j] / ws, dx = x[(y0 + i) * W + x0 + j] - mx, dy = y[(y0 + i) * W + x0 + j] - my;
                    vx += ww * dx * dx, vy += ww * dy * dy, cxy += ww * dx * dy;
                }
            total += (2 * mx * my + C1) * (2 * cxy + C2) / ((mx * mx + my * my + C1) * (vx + vy + C2));
        }
    free(x);
    free(y);
    return total / ((double)(W - 10) * (H - 10));
}

static void test_ssim(void **state) {
    (void)state;
    enum { W = 40, H = 30 };
    uint8_t *a = frame_new(W, H), *b = frame_new(W, H);
    double *scratch = malloc(metric_ssim_scratch(W, H) * sizeof *scratch);
    /* identical images: exactly 1 */
    assert_int_equal(testsrc_render(a, W, H, 3), MG_OK);
    double s = metric_ssim(a, a, W, H, scratch);
    printf("  ssim(a, a) = %.15f\n", s);
    assert_true(fabs(s - 1.0) < 1e-12);
    /* flat images 100 and 50: no variance, SSIM = (2*100*50 + C1) / (100^2 + 50^2 + C1) */
    memset(a, 100, W * H * 3);
    memset(b, 50, W * H * 3);
    double hand = (10000 + 6.5025) / (12500 + 6.5025);
    s = metric_ssim(a, b, W, H, scratch);
    printf("  ssim(flat 100, flat 50) = %.12f (hand %.12f)\n", s, hand);
    assert_true(fabs(s - hand) < 1e-9);
    /* a scene and a noisy, shifted copy: against the direct reference */
    assert_int_equal(testsrc_render(a, W, H, 5), MG_OK);
    assert_int_equal(testsrc_render(b, W, H, 6), MG_OK);
    assert_int_equal(degrade_noise(b, W, H, 12.0f, 77), MG_OK);
    double ref = ssim_reference(a, b, W, H);
    s = metric_ssim(a, b, W, H, scratch);
    printf("  ssim(scene, noisy next frame) = %.12f, direct reference %.12f, diff %.2e\n", s, ref, fabs(s - ref));
    assert_true(fabs(s - ref) < 1e-9);
    assert_true(s > 0.1 && s < 0.95);
    /* random vs random: near 0 */
    fill_random(a, W * H * 3, 1);
    fill_random(b, W * H * 3, 2);
    s = metric_ssim(a, b, W, H, scratch);
    ref = ssim_reference(a, b, W, H);
    printf("  ssim(random, random) = %.6f (reference %.6f)\n", s, ref);
    assert_true(fabs(s - ref) < 1e-9 && fabs(s) < 0.1);
    /* smaller than the window: one global window with uniform weights, by hand: a = 0/200
     * checkerboard (mean 100, var 10000), b = a/2 (mean 50, var 2500, cov 5000) */
    enum { w = 8, h = 6 };
    uint8_t sa[w * h * 3], sb[w * h * 3];
    for (int i = 0; i < w * h; i++) {
        uint8_t v = ((i % w + i / w) % 2) ? 200 : 0;
        memset(sa + 3 * i, v, 3);
        memset(sb + 3 * i, v / 2, 3);
    }
    double small_scratch[2 * w * h];
    assert_true(metric_ssim_scratch(w, h) <= 2 * w * h);
    double l = (2 * 100.0 * 50 + 6.5025) / (100.0 * 100 + 50 * 50 + 6.5025);
    double cs = (2 * 5000 + 58.5225) / (10000 + 2500 + 58.5225);
    s = metric_ssim(sa, sb, w, h, small_scratch);
    printf("  ssim 8x6 (one window) = %.12f (hand %.12f)\n", s, l * cs);
    assert_true(fabs(s - l * cs) < 1e-9);
    free(a);
    free(b);
    free(scratch);
}

static void test_stats_detail_change(void **state) {
    (void)state;
    enum { W = 10, H = 8 };
    uint8_t img[W * H * 3], img2[W * H * 3];
    /* R: left half 0, right half 255; G: 40 everywhere; B: 7 */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = img + (y * W + x) * 3;
            p[0] = x < W / 2 ? 0 : 255, p[1] = 40, p[2] = 7;
        }
    double mean[3], std[3];
    metric_channel_stats(img, W, H, mean, std);
    assert_true(fabs(mean[0] - 127.5) < 1e-12 && fabs(std[0] - 127.5) < 1e-12);
    assert_true(fabs(mean[1] - 40) < 1e-12 && std[1] == 0);
    assert_true(fabs(mean[2] - 7) < 1e-12 && std[2] == 0);
    /* detail: one grey pixel of value 90 in a black frame, inside: the Laplacian is 360 there
     * and -90 at its four neighbours, so the sum of squares is 16*8100 + 4*8100 over 8*6 pixels */
    memset(img, 0, sizeof img);
    memset(img + (3 * W + 4) * 3, 90, 3);
    double d = metric_detail(img, W, H), hand = 20.0 * 8100 / ((W - 2) * (H - 2));
    printf("  detail of one 90-level dot: %.9f (hand %.9f)\n", d, hand);
    assert_true(fabs(d - hand) < 1e-6 * hand);
    assert_true(metric_detail(img, 2, 2) == 0);
    memset(img2, 0, sizeof img2);
    assert_true(metric_detail(img2, W, H) == 0);
    /* change: 90 on 3 bytes of 240 */
    assert_true(fabs(metric_change(img, img2, sizeof img) - 270.0 / 240) < 1e-12);
}

/* ---- sequences -------------------------------------------------------------------------- */

static void test_linear_fit(void **state) {
    (void)state;
    enum { N = 1000 };
    double y[N];
    for (int i = 0; i < N; i++) y[i] = 30.0 - 0.0005 * i; /* -0.5 dB per 1000 frames */
    metric_fit f = metric_linear_fit(y, N);
    printf("  fit of 30 - 0.0005 i: slope %.3e, intercept %.9f, r2 %.9f, se %.2e\n", f.slope, f.intercept, f.r2, f.slope_se);
    assert_true(fabs(f.slope * 1000 + 0.5) < 1e-9 && fabs(f.intercept - 30) < 1e-9 && fabs(f.r2 - 1) < 1e-9);
    assert_true(f.slope_se < 1e-9);
    /* a symmetric zig-zag around a line leaves the slope alone */
    for (int i = 0; i < N; i++) y[i] = 20.0 + 0.001 * i + (i % 2 ? 0.5 : -0.5);
    f = metric_linear_fit(y, N);
    assert_true(fabs(f.slope - 0.001) < 1e-5 && f.r2 < 1 && f.slope_se > 0);
    /* non-finite values are skipped; fewer than two points: NaN */
    y[0] = NAN, y[1] = 5, y[2] = 7, y[3] = INFINITY;
    f = metric_linear_fit(y, 4);
    assert_int_equal(f.n, 2);
    assert_true(fabs(f.slope - 2) < 1e-12 && fabs(f.intercept - 3) < 1e-12 && isnan(f.slope_se));
    f = metric_linear_fit(y, 1);
    assert_true(isnan(f.slope));
}

static void test_windows(void **state) {
    (void)state;
    double x[10], m[10];
    for (int i = 0; i < 10; i++) x[i] = i + 1;
    assert_int_equal(metric_window_count(10, 3), 8);
    assert_int_equal(metric_window_count(10, 50), 1);
    assert_int_equal(metric_window_count(0, 50), 0);
    metric_window_means(x, 10, 3, m);
    for (int j = 0; j < 8; j++) assert_true(fabs(m[j] - (j + 2)) < 1e-12);
    metric_window_means(x, 10, 50, m);
    assert_true(fabs(m[0] - 5.5) < 1e-12);
    /* long series: the running sum stays exact enough */
    enum { L = 5000 };
    double *big = malloc(L * sizeof *big), *bm = malloc(L * sizeof *bm);
    for (int i = 0; i < L; i++) big[i] = 1e3 + sin(i * 0.1);
    metric_window_means(big, L, 50, bm);
    double direct = 0;
    for (int i = L - 50; i < L; i++) direct += big[i];
    assert_true(fabs(bm[L - 50] - direct / 50) < 1e-9);
    free(big);
    free(bm);
}

/* synthetic series of n frames with every field set to a value */
static void series_fill(eval_series *s, int n, double colour_std, double detail, double change, double psnr) {
    assert_int_equal(eval_series_init(s, n), MG_OK);
    s->n = n;
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < 3; c++) s->mean[c][i] = 100, s->std[c][i] = colour_std;
        s->colour_std[i] = colour_std, s->detail[i] = detail;
        s->change[i] = i ? change : NAN;
        s->psnr[i] = psnr, s->ssim[i] = 0.9, s->ms[i] = 1;
    }
}

static void test_truth_flags(void **state) {
    (void)state;
    enum { N = 300 };
    eval_thresholds t = eval_thresholds_default();
    eval_series truth, out;
    eval_summary s;
    series_fill(&truth, N, 40, 200, 3, NAN);
    /* a healthy run: no flags, drift 0, flicker 1 */
    series_fill(&out, N, 38, 180, 3, 25);
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_false(s.collapse.flagged || s.explosion.flagged || s.freeze.flagged);
    assert_true(fabs(s.drift_db_per_1000) < 1e-9 && fabs(s.flicker - 1) < 1e-12 && fabs(s.psnr_mean - 25) < 1e-12);
    assert_true(report_verdict_of(&s).all);
    /* colour collapses to 10% at frame 100: the first 50-frame window under 25% is the one with
     * k <= 8 frames before the drop, (40k + 4(50-k))/50 < 10: frames 92..141 */
    for (int i = 100; i < N; i++) out.colour_std[i] = 4;
    eval_summarise(&out, &truth, 1, &t, &s);
    printf("  collapse: %d at frame %ld (%s)\n", s.collapse.flagged, s.collapse.frame, s.collapse.why);
    assert_true(s.collapse.flagged && s.collapse.frame == 141 && strstr(s.collapse.why, "colour std"));
    assert_false(report_verdict_of(&s).all);
    /* detail loss alone also collapses */
    for (int i = 0; i < N; i++) out.colour_std[i] = 38, out.detail[i] = i >= 200 ? 10 : 180;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_true(s.collapse.flagged && strstr(s.collapse.why, "detail") && s.collapse.frame > 200);
    /* noise blow-up: detail 10x the truth's from frame 250 */
    for (int i = 0; i < N; i++) out.detail[i] = i >= 250 ? 2000 : 180;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_true(s.explosion.flagged && !s.collapse.flagged && s.explosion.frame >= 250);
    /* frozen output while the truth moves */
    for (int i = 0; i < N; i++) out.detail[i] = 180, out.change[i] = i ? (i >= 150 ? 0.1 : 3) : NAN;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_true(s.freeze.flagged && s.freeze.frame > 150 && !s.explosion.flagged);
    /* ...but not while the truth is static too */
    for (int i = 1; i < N; i++) truth.change[i] = 0.1;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_false(s.freeze.flagged);
    /* flicker: twice the truth's change */
    for (int i = 1; i < N; i++) truth.change[i] = 2, out.change[i] = 4;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_true(fabs(s.flicker - 2) < 1e-12 && !report_verdict_of(&s).flicker);
    /* drift: -1 dB per 1000 frames fails the bar, -0.4 passes */
    for (int i = 0; i < N; i++) out.psnr[i] = 30 - 0.001 * i, out.change[i] = i ? 2 : NAN;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_true(fabs(s.drift_db_per_1000 + 1) < 1e-9 && !report_verdict_of(&s).drift);
    for (int i = 0; i < N; i++) out.psnr[i] = 30 - 0.0004 * i;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_true(report_verdict_of(&s).drift && report_verdict_of(&s).all);
    assert_true(fabs(s.psnr_first - (30 - 0.0004 * 24.5)) < 1e-9 && fabs(s.psnr_last - (30 - 0.0004 * 274.5)) < 1e-9);
    /* a flat truth (no colour variation) cannot be collapsed from */
    for (int i = 0; i < N; i++) truth.colour_std[i] = 0, out.colour_std[i] = 0;
    eval_summarise(&out, &truth, 1, &t, &s);
    assert_false(s.collapse.flagged);
    eval_series_free(&truth);
    eval_series_free(&out);
}

static void test_dream_flags(void **state) {
    (void)state;
    enum { N = 2000 };
    eval_thresholds t = eval_thresholds_default();
    eval_series clip, out;
    eval_summary s;
    /* the clip's colour std swings 30..50, detail 100..300, change 2..4 */
    assert_int_equal(eval_series_init(&clip, N), MG_OK);
    clip.n = N;
    for (int i = 0; i < N; i++) {
        double ph = sin(i * 0.01);
        clip.colour_std[i] = 40 + 10 * ph, clip.detail[i] = 200 + 100 * ph, clip.change[i] = i ? 3 + ph : NAN;
        for (int c = 0; c < 3; c++) clip.mean[c][i] = 100, clip.std[c][i] = clip.colour_std[i];
    }
    series_fill(&out, N, 40, 200, 3, NAN);
    eval_summarise(&out, &clip, 0, &t, &s);
    printf("  dream steady: clip change range %.2f..%.2f, out of range %.3f\n", s.ref_change_range[0], s.ref_change_range[1],
           s.out_of_range);
    assert_false(s.collapse.flagged || s.explosion.flagged || s.freeze.flagged);
    assert_true(s.ref_change_range[0] > 2 && s.ref_change_range[0] < 2.2 && s.ref_change_range[1] > 3.8);
    assert_true(s.out_of_range == 0 && isnan(s.psnr_mean) && isnan(s.drift_db_per_1000));
    assert_true(report_verdict_of(&s).all);
    /* freezes at frame 1500 */
    for (int i = 1500; i < N; i++) out.change[i] = 0.05;
    eval_summarise(&out, &clip, 0, &t, &s);
    printf("  dream freeze: %d at %ld (%s)\n", s.freeze.flagged, s.freeze.frame, s.freeze.why);
    assert_true(s.freeze.flagged && s.freeze.frame > 1500 && s.freeze.frame < 1550 && !report_verdict_of(&s).all);
    assert_true(s.out_of_range > 0.2);
    /* explodes: frame change 10x the clip's highest */
    for (int i = 1500; i < N; i++) out.change[i] = 40;
    eval_summarise(&out, &clip, 0, &t, &s);
    assert_true(s.explosion.flagged && !s.freeze.flagged && strstr(s.explosion.why, "frame change"));
    /* collapses to one colour */
    for (int i = 1; i < N; i++) out.change[i] = 3;
    for (int i = 1000; i < N; i++) out.colour_std[i] = 2;
    eval_summarise(&out, &clip, 0, &t, &s);
    assert_true(s.collapse.flagged && s.collapse.frame > 1000 && strstr(s.collapse.why, "the clip's lowest window"));
    eval_series_free(&clip);
    eval_series_free(&out);
}

static void test_pingpong(void **state) {
    (void)state;
    const long want4[] = {0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2};
    for (long i = 0; i < 11; i++) assert_int_equal(eval_pingpong(i, 4), want4[i]);
    for (long i = 0; i < 5; i++) assert_int_equal(eval_pingpong(i, 1), 0);
    for (long i = 0; i < 5; i++) assert_int_equal(eval_pingpong(i, 2), i % 2);
    assert_int_equal(eval_pingpong(1000000007L, 1000), eval_pingpong(1000000007L % 1998, 1000));
}

/* ---- degradations and styles ------------------------------------------------------------ */

static void test_degrade(void **state) {
    (void)state;
    enum { W = 48, H = 40 };
    size_t n = (size_t)W * H * 3;
    uint8_t *x = frame_new(W, H), *a = frame_new(W, H), *b = frame_new(W, H);
    assert_int_equal(testsrc_render(x, W, H, 11), MG_OK);
    const char *all[] = {"none", "colorize", "upscale", "restore", "style:toon", "style:sketch", "style:thermal", "dream"};
    for (int i = 0; i < 8; i++) {
        assert_true(degrade_known(all[i]) && degrade_describe(all[i])[0]);
        assert_int_equal(degrade_has_truth(all[i]), i != 7);
        /* deterministic, and in place equals out of place */
        assert_int_equal(degrade_apply(all[i], x, a, W, H, 5), MG_OK);
        assert_int_equal(degrade_apply(all[i], x, b, W, H, 5), MG_OK);
        assert_memory_equal(a, b, n);
        memcpy(b, x, n);
        assert_int_equal(degrade_apply(all[i], b, b, W, H, 5), MG_OK);
        assert_memory_equal(a, b, n);
        assert_int_equal(style_apply(all[i], x, a, W, H), MG_OK);
        memcpy(b, x, n);
        assert_int_equal(style_apply(all[i], b, b, W, H), MG_OK);
        assert_memory_equal(a, b, n);
        printf("  %-14s input %6.2f dB, target %6.2f dB from the frame\n", all[i],
               (degrade_apply(all[i], x, a, W, H, 5), metric_psnr(a, x, n)), (style_apply(all[i], x, b, W, H), metric_psnr(b, x, n)));
    }
    assert_false(degrade_known("style:vangogh") || degrade_known(NULL));
    assert_int_equal(degrade_apply("style:vangogh", x, a, W, H, 0), MG_ERR_ARG);
    assert_int_equal(style_apply("bogus", x, a, W, H), MG_ERR_ARG);
    assert_int_equal(degrade_apply("none", x, a, 0, H, 0), MG_ERR_ARG);

    /* identity prompts */
    assert_int_equal(degrade_apply("none", x, a, W, H, 1), MG_OK);
    assert_memory_equal(a, x, n);
    assert_int_equal(style_apply("colorize", x, a, W, H), MG_OK);
    assert_memory_equal(a, x, n);

    /* grey: R = G = B = (77R + 150G + 29B + 128) >> 8 */
    uint8_t px[4 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
    degrade_grey(px, 4, 1);
    const uint8_t gw[4] = {77, 149, 29, 18}; /* (19635+128)>>8, (38250+128)>>8, (7395+128)>>8, (770+3000+870+128)>>8 */
    for (int i = 0; i < 4; i++) assert_true(px[3 * i] == gw[i] && px[3 * i + 1] == gw[i] && px[3 * i + 2] == gw[i]);

    /* upscale: a picture constant on aligned 4x4 blocks survives nearest exactly; bilinear keeps
     * flat colours exactly and removes detail */
    for (int y = 0; y < H; y++)
        for (int xx = 0; xx < W; xx++)
            for (int c = 0; c < 3; c++) a[(y * W + xx) * 3 + c] = (uint8_t)(((y / 4) * 37 + (xx / 4) * 11 + c * 50) % 256);
    memcpy(b, a, n);
    assert_int_equal(degrade_resample(b, W, H, 4, 1), MG_OK);
    assert_memory_equal(a, b, n);
    memset(a, 123, n);
    assert_int_equal(degrade_resample(a, W, H, 4, 0), MG_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(a[i], 123);
    assert_int_equal(degrade_apply("upscale", x, a, W, H, 0), MG_OK);
    assert_true(metric_detail(a, W, H) < 0.3 * metric_detail(x, W, H));
    /* odd sizes */
    uint8_t *odd = frame_new(13, 7);
    fill_random(odd, 13 * 7 * 3, 3);
    assert_int_equal(degrade_resample(odd, 13, 7, 4, 0), MG_OK);
    assert_int_equal(degrade_jpeg(odd, 13, 7, 30), MG_OK);
    free(odd);

    /* restore: seeded noise, plausible damage; each step alone */
    assert_int_equal(degrade_apply("restore", x, a, W, H, 1), MG_OK);
    assert_int_equal(degrade_apply("restore", x, b, W, H, 2), MG_OK);
    assert_memory_not_equal(a, b, n);
    double p = metric_psnr(a, x, n);
    assert_true(p > 18 && p < 35);
    memset(a, 77, n);
    assert_int_equal(degrade_jpeg(a, W, H, 30), MG_OK); /* a flat colour survives JPEG */
    for (size_t i = 0; i < n; i++) assert_true(abs(a[i] - 77) <= 1);
    memcpy(a, x, n);
    assert_int_equal(degrade_jpeg(a, W, H, 95), MG_OK);
    double p95 = metric_psnr(a, x, n);
    memcpy(a, x, n);
    assert_int_equal(degrade_jpeg(a, W, H, 10), MG_OK);
    double p10 = metric_psnr(a, x, n);
    printf("  jpeg-like: q95 %.2f dB, q10 %.2f dB\n", p95, p10);
    assert_true(p95 > p10 + 3 && p95 > 25); /* 4:2:0 chroma caps q95 on sharp colour edges */
    memset(a, 100, n);
    assert_int_equal(degrade_noise(a, W, H, 8.0f, 9), MG_OK);
    double mean[3], std[3];
    metric_channel_stats(a, W, H, mean, std);
    for (int c = 0; c < 3; c++) assert_true(fabs(std[c] - 8) < 1 && fabs(mean[c] - 100) < 1);
    memcpy(a, x, n);
    assert_int_equal(degrade_blur(a, W, H, 1.0f), MG_OK);
    assert_true(metric_detail(a, W, H) < 0.5 * metric_detail(x, W, H));
    degrade_params dp = degrade_params_default();
    dp.blur_sigma = 0, dp.noise_sigma = 0, dp.jpeg_quality = 0;
    assert_int_equal(degrade_apply_params("restore", x, a, W, H, 0, &dp), MG_OK);
    assert_memory_equal(a, x, n);

    /* styles */
    assert_int_equal(style_apply("style:sketch", x, a, W, H), MG_OK); /* grey, mostly light */
    for (size_t i = 0; i < n; i += 3) assert_true(a[i] == a[i + 1] && a[i] == a[i + 2]);
    metric_channel_stats(a, W, H, mean, std);
    assert_true(mean[0] > 150);
    memset(b, 90, n); /* a flat picture dodges to white */
    assert_int_equal(style_apply("style:sketch", b, a, W, H), MG_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(a[i], 255);
    assert_int_equal(style_apply("style:toon", b, a, W, H), MG_OK); /* flat: 90 -> level 2 = 102, no edges */
    for (size_t i = 0; i < n; i++) assert_int_equal(a[i], 102);
    assert_int_equal(style_apply("style:toon", x, a, W, H), MG_OK);
    size_t on_levels = 0; /* most pixels sit on the 6 levels; the rest are darkened edges */
    for (size_t i = 0; i < n; i++) on_levels += a[i] % 51 == 0;
    printf("  toon: %.1f%% of values on the 6 levels\n", 100.0 * on_levels / n);
    assert_true(on_levels > n / 2);
    uint8_t th[3 * 3] = {0, 0, 0, 255, 255, 255, 128, 128, 128};
    assert_int_equal(style_apply("style:thermal", th, th, 3, 1), MG_OK);
    assert_true(th[0] == 0 && th[1] == 0 && th[2] == 10);   /* black -> the map's start */
    assert_true(th[3] == 255 && th[4] == 255 && th[5] == 255); /* white -> white */
    assert_true(th[6] > th[8] && th[6] > 150);                 /* mid grey -> warm */
    free(x);
    free(a);
    free(b);
}

/* ---- files ------------------------------------------------------------------------------ */

static uint32_t crc32_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void test_png(void **state) {
    (void)state;
    enum { W = 200, H = 120 }; /* 72120 raw bytes: two stored blocks */
    uint8_t *img = frame_new(W, H);
    assert_int_equal(testsrc_render(img, W, H, 2), MG_OK);
    char path[512];
    snprintf(path, sizeof path, "%s/stored.png", tu_tmpdir());
    assert_int_equal(image_write_png_stored(path, img, W, H), MG_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t buf[200000];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    assert_memory_equal(buf, sig, 8);
    /* every chunk's CRC, IHDR's fields, and the zlib stream's stored blocks and Adler-32 */
    size_t pos = 8;
    int chunks = 0;
    while (pos + 12 <= len) {
        uint32_t cl = rd32(buf + pos);
        assert_true(pos + 12 + cl <= len);
        assert_int_equal(crc32_bitwise(buf + pos + 4, 4 + cl), rd32(buf + pos + 8 + cl));
        if (!memcmp(buf + pos + 4, "IHDR", 4)) assert_true(rd32(buf + pos + 8) == W && rd32(buf + pos + 12) == H && buf[pos + 16] == 8 && buf[pos + 17] == 2);
        if (!memcmp(buf + pos + 4, "IDAT", 4)) {
            const uint8_t *z = buf + pos + 8;
            assert_true(z[0] == 0x78 && (z[0] * 256 + z[1]) % 31 == 0);
            size_t zp = 2, got = 0;
            uint32_t s1 = 1, s2 = 0;
            for (int last = 0; !last;) {
                last = z[zp] & 1;
                assert_int_equal(z[zp] >> 1, 0); /* stored */
                size_t bl = z[zp + 1] | z[zp + 2] << 8;
                assert_int_equal(bl ^ 0xffff, (size_t)(z[zp + 3] | z[zp + 4] << 8));
                zp += 5;
                for (size_t i = 0; i < bl; i++, got++) {
                    uint8_t v = z[zp + i];
                    size_t row = got / (W * 3 + 1), col = got % (W * 3 + 1);
                    assert_int_equal(v, col == 0 ? 0 : img[row * W * 3 + col - 1]);
                    s1 = (s1 + v) % 65521, s2 = (s2 + s1) % 65521;
                }
                zp += bl;
            }
            assert_int_equal(got, (size_t)(W * 3 + 1) * H);
            assert_int_equal(rd32(z + zp), (s2 << 16) | s1);
        }
        chunks++;
        pos += 12 + cl;
    }
    assert_int_equal(pos, len);
    assert_int_equal(chunks, 3);
#ifdef MG_HAVE_PNG
    /* libpng reads both writers' files back to the same pixels */
    char path2[512];
    snprintf(path2, sizeof path2, "%s/libpng.png", tu_tmpdir());
    assert_int_equal(image_write_png(path2, img, W, H), MG_OK);
    for (int k = 0; k < 2; k++) {
        png_image pi;
        memset(&pi, 0, sizeof pi);
        pi.version = PNG_IMAGE_VERSION;
        assert_true(png_image_begin_read_from_file(&pi, k ? path2 : path));
        pi.format = PNG_FORMAT_RGB;
        assert_true(pi.width == W && pi.height == H);
        uint8_t *back = malloc(PNG_IMAGE_SIZE(pi));
        assert_true(png_image_finish_read(&pi, NULL, back, 0, NULL));
        assert_memory_equal(back, img, (size_t)W * H * 3);
        free(back);
    }
    printf("  png: stored %zu bytes; libpng reads it back exactly\n", len);
#endif
    /* atomic: a failed open leaves nothing */
    snprintf(path, sizeof path, "%s/no/such/dir/x.png", tu_tmpdir());
    assert_int_equal(image_write_png(path, img, W, H), MG_ERR_IO);
    snprintf(path, sizeof path, "%s/a/b/c", tu_tmpdir());
    assert_int_equal(files_mkdir_p(path), MG_OK);
    assert_int_equal(files_mkdir_p(path), MG_OK);
    free(img);
}

/* ---- end to end ------------------------------------------------------------------------- */

static char model_path[512], model2_path[512];

/* The model step is ~100x slower under AddressSanitizer: fewer frames there, same code paths
 * (the strips at 0 and N-1, every metric, the report). */
#if defined(__SANITIZE_ADDRESS__)
#define E2E_FRAMES 10
#else
#define E2E_FRAMES 30
#endif

static int setup_models(void **state) {
    (void)state;
    mg_config cfg;
    if (mg_config_named("tiny", &cfg) != MG_OK) return -1;
    snprintf(model_path, sizeof model_path, "%s/tiny.safetensors", tu_tmpdir());
    snprintf(model2_path, sizeof model2_path, "%s/tiny2.safetensors", tu_tmpdir());
    /* full random: a fresh adaLN-zero model ignores its input and history altogether */
    if (mg_model_init_file(model_path, &cfg, 1, 1) != MG_OK) return -1;
    return mg_model_init_file(model2_path, &cfg, 2, 1) == MG_OK ? 0 : -1;
}

static cJSON *load_json(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *txt = malloc(n + 1);
    txt[fread(txt, 1, n, f)] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    return j;
}

static cJSON *get(cJSON *o, const char *path) { /* "a.b.c" */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok && o; tok = strtok(NULL, ".")) o = cJSON_GetObjectItemCaseSensitive(o, tok);
    return o;
}

static void test_eval_testsrc(void **state) {
    (void)state;
    enum { W = 64, H = 48, N = E2E_FRAMES };
    mg_model *m = NULL;
    assert_int_equal(mg_model_load(model_path, &m), MG_OK);
    source *src = NULL;
    source_opts so = {0};
    assert_int_equal(source_open(&src, "testsrc", &so), MG_OK);
    assert_int_equal(source_set_size(src, W, H, FIT_CROP), MG_OK);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/report-colorize", tu_tmpdir());
    eval_opts o = eval_opts_default();
    o.prompt = "colorize", o.frames = N, o.steps = 1, o.report_dir = dir, o.input_label = "testsrc";
    o.model_label[0] = model_path, o.log = stdout, o.progress_every = N / 3;
    eval_summary sum[2];
    assert_int_equal(eval_run(&o, src, m, NULL, sum), MG_OK);
    source_close(src);
    mg_model_free(m);

    char p[700];
    snprintf(p, sizeof p, "%s/index.html", dir);
    assert_true(file_exists(p));
    FILE *f = fopen(p, "rb");
    static char html[1 << 20];
    html[fread(html, 1, sizeof html - 1, f)] = 0;
    fclose(f);
    assert_non_null(strstr(html, "<svg"));
    assert_non_null(strstr(html, "strip_000000.png"));
    assert_null(strstr(html, "<script")); /* offline, no scripts */
    assert_null(strstr(html, "src=\"http"));
    assert_null(strstr(html, "href=\"http"));
    for (long fr = 0; fr < N; fr += N - 1) {
        snprintf(p, sizeof p, "%s/strip_%06ld.png", dir, fr);
        assert_true(file_exists(p));
    }
    cJSON *j = load_json(dir);
    assert_non_null(j);
    const char *keys[] = {"format", "version", "config", "thresholds", "acceptance", "reference", "models", "strips"};
    for (int i = 0; i < 8; i++) assert_non_null(cJSON_GetObjectItemCaseSensitive(j, keys[i]));
    assert_string_equal(cJSON_GetStringValue(get(j, "config.prompt")), "colorize");
    assert_int_equal((int)cJSON_GetNumberValue(get(j, "config.frames")), N);
    assert_true(cJSON_IsNull(get(j, "config.clip_frames")));
    assert_int_equal(cJSON_GetArraySize(get(j, "models")), 1);
    cJSON *m0 = cJSON_GetArrayItem(get(j, "models"), 0);
    const char *skeys[] = {"psnr_mean", "ssim_mean", "drift_db_per_1000", "flicker", "mean_bias", "std_ratio",
                           "colour_std_ratio", "detail_ratio", "ms_mean"};
    for (int i = 0; i < 9; i++) assert_non_null(get(m0, "summary") ? cJSON_GetObjectItemCaseSensitive(get(m0, "summary"), skeys[i]) : NULL);
    const char *series[] = {"psnr", "ssim", "mean_r", "std_b", "colour_std", "detail", "change", "ms"};
    for (int i = 0; i < 8; i++) assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(get(m0, "series"), series[i])), N);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(get(m0, "series.change"), 0))); /* no previous frame */
    assert_true(cJSON_IsBool(get(m0, "flags.collapse.flagged")) && cJSON_IsBool(get(m0, "verdict.pass")));
    double psnr_json = cJSON_GetNumberValue(get(m0, "summary.psnr_mean"));
    printf("  psnr mean %.4f (json %.4f), ssim %.4f, drift %+.2f dB/1000, flicker %.2f\n", sum[0].psnr_mean, psnr_json,
           sum[0].ssim_mean, sum[0].drift_db_per_1000, sum[0].flicker);
    assert_true(fabs(psnr_json - sum[0].psnr_mean) < 1e-4 * fabs(sum[0].psnr_mean));
    assert_true(sum[0].psnr_mean > 0 && sum[0].psnr_mean < 60 && sum[0].frames == N);
    /* the truth of colorize is the frame itself: its series is testsrc's */
    uint8_t *t0 = frame_new(W, H);
    testsrc_render(t0, W, H, 0);
    double mean[3], std[3];
    metric_channel_stats(t0, W, H, mean, std);
    assert_true(fabs(cJSON_GetNumberValue(cJSON_GetArrayItem(get(j, "reference.series.mean_g"), 0)) - mean[1]) < 1e-3);
    /* the baseline series is the model input (grey) scored against the truth */
    uint8_t *g0 = frame_new(W, H);
    memcpy(g0, t0, (size_t)W * H * 3);
    degrade_grey(g0, W, H);
    double base0 = metric_psnr(g0, t0, (size_t)W * H * 3);
    printf("  baseline psnr at frame 0: %.4f dB (json %.4f)\n", base0,
           cJSON_GetNumberValue(cJSON_GetArrayItem(get(j, "reference.series.psnr"), 0)));
    assert_true(fabs(cJSON_GetNumberValue(cJSON_GetArrayItem(get(j, "reference.series.psnr"), 0)) - base0) < 1e-3);
    assert_true(fabs(cJSON_GetNumberValue(get(m0, "summary.baseline_psnr_mean")) - sum[0].base_psnr_mean) < 1e-3);
    free(g0);
    free(t0);
    cJSON_Delete(j);
}

/* A 5-frame y4m clip, 12 frames evaluated: played back and forth; two models; dream. */
static void test_eval_pingpong_compare_dream(void **state) {
    (void)state;
    enum { W = 32, H = 32, L = 5, N = 12 };
    char clip[512], dir[512];
    snprintf(clip, sizeof clip, "%s/clip.y4m", tu_tmpdir());
    snprintf(dir, sizeof dir, "%s/report-dream", tu_tmpdir());
    y4m_writer w;
    assert_int_equal(y4m_writer_open(&w, clip, W, H, 25, 1), MG_OK);
    uint8_t *fr = frame_new(W, H);
    for (int i = 0; i < L; i++) {
        testsrc_render(fr, W, H, 10 * i);
        assert_int_equal(y4m_write_frame(&w, fr), MG_OK);
    }
    assert_int_equal(y4m_writer_close(&w), MG_OK);
    free(fr);

    mg_model *a = NULL, *b = NULL;
    assert_int_equal(mg_model_load(model_path, &a), MG_OK);
    assert_int_equal(mg_model_load(model2_path, &b), MG_OK);
    source *src = NULL;
    source_opts so = {0};
    assert_int_equal(source_open(&src, clip, &so), MG_OK);
    assert_int_equal(source_set_size(src, W, H, FIT_CROP), MG_OK);
    eval_opts o = eval_opts_default();
    o.prompt = "dream", o.frames = N, o.steps = 1, o.report_dir = dir, o.input_label = clip;
    o.model_label[0] = model_path, o.model_label[1] = model2_path, o.log = stdout;
    eval_summary sum[2];
    assert_int_equal(eval_run(&o, src, a, b, sum), MG_OK);
    source_close(src);
    mg_model_free(a);
    mg_model_free(b);

    cJSON *j = load_json(dir);
    assert_non_null(j);
    assert_int_equal((int)cJSON_GetNumberValue(get(j, "config.clip_frames")), L);
    assert_true(cJSON_IsTrue(get(j, "config.pingpong")) && cJSON_IsFalse(get(j, "config.has_truth")));
    assert_string_equal(cJSON_GetStringValue(get(j, "reference.kind")), "clip");
    assert_int_equal(cJSON_GetArraySize(get(j, "models")), 2);
    for (int m = 0; m < 2; m++) {
        cJSON *mm = cJSON_GetArrayItem(get(j, "models"), m);
        assert_string_equal(cJSON_GetStringValue(get(mm, "label")), m ? "B" : "A");
        assert_null(get(mm, "series.psnr")); /* no truth, no PSNR */
        assert_int_equal(cJSON_GetArraySize(get(mm, "series.detail")), N);
        assert_true(cJSON_IsBool(get(mm, "verdict.freeze")) && cJSON_IsBool(get(mm, "verdict.explosion")));
        assert_true(cJSON_IsNull(get(mm, "summary.psnr_mean")));
    }
    /* the two models differ; the reference follows the clip back and forth: frame i shows clip
     * frame pingpong(i, 5), so sequence frames 3 and 5 (clip 3), 0 and 8 (clip 0) match */
    assert_true(fabs(sum[0].detail_ratio - sum[1].detail_ratio) > 1e-9);
    cJSON *mr = get(j, "reference.series.mean_r"), *dt = get(j, "reference.series.detail");
    for (int i = 0; i < N; i++) {
        int k = (int)eval_pingpong(i, L);
        assert_true(cJSON_GetNumberValue(cJSON_GetArrayItem(mr, i)) == cJSON_GetNumberValue(cJSON_GetArrayItem(mr, k)));
        assert_true(cJSON_GetNumberValue(cJSON_GetArrayItem(dt, i)) == cJSON_GetNumberValue(cJSON_GetArrayItem(dt, k)));
    }
    assert_true(cJSON_GetNumberValue(cJSON_GetArrayItem(mr, 1)) != cJSON_GetNumberValue(cJSON_GetArrayItem(mr, 2)));
    /* strips: 0 and N-1; dream shows clip | A | B */
    assert_int_equal(cJSON_GetArraySize(get(j, "strips")), 2);
    assert_int_equal(cJSON_GetArraySize(get(cJSON_GetArrayItem(get(j, "strips"), 0), "columns")), 3);
    char p[700];
    snprintf(p, sizeof p, "%s/index.html", dir);
    assert_true(file_exists(p));
    cJSON_Delete(j);

    /* an unknown prompt and a bad frame count are refused before any work */
    assert_int_equal(source_open(&src, "testsrc", &so), MG_OK);
    assert_int_equal(source_set_size(src, W, H, FIT_CROP), MG_OK);
    assert_int_equal(mg_model_load(model_path, &a), MG_OK);
    o.prompt = "style:vangogh", o.log = NULL;
    assert_int_equal(eval_run(&o, src, a, NULL, NULL), MG_ERR_ARG);
    o.prompt = "none", o.frames = 0;
    assert_int_equal(eval_run(&o, src, a, NULL, NULL), MG_ERR_ARG);
    mg_model_free(a);
    source_close(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_psnr_known),   cmocka_unit_test(test_ssim),
        cmocka_unit_test(test_stats_detail_change), cmocka_unit_test(test_linear_fit),
        cmocka_unit_test(test_windows),      cmocka_unit_test(test_truth_flags),
        cmocka_unit_test(test_dream_flags),  cmocka_unit_test(test_pingpong),
        cmocka_unit_test(test_degrade),      cmocka_unit_test(test_png),
        cmocka_unit_test(test_eval_testsrc), cmocka_unit_test(test_eval_pingpong_compare_dream),
    };
    return cmocka_run_group_tests(tests, setup_models, NULL);
}
