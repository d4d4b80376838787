/* The built-in test scene: a procedural moving picture that looks enough like real video for
 * a colourise/restore model to chew on, with no input file and no FFmpeg.
 *
 * Frame f of a W x H scene is a pure function of (f, W, H): a softly lit colour gradient that
 * pans, a sliding panel of anti-aliased checker texture, a band of drifting diagonal stripes,
 * three shaded balls and two rotating rounded boxes on Lissajous paths (soft, anti-aliased
 * edges, drawn back to front), a wandering highlight and a lens vignette. Everything scales
 * with the frame size; motion is a few pixels per frame at 256x256, so consecutive frames
 * differ but are strongly correlated. All motions are periodic with integer periods in frames,
 * and phases are reduced in float64, so frame 10^12 looks as good as frame 10.
 *
 * Deterministic on one build; across compilers or libms a pixel may differ by one level
 * (sinf/sqrtf rounding, FMA contraction), so don't hash frames across machines. */
#ifndef MG_IO_TESTSRC_H
#define MG_IO_TESTSRC_H

#include <stdint.h>

#include "mirage.h"

/* Renders frame `frame` into rgb (H x W x 3, RGB interleaved). Any W, H >= 1 (up to 65536);
 * about 0.7 ms for 256x256 on one core at -O3 (budget: 2 ms). MG_ERR_ARG for a NULL buffer
 * or a bad size. */
mg_status testsrc_render(uint8_t *rgb, int W, int H, long frame);

#endif
