/* Multi-head attention reversed. Per head, with S = scale * q k^T, P = softmax(S) (rows),
 * out = P v:
 *     dv += P^T dout,   dP = dout v^T,   dS = P * (dP - rowsum(P * dP)),
 *     dq += scale * dS k,   dk += scale * dS^T q.
 * P is recomputed (the forward keeps nothing) and materialised with dP in the head's own
 * slot of scratch: fine on the CPU at training clip sizes (Nq x Nk per head), and exactly the
 * probabilities the forward used up to the last bit of its exp. Heads run in parallel; each
 * writes only its own dh columns of dq, dk, dv, so nothing is shared between threads. */
#include "ops/ops_backward.h"

#include <math.h>

#include "ops/ops.h"
#include "ops/cpu/parallel.h"

size_t attention_backward_scratch_floats(int Nq, int Nk, int n_heads) {
    return (size_t)2 * n_heads * Nq * Nk;
}

static void softmax_rows(float *s, int Nq, int Nk) {
    for (int i = 0; i < Nq; i++) {
        float *row = s + (size_t)i * Nk, m = row[0];
        for (int j = 1; j < Nk; j++) m = row[j] > m ? row[j] : m;
        double sum = 0.0;
        for (int j = 0; j < Nk; j++) {
            row[j] = expf(row[j] - m);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < Nk; j++) row[j] *= inv;
    }
}

void attention_backward(float *dq, int lddq, float *dk, float *dv, int lddkv, const float *dout,
                        const float *q, int ldq, const float *k, const float *v, int ldkv,
                        float *scratch, int Nq, int Nk, int n_heads, int dh) {
    if (Nq <= 0 || Nk <= 0 || n_heads <= 0) return;
    const int D = n_heads * dh;
    const float scale = (float)(1.0 / sqrt((double)dh));
    MG_OMP(omp parallel for schedule(static) if ((double)Nq * Nk * D > 1e5))
    for (int h = 0; h < n_heads; h++) {
        float *P = scratch + (size_t)2 * h * Nq * Nk, *dP = P + (size_t)Nq * Nk; /* (Nq, Nk) */
        const float *qh = q + h * dh, *kh = k + h * dh, *vh = v + h * dh, *doh = dout + h * dh;
        gemm_nt(P, Nk, qh, ldq, kh, ldkv, Nq, Nk, dh, scale, 0.0f);
        softmax_rows(P, Nq, Nk);
        /* dv_h (Nk, dh) += P^T (Nk, Nq) @ dout_h (Nq, dh) */
        gemm_tn(dv + h * dh, lddkv, P, Nk, doh, D, Nk, dh, Nq, 1.0f, 1.0f);
        /* dP (Nq, Nk) = dout_h (Nq, dh) @ v_h^T */
        gemm_nt(dP, Nk, doh, D, vh, ldkv, Nq, Nk, dh, 1.0f, 0.0f);
        /* dS = P * (dP - sum_j P dP), in place over dP */
        for (int i = 0; i < Nq; i++) {
            const float *pr = P + (size_t)i * Nk;
            float *dr = dP + (size_t)i * Nk;
            double dot = 0.0;
            for (int j = 0; j < Nk; j++) dot += (double)pr[j] * dr[j];
            for (int j = 0; j < Nk; j++) dr[j] = pr[j] * (dr[j] - (float)dot);
        }
        /* dq_h (Nq, dh) += scale * dS (Nq, Nk) @ k_h (Nk, dh) */
        gemm_nn(dq + h * dh, lddq, dP, Nk, kh, ldkv, Nq, dh, Nk, scale, 1.0f);
        /* dk_h (Nk, dh) += scale * dS^T (Nk, Nq) @ q_h (Nq, dh) */
        gemm_tn(dk + h * dh, lddkv, dP, Nk, qh, ldq, Nk, dh, Nq, scale, 1.0f);
    }
}
