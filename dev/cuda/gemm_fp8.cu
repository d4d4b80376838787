/* Kernel lab: the DiT's four linears on cuBLASLt, bf16 against FP8 e4m3 (issue 4).
 *   bf16    cu_gemm (the library's default path), bf16 operands, fp32 accumulation
 *   t8      e4m3 operands, one scale per tensor (A and W), fast accumulation off
 *   t8f     the same, CUBLASLT_MATMUL_DESC_FAST_ACCUM on
 *   r8      e4m3, cuBLASLt outer-vector scales: one per token (A's rows) and one per output
 *           channel (W's rows), fast accumulation off
 *   r8f     the same, fast accumulation on
 * Every GEMM runs with the DiT's epilogue (bias; GELU for fc1; fp32 out for proj and fc2) and
 * is checked against a CPU fp32 GEMM of exactly the operands it was given (the dequantised
 * e4m3 values for the fp8 variants), over 16 sampled rows; "q-err" is the fp8 variant's
 * distance from the bf16 operands' result (what the quantisation costs). Then the quantise
 * steps (bf16 -> e4m3 with the scales computed on the device): per row (one kernel) and per
 * tensor (two kernels). Last, per 1b layer: the four bf16 GEMMs against the fastest fp8
 * variant plus the quantisation of its four inputs, and that times 60 (20 layers x 3 passes
 * of a 2-step frame) — the frame-level saving the FP8 path could bring.
 * The fp8 dense ceiling is measured here too (e4m3 8192^3, fast accumulation on). */
#include "lab.h"

#define SAMPLE_ROWS 16

typedef struct g_arg {
    cu_ctx *c;
    cu_gemm *g;
    void *out;
    const void *a, *w, *bias;
    const float *sa, *sw;
    int fp8;
} g_arg;

static void run_g(void *p, cudaStream_t st) {
    g_arg *a = (g_arg *)p;
    if (a->fp8) LOK(cu_gemm_run_fp8(a->c, a->g, a->out, (const fp8_t *)a->a, a->sa, (const fp8_t *)a->w, a->sw, a->bias, st));
    else LOK(cu_gemm_run(a->c, a->g, a->out, (const bf16_t *)a->a, (const bf16_t *)a->w, a->bias, st));
}

typedef struct q_arg {
    fp8_t *q;
    float *s, *scratch;
    const bf16_t *x;
    int M, K, rows;
} q_arg;

static void run_q(void *p, cudaStream_t st) {
    q_arg *a = (q_arg *)p;
    if (a->rows) LOK(cu_quant_fp8_rows(a->q, a->s, a->x, a->M, a->K, st));
    else LOK(cu_quant_fp8_tensor(a->q, a->s, a->x, (size_t)a->M * a->K, a->scratch, st));
}

static float gelu(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x))); }

/* ref (SAMPLE_ROWS, N): rows r_i = i * M / SAMPLE_ROWS of epi(A @ W^T + b) in fp32/double */
static void cpu_ref(float *ref, const float *A, const float *W, const float *b, int M, int N, int K, int gl) {
    for (int i = 0; i < SAMPLE_ROWS; i++) {
        const float *ar = A + (size_t)(i * (M / SAMPLE_ROWS)) * K;
        for (int n = 0; n < N; n++) {
            const float *wr = W + (size_t)n * K;
            double acc = 0;
            for (int k = 0; k < K; k++) acc += (double)ar[k] * wr[k];
            float v = (float)acc + b[n];
            ref[(size_t)i * N + n] = gl ? gelu(v) : v;
        }
    }
}

/* the sampled rows of the device output */
static float *down_rows(const void *d, int out_f32, int M, int N) {
    float *x = (float *)malloc((size_t)SAMPLE_ROWS * N * 4);
    bf16_t *h = (bf16_t *)malloc((size_t)N * 4);
    LCK(cudaDeviceSynchronize());
    for (int i = 0; i < SAMPLE_ROWS; i++) {
        size_t r = (size_t)(i * (M / SAMPLE_ROWS));
        if (out_f32) LCK(cudaMemcpy(x + (size_t)i * N, (const float *)d + r * N, (size_t)N * 4, cudaMemcpyDeviceToHost));
        else {
            LCK(cudaMemcpy(h, (const bf16_t *)d + r * N, (size_t)N * 2, cudaMemcpyDeviceToHost));
            for (int n = 0; n < N; n++) x[(size_t)i * N + n] = cu_bf2f(h[n]);
        }
    }
    free(h);
    return x;
}

/* the dequantised e4m3 matrix (R, K) with scales per row (nsc == R) or one (nsc == 1) */
static float *dequant(const fp8_t *dq, const float *dsc, int R, int K, int nsc) {
    fp8_t *q = (fp8_t *)malloc((size_t)R * K);
    float *s = (float *)malloc((size_t)nsc * 4), *x = (float *)malloc((size_t)R * K * 4);
    LCK(cudaDeviceSynchronize());
    LCK(cudaMemcpy(q, dq, (size_t)R * K, cudaMemcpyDeviceToHost));
    LCK(cudaMemcpy(s, dsc, (size_t)nsc * 4, cudaMemcpyDeviceToHost));
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = cu_fp82f((fp8_t)i);
    for (int r = 0; r < R; r++)
        for (int k = 0; k < K; k++) x[(size_t)r * K + k] = lut[q[(size_t)r * K + k]] * s[nsc == 1 ? 0 : r];
    free(q), free(s);
    return x;
}

/* host check of the device scales: amax / 448 per row (or tensor) of the bf16 input */
static double scale_err(const float *x, const float *dsc, int R, int K, int rows) {
    int ns = rows ? R : 1;
    float *s = (float *)malloc((size_t)ns * 4);
    LCK(cudaMemcpy(s, dsc, (size_t)ns * 4, cudaMemcpyDeviceToHost));
    double worst = 0, all = 0;
    for (int r = 0; r < R; r++) {
        double m = 0;
        for (int k = 0; k < K; k++) m = fmax(m, fabs(x[(size_t)r * K + k]));
        all = fmax(all, m);
        if (rows) worst = fmax(worst, fabs(s[r] - m / 448.0) / (m / 448.0));
    }
    if (!rows) worst = fabs(s[0] - all / 448.0) / (all / 448.0);
    free(s);
    return worst;
}

typedef struct shape {
    const char *name;
    int M, N, K, out_f32, gelu;
} shape;

int main(void) {
    cu_ctx *ctx;
    mg_status s0 = cu_ctx_new(&ctx);
    if (s0 != MG_OK) {
        printf("gemm_fp8 lab: skipped: %s\n", mg_last_error());
        return 0;
    }
    cudaStream_t st;
    LCK(cudaStreamCreate(&st));
    printf("gemm_fp8 lab on %s (peaks: %.0f GB/s, bf16 %.0f TFLOP/s; the fp8 dense rate is 2x bf16's)\n",
           cu_ctx_device_name(ctx), lab_peak_gbs(), lab_peak_tflops());
    shape shapes[] = {
        {"1b qkv", 1024, 6144, 2048, 0, 0}, {"1b proj", 1024, 2048, 2048, 1, 0}, {"1b fc1", 1024, 8192, 2048, 0, 1},
        {"1b fc2", 1024, 2048, 8192, 1, 0}, {"s256 qkv", 256, 1152, 384, 0, 0},  {"s256 proj", 256, 384, 384, 1, 0},
        {"s256 fc1", 256, 1536, 384, 0, 1}, {"s256 fc2", 256, 384, 1536, 1, 0}, {"s512 qkv", 1024, 1152, 384, 0, 0},
        {"s512 proj", 1024, 384, 384, 1, 0}, {"s512 fc1", 1024, 1536, 384, 0, 1}, {"s512 fc2", 1024, 384, 1536, 1, 0},
    };
    int nshape = (int)(sizeof shapes / sizeof shapes[0]);
    const char *vname[5] = {"bf16", "t8", "t8f", "r8", "r8f"};
    float ms_g[12][5], ms_qr[12], ms_qt[12];
    int failures = 0;
    /* the fp8 ceiling: e4m3 8192^3, per-tensor scales, fast accumulation */
    {
        int n = 8192;
        cu_gemm *g = NULL;
        mg_status s = cu_gemm_plan_fp8(ctx, &g, n, n, n, 0, CU_EPI_NONE, CU_FP8_TENSOR, 1, NULL);
        if (s == MG_OK) {
            void *a, *w, *o;
            float *sc, one = 1.0f;
            LCK(cudaMalloc(&a, (size_t)n * n));
            LCK(cudaMalloc(&w, (size_t)n * n));
            LCK(cudaMalloc(&o, (size_t)n * n * 2));
            LCK(cudaMalloc(&sc, 4));
            LCK(cudaMemset(a, 0x3a, (size_t)n * n));
            LCK(cudaMemset(w, 0xb9, (size_t)n * n));
            LCK(cudaMemcpy(sc, &one, 4, cudaMemcpyHostToDevice));
            g_arg ga = {ctx, g, o, a, w, NULL, sc, sc, 1};
            float ms = lab_time(run_g, &ga, st, 20);
            printf("fp8 ceiling: e4m3 %d^3 GEMM %.3f ms, %.1f TFLOP/s (%.2fx the bf16 peak)\n", n, ms,
                   2.0 * n * n * n / (ms * 1e-3) / 1e12,
                   lab_peak_tflops() > 0 ? 2.0 * n * n * n / (ms * 1e-3) / 1e12 / lab_peak_tflops() : 0.0);
            cudaFree(a), cudaFree(w), cudaFree(o), cudaFree(sc);
            cu_gemm_free(g);
        } else printf("fp8 ceiling: %s\n", mg_last_error());
    }
    for (int si = 0; si < nshape; si++) {
        shape *S = &shapes[si];
        int M = S->M, N = S->N, K = S->K;
        for (int v = 0; v < 5; v++) ms_g[si][v] = -1;
        /* activations ~ LN output (|x| up to ~3, a few outliers), weights ~ init scale */
        float *A = lab_rand((size_t)M * K, -1.5f, 1.5f, 100 + si), *W = lab_rand((size_t)N * K, -0.04f, 0.04f, 200 + si);
        float *b = lab_rand((size_t)N, -0.1f, 0.1f, 300 + si);
        for (int i = 0; i < 64; i++) A[((size_t)i * 7919 * 13) % ((size_t)M * K)] *= 4.0f; /* outliers */
        bf16_t *dA = lab_up_bf16(A, (size_t)M * K), *dW = lab_up_bf16(W, (size_t)N * K);
        bf16_t *db16 = lab_up_bf16(b, N);
        float *db32;
        LCK(cudaMalloc(&db32, (size_t)N * 4));
        LCK(cudaMemcpy(db32, b, (size_t)N * 4, cudaMemcpyHostToDevice));
        void *out;
        size_t osz = S->out_f32 ? 4 : 2;
        LCK(cudaMalloc(&out, (size_t)M * N * osz));
        fp8_t *qa_r, *qa_t, *qw_r, *qw_t;
        float *sa_r, *sa_t, *sw_r, *sw_t, *scr;
        LCK(cudaMalloc(&qa_r, (size_t)M * K));
        LCK(cudaMalloc(&qa_t, (size_t)M * K));
        LCK(cudaMalloc(&qw_r, (size_t)N * K));
        LCK(cudaMalloc(&qw_t, (size_t)N * K));
        LCK(cudaMalloc(&sa_r, (size_t)M * 4));
        LCK(cudaMalloc(&sa_t, 4));
        LCK(cudaMalloc(&sw_r, (size_t)N * 4));
        LCK(cudaMalloc(&sw_t, 4));
        LCK(cudaMalloc(&scr, cu_quant_fp8_scratch_floats() * 4));
        LOK(cu_quant_fp8_rows(qa_r, sa_r, dA, M, K, st));
        LOK(cu_quant_fp8_tensor(qa_t, sa_t, dA, (size_t)M * K, scr, st));
        LOK(cu_quant_fp8_rows(qw_r, sw_r, dW, N, K, st));
        LOK(cu_quant_fp8_tensor(qw_t, sw_t, dW, (size_t)N * K, scr, st));
        LCK(cudaStreamSynchronize(st));
        /* the quantise steps: scales against the host, values within e4m3's rounding */
        double se = fmax(scale_err(A, sa_r, M, K, 1), scale_err(A, sa_t, M, K, 0));
        float *Ar = dequant(qa_r, sa_r, M, K, M), *At = dequant(qa_t, sa_t, M, K, 1);
        double qe_r = lab_rel_l2(Ar, A, (size_t)M * K), qe_t = lab_rel_l2(At, A, (size_t)M * K);
        float *Wr = dequant(qw_r, sw_r, N, K, N), *Wt = dequant(qw_t, sw_t, N, K, 1);
        /* references: bf16 operands, and each quantised pair */
        float *ref = (float *)malloc((size_t)SAMPLE_ROWS * N * 4), *ref_t = (float *)malloc((size_t)SAMPLE_ROWS * N * 4);
        float *ref_r = (float *)malloc((size_t)SAMPLE_ROWS * N * 4);
        cpu_ref(ref, A, W, b, M, N, K, S->gelu);
        cpu_ref(ref_t, At, Wt, b, M, N, K, S->gelu);
        cpu_ref(ref_r, Ar, Wr, b, M, N, K, S->gelu);
        printf("---- %s: M %d N %d K %d, out %s%s (%.2f GFLOP); quantised A rel L2 %.3f (rows) %.3f (tensor), "
               "scales rel err %.1e\n", S->name, M, N, K, S->out_f32 ? "fp32" : "bf16", S->gelu ? " + GELU" : "",
               2.0 * M * N * K / 1e9, qe_r, qe_t, se);
        if (se > 1e-6) failures++;
        double flops = 2.0 * M * N * K;
        for (int v = 0; v < 5; v++) {
            cu_gemm *g = NULL;
            cu_epi epi = S->gelu ? CU_EPI_GELU_BIAS : CU_EPI_BIAS;
            int rows = v >= 3, fast = v == 2 || v == 4;
            mg_status s = v == 0 ? cu_gemm_plan(ctx, &g, M, N, K, S->out_f32, epi)
                                 : cu_gemm_plan_fp8(ctx, &g, M, N, K, S->out_f32, epi, rows ? CU_FP8_ROWS : CU_FP8_TENSOR,
                                                    fast, NULL);
            char name[96];
            snprintf(name, sizeof name, "%-4s %s", vname[v], S->name);
            if (s != MG_OK) {
                printf("%-46s unsupported: %s\n", name, mg_last_error());
                continue;
            }
            const void *bias = S->out_f32 && !cu_gemm_bias_bf16(g) ? (const void *)db32 : (const void *)db16;
            g_arg ga = {ctx, g, out, v == 0 ? (const void *)dA : rows ? (const void *)qa_r : (const void *)qa_t,
                        v == 0 ? (const void *)dW : rows ? (const void *)qw_r : (const void *)qw_t, bias,
                        rows ? sa_r : sa_t, rows ? sw_r : sw_t, v > 0};
            LCK(cudaMemset(out, 0xff, (size_t)M * N * osz)); /* NaN: every element must be written */
            run_g(&ga, st);
            float *got = down_rows(out, S->out_f32, M, N);
            const float *r = v == 0 ? ref : rows ? ref_r : ref_t;
            double err = lab_rel_l2(got, r, (size_t)SAMPLE_ROWS * N), qerr = lab_rel_l2(got, ref, (size_t)SAMPLE_ROWS * N);
            float ms = lab_time(run_g, &ga, st, 30);
            ms_g[si][v] = ms;
            double bytes = (double)M * K * (v ? 1 : 2) + (double)N * K * (v ? 1 : 2) + (double)M * N * osz;
            lab_report(name, ms, flops, bytes, err);
            printf("%-46s   q-err %.2e (vs bf16 operands), epilogue %s%s\n", "", qerr,
                   cu_gemm_fused(g) ? "fused" : "separate kernel", cu_gemm_bias_bf16(g) ? ", bf16 bias" : "");
            if (err > 1e-2) failures++;
            free(got);
            cu_gemm_free(g);
        }
        q_arg qa = {qa_r, sa_r, scr, dA, M, K, 1};
        ms_qr[si] = lab_time(run_q, &qa, st, 30);
        char name[96];
        snprintf(name, sizeof name, "quant rows   %s A (%dx%d)", S->name, M, K);
        lab_report(name, ms_qr[si], 0, (double)M * K * 3 + M * 4, qe_r > 0.05 ? 1.0 : 0.0);
        qa.q = qa_t, qa.s = sa_t, qa.rows = 0;
        ms_qt[si] = lab_time(run_q, &qa, st, 30);
        snprintf(name, sizeof name, "quant tensor %s A (%dx%d)", S->name, M, K);
        lab_report(name, ms_qt[si], 0, (double)M * K * 4, qe_t > 0.05 ? 1.0 : 0.0);
        if (qe_r > 0.05 || qe_t > 0.05) failures++;
        free(A), free(W), free(b), free(Ar), free(At), free(Wr), free(Wt), free(ref), free(ref_t), free(ref_r);
        cudaFree(dA), cudaFree(dW), cudaFree(db16), cudaFree(db32), cudaFree(out);
        cudaFree(qa_r), cudaFree(qa_t), cudaFree(qw_r), cudaFree(qw_t), cudaFree(sa_r), cudaFree(sa_t);
        cudaFree(sw_r), cudaFree(sw_t), cudaFree(scr);
    }
    /* per layer: 4 GEMMs; the fp8 variants + quantising their inputs (the separate kernels:
     * an upper bound on what fusing them into the producers would cost) */
    const char *grp[3] = {"1b 512x512", "s 256x256", "s 512x512"};
    for (int gi = 0; gi < 3; gi++) {
        double b16 = 0, best[5] = {0, 0, 0, 0, 0}, qr = 0, qt = 0;
        int ok[5] = {1, 1, 1, 1, 1};
        for (int j = 0; j < 4; j++) {
            int si = gi * 4 + j;
            b16 += ms_g[si][0];
            for (int v = 1; v < 5; v++) {
                if (ms_g[si][v] < 0) ok[v] = 0;
                best[v] += ms_g[si][v];
            }
            qr += ms_qr[si], qt += ms_qt[si];
        }
        printf("layer %s: bf16 GEMMs %.1f us", grp[gi], 1e3 * b16);
        for (int v = 1; v < 5; v++) {
            if (!ok[v]) { printf(" | %s n/a", vname[v]); continue; }
            double q = v >= 3 ? qr : qt;
            printf(" | %s %.1f + quant %.1f = %.1f us", vname[v], 1e3 * best[v], 1e3 * q, 1e3 * (best[v] + q));
        }
        printf("\n");
        double fr = gi == 0 ? 60 : 36; /* layers x passes of a 2-step frame: 1b 20 x 3, s 12 x 3 */
        printf("frame %s (%g layer passes): bf16 %.2f ms", grp[gi], fr, fr * b16);
        for (int v = 1; v < 5; v++)
            if (ok[v]) printf(" | %s %.2f ms (saves %.2f)", vname[v], fr * (best[v] + (v >= 3 ? qr : qt)),
                              fr * (b16 - best[v] - (v >= 3 ? qr : qt)));
        printf("\n");
    }
    printf("gemm_fp8 lab: %s (%d failures)\n", failures ? "FAIL" : "ok", failures);
    cu_ctx_free(ctx);
    return failures ? 1 : 0;
}
