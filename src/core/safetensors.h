/* safetensors: read (mmap, validated) and write (atomic: temp file, fsync, rename).
 *
 * Reading validates, before anything is used: the 8-byte header length against the file
 * size; the JSON header (well formed, object of objects); each tensor's dtype, shape
 * (rank <= 8, non-negative, no overflow) and data_offsets (begin <= end, inside the data
 * section, end - begin == numel * dtype size, no two tensors overlapping); and
 * __metadata__ (string values only). Errors name the file and the tensor. */
#ifndef MG_CORE_SAFETENSORS_H
#define MG_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mirage.h"

#define ST_MAX_RANK 8
#define ST_MAX_NAME 128

typedef enum st_dtype { ST_F32 = 0, ST_BF16, ST_F16, ST_I32, ST_U8, ST_I64, ST_F64 } st_dtype;

typedef struct st_tensor {
    char name[ST_MAX_NAME];
    st_dtype dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    size_t numel;
    const void *data; /* points into the mapping; aligned to the dtype size (see st_open) */
    size_t nbytes;
} st_tensor;

typedef struct st_meta {
    char key[64];
    char *value; /* owned, NUL-terminated */
} st_meta;

typedef struct st_file {
    char path[512];
    void *map;
    size_t map_size;
    st_tensor *tensors;
    int n_tensors;
    st_meta *meta;
    int n_meta;
    int map_is_heap; /* map is malloc'd (st_open_memory, or an aligned copy): freed, not unmapped */
} st_file;

size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);

/* Opens and validates. On failure *f is left empty (safe to st_close) and mg_last_error()
 * says what was wrong. The file is mapped read-only; every tensor's data is aligned to its
 * element size, so F32 data can be read as const float *. The format allows unaligned
 * offsets: for such a file (rare; our writer never makes one) the tensors are copied into an
 * aligned malloc'd block and the mapping is dropped. */
mg_status st_open(st_file *f, const char *path);
/* Same checks over a buffer in memory (copied); used by the fuzzer and tests. */
mg_status st_open_memory(st_file *f, const void *buf, size_t size, const char *name);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta_get(const st_file *f, const char *key); /* NULL if absent */

/* Looks up `name` and checks dtype F32 and the given shape (rank dims).
 * Errors: "FILE: tensor NAME: missing" / "expected shape (a,b), found (c,d)". */
mg_status st_expect(const st_file *f, const char *name, int rank, const int64_t *shape,
                    const st_tensor **out);

/* Writing: collect tensors and metadata, then st_writer_save writes FILE.tmp.PID, fsyncs
 * it and renames it over FILE, so FILE is either the old file or the complete new one.
 * The header lists __metadata__ first, then the tensors in the order added; the data is laid
 * out contiguously, largest element size first, so every tensor lands aligned. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);
/* The data is copied. */
mg_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int rank,
                        const int64_t *shape, const void *data);
/* Keys are at most 63 bytes; setting a key again replaces its value. */
mg_status st_writer_meta(st_writer *w, const char *key, const char *value);
mg_status st_writer_save(st_writer *w, const char *path);

#endif
