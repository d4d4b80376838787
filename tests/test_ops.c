/* Every CPU op against a naive reference written here (double accumulation, the formula as
 * the spec states it), on odd sizes that exercise block remainders and image borders.
 * Outputs (and scratch) are NaN-filled before each call, so an element the op fails to write
 * shows up as a NaN; padding columns outside an op's output must still be NaN afterwards. */
#include "testutil.h"

#include <string.h>

#include "ops/cpu/conv_impl.h"
#include "ops/cpu/gemm_fallback.h"
#include "ops/ops.h"

#define TOL 1e-5

/* ---- GEMM -------------------------------------------------------------------------- */

typedef void (*gemm_fn)(float *, int, const float *, int, const float *, int, int, int, int,
                        float, float);

/* One GEMM case with padded strides: out is (M, ldc) with ldc > N, and its padding columns
 * must come back NaN (untouched). beta == 0 starts from a poisoned out; otherwise from random
 * values the reference scales by beta. */
static void check_gemm(const char *name, gemm_fn fn, int trans_b, int M, int N, int K,
                       float alpha, float beta, uint64_t seed) {
    int lda = K + 3, ldb = (trans_b ? K : N) + 5, ldc = N + 7;
    size_t brows = trans_b ? N : K;
    float *a = tu_frand((size_t)M * lda, -1, 1, seed);
    float *b = tu_frand(brows * ldb, -1, 1, seed + 1);
    float *c = tu_fpoison((size_t)M * ldc);
    float *c0 = tu_frand((size_t)M * ldc, -1, 1, seed + 2);
    float *ref = malloc((size_t)M * N * sizeof(float)), *got = malloc((size_t)M * N * sizeof(float));
    if (beta != 0.0f)
        for (int i = 0; i < M; i++) memcpy(c + (size_t)i * ldc, c0 + (size_t)i * ldc, N * sizeof(float));
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double bv = trans_b ? b[(size_t)j * ldb + k] : b[(size_t)k * ldb + j];
                s += (double)a[(size_t)i * lda + k] * bv;
            }
            double init = beta != 0.0f ? (double)beta * c0[(size_t)i * ldc + j] : 0.0;
            ref[(size_t)i * N + j] = (float)(alpha * s + init);
        }
    }
    fn(c, ldc, a, lda, b, ldb, M, N, K, alpha, beta);
    for (int i = 0; i < M; i++) {
        memcpy(got + (size_t)i * N, c + (size_t)i * ldc, N * sizeof(float));
        for (int j = N; j < ldc; j++) assert_true(isnan(c[(size_t)i * ldc + j]));
    }
    assert_close(name, got, ref, (size_t)M * N, TOL);
    free(a); free(b); free(c); free(c0); free(ref); free(got);
}

static void gemm_cases(const char *tag, gemm_fn fn, int trans_b) {
    char name[64];
    /* small odd; past every block size (MC 64, NR 16, KC 256) with remainders; degenerate;
     * K = 0 (out = beta*out) */
    static const int sz[][3] = {{37, 53, 29}, {133, 70, 600}, {1, 1, 1}, {5, 3, 1}, {64, 16, 256},
                                {4, 5, 0}};
    for (size_t t = 0; t < sizeof sz / sizeof sz[0]; t++) {
        snprintf(name, sizeof name, "%s %dx%dx%d b0", tag, sz[t][0], sz[t][1], sz[t][2]);
        check_gemm(name, fn, trans_b, sz[t][0], sz[t][1], sz[t][2], 0.7f, 0.0f, 10 + t);
        snprintf(name, sizeof name, "%s %dx%dx%d b.5", tag, sz[t][0], sz[t][1], sz[t][2]);
        check_gemm(name, fn, trans_b, sz[t][0], sz[t][1], sz[t][2], -1.3f, 0.5f, 20 + t);
    }
}

static void test_gemm_nt(void **state) { (void)state; gemm_cases("gemm_nt", gemm_nt, 1); }
static void test_gemm_nn(void **state) { (void)state; gemm_cases("gemm_nn", gemm_nn, 0); }
static void test_gemm_nt_fallback(void **state) {
    (void)state;
    gemm_cases("gemm_nt_fallback", gemm_nt_fallback, 1);
}
static void test_gemm_nn_fallback(void **state) {
    (void)state;
    gemm_cases("gemm_nn_fallback", gemm_nn_fallback, 0);
}

static void test_linear(void **state) {
    (void)state;
    const int N = 37, IC = 53, OC = 29;
    float *inp = tu_frand((size_t)N * IC, -1, 1, 1), *w = tu_frand((size_t)OC * IC, -1, 1, 2);
    float *b = tu_frand(OC, -1, 1, 3), *out = tu_fpoison((size_t)N * OC), *ref = malloc(N * OC * sizeof(float));
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double s = with_bias ? b[o] : 0.0;
                for (int i = 0; i < IC; i++) s += (double)inp[n * IC + i] * w[o * IC + i];
                ref[n * OC + o] = (float)s;
            }
        tu_poison(out, (size_t)N * OC);
        linear_forward(out, inp, w, with_bias ? b : NULL, N, IC, OC);
        assert_close(with_bias ? "linear bias" : "linear no bias", out, ref, (size_t)N * OC, TOL);
    }
    free(inp); free(w); free(b); free(out); free(ref);
}

/* ---- conv3x3 ----------------------------------------------------------------------- */

/* F(4x4, 3x3) is ~5x less accurate than F(2x2, 3x3) in fp32: ~1e-5 worst relative error at
 * Ci = 64 on random data, the edge of TOL. The library uses F(2,3) (src/ops/cpu/conv.c);
 * F(4,3) stays in conv_winograd.c for the lab and is held to this. */
#define TOL_WINO4 3e-5

/* How a case is computed: conv3x3_forward(_ex) as the library picks, or one implementation. */
typedef enum { VIA_LIB, VIA_IM2COL, VIA_WINO2, VIA_WINO4 } conv_via;
static const char *via_name[] = {"lib", "im2col", "wino2", "wino4"};
/* Epilogues: none (conv3x3_forward), relu, residual + relu, residual in place (out holds the
 * residual) + relu, residual in place without relu. */
typedef enum { EPI_NONE, EPI_RELU, EPI_RES_RELU, EPI_INPLACE_RELU, EPI_INPLACE } conv_epi;
static const char *epi_name[] = {"", " relu", " res+relu", " inplace+relu", " inplace"};

/* PyTorch Conv2d(k=3, s, p=1) on CHW, transcribed to HWC, in double; then + res, relu. */
static void conv_ref(float *ref, const float *inp, const float *w, const float *b,
                     const float *res, int relu, int H, int W, int Ci, int Co, int stride) {
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
    for (int y = 0; y < Ho; y++)
        for (int x = 0; x < Wo; x++)
            for (int co = 0; co < Co; co++) {
                double s = b ? b[co] : 0.0;
                for (int ci = 0; ci < Ci; ci++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = y * stride - 1 + ky, ix = x * stride - 1 + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            s += (double)inp[((size_t)iy * W + ix) * Ci + ci] *
                                 w[(((size_t)co * Ci + ci) * 3 + ky) * 3 + kx];
                        }
                size_t o = ((size_t)y * Wo + x) * Co + co;
                if (res) s += res[o];
                ref[o] = (float)(relu && s < 0 ? 0.0 : s);
            }
}

/* One case. The pack, the scratch and the output start NaN (or, in place, the residual), so
 * anything left unwritten or read before written shows. */
static void check_conv_via(conv_via via, int H, int W, int Ci, int Co, int stride, int with_bias,
                           conv_epi epi, double tol, uint64_t seed) {
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, m = via == VIA_WINO2 ? 2 : 4;
    size_t nout = (size_t)Ho * Wo * Co;
    float *inp = tu_frand((size_t)H * W * Ci, -1, 1, seed);
    float *w = tu_frand((size_t)Co * Ci * 9, -1, 1, seed + 1), *b = tu_frand(Co, -1, 1, seed + 2);
    float *res = tu_frand(nout, -1, 1, seed + 3);
    int wino = via == VIA_WINO2 || via == VIA_WINO4;
    size_t npack = wino ? conv3x3_wino_packed_floats(Ci, Co, m) : conv3x3_packed_floats(Ci, Co);
    size_t nscr = via == VIA_LIB    ? conv3x3_scratch_floats(H, W, Ci, Co, stride)
                : via == VIA_IM2COL ? conv3x3_im2col_scratch_floats(H, W, Ci, stride)
                                    : conv3x3_wino_scratch_floats(H, W, Ci, Co, m);
    float *wp = tu_fpoison(npack), *scratch = tu_fpoison(nscr), *out = tu_fpoison(nout);
    float *ref = malloc(nout * sizeof(float));
    int relu = epi == EPI_RELU || epi == EPI_RES_RELU || epi == EPI_INPLACE_RELU;
    int inplace = epi == EPI_INPLACE_RELU || epi == EPI_INPLACE;
    const float *r = epi == EPI_RES_RELU ? res : inplace ? out : NULL;
    const float *bb = with_bias ? b : NULL;
    conv_ref(ref, inp, w, bb, epi >= EPI_RES_RELU ? res : NULL, relu, H, W, Ci, Co, stride);
    if (inplace) memcpy(out, res, nout * sizeof(float));
    int act = relu ? MG_ACT_RELU : MG_ACT_NONE;
    if (wino) conv3x3_wino_pack(wp, w, Ci, Co, m);
    else conv3x3_pack(wp, w, Ci, Co);
    if (via == VIA_LIB && epi == EPI_NONE)
        conv3x3_forward(out, inp, wp, bb, scratch, H, W, Ci, Co, stride);
    else if (via == VIA_LIB)
        conv3x3_forward_ex(out, inp, wp, bb, r, act, scratch, H, W, Ci, Co, stride);
    else if (via == VIA_IM2COL)
        conv3x3_im2col_forward(out, inp, wp, bb, r, act, scratch, H, W, Ci, Co, stride);
    else
        conv3x3_wino_forward(out, inp, wp, bb, r, act, scratch, H, W, Ci, Co, m);
    char name[96];
    snprintf(name, sizeof name, "conv %s %dx%d %d->%d s%d%s%s", via_name[via], H, W, Ci, Co,
             stride, with_bias ? " b" : "", epi_name[epi]);
    assert_close(name, out, ref, nout, tol);
    free(inp); free(w); free(b); free(res); free(wp); free(scratch); free(out); free(ref);
}

static void check_conv(int H, int W, int Ci, int Co, int stride, int with_bias, uint64_t seed) {
    check_conv_via(VIA_LIB, H, W, Ci, Co, stride, with_bias, EPI_NONE, TOL, seed);
}

static void test_conv3x3(void **state) {
    (void)state;
    for (int stride = 1; stride <= 2; stride++) {
        check_conv(13, 22, 5, 7, stride, 1, 100 + stride);
        check_conv(13, 22, 5, 7, stride, 0, 110 + stride);
        check_conv(14, 21, 3, 9, stride, 1, 120 + stride);  /* encoder input: Ci = 3 */
        check_conv(9, 11, 17, 3, stride, 1, 130 + stride);  /* decoder output: Co = 3 */
        check_conv(1, 1, 4, 5, stride, 1, 140 + stride);    /* every tap is padding but one */
        check_conv(2, 3, 1, 1, stride, 0, 150 + stride);
    }
    /* Large enough that the scratch is smaller than the whole image's im2col (stride 2) or
     * Winograd transforms (stride 1), so its slots are reused, with a partial last block. */
    int H = 201, W = 190, Ci = 33, Co = 19;
    for (int stride = 1; stride <= 2; stride++) {
        int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
        assert_true(conv3x3_scratch_floats(H, W, Ci, Co, stride) < (size_t)Ho * Wo * 9 * Ci);
        check_conv(H, W, Ci, Co, stride, 1, 160 + stride);
    }
    check_conv_via(VIA_IM2COL, H, W, Ci, Co, 1, 1, EPI_NONE, TOL, 170);
}

/* The autoencoder's shapes through conv3x3_forward(_ex) (Winograd for stride 1 and c -> c,
 * im2col for the rest), with every epilogue. */
static void test_conv3x3_model_shapes(void **state) {
    (void)state;
    static const int sh[][5] = {{33, 35, 32, 32, 1}, {16, 16, 64, 64, 1}, {17, 9, 32, 32, 2},
                                {21, 14, 3, 32, 1},  {21, 14, 32, 3, 1},  {5, 7, 32, 4, 1},
                                {5, 7, 4, 32, 1},    {8, 8, 32, 32, 1},   {64, 64, 32, 32, 1}};
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++)
        for (int epi = EPI_NONE; epi <= EPI_INPLACE; epi++)
            check_conv_via(VIA_LIB, sh[i][0], sh[i][1], sh[i][2], sh[i][3], sh[i][4], epi != EPI_INPLACE,
                           epi, TOL, 200 + 10 * i + epi);
    /* the same epilogues on the im2col path for a stride-1 shape the library sends to Winograd */
    for (int epi = EPI_RELU; epi <= EPI_INPLACE; epi++)
        check_conv_via(VIA_IM2COL, 13, 22, 32, 32, 1, 1, epi, TOL, 300 + epi);
    /* the scratch stays bounded at 512x512 (8 MiB and one block, not the whole frame) */
    size_t full = (size_t)512 * 512 * 9 * 64;
    assert_true(conv3x3_scratch_floats(512, 512, 64, 64, 1) * 20 < full);
    assert_true(conv3x3_scratch_floats(512, 512, 64, 64, 2) * 20 < full);
}

/* Winograd directly, both tile sizes, on every code path the CPU has (portable C with
 * gemm_nn, AVX2, AVX-512): images smaller than a tile, odd sizes that leave partial tiles on
 * the right and bottom, channel counts that are not multiples of the 16 lanes. */
static void test_conv3x3_winograd(void **state) {
    (void)state;
    static const int hw[][2] = {{1, 1}, {1, 5}, {2, 3}, {3, 2}, {5, 5}, {3, 1}, {7, 9}};
    static const int ch[][2] = {{1, 1}, {3, 17}, {17, 3}, {32, 32}, {64, 64}, {1, 64}, {64, 1},
                                {17, 32}, {32, 17}};
    for (int isa = 2; isa >= 0; isa--) {
        int prev = conv3x3_wino_limit_isa(isa);
        printf("  -- Winograd code path limit %d (2 AVX-512, 1 AVX2, 0 portable)\n", isa);
        for (int m = 2; m <= 4; m += 2) {
            conv_via via = m == 2 ? VIA_WINO2 : VIA_WINO4;
            double tol = m == 2 ? TOL : TOL_WINO4;
            for (size_t i = 0; i < sizeof hw / sizeof hw[0]; i++)
                for (size_t c = 0; c < sizeof ch / sizeof ch[0]; c++) {
                    if (isa < 2 && (c % 3 != i % 3)) continue; /* a sample on the other paths */
                    /* One output and many inputs: rms(ref) is that one sum, which may cancel
                     * to far below its terms, and the measure stops meaning anything. */
                    if (hw[i][0] * hw[i][1] * ch[c][1] == 1 && ch[c][0] > 3) continue;
                    check_conv_via(via, hw[i][0], hw[i][1], ch[c][0], ch[c][1], 1, (i + c) % 2,
                                   EPI_NONE, tol, 400 + 16 * i + c);
                }
            /* many blocks, partial last block, epilogues in and out of place */
            check_conv_via(via, 61, 45, 32, 32, 1, 1, EPI_NONE, tol, 500 + m);
            check_conv_via(via, 29, 31, 64, 64, 1, 1, EPI_RES_RELU, tol, 510 + m);
            check_conv_via(via, 30, 27, 17, 32, 1, 1, EPI_INPLACE_RELU, tol, 520 + m);
            check_conv_via(via, 23, 26, 32, 17, 1, 0, EPI_INPLACE, tol, 530 + m);
        }
        /* im2col on the same code paths (its GEMM is conv3x3_gemm_kernel where Co % 16 == 0) */
        check_conv_via(VIA_IM2COL, 17, 9, 32, 32, 2, 0, EPI_INPLACE, TOL, 540);
        check_conv_via(VIA_IM2COL, 21, 14, 3, 32, 1, 1, EPI_RES_RELU, TOL, 541);
        check_conv_via(VIA_IM2COL, 3, 2, 5, 16, 1, 1, EPI_INPLACE_RELU, TOL, 542); /* 6 rows */
        conv3x3_wino_limit_isa(prev);
    }
}

/* ---- element-wise ------------------------------------------------------------------ */

static void test_elementwise(void **state) {
    (void)state;
    const size_t n = 37 * 53 + 11;
    float *a = tu_frand(n, -4, 4, 1), *b = tu_frand(n, -4, 4, 2), *out = tu_fpoison(n);
    float *ref = malloc(n * sizeof(float));

    for (size_t i = 0; i < n; i++) ref[i] = a[i] > 0 ? a[i] : 0;
    relu_forward(out, a, n);
    assert_close("relu", out, ref, n, TOL);
    memcpy(out, a, n * sizeof(float));
    relu_forward(out, out, n);
    assert_close("relu in place", out, ref, n, TOL);

    for (size_t i = 0; i < n; i++) ref[i] = (float)(a[i] > 0 ? a[i] : 0.2 * a[i]);
    tu_poison(out, n);
    leaky_relu_forward(out, a, 0.2f, n);
    assert_close("leaky_relu", out, ref, n, TOL);
    memcpy(out, a, n * sizeof(float));
    leaky_relu_forward(out, out, 0.2f, n);
    assert_close("leaky_relu in place", out, ref, n, TOL);

    for (size_t i = 0; i < n; i++) ref[i] = fmax((double)a[i] + b[i], 0.0);
    tu_poison(out, n);
    add_relu_forward(out, a, b, n);
    assert_close("add_relu", out, ref, n, TOL);

    for (size_t i = 0; i < n; i++) ref[i] = (float)(a[i] / (1.0 + exp(-(double)a[i])));
    tu_poison(out, n);
    silu_forward(out, a, n);
    assert_close("silu", out, ref, n, TOL);

    for (size_t i = 0; i < n; i++) {
        double x = a[i];
        ref[i] = (float)(0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))));
    }
    tu_poison(out, n);
    gelu_tanh_forward(out, a, n);
    assert_close("gelu_tanh", out, ref, n, TOL);

    for (size_t i = 0; i < n; i++) ref[i] = (float)((double)a[i] + b[i]);
    memcpy(out, a, n * sizeof(float));
    add_inplace(out, b, n);
    assert_close("add_inplace", out, ref, n, TOL);

    /* extremes: exp overflows inside silu and gelu; the results must still be the limits */
    float big[5] = {-200.0f, 200.0f, -88.5f, 0.0f, -1e30f}, bo[5];
    silu_forward(bo, big, 5);
    for (int i = 0; i < 5; i++) assert_false(isnan(bo[i]));
    assert_true(bo[0] == 0.0f && bo[1] == 200.0f && bo[3] == 0.0f && bo[4] == 0.0f);
    gelu_tanh_forward(bo, big, 5);
    for (int i = 0; i < 5; i++) assert_false(isnan(bo[i]));
    assert_true(bo[0] == 0.0f && bo[1] == 200.0f && bo[2] == 0.0f && bo[3] == 0.0f && bo[4] == 0.0f);

    free(a); free(b); free(out); free(ref);
}

static void test_gated_residual(void **state) {
    (void)state;
    const int N = 37, C = 53;
    float *x = tu_frand((size_t)N * C, -1, 1, 1), *y = tu_frand((size_t)N * C, -1, 1, 2);
    float *g = tu_frand(C, -2, 2, 3), *ref = malloc((size_t)N * C * sizeof(float));
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) ref[n * C + c] = (float)(x[n * C + c] + (double)g[c] * y[n * C + c]);
    gated_residual_forward(x, y, g, N, C);
    assert_close("gated_residual", x, ref, (size_t)N * C, TOL);
    free(x); free(y); free(g); free(ref);
}

static void test_layernorm_modulate(void **state) {
    (void)state;
    const int N = 37, C = 53;
    /* rows with a large common offset: a one-pass float variance would fail here */
    float *inp = tu_frand((size_t)N * C, -1, 1, 1);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) inp[n * C + c] += (n % 3) * 300.0f;
    float *shift = tu_frand(C, -1, 1, 2), *scale = tu_frand(C, -1, 1, 3);
    float *out = tu_fpoison((size_t)N * C), *ref = malloc((size_t)N * C * sizeof(float));
    for (int n = 0; n < N; n++) {
        double mean = 0, var = 0;
        for (int c = 0; c < C; c++) mean += inp[n * C + c];
        mean /= C;
        for (int c = 0; c < C; c++) var += (inp[n * C + c] - mean) * (inp[n * C + c] - mean);
        var /= C;
        for (int c = 0; c < C; c++) {
            double yv = (inp[n * C + c] - mean) / sqrt(var + 1e-5);
            ref[n * C + c] = (float)(yv * (1.0 + scale[c]) + shift[c]);
        }
    }
    layernorm_modulate_forward(out, inp, shift, scale, N, C);
    assert_close("layernorm_modulate", out, ref, (size_t)N * C, TOL);
    free(inp); free(shift); free(scale); free(out); free(ref);
}

/* ---- embeddings, RoPE ---------------------------------------------------------------- */

static void test_timestep_embedding(void **state) {
    (void)state;
    const float sigmas[] = {0.0f, 0.37f, 1.0f, 0.0123f};
    float out[256], ref[256];
    for (size_t s = 0; s < sizeof sigmas / sizeof sigmas[0]; s++) {
        for (int j = 0; j < 128; j++) {
            double a = (double)sigmas[s] * 1000.0 * exp(-log(10000.0) * j / 128.0);
            ref[j] = (float)cos(a);
            ref[128 + j] = (float)sin(a);
        }
        tu_poison(out, 256);
        timestep_embedding(out, sigmas[s]);
        char name[64];
        snprintf(name, sizeof name, "timestep_embedding %.4g", sigmas[s]);
        assert_close(name, out, ref, 256, TOL);
    }
}

/* Reference tables: walk the three axes explicitly rather than by pair index. */
static void rope_ref(float *cr, float *sr, long long frame, int Ty, int Tx, int dh, double theta) {
    int np = dh / 2, nt = np / 4, ny = (np - nt) / 2, nx = np - nt - ny;
    for (int ty = 0; ty < Ty; ty++)
        for (int tx = 0; tx < Tx; tx++) {
            float *c = cr + ((size_t)ty * Tx + tx) * np, *s = sr + ((size_t)ty * Tx + tx) * np;
            int j = 0;
            const long long pos[3] = {frame, ty, tx};
            const int cnt[3] = {nt, ny, nx};
            for (int axis = 0; axis < 3; axis++)
                for (int i = 0; i < cnt[axis]; i++, j++) {
                    double w = 1.0 / pow(theta, (double)i / cnt[axis]);
                    double a = fmod((double)pos[axis] * w, 2 * M_PI);
                    c[j] = (float)cos(a);
                    s[j] = (float)sin(a);
                }
            assert_int_equal(j, np);
        }
}

static void test_rope(void **state) {
    (void)state;
    const int Ty = 3, Tx = 5, N = Ty * Tx;
    const int dhs[] = {64, 22, 8};
    const long long frames[] = {0, 7, 123456789};
    for (size_t d = 0; d < sizeof dhs / sizeof dhs[0]; d++) {
        int dh = dhs[d], np = dh / 2;
        float *c = tu_fpoison((size_t)N * np), *s = tu_fpoison((size_t)N * np);
        float *cr = malloc((size_t)N * np * sizeof(float)), *sr = malloc((size_t)N * np * sizeof(float));
        for (size_t f = 0; f < sizeof frames / sizeof frames[0]; f++) {
            char name[64];
            rope_ref(cr, sr, frames[f], Ty, Tx, dh, 10000.0);
            tu_poison(c, (size_t)N * np);
            tu_poison(s, (size_t)N * np);
            rope_tables(c, s, frames[f], Ty, Tx, dh, 10000.0);
            snprintf(name, sizeof name, "rope cos dh%d f%lld", dh, frames[f]);
            assert_close(name, c, cr, (size_t)N * np, TOL);
            snprintf(name, sizeof name, "rope sin dh%d f%lld", dh, frames[f]);
            assert_close(name, s, sr, (size_t)N * np, TOL);
        }
        /* rotate 3 heads inside rows of width ld (qkv-like); the columns past n_heads*dh
         * must be untouched */
        const int heads = 3, ld = 3 * heads * dh + 5;
        float *x = tu_frand((size_t)N * ld, -1, 1, 40 + d), *ref = malloc((size_t)N * ld * sizeof(float));
        memcpy(ref, x, (size_t)N * ld * sizeof(float));
        for (int n = 0; n < N; n++)
            for (int h = 0; h < heads; h++)
                for (int j = 0; j < np; j++) {
                    size_t o = (size_t)n * ld + h * dh + 2 * j;
                    double x0 = x[o], x1 = x[o + 1], cc = cr[n * np + j], ss = sr[n * np + j];
                    ref[o] = (float)(x0 * cc - x1 * ss);
                    ref[o + 1] = (float)(x0 * ss + x1 * cc);
                }
        rope_forward(x, ld, cr, sr, N, heads, dh);
        char name[64];
        snprintf(name, sizeof name, "rope_forward dh%d", dh);
        assert_close(name, x, ref, (size_t)N * ld, TOL);
        for (size_t i = 0; i < (size_t)N * ld; i++)
            if ((int)(i % ld) >= heads * dh) assert_true(x[i] == ref[i]);
        free(c); free(s); free(cr); free(sr); free(x); free(ref);
    }
}

/* ---- attention --------------------------------------------------------------------- */

/* q, k, v are column slices of qkv-like buffers (row strides ldq, ldkv > heads*dh). Checks
 * every `every`-th query row (all of them when every = 1). */
static void check_attention(int Nq, int Nk, int heads, int dh, int every, float range,
                            uint64_t seed) {
    int D = heads * dh, ldq = 3 * D + 1, ldkv = 3 * D + 3;
    float *q = tu_frand((size_t)Nq * ldq, -range, range, seed);
    float *kv = tu_frand((size_t)Nk * ldkv, -range, range, seed + 1);
    const float *k = kv + D, *v = kv + 2 * D;
    float *out = tu_fpoison((size_t)Nq * D), *scratch = tu_fpoison(attention_scratch_floats(Nq, Nk));
    int nchk = (Nq + every - 1) / every;
    float *got = malloc((size_t)nchk * D * sizeof(float)), *ref = malloc((size_t)nchk * D * sizeof(float));
    double *p = malloc((size_t)Nk * sizeof(double));
    attention_forward(out, q, ldq, k, v, ldkv, scratch, Nq, Nk, heads, dh);
    for (int r = 0; r < nchk; r++) {
        int i = r * every;
        memcpy(got + (size_t)r * D, out + (size_t)i * D, D * sizeof(float));
        for (int h = 0; h < heads; h++) {
            double m = -INFINITY, sum = 0;
            for (int j = 0; j < Nk; j++) {
                double s = 0;
                for (int e = 0; e < dh; e++)
                    s += (double)q[(size_t)i * ldq + h * dh + e] * k[(size_t)j * ldkv + h * dh + e];
                p[j] = s / sqrt((double)dh);
                if (p[j] > m) m = p[j];
            }
            for (int j = 0; j < Nk; j++) sum += (p[j] = exp(p[j] - m));
            for (int e = 0; e < dh; e++) {
                double o = 0;
                for (int j = 0; j < Nk; j++) o += p[j] / sum * v[(size_t)j * ldkv + h * dh + e];
                ref[(size_t)r * D + h * dh + e] = (float)o;
            }
        }
    }
    for (size_t i = 0; i < (size_t)Nq * D; i++) assert_false(isnan(out[i]));
    char name[64];
    snprintf(name, sizeof name, "attention %dx%d h%d dh%d", Nq, Nk, heads, dh);
    assert_close(name, got, ref, (size_t)nchk * D, TOL);
    free(q); free(kv); free(out); free(scratch); free(got); free(ref); free(p);
}

static void test_attention(void **state) {
    (void)state;
    check_attention(37, 53, 3, 22, 1, 1.0f, 1);
    check_attention(1, 1, 1, 2, 1, 1.0f, 2);
    check_attention(300, 77, 2, 13, 1, 3.0f, 3);   /* several query blocks, peaked softmax */
    check_attention(29, 64, 2, 64, 1, 4.0f, 4);    /* large scores: max subtraction matters */
    check_attention(1024, 8192, 1, 8, 61, 1.5f, 5); /* the largest sizes the engine uses */
}

/* ---- layouts ----------------------------------------------------------------------- */

static void test_patchify(void **state) {
    (void)state;
    const int H = 6, W = 10, Z = 3, p = 2, Ty = H / p, Tx = W / p, N = Ty * Tx;
    const int F = 2 * Z * p * p;
    float *z = tu_frand((size_t)H * W * Z, -1, 1, 1), *cond = tu_frand((size_t)H * W * Z, -1, 1, 2);
    float *tok = tu_fpoison((size_t)N * F), *ref = malloc((size_t)N * F * sizeof(float));
    for (int ty = 0; ty < Ty; ty++)
        for (int tx = 0; tx < Tx; tx++)
            for (int f = 0; f < F; f++) {
                int ch = f / (p * p), py = f % (p * p) / p, px = f % p;
                size_t pix = ((size_t)(p * ty + py) * W + p * tx + px) * Z;
                ref[(ty * Tx + tx) * F + f] = ch < Z ? z[pix + ch] : cond[pix + ch - Z];
            }
    patchify_forward(tok, z, cond, H, W, Z, p);
    assert_close("patchify", tok, ref, (size_t)N * F, 0.0);

    for (int n = 0; n < N; n++)
        for (int f = Z * p * p; f < F; f++) ref[n * F + f] = 0.0f;
    tu_poison(tok, (size_t)N * F);
    patchify_forward(tok, z, NULL, H, W, Z, p);
    assert_close("patchify cond NULL", tok, ref, (size_t)N * F, 0.0);

    /* unpatchify inverts the z half: feed it tokens of Z*p*p features */
    const int Fz = Z * p * p;
    float *tz = malloc((size_t)N * Fz * sizeof(float)), *zz = tu_fpoison((size_t)H * W * Z);
    for (int n = 0; n < N; n++) memcpy(tz + n * Fz, ref + n * F, Fz * sizeof(float));
    unpatchify_forward(zz, tz, H, W, Z, p);
    assert_close("unpatchify", zz, z, (size_t)H * W * Z, 0.0);
    free(z); free(cond); free(tok); free(ref); free(tz); free(zz);
}

static void test_upsample2x(void **state) {
    (void)state;
    const int H = 13, W = 22, C = 5;
    float *inp = tu_frand((size_t)H * W * C, -1, 1, 1), *out = tu_fpoison((size_t)4 * H * W * C);
    float *ref = malloc((size_t)4 * H * W * C * sizeof(float));
    for (int y = 0; y < 2 * H; y++)
        for (int x = 0; x < 2 * W; x++)
            for (int c = 0; c < C; c++)
                ref[((size_t)y * 2 * W + x) * C + c] = inp[((size_t)(y / 2) * W + x / 2) * C + c];
    upsample2x_forward(out, inp, H, W, C);
    assert_close("upsample2x", out, ref, (size_t)4 * H * W * C, 0.0);
    free(inp); free(out); free(ref);
}

static void test_rgb(void **state) {
    (void)state;
    unsigned char u[256], back[256];
    float f[256], ref[256];
    for (int i = 0; i < 256; i++) { u[i] = (unsigned char)i; ref[i] = (float)((double)i / 255.0); }
    tu_poison(f, 256);
    rgb_u8_to_float(f, u, 256);
    assert_close("rgb_u8_to_float", f, ref, 256, 0.0);
    rgb_float_to_u8(back, f, 256);
    for (int i = 0; i < 256; i++) assert_int_equal(back[i], i);

    /* clamping, NaN, and round-to-nearest on random values */
    const size_t n = 1000;
    float *x = tu_frand(n, -0.5f, 1.5f, 7);
    x[0] = NAN; x[1] = -INFINITY; x[2] = INFINITY; x[3] = 0.5f / 255.0f; x[4] = 254.5f / 255.0f;
    unsigned char *o = malloc(n);
    memset(o, 0xAB, n);
    rgb_float_to_u8(o, x, n);
    for (size_t i = 0; i < n; i++) {
        double v = isnan(x[i]) ? 0.0 : fmin(fmax(x[i], 0.0), 1.0);
        double r = nearbyint((double)(float)((float)v * 255.0f)); /* ties to even */
        assert_int_equal(o[i], (int)r);
    }
    free(x); free(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_nt),
        cmocka_unit_test(test_gemm_nn),
        cmocka_unit_test(test_gemm_nt_fallback),
        cmocka_unit_test(test_gemm_nn_fallback),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_conv3x3),
        cmocka_unit_test(test_conv3x3_model_shapes),
        cmocka_unit_test(test_conv3x3_winograd),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_gated_residual),
        cmocka_unit_test(test_layernorm_modulate),
        cmocka_unit_test(test_timestep_embedding),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_patchify),
        cmocka_unit_test(test_upsample2x),
        cmocka_unit_test(test_rgb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
