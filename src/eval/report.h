/* The evaluation report: DIR/index.html (summary table, inline SVG plots of every metric against
 * frame index, strips of frames; no scripts, nothing fetched from a network), DIR/metrics.json
 * (every number: configuration, thresholds, per-model summaries, flags, acceptance verdicts and
 * every per-frame series) and DIR/strip_NNNNNN.png. Every file is written atomically; index.html
 * is written last, so a report with an index.html is complete. The JSON layout is documented in
 * docs/EVAL.md. */
#ifndef MG_EVAL_REPORT_H
#define MG_EVAL_REPORT_H

#include <stdint.h>

#include "eval/metrics.h"
#include "mirage.h"

#define REPORT_MAX_STRIPS 4

/* The acceptance bars of issue 6, shown as verdicts next to the numbers. */
#define REPORT_DRIFT_MIN_DB_PER_1000 (-0.5)
#define REPORT_FLICKER_MAX 1.5

typedef struct eval_report {
    const char *dir;
    /* configuration (shown and stored as given) */
    const char *input, *input_desc, *prompt, *degradation, *device, *build;
    int n_models;
    const char *model_file[2];  /* as given ("(random tiny)" for --config) */
    const char *model_desc[2];  /* e.g. "tiny, 4.78 M params" */
    int width, height, steps, ring;
    float guidance;
    uint64_t seed;
    long frames;                /* N */
    long clip_frames;           /* the input clip's length if it ended before N, else 0 */
    int has_truth;
    double wall_s;
    const eval_thresholds *thr;
    /* results */
    const eval_series *out[2];
    const eval_summary *sum[2];
    const eval_series *ref;     /* the truth (has_truth) or the input clip (dream) */
    /* strips: frame numbers and the pictures (W x H x 3 each) */
    int n_strips;
    long strip_frame[REPORT_MAX_STRIPS];
    const uint8_t *strip_input[REPORT_MAX_STRIPS];
    const uint8_t *strip_out[2][REPORT_MAX_STRIPS];
    const uint8_t *strip_truth[REPORT_MAX_STRIPS]; /* the truth, or the clip frame for dream */
} eval_report;

/* Writes the report into r->dir (created if missing). */
mg_status report_write(const eval_report *r);

/* The acceptance verdicts of one model (issue 6): drift no worse than -0.5 dB per 1000 frames,
 * no collapse, flicker within 1.5x the truth's; for dream: no freeze, explosion or collapse.
 * Each is 1 (pass) or 0; *all the conjunction. */
typedef struct report_verdict { int drift, flicker, collapse, explosion, freeze, all; } report_verdict;
report_verdict report_verdict_of(const eval_summary *s);

#endif
