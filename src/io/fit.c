/* Crop / pad / stretch geometry and the plain-C RGB resampler (see fit.h). */
#include "io/fit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int fit_parse(const char *s, fit_mode *m) {
    if (!strcmp(s, "crop")) *m = FIT_CROP;
    else if (!strcmp(s, "pad")) *m = FIT_PAD;
    else if (!strcmp(s, "stretch")) *m = FIT_STRETCH;
    else return -1;
    return 0;
}

const char *fit_name(fit_mode m) { return m == FIT_PAD ? "pad" : m == FIT_STRETCH ? "stretch" : "crop"; }

static int down_to(int v, int a) {
    v -= v % a;
    return v < a ? a : v;
}

void fit_geometry(fit_mode m, int sw, int sh, int dw, int dh, int align, fit_rect *src, fit_rect *dst) {
    if (align < 1) align = 1;
    *src = (fit_rect){0, 0, sw, sh};
    *dst = (fit_rect){0, 0, dw, dh};
    /* compare aspect ratios exactly: sw/sh vs dw/dh */
    int64_t lhs = (int64_t)sw * dh, rhs = (int64_t)sh * dw;
    if (m == FIT_CROP && lhs != rhs) {
        if (lhs > rhs) { /* source wider: cut the sides */
            int cw = (int)llround((double)sh * dw / dh);
            src->w = cw > sw ? sw : cw;
        } else { /* source taller: cut top and bottom */
            int ch = (int)llround((double)sw * dh / dw);
            src->h = ch > sh ? sh : ch;
        }
    } else if (m == FIT_PAD && lhs != rhs) {
        if (lhs > rhs) dst->h = down_to((int)llround((double)dw * sh / sw), 2);
        else dst->w = down_to((int)llround((double)dh * sw / sh), 2);
        if (dst->h > dh) dst->h = dh;
        if (dst->w > dw) dst->w = dw;
        dst->x = (dw - dst->w) / 2 & ~1;
        dst->y = (dh - dst->h) / 2 & ~1;
    }
    if (align > 1 && sw >= align && sh >= align) {
        src->w = down_to(src->w, align);
        src->h = down_to(src->h, align);
    }
    src->x = (sw - src->w) / 2;
    src->y = (sh - src->h) / 2;
    src->x -= src->x % align;
    src->y -= src->y % align;
}

void fit_auto_size(int in_w, int in_h, int max_side, int *w, int *h) {
    double s = 1.0;
    int longest = in_w > in_h ? in_w : in_h;
    if (max_side > 0 && longest > max_side) s = (double)max_side / longest;
    int a = (int)floor(in_w * s + 1e-9), b = (int)floor(in_h * s + 1e-9);
    *w = down_to(a, 16);
    *h = down_to(b, 16);
}

/* One axis: output sample i of n covers source [s0 + i*step, s0 + (i+1)*step); shrinking by
 * f takes ceil(f) bilinear taps spread evenly over that footprint. Tap t of sample i reads
 * source samples k and k+1 (clamped at the edges) with weight frac/256 on k+1 (0..256). */
static int axis_taps(int sn, int dn) {
    double step = (double)sn / dn;
    int t = step > 1.0 ? (int)ceil(step - 1e-9) : 1;
    return t > 16 ? 16 : t;
}

static void axis_fill(int32_t *off, uint16_t *frac, int s0, int sn, int dn, int len, int taps, int stride) {
    double step = (double)sn / dn;
    for (int i = 0; i < dn; i++)
        for (int t = 0; t < taps; t++) {
            double u = s0 + (i + (t + 0.5) / taps) * step - 0.5;
            if (u < 0) u = 0;
            if (u > len - 1) u = len - 1;
            int k = (int)u;
            if (k > len - 2) k = len > 1 ? len - 2 : 0;
            int f = len > 1 ? (int)lround((u - k) * 256.0) : 0; /* 0..256 */
            off[i * taps + t] = k * stride;
            frac[i * taps + t] = (uint16_t)f;
        }
}

void fit_plan_free(fit_plan *p) {
    free(p->xoff), free(p->yoff), free(p->xf), free(p->yf);
    memset(p, 0, sizeof *p);
}

int fit_plan_init(fit_plan *p, int sw, int sh, int dw, int dh, fit_mode m) {
    memset(p, 0, sizeof *p);
    p->sw = sw, p->sh = sh, p->dw = dw, p->dh = dh;
    fit_geometry(m, sw, sh, dw, dh, 1, &p->rs, &p->rd);
    p->tx = axis_taps(p->rs.w, p->rd.w), p->ty = axis_taps(p->rs.h, p->rd.h);
    size_t nx = (size_t)p->rd.w * p->tx, ny = (size_t)p->rd.h * p->ty;
    p->xoff = malloc(nx * sizeof(int32_t)), p->yoff = malloc(ny * sizeof(int32_t));
    p->xf = malloc(nx * sizeof(uint16_t)), p->yf = malloc(ny * sizeof(uint16_t));
    if (!p->xoff || !p->yoff || !p->xf || !p->yf) {
        fit_plan_free(p);
        return -1;
    }
    axis_fill(p->xoff, p->xf, p->rs.x, p->rs.w, p->rd.w, sw, p->tx, 3);
    axis_fill(p->yoff, p->yf, p->rs.y, p->rs.h, p->rd.h, sh, p->ty, sw * 3);
    return 0;
}

void fit_plan_run(const fit_plan *p, uint8_t *dst, const uint8_t *src) {
    const int sw = p->sw, sh = p->sh, dw = p->dw, dh = p->dh;
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)dw * dh * 3);
        return;
    }
    if (p->rd.w != dw || p->rd.h != dh) memset(dst, 0, (size_t)dw * dh * 3);
    const int tx = p->tx, ty = p->ty;
    const size_t below = sh > 1 ? (size_t)sw * 3 : 0; /* the next row, or this one again */
    const int right = sw > 1 ? 3 : 0;
    /* sum of tx*ty taps, each at most 255 * 2^16: < 2^32 for up to 256 taps */
    const uint32_t ntaps = (uint32_t)(tx * ty);
    for (int y = 0; y < p->rd.h; y++) {
        uint8_t *o = dst + ((size_t)(p->rd.y + y) * dw + p->rd.x) * 3;
        const int32_t *yo = p->yoff + (size_t)y * ty;
        const uint16_t *yfr = p->yf + (size_t)y * ty;
        for (int x = 0; x < p->rd.w; x++) {
            const int32_t *xo = p->xoff + (size_t)x * tx;
            const uint16_t *xfr = p->xf + (size_t)x * tx;
            uint32_t acc0 = 0, acc1 = 0, acc2 = 0;
            for (int a = 0; a < ty; a++) {
                const uint8_t *r0 = src + yo[a], *r1 = r0 + below;
                const uint32_t fy = yfr[a], gy = 256 - fy;
                for (int b = 0; b < tx; b++) {
                    const uint8_t *p0 = r0 + xo[b], *p1 = r1 + xo[b];
                    const uint32_t fx = xfr[b], gx = 256 - fx;
                    acc0 += (p0[0] * gx + p0[right] * fx) * gy + (p1[0] * gx + p1[right] * fx) * fy;
                    acc1 += (p0[1] * gx + p0[right + 1] * fx) * gy + (p1[1] * gx + p1[right + 1] * fx) * fy;
                    acc2 += (p0[2] * gx + p0[right + 2] * fx) * gy + (p1[2] * gx + p1[right + 2] * fx) * fy;
                }
            }
            o[x * 3 + 0] = (uint8_t)(((acc0 + ntaps / 2) / ntaps + 32768) >> 16);
            o[x * 3 + 1] = (uint8_t)(((acc1 + ntaps / 2) / ntaps + 32768) >> 16);
            o[x * 3 + 2] = (uint8_t)(((acc2 + ntaps / 2) / ntaps + 32768) >> 16);
        }
    }
}
