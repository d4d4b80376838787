/* The card's two ceilings, measured: device memory bandwidth (a large device-to-device copy,
 * bytes read + bytes written) and the bf16 matrix rate (a large cuBLASLt GEMM, fp32
 * accumulation). Every lab program and docs/RESULTS.md compare against these numbers.
 *   build-gpu/dev/peaks            prints one table and a last line "peaks: <GB/s> <TFLOP/s>" */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } \
    } while (0)
#define CB(x)                                                                                   \
    do {                                                                                        \
        cublasStatus_t e_ = (x);                                                                \
        if (e_ != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s:%d: %s: %d\n", __FILE__, __LINE__, #x, (int)e_); exit(1); } \
    } while (0)

static int cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

__global__ void fill(__nv_bfloat16 *p, size_t n, unsigned seed) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { /* random-looking, not zeros: zeros run faster than real data */
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
        p[i] = __float2bfloat16(((h & 0xffff) / 65536.0f - 0.5f));
    }
}

int main(void) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("peaks on %s: %d SMs, %.0f MiB, L2 %d MiB, memory bus %d bits\n", prop.name, prop.multiProcessorCount,
           prop.totalGlobalMem / 1048576.0, prop.l2CacheSize >> 20, prop.memoryBusWidth);
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    const int reps = 20;
    float ms[64];

    /* 1. copy: 2 GiB device to device */
    size_t bytes = (size_t)2 << 30;
    void *src, *dst;
    CK(cudaMalloc(&src, bytes));
    CK(cudaMalloc(&dst, bytes));
    CK(cudaMemset(src, 1, bytes));
    for (int r = 0; r < reps + 3; r++) {
        CK(cudaEventRecord(a, st));
        CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        if (r >= 3) CK(cudaEventElapsedTime(&ms[r - 3], a, b));
    }
    qsort(ms, reps, sizeof(float), cmp);
    double gbs = 2.0 * bytes / (ms[reps / 2] * 1e-3) / 1e9;
    printf("copy      2 GiB d2d: %.3f ms median -> %.0f GB/s (read + write)\n", ms[reps / 2], gbs);
    CK(cudaFree(src));
    CK(cudaFree(dst));

    /* 2. bf16 GEMM 8192^3 through cuBLASLt, fp32 accumulate, bf16 out */
    int n = 8192;
    __nv_bfloat16 *A, *B, *C;
    CK(cudaMalloc(&A, (size_t)n * n * 2));
    CK(cudaMalloc(&B, (size_t)n * n * 2));
    CK(cudaMalloc(&C, (size_t)n * n * 2));
    fill<<<(n * n + 255) / 256, 256>>>(A, (size_t)n * n, 1);
    fill<<<(n * n + 255) / 256, 256>>>(B, (size_t)n * n, 2);
    CK(cudaGetLastError());
    cublasLtHandle_t lt;
    CB(cublasLtCreate(&lt));
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    CB(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    CB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
    CB(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N));
    CB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, n, n, n));
    CB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, n, n, n));
    CB(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, n, n));
    size_t wsb = (size_t)64 << 20;
    void *ws;
    CK(cudaMalloc(&ws, wsb));
    cublasLtMatmulPreference_t pref;
    CB(cublasLtMatmulPreferenceCreate(&pref));
    CB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    CB(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &res, &found));
    if (!found) { fprintf(stderr, "no GEMM algorithm\n"); return 1; }
    float one = 1, zero = 0;
    for (int r = 0; r < reps + 3; r++) {
        CK(cudaEventRecord(a, st));
        CB(cublasLtMatmul(lt, desc, &one, A, la, B, lb, &zero, C, lc, C, lc, &res.algo, ws, wsb, st));
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        if (r >= 3) CK(cudaEventElapsedTime(&ms[r - 3], a, b));
    }
    qsort(ms, reps, sizeof(float), cmp);
    double tf = 2.0 * n * n * (double)n / (ms[reps / 2] * 1e-3) / 1e12;
    printf("gemm      bf16 %dx%dx%d (cuBLASLt, fp32 acc): %.3f ms median -> %.0f TFLOP/s\n", n, n, n, ms[reps / 2], tf);
    printf("peaks: %.0f %.1f\n", gbs, tf);
    return 0;
}
