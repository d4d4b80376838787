/* Reshapes between feature-map and token layouts: patchify / unpatchify (DiT input and
 * output) and the decoder's nearest-neighbour 2x upsample. Pure data movement. */
#include "ops/ops.h"

#include <string.h>

#include "ops/cpu/parallel.h"

void patchify_forward(float *tokens, const float *z, const float *cond, int H, int W, int Z,
                      int p) {
    /* token (ty, tx), feature f = ch*p*p + py*p + px <- pixel (p*ty+py, p*tx+px), channel ch
     * of concat[z, cond] (z first). cond == NULL reads as zeros (dream: no input frame). */
    int Ty = H / p, Tx = W / p, F = 2 * Z * p * p;
    MG_OMP(omp parallel for schedule(static) if ((long)H * W * Z > MG_OMP_MIN_ELEMS))
    for (int ty = 0; ty < Ty; ty++) {
        for (int tx = 0; tx < Tx; tx++) {
            float *t = tokens + ((size_t)ty * Tx + tx) * F;
            for (int py = 0; py < p; py++) {
                for (int px = 0; px < p; px++) {
                    size_t pix = ((size_t)(p * ty + py) * W + (p * tx + px)) * Z;
                    for (int ch = 0; ch < Z; ch++) {
                        t[ch * p * p + py * p + px] = z[pix + ch];
                        t[(Z + ch) * p * p + py * p + px] = cond ? cond[pix + ch] : 0.0f;
                    }
                }
            }
        }
    }
}

void unpatchify_forward(float *z, const float *tokens, int H, int W, int Z, int p) {
    int Ty = H / p, Tx = W / p, F = Z * p * p;
    MG_OMP(omp parallel for schedule(static) if ((long)H * W * Z > MG_OMP_MIN_ELEMS))
    for (int ty = 0; ty < Ty; ty++) {
        for (int tx = 0; tx < Tx; tx++) {
            const float *t = tokens + ((size_t)ty * Tx + tx) * F;
            for (int py = 0; py < p; py++) {
                for (int px = 0; px < p; px++) {
                    size_t pix = ((size_t)(p * ty + py) * W + (p * tx + px)) * Z;
                    for (int ch = 0; ch < Z; ch++) z[pix + ch] = t[ch * p * p + py * p + px];
                }
            }
        }
    }
}

void upsample2x_forward(float *out, const float *inp, int H, int W, int C) {
    /* Each input pixel fills a 2x2 block: build output row 2y from input row y, then copy it
     * to row 2y+1. */
    size_t orow = (size_t)2 * W * C;
    MG_OMP(omp parallel for schedule(static) if ((long)H * W * C > MG_OMP_MIN_ELEMS / 4))
    for (int y = 0; y < H; y++) {
        float *o = out + (size_t)2 * y * orow;
        const float *in = inp + (size_t)y * W * C;
        for (int x = 0; x < W; x++) {
            memcpy(o + (size_t)2 * x * C, in + (size_t)x * C, (size_t)C * sizeof(float));
            memcpy(o + (size_t)(2 * x + 1) * C, in + (size_t)x * C, (size_t)C * sizeof(float));
        }
        memcpy(o + orow, o, orow * sizeof(float));
    }
}
