/* mirage serve: the browser demo. An HTTP + WebSocket server (libwebsockets) that serves one page
 * (web/) and streams frames both ways: the page sends camera frames as JPEG, each session runs its
 * own mg_stream on the one shared model, and the transformed frames go back as JPEG with the
 * page's timestamp echoed so the page measures end-to-end latency itself.
 *
 *   lws service thread  receive -> [session's one-frame slot] -> worker pool -> [session's out slot] -> send
 *
 * Every session holds at most one waiting input and one waiting output: a new frame replaces the
 * waiting one (counted as dropped), so latency never builds and a slow reader costs no memory.
 * Workers (bounded by cores) take the sessions that have a frame waiting, oldest first; a session
 * is on one worker at a time, so its stream needs no lock. The wire protocol, the limits and what
 * each close code means are in docs/SERVE.md. */
#ifndef MG_SERVE_SERVE_H
#define MG_SERVE_SERVE_H

#include <stdatomic.h>
#include <stddef.h>

#include "mirage.h"

typedef struct serve_limits {
    size_t max_message;        /* bytes in one WebSocket message (a frame's header + JPEG) */
    int max_frame_w, max_frame_h; /* largest frame a client may send */
    int max_fps;               /* messages a second a session may send (1 s burst) */
    int idle_timeout_s;        /* close a session that sent nothing for this long */
    int message_timeout_s;     /* close a session whose message takes longer than this to arrive */
    int handshake_timeout_s;   /* lws: a connection that does not finish its HTTP/WS handshake */
    int send_buffer;           /* SO_SNDBUF of a session's socket (0: the kernel's, autotuned) */
} serve_limits;

#define SERVE_MAX_GPUS 64
#define SERVE_GPUS_ALL (-1)
#define SERVE_CUDA_WORKERS 4 /* threads per GPU by default (at most the cores per GPU): while some
                                decode/encode JPEG, others' frames are on the card (docs/RESULTS.md) */

typedef struct serve_opts {
    const char *host;          /* interface address to listen on (127.0.0.1) */
    int port;                  /* 0: any free port (printed) */
    int max_sessions;          /* WebSocket sessions at once; one more gets "server full" */
    int workers;               /* model threads (0: the number of cores, at most max_sessions);
                                  with --device cuda, threads per GPU (0: SERVE_CUDA_WORKERS) */
    int width, height;         /* the size every session runs at */
    int steps, max_steps;      /* a new session's steps, and the most a page may ask for */
    const char *prompt;        /* a new session's prompt (NULL: the model's first) */
    mg_device device;
    int gpus[SERVE_MAX_GPUS];  /* --device cuda: the GPUs sessions are placed on */
    int ngpus;                 /* 0: GPU 0 only; SERVE_GPUS_ALL: every GPU the machine has */
    int quiet;                 /* no status lines */
    const char *web_dir;       /* the page's directory (NULL: found next to the binary) */
    const char *port_file;     /* write the bound port here once listening (tests) */
    serve_limits lim;
    atomic_int *stop;          /* set non-zero (a signal) to shut down */
} serve_opts;

void serve_opts_default(serve_opts *o);

/* --gpus LIST: "all", or GPU ids separated by commas ("0,1"), each 0..SERVE_MAX_GPUS-1, no repeats.
 * 0 with o->gpus / o->ngpus set, else -1 with the reason in why. Whether the ids exist is
 * checked by serve_run (it needs the driver). */
int serve_parse_gpus(const char *list, serve_opts *o, char *why, size_t why_n);

/* Runs the server until *o->stop. MG_ERR_UNSUPPORTED when this build has no libwebsockets or
 * no libjpeg-turbo, or (--device cuda) no CUDA backend, no GPU, or a GPU id the machine does not
 * have; MG_ERR_IO when the port cannot be bound or the page cannot be found. With --device cuda
 * the weights are uploaded to every GPU of o->gpus before listening (one copy per GPU, shared by
 * the sessions placed there), and each new session goes to the GPU with the fewest sessions
 * (tie: the shorter recent model time). */
mg_status serve_run(const mg_model *m, const serve_opts *o);

/* The page's directory: o->web_dir if given, else web/ beside the binary's directory
 * (build/mirage -> web/), else ./web. MG_ERR_IO with the places tried when none has index.html. */
mg_status serve_find_web(const char *given, char *out, size_t n);

#endif
