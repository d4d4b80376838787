/* mirage serve: sessions, the worker pool, and the libwebsockets glue (see serve.h).
 *
 * Threads: one lws service thread owns every socket and everything a session does on the wire
 * (assembling messages, limits, timers, writing); N workers run the model. They meet in the
 * session's two one-item slots (pending input, ready output) and the server's ready list, all
 * under one mutex held only for pointer swaps and flags. A worker that has output, or a reason
 * to close a session, wakes the service thread with lws_cancel_service(). */
#include "serve/serve.h"

#include <stdio.h>
#include <string.h>

int serve_parse_gpus(const char *list, serve_opts *o, char *why, size_t why_n) {
    if (!strcmp(list, "all")) {
        o->ngpus = SERVE_GPUS_ALL;
        return 0;
    }
    int n = 0;
    const char *p = list;
    for (;;) {
        if (*p < '0' || *p > '9') {
            snprintf(why, why_n, "expected GPU ids like 0,1 or 'all', found '%s'", list);
            return -1;
        }
        long v = 0;
        while (*p >= '0' && *p <= '9' && v < SERVE_MAX_GPUS) v = v * 10 + (*p++ - '0');
        if (v >= SERVE_MAX_GPUS || (*p >= '0' && *p <= '9')) {
            snprintf(why, why_n, "GPU id in '%s' is more than %d", list, SERVE_MAX_GPUS - 1);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (o->gpus[i] == (int)v) {
                snprintf(why, why_n, "GPU %ld is given twice in '%s'", v, list);
                return -1;
            }
        if (n == SERVE_MAX_GPUS) {
            snprintf(why, why_n, "more than %d GPUs in '%s'", SERVE_MAX_GPUS, list);
            return -1;
        }
        o->gpus[n++] = (int)v;
        if (!*p) break;
        if (*p++ != ',') {
            snprintf(why, why_n, "expected GPU ids like 0,1 or 'all', found '%s'", list);
            return -1;
        }
    }
    o->ngpus = n;
    return 0;
}

void serve_opts_default(serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->max_sessions = 8;
    o->width = o->height = 256;
    o->steps = 2;
    o->max_steps = 8;
    o->lim.max_message = 1 << 20;
    o->lim.max_frame_w = 1920;
    o->lim.max_frame_h = 1080;
    o->lim.max_fps = 60;
    o->lim.idle_timeout_s = 30;
    o->lim.message_timeout_s = 10;
    o->lim.handshake_timeout_s = 10;
}

#if !defined(MG_HAVE_LWS) || !defined(MG_HAVE_JPEG)
#include "core/status.h"
mg_status serve_run(const mg_model *m, const serve_opts *o) {
    (void)m, (void)o;
#ifndef MG_HAVE_LWS
    return mg_fail(MG_ERR_UNSUPPORTED, "mirage serve is not built in: this build has no libwebsockets "
                                       "(apt-get install libwebsockets-dev, then make)");
#else
    return mg_fail(MG_ERR_UNSUPPORTED, "mirage serve is not built in: this build has no libjpeg-turbo "
                                       "(apt-get install libturbojpeg0-dev, then make)");
#endif
}
#else

#include <cjson/cJSON.h>
#include <errno.h>
#include <libwebsockets.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>
#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#include "core/status.h"
#include "core/timing.h"
#ifdef MG_HAVE_CUDA
#include "cuda/cuda_stream.h"
#endif
#include "io/fit.h"
#include "serve/proto.h"
#include "serve/web.h"

#define JPEG_QUALITY 85
#define TIMER_US 250000 /* how often a session looks at its timeouts */
#define RX_CHUNK 65536  /* lws receive buffer: larger messages arrive in pieces */

/* ---- latency histogram: log-spaced buckets, bounded memory for a server that runs for days ---- */
#define HIST_N 512
#define HIST_MIN_MS 0.1
#define HIST_STEP 1.03 /* bucket i covers [0.1*1.03^i, 0.1*1.03^(i+1)) ms: 3% resolution up to ~36 min */
typedef struct hist { long c[HIST_N]; long n; } hist;
static void hist_add(hist *h, double ms) {
    int i = ms <= HIST_MIN_MS ? 0 : (int)(log(ms / HIST_MIN_MS) / log(HIST_STEP));
    if (i >= HIST_N) i = HIST_N - 1;
    h->c[i]++, h->n++;
}
static double hist_q(const hist *h, double q) { /* nearest rank; the bucket's middle */
    if (!h->n) return 0;
    long rank = (long)ceil(q * h->n), acc = 0;
    if (rank < 1) rank = 1;
    for (int i = 0; i < HIST_N; i++)
        if ((acc += h->c[i]) >= rank) return HIST_MIN_MS * pow(HIST_STEP, i + 0.5);
    return HIST_MIN_MS * pow(HIST_STEP, HIST_N);
}

/* A message buffer (grown up to the message limit, owned by one side at a time). */
typedef struct msgbuf {
    uint8_t *data;
    size_t len, cap;
    double t_recv; /* when its last byte arrived (mg_now_ms) */
} msgbuf;

typedef struct server server;
typedef struct session session;

/* Where sessions run: one lane per GPU with --device cuda (its workers have that GPU current,
 * so every stream made or stepped there lives on it), one lane for the CPU. A session is
 * placed on a lane when it opens and stays there. */
typedef struct lane {
    int gpu;              /* -1: the CPU */
    pthread_cond_t cv;    /* its workers wait here */
    session *ready_head, *ready_tail; /* under mu: its sessions with a frame waiting */
    int sessions;         /* under mu: open sessions placed here */
    long frames;          /* under mu */
    double recent_ms;     /* under mu: model time, moving average (ties in placement) */
    hist model_ms;        /* under mu */
    int nworkers;
#ifdef MG_HAVE_CUDA
    cuda_weights *wts;    /* the server's reference: the weights stay on the GPU between sessions */
#endif
} lane;

struct session {
    server *sv;
    int id;
    lane *ln;
    char peer[64];

    /* service thread only */
    struct lws *wsi;
    msgbuf rx;
    int rx_active, rx_binary;
    double rx_start, last_activity, tokens, tokens_t;
    int hello_pending, ack_pending;
    char ack[LWS_PRE + 256];
    uint8_t *send; /* LWS_PRE + out_cap */
    size_t send_len;
    char why[128]; /* the reason the server closed it, for the log */
    int closing;   /* a reason to close is known: discarding input until the page stops sending */
    int closing_code;
    char closing_reason[124];
    double closing_since;

    /* under sv->mu */
    msgbuf pending;
    int has_pending, busy, queued, gone;
    struct session *next; /* ready list */
    uint8_t *out;         /* LWS_PRE + out_cap */
    size_t out_len;
    int has_out;
    double out_t_recv;
    int close_code;
    char close_reason[124];
    int cfg_prompt, cfg_steps;
    uint32_t dropped;
    long frames_done;

    /* the worker that holds it (busy) */
    msgbuf work;
    mg_stream *st;
    int st_prompt, st_steps;
};

typedef struct worker {
    server *sv;
    lane *ln;
    pthread_t thr;
    tjhandle dec, enc;
    uint8_t *rgb;          /* (max_frame_h, max_frame_w, 3): a decoded frame */
    uint8_t *fitted, *out; /* (H, W, 3) */
    fit_plan plan;
    int plan_w, plan_h;    /* the input size the plan was made for (0: none) */
    uint8_t *jpeg;         /* PROTO_OUT_HDR + tjBufSize(W, H) */
    size_t jpeg_cap;
} worker;

struct server {
    const mg_model *m;
    const serve_opts *o;
    struct lws_context *ctx;
    web_files web;
    size_t out_cap;          /* PROTO_OUT_HDR + the largest JPEG of W x H */
    char prompts_json[4096]; /* ["none","restore",...] */
    int default_prompt;

    pthread_mutex_t mu;
    int stopping;
    worker *w;
    int nworkers;
    lane *lanes;
    int nlanes, lanes_ok; /* lanes_ok: how many have their cv made */

    /* service thread only */
    session **live;
    int nlive, next_id;
    lws_sorted_usec_list_t tick;
    double t_start, t_last_tick;
    long last_frames_out;

    /* counters: under mu */
    long frames_in, frames_out, dropped_in, dropped_out, sessions_total, rejected_full, closed_by_server,
        closed_by_page, model_frames;
    long closes_by_code[16]; /* index code - 1000 (1000..1015) */
    hist lat, lat_tick, model_ms;
};

static void say(const server *sv, const char *fmt, ...) MG_PRINTF(2, 3);
static void say(const server *sv, const char *fmt, ...) {
    if (sv->o->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("mirage serve | ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int buf_reserve(msgbuf *b, size_t need, size_t max) {
    if (need <= b->cap) return 0;
    size_t c = b->cap ? b->cap : 16384;
    while (c < need) c *= 2;
    if (c > max) c = max;
    uint8_t *p = realloc(b->data, c);
    if (!p) return -1;
    b->data = p, b->cap = c;
    return 0;
}

static session *session_new(server *sv) {
    session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->sv = sv;
    s->out = malloc(LWS_PRE + sv->out_cap);
    s->send = malloc(LWS_PRE + sv->out_cap);
    if (!s->out || !s->send) {
        free(s->out), free(s->send), free(s);
        return NULL;
    }
    s->cfg_prompt = sv->default_prompt;
    s->cfg_steps = sv->o->steps;
    s->st_prompt = -1;
    return s;
}

static void session_free(session *s) {
    if (!s) return;
    mg_stream_free(s->st);
    free(s->rx.data), free(s->pending.data), free(s->work.data);
    free(s->out), free(s->send);
    free(s);
}

/* ---- workers ------------------------------------------------------------------------------ */

/* Sets the session's close code and reason (the first one wins). mu held. */
static void session_doom(session *s, int code, const char *why) {
    if (s->close_code) return;
    s->close_code = code;
    snprintf(s->close_reason, sizeof s->close_reason, "%.123s", why); /* a close reason is at most 123 bytes */
}

/* TurboJPEG 2.1 keeps part of a failed decode's state in the handle: the next valid JPEG fails
 * too ("Unsupported marker", measured). After any failure the worker starts a fresh handle. */
static int jpeg_fail(worker *w, char *why, size_t why_n) {
    snprintf(why, why_n, "malformed JPEG: %s", tjGetErrorStr2(w->dec));
    tjDestroy(w->dec);
    w->dec = tjInitDecompress();
    return 1007;
}

/* One frame of one session: decode, fit, step, encode into w->jpeg. 0 ok, or a close code with
 * the reason in why. */
static int worker_frame(worker *w, session *s, int prompt, int steps, proto_frame *fp, size_t *jpeg_len,
                        double *model_ms, char *why, size_t why_n) {
    server *sv = w->sv;
    const serve_opts *o = sv->o;
    proto_frame f;
    if (proto_parse_frame(s->work.data, s->work.len, &f, why, why_n)) return 1008; /* checked on arrival too */
    *fp = f;
    int jw, jh, sub, cs;
    if (!w->dec && !(w->dec = tjInitDecompress())) {
        snprintf(why, why_n, "server out of memory (JPEG decoder)");
        return 1011;
    }
    if (tjDecompressHeader3(w->dec, f.jpeg, (unsigned long)f.jpeg_len, &jw, &jh, &sub, &cs))
        return jpeg_fail(w, why, why_n);
    if (jw != f.width || jh != f.height) {
        snprintf(why, why_n, "wrong dimensions: the header says %dx%d, the JPEG is %dx%d", f.width, f.height, jw, jh);
        return 1008;
    }
    if (jw > o->lim.max_frame_w || jh > o->lim.max_frame_h) { /* checked on arrival too */
        snprintf(why, why_n, "frame %dx%d is larger than the limit %dx%d", jw, jh, o->lim.max_frame_w, o->lim.max_frame_h);
        return 1009;
    }
    int flags = TJFLAG_STOPONWARNING;
#ifdef TJFLAG_LIMITSCANS
    flags |= TJFLAG_LIMITSCANS; /* a progressive JPEG with thousands of scans is a CPU bomb */
#endif
    if (tjDecompress2(w->dec, f.jpeg, (unsigned long)f.jpeg_len, w->rgb, jw, 0, jh, TJPF_RGB, flags))
        return jpeg_fail(w, why, why_n);
    const uint8_t *in = w->rgb;
    if (jw != o->width || jh != o->height) {
        if (w->plan_w != jw || w->plan_h != jh) {
            fit_plan_free(&w->plan);
            w->plan_w = w->plan_h = 0;
            if (fit_plan_init(&w->plan, jw, jh, o->width, o->height, FIT_CROP)) {
                snprintf(why, why_n, "server out of memory");
                return 1011;
            }
            w->plan_w = jw, w->plan_h = jh;
        }
        fit_plan_run(&w->plan, w->fitted, w->rgb);
        in = w->fitted;
    }
    mg_status st = MG_OK;
    if (!s->st || s->st_steps != steps) { /* steps are fixed at creation: a new stream */
        mg_stream_free(s->st);
        s->st = NULL;
        mg_stream_opts so = mg_stream_opts_default();
        so.width = o->width, so.height = o->height, so.steps = steps, so.device = o->device;
        so.seed = (uint64_t)s->id;
        so.prompt = mg_model_prompt_name(sv->m, prompt);
        st = mg_stream_new(sv->m, &so, &s->st);
        s->st_steps = steps, s->st_prompt = prompt;
    } else if (s->st_prompt != prompt) {
        st = mg_stream_set_prompt(s->st, mg_model_prompt_name(sv->m, prompt));
        s->st_prompt = prompt;
    }
    double t0 = mg_now_ms();
    if (st == MG_OK) st = mg_stream_step(s->st, in, w->out);
    *model_ms = mg_now_ms() - t0;
    if (st != MG_OK) {
        snprintf(why, why_n, "model failed: %s", mg_last_error()[0] ? mg_last_error() : mg_strerror(st));
        mg_stream_free(s->st);
        s->st = NULL;
        return 1011;
    }
    unsigned char *dst = w->jpeg + PROTO_OUT_HDR;
    unsigned long n = (unsigned long)(w->jpeg_cap - PROTO_OUT_HDR);
    if (tjCompress2(w->enc, w->out, o->width, 0, o->height, TJPF_RGB, &dst, &n, TJSAMP_420, JPEG_QUALITY,
                    TJFLAG_NOREALLOC)) {
        snprintf(why, why_n, "JPEG encoding failed: %s", tjGetErrorStr2(w->enc));
        return 1011;
    }
    *jpeg_len = PROTO_OUT_HDR + n;
    return 0;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    server *sv = w->sv;
    lane *ln = w->ln;
#ifdef MG_HAVE_OPENMP
    /* the cores are shared out between workers: no worker's parallel regions oversubscribe them */
    int per = omp_get_num_procs() / sv->nworkers;
    omp_set_num_threads(per < 1 ? 1 : per);
#endif
#ifdef MG_HAVE_CUDA
    /* the streams this worker makes live on its lane's GPU (checked in serve_run: it exists) */
    if (ln->gpu >= 0) cuda_use_device(ln->gpu);
#endif
    for (;;) {
        pthread_mutex_lock(&sv->mu);
        while (!sv->stopping && !ln->ready_head) pthread_cond_wait(&ln->cv, &sv->mu);
        if (sv->stopping) {
            pthread_mutex_unlock(&sv->mu);
            break;
        }
        session *s = ln->ready_head;
        ln->ready_head = s->next;
        if (!ln->ready_head) ln->ready_tail = NULL;
        s->next = NULL;
        s->queued = 0;
        if (s->gone || !s->has_pending || s->close_code) {
            int gone = s->gone;
            pthread_mutex_unlock(&sv->mu);
            if (gone) session_free(s);
            continue;
        }
        s->busy = 1;
        msgbuf t = s->work;
        s->work = s->pending, s->pending = t;
        s->has_pending = 0;
        int prompt = s->cfg_prompt, steps = s->cfg_steps;
        pthread_mutex_unlock(&sv->mu);

        char why[160] = "";
        size_t jpeg_len = 0;
        double model_ms = 0;
        proto_frame f;
        int code = worker_frame(w, s, prompt, steps, &f, &jpeg_len, &model_ms, why, sizeof why);

        pthread_mutex_lock(&sv->mu);
        s->busy = 0;
        if (code) {
            session_doom(s, code, why);
        } else {
            if (s->has_out) s->dropped++, sv->dropped_out++; /* the page has not taken the last one */
            float server_ms = (float)(mg_now_ms() - s->work.t_recv);
            proto_put_out(w->jpeg, f.seq, f.t, server_ms, (float)model_ms, sv->o->width, sv->o->height, s->dropped);
            memcpy(s->out + LWS_PRE, w->jpeg, jpeg_len);
            s->out_len = jpeg_len;
            s->out_t_recv = s->work.t_recv;
            s->has_out = 1;
            s->frames_done++;
            sv->model_frames++;
            hist_add(&sv->model_ms, model_ms);
            ln->frames++;
            hist_add(&ln->model_ms, model_ms);
            ln->recent_ms = ln->frames == 1 ? model_ms : 0.9 * ln->recent_ms + 0.1 * model_ms;
        }
        int free_it = s->gone;
        if (!free_it && s->has_pending && !s->close_code) { /* a newer frame came while we worked */
            s->queued = 1;
            if (ln->ready_tail) ln->ready_tail->next = s;
            else ln->ready_head = s;
            ln->ready_tail = s;
            pthread_cond_signal(&ln->cv);
        }
        pthread_mutex_unlock(&sv->mu);
        if (free_it) session_free(s);
        else lws_cancel_service(sv->ctx);
    }
    return NULL;
}

static void worker_free(worker *w) {
    if (w->dec) tjDestroy(w->dec);
    if (w->enc) tjDestroy(w->enc);
    free(w->rgb), free(w->fitted), free(w->out), free(w->jpeg);
    fit_plan_free(&w->plan);
}

static mg_status worker_init(worker *w, server *sv, lane *ln) {
    const serve_opts *o = sv->o;
    memset(w, 0, sizeof *w);
    w->sv = sv;
    w->ln = ln;
    w->dec = tjInitDecompress();
    w->enc = tjInitCompress();
    w->rgb = malloc((size_t)o->lim.max_frame_w * o->lim.max_frame_h * 3);
    w->fitted = malloc((size_t)o->width * o->height * 3);
    w->out = malloc((size_t)o->width * o->height * 3);
    w->jpeg_cap = sv->out_cap;
    w->jpeg = malloc(w->jpeg_cap);
    if (!w->dec || !w->enc || !w->rgb || !w->fitted || !w->out || !w->jpeg) {
        worker_free(w);
        return mg_fail(MG_ERR_NOMEM, "serve: out of memory for a worker (max frame %dx%d)", o->lim.max_frame_w,
                       o->lim.max_frame_h);
    }
    return MG_OK;
}

/* ---- the service thread: HTTP ------------------------------------------------------------- */

typedef struct conn {
    session *s;                  /* WebSocket */
    const unsigned char *body;   /* HTTP: LWS_PRE bytes of room before it */
    size_t body_len;
    unsigned char gen[LWS_PRE + 8192]; /* HTTP: a generated body (/stats) */
} conn;

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) { v = strtol(line + 6, NULL, 10); break; }
    fclose(f);
    return v;
}

static size_t stats_json(server *sv, char *dst, size_t n) {
    pthread_mutex_lock(&sv->mu);
    int len = snprintf(dst, n,
                       "{\"sessions\":%d,\"max_sessions\":%d,\"workers\":%d,\"sessions_total\":%ld,\"rejected_full\":%ld,"
                       "\"frames_in\":%ld,\"frames_out\":%ld,\"dropped_in\":%ld,\"dropped_out\":%ld,"
                       "\"closed_by_server\":%ld,\"closed_by_page\":%ld,"
                       "\"latency_ms\":{\"p50\":%.2f,\"p99\":%.2f},\"model_ms\":{\"p50\":%.2f,\"p99\":%.2f},"
                       "\"rss_kib\":%ld,\"uptime_s\":%.1f",
                       sv->nlive, sv->o->max_sessions, sv->nworkers, sv->sessions_total, sv->rejected_full,
                       sv->frames_in, sv->frames_out, sv->dropped_in, sv->dropped_out, sv->closed_by_server,
                       sv->closed_by_page, hist_q(&sv->lat, 0.5), hist_q(&sv->lat, 0.99), hist_q(&sv->model_ms, 0.5),
                       hist_q(&sv->model_ms, 0.99), rss_kib(), (mg_now_ms() - sv->t_start) / 1000.0);
    /* with --device cuda, each GPU: its sessions, frames and model time (the placement) */
    if (len > 0 && sv->lanes[0].gpu >= 0 && (size_t)len < n)
        len += snprintf(dst + len, n - (size_t)len, ",\"gpus\":[");
    for (int i = 0; i < sv->nlanes && sv->lanes[0].gpu >= 0 && len > 0 && (size_t)len < n; i++) {
        const lane *ln = &sv->lanes[i];
        len += snprintf(dst + len, n - (size_t)len,
                        "%s{\"gpu\":%d,\"sessions\":%d,\"workers\":%d,\"frames\":%ld,\"model_ms\":{\"p50\":%.2f,"
                        "\"p99\":%.2f}}", i ? "," : "", ln->gpu, ln->sessions, ln->nworkers, ln->frames,
                        hist_q(&ln->model_ms, 0.5), hist_q(&ln->model_ms, 0.99));
    }
    if (len > 0 && sv->lanes[0].gpu >= 0 && (size_t)len < n) len += snprintf(dst + len, n - (size_t)len, "]");
    if (len > 0 && (size_t)len < n) len += snprintf(dst + len, n - (size_t)len, "}\n");
    pthread_mutex_unlock(&sv->mu);
    return len < 0 ? 0 : (size_t)len >= n ? n - 1 : (size_t)len;
}

static int http_request(server *sv, struct lws *wsi, conn *c, const char *path) {
    if (!lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI)) {
        lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "only GET");
        return -1;
    }
    const char *type = "application/json";
    if (!strcmp(path, "/stats")) {
        c->body = c->gen + LWS_PRE;
        c->body_len = stats_json(sv, (char *)c->gen + LWS_PRE, sizeof c->gen - LWS_PRE);
    } else {
        const web_file *f = web_find(&sv->web, path);
        if (!f) {
            if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "not found")) return -1;
            return lws_http_transaction_completed(wsi) ? -1 : 0;
        }
        c->body = f->buf + LWS_PRE;
        c->body_len = f->len;
        type = f->type;
    }
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, type, c->body_len, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:", (const unsigned char *)"no-store", 8,
                                    &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"x-content-type-options:",
                                    (const unsigned char *)"nosniff", 7, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_write(struct lws *wsi, conn *c) {
    if (!c->body) return -1;
    if (lws_write(wsi, (unsigned char *)c->body, c->body_len, LWS_WRITE_HTTP_FINAL) != (int)c->body_len) return 1;
    c->body = NULL;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- the service thread: WebSocket sessions ---------------------------------------------- */

static int ws_close(session *s, struct lws *wsi, int code, const char *fmt, ...) MG_PRINTF(4, 5);
/* Closes the session with a code and a reason the page sees (CloseEvent.reason); returns -1 for
 * the callback to return. */
static int ws_close(session *s, struct lws *wsi, int code, const char *fmt, ...) {
    char why[124];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)why, strlen(why));
    if (s) {
        snprintf(s->why, sizeof s->why, "%d %s", code, why);
        server *sv = s->sv;
        pthread_mutex_lock(&sv->mu);
        sv->closed_by_server++;
        if (code >= 1000 && code < 1016) sv->closes_by_code[code - 1000]++;
        pthread_mutex_unlock(&sv->mu);
    }
    return -1;
}

/* Closing at once, with the page's frames still arriving, makes the kernel answer the unread
 * bytes with a reset that destroys the close frame, and the page never learns the reason
 * (measured with a frame flood). So the session first stops taking input and drains what is
 * in flight; the timer closes it once the page has been quiet for CLOSE_QUIET_MS, or after
 * CLOSE_DRAIN_MS whatever it does. Returns 0 for the callback to return. */
#define CLOSE_QUIET_MS 100
#define CLOSE_DRAIN_MS 1000
static int ws_close_soon(session *s, struct lws *wsi, int code, const char *fmt, ...) MG_PRINTF(4, 5);
static int ws_close_soon(session *s, struct lws *wsi, int code, const char *fmt, ...) {
    if (s->closing) return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->closing_reason, sizeof s->closing_reason, fmt, ap);
    va_end(ap);
    s->closing = 1;
    s->closing_code = code;
    s->closing_since = mg_now_ms();
    s->rx_active = 0;
    lws_set_timer_usecs(wsi, CLOSE_QUIET_MS * 1000);
    return 0;
}

static void enqueue_locked(server *sv, session *s) {
    (void)sv;
    if (s->busy || s->queued || s->gone) return;
    lane *ln = s->ln;
    s->queued = 1;
    s->next = NULL;
    if (ln->ready_tail) ln->ready_tail->next = s;
    else ln->ready_head = s;
    ln->ready_tail = s;
    pthread_cond_signal(&ln->cv);
}

/* The lane a new session goes to: the fewest open sessions, then the shorter recent model time,
 * then the lower GPU id. mu held. */
static lane *place_locked(server *sv) {
    lane *best = &sv->lanes[0];
    for (int i = 1; i < sv->nlanes; i++) {
        lane *ln = &sv->lanes[i];
        if (ln->sessions < best->sessions || (ln->sessions == best->sessions && ln->recent_ms < best->recent_ms))
            best = ln;
    }
    return best;
}

static int ws_open(server *sv, struct lws *wsi, conn *c) {
    char peer[64] = "?";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    if (sv->nlive >= sv->o->max_sessions) {
        pthread_mutex_lock(&sv->mu);
        sv->rejected_full++;
        pthread_mutex_unlock(&sv->mu);
        say(sv, "refused %s: server full (%d sessions)", peer, sv->nlive);
        return ws_close(NULL, wsi, 1013, "server full: %d of %d sessions in use, try again later", sv->nlive,
                        sv->o->max_sessions);
    }
    session *s = session_new(sv);
    if (!s) return ws_close(NULL, wsi, 1011, "server out of memory");
    if (sv->o->lim.send_buffer > 0) { /* a small send buffer: a slow reader is noticed sooner, dropped sooner */
        int b = sv->o->lim.send_buffer;
        setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
    }
    s->id = ++sv->next_id;
    s->wsi = wsi;
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    s->last_activity = s->tokens_t = mg_now_ms();
    s->tokens = sv->o->lim.max_fps;
    s->hello_pending = 1;
    c->s = s;
    sv->live[sv->nlive++] = s;
    pthread_mutex_lock(&sv->mu);
    sv->sessions_total++;
    s->ln = place_locked(sv);
    s->ln->sessions++;
    int on_gpu = s->ln->gpu, there = s->ln->sessions;
    pthread_mutex_unlock(&sv->mu);
    if (on_gpu >= 0)
        say(sv, "session %d open from %s on GPU %d (%d of %d; %d on GPU %d)", s->id, peer, on_gpu, sv->nlive,
            sv->o->max_sessions, there, on_gpu);
    else
        say(sv, "session %d open from %s (%d of %d)", s->id, peer, sv->nlive, sv->o->max_sessions);
    lws_set_timer_usecs(wsi, TIMER_US);
    lws_callback_on_writable(wsi);
    return 0;
}

static void ws_closed(server *sv, conn *c) {
    session *s = c->s;
    if (!s) return;
    c->s = NULL;
    for (int i = 0; i < sv->nlive; i++)
        if (sv->live[i] == s) {
            sv->live[i] = sv->live[--sv->nlive];
            break;
        }
    pthread_mutex_lock(&sv->mu);
    if (!s->why[0]) sv->closed_by_page++;
    s->gone = 1;
    s->wsi = NULL;
    s->ln->sessions--;
    int free_now = !s->busy;
    if (free_now && s->st && !sv->stopping) {
        /* one of its lane's workers frees it, not this thread, which serves every socket: freeing
         * a CUDA stream waits for the device and for any stream being made or captured on another
         * worker (cuda_stream.cu's lock). A worker frees a gone session it takes from the list. */
        lane *ln = s->ln;
        if (!s->queued) {
            s->queued = 1;
            s->next = NULL;
            if (ln->ready_tail) ln->ready_tail->next = s;
            else ln->ready_head = s;
            ln->ready_tail = s;
            pthread_cond_signal(&ln->cv);
        }
        free_now = 0;
    } else if (free_now && s->queued) { /* unlink it from the ready list */
        lane *ln = s->ln;
        session **pp = &ln->ready_head, *prev = NULL;
        while (*pp && *pp != s) prev = *pp, pp = &(*pp)->next;
        if (*pp) {
            *pp = s->next;
            if (ln->ready_tail == s) ln->ready_tail = prev;
        }
        s->queued = 0;
    }
    long frames = s->frames_done;
    uint32_t dropped = s->dropped;
    int id = s->id, gpu = s->ln->gpu; /* a busy worker frees s once it is done: read it now */
    char why[sizeof s->why];
    snprintf(why, sizeof why, "%s", s->why[0] ? s->why : "by the page");
    pthread_mutex_unlock(&sv->mu);
    if (gpu >= 0)
        say(sv, "session %d closed on GPU %d (%s): %ld frames, %u dropped", id, gpu, why, frames, dropped);
    else
        say(sv, "session %d closed (%s): %ld frames, %u dropped", id, why, frames, dropped);
    if (free_now) session_free(s);
}

static int ws_message(server *sv, struct lws *wsi, session *s) {
    const serve_limits *L = &sv->o->lim;
    double now = mg_now_ms();
    /* a token bucket: max_fps messages a second on average, at most max_fps at once */
    s->tokens += (now - s->tokens_t) / 1000.0 * L->max_fps;
    if (s->tokens > L->max_fps) s->tokens = L->max_fps;
    s->tokens_t = now;
    if (s->tokens < 1) return ws_close_soon(s, wsi, 1008, "rate limit: more than %d messages a second", L->max_fps);
    s->tokens -= 1;
    char why[160];
    if (!s->rx_binary) {
        proto_config cfg;
        if (proto_parse_config((const char *)s->rx.data, s->rx.len, sv->o->max_steps, &cfg, why, sizeof why))
            return ws_close_soon(s, wsi, 1008, "%s", why);
        int prompt = -1;
        if (cfg.has_prompt) {
            for (int i = 0; i < mg_model_prompt_count(sv->m); i++)
                if (!strcmp(mg_model_prompt_name(sv->m, i), cfg.prompt)) prompt = i;
            if (prompt < 0) return ws_close_soon(s, wsi, 1008, "bad control message: no prompt named '%.60s'", cfg.prompt);
        }
        pthread_mutex_lock(&sv->mu);
        if (prompt >= 0) s->cfg_prompt = prompt;
        if (cfg.steps) s->cfg_steps = cfg.steps;
        prompt = s->cfg_prompt;
        int steps = s->cfg_steps;
        pthread_mutex_unlock(&sv->mu);
        snprintf(s->ack + LWS_PRE, sizeof s->ack - LWS_PRE, "{\"type\":\"config\",\"prompt\":\"%s\",\"steps\":%d}",
                 mg_model_prompt_name(sv->m, prompt), steps);
        s->ack_pending = 1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    proto_frame f;
    if (proto_parse_frame(s->rx.data, s->rx.len, &f, why, sizeof why)) return ws_close_soon(s, wsi, 1008, "%s", why);
    if (f.width > L->max_frame_w || f.height > L->max_frame_h)
        return ws_close_soon(s, wsi, 1009, "frame %dx%d is larger than the limit %dx%d", f.width, f.height, L->max_frame_w,
                        L->max_frame_h);
    pthread_mutex_lock(&sv->mu);
    sv->frames_in++;
    if (s->has_pending) s->dropped++, sv->dropped_in++; /* newest wins */
    msgbuf t = s->pending;
    s->pending = s->rx, s->rx = t;
    s->rx.len = 0;
    s->pending.t_recv = now;
    s->has_pending = 1;
    enqueue_locked(sv, s);
    pthread_mutex_unlock(&sv->mu);
    return 0;
}

static int ws_receive(server *sv, struct lws *wsi, session *s, const void *in, size_t len) {
    const serve_limits *L = &sv->o->lim;
    double now = mg_now_ms();
    s->last_activity = now;
    if (s->closing) return 0; /* draining: see ws_close_soon */
    if (!s->rx_active) {
        s->rx_active = 1;
        s->rx.len = 0;
        s->rx_binary = lws_frame_is_binary(wsi);
        s->rx_start = now;
    }
    size_t more = lws_remaining_packet_payload(wsi);
    if (s->rx.len + len + more > L->max_message)
        return ws_close_soon(s, wsi, 1009, "message too big: more than %zu bytes", L->max_message);
    if (buf_reserve(&s->rx, s->rx.len + len + more, L->max_message))
        return ws_close_soon(s, wsi, 1011, "server out of memory");
    memcpy(s->rx.data + s->rx.len, in, len);
    s->rx.len += len;
    if (!lws_is_final_fragment(wsi)) return 0;
    s->rx_active = 0;
    return ws_message(sv, wsi, s);
}

static int ws_write(server *sv, struct lws *wsi, session *s) {
    pthread_mutex_lock(&sv->mu);
    int code = s->close_code;
    char reason[124];
    snprintf(reason, sizeof reason, "%s", s->close_reason);
    pthread_mutex_unlock(&sv->mu);
    if (code) return ws_close_soon(s, wsi, code, "%s", reason);
    if (s->closing) return 0;
    if (s->hello_pending) {
        s->hello_pending = 0;
        const serve_opts *o = sv->o;
        char *b = malloc(LWS_PRE + 8192);
        if (!b) return ws_close(s, wsi, 1011, "server out of memory");
        int n = snprintf(b + LWS_PRE, 8192,
                         "{\"type\":\"hello\",\"version\":%d,\"session\":%d,\"width\":%d,\"height\":%d,"
                         "\"prompts\":%s,\"prompt\":\"%s\",\"steps\":%d,\"max_steps\":%d,\"model\":\"%s\","
                         "\"limits\":{\"max_message\":%zu,\"max_frame\":[%d,%d],\"max_fps\":%d,"
                         "\"idle_timeout_s\":%d,\"message_timeout_s\":%d}}",
                         PROTO_VERSION, s->id, o->width, o->height, sv->prompts_json,
                         mg_model_prompt_name(sv->m, s->cfg_prompt), s->cfg_steps, o->max_steps,
                         mg_model_config(sv->m)->name, o->lim.max_message, o->lim.max_frame_w, o->lim.max_frame_h,
                         o->lim.max_fps, o->lim.idle_timeout_s, o->lim.message_timeout_s);
        int r = n > 0 && n < 8192 ? lws_write(wsi, (unsigned char *)b + LWS_PRE, (size_t)n, LWS_WRITE_TEXT) : -1;
        free(b);
        if (r < n) return -1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (s->ack_pending) {
        s->ack_pending = 0;
        size_t n = strlen(s->ack + LWS_PRE);
        if (lws_write(wsi, (unsigned char *)s->ack + LWS_PRE, n, LWS_WRITE_TEXT) < (int)n) return -1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    pthread_mutex_lock(&sv->mu);
    if (!s->has_out) {
        pthread_mutex_unlock(&sv->mu);
        return 0;
    }
    uint8_t *t = s->send;
    s->send = s->out, s->out = t;
    s->send_len = s->out_len;
    s->has_out = 0;
    double t_recv = s->out_t_recv;
    pthread_mutex_unlock(&sv->mu);
    if (lws_write(wsi, s->send + LWS_PRE, s->send_len, LWS_WRITE_BINARY) < (int)s->send_len) return -1;
    double ms = mg_now_ms() - t_recv;
    pthread_mutex_lock(&sv->mu);
    sv->frames_out++;
    hist_add(&sv->lat, ms);
    hist_add(&sv->lat_tick, ms);
    int again = s->has_out;
    pthread_mutex_unlock(&sv->mu);
    if (again) lws_callback_on_writable(wsi);
    return 0;
}

static int ws_timer(server *sv, struct lws *wsi, session *s) {
    const serve_limits *L = &sv->o->lim;
    double now = mg_now_ms();
    if (s->closing) {
        if (now - s->last_activity >= CLOSE_QUIET_MS || now - s->closing_since >= CLOSE_DRAIN_MS)
            return ws_close(s, wsi, s->closing_code, "%s", s->closing_reason);
        lws_set_timer_usecs(wsi, CLOSE_QUIET_MS * 1000);
        return 0;
    }
    if (s->rx_active && now - s->rx_start > L->message_timeout_s * 1000.0)
        return ws_close(s, wsi, 1008, "too slow: a message took longer than %d s to arrive", L->message_timeout_s);
    if (now - s->last_activity > L->idle_timeout_s * 1000.0)
        return ws_close(s, wsi, 1008, "idle: nothing received for %d s", L->idle_timeout_s);
    lws_set_timer_usecs(wsi, TIMER_US);
    return 0;
}

/* A worker has output or a reason to close: ask for a write on those sessions. */
static void wake_writers(server *sv) {
    pthread_mutex_lock(&sv->mu);
    for (int i = 0; i < sv->nlive; i++) {
        session *s = sv->live[i];
        if (s->wsi && (s->has_out || s->close_code)) lws_callback_on_writable(s->wsi);
    }
    pthread_mutex_unlock(&sv->mu);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    struct lws_context *ctx = lws_get_context(wsi);
    server *sv = ctx ? lws_context_user(ctx) : NULL;
    conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP: return http_request(sv, wsi, c, (const char *)in);
    case LWS_CALLBACK_HTTP_WRITEABLE: return http_write(wsi, c);
    case LWS_CALLBACK_ESTABLISHED: return ws_open(sv, wsi, c);
    case LWS_CALLBACK_RECEIVE: return c->s ? ws_receive(sv, wsi, c->s, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE: return c->s ? ws_write(sv, wsi, c->s) : -1;
    case LWS_CALLBACK_TIMER: return c->s ? ws_timer(sv, wsi, c->s) : 0;
    case LWS_CALLBACK_CLOSED: ws_closed(sv, c); return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (sv) wake_writers(sv);
        return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"mirage", callback, sizeof(conn), RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Once a second: the status line. */
static void on_tick(lws_sorted_usec_list_t *sul) {
    server *sv = lws_container_of(sul, server, tick);
    double now = mg_now_ms();
    pthread_mutex_lock(&sv->mu);
    long out = sv->frames_out - sv->last_frames_out;
    sv->last_frames_out = sv->frames_out;
    double p50 = hist_q(&sv->lat_tick, 0.5), p99 = hist_q(&sv->lat_tick, 0.99);
    memset(&sv->lat_tick, 0, sizeof sv->lat_tick);
    long din = sv->dropped_in, dout = sv->dropped_out, total = sv->frames_out;
    char per[256] = ""; /* with --device cuda: sessions per GPU */
    size_t at = 0;
    for (int i = 0; i < sv->nlanes && sv->lanes[i].gpu >= 0 && at < sizeof per; i++)
        at += (size_t)snprintf(per + at, sizeof per - at, "%s%d", i ? " " : " | sessions per GPU ", sv->lanes[i].sessions);
    pthread_mutex_unlock(&sv->mu);
    double dt = (now - sv->t_last_tick) / 1000.0;
    sv->t_last_tick = now;
    if (sv->nlive || out)
        say(sv, "%d sessions | %.1f frames/s out | %ld served | server latency %.1f ms p50 | %.1f ms p99 | dropped %ld in, %ld out%s",
            sv->nlive, dt > 0 ? out / dt : 0, total, p50, p99, din, dout, per);
    lws_sul_schedule(sv->ctx, 0, &sv->tick, on_tick, 1000 * LWS_US_PER_MS);
}

static void lws_log_line(int level, const char *line) {
    (void)level;
    fprintf(stderr, "mirage serve | lws: %s", line);
}

/* Printable ASCII without quote or backslash: safe inside a JSON string as it is. */
static int json_safe(const char *s) {
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\') return 0;
    return 1;
}

static mg_status check_listen(const char *host, int port) {
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int e = getaddrinfo(host, ps, &hints, &ai);
    if (e) return mg_fail(MG_ERR_ARG, "--host %s: not a numeric address of this machine (%s)", host, gai_strerror(e));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    int r = fd < 0 ? -1 : 0;
    if (!r) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!r) r = bind(fd, ai->ai_addr, ai->ai_addrlen);
    int err = errno;
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    if (r) return mg_fail(MG_ERR_IO, "cannot listen on %s:%d: %s", host, port, strerror(err));
    return MG_OK;
}

static mg_status write_port_file(const char *path, int port) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return mg_fail(MG_ERR_IO, "%s: %s", tmp, strerror(errno));
    int bad = fprintf(f, "%d\n", port) < 0;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        return mg_fail(MG_ERR_IO, "%s: cannot write", path);
    }
    return MG_OK;
}

/* The lanes: one for the CPU, or one per GPU of o->gpus, each with the model's weights uploaded
 * there (one copy per GPU; the streams of the sessions placed there share it). */
static mg_status lanes_init(server *sv) {
    const serve_opts *o = sv->o;
    int ids[SERVE_MAX_GPUS], n = 1;
    ids[0] = -1;
    if (o->device == MG_DEVICE_CUDA) {
#ifdef MG_HAVE_CUDA
        int have = cuda_device_count();
        if (have == 0) return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: no CUDA device found");
        if (o->ngpus == SERVE_GPUS_ALL) {
            n = have < SERVE_MAX_GPUS ? have : SERVE_MAX_GPUS;
            for (int i = 0; i < n; i++) ids[i] = i;
        } else if (o->ngpus > 0 && o->ngpus <= SERVE_MAX_GPUS) {
            n = o->ngpus;
            memcpy(ids, o->gpus, sizeof(int) * (size_t)n);
        } else {
            ids[0] = 0;
        }
        for (int i = 0; i < n; i++)
            if (ids[i] >= have)
                return mg_fail(MG_ERR_UNSUPPORTED, "--gpus: GPU %d does not exist: this machine has %d GPU%s (0..%d)",
                               ids[i], have, have == 1 ? "" : "s", have - 1);
#else
        return mg_fail(MG_ERR_UNSUPPORTED, "--device cuda: this build has no CUDA backend (built without nvcc)");
#endif
    } else if (o->ngpus) {
        return mg_fail(MG_ERR_ARG, "--gpus needs --device cuda");
    }
    if (n < 1 || n > SERVE_MAX_GPUS) return mg_fail(MG_ERR_ARG, "--gpus: %d GPUs, expected 1..%d", n, SERVE_MAX_GPUS);
    sv->lanes = calloc((size_t)n, sizeof *sv->lanes);
    if (!sv->lanes) return mg_fail(MG_ERR_NOMEM, "serve: out of memory");
    sv->nlanes = n;
    for (int i = 0; i < n; i++) {
        lane *ln = &sv->lanes[i];
        ln->gpu = ids[i];
        if (pthread_cond_init(&ln->cv, NULL)) return mg_fail(MG_ERR_NOMEM, "serve: cannot create a condition variable");
        sv->lanes_ok++;
#ifdef MG_HAVE_CUDA
        if (ln->gpu >= 0) {
            double t0 = mg_now_ms();
            mg_status st = cuda_weights_acquire(sv->m, ln->gpu, &ln->wts);
            if (st != MG_OK) return st;
            char name[256];
            say(sv, "GPU %d: %s | weights %.1f MiB, uploaded in %.0f ms (one copy, shared by its sessions)", ln->gpu,
                cuda_device_name(ln->gpu, name, sizeof name), cuda_weights_bytes(ln->wts) / 1048576.0,
                mg_now_ms() - t0);
        }
#endif
    }
    return MG_OK;
}

static void lanes_free(server *sv) {
    for (int i = 0; i < sv->lanes_ok; i++) {
#ifdef MG_HAVE_CUDA
        cuda_weights_release(sv->lanes[i].wts);
#endif
        pthread_cond_destroy(&sv->lanes[i].cv);
    }
    free(sv->lanes);
}

mg_status serve_run(const mg_model *m, const serve_opts *o) {
    if (o->width % 16 || o->height % 16 || o->width < 16 || o->height < 16)
        return mg_fail(MG_ERR_ARG, "frame size %dx%d: the model needs multiples of 16", o->width, o->height);
    if (o->max_sessions < 1 || o->lim.max_fps < 1 || o->lim.max_message < PROTO_FRAME_HDR + 4)
        return mg_fail(MG_ERR_ARG, "serve: bad limits");
    server *sv = calloc(1, sizeof *sv);
    if (!sv) return mg_fail(MG_ERR_NOMEM, "serve: out of memory");
    sv->m = m, sv->o = o;
    sv->t_start = sv->t_last_tick = mg_now_ms();
    mg_status st = MG_OK;
    char dir[4096];
    int mu_ok = 0, nthr = 0;
    struct lws_context *ctx = NULL;

    /* the prompts, and the default one */
    int np = mg_model_prompt_count(m);
    sv->default_prompt = np > 1 ? 1 : 0;
    size_t at = (size_t)snprintf(sv->prompts_json, sizeof sv->prompts_json, "[");
    for (int i = 0; i < np; i++) {
        const char *name = mg_model_prompt_name(m, i);
        if (!json_safe(name)) { /* they are written into JSON as they are */
            st = mg_fail(MG_ERR_FORMAT, "serve: prompt %d of the model has characters a page cannot be sent", i);
            goto done;
        }
        if (o->prompt && !strcmp(o->prompt, name)) sv->default_prompt = i;
        if (at < sizeof sv->prompts_json)
            at += (size_t)snprintf(sv->prompts_json + at, sizeof sv->prompts_json - at, "%s\"%s\"", i ? "," : "", name);
    }
    if (at + 2 >= sizeof sv->prompts_json) { st = mg_fail(MG_ERR_ARG, "serve: too many prompts"); goto done; }
    strcat(sv->prompts_json, "]");
    if (o->prompt && strcmp(mg_model_prompt_name(m, sv->default_prompt), o->prompt)) {
        st = mg_fail(MG_ERR_ARG, "--prompt '%s': the model has no such prompt (see `mirage info`)", o->prompt);
        goto done;
    }

    if (!json_safe(mg_model_config(m)->name)) { st = mg_fail(MG_ERR_FORMAT, "serve: the model's config name has characters a page cannot be sent"); goto done; }
    if ((st = serve_find_web(o->web_dir, dir, sizeof dir)) != MG_OK) goto done;
    if ((st = web_load(&sv->web, dir, LWS_PRE)) != MG_OK) goto done;
    sv->out_cap = PROTO_OUT_HDR + tjBufSize(o->width, o->height, TJSAMP_420);
    sv->live = calloc((size_t)o->max_sessions, sizeof *sv->live);
    if (!sv->live) { st = mg_fail(MG_ERR_NOMEM, "serve: out of memory"); goto done; }
    if (pthread_mutex_init(&sv->mu, NULL)) {
        st = mg_fail(MG_ERR_NOMEM, "serve: cannot create a mutex");
        goto done;
    }
    mu_ok = 1;
    if ((st = lanes_init(sv)) != MG_OK) goto done;

    /* Bind once ourselves first: a clear message for a taken port (lws only logs it), and lws's
     * failed-listen path is left untaken (it leaks a little, which LeakSanitizer reports). */
    if ((st = check_listen(o->host, o->port)) != MG_OK) goto done;
    lws_set_log_level(LLL_ERR, lws_log_line);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = o->port;
    info.iface = o->host;
    info.protocols = protocols;
    info.user = sv;
    info.gid = -1, info.uid = -1;
    info.timeout_secs = (unsigned)o->lim.handshake_timeout_s;
    info.timeout_secs_ah_idle = (unsigned)o->lim.handshake_timeout_s;
    info.keepalive_timeout = o->lim.handshake_timeout_s;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (!strchr(o->host, ':')) info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    ctx = lws_create_context(&info);
    struct lws_vhost *vh = ctx ? lws_get_vhost_by_name(ctx, "default") : NULL;
    int port = vh ? lws_get_vhost_listen_port(vh) : -1;
    if (!ctx || port <= 0) {
        st = mg_fail(MG_ERR_IO, "cannot listen on %s:%d (address in use, or not an address of this machine?)", o->host,
                     o->port);
        goto done;
    }
    sv->ctx = ctx;

    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    /* CPU: the cores; CUDA: a small pool per GPU (SERVE_CUDA_WORKERS), so one worker decodes and
     * encodes JPEG while another's frame is on the card. Each stream has its own CUDA streams,
     * graph, cuBLASLt handle and workspace, so workers on one GPU share only the weights. */
    int per_lane = o->workers > 0 ? o->workers : o->device == MG_DEVICE_CUDA ? SERVE_CUDA_WORKERS : cores;
    if (o->workers <= 0 && o->device == MG_DEVICE_CUDA && per_lane > cores / sv->nlanes)
        per_lane = cores / sv->nlanes > 0 ? cores / sv->nlanes : 1;
    if (per_lane > o->max_sessions) per_lane = o->max_sessions;
    sv->nworkers = per_lane * sv->nlanes;
    sv->w = calloc((size_t)sv->nworkers, sizeof *sv->w);
    if (!sv->w) { st = mg_fail(MG_ERR_NOMEM, "serve: out of memory"); goto done; }
    for (nthr = 0; nthr < sv->nworkers; nthr++) {
        lane *ln = &sv->lanes[nthr / per_lane];
        ln->nworkers++;
        if ((st = worker_init(&sv->w[nthr], sv, ln)) != MG_OK) goto done;
        if (pthread_create(&sv->w[nthr].thr, NULL, worker_main, &sv->w[nthr])) {
            worker_free(&sv->w[nthr]);
            st = mg_fail(MG_ERR_NOMEM, "serve: cannot start a worker thread");
            goto done;
        }
    }

    if (o->port_file && (st = write_port_file(o->port_file, port)) != MG_OK) goto done;
    char gpus[256] = "";
    for (int i = 0, at = 0; i < sv->nlanes && sv->lanes[i].gpu >= 0 && at < (int)sizeof gpus; i++)
        at += snprintf(gpus + at, sizeof gpus - (size_t)at, "%s%d", i ? "," : " on GPU ", sv->lanes[i].gpu);
    say(sv, "page from %s | %d workers%s | max %d sessions | %dx%d | steps %d (max %d) | prompt %s", dir,
        sv->nworkers, gpus, o->max_sessions, o->width, o->height, o->steps, o->max_steps,
        mg_model_prompt_name(m, sv->default_prompt));
    say(sv, "limits: message %zu bytes | frame %dx%d | %d messages/s | idle %d s | message %d s | handshake %d s | send buffer %s",
        o->lim.max_message, o->lim.max_frame_w, o->lim.max_frame_h, o->lim.max_fps, o->lim.idle_timeout_s,
        o->lim.message_timeout_s, o->lim.handshake_timeout_s, o->lim.send_buffer ? "set" : "the kernel's");
    if (!o->quiet) fprintf(stderr, "mirage serve | listening on http://%s:%d/ (Ctrl-C stops)\n", o->host, port);
    lws_sul_schedule(ctx, 0, &sv->tick, on_tick, 1000 * LWS_US_PER_MS);
    while (!atomic_load(o->stop))
        if (lws_service(ctx, 0) < 0) break;
    say(sv, "stopping: %ld frames served, %ld sessions", sv->frames_out, sv->sessions_total);

done:
    if (mu_ok) {
        pthread_mutex_lock(&sv->mu);
        sv->stopping = 1;
        for (int i = 0; i < sv->lanes_ok; i++) pthread_cond_broadcast(&sv->lanes[i].cv);
        pthread_mutex_unlock(&sv->mu);
    }
    for (int i = 0; i < nthr; i++) {
        pthread_join(sv->w[i].thr, NULL);
        worker_free(&sv->w[i]);
    }
    if (ctx) {
        lws_sul_cancel(&sv->tick);
        lws_context_destroy(ctx); /* closes every connection: CLOSED frees the sessions */
    }
    for (int i = 0; i < sv->lanes_ok; i++)
        while (sv->lanes[i].ready_head) { /* sessions that were only waiting in a ready list */
            session *s = sv->lanes[i].ready_head;
            sv->lanes[i].ready_head = s->next;
            if (s->gone) session_free(s);
        }
    lanes_free(sv);
    if (mu_ok) pthread_mutex_destroy(&sv->mu);
    web_free(&sv->web);
    free(sv->w);
    free(sv->live);
    free(sv);
    return st;
}

#endif
