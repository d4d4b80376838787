/* Training data: shards written by `mirage data build` (src/data/build.c, src/cli/cmd_data.c)
 * and read by the trainer. The on-disk format is specified in docs/DATA.md and versioned.
 *
 * A data directory holds shards for two splits, "train" and "val", split by source file (no
 * source contributes to both). A shard holds real video (runs of consecutive frames) and
 * photographs; the reader turns both into clips: a stretch of video, or a synthetic camera
 * path (pan, zoom, rotate, shake) over a photograph with moving cut-out foreground layers.
 *
 * Everything the reader returns is a pure function of (the shards, the seed, the arguments):
 * the trainer passes seed = f(run seed, step, batch index), so a resumed run draws exactly the
 * clips an uninterrupted run would have. dataset_sample_clip may be called from several threads
 * at once with different output buffers. */
#ifndef MG_DATA_DATA_H
#define MG_DATA_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mirage.h"

typedef struct dataset dataset;

/* Opens every shard of `split` ("train" or "val") under dir and checks their headers and
 * indexes (not the pixel data: a damaged frame is reported when it is read). MG_ERR_IO when
 * dir has no shard of that split, MG_ERR_FORMAT for a damaged or foreign file, naming it. */
mg_status dataset_open(dataset **out, const char *dir, const char *split);
void dataset_close(dataset *ds);

/* What the split holds, for the trainer's log line. */
int dataset_sources(const dataset *ds); /* source files (videos + photos) */
long dataset_video_frames(const dataset *ds);
int dataset_photos(const dataset *ds);

/* One clip of T frames, S x S RGB24 (out: T*S*S*3 bytes), drawn from seed: a real video
 * stretch (random source weighted by frames, random start, random crop and scale, fixed over
 * the clip) with probability about 1/2 when the split has video, else a synthetic
 * camera-motion clip over a random photo. S is a multiple of 8, 8..1024. MG_ERR_FORMAT when
 * the pixel data read is damaged (naming the shard), MG_ERR_ARG for bad T or S. */
mg_status dataset_sample_clip(dataset *ds, uint64_t seed, int T, int S, uint8_t *out);

/* ---- additions for `mirage data info` and the builder ---------------------------------------- */

typedef struct dataset_info {
    int shards, sources, videos, photos, video_clips;
    long video_frames;
    int64_t bytes;      /* the shard files */
    int64_t jpeg_bytes; /* of which compressed frames */
    uint64_t build_id;
} dataset_info;

typedef struct dataset_source {
    char name[72];
    int is_video;
    int in_width, in_height; /* the original's size */
    int width, height;       /* as stored */
    double fps;              /* video: the source's rate (0: unknown) */
    int frame_step;          /* every frame_step-th frame was kept */
    int clips;               /* runs of consecutive frames (a photo: 1) */
    long frames;
} dataset_source;

void dataset_describe(const dataset *ds, dataset_info *info);
/* Source i (0..dataset_sources-1) in shard order; -1 when out of range. */
int dataset_source_get(const dataset *ds, int i, dataset_source *out);
/* "train-007.mgshard" for split 0 (train) / 1 (val). */
const char *dataset_shard_name(int split, int index, char *buf, size_t n);

/* The builder (src/data/build.c): decodes SOURCES (video files, image files, folders searched
 * recursively for known video and image extensions, less base names matching an exclude
 * pattern) with FFmpeg, stores video frames with the short side video_short and photos with
 * photo_short (never upscaled) as JPEG, splits by source (a hash of the seed and the base name
 * less its extension and trailing number, so a numbered series stays in one split; val is
 * non-empty when there are >= 2 sources) and writes DIR/train-NNN.mgshard and
 * DIR/val-NNN.mgshard, each atomically. A source that cannot be decoded is skipped with a
 * warning (strict: the build fails). Needs FFmpeg and libjpeg-turbo in the build
 * (MG_ERR_UNSUPPORTED otherwise). */
typedef struct data_build_opts {
    const char *out_dir;
    int video_short, photo_short; /* stored short side, pixels (defaults 256, 384) */
    double val_fraction;          /* share of sources in val (default 0.1) */
    long max_frames;              /* frames kept per video (default 240) */
    int run_frames;               /* a long video is kept as runs of this many frames spread over it (default 48) */
    int frame_step;               /* keep every n-th frame (default 1) */
    int quality;                  /* JPEG quality (default 88) */
    long shard_mib;               /* start a new shard past this size (default 16) */
    uint64_t seed;                /* decides the split (default 0) */
    float cut_mad;                /* a scene cut ends a run: mean luma change of a 32x32 thumbnail (default 20) */
    int strict;                   /* fail on an unreadable source instead of skipping it */
    int quiet;                    /* no progress lines */
    char *const *exclude;         /* glob patterns (fnmatch) on base names skipped in folders */
    int n_exclude;
} data_build_opts;

data_build_opts data_build_defaults(void);
mg_status data_build(const data_build_opts *o, char *const *sources, int n_sources);
int data_build_available(void); /* FFmpeg and libjpeg-turbo both in this build */

#endif
