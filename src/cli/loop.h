/* The real-time run loop: three threads joined by one-slot queues (src/cli/slot.h).
 *
 *   capture thread   source_read -> [in slot] -> model (this thread) -> [out slot] -> writer thread
 *
 * With a live source (a camera), or with --realtime for anything else (paced by its
 * timestamps), the source's clock rules: when the model is still busy, a new frame replaces
 * the one waiting in the in slot and the replaced frame is counted as dropped, so latency never
 * builds up. Otherwise every frame is processed (the capture thread waits for the slot).
 * A small thread reads commands from stdin (`prompt NAME`, `next`, `quit`) when the input is
 * not stdin; the window sink's keys do the same. Frames live in a pool allocated at start:
 * nothing is allocated per frame. Every thread can always be joined: waits are timed or
 * cancellable, blocked reads are interrupted (FFmpeg's interrupt callback, SIGUSR1 for stdin).
 *
 * Latency is measured per frame from the moment it entered (the source had it in hand: for a
 * paced file, its due time; otherwise when its decoding began) to the moment the sink accepted
 * its output (the write returned). */
#ifndef MG_CLI_LOOP_H
#define MG_CLI_LOOP_H

#include <stdatomic.h>

#include "io/sink.h"
#include "io/source.h"
#include "mirage.h"

typedef struct loop_opts {
    int realtime;        /* pace by the source's timestamps and drop when behind (live sources: always) */
    long max_frames;     /* stop after this many input frames (< 0: the whole input) */
    int side_by_side;    /* output = input | model output, 2W wide */
    int degrade;         /* apply the prompt's input degradation (eval/degrade.h) to each frame
                          * first: shows a task on real footage (colorize sees grey, ...) */
    int debug_delay_ms;  /* sleep this long in the model stage (tests: a deliberately slow model) */
    int quiet;           /* no status lines, no summary */
    int stdin_commands;  /* read commands from stdin */
    int reset_on_switch; /* forget the history when the prompt changes (see docs/DECISIONS.md) */
    const char *output;  /* the output's name, for the summary */
    atomic_int *abort_flag; /* the source's (source_opts.abort_flag): set when stopping */
} loop_opts;

/* Runs the stream until the input ends, max_frames, a signal (SIGINT/SIGTERM: the output is
 * finalised; a second one ends the process at once), a quit key/command, or a failure. Takes
 * ownership of snk and closes (finalises) it. Prints the status lines and the summary; returns
 * an exit code (EXIT_OK, EXIT_FAIL) with every failure reported as "mirage: error: ...". */
int loop_run(const mg_model *m, mg_stream *st, source *src, sink *snk, const loop_opts *o);

#endif
