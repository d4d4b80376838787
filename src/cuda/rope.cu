/* RoPE on q and k of the qkv GEMM's output, fused with the KV ring write (rope_forward and
 * dit.c's copy into the ring slot). One thread per (token, head, pair). The time pairs' cos/sin
 * come from the per-frame parameters on the device (computed on the host in float64 by
 * rope_tables), the spatial pairs from tables uploaded once, so the captured graph is the
 * same for every frame. */
#include "cuda/cuda_common.h"
#include "cuda/rope_dev.h"

__global__ void rope_kv_kernel(bf16 *qkv, int ldq, bf16 *k_ring, bf16 *v_ring, const float *cos_sp,
                               const float *sin_sp, const cu_frame_params *p, int N, int H, int dh) {
    pdl_wait();
    pdl_trigger();
    int npairs = dh / 2, nt = npairs / 4;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * H * npairs) return;
    int j = (int)(i % npairs), h = (int)(i / npairs % H), n = (int)(i / ((size_t)npairs * H));
    float c, s;
    rope_cs(&c, &s, cos_sp, sin_sp, p, n, npairs, nt, j);
    int d = H * dh, col = h * dh + 2 * j;
    __nv_bfloat162 *q = reinterpret_cast<__nv_bfloat162 *>(qkv + (size_t)n * ldq + col);
    __nv_bfloat162 *k = reinterpret_cast<__nv_bfloat162 *>(qkv + (size_t)n * ldq + d + col);
    const __nv_bfloat162 *v = reinterpret_cast<const __nv_bfloat162 *>(qkv + (size_t)n * ldq + 2 * d + col);
    __nv_bfloat162 qr = rope_rot(*q, c, s), kr = rope_rot(*k, c, s);
    *q = qr;
    size_t dst = ((size_t)p->slot * N + n) * d + col;
    if (k_ring) {
        *reinterpret_cast<__nv_bfloat162 *>(k_ring + dst) = kr;
        *reinterpret_cast<__nv_bfloat162 *>(v_ring + dst) = *v;
    } else {
        *k = kr;
    }
}

extern "C" mg_status cu_rope_kv(bf16_t *qkv, int ldq, bf16_t *k_ring, bf16_t *v_ring, const float *cos_sp,
                                const float *sin_sp, const cu_frame_params *p, int N, int H, int dh, cudaStream_t st) {
    if (dh % 2 || dh / 2 / 4 > CU_MAX_TPAIRS || ldq % 2)
        return mg_fail(MG_ERR_UNSUPPORTED, "CUDA rope: head width %d / row stride %d not supported", dh, ldq);
    size_t n = (size_t)N * H * (dh / 2);
    if (!n) return MG_OK;
    CU_LAUNCH(rope_kv_kernel, cu_blocks(n, 256), 256, 0, st, (bf16 *)qkv, ldq, (bf16 *)k_ring, (bf16 *)v_ring, cos_sp,
              sin_sp, p, N, H, dh);
    return MG_OK;
}
