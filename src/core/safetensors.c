/* safetensors reader (mmap, validated) and writer (temp file, fsync, rename).
 *
 * A file is: u64 little-endian N, N bytes of JSON header, then the data section. The header
 * maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, offsets relative
 * to the start of the data section (byte 8 + N), plus an optional "__metadata__" object of
 * strings. Everything in the header is checked against the bytes actually present before any
 * pointer is handed out; see safetensors.h for the list. */
#include "core/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/status.h"

/* No real header comes near this (a 1B-parameter model's is ~60 KiB); a bigger length means
 * the file is not safetensors, and refusing it keeps us from allocating gigabytes for it. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
/* JSON numbers reach us as doubles, which hold every integer up to 2^53 exactly. */
#define ST_MAX_INT 9007199254740992.0
#define ST_META_KEY_MAX ((int)sizeof(((st_meta *)0)->key))
#define ST_SHAPE_STR 200 /* "(" + 8 dims of up to 20 digits + commas + ")" */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [ST_F32] = {"F32", 4}, [ST_BF16] = {"BF16", 2}, [ST_F16] = {"F16", 2}, [ST_I32] = {"I32", 4},
    [ST_U8] = {"U8", 1},   [ST_I64] = {"I64", 8},   [ST_F64] = {"F64", 8},
};
#define ST_N_DTYPES ((unsigned)(sizeof st_dtypes / sizeof st_dtypes[0]))

size_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_N_DTYPES ? st_dtypes[t].size : 0; }

const char *st_dtype_name(st_dtype t) {
    return (unsigned)t < ST_N_DTYPES ? st_dtypes[t].name : "?";
}

static int st_dtype_parse(const char *s, st_dtype *out) {
    for (unsigned i = 0; i < ST_N_DTYPES; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (st_dtype)i;
            return 1;
        }
    }
    return 0;
}

/* "(384,1152)"; "()" for a scalar. */
static const char *st_shape_str(char buf[ST_SHAPE_STR], int rank, const int64_t *shape) {
    int k = snprintf(buf, ST_SHAPE_STR, "(");
    for (int i = 0; i < rank; i++)
        k += snprintf(buf + k, ST_SHAPE_STR - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    snprintf(buf + k, ST_SHAPE_STR - k, ")");
    return buf;
}

/* Bounded copy that always terminates (the caller has checked the length where it matters). */
static void st_copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* Byte size of numel elements of a dtype, or 0 with *ok = 0 when it does not fit a size_t. */
static size_t st_numel(int rank, const int64_t *shape, int *ok) {
    size_t n = 1;
    *ok = 1;
    for (int i = 0; i < rank; i++)
        if (shape[i] == 0) return 0; /* a zero dim makes the rest irrelevant, even huge ones */
    for (int i = 0; i < rank; i++) {
        if ((uint64_t)shape[i] > SIZE_MAX / n) {
            *ok = 0;
            return 0;
        }
        n *= (size_t)shape[i];
    }
    return n;
}

/* ---- reading ------------------------------------------------------------------------ */

static const char *st_json_kind(const cJSON *j) {
    if (!j) return "nothing";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "something else";
}

/* A non-negative JSON integer as int64, or -1 if j is anything else (a negative or fractional
 * number, one too big to have been read exactly, a string, ...). */
static int64_t st_json_uint(const cJSON *j) {
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= ST_MAX_INT) || v != floor(v)) return -1; /* NaN fails the first test */
    return (int64_t)v;
}

/* What a bad number was, for messages: "-3", "1.5", "a string". */
static const char *st_json_found(char buf[64], const cJSON *j) {
    if (cJSON_IsNumber(j))
        snprintf(buf, 64, "%.17g", j->valuedouble);
    else
        snprintf(buf, 64, "%s", st_json_kind(j));
    return buf;
}

/* Fills t from one header entry; base is the start of the data section. */
static mg_status st_parse_tensor(const st_file *f, st_tensor *t, const cJSON *e,
                                 const unsigned char *base, size_t data_size) {
    const char *path = f->path, *name = e->string;
    char found[64], shp[ST_SHAPE_STR];

    size_t len = strlen(name);
    if (len >= ST_MAX_NAME)
        return mg_fail(MG_ERR_FORMAT,
                       "%s: tensor name \"%.40s...\" is %zu bytes, expected at most %d", path, name,
                       len, ST_MAX_NAME - 1);
    memcpy(t->name, name, len + 1);
    if (!cJSON_IsObject(e))
        return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: expected an object, found %s", path, name,
                       st_json_kind(e));

    /* Walk the members once rather than look them up, so that a repeated key (which cJSON
     * keeps and another reader might resolve differently) is an error, not a coin toss. */
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *m = e->child; m; m = m->next) {
        const cJSON **slot = strcmp(m->string, "dtype") == 0          ? &dtype
                             : strcmp(m->string, "shape") == 0        ? &shape
                             : strcmp(m->string, "data_offsets") == 0 ? &offsets
                                                                      : NULL;
        if (!slot) continue; /* unknown keys are allowed by the format */
        if (*slot)
            return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: \"%s\" appears twice, expected once",
                           path, name, m->string);
        *slot = m;
    }

    if (!dtype || !cJSON_IsString(dtype))
        return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: expected \"dtype\" to be a string, found %s",
                       path, name, st_json_kind(dtype));
    if (!st_dtype_parse(dtype->valuestring, &t->dtype))
        return mg_fail(MG_ERR_FORMAT,
                       "%s: tensor %s: unknown dtype \"%.32s\", expected F32, BF16, F16, I32, U8, "
                       "I64 or F64",
                       path, name, dtype->valuestring);

    if (!shape || !cJSON_IsArray(shape))
        return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: expected \"shape\" to be an array, found %s",
                       path, name, st_json_kind(shape));
    int rank = cJSON_GetArraySize(shape);
    if (rank > ST_MAX_RANK)
        return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: rank %d, expected at most %d", path, name,
                       rank, ST_MAX_RANK);
    t->rank = rank;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        t->shape[i] = st_json_uint(d);
        if (t->shape[i] < 0)
            return mg_fail(MG_ERR_FORMAT,
                           "%s: tensor %s: shape[%d] is %s, expected a non-negative integer", path,
                           name, i, st_json_found(found, d));
    }
    int ok;
    t->numel = st_numel(rank, t->shape, &ok);
    size_t esize = st_dtype_size(t->dtype);
    if (!ok || t->numel > SIZE_MAX / esize)
        return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: shape %s of %s is too large to address", path,
                       name, st_shape_str(shp, rank, t->shape), st_dtype_name(t->dtype));
    t->nbytes = t->numel * esize;

    if (!offsets || !cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return mg_fail(
            MG_ERR_FORMAT, "%s: tensor %s: expected \"data_offsets\" to be [begin, end], found %s",
            path, name,
            cJSON_IsArray(offsets) ? "an array of another length" : st_json_kind(offsets));
    int64_t begin = st_json_uint(offsets->child), end = st_json_uint(offsets->child->next);
    if (begin < 0 || end < 0)
        return mg_fail(MG_ERR_FORMAT,
                       "%s: tensor %s: data_offsets %s is %s, expected a non-negative integer",
                       path, name, begin < 0 ? "begin" : "end",
                       st_json_found(found, begin < 0 ? offsets->child : offsets->child->next));
    if (begin > end)
        return mg_fail(MG_ERR_FORMAT,
                       "%s: tensor %s: data_offsets [%lld, %lld]: expected begin <= end", path,
                       name, (long long)begin, (long long)end);
    if ((uint64_t)end > data_size)
        return mg_fail(
            MG_ERR_FORMAT,
            "%s: tensor %s: data_offsets [%lld, %lld] end past the data section, expected "
            "end <= %zu (file truncated?)",
            path, name, (long long)begin, (long long)end, data_size);
    if ((uint64_t)(end - begin) != t->nbytes)
        return mg_fail(MG_ERR_FORMAT,
                       "%s: tensor %s: data_offsets [%lld, %lld] span %lld bytes, expected %zu (%s "
                       "shape %s)",
                       path, name, (long long)begin, (long long)end, (long long)(end - begin),
                       t->nbytes, st_dtype_name(t->dtype), st_shape_str(shp, rank, t->shape));
    /* An empty tensor has no bytes to point at; give it the (aligned) start of the buffer
     * rather than an offset that may be misaligned for its dtype. */
    t->data = t->nbytes ? (const void *)(base + begin) : f->map;
    return MG_OK;
}

static int st_cmp_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int st_cmp_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int st_cmp_meta(const void *a, const void *b) {
    return strcmp((*(const st_meta *const *)a)->key, (*(const st_meta *const *)b)->key);
}

/* Names unique; byte ranges disjoint (empty tensors overlap nothing). Both by sorting, since
 * a hostile header can hold a million entries. */
static mg_status st_check_tensors(const st_file *f, const unsigned char *base) {
    int n = f->n_tensors;
    if (n < 2) return MG_OK;
    const st_tensor **v = malloc((size_t)n * sizeof *v);
    if (!v) return mg_fail(MG_ERR_NOMEM, "%s: out of memory checking %d tensors", f->path, n);
    mg_status s = MG_OK;

    for (int i = 0; i < n; i++) v[i] = &f->tensors[i];
    qsort(v, n, sizeof *v, st_cmp_name);
    for (int i = 1; i < n; i++) {
        if (strcmp(v[i - 1]->name, v[i]->name) == 0) {
            s = mg_fail(MG_ERR_FORMAT, "%s: tensor %s: name appears twice, expected unique names",
                        f->path, v[i]->name);
            goto done;
        }
    }

    qsort(v, n, sizeof *v, st_cmp_begin);
    const st_tensor *last = NULL; /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < n; i++) {
        const st_tensor *t = v[i];
        if (t->nbytes == 0) continue;
        size_t b = (size_t)((const unsigned char *)t->data - base);
        if (last) {
            size_t lb = (size_t)((const unsigned char *)last->data - base), le = lb + last->nbytes;
            if (b < le) {
                s = mg_fail(
                    MG_ERR_FORMAT,
                    "%s: tensor %s: data [%zu, %zu) overlaps tensor %s [%zu, %zu), expected "
                    "disjoint ranges",
                    f->path, t->name, b, b + t->nbytes, last->name, lb, le);
                goto done;
            }
        }
        last = t; /* sorted by begin and disjoint so far, so t now reaches furthest */
    }
done:
    free(v);
    return s;
}

static mg_status st_parse_meta(st_file *f, const cJSON *m) {
    if (!cJSON_IsObject(m))
        return mg_fail(MG_ERR_FORMAT, "%s: __metadata__: expected an object of strings, found %s",
                       f->path, st_json_kind(m));
    int n = cJSON_GetArraySize(m);
    f->meta = calloc(n ? (size_t)n : 1, sizeof *f->meta);
    if (!f->meta)
        return mg_fail(MG_ERR_NOMEM, "%s: out of memory for %d metadata entries", f->path, n);
    for (const cJSON *c = m->child; c; c = c->next) {
        size_t len = strlen(c->string);
        if (len >= (size_t)ST_META_KEY_MAX)
            return mg_fail(MG_ERR_FORMAT,
                           "%s: __metadata__ key \"%.40s...\" is %zu bytes, expected at most %d",
                           f->path, c->string, len, ST_META_KEY_MAX - 1);
        if (!cJSON_IsString(c))
            return mg_fail(MG_ERR_FORMAT,
                           "%s: __metadata__ key %s: expected a string value, found %s", f->path,
                           c->string, st_json_kind(c));
        st_meta *e = &f->meta[f->n_meta];
        memcpy(e->key, c->string, len + 1);
        e->value = strdup(c->valuestring);
        if (!e->value) return mg_fail(MG_ERR_NOMEM, "%s: out of memory for metadata", f->path);
        f->n_meta++;
    }
    if (f->n_meta < 2) return MG_OK;
    const st_meta **v = malloc((size_t)f->n_meta * sizeof *v);
    if (!v) return mg_fail(MG_ERR_NOMEM, "%s: out of memory for metadata", f->path);
    for (int i = 0; i < f->n_meta; i++) v[i] = &f->meta[i];
    qsort(v, f->n_meta, sizeof *v, st_cmp_meta);
    mg_status s = MG_OK;
    for (int i = 1; i < f->n_meta && s == MG_OK; i++)
        if (strcmp(v[i - 1]->key, v[i]->key) == 0)
            s = mg_fail(MG_ERR_FORMAT, "%s: __metadata__ key %s: appears twice, expected once",
                        f->path, v[i]->key);
    free(v);
    return s;
}

/* The model loader reads F32 tensors through `data` as const float *, so each tensor must sit
 * at an address aligned to its element size. Our writer guarantees that (header padded to 8,
 * largest elements first), but the format allows any offsets and any header length. For such
 * a file, rare, we copy every tensor into one malloc'd block at 8-byte aligned offsets and drop
 * the original bytes; the names and metadata were already copied out of them. */
static mg_status st_align(st_file *f) {
    int misaligned = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->nbytes && (uintptr_t)t->data % st_dtype_size(t->dtype)) misaligned = 1;
    }
    if (!misaligned) return MG_OK;

    size_t total = 0; /* tensors are disjoint inside the data section, so this cannot overflow */
    for (int i = 0; i < f->n_tensors; i++) total += (f->tensors[i].nbytes + 7) & ~(size_t)7;
    unsigned char *block = malloc(total ? total : 1); /* malloc aligns to at least 8 */
    if (!block)
        return mg_fail(MG_ERR_NOMEM,
                       "%s: out of memory for an aligned copy of %zu bytes of tensors", f->path,
                       total);
    size_t off = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        st_tensor *t = &f->tensors[i];
        if (t->nbytes) memcpy(block + off, t->data, t->nbytes);
        t->data = block + off;
        off += (t->nbytes + 7) & ~(size_t)7;
    }
    if (f->map_is_heap)
        free(f->map);
    else
        munmap(f->map, f->map_size);
    f->map = block;
    f->map_size = total;
    f->map_is_heap = 1;
    return MG_OK;
}

/* Validates f->map[0, f->map_size) and fills the tensor and metadata tables. */
static mg_status st_parse(st_file *f) {
    const unsigned char *p = f->map;
    size_t size = f->map_size;
    if (size < 8)
        return mg_fail(MG_ERR_FORMAT,
                       "%s: file is %zu bytes, expected at least 8 (the header length)", f->path,
                       size);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)p[i] << (8 * i);
    if (hlen > ST_MAX_HEADER)
        return mg_fail(
            MG_ERR_FORMAT,
            "%s: header length %llu, expected at most %llu (100 MiB): not a safetensors file?",
            f->path, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen > size - 8)
        return mg_fail(MG_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file, expected at most %zu",
                       f->path, (unsigned long long)hlen, size - 8);
    const unsigned char *base = p + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;

    /* cJSON gets its own NUL-terminated copy: the header is not terminated in the file, and a
     * terminator bounds any scanning cJSON might do past the length it was given. */
    char *text = malloc((size_t)hlen + 1);
    if (!text)
        return mg_fail(MG_ERR_NOMEM, "%s: out of memory for a %llu-byte header", f->path,
                       (unsigned long long)hlen);
    memcpy(text, p + 8, (size_t)hlen);
    text[hlen] = 0;
    mg_status s = MG_OK;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = (end && end >= text && end <= text + hlen) ? (size_t)(end - text) : 0;
        s = mg_fail(MG_ERR_FORMAT, "%s: header is not valid JSON (error at byte %zu of %llu)",
                    f->path, at, (unsigned long long)hlen);
        goto done;
    }
    /* The format pads the header with spaces; anything else after the JSON value is junk that
     * another reader might treat differently, so refuse it. */
    for (const char *q = end; q < text + hlen; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            s = mg_fail(
                MG_ERR_FORMAT,
                "%s: header has junk after the JSON at byte %zu of %llu, expected only spaces",
                f->path, (size_t)(q - text), (unsigned long long)hlen);
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        s = mg_fail(MG_ERR_FORMAT, "%s: header: expected a JSON object, found %s", f->path,
                    st_json_kind(root));
        goto done;
    }

    int n = 0;
    const cJSON *meta = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") != 0) {
            n++;
        } else if (meta) {
            s = mg_fail(MG_ERR_FORMAT, "%s: __metadata__ appears twice, expected once", f->path);
            goto done;
        } else {
            meta = e;
        }
    }
    if (meta && (s = st_parse_meta(f, meta)) != MG_OK) goto done;

    f->tensors = calloc(n ? (size_t)n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        s = mg_fail(MG_ERR_NOMEM, "%s: out of memory for %d tensors", f->path, n);
        goto done;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta) continue;
        if ((s = st_parse_tensor(f, &f->tensors[f->n_tensors], e, base, data_size)) != MG_OK)
            goto done;
        f->n_tensors++;
    }
    if ((s = st_check_tensors(f, base)) != MG_OK) goto done;
    s = st_align(f);
done:
    cJSON_Delete(root);
    free(text);
    return s;
}

mg_status st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    st_copy_str(f->path, sizeof f->path, path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mg_fail(MG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return mg_fail(MG_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return mg_fail(MG_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return mg_fail(MG_ERR_IO, "%s: %lld bytes is too large to map", path,
                       (long long)sb.st_size);
    }
    /* mmap refuses length 0; st_parse reports a short file without touching map. */
    if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return mg_fail(MG_ERR_IO, "%s: cannot map %lld bytes: %s", path, (long long)sb.st_size,
                           strerror(e));
        }
        f->map = m;
        f->map_size = (size_t)sb.st_size;
    }
    close(fd); /* the mapping keeps its own reference to the file */
    mg_status s = st_parse(f);
    if (s != MG_OK) st_close(f);
    return s;
}

mg_status st_open_memory(st_file *f, const void *buf, size_t size, const char *name) {
    memset(f, 0, sizeof *f);
    st_copy_str(f->path, sizeof f->path, name ? name : "<memory>");
    if (!buf && size) return mg_fail(MG_ERR_ARG, "%s: NULL buffer of %zu bytes", f->path, size);
    if (size) {
        f->map = malloc(size);
        if (!f->map) return mg_fail(MG_ERR_NOMEM, "%s: out of memory for %zu bytes", f->path, size);
        memcpy(f->map, buf, size);
        f->map_size = size;
        f->map_is_heap = 1;
    }
    mg_status s = st_parse(f);
    if (s != MG_OK) st_close(f);
    return s;
}

void st_close(st_file *f) {
    if (!f) return;
    if (f->map) {
        if (f->map_is_heap)
            free(f->map);
        else
            munmap(f->map, f->map_size);
    }
    for (int i = 0; i < f->n_meta; i++) free(f->meta[i].value);
    free(f->meta);
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_meta_get(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

mg_status st_expect(const st_file *f, const char *name, int rank, const int64_t *shape,
                    const st_tensor **out) {
    if (out) *out = NULL;
    if (rank < 0 || rank > ST_MAX_RANK || (rank > 0 && !shape))
        return mg_fail(MG_ERR_ARG, "%s: tensor %s: st_expect: bad rank %d", f->path, name, rank);
    const st_tensor *t = st_find(f, name);
    if (!t) return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: missing", f->path, name);
    if (t->dtype != ST_F32)
        return mg_fail(MG_ERR_FORMAT, "%s: tensor %s: expected dtype F32, found %s", f->path, name,
                       st_dtype_name(t->dtype));
    int same = t->rank == rank;
    for (int i = 0; same && i < rank; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[ST_SHAPE_STR], got[ST_SHAPE_STR];
        return mg_fail(MG_ERR_SHAPE, "%s: tensor %s: expected shape %s, found %s", f->path, name,
                       st_shape_str(want, rank, shape), st_shape_str(got, t->rank, t->shape));
    }
    if (out) *out = t;
    return MG_OK;
}

/* ---- writing ------------------------------------------------------------------------ */

typedef struct st_witem {
    char name[ST_MAX_NAME];
    st_dtype dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    size_t nbytes;
    void *data; /* owned copy */
} st_witem;

struct st_writer {
    st_witem *items;
    int n, cap;
    st_meta *meta;
    int n_meta, cap_meta;
};

st_writer *st_writer_new(void) {
    st_writer *w = calloc(1, sizeof *w);
    if (!w) mg_fail(MG_ERR_NOMEM, "st_writer_new: out of memory");
    return w;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->items[i].data);
    for (int i = 0; i < w->n_meta; i++) free(w->meta[i].value);
    free(w->items);
    free(w->meta);
    free(w);
}

/* Makes room for one more element of an array that grows by doubling; returns the (possibly
 * moved) array, or NULL when out of memory (the old array is then still valid). */
static void *st_grow(void *p, int *cap, int n, size_t elem) {
    if (n < *cap) return p;
    if (*cap > INT32_MAX / 2) return NULL;
    int c = *cap ? *cap * 2 : 16;
    void *q = realloc(p, (size_t)c * elem);
    if (q) *cap = c;
    return q;
}

mg_status st_writer_add(st_writer *w, const char *name, st_dtype dtype, int rank,
                        const int64_t *shape, const void *data) {
    if (!w || !name) return mg_fail(MG_ERR_ARG, "st_writer_add: NULL writer or name");
    if (strlen(name) >= ST_MAX_NAME)
        return mg_fail(MG_ERR_ARG,
                       "st_writer_add: tensor name \"%.40s...\" is %zu bytes, expected at most %d",
                       name, strlen(name), ST_MAX_NAME - 1);
    if (strcmp(name, "__metadata__") == 0)
        return mg_fail(MG_ERR_ARG, "st_writer_add: tensor name __metadata__ is reserved");
    if (st_dtype_size(dtype) == 0)
        return mg_fail(MG_ERR_ARG, "st_writer_add: tensor %s: unknown dtype %d", name, (int)dtype);
    if (rank < 0 || rank > ST_MAX_RANK || (rank > 0 && !shape))
        return mg_fail(MG_ERR_ARG, "st_writer_add: tensor %s: rank %d, expected 0..%d", name, rank,
                       ST_MAX_RANK);
    for (int i = 0; i < rank; i++)
        if (shape[i] < 0)
            return mg_fail(MG_ERR_ARG, "st_writer_add: tensor %s: shape[%d] is %lld, expected >= 0",
                           name, i, (long long)shape[i]);
    int ok;
    size_t numel = st_numel(rank, shape, &ok);
    if (!ok || numel > SIZE_MAX / st_dtype_size(dtype))
        return mg_fail(MG_ERR_ARG, "st_writer_add: tensor %s: too large", name);
    size_t nbytes = numel * st_dtype_size(dtype);
    if (nbytes && !data) return mg_fail(MG_ERR_ARG, "st_writer_add: tensor %s: NULL data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0)
            return mg_fail(MG_ERR_ARG, "st_writer_add: tensor %s: added twice", name);

    st_witem *items = st_grow(w->items, &w->cap, w->n, sizeof *w->items);
    if (!items) return mg_fail(MG_ERR_NOMEM, "st_writer_add: tensor %s: out of memory", name);
    w->items = items;
    st_witem *it = &w->items[w->n];
    memset(it, 0, sizeof *it);
    it->data = malloc(nbytes ? nbytes : 1);
    if (!it->data)
        return mg_fail(MG_ERR_NOMEM, "st_writer_add: tensor %s: out of memory for %zu bytes", name,
                       nbytes);
    if (nbytes) memcpy(it->data, data, nbytes);
    st_copy_str(it->name, sizeof it->name, name);
    it->dtype = dtype;
    it->rank = rank;
    for (int i = 0; i < rank; i++) it->shape[i] = shape[i];
    it->nbytes = nbytes;
    w->n++;
    return MG_OK;
}

mg_status st_writer_meta(st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return mg_fail(MG_ERR_ARG, "st_writer_meta: NULL argument");
    if (strlen(key) >= (size_t)ST_META_KEY_MAX)
        return mg_fail(MG_ERR_ARG,
                       "st_writer_meta: key \"%.40s...\" is %zu bytes, expected at most %d", key,
                       strlen(key), ST_META_KEY_MAX - 1);
    char *v = strdup(value);
    if (!v) return mg_fail(MG_ERR_NOMEM, "st_writer_meta: key %s: out of memory", key);
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return MG_OK;
        }
    }
    st_meta *meta = st_grow(w->meta, &w->cap_meta, w->n_meta, sizeof *w->meta);
    if (!meta) {
        free(v);
        return mg_fail(MG_ERR_NOMEM, "st_writer_meta: key %s: out of memory", key);
    }
    w->meta = meta;
    st_copy_str(w->meta[w->n_meta].key, sizeof w->meta[w->n_meta].key, key);
    w->meta[w->n_meta].value = v;
    w->n_meta++;
    return MG_OK;
}

/* A growing text buffer for the header; `oom` sticks so callers check once at the end. */
typedef struct st_buf {
    char *p;
    size_t n, cap;
    int oom;
} st_buf;

static void st_buf_put(st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void st_buf_printf(st_buf *b, const char *fmt, ...) MG_PRINTF(2, 3);
static void st_buf_printf(st_buf *b, const char *fmt, ...) {
    char tmp[128]; /* only ever used for numbers and fixed keys */
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    st_buf_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* A JSON string literal. Bytes >= 0x80 pass through: UTF-8 in, UTF-8 out. */
static void st_buf_put_json(st_buf *b, const char *s) {
    st_buf_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char esc[2] = {'\\', (char)*c};
            st_buf_put(b, esc, 2);
        } else if (*c < 0x20) {
            st_buf_printf(b, "\\u%04x", *c);
        } else {
            st_buf_put(b, (const char *)c, 1);
        }
    }
    st_buf_put(b, "\"", 1);
}

/* Data order: largest element size first, insertion order within a size. Every tensor before
 * one of element size s then has a byte size that is a multiple of s, so each offset is a
 * multiple of its own element size (what safetensors' Python writer does too). */
static int *st_writer_layout(const st_writer *w, size_t *offsets) {
    int *order = malloc((w->n ? (size_t)w->n : 1) * sizeof *order);
    if (!order) return NULL;
    int k = 0;
    for (size_t size = 8; size >= 1; size /= 2)
        for (int i = 0; i < w->n; i++)
            if (st_dtype_size(w->items[i].dtype) == size) order[k++] = i;
    size_t off = 0;
    for (int j = 0; j < k; j++) {
        offsets[order[j]] = off;
        off += w->items[order[j]].nbytes;
    }
    return order;
}

/* Writes the whole file to fp; 0 on success, else errno describes the failure. */
static int st_writer_write(const st_writer *w, const st_buf *h, const int *order, FILE *fp) {
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)h->n >> (8 * i));
    if (fwrite(len, 1, 8, fp) != 8) return -1;
    if (fwrite(h->p, 1, h->n, fp) != h->n) return -1;
    for (int j = 0; j < w->n; j++) {
        const st_witem *it = &w->items[order[j]];
        if (it->nbytes && fwrite(it->data, 1, it->nbytes, fp) != it->nbytes) return -1;
    }
    if (fflush(fp) != 0) return -1;
    /* Without fsync a crash after the rename could leave PATH naming an empty file. */
    if (fsync(fileno(fp)) != 0) return -1;
    return 0;
}

mg_status st_writer_save(st_writer *w, const char *path) {
    if (!w || !path) return mg_fail(MG_ERR_ARG, "st_writer_save: NULL writer or path");

    size_t *offsets = malloc((w->n ? (size_t)w->n : 1) * sizeof *offsets);
    int *order = offsets ? st_writer_layout(w, offsets) : NULL;
    st_buf h = {0};
    st_buf_put(&h, "{", 1);
    if (w->n_meta) {
        st_buf_put(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < w->n_meta; i++) {
            if (i) st_buf_put(&h, ",", 1);
            st_buf_put_json(&h, w->meta[i].key);
            st_buf_put(&h, ":", 1);
            st_buf_put_json(&h, w->meta[i].value);
        }
        st_buf_put(&h, "}", 1);
    }
    for (int i = 0; order && i < w->n; i++) {
        const st_witem *it = &w->items[i];
        if (i || w->n_meta) st_buf_put(&h, ",", 1);
        st_buf_put_json(&h, it->name);
        st_buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(it->dtype));
        for (int d = 0; d < it->rank; d++)
            st_buf_printf(&h, "%s%lld", d ? "," : "", (long long)it->shape[d]);
        st_buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", offsets[i], offsets[i] + it->nbytes);
    }
    st_buf_put(&h, "}", 1);
    /* Spaces up to a multiple of 8, so the data section starts 8-aligned in the file. */
    while (!h.oom && (8 + h.n) % 8) st_buf_put(&h, " ", 1);

    mg_status s = MG_OK;
    char *tmp = malloc(strlen(path) + 32);
    if (!order || h.oom || !tmp) {
        s = mg_fail(MG_ERR_NOMEM, "%s: out of memory building the header", path);
        goto done;
    }
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());

    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        s = mg_fail(MG_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    int rc = st_writer_write(w, &h, order, fp);
    int e = errno;
    if (fclose(fp) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        e = errno;
    }
    if (rc != 0) {
        unlink(tmp); /* PATH itself was never touched: it is still the old file, or absent */
        s = mg_fail(MG_ERR_IO, "%s: cannot write %s: %s", path, tmp, strerror(e));
        goto done;
    }
    /* The rename is durable only once the directory is synced; if that fails the new file is
     * still complete, so it is not worth an error. */
    char *slash = strrchr(tmp, '/');
    if (slash) slash[slash == tmp ? 1 : 0] = 0;
    int dfd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
done:
    free(tmp);
    free(h.p);
    free(order);
    free(offsets);
    return s;
}
