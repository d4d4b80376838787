/* YUV4MPEG2 reader and writer. See y4m.h for the format subset, the colour convention and
 * the file-replacement rules. */
#include "io/y4m.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"
#include "io/sink.h" /* sink_partial_path */

/* ---- colour ------------------------------------------------------------------------------
 * BT.601 (Kr 0.299, Kb 0.114), limited range. Decode, 16 fractional bits:
 *   R = 255/219 (Y-16)                           + 255/112 (1-Kr)        (Cr-128)
 *   G = 255/219 (Y-16) - 255/112 (1-Kb)Kb/Kg (Cb-128) - 255/112 (1-Kr)Kr/Kg (Cr-128)
 *   B = 255/219 (Y-16) + 255/112 (1-Kb)      (Cb-128)
 * Chroma arrives with 4 fractional bits (c16 = 16*c, from the 9-3-3-1 filter), so the chroma
 * products are in units of 2^-20 and the luma term is shifted up by 4 to match. Magnitudes:
 * |luma| <= 239*76309*16 = 292M, |chroma| <= 132201*2048 = 271M, plus the 2^30 bias that keeps
 * every sum positive (so >> is a floor on a non-negative number): < 2^31. */
typedef struct dec_coef { int32_t y_off, y, rv, gu, gv, bu; } dec_coef;
static const dec_coef dec_limited = {16, 76309, 104597, 25675, 53279, 132201}; /* 255/219, 1.596027 .. */
/* XCOLORRANGE=FULL (ffmpeg writes it for gray and yuvj*): Y 0..255, chroma 1.402, 0.344136,
 * 0.714136, 1.772 (JFIF). Smaller than the limited-range coefficients, so the bounds hold. */
static const dec_coef dec_full = {0, 65536, 91881, 22554, 46802, 116130};
#define DEC_BIAS (1 << 30)

/* Encode, 16 fractional bits; each chroma row sums to exactly 0 so grey gives Cb = Cr = 128. */
#define ENC_YR 16829
#define ENC_YG 33039
#define ENC_YB 6416
#define ENC_UR (-9714)
#define ENC_UG (-19070)
#define ENC_UB 28784
#define ENC_VR 28784
#define ENC_VG (-24103)
#define ENC_VB (-4681)

static inline uint8_t clamp_u8_20(int32_t v) {
    /* v = (value + 1024) * 2^20 + rounding, non-negative */
    int32_t x = (v >> 20) - 1024;
    return (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
}

static void yuv16_to_rgb_row(uint8_t *rgb, const uint8_t *y, const int16_t *cb16,
                             const int16_t *cr16, int n, const dec_coef *k) {
    const int32_t y_off = k->y_off, ky = k->y, rv = k->rv, gu = k->gu, gv = k->gv, bu = k->bu;
    for (int x = 0; x < n; x++) {
        int32_t l = ((int32_t)y[x] - y_off) * ky * 16 + DEC_BIAS + (1 << 19);
        int32_t u = (int32_t)cb16[x] - 2048, v = (int32_t)cr16[x] - 2048;
        rgb[3 * x + 0] = clamp_u8_20(l + rv * v);
        rgb[3 * x + 1] = clamp_u8_20(l - gu * u - gv * v);
        rgb[3 * x + 2] = clamp_u8_20(l + bu * u);
    }
}

/* One output row's chroma for a 4:2:0 plane (cw x ch), with 4 fractional bits.
 * Bilinear, centred siting: output row y sits at chroma row y/2 - 1/4, so an even row takes
 * 3/4 of row y/2 and 1/4 of the row above, an odd row 3/4 of row y/2 and 1/4 of the row below;
 * the same horizontally; edges replicate. */
static void upsample_row(int16_t *out, int32_t *tmp, const uint8_t *plane, int cw, int ch, int y,
                         int width, y4m_upsample mode) {
    int j = y >> 1;
    if (mode == Y4M_UPSAMPLE_NEAREST) {
        const uint8_t *row = plane + (size_t)j * cw;
        for (int x = 0; x < width; x++) out[x] = (int16_t)(row[x >> 1] * 16);
        return;
    }
    int j2 = (y & 1) ? (j + 1 < ch ? j + 1 : ch - 1) : (j > 0 ? j - 1 : 0);
    const uint8_t *a = plane + (size_t)j * cw, *b = plane + (size_t)j2 * cw;
    for (int k = 0; k < cw; k++) tmp[k] = 3 * a[k] + b[k];
    for (int x = 0; x < width; x++) {
        int k = x >> 1;
        int k2 = (x & 1) ? (k + 1 < cw ? k + 1 : cw - 1) : (k > 0 ? k - 1 : 0);
        out[x] = (int16_t)(3 * tmp[k] + tmp[k2]); /* 16 * chroma, exact: no rounding needed */
    }
}

/* ---- reader ------------------------------------------------------------------------------ */

enum { LINE_OK, LINE_EOF0, LINE_EOF, LINE_LONG, LINE_IOERR, LINE_NUL };

/* Reads up to and including '\n' into buf (at most cap bytes, newline included); *len gets the
 * bytes before the newline, or all bytes read when the line did not end. */
static int read_line(FILE *fp, char *buf, int cap, int *len) {
    int n = 0, nul = 0;
    for (;;) {
        int c = getc(fp);
        if (c == EOF) {
            *len = n;
            if (ferror(fp)) return LINE_IOERR;
            return n == 0 ? LINE_EOF0 : LINE_EOF;
        }
        if (c == '\n') { *len = n; return nul ? LINE_NUL : LINE_OK; }
        if (n + 1 >= cap) { *len = n; return LINE_LONG; }
        if (c == 0) nul = 1;
        buf[n++] = (char)c;
    }
}

/* Up to 24 bytes of s as printable text, for messages. */
static const char *show(char *out, size_t cap, const char *s, int n) {
    size_t o = 0;
    for (int i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 24) { out[o++] = '.'; out[o++] = '.'; out[o++] = '.'; break; }
        if (c >= 32 && c < 127 && c != '\\') out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = 0;
    return out;
}

/* Parses all of s[0..n) as a decimal number in [0, max]. */
static int parse_uint(const char *s, int n, long max, long *out) {
    if (n <= 0) return 0;
    long v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
        if (v > max) return 0;
    }
    *out = v;
    return 1;
}

/* Parses "num:den" (both in [0, INT32_MAX]). */
static int parse_ratio(const char *s, int n, long *num, long *den) {
    const char *colon = memchr(s, ':', (size_t)n);
    if (!colon) return 0;
    int a = (int)(colon - s);
    return parse_uint(s, a, INT32_MAX, num) && parse_uint(colon + 1, n - a - 1, INT32_MAX, den);
}

static const struct { const char *tag; y4m_chroma c; } chroma_tags[] = {
    {"420jpeg", Y4M_C420}, {"420paldv", Y4M_C420}, {"420mpeg2", Y4M_C420},
    {"420", Y4M_C420},     {"444", Y4M_C444},      {"mono", Y4M_CMONO},
};

static mg_status parse_header(y4m_reader *r, const char *line, int n, int64_t max_pixels) {
    const char *nm = r->name;
    char sh[128];
    int seen[128] = {0};
    r->fps_num = 25; r->fps_den = 1;
    r->aspect_num = 0; r->aspect_den = 0;
    r->interlace = '?';
    r->chroma = Y4M_C420;
    snprintf(r->chroma_tag, sizeof r->chroma_tag, "420jpeg");
    int i = 9; /* after the magic */
    while (i < n) {
        if (line[i] == ' ') { i++; continue; }
        int s = i;
        while (i < n && line[i] != ' ') i++;
        const char *tok = line + s, *val = tok + 1;
        int vn = i - s - 1;
        unsigned char tag = (unsigned char)tok[0];
        if (tag != 'X' && tag < 128 && seen[tag]++)
            return mg_fail(MG_ERR_FORMAT, "%s: y4m header: parameter %c given twice", nm, tag);
        long a, b;
        switch (tag) {
        case 'W':
        case 'H':
            if (!parse_uint(val, vn, Y4M_MAX_DIM, &a) || a < 1)
                return mg_fail(MG_ERR_FORMAT,
                               "%s: y4m header: bad %s '%s' (expected an integer in 1..%d)", nm,
                               tag == 'W' ? "width" : "height", show(sh, sizeof sh, tok, i - s),
                               Y4M_MAX_DIM);
            if (tag == 'W') r->width = (int)a; else r->height = (int)a;
            break;
        case 'F':
            if (!parse_ratio(val, vn, &a, &b) || a == 0 || b == 0)
                return mg_fail(MG_ERR_FORMAT,
                               "%s: y4m header: bad frame rate '%s' (expected F<num>:<den>, "
                               "both positive)", nm, show(sh, sizeof sh, tok, i - s));
            r->fps_num = (int)a; r->fps_den = (int)b;
            break;
        case 'A':
            if (!parse_ratio(val, vn, &a, &b))
                return mg_fail(MG_ERR_FORMAT, "%s: y4m header: bad aspect '%s'", nm,
                               show(sh, sizeof sh, tok, i - s));
            r->aspect_num = (int)a; r->aspect_den = (int)b;
            break;
        case 'I':
            if (vn != 1 || !strchr("ptbm?", val[0]))
                return mg_fail(MG_ERR_FORMAT, "%s: y4m header: bad interlace '%s'", nm,
                               show(sh, sizeof sh, tok, i - s));
            r->interlace = val[0];
            break;
        case 'C': {
            int found = -1;
            for (size_t k = 0; k < sizeof chroma_tags / sizeof chroma_tags[0]; k++)
                if ((int)strlen(chroma_tags[k].tag) == vn && !memcmp(val, chroma_tags[k].tag, (size_t)vn))
                    found = (int)k;
            if (found < 0)
                return mg_fail(MG_ERR_FORMAT,
                               "%s: y4m header: unsupported colourspace '%s' (supported: 420jpeg "
                               "420paldv 420mpeg2 420 444 mono, 8-bit)", nm,
                               show(sh, sizeof sh, tok, i - s));
            r->chroma = chroma_tags[found].c;
            snprintf(r->chroma_tag, sizeof r->chroma_tag, "%s", chroma_tags[found].tag);
            break;
        }
        case 'X': /* extensions: only ffmpeg's XCOLORRANGE= matters; XYSCSS= etc. are ignored */
            if (vn == 15 && !memcmp(val, "COLORRANGE=FULL", 15)) r->full_range = 1;
            else if (vn == 18 && !memcmp(val, "COLORRANGE=LIMITED", 18)) r->full_range = 0;
            break;
        default:
            return mg_fail(MG_ERR_FORMAT, "%s: y4m header: unknown parameter '%s'", nm,
                           show(sh, sizeof sh, tok, i - s));
        }
    }
    if (!seen['W'] || !seen['H'])
        return mg_fail(MG_ERR_FORMAT, "%s: y4m header: missing %s", nm,
                       !seen['W'] ? "width (W)" : "height (H)");
    int64_t pixels = (int64_t)r->width * r->height;
    if (max_pixels > 0 && pixels > max_pixels)
        return mg_fail(MG_ERR_FORMAT, "%s: y4m frame %dx%d = %lld pixels exceeds the limit of %lld",
                       nm, r->width, r->height, (long long)pixels, (long long)max_pixels);
    if (r->chroma == Y4M_C420) {
        r->chroma_w = (r->width + 1) / 2;
        r->chroma_h = (r->height + 1) / 2;
    } else if (r->chroma == Y4M_C444) {
        r->chroma_w = r->width;
        r->chroma_h = r->height;
    } else {
        r->chroma_w = r->chroma_h = 0;
    }
    r->frame_bytes = (size_t)pixels + 2 * (size_t)r->chroma_w * (size_t)r->chroma_h;
    return MG_OK;
}

void y4m_reader_close(y4m_reader *r) {
    if (!r) return;
    if (r->fp && r->owns_fp) fclose(r->fp);
    free(r->yuv);
    free(r->rowbuf);
    free(r->upbuf);
    memset(r, 0, sizeof *r);
}

mg_status y4m_reader_open_fp_limit(y4m_reader *r, FILE *fp, const char *name, int64_t max_pixels) {
    if (!r) return mg_fail(MG_ERR_ARG, "y4m_reader_open: NULL reader");
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name ? name : "(y4m stream)");
    if (!fp) return mg_fail(MG_ERR_ARG, "%s: y4m_reader_open: NULL stream", r->name);
    char line[Y4M_MAX_LINE], sh[128];
    int n = 0, rc = read_line(fp, line, sizeof line, &n);
    mg_status st = MG_OK;
    if (rc == LINE_IOERR)
        st = mg_fail(MG_ERR_IO, "%s: read error in the y4m header: %s", r->name, strerror(errno));
    else if (rc == LINE_EOF0)
        st = mg_fail(MG_ERR_FORMAT, "%s: empty input (expected a YUV4MPEG2 header)", r->name);
    else if (!(n >= 9 ? !memcmp(line, "YUV4MPEG2", 9) && (n == 9 || line[9] == ' ')
                      : !memcmp(line, "YUV4MPEG2", (size_t)n) && rc != LINE_OK))
        st = mg_fail(MG_ERR_FORMAT, "%s: not a YUV4MPEG2 stream (starts with '%s')", r->name,
                     show(sh, sizeof sh, line, n < 12 ? n : 12));
    else if (rc == LINE_EOF)
        st = mg_fail(MG_ERR_FORMAT, "%s: truncated y4m header (no newline in %d bytes)", r->name, n);
    else if (rc == LINE_LONG)
        st = mg_fail(MG_ERR_FORMAT, "%s: y4m header longer than %d bytes", r->name, Y4M_MAX_LINE);
    else if (rc == LINE_NUL)
        st = mg_fail(MG_ERR_FORMAT, "%s: y4m header contains a NUL byte", r->name);
    else
        st = parse_header(r, line, n, max_pixels);
    if (st != MG_OK) { y4m_reader_close(r); return st; }

    r->fp = fp;
    r->yuv = malloc(r->frame_bytes);
    r->upbuf = malloc(2 * sizeof(int16_t) * (size_t)r->width);
    r->rowbuf = malloc(sizeof(int32_t) * (size_t)(r->chroma_w > 0 ? r->chroma_w : 1));
    if (!r->yuv || !r->upbuf || !r->rowbuf) {
        size_t want = r->frame_bytes;
        y4m_reader_close(r);
        return mg_fail(MG_ERR_NOMEM, "%s: cannot allocate a %zu-byte y4m frame buffer", name ? name : "",
                       want);
    }
    if (r->chroma == Y4M_CMONO) /* neutral chroma, once */
        for (int x = 0; x < 2 * r->width; x++) r->upbuf[x] = 128 * 16;
    return MG_OK;
}

mg_status y4m_reader_open_fp(y4m_reader *r, FILE *fp, const char *name) {
    return y4m_reader_open_fp_limit(r, fp, name, 0);
}

mg_status y4m_reader_open(y4m_reader *r, const char *path) {
    if (!r || !path) return mg_fail(MG_ERR_ARG, "y4m_reader_open: NULL argument");
    if (!strcmp(path, "-")) return y4m_reader_open_fp(r, stdin, "stdin");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        memset(r, 0, sizeof *r);
        return mg_fail(MG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    mg_status st = y4m_reader_open_fp(r, fp, path);
    if (st != MG_OK) { fclose(fp); return st; }
    r->owns_fp = 1;
    return MG_OK;
}

mg_status y4m_read_frame(y4m_reader *r, uint8_t *rgb) {
    if (!r || !r->fp || !rgb) return mg_fail(MG_ERR_ARG, "y4m_read_frame: reader not open or NULL frame");
    long long fi = (long long)r->frames_read;
    char line[Y4M_MAX_LINE], sh[128];
    int n = 0, rc = read_line(r->fp, line, sizeof line, &n);
    if (rc == LINE_IOERR)
        return mg_fail(MG_ERR_IO, "%s: frame %lld: read error: %s", r->name, fi, strerror(errno));
    if (rc == LINE_EOF0)
        return mg_fail(MG_ERR_EOF, "%s: end of stream after %lld frames", r->name, fi);
    int is_frame = n >= 5 && !memcmp(line, "FRAME", 5) && (n == 5 || line[5] == ' ');
    if (rc == LINE_EOF && (is_frame || (n < 5 && !memcmp(line, "FRAME", (size_t)n))))
        return mg_fail(MG_ERR_FORMAT, "%s: frame %lld: truncated FRAME line", r->name, fi);
    if (!is_frame)
        return mg_fail(MG_ERR_FORMAT, "%s: frame %lld: expected a FRAME line, found '%s'", r->name,
                       fi, show(sh, sizeof sh, line, n));
    if (rc == LINE_LONG)
        return mg_fail(MG_ERR_FORMAT, "%s: frame %lld: FRAME line longer than %d bytes", r->name, fi,
                       Y4M_MAX_LINE);
    /* LINE_NUL: a NUL among the FRAME parameters, which we skip anyway */

    size_t got = fread(r->yuv, 1, r->frame_bytes, r->fp);
    if (got != r->frame_bytes) {
        if (ferror(r->fp))
            return mg_fail(MG_ERR_IO, "%s: frame %lld: read error: %s", r->name, fi, strerror(errno));
        return mg_fail(MG_ERR_FORMAT, "%s: frame %lld: truncated: %zu of %zu bytes (%dx%d C%s)",
                       r->name, fi, got, r->frame_bytes, r->width, r->height, r->chroma_tag);
    }

    const int W = r->width, H = r->height, cw = r->chroma_w, ch = r->chroma_h;
    const uint8_t *Y = r->yuv, *U = Y + (size_t)W * H, *V = U + (size_t)cw * ch;
    int16_t *u16 = r->upbuf, *v16 = u16 + W;
    for (int y = 0; y < H; y++) {
        if (r->chroma == Y4M_C420) {
            upsample_row(u16, r->rowbuf, U, cw, ch, y, W, r->upsample);
            upsample_row(v16, r->rowbuf, V, cw, ch, y, W, r->upsample);
        } else if (r->chroma == Y4M_C444) {
            const uint8_t *ur = U + (size_t)y * W, *vr = V + (size_t)y * W;
            for (int x = 0; x < W; x++) { u16[x] = (int16_t)(ur[x] * 16); v16[x] = (int16_t)(vr[x] * 16); }
        }
        yuv16_to_rgb_row(rgb + (size_t)y * W * 3, Y + (size_t)y * W, u16, v16, W,
                         r->full_range ? &dec_full : &dec_limited);
    }
    r->frames_read++;
    return MG_OK;
}

/* ---- writer ------------------------------------------------------------------------------ */

enum { W_CLOSED = 0, W_TEMP = 1, W_INPLACE = 2, W_STDOUT = 3 };

static mg_status wfail(y4m_writer *w, const char *what, int err) {
    w->failed = 1;
    return mg_fail(MG_ERR_IO, "%s: %s: %s", w->mode == W_STDOUT ? "stdout" : w->path, what,
                   strerror(err));
}

mg_status y4m_writer_open(y4m_writer *w, const char *path, int width, int height, int fps_num,
                          int fps_den) {
    if (!w || !path) return mg_fail(MG_ERR_ARG, "y4m_writer_open: NULL argument");
    memset(w, 0, sizeof *w);
    if (width < 1 || height < 1 || width > Y4M_MAX_DIM || height > Y4M_MAX_DIM)
        return mg_fail(MG_ERR_ARG, "%s: y4m frame size %dx%d out of range 1..%d", path, width,
                       height, Y4M_MAX_DIM);
    if (fps_num <= 0 || fps_den <= 0)
        return mg_fail(MG_ERR_ARG, "%s: y4m frame rate %d/%d must be positive", path, fps_num, fps_den);
    if (strlen(path) >= sizeof w->path)
        return mg_fail(MG_ERR_ARG, "y4m_writer_open: path longer than %zu bytes", sizeof w->path - 1);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->width = width; w->height = height; w->fps_num = fps_num; w->fps_den = fps_den;
    size_t cw = (size_t)(width + 1) / 2, ch = (size_t)(height + 1) / 2;
    w->frame_bytes = (size_t)width * height + 2 * cw * ch;
    w->yuv = malloc(w->frame_bytes);
    if (!w->yuv) {
        memset(w, 0, sizeof *w);
        return mg_fail(MG_ERR_NOMEM, "%s: cannot allocate a y4m frame buffer", path);
    }

    struct stat sb;
    if (!strcmp(path, "-")) {
        w->mode = W_STDOUT;
        w->fp = stdout;
    } else if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        w->mode = W_INPLACE;
        w->fp = fopen(path, "wb");
    } else {
        w->mode = W_TEMP;
        if (stat(path, &sb) == 0) sink_partial_path(w->keep_path, sizeof w->keep_path, path); /* keep the earlier file */
        else snprintf(w->keep_path, sizeof w->keep_path, "%s", path);
        snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid());
        w->fp = fopen(w->tmp, "wb");
    }
    if (!w->fp) {
        int e = errno;
        mg_status st = mg_fail(MG_ERR_IO, "%s: cannot create %s: %s", path,
                               w->mode == W_TEMP ? w->tmp : path, strerror(e));
        free(w->yuv);
        memset(w, 0, sizeof *w);
        return st;
    }
    char hdr[160];
    int hn = snprintf(hdr, sizeof hdr,
                      "YUV4MPEG2 W%d H%d F%d:%d Ip A1:1 C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED\n",
                      width, height, fps_num, fps_den);
    w->header_bytes = (size_t)hn;
    if (fwrite(hdr, 1, (size_t)hn, w->fp) != (size_t)hn) {
        mg_status st = wfail(w, "cannot write the y4m header", errno);
        y4m_writer_abort(w);
        return st;
    }
    return MG_OK;
}

/* RGB -> Y'CbCr 4:2:0, chroma from the mean of each 2x2 block (1, 2 or 4 pixels at the edges).
 * The mean is taken over RGB before the (linear) chroma transform, rounded once. */
static void rgb_to_yuv420(uint8_t *yuv, const uint8_t *rgb, int W, int H) {
    int cw = (W + 1) / 2, ch = (H + 1) / 2;
    uint8_t *Y = yuv, *U = Y + (size_t)W * H, *V = U + (size_t)cw * ch;
    for (int y = 0; y < H; y++) {
        const uint8_t *p = rgb + (size_t)y * W * 3;
        uint8_t *yr = Y + (size_t)y * W;
        for (int x = 0; x < W; x++) {
            int32_t R = p[3 * x], G = p[3 * x + 1], B = p[3 * x + 2];
            yr[x] = (uint8_t)((ENC_YR * R + ENC_YG * G + ENC_YB * B + (16 << 16) + (1 << 15)) >> 16);
        }
    }
    for (int j = 0; j < ch; j++) {
        int y0 = 2 * j, ny = (y0 + 1 < H) ? 2 : 1;
        for (int k = 0; k < cw; k++) {
            int x0 = 2 * k, nx = (x0 + 1 < W) ? 2 : 1;
            int32_t sR = 0, sG = 0, sB = 0;
            for (int dy = 0; dy < ny; dy++) {
                const uint8_t *p = rgb + ((size_t)(y0 + dy) * W + x0) * 3;
                for (int dx = 0; dx < nx; dx++) { sR += p[3 * dx]; sG += p[3 * dx + 1]; sB += p[3 * dx + 2]; }
            }
            int sh = 16 + (nx * ny == 4 ? 2 : nx * ny == 2 ? 1 : 0), n = nx * ny;
            int32_t off = n * ((128 << 16) + (1 << 15)); /* keeps the sum positive: Cb, Cr >= 16 */
            U[(size_t)j * cw + k] = (uint8_t)((ENC_UR * sR + ENC_UG * sG + ENC_UB * sB + off) >> sh);
            V[(size_t)j * cw + k] = (uint8_t)((ENC_VR * sR + ENC_VG * sG + ENC_VB * sB + off) >> sh);
        }
    }
}

mg_status y4m_write_frame(y4m_writer *w, const uint8_t *rgb) {
    if (!w || !w->fp || !rgb) return mg_fail(MG_ERR_ARG, "y4m_write_frame: writer not open or NULL frame");
    if (w->failed)
        return mg_fail(MG_ERR_IO, "%s: an earlier write failed", w->mode == W_STDOUT ? "stdout" : w->path);
    rgb_to_yuv420(w->yuv, rgb, w->width, w->height);
    if (fwrite("FRAME\n", 1, 6, w->fp) != 6 || fwrite(w->yuv, 1, w->frame_bytes, w->fp) != w->frame_bytes) {
        char what[64];
        snprintf(what, sizeof what, "cannot write frame %lld", (long long)w->frames_written);
        return wfail(w, what, errno);
    }
    w->frames_written++;
    return MG_OK;
}

/* Makes a rename durable; best effort (some filesystems refuse fsync on a directory). */
static void fsync_parent_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) { (void)fsync(fd); close(fd); }
}

void y4m_writer_abort(y4m_writer *w) {
    if (!w) return;
    if (w->fp) {
        if (w->mode == W_STDOUT) fflush(w->fp);
        else fclose(w->fp);
    }
    if (w->mode == W_TEMP && w->tmp[0]) unlink(w->tmp);
    free(w->yuv);
    memset(w, 0, sizeof *w);
}

mg_status y4m_writer_close(y4m_writer *w) {
    if (!w || w->mode == W_CLOSED) return MG_OK;
    mg_status st = MG_OK;
    if (w->failed) {
        char why[512];
        snprintf(why, sizeof why, "%s", mg_last_error()); /* mg_fail must not read its own buffer */
        if (w->mode != W_TEMP) {
            st = mg_fail(MG_ERR_IO, "%s: an earlier write failed (%s)", w->mode == W_STDOUT ? "stdout" : w->path, why);
            y4m_writer_abort(w);
            return st;
        }
        /* Keep what was written: cut the temporary back to whole frames, then publish it (beside
         * an earlier file at PATH, which stays as it was). */
        fclose(w->fp); /* its error is the one already reported */
        w->fp = NULL;
        /* Whole frames are counted from the bytes that reached the file, not from the writes
         * that returned: stdio buffers, so frames "written" before the failure may be missing,
         * and cutting to their count would extend the file with zeros. */
        struct stat sb;
        int64_t whole = w->frames_written;
        if (stat(w->tmp, &sb) == 0) {
            int64_t on_disk = (int64_t)sb.st_size < (int64_t)w->header_bytes ? 0
                              : ((int64_t)sb.st_size - (int64_t)w->header_bytes) / (int64_t)(6 + w->frame_bytes);
            if (on_disk < whole) whole = on_disk;
        }
        off_t keep = (off_t)(w->header_bytes + (size_t)whole * (6 + w->frame_bytes));
        if (whole == 0) {
            st = mg_fail(MG_ERR_IO, "%s; no whole frame reached the file: nothing kept", why);
        } else if (truncate(w->tmp, keep) == 0 && rename(w->tmp, w->keep_path) == 0) {
            w->tmp[0] = 0;
            fsync_parent_dir(w->keep_path);
            st = mg_fail(MG_ERR_IO, "%s; kept the %lld whole frames written before it in %s", why, (long long)whole,
                         w->keep_path);
        } else {
            st = mg_fail(MG_ERR_IO, "%s; and the partial file could not be kept (%s)", why, strerror(errno));
        }
        y4m_writer_abort(w);
        return st;
    }
    if (fflush(w->fp) != 0) st = wfail(w, "cannot flush", errno);
    if (st == MG_OK && w->mode == W_TEMP && fsync(fileno(w->fp)) != 0) st = wfail(w, "fsync failed", errno);
    if (w->mode == W_STDOUT) {
        free(w->yuv);
        memset(w, 0, sizeof *w);
        return st;
    }
    FILE *fp = w->fp;
    w->fp = NULL;
    if (fclose(fp) != 0 && st == MG_OK) st = wfail(w, "cannot close", errno);
    if (st == MG_OK && w->mode == W_TEMP) {
        if (rename(w->tmp, w->path) != 0) {
            char what[4200];
            snprintf(what, sizeof what, "cannot rename %s onto it", w->tmp);
            st = wfail(w, what, errno);
        } else {
            w->tmp[0] = 0; /* published: nothing to delete */
            fsync_parent_dir(w->path);
        }
    }
    if (st != MG_OK) {
        y4m_writer_abort(w); /* deletes the temporary (fp already closed) */
        return st;
    }
    free(w->yuv);
    memset(w, 0, sizeof *w);
    return MG_OK;
}
