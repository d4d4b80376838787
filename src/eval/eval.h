/* The long-rollout evaluation behind `mirage eval` (issue 6): run one model (or two, for an
 * ablation) over N frames of a real clip, compare every output with the prompt's ground truth
 * made from the same frame (src/eval/degrade.h), and write the report (src/eval/report.h).
 *
 * The clip is any source (src/io/source.h). When it ends before N frames it is played back and
 * forth (0 1 .. L-1 L-2 .. 1 0 1 ..), so the motion never jumps; its frames are kept in memory
 * for that (L x W x H x 3 bytes: the whole clip, or the first N frames of a longer one), except
 * for sources that never end (testsrc, cameras), which are read straight through.
 *
 * Per frame f: clip frame x; truth = style_apply(prompt, x); model input =
 * degrade_apply(prompt, x, seed of f); each model steps its own stream (same seed, so an ablation
 * sees the same noise); metrics of each output against the truth (dream: statistics only, the
 * clip's own as the reference). */
#ifndef MG_EVAL_EVAL_H
#define MG_EVAL_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "eval/metrics.h"
#include "io/source.h"
#include "mirage.h"

typedef struct eval_opts {
    const char *prompt;         /* the prompt evaluated (degrade.h must define it) */
    long frames;                /* N, >= 1 */
    int steps, ring;            /* per frame denoising steps; history frames (0: the model's) */
    float guidance;
    uint64_t seed;              /* stream noise and degradation noise */
    mg_device device;
    const char *report_dir;
    const char *input_label;    /* the input as given, for the report */
    const char *model_label[2]; /* the model files as given */
    FILE *log;                  /* configuration, progress and summary lines (NULL: silent) */
    int progress_every;         /* frames between progress lines (100) */
    eval_thresholds thr;
    int autoencoder;            /* 1: each model's autoencoder alone (encode, decode) instead of the
                                 * frame step: the ceiling of every prompt (CPU, prompt none) */
} eval_opts;

eval_opts eval_opts_default(void);

/* Runs model a (and b when not NULL) over o->frames frames of src, whose frame size has been
 * chosen (source_set_size; multiples of 16), and writes the report. sums, when not NULL,
 * receives each model's summary (sums[1] only with b). */
mg_status eval_run(const eval_opts *o, source *src, const mg_model *a, const mg_model *b, eval_summary *sums);

/* Clip frame shown at sequence position i of a clip of L frames played back and forth. */
long eval_pingpong(long i, long L);

#endif
