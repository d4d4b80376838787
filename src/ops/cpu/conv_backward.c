/* 3x3 convolution (pad 1, stride 1 or 2, HWC) reversed, by GEMMs over blocks of im2col rows.
 *
 * The forward (conv.c) is, per block of output pixels,
 *     out_blk (R, Co) = P (R, 9*Ci) @ Wp (9*Ci, Co) + b,
 * P the im2col rows (row for output pixel (y, x): input pixels (s*y+ky-1, s*x+kx-1) for
 * ky, kx = 0..2, each Ci channels, column (ky*3 + kx)*Ci + ci, zeros outside the image) and
 * Wp the weight as a (9*Ci, Co) matrix. So the backward of a block is two GEMMs and a scatter:
 *     dWp (9*Ci, Co) += P^T @ dout_blk                       (gemm_tn)
 *     dP  (R, 9*Ci)   = dout_blk @ Wp^T                      (gemm_nt)
 *     dinp           += col2im(dP)     (each dP element back onto the input pixel it read)
 * and dw (Co, Ci, 3, 3) += dWp unpacked at the end. The scatter runs on one thread in pixel
 * order (neighbouring rows of P read overlapping pixels), which also keeps it deterministic;
 * OpenBLAS threads each GEMM. This is the fp32 reference; training speed lives on the GPU. */
#include "ops/ops_backward.h"

#include <string.h>

#include "ops/ops.h"

/* Target size of one block of im2col rows (floats); dP is the same size again. */
#define CONV_BWD_BLOCK_FLOATS (256 * 1024)

static int out_size(int n, int stride) { return stride == 2 ? (n + 1) / 2 : n; }

static int block_rows(int H, int W, int Ci, int stride) {
    long K = 9L * Ci, pix = (long)out_size(H, stride) * out_size(W, stride);
    long R = CONV_BWD_BLOCK_FLOATS / K;
    if (R < 1) R = 1;
    return (int)(R < pix ? R : pix);
}

size_t conv3x3_backward_scratch_floats(int H, int W, int Ci, int Co, int stride) {
    size_t K = (size_t)9 * Ci;
    /* Wp, dWp, then P and dP of one block */
    return 2 * K * Co + 2 * (size_t)block_rows(H, W, Ci, stride) * K;
}

/* w (Co, Ci, 3, 3) -> wp (9*Ci, Co), row (ky*3 + kx)*Ci + ci. Our own copy: conv3x3_pack's
 * output is whatever the forward's fastest path wants (it may hold more than this matrix). */
static void pack_rows(float *wp, const float *w, int Ci, int Co) {
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int k = 0; k < 9; k++)
                wp[((size_t)k * Ci + ci) * Co + co] = w[((size_t)co * Ci + ci) * 9 + k];
}

/* P rows for output pixels [p0, p0 + R) (row-major over (Ho, Wo)). */
static void im2col_rows(float *P, const float *inp, int p0, int R, int H, int W, int Ci, int Wo,
                        int stride) {
    size_t K = (size_t)9 * Ci;
    for (int r = 0; r < R; r++) {
        int y = (p0 + r) / Wo, x = (p0 + r) % Wo;
        float *row = P + (size_t)r * K;
        for (int ky = 0; ky < 3; ky++) {
            int iy = stride * y + ky - 1;
            for (int kx = 0; kx < 3; kx++) {
                int ix = stride * x + kx - 1;
                float *dst = row + (size_t)(ky * 3 + kx) * Ci;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                    memset(dst, 0, (size_t)Ci * sizeof(float));
                else
                    memcpy(dst, inp + ((size_t)iy * W + ix) * Ci, (size_t)Ci * sizeof(float));
            }
        }
    }
}

/* dinp += dP rows put back where im2col_rows took them from. */
static void col2im_rows(float *dinp, const float *dP, int p0, int R, int H, int W, int Ci, int Wo,
                        int stride) {
    size_t K = (size_t)9 * Ci;
    for (int r = 0; r < R; r++) {
        int y = (p0 + r) / Wo, x = (p0 + r) % Wo;
        const float *row = dP + (size_t)r * K;
        for (int ky = 0; ky < 3; ky++) {
            int iy = stride * y + ky - 1;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < 3; kx++) {
                int ix = stride * x + kx - 1;
                if (ix < 0 || ix >= W) continue;
                const float *src = row + (size_t)(ky * 3 + kx) * Ci;
                float *dst = dinp + ((size_t)iy * W + ix) * Ci;
                for (int ci = 0; ci < Ci; ci++) dst[ci] += src[ci];
            }
        }
    }
}

void conv3x3_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                      const float *w, float *scratch, int H, int W, int Ci, int Co, int stride) {
    int Ho = out_size(H, stride), Wo = out_size(W, stride), npix = Ho * Wo;
    int R = block_rows(H, W, Ci, stride), K = 9 * Ci;
    float *wp = scratch;                    /* (9*Ci, Co) */
    float *dwp = wp + (size_t)K * Co;       /* (9*Ci, Co) */
    float *P = dwp + (size_t)K * Co;        /* (R, 9*Ci) */
    float *dP = P + (size_t)R * K;          /* (R, 9*Ci) */
    pack_rows(wp, w, Ci, Co);
    memset(dwp, 0, (size_t)K * Co * sizeof(float));
    for (int p0 = 0; p0 < npix; p0 += R) {
        int rows = npix - p0 < R ? npix - p0 : R;
        const float *dob = dout + (size_t)p0 * Co; /* (rows, Co) */
        im2col_rows(P, inp, p0, rows, H, W, Ci, Wo, stride);
        gemm_tn(dwp, Co, P, K, dob, Co, K, Co, rows, 1.0f, 1.0f);
        if (dinp) {
            gemm_nt(dP, K, dob, Co, wp, Co, rows, K, Co, 1.0f, 0.0f);
            col2im_rows(dinp, dP, p0, rows, H, W, Ci, Wo, stride);
        }
    }
    /* dw (Co, Ci, 3, 3) += dWp, row (ky*3 + kx)*Ci + ci */
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int k = 0; k < 9; k++)
                dw[((size_t)co * Ci + ci) * 9 + k] += dwp[((size_t)k * Ci + ci) * Co + co];
    if (db)
        for (int p = 0; p < npix; p++) {
            const float *r = dout + (size_t)p * Co;
            for (int co = 0; co < Co; co++) db[co] += r[co];
        }
}
