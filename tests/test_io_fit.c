/* Fitting inputs into the model's frame size (src/io/fit.h): crop/pad/stretch geometry, the
 * plain-C resampler used for y4m inputs, and the automatic size for inputs without --size. */
#include <string.h>

#include "io/fit.h"
#include "io/font.h"
#include "testutil.h"

static void test_geometry(void **state) {
    (void)state;
    fit_rect s, d;
    /* 640x480 (4:3) into 320x240: every mode is a plain scale */
    for (int m = FIT_CROP; m <= FIT_STRETCH; m++) {
        fit_geometry((fit_mode)m, 640, 480, 320, 240, 2, &s, &d);
        assert_true(s.x == 0 && s.y == 0 && s.w == 640 && s.h == 480);
        assert_true(d.x == 0 && d.y == 0 && d.w == 320 && d.h == 240);
    }
    /* 1920x1080 into 256x256: crop keeps the centred 1080x1080 square */
    fit_geometry(FIT_CROP, 1920, 1080, 256, 256, 2, &s, &d);
    assert_int_equal(s.w, 1080), assert_int_equal(s.h, 1080), assert_int_equal(s.x, 420), assert_int_equal(s.y, 0);
    assert_true(d.w == 256 && d.h == 256);
    /* pad: the whole picture, 256x144, centred with bars above and below */
    fit_geometry(FIT_PAD, 1920, 1080, 256, 256, 2, &s, &d);
    assert_true(s.w == 1920 && s.h == 1080);
    assert_int_equal(d.w, 256), assert_int_equal(d.h, 144), assert_int_equal(d.x, 0), assert_int_equal(d.y, 56);
    /* a tall input padded: bars left and right */
    fit_geometry(FIT_PAD, 480, 640, 256, 256, 1, &s, &d);
    assert_int_equal(d.h, 256), assert_int_equal(d.w, 192), assert_int_equal(d.x, 32);
    /* crop offsets of a 4:2:0 input stay even (no chroma sample split) */
    fit_geometry(FIT_CROP, 645, 481, 64, 64, 2, &s, &d);
    assert_true(s.x % 2 == 0 && s.y % 2 == 0 && s.w % 2 == 0 && s.h % 2 == 0);
    assert_true(s.x + s.w <= 645 && s.y + s.h <= 481);
    /* stretch: whole to whole */
    fit_geometry(FIT_STRETCH, 1920, 1080, 256, 256, 2, &s, &d);
    assert_true(s.w == 1920 && s.h == 1080 && d.w == 256 && d.h == 256);
}

static void test_auto_size(void **state) {
    (void)state;
    int w, h;
    fit_auto_size(640, 480, 512, &w, &h);
    assert_int_equal(w, 512), assert_int_equal(h, 384);
    fit_auto_size(1920, 1080, 512, &w, &h);
    assert_int_equal(w, 512), assert_int_equal(h, 288);
    fit_auto_size(320, 240, 512, &w, &h);
    assert_int_equal(w, 320), assert_int_equal(h, 240);
    fit_auto_size(200, 120, 512, &w, &h);
    assert_int_equal(w, 192), assert_int_equal(h, 112);
    fit_auto_size(10, 7, 512, &w, &h); /* never below 16x16 */
    assert_int_equal(w, 16), assert_int_equal(h, 16);
}

static void fit_rgb(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh, fit_mode m) {
    fit_plan p;
    assert_int_equal(fit_plan_init(&p, sw, sh, dw, dh, m), 0);
    fit_plan_run(&p, dst, src);
    fit_plan_free(&p);
}

static void test_resample(void **state) {
    (void)state;
    enum { SW = 40, SH = 20, DW = 16, DH = 16 };
    uint8_t src[SH][SW][3], dst[DH][DW][3];
    /* a flat colour stays exactly that colour when shrunk or stretched */
    for (int y = 0; y < SH; y++)
        for (int x = 0; x < SW; x++) src[y][x][0] = 200, src[y][x][1] = 100, src[y][x][2] = 7;
    fit_rgb(&dst[0][0][0], DW, DH, &src[0][0][0], SW, SH, FIT_STRETCH);
    for (int y = 0; y < DH; y++)
        for (int x = 0; x < DW; x++) assert_true(dst[y][x][0] == 200 && dst[y][x][1] == 100 && dst[y][x][2] == 7);
    /* pad: black bars above and below the 16x8 picture */
    memset(dst, 99, sizeof dst);
    fit_rgb(&dst[0][0][0], DW, DH, &src[0][0][0], SW, SH, FIT_PAD);
    assert_int_equal(dst[0][5][0], 0);
    assert_int_equal(dst[DH - 1][5][1], 0);
    assert_int_equal(dst[DH / 2][5][0], 200);
    /* crop: left half 0, right half 255 (a vertical edge at x = 20): the centred 20x20 crop
     * keeps the edge in the middle */
    for (int y = 0; y < SH; y++)
        for (int x = 0; x < SW; x++) src[y][x][0] = src[y][x][1] = src[y][x][2] = x < SW / 2 ? 0 : 255;
    fit_rgb(&dst[0][0][0], DW, DH, &src[0][0][0], SW, SH, FIT_CROP);
    assert_int_equal(dst[8][0][0], 0);
    assert_int_equal(dst[8][DW - 1][0], 255);
    assert_true(dst[8][DW / 2 - 2][0] < 40 && dst[8][DW / 2 + 1][0] > 215);
    /* a smooth ramp shrunk 5x stays a ramp within a level of the box average */
    enum { RW = 160, RH = 10 };
    static uint8_t ramp[RH][RW][3], small[2][32][3];
    for (int y = 0; y < RH; y++)
        for (int x = 0; x < RW; x++) ramp[y][x][0] = ramp[y][x][1] = ramp[y][x][2] = (uint8_t)(x * 255 / (RW - 1));
    fit_rgb(&small[0][0][0], 32, 2, &ramp[0][0][0], RW, RH, FIT_STRETCH);
    for (int x = 1; x < 31; x++) {
        double want = 0;
        for (int k = 0; k < 5; k++) want += (x * 5 + k) * 255 / (RW - 1);
        want /= 5;
        assert_true(abs(small[1][x][0] - (int)(want + 0.5)) <= 1);
    }
    /* enlarging: bilinear between two pixels */
    uint8_t two[1][2][3] = {{{0, 0, 0}, {255, 255, 255}}}, wide[1][8][3];
    fit_rgb(&wide[0][0][0], 8, 1, &two[0][0][0], 2, 1, FIT_STRETCH);
    assert_int_equal(wide[0][0][0], 0);
    assert_int_equal(wide[0][7][0], 255);
    for (int x = 1; x < 8; x++) assert_true(wide[0][x][0] >= wide[0][x - 1][0]);
    /* equal sizes: a copy */
    uint8_t a[4][4][3], b[4][4][3];
    for (int i = 0; i < 48; i++) (&a[0][0][0])[i] = (uint8_t)(i * 5);
    fit_rgb(&b[0][0][0], 4, 4, &a[0][0][0], 4, 4, FIT_PAD);
    assert_memory_equal(a, b, sizeof a);
}

static void test_font(void **state) {
    (void)state;
    assert_int_equal(font_text_width("", 2), 0);
    assert_int_equal(font_text_width("ab", 1), 11);
    assert_int_equal(font_text_width("ab", 2), 22);
    assert_ptr_equal(font_glyph(1), font_glyph('?')); /* unprintable draws as ? */
    uint8_t img[10][20][3];
    memset(img, 0, sizeof img);
    const uint8_t white[3] = {255, 255, 255};
    font_draw_rgb(&img[0][0][0], 20, 10, 1, 1, "|", 1, white); /* a vertical bar: column 2 of the glyph */
    int lit = 0;
    for (int y = 0; y < 10; y++) lit += img[y][3][0] == 255;
    assert_int_equal(lit, 6);
    font_draw_rgb(&img[0][0][0], 20, 10, 18, 8, "WWW", 3, white); /* clipped, no overflow */
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_geometry), cmocka_unit_test(test_auto_size),
                                       cmocka_unit_test(test_resample), cmocka_unit_test(test_font)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
