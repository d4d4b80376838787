/* Video files through FFmpeg: .mp4 and .mkv, H.264, with the source's timestamps.
 *
 * Choices worth knowing:
 * - The encoder is libx264 when this FFmpeg has it (preset veryfast, tune zerolatency: no
 *   B-frames and no lookahead, so each frame's packet comes out as the frame goes in), else the
 *   first other H.264 encoder that opens; none is a clear error.
 * - One keyframe a second (GOP = the frame rate).
 * - mp4 is written fragmented (movflags frag_keyframe+empty_moov+default_base_moof): the index
 *   goes at the start and each second of video is a self-contained fragment, so a file cut off
 *   by a full disk, a crash or kill -9 still plays up to its last complete fragment. A plain
 *   mp4 keeps its index at the end and is unplayable if the end is never written. A truncated
 *   .mkv plays as it is; its clusters are limited to a second too. Every completed fragment or
 *   cluster goes to the file at once (flush_packets), so at most the last second is at risk.
 * - RGB -> YUV 4:2:0 is BT.601 limited range, tagged as such (as the y4m writer does).
 * - Timestamps: the pts given to sink_write in the source's time base; the encoder works in that
 *   time base, so dropped frames leave gaps and variable-rate input keeps its timing.
 * - The file is written to PATH.tmp.<pid> and renamed onto PATH on close (a FIFO or device is
 *   written in place). After a failed write the frames before it are kept: the trailer is tried,
 *   the file is closed and renamed all the same — onto sink_partial_path(PATH) when PATH held an
 *   earlier file, which stays as it was; only a file with no frame at all is deleted. */
#include "io/sink.h"

#include <stdio.h>
#include <string.h>

#include "core/status.h"

#ifndef MG_HAVE_FFMPEG

int sink_have_ffmpeg(void) { return 0; }

mg_status sink_open_ffmpeg(sink **out, const char *path, const sink_opts *o) {
    (void)o;
    *out = NULL;
    return mg_fail(MG_ERR_UNSUPPORTED,
                   "%s: writing .mp4/.mkv needs FFmpeg, which is not in this build (apt-get install libavformat-dev "
                   "libavcodec-dev libswscale-dev libavutil-dev, then rebuild); write FILE.y4m instead",
                   path);
}

#else

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>

#include "core/timing.h"

int sink_have_ffmpeg(void) { return 1; }

typedef struct ff_sink {
    sink base;
    AVFormatContext *oc;
    AVCodecContext *enc;
    AVStream *st;
    AVFrame *frame; /* (H, W) in the encoder's pixel format, reused */
    AVPacket *pkt;
    struct SwsContext *sws;
    int width, height;
    int in_place;   /* a FIFO or device: no temporary, no rename */
    int header_written;
    int failed;     /* a write failed: stop writing, keep what is there */
    int64_t last_pts;
    char path[4096], tmp[4128];
    char err[9216]; /* the first failure, for close (which may run on another thread) */
} ff_sink;

static const char *av_err(int e, char *buf, size_t n) {
    if (av_strerror(e, buf, n) < 0) snprintf(buf, n, "error %d", e);
    return buf;
}

/* Records the first failure and returns it as an mg_status on this thread. */
static mg_status sink_fail(ff_sink *f, const char *what, int averr) {
    char eb[128];
    if (!f->failed) {
        snprintf(f->err, sizeof f->err, "%s: %s after %lld frames: %s", f->path, what, (long long)f->base.frames_written,
                 av_err(averr, eb, sizeof eb));
        f->failed = 1;
    }
    return mg_fail(MG_ERR_IO, "%s", f->err);
}

/* Sends frame (NULL: flush) and writes every packet that comes out. */
static mg_status encode(ff_sink *f, AVFrame *frame) {
    int r = avcodec_send_frame(f->enc, frame);
    if (r < 0 && r != AVERROR_EOF) return sink_fail(f, "cannot encode", r);
    for (;;) {
        r = avcodec_receive_packet(f->enc, f->pkt);
        if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return MG_OK;
        if (r < 0) return sink_fail(f, "cannot encode", r);
        av_packet_rescale_ts(f->pkt, f->enc->time_base, f->st->time_base);
        f->pkt->stream_index = f->st->index;
        r = av_interleaved_write_frame(f->oc, f->pkt); /* takes the packet's reference */
        if (r < 0) return sink_fail(f, "cannot write", r);
    }
}

static mg_status ff_write(sink *k, const uint8_t *rgb, int64_t pts, const sink_overlay *ov) {
    (void)ov;
    ff_sink *f = (ff_sink *)k;
    if (f->failed) return mg_fail(MG_ERR_IO, "%s", f->err);
    double t0 = mg_now_ms();
    int r = av_frame_make_writable(f->frame); /* allocates only if the encoder still holds it */
    if (r < 0) return sink_fail(f, "cannot get a frame buffer", r);
    const uint8_t *src[4] = {rgb, NULL, NULL, NULL};
    int stride[4] = {f->width * 3, 0, 0, 0};
    sws_scale(f->sws, src, stride, 0, f->height, f->frame->data, f->frame->linesize);
    if (k->frames_written > 0 && pts <= f->last_pts) pts = f->last_pts + 1;
    f->last_pts = pts;
    f->frame->pts = pts;
    double t1 = mg_now_ms();
    mg_status st = encode(f, f->frame);
    k->convert_ms = t1 - t0;
    k->encode_ms = mg_now_ms() - t1;
    if (st == MG_OK) k->frames_written++;
    return st;
}

static void fsync_path(const char *p) {
    int fd = open(p, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static void fsync_parent_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    fsync_path(dir);
}

static void ff_free(ff_sink *f) {
    sws_freeContext(f->sws);
    av_frame_free(&f->frame);
    av_packet_free(&f->pkt);
    avcodec_free_context(&f->enc);
    if (f->oc) {
        if (f->oc->pb) avio_closep(&f->oc->pb);
        avformat_free_context(f->oc);
    }
    free(f);
}

static mg_status ff_close(sink *k) {
    ff_sink *f = (ff_sink *)k;
    mg_status st = MG_OK;
    if (f->header_written) {
        if (!f->failed) encode(f, NULL); /* drain the encoder */
        int r = av_write_trailer(f->oc);
        if (r < 0 && !f->failed) sink_fail(f, "cannot finish the file", r);
    }
    if (f->oc && f->oc->pb) {
        int r = avio_closep(&f->oc->pb);
        if (r < 0 && !f->failed) sink_fail(f, "cannot close", r);
    }
    if (!f->in_place && f->tmp[0]) {
        if (k->frames_written == 0 && f->failed) {
            unlink(f->tmp); /* nothing worth keeping */
        } else {
            fsync_path(f->tmp);
            char dst[4096];
            if (f->failed && k->keeps_earlier) sink_partial_path(dst, sizeof dst, f->path);
            else snprintf(dst, sizeof dst, "%s", f->path);
            if (rename(f->tmp, dst) != 0) {
                if (!f->failed) {
                    snprintf(f->err, sizeof f->err, "%s: cannot rename %s onto it: %s", f->path, f->tmp, strerror(errno));
                    f->failed = 1;
                }
                unlink(f->tmp);
            } else {
                fsync_parent_dir(dst);
            }
        }
    }
    if (f->failed) st = mg_fail(MG_ERR_IO, "%s", f->err);
    ff_free(f);
    return st;
}

/* Opens `c` at the sink's size; NULL on failure (with *why set). */
static AVCodecContext *open_encoder(const AVCodec *c, const sink_opts *o, int global_header, int *why) {
    AVCodecContext *e = avcodec_alloc_context3(c);
    if (!e) {
        *why = AVERROR(ENOMEM);
        return NULL;
    }
    e->width = o->width, e->height = o->height;
    e->pix_fmt = AV_PIX_FMT_YUV420P;
    if (c->pix_fmts) {
        int ok = 0;
        for (const enum AVPixelFormat *p = c->pix_fmts; *p != AV_PIX_FMT_NONE; p++) ok |= *p == AV_PIX_FMT_YUV420P;
        if (!ok) e->pix_fmt = c->pix_fmts[0];
    }
    e->time_base = (AVRational){o->tb_num, o->tb_den};
    e->framerate = (AVRational){o->fps_num, o->fps_den};
    int gop = (int)((double)o->fps_num / o->fps_den + 0.5);
    e->gop_size = gop < 1 ? 1 : gop;
    e->max_b_frames = 0;
    e->thread_count = 1; /* the model wants the cores; small frames encode in milliseconds */
    e->colorspace = AVCOL_SPC_SMPTE170M;
    e->color_range = AVCOL_RANGE_MPEG;
    if (global_header) e->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (!strcmp(c->name, "libx264")) {
        av_opt_set(e->priv_data, "preset", "veryfast", 0);
        av_opt_set(e->priv_data, "tune", "zerolatency", 0);
        av_opt_set(e->priv_data, "crf", "20", 0);
    }
    int r = avcodec_open2(e, c, NULL);
    if (r < 0) {
        *why = r;
        avcodec_free_context(&e);
        return NULL;
    }
    return e;
}

static mg_status open_fail(ff_sink *f, mg_status st) {
    if (f->oc && f->oc->pb) avio_closep(&f->oc->pb);
    if (f->tmp[0]) unlink(f->tmp);
    ff_free(f);
    return st;
}

mg_status sink_open_ffmpeg(sink **out, const char *path, const sink_opts *o) {
    *out = NULL;
    char eb[128];
    ff_sink *f = calloc(1, sizeof *f);
    if (!f) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", path);
    sink *k = &f->base;
    snprintf(k->name, sizeof k->name, "%s", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    k->write = ff_write, k->close = ff_close;
    f->width = o->width, f->height = o->height;
    av_log_set_level(getenv("MIRAGE_FFMPEG_LOG") ? AV_LOG_INFO : AV_LOG_FATAL); /* as ffmpeg_in.c */

    size_t n = strlen(path);
    const char *fmt_name = n > 4 && !strcmp(path + n - 4, ".mkv") ? "matroska" : "mp4";
    struct stat sb;
    f->in_place = stat(path, &sb) == 0 && !S_ISREG(sb.st_mode);
    k->keeps_earlier = !f->in_place && stat(path, &sb) == 0;
    if (!f->in_place) snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%ld", path, (long)getpid());
    const char *target = f->in_place ? f->path : f->tmp;

    int r = avformat_alloc_output_context2(&f->oc, NULL, fmt_name, target);
    if (r < 0 || !f->oc)
        return open_fail(f, mg_fail(MG_ERR_UNSUPPORTED, "%s: this FFmpeg cannot write %s: %s", path, fmt_name, av_err(r, eb, sizeof eb)));
    int global_header = (f->oc->oformat->flags & AVFMT_GLOBALHEADER) != 0;

    /* libx264 first, then any other H.264 encoder that opens (hardware ones usually don't here) */
    const AVCodec *c = avcodec_find_encoder_by_name("libx264");
    int why = AVERROR_ENCODER_NOT_FOUND;
    if (c) f->enc = open_encoder(c, o, global_header, &why);
    if (!f->enc) {
        int level = av_log_get_level();
        av_log_set_level(AV_LOG_QUIET); /* failing hardware encoders are loud */
        void *it = NULL;
        while (!f->enc && (c = av_codec_iterate(&it)))
            if (av_codec_is_encoder(c) && c->id == AV_CODEC_ID_H264 && strcmp(c->name, "libx264"))
                f->enc = open_encoder(c, o, global_header, &why);
        av_log_set_level(level);
    }
    if (!f->enc)
        return open_fail(f, mg_fail(MG_ERR_UNSUPPORTED,
                                    "%s: no working H.264 encoder in this FFmpeg (%s); install libx264 (Debian: "
                                    "libavcodec-extra) or write FILE.y4m instead",
                                    path, av_err(why, eb, sizeof eb)));
    if (!(f->st = avformat_new_stream(f->oc, NULL)))
        return open_fail(f, mg_fail(MG_ERR_NOMEM, "%s: out of memory", path));
    if ((r = avcodec_parameters_from_context(f->st->codecpar, f->enc)) < 0)
        return open_fail(f, mg_fail(MG_ERR_FORMAT, "%s: cannot set the stream up: %s", path, av_err(r, eb, sizeof eb)));
    f->st->time_base = f->enc->time_base; /* a hint: the muxer may choose its own */
    f->st->avg_frame_rate = f->enc->framerate;

    if ((r = avio_open(&f->oc->pb, target, AVIO_FLAG_WRITE)) < 0) {
        f->tmp[0] = 0; /* nothing was created */
        return open_fail(f, mg_fail(MG_ERR_IO, "%s: cannot create: %s", path, av_err(r, eb, sizeof eb)));
    }
    /* a fragment (mp4) or cluster (mkv) a second, each written out as soon as it is complete */
    AVDictionary *mopts = NULL;
    if (!strcmp(fmt_name, "mp4")) av_dict_set(&mopts, "movflags", "+frag_keyframe+empty_moov+default_base_moof", 0);
    else av_dict_set(&mopts, "cluster_time_limit", "1000", 0);
    f->oc->flush_packets = 1;
    r = avformat_write_header(f->oc, &mopts);
    av_dict_free(&mopts);
    if (r < 0) return open_fail(f, mg_fail(MG_ERR_IO, "%s: cannot write the header: %s", path, av_err(r, eb, sizeof eb)));
    f->header_written = 1;

    if (!(f->frame = av_frame_alloc()) || !(f->pkt = av_packet_alloc()))
        return open_fail(f, mg_fail(MG_ERR_NOMEM, "%s: out of memory", path));
    f->frame->format = f->enc->pix_fmt;
    f->frame->width = o->width, f->frame->height = o->height;
    f->frame->colorspace = AVCOL_SPC_SMPTE170M;
    f->frame->color_range = AVCOL_RANGE_MPEG;
    if ((r = av_frame_get_buffer(f->frame, 0)) < 0)
        return open_fail(f, mg_fail(MG_ERR_NOMEM, "%s: cannot allocate a frame: %s", path, av_err(r, eb, sizeof eb)));
    f->sws = sws_getContext(o->width, o->height, AV_PIX_FMT_RGB24, o->width, o->height, f->enc->pix_fmt, SWS_BILINEAR,
                            NULL, NULL, NULL);
    if (!f->sws) return open_fail(f, mg_fail(MG_ERR_UNSUPPORTED, "%s: cannot convert RGB to the encoder's format", path));
    const int *bt601 = sws_getCoefficients(SWS_CS_ITU601);
    sws_setColorspaceDetails(f->sws, bt601, 1, bt601, 0, 0, 1 << 16, 1 << 16);
    snprintf(k->desc, sizeof k->desc, "%s %s (%s) %dx%d, %.4g fps", fmt_name, "h264", c->name, o->width, o->height,
             (double)o->fps_num / o->fps_den);
    *out = k;
    return MG_OK;
}

#endif
