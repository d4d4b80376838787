/* The CUDA frame step: what src/model/stream.c does for one frame (encode, N denoise steps
 * against the KV ring, KV refresh, decode; u8 in, u8 out), on the GPU, captured once as a
 * CUDA graph and replayed. A C header: stream.c dispatches here when the build has CUDA. */
#ifndef MG_CUDA_STREAM_H
#define MG_CUDA_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuda_stream cuda_stream;

/* The model's weights on one GPU, in bf16: uploaded once per (model, GPU) and shared by every
 * stream on that GPU, reference-counted. cuda_stream_new takes a reference on the calling
 * thread's current GPU (so N streams on a card cost one model copy plus N stream arenas); a
 * server takes one per GPU at start so the copy stays resident while sessions come and go. */
typedef struct cuda_weights cuda_weights;

/* CUDA devices this process can use; 0 when there are none (no driver, no card). */
int cuda_device_count(void);
/* The card's name ("NVIDIA H100 80GB HBM3"), or "?" when gpu does not exist. */
const char *cuda_device_name(int gpu, char *buf, size_t n);
/* Makes gpu the calling thread's current device: the streams it creates afterwards live there.
 * MG_ERR_UNSUPPORTED with the number of devices when gpu does not exist. */
mg_status cuda_use_device(int gpu);
/* A reference to m's weights on gpu, uploaded if no stream or holder has them there yet.
 * Thread-safe. The calling thread's current device is left as it was. */
mg_status cuda_weights_acquire(const mg_model *m, int gpu, cuda_weights **out);
/* Drops a reference; the last one frees the device copy. NULL is ignored. */
void cuda_weights_release(cuda_weights *w);
size_t cuda_weights_bytes(const cuda_weights *w); /* device bytes of the one copy */
int cuda_weights_refs(const cuda_weights *w);     /* references held now */
long cuda_weights_uploads(void);                  /* uploads done by this process (tests) */

typedef struct cuda_stream_cfg {
    int width, height; /* multiples of 16 */
    int steps;         /* denoising steps */
    int ring;          /* history frames K (resolved: not 0 for "default") */
    float guidance;    /* 1 = off */
} cuda_stream_cfg;

/* Execution modes: replay the captured graph (default); launch the same kernels eagerly;
 * launch eagerly with CUDA events between the components (fills the per-component times). */
enum { CUDA_MODE_GRAPH = 0, CUDA_MODE_EAGER = 1, CUDA_MODE_PROFILE = 2 };

/* On the calling thread's current GPU (cuda_use_device): takes a reference to the shared weights
 * (uploading them if this is the first holder there), allocates the stream's own buffers, plans
 * the GEMMs. Fails with MG_ERR_UNSUPPORTED "no CUDA device found" when there is no usable GPU.
 * Every later call on the stream makes its GPU current first, so any thread may step or free it. */
mg_status cuda_stream_new(const mg_model *m, const cuda_stream_cfg *cfg, cuda_stream **out);
void cuda_stream_free(cuda_stream *cs);
/* One frame. in_rgb: H x W x 3 (ignored in dream mode), out_rgb: H x W x 3; noise and
 * ctx_noise: (H/8, W/8, Z) each, drawn by the caller from the stream's RNG in the CPU order;
 * prompt: the prompt row; dream: the input is dropped (cond = 0). */
mg_status cuda_stream_step(cuda_stream *cs, const uint8_t *in_rgb, uint8_t *out_rgb, const float *noise,
                           const float *ctx_noise, int prompt, int dream);
/* cuda_stream_step in two halves, so that frames overlap: submit copies the frame's input,
 * noise and parameters into one of two pinned buffers and enqueues its upload (a copy stream),
 * its graph and its download (another copy stream), then returns without waiting; collect
 * waits for the oldest frame in flight and copies its output to out_rgb. At most 2 frames in
 * flight: a third submit, or a collect with none, fails with MG_ERR_ARG. step = submit +
 * collect (and fails with frames in flight); both give the same bytes. The prompt, dream flag
 * and frame index (reset) go with each frame as submitted. In profile mode the component times
 * are filled only when the collected frame was the only one in flight. */
mg_status cuda_stream_submit(cuda_stream *cs, const uint8_t *in_rgb, const float *noise, const float *ctx_noise,
                             int prompt, int dream);
mg_status cuda_stream_collect(cuda_stream *cs, uint8_t *out_rgb);
int cuda_stream_in_flight(const cuda_stream *cs); /* frames submitted and not yet collected */
void cuda_stream_reset(cuda_stream *cs);
int64_t cuda_stream_frame_index(const cuda_stream *cs);
void cuda_stream_set_mode(cuda_stream *cs, int mode);
/* Per-component times of the last profiled step; total_ms is the host-to-host time of the
 * last frame collected (from the start of its submit to the end of its collect). */
void cuda_stream_last_timing(const cuda_stream *cs, mg_step_timing *t);
/* GPU time of the last frame collected (events around the graph launch or the eager launches). */
double cuda_stream_last_device_ms(const cuda_stream *cs);
const char *cuda_stream_device_name(const cuda_stream *cs);
size_t cuda_stream_device_bytes(const cuda_stream *cs); /* weights + buffers + workspace */
size_t cuda_stream_own_bytes(const cuda_stream *cs);    /* buffers + workspace: what this stream adds */
int cuda_stream_gpu(const cuda_stream *cs);             /* the device it lives on */
int cuda_stream_fp8(const cuda_stream *cs);             /* 1: the DiT's linears run as e4m3 GEMMs (MG_CUDA_FP8=1) */
/* the deferred KV refresh (MG_CUDA_DEFER, DECISIONS 20): 1 when on; how many frames so far ran
 * the frame before's refresh inside their own step (the others had none pending: the first
 * frame, after a reset, or after a frame that ran its refresh inline) */
int cuda_stream_defers(const cuda_stream *cs);
long long cuda_stream_deferred(const cuda_stream *cs);
const cuda_weights *cuda_stream_weights(const cuda_stream *cs);
/* Device memory in use on the card as the driver reports it (all processes), MiB. */
double cuda_stream_device_used_mib(const cuda_stream *cs);
double cuda_stream_flops(const cuda_stream *cs); /* multiply-adds x 2 of one frame step */
/* The final latent of the last frame, (H/8, W/8, Z), copied to host memory; MG_ERR_ARG while
 * frames are in flight. */
mg_status cuda_stream_latent(const cuda_stream *cs, float *out);

#ifdef __cplusplus
}
#endif
#endif
