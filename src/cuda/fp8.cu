/* Quantisation of bf16 activations and weights to FP8 e4m3 for the FP8 GEMMs (gemm.cu,
 * cu_gemm_plan_fp8), with the scales on the device, so the whole thing runs inside a captured
 * graph with no host sync:
 *   per row:    scale[r] = max_k |x[r, k]| / 448, q[r, k] = e4m3_satfinite(x[r, k] / scale[r])
 *               (one block per row; the GEMM reads the scales as cuBLASLt's outer vectors:
 *               per token for the activations, per output channel for the weights)
 *   per tensor: scale = max |x| / 448 over the whole tensor (two kernels: partial maxima per
 *               block into scratch, then every block reduces them and quantises)
 * A row (tensor) of zeros gets scale 1. 448 is e4m3's largest finite value, so nothing
 * saturates but a rounding of the maximum itself. */
#include <cuda_fp8.h>

#include "cuda/cuda_common.h"

#define FP8_MAX 448.0f
#define QT_BLOCKS 264 /* per-tensor partial maxima: 2 blocks per SM on an H100 SXM (132 SMs) */
#define QT_THREADS 256

__device__ __forceinline__ float fp8_scale_of(float amax) {
    return amax > 0.0f && amax < INFINITY ? amax / FP8_MAX : 1.0f;
}

/* 8 bf16 (one uint4) -> 8 e4m3 (one uint2), x * inv, saturating to +-448 */
__device__ __forceinline__ uint2 q8(uint4 v, float inv) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&v);
    uint32_t o[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        float2 a = __bfloat1622float2(h[2 * j]), b = __bfloat1622float2(h[2 * j + 1]);
        a.x *= inv, a.y *= inv, b.x *= inv, b.y *= inv;
        uint32_t lo = __nv_cvt_float2_to_fp8x2(a, __NV_SATFINITE, __NV_E4M3);
        uint32_t hi = __nv_cvt_float2_to_fp8x2(b, __NV_SATFINITE, __NV_E4M3);
        o[j] = (lo & 0xffffu) | (hi << 16);
    }
    return make_uint2(o[0], o[1]);
}

__device__ __forceinline__ float amax8(uint4 v) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&v);
    float m = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 a = __bfloat1622float2(h[j]);
        m = fmaxf(m, fmaxf(fabsf(a.x), fabsf(a.y)));
    }
    return m;
}

/* max over the block (blockDim.x a multiple of 32, <= 1024); every thread gets it */
__device__ __forceinline__ float block_max(float m) {
    __shared__ float red[32];
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0) red[w] = m;
    __syncthreads();
    m = (int)(threadIdx.x & 31) < nw ? red[threadIdx.x & 31] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    return m;
}

/* One block per row; each thread holds up to QR_VEC vectors of 8 (K <= QR_VEC * 8 * blockDim). */
#define QR_VEC 4
__global__ void quant_rows_kernel(uint8_t *__restrict__ q, float *__restrict__ scale, const bf16 *__restrict__ x,
                                  int K) {
    pdl_wait();
    pdl_trigger();
    int r = blockIdx.x, nv = K >> 3;
    const uint4 *xr = reinterpret_cast<const uint4 *>(x + (size_t)r * K);
    uint4 v[QR_VEC];
    float m = 0.0f;
#pragma unroll
    for (int i = 0; i < QR_VEC; i++) {
        int j = threadIdx.x + i * blockDim.x;
        if (j < nv) v[i] = xr[j], m = fmaxf(m, amax8(v[i]));
    }
    m = block_max(m);
    float s = fp8_scale_of(m), inv = 1.0f / s;
    if (threadIdx.x == 0) scale[r] = s;
    uint2 *qr = reinterpret_cast<uint2 *>(q + (size_t)r * K);
#pragma unroll
    for (int i = 0; i < QR_VEC; i++) {
        int j = threadIdx.x + i * blockDim.x;
        if (j < nv) qr[j] = q8(v[i], inv);
    }
}

__global__ void quant_amax_kernel(float *__restrict__ part, const bf16 *__restrict__ x, size_t nv) {
    pdl_wait();
    pdl_trigger();
    const uint4 *xv = reinterpret_cast<const uint4 *>(x);
    float m = 0.0f;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < nv; j += (size_t)gridDim.x * blockDim.x)
        m = fmaxf(m, amax8(xv[j]));
    m = block_max(m);
    if (threadIdx.x == 0) part[blockIdx.x] = m;
}

/* part: the maxima to reduce (nparts of them: the partials, or one amax from a GEMM) */
__global__ void quant_tensor_kernel(uint8_t *__restrict__ q, float *__restrict__ scale, const float *__restrict__ part,
                                    int nparts, const bf16 *__restrict__ x, size_t nv) {
    pdl_wait();
    pdl_trigger();
    float m = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) m = fmaxf(m, part[i]);
    m = block_max(m);
    float s = fp8_scale_of(m), inv = 1.0f / s;
    if (blockIdx.x == 0 && threadIdx.x == 0) *scale = s;
    const uint4 *xv = reinterpret_cast<const uint4 *>(x);
    uint2 *qv = reinterpret_cast<uint2 *>(q);
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < nv; j += (size_t)gridDim.x * blockDim.x)
        qv[j] = q8(xv[j], inv);
}

extern "C" int cu_quant_fp8_ok(int K) { return K > 0 && K % 16 == 0 && K <= QR_VEC * 8 * 1024; }

extern "C" mg_status cu_quant_fp8_rows(fp8_t *q, float *scale, const bf16_t *x, int M, int K, cudaStream_t st) {
    if (!cu_quant_fp8_ok(K)) return mg_fail(MG_ERR_UNSUPPORTED, "FP8 quantise: row width %d (a multiple of 16 up to %d)",
                                            K, QR_VEC * 8 * 1024);
    if (M <= 0) return MG_OK;
    int nv = K / 8, threads = (nv + QR_VEC - 1) / QR_VEC;
    threads = (threads + 31) & ~31;
    if (threads < 32) threads = 32;
    CU_LAUNCH(quant_rows_kernel, dim3(M), dim3(threads), 0, st, (uint8_t *)q, scale, (const bf16 *)x, K);
    return MG_OK;
}

extern "C" size_t cu_quant_fp8_scratch_floats(void) { return QT_BLOCKS; }

extern "C" mg_status cu_quant_fp8_tensor(fp8_t *q, float *scale, const bf16_t *x, size_t n, float *scratch,
                                         cudaStream_t st) {
    if (n % 16) return mg_fail(MG_ERR_UNSUPPORTED, "FP8 quantise: %zu elements (a multiple of 16)", n);
    if (n == 0) return MG_OK;
    CU_LAUNCH(quant_amax_kernel, dim3(QT_BLOCKS), dim3(QT_THREADS), 0, st, scratch, (const bf16 *)x, n / 8);
    CU_LAUNCH(quant_tensor_kernel, dim3(QT_BLOCKS), dim3(QT_THREADS), 0, st, (uint8_t *)q, scale,
              (const float *)scratch, QT_BLOCKS, (const bf16 *)x, n / 8);
    return MG_OK;
}

extern "C" mg_status cu_quant_fp8_tensor_amax(fp8_t *q, float *scale, const bf16_t *x, size_t n, const float *amax,
                                              cudaStream_t st) {
    if (n % 16) return mg_fail(MG_ERR_UNSUPPORTED, "FP8 quantise: %zu elements (a multiple of 16)", n);
    if (n == 0) return MG_OK;
    CU_LAUNCH(quant_tensor_kernel, dim3(QT_BLOCKS), dim3(QT_THREADS), 0, st, (uint8_t *)q, scale, amax, 1,
              (const bf16 *)x, n / 8);
    return MG_OK;
}

/* One block per layernorm: the bound of its output over every possible row. */
__global__ void ln_scales_kernel(float *__restrict__ out, const float *__restrict__ mod, int C) {
    pdl_wait();
    pdl_trigger();
    int l = blockIdx.x >> 1, j = blockIdx.x & 1;
    const float *shift = mod + (size_t)l * 6 * C + (size_t)j * 3 * C, *scale = shift + C;
    float a = 0.0f, b = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        a = fmaxf(a, fabsf(1.0f + scale[c])), b = fmaxf(b, fabsf(shift[c]));
    a = block_max(a);
    __syncthreads(); /* block_max's shared slots are reused */
    b = block_max(b);
    if (threadIdx.x == 0) out[(size_t)blockIdx.x * CU_FP8_SCALE_STRIDE] = fp8_scale_of(sqrtf((float)(C - 1)) * a + b);
}

extern "C" mg_status cu_dit_ln_fp8_scales(float *out, const float *mod, int L, int C, cudaStream_t st) {
    if (L <= 0) return MG_OK;
    CU_LAUNCH(ln_scales_kernel, dim3(2 * L), dim3(256), 0, st, out, mod, C);
    return MG_OK;
}

/* Host conversions, for uploads and the CPU twins in the tests and the lab. */
extern "C" float cu_fp82f(fp8_t v) {
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)v, __NV_E4M3);
    return __half2float(__half(h));
}

extern "C" fp8_t cu_f2fp8(float x) { return (fp8_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3); }
