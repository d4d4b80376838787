/* Checkpoints (an index and parts, each written atomically) and model files. See checkpoint.h
 * for the layout and the guarantees, docs/TRAINING.md for the sizes. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "core/tmpfile.h"

void ckpt_meta_set(ckpt_meta *cm, const char *key, const char *fmt, ...) {
    int i = 0;
    while (i < cm->n && strcmp(cm->key[i], key) != 0) i++;
    if (i == cm->n) {
        if (cm->n >= (int)(sizeof cm->key / sizeof cm->key[0])) return;
        cm->n++;
    }
    snprintf(cm->key[i], sizeof cm->key[i], "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cm->val[i], sizeof cm->val[i], fmt, ap);
    va_end(ap);
}

const char *ckpt_meta_get(const ckpt_meta *cm, const char *key) {
    for (int i = 0; i < cm->n; i++)
        if (strcmp(cm->key[i], key) == 0) return cm->val[i];
    return NULL;
}

/* ---- model metadata (the keys of docs/ARCHITECTURE.md, "Weights file") ------------------- */

static mg_status put_model_meta(st_writer *w, const train_params *tp) {
    char list[MG_MAX_PROMPTS * 33] = "";
    for (int i = 0; i < tp->n_prompts; i++) {
        if (i) strcat(list, ",");
        strcat(list, tp->prompts[i]);
    }
    return model_put_meta(w, &tp->cfg, list);
}

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

mg_status ckpt_write_model(const char *path, const train_params *tp, const float *arr, st_dtype dtype) {
    if (dtype != ST_F32 && dtype != ST_BF16) return mg_fail(MG_ERR_ARG, "%s: model dtype must be F32 or BF16", path);
    st_writer *w = st_writer_new();
    if (!w) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", path);
    size_t maxn = 0;
    for (int i = 0; i < tp->n_tensors; i++)
        if (train_params_numel(tp, i) > maxn) maxn = train_params_numel(tp, i);
    uint16_t *buf = dtype == ST_BF16 ? malloc(maxn * sizeof(uint16_t)) : NULL;
    mg_status s = dtype == ST_BF16 && !buf ? mg_fail(MG_ERR_NOMEM, "%s: out of memory", path) : MG_OK;
    for (int i = 0; i < tp->n_tensors && s == MG_OK; i++) {
        const wdesc *t = &tp->table[i];
        const float *src = arr + tp->offset[i];
        if (dtype == ST_F32) {
            s = st_writer_add(w, t->name, ST_F32, t->rank, t->shape, src);
        } else {
            size_t n = train_params_numel(tp, i);
            for (size_t k = 0; k < n; k++) buf[k] = to_bf16(src[k]);
            s = st_writer_add(w, t->name, ST_BF16, t->rank, t->shape, buf);
        }
    }
    if (s == MG_OK) s = put_model_meta(w, tp);
    if (s == MG_OK) s = st_writer_save(w, path);
    free(buf);
    st_writer_free(w);
    return s;
}

size_t ckpt_model_bytes(const train_params *tp, st_dtype dtype) {
    size_t n = 0;
    for (int i = 0; i < tp->n_tensors; i++) n += train_params_numel(tp, i);
    return n * st_dtype_size(dtype) + 64 * (size_t)tp->n_tensors + 1024;
}

size_t ckpt_bytes(const train_params *tp, int first, int last, st_dtype moments) {
    size_t all = 0, trained = 0;
    for (int i = 0; i < tp->n_tensors; i++) {
        all += train_params_numel(tp, i);
        if (i >= first && i < last) trained += train_params_numel(tp, i);
    }
    return (all + trained) * sizeof(float) + 2 * trained * st_dtype_size(moments) + 4 * 80 * (size_t)tp->n_tensors +
           4096;
}

/* ---- saving ------------------------------------------------------------------------------ */

static const char *const kinds[4] = {"param", "ema", "m", "v"};
/* The auxiliary network's kinds (ckpt_save_aux): no EMA, it is never shipped. */
static const char *const aux_kinds[3] = {"aux.param", "aux.m", "aux.v"};

/* The kinds of tensor a checkpoint holds for tp: the model's (param, ema, m, v) or, with aux,
 * the auxiliary network's (aux.param, aux.m, aux.v). Their names and arrays; returns how many. */
static int kinds_of(const train_params *tp, int aux, const char *const **names, float *arr[4]) {
    if (aux) {
        *names = aux_kinds;
        arr[0] = tp->param, arr[1] = tp->m, arr[2] = tp->v;
        return 3;
    }
    *names = kinds;
    arr[0] = tp->param, arr[1] = tp->ema, arr[2] = tp->m, arr[3] = tp->v;
    return 4;
}

static void part_path(char *buf, size_t n, const char *path, long step, int part) {
    snprintf(buf, n, "%s.step%ld.part%d", path, step, part);
}

/* Deletes PATH.step<S>.part* (and their temporaries) for every S but keep_step (keep_step < 0:
 * only temporaries), and PATH.tmp.<pid> left by a killed writer (pid not ours). */
static void remove_old_parts(const char *path, long keep_step) {
    char dir[4096], prefix[512], keep[560];
    const char *slash = strrchr(path, '/');
    if (slash) {
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        if (!dir[0]) strcpy(dir, "/");
    } else {
        strcpy(dir, ".");
    }
    snprintf(prefix, sizeof prefix, "%s.step", slash ? slash + 1 : path);
    snprintf(keep, sizeof keep, "%s%ld.part", prefix, keep_step);
    char tmp[560], mine[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.", slash ? slash + 1 : path);
    snprintf(mine, sizeof mine, "%s%ld", tmp, (long)getpid());
    DIR *d = opendir(dir);
    if (!d) return; /* stale parts are only wasted space */
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int stale_tmp = !strncmp(e->d_name, tmp, strlen(tmp)) && strcmp(e->d_name, mine) != 0;
        int part = !strncmp(e->d_name, prefix, strlen(prefix));
        if (!stale_tmp && !part) continue;
        if (part && keep_step < 0 && !strstr(e->d_name, ".tmp.")) continue;
        if (part && keep_step >= 0 && strncmp(e->d_name, keep, strlen(keep)) == 0 && !strstr(e->d_name, ".tmp.")) continue;
        char full[4608];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        unlink(full);
    }
    closedir(d);
}

void ckpt_remove_stale(const char *path) { remove_old_parts(path, -1); }

mg_status ckpt_save(const char *path, const train_params *tp, int first, int last, const char *stage, long step,
                    const ckpt_meta *extra, size_t part_bytes) {
    return ckpt_save_ex(path, tp, first, last, stage, step, extra, part_bytes, ST_F32);
}

/* The parts being written: a writer that rolls over to the next part when one is full. */
typedef struct part_writer {
    const char *path;
    long step;
    size_t part_bytes, in_part;
    int part;
    st_writer *w;
} part_writer;

static mg_status part_add(part_writer *pw, const char *name, st_dtype dt, int rank, const int64_t *shape,
                          const void *data, size_t bytes) {
    char pp[512], v[64];
    mg_status s = MG_OK;
    if (pw->w && pw->in_part + bytes + 256 > pw->part_bytes - 65536) { /* room for the header */
        part_path(pp, sizeof pp, pw->path, pw->step, pw->part);
        s = st_writer_save(pw->w, pp);
        st_writer_free(pw->w);
        pw->w = NULL;
        pw->part++;
        MG_TRY(s);
    }
    if (!pw->w) {
        if (!(pw->w = st_writer_new())) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", pw->path);
        pw->in_part = 0;
        snprintf(v, sizeof v, "%ld", pw->step);
        s = st_writer_meta(pw->w, "format", "mirage-train-part");
        if (s == MG_OK) s = st_writer_meta(pw->w, "step", v);
        snprintf(v, sizeof v, "%d", pw->part);
        if (s == MG_OK) s = st_writer_meta(pw->w, "part", v);
        MG_TRY(s);
    }
    pw->in_part += bytes + 256;
    return st_writer_add(pw->w, name, dt, rank, shape, data);
}

/* <kind>/<name> for every kind of tp (kinds_of) into the parts, kind by kind in table order:
 * the weights of every tensor, the other kinds of [first, last) only. Kinds from lossy on are
 * written in BF16 through half (room for the largest tensor), the others in F32. */
static mg_status add_kinds(part_writer *pw, const train_params *tp, int aux, int first, int last, int lossy,
                           uint16_t *half) {
    const char *const *names;
    float *arr[4];
    int nk = kinds_of(tp, aux, &names, arr);
    mg_status s = MG_OK;
    for (int k = 0; k < nk && s == MG_OK; k++) {
        int a = k == 0 ? 0 : first, b = k == 0 ? tp->n_tensors : last;
        for (int i = a; i < b && s == MG_OK; i++) {
            const wdesc *t = &tp->table[i];
            const float *src = arr[k] + tp->offset[i];
            size_t n = train_params_numel(tp, i);
            char name[ST_MAX_NAME];
            snprintf(name, sizeof name, "%s/%s", names[k], t->name);
            if (k >= lossy) {
                for (size_t q = 0; q < n; q++) half[q] = to_bf16(src[q]);
                s = part_add(pw, name, ST_BF16, t->rank, t->shape, half, n * 2);
            } else {
                s = part_add(pw, name, ST_F32, t->rank, t->shape, src, n * sizeof(float));
            }
        }
    }
    return s;
}

mg_status ckpt_save_ex(const char *path, const train_params *tp, int first, int last, const char *stage, long step,
                       const ckpt_meta *extra, size_t part_bytes, st_dtype moments) {
    return ckpt_save_aux(path, tp, first, last, stage, step, extra, part_bytes, moments, NULL);
}

mg_status ckpt_save_aux(const char *path, const train_params *tp, int first, int last, const char *stage, long step,
                        const ckpt_meta *extra, size_t part_bytes, st_dtype moments, const train_params *aux) {
    if (strlen(path) > 400) return mg_fail(MG_ERR_ARG, "checkpoint path too long: %s", path);
    if (moments != ST_F32 && moments != ST_BF16) return mg_fail(MG_ERR_ARG, "%s: moments must be F32 or BF16", path);
    size_t maxn = 0;
    for (int i = 0; i < tp->n_tensors; i++)
        if (train_params_numel(tp, i) > maxn) maxn = train_params_numel(tp, i);
    uint16_t *half = moments == ST_BF16 ? malloc(maxn * sizeof(uint16_t)) : NULL;
    if (moments == ST_BF16 && !half) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", path);
    if (part_bytes < 1024 * 1024) part_bytes = 1024 * 1024;
    part_writer pw = {.path = path, .step = step, .part_bytes = part_bytes};
    char pp[512], v[64];
    st_writer *w = NULL;
    /* tensors in order: param/<name> for all, then ema/m/v for the trained range; then the
     * auxiliary network (the discriminator of --adv): small, always F32 */
    mg_status s = add_kinds(&pw, tp, 0, first, last, moments == ST_BF16 ? 2 : 4, half);
    if (aux && s == MG_OK) s = add_kinds(&pw, aux, 1, 0, aux->n_tensors, 3, NULL);
    int part = pw.part;
    if (pw.w) {
        if (s == MG_OK) {
            part_path(pp, sizeof pp, path, step, part);
            s = st_writer_save(pw.w, pp);
            part++;
        }
        st_writer_free(pw.w);
    }
    free(half);
    if (s != MG_OK) return s;

    /* the index, last: from this rename on, the new parts are the checkpoint */
    if (!(w = st_writer_new())) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", path);
    s = put_model_meta(w, tp);
    if (s == MG_OK) s = st_writer_meta(w, "format", "mirage-train"); /* replaces "mirage" */
    snprintf(v, sizeof v, "%d", CKPT_VERSION);
    if (s == MG_OK) s = st_writer_meta(w, "ckpt_version", v);
    if (s == MG_OK) s = st_writer_meta(w, "stage", stage);
    snprintf(v, sizeof v, "%ld", step);
    if (s == MG_OK) s = st_writer_meta(w, "step", v);
    snprintf(v, sizeof v, "%d", part);
    if (s == MG_OK) s = st_writer_meta(w, "parts", v);
    if (s == MG_OK) s = st_writer_meta(w, "moments", moments == ST_BF16 ? "bf16" : "f32");
    for (int i = 0; extra && i < extra->n && s == MG_OK; i++) s = st_writer_meta(w, extra->key[i], extra->val[i]);
    if (s == MG_OK) s = st_writer_save(w, path);
    st_writer_free(w);
    if (s == MG_OK) remove_old_parts(path, step);
    return s;
}

/* ---- loading ----------------------------------------------------------------------------- */

static mg_status meta_long(const st_file *f, const char *key, long lo, long hi, long *out) {
    const char *v = st_meta_get(f, key);
    if (!v) return mg_fail(MG_ERR_FORMAT, "%s: metadata '%s' missing", f->path, key);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        return mg_fail(MG_ERR_FORMAT, "%s: metadata '%s': expected an integer in [%ld, %ld], found '%s'", f->path,
                       key, lo, hi, v);
    *out = x;
    return MG_OK;
}

mg_status ckpt_index_parse(const st_file *f, ckpt_index *ix) {
    memset(ix, 0, sizeof *ix);
    const char *path = f->path;
    const char *fmt = st_meta_get(f, "format"), *stg = st_meta_get(f, "stage");
    if (!fmt || strcmp(fmt, "mirage-train") != 0)
        return mg_fail(MG_ERR_FORMAT, "%s: not a mirage training checkpoint (metadata 'format' is '%s')", path,
                       fmt ? fmt : "(none)");
    long version = 0;
    MG_TRY(meta_long(f, "ckpt_version", 0, 1 << 30, &version));
    if (version != CKPT_VERSION)
        return mg_fail(MG_ERR_FORMAT, "%s: checkpoint version %ld is not supported (this build reads %d)", path,
                       version, CKPT_VERSION);
    if (!stg || (strcmp(stg, "tae") && strcmp(stg, "dit")))
        return mg_fail(MG_ERR_FORMAT, "%s: metadata 'stage': expected tae or dit, found '%s'", path, stg ? stg : "(none)");
    snprintf(ix->stage, sizeof ix->stage, "%s", stg);
    MG_TRY(meta_long(f, "step", 0, 1L << 40, &ix->step));
    MG_TRY(meta_long(f, "parts", 1, 100000, &ix->parts));
    MG_TRY(model_config_from_meta(f, &ix->cfg));
    const char *prompts = st_meta_get(f, "prompts");
    if (!prompts || strcmp(prompts, MG_DEFAULT_PROMPTS) != 0)
        return mg_fail(MG_ERR_FORMAT, "%s: metadata 'prompts': expected the default list '%s', found '%s'",
                       f->path, MG_DEFAULT_PROMPTS, prompts ? prompts : "(none)");
    return MG_OK;
}

/* A train_params of the index's config: the layout comes from params.c through a freshly
 * initialised weights file (every value is then overwritten from the parts). */
static mg_status params_for(const mg_config *c, train_params *tp) {
    char tmp[128];
    int fd = mg_tmpfile(tmp, sizeof tmp, "ckpt");
    if (fd < 0) return mg_fail(MG_ERR_IO, "cannot create a temporary file: %s", strerror(errno));
    close(fd);
    mg_status s = mg_model_init_file(tmp, c, 0, 0);
    if (s == MG_OK) s = train_params_load(tp, tmp);
    unlink(tmp);
    return s;
}

/* Reads the kinds of tp (kinds_of; with aux the aux.* tensors, else all the others) from the
 * parts of the checkpoint at path, whose index is ix: each part checked to be the part of the
 * index's step it is named for, each tensor found in tp's table by its name and checked (F32,
 * or BF16 for the model's moments; shape; once), copied in. Every kind of every tensor must
 * come, the weights of all, the other kinds of [first, last) (only those may be there);
 * missing is added to the message for one that did not. */
static mg_status read_kinds(const char *path, const ckpt_index *ix, train_params *tp, int aux, int first, int last,
                            const char *missing) {
    const char *const *names;
    float *arrays[4];
    int nk = kinds_of(tp, aux, &names, arrays);
    unsigned char *seen = calloc((size_t)tp->n_tensors * nk, 1);
    if (!seen) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", path);
    mg_status s = MG_OK;
    for (long p = 0; p < ix->parts && s == MG_OK; p++) {
        char pp[512];
        part_path(pp, sizeof pp, path, ix->step, (int)p);
        st_file pf;
        if ((s = st_open(&pf, pp)) != MG_OK) {
            char why[600];
            snprintf(why, sizeof why, "%s", mg_last_error()); /* mg_fail rewrites that buffer */
            s = mg_fail(MG_ERR_FORMAT, "%s: part %ld of %ld is missing or damaged: %s", path, p, ix->parts, why);
            break;
        }
        long pstep = -1, pidx = -1;
        const char *pfmt = st_meta_get(&pf, "format");
        if (!pfmt || strcmp(pfmt, "mirage-train-part") || meta_long(&pf, "step", 0, 1L << 40, &pstep) != MG_OK ||
            meta_long(&pf, "part", 0, 100000, &pidx) != MG_OK || pstep != ix->step || pidx != p)
            s = mg_fail(MG_ERR_FORMAT, "%s: not part %ld of step %ld", pp, p, ix->step);
        for (int t = 0; t < pf.n_tensors && s == MG_OK; t++) {
            const st_tensor *st = &pf.tensors[t];
            int of_aux = !strncmp(st->name, "aux.", 4);
            if (of_aux != aux) continue; /* the other network's */
            const char *slash = strchr(st->name, '/');
            int k = -1;
            for (int q = 0; q < nk && slash; q++)
                if ((size_t)(slash - st->name) == strlen(names[q]) && !strncmp(st->name, names[q], strlen(names[q])))
                    k = q;
            int i = k >= 0 ? train_params_find(tp, slash + 1) : -1;
            if (i < 0 || (k > 0 && (i < first || i >= last))) {
                s = mg_fail(MG_ERR_FORMAT, "%s: unexpected tensor %s", pp, st->name);
                break;
            }
            const wdesc *w = &tp->table[i];
            int ok = (st->dtype == ST_F32 || (!aux && k >= 2 && st->dtype == ST_BF16)) && st->rank == w->rank;
            for (int r = 0; ok && r < w->rank; r++) ok = st->shape[r] == w->shape[r];
            if (!ok) {
                s = mg_fail(MG_ERR_SHAPE, "%s: tensor %s: expected F32 of the shape of %s, found %s rank %d", pp,
                            st->name, w->name, st_dtype_name(st->dtype), st->rank);
                break;
            }
            if (seen[(size_t)i * nk + k]) {
                s = mg_fail(MG_ERR_FORMAT, "%s: tensor %s appears twice", pp, st->name);
                break;
            }
            seen[(size_t)i * nk + k] = 1;
            if (st->dtype == ST_F32) {
                memcpy(arrays[k] + tp->offset[i], st->data, st->numel * sizeof(float));
            } else { /* moments saved with --ckpt-moments bf16 */
                const uint16_t *h = st->data;
                float *dst = arrays[k] + tp->offset[i];
                for (size_t q = 0; q < st->numel; q++) {
                    uint32_t u = (uint32_t)h[q] << 16;
                    memcpy(&dst[q], &u, 4);
                }
            }
        }
        st_close(&pf);
    }
    for (int i = 0; i < tp->n_tensors && s == MG_OK; i++)
        for (int k = 0; k < nk && s == MG_OK; k++) {
            if (k > 0 && (i < first || i >= last)) continue;
            if (!seen[(size_t)i * nk + k])
                s = mg_fail(MG_ERR_FORMAT, "%s: tensor %s/%s missing%s", path, names[k], tp->table[i].name, missing);
        }
    free(seen);
    return s;
}

mg_status ckpt_load(const char *path, train_params *tp, char stage[8], long *step, ckpt_meta *extra) {
    memset(tp, 0, sizeof *tp);
    st_file f;
    MG_TRY(st_open(&f, path));
    ckpt_index ix;
    mg_status s = ckpt_index_parse(&f, &ix);
    if (s != MG_OK) goto done;
    const char *stg = ix.stage;
    snprintf(stage, 8, "%s", stg);
    *step = ix.step;
    if ((s = params_for(&ix.cfg, tp)) != MG_OK) goto done;
    int first = strcmp(stg, "tae") == 0 ? 0 : tp->dit_first, last = strcmp(stg, "tae") == 0 ? tp->dit_first : tp->n_tensors;
    const char *fz = st_meta_get(&f, "train_freeze_encoder"); /* tae, decoder only: the encoder is frozen too */
    if (!strcmp(stg, "tae") && fz && !strcmp(fz, "1")) first = train_params_find(tp, "dec.in.weight");
    s = read_kinds(path, &ix, tp, 0, first, last, "");
    if (s == MG_OK) {
        /* the frozen network: its EMA is its weights, its moments zero (never updated) */
        for (int i = 0; i < tp->n_tensors; i++) {
            if (i >= first && i < last) continue;
            size_t n = train_params_numel(tp, i);
            memcpy(tp->ema + tp->offset[i], tp->param + tp->offset[i], n * sizeof(float));
            memset(tp->m + tp->offset[i], 0, n * sizeof(float));
            memset(tp->v + tp->offset[i], 0, n * sizeof(float));
        }
        memset(tp->grad, 0, tp->count * sizeof(float));
        if (extra) {
            memset(extra, 0, sizeof *extra);
            for (int i = 0; i < f.n_meta; i++) ckpt_meta_set(extra, f.meta[i].key, "%s", f.meta[i].value);
        }
    }
done:
    st_close(&f);
    if (s != MG_OK && tp->mem) train_params_free(tp);
    return s;
}

mg_status ckpt_load_aux(const char *path, train_params *aux) {
    st_file f;
    MG_TRY(st_open(&f, path));
    ckpt_index ix;
    mg_status s = ckpt_index_parse(&f, &ix);
    st_close(&f);
    MG_TRY(s);
    s = read_kinds(path, &ix, aux, 1, 0, aux->n_tensors, " (a checkpoint of a run without it?)");
    if (s == MG_OK) {
        memcpy(aux->ema, aux->param, aux->count * sizeof(float));
        memset(aux->grad, 0, aux->count * sizeof(float));
    }
    return s;
}
