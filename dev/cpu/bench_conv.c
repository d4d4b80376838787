/* Conv3x3 lab: times the library's conv3x3_forward and the implementations behind it against
 * alternatives, checks that they agree, and prints GFLOP/s counted as a direct convolution
 * (2*Ho*Wo*9*Ci*Co flops per call, whatever the method does), so the numbers compare.
 *   lib         conv3x3_forward: Winograd F(4,3) or im2col, as conv.c picks for the shape.
 *   im2col      src/ops/cpu/conv.c: blocked im2col, threads take whole blocks, one
 *               single-threaded GEMM per block, one fork/join per conv. The reference the
 *               others are compared with (rel err: max |x - ref| / (|ref| + rms(ref)), as in
 *               tests/test_ops.c).
 *   wino-f2     src/ops/cpu/conv_winograd.c, F(2x2, 3x3), stride 1 only.
 *   wino-f4     the same, F(4x4, 3x3).
 *   serial-blk  the first version: blocks of output rows one after another, im2col
 *               OpenMP-parallel, each block's GEMM threaded by OpenBLAS (several fork/joins
 *               per block).
 *   padded-w    stride 1 only: zero-pad the input once, then 9 GEMMs, one per tap, each over
 *               the whole padded frame with the input pointer shifted by the tap's offset.
 *
 * Build (from the repository root):
 *   cc -std=c11 -D_GNU_SOURCE -O3 -march=x86-64-v3 -fopenmp -DMG_HAVE_OPENMP -DMG_HAVE_OPENBLAS \
 *      -I/usr/include/x86_64-linux-gnu/openblas-openmp -Iinclude -Isrc dev/cpu/bench_conv.c \
 *      src/ops/cpu/[a-z]*.c src/core/rng.c src/core/timing.c \
 *      -L/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -lm -o /tmp/bench_conv
 *   /tmp/bench_conv             the standard sizes
 *   /tmp/bench_conv H W Ci Co s [lib,im2col,wino-f2,wino-f4,serial-blk,padded-w]  one size
 *   MG_WINO_ISA=1 /tmp/bench_conv ...  Winograd on AVX2 (0: portable C + gemm_nn)
 * Drop -DMG_HAVE_OPENBLAS and -lopenblas to time the built-in GEMM; add
 * -DMG_CONV_BLOCK_FLOATS=N (im2col) or -DMG_WINO_BLOCK_FLOATS=N (Winograd) to try another
 * block size. OpenBLAS 0.3.21 does not recognise
 * newer Xeons and falls back to SSE3 kernels ("Prescott"); run with
 * OPENBLAS_CORETYPE=SkylakeX (or Haswell) to get its AVX-512 (AVX2) kernels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/rng.h"
#include "core/timing.h"
#include "ops/cpu/conv_impl.h"
#include "ops/ops.h"

#ifdef MG_CONV_BLOCK_FLOATS
#define BLOCK_FLOATS MG_CONV_BLOCK_FLOATS
#else
#define BLOCK_FLOATS (128 * 1024) /* conv.c's default */
#endif

/* ---- serial-blk -------------------------------------------------------------------- */

#define SERIAL_BLOCK_FLOATS (256 * 1024)

static int serial_rows(int Ho, int Wo, int Ci) {
    size_t rows = SERIAL_BLOCK_FLOATS / ((size_t)Wo * 9 * Ci);
    return rows < 1 ? 1 : rows > (size_t)Ho ? Ho : (int)rows;
}

static void conv3x3_serial_blocks(float *out, const float *inp, const float *wp, const float *b,
                                  float *scratch, int H, int W, int Ci, int Co, int stride) {
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W, K = 9 * Ci;
    int rows = serial_rows(Ho, Wo, Ci);
    for (int y0 = 0; y0 < Ho; y0 += rows) {
        int npix = (Ho - y0 < rows ? Ho - y0 : rows) * Wo;
        float *oblk = out + (size_t)y0 * Wo * Co;
#pragma omp parallel for schedule(static)
        for (int p = 0; p < npix; p++) {
            int y = y0 + p / Wo, x = p % Wo;
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++) {
                    int iy = y * stride - 1 + ky, ix = x * stride - 1 + kx;
                    float *dst = scratch + (size_t)p * K + (ky * 3 + kx) * Ci;
                    if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                        memset(dst, 0, (size_t)Ci * sizeof(float));
                    else
                        memcpy(dst, inp + ((size_t)iy * W + ix) * Ci, (size_t)Ci * sizeof(float));
                }
            if (b) memcpy(oblk + (size_t)p * Co, b, (size_t)Co * sizeof(float));
        }
        gemm_nn(oblk, Co, scratch, K, wp, Co, npix, Co, K, 1.0f, b ? 1.0f : 0.0f);
    }
}

/* ---- padded-w ---------------------------------------------------------------------- */

/* Scratch: (H+2)*(W+2)*Ci padded input, then H*(W+2)*Co output in padded-width rows. Output
 * pixel (y, x) sits at padded-width index m = y*(W+2) + x, and tap (ky, kx) reads padded
 * pixel m + ky*(W+2) + kx: a constant shift, so each tap is one GEMM over all m. The two
 * columns per row at x = W, W+1 are garbage (they wrap into the next row) and are dropped in
 * the final copy. The packed weight's tap t is the (Ci, Co) slab at wp + t*Ci*Co. */
static size_t padded_scratch_floats(int H, int W, int Ci, int Co) {
    return (size_t)(H + 2) * (W + 2) * Ci + (size_t)H * (W + 2) * Co;
}

static void conv3x3_padded(float *out, const float *inp, const float *wp, const float *b,
                           float *scratch, int H, int W, int Ci, int Co) {
    int Wp = W + 2;
    float *pin = scratch, *pout = scratch + (size_t)(H + 2) * Wp * Ci;
    memset(pin, 0, (size_t)Wp * Ci * sizeof(float));
    memset(pin + (size_t)(H + 1) * Wp * Ci, 0, (size_t)Wp * Ci * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++) {
        float *row = pin + (size_t)(y + 1) * Wp * Ci;
        memset(row, 0, (size_t)Ci * sizeof(float));
        memcpy(row + Ci, inp + (size_t)y * W * Ci, (size_t)W * Ci * sizeof(float));
        memset(row + (size_t)(W + 1) * Ci, 0, (size_t)Ci * sizeof(float));
    }
    int M = H * Wp - 2; /* the last row's two garbage columns would read past the padding */
    if (b) {
#pragma omp parallel for schedule(static)
        for (int m = 0; m < M; m++) memcpy(pout + (size_t)m * Co, b, (size_t)Co * sizeof(float));
    }
    for (int t = 0; t < 9; t++) {
        int ky = t / 3, kx = t % 3;
        gemm_nn(pout, Co, pin + ((size_t)ky * Wp + kx) * Ci, Ci, wp + (size_t)t * Ci * Co, Co, M,
                Co, Ci, 1.0f, (b || t > 0) ? 1.0f : 0.0f);
    }
#pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++)
        memcpy(out + (size_t)y * W * Co, pout + (size_t)y * Wp * Co, (size_t)W * Co * sizeof(float));
}

/* ---- timing ------------------------------------------------------------------------ */

enum { V_LIB, V_IM2COL, V_WINO2, V_WINO4, V_SERIAL, V_PADDED, NVARIANTS };
static const char *variant_names[NVARIANTS] = {"lib", "im2col", "wino-f2", "wino-f4",
                                               "serial-blk", "padded-w"};

typedef struct {
    int H, W, Ci, Co, stride, variant;
    float *out, *inp, *wp, *b, *scratch;
} conv_job;

static void run_job(conv_job *j) {
    switch (j->variant) {
    case V_LIB:
        conv3x3_forward(j->out, j->inp, j->wp, j->b, j->scratch, j->H, j->W, j->Ci, j->Co, j->stride);
        break;
    case V_IM2COL:
        conv3x3_im2col_forward(j->out, j->inp, j->wp, j->b, NULL, MG_ACT_NONE, j->scratch, j->H,
                               j->W, j->Ci, j->Co, j->stride);
        break;
    case V_WINO2:
    case V_WINO4:
        conv3x3_wino_forward(j->out, j->inp, j->wp, j->b, NULL, MG_ACT_NONE, j->scratch, j->H,
                             j->W, j->Ci, j->Co, j->variant == V_WINO2 ? 2 : 4);
        break;
    case V_SERIAL:
        conv3x3_serial_blocks(j->out, j->inp, j->wp, j->b, j->scratch, j->H, j->W, j->Ci, j->Co,
                              j->stride);
        break;
    default:
        conv3x3_padded(j->out, j->inp, j->wp, j->b, j->scratch, j->H, j->W, j->Ci, j->Co);
    }
}

/* Best of the runs (at least 5, about 1 s of work): on a shared machine the minimum is the
 * number least disturbed by other processes; the median is printed beside it. */
static double time_job(conv_job *j, double *median) {
    double t[200];
    int n = 0;
    run_job(j); /* warm up: page faults, thread start */
    double start = mg_now_ms();
    while (n < 200 && (n < 5 || mg_now_ms() - start < 1000.0)) {
        double t0 = mg_now_ms();
        run_job(j);
        t[n++] = mg_now_ms() - t0;
    }
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && t[k - 1] > t[k]; k--) { double x = t[k]; t[k] = t[k - 1]; t[k - 1] = x; }
    *median = t[n / 2];
    return t[0];
}

static void fill(float *x, size_t n, uint64_t seed) {
    mg_rng r;
    mg_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * mg_rng_uniform(&r) - 1.0f;
}

/* max |x - ref| / (|ref| + rms(ref)), tests/test_ops.c's measure */
static double rel_err(const float *x, const float *ref, size_t n) {
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double rms = sqrt(ss / (double)n);
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)x[i] - ref[i]) / (fabs((double)ref[i]) + rms + 1e-30);
        if (!(e <= worst)) worst = e; /* NaN sticks */
    }
    return worst;
}

/* mask: which variants to run (bit per enum value); im2col always runs first (reference). */
static void bench(int H, int W, int Ci, int Co, int stride, unsigned mask) {
    int Ho = stride == 2 ? (H + 1) / 2 : H, Wo = stride == 2 ? (W + 1) / 2 : W;
    size_t nin = (size_t)H * W * Ci, nout = (size_t)Ho * Wo * Co;
    float *inp = malloc(nin * sizeof(float)), *w = malloc((size_t)Co * Ci * 9 * sizeof(float));
    float *b = malloc((size_t)Co * sizeof(float));
    float *wp = malloc(conv3x3_packed_floats(Ci, Co) * sizeof(float));
    float *wu2 = malloc(conv3x3_wino_packed_floats(Ci, Co, 2) * sizeof(float));
    float *wu4 = malloc(conv3x3_wino_packed_floats(Ci, Co, 4) * sizeof(float));
    float *ref = malloc(nout * sizeof(float)), *out = malloc(nout * sizeof(float));
    fill(inp, nin, 1);
    fill(w, (size_t)Co * Ci * 9, 2);
    fill(b, Co, 3);
    conv3x3_pack(wp, w, Ci, Co);
    conv3x3_wino_pack(wu2, w, Ci, Co, 2);
    conv3x3_wino_pack(wu4, w, Ci, Co, 4);
    double gflop = 2.0 * Ho * Wo * 9.0 * Ci * Co * 1e-9, base_ms = 0;
    static const int order[] = {V_IM2COL, V_LIB, V_WINO2, V_WINO4, V_SERIAL, V_PADDED};
    for (int o = 0; o < NVARIANTS; o++) {
        int v = order[o];
        if (v != V_IM2COL && !(mask >> v & 1)) continue;
        if (stride != 1 && (v == V_PADDED || v == V_WINO2 || v == V_WINO4)) continue;
        conv_job j = {H, W, Ci, Co, stride, v, v == V_IM2COL ? ref : out, inp,
                      v == V_WINO2 ? wu2 : v == V_WINO4 ? wu4 : wp, b, NULL};
        size_t sc = v == V_LIB      ? conv3x3_scratch_floats(H, W, Ci, Co, stride)
                  : v == V_IM2COL   ? conv3x3_im2col_scratch_floats(H, W, Ci, stride)
                  : v == V_WINO2    ? conv3x3_wino_scratch_floats(H, W, Ci, Co, 2)
                  : v == V_WINO4    ? conv3x3_wino_scratch_floats(H, W, Ci, Co, 4)
                  : v == V_SERIAL   ? (size_t)serial_rows(Ho, Wo, Ci) * Wo * 9 * Ci
                                    : padded_scratch_floats(H, W, Ci, Co);
        j.scratch = malloc(sc * sizeof(float));
        double med, ms = time_job(&j, &med);
        if (v == V_IM2COL) base_ms = ms;
        double err = v == V_IM2COL ? 0.0 : rel_err(out, ref, nout);
        printf("%4dx%-4d %3d->%-3d s%d | %-10s %9.3f ms (median %9.3f) %6.1f GFLOP/s | "
               "scratch %6.2f MiB | %5.2fx im2col | rel err %.1e\n",
               H, W, Ci, Co, stride, variant_names[v], ms, med, gflop / (ms * 1e-3),
               sc * 4.0 / (1 << 20), base_ms / ms, err);
        fflush(stdout);
        free(j.scratch);
    }
    free(inp); free(w); free(b); free(wp); free(wu2); free(wu4); free(ref); free(out);
}

int main(int argc, char **argv) {
    /* MG_WINO_ISA=0|1|2 caps Winograd's code path: portable C + gemm_nn, AVX2, AVX-512 */
    const char *isa = getenv("MG_WINO_ISA");
    if (isa) conv3x3_wino_limit_isa(atoi(isa));
    printf("conv3x3 bench: %d OpenMP threads, im2col block %d floats, Winograd path limit %s\n",
           omp_get_max_threads(), BLOCK_FLOATS, isa ? isa : "2 (AVX-512)");
    /* bench H W Ci Co s [variants]: one size; variants a comma list of names (default all) */
    if (argc == 6 || argc == 7) {
        unsigned mask = ~0u;
        if (argc == 7) {
            mask = 0;
            for (int v = 0; v < NVARIANTS; v++) {
                const char *p = strstr(argv[6], variant_names[v]);
                size_t len = strlen(variant_names[v]);
                if (p && (p == argv[6] || p[-1] == ',') && (p[len] == 0 || p[len] == ','))
                    mask |= 1u << v;
            }
        }
        bench(atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), mask);
        return 0;
    }
    unsigned fast = 1u << V_LIB | 1u << V_WINO2 | 1u << V_WINO4; /* the slow old ones: once */
    static const int cases[][5] = {
        {256, 256, 32, 32, 1}, {128, 128, 32, 32, 1}, /* tiny model at 256x256 */
        {256, 256, 64, 64, 1}, {128, 128, 64, 64, 1}, {32, 32, 32, 32, 1},
        {64, 64, 32, 32, 1},   {16, 16, 32, 32, 1},   {8, 8, 32, 32, 1}, /* crossover */
        {512, 512, 64, 64, 1}, {512, 512, 64, 64, 2}, /* s-model autoencoder, 512x512 frame */
        {256, 256, 3, 32, 1},  {256, 256, 32, 3, 1},  /* enc.in / dec.out: thin GEMMs */
        {32, 32, 32, 4, 1},    {32, 32, 4, 32, 1},    /* enc.out / dec.in */
        {256, 256, 16, 16, 1}, {256, 256, 8, 8, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        bench(cases[i][0], cases[i][1], cases[i][2], cases[i][3], cases[i][4],
              i < 2 ? ~0u : fast);
    return 0;
}
