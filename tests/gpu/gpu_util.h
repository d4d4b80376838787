/* What the GPU tests (make test-gpu) share: device buffers, bf16 uploads the CPU twin sees the
 * same values of, outputs poisoned before a kernel writes them, random model files; and the op
 * tests' fixture (one context and one stream), random inputs, downloads and comparisons. */
#ifndef MIRAGE_TESTS_GPU_UTIL_H
#define MIRAGE_TESTS_GPU_UTIL_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/rng.h"
#include "cuda/cuda_ops.h"
#include "model/model.h"
#include "ops/ops.h"
#include "testutil.h"

#define CK(call) assert_int_equal((call), cudaSuccess)

static inline void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = cu_bf2f(cu_f2bf(x[i]));
}

static inline void *dmalloc(size_t bytes) {
    void *p = NULL;
    CK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

/* device bf16 copy of x (x is rounded to bf16 in place, so the CPU sees the same values) */
static inline bf16_t *up_bf16(float *x, size_t n) {
    round_bf16(x, n);
    bf16_t *h = malloc(n * 2 + 2), *d = dmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = cu_f2bf(x[i]);
    CK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static inline float *up_f32(const float *x, size_t n) {
    float *d = dmalloc(n * 4);
    CK(cudaMemcpy(d, x, n * 4, cudaMemcpyHostToDevice));
    return d;
}

/* poisoned outputs: 0xFF bytes are NaN in both bf16 and fp32 */
static inline void *poisoned(size_t bytes) {
    void *d = dmalloc(bytes);
    CK(cudaMemset(d, 0xFF, bytes));
    return d;
}

/* a model of a named config with random weights (every tensor drawn), written to the test's
 * temporary folder and loaded */
static inline mg_model *load_model(const char *config, uint64_t seed) {
    mg_config cfg;
    char path[512];
    mg_model *m = NULL;
    TU_OK(mg_config_named(config, &cfg));
    snprintf(path, sizeof path, "%s/%s-%llu.safetensors", tu_tmpdir(), config, (unsigned long long)seed);
    TU_OK(mg_model_init_file(path, &cfg, seed, 1));
    TU_OK(mg_model_load(path, &m));
    return m;
}

/* ---- the op tests' fixture ------------------------------------------------------------- */

static cu_ctx *ctx;
static cudaStream_t st;     /* what the kernels run on, synchronised by the downloads */
static uint64_t seed_ctr;   /* the seed of the next rnd(): each test sets where its draws start */

/* The group setup: the context and the stream; name (the binary's) is printed with the card. */
static inline int gpu_setup(const char *name) {
    if (cu_ctx_new(&ctx) != MG_OK) {
        fprintf(stderr, "%s: %s\n", name, mg_last_error());
        return -1;
    }
    printf("%s on %s (%d SMs)\n", name, cu_ctx_device_name(ctx), cu_ctx_sm_count(ctx));
    return cudaStreamCreate(&st) == cudaSuccess ? 0 : -1;
}

static inline int gpu_teardown(void) {
    cudaStreamDestroy(st);
    cu_ctx_free(ctx);
    return 0;
}

/* 1, after saying so, where there is no CUDA device: the binary then exits 0 (skipped). */
static inline int gpu_absent(const char *name) {
    cu_ctx *probe = NULL;
    if (cu_ctx_new(&probe) != MG_OK) {
        printf("%s: skipped: %s\n", name, mg_last_error());
        return 1;
    }
    cu_ctx_free(probe);
    return 0;
}

/* n floats uniform in [lo, hi) (malloc'd, 16 bytes over), from the next seed */
static inline float *rnd(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof(float) + 16);
    tu_fill_uniform(x, n, lo, hi, seed_ctr++);
    return x;
}

/* host fp32 copies (malloc'd) of device bf16 / fp32 arrays, once st has run */
static inline float *down_bf16(const bf16_t *d, size_t n) {
    bf16_t *h = malloc(n * 2 + 2);
    float *x = malloc(n * 4 + 4);
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(h, d, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) x[i] = cu_bf2f(h[i]);
    free(h);
    return x;
}

static inline float *down_f32(const float *d, size_t n) {
    float *x = malloc(n * 4 + 4);
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(x, d, n * 4, cudaMemcpyDeviceToHost));
    return x;
}

/* ||got - ref|| / ||ref||, printed with the largest absolute difference and the verdict
 * against tol; any NaN or infinity (an unwritten, poisoned element) fails. */
static inline double rel_l2(const char *name, const float *got, const float *ref, size_t n, double tol) {
    double num = 0, den = 0, worst = 0;
    size_t wi = 0, nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isinf(got[i])) { nan++; continue; }
        double e = (double)got[i] - ref[i];
        num += e * e, den += (double)ref[i] * ref[i];
        if (fabs(e) > worst) worst = fabs(e), wi = i;
    }
    double r = nan ? INFINITY : sqrt(num / (den > 0 ? den : 1e-300));
    printf("  %-44s n=%-8zu rel L2 %.2e (tol %.0e)  max abs %.2e at [%zu] (got %.5g ref %.5g)%s %s\n", name, n, r, tol,
           worst, wi, n ? got[wi] : 0.0, n ? ref[wi] : 0.0, nan ? " NaN/unwritten!" : "", r <= tol ? "ok" : "FAIL");
    return r;
}
#define assert_rel(name, got, ref, n, tol) assert_true(rel_l2((name), (got), (ref), (n), (tol)) <= (tol))

/* conv weight (Co, Ci, 3, 3) -> the GPU layout (Co, 9*Ci) in bf16; w is rounded to bf16 in
 * place, as by up_bf16 */
static inline bf16_t *up_conv_w(float *w, int Ci, int Co) {
    size_t K = (size_t)9 * Ci;
    round_bf16(w, K * Co);
    float *t = malloc(K * Co * 4);
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int k = 0; k < 9; k++) t[co * K + (size_t)k * Ci + ci] = w[((size_t)co * Ci + ci) * 9 + k];
    bf16_t *d = up_bf16(t, K * Co);
    free(t);
    return d;
}

/* the CPU twin of a 3x3 conv of weights w (Co, Ci, 3, 3), b (Co) or NULL */
static inline void cpu_conv(float *out, const float *in, const float *w, const float *b, int H, int W, int Ci, int Co,
                            int stride) {
    float *wp = malloc(conv3x3_packed_floats(Ci, Co) * 4);
    float *scr = malloc(conv3x3_scratch_floats(H, W, Ci, Co, stride) * 4);
    conv3x3_pack(wp, w, Ci, Co);
    conv3x3_forward(out, in, wp, b, scr, H, W, Ci, Co, stride);
    free(wp), free(scr);
}

/* A frame's inputs from r: u8 pixels, then the noise and the context noise (n frames' at once
 * with n times the sizes: the same draws) */
static inline void frame_inputs(mg_rng *r, uint8_t *in, size_t img, float *noise, float *ctxn, size_t lat) {
    for (size_t i = 0; i < img; i++) in[i] = (uint8_t)(mg_rng_next(r) >> 56);
    mg_rng_normal_fill(r, noise, lat);
    mg_rng_normal_fill(r, ctxn, lat);
}

#endif
