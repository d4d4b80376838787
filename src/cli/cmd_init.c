/* mirage init: write a freshly initialised model. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/parse.h"

static const char *help =
    "usage: mirage init --config NAME --seed N --out FILE [--full-random]\n\n"
    "Writes a freshly initialised model (docs/ARCHITECTURE.md, Initialisation).\n"
    "  --config NAME   tiny, s, b or 1b\n"
    "  --seed N        the seed (same seed, same bits on every machine)\n"
    "  --out FILE      the .safetensors file to write (atomically)\n"
    "  --full-random   no adaLN-zero: every tensor random (for tests and benchmarks)\n";

int init_parse(int argc, char **argv, init_args *a) {
    static const struct option opts[] = {{"config", 1, 0, 'c'}, {"seed", 1, 0, 's'}, {"out", 1, 0, 'o'},
                                         {"full-random", 0, 0, 'r'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *config = NULL, *out = NULL;
    uint64_t seed = 0;
    int full = 0, have_seed = 0, o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config = optarg; break;
        case 's':
            if (parse_u64(optarg, &seed)) return cli_usage("init", "--seed: expected a non-negative integer, found '%s'", optarg);
            have_seed = 1;
            break;
        case 'o': out = optarg; break;
        case 'r': full = 1; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: return cli_usage("init", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("init", "unexpected argument '%s'", argv[optind]);
    if (!config || !out || !have_seed) return cli_usage("init", "--config, --seed and --out are required");
    mg_config cfg;
    mg_status s = mg_config_named(config, &cfg);
    if (s != MG_OK) return cli_usage("init", "%s", mg_last_error());
    a->cfg = cfg, a->config = config, a->out = out, a->seed = seed, a->full = full;
    return CLI_PARSED;
}

int cmd_init(int argc, char **argv) {
    init_args a;
    int parsed = init_parse(argc, argv, &a);
    if (parsed != CLI_PARSED) return parsed;
    mg_status s;
    if ((s = mg_model_init_file(a.out, &a.cfg, a.seed, a.full)) != MG_OK) return cli_status(s);
    printf("wrote %s: config %s, seed %llu%s\n", a.out, a.config, (unsigned long long)a.seed, a.full ? ", full random" : "");
    return EXIT_OK;
}
