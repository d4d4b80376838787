/* libFuzzer target for the HTTP request path of `mirage serve`: the path lws hands the server
 * (LWS_CALLBACK_HTTP) goes to web_find (src/serve/web.c), which maps it to one of the page's
 * files read at start. Invariant: whatever the path, the answer is NULL or one of the loaded files,
 * its name is the path asked for ("/" is "/index.html"), and that file lies directly inside the
 * web root: no path reaches another file, a hidden file, a sub-directory or anything outside.
 *
 * The web root is made at start in a fresh temporary directory: an index, a script, names with
 * dots and dashes, plus what must never be served: a hidden file, a sub-directory with a file,
 * and a secret beside the root. Input: the path, up to its first NUL (as lws gives it).
 *
 *   make fuzz FUZZERS=web FUZZ_SECONDS=60 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serve/web.h"

#define FUZZ_CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static web_files g_web;
static char g_root[4096], g_top[2048];
static int g_ready;

static void put(const char *dir, const char *name, const char *body) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fputs(body, f) < 0 || fclose(f)) abort();
}

static void cleanup(void) {
    web_free(&g_web);
    const char *rm[] = {"web/index.html", "web/app.js", "web/a.b-c_d", "web/.hidden", "web/sub/inner.html", "secret.txt"};
    char p[8192];
    for (size_t i = 0; i < sizeof rm / sizeof rm[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_top, rm[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/web/sub", g_top), rmdir(p);
    rmdir(g_root), rmdir(g_top);
}

static void setup(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_top, sizeof g_top, "%s/mirage-fuzz-web-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_top)) abort();
    snprintf(g_root, sizeof g_root, "%s/web", g_top);
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/sub", g_root);
    if (mkdir(g_root, 0700) || mkdir(sub, 0700)) abort();
    put(g_root, "index.html", "<!doctype html>index");
    put(g_root, "app.js", "// app");
    put(g_root, "a.b-c_d", "dots and dashes");
    put(g_root, ".hidden", "SECRET hidden");
    put(sub, "inner.html", "SECRET inner");
    put(g_top, "secret.txt", "SECRET outside");
    char *r = realpath(g_root, NULL); /* /tmp may itself be a link */
    if (!r) abort();
    snprintf(g_root, sizeof g_root, "%s", r);
    free(r);
    if (web_load(&g_web, g_root, 16) != MG_OK) abort();
    atexit(cleanup);
    /* what was loaded: exactly the three public files, each directly in the root */
    FUZZ_CHECK(g_web.n == 3);
    for (int i = 0; i < g_web.n; i++) {
        const web_file *f = &g_web.f[i];
        FUZZ_CHECK(f->path[0] == '/' && !strchr(f->path + 1, '/') && f->path[1] != '.');
        FUZZ_CHECK(!memmem(f->buf + 16, f->len, "SECRET", 6));
    }
    g_ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ready) setup();
    char *path = malloc(size + 1);
    if (!path) return 0;
    memcpy(path, data, size);
    path[size] = 0; /* a C string: it ends at the first NUL, as the one lws passes */
    const web_file *f = web_find(&g_web, path);
    if (f) {
        FUZZ_CHECK(f >= g_web.f && f < g_web.f + g_web.n); /* one of the loaded files */
        FUZZ_CHECK(!strcmp(f->path, path) || (!strcmp(path, "/") && !strcmp(f->path, "/index.html")));
        FUZZ_CHECK(path[0] == '/' && !strstr(path, "..") && !strchr(path + 1, '/') && !strchr(path, '%'));
        /* the file on disk behind it is inside the root */
        char disk[8192], *real = NULL;
        snprintf(disk, sizeof disk, "%s%s", g_root, f->path);
        real = realpath(disk, NULL);
        size_t rl = strlen(g_root);
        FUZZ_CHECK(real && !strncmp(real, g_root, rl) && real[rl] == '/' && !strchr(real + rl + 1, '/'));
        free(real);
        FUZZ_CHECK(!memmem(f->buf + 16, f->len, "SECRET", 6));
    }
    free(path);
    return 0;
}
