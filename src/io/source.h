/* Where frames come from. Every input — the built-in test scene, y4m files and pipes, anything
 * FFmpeg reads (files, URLs, `pipe:`), a V4L2 camera — is a `source`, so the run loop treats
 * them alike: open, learn the input's own size, choose the frame size, read frames.
 *
 *   testsrc            the built-in moving scene (src/io/testsrc.h), 25 fps
 *   -                  y4m on stdin (src/io/y4m.h)
 *   FILE.y4m           a y4m file (no FFmpeg needed)
 *   v4l2:/dev/videoN   a camera, through libavdevice's v4l2 demuxer (live: its clock rules)
 *   anything else      a file or URL opened with libavformat/libavcodec (FFmpeg builds only)
 *
 * Frames are always delivered at the chosen size (source_set_size) as RGB24, scaled with
 * --fit crop|pad|stretch (src/io/fit.h). Reading never allocates: buffers are made in
 * source_set_size. A source is used by one thread at a time; source_interrupt may be called from
 * any thread (or a signal handler's flag) through the `abort_flag` given at open. */
#ifndef MG_IO_SOURCE_H
#define MG_IO_SOURCE_H

#include <stdatomic.h>
#include <stdint.h>

#include "io/fit.h"
#include "mirage.h"

/* source_read may write up to this many bytes past the end of a frame (swscale's wide
 * stores): allocate frames with that much slack. */
#define SOURCE_RGB_PAD 256

typedef struct source_opts {
    int camera_w, camera_h;  /* --camera-size (0: the device's default) */
    int camera_fps;          /* --camera-fps (0: the device's default) */
    atomic_int *abort_flag;  /* when it becomes non-zero, a blocked read gives up (may be NULL) */
} source_opts;

/* What one read returns besides the pixels. */
typedef struct source_frame {
    int64_t pts;       /* presentation time in units of tb_num/tb_den, from 0 (first frame) */
    double decode_ms;  /* demux + decode (or render / read) of this frame */
    double convert_ms; /* pixel format conversion and scaling to the frame size */
    int size_changed;  /* the input's resolution changed with this frame (it is rescaled) */
} source_frame;

typedef struct source source;
struct source {
    char name[256];         /* as given (for messages) */
    char desc[256];         /* what it is, e.g. "h264 640x480 yuv420p, 25 fps" */
    int in_width, in_height; /* the input's own size (the first frame's, for FFmpeg inputs) */
    int width, height;      /* frames delivered: set by source_set_size */
    fit_mode fit;
    int fps_num, fps_den;   /* nominal frame rate (25/1 when the input does not say) */
    int tb_num, tb_den;     /* unit of source_frame.pts */
    int live;               /* a camera: it cannot wait, so a slow consumer must drop frames */
    int64_t frames_read;    /* frames delivered so far */
    int64_t expected_frames; /* frames the container announces (0: unknown) */
    int size_changes;       /* times the input's resolution changed mid-stream (rescaled) */

    /* implementation */
    mg_status (*set_size)(source *s, int w, int h, fit_mode fit);
    mg_status (*read)(source *s, uint8_t *rgb, source_frame *f);
    void (*close)(source *s);
};

/* Opens an input by its spec (above) and learns its size and rate. MG_ERR_UNSUPPORTED when
 * the input needs a part missing from this build (FFmpeg, libavdevice); MG_ERR_IO / FORMAT
 * with a message naming the input otherwise. */
mg_status source_open(source **out, const char *spec, const source_opts *o);
/* Chooses the delivered frame size (multiples of 2) and how the input is fitted into it. */
mg_status source_set_size(source *s, int width, int height, fit_mode fit);
/* The next frame into rgb (height x width x 3, then SOURCE_RGB_PAD bytes of slack). MG_ERR_EOF at a clean end of input; any other
 * failure has a message that names the input and the frame number. */
mg_status source_read(source *s, uint8_t *rgb, source_frame *f);
void source_close(source *s);

/* Constructors behind source_open (in ffmpeg_in.c; stubs without FFmpeg). */
mg_status source_open_ffmpeg(source **out, const char *spec, const source_opts *o);
int source_have_ffmpeg(void);

#endif
