/* The device training state (src/cuda/train.cu) against the CPU optimizer (optimizer.c) on the
 * tiny model: upload and download, zeroing a range, global-norm clipping (the norm to float64
 * rounding, the clipped gradients bit for bit), AdamW over several steps and over a sub-range
 * (bit for bit: both sides round every operation the same way), the EMA, the bf16 copy, and
 * bad ranges refused. Gradients and moments are random, so every element takes part.
 * Needs a GPU; without one it says so and passes (CI has none). */
#include <cuda_runtime_api.h>
#include <string.h>

#include "core/status.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_train.h"
#include "train/train.h"
#include "testutil.h"

#define CK(call) assert_int_equal((call), cudaSuccess)

static train_params tp, ref;  /* the host state the GPU mirrors, and the CPU reference run */
static cuda_params cp;
static char model_path[512];

static void fill(float *x, size_t n, float lo, float hi, uint64_t seed) { tu_fill_uniform(x, n, lo, hi, seed); }

/* random state in both tp and ref (same values), padding zero as train_params_load leaves it */
static void randomise(uint64_t seed) {
    for (int i = 0; i < tp.n_tensors; i++) {
        size_t o = tp.offset[i], n = train_params_numel(&tp, i);
        fill(tp.grad + o, n, -0.05f, 0.05f, seed + 4 * (uint64_t)i);
        fill(tp.m + o, n, -0.01f, 0.01f, seed + 4 * (uint64_t)i + 1);
        fill(tp.v + o, n, 0.0f, 1e-4f, seed + 4 * (uint64_t)i + 2);
        fill(tp.ema + o, n, -0.5f, 0.5f, seed + 4 * (uint64_t)i + 3);
    }
    size_t b = tp.count * sizeof(float);
    memcpy(ref.param, tp.param, b), memcpy(ref.grad, tp.grad, b), memcpy(ref.m, tp.m, b);
    memcpy(ref.v, tp.v, b), memcpy(ref.ema, tp.ema, b);
}

/* the whole host state onto the device (param, m, v, ema by a fresh state; grad by hand) */
static void upload_all(void) {
    cuda_params_free(&cp);
    TU_OK(cuda_params_new(&cp, &tp));
    CK(cudaMemcpy(cp.grad, tp.grad, tp.count * sizeof(float), cudaMemcpyHostToDevice));
}

static uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

/* elements of got that differ from want in their bits; prints the worst ulp distance */
static size_t differ(const char *name, const float *got, const float *want, size_t n) {
    size_t nd = 0, wi = 0;
    int64_t worst = 0;
    for (size_t k = 0; k < n; k++) {
        if (bits(got[k]) == bits(want[k])) continue;
        nd++;
        int64_t d = (int64_t)bits(got[k]) - (int64_t)bits(want[k]);
        if (d < 0) d = -d;
        if (isnan(got[k]) || isnan(want[k])) d = INT64_MAX;
        if (d > worst) worst = d, wi = k;
    }
    printf("  %-36s n=%-8zu %zu differ%s", name, n, nd, nd ? "" : " (bit-identical)\n");
    if (nd) printf(", worst %lld ulp at [%zu] (got %.9g want %.9g)\n", (long long)worst, wi, got[wi], want[wi]);
    return nd;
}

static void download(train_params *into) { TU_OK(cuda_params_download(&cp, into)); }

static int setup(void **state) {
    mg_config cfg;
    mg_config_named("tiny", &cfg);
    snprintf(model_path, sizeof model_path, "%s/state_tiny.safetensors", tu_tmpdir());
    if (mg_model_init_file(model_path, &cfg, 7, 1) != MG_OK || train_params_load(&tp, model_path) != MG_OK ||
        train_params_load(&ref, model_path) != MG_OK) {
        fprintf(stderr, "test_cuda_train_state: %s\n", mg_last_error());
        return -1;
    }
    mg_status s = cuda_params_new(&cp, &tp);
    if (s != MG_OK) {
        fprintf(stderr, "test_cuda_train_state: %s\n", mg_last_error());
        return -1;
    }
    printf("test_cuda_train_state on %s: tiny, %d tensors (autoencoder [0, %d)), %zu floats per array\n",
           cuda_params_device_name(&cp), tp.n_tensors, tp.dit_first, tp.count);
    return 0;
}

static int teardown(void **state) {
    cuda_params_free(&cp);
    train_params_free(&tp);
    train_params_free(&ref);
    return 0;
}

/* a fresh state holds what was uploaded, zero gradients; the accessors answer */
static void test_roundtrip(void **state) {
    randomise(100);
    cuda_params_free(&cp);
    TU_OK(cuda_params_new(&cp, &tp));
    assert_non_null(cuda_params_stream(&cp));
    assert_non_null(cuda_params_ctx(&cp));
    TU_OK(cuda_params_sync(&cp));
    train_params back;
    TU_OK(train_params_load(&back, model_path));
    tu_fill_uniform(back.grad, back.count, 1, 2, 9); /* must come back zero */
    download(&back);
    size_t nd = differ("param round trip", back.param, tp.param, tp.count);
    nd += differ("m round trip", back.m, tp.m, tp.count);
    nd += differ("v round trip", back.v, tp.v, tp.count);
    nd += differ("ema round trip", back.ema, tp.ema, tp.count);
    memset(ref.grad, 0, tp.count * sizeof(float));
    nd += differ("grad zero after new", back.grad, ref.grad, tp.count);
    assert_int_equal(nd, 0);
    /* a host state of another model is refused */
    train_params other = back;
    other.count--;
    assert_int_equal(cuda_params_download(&cp, &other), MG_ERR_SHAPE);
    printf("  mismatched download refused: %s\n", mg_last_error());
    train_params_free(&back);
}

static void test_zero_grad(void **state) {
    randomise(200);
    upload_all();
    int a = 3, b = tp.dit_first + 5;
    TU_OK(cuda_zero_grad(&cp, a, b));
    train_zero_grad(&ref, a, b);
    download(&tp);
    assert_int_equal(differ("grad after zero [3, dit_first+5)", tp.grad, ref.grad, tp.count), 0);
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    train_zero_grad(&ref, 0, tp.n_tensors);
    download(&tp);
    assert_int_equal(differ("grad after zero all", tp.grad, ref.grad, tp.count), 0);
}

/* clipping on the autoencoder's range (clips), the DiT's (max_norm above the norm: untouched)
 * and everything (clips) */
static void test_grad_clip(void **state) {
    struct {
        int first, last;
        double max_norm;
        const char *name;
    } cases[] = {{0, tp.dit_first, 0.5, "autoencoder, max 0.5"},
                 {tp.dit_first, tp.n_tensors, 1e9, "DiT, max 1e9 (no clip)"},
                 {0, tp.n_tensors, 1.0, "all, max 1.0"}};
    for (int c = 0; c < 3; c++) {
        randomise(300 + 10 * (uint64_t)c);
        upload_all();
        double norm_gpu = -1, want_before = grad_global_norm(&ref, cases[c].first, cases[c].last);
        double norm_cpu = grad_clip(&ref, cases[c].first, cases[c].last, cases[c].max_norm);
        TU_OK(cuda_grad_clip(&cp, cases[c].first, cases[c].last, cases[c].max_norm, &norm_gpu));
        download(&tp);
        double rel = fabs(norm_gpu - norm_cpu) / norm_cpu;
        printf("  clip %-28s norm gpu %.17g cpu %.17g rel %.1e %s\n", cases[c].name, norm_gpu, norm_cpu, rel,
               rel < 1e-12 ? "ok" : "FAIL");
        assert_true(rel < 1e-12);
        assert_true(norm_cpu == want_before);
        char nm[96];
        snprintf(nm, sizeof nm, "grad after clip (%s)", cases[c].name);
        assert_int_equal(differ(nm, tp.grad, ref.grad, tp.count), 0);
    }
    /* norm may be NULL */
    TU_OK(cuda_grad_clip(&cp, 0, tp.n_tensors, 1.0, NULL));
}

static void test_adamw(void **state) {
    adamw_opts o = adamw_defaults();
    randomise(400);
    upload_all();
    /* three steps over everything, then two over the DiT only with another lr, new gradients each */
    long steps[] = {1, 2, 3, 4, 5};
    for (int s = 0; s < 5; s++) {
        int first = s < 3 ? 0 : tp.dit_first, last = tp.n_tensors;
        float lr = s < 3 ? 3e-3f : 1e-2f;
        tu_fill_uniform(ref.grad, ref.count, -0.02f, 0.02f, 500 + (uint64_t)s);
        for (int i = 0; i < ref.n_tensors; i++) { /* padding gradients zero */
            size_t e = ref.offset[i] + train_params_numel(&ref, i);
            memset(ref.grad + e, 0, (ref.offset[i + 1] - e) * sizeof(float));
        }
        CK(cudaMemcpy(cp.grad, ref.grad, ref.count * sizeof(float), cudaMemcpyHostToDevice));
        adamw_step(&ref, first, last, steps[s], lr, &o);
        TU_OK(cuda_adamw_step(&cp, first, last, steps[s], lr, &o));
    }
    download(&tp);
    size_t nd = differ("param after 5 AdamW steps", tp.param, ref.param, tp.count);
    nd += differ("m after 5 AdamW steps", tp.m, ref.m, tp.count);
    nd += differ("v after 5 AdamW steps", tp.v, ref.v, tp.count);
    assert_int_equal(nd, 0);
    /* weight decay: a rank-2 tensor moved by decay with zero gradient, a bias did not */
    int wi = train_params_find(&tp, "dit.in.weight"), bi = train_params_find(&tp, "dit.in.bias");
    assert_true(wi >= 0 && bi >= 0);
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    memset(tp.m, 0, tp.count * 4), memset(tp.v, 0, tp.count * 4);
    upload_all(); /* tp: param as after the steps, m = v = 0 */
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_adamw_step(&cp, 0, tp.n_tensors, 1, 0.5f, &o));
    float *before = malloc(tp.count * 4);
    memcpy(before, tp.param, tp.count * 4);
    download(&tp);
    float w0 = before[tp.offset[wi]], w1 = tp.param[tp.offset[wi]];
    float b0 = before[tp.offset[bi]], b1 = tp.param[tp.offset[bi]];
    printf("  zero gradient, lr 0.5, wd 0.1: weight %.6g -> %.6g (x%.4f), bias %.6g -> %.6g\n", w0, w1,
           w0 ? w1 / w0 : 0, b0, b1);
    assert_true(w1 == w0 * (1.0f - 0.5f * 0.1f));
    assert_true(b1 == b0);
    free(before);
    assert_int_equal(cuda_adamw_step(&cp, 0, tp.n_tensors, 0, 1e-3f, &o), MG_ERR_ARG);
    printf("  step 0 refused: %s\n", mg_last_error());
}

static void test_ema(void **state) {
    randomise(600);
    upload_all();
    float decays[] = {0.999f, 0.9f};
    for (int r = 0; r < 2; r++) {
        int first = r ? tp.dit_first : 0, last = r ? tp.n_tensors : tp.dit_first;
        TU_OK(cuda_ema_update(&cp, first, last, decays[r]));
        size_t a = ref.offset[first], b = ref.offset[last];
        for (size_t k = a; k < b; k++) ref.ema[k] = decays[r] * ref.ema[k] + (1.0f - decays[r]) * ref.param[k];
    }
    download(&tp);
    assert_int_equal(differ("ema after two updates", tp.ema, ref.ema, tp.count), 0);
}

static void test_bf16_copy(void **state) {
    randomise(700);
    upload_all();
    TU_OK(cuda_params_to_bf16(&cp, 0, tp.n_tensors));
    TU_OK(cuda_params_sync(&cp));
    uint16_t *h = malloc(tp.count * 2);
    CK(cudaMemcpy(h, cuda_params_bf16(&cp), tp.count * 2, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t k = 0; k < tp.count; k++) bad += h[k] != cu_f2bf(tp.param[k]);
    printf("  bf16 copy of %zu params: %zu differ from cu_f2bf %s\n", tp.count, bad, bad ? "FAIL" : "ok");
    assert_int_equal(bad, 0);
    free(h);
}

static void test_bad_ranges(void **state) {
    assert_int_equal(cuda_zero_grad(&cp, -1, 2), MG_ERR_ARG);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_grad_clip(&cp, 3, 2, 1.0, NULL), MG_ERR_ARG);
    printf("  %s\n", mg_last_error());
    assert_int_equal(cuda_ema_update(&cp, 0, tp.n_tensors + 1, 0.9f), MG_ERR_ARG);
    printf("  %s\n", mg_last_error());
    adamw_opts o = adamw_defaults();
    assert_int_equal(cuda_adamw_step(&cp, 0, tp.n_tensors + 1, 1, 1e-3f, &o), MG_ERR_ARG);
    /* empty ranges are fine and change nothing */
    TU_OK(cuda_zero_grad(&cp, 2, 2));
    TU_OK(cuda_ema_update(&cp, 2, 2, 0.5f));
    TU_OK(cuda_adamw_step(&cp, 2, 2, 1, 1e-3f, &o));
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_train_state: skipped: no CUDA device found\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_zero_grad), cmocka_unit_test(test_grad_clip),
        cmocka_unit_test(test_adamw),     cmocka_unit_test(test_ema),       cmocka_unit_test(test_bf16_copy),
        cmocka_unit_test(test_bad_ranges),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
