/* Inputs through FFmpeg: any file or URL libavformat opens and libavcodec decodes (any size,
 * pixel format and frame rate), and V4L2 cameras through libavdevice. Frames are cropped,
 * padded or stretched into the frame size and converted to RGB24 by libswscale in one pass.
 *
 * Choices worth knowing:
 * - The decoder runs single-threaded: frame threading would add a frame of latency per
 *   thread, and the model wants the cores.
 * - A resolution change mid-stream is followed, not refused: the new size is fitted into the
 *   same frame size (source_frame.size_changed tells the caller, which says so).
 * - Timestamps are the decoder's best-effort pts, shifted so the first frame is 0, made
 *   strictly increasing (a missing or repeated pts becomes the previous + one frame).
 * - Cropping is applied to the decoded frame's pointers (av_frame_apply_cropping), at offsets
 *   rounded to the chroma subsampling, so no pixel is copied before swscale.
 * - A camera is opened non-blocking and polled every millisecond, so that an interrupt is seen
 *   even when the device stops delivering (v4l2 retries a blocking read on EINTR forever). */
#include "io/source.h"

#include <stdio.h>
#include <string.h>

#include "core/status.h"

#ifndef MG_HAVE_FFMPEG

int source_have_ffmpeg(void) { return 0; }

mg_status source_open_ffmpeg(source **out, const char *spec, const source_opts *o) {
    (void)o;
    *out = NULL;
    return mg_fail(MG_ERR_UNSUPPORTED,
                   "%s: reading this input needs FFmpeg, which is not in this build (apt-get install libavformat-dev "
                   "libavcodec-dev libswscale-dev libavutil-dev, then rebuild); without it mirage reads testsrc, "
                   "FILE.y4m and - (y4m on stdin)",
                   spec);
}

#else

#include <stdlib.h>
#include <time.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#ifdef MG_HAVE_AVDEVICE
#include <libavdevice/avdevice.h>
#endif

#include "core/timing.h"

int source_have_ffmpeg(void) { return 1; }

typedef struct ff_source {
    source base;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;
    struct SwsContext *sws;
    int stream;
    AVRational tb;
    int64_t pts0, last_pts, frame_dur; /* in tb units; pts0 = AV_NOPTS_VALUE until the first frame */
    int flushing;                      /* end of input reached: the decoder is draining */
    int read_err;                      /* the error that ended the input early (0: a clean end) */
    int bad_packets;                   /* consecutive packets the decoder refused */
    int64_t pkt_end;                   /* byte offset just past the last packet read (0: unknown) */
    /* what the swscale context was made for */
    int cur_w, cur_h, cur_fmt, cur_cs, cur_range;
    fit_rect rs, rd;
    atomic_int *abort_flag;
} ff_source;

static const char *av_err(int e, char *buf, size_t n) {
    if (av_strerror(e, buf, n) < 0) snprintf(buf, n, "error %d", e);
    return buf;
}

static int ff_interrupt(void *p) {
    ff_source *f = p;
    return f->abort_flag && atomic_load(f->abort_flag);
}

static mg_status ff_set_size(source *s, int w, int h, fit_mode fit) {
    ff_source *f = (ff_source *)s;
    s->width = w, s->height = h, s->fit = fit;
    f->cur_w = 0; /* remake the converter on the next frame */
    return MG_OK;
}

/* yuvj* formats are yuv* in full range; swscale wants the plain format and the range apart. */
static enum AVPixelFormat dejpeg(enum AVPixelFormat p, int *full) {
    switch (p) {
    case AV_PIX_FMT_YUVJ420P: *full = 1; return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P: *full = 1; return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P: *full = 1; return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P: *full = 1; return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P: *full = 1; return AV_PIX_FMT_YUV411P;
    default: return p;
    }
}

static int sws_colorspace(enum AVColorSpace cs) {
    switch (cs) {
    case AVCOL_SPC_BT709: return SWS_CS_ITU709;
    case AVCOL_SPC_FCC: return SWS_CS_FCC;
    case AVCOL_SPC_SMPTE240M: return SWS_CS_SMPTE240M;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL: return SWS_CS_BT2020;
    default: return SWS_CS_DEFAULT; /* BT.601, what unlabelled video is taken to be */
    }
}

/* Crops, scales and converts f->frame into rgb. */
static mg_status ff_convert(ff_source *f, uint8_t *rgb, int *changed) {
    source *s = &f->base;
    AVFrame *fr = f->frame;
    char eb[128];
    int full = fr->color_range == AVCOL_RANGE_JPEG;
    enum AVPixelFormat pf = dejpeg((enum AVPixelFormat)fr->format, &full);
    int cs = sws_colorspace(fr->colorspace);
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(pf);
    if (!d || (d->flags & (AV_PIX_FMT_FLAG_HWACCEL | AV_PIX_FMT_FLAG_BITSTREAM)))
        return mg_fail(MG_ERR_UNSUPPORTED, "%s: frame %lld: pixel format %s cannot be converted", s->name,
                       (long long)s->frames_read, d ? d->name : "(unknown)");
    if (fr->width != f->cur_w || fr->height != f->cur_h || (int)pf != f->cur_fmt || cs != f->cur_cs ||
        full != f->cur_range) {
        if (f->cur_w && (fr->width != f->cur_w || fr->height != f->cur_h)) {
            *changed = 1;
            s->size_changes++;
        }
        int align = 1 << (d->log2_chroma_w > d->log2_chroma_h ? d->log2_chroma_w : d->log2_chroma_h);
        fit_geometry(s->fit, fr->width, fr->height, s->width, s->height, align, &f->rs, &f->rd);
        f->sws = sws_getCachedContext(f->sws, f->rs.w, f->rs.h, pf, f->rd.w, f->rd.h, AV_PIX_FMT_RGB24,
                                      SWS_BILINEAR, NULL, NULL, NULL);
        if (!f->sws)
            return mg_fail(MG_ERR_UNSUPPORTED, "%s: cannot convert %dx%d %s frames to %dx%d RGB", s->name, fr->width,
                           fr->height, d->name, f->rd.w, f->rd.h);
        /* the output is full-range RGB; the input's matrix and range as the stream says */
        sws_setColorspaceDetails(f->sws, sws_getCoefficients(cs), full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0,
                                 1 << 16, 1 << 16);
        f->cur_w = fr->width, f->cur_h = fr->height, f->cur_fmt = pf, f->cur_cs = cs, f->cur_range = full;
        s->in_width = fr->width, s->in_height = fr->height;
    }
    fr->crop_left = (size_t)f->rs.x;
    fr->crop_top = (size_t)f->rs.y;
    fr->crop_right = (size_t)(fr->width - f->rs.x - f->rs.w);
    fr->crop_bottom = (size_t)(fr->height - f->rs.y - f->rs.h);
    int r = av_frame_apply_cropping(fr, AV_FRAME_CROP_UNALIGNED);
    if (r < 0) return mg_fail(MG_ERR_FORMAT, "%s: frame %lld: cannot crop: %s", s->name, (long long)s->frames_read, av_err(r, eb, sizeof eb));
    if (f->rd.w != s->width || f->rd.h != s->height) memset(rgb, 0, (size_t)s->width * s->height * 3); /* pad bars */
    uint8_t *dst[4] = {rgb + ((size_t)f->rd.y * s->width + f->rd.x) * 3, NULL, NULL, NULL};
    int dst_stride[4] = {s->width * 3, 0, 0, 0};
    r = sws_scale(f->sws, (const uint8_t *const *)fr->data, fr->linesize, 0, fr->height, dst, dst_stride);
    if (r <= 0) return mg_fail(MG_ERR_FORMAT, "%s: frame %lld: conversion failed", s->name, (long long)s->frames_read);
    return MG_OK;
}

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static mg_status ff_read(source *s, uint8_t *rgb, source_frame *out) {
    ff_source *f = (ff_source *)s;
    char eb[128];
    double decode_ms = 0;
    for (;;) {
        double t0 = mg_now_ms();
        int r = avcodec_receive_frame(f->dec, f->frame);
        decode_ms += mg_now_ms() - t0;
        if (r == 0) break;
        if (r == AVERROR_EOF) {
            if (f->read_err)
                return mg_fail(MG_ERR_IO, "%s: input ended early after frame %lld: %s", s->name,
                               (long long)s->frames_read, av_err(f->read_err, eb, sizeof eb));
            /* a y4m stream cut mid-frame (its writer gone) ends as a plain EOF: the demuxer drops
             * the partial frame. Whole frames end exactly where the last packet did. */
            if (f->pkt_end > 0 && f->fmt->pb && !strcmp(f->fmt->iformat->name, "yuv4mpegpipe") &&
                avio_tell(f->fmt->pb) > f->pkt_end)
                return mg_fail(MG_ERR_FORMAT, "%s: input ended early after frame %lld: frame %lld was cut short "
                               "(%lld of its bytes arrived)", s->name, (long long)s->frames_read,
                               (long long)s->frames_read, (long long)(avio_tell(f->fmt->pb) - f->pkt_end));
            /* demuxers report a cut-off file as a plain end; the container's frame count tells */
            if (s->expected_frames > 0 && s->frames_read < s->expected_frames - 1)
                return mg_fail(MG_ERR_FORMAT, "%s: input ended early: %lld of the %lld frames it announces (a truncated file?)",
                               s->name, (long long)s->frames_read, (long long)s->expected_frames);
            return MG_ERR_EOF;
        }
        if (r != AVERROR(EAGAIN))
            return mg_fail(MG_ERR_FORMAT, "%s: cannot decode frame %lld: %s", s->name, (long long)s->frames_read,
                           av_err(r, eb, sizeof eb));
        if (f->flushing) return MG_ERR_EOF; /* a decoder that drained without saying EOF */
        t0 = mg_now_ms();
        r = av_read_frame(f->fmt, f->pkt);
        if (!s->live) decode_ms += mg_now_ms() - t0; /* a camera's read is mostly waiting for light */
        if (r == AVERROR(EAGAIN)) { /* a non-blocking camera with nothing yet */
            if (ff_interrupt(f)) return mg_fail(MG_ERR_IO, "%s: interrupted", s->name);
            sleep_ms(1);
            continue;
        }
        if (r < 0) {
            if (r == AVERROR_EXIT || ff_interrupt(f)) return mg_fail(MG_ERR_IO, "%s: interrupted", s->name);
            /* a clean end, or a read error (truncated file, camera unplugged, pipe closed):
             * either way drain the decoder first so no decoded frame is lost */
            if (r != AVERROR_EOF) f->read_err = r;
            f->flushing = 1;
            avcodec_send_packet(f->dec, NULL);
            continue;
        }
        if (f->pkt->stream_index != f->stream) {
            av_packet_unref(f->pkt);
            continue;
        }
        if (f->pkt->pos >= 0) f->pkt_end = f->pkt->pos + f->pkt->size;
        t0 = mg_now_ms();
        r = avcodec_send_packet(f->dec, f->pkt);
        decode_ms += mg_now_ms() - t0;
        av_packet_unref(f->pkt);
        if (r < 0 && r != AVERROR(EAGAIN)) {
            /* a damaged packet: decoders conceal and go on, and so do we, unless it never ends */
            if (++f->bad_packets > 100)
                return mg_fail(MG_ERR_FORMAT, "%s: more than 100 undecodable packets in a row after frame %lld: %s",
                               s->name, (long long)s->frames_read, av_err(r, eb, sizeof eb));
        } else {
            f->bad_packets = 0;
        }
    }
    double t1 = mg_now_ms();
    int changed = 0;
    mg_status st = ff_convert(f, rgb, &changed);
    int64_t pts = f->frame->best_effort_timestamp;
    av_frame_unref(f->frame);
    if (st != MG_OK) return st;
    if (pts == AV_NOPTS_VALUE) pts = f->pts0 == AV_NOPTS_VALUE ? 0 : f->pts0 + f->last_pts + f->frame_dur;
    if (f->pts0 == AV_NOPTS_VALUE) f->pts0 = pts;
    pts -= f->pts0;
    if (s->frames_read > 0 && pts <= f->last_pts) pts = f->last_pts + (f->frame_dur > 0 ? f->frame_dur : 1);
    f->last_pts = pts;
    out->pts = pts;
    out->decode_ms = decode_ms;
    out->convert_ms = mg_now_ms() - t1;
    out->size_changed = changed;
    s->frames_read++;
    return MG_OK;
}

static void ff_close(source *s) {
    ff_source *f = (ff_source *)s;
    sws_freeContext(f->sws);
    av_frame_free(&f->frame);
    av_packet_free(&f->pkt);
    avcodec_free_context(&f->dec);
    avformat_close_input(&f->fmt);
    free(f);
}

static mg_status open_fail(ff_source *f, mg_status st) {
    ff_close(&f->base);
    return st;
}

mg_status source_open_ffmpeg(source **out, const char *spec, const source_opts *o) {
    *out = NULL;
    char eb[128];
    ff_source *f = calloc(1, sizeof *f);
    if (!f) return mg_fail(MG_ERR_NOMEM, "%s: out of memory", spec);
    source *s = &f->base;
    snprintf(s->name, sizeof s->name, "%s", spec);
    s->set_size = ff_set_size, s->read = ff_read, s->close = ff_close;
    f->abort_flag = o ? o->abort_flag : NULL;
    f->pts0 = AV_NOPTS_VALUE;
    /* mirage reports failures itself; MIRAGE_FFMPEG_LOG=1 shows FFmpeg's own messages too */
    av_log_set_level(getenv("MIRAGE_FFMPEG_LOG") ? AV_LOG_INFO : AV_LOG_FATAL);

    const AVInputFormat *ifmt = NULL;
    const char *url = spec;
    AVDictionary *opts = NULL;
    if (!(f->fmt = avformat_alloc_context())) return open_fail(f, mg_fail(MG_ERR_NOMEM, "%s: out of memory", spec));
    f->fmt->interrupt_callback.callback = ff_interrupt;
    f->fmt->interrupt_callback.opaque = f;
    if (!strncmp(spec, "v4l2:", 5)) {
#ifdef MG_HAVE_AVDEVICE
        avdevice_register_all();
        ifmt = av_find_input_format("video4linux2");
        if (!ifmt) return open_fail(f, mg_fail(MG_ERR_UNSUPPORTED, "%s: this FFmpeg has no v4l2 input device", spec));
        url = spec + 5;
        char buf[64];
        if (o && o->camera_w) {
            snprintf(buf, sizeof buf, "%dx%d", o->camera_w, o->camera_h);
            av_dict_set(&opts, "video_size", buf, 0);
        }
        if (o && o->camera_fps) {
            snprintf(buf, sizeof buf, "%d", o->camera_fps);
            av_dict_set(&opts, "framerate", buf, 0);
        }
        f->fmt->flags |= AVFMT_FLAG_NONBLOCK | AVFMT_FLAG_NOBUFFER;
        s->live = 1;
#else
        return open_fail(f, mg_fail(MG_ERR_UNSUPPORTED,
                                    "%s: cameras need libavdevice, which is not in this build (apt-get install "
                                    "libavdevice-dev, then rebuild)",
                                    spec));
#endif
    }
    int r = avformat_open_input(&f->fmt, url, ifmt, &opts); /* frees fmt on failure */
    av_dict_free(&opts);
    if (r < 0) {
        if (r == AVERROR_INVALIDDATA)
            return open_fail(f, mg_fail(MG_ERR_FORMAT, "%s: not a video FFmpeg can read (%s)", spec, av_err(r, eb, sizeof eb)));
        return open_fail(f, mg_fail(MG_ERR_IO, "%s: cannot open: %s", spec, av_err(r, eb, sizeof eb)));
    }
    if ((r = avformat_find_stream_info(f->fmt, NULL)) < 0)
        return open_fail(f, mg_fail(MG_ERR_FORMAT, "%s: cannot read the stream layout: %s", spec, av_err(r, eb, sizeof eb)));
    const AVCodec *codec = NULL;
    f->stream = av_find_best_stream(f->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (f->stream == AVERROR_STREAM_NOT_FOUND)
        return open_fail(f, mg_fail(MG_ERR_FORMAT, "%s: no video stream in it (%s with %u stream%s)", spec,
                                    f->fmt->iformat->name, f->fmt->nb_streams, f->fmt->nb_streams == 1 ? "" : "s"));
    if (f->stream < 0 || !codec) {
        const AVCodecDescriptor *cd = f->stream >= 0 ? avcodec_descriptor_get(f->fmt->streams[f->stream]->codecpar->codec_id) : NULL;
        return open_fail(f, mg_fail(MG_ERR_UNSUPPORTED, "%s: this FFmpeg has no decoder for its video (%s)", spec,
                                    cd ? cd->name : "unknown codec"));
    }
    for (unsigned i = 0; i < f->fmt->nb_streams; i++)
        if ((int)i != f->stream) f->fmt->streams[i]->discard = AVDISCARD_ALL;
    AVStream *st = f->fmt->streams[f->stream];
    if (!(f->dec = avcodec_alloc_context3(codec))) return open_fail(f, mg_fail(MG_ERR_NOMEM, "%s: out of memory", spec));
    if ((r = avcodec_parameters_to_context(f->dec, st->codecpar)) < 0)
        return open_fail(f, mg_fail(MG_ERR_FORMAT, "%s: bad codec parameters: %s", spec, av_err(r, eb, sizeof eb)));
    f->dec->thread_count = 1;
    f->dec->pkt_timebase = st->time_base;
    if ((r = avcodec_open2(f->dec, codec, NULL)) < 0)
        return open_fail(f, mg_fail(MG_ERR_FORMAT, "%s: cannot open the %s decoder: %s", spec, codec->name, av_err(r, eb, sizeof eb)));
    if (!(f->pkt = av_packet_alloc()) || !(f->frame = av_frame_alloc()))
        return open_fail(f, mg_fail(MG_ERR_NOMEM, "%s: out of memory", spec));

    s->in_width = st->codecpar->width, s->in_height = st->codecpar->height;
    if (s->in_width <= 0 || s->in_height <= 0)
        return open_fail(f, mg_fail(MG_ERR_FORMAT, "%s: the video stream does not say its size", spec));
    AVRational fps = st->avg_frame_rate.num > 0 && st->avg_frame_rate.den > 0 ? st->avg_frame_rate : st->r_frame_rate;
    if (fps.num <= 0 || fps.den <= 0 || av_q2d(fps) > 1000) fps = (AVRational){25, 1};
    av_reduce(&s->fps_num, &s->fps_den, fps.num, fps.den, 1 << 30);
    f->tb = st->time_base;
    s->tb_num = f->tb.num, s->tb_den = f->tb.den;
    f->frame_dur = av_rescale_q(1, av_inv_q(fps), f->tb);
    if (f->frame_dur < 1) f->frame_dur = 1;
    s->expected_frames = st->nb_frames > 0 ? st->nb_frames : 0;
    const char *pfn = av_get_pix_fmt_name((enum AVPixelFormat)st->codecpar->format);
    snprintf(s->desc, sizeof s->desc, "%s %s %dx%d %s, %.4g fps%s", f->fmt->iformat->name, codec->name, s->in_width,
             s->in_height, pfn ? pfn : "?", av_q2d(fps), s->live ? ", live" : "");
    *out = s;
    return MG_OK;
}

#endif
