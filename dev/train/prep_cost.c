/* What the trainer's batch thread spends per frame (docs/TRAINING.md, "Throughput of the loop"):
 * reading a clip from the shards, then each prompt's degradation (the model input) and style
 * (the target) at the training size, one thread, on frames of the data. A dit batch of B clips
 * x T frames costs B T (read + the clip's prompt's degrade + style), the prompt drawn uniformly.
 *
 *   make build/libmirage.a && cc -O2 -Iinclude -Isrc dev/train/prep_cost.c build/libmirage.a -fopenmp -lm \
 *       -lpthread -lcjson -lturbojpeg -lpng -lopenblas -L/usr/local/cuda/lib64 -lcublas -lcublasLt \
 *       -lcudart_static -ldl -lrt -lstdc++ $(pkg-config --libs libavformat libavcodec libavutil libswscale \
 *       libavdevice sdl2 libwebsockets) -o /tmp/prep_cost && OMP_NUM_THREADS=1 /tmp/prep_cost [data [S]] */
#include <stdio.h>
#include <stdlib.h>

#include "core/status.h"
#include "core/timing.h"
#include "data/data.h"
#include "eval/degrade.h"

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "data";
    int S = argc > 2 ? atoi(argv[2]) : 256, T = 6, n = 16;
    dataset *ds;
    if (S < 16 || S % 16 || dataset_open(&ds, dir, "train") != MG_OK) {
        fprintf(stderr, "prep_cost: %s\n", S < 16 || S % 16 ? "size: a multiple of 16" : mg_last_error());
        return 1;
    }
    uint8_t *clip = malloc((size_t)T * S * S * 3), *out = malloc((size_t)S * S * 3);
    if (!clip || !out) return 1;
    double t0 = mg_now_ms();
    for (int i = 0; i < n; i++)
        if (dataset_sample_clip(ds, 1000 + i, T, S, clip) != MG_OK) {
            fprintf(stderr, "prep_cost: %s\n", mg_last_error());
            return 1;
        }
    printf("%dx%d: read %.2f ms a frame (%d clips of %d)\n", S, S, (mg_now_ms() - t0) / n / T, n, T);
    const char *pr[] = {"colorize", "upscale", "restore", "style:toon", "style:sketch", "style:thermal", "dream"};
    degrade_params p = degrade_params_default();
    for (int k = 0; k < 7; k++) {
        double a = mg_now_ms();
        for (int r = 0; r < T; r++) degrade_apply_params(pr[k], clip + (size_t)r * S * S * 3, out, S, S, (uint64_t)r, &p);
        double b = mg_now_ms();
        for (int r = 0; r < T; r++) style_apply(pr[k], clip + (size_t)r * S * S * 3, out, S, S);
        double c = mg_now_ms();
        printf("%-14s degrade %6.2f ms a frame, style %6.2f ms a frame\n", pr[k], (b - a) / T, (c - b) / T);
    }
    dataset_close(ds);
    free(clip), free(out);
    return 0;
}
