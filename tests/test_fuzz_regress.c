/* The fuzz targets' regression run (issue 9): every seed (fuzz/corpus/NAME/) and every input a
 * fuzzer once crashed on (fuzz/regress/NAME/, kept after the fix) goes through the same entry
 * point as in `make fuzz` (the fuzz/fuzz_NAME.c files are compiled in here, their
 * LLVMFuzzerTestOneInput renamed), built by the ordinary compiler, so it runs in `make test` and
 * under ASan + UBSan in `make SAN=1 test`. An invariant broken is a trap: the test dies. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define LLVMFuzzerTestOneInput fuzz_safetensors_one
#include "../fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_y4m_one
#include "../fuzz/fuzz_y4m.c"
#undef LLVMFuzzerTestOneInput
#ifdef MG_HAVE_JPEG
#define LLVMFuzzerTestOneInput fuzz_shard_one
#include "../fuzz/fuzz_shard.c"
#undef LLVMFuzzerTestOneInput
#endif
#define LLVMFuzzerTestOneInput fuzz_proto_one
#include "../fuzz/fuzz_proto.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_web_one
#include "../fuzz/fuzz_web.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_ckpt_one
#include "../fuzz/fuzz_ckpt.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_model_one
#include "../fuzz/fuzz_model.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_cli_one
#include "../fuzz/fuzz_cli.c"
#undef LLVMFuzzerTestOneInput

typedef int (*fuzz_fn)(const uint8_t *, size_t);

static int read_file(const char *p, uint8_t **buf, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    size_t cap = 4096, len = 0;
    uint8_t *b = malloc(cap);
    for (size_t k; b && (k = fread(b + len, 1, cap - len, f)) > 0;) {
        len += k;
        if (len == cap) {
            uint8_t *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    int err = ferror(f) || !b;
    fclose(f);
    if (err) { free(b); return -1; }
    *buf = b, *n = len;
    return 0;
}

/* Feeds every regular file in dir to fn; returns how many (-1: no such directory). */
static int run_dir(const char *dir, fuzz_fn fn, int quiet) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) || !S_ISREG(st.st_mode)) continue;
        uint8_t *buf = NULL;
        size_t n = 0;
        assert_int_equal(read_file(p, &buf, &n), 0);
        /* the CLI target prints usage errors and help texts: keep them out of the test's log */
        int saved[2] = {-1, -1};
        if (quiet) {
            fflush(stdout), fflush(stderr);
            int null = open("/dev/null", O_WRONLY);
            saved[0] = dup(1), saved[1] = dup(2);
            dup2(null, 1), dup2(null, 2);
            close(null);
        }
        fn(buf, n);
        if (quiet) {
            fflush(stdout), fflush(stderr);
            dup2(saved[0], 1), dup2(saved[1], 2);
            close(saved[0]), close(saved[1]);
        }
        free(buf);
        count++;
    }
    closedir(d);
    return count;
}

static void run_target(const char *name, fuzz_fn fn, int quiet) {
    char seeds[256], regress[256];
    snprintf(seeds, sizeof seeds, "fuzz/corpus/%s", name);
    snprintf(regress, sizeof regress, "fuzz/regress/%s", name);
    int a = run_dir(seeds, fn, quiet), b = run_dir(regress, fn, quiet);
    printf("  fuzz_%-12s %3d seeds, %3d regression inputs: no crash, no invariant broken\n", name, a, b < 0 ? 0 : b);
    if (a < 0) printf("  %s: not found (run from the repository root, as make test does)\n", seeds);
    assert_true(a > 0); /* every target has a committed seed corpus */
}

static void test_safetensors(void **state) { (void)state; run_target("safetensors", fuzz_safetensors_one, 0); }
static void test_y4m(void **state) { (void)state; run_target("y4m", fuzz_y4m_one, 0); }
#ifdef MG_HAVE_JPEG
static void test_shard(void **state) { (void)state; run_target("shard", fuzz_shard_one, 0); }
#endif
static void test_proto(void **state) { (void)state; run_target("proto", fuzz_proto_one, 0); }
static void test_web(void **state) { (void)state; run_target("web", fuzz_web_one, 0); }
static void test_ckpt(void **state) { (void)state; run_target("ckpt", fuzz_ckpt_one, 0); }
static void test_model(void **state) { (void)state; run_target("model", fuzz_model_one, 0); }
static void test_cli(void **state) { (void)state; run_target("cli", fuzz_cli_one, 1); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors), cmocka_unit_test(test_y4m),
#ifdef MG_HAVE_JPEG
        cmocka_unit_test(test_shard),
#endif
        cmocka_unit_test(test_proto), cmocka_unit_test(test_web), cmocka_unit_test(test_ckpt),
        cmocka_unit_test(test_model), cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
