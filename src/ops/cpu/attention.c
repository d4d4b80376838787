/* Multi-head attention, softmax(q k^T / sqrt(dh)) v, all keys visible.
 *
 * The work is cut into tasks of (head, block of R query rows); each thread takes whole tasks
 * and runs them alone in its own slot of scratch: scores (R, Nk) = q k^T by one GEMM, the
 * softmax in place, out (R, dh) = P v by a second GEMM. One fork/join per call, as in conv.c
 * (GEMMs threaded one at a time would fork a few times per task, and on a loaded machine each
 * fork/join can wait out another process's time slice). The scratch is sized from (Nq, Nk)
 * alone, at most ATT_QBLOCK rows of scores (8 MiB at Nk = 8192), and is shared out among
 * however many threads there are at run time. */
#include "ops/ops.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/cpu/parallel.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#define ATT_QBLOCK 256
/* Target size of one task's scores, floats (1 MiB): they stay in L2 across the softmax
 * passes and the P v product. */
#define ATT_TASK_FLOATS (256 * 1024)

size_t attention_scratch_floats(int Nq, int Nk) {
    return (size_t)(Nq < ATT_QBLOCK ? Nq : ATT_QBLOCK) * Nk;
}

/* exp(x) for x in [-87.3, 0] (scores minus their row max, clamped by the caller), within
 * 1.5 ulp of exp (max 1.41 ulp measured over the range). libm's expf does not vectorise
 * without -ffast-math and would cost more than both GEMMs; this is Cephes' expf (x = n ln2 + r
 * with ln2 in two parts, a degree-5 polynomial for e^r, 2^n built in the exponent bits),
 * written without branches or floorf so that the loop calling it vectorises: n = round(x/ln2)
 * by the 1.5*2^23 trick. */
static inline float exp_clamped(float x) {
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n, n in [-126, 0] */
    float pow2;
    memcpy(&pow2, &bits, sizeof pow2);
    return p * pow2;
}

/* max and float64 sum of a row, with 8 independent lanes: a plain reduction loop may not be
 * reordered (no -ffast-math), so it would run one element per add latency; 8 named lanes
 * let the compiler use vector registers. */
static float row_max(const float *x, int n) {
    float lane[8], m = x[0];
    for (int u = 0; u < 8; u++) lane[u] = x[0];
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; u++) lane[u] = x[j + u] > lane[u] ? x[j + u] : lane[u];
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    for (int u = 0; u < 8; u++) m = lane[u] > m ? lane[u] : m;
    return m;
}

static double row_sum(const float *x, int n) {
    double lane[8] = {0}, s = 0.0;
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; u++) lane[u] += x[j + u];
    for (; j < n; j++) s += x[j];
    for (int u = 0; u < 8; u++) s += lane[u];
    return s;
}

/* In place: row = softmax(row), in vectorised passes. The clamp has its own pass because GCC
 * (under the default -ftrapping-math) will not if-convert it inside the exp loop. Below
 * -87.3 a weight is ~1e-38 of the max's, zero for any purpose, and the clamp keeps
 * exp_clamped's int conversion in range. The sum is float64: 8192 terms in float would lose
 * ~1e-5. */
static void softmax_row(float *row, int n) {
    float m = row_max(row, n);
    for (int j = 0; j < n; j++) {
        float x = row[j] - m;
        row[j] = x > -87.3f ? x : -87.3f;
    }
    for (int j = 0; j < n; j++) row[j] = exp_clamped(row[j]);
    float inv = (float)(1.0 / row_sum(row, n));
    for (int j = 0; j < n; j++) row[j] *= inv;
}

void attention_forward(float *out, const float *q, int ldq, const float *k, const float *v,
                       int ldkv, float *scratch, int Nq, int Nk, int n_heads, int dh) {
    if (Nq <= 0 || Nk <= 0 || n_heads <= 0) return;
    const int D = n_heads * dh;
    const float scale = (float)(1.0 / sqrt((double)dh));
    long fit = (long)(attention_scratch_floats(Nq, Nk) / Nk); /* score rows, >= 1 */
    int nthreads = 1;
#ifdef MG_HAVE_OPENMP
    nthreads = omp_get_max_threads();
#endif
    /* R query rows per task: about ATT_TASK_FLOATS of scores, no more than one thread's share
     * of the scratch, and few enough that every thread gets a task. */
    long R = ATT_TASK_FLOATS / Nk;
    long share = ((long)Nq * n_heads + nthreads - 1) / nthreads;
    if (R > share) R = share;
    if (R > fit / nthreads) R = fit / nthreads;
    if (R > Nq) R = Nq;
    if (R < 1) R = 1;
    int nslots = fit / R < nthreads ? (int)(fit / R) : nthreads;
    long qblocks = (Nq + R - 1) / R, ntasks = qblocks * n_heads;
    (void)nslots; /* unused without OpenMP */
    MG_OMP(omp parallel num_threads(nslots) if (ntasks > 1 && (double)Nq * Nk * D > 1e5))
    {
        int tid = 0;
#ifdef MG_HAVE_OPENMP
        tid = omp_get_thread_num();
#endif
        float *scores = scratch + (size_t)tid * R * Nk;
        MG_OMP(omp for schedule(dynamic, 1))
        for (long t = 0; t < ntasks; t++) {
            int h = (int)(t / qblocks);
            int q0 = (int)(t % qblocks * R), qb = Nq - q0 < R ? Nq - q0 : (int)R;
            /* scores (qb, Nk) = scale * q_h (qb, dh) @ k_h^T. Inside the parallel region
             * OpenBLAS (OpenMP build) and the fallback GEMM run on this thread alone. */
            gemm_nt(scores, Nk, q + (size_t)q0 * ldq + h * dh, ldq, k + h * dh, ldkv, qb, Nk, dh,
                    scale, 0.0f);
            for (int i = 0; i < qb; i++) softmax_row(scores + (size_t)i * Nk, Nk);
            /* out_h (qb, dh) = P (qb, Nk) @ v_h (Nk, dh) */
            gemm_nn(out + (size_t)q0 * D + h * dh, D, scores, Nk, v + h * dh, ldkv, qb, dh, Nk,
                    1.0f, 0.0f);
        }
    }
}
