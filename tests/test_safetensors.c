/* safetensors: a round trip through the writer, and every kind of bad file rejected with a
 * message that names the file and the tensor, leaving the st_file empty. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "core/safetensors.h"
#include "core/status.h"

/* ---- helpers ------------------------------------------------------------------------ */

static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tu_tmpdir(), name);
    return buf;
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (n) assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *p = malloc(size ? (size_t)size : 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    *n = (size_t)size;
    return p;
}

/* A raw file: u64 header length, the header text as given (padded with `pad` spaces), then
 * data_size bytes counting up from 0. */
static unsigned char *make_raw(const char *header, size_t pad, size_t data_size, size_t *n) {
    size_t hlen = strlen(header) + pad;
    *n = 8 + hlen + data_size;
    unsigned char *p = malloc(*n);
    assert_non_null(p);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(p + 8, header, strlen(header));
    memset(p + 8 + strlen(header), ' ', pad);
    for (size_t i = 0; i < data_size; i++) p[8 + hlen + i] = (unsigned char)i;
    return p;
}

static void assert_empty(st_file *f) {
    assert_null(f->map);
    assert_int_equal(f->map_size, 0);
    assert_null(f->tensors);
    assert_int_equal(f->n_tensors, 0);
    assert_null(f->meta);
    assert_int_equal(f->n_meta, 0);
    st_close(f);
    st_close(f); /* twice is safe */
}

static void assert_mentions(const char *what) {
    if (what && !strstr(mg_last_error(), what)) {
        print_error("error message \"%s\" does not mention \"%s\"\n", mg_last_error(), what);
        fail();
    }
}

/* Opens bytes both from memory and from a file on disk, expects status `want`, and checks that
 * the message names the file and mentions both needles. */
static void expect_reject_bytes(const unsigned char *p, size_t n, mg_status want,
                                const char *needle1, const char *needle2) {
    st_file f;
    mg_clear_error();
    assert_int_equal(st_open_memory(&f, p, n, "bad.safetensors"), want);
    printf("  rejected: %s\n", mg_last_error());
    assert_mentions("bad.safetensors");
    assert_mentions(needle1);
    assert_mentions(needle2);
    assert_empty(&f);

    char path[512];
    tmp_path(path, sizeof path, "bad.safetensors");
    write_file(path, p, n);
    mg_clear_error();
    assert_int_equal(st_open(&f, path), want);
    assert_mentions(path);
    assert_mentions(needle1);
    assert_mentions(needle2);
    assert_empty(&f);
    unlink(path);
}

static void expect_reject(const char *header, size_t data_size, const char *needle1,
                          const char *needle2) {
    size_t n;
    unsigned char *p = make_raw(header, 0, data_size, &n);
    expect_reject_bytes(p, n, MG_ERR_FORMAT, needle1, needle2);
    free(p);
}

/* ---- round trip --------------------------------------------------------------------- */

typedef struct sample {
    const char *name;
    st_dtype dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    unsigned char *data;
    size_t nbytes;
} sample;

/* U8 first and odd-sized, so that insertion-order layout would misalign everything after it:
 * the writer must still place every tensor aligned. */
static sample samples[] = {
    {"bytes", ST_U8, 1, {3}, NULL, 0},
    {"w", ST_F32, 2, {3, 5}, NULL, 0},
    {"scalar", ST_F32, 0, {0}, NULL, 0},
    {"h.bf16", ST_BF16, 3, {2, 1, 3}, NULL, 0},
    {"h.f16", ST_F16, 1, {7}, NULL, 0},
    {"idx", ST_I32, 2, {2, 2}, NULL, 0},
    {"big", ST_I64, 1, {3}, NULL, 0},
    {"dbl", ST_F64, 4, {1, 2, 1, 2}, NULL, 0},
    {"empty", ST_F32, 2, {0, 4}, NULL, 0},
    {"we\"ird\\name\n\xc3\xa9", ST_F32, 1, {2}, NULL, 0},
    {"r8", ST_F32, 8, {1, 1, 2, 1, 1, 1, 1, 2}, NULL, 0},
};
#define N_SAMPLES ((int)(sizeof samples / sizeof samples[0]))

static void samples_fill(void) {
    mg_rng r;
    mg_rng_seed(&r, 1234);
    for (int i = 0; i < N_SAMPLES; i++) {
        sample *s = &samples[i];
        size_t numel = 1;
        for (int d = 0; d < s->rank; d++) numel *= (size_t)s->shape[d];
        s->nbytes = numel * st_dtype_size(s->dtype);
        free(s->data);
        s->data = malloc(s->nbytes ? s->nbytes : 1);
        for (size_t k = 0; k < s->nbytes; k++) s->data[k] = (unsigned char)mg_rng_next(&r);
    }
}

static void samples_free(void) {
    for (int i = 0; i < N_SAMPLES; i++) {
        free(samples[i].data);
        samples[i].data = NULL;
    }
}

static void write_samples(const char *path) {
    samples_fill();
    st_writer *w = st_writer_new();
    assert_non_null(w);
    assert_int_equal(st_writer_meta(w, "format", "mirage"), MG_OK);
    assert_int_equal(st_writer_meta(w, "config", "old"), MG_OK);
    assert_int_equal(st_writer_meta(w, "prompts", "none,colorize,\"quoted\""), MG_OK);
    assert_int_equal(st_writer_meta(w, "config", "tiny"), MG_OK); /* replaces */
    for (int i = 0; i < N_SAMPLES; i++) {
        const sample *s = &samples[i];
        assert_int_equal(st_writer_add(w, s->name, s->dtype, s->rank, s->shape, s->data), MG_OK);
    }
    assert_int_equal(st_writer_save(w, path), MG_OK);
    st_writer_free(w);
}

static void check_samples(const st_file *f) {
    assert_int_equal(f->n_tensors, N_SAMPLES);
    for (int i = 0; i < N_SAMPLES; i++) {
        const sample *s = &samples[i];
        const st_tensor *t = &f->tensors[i]; /* header order is insertion order */
        assert_string_equal(t->name, s->name);
        assert_ptr_equal(st_find(f, s->name), t);
        assert_int_equal(t->dtype, s->dtype);
        assert_int_equal(t->rank, s->rank);
        for (int d = 0; d < s->rank; d++) assert_int_equal(t->shape[d], s->shape[d]);
        assert_int_equal(t->nbytes, s->nbytes);
        assert_int_equal(t->numel * st_dtype_size(t->dtype), s->nbytes);
        assert_int_equal((uintptr_t)t->data % st_dtype_size(t->dtype), 0);
        if (s->nbytes) assert_memory_equal(t->data, s->data, s->nbytes);
    }
    assert_string_equal(st_meta_get(f, "format"), "mirage");
    assert_string_equal(st_meta_get(f, "config"), "tiny");
    assert_string_equal(st_meta_get(f, "prompts"), "none,colorize,\"quoted\"");
    assert_null(st_meta_get(f, "absent"));
    assert_int_equal(f->n_meta, 3);
    assert_null(st_find(f, "absent"));
}

static void test_round_trip(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "round.safetensors");
    write_samples(path);

    st_file f;
    assert_int_equal(st_open(&f, path), MG_OK);
    assert_int_equal(f.map_is_heap, 0); /* aligned, so the mapping is used as is */
    check_samples(&f);

    /* The header is padded so the data section starts 8-aligned; __metadata__ comes first. */
    const unsigned char *p = f.map;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)p[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    assert_memory_equal(p + 8, "{\"__metadata__\":{", 17);
    st_close(&f);

    size_t n;
    unsigned char *bytes = read_file(path, &n);
    assert_int_equal(st_open_memory(&f, bytes, n, "mem"), MG_OK);
    check_samples(&f);
    st_close(&f);
    st_close(&f);
    free(bytes);

    /* Saving again over an existing file replaces it whole. */
    write_samples(path);
    assert_int_equal(st_open(&f, path), MG_OK);
    check_samples(&f);
    st_close(&f);
    unlink(path);
    samples_free();
}

static void test_empty_writer(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "empty.safetensors");
    st_writer *w = st_writer_new();
    assert_int_equal(st_writer_save(w, path), MG_OK);
    st_writer_free(w);
    st_file f;
    assert_int_equal(st_open(&f, path), MG_OK);
    assert_int_equal(f.n_tensors, 0);
    assert_int_equal(f.n_meta, 0);
    st_close(&f);
    unlink(path);
}

/* Other writers may leave tensors unaligned: a header length that is not a multiple of 4, or
 * an F32 tensor at an odd offset. Both are legal and must come back aligned and intact. */
static void test_unaligned(void **state) {
    (void)state;
    const char *headers[] = {
        "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
        "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
        "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[9,17]}}",
    };
    int copies = 0;
    for (int h = 0; h < 2; h++) {
        for (size_t pad = 0; pad < 4; pad++) {
            size_t n;
            unsigned char *raw = make_raw(headers[h], pad, h ? 17 : 8, &n);
            size_t data_start = n - (h ? 17 : 8);
            char path[512];
            tmp_path(path, sizeof path, "unaligned.safetensors");
            write_file(path, raw, n);
            for (int mem = 0; mem < 2; mem++) {
                st_file f;
                mg_status s = mem ? st_open_memory(&f, raw, n, "mem") : st_open(&f, path);
                assert_int_equal(s, MG_OK);
                /* The mapping is page-aligned, so file offsets decide whether a copy is needed. */
                int misaligned = (data_start + (h ? 1 : 0)) % 4 || (h && (data_start + 9) % 8);
                if (!mem) assert_int_equal(f.map_is_heap, misaligned);
                copies += !mem && misaligned;
                for (int i = 0; i < f.n_tensors; i++) {
                    const st_tensor *t = &f.tensors[i];
                    size_t begin = !strcmp(t->name, "x")   ? (h ? 1 : 0)
                                   : !strcmp(t->name, "d") ? 9
                                                           : 0;
                    assert_int_equal((uintptr_t)t->data % st_dtype_size(t->dtype), 0);
                    assert_memory_equal(t->data, raw + data_start + begin, t->nbytes);
                }
                const st_tensor *x;
                int64_t shape[1] = {2};
                assert_int_equal(st_expect(&f, "x", 1, shape, &x), MG_OK);
                float v[2];
                memcpy(v, raw + data_start + (h ? 1 : 0), 8);
                assert_true(memcmp(&((const float *)x->data)[1], &v[1], 4) == 0);
                st_close(&f);
            }
            unlink(path);
            free(raw);
        }
    }
    assert_int_equal(copies, 7); /* all but one of the 8 layouts needed the aligned copy */
}

/* ---- rejection ---------------------------------------------------------------------- */

static void test_reject_short(void **state) {
    (void)state;
    expect_reject_bytes((const unsigned char *)"", 0, MG_ERR_FORMAT, "0 bytes",
                        "expected at least 8");
    expect_reject_bytes((const unsigned char *)"\x10\0\0\0\0\0\0", 7, MG_ERR_FORMAT, "7 bytes",
                        "expected at least 8");

    st_file f;
    char path[512];
    tmp_path(path, sizeof path, "does-not-exist.safetensors");
    assert_int_equal(st_open(&f, path), MG_ERR_IO);
    assert_mentions(path);
    assert_empty(&f);
    assert_int_equal(st_open(&f, tu_tmpdir()), MG_ERR_IO); /* a directory */
    assert_empty(&f);
}

static void test_reject_header_length(void **state) {
    (void)state;
    /* Claims 1000 header bytes, has 2. */
    unsigned char past[10] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_reject_bytes(past, sizeof past, MG_ERR_FORMAT, "header length 1000",
                        "expected at most 2");
    /* Absurd: 2^40, rejected before anything is allocated for it. */
    unsigned char huge[10] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'};
    expect_reject_bytes(huge, sizeof huge, MG_ERR_FORMAT, "header length", "100 MiB");
}

static void test_reject_header_json(void **state) {
    (void)state;
    expect_reject("{\"a\":", 0, "not valid JSON", NULL);
    expect_reject("", 0, "not valid JSON", NULL);
    expect_reject("{} x", 0, "junk after the JSON", "expected only spaces");
    expect_reject("[1,2]", 0, "expected a JSON object", "an array");
    expect_reject("\"str\"", 0, "expected a JSON object", "a string");
    expect_reject("{\"a\":5}", 0, "tensor a", "expected an object, found a number");
}

static void test_reject_fields(void **state) {
    (void)state;
    expect_reject("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a",
                  "expected \"dtype\"");
    expect_reject("{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a",
                  "expected \"dtype\" to be a string, found a number");
    expect_reject("{\"a\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor a",
                  "unknown dtype \"F8\", expected F32");
    expect_reject("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a",
                  "unknown dtype");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor a",
                  "expected \"shape\" to be an array, found nothing");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,4]}}", 4,
                  "tensor a", "expected \"shape\"");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, "tensor a",
                  "expected \"data_offsets\"");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "tensor a",
                  "expected \"data_offsets\"");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
                  "tensor a", "expected \"data_offsets\"");
    expect_reject(
        "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
        "tensor a", "\"dtype\" appears twice");
}

static void test_reject_shape(void **state) {
    (void)state;
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
                  1, "tensor a", "rank 9, expected at most 8");
    expect_reject("{\"neg\":{\"dtype\":\"F32\",\"shape\":[-1,2],\"data_offsets\":[0,4]}}", 4,
                  "tensor neg", "shape[0] is -1, expected a non-negative integer");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", 12,
                  "tensor a", "shape[1] is 1.5");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4,
                  "tensor a", "expected a non-negative integer");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                  "tensor a", "shape[0] is a string");
    /* 2^40 * 2^40 elements: the product overflows 64 bits. */
    expect_reject("{\"big\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
                  "\"data_offsets\":[0,4]}}",
                  4, "tensor big", "too large");
    /* 2^62 elements of 4 bytes: numel fits, bytes do not. */
    expect_reject("{\"big\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],"
                  "\"data_offsets\":[0,4]}}",
                  4, "tensor big", "too large");
}

static void test_reject_offsets(void **state) {
    (void)state;
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "tensor a",
                  "expected begin <= end");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[25],\"data_offsets\":[0,100]}}", 16,
                  "tensor a", "expected end <= 16");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                  "tensor a", "begin is -4, expected a non-negative integer");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16,
                  "tensor a", "span 12 bytes, expected 16");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                  24, "tensor b", "overlaps tensor a");
    /* The same bytes named twice. */
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}",
                  16, "overlaps", "expected disjoint");
    /* A tensor nested inside another, given first. */
    expect_reject("{\"in\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                  "\"out\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}",
                  16, "tensor in", "overlaps tensor out");

    /* Empty tensors overlap nothing, wherever they sit. */
    size_t n;
    unsigned char *p = make_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
                                0, 16, &n);
    st_file f;
    assert_int_equal(st_open_memory(&f, p, n, "ok"), MG_OK);
    assert_int_equal(f.n_tensors, 2);
    st_close(&f);
    free(p);
}

static void test_reject_names(void **state) {
    (void)state;
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                  2, "tensor a", "appears twice, expected unique");
    char header[512], name[200];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    snprintf(header, sizeof header,
             "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", name);
    expect_reject(header, 1, "nnnnnnnn", "expected at most 127");
}

static void test_reject_metadata(void **state) {
    (void)state;
    expect_reject("{\"__metadata__\":{\"format\":\"mirage\",\"layers\":5}}", 0,
                  "__metadata__ key layers", "expected a string value, found a number");
    expect_reject("{\"__metadata__\":[\"a\"]}", 0, "__metadata__", "expected an object of strings");
    expect_reject("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "__metadata__ key k",
                  "appears twice");
    expect_reject("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__", "appears twice");
    char header[512], key[100];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = 0;
    snprintf(header, sizeof header, "{\"__metadata__\":{\"%s\":\"v\"}}", key);
    expect_reject(header, 0, "kkkkkkkk", "expected at most 63");
    /* A bad tensor after good metadata: the metadata already copied must be freed too. */
    expect_reject("{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"X\",\"shape\":[],\"data_"
                  "offsets\":[0,0]}}",
                  0, "tensor a", "unknown dtype");
}

/* Cutting a valid file short anywhere must fail cleanly (no crash, no leak under ASan). */
static void test_truncation(void **state) {
    (void)state;
    char path[512], cut[512];
    tmp_path(path, sizeof path, "trunc.safetensors");
    tmp_path(cut, sizeof cut, "trunc-cut.safetensors");
    write_samples(path);
    size_t n;
    unsigned char *bytes = read_file(path, &n);
    int failed = 0;
    for (size_t len = 0; len <= n; len++) {
        st_file f;
        mg_status want = len == n ? MG_OK : MG_ERR_FORMAT;
        mg_clear_error();
        mg_status s = st_open_memory(&f, bytes, len, "cut");
        if (s != want || (s != MG_OK && !strstr(mg_last_error(), "cut"))) {
            print_error("length %zu of %zu: status %d, message \"%s\"\n", len, n, s,
                        mg_last_error());
            failed++;
        }
        if (s == MG_OK)
            check_samples(&f);
        else
            assert_empty(&f);
        st_close(&f);

        write_file(cut, bytes, len);
        s = st_open(&f, cut);
        if (s != want) failed++;
        if (s == MG_OK) check_samples(&f);
        st_close(&f);
    }
    printf("  truncated at every length 0..%zu: %d unexpected results\n", n, failed);
    assert_int_equal(failed, 0);
    unlink(cut);
    unlink(path);
    free(bytes);
    samples_free();
}

/* ---- st_expect ---------------------------------------------------------------------- */

static void test_expect(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "expect.safetensors");
    st_writer *w = st_writer_new();
    float *wdata = calloc(384 * 384, sizeof *wdata);
    uint16_t hdata[4] = {0};
    int64_t wshape[2] = {384, 384}, hshape[1] = {4};
    assert_int_equal(st_writer_add(w, "dit.w", ST_F32, 2, wshape, wdata), MG_OK);
    assert_int_equal(st_writer_add(w, "dit.h", ST_BF16, 1, hshape, hdata), MG_OK);
    assert_int_equal(st_writer_save(w, path), MG_OK);
    st_writer_free(w);
    free(wdata);

    st_file f;
    assert_int_equal(st_open(&f, path), MG_OK);
    const st_tensor *t = NULL;
    assert_int_equal(st_expect(&f, "dit.w", 2, wshape, &t), MG_OK);
    assert_ptr_equal(t, st_find(&f, "dit.w"));

    char msg[600];
    assert_int_equal(st_expect(&f, "dit.nope", 2, wshape, &t), MG_ERR_FORMAT);
    assert_null(t);
    snprintf(msg, sizeof msg, "%s: tensor dit.nope: missing", path);
    assert_string_equal(mg_last_error(), msg);

    assert_int_equal(st_expect(&f, "dit.h", 1, hshape, &t), MG_ERR_FORMAT);
    snprintf(msg, sizeof msg, "%s: tensor dit.h: expected dtype F32, found BF16", path);
    assert_string_equal(mg_last_error(), msg);

    int64_t want[2] = {384, 1152};
    assert_int_equal(st_expect(&f, "dit.w", 2, want, &t), MG_ERR_SHAPE);
    snprintf(msg, sizeof msg, "%s: tensor dit.w: expected shape (384,1152), found (384,384)", path);
    assert_string_equal(mg_last_error(), msg);
    printf("  %s\n", mg_last_error());

    assert_int_equal(st_expect(&f, "dit.w", 1, want, &t), MG_ERR_SHAPE);
    assert_mentions("expected shape (384), found (384,384)");
    assert_int_equal(st_expect(&f, "dit.w", 0, NULL, &t), MG_ERR_SHAPE);
    assert_mentions("expected shape (), found (384,384)");
    st_close(&f);
    unlink(path);
}

/* ---- writer failures ---------------------------------------------------------------- */

static void test_writer_args(void **state) {
    (void)state;
    st_writer *w = st_writer_new();
    int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, neg[1] = {-1};
    float x = 1;
    assert_int_equal(st_writer_add(w, "a", ST_F32, 9, shape, &x), MG_ERR_ARG);
    assert_int_equal(st_writer_add(w, "a", ST_F32, 1, neg, &x), MG_ERR_ARG);
    assert_int_equal(st_writer_add(w, "a", (st_dtype)99, 1, shape, &x), MG_ERR_ARG);
    assert_int_equal(st_writer_add(w, "__metadata__", ST_F32, 1, shape, &x), MG_ERR_ARG);
    assert_int_equal(st_writer_add(w, "a", ST_F32, 1, shape, NULL), MG_ERR_ARG);
    assert_int_equal(st_writer_add(w, "a", ST_F32, 1, shape, &x), MG_OK);
    assert_int_equal(st_writer_add(w, "a", ST_F32, 1, shape, &x), MG_ERR_ARG);
    assert_mentions("added twice");
    char name[200];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    assert_int_equal(st_writer_add(w, name, ST_F32, 1, shape, &x), MG_ERR_ARG);
    assert_int_equal(st_writer_meta(w, name, "v"), MG_ERR_ARG);
    st_writer_free(w);
    st_writer_free(NULL);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_writer_no_dir(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "no/such/dir/out.safetensors");
    int before = count_entries(tu_tmpdir());
    st_writer *w = st_writer_new();
    float x[2] = {1, 2};
    int64_t shape[1] = {2};
    assert_int_equal(st_writer_add(w, "x", ST_F32, 1, shape, x), MG_OK);
    assert_int_equal(st_writer_save(w, path), MG_ERR_IO);
    printf("  %s\n", mg_last_error());
    assert_mentions(path);
    assert_mentions(strerror(ENOENT));
    st_writer_free(w);
    struct stat sb;
    assert_int_not_equal(stat(path, &sb), 0);
    assert_int_equal(count_entries(tu_tmpdir()), before);
}

/* A write that runs out of room (here: a file size limit, as a full disk would) fails with
 * MG_ERR_IO and leaves the old file at PATH untouched and no temporary file behind. */
static void test_writer_full(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "full.safetensors");
    write_file(path, "old contents", 12);
    int before = count_entries(tu_tmpdir());

    st_writer *w = st_writer_new();
    size_t n = 1 << 16;
    float *x = calloc(n, sizeof *x);
    int64_t shape[1] = {(int64_t)n};
    assert_int_equal(st_writer_add(w, "x", ST_F32, 1, shape, x), MG_OK);

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 65536;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN); /* else the kernel kills us instead of EFBIG */
    fflush(stdout);
    fflush(stderr);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    mg_status s = st_writer_save(w, path);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    printf("  %s\n", mg_last_error());
    assert_int_equal(s, MG_ERR_IO);
    assert_mentions(path);
    assert_mentions(strerror(EFBIG));

    size_t got_n;
    unsigned char *got = read_file(path, &got_n);
    assert_int_equal(got_n, 12);
    assert_memory_equal(got, "old contents", 12);
    assert_int_equal(count_entries(tu_tmpdir()), before);
    free(got);
    free(x);
    st_writer_free(w);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_writer),
        cmocka_unit_test(test_unaligned),
        cmocka_unit_test(test_reject_short),
        cmocka_unit_test(test_reject_header_length),
        cmocka_unit_test(test_reject_header_json),
        cmocka_unit_test(test_reject_fields),
        cmocka_unit_test(test_reject_shape),
        cmocka_unit_test(test_reject_offsets),
        cmocka_unit_test(test_reject_names),
        cmocka_unit_test(test_reject_metadata),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_expect),
        cmocka_unit_test(test_writer_args),
        cmocka_unit_test(test_writer_no_dir),
        cmocka_unit_test(test_writer_full),
    };
    return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
