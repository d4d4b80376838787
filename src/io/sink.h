/* Where frames go. Every output — a video file through FFmpeg (.mp4, .mkv), a y4m file or
 * stdout, the SDL2 preview window, nothing at all — is a `sink`, so the run loop treats them
 * alike: open at a size, write frames with their timestamps, close.
 *
 *   FILE.mp4, FILE.mkv  H.264 (libx264 if present, else another H.264 encoder) through
 *                       libavformat, with the source's timestamps (FFmpeg builds only)
 *   FILE.y4m            y4m (src/io/y4m.h); y4m has no timestamps: frames at the nominal rate
 *   -                   y4m on stdout
 *   window              an SDL2 preview with frame rate, latency and prompt drawn on it
 *   null                discards frames (timing runs)
 *
 * Files are written to "PATH.tmp.<pid>" and renamed onto PATH when closed, so an interrupted run
 * never leaves a half-written file where a good one was. sink_close always finalises what was
 * written — also after a failed write (full disk) — so every frame written before the failure
 * stays playable (mp4 is written fragmented for that reason: see ffmpeg_out.c); only a sink that
 * wrote no frame at all leaves nothing behind. A failed file never replaces an earlier file at
 * PATH: it is kept beside it, as sink_partial_path names it (the earlier file stays as it was). Writing never allocates. A sink is used by one
 * thread at a time (open, writes and close may be on different threads, one after another). */
#ifndef MG_IO_SINK_H
#define MG_IO_SINK_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mirage.h"

/* sink_write may read up to this many bytes past the end of a frame (FFmpeg's swscale reads
 * ahead with wide loads): allocate frames with that much slack. */
#define SINK_RGB_PAD 256

typedef struct sink_opts {
    int width, height;     /* frame size written */
    int fps_num, fps_den;  /* nominal frame rate */
    int tb_num, tb_den;    /* unit of the pts given to sink_write */
    const char *title;     /* window title */
} sink_opts;

/* What the window draws over the picture (other sinks ignore it). */
typedef struct sink_overlay {
    int64_t frame;       /* frames written so far */
    double fps;          /* frames written per second */
    double latency_ms;   /* end-to-end latency of this frame */
    int64_t dropped;     /* frames dropped so far */
    const char *prompt;  /* the prompt this frame was made with */
} sink_overlay;

/* Events a sink can report back (the window's keys). */
typedef enum sink_event {
    SINK_EV_NONE = 0,
    SINK_EV_QUIT,        /* window closed, q or Esc */
    SINK_EV_PROMPT,      /* number key: prompt row *arg */
    SINK_EV_NEXT_PROMPT, /* p: the next prompt */
} sink_event;

typedef struct sink sink;
struct sink {
    char name[256];          /* as given, for messages */
    char desc[256];          /* what is written, e.g. "mp4 h264 (libx264) 512x256" */
    int64_t frames_written;
    int keeps_earlier;       /* PATH was a regular file at open: after a failed write the frames go
                                to sink_partial_path(PATH), not onto PATH */
    double convert_ms;       /* the last write's RGB -> encoder pixel format conversion */
    double encode_ms;        /* the last write's encoding and muxing (or writing) */

    /* implementation */
    mg_status (*write)(sink *k, const uint8_t *rgb, int64_t pts, const sink_overlay *ov);
    sink_event (*poll)(sink *k, int *arg); /* NULL: no events */
    mg_status (*close)(sink *k);           /* finalise and free */
};

/* Opens an output by its spec (above). MG_ERR_ARG for a spec that names no known output,
 * MG_ERR_UNSUPPORTED when it needs a part missing from this build (FFmpeg, SDL2) or a display,
 * MG_ERR_IO when the file cannot be created. */
mg_status sink_open(sink **out, const char *spec, const sink_opts *o);
/* Writes one frame (height x width x 3 RGB24, then SINK_RGB_PAD readable bytes) presented at
 * pts (units of tb, increasing). */
mg_status sink_write(sink *k, const uint8_t *rgb, int64_t pts, const sink_overlay *ov);
/* The next pending event (SINK_EV_NONE when there is none). */
sink_event sink_poll(sink *k, int *arg);
/* Finalises (see above) and frees the sink; NULL is fine. The status says whether the output
 * is complete: MG_OK, or the failure (the frames written before it are kept all the same). */
mg_status sink_close(sink *k);

/* Where a failed file is kept when PATH already held one: "NAME.partial.EXT" beside it
 * (v.mkv -> v.partial.mkv, so it still plays), "PATH.partial" without an extension; "" when
 * that does not fit in n bytes. */
static inline void sink_partial_path(char *out, size_t n, const char *path) {
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    size_t len = strlen(path), stem = dot && dot > (slash ? slash + 1 : path) ? (size_t)(dot - path) : len;
    if (len + sizeof ".partial" > n) {
        if (n) out[0] = 0;
        return;
    }
    memcpy(out, path, stem);
    memcpy(out + stem, ".partial", 8);
    memcpy(out + stem + 8, path + stem, len - stem + 1);
}

/* 1 when spec names an output sink_open knows (whether or not this build can write it). */
int sink_spec_known(const char *spec);

/* Constructors behind sink_open (stubs without FFmpeg / SDL2). */
mg_status sink_open_ffmpeg(sink **out, const char *path, const sink_opts *o);
mg_status sink_open_window(sink **out, const sink_opts *o);
int sink_have_ffmpeg(void);
int sink_have_window(void);

#endif
