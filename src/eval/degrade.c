/* Degradations (the model's input) and styles (the target) of every prompt. See degrade.h for
 * the table and docs/EVAL.md for the parameters. */
#include "eval/degrade.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"

typedef enum kind { K_NONE, K_COLORIZE, K_UPSCALE, K_RESTORE, K_TOON, K_SKETCH, K_THERMAL, K_DREAM } kind;

static const struct {
    const char *name;
    kind k;
    const char *desc;
} prompts[] = {
    {"none", K_NONE, "input = the frame; truth = the frame (identity)"},
    {"colorize", K_COLORIZE, "input = BT.601 luma (grey); truth = the frame"},
    {"upscale", K_UPSCALE, "input = 4x box-downsampled, bilinear back up; truth = the frame"},
    {"restore", K_RESTORE, "input = blur 1.0 px + noise 8 levels + JPEG-like q30 (8x8 DCT, 4:2:0); truth = the frame"},
    {"style:toon", K_TOON, "input = the frame; truth = toon filter (bilateral smoothing, 6 levels, Sobel edges)"},
    {"style:sketch", K_SKETCH, "input = the frame; truth = pencil sketch (luma dodged by its blurred negative)"},
    {"style:thermal", K_THERMAL, "input = the frame; truth = luma through an ironbow colour map"},
    {"dream", K_DREAM, "input dropped by the model; no per-frame truth: judged against the clip's statistics"},
};
#define N_PROMPTS (int)(sizeof prompts / sizeof prompts[0])

static int lookup(const char *p) {
    if (!p) return -1;
    for (int i = 0; i < N_PROMPTS; i++)
        if (!strcmp(p, prompts[i].name)) return i;
    return -1;
}

int degrade_known(const char *prompt) { return lookup(prompt) >= 0; }
int degrade_has_truth(const char *prompt) {
    int i = lookup(prompt);
    return i >= 0 && prompts[i].k != K_DREAM;
}
const char *degrade_describe(const char *prompt) {
    int i = lookup(prompt);
    return i >= 0 ? prompts[i].desc : "";
}

degrade_params degrade_params_default(void) {
    degrade_params p = {.scale = 4, .nearest = 0, .blur_sigma = 1.0f, .noise_sigma = 8.0f, .jpeg_quality = 30};
    return p;
}

static int size_ok(int W, int H) { return W >= 1 && H >= 1 && W <= 65536 && H <= 65536; }

static inline uint8_t clamp_u8(double v) {
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)lrint(v);
}

static inline int luma_i(const uint8_t *p) { return (77 * p[0] + 150 * p[1] + 29 * p[2] + 128) >> 8; }

/* ---- grey ----------------------------------------------------------------------------- */

void degrade_grey(uint8_t *rgb, int W, int H) {
    for (size_t i = 0, n = (size_t)W * H; i < n; i++) {
        uint8_t y = (uint8_t)luma_i(rgb + 3 * i);
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = y;
    }
}

/* ---- down and back up ----------------------------------------------------------------- */

/* Box-averages s x s blocks (partial blocks at the right/bottom edge over the pixels they
 * have), then brings the w x h picture back to W x H: nearest, or bilinear with pixel centres
 * aligned (output x samples low-res coordinate (x + 0.5)/s - 0.5, clamped at the edges). The
 * bilinear weights are multiples of 1/(2s), so the arithmetic is exact in integers. */
mg_status degrade_resample(uint8_t *rgb, int W, int H, int s, int nearest) {
    if (!size_ok(W, H) || s < 1 || s > 16) return mg_fail(MG_ERR_ARG, "degrade: bad size %dx%d or scale %d", W, H, s);
    if (s == 1) return MG_OK;
    int w = (W + s - 1) / s, h = (H + s - 1) / s;
    uint8_t *lo = malloc((size_t)w * h * 3);
    if (!lo) return mg_fail(MG_ERR_NOMEM, "degrade: out of memory");
    for (int by = 0; by < h; by++)
        for (int bx = 0; bx < w; bx++) {
            int y1 = by * s + s < H ? by * s + s : H, x1 = bx * s + s < W ? bx * s + s : W;
            int cnt = (y1 - by * s) * (x1 - bx * s);
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int y = by * s; y < y1; y++)
                    for (int x = bx * s; x < x1; x++) sum += rgb[((size_t)y * W + x) * 3 + c];
                lo[((size_t)by * w + bx) * 3 + c] = (uint8_t)((sum + cnt / 2) / cnt);
            }
        }
    const int den = 2 * s;
    for (int y = 0; y < H; y++) {
        int y0, fy; /* low-res row and weight of row y0+1, in units of 1/den */
        if (nearest) y0 = y / s, fy = 0;
        else {
            int u = 2 * y + 1 - s; /* den * (low-res coordinate) */
            if (u < 0) u = 0;
            y0 = u / den, fy = u - y0 * den;
        }
        int y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        for (int x = 0; x < W; x++) {
            int x0, fx;
            if (nearest) x0 = x / s, fx = 0;
            else {
                int u = 2 * x + 1 - s;
                if (u < 0) u = 0;
                x0 = u / den, fx = u - x0 * den;
            }
            int x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            const uint8_t *p00 = lo + ((size_t)y0 * w + x0) * 3, *p01 = lo + ((size_t)y0 * w + x1) * 3;
            const uint8_t *p10 = lo + ((size_t)y1 * w + x0) * 3, *p11 = lo + ((size_t)y1 * w + x1) * 3;
            uint8_t *o = rgb + ((size_t)y * W + x) * 3;
            for (int c = 0; c < 3; c++) {
                int top = p00[c] * (den - fx) + p01[c] * fx, bot = p10[c] * (den - fx) + p11[c] * fx;
                o[c] = (uint8_t)((top * (den - fy) + bot * fy + den * den / 2) / (den * den));
            }
        }
    }
    free(lo);
    return MG_OK;
}

/* ---- Gaussian blur on float planes ---------------------------------------------------- */

#define MAX_RADIUS STYLE_SKETCH_MAX_R

static int gauss_kernel(float sigma, float *k) {
    int r = (int)ceilf(3.0f * sigma);
    if (r < 1) r = 1;
    if (r > MAX_RADIUS) r = MAX_RADIUS;
    double sum = 0, kd[2 * MAX_RADIUS + 1];
    for (int i = -r; i <= r; i++) sum += kd[i + r] = exp(-(double)i * i / (2.0 * sigma * sigma));
    for (int i = 0; i <= 2 * r; i++) k[i] = (float)(kd[i] / sum);
    return r;
}

/* Blurs C interleaved channels of a W x H float picture in place; tmp has W*H*C floats.
 * Edges are clamped (the edge pixel repeats). */
static void blur_float(float *buf, float *tmp, int W, int H, int C, float sigma) {
    float k[2 * MAX_RADIUS + 1];
    int r = gauss_kernel(sigma, k);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) {
                float acc = 0;
                for (int i = -r; i <= r; i++) {
                    int xx = x + i < 0 ? 0 : x + i >= W ? W - 1 : x + i;
                    acc += k[i + r] * buf[((size_t)y * W + xx) * C + c];
                }
                tmp[((size_t)y * W + x) * C + c] = acc;
            }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) {
                float acc = 0;
                for (int i = -r; i <= r; i++) {
                    int yy = y + i < 0 ? 0 : y + i >= H ? H - 1 : y + i;
                    acc += k[i + r] * tmp[((size_t)yy * W + x) * C + c];
                }
                buf[((size_t)y * W + x) * C + c] = acc;
            }
}

mg_status degrade_blur(uint8_t *rgb, int W, int H, float sigma) {
    if (!size_ok(W, H) || !(sigma >= 0) || sigma > 16) return mg_fail(MG_ERR_ARG, "degrade: bad size %dx%d or blur sigma %g", W, H, sigma);
    if (sigma == 0) return MG_OK;
    size_t n = (size_t)W * H * 3;
    float *f = malloc(2 * n * sizeof *f);
    if (!f) return mg_fail(MG_ERR_NOMEM, "degrade: out of memory");
    for (size_t i = 0; i < n; i++) f[i] = rgb[i];
    blur_float(f, f + n, W, H, 3, sigma);
    for (size_t i = 0; i < n; i++) rgb[i] = clamp_u8(f[i]);
    free(f);
    return MG_OK;
}

/* ---- noise ---------------------------------------------------------------------------- */

mg_status degrade_noise(uint8_t *rgb, int W, int H, float sigma, uint64_t seed) {
    if (!size_ok(W, H) || !(sigma >= 0) || sigma > 255) return mg_fail(MG_ERR_ARG, "degrade: bad size %dx%d or noise sigma %g", W, H, sigma);
    if (sigma == 0) return MG_OK;
    mg_rng r;
    mg_rng_seed(&r, seed);
    float z[1024];
    size_t n = (size_t)W * H * 3;
    for (size_t i = 0; i < n; i += 1024) {
        size_t m = n - i < 1024 ? n - i : 1024;
        mg_rng_normal_fill(&r, z, m);
        for (size_t j = 0; j < m; j++) rgb[i + j] = clamp_u8(rgb[i + j] + (double)sigma * z[j]);
    }
    return MG_OK;
}

/* ---- JPEG-like compression ------------------------------------------------------------ */

/* The example tables of the JPEG standard (ITU T.81 Annex K), in row-major order (v, u). */
static const uint8_t q_luma[64] = {
    16, 11, 10, 16, 24,  40,  51,  61,  12, 12, 14, 19, 26,  58,  60,  55,
    14, 13, 16, 24, 40,  57,  69,  56,  14, 17, 22, 29, 51,  87,  80,  62,
    18, 22, 37, 56, 68,  109, 103, 77,  24, 35, 55, 64, 81,  104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99};
static const uint8_t q_chroma[64] = {
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99,
    99, 99, 47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99};

/* IJG's quality scaling (jcparam.c): 50 is the table as printed, 100 all ones. */
static void quant_table(const uint8_t *base, int quality, double *q) {
    int scale = quality < 50 ? 5000 / quality : 200 - 2 * quality;
    for (int i = 0; i < 64; i++) {
        int v = (base[i] * scale + 50) / 100;
        q[i] = v < 1 ? 1 : v > 255 ? 255 : v;
    }
}

/* Quantises one w x h plane (row stride w) in 8x8 blocks: level shift, orthonormal 2D DCT-II
 * (the DCT of JPEG), coefficient rounded to a multiple of q, inverse DCT. Blocks that run past
 * the edge read the edge pixel (as encoders pad) and write back only the pixels inside. */
static void jpeg_plane(float *p, int w, int h, const double *q, const double cosm[8][8]) {
    double blk[64], tmp[64], coef[64];
    for (int by = 0; by < h; by += 8)
        for (int bx = 0; bx < w; bx += 8) {
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    int yy = by + y < h ? by + y : h - 1, xx = bx + x < w ? bx + x : w - 1;
                    blk[y * 8 + x] = p[(size_t)yy * w + xx] - 128.0;
                }
            for (int v = 0; v < 8; v++) /* rows: tmp[y][u] = sum_x C[u][x] blk[y][x] */
                for (int u = 0; u < 8; u++) {
                    double a = 0;
                    for (int x = 0; x < 8; x++) a += cosm[u][x] * blk[v * 8 + x];
                    tmp[v * 8 + u] = a;
                }
            for (int v = 0; v < 8; v++) /* columns: coef[v][u] = sum_y C[v][y] tmp[y][u] */
                for (int u = 0; u < 8; u++) {
                    double a = 0;
                    for (int y = 0; y < 8; y++) a += cosm[v][y] * tmp[y * 8 + u];
                    coef[v * 8 + u] = q[v * 8 + u] * round(a / q[v * 8 + u]);
                }
            for (int y = 0; y < 8; y++) /* inverse, columns first */
                for (int u = 0; u < 8; u++) {
                    double a = 0;
                    for (int v = 0; v < 8; v++) a += cosm[v][y] * coef[v * 8 + u];
                    tmp[y * 8 + u] = a;
                }
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    double a = 0;
                    for (int u = 0; u < 8; u++) a += cosm[u][x] * tmp[y * 8 + u];
                    if (by + y < h && bx + x < w) p[(size_t)(by + y) * w + bx + x] = (float)(a + 128.0);
                }
        }
}

/* JFIF: full-range BT.601 YCbCr, chroma averaged over 2x2 blocks (4:2:0), each plane
 * quantised in 8x8 DCT blocks with the standard tables at `quality`, chroma brought back by
 * replication, converted to RGB, rounded. */
mg_status degrade_jpeg(uint8_t *rgb, int W, int H, int quality) {
    if (!size_ok(W, H) || quality < 0 || quality > 100) return mg_fail(MG_ERR_ARG, "degrade: bad size %dx%d or JPEG quality %d", W, H, quality);
    if (quality == 0) return MG_OK;
    int cw = (W + 1) / 2, ch = (H + 1) / 2;
    size_t ny = (size_t)W * H, nc = (size_t)cw * ch;
    float *Y = malloc((ny + 2 * nc) * sizeof *Y);
    if (!Y) return mg_fail(MG_ERR_NOMEM, "degrade: out of memory");
    float *Cb = Y + ny, *Cr = Cb + nc;
    for (size_t i = 0; i < nc; i++) Cb[i] = Cr[i] = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            double r = p[0], g = p[1], b = p[2];
            Y[(size_t)y * W + x] = (float)(0.299 * r + 0.587 * g + 0.114 * b);
            size_t ci = (size_t)(y / 2) * cw + x / 2;
            Cb[ci] += (float)(-0.168736 * r - 0.331264 * g + 0.5 * b + 128.0);
            Cr[ci] += (float)(0.5 * r - 0.418688 * g - 0.081312 * b + 128.0);
        }
    for (int y = 0; y < ch; y++)
        for (int x = 0; x < cw; x++) {
            int cnt = (2 * y + 1 < H ? 2 : 1) * (2 * x + 1 < W ? 2 : 1);
            Cb[(size_t)y * cw + x] /= cnt, Cr[(size_t)y * cw + x] /= cnt;
        }
    double cosm[8][8], ql[64], qc[64];
    for (int u = 0; u < 8; u++)
        for (int x = 0; x < 8; x++)
            cosm[u][x] = (u ? sqrt(2.0 / 8) : sqrt(1.0 / 8)) * cos((2 * x + 1) * u * M_PI / 16);
    quant_table(q_luma, quality, ql);
    quant_table(q_chroma, quality, qc);
    jpeg_plane(Y, W, H, ql, cosm);
    jpeg_plane(Cb, cw, ch, qc, cosm);
    jpeg_plane(Cr, cw, ch, qc, cosm);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t ci = (size_t)(y / 2) * cw + x / 2;
            double yy = Y[(size_t)y * W + x], cb = Cb[ci] - 128.0, cr = Cr[ci] - 128.0;
            uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            p[0] = clamp_u8(yy + 1.402 * cr);
            p[1] = clamp_u8(yy - 0.344136 * cb - 0.714136 * cr);
            p[2] = clamp_u8(yy + 1.772 * cb);
        }
    free(Y);
    return MG_OK;
}

/* ---- styles --------------------------------------------------------------------------- */

/* Toon: two passes of a 5x5 bilateral filter (spatial sigma 2 px, range sigma 25 levels on the
 * mean absolute channel difference) flatten texture but keep edges; each channel is then
 * quantised to 6 levels (0, 51, ..., 255); pixels where the Sobel gradient of the smoothed
 * luma is strong are darkened (fully black above 160, untouched below 80). */
static void toon_weights(float *ws, float *wr) {
    for (int dy = -2; dy <= 2; dy++)
        for (int dx = -2; dx <= 2; dx++) ws[(dy + 2) * 5 + dx + 2] = (float)exp(-(dx * dx + dy * dy) / (2.0 * 2.0 * 2.0));
    for (int d = 0; d < 766; d++) { /* d = |dr| + |dg| + |db|, rounded */
        double m = d / 3.0;
        wr[d] = (float)exp(-m * m / (2.0 * 25.0 * 25.0));
    }
}

static mg_status style_toon(const uint8_t *in, uint8_t *out, int W, int H) {
    size_t n = (size_t)W * H;
    float *buf = malloc((2 * n * 3 + n) * sizeof *buf);
    if (!buf) return mg_fail(MG_ERR_NOMEM, "style: out of memory");
    float *a = buf, *b = buf + 3 * n, *lum = buf + 6 * n; /* each pass reads a, writes b, swaps */
    for (size_t i = 0; i < 3 * n; i++) a[i] = in[i];
    float ws[25], wr[766];
    toon_weights(ws, wr);
    for (int pass = 0; pass < 2; pass++) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const float *c = a + ((size_t)y * W + x) * 3;
                float acc[3] = {0, 0, 0}, wsum = 0;
                for (int dy = -2; dy <= 2; dy++) {
                    int yy = y + dy < 0 ? 0 : y + dy >= H ? H - 1 : y + dy;
                    for (int dx = -2; dx <= 2; dx++) {
                        int xx = x + dx < 0 ? 0 : x + dx >= W ? W - 1 : x + dx;
                        const float *q = a + ((size_t)yy * W + xx) * 3;
                        int d = (int)lrintf(fabsf(q[0] - c[0]) + fabsf(q[1] - c[1]) + fabsf(q[2] - c[2]));
                        float w = ws[(dy + 2) * 5 + dx + 2] * wr[d > 765 ? 765 : d];
                        acc[0] += w * q[0], acc[1] += w * q[1], acc[2] += w * q[2], wsum += w;
                    }
                }
                float *o = b + ((size_t)y * W + x) * 3;
                o[0] = acc[0] / wsum, o[1] = acc[1] / wsum, o[2] = acc[2] / wsum;
            }
        float *t = a; a = b; b = t;
    }
    for (size_t i = 0; i < n; i++) lum[i] = 0.299f * a[3 * i] + 0.587f * a[3 * i + 1] + 0.114f * a[3 * i + 2];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int xm = x > 0 ? x - 1 : 0, xp = x + 1 < W ? x + 1 : W - 1;
            int ym = y > 0 ? y - 1 : 0, yp = y + 1 < H ? y + 1 : H - 1;
#define L(yy, xx) lum[(size_t)(yy) * W + (xx)]
            float gx = (L(ym, xp) + 2 * L(y, xp) + L(yp, xp)) - (L(ym, xm) + 2 * L(y, xm) + L(yp, xm));
            float gy = (L(yp, xm) + 2 * L(yp, x) + L(yp, xp)) - (L(ym, xm) + 2 * L(ym, x) + L(ym, xp));
#undef L
            float g = sqrtf(gx * gx + gy * gy);
            float e = g <= 80 ? 0 : g >= 160 ? 1 : (g - 80) / 80;
            uint8_t *o = out + ((size_t)y * W + x) * 3;
            for (int c = 0; c < 3; c++) {
                float v = a[((size_t)y * W + x) * 3 + c];
                int level = (int)lrintf(v * 5.0f / 255.0f);
                o[c] = clamp_u8(level * 51.0 * (1.0 - e));
            }
        }
    free(buf);
    return MG_OK;
}

#define SKETCH_SIGMA 3.0f

/* Sketch: g = luma, the negative 255-g blurred (sigma 3 px), and colour dodge
 * g * 255 / (255 - blur): flat areas go white, edges leave grey pencil lines. */
static mg_status style_sketch(const uint8_t *in, uint8_t *out, int W, int H) {
    size_t n = (size_t)W * H;
    float *f = malloc(3 * n * sizeof *f);
    if (!f) return mg_fail(MG_ERR_NOMEM, "style: out of memory");
    float *g = f + n, *tmp = g + n;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)luma_i(in + 3 * i);
        f[i] = 255.0f - g[i];
    }
    blur_float(f, tmp, W, H, 1, SKETCH_SIGMA);
    for (size_t i = 0; i < n; i++) {
        float den = 255.0f - f[i];
        uint8_t v = den <= 0.5f ? 255 : clamp_u8(g[i] * 255.0f / den);
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
    }
    free(f);
    return MG_OK;
}

/* Thermal: luma through an "ironbow" map, black - indigo - magenta - orange - yellow - white,
 * linear between the control points. */
static void style_thermal(const uint8_t *in, uint8_t *out, int W, int H) {
    static const int cp[][4] = {{0, 0, 0, 10},     {50, 40, 0, 120},  {100, 150, 0, 150}, {150, 225, 60, 40},
                                {200, 255, 160, 0}, {235, 255, 225, 80}, {255, 255, 255, 255}};
    uint8_t lut[256][3];
    for (int v = 0, k = 0; v < 256; v++) {
        while (v > cp[k + 1][0]) k++;
        int span = cp[k + 1][0] - cp[k][0], t = v - cp[k][0];
        for (int c = 0; c < 3; c++)
            lut[v][c] = (uint8_t)((cp[k][c + 1] * (span - t) + cp[k + 1][c + 1] * t + span / 2) / span);
    }
    for (size_t i = 0, n = (size_t)W * H; i < n; i++) {
        const uint8_t *m = lut[luma_i(in + 3 * i)];
        out[3 * i] = m[0], out[3 * i + 1] = m[1], out[3 * i + 2] = m[2];
    }
}

int style_kind(const char *prompt) {
    int i = lookup(prompt);
    if (i < 0) return STYLE_NONE;
    switch (prompts[i].k) {
    case K_TOON: return STYLE_TOON;
    case K_SKETCH: return STYLE_SKETCH;
    case K_THERMAL: return STYLE_THERMAL;
    default: return STYLE_NONE;
    }
}

void style_consts_get(style_consts *c) {
    memset(c, 0, sizeof *c);
    toon_weights(c->toon_ws, c->toon_wr);
    c->sketch_r = gauss_kernel(SKETCH_SIGMA, c->sketch_k);
}

/* ---- the two entry points ------------------------------------------------------------- */

mg_status degrade_apply_params(const char *prompt, const uint8_t *in, uint8_t *out, int W, int H, uint64_t seed,
                               const degrade_params *p) {
    int i = lookup(prompt);
    if (i < 0) return mg_fail(MG_ERR_ARG, "degrade: unknown prompt '%s' (no degradation defined)", prompt ? prompt : "(null)");
    if (!in || !out || !p || !size_ok(W, H)) return mg_fail(MG_ERR_ARG, "degrade: bad arguments (size %dx%d)", W, H);
    if (out != in) memcpy(out, in, (size_t)W * H * 3);
    switch (prompts[i].k) {
    case K_COLORIZE: degrade_grey(out, W, H); return MG_OK;
    case K_UPSCALE: return degrade_resample(out, W, H, p->scale, p->nearest);
    case K_RESTORE:
        MG_TRY(degrade_blur(out, W, H, p->blur_sigma));
        MG_TRY(degrade_noise(out, W, H, p->noise_sigma, seed));
        return degrade_jpeg(out, W, H, p->jpeg_quality);
    default: return MG_OK; /* none, style:*, dream: the frame itself */
    }
}

mg_status degrade_apply(const char *prompt, const uint8_t *in, uint8_t *out, int W, int H, uint64_t seed) {
    degrade_params p = degrade_params_default();
    return degrade_apply_params(prompt, in, out, W, H, seed, &p);
}

mg_status style_apply(const char *prompt, const uint8_t *in, uint8_t *out, int W, int H) {
    int i = lookup(prompt);
    if (i < 0) return mg_fail(MG_ERR_ARG, "style: unknown prompt '%s' (no target defined)", prompt ? prompt : "(null)");
    if (!in || !out || !size_ok(W, H)) return mg_fail(MG_ERR_ARG, "style: bad arguments (size %dx%d)", W, H);
    switch (prompts[i].k) {
    case K_TOON: return style_toon(in, out, W, H);
    case K_SKETCH: return style_sketch(in, out, W, H);
    case K_THERMAL: style_thermal(in, out, W, H); return MG_OK;
    default:
        if (out != in) memcpy(out, in, (size_t)W * H * 3);
        return MG_OK;
    }
}
