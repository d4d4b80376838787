/* The evaluation report: strips (PNG), metrics.json (cJSON), index.html with hand-written
 * SVG plots. See report.h. */
#include "eval/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "eval/files.h"

report_verdict report_verdict_of(const eval_summary *s) {
    report_verdict v;
    v.collapse = !s->collapse.flagged;
    v.explosion = !s->explosion.flagged;
    v.freeze = !s->freeze.flagged;
    if (s->has_truth) {
        v.drift = isfinite(s->drift_db_per_1000) && s->drift_db_per_1000 >= REPORT_DRIFT_MIN_DB_PER_1000;
        v.flicker = !isfinite(s->flicker) || s->flicker <= REPORT_FLICKER_MAX; /* a static truth: nothing to compare */
        v.all = v.drift && v.flicker && v.collapse;
    } else {
        v.drift = v.flicker = 1;
        v.all = v.collapse && v.explosion && v.freeze;
    }
    return v;
}

/* ---- strips ------------------------------------------------------------------------------ */

#define STRIP_GAP 4

static void strip_path(char *buf, size_t n, const char *dir, long frame) { snprintf(buf, n, "%s/strip_%06ld.png", dir, frame); }
static void strip_name(char *buf, size_t n, long frame) { snprintf(buf, n, "strip_%06ld.png", frame); }

/* input | output A | [output B] | truth (dream: clip | A | [B]), STRIP_GAP grey pixels apart */
static int strip_columns(const eval_report *r) { return 1 + r->n_models + (r->has_truth ? 1 : 0); }

static mg_status write_strip(const eval_report *r, int i) {
    int W = r->width, H = r->height, nc = strip_columns(r), SW = nc * W + (nc - 1) * STRIP_GAP;
    uint8_t *img = malloc((size_t)SW * H * 3);
    if (!img) return mg_fail(MG_ERR_NOMEM, "eval: out of memory for a strip");
    memset(img, 96, (size_t)SW * H * 3);
    const uint8_t *col[4];
    int k = 0;
    col[k++] = r->strip_input[i];
    for (int m = 0; m < r->n_models; m++) col[k++] = r->strip_out[m][i];
    if (r->has_truth) col[k++] = r->strip_truth[i];
    for (int c = 0; c < nc; c++)
        for (int y = 0; y < H; y++)
            memcpy(img + ((size_t)y * SW + (size_t)c * (W + STRIP_GAP)) * 3, col[c] + (size_t)y * W * 3, (size_t)W * 3);
    char path[4200];
    strip_path(path, sizeof path, r->dir, r->strip_frame[i]);
    mg_status s = image_write_png(path, img, SW, H);
    free(img);
    return s;
}

/* ---- metrics.json ----------------------------------------------------------------------- */

/* Six significant digits are plenty for every metric and keep the file small; non-finite
 * values (no truth, too few frames) are null. */
static cJSON *jnum(double v) {
    if (!isfinite(v)) return cJSON_CreateNull();
    char b[32];
    snprintf(b, sizeof b, "%.6g", v);
    return cJSON_CreateNumber(strtod(b, NULL));
}

static void jadd(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, jnum(v)); }

static void jadd3(cJSON *o, const char *k, const double *v) {
    cJSON *a = cJSON_CreateArray();
    for (int c = 0; c < 3; c++) cJSON_AddItemToArray(a, jnum(v[c]));
    cJSON_AddItemToObject(o, k, a);
}

static void jseries(cJSON *o, const char *k, const double *x, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, jnum(x[i]));
    cJSON_AddItemToObject(o, k, a);
}

static cJSON *series_json(const eval_series *s, int with_truth, int timed) {
    cJSON *o = cJSON_CreateObject();
    if (with_truth) {
        jseries(o, "psnr", s->psnr, s->n);
        jseries(o, "ssim", s->ssim, s->n);
    }
    static const char *mk[3] = {"mean_r", "mean_g", "mean_b"}, *sk[3] = {"std_r", "std_g", "std_b"};
    for (int c = 0; c < 3; c++) jseries(o, mk[c], s->mean[c], s->n);
    for (int c = 0; c < 3; c++) jseries(o, sk[c], s->std[c], s->n);
    jseries(o, "colour_std", s->colour_std, s->n);
    jseries(o, "detail", s->detail, s->n);
    jseries(o, "change", s->change, s->n);
    if (timed) jseries(o, "ms", s->ms, s->n);
    return o;
}

static cJSON *flag_json(const eval_flag *f) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "flagged", f->flagged);
    cJSON_AddItemToObject(o, "frame", f->flagged ? cJSON_CreateNumber((double)f->frame) : cJSON_CreateNull());
    cJSON_AddStringToObject(o, "why", f->why);
    return o;
}

static cJSON *summary_json(const eval_summary *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "frames", s->frames);
    jadd(o, "psnr_mean", s->psnr_mean);
    jadd(o, "psnr_min", s->psnr_min);
    jadd(o, "psnr_first_window", s->psnr_first);
    jadd(o, "psnr_last_window", s->psnr_last);
    jadd(o, "ssim_mean", s->ssim_mean);
    jadd(o, "ssim_min", s->ssim_min);
    jadd(o, "drift_db_per_1000", s->drift_db_per_1000);
    jadd(o, "drift_se_db_per_1000", s->drift_se_per_1000);
    jadd(o, "drift_intercept_db", s->drift.intercept);
    jadd(o, "drift_r2", s->drift.r2);
    jadd(o, "baseline_psnr_mean", s->base_psnr_mean);
    jadd(o, "baseline_ssim_mean", s->base_ssim_mean);
    jadd(o, "baseline_drift_db_per_1000", s->base_drift_db_per_1000);
    jadd(o, "flicker", s->flicker);
    jadd(o, "change_mean", s->change_mean);
    jadd(o, "ref_change_mean", s->ref_change_mean);
    jadd3(o, "mean_bias", s->mean_bias);
    jadd3(o, "std_ratio", s->std_ratio);
    jadd(o, "colour_std_ratio", s->colour_std_ratio);
    jadd(o, "detail_ratio", s->detail_ratio);
    jadd(o, "colour_std_window_min", s->colour_std_window_min);
    jadd(o, "detail_window_min", s->detail_window_min);
    jadd(o, "detail_window_max", s->detail_window_max);
    jadd(o, "change_window_min", s->change_window_min);
    jadd(o, "change_window_max", s->change_window_max);
    cJSON *rr = cJSON_CreateObject();
    cJSON *a;
    a = cJSON_CreateArray(), cJSON_AddItemToArray(a, jnum(s->ref_colour_std_range[0])), cJSON_AddItemToArray(a, jnum(s->ref_colour_std_range[1]));
    cJSON_AddItemToObject(rr, "colour_std", a);
    a = cJSON_CreateArray(), cJSON_AddItemToArray(a, jnum(s->ref_detail_range[0])), cJSON_AddItemToArray(a, jnum(s->ref_detail_range[1]));
    cJSON_AddItemToObject(rr, "detail", a);
    a = cJSON_CreateArray(), cJSON_AddItemToArray(a, jnum(s->ref_change_range[0])), cJSON_AddItemToArray(a, jnum(s->ref_change_range[1]));
    cJSON_AddItemToObject(rr, "change", a);
    cJSON_AddItemToObject(o, "ref_window_range", rr);
    jadd(o, "out_of_range", s->out_of_range);
    jadd(o, "ms_mean", s->ms_mean);
    jadd(o, "ms_p50", s->ms_p50);
    jadd(o, "ms_max", s->ms_max);
    return o;
}

static mg_status write_json(const eval_report *r) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return mg_fail(MG_ERR_NOMEM, "eval: out of memory for metrics.json");
    cJSON_AddStringToObject(root, "format", "mirage-eval");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "mirage", MG_VERSION);

    cJSON *c = cJSON_AddObjectToObject(root, "config");
    cJSON_AddStringToObject(c, "input", r->input ? r->input : "");
    cJSON_AddStringToObject(c, "input_desc", r->input_desc ? r->input_desc : "");
    cJSON_AddStringToObject(c, "prompt", r->prompt);
    cJSON_AddStringToObject(c, "degradation", r->degradation ? r->degradation : "");
    cJSON_AddBoolToObject(c, "has_truth", r->has_truth);
    cJSON_AddNumberToObject(c, "frames", (double)r->frames);
    cJSON_AddItemToObject(c, "clip_frames", r->clip_frames ? cJSON_CreateNumber((double)r->clip_frames) : cJSON_CreateNull());
    cJSON_AddBoolToObject(c, "pingpong", r->clip_frames > 0);
    cJSON_AddNumberToObject(c, "width", r->width);
    cJSON_AddNumberToObject(c, "height", r->height);
    cJSON_AddNumberToObject(c, "steps", r->steps);
    cJSON_AddNumberToObject(c, "ring", r->ring);
    jadd(c, "guidance", r->guidance);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed); /* u64: a string, exact */
    cJSON_AddStringToObject(c, "seed", seed);
    cJSON_AddStringToObject(c, "device", r->device ? r->device : "");
    cJSON_AddStringToObject(c, "build", r->build ? r->build : "");
    jadd(c, "wall_s", r->wall_s);

    cJSON *t = cJSON_AddObjectToObject(root, "thresholds");
    cJSON_AddNumberToObject(t, "window", r->thr->window);
    jadd(t, "collapse", r->thr->collapse);
    jadd(t, "explosion", r->thr->explosion);
    jadd(t, "freeze", r->thr->freeze);
    jadd(t, "floor_level", r->thr->floor_level);
    jadd(t, "min_motion", r->thr->min_motion);
    jadd(t, "psnr_cap", METRIC_PSNR_MAX);
    cJSON *acc = cJSON_AddObjectToObject(root, "acceptance");
    jadd(acc, "drift_min_db_per_1000", REPORT_DRIFT_MIN_DB_PER_1000);
    jadd(acc, "flicker_max", REPORT_FLICKER_MAX);

    cJSON *ref = cJSON_AddObjectToObject(root, "reference");
    cJSON_AddStringToObject(ref, "kind", r->has_truth ? "truth" : "clip");
    /* with a truth, its psnr/ssim series are the model input's (the do-nothing baseline) */
    cJSON_AddItemToObject(ref, "series", series_json(r->ref, r->has_truth, 0));

    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int m = 0; m < r->n_models; m++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "label", m ? "B" : "A");
        cJSON_AddStringToObject(o, "file", r->model_file[m] ? r->model_file[m] : "");
        cJSON_AddStringToObject(o, "desc", r->model_desc[m] ? r->model_desc[m] : "");
        cJSON_AddItemToObject(o, "summary", summary_json(r->sum[m]));
        cJSON *fl = cJSON_AddObjectToObject(o, "flags");
        cJSON_AddItemToObject(fl, "collapse", flag_json(&r->sum[m]->collapse));
        cJSON_AddItemToObject(fl, "explosion", flag_json(&r->sum[m]->explosion));
        cJSON_AddItemToObject(fl, "freeze", flag_json(&r->sum[m]->freeze));
        report_verdict v = report_verdict_of(r->sum[m]);
        cJSON *vj = cJSON_AddObjectToObject(o, "verdict");
        if (r->has_truth) {
            cJSON_AddBoolToObject(vj, "drift", v.drift);
            cJSON_AddBoolToObject(vj, "flicker", v.flicker);
        } else {
            cJSON_AddBoolToObject(vj, "explosion", v.explosion);
            cJSON_AddBoolToObject(vj, "freeze", v.freeze);
        }
        cJSON_AddBoolToObject(vj, "collapse", v.collapse);
        cJSON_AddBoolToObject(vj, "pass", v.all);
        cJSON_AddItemToObject(o, "series", series_json(r->out[m], r->has_truth, 1));
        cJSON_AddItemToArray(models, o);
    }

    cJSON *strips = cJSON_AddArrayToObject(root, "strips");
    for (int i = 0; i < r->n_strips; i++) {
        cJSON *o = cJSON_CreateObject();
        char name[64];
        strip_name(name, sizeof name, r->strip_frame[i]);
        cJSON_AddNumberToObject(o, "frame", (double)r->strip_frame[i]);
        cJSON_AddStringToObject(o, "file", name);
        cJSON *cols = cJSON_AddArrayToObject(o, "columns");
        cJSON_AddItemToArray(cols, cJSON_CreateString(r->has_truth ? "input" : "clip (dropped)"));
        for (int m = 0; m < r->n_models; m++) cJSON_AddItemToArray(cols, cJSON_CreateString(m ? "output B" : "output A"));
        if (r->has_truth) cJSON_AddItemToArray(cols, cJSON_CreateString("truth"));
        cJSON_AddItemToArray(strips, o);
    }

    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) return mg_fail(MG_ERR_NOMEM, "eval: out of memory printing metrics.json");
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.json", r->dir);
    afile f;
    mg_status s = afile_open(&f, path);
    if (s == MG_OK) {
        fputs(txt, f.fp);
        fputc('\n', f.fp);
        s = afile_commit(&f);
    }
    cJSON_free(txt);
    return s;
}

/* ---- SVG plots -------------------------------------------------------------------------- */

typedef struct pline {
    const double *y; /* y[i] is drawn at frame x0 + i */
    long n, x0;
    const char *colour, *dash; /* dash: NULL solid, else an SVG dasharray */
    double width, opacity;
    const char *label;         /* in the legend (NULL: not listed) */
} pline;

typedef struct hline { double y; const char *colour, *label; } hline;

enum { PW = 900, PH = 250, ML = 64, MR = 110, MT = 12, MB = 34 };

static double nice_step(double range, int target) {
    double raw = range / target, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void html_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static int usable(double v, int logy) { return isfinite(v) && (!logy || v > 0); }

static void svg_plot(FILE *f, const char *title, const char *yunit, long N, const pline *L, int nl, const hline *h, int nh,
                     int logy) {
    const int w = PW - ML - MR, hh = PH - MT - MB;
    double lo = INFINITY, hi = -INFINITY;
    for (int l = 0; l < nl; l++)
        for (long i = 0; i < L[l].n; i++) {
            double v = L[l].y[i];
            if (!usable(v, logy)) continue;
            v = logy ? log10(v) : v;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
    for (int k = 0; k < nh; k++)
        if (usable(h[k].y, logy)) {
            double v = logy ? log10(h[k].y) : h[k].y;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-9 * (fabs(hi) + 1)) lo -= logy ? 0.3 : 0.5 * (fabs(lo) + 1), hi += logy ? 0.3 : 0.5 * (fabs(hi) + 1);
    double pad = 0.06 * (hi - lo);
    lo -= pad, hi += pad;
    double xmax = N > 1 ? (double)(N - 1) : 1;
#define PX(x) (ML + (x) / xmax * w)
#define PY(v) (MT + hh - ((v) - lo) / (hi - lo) * hh)
    fprintf(f, "<figure><figcaption>");
    html_esc(f, title);
    fprintf(f, "</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", PW, PH, PW, PH);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fff\" stroke=\"#999\"/>\n", ML, MT, w, hh);
    /* y grid and labels */
    if (logy) {
        int span = (int)(floor(hi) - ceil(lo));
        for (int e = (int)floor(lo); e <= (int)ceil(hi); e++)
            for (int m = 1; m <= 5; m += (m == 1 ? 1 : 3)) { /* 1, 2, 5 per decade, or decades only */
                if (span > 3 && m != 1) continue;
                double v = log10(m) + e;
                if (v < lo || v > hi) continue;
                fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", ML, ML + w, PY(v), PY(v));
                fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", ML - 4, PY(v) + 4, pow(10, v));
            }
    } else {
        double st = nice_step(hi - lo, 5);
        for (double v = ceil(lo / st) * st; v <= hi; v += st) {
            double vv = fabs(v) < st * 1e-6 ? 0 : v;
            fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", ML, ML + w, PY(vv), PY(vv));
            fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", ML - 4, PY(vv) + 4, vv);
        }
    }
    /* x grid and labels */
    double sx = nice_step(xmax, 8);
    if (sx < 1) sx = 1;
    for (double x = 0; x <= xmax + 1e-9; x += sx)
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#e4e4e4\"/><text x=\"%.1f\" y=\"%d\" "
                   "text-anchor=\"middle\">%g</text>\n", PX(x), PX(x), MT, MT + hh, PX(x), MT + hh + 14, x);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">frame</text>\n", ML + w / 2, PH - 4);
    fprintf(f, "<text x=\"12\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 12 %d)\">", MT + hh / 2, MT + hh / 2);
    html_esc(f, yunit);
    fprintf(f, "</text>\n");
    /* bounds */
    for (int k = 0; k < nh; k++) {
        if (!usable(h[k].y, logy)) continue;
        double v = logy ? log10(h[k].y) : h[k].y;
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"6 4\"/>", ML, ML + w, PY(v),
                PY(v), h[k].colour);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" fill=\"%s\">", ML + w + 4, PY(v) + 4, h[k].colour);
        html_esc(f, h[k].label);
        fprintf(f, "</text>\n");
    }
    /* lines: every point, or the min and max of each pixel column when there are many */
    fprintf(f, "<svg x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" viewBox=\"%d %d %d %d\" overflow=\"hidden\">\n", ML, MT, w, hh, ML,
            MT, w, hh);
    for (int l = 0; l < nl; l++) {
        const pline *p = &L[l];
        if (p->n <= 0) continue;
        fprintf(f, "<path fill=\"none\" stroke-linecap=\"round\" stroke=\"%s\" stroke-width=\"%.1f\" stroke-opacity=\"%.2f\"%s%s%s d=\"",
                p->colour, p->n == 1 || p->width <= 0 ? 4.0 : p->width, p->opacity > 0 ? p->opacity : 1.0, p->dash ? " stroke-dasharray=\"" : "",
                p->dash ? p->dash : "", p->dash ? "\"" : "");
        int pen = 0; /* points drawn in the current run; a lone point becomes a dot (round cap) */
        if (p->n <= 2 * w) {
            for (long i = 0; i < p->n; i++) {
                double v = p->y[i];
                if (!usable(v, logy)) {
                    if (pen == 1) fprintf(f, "l0.01 0");
                    pen = 0;
                    continue;
                }
                v = logy ? log10(v) : v;
                fprintf(f, "%c%.1f %.1f", pen ? 'L' : 'M', PX((double)(p->x0 + i)), PY(v));
                pen++;
            }
            if (pen == 1) fprintf(f, "l0.01 0");
        } else {
            long i = 0;
            for (int col = 0; col < w && i < p->n; col++) {
                double mn = INFINITY, mx = -INFINITY;
                long end = (long)((double)(col + 1) / w * p->n);
                for (; i < end && i < p->n; i++) {
                    double v = p->y[i];
                    if (!usable(v, logy)) continue;
                    v = logy ? log10(v) : v;
                    if (v < mn) mn = v;
                    if (v > mx) mx = v;
                }
                if (mn > mx) { pen = 0; continue; }
                double x = PX((double)p->x0 + (col + 0.5) / w * p->n);
                fprintf(f, "%c%.1f %.1f L%.1f %.1f", pen ? 'L' : 'M', x, PY(mn), x, PY(mx));
                pen = 1;
            }
        }
        fprintf(f, "\"/>\n");
    }
    fprintf(f, "</svg>\n</svg>\n<div class=\"legend\">");
    for (int l = 0; l < nl; l++) {
        if (!L[l].label) continue;
        fprintf(f, "<span><svg width=\"26\" height=\"10\"><line x1=\"1\" x2=\"25\" y1=\"5\" y2=\"5\" stroke=\"%s\" stroke-width=\"2\"%s%s%s/></svg> ",
                L[l].colour, L[l].dash ? " stroke-dasharray=\"" : "", L[l].dash ? L[l].dash : "", L[l].dash ? "\"" : "");
        html_esc(f, L[l].label);
        fprintf(f, "</span>");
    }
    fprintf(f, "</div></figure>\n");
#undef PX
#undef PY
}

/* ---- index.html ------------------------------------------------------------------------- */

static const char *model_colour[2] = {"#e6550d", "#6a51a3"};
static const char *chan_colour[3] = {"#d62728", "#2ca02c", "#1f77b4"};
static const char *chan_name[3] = {"R", "G", "B"};

static void cell_flag(FILE *f, const eval_flag *x) {
    if (!x->flagged) {
        fprintf(f, "<td class=\"ok\">no</td>");
        return;
    }
    fprintf(f, "<td class=\"bad\">yes, frame %ld: ", x->frame);
    html_esc(f, x->why);
    fprintf(f, "</td>");
}

static void verdict_cell(FILE *f, int ok) { fprintf(f, "<td class=\"%s\">%s</td>", ok ? "ok" : "bad", ok ? "pass" : "fail"); }

/* one row: the name, then a formatted value per model, then the bar */
#define ROW(name, bar, ...)                                                   \
    do {                                                                      \
        fprintf(f, "<tr><th>%s</th>", name);                                  \
        for (int m = 0; m < r->n_models; m++) {                               \
            const eval_summary *s = r->sum[m];                                \
            (void)s;                                                          \
            fprintf(f, "<td>");                                               \
            fprintf(f, __VA_ARGS__);                                          \
            fprintf(f, "</td>");                                              \
        }                                                                     \
        fprintf(f, "<td class=\"bar\">%s</td></tr>\n", bar);                  \
    } while (0)

static void summary_table(FILE *f, const eval_report *r) {
    fprintf(f, "<table><tr><th></th>");
    for (int m = 0; m < r->n_models; m++) {
        fprintf(f, "<th style=\"color:%s\">model %c<br><small>", model_colour[m], 'A' + m);
        html_esc(f, r->model_file[m]);
        fprintf(f, "</small></th>");
    }
    fprintf(f, "<th>bar (issue 6)</th></tr>\n");
    if (r->has_truth) {
        ROW("PSNR mean / min (dB)", "", "%.2f / %.2f", s->psnr_mean, s->psnr_min);
        ROW("PSNR first / last window (dB)", "", "%.2f &rarr; %.2f", s->psnr_first, s->psnr_last);
        fprintf(f, "<tr><th>drift (dB per 1000 frames)</th>");
        for (int m = 0; m < r->n_models; m++) {
            const eval_summary *s = r->sum[m];
            fprintf(f, "<td class=\"%s\">%+.3f &plusmn; %.3f</td>", report_verdict_of(s).drift ? "ok" : "bad", s->drift_db_per_1000,
                    s->drift_se_per_1000);
        }
        fprintf(f, "<td class=\"bar\">&ge; %.1f</td></tr>\n", REPORT_DRIFT_MIN_DB_PER_1000);
        ROW("baseline: the model input itself, PSNR / SSIM / slope", "", "%.2f dB / %.4f / %+.3f dB per 1000", s->base_psnr_mean,
            s->base_ssim_mean, s->base_drift_db_per_1000);
        ROW("SSIM mean / min", "", "%.4f / %.4f", s->ssim_mean, s->ssim_min);
        fprintf(f, "<tr><th>flicker (frame change, x the truth's)</th>");
        for (int m = 0; m < r->n_models; m++) {
            const eval_summary *s = r->sum[m];
            fprintf(f, "<td class=\"%s\">%.3f <small>(%.2f vs %.2f levels)</small></td>", report_verdict_of(s).flicker ? "ok" : "bad",
                    s->flicker, s->change_mean, s->ref_change_mean);
        }
        fprintf(f, "<td class=\"bar\">&le; %.1f</td></tr>\n", REPORT_FLICKER_MAX);
        ROW("colour std, x the truth's: run / worst window", "collapse &lt; 0.25", "%.3f / %.3f", s->colour_std_ratio,
            s->colour_std_window_min);
        ROW("detail, x the truth's: run / window min / max", "collapse &lt; 0.25, explosion &gt; 4", "%.3g / %.3g / %.3g",
            s->detail_ratio, s->detail_window_min, s->detail_window_max);
    } else {
        ROW("frame change (levels / frame)", "", "%.2f <small>(clip %.2f, windows %.2f&ndash;%.2f)</small>", s->change_mean,
            s->ref_change_mean, s->ref_change_range[0], s->ref_change_range[1]);
        ROW("frame change, x the clip's lowest / highest window", "freeze &lt; 0.25, explosion &gt; 4", "%.3g / %.3g",
            s->change_window_min, s->change_window_max);
        ROW("colour std, x the clip's lowest window", "collapse &lt; 0.25", "%.3g", s->colour_std_window_min);
        ROW("detail, x the clip's lowest / highest window", "collapse &lt; 0.25, explosion &gt; 4", "%.3g / %.3g",
            s->detail_window_min, s->detail_window_max);
        ROW("windows outside the clip's range", "", "%.1f%%", 100 * s->out_of_range);
        ROW("colour std / detail, x the clip's (run)", "", "%.3f / %.3g", s->colour_std_ratio, s->detail_ratio);
    }
    ROW("colour mean bias R / G / B (levels)", "", "%+.1f / %+.1f / %+.1f", s->mean_bias[0], s->mean_bias[1], s->mean_bias[2]);
    ROW("std ratio R / G / B", "", "%.2f / %.2f / %.2f", s->std_ratio[0], s->std_ratio[1], s->std_ratio[2]);
    const char *fl[3] = {"collapse", "explosion", "freeze"};
    for (int k = 0; k < 3; k++) {
        fprintf(f, "<tr><th>%s</th>", fl[k]);
        for (int m = 0; m < r->n_models; m++)
            cell_flag(f, k == 0 ? &r->sum[m]->collapse : k == 1 ? &r->sum[m]->explosion : &r->sum[m]->freeze);
        fprintf(f, "<td class=\"bar\">%s</td></tr>\n", k == 0 || !r->has_truth ? "none" : "(reported)");
    }
    ROW("model time (ms / frame): mean / p50", "", "%.1f / %.1f", s->ms_mean, s->ms_p50);
    fprintf(f, "<tr><th>verdict</th>");
    for (int m = 0; m < r->n_models; m++) verdict_cell(f, report_verdict_of(r->sum[m]).all);
    fprintf(f, "<td class=\"bar\">%s</td></tr>\n</table>\n",
            r->has_truth ? "drift, no collapse, flicker" : "no freeze, explosion or collapse");
}

/* x[i] windowed (means of win values), drawn at the window's last frame */
typedef struct wseries { double *y; long n, x0; } wseries;
static wseries windowed(const double *x, int n, int win) {
    wseries w = {NULL, 0, 0};
    int cnt = metric_window_count(n, win);
    if (!cnt || !(w.y = malloc((size_t)cnt * sizeof *w.y))) return w;
    metric_window_means(x, n, win, w.y);
    w.n = cnt, w.x0 = n - cnt;
    return w;
}

/* windowed x / windowed ref */
static wseries windowed_ratio(const double *x, const double *ref, int n, int win) {
    wseries a = windowed(x, n, win), b = windowed(ref, n, win);
    for (long i = 0; i < a.n && b.y; i++) a.y[i] = b.y[i] > 0 ? a.y[i] / b.y[i] : NAN;
    free(b.y);
    return a;
}

static void plots(FILE *f, const eval_report *r) {
    long N = r->frames;
    int n = r->ref->n, nm = r->n_models, win = r->thr->window;
    const eval_series *ref = r->ref;
    const char *refname = r->has_truth ? "truth" : "clip";
    char lab[2][64];
    for (int m = 0; m < nm; m++) snprintf(lab[m], sizeof lab[m], "model %c", 'A' + m);
    pline L[16];
    hline h[4];
    int k;
    if (r->has_truth) {
        double *fit[2] = {NULL, NULL};
        k = 0;
        for (int m = 0; m < nm; m++) L[k++] = (pline){r->out[m]->psnr, n, 0, model_colour[m], NULL, 1.2, 1, lab[m]};
        for (int m = 0; m < nm; m++) {
            const metric_fit *ft = &r->sum[m]->drift;
            if (!isfinite(ft->slope) || !(fit[m] = malloc((size_t)n * sizeof(double)))) continue;
            for (int i = 0; i < n; i++) fit[m][i] = ft->intercept + ft->slope * i;
            static char fl[2][64];
            snprintf(fl[m], sizeof fl[m], "least-squares fit %c (%+.2f dB/1000)", 'A' + m, r->sum[m]->drift_db_per_1000);
            L[k++] = (pline){fit[m], n, 0, "#000", m ? "2 3" : "6 3", 1.2, 0.8, fl[m]};
        }
        L[k++] = (pline){ref->psnr, n, 0, "#999", "3 3", 1.0, 1, "model input (baseline)"};
        svg_plot(f, "PSNR against the truth (all three channels)", "dB", N, L, k, NULL, 0, 0);
        for (int m = 0; m < 2; m++) free(fit[m]);
        k = 0;
        for (int m = 0; m < nm; m++) L[k++] = (pline){r->out[m]->ssim, n, 0, model_colour[m], NULL, 1.2, 1, lab[m]};
        L[k++] = (pline){ref->ssim, n, 0, "#999", "3 3", 1.0, 1, "model input (baseline)"};
        svg_plot(f, "SSIM against the truth (luma, 11x11 Gaussian window)", "SSIM", N, L, k, NULL, 0, 0);
    }
    /* channel means */
    k = 0;
    static char cl[3][3][48];
    for (int c = 0; c < 3; c++) {
        snprintf(cl[2][c], sizeof cl[2][c], "%s %s", refname, chan_name[c]);
        L[k++] = (pline){ref->mean[c], n, 0, chan_colour[c], "5 3", 1.0, 0.9, cl[2][c]};
        for (int m = 0; m < nm; m++) {
            snprintf(cl[m][c], sizeof cl[m][c], "%c %s", 'A' + m, chan_name[c]);
            L[k++] = (pline){r->out[m]->mean[c], n, 0, chan_colour[c], m ? "1 2" : NULL, m ? 1.6 : 1.3, 1, cl[m][c]};
        }
    }
    svg_plot(f, "Channel means (colour drift)", "level", N, L, k, NULL, 0, 0);

    /* colour std, detail, change: per frame; for dream, 50-frame windows against the clip's range */
    struct { const char *title, *unit; int logy; size_t off; int change; } q[3] = {
        {"Colour: standard deviation, mean of R G B (collapse)", "level", 0, offsetof(eval_series, colour_std), 0},
        {"Detail: mean squared Laplacian of luma (detail loss, noise blow-up)", "level^2", 1, offsetof(eval_series, detail), 0},
        {"Frame change: mean |frame - previous frame| (flicker, freeze)", "level", 0, offsetof(eval_series, change), 1},
    };
    for (int j = 0; j < 3; j++) {
        const double *rs = *(double *const *)((const char *)ref + q[j].off);
        k = 0;
        wseries ws[3] = {{0}};
        int nh = 0;
        char title[200];
        if (r->has_truth) {
            L[k++] = (pline){rs, n, 0, "#333", "5 3", 1.2, 1, "truth"};
            for (int m = 0; m < nm; m++)
                L[k++] = (pline){*(double *const *)((const char *)r->out[m] + q[j].off), n, 0, model_colour[m], NULL, 1.2, 1, lab[m]};
            snprintf(title, sizeof title, "%s, per frame", q[j].title);
        } else {
            int o = q[j].change; /* change starts at frame 1 */
            ws[2] = windowed(rs + o, n - o, win);
            ws[2].x0 += o;
            L[k++] = (pline){ws[2].y, ws[2].n, ws[2].x0, "#333", "5 3", 1.2, 1, "clip (window mean)"};
            for (int m = 0; m < nm; m++) {
                const double *ms = *(double *const *)((const char *)r->out[m] + q[j].off);
                L[k++] = (pline){ms + o, n - o, o, model_colour[m], NULL, 0.8, 0.35, NULL};
                ws[m] = windowed(ms + o, n - o, win);
                ws[m].x0 += o;
                L[k++] = (pline){ws[m].y, ws[m].n, ws[m].x0, model_colour[m], NULL, 1.8, 1, lab[m]};
            }
            const eval_summary *s = r->sum[0];
            const double *rng = j == 0 ? s->ref_colour_std_range : j == 1 ? s->ref_detail_range : s->ref_change_range;
            if (j != 2) h[nh++] = (hline){r->thr->collapse * rng[0], "#b30000", "collapse"};
            if (j != 0) h[nh++] = (hline){r->thr->explosion * fmax(rng[1], r->thr->floor_level), "#b30000", "explosion"};
            if (j == 2 && rng[0] >= r->thr->min_motion) h[nh++] = (hline){r->thr->freeze * rng[0], "#1f4e99", "freeze"};
            snprintf(title, sizeof title, "%s: %d-frame window means (thin: per frame), bounds from the clip's range", q[j].title, win);
        }
        svg_plot(f, title, q[j].unit, N, L, k, h, nh, q[j].logy);
        for (int m = 0; m < 3; m++) free(ws[m].y);
    }
    if (r->has_truth) { /* the windowed ratios the flags are computed from */
        wseries ws[2][3] = {{{0}}};
        static char rl[2][3][48];
        const char *what[3] = {"colour std", "detail", "frame change"};
        const char *dash[3] = {NULL, "6 3", "2 2"};
        k = 0;
        for (int m = 0; m < nm; m++) {
            ws[m][0] = windowed_ratio(r->out[m]->colour_std, ref->colour_std, n, win);
            ws[m][1] = windowed_ratio(r->out[m]->detail, ref->detail, n, win);
            ws[m][2] = windowed_ratio(r->out[m]->change + 1, ref->change + 1, n - 1, win);
            ws[m][2].x0 += 1;
            for (int j = 0; j < 3; j++) {
                snprintf(rl[m][j], sizeof rl[m][j], "%c %s", 'A' + m, what[j]);
                L[k++] = (pline){ws[m][j].y, ws[m][j].n, ws[m][j].x0, m ? model_colour[1] : chan_colour[j], dash[j], 1.4, 1, rl[m][j]};
            }
        }
        int nh = 0;
        h[nh++] = (hline){r->thr->collapse, "#b30000", "collapse / freeze"};
        h[nh++] = (hline){r->thr->explosion, "#b30000", "explosion"};
        h[nh++] = (hline){1.0, "#777", "= truth"};
        char title[160];
        snprintf(title, sizeof title, "Output / truth, %d-frame window means (what the flags test)", win);
        svg_plot(f, title, "ratio", N, L, k, h, nh, 1);
        for (int m = 0; m < nm; m++)
            for (int j = 0; j < 3; j++) free(ws[m][j].y);
    }
    k = 0;
    for (int m = 0; m < nm; m++) L[k++] = (pline){r->out[m]->ms, n, 0, model_colour[m], NULL, 1.0, 1, lab[m]};
    svg_plot(f, "Model time per frame (mg_stream_step)", "ms", N, L, k, NULL, 0, 0);
}

static mg_status write_html(const eval_report *r) {
    char path[4200];
    snprintf(path, sizeof path, "%s/index.html", r->dir);
    afile af;
    MG_TRY(afile_open(&af, path));
    FILE *f = af.fp;
    fprintf(f, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>mirage eval: ");
    html_esc(f, r->prompt);
    fprintf(f, " on ");
    html_esc(f, r->input);
    fprintf(f, "</title>\n<style>\n"
               "body{font-family:sans-serif;max-width:1000px;margin:1em auto;padding:0 1em;color:#222}\n"
               "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
               "font-size:13px;vertical-align:top}\n"
               "th{background:#f4f4f4;font-weight:normal}td.ok{background:#e6f4e6}td.bad{background:#f9dada}"
               "td.bar{color:#555}\n"
               "figure{margin:1.2em 0}figcaption{font-weight:bold;font-size:14px;margin-bottom:2px}\n"
               ".legend{font-size:12px}.legend span{margin-right:14px;white-space:nowrap}\n"
               ".strip img{image-rendering:pixelated;border:1px solid #ccc}.note{color:#555;font-size:13px}\n"
               "</style></head><body>\n");
    fprintf(f, "<h1>mirage eval: <code>");
    html_esc(f, r->prompt);
    fprintf(f, "</code>, %ld frames</h1>\n<table>\n", r->frames);
    for (int m = 0; m < r->n_models; m++) {
        fprintf(f, "<tr><th>model %c</th><td style=\"color:%s\">", 'A' + m, model_colour[m]);
        html_esc(f, r->model_file[m]);
        fprintf(f, " (");
        html_esc(f, r->model_desc[m]);
        fprintf(f, ")</td></tr>\n");
    }
    fprintf(f, "<tr><th>input</th><td>");
    html_esc(f, r->input);
    fprintf(f, " (");
    html_esc(f, r->input_desc);
    fprintf(f, ")");
    if (r->clip_frames) fprintf(f, "; %ld frames, played back and forth", r->clip_frames);
    fprintf(f, "</td></tr>\n<tr><th>prompt</th><td>");
    html_esc(f, r->prompt);
    fprintf(f, ": ");
    html_esc(f, r->degradation);
    fprintf(f, "</td></tr>\n<tr><th>run</th><td>%dx%d, %d step%s, ring %d, guidance %g, seed %llu, ", r->width, r->height, r->steps,
            r->steps == 1 ? "" : "s", r->ring, r->guidance, (unsigned long long)r->seed);
    html_esc(f, r->device);
    fprintf(f, " (mirage %s: ", MG_VERSION);
    html_esc(f, r->build);
    fprintf(f, "), %.1f s</td></tr>\n</table>\n", r->wall_s);

    fprintf(f, "<h2>Summary</h2>\n");
    summary_table(f, r);
    fprintf(f, "<p class=\"note\">Windows are %d frames. Definitions of every number: docs/EVAL.md in the mirage "
               "repository; every number is also in <a href=\"metrics.json\">metrics.json</a>.</p>\n", r->thr->window);

    fprintf(f, "<h2>Frames</h2>\n<p class=\"note\">Columns: %s", r->has_truth ? "model input" : "clip frame (dropped: dream ignores its input)");
    for (int m = 0; m < r->n_models; m++) fprintf(f, " | output %c", 'A' + m);
    if (r->has_truth) fprintf(f, " | truth");
    fprintf(f, ".</p>\n");
    int nc = strip_columns(r), SW = nc * r->width + (nc - 1) * STRIP_GAP, zoom = r->width <= 128 ? 2 : 1;
    for (int i = 0; i < r->n_strips; i++) {
        char name[64];
        strip_name(name, sizeof name, r->strip_frame[i]);
        fprintf(f, "<div class=\"strip\"><p>frame %ld</p><img src=\"%s\" width=\"%d\" height=\"%d\" alt=\"frame %ld\"></div>\n",
                r->strip_frame[i], name, SW * zoom, r->height * zoom, r->strip_frame[i]);
    }
    fprintf(f, "<h2>Plots</h2>\n");
    plots(f, r);
    fprintf(f, "</body></html>\n");
    return afile_commit(&af);
}

mg_status report_write(const eval_report *r) {
    MG_TRY(files_mkdir_p(r->dir));
    for (int i = 0; i < r->n_strips; i++) MG_TRY(write_strip(r, i));
    MG_TRY(write_json(r));
    return write_html(r);
}
