/* `mirage data build`: video files and photos -> JPEG shards, split by source file.
 *
 * The whole build is held in memory as compressed frames (a 35 MiB dataset is 35 MiB), so
 * the split can be decided once every source's kind is known, and the shards are written at
 * the end: each to a hidden temporary name in the output directory, flushed and fsync'ed;
 * only when all of them are complete are they renamed onto their final names (and the
 * directory fsync'ed). A build killed at any moment therefore leaves the previous shards
 * intact plus, at worst, hidden temporaries that the next build removes. Shards left from an
 * older, larger build are removed after the rename; every shard carries its build's id and
 * the count of shards of its split, so a directory that mixes builds is refused by the
 * reader rather than trained on. */
#include "data/data.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "core/status.h"
#include "core/timing.h"
#include "data/shard.h"
#include "io/source.h"

data_build_opts data_build_defaults(void) {
    data_build_opts o = {0};
    o.video_short = 256;
    o.photo_short = 384;
    o.val_fraction = 0.1;
    o.max_frames = 240;
    o.run_frames = 48;
    o.frame_step = 1;
    o.quality = 88;
    o.shard_mib = 16;
    o.cut_mad = 20;
    o.seed = 0;
    return o;
}

#if !defined(MG_HAVE_FFMPEG) || !defined(MG_HAVE_JPEG)

int data_build_available(void) { return 0; }

mg_status data_build(const data_build_opts *o, char *const *sources, int n_sources) {
    (void)o, (void)sources, (void)n_sources;
    return mg_fail(MG_ERR_UNSUPPORTED, "mirage data build needs FFmpeg (to decode video and photos) and libjpeg-turbo "
                                       "(to store frames), and this build lacks %s: apt-get install libavformat-dev "
                                       "libavcodec-dev libswscale-dev libavutil-dev libturbojpeg0-dev, then rebuild",
#if !defined(MG_HAVE_FFMPEG) && !defined(MG_HAVE_JPEG)
                   "both"
#elif !defined(MG_HAVE_FFMPEG)
                   "FFmpeg"
#else
                   "libjpeg-turbo"
#endif
    );
}

#else

#include <turbojpeg.h>

int data_build_available(void) { return 1; }

static const char *const video_ext[] = {"avi", "mp4", "mkv", "mov", "webm", "m4v", "mpg", "mpeg", "ogv", "flv",
                                        "wmv", "y4m", "ts", "3gp", "mts", NULL};
static const char *const photo_ext[] = {"jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "ppm", "pgm", "pnm",
                                        "jp2", "gif", NULL};

static const char *ext_of(const char *path) {
    const char *b = strrchr(path, '/'), *d = strrchr(path, '.');
    return d && (!b || d > b) ? d + 1 : "";
}
static int ext_in(const char *path, const char *const *list) {
    const char *e = ext_of(path);
    for (int i = 0; list[i]; i++)
        if (!strcasecmp(e, list[i])) return 1;
    return 0;
}
static const char *base_of(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static int excluded(const char *base, char *const *patterns, int n);

/* ---- collecting source files -------------------------------------------------------------- */

typedef struct strlist {
    char **v;
    int n, cap;
} strlist;

static mg_status strlist_add(strlist *l, const char *s) {
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 64;
        char **nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv) return mg_fail(MG_ERR_NOMEM, "no memory");
        l->v = nv, l->cap = nc;
    }
    if (!(l->v[l->n] = strdup(s))) return mg_fail(MG_ERR_NOMEM, "no memory");
    l->n++;
    return MG_OK;
}
static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Files under dir with a known video or image extension, in name order, recursively. */
/* Folders already searched, by device and inode: a folder reached again through a link is
 * skipped, so link loops end. */
typedef struct dirset {
    dev_t *dev;
    ino_t *ino;
    int n, cap;
} dirset;

static int dirset_visit(dirset *d, const struct stat *st) { /* 1: first visit, 0: seen, -1: no memory */
    for (int i = 0; i < d->n; i++)
        if (d->dev[i] == st->st_dev && d->ino[i] == st->st_ino) return 0;
    if (d->n == d->cap) {
        int nc = d->cap ? 2 * d->cap : 64;
        dev_t *nd = realloc(d->dev, (size_t)nc * sizeof *nd);
        if (!nd) return -1;
        d->dev = nd;
        ino_t *ni = realloc(d->ino, (size_t)nc * sizeof *ni);
        if (!ni) return -1;
        d->ino = ni, d->cap = nc;
    }
    d->dev[d->n] = st->st_dev, d->ino[d->n] = st->st_ino, d->n++;
    return 1;
}

static mg_status collect_dir(strlist *out, const char *dir, int depth, int *ignored, const data_build_opts *o,
                             dirset *seen) {
    if (depth > 64) return mg_fail(MG_ERR_IO, "%s: folders nested too deep", dir);
    struct stat dst;
    if (stat(dir, &dst) != 0) return mg_fail(MG_ERR_IO, "%s: %s", dir, strerror(errno));
    int v = dirset_visit(seen, &dst);
    if (v < 0) return mg_fail(MG_ERR_NOMEM, "no memory");
    if (v == 0) return MG_OK; /* searched already (a link back into the tree) */
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, alphasort);
    if (n < 0) return mg_fail(MG_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    mg_status s = MG_OK;
    for (int i = 0; i < n; i++) {
        const char *nm = ents[i]->d_name;
        if (s == MG_OK && nm[0] != '.') {
            char p[4096];
            if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, nm) >= sizeof p) {
                s = mg_fail(MG_ERR_IO, "%s/%s: path too long", dir, nm);
            } else {
                struct stat st;
                if (stat(p, &st) != 0) (*ignored)++; /* a dangling link */
                else if (S_ISDIR(st.st_mode)) s = collect_dir(out, p, depth + 1, ignored, o, seen);
                else if (S_ISREG(st.st_mode) && (ext_in(p, video_ext) || ext_in(p, photo_ext)) &&
                         !excluded(nm, o->exclude, o->n_exclude))
                    s = strlist_add(out, p);
                else (*ignored)++;
            }
        }
        free(ents[i]);
    }
    free(ents);
    return s;
}

/* ---- one decoded source ------------------------------------------------------------------- */

#define THUMB 32 /* side of the luma thumbnail used to find cuts and blank frames */

typedef struct bsrc {
    char path[4096];
    shard_source meta;
    uint64_t key; /* decides the split */
    int split;
    int w, h;
    uint8_t *bytes; /* the JPEGs back to back */
    size_t nbytes, capbytes;
    shard_frame *frames; /* offsets into bytes */
    uint32_t nframes, capframes;
    shard_clip *clips; /* first_frame relative to this source */
    uint32_t nclips, capclips;
    float thumb[2][THUMB * THUMB]; /* luma of the last kept frame and of this one */
    int have_thumb, cuts, flat;
} bsrc;

static void bsrc_free(bsrc *b) {
    free(b->bytes), free(b->frames), free(b->clips);
    b->bytes = NULL, b->frames = NULL, b->clips = NULL;
}

/* A frame's luma on a THUMB x THUMB grid (box averages). */
static void thumb_make(float *t, const uint8_t *rgb, int W, int H) {
    for (int ty = 0; ty < THUMB; ty++)
        for (int tx = 0; tx < THUMB; tx++) {
            int x0 = tx * W / THUMB, x1 = (tx + 1) * W / THUMB, y0 = ty * H / THUMB, y1 = (ty + 1) * H / THUMB;
            double s = 0;
            int n = 0;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++, n++) {
                    const uint8_t *p = rgb + ((size_t)y * W + x) * 3;
                    s += 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
                }
            t[ty * THUMB + tx] = n ? (float)(s / n) : 0;
        }
}

/* Scene cuts and blank frames: a video frame is dropped when it is flat (a black or single-
 * colour frame: luma deviation under 3), and a run is ended where the thumbnail changes by more
 * than cut_mad on average (a cut: training clips must not jump between shots). */
static int frame_check(bsrc *b, const uint8_t *rgb, float cut_mad, int *cut) {
    float *cur = b->thumb[1], *prev = b->thumb[0];
    thumb_make(cur, rgb, b->w, b->h);
    double m = 0, v = 0, d = 0;
    for (int i = 0; i < THUMB * THUMB; i++) m += cur[i];
    m /= THUMB * THUMB;
    for (int i = 0; i < THUMB * THUMB; i++) v += (cur[i] - m) * (cur[i] - m);
    if (sqrt(v / (THUMB * THUMB)) < 3) {
        b->flat++;
        return 0;
    }
    if (b->have_thumb) {
        for (int i = 0; i < THUMB * THUMB; i++) d += fabsf(cur[i] - prev[i]);
        d /= THUMB * THUMB;
    }
    *cut = b->have_thumb && d > cut_mad;
    b->cuts += *cut;
    memcpy(prev, cur, sizeof b->thumb[0]);
    b->have_thumb = 1;
    return 1;
}

static mg_status bsrc_add_frame(bsrc *b, tjhandle tj, const uint8_t *rgb, int quality, uint32_t number, int cut) {
    unsigned char *jpg = NULL;
    unsigned long jsz = 0;
    if (tjCompress2(tj, rgb, b->w, 0, b->h, TJPF_RGB, &jpg, &jsz, TJSAMP_420, quality, 0) != 0) {
        mg_status s = mg_fail(MG_ERR_FORMAT, "%s: frame %u: JPEG encoding failed: %s", b->path, number, tjGetErrorStr2(tj));
        tjFree(jpg);
        return s;
    }
    if (b->nbytes + jsz > b->capbytes) {
        size_t nc = b->capbytes ? b->capbytes * 2 : (1u << 20);
        while (nc < b->nbytes + jsz) nc *= 2;
        uint8_t *nb = realloc(b->bytes, nc);
        if (!nb) { tjFree(jpg); return mg_fail(MG_ERR_NOMEM, "no memory"); }
        b->bytes = nb, b->capbytes = nc;
    }
    if (b->nframes == b->capframes) {
        uint32_t nc = b->capframes ? b->capframes * 2 : 64;
        shard_frame *nf = realloc(b->frames, nc * sizeof *nf);
        if (!nf) { tjFree(jpg); return mg_fail(MG_ERR_NOMEM, "no memory"); }
        b->frames = nf, b->capframes = nc;
    }
    memcpy(b->bytes + b->nbytes, jpg, jsz);
    b->frames[b->nframes++] = (shard_frame){b->nbytes, (uint32_t)jsz, shard_frame_hash(jpg, jsz)};
    b->nbytes += jsz;
    tjFree(jpg);
    /* extend the current run, or start a new one */
    shard_clip *c = b->nclips ? &b->clips[b->nclips - 1] : NULL;
    if (c && !cut && c->start + c->n_frames * b->meta.frame_step == number) {
        c->n_frames++;
    } else {
        if (b->nclips == b->capclips) {
            uint32_t nc = b->capclips ? b->capclips * 2 : 8;
            shard_clip *ncl = realloc(b->clips, nc * sizeof *ncl);
            if (!ncl) return mg_fail(MG_ERR_NOMEM, "no memory");
            b->clips = ncl, b->capclips = nc;
        }
        b->clips[b->nclips++] = (shard_clip){0, (uint32_t)b->w, (uint32_t)b->h, b->nframes - 1, 1, number};
    }
    return MG_OK;
}

/* The stored size: short side `target` (never upscaled), even, aspect kept. */
static void stored_size(int iw, int ih, int target, int *w, int *h) {
    int s = iw < ih ? iw : ih;
    double k = s > target ? (double)target / s : 1.0;
    *w = 2 * (int)(iw * k / 2 + 0.5), *h = 2 * (int)(ih * k / 2 + 0.5);
    if (*w < SHARD_MIN_SIDE) *w = SHARD_MIN_SIDE;
    if (*h < SHARD_MIN_SIDE) *h = SHARD_MIN_SIDE;
    if (*w > SHARD_MAX_SIDE) *w = SHARD_MAX_SIDE;
    if (*h > SHARD_MAX_SIDE) *h = SHARD_MAX_SIDE;
}

/* Is decoded frame number i (counting every decoded frame) kept? Frames i % step == 0 are
 * candidates j = i / step; when the container announces M candidates and M > max, R runs of L
 * consecutive candidates are kept, spread evenly, else the first max. */
typedef struct keep_plan {
    long step, max, runs, len, M;
} keep_plan;

static keep_plan keep_make(const data_build_opts *o, long expected) {
    keep_plan k = {o->frame_step, o->max_frames, 1, o->max_frames, 0};
    if (expected > 0) {
        k.M = (expected + k.step - 1) / k.step;
        if (k.M > k.max) {
            k.runs = (k.max + o->run_frames - 1) / o->run_frames;
            k.len = k.max / k.runs;
        }
    }
    return k;
}

/* 1: keep, 0: skip, -1: past the last kept frame (stop reading). */
static int keep_frame(const keep_plan *k, long i) {
    if (i % k->step) return 0;
    long j = i / k->step;
    if (k->runs == 1) return j < k->max ? 1 : -1;
    long gap = (k->M - k->len) / (k->runs - 1); /* run r starts at r * gap */
    long r = j / (gap > 0 ? gap : 1);
    if (r >= k->runs) r = k->runs - 1;
    if (j >= r * gap && j < r * gap + k->len) return 1;
    return j >= (k->runs - 1) * gap + k->len ? -1 : 0;
}

/* Decodes one file. Returns MG_OK with b filled, or a failure (the caller warns and skips). */
static mg_status decode_source(bsrc *b, const data_build_opts *o, tjhandle tj, int as_photo) {
    source_opts so = {0};
    source *src = NULL;
    /* a bare name like "testsrc" or "v4l2:x" would be a special input: always pass a path */
    char spec[4100];
    snprintf(spec, sizeof spec, "%s%s", strchr(b->path, '/') ? "" : "./", b->path);
    MG_TRY(source_open(&src, spec, &so));
    mg_status s = MG_OK;
    uint8_t *rgb = NULL;
    int iw = src->in_width, ih = src->in_height;
    if ((iw < ih ? iw : ih) < 64) {
        s = mg_fail(MG_ERR_FORMAT, "%s: %dx%d is too small to train on (short side < 64)", b->path, iw, ih);
        goto done;
    }
    stored_size(iw, ih, as_photo ? o->photo_short : o->video_short, &b->w, &b->h);
    if ((s = source_set_size(src, b->w, b->h, FIT_STRETCH)) != MG_OK) goto done;
    rgb = malloc((size_t)b->w * b->h * 3 + SOURCE_RGB_PAD);
    if (!rgb) { s = mg_fail(MG_ERR_NOMEM, "no memory"); goto done; }
    b->meta.kind = as_photo ? SHARD_KIND_PHOTO : SHARD_KIND_VIDEO;
    b->meta.in_width = (uint32_t)iw, b->meta.in_height = (uint32_t)ih;
    b->meta.fps_milli = as_photo || src->fps_den <= 0 ? 0 : (uint32_t)(1000.0 * src->fps_num / src->fps_den + 0.5);
    b->meta.frame_step = as_photo ? 1 : (uint32_t)o->frame_step;
    keep_plan k = keep_make(o, as_photo ? 1 : src->expected_frames);
    if (as_photo) k.max = 1, k.step = 1, k.runs = 1;
    for (long i = 0;; i++) {
        int keep = keep_frame(&k, i);
        if (keep < 0) break;
        source_frame sf;
        mg_status r = source_read(src, rgb, &sf);
        if (r == MG_ERR_EOF) break;
        if (r != MG_OK) {
            if (b->nframes >= 2 && !as_photo) { /* keep the good part of a damaged video */
                fprintf(stderr, "mirage: warning: %s; keeping the %u frames before it\n", mg_last_error(), b->nframes);
                mg_clear_error();
                break;
            }
            s = r;
            goto done;
        }
        int cut = 0;
        if (keep && (as_photo || frame_check(b, rgb, o->cut_mad, &cut)) &&
            (s = bsrc_add_frame(b, tj, rgb, o->quality, (uint32_t)i, cut)) != MG_OK)
            goto done;
    }
    if (b->nframes == 0)
        s = mg_fail(MG_ERR_FORMAT, "%s: no frame could be decoded%s", b->path, b->flat ? " (all blank)" : "");
done:
    free(rgb);
    source_close(src);
    return s;
}

/* ---- writing ------------------------------------------------------------------------------ */

static mg_status write_all(int fd, const void *p, size_t n, const char *path) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return mg_fail(MG_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        b += w, n -= (size_t)w;
    }
    return MG_OK;
}

/* Writes sources [a, b) of list (all of one split) as one shard into tmp. */
static mg_status shard_write(const char *tmp, bsrc **list, int a, int bnd, const shard_header *proto) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return mg_fail(MG_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    shard_header h = *proto;
    h.n_sources = (uint32_t)(bnd - a), h.n_clips = 0, h.n_frames = 0;
    for (int i = a; i < bnd; i++) h.n_clips += list[i]->nclips, h.n_frames += list[i]->nframes;
    shard_tables t = {calloc(h.n_sources, sizeof(shard_source)), calloc(h.n_clips, sizeof(shard_clip)),
                      calloc(h.n_frames, sizeof(shard_frame))};
    size_t tb = shard_tables_bytes(h.n_sources, h.n_clips, h.n_frames);
    uint8_t *tbuf = malloc(tb), hb[SHARD_HEADER_SIZE] = {0};
    mg_status s = MG_OK;
    if (!t.sources || !t.clips || !t.frames || !tbuf) s = mg_fail(MG_ERR_NOMEM, "no memory");
    if (s == MG_OK) s = write_all(fd, hb, sizeof hb, tmp); /* placeholder; the real header goes last */
    uint64_t off = SHARD_HEADER_SIZE;
    uint32_t nc = 0, nf = 0;
    for (int i = a; i < bnd && s == MG_OK; i++) {
        bsrc *b = list[i];
        t.sources[i - a] = b->meta;
        for (uint32_t c = 0; c < b->nclips; c++) {
            t.clips[nc] = b->clips[c];
            t.clips[nc].source = (uint32_t)(i - a);
            t.clips[nc].first_frame += nf;
            nc++;
        }
        for (uint32_t f = 0; f < b->nframes; f++) {
            t.frames[nf + f] = b->frames[f];
            t.frames[nf + f].offset += off;
        }
        nf += b->nframes;
        off += b->nbytes;
        s = write_all(fd, b->bytes, b->nbytes, tmp);
    }
    if (s == MG_OK) {
        h.tables_offset = off;
        h.tables_hash = shard_tables_encode(tbuf, &t, h.n_sources, h.n_clips, h.n_frames);
        s = write_all(fd, tbuf, tb, tmp);
    }
    if (s == MG_OK) {
        shard_header_encode(hb, &h);
        if (pwrite(fd, hb, sizeof hb, 0) != (ssize_t)sizeof hb)
            s = mg_fail(MG_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    }
    if (s == MG_OK && fsync(fd) != 0) s = mg_fail(MG_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && s == MG_OK) s = mg_fail(MG_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    shard_tables_free(&t);
    free(tbuf);
    return s;
}

/* Removes hidden temporaries left by killed builds (their process is gone). */
static void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *p = strstr(e->d_name, SHARD_EXT ".tmp.");
        if (e->d_name[0] != '.' || !p) continue;
        long pid = strtol(p + strlen(SHARD_EXT ".tmp."), NULL, 10);
        if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) == 0) continue; /* a build running now */
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static mg_status mkdir_p(const char *dir) {
    char p[4096];
    if ((size_t)snprintf(p, sizeof p, "%s", dir) >= sizeof p) return mg_fail(MG_ERR_IO, "%s: path too long", dir);
    for (char *c = p + 1;; c++) {
        if (*c == '/' || !*c) {
            char save = *c;
            *c = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) return mg_fail(MG_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
            *c = save;
            if (!save) break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return mg_fail(MG_ERR_IO, "%s: not a directory", dir);
    return MG_OK;
}

static double mib(double b) { return b / (1024.0 * 1024.0); }

static int cmp_key(const void *a, const void *b) {
    const bsrc *x = *(bsrc *const *)a, *y = *(bsrc *const *)b;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* The split: val when the key (a hash of the seed and the source's group name) falls in the
 * first val_fraction of the hash range. With val_fraction > 0: among videos and among photos, a
 * kind with sources of >= 2 groups keeps a group in each split (the lowest key's group moves to
 * val, the highest's to train); overall, >= 2 sources put at least one in val and one in train
 * (splitting a group only when all sources are of one group). */
static void move_group(bsrc **sorted, int n, int at, int split) {
    uint64_t key = sorted[at]->key;
    for (int i = 0; i < n; i++)
        if (sorted[i]->key == key) sorted[i]->split = split;
}

static void assign_split(bsrc **all, int n, double frac) {
    for (int i = 0; i < n; i++)
        all[i]->split = frac > 0 && (double)(all[i]->key >> 11) * 0x1p-53 < frac ? SHARD_SPLIT_VAL : SHARD_SPLIT_TRAIN;
    if (frac <= 0 || n < 2) return;
    bsrc **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return;
    memcpy(sorted, all, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_key);
    for (uint32_t kind = SHARD_KIND_VIDEO; kind <= SHARD_KIND_PHOTO; kind++) {
        int nval = 0, ntrain = 0, first = -1, last = -1;
        for (int i = 0; i < n; i++)
            if (sorted[i]->meta.kind == kind) {
                nval += sorted[i]->split == SHARD_SPLIT_VAL, ntrain += sorted[i]->split == SHARD_SPLIT_TRAIN;
                if (first < 0) first = i;
                last = i;
            }
        if (first < 0 || sorted[first]->key == sorted[last]->key) continue; /* fewer than 2 groups */
        if (nval == 0) move_group(sorted, n, first, SHARD_SPLIT_VAL);
        if (ntrain == 0) move_group(sorted, n, last, SHARD_SPLIT_TRAIN);
    }
    int nval = 0, ntrain = 0;
    for (int i = 0; i < n; i++) nval += sorted[i]->split == SHARD_SPLIT_VAL;
    if (nval == 0) {
        if (sorted[0]->key != sorted[n - 1]->key) move_group(sorted, n, 0, SHARD_SPLIT_VAL);
        else sorted[0]->split = SHARD_SPLIT_VAL;
    }
    for (int i = 0; i < n; i++) ntrain += sorted[i]->split == SHARD_SPLIT_TRAIN;
    if (ntrain == 0) sorted[n - 1]->split = SHARD_SPLIT_TRAIN;
    free(sorted);
}

/* The name a source is split by: its base name without the extension and without a trailing
 * number (and the separator before it), so a numbered series (left01.jpg .. left14.jpg,
 * basketball1/2.png) lands in one split and cannot leak near-duplicates across it. */
static void group_name(const char *base, char *out, size_t n) {
    size_t bl = strnlen(base, n - 1);
    memcpy(out, base, bl);
    out[bl] = 0;
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
    size_t l = strlen(out), full = l;
    while (l > 0 && out[l - 1] >= '0' && out[l - 1] <= '9') l--;
    if (l < full)
        while (l > 0 && (out[l - 1] == '_' || out[l - 1] == '-' || out[l - 1] == ' ' || out[l - 1] == '.')) l--;
    if (l > 0) out[l] = 0;
}

static int excluded(const char *base, char *const *patterns, int n) {
    for (int i = 0; i < n; i++)
        if (fnmatch(patterns[i], base, 0) == 0) return 1;
    return 0;
}

mg_status data_build(const data_build_opts *o, char *const *sources, int n_sources) {
    if (!o->out_dir || !o->out_dir[0]) return mg_fail(MG_ERR_ARG, "data build: no output directory");
    if (n_sources < 1) return mg_fail(MG_ERR_ARG, "data build: no sources given");
    if (o->video_short < 32 || o->photo_short < 32 || o->max_frames < 1 || o->run_frames < 1 || o->frame_step < 1 ||
        o->frame_step > 1000 || o->quality < 1 || o->quality > 100 || !(o->cut_mad > 0) || o->shard_mib < 1 || !(o->val_fraction >= 0) ||
        o->val_fraction >= 1)
        return mg_fail(MG_ERR_ARG, "data build: option out of range");
    double t0 = mg_now_ms();
    /* 1. the files: every named path must exist; folders are searched for known extensions */
    strlist files = {0};
    dirset seen = {0};
    int ignored = 0;
    mg_status s = MG_OK;
    for (int i = 0; i < n_sources && s == MG_OK; i++) {
        struct stat st;
        if (stat(sources[i], &st) != 0) s = mg_fail(MG_ERR_IO, "%s: %s", sources[i], strerror(errno));
        else if (S_ISDIR(st.st_mode)) s = collect_dir(&files, sources[i], 0, &ignored, o, &seen);
        else s = strlist_add(&files, sources[i]);
    }
    free(seen.dev), free(seen.ino);
    if (s == MG_OK && files.n == 0)
        s = mg_fail(MG_ERR_IO, "no video or image files found in the sources given (%d other files ignored)", ignored);
    if (s == MG_OK) s = mkdir_p(o->out_dir);
    if (s != MG_OK) {
        strlist_free(&files);
        return s;
    }
    /* the same file named twice (or reached through two folders) is decoded once */
    char **real = calloc((size_t)files.n, sizeof *real);
    for (int i = 0; real && i < files.n; i++) {
        real[i] = realpath(files.v[i], NULL);
        for (int j = 0; real[i] && j < i; j++)
            if (real[j] && !strcmp(real[i], real[j])) {
                files.v[i][0] = 0;
                break;
            }
    }
    for (int i = 0; real && i < files.n; i++) free(real[i]);
    free(real);
    if (!o->quiet)
        printf("data build: %d files (%d other files ignored) -> %s | video short side %d, photos %d, <= %ld frames "
               "a video (runs of %d, step %d), JPEG q%d, val fraction %.3g, seed %llu\n",
               files.n, ignored, o->out_dir, o->video_short, o->photo_short, o->max_frames, o->run_frames,
               o->frame_step, o->quality, o->val_fraction, (unsigned long long)o->seed);
    remove_stale_temps(o->out_dir);

    /* 2. decode every file */
    bsrc **all = calloc((size_t)files.n, sizeof *all);
    int n = 0, skipped = 0;
    tjhandle tj = tjInitCompress();
    if (!all || !tj) s = mg_fail(MG_ERR_NOMEM, "no memory");
    for (int i = 0; i < files.n && s == MG_OK; i++) {
        if (!files.v[i][0]) continue;
        double ts = mg_now_ms();
        bsrc *b = calloc(1, sizeof *b);
        if (!b) { s = mg_fail(MG_ERR_NOMEM, "no memory"); break; }
        snprintf(b->path, sizeof b->path, "%s", files.v[i]);
        const char *base = base_of(b->path);
        snprintf(b->meta.name, sizeof b->meta.name, "%.*s", SHARD_NAME_MAX - 1, base);
        uint8_t seedb[8];
        for (int k = 0; k < 8; k++) seedb[k] = (uint8_t)(o->seed >> (8 * k));
        uint64_t kh = mg_fnv1a64(seedb, 8);
        /* FNV-1a continued over the group name: the split depends on it and the seed only */
        char group[256];
        group_name(base, group, sizeof group);
        for (const char *c = group; *c; c++) kh = (kh ^ (uint8_t)*c) * 0x100000001b3ULL;
        b->key = kh;
        b->meta.name_hash = mg_fnv1a64(base, strlen(base));
        int photo = ext_in(b->path, photo_ext);
        mg_status r;
        if (!strcasecmp(ext_of(b->path), "gz")) {
            r = mg_fail(MG_ERR_UNSUPPORTED, "%s: compressed (gunzip it first)", b->path);
        } else {
            r = decode_source(b, o, tj, photo);
            if (r == MG_OK && !photo && b->nframes == 1) { /* a still image under a video name: store it as a photo */
                bsrc_free(b);
                b->nframes = b->nclips = 0, b->nbytes = 0, b->capbytes = b->capframes = b->capclips = 0;
                b->have_thumb = b->cuts = b->flat = 0;
                r = decode_source(b, o, tj, 1);
            }
        }
        if (r != MG_OK) {
            if (r == MG_ERR_NOMEM || o->strict) {
                s = r;
            } else {
                fprintf(stderr, "mirage: warning: skipping %s\n", mg_last_error());
                mg_clear_error();
                skipped++;
            }
            bsrc_free(b);
            free(b);
            continue;
        }
        all[n++] = b;
        if (!o->quiet)
            printf("source %d/%d | %-5s | %-28s | %dx%d -> %dx%d | %4u frames in %u run%s (%d cuts, %d blank) | %6.2f MiB | "
                   "%.2f s\n", i + 1, files.n, b->meta.kind == SHARD_KIND_VIDEO ? "video" : "photo", b->meta.name,
                   b->meta.in_width, b->meta.in_height, b->w, b->h, b->nframes, b->nclips, b->nclips == 1 ? "" : "s",
                   b->cuts, b->flat, mib(b->nbytes), (mg_now_ms() - ts) / 1000);
        fflush(stdout);
    }
    if (tj) tjDestroy(tj);
    if (s == MG_OK && n == 0) s = mg_fail(MG_ERR_FORMAT, "none of the %d files could be decoded", skipped);

    /* 3. split, pack into shards, write all under temporary names, then rename */
    typedef char pathbuf[4400];
    pathbuf *tmp_paths = calloc(2 * 256, sizeof(pathbuf)), *final_paths = calloc(2 * 256, sizeof(pathbuf));
#define TMP(sp, k) tmp_paths[(sp)*256 + (k)]
#define FINAL(sp, k) final_paths[(sp)*256 + (k)]
    int nshards[2] = {0, 0};
    if (s == MG_OK && (!tmp_paths || !final_paths)) s = mg_fail(MG_ERR_NOMEM, "no memory");
    if (s == MG_OK) {
        assign_split(all, n, o->val_fraction);
        /* the build id: every source's split key and every frame's hash, in order */
        uint64_t id = 0xcbf29ce484222325ULL;
        for (int i = 0; i < n; i++) {
            id = (id ^ all[i]->key) * 0x100000001b3ULL;
            id = (id ^ (uint64_t)all[i]->split) * 0x100000001b3ULL;
            for (uint32_t f = 0; f < all[i]->nframes; f++) id = (id ^ all[i]->frames[f].hash) * 0x100000001b3ULL;
        }
        const uint64_t cap = (uint64_t)o->shard_mib << 20;
        for (int sp = 0; sp < 2 && s == MG_OK; sp++) {
            bsrc **list = malloc((size_t)n * sizeof *list);
            int m = 0;
            if (!list) { s = mg_fail(MG_ERR_NOMEM, "no memory"); break; }
            for (int i = 0; i < n; i++)
                if (all[i]->split == sp) list[m++] = all[i];
            /* shard boundaries: a new shard when the next source would pass the cap */
            int bounds[257], nb = 0;
            uint64_t cur = 0;
            bounds[nb++] = 0;
            for (int i = 0; i < m; i++) {
                uint64_t sz = list[i]->nbytes + shard_tables_bytes(1, list[i]->nclips, list[i]->nframes);
                if (cur > 0 && cur + sz > cap) {
                    if (nb == 256) { s = mg_fail(MG_ERR_ARG, "more than 255 shards: raise --shard-mib"); break; }
                    bounds[nb++] = i, cur = 0;
                }
                cur += sz;
            }
            bounds[nb] = m;
            nshards[sp] = m ? nb : 0;
            for (int k = 0; k < nshards[sp] && s == MG_OK; k++) {
                char nm[64];
                dataset_shard_name(sp, k, nm, sizeof nm);
                snprintf(FINAL(sp, k), sizeof(pathbuf), "%s/%s", o->out_dir, nm);
                snprintf(TMP(sp, k), sizeof(pathbuf), "%s/.%s.tmp.%ld", o->out_dir, nm, (long)getpid());
                shard_header proto = {.split = (uint32_t)sp, .shard_index = (uint32_t)k,
                                      .shard_count = (uint32_t)nshards[sp], .build_id = id};
                s = shard_write(TMP(sp, k), list, bounds[k], bounds[k + 1], &proto);
                if (s != MG_OK) nshards[sp] = k + 1; /* so the failed temporary is removed too */
            }
            free(list);
        }
        if (s == MG_OK) {
            for (int sp = 0; sp < 2 && s == MG_OK; sp++)
                for (int k = 0; k < nshards[sp] && s == MG_OK; k++)
                    if (rename(TMP(sp, k), FINAL(sp, k)) != 0)
                        s = mg_fail(MG_ERR_IO, "%s: cannot rename onto %s: %s", TMP(sp, k), FINAL(sp, k), strerror(errno));
            fsync_dir(o->out_dir);
            /* shards of an older build beyond this build's count */
            for (int sp = 0; sp < 2 && s == MG_OK; sp++)
                for (int k = nshards[sp]; k < 1000; k++) {
                    char nm[64], path[4400];
                    snprintf(path, sizeof path, "%s/%s", o->out_dir, dataset_shard_name(sp, k, nm, sizeof nm));
                    unlink(path);
                }
            fsync_dir(o->out_dir);
        } else {
            for (int sp = 0; sp < 2; sp++)
                for (int k = 0; k < nshards[sp]; k++) unlink(TMP(sp, k));
        }
    }
    if (s == MG_OK && !o->quiet) {
        for (int sp = 0; sp < 2; sp++) {
            int nv = 0, np = 0;
            long fr = 0;
            double by = 0;
            for (int i = 0; i < n; i++)
                if (all[i]->split == sp) {
                    if (all[i]->meta.kind == SHARD_KIND_VIDEO) nv++, fr += all[i]->nframes;
                    else np++;
                    by += all[i]->nbytes;
                }
            printf("%-5s | %d shard%s | %d videos (%ld frames) | %d photos | %.2f MiB of JPEG\n",
                   sp ? "val" : "train", nshards[sp], nshards[sp] == 1 ? "" : "s", nv, fr, np, mib(by));
        }
        printf("done | %d sources (%d skipped) in %.1f s -> %s\n", n, skipped, (mg_now_ms() - t0) / 1000, o->out_dir);
    }
    for (int i = 0; i < n; i++) {
        bsrc_free(all[i]);
        free(all[i]);
    }
    free(all);
    free(tmp_paths), free(final_paths);
    strlist_free(&files);
    return s;
}

#endif
