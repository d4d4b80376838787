/* libFuzzer target for what `mirage serve` does with a client's WebSocket message (src/serve/
 * server.c, ws_message and worker_frame): a text message goes to proto_parse_config, a binary one
 * to proto_parse_frame, then the frame limit, TurboJPEG's header against the message's size, and
 * the decode (the server's flags: stop on warnings, limited progressive scans) into a buffer of
 * exactly width x height x 3, so ASan sees any write past it. Any bytes must give a clean
 * accept or a reason, never a crash, leak or out-of-bounds access.
 *
 * Input: byte 0 picks the kind (bit 0: 1 binary, 0 text) and --max-steps (1 + (b >> 1) % 64);
 * the rest is the message. Frames over FUZZ_MAX_FRAME pixels on a side are refused before decoding
 * as the server's --max-frame does (smaller here, to keep each run fast).
 *
 *   make fuzz FUZZERS=proto FUZZ_SECONDS=60 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/proto.h"
#ifdef MG_HAVE_JPEG
#include <turbojpeg.h>
#endif

#define FUZZ_CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)
#define FUZZ_MAX_FRAME 512

#ifdef MG_HAVE_JPEG
/* Debian's libjpeg-turbo is not instrumented, so libFuzzer cannot tell one JPEG from another and
 * reduces the real JPEG seeds away. A branch per subsampling and colour space gives it a signal
 * to keep one input of each kind in the corpus. */
static volatile unsigned g_kinds;
static void jpeg_kind(int sub, int cs) {
    switch (sub) {
    case TJSAMP_444: g_kinds += 1; break;
    case TJSAMP_422: g_kinds += 2; break;
    case TJSAMP_420: g_kinds += 3; break;
    case TJSAMP_GRAY: g_kinds += 4; break;
    case TJSAMP_440: g_kinds += 5; break;
    case TJSAMP_411: g_kinds += 6; break;
    default: g_kinds += 7; break;
    }
    switch (cs) {
    case TJCS_RGB: g_kinds += 10; break;
    case TJCS_YCbCr: g_kinds += 20; break;
    case TJCS_GRAY: g_kinds += 30; break;
    case TJCS_CMYK: g_kinds += 40; break;
    case TJCS_YCCK: g_kinds += 50; break;
    default: g_kinds += 60; break;
    }
}
#endif

static void check_frame(const uint8_t *msg, size_t n) {
    proto_frame f;
    char why[160] = "";
    if (proto_parse_frame(msg, n, &f, why, sizeof why)) {
        FUZZ_CHECK(why[0] && memchr(why, 0, sizeof why)); /* every refusal says why */
        return;
    }
    /* what the parser promises the server */
    FUZZ_CHECK(n >= PROTO_FRAME_HDR && f.jpeg == msg + PROTO_FRAME_HDR && f.jpeg_len == n - PROTO_FRAME_HDR);
    FUZZ_CHECK(f.jpeg_len >= 4 && f.jpeg[0] == 0xFF && f.jpeg[1] == 0xD8);
    FUZZ_CHECK(f.width >= 1 && f.width <= 65535 && f.height >= 1 && f.height <= 65535 && isfinite(f.t));
    uint8_t hdr[PROTO_FRAME_HDR]; /* the writer and the parser agree */
    proto_put_frame(hdr, f.seq, f.t, f.width, f.height);
    FUZZ_CHECK(!memcmp(hdr, msg, PROTO_FRAME_HDR));
    if (f.width > FUZZ_MAX_FRAME || f.height > FUZZ_MAX_FRAME) return; /* the server's --max-frame */
#ifdef MG_HAVE_JPEG
    tjhandle tj = tjInitDecompress();
    if (!tj) return;
    int w, h, sub, cs;
    if (tjDecompressHeader3(tj, f.jpeg, (unsigned long)f.jpeg_len, &w, &h, &sub, &cs) == 0 && w == f.width &&
        h == f.height) {
        FUZZ_CHECK(w >= 1 && h >= 1);
        jpeg_kind(sub, cs);
        uint8_t *rgb = malloc((size_t)w * h * 3);
        if (rgb) {
            int flags = TJFLAG_STOPONWARNING;
#ifdef TJFLAG_LIMITSCANS
            flags |= TJFLAG_LIMITSCANS;
#endif
            if (tjDecompress2(tj, f.jpeg, (unsigned long)f.jpeg_len, rgb, w, 0, h, TJPF_RGB, flags))
                FUZZ_CHECK(tjGetErrorStr2(tj)[0]); /* the close reason the page sees */
            else
                g_kinds += rgb[0] > 127; /* decoded: a signal too */
            free(rgb);
        }
    }
    tjDestroy(tj);
#endif
}

static void check_control(const char *txt, size_t n, int max_steps) {
    proto_config c;
    char why[160] = "";
    if (proto_parse_config(txt, n, max_steps, &c, why, sizeof why)) {
        FUZZ_CHECK(why[0] && memchr(why, 0, sizeof why));
        return;
    }
    FUZZ_CHECK(c.steps == 0 || (c.steps >= 1 && c.steps <= max_steps));
    FUZZ_CHECK(c.has_prompt ? memchr(c.prompt, 0, sizeof c.prompt) != NULL : c.prompt[0] == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int binary = data[0] & 1, max_steps = 1 + (data[0] >> 1) % 64;
    /* a copy of exactly the message's bytes, so ASan catches a read past its end */
    size_t n = size - 1;
    uint8_t *msg = malloc(n ? n : 1);
    if (!msg) return 0;
    memcpy(msg, data + 1, n);
    if (binary) check_frame(msg, n);
    else check_control((const char *)msg, n, max_steps);
    free(msg);
    return 0;
}
