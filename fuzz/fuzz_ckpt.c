/* libFuzzer target for the training checkpoint's index (src/train/checkpoint.c: ckpt_index_parse,
 * the checks ckpt_load makes before it touches a part) and the model config in a file's metadata
 * (model_config_from_meta, src/model/model.c; every model file and index goes through it). Any
 * bytes, opened as a safetensors file in memory, must give MG_OK or a clean error with a message;
 * what is accepted must be in range: the stage tae or dit, the step and the part count in their
 * ranges, and every config field inside the limits that the model's sizes are computed from.
 *
 *   make fuzz FUZZERS=ckpt FUZZ_SECONDS=60 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/safetensors.h"
#include "model/model.h"
#include "train/checkpoint.h"

#define FUZZ_CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static void check_cfg(const mg_config *c) {
    FUZZ_CHECK(memchr(c->name, 0, sizeof c->name));
    FUZZ_CHECK(c->tae_ch >= 1 && c->tae_ch <= 1024 && c->z_ch >= 1 && c->z_ch <= 64);
    FUZZ_CHECK(c->d >= 1 && c->d <= 16384 && c->layers >= 1 && c->layers <= 256);
    FUZZ_CHECK(c->heads >= 1 && c->heads <= 256 && c->d % c->heads == 0 && (c->d / c->heads) % 2 == 0);
    FUZZ_CHECK(c->patch == 2 && c->ring >= 0 && c->ring <= 64);
    FUZZ_CHECK(isfinite(c->sigma_ctx) && c->sigma_ctx >= 0 && c->sigma_ctx <= 1);
    FUZZ_CHECK(isfinite(c->shift) && c->shift >= 0.01f && c->shift <= 100);
    FUZZ_CHECK(isfinite(c->rope_theta) && c->rope_theta >= 1 && c->rope_theta <= 1e9f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    mg_clear_error();
    if (st_open_memory(&f, data, size, "fuzz.ckpt") != MG_OK) {
        st_close(&f);
        return 0;
    }
    mg_config c;
    mg_clear_error();
    if (model_config_from_meta(&f, &c) == MG_OK) check_cfg(&c);
    else FUZZ_CHECK(mg_last_error()[0]);
    ckpt_index ix;
    mg_clear_error();
    mg_status s = ckpt_index_parse(&f, &ix);
    if (s == MG_OK) {
        FUZZ_CHECK(!strcmp(ix.stage, "tae") || !strcmp(ix.stage, "dit"));
        FUZZ_CHECK(ix.step >= 0 && ix.step <= (1L << 40) && ix.parts >= 1 && ix.parts <= 100000);
        check_cfg(&ix.cfg);
        FUZZ_CHECK(!strcmp(st_meta_get(&f, "prompts"), MG_DEFAULT_PROMPTS));
    } else {
        FUZZ_CHECK(s == MG_ERR_FORMAT && mg_last_error()[0]); /* a damaged index names what is wrong */
    }
    st_close(&f);
    return 0;
}
