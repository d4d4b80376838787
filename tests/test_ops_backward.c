/* Every backward op against finite differences of a float64 forward written here from the
 * spec, on small odd sizes (borders, stride-2 remainders, row strides with padding).
 *
 * For an op y = f(x) and a random upstream gradient g, the reference gradient of x is
 * d/dx sum(g * f(x)) by central differences in float64 (step 1e-6: truncation ~1e-12,
 * rounding ~1e-9). Each float64 forward is first checked against the library's float forward,
 * so the reference is the op the model runs. Gradient outputs start from random values (the
 * ops add into them) and the test checks got - start; scratch is NaN-filled, and padding
 * columns of strided gradients must stay NaN. The conv's multi-block path is checked against
 * an analytic float64 backward on a larger image. */
#include "testutil.h"

#include <string.h>

#include "ops/ops.h"
#include "ops/ops_backward.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#define TOL 1e-4  /* testutil's relative metric; fp32 backward vs float64 reference */
#define FWD_TOL 1e-5

static float *fcopy(const float *a, size_t n) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    memcpy(x, a, n * sizeof(float));
    return x;
}

static double *dcopy(const float *a, size_t n) {
    double *x = malloc((n ? n : 1) * sizeof(double));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = a[i];
    return x;
}

/* ---- the finite-difference engine ------------------------------------------------------- */

/* An op in float64: fwd computes out (n_out) from the inputs x[0..nin) with sizes sz[]. */
typedef struct fd_op fd_op;
struct fd_op {
    void (*fwd)(const fd_op *op, double *out);
    double *x[6];
    size_t nx[6];
    size_t n_out;
    int sz[8];
};

/* grad (nx[k]) = d/dx_k sum(g * fwd(x)), central differences. */
static void fd_grad(fd_op *op, int k, const float *g, double *grad) {
    double *out = malloc(op->n_out * sizeof(double));
    for (size_t j = 0; j < op->nx[k]; j++) {
        double save = op->x[k][j], h = 1e-6 * fmax(1.0, fabs(save)), lp = 0, lm = 0;
        op->x[k][j] = save + h;
        op->fwd(op, out);
        for (size_t i = 0; i < op->n_out; i++) lp += g[i] * out[i];
        op->x[k][j] = save - h;
        op->fwd(op, out);
        for (size_t i = 0; i < op->n_out; i++) lm += g[i] * out[i];
        op->x[k][j] = save;
        grad[j] = (lp - lm) / (2 * h);
    }
    free(out);
}

/* The library's float forward output against the float64 reference forward. */
static void check_forward(const char *name, fd_op *op, const float *got) {
    double *out = malloc(op->n_out * sizeof(double));
    float *ref = malloc(op->n_out * sizeof(float));
    op->fwd(op, out);
    for (size_t i = 0; i < op->n_out; i++) ref[i] = (float)out[i];
    char label[80];
    snprintf(label, sizeof label, "%s forward", name);
    assert_close(label, got, ref, op->n_out, FWD_TOL);
    free(out), free(ref);
}

/* got (after the op) - start against the finite-difference gradient of input k. `ld` and
 * `cols` describe a strided gradient: rows of ld floats of which the first cols are real and
 * the rest must still be NaN (ld == cols: contiguous). */
static void check_grad_strided(const char *name, fd_op *op, int k, const float *g, const float *got,
                               const float *start, int ld, int cols) {
    size_t n = op->nx[k];
    double *ref = malloc(n * sizeof(double));
    fd_grad(op, k, g, ref);
    float *gf = malloc(n * sizeof(float)), *rf = malloc(n * sizeof(float));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if ((int)(i % ld) >= cols) {
            assert_true(isnan(got[i])); /* padding: never written */
            continue;
        }
        gf[m] = (float)((double)got[i] - start[i]);
        rf[m] = (float)ref[i];
        m++;
    }
    assert_close(name, gf, rf, m, TOL);
    free(ref), free(gf), free(rf);
}

static void check_grad(const char *name, fd_op *op, int k, const float *g, const float *got,
                       const float *start) {
    check_grad_strided(name, op, k, g, got, start, 1, 1);
}

static void fd_free(fd_op *op) {
    for (int i = 0; i < 6; i++) free(op->x[i]);
}

/* ---- gemm_tn ------------------------------------------------------------------------------ */

static void test_gemm_tn(void **state) {
    static const int sz[][3] = {{7, 5, 3}, {37, 53, 29}, {1, 1, 1}, {4, 6, 0}};
    for (size_t t = 0; t < sizeof sz / sizeof sz[0]; t++) {
        int M = sz[t][0], N = sz[t][1], K = sz[t][2], lda = M + 3, ldb = N + 2, ldc = N + 5;
        for (int b = 0; b < 2; b++) {
            float beta = b ? 0.5f : 0.0f, alpha = -1.3f;
            float *a = tu_frand((size_t)(K ? K : 1) * lda, -1, 1, 10 + t), *bm = tu_frand((size_t)(K ? K : 1) * ldb, -1, 1, 20 + t);
            float *c0 = tu_frand((size_t)M * ldc, -1, 1, 30 + t), *c = tu_fpoison((size_t)M * ldc);
            float *ref = malloc((size_t)M * N * sizeof(float)), *got = malloc((size_t)M * N * sizeof(float));
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int k = 0; k < K; k++) s += (double)a[(size_t)k * lda + i] * bm[(size_t)k * ldb + j];
                    ref[(size_t)i * N + j] = (float)(alpha * s + (b ? beta * (double)c0[(size_t)i * ldc + j] : 0));
                    if (b) c[(size_t)i * ldc + j] = c0[(size_t)i * ldc + j];
                }
            gemm_tn(c, ldc, a, lda, bm, ldb, M, N, K, alpha, beta);
            for (int i = 0; i < M; i++) {
                memcpy(got + (size_t)i * N, c + (size_t)i * ldc, N * sizeof(float));
                for (int j = N; j < ldc; j++) assert_true(isnan(c[(size_t)i * ldc + j]));
            }
            char name[64];
            snprintf(name, sizeof name, "gemm_tn %dx%dx%d b%g", M, N, K, beta);
            assert_close(name, got, ref, (size_t)M * N, 1e-5);
            free(a), free(bm), free(c0), free(c), free(ref), free(got);
        }
    }
}

/* ---- linear ------------------------------------------------------------------------------- */

static void linear_ref(const fd_op *op, double *out) {
    int N = op->sz[0], IC = op->sz[1], OC = op->sz[2];
    const double *x = op->x[0], *w = op->x[1], *b = op->x[2];
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = b[o];
            for (int i = 0; i < IC; i++) s += x[n * IC + i] * w[o * IC + i];
            out[n * OC + o] = s;
        }
}

static void test_linear_backward(void **state) {
    int N = 5, IC = 7, OC = 3;
    float *x = tu_frand(N * IC, -1, 1, 1), *w = tu_frand(OC * IC, -1, 1, 2), *b = tu_frand(OC, -1, 1, 3);
    float *g = tu_frand(N * OC, -1, 1, 4), *out = tu_fpoison(N * OC);
    fd_op op = {.fwd = linear_ref, .x = {dcopy(x, N * IC), dcopy(w, OC * IC), dcopy(b, OC)},
                .nx = {N * IC, OC * IC, OC}, .n_out = N * OC, .sz = {N, IC, OC}};
    linear_forward(out, x, w, b, N, IC, OC);
    check_forward("linear", &op, out);
    float *dx0 = tu_frand(N * IC, -.01f, .01f, 5), *dw0 = tu_frand(OC * IC, -.01f, .01f, 6), *db0 = tu_frand(OC, -.01f, .01f, 7);
    float *dx = fcopy(dx0, N * IC), *dw = fcopy(dw0, OC * IC), *db = fcopy(db0, OC);
    linear_backward(dx, dw, db, g, x, w, N, IC, OC);
    check_grad("linear dinp", &op, 0, g, dx, dx0);
    check_grad("linear dweight", &op, 1, g, dw, dw0);
    check_grad("linear dbias", &op, 2, g, db, db0);
    /* NULL dinp and db: only the weight gradient, the same values */
    float *dw2 = fcopy(dw0, OC * IC);
    linear_backward(NULL, dw2, NULL, g, x, w, N, IC, OC);
    assert_memory_equal(dw2, dw, OC * IC * sizeof(float));
    fd_free(&op);
    free(x), free(w), free(b), free(g), free(out), free(dx0), free(dw0), free(db0), free(dx), free(dw),
        free(db), free(dw2);
}

/* ---- conv3x3 ------------------------------------------------------------------------------ */

static void conv_ref(const fd_op *op, double *out) {
    int H = op->sz[0], W = op->sz[1], Ci = op->sz[2], Co = op->sz[3], s = op->sz[4];
    int Ho = s == 2 ? (H + 1) / 2 : H, Wo = s == 2 ? (W + 1) / 2 : W;
    const double *x = op->x[0], *w = op->x[1], *b = op->x[2];
    for (int y = 0; y < Ho; y++)
        for (int xo = 0; xo < Wo; xo++)
            for (int co = 0; co < Co; co++) {
                double acc = b[co];
                for (int ci = 0; ci < Ci; ci++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = s * y + ky - 1, ix = s * xo + kx - 1;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            acc += x[((size_t)iy * W + ix) * Ci + ci] * w[(((size_t)co * Ci + ci) * 3 + ky) * 3 + kx];
                        }
                out[((size_t)y * Wo + xo) * Co + co] = acc;
            }
}

static void check_conv_fd(int H, int W, int Ci, int Co, int s, uint64_t seed) {
    int Ho = s == 2 ? (H + 1) / 2 : H, Wo = s == 2 ? (W + 1) / 2 : W;
    size_t nx = (size_t)H * W * Ci, nw = (size_t)Co * Ci * 9, no = (size_t)Ho * Wo * Co;
    float *x = tu_frand(nx, -1, 1, seed), *w = tu_frand(nw, -1, 1, seed + 1), *b = tu_frand(Co, -1, 1, seed + 2);
    float *g = tu_frand(no, -1, 1, seed + 3), *out = tu_fpoison(no);
    fd_op op = {.fwd = conv_ref, .x = {dcopy(x, nx), dcopy(w, nw), dcopy(b, Co)}, .nx = {nx, nw, Co},
                .n_out = no, .sz = {H, W, Ci, Co, s}};
    float *wp = tu_fpoison(conv3x3_packed_floats(Ci, Co)), *scr = tu_fpoison(conv3x3_scratch_floats(H, W, Ci, Co, s));
    conv3x3_pack(wp, w, Ci, Co);
    conv3x3_forward(out, x, wp, b, scr, H, W, Ci, Co, s);
    char name[96];
    snprintf(name, sizeof name, "conv %dx%d %d->%d s%d", H, W, Ci, Co, s);
    check_forward(name, &op, out);
    float *dx0 = tu_frand(nx, -.01f, .01f, seed + 4), *dw0 = tu_frand(nw, -.01f, .01f, seed + 5), *db0 = tu_frand(Co, -.01f, .01f, seed + 6);
    float *dx = fcopy(dx0, nx), *dw = fcopy(dw0, nw), *db = fcopy(db0, Co);
    float *bscr = tu_fpoison(conv3x3_backward_scratch_floats(H, W, Ci, Co, s));
    conv3x3_backward(dx, dw, db, g, x, w, bscr, H, W, Ci, Co, s);
    snprintf(name, sizeof name, "conv s%d dinp", s);
    check_grad(name, &op, 0, g, dx, dx0);
    snprintf(name, sizeof name, "conv s%d dweight", s);
    check_grad(name, &op, 1, g, dw, dw0);
    snprintf(name, sizeof name, "conv s%d dbias", s);
    check_grad(name, &op, 2, g, db, db0);
    fd_free(&op);
    free(x), free(w), free(b), free(g), free(out), free(wp), free(scr), free(dx0), free(dw0), free(db0);
    free(dx), free(dw), free(db), free(bscr);
}

/* A larger image, several blocks of im2col rows, against the analytic float64 backward. */
static void check_conv_blocks(int H, int W, int Ci, int Co, int s, uint64_t seed) {
    int Ho = s == 2 ? (H + 1) / 2 : H, Wo = s == 2 ? (W + 1) / 2 : W;
    size_t nx = (size_t)H * W * Ci, nw = (size_t)Co * Ci * 9, no = (size_t)Ho * Wo * Co;
    float *x = tu_frand(nx, -1, 1, seed), *w = tu_frand(nw, -1, 1, seed + 1), *g = tu_frand(no, -1, 1, seed + 3);
    double *rx = calloc(nx, sizeof(double)), *rw = calloc(nw, sizeof(double)), *rb = calloc(Co, sizeof(double));
    for (int y = 0; y < Ho; y++)
        for (int xo = 0; xo < Wo; xo++)
            for (int co = 0; co < Co; co++) {
                double go = g[((size_t)y * Wo + xo) * Co + co];
                rb[co] += go;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int iy = s * y + ky - 1, ix = s * xo + kx - 1;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                        for (int ci = 0; ci < Ci; ci++) {
                            size_t wi = (((size_t)co * Ci + ci) * 3 + ky) * 3 + kx, xi = ((size_t)iy * W + ix) * Ci + ci;
                            rx[xi] += go * w[wi];
                            rw[wi] += go * x[xi];
                        }
                    }
            }
    float *dx = calloc(nx, sizeof(float)), *dw = calloc(nw, sizeof(float)), *db = calloc(Co, sizeof(float));
    float *bscr = tu_fpoison(conv3x3_backward_scratch_floats(H, W, Ci, Co, s));
    conv3x3_backward(dx, dw, db, g, x, w, bscr, H, W, Ci, Co, s);
    float *fx = malloc(nx * sizeof(float)), *fw = malloc(nw * sizeof(float)), *fb = malloc(Co * sizeof(float));
    for (size_t i = 0; i < nx; i++) fx[i] = (float)rx[i];
    for (size_t i = 0; i < nw; i++) fw[i] = (float)rw[i];
    for (int i = 0; i < Co; i++) fb[i] = (float)rb[i];
    char name[96];
    snprintf(name, sizeof name, "conv %dx%d %d->%d s%d dinp", H, W, Ci, Co, s);
    assert_close(name, dx, fx, nx, TOL);
    snprintf(name, sizeof name, "conv %dx%d s%d dweight", H, W, s);
    assert_close(name, dw, fw, nw, TOL);
    snprintf(name, sizeof name, "conv %dx%d s%d dbias", H, W, s);
    assert_close(name, db, fb, Co, TOL);
    free(x), free(w), free(g), free(rx), free(rw), free(rb), free(dx), free(dw), free(db), free(bscr);
    free(fx), free(fw), free(fb);
}

static void test_conv3x3_backward(void **state) {
    check_conv_fd(5, 7, 3, 4, 1, 100);
    check_conv_fd(5, 7, 3, 4, 2, 200);
    check_conv_fd(6, 4, 2, 3, 2, 300);
    check_conv_fd(1, 1, 2, 2, 1, 400);
    check_conv_blocks(33, 33, 64, 16, 1, 500); /* 1089 pixels, 455 rows a block */
    check_conv_blocks(63, 61, 64, 8, 2, 600);  /* 992 pixels */
}

/* ---- element-wise ------------------------------------------------------------------------- */

static void relu_ref(const fd_op *op, double *out) {
    for (size_t i = 0; i < op->n_out; i++) out[i] = op->x[0][i] > 0 ? op->x[0][i] : 0;
}
static void leaky_relu_ref(const fd_op *op, double *out) {
    for (size_t i = 0; i < op->n_out; i++) out[i] = op->x[0][i] > 0 ? op->x[0][i] : 0.2 * op->x[0][i];
}
static void add_relu_ref(const fd_op *op, double *out) {
    for (size_t i = 0; i < op->n_out; i++) {
        double s = op->x[0][i] + op->x[1][i];
        out[i] = s > 0 ? s : 0;
    }
}
static void silu_ref(const fd_op *op, double *out) {
    for (size_t i = 0; i < op->n_out; i++) out[i] = op->x[0][i] / (1 + exp(-op->x[0][i]));
}
static void gelu_ref(const fd_op *op, double *out) {
    for (size_t i = 0; i < op->n_out; i++) {
        double x = op->x[0][i];
        out[i] = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    }
}

static void test_elementwise_backward(void **state) {
    const size_t n = 37;
    float *a = tu_frand(n, -3, 3, 1), *b = tu_frand(n, -3, 3, 2), *g = tu_frand(n, -1, 1, 3), *out = tu_fpoison(n);
    float *d0 = tu_frand(n, -.01f, .01f, 4), *d1 = tu_frand(n, -.01f, .01f, 5);
    a[0] = -30.0f, a[1] = 30.0f, a[2] = -100.0f; /* saturated tails: finite, right limits */
    /* relu: the backward reads the forward's output */
    fd_op op = {.fwd = relu_ref, .x = {dcopy(a, n)}, .nx = {n}, .n_out = n};
    relu_forward(out, a, n);
    check_forward("relu", &op, out);
    float *da = fcopy(d0, n);
    relu_backward(da, g, out, n);
    check_grad("relu dinp", &op, 0, g, da, d0);
    fd_free(&op);
    /* leaky_relu (slope 0.2): the backward reads the forward's output too */
    fd_op opl = {.fwd = leaky_relu_ref, .x = {dcopy(a, n)}, .nx = {n}, .n_out = n};
    leaky_relu_forward(out, a, 0.2f, n);
    check_forward("leaky_relu", &opl, out);
    memcpy(da, d0, n * sizeof(float));
    leaky_relu_backward(da, g, out, 0.2f, n);
    check_grad("leaky_relu dinp", &opl, 0, g, da, d0);
    fd_free(&opl);
    /* add_relu */
    fd_op op2 = {.fwd = add_relu_ref, .x = {dcopy(a, n), dcopy(b, n)}, .nx = {n, n}, .n_out = n};
    add_relu_forward(out, a, b, n);
    check_forward("add_relu", &op2, out);
    float *db = fcopy(d1, n);
    memcpy(da, d0, n * sizeof(float));
    add_relu_backward(da, db, g, out, n);
    check_grad("add_relu da", &op2, 0, g, da, d0);
    check_grad("add_relu db", &op2, 1, g, db, d1);
    fd_free(&op2);
    /* silu, gelu_tanh */
    fd_op op3 = {.fwd = silu_ref, .x = {dcopy(a, n)}, .nx = {n}, .n_out = n};
    silu_forward(out, a, n);
    check_forward("silu", &op3, out);
    memcpy(da, d0, n * sizeof(float));
    silu_backward(da, g, a, n);
    check_grad("silu dinp", &op3, 0, g, da, d0);
    fd_free(&op3);
    fd_op op4 = {.fwd = gelu_ref, .x = {dcopy(a, n)}, .nx = {n}, .n_out = n};
    gelu_tanh_forward(out, a, n);
    check_forward("gelu_tanh", &op4, out);
    memcpy(da, d0, n * sizeof(float));
    gelu_tanh_backward(da, g, a, n);
    check_grad("gelu_tanh dinp", &op4, 0, g, da, d0);
    fd_free(&op4);
    free(a), free(b), free(g), free(out), free(d0), free(d1), free(da), free(db);
}

/* ---- gated residual ----------------------------------------------------------------------- */

static void gated_ref(const fd_op *op, double *out) {
    int N = op->sz[0], C = op->sz[1];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            out[n * C + c] = op->x[0][n * C + c] + op->x[2][c] * op->x[1][n * C + c];
}

static void test_gated_residual_backward(void **state) {
    int N = 5, C = 9;
    float *x = tu_frand(N * C, -1, 1, 1), *y = tu_frand(N * C, -1, 1, 2), *gate = tu_frand(C, -1, 1, 3);
    float *g = tu_frand(N * C, -1, 1, 4);
    fd_op op = {.fwd = gated_ref, .x = {dcopy(x, N * C), dcopy(y, N * C), dcopy(gate, C)},
                .nx = {N * C, N * C, C}, .n_out = N * C, .sz = {N, C}};
    float *xo = fcopy(x, N * C);
    gated_residual_forward(xo, y, gate, N, C);
    check_forward("gated_residual", &op, xo);
    float *dy0 = tu_frand(N * C, -.01f, .01f, 5), *dg0 = tu_frand(C, -.01f, .01f, 6);
    float *dy = fcopy(dy0, N * C), *dg = fcopy(dg0, C);
    gated_residual_backward(dy, dg, g, y, gate, N, C);
    /* dx is g itself (the residual passes through): checked against the FD too */
    float *zero = calloc(N * C, sizeof(float));
    check_grad("gated_residual dx (= dout)", &op, 0, g, g, zero);
    check_grad("gated_residual dy", &op, 1, g, dy, dy0);
    check_grad("gated_residual dgate", &op, 2, g, dg, dg0);
    fd_free(&op);
    free(x), free(y), free(gate), free(g), free(xo), free(dy0), free(dg0), free(dy), free(dg), free(zero);
}

/* ---- layernorm + modulation --------------------------------------------------------------- */

static void lnmod_ref(const fd_op *op, double *out) {
    int N = op->sz[0], C = op->sz[1];
    const double *x = op->x[0], *shift = op->x[1], *scale = op->x[2];
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[n * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m);
        v /= C;
        for (int c = 0; c < C; c++)
            out[n * C + c] = (x[n * C + c] - m) / sqrt(v + 1e-5) * (1 + scale[c]) + shift[c];
    }
}

static void test_layernorm_modulate_backward(void **state) {
    int N = 5, C = 11;
    float *x = tu_frand(N * C, -2, 2, 1), *shift = tu_frand(C, -1, 1, 2), *scale = tu_frand(C, -1, 1, 3);
    for (int c = 0; c < C; c++) x[2 * C + c] += 50.0f; /* a row with a large common offset */
    float *g = tu_frand(N * C, -1, 1, 4), *out = tu_fpoison(N * C);
    fd_op op = {.fwd = lnmod_ref, .x = {dcopy(x, N * C), dcopy(shift, C), dcopy(scale, C)},
                .nx = {N * C, C, C}, .n_out = N * C, .sz = {N, C}};
    layernorm_modulate_forward(out, x, shift, scale, N, C);
    check_forward("layernorm_modulate", &op, out);
    float *dx0 = tu_frand(N * C, -.01f, .01f, 5), *ds0 = tu_frand(C, -.01f, .01f, 6), *dc0 = tu_frand(C, -.01f, .01f, 7);
    float *dx = fcopy(dx0, N * C), *ds = fcopy(ds0, C), *dc = fcopy(dc0, C);
    layernorm_modulate_backward(dx, ds, dc, g, x, scale, N, C);
    check_grad("layernorm_modulate dinp", &op, 0, g, dx, dx0);
    check_grad("layernorm_modulate dshift", &op, 1, g, ds, ds0);
    check_grad("layernorm_modulate dscale", &op, 2, g, dc, dc0);
    fd_free(&op);
    free(x), free(shift), free(scale), free(g), free(out), free(dx0), free(ds0), free(dc0), free(dx), free(ds),
        free(dc);
}

/* ---- RoPE --------------------------------------------------------------------------------- */

/* x: N rows of stride ld, n_heads*dh real columns; tables from op->x[1], op->x[2]. */
static void rope_ref(const fd_op *op, double *out) {
    int N = op->sz[0], ld = op->sz[1], H = op->sz[2], dh = op->sz[3], np = dh / 2;
    const double *x = op->x[0], *c = op->x[1], *s = op->x[2];
    for (size_t i = 0; i < op->n_out; i++) out[i] = x[i];
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < np; j++) {
                size_t i0 = (size_t)n * ld + h * dh + 2 * j;
                double x0 = x[i0], x1 = x[i0 + 1], cc = c[n * np + j], ss = s[n * np + j];
                out[i0] = x0 * cc - x1 * ss;
                out[i0 + 1] = x0 * ss + x1 * cc;
            }
}

static void test_rope_backward(void **state) {
    int Ty = 3, Tx = 5, N = Ty * Tx, H = 2, dh = 8, ld = H * dh + 3, np = dh / 2;
    float *ct = malloc(N * np * sizeof(float)), *st = malloc(N * np * sizeof(float));
    rope_tables(ct, st, 7, Ty, Tx, dh, 10000.0);
    float *x = tu_frand((size_t)N * ld, -1, 1, 1), *g = tu_frand((size_t)N * ld, -1, 1, 2);
    fd_op op = {.fwd = rope_ref, .x = {dcopy(x, N * ld), dcopy(ct, N * np), dcopy(st, N * np)},
                .nx = {N * ld, N * np, N * np}, .n_out = N * ld, .sz = {N, ld, H, dh}};
    float *xo = fcopy(x, N * ld);
    rope_forward(xo, ld, ct, st, N, H, dh);
    check_forward("rope", &op, xo);
    /* in place: dx = R^T g on the real columns; padding columns are left alone */
    float *dx = fcopy(g, N * ld), *zero = calloc((size_t)N * ld, sizeof(float));
    rope_backward(dx, ld, ct, st, N, H, dh);
    for (int n = 0; n < N; n++)
        for (int c = H * dh; c < ld; c++) assert_true(dx[n * ld + c] == g[n * ld + c]);
    /* the FD gradient of the padding columns is g itself (out = x there), as is dx */
    check_grad("rope dinp (in place)", &op, 0, g, dx, zero);
    fd_free(&op);
    free(ct), free(st), free(x), free(g), free(xo), free(dx), free(zero);
}

/* ---- attention ---------------------------------------------------------------------------- */

static void attention_ref(const fd_op *op, double *out) {
    int Nq = op->sz[0], Nk = op->sz[1], H = op->sz[2], dh = op->sz[3], ldq = op->sz[4], ldkv = op->sz[5];
    const double *q = op->x[0], *k = op->x[1], *v = op->x[2];
    double *s = malloc(Nk * sizeof(double));
    for (int h = 0; h < H; h++)
        for (int i = 0; i < Nq; i++) {
            double m = -INFINITY, sum = 0;
            for (int j = 0; j < Nk; j++) {
                double d = 0;
                for (int e = 0; e < dh; e++) d += q[(size_t)i * ldq + h * dh + e] * k[(size_t)j * ldkv + h * dh + e];
                s[j] = d / sqrt((double)dh);
                m = s[j] > m ? s[j] : m;
            }
            for (int j = 0; j < Nk; j++) sum += (s[j] = exp(s[j] - m));
            for (int e = 0; e < dh; e++) {
                double o = 0;
                for (int j = 0; j < Nk; j++) o += s[j] / sum * v[(size_t)j * ldkv + h * dh + e];
                out[(size_t)i * H * dh + h * dh + e] = o;
            }
        }
    free(s);
}

static void check_attention(int Nq, int Nk, int H, int dh, uint64_t seed) {
    int D = H * dh, ldq = D + 3, ldkv = D + 2, lddq = D + 1, lddkv = D + 5;
    float *q = tu_frand((size_t)Nq * ldq, -1.5f, 1.5f, seed), *k = tu_frand((size_t)Nk * ldkv, -1.5f, 1.5f, seed + 1);
    float *v = tu_frand((size_t)Nk * ldkv, -1, 1, seed + 2), *g = tu_frand((size_t)Nq * D, -1, 1, seed + 3);
    float *out = tu_fpoison((size_t)Nq * D), *scr = tu_fpoison(attention_scratch_floats(Nq, Nk));
    fd_op op = {.fwd = attention_ref, .x = {dcopy(q, Nq * ldq), dcopy(k, Nk * ldkv), dcopy(v, Nk * ldkv)},
                .nx = {Nq * ldq, Nk * ldkv, Nk * ldkv}, .n_out = Nq * D, .sz = {Nq, Nk, H, dh, ldq, ldkv}};
    attention_forward(out, q, ldq, k, v, ldkv, scr, Nq, Nk, H, dh);
    char name[80];
    snprintf(name, sizeof name, "attention %dx%d h%d dh%d", Nq, Nk, H, dh);
    check_forward(name, &op, out);
    /* gradients with padding columns: NaN there, random start values in the real ones.
     * The FD layout is the input's (stride ldq / ldkv); the gradients have their own strides,
     * so they are repacked to the input's before comparing. */
    float *dq0 = tu_frand((size_t)Nq * lddq, -.01f, .01f, seed + 4), *dk0 = tu_frand((size_t)Nk * lddkv, -.01f, .01f, seed + 5);
    float *dv0 = tu_frand((size_t)Nk * lddkv, -.01f, .01f, seed + 6);
    for (int i = 0; i < Nq; i++) tu_poison(dq0 + (size_t)i * lddq + D, lddq - D);
    for (int j = 0; j < Nk; j++) tu_poison(dk0 + (size_t)j * lddkv + D, lddkv - D), tu_poison(dv0 + (size_t)j * lddkv + D, lddkv - D);
    float *dq = fcopy(dq0, (size_t)Nq * lddq), *dk = fcopy(dk0, (size_t)Nk * lddkv), *dv = fcopy(dv0, (size_t)Nk * lddkv);
    float *bscr = tu_fpoison(attention_backward_scratch_floats(Nq, Nk, H));
    attention_backward(dq, lddq, dk, dv, lddkv, g, q, ldq, k, v, ldkv, bscr, Nq, Nk, H, dh);
    struct { const char *n; int k, rows, ld, ldin; float *got, *start; } gr[3] = {
        {"dq", 0, Nq, lddq, ldq, dq, dq0}, {"dk", 1, Nk, lddkv, ldkv, dk, dk0}, {"dv", 2, Nk, lddkv, ldkv, dv, dv0}};
    for (int t = 0; t < 3; t++) {
        float *got = tu_fpoison((size_t)gr[t].rows * gr[t].ldin), *start = tu_fpoison((size_t)gr[t].rows * gr[t].ldin);
        for (int r = 0; r < gr[t].rows; r++) {
            for (int c = D; c < gr[t].ld; c++) assert_true(isnan(gr[t].got[(size_t)r * gr[t].ld + c]));
            memcpy(got + (size_t)r * gr[t].ldin, gr[t].got + (size_t)r * gr[t].ld, D * sizeof(float));
            memcpy(start + (size_t)r * gr[t].ldin, gr[t].start + (size_t)r * gr[t].ld, D * sizeof(float));
        }
        snprintf(name, sizeof name, "attention %dx%d %s", Nq, Nk, gr[t].n);
        check_grad_strided(name, &op, gr[t].k, g, got, start, gr[t].ldin, D);
        free(got), free(start);
    }
    fd_free(&op);
    free(q), free(k), free(v), free(g), free(out), free(scr), free(dq0), free(dk0), free(dv0), free(dq), free(dk),
        free(dv), free(bscr);
}

static void test_attention_backward(void **state) {
    check_attention(5, 7, 2, 4, 1);   /* keys past the queries, as a frame seeing its history */
    check_attention(3, 3, 3, 6, 10);
    check_attention(1, 1, 1, 2, 20);  /* one key: softmax is 1, dq = dk = 0 */
}

/* ---- layouts ------------------------------------------------------------------------------ */

static void upsample_ref(const fd_op *op, double *out) {
    int H = op->sz[0], W = op->sz[1], C = op->sz[2];
    for (int y = 0; y < 2 * H; y++)
        for (int x = 0; x < 2 * W; x++)
            for (int c = 0; c < C; c++)
                out[((size_t)y * 2 * W + x) * C + c] = op->x[0][((size_t)(y / 2) * W + x / 2) * C + c];
}

static void patchify_ref(const fd_op *op, double *out) {
    int H = op->sz[0], W = op->sz[1], Z = op->sz[2], p = op->sz[3], Tx = W / p, F = 2 * Z * p * p;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int ch = 0; ch < 2 * Z; ch++) {
                size_t t = (size_t)(y / p) * Tx + x / p;
                int f = ch * p * p + (y % p) * p + x % p;
                out[t * F + f] = ch < Z ? op->x[0][((size_t)y * W + x) * Z + ch] : op->x[1][((size_t)y * W + x) * Z + ch - Z];
            }
}

static void unpatchify_ref(const fd_op *op, double *out) {
    int H = op->sz[0], W = op->sz[1], Z = op->sz[2], p = op->sz[3], Tx = W / p, F = Z * p * p;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int ch = 0; ch < Z; ch++)
                out[((size_t)y * W + x) * Z + ch] = op->x[0][((size_t)(y / p) * Tx + x / p) * F + ch * p * p + (y % p) * p + x % p];
}

static void test_layout_backward(void **state) {
    /* upsample2x */
    int H = 3, W = 5, C = 3;
    size_t ni = (size_t)H * W * C, no = 4 * ni;
    float *x = tu_frand(ni, -1, 1, 1), *g = tu_frand(no, -1, 1, 2), *out = tu_fpoison(no), *d0 = tu_frand(ni, -.01f, .01f, 3);
    fd_op op = {.fwd = upsample_ref, .x = {dcopy(x, ni)}, .nx = {ni}, .n_out = no, .sz = {H, W, C}};
    upsample2x_forward(out, x, H, W, C);
    check_forward("upsample2x", &op, out);
    float *d = fcopy(d0, ni);
    upsample2x_backward(d, g, H, W, C);
    check_grad("upsample2x dinp", &op, 0, g, d, d0);
    fd_free(&op);
    free(x), free(g), free(out), free(d0), free(d);
    /* patchify / unpatchify: latent 6x10, Z 3, p 2 */
    int LH = 6, LW = 10, Z = 3, p = 2, N = (LH / p) * (LW / p);
    size_t nl = (size_t)LH * LW * Z, nt = (size_t)N * 2 * Z * p * p, nu = (size_t)N * Z * p * p;
    float *z = tu_frand(nl, -1, 1, 4), *cond = tu_frand(nl, -1, 1, 5), *gt = tu_frand(nt, -1, 1, 6), *tok = tu_fpoison(nt);
    fd_op op2 = {.fwd = patchify_ref, .x = {dcopy(z, nl), dcopy(cond, nl)}, .nx = {nl, nl}, .n_out = nt,
                 .sz = {LH, LW, Z, p}};
    patchify_forward(tok, z, cond, LH, LW, Z, p);
    check_forward("patchify", &op2, tok);
    float *dz0 = tu_frand(nl, -.01f, .01f, 7), *dc0 = tu_frand(nl, -.01f, .01f, 8);
    float *dz = fcopy(dz0, nl), *dc = fcopy(dc0, nl);
    patchify_backward(dz, dc, gt, LH, LW, Z, p);
    check_grad("patchify dz", &op2, 0, gt, dz, dz0);
    check_grad("patchify dcond", &op2, 1, gt, dc, dc0);
    fd_free(&op2);
    float *u = tu_frand(nu, -1, 1, 9), *gl = tu_frand(nl, -1, 1, 10), *lat = tu_fpoison(nl), *du0 = tu_frand(nu, -.01f, .01f, 11);
    fd_op op3 = {.fwd = unpatchify_ref, .x = {dcopy(u, nu)}, .nx = {nu}, .n_out = nl, .sz = {LH, LW, Z, p}};
    unpatchify_forward(lat, u, LH, LW, Z, p);
    check_forward("unpatchify", &op3, lat);
    float *du = fcopy(du0, nu);
    unpatchify_backward(du, gl, LH, LW, Z, p);
    check_grad("unpatchify dtokens", &op3, 0, gl, du, du0);
    fd_free(&op3);
    free(z), free(cond), free(gt), free(tok), free(dz0), free(dc0), free(dz), free(dc), free(u), free(gl), free(lat),
        free(du0), free(du);
}

/* ---- threads ------------------------------------------------------------------------------ */

/* Above their threading thresholds the ops split work over threads; the cases above are too
 * small to. The split must not change the answer: element-wise and row-wise ops give the same
 * bits on 1 and 2 threads (sums over rows stay on one thread); ops built on GEMMs agree to
 * rounding (OpenBLAS may block a product differently when it has threads of its own). */
#ifdef MG_HAVE_OPENMP
typedef void (*run_fn)(float *out, uint64_t seed);

static void run_gelu(float *out, uint64_t seed) {
    size_t n = 40000;
    float *x = tu_frand(n, -4, 4, seed), *g = tu_frand(n, -1, 1, seed + 1);
    memset(out, 0, n * sizeof(float));
    gelu_tanh_backward(out, g, x, n);
    free(x), free(g);
}

static void run_layernorm(float *out, uint64_t seed) {
    int N = 67, C = 129; /* 8643 elements: rows split over threads */
    float *x = tu_frand((size_t)N * C, -2, 2, seed), *g = tu_frand((size_t)N * C, -1, 1, seed + 1);
    float *scale = tu_frand(C, -1, 1, seed + 2);
    memset(out, 0, ((size_t)N * C + 2 * C) * sizeof(float));
    layernorm_modulate_backward(out, out + (size_t)N * C, out + (size_t)N * C + C, g, x, scale, N, C);
    free(x), free(g), free(scale);
}

static void run_rope(float *out, uint64_t seed) {
    int Ty = 16, Tx = 16, N = Ty * Tx, H = 3, dh = 64, ld = 3 * H * dh, np = dh / 2;
    float *ct = malloc((size_t)N * np * sizeof(float)), *st = malloc((size_t)N * np * sizeof(float));
    rope_tables(ct, st, 3, Ty, Tx, dh, 10000.0);
    tu_fill_uniform(out, (size_t)N * ld, -1, 1, seed);
    rope_backward(out, ld, ct, st, N, H, dh);
    free(ct), free(st);
}

static void run_attention(float *out, uint64_t seed) {
    int Nq = 24, Nk = 72, H = 3, dh = 32, D = H * dh; /* Nq*Nk*D = 166K: heads split over threads */
    float *q = tu_frand((size_t)Nq * D, -1, 1, seed), *k = tu_frand((size_t)Nk * D, -1, 1, seed + 1);
    float *v = tu_frand((size_t)Nk * D, -1, 1, seed + 2), *g = tu_frand((size_t)Nq * D, -1, 1, seed + 3);
    float *scr = tu_fpoison(attention_backward_scratch_floats(Nq, Nk, H));
    memset(out, 0, ((size_t)Nq * D + 2 * (size_t)Nk * D) * sizeof(float));
    attention_backward(out, D, out + (size_t)Nq * D, out + (size_t)(Nq + Nk) * D, D, g, q, D, k, v, D, scr, Nq, Nk, H, dh);
    free(q), free(k), free(v), free(g), free(scr);
}

static void run_conv(float *out, uint64_t seed) {
    int H = 40, W = 36, Ci = 32, Co = 32;
    size_t nx = (size_t)H * W * Ci, nw = (size_t)Co * Ci * 9;
    float *x = tu_frand(nx, -1, 1, seed), *w = tu_frand(nw, -1, 1, seed + 1), *g = tu_frand((size_t)H * W * Co, -1, 1, seed + 2);
    float *scr = tu_fpoison(conv3x3_backward_scratch_floats(H, W, Ci, Co, 1));
    memset(out, 0, (nx + nw + Co) * sizeof(float));
    conv3x3_backward(out, out + nx, out + nx + nw, g, x, w, scr, H, W, Ci, Co, 1);
    free(x), free(w), free(g), free(scr);
}

static void check_threads(const char *name, run_fn f, size_t n, int exact) {
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    int keep = omp_get_max_threads();
    omp_set_num_threads(1);
    f(a, 77);
    omp_set_num_threads(2);
    f(b, 77);
    omp_set_num_threads(keep);
    char label[80];
    snprintf(label, sizeof label, "%s, 2 threads vs 1", name);
    if (exact) {
        printf("  %-40s %s\n", label, memcmp(a, b, n * sizeof(float)) ? "DIFFER" : "bit-identical");
        assert_memory_equal(a, b, n * sizeof(float));
    } else {
        assert_close(label, b, a, n, 1e-6);
    }
    free(a), free(b);
}
#endif

static void test_threads_change_nothing(void **state) {
#ifdef MG_HAVE_OPENMP
    check_threads("gelu_tanh_backward", run_gelu, 40000, 1);
    check_threads("layernorm_modulate_backward", run_layernorm, 67 * 129 + 2 * 129, 1);
    check_threads("rope_backward", run_rope, 256 * 3 * 3 * 64, 1);
    check_threads("attention_backward", run_attention, (24 + 2 * 72) * 96, 0);
    check_threads("conv3x3_backward", run_conv, 40 * 36 * 32 + 32 * 32 * 9 + 32, 0);
#else
    printf("  no OpenMP in this build: nothing to compare\n");
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_tn),
        cmocka_unit_test(test_linear_backward),
        cmocka_unit_test(test_conv3x3_backward),
        cmocka_unit_test(test_elementwise_backward),
        cmocka_unit_test(test_gated_residual_backward),
        cmocka_unit_test(test_layernorm_modulate_backward),
        cmocka_unit_test(test_rope_backward),
        cmocka_unit_test(test_attention_backward),
        cmocka_unit_test(test_layout_backward),
        cmocka_unit_test(test_threads_change_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
