/* Per-frame and per-sequence metrics. See metrics.h and docs/EVAL.md. */
#include "eval/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* ---- one frame ------------------------------------------------------------------------- */

double metric_mse(const uint8_t *a, const uint8_t *b, size_t n) {
    uint64_t acc = 0; /* exact: at most 65025 per byte */
    for (size_t i = 0; i < n; i++) {
        int d = (int)a[i] - (int)b[i];
        acc += (uint64_t)(d * d);
    }
    return n ? (double)acc / (double)n : 0.0;
}

double metric_psnr_from_mse(double mse) {
    if (!(mse > 0)) return METRIC_PSNR_MAX;
    double p = 10.0 * log10(255.0 * 255.0 / mse);
    return p > METRIC_PSNR_MAX ? METRIC_PSNR_MAX : p;
}

double metric_psnr(const uint8_t *a, const uint8_t *b, size_t n) { return metric_psnr_from_mse(metric_mse(a, b, n)); }

double metric_change(const uint8_t *a, const uint8_t *b, size_t n) {
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) acc += (uint64_t)abs((int)a[i] - (int)b[i]);
    return n ? (double)acc / (double)n : 0.0;
}

static void luma(const uint8_t *rgb, size_t n, double *y) {
    for (size_t i = 0; i < n; i++) y[i] = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
}

void metric_channel_stats(const uint8_t *rgb, int W, int H, double mean[3], double std[3]) {
    uint64_t s[3] = {0, 0, 0}, s2[3] = {0, 0, 0}; /* exact sums */
    size_t n = (size_t)W * H;
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            uint64_t v = rgb[3 * i + c];
            s[c] += v, s2[c] += v * v;
        }
    for (int c = 0; c < 3; c++) {
        if (!n) { mean[c] = std[c] = 0; continue; }
        /* n * sum(v^2) - sum(v)^2 is exact in 128 bits; in double it loses nothing that matters */
        double m = (double)s[c] / n, var = ((double)s2[c] * n - (double)s[c] * s[c]) / ((double)n * n);
        mean[c] = m, std[c] = var > 0 ? sqrt(var) : 0;
    }
}

double metric_detail(const uint8_t *rgb, int W, int H) {
    if (W < 3 || H < 3) return 0;
    double acc = 0;
    for (int y = 1; y < H - 1; y++) {
        double row = 0;
        for (int x = 1; x < W - 1; x++) {
#define Y(yy, xx) (0.299 * rgb[((size_t)(yy) * W + (xx)) * 3] + 0.587 * rgb[((size_t)(yy) * W + (xx)) * 3 + 1] + \
                   0.114 * rgb[((size_t)(yy) * W + (xx)) * 3 + 2])
            double l = 4 * Y(y, x) - Y(y, x - 1) - Y(y, x + 1) - Y(y - 1, x) - Y(y + 1, x);
#undef Y
            row += l * l;
        }
        acc += row;
    }
    return acc / ((double)(W - 2) * (H - 2));
}

#define SSIM_R 5 /* 11 taps */
static const double SSIM_C1 = (0.01 * 255) * (0.01 * 255), SSIM_C2 = (0.03 * 255) * (0.03 * 255);

size_t metric_ssim_scratch(int W, int H) {
    size_t n = (size_t)W * H;
    return 2 * n + (W > 2 * SSIM_R && H > 2 * SSIM_R ? 5 * (size_t)(W - 2 * SSIM_R) * H : 0);
}

static double ssim_formula(double mx, double my, double vx, double vy, double cxy) {
    return ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2));
}

double metric_ssim(const uint8_t *a, const uint8_t *b, int W, int H, double *scratch) {
    size_t n = (size_t)W * H;
    if (!n) return 1.0;
    double *ya = scratch, *yb = scratch + n;
    luma(a, n, ya);
    luma(b, n, yb);
    if (W <= 2 * SSIM_R || H <= 2 * SSIM_R) { /* one window, uniform weights */
        double mx = 0, my = 0, vx = 0, vy = 0, cxy = 0;
        for (size_t i = 0; i < n; i++) mx += ya[i], my += yb[i];
        mx /= n, my /= n;
        for (size_t i = 0; i < n; i++) {
            double dx = ya[i] - mx, dy = yb[i] - my;
            vx += dx * dx, vy += dy * dy, cxy += dx * dy;
        }
        return ssim_formula(mx, my, vx / n, vy / n, cxy / n);
    }
    double g[2 * SSIM_R + 1], gs = 0;
    for (int i = -SSIM_R; i <= SSIM_R; i++) gs += g[i + SSIM_R] = exp(-(double)(i * i) / (2 * 1.5 * 1.5));
    for (int i = 0; i <= 2 * SSIM_R; i++) g[i] /= gs;
    int wv = W - 2 * SSIM_R, hv = H - 2 * SSIM_R;
    size_t m = (size_t)wv * H;
    double *hx = yb + n, *hy = hx + m, *hxx = hy + m, *hyy = hxx + m, *hxy = hyy + m;
    for (int y = 0; y < H; y++) /* horizontal pass: the five moments, valid columns only */
        for (int x = 0; x < wv; x++) {
            double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
            const double *pa = ya + (size_t)y * W + x, *pb = yb + (size_t)y * W + x;
            for (int i = 0; i <= 2 * SSIM_R; i++) {
                double u = pa[i], v = pb[i], w = g[i];
                sx += w * u, sy += w * v, sxx += w * u * u, syy += w * v * v, sxy += w * u * v;
            }
            size_t o = (size_t)y * wv + x;
            hx[o] = sx, hy[o] = sy, hxx[o] = sxx, hyy[o] = syy, hxy[o] = sxy;
        }
    double total = 0;
    for (int y = 0; y < hv; y++) { /* vertical pass and the SSIM map, summed */
        double row = 0;
        for (int x = 0; x < wv; x++) {
            double mx = 0, my = 0, exx = 0, eyy = 0, exy = 0;
            for (int i = 0; i <= 2 * SSIM_R; i++) {
                size_t o = (size_t)(y + i) * wv + x;
                double w = g[i];
                mx += w * hx[o], my += w * hy[o], exx += w * hxx[o], eyy += w * hyy[o], exy += w * hxy[o];
            }
            row += ssim_formula(mx, my, exx - mx * mx, eyy - my * my, exy - mx * my);
        }
        total += row;
    }
    return total / ((double)wv * hv);
}

/* ---- sequences ------------------------------------------------------------------------- */

metric_fit metric_linear_fit(const double *y, int n) {
    metric_fit f = {NAN, NAN, NAN, NAN, 0};
    double sx = 0, sy = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(y[i])) sx += i, sy += y[i], k++;
    f.n = k;
    if (k < 2) return f;
    double mx = sx / k, my = sy / k, sxx = 0, sxy = 0, syy = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(y[i])) {
            double dx = i - mx, dy = y[i] - my;
            sxx += dx * dx, sxy += dx * dy, syy += dy * dy;
        }
    f.slope = sxy / sxx;
    f.intercept = my - f.slope * mx;
    double ssr = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(y[i])) {
            double e = y[i] - (f.intercept + f.slope * i);
            ssr += e * e;
        }
    f.r2 = syy > 0 ? 1.0 - ssr / syy : 1.0;
    f.slope_se = k > 2 ? sqrt(ssr / (k - 2) / sxx) : NAN;
    return f;
}

int metric_window_count(int n, int win) {
    if (n <= 0) return 0;
    int w = win < n ? win : n;
    if (w < 1) w = 1;
    return n - w + 1;
}

void metric_window_means(const double *x, int n, int win, double *out) {
    int cnt = metric_window_count(n, win);
    if (!cnt) return;
    int w = n - cnt + 1;
    double s = 0; /* running sum, re-summed every 1024 windows to keep rounding from piling up */
    for (int i = 0; i < w; i++) s += x[i];
    out[0] = s / w;
    for (int j = 1; j < cnt; j++) {
        if (j % 1024 == 0) {
            s = 0;
            for (int i = j; i < j + w; i++) s += x[i];
        } else {
            s += x[j + w - 1] - x[j - 1];
        }
        out[j] = s / w;
    }
}

metric_window_check metric_window_check_run(const double *x, const double *ref, double ref_const, int n, int win,
                                            double ratio, double floor, int below) {
    metric_window_check c = {0, -1, NAN};
    int cnt = metric_window_count(n, win);
    if (!cnt) return c;
    int w = n - cnt + 1;
    double *mx = malloc(2 * (size_t)cnt * sizeof *mx);
    if (!mx) return c; /* cannot happen for sane n; report "not flagged, worst NaN" */
    double *mr = mx + cnt;
    metric_window_means(x, n, win, mx);
    if (ref) metric_window_means(ref, n, win, mr);
    for (int j = 0; j < cnt; j++) {
        double r = ref ? mr[j] : ref_const;
        if (below && !(r >= floor)) continue;
        if (!below && !(r >= floor)) r = floor;
        double q = mx[j] / r;
        if (isnan(c.worst) || (below ? q < c.worst : q > c.worst)) c.worst = q;
        if (!c.flagged && (below ? q < ratio : q > ratio)) c.flagged = 1, c.frame = j + w - 1;
    }
    free(mx);
    return c;
}

/* ---- series ---------------------------------------------------------------------------- */

enum { SERIES_ARRAYS = 2 + 3 + 3 + 4 };

mg_status eval_series_init(eval_series *s, int cap) {
    memset(s, 0, sizeof *s);
    if (cap < 1) return mg_fail(MG_ERR_ARG, "eval: a series needs at least one frame");
    s->block = malloc((size_t)cap * SERIES_ARRAYS * sizeof(double));
    if (!s->block) return mg_fail(MG_ERR_NOMEM, "eval: out of memory for %d frames of metrics", cap);
    double *p = s->block;
    s->psnr = p, p += cap;
    s->ssim = p, p += cap;
    for (int c = 0; c < 3; c++) s->mean[c] = p, p += cap;
    for (int c = 0; c < 3; c++) s->std[c] = p, p += cap;
    s->colour_std = p, p += cap;
    s->detail = p, p += cap;
    s->change = p, p += cap;
    s->ms = p;
    for (size_t i = 0; i < (size_t)cap * SERIES_ARRAYS; i++) s->block[i] = NAN;
    s->cap = cap;
    return MG_OK;
}

void eval_series_free(eval_series *s) {
    free(s->block);
    memset(s, 0, sizeof *s);
}

void eval_series_push(eval_series *s, const uint8_t *img, const uint8_t *prev, const uint8_t *truth, int W, int H,
                      double ms, double *scratch) {
    if (s->n >= s->cap) return;
    int i = s->n++;
    size_t bytes = (size_t)W * H * 3;
    double mean[3], std[3];
    metric_channel_stats(img, W, H, mean, std);
    for (int c = 0; c < 3; c++) s->mean[c][i] = mean[c], s->std[c][i] = std[c];
    s->colour_std[i] = (std[0] + std[1] + std[2]) / 3;
    s->detail[i] = metric_detail(img, W, H);
    s->change[i] = prev ? metric_change(img, prev, bytes) : NAN;
    s->ms[i] = ms;
    if (truth) {
        s->psnr[i] = metric_psnr(img, truth, bytes);
        s->ssim[i] = metric_ssim(img, truth, W, H, scratch);
    }
}

eval_thresholds eval_thresholds_default(void) {
    eval_thresholds t = {.window = 50, .collapse = 0.25, .explosion = 4.0, .freeze = 0.25, .floor_level = 1.0, .min_motion = 0.5};
    return t;
}

static double mean_of(const double *x, int n) {
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) s += x[i], k++;
    return k ? s / k : NAN;
}

static double min_of(const double *x, int n) {
    double m = NAN;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i]) && (isnan(m) || x[i] < m)) m = x[i];
    return m;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* min and max of the windowed means of x (n values) */
static void window_range(const double *x, int n, int win, double range[2]) {
    range[0] = range[1] = NAN;
    int cnt = metric_window_count(n, win);
    double *m = cnt ? malloc((size_t)cnt * sizeof *m) : NULL;
    if (!m) return;
    metric_window_means(x, n, win, m);
    range[0] = range[1] = m[0];
    for (int j = 1; j < cnt; j++) {
        if (m[j] < range[0]) range[0] = m[j];
        if (m[j] > range[1]) range[1] = m[j];
    }
    free(m);
}

static void set_flag(eval_flag *f, metric_window_check c, long offset, const char *what, const char *than) {
    if (!c.flagged || f->flagged) return;
    f->flagged = 1;
    f->frame = c.frame + offset;
    /* the window ratio at its most extreme over the run, not just where it first crossed */
    snprintf(f->why, sizeof f->why, "%s %s %.3gx %s", what, c.worst < 1 ? "down to" : "up to", c.worst, than);
}

void eval_summarise(const eval_series *out, const eval_series *ref, int has_truth, const eval_thresholds *t,
                    eval_summary *sum) {
    memset(sum, 0, sizeof *sum);
    int n = out->n < ref->n ? out->n : ref->n, win = t->window;
    sum->frames = n, sum->has_truth = has_truth;
    sum->collapse.frame = sum->explosion.frame = sum->freeze.frame = -1;

    /* accuracy and drift */
    sum->psnr_mean = sum->psnr_min = sum->psnr_first = sum->psnr_last = NAN;
    sum->ssim_mean = sum->ssim_min = NAN;
    sum->drift = metric_linear_fit(out->psnr, 0);
    sum->drift_db_per_1000 = sum->drift_se_per_1000 = NAN;
    if (has_truth && n > 0) {
        int w = n < win ? n : win;
        sum->psnr_mean = mean_of(out->psnr, n);
        sum->psnr_min = min_of(out->psnr, n);
        sum->psnr_first = mean_of(out->psnr, w);
        sum->psnr_last = mean_of(out->psnr + n - w, w);
        sum->ssim_mean = mean_of(out->ssim, n);
        sum->ssim_min = min_of(out->ssim, n);
        sum->drift = metric_linear_fit(out->psnr, n);
        sum->drift_db_per_1000 = 1000.0 * sum->drift.slope;
        sum->drift_se_per_1000 = 1000.0 * sum->drift.slope_se;
    }
    sum->base_psnr_mean = sum->base_ssim_mean = sum->base_drift_db_per_1000 = NAN;
    if (has_truth && n > 0) {
        sum->base_psnr_mean = mean_of(ref->psnr, n);
        sum->base_ssim_mean = mean_of(ref->ssim, n);
        sum->base_drift_db_per_1000 = 1000.0 * metric_linear_fit(ref->psnr, n).slope;
    }

    /* colour, detail, flicker over the whole run */
    double so = 0, sr = 0;
    for (int i = 1; i < n; i++) so += out->change[i], sr += ref->change[i];
    sum->change_mean = n > 1 ? so / (n - 1) : NAN;
    sum->ref_change_mean = n > 1 ? sr / (n - 1) : NAN;
    sum->flicker = n > 1 && sr > 0 ? so / sr : NAN;
    for (int c = 0; c < 3; c++) {
        double b = 0, s_o = 0, s_r = 0;
        for (int i = 0; i < n; i++) b += out->mean[c][i] - ref->mean[c][i], s_o += out->std[c][i], s_r += ref->std[c][i];
        sum->mean_bias[c] = n ? b / n : NAN;
        sum->std_ratio[c] = s_r > 0 ? s_o / s_r : NAN;
    }
    double cs_o = mean_of(out->colour_std, n), cs_r = mean_of(ref->colour_std, n);
    double d_o = mean_of(out->detail, n), d_r = mean_of(ref->detail, n);
    sum->colour_std_ratio = cs_r > 0 ? cs_o / cs_r : NAN;
    sum->detail_ratio = d_r > 0 ? d_o / d_r : NAN;

    /* windowed checks; frame change starts at frame 1 */
    const double *rcs = ref->colour_std, *rd = ref->detail, *rch = ref->change + 1;
    double k_cs = 0, k_dlo = 0, k_dhi = 0, k_clo = 0, k_chi = 0;
    const char *than_lo = "the truth's", *than_hi = "the truth's";
    if (!has_truth) { /* the clip's range stands in for the truth */
        window_range(ref->colour_std, n, win, sum->ref_colour_std_range);
        window_range(ref->detail, n, win, sum->ref_detail_range);
        window_range(ref->change + 1, n - 1, win, sum->ref_change_range);
        k_cs = sum->ref_colour_std_range[0], k_dlo = sum->ref_detail_range[0], k_dhi = sum->ref_detail_range[1];
        k_clo = sum->ref_change_range[0], k_chi = sum->ref_change_range[1];
        rcs = rd = rch = NULL;
        than_lo = "the clip's lowest window", than_hi = "the clip's highest window";
    } else {
        for (int i = 0; i < 2; i++)
            sum->ref_colour_std_range[i] = sum->ref_detail_range[i] = sum->ref_change_range[i] = NAN;
    }
    metric_window_check c_cs = metric_window_check_run(out->colour_std, rcs, k_cs, n, win, t->collapse, t->floor_level, 1);
    metric_window_check c_dlo = metric_window_check_run(out->detail, rd, k_dlo, n, win, t->collapse, t->floor_level, 1);
    metric_window_check c_dhi = metric_window_check_run(out->detail, rd, k_dhi, n, win, t->explosion, t->floor_level, 0);
    metric_window_check c_chi = metric_window_check_run(out->change + 1, rch, k_chi, n - 1, win, t->explosion, t->floor_level, 0);
    metric_window_check c_clo = metric_window_check_run(out->change + 1, rch, k_clo, n - 1, win, t->freeze, t->min_motion, 1);
    sum->colour_std_window_min = c_cs.worst;
    sum->detail_window_min = c_dlo.worst, sum->detail_window_max = c_dhi.worst;
    sum->change_window_min = c_clo.worst, sum->change_window_max = c_chi.worst;
    /* the earlier of the two reasons is the one reported */
    metric_window_check first_c = c_cs, second_c = c_dlo;
    const char *first_w = "colour std", *second_w = "detail";
    if (c_dlo.flagged && (!c_cs.flagged || c_dlo.frame < c_cs.frame))
        first_c = c_dlo, second_c = c_cs, first_w = "detail", second_w = "colour std";
    set_flag(&sum->collapse, first_c, 0, first_w, than_lo);
    set_flag(&sum->collapse, second_c, 0, second_w, than_lo);
    metric_window_check e1 = c_dhi, e2 = c_chi;
    long o1 = 0, o2 = 1;
    const char *w1 = "detail", *w2 = "frame change";
    if (c_chi.flagged && (!c_dhi.flagged || c_chi.frame + 1 < c_dhi.frame))
        e1 = c_chi, e2 = c_dhi, o1 = 1, o2 = 0, w1 = "frame change", w2 = "detail";
    set_flag(&sum->explosion, e1, o1, w1, than_hi);
    set_flag(&sum->explosion, e2, o2, w2, than_hi);
    set_flag(&sum->freeze, c_clo, 1, "frame change", than_lo);

    if (!has_truth && n > 0) { /* the share of windows outside the clip's range */
        int cnt = metric_window_count(n, win), bad = 0;
        double *m = malloc(3 * (size_t)cnt * sizeof *m);
        if (m) {
            metric_window_means(out->colour_std, n, win, m);
            metric_window_means(out->detail, n, win, m + cnt);
            int cc = metric_window_count(n - 1, win);
            metric_window_means(out->change + 1, n - 1, win, m + 2 * cnt);
            for (int j = 0; j < cnt; j++) {
                int o = m[j] < sum->ref_colour_std_range[0] || m[j] > sum->ref_colour_std_range[1] ||
                        m[cnt + j] < sum->ref_detail_range[0] || m[cnt + j] > sum->ref_detail_range[1];
                if (j < cc) o |= m[2 * cnt + j] < sum->ref_change_range[0] || m[2 * cnt + j] > sum->ref_change_range[1];
                bad += o;
            }
            sum->out_of_range = (double)bad / cnt;
            free(m);
        }
    } else {
        sum->out_of_range = NAN;
    }

    /* model time */
    sum->ms_mean = sum->ms_p50 = sum->ms_max = NAN;
    double *ms = n ? malloc((size_t)n * sizeof *ms) : NULL;
    if (ms) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (isfinite(out->ms[i])) ms[k++] = out->ms[i];
        if (k) {
            qsort(ms, k, sizeof *ms, cmp_double);
            sum->ms_mean = mean_of(ms, k), sum->ms_p50 = ms[k / 2], sum->ms_max = ms[k - 1];
        }
        free(ms);
    }
}
