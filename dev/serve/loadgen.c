/* loadgen: many sessions against a running `mirage serve`, for machines without node or a
 * browser (the GPU machines). A C11 libwebsockets client speaking the page's protocol
 * (docs/SERVE.md): each session connects to /ws (subprotocol "mirage"), reads the hello, then
 * sends JPEG frames of a moving test pattern at the server's size, either at --fps or as fast
 * as the server answers (one frame in flight per session). It measures, over a window that
 * starts --warmup seconds after every session has its first output (stream creation and graph
 * capture are not the steady state): total served frames per second, per-session fps,
 * end-to-end latency (send to output received, this client's clock) p50/p99, the server's own
 * times from the output header, and errors (connections refused or closed, bad messages).
 *
 *   build/loadgen --port 8080 --sessions 16 --seconds 10 [--fps 30] [--json out.json]
 *
 * Exit 0 when every session was served throughout without an error, 1 otherwise, 2 for usage. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <libwebsockets.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "core/timing.h"
#include "serve/proto.h"

#define NFRAMES 32      /* the pattern's cycle, encoded once */
#define MAX_SESSIONS 4096

typedef struct lat_list { double *v; size_t n, cap; } lat_list;

static int lat_push(lat_list *l, double x) {
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 4096;
        double *p = realloc(l->v, c * sizeof *p);
        if (!p) return -1;
        l->v = p, l->cap = c;
    }
    l->v[l->n++] = x;
    return 0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank quantile of a sorted list */
static double quant(const lat_list *l, double q) {
    if (!l->n) return 0;
    size_t r = (size_t)ceil(q * (double)l->n);
    if (r < 1) r = 1;
    return l->v[r - 1];
}

typedef struct sess {
    int idx;
    struct lws *wsi;
    int open, hello, dead;   /* connected; hello read; closed or failed */
    int in_flight;           /* a frame sent and its output not back yet (as-fast-as-answered mode) */
    int want_send;
    uint32_t seq;
    double next_send;        /* --fps mode: when the next frame is due */
    long got, got_window;    /* outputs received, all and in the window */
    double first_out;        /* when the first output came (0: none yet) */
    double last_out;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    uint8_t *tx;             /* LWS_PRE + the largest frame message: lws masks what it sends in place */
    char why[160];
} sess;

static struct {
    const char *host;
    int port, nsess, quiet;
    double seconds, warmup, fps, first_timeout;
    const char *json_path;
    int width, height; /* from the hello (or --size) */
    int fixed_size;
    sess *s;
    uint8_t *frame_msg[NFRAMES]; /* LWS_PRE + header + JPEG */
    size_t frame_len[NFRAMES];
    int frames_ready;
    /* phases: 0 connecting / waiting for first outputs, 1 warmup, 2 measuring, 3 done */
    int phase;
    double t0, t_warm, t_meas, t_end, t_last_print;
    long win_frames, errors, closes, sent;
    long tick_frames;
    lat_list lat, srv, model, tick_lat;
    volatile sig_atomic_t stop;
} G;

static void logf_(const char *fmt, ...) {
    if (G.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen | ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void error_on(sess *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, sizeof s->why, fmt, ap);
    va_end(ap);
    G.errors++;
    fprintf(stderr, "loadgen | session %d: %s\n", s->idx, s->why);
}

/* A moving test pattern: a diagonal gradient that drifts, a bright square that circles, and bars
 * that scroll, so consecutive frames differ everywhere a little and in one place a lot. */
static void pattern(uint8_t *rgb, int w, int h, int f) {
    double a = 2 * M_PI * f / NFRAMES;
    int cx = (int)(w / 2 + w / 4 * cos(a)), cy = (int)(h / 2 + h / 4 * sin(a)), r = w / 10 + 2;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)((x + 4 * f) * 255 / (w + 4 * NFRAMES));
            p[1] = (uint8_t)((y * 255) / h);
            p[2] = (uint8_t)(((x + y + 8 * f) / 16) % 2 ? 200 : 60);
            if (abs(x - cx) < r && abs(y - cy) < r) p[0] = p[1] = p[2] = 240;
        }
}

static int make_frames(void) {
    int w = G.width, h = G.height;
    tjhandle tj = tjInitCompress();
    uint8_t *rgb = malloc((size_t)w * h * 3);
    if (!tj || !rgb) {
        fprintf(stderr, "loadgen: error: out of memory\n");
        return -1;
    }
    for (int f = 0; f < NFRAMES; f++) {
        pattern(rgb, w, h, f);
        unsigned long cap = tjBufSize(w, h, TJSAMP_420), n = cap;
        G.frame_msg[f] = malloc(LWS_PRE + PROTO_FRAME_HDR + cap);
        if (!G.frame_msg[f]) return -1;
        unsigned char *dst = G.frame_msg[f] + LWS_PRE + PROTO_FRAME_HDR;
        if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &dst, &n, TJSAMP_420, 85, TJFLAG_NOREALLOC)) {
            fprintf(stderr, "loadgen: error: JPEG encoding failed: %s\n", tjGetErrorStr2(tj));
            return -1;
        }
        G.frame_len[f] = PROTO_FRAME_HDR + n;
    }
    tjDestroy(tj);
    free(rgb);
    G.frames_ready = 1;
    logf_("%d frames of %dx%d encoded (%zu bytes each on average)", NFRAMES, w, h, G.frame_len[0]);
    return 0;
}

static int send_frame(sess *s) {
    int f = (int)(s->seq % NFRAMES);
    if (!s->tx) {
        size_t most = 0;
        for (int i = 0; i < NFRAMES; i++) most = G.frame_len[i] > most ? G.frame_len[i] : most;
        if (!(s->tx = malloc(LWS_PRE + most))) {
            error_on(s, "out of memory");
            return -1;
        }
    }
    uint8_t *m = s->tx + LWS_PRE;
    memcpy(m, G.frame_msg[f] + LWS_PRE, G.frame_len[f]);
    proto_put_frame(m, s->seq, mg_now_ms(), G.width, G.height);
    if (lws_write(s->wsi, m, G.frame_len[f], LWS_WRITE_BINARY) < (int)G.frame_len[f]) {
        error_on(s, "write failed");
        return -1;
    }
    s->seq++;
    s->in_flight = 1;
    G.sent++;
    return 0;
}

static int on_hello(sess *s) {
    cJSON *j = cJSON_ParseWithLength((const char *)s->rx, s->rx_len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type)) {
        cJSON_Delete(j);
        error_on(s, "a text message that is not JSON with a type");
        return -1;
    }
    if (!strcmp(type->valuestring, "hello")) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "width"), *h = cJSON_GetObjectItemCaseSensitive(j, "height");
        if (!cJSON_IsNumber(w) || !cJSON_IsNumber(h) || w->valueint < 16 || h->valueint < 16 || w->valueint > 8192 ||
            h->valueint > 8192) {
            cJSON_Delete(j);
            error_on(s, "a hello without a usable width and height");
            return -1;
        }
        if (!G.fixed_size && !G.frames_ready) G.width = w->valueint, G.height = h->valueint;
        s->hello = 1;
    }
    cJSON_Delete(j);
    if (s->hello && !G.frames_ready && make_frames()) return -1;
    return 0;
}

static void on_output(sess *s) {
    const uint8_t *b = s->rx;
    if (s->rx_len < PROTO_OUT_HDR || memcmp(b, "MGO1", 4)) {
        error_on(s, "a binary message that is not an output frame (%zu bytes)", s->rx_len);
        return;
    }
    double now = mg_now_ms(), t;
    float srv, model;
    memcpy(&t, b + 8, 8);
    memcpy(&srv, b + 16, 4);
    memcpy(&model, b + 20, 4);
    s->in_flight = 0;
    s->got++;
    if (!s->first_out) s->first_out = now;
    s->last_out = now;
    G.tick_frames++;
    lat_push(&G.tick_lat, now - t);
    if (G.phase == 2 && t >= G.t_meas) { /* sent inside the window too: no warmup frame counted */
        s->got_window++;
        G.win_frames++;
        lat_push(&G.lat, now - t);
        lat_push(&G.srv, srv);
        lat_push(&G.model, model);
    }
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    sess *s = (sess *)lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (s && !s->dead) {
            s->dead = 1;
            error_on(s, "cannot connect: %s", in ? (const char *)in : "(no reason)");
            s->wsi = NULL;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (s) s->open = 1;
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        if (!s) return -1;
        if (lws_is_first_fragment(wsi)) s->rx_len = 0;
        size_t need = s->rx_len + len + lws_remaining_packet_payload(wsi);
        if (need > s->rx_cap) {
            size_t c = s->rx_cap ? s->rx_cap : 65536;
            while (c < need) c *= 2;
            uint8_t *p = realloc(s->rx, c);
            if (!p) {
                error_on(s, "out of memory");
                return -1;
            }
            s->rx = p, s->rx_cap = c;
        }
        memcpy(s->rx + s->rx_len, in, len);
        s->rx_len += len;
        if (!lws_is_final_fragment(wsi)) return 0;
        if (lws_frame_is_binary(wsi)) on_output(s);
        else if (on_hello(s)) return -1;
        if (G.fps <= 0 || !s->got) lws_callback_on_writable(wsi); /* as fast as answered, or the first frame */
        return 0;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!s || G.phase == 3) return -1;
        if (!s->hello || !G.frames_ready) return 0;
        if (G.fps > 0) {
            double now = mg_now_ms();
            if (s->seq && now < s->next_send) return 0;
            s->next_send = (s->seq ? s->next_send : now) + 1000.0 / G.fps;
            if (s->next_send < now) s->next_send = now; /* fell behind: no burst to catch up */
        } else if (s->in_flight) {
            return 0;
        }
        return send_frame(s) ? -1 : 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (s && len >= 2) {
            const uint8_t *p = in;
            int code = p[0] << 8 | p[1];
            error_on(s, "closed by the server: %d %.*s", code, (int)(len - 2), (const char *)in + 2);
            G.closes++;
            s->dead = 1;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (s) {
            if (!s->dead && G.phase != 3) {
                error_on(s, "connection closed");
                G.closes++;
            }
            s->dead = 1;
            s->wsi = NULL;
        }
        return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"mirage", callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_sig(int sig) { G.stop = sig; }

/* A timer that only makes lws_service return now and then: the main loop paces the --fps
 * sends, changes phase and prints, and must not wait for socket traffic to do so. */
static struct lws_context *g_ctx;
static lws_sorted_usec_list_t g_tick;
static void on_tick(lws_sorted_usec_list_t *sul) {
    lws_sul_schedule(g_ctx, 0, sul, on_tick, (G.fps > 0 ? 1 : 20) * LWS_US_PER_MS);
}

static const char *usage =
    "usage: loadgen --port N [options]\n"
    "Sessions against a running `mirage serve`: each sends JPEG frames of a moving pattern and\n"
    "receives the outputs; prints total served fps, per-session fps, end-to-end latency, errors.\n"
    "  --host ADDR        server address (default 127.0.0.1)\n"
    "  --port N           server port (required)\n"
    "  --sessions N       concurrent sessions (default 1)\n"
    "  --seconds S        the measured window (default 10)\n"
    "  --warmup S         seconds between every session's first output and the window (default 2)\n"
    "  --fps F            frames a second per session (default 0: as fast as the server answers,\n"
    "                     one frame in flight per session)\n"
    "  --size WxH         frame size (default: the server's, from its hello)\n"
    "  --first-timeout S  fail when a session has no first output after S s (default 120)\n"
    "  --json FILE        also write the result as JSON\n"
    "  --quiet            only the result line\n";

static int bad_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "loadgen: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    return 2;
}

static int parse_num(const char *s, double lo, double hi, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= lo && x <= hi)) return -1;
    *v = x;
    return 0;
}

static void lws_log_line(int level, const char *line) {
    (void)level;
    fprintf(stderr, "loadgen | lws: %s", line);
}

static int write_json(const char *path, const char *body) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "loadgen: error: %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    int bad = fputs(body, f) < 0;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        fprintf(stderr, "loadgen: error: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"sessions", 1, 0, 'n'}, {"seconds", 1, 0, 's'},
        {"warmup", 1, 0, 'w'}, {"fps", 1, 0, 'f'}, {"size", 1, 0, 'S'}, {"first-timeout", 1, 0, 't'},
        {"json", 1, 0, 'j'}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    G.host = "127.0.0.1", G.nsess = 1, G.seconds = 10, G.warmup = 2, G.first_timeout = 120;
    double v;
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'H': G.host = optarg; break;
        case 'p':
            if (parse_num(optarg, 1, 65535, &v) || v != floor(v)) return bad_usage("--port: expected 1..65535, found '%s'", optarg);
            G.port = (int)v;
            break;
        case 'n':
            if (parse_num(optarg, 1, MAX_SESSIONS, &v) || v != floor(v))
                return bad_usage("--sessions: expected 1..4096, found '%s'", optarg);
            G.nsess = (int)v;
            break;
        case 's':
            if (parse_num(optarg, 0.1, 86400, &G.seconds)) return bad_usage("--seconds: expected 0.1..86400, found '%s'", optarg);
            break;
        case 'w':
            if (parse_num(optarg, 0, 3600, &G.warmup)) return bad_usage("--warmup: expected 0..3600, found '%s'", optarg);
            break;
        case 'f':
            if (parse_num(optarg, 0, 10000, &G.fps)) return bad_usage("--fps: expected 0..10000, found '%s'", optarg);
            break;
        case 't':
            if (parse_num(optarg, 1, 3600, &G.first_timeout))
                return bad_usage("--first-timeout: expected 1..3600, found '%s'", optarg);
            break;
        case 'S': {
            int w, h;
            char x;
            if (sscanf(optarg, "%d%c%d", &w, &x, &h) != 3 || (x != 'x' && x != 'X') || w < 16 || h < 16 || w > 8192 ||
                h > 8192)
                return bad_usage("--size: expected WxH (16..8192), found '%s'", optarg);
            G.width = w, G.height = h, G.fixed_size = 1;
            break;
        }
        case 'j': G.json_path = optarg; break;
        case 'q': G.quiet = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: return bad_usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return bad_usage("unexpected argument '%s'", argv[optind]);
    if (!G.port) return bad_usage("--port is required%s", "");
    if (G.fixed_size && make_frames()) return 1;

    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR, lws_log_line);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.gid = -1, info.uid = -1;
    info.fd_limit_per_thread = (unsigned)(G.nsess + 64);
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "loadgen: error: cannot create a libwebsockets context\n");
        return 1;
    }
    G.s = calloc((size_t)G.nsess, sizeof *G.s);
    if (!G.s) return 1;
    g_ctx = ctx;
    lws_sul_schedule(ctx, 0, &g_tick, on_tick, LWS_US_PER_MS);
    G.t0 = G.t_last_print = mg_now_ms();
    logf_("%d sessions -> ws://%s:%d/ws | %s | window %.1f s after %.1f s of warmup", G.nsess, G.host, G.port,
          G.fps > 0 ? "at a fixed rate" : "as fast as answered (1 in flight each)", G.seconds, G.warmup);
    for (int i = 0; i < G.nsess; i++) {
        sess *s = &G.s[i];
        s->idx = i;
        struct lws_client_connect_info ci;
        memset(&ci, 0, sizeof ci);
        ci.context = ctx;
        ci.address = G.host;
        ci.port = G.port;
        ci.path = "/ws";
        ci.host = G.host;
        ci.origin = G.host;
        ci.protocol = "mirage";
        ci.opaque_user_data = s;
        ci.pwsi = &s->wsi;
        if (!lws_client_connect_via_info(&ci) && !s->dead) {
            s->dead = 1;
            error_on(s, "cannot start connecting to %s:%d", G.host, G.port);
        }
    }

    int rc = 0;
    while (!G.stop && G.phase != 3) {
        lws_service(ctx, 0);
        double now = mg_now_ms();
        int alive = 0, served = 0;
        for (int i = 0; i < G.nsess; i++) {
            sess *s = &G.s[i];
            if (s->dead) continue;
            alive++;
            if (s->got) served++;
            if (G.fps > 0 && s->wsi && s->hello && now >= s->next_send) lws_callback_on_writable(s->wsi);
        }
        if (!alive) {
            fprintf(stderr, "loadgen: error: no session is left (%ld errors)\n", G.errors);
            rc = 1;
            break;
        }
        if (G.phase == 0 && served == G.nsess) {
            G.phase = 1, G.t_warm = now;
            logf_("every session served (first outputs after %.1f s); warming up %.1f s", (now - G.t0) / 1000, G.warmup);
        } else if (G.phase == 0 && now - G.t0 > G.first_timeout * 1000) {
            fprintf(stderr, "loadgen: error: %d of %d sessions had no output after %.0f s\n", G.nsess - served, G.nsess,
                    G.first_timeout);
            rc = 1;
            break;
        }
        if (G.phase == 1 && now - G.t_warm >= G.warmup * 1000) G.phase = 2, G.t_meas = now;
        if (G.phase == 2 && now - G.t_meas >= G.seconds * 1000) G.phase = 3, G.t_end = now;
        if (now - G.t_last_print >= 1000) {
            qsort(G.tick_lat.v, G.tick_lat.n, sizeof(double), cmp_d);
            logf_("%5.1f s | %s | %d sessions | %.1f frames/s | latency %.1f ms p50 | %.1f ms p99 | errors %ld",
                  (now - G.t0) / 1000, G.phase == 0 ? "starting" : G.phase == 1 ? "warmup" : "measuring", alive,
                  G.tick_frames * 1000.0 / (now - G.t_last_print), quant(&G.tick_lat, 0.5), quant(&G.tick_lat, 0.99),
                  G.errors);
            G.tick_frames = 0, G.tick_lat.n = 0, G.t_last_print = now;
        }
    }
    if (G.stop) {
        fprintf(stderr, "loadgen: error: interrupted\n");
        rc = 1;
    }
    /* close every session: a normal close, then service until the sockets are gone (bounded) */
    G.phase = 3;
    for (int i = 0; i < G.nsess; i++)
        if (G.s[i].wsi) {
            lws_close_reason(G.s[i].wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"done", 4);
            lws_callback_on_writable(G.s[i].wsi);
        }
    double t_close = mg_now_ms();
    for (;;) {
        int left = 0;
        for (int i = 0; i < G.nsess; i++) left += G.s[i].wsi != NULL;
        if (!left || mg_now_ms() - t_close > 3000) break;
        lws_service(ctx, 0);
    }
    lws_sul_cancel(&g_tick);
    lws_context_destroy(ctx);

    double win = G.t_end > G.t_meas ? (G.t_end - G.t_meas) / 1000 : 0;
    double mn = 1e30, mx = 0, sum = 0;
    int starved = 0;
    for (int i = 0; i < G.nsess; i++) {
        double f = win > 0 ? G.s[i].got_window / win : 0;
        mn = f < mn ? f : mn, mx = f > mx ? f : mx, sum += f;
        if (!G.s[i].got_window) starved++;
    }
    if (!G.nsess) mn = 0;
    qsort(G.lat.v, G.lat.n, sizeof(double), cmp_d);
    qsort(G.srv.v, G.srv.n, sizeof(double), cmp_d);
    qsort(G.model.v, G.model.n, sizeof(double), cmp_d);
    double fps = win > 0 ? G.win_frames / win : 0;
    if (!rc && (G.errors || starved)) rc = 1;
    printf("loadgen | result | %d sessions %dx%d | %ld frames in %.2f s | %.1f frames/s total | per session %.1f fps "
           "(min %.1f, max %.1f) | latency %.1f ms p50 | %.1f ms p99 | server %.1f ms p50 | model %.1f ms p50 | "
           "errors %ld | sessions without output %d\n",
           G.nsess, G.width, G.height, G.win_frames, win, fps, G.nsess ? sum / G.nsess : 0, mn, mx, quant(&G.lat, 0.5),
           quant(&G.lat, 0.99), quant(&G.srv, 0.5), quant(&G.model, 0.5), G.errors, starved);
    if (G.json_path) {
        char body[2048];
        snprintf(body, sizeof body,
                 "{\"sessions\":%d,\"width\":%d,\"height\":%d,\"target_fps\":%g,\"seconds\":%.3f,\"frames\":%ld,"
                 "\"fps\":%.2f,\"per_session_fps\":{\"mean\":%.2f,\"min\":%.2f,\"max\":%.2f},"
                 "\"latency_ms\":{\"p50\":%.2f,\"p99\":%.2f},\"server_ms\":{\"p50\":%.2f,\"p99\":%.2f},"
                 "\"model_ms\":{\"p50\":%.2f,\"p99\":%.2f},\"errors\":%ld,\"closed\":%ld,\"starved\":%d,\"sent\":%ld}\n",
                 G.nsess, G.width, G.height, G.fps, win, G.win_frames, fps, G.nsess ? sum / G.nsess : 0, mn, mx,
                 quant(&G.lat, 0.5), quant(&G.lat, 0.99), quant(&G.srv, 0.5), quant(&G.srv, 0.99), quant(&G.model, 0.5),
                 quant(&G.model, 0.99), G.errors, G.closes, starved, G.sent);
        if (write_json(G.json_path, body)) rc = 1;
    }
    for (int i = 0; i < G.nsess; i++) free(G.s[i].rx), free(G.s[i].tx);
    for (int f = 0; f < NFRAMES; f++) free(G.frame_msg[f]);
    free(G.s), free(G.lat.v), free(G.srv.v), free(G.model.v), free(G.tick_lat.v);
    return rc;
}
