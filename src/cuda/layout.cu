/* Data movement and the small element-wise steps of the sampler: patchify / unpatchify
 * (fused with the Euler update and guidance), re-noising for the KV refresh, the decoder's
 * nearest 2x upsample, and u8 <-> float pixels (layout.c, rgb.c and stream.c's loops). */
#include "cuda/cuda_common.h"

__global__ void patchify_kernel(bf16 *tok, const float *z, const float *cond, int H, int W, int Z, int p) {
    pdl_wait();
    pdl_trigger();
    int Tx = W / p, pp = p * p, F = 2 * Z * pp;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)(H / p) * Tx * F) return;
    int f = (int)(i % F);
    size_t t = i / F;
    int ty = (int)(t / Tx), tx = (int)(t % Tx), ch = f / pp, py = f % pp / p, px = f % p;
    size_t pix = (size_t)(p * ty + py) * W + (p * tx + px);
    float v = ch < Z ? z[pix * Z + ch] : (cond ? cond[pix * Z + ch - Z] : 0.0f);
    tok[i] = f2bf(v);
}

__global__ void unpatchify_euler_kernel(float *z, const float *tok, const float *tok_u, float g, float dt, int H,
                                        int W, int Z, int p) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)H * W * Z) return;
    int ch = (int)(i % Z);
    size_t pix = i / Z;
    int y = (int)(pix / W), x = (int)(pix % W), Tx = W / p;
    size_t t = (size_t)(y / p) * Tx + x / p;
    int f = ch * p * p + (y % p) * p + x % p, F = Z * p * p;
    float v = tok[t * F + f];
    if (tok_u) {
        float vu = tok_u[t * F + f];
        v = vu + g * (v - vu);
    }
    z[i] += dt * v;
}

__global__ void renoise_kernel(float *zc, const float *z, const float *eps, float sigma, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) zc[i] = (1.0f - sigma) * z[i] + sigma * eps[i];
}

__global__ void upsample2x_kernel(bf16 *out, const bf16 *in, int H, int W, int C) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)4 * H * W * C) return;
    int c = (int)(i % C);
    size_t pix = i / C;
    int y = (int)(pix / (2 * W)), x = (int)(pix % (2 * W));
    out[i] = in[((size_t)(y >> 1) * W + (x >> 1)) * C + c];
}

__global__ void u8_to_float_kernel(float *out, const uint8_t *in, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = (float)in[i] / 255.0f;
}

__global__ void float_to_u8_kernel(uint8_t *out, const float *in, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = to_u8(in[i]);
}

__global__ void f32_to_bf16_kernel(bf16 *out, const float *in, size_t n) {
    pdl_wait();
    pdl_trigger();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2bf(in[i]);
}

extern "C" mg_status cu_patchify(bf16_t *tok, const float *z, const float *cond, int H, int W, int Z, int p,
                                 cudaStream_t st) {
    size_t n = (size_t)(H / p) * (W / p) * 2 * Z * p * p;
    if (!n) return MG_OK;
    CU_LAUNCH(patchify_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)tok, z, cond, H, W, Z, p);
    return MG_OK;
}

extern "C" mg_status cu_unpatchify_euler(float *z, const float *tok, const float *tok_u, float g, float dt, int H,
                                         int W, int Z, int p, cudaStream_t st) {
    size_t n = (size_t)H * W * Z;
    if (!n) return MG_OK;
    CU_LAUNCH(unpatchify_euler_kernel, cu_blocks(n, 256), 256, 0, st, z, tok, tok_u, g, dt, H, W, Z, p);
    return MG_OK;
}

extern "C" mg_status cu_renoise(float *zc, const float *z, const float *eps, float sigma, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(renoise_kernel, cu_blocks(n, 256), 256, 0, st, zc, z, eps, sigma, n);
    return MG_OK;
}

extern "C" mg_status cu_upsample2x(bf16_t *out, const bf16_t *in, int H, int W, int C, cudaStream_t st) {
    size_t n = (size_t)4 * H * W * C;
    if (!n) return MG_OK;
    CU_LAUNCH(upsample2x_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, (const bf16 *)in, H, W, C);
    return MG_OK;
}

extern "C" mg_status cu_u8_to_float(float *out, const uint8_t *in, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(u8_to_float_kernel, cu_blocks(n, 256), 256, 0, st, out, in, n);
    return MG_OK;
}

extern "C" mg_status cu_float_to_u8(uint8_t *out, const float *in, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(float_to_u8_kernel, cu_blocks(n, 256), 256, 0, st, out, in, n);
    return MG_OK;
}

extern "C" mg_status cu_f32_to_bf16(bf16_t *out, const float *in, size_t n, cudaStream_t st) {
    if (!n) return MG_OK;
    CU_LAUNCH(f32_to_bf16_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)out, in, n);
    return MG_OK;
}
