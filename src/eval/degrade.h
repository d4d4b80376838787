/* What every prompt does, as a pair of functions on real frames: the model's input
 * (degrade_apply) and the target it should produce (style_apply). The evaluation builds its
 * ground truth with them (src/eval/eval.c), and the trainer (issue 5) builds its (input, target)
 * pairs with the same code, so the two can never disagree about what a prompt means.
 *
 *   prompt         model input (degrade_apply)              target (style_apply)
 *   none           the frame                                the frame
 *   colorize       grey: BT.601 luma in all three channels  the frame
 *   upscale        4x box-downsampled, bilinear back up     the frame
 *   restore        blur, noise, JPEG-like 8x8 DCT blocks    the frame
 *   style:toon     the frame                                bilateral smoothing, 6 levels a
 *                                                           channel, dark Sobel edges
 *   style:sketch   the frame                                grey pencil: luma dodged by its
 *                                                           blurred negative
 *   style:thermal  the frame                                luma through an ironbow colour map
 *   dream          the frame (the model drops its input)    the frame (no per-frame truth:
 *                                                           degrade_has_truth() is 0)
 *
 * Frames are H x W x 3 RGB24, row-major, any W, H >= 1. `in` and `out` may be the same buffer.
 * Everything is deterministic: integer arithmetic where it matters (grey, down/upsampling) and
 * fixed-order float arithmetic elsewhere, so one build gives the same bytes for the same
 * (frame, prompt, seed) every time; restore's noise goes through libm (Box-Muller), so another
 * libm may move a pixel by a level. The compression step is a plain-C JPEG model (not
 * libjpeg) so that it does not depend on what a build found. Parameters and the reasons for
 * them are in docs/EVAL.md. These functions allocate scratch (malloc) and free it before
 * returning: use them to make data, not inside a real-time frame loop. */
#ifndef MG_EVAL_DEGRADE_H
#define MG_EVAL_DEGRADE_H

#include <stdint.h>

#include "mirage.h"

/* The strength of each degradation. degrade_apply uses degrade_params_default(); a trainer
 * that wants variety draws its own and calls degrade_apply_params. */
typedef struct degrade_params {
    int scale;            /* upscale: down-sampling factor, 1..16 (4) */
    int nearest;          /* upscale: 1 = nearest-neighbour back up, 0 = bilinear (0) */
    float blur_sigma;     /* restore: Gaussian blur sigma in pixels, 0 = none (1.0) */
    float noise_sigma;    /* restore: Gaussian noise sigma in levels (0..255), 0 = none (8) */
    int jpeg_quality;     /* restore: JPEG quality 1..100 (IJG scaling), 0 = none (30) */
} degrade_params;

degrade_params degrade_params_default(void);

/* 1 when this file defines the prompt (the table above), else 0. */
int degrade_known(const char *prompt);
/* 1 when a per-frame ground truth exists (every known prompt but dream). */
int degrade_has_truth(const char *prompt);
/* One line for reports: what the model sees and what it is compared with. "" if unknown. */
const char *degrade_describe(const char *prompt);

/* The model's input for the real frame `in`. seed drives the random parts (restore's noise):
 * give each frame its own seed. MG_ERR_ARG for an unknown prompt or a bad size,
 * MG_ERR_NOMEM if scratch cannot be allocated. */
mg_status degrade_apply(const char *prompt, const uint8_t *in, uint8_t *out, int W, int H, uint64_t seed);
mg_status degrade_apply_params(const char *prompt, const uint8_t *in, uint8_t *out, int W, int H, uint64_t seed,
                               const degrade_params *p);
/* The target for the real frame `in`: the style's filter for style:*, the frame itself for
 * every other prompt. Deterministic, no seed. */
mg_status style_apply(const char *prompt, const uint8_t *in, uint8_t *out, int W, int H);

/* What another implementation of the styles needs to give the same bytes (the trainer makes
 * the toon and sketch targets on the GPU: src/cuda/style.cu). */
enum { STYLE_NONE = 0, STYLE_TOON = 1, STYLE_SKETCH = 2, STYLE_THERMAL = 3 };
int style_kind(const char *prompt); /* STYLE_*: STYLE_NONE for every prompt that is not a style */
#define STYLE_SKETCH_MAX_R 48
typedef struct style_consts {
    float toon_ws[25];   /* toon's spatial weights, [(dy + 2) * 5 + dx + 2] */
    float toon_wr[766];  /* its range weights, [d], d = |dr| + |dg| + |db| rounded */
    float sketch_k[2 * STYLE_SKETCH_MAX_R + 1]; /* sketch's Gaussian, taps -r..r */
    int sketch_r;
} style_consts;
void style_consts_get(style_consts *c);

/* The building blocks, for tests and for the trainer's own mixes. Each works in place. */
void degrade_grey(uint8_t *rgb, int W, int H);                            /* BT.601 luma, (77R+150G+29B+128)>>8 */
mg_status degrade_resample(uint8_t *rgb, int W, int H, int scale, int nearest); /* box down, back up */
mg_status degrade_blur(uint8_t *rgb, int W, int H, float sigma);          /* separable Gaussian, edges clamped */
mg_status degrade_noise(uint8_t *rgb, int W, int H, float sigma, uint64_t seed);
mg_status degrade_jpeg(uint8_t *rgb, int W, int H, int quality);          /* YCbCr 4:2:0, 8x8 DCT quantised */

#endif
