/* Kernel lab: the autoencoder's 3x3 convolutions, bf16 HWC.
 * 64 -> 64 channels (the Blocks, the down- and up-convs):
 *   d1  direct convolution in fp32 on the CUDA cores (the generic fallback)
 *   i1  implicit GEMM on the tensor cores (mma.sync m16n8k16), 128-pixel tiles, double buffer
 *   i2  32-pixel tiles and 4 stages below 32768 output pixels, 128-pixel tiles and 3 stages
 *       above
 *   i3  the library's: i2 with ldmatrix fragment loads
 *   i5  halo tiles (stride 1, >= 16384 output pixels, else i3): each block keeps its weights
 *       resident in shared memory and loads each output tile's input halo once; the nine
 *       taps are shifted ldmatrix reads of it (MG_CUDA_CONVHALO=1 in the library)
 *   i6  i5 at every size (stride 1)
 * thin layers (enc.in: u8 frame 3 -> 64; dec.out: 64 -> 3, u8 out):
 *   d1  the generic direct kernel
 *   d2  thin-layer kernels: all outputs per thread, vector loads
 *   d3  the library's (MG_CUDA_THIN3=0 for d2): 8 lanes per pixel for the thin outputs (a
 *       tap's channels split, partial sums through shuffles), a thread per 8 output channels
 *       for the thin inputs; grid-stride loops over a few blocks per SM
 *   d4  the library's (MG_CUDA_THIN4=0 for d3): d3, but at >= 16384 pixels the thin outputs
 *       from 64 channels on the tensor cores (i5's halo tiles with one n-tile of 8 outputs) and
 *       the u8 frame in (3 -> 64) as a (pixels x 32) @ (32 x 64) mma.sync product
 * Checked against the CPU (conv3x3_forward) on the same inputs; timed with events, L2 flushed,
 * against the measured peaks. */
#include "lab.h"

typedef struct conv_arg {
    void *out, *in;
    bf16_t *w;
    float *b;
    int H, W, Ci, Co, stride, up, it, ot, kind, version; /* kind 0: direct, 1: igemm */
} conv_arg;

static void run_conv(void *p, cudaStream_t st) {
    conv_arg *a = (conv_arg *)p;
    if (a->kind == 0)
        LOK(cu_conv3x3_direct_v(a->version, a->out, (cu_dtype)a->ot, a->in, (cu_dtype)a->it, a->w, a->b, a->H, a->W,
                                a->Ci, a->Co, a->stride, a->up, 0, st));
    else
        LOK(cu_conv3x3_igemm_v(a->version, (bf16_t *)a->out, (const bf16_t *)a->in, a->w, a->b, NULL, a->H, a->W,
                               a->Ci, a->Co, a->stride, a->up, 0, st));
}

int main(void) {
    cu_ctx *ctx;
    LOK(cu_ctx_new(&ctx));
    cudaStream_t st;
    LCK(cudaStreamCreate(&st));
    printf("conv3x3 lab on %s\n", cu_ctx_device_name(ctx));
    /* H, W (as read), Ci, Co, stride, up, in type, out type */
    int shapes[][8] = {{512, 512, 64, 64, 1, 0, CU_BF16, CU_BF16}, {256, 256, 64, 64, 1, 0, CU_BF16, CU_BF16},
                       {256, 256, 64, 64, 2, 0, CU_BF16, CU_BF16}, {512, 512, 64, 64, 1, 1, CU_BF16, CU_BF16},
                       {128, 128, 64, 64, 1, 0, CU_BF16, CU_BF16}, {64, 64, 64, 64, 1, 0, CU_BF16, CU_BF16},
                       {32, 32, 64, 64, 1, 0, CU_BF16, CU_BF16},   {256, 256, 64, 64, 1, 1, CU_BF16, CU_BF16},
                       {512, 512, 3, 64, 1, 0, CU_U8, CU_BF16},
                       {512, 512, 64, 3, 1, 0, CU_BF16, CU_U8},    {256, 256, 64, 3, 1, 0, CU_BF16, CU_U8},
                       {256, 256, 3, 64, 1, 0, CU_U8, CU_BF16},
                       /* s's enc.out and dec.in at 256x256 (the library's are fp32 out / in) */
                       {32, 32, 64, 4, 1, 0, CU_BF16, CU_BF16},    {32, 32, 4, 64, 1, 0, CU_BF16, CU_BF16}};
    for (int si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++) {
        int *c = shapes[si];
        int H = c[0], W = c[1], Ci = c[2], Co = c[3], s = c[4], up = c[5], it = c[6], ot = c[7];
        int Hs = up ? H / 2 : H, Ws = up ? W / 2 : W, Ho = s == 2 ? H / 2 : H, Wo = s == 2 ? W / 2 : W;
        size_t nin = (size_t)Hs * Ws * Ci, nout = (size_t)Ho * Wo * Co;
        float *in = lab_rand(nin, it == CU_U8 ? 0 : -1, 1, 5 + si), *w = lab_rand((size_t)Co * Ci * 9, -0.05f, 0.05f, 50 + si);
        float *b = lab_rand(Co, -0.5f, 0.5f, 90 + si), *ref = (float *)malloc(nout * 4);
        uint8_t *in8 = NULL;
        if (it == CU_U8) {
            in8 = (uint8_t *)malloc(nin);
            for (size_t i = 0; i < nin; i++) in8[i] = (uint8_t)(in[i] * 255.0f);
            rgb_u8_to_float(in, in8, nin);
        }
        float *upin = (float *)malloc((size_t)H * W * Ci * 4), *wp = (float *)malloc(conv3x3_packed_floats(Ci, Co) * 4);
        float *scr = (float *)malloc(conv3x3_scratch_floats(H, W, Ci, Co, s) * 4);
        if (up) upsample2x_forward(upin, in, Hs, Ws, Ci);
        conv3x3_pack(wp, w, Ci, Co);
        conv3x3_forward(ref, up ? upin : in, wp, b, scr, H, W, Ci, Co, s);
        if (ot == CU_U8) { /* compare u8 codes as floats */
            uint8_t *r8 = (uint8_t *)malloc(nout);
            rgb_float_to_u8(r8, ref, nout);
            for (size_t i = 0; i < nout; i++) ref[i] = r8[i];
            free(r8);
        }
        float *wt = (float *)malloc((size_t)Co * 9 * Ci * 4); /* (Co, 9*Ci), k = tap*Ci + ci */
        for (int co = 0; co < Co; co++)
            for (int ci = 0; ci < Ci; ci++)
                for (int k = 0; k < 9; k++) wt[(size_t)co * 9 * Ci + k * Ci + ci] = w[((size_t)co * Ci + ci) * 9 + k];
        conv_arg a;
        memset(&a, 0, sizeof a);
        a.w = lab_up_bf16(wt, (size_t)Co * 9 * Ci);
        if (it == CU_U8) {
            LCK(cudaMalloc(&a.in, nin));
            LCK(cudaMemcpy(a.in, in8, nin, cudaMemcpyHostToDevice));
        } else {
            a.in = lab_up_bf16(in, nin);
        }
        size_t osz = ot == CU_U8 ? 1 : 2;
        LCK(cudaMalloc(&a.out, nout * osz));
        LCK(cudaMalloc(&a.b, Co * 4));
        LCK(cudaMemcpy(a.b, b, Co * 4, cudaMemcpyHostToDevice));
        a.H = H, a.W = W, a.Ci = Ci, a.Co = Co, a.stride = s, a.up = up, a.it = it, a.ot = ot;
        double flops = 2.0 * Ho * Wo * 9.0 * Ci * Co, bytes = (double)nin * (it == CU_U8 ? 1 : 2) + (double)nout * osz + 18.0 * Ci * Co;
        int thin = Ci < 8 || Co < 8;
        int kinds[8] = {0, thin ? 0 : 1, thin ? -1 : 1, thin ? -1 : 1, thin ? -1 : 1, thin || s != 1 ? -1 : 1,
                        thin ? 0 : -1, thin ? 0 : -1};
        int vers[8] = {1, thin ? 2 : 1, 2, 3, 5, 6, 3, 4};
        const char *names[8] = {"d1 direct", thin ? "d2 thin" : "i1 igemm", "i2 igemm", "i3 igemm", "i5 halo", "i6 halo",
                                "d3 thin", "d4 thin"};
        for (int vi = 0; vi < 8; vi++) {
            if (kinds[vi] < 0) continue;
            if (vi == 0 && !thin && H * W > 128 * 128) continue; /* d1 at 64 channels: seconds, no news */
            a.kind = kinds[vi], a.version = vers[vi];
            LCK(cudaMemset(a.out, 0xFF, nout * osz));
            run_conv(&a, st);
            float *got;
            if (ot == CU_U8) {
                uint8_t *g8 = (uint8_t *)malloc(nout);
                LCK(cudaDeviceSynchronize());
                LCK(cudaMemcpy(g8, a.out, nout, cudaMemcpyDeviceToHost));
                got = (float *)malloc(nout * 4);
                for (size_t i = 0; i < nout; i++) got[i] = g8[i];
                free(g8);
            } else {
                got = lab_down_bf16((const bf16_t *)a.out, nout);
            }
            double err = lab_rel_l2(got, ref, nout);
            float ms = lab_time(run_conv, &a, st, 30);
            char name[96];
            snprintf(name, sizeof name, "%s %dx%d %d->%d s%d%s%s", names[vi], W, H, Ci, Co, s, up ? " up2x" : "",
                     it == CU_U8 ? " u8 in" : ot == CU_U8 ? " u8 out" : "");
            lab_report(name, ms, flops, bytes, err);
            free(got);
        }
        free(in), free(w), free(b), free(ref), free(upin), free(wp), free(scr), free(wt), free(in8);
        cudaFree(a.out), cudaFree(a.in), cudaFree(a.w), cudaFree(a.b);
    }
    cu_ctx_free(ctx);
    return 0;
}
