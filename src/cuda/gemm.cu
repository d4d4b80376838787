/* The context (device, cuBLASLt handle, workspace), the GEMMs through cuBLASLt, and the small
 * matrix-vector kernel for the conditioning rows.
 *
 * Row-major out (M, N) = A (M, K) @ W (N, K)^T is, read column-major, out^T (N, M) =
 * W^T-as-stored (K, N)^T @ A^T-as-stored (K, M): cuBLASLt sees transa = T on W (ld K),
 * transb = N on A (ld K), and D (N, M) with ld N. The bias epilogue adds a vector along D's
 * rows, i.e. along our output features, which is what a Linear bias is. */
#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"

#define CU_WORKSPACE_BYTES ((size_t)32 << 20)

struct cu_ctx {
    int device;
    cudaDeviceProp prop;
    cublasLtHandle_t lt;
    void *workspace;
};

struct cu_gemm {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    int M, N, K, out_f32, fused;
    cu_epi epi;
    int fp8, bias_bf16; /* e4m3 operands (cu_gemm_plan_fp8); the fp32 output's bias is bf16 */
    cu_fp8_scale scale;
};

extern "C" mg_status cu_fail(const char *file, int line, const char *what, const char *err) {
    const char *base = strrchr(file, '/');
    return mg_fail(MG_ERR_DEVICE, "%s:%d: %s: %s", base ? base + 1 : file, line, what, err);
}

thread_local cu_launch_state cu_ls = {0, 0, nullptr};

extern "C" void cu_pdl_enable(int on) {
    cu_ls.enable = on;
    cu_ls.after_kernel = 0;
}

extern "C" void cu_pdl_fence(void) { cu_ls.after_kernel = 0; }

extern "C" int cu_opt(const char *name, int dflt) {
    char key[64];
    snprintf(key, sizeof key, "MG_CUDA_%s", name);
    const char *v = getenv(key);
    if (!v || !*v) return dflt;
    return strcmp(v, "0") != 0;
}

extern "C" bf16_t cu_f2bf(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40); /* quiet NaN */
    return (bf16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

extern "C" float cu_bf2f(bf16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

extern "C" mg_status cu_ctx_new(cu_ctx **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError(); /* clear the error so a later CUDA call does not report it */
        return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: no CUDA device found (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    cu_ctx *c = (cu_ctx *)calloc(1, sizeof *c);
    if (!c) return mg_fail(MG_ERR_NOMEM, "out of memory creating a CUDA context");
    *out = c;
    CU_TRY(cudaGetDevice(&c->device));
    CU_TRY(cudaGetDeviceProperties(&c->prop, c->device));
    if (c->prop.major < 9) {
        mg_status s = mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: %s is compute capability %d.%d; this build "
                              "is for Hopper (sm_90a)", c->prop.name, c->prop.major, c->prop.minor);
        cu_ctx_free(c);
        *out = NULL;
        return s;
    }
    CU_MG(cu_attention_setup());
    CUBLAS_TRY(cublasLtCreate(&c->lt));
    CU_TRY(cudaMalloc(&c->workspace, CU_WORKSPACE_BYTES));
    return MG_OK;
}

extern "C" void cu_ctx_free(cu_ctx *c) {
    if (!c) return;
    if (c->workspace) cudaFree(c->workspace);
    if (c->lt) cublasLtDestroy(c->lt);
    free(c);
}

extern "C" const char *cu_ctx_device_name(const cu_ctx *c) { return c->prop.name; }
extern "C" int cu_ctx_sm_count(const cu_ctx *c) { return c->prop.multiProcessorCount; }

/* ---- GEMM ------------------------------------------------------------------------------ */

#define GEMM_CANDIDATES 8

/* Times one candidate algorithm on scratch operands: the mean of 10 back-to-back runs after
 * 2 warm-ups, in ms; < 0 when the algorithm fails to run. */
static float gemm_time(cu_ctx *c, cu_gemm *g, const cublasLtMatmulAlgo_t *algo, void *out, const void *a,
                       const void *w, const void *bias) {
    const float one = 1.0f, zero = 0.0f;
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess) return -1.0f;
    if (cudaEventCreate(&e1) != cudaSuccess) { cudaEventDestroy(e0); return -1.0f; }
    if (g->epi != CU_EPI_NONE) cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    float ms = -1.0f;
    int ok = 1;
    for (int i = 0; i < 12 && ok; i++) {
        if (i == 2) cudaEventRecord(e0, 0);
        ok = cublasLtMatmul(c->lt, g->desc, &one, w, g->la, a, g->lb, &zero, out, g->lc, out, g->lc, algo, c->workspace,
                            CU_WORKSPACE_BYTES, 0) == CUBLAS_STATUS_SUCCESS;
    }
    cudaEventRecord(e1, 0);
    if (ok && cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess) ms /= 10;
    else ms = -1.0f;
    cudaGetLastError();
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return ms;
}

static cublasStatus_t gemm_set_scales(const cu_gemm *g, const float *a_scale, const float *w_scale) {
    /* cuBLASLt's A is our W, its B our A (see the top of the file) */
    cublasStatus_t e = cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale,
                                                      sizeof w_scale);
    if (e == CUBLAS_STATUS_SUCCESS)
        e = cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a_scale, sizeof a_scale);
    return e;
}

/* The heuristic's best few algorithms, each timed on this very shape (outside any capture);
 * the fastest wins. The heuristic's first choice is often not the fastest for the DiT's small
 * M (256 tokens at 256x256), where a split-K variant can add a reduction launch.
 * MG_GEMM_AUTOTUNE=0 keeps the heuristic's first. */
static mg_status gemm_heuristic(cu_ctx *c, cu_gemm *g, int *found) {
    cublasLtMatmulPreference_t pref;
    size_t ws = CU_WORKSPACE_BYTES;
    CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t r[GEMM_CANDIDATES];
    memset(r, 0, sizeof r);
    int n = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(c->lt, g->desc, g->la, g->lb, g->lc, g->lc, pref, GEMM_CANDIDATES,
                                                      r, &n);
    cublasLtMatmulPreferenceDestroy(pref);
    *found = (s == CUBLAS_STATUS_SUCCESS && n > 0);
    if (!*found) return MG_OK;
    g->algo = r[0].algo;
    const char *env = getenv("MG_GEMM_AUTOTUNE");
    if (n == 1 || (env && !strcmp(env, "0"))) return MG_OK;
    size_t osz = g->out_f32 ? 4 : 2, esz = g->fp8 ? 1 : 2;
    size_t nsc = (size_t)(g->M > g->N ? g->M : g->N);
    void *a = NULL, *w = NULL, *out = NULL, *bias = NULL;
    float *sc = NULL;
    if (cudaMalloc(&a, (size_t)g->M * g->K * esz) == cudaSuccess && cudaMalloc(&w, (size_t)g->N * g->K * esz) == cudaSuccess &&
        cudaMalloc(&out, (size_t)g->M * g->N * osz) == cudaSuccess && cudaMalloc(&bias, (size_t)g->N * 4) == cudaSuccess &&
        cudaMalloc((void **)&sc, nsc * 4) == cudaSuccess) {
        /* 0x3c3c: bf16 ~0.0115 everywhere (e4m3 0x3c: 1.5), not zeros (zeros can run faster
         * than real data); 0x3c3c3c3c as fp32 scales: ~0.0115 */
        cudaMemset(a, 0x3c, (size_t)g->M * g->K * esz);
        cudaMemset(w, 0x3c, (size_t)g->N * g->K * esz);
        cudaMemset(bias, 0x3c, (size_t)g->N * 4);
        cudaMemset(sc, 0x3c, nsc * 4);
        if (g->fp8) gemm_set_scales(g, sc, sc);
        float best = -1.0f;
        for (int i = 0; i < n; i++) {
            if (r[i].state != CUBLAS_STATUS_SUCCESS || r[i].workspaceSize > ws) continue;
            float ms = gemm_time(c, g, &r[i].algo, out, a, w, bias);
            if (ms > 0 && (best < 0 || ms < best)) best = ms, g->algo = r[i].algo;
        }
        /* e4m3 variants (scale modes, bias types) the heuristic offers may still refuse to run */
        if (g->fp8 && best < 0) *found = 0;
    }
    cudaGetLastError(); /* a failed scratch allocation only skips the tuning */
    cudaFree(a), cudaFree(w), cudaFree(out), cudaFree(bias), cudaFree(sc);
    CU_TRY(cudaDeviceSynchronize());
    return MG_OK;
}

/* fp8: e4m3 A and W with scales (sc), fast-accumulation flag fast; else bf16. */
static mg_status gemm_plan(cu_ctx *c, cu_gemm **out, int M, int N, int K, int out_f32, cu_epi epi, int fp8,
                           cu_fp8_scale sc, int fast, float *amax_d) {
    *out = NULL;
    cu_gemm *g = (cu_gemm *)calloc(1, sizeof *g);
    if (!g) return mg_fail(MG_ERR_NOMEM, "out of memory planning a GEMM");
    g->M = M, g->N = N, g->K = K, g->out_f32 = out_f32, g->epi = epi, g->fp8 = fp8, g->scale = sc;
    cudaDataType_t ot = out_f32 ? CUDA_R_32F : CUDA_R_16BF, it = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    mg_status st = MG_OK;
#define PLAN_TRY(call)                                                                               \
    do {                                                                                             \
        cublasStatus_t e_ = (call);                                                                  \
        if (e_ != CUBLAS_STATUS_SUCCESS) { st = cu_fail(__FILE__, __LINE__, #call, cublasLtGetStatusString(e_)); goto fail; } \
    } while (0)
    PLAN_TRY(cublasLtMatmulDescCreate(&g->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&g->la, it, K, N, K));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&g->lb, it, K, M, K));
    PLAN_TRY(cublasLtMatrixLayoutCreate(&g->lc, ot, N, M, N));
    if (fp8) {
        int8_t fa = fast ? 1 : 0;
        int32_t mode = sc == CU_FP8_ROWS ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F : CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
        PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fa, sizeof fa));
        PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
        PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
        if (amax_d) PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, &amax_d, sizeof amax_d));
    }
    {
        int found = 0;
        if (epi != CU_EPI_NONE) {
            cublasLtEpilogue_t e = epi == CU_EPI_GELU_BIAS ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
            const void *bias = c->workspace; /* any 256-byte aligned address: the heuristic reads alignment only */
            PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
            PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
            if (fp8) { /* the bias type is D's (fp32 or bf16); for fp32 out cuBLASLt may want bf16 */
                int32_t bt = ot;
                PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
            }
            st = gemm_heuristic(c, g, &found);
            if (st != MG_OK) goto fail;
            if (!found && fp8 && out_f32) {
                int32_t bt = CUDA_R_16BF;
                PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
                st = gemm_heuristic(c, g, &found);
                if (st != MG_OK) goto fail;
                g->bias_bf16 = found;
            }
            g->fused = found;
        }
        if (!found) {
            cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_DEFAULT;
            PLAN_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
            st = gemm_heuristic(c, g, &found);
            if (st != MG_OK) goto fail;
            g->fused = 0;
        }
        if (!found) {
            st = mg_fail(fp8 ? MG_ERR_UNSUPPORTED : MG_ERR_DEVICE, "cuBLASLt has no algorithm for %s GEMM %dx%dx%d (out %s%s)",
                         fp8 ? (sc == CU_FP8_ROWS ? "e4m3 (per-row scales)" : "e4m3") : "bf16", M, N, K,
                         out_f32 ? "f32" : "bf16", amax_d ? ", amax of the output" : "");
            goto fail;
        }
    }
#undef PLAN_TRY
    *out = g;
    return MG_OK;
fail:
    cu_gemm_free(g);
    return st;
}

extern "C" mg_status cu_gemm_plan(cu_ctx *c, cu_gemm **out, int M, int N, int K, int out_f32, cu_epi epi) {
    return gemm_plan(c, out, M, N, K, out_f32, epi, 0, CU_FP8_TENSOR, 0, NULL);
}

extern "C" mg_status cu_gemm_plan_fp8(cu_ctx *c, cu_gemm **out, int M, int N, int K, int out_f32, cu_epi epi,
                                      cu_fp8_scale scale, int fast_accum, float *amax_out) {
    *out = NULL;
    if (K % 16 || N % 16 || M <= 0)
        return mg_fail(MG_ERR_UNSUPPORTED, "e4m3 GEMM %dx%dx%d: K and N must be multiples of 16", M, N, K);
    return gemm_plan(c, out, M, N, K, out_f32, epi, 1, scale, fast_accum, amax_out);
}

extern "C" int cu_gemm_fused(const cu_gemm *g) { return g->epi == CU_EPI_NONE || g->fused; }
extern "C" int cu_gemm_bias_bf16(const cu_gemm *g) { return g->bias_bf16; }

extern "C" mg_status cu_gemm_run_fp8(cu_ctx *c, const cu_gemm *g, void *out, const fp8_t *a, const float *a_scale,
                                     const fp8_t *w, const float *w_scale, const void *bias, cudaStream_t st) {
    if (!g->fp8) return mg_fail(MG_ERR_ARG, "cu_gemm_run_fp8: the plan is not an e4m3 one");
    CUBLAS_TRY(gemm_set_scales(g, a_scale, w_scale));
    return cu_gemm_run(c, g, out, (const bf16_t *)a, (const bf16_t *)w, bias, st);
}

extern "C" mg_status cu_gemm_run(cu_ctx *c, const cu_gemm *g, void *out, const bf16_t *a, const bf16_t *w,
                                 const void *bias, cudaStream_t st) {
    const float one = 1.0f, zero = 0.0f;
    if (g->epi != CU_EPI_NONE && g->fused)
        CUBLAS_TRY(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    CUBLAS_TRY(cublasLtMatmul(c->lt, g->desc, &one, w, g->la, a, g->lb, &zero, out, g->lc, out, g->lc, &g->algo,
                              c->workspace, CU_WORKSPACE_BYTES, st));
    if (g->epi != CU_EPI_NONE && !g->fused)
        CU_MG(cu_bias_act(out, g->out_f32, bias, g->M, g->N, g->epi == CU_EPI_GELU_BIAS, st));
    return MG_OK;
}

extern "C" void cu_gemm_free(cu_gemm *g) {
    if (!g) return;
    if (g->desc) cublasLtMatmulDescDestroy(g->desc);
    if (g->la) cublasLtMatrixLayoutDestroy(g->la);
    if (g->lb) cublasLtMatrixLayoutDestroy(g->lb);
    if (g->lc) cublasLtMatrixLayoutDestroy(g->lc);
    free(g);
}

/* ---- conditioning rows: one warp per output feature, all R rows ----------------------- */

#define ROWS_MAX 64
__global__ void linear_rows_kernel(float *out, const float *x, const bf16 *w, const float *b, int R, int K, int N) {
    pdl_wait();
    pdl_trigger();
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= N) return;
    const bf16 *wr = w + (size_t)warp * K;
    for (int r0 = 0; r0 < R; r0 += 8) {
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = lane; k < K; k += 32) {
            float wk = bf2f(wr[k]);
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (r0 + i < R) acc[i] += x[(size_t)(r0 + i) * K + k] * wk;
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float v = acc[i];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0 && r0 + i < R) out[(size_t)(r0 + i) * N + warp] = v + (b ? b[warp] : 0.0f);
        }
    }
}

extern "C" mg_status cu_linear_rows(float *out, const float *x, const bf16_t *w, const float *b, int R, int K,
                                    int N, cudaStream_t st) {
    if (R <= 0 || N <= 0) return MG_OK;
    CU_LAUNCH(linear_rows_kernel, cu_blocks((size_t)N * 32, 256), 256, 0, st, out, x, (const bf16 *)w, b, R, K, N);
    return MG_OK;
}
