/* LayerNorm (no affine, eps 1e-5, biased variance) + adaLN modulation, optionally preceded by
 * the gated residual add of the branch that just finished: one warp per row, the row held in
 * registers, so x is read once and written once. The residual stream x stays fp32; the
 * normalised output is bf16 because it only feeds a GEMM. Two-pass statistics as on the CPU. */
#include <cuda_fp8.h>

#include "cuda/cuda_common.h"

#define LN_ROWS_PER_BLOCK 8

/* Every global load of a row is issued before the first store: with the stores in the same
 * unrolled loop (and no __restrict__) the compiler had to keep each iteration's loads behind
 * the previous iteration's store, a chain of ~12 dependent L2 round trips per row (11 µs per
 * call at 256 x 384 on an H200, the largest DiT kernel; ncu, dev/cuda/README.md). */
/* Q8: the output goes to e4m3 q (N, C) = out / *qs (one scale for the tensor, given), for the
 * FP8 GEMMs, instead of bf16 out. */
template <int MAXV, bool Q8 = false>
__global__ void ln_mod_kernel(bf16 *__restrict__ out, float *__restrict__ x, const float *__restrict__ y,
                              const float *__restrict__ gate, const float *__restrict__ shift,
                              const float *__restrict__ scale, int N, int C, uint8_t *__restrict__ q,
                              const float *__restrict__ qs) {
    pdl_wait();
    pdl_trigger();
    int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    float *xr = x + (size_t)row * C;
    const float *yr = y ? y + (size_t)row * C : nullptr;
    float v[MAXV], sum = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        v[i] = c < C ? xr[c] : 0.0f;
    }
    if (yr) {
        float yv[MAXV], gv[MAXV];
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            yv[i] = c < C ? yr[c] : 0.0f;
            gv[i] = c < C ? gate[c] : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            v[i] += gv[i] * yv[i];
            if (c < C) xr[c] = v[i];
        }
    }
#pragma unroll
    for (int i = 0; i < MAXV; i++) sum += v[i]; /* v = 0 past the row's end */
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    float mean = sum / (float)C, ss = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        if (c < C) {
            float d = v[i] - mean;
            ss += d * d;
        }
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (Q8) {
        if (!q) return;
        float rstd = rsqrtf(ss / (float)C + 1e-5f), inv = 1.0f / *qs;
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            v[i] = c < C ? (v[i] - mean) * rstd * (1.0f + scale[c]) + shift[c] : 0.0f;
        }
        uint8_t *qrow = q + (size_t)row * C;
#pragma unroll
        for (int i = 0; i < MAXV; i++) {
            int c = lane + 32 * i;
            if (c < C) qrow[c] = (uint8_t)__nv_cvt_float_to_fp8(v[i] * inv, __NV_SATFINITE, __NV_E4M3);
        }
        return;
    }
    if (!out) return;
    float rstd = rsqrtf(ss / (float)C + 1e-5f);
    bf16 *orow = out + (size_t)row * C;
    /* the modulation 16 columns per lane at a time: loads, then stores */
#pragma unroll
    for (int i0 = 0; i0 < MAXV; i0 += 16) {
        float sh[16], sc[16];
#pragma unroll
        for (int k = 0; k < 16; k++) {
            int i = i0 + k, c = lane + 32 * i;
            bool ok = i < MAXV && c < C;
            sh[k] = ok ? shift[c] : 0.0f;
            sc[k] = ok ? scale[c] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 16; k++) {
            int i = i0 + k, c = lane + 32 * i;
            if (i < MAXV && c < C) orow[c] = f2bf((v[i] - mean) * rstd * (1.0f + sc[k]) + sh[k]);
        }
    }
}

/* The first slice's kernel, kept for the A/B (MG_CUDA_LN2=0): loads and stores interleaved. */
template <int MAXV>
__global__ void ln_mod_kernel_v1(bf16 *out, float *x, const float *y, const float *gate, const float *shift,
                              const float *scale, int N, int C) {
    pdl_wait();
    pdl_trigger();
    int row = blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    float *xr = x + (size_t)row * C;
    const float *yr = y ? y + (size_t)row * C : nullptr;
    float v[MAXV], sum = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        v[i] = 0.0f;
        if (c < C) {
            float a = xr[c];
            if (yr) {
                a += gate[c] * yr[c];
                xr[c] = a;
            }
            v[i] = a;
            sum += a;
        }
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    float mean = sum / (float)C, ss = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        if (c < C) {
            float d = v[i] - mean;
            ss += d * d;
        }
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (!out) return;
    float rstd = rsqrtf(ss / (float)C + 1e-5f);
    bf16 *orow = out + (size_t)row * C;
#pragma unroll
    for (int i = 0; i < MAXV; i++) {
        int c = lane + 32 * i;
        if (c < C) orow[c] = f2bf((v[i] - mean) * rstd * (1.0f + scale[c]) + shift[c]);
    }
}

static mg_status ln_launch(bf16 *out, float *x, const float *y, const float *gate, const float *shift,
                           const float *scale, int N, int C, cudaStream_t st) {
    if (N <= 0) return MG_OK;
    dim3 grid(cu_blocks((size_t)N, LN_ROWS_PER_BLOCK)), block(32 * LN_ROWS_PER_BLOCK);
    static int v2 = -1;
    if (v2 < 0) v2 = cu_opt("LN2", 1);
    if (!v2) {
        if (C <= 256) CU_LAUNCH(ln_mod_kernel_v1<8>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else if (C <= 512) CU_LAUNCH(ln_mod_kernel_v1<16>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else if (C <= 1024) CU_LAUNCH(ln_mod_kernel_v1<32>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else if (C <= 2048) CU_LAUNCH(ln_mod_kernel_v1<64>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C);
        else return mg_fail(MG_ERR_UNSUPPORTED, "CUDA layernorm: width %d > 2048 is not supported", C);
        return MG_OK;
    }
    if (C <= 256) CU_LAUNCH(ln_mod_kernel<8>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else if (C <= 512) CU_LAUNCH(ln_mod_kernel<16>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else if (C <= 1024) CU_LAUNCH(ln_mod_kernel<32>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else if (C <= 2048) CU_LAUNCH(ln_mod_kernel<64>, grid, block, 0, st, out, x, y, gate, shift, scale, N, C,
                                  (uint8_t *)nullptr, (float *)nullptr);
    else return mg_fail(MG_ERR_UNSUPPORTED, "CUDA layernorm: width %d > 2048 is not supported", C);
    return MG_OK;
}

extern "C" mg_status cu_layernorm_modulate(bf16_t *out, const float *x, const float *shift, const float *scale,
                                           int N, int C, cudaStream_t st) {
    return ln_launch((bf16 *)out, (float *)x, nullptr, nullptr, shift, scale, N, C, st);
}

extern "C" mg_status cu_gated_residual_ln(float *x, const float *y, const float *gate, bf16_t *out,
                                          const float *shift, const float *scale, int N, int C, cudaStream_t st) {
    return ln_launch((bf16 *)out, x, y, gate, shift, scale, N, C, st);
}

extern "C" mg_status cu_gated_residual_ln_fp8(float *x, const float *y, const float *gate, fp8_t *q, const float *qs,
                                              const float *shift, const float *scale, int N, int C, cudaStream_t st) {
    if (N <= 0) return MG_OK;
    dim3 grid(cu_blocks((size_t)N, LN_ROWS_PER_BLOCK)), block(32 * LN_ROWS_PER_BLOCK);
    uint8_t *q8 = (uint8_t *)q;
    if (C <= 256) CU_LAUNCH(ln_mod_kernel<8, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else if (C <= 512) CU_LAUNCH(ln_mod_kernel<16, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else if (C <= 1024) CU_LAUNCH(ln_mod_kernel<32, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else if (C <= 2048) CU_LAUNCH(ln_mod_kernel<64, true>, grid, block, 0, st, (bf16 *)nullptr, x, y, gate, shift, scale, N, C, q8, qs);
    else return mg_fail(MG_ERR_UNSUPPORTED, "CUDA layernorm: width %d > 2048 is not supported", C);
    return MG_OK;
}
