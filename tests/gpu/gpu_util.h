/* What the GPU tests (make test-gpu) share: device buffers, bf16 uploads the CPU twin sees the
 * same values of, outputs poisoned before a kernel writes them, and random model files. */
#ifndef MIRAGE_TESTS_GPU_UTIL_H
#define MIRAGE_TESTS_GPU_UTIL_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda/cuda_ops.h"
#include "model/model.h"
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

#endif
