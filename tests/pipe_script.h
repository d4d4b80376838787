/* The frame script of the pipelined-frame tests (tests/test_stream_pipe.c on the CPU,
 * tests/gpu/test_cuda_pipe.c on the GPU): T frames with a prompt change, a reset, a dream
 * frame (no input) and back, run once with mg_stream_step and once with mg_stream_submit /
 * mg_stream_collect at 1 and 2 frames in flight, the controls given between the submits
 * (while frames are in flight). The outputs must be equal byte for byte. */
#ifndef MG_TESTS_PIPE_SCRIPT_H
#define MG_TESTS_PIPE_SCRIPT_H

#include <stdlib.h>
#include <string.h>

#include "mirage.h"
#include "testutil.h"

#define PIPE_T 9

/* The control given before frame t: 0 none, else a prompt name or "reset". */
static const char *pipe_control(int t) {
    switch (t) {
    case 3: return "colorize";
    case 5: return "reset";
    case 6: return "dream";
    case 7: return "restore";
    default: return NULL;
    }
}

static void pipe_apply(mg_stream *s, int t) {
    const char *c = pipe_control(t);
    if (!c) return;
    if (!strcmp(c, "reset")) mg_stream_reset(s);
    else TU_OK(mg_stream_set_prompt(s, c));
}

/* Frame t's input, or NULL for the dream frame (the API allows it there). */
/* how many bytes of two outputs differ */
static int count_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

static const uint8_t *pipe_input(const uint8_t *ins, size_t fb, int t) { return t == 6 ? NULL : ins + (size_t)t * fb; }

/* Reference: every frame with mg_stream_step. out: PIPE_T frames of fb bytes. */
static void pipe_run_step(mg_stream *s, const uint8_t *ins, uint8_t *out, size_t fb) {
    for (int t = 0; t < PIPE_T; t++) {
        pipe_apply(s, t);
        memset(out + (size_t)t * fb, 0xAB, fb);
        TU_OK(mg_stream_step(s, pipe_input(ins, fb, t), out + (size_t)t * fb));
    }
}

/* Pipelined: up to `depth` (1 or 2) frames in flight; every third frame is collected at once
 * even at depth 2, so both patterns occur. Each output buffer is poisoned before its collect.
 * Returns the most frames that were in flight at once. */
static int pipe_run_submit(mg_stream *s, const uint8_t *ins, uint8_t *out, size_t fb, int depth) {
    int next = 0, in_flight = 0, most = 0; /* next: the frame the next collect returns */
    for (int t = 0; t < PIPE_T; t++) {
        pipe_apply(s, t);
        TU_OK(mg_stream_submit(s, pipe_input(ins, fb, t)));
        in_flight++;
        most = in_flight > most ? in_flight : most;
        while (in_flight >= depth || (t % 3 == 2 && in_flight > 0)) {
            memset(out + (size_t)next * fb, 0xAB, fb);
            TU_OK(mg_stream_collect(s, out + (size_t)next * fb));
            next++, in_flight--;
            if (depth == 2 && t % 3 != 2) break; /* leave one in flight */
        }
    }
    while (in_flight > 0) {
        memset(out + (size_t)next * fb, 0xAB, fb);
        TU_OK(mg_stream_collect(s, out + (size_t)next * fb));
        next++, in_flight--;
    }
    assert_int_equal(next, PIPE_T);
    return most;
}

/* The misuse cases, on a stream with nothing in flight; leaves it with nothing in flight and
 * its RNG, ring and prompt as they were (the caller checks that by comparing outputs after). */
static void pipe_errors(mg_stream *s, const uint8_t *in, uint8_t *out) {
    assert_int_equal(mg_stream_collect(s, out), MG_ERR_ARG); /* nothing in flight */
    assert_non_null(strstr(mg_last_error(), "no frame in flight"));
    assert_int_equal(mg_stream_submit(s, NULL), MG_ERR_ARG); /* no input, not dreaming */
    TU_OK(mg_stream_submit(s, in));
    assert_int_equal(mg_stream_step(s, in, out), MG_ERR_ARG); /* step with a frame in flight */
    assert_non_null(strstr(mg_last_error(), "in flight"));
    TU_OK(mg_stream_submit(s, in));
    assert_int_equal(mg_stream_submit(s, in), MG_ERR_ARG); /* a third one */
    assert_non_null(strstr(mg_last_error(), "2 frames are in flight"));
    TU_OK(mg_stream_collect(s, out));
    TU_OK(mg_stream_collect(s, out));
    assert_int_equal(mg_stream_collect(s, out), MG_ERR_ARG);
}

/* The misuse cases on a (pipe_errors), then a against b, which stepped only the two good frames
 * the misuse cases submit: the same last frame and frame index, then the whole script pipelined
 * on a against it stepped on b. Returns how many bytes of the script's frames differ. */
static int pipe_errors_then_script(mg_stream *a, mg_stream *b, const uint8_t *ins, size_t fb) {
    size_t n = (size_t)PIPE_T * fb;
    uint8_t *o1 = malloc(fb), *o2 = malloc(fb), *ref = malloc(n), *got = malloc(n);
    assert_true(o1 && o2 && ref && got);
    int64_t f0 = mg_stream_frame_index(a);
    pipe_errors(a, ins, o1);
    TU_OK(mg_stream_step(b, ins, o2));
    TU_OK(mg_stream_step(b, ins, o2));
    assert_int_equal(count_diff(o1, o2, fb), 0);
    assert_int_equal(mg_stream_frame_index(a), f0 + 2);
    pipe_run_submit(a, ins, got, fb, 2);
    pipe_run_step(b, ins, ref, fb);
    int d = count_diff(got, ref, n);
    free(o1), free(o2), free(ref), free(got);
    return d;
}

#endif
