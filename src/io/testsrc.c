/* The built-in test scene (see testsrc.h). Rendered in vertical strips of TILE columns so
 * that every per-column term (sines of the background, texture phases, masks) is computed once
 * per strip into a stack array and every per-row term once per row: the per-pixel work is a few
 * multiply-adds, plus a sqrt inside each shape's bounding box. No allocation. */
#include "io/testsrc.h"

#include <math.h>
#include <stddef.h>

#include "core/status.h"

#define TILE 128
#define TWO_PI 6.283185307179586

/* Angle of a motion with an integer period in frames, reduced exactly before going to float. */
static double cyc(long t, long period, double offset) {
    long m = t % period;
    if (m < 0) m += period;
    return TWO_PI * (double)m / (double)period + offset;
}

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Branch-free forms for the pixel loops: without -fno-trapping-math, GCC will not turn a float
 * comparison into a vector select, but it vectorises fabsf. Exact up to an ulp. */
static inline float clampv(float v, float lo, float hi) {
    return 0.5f * (fabsf(v - lo) - fabsf(v - hi) + lo + hi);
}
static inline float pos_part(float v) { return 0.5f * (v + fabsf(v)); } /* max(v, 0) */
static inline float neg_part(float v) { return 0.5f * (v - fabsf(v)); } /* min(v, 0) */

static inline float smooth01(float e0, float e1, float x) {
    float t = clampf((x - e0) / (e1 - e0), 0.f, 1.f);
    return t * t * (3.f - 2.f * t);
}

typedef struct shape {
    int kind;          /* 0 ball, 1 rounded box */
    float cx, cy;      /* centre, pixels */
    float r;           /* ball radius, or box corner radius */
    float hx, hy;      /* box half sizes */
    float cs, sn;      /* box rotation */
    float bound;       /* bounding radius, edge included */
    float col[3];
} shape;

mg_status testsrc_render(uint8_t *rgb, int W, int H, long frame) {
    if (!rgb) return mg_fail(MG_ERR_ARG, "testsrc_render: NULL frame");
    if (W < 1 || H < 1 || W > 65536 || H > 65536)
        return mg_fail(MG_ERR_ARG, "testsrc_render: size %dx%d out of range 1..65536", W, H);
    const long t = frame;
    const float S = (float)(W < H ? W : H);
    const float edge = 1.0f + 0.006f * S; /* soft-edge width in pixels: anti-aliased at any size */

    /* ---- per-frame parameters (float64 phases) ---- */
    /* background: ~0.6 colour cycles across the frame, panning one cycle per 600 frames */
    const double pan = cyc(t, 600, 0.0);
    const double kbx = TWO_PI * 0.6 / W, kby = TWO_PI * 0.5 / H;
    const double p2 = cyc(t, 900, 0.7), p3 = cyc(t, 700, 2.0);
    /* sliding checker panel, texture attached to the panel */
    const float pcell = fmaxf(4.f, S / 20.f); /* half-period of the checker, pixels */
    /* soft sign of sin*sin: the cell edges ramp over about 2 pixels whatever the cell size */
    const float ck_sharp = fmaxf(1.5f, fminf(6.f, pcell / 3.f));
    const float px0 = W * (0.06f + 0.05f * (float)sin(cyc(t, 500, 0.0))), px1 = px0 + 0.32f * W;
    const float py0 = 0.08f * H, py1 = 0.40f * H;
    /* drifting stripes in a band, direction (0.8, 0.6), half a pixel per frame */
    const double sper = fmax(6.0, S / 12.0);
    const double skx = TWO_PI * 0.8 / sper, sky = TWO_PI * 0.6 / sper;
    const double sdrift = TWO_PI * fmod(0.5 * (double)(t % 1000000000L) / sper, 1.0);
    const float by0 = 0.63f * H, by1 = 0.90f * H, bsoft = 0.03f * H + 1.f;

    shape sh[5];
    const float ball_col[3][3] = {{0.95f, 0.38f, 0.18f}, {0.10f, 0.70f, 0.72f}, {0.98f, 0.86f, 0.20f}};
    const float ball_r[3] = {0.14f, 0.10f, 0.06f};
    const long ball_px[3] = {240, 300, 120}, ball_py[3] = {170, 200, 90};
    const float ball_ax[3][2] = {{0.50f, 0.32f}, {0.32f, 0.20f}, {0.60f, 0.30f}};
    const float ball_ay[3][2] = {{0.56f, 0.25f}, {0.38f, 0.22f}, {0.45f, 0.35f}};
    for (int i = 0; i < 3; i++) {
        shape *s = &sh[i];
        s->kind = 0;
        s->cx = W * (ball_ax[i][0] + ball_ax[i][1] * (float)sin(cyc(t, ball_px[i], 1.3 * i)));
        s->cy = H * (ball_ay[i][0] + ball_ay[i][1] * (float)sin(cyc(t, ball_py[i], 0.4 + 2.1 * i)));
        s->r = ball_r[i] * S;
        s->bound = s->r + edge;
        for (int c = 0; c < 3; c++) s->col[c] = ball_col[i][c];
    }
    const float box_col[2][3] = {{0.55f, 0.25f, 0.75f}, {0.25f, 0.72f, 0.30f}};
    const float box_h[2][2] = {{0.16f, 0.07f}, {0.08f, 0.08f}};
    const long box_rot[2] = {400, -260}, box_px[2] = {380, 330}, box_py[2] = {260, 410};
    for (int i = 0; i < 2; i++) {
        shape *s = &sh[3 + i];
        s->kind = 1;
        s->cx = W * (0.5f + 0.30f * (float)cos(cyc(t, box_px[i], 0.9 + 2.5 * i)));
        s->cy = H * (0.5f + 0.30f * (float)sin(cyc(t, box_py[i], 0.3 + 1.7 * i)));
        double a = box_rot[i] > 0 ? cyc(t, box_rot[i], 0.2) : -cyc(t, -box_rot[i], 1.0);
        s->cs = (float)cos(a); s->sn = (float)sin(a);
        s->hx = box_h[i][0] * S; s->hy = box_h[i][1] * S;
        s->r = 0.25f * fminf(s->hx, s->hy);
        s->bound = sqrtf(s->hx * s->hx + s->hy * s->hy) + edge;
        for (int c = 0; c < 3; c++) s->col[c] = box_col[i][c];
    }
    /* wandering highlight */
    const float hcx = W * (0.5f + 0.35f * (float)sin(cyc(t, 350, 0.5)));
    const float hcy = H * (0.5f + 0.30f * (float)sin(cyc(t, 260, 2.2)));
    const float hr = 0.22f * S, hr2inv = 1.f / (hr * hr);

    /* ---- strips ---- */
    float bx_r[TILE], bx_g[TILE], bx_bs[TILE], bx_bc[TILE]; /* background column terms */
    float ck_x[TILE], pm_x[TILE];                           /* checker column sine, panel mask */
    float st_s[TILE], st_c[TILE];                           /* stripe column sin/cos */
    float vg_x[TILE];                                       /* vignette */
    float R[TILE], G[TILE], B[TILE];                        /* one row of the strip, planar */
    for (int x0 = 0; x0 < W; x0 += TILE) {
        const int nx = W - x0 < TILE ? W - x0 : TILE;
        for (int i = 0; i < nx; i++) {
            double x = x0 + i + 0.5;
            double ax = kbx * x + pan;
            bx_r[i] = (float)sin(ax);
            bx_g[i] = (float)cos(0.7 * ax + 0.8);
            bx_bs[i] = (float)sin(0.8 * ax + 1.9);
            bx_bc[i] = (float)cos(0.8 * ax + 1.9);
            double cph = fmod((x - px0) / pcell, 2.0);
            ck_x[i] = (float)sin(0.5 * TWO_PI * cph);
            pm_x[i] = smooth01(px0 - 1.f, px0 + 1.f, (float)x) *
                      (1.f - smooth01(px1 - 1.f, px1 + 1.f, (float)x));
            double sph = skx * x - sdrift;
            st_s[i] = (float)sin(sph);
            st_c[i] = (float)cos(sph);
            float xx = (float)(2.0 * x / W - 1.0);
            vg_x[i] = (1.f - 0.22f * xx * xx) * 255.f;
        }
        for (int y = 0; y < H; y++) {
            const float yc = y + 0.5f;
            const double by = kby * yc;
            const float br = (float)sin(by + p2), bg = (float)sin(1.3 * by + p3);
            const float bbs = (float)sin(0.9 * by), bbc = (float)cos(0.9 * by);
            const float cky = (float)sin(0.5 * TWO_PI * fmod((yc - py0) / pcell, 2.0));
            const float pmy = smooth01(py0 - 1.f, py0 + 1.f, yc) * (1.f - smooth01(py1 - 1.f, py1 + 1.f, yc));
            const double sphy = sky * yc;
            const float sty_s = (float)sin(sphy), sty_c = (float)cos(sphy);
            const float band = 0.13f * smooth01(by0 - bsoft, by0 + bsoft, yc) *
                               (1.f - smooth01(by1 - bsoft, by1 + bsoft, yc));
            const float ycn = 2.f * yc / H - 1.f, vgy = 1.f - 0.22f * ycn * ycn;
            const float light = 0.9f + 0.2f * (1.f - yc / H); /* lit from above */
            const float r0 = 0.55f + 0.10f * br, g0 = 0.48f + 0.22f * bg;

            for (int i = 0; i < nx; i++) {
                float r = r0 + 0.28f * bx_r[i];
                float g = g0 + 0.14f * bx_g[i];
                float b = 0.52f + 0.30f * (bx_bs[i] * bbc + bx_bc[i] * bbs);
                /* checker panel: a soft sign of sin*sin keeps the edges anti-aliased */
                float pm = pm_x[i] * pmy;
                float ck = 0.5f + 0.5f * clampv(ck_sharp * ck_x[i] * cky, -1.f, 1.f);
                r += pm * ((0.12f + 0.78f * ck) - r);
                g += pm * ((0.14f + 0.72f * ck) - g);
                b += pm * ((0.30f + 0.55f * ck) - b);
                /* stripes: luminance modulation inside the band */
                float s = band * (st_s[i] * sty_c + st_c[i] * sty_s);
                R[i] = (r + s) * light;
                G[i] = (g + s) * light;
                B[i] = (b + s) * light;
            }
            for (int k = 0; k < 5; k++) {
                const shape *s = &sh[k];
                const float dy = yc - s->cy;
                if (fabsf(dy) > s->bound) continue;
                int xa = (int)floorf(s->cx - s->bound) - x0, xb = (int)ceilf(s->cx + s->bound) - x0;
                if (xa < 0) xa = 0;
                if (xb > nx) xb = nx;
                const float cr = s->col[0], cg = s->col[1], cb = s->col[2], einv = 1.f / edge;
                if (s->kind == 0) {
                    /* ball, lit from the upper left: brighter toward (-0.35r, -0.35r) */
                    const float rinv2 = 1.f / (s->r * s->r), ly = dy + 0.35f * s->r;
                    for (int i = xa; i < xb; i++) {
                        float dx = x0 + i + 0.5f - s->cx;
                        float a = clampv(0.5f - (sqrtf(dx * dx + dy * dy) - s->r) * einv, 0.f, 1.f);
                        float lx = dx + 0.35f * s->r;
                        float shade = clampv(1.2f - 0.55f * (lx * lx + ly * ly) * rinv2, 0.35f, 1.2f);
                        R[i] += a * (cr * shade - R[i]);
                        G[i] += a * (cg * shade - G[i]);
                        B[i] += a * (cb * shade - B[i]);
                    }
                } else {
                    /* rounded box: signed distance in the box's rotated frame */
                    const float shade = 1.05f - 0.25f * (dy / s->bound);
                    for (int i = xa; i < xb; i++) {
                        float dx = x0 + i + 0.5f - s->cx;
                        float lx = fabsf(s->cs * dx + s->sn * dy) - s->hx + s->r;
                        float ly = fabsf(-s->sn * dx + s->cs * dy) - s->hy + s->r;
                        float ox = pos_part(lx), oy = pos_part(ly);
                        float in = 0.5f * (lx + ly + fabsf(lx - ly)); /* max(lx, ly) */
                        float d = sqrtf(ox * ox + oy * oy) + neg_part(in) - s->r;
                        float a = clampv(0.5f - d * einv, 0.f, 1.f);
                        R[i] += a * (cr * shade - R[i]);
                        G[i] += a * (cg * shade - G[i]);
                        B[i] += a * (cb * shade - B[i]);
                    }
                }
            }
            {
                const float dy = yc - hcy;
                if (fabsf(dy) < hr) {
                    int xa = (int)floorf(hcx - hr) - x0, xb = (int)ceilf(hcx + hr) - x0;
                    if (xa < 0) xa = 0;
                    if (xb > nx) xb = nx;
                    for (int i = xa; i < xb; i++) {
                        float dx = x0 + i + 0.5f - hcx;
                        float q = 1.f - (dx * dx + dy * dy) * hr2inv;
                        q = pos_part(q);
                        q = 0.40f * q * q;
                        R[i] += q;
                        G[i] += 0.92f * q;
                        B[i] += 0.80f * q;
                    }
                }
            }
            uint8_t *out = rgb + ((size_t)y * W + x0) * 3;
            for (int i = 0; i < nx; i++) {
                float v = vg_x[i] * vgy;
                out[3 * i + 0] = (uint8_t)(clampv(R[i] * v, 0.f, 255.f) + 0.5f);
                out[3 * i + 1] = (uint8_t)(clampv(G[i] * v, 0.f, 255.f) + 0.5f);
                out[3 * i + 2] = (uint8_t)(clampv(B[i] * v, 0.f, 255.f) + 0.5f);
            }
        }
    }
    return MG_OK;
}
