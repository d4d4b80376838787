/* The wire protocol of mirage serve (docs/SERVE.md has the full description). Every number is
 * little-endian; every length is checked against the bytes present before it is used.
 *
 * page -> server, binary: one frame
 *   0  "MGF1"   4 bytes
 *   4  seq      u32   the page's frame counter
 *   8  t        f64   the page's clock (ms) when the frame was captured; echoed back
 *   16 width    u16   the JPEG's width  (must match the JPEG)
 *   18 height   u16   the JPEG's height (must match the JPEG)
 *   20 JPEG bytes
 * page -> server, text: {"type":"config","prompt":"NAME","steps":N} (either key optional)
 *
 * server -> page, binary: one transformed frame
 *   0  "MGO1"   4 bytes
 *   4  seq      u32   the input frame's seq
 *   8  t        f64   the input frame's t, echoed
 *   16 server   f32   ms from the frame's arrival to its output being ready (queue + model + codec)
 *   20 model    f32   ms in mg_stream_step
 *   24 width    u16
 *   26 height   u16
 *   28 dropped  u32   this session's frames dropped so far (replaced while waiting)
 *   32 JPEG bytes
 * server -> page, text: {"type":"hello",...} once, {"type":"config",...} after each change. */
#ifndef MG_SERVE_PROTO_H
#define MG_SERVE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_FRAME_HDR 20
#define PROTO_OUT_HDR 32
#define PROTO_PROMPT_MAX 64

typedef struct proto_frame {
    uint32_t seq;
    double t;
    int width, height;
    const uint8_t *jpeg; /* points into the message */
    size_t jpeg_len;
} proto_frame;

/* 0 and *f for a well-formed frame message, else -1 with the reason in why. */
int proto_parse_frame(const uint8_t *msg, size_t n, proto_frame *f, char *why, size_t why_n);
/* Writes the PROTO_OUT_HDR bytes of an output message. */
void proto_put_out(uint8_t *dst, uint32_t seq, double t, float server_ms, float model_ms, int w, int h,
                   uint32_t dropped);
/* Writes a frame message header (tests, tools). */
void proto_put_frame(uint8_t *dst, uint32_t seq, double t, int w, int h);

typedef struct proto_config {
    int has_prompt;
    char prompt[PROTO_PROMPT_MAX];
    int steps; /* 0: not given */
} proto_config;

/* Parses a text (control) message: a JSON object with "type":"config" and optional "prompt"
 * (a string) and "steps" (an integer 1..max_steps). 0 ok, -1 with the reason in why. */
int proto_parse_config(const char *txt, size_t n, int max_steps, proto_config *c, char *why, size_t why_n);

#endif
