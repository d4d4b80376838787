/* RoPE's rotation of one interleaved pair (2j, 2j+1) on the device, shared by rope.cu's
 * separate kernel and the attention kernels that rotate q and the current frame's k as they
 * load them (attention.cu), so both paths round the same fp32 values to bf16: explicit
 * multiply and fma, no contraction left to the compiler. Pair j of token n takes its angle
 * from the per-frame time table (j < nt) or the spatial tables (N, npairs). */
#ifndef MG_CUDA_ROPE_DEV_H
#define MG_CUDA_ROPE_DEV_H

#include "cuda/cuda_common.h"

__device__ __forceinline__ __nv_bfloat162 rope_rot(__nv_bfloat162 x, float c, float s) {
    float2 a = __bfloat1622float2(x);
    return __floats2bfloat162_rn(__fmaf_rn(a.x, c, -__fmul_rn(a.y, s)), __fmaf_rn(a.x, s, __fmul_rn(a.y, c)));
}

__device__ __forceinline__ void rope_cs(float *c, float *s, const float *cos_sp, const float *sin_sp,
                                        const cu_frame_params *p, int n, int npairs, int nt, int j) {
    if (j < nt) {
        *c = p->tcos[j], *s = p->tsin[j];
    } else {
        *c = cos_sp[(size_t)n * npairs + j], *s = sin_sp[(size_t)n * npairs + j];
    }
}

#endif
