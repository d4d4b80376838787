/* The DiT's training pass on the GPU (src/cuda/dit_train.cu) against the CPU reference
 * (model_train.c) on the tiny model: a random clip of 4 frames of 8x8 latents, window 2,
 * random sigma per frame, with cond and without, with x0_in (history augmentation) and
 * without: the loss against dit_train_forward and the gradient of every DiT tensor against
 * dit_train_backward (relative L2 per tensor, bf16 tolerance; the worst is printed). Then: a
 * batch of two clips equals the two clips run one after the other (gradients accumulate),
 * cuda_dit_train_loss equals the step's loss, bad batches are refused with a message, and a
 * step is timed for tiny and s at 256x256 (32x32 latents), T = 8, window 3, B = 8: ms/step,
 * clips/s and TFLOP/s (GEMM FLOPs issued, and the model's FLOPs: 3x the forward's, masked
 * keys and the recomputed scores not counted).
 * Needs a GPU; without one it says so and passes (CI has none). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "cuda/cuda_train.h"
#include "train/train.h"
#include "testutil.h"

#define GRAD_TOL 3e-2  /* relative L2 per tensor: bf16 operands, fp32 accumulation */
#define LOSS_TOL 1e-2  /* relative */
#define BATCH_TOL 3e-3 /* batch of two vs one by one: cuBLAS picks other kernels for other row
                        * counts, so fp32 sums round differently and some bf16 roundings flip;
                        * measured ~1e-3 at worst (deepest layer), a tenth of the CPU gap */

static train_params tp;
static cuda_params cp;
static char model_path[512];

/* one random clip; its arrays live until the test ends */
typedef struct clip_data {
    float *x0, *x0_in, *eps, *cond, *sigma;
    dit_clip clip;
} clip_data;

static void clip_make(clip_data *c, int T, int lh, int lw, int Z, int window, int prompt, int with_cond,
                      int with_x0_in, uint64_t seed) {
    size_t n = (size_t)T * lh * lw * Z;
    c->x0 = tu_frand(n, -1.0f, 1.0f, seed);
    c->eps = tu_frand(n, -1.5f, 1.5f, seed + 1);
    c->cond = with_cond ? tu_frand(n, -1.0f, 1.0f, seed + 2) : NULL;
    c->x0_in = with_x0_in ? tu_frand(n, -1.2f, 1.2f, seed + 3) : NULL;
    c->sigma = tu_frand((size_t)T, 0.0f, 1.0f, seed + 4);
    c->clip = (dit_clip){.T = T, .lh = lh, .lw = lw, .x0 = c->x0, .x0_in = c->x0_in, .eps = c->eps,
                         .cond = c->cond, .sigma = c->sigma, .prompt = prompt, .window = window};
}

static void clip_free(clip_data *c) {
    free(c->x0), free(c->x0_in), free(c->eps), free(c->cond), free(c->sigma);
    memset(c, 0, sizeof *c);
}

/* ||a - b|| / ||b|| over n floats (0 when both are zero) */
/* every DiT tensor of got against want; returns the worst relative L2 and prints it */
static double compare_grads(const char *what, const float *got, const float *want, double tol) {
    double worst = 0;
    int wi = -1, bad = 0;
    for (int i = tp.dit_first; i < tp.n_tensors; i++) {
        size_t o = tp.offset[i], n = train_params_numel(&tp, i);
        double r = tu_rel_l2(got + o, want + o, n);
        if (r > tol) {
            printf("    %s: %-32s rel L2 %.3e FAIL\n", what, tp.table[i].name, r);
            bad++;
        }
        if (r > worst || wi < 0) worst = r, wi = i;
    }
    printf("  %s: %d DiT tensors, worst relative L2 %.3e (%s)%s\n", what, tp.n_tensors - tp.dit_first, worst,
           tp.table[wi].name, bad ? " FAIL" : "");
    return worst;
}

static int setup(void **state) {
    (void)state;
    mg_config cfg;
    mg_config_named("tiny", &cfg);
    snprintf(model_path, sizeof model_path, "%s/dit_train_tiny.safetensors", tu_tmpdir());
    if (mg_model_init_file(model_path, &cfg, 11, 1) != MG_OK || train_params_load(&tp, model_path) != MG_OK) {
        fprintf(stderr, "test_cuda_dit_train: %s\n", mg_last_error());
        return -1;
    }
    if (cuda_params_new(&cp, &tp) != MG_OK) {
        fprintf(stderr, "test_cuda_dit_train: %s\n", mg_last_error());
        return -1;
    }
    printf("test_cuda_dit_train on %s\n", cuda_params_device_name(&cp));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    cuda_params_free(&cp);
    train_params_free(&tp);
    return 0;
}

/* the GPU's gradients of the DiT into out (count floats); the host state keeps its own */
static void download_grads(float *out) {
    TU_OK(cuda_params_sync(&cp));
    assert_int_equal(cudaMemcpy(out, cp.grad, tp.count * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
}

static void parity_case(int with_cond, int with_x0_in, uint64_t seed) {
    const int T = 4, lh = 8, lw = 8, window = 2;
    clip_data cd;
    clip_make(&cd, T, lh, lw, tp.cfg.z_ch, window, 1, with_cond, with_x0_in, seed);
    printf(" clip T=%d %dx%d window %d, cond %s, x0_in %s, sigma", T, lh, lw, window, with_cond ? "yes" : "no",
           with_x0_in ? "yes" : "no");
    for (int t = 0; t < T; t++) printf(" %.3f", cd.sigma[t]);
    printf("\n");

    /* CPU reference */
    dit_train ref;
    TU_OK(dit_train_init(&ref, &tp, T, lh, lw));
    train_zero_grad(&tp, 0, tp.n_tensors);
    float cpu_loss;
    TU_OK(dit_train_forward(&ref, &cd.clip, &cpu_loss));
    TU_OK(dit_train_backward(&ref, 0.75f));
    float *cpu_grad = malloc(tp.count * sizeof(float)), *gpu_grad = malloc(tp.count * sizeof(float));
    memcpy(cpu_grad, tp.grad, tp.count * sizeof(float));

    /* GPU, sized larger than the clip (B 2, T 6, 12x10): a clip smaller than the sizing works */
    cuda_dit_train *dt;
    TU_OK(cuda_dit_train_new(&dt, &cp, 2, 6, 12, 10));
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    /* poison the autoencoder's gradients: the DiT pass must not touch them */
    assert_int_equal(cudaMemset(cp.grad, 0xFF, tp.offset[tp.dit_first] * sizeof(float)), cudaSuccess);
    float gpu_loss = NAN, val_loss = NAN;
    TU_OK(cuda_dit_train_step(dt, &cd.clip, 1, 0.75f, &gpu_loss));
    download_grads(gpu_grad);
    /* the forward's activations against the CPU's, layer by layer */
    int N = (lh / tp.cfg.patch) * (lw / tp.cfg.patch), L = tp.cfg.layers;
    size_t Md = (size_t)T * N * tp.cfg.d, nv = (size_t)T * lh * lw * tp.cfg.z_ch;
    float *peek = malloc(((size_t)(L + 1) * Md * 4 + nv) * sizeof(float));
    TU_OK(cuda_dit_train_peek(dt, "t1", peek, (size_t)T * tp.cfg.d));
    printf("  vs CPU, relative L2: t1 %.1e", tu_rel_l2(peek, ref.a.t1, (size_t)T * tp.cfg.d));
    TU_OK(cuda_dit_train_peek(dt, "c", peek, (size_t)T * tp.cfg.d));
    printf(" c %.1e", tu_rel_l2(peek, ref.a.c, (size_t)T * tp.cfg.d));
    TU_OK(cuda_dit_train_peek(dt, "mod", peek, (size_t)L * T * 6 * tp.cfg.d));
    printf(" mod %.1e\n", tu_rel_l2(peek, ref.a.mod, (size_t)L * T * 6 * tp.cfg.d));
    static const char *names[5] = {"x", "pr", "xm", "h", "f"};
    for (int k = 0; k < 5; k++) {
        const float *cpu = k == 0 ? ref.a.x : k == 1 ? ref.a.pr : k == 2 ? ref.a.xm : k == 3 ? ref.a.h : ref.a.f;
        size_t per = k == 3 ? 4 * Md : Md;
        int nl = k == 0 ? L + 1 : L;
        TU_OK(cuda_dit_train_peek(dt, names[k], peek, per * nl));
        printf("    %-3s by layer:", names[k]);
        for (int l = 0; l < nl; l++) printf(" %.1e", tu_rel_l2(peek + l * per, cpu + l * per, per));
        printf("\n");
    }
    TU_OK(cuda_dit_train_peek(dt, "v", peek, nv));
    printf("    velocity %.2e\n", tu_rel_l2(peek, ref.a.v, nv));
    /* the same clip second in a batch of two: the same loss */
    {
        clip_data other;
        clip_make(&other, T, lh, lw, tp.cfg.z_ch, window, 3, 1, 1, seed + 50);
        dit_clip two[2] = {other.clip, cd.clip};
        float l2[2];
        TU_OK(cuda_dit_train_loss(dt, two, 2, l2));
        TU_OK(cuda_dit_train_peek(dt, "v", peek, 2 * nv));
        printf("  second of a batch of two: loss %.6f, velocity vs CPU %.2e\n", l2[1], tu_rel_l2(peek + nv, ref.a.v, nv));
        assert_true(fabs((double)l2[1] - gpu_loss) <= 1e-5 * fabs((double)gpu_loss));
        clip_free(&other);
    }
    free(peek);
    dit_train_free(&ref);
    double lr = fabs((double)gpu_loss - cpu_loss) / fabs((double)cpu_loss);
    printf("  loss: gpu %.6f cpu %.6f (relative %.2e)\n", gpu_loss, cpu_loss, lr);
    assert_true(lr < LOSS_TOL);
    assert_true(compare_grads("gradients vs CPU", gpu_grad, cpu_grad, GRAD_TOL) < GRAD_TOL);
    uint32_t poison;
    memcpy(&poison, &gpu_grad[0], 4);
    assert_int_equal(poison, 0xFFFFFFFFu);
    /* the forward alone: the same loss, gradients untouched */
    TU_OK(cuda_dit_train_loss(dt, &cd.clip, 1, &val_loss));
    printf("  cuda_dit_train_loss %.9g, step's loss %.9g\n", val_loss, gpu_loss);
    assert_true(val_loss == gpu_loss);
    download_grads(cpu_grad);
    assert_true(tu_rel_l2(cpu_grad + tp.offset[tp.dit_first], gpu_grad + tp.offset[tp.dit_first],
                       tp.count - tp.offset[tp.dit_first]) == 0.0);
    cuda_dit_train_free(dt);
    free(cpu_grad), free(gpu_grad);
    clip_free(&cd);
}

static void test_parity_cond(void **state) {
    (void)state;
    parity_case(1, 0, 100);
}

static void test_parity_dream_x0_in(void **state) {
    (void)state;
    parity_case(0, 1, 200);
}

static void test_parity_cond_x0_in(void **state) {
    (void)state;
    parity_case(1, 1, 300);
}

/* two clips in one pass (different prompts, sigma, one with cond and one without) against
 * the same two one at a time */
static void test_batch_equals_single(void **state) {
    (void)state;
    const int T = 4, lh = 8, lw = 8, window = 2;
    clip_data a, b;
    clip_make(&a, T, lh, lw, tp.cfg.z_ch, window, 0, 1, 0, 400);
    clip_make(&b, T, lh, lw, tp.cfg.z_ch, window, 2, 0, 1, 500);
    dit_clip both[2] = {a.clip, b.clip};
    cuda_dit_train *dt;
    TU_OK(cuda_dit_train_new(&dt, &cp, 2, T, lh, lw));
    float *g1 = malloc(tp.count * sizeof(float)), *g2 = malloc(tp.count * sizeof(float));
    float lb[2], la1, lb1;
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_dit_train_step(dt, both, 2, 0.5f, lb));
    download_grads(g2);
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_dit_train_step(dt, &a.clip, 1, 0.5f, &la1));
    TU_OK(cuda_dit_train_step(dt, &b.clip, 1, 0.5f, &lb1));
    download_grads(g1);
    printf("  losses: batch %.7f %.7f, one by one %.7f %.7f\n", lb[0], lb[1], la1, lb1);
    /* and the batch against the CPU's two clips */
    {
        dit_train ref;
        float ca, cb2;
        TU_OK(dit_train_init(&ref, &tp, T, lh, lw));
        train_zero_grad(&tp, 0, tp.n_tensors);
        TU_OK(dit_train_forward(&ref, &a.clip, &ca));
        TU_OK(dit_train_backward(&ref, 0.5f));
        TU_OK(dit_train_forward(&ref, &b.clip, &cb2));
        TU_OK(dit_train_backward(&ref, 0.5f));
        dit_train_free(&ref);
        printf("  CPU losses %.7f %.7f\n", ca, cb2);
        assert_true(fabsf(lb[0] - ca) < LOSS_TOL * ca && fabsf(lb[1] - cb2) < LOSS_TOL * cb2);
        assert_true(compare_grads("batch of 2 vs CPU", g2, tp.grad, GRAD_TOL) < GRAD_TOL);
    }
    assert_true(fabsf(lb[0] - la1) <= 1e-5f * fabsf(la1));
    assert_true(fabsf(lb[1] - lb1) <= 1e-5f * fabsf(lb1));
    assert_true(compare_grads("batch of 2 vs one by one", g2, g1, BATCH_TOL) < BATCH_TOL);
    float l2[2];
    TU_OK(cuda_dit_train_loss(dt, both, 2, l2));
    assert_true(l2[0] == lb[0] && l2[1] == lb[1]);
    cuda_dit_train_free(dt);
    free(g1), free(g2);
    clip_free(&a), clip_free(&b);
}

/* cuda_dit_train_set_dv_hook (--adv): the hook sees the pass's v and its dv_add joins the loss's
 * gradient. A hook that hands back the loss's own gradient, k (v - (eps - x0)) with the pass's
 * k, doubles dv, and so every DiT gradient (scaling by 2 is exact in fp32 and bf16); the loss
 * is unchanged; a failing hook fails the step with its error; NULL turns it off again. */
typedef struct hook_ctx {
    float k;
    size_t lat;
    int calls, fail;
} hook_ctx;

static mg_status double_dv(void *user, const dit_clip *clips, int n, const float *v, float *dv_add) {
    hook_ctx *h = user;
    h->calls++;
    if (h->fail) return mg_fail(MG_ERR_ARG, "test hook: asked to fail");
    size_t cl = (size_t)clips[0].T * h->lat;
    for (int i = 0; i < n; i++)
        for (size_t e = 0; e < cl; e++) {
            float r = v[i * cl + e] - (clips[i].eps[e] - clips[i].x0[e]);
            dv_add[i * cl + e] = h->k * r;
        }
    return MG_OK;
}

static void test_dv_hook(void **state) {
    (void)state;
    const int T = 4, lh = 8, lw = 8, window = 2;
    clip_data a, b;
    clip_make(&a, T, lh, lw, tp.cfg.z_ch, window, 0, 1, 0, 600);
    clip_make(&b, T, lh, lw, tp.cfg.z_ch, window, 2, 0, 1, 700);
    dit_clip both[2] = {a.clip, b.clip};
    cuda_dit_train *dt;
    TU_OK(cuda_dit_train_new(&dt, &cp, 2, T, lh, lw));
    float *g1 = malloc(tp.count * sizeof(float)), *g2 = malloc(tp.count * sizeof(float));
    float l1[2], l2[2];
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_dit_train_step(dt, both, 2, 0.5f, l1));
    download_grads(g1);
    size_t lat = (size_t)lh * lw * tp.cfg.z_ch;
    hook_ctx h = {.k = (float)(2.0 * 0.5 / (double)(T * lat)), .lat = lat};
    TU_OK(cuda_dit_train_set_dv_hook(dt, double_dv, &h));
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_dit_train_step(dt, both, 2, 0.5f, l2));
    download_grads(g2);
    assert_int_equal(h.calls, 1);
    assert_true(l1[0] == l2[0] && l1[1] == l2[1]);
    for (size_t i = 0; i < tp.count; i++) g1[i] *= 2.0f;
    assert_true(compare_grads("hook dv_add = dv: 2x the gradients", g2, g1, 1e-6) < 1e-6);
    TU_OK(cuda_dit_train_loss(dt, both, 2, l2)); /* validation passes do not call it */
    assert_int_equal(h.calls, 1);
    h.fail = 1;
    assert_int_equal(cuda_dit_train_step(dt, both, 2, 0.5f, l2), MG_ERR_ARG);
    assert_non_null(strstr(mg_last_error(), "asked to fail"));
    TU_OK(cuda_dit_train_set_dv_hook(dt, NULL, NULL));
    TU_OK(cuda_zero_grad(&cp, 0, tp.n_tensors));
    TU_OK(cuda_dit_train_step(dt, both, 2, 0.5f, l2));
    download_grads(g2);
    for (size_t i = 0; i < tp.count; i++) g1[i] *= 0.5f;
    assert_true(compare_grads("hook off again", g2, g1, 1e-6) < 1e-6);
    assert_int_equal(h.calls, 2);
    cuda_dit_train_free(dt);
    free(g1), free(g2);
    clip_free(&a), clip_free(&b);
}

static void test_bad_calls(void **state) {
    (void)state;
    clip_data a;
    clip_make(&a, 4, 8, 8, tp.cfg.z_ch, 2, 0, 1, 0, 600);
    cuda_dit_train *dt;
    assert_int_equal(cuda_dit_train_new(&dt, &cp, 2, 4, 7, 8), MG_ERR_SHAPE);
    assert_null(dt);
    printf("  %s\n", mg_last_error());
    TU_OK(cuda_dit_train_new(&dt, &cp, 1, 4, 8, 8));
    float l[3];
    dit_clip two[2] = {a.clip, a.clip};
    assert_int_equal(cuda_dit_train_step(dt, two, 2, 1.0f, l), MG_ERR_ARG); /* n > B */
    printf("  %s\n", mg_last_error());
    dit_clip big = a.clip;
    big.lh = 16;
    assert_int_equal(cuda_dit_train_step(dt, &big, 1, 1.0f, l), MG_ERR_SHAPE);
    printf("  %s\n", mg_last_error());
    dit_clip bad = a.clip;
    bad.prompt = tp.n_prompts;
    assert_int_equal(cuda_dit_train_loss(dt, &bad, 1, l), MG_ERR_ARG);
    printf("  %s\n", mg_last_error());
    cuda_dit_train_free(dt);
    TU_OK(cuda_dit_train_new(&dt, &cp, 2, 4, 8, 8));
    two[1].window = 1;
    assert_int_equal(cuda_dit_train_step(dt, two, 2, 1.0f, l), MG_ERR_SHAPE);
    printf("  %s\n", mg_last_error());
    cuda_dit_train_free(dt);
    clip_free(&a);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The model's FLOPs for one training step of n clips: 3x the forward's GEMMs (the backward
 * is two GEMMs per forward GEMM), attention over the keys each query frame sees. */
static double model_flops(const mg_config *c, int n, int T, int lh, int lw, int window) {
    double d = c->d, zpp = (double)c->z_ch * c->patch * c->patch, N = (double)(lh / c->patch) * (lw / c->patch);
    double tok = (double)n * T * N, f = 0;
    f += 2 * tok * (2 * zpp * d + d * zpp);   /* in, final.out */
    f += c->layers * 2 * tok * 12 * d * d;    /* qkv, proj, fc1, fc2 */
    for (int t = 0; t < T; t++) {
        int first = t - window < 0 ? 0 : t - window;
        f += c->layers * (double)n * N * 4 * d * (t + 1 - first) * N; /* q k^T and P v */
    }
    return 3 * f;
}

static void time_config(const char *name) {
    const int B = 8, T = 8, lh = 32, lw = 32, window = 3, steps = 10;
    mg_config cfg;
    mg_config_named(name, &cfg);
    char path[600];
    snprintf(path, sizeof path, "%s/dit_time_%s.safetensors", tu_tmpdir(), name);
    train_params tq;
    cuda_params cq;
    TU_OK(mg_model_init_file(path, &cfg, 5, 1));
    TU_OK(train_params_load(&tq, path));
    TU_OK(cuda_params_new(&cq, &tq));
    cuda_dit_train *dt;
    TU_OK(cuda_dit_train_new(&dt, &cq, B, T, lh, lw));
    clip_data cd[8];
    dit_clip clips[8];
    for (int i = 0; i < B; i++) {
        clip_make(&cd[i], T, lh, lw, cfg.z_ch, window, i % tq.n_prompts, i % 2, i % 3 == 0, 700 + 10 * i);
        clips[i] = cd[i].clip;
    }
    float losses[8];
    TU_OK(cuda_zero_grad(&cq, tq.dit_first, tq.n_tensors));
    for (int i = 0; i < 3; i++) TU_OK(cuda_dit_train_step(dt, clips, B, 1.0f / B, losses)); /* warm-up */
    double f0 = cuda_dit_train_flops(dt), t0 = now_s();
    for (int i = 0; i < steps; i++) TU_OK(cuda_dit_train_step(dt, clips, B, 1.0f / B, losses));
    double dt_s = (now_s() - t0) / steps, issued = (cuda_dit_train_flops(dt) - f0) / steps;
    double mf = model_flops(&cfg, B, T, lh, lw, window);
    for (int i = 0; i < B; i++) assert_true(isfinite(losses[i]));
    printf("  %-4s d=%d L=%d: B=%d T=%d %dx%d latents window %d: %.2f ms/step, %.1f clips/s, %.1f TFLOP/s issued "
           "(%.3f TFLOP/step), %.1f TFLOP/s model (%.3f TFLOP/step); loss[0] %.4f\n",
           name, cfg.d, cfg.layers, B, T, lh, lw, window, dt_s * 1e3, B / dt_s, issued / dt_s * 1e-12, issued * 1e-12,
           mf / dt_s * 1e-12, mf * 1e-12, losses[0]);
    /* the forward alone */
    t0 = now_s();
    for (int i = 0; i < steps; i++) TU_OK(cuda_dit_train_loss(dt, clips, B, losses));
    printf("  %-4s forward only (cuda_dit_train_loss): %.2f ms\n", name, (now_s() - t0) / steps * 1e3);
    for (int i = 0; i < B; i++) clip_free(&cd[i]);
    cuda_dit_train_free(dt);
    cuda_params_free(&cq);
    train_params_free(&tq);
}

/* DIT_TIME_CONFIGS (default "tiny s"): the configs to time, for profiling runs */
static void test_timing(void **state) {
    (void)state;
    const char *env = getenv("DIT_TIME_CONFIGS");
    char list[64];
    snprintf(list, sizeof list, "%s", env && *env ? env : "tiny s");
    for (char *save = NULL, *name = strtok_r(list, " ,", &save); name; name = strtok_r(NULL, " ,", &save))
        time_config(name);
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_dit_train: skipped: no CUDA device found\n");
        return 0;
    }
    /* DIT_TEST_FILTER: run only the tests whose names match (cmocka's pattern), e.g. test_timing */
    const char *filter = getenv("DIT_TEST_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_cond),         cmocka_unit_test(test_parity_dream_x0_in),
        cmocka_unit_test(test_parity_cond_x0_in),   cmocka_unit_test(test_batch_equals_single),
        cmocka_unit_test(test_dv_hook),
        cmocka_unit_test(test_bad_calls),           cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
