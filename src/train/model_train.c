/* The DiT's training forward and backward over one clip (diffusion forcing: every frame its
 * own noise level, all T frames in one pass, block-causal with window K). The forward is
 * dit_forward's parallel mode written out again, keeping every activation the backward
 * needs; the backward is its reverse, layer by layer, in the same order read upside down.
 * Loss: rectified flow, mean over elements of (v - (ε - x0))^2. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/status.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "train/train.h"

/* ---- views of the DiT's tensors in a flat array ------------------------------------------ */

/* A tensor's place in base (tp->param or tp->grad). Every name exists: the table made them. */
static float *tensor(const train_params *tp, float *base, const char *name) {
    return base + tp->offset[train_params_find(tp, name)];
}

static void dit_ptrs_init(dit_ptrs *p, const train_params *tp, float *base, dit_layer_ptrs *layers) {
    p->in_w = tensor(tp, base, "dit.in.weight"), p->in_b = tensor(tp, base, "dit.in.bias");
    p->t1_w = tensor(tp, base, "dit.t1.weight"), p->t1_b = tensor(tp, base, "dit.t1.bias");
    p->t2_w = tensor(tp, base, "dit.t2.weight"), p->t2_b = tensor(tp, base, "dit.t2.bias");
    p->prompt = tensor(tp, base, "dit.prompt");
    p->fada_w = tensor(tp, base, "dit.final.ada.weight"), p->fada_b = tensor(tp, base, "dit.final.ada.bias");
    p->fout_w = tensor(tp, base, "dit.final.out.weight"), p->fout_b = tensor(tp, base, "dit.final.out.bias");
    p->layers = layers;
    for (int l = 0; l < tp->cfg.layers; l++) {
        char n[64];
        float **field[10] = {&layers[l].ada_w, &layers[l].ada_b, &layers[l].qkv_w, &layers[l].qkv_b,
                             &layers[l].proj_w, &layers[l].proj_b, &layers[l].fc1_w, &layers[l].fc1_b,
                             &layers[l].fc2_w, &layers[l].fc2_b};
        static const char *leaf[10] = {"ada.weight", "ada.bias", "qkv.weight", "qkv.bias", "proj.weight",
                                       "proj.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
        for (int j = 0; j < 10; j++) {
            snprintf(n, sizeof n, "dit.blocks.%d.%s", l, leaf[j]);
            *field[j] = tensor(tp, base, n);
        }
    }
}

/* ---- memory: one arena, laid out by one function (measure with mem == NULL, then place) ---- */

static size_t dit_train_layout(dit_train *dt, float *mem, const mg_config *c, int T, int lh, int lw) {
    int d = c->d, L = c->layers, p = c->patch, zpp = c->z_ch * p * p, dh = d / c->heads;
    size_t N = (size_t)(lh / p) * (lw / p), TN = (size_t)T * N, lat = (size_t)T * lh * lw * c->z_ch;
    size_t off = 0;
    dit_acts *a = &dt->a;
    dit_grads *g = &dt->g;
#define TAKE(ptr, n) ptr = arena_take(mem, &off, (n))
    TAKE(a->z, lat);
    TAKE(a->tok, TN * 2 * zpp);
    TAKE(a->temb, (size_t)T * 256);
    TAKE(a->t1, (size_t)T * d);
    TAKE(a->t1s, (size_t)T * d);
    TAKE(a->c, (size_t)T * d);
    TAKE(a->sc, (size_t)T * d);
    TAKE(a->x, (size_t)(L + 1) * TN * d);
    TAKE(a->mod, (size_t)L * T * 6 * d);
    TAKE(a->y1, (size_t)L * TN * d);
    TAKE(a->qkv, (size_t)L * TN * 3 * d);
    TAKE(a->att, (size_t)L * TN * d);
    TAKE(a->pr, (size_t)L * TN * d);
    TAKE(a->xm, (size_t)L * TN * d);
    TAKE(a->y2, (size_t)L * TN * d);
    TAKE(a->h, (size_t)L * TN * 4 * d);
    TAKE(a->hg, (size_t)L * TN * 4 * d);
    TAKE(a->f, (size_t)L * TN * d);
    TAKE(a->fmod, (size_t)T * 2 * d);
    TAKE(a->yf, TN * d);
    TAKE(a->out, TN * zpp);
    TAKE(a->v, lat);
    TAKE(a->rope_cos, TN * dh / 2);
    TAKE(a->rope_sin, TN * dh / 2);
    TAKE(g->dv, lat);
    TAKE(g->dout, TN * zpp);
    TAKE(g->dx, TN * d);
    TAKE(g->dy, TN * d);
    TAKE(g->dbr, TN * d);
    TAKE(g->datt, TN * d);
    TAKE(g->dqkv, TN * 3 * d);
    TAKE(g->dh, TN * 4 * d);
    TAKE(g->dhg, TN * 4 * d);
    TAKE(g->dmod, (size_t)T * 6 * d);
    TAKE(g->dsc, (size_t)T * d);
    TAKE(g->dc, (size_t)T * d);
    TAKE(g->dt1s, (size_t)T * d);
    TAKE(g->dt1, (size_t)T * d);
    /* a frame's queries see at most T frames of keys */
    TAKE(dt->att_scratch, attention_scratch_floats((int)N, (int)TN));
    TAKE(dt->att_bwd_scratch, attention_backward_scratch_floats((int)N, (int)TN, c->heads));
    float *layers;
    TAKE(layers, (2 * (size_t)L * sizeof(dit_layer_ptrs) + sizeof(float) - 1) / sizeof(float)); /* P, G */
#undef TAKE
    if (mem) {
        dt->P.layers = (dit_layer_ptrs *)layers;
        dt->G.layers = dt->P.layers + L;
    }
    return off;
}

mg_status dit_train_init(dit_train *dt, train_params *tp, int T, int lh, int lw) {
    memset(dt, 0, sizeof *dt);
    const mg_config *c = &tp->cfg;
    if (T < 1 || lh < c->patch || lw < c->patch || lh % c->patch || lw % c->patch)
        return mg_fail(MG_ERR_SHAPE, "dit_train: clip of %d frames of %dx%d latents: expected T >= 1 and "
                       "sizes multiples of the patch (%d)", T, lh, lw, c->patch);
    dt->tp = tp;
    dt->cap_T = T, dt->cap_lh = lh, dt->cap_lw = lw;
    size_t floats = dit_train_layout(dt, NULL, c, T, lh, lw);
    dt->mem_bytes = floats * sizeof(float);
    dt->mem = aligned_alloc(64, dt->mem_bytes);
    if (!dt->mem)
        return mg_fail(MG_ERR_NOMEM, "dit_train: cannot allocate %zu bytes of activations", dt->mem_bytes);
    /* NaN everywhere: a read of something the forward did not write shows in the loss */
    for (size_t i = 0; i < floats; i++) dt->mem[i] = NAN;
    dit_train_layout(dt, dt->mem, c, T, lh, lw);
    dit_ptrs_init(&dt->P, tp, tp->param, dt->P.layers);
    dit_ptrs_init(&dt->G, tp, tp->grad, dt->G.layers);
    return MG_OK;
}

void dit_train_free(dit_train *dt) {
    free(dt->mem);
    memset(dt, 0, sizeof *dt);
}

/* ---- forward ------------------------------------------------------------------------------ */

mg_status dit_train_forward(dit_train *dt, const dit_clip *clip, float *loss) {
    const mg_config *cf = &dt->tp->cfg;
    const dit_ptrs *P = &dt->P;
    dit_acts *a = &dt->a;
    int T = clip->T, d = cf->d, Z = cf->z_ch, p = cf->patch, zpp = Z * p * p, H = cf->heads, dh = d / H;
    if (T < 1 || T > dt->cap_T || clip->lh % p || clip->lw % p || clip->lh < p || clip->lw < p ||
        (size_t)clip->lh * clip->lw > (size_t)dt->cap_lh * dt->cap_lw)
        return mg_fail(MG_ERR_SHAPE, "dit_train_forward: clip of %d frames of %dx%d latents does not fit "
                       "the %d frames of %dx%d it was sized for", T, clip->lh, clip->lw, dt->cap_T,
                       dt->cap_lh, dt->cap_lw);
    if (clip->prompt < 0 || clip->prompt >= dt->tp->n_prompts || clip->window < 0)
        return mg_fail(MG_ERR_ARG, "dit_train_forward: prompt row %d (of %d), window %d", clip->prompt,
                       dt->tp->n_prompts, clip->window);
    int Ty = clip->lh / p, Tx = clip->lw / p, N = Ty * Tx;
    size_t lat = (size_t)clip->lh * clip->lw * Z, TN = (size_t)T * N, tab = (size_t)N * dh / 2;
    size_t Ld = TN * d; /* one layer's (TN, d) block */
    dt->clip = *clip;

    /* x_σ = (1-σ) x0 + σ ε, per frame */
    for (int t = 0; t < T; t++) {
        float s = clip->sigma[t];
        const float *x0 = (clip->x0_in ? clip->x0_in : clip->x0) + t * lat, *e = clip->eps + t * lat;
        float *z = a->z + t * lat;
        for (size_t i = 0; i < lat; i++) z[i] = (1.0f - s) * x0[i] + s * e[i];
    }
    for (int t = 0; t < T; t++) rope_tables(a->rope_cos + t * tab, a->rope_sin + t * tab, t, Ty, Tx, dh, cf->rope_theta);

    /* conditioning: c = t2(silu(t1(temb(σ)))) + prompt[row]; sc = silu(c) */
    for (int t = 0; t < T; t++) timestep_embedding(a->temb + (size_t)t * 256, clip->sigma[t]);
    linear_forward(a->t1, a->temb, P->t1_w, P->t1_b, T, 256, d);
    silu_forward(a->t1s, a->t1, (size_t)T * d);
    linear_forward(a->c, a->t1s, P->t2_w, P->t2_b, T, d, d);
    for (int t = 0; t < T; t++) add_inplace(a->c + (size_t)t * d, P->prompt + (size_t)clip->prompt * d, d);
    silu_forward(a->sc, a->c, (size_t)T * d);

    /* tokens: patchify(concat[z, cond]), then dit.in */
    for (int t = 0; t < T; t++)
        patchify_forward(a->tok + t * N * 2 * zpp, a->z + t * lat, clip->cond ? clip->cond + t * lat : NULL,
                         clip->lh, clip->lw, Z, p);
    linear_forward(a->x, a->tok, P->in_w, P->in_b, (int)TN, 2 * zpp, d);

    for (int l = 0; l < cf->layers; l++) {
        const dit_layer_ptrs *W = &P->layers[l];
        float *x = a->x + l * Ld, *mod = a->mod + (size_t)l * T * 6 * d, *y1 = a->y1 + l * Ld;
        float *qkv = a->qkv + l * TN * 3 * d, *att = a->att + l * Ld, *pr = a->pr + l * Ld;
        float *xm = a->xm + l * Ld, *y2 = a->y2 + l * Ld, *h = a->h + l * TN * 4 * d;
        float *hg = a->hg + l * TN * 4 * d, *f = a->f + l * Ld, *xo = a->x + (l + 1) * Ld;
        /* mod = ada(sc): shift1, scale1, gate1, shift2, scale2, gate2 (T, 6d) */
        linear_forward(mod, a->sc, W->ada_w, W->ada_b, T, d, 6 * d);
        for (int t = 0; t < T; t++) {
            const float *mo = mod + (size_t)t * 6 * d;
            layernorm_modulate_forward(y1 + t * N * d, x + t * N * d, mo, mo + d, N, d);
        }
        linear_forward(qkv, y1, W->qkv_w, W->qkv_b, (int)TN, d, 3 * d);
        for (int t = 0; t < T; t++) {
            float *q = qkv + (size_t)t * N * 3 * d;
            rope_forward(q, 3 * d, a->rope_cos + t * tab, a->rope_sin + t * tab, N, H, dh);
            rope_forward(q + d, 3 * d, a->rope_cos + t * tab, a->rope_sin + t * tab, N, H, dh);
        }
        /* block-causal: frame t's queries see the keys of frames first..t */
        for (int t = 0; t < T; t++) {
            int first = t - clip->window < 0 ? 0 : t - clip->window;
            const float *k0 = qkv + (size_t)first * N * 3 * d;
            attention_forward(att + (size_t)t * N * d, qkv + (size_t)t * N * 3 * d, 3 * d, k0 + d, k0 + 2 * d,
                              3 * d, dt->att_scratch, N, (t + 1 - first) * N, H, dh);
        }
        linear_forward(pr, att, W->proj_w, W->proj_b, (int)TN, d, d);
        /* xm = x + gate1 * pr */
        memcpy(xm, x, Ld * sizeof(float));
        for (int t = 0; t < T; t++)
            gated_residual_forward(xm + t * N * d, pr + t * N * d, mod + (size_t)t * 6 * d + 2 * d, N, d);
        for (int t = 0; t < T; t++) {
            const float *mo = mod + (size_t)t * 6 * d;
            layernorm_modulate_forward(y2 + t * N * d, xm + t * N * d, mo + 3 * d, mo + 4 * d, N, d);
        }
        linear_forward(h, y2, W->fc1_w, W->fc1_b, (int)TN, d, 4 * d);
        gelu_tanh_forward(hg, h, TN * 4 * d);
        linear_forward(f, hg, W->fc2_w, W->fc2_b, (int)TN, 4 * d, d);
        /* x_{l+1} = xm + gate2 * f */
        memcpy(xo, xm, Ld * sizeof(float));
        for (int t = 0; t < T; t++)
            gated_residual_forward(xo + t * N * d, f + t * N * d, mod + (size_t)t * 6 * d + 5 * d, N, d);
    }

    /* final layer: (shift, scale), output projection, unpatchify */
    const float *xL = a->x + cf->layers * Ld;
    linear_forward(a->fmod, a->sc, P->fada_w, P->fada_b, T, d, 2 * d);
    for (int t = 0; t < T; t++) {
        const float *mo = a->fmod + (size_t)t * 2 * d;
        layernorm_modulate_forward(a->yf + t * N * d, xL + t * N * d, mo, mo + d, N, d);
    }
    linear_forward(a->out, a->yf, P->fout_w, P->fout_b, (int)TN, d, zpp);
    for (int t = 0; t < T; t++) unpatchify_forward(a->v + t * lat, a->out + t * N * zpp, clip->lh, clip->lw, Z, p);

    /* loss: mean of (v - (ε - x0))^2 over all T*lat elements, summed in float64 */
    double sum = 0.0;
    for (size_t i = 0; i < T * lat; i++) {
        double r = (double)a->v[i] - ((double)clip->eps[i] - clip->x0[i]);
        sum += r * r;
    }
    dt->loss = sum / (double)(T * lat);
    dt->have_forward = 1;
    *loss = (float)dt->loss;
    return MG_OK;
}

/* ---- backward ----------------------------------------------------------------------------- */

static void zero(float *x, size_t n) { memset(x, 0, n * sizeof(float)); }

mg_status dit_train_backward(dit_train *dt, float scale) {
    if (!dt->have_forward) return mg_fail(MG_ERR_ARG, "dit_train_backward: no forward to go back through");
    const mg_config *cf = &dt->tp->cfg;
    const dit_ptrs *P = &dt->P, *G = &dt->G;
    const dit_acts *a = &dt->a;
    const dit_grads *g = &dt->g;
    const dit_clip *clip = &dt->clip;
    int T = clip->T, d = cf->d, Z = cf->z_ch, p = cf->patch, zpp = Z * p * p, H = cf->heads, dh = d / H;
    int Ty = clip->lh / p, Tx = clip->lw / p, N = Ty * Tx;
    size_t lat = (size_t)clip->lh * clip->lw * Z, TN = (size_t)T * N, tab = (size_t)N * dh / 2;
    size_t Ld = TN * d;

    /* d loss / d v = 2 (v - (ε - x0)) / n, times the caller's scale */
    float k = (float)(2.0 * scale / (double)(T * lat));
    for (size_t i = 0; i < T * lat; i++) g->dv[i] = k * (a->v[i] - (clip->eps[i] - clip->x0[i]));
    if (dt->dv_add)
        for (size_t i = 0; i < T * lat; i++) g->dv[i] += dt->dv_add[i];

    /* final layer, reversed */
    zero(g->dout, TN * zpp);
    for (int t = 0; t < T; t++) unpatchify_backward(g->dout + t * N * zpp, g->dv + t * lat, clip->lh, clip->lw, Z, p);
    zero(g->dy, Ld);
    linear_backward(g->dy, G->fout_w, G->fout_b, g->dout, a->yf, P->fout_w, (int)TN, d, zpp);
    const float *xL = a->x + cf->layers * Ld;
    zero(g->dx, Ld);
    zero(g->dmod, (size_t)T * 2 * d);
    for (int t = 0; t < T; t++) {
        float *dm = g->dmod + (size_t)t * 2 * d;
        layernorm_modulate_backward(g->dx + t * N * d, dm, dm + d, g->dy + t * N * d, xL + t * N * d,
                                    a->fmod + (size_t)t * 2 * d + d, N, d);
    }
    zero(g->dsc, (size_t)T * d);
    linear_backward(g->dsc, G->fada_w, G->fada_b, g->dmod, a->sc, P->fada_w, T, d, 2 * d);

    /* blocks, last to first; g->dx is the gradient of the residual stream leaving block l */
    for (int l = cf->layers - 1; l >= 0; l--) {
        const dit_layer_ptrs *W = &P->layers[l], *GW = &G->layers[l];
        const float *x = a->x + l * Ld, *mod = a->mod + (size_t)l * T * 6 * d, *y1 = a->y1 + l * Ld;
        const float *qkv = a->qkv + l * TN * 3 * d, *att = a->att + l * Ld, *pr = a->pr + l * Ld;
        const float *xm = a->xm + l * Ld, *y2 = a->y2 + l * Ld, *h = a->h + l * TN * 4 * d;
        const float *hg = a->hg + l * TN * 4 * d, *f = a->f + l * Ld;
        zero(g->dmod, (size_t)T * 6 * d);

        /* x_{l+1} = xm + gate2 * f: dx passes through to xm */
        zero(g->dbr, Ld);
        for (int t = 0; t < T; t++)
            gated_residual_backward(g->dbr + t * N * d, g->dmod + (size_t)t * 6 * d + 5 * d, g->dx + t * N * d,
                                    f + t * N * d, mod + (size_t)t * 6 * d + 5 * d, N, d);
        /* f = fc2(gelu(fc1(y2))) */
        zero(g->dhg, TN * 4 * d);
        linear_backward(g->dhg, GW->fc2_w, GW->fc2_b, g->dbr, hg, W->fc2_w, (int)TN, 4 * d, d);
        zero(g->dh, TN * 4 * d);
        gelu_tanh_backward(g->dh, g->dhg, h, TN * 4 * d);
        zero(g->dy, Ld);
        linear_backward(g->dy, GW->fc1_w, GW->fc1_b, g->dh, y2, W->fc1_w, (int)TN, d, 4 * d);
        /* y2 = LN(xm)*(1+scale2)+shift2: dx becomes the gradient of xm */
        for (int t = 0; t < T; t++) {
            float *dm = g->dmod + (size_t)t * 6 * d;
            layernorm_modulate_backward(g->dx + t * N * d, dm + 3 * d, dm + 4 * d, g->dy + t * N * d,
                                        xm + t * N * d, mod + (size_t)t * 6 * d + 4 * d, N, d);
        }
        /* xm = x + gate1 * pr: dx passes through to x */
        zero(g->dbr, Ld);
        for (int t = 0; t < T; t++)
            gated_residual_backward(g->dbr + t * N * d, g->dmod + (size_t)t * 6 * d + 2 * d, g->dx + t * N * d,
                                    pr + t * N * d, mod + (size_t)t * 6 * d + 2 * d, N, d);
        zero(g->datt, Ld);
        linear_backward(g->datt, GW->proj_w, GW->proj_b, g->dbr, att, W->proj_w, (int)TN, d, d);
        /* attention: a frame's keys collect gradient from every later frame that sees them, so
         * all frames go through before RoPE is undone */
        zero(g->dqkv, TN * 3 * d);
        for (int t = 0; t < T; t++) {
            int first = t - clip->window < 0 ? 0 : t - clip->window;
            const float *k0 = qkv + (size_t)first * N * 3 * d;
            float *dk0 = g->dqkv + (size_t)first * N * 3 * d;
            attention_backward(g->dqkv + (size_t)t * N * 3 * d, 3 * d, dk0 + d, dk0 + 2 * d, 3 * d,
                               g->datt + (size_t)t * N * d, qkv + (size_t)t * N * 3 * d, 3 * d, k0 + d, k0 + 2 * d,
                               3 * d, dt->att_bwd_scratch, N, (t + 1 - first) * N, H, dh);
        }
        for (int t = 0; t < T; t++) {
            float *dq = g->dqkv + (size_t)t * N * 3 * d;
            rope_backward(dq, 3 * d, a->rope_cos + t * tab, a->rope_sin + t * tab, N, H, dh);
            rope_backward(dq + d, 3 * d, a->rope_cos + t * tab, a->rope_sin + t * tab, N, H, dh);
        }
        zero(g->dy, Ld);
        linear_backward(g->dy, GW->qkv_w, GW->qkv_b, g->dqkv, y1, W->qkv_w, (int)TN, d, 3 * d);
        /* y1 = LN(x)*(1+scale1)+shift1: dx becomes the gradient of x_l */
        for (int t = 0; t < T; t++) {
            float *dm = g->dmod + (size_t)t * 6 * d;
            layernorm_modulate_backward(g->dx + t * N * d, dm, dm + d, g->dy + t * N * d, x + t * N * d,
                                        mod + (size_t)t * 6 * d + d, N, d);
        }
        /* mod = ada(sc) */
        linear_backward(g->dsc, GW->ada_w, GW->ada_b, g->dmod, a->sc, W->ada_w, T, d, 6 * d);
    }

    /* x_0 = dit.in(tok); the tokens are data */
    linear_backward(NULL, G->in_w, G->in_b, g->dx, a->tok, P->in_w, (int)TN, 2 * zpp, d);
    /* sc = silu(c); c = t2(t1s) + prompt[row]; t1s = silu(t1); t1 = dit.t1(temb), temb data */
    zero(g->dc, (size_t)T * d);
    silu_backward(g->dc, g->dsc, a->c, (size_t)T * d);
    float *dprompt = G->prompt + (size_t)clip->prompt * d;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < d; j++) dprompt[j] += g->dc[(size_t)t * d + j];
    zero(g->dt1s, (size_t)T * d);
    linear_backward(g->dt1s, G->t2_w, G->t2_b, g->dc, a->t1s, P->t2_w, T, d, d);
    zero(g->dt1, (size_t)T * d);
    silu_backward(g->dt1, g->dt1s, a->t1, (size_t)T * d);
    linear_backward(NULL, G->t1_w, G->t1_b, g->dt1, a->temb, P->t1_w, T, 256, d);
    return MG_OK;
}
