/* Opening outputs by name, and the two sinks that need no library: y4m (files and stdout) and
 * null. See sink.h. */
#include "io/sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/timing.h"
#include "io/y4m.h"

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n > m && !strcmp(s + n - m, tail);
}

static int is_video_file(const char *spec) { return ends_with(spec, ".mp4") || ends_with(spec, ".mkv"); }

int sink_spec_known(const char *spec) {
    return !strcmp(spec, "null") || !strcmp(spec, "-") || !strcmp(spec, "window") || ends_with(spec, ".y4m") ||
           is_video_file(spec);
}

/* ---- null -------------------------------------------------------------------------------- */

static mg_status null_write(sink *k, const uint8_t *rgb, int64_t pts, const sink_overlay *ov) {
    (void)rgb, (void)pts, (void)ov;
    k->frames_written++;
    return MG_OK;
}

static mg_status null_close(sink *k) {
    free(k);
    return MG_OK;
}

/* ---- y4m --------------------------------------------------------------------------------- */

typedef struct y4m_sink {
    sink base;
    y4m_writer w;
} y4m_sink;

static mg_status y4m_sink_write(sink *k, const uint8_t *rgb, int64_t pts, const sink_overlay *ov) {
    (void)pts, (void)ov;
    y4m_sink *y = (y4m_sink *)k;
    double t0 = mg_now_ms();
    MG_TRY(y4m_write_frame(&y->w, rgb));
    k->encode_ms = mg_now_ms() - t0; /* conversion to 4:2:0 and the write, together */
    k->frames_written++;
    return MG_OK;
}

static mg_status y4m_sink_close(sink *k) {
    y4m_sink *y = (y4m_sink *)k;
    mg_status st = y4m_writer_close(&y->w);
    free(y);
    return st;
}

static mg_status open_y4m(sink **out, const char *spec, const sink_opts *o) {
    y4m_sink *y = calloc(1, sizeof *y);
    if (!y) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", spec);
    mg_status st = y4m_writer_open(&y->w, spec, o->width, o->height, o->fps_num, o->fps_den);
    if (st != MG_OK) {
        free(y);
        return st;
    }
    sink *k = &y->base;
    snprintf(k->name, sizeof k->name, "%s", strcmp(spec, "-") ? spec : "stdout");
    snprintf(k->desc, sizeof k->desc, "y4m %dx%d 4:2:0, %.4g fps", o->width, o->height, (double)o->fps_num / o->fps_den);
    k->write = y4m_sink_write, k->close = y4m_sink_close;
    k->keeps_earlier = y->w.mode == 1 && strcmp(y->w.keep_path, y->w.path) != 0;
    *out = k;
    return MG_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

mg_status sink_open(sink **out, const char *spec, const sink_opts *o) {
    *out = NULL;
    if (o->width < 2 || o->height < 2 || o->width % 2 || o->height % 2)
        return mg_fail(MG_ERR_ARG, "%s: frame size %dx%d: expected even sizes >= 2", spec, o->width, o->height);
    if (!strcmp(spec, "null")) {
        sink *k = calloc(1, sizeof *k);
        if (!k) return mg_fail(MG_ERR_NOMEM, "null output: out of memory");
        snprintf(k->name, sizeof k->name, "null");
        snprintf(k->desc, sizeof k->desc, "discarded");
        k->write = null_write, k->close = null_close;
        *out = k;
        return MG_OK;
    }
    if (!strcmp(spec, "-") || ends_with(spec, ".y4m")) return open_y4m(out, spec, o);
    if (!strcmp(spec, "window")) return sink_open_window(out, o);
    if (is_video_file(spec)) return sink_open_ffmpeg(out, spec, o);
    return mg_fail(MG_ERR_ARG, "%s: unknown output (expected FILE.mp4, FILE.mkv, FILE.y4m, -, window or null)", spec);
}

mg_status sink_write(sink *k, const uint8_t *rgb, int64_t pts, const sink_overlay *ov) {
    return k->write(k, rgb, pts, ov);
}

sink_event sink_poll(sink *k, int *arg) { return k->poll ? k->poll(k, arg) : SINK_EV_NONE; }

mg_status sink_close(sink *k) { return k ? k->close(k) : MG_OK; }
