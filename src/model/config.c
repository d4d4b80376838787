/* The named configs (DESIGN.md §1). Names are part of the interface. */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "model/model.h"

const char *const MG_DEFAULT_PROMPTS =
    "none,colorize,upscale,restore,style:toon,style:sketch,style:thermal,dream";

static const struct { const char *name; int tae_ch, d, layers, heads; } named[] = {
    {"tiny", 32, 192, 6, 3},
    {"s", 64, 384, 12, 6},
    {"b", 64, 768, 12, 12},
    {"1b", 64, 2048, 20, 16},
};

mg_status mg_config_named(const char *name, mg_config *cfg) {
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        if (strcmp(name, named[i].name) != 0) continue;
        memset(cfg, 0, sizeof *cfg);
        snprintf(cfg->name, sizeof cfg->name, "%s", named[i].name);
        cfg->tae_ch = named[i].tae_ch;
        cfg->z_ch = 4;
        cfg->d = named[i].d;
        cfg->layers = named[i].layers;
        cfg->heads = named[i].heads;
        cfg->patch = 2;
        cfg->ring = 3;
        cfg->sigma_ctx = 0.05f;
        cfg->shift = 1.0f;
        cfg->rope_theta = 10000.0f;
        return MG_OK;
    }
    return mg_fail(MG_ERR_ARG, "unknown config '%s' (expected tiny, s, b or 1b)", name);
}
