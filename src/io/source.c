/* Opening inputs by name, and the two sources that need no FFmpeg: the built-in test scene
 * and y4m (files and stdin). See source.h. */
#include "io/source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/timing.h"
#include "io/testsrc.h"
#include "io/y4m.h"

/* ---- testsrc: rendered at the frame size directly (nothing to fit) ---------------------- */

static mg_status testsrc_set_size(source *s, int w, int h, fit_mode fit) {
    s->width = w, s->height = h, s->fit = fit;
    s->in_width = w, s->in_height = h;
    return MG_OK;
}

static mg_status testsrc_read(source *s, uint8_t *rgb, source_frame *f) {
    double t0 = mg_now_ms();
    MG_TRY(testsrc_render(rgb, s->width, s->height, (long)s->frames_read));
    f->pts = s->frames_read++;
    f->decode_ms = mg_now_ms() - t0;
    f->convert_ms = 0;
    return MG_OK;
}

static void testsrc_close(source *s) { free(s); }

static mg_status open_testsrc(source **out) {
    source *s = calloc(1, sizeof *s);
    if (!s) return mg_fail(MG_ERR_NOMEM, "testsrc: out of memory");
    snprintf(s->name, sizeof s->name, "testsrc");
    snprintf(s->desc, sizeof s->desc, "the built-in moving test scene, 25 fps");
    s->in_width = s->in_height = 256; /* rendered at any size; 256x256 unless told */
    s->fps_num = 25, s->fps_den = 1, s->tb_num = 1, s->tb_den = 25;
    s->set_size = testsrc_set_size, s->read = testsrc_read, s->close = testsrc_close;
    *out = s;
    return MG_OK;
}

/* ---- y4m: read at the stream's size, fitted in C when the frame size differs ------------- */

typedef struct y4m_source {
    source base;
    y4m_reader rd;
    uint8_t *native; /* (in_height, in_width, 3) when fitting, else NULL */
    fit_plan plan;
} y4m_source;

static mg_status y4m_set_size(source *s, int w, int h, fit_mode fit) {
    y4m_source *y = (y4m_source *)s;
    s->width = w, s->height = h, s->fit = fit;
    free(y->native);
    y->native = NULL;
    fit_plan_free(&y->plan);
    if (w != s->in_width || h != s->in_height) {
        y->native = malloc((size_t)s->in_width * s->in_height * 3);
        if (!y->native || fit_plan_init(&y->plan, s->in_width, s->in_height, w, h, fit))
            return mg_fail(MG_ERR_NOMEM, "%s: out of memory for a %dx%d frame", s->name, s->in_width, s->in_height);
    }
    return MG_OK;
}

static mg_status y4m_src_read(source *s, uint8_t *rgb, source_frame *f) {
    y4m_source *y = (y4m_source *)s;
    double t0 = mg_now_ms();
    MG_TRY(y4m_read_frame(&y->rd, y->native ? y->native : rgb));
    double t1 = mg_now_ms();
    if (y->native) fit_plan_run(&y->plan, rgb, y->native);
    f->pts = s->frames_read++;
    f->decode_ms = t1 - t0;
    f->convert_ms = mg_now_ms() - t1;
    return MG_OK;
}

static void y4m_src_close(source *s) {
    y4m_source *y = (y4m_source *)s;
    y4m_reader_close(&y->rd);
    free(y->native);
    fit_plan_free(&y->plan);
    free(y);
}

static mg_status open_y4m(source **out, const char *spec) {
    y4m_source *y = calloc(1, sizeof *y);
    if (!y) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", spec);
    mg_status st = y4m_reader_open(&y->rd, spec);
    if (st != MG_OK) {
        free(y);
        return st;
    }
    source *s = &y->base;
    snprintf(s->name, sizeof s->name, "%s", strcmp(spec, "-") ? spec : "stdin");
    s->in_width = y->rd.width, s->in_height = y->rd.height;
    s->fps_num = y->rd.fps_num, s->fps_den = y->rd.fps_den;
    s->tb_num = y->rd.fps_den, s->tb_den = y->rd.fps_num;
    snprintf(s->desc, sizeof s->desc, "y4m %dx%d C%s, %.4g fps", s->in_width, s->in_height, y->rd.chroma_tag,
             (double)s->fps_num / s->fps_den);
    s->set_size = y4m_set_size, s->read = y4m_src_read, s->close = y4m_src_close;
    *out = s;
    return MG_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n > m && !strcmp(s + n - m, tail);
}

mg_status source_open(source **out, const char *spec, const source_opts *o) {
    *out = NULL;
    if (!spec || !*spec) return mg_fail(MG_ERR_ARG, "no input given");
    if (!strcmp(spec, "testsrc")) return open_testsrc(out);
    if (!strcmp(spec, "-") || ends_with(spec, ".y4m")) return open_y4m(out, spec);
    return source_open_ffmpeg(out, spec, o);
}

mg_status source_set_size(source *s, int width, int height, fit_mode fit) {
    if (width < 2 || height < 2 || width % 2 || height % 2)
        return mg_fail(MG_ERR_ARG, "%s: frame size %dx%d: expected even sizes >= 2", s->name, width, height);
    return s->set_size(s, width, height, fit);
}

mg_status source_read(source *s, uint8_t *rgb, source_frame *f) {
    *f = (source_frame){0};
    return s->read(s, rgb, f);
}

void source_close(source *s) {
    if (s) s->close(s);
}
