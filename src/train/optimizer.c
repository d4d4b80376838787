/* AdamW, global-norm gradient clipping and the learning-rate schedule, over ranges of the flat
 * parameter arrays. The update is PyTorch's torch.optim.AdamW, written out:
 *     p -= lr * wd * p                       (decoupled decay, rank >= 2 tensors only)
 *     m  = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
 *     p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)     (t = step, from 1)
 * Biases are not decayed; weights, conv kernels and the prompt table are. */
#include <math.h>

#include "ops/cpu/parallel.h"
#include "train/train.h"

adamw_opts adamw_defaults(void) {
    return (adamw_opts){.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
}

void adamw_step(train_params *tp, int first, int last, long step, float lr, const adamw_opts *o) {
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    /* PyTorch's arrangement: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), bias
     * corrections bc = 1 - b^t in float64 */
    float step_size = (float)(lr / (1.0 - pow(b1, (double)step)));
    float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(b2, (double)step)));
    /* One fork/join for the whole range (a loaded machine makes each join cost a time slice);
     * every element is independent, so the result does not depend on the thread count. */
    MG_OMP(omp parallel for schedule(dynamic, 1) if (tp->offset[last] - tp->offset[first] > MG_OMP_MIN_ELEMS))
    for (int i = first; i < last; i++) {
        size_t off = tp->offset[i], n = train_params_numel(tp, i);
        float decay = tp->table[i].rank >= 2 ? 1.0f - lr * o->weight_decay : 1.0f;
        float *p = tp->param + off, *g = tp->grad + off, *m = tp->m + off, *v = tp->v + off;
        for (size_t k = 0; k < n; k++) {
            m[k] = b1 * m[k] + (1.0f - b1) * g[k];
            v[k] = b2 * v[k] + (1.0f - b2) * g[k] * g[k];
            p[k] = p[k] * decay - step_size * m[k] / (sqrtf(v[k]) * inv_sqrt_bc2 + eps);
        }
    }
}

double grad_global_norm(const train_params *tp, int first, int last) {
    const float *g = tp->grad + tp->offset[first];
    size_t n = tp->offset[last] - tp->offset[first]; /* the padding between tensors is zero */
    double lane[8] = {0}, s = 0.0;
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int u = 0; u < 8; u++) lane[u] += (double)g[k + u] * g[k + u];
    for (; k < n; k++) s += (double)g[k] * g[k];
    for (int u = 0; u < 8; u++) s += lane[u];
    return sqrt(s);
}

double grad_clip(train_params *tp, int first, int last, double max_norm) {
    double norm = grad_global_norm(tp, first, last), coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
        float *g = tp->grad + tp->offset[first];
        size_t n = tp->offset[last] - tp->offset[first];
        for (size_t k = 0; k < n; k++) g[k] *= c;
    }
    return norm;
}

float lr_schedule(long step, long warmup, long total, float lr_max, float lr_min) {
    if (step < warmup) return lr_max * (float)(step + 1) / (float)warmup;
    if (step >= total) return lr_min;
    double t = (double)(step - warmup) / (double)(total - warmup > 0 ? total - warmup : 1);
    return lr_min + (lr_max - lr_min) * (float)(0.5 * (1.0 + cos(M_PI * t)));
}
