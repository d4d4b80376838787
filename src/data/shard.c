/* Shard format, version 1: parsing (every field checked against the bytes present) and
 * encoding. Byte layout in docs/DATA.md; the field meanings in shard.h. */
#include "data/shard.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static void wr64(uint8_t *p, uint64_t v) { wr32(p, (uint32_t)v), wr32(p + 4, (uint32_t)(v >> 32)); }

uint32_t shard_frame_hash(const uint8_t *jpeg, size_t n) { return (uint32_t)mg_fnv1a64(jpeg, n); }

size_t shard_tables_bytes(uint32_t n_sources, uint32_t n_clips, uint32_t n_frames) {
    return (size_t)n_sources * SHARD_SOURCE_SIZE + (size_t)n_clips * SHARD_CLIP_SIZE +
           (size_t)n_frames * SHARD_FRAME_SIZE;
}

mg_status shard_header_parse(shard_header *h, const uint8_t *b, size_t n, uint64_t file_size, const char *name) {
    memset(h, 0, sizeof *h);
    if (n < SHARD_HEADER_SIZE || file_size < SHARD_HEADER_SIZE)
        return mg_fail(MG_ERR_FORMAT, "%s: not a mirage shard: %llu bytes, shorter than the %u-byte header", name,
                       (unsigned long long)file_size, SHARD_HEADER_SIZE);
    if (memcmp(b, SHARD_MAGIC, 7) != 0) return mg_fail(MG_ERR_FORMAT, "%s: not a mirage shard (bad magic)", name);
    h->version = rd32(b + 8);
    if (memcmp(b, SHARD_MAGIC, 8) != 0 || h->version != SHARD_VERSION)
        return mg_fail(MG_ERR_FORMAT, "%s: shard version %u, this mirage reads version %u (rebuild the data with "
                                      "`mirage data build`)", name, h->version, SHARD_VERSION);
    uint32_t hsize = rd32(b + 12);
    if (hsize != SHARD_HEADER_SIZE)
        return mg_fail(MG_ERR_FORMAT, "%s: header size %u, expected %u", name, hsize, SHARD_HEADER_SIZE);
    h->split = rd32(b + 16);
    h->shard_index = rd32(b + 20);
    h->shard_count = rd32(b + 24);
    h->n_sources = rd32(b + 28);
    h->n_clips = rd32(b + 32);
    h->n_frames = rd32(b + 36);
    h->build_id = rd64(b + 40);
    h->tables_offset = rd64(b + 48);
    h->tables_hash = rd64(b + 56);
    h->file_size = file_size;
    if (h->split != SHARD_SPLIT_TRAIN && h->split != SHARD_SPLIT_VAL)
        return mg_fail(MG_ERR_FORMAT, "%s: split %u is neither train (0) nor val (1)", name, h->split);
    if (h->shard_count == 0 || h->shard_count > 100000 || h->shard_index >= h->shard_count)
        return mg_fail(MG_ERR_FORMAT, "%s: shard %u of %u", name, h->shard_index, h->shard_count);
    if (h->n_sources == 0 || h->n_sources > SHARD_MAX_SOURCES || h->n_clips == 0 || h->n_clips > SHARD_MAX_CLIPS ||
        h->n_frames == 0 || h->n_frames > SHARD_MAX_FRAMES)
        return mg_fail(MG_ERR_FORMAT, "%s: counts out of range: %u sources, %u clips, %u frames", name, h->n_sources,
                       h->n_clips, h->n_frames);
    uint64_t tb = shard_tables_bytes(h->n_sources, h->n_clips, h->n_frames);
    if (h->tables_offset < SHARD_HEADER_SIZE || h->tables_offset > file_size || file_size - h->tables_offset != tb)
        return mg_fail(MG_ERR_FORMAT, "%s: the index (at %llu, %llu bytes for %u sources, %u clips, %u frames) does "
                                      "not end where the file does (%llu bytes): truncated or damaged",
                       name, (unsigned long long)h->tables_offset, (unsigned long long)tb, h->n_sources, h->n_clips,
                       h->n_frames, (unsigned long long)file_size);
    return MG_OK;
}

void shard_tables_free(shard_tables *t) {
    free(t->sources), free(t->clips), free(t->frames);
    memset(t, 0, sizeof *t);
}

mg_status shard_tables_parse(shard_tables *t, const shard_header *h, const uint8_t *b, size_t n, const char *name) {
    memset(t, 0, sizeof *t);
    size_t tb = shard_tables_bytes(h->n_sources, h->n_clips, h->n_frames);
    if (n != tb) return mg_fail(MG_ERR_FORMAT, "%s: index is %zu bytes, expected %zu", name, n, tb);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* the fuzzer checks what lies behind the hash */
    if (mg_fnv1a64(b, n) != h->tables_hash)
        return mg_fail(MG_ERR_FORMAT, "%s: index checksum mismatch (damaged file)", name);
#endif
    t->sources = calloc(h->n_sources, sizeof *t->sources);
    t->clips = calloc(h->n_clips, sizeof *t->clips);
    t->frames = calloc(h->n_frames, sizeof *t->frames);
    if (!t->sources || !t->clips || !t->frames) {
        shard_tables_free(t);
        return mg_fail(MG_ERR_NOMEM, "%s: no memory for the index", name);
    }
    mg_status st = MG_OK;
    const uint8_t *p = b;
    for (uint32_t i = 0; i < h->n_sources && st == MG_OK; i++, p += SHARD_SOURCE_SIZE) {
        shard_source *s = &t->sources[i];
        s->kind = rd32(p), s->in_width = rd32(p + 4), s->in_height = rd32(p + 8), s->fps_milli = rd32(p + 12);
        s->frame_step = rd32(p + 16), s->name_hash = rd64(p + 24);
        memcpy(s->name, p + 32, SHARD_NAME_MAX);
        s->name[SHARD_NAME_MAX] = 0;
        if (s->kind != SHARD_KIND_VIDEO && s->kind != SHARD_KIND_PHOTO)
            st = mg_fail(MG_ERR_FORMAT, "%s: source %u: kind %u is neither video (1) nor photo (2)", name, i, s->kind);
        else if (s->frame_step < 1 || s->frame_step > 1000)
            st = mg_fail(MG_ERR_FORMAT, "%s: source %u: frame step %u out of range", name, i, s->frame_step);
        else if (!s->name[0] || memchr(p + 32, 0, SHARD_NAME_MAX) == NULL)
            st = mg_fail(MG_ERR_FORMAT, "%s: source %u: name is empty or not terminated", name, i);
    }
    for (uint32_t i = 0; i < h->n_clips && st == MG_OK; i++, p += SHARD_CLIP_SIZE) {
        shard_clip *c = &t->clips[i];
        c->source = rd32(p), c->width = rd32(p + 4), c->height = rd32(p + 8), c->first_frame = rd32(p + 12);
        c->n_frames = rd32(p + 16), c->start = rd32(p + 20);
        if (c->source >= h->n_sources)
            st = mg_fail(MG_ERR_FORMAT, "%s: clip %u: source %u of %u", name, i, c->source, h->n_sources);
        else if (c->width < SHARD_MIN_SIDE || c->width > SHARD_MAX_SIDE || c->height < SHARD_MIN_SIDE ||
                 c->height > SHARD_MAX_SIDE)
            st = mg_fail(MG_ERR_FORMAT, "%s: clip %u: frame size %ux%u outside %d..%d", name, i, c->width, c->height,
                         SHARD_MIN_SIDE, SHARD_MAX_SIDE);
        else if (c->n_frames == 0 || c->first_frame >= h->n_frames || c->n_frames > h->n_frames - c->first_frame)
            st = mg_fail(MG_ERR_FORMAT, "%s: clip %u: frames %u..+%u outside the %u in the shard", name, i,
                         c->first_frame, c->n_frames, h->n_frames);
        else if (t->sources[c->source].kind == SHARD_KIND_PHOTO && c->n_frames != 1)
            st = mg_fail(MG_ERR_FORMAT, "%s: clip %u: a photo with %u frames", name, i, c->n_frames);
    }
    for (uint32_t i = 0; i < h->n_frames && st == MG_OK; i++, p += SHARD_FRAME_SIZE) {
        shard_frame *f = &t->frames[i];
        f->offset = rd64(p), f->size = rd32(p + 8), f->hash = rd32(p + 12);
        if (f->size < 4 || f->size > SHARD_MAX_JPEG || f->offset < SHARD_HEADER_SIZE ||
            f->offset > h->tables_offset || f->size > h->tables_offset - f->offset)
            st = mg_fail(MG_ERR_FORMAT, "%s: frame %u: %u bytes at %llu, outside the frame data [%u, %llu)", name, i,
                         f->size, (unsigned long long)f->offset, SHARD_HEADER_SIZE,
                         (unsigned long long)h->tables_offset);
    }
    if (st != MG_OK) shard_tables_free(t);
    return st;
}

void shard_header_encode(uint8_t out[SHARD_HEADER_SIZE], const shard_header *h) {
    memset(out, 0, SHARD_HEADER_SIZE);
    memcpy(out, SHARD_MAGIC, 8);
    wr32(out + 8, SHARD_VERSION);
    wr32(out + 12, SHARD_HEADER_SIZE);
    wr32(out + 16, h->split);
    wr32(out + 20, h->shard_index);
    wr32(out + 24, h->shard_count);
    wr32(out + 28, h->n_sources);
    wr32(out + 32, h->n_clips);
    wr32(out + 36, h->n_frames);
    wr64(out + 40, h->build_id);
    wr64(out + 48, h->tables_offset);
    wr64(out + 56, h->tables_hash);
}

uint64_t shard_tables_encode(uint8_t *out, const shard_tables *t, uint32_t ns, uint32_t nc, uint32_t nf) {
    uint8_t *p = out;
    memset(out, 0, shard_tables_bytes(ns, nc, nf));
    for (uint32_t i = 0; i < ns; i++, p += SHARD_SOURCE_SIZE) {
        const shard_source *s = &t->sources[i];
        wr32(p, s->kind), wr32(p + 4, s->in_width), wr32(p + 8, s->in_height), wr32(p + 12, s->fps_milli);
        wr32(p + 16, s->frame_step), wr64(p + 24, s->name_hash);
        size_t l = strnlen(s->name, SHARD_NAME_MAX - 1);
        memcpy(p + 32, s->name, l);
    }
    for (uint32_t i = 0; i < nc; i++, p += SHARD_CLIP_SIZE) {
        const shard_clip *c = &t->clips[i];
        wr32(p, c->source), wr32(p + 4, c->width), wr32(p + 8, c->height), wr32(p + 12, c->first_frame);
        wr32(p + 16, c->n_frames), wr32(p + 20, c->start);
    }
    for (uint32_t i = 0; i < nf; i++, p += SHARD_FRAME_SIZE) {
        const shard_frame *f = &t->frames[i];
        wr64(p, f->offset), wr32(p + 8, f->size), wr32(p + 12, f->hash);
    }
    return mg_fnv1a64(out, (size_t)(p - out));
}
