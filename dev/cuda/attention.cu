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
 *   r1  the frame's separate path: cu_rope_kv (RoPE on q and k, k and v into the ring slot),
 *       then the library's attention version reading the ring (vis = 4 slots, the current last)
 *   r2  the same in one launch: RoPE and the ring write folded into the attention
 *       (cu_attention_rope_v, same version; none for the wgmma versions at dh 128)
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

typedef struct rope_arg {
    bf16_t *out, *qkv, *kr, *vr;
    float *cs, *sn, *scr;
    cu_frame_params *p;
    int N, H, dh, splits, fused, version;
} rope_arg;

static void run_rope(void *p, cudaStream_t st) {
    rope_arg *a = (rope_arg *)p;
    int d = a->H * a->dh;
    if (a->fused) {
        LOK(cu_attention_rope_v(a->version, a->out, a->qkv, 3 * d, a->kr, a->vr, a->cs, a->sn, a->p, a->N, a->H, a->dh,
                                a->splits, a->scr, st));
    } else {
        LOK(cu_rope_kv(a->qkv, 3 * d, a->kr, a->vr, a->cs, a->sn, a->p, a->N, a->H, a->dh, st));
        LOK(cu_attention_v(a->version, a->out, a->qkv, 3 * d, a->kr, a->vr, d, &a->p->vis, a->N, a->N, a->H, a->dh,
                           a->splits, a->scr, st));
    }
}

/* r1 / r2: the current frame (N queries) against 4 slots of N keys, the current one last */
static void rope_case(cu_ctx *ctx, cudaStream_t st, const char *shape, int N, int H, int dh, bf16_t *out, float *scr,
                      int si, int version) {
    int d = H * dh, np = dh / 2, nt = np / 4, vis = 4, splits = cu_attention_splits(ctx, N, vis * N, H);
    if (version >= 5 && dh == 128)
        printf("r2 %s: no folded form for version %d (wgmma) at dh %d\n", shape, version, dh);
    size_t nq = (size_t)N * 3 * d, ring = (size_t)vis * N * d, tab = (size_t)N * np;
    float *qkv = lab_rand(nq, -2, 2, 51 + si), *kr = lab_rand(ring, -2, 2, 61 + si), *vr = lab_rand(ring, -1, 1, 71 + si);
    float *c0 = (float *)malloc(tab * 4), *s0 = (float *)malloc(tab * 4), *cf = (float *)malloc(tab * 4);
    float *sf = (float *)malloc(tab * 4);
    rope_tables(c0, s0, 0, N, 1, dh, 10000.0);
    rope_tables(cf, sf, 777, N, 1, dh, 10000.0);
    cu_frame_params hp;
    memset(&hp, 0, sizeof hp);
    hp.vis = vis, hp.slot = vis - 1;
    for (int j = 0; j < nt; j++) hp.tcos[j] = cf[j], hp.tsin[j] = sf[j];
    /* the CPU: rope, the current k, v into the last slot, attention */
    float *rq = (float *)malloc(nq * 4), *ref = (float *)malloc((size_t)N * d * 4);
    memcpy(rq, qkv, nq * 4);
    rope_forward(rq, 3 * d, cf, sf, N, H, dh);
    rope_forward(rq + d, 3 * d, cf, sf, N, H, dh);
    float *kc = (float *)malloc(ring * 4), *vc = (float *)malloc(ring * 4);
    memcpy(kc, kr, ring * 4), memcpy(vc, vr, ring * 4);
    for (int i = 0; i < N; i++) {
        memcpy(kc + ((size_t)(vis - 1) * N + i) * d, rq + (size_t)i * 3 * d + d, d * 4);
        memcpy(vc + ((size_t)(vis - 1) * N + i) * d, qkv + (size_t)i * 3 * d + 2 * d, d * 4);
    }
    float *scratch = (float *)malloc(attention_scratch_floats(N, vis * N) * 4);
    attention_forward(ref, rq, 3 * d, kc, vc, d, scratch, N, vis * N, H, dh);
    rope_arg a = {out, NULL, lab_up_bf16(kr, ring), lab_up_bf16(vr, ring), NULL, NULL, scr, NULL, N, H, dh, splits, 0,
                  version};
    LCK(cudaMalloc(&a.cs, tab * 4));
    LCK(cudaMalloc(&a.sn, tab * 4));
    LCK(cudaMalloc(&a.p, sizeof hp));
    LCK(cudaMemcpy(a.cs, c0, tab * 4, cudaMemcpyHostToDevice));
    LCK(cudaMemcpy(a.sn, s0, tab * 4, cudaMemcpyHostToDevice));
    LCK(cudaMemcpy(a.p, &hp, sizeof hp, cudaMemcpyHostToDevice));
    double flops = 4.0 * N * vis * N * d, bytes = 2.0 * ((double)N * 3 * d + 2.0 * vis * N * d + (double)N * d);
    for (int f = 0; f < 2; f++) {
        if (f && version >= 5 && dh == 128) break;
        a.fused = f;
        a.qkv = lab_up_bf16(qkv, nq); /* fresh: the separate path rotates it in place */
        LCK(cudaMemset(out, 0xFF, (size_t)N * d * 2));
        run_rope(&a, st);
        float *got = lab_down_bf16(out, (size_t)N * d);
        double err = lab_rel_l2(got, ref, (size_t)N * d);
        float ms = lab_time(run_rope, &a, st, 50);
        char name[96];
        snprintf(name, sizeof name, "r%d %s (%s v%d, %d splits)", f + 1, shape, f ? "rope in attn" : "rope_kv + attn",
                 version, splits);
        lab_report(name, ms, flops, bytes, err);
        free(got);
        cudaFree(a.qkv);
    }
    free(qkv), free(kr), free(vr), free(c0), free(s0), free(cf), free(sf), free(rq), free(ref), free(kc), free(vc);
    free(scratch);
    cudaFree(a.kr), cudaFree(a.vr), cudaFree(a.cs), cudaFree(a.sn), cudaFree(a.p);
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
        /* the library's version: 3 at dh 64; at dh 128, 2 when split, 6 when not */
        rope_case(ctx, st, shapes[si].name, Nq, H, dh, a.out, a.scr, si, dh == 64 ? 3 : auto_splits > 1 ? 2 : 6);
        free(q), free(k), free(v), free(ref), free(scratch);
        cudaFree(a.out), cudaFree(a.q), cudaFree(a.k), cudaFree(a.v), cudaFree(a.scr);
    }
    cu_ctx_free(ctx);
    return 0;
}
