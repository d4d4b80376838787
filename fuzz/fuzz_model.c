/* libFuzzer target for the model loader, mg_model_load (src/model/model.c): the safetensors
 * header, the "format" keys, the config (model_config_from_meta), the prompt list, and every
 * tensor checked against the config's weight table (names, dtype F32/BF16/F16, shapes) and bound
 * (BF16/F16 widened, convolutions packed). The input is written to a memory file
 * (memfd_create) and loaded through /proc/self/fd, the same path as a file on disk, so
 * nothing is written to the file system. Any bytes: MG_OK or a clean error with a message; a
 * model that loads has a config in range, 'none' as its first prompt and a parameter count equal
 * to the sum of its tensors' elements.
 *
 * Seeds: a model of a micro custom config (tae_ch 2, z_ch 1, d 2, 1 layer: 25 KB) and damaged
 * copies of it.
 *
 *   make fuzz FUZZERS=model FUZZ_SECONDS=60 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/status.h"
#include "mirage.h"

#define FUZZ_CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz-model", 0);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t k = write(fd, data + done, size - done);
        if (k <= 0) break;
        done += (size_t)k;
    }
    if (done == size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        mg_model *m = NULL;
        mg_clear_error();
        mg_status s = mg_model_load(path, &m);
        if (s == MG_OK) {
            const mg_config *c = mg_model_config(m);
            FUZZ_CHECK(c->d >= 1 && c->d % c->heads == 0 && c->patch == 2 && c->z_ch >= 1 && c->tae_ch >= 1);
            FUZZ_CHECK(mg_model_prompt_count(m) >= 1 && !strcmp(mg_model_prompt_name(m, 0), "none"));
            FUZZ_CHECK(mg_model_prompt_name(m, mg_model_prompt_count(m)) == NULL);
            FUZZ_CHECK(mg_model_params(m) > 0 && mg_model_params(m) <= size / 2); /* at least 2 bytes each */
        } else {
            FUZZ_CHECK(!m && mg_last_error()[0]);
        }
        mg_model_free(m);
    }
    close(fd);
    return 0;
}
