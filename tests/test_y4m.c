/* Y4M reader/writer and the built-in test scene: round trips, every supported C tag, real
 * pipes, clean rejection of broken streams, the writer's temp-file discipline, and that the
 * test scene is deterministic, moving and not flat. */
#include <errno.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "core/status.h"
#include "core/timing.h"
#include "io/testsrc.h"
#include "io/y4m.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static long file_size(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 ? (long)sb.st_size : -1;
}

/* A stream over a byte buffer. fmemopen rejects size 0, so an empty input is /dev/null. */
static FILE *memfile(const void *data, size_t n) {
    FILE *f = n ? fmemopen((void *)data, n, "rb") : fopen("/dev/null", "rb");
    assert_non_null(f);
    return f;
}

/* Opens a reader on bytes; returns the status and closes everything on failure. */
static mg_status open_bytes(y4m_reader *r, FILE **fp, const void *data, size_t n) {
    *fp = memfile(data, n);
    mg_status st = y4m_reader_open_fp(r, *fp, "mem");
    if (st != MG_OK) {
        assert_null(r->fp); /* left closed */
        y4m_reader_close(r); /* and closing again is harmless */
        fclose(*fp);
        *fp = NULL;
    }
    return st;
}

typedef struct err_stats { double mean; int max; } err_stats;

static err_stats compare(const uint8_t *a, const uint8_t *b, size_t n) {
    err_stats e = {0, 0};
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        s += d;
        if (d > e.max) e.max = d;
    }
    e.mean = n ? s / n : 0;
    return e;
}

/* ---- round trips -------------------------------------------------------------------------- */

static void roundtrip_testsrc(int W, int H, int N, double mean_bound) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt_%dx%d.y4m", tu_tmpdir(), W, H);
    size_t fb = (size_t)W * H * 3;
    uint8_t *src = malloc(fb * N), *got = malloc(fb);
    assert_non_null(src);
    assert_non_null(got);

    y4m_writer w;
    assert_int_equal(y4m_writer_open(&w, path, W, H, 30000, 1001), MG_OK);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_true(file_exists(tmp)); /* written under a temporary name ... */
    assert_false(file_exists(path));
    for (int f = 0; f < N; f++) {
        assert_int_equal(testsrc_render(src + f * fb, W, H, f), MG_OK);
        assert_int_equal(y4m_write_frame(&w, src + f * fb), MG_OK);
    }
    assert_int_equal(y4m_writer_close(&w), MG_OK);
    assert_true(file_exists(path)); /* ... and renamed on close */
    assert_false(file_exists(tmp));
    assert_int_equal(y4m_writer_close(&w), MG_OK); /* closing twice is a no-op */

    y4m_reader r;
    assert_int_equal(y4m_reader_open(&r, path), MG_OK);
    assert_int_equal(r.width, W);
    assert_int_equal(r.height, H);
    assert_int_equal(r.fps_num, 30000);
    assert_int_equal(r.fps_den, 1001);
    assert_int_equal(r.chroma, Y4M_C420);
    size_t cw = (W + 1) / 2, ch = (H + 1) / 2;
    assert_int_equal(r.frame_bytes, (size_t)W * H + 2 * cw * ch);
    char hdr[256];
    int hn = snprintf(hdr, sizeof hdr,
                      "YUV4MPEG2 W%d H%d F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED\n",
                      W, H);
    assert_int_equal(file_size(path), hn + (long)N * (6 + (long)r.frame_bytes));

    double worst_mean = 0;
    int worst_max = 0;
    for (int f = 0; f < N; f++) {
        assert_int_equal(y4m_read_frame(&r, got), MG_OK);
        err_stats e = compare(got, src + f * fb, fb);
        if (e.mean > worst_mean) worst_mean = e.mean;
        if (e.max > worst_max) worst_max = e.max;
    }
    assert_int_equal(y4m_read_frame(&r, got), MG_ERR_EOF);
    assert_int_equal(r.frames_read, N);
    y4m_reader_close(&r);
    /* testsrc has sharp colour edges (shape outlines, checker cells): 4:2:0 loses real detail
     * there, more of it the smaller the frame (measured: mean 0.77 at 256x256, 1.5 at 128x96,
     * 4.3 at 37x29; max 50..90), so these bounds are loose; test_roundtrip_smooth and
     * test_flat_colours hold the conversion itself tight. */
    int ok = worst_mean < mean_bound && worst_max <= 120;
    printf("  testsrc %dx%d x%d round trip: mean abs err %.3f, max %d %s\n", W, H, N, worst_mean,
           worst_max, ok ? "ok" : "FAIL");
    assert_true(ok);
    free(src);
    free(got);
}

static void test_roundtrip_testsrc(void **state) {
    (void)state;
    roundtrip_testsrc(128, 96, 6, 2.0);
    roundtrip_testsrc(37, 29, 3, 5.5); /* odd sizes: chroma (W+1)/2 x (H+1)/2, partial edge blocks */
    roundtrip_testsrc(1, 1, 2, 3.0);
}

/* A smooth image survives RGB -> 4:2:0 -> RGB within a few levels. */
static void test_roundtrip_smooth(void **state) {
    (void)state;
    const int W = 96, H = 64;
    uint8_t *src = malloc(W * H * 3), *got = malloc(W * H * 3);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = src + (y * W + x) * 3;
            p[0] = (uint8_t)(20 + 2 * x);
            p[1] = (uint8_t)(240 - 3 * y);
            p[2] = (uint8_t)(128 + 100 * sin(0.05 * x + 0.07 * y));
        }
    char path[512];
    snprintf(path, sizeof path, "%s/smooth.y4m", tu_tmpdir());
    y4m_writer w;
    assert_int_equal(y4m_writer_open(&w, path, W, H, 25, 1), MG_OK);
    assert_int_equal(y4m_write_frame(&w, src), MG_OK);
    assert_int_equal(y4m_writer_close(&w), MG_OK);
    /* Inside, bilinear chroma reproduces a smooth image to quantisation error. On the outer
     * row/column the edge-replicated chroma is half a pixel off, which costs up to ~6 levels
     * where B changes by 5 levels a pixel. */
    for (int mode = 0; mode < 2; mode++) {
        y4m_reader r;
        assert_int_equal(y4m_reader_open(&r, path), MG_OK);
        r.upsample = mode ? Y4M_UPSAMPLE_NEAREST : Y4M_UPSAMPLE_BILINEAR;
        assert_int_equal(y4m_read_frame(&r, got), MG_OK);
        y4m_reader_close(&r);
        err_stats all = compare(got, src, W * H * 3), in = {0, 0};
        for (int y = 1; y < H - 1; y++) {
            err_stats e = compare(got + (y * W + 1) * 3, src + (y * W + 1) * 3, (W - 2) * 3);
            in.mean += e.mean / (H - 2);
            if (e.max > in.max) in.max = e.max;
        }
        int ok = mode == 0 ? in.max <= 3 && in.mean < 0.6 && all.max <= 8 && all.mean < 0.8
                           : in.max <= 8 && in.mean < 1.5 && all.max <= 8;
        printf("  smooth round trip, %s: interior mean %.3f max %d, whole mean %.3f max %d %s\n",
               mode ? "nearest" : "bilinear", in.mean, in.max, all.mean, all.max, ok ? "ok" : "FAIL");
        assert_true(ok);
    }
    free(src);
    free(got);
}

/* Flat colours: the BT.601 limited-range values themselves. */
static void test_flat_colours(void **state) {
    (void)state;
    static const uint8_t cols[][3] = {{0, 0, 0},     {255, 255, 255}, {255, 0, 0},   {0, 255, 0},
                                      {0, 0, 255},   {255, 255, 0},   {0, 255, 255}, {255, 0, 255},
                                      {128, 128, 128}, {200, 120, 40}};
    const int W = 4, H = 4, n = (int)(sizeof cols / sizeof cols[0]);
    char path[512];
    snprintf(path, sizeof path, "%s/flat.y4m", tu_tmpdir());
    y4m_writer w;
    assert_int_equal(y4m_writer_open(&w, path, W, H, 25, 1), MG_OK);
    uint8_t img[4 * 4 * 3], got[4 * 4 * 3];
    for (int c = 0; c < n; c++) {
        for (int i = 0; i < W * H; i++) memcpy(img + 3 * i, cols[c], 3);
        assert_int_equal(y4m_write_frame(&w, img), MG_OK);
    }
    assert_int_equal(y4m_writer_close(&w), MG_OK);

    /* The YUV bytes: black (16,128,128), white (235,128,128), red (81,90,240). */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    uint8_t yuv[6 + 16 + 8];
    static const uint8_t expect[3][3] = {{16, 128, 128}, {235, 128, 128}, {81, 90, 240}};
    for (int c = 0; c < 3; c++) {
        assert_int_equal(fread(yuv, 1, sizeof yuv, f), sizeof yuv);
        assert_memory_equal(yuv, "FRAME\n", 6);
        assert_int_equal(yuv[6], expect[c][0]);
        assert_int_equal(yuv[6 + 16], expect[c][1]);
        assert_int_equal(yuv[6 + 16 + 4], expect[c][2]);
    }
    fclose(f);

    y4m_reader r;
    assert_int_equal(y4m_reader_open(&r, path), MG_OK);
    int worst = 0;
    for (int c = 0; c < n; c++) {
        assert_int_equal(y4m_read_frame(&r, got), MG_OK);
        for (int i = 0; i < W * H * 3; i++) {
            int d = abs((int)got[i] - (int)cols[c][i % 3]);
            if (d > worst) worst = d;
        }
        if (c < 2) assert_int_equal(got[0], cols[c][0]); /* black and white are exact */
    }
    y4m_reader_close(&r);
    printf("  flat colours: max abs err %d %s\n", worst, worst <= 2 ? "ok" : "FAIL");
    assert_true(worst <= 2);
}

/* ---- every C tag, built by hand ---------------------------------------------------------- */

/* W=5, H=3 (odd: 4:2:0 chroma is 3x2). Frame 0: Y=235, chroma neutral (white). Frame 1: Y=16
 * (black). Chroma planes hold 128 except where a test wants colour. */
static size_t build_stream(uint8_t *buf, const char *ctag, int nframes, const char *frame_line) {
    const int W = 5, H = 3;
    int cw = 0, ch = 0;
    if (!ctag || !strncmp(ctag, "420", 3)) { cw = 3; ch = 2; }
    else if (!strcmp(ctag, "444")) { cw = W; ch = H; }
    size_t n = (size_t)sprintf((char *)buf, "YUV4MPEG2 W5 H3 F24:1 It A1:1%s%s XYSCSS=whatever\n",
                               ctag ? " C" : "", ctag ? ctag : "");
    for (int f = 0; f < nframes; f++) {
        n += (size_t)sprintf((char *)buf + n, "%s\n", frame_line);
        memset(buf + n, f == 0 ? 235 : 16, W * H);
        n += W * H;
        memset(buf + n, 128, 2 * cw * ch);
        n += 2 * cw * ch;
    }
    return n;
}

static void test_chroma_tags(void **state) {
    (void)state;
    const char *tags[] = {"420jpeg", "420paldv", "420mpeg2", "420", "444", "mono", NULL};
    const y4m_chroma fam[] = {Y4M_C420, Y4M_C420, Y4M_C420, Y4M_C420, Y4M_C444, Y4M_CMONO, Y4M_C420};
    const size_t fbytes[] = {15 + 12, 15 + 12, 15 + 12, 15 + 12, 45, 15, 15 + 12};
    uint8_t buf[4096], rgb[5 * 3 * 3];
    for (int t = 0; t < 7; t++) {
        size_t n = build_stream(buf, tags[t], 2, t % 2 ? "FRAME Ixyz Xanything=1" : "FRAME");
        y4m_reader r;
        FILE *fp;
        assert_int_equal(open_bytes(&r, &fp, buf, n), MG_OK);
        assert_int_equal(r.width, 5);
        assert_int_equal(r.height, 3);
        assert_int_equal(r.fps_num, 24);
        assert_int_equal(r.fps_den, 1);
        assert_int_equal(r.interlace, 't');
        assert_int_equal(r.chroma, fam[t]);
        assert_string_equal(r.chroma_tag, tags[t] ? tags[t] : "420jpeg");
        assert_int_equal(r.frame_bytes, fbytes[t]);
        assert_int_equal(y4m_read_frame(&r, rgb), MG_OK);
        for (int i = 0; i < 45; i++) assert_int_equal(rgb[i], 255);
        assert_int_equal(y4m_read_frame(&r, rgb), MG_OK);
        for (int i = 0; i < 45; i++) assert_int_equal(rgb[i], 0);
        assert_int_equal(y4m_read_frame(&r, rgb), MG_ERR_EOF);
        assert_int_equal(y4m_read_frame(&r, rgb), MG_ERR_EOF); /* and stays at the end */
        y4m_reader_close(&r);
        fclose(fp);
        printf("  C%-9s %zu bytes/frame ok\n", tags[t] ? tags[t] : "(absent)", fbytes[t]);
    }
}

/* 444 with real colour: the chroma of each pixel is its own. */
static void test_444_colour(void **state) {
    (void)state;
    uint8_t buf[256], rgb[2 * 3];
    size_t n = (size_t)sprintf((char *)buf, "YUV4MPEG2 W2 H1 C444\nFRAME\n");
    const uint8_t planes[6] = {81, 145, /* Y: red, green */ 90, 54, /* Cb */ 240, 34 /* Cr */};
    memcpy(buf + n, planes, 6);
    n += 6;
    y4m_reader r;
    FILE *fp;
    assert_int_equal(open_bytes(&r, &fp, buf, n), MG_OK);
    assert_int_equal(y4m_read_frame(&r, rgb), MG_OK);
    printf("  444: red -> (%d,%d,%d), green -> (%d,%d,%d)\n", rgb[0], rgb[1], rgb[2], rgb[3], rgb[4],
           rgb[5]);
    assert_true(rgb[0] >= 253 && rgb[1] <= 2 && rgb[2] <= 2);
    assert_true(rgb[3] <= 2 && rgb[4] >= 253 && rgb[5] <= 2);
    y4m_reader_close(&r);
    fclose(fp);
}

/* XCOLORRANGE=FULL (ffmpeg's gray and yuvj420p) switches to full-range JFIF decoding. */
static void test_colour_range(void **state) {
    (void)state;
    static const struct { const char *hdr; uint8_t planes[6]; size_t np; uint8_t want[6]; } cases[] = {
        {"YUV4MPEG2 W2 H1 Cmono XCOLORRANGE=FULL", {0, 128}, 2, {0, 0, 0, 128, 128, 128}},
        {"YUV4MPEG2 W2 H1 Cmono", {16, 128}, 2, {0, 0, 0, 130, 130, 130}},
        {"YUV4MPEG2 W2 H1 Cmono XCOLORRANGE=LIMITED", {16, 128}, 2, {0, 0, 0, 130, 130, 130}},
        /* full-range red (76, 85, 255) and green (150, 44, 21), 444 */
        {"YUV4MPEG2 W2 H1 C444 XYSCSS=444 XCOLORRANGE=FULL", {76, 150, 85, 44, 255, 21}, 6,
         {254, 0, 0, 0, 255, 0}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t buf[256], rgb[6];
        size_t n = (size_t)sprintf((char *)buf, "%s\nFRAME\n", cases[c].hdr);
        memcpy(buf + n, cases[c].planes, cases[c].np);
        y4m_reader r;
        FILE *fp;
        assert_int_equal(open_bytes(&r, &fp, buf, n + cases[c].np), MG_OK);
        assert_int_equal(y4m_read_frame(&r, rgb), MG_OK);
        printf("  %-48s -> (%d,%d,%d) (%d,%d,%d)\n", cases[c].hdr, rgb[0], rgb[1], rgb[2], rgb[3],
               rgb[4], rgb[5]);
        for (int i = 0; i < 6; i++) assert_true(abs((int)rgb[i] - cases[c].want[i]) <= 1);
        y4m_reader_close(&r);
        fclose(fp);
    }
}

/* ---- streams that are not files ---------------------------------------------------------- */

static void test_pipe_reading(void **state) {
    (void)state;
    const int W = 32, H = 24, N = 4;
    char path[512], cmd[600];
    snprintf(path, sizeof path, "%s/pipe.y4m", tu_tmpdir());
    uint8_t *img = malloc(W * H * 3), *a = malloc(W * H * 3), *b = malloc(W * H * 3);
    y4m_writer w;
    assert_int_equal(y4m_writer_open(&w, path, W, H, 25, 1), MG_OK);
    for (int f = 0; f < N; f++) {
        testsrc_render(img, W, H, f);
        assert_int_equal(y4m_write_frame(&w, img), MG_OK);
    }
    assert_int_equal(y4m_writer_close(&w), MG_OK);

    /* a real pipe: no seeking possible */
    snprintf(cmd, sizeof cmd, "cat '%s'", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    y4m_reader rp, rf;
    assert_int_equal(y4m_reader_open_fp(&rp, p, "pipe"), MG_OK);
    assert_int_equal(y4m_reader_open(&rf, path), MG_OK);
    int frames = 0;
    for (;;) {
        mg_status s1 = y4m_read_frame(&rp, a), s2 = y4m_read_frame(&rf, b);
        assert_int_equal(s1, s2);
        if (s1 == MG_ERR_EOF) break;
        assert_int_equal(s1, MG_OK);
        assert_memory_equal(a, b, W * H * 3);
        frames++;
    }
    assert_int_equal(frames, N);
    y4m_reader_close(&rp);
    assert_int_equal(pclose(p), 0); /* the reader did not close what it does not own */
    y4m_reader_close(&rf);

    /* fmemopen over the whole file, read byte-identically */
    long sz = file_size(path);
    if (sz <= 0) fail();
    uint8_t *bytes = malloc((size_t)sz);
    FILE *f = fopen(path, "rb");
    assert_int_equal(fread(bytes, 1, sz, f), (size_t)sz);
    fclose(f);
    FILE *m = memfile(bytes, sz);
    assert_int_equal(y4m_reader_open_fp(&rp, m, "mem"), MG_OK);
    frames = 0;
    while (y4m_read_frame(&rp, a) == MG_OK) frames++;
    assert_int_equal(frames, N);
    y4m_reader_close(&rp);
    fclose(m);
    free(bytes);
    free(img);
    free(a);
    free(b);
}

/* ---- rejection ---------------------------------------------------------------------------- */

static void test_reject_headers(void **state) {
    (void)state;
    static const struct { const char *bytes; const char *why; } bad[] = {
        {"", "empty input"},
        {"GIF89a\x01\x00\x01\x00", "not a YUV4MPEG2"},
        {"YUV4MPEG W2 H2\n", "not a YUV4MPEG2"},
        {"YUV4MPEG2W2 H2\n", "not a YUV4MPEG2"},
        {"YUV4M", "truncated"},
        {"YUV4MPEG2 W2 H2", "truncated"},
        {"YUV4MPEG2 H2\n", "missing width"},
        {"YUV4MPEG2 W2\n", "missing height"},
        {"YUV4MPEG2\n", "missing width"},
        {"YUV4MPEG2 W0 H2\n", "bad width"},
        {"YUV4MPEG2 W2 H0\n", "bad height"},
        {"YUV4MPEG2 W16385 H2\n", "bad width"},
        {"YUV4MPEG2 W2 H99999999999999999999999\n", "bad height"},
        {"YUV4MPEG2 W-2 H2\n", "bad width"},
        {"YUV4MPEG2 W2x H2\n", "bad width"},
        {"YUV4MPEG2 W H2\n", "bad width"},
        {"YUV4MPEG2 W2 H2 F30:0\n", "bad frame rate"},
        {"YUV4MPEG2 W2 H2 F0:1\n", "bad frame rate"},
        {"YUV4MPEG2 W2 H2 F30\n", "bad frame rate"},
        {"YUV4MPEG2 W2 H2 F:\n", "bad frame rate"},
        {"YUV4MPEG2 W2 H2 F99999999999:1\n", "bad frame rate"},
        {"YUV4MPEG2 W2 H2 Az\n", "bad aspect"},
        {"YUV4MPEG2 W2 H2 Iz\n", "bad interlace"},
        {"YUV4MPEG2 W2 H2 C422\n", "unsupported colourspace"},
        {"YUV4MPEG2 W2 H2 C420p10 XYSCSS=420P10\n", "unsupported colourspace"},
        {"YUV4MPEG2 W2 H2 C444alpha\n", "unsupported colourspace"},
        {"YUV4MPEG2 W2 H2 Cmono16\n", "unsupported colourspace"},
        {"YUV4MPEG2 W2 H2 C\n", "unsupported colourspace"},
        {"YUV4MPEG2 W2 H2 Z1\n", "unknown parameter"},
        {"YUV4MPEG2 W2 H2 W3\n", "given twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        y4m_reader r;
        FILE *fp;
        mg_clear_error();
        mg_status st = open_bytes(&r, &fp, bad[i].bytes, strlen(bad[i].bytes));
        int ok = st == MG_ERR_FORMAT && strstr(mg_last_error(), bad[i].why) && strstr(mg_last_error(), "mem");
        printf("  %-44.44s -> %s\n", mg_last_error(), ok ? "ok" : "FAIL");
        assert_true(ok);
    }
    /* a NUL inside the header, an endless header line, and the pixel limit */
    {
        static const char nul[] = "YUV4MPEG2 W2\0 H2\n";
        y4m_reader r;
        FILE *fp;
        assert_int_equal(open_bytes(&r, &fp, nul, sizeof nul - 1), MG_ERR_FORMAT);
        assert_non_null(strstr(mg_last_error(), "NUL"));
    }
    {
        char *big = malloc(4096);
        int n = sprintf(big, "YUV4MPEG2 W2 H2 ");
        memset(big + n, 'X', 4096 - n);
        big[4095] = '\n';
        y4m_reader r;
        FILE *fp;
        assert_int_equal(open_bytes(&r, &fp, big, 4096), MG_ERR_FORMAT);
        assert_non_null(strstr(mg_last_error(), "longer than"));
        /* exactly at the bound is fine: 1023 bytes and the newline */
        memset(big + n, 'X', 1023 - n);
        big[1023] = '\n';
        assert_int_equal(open_bytes(&r, &fp, big, 1024), MG_OK);
        y4m_reader_close(&r);
        fclose(fp);
        big[1023] = 'X';
        big[1024] = '\n';
        assert_int_equal(open_bytes(&r, &fp, big, 1025), MG_ERR_FORMAT);
        free(big);
    }
    {
        static const char hdr[] = "YUV4MPEG2 W300 H300\n";
        FILE *fp = memfile(hdr, sizeof hdr - 1);
        y4m_reader r;
        assert_int_equal(y4m_reader_open_fp_limit(&r, fp, "mem", 256 * 256), MG_ERR_FORMAT);
        assert_non_null(strstr(mg_last_error(), "exceeds the limit"));
        fclose(fp);
        fp = memfile(hdr, sizeof hdr - 1);
        assert_int_equal(y4m_reader_open_fp_limit(&r, fp, "mem", 300 * 300), MG_OK);
        y4m_reader_close(&r);
        fclose(fp);
    }
    {
        y4m_reader r;
        char p[512];
        snprintf(p, sizeof p, "%s/no/such/file.y4m", tu_tmpdir());
        assert_int_equal(y4m_reader_open(&r, p), MG_ERR_IO);
        assert_non_null(strstr(mg_last_error(), p));
        y4m_reader_close(&r);
    }
}

static void expect_frame_error(const uint8_t *bytes, size_t n, int good_frames, mg_status want,
                               const char *why) {
    y4m_reader r;
    FILE *fp;
    uint8_t rgb[5 * 3 * 3];
    assert_int_equal(open_bytes(&r, &fp, bytes, n), MG_OK);
    for (int f = 0; f < good_frames; f++) assert_int_equal(y4m_read_frame(&r, rgb), MG_OK);
    mg_status st = y4m_read_frame(&r, rgb);
    char frame[32];
    snprintf(frame, sizeof frame, "frame %d", good_frames);
    int ok = st == want && strstr(mg_last_error(), why) && strstr(mg_last_error(), "mem") &&
             (want == MG_ERR_EOF || strstr(mg_last_error(), frame));
    printf("  %-60.60s -> %s\n", mg_last_error(), ok ? "ok" : "FAIL");
    assert_true(ok);
    y4m_reader_close(&r);
    fclose(fp);
}

static void test_reject_frames(void **state) {
    (void)state;
    uint8_t buf[4096];
    size_t n2 = build_stream(buf, "420jpeg", 2, "FRAME"); /* 2 frames of 6 + 27 bytes */
    size_t hdr = n2 - 2 * 33;
    expect_frame_error(buf, hdr, 0, MG_ERR_EOF, "after 0 frames");  /* no frames: clean end */
    expect_frame_error(buf, n2, 2, MG_ERR_EOF, "after 2 frames");
    expect_frame_error(buf, n2 - 1, 1, MG_ERR_FORMAT, "truncated: 26 of 27");
    expect_frame_error(buf, hdr + 33 + 6, 1, MG_ERR_FORMAT, "truncated: 0 of 27");
    expect_frame_error(buf, hdr + 33 + 3, 1, MG_ERR_FORMAT, "truncated FRAME line");
    expect_frame_error(buf, hdr + 33 + 5, 1, MG_ERR_FORMAT, "truncated FRAME line");
    /* garbage where a FRAME line should be */
    memcpy(buf + hdr + 33, "FRAMEX", 6);
    expect_frame_error(buf, n2, 1, MG_ERR_FORMAT, "expected a FRAME line");
    memcpy(buf + hdr + 33, "\x00\xff\x01RAM", 6);
    expect_frame_error(buf, n2, 1, MG_ERR_FORMAT, "expected a FRAME line");
    /* frame data longer than declared: the extra bytes are a bad FRAME line */
    n2 = build_stream(buf, "420jpeg", 2, "FRAME");
    memcpy(buf + n2, "junk", 4);
    expect_frame_error(buf, n2 + 4, 2, MG_ERR_FORMAT, "expected a FRAME line");
    /* an endless FRAME line */
    size_t n = hdr;
    memcpy(buf + n, "FRAME ", 6);
    memset(buf + n + 6, 'p', 2000);
    expect_frame_error(buf, n + 2006, 0, MG_ERR_FORMAT, "longer than");
}

/* ---- writer failures ---------------------------------------------------------------------- */

static void test_writer_failures(void **state) {
    (void)state;
    uint8_t img[8 * 8 * 3];
    testsrc_render(img, 8, 8, 0);
    y4m_writer w;
    char path[512];

    snprintf(path, sizeof path, "%s/no/such/dir/out.y4m", tu_tmpdir());
    assert_int_equal(y4m_writer_open(&w, path, 8, 8, 25, 1), MG_ERR_IO);
    printf("  %s\n", mg_last_error());
    assert_non_null(strstr(mg_last_error(), path));
    assert_non_null(strstr(mg_last_error(), strerror(ENOENT)));
    assert_int_equal(y4m_writer_close(&w), MG_OK); /* closing a failed open is harmless */
    y4m_writer_abort(&w);

    assert_int_equal(y4m_writer_open(&w, "x.y4m", 0, 8, 25, 1), MG_ERR_ARG);
    assert_int_equal(y4m_writer_open(&w, "x.y4m", 8, 8, 25, 0), MG_ERR_ARG);
    assert_int_equal(y4m_writer_open(&w, "x.y4m", 16385, 8, 25, 1), MG_ERR_ARG);

    /* abort with no earlier file: nothing left behind */
    snprintf(path, sizeof path, "%s/aborted.y4m", tu_tmpdir());
    assert_int_equal(y4m_writer_open(&w, path, 8, 8, 25, 1), MG_OK);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(y4m_write_frame(&w, img), MG_OK);
    assert_int_equal(y4m_write_frame(&w, img), MG_OK);
    y4m_writer_abort(&w);
    assert_false(file_exists(path));
    assert_false(file_exists(tmp));
    assert_int_equal(y4m_write_frame(&w, img), MG_ERR_ARG); /* aborted: not open */

    /* abort over a good file: the good file is untouched */
    assert_int_equal(y4m_writer_open(&w, path, 8, 8, 25, 1), MG_OK);
    assert_int_equal(y4m_write_frame(&w, img), MG_OK);
    assert_int_equal(y4m_writer_close(&w), MG_OK);
    long good = file_size(path);
    assert_int_equal(y4m_writer_open(&w, path, 8, 8, 25, 1), MG_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(y4m_write_frame(&w, img), MG_OK);
    assert_int_equal(file_size(path), good); /* still the old one while writing */
    y4m_writer_abort(&w);
    assert_int_equal(file_size(path), good);
    assert_false(file_exists(tmp));

    /* a full disk: /dev/full is written in place and fails with ENOSPC at a write or the close */
    if (file_exists("/dev/full")) {
        mg_status st = y4m_writer_open(&w, "/dev/full", 64, 64, 25, 1);
        uint8_t *big = calloc(64 * 64 * 3, 1);
        for (int i = 0; i < 4 && st == MG_OK; i++) st = y4m_write_frame(&w, big);
        mg_status sc = y4m_writer_close(&w);
        printf("  /dev/full: write %s, close %s: %s\n", mg_strerror(st), mg_strerror(sc), mg_last_error());
        assert_true(st == MG_ERR_IO || sc == MG_ERR_IO);
        assert_int_equal(sc, MG_ERR_IO);
        assert_non_null(strstr(mg_last_error(), "/dev/full"));
        assert_non_null(strstr(mg_last_error(), strerror(ENOSPC)));
        free(big);
    }
}

/* A disk that fills mid-stream (a file-size limit stands in for it): the output keeps every
 * whole frame written before the failure, and reads back as a valid y4m of that many frames. */
static void test_writer_keeps_frames_on_full_disk(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/full.y4m", tu_tmpdir());
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 20000; /* bytes: the header and four 64x48 frames (4614 bytes each) fit, not five */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    y4m_writer w = {0};
    uint8_t *img = calloc(64 * 48 * 3, 1);
    assert_int_equal(y4m_writer_open(&w, path, 64, 48, 25, 1), MG_OK);
    mg_status st = MG_OK;
    int written = 0;
    for (int i = 0; i < 50 && st == MG_OK; i++) {
        st = y4m_write_frame(&w, img);
        if (st == MG_OK) written++;
    }
    mg_status sc = y4m_writer_close(&w);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    printf("  full disk: close %s: %s\n", mg_strerror(sc), mg_last_error());
    assert_int_equal(sc, MG_ERR_IO);
    assert_non_null(strstr(mg_last_error(), "kept the"));
    y4m_reader r;
    assert_int_equal(y4m_reader_open(&r, path), MG_OK);
    int n = 0;
    while (y4m_read_frame(&r, img) == MG_OK) n++;
    y4m_reader_close(&r);
    printf("  full disk: %d frames accepted by the writer (buffered), %d whole frames kept\n", written, n);
    assert_true(n >= 3 && n <= written);
    free(img);
}

/* ---- test scene --------------------------------------------------------------------------- */

static void test_testsrc(void **state) {
    (void)state;
    const int W = 96, H = 64;
    const size_t n = (size_t)W * H * 3;
    uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n);
    assert_int_equal(testsrc_render(a, W, H, 0), MG_OK);
    assert_int_equal(testsrc_render(b, W, H, 0), MG_OK);
    assert_memory_equal(a, b, n); /* deterministic */
    assert_int_equal(testsrc_render(b, W, H, 1), MG_OK);
    assert_memory_not_equal(a, b, n); /* moving */
    assert_int_equal(testsrc_render(c, W, H, 100), MG_OK);
    double mad1 = compare(a, b, n).mean, mad100 = compare(a, c, n).mean;
    /* consecutive frames are close, distant frames far: smooth in time */
    int ok_motion = mad1 > 0.1 && mad1 < 12 && mad100 > 2 * mad1;
    printf("  testsrc motion: mean abs diff 0->1 %.2f, 0->100 %.2f %s\n", mad1, mad100,
           ok_motion ? "ok" : "FAIL");
    assert_true(ok_motion);
    for (int ch = 0; ch < 3; ch++) {
        double s = 0, ss = 0;
        for (size_t i = ch; i < n; i += 3) { s += a[i]; ss += (double)a[i] * a[i]; }
        double m = s / (W * H), sd = sqrt(ss / (W * H) - m * m);
        int ok = sd > 25 && m > 40 && m < 215;
        printf("  testsrc channel %d: mean %.1f std %.1f %s\n", ch, m, sd, ok ? "ok" : "FAIL");
        assert_true(ok);
    }
    /* long streams: a very late frame still renders, and differs from its neighbour */
    assert_int_equal(testsrc_render(a, W, H, 1000000000000L), MG_OK);
    assert_int_equal(testsrc_render(b, W, H, 1000000000001L), MG_OK);
    double madl = compare(a, b, n).mean;
    assert_true(madl > 0.1 && madl < 12);
    assert_int_equal(testsrc_render(a, W, H, -5), MG_OK);
    free(a);
    free(b);
    free(c);

    /* odd and tiny sizes, and sizes that cross the renderer's column strips (ASan watches) */
    const int sizes[][2] = {{1, 1}, {1, 9}, {9, 1}, {2, 2}, {129, 3}, {300, 17}, {257, 257}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t m = (size_t)sizes[i][0] * sizes[i][1] * 3;
        uint8_t *p = malloc(m);
        assert_int_equal(testsrc_render(p, sizes[i][0], sizes[i][1], 7), MG_OK);
        free(p);
    }
    uint8_t one[3];
    assert_int_equal(testsrc_render(NULL, 4, 4, 0), MG_ERR_ARG);
    assert_int_equal(testsrc_render(one, 0, 1, 0), MG_ERR_ARG);
    assert_int_equal(testsrc_render(one, 1, -1, 0), MG_ERR_ARG);

    uint8_t *t = malloc(256 * 256 * 3);
    double t0 = mg_now_ms();
    for (int f = 0; f < 50; f++) testsrc_render(t, 256, 256, f);
    printf("  testsrc 256x256: %.3f ms/frame (this build's flags; target < 2 ms at -O3)\n",
           (mg_now_ms() - t0) / 50);
    free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_testsrc), cmocka_unit_test(test_roundtrip_smooth),
        cmocka_unit_test(test_flat_colours),      cmocka_unit_test(test_chroma_tags),
        cmocka_unit_test(test_444_colour),        cmocka_unit_test(test_colour_range),
        cmocka_unit_test(test_pipe_reading),
        cmocka_unit_test(test_reject_headers),    cmocka_unit_test(test_reject_frames),
        cmocka_unit_test(test_writer_failures),   cmocka_unit_test(test_testsrc),
        cmocka_unit_test(test_writer_keeps_frames_on_full_disk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
