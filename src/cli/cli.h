/* The mirage program: one file per subcommand. Exit codes: 0 ok, 1 failure, 2 bad usage.
 * Errors go to stderr as "mirage: error: ...". */
#ifndef MG_CLI_H
#define MG_CLI_H

#include <stdint.h>

#include "core/status.h"
#include "mirage.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Prints "mirage: error: <msg>" (formatted) and returns EXIT_FAIL. */
int cli_fail(const char *fmt, ...) MG_PRINTF(1, 2);
/* Prints "mirage: error: <msg>", a pointer to `mirage CMD --help`, returns EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) MG_PRINTF(2, 3);
/* Prints mirage's error for a failed library call and returns EXIT_FAIL. */
int cli_status(mg_status s);

int parse_size(const char *s, int *w, int *h);      /* "WxH" -> 0 ok, -1 bad */
int parse_long(const char *s, long lo, long hi, long *out);
int parse_u64(const char *s, uint64_t *out);
int parse_float(const char *s, double lo, double hi, double *out);
int parse_device(const char *s, mg_device *d);
/* The stream options shared by run, eval and bench, by their getopt codes: 'n' --steps
 * (1..max_steps), 'k' --ring, 'g' --guidance, 'd' --device, 's' --seed; the last case of their
 * option switch. Returns 0 when o was one of them and arg went into *so; else prints the usage
 * error (a bad arg, or o none of them: "unknown or incomplete option" naming word, the argv
 * element getopt stopped at) and returns EXIT_USAGE. */
int cli_stream_option(const char *cmd, int o, const char *arg, const char *word, int max_steps, mg_stream_opts *so);
/* Exactly one of --model FILE and --config NAME (run, eval, serve): 0, else prints the usage
 * error and returns EXIT_USAGE. */
int cli_model_choice(const char *cmd, const char *model, const char *config);

/* Loads --model FILE, or with --config NAME initialises a fresh model (seed, full random)
 * into a temporary file first. */
mg_status cli_load_model(const char *model, const char *config, uint64_t seed, mg_model **out);

#endif
