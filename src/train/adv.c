/* The PatchGAN discriminator of `mirage train tae --adv` and its hinge losses: see adv.h.
 * One arena for the maps (measured, then placed), D's tensors in a train_params of their own. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/rng.h"
#include "core/status.h"
#include "ops/ops.h"
#include "ops/cpu/parallel.h"
#include "ops/ops_backward.h"
#include "train/adv.h"

#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

static const int adv_co[ADV_LAYERS] = {ADV_CH, ADV_CH, ADV_CH, 1};
static const int adv_stride[ADV_LAYERS] = {2, 2, 2, 1};

/* D's tensors as a train_params: params.c's layout (train_params_alloc) over a table of its
 * own instead of a model's. */
/* input channels of layer l: the image's (3) or the latent's for the first, D's width after */
static int adv_ci(const adv_disc *ad, int l) { return l ? ADV_CH : ad->cin; }

static mg_status disc_params(const adv_disc *ad, train_params *dp, uint64_t seed) {
    memset(dp, 0, sizeof *dp);
    int n = 2 * ADV_LAYERS;
    wdesc tab[2 * ADV_LAYERS];
    memset(tab, 0, sizeof tab);
    for (int l = 0; l < ADV_LAYERS; l++) {
        wdesc *w = &tab[2 * l], *b = &tab[2 * l + 1];
        snprintf(w->name, sizeof w->name, "disc.c%d.weight", l);
        w->rank = 4, w->shape[0] = adv_co[l], w->shape[1] = adv_ci(ad, l), w->shape[2] = 3, w->shape[3] = 3;
        snprintf(b->name, sizeof b->name, "disc.c%d.bias", l);
        b->rank = 1, b->shape[0] = adv_co[l];
        w->fan_in = b->fan_in = adv_ci(ad, l) * 9;
    }
    MG_TRY(train_params_alloc(dp, tab, n, "adv", "the discriminator"));
    dp->dit_first = n; /* no DiT: every tensor is "the trained network" */
    /* the model's init (model.c): exact uniform draws, so a seed gives the same D everywhere */
    for (int i = 0; i < n; i++) {
        float bound = 1.0f / sqrtf((float)tab[i].fan_in);
        mg_rng r;
        mg_rng_seed(&r, seed ^ mg_fnv1a64(tab[i].name, strlen(tab[i].name)));
        float *p = dp->param + dp->offset[i];
        for (size_t k = 0; k < train_params_numel(dp, i); k++) p[k] = (2.0f * mg_rng_uniform(&r) - 1.0f) * bound;
    }
    memcpy(dp->ema, dp->param, dp->count * sizeof(float));
    return MG_OK;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t adv_layout(adv_disc *ad, float *mem, int H, int W) {
    size_t off = 0;
#define TAKE(ptr, n) ptr = arena_take(mem, &off, (n))
    size_t fs = 0, bs = 0;
    int h = H, w = W;
    for (int l = 0; l < ADV_LAYERS; l++) {
        fs = max_sz(fs, conv3x3_scratch_floats(h, w, adv_ci(ad, l), adv_co[l], adv_stride[l]));
        bs = max_sz(bs, conv3x3_backward_scratch_floats(h, w, adv_ci(ad, l), adv_co[l], adv_stride[l]));
        h /= adv_stride[l], w /= adv_stride[l];
        TAKE(ad->act[l], (size_t)h * w * adv_co[l]);
        TAKE(ad->cv[l].wp, conv3x3_packed_floats(adv_ci(ad, l), adv_co[l]));
    }
    for (int k = 0; k < 3; k++) TAKE(ad->g[k], (size_t)(H / 2) * (W / 2) * ADV_CH);
    TAKE(ad->dlog, (size_t)(H / 8) * (W / 8));
    TAKE(ad->drec, (size_t)H * W * ad->cin);
    TAKE(ad->gw_dump, ad->dp.count);
    TAKE(ad->fake, (size_t)H * W * ad->cin);
    TAKE(ad->fwd_scratch, fs);
    TAKE(ad->bwd_scratch, bs);
#undef TAKE
    return off;
}

mg_status adv_init(adv_disc *ad, uint64_t seed, int H, int W, int cin) {
    memset(ad, 0, sizeof *ad);
    if (H < 8 || W < 8 || H % 8 || W % 8)
        return mg_fail(MG_ERR_SHAPE, "adv: image %dx%d: expected sizes that are multiples of 8", W, H);
    if (cin < 1 || cin > ADV_CH) return mg_fail(MG_ERR_SHAPE, "adv: %d input channels: expected 1..%d", cin, ADV_CH);
    ad->cin = cin;
    MG_TRY(disc_params(ad, &ad->dp, seed));
    for (int l = 0; l < ADV_LAYERS; l++) {
        tae_conv *cv = &ad->cv[l];
        cv->w = ad->dp.param + ad->dp.offset[2 * l];
        cv->gw = ad->dp.grad + ad->dp.offset[2 * l];
        cv->b = ad->dp.param + ad->dp.offset[2 * l + 1];
        cv->gb = ad->dp.grad + ad->dp.offset[2 * l + 1];
        cv->ci = adv_ci(ad, l), cv->co = adv_co[l];
    }
    ad->cap_H = H, ad->cap_W = W;
    size_t floats = adv_layout(ad, NULL, H, W);
    ad->mem_bytes = floats * sizeof(float);
    if (!(ad->mem = aligned_alloc(64, ad->mem_bytes))) {
        train_params_free(&ad->dp);
        return mg_fail(MG_ERR_NOMEM, "adv: cannot allocate %zu bytes of activations", ad->mem_bytes);
    }
    for (size_t i = 0; i < floats; i++) ad->mem[i] = NAN; /* a map read before it is written shows */
    adv_layout(ad, ad->mem, H, W);
    return MG_OK;
}

void adv_free(adv_disc *ad) {
    for (int j = 0; j < ad->n_work; j++) adv_free(&ad->work[j]);
    free(ad->work);
    free(ad->mem);
    train_params_free(&ad->dp);
    memset(ad, 0, sizeof *ad);
}

static mg_status check_size(const adv_disc *ad, int H, int W) {
    if (H < 8 || W < 8 || H % 8 || W % 8 || (size_t)H * W > (size_t)ad->cap_H * ad->cap_W)
        return mg_fail(MG_ERR_SHAPE, "adv: image %dx%d: expected multiples of 8 within the %dx%d it was sized for", W,
                       H, ad->cap_W, ad->cap_H);
    return MG_OK;
}

/* D's layers on x (the packed weights must be current) */
static void disc_forward(adv_disc *ad, const float *x, int H, int W) {
    const float *in = x;
    int h = H, w = W;
    for (int l = 0; l < ADV_LAYERS; l++) {
        const tae_conv *cv = &ad->cv[l];
        conv3x3_forward(ad->act[l], in, cv->wp, cv->b, ad->fwd_scratch, h, w, cv->ci, cv->co, adv_stride[l]);
        h /= adv_stride[l], w /= adv_stride[l];
        if (l < ADV_LAYERS - 1) leaky_relu_forward(ad->act[l], ad->act[l], ADV_SLOPE, (size_t)h * w * cv->co);
        in = ad->act[l];
    }
}

static void disc_pack(adv_disc *ad) {
    for (int l = 0; l < ADV_LAYERS; l++) conv3x3_pack(ad->cv[l].wp, ad->cv[l].w, ad->cv[l].ci, ad->cv[l].co);
}

/* The reverse of disc_forward(x) from ad->dlog: weight gradients into D's grads (weights = 1)
 * or into gw_dump (0: the generator pass, which must not train D); dx (H, W, cin) += the input's
 * gradient unless NULL. */
static void disc_backward(adv_disc *ad, const float *x, float *dx, int weights, int H, int W) {
    int hs[ADV_LAYERS + 1] = {H}, ws[ADV_LAYERS + 1] = {W};
    for (int l = 0; l < ADV_LAYERS; l++) hs[l + 1] = hs[l] / adv_stride[l], ws[l + 1] = ws[l] / adv_stride[l];
    const float *gout = ad->dlog;
    float *gw = ad->gw_dump;
    if (!weights) memset(gw, 0, ad->dp.count * sizeof(float));
    for (int l = ADV_LAYERS - 1; l >= 0; l--) {
        const tae_conv *cv = &ad->cv[l];
        float *dw = weights ? cv->gw : gw + ad->dp.offset[2 * l], *db = weights ? cv->gb : gw + ad->dp.offset[2 * l + 1];
        const float *in = l == 0 ? x : ad->act[l - 1];
        if (l > 0) {
            /* t: the gradient of act[l-1] (after its LeakyReLU); din: through it, the gradient
             * of conv l-1's output, which the next layer down goes back from */
            float *t = ad->g[0] == gout ? ad->g[1] : ad->g[0];
            float *din = ad->g[2] == gout ? ad->g[1] : ad->g[2];
            size_t n = (size_t)hs[l] * ws[l] * ADV_CH;
            memset(t, 0, n * sizeof(float));
            conv3x3_backward(t, dw, db, gout, in, cv->w, ad->bwd_scratch, hs[l], ws[l], cv->ci, cv->co, adv_stride[l]);
            memset(din, 0, n * sizeof(float));
            leaky_relu_backward(din, t, ad->act[l - 1], ADV_SLOPE, n);
            gout = din;
        } else {
            conv3x3_backward(dx, dw, db, gout, in, cv->w, ad->bwd_scratch, hs[0], ws[0], cv->ci, cv->co, adv_stride[0]);
        }
    }
}

mg_status adv_forward(adv_disc *ad, const float *x, int H, int W) {
    MG_TRY(check_size(ad, H, W));
    disc_pack(ad);
    disc_forward(ad, x, H, W);
    return MG_OK;
}

mg_status adv_image(adv_disc *ad, const float *img, const float *rec, int H, int W, float scale, float w_gen,
                    double *ld, adv_stats *st) {
    MG_TRY(check_size(ad, H, W));
    disc_pack(ad); /* D changed since the last step */
    size_t np = (size_t)(H / 8) * (W / 8);
    const float *lg = ad->act[ADV_LAYERS - 1];
    double lr = 0.0, lf = 0.0, mf = 0.0;
    long correct = 0;

    /* real: relu(1 - l), gradient -1 where l < 1 (0 at the kink, as torch's relu) */
    disc_forward(ad, img, H, W);
    for (size_t p = 0; p < np; p++) {
        lr += lg[p] < 1.0f ? 1.0 - lg[p] : 0.0;
        correct += lg[p] > 0.0f;
        ad->dlog[p] = lg[p] < 1.0f ? (float)(-(double)scale / (double)np) : 0.0f;
    }
    disc_backward(ad, img, NULL, 1, H, W);

    /* fake: relu(1 + l), gradient +1 where l > -1; rec is a constant for D */
    disc_forward(ad, rec, H, W);
    for (size_t p = 0; p < np; p++) {
        lf += lg[p] > -1.0f ? 1.0 + lg[p] : 0.0;
        mf += lg[p];
        correct += lg[p] < 0.0f;
        ad->dlog[p] = lg[p] > -1.0f ? (float)((double)scale / (double)np) : 0.0f;
    }
    disc_backward(ad, rec, NULL, 1, H, W);

    /* the generator: d(-w mean l)/drec through the same D (the maps of the fake pass are
     * still in place: its backward reads, never writes, them) */
    if (w_gen != 0.0f) {
        float k = (float)(-(double)scale * w_gen / (double)np);
        for (size_t p = 0; p < np; p++) ad->dlog[p] = k;
        memset(ad->drec, 0, (size_t)H * W * ad->cin * sizeof(float));
        disc_backward(ad, rec, ad->drec, 0, H, W);
    }
    *ld = (lr + lf) / (double)np;
    if (st) {
        st->ld += *ld;
        st->g += -mf / (double)np;
        st->correct += correct;
        st->total += 2 * (long)np;
    }
    return MG_OK;
}

/* adv_clips' workers: copies of D (their own maps and gradients) that take frames side by side */
static mg_status workers(adv_disc *ad, int k) {
    if (ad->n_work >= k) return MG_OK;
    adv_disc *w = realloc(ad->work, (size_t)k * sizeof *w);
    if (!w) return mg_fail(MG_ERR_NOMEM, "adv: out of memory for %d workers", k);
    ad->work = w;
    for (; ad->n_work < k; ad->n_work++) MG_TRY(adv_init(&w[ad->n_work], 0, ad->cap_H, ad->cap_W, ad->cin));
    return MG_OK;
}

mg_status adv_clips(adv_disc *ad, const dit_clip *c, int n, const float *v, float *dv_add, float scale, float w_gen,
                    adv_stats *st) {
    const int T = c[0].T, H = c[0].lh, W = c[0].lw;
    const size_t lat = (size_t)H * W * ad->cin;
    MG_TRY(check_size(ad, H, W));
    memset(dv_add, 0, (size_t)n * T * lat * sizeof(float)); /* the history frames, and all of it at W = 0 */
    int nj = 0;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < T; t++) nj += c[i].sigma[t] >= ADV_SIGMA_MIN;
    if (!nj) return MG_OK;
    int k = 1;
#ifdef MG_HAVE_OPENMP
    k = omp_get_max_threads();
#endif
    k = k < nj ? k : nj;
    k = k < ADV_MAX_WORKERS ? k : ADV_MAX_WORKERS;
    MG_TRY(workers(ad, k));
    for (int j = 0; j < k; j++) {
        memcpy(ad->work[j].dp.param, ad->dp.param, ad->dp.count * sizeof(float));
        train_zero_grad(&ad->work[j].dp, 0, ad->dp.n_tensors);
        memset(&ad->work[j].st, 0, sizeof ad->work[j].st);
    }
    /* judged frame q (in clip, frame order) goes to worker q mod k: the same split, and so the
     * same sums, for the same thread count */
    MG_OMP(omp parallel for num_threads(k) schedule(static, 1))
    for (int j = 0; j < k; j++) {
        adv_disc *wk = &ad->work[j];
        int q = 0;
        for (int i = 0; i < n; i++)
            for (int t = 0; t < T; t++) {
                const float s = c[i].sigma[t];
                if (s < ADV_SIGMA_MIN || q++ % k != j) continue;
                size_t o = ((size_t)i * T + t) * lat;
                const float *x0 = c[i].x0 + t * lat, *eps = c[i].eps + t * lat, *vt = v + o;
                /* the one-step estimate x0 - sigma * (v - (eps - x0)): x0 itself where v is exact */
                for (size_t e = 0; e < lat; e++) wk->fake[e] = x0[e] - s * (vt[e] - (eps[e] - x0[e]));
                double ld;
                adv_image(wk, x0, wk->fake, H, W, scale, w_gen, &ld, &wk->st); /* sizes checked above */
                if (w_gen != 0.0f)
                    for (size_t e = 0; e < lat; e++) dv_add[o + e] = -s * wk->drec[e];
                wk->st.frames++;
            }
    }
    for (int j = 0; j < k; j++) { /* in worker order */
        const adv_disc *wk = &ad->work[j];
        for (size_t e = 0; e < ad->dp.count; e++) ad->dp.grad[e] += wk->dp.grad[e];
        if (st) {
            st->ld += wk->st.ld, st->g += wk->st.g, st->frames += wk->st.frames;
            st->correct += wk->st.correct, st->total += wk->st.total;
        }
    }
    return MG_OK;
}
