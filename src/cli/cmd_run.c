/* mirage run: read frames, transform each with the model, write them out. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/stats.h"
#include "core/timing.h"
#include "io/testsrc.h"
#include "io/y4m.h"

static const char *help =
    "usage: mirage run --model FILE --input SRC --output DST [options]\n\n"
    "Transforms a stream frame by frame, conditioned on the input, the prompt and its own past.\n"
    "  --model FILE      weights (.safetensors); --config NAME instead uses fresh random weights\n"
    "  --input SRC       testsrc (a built-in moving scene), FILE.y4m, or - (y4m on stdin)\n"
    "  --output DST      FILE.y4m, - (y4m on stdout) or null\n"
    "  --prompt P        what to do (see `mirage info MODEL`); default: the model's first\n"
    "  --steps N         denoising steps per frame (default 2)\n"
    "  --size WxH        frame size, multiples of 16 (default: the input's; testsrc 256x256)\n"
    "  --frames N        stop after N frames (default: the whole input; testsrc 100)\n"
    "  --ring K          history frames (default: the model's)\n"
    "  --guidance G      classifier-free guidance scale (default 1 = off)\n"
    "  --device D        cpu or cuda (default cpu)\n"
    "  --seed N          noise seed (default 0)\n"
    "  --quiet           no status lines\n"
    "Status goes to stderr: the configuration, a line a second, and a summary.\n";

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static int is_y4m_name(const char *p) {
    size_t n = strlen(p);
    return n > 4 && !strcmp(p + n - 4, ".y4m");
}

int cmd_run(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"config", 1, 0, 'c'}, {"input", 1, 0, 'i'}, {"output", 1, 0, 'o'},
        {"prompt", 1, 0, 'p'}, {"steps", 1, 0, 'n'}, {"size", 1, 0, 'S'}, {"frames", 1, 0, 'f'},
        {"ring", 1, 0, 'k'}, {"guidance", 1, 0, 'g'}, {"device", 1, 0, 'd'}, {"seed", 1, 0, 's'},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *config = NULL, *input = NULL, *output = NULL;
    mg_stream_opts so = mg_stream_opts_default();
    int W = 0, H = 0, quiet = 0, o;
    long frames = -1, v;
    double g;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'c': config = optarg; break;
        case 'i': input = optarg; break;
        case 'o': output = optarg; break;
        case 'p': so.prompt = optarg; break;
        case 'n':
            if (parse_long(optarg, 1, 64, &v)) return cli_usage("run", "--steps: expected 1..64, found '%s'", optarg);
            so.steps = (int)v;
            break;
        case 'S':
            if (parse_size(optarg, &W, &H)) return cli_usage("run", "--size: expected WxH, found '%s'", optarg);
            break;
        case 'f':
            if (parse_long(optarg, 0, 1L << 40, &frames)) return cli_usage("run", "--frames: expected a count, found '%s'", optarg);
            break;
        case 'k':
            if (parse_long(optarg, 0, 64, &v)) return cli_usage("run", "--ring: expected 0..64, found '%s'", optarg);
            so.ring = (int)v;
            break;
        case 'g':
            if (parse_float(optarg, 0, 100, &g)) return cli_usage("run", "--guidance: expected 0..100, found '%s'", optarg);
            so.guidance = (float)g;
            break;
        case 'd':
            if (parse_device(optarg, &so.device)) return cli_usage("run", "--device: expected cpu or cuda, found '%s'", optarg);
            break;
        case 's':
            if (parse_u64(optarg, &so.seed)) return cli_usage("run", "--seed: expected a non-negative integer, found '%s'", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: return cli_usage("run", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("run", "unexpected argument '%s'", argv[optind]);
    if (!model && !config) return cli_usage("run", "--model FILE is required (or --config NAME for random weights)");
    if (model && config) return cli_usage("run", "give --model or --config, not both");
    if (!input || !output) return cli_usage("run", "--input and --output are required");
    int use_testsrc = !strcmp(input, "testsrc");
    if (!use_testsrc && strcmp(input, "-") && !is_y4m_name(input))
        return cli_usage("run", "--input '%s': expected testsrc, a .y4m file or - (other formats need FFmpeg input, not in this build yet)", input);
    if (strcmp(output, "null") && strcmp(output, "-") && !is_y4m_name(output))
        return cli_usage("run", "--output '%s': expected a .y4m file, - or null", output);

    /* the source decides the size unless --size says otherwise */
    y4m_reader rd = {0};
    int fps_num = 25, fps_den = 1, rc = EXIT_OK;
    mg_status s;
    if (!use_testsrc) {
        if ((s = y4m_reader_open(&rd, input)) != MG_OK) return cli_status(s);
        fps_num = rd.fps_num, fps_den = rd.fps_den;
        if (W && (W != rd.width || H != rd.height)) {
            y4m_reader_close(&rd);
            return cli_fail("input %s is %dx%d but --size is %dx%d (scaling needs the FFmpeg input, not in this build yet)",
                            input, rd.width, rd.height, W, H);
        }
        W = rd.width, H = rd.height;
    } else {
        if (!W) W = H = 256;
        if (frames < 0) frames = 100;
    }
    if (W % 16 || H % 16) {
        y4m_reader_close(&rd);
        return cli_fail("frame size %dx%d: the model needs multiples of 16", W, H);
    }
    so.width = W, so.height = H;

    mg_model *m = NULL;
    mg_stream *st = NULL;
    y4m_writer wr = {0};
    uint8_t *in = NULL, *out = NULL;
    if ((s = cli_load_model(model, config, 0, &m)) != MG_OK) goto fail;
    if ((s = mg_stream_new(m, &so, &st)) != MG_OK) goto fail;
    in = malloc((size_t)W * H * 3);
    out = malloc((size_t)W * H * 3);
    if (!in || !out) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if (strcmp(output, "null") && (s = y4m_writer_open(&wr, output, W, H, fps_num, fps_den)) != MG_OK) goto fail;

    const mg_config *c = mg_model_config(m);
    if (!quiet)
        fprintf(stderr, "mirage run | model %s (%s, %.2f M params, %.1f MiB) | %dx%d | prompt %s | %d steps | ring %d | guidance %g | cpu (%s)\n"
                        "mirage run | input %s | output %s | stream arena %.1f MiB\n",
                model ? model : "(random)", c->name, mg_model_params(m) / 1e6, mg_model_bytes(m) / 1048576.0, W, H,
                mg_stream_prompt(st), so.steps, so.ring ? so.ring : c->ring, so.guidance, mg_build_features(), input,
                output, mg_stream_bytes(st) / 1048576.0);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    lat_stats *lat = calloc(1, sizeof *lat);
    if (!lat) {
        rc = cli_fail("out of memory");
        goto done;
    }
    double t_start = mg_now_ms(), t_report = t_start;
    long n = 0;
    while (!stop_requested && (frames < 0 || n < frames)) {
        if (use_testsrc) testsrc_render(in, W, H, n);
        else if ((s = y4m_read_frame(&rd, in)) == MG_ERR_EOF) break;
        else if (s != MG_OK) {
            rc = cli_status(s); /* keep what was written so far */
            break;
        }
        double t0 = mg_now_ms();
        if ((s = mg_stream_step(st, in, out)) != MG_OK) {
            rc = cli_status(s);
            break;
        }
        lat_add(lat, mg_now_ms() - t0);
        if (strcmp(output, "null") && (s = y4m_write_frame(&wr, out)) != MG_OK) {
            rc = cli_status(s);
            break;
        }
        n++;
        double now = mg_now_ms();
        if (!quiet && now - t_report >= 1000) {
            fprintf(stderr, "frame %ld | %.1f ms p50 | %.1f ms p99 | %.2f fps | 0 dropped\n", n, lat_quantile(lat, 0.5),
                    lat_quantile(lat, 0.99), n * 1000.0 / (now - t_start));
            t_report = now;
        }
    }
    if (stop_requested && !quiet) fprintf(stderr, "mirage run | interrupted: finishing the output\n");
    if (wr.fp && (s = y4m_writer_close(&wr)) != MG_OK && rc == EXIT_OK) rc = cli_status(s);
    if (!quiet) {
        double secs = (mg_now_ms() - t_start) / 1000.0;
        fprintf(stderr, "done | %ld frames in %.1f s | %.2f fps | %.1f ms p50 | %.1f ms p99 | 0 dropped | %s\n", n, secs,
                secs > 0 ? n / secs : 0.0, lat_quantile(lat, 0.5), lat_quantile(lat, 0.99), output);
    }
    free(lat);
    goto done;
fail:
    rc = cli_status(s);
done:
    if (wr.fp) y4m_writer_abort(&wr);
    y4m_reader_close(&rd);
    free(in);
    free(out);
    mg_stream_free(st);
    mg_model_free(m);
    return rc;
}
