/* 3x3 convolution, pad 1, stride 1 or 2, HWC: the autoencoder's hot spot.
 *
 * Two methods behind conv3x3_forward(_ex), picked per call by conv_wino_use():
 *   Winograd F(2x2, 3x3) (conv_winograd.c) for stride 1 with Ci >= 16 and >= 64 output
 *     pixels: every c -> c conv of the autoencoder and its c -> 3 output conv;
 *   blocked im2col + GEMM (here) for the rest: the stride-2 convs, the encoder's 3 -> c input,
 *     the c -> 4 / 4 -> c latent convs, images under 8x8.
 * conv3x3_pack writes both packed weights (the Winograd one only where the channel counts
 * allow it), since the stride is not known at load time.
 *
 * Blocked im2col + one GEMM per block. The output pixels (Ho*Wo, in row-major order) are cut
 * into blocks; a block is unrolled into scratch as a (pixels, 9*Ci) matrix whose row for
 * output pixel (y, x) is the three input row segments it reads, ky = 0..2, each 3*Ci floats.
 * In HWC those 3*Ci floats are contiguous in the input, so a patch row is three memcpy's
 * (zeros at the borders). The packed weight is (9*Ci, Co), row (ky*3 + kx)*Ci + ci, so a
 * block is one GEMM
 *     out_block (pixels, Co) = patches (pixels, 9*Ci) @ wp (9*Ci, Co)
 * onto the bias (and residual) written first (beta 1). Since out is (Ho*Wo, Co), a block's
 * output rows are contiguous whatever the image width. Where Co is a multiple of 16 the GEMM is
 * conv3x3_gemm_kernel (conv_winograd.c's register-blocked AVX-512/AVX2 kernel), else gemm_nn:
 * 256x256 32->32 stride 2 on one thread went from 3.8 ms (OpenBLAS) to 2.9 ms.
 *
 * Threads take whole blocks (im2col and a single-threaded GEMM, each into its own slot of
 * scratch): one fork/join per conv. The first version ran the blocks one after another with
 * the im2col OpenMP-parallel and OpenBLAS threading each GEMM ("serial-blk" below): a few
 * fork/joins per block. The padded-width method ("padded-w": zero-pad the input, then 9 GEMMs,
 * one per tap, over the shifted padded frame) needs a full-frame scratch (129 MiB at
 * 512x512x64) and its K = Ci GEMMs are less efficient. Both stay in dev/cpu/bench_conv.c.
 *
 * dev/cpu/bench_conv.c on the 2-core dev VM (Xeon, Sapphire Rapids class, KVM), 2 OpenMP
 * threads, GFLOP/s (2*Ho*Wo*9*Ci*Co flops), best of >= 5 runs in one quiet run, before
 * Winograd and conv3x3_gemm_kernel ("lib" is this im2col with gemm_nn; Winograd's numbers
 * are in conv_winograd.c):
 *                                  lib   serial-blk  padded-w
 *   OpenBLAS 0.3.21, OPENBLAS_CORETYPE=SkylakeX (AVX-512 kernels):
 *     256x256  64->64  s1        204.6     172.6      197.3
 *      32x32   32->32  s1        165.9     128.9       66.7
 *     512x512  64->64  s1        203.9     174.4      121.6
 *   OpenBLAS as it detects this CPU ("Prescott", SSE3 kernels):
 *     256x256  64->64  s1         54.8      44.4       50.2
 *      32x32   32->32  s1         54.2      44.0       41.2
 *   built-in GEMM (OPENBLAS=0, gemm_fallback.c, AVX2):
 *     256x256  64->64  s1        103.2     100.5      102.2
 *      32x32   32->32  s1         78.4      73.9       60.6
 * With a third process busy on one of the two cores, the per-block fork/joins are what breaks:
 * serial-blk fell to 1.2-11 GFLOP/s at 256x256 and padded-w to 0.2 GFLOP/s at 32x32 (each
 * join waits out a time slice), while lib stayed at 14-100. Block sizes of 64K-512K floats
 * measured within noise of each other; 32K was ~25% slower.
 */
#include "ops/ops.h"

#include <string.h>

#include "ops/cpu/conv_impl.h"
#include "ops/cpu/parallel.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

/* Total scratch: 8 MiB, or the whole image's im2col when that is smaller. A full-frame
 * im2col at 512x512x64 would be 600 MB; a few blocks in flight are all that is needed. */
#define CONV_SCRATCH_FLOATS ((size_t)2 * 1024 * 1024)
/* Target size of one thread's im2col block (floats): it stays in L2 while the GEMM runs. */
#ifndef MG_CONV_BLOCK_FLOATS
#define MG_CONV_BLOCK_FLOATS (128 * 1024)
#endif
/* At least this many blocks per thread, so that when the OS takes a core from one thread for
 * a time slice the others can take over its remaining blocks. */
#define CONV_BLOCKS_PER_THREAD 4

/* Winograd tile size: F(2x2, 3x3). F(4x4, 3x3) is ~1.5x faster still but ~5x less accurate
 * in fp32 (~1e-5 worst relative error on random data at Ci = 64, against ~2e-6; see
 * conv_winograd.c): build with -DMG_CONV_WINO_M=4 to trade. */
#ifndef MG_CONV_WINO_M
#define MG_CONV_WINO_M 2
#endif
/* Winograd needs this many input channels and output pixels to beat im2col (one thread,
 * dev/cpu/bench_conv.c): at Ci = 8 and 12 the 16-lane padding of the input channels eats the
 * gain, below 8x8 pixels the transforms do. Any Co wins: at Co = 3 (the decoder's output)
 * Winograd with Co padded to 16 still beats im2col's thin GEMM, 4.1 against 6.2 ms at
 * 256x256x32. */
#ifndef MG_CONV_WINO_MIN_CI
#define MG_CONV_WINO_MIN_CI 16
#endif
#ifndef MG_CONV_WINO_MIN_PIX
#define MG_CONV_WINO_MIN_PIX 64
#endif

static int conv_out_size(int n, int stride) { return stride == 2 ? (n + 1) / 2 : n; }

/* The pack holds the Winograd weights (after the im2col ones) for these channel counts; the
 * stride and image size are only known per call. */
static int conv_wino_packed(int Ci, int Co) { return Ci >= MG_CONV_WINO_MIN_CI && Co >= 1; }

static int conv_wino_use(int H, int W, int Ci, int Co, int stride) {
    return stride == 1 && conv_wino_packed(Ci, Co) && (long)H * W >= MG_CONV_WINO_MIN_PIX;
}

size_t conv3x3_packed_floats(int Ci, int Co) {
    return (size_t)9 * Ci * Co +
           (conv_wino_packed(Ci, Co) ? conv3x3_wino_packed_floats(Ci, Co, MG_CONV_WINO_M) : 0);
}

void conv3x3_pack(float *wp, const float *w, int Ci, int Co) {
    if (conv_wino_packed(Ci, Co))
        conv3x3_wino_pack(wp + (size_t)9 * Ci * Co, w, Ci, Co, MG_CONV_WINO_M);
    /* w (Co, Ci, 3, 3) -> wp (9*Ci, Co), row (ky*3 + kx)*Ci + ci */
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
            for (int ci = 0; ci < Ci; ci++)
                for (int co = 0; co < Co; co++)
                    wp[((size_t)(ky * 3 + kx) * Ci + ci) * Co + co] =
                        w[(((size_t)co * Ci + ci) * 3 + ky) * 3 + kx];
}

size_t conv3x3_scratch_floats(int H, int W, int Ci, int Co, int stride) {
    if (conv_wino_use(H, W, Ci, Co, stride))
        return conv3x3_wino_scratch_floats(H, W, Ci, Co, MG_CONV_WINO_M);
    return conv3x3_im2col_scratch_floats(H, W, Ci, stride);
}

size_t conv3x3_im2col_scratch_floats(int H, int W, int Ci, int stride) {
    size_t K = (size_t)9 * Ci;
    size_t full = (size_t)conv_out_size(H, stride) * conv_out_size(W, stride) * K;
    size_t cap = CONV_SCRATCH_FLOATS > K ? CONV_SCRATCH_FLOATS : K; /* at least one pixel */
    return full < cap ? full : cap;
}

/* One patch row (9*Ci floats) for output pixel (y, x): input rows y*s-1..y*s+1, columns
 * x*s-1..x*s+1, zero outside the image. */
static void im2col_pixel(float *patch, const float *inp, int H, int W, int Ci, int y, int x,
                         int stride) {
    int iy0 = y * stride - 1, ix0 = x * stride - 1;
    size_t seg = (size_t)3 * Ci;
    for (int ky = 0; ky < 3; ky++) {
        float *dst = patch + ky * seg;
        int iy = iy0 + ky;
        if (iy < 0 || iy >= H) {
            memset(dst, 0, seg * sizeof(float));
        } else if (ix0 >= 0 && ix0 + 2 < W) {
            memcpy(dst, inp + ((size_t)iy * W + ix0) * Ci, seg * sizeof(float));
        } else {
            for (int kx = 0; kx < 3; kx++) {
                int ix = ix0 + kx;
                if (ix < 0 || ix >= W)
                    memset(dst + kx * Ci, 0, (size_t)Ci * sizeof(float));
                else
                    memcpy(dst + kx * Ci, inp + ((size_t)iy * W + ix) * Ci,
                           (size_t)Ci * sizeof(float));
            }
        }
    }
}

void conv3x3_forward(float *out, const float *inp, const float *wp, const float *b,
                     float *scratch, int H, int W, int Ci, int Co, int stride) {
    conv3x3_forward_ex(out, inp, wp, b, NULL, MG_ACT_NONE, scratch, H, W, Ci, Co, stride);
}

void conv3x3_forward_ex(float *out, const float *inp, const float *wp, const float *b,
                        const float *residual, int act, float *scratch, int H, int W, int Ci,
                        int Co, int stride) {
    if (conv_wino_use(H, W, Ci, Co, stride))
        conv3x3_wino_forward(out, inp, wp + (size_t)9 * Ci * Co, b, residual, act, scratch, H, W,
                             Ci, Co, MG_CONV_WINO_M);
    else
        conv3x3_im2col_forward(out, inp, wp, b, residual, act, scratch, H, W, Ci, Co, stride);
}

void conv3x3_im2col_forward(float *out, const float *inp, const float *wp, const float *b,
                            const float *residual, int act, float *scratch, int H, int W, int Ci,
                            int Co, int stride) {
    int Ho = conv_out_size(H, stride), Wo = conv_out_size(W, stride), K = 9 * Ci;
    long npix = (long)Ho * Wo;
    if (npix <= 0) return;
    /* The scratch was sized without knowing the thread count, so the block shrinks (and past
     * that, the number of threads) until one slot per thread fits in it. */
    long fit = (long)(conv3x3_im2col_scratch_floats(H, W, Ci, stride) / K); /* pixels, >= 1 */
    int nthreads = 1;
#ifdef MG_HAVE_OPENMP
    nthreads = omp_get_max_threads();
#endif
    long P = MG_CONV_BLOCK_FLOATS / K; /* pixels per block */
    long spread = (npix + (long)nthreads * CONV_BLOCKS_PER_THREAD - 1) /
                  ((long)nthreads * CONV_BLOCKS_PER_THREAD);
    if (P > spread) P = spread;
    if (P > fit / nthreads) P = fit / nthreads;
    if (P < 1) P = 1;
    if (P > 12) P -= P % 12; /* whole row blocks for conv3x3_gemm_kernel but in the last block */
    long nblocks = (npix + P - 1) / P;
    int nslots = fit / P < nthreads ? (int)(fit / P) : nthreads;
    (void)nslots; /* unused without OpenMP */
    MG_OMP(omp parallel num_threads(nslots) if (nblocks > 1 && (double)npix * K * Co > 1e6))
    {
        int tid = 0;
#ifdef MG_HAVE_OPENMP
        tid = omp_get_thread_num();
#endif
        float *col = scratch + (size_t)tid * P * K;
        MG_OMP(omp for schedule(dynamic, 1))
        for (long blk = 0; blk < nblocks; blk++) {
            long p0 = blk * P, np = npix - p0 < P ? npix - p0 : P;
            float *oblk = out + (size_t)p0 * Co;
            for (long p = 0; p < np; p++) {
                long q = p0 + p;
                im2col_pixel(col + (size_t)p * K, inp, H, W, Ci, (int)(q / Wo), (int)(q % Wo),
                             stride);
            }
            /* The GEMM accumulates onto bias + residual (element-wise, so residual may be out
             * itself). Inside a parallel region OpenBLAS (OpenMP build) and the fallback GEMM
             * both run on the calling thread alone. */
            const float *rblk = residual ? residual + (size_t)p0 * Co : NULL;
            for (long p = 0; p < np; p++) {
                float *o = oblk + (size_t)p * Co;
                if (rblk) {
                    const float *r = rblk + (size_t)p * Co;
                    for (int co = 0; co < Co; co++) o[co] = r[co] + (b ? b[co] : 0.0f);
                } else if (b) {
                    memcpy(o, b, (size_t)Co * sizeof(float));
                }
            }
            float beta = b || residual ? 1.0f : 0.0f;
            if (!conv3x3_gemm_kernel(oblk, Co, col, K, wp, (int)np, Co, K, beta))
                gemm_nn(oblk, Co, col, K, wp, Co, (int)np, Co, K, 1.0f, beta);
            if (act == MG_ACT_RELU) /* while the block is still in cache */
                for (size_t i = 0; i < (size_t)np * Co; i++)
                    oblk[i] = oblk[i] > 0.0f ? oblk[i] : 0.0f;
        }
    }
}
