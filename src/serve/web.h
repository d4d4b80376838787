/* The page's files (web/), read into memory once at start and served from there: the set is
 * fixed while the server runs, and no request path ever reaches the file system. */
#ifndef MG_SERVE_WEB_H
#define MG_SERVE_WEB_H

#include <stddef.h>

#include "mirage.h"

#define WEB_MAX_FILES 32
#define WEB_MAX_FILE_BYTES (1 << 20)

typedef struct web_file {
    char path[72];       /* "/index.html" */
    const char *type;    /* Content-Type */
    unsigned char *buf;  /* WEB_PRE bytes of room, then the body */
    size_t len;
} web_file;

typedef struct web_files {
    web_file f[WEB_MAX_FILES];
    int n;
    char dir[4096];
} web_files;

/* Reads every regular file directly in dir whose name is [A-Za-z0-9._-]+ (at most WEB_MAX_FILES,
 * each at most WEB_MAX_FILE_BYTES). `pre` bytes are left free before each body (LWS_PRE). */
mg_status web_load(web_files *w, const char *dir, size_t pre);
void web_free(web_files *w);
/* The file for a request path ("/" is "/index.html"); NULL if none. */
const web_file *web_find(const web_files *w, const char *path);

#endif
