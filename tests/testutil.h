/* Shared test helpers (cmocka). Tensor checks print the worst element and a verdict line. */
#ifndef MG_TESTUTIL_H
#define MG_TESTUTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/rng.h"

/* Max over i of |got-ref| / (|ref| + rms(ref)): a relative error that does not blow up where
 * ref crosses zero. Prints "name: max rel err E at [i] (got G, ref R) ok|FAIL". */
static inline double tu_check_close(const char *name, const float *got, const float *ref, size_t n,
                                    double tol) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double rms = n ? sqrt(ss / n) : 0, worst = 0;
    size_t wi = 0;
    int bad_nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isinf(got[i])) { bad_nan = 1; wi = i; worst = INFINITY; break; }
        double e = fabs((double)got[i] - ref[i]) / (fabs((double)ref[i]) + rms + 1e-30);
        if (e > worst) { worst = e; wi = i; }
    }
    printf("  %-28s n=%-8zu max rel err %.3e at [%zu] (got %.6g, ref %.6g) %s\n", name, n, worst,
           wi, n ? got[wi] : 0.0, n ? ref[wi] : 0.0, (!bad_nan && worst <= tol) ? "ok" : "FAIL");
    return bad_nan ? INFINITY : worst;
}

#define assert_close(name, got, ref, n, tol) \
    assert_true(tu_check_close((name), (got), (ref), (n), (tol)) <= (tol))

/* Relative L2 error of got against ref: sqrt(sum (got-ref)^2 / sum ref^2); INFINITY when got
 * holds a NaN or an infinity (a poisoned, unwritten output) or ref is all zero and got is not. */
static inline double tu_rel_l2(const float *got, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        double e = (double)got[i] - ref[i];
        num += e * e, den += (double)ref[i] * ref[i];
    }
    if (den == 0) return num == 0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

/* An mg_status call that must succeed: a failure fails the test with the library's message. */
#define TU_OK(call)                                                              \
    do {                                                                         \
        mg_status tu_s_ = (call);                                                \
        if (tu_s_ != MG_OK) fail_msg("%s: %s", #call, mg_last_error());          \
    } while (0)

static inline void tu_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
    mg_rng r;
    mg_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * mg_rng_uniform(&r);
}

static inline void tu_poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

/* malloc'd arrays (at least one element) filled uniform in [lo, hi) or with NaN. */
static inline float *tu_frand(size_t n, float lo, float hi, uint64_t seed) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    tu_fill_uniform(x, n, lo, hi, seed);
    return x;
}

static inline float *tu_fpoison(size_t n) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    tu_poison(x, n);
    return x;
}

/* A fresh temporary directory for files a test writes (removed by the OS's tmp cleanup). */
/* The test binary's scratch directory, removed with everything in it when the binary exits
 * (left behind, every `make test` added a few to /tmp: 7.7 GiB of them on the development
 * machine). Only the process that made it removes it. */
static char tu_dir_[256];
static pid_t tu_dir_pid_;
static inline int tu_rm_(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb, (void)flag, (void)f;
    return remove(p);
}
static inline void tu_tmpdir_remove_(void) {
    if (tu_dir_[0] && getpid() == tu_dir_pid_) nftw(tu_dir_, tu_rm_, 16, FTW_DEPTH | FTW_PHYS);
}
static inline const char *tu_tmpdir(void) {
    if (!tu_dir_[0]) {
        snprintf(tu_dir_, sizeof tu_dir_, "/tmp/mirage-test-XXXXXX");
        if (!mkdtemp(tu_dir_)) { perror("mkdtemp"); abort(); }
        tu_dir_pid_ = getpid();
        atexit(tu_tmpdir_remove_);
    }
    return tu_dir_;
}

#endif
