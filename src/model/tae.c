/* The tiny autoencoder (docs/ARCHITECTURE.md, "Tiny autoencoder"): 8x down, 8x up. */
#include "core/arena.h"
#include "model/forward.h"
#include "ops/ops.h"

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Work: three full-resolution feature maps of c channels, plus conv scratch. */
size_t tae_work_floats(const mg_config *cf, int H, int W) {
    int c = cf->tae_ch, z = cf->z_ch;
    size_t scr = 0;
    for (int r = 1; r <= 8; r *= 2) {
        int h = H / r, w = W / r;
        scr = max_sz(scr, conv3x3_scratch_floats(h, w, c, c, 1));
        if (r < 8) scr = max_sz(scr, conv3x3_scratch_floats(h, w, c, c, 2));
    }
    scr = max_sz(scr, conv3x3_scratch_floats(H, W, 3, c, 1));
    scr = max_sz(scr, conv3x3_scratch_floats(H, W, c, 3, 1));
    scr = max_sz(scr, conv3x3_scratch_floats(H / 8, W / 8, c, z, 1));
    scr = max_sz(scr, conv3x3_scratch_floats(H / 8, W / 8, z, c, 1));
    size_t off = 0, fm = (size_t)H * W * c;
    for (int i = 0; i < 3; i++) arena_take(NULL, &off, fm);
    arena_take(NULL, &off, scr);
    return off;
}

typedef struct tae_bufs { float *a, *b, *c, *scr; } tae_bufs;

static tae_bufs tae_bufs_of(const mg_config *cf, float *work, int H, int W) {
    size_t off = 0, fm = (size_t)H * W * cf->tae_ch;
    tae_bufs t;
    t.a = arena_take(work, &off, fm);
    t.b = arena_take(work, &off, fm);
    t.c = arena_take(work, &off, fm);
    t.scr = arena_take(work, &off, 0);
    return t;
}

static void conv(const conv_w *cv, float *out, const float *in, float *scr, int H, int W, int stride) {
    conv3x3_forward(out, in, cv->wp, cv->b, scr, H, W, cv->ci, cv->co, stride);
}

/* conv + bias + residual (or NULL), then relu, in the conv's own epilogue. */
static void conv_relu(const conv_w *cv, float *out, const float *in, const float *res, float *scr, int H, int W) {
    conv3x3_forward_ex(out, in, cv->wp, cv->b, res, MG_ACT_RELU, scr, H, W, cv->ci, cv->co, 1);
}

/* x = relu(c3(relu(c2(relu(c1(x))))) + x), with t1, t2 as temporaries. */
static void block(const conv_w cv[3], float *x, float *t1, float *t2, float *scr, int H, int W) {
    conv_relu(&cv[0], t1, x, NULL, scr, H, W);
    conv_relu(&cv[1], t2, t1, NULL, scr, H, W);
    conv_relu(&cv[2], x, t2, x, scr, H, W); /* residual in place: out == residual is allowed */
}

void tae_encode(const mg_model *m, float *lat, const float *img, float *work, int H, int W) {
    const tae_weights *T = &m->tae;
    tae_bufs b = tae_bufs_of(&m->cfg, work, H, W);
    float *cur = b.a, *oth = b.b, *tmp = b.c;
    conv(&T->enc_in, cur, img, b.scr, H, W, 1);
    int h = H, w = W;
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) { /* stride-2 conv, then swap roles */
            conv(&T->enc_down[i / 3], oth, cur, b.scr, h, w, 2);
            h = (h + 1) / 2, w = (w + 1) / 2;
            float *t = cur; cur = oth; oth = t;
        }
        block(T->enc_b[i], cur, oth, tmp, b.scr, h, w);
    }
    conv(&T->enc_out, lat, cur, b.scr, h, w, 1);
}

void tae_decode(const mg_model *m, float *img, const float *lat, float *work, int H, int W) {
    const tae_weights *T = &m->tae;
    tae_bufs b = tae_bufs_of(&m->cfg, work, H, W);
    float *cur = b.a, *oth = b.b, *tmp = b.c;
    int h = H / 8, w = W / 8, c = m->cfg.tae_ch;
    conv_relu(&T->dec_in, cur, lat, NULL, b.scr, h, w);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 3 || i == 6 || i == 9) { /* nearest 2x, then conv without bias */
            upsample2x_forward(oth, cur, h, w, c);
            h *= 2, w *= 2;
            conv(&T->dec_up[i / 3 - 1], cur, oth, b.scr, h, w, 1);
        }
        block(T->dec_b[i], cur, oth, tmp, b.scr, h, w);
    }
    conv(&T->dec_out, img, cur, b.scr, h, w, 1);
}
