/* Loading, validating and initialising the shared model weights.
 *
 * One table (model_weight_table) lists every tensor of a config with its shape; loading,
 * initialisation and the parameter count all walk it, so they cannot disagree. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/rng.h"
#include "core/status.h"
#include "model/model.h"
#include "ops/ops.h"

/* ---- the weight table ------------------------------------------------------------------ */

typedef struct table { wdesc *out; int cap, n; } table;

static void add(table *t, wkind kind, int fan_in, int rank, int64_t a, int64_t b, int64_t c,
                int64_t d, const char *fmt, ...) MG_PRINTF(9, 10);
static void add(table *t, wkind kind, int fan_in, int rank, int64_t a, int64_t b, int64_t c,
                int64_t d, const char *fmt, ...) {
    if (t->n < t->cap) {
        wdesc *w = &t->out[t->n];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->name, sizeof w->name, fmt, ap);
        va_end(ap);
        w->rank = rank;
        w->shape[0] = a, w->shape[1] = b, w->shape[2] = c, w->shape[3] = d;
        w->fan_in = fan_in;
        w->kind = kind;
    }
    t->n++;
}

static void add_conv(table *t, const char *name, int ci, int co, int bias) {
    add(t, W_PLAIN, ci * 9, 4, co, ci, 3, 3, "%s.weight", name);
    if (bias) add(t, W_PLAIN, ci * 9, 1, co, 0, 0, 0, "%s.bias", name);
}

static void add_linear(table *t, wkind kind, const char *name, int in, int out) {
    add(t, kind, in, 2, out, in, 0, 0, "%s.weight", name);
    add(t, kind, in, 1, out, 0, 0, 0, "%s.bias", name);
}

static void add_block(table *t, const char *prefix, int c) {
    char name[48];
    for (int j = 1; j <= 3; j++) {
        snprintf(name, sizeof name, "%s.c%d", prefix, j);
        add_conv(t, name, c, c, 1);
    }
}

mg_status model_put_meta(st_writer *w, const mg_config *c, const char *prompts) {
    char v[64];
    mg_status s = MG_OK;
#define META(k, ...) \
    if (s == MG_OK) { snprintf(v, sizeof v, __VA_ARGS__); s = st_writer_meta(w, k, v); }
    META("format", "mirage");
    META("format_version", "1");
    META("config", "%s", c->name[0] ? c->name : "custom");
    META("tae_ch", "%d", c->tae_ch);
    META("z_ch", "%d", c->z_ch);
    META("d", "%d", c->d);
    META("layers", "%d", c->layers);
    META("heads", "%d", c->heads);
    META("patch", "%d", c->patch);
    META("ring", "%d", c->ring);
    META("sigma_ctx", "%.9g", c->sigma_ctx);
    META("shift", "%.9g", c->shift);
    META("rope_theta", "%.9g", c->rope_theta);
#undef META
    if (s == MG_OK) s = st_writer_meta(w, "prompts", prompts);
    return s;
}

int model_weight_table(const mg_config *cfg, int n_prompts, wdesc *out, int cap) {
    table t = {out, cap, 0};
    int c = cfg->tae_ch, z = cfg->z_ch, d = cfg->d, pp = cfg->patch * cfg->patch;
    char name[40];
    /* encoder: in, b0, down1, b1-3, down2, b4-6, down3, b7-9, out */
    add_conv(&t, "enc.in", 3, c, 1);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) {
            snprintf(name, sizeof name, "enc.down%d", (i + 2) / 3);
            add_conv(&t, name, c, c, 0);
        }
        snprintf(name, sizeof name, "enc.b%d", i);
        add_block(&t, name, c);
    }
    add_conv(&t, "enc.out", c, z, 1);
    /* decoder: in, b0-2, up1, b3-5, up2, b6-8, up3, b9, out */
    add_conv(&t, "dec.in", z, c, 1);
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 3 || i == 6 || i == 9) {
            snprintf(name, sizeof name, "dec.up%d", i / 3);
            add_conv(&t, name, c, c, 0);
        }
        snprintf(name, sizeof name, "dec.b%d", i);
        add_block(&t, name, c);
    }
    add_conv(&t, "dec.out", c, 3, 1);
    /* DiT */
    add_linear(&t, W_PLAIN, "dit.in", 2 * z * pp, d);
    add_linear(&t, W_PLAIN, "dit.t1", 256, d);
    add_linear(&t, W_PLAIN, "dit.t2", d, d);
    add(&t, W_PROMPT, d, 2, n_prompts, d, 0, 0, "dit.prompt");
    for (int l = 0; l < cfg->layers; l++) {
        static const struct { const char *n; int in, out; wkind k; } lin[] = {
            {"ada", 1, 6, W_ZERO_INIT}, {"qkv", 1, 3, W_PLAIN}, {"proj", 1, 1, W_PLAIN},
            {"fc1", 1, 4, W_PLAIN},     {"fc2", 4, 1, W_PLAIN},
        };
        for (int j = 0; j < 5; j++) {
            snprintf(name, sizeof name, "dit.blocks.%d.%s", l, lin[j].n);
            add_linear(&t, lin[j].k, name, lin[j].in * d, lin[j].out * d);
        }
    }
    add_linear(&t, W_ZERO_INIT, "dit.final.ada", d, 2 * d);
    add_linear(&t, W_ZERO_INIT, "dit.final.out", d, z * pp);
    return t.n;
}

static size_t wdesc_numel(const wdesc *w) {
    size_t n = 1;
    for (int i = 0; i < w->rank; i++) n *= (size_t)w->shape[i];
    return n;
}

/* ---- prompts ----------------------------------------------------------------------------- */

/* Splits "a,b,c" into names; row 0 must be "none" (the unconditional row for guidance). */
static mg_status parse_prompts(const char *list, const char *path, char out[][32], int *n) {
    *n = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len >= 32)
            return mg_fail(MG_ERR_FORMAT, "%s: metadata prompts: empty or over-long name in '%s'", path, list);
        if (*n >= MG_MAX_PROMPTS)
            return mg_fail(MG_ERR_FORMAT, "%s: metadata prompts: more than %d names", path, MG_MAX_PROMPTS);
        memcpy(out[*n], p, len);
        out[*n][len] = 0;
        for (int i = 0; i < *n; i++)
            if (strcmp(out[i], out[*n]) == 0)
                return mg_fail(MG_ERR_FORMAT, "%s: metadata prompts: '%s' appears twice", path, out[i]);
        (*n)++;
        p += len + (e ? 1 : 0);
    }
    if (*n < 1 || strcmp(out[0], "none") != 0)
        return mg_fail(MG_ERR_FORMAT, "%s: metadata prompts: expected 'none' first, found '%s'", path, list);
    return MG_OK;
}

int model_prompt_index(const mg_model *m, const char *name) {
    for (int i = 0; i < m->n_prompts; i++)
        if (strcmp(m->prompts[i], name) == 0) return i;
    return -1;
}

/* ---- loading ----------------------------------------------------------------------------- */

static mg_status meta_int(const st_file *f, const char *key, int lo, int hi, int *out) {
    const char *v = st_meta_get(f, key);
    if (!v) return mg_fail(MG_ERR_FORMAT, "%s: metadata '%s' missing", f->path, key);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        return mg_fail(MG_ERR_FORMAT, "%s: metadata '%s': expected an integer in [%d, %d], found '%s'",
                       f->path, key, lo, hi, v);
    *out = (int)x;
    return MG_OK;
}

static mg_status meta_float(const st_file *f, const char *key, double lo, double hi, float *out) {
    const char *v = st_meta_get(f, key);
    if (!v) return mg_fail(MG_ERR_FORMAT, "%s: metadata '%s' missing", f->path, key);
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= lo && x <= hi))
        return mg_fail(MG_ERR_FORMAT, "%s: metadata '%s': expected a number in [%g, %g], found '%s'",
                       f->path, key, lo, hi, v);
    *out = (float)x;
    return MG_OK;
}

static mg_status read_config(const st_file *f, mg_config *c) {
    const char *fmt = st_meta_get(f, "format");
    if (!fmt || strcmp(fmt, "mirage") != 0)
        return mg_fail(MG_ERR_FORMAT, "%s: metadata 'format': expected 'mirage', found '%s'", f->path,
                       fmt ? fmt : "(none)");
    int version;
    MG_TRY(meta_int(f, "format_version", 0, 1 << 30, &version));
    if (version != 1)
        return mg_fail(MG_ERR_FORMAT, "%s: format_version %d is not supported (this build reads 1)",
                       f->path, version);
    return model_config_from_meta(f, c);
}

mg_status model_config_from_meta(const st_file *f, mg_config *c) {
    memset(c, 0, sizeof *c);
    const char *name = st_meta_get(f, "config");
    snprintf(c->name, sizeof c->name, "%s", name ? name : "custom");
    MG_TRY(meta_int(f, "tae_ch", 1, 1024, &c->tae_ch));
    MG_TRY(meta_int(f, "z_ch", 1, 64, &c->z_ch));
    MG_TRY(meta_int(f, "d", 1, 16384, &c->d));
    MG_TRY(meta_int(f, "layers", 1, 256, &c->layers));
    MG_TRY(meta_int(f, "heads", 1, 256, &c->heads));
    MG_TRY(meta_int(f, "patch", 2, 2, &c->patch));
    MG_TRY(meta_int(f, "ring", 0, 64, &c->ring));
    MG_TRY(meta_float(f, "sigma_ctx", 0, 1, &c->sigma_ctx));
    MG_TRY(meta_float(f, "shift", 0.01, 100, &c->shift));
    MG_TRY(meta_float(f, "rope_theta", 1, 1e9, &c->rope_theta));
    if (c->d % c->heads || (c->d / c->heads) % 2)
        return mg_fail(MG_ERR_FORMAT, "%s: d=%d is not heads=%d times an even head width", f->path,
                       c->d, c->heads);
    return MG_OK;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float f16_to_f32(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return s ? -v : v;
}

void model_widen(const st_tensor *t, float *dst) {
    const unsigned char *src = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
}

/* Checks a tensor against its table entry and returns an F32 pointer to its data, widening
 * BF16/F16 into `spare` (which then advances). */
static mg_status bind_tensor(const st_file *f, const wdesc *w, float **spare, const float **out) {
    const st_tensor *t = st_find(f, w->name);
    if (!t) return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: missing", f->path, w->name);
    if (t->dtype == ST_F32) {
        MG_TRY(st_expect(f, w->name, w->rank, w->shape, &t));
        *out = t->data;
        return MG_OK;
    }
    if (t->dtype != ST_BF16 && t->dtype != ST_F16)
        return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: expected dtype F32, BF16 or F16, found %s", f->path,
                       w->name, st_dtype_name(t->dtype));
    int same = t->rank == w->rank;
    for (int i = 0; same && i < w->rank; i++) same = t->shape[i] == w->shape[i];
    if (!same) {
        char e[96] = "", g[96] = "";
        for (int i = 0; i < w->rank; i++)
            snprintf(e + strlen(e), sizeof e - strlen(e), "%s%lld", i ? "," : "", (long long)w->shape[i]);
        for (int i = 0; i < t->rank; i++)
            snprintf(g + strlen(g), sizeof g - strlen(g), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        return mg_fail(MG_ERR_SHAPE, "%s: tensor %s: expected shape (%s), found (%s)", f->path, w->name, e, g);
    }
    float *dst = *spare;
    model_widen(t, dst);
    *spare += t->numel;
    *out = dst;
    return MG_OK;
}

/* Packs one conv from the file into the arena. */
static mg_status bind_conv(mg_model *m, const wdesc *tab, int *ti, float **spare, float **pack,
                           conv_w *cv, int bias) {
    const wdesc *w = &tab[*ti];
    const float *wt;
    MG_TRY(bind_tensor(&m->file, w, spare, &wt));
    cv->ci = (int)w->shape[1];
    cv->co = (int)w->shape[0];
    cv->wp = *pack;
    conv3x3_pack(cv->wp, wt, cv->ci, cv->co);
    *pack += conv3x3_packed_floats(cv->ci, cv->co);
    (*ti)++;
    cv->b = NULL;
    if (bias) {
        MG_TRY(bind_tensor(&m->file, &tab[*ti], spare, &cv->b));
        (*ti)++;
    }
    return MG_OK;
}

static mg_status bind_linear(mg_model *m, const wdesc *tab, int *ti, float **spare, const float **w,
                             const float **b) {
    MG_TRY(bind_tensor(&m->file, &tab[(*ti)++], spare, w));
    return bind_tensor(&m->file, &tab[(*ti)++], spare, b);
}

static mg_status bind_all(mg_model *m, const wdesc *tab, int n) {
    const mg_config *c = &m->cfg;
    /* Arena: packed convs, then room to widen every non-F32 tensor. */
    size_t pack_floats = 0, widen_floats = 0;
    for (int i = 0; i < n; i++) {
        if (tab[i].rank == 4) pack_floats += conv3x3_packed_floats((int)tab[i].shape[1], (int)tab[i].shape[0]);
        const st_tensor *t = st_find(&m->file, tab[i].name);
        if (t && t->dtype != ST_F32) widen_floats += t->numel;
    }
    size_t off = 0;
    arena_take(NULL, &off, pack_floats);
    arena_take(NULL, &off, widen_floats);
    size_t layers_at = off; /* 64-byte aligned, so fine for the pointer table */
    arena_take(NULL, &off, (c->layers * sizeof(dit_layer) + sizeof(float) - 1) / sizeof(float));
    m->arena_bytes = off * sizeof(float);
    m->arena = aligned_alloc(64, m->arena_bytes);
    if (!m->arena) return mg_fail(MG_ERR_NOMEM, "%s: cannot allocate %zu bytes for weights", m->file.path, m->arena_bytes);
    off = 0;
    float *pack = arena_take(m->arena, &off, pack_floats), *spare = arena_take(m->arena, &off, widen_floats);
    m->dit.layers = (dit_layer *)(m->arena + layers_at);

    int ti = 0;
    tae_weights *T = &m->tae;
    MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->enc_in, 1));
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 1 || i == 4 || i == 7) MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->enc_down[i / 3], 0));
        for (int j = 0; j < 3; j++) MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->enc_b[i][j], 1));
    }
    MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->enc_out, 1));
    MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->dec_in, 1));
    for (int i = 0; i < MG_TAE_BLOCKS; i++) {
        if (i == 3 || i == 6 || i == 9) MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->dec_up[i / 3 - 1], 0));
        for (int j = 0; j < 3; j++) MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->dec_b[i][j], 1));
    }
    MG_TRY(bind_conv(m, tab, &ti, &spare, &pack, &T->dec_out, 1));

    dit_weights *D = &m->dit;
    MG_TRY(bind_linear(m, tab, &ti, &spare, &D->in_w, &D->in_b));
    MG_TRY(bind_linear(m, tab, &ti, &spare, &D->t1_w, &D->t1_b));
    MG_TRY(bind_linear(m, tab, &ti, &spare, &D->t2_w, &D->t2_b));
    MG_TRY(bind_tensor(&m->file, &tab[ti++], &spare, &D->prompt));
    for (int l = 0; l < c->layers; l++) {
        dit_layer *L = &D->layers[l];
        MG_TRY(bind_linear(m, tab, &ti, &spare, &L->ada_w, &L->ada_b));
        MG_TRY(bind_linear(m, tab, &ti, &spare, &L->qkv_w, &L->qkv_b));
        MG_TRY(bind_linear(m, tab, &ti, &spare, &L->proj_w, &L->proj_b));
        MG_TRY(bind_linear(m, tab, &ti, &spare, &L->fc1_w, &L->fc1_b));
        MG_TRY(bind_linear(m, tab, &ti, &spare, &L->fc2_w, &L->fc2_b));
    }
    MG_TRY(bind_linear(m, tab, &ti, &spare, &D->fada_w, &D->fada_b));
    MG_TRY(bind_linear(m, tab, &ti, &spare, &D->fout_w, &D->fout_b));
    return MG_OK;
}

mg_status mg_model_load(const char *path, mg_model **out) {
    *out = NULL;
    mg_model *m = calloc(1, sizeof *m);
    if (!m) return mg_fail(MG_ERR_NOMEM, "out of memory loading %s", path);
    wdesc *tab = NULL;
    mg_status s = st_open(&m->file, path);
    if (s != MG_OK) goto fail;
    if ((s = read_config(&m->file, &m->cfg)) != MG_OK) goto fail;
    const char *plist = st_meta_get(&m->file, "prompts");
    if (!plist) {
        s = mg_fail(MG_ERR_FORMAT, "%s: metadata 'prompts' missing", path);
        goto fail;
    }
    if ((s = parse_prompts(plist, path, m->prompts, &m->n_prompts)) != MG_OK) goto fail;

    int n = model_weight_table(&m->cfg, m->n_prompts, NULL, 0);
    tab = calloc((size_t)n, sizeof *tab);
    if (!tab) {
        s = mg_fail(MG_ERR_NOMEM, "out of memory loading %s", path);
        goto fail;
    }
    model_weight_table(&m->cfg, m->n_prompts, tab, n);
    if (m->file.n_tensors != n) {
        /* Name the first tensor the table does not know, so the message is actionable. */
        for (int i = 0; i < m->file.n_tensors; i++) {
            int known = 0;
            for (int j = 0; j < n && !known; j++) known = strcmp(tab[j].name, m->file.tensors[i].name) == 0;
            if (!known) {
                s = mg_fail(MG_ERR_FORMAT, "%s: tensor %s: not part of config %s", path,
                            m->file.tensors[i].name, m->cfg.name);
                goto fail;
            }
        }
        /* else some are missing: bind_all names the first */
    }
    if ((s = bind_all(m, tab, n)) != MG_OK) goto fail;
    for (int i = 0; i < n; i++) m->params += wdesc_numel(&tab[i]);
    free(tab);
    *out = m;
    return MG_OK;
fail:
    free(tab);
    mg_model_free(m);
    return s;
}

void mg_model_free(mg_model *m) {
    if (!m) return;
    st_close(&m->file);
    free(m->arena);
    free(m);
}

const mg_config *mg_model_config(const mg_model *m) { return &m->cfg; }
size_t mg_model_params(const mg_model *m) { return m->params; }
size_t mg_model_bytes(const mg_model *m) { return m->file.map_size + m->arena_bytes; }
int mg_model_prompt_count(const mg_model *m) { return m->n_prompts; }
const char *mg_model_prompt_name(const mg_model *m, int i) {
    return i >= 0 && i < m->n_prompts ? m->prompts[i] : NULL;
}

/* ---- initialisation ---------------------------------------------------------------------- */

mg_status mg_model_init_file(const char *path, const mg_config *cfg, uint64_t seed, int full_random) {
    char prompts[MG_MAX_PROMPTS][32];
    int n_prompts;
    MG_TRY(parse_prompts(MG_DEFAULT_PROMPTS, "(defaults)", prompts, &n_prompts));
    int n = model_weight_table(cfg, n_prompts, NULL, 0);
    wdesc *tab = calloc((size_t)n, sizeof *tab);
    st_writer *wr = st_writer_new();
    float *buf = NULL;
    mg_status s = MG_OK;
    if (!tab || !wr) {
        s = mg_fail(MG_ERR_NOMEM, "out of memory initialising %s", path);
        goto done;
    }
    model_weight_table(cfg, n_prompts, tab, n);
    size_t maxn = 0;
    for (int i = 0; i < n; i++) maxn = wdesc_numel(&tab[i]) > maxn ? wdesc_numel(&tab[i]) : maxn;
    if (!(buf = malloc(maxn * sizeof(float)))) {
        s = mg_fail(MG_ERR_NOMEM, "out of memory initialising %s", path);
        goto done;
    }
    for (int i = 0; i < n && s == MG_OK; i++) {
        const wdesc *w = &tab[i];
        size_t numel = wdesc_numel(w);
        /* Exact IEEE operations only (see ARCHITECTURE.md), so the oracle reproduces the bits. */
        float b = w->kind == W_PROMPT ? 0.02f * sqrtf(3.0f) : 1.0f / sqrtf((float)w->fan_in);
        if (w->kind == W_ZERO_INIT && !full_random) {
            memset(buf, 0, numel * sizeof(float));
        } else {
            mg_rng r;
            mg_rng_seed(&r, seed ^ mg_fnv1a64(w->name, strlen(w->name)));
            for (size_t k = 0; k < numel; k++) buf[k] = (2.0f * mg_rng_uniform(&r) - 1.0f) * b;
        }
        s = st_writer_add(wr, w->name, ST_F32, w->rank, w->shape, buf);
    }
    if (s == MG_OK) s = model_put_meta(wr, cfg, MG_DEFAULT_PROMPTS);
    if (s == MG_OK) s = st_writer_save(wr, path);
done:
    free(buf);
    free(tab);
    if (wr) st_writer_free(wr);
    return s;
}
