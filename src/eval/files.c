/* Atomic files, PNG images, directories. See files.h. */
#include "eval/files.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef MG_HAVE_PNG
#include <png.h>
#include <setjmp.h>
#endif

#include "core/status.h"

mg_status afile_open(afile *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return mg_fail(MG_ERR_ARG, "%.100s...: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp) return mg_fail(MG_ERR_IO, "%s: cannot create: %s", f->tmp, strerror(errno));
    return MG_OK;
}

void afile_abort(afile *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp[0]) unlink(f->tmp);
    f->fp = NULL;
    f->tmp[0] = 0;
}

mg_status afile_commit(afile *f) {
    if (!f->fp) return mg_fail(MG_ERR_IO, "%s: not open", f->path);
    int bad = ferror(f->fp) || fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0;
    int err = errno;
    if (fclose(f->fp) != 0 && !bad) bad = 1, err = errno;
    f->fp = NULL;
    if (!bad && rename(f->tmp, f->path) != 0) bad = 1, err = errno;
    if (bad) {
        unlink(f->tmp);
        return mg_fail(MG_ERR_IO, "%s: write failed: %s", f->path, strerror(err ? err : EIO));
    }
    return MG_OK;
}

mg_status files_mkdir_p(const char *dir) {
    char p[4096];
    if (!dir[0] || strlen(dir) >= sizeof p) return mg_fail(MG_ERR_ARG, "bad directory name '%.100s'", dir);
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1;; s++) {
        char c = *s;
        if (c == '/' || c == 0) {
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST)
                return mg_fail(MG_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
            *s = c;
        }
        if (!c) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return mg_fail(MG_ERR_IO, "%s: not a directory", dir);
    return MG_OK;
}

/* ---- the built-in PNG writer: zlib stream of stored blocks --------------------------- */

typedef struct chunk_writer { FILE *fp; uint32_t crc, tab[256]; } chunk_writer;

static void crc_init(chunk_writer *c) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t v = n;
        for (int k = 0; k < 8; k++) v = v & 1 ? 0xedb88320u ^ (v >> 1) : v >> 1;
        c->tab[n] = v;
    }
}
static uint32_t crc_update(const chunk_writer *w, uint32_t c, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) c = w->tab[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c;
}

static void be32(uint8_t *p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = (uint8_t)v; }

static void chunk_begin(chunk_writer *c, const char *type, uint32_t len) {
    uint8_t h[8];
    be32(h, len);
    memcpy(h + 4, type, 4);
    fwrite(h, 1, 8, c->fp);
    c->crc = crc_update(c, 0xffffffffu, h + 4, 4);
}
static void chunk_data(chunk_writer *c, const uint8_t *p, size_t n) {
    fwrite(p, 1, n, c->fp);
    c->crc = crc_update(c, c->crc, p, n);
}
static void chunk_end(chunk_writer *c) {
    uint8_t t[4];
    be32(t, c->crc ^ 0xffffffffu);
    fwrite(t, 1, 4, c->fp);
}

static void png_stored_body(FILE *fp, const uint8_t *rgb, int W, int H) {
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    fwrite(sig, 1, 8, fp);
    chunk_writer c = {.fp = fp};
    crc_init(&c);
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)W), be32(ihdr + 4, (uint32_t)H);
    ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = ihdr[11] = ihdr[12] = 0; /* 8-bit RGB, no interlace */
    chunk_begin(&c, "IHDR", 13);
    chunk_data(&c, ihdr, 13);
    chunk_end(&c);
    /* the raw stream: each row is filter byte 0 then the row; cut into stored blocks */
    size_t row = (size_t)W * 3 + 1, raw = row * H, nblk = (raw + 65534) / 65535;
    chunk_begin(&c, "IDAT", (uint32_t)(2 + raw + 5 * nblk + 4));
    uint8_t zh[2] = {0x78, 0x01};
    chunk_data(&c, zh, 2);
    uint32_t s1 = 1, s2 = 0; /* Adler-32 */
    size_t pos = 0;          /* position in the raw stream */
    for (size_t b = 0; b < nblk; b++) {
        size_t len = raw - pos < 65535 ? raw - pos : 65535;
        uint8_t bh[5] = {(uint8_t)(b + 1 == nblk), (uint8_t)len, (uint8_t)(len >> 8), (uint8_t)~len, (uint8_t)(~len >> 8)};
        chunk_data(&c, bh, 5);
        for (size_t e = pos + len; pos < e;) {
            size_t y = pos / row, x = pos % row, m = row - x < e - pos ? row - x : e - pos;
            static const uint8_t zero = 0;
            const uint8_t *src = x == 0 ? &zero : rgb + y * (row - 1) + (x - 1);
            if (x == 0) m = 1;
            chunk_data(&c, src, m);
            for (size_t i = 0; i < m; i++) s1 = (s1 + src[i]) % 65521, s2 = (s2 + s1) % 65521;
            pos += m;
        }
    }
    uint8_t ad[4];
    be32(ad, (s2 << 16) | s1);
    chunk_data(&c, ad, 4);
    chunk_end(&c);
    chunk_begin(&c, "IEND", 0);
    chunk_end(&c);
}

static mg_status check_png_args(const char *path, const uint8_t *rgb, int W, int H) {
    if (!rgb || W < 1 || H < 1 || W > 65536 || H > 65536 || (size_t)W * 3 * H > 0x7fffff00u / 2)
        return mg_fail(MG_ERR_ARG, "%s: bad PNG size %dx%d", path, W, H);
    return MG_OK;
}

mg_status image_write_png_stored(const char *path, const uint8_t *rgb, int W, int H) {
    MG_TRY(check_png_args(path, rgb, W, H));
    afile f;
    MG_TRY(afile_open(&f, path));
    png_stored_body(f.fp, rgb, W, H);
    return afile_commit(&f);
}

#ifdef MG_HAVE_PNG
static void png_warn(png_structp p, png_const_charp m) { (void)p, (void)m; }

mg_status image_write_png(const char *path, const uint8_t *rgb, int W, int H) {
    MG_TRY(check_png_args(path, rgb, W, H));
    afile f;
    MG_TRY(afile_open(&f, path));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        afile_abort(&f);
        return mg_fail(MG_ERR_NOMEM, "%s: libpng: out of memory", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        afile_abort(&f);
        return mg_fail(MG_ERR_IO, "%s: libpng failed to write the image", path);
    }
    png_init_io(png, f.fp);
    png_set_compression_level(png, 6);
    png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < H; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * W * 3));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return afile_commit(&f);
}

const char *image_png_writer(void) { return "libpng"; }
#else
mg_status image_write_png(const char *path, const uint8_t *rgb, int W, int H) {
    return image_write_png_stored(path, rgb, W, H);
}
const char *image_png_writer(void) { return "built-in (uncompressed)"; }
#endif
