/* Training data (issue 5): the builder and the reader through the library. Inputs are made
 * here — y4m videos of a moving texture and PPM photos — so no network and no ffmpeg program
 * is needed. Checks: split by source (every source in exactly one split, val non-empty),
 * counts, clips a pure function of the seed (also from 4 threads at once), different seeds
 * different clips, synthetic clips that move but stay related frame to frame, real video
 * clips that follow the video, and damaged shards — truncated anywhere, bytes flipped in the
 * header, the index and the frames, foreign files, wrong versions, missing or mixed shards —
 * each refused with MG_ERR_FORMAT naming the file, never a crash. Prints the reader's speed. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "core/status.h"
#include "core/timing.h"
#include "data/camera.h"
#include "data/data.h"
#include "data/shard.h"
#include "testutil.h"

static char g_root[512], g_src[600], g_mixed[600], g_photos[600], g_videos[600];

/* A smooth colour texture with some detail, different per seed. */
static void texture(uint8_t *rgb, int W, int H, int seed, float dx, float dy) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float u = x + dx, v = y + dy;
            for (int c = 0; c < 3; c++) {
                float f = 128 + 50 * sinf(u * (0.05f + 0.01f * c) + v * 0.03f + seed) +
                          35 * sinf(u * 0.011f - v * (0.09f + 0.02f * c) + 2 * seed) +
                          25 * sinf((u + 2 * v) * 0.21f + c + seed);
                rgb[((size_t)y * W + x) * 3 + c] = (uint8_t)(f < 0 ? 0 : f > 255 ? 255 : f);
            }
        }
}

static void write_ppm(const char *path, int W, int H, int seed) {
    uint8_t *rgb = malloc((size_t)W * H * 3);
    texture(rgb, W, H, seed, 0, 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fprintf(f, "P6\n%d %d\n255\n", W, H);
    fwrite(rgb, 1, (size_t)W * H * 3, f);
    fclose(f);
    free(rgb);
}

/* A y4m (4:4:4, full-range-ish BT.601 conversion is not needed: luma = grey texture pattern)
 * whose texture pans 2 pixels a frame. */
static void write_y4m(const char *path, int W, int H, int frames, int seed) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fprintf(f, "YUV4MPEG2 W%d H%d F25:1 Ip A1:1 C444\n", W, H);
    uint8_t *rgb = malloc((size_t)W * H * 3), *plane = malloc((size_t)W * H);
    for (int t = 0; t < frames; t++) {
        texture(rgb, W, H, seed, 2.0f * t, 0.5f * t);
        fputs("FRAME\n", f);
        for (int c = 0; c < 3; c++) {
            for (size_t i = 0; i < (size_t)W * H; i++) {
                float r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2], v;
                if (c == 0) v = 16 + 0.257f * r + 0.504f * g + 0.098f * b;
                else if (c == 1) v = 128 - 0.148f * r - 0.291f * g + 0.439f * b;
                else v = 128 + 0.439f * r - 0.368f * g - 0.071f * b;
                plane[i] = (uint8_t)(v + 0.5f);
            }
            fwrite(plane, 1, (size_t)W * H, f);
        }
    }
    free(rgb), free(plane);
    fclose(f);
}

static mg_status build(const char *out, char **srcs, int n, int quiet) {
    data_build_opts o = data_build_defaults();
    o.out_dir = out;
    o.quiet = quiet;
    o.video_short = 96, o.photo_short = 128; /* small and fast */
    o.max_frames = 40, o.run_frames = 20;
    return data_build(&o, srcs, n);
}

static int setup(void **state) {
    (void)state;
    snprintf(g_root, sizeof g_root, "%s/data", tu_tmpdir());
    snprintf(g_src, sizeof g_src, "%s/src", g_root);
    snprintf(g_mixed, sizeof g_mixed, "%s/mixed", g_root);
    snprintf(g_photos, sizeof g_photos, "%s/photos", g_root);
    snprintf(g_videos, sizeof g_videos, "%s/videos", g_root);
    mkdir(g_root, 0755);
    mkdir(g_src, 0755);
    char p[700];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/clip_%c.y4m", g_src, 'a' + i);
        write_y4m(p, 160 + 32 * i, 120, 30 + 20 * i, i + 1); /* 30, 50, 70 frames */
    }
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/photo_%c.ppm", g_src, 'a' + i);
        write_ppm(p, 200 + 20 * i, 160 + 10 * i, 10 + i);
    }
    if (!data_build_available()) return 0;
    char *all[] = {g_src};
    if (build(g_mixed, all, 1, 0) != MG_OK) return -1;
    char photos[6][700], videos[3][700];
    char *ps[6], *vs[3];
    for (int i = 0; i < 6; i++) snprintf(photos[i], sizeof photos[i], "%s/photo_%c.ppm", g_src, 'a' + i), ps[i] = photos[i];
    for (int i = 0; i < 3; i++) snprintf(videos[i], sizeof videos[i], "%s/clip_%c.y4m", g_src, 'a' + i), vs[i] = videos[i];
    if (build(g_photos, ps, 6, 1) != MG_OK) return -1;
    if (build(g_videos, vs, 3, 1) != MG_OK) return -1;
    return 0;
}

#define NEED_BUILDER()                                                           \
    do {                                                                         \
        if (!data_build_available()) {                                           \
            printf("  skip: this build has no FFmpeg or no libjpeg-turbo\n");   \
            skip();                                                              \
        }                                                                        \
    } while (0)

static dataset *open_ok(const char *dir, const char *split) {
    dataset *ds = NULL;
    mg_status s = dataset_open(&ds, dir, split);
    if (s != MG_OK) printf("  dataset_open(%s, %s): %s\n", dir, split, mg_last_error());
    assert_int_equal(s, MG_OK);
    return ds;
}

static void test_split_and_counts(void **state) {
    (void)state;
    NEED_BUILDER();
    dataset *tr = open_ok(g_mixed, "train"), *va = open_ok(g_mixed, "val");
    dataset_info a, b;
    dataset_describe(tr, &a);
    dataset_describe(va, &b);
    printf("  train: %d sources (%d videos, %ld frames, %d photos); val: %d sources (%d videos, %ld frames, %d photos)\n",
           a.sources, a.videos, a.video_frames, a.photos, b.sources, b.videos, b.video_frames, b.photos);
    assert_int_equal(a.sources + b.sources, 9);
    assert_int_equal(a.videos + b.videos, 3);
    assert_int_equal(a.photos + b.photos, 6);
    assert_true(b.sources >= 1);                 /* val is never empty with >= 2 sources */
    assert_true(a.videos >= 1 && b.videos >= 1); /* >= 2 videos: one each side */
    assert_true(a.photos >= 1 && b.photos >= 1);
    /* 30 + 40 + 40 frames (max 40 a video) */
    assert_int_equal(a.video_frames + b.video_frames, 110);
    assert_int_equal(dataset_sources(tr), a.sources);
    assert_int_equal(dataset_photos(va), b.photos);
    /* every source in exactly one split, stored at the requested size */
    int seen[9] = {0};
    for (int k = 0; k < 2; k++) {
        dataset *ds = k ? va : tr;
        dataset_source src;
        for (int i = 0; dataset_source_get(ds, i, &src) == 0; i++) {
            int idx = src.name[0] == 'c' ? src.name[5] - 'a' : 3 + src.name[6] - 'a';
            assert_true(idx >= 0 && idx < 9);
            seen[idx]++;
            int short_side = src.width < src.height ? src.width : src.height;
            assert_int_equal(short_side, src.is_video ? 96 : 128);
            if (src.is_video && !strcmp(src.name, "clip_c.y4m")) {
                /* 70 frames > 40; y4m does not announce its length, so the first 40 are kept
                 * as one run (runs spread over a video are checked by tests/test_data.sh) */
                assert_int_equal(src.frames, 40);
                assert_int_equal(src.clips, 1);
            }
        }
        assert_int_equal(dataset_source_get(ds, 1000, &src), -1);
    }
    for (int i = 0; i < 9; i++) assert_int_equal(seen[i], 1);
    dataset_close(tr);
    dataset_close(va);
}

static double mad(const uint8_t *a, const uint8_t *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += abs((int)a[i] - (int)b[i]);
    return s / n;
}

static void test_determinism(void **state) {
    (void)state;
    NEED_BUILDER();
    enum { T = 6, S = 64 };
    size_t n = (size_t)T * S * S * 3;
    uint8_t *a = malloc(n), *b = malloc(n);
    dataset *ds = open_ok(g_mixed, "train"), *ds2 = open_ok(g_mixed, "train");
    for (uint64_t seed = 0; seed < 12; seed++) {
        assert_int_equal(dataset_sample_clip(ds, seed, T, S, a), MG_OK);
        assert_int_equal(dataset_sample_clip(ds2, seed, T, S, b), MG_OK);
        assert_memory_equal(a, b, n);
        assert_int_equal(dataset_sample_clip(ds, seed + 1000, T, S, b), MG_OK);
        assert_true(memcmp(a, b, n) != 0);
    }
    /* bad arguments */
    assert_int_equal(dataset_sample_clip(ds, 0, 0, S, a), MG_ERR_ARG);
    assert_int_equal(dataset_sample_clip(ds, 0, T, 12, a), MG_ERR_ARG);
    assert_int_equal(dataset_sample_clip(ds, 0, T, 2048, a), MG_ERR_ARG);
    dataset_close(ds);
    dataset_close(ds2);
    free(a), free(b);
}

typedef struct job {
    dataset *ds;
    uint64_t seed0;
    uint8_t *out;
    int fails;
} job;

static void *job_run(void *p) {
    job *j = p;
    for (int k = 0; k < 8; k++)
        if (dataset_sample_clip(j->ds, j->seed0 + (uint64_t)k, 4, 64, j->out + (size_t)k * 4 * 64 * 64 * 3) != MG_OK)
            j->fails++;
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    NEED_BUILDER();
    dataset *ds = open_ok(g_mixed, "train");
    size_t per = (size_t)8 * 4 * 64 * 64 * 3;
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){ds, 100 + 8 * (uint64_t)i, malloc(per), 0};
        assert_int_equal(pthread_create(&th[i], NULL, job_run, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    uint8_t *ref = malloc(per);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i].fails, 0);
        job one = {ds, jobs[i].seed0, ref, 0};
        job_run(&one);
        assert_memory_equal(ref, jobs[i].out, per);
        free(jobs[i].out);
    }
    free(ref);
    dataset_close(ds);
}

/* Synthetic clips (photos only): consecutive frames differ, but much less than frames of two
 * unrelated clips do; real video clips: the same holds, and every clip moves. */
static void check_motion(const char *dir, const char *what) {
    enum { T = 8, S = 64, N = 16 };
    size_t fb = (size_t)S * S * 3;
    uint8_t *a = malloc(fb * T), *b = malloc(fb * T);
    dataset *ds = open_ok(dir, "train");
    double consec = 0, unrelated = 0;
    int moving = 0;
    for (int c = 0; c < N; c++) {
        assert_int_equal(dataset_sample_clip(ds, 7000 + (uint64_t)c, T, S, a), MG_OK);
        assert_int_equal(dataset_sample_clip(ds, 9000 + (uint64_t)c, T, S, b), MG_OK);
        double m = 0;
        for (int t = 0; t + 1 < T; t++) m += mad(a + fb * t, a + fb * (t + 1), fb) / (T - 1);
        consec += m / N;
        unrelated += mad(a, b, fb) / N;
        moving += m > 0.3;
    }
    printf("  %s: mean |frame t+1 - frame t| %.2f, unrelated clips %.2f, %d/%d clips move\n", what, consec, unrelated,
           moving, N);
    assert_true(moving >= N - 2); /* a clip may draw a near-still camera */
    assert_true(consec > 0.5);
    assert_true(consec < 0.6 * unrelated);
    dataset_close(ds);
    free(a), free(b);
}

static void test_motion(void **state) {
    (void)state;
    NEED_BUILDER();
    check_motion(g_photos, "synthetic");
    check_motion(g_videos, "video");
}

/* A video clip is a stretch of real frames: with the whole frame kept (crop 100% happens
 * rarely), check instead that a clip's frames come from one source by matching statistics
 * of consecutive frames against the video's 2-pixel pan: frames t and t+1 shifted by the
 * pan agree better than unshifted. */
static void test_video_follows_source(void **state) {
    (void)state;
    NEED_BUILDER();
    dataset *ds = open_ok(g_videos, "train");
    assert_int_equal(dataset_photos(ds), 0);
    enum { T = 4, S = 64 };
    size_t fb = (size_t)S * S * 3;
    uint8_t *a = malloc(fb * T);
    int better = 0, N = 12;
    for (int c = 0; c < N; c++) {
        assert_int_equal(dataset_sample_clip(ds, 500 + (uint64_t)c, T, S, a), MG_OK);
        /* the crop scales the 2-px pan by S/crop <= 96/57: shifts 1..4 px; try both directions */
        double best = 1e9, zero = mad(a, a + fb, fb);
        for (int sx = -4; sx <= 4; sx++) {
            double s = 0;
            int cnt = 0;
            for (int y = 0; y < S; y++)
                for (int x = 8; x < S - 8; x++)
                    for (int ch = 0; ch < 3; ch++, cnt++)
                        s += abs((int)a[((size_t)y * S + x) * 3 + ch] - (int)a[fb + ((size_t)y * S + x + sx) * 3 + ch]);
            if (sx != 0 && s / cnt < best) best = s / cnt;
        }
        better += best < zero;
    }
    printf("  video: %d/%d clips match a horizontal shift between frames better than no shift\n", better, N);
    assert_true(better >= N - 2);
    free(a);
    dataset_close(ds);
}

/* ---- damaged shards ------------------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* Opens dir/train and, when that works, samples clips. Returns the first failure status (or
 * MG_OK); a failure must name the shard. */
static mg_status try_dir(const char *dir, int clips) {
    dataset *ds = NULL;
    mg_status s = dataset_open(&ds, dir, "train");
    if (s == MG_OK) {
        uint8_t *out = malloc((size_t)3 * 32 * 32 * 3);
        for (int c = 0; c < clips && s == MG_OK; c++) s = dataset_sample_clip(ds, (uint64_t)c, 3, 32, out);
        free(out);
        dataset_close(ds);
    }
    if (s != MG_OK && s != MG_ERR_FORMAT) printf("  unexpected status %d: %s\n", s, mg_last_error());
    if (s == MG_ERR_FORMAT && !strstr(mg_last_error(), "train-000" SHARD_EXT))
        printf("  message does not name the file: %s\n", mg_last_error());
    if (s == MG_ERR_FORMAT) assert_non_null(strstr(mg_last_error(), "train-000" SHARD_EXT));
    return s;
}

static void test_corrupt(void **state) {
    (void)state;
    NEED_BUILDER();
    char shard[800], dir[700], bad[800];
    snprintf(shard, sizeof shard, "%s/train-000" SHARD_EXT, g_photos);
    snprintf(dir, sizeof dir, "%s/bad", g_root);
    mkdir(dir, 0755);
    snprintf(bad, sizeof bad, "%s/train-000" SHARD_EXT, dir);
    size_t n;
    uint8_t *orig = slurp(shard, &n), *b = malloc(n);
    shard_header h;
    assert_int_equal(shard_header_parse(&h, orig, n, n, shard), MG_OK);
    printf("  shard: %zu bytes, %u sources, %u frames, index at %llu\n", n, h.n_sources, h.n_frames,
           (unsigned long long)h.tables_offset);
    /* intact copy works */
    spit(bad, orig, n);
    assert_int_equal(try_dir(dir, 4), MG_OK);
    /* truncated: at every length in the header, around the index, and a sample of the rest */
    int refused = 0, cases = 0;
    for (size_t len = 0; len < n; len += (len < 80 || len + 300 > n || (len > h.tables_offset - 40 && len < h.tables_offset + 40)) ? 1 : 997) {
        spit(bad, orig, len);
        cases++;
        mg_status s = try_dir(dir, 2);
        refused += s == MG_ERR_FORMAT;
        if (s != MG_ERR_FORMAT) printf("  truncated to %zu bytes: status %d\n", len, s);
        assert_int_equal(s, MG_ERR_FORMAT);
    }
    printf("  truncations: %d/%d refused\n", refused, cases);
    assert_string_not_equal(mg_last_error(), "");
    /* one byte flipped: every byte of the header and the index, and every 53rd of the frames;
     * all are caught (the header by its checks, the index by its hash, frames by theirs) or,
     * for reserved header bytes, harmless */
    int flips = 0, caught = 0;
    for (size_t at = 0; at < n; at += (at < SHARD_HEADER_SIZE || at >= h.tables_offset) ? 1 : 53) {
        memcpy(b, orig, n);
        b[at] ^= 0x5a;
        spit(bad, b, n);
        flips++;
        mg_status s = try_dir(dir, 24);
        caught += s == MG_ERR_FORMAT;
    }
    printf("  byte flips: %d/%d refused (the rest flipped bytes no clip read)\n", caught, flips);
    assert_true(caught >= flips * 9 / 10);
    /* a damaged frame is found when read: every clip drawing it fails, naming the file */
    memcpy(b, orig, n);
    for (size_t at = SHARD_HEADER_SIZE; at < h.tables_offset; at += 101) b[at] ^= 0xff;
    spit(bad, b, n);
    dataset *ds = open_ok(dir, "train"); /* headers and index are intact */
    uint8_t *clip = malloc((size_t)2 * 32 * 32 * 3);
    assert_int_equal(dataset_sample_clip(ds, 1, 2, 32, clip), MG_ERR_FORMAT);
    printf("  damaged frame: %s\n", mg_last_error());
    assert_non_null(strstr(mg_last_error(), "checksum"));
    free(clip);
    dataset_close(ds);
    /* foreign file, empty file, an older/newer version */
    const char *foreign = "\x89PNG\r\n\x1a\n this is not a shard, but long enough to have a header of 64 bytes...";
    spit(bad, (const uint8_t *)foreign, strlen(foreign));
    assert_int_equal(try_dir(dir, 1), MG_ERR_FORMAT);
    assert_non_null(strstr(mg_last_error(), "not a mirage shard"));
    memcpy(b, orig, n);
    b[7] = '2', b[8] = 2;
    spit(bad, b, n);
    assert_int_equal(try_dir(dir, 1), MG_ERR_FORMAT);
    printf("  version 2: %s\n", mg_last_error());
    assert_non_null(strstr(mg_last_error(), "version"));
    /* a shard renamed into a gap: train-000 and train-002 only */
    spit(bad, orig, n);
    char other[800];
    snprintf(other, sizeof other, "%s/train-002" SHARD_EXT, dir);
    spit(other, orig, n);
    assert_int_equal(try_dir(dir, 1), MG_ERR_FORMAT);
    printf("  gap: %s\n", mg_last_error());
    unlink(other);
    /* a shard from another build beside this one */
    snprintf(other, sizeof other, "%s/train-001" SHARD_EXT, dir);
    size_t n2;
    char vshard[800];
    snprintf(vshard, sizeof vshard, "%s/train-000" SHARD_EXT, g_videos);
    uint8_t *v = slurp(vshard, &n2);
    spit(other, v, n2);
    assert_int_equal(try_dir(dir, 1), MG_ERR_FORMAT);
    printf("  mixed: %s\n", mg_last_error());
    free(v);
    unlink(other);
    /* no shards at all; a split that is not train or val */
    unlink(bad);
    ds = NULL;
    assert_int_equal(dataset_open(&ds, dir, "train"), MG_ERR_IO);
    printf("  empty: %s\n", mg_last_error());
    assert_null(ds);
    assert_int_equal(dataset_open(&ds, g_photos, "test"), MG_ERR_ARG);
    free(orig), free(b);
}

/* The parser on random garbage around a valid header: never crashes (run under ASan in CI). */
static void test_parser_random(void **state) {
    (void)state;
    NEED_BUILDER();
    char shard[800];
    snprintf(shard, sizeof shard, "%s/train-000" SHARD_EXT, g_mixed);
    size_t n;
    uint8_t *orig = slurp(shard, &n);
    mg_rng r;
    mg_rng_seed(&r, 42);
    int ok = 0;
    for (int it = 0; it < 3000; it++) {
        uint8_t *b = malloc(n);
        memcpy(b, orig, n);
        int flips = 1 + (int)(mg_rng_next(&r) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(mg_rng_next(&r) % n);
            if (mg_rng_next(&r) & 1) at = SHARD_HEADER_SIZE > at ? at : at % SHARD_HEADER_SIZE;
            b[at] = (uint8_t)mg_rng_next(&r);
        }
        size_t len = (mg_rng_next(&r) % 8) ? n : (size_t)(mg_rng_next(&r) % n);
        shard_header h;
        if (shard_header_parse(&h, b, len, len, "fuzz") == MG_OK) {
            shard_tables t;
            if (shard_tables_parse(&t, &h, b + h.tables_offset, (size_t)(len - h.tables_offset), "fuzz") == MG_OK) {
                ok++;
                for (uint32_t i = 0; i < h.n_frames; i++) /* the checked ranges lie inside the buffer */
                    assert_true(t.frames[i].offset + t.frames[i].size <= len);
                shard_tables_free(&t);
            }
        }
        free(b);
    }
    printf("  3000 damaged copies parsed: %d still valid (flips in frame bytes), none crashed\n", ok);
    free(orig);
}

/* The synthetic camera never looks past the photo's edge (every corner of every view inside
 * the photo, at every roll and zoom, with shake), its roll stays bounded, and the path is
 * smooth: per frame the centre moves a bounded number of output pixels and the zoom changes by
 * a bounded factor. 20000 random paths over photos of many shapes and clip sizes. */
static void test_camera_geometry(void **state) {
    (void)state;
    mg_rng r, pick;
    mg_rng_seed(&pick, 11);
    camera_view v[32];
    double worst_out = 0, worst_move = 0, worst_zoom = 0;
    long moving = 0;
    for (int it = 0; it < 20000; it++) {
        int S = 8 * (1 + (int)(mg_rng_next(&pick) % 64)); /* 8..512 */
        int w = 64 + (int)(mg_rng_next(&pick) % 1000), h = 64 + (int)(mg_rng_next(&pick) % 1000);
        int T = 1 + (int)(mg_rng_next(&pick) % 32);
        mg_rng_seed(&r, mg_rng_next(&pick));
        int flip = -1;
        camera_path(&r, T, S, w, h, v, &flip);
        assert_true(flip == 0 || flip == 1);
        for (int t = 0; t < T; t++) {
            assert_true(fabsf(v[t].theta) <= CAMERA_MAX_ROLL + 1e-6f);
            assert_true(v[t].scale > 0);
            float c = cosf(v[t].theta) * v[t].scale, sn = sinf(v[t].theta) * v[t].scale, half = S * 0.5f;
            for (int k = 0; k < 4; k++) { /* the corners of the output square */
                float du = k & 1 ? half : -half, dv = k & 2 ? half : -half;
                float x = v[t].cx + c * du - sn * dv, y = v[t].cy + sn * du + c * dv;
                double out = fmax(fmax(-x, x - w), fmax(-y, y - h));
                if (out > worst_out) worst_out = out;
            }
            if (t > 0) {
                double move = hypot(v[t].cx - v[t - 1].cx, v[t].cy - v[t - 1].cy) / v[t].scale / S; /* in frame widths */
                double zoom = fabs(log(v[t].scale / v[t - 1].scale));
                if (move > worst_move) worst_move = move;
                if (zoom > worst_zoom) worst_zoom = zoom;
                moving += move > 0.002;
            }
        }
    }
    printf("  20000 paths: worst corner %.2e px outside the photo, largest step %.3f frame widths, largest zoom "
           "step %.3f (log), %ld moving steps\n", worst_out, worst_move, worst_zoom, moving);
    assert_true(worst_out < 1e-2);  /* float rounding only */
    /* pan <= 8 px a frame at S = 256 (0.031 widths), wobble 3 px, shake <= 5 px, the centre's
     * shift as the zoom changes 3% a frame (0.017): about 0.08 at worst */
    assert_true(worst_move < 0.1);
    assert_true(worst_zoom < 0.0301); /* <= 3% a frame */
    assert_true(moving > 100000);
}

static void test_speed(void **state) {
    (void)state;
    NEED_BUILDER();
    enum { T = 8, S = 256, N = 12 };
    uint8_t *out = malloc((size_t)T * S * S * 3);
    dataset *ds = open_ok(g_mixed, "train");
    double t0 = mg_now_ms();
    for (int c = 0; c < N; c++) assert_int_equal(dataset_sample_clip(ds, (uint64_t)c, T, S, out), MG_OK);
    double ms = (mg_now_ms() - t0) / (N * T);
    printf("  reader: %.2f ms per 256x256 frame (clips of 8, one thread, mixed video/synthetic)\n", ms);
    assert_true(ms < 100); /* a few ms normally; generous for sanitizer builds on a loaded machine */
    dataset_close(ds);
    free(out);
}

static void test_no_sources(void **state) {
    (void)state;
    NEED_BUILDER();
    char out[700], missing[700], empty[700];
    snprintf(out, sizeof out, "%s/none", g_root);
    snprintf(missing, sizeof missing, "%s/does-not-exist.mp4", g_root);
    snprintf(empty, sizeof empty, "%s/emptydir", g_root);
    mkdir(empty, 0755);
    char *a[] = {missing};
    assert_int_equal(build(out, a, 1, 1), MG_ERR_IO);
    printf("  missing source: %s\n", mg_last_error());
    char *e[] = {empty};
    assert_int_equal(build(out, e, 1, 1), MG_ERR_IO);
    printf("  empty folder: %s\n", mg_last_error());
    struct stat st;
    char shard[800];
    snprintf(shard, sizeof shard, "%s/train-000" SHARD_EXT, out);
    assert_true(stat(shard, &st) != 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_and_counts), cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_threads),          cmocka_unit_test(test_motion),
        cmocka_unit_test(test_video_follows_source), cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_parser_random),    cmocka_unit_test(test_camera_geometry),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_no_sources),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
