/* Data-parallel training, the parts without a GPU: see dist.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/timing.h"
#include "train/dist.h"

volatile sig_atomic_t dist_abort_flag = 0;

mg_status dist_parse_gpus(const char *arg, int *gpus, int *n) {
    *n = 0;
    if (!arg || !*arg) return mg_fail(MG_ERR_ARG, "--gpus: expected a count (1..%d) or a list like 0,2, found ''", DIST_MAX_GPUS);
    if (*arg < '0' || *arg > '9') /* strtol would skip spaces and take signs */
        return mg_fail(MG_ERR_ARG, "--gpus: expected a count (1..%d) or a list like 0,2, found '%s'", DIST_MAX_GPUS, arg);
    if (!strchr(arg, ',')) {
        char *end;
        errno = 0;
        long v = strtol(arg, &end, 10);
        if (*end || end == arg || errno || v < 1 || v > DIST_MAX_GPUS)
            return mg_fail(MG_ERR_ARG, "--gpus: expected a count (1..%d) or a list like 0,2, found '%s'", DIST_MAX_GPUS, arg);
        for (int i = 0; i < v; i++) gpus[i] = i;
        *n = (int)v;
        return MG_OK;
    }
    const char *p = arg;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= 1024 || (*end && *end != ',') || *p < '0' || *p > '9')
            return mg_fail(MG_ERR_ARG, "--gpus: expected device indices separated by commas (like 0,2), found '%s'", arg);
        if (*n == DIST_MAX_GPUS) return mg_fail(MG_ERR_ARG, "--gpus: at most %d GPUs, found '%s'", DIST_MAX_GPUS, arg);
        for (int i = 0; i < *n; i++)
            if (gpus[i] == v) return mg_fail(MG_ERR_ARG, "--gpus: GPU %ld is listed twice in '%s'", v, arg);
        gpus[(*n)++] = (int)v;
        if (!*end) break;
        p = end + 1;
    }
    return MG_OK;
}

mg_status dist_split(int batch, int nranks, int rank, int *first, int *count) {
    if (nranks < 1 || rank < 0 || rank >= nranks) return mg_fail(MG_ERR_ARG, "dist_split: rank %d of %d", rank, nranks);
    if (batch < nranks || batch % nranks)
        return mg_fail(MG_ERR_ARG, "--batch %d is not a multiple of the %d GPUs: the global batch is split evenly over "
                       "them (try --batch %d)", batch, nranks, (batch / nranks + 1) * nranks);
    *count = batch / nranks;
    *first = rank * *count;
    return MG_OK;
}

mg_status dist_id_write(const char *path, uint64_t nonce, const void *id, size_t n) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    size_t len = 64 + 2 * n;
    char *buf = malloc(len);
    if (!buf) return mg_fail(MG_ERR_NOMEM, "out of memory");
    int k = snprintf(buf, len, "mirage-nccl-id 1 %016llx ", (unsigned long long)nonce);
    for (size_t i = 0; i < n; i++) k += snprintf(buf + k, len - (size_t)k, "%02x", ((const unsigned char *)id)[i]);
    buf[k++] = '\n';
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        free(buf);
        return mg_fail(MG_ERR_IO, "%s: cannot create the rendezvous file: %s", tmp, strerror(errno));
    }
    ssize_t w = write(fd, buf, (size_t)k);
    int bad = w != k || fsync(fd) != 0;
    int e = errno;
    free(buf);
    if (close(fd) != 0 || bad || rename(tmp, path) != 0) {
        if (!bad) e = errno;
        unlink(tmp);
        return mg_fail(MG_ERR_IO, "%s: cannot write the rendezvous file: %s", path, strerror(e));
    }
    return MG_OK;
}

/* 1: the file holds an id of this nonce (into id); 0: not (yet) */
static int id_read(const char *path, uint64_t nonce, void *id, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[600];
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    unsigned long long fn;
    int off = 0;
    if (sscanf(buf, "mirage-nccl-id 1 %16llx %n", &fn, &off) != 1 || off == 0 || fn != nonce) return 0;
    if (strlen(buf + off) < 2 * n) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(buf + off + 2 * i, "%2x", &v) != 1) return 0;
        ((unsigned char *)id)[i] = (unsigned char)v;
    }
    return 1;
}

mg_status dist_id_wait(const char *path, uint64_t nonce, void *id, size_t n, double timeout_s) {
    double t0 = mg_now_ms();
    for (;;) {
        if (id_read(path, nonce, id, n)) return MG_OK;
        if (dist_abort_requested()) return mg_fail(MG_ERR_IO, "stopped while waiting for %s: another rank failed", path);
        if (mg_now_ms() - t0 > timeout_s * 1000.0)
            return mg_fail(MG_ERR_IO, "no NCCL id from rank 0 in %s after %.3g s (did rank 0 fail? set "
                           "MIRAGE_DIST_TIMEOUT to wait longer)", path, timeout_s);
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

double dist_timeout_default(void) {
    const char *e = getenv("MIRAGE_DIST_TIMEOUT");
    if (e && *e) {
        char *end;
        double v = strtod(e, &end);
        if (!*end && v >= 1.0 && v <= 1e7) return v;
    }
    return 600.0;
}
