/* LayerNorm (no affine, eps 1e-5, biased variance) + adaLN modulation, optionally preceded by
 * the gated residual add of the branch that just finished: one warp per row, the row held in
 * registers, so x is read once and written once. The residual stream x stays fp32; the
 * normalised output is bf16 because it only feeds a GEMM. Two-pass statistics as on the CPU. */
#include "cuda/cuda_common.h"

#define LN_ROWS_PER_BLOCK 8

template <int MAXV>
__global__ void ln_mod_kernel(bf16 *out, float *x, const float *y, const float *gate, const float *shift,
                              const float *scale, int N, int C) {
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
    if (C <= 256) ln_mod_kernel<8><<<grid, block, 0, st>>>(out, x, y, gate, shift, scale, N, C);
    else if (C <= 512) ln_mod_kernel<16><<<grid, block, 0, st>>>(out, x, y, gate, shift, scale, N, C);
    else if (C <= 1024) ln_mod_kernel<32><<<grid, block, 0, st>>>(out, x, y, gate, shift, scale, N, C);
    else if (C <= 2048) ln_mod_kernel<64><<<grid, block, 0, st>>>(out, x, y, gate, shift, scale, N, C);
    else return mg_fail(MG_ERR_UNSUPPORTED, "CUDA layernorm: width %d > 2048 is not supported", C);
    CU_LAUNCHED();
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
