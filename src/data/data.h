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

#endif
