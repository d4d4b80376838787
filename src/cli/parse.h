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

#endif
