/* The command line's shared helpers: error messages, value parsers, the stream options that
 * run, eval and bench share (parsed in one place so that their ranges and messages cannot drift
 * apart), and model loading. Apart from main.c so the parse steps link without main (fuzz/). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/tmpfile.h"

int cli_stream_option(const char *cmd, int o, const char *arg, const char *word, int max_steps, mg_stream_opts *so) {
    long v;
    double g;
    switch (o) {
    case 'n':
        if (parse_long(arg, 1, max_steps, &v)) return cli_usage(cmd, "--steps: expected 1..%d, found '%s'", max_steps, arg);
        so->steps = (int)v;
        return 0;
    case 'k':
        if (parse_long(arg, 0, 64, &v)) return cli_usage(cmd, "--ring: expected 0..64, found '%s'", arg);
        so->ring = (int)v;
        return 0;
    case 'g':
        if (parse_float(arg, 0, 100, &g)) return cli_usage(cmd, "--guidance: expected 0..100, found '%s'", arg);
        so->guidance = (float)g;
        return 0;
    case 'd':
        if (parse_device(arg, &so->device)) return cli_usage(cmd, "--device: expected cpu or cuda, found '%s'", arg);
        return 0;
    case 's':
        if (parse_u64(arg, &so->seed)) return cli_usage(cmd, "--seed: expected a non-negative integer, found '%s'", arg);
        return 0;
    default:
        return cli_usage(cmd, "unknown or incomplete option '%s'", word);
    }
}

int cli_model_choice(const char *cmd, const char *model, const char *config) {
    if (!model && !config) return cli_usage(cmd, "--model FILE is required (or --config NAME for random weights)");
    if (model && config) return cli_usage(cmd, "give --model or --config, not both");
    return 0;
}

static void print_error(const char *fmt, va_list ap) {
    fputs("mirage: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error(fmt, ap);
    va_end(ap);
    return EXIT_FAIL;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error(fmt, ap);
    va_end(ap);
    if (cmd) fprintf(stderr, "see `mirage %s --help`\n", cmd);
    return EXIT_USAGE;
}

int cli_status(mg_status s) {
    const char *msg = mg_last_error();
    return cli_fail("%s", msg[0] ? msg : mg_strerror(s));
}

int parse_size(const char *s, int *w, int *h) {
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10);
    if (errno || end == s || (*end != 'x' && *end != 'X')) return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (errno || end == p || *end || a < 1 || b < 1 || a > 16384 || b > 16384) return -1;
    *w = (int)a, *h = (int)b;
    return 0;
}

int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

int parse_float(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

int parse_device(const char *s, mg_device *d) {
    if (!strcmp(s, "cpu")) *d = MG_DEVICE_CPU;
    else if (!strcmp(s, "cuda")) *d = MG_DEVICE_CUDA;
    else return -1;
    return 0;
}

mg_status cli_load_model(const char *model, const char *config, uint64_t seed, mg_model **out) {
    if (model) return mg_model_load(model, out);
    mg_config cfg;
    MG_TRY(mg_config_named(config, &cfg));
    char tmp[128];
    int fd = mg_tmpfile(tmp, sizeof tmp, "init");
    if (fd < 0) return mg_fail(MG_ERR_IO, "cannot create a temporary file: %s", strerror(errno));
    close(fd);
    mg_status s = mg_model_init_file(tmp, &cfg, seed, 1);
    if (s == MG_OK) s = mg_model_load(tmp, out);
    unlink(tmp); /* the mapping stays valid after unlink */
    return s;
}
