/* Quality and stability metrics: per frame (an output against its ground truth), and over a
 * sequence (drift, flicker, windowed collapse / explosion / freeze checks). Definitions, with
 * the reasons for each constant, are in docs/EVAL.md; tests/test_eval.c holds each function to
 * hand-computed values and to an independent double-precision SSIM.
 *
 * Frames are H x W x 3 RGB24 (0..255). Luma, where used, is BT.601 in double precision:
 * Y = 0.299 R + 0.587 G + 0.114 B (not rounded). */
#ifndef MG_EVAL_METRICS_H
#define MG_EVAL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "mirage.h"

/* PSNR of identical frames is infinite; it is reported as this (JSON has no infinity). */
#define METRIC_PSNR_MAX 100.0

/* ---- one frame ------------------------------------------------------------------------- */

double metric_mse(const uint8_t *a, const uint8_t *b, size_t n);  /* mean of (a-b)^2 over n bytes */
double metric_psnr_from_mse(double mse);                          /* 10 log10(255^2 / mse), capped */
double metric_psnr(const uint8_t *a, const uint8_t *b, size_t n);
/* SSIM (Wang et al. 2004) of the two frames' luma: 11x11 Gaussian window, sigma 1.5, weights
 * summing to 1, C1 = (0.01*255)^2, C2 = (0.03*255)^2, population (weighted) moments, averaged
 * over every window that fits inside the frame ("valid": no padding). A frame narrower or
 * shorter than 11 pixels is one window with uniform weights over the whole frame. scratch
 * holds metric_ssim_scratch(W, H) doubles. */
size_t metric_ssim_scratch(int W, int H);
double metric_ssim(const uint8_t *a, const uint8_t *b, int W, int H, double *scratch);
/* Per-channel mean and (population) standard deviation. */
void metric_channel_stats(const uint8_t *rgb, int W, int H, double mean[3], double std[3]);
/* Detail, or high-frequency energy: the mean over interior pixels of the squared 4-neighbour
 * Laplacian of luma, 4Y(x,y) - Y(x-1,y) - Y(x+1,y) - Y(x,y-1) - Y(x,y+1). 0 below 3x3. */
double metric_detail(const uint8_t *rgb, int W, int H);
/* Mean absolute difference over n bytes (frame change between consecutive frames). */
double metric_change(const uint8_t *a, const uint8_t *b, size_t n);

/* ---- sequences ------------------------------------------------------------------------- */

/* Least squares y[i] = intercept + slope * i over the finite y[i], i = 0..n-1. slope_se is the
 * slope's standard error (NaN for fewer than 3 points), r2 the coefficient of determination.
 * All NaN with fewer than 2 finite points. */
typedef struct metric_fit { double slope, intercept, slope_se, r2; int n; } metric_fit;
metric_fit metric_linear_fit(const double *y, int n);

/* Sliding windows of w = min(win, n) consecutive values: window j covers x[j .. j+w-1], for
 * j = 0 .. metric_window_count(n, win)-1 (one window when n < win; 0 when n = 0). */
int metric_window_count(int n, int win);
void metric_window_means(const double *x, int n, int win, double *out);

/* A windowed check of x against a reference: either a series ref (compared window by
 * window) or, when ref is NULL, the constant ref_const. below = 1 flags a window whose mean is
 * under ratio * ref (windows whose ref is under floor are skipped: there is nothing to
 * collapse from); below = 0 flags a window above ratio * max(ref, floor). */
typedef struct metric_window_check {
    int flagged;  /* some window crossed the bound */
    long frame;   /* index of the last value of the first window that did (-1: none) */
    double worst; /* the most extreme x/ref of all windows (min for below, max for above; NaN: none) */
} metric_window_check;
metric_window_check metric_window_check_run(const double *x, const double *ref, double ref_const, int n, int win,
                                            double ratio, double floor, int below);

/* The per-frame record of one image sequence: a model's outputs (with psnr/ssim against the
 * truth), or the truth (psnr/ssim: the model input against it, the do-nothing baseline) or the
 * input clip (dream: psnr and ssim NaN). */
typedef struct eval_series {
    int n, cap;           /* frames pushed, frames allocated */
    double *psnr, *ssim;  /* (cap) against the truth; NaN without one */
    double *mean[3];      /* (cap) per channel mean, R G B */
    double *std[3];       /* (cap) per channel std */
    double *colour_std;   /* (cap) mean of the three std */
    double *detail;       /* (cap) metric_detail */
    double *change;       /* (cap) metric_change to the previous frame; NaN at frame 0 */
    double *ms;           /* (cap) ms to make the frame (the model step); NaN for a truth */
    double *block;        /* private: one allocation for all of the above */
} eval_series;

mg_status eval_series_init(eval_series *s, int cap);
void eval_series_free(eval_series *s);
/* Appends one frame: prev is the previous frame of this sequence (NULL at the first), truth
 * the frame to compare with (NULL: none), ms the time it took (NAN: not timed). scratch holds
 * metric_ssim_scratch(W, H) doubles. Frames past cap are ignored. */
void eval_series_push(eval_series *s, const uint8_t *img, const uint8_t *prev, const uint8_t *truth, int W, int H,
                      double ms, double *scratch);

typedef struct eval_thresholds {
    int window;         /* frames per window (50) */
    double collapse;    /* colour std or detail under this x the reference: collapse (0.25) */
    double explosion;   /* detail or frame change over this x the reference: explosion (4) */
    double freeze;      /* frame change under this x the reference: freeze (0.25) */
    double floor_level; /* references under this (levels; detail: levels^2) are skipped by the
                           collapse check and raised to it by the explosion check (1) */
    double min_motion;  /* a reference changing less than this (levels per frame) has no motion
                           to follow: no freeze check (0.5) */
} eval_thresholds;
eval_thresholds eval_thresholds_default(void);

typedef struct eval_flag {
    int flagged;
    long frame;      /* the frame where it was first seen (end of the first bad window), -1 */
    char why[96];    /* "colour std 0.12x the truth's", "" */
} eval_flag;

/* What a run comes to. With a truth, every comparison is window by window against the truth
 * at the same frames. Without one (dream), the reference is the range of the input clip's own
 * windowed statistics: collapse under collapse x its lowest window, explosion over explosion
 * x its highest, freeze under freeze x its lowest frame change. */
typedef struct eval_summary {
    int frames, has_truth;
    double psnr_mean, psnr_min, psnr_first, psnr_last; /* first/last: the first and last window */
    double ssim_mean, ssim_min;
    metric_fit drift;                 /* PSNR against frame index (slope in dB per frame) */
    double drift_db_per_1000, drift_se_per_1000;
    /* the model input itself scored against the truth (the reference series' psnr, when the
     * caller filled it): how much of the PSNR curve is the footage rather than the model */
    double base_psnr_mean, base_ssim_mean, base_drift_db_per_1000;
    double change_mean, ref_change_mean;
    double flicker;                   /* sum of output change / sum of the reference's */
    double mean_bias[3];              /* mean over frames of output mean - reference mean, R G B */
    double std_ratio[3];              /* mean output std / mean reference std, R G B */
    double colour_std_ratio, detail_ratio; /* over the whole run */
    /* windowed ratios (truth) or windowed values (dream), their extremes */
    double colour_std_window_min, detail_window_min, detail_window_max, change_window_min, change_window_max;
    /* dream: the reference clip's range of windowed values, and how much of the run is outside */
    double ref_colour_std_range[2], ref_detail_range[2], ref_change_range[2];
    double out_of_range;              /* fraction of windows with any of the three outside it */
    eval_flag collapse, explosion, freeze;
    double ms_mean, ms_p50, ms_max;   /* model time per frame */
} eval_summary;

/* out: the model's series (with psnr/ssim when has_truth); ref: the truth's (has_truth; its
 * psnr/ssim, if filled, are the input baseline's) or the input clip's (dream). */
void eval_summarise(const eval_series *out, const eval_series *ref, int has_truth, const eval_thresholds *t,
                    eval_summary *sum);

#endif
