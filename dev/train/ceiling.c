/* Issue 6, the styles' detail: what can a model reach whose output passes through the
 * autoencoder and whose input is the autoencoder's latent of the frame? For each frame of a clip
 * and a style prompt (truth = style(frame)), two outputs scored against the truth:
 *
 *   A  AE(truth)              the decoder's ceiling: the best latent there is, decoded
 *   B  AE(style(AE(frame)))   a deterministic function of the input's latent alone (the DiT's
 *                             conditioning) drawn through the decoder: the style applied to what
 *                             the input's latent keeps of the frame
 *
 * AE(x) = decode(encode(x)). Printed: mean PSNR, the detail ratio (the eval's: the outputs'
 * summed 4-neighbour Laplacian energy over the truth's) overall and in the worst 50-frame window,
 * the bar being 0.25 (docs/EVAL.md).
 *
 *   make && cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -I/usr/include/cjson dev/train/ceiling.c \
 *       build/libmirage.a -fopenmp -lm -lpthread -lcjson -lopenblas -lturbojpeg -lpng $(pkg-config --libs \
 *       libavformat libavcodec libavutil libswscale libavdevice sdl2 libwebsockets) -o /tmp/ceiling
 *   /tmp/ceiling models/mirage-tiny.safetensors clip.y4m style:sketch [frames]   (256x256 y4m) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "eval/degrade.h"
#include "eval/metrics.h"
#include "io/source.h"
#include "mirage.h"
#include "model/forward.h"
#include "model/model.h"
#include "ops/ops.h"

#define WIN 50

static void ae(const mg_model *m, const uint8_t *in, uint8_t *out, float *img, float *lat, float *work, int W, int H) {
    size_t n = (size_t)W * H * 3;
    rgb_u8_to_float(img, in, n);
    tae_encode(m, lat, img, work, H, W);
    tae_decode(m, img, lat, work, H, W);
    rgb_float_to_u8(out, img, n);
}

static double worst_window(const double *out, const double *ref, int n) {
    double worst = 1e30;
    for (int i = 0; i + WIN <= n; i++) {
        double a = 0, b = 0;
        for (int k = i; k < i + WIN; k++) a += out[k], b += ref[k];
        if (b > 0 && a / b < worst) worst = a / b;
    }
    return n >= WIN ? worst : 0.0 / 0.0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: ceiling MODEL CLIP.y4m STYLE [frames]\n");
        return 2;
    }
    int N = argc > 4 ? atoi(argv[4]) : 100000;
    mg_model *m;
    source *src;
    source_opts so = {0};
    if (mg_model_load(argv[1], &m) != MG_OK || source_open(&src, argv[2], &so) != MG_OK) {
        fprintf(stderr, "ceiling: %s\n", mg_last_error());
        return 1;
    }
    int W = src->in_width, H = src->in_height;
    const mg_config *c = mg_model_config(m);
    size_t n = (size_t)W * H * 3, pad = n + SOURCE_RGB_PAD;
    uint8_t *frame = malloc(pad), *truth = malloc(n), *a = malloc(n), *r = malloc(n), *sr = malloc(n), *b = malloc(n);
    float *img = malloc(n * sizeof(float)), *lat = malloc((size_t)(W / 8) * (H / 8) * c->z_ch * sizeof(float));
    float *work = malloc(tae_work_floats(c, H, W) * sizeof(float));
    double *dt = malloc(100000 * sizeof(double)), *da = malloc(100000 * sizeof(double)), *db = malloc(100000 * sizeof(double));
    if (!frame || !truth || !a || !r || !sr || !b || !img || !lat || !work || !dt || !da || !db) return 1;
    if (source_set_size(src, W, H, FIT_CROP) != MG_OK) return 1;
    double pa = 0, pb = 0, sa = 0, sb = 0, st = 0;
    int f = 0;
    source_frame sf;
    while (f < N && f < 100000 && source_read(src, frame, &sf) == MG_OK) {
        if (style_apply(argv[3], frame, truth, W, H) != MG_OK) {
            fprintf(stderr, "ceiling: %s\n", mg_last_error());
            return 1;
        }
        ae(m, truth, a, img, lat, work, W, H);
        ae(m, frame, r, img, lat, work, W, H);
        style_apply(argv[3], r, sr, W, H);
        ae(m, sr, b, img, lat, work, W, H);
        pa += metric_psnr(a, truth, n), pb += metric_psnr(b, truth, n);
        dt[f] = metric_detail(truth, W, H), da[f] = metric_detail(a, W, H), db[f] = metric_detail(b, W, H);
        st += dt[f], sa += da[f], sb += db[f];
        f++;
    }
    if (!f) return 1;
    printf("%s, %d frames of %dx%d (%s)\n", argv[3], f, W, H, argv[2]);
    printf("  A AE(truth):              PSNR %.2f dB, detail %.3f, worst %d-frame window %.3f\n", pa / f, sa / st, WIN,
           worst_window(da, dt, f));
    printf("  B AE(style(AE(frame))):   PSNR %.2f dB, detail %.3f, worst %d-frame window %.3f\n", pb / f, sb / st, WIN,
           worst_window(db, dt, f));
    source_close(src);
    mg_model_free(m);
    return 0;
}
