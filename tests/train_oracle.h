/* What the trainer's oracle tests (tests/test_train.c, tests/test_adv.c) share: the oracle
 * file ref/ wrote, opened from tests/data (or $MIRAGE_TESTDATA), its tensors looked up with
 * their sizes checked, and the training state of a tiny model drawn from a seed. */
#ifndef MG_TESTS_TRAIN_ORACLE_H
#define MG_TESTS_TRAIN_ORACLE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "model/model.h"
#include "train/train.h"
#include "testutil.h"

static inline const char *oracle_data_dir(void) {
    const char *d = getenv("MIRAGE_TESTDATA");
    return d ? d : "tests/data";
}

/* Opens <data dir>/<file>: 0, or -1 with a message (a cmocka group setup's answer). */
static inline int oracle_open(st_file *f, const char *file) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", oracle_data_dir(), file);
    if (st_open(f, path) != MG_OK) {
        fprintf(stderr, "cannot open oracle file: %s\n", mg_last_error());
        return -1;
    }
    return 0;
}

/* The oracle's tensor `name`, of numel elements; the test fails when it is missing or not. */
static inline const st_tensor *oracle_tensor(const st_file *f, const char *name, size_t numel) {
    const st_tensor *t = st_find(f, name);
    if (!t) fail_msg("oracle tensor %s missing", name);
    if (t->numel != numel) fail_msg("oracle tensor %s: %zu elements, expected %zu", name, t->numel, numel);
    return t;
}

/* A tiny model with every weight drawn from seed, written to the test's temporary folder as
 * `file` (path, of n bytes, gets its name), and its training state loaded into tp. */
static inline mg_status oracle_tiny_params(train_params *tp, char *path, size_t n, const char *file, uint64_t seed) {
    mg_config cfg;
    MG_TRY(mg_config_named("tiny", &cfg));
    snprintf(path, n, "%s/%s", tu_tmpdir(), file);
    MG_TRY(mg_model_init_file(path, &cfg, seed, 1));
    return train_params_load(tp, path);
}

#endif
