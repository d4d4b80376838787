/* The real-time run loop (see loop.h): capture thread, model on this thread, writer thread. */
#include "cli/loop.h"

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal flag must be a lock-free atomic");

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/slot.h"
#include "cli/stats.h"
#include "core/timing.h"
#include "eval/degrade.h"
#include "model/stream.h"

/* Frames in flight at most: one being read, one in each slot, two in the model (submitted
 * and not yet collected), one being written. A pool of this many means the capture thread
 * always finds a free frame. */
#define POOL 6
#define WAIT_MS 100 /* how often blocked threads look at the stop flags */

typedef struct frame {
    uint8_t *in;     /* (H, W, 3) the input at the model size */
    uint8_t *out;    /* (H, OW, 3) what is written: the model output, or input | output */
    int64_t pts;     /* source time base */
    double t_enter;  /* ms, mg_now_ms clock */
    double decode_ms, convert_ms, model_ms;
    double t_model;  /* ms, when it was submitted to the model */
    int prompt;      /* the prompt row it was made with */
} frame;

enum { STOP_NONE = 0, STOP_SIGNAL, STOP_QUIT, STOP_ERROR };

typedef struct loop {
    const loop_opts *o;
    const mg_model *m;
    mg_stream *st;
    source *src;
    sink *snk;
    int W, H, OW, realtime, paced;

    frame frames[POOL];
    frame *free_list[POOL];
    int nfree;
    pthread_mutex_t pool_mu;
    uint8_t *model_out; /* (H, W, 3) the model's frame before side-by-side composition */

    slot in_q, out_q;
    atomic_int stop_req;    /* STOP_*: someone asked everything to wind down */
    atomic_int cap_done, wr_done, cmd_done, finished;
    atomic_long dropped;
    atomic_int req_prompt;  /* prompt row asked for (-1: none) */
    atomic_int req_next;    /* "next prompt" requests not yet applied */

    /* written by one thread each, read after it is joined */
    long frames_read;
    char cap_err[1024], model_err[1024], wr_err[1024], close_err[1024];
    int cap_failed, model_failed, wr_failed, close_failed;
    int keeps_earlier; /* the sink's, read before it is closed */
    long frames_out;
    lat_stats lat, model_ms, decode_ms, convert_ms, out_convert_ms, encode_ms; /* owned by the writer */
    double t_start;
} loop;

/* Set by SIGINT/SIGTERM, read by every thread: a lock-free atomic, which C11 allows in a handler. */
static atomic_int g_signal;
static void on_stop_signal(int sig) {
    int e = errno;
    atomic_store(&g_signal, sig);
    errno = e;
}
static void on_kick(int sig) { (void)sig; } /* only here to make a blocked read return EINTR */

static void sleep_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000.0 * (long)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

static void block_signals(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static frame *pool_get(loop *L) {
    pthread_mutex_lock(&L->pool_mu);
    frame *f = L->nfree ? L->free_list[--L->nfree] : NULL;
    pthread_mutex_unlock(&L->pool_mu);
    return f;
}

static void pool_put(loop *L, frame *f) {
    if (!f) return;
    pthread_mutex_lock(&L->pool_mu);
    L->free_list[L->nfree++] = f;
    pthread_mutex_unlock(&L->pool_mu);
}

static void request_stop(loop *L, int why) {
    int none = STOP_NONE;
    atomic_compare_exchange_strong(&L->stop_req, &none, why);
    if (L->o->abort_flag) atomic_store(L->o->abort_flag, 1); /* a blocked FFmpeg read gives up */
}

static int stopping(loop *L) { return atomic_load(&L->stop_req) != STOP_NONE || atomic_load(&g_signal); }

/* ---- capture ----------------------------------------------------------------------------- */

static void *capture_main(void *arg) {
    loop *L = arg;
    source *src = L->src;
    double t0 = 0;
    const double tick_ms = 1000.0 * src->tb_num / src->tb_den;
    while (!stopping(L) && (L->o->max_frames < 0 || L->frames_read < L->o->max_frames)) {
        frame *f = pool_get(L);
        if (!f) { /* cannot happen with POOL frames; say so rather than spin */
            snprintf(L->cap_err, sizeof L->cap_err, "internal: the frame pool ran dry");
            L->cap_failed = 1;
            break;
        }
        source_frame sf;
        mg_status s = source_read(src, f->in, &sf);
        if (s != MG_OK) {
            pool_put(L, f);
            if (s != MG_ERR_EOF && !stopping(L)) {
                snprintf(L->cap_err, sizeof L->cap_err, "%s", mg_last_error()[0] ? mg_last_error() : mg_strerror(s));
                L->cap_failed = 1;
            }
            break;
        }
        double now = mg_now_ms();
        if (sf.size_changed && !L->o->quiet)
            fprintf(stderr, "mirage run | note: %s changed resolution to %dx%d at frame %ld: rescaling it into %dx%d (%s)\n",
                    src->name, src->in_width, src->in_height, L->frames_read, L->W, L->H, fit_name(src->fit));
        if (L->frames_read == 0) t0 = now;
        f->t_enter = now - sf.decode_ms - sf.convert_ms; /* when its decoding began */
        if (L->paced) { /* hold the frame until its presentation time; it enters then */
            double due = t0 + (double)sf.pts * tick_ms;
            while (!stopping(L) && mg_now_ms() < due) sleep_ms(due - mg_now_ms() > 50 ? 50 : due - mg_now_ms());
            if (f->t_enter < due) f->t_enter = due; /* a late frame enters when it was ready */
        }
        f->pts = sf.pts;
        f->decode_ms = sf.decode_ms;
        f->convert_ms = sf.convert_ms;
        L->frames_read++;
        slot_result r;
        void *old = NULL;
        while ((r = slot_put(&L->in_q, f, L->realtime, &old, WAIT_MS)) == SLOT_TIMEOUT && !stopping(L)) {}
        if (old) {
            pool_put(L, old);
            atomic_fetch_add(&L->dropped, 1);
        }
        if (r != SLOT_OK) {
            pool_put(L, f);
            break;
        }
    }
    slot_close(&L->in_q);
    atomic_store(&L->cap_done, 1);
    return NULL;
}

/* ---- writer ------------------------------------------------------------------------------ */

static void handle_event(loop *L, sink_event ev, int arg) {
    if (ev == SINK_EV_QUIT) request_stop(L, STOP_QUIT);
    else if (ev == SINK_EV_PROMPT) atomic_store(&L->req_prompt, arg);
    else if (ev == SINK_EV_NEXT_PROMPT) atomic_fetch_add(&L->req_next, 1);
}

static void poll_sink(loop *L) {
    sink_event ev;
    int arg = 0;
    while ((ev = sink_poll(L->snk, &arg)) != SINK_EV_NONE) handle_event(L, ev, arg);
}

static void *writer_main(void *arg) {
    loop *L = arg;
    block_signals(); /* a signal must not cut a write short */
    double t_report = mg_now_ms();
    long n_report = 0;
    for (;;) {
        poll_sink(L);
        void *it;
        slot_result r = slot_take(&L->out_q, &it, WAIT_MS);
        if (r == SLOT_TIMEOUT) continue;
        if (r != SLOT_OK) break;
        frame *f = it;
        double now = mg_now_ms(), secs = (now - L->t_start) / 1000.0;
        sink_overlay ov = {L->frames_out, secs > 0 ? L->frames_out / secs : 0, now - f->t_enter,
                           atomic_load(&L->dropped), mg_model_prompt_name(L->m, f->prompt)};
        mg_status s = sink_write(L->snk, f->out, f->pts, &ov);
        double t_done = mg_now_ms();
        if (s != MG_OK) {
            snprintf(L->wr_err, sizeof L->wr_err, "%s", mg_last_error()[0] ? mg_last_error() : mg_strerror(s));
            L->wr_failed = 1;
            pool_put(L, f);
            request_stop(L, STOP_ERROR);
            slot_cancel(&L->out_q); /* the model thread may be waiting to hand over */
            slot_cancel(&L->in_q);
            break;
        }
        lat_add(&L->lat, t_done - f->t_enter);
        lat_add(&L->model_ms, f->model_ms);
        lat_add(&L->decode_ms, f->decode_ms);
        lat_add(&L->convert_ms, f->convert_ms);
        lat_add(&L->out_convert_ms, L->snk->convert_ms);
        lat_add(&L->encode_ms, L->snk->encode_ms);
        L->frames_out++;
        pool_put(L, f);
        if (!L->o->quiet && t_done - t_report >= 1000) {
            fprintf(stderr, "frame %ld | %.1f ms p50 | %.1f ms p99 | %.2f fps | %ld dropped | model %.1f ms\n",
                    L->frames_out, lat_quantile(&L->lat, 0.5), lat_quantile(&L->lat, 0.99),
                    (L->frames_out - n_report) * 1000.0 / (t_done - t_report), atomic_load(&L->dropped),
                    lat_quantile(&L->model_ms, 0.5));
            t_report = t_done;
            n_report = L->frames_out;
        }
    }
    /* finalise on this thread: a window's resources belong to the thread that made them */
    L->keeps_earlier = L->snk->keeps_earlier;
    mg_status s = sink_close(L->snk);
    L->snk = NULL;
    if (s != MG_OK) {
        snprintf(L->close_err, sizeof L->close_err, "%s", mg_last_error()[0] ? mg_last_error() : mg_strerror(s));
        L->close_failed = 1;
    }
    atomic_store(&L->wr_done, 1);
    return NULL;
}

/* ---- commands on stdin -------------------------------------------------------------------- */

static void run_command(loop *L, char *line) {
    char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r')) p[--n] = 0;
    if (!*p) return;
    int np = mg_model_prompt_count(L->m);
    if (!strncmp(p, "prompt ", 7)) {
        const char *name = p + 7;
        while (*name == ' ') name++;
        for (int i = 0; i < np; i++)
            if (!strcmp(name, mg_model_prompt_name(L->m, i))) {
                atomic_store(&L->req_prompt, i);
                return;
            }
        char known[512] = "";
        for (int i = 0; i < np; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", mg_model_prompt_name(L->m, i));
        fprintf(stderr, "mirage run | unknown prompt '%s' (this model knows: %s)\n", name, known);
    } else if (!strcmp(p, "next")) {
        atomic_fetch_add(&L->req_next, 1);
    } else if (!strcmp(p, "quit") || !strcmp(p, "stop")) {
        request_stop(L, STOP_QUIT);
    } else {
        fprintf(stderr, "mirage run | unknown command '%s' (commands: prompt NAME, next, quit)\n", p);
    }
}

static void *commands_main(void *arg) {
    loop *L = arg;
    block_signals();
    char line[512];
    size_t len = 0;
    while (!atomic_load(&L->finished)) {
        struct pollfd pfd = {0, POLLIN, 0};
        int r = poll(&pfd, 1, WAIT_MS);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 || (pfd.revents & POLLNVAL)) break;
        if (r == 0) continue;
        char buf[256];
        ssize_t k = read(0, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break; /* stdin closed: no more commands, the stream goes on */
        for (ssize_t i = 0; i < k; i++) {
            if (buf[i] == '\n') {
                line[len] = 0;
                run_command(L, line);
                len = 0;
            } else if (len + 1 < sizeof line) {
                line[len++] = buf[i];
            }
        }
    }
    atomic_store(&L->cmd_done, 1);
    return NULL;
}

/* ---- the model (this thread) --------------------------------------------------------------- */

static void apply_prompt_requests(loop *L, int *cur, long frame) {
    int want = atomic_exchange(&L->req_prompt, -1);
    int next = atomic_exchange(&L->req_next, 0);
    int np = mg_model_prompt_count(L->m);
    if (want < 0 && !next) return;
    int to = *cur;
    if (want >= 0) {
        if (want >= np) {
            fprintf(stderr, "mirage run | no prompt row %d (this model has %d: 0..%d)\n", want, np, np - 1);
            if (!next) return;
        } else {
            to = want;
        }
    }
    for (int i = 0; i < next; i++) to = np > 1 ? 1 + to % (np - 1) : 0; /* cycles 1..np-1: row 0 is "none" */
    if (to == *cur) return;
    const char *from = mg_model_prompt_name(L->m, *cur), *name = mg_model_prompt_name(L->m, to);
    if (mg_stream_set_prompt(L->st, name) != MG_OK) {
        fprintf(stderr, "mirage run | cannot switch to prompt %s: %s\n", name, mg_last_error());
        return;
    }
    if (L->o->reset_on_switch) mg_stream_reset(L->st);
    if (!L->o->quiet)
        fprintf(stderr, "mirage run | frame %ld: prompt %s -> %s (%s)\n", frame, from, name,
                L->o->reset_on_switch ? "history reset" : "history kept");
    *cur = to;
}

static int prompt_row(const mg_model *m, const char *name) {
    for (int i = 0; i < mg_model_prompt_count(m); i++)
        if (!strcmp(name, mg_model_prompt_name(m, i))) return i;
    return 0;
}

/* Collects the oldest frame in the model (fl[0], *nfl of them) and hands it to the writer.
 * 0 when the loop must stop (the model failed, or the writer is gone). */
static int model_finish(loop *L, frame **fl, int *nfl) {
    frame *f = fl[0];
    fl[0] = fl[1], (*nfl)--;
    mg_status s = mg_stream_collect(L->st, L->o->side_by_side ? L->model_out : f->out);
    if (L->o->debug_delay_ms > 0) sleep_ms(L->o->debug_delay_ms);
    f->model_ms = mg_now_ms() - f->t_model;
    if (s != MG_OK) {
        if (!L->model_failed) {
            snprintf(L->model_err, sizeof L->model_err, "%s", mg_last_error()[0] ? mg_last_error() : mg_strerror(s));
            L->model_failed = 1;
        }
        pool_put(L, f);
        request_stop(L, STOP_ERROR);
        return 0;
    }
    if (L->o->side_by_side) {
        size_t row = (size_t)L->W * 3;
        for (int y = 0; y < L->H; y++) {
            memcpy(f->out + (size_t)y * 2 * row, f->in + (size_t)y * row, row);
            memcpy(f->out + (size_t)y * 2 * row + row, L->model_out + (size_t)y * row, row);
        }
    }
    slot_result r;
    while ((r = slot_put(&L->out_q, f, 0, NULL, WAIT_MS)) == SLOT_TIMEOUT) {}
    if (r != SLOT_OK) {
        pool_put(L, f);
        return 0;
    }
    return 1;
}

/* Frames go through the model pipelined (mg_stream_submit / collect): while one is in the
 * model, the next is submitted if it is already waiting, so that its upload and the last one's
 * download and hand-over overlap the GPU's work; when none is waiting the one in the model is
 * collected at once, so a source slower than the model gets no added latency. The CPU
 * computes a frame at its submit, so there nothing overlaps: one frame at a time. */
static void model_loop(loop *L) {
    int cur = prompt_row(L->m, mg_stream_prompt(L->st));
    long n = 0; /* frames through the model */
    frame *fl[2] = {NULL, NULL};
    int nfl = 0, ok = 1, depth = stream_cuda(L->st) ? 2 : 1;
    for (;;) {
        if (atomic_load(&g_signal)) request_stop(L, STOP_SIGNAL);
        if (atomic_load(&L->stop_req) != STOP_NONE) break;
        void *it;
        slot_result r = slot_take(&L->in_q, &it, nfl ? 0 : WAIT_MS);
        if (r == SLOT_TIMEOUT) {
            if (nfl && !(ok = model_finish(L, fl, &nfl))) break;
            continue;
        }
        if (r != SLOT_OK) break;
        frame *f = it;
        apply_prompt_requests(L, &cur, n++);
        if (L->o->degrade) { /* the model sees, and the side-by-side shows, the degraded frame */
            const char *pname = mg_stream_prompt(L->st);
            if (degrade_known(pname)) degrade_apply(pname, f->in, f->in, L->W, L->H, (uint64_t)n);
        }
        f->t_model = mg_now_ms();
        f->prompt = cur;
        mg_status s = mg_stream_submit(L->st, f->in);
        if (s != MG_OK) {
            snprintf(L->model_err, sizeof L->model_err, "%s", mg_last_error()[0] ? mg_last_error() : mg_strerror(s));
            L->model_failed = 1;
            pool_put(L, f);
            request_stop(L, STOP_ERROR);
            ok = 0;
            break;
        }
        fl[nfl++] = f;
        if (nfl == depth && !(ok = model_finish(L, fl, &nfl))) break;
    }
    /* the frames already in the model are finished and written (unless the writer is gone) */
    while (nfl) {
        if (ok) ok = model_finish(L, fl, &nfl);
        else pool_put(L, fl[0]), fl[0] = fl[1], nfl--;
    }
    /* stopping early: what waits at the input is not processed */
    if (atomic_load(&L->stop_req) != STOP_NONE) {
        slot_cancel(&L->in_q);
        pool_put(L, slot_steal(&L->in_q));
    }
    slot_close(&L->out_q); /* the writer writes what is queued, then finishes */
}

/* Joins t, kicking it with SIGUSR1 while it is not done (a blocked read returns EINTR). */
static void join_kicking(pthread_t t, atomic_int *done, int kick) {
    while (!atomic_load(done)) {
        if (kick) pthread_kill(t, SIGUSR1);
        sleep_ms(20);
    }
    pthread_join(t, NULL);
}

static double mean_ms(const lat_stats *s) { return s->n ? s->sum_ms / s->n : 0; }

int loop_run(const mg_model *m, mg_stream *st, source *src, sink *snk, const loop_opts *o) {
    loop *L = calloc(1, sizeof *L);
    if (!L) {
        sink_close(snk);
        return cli_fail("out of memory");
    }
    L->o = o, L->m = m, L->st = st, L->src = src, L->snk = snk;
    L->W = src->width, L->H = src->height, L->OW = o->side_by_side ? 2 * src->width : src->width;
    L->realtime = o->realtime || src->live;
    L->paced = L->realtime && !src->live;
    atomic_init(&L->req_prompt, -1);
    size_t in_b = (size_t)L->W * L->H * 3, out_b = (size_t)L->OW * L->H * 3;
    int ok = pthread_mutex_init(&L->pool_mu, NULL) == 0;
    int q1 = ok && slot_init(&L->in_q) == 0, q2 = q1 && slot_init(&L->out_q) == 0;
    ok = q2;
    for (int i = 0; ok && i < POOL; i++) {
        L->frames[i].in = malloc(in_b + SOURCE_RGB_PAD);
        L->frames[i].out = malloc(out_b + SINK_RGB_PAD);
        ok = L->frames[i].in && L->frames[i].out;
        L->free_list[L->nfree++] = &L->frames[i];
    }
    if (ok && o->side_by_side) ok = (L->model_out = malloc(in_b)) != NULL;
    int rc = EXIT_OK;
    if (!ok) {
        rc = cli_fail("out of memory for %d frames of %dx%d", POOL, L->OW, L->H);
        sink_close(snk);
        goto out;
    }

    /* signals: the first SIGINT/SIGTERM stops cleanly, a second one ends the process */
    struct sigaction sa, old_int, old_term, old_usr1;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND; /* no SA_RESTART: a blocked read returns EINTR */
    atomic_store(&g_signal, 0);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sa.sa_handler = on_kick;
    sa.sa_flags = 0;
    sigaction(SIGUSR1, &sa, &old_usr1);
    signal(SIGPIPE, SIG_IGN); /* a closed reader shows up as EPIPE on write */

    L->t_start = mg_now_ms();
    pthread_t cap, wr, cmd;
    int have_cmd = 0;
    if (pthread_create(&wr, NULL, writer_main, L)) {
        rc = cli_fail("cannot start the writer thread");
        sink_close(snk);
        goto restore;
    }
    if (pthread_create(&cap, NULL, capture_main, L)) {
        rc = cli_fail("cannot start the capture thread");
        slot_close(&L->out_q);
        join_kicking(wr, &L->wr_done, 0);
        goto restore;
    }
    if (o->stdin_commands) have_cmd = pthread_create(&cmd, NULL, commands_main, L) == 0;

    model_loop(L);

    join_kicking(cap, &L->cap_done, 1);
    join_kicking(wr, &L->wr_done, 0);
    atomic_store(&L->finished, 1);
    if (have_cmd) join_kicking(cmd, &L->cmd_done, 0);

    int why = atomic_load(&L->stop_req);
    long dropped = atomic_load(&L->dropped);
    if (L->model_failed) rc = cli_fail("%s", L->model_err);
    if (L->cap_failed) rc = cli_fail("%s", L->cap_err);
    if (L->wr_failed) rc = cli_fail("%s", L->wr_err);
    if (L->close_failed && !L->wr_failed) rc = cli_fail("%s", L->close_err); /* else it repeats the write's */
    if (!o->quiet) {
        if (why == STOP_SIGNAL) fprintf(stderr, "mirage run | interrupted: the output is finalised\n");
        if (why == STOP_QUIT) fprintf(stderr, "mirage run | stopped on request: the output is finalised\n");
        if (rc != EXIT_OK && L->frames_out > 0 && strcmp(o->output, "null") && strcmp(o->output, "window")) {
            if (L->keeps_earlier && (L->wr_failed || L->close_failed)) { /* see sink_partial_path */
                char kept[4200];
                sink_partial_path(kept, sizeof kept, o->output);
                fprintf(stderr, "mirage run | %s, the earlier file, is left as it was; the new output is kept, finalised, "
                                "in %s: it plays up to the last frame that reached it (%ld frames were written)\n",
                        o->output, kept, L->frames_out);
            } else {
                fprintf(stderr, "mirage run | %s is kept, finalised: it plays up to the last frame that reached it "
                                "(%ld frames were written)\n", o->output, L->frames_out);
            }
        }
        double secs = (mg_now_ms() - L->t_start) / 1000.0;
        fprintf(stderr, "done | %ld frames in %.1f s | %.2f fps | %.1f ms p50 | %.1f ms p99 | %ld dropped | %s\n",
                L->frames_out, secs, secs > 0 ? L->frames_out / secs : 0.0, lat_quantile(&L->lat, 0.5),
                lat_quantile(&L->lat, 0.99), dropped, o->output);
        fprintf(stderr, "stages | ms per frame, mean (p50): decode %.2f (%.2f) | convert %.2f (%.2f) | model %.2f (%.2f) "
                        "| convert-out %.2f (%.2f) | encode %.2f (%.2f) | read %ld\n",
                mean_ms(&L->decode_ms), lat_quantile(&L->decode_ms, 0.5), mean_ms(&L->convert_ms),
                lat_quantile(&L->convert_ms, 0.5), mean_ms(&L->model_ms), lat_quantile(&L->model_ms, 0.5),
                mean_ms(&L->out_convert_ms), lat_quantile(&L->out_convert_ms, 0.5), mean_ms(&L->encode_ms),
                lat_quantile(&L->encode_ms, 0.5), L->frames_read);
    }
restore:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGUSR1, &old_usr1, NULL);
out:
    for (int i = 0; i < POOL; i++) free(L->frames[i].in), free(L->frames[i].out);
    free(L->model_out);
    if (q2) slot_destroy(&L->out_q);
    if (q1) slot_destroy(&L->in_q);
    pthread_mutex_destroy(&L->pool_mu);
    free(L);
    return rc;
}
