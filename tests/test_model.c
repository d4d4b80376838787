/* The model against the PyTorch oracle (tests/data/golden_tiny.safetensors, made by
 * ref/export_golden.py in float64), module by module and for whole frame steps; and the
 * model loader against broken weight files. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/stream.h"
#include "ops/ops.h"
#include "testutil.h"

#define TOL 1e-4 /* the bar: max relative error 1e-4 in fp32 */

static st_file golden;
static mg_model *model;
static char model_path[512];

static const char *data_dir(void) {
    const char *d = getenv("MIRAGE_TESTDATA");
    return d ? d : "tests/data";
}

static int setup(void **state) {
    char path[512];
    snprintf(path, sizeof path, "%s/golden_tiny.safetensors", data_dir());
    if (st_open(&golden, path) != MG_OK) {
        fprintf(stderr, "cannot open golden file: %s\n", mg_last_error());
        return -1;
    }
    const char *seed = st_meta_get(&golden, "weights_seed");
    mg_config cfg;
    mg_config_named("tiny", &cfg);
    snprintf(model_path, sizeof model_path, "%s/golden_model.safetensors", tu_tmpdir());
    if (!seed || mg_model_init_file(model_path, &cfg, strtoull(seed, NULL, 10), 1) != MG_OK) return -1;
    if (mg_model_load(model_path, &model) != MG_OK) {
        fprintf(stderr, "%s\n", mg_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    mg_model_free(model);
    st_close(&golden);
    return 0;
}

static const float *g(const char *name, size_t numel) {
    const st_tensor *t = st_find(&golden, name);
    if (!t) fail_msg("golden tensor %s missing", name);
    if (t->numel != numel) fail_msg("golden tensor %s: %zu elements, expected %zu", name, t->numel, numel);
    return t->data;
}

/* The C initialiser and the Python one produce the same bits from the same seed. */
static void test_init_matches_oracle(void **state) {
    st_file mf;
    assert_int_equal(st_open(&mf, model_path), MG_OK);
    const char *names[] = {"enc.in.weight", "dit.t1.bias", "dit.prompt"};
    for (int i = 0; i < 3; i++) {
        char gname[96];
        snprintf(gname, sizeof gname, "weights/%s", names[i]);
        const st_tensor *a = st_find(&mf, names[i]);
        assert_non_null(a);
        const float *ref = g(gname, a->numel);
        printf("  init %-24s %s\n", names[i], memcmp(a->data, ref, a->nbytes) ? "DIFFERS" : "bit-identical");
        assert_memory_equal(a->data, ref, a->nbytes);
    }
    st_close(&mf);
}

static void test_encoder(void **state) {
    int H = 48, W = 64;
    const st_tensor *fr = st_find(&golden, "frames");
    assert_non_null(fr);
    float *img = malloc((size_t)H * W * 3 * sizeof(float)), *lat = malloc(6 * 8 * 4 * sizeof(float));
    float *work = aligned_alloc(64, tae_work_floats(&model->cfg, H, W) * sizeof(float));
    rgb_u8_to_float(img, fr->data, (size_t)H * W * 3);
    tu_poison(lat, 6 * 8 * 4);
    tae_encode(model, lat, img, work, H, W);
    assert_close("encoder", lat, g("enc.out", 6 * 8 * 4), 6 * 8 * 4, TOL);
    free(img), free(lat), free(work);
}

static void test_decoder(void **state) {
    int H = 48, W = 64;
    float *img = malloc((size_t)H * W * 3 * sizeof(float));
    float *work = aligned_alloc(64, tae_work_floats(&model->cfg, H, W) * sizeof(float));
    tu_poison(img, (size_t)H * W * 3);
    tae_decode(model, img, g("dec.in", 6 * 8 * 4), work, H, W);
    assert_close("decoder", img, g("dec.out", (size_t)H * W * 3), (size_t)H * W * 3, TOL);
    free(img), free(work);
}

static void run_dit(const char *prefix, int T, float *v) {
    char n[64];
    size_t lat = 6 * 8 * 4;
    int N = 12;
    snprintf(n, sizeof n, "%s.meta", prefix);
    const st_tensor *meta = st_find(&golden, n);
    assert_non_null(meta);
    const int32_t *mi = meta->data;
    snprintf(n, sizeof n, "%s.z", prefix);
    const float *z = g(n, T * lat);
    snprintf(n, sizeof n, "%s.cond", prefix);
    const float *cond = g(n, T * lat);
    snprintf(n, sizeof n, "%s.sigma", prefix);
    const float *sigma = g(n, T);
    float *wmem = aligned_alloc(64, dit_work_floats(&model->cfg, T, N, T * N) * sizeof(float));
    dit_work w;
    dit_work_init(&w, wmem, &model->cfg, T, N, T * N);
    /* dit.meta = [prompt, frame]; par.meta = [prompt, window] */
    dit_call a = {.T = T, .lh = 6, .lw = 8, .z = z, .cond = cond, .sigma = sigma, .prompt = mi[0],
                  .frame0 = T == 1 ? mi[1] : 0, .window = T == 1 ? 0 : mi[1], .v = v};
    tu_poison(v, T * lat);
    dit_forward(model, &w, &a);
    free(wmem);
}

static void test_dit_single(void **state) {
    float v[6 * 8 * 4];
    run_dit("dit", 1, v);
    assert_close("dit (one frame)", v, g("dit.v", 6 * 8 * 4), 6 * 8 * 4, TOL);
}

static void test_dit_block_causal(void **state) {
    float v[4 * 6 * 8 * 4];
    run_dit("par", 4, v);
    assert_close("dit (block-causal, 4 frames)", v, g("par.v", 4 * 6 * 8 * 4), 4 * 6 * 8 * 4, TOL);
}

/* Whole frame steps: encode, 2 Euler steps against the ring, refresh, decode. */
static void run_stream(const char *prefix, const char *prompt, float guidance) {
    int H = 48, W = 64, T = 4;
    size_t lat = 6 * 8 * 4, img = (size_t)H * W * 3;
    mg_stream_opts o = mg_stream_opts_default();
    o.width = W, o.height = H, o.steps = 2, o.ring = 2, o.prompt = prompt, o.guidance = guidance;
    mg_stream *s;
    assert_int_equal(mg_stream_new(model, &o, &s), MG_OK);
    const st_tensor *fr = st_find(&golden, "frames");
    const float *noise = g("stream.noise", T * lat), *ctx = g("stream.ctx_noise", T * lat);
    float *out = malloc(T * img * sizeof(float)), *z = malloc(T * lat * sizeof(float));
    tu_poison(out, T * img);
    for (int t = 0; t < T; t++) {
        assert_int_equal(stream_step_f32(s, (const uint8_t *)fr->data + t * img, out + t * img, noise + t * lat,
                                         ctx + t * lat), MG_OK);
        memcpy(z + t * lat, stream_latent(s), lat * sizeof(float));
    }
    char n[64], label[64];
    snprintf(n, sizeof n, "%s.z", prefix);
    snprintf(label, sizeof label, "%s latents (4 frames)", prefix);
    assert_close(label, z, g(n, T * lat), T * lat, TOL);
    snprintf(n, sizeof n, "%s.out", prefix);
    snprintf(label, sizeof label, "%s frames (4 frames)", prefix);
    assert_close(label, out, g(n, T * img), T * img, TOL);
    free(out), free(z);
    mg_stream_free(s);
}

static void test_stream_colorize(void **state) { run_stream("stream", "colorize", 1.0f); }
static void test_stream_dream_guided(void **state) { run_stream("cfg", "dream", 2.5f); }

static void test_sigma_schedule(void **state) {
    /* shift 1: linear; shift 3 (SD3's) at s = 0.5: 3*0.5/(1+2*0.5) = 0.75 */
    assert_float_equal(sampler_sigma(0, 4, 1.0f), 1.0f, 1e-7);
    assert_float_equal(sampler_sigma(1, 4, 1.0f), 0.75f, 1e-7);
    assert_float_equal(sampler_sigma(4, 4, 1.0f), 0.0f, 1e-7);
    assert_float_equal(sampler_sigma(1, 2, 3.0f), 0.75f, 1e-6);
    assert_float_equal(sampler_sigma(0, 2, 3.0f), 1.0f, 1e-6);
}

/* ---- broken weight files: each gives a clean error naming what is wrong ---------------- */

/* Rewrites the model file with one change: drop tensor `drop`, replace `reshape`'s shape by
 * (7), add tensor `extra`, or set metadata key `mkey` to `mval`; then loads it. */
static mg_status load_modified(const char *drop, const char *reshape, const char *extra, const char *mkey,
                               const char *mval, int as_bf16) {
    st_file f;
    assert_int_equal(st_open(&f, model_path), MG_OK);
    st_writer *w = st_writer_new();
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        if (reshape && !strcmp(t->name, reshape)) {
            int64_t sh[1] = {7};
            st_writer_add(w, t->name, ST_F32, 1, sh, t->data);
        } else if (as_bf16) {
            uint16_t *b = malloc(t->numel * 2);
            for (size_t k = 0; k < t->numel; k++) {
                uint32_t u;
                memcpy(&u, (const float *)t->data + k, 4);
                b[k] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16); /* round to nearest even */
            }
            st_writer_add(w, t->name, ST_BF16, t->rank, t->shape, b);
            free(b);
        } else {
            st_writer_add(w, t->name, t->dtype, t->rank, t->shape, t->data);
        }
    }
    if (extra) {
        int64_t sh[1] = {3};
        float x[3] = {1, 2, 3};
        st_writer_add(w, extra, ST_F32, 1, sh, x);
    }
    for (int i = 0; i < f.n_meta; i++)
        st_writer_meta(w, f.meta[i].key, mkey && !strcmp(f.meta[i].key, mkey) ? mval : f.meta[i].value);
    char path[600];
    snprintf(path, sizeof path, "%s/modified.safetensors", tu_tmpdir());
    assert_int_equal(st_writer_save(w, path), MG_OK);
    st_writer_free(w);
    st_close(&f);
    mg_model *m = NULL;
    mg_status s = mg_model_load(path, &m);
    printf("  load -> %s: %s\n", mg_strerror(s), s ? mg_last_error() : "");
    if (s == MG_OK) {
        if (as_bf16) { /* widened at load: the model runs and matches the F32 one closely */
            float v[6 * 8 * 4], vr[6 * 8 * 4];
            mg_model *keep = model;
            run_dit("dit", 1, vr);
            model = m;
            run_dit("dit", 1, v);
            model = keep;
            assert_close("bf16 weights vs f32", v, vr, 6 * 8 * 4, 0.1);
        }
        mg_model_free(m);
    } else {
        assert_null(m);
    }
    return s;
}

static void test_load_rejects_broken_files(void **state) {
    assert_int_equal(load_modified("dit.blocks.3.fc1.weight", NULL, NULL, NULL, NULL, 0), MG_ERR_FORMAT);
    assert_non_null(strstr(mg_last_error(), "dit.blocks.3.fc1.weight"));
    assert_int_equal(load_modified(NULL, "enc.b2.c3.weight", NULL, NULL, NULL, 0), MG_ERR_SHAPE);
    assert_non_null(strstr(mg_last_error(), "enc.b2.c3.weight"));
    assert_non_null(strstr(mg_last_error(), "expected"));
    assert_int_equal(load_modified(NULL, NULL, "dit.stowaway", NULL, NULL, 0), MG_ERR_FORMAT);
    assert_non_null(strstr(mg_last_error(), "dit.stowaway"));
    assert_int_equal(load_modified(NULL, NULL, NULL, "format_version", "2", 0), MG_ERR_FORMAT);
    assert_int_equal(load_modified(NULL, NULL, NULL, "d", "-5", 0), MG_ERR_FORMAT);
    assert_int_equal(load_modified(NULL, NULL, NULL, "d", "200", 0), MG_ERR_FORMAT); /* not heads*even */
    assert_int_equal(load_modified(NULL, NULL, NULL, "layers", "7", 0), MG_ERR_FORMAT);
    assert_int_equal(load_modified(NULL, NULL, NULL, "prompts", "colorize,none", 0), MG_ERR_FORMAT);
    assert_int_equal(load_modified(NULL, NULL, NULL, "format", "gguf", 0), MG_ERR_FORMAT);
    assert_int_equal(load_modified(NULL, NULL, NULL, NULL, NULL, 1), MG_OK);
    assert_int_equal(mg_model_load("/nonexistent/model.safetensors", &(mg_model *){NULL}), MG_ERR_IO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_matches_oracle),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_decoder),
        cmocka_unit_test(test_dit_single),
        cmocka_unit_test(test_dit_block_causal),
        cmocka_unit_test(test_stream_colorize),
        cmocka_unit_test(test_stream_dream_guided),
        cmocka_unit_test(test_sigma_schedule),
        cmocka_unit_test(test_load_rejects_broken_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
