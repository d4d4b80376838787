/* The preview window (SDL2): the frames as they are written, scaled up to a comfortable size,
 * with the frame rate, the end-to-end latency, the drop count and the prompt drawn over them
 * (the built-in 5x7 font, src/io/font.h), and keys to steer the stream:
 *   0-9   prompt row N          p   the next prompt          q, Esc, closing   stop
 *
 * SDL wants its window, renderer and events on one thread. The window is opened lazily by the
 * first sink_write or sink_poll — on the writer thread — and released by sink_close only if
 * that thread is gone. sink_open only checks that a display can be reached, so that a missing
 * display is an error before the model loads, not after. */
#include "io/sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#ifndef MG_HAVE_SDL2

int sink_have_window(void) { return 0; }

mg_status sink_open_window(sink **out, const sink_opts *o) {
    (void)o;
    *out = NULL;
    return mg_fail(MG_ERR_UNSUPPORTED, "window: the preview window needs SDL2, which is not in this build "
                                       "(apt-get install libsdl2-dev, then rebuild)");
}

#else

#include <SDL.h>

#include "core/timing.h"
#include "io/font.h"

int sink_have_window(void) { return 1; }

#define MAX_TEXT 96
#define MAX_RECTS (MAX_TEXT * FONT_W * FONT_H)

typedef struct win_sink {
    sink base;
    int width, height, scale;
    char title[128];
    int opened, failed;
    SDL_Window *win;
    SDL_Renderer *ren;
    SDL_Texture *tex;
    SDL_Rect rects[MAX_RECTS]; /* lit font pixels of the overlay, made each frame */
    char err[512];
} win_sink;

static mg_status win_ensure(win_sink *w) {
    if (w->opened) return MG_OK;
    if (w->failed) return mg_fail(MG_ERR_UNSUPPORTED, "%s", w->err);
    const char *what = NULL;
    if (SDL_InitSubSystem(SDL_INIT_VIDEO) != 0) what = "cannot start SDL video";
    else if (!(w->win = SDL_CreateWindow(w->title, SDL_WINDOWPOS_UNDEFINED, SDL_WINDOWPOS_UNDEFINED,
                                         w->width * w->scale, w->height * w->scale, SDL_WINDOW_RESIZABLE)))
        what = "cannot open a window";
    else if (!(w->ren = SDL_CreateRenderer(w->win, -1, SDL_RENDERER_ACCELERATED)) &&
             !(w->ren = SDL_CreateRenderer(w->win, -1, SDL_RENDERER_SOFTWARE)))
        what = "cannot create a renderer";
    else if (!(w->tex = SDL_CreateTexture(w->ren, SDL_PIXELFORMAT_RGB24, SDL_TEXTUREACCESS_STREAMING, w->width, w->height)))
        what = "cannot create a texture";
    if (what) {
        snprintf(w->err, sizeof w->err, "window: %s: %s", what, SDL_GetError());
        w->failed = 1;
        return mg_fail(MG_ERR_UNSUPPORTED, "%s", w->err);
    }
    SDL_RenderSetLogicalSize(w->ren, w->width * w->scale, w->height * w->scale);
    SDL_SetRenderDrawBlendMode(w->ren, SDL_BLENDMODE_BLEND);
    SDL_SetRenderDrawColor(w->ren, 0, 0, 0, 255);
    SDL_RenderClear(w->ren);
    SDL_RenderPresent(w->ren);
    w->opened = 1;
    return MG_OK;
}

/* The overlay: one line of text on a translucent bar at the top. */
static void draw_overlay(win_sink *w, const sink_overlay *ov) {
    char text[MAX_TEXT + 1];
    snprintf(text, sizeof text, "%.1f fps | %.0f ms | %lld dropped | %s", ov->fps, ov->latency_ms,
             (long long)ov->dropped, ov->prompt ? ov->prompt : "");
    int s = w->scale * w->width >= 480 ? 2 : 1;
    SDL_Rect bar = {0, 0, font_text_width(text, s) + 8 * s, (FONT_H + 3) * s};
    SDL_SetRenderDrawColor(w->ren, 0, 0, 0, 160);
    SDL_RenderFillRect(w->ren, &bar);
    int n = 0, x0 = 4 * s, y0 = 2 * s;
    for (const char *c = text; *c; c++, x0 += (FONT_W + 1) * s) {
        const uint8_t *g = font_glyph((unsigned char)*c);
        for (int gx = 0; gx < FONT_W; gx++)
            for (int gy = 0; gy < FONT_H; gy++)
                if (g[gx] >> gy & 1 && n < MAX_RECTS) w->rects[n++] = (SDL_Rect){x0 + gx * s, y0 + gy * s, s, s};
    }
    SDL_SetRenderDrawColor(w->ren, 255, 255, 255, 255);
    SDL_RenderFillRects(w->ren, w->rects, n);
}

static mg_status win_write(sink *k, const uint8_t *rgb, int64_t pts, const sink_overlay *ov) {
    (void)pts;
    win_sink *w = (win_sink *)k;
    MG_TRY(win_ensure(w));
    double t0 = mg_now_ms();
    if (SDL_UpdateTexture(w->tex, NULL, rgb, w->width * 3) != 0)
        return mg_fail(MG_ERR_DEVICE, "window: cannot update the picture: %s", SDL_GetError());
    SDL_SetRenderDrawColor(w->ren, 0, 0, 0, 255);
    SDL_RenderClear(w->ren);
    SDL_RenderCopy(w->ren, w->tex, NULL, NULL);
    if (ov) draw_overlay(w, ov);
    SDL_RenderPresent(w->ren);
    k->encode_ms = mg_now_ms() - t0;
    k->frames_written++;
    return MG_OK;
}

static sink_event win_poll(sink *k, int *arg) {
    win_sink *w = (win_sink *)k;
    if (win_ensure(w) != MG_OK) return SINK_EV_NONE;
    SDL_Event e;
    while (SDL_PollEvent(&e)) {
        if (e.type == SDL_QUIT) return SINK_EV_QUIT;
        if (e.type != SDL_KEYDOWN) continue;
        SDL_Keycode key = e.key.keysym.sym;
        if (key == SDLK_q || key == SDLK_ESCAPE) return SINK_EV_QUIT;
        if (key == SDLK_p) return SINK_EV_NEXT_PROMPT;
        if (key >= SDLK_0 && key <= SDLK_9) {
            *arg = key - SDLK_0;
            return SINK_EV_PROMPT;
        }
        if (key >= SDLK_KP_1 && key <= SDLK_KP_9) {
            *arg = key - SDLK_KP_1 + 1;
            return SINK_EV_PROMPT;
        }
        if (key == SDLK_KP_0) {
            *arg = 0;
            return SINK_EV_PROMPT;
        }
    }
    return SINK_EV_NONE;
}

static mg_status win_close(sink *k) {
    win_sink *w = (win_sink *)k;
    if (w->tex) SDL_DestroyTexture(w->tex);
    if (w->ren) SDL_DestroyRenderer(w->ren);
    if (w->win) SDL_DestroyWindow(w->win);
    if (w->opened || w->failed) SDL_QuitSubSystem(SDL_INIT_VIDEO);
    SDL_Quit();
    free(w);
    return MG_OK;
}

mg_status sink_open_window(sink **out, const sink_opts *o) {
    *out = NULL;
    const char *x = getenv("DISPLAY"), *wl = getenv("WAYLAND_DISPLAY");
    if ((!x || !*x) && (!wl || !*wl))
        return mg_fail(MG_ERR_UNSUPPORTED, "window: no display to open a window on (DISPLAY and WAYLAND_DISPLAY are "
                                           "not set); write a file instead, e.g. --output out.mp4");
    /* reach the display once now, so a dead one fails before the model loads */
    if (SDL_Init(SDL_INIT_VIDEO) != 0)
        return mg_fail(MG_ERR_UNSUPPORTED, "window: cannot reach the display %s: %s", x && *x ? x : wl, SDL_GetError());
    SDL_Quit();
    win_sink *w = calloc(1, sizeof *w);
    if (!w) return mg_fail(MG_ERR_NOMEM, "window: out of memory");
    sink *k = &w->base;
    w->width = o->width, w->height = o->height;
    w->scale = 640 / o->width;
    if (w->scale < 1) w->scale = 1;
    if (w->scale > 8) w->scale = 8;
    snprintf(w->title, sizeof w->title, "%s", o->title ? o->title : "mirage");
    snprintf(k->name, sizeof k->name, "window");
    snprintf(k->desc, sizeof k->desc, "SDL2 window %dx%d (shown at %dx%d)", o->width, o->height, o->width * w->scale,
             o->height * w->scale);
    k->write = win_write, k->poll = win_poll, k->close = win_close;
    *out = k;
    return MG_OK;
}

#endif
