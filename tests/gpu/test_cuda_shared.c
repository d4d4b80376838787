/* make test-gpu: the shared device weights behind mirage serve --gpus (issue 8). Streams of one
 * model on one GPU share one upload (cuda_weights, reference-counted) and cost only their own
 * buffers; their frames are bit-identical to a stream that uploaded alone; two threads stepping
 * two streams on one card at once get exactly what one thread gets stepping them in turn; with
 * a second GPU, a stream made there lives there (its own copy of the weights), matches GPU 0,
 * and can be stepped and freed from a thread whose current device is another. Starts and skips
 * with a message on a machine without a GPU. */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <string.h>

#include "core/rng.h"
#include "cuda/cuda_stream.h"
#include "model/model.h"
#include "testutil.h"

#define W 128
#define H 64
#define T 6

static mg_model *model;
static int ngpu;

/* The inputs and noise of T frames, the same for every run. */
typedef struct frames {
    uint8_t in[T][W * H * 3];
    float n1[T][(H / 8) * (W / 8) * 8], n2[T][(H / 8) * (W / 8) * 8];
} frames;
static frames *F;

static double used_mib(void) {
    size_t fr = 0, total = 0;
    cudaMemGetInfo(&fr, &total);
    return (double)(total - fr) / 1048576.0;
}

static cuda_stream *make(void) {
    cuda_stream_cfg cc = {W, H, 2, mg_model_config(model)->ring, 1.0f};
    cuda_stream *s = NULL;
    TU_OK(cuda_stream_new(model, &cc, &s));
    return s;
}

/* Runs the T frames through s; out: T frames of output. */
static mg_status run(cuda_stream *s, uint8_t *out) {
    for (int t = 0; t < T; t++) {
        mg_status st = cuda_stream_step(s, F->in[t], out + (size_t)t * W * H * 3, F->n1[t], F->n2[t], 1, 0);
        if (st != MG_OK) return st;
    }
    return MG_OK;
}

static void test_one_copy_per_gpu(void **state) {
    TU_OK(cuda_use_device(0));
    long up0 = cuda_weights_uploads();
    double m0 = used_mib();
    cuda_stream *a = make();
    double m1 = used_mib();
    cuda_stream *b = make();
    double m2 = used_mib();
    const cuda_weights *w = cuda_stream_weights(a);
    printf("  two streams on GPU 0: uploads %ld, refs %d, weights %.2f MiB, a stream's own %.2f MiB; device "
           "memory +%.1f MiB for the first, +%.1f MiB for the second\n",
           cuda_weights_uploads() - up0, cuda_weights_refs(w), cuda_weights_bytes(w) / 1048576.0,
           cuda_stream_own_bytes(a) / 1048576.0, m1 - m0, m2 - m1);
    assert_ptr_equal(cuda_stream_weights(b), w);
    assert_int_equal(cuda_weights_uploads() - up0, 1);
    assert_int_equal(cuda_weights_refs(w), 2);
    assert_int_equal(cuda_stream_gpu(a), 0);
    assert_int_equal((long)cuda_stream_device_bytes(a), (long)(cuda_weights_bytes(w) + cuda_stream_own_bytes(a)));
    /* the second stream's memory is its own buffers, not another copy of the weights */
    assert_true(m2 - m1 < (cuda_stream_own_bytes(b) + cuda_weights_bytes(w) / 2) / 1048576.0 + 4.0);

    size_t n = (size_t)T * W * H * 3;
    uint8_t *oa = malloc(n), *ob = malloc(n), *oc = malloc(n);
    TU_OK(run(a, oa));
    TU_OK(run(b, ob));
    cuda_stream_free(a);
    assert_int_equal(cuda_weights_refs(w), 1);
    cuda_stream_free(b); /* the last reference: the copy goes */
    cuda_stream *c = make(); /* uploads again, alone */
    assert_int_equal(cuda_weights_uploads() - up0, 2);
    TU_OK(run(c, oc));
    int same = !memcmp(oa, ob, n) && !memcmp(oa, oc, n);
    printf("  %d frames: sharing streams and a stream that uploaded alone: %s\n", T, same ? "bit-identical" : "DIFFER");
    assert_true(same);
    cuda_stream_free(c);
    free(oa), free(ob), free(oc);
}

typedef struct job {
    int gpu;
    cuda_stream *s;
    uint8_t *out;
    mg_status st;
    char err[256];
} job;

static void *job_main(void *arg) {
    job *j = arg;
    j->st = run(j->s, j->out);
    if (j->st != MG_OK) snprintf(j->err, sizeof j->err, "%s", mg_last_error());
    return NULL;
}

/* A server's worker: makes its stream, runs the frames, frees it, twice over, while the other
 * threads do the same (one's making and freeing lands during another's graph capture). */
static void *job_full(void *arg) {
    job *j = arg;
    cuda_stream_cfg cc = {W, H, 2, mg_model_config(model)->ring, 1.0f};
    j->st = cuda_use_device(0);
    for (int round = 0; round < 2 && j->st == MG_OK; round++) {
        j->st = cuda_stream_new(model, &cc, &j->s);
        if (j->st == MG_OK) j->st = run(j->s, j->out);
        cuda_stream_free(j->s);
        j->s = NULL;
    }
    if (j->st != MG_OK) snprintf(j->err, sizeof j->err, "%s", mg_last_error());
    return NULL;
}

/* Two threads, two streams, one card, at once == the same streams stepped in turn; then four
 * threads making, stepping and freeing streams at once. */
static void test_concurrent_streams(void **state) {
    TU_OK(cuda_use_device(0));
    size_t n = (size_t)T * W * H * 3;
    cuda_stream *ref = make();
    uint8_t *want = malloc(n);
    TU_OK(run(ref, want));
    cuda_stream_free(ref);
    job j[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&j[i], 0, sizeof j[i]);
        j[i].s = make(), j[i].out = malloc(n);
    }
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, job_main, &j[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    int same = 1;
    for (int i = 0; i < 2; i++) {
        if (j[i].st != MG_OK) fail_msg("thread %d: %s", i, j[i].err);
        same &= !memcmp(j[i].out, want, n);
        cuda_stream_free(j[i].s);
        free(j[i].out);
    }
    printf("  two threads stepping two streams on GPU 0 at once: %s to one stream alone\n",
           same ? "bit-identical" : "DIFFERENT");
    assert_true(same);
    job k[4];
    pthread_t tk[4];
    for (int i = 0; i < 4; i++) {
        memset(&k[i], 0, sizeof k[i]);
        k[i].out = malloc(n);
        assert_int_equal(pthread_create(&tk[i], NULL, job_full, &k[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(tk[i], NULL);
    for (int i = 0; i < 4; i++) {
        if (k[i].st != MG_OK) fail_msg("thread %d making/stepping/freeing its streams: %s", i, k[i].err);
        same &= !memcmp(k[i].out, want, n);
        free(k[i].out);
    }
    printf("  four threads each making, stepping and freeing 2 streams at once: %s\n",
           same ? "bit-identical to one stream alone" : "DIFFERENT");
    assert_true(same);
    free(want);
}

/* A stream on GPU 1 (made by a thread with GPU 1 current) against GPU 0; stepped concurrently
 * with a GPU 0 stream, then freed from this thread (GPU 0 current). */
static void *make_on_1(void *arg) {
    job *j = arg;
    j->st = cuda_use_device(1);
    if (j->st == MG_OK) {
        cuda_stream_cfg cc = {W, H, 2, mg_model_config(model)->ring, 1.0f};
        j->st = cuda_stream_new(model, &cc, &j->s);
    }
    if (j->st != MG_OK) snprintf(j->err, sizeof j->err, "%s", mg_last_error());
    return NULL;
}

static void test_second_gpu(void **state) {
    char name[256];
    if (ngpu < 2) {
        printf("  second GPU: skipped (this machine has %d)\n", ngpu);
        return;
    }
    TU_OK(cuda_use_device(0));
    size_t n = (size_t)T * W * H * 3;
    job j1, j0;
    memset(&j1, 0, sizeof j1), memset(&j0, 0, sizeof j0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, make_on_1, &j1), 0);
    pthread_join(th, NULL);
    if (j1.st != MG_OK) fail_msg("stream on GPU 1: %s", j1.err);
    assert_int_equal(cuda_stream_gpu(j1.s), 1);
    j0.s = make();
    assert_int_equal(cuda_stream_gpu(j0.s), 0);
    assert_ptr_not_equal(cuda_stream_weights(j0.s), cuda_stream_weights(j1.s));
    j0.out = malloc(n), j1.out = malloc(n);
    pthread_t t0, t1; /* GPU 1's stream stepped from a thread that never made GPU 1 current */
    assert_int_equal(pthread_create(&t0, NULL, job_main, &j0), 0);
    assert_int_equal(pthread_create(&t1, NULL, job_main, &j1), 0);
    pthread_join(t0, NULL), pthread_join(t1, NULL);
    if (j0.st != MG_OK) fail_msg("GPU 0: %s", j0.err);
    if (j1.st != MG_OK) fail_msg("GPU 1: %s", j1.err);
    long sum = 0;
    for (size_t i = 0; i < n; i++) sum += abs((int)j0.out[i] - j1.out[i]);
    double mean = (double)sum / n;
    printf("  GPU 1 (%s) against GPU 0, %d frames at once: mean |u8 diff| %.4f%s\n",
           cuda_device_name(1, name, sizeof name), T, mean, sum ? "" : " (bit-identical)");
    assert_true(mean <= 0.5);
    int cur = -1;
    cuda_stream_free(j1.s); /* from GPU 0's thread */
    cudaGetDevice(&cur);
    assert_int_equal(cur, 0); /* freeing it left this thread's device alone */
    cuda_stream_free(j0.s);
    free(j0.out), free(j1.out);
}

static void test_errors(void **state) {
    assert_int_equal(cuda_use_device(ngpu), MG_ERR_UNSUPPORTED);
    printf("  cuda_use_device(%d): %s\n", ngpu, mg_last_error());
    assert_non_null(strstr(mg_last_error(), "does not exist"));
    cuda_weights *w = NULL;
    assert_int_equal(cuda_weights_acquire(model, ngpu, &w), MG_ERR_UNSUPPORTED);
    assert_null(w);
    cuda_weights_release(NULL);
}

int main(void) {
    ngpu = cuda_device_count();
    if (ngpu == 0) {
        printf("test_cuda_shared: skipped: no CUDA device on this machine\n");
        return 0;
    }
    mg_config cfg;
    char path[512];
    if (mg_config_named("s", &cfg) != MG_OK) return 1;
    snprintf(path, sizeof path, "%s/shared-s.safetensors", tu_tmpdir());
    if (mg_model_init_file(path, &cfg, 5, 1) != MG_OK || mg_model_load(path, &model) != MG_OK) {
        fprintf(stderr, "test_cuda_shared: %s\n", mg_last_error());
        return 1;
    }
    F = malloc(sizeof *F);
    mg_rng r;
    mg_rng_seed(&r, 9);
    size_t lat = (size_t)(H / 8) * (W / 8) * cfg.z_ch;
    for (int t = 0; t < T; t++) {
        for (size_t i = 0; i < sizeof F->in[t]; i++) F->in[t][i] = (uint8_t)(mg_rng_next(&r) >> 56);
        mg_rng_normal_fill(&r, F->n1[t], lat);
        mg_rng_normal_fill(&r, F->n2[t], lat);
    }
    char name[256];
    printf("test_cuda_shared: %d GPU%s, GPU 0 %s; config s at %dx%d\n", ngpu, ngpu == 1 ? "" : "s",
           cuda_device_name(0, name, sizeof name), W, H);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_copy_per_gpu),
        cmocka_unit_test(test_concurrent_streams),
        cmocka_unit_test(test_second_gpu),
        cmocka_unit_test(test_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mg_model_free(model);
    free(F);
    return rc;
}
