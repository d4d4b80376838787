/* mirage run: read frames from a source, transform each with the model, write them to a sink.
 * This file parses options, opens the three ends (source, model, sink) and hands them to the
 * real-time loop (src/cli/loop.c). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "cli/loop.h"
#include "io/fit.h"
#include "io/sink.h"
#include "io/source.h"

/* The longest side of the frame size chosen for a file or camera when --size is absent: the
 * CPU engine's cost grows with the pixel count, and 512 keeps a 16:9 clip at 512x288. */
#define AUTO_MAX_SIDE 512

static const char *help =
    "usage: mirage run --model FILE --input SRC --output DST [options]\n\n"
    "Transforms a stream frame by frame, conditioned on the input, the prompt and its own past.\n"
    "  --model FILE        weights (.safetensors); --config NAME instead uses fresh random weights\n"
    "  --input SRC         testsrc (a built-in moving scene), FILE.y4m, - (y4m on stdin),\n"
    "                      v4l2:/dev/videoN (a camera), or any file/URL FFmpeg reads (FILE.mp4,\n"
    "                      pipe:0 for any format on stdin, ...)\n"
    "  --output DST        FILE.mp4 or FILE.mkv (H.264, the source's timing), FILE.y4m,\n"
    "                      - (y4m on stdout), window (a preview) or null\n"
    "  --prompt P          what to do (see `mirage info MODEL`); default: the model's first\n"
    "  --steps N           denoising steps per frame (default 2)\n"
    "  --size WxH          frame size, multiples of 16 (default: the input's, scaled to a longest\n"
    "                      side of 512 and rounded down to multiples of 16; testsrc 256x256)\n"
    "  --fit MODE          how the input fills that size: crop (default), pad or stretch\n"
    "  --frames N          stop after N input frames (default: the whole input; testsrc 100)\n"
    "  --realtime          the source's clock rules: files are paced by their timestamps, and a\n"
    "                      frame that arrives while the model is busy replaces the waiting one\n"
    "                      (counted as dropped); always on for cameras\n"
    "  --side-by-side      write input and output next to each other (2W x H)\n"
    "  --skip N            start at input frame N (the first N are read and dropped)\n"
    "  --degrade           show a task on ordinary footage: give the model each frame degraded as\n"
    "                      the prompt expects (colorize: grey, upscale: 4x down, restore: blur,\n"
    "                      noise, JPEG; docs/EVAL.md); with --side-by-side the left is what it sees\n"
    "  --camera-size WxH   camera capture size (default: the camera's)\n"
    "  --camera-fps N      camera frame rate (default: the camera's)\n"
    "  --switch-reset      forget the history when the prompt changes (default: keep it; see\n"
    "                      docs/DECISIONS.md)\n"
    "  --ring K            history frames (default: the model's)\n"
    "  --guidance G        classifier-free guidance scale (default 1 = off)\n"
    "  --device D          cpu or cuda (default cpu)\n"
    "  --seed N            noise seed (default 0)\n"
    "  --quiet             no status lines\n"
    "While it runs: a line `prompt NAME`, `next` or `quit` on stdin (when the input is not stdin),\n"
    "or in the window the keys 0-9 (prompt row), p (next prompt), q/Esc (stop). Ctrl-C stops and\n"
    "finalises the output; a second Ctrl-C ends at once.\n"
    "Status goes to stderr: the configuration, a line a second (frames, end-to-end latency p50/p99\n"
    "from a frame entering to its output written, fps, drops), a summary and the per-stage times.\n";

/* A closed stdin/stdout/stderr would be reused by the next open() — a model or output file read
 * as commands, or a file written as stdout. Park /dev/null on whichever is closed. */
static void guard_std_fds(void) {
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
            int n = open("/dev/null", O_RDWR);
            if (n >= 0 && n != fd) close(n); /* lower fds are open: n is fd unless that failed */
        }
}

int run_parse(int argc, char **argv, run_args *a) {
    enum { O_FIT = 256, O_CAMSIZE, O_CAMFPS, O_REALTIME, O_SBS, O_DELAY, O_SWRESET, O_DEGRADE, O_SKIP };
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"config", 1, 0, 'c'}, {"input", 1, 0, 'i'}, {"output", 1, 0, 'o'},
        {"prompt", 1, 0, 'p'}, {"steps", 1, 0, 'n'}, {"size", 1, 0, 'S'}, {"frames", 1, 0, 'f'},
        {"ring", 1, 0, 'k'}, {"guidance", 1, 0, 'g'}, {"device", 1, 0, 'd'}, {"seed", 1, 0, 's'},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {"fit", 1, 0, O_FIT}, {"camera-size", 1, 0, O_CAMSIZE},
        {"camera-fps", 1, 0, O_CAMFPS}, {"realtime", 0, 0, O_REALTIME}, {"side-by-side", 0, 0, O_SBS},
        {"switch-reset", 0, 0, O_SWRESET}, {"degrade", 0, 0, O_DEGRADE}, {"skip", 1, 0, O_SKIP},
        /* for tests: a deliberately slow model (sleeps N ms per frame in the model stage) */
        {"debug-delay-ms", 1, 0, O_DELAY}, {0, 0, 0, 0}};
    const char *model = NULL, *config = NULL, *input = NULL, *output = NULL;
    mg_stream_opts so = mg_stream_opts_default();
    source_opts sopt = {0};
    loop_opts lo = {0};
    fit_mode fit = FIT_CROP;
    int W = 0, H = 0, o;
    long v;
    long skip = 0;
    lo.max_frames = -1;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'c': config = optarg; break;
        case 'i': input = optarg; break;
        case 'o': output = optarg; break;
        case 'p': so.prompt = optarg; break;
        case 'S':
            if (parse_size(optarg, &W, &H)) return cli_usage("run", "--size: expected WxH, found '%s'", optarg);
            break;
        case 'f':
            if (parse_long(optarg, 0, 1L << 40, &lo.max_frames))
                return cli_usage("run", "--frames: expected a count, found '%s'", optarg);
            break;
        case 'q': lo.quiet = 1; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        case O_FIT:
            if (fit_parse(optarg, &fit)) return cli_usage("run", "--fit: expected crop, pad or stretch, found '%s'", optarg);
            break;
        case O_CAMSIZE:
            if (parse_size(optarg, &sopt.camera_w, &sopt.camera_h))
                return cli_usage("run", "--camera-size: expected WxH, found '%s'", optarg);
            break;
        case O_CAMFPS:
            if (parse_long(optarg, 1, 1000, &v)) return cli_usage("run", "--camera-fps: expected 1..1000, found '%s'", optarg);
            sopt.camera_fps = (int)v;
            break;
        case O_REALTIME: lo.realtime = 1; break;
        case O_SBS: lo.side_by_side = 1; break;
        case O_SWRESET: lo.reset_on_switch = 1; break;
        case O_DEGRADE: lo.degrade = 1; break;
        case O_SKIP:
            if (parse_long(optarg, 0, 1L << 30, &skip)) return cli_usage("run", "--skip: expected a frame count, found '%s'", optarg);
            break;
        case O_DELAY:
            if (parse_long(optarg, 0, 60000, &v)) return cli_usage("run", "--debug-delay-ms: expected 0..60000, found '%s'", optarg);
            lo.debug_delay_ms = (int)v;
            break;
        default:
            if (cli_stream_option("run", o, optarg, argv[optind - 1], 64, &so)) return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_usage("run", "unexpected argument '%s'", argv[optind]);
    if (cli_model_choice("run", model, config)) return EXIT_USAGE;
    if (!input || !output) return cli_usage("run", "--input and --output are required");
    if (!sink_spec_known(output))
        return cli_usage("run", "--output '%s': expected FILE.mp4, FILE.mkv, FILE.y4m, - (y4m on stdout), window or null",
                         output);
    if ((sopt.camera_w || sopt.camera_fps) && strncmp(input, "v4l2:", 5))
        return cli_usage("run", "--camera-size and --camera-fps are for camera inputs (v4l2:/dev/videoN)");
    a->model = model, a->config = config, a->input = input, a->output = output;
    a->so = so, a->sopt = sopt, a->lo = lo, a->fit = fit, a->W = W, a->H = H, a->skip = skip;
    return CLI_PARSED;
}

int cmd_run(int argc, char **argv) {
    guard_std_fds();
    run_args a;
    int parsed = run_parse(argc, argv, &a);
    if (parsed != CLI_PARSED) return parsed;
    const char *model = a.model, *config = a.config, *input = a.input, *output = a.output;
    mg_stream_opts so = a.so;
    source_opts sopt = a.sopt;
    loop_opts lo = a.lo;
    fit_mode fit = a.fit;
    int W = a.W, H = a.H;
    long skip = a.skip;

    /* the source: open it, learn its size, choose the frame size */
    atomic_int abort_src;
    atomic_init(&abort_src, 0);
    sopt.abort_flag = &abort_src;
    lo.abort_flag = &abort_src;
    source *src = NULL;
    mg_model *m = NULL;
    mg_stream *st = NULL;
    sink *snk = NULL;
    int rc = EXIT_OK, testsrc = !strcmp(input, "testsrc");
    mg_status s;
    if ((s = source_open(&src, input, &sopt)) != MG_OK) return cli_status(s);
    char size_note[256] = "";
    if (!W) {
        if (testsrc) {
            W = H = 256;
        } else {
            fit_auto_size(src->in_width, src->in_height, AUTO_MAX_SIDE, &W, &H);
            if (W != src->in_width || H != src->in_height)
                snprintf(size_note, sizeof size_note,
                         "mirage run | note: running at %dx%d: the input's %dx%d %sand rounded down to multiples of 16 "
                         "(--size WxH to choose)\n",
                         W, H, src->in_width, src->in_height,
                         (src->in_width > AUTO_MAX_SIDE || src->in_height > AUTO_MAX_SIDE) ? "scaled to a longest side of 512 " : "");
        }
    }
    if (testsrc && lo.max_frames < 0) lo.max_frames = 100;
    if (W % 16 || H % 16) {
        source_close(src);
        return cli_fail("frame size %dx%d: the model needs multiples of 16", W, H);
    }
    if ((s = source_set_size(src, W, H, fit)) != MG_OK) goto fail;
    so.width = W, so.height = H;
    if (skip > 0) { /* read past the first frames; an input that ends before is an error */
        uint8_t *junk = malloc((size_t)W * H * 3 + SOURCE_RGB_PAD);
        if (!junk) {
            s = mg_fail(MG_ERR_NOMEM, "out of memory for a %dx%d frame", W, H);
            goto fail;
        }
        source_frame sf;
        for (long i = 0; i < skip && s == MG_OK; i++) s = source_read(src, junk, &sf);
        free(junk);
        if (s == MG_ERR_EOF) s = mg_fail(MG_ERR_IO, "%s: --skip %ld: the input ends before that", input, skip);
        if (s != MG_OK) goto fail;
    }

    if ((s = cli_load_model(model, config, 0, &m)) != MG_OK) goto fail;
    if ((s = mg_stream_new(m, &so, &st)) != MG_OK) goto fail;

    sink_opts ko = {lo.side_by_side ? 2 * W : W, H, src->fps_num, src->fps_den, src->tb_num, src->tb_den, "mirage"};
    char title[160];
    snprintf(title, sizeof title, "mirage — %s", input);
    ko.title = title;
    if ((s = sink_open(&snk, output, &ko)) != MG_OK) goto fail;

    const mg_config *c = mg_model_config(m);
    int realtime = lo.realtime || src->live;
    if (!lo.quiet) {
        fprintf(stderr, "mirage run | model %s (%s, %.2f M params, %.1f MiB) | %dx%d | prompt %s | %d steps | ring %d | guidance %g | cpu (%s)\n",
                model ? model : "(random)", c->name, mg_model_params(m) / 1e6, mg_model_bytes(m) / 1048576.0, W, H,
                mg_stream_prompt(st), so.steps, so.ring ? so.ring : c->ring, so.guidance, mg_build_features());
        fprintf(stderr, "mirage run | input %s (%s) | fit %s | output %s (%s)%s\n", src->name, src->desc, fit_name(fit),
                output, snk->desc, lo.side_by_side ? ", side by side" : "");
        fprintf(stderr, "mirage run | %s | stream arena %.1f MiB\n",
                realtime ? (src->live ? "live source: its clock rules, frames dropped when the model is behind"
                                      : "realtime: paced by the source's timestamps, frames dropped when the model is behind")
                         : "every frame is processed",
                mg_stream_bytes(st) / 1048576.0);
        fputs(size_note, stderr);
    }
    /* commands on stdin, unless stdin is the input, or a terminal we don't own (background job) */
    lo.stdin_commands = strcmp(input, "-") && strcmp(input, "pipe:") && strcmp(input, "pipe:0") &&
                        (!isatty(0) || tcgetpgrp(0) == getpgrp());
    lo.output = output;
    rc = loop_run(m, st, src, snk, &lo); /* closes the sink */
    snk = NULL;
    goto done;
fail:
    rc = cli_status(s);
done:
    sink_close(snk);
    mg_stream_free(st);
    mg_model_free(m);
    source_close(src);
    return rc;
}
