/* The causal latent DiT (docs/ARCHITECTURE.md, "Latent DiT"), one function for both modes:
 *  - streaming: one frame whose queries see the KV ring plus itself;
 *  - parallel: T frames at once, block-causal with a window (training, and the test that
 *    proves streaming equals it). */
#include <string.h>

#include "core/arena.h"
#include "model/forward.h"
#include "ops/ops.h"

/* ---- KV ring ------------------------------------------------------------------------------ */

size_t kv_ring_floats(int L, int K, int N, int d) { return 2 * (size_t)L * (K + 1) * N * d; }

void kv_ring_init(kv_ring *r, float *mem, int L, int K, int N, int d) {
    r->L = L, r->K = K, r->N = N, r->d = d;
    r->k = mem;
    r->v = mem + (size_t)L * (K + 1) * N * d;
    kv_ring_reset(r);
}

void kv_ring_reset(kv_ring *r) {
    r->count = 0;
    r->oldest = 0;
    r->frame = 0;
}

/* While the ring fills, the frame is written straight into history slot `count`; once
 * full, into the spare slot K, copied over the oldest slot on push. Either way the
 * visible keys are the contiguous slots [0, current]. Attention does not care about the
 * order of keys: positions live in the RoPE already applied to them. */
int kv_ring_current_slot(const kv_ring *r) { return r->count < r->K ? r->count : r->K; }

void kv_ring_push(kv_ring *r) {
    if (r->K == 0) { r->frame++; return; }
    int cur = kv_ring_current_slot(r), dst = cur;
    if (r->count == r->K) {
        dst = r->oldest;
        r->oldest = (r->oldest + 1) % r->K;
        size_t slot = (size_t)r->N * r->d;
        for (int l = 0; l < r->L; l++) {
            size_t base = (size_t)l * (r->K + 1) * slot;
            memcpy(r->k + base + dst * slot, r->k + base + cur * slot, slot * sizeof(float));
            memcpy(r->v + base + dst * slot, r->v + base + cur * slot, slot * sizeof(float));
        }
    } else {
        r->count++;
    }
    r->frame++;
}

/* ---- work memory -------------------------------------------------------------------------- */

static size_t dit_layout(dit_work *w, float *mem, const mg_config *c, int T, int N, int Nk) {
    size_t off = 0, TN = (size_t)T * N;
    int d = c->d, zpp = c->z_ch * c->patch * c->patch, dh = d / c->heads;
    float *p;
#define TAKE(field, n) p = arena_take(mem, &off, (n)); if (w) w->field = p
    TAKE(tok, TN * 2 * zpp);
    TAKE(x, TN * d);
    TAKE(y, TN * d);
    TAKE(qkv, TN * 3 * d);
    TAKE(att, TN * d);
    TAKE(h, TN * 4 * d);
    TAKE(out, TN * zpp);
    TAKE(c, (size_t)T * d);
    TAKE(sc, (size_t)T * d);
    TAKE(mod, (size_t)T * 6 * d);
    TAKE(temb, 256);
    TAKE(rope_cos, TN * dh / 2);
    TAKE(rope_sin, TN * dh / 2);
    TAKE(att_scratch, attention_scratch_floats(N, Nk));
#undef TAKE
    (void)p;
    return off;
}

size_t dit_work_floats(const mg_config *c, int T, int N, int Nk) { return dit_layout(NULL, NULL, c, T, N, Nk); }

void dit_work_init(dit_work *w, float *mem, const mg_config *c, int T, int N, int Nk) {
    dit_layout(w, mem, c, T, N, Nk);
    w->T = T, w->N = N, w->Nk = Nk;
    w->rope_frame0 = -1;
    w->rope_T = 0;
}

/* ---- the forward pass --------------------------------------------------------------------- */

/* c_t = t2(silu(t1(temb(sigma_t)))) + prompt[row]; sc_t = silu(c_t). */
static void conditioning(const mg_model *m, dit_work *w, const float *sigma, int prompt, int T) {
    const dit_weights *D = &m->dit;
    int d = m->cfg.d;
    for (int t = 0; t < T; t++) {
        float *c = w->c + (size_t)t * d, *tmp = w->sc + (size_t)t * d;
        timestep_embedding(w->temb, sigma[t]);
        linear_forward(tmp, w->temb, D->t1_w, D->t1_b, 1, 256, d);
        silu_forward(tmp, tmp, d);
        linear_forward(c, tmp, D->t2_w, D->t2_b, 1, d, d);
        add_inplace(c, D->prompt + (size_t)prompt * d, d);
    }
    silu_forward(w->sc, w->c, (size_t)T * d);
}

void dit_forward(const mg_model *m, dit_work *w, const dit_call *a) {
    const mg_config *cf = &m->cfg;
    const dit_weights *D = &m->dit;
    int T = a->T, d = cf->d, Z = cf->z_ch, p = cf->patch, zpp = Z * p * p, H = cf->heads, dh = d / H;
    int Ty = a->lh / p, Tx = a->lw / p, N = Ty * Tx;
    size_t lat = (size_t)a->lh * a->lw * Z, TN = (size_t)T * N, tab = (size_t)N * dh / 2;

    if (w->rope_frame0 != a->frame0 || w->rope_T < T) {
        for (int t = 0; t < T; t++)
            rope_tables(w->rope_cos + t * tab, w->rope_sin + t * tab, a->frame0 + t, Ty, Tx, dh, cf->rope_theta);
        w->rope_frame0 = a->frame0;
        w->rope_T = T;
    }
    conditioning(m, w, a->sigma, a->prompt, T);
    for (int t = 0; t < T; t++)
        patchify_forward(w->tok + t * N * 2 * zpp, a->z + t * lat, a->cond + t * lat, a->lh, a->lw, Z, p);
    linear_forward(w->x, w->tok, D->in_w, D->in_b, (int)TN, 2 * zpp, d);

    for (int l = 0; l < cf->layers; l++) {
        const dit_layer *L = &D->layers[l];
        /* m = ada(silu(c)): shift1, scale1, gate1, shift2, scale2, gate2 */
        linear_forward(w->mod, w->sc, L->ada_w, L->ada_b, T, d, 6 * d);
        for (int t = 0; t < T; t++) {
            const float *mo = w->mod + (size_t)t * 6 * d;
            layernorm_modulate_forward(w->y + t * N * d, w->x + t * N * d, mo, mo + d, N, d);
        }
        linear_forward(w->qkv, w->y, L->qkv_w, L->qkv_b, (int)TN, d, 3 * d);
        for (int t = 0; t < T; t++) {
            float *q = w->qkv + (size_t)t * N * 3 * d;
            rope_forward(q, 3 * d, w->rope_cos + t * tab, w->rope_sin + t * tab, N, H, dh);
            rope_forward(q + d, 3 * d, w->rope_cos + t * tab, w->rope_sin + t * tab, N, H, dh);
        }
        if (a->ring) {
            kv_ring *r = a->ring;
            int slot = kv_ring_current_slot(r);
            size_t layer = (size_t)l * (r->K + 1) * N * d;
            float *k = r->k + layer, *v = r->v + layer;
            for (int i = 0; i < N; i++) {
                memcpy(k + ((size_t)slot * N + i) * d, w->qkv + (size_t)i * 3 * d + d, d * sizeof(float));
                memcpy(v + ((size_t)slot * N + i) * d, w->qkv + (size_t)i * 3 * d + 2 * d, d * sizeof(float));
            }
            if (a->refresh && l == cf->layers - 1) return; /* only the k,v were wanted */
            attention_forward(w->att, w->qkv, 3 * d, k, v, d, w->att_scratch, N, (slot + 1) * N, H, dh);
        } else {
            for (int t = 0; t < T; t++) {
                int first = t - a->window < 0 ? 0 : t - a->window;
                const float *k0 = w->qkv + (size_t)first * N * 3 * d;
                attention_forward(w->att + (size_t)t * N * d, w->qkv + (size_t)t * N * 3 * d, 3 * d, k0 + d,
                                  k0 + 2 * d, 3 * d, w->att_scratch, N, (t + 1 - first) * N, H, dh);
            }
        }
        linear_forward(w->y, w->att, L->proj_w, L->proj_b, (int)TN, d, d);
        for (int t = 0; t < T; t++)
            gated_residual_forward(w->x + t * N * d, w->y + t * N * d, w->mod + (size_t)t * 6 * d + 2 * d, N, d);
        for (int t = 0; t < T; t++) {
            const float *mo = w->mod + (size_t)t * 6 * d;
            layernorm_modulate_forward(w->y + t * N * d, w->x + t * N * d, mo + 3 * d, mo + 4 * d, N, d);
        }
        linear_forward(w->h, w->y, L->fc1_w, L->fc1_b, (int)TN, d, 4 * d);
        gelu_tanh_forward(w->h, w->h, TN * 4 * d);
        linear_forward(w->y, w->h, L->fc2_w, L->fc2_b, (int)TN, 4 * d, d);
        for (int t = 0; t < T; t++)
            gated_residual_forward(w->x + t * N * d, w->y + t * N * d, w->mod + (size_t)t * 6 * d + 5 * d, N, d);
    }
    /* final: (shift, scale) modulation, then the output projection and unpatchify */
    linear_forward(w->mod, w->sc, D->fada_w, D->fada_b, T, d, 2 * d);
    for (int t = 0; t < T; t++) {
        const float *mo = w->mod + (size_t)t * 2 * d;
        layernorm_modulate_forward(w->y + t * N * d, w->x + t * N * d, mo, mo + d, N, d);
    }
    linear_forward(w->out, w->y, D->fout_w, D->fout_b, (int)TN, d, zpp);
    for (int t = 0; t < T; t++) unpatchify_forward(a->v + t * lat, w->out + t * N * zpp, a->lh, a->lw, Z, p);
}

/* ---- sampler ------------------------------------------------------------------------------ */

float sampler_sigma(int i, int steps, float shift) {
    float s = 1.0f - (float)i / (float)steps;
    return shift * s / (1.0f + (shift - 1.0f) * s);
}
