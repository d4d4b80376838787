/* The parse step of each subcommand, apart from running it. Each *_parse reads argv exactly as
 * the command does (the same checks, messages and exit codes) and does nothing else: no file is
 * opened, no model loaded, nothing started. The command calls it first; fuzz/fuzz_cli.c feeds it
 * hostile argv vectors. Each returns CLI_PARSED when the command line is good and the command
 * would go on (the values in *a), else the exit code the command returns (EXIT_OK after --help,
 * EXIT_USAGE after a usage error, which is printed). Strings in *a point into argv. */
#ifndef MG_CLI_PARSE_H
#define MG_CLI_PARSE_H

#include "cli/cli.h"
#include "cli/loop.h"
#include "data/data.h"
#include "eval/eval.h"
#include "io/fit.h"
#include "io/source.h"
#include "serve/serve.h"
#include "train/trainer.h"

#define CLI_PARSED (-1)

typedef struct serve_args {
    serve_opts so;
    const char *model, *config;
} serve_args;
int serve_parse(int argc, char **argv, serve_args *a);

int train_parse(int argc, char **argv, train_opts *a);

typedef struct run_args {
    const char *model, *config, *input, *output;
    mg_stream_opts so;
    source_opts sopt;
    loop_opts lo;
    fit_mode fit;
    int W, H; /* 0: from the input */
    long skip;
} run_args;
int run_parse(int argc, char **argv, run_args *a);

typedef struct demo_args {
    const char *output, *frames, *input, *size, *prompt; /* output, input: NULL for the defaults */
} demo_args;
int demo_parse(int argc, char **argv, demo_args *a);

int info_parse(int argc, char **argv, const char **file);

typedef struct init_args {
    mg_config cfg;
    const char *config, *out;
    uint64_t seed;
    int full;
} init_args;
int init_parse(int argc, char **argv, init_args *a);

typedef struct bench_args {
    const char *config, *model;
    mg_stream_opts so;
    long iters, warmup; /* warmup < 0: ring + 2 */
    int json;
} bench_args;
int bench_parse(int argc, char **argv, bench_args *a);

typedef struct eval_args {
    const char *model, *config, *compare, *input;
    eval_opts eo;
    fit_mode fit;
    int W, H, quiet;
} eval_args;
int eval_parse(int argc, char **argv, eval_args *a);

enum { DATA_BUILD = 1, DATA_INFO, DATA_SAMPLE };
typedef struct data_args {
    int sub;                 /* DATA_BUILD, DATA_INFO or DATA_SAMPLE */
    data_build_opts bo;      /* build: its options; bo.exclude points into excl */
    char *excl[64];
    char **sources;          /* build: the SOURCES, in argv */
    int n_sources;
    const char *dir;         /* info, sample: the data directory */
    int list;                /* info --list */
    const char *out, *split; /* sample */
    long clips, T, S;
    uint64_t seed;
} data_args;
int data_parse(int argc, char **argv, data_args *a);

#endif
