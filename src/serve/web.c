/* The page's files: found next to the binary, read into memory once (see web.h). */
#include "serve/web.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"
#include "serve/serve.h"

static int has_index(const char *dir) {
    char p[8192];
    if (snprintf(p, sizeof p, "%s/index.html", dir) >= (int)sizeof p) return 0;
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

mg_status serve_find_web(const char *given, char *out, size_t n) {
    if (given) {
        if (!has_index(given)) return mg_fail(MG_ERR_IO, "--web %s: no index.html there", given);
        snprintf(out, n, "%s", given);
        return MG_OK;
    }
    char exe[4096], tried[8192] = "";
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        char *d = dirname(exe); /* build/ */
        const char *rel[] = {"../web", "web", "../share/mirage/web"};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", d, rel[i]);
            if (has_index(p)) {
                char *r = realpath(p, NULL);
                snprintf(out, n, "%s", r ? r : p);
                free(r);
                return MG_OK;
            }
            size_t used = strlen(tried);
            snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", p);
        }
    }
    if (has_index("web")) {
        snprintf(out, n, "web");
        return MG_OK;
    }
    return mg_fail(MG_ERR_IO, "the page (web/index.html) was not found in %s or ./web; give --web DIR", tried);
}

static const char *content_type(const char *name) {
    const char *e = strrchr(name, '.');
    if (!e) return "application/octet-stream";
    if (!strcmp(e, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(e, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(e, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(e, ".png")) return "image/png";
    if (!strcmp(e, ".svg")) return "image/svg+xml";
    if (!strcmp(e, ".ico")) return "image/x-icon";
    return "application/octet-stream";
}

static int name_ok(const char *s) {
    if (!*s || *s == '.') return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == '-'))
            return 0;
    return 1;
}

mg_status web_load(web_files *w, const char *dir, size_t pre) {
    memset(w, 0, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    DIR *d = opendir(dir);
    if (!d) return mg_fail(MG_ERR_IO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    mg_status s = MG_OK;
    while ((e = readdir(d)) && s == MG_OK) {
        if (!name_ok(e->d_name) || strlen(e->d_name) + 2 > sizeof w->f[0].path) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) || !S_ISREG(st.st_mode)) continue;
        if (w->n == WEB_MAX_FILES) { s = mg_fail(MG_ERR_IO, "%s: more than %d files", dir, WEB_MAX_FILES); break; }
        if (st.st_size > WEB_MAX_FILE_BYTES) { s = mg_fail(MG_ERR_IO, "%s: larger than %d bytes", p, WEB_MAX_FILE_BYTES); break; }
        FILE *f = fopen(p, "rb");
        if (!f) { s = mg_fail(MG_ERR_IO, "%s: %s", p, strerror(errno)); break; }
        web_file *wf = &w->f[w->n];
        wf->buf = malloc(pre + (size_t)st.st_size + 1);
        if (!wf->buf) { fclose(f); s = mg_fail(MG_ERR_NOMEM, "%s: out of memory", p); break; }
        wf->len = fread(wf->buf + pre, 1, (size_t)st.st_size, f);
        int err = ferror(f) || wf->len != (size_t)st.st_size;
        fclose(f);
        w->n++;
        if (err) { s = mg_fail(MG_ERR_IO, "%s: read failed", p); break; }
        snprintf(wf->path, sizeof wf->path, "/%.70s", e->d_name); /* names longer than that were skipped */
        wf->type = content_type(e->d_name);
    }
    closedir(d);
    if (s == MG_OK && !web_find(w, "/")) s = mg_fail(MG_ERR_IO, "%s: no index.html", dir);
    if (s != MG_OK) web_free(w);
    return s;
}

void web_free(web_files *w) {
    for (int i = 0; i < w->n; i++) free(w->f[i].buf);
    w->n = 0;
}

const web_file *web_find(const web_files *w, const char *path) {
    if (!strcmp(path, "/")) path = "/index.html";
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->f[i].path, path)) return &w->f[i];
    return NULL;
}
