/* mirage: the program. Dispatches to one file per subcommand. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "cli/cli.h"
#ifdef MG_HAVE_OPENBLAS
#include <cblas.h>
#endif

static const struct { const char *name; int (*fn)(int, char **); const char *what; } cmds[] = {
    {"run", cmd_run, "transform a stream: --model FILE --input SRC --output DST"},
    {"demo", cmd_demo, "the main job: the shipped model on the default input"},
    {"bench", cmd_bench, "time one frame step, per component"},
    {"eval", cmd_eval, "long-rollout evaluation: drift, flicker, collapse; writes a report"},
    {"init", cmd_init, "write a freshly initialised model"},
    {"info", cmd_info, "describe a model file"},
    {"train", cmd_train, "train the autoencoder (tae) or the DiT (dit) on shards; checkpoints, resume"},
    {"data", cmd_data, "training data: build shards from video and photos, info, sample clips"},
    {"serve", cmd_serve, "the browser demo: a web page, a webcam in, transformed video out"},
};

static void usage(FILE *f) {
    fprintf(f, "mirage %s — real-time video diffusion on live streams\n\n"
               "usage: mirage <command> [options]\n\ncommands:\n", MG_VERSION);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) fprintf(f, "  %-6s %s\n", cmds[i].name, cmds[i].what);
    fprintf(f, "  help   this text\n\n`mirage <command> --help` describes a command's options.\n");
}

/* OpenBLAS 0.3.21 (Debian 12) does not recognise recent Xeons and falls back to its
 * Prescott (SSE3) kernels: about 21 GFLOP/s a core instead of 150 with its SkylakeX ones
 * (measured by dev/cpu/bench_conv.c). It picks kernels when the library loads, before main,
 * so the fix from inside is to set OPENBLAS_CORETYPE and exec ourselves once more. A
 * user's own OPENBLAS_CORETYPE is always respected. */
static void openblas_pick_kernels(char **argv) {
#ifdef MG_HAVE_OPENBLAS
    const char *core = openblas_get_corename();
    if (getenv("OPENBLAS_CORETYPE") || !core || strcasecmp(core, "prescott") != 0) return;
    __builtin_cpu_init();
    const char *want = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                         : NULL;
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    execv("/proc/self/exe", argv); /* returns only on failure: carry on with slow kernels */
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    openblas_pick_kernels(argv);
    /* A file size limit (ulimit -f) would end the process by SIGXFSZ in the middle of a write,
     * silently and with a temporary left behind; ignored, the write fails with EFBIG and the
     * writer reports it and keeps the previous file, as on a full disk. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *c = argv[1];
    if (!strcmp(c, "--version") || !strcmp(c, "version")) {
        printf("mirage %s (%s)\n", MG_VERSION, mg_build_features());
        return EXIT_OK;
    }
    if (!strcmp(c, "help") || !strcmp(c, "--help") || !strcmp(c, "-h")) {
        if (argc > 2) { /* mirage help run == mirage run --help */
            for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
                if (!strcmp(argv[2], cmds[i].name)) {
                    char *args[] = {argv[2], "--help", NULL};
                    return cmds[i].fn(2, args);
                }
            return cli_usage(NULL, "unknown command '%s'", argv[2]);
        }
        usage(stdout);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(c, cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    return cli_usage(NULL, "unknown command '%s' (try `mirage help`)", c);
}
