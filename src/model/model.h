/* The model's internals: configs, the weight table, and the shared read-only weights.
 * See docs/ARCHITECTURE.md for the math; this header is about where things live. */
#ifndef MG_MODEL_MODEL_H
#define MG_MODEL_MODEL_H

#include "core/safetensors.h"
#include "mirage.h"

#define MG_MAX_PROMPTS 64
#define MG_TAE_BLOCKS 10 /* enc.b0..b9, dec.b0..b9 */

/* One 3x3 conv: packed weight (see conv3x3_pack) and optional bias. */
typedef struct conv_w {
    float *wp;      /* packed, owned by the model arena */
    const float *b; /* (co) or NULL */
    int ci, co;
} conv_w;

typedef struct tae_weights {
    conv_w enc_in, enc_down[3], enc_out;
    conv_w enc_b[MG_TAE_BLOCKS][3];
    conv_w dec_in, dec_up[3], dec_out;
    conv_w dec_b[MG_TAE_BLOCKS][3];
} tae_weights;

typedef struct dit_layer {
    const float *ada_w, *ada_b;   /* (6d, d), (6d) */
    const float *qkv_w, *qkv_b;   /* (3d, d), (3d) */
    const float *proj_w, *proj_b; /* (d, d), (d) */
    const float *fc1_w, *fc1_b;   /* (4d, d), (4d) */
    const float *fc2_w, *fc2_b;   /* (d, 4d), (d) */
} dit_layer;

typedef struct dit_weights {
    const float *in_w, *in_b;     /* (d, 2*Z*p*p), (d) */
    const float *t1_w, *t1_b;     /* (d, 256), (d) */
    const float *t2_w, *t2_b;     /* (d, d), (d) */
    const float *prompt;          /* (P, d) */
    dit_layer *layers;            /* (L) */
    const float *fada_w, *fada_b; /* (2d, d), (2d) */
    const float *fout_w, *fout_b; /* (Z*p*p, d), (Z*p*p) */
} dit_weights;

struct mg_model {
    mg_config cfg;
    st_file file;       /* the mapping that F32 weights point into */
    char prompts[MG_MAX_PROMPTS][32];
    int n_prompts;
    float *arena;       /* packed conv weights + widened non-F32 tensors */
    size_t arena_bytes;
    size_t params;
    tae_weights tae;
    dit_weights dit;
};

/* The weight table: every tensor of a config, in file order. `kind` says how init draws it. */
typedef enum wkind { W_PLAIN = 0, W_PROMPT, W_ZERO_INIT } wkind;
typedef struct wdesc {
    char name[64];
    int rank;
    int64_t shape[4];
    int fan_in;
    wkind kind;
} wdesc;
/* Fills up to cap entries; returns the number of tensors of cfg (call with cap 0 to count). */
int model_weight_table(const mg_config *cfg, int n_prompts, wdesc *out, int cap);
/* The weights file's metadata (docs/ARCHITECTURE.md, "Weights file"): format, the config's
 * keys and the comma-separated prompt names. Written by mirage init and by the trainer. */
mg_status model_put_meta(st_writer *w, const mg_config *c, const char *prompts);
/* The config keys of a file's metadata (the name, widths, ring, sampler constants), each
 * checked against its range; errors name the file and the key. model_put_meta's reverse, for
 * weights files and for checkpoints (whose own "format" differs). */
mg_status model_config_from_meta(const st_file *f, mg_config *c);
/* A BF16 or F16 tensor's values as floats (dst: t->numel). */
void model_widen(const st_tensor *t, float *dst);

/* The default prompt names, comma-separated (row 0 is "none"). */
extern const char *const MG_DEFAULT_PROMPTS;
int model_prompt_index(const mg_model *m, const char *name); /* -1 if unknown */

#endif
