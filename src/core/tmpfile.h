/* Temporary files that a killed process cannot leave behind for good.
 *
 * Loading a fresh model goes through a weights file in /tmp (written, mapped, unlinked). A
 * process killed in between (kill -9, the OOM killer, a lost machine) leaves that file — 18 MiB
 * for the tiny config, far more for larger ones — and nothing ever removes it. So each such file
 * is named /tmp/mirage-tmp.<pid>.<what>.XXXXXX, and the first mg_tmpfile call of a process
 * removes every mirage-tmp.* file (and the writer's own .tmp.<pid> beside it) whose pid is no
 * longer running. */
#ifndef MG_CORE_TMPFILE_H
#define MG_CORE_TMPFILE_H

#include <stddef.h>

/* Creates an empty file /tmp/mirage-tmp.<pid>.<what>.XXXXXX (mkstemp) and writes its path into
 * path (n >= 64 bytes and what short). Returns the open descriptor, or -1 with errno set. */
int mg_tmpfile(char *path, size_t n, const char *what);

#endif
