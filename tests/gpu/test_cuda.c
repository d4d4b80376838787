/* make test-gpu: every CUDA op against its CPU twin (src/ops/cpu) on random, odd-sized inputs
 * with bf16 tolerances; whole frame steps on configs tiny and s against the CPU stream with the
 * same noise; the public API on the GPU against the CPU with one seed; and the CUDA graph
 * replay against eager launches, bit for bit. Outputs are poisoned (NaN) before each run and
 * checked to be fully written. Inputs the GPU sees in bf16 are rounded to bf16 on the host
 * first, so the CPU twin computes on the same values and the error measured is the kernel's.
 * Needs a GPU; CI has none (the CPU suite covers streaming == parallel). */
#include <cuda_runtime_api.h>
#include <string.h>

#include "core/rng.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_stream.h"
#include "model/model.h"
#include "model/stream.h"
#include "ops/ops.h"
#include "testutil.h"
#include "gpu_util.h"

#define TOL_BF16 1e-2 /* relative L2 error for bf16 storage, fp32 accumulation */

/* ---- ops ------------------------------------------------------------------------------- */

static void test_gemm(void **state) {
    int shapes[][3] = {{37, 200, 72}, {37, 51, 45}, {256, 1152, 384}};
    for (int si = 0; si < 3; si++) {
        int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        float *a = rnd((size_t)M * K, -1, 1), *w = rnd((size_t)N * K, -0.2f, 0.2f), *b = rnd(N, -0.5f, 0.5f);
        bf16_t *da = up_bf16(a, (size_t)M * K), *dw = up_bf16(w, (size_t)N * K);
        float *bb = malloc(N * 4);
        memcpy(bb, b, N * 4);
        bf16_t *dbb = up_bf16(bb, N); /* the bf16 bias the bf16-output GEMMs take */
        float *db = up_f32(b, N);
        float *ref = malloc((size_t)M * N * 4);
        for (int of = 0; of < 2; of++)
            for (int e = 0; e < 3; e++) {
                cu_gemm *g;
                TU_OK(cu_gemm_plan(ctx, &g, M, N, K, of, (cu_epi)e));
                void *out = poisoned((size_t)M * N * 4);
                TU_OK(cu_gemm_run(ctx, g, out, da, dw, of ? (void *)db : (void *)dbb, st));
                float *got = of ? down_f32(out, (size_t)M * N) : down_bf16(out, (size_t)M * N);
                linear_forward(ref, a, w, e ? (of ? b : bb) : NULL, M, K, N);
                if (e == CU_EPI_GELU_BIAS) gelu_tanh_forward(ref, ref, (size_t)M * N);
                char name[96];
                snprintf(name, sizeof name, "gemm %dx%dx%d %s %s%s", M, N, K, of ? "f32" : "bf16",
                         e == 0 ? "plain" : e == 1 ? "bias" : "bias+gelu", cu_gemm_fused(g) ? "" : " (unfused)");
                assert_rel(name, got, ref, (size_t)M * N, TOL_BF16);
                free(got), cudaFree(out), cu_gemm_free(g);
            }
        free(a), free(w), free(b), free(bb), free(ref);
        cudaFree(da), cudaFree(dw), cudaFree(dbb), cudaFree(db);
    }
}

/* The fused DiT GEMMs (dit.cu) against linear_forward with the CPU's prologue and epilogue
 * ops: every A mode and epilogue, the tile shapes and the K splits over clusters. */
static void test_dgemm(void **state) {
    /* tested unless explicitly off, whatever the stream's default */
    if (!cu_opt("FUSED", 1)) {
        printf("  fused DiT GEMMs: skipped (MG_CUDA_FUSED=0)\n");
        return;
    }
    int max_split = cu_opt("SPLITK", 1) ? 4 : 1;
    /* M, N, K, A mode, epilogue, split allowed, heads, dh */
    int cases[][8] = {{37, 1152, 384, CU_DG_A_LN, CU_DG_QKV, 1, 6, 64},   {256, 1152, 384, CU_DG_A_LN, CU_DG_QKV, 1, 6, 64},
                      {100, 576, 192, CU_DG_A_LN, CU_DG_QKV, 1, 3, 64},   {64, 768, 256, CU_DG_A_LN, CU_DG_QKV, 1, 2, 128},
                      {256, 1536, 384, CU_DG_A_LN, CU_DG_GELU, 1, 0, 0},  {1024, 1536, 384, CU_DG_A_LN, CU_DG_GELU, 1, 0, 0},
                      {200, 3072, 768, CU_DG_A_LN, CU_DG_GELU, 1, 0, 0},  {48, 16, 384, CU_DG_A_LN, CU_DG_F32, 1, 0, 0},
                      {256, 384, 1536, CU_DG_A_BF16, CU_DG_RESID, 1, 0, 0}, {256, 384, 1536, CU_DG_A_BF16, CU_DG_RESID, 0, 0, 0},
                      {256, 384, 384, CU_DG_A_BF16, CU_DG_RESID, 1, 0, 0}, {1024, 384, 1536, CU_DG_A_BF16, CU_DG_RESID, 1, 0, 0},
                      {256, 384, 32, CU_DG_A_BF16, CU_DG_F32, 1, 0, 0},   {256, 768, 256, CU_DG_A_BF16, CU_DG_F32, 1, 0, 0},
                      {77, 200, 96, CU_DG_A_BF16, CU_DG_F32, 1, 0, 0}};
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int ci = 0; ci < ncases; ci++) {
        int M = cases[ci][0], N = cases[ci][1], K = cases[ci][2], am = cases[ci][3], epi = cases[ci][4];
        int H = cases[ci][6], dh = cases[ci][7], d = H * dh;
        cu_dgemm g;
        TU_OK(cu_dgemm_plan(ctx, &g, M, N, K, am, epi, cases[ci][5] ? max_split : 1));
        size_t nmk = (size_t)M * K, nmn = (size_t)M * N;
        float *a = rnd(nmk, -2, 3), *sh = rnd(K, -0.5f, 0.5f), *sc = rnd(K, -0.5f, 0.5f);
        float *w = rnd((size_t)N * K, -0.1f, 0.1f), *b = rnd(N, -0.5f, 0.5f), *gate = rnd(N, -1, 1);
        float *x0 = rnd(nmn, -2, 2), *ra = malloc(nmk * 4), *lin = malloc(nmn * 4);
        bf16_t *dw = up_bf16(w, (size_t)N * K);
        int bias_bf16 = epi == CU_DG_GELU || epi == CU_DG_QKV;
        void *db;
        if (bias_bf16) db = up_bf16(b, N); /* b rounded in place: the CPU sees the bf16 bias */
        else db = up_f32(b, N);
        float *dx = NULL, *dsh = up_f32(sh, K), *dsc = up_f32(sc, K), *dgate = up_f32(gate, N);
        bf16_t *da = NULL;
        if (am == CU_DG_A_LN) {
            dx = up_f32(a, nmk);
            layernorm_modulate_forward(ra, a, sh, sc, M, K);
            round_bf16(ra, nmk); /* the GPU keeps the normalised rows in bf16 */
        } else {
            da = up_bf16(a, nmk);
            memcpy(ra, a, nmk * 4);
        }
        linear_forward(lin, ra, w, b, M, K, N);
        cu_dgemm_args arg;
        memset(&arg, 0, sizeof arg);
        arg.a = da, arg.x = dx, arg.shift = dsh, arg.scale = dsc, arg.w = dw, arg.bias = db, arg.gate = dgate;
        char name[128];
        snprintf(name, sizeof name, "dgemm %dx%dx%d %s %s tile %d split %d", M, N, K, am == CU_DG_A_LN ? "LN" : "bf16",
                 epi == CU_DG_F32 ? "f32" : epi == CU_DG_GELU ? "gelu" : epi == CU_DG_RESID ? "resid" : "qkv+rope", g.tile,
                 g.split);
        if (epi == CU_DG_F32 || epi == CU_DG_GELU) {
            void *out = poisoned(nmn * 4);
            arg.out = out;
            TU_OK(cu_dgemm_run(&g, &arg, st));
            float *got = epi == CU_DG_F32 ? down_f32(out, nmn) : down_bf16(out, nmn);
            if (epi == CU_DG_GELU) gelu_tanh_forward(lin, lin, nmn);
            assert_rel(name, got, lin, nmn, am == CU_DG_A_LN || epi == CU_DG_GELU ? TOL_BF16 : 1e-4);
            free(got), cudaFree(out);
        } else if (epi == CU_DG_RESID) {
            float *dxo = up_f32(x0, nmn);
            arg.out = dxo;
            TU_OK(cu_dgemm_run(&g, &arg, st));
            float *got = down_f32(dxo, nmn);
            gated_residual_forward(x0, lin, gate, M, N);
            assert_rel(name, got, x0, nmn, 1e-5);
            free(got), cudaFree(dxo);
        } else { /* qkv: RoPE at a frame, ring slot 2 of 3 */
            int np = dh / 2, nt = np / 4;
            long long frame = 98765;
            size_t tab = (size_t)M * np, ring = (size_t)3 * M * d;
            float *c0 = malloc(tab * 4), *s0 = malloc(tab * 4), *cf = malloc(tab * 4), *sf = malloc(tab * 4);
            rope_tables(c0, s0, 0, M, 1, dh, 10000.0);
            rope_tables(cf, sf, frame, M, 1, dh, 10000.0);
            cu_frame_params pp;
            memset(&pp, 0, sizeof pp);
            pp.slot = 2, pp.vis = 3;
            for (int j = 0; j < nt; j++) pp.tcos[j] = cf[j], pp.tsin[j] = sf[j];
            cu_frame_params *dp = dmalloc(sizeof pp);
            CK(cudaMemcpy(dp, &pp, sizeof pp, cudaMemcpyHostToDevice));
            float *dc = up_f32(c0, tab), *ds = up_f32(s0, tab);
            bf16_t *q = poisoned(nmn * 2), *kr = poisoned(ring * 2), *vr = poisoned(ring * 2);
            arg.out = q, arg.ldq = N, arg.k_ring = kr, arg.v_ring = vr, arg.cos_sp = dc, arg.sin_sp = ds, arg.p = dp;
            arg.heads = H, arg.dh = dh;
            TU_OK(cu_dgemm_run(&g, &arg, st));
            float *gq = down_bf16(q, nmn), *gk = down_bf16(kr, ring), *gv = down_bf16(vr, ring);
            rope_forward(lin, N, cf, sf, M, H, dh);
            rope_forward(lin + d, N, cf, sf, M, H, dh);
            float *rq = malloc((size_t)M * d * 4), *rk = malloc((size_t)M * d * 4), *rv = malloc((size_t)M * d * 4);
            float *oq = malloc((size_t)M * d * 4);
            for (int i = 0; i < M; i++) {
                memcpy(rq + (size_t)i * d, lin + (size_t)i * N, d * 4);
                memcpy(rk + (size_t)i * d, lin + (size_t)i * N + d, d * 4);
                memcpy(rv + (size_t)i * d, lin + (size_t)i * N + 2 * d, d * 4);
                memcpy(oq + (size_t)i * d, gq + (size_t)i * N, d * 4);
            }
            char nm2[160];
            snprintf(nm2, sizeof nm2, "%s: q", name);
            assert_rel(nm2, oq, rq, (size_t)M * d, TOL_BF16);
            snprintf(nm2, sizeof nm2, "%s: k -> ring slot 2", name);
            assert_rel(nm2, gk + (size_t)2 * M * d, rk, (size_t)M * d, TOL_BF16);
            snprintf(nm2, sizeof nm2, "%s: v -> ring slot 2", name);
            assert_rel(nm2, gv + (size_t)2 * M * d, rv, (size_t)M * d, TOL_BF16);
            free(c0), free(s0), free(cf), free(sf), free(gq), free(gk), free(gv), free(rq), free(rk), free(rv), free(oq);
            cudaFree(dp), cudaFree(dc), cudaFree(ds), cudaFree(q), cudaFree(kr), cudaFree(vr);
        }
        free(a), free(sh), free(sc), free(w), free(b), free(gate), free(x0), free(ra), free(lin);
        cudaFree(dw), cudaFree(db), cudaFree(dx), cudaFree(dsh), cudaFree(dsc), cudaFree(dgate), cudaFree(da);
    }
}

static void test_linear_rows(void **state) {
    int R = 5, K = 77, N = 129;
    float *x = rnd((size_t)R * K, -1, 1), *w = rnd((size_t)N * K, -0.3f, 0.3f), *b = rnd(N, -1, 1);
    bf16_t *dw = up_bf16(w, (size_t)N * K);
    float *dx = up_f32(x, (size_t)R * K), *db = up_f32(b, N), *out = poisoned((size_t)R * N * 4);
    TU_OK(cu_linear_rows(out, dx, dw, db, R, K, N, st));
    float *got = down_f32(out, (size_t)R * N), *ref = malloc((size_t)R * N * 4);
    linear_forward(ref, x, w, b, R, K, N);
    assert_rel("linear rows (adaLN modulation)", got, ref, (size_t)R * N, 1e-5);
    free(x), free(w), free(b), free(got), free(ref);
    cudaFree(dw), cudaFree(dx), cudaFree(db), cudaFree(out);
}

static void test_conv_igemm(void **state) {
    /* H, W (of the conv's input as read), Ci, Co, stride, up, bias, res, relu */
    int cases[][9] = {{37, 29, 64, 64, 1, 0, 1, 0, 1}, {37, 29, 64, 64, 2, 0, 0, 0, 0}, {38, 30, 64, 64, 1, 1, 0, 0, 0},
                      {23, 41, 32, 32, 1, 0, 1, 1, 1}, {16, 16, 64, 40, 1, 0, 1, 1, 0}, {64, 64, 64, 64, 1, 0, 1, 1, 1},
                      {161, 256, 64, 64, 1, 0, 1, 1, 1}, {200, 176, 32, 32, 1, 0, 1, 0, 1}, {322, 258, 64, 64, 2, 0, 0, 0, 1},
                      {130, 258, 64, 64, 1, 1, 1, 1, 1}, {133, 127, 64, 64, 1, 0, 1, 1, 1}, {130, 132, 32, 48, 1, 1, 0, 1, 1}};
    /* versions: 4 (K split over clusters), 3, 1, 5 (halo tiles at >= 16384 output pixels,
     * stride 1, else v3), 6 (halo tiles at every size) */
    enum { NC = sizeof cases / sizeof cases[0] };
    static const int vers[] = {4, 3, 1, 5, 6};
    int with4 = cu_opt("CONVSPLIT", 1);
    for (int ci_ = with4 ? 0 : NC; ci_ < 5 * NC; ci_++) {
        int version = vers[ci_ / NC];
        int *c = cases[ci_ % NC];
        int H = c[0], W = c[1], Ci = c[2], Co = c[3], s = c[4], up = c[5];
        int Hs = up ? H / 2 : H, Ws = up ? W / 2 : W, Ho = s == 2 ? (H + 1) / 2 : H, Wo = s == 2 ? (W + 1) / 2 : W;
        size_t nin = (size_t)Hs * Ws * Ci, nout = (size_t)Ho * Wo * Co;
        float *in = rnd(nin, -1, 1), *w = rnd((size_t)Co * Ci * 9, -0.05f, 0.05f), *b = rnd(Co, -0.5f, 0.5f);
        float *res = rnd(nout, -1, 1);
        bf16_t *din = up_bf16(in, nin), *dw = up_conv_w(w, Ci, Co), *dres = c[7] ? up_bf16(res, nout) : NULL;
        float *db = up_f32(b, Co);
        bf16_t *out = poisoned(nout * 2);
        TU_OK(cu_conv3x3_igemm_v(version, out, din, dw, c[6] ? db : NULL, dres, H, W, Ci, Co, s, up, c[8], st));
        float *got = down_bf16(out, nout), *ref = malloc(nout * 4), *upin = malloc((size_t)H * W * Ci * 4);
        if (up) upsample2x_forward(upin, in, Hs, Ws, Ci);
        cpu_conv(ref, up ? upin : in, w, c[6] ? b : NULL, H, W, Ci, Co, s);
        for (size_t i = 0; i < nout; i++) {
            if (c[7]) ref[i] += res[i];
            if (c[8]) ref[i] = ref[i] > 0 ? ref[i] : 0;
        }
        char name[96];
        snprintf(name, sizeof name, "conv igemm v%d %dx%d %d->%d s%d%s%s%s%s", version, W, H, Ci, Co, s, up ? " up" : "",
                 c[6] ? " bias" : "", c[7] ? " res" : "", c[8] ? " relu" : "");
        assert_rel(name, got, ref, nout, TOL_BF16);
        free(in), free(w), free(b), free(res), free(got), free(ref), free(upin);
        cudaFree(din), cudaFree(dw), cudaFree(dres), cudaFree(db), cudaFree(out);
    }
}

static void test_conv_direct(void **state) {
    /* H, W, Ci, Co, in type, out type, relu, stride */
    int cases[][8] = {{37, 29, 3, 64, CU_U8, CU_BF16, 0, 1}, {13, 11, 4, 64, CU_F32, CU_BF16, 1, 1},
                      {13, 11, 64, 4, CU_BF16, CU_F32, 0, 1}, {37, 29, 64, 3, CU_BF16, CU_F32, 0, 1},
                      {37, 29, 64, 3, CU_BF16, CU_U8, 0, 1}, {37, 29, 32, 5, CU_BF16, CU_F32, 1, 2},
                      {20, 18, 3, 64, CU_U8, CU_BF16, 1, 2},
                      /* frame-sized: version 3's grid-stride loops go round several times */
                      {200, 256, 64, 3, CU_BF16, CU_U8, 0, 1}, {200, 256, 3, 64, CU_U8, CU_BF16, 1, 1},
                      {130, 144, 64, 4, CU_BF16, CU_F32, 1, 1}, {400, 200, 3, 64, CU_U8, CU_BF16, 0, 2}};
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int k = 0; k < 4 * nc; k++) {
        int *c = cases[k % nc], version = 4 - k / nc;
        int H = c[0], W = c[1], Ci = c[2], Co = c[3], it = c[4], ot = c[5], relu = c[6], s = c[7];
        int Ho = s == 2 ? (H + 1) / 2 : H, Wo = s == 2 ? (W + 1) / 2 : W;
        size_t nin = (size_t)H * W * Ci, nout = (size_t)Ho * Wo * Co;
        float *in = rnd(nin, it == CU_U8 ? 0 : -1, 1), *w = rnd((size_t)Co * Ci * 9, -0.1f, 0.1f), *b = rnd(Co, -0.5f, 0.5f);
        void *din;
        if (it == CU_U8) {
            uint8_t *u = malloc(nin);
            for (size_t i = 0; i < nin; i++) u[i] = (uint8_t)(in[i] * 255.0f);
            rgb_u8_to_float(in, u, nin);
            din = dmalloc(nin);
            CK(cudaMemcpy(din, u, nin, cudaMemcpyHostToDevice));
            free(u);
        } else if (it == CU_F32) {
            din = up_f32(in, nin);
        } else {
            din = up_bf16(in, nin);
        }
        bf16_t *dw = up_conv_w(w, Ci, Co);
        float *db = up_f32(b, Co), *ref = malloc(nout * 4), *got;
        size_t osz = ot == CU_U8 ? 1 : ot == CU_F32 ? 4 : 2;
        void *out = poisoned(nout * osz);
        TU_OK(cu_conv3x3_direct_v(version, out, ot, din, it, dw, db, H, W, Ci, Co, s, 0, relu, st));
        cpu_conv(ref, in, w, b, H, W, Ci, Co, s);
        if (relu)
            for (size_t i = 0; i < nout; i++) ref[i] = ref[i] > 0 ? ref[i] : 0;
        char name[96];
        snprintf(name, sizeof name, "conv direct v%d %dx%d %d->%d %s->%s s%d%s", version, W, H, Ci, Co,
                 it == CU_U8 ? "u8" : it == CU_F32 ? "f32" : "bf16", ot == CU_U8 ? "u8" : ot == CU_F32 ? "f32" : "bf16",
                 s, relu ? " relu" : "");
        if (ot == CU_U8) {
            uint8_t *g8 = malloc(nout), *r8 = malloc(nout);
            CK(cudaStreamSynchronize(st));
            CK(cudaMemcpy(g8, out, nout, cudaMemcpyDeviceToHost));
            rgb_float_to_u8(r8, ref, nout);
            int worst = 0;
            long diff = 0;
            for (size_t i = 0; i < nout; i++) {
                int e = abs((int)g8[i] - r8[i]);
                worst = e > worst ? e : worst, diff += e != 0;
            }
            printf("  %-44s n=%-8zu max |u8 diff| %d, %ld differ %s\n", name, nout, worst, diff, worst <= 1 ? "ok" : "FAIL");
            assert_true(worst <= 1);
            free(g8), free(r8);
            got = NULL;
        } else {
            got = ot == CU_F32 ? down_f32(out, nout) : down_bf16(out, nout);
            assert_rel(name, got, ref, nout, ot == CU_F32 ? 1e-5 : TOL_BF16);
        }
        free(in), free(w), free(b), free(ref), free(got);
        cudaFree(din), cudaFree(dw), cudaFree(db), cudaFree(out);
    }
}

/* Every layernorm version (cu_gated_residual_ln_v) and the library's pick; widths that take
 * version 3's 16-byte path at each register count (128 .. 1024), and ones that fall back to 2
 * (202: not a multiple of 4; 2048: too wide). */
static void test_norms(void **state) {
    int cases[][2] = {{37, 384}, {37, 200}, {11, 2048}, {5, 196}, {9, 202}, {13, 1024}, {3, 768}, {41, 128}, {2, 452}};
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    for (int kv = 0; kv < 6 * nc; kv++) {
        int k = kv % nc, version = kv / nc; /* 0: the library's cu_layernorm_modulate / cu_gated_residual_ln */
        int N = cases[k][0], C = cases[k][1];
        size_t n = (size_t)N * C;
        float *x = rnd(n, -2, 3), *y = rnd(n, -1, 1), *g = rnd(C, -1, 1), *sh = rnd(C, -0.5f, 0.5f), *sc = rnd(C, -0.5f, 0.5f);
        float *dx = up_f32(x, n), *dy = up_f32(y, n), *dg = up_f32(g, C), *dsh = up_f32(sh, C), *dsc = up_f32(sc, C);
        bf16_t *out = poisoned(n * 2);
        float *ref = malloc(n * 4);
        if (version) TU_OK(cu_gated_residual_ln_v(version, dx, NULL, NULL, out, dsh, dsc, N, C, st));
        else TU_OK(cu_layernorm_modulate(out, dx, dsh, dsc, N, C, st));
        float *got = down_bf16(out, n);
        layernorm_modulate_forward(ref, x, sh, sc, N, C);
        char name[96];
        snprintf(name, sizeof name, "layernorm+modulate v%d %dx%d", version, N, C);
        assert_rel(name, got, ref, n, TOL_BF16);
        free(got);
        CK(cudaMemset(out, 0xFF, n * 2));
        if (version) TU_OK(cu_gated_residual_ln_v(version, dx, dy, dg, out, dsh, dsc, N, C, st));
        else TU_OK(cu_gated_residual_ln(dx, dy, dg, out, dsh, dsc, N, C, st));
        float *gx = down_f32(dx, n);
        got = down_bf16(out, n);
        gated_residual_forward(x, y, g, N, C);
        layernorm_modulate_forward(ref, x, sh, sc, N, C);
        snprintf(name, sizeof name, "gated residual v%d %dx%d (x, fp32)", version, N, C);
        assert_rel(name, gx, x, n, 1e-6);
        snprintf(name, sizeof name, "gated residual + layernorm v%d %dx%d", version, N, C);
        assert_rel(name, got, ref, n, TOL_BF16);
        free(x), free(y), free(g), free(sh), free(sc), free(ref), free(got), free(gx);
        cudaFree(dx), cudaFree(dy), cudaFree(dg), cudaFree(dsh), cudaFree(dsc), cudaFree(out);
    }
    bf16_t *o = poisoned(64);
    float *dz = dmalloc(64 * 4);
    assert_int_equal(cu_gated_residual_ln_v(6, dz, NULL, NULL, o, dz, dz, 1, 32, st), MG_ERR_ARG);
    cudaFree(o), cudaFree(dz);
}

static void test_activations(void **state) {
    size_t n = 100003;
    float *a = rnd(n, -6, 6), *b = rnd(n, -3, 3), *ref = malloc(n * 4);
    float *da = up_f32(a, n), *fo = poisoned(n * 4);
    TU_OK(cu_silu(fo, da, n, st));
    float *got = down_f32(fo, n);
    silu_forward(ref, a, n);
    assert_rel("silu (f32)", got, ref, n, 1e-6);
    free(got);
    bf16_t *ba = up_bf16(a, n), *bb = up_bf16(b, n), *bo = poisoned(n * 2);
    TU_OK(cu_gelu_tanh(bo, ba, n, st));
    got = down_bf16(bo, n);
    gelu_tanh_forward(ref, a, n);
    assert_rel("gelu tanh (bf16)", got, ref, n, TOL_BF16);
    free(got);
    CK(cudaMemset(bo, 0xFF, n * 2));
    TU_OK(cu_relu(bo, ba, n, st));
    got = down_bf16(bo, n);
    relu_forward(ref, a, n);
    assert_rel("relu (bf16)", got, ref, n, 1e-6);
    free(got);
    CK(cudaMemset(bo, 0xFF, n * 2));
    TU_OK(cu_add_relu(bo, ba, bb, n, st));
    got = down_bf16(bo, n);
    add_relu_forward(ref, a, b, n);
    assert_rel("add+relu (bf16)", got, ref, n, TOL_BF16);
    free(got);
    /* the GEMM epilogue fallback */
    int M = 37, N = 129;
    float *x = rnd((size_t)M * N, -3, 3), *bias = rnd(N, -1, 1);
    float *dx = up_f32(x, (size_t)M * N), *dbias = up_f32(bias, N);
    TU_OK(cu_bias_act(dx, 1, dbias, M, N, 1, st));
    got = down_f32(dx, (size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) x[i * N + j] += bias[j];
    gelu_tanh_forward(x, x, (size_t)M * N);
    assert_rel("bias + gelu epilogue (f32)", got, x, (size_t)M * N, 1e-5);
    free(a), free(b), free(ref), free(got), free(x), free(bias);
    cudaFree(da), cudaFree(fo), cudaFree(ba), cudaFree(bb), cudaFree(bo), cudaFree(dx), cudaFree(dbias);
}

static void test_rope_kv(void **state) {
    int cases[][3] = {{37, 3, 64}, {24, 2, 128}};
    for (int k = 0; k < 2; k++) {
        int N = cases[k][0], H = cases[k][1], dh = cases[k][2], d = H * dh, np = dh / 2, nt = np / 4;
        long long frame = 123457;
        size_t n = (size_t)N * 3 * d, tab = (size_t)N * np;
        float *qkv = rnd(n, -1, 1), *c0 = malloc(tab * 4), *s0 = malloc(tab * 4), *cf = malloc(tab * 4), *sf = malloc(tab * 4);
        bf16_t *dq = up_bf16(qkv, n);
        rope_tables(c0, s0, 0, N, 1, dh, 10000.0);     /* spatial tables: frame 0, N rows of 1 token */
        rope_tables(cf, sf, frame, N, 1, dh, 10000.0); /* what the CPU uses at this frame */
        cu_frame_params p;
        memset(&p, 0, sizeof p);
        p.slot = 2, p.vis = 3;
        for (int j = 0; j < nt; j++) p.tcos[j] = cf[j], p.tsin[j] = sf[j];
        cu_frame_params *dp = dmalloc(sizeof p);
        CK(cudaMemcpy(dp, &p, sizeof p, cudaMemcpyHostToDevice));
        float *dc = up_f32(c0, tab), *ds = up_f32(s0, tab);
        size_t ring = (size_t)3 * N * d;
        bf16_t *kr = poisoned(ring * 2), *vr = poisoned(ring * 2);
        TU_OK(cu_rope_kv(dq, 3 * d, kr, vr, dc, ds, dp, N, H, dh, st));
        float *gq = down_bf16(dq, n), *gk = down_bf16(kr, ring), *gv = down_bf16(vr, ring);
        rope_forward(qkv, 3 * d, cf, sf, N, H, dh);
        rope_forward(qkv + d, 3 * d, cf, sf, N, H, dh);
        float *rq = malloc((size_t)N * d * 4), *rk = malloc((size_t)N * d * 4), *rv = malloc((size_t)N * d * 4);
        float *oq = malloc((size_t)N * d * 4);
        for (int i = 0; i < N; i++) {
            memcpy(rq + (size_t)i * d, qkv + (size_t)i * 3 * d, d * 4);
            memcpy(oq + (size_t)i * d, gq + (size_t)i * 3 * d, d * 4);
            memcpy(rk + (size_t)i * d, qkv + (size_t)i * 3 * d + d, d * 4);
            memcpy(rv + (size_t)i * d, qkv + (size_t)i * 3 * d + 2 * d, d * 4);
        }
        char name[96];
        snprintf(name, sizeof name, "rope q (N %d, %d heads of %d)", N, H, dh);
        assert_rel(name, oq, rq, (size_t)N * d, TOL_BF16);
        snprintf(name, sizeof name, "rope k -> ring slot 2");
        assert_rel(name, gk + (size_t)2 * N * d, rk, (size_t)N * d, TOL_BF16);
        snprintf(name, sizeof name, "v -> ring slot 2");
        assert_rel(name, gv + (size_t)2 * N * d, rv, (size_t)N * d, 1e-6);
        free(qkv), free(c0), free(s0), free(cf), free(sf), free(gq), free(gk), free(gv), free(rq), free(rk), free(rv), free(oq);
        cudaFree(dq), cudaFree(dp), cudaFree(dc), cudaFree(ds), cudaFree(kr), cudaFree(vr);
    }
}

static void test_attention(void **state) {
    /* Nq, Nk, heads, dh, splits (0: the library's pick), via device slot count; 3 splits of
     * 2 key tiles leave one empty; 12 splits are more than a cluster folds (the combine kernel) */
    int cases[][6] = {{37, 101, 3, 64, 1, 0},   {37, 101, 3, 64, 2, 0},    {300, 1000, 3, 64, 3, 0},
                      {256, 1024, 6, 64, 0, 1}, {130, 260, 2, 128, 1, 0},  {130, 520, 2, 128, 0, 1},
                      {37, 101, 3, 64, 3, 0},   {300, 777, 2, 128, 3, 0},  {200, 3000, 1, 64, 12, 0},
                      {257, 1028, 2, 128, 0, 1}};
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int kv = 0; kv < ncases * CU_ATTN_VERSIONS; kv++) {
        int k = kv % ncases, version = CU_ATTN_VERSIONS - kv / ncases;
        int Nq = cases[k][0], Nk = cases[k][1], H = cases[k][2], dh = cases[k][3], splits = cases[k][4];
        int d = H * dh, ldq = 3 * d;
        if (splits == 0) splits = cu_attention_splits(ctx, Nq, Nk, H);
        float *q = rnd((size_t)Nq * ldq, -2, 2), *kk = rnd((size_t)Nk * d, -2, 2), *v = rnd((size_t)Nk * d, -1, 1);
        bf16_t *dq = up_bf16(q, (size_t)Nq * ldq), *dk = up_bf16(kk, (size_t)Nk * d), *dv = up_bf16(v, (size_t)Nk * d);
        bf16_t *out = poisoned((size_t)Nq * d * 2);
        float *scr = dmalloc(cu_attention_scratch_floats(Nq, H, dh, splits) * 4 + 16);
        int *slots = NULL, nk_arg = Nk;
        if (cases[k][5]) { /* Nk = slots * rows-per-slot, read on the device */
            int vis = 4;
            slots = dmalloc(sizeof(int));
            CK(cudaMemcpy(slots, &vis, sizeof vis, cudaMemcpyHostToDevice));
            nk_arg = Nk / vis;
        }
        TU_OK(cu_attention_v(version, out, dq, ldq, dk, dv, d, slots, nk_arg, Nq, H, dh, splits, scr, st));
        float *got = down_bf16(out, (size_t)Nq * d), *ref = malloc((size_t)Nq * d * 4);
        float *scratch = malloc(attention_scratch_floats(Nq, Nk) * 4);
        attention_forward(ref, q, ldq, kk, v, d, scratch, Nq, Nk, H, dh);
        char name[96];
        snprintf(name, sizeof name, "attention v%d %d q x %d k, %d x %d, %d splits%s", version, Nq, Nk, H, dh, splits,
                 slots ? " (device count)" : "");
        assert_rel(name, got, ref, (size_t)Nq * d, TOL_BF16);
        free(q), free(kk), free(v), free(got), free(ref), free(scratch);
        cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(out), cudaFree(scr), cudaFree(slots);
    }
}

/* RoPE and the ring write folded into attention (cu_attention_rope_v) against the CPU (rope
 * then attention over the visible slots, the current one replaced by this frame's k, v), and
 * against the separate path (cu_rope_kv then cu_attention_v of the same version): the ring's
 * new slot must be bit-identical, the other slots untouched, qkv unchanged; every version
 * with the folded form, odd sizes, empty splits, the current slot first, middle and last. */
static void test_attention_rope(void **state) {
    /* N, heads, dh, visible slots, current slot, splits (0: the library's pick) */
    int cases[][6] = {{37, 3, 64, 3, 1, 2}, {37, 3, 64, 4, 3, 0}, {256, 6, 64, 4, 2, 0}, {101, 2, 64, 2, 0, 5},
                      {130, 2, 128, 2, 0, 3}, {24, 2, 128, 1, 0, 1}, {77, 1, 64, 3, 2, 12}, {65, 2, 128, 4, 1, 0}};
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    int tested = 0, identical_out = 0;
    for (int kv = 0; kv < ncases * CU_ATTN_VERSIONS; kv++) {
        int k = kv % ncases, version = CU_ATTN_VERSIONS - kv / ncases;
        int N = cases[k][0], H = cases[k][1], dh = cases[k][2], vis = cases[k][3], slot = cases[k][4];
        int splits = cases[k][5], d = H * dh, ldq = 3 * d, np = dh / 2, nt = np / 4, R = 4; /* ring slots */
        if (splits == 0) splits = cu_attention_splits(ctx, N, vis * N, H);
        size_t nq = (size_t)N * ldq, ring = (size_t)R * N * d, tab = (size_t)N * np;
        float *qkv = rnd(nq, -2, 2), *kr0 = rnd(ring, -2, 2), *vr0 = rnd(ring, -1, 1);
        float *c0 = malloc(tab * 4), *s0 = malloc(tab * 4), *cf = malloc(tab * 4), *sf = malloc(tab * 4);
        long long frame = 1000003 + kv;
        rope_tables(c0, s0, 0, N, 1, dh, 10000.0);
        rope_tables(cf, sf, frame, N, 1, dh, 10000.0);
        cu_frame_params p;
        memset(&p, 0, sizeof p);
        p.slot = slot, p.vis = vis;
        for (int j = 0; j < nt; j++) p.tcos[j] = cf[j], p.tsin[j] = sf[j];
        cu_frame_params *dp = dmalloc(sizeof p);
        CK(cudaMemcpy(dp, &p, sizeof p, cudaMemcpyHostToDevice));
        float *dc = up_f32(c0, tab), *ds = up_f32(s0, tab);
        bf16_t *dq = up_bf16(qkv, nq), *dkr = up_bf16(kr0, ring), *dvr = up_bf16(vr0, ring);
        bf16_t *out = poisoned((size_t)N * d * 2);
        float *scr = dmalloc(cu_attention_scratch_floats(N, H, dh, splits) * 4 + 16);
        mg_status stt = cu_attention_rope_v(version, out, dq, ldq, dkr, dvr, dc, ds, dp, N, H, dh, splits, scr, st);
        if (stt != MG_OK) { /* the wgmma versions at dh 128: no folded form, a clean refusal */
            assert_int_equal(stt, MG_ERR_UNSUPPORTED);
            assert_true(dh == 128 && version >= 5);
            free(qkv), free(kr0), free(vr0), free(c0), free(s0), free(cf), free(sf);
            cudaFree(dp), cudaFree(dc), cudaFree(ds), cudaFree(dq), cudaFree(dkr), cudaFree(dvr), cudaFree(out), cudaFree(scr);
            continue;
        }
        float *got = down_bf16(out, (size_t)N * d), *gk = down_bf16(dkr, ring), *gv = down_bf16(dvr, ring);
        float *gq = down_bf16(dq, nq);
        /* the CPU: rope q and k, the ring with slot `slot` replaced, attention over vis slots */
        float *rq = malloc(nq * 4);
        memcpy(rq, qkv, nq * 4);
        rope_forward(rq, ldq, cf, sf, N, H, dh);
        rope_forward(rq + d, ldq, cf, sf, N, H, dh);
        float *kr = malloc(ring * 4), *vr = malloc(ring * 4);
        memcpy(kr, kr0, ring * 4), memcpy(vr, vr0, ring * 4);
        for (int i = 0; i < N; i++) {
            memcpy(kr + ((size_t)slot * N + i) * d, rq + (size_t)i * ldq + d, d * 4);
            memcpy(vr + ((size_t)slot * N + i) * d, qkv + (size_t)i * ldq + 2 * d, d * 4);
        }
        round_bf16(kr, ring); /* the ring holds bf16 */
        float *ref = malloc((size_t)N * d * 4), *scratch = malloc(attention_scratch_floats(N, vis * N) * 4);
        float *qr = malloc((size_t)N * ldq * 4);
        memcpy(qr, rq, nq * 4);
        round_bf16(qr, nq); /* q is rotated into bf16 registers */
        attention_forward(ref, qr, ldq, kr, vr, d, scratch, N, vis * N, H, dh);
        char name[128];
        snprintf(name, sizeof name, "attention+rope v%d N %d, %dx%d, slot %d of %d, %d splits", version, N, H, dh, slot,
                 vis, splits);
        assert_rel(name, got, ref, (size_t)N * d, TOL_BF16);
        snprintf(name, sizeof name, "  ring k, slot %d (roped)", slot);
        assert_rel(name, gk + (size_t)slot * N * d, kr + (size_t)slot * N * d, (size_t)N * d, TOL_BF16);
        /* v copied exactly, the other slots untouched, qkv unchanged */
        round_bf16(kr0, ring);
        size_t bad = 0;
        for (size_t i = 0; i < ring; i++) {
            size_t sl = i / ((size_t)N * d);
            if (sl == (size_t)slot) bad += gv[i] != vr[i];
            else bad += gk[i] != kr0[i] || gv[i] != vr0[i];
        }
        for (size_t i = 0; i < nq; i++) bad += gq[i] != qkv[i];
        printf("  %-44s %zu elements wrong (v slot, other slots, qkv)\n", "  ring and qkv", bad);
        assert_true(bad == 0);
        /* the separate path on the same inputs: ring bit-identical, output compared */
        bf16_t *dq2 = up_bf16(qkv, nq), *dkr2 = up_bf16(kr0, ring), *dvr2 = up_bf16(vr0, ring);
        bf16_t *out2 = poisoned((size_t)N * d * 2);
        TU_OK(cu_rope_kv(dq2, ldq, dkr2, dvr2, dc, ds, dp, N, H, dh, st));
        TU_OK(cu_attention_v(version, out2, dq2, ldq, dkr2, dvr2, d, &dp->vis, N, N, H, dh, splits, scr, st));
        float *got2 = down_bf16(out2, (size_t)N * d), *gk2 = down_bf16(dkr2, ring), *gv2 = down_bf16(dvr2, ring);
        size_t rdiff = 0, odiff = 0;
        for (size_t i = 0; i < ring; i++) rdiff += gk[i] != gk2[i] || gv[i] != gv2[i];
        for (size_t i = 0; i < (size_t)N * d; i++) odiff += got[i] != got2[i];
        printf("  %-44s ring: %zu differ; output: %zu of %zu differ\n", "  vs cu_rope_kv + cu_attention_v", rdiff, odiff,
               (size_t)N * d);
        assert_true(rdiff == 0);
        snprintf(name, sizeof name, "  output vs the separate path");
        assert_rel(name, got, got2, (size_t)N * d, 1e-3);
        tested++, identical_out += odiff == 0;
        free(got2), free(gk2), free(gv2);
        cudaFree(dq2), cudaFree(dkr2), cudaFree(dvr2), cudaFree(out2);
        free(qkv), free(kr0), free(vr0), free(c0), free(s0), free(cf), free(sf), free(got), free(gk), free(gv), free(gq);
        free(rq), free(kr), free(vr), free(ref), free(scratch), free(qr);
        cudaFree(dp), cudaFree(dc), cudaFree(ds), cudaFree(dq), cudaFree(dkr), cudaFree(dvr), cudaFree(out), cudaFree(scr);
    }
    printf("  attention+rope: %d cases, output bit-identical to the separate path in %d\n", tested, identical_out);
    assert_true(tested >= ncases * 4);
}

static void test_layout(void **state) {
    int H = 6, W = 10, Z = 4, p = 2, N = (H / p) * (W / p), F = 2 * Z * p * p;
    size_t lat = (size_t)H * W * Z;
    float *z = rnd(lat, -1, 1), *cond = rnd(lat, -1, 1), *ref = malloc((size_t)N * F * 4);
    float *dz = up_f32(z, lat), *dc = up_f32(cond, lat);
    round_bf16(z, lat), round_bf16(cond, lat);
    for (int withc = 0; withc < 2; withc++) {
        bf16_t *tok = poisoned((size_t)N * F * 2);
        TU_OK(cu_patchify(tok, dz, withc ? dc : NULL, H, W, Z, p, st));
        float *got = down_bf16(tok, (size_t)N * F);
        patchify_forward(ref, z, withc ? cond : NULL, H, W, Z, p);
        assert_rel(withc ? "patchify" : "patchify (dream: no cond)", got, ref, (size_t)N * F, 1e-6);
        free(got), cudaFree(tok);
    }
    /* unpatchify = Euler step of size 1 onto zeros; then guidance + a real step */
    float *t1 = rnd((size_t)N * Z * p * p, -1, 1), *t2 = rnd((size_t)N * Z * p * p, -1, 1);
    float *dt1 = up_f32(t1, (size_t)N * Z * p * p), *dt2 = up_f32(t2, (size_t)N * Z * p * p), *zz = dmalloc(lat * 4);
    CK(cudaMemset(zz, 0, lat * 4));
    TU_OK(cu_unpatchify_euler(zz, dt1, NULL, 1.0f, 1.0f, H, W, Z, p, st));
    float *got = down_f32(zz, lat), *v1 = malloc(lat * 4), *v2 = malloc(lat * 4);
    unpatchify_forward(v1, t1, H, W, Z, p);
    assert_rel("unpatchify", got, v1, lat, 1e-7);
    free(got);
    float *z0 = rnd(lat, -1, 1), *dz0 = up_f32(z0, lat);
    TU_OK(cu_unpatchify_euler(dz0, dt1, dt2, 2.5f, -0.25f, H, W, Z, p, st));
    got = down_f32(dz0, lat);
    unpatchify_forward(v2, t2, H, W, Z, p);
    for (size_t i = 0; i < lat; i++) z0[i] += -0.25f * (v2[i] + 2.5f * (v1[i] - v2[i]));
    assert_rel("unpatchify + guidance + Euler", got, z0, lat, 1e-6);
    free(got);
    float *zc = dmalloc(lat * 4);
    TU_OK(cu_renoise(zc, dz, dc, 0.1f, lat, st));
    got = down_f32(zc, lat);
    float *z32 = down_f32(dz, lat), *c32 = down_f32(dc, lat);
    for (size_t i = 0; i < lat; i++) v1[i] = (1.0f - 0.1f) * z32[i] + 0.1f * c32[i];
    assert_rel("renoise", got, v1, lat, 1e-6);
    free(got);
    /* upsample */
    int uh = 7, uw = 5, uc = 64;
    size_t un = (size_t)uh * uw * uc;
    float *ui = rnd(un, -1, 1), *uref = malloc(un * 16);
    bf16_t *dui = up_bf16(ui, un), *duo = poisoned(un * 4 * 2);
    TU_OK(cu_upsample2x(duo, dui, uh, uw, uc, st));
    got = down_bf16(duo, un * 4);
    upsample2x_forward(uref, ui, uh, uw, uc);
    assert_rel("upsample 2x", got, uref, un * 4, 0);
    free(got);
    /* u8 <-> float, exact */
    size_t n8 = 3 * 37 * 29;
    uint8_t *u = malloc(n8), *u2 = malloc(n8), *du = dmalloc(n8);
    for (size_t i = 0; i < n8; i++) u[i] = (uint8_t)(i * 97 + 13);
    CK(cudaMemcpy(du, u, n8, cudaMemcpyHostToDevice));
    float *df = poisoned(n8 * 4), *fr = malloc(n8 * 4);
    TU_OK(cu_u8_to_float(df, du, n8, st));
    got = down_f32(df, n8);
    rgb_u8_to_float(fr, u, n8);
    assert_rel("u8 -> float", got, fr, n8, 0);
    free(got);
    float *ff = rnd(n8, -0.2f, 1.2f), *dff = up_f32(ff, n8);
    TU_OK(cu_float_to_u8(du, dff, n8, st));
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(u2, du, n8, cudaMemcpyDeviceToHost));
    rgb_float_to_u8(u, ff, n8);
    printf("  %-44s n=%-8zu %s\n", "float -> u8 (clamp, round half even)", n8, memcmp(u, u2, n8) ? "FAIL" : "identical");
    assert_memory_equal(u, u2, n8);
    free(z), free(cond), free(ref), free(t1), free(t2), free(v1), free(v2), free(z0), free(z32), free(c32);
    free(ui), free(uref), free(u), free(u2), free(fr), free(ff);
    cudaFree(dz), cudaFree(dc), cudaFree(dt1), cudaFree(dt2), cudaFree(zz), cudaFree(dz0), cudaFree(zc);
    cudaFree(dui), cudaFree(duo), cudaFree(du), cudaFree(df), cudaFree(dff);
}

/* ---- whole frame steps ----------------------------------------------------------------- */


/* T frames through a CPU stream and a CUDA stream with the same inputs and noise; compares
 * the final latents (relative L2) and the u8 frames. */
static void frame_steps(const char *config, int W, int H, int steps, float guidance, const char *prompt, double tol_lat) {
    mg_model *m = load_model(config, 7);
    const mg_config *c = mg_model_config(m);
    int T = 6, K = c->ring;
    mg_stream_opts o = mg_stream_opts_default();
    o.width = W, o.height = H, o.steps = steps, o.guidance = guidance, o.prompt = prompt;
    mg_stream *cpu;
    TU_OK(mg_stream_new(m, &o, &cpu));
    cuda_stream_cfg cc = {W, H, steps, K, guidance};
    cuda_stream *gpu;
    TU_OK(cuda_stream_new(m, &cc, &gpu));
    int prow = model_prompt_index(m, prompt), dream = !strcmp(prompt, "dream");
    size_t img = (size_t)W * H * 3, lat = (size_t)(H / 8) * (W / 8) * c->z_ch;
    uint8_t *in = malloc(img), *og = malloc(img), *oc = malloc(img);
    float *fimg = malloc(img * 4), *noise = malloc(lat * 4), *ctxn = malloc(lat * 4), *zg = malloc(lat * 4);
    mg_rng r;
    mg_rng_seed(&r, 99);
    double worst_lat = 0, worst_mean = 0;
    int worst_px = 0;
    for (int t = 0; t < T; t++) {
        frame_inputs(&r, in, img, noise, ctxn, lat);
        memset(og, 0xAB, img);
        TU_OK(stream_step_f32(cpu, in, fimg, noise, ctxn));
        rgb_float_to_u8(oc, fimg, img);
        TU_OK(cuda_stream_step(gpu, in, og, noise, ctxn, prow, dream));
        TU_OK(cuda_stream_latent(gpu, zg));
        char name[128];
        snprintf(name, sizeof name, "%s %dx%d %d steps g%.1f %s: frame %d latent", config, W, H, steps, guidance, prompt, t);
        double e = rel_l2(name, zg, stream_latent(cpu), lat, tol_lat);
        worst_lat = e > worst_lat ? e : worst_lat;
        long sum = 0;
        int mx = 0;
        for (size_t i = 0; i < img; i++) {
            int dlt = abs((int)og[i] - oc[i]);
            sum += dlt, mx = dlt > mx ? dlt : mx;
        }
        double mean = (double)sum / img;
        printf("  %-44s mean |u8 diff| %.3f, max %d\n", "  frame", mean, mx);
        worst_mean = mean > worst_mean ? mean : worst_mean;
        worst_px = mx > worst_px ? mx : worst_px;
    }
    printf("  %s: worst latent rel L2 %.3e (tol %.0e), worst mean |u8 diff| %.3f, max %d over %d frames (ring %d)\n",
           config, worst_lat, tol_lat, worst_mean, worst_px, T, K);
    assert_true(worst_lat <= tol_lat);
    assert_true(worst_mean <= 2.0);
    free(in), free(og), free(oc), free(fimg), free(noise), free(ctxn), free(zg);
    cuda_stream_free(gpu);
    mg_stream_free(cpu);
    mg_model_free(m);
}

static void test_frame_tiny(void **state) { frame_steps("tiny", 64, 48, 2, 1.0f, "colorize", 3e-2); }
static void test_frame_tiny_guided_dream(void **state) { frame_steps("tiny", 64, 48, 2, 2.5f, "dream", 5e-2); }
static void test_frame_s(void **state) { frame_steps("s", 128, 96, 2, 1.0f, "restore", 3e-2); }

/* The public API: a CUDA stream and a CPU stream with one seed see the same noise. */
static void test_public_api(void **state) {
    mg_model *m = load_model("tiny", 3);
    mg_stream_opts o = mg_stream_opts_default();
    o.width = 64, o.height = 64, o.seed = 42;
    mg_stream *a, *b;
    TU_OK(mg_stream_new(m, &o, &a));
    o.device = MG_DEVICE_CUDA;
    TU_OK(mg_stream_new(m, &o, &b));
    size_t img = 64 * 64 * 3;
    uint8_t *in = malloc(img), *oa = malloc(img), *ob = malloc(img);
    double worst = 0;
    for (int t = 0; t < 5; t++) {
        for (size_t i = 0; i < img; i++) in[i] = (uint8_t)(i * 7 + t * 31);
        TU_OK(mg_stream_step(a, in, oa));
        TU_OK(mg_stream_step(b, in, ob));
        long sum = 0;
        for (size_t i = 0; i < img; i++) sum += abs((int)oa[i] - ob[i]);
        worst = (double)sum / img > worst ? (double)sum / img : worst;
    }
    assert_int_equal(mg_stream_frame_index(b), 5);
    mg_step_timing tm;
    mg_stream_last_timing(b, &tm);
    printf("  public API, seed 42, 5 frames: worst mean |u8 diff| cpu vs cuda %.3f; host-to-host %.2f ms\n", worst,
           tm.total_ms);
    assert_true(worst <= 2.0);
    assert_non_null(stream_cuda(b));
    free(in), free(oa), free(ob);
    mg_stream_free(a), mg_stream_free(b);
    mg_model_free(m);
}

/* env = v; v NULL: back to saved, the caller's value (NULL: unset); nothing without env */
static void env_set(const char *env, const char *v, const char *saved) {
    if (!env) return;
    if (v) setenv(env, v, 1);
    else if (saved) setenv(env, saved, 1);
    else unsetenv(env);
}

/* 6 frames of 128x64 through two CUDA streams of m with the same inputs and noise (from
 * seed): a replays its captured graph, b launches the kernels one by one. Frame dream_at is a
 * dream (prompt row 7, no input; the others row 1; -1: none). With env, a runs with env=va
 * and b with env=vb, set while each is made (a stream reads its switches then), the caller's
 * value back after. Returns whether every output frame and latent were
 * bit-identical; *worst gets the worst latent rel L2 of a against b (each frame's printed
 * under label against 1e-3, if given), *graph_ms a's last time on the device. */
static int graph_vs_eager(mg_model *m, uint64_t seed, int dream_at, const char *env, const char *va, const char *vb,
                          const char *label, double *worst, double *graph_ms) {
    const char *cur = env ? getenv(env) : NULL;
    char buf[16] = "";
    if (cur) snprintf(buf, sizeof buf, "%s", cur);
    const char *saved = cur ? buf : NULL;
    int W = 128, H = 64, K = mg_model_config(m)->ring;
    cuda_stream_cfg cc = {W, H, 2, K, 1.0f};
    cuda_stream *a, *b;
    env_set(env, va, saved);
    mg_status sa = cuda_stream_new(m, &cc, &a);
    env_set(env, vb, saved);
    mg_status sb = cuda_stream_new(m, &cc, &b);
    env_set(env, NULL, saved);
    TU_OK(sa);
    TU_OK(sb);
    cuda_stream_set_mode(b, CUDA_MODE_EAGER);
    size_t img = (size_t)W * H * 3, lat = (size_t)(H / 8) * (W / 8) * 4;
    uint8_t *in = malloc(img), *oa = malloc(img), *ob = malloc(img);
    float *n1 = malloc(lat * 4), *n2 = malloc(lat * 4), *za = malloc(lat * 4), *zb = malloc(lat * 4);
    mg_rng r;
    mg_rng_seed(&r, seed);
    int same = 1;
    *worst = 0;
    for (int t = 0; t < 6; t++) {
        frame_inputs(&r, in, img, n1, n2, lat);
        int dream = t == dream_at;
        TU_OK(cuda_stream_step(a, in, oa, n1, n2, dream ? 7 : 1, dream));
        TU_OK(cuda_stream_step(b, in, ob, n1, n2, dream ? 7 : 1, dream));
        TU_OK(cuda_stream_latent(a, za));
        TU_OK(cuda_stream_latent(b, zb));
        same &= !memcmp(oa, ob, img) && !memcmp(za, zb, lat * 4);
        double e = label ? rel_l2(label, za, zb, lat, 1e-3) : tu_rel_l2(za, zb, lat);
        *worst = e > *worst ? e : *worst;
    }
    *graph_ms = cuda_stream_last_device_ms(a);
    free(in), free(oa), free(ob), free(n1), free(n2), free(za), free(zb);
    cuda_stream_free(a), cuda_stream_free(b);
    return same;
}

/* Replaying the captured graph gives exactly what launching the kernels one by one gives. */
static void graph_equals_eager(int nconfigs) {
    const char *configs[] = {"s", "tiny"};
    for (int ci = 0; ci < nconfigs; ci++) {
        mg_model *m = load_model(configs[ci], 11);
        double worst, ms;
        int same = graph_vs_eager(m, 5, 4, NULL, NULL, NULL, NULL, &worst, &ms); /* the second graph (dream) too */
        printf("  %s: graph replay vs eager launches, 6 frames (one dream): %s (graph %.3f ms on the device)\n",
               configs[ci], same ? "bit-identical" : "DIFFER", ms);
        assert_true(same);
        mg_model_free(m);
    }
}

static void test_graph_equals_eager(void **state) { graph_equals_eager(2); }

/* The frame with RoPE folded into attention (MG_CUDA_ROPEATT=1) against MG_CUDA_ROPEATT=0
 * (cu_rope_kv + cu_attention): same latents and u8 frames over 6 frames (the ring fills and
 * wraps). A stream reads the switch when it is made: the folded stream is a replayed graph,
 * the other eager launches. The caller's MG_CUDA_ROPEATT is restored after. */
static void test_ropeatt_frames(void **state) {
    mg_model *m = load_model("s", 13);
    double worst, ms;
    int same = graph_vs_eager(m, 17, -1, "MG_CUDA_ROPEATT", "1", "0", "  s frame latent, folded vs separate rope", &worst,
                              &ms);
    printf("  s 128x64: attention+rope vs cu_rope_kv + attention, 6 frames: %s (worst latent rel L2 %.2e)\n",
           same ? "bit-identical" : "differ", worst);
    assert_true(same);
    assert_true(worst <= 1e-3);
    mg_model_free(m);
}

/* The paths that are off by default (MG_CUDA_FUSED=1: dit.cu's fused DiT kernels with the K
 * split; MG_CUDA_PDL=1: programmatic dependent launch): frame steps against the CPU, and graph
 * against eager. Skipped where the environment turns them off explicitly. */
static void test_fused_pdl_paths(void **state) {
    if (!cu_opt("FUSED", 1) || !cu_opt("PDL", 1)) {
        printf("  fused DiT + PDL stream: skipped (switched off)\n");
        return;
    }
    setenv("MG_CUDA_FUSED", "1", 1), setenv("MG_CUDA_PDL", "1", 1);
    printf("  with MG_CUDA_FUSED=1 MG_CUDA_PDL=1:\n");
    frame_steps("tiny", 64, 48, 2, 2.5f, "dream", 5e-2);
    frame_steps("s", 128, 96, 2, 1.0f, "restore", 3e-2);
    graph_equals_eager(1);
    unsetenv("MG_CUDA_FUSED"), unsetenv("MG_CUDA_PDL");
}

static int setup(void **state) {
    seed_ctr = 1000;
    return gpu_setup("test_cuda");
}

static int teardown(void **state) { return gpu_teardown(); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm),          cmocka_unit_test(test_dgemm),
        cmocka_unit_test(test_linear_rows),
        cmocka_unit_test(test_conv_igemm),    cmocka_unit_test(test_conv_direct),
        cmocka_unit_test(test_norms),         cmocka_unit_test(test_activations),
        cmocka_unit_test(test_rope_kv),       cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_rope), cmocka_unit_test(test_ropeatt_frames),
        cmocka_unit_test(test_layout),        cmocka_unit_test(test_frame_tiny),
        cmocka_unit_test(test_frame_tiny_guided_dream), cmocka_unit_test(test_frame_s),
        cmocka_unit_test(test_public_api),    cmocka_unit_test(test_graph_equals_eager),
        cmocka_unit_test(test_fused_pdl_paths),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
