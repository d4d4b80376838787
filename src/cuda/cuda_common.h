/* Shared by the .cu files: the one checking macro, bf16 helpers and the mma/cp.async
 * wrappers. Kept C-style: no classes, no exceptions, no std library. */
#ifndef MG_CUDA_COMMON_H
#define MG_CUDA_COMMON_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/cuda_ops.h"

extern "C" {
#include "core/status.h"
}

/* Every CUDA runtime call: a failure becomes MG_ERR_DEVICE naming file, line and call. */
#define CU_TRY(call)                                                                  \
    do {                                                                              \
        cudaError_t cu_e_ = (call);                                                   \
        if (cu_e_ != cudaSuccess) return cu_fail(__FILE__, __LINE__, #call, cudaGetErrorString(cu_e_)); \
    } while (0)
/* CU_TRY for set-up code that must undo what it made: the status goes to s, then goto fail. */
#define CU_TRY_GOTO(s, call)                                                              \
    do {                                                                                  \
        cudaError_t cu_e_ = (call);                                                       \
        if (cu_e_ != cudaSuccess) {                                                       \
            (s) = cu_fail(__FILE__, __LINE__, #call, cudaGetErrorString(cu_e_));          \
            goto fail;                                                                    \
        }                                                                                 \
    } while (0)
/* After every kernel launch. */
#define CU_LAUNCHED() CU_TRY(cudaGetLastError())
/* Every cuBLAS(Lt) call. */
#define CUBLAS_TRY(call)                                                              \
    do {                                                                              \
        cublasStatus_t cb_e_ = (call);                                                \
        if (cb_e_ != CUBLAS_STATUS_SUCCESS) return cu_fail(__FILE__, __LINE__, #call, cublasLtGetStatusString(cb_e_)); \
    } while (0)
/* Propagate an mg_status. */
#define CU_MG(expr)                                  \
    do {                                             \
        mg_status cu_s_ = (expr);                    \
        if (cu_s_ != MG_OK) return cu_s_;            \
    } while (0)

typedef __nv_bfloat16 bf16;

static inline unsigned cu_blocks(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---- launches: programmatic dependent launch (PDL) --------------------------------------
 * Every kernel of the library starts with pdl_wait() (griddepcontrol.wait: returns once the
 * grids it depends on have completed and their writes are visible; a no-op for a kernel
 * launched without the attribute), then pdl_trigger() (lets the next kernel in the stream be
 * launched now, so its blocks are resident and waiting when this one ends). Work that reads
 * nothing a predecessor writes (weights) may come before the wait. So a chain of kernels
 * launched with the attribute computes exactly what plain launches compute, and the launch
 * latency between them overlaps the previous kernel's tail.
 *
 * cu_launch() adds the attribute only when the caller enabled it (cu_pdl_enable, per thread:
 * the frame step does with MG_CUDA_PDL=1, outside profiling) and the previous operation on
 * this thread was a kernel launch on the same stream (cu_pdl_fence() after memcpys and
 * events), so a programmatic edge always links two kernels of one stream. Measured on an H200
 * it made the graph replay ~0.4 ms slower per frame (dev/cuda/README.md), so it is off by
 * default; the waits cost nothing in plain launches. */
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

typedef struct cu_launch_state {
    int enable;      /* PDL wanted (cu_pdl_enable) */
    int after_kernel; /* the last operation this thread enqueued was one of our launches */
    cudaStream_t last;
} cu_launch_state;
extern thread_local cu_launch_state cu_ls;

/* cluster_z > 1: thread-block clusters of (1, 1, cluster_z) (gridDim.z a multiple of it). */
template <typename... KArgs, typename... Args>
static inline cudaError_t cu_launch_ex(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                       unsigned cluster_z, Args... args) {
    cudaLaunchAttribute at[2];
    unsigned n = 0;
    if (cu_ls.enable && cu_ls.after_kernel && cu_ls.last == st) {
        at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[n].val.programmaticStreamSerializationAllowed = 1;
        n++;
    }
    if (cluster_z > 1) {
        at[n].id = cudaLaunchAttributeClusterDimension;
        at[n].val.clusterDim.x = 1;
        at[n].val.clusterDim.y = 1;
        at[n].val.clusterDim.z = cluster_z;
        n++;
    }
    cudaLaunchConfig_t cfg;
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = n ? at : nullptr;
    cfg.numAttrs = n;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
    cu_ls.after_kernel = 1;
    cu_ls.last = st;
    return e;
}
template <typename... KArgs, typename... Args>
static inline cudaError_t cu_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                    Args... args) {
    return cu_launch_ex(kernel, grid, block, smem, st, 1u, args...);
}
/* A launch through cu_launch: the error is the launch's (CU_LAUNCHED reads it too). */
#define CU_LAUNCH(...) CU_TRY(cu_launch(__VA_ARGS__))

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }

/* clamp to [0, 1] (NaN -> 0), round(255 x) to nearest even, as rgb_float_to_u8 */
__device__ __forceinline__ uint8_t to_u8(float x) {
    x = x > 0.0f ? x : 0.0f;
    x = x < 1.0f ? x : 1.0f;
    return (uint8_t)__float2int_rn(x * 255.0f);
}

/* Two floats -> one register of two bf16 (the first in the low half, as mma wants). */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* D = A (16x16 bf16, row) * B (16x8 bf16, col) + D, fp32. Fragment layouts (PTX ISA,
 * "mma.m16n8k16"), g = lane/4, t = lane%4:
 *   A: a[0] = (g, 2t..2t+1)  a[1] = (g+8, 2t..)  a[2] = (g, 2t+8..)  a[3] = (g+8, 2t+8..)
 *   B: b[0] = (k 2t..2t+1, n g)  b[1] = (k 2t+8..2t+9, n g)
 *   C: c[0], c[1] = (g, 2t..2t+1)  c[2], c[3] = (g+8, 2t..2t+1) */
__device__ __forceinline__ void mma_bf16_16816(float *d, const uint32_t *a, const uint32_t *b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Four 8x8 b16 matrices from shared memory; lanes 8i..8i+7 give the row addresses of matrix i
 * (16 bytes each), register i receives matrix i: lane l gets row l/4, columns 2(l%4), 2(l%4)+1
 * (low half first), or with .trans the transpose: rows 2(l%4), 2(l%4)+1 of column l/4. */
__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *smem) {
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, const void *smem) {
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

/* 16-byte asynchronous copy global -> shared; valid == 0 writes zeros (src not read). */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#endif
