/* The device copy of the training state (cuda_train.h): five flat fp32 arrays laid out as the
 * host's train_params, one stream, the optimizer.
 *
 * The optimizer kernels reproduce optimizer.c bit for bit: the CPU is compiled as ISO C11
 * (no FMA contraction), so every multiply-add here is written with __fmul_rn/__fadd_rn (nvcc
 * would otherwise fuse them), sqrtf and '/' are IEEE-rounded (no fast math), and the bias
 * corrections are computed on the host exactly as adamw_step computes them. The gradient norm
 * is summed in float64 like grad_global_norm, over a fixed grid (deterministic; the order
 * differs from the CPU's, so the norm agrees to float64 rounding, not bitwise). */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"
#include "cuda/cuda_train.h"

#define RED_BLOCKS 512 /* partial sums of the gradient norm */
#define RED_THREADS 256

typedef struct cp_impl {
    cudaStream_t st;
    cu_ctx *ctx;
    unsigned long long *d_off; /* (n_tensors + 1) tensor offsets */
    unsigned long long *d_end; /* (n_tensors) offset + numel: the padding after is left alone */
    unsigned char *d_decay;    /* (n_tensors) 1 where weight decay applies (rank >= 2) */
    double *d_part;            /* (RED_BLOCKS) partial sums of squares */
    double *d_norm;            /* (1) */
    float *d_coef;             /* (1) clip coefficient, 1 when no clipping */
    double *h_norm;            /* (1) pinned */
    bf16_t *bf16;              /* (count) bf16 copy of param, see cuda_params_bf16 */
    void *mem;                 /* the one device allocation of the five arrays */
    cuda_grad_hook hook;       /* cuda_params_set_grad_hook, or NULL */
    void *hook_user;
} cp_impl;

static cp_impl *impl_of(const cuda_params *cp) { return (cp_impl *)cp->impl; }

static mg_status check_range(const cuda_params *cp, int first, int last, const char *fn) {
    if (!cp || !cp->impl) return mg_fail(MG_ERR_ARG, "%s: the device training state is not initialised", fn);
    if (first < 0 || last < first || last > cp->tp->n_tensors)
        return mg_fail(MG_ERR_ARG, "%s: tensor range [%d, %d) outside [0, %d)", fn, first, last, cp->tp->n_tensors);
    return MG_OK;
}

/* index of the tensor holding float k: the last i with off[i] <= k (off[0] = 0 <= k) */
__device__ __forceinline__ int tensor_of(const unsigned long long *off, int lo, int hi, unsigned long long k) {
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (off[mid] <= k) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* ---- kernels ----------------------------------------------------------------------------- */

__global__ void k_adamw(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                        float *__restrict__ v, const unsigned long long *__restrict__ off,
                        const unsigned long long *__restrict__ end, const unsigned char *__restrict__ decay_on,
                        int first, int last, unsigned long long k0, unsigned long long k1, float b1, float b2,
                        float eps, float step_size, float inv_sqrt_bc2, float decay) {
    pdl_wait();
    pdl_trigger();
    float omb1 = 1.0f - b1, omb2 = 1.0f - b2;
    for (unsigned long long k = k0 + (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < k1;
         k += (unsigned long long)gridDim.x * blockDim.x) {
        int i = tensor_of(off, first, last, k);
        if (k >= end[i]) continue; /* padding: adamw_step does not touch it */
        float gk = g[k];
        float mk = __fadd_rn(__fmul_rn(b1, m[k]), __fmul_rn(omb1, gk));
        float vk = __fadd_rn(__fmul_rn(b2, v[k]), __fmul_rn(__fmul_rn(omb2, gk), gk));
        float den = __fadd_rn(__fmul_rn(__fsqrt_rn(vk), inv_sqrt_bc2), eps);
        float d = decay_on[i] ? decay : 1.0f;
        p[k] = __fsub_rn(__fmul_rn(p[k], d), __fdiv_rn(__fmul_rn(step_size, mk), den));
        m[k] = mk;
        v[k] = vk;
    }
}

__global__ void k_sumsq(double *part, const float *__restrict__ g, size_t n) {
    pdl_wait();
    pdl_trigger();
    __shared__ double sh[RED_THREADS];
    double s = 0.0;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        double x = (double)g[k];
        s = __fma_rn(x, x, s); /* x*x is exact in float64: fma or not, the same sum */
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = RED_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

/* norm = sqrt(sum of parts); coef = max_norm / (norm + 1e-6) as float where below 1, else 1 */
__global__ void k_norm_finish(double *norm, float *coef, const double *part, int nparts, double max_norm) {
    pdl_wait();
    pdl_trigger();
    __shared__ double sh[RED_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = RED_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double nrm = sqrt(sh[0]), c = max_norm / (nrm + 1e-6);
        *norm = nrm;
        *coef = c < 1.0 ? (float)c : 1.0f;
    }
}

__global__ void k_scale(float *g, const float *coef, size_t n) {
    pdl_wait();
    pdl_trigger();
    float c = *coef;
    if (c == 1.0f) return;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        g[k] = __fmul_rn(g[k], c);
}

__global__ void k_ema(float *__restrict__ ema, const float *__restrict__ p, size_t n, float decay) {
    pdl_wait();
    pdl_trigger();
    float omd = 1.0f - decay;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        ema[k] = __fadd_rn(__fmul_rn(decay, ema[k]), __fmul_rn(omd, p[k]));
}

__global__ void k_to_bf16(bf16 *out, const float *__restrict__ in, size_t n) {
    pdl_wait();
    pdl_trigger();
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        out[k] = f2bf(in[k]);
}

static unsigned grid_for(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > 4096 ? 4096 : b);
}

/* ---- the state --------------------------------------------------------------------------- */

extern "C" mg_status cuda_params_new(cuda_params *cp, const train_params *tp) {
    memset(cp, 0, sizeof *cp);
    cp->tp = tp;
    cu_ctx *ctx;
    CU_MG(cu_ctx_new(&ctx)); /* MG_ERR_UNSUPPORTED without a GPU */
    cp_impl *im = (cp_impl *)calloc(1, sizeof *im);
    if (!im) {
        cu_ctx_free(ctx);
        return mg_fail(MG_ERR_NOMEM, "out of memory for the device training state");
    }
    im->ctx = ctx;
    cp->impl = im;
    mg_status s = MG_OK;
    {
        int n = tp->n_tensors;
        size_t cnt = tp->count, bytes = 5 * cnt * sizeof(float);
        CU_TRY_GOTO(s, cudaStreamCreateWithFlags(&im->st, cudaStreamNonBlocking));
        if (cudaMalloc(&im->mem, bytes) != cudaSuccess) {
            cudaGetLastError();
            s = mg_fail(MG_ERR_NOMEM, "cannot allocate %.1f MiB on %s for the training state (5 x %zu floats)",
                        bytes / 1048576.0, cu_ctx_device_name(ctx), cnt);
            goto fail;
        }
        cp->param = (float *)im->mem;
        cp->grad = cp->param + cnt;
        cp->m = cp->grad + cnt;
        cp->v = cp->m + cnt;
        cp->ema = cp->v + cnt;
        CU_TRY_GOTO(s, cudaMalloc(&im->bf16, cnt * sizeof(bf16_t) + 16));
        CU_TRY_GOTO(s, cudaMalloc(&im->d_off, (size_t)(n + 1) * sizeof(unsigned long long)));
        CU_TRY_GOTO(s, cudaMalloc(&im->d_end, (size_t)(n + 1) * sizeof(unsigned long long)));
        CU_TRY_GOTO(s, cudaMalloc(&im->d_decay, (size_t)n + 1));
        CU_TRY_GOTO(s, cudaMalloc(&im->d_part, RED_BLOCKS * sizeof(double)));
        CU_TRY_GOTO(s, cudaMalloc(&im->d_norm, sizeof(double)));
        CU_TRY_GOTO(s, cudaMalloc(&im->d_coef, sizeof(float)));
        CU_TRY_GOTO(s, cudaMallocHost(&im->h_norm, sizeof(double)));
        unsigned long long *off = (unsigned long long *)malloc((size_t)(2 * n + 1) * sizeof *off);
        unsigned char *dec = (unsigned char *)malloc((size_t)n + 1);
        if (!off || !dec) {
            free(off), free(dec);
            s = mg_fail(MG_ERR_NOMEM, "out of memory for the device training state");
            goto fail;
        }
        for (int i = 0; i <= n; i++) off[i] = tp->offset[i];
        for (int i = 0; i < n; i++) {
            off[n + 1 + i] = tp->offset[i] + train_params_numel(tp, i);
            dec[i] = tp->table[i].rank >= 2;
        }
        cudaError_t e1 = cudaMemcpy(im->d_off, off, (size_t)(n + 1) * sizeof *off, cudaMemcpyHostToDevice);
        cudaError_t e2 = cudaMemcpy(im->d_end, off + n + 1, (size_t)n * sizeof *off, cudaMemcpyHostToDevice);
        cudaError_t e3 = n ? cudaMemcpy(im->d_decay, dec, (size_t)n, cudaMemcpyHostToDevice) : cudaSuccess;
        free(off), free(dec);
        CU_TRY_GOTO(s, e1);
        CU_TRY_GOTO(s, e2);
        CU_TRY_GOTO(s, e3);
        CU_TRY_GOTO(s, cudaMemcpy(cp->param, tp->param, cnt * sizeof(float), cudaMemcpyHostToDevice));
        CU_TRY_GOTO(s, cudaMemcpy(cp->m, tp->m, cnt * sizeof(float), cudaMemcpyHostToDevice));
        CU_TRY_GOTO(s, cudaMemcpy(cp->v, tp->v, cnt * sizeof(float), cudaMemcpyHostToDevice));
        CU_TRY_GOTO(s, cudaMemcpy(cp->ema, tp->ema, cnt * sizeof(float), cudaMemcpyHostToDevice));
        CU_TRY_GOTO(s, cudaMemset(cp->grad, 0, cnt * sizeof(float)));
        CU_TRY_GOTO(s, cudaDeviceSynchronize());
    }
    return MG_OK;
fail:
    cuda_params_free(cp);
    return s;
}

extern "C" void cuda_params_free(cuda_params *cp) {
    if (!cp) return;
    cp_impl *im = impl_of(cp);
    if (im) {
        if (im->st) cudaStreamSynchronize(im->st);
        cudaFree(im->mem);
        cudaFree(im->bf16);
        cudaFree(im->d_off);
        cudaFree(im->d_end);
        cudaFree(im->d_decay);
        cudaFree(im->d_part);
        cudaFree(im->d_norm);
        cudaFree(im->d_coef);
        if (im->h_norm) cudaFreeHost(im->h_norm);
        if (im->st) cudaStreamDestroy(im->st);
        cu_ctx_free(im->ctx);
        free(im);
    }
    memset(cp, 0, sizeof *cp);
}

extern "C" mg_status cuda_params_download(const cuda_params *cp, train_params *tp) {
    if (!cp || !cp->impl) return mg_fail(MG_ERR_ARG, "cuda_params_download: the device state is not initialised");
    if (tp->count != cp->tp->count || tp->n_tensors != cp->tp->n_tensors)
        return mg_fail(MG_ERR_SHAPE, "cuda_params_download: host state has %zu floats in %d tensors, device %zu in %d",
                       tp->count, tp->n_tensors, cp->tp->count, cp->tp->n_tensors);
    cudaStream_t st = impl_of(cp)->st;
    size_t b = tp->count * sizeof(float);
    CU_TRY(cudaMemcpyAsync(tp->param, cp->param, b, cudaMemcpyDeviceToHost, st));
    CU_TRY(cudaMemcpyAsync(tp->grad, cp->grad, b, cudaMemcpyDeviceToHost, st));
    CU_TRY(cudaMemcpyAsync(tp->m, cp->m, b, cudaMemcpyDeviceToHost, st));
    CU_TRY(cudaMemcpyAsync(tp->v, cp->v, b, cudaMemcpyDeviceToHost, st));
    CU_TRY(cudaMemcpyAsync(tp->ema, cp->ema, b, cudaMemcpyDeviceToHost, st));
    cu_pdl_fence();
    CU_TRY(cudaStreamSynchronize(st));
    return MG_OK;
}

extern "C" const char *cuda_params_device_name(const cuda_params *cp) {
    return cp && cp->impl ? cu_ctx_device_name(impl_of(cp)->ctx) : "(none)";
}
extern "C" void *cuda_params_stream(const cuda_params *cp) { return cp && cp->impl ? (void *)impl_of(cp)->st : NULL; }
extern "C" struct cu_ctx *cuda_params_ctx(const cuda_params *cp) { return cp && cp->impl ? impl_of(cp)->ctx : NULL; }

extern "C" mg_status cuda_params_sync(cuda_params *cp) {
    if (!cp || !cp->impl) return mg_fail(MG_ERR_ARG, "cuda_params_sync: the device state is not initialised");
    CU_TRY(cudaStreamSynchronize(impl_of(cp)->st));
    return MG_OK;
}

extern "C" mg_status cuda_zero_grad(cuda_params *cp, int first, int last) {
    CU_MG(check_range(cp, first, last, "cuda_zero_grad"));
    const size_t *o = cp->tp->offset;
    if (o[last] > o[first]) {
        CU_TRY(cudaMemsetAsync(cp->grad + o[first], 0, (o[last] - o[first]) * sizeof(float), impl_of(cp)->st));
        cu_pdl_fence();
    }
    return MG_OK;
}

extern "C" mg_status cuda_grad_clip(cuda_params *cp, int first, int last, double max_norm, double *norm) {
    CU_MG(check_range(cp, first, last, "cuda_grad_clip"));
    cp_impl *im = impl_of(cp);
    const size_t *o = cp->tp->offset;
    size_t n = o[last] - o[first]; /* the padding between tensors is zero */
    float *g = cp->grad + o[first];
    CU_LAUNCH(k_sumsq, dim3(RED_BLOCKS), dim3(RED_THREADS), 0, im->st, im->d_part, (const float *)g, n);
    CU_LAUNCH(k_norm_finish, dim3(1), dim3(RED_THREADS), 0, im->st, im->d_norm, im->d_coef, (const double *)im->d_part,
              RED_BLOCKS, max_norm);
    if (n) CU_LAUNCH(k_scale, dim3(grid_for(n)), dim3(256), 0, im->st, g, (const float *)im->d_coef, n);
    CU_TRY(cudaMemcpyAsync(im->h_norm, im->d_norm, sizeof(double), cudaMemcpyDeviceToHost, im->st));
    cu_pdl_fence();
    CU_TRY(cudaStreamSynchronize(im->st));
    if (norm) *norm = *im->h_norm;
    return MG_OK;
}

extern "C" mg_status cuda_adamw_step(cuda_params *cp, int first, int last, long step, float lr, const adamw_opts *o) {
    CU_MG(check_range(cp, first, last, "cuda_adamw_step"));
    if (step < 1) return mg_fail(MG_ERR_ARG, "cuda_adamw_step: step %ld (steps count from 1)", step);
    const size_t *off = cp->tp->offset;
    size_t k0 = off[first], k1 = off[last];
    if (k1 <= k0) return MG_OK;
    /* exactly adamw_step's host arithmetic */
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    float step_size = (float)(lr / (1.0 - pow(b1, (double)step)));
    float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(b2, (double)step)));
    float decay = 1.0f - lr * o->weight_decay;
    cp_impl *im = impl_of(cp);
    CU_LAUNCH(k_adamw, dim3(grid_for(k1 - k0)), dim3(256), 0, im->st, cp->param, (const float *)cp->grad, cp->m, cp->v,
              (const unsigned long long *)im->d_off, (const unsigned long long *)im->d_end,
              (const unsigned char *)im->d_decay, first, last, (unsigned long long)k0, (unsigned long long)k1, b1, b2,
              eps, step_size, inv_sqrt_bc2, decay);
    return MG_OK;
}

extern "C" mg_status cuda_ema_update(cuda_params *cp, int first, int last, float decay) {
    CU_MG(check_range(cp, first, last, "cuda_ema_update"));
    const size_t *o = cp->tp->offset;
    size_t n = o[last] - o[first];
    if (!n) return MG_OK;
    CU_LAUNCH(k_ema, dim3(grid_for(n)), dim3(256), 0, impl_of(cp)->st, cp->ema + o[first],
              (const float *)cp->param + o[first], n, decay);
    return MG_OK;
}

extern "C" const bf16_t *cuda_params_bf16(const cuda_params *cp) { return cp && cp->impl ? impl_of(cp)->bf16 : NULL; }

extern "C" mg_status cuda_params_to_bf16(cuda_params *cp, int first, int last) {
    CU_MG(check_range(cp, first, last, "cuda_params_to_bf16"));
    const size_t *o = cp->tp->offset;
    size_t n = o[last] - o[first];
    if (!n) return MG_OK;
    cp_impl *im = impl_of(cp);
    CU_LAUNCH(k_to_bf16, dim3(grid_for(n)), dim3(256), 0, im->st, (bf16 *)im->bf16 + o[first],
              (const float *)cp->param + o[first], n);
    return MG_OK;
}

extern "C" void cuda_params_set_grad_hook(cuda_params *cp, cuda_grad_hook fn, void *user) {
    if (!cp || !cp->impl) return;
    impl_of(cp)->hook = fn;
    impl_of(cp)->hook_user = user;
}

extern "C" mg_status cuda_params_grad_ready(cuda_params *cp, size_t from) {
    cp_impl *im = cp ? impl_of(cp) : NULL;
    if (!im || !im->hook) return MG_OK;
    mg_status s = im->hook(im->hook_user, from);
    cu_pdl_fence(); /* the hook may have enqueued an event: the next kernel links to nothing */
    return s;
}
