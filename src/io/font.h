/* A built-in 5x7 bitmap font (printable ASCII) for text drawn over video: the preview
 * window's frame rate, latency and prompt. No font files, no SDL_ttf. */
#ifndef MG_IO_FONT_H
#define MG_IO_FONT_H

#include <stdint.h>

#define FONT_W 5 /* glyph columns; characters advance by FONT_W + 1 */
#define FONT_H 8 /* glyph rows, the 8th for descenders (g, j, p, q, y) */

/* Glyph of character c: FONT_W column bytes, bit r of column x set = pixel (x, r) lit.
 * Characters outside 32..126 draw as '?'. */
const uint8_t *font_glyph(int c);
/* Width in pixels of s drawn at scale (each font pixel scale x scale). */
int font_text_width(const char *s, int scale);
/* Draws s into an RGB24 frame (w x h) with its top-left corner at (x, y), clipped to the frame. */
void font_draw_rgb(uint8_t *rgb, int w, int h, int x, int y, const char *s, int scale, const uint8_t color[3]);

#endif
