/* make test-gpu: pipelined frames on the GPU (issue 4). mg_stream_submit / mg_stream_collect on a
 * --device cuda stream give exactly mg_stream_step's bytes (same seed) on configs tiny and s,
 * with 1 and 2 frames in flight, a prompt change, a reset and a dream frame (the second graph)
 * given while frames are in flight, output buffers poisoned before each collect; the same in
 * eager launches; the misuse cases fail with MG_ERR_ARG and change nothing. Prints the frame
 * rate of step against 2 in flight. Starts and skips with a message on a machine without a GPU. */
#include <stdio.h>
#include <string.h>

#include "core/timing.h"
#include "cuda/cuda_stream.h"
#include "model/model.h"
#include "model/stream.h"
#include "pipe_script.h"
#include "gpu_util.h"


static mg_stream *make(const mg_model *m, int W, int H) {
    mg_stream_opts o = mg_stream_opts_default();
    o.width = W, o.height = H, o.seed = 77, o.prompt = "restore", o.device = MG_DEVICE_CUDA;
    mg_stream *s = NULL;
    TU_OK(mg_stream_new(m, &o, &s));
    return s;
}

static uint8_t *inputs(size_t fb, uint64_t seed) {
    uint8_t *in = malloc(PIPE_T * fb);
    assert_non_null(in);
    mg_rng r;
    mg_rng_seed(&r, seed);
    for (size_t i = 0; i < PIPE_T * fb; i++) in[i] = (uint8_t)(mg_rng_next(&r) >> 56);
    return in;
}

/* The script with step, then pipelined at depth 1 and 2 (graph replay), then depth 2 in eager
 * launches: every run byte-identical to the first. */
static void pipe_equals_step(const char *config, int W, int H) {
    mg_model *m = load_model(config, 13);
    size_t fb = (size_t)W * H * 3, n = PIPE_T * fb;
    uint8_t *in = inputs(fb, 5), *ref = malloc(n), *got = malloc(n);
    mg_stream *a = make(m, W, H);
    pipe_run_step(a, in, ref, fb);
    mg_stream_free(a);
    for (int run = 0; run < 3; run++) {
        int depth = run == 0 ? 1 : 2, eager = run == 2;
        mg_stream *b = make(m, W, H);
        if (eager) cuda_stream_set_mode(stream_cuda(b), CUDA_MODE_EAGER);
        int most = pipe_run_submit(b, in, got, fb, depth);
        int d = count_diff(got, ref, n);
        printf("  %s %dx%d, %d frames (prompt change, reset, dream while in flight), %s, up to %d in flight: %d "
               "bytes differ from mg_stream_step\n", config, W, H, PIPE_T, eager ? "eager launches" : "graph replay",
               most, d);
        assert_int_equal(most, depth);
        assert_int_equal(d, 0);
        mg_stream_free(b);
    }
    /* consecutive frames differ: the comparison is not of constant frames */
    assert_true(count_diff(ref, ref + fb, fb) > 0);
    free(in), free(ref), free(got);
    mg_model_free(m);
}

static void test_pipe_tiny(void **state) { pipe_equals_step("tiny", 64, 48); }
static void test_pipe_s(void **state) { pipe_equals_step("s", 128, 96); }

/* The deferred KV refresh (the default: frame t's refresh runs at the start of frame t+1, beside
 * its encode) against the refresh at the end of each frame (MG_CUDA_DEFER=0): the script with
 * step, with 2 frames in flight, in eager launches, and with profiled frames (which flush a
 * refresh still owed, then run theirs inline) mixed into graph replays — byte-identical. */
static int profiled(int with_profiled, int t) { return with_profiled && (t == 2 || t == 7); }

/* How many frames of the script carry the frame before's refresh in their graph: not frame 0;
 * not a frame given a control before it (a prompt change, dream included, flushes the refresh
 * still owed first; a reset drops it); not a profiled frame (it flushes it), nor the frame after
 * one (a profiled frame runs its own refresh inline). The script has 4 (frames 1, 2, 4, 8); with
 * frames 2 and 7 profiled, 2 (frames 1 and 4). */
static long long deferred_frames(int with_profiled) {
    long long n = 0;
    for (int t = 1; t < PIPE_T; t++)
        n += !pipe_control(t) && !profiled(with_profiled, t) && !profiled(with_profiled, t - 1);
    return n;
}

static void defer_equals_inline(const char *config, int W, int H) {
    mg_model *m = load_model(config, 13);
    size_t fb = (size_t)W * H * 3, n = PIPE_T * fb;
    uint8_t *in = inputs(fb, 9), *ref = malloc(n), *got = malloc(n);
    setenv("MG_CUDA_DEFER", "0", 1);
    mg_stream *a = make(m, W, H);
    unsetenv("MG_CUDA_DEFER");
    pipe_run_step(a, in, ref, fb);
    mg_stream_free(a);
    const char *runs[4] = {"step", "2 in flight", "eager launches", "graph with profiled frames 2 and 7"};
    for (int run = 0; run < 4; run++) {
        mg_stream *b = make(m, W, H);
        if (run == 2) cuda_stream_set_mode(stream_cuda(b), CUDA_MODE_EAGER);
        if (run == 1) {
            pipe_run_submit(b, in, got, fb, 2);
        } else {
            for (int t = 0; t < PIPE_T; t++) {
                pipe_apply(b, t);
                if (run == 3) cuda_stream_set_mode(stream_cuda(b), profiled(1, t) ? CUDA_MODE_PROFILE : CUDA_MODE_GRAPH);
                memset(got + (size_t)t * fb, 0xAB, fb);
                TU_OK(mg_stream_step(b, pipe_input(in, fb, t), got + (size_t)t * fb));
            }
        }
        int d = count_diff(got, ref, n);
        long long dn = cuda_stream_deferred(stream_cuda(b)), want = deferred_frames(run == 3);
        printf("  %s %dx%d, %d frames, deferred refresh, %s: %d bytes differ from the inline refresh; %lld frames "
               "carried the refresh before them (%lld expected)\n", config, W, H, PIPE_T, runs[run], d, dn, want);
        assert_int_equal(d, 0);
        assert_true(cuda_stream_defers(stream_cuda(b)));
        assert_int_equal(dn, want);
        mg_stream_free(b);
    }
    free(in), free(ref), free(got);
    mg_model_free(m);
}

static void test_defer_tiny(void **state) { defer_equals_inline("tiny", 64, 48); }
static void test_defer_s(void **state) { defer_equals_inline("s", 128, 96); }

/* Two in flight on the device, the misuse cases, then the stream goes on as if they had not
 * happened. */
static void test_pipe_errors(void **state) {
    mg_model *m = load_model("tiny", 13);
    int W = 64, H = 48;
    size_t fb = (size_t)W * H * 3;
    uint8_t *in = inputs(fb, 6), *o1 = malloc(fb), *o2 = malloc(fb);
    mg_stream *a = make(m, W, H), *b = make(m, W, H);
    cuda_stream *ca = stream_cuda(a);
    TU_OK(mg_stream_submit(a, in));
    TU_OK(mg_stream_submit(a, in + fb));
    assert_int_equal(cuda_stream_in_flight(ca), 2);
    float lat[6 * 8 * 8];
    assert_int_equal(cuda_stream_latent(ca, lat), MG_ERR_ARG); /* not while frames are in flight */
    memset(o1, 0xAB, fb);
    TU_OK(mg_stream_collect(a, o1));
    assert_int_equal(cuda_stream_in_flight(ca), 1);
    TU_OK(mg_stream_collect(a, o1));
    assert_int_equal(cuda_stream_in_flight(ca), 0);
    TU_OK(mg_stream_step(b, in, o2));
    TU_OK(mg_stream_step(b, in + fb, o2));
    assert_int_equal(count_diff(o1, o2, fb), 0);
    int d = pipe_errors_then_script(a, b, in, fb);
    printf("  after 2 in flight and the misuse cases (collect with none, NULL input, step in flight, a third "
           "submit): %d bytes differ\n", d);
    assert_int_equal(d, 0);
    mg_stream_free(a), mg_stream_free(b);
    free(in), free(o1), free(o2);
    mg_model_free(m);
}

/* The frame rate of config s at 256x256: step against 2 in flight (printed; not a pass bound,
 * the bench reports it too). Also frees a stream with frames in flight. */
static void test_pipe_rate(void **state) {
    mg_model *m = load_model("s", 13);
    int W = 256, H = 256, F = 60;
    size_t fb = (size_t)W * H * 3;
    uint8_t *in = inputs(fb, 7), *out = malloc(fb);
    mg_stream *s = make(m, W, H);
    for (int i = 0; i < 6; i++) TU_OK(mg_stream_step(s, in + (i % PIPE_T) * fb, out)); /* capture, fill the ring */
    double t0 = mg_now_ms();
    for (int i = 0; i < F; i++) TU_OK(mg_stream_step(s, in + (i % PIPE_T) * fb, out));
    double t_step = (mg_now_ms() - t0) / F;
    t0 = mg_now_ms();
    TU_OK(mg_stream_submit(s, in));
    for (int i = 1; i < F; i++) {
        TU_OK(mg_stream_submit(s, in + (i % PIPE_T) * fb));
        TU_OK(mg_stream_collect(s, out));
    }
    TU_OK(mg_stream_collect(s, out));
    double t_pipe = (mg_now_ms() - t0) / F;
    printf("  s 256x256, 2 steps, %d frames: step %.3f ms a frame (%.1f fps), 2 in flight %.3f ms a frame (%.1f fps); "
           "device %.3f ms\n", F, t_step, 1000 / t_step, t_pipe, 1000 / t_pipe, cuda_stream_last_device_ms(stream_cuda(s)));
    TU_OK(mg_stream_submit(s, in));
    TU_OK(mg_stream_submit(s, in + fb));
    mg_stream_free(s); /* with 2 in flight */
    free(in), free(out);
    mg_model_free(m);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("test_cuda_pipe: skipped: no CUDA device on this machine\n");
        return 0;
    }
    char name[256];
    printf("test_cuda_pipe on %s\n", cuda_device_name(0, name, sizeof name));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipe_tiny),
        cmocka_unit_test(test_pipe_s),
        cmocka_unit_test(test_defer_tiny),
        cmocka_unit_test(test_defer_s),
        cmocka_unit_test(test_pipe_errors),
        cmocka_unit_test(test_pipe_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
