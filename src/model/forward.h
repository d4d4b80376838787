/* The forward passes of the two networks, over caller-owned work memory. */
#ifndef MG_MODEL_FORWARD_H
#define MG_MODEL_FORWARD_H

#include "model/model.h"

/* ---- tiny autoencoder ---- */
size_t tae_work_floats(const mg_config *c, int H, int W);
/* lat (H/8, W/8, Z) from img (H, W, 3) in [0,1]. */
void tae_encode(const mg_model *m, float *lat, const float *img, float *work, int H, int W);
/* img (H, W, 3), unclamped, from lat (H/8, W/8, Z). */
void tae_decode(const mg_model *m, float *img, const float *lat, float *work, int H, int W);

/* ---- KV ring: per layer, K past frames plus one slot for the frame being made ---- */
typedef struct kv_ring {
    float *k, *v;       /* (L, K+1, N, d) each: keys after RoPE, values */
    int L, K, N, d;
    int count;          /* filled history slots, <= K */
    int oldest;         /* once full: the slot the next push overwrites */
    long long frame;    /* index of the frame being made (its RoPE position) */
} kv_ring;

size_t kv_ring_floats(int L, int K, int N, int d);
void kv_ring_init(kv_ring *r, float *mem, int L, int K, int N, int d);
void kv_ring_reset(kv_ring *r);
/* The slot the current frame's k,v go to, so that the visible keys are slots [0, slot]. */
int kv_ring_current_slot(const kv_ring *r);
/* Keeps the current slot's k,v as history (over the oldest once full); next frame. */
void kv_ring_push(kv_ring *r);

/* ---- latent DiT ---- */
typedef struct dit_work {
    float *tok;       /* (T*N, 2*Z*p*p) */
    float *x, *y;     /* (T*N, d) residual stream, normed/branch output */
    float *qkv;       /* (T*N, 3d) */
    float *att;       /* (T*N, d) */
    float *h;         /* (T*N, 4d) */
    float *out;       /* (T*N, Z*p*p) */
    float *c, *sc;    /* (T, d) conditioning, silu(c) */
    float *mod;       /* (T, 6d) */
    float *temb;      /* (256) */
    float *rope_cos, *rope_sin; /* (T, N, dh/2) */
    float *att_scratch;
    int T, N, Nk;     /* capacity */
    long long rope_frame0; int rope_T; /* which frames the tables hold (-1: none) */
} dit_work;

/* Work for up to T frames of N tokens whose attention sees at most Nk keys. */
size_t dit_work_floats(const mg_config *c, int T, int N, int Nk);
void dit_work_init(dit_work *w, float *mem, const mg_config *c, int T, int N, int Nk);

typedef struct dit_call {
    int T;                 /* frames in this call */
    int lh, lw;            /* latent size */
    const float *z, *cond; /* (T, lh, lw, Z) noisy latents and encoded inputs */
    const float *sigma;    /* (T) noise level per frame */
    int prompt;            /* prompt row */
    long long frame0;      /* frame index (RoPE) of the first frame */
    int window;            /* parallel mode: frame t sees frames t-window .. t */
    kv_ring *ring;         /* streaming mode (T = 1): attend to the ring; k,v go to its current slot */
    int refresh;           /* streaming: stop after the last block's attention (only k,v wanted) */
    float *v;              /* (T, lh, lw, Z) velocity out (unused when refresh) */
} dit_call;

void dit_forward(const mg_model *m, dit_work *w, const dit_call *a);

/* ---- sampler ---- */
/* sigma_i of an N-step shifted schedule, i in [0, N]; sigma_N = 0. */
float sampler_sigma(int i, int steps, float shift);

#endif
