/* Internal stream entry points for tests and tools (the public ones are in mirage.h). */
#ifndef MG_MODEL_STREAM_H
#define MG_MODEL_STREAM_H

#include "mirage.h"

/* One frame with explicit noise (NULL: from the stream's RNG); out_img (H, W, 3) gets the
 * decoder's unclamped output (NULL: kept inside the stream). */
mg_status stream_step_f32(mg_stream *s, const uint8_t *in_rgb, float *out_img, const float *noise,
                          const float *ctx_noise);
/* The final latent of the last frame, (H/8, W/8, Z) (CPU streams). */
const float *stream_latent(const mg_stream *s);
/* The cuda_stream behind a --device cuda stream (src/cuda/cuda_stream.h), else NULL. */
void *stream_cuda(const mg_stream *s);

#endif
