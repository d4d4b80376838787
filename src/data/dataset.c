/* The trainer's reader: opens the shards of a split (headers and indexes checked, files kept
 * open and read with pread, so any number of threads sample at once) and draws clips —
 * real video stretches, or synthetic camera paths over photos with moving cut-out layers.
 * Depends on libturbojpeg only (no FFmpeg): the GPU machines that train have nothing else.
 *
 * Choices worth knowing:
 * - JPEGs are decoded at the smallest DCT scale (1/8..1) that still leaves at least the pixels
 *   the clip needs, so a 64x64 clip from a 384-pixel photo decodes 1/4 of the pixels and never
 *   aliases from a large bilinear step.
 * - Every frame's JPEG bytes are checked against the hash in the frame table before decoding:
 *   a damaged shard is reported (MG_ERR_FORMAT, naming the file and frame), never trained on.
 * - The synthetic camera keeps its rotated, zoomed view square inside the photo for every
 *   frame by construction (the scale is bounded for the largest rotation, and the centre lives
 *   in the box the half-extent leaves), so no edge of the photo ever shows. */
#include "data/data.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "core/status.h"
#include "data/camera.h"
#include "data/shard.h"

#ifdef MG_HAVE_JPEG
#include <turbojpeg.h>
#endif

typedef struct ds_shard {
    char path[4300];
    int fd;
    shard_header h;
    shard_tables t;
} ds_shard;

typedef struct ds_ref { /* a clip in a shard */
    int shard;
    uint32_t clip;
} ds_ref;

struct dataset {
    char dir[4096];
    int split;
    int n_shards;
    ds_shard *shards;
    ds_ref *videos, *photos; /* video clips (cumulative frame counts in video_cum), photo clips */
    int n_videos, n_photos;
    double *video_cum;
    int n_sources, n_video_sources;
    long video_frames;
    int64_t bytes;
};

#ifdef MG_HAVE_JPEG
static int split_code(const char *split) {
    if (!strcmp(split, "train")) return SHARD_SPLIT_TRAIN;
    if (!strcmp(split, "val")) return SHARD_SPLIT_VAL;
    return -1;
}


/* "train-007.mgshard" -> 7; -1 for names that are not a shard of this split. */
static int shard_name_index(const char *name, const char *split) {
    size_t ls = strlen(split), le = strlen(SHARD_EXT), n = strlen(name);
    if (n != ls + 1 + 3 + le || strncmp(name, split, ls) || name[ls] != '-' || strcmp(name + n - le, SHARD_EXT))
        return -1;
    int v = 0;
    for (size_t i = ls + 1; i < ls + 4; i++) {
        if (name[i] < '0' || name[i] > '9') return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

#endif

const char *dataset_shard_name(int split, int index, char *buf, size_t n) {
    snprintf(buf, n, "%s-%03d" SHARD_EXT, split == SHARD_SPLIT_VAL ? "val" : "train", index);
    return buf;
}

void dataset_close(dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n_shards; i++) {
        if (ds->shards[i].fd >= 0) close(ds->shards[i].fd);
        shard_tables_free(&ds->shards[i].t);
    }
    free(ds->shards), free(ds->videos), free(ds->photos), free(ds->video_cum);
    free(ds);
}

#ifdef MG_HAVE_JPEG
static mg_status pread_all(int fd, void *buf, size_t n, uint64_t off, const char *path) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return mg_fail(MG_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r == 0) return mg_fail(MG_ERR_FORMAT, "%s: file ended at %llu bytes while reading (truncated?)", path,
                                   (unsigned long long)(off + got));
        got += (size_t)r;
    }
    return MG_OK;
}

static mg_status shard_load(ds_shard *sh, const char *path) {
    snprintf(sh->path, sizeof sh->path, "%s", path);
    sh->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (sh->fd < 0) return mg_fail(MG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(sh->fd, &st) != 0) return mg_fail(MG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    uint8_t hb[SHARD_HEADER_SIZE];
    size_t n = st.st_size < (off_t)SHARD_HEADER_SIZE ? (size_t)st.st_size : SHARD_HEADER_SIZE;
    MG_TRY(pread_all(sh->fd, hb, n, 0, path));
    MG_TRY(shard_header_parse(&sh->h, hb, n, (uint64_t)st.st_size, path));
    size_t tb = (size_t)(sh->h.file_size - sh->h.tables_offset);
    uint8_t *buf = malloc(tb);
    if (!buf) return mg_fail(MG_ERR_NOMEM, "%s: no memory for a %zu-byte index", path, tb);
    mg_status s = pread_all(sh->fd, buf, tb, sh->h.tables_offset, path);
    if (s == MG_OK) s = shard_tables_parse(&sh->t, &sh->h, buf, tb, path);
    free(buf);
    return s;
}

#endif

mg_status dataset_open(dataset **out, const char *dir, const char *split) {
    *out = NULL;
#ifndef MG_HAVE_JPEG
    (void)dir, (void)split;
    return mg_fail(MG_ERR_UNSUPPORTED, "reading training data needs libjpeg-turbo, which is not in this build "
                                       "(apt-get install libturbojpeg0-dev, then rebuild)");
#else
    int sc = split ? split_code(split) : -1;
    if (sc < 0) return mg_fail(MG_ERR_ARG, "dataset split '%s': expected train or val", split ? split : "(null)");
    DIR *d = opendir(dir);
    if (!d) return mg_fail(MG_ERR_IO, "%s: cannot open the data directory: %s", dir, strerror(errno));
    int max_index = -1, found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int k = shard_name_index(e->d_name, split);
        if (k < 0) continue;
        found++;
        if (k > max_index) max_index = k;
    }
    closedir(d);
    if (!found)
        return mg_fail(MG_ERR_IO, "%s: no %s shards (%s-NNN%s) here; make them with `mirage data build` or `make data`",
                       dir, split, split, SHARD_EXT);
    dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return mg_fail(MG_ERR_NOMEM, "no memory");
    snprintf(ds->dir, sizeof ds->dir, "%s", dir);
    ds->split = sc;
    ds->shards = calloc((size_t)max_index + 1, sizeof *ds->shards);
    if (!ds->shards) { free(ds); return mg_fail(MG_ERR_NOMEM, "no memory"); }
    for (int i = 0; i <= max_index; i++) ds->shards[i].fd = -1;
    ds->n_shards = max_index + 1;
    mg_status s = MG_OK;
    char name[64], path[4200];
    for (int i = 0; i <= max_index && s == MG_OK; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, dataset_shard_name(sc, i, name, sizeof name));
        if (access(path, F_OK) != 0) {
            s = mg_fail(MG_ERR_FORMAT, "%s: missing (the data directory holds %s shards up to %03d): an incomplete "
                                       "copy? rebuild with `mirage data build`", path, split, max_index);
            break;
        }
        ds_shard *sh = &ds->shards[i];
        s = shard_load(sh, path);
        if (s != MG_OK) break;
        if (sh->h.split != (uint32_t)sc || sh->h.shard_index != (uint32_t)i)
            s = mg_fail(MG_ERR_FORMAT, "%s: the header says %s shard %u, the name says %s shard %d (renamed file?)", path,
                        sh->h.split == SHARD_SPLIT_VAL ? "val" : "train", sh->h.shard_index, split, i);
        else if (sh->h.shard_count != (uint32_t)ds->n_shards)
            s = mg_fail(MG_ERR_FORMAT, "%s: belongs to a build of %u %s shards, the directory has %d: mixed builds? "
                                       "rebuild with `mirage data build`", path, sh->h.shard_count, split, ds->n_shards);
        else if (i > 0 && sh->h.build_id != ds->shards[0].h.build_id)
            s = mg_fail(MG_ERR_FORMAT, "%s: from a different build than %s (build ids %016llx, %016llx): mixed builds; "
                                       "rebuild with `mirage data build`", path, ds->shards[0].path,
                        (unsigned long long)sh->h.build_id, (unsigned long long)ds->shards[0].h.build_id);
    }
    if (s != MG_OK) {
        dataset_close(ds);
        return s;
    }
    size_t nclips = 0;
    for (int i = 0; i < ds->n_shards; i++) nclips += ds->shards[i].h.n_clips;
    ds->videos = calloc(nclips, sizeof *ds->videos);
    ds->photos = calloc(nclips, sizeof *ds->photos);
    ds->video_cum = calloc(nclips, sizeof *ds->video_cum);
    if (!ds->videos || !ds->photos || !ds->video_cum) {
        dataset_close(ds);
        return mg_fail(MG_ERR_NOMEM, "no memory");
    }
    double cum = 0;
    for (int i = 0; i < ds->n_shards; i++) {
        ds_shard *sh = &ds->shards[i];
        ds->n_sources += (int)sh->h.n_sources;
        ds->bytes += (int64_t)sh->h.file_size;
        for (uint32_t k = 0; k < sh->h.n_sources; k++) ds->n_video_sources += sh->t.sources[k].kind == SHARD_KIND_VIDEO;
        for (uint32_t c = 0; c < sh->h.n_clips; c++) {
            const shard_clip *cl = &sh->t.clips[c];
            if (sh->t.sources[cl->source].kind == SHARD_KIND_VIDEO) {
                cum += cl->n_frames;
                ds->video_frames += cl->n_frames;
                ds->video_cum[ds->n_videos] = cum;
                ds->videos[ds->n_videos++] = (ds_ref){i, c};
            } else {
                ds->photos[ds->n_photos++] = (ds_ref){i, c};
            }
        }
    }
    *out = ds;
    return MG_OK;
#endif
}

int dataset_sources(const dataset *ds) { return ds->n_sources; }
long dataset_video_frames(const dataset *ds) { return ds->video_frames; }
int dataset_photos(const dataset *ds) { return ds->n_photos; }

void dataset_describe(const dataset *ds, dataset_info *info) {
    memset(info, 0, sizeof *info);
    info->shards = ds->n_shards;
    info->sources = ds->n_sources;
    info->videos = ds->n_video_sources;
    info->photos = ds->n_photos;
    info->video_clips = ds->n_videos;
    info->video_frames = ds->video_frames;
    info->bytes = ds->bytes;
    info->build_id = ds->n_shards ? ds->shards[0].h.build_id : 0;
    for (int i = 0; i < ds->n_shards; i++)
        for (uint32_t k = 0; k < ds->shards[i].h.n_frames; k++) info->jpeg_bytes += ds->shards[i].t.frames[k].size;
}

int dataset_source_get(const dataset *ds, int index, dataset_source *out) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < ds->n_shards; i++) {
        const ds_shard *sh = &ds->shards[i];
        if (index >= (int)sh->h.n_sources) {
            index -= (int)sh->h.n_sources;
            continue;
        }
        const shard_source *s = &sh->t.sources[index];
        snprintf(out->name, sizeof out->name, "%s", s->name);
        out->is_video = s->kind == SHARD_KIND_VIDEO;
        out->in_width = (int)s->in_width, out->in_height = (int)s->in_height;
        out->fps = s->fps_milli / 1000.0;
        out->frame_step = (int)s->frame_step;
        for (uint32_t c = 0; c < sh->h.n_clips; c++) {
            const shard_clip *cl = &sh->t.clips[c];
            if (cl->source != (uint32_t)index) continue;
            out->clips++;
            out->frames += cl->n_frames;
            out->width = (int)cl->width, out->height = (int)cl->height;
        }
        return 0;
    }
    return -1;
}

#ifdef MG_HAVE_JPEG

/* ---- frames ----------------------------------------------------------------------------- */

typedef struct img {
    uint8_t *rgb;
    int w, h;
} img;

typedef struct reader { /* per call: the decoder and a buffer for compressed bytes */
    dataset *ds;
    tjhandle tj;
    uint8_t *jbuf;
    size_t jcap;
} reader;

/* Decodes frame `fi` of shard `si` so its sides are at least need_w x need_h pixels where the
 * DCT scaling allows, else at full size. The size check is against the clip's (w, h). */
static mg_status frame_decode(reader *r, int si, uint32_t fi, int cw, int ch, int need_short, img *out) {
    const ds_shard *sh = &r->ds->shards[si];
    const shard_frame *f = &sh->t.frames[fi];
    if (f->size > r->jcap) {
        uint8_t *nb = realloc(r->jbuf, f->size);
        if (!nb) return mg_fail(MG_ERR_NOMEM, "%s: no memory for frame %u (%u bytes)", sh->path, fi, f->size);
        r->jbuf = nb, r->jcap = f->size;
    }
    MG_TRY(pread_all(sh->fd, r->jbuf, f->size, f->offset, sh->path));
    if (shard_frame_hash(r->jbuf, f->size) != f->hash)
        return mg_fail(MG_ERR_FORMAT, "%s: frame %u: checksum mismatch (damaged file)", sh->path, fi);
    int w, h, sub, cs;
    if (tjDecompressHeader3(r->tj, r->jbuf, f->size, &w, &h, &sub, &cs) != 0)
        return mg_fail(MG_ERR_FORMAT, "%s: frame %u: not a readable JPEG: %s", sh->path, fi, tjGetErrorStr2(r->tj));
    if (w != cw || h != ch)
        return mg_fail(MG_ERR_FORMAT, "%s: frame %u: JPEG is %dx%d, the index says %dx%d", sh->path, fi, w, h, cw, ch);
    int nsf = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&nsf);
    int bw = w, bh = h, shortest = w < h ? w : h;
    for (int i = 0; sf && i < nsf; i++) { /* the smallest scaled size that still covers need_short */
        if (sf[i].num > sf[i].denom) continue;
        int sw = TJSCALED(w, sf[i]), sh2 = TJSCALED(h, sf[i]);
        int ss = sw < sh2 ? sw : sh2;
        if (ss >= need_short && ss < shortest) bw = sw, bh = sh2, shortest = ss;
    }
    out->w = bw, out->h = bh;
    out->rgb = malloc((size_t)bw * bh * 3);
    if (!out->rgb) return mg_fail(MG_ERR_NOMEM, "no memory for a %dx%d frame", bw, bh);
    if (tjDecompress2(r->tj, r->jbuf, f->size, out->rgb, bw, 0, bh, TJPF_RGB, TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) !=
        0) {
        free(out->rgb);
        out->rgb = NULL;
        return mg_fail(MG_ERR_FORMAT, "%s: frame %u: cannot decode the JPEG: %s", sh->path, fi, tjGetErrorStr2(r->tj));
    }
    return MG_OK;
}

/* ---- resampling --------------------------------------------------------------------------- */

/* Bilinear sample of im at continuous pixel coordinates (x, y) (pixel centres at .5),
 * clamped to the edge pixels. */
static inline void bilinear(const img *im, float x, float y, float *rgb) {
    x -= 0.5f, y -= 0.5f;
    if (x < 0) x = 0;
    if (y < 0) y = 0;
    if (x > im->w - 1) x = (float)(im->w - 1);
    if (y > im->h - 1) y = (float)(im->h - 1);
    int x0 = (int)x, y0 = (int)y;
    int x1 = x0 + 1 < im->w ? x0 + 1 : x0, y1 = y0 + 1 < im->h ? y0 + 1 : y0;
    float fx = x - x0, fy = y - y0;
    const uint8_t *p00 = im->rgb + ((size_t)y0 * im->w + x0) * 3, *p01 = im->rgb + ((size_t)y0 * im->w + x1) * 3;
    const uint8_t *p10 = im->rgb + ((size_t)y1 * im->w + x0) * 3, *p11 = im->rgb + ((size_t)y1 * im->w + x1) * 3;
    for (int c = 0; c < 3; c++) {
        float a = p00[c] + (p01[c] - p00[c]) * fx, b = p10[c] + (p11[c] - p10[c]) * fx;
        rgb[c] = a + (b - a) * fy;
    }
}

static inline uint8_t to_u8(float v) { return (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v + 0.5f); }

/* out (S x S) pixel (u, v) takes im at (cx, cy) + s * R(theta) * (u + .5 - S/2, v + .5 - S/2),
 * u mirrored when flip. Bilinear with 8-bit fixed-point weights, coordinates stepped along a
 * row, clamped to the edge pixels (views stay inside the photo; the clamp only absorbs
 * rounding). This is most of the reader's time. */
static void warp_affine(uint8_t *out, int S, const img *im, float cx, float cy, float s, float theta, int flip) {
    const float c = cosf(theta) * s, sn = sinf(theta) * s, half = S * 0.5f;
    const float xmax = (float)(im->w - 1), ymax = (float)(im->h - 1);
    const float stepx = flip ? -c : c, stepy = flip ? -sn : sn;
    const size_t stride = (size_t)im->w * 3;
    for (int v = 0; v < S; v++) {
        float du = (flip ? S - 1 : 0) + 0.5f - half, dv = v + 0.5f - half;
        float x = cx + c * du - sn * dv - 0.5f, y = cy + sn * du + c * dv - 0.5f;
        uint8_t *o = out + (size_t)v * S * 3;
        for (int u = 0; u < S; u++, x += stepx, y += stepy, o += 3) {
            float xc = x < 0 ? 0 : x > xmax ? xmax : x, yc = y < 0 ? 0 : y > ymax ? ymax : y;
            int x0 = (int)xc, y0 = (int)yc;
            int fx = (int)((xc - x0) * 256.0f + 0.5f), fy = (int)((yc - y0) * 256.0f + 0.5f);
            const uint8_t *p00 = im->rgb + (size_t)y0 * stride + (size_t)x0 * 3;
            const uint8_t *p01 = p00 + (x0 < im->w - 1 ? 3 : 0);
            const size_t dy = y0 < im->h - 1 ? stride : 0;
            const uint8_t *p10 = p00 + dy, *p11 = p01 + dy;
            for (int k = 0; k < 3; k++) {
                int top = p00[k] * (256 - fx) + p01[k] * fx, bot = p10[k] * (256 - fx) + p11[k] * fx;
                o[k] = (uint8_t)((top * (256 - fy) + bot * fy + 32768) >> 16);
            }
        }
    }
}

static float unif(mg_rng *r, float lo, float hi) { return lo + (hi - lo) * mg_rng_uniform(r); }
static uint32_t below(mg_rng *r, uint32_t n) { return n ? (uint32_t)(mg_rng_next(r) % n) : 0; }

/* ---- real video ----------------------------------------------------------------------------- */

static mg_status sample_video(reader *rd, mg_rng *r, int T, int S, uint8_t *out) {
    dataset *ds = rd->ds;
    /* a run is drawn in proportion to the T-frame stretches it holds, so every stretch of real
     * footage is equally likely; only when no run is T frames long, in proportion to its frames
     * (and then played back and forth) */
    double starts = 0;
    for (int i = 0; i < ds->n_videos; i++) {
        long n = (long)ds->shards[ds->videos[i].shard].t.clips[ds->videos[i].clip].n_frames;
        if (n >= T) starts += (double)(n - T + 1);
    }
    float u = mg_rng_uniform(r);
    int lo = 0;
    if (starts > 0) {
        double x = u * starts, acc = 0;
        for (lo = 0; lo < ds->n_videos - 1; lo++) {
            long n = (long)ds->shards[ds->videos[lo].shard].t.clips[ds->videos[lo].clip].n_frames;
            if (n >= T && (acc += (double)(n - T + 1)) > x) break;
        }
        /* rounding may run past the last long-enough run: step back to it */
        while (lo > 0 && (int)ds->shards[ds->videos[lo].shard].t.clips[ds->videos[lo].clip].n_frames < T) lo--;
    } else {
        double x = u * ds->video_cum[ds->n_videos - 1];
        int hi = ds->n_videos - 1; /* first clip whose cumulative count exceeds x */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (ds->video_cum[mid] > x) hi = mid;
            else lo = mid + 1;
        }
    }
    const ds_ref ref = ds->videos[lo];
    const shard_clip *cl = &ds->shards[ref.shard].t.clips[ref.clip];
    int n = (int)cl->n_frames, w = (int)cl->width, h = (int)cl->height;
    int start = n >= T ? (int)below(r, (uint32_t)(n - T + 1)) : 0;
    /* a square crop of 60..100% of the short side, anywhere, scaled to S; mirrored half the time */
    int short_side = w < h ? w : h;
    float crop = short_side * unif(r, 0.6f, 1.0f);
    float cx0 = unif(r, crop * 0.5f, w - crop * 0.5f), cy0 = unif(r, crop * 0.5f, h - crop * 0.5f);
    int flip = (int)below(r, 2);
    int need = (int)ceilf(S * short_side / crop); /* decoded short side that keeps the crop >= S pixels */
    for (int t = 0; t < T; t++) {
        int k = t;
        if (n < T) { /* shorter than the clip: play back and forth */
            int period = n > 1 ? 2 * (n - 1) : 1;
            k = t % period;
            if (k >= n) k = period - k;
        }
        img im = {0};
        MG_TRY(frame_decode(rd, ref.shard, cl->first_frame + (uint32_t)(start + k), w, h, need, &im));
        float sc = (float)im.w / w; /* decoded pixels per stored pixel */
        warp_affine(out + (size_t)t * S * S * 3, S, &im, cx0 * sc, cy0 * sc, crop * sc / S, 0.0f, flip);
        free(im.rgb);
    }
    return MG_OK;
}

/* ---- synthetic camera motion over a photo ------------------------------------------------------- */

#define MAX_ROT CAMERA_MAX_ROLL

/* camera: scale (photo pixels per output pixel) is zoom * the largest that keeps the view inside
 * the photo at the largest roll. The centre drifts at a constant speed in output pixels, with
 * a slow wobble and optional shake, and is kept in the box the view's half-extent leaves in
 * the photo (a camera that reaches the edge stops there). */
void camera_path(mg_rng *r, int T, int S, int w, int h, camera_view *views, int *flip) {
    const float k = S / 256.0f; /* motion is specified for 256-pixel frames */
    float smax = (w < h ? w : h) / (S * (cosf(MAX_ROT) + sinf(MAX_ROT)));
    float zmin = 0.5f / smax > 0.45f ? 0.5f / smax : 0.45f; /* no more than 2x upscaling */
    if (zmin > 1) zmin = 1;
    float z0 = unif(r, zmin, 1), z1 = z0 * expf(unif(r, -0.03f, 0.03f) * (T > 1 ? T - 1 : 0)); /* <= 3% a frame */
    if (z1 < zmin) z1 = zmin;
    if (z1 > 1) z1 = 1;
    float rot0 = unif(r, -MAX_ROT, MAX_ROT) * (below(r, 2) ? 1.0f : 0.3f), rotv = unif(r, -0.012f, 0.012f);
    float speed = unif(r, 0, 8.0f) * k, dir = unif(r, 0, 6.2831853f); /* pan, output pixels a frame */
    float vx = speed * cosf(dir), vy = speed * sinf(dir);
    float wf = unif(r, 1.0f, 4.0f), wa = unif(r, 0, 3.0f) * k * (T > 1 ? T - 1 : 1) / wf; /* wobble <= 3 px a frame */
    float wdir = unif(r, 0, 6.2831853f), wph = unif(r, 0, 6.2831853f);
    float shake = below(r, 3) == 0 ? unif(r, 0.5f, 2.5f) * k : 0; /* hand-held jitter, pixels */
    float shf1 = unif(r, 1.5f, 2.5f), shf2 = unif(r, 2.7f, 3.3f), shp1 = unif(r, 0, 6.28f), shp2 = unif(r, 0, 6.28f);
    float ux = unif(r, 0, 1), uy = unif(r, 0, 1);
    *flip = (int)below(r, 2);
    /* the start: anywhere the whole drift fits in the box (measured at the mid zoom) */
    float s_mid = smax * 0.5f * (z0 + z1), ext_mid = 0.5f * S * s_mid * (cosf(MAX_ROT) + sinf(MAX_ROT));
    float dx = vx * s_mid * (T - 1), dy = vy * s_mid * (T - 1);
    float lox = ext_mid + (dx < 0 ? -dx : 0), hix = w - ext_mid - (dx > 0 ? dx : 0);
    float loy = ext_mid + (dy < 0 ? -dy : 0), hiy = h - ext_mid - (dy > 0 ? dy : 0);
    float x = lox <= hix ? lox + (hix - lox) * ux : 0.5f * w, y = loy <= hiy ? loy + (hiy - loy) * uy : 0.5f * h;
    for (int t = 0; t < T; t++) {
        float tau = T > 1 ? (float)t / (T - 1) : 0;
        float z = z0 * powf(z1 / z0, tau), sc = smax * z;
        float th = rot0 + rotv * t;
        if (th > MAX_ROT) th = MAX_ROT;
        if (th < -MAX_ROT) th = -MAX_ROT;
        float ext = 0.5f * S * sc * (fabsf(cosf(th)) + fabsf(sinf(th))); /* half-extent of the view */
        if (t > 0) x += vx * sc, y += vy * sc;
        float wob = wa * sinf(wf * tau + wph);
        float ox = (wob * cosf(wdir) + shake * sinf(shf1 * t + shp1)) * sc;
        float oy = (wob * sinf(wdir) + shake * sinf(shf2 * t + shp2)) * sc;
        if (x < ext) x = ext; /* the drift stops at the edge */
        if (x > w - ext) x = w - ext;
        if (y < ext) y = ext;
        if (y > h - ext) y = h - ext;
        float cx = x + ox, cy = y + oy;
        if (cx < ext) cx = ext;
        if (cx > w - ext) cx = w - ext;
        if (cy < ext) cy = ext;
        if (cy > h - ext) cy = h - ext;
        views[t] = (camera_view){cx, cy, sc, th};
    }
}

typedef struct layer { /* a moving cut-out: a soft-edged blob of another photo */
    img tex;
    float tcx, tcy, ts;           /* texture centre and photo pixels per layer unit */
    float x0, y0, vx, vy, ax, ay; /* position (output pixels) per frame: x0 + vx t + ax t^2 */
    float rot0, rotv, grow;       /* rotation and scale per frame */
    float R, edge;                /* radius (output pixels), soft edge width */
    float a2, c2, s2, a3, c3, s3, a4, c4, s4; /* shape harmonics: amplitude, cos/sin of phase */
} layer;

static void layer_random(layer *L, mg_rng *r, int S, int T) {
    L->R = S * unif(r, 0.11f, 0.22f);
    L->edge = unif(r, 1.0f, 3.0f) * (S / 256.0f) + 0.5f;
    float ph;
    L->a2 = unif(r, 0, 0.25f), ph = unif(r, 0, 6.2831853f), L->c2 = cosf(ph), L->s2 = sinf(ph);
    L->a3 = unif(r, 0, 0.15f), ph = unif(r, 0, 6.2831853f), L->c3 = cosf(ph), L->s3 = sinf(ph);
    L->a4 = unif(r, 0, 0.08f), ph = unif(r, 0, 6.2831853f), L->c4 = cosf(ph), L->s4 = sinf(ph);
    /* the farthest a visible pixel lies from the centre, in layer units: the shape's largest
     * radius plus its soft edge, which a shrinking layer (growth down to e^-0.4) widens */
    float rmax = L->R * (1 + L->a2 + L->a3 + L->a4) + 1.5f * L->edge;
    /* the texture: about the background's scale, and the whole blob inside the photo */
    int tshort = L->tex.w < L->tex.h ? L->tex.w : L->tex.h;
    float ts = (tshort / (float)S) * unif(r, 0.5f, 1.0f), tsmax = (tshort * 0.5f - 1) / rmax;
    L->ts = ts < tsmax ? ts : tsmax;
    float tr = rmax * L->ts; /* the largest reach into the texture, whatever the rotation */
    L->tcx = unif(r, tr, L->tex.w - tr), L->tcy = unif(r, tr, L->tex.h - tr);
    float speed = unif(r, 0.3f, 5.0f) * (S / 256.0f), dir = unif(r, 0, 6.2831853f);
    L->vx = speed * cosf(dir), L->vy = speed * sinf(dir);
    L->ax = unif(r, -0.1f, 0.1f) * (S / 256.0f), L->ay = unif(r, -0.1f, 0.1f) * (S / 256.0f);
    /* start so the layer's middle frame is well inside the view */
    float tm = (T - 1) * 0.5f, mx = unif(r, 0.25f, 0.75f) * S, my = unif(r, 0.25f, 0.75f) * S;
    L->x0 = mx - L->vx * tm - L->ax * tm * tm, L->y0 = my - L->vy * tm - L->ay * tm * tm;
    L->rot0 = unif(r, -3.1415926f, 3.1415926f);
    L->rotv = unif(r, -0.035f, 0.035f);
    L->grow = unif(r, -0.012f, 0.012f);
}

/* Composites layer L at frame t over the S x S frame. */
static void layer_draw(const layer *L, int t, int S, uint8_t *frame) {
    float px = L->x0 + L->vx * t + L->ax * t * t, py = L->y0 + L->vy * t + L->ay * t * t;
    float gl = L->grow * t; /* growth, bounded so long clips neither lose the layer nor fill the frame */
    float th = L->rot0 + L->rotv * t, g = expf(gl < -0.4f ? -0.4f : gl > 0.4f ? 0.4f : gl);
    float ct = cosf(th), st = sinf(th), inv = 1.0f / g;
    float reach = L->R * (1 + L->a2 + L->a3 + L->a4) * g + L->edge;
    int u0 = (int)floorf(px - reach), u1 = (int)ceilf(px + reach), v0 = (int)floorf(py - reach), v1 = (int)ceilf(py + reach);
    if (u0 < 0) u0 = 0;
    if (v0 < 0) v0 = 0;
    if (u1 > S - 1) u1 = S - 1;
    if (v1 > S - 1) v1 = S - 1;
    float rgb[3];
    for (int v = v0; v <= v1; v++) {
        for (int u = u0; u <= u1; u++) {
            float dx = u + 0.5f - px, dy = v + 0.5f - py;
            /* into the layer's own frame: unrotate, unscale */
            float lx = (ct * dx + st * dy) * inv, ly = (-st * dx + ct * dy) * inv;
            float d = sqrtf(lx * lx + ly * ly);
            float c1 = d > 1e-6f ? lx / d : 1, s1 = d > 1e-6f ? ly / d : 0;
            float c2 = c1 * c1 - s1 * s1, s2 = 2 * s1 * c1; /* cos, sin of 2phi, 3phi, 4phi */
            float c3 = c2 * c1 - s2 * s1, s3 = s2 * c1 + c2 * s1;
            float c4 = c2 * c2 - s2 * s2, s4 = 2 * s2 * c2;
            float rad = L->R * (1 + L->a2 * (s2 * L->c2 + c2 * L->s2) + L->a3 * (s3 * L->c3 + c3 * L->s3) +
                                L->a4 * (s4 * L->c4 + c4 * L->s4));
            float a = (rad - d) * g / L->edge + 0.5f; /* soft edge, measured in output pixels */
            if (a <= 0) continue;
            if (a > 1) a = 1;
            a = a * a * (3 - 2 * a);
            bilinear(&L->tex, L->tcx + L->ts * lx, L->tcy + L->ts * ly, rgb);
            uint8_t *o = frame + ((size_t)v * S + u) * 3;
            for (int c = 0; c < 3; c++) o[c] = to_u8(o[c] + (rgb[c] - o[c]) * a);
        }
    }
}

static mg_status decode_photo(reader *rd, const ds_ref *ref, int S, img *out) {
    const shard_clip *cl = &rd->ds->shards[ref->shard].t.clips[ref->clip];
    /* enough pixels for the widest view (about 1.6 S at no zoom) to stay at or below 1:1 */
    return frame_decode(rd, ref->shard, cl->first_frame, (int)cl->width, (int)cl->height, (S * 8 + 4) / 5, out);
}

static mg_status sample_synthetic(reader *rd, mg_rng *r, int T, int S, uint8_t *out) {
    dataset *ds = rd->ds;
    uint32_t bi = below(r, (uint32_t)ds->n_photos);
    int n_layers = 1 + (int)below(r, 2);
    layer L[2];
    memset(L, 0, sizeof L);
    img bg = {0};
    mg_status s = decode_photo(rd, &ds->photos[bi], S, &bg);
    for (int i = 0; i < n_layers && s == MG_OK; i++) {
        uint32_t li = below(r, (uint32_t)ds->n_photos);
        if (ds->n_photos > 1 && li == bi) li = (li + 1 + below(r, (uint32_t)ds->n_photos - 1)) % (uint32_t)ds->n_photos;
        s = decode_photo(rd, &ds->photos[li], S, &L[i].tex);
        if (s == MG_OK) layer_random(&L[i], r, S, T);
    }
    camera_view *views = s == MG_OK ? malloc((size_t)T * sizeof *views) : NULL;
    if (s == MG_OK && !views) s = mg_fail(MG_ERR_NOMEM, "no memory");
    if (s == MG_OK) {
        int flip;
        camera_path(r, T, S, bg.w, bg.h, views, &flip);
        for (int t = 0; t < T; t++) {
            uint8_t *frame = out + (size_t)t * S * S * 3;
            warp_affine(frame, S, &bg, views[t].cx, views[t].cy, views[t].scale, views[t].theta, flip);
            for (int i = 0; i < n_layers; i++) layer_draw(&L[i], t, S, frame);
        }
    }
    free(views);
    free(bg.rgb);
    for (int i = 0; i < 2; i++) free(L[i].tex.rgb);
    return s;
}

mg_status dataset_sample_clip(dataset *ds, uint64_t seed, int T, int S, uint8_t *out) {
    if (T < 1 || T > 4096) return mg_fail(MG_ERR_ARG, "dataset_sample_clip: T = %d, expected 1..4096", T);
    if (S < 8 || S > 1024 || S % 8) return mg_fail(MG_ERR_ARG, "dataset_sample_clip: S = %d, expected a multiple of 8 in 8..1024", S);
    reader rd = {.ds = ds};
    rd.tj = tjInitDecompress();
    if (!rd.tj) return mg_fail(MG_ERR_NOMEM, "cannot start a JPEG decoder");
    mg_rng r;
    mg_rng_seed(&r, seed);
    int video = ds->n_videos > 0 && (ds->n_photos == 0 || below(&r, 2) == 0);
    mg_status s = video ? sample_video(&rd, &r, T, S, out) : sample_synthetic(&rd, &r, T, S, out);
    tjDestroy(rd.tj);
    free(rd.jbuf);
    return s;
}

#else /* no libjpeg-turbo */

mg_status dataset_sample_clip(dataset *ds, uint64_t seed, int T, int S, uint8_t *out) {
    (void)ds, (void)seed, (void)T, (void)S, (void)out;
    return mg_fail(MG_ERR_UNSUPPORTED, "reading training data needs libjpeg-turbo, which is not in this build");
}

#endif
