/* mirage info: describe a model file. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/parse.h"

static const char *help = "usage: mirage info FILE\n\nPrints the config, parameter count, prompts and format version.\n";

int info_parse(int argc, char **argv, const char **file) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(help, stdout);
        return EXIT_OK;
    }
    if (argc != 2 || argv[1][0] == '-') return cli_usage("info", "expected exactly one model file");
    *file = argv[1];
    return CLI_PARSED;
}

int cmd_info(int argc, char **argv) {
    const char *file = NULL;
    int parsed = info_parse(argc, argv, &file);
    if (parsed != CLI_PARSED) return parsed;
    mg_model *m;
    mg_status s = mg_model_load(file, &m);
    if (s != MG_OK) return cli_status(s);
    const mg_config *c = mg_model_config(m);
    printf("file            %s\n", argv[1]);
    printf("format          mirage, format_version 1\n");
    printf("config          %s\n", c->name);
    printf("parameters      %zu (%.2f M)\n", mg_model_params(m), mg_model_params(m) / 1e6);
    printf("autoencoder     %d channels, latent %d channels, 8x down\n", c->tae_ch, c->z_ch);
    printf("dit             d %d, layers %d, heads %d, patch %d\n", c->d, c->layers, c->heads, c->patch);
    printf("history ring    %d frames, sigma_ctx %g\n", c->ring, c->sigma_ctx);
    printf("sampler         shift %g, rope_theta %g\n", c->shift, c->rope_theta);
    printf("prompts         ");
    for (int i = 0; i < mg_model_prompt_count(m); i++) printf("%s%s", i ? ", " : "", mg_model_prompt_name(m, i));
    printf("\n");
    mg_model_free(m);
    return EXIT_OK;
}
