/* Pipelined frames on the CPU (mg_stream_submit / mg_stream_collect, issue 4): the outputs
 * equal mg_stream_step's byte for byte through a prompt change, a reset and a dream frame given
 * while frames are in flight; the misuse cases fail with MG_ERR_ARG and change nothing. The
 * same script runs on the GPU in tests/gpu/test_cuda_pipe.c. */
#include <stdio.h>
#include <string.h>

#include "pipe_script.h"

#define W 64
#define H 48

static mg_model *model;
static uint8_t *ins;

static int setup(void **state) {
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.safetensors", tu_tmpdir());
    mg_config cfg;
    if (mg_config_named("tiny", &cfg) != MG_OK) return -1;
    if (mg_model_init_file(path, &cfg, 7, 1) != MG_OK) return -1;
    if (mg_model_load(path, &model) != MG_OK) return -1;
    ins = malloc((size_t)PIPE_T * W * H * 3);
    mg_rng r;
    mg_rng_seed(&r, 3);
    for (size_t i = 0; i < (size_t)PIPE_T * W * H * 3; i++) ins[i] = (uint8_t)(mg_rng_next(&r) >> 56);
    return ins ? 0 : -1;
}

static int teardown(void **state) {
    free(ins);
    mg_model_free(model);
    return 0;
}

static mg_stream *make(void) {
    mg_stream_opts o = mg_stream_opts_default();
    o.width = W, o.height = H, o.seed = 21, o.prompt = "restore";
    mg_stream *s = NULL;
    TU_OK(mg_stream_new(model, &o, &s));
    return s;
}

/* The script at 1 and 2 frames in flight against mg_stream_step. */
static void test_submit_collect_equals_step(void **state) {
    size_t fb = (size_t)W * H * 3, n = (size_t)PIPE_T * fb;
    uint8_t *ref = malloc(n), *got = malloc(n);
    mg_stream *a = make();
    pipe_run_step(a, ins, ref, fb);
    int64_t frames = mg_stream_frame_index(a);
    mg_stream_free(a);
    for (int depth = 1; depth <= 2; depth++) {
        mg_stream *b = make();
        int most = pipe_run_submit(b, ins, got, fb, depth);
        int d = count_diff(got, ref, n);
        printf("  %d frames (prompt change, reset, dream while in flight), up to %d in flight: %d bytes differ "
               "from mg_stream_step\n", PIPE_T, most, d);
        assert_int_equal(most, depth);
        assert_int_equal(d, 0);
        assert_int_equal(mg_stream_frame_index(b), frames);
        mg_step_timing tm;
        mg_stream_last_timing(b, &tm);
        assert_true(tm.total_ms > 0);
        mg_stream_free(b);
    }
    /* the frames differ from each other: the script is not trivially equal */
    assert_true(count_diff(ref + 2 * fb, ref + 3 * fb, fb) > 0);
    free(ref), free(got);
}

/* The misuse cases fail with MG_ERR_ARG and leave the stream as it was: afterwards it gives what
 * a stream that only ran the two good frames gives. */
static void test_errors_change_nothing(void **state) {
    mg_stream *a = make(), *b = make();
    int d = pipe_errors_then_script(a, b, ins, (size_t)W * H * 3);
    printf("  after the misuse cases (collect with none, NULL input, step in flight, a third submit): %d bytes "
           "differ\n", d);
    assert_int_equal(d, 0);
    mg_stream_free(a), mg_stream_free(b);
}

/* Freeing a stream with frames in flight is allowed (nothing leaks: the sanitizer build checks). */
static void test_free_in_flight(void **state) {
    mg_stream *s = make();
    TU_OK(mg_stream_submit(s, ins));
    TU_OK(mg_stream_submit(s, ins));
    mg_stream_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_collect_equals_step),
        cmocka_unit_test(test_errors_change_nothing),
        cmocka_unit_test(test_free_in_flight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
