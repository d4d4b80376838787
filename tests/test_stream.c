/* Streaming equals offline: frame-by-frame generation with the KV ring reproduces the
 * block-causal parallel forward over the same clip (STYLE.md, habit 3). */
#include <stdio.h>
#include <string.h>

#include "model/forward.h"
#include "model/stream.h"
#include "testutil.h"

static mg_model *model;

static int setup(void **state) {
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.safetensors", tu_tmpdir());
    mg_config cfg;
    if (mg_config_named("tiny", &cfg) != MG_OK) return -1;
    if (mg_model_init_file(path, &cfg, 7, 1) != MG_OK) return -1;
    return mg_model_load(path, &model) == MG_OK ? 0 : -1;
}

static int teardown(void **state) {
    mg_model_free(model);
    return 0;
}

/* Runs T frames both ways with window/ring K and compares the velocities. */
static void check_stream_equals_parallel(int T, int K, int lh, int lw, long long frame0) {
    const mg_config *c = mg_model_config(model);
    int N = (lh / 2) * (lw / 2);
    size_t lat = (size_t)lh * lw * c->z_ch;
    float *z = malloc(T * lat * sizeof(float)), *cond = malloc(T * lat * sizeof(float));
    float *vp = malloc(T * lat * sizeof(float)), *vs = malloc(T * lat * sizeof(float));
    float sigma[16];
    tu_fill_uniform(z, T * lat, -2, 2, 1);
    tu_fill_uniform(cond, T * lat, -2, 2, 2);
    for (int t = 0; t < T; t++) sigma[t] = 0.05f + 0.9f * (float)((t * 7) % T) / T;
    tu_poison(vp, T * lat);
    tu_poison(vs, T * lat);

    /* parallel: all T frames at once, block-causal with window K */
    size_t wn = dit_work_floats(c, T, N, T * N);
    float *wmem = aligned_alloc(64, wn * sizeof(float));
    dit_work w;
    dit_work_init(&w, wmem, c, T, N, T * N);
    dit_call pa = {.T = T, .lh = lh, .lw = lw, .z = z, .cond = cond, .sigma = sigma, .prompt = 3,
                   .frame0 = frame0, .window = K, .v = vp};
    dit_forward(model, &w, &pa);

    /* streaming: one frame at a time, each frame's own k,v pushed into the ring */
    size_t rn = kv_ring_floats(c->layers, K, N, c->d), sn = dit_work_floats(c, 1, N, (K + 1) * N);
    float *rmem = aligned_alloc(64, rn * sizeof(float)), *smem = aligned_alloc(64, sn * sizeof(float));
    kv_ring ring;
    kv_ring_init(&ring, rmem, c->layers, K, N, c->d);
    ring.frame = frame0;
    dit_work ws;
    dit_work_init(&ws, smem, c, 1, N, (K + 1) * N);
    for (int t = 0; t < T; t++) {
        dit_call sa = {.T = 1, .lh = lh, .lw = lw, .z = z + t * lat, .cond = cond + t * lat, .sigma = &sigma[t],
                       .prompt = 3, .frame0 = ring.frame, .ring = &ring, .v = vs + t * lat};
        dit_forward(model, &ws, &sa);
        kv_ring_push(&ring);
    }
    char name[64];
    snprintf(name, sizeof name, "stream==parallel T%d K%d", T, K);
    assert_close(name, vs, vp, T * lat, 1e-5);
    free(z), free(cond), free(vp), free(vs), free(wmem), free(rmem), free(smem);
}

static void test_stream_equals_parallel(void **state) {
    check_stream_equals_parallel(4, 2, 6, 8, 0);  /* ring fills, then wraps once */
    check_stream_equals_parallel(7, 3, 4, 4, 0);  /* wraps twice */
    check_stream_equals_parallel(3, 5, 4, 6, 0);  /* ring never fills */
    check_stream_equals_parallel(3, 0, 4, 4, 0);  /* no history at all */
    /* a long-running stream: positions far from zero must give the same answer */
    check_stream_equals_parallel(4, 2, 6, 8, 1000000007LL);
}

/* The frame index only enters through RoPE differences: shifting every frame by a constant
 * leaves the velocities unchanged (up to float rounding of the tables). */
static void test_rope_is_relative_in_time(void **state) {
    const mg_config *c = mg_model_config(model);
    int T = 3, lh = 4, lw = 4, N = 4;
    size_t lat = (size_t)lh * lw * c->z_ch;
    float z[3 * 64], cond[3 * 64], va[3 * 64], vb[3 * 64], sigma[3] = {0.3f, 0.6f, 0.9f};
    tu_fill_uniform(z, T * lat, -1, 1, 5);
    tu_fill_uniform(cond, T * lat, -1, 1, 6);
    size_t wn = dit_work_floats(c, T, N, T * N);
    float *wmem = aligned_alloc(64, wn * sizeof(float));
    dit_work w;
    dit_work_init(&w, wmem, c, T, N, T * N);
    dit_call a = {.T = T, .lh = lh, .lw = lw, .z = z, .cond = cond, .sigma = sigma, .prompt = 1, .window = 2, .v = va};
    dit_forward(model, &w, &a);
    a.frame0 = 123456789012LL, a.v = vb;
    dit_forward(model, &w, &a);
    assert_close("rope shift invariance", vb, va, T * lat, 1e-5);
    free(wmem);
}

/* The public step: same seed, same frames -> same output; a reset forgets the history. */
static void test_stream_determinism_and_reset(void **state) {
    mg_stream_opts o = mg_stream_opts_default();
    o.width = 64, o.height = 48, o.seed = 11, o.prompt = "restore";
    mg_stream *a, *b;
    assert_int_equal(mg_stream_new(model, &o, &a), MG_OK);
    assert_int_equal(mg_stream_new(model, &o, &b), MG_OK);
    size_t n = 64 * 48 * 3;
    uint8_t *in = malloc(n), *oa = malloc(n), *ob = malloc(n);
    for (size_t i = 0; i < n; i++) in[i] = (uint8_t)(i * 31 + i / 7);
    for (int f = 0; f < 5; f++) {
        assert_int_equal(mg_stream_step(a, in, oa), MG_OK);
        assert_int_equal(mg_stream_step(b, in, ob), MG_OK);
        assert_memory_equal(oa, ob, n);
    }
    assert_int_equal(mg_stream_frame_index(a), 5);
    mg_stream_reset(a);
    assert_int_equal(mg_stream_frame_index(a), 0);
    /* unknown prompt: clean error naming the prompt, stream unchanged */
    assert_int_equal(mg_stream_set_prompt(a, "no-such-prompt"), MG_ERR_ARG);
    assert_non_null(strstr(mg_last_error(), "no-such-prompt"));
    assert_string_equal(mg_stream_prompt(a), "restore");
    free(in), free(oa), free(ob);
    mg_stream_free(a);
    mg_stream_free(b);
}

static void test_stream_rejects_bad_options(void **state) {
    mg_stream_opts o = mg_stream_opts_default();
    mg_stream *s = NULL;
    o.width = 100; /* not a multiple of 16 */
    assert_int_equal(mg_stream_new(model, &o, &s), MG_ERR_SHAPE);
    assert_null(s);
    o = mg_stream_opts_default();
    o.steps = 0;
    assert_int_equal(mg_stream_new(model, &o, &s), MG_ERR_ARG);
    o = mg_stream_opts_default();
    o.device = MG_DEVICE_CUDA;
    assert_int_equal(mg_stream_new(model, &o, &s), MG_ERR_UNSUPPORTED);
    o = mg_stream_opts_default();
    o.prompt = "nope";
    assert_int_equal(mg_stream_new(model, &o, &s), MG_ERR_ARG);
    assert_null(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_equals_parallel),
        cmocka_unit_test(test_rope_is_relative_in_time),
        cmocka_unit_test(test_stream_determinism_and_reset),
        cmocka_unit_test(test_stream_rejects_bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
