/* Reshapes reversed: patchify / unpatchify exchange roles, and the 2x upsample sums each
 * 2x2 block back onto its source pixel. Pure data movement plus adds. */
#include "ops/ops_backward.h"

#include "ops/cpu/parallel.h"

void patchify_backward(float *dz, float *dcond, const float *dtokens, int H, int W, int Z, int p) {
    /* token (ty, tx), feature ch*p*p + py*p + px <-> pixel (p*ty+py, p*tx+px), channel ch of
     * concat[z, cond]. Each pixel belongs to exactly one token: no two writes collide. */
    int Ty = H / p, Tx = W / p, F = 2 * Z * p * p;
    MG_OMP(omp parallel for schedule(static) if ((long)H * W * Z > MG_OMP_MIN_ELEMS))
    for (int ty = 0; ty < Ty; ty++) {
        for (int tx = 0; tx < Tx; tx++) {
            const float *t = dtokens + ((size_t)ty * Tx + tx) * F;
            for (int py = 0; py < p; py++) {
                for (int px = 0; px < p; px++) {
                    size_t pix = ((size_t)(p * ty + py) * W + (p * tx + px)) * Z;
                    for (int ch = 0; ch < Z; ch++) {
                        if (dz) dz[pix + ch] += t[ch * p * p + py * p + px];
                        if (dcond) dcond[pix + ch] += t[(Z + ch) * p * p + py * p + px];
                    }
                }
            }
        }
    }
}

void unpatchify_backward(float *dtokens, const float *dz, int H, int W, int Z, int p) {
    int Ty = H / p, Tx = W / p, F = Z * p * p;
    MG_OMP(omp parallel for schedule(static) if ((long)H * W * Z > MG_OMP_MIN_ELEMS))
    for (int ty = 0; ty < Ty; ty++) {
        for (int tx = 0; tx < Tx; tx++) {
            float *t = dtokens + ((size_t)ty * Tx + tx) * F;
            for (int py = 0; py < p; py++) {
                for (int px = 0; px < p; px++) {
                    size_t pix = ((size_t)(p * ty + py) * W + (p * tx + px)) * Z;
                    for (int ch = 0; ch < Z; ch++) t[ch * p * p + py * p + px] += dz[pix + ch];
                }
            }
        }
    }
}

void upsample2x_backward(float *dinp, const float *dout, int H, int W, int C) {
    size_t orow = (size_t)2 * W * C;
    MG_OMP(omp parallel for schedule(static) if ((long)H * W * C > MG_OMP_MIN_ELEMS / 4))
    for (int y = 0; y < H; y++) {
        const float *o0 = dout + (size_t)2 * y * orow, *o1 = o0 + orow;
        float *d = dinp + (size_t)y * W * C;
        for (int x = 0; x < W; x++) {
            const float *a = o0 + (size_t)2 * x * C, *b = o1 + (size_t)2 * x * C;
            float *dx = d + (size_t)x * C;
            for (int c = 0; c < C; c++) dx[c] += (a[c] + a[C + c]) + (b[c] + b[C + c]);
        }
    }
}
