/* mirage — real-time video diffusion on live streams. The public C API.
 *
 * A model (mg_model) is loaded once and is read-only afterwards: any number of streams
 * (mg_stream) may share it, each owning its KV ring, RNG, frame counter and scratch.
 * Every call returns an mg_status; mg_last_error() holds a message that names the file,
 * the tensor, what was expected and what was found. The library never exits or aborts. */
#ifndef MIRAGE_H
#define MIRAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MG_VERSION "0.1.0"

typedef enum mg_status {
    MG_OK = 0,
    MG_ERR_ARG,         /* a bad argument: unknown name, out-of-range value */
    MG_ERR_IO,          /* a file could not be opened, read or written */
    MG_ERR_FORMAT,      /* a file is not what it claims: bad header, offsets, dtype */
    MG_ERR_SHAPE,       /* a tensor or frame has the wrong shape */
    MG_ERR_NOMEM,       /* an allocation failed */
    MG_ERR_UNSUPPORTED, /* the feature is not in this build (e.g. CUDA) */
    MG_ERR_DEVICE,      /* the device failed (CUDA error) */
    MG_ERR_EOF,         /* end of input (not an error for a reader loop) */
} mg_status;

const char *mg_strerror(mg_status s);
/* The detailed message of the last failure on this thread ("" if none). */
const char *mg_last_error(void);

typedef struct mg_model mg_model;
typedef struct mg_stream mg_stream;

typedef enum mg_device { MG_DEVICE_CPU = 0, MG_DEVICE_CUDA = 1 } mg_device;

/* The sizes of a model, as stored in its weights file. */
typedef struct mg_config {
    char name[16]; /* tiny, s, b, 1b or custom */
    int tae_ch;    /* autoencoder width */
    int z_ch;      /* latent channels Z */
    int d;         /* DiT width */
    int layers;    /* DiT blocks L */
    int heads;     /* attention heads h */
    int patch;     /* patch size p (2) */
    int ring;      /* default history frames K */
    float sigma_ctx, shift, rope_theta;
} mg_config;

/* Fills *cfg with a named config (tiny, s, b, 1b). */
mg_status mg_config_named(const char *name, mg_config *cfg);

mg_status mg_model_load(const char *path, mg_model **out);
void mg_model_free(mg_model *m);
const mg_config *mg_model_config(const mg_model *m);
size_t mg_model_params(const mg_model *m);
size_t mg_model_bytes(const mg_model *m);           /* host memory held by the weights */
int mg_model_prompt_count(const mg_model *m);
const char *mg_model_prompt_name(const mg_model *m, int i);

/* Writes a freshly initialised model (see docs/ARCHITECTURE.md, Initialisation).
 * full_random = 0 gives adaLN-zero (what training starts from). The file appears
 * whole or not at all (written to a temporary name, then renamed). */
mg_status mg_model_init_file(const char *path, const mg_config *cfg, uint64_t seed, int full_random);

typedef struct mg_stream_opts {
    int width, height;  /* frame size, multiples of 16 */
    int steps;          /* denoising steps per frame (>= 1) */
    int ring;           /* history frames K (0: the model's default) */
    float guidance;     /* classifier-free guidance scale; 1 = off */
    uint64_t seed;      /* noise seed */
    const char *prompt; /* prompt name (NULL: the first after "none") */
    mg_device device;
} mg_stream_opts;

mg_stream_opts mg_stream_opts_default(void);
mg_status mg_stream_new(const mg_model *m, const mg_stream_opts *opts, mg_stream **out);
void mg_stream_free(mg_stream *s);
/* One frame: in_rgb and out_rgb are height x width x 3 bytes, RGB interleaved (in_rgb may be
 * NULL under the "dream" prompt). Equals mg_stream_submit then mg_stream_collect; MG_ERR_ARG
 * while frames submitted with mg_stream_submit are not collected yet. */
mg_status mg_stream_step(mg_stream *s, const uint8_t *in_rgb, uint8_t *out_rgb);
/* Pipelined frames, so that the next frame's upload and the last one's download overlap the
 * GPU's work (--device cuda; the CPU computes a frame at its submit). mg_stream_submit queues a
 * frame and returns once in_rgb is copied (the caller may reuse its buffer at once);
 * mg_stream_collect writes the output of the oldest frame submitted, waiting until it is done.
 * At most 2 frames are in flight: a third submit, or a collect with none in flight, fails with
 * MG_ERR_ARG and changes nothing. A frame's output is exactly what mg_stream_step would have
 * given for it: its noise is drawn, and the prompt, dream and reset in force are taken, at its
 * submit (calls in between apply to the frames submitted after them). mg_stream_frame_index
 * counts frames submitted; mg_stream_last_timing describes the last frame collected (total_ms:
 * from the start of its submit to the end of its collect). */
mg_status mg_stream_submit(mg_stream *s, const uint8_t *in_rgb);
mg_status mg_stream_collect(mg_stream *s, uint8_t *out_rgb);
mg_status mg_stream_set_prompt(mg_stream *s, const char *name);
const char *mg_stream_prompt(const mg_stream *s);
void mg_stream_reset(mg_stream *s); /* forget the history (empty ring, frame 0) */
size_t mg_stream_bytes(const mg_stream *s); /* memory held by this stream */
int64_t mg_stream_frame_index(const mg_stream *s);

/* Milliseconds spent in each part of the last mg_stream_step (or frame collected). */
typedef struct mg_step_timing {
    double encode_ms;
    double step_ms[16]; /* denoise step i (first 16 steps) */
    double refresh_ms;  /* KV refresh */
    double decode_ms;
    double total_ms;
} mg_step_timing;
void mg_stream_last_timing(const mg_stream *s, mg_step_timing *t);

/* What this build contains, e.g. "openmp openblas ffmpeg" (for --version and logs). */
const char *mg_build_features(void);

#ifdef __cplusplus
}
#endif
#endif
