/* The training state's parameter layout: the weight table (model_weight_table) laid out in
 * five flat arrays (parameters, gradients, AdamW m and v, the EMA of the parameters), one allocation. Walking the same
 * table as loading and initialisation means a trained state saves back to a weights file
 * tensor for tensor. */
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/status.h"
#include "train/train.h"

size_t train_params_numel(const train_params *tp, int i) {
    size_t n = 1;
    for (int r = 0; r < tp->table[i].rank; r++) n *= (size_t)tp->table[i].shape[r];
    return n;
}

int train_params_find(const train_params *tp, const char *name) {
    for (int i = 0; i < tp->n_tensors; i++)
        if (strcmp(tp->table[i].name, name) == 0) return i;
    return -1;
}

mg_status train_params_alloc(train_params *tp, const wdesc *tab, int n, const char *who, const char *what) {
    /* one allocation: the table, the offsets, then the five arrays (each tensor 64-byte aligned) */
    size_t head = ((size_t)n * sizeof(wdesc) + (size_t)(n + 1) * sizeof(size_t) + 63) / 64 * 64, count = 0;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int r = 0; r < tab[i].rank; r++) numel *= (size_t)tab[i].shape[r];
        arena_take(NULL, &count, numel);
    }
    tp->mem_bytes = head + 5 * count * sizeof(float);
    tp->mem = aligned_alloc(64, tp->mem_bytes);
    if (!tp->mem) return mg_fail(MG_ERR_NOMEM, "%s: cannot allocate %zu bytes for %s", who, tp->mem_bytes, what);
    memset(tp->mem, 0, tp->mem_bytes);
    tp->n_tensors = n;
    tp->table = tp->mem;
    memcpy(tp->table, tab, (size_t)n * sizeof(wdesc));
    tp->offset = (size_t *)(tp->table + n);
    tp->count = count;
    tp->param = (float *)((char *)tp->mem + head);
    tp->grad = tp->param + count;
    tp->m = tp->grad + count;
    tp->v = tp->m + count;
    tp->ema = tp->v + count;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        tp->offset[i] = off;
        arena_take(NULL, &off, train_params_numel(tp, i));
    }
    tp->offset[n] = off;
    return MG_OK;
}

mg_status train_params_load(train_params *tp, const char *path) {
    memset(tp, 0, sizeof *tp);
    mg_model *m;
    MG_TRY(mg_model_load(path, &m)); /* validates config, names, shapes and dtypes */
    tp->cfg = m->cfg;
    tp->n_prompts = m->n_prompts;
    memcpy(tp->prompts, m->prompts, sizeof tp->prompts);
    int n = model_weight_table(&tp->cfg, tp->n_prompts, NULL, 0);

    wdesc *tab = calloc((size_t)n, sizeof *tab);
    if (!tab) {
        mg_model_free(m);
        return mg_fail(MG_ERR_NOMEM, "%s: out of memory for the weight table", path);
    }
    model_weight_table(&tp->cfg, tp->n_prompts, tab, n);
    mg_status s = train_params_alloc(tp, tab, n, path, "training state");
    free(tab);
    if (s != MG_OK) {
        mg_model_free(m);
        return s;
    }
    size_t count = tp->count;
    tp->dit_first = train_params_find(tp, "dit.in.weight");

    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_find(&m->file, tp->table[i].name); /* present: the load checked */
        float *dst = tp->param + tp->offset[i];
        if (t->dtype == ST_F32)
            memcpy(dst, t->data, t->numel * sizeof(float));
        else
            model_widen(t, dst);
    }
    memcpy(tp->ema, tp->param, count * sizeof(float)); /* the EMA starts at the loaded weights */
    mg_model_free(m);
    return MG_OK;
}

void train_params_free(train_params *tp) {
    free(tp->mem);
    memset(tp, 0, sizeof *tp);
}

void train_zero_grad(train_params *tp, int first, int last) {
    memset(tp->grad + tp->offset[first], 0, (tp->offset[last] - tp->offset[first]) * sizeof(float));
}
