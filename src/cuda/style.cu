/* The toon and sketch targets (eval/degrade.c, style_apply) on the device, for the DiT stage's
 * batches: on the CPU they are most of a batch's cost (15.6 and 2.3 ms a 256x256 frame, against
 * 1.5 for reading and warping it), and the trainer waited for them (docs/RESULTS.md, "data").
 *
 * The same bytes as the CPU: the same float operations in the same order, each rounded on its
 * own (__fadd_rn and friends: nvcc would otherwise fuse a multiply and an add, which the CPU
 * build, -std=c11, does not), the same round-half-even conversions (lrintf, lrint), the
 * constants from style_consts_get. tests/gpu/test_cuda_train_encode.c compares them byte for
 * byte with style_apply.
 *
 * Layout: n frames of H x W RGB u8, frame f at frames + f * pitch bytes; scratch frames compact,
 * (n, H, W, 3) floats. One launch covers every frame; a thread whose frame is not of the
 * kernel's style returns at once. */
#include "cuda/cuda_common.h"
#include "cuda/cuda_ops.h"

extern "C" {
#include "eval/degrade.h"
}

__constant__ float c_ws[25], c_wr[766], c_k[2 * STYLE_SKETCH_MAX_R + 1];

__device__ __forceinline__ int clamp_i(int v, int hi) { return v < 0 ? 0 : v > hi ? hi : v; }

/* degrade.c's clamp_u8: round half to even (lrint), saturated */
__device__ __forceinline__ uint8_t clamp_u8(double v) { return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)__double2int_rn(v); }

/* One pass of the 5x5 bilateral filter: frame f of `in` (u8 frames `pitch` bytes apart, or
 * compact floats) -> compact floats. */
template <typename T>
__global__ void k_toon_bilateral(float *__restrict__ out, const T *__restrict__ in, size_t pitch,
                                 const uint8_t *__restrict__ kinds, int H, int W) {
    pdl_wait();
    pdl_trigger();
    int f = blockIdx.y, p = blockIdx.x * blockDim.x + threadIdx.x;
    if (kinds[f] != STYLE_TOON || p >= H * W) return;
    const T *a = in + (size_t)f * pitch;
    int y = p / W, x = p % W;
    float c0 = a[3 * p], c1 = a[3 * p + 1], c2 = a[3 * p + 2];
    float s0 = 0, s1 = 0, s2 = 0, ws = 0;
    for (int dy = -2; dy <= 2; dy++) {
        int yy = clamp_i(y + dy, H - 1);
        for (int dx = -2; dx <= 2; dx++) {
            const T *q = a + ((size_t)yy * W + clamp_i(x + dx, W - 1)) * 3;
            float q0 = q[0], q1 = q[1], q2 = q[2];
            float d = __fadd_rn(__fadd_rn(fabsf(__fsub_rn(q0, c0)), fabsf(__fsub_rn(q1, c1))), fabsf(__fsub_rn(q2, c2)));
            int di = __float2int_rn(d);
            float w = __fmul_rn(c_ws[(dy + 2) * 5 + dx + 2], c_wr[di > 765 ? 765 : di]);
            s0 = __fadd_rn(s0, __fmul_rn(w, q0));
            s1 = __fadd_rn(s1, __fmul_rn(w, q1));
            s2 = __fadd_rn(s2, __fmul_rn(w, q2));
            ws = __fadd_rn(ws, w);
        }
    }
    float *o = out + ((size_t)f * H * W + p) * 3;
    o[0] = __fdiv_rn(s0, ws), o[1] = __fdiv_rn(s1, ws), o[2] = __fdiv_rn(s2, ws);
}

__device__ __forceinline__ float toon_luma(const float *a, int y, int x, int W) {
    const float *p = a + ((size_t)y * W + x) * 3;
    return __fadd_rn(__fadd_rn(__fmul_rn(0.299f, p[0]), __fmul_rn(0.587f, p[1])), __fmul_rn(0.114f, p[2]));
}

/* (A + 2 B + C) - (D + 2 E + F), left to right as degrade.c writes it */
__device__ __forceinline__ float sobel_term(float a, float b, float c, float d, float e, float f) {
    return __fsub_rn(__fadd_rn(__fadd_rn(a, __fmul_rn(2.0f, b)), c), __fadd_rn(__fadd_rn(d, __fmul_rn(2.0f, e)), f));
}

/* The smoothed frame a -> 6 levels a channel, darkened where its luma's Sobel gradient is strong */
__global__ void k_toon_finish(uint8_t *__restrict__ frames, size_t pitch, const float *__restrict__ sm,
                              const uint8_t *__restrict__ kinds, int H, int W) {
    pdl_wait();
    pdl_trigger();
    int f = blockIdx.y, p = blockIdx.x * blockDim.x + threadIdx.x;
    if (kinds[f] != STYLE_TOON || p >= H * W) return;
    const float *a = sm + (size_t)f * H * W * 3;
    int y = p / W, x = p % W;
    int xm = x > 0 ? x - 1 : 0, xp = x + 1 < W ? x + 1 : W - 1;
    int ym = y > 0 ? y - 1 : 0, yp = y + 1 < H ? y + 1 : H - 1;
#define L(yy, xx) toon_luma(a, yy, xx, W)
    float gx = sobel_term(L(ym, xp), L(y, xp), L(yp, xp), L(ym, xm), L(y, xm), L(yp, xm));
    float gy = sobel_term(L(yp, xm), L(yp, x), L(yp, xp), L(ym, xm), L(ym, x), L(ym, xp));
#undef L
    float g = __fsqrt_rn(__fadd_rn(__fmul_rn(gx, gx), __fmul_rn(gy, gy)));
    float e = g <= 80 ? 0 : g >= 160 ? 1 : __fdiv_rn(__fsub_rn(g, 80.0f), 80.0f);
    uint8_t *o = frames + (size_t)f * pitch + (size_t)p * 3;
    for (int c = 0; c < 3; c++) {
        int level = __float2int_rn(__fdiv_rn(__fmul_rn(a[(size_t)p * 3 + c], 5.0f), 255.0f));
        o[c] = clamp_u8(__dmul_rn(__dmul_rn((double)level, 51.0), __dsub_rn(1.0, (double)e)));
    }
}

__device__ __forceinline__ int luma_i(const uint8_t *p) { return (77 * p[0] + 150 * p[1] + 29 * p[2] + 128) >> 8; }

/* sketch, 1: the negative of the luma, 255 - g */
__global__ void k_sketch_neg(float *__restrict__ neg, const uint8_t *__restrict__ frames, size_t pitch,
                             const uint8_t *__restrict__ kinds, int H, int W) {
    pdl_wait();
    pdl_trigger();
    int f = blockIdx.y, p = blockIdx.x * blockDim.x + threadIdx.x;
    if (kinds[f] != STYLE_SKETCH || p >= H * W) return;
    neg[(size_t)f * H * W + p] = __fsub_rn(255.0f, (float)luma_i(frames + (size_t)f * pitch + (size_t)p * 3));
}

/* sketch, 2 and 3: the Gaussian along x (dx 1) or y (dx 0), edges clamped, taps -r..r in order */
__global__ void k_sketch_blur(float *__restrict__ out, const float *__restrict__ in, const uint8_t *__restrict__ kinds,
                              int H, int W, int r, int along_x) {
    pdl_wait();
    pdl_trigger();
    int f = blockIdx.y, p = blockIdx.x * blockDim.x + threadIdx.x;
    if (kinds[f] != STYLE_SKETCH || p >= H * W) return;
    const float *a = in + (size_t)f * H * W;
    int y = p / W, x = p % W;
    float acc = 0;
    for (int i = -r; i <= r; i++) {
        float v = along_x ? a[(size_t)y * W + clamp_i(x + i, W - 1)] : a[(size_t)clamp_i(y + i, H - 1) * W + x];
        acc = __fadd_rn(acc, __fmul_rn(c_k[i + r], v));
    }
    out[(size_t)f * H * W + p] = acc;
}

/* sketch, 4: colour dodge, g * 255 / (255 - blur), grey in all three channels */
__global__ void k_sketch_dodge(uint8_t *__restrict__ frames, size_t pitch, const float *__restrict__ blur,
                               const uint8_t *__restrict__ kinds, int H, int W) {
    pdl_wait();
    pdl_trigger();
    int f = blockIdx.y, p = blockIdx.x * blockDim.x + threadIdx.x;
    if (kinds[f] != STYLE_SKETCH || p >= H * W) return;
    uint8_t *o = frames + (size_t)f * pitch + (size_t)p * 3;
    float g = (float)luma_i(o), den = __fsub_rn(255.0f, blur[(size_t)f * H * W + p]);
    uint8_t v = den <= 0.5f ? 255 : clamp_u8((double)__fdiv_rn(__fmul_rn(g, 255.0f), den));
    o[0] = o[1] = o[2] = v;
}

extern "C" mg_status cu_style_frames(uint8_t *frames, int n, int H, int W, size_t pitch, const uint8_t *kinds,
                                     float *scratch_a, float *scratch_b, cudaStream_t st) {
    if (n < 1) return MG_OK;
    if (n > 65535 || H < 1 || W < 1 || (size_t)H * W * 3 > pitch)
        return mg_fail(MG_ERR_SHAPE, "cu_style_frames: %d frames of %dx%d, %zu bytes apart", n, W, H, pitch);
    style_consts sc;
    style_consts_get(&sc);
    /* from the host's stack: a pageable copy is staged before the call returns */
    CU_TRY(cudaMemcpyToSymbolAsync(c_ws, sc.toon_ws, sizeof sc.toon_ws, 0, cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyToSymbolAsync(c_wr, sc.toon_wr, sizeof sc.toon_wr, 0, cudaMemcpyHostToDevice, st));
    CU_TRY(cudaMemcpyToSymbolAsync(c_k, sc.sketch_k, sizeof sc.sketch_k, 0, cudaMemcpyHostToDevice, st));
    cu_pdl_fence();
    dim3 grid(cu_blocks((size_t)H * W, 256), (unsigned)n), block(256);
    size_t fl = (size_t)H * W * 3;
    CU_LAUNCH(k_toon_bilateral<uint8_t>, grid, block, 0, st, scratch_a, frames, pitch, kinds, H, W);
    CU_LAUNCH(k_toon_bilateral<float>, grid, block, 0, st, scratch_b, (const float *)scratch_a, fl, kinds, H, W);
    CU_LAUNCH(k_toon_finish, grid, block, 0, st, frames, pitch, (const float *)scratch_b, kinds, H, W);
    CU_LAUNCH(k_sketch_neg, grid, block, 0, st, scratch_a, (const uint8_t *)frames, pitch, kinds, H, W);
    CU_LAUNCH(k_sketch_blur, grid, block, 0, st, scratch_b, (const float *)scratch_a, kinds, H, W, sc.sketch_r, 1);
    CU_LAUNCH(k_sketch_blur, grid, block, 0, st, scratch_a, (const float *)scratch_b, kinds, H, W, sc.sketch_r, 0);
    CU_LAUNCH(k_sketch_dodge, grid, block, 0, st, frames, pitch, (const float *)scratch_a, kinds, H, W);
    return MG_OK;
}
