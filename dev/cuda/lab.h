/* Shared by the kernel lab programs: timing with events (L2 flushed before every run, median
 * of many), the card's measured peaks (from dev/cuda/peaks: MG_PEAK_GBS, MG_PEAK_TFLOPS), random
 * inputs and the relative L2 check against the CPU twin. */
#ifndef MG_DEV_CUDA_LAB_H
#define MG_DEV_CUDA_LAB_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/rng.h"
#include "cuda/cuda_ops.h"
#include "ops/ops.h"
}

#define LCK(x)                                                                                  \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } \
    } while (0)
#define LOK(x)                                                                                  \
    do {                                                                                        \
        mg_status s_ = (x);                                                                     \
        if (s_ != MG_OK) { fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, mg_last_error()); exit(1); } \
    } while (0)

static double lab_peak_gbs(void) { const char *e = getenv("MG_PEAK_GBS"); return e ? atof(e) : 0; }
static double lab_peak_tflops(void) { const char *e = getenv("MG_PEAK_TFLOPS"); return e ? atof(e) : 0; }

static float *lab_rand(size_t n, float lo, float hi, uint64_t seed) {
    float *x = (float *)malloc(n * 4 + 4);
    mg_rng r;
    mg_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = cu_bf2f(cu_f2bf(lo + (hi - lo) * mg_rng_uniform(&r)));
    return x;
}

static bf16_t *lab_up_bf16(const float *x, size_t n) {
    bf16_t *h = (bf16_t *)malloc(n * 2 + 2), *d;
    for (size_t i = 0; i < n; i++) h[i] = cu_f2bf(x[i]);
    LCK(cudaMalloc(&d, n * 2));
    LCK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static float *lab_down_bf16(const bf16_t *d, size_t n) {
    bf16_t *h = (bf16_t *)malloc(n * 2 + 2);
    float *x = (float *)malloc(n * 4 + 4);
    LCK(cudaDeviceSynchronize());
    LCK(cudaMemcpy(h, d, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) x[i] = cu_bf2f(h[i]);
    free(h);
    return x;
}

static double lab_rel_l2(const float *got, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) return INFINITY;
        double e = (double)got[i] - ref[i];
        num += e * e, den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

/* Median ms of fn over `reps` runs, each after a 256 MiB memset that evicts L2. */
typedef void (*lab_fn)(void *arg, cudaStream_t st);
static float lab_time(lab_fn fn, void *arg, cudaStream_t st, int reps) {
    static void *flush = NULL;
    if (!flush) LCK(cudaMalloc(&flush, (size_t)256 << 20));
    cudaEvent_t a, b;
    LCK(cudaEventCreate(&a));
    LCK(cudaEventCreate(&b));
    float ms[256];
    if (reps > 256) reps = 256;
    fn(arg, st); /* warm-up */
    for (int r = 0; r < reps; r++) {
        LCK(cudaMemsetAsync(flush, r & 0xff, (size_t)256 << 20, st));
        LCK(cudaEventRecord(a, st));
        fn(arg, st);
        LCK(cudaEventRecord(b, st));
        LCK(cudaEventSynchronize(b));
        LCK(cudaEventElapsedTime(&ms[r], a, b));
    }
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && ms[j - 1] > ms[j]; j--) {
            float t = ms[j]; ms[j] = ms[j - 1]; ms[j - 1] = t;
        }
    cudaEventDestroy(a), cudaEventDestroy(b);
    return ms[reps / 2];
}

static void lab_report(const char *name, float ms, double flops, double bytes, double err) {
    double tf = flops / (ms * 1e-3) / 1e12, gbs = bytes / (ms * 1e-3) / 1e9;
    double pt = lab_peak_tflops(), pg = lab_peak_gbs();
    double floor_ms = 1e3 * fmax(pt > 0 ? flops / (pt * 1e12) : 0, pg > 0 ? bytes / (pg * 1e9) : 0);
    printf("%-46s %8.4f ms | %7.1f TFLOP/s (%4.1f%% of peak) | %6.0f GB/s (%4.1f%%) | floor %.4f ms | rel L2 %.1e %s\n",
           name, ms, tf, pt > 0 ? 100 * tf / pt : 0, gbs, pg > 0 ? 100 * gbs / pg : 0, floor_ms, err,
           err <= 1e-2 ? "ok" : "FAIL");
}

#endif
