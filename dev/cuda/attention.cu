/* Kernel lab: attention for our shape (a frame's queries against K+1 frames of keys).
 *   v1  K and V fragments from plain 32/16-bit shared loads, one pass (splits = 1): 64 queries
 *       x 1 head per block
 *   v2  v1 split over keys (flash-decoding) + the combine kernel, as cu_attention_splits picks
 *   v3  fragments through ldmatrix (.trans for V), one pass
 *   v4  v3 split over keys as the library picks (the library's kernel up to session 4)
 *   v5  v4 with the combine folded into the kernel: the splits of a query tile are one
 *       thread-block cluster, combined through distributed shared memory (library version 3)
 *   v6  v5 with 128-query blocks of 8 warps for dh 128 (library version 4)
 *   v7  wgmma for dh 128 (sm_90a): two warpgroups of 64 queries, Q and K from swizzled
 *       shared memory, P from registers, V through a transposed descriptor (library version 5)
 *   v8  v7 with the two warpgroups half a tile apart (one's softmax under the other's
 *       products), three V buffers, unmasked full tiles (library version 6)
 *   v9  v8 with the next tile's copies issued after this tile's products, S started with
 *       scale-d = 0 (library version 7)
 * Each is checked against the CPU (attention_forward) on the same bf16 inputs and timed with
 * events, L2 flushed, against the measured peaks (MG_PEAK_TFLOPS / MG_PEAK_GBS). */
#include "lab.h"

typedef struct att_arg {
    bf16_t *out, *q, *k, *v;
    float *scr;
    int Nq, Nk, H, dh, splits, version;
} att_arg;

static void run_att(void *p, cudaStream_t st) {
    att_arg *a = (att_arg *)p;
    int d = a->H * a->dh;
    LOK(cu_attention_v(a->version, a->out, a->q, 3 * d, a->k, a->v, d, NULL, a->Nk, a->Nq, a->H, a->dh, a->splits,
                       a->scr, st));
}

int main(void) {
    cu_ctx *ctx;
    LOK(cu_ctx_new(&ctx));
    cudaStream_t st;
    LCK(cudaStreamCreate(&st));
    printf("attention lab on %s\n", cu_ctx_device_name(ctx));
    /* name, Nq, Nk (= 4 frames: ring of 3 + current), heads, dh */
    struct { const char *name; int Nq, Nk, H, dh; } shapes[] = {
        {"s 256x256", 256, 1024, 6, 64}, {"s 512x512", 1024, 4096, 6, 64},
        {"1b 256x256", 256, 1024, 16, 128}, {"1b 512x512", 1024, 4096, 16, 128}};
    for (int si = 0; si < 4; si++) {
        int Nq = shapes[si].Nq, Nk = shapes[si].Nk, H = shapes[si].H, dh = shapes[si].dh, d = H * dh;
        float *q = lab_rand((size_t)Nq * 3 * d, -2, 2, 1 + si), *k = lab_rand((size_t)Nk * d, -2, 2, 11 + si);
        float *v = lab_rand((size_t)Nk * d, -1, 1, 21 + si), *ref = (float *)malloc((size_t)Nq * d * 4);
        float *scratch = (float *)malloc(attention_scratch_floats(Nq, Nk) * 4);
        attention_forward(ref, q, 3 * d, k, v, d, scratch, Nq, Nk, H, dh);
        att_arg a = {NULL, lab_up_bf16(q, (size_t)Nq * 3 * d), lab_up_bf16(k, (size_t)Nk * d),
                     lab_up_bf16(v, (size_t)Nk * d), NULL, Nq, Nk, H, dh, 1, 1};
        LCK(cudaMalloc(&a.out, (size_t)Nq * d * 2));
        int auto_splits = cu_attention_splits(ctx, Nq, Nk, H);
        LCK(cudaMalloc(&a.scr, cu_attention_scratch_floats(Nq, H, dh, 16) * 4 + 16));
        double flops = 4.0 * Nq * Nk * d, bytes = 2.0 * ((double)Nq * d * 2 + 2.0 * Nk * d);
        /* lab version -> library version, split (0: one pass, 1: the library's pick) */
        int ver[] = {1, 1, 2, 2, 3, 4, 5, 6, 7}, spl[] = {0, 1, 0, 1, 1, 1, 1, 1, 1};
        for (int vi = 0; vi < (int)(sizeof ver / sizeof ver[0]); vi++) {
            if (vi < 4 && vi % 2 && auto_splits == 1) continue;
            if (vi >= 5 && dh != 128) continue; /* versions 4 to 7 are version 3 at dh 64 */
            a.version = ver[vi], a.splits = spl[vi] ? auto_splits : 1;
            LCK(cudaMemset(a.out, 0xFF, (size_t)Nq * d * 2));
            run_att(&a, st);
            float *got = lab_down_bf16(a.out, (size_t)Nq * d);
            double err = lab_rel_l2(got, ref, (size_t)Nq * d);
            float ms = lab_time(run_att, &a, st, 50);
            char name[96];
            snprintf(name, sizeof name, "v%d %s (%dq x %dk, %dx%d, %d split%s)", vi + 1, shapes[si].name, Nq, Nk, H, dh,
                     a.splits, a.splits > 1 ? "s" : "");
            lab_report(name, ms, flops, bytes, err);
            free(got);
        }
        free(q), free(k), free(v), free(ref), free(scratch);
        cudaFree(a.out), cudaFree(a.q), cudaFree(a.k), cudaFree(a.v), cudaFree(a.scr);
    }
    cu_ctx_free(ctx);
    return 0;
}
