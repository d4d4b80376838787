/* Status and error messages. Library code reports failures with
 *     return mg_fail(MG_ERR_SHAPE, "%s: tensor %s: expected (%d,%d), found (%d,%d)", ...);
 * which records the message for mg_last_error() on this thread and returns the status. */
#ifndef MG_CORE_STATUS_H
#define MG_CORE_STATUS_H

#include "mirage.h"

#if defined(__GNUC__)
#define MG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MG_PRINTF(a, b)
#endif

mg_status mg_fail(mg_status s, const char *fmt, ...) MG_PRINTF(2, 3);
void mg_clear_error(void);

/* Propagate a failing status: MG_TRY(f(x)); */
#define MG_TRY(expr)                            \
    do {                                        \
        mg_status mg_try_s_ = (expr);           \
        if (mg_try_s_ != MG_OK) return mg_try_s_; \
    } while (0)

#endif
