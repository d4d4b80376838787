/* Training on the CPU (fp32, the reference path): the parameter layout, the training forward
 * and backward of the DiT (model_train.c) and of the autoencoder (tae_train.c), and the
 * optimizer. See docs/ARCHITECTURE.md for the model and
 * DESIGN.md §2 for the objective.
 *
 * Lifetimes: a train_params holds the model's parameters, gradients and AdamW moments (one
 * allocation); a dit_train holds the activations of one clip (one allocation, sized once for
 * the largest clip). Nothing is allocated per step. */
#ifndef MG_TRAIN_TRAIN_H
#define MG_TRAIN_TRAIN_H

#include "model/model.h"

/* ---- parameters -------------------------------------------------------------------------- */

/* Five flat fp32 arrays with one layout: every tensor of the weight table (model_weight_table),
 * in file order, each starting on a 64-byte boundary. The autoencoder's tensors come first and
 * the DiT's last, so each network is one contiguous range of tensors, [tae_first, tae_last)
 * and [dit_first, n_tensors). */
typedef struct train_params {
    mg_config cfg;
    char prompts[MG_MAX_PROMPTS][32];
    int n_prompts;
    int n_tensors;
    wdesc *table;   /* (n_tensors) names, shapes */
    size_t *offset; /* (n_tensors + 1) float offset of each tensor; offset[n] = total */
    size_t count;   /* floats in each array (padding included) */
    float *param;   /* (count) weights, PyTorch layouts as in the file */
    float *grad;    /* (count) gradients, accumulated by the backward passes */
    float *m, *v;   /* (count) AdamW first and second moments */
    float *ema;     /* (count) exponential moving average of param (the shipped weights) */
    int dit_first;  /* index of dit.in.weight: the DiT is [dit_first, n_tensors) */
    void *mem;      /* the one allocation behind table, offset and the four arrays */
    size_t mem_bytes;
} train_params;

/* Loads a weights file (validated by mg_model_load; BF16/F16 widened) into a fresh state with
 * zero gradients and moments and the EMA equal to the weights. */
mg_status train_params_load(train_params *tp, const char *path);
/* The layout behind train_params_load, for any table (train/adv.c's discriminator has its
 * own): allocates tp->mem (the table, the offsets, then param, grad, m, v and ema, each tensor
 * 64-byte aligned), zeroed, and sets every field but cfg, prompts and dit_first. who and what
 * name the failure: "<who>: cannot allocate N bytes for <what>". */
mg_status train_params_alloc(train_params *tp, const wdesc *tab, int n, const char *who, const char *what);
void train_params_free(train_params *tp);
/* Index of the tensor called name, or -1. */
int train_params_find(const train_params *tp, const char *name);
size_t train_params_numel(const train_params *tp, int i); /* elements of tensor i */
/* Zeroes the gradients of tensors [first, last). */
void train_zero_grad(train_params *tp, int first, int last);

/* ---- the DiT, trained on clips ----------------------------------------------------------- */

/* One training clip: T frames of latents (lh x lw x Z, HWC), each with its own noise level
 * (diffusion forcing). The model sees x_σ = (1-σ_t) x0_in + σ_t ε for frame t, block-causal with
 * window K (frame t attends to frames max(0, t-K)..t, as dit_forward's parallel mode), RoPE
 * positions 0..T-1, one prompt row for the clip. The target is v = ε - x0. */
typedef struct dit_clip {
    int T, lh, lw;
    const float *x0;   /* (T, lh, lw, Z) clean latents: the target is v = ε - x0 */
    const float *x0_in; /* (T, lh, lw, Z) what is noised into x_σ, or NULL for x0. History
                         * augmentation passes a corrupted copy here (blur, colour shift), so
                         * the model learns to repair a wrong history rather than copy it. */
    const float *eps;  /* (T, lh, lw, Z) noise */
    const float *cond; /* (T, lh, lw, Z) encoded input frames, or NULL (dream: zeros) */
    const float *sigma; /* (T) noise level per frame, in [0, 1] */
    int prompt;        /* prompt row */
    int window;        /* K: history frames each frame sees */
} dit_clip;

typedef struct dit_layer_ptrs {
    float *ada_w, *ada_b;   /* (6d, d), (6d) */
    float *qkv_w, *qkv_b;   /* (3d, d), (3d) */
    float *proj_w, *proj_b; /* (d, d), (d) */
    float *fc1_w, *fc1_b;   /* (4d, d), (4d) */
    float *fc2_w, *fc2_b;   /* (d, 4d), (d) */
} dit_layer_ptrs;

/* The DiT's tensors inside one of the flat arrays (params or grads). */
typedef struct dit_ptrs {
    float *in_w, *in_b;     /* (d, 2*Z*p*p), (d) */
    float *t1_w, *t1_b;     /* (d, 256), (d) */
    float *t2_w, *t2_b;     /* (d, d), (d) */
    float *prompt;          /* (P, d) */
    dit_layer_ptrs *layers; /* (L) */
    float *fada_w, *fada_b; /* (2d, d), (2d) */
    float *fout_w, *fout_b; /* (Z*p*p, d), (Z*p*p) */
} dit_ptrs;

/* What the forward keeps for the backward, for one clip of up to T frames of N tokens.
 * TN = T*N rows; per-layer tensors are (L, TN, ...) with layer l at l*TN*width. */
typedef struct dit_acts {
    float *z;        /* (T, lh, lw, Z) the noisy input x_σ */
    float *tok;      /* (TN, 2*Z*p*p) patchified concat[z, cond] */
    float *temb;     /* (T, 256) timestep embedding */
    float *t1;       /* (T, d) t1(temb), before silu */
    float *t1s;      /* (T, d) silu(t1) */
    float *c;        /* (T, d) conditioning t2(t1s) + prompt row */
    float *sc;       /* (T, d) silu(c), the input of every ada */
    float *x;        /* (L+1, TN, d) residual stream entering block l; [L] enters the final layer */
    float *mod;      /* (L, T, 6d) shift1, scale1, gate1, shift2, scale2, gate2 */
    float *y1;       /* (L, TN, d) LN(x)*(1+scale1)+shift1 */
    float *qkv;      /* (L, TN, 3d) q, k after RoPE; v */
    float *att;      /* (L, TN, d) attention output */
    float *pr;       /* (L, TN, d) proj(att) */
    float *xm;       /* (L, TN, d) x + gate1*pr */
    float *y2;       /* (L, TN, d) LN(xm)*(1+scale2)+shift2 */
    float *h;        /* (L, TN, 4d) fc1(y2), before gelu */
    float *hg;       /* (L, TN, 4d) gelu_tanh(h) */
    float *f;        /* (L, TN, d) fc2(hg) */
    float *fmod;     /* (T, 2d) final shift, scale */
    float *yf;       /* (TN, d) LN(x[L])*(1+scale)+shift */
    float *out;      /* (TN, Z*p*p) final.out(yf) */
    float *v;        /* (T, lh, lw, Z) predicted velocity */
    float *rope_cos, *rope_sin; /* (T, N, dh/2) tables for frames 0..T-1 */
} dit_acts;

/* Gradients of the activations: one layer's worth, reused from the last layer to the first. */
typedef struct dit_grads {
    float *dv;       /* (T, lh, lw, Z) */
    float *dout;     /* (TN, Z*p*p) */
    float *dx;       /* (TN, d) the residual stream */
    float *dy;       /* (TN, d) normed-input gradient (y1, y2, yf in turn) */
    float *dbr;      /* (TN, d) branch output gradient (f, then pr) */
    float *datt;     /* (TN, d) */
    float *dqkv;     /* (TN, 3d) */
    float *dh, *dhg; /* (TN, 4d) */
    float *dmod;     /* (T, 6d), also the final layer's (T, 2d) */
    float *dsc, *dc; /* (T, d) */
    float *dt1s, *dt1; /* (T, d) */
} dit_grads;

typedef struct dit_train {
    train_params *tp;       /* not owned */
    int cap_T, cap_lh, cap_lw; /* the largest clip */
    dit_ptrs P, G;          /* views into tp->param and tp->grad */
    dit_acts a;
    dit_grads g;
    float *att_scratch, *att_bwd_scratch;
    dit_clip clip;          /* the clip of the last forward (pointers not owned) */
    int have_forward;
    double loss;
    const float *dv_add;    /* (T, lh, lw, Z) or NULL: added as is (the caller scaled it) to the
                             * loss's gradient with respect to v by the backward (--adv, adv.h) */
    float *mem;             /* the one allocation */
    size_t mem_bytes;
} dit_train;

/* Sizes everything for clips up to T frames of lh x lw latents. */
mg_status dit_train_init(dit_train *dt, train_params *tp, int T, int lh, int lw);
void dit_train_free(dit_train *dt);
/* The training forward over one clip: fills dt->a and *loss = mean over all T*lh*lw*Z
 * elements of (v - (ε - x0))^2. The clip's arrays must stay valid until the backward. */
mg_status dit_train_forward(dit_train *dt, const dit_clip *clip, float *loss);
/* The backward of the last forward: tp->grad += scale * d loss / d params for the DiT's
 * tensors (scale 1 for one clip, 1/B to average B clips). Does not zero the gradients. */
mg_status dit_train_backward(dit_train *dt, float scale);

/* ---- the autoencoder, trained on images (stage 1) ----------------------------------------- */

/* One 3x3 conv of the autoencoder: its tensors in the flat arrays and its packed copy. */
typedef struct tae_conv {
    const float *w, *b; /* (co, ci, 3, 3), (co) or NULL: in tp->param */
    float *gw, *gb;     /* the same in tp->grad */
    float *wp;          /* conv3x3_pack(w), refreshed by every forward */
    int ci, co;
} tae_conv;

/* What the forward keeps: every conv's input and every relu's output. A Block's maps are
 * [0] relu(c1(x)), [1] relu(c2([0])), [2] relu(c3([1]) + x), its output; its input x is the
 * map before it. Sizes for an image of H x W with c channels; encoder block i and decoder
 * block i run at the resolution their stage gives them. */
typedef struct tae_acts {
    float *e_in;                    /* (H, W, c) enc.in(img) */
    float *e_blk[MG_TAE_BLOCKS][3]; /* enc.b0..b9 */
    float *e_down[3];               /* enc.down1..3 outputs, at H/2, H/4, H/8 */
    float *lat;                     /* (H/8, W/8, Z) */
    float *d_in;                    /* (H/8, W/8, c) relu(dec.in(lat)) */
    float *d_blk[MG_TAE_BLOCKS][3]; /* dec.b0..b9 */
    float *d_upx[3];                /* nearest-2x upsampled inputs of dec.up1..3 */
    float *d_up[3];                 /* dec.up1..3 outputs */
    float *rec;                     /* (H, W, 3) the reconstruction, unclamped */
} tae_acts;

typedef struct tae_train {
    train_params *tp;                /* not owned */
    int cap_H, cap_W;                /* the largest image */
    tae_conv enc_in, enc_down[3], enc_out, enc_b[MG_TAE_BLOCKS][3];
    tae_conv dec_in, dec_up[3], dec_out, dec_b[MG_TAE_BLOCKS][3];
    tae_acts a;
    float *gbuf[4];                  /* (H, W, c) each: activation gradients, rotated */
    float *dlat;                     /* (H/8, W/8, Z) */
    float *drec;                     /* (H, W, 3) */
    float *fwd_scratch, *bwd_scratch;
    const float *img;                /* the image of the last forward (not owned) */
    int H, W, have_forward;
    double loss;
    float hf;                        /* weight of the Laplacian term (--hf-loss; 0: L1 + L2 alone) */
    float *dlap;                     /* (H, W, 3) lap(rec) - lap(img) of the last forward */
    const float *drec_add;           /* (H, W, 3) or NULL: added as is (the caller scaled it) to the
                                      * gradient of rec by the next backward: the adversarial
                                      * term's (train/adv.h, --adv) */
    int freeze_encoder;              /* 1: the backward stops at the decoder (--freeze-encoder):
                                      * the encoder's gradients are neither computed nor added */
    float *mem;                      /* the one allocation */
    size_t mem_bytes;
} tae_train;

/* Sizes everything for images up to H x W (multiples of 8). */
mg_status tae_train_init(tae_train *tt, train_params *tp, int H, int W);
void tae_train_free(tae_train *tt);
/* rec = dec(enc(img)) for img (H, W, 3) in [0, 1]; *loss = mean |rec - img| + mean (rec - img)^2
 * (L1 + L2) over the H*W*3 elements, plus tt->hf x the mean of (lap(rec) - lap(img))^2 over the
 * (H-2)(W-2)*3 interior elements (tae_lap_diff). img must stay valid until the backward. */
mg_status tae_train_forward(tae_train *tt, const float *img, int H, int W, float *loss);
/* tp->grad += scale * d loss / d params for the autoencoder's tensors [0, dit_first); with
 * freeze_encoder, for the decoder's alone (dec.in.weight on): the encoder's are left as they were. */
mg_status tae_train_backward(tae_train *tt, float scale);
/* The Laplacian term's pieces, shared with the GPU test: d = lap(rec) - lap(img) (0 on the
 * border), returning sum d^2; the number of interior elements; g += k lap(d). */
double tae_lap_diff(float *d, const float *rec, const float *img, int H, int W);
double tae_lap_count(int H, int W);
void tae_lap_grad(float *g, const float *d, int H, int W, float k);

/* ---- optimizer --------------------------------------------------------------------------- */

typedef struct adamw_opts {
    float beta1, beta2, eps; /* 0.9, 0.95, 1e-8 */
    float weight_decay;      /* decoupled; applied to tensors of rank >= 2 (not biases) */
} adamw_opts;

adamw_opts adamw_defaults(void); /* betas 0.9, 0.95, eps 1e-8, weight decay 0.1 */
/* One AdamW update of tensors [first, last) with bias correction; step counts from 1. */
void adamw_step(train_params *tp, int first, int last, long step, float lr, const adamw_opts *o);
/* sqrt of the sum of squared gradients over tensors [first, last) (float64 sums). */
double grad_global_norm(const train_params *tp, int first, int last);
/* Scales the gradients by max_norm / (norm + 1e-6) where that is below 1, as
 * torch.nn.utils.clip_grad_norm_ does. Returns the norm before clipping. */
double grad_clip(train_params *tp, int first, int last, double max_norm);
/* Learning rate at step (from 0): linear warm-up over `warmup` steps to lr_max, then cosine
 * decay to lr_min at step `total`, lr_min after. */
float lr_schedule(long step, long warmup, long total, float lr_max, float lr_min);

#endif
