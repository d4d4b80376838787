/* Issue 6: one model file from two, for runs that train different parts of the same model side by
 * side (a decoder fine-tuned with its encoder frozen beside a DiT continued on the same latents).
 * OUT gets every tensor and the metadata of BASE, except the tensors whose names start with
 * PREFIX, which come from DONOR (same dtype and shape, or it refuses). Printed: how many came
 * from each.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -I/usr/include/cjson dev/train/splice.c \
 *       src/core/safetensors.c src/core/status.c src/core/tmpfile.c -lcjson -lm -o build-train/splice
 *   build-train/splice BASE DONOR PREFIX OUT      e.g. dit.safetensors dec.safetensors dec. both.safetensors
 */
#include <stdio.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/status.h"

static int fail(const char *what) {
    fprintf(stderr, "splice: %s: %s\n", what, mg_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: splice BASE DONOR PREFIX OUT\n");
        return 2;
    }
    const char *prefix = argv[3];
    size_t plen = strlen(prefix);
    st_file base, donor;
    if (st_open(&base, argv[1]) != MG_OK) return fail(argv[1]);
    if (st_open(&donor, argv[2]) != MG_OK) {
        st_close(&base);
        return fail(argv[2]);
    }
    st_writer *w = st_writer_new();
    if (!w) {
        fprintf(stderr, "splice: out of memory\n");
        st_close(&donor);
        st_close(&base);
        return 1;
    }
    int rc = 0, from_donor = 0, from_base = 0;
    for (int i = 0; i < base.n_meta && !rc; i++)
        if (st_writer_meta(w, base.meta[i].key, base.meta[i].value) != MG_OK) rc = fail("metadata");
    for (int i = 0; i < base.n_tensors && !rc; i++) {
        const st_tensor *t = &base.tensors[i];
        if (!strncmp(t->name, prefix, plen)) {
            const st_tensor *d = st_find(&donor, t->name);
            if (!d || d->dtype != t->dtype || d->rank != t->rank ||
                memcmp(d->shape, t->shape, sizeof(int64_t) * (size_t)t->rank)) {
                fprintf(stderr, "splice: %s: tensor %s missing or of another dtype or shape\n", argv[2], t->name);
                rc = 1;
                break;
            }
            t = d;
            from_donor++;
        } else {
            from_base++;
        }
        if (st_writer_add(w, t->name, t->dtype, t->rank, t->shape, t->data) != MG_OK) rc = fail(t->name);
    }
    if (!rc && !from_donor) {
        fprintf(stderr, "splice: no tensor of %s starts with '%s'\n", argv[1], prefix);
        rc = 1;
    }
    if (!rc && st_writer_save(w, argv[4]) != MG_OK) rc = fail(argv[4]);
    if (!rc) printf("%s: %d tensors from %s, %d from %s\n", argv[4], from_base, argv[1], from_donor, argv[2]);
    st_writer_free(w);
    st_close(&donor);
    st_close(&base);
    return rc;
}
