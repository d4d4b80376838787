/* The autoencoder's training forward and backward (stage 1): rec = dec(enc(img)), loss
 * L1 + L2. The forward is tae_encode + tae_decode (src/model/tae.c) written out again so that
 * every map the backward needs stays in memory; the backward is its reverse, block by block.
 * The gradient of the latent flows from the decoder into the encoder: both train together,
 * unless the encoder is frozen (--freeze-encoder), when the backward ends at the decoder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/status.h"
#include "ops/ops.h"
#include "ops/ops_backward.h"
#include "train/train.h"

/* ---- the convs: tensors found by name, packed copies in the arena ------------------------- */

static void conv_bind(tae_conv *cv, train_params *tp, const char *name, int bias) {
    char n[64];
    snprintf(n, sizeof n, "%s.weight", name);
    int i = train_params_find(tp, n); /* every name exists: the weight table made them */
    cv->w = tp->param + tp->offset[i];
    cv->gw = tp->grad + tp->offset[i];
    cv->co = (int)tp->table[i].shape[0];
    cv->ci = (int)tp->table[i].shape[1];
    cv->b = NULL, cv->gb = NULL;
    if (bias) {
        snprintf(n, sizeof n, "%s.bias", name);
        i = train_params_find(tp, n);
        cv->b = tp->param + tp->offset[i];
        cv->gb = tp->grad + tp->offset[i];
    }
}

/* Calls f on every conv, in file order. */
#define TAE_FOR_EACH_CONV(tt, f)                                                   \
    do {                                                                           \
        f(&(tt)->enc_in, "enc.in", 1);                                             \
        for (int i_ = 0; i_ < MG_TAE_BLOCKS; i_++) {                               \
            char n_[48];                                                           \
            if (i_ == 1 || i_ == 4 || i_ == 7) {                                   \
                snprintf(n_, sizeof n_, "enc.down%d", i_ / 3 + 1);                 \
                f(&(tt)->enc_down[i_ / 3], n_, 0);                                 \
            }                                                                      \
            for (int j_ = 0; j_ < 3; j_++) {                                       \
                snprintf(n_, sizeof n_, "enc.b%d.c%d", i_, j_ + 1);                \
                f(&(tt)->enc_b[i_][j_], n_, 1);                                    \
            }                                                                      \
        }                                                                          \
        f(&(tt)->enc_out, "enc.out", 1);                                           \
        f(&(tt)->dec_in, "dec.in", 1);                                             \
        for (int i_ = 0; i_ < MG_TAE_BLOCKS; i_++) {                               \
            char n_[48];                                                           \
            if (i_ == 3 || i_ == 6 || i_ == 9) {                                   \
                snprintf(n_, sizeof n_, "dec.up%d", i_ / 3);                       \
                f(&(tt)->dec_up[i_ / 3 - 1], n_, 0);                               \
            }                                                                      \
            for (int j_ = 0; j_ < 3; j_++) {                                       \
                snprintf(n_, sizeof n_, "dec.b%d.c%d", i_, j_ + 1);                \
                f(&(tt)->dec_b[i_][j_], n_, 1);                                    \
            }                                                                      \
        }                                                                          \
        f(&(tt)->dec_out, "dec.out", 1);                                           \
    } while (0)

/* ---- memory: one arena, laid out by one function (measure with mem == NULL, then place) ---- */

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t tae_train_layout(tae_train *tt, float *mem, const mg_config *cf, int H, int W) {
    int c = cf->tae_ch, Z = cf->z_ch;
    size_t off = 0, full = (size_t)H * W * c;
    tae_acts *a = &tt->a;
#define TAKE(ptr, n) ptr = arena_take(mem, &off, (n))
    /* the encoder: stage s (0..3) runs at H >> s */
    TAKE(a->e_in, full);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        int s = i == 0 ? 0 : (i - 1) / 3 + 1;
        if (i == 1 || i == 4 || i == 7) TAKE(a->e_down[i / 3], full >> (2 * s));
        for (int j = 0; j < 3; j++) TAKE(a->e_blk[i][j], full >> (2 * s));
    }
    TAKE(a->lat, (size_t)(H / 8) * (W / 8) * Z);
    /* the decoder: block i runs at H/8 << (i/3) */
    TAKE(a->d_in, full >> 6);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        int s = 3 - i / 3; /* H >> s */
        if (i == 3 || i == 6 || i == 9) {
            TAKE(a->d_upx[i / 3 - 1], full >> (2 * s));
            TAKE(a->d_up[i / 3 - 1], full >> (2 * s));
        }
        for (int j = 0; j < 3; j++) TAKE(a->d_blk[i][j], full >> (2 * s));
    }
    TAKE(a->rec, (size_t)H * W * 3);
    for (int k = 0; k < 4; k++) TAKE(tt->gbuf[k], full);
    TAKE(tt->dlat, (size_t)(H / 8) * (W / 8) * Z);
    TAKE(tt->drec, (size_t)H * W * 3);
    TAKE(tt->dlap, (size_t)H * W * 3);
    /* conv scratch: the largest over every shape the network has */
    size_t fs = 0, bs = 0;
    for (int s = 0; s <= 3; s++) {
        int h = H >> s, w = W >> s;
        fs = max_sz(fs, conv3x3_scratch_floats(h, w, c, c, 1));
        bs = max_sz(bs, conv3x3_backward_scratch_floats(h, w, c, c, 1));
        if (s < 3) {
            fs = max_sz(fs, conv3x3_scratch_floats(h, w, c, c, 2));
            bs = max_sz(bs, conv3x3_backward_scratch_floats(h, w, c, c, 2));
        }
    }
    int io[4][2] = {{3, c}, {c, 3}, {c, Z}, {Z, c}}; /* enc.in, dec.out at H; enc.out, dec.in at H/8 */
    for (int k = 0; k < 4; k++) {
        int h = k < 2 ? H : H / 8, w = k < 2 ? W : W / 8;
        fs = max_sz(fs, conv3x3_scratch_floats(h, w, io[k][0], io[k][1], 1));
        bs = max_sz(bs, conv3x3_backward_scratch_floats(h, w, io[k][0], io[k][1], 1));
    }
    TAKE(tt->fwd_scratch, fs);
    TAKE(tt->bwd_scratch, bs);
#define TAKE_PACK(cv, name, bias) TAKE((cv)->wp, conv3x3_packed_floats((cv)->ci, (cv)->co))
    TAE_FOR_EACH_CONV(tt, TAKE_PACK);
#undef TAKE_PACK
#undef TAKE
    return off;
}

mg_status tae_train_init(tae_train *tt, train_params *tp, int H, int W) {
    memset(tt, 0, sizeof *tt);
    if (H < 8 || W < 8 || H % 8 || W % 8)
        return mg_fail(MG_ERR_SHAPE, "tae_train: image %dx%d: expected sizes that are multiples of 8", W, H);
    tt->tp = tp;
    tt->cap_H = H, tt->cap_W = W;
#define BIND(cv, name, bias) conv_bind(cv, tp, name, bias)
    TAE_FOR_EACH_CONV(tt, BIND);
#undef BIND
    size_t floats = tae_train_layout(tt, NULL, &tp->cfg, H, W);
    tt->mem_bytes = floats * sizeof(float);
    tt->mem = aligned_alloc(64, tt->mem_bytes);
    if (!tt->mem)
        return mg_fail(MG_ERR_NOMEM, "tae_train: cannot allocate %zu bytes of activations", tt->mem_bytes);
    /* NaN everywhere: a read of something the forward did not write shows in the loss */
    for (size_t i = 0; i < floats; i++) tt->mem[i] = NAN;
    tae_train_layout(tt, tt->mem, &tp->cfg, H, W);
    return MG_OK;
}

void tae_train_free(tae_train *tt) {
    free(tt->mem);
    memset(tt, 0, sizeof *tt);
}

/* ---- forward ------------------------------------------------------------------------------ */

static void conv_fwd(tae_train *tt, const tae_conv *cv, float *out, const float *in, int H, int W, int stride) {
    conv3x3_forward(out, in, cv->wp, cv->b, tt->fwd_scratch, H, W, cv->ci, cv->co, stride);
}

/* act[0] = relu(c1(x)), act[1] = relu(c2(act[0])), act[2] = relu(c3(act[1]) + x) */
static void block_fwd(tae_train *tt, const tae_conv cv[3], float *act[3], const float *x, int H, int W) {
    size_t n = (size_t)H * W * cv[0].co;
    conv_fwd(tt, &cv[0], act[0], x, H, W, 1);
    relu_forward(act[0], act[0], n);
    conv_fwd(tt, &cv[1], act[1], act[0], H, W, 1);
    relu_forward(act[1], act[1], n);
    conv_fwd(tt, &cv[2], act[2], act[1], H, W, 1);
    add_relu_forward(act[2], act[2], x, n);
}

/* The map entering encoder block i, and decoder block i. */
static const float *enc_block_in(const tae_acts *a, int i) {
    return i == 0 ? a->e_in : (i == 1 || i == 4 || i == 7) ? a->e_down[i / 3] : a->e_blk[i - 1][2];
}
static const float *dec_block_in(const tae_acts *a, int i) {
    return i == 0 ? a->d_in : (i == 3 || i == 6 || i == 9) ? a->d_up[i / 3 - 1] : a->d_blk[i - 1][2];
}

/* The high-frequency term (--hf-loss): the mean over interior pixels and channels of
 * (lap(rec) - lap(img))^2, lap the 4-neighbour Laplacian 4 x(p) - x(p +- 1 across) - x(p +- 1
 * down), the stencil of the evaluation's detail metric (docs/EVAL.md) per channel. An L1 + L2
 * loss weighs an edge by its few pixels' error; this one by its curvature, so a blurred edge
 * costs what a missing one does. d (H, W, 3) gets the difference, 0 on the border rows and
 * columns; returns its sum of squares. */
double tae_lap_diff(float *d, const float *rec, const float *img, int H, int W) {
    double q = 0.0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) {
                size_t i = ((size_t)y * W + x) * 3 + c;
                if (y == 0 || x == 0 || y == H - 1 || x == W - 1) {
                    d[i] = 0.0f;
                    continue;
                }
                size_t r = (size_t)W * 3;
                float lr = 4.0f * rec[i] - rec[i - 3] - rec[i + 3] - rec[i - r] - rec[i + r];
                float li = 4.0f * img[i] - img[i - 3] - img[i + 3] - img[i - r] - img[i + r];
                d[i] = lr - li;
                q += (double)d[i] * d[i];
            }
    return q;
}

double tae_lap_count(int H, int W) { return (double)(H - 2) * (W - 2) * 3; }

/* g += k lap^T(d) = k lap(d) (the stencil is symmetric; d is 0 off the interior, so the sum
 * reaches the border pixels too) */
void tae_lap_grad(float *g, const float *d, int H, int W, float k) {
    size_t r = (size_t)W * 3;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) {
                size_t i = ((size_t)y * W + x) * 3 + c;
                float v = 4.0f * d[i];
                if (x > 0) v -= d[i - 3];
                if (x < W - 1) v -= d[i + 3];
                if (y > 0) v -= d[i - r];
                if (y < H - 1) v -= d[i + r];
                g[i] += k * v;
            }
}

mg_status tae_train_forward(tae_train *tt, const float *img, int H, int W, float *loss) {
    if (H < 8 || W < 8 || H % 8 || W % 8 || (size_t)H * W > (size_t)tt->cap_H * tt->cap_W)
        return mg_fail(MG_ERR_SHAPE, "tae_train_forward: image %dx%d: expected multiples of 8 within the "
                       "%dx%d it was sized for", W, H, tt->cap_W, tt->cap_H);
    tae_acts *a = &tt->a;
    int c = tt->tp->cfg.tae_ch;
#define PACK(cv, name, bias) conv3x3_pack((cv)->wp, (cv)->w, (cv)->ci, (cv)->co)
    TAE_FOR_EACH_CONV(tt, PACK); /* the weights changed since the last step */
#undef PACK
    tt->img = img, tt->H = H, tt->W = W;

    /* encoder */
    int h = H, w = W;
    conv_fwd(tt, &tt->enc_in, a->e_in, img, h, w, 1);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) {
            conv_fwd(tt, &tt->enc_down[i / 3], a->e_down[i / 3], a->e_blk[i - 1][2], h, w, 2);
            h /= 2, w /= 2;
        }
        block_fwd(tt, tt->enc_b[i], a->e_blk[i], enc_block_in(a, i), h, w);
    }
    conv_fwd(tt, &tt->enc_out, a->lat, a->e_blk[MG_TAE_BLOCKS - 1][2], h, w, 1);

    /* decoder */
    conv_fwd(tt, &tt->dec_in, a->d_in, a->lat, h, w, 1);
    relu_forward(a->d_in, a->d_in, (size_t)h * w * c);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 3 || i == 6 || i == 9) { /* nearest 2x, then a conv without bias */
            upsample2x_forward(a->d_upx[i / 3 - 1], a->d_blk[i - 1][2], h, w, c);
            h *= 2, w *= 2;
            conv_fwd(tt, &tt->dec_up[i / 3 - 1], a->d_up[i / 3 - 1], a->d_upx[i / 3 - 1], h, w, 1);
        }
        block_fwd(tt, tt->dec_b[i], a->d_blk[i], dec_block_in(a, i), h, w);
    }
    conv_fwd(tt, &tt->dec_out, a->rec, a->d_blk[MG_TAE_BLOCKS - 1][2], h, w, 1);

    /* loss: L1 + L2, means over H*W*3, summed in float64; then the Laplacian term */
    size_t n = (size_t)H * W * 3;
    double l1 = 0.0, l2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double r = (double)a->rec[i] - img[i];
        l1 += fabs(r);
        l2 += r * r;
    }
    tt->loss = (l1 + l2) / (double)n;
    if (tt->hf > 0.0f) tt->loss += tt->hf * tae_lap_diff(tt->dlap, a->rec, img, H, W) / tae_lap_count(H, W);
    tt->have_forward = 1;
    *loss = (float)tt->loss;
    return MG_OK;
}

/* ---- backward ----------------------------------------------------------------------------- */

static void zero(float *x, size_t n) { memset(x, 0, n * sizeof(float)); }

static void conv_bwd(tae_train *tt, const tae_conv *cv, float *dinp, const float *dout, const float *inp, int H,
                     int W, int stride) {
    conv3x3_backward(dinp, cv->gw, cv->gb, dout, inp, cv->w, tt->bwd_scratch, H, W, cv->ci, cv->co, stride);
}

/* A Block reversed: gout is the gradient of act[2] (the block's output); gin (zeroed by the
 * caller) receives the gradient of its input x, by the skip path and through c1. t1, t2 are
 * temporaries of the same size. */
static void block_bwd(tae_train *tt, const tae_conv cv[3], float *const act[3], const float *x,
                      const float *gout, float *gin, float *t1, float *t2, int H, int W) {
    size_t n = (size_t)H * W * cv[0].co;
    zero(t1, n);
    add_relu_backward(t1, gin, gout, act[2], n); /* t1: grad of c3's output; gin += the skip */
    zero(t2, n);
    conv_bwd(tt, &cv[2], t2, t1, act[1], H, W, 1); /* t2: grad of act[1] */
    zero(t1, n);
    relu_backward(t1, t2, act[1], n);              /* t1: grad of c2's output */
    zero(t2, n);
    conv_bwd(tt, &cv[1], t2, t1, act[0], H, W, 1); /* t2: grad of act[0] */
    zero(t1, n);
    relu_backward(t1, t2, act[0], n);              /* t1: grad of c1's output */
    conv_bwd(tt, &cv[0], gin, t1, x, H, W, 1);     /* gin += grad of x through c1 */
}

static void swap(float **a, float **b) {
    float *t = *a;
    *a = *b, *b = t;
}

mg_status tae_train_backward(tae_train *tt, float scale) {
    if (!tt->have_forward) return mg_fail(MG_ERR_ARG, "tae_train_backward: no forward to go back through");
    const tae_acts *a = &tt->a;
    int H = tt->H, W = tt->W, c = tt->tp->cfg.tae_ch, Z = tt->tp->cfg.z_ch;
    float *g = tt->gbuf[0], *gn = tt->gbuf[1], *t1 = tt->gbuf[2], *t2 = tt->gbuf[3];

    /* d loss / d rec = (sign(r) + 2 r) / n, r = rec - img; sign(0) = 0 as torch's abs' */
    size_t n = (size_t)H * W * 3;
    for (size_t i = 0; i < n; i++) {
        float r = a->rec[i] - tt->img[i];
        float sg = r > 0.0f ? 1.0f : r < 0.0f ? -1.0f : 0.0f;
        tt->drec[i] = (float)((double)scale * (sg + 2.0f * r) / (double)n);
    }
    if (tt->hf > 0.0f) tae_lap_grad(tt->drec, tt->dlap, H, W, (float)(2.0 * scale * tt->hf / tae_lap_count(H, W)));
    if (tt->drec_add)
        for (size_t i = 0; i < n; i++) tt->drec[i] += tt->drec_add[i];

    /* decoder, last layer first; g holds the gradient of the current map */
    int h = H, w = W;
    zero(g, (size_t)h * w * c);
    conv_bwd(tt, &tt->dec_out, g, tt->drec, a->d_blk[MG_TAE_BLOCKS - 1][2], h, w, 1);
    for (int i = MG_TAE_BLOCKS - 1; i >= 0; i--) {
        zero(gn, (size_t)h * w * c);
        block_bwd(tt, tt->dec_b[i], a->d_blk[i], dec_block_in(a, i), g, gn, t1, t2, h, w);
        swap(&g, &gn);
        if (i == 3 || i == 6 || i == 9) { /* d_up = up(upsample(previous block's output)) */
            int k = i / 3 - 1;
            zero(t1, (size_t)h * w * c);
            conv_bwd(tt, &tt->dec_up[k], t1, g, a->d_upx[k], h, w, 1);
            h /= 2, w /= 2;
            zero(g, (size_t)h * w * c);
            upsample2x_backward(g, t1, h, w, c);
        }
    }
    /* d_in = relu(dec.in(lat)) */
    zero(t1, (size_t)h * w * c);
    relu_backward(t1, g, a->d_in, (size_t)h * w * c);
    if (tt->freeze_encoder) { /* nothing below dec.in trains: no latent gradient, no encoder pass */
        conv_bwd(tt, &tt->dec_in, NULL, t1, a->lat, h, w, 1);
        return MG_OK;
    }
    zero(tt->dlat, (size_t)h * w * Z);
    conv_bwd(tt, &tt->dec_in, tt->dlat, t1, a->lat, h, w, 1);

    /* encoder, from the latent's gradient back to the image (which is data) */
    zero(g, (size_t)h * w * c);
    conv_bwd(tt, &tt->enc_out, g, tt->dlat, a->e_blk[MG_TAE_BLOCKS - 1][2], h, w, 1);
    for (int i = MG_TAE_BLOCKS - 1; i >= 0; i--) {
        zero(gn, (size_t)h * w * c);
        block_bwd(tt, tt->enc_b[i], a->e_blk[i], enc_block_in(a, i), g, gn, t1, t2, h, w);
        swap(&g, &gn);
        if (i == 1 || i == 4 || i == 7) { /* e_down = down(previous block's output), stride 2 */
            zero(gn, (size_t)h * w * c * 4);
            conv_bwd(tt, &tt->enc_down[i / 3], gn, g, a->e_blk[i - 1][2], h * 2, w * 2, 2);
            h *= 2, w *= 2;
            swap(&g, &gn);
        }
    }
    conv_bwd(tt, &tt->enc_in, NULL, g, tt->img, h, w, 1);
    return MG_OK;
}
