/* The stream options that run, eval and bench share, parsed in one place so that their
 * ranges and messages cannot drift apart. */
#include <stdio.h>

#include "cli/cli.h"

int cli_stream_option(const char *cmd, int o, const char *arg, int max_steps, mg_stream_opts *so) {
    long v;
    double g;
    switch (o) {
    case 'n':
        if (parse_long(arg, 1, max_steps, &v)) return cli_usage(cmd, "--steps: expected 1..%d, found '%s'", max_steps, arg), -1;
        so->steps = (int)v;
        return 1;
    case 'k':
        if (parse_long(arg, 0, 64, &v)) return cli_usage(cmd, "--ring: expected 0..64, found '%s'", arg), -1;
        so->ring = (int)v;
        return 1;
    case 'g':
        if (parse_float(arg, 0, 100, &g)) return cli_usage(cmd, "--guidance: expected 0..100, found '%s'", arg), -1;
        so->guidance = (float)g;
        return 1;
    case 'd':
        if (parse_device(arg, &so->device)) return cli_usage(cmd, "--device: expected cpu or cuda, found '%s'", arg), -1;
        return 1;
    case 's':
        if (parse_u64(arg, &so->seed)) return cli_usage(cmd, "--seed: expected a non-negative integer, found '%s'", arg), -1;
        return 1;
    default:
        return 0;
    }
}
