/* Files the evaluation report writes: each appears whole or not at all (written to
 * "PATH.tmp.<pid>", flushed, fsync'ed, renamed onto PATH), and PNG images. */
#ifndef MG_EVAL_FILES_H
#define MG_EVAL_FILES_H

#include <stdint.h>
#include <stdio.h>

#include "mirage.h"

typedef struct afile {
    FILE *fp;
    char path[4096];
    char tmp[4160];
} afile;

/* Creates the temporary file; write to f->fp. */
mg_status afile_open(afile *f, const char *path);
/* Checks every write went through, then fsync and rename onto the path. On failure the
 * temporary is removed and the path keeps what it had. */
mg_status afile_commit(afile *f);
/* Gives up: closes and removes the temporary. */
void afile_abort(afile *f);

/* Writes an RGB24 PNG atomically: compressed through libpng when the build has it, else the
 * built-in writer (stored, uncompressed deflate blocks: larger files, any browser reads them). */
mg_status image_write_png(const char *path, const uint8_t *rgb, int W, int H);
/* The built-in writer alone (always present; tests use it). */
mg_status image_write_png_stored(const char *path, const uint8_t *rgb, int W, int H);
/* "libpng" or "built-in (uncompressed)". */
const char *image_png_writer(void);

/* Creates a directory and its parents (mkdir -p); fine when it exists. */
mg_status files_mkdir_p(const char *dir);

#endif
