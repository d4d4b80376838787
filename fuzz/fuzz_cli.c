/* libFuzzer target for the command line: the parse step of every subcommand (src/cli/parse.h:
 * run_parse, demo_parse, bench_parse, eval_parse, init_parse, info_parse, train_parse,
 * data_parse, serve_parse), which read argv exactly as the commands do and run nothing, open
 * nothing. The input is split at NUL bytes into an argv vector; its first word picks the
 * subcommand (as main does with argv[1]), an unknown one is taken as a byte from it modulo the
 * number of commands. Each word is its own allocation, so ASan catches a read past its end.
 * Invariants: a parse returns CLI_PARSED, EXIT_OK (--help) or EXIT_USAGE, never EXIT_FAIL; an
 * accepted command line has its required options, every number inside its documented range and
 * every string pointing into argv.
 *
 * Run it with -close_fd_mask=3 (make fuzz does): the usage errors and --help texts go to stdout
 * and stderr.
 *
 *   make fuzz FUZZERS=cli FUZZ_SECONDS=60 */
#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/parse.h"
#include "eval/degrade.h"

#define FUZZ_CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)
#define MAX_ARGS 64

static char *g_argv[MAX_ARGS + 1];
static int g_argc;

/* s is NULL or one of the words (glibc's getopt permutes argv, so any of them) */
static int in_argv(const char *s) {
    if (!s) return 1;
    for (int i = 0; i < g_argc; i++)
        if (s >= g_argv[i] && s <= g_argv[i] + strlen(g_argv[i])) return 1;
    return 0;
}
static int size_ok(int w, int h) { return w >= 1 && w <= 16384 && h >= 1 && h <= 16384; }
static void check_stream(const mg_stream_opts *so, int max_steps) {
    FUZZ_CHECK(so->steps >= 1 && so->steps <= max_steps && so->ring >= 0 && so->ring <= 64);
    FUZZ_CHECK(so->guidance >= 0 && so->guidance <= 100);
    FUZZ_CHECK(so->device == MG_DEVICE_CPU || so->device == MG_DEVICE_CUDA);
    FUZZ_CHECK(in_argv(so->prompt));
}

static const char *const cmds[] = {"run", "demo", "bench", "eval", "init", "info", "train", "data", "serve"};
#define N_CMDS (int)(sizeof cmds / sizeof cmds[0])

static int parse_one(int cmd, int argc, char **argv) {
    switch (cmd) {
    case 0: {
        run_args a;
        int r = run_parse(argc, argv, &a);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(!a.model != !a.config && a.input && a.output);
        FUZZ_CHECK(in_argv(a.model) && in_argv(a.config) && in_argv(a.input) && in_argv(a.output));
        FUZZ_CHECK((a.W == 0 && a.H == 0) || size_ok(a.W, a.H));
        FUZZ_CHECK(a.lo.max_frames >= -1 && a.skip >= 0 && a.skip <= (1L << 30));
        FUZZ_CHECK(a.fit == FIT_CROP || a.fit == FIT_PAD || a.fit == FIT_STRETCH);
        FUZZ_CHECK(a.sopt.camera_fps >= 0 && a.sopt.camera_fps <= 1000 && a.lo.debug_delay_ms >= 0);
        FUZZ_CHECK(!a.sopt.camera_w || (size_ok(a.sopt.camera_w, a.sopt.camera_h) && !strncmp(a.input, "v4l2:", 5)));
        check_stream(&a.so, 64);
        return r;
    }
    case 1: {
        demo_args a;
        int r = demo_parse(argc, argv, &a);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(a.frames && a.size && a.prompt && in_argv(a.input) && in_argv(a.output));
        return r;
    }
    case 2: {
        bench_args a;
        int r = bench_parse(argc, argv, &a);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(!a.model != !a.config && in_argv(a.model) && in_argv(a.config));
        FUZZ_CHECK(a.iters >= 1 && a.iters <= 100000 && a.warmup >= -1 && a.warmup <= 100000);
        FUZZ_CHECK(size_ok(a.so.width, a.so.height));
        check_stream(&a.so, 16);
        return r;
    }
    case 3: {
        eval_args a;
        int r = eval_parse(argc, argv, &a);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(!a.model != !a.config && a.input && a.eo.report_dir && degrade_known(a.eo.prompt));
        FUZZ_CHECK(in_argv(a.model) && in_argv(a.config) && in_argv(a.compare) && in_argv(a.input));
        FUZZ_CHECK(a.eo.frames >= 1 && a.eo.frames <= 100000000 && ((a.W == 0 && a.H == 0) || size_ok(a.W, a.H)));
        FUZZ_CHECK(a.eo.steps >= 1 && a.eo.steps <= 64 && a.eo.ring >= 0 && a.eo.ring <= 64);
        return r;
    }
    case 4: {
        init_args a;
        int r = init_parse(argc, argv, &a);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(a.config && a.out && in_argv(a.config) && in_argv(a.out));
        FUZZ_CHECK(a.cfg.d >= 1 && a.cfg.heads >= 1 && a.cfg.d % a.cfg.heads == 0 && a.cfg.patch == 2);
        return r;
    }
    case 5: {
        const char *file = NULL;
        int r = info_parse(argc, argv, &file);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(argc == 2 && file == argv[1] && file[0] != '-');
        return r;
    }
    case 6: {
        train_opts o;
        int r = train_parse(argc, argv, &o);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(o.data && o.out && !(o.init && o.config) && in_argv(o.data) && in_argv(o.out));
        FUZZ_CHECK(o.size >= 16 && o.size <= 4096 && o.size % 16 == 0 && o.lr_min <= o.lr);
        FUZZ_CHECK(o.steps >= 1 && o.batch >= 1 && o.batch <= 4096 && o.frames >= 1 && o.frames <= 64);
        FUZZ_CHECK(o.dtype == ST_F32 || o.dtype == ST_BF16);
        return r;
    }
    case 7: {
        data_args a;
        int r = data_parse(argc, argv, &a);
        if (r != CLI_PARSED) return r;
        if (a.sub == DATA_BUILD) {
            FUZZ_CHECK(a.bo.out_dir && in_argv(a.bo.out_dir) && a.n_sources >= 1);
            FUZZ_CHECK(a.sources >= argv && a.sources + a.n_sources <= argv + argc);
            FUZZ_CHECK(a.bo.n_exclude >= 0 && a.bo.n_exclude <= 64 && (!a.bo.n_exclude || a.bo.exclude == a.excl));
            FUZZ_CHECK(a.bo.quality >= 1 && a.bo.quality <= 100 && a.bo.val_fraction >= 0 && a.bo.val_fraction <= 0.9);
        } else if (a.sub == DATA_INFO) {
            FUZZ_CHECK(a.dir && in_argv(a.dir));
        } else {
            FUZZ_CHECK(a.sub == DATA_SAMPLE && a.dir && a.out && in_argv(a.dir) && in_argv(a.out));
            FUZZ_CHECK(a.S >= 8 && a.S <= 1024 && a.S % 8 == 0 && a.T >= 1 && a.T <= 64 && a.clips >= 1);
            FUZZ_CHECK(!strcmp(a.split, "train") || !strcmp(a.split, "val"));
        }
        return r;
    }
    default: {
        serve_args a;
        int r = serve_parse(argc, argv, &a);
        if (r != CLI_PARSED) return r;
        FUZZ_CHECK(!a.model != !a.config && in_argv(a.model) && in_argv(a.config));
        FUZZ_CHECK(a.so.width % 16 == 0 && a.so.height % 16 == 0 && size_ok(a.so.width, a.so.height));
        FUZZ_CHECK(a.so.steps >= 1 && a.so.steps <= a.so.max_steps && a.so.max_steps <= 64);
        FUZZ_CHECK(a.so.port >= 0 && a.so.port <= 65535 && a.so.lim.max_message >= 1024);
        FUZZ_CHECK(a.so.lim.max_frame_w >= 1 && a.so.lim.max_frame_w <= 8192 && a.so.lim.max_frame_h <= 8192);
        return r;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    /* argv: the words between NULs, each its own allocation */
    g_argc = 0;
    size_t start = 0;
    for (size_t i = 0; i <= size && g_argc < MAX_ARGS; i++) {
        if (i < size && data[i]) continue;
        size_t len = i - start;
        char *w = malloc(len + 1);
        if (!w) break;
        memcpy(w, data + start, len);
        w[len] = 0;
        g_argv[g_argc++] = w;
        start = i + 1;
    }
    g_argv[g_argc] = NULL;
    int cmd = -1;
    for (int c = 0; c < N_CMDS; c++)
        if (!strcmp(g_argv[0], cmds[c])) cmd = c;
    if (cmd < 0) cmd = (unsigned char)g_argv[0][0] % N_CMDS;
    /* A program parses its command line once; here every run starts getopt afresh (optind = 0
     * makes glibc forget a half-read cluster of the previous argv). */
    char *none[] = {"fuzz", NULL};
    optind = 0;
    opterr = 0;
    getopt_long(1, none, "", NULL, NULL);
    char *copy[MAX_ARGS + 1]; /* getopt permutes the vector: free what was allocated */
    memcpy(copy, g_argv, sizeof copy);
    int r = parse_one(cmd, g_argc, g_argv);
    FUZZ_CHECK(r == CLI_PARSED || r == EXIT_OK || r == EXIT_USAGE);
    for (int i = 0; i < g_argc; i++) free(copy[i]);
    return 0;
}
