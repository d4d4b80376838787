/* Kernel lab: a level of the autoencoder (n Blocks at one size, x = relu(c3(relu(c2(relu(c1 x))))
 * + x) each), two ways:
 *   p  the per-conv path: three cu_conv3x3_igemm launches per Block (the library's conv
 *      version: halo tiles at >= 16384 pixels, else the 32-pixel implicit GEMM)
 *   lN the level kernel (conv_level.cu, cu_tae_level_v version N): one launch of one
 *      thread-block cluster holding the feature map in shared memory, the band edges through
 *      distributed shared memory; l1 a block barrier per weight tap, l2 per row of three taps,
 *      l3 = l2 with 16 warps
 * at the sizes of config s (64 channels; 32x32 and 64x64 at 256x256, 64x64 at 512x512) and of
 * tiny (32 channels). Each is checked against the CPU (conv3x3_forward, the maps between
 * convs rounded to bf16 as the GPU stores them) and timed with events (L2 flushed, median of
 * 30), against the card's peaks (MG_PEAK_TFLOPS). */
#include "lab.h"

typedef struct level_arg {
    bf16_t *x, *x0, *t1, *t2;
    const bf16_t *w[9];
    const float *b[9];
    int n, H, W, C, kind; /* kind 0: per conv, else the level kernel's version */
    size_t bytes;
} level_arg;

static void run_level(void *p, cudaStream_t st) {
    level_arg *a = (level_arg *)p;
    /* every run starts from the same input (the level works in place) */
    LCK(cudaMemcpyAsync(a->x, a->x0, a->bytes, cudaMemcpyDeviceToDevice, st));
    if (a->kind) {
        LOK(cu_tae_level_v(a->kind, a->x, a->w, a->b, a->n, a->H, a->W, a->C, st));
        return;
    }
    for (int k = 0; k < a->n; k++) {
        LOK(cu_conv3x3_igemm(a->t1, a->x, a->w[3 * k], a->b[3 * k], NULL, a->H, a->W, a->C, a->C, 1, 0, 1, st));
        LOK(cu_conv3x3_igemm(a->t2, a->t1, a->w[3 * k + 1], a->b[3 * k + 1], NULL, a->H, a->W, a->C, a->C, 1, 0, 1, st));
        LOK(cu_conv3x3_igemm(a->x, a->t2, a->w[3 * k + 2], a->b[3 * k + 2], a->x, a->H, a->W, a->C, a->C, 1, 0, 1, st));
    }
}

/* the copy alone, subtracted from both timings */
static void run_copy(void *p, cudaStream_t st) {
    level_arg *a = (level_arg *)p;
    LCK(cudaMemcpyAsync(a->x, a->x0, a->bytes, cudaMemcpyDeviceToDevice, st));
}

static void cpu_conv_relu(float *out, const float *in, const float *w, const float *b, const float *res, int H, int W,
                          int C) {
    float *wp = (float *)malloc(conv3x3_packed_floats(C, C) * 4);
    float *scr = (float *)malloc(conv3x3_scratch_floats(H, W, C, C, 1) * 4), *o = (float *)malloc((size_t)H * W * C * 4);
    conv3x3_pack(wp, w, C, C);
    conv3x3_forward(o, in, wp, b, scr, H, W, C, C, 1);
    for (size_t i = 0; i < (size_t)H * W * C; i++) {
        float v = o[i] + (res ? res[i] : 0.0f);
        out[i] = cu_bf2f(cu_f2bf(v > 0 ? v : 0));
    }
    free(wp), free(scr), free(o);
}

int main(void) {
    cu_ctx *ctx;
    LOK(cu_ctx_new(&ctx));
    cudaStream_t st;
    LCK(cudaStreamCreate(&st));
    printf("tae_level lab on %s\n", cu_ctx_device_name(ctx));
    /* H, W, C, Blocks */
    static const int shapes[][4] = {{64, 64, 64, 3}, {32, 32, 64, 3}, {64, 64, 64, 1}, {32, 32, 64, 1},
                                    {64, 64, 32, 3}, {32, 32, 32, 3}};
    for (int si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++) {
        int H = shapes[si][0], W = shapes[si][1], C = shapes[si][2], nb = shapes[si][3];
        if (!cu_tae_level_ok(H, W, C)) {
            printf("%dx%dx%d: the level kernel does not apply on this card\n", W, H, C);
            continue;
        }
        size_t n = (size_t)H * W * C, nw = (size_t)C * C * 9;
        float *x = lab_rand(n, -1, 1, 11 + si), *w[9], *b[9];
        level_arg a;
        memset(&a, 0, sizeof a);
        for (int i = 0; i < 3 * nb; i++) {
            w[i] = lab_rand(nw, -0.05f, 0.05f, 100 + 10 * si + i), b[i] = lab_rand(C, -0.2f, 0.2f, 300 + 10 * si + i);
            float *wt = (float *)malloc(nw * 4); /* (C, 9*C), k = tap*C + ci */
            for (int co = 0; co < C; co++)
                for (int ci = 0; ci < C; ci++)
                    for (int k = 0; k < 9; k++) wt[(size_t)co * 9 * C + k * C + ci] = w[i][((size_t)co * C + ci) * 9 + k];
            a.w[i] = lab_up_bf16(wt, nw);
            float *db;
            LCK(cudaMalloc(&db, C * 4));
            LCK(cudaMemcpy(db, b[i], C * 4, cudaMemcpyHostToDevice));
            a.b[i] = db;
            free(wt);
        }
        float *ref = (float *)malloc(n * 4), *t1 = (float *)malloc(n * 4), *t2 = (float *)malloc(n * 4);
        memcpy(ref, x, n * 4);
        for (int k = 0; k < nb; k++) {
            cpu_conv_relu(t1, ref, w[3 * k], b[3 * k], NULL, H, W, C);
            cpu_conv_relu(t2, t1, w[3 * k + 1], b[3 * k + 1], NULL, H, W, C);
            cpu_conv_relu(ref, t2, w[3 * k + 2], b[3 * k + 2], ref, H, W, C);
        }
        a.x0 = lab_up_bf16(x, n);
        LCK(cudaMalloc(&a.x, n * 2));
        LCK(cudaMalloc(&a.t1, n * 2));
        LCK(cudaMalloc(&a.t2, n * 2));
        a.n = nb, a.H = H, a.W = W, a.C = C, a.bytes = n * 2;
        float copy_ms = lab_time(run_copy, &a, st, 30);
        double flops = 3.0 * nb * 2.0 * H * W * 9.0 * C * C;
        float ms[1 + CU_LEVEL_VERSIONS];
        for (int kind = 0; kind <= CU_LEVEL_VERSIONS; kind++) {
            char name[96];
            if (kind && !cu_tae_level_cluster(kind, H, W, C)) {
                printf("l%d %dx%dx%d: does not apply\n", kind, W, H, C);
                ms[kind] = 0;
                continue;
            }
            a.kind = kind;
            run_level(&a, st);
            float *got = lab_down_bf16(a.x, n);
            double err = lab_rel_l2(got, ref, n);
            free(got);
            ms[kind] = lab_time(run_level, &a, st, 30) - copy_ms;
            if (kind) snprintf(name, sizeof name, "l%d level kernel %dx%dx%d %d Block%s", kind, W, H, C, nb, nb > 1 ? "s" : "");
            else snprintf(name, sizeof name, "p per-conv %dx%dx%d %d Block%s", W, H, C, nb, nb > 1 ? "s" : "");
            lab_report(name, ms[kind], flops, 0, err);
        }
        for (int v = 1; v <= CU_LEVEL_VERSIONS; v++)
            if (ms[v] > 0)
                printf("  %dx%dx%d, %d Block%s: per conv %.2f us -> l%d %.2f us per conv, %.2fx (cluster of %d)\n", W, H, C,
                       nb, nb > 1 ? "s" : "", 1e3 * ms[0] / (3 * nb), v, 1e3 * ms[v] / (3 * nb), ms[0] / ms[v],
                       cu_tae_level_cluster(v, H, W, C));
        for (int i = 0; i < 3 * nb; i++) free(w[i]), free(b[i]), cudaFree((void *)a.w[i]), cudaFree((void *)a.b[i]);
        free(x), free(ref), free(t1), free(t2);
        cudaFree(a.x), cudaFree(a.x0), cudaFree(a.t1), cudaFree(a.t2);
    }
    cudaStreamDestroy(st);
    cu_ctx_free(ctx);
    return 0;
}
