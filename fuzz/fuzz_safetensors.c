/* libFuzzer target for the safetensors reader: any bytes must give MG_OK or a clean error,
 * never a crash, leak or out-of-bounds access. On MG_OK every tensor's bytes are read, so
 * ASan checks that the validated offsets really lie inside the buffer.
 *
 *   make fuzz FUZZERS=safetensors FUZZ_SECONDS=60 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    if (st_open_memory(&f, data, size, "fuzz") == MG_OK) {
        volatile unsigned sum = 0;
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            const unsigned char *p = t->data;
            for (size_t k = 0; k < t->nbytes; k++) sum += p[k];
            /* What the reader promises: aligned data, sizes that agree, names findable. */
            if ((uintptr_t)t->data % st_dtype_size(t->dtype)) abort();
            if (t->nbytes != t->numel * st_dtype_size(t->dtype)) abort();
            if (strlen(t->name) >= ST_MAX_NAME || !st_find(&f, t->name)) abort();
            st_expect(&f, t->name, t->rank, t->shape, NULL);
        }
        for (int i = 0; i < f.n_meta; i++)
            if (!st_meta_get(&f, f.meta[i].key)) abort();
        (void)sum;
    }
    st_close(&f);
    st_close(&f);
    return 0;
}
