/* Fitting a picture of one size into a frame of another: the geometry of --fit crop|pad|stretch
 * (shared by every input path), and a plain-C resampler for RGB24 frames for the inputs that do
 * not go through FFmpeg's swscale (y4m files and pipes).
 *
 * crop     the largest centred part of the source with the frame's aspect ratio, scaled to fill
 *          the frame (nothing is distorted; edges are cut). The default.
 * pad      the whole source scaled to fit inside the frame, centred, black bars around it.
 * stretch  the whole source scaled to the whole frame (the aspect ratio changes).
 *
 * The resampler precomputes its taps once (fit_plan_init, which allocates); running a plan
 * allocates nothing. */
#ifndef MG_IO_FIT_H
#define MG_IO_FIT_H

#include <stdint.h>

typedef enum fit_mode { FIT_CROP = 0, FIT_PAD, FIT_STRETCH } fit_mode;

typedef struct fit_rect { int x, y, w, h; } fit_rect;

/* "crop", "pad" or "stretch" -> 0 and *m; anything else -> -1. */
int fit_parse(const char *s, fit_mode *m);
const char *fit_name(fit_mode m);

/* The source rectangle that is used (*src) and where it lands in the frame (*dst) for a
 * sw x sh picture in a dw x dh frame. The source rectangle's origin and size are multiples of
 * `align` (1, or 2 for 4:2:0 chroma so a crop never splits a chroma sample), the destination's
 * of 2. All sizes >= 1. */
void fit_geometry(fit_mode m, int sw, int sh, int dw, int dh, int align, fit_rect *src, fit_rect *dst);

/* A resampling of sw x sh RGB24 pictures into dw x dh frames by fit_geometry(m, ..., align 1):
 * bilinear when enlarging, averaged over the source footprint when shrinking (ceil(factor)
 * bilinear taps per axis, at most 16), black outside the destination rectangle; a plain copy
 * when the sizes are equal. Weights have 8 fractional bits; error <= 1 level. */
typedef struct fit_plan {
    int sw, sh, dw, dh;
    fit_rect rs, rd;
    int tx, ty;          /* taps per axis */
    int32_t *xoff, *yoff; /* (rd.w * tx), (rd.h * ty): byte offset of the left column / row */
    uint16_t *xf, *yf;   /* same shapes: weight of the right column / lower row, 0..256 */
} fit_plan;

/* 0 ok, -1 out of memory (*p is then empty; fit_plan_free on it is fine). */
int fit_plan_init(fit_plan *p, int sw, int sh, int dw, int dh, fit_mode m);
void fit_plan_run(const fit_plan *p, uint8_t *dst, const uint8_t *src);
void fit_plan_free(fit_plan *p);

/* The frame size to run at when the user gave none: the input's size, scaled down (aspect kept)
 * so that its longest side is at most max_side (0: no cap), then rounded down to multiples of
 * 16 (at least 16x16). */
void fit_auto_size(int in_w, int in_h, int max_side, int *w, int *h);

#endif
