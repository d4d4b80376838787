/* Training checkpoints and model files (src/train/checkpoint.c) and the batch pieces that make
 * resuming exact (src/train/batch.c): a checkpoint round-trips every array bit for bit, stays in
 * parts of the size asked, refuses a missing, damaged or foreign part with a message naming it,
 * keeps only the current step's parts; the model file loads as a normal model in f32 and bf16;
 * seeds, noise levels and history corruption are what batch.h says. The end-to-end properties
 * (2N = N + resume + N, kill -9) are in tests/test_train_cli.sh. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "model/forward.h"
#include "model/model.h"
#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/train.h"
#include "testutil.h"

static char dir[64];
static char model_path[128];
static train_params tp;

static int setup(void **state) {
    snprintf(dir, sizeof dir, "/tmp/mirage-ckpt-test-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(model_path, sizeof model_path, "%s/init.safetensors", dir);
    mg_config cfg;
    if (mg_config_named("tiny", &cfg) != MG_OK || mg_model_init_file(model_path, &cfg, 7, 1) != MG_OK) return -1;
    if (train_params_load(&tp, model_path) != MG_OK) return -1;
    /* distinct values in every array, so a mix-up between them shows; the padding between
     * tensors stays zero, as in a real state */
    for (int i = 0; i < tp.n_tensors; i++) {
        size_t o = tp.offset[i], n = train_params_numel(&tp, i);
        tu_fill_uniform(tp.ema + o, n, -1, 1, 1 + 3 * (uint64_t)i);
        tu_fill_uniform(tp.m + o, n, -1, 1, 2 + 3 * (uint64_t)i);
        tu_fill_uniform(tp.v + o, n, 0, 1, 3 + 3 * (uint64_t)i);
    }
    return 0;
}

static int teardown(void **state) {
    train_params_free(&tp);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int count_parts(const char *path, long step) {
    int n = 0;
    for (int k = 0; k < 1000; k++) {
        char p[256];
        snprintf(p, sizeof p, "%s.step%ld.part%d", path, step, k);
        if (access(p, F_OK) != 0) break;
        n++;
    }
    return n;
}

static void check_round_trip(const char *stage, int first, int last) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s.ckpt", dir, stage);
    ckpt_meta cm = {0};
    ckpt_meta_set(&cm, "train_seed", "%d", 42);
    size_t part = (size_t)4 << 20;
    assert_int_equal(ckpt_save(path, &tp, first, last, stage, 17, &cm, part), MG_OK);
    int parts = count_parts(path, 17);
    printf("  %s: %d parts of <= %zu bytes\n", stage, parts, part);
    assert_true(parts >= 2);
    for (int k = 0; k < parts; k++) {
        char p[256];
        snprintf(p, sizeof p, "%s.step17.part%d", path, k);
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        assert_true((size_t)ftell(f) <= part);
        fclose(f);
    }
    train_params got;
    char st[8];
    long step;
    ckpt_meta gm;
    assert_int_equal(ckpt_load(path, &got, st, &step, &gm), MG_OK);
    assert_string_equal(st, stage);
    assert_int_equal(step, 17);
    assert_string_equal(ckpt_meta_get(&gm, "train_seed"), "42");
    assert_int_equal(got.count, tp.count);
    assert_memory_equal(got.param, tp.param, tp.count * sizeof(float));
    size_t a = tp.offset[first], b = tp.offset[last];
    assert_memory_equal(got.ema + a, tp.ema + a, (b - a) * sizeof(float));
    assert_memory_equal(got.m + a, tp.m + a, (b - a) * sizeof(float));
    assert_memory_equal(got.v + a, tp.v + a, (b - a) * sizeof(float));
    /* the frozen network: EMA = weights, moments zero */
    int f0 = first == 0 ? last : 0, f1 = first == 0 ? tp.n_tensors : first;
    size_t c = tp.offset[f0], d = tp.offset[f1];
    assert_memory_equal(got.ema + c, tp.param + c, (d - c) * sizeof(float));
    for (size_t k = c; k < d; k++) assert_true(got.m[k] == 0.0f && got.v[k] == 0.0f);
    train_params_free(&got);
}

static void test_round_trip_dit(void **state) { check_round_trip("dit", tp.dit_first, tp.n_tensors); }
static void test_round_trip_tae(void **state) { check_round_trip("tae", 0, tp.dit_first); }

static void test_old_parts_removed(void **state) {
    char path[128], p[256];
    snprintf(path, sizeof path, "%s/rot.ckpt", dir);
    assert_int_equal(ckpt_save(path, &tp, tp.dit_first, tp.n_tensors, "dit", 1, NULL, (size_t)8 << 20), MG_OK);
    /* what a writer killed mid-write leaves */
    snprintf(p, sizeof p, "%s.tmp.999999", path);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(ckpt_save(path, &tp, tp.dit_first, tp.n_tensors, "dit", 2, NULL, (size_t)8 << 20), MG_OK);
    assert_int_equal(count_parts(path, 1), 0);
    assert_true(count_parts(path, 2) >= 1);
    ckpt_remove_stale(path);
    assert_true(access(p, F_OK) != 0);
    train_params got;
    char st[8];
    long step;
    assert_int_equal(ckpt_load(path, &got, st, &step, NULL), MG_OK);
    assert_int_equal(step, 2);
    train_params_free(&got);
}

static void test_bf16_moments(void **state) {
    char path[128];
    snprintf(path, sizeof path, "%s/half.ckpt", dir);
    int first = tp.dit_first, last = tp.n_tensors;
    assert_int_equal(ckpt_save_ex(path, &tp, first, last, "dit", 3, NULL, (size_t)15 << 20, ST_BF16), MG_OK);
    train_params got;
    char st[8];
    long step;
    ckpt_meta gm;
    assert_int_equal(ckpt_load(path, &got, st, &step, &gm), MG_OK);
    assert_string_equal(ckpt_meta_get(&gm, "moments"), "bf16");
    assert_memory_equal(got.param, tp.param, tp.count * sizeof(float));
    size_t a = tp.offset[first], b = tp.offset[last];
    assert_memory_equal(got.ema + a, tp.ema + a, (b - a) * sizeof(float));
    double worst = 0;
    for (size_t k = a; k < b; k++) {
        double em = fabs((double)got.m[k] - tp.m[k]) / (fabs(tp.m[k]) + 1e-30);
        double ev = fabs((double)got.v[k] - tp.v[k]) / (fabs(tp.v[k]) + 1e-30);
        if (tp.m[k] != 0 && em > worst) worst = em;
        if (tp.v[k] != 0 && ev > worst) worst = ev;
    }
    printf("  bf16 moments: max relative error %.3g; %.1f MiB instead of %.1f\n", worst,
           ckpt_bytes(&tp, first, last, ST_BF16) / 1048576.0, ckpt_bytes(&tp, first, last, ST_F32) / 1048576.0);
    assert_true(worst <= 1.0 / 256 + 1e-9);
    assert_true(ckpt_bytes(&tp, first, last, ST_BF16) < 64u << 20); /* tiny: travels back from a GPU machine */
    train_params_free(&got);
}

static void expect_load_error(const char *path, const char *what) {
    train_params got;
    char st[8];
    long step;
    mg_status s = ckpt_load(path, &got, st, &step, NULL);
    printf("  refused (%s): %s\n", what, mg_last_error());
    assert_int_not_equal(s, MG_OK);
    assert_non_null(strstr(mg_last_error(), dir));
    assert_null(got.mem);
}

static void test_reject_damage(void **state) {
    char path[128], p[256], cmd[1200];
    snprintf(path, sizeof path, "%s/bad.ckpt", dir);
    assert_int_equal(ckpt_save(path, &tp, tp.dit_first, tp.n_tensors, "dit", 5, NULL, (size_t)4 << 20), MG_OK);
    snprintf(p, sizeof p, "%s.step5.part1", path);
    /* a truncated part */
    snprintf(cmd, sizeof cmd, "cp %s %s.keep && truncate -s 1000 %s", p, p, p);
    assert_int_equal(system(cmd), 0);
    expect_load_error(path, "truncated part");
    /* a missing part */
    unlink(p);
    expect_load_error(path, "missing part");
    /* a part of another step in its place */
    snprintf(cmd, sizeof cmd, "mv %s.keep %s", p, p);
    assert_int_equal(system(cmd), 0);
    train_params ok;
    char st[8];
    long step;
    assert_int_equal(ckpt_load(path, &ok, st, &step, NULL), MG_OK);
    train_params_free(&ok);
    char p0[256];
    snprintf(p0, sizeof p0, "%s.step5.part0", path);
    snprintf(cmd, sizeof cmd, "cp %s %s", p0, p);
    assert_int_equal(system(cmd), 0);
    expect_load_error(path, "wrong part");
    /* a model file is not a checkpoint */
    expect_load_error(model_path, "model file");
    /* no file */
    snprintf(p, sizeof p, "%s/none.ckpt", dir);
    expect_load_error(p, "no file");
}

static void test_model_file(void **state) {
    char f32[128], bf16[128];
    snprintf(f32, sizeof f32, "%s/m32.safetensors", dir);
    snprintf(bf16, sizeof bf16, "%s/m16.safetensors", dir);
    assert_int_equal(ckpt_write_model(f32, &tp, tp.ema, ST_F32), MG_OK);
    assert_int_equal(ckpt_write_model(bf16, &tp, tp.ema, ST_BF16), MG_OK);
    train_params a, b;
    assert_int_equal(train_params_load(&a, f32), MG_OK); /* validates like mg_model_load */
    assert_int_equal(train_params_load(&b, bf16), MG_OK);
    assert_memory_equal(a.param, tp.ema, tp.count * sizeof(float));
    double worst = 0;
    for (size_t k = 0; k < tp.count; k++) {
        double e = fabs((double)b.param[k] - tp.ema[k]) / (fabs(tp.ema[k]) + 1e-30);
        if (tp.ema[k] != 0 && e > worst) worst = e;
    }
    printf("  bf16 model: max relative rounding error %.3g (round to nearest even, 8 significant bits: <= 2^-8)\n", worst);
    assert_true(worst <= 1.0 / 256 + 1e-9);
    train_params_free(&a);
    train_params_free(&b);
    mg_model *m;
    assert_int_equal(mg_model_load(bf16, &m), MG_OK);
    mg_model_free(m);
}

static void test_batch_seeds(void **state) {
    /* distinct for each of (seed, step, item, purpose) */
    uint64_t s[6] = {batch_seed(0, 0, 0, 1), batch_seed(1, 0, 0, 1), batch_seed(0, 1, 0, 1),
                     batch_seed(0, 0, 1, 1), batch_seed(0, 0, 0, 2), batch_seed(0, -1, 0, 1)};
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < 6; j++) assert_true(s[i] != s[j]);
    assert_true(batch_seed(3, 5, 7, 1) == batch_seed(3, 5, 7, 1));
}

static void test_sigma_sample(void **state) {
    mg_config cfg;
    assert_int_equal(mg_config_named("tiny", &cfg), MG_OK);
    mg_rng r;
    mg_rng_seed(&r, 9);
    enum { N = 20000 };
    static float sg[N];
    static int ctx[N];
    sigma_sample(sg, ctx, N, &cfg, &r);
    int nctx = 0, on_grid = 0, at_ctx_half = 0;
    for (int i = 0; i < N; i++) {
        assert_true(sg[i] >= 0.0f && sg[i] <= 1.0f);
        if (ctx[i]) {
            nctx++;
            assert_true(sg[i] <= 2.0f * cfg.sigma_ctx);
            at_ctx_half += sg[i] <= cfg.sigma_ctx;
        } else {
            assert_true(sg[i] > 0.0f);
            for (int n = 1; n <= 4; n++)
                for (int k = 0; k < n; k++)
                    if (sg[i] == sampler_sigma(k, n, cfg.shift)) { on_grid++; n = 5; break; }
        }
    }
    printf("  %d frames: %d history-level, %d on a sampler grid, %d history <= sigma_ctx\n", N, nctx, on_grid,
           at_ctx_half);
    assert_true(nctx > N * 0.45 && nctx < N * 0.55);
    assert_true(on_grid > (N - nctx) * 0.45);
    assert_true(at_ctx_half > nctx * 0.4 && at_ctx_half < nctx * 0.6);
}

static void test_hist_aug(void **state) {
    enum { LH = 6, LW = 5, Z = 4 };
    float x[LH * LW * Z], y[LH * LW * Z];
    tu_fill_uniform(x, LH * LW * Z, -1, 1, 4);
    memcpy(y, x, sizeof x);
    const float id[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    hist_aug_apply(y, LH, LW, Z, id);
    assert_memory_equal(x, y, sizeof x); /* no blur, unit gain, no offset: unchanged */
    const float shift[8] = {0, 1, 0.25f, 0, 0, 0, 0, 0};
    hist_aug_apply(y, LH, LW, Z, shift);
    for (int i = 0; i < LH * LW * Z; i++) assert_float_equal(y[i], x[i] + (i % Z == 0 ? 0.25f : 0.0f), 1e-6);
    /* a full blur of a constant field is the constant */
    for (int i = 0; i < LH * LW * Z; i++) y[i] = 0.5f;
    const float blur[8] = {1, 1, 0, 0, 0, 0, 0, 0};
    hist_aug_apply(y, LH, LW, Z, blur);
    for (int i = 0; i < LH * LW * Z; i++) assert_float_equal(y[i], 0.5f, 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_dit), cmocka_unit_test(test_round_trip_tae),
        cmocka_unit_test(test_old_parts_removed), cmocka_unit_test(test_bf16_moments), cmocka_unit_test(test_reject_damage),
        cmocka_unit_test(test_model_file), cmocka_unit_test(test_batch_seeds),
        cmocka_unit_test(test_sigma_sample), cmocka_unit_test(test_hist_aug),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
