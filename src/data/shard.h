/* The shard file format (version 1), specified byte by byte in docs/DATA.md. A shard is
 *
 *   header (64 bytes) | JPEG frames, back to back | source table | clip table | frame table
 *
 * all integers little-endian. The tables sit at the end so a writer streams the frames and
 * writes the index last; the header is written once the index is known. Parsing is split in
 * two steps over plain buffers (no file access) so the fuzzer (fuzz/fuzz_shard.c) exercises
 * exactly the code the reader runs: shard_header_parse on the first 64 bytes, then
 * shard_tables_parse on the bytes from header.tables_offset to the end of the file. */
#ifndef MG_DATA_SHARD_H
#define MG_DATA_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "mirage.h"

#define SHARD_MAGIC "MGSHARD1"     /* 8 bytes, no terminator in the file */
#define SHARD_VERSION 1u
#define SHARD_HEADER_SIZE 64u
#define SHARD_SOURCE_SIZE 96u      /* bytes per source record */
#define SHARD_CLIP_SIZE 32u        /* bytes per clip record */
#define SHARD_FRAME_SIZE 16u       /* bytes per frame record */
#define SHARD_NAME_MAX 64          /* source name field, NUL-padded */
#define SHARD_MAX_SOURCES 100000u
#define SHARD_MAX_CLIPS 1000000u
#define SHARD_MAX_FRAMES (1u << 24)
#define SHARD_MAX_JPEG (32u << 20) /* one frame's JPEG bytes */
#define SHARD_MIN_SIDE 16          /* stored frame sides, pixels */
#define SHARD_MAX_SIDE 4096
#define SHARD_EXT ".mgshard"

enum { SHARD_SPLIT_TRAIN = 0, SHARD_SPLIT_VAL = 1 };
enum { SHARD_KIND_VIDEO = 1, SHARD_KIND_PHOTO = 2 };

typedef struct shard_header {
    uint32_t version;
    uint32_t split;          /* SHARD_SPLIT_* */
    uint32_t shard_index;    /* 0..shard_count-1 within its split */
    uint32_t shard_count;    /* shards of this split in the build */
    uint64_t build_id;       /* the same in every shard of one build */
    uint32_t n_sources, n_clips, n_frames;
    uint64_t tables_offset;  /* where the source table starts; frames lie in [64, tables_offset) */
    uint64_t file_size;      /* the whole file, bytes */
    uint64_t tables_hash;    /* FNV-1a 64 of the bytes from tables_offset to the end */
} shard_header;

typedef struct shard_source {
    uint32_t kind;            /* SHARD_KIND_* */
    uint32_t in_width, in_height; /* the original's size (before downscaling) */
    uint32_t fps_milli;       /* video frame rate x 1000 (0: photo or unknown) */
    uint32_t frame_step;      /* stored frames are every frame_step-th decoded frame */
    uint64_t name_hash;       /* FNV-1a 64 of the name (what the split was decided from) */
    char name[SHARD_NAME_MAX + 1]; /* the file's base name, NUL-terminated */
} shard_source;

typedef struct shard_clip {
    uint32_t source;       /* index into the source table */
    uint32_t width, height; /* every frame of the clip has this size */
    uint32_t first_frame;  /* index into the frame table */
    uint32_t n_frames;     /* consecutive stored frames (a photo: 1) */
    uint32_t start;        /* the first frame's number in the source (decoded frames) */
} shard_clip;

typedef struct shard_frame {
    uint64_t offset;  /* from the start of the file */
    uint32_t size;    /* JPEG bytes */
    uint32_t hash;    /* low 32 bits of FNV-1a 64 of the JPEG bytes */
} shard_frame;

typedef struct shard_tables {
    shard_source *sources;
    shard_clip *clips;
    shard_frame *frames;
} shard_tables;

/* Checks the header in buf (n >= SHARD_HEADER_SIZE bytes) against the file's real size:
 * magic, version, counts within limits, tables inside the file and sized to the counts.
 * MG_ERR_FORMAT with a message naming `name` otherwise. */
mg_status shard_header_parse(shard_header *h, const uint8_t *buf, size_t n, uint64_t file_size, const char *name);
/* Parses and checks the tables (buf: file_size - tables_offset bytes): the hash, every
 * record's fields, clips inside the frame table and pointing at a source, frames inside
 * [64, tables_offset). Allocates t's arrays (shard_tables_free). */
mg_status shard_tables_parse(shard_tables *t, const shard_header *h, const uint8_t *buf, size_t n, const char *name);
void shard_tables_free(shard_tables *t);

uint32_t shard_frame_hash(const uint8_t *jpeg, size_t n);

/* Encoding, for the writer: the header and the tables as bytes (hash filled in). */
void shard_header_encode(uint8_t out[SHARD_HEADER_SIZE], const shard_header *h);
/* Writes the three tables into out (size shard_tables_bytes) and returns their hash. */
size_t shard_tables_bytes(uint32_t n_sources, uint32_t n_clips, uint32_t n_frames);
uint64_t shard_tables_encode(uint8_t *out, const shard_tables *t, uint32_t n_sources, uint32_t n_clips,
                             uint32_t n_frames);

#endif
