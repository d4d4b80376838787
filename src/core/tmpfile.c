/* See tmpfile.h. */
#include "core/tmpfile.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TMP_DIR "/tmp"
#define TMP_PREFIX "mirage-tmp."

/* Removes the files of processes that are gone. A pid that is running (or that we may not
 * signal: EPERM) keeps its files, even if it was reused by another program. */
static void sweep(void) {
    DIR *d = opendir(TMP_DIR);
    if (!d) return;
    long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0) continue;
        char *end;
        long pid = strtol(e->d_name + strlen(TMP_PREFIX), &end, 10);
        if (*end != '.' || pid <= 0 || pid == self) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", TMP_DIR, e->d_name);
        unlink(p);
    }
    closedir(d);
}

int mg_tmpfile(char *path, size_t n, const char *what) {
    static int swept; /* once a process: a race between threads only sweeps twice */
    if (!swept) {
        swept = 1;
        sweep();
    }
    if (snprintf(path, n, "%s/%s%ld.%s.XXXXXX", TMP_DIR, TMP_PREFIX, (long)getpid(), what) >= (int)n) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return mkstemp(path);
}
