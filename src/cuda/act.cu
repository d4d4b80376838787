/* Element-wise activations (act.c's twins) and the GEMM bias/GELU epilogue used where
 * cuBLASLt has no fused one. fp32 math on bf16 storage. */
#include "cuda/cuda_common.h"

/* The CPU's form: 0.5x(1+tanh z) = x / (1 + exp(-2z)), z = sqrt(2/pi)(x + 0.044715x^3). */
__device__ __forceinline__ float gelu_tanh_f(float x) {
    const float k2 = 2.0f * 0.7978845608028654f;
    return x / (1.0f + expf(-k2 * (x + 0.044715f * x * x * x)));
}

__global__ void silu_kernel(float *out, const float *in, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] / (1.0f + expf(-in[i]));
}

__global__ void gelu_kernel(bf16 *out, const bf16 *in, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2bf(gelu_tanh_f(bf2f(in[i])));
}

__global__ void relu_kernel(bf16 *out, const bf16 *in, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2bf(fmaxf(bf2f(in[i]), 0.0f));
}

__global__ void add_relu_kernel(bf16 *out, const bf16 *a, const bf16 *b, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2bf(fmaxf(bf2f(a[i]) + bf2f(b[i]), 0.0f));
}

template <typename T> __device__ __forceinline__ float ld_f(const T *p, size_t i);
template <> __device__ __forceinline__ float ld_f<float>(const float *p, size_t i) { return p[i]; }
template <> __device__ __forceinline__ float ld_f<bf16>(const bf16 *p, size_t i) { return bf2f(p[i]); }
__device__ __forceinline__ void st_f(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st_f(bf16 *p, size_t i, float v) { p[i] = f2bf(v); }

template <typename T> __global__ void bias_act_kernel(T *out, const T *bias, int M, int N, int gelu) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)M * N) return;
    float v = ld_f(out, i) + (bias ? ld_f(bias, i % N) : 0.0f);
    st_f(out, i, gelu ? gelu_tanh_f(v) : v);
}

extern "C" mg_status cu_silu(float *out, const float *in, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(silu_kernel, cu_blocks(n, 256), 256, 0, st, out, in, n);
    return MG_OK;
}

extern "C" mg_status cu_gelu_tanh(bf16_t *out, const bf16_t *in, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(gelu_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, (const bf16 *)in, n);
    return MG_OK;
}

extern "C" mg_status cu_relu(bf16_t *out, const bf16_t *in, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(relu_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, (const bf16 *)in, n);
    return MG_OK;
}

extern "C" mg_status cu_add_relu(bf16_t *out, const bf16_t *a, const bf16_t *b, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(add_relu_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, (const bf16 *)a, (const bf16 *)b, n);
    return MG_OK;
}

extern "C" mg_status cu_bias_act(void *out, int out_f32, const void *bias, int M, int N, int gelu, cudaStream_t st) {
    size_t n = (size_t)M * N;
    if (!n) return MG_OK;
    if (out_f32)
        CU_LAUNCH(bias_act_kernel<float>, cu_blocks(n, 256), 256, 0, st, (float *)out, (const float *)bias, M, N, gelu);
    else
        CU_LAUNCH(bias_act_kernel<bf16>, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, (const bf16 *)bias, M, N, gelu);
    return MG_OK;
}
