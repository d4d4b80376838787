#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

const char *mg_strerror(mg_status s) {
    switch (s) {
    case MG_OK: return "ok";
    case MG_ERR_ARG: return "invalid argument";
    case MG_ERR_IO: return "i/o error";
    case MG_ERR_FORMAT: return "bad file format";
    case MG_ERR_SHAPE: return "wrong shape";
    case MG_ERR_NOMEM: return "out of memory";
    case MG_ERR_UNSUPPORTED: return "not supported by this build";
    case MG_ERR_DEVICE: return "device error";
    case MG_ERR_EOF: return "end of input";
    }
    return "unknown status";
}

const char *mg_last_error(void) { return last_error; }

void mg_clear_error(void) { last_error[0] = 0; }

mg_status mg_fail(mg_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}
