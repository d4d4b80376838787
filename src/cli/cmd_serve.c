/* mirage serve: the browser demo. Parses options, loads the model once and hands it to the
 * server (src/serve/serve.h), which runs until SIGINT/SIGTERM. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "serve/serve.h"

static const char *help =
    "usage: mirage serve --model FILE [options]\n\n"
    "Serves a web page that sends the browser's camera to the model and shows input and output side\n"
    "by side: one model, one stream (history, prompt, steps) per visitor. Open the printed address.\n"
    "  --model FILE            weights (.safetensors); --config NAME instead uses fresh random weights\n"
    "  --host ADDR             address to listen on (default 127.0.0.1: this machine only)\n"
    "  --port N                port (default 8080; 0 picks a free one and prints it)\n"
    "  --device D              cpu or cuda (default cpu)\n"
    "  --gpus LIST             with --device cuda: the GPUs to serve on, e.g. 0,1 or all (default 0);\n"
    "                          one model copy per GPU, each new session on the one with the fewest\n"
    "                          sessions (tie: the shorter recent model time)\n"
    "  --max-sessions N        visitors at once (default 8); one more is told \"server full\"\n"
    "  --workers N             model threads (default: the number of cores, at most --max-sessions;\n"
    "                          with --device cuda, threads per GPU, default 4)\n"
    "  --size WxH              the size every session runs at, multiples of 16 (default 256x256);\n"
    "                          frames of another size are cropped and scaled to it\n"
    "  --steps N               denoising steps of a new session (default 2)\n"
    "  --max-steps N           the most steps a page may ask for (default 8)\n"
    "  --prompt P              a new session's prompt (default: the model's first)\n"
    "  --web DIR               the page's directory (default: web/ next to the binary's directory)\n"
    "  --quiet                 no status lines\n"
    "Limits (a session that breaks one is closed with the reason; the others go on; docs/SERVE.md):\n"
    "  --max-message BYTES     largest WebSocket message, header + JPEG (default 1048576)\n"
    "  --max-frame WxH         largest frame a page may send (default 1920x1080)\n"
    "  --max-fps N             messages a second a session may send, 1 s burst (default 60)\n"
    "  --idle-timeout S        close a session that sent nothing for S seconds (default 30)\n"
    "  --message-timeout S     close a session whose message takes longer than S s (default 10)\n"
    "  --handshake-timeout S   drop a connection that does not finish its handshake (default 10)\n"
    "  --send-buffer BYTES     a session socket's send buffer (default 0: the kernel's, autotuned);\n"
    "                          smaller notices a slow reader sooner and drops its frames sooner\n"
    "Status goes to stderr: the configuration, sessions opening and closing with their reasons, and a\n"
    "line a second (sessions, frames/s, server-side latency p50/p99, drops). GET /stats gives the\n"
    "counters as JSON.\n";

static atomic_int g_stop;
static void on_signal(int sig) { atomic_store(&g_stop, sig); }

int serve_parse(int argc, char **argv, serve_args *a) {
    enum { O_MAXS = 256, O_WORKERS, O_MAXSTEPS, O_WEB, O_MAXMSG, O_MAXFRAME, O_MAXFPS, O_IDLE, O_MSGTO, O_HSTO, O_PORTFILE, O_SNDBUF, O_GPUS };
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"config", 1, 0, 'c'}, {"host", 1, 0, 'H'}, {"port", 1, 0, 'P'},
        {"device", 1, 0, 'd'}, {"size", 1, 0, 'S'}, {"steps", 1, 0, 'n'}, {"prompt", 1, 0, 'p'},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {"max-sessions", 1, 0, O_MAXS}, {"workers", 1, 0, O_WORKERS},
        {"max-steps", 1, 0, O_MAXSTEPS}, {"web", 1, 0, O_WEB}, {"max-message", 1, 0, O_MAXMSG},
        {"max-frame", 1, 0, O_MAXFRAME}, {"max-fps", 1, 0, O_MAXFPS}, {"idle-timeout", 1, 0, O_IDLE},
        {"message-timeout", 1, 0, O_MSGTO}, {"handshake-timeout", 1, 0, O_HSTO}, {"send-buffer", 1, 0, O_SNDBUF},
        {"gpus", 1, 0, O_GPUS},
        /* for tests: write the bound port to this file once listening (with --port 0) */
        {"port-file", 1, 0, O_PORTFILE}, {0, 0, 0, 0}};
    serve_opts so;
    serve_opts_default(&so);
    const char *model = NULL, *config = NULL;
    long v;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'c': config = optarg; break;
        case 'H': so.host = optarg; break;
        case 'P':
            if (parse_long(optarg, 0, 65535, &v)) return cli_usage("serve", "--port: expected 0..65535, found '%s'", optarg);
            so.port = (int)v;
            break;
        case 'd':
            if (parse_device(optarg, &so.device)) return cli_usage("serve", "--device: expected cpu or cuda, found '%s'", optarg);
            break;
        case 'S':
            if (parse_size(optarg, &so.width, &so.height) || so.width % 16 || so.height % 16)
                return cli_usage("serve", "--size: expected WxH in multiples of 16, found '%s'", optarg);
            break;
        case 'n':
            if (parse_long(optarg, 1, 64, &v)) return cli_usage("serve", "--steps: expected 1..64, found '%s'", optarg);
            so.steps = (int)v;
            break;
        case 'p': so.prompt = optarg; break;
        case 'q': so.quiet = 1; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        case O_MAXS:
            if (parse_long(optarg, 1, 100000, &v)) return cli_usage("serve", "--max-sessions: expected 1..100000, found '%s'", optarg);
            so.max_sessions = (int)v;
            break;
        case O_WORKERS:
            if (parse_long(optarg, 1, 1024, &v)) return cli_usage("serve", "--workers: expected 1..1024, found '%s'", optarg);
            so.workers = (int)v;
            break;
        case O_MAXSTEPS:
            if (parse_long(optarg, 1, 64, &v)) return cli_usage("serve", "--max-steps: expected 1..64, found '%s'", optarg);
            so.max_steps = (int)v;
            break;
        case O_WEB: so.web_dir = optarg; break;
        case O_MAXMSG:
            if (parse_long(optarg, 1024, 1L << 30, &v))
                return cli_usage("serve", "--max-message: expected 1024..1073741824 bytes, found '%s'", optarg);
            so.lim.max_message = (size_t)v;
            break;
        case O_MAXFRAME:
            if (parse_size(optarg, &so.lim.max_frame_w, &so.lim.max_frame_h) || so.lim.max_frame_w > 8192 ||
                so.lim.max_frame_h > 8192)
                return cli_usage("serve", "--max-frame: expected WxH up to 8192x8192, found '%s'", optarg);
            break;
        case O_MAXFPS:
            if (parse_long(optarg, 1, 10000, &v)) return cli_usage("serve", "--max-fps: expected 1..10000, found '%s'", optarg);
            so.lim.max_fps = (int)v;
            break;
        case O_IDLE:
            if (parse_long(optarg, 1, 86400, &v)) return cli_usage("serve", "--idle-timeout: expected 1..86400 s, found '%s'", optarg);
            so.lim.idle_timeout_s = (int)v;
            break;
        case O_MSGTO:
            if (parse_long(optarg, 1, 3600, &v)) return cli_usage("serve", "--message-timeout: expected 1..3600 s, found '%s'", optarg);
            so.lim.message_timeout_s = (int)v;
            break;
        case O_HSTO:
            if (parse_long(optarg, 1, 3600, &v)) return cli_usage("serve", "--handshake-timeout: expected 1..3600 s, found '%s'", optarg);
            so.lim.handshake_timeout_s = (int)v;
            break;
        case O_SNDBUF:
            if (parse_long(optarg, 0, 1L << 26, &v)) return cli_usage("serve", "--send-buffer: expected 0..67108864 bytes, found '%s'", optarg);
            so.lim.send_buffer = (int)v;
            break;
        case O_PORTFILE: so.port_file = optarg; break;
        case O_GPUS: {
            char why[160];
            if (serve_parse_gpus(optarg, &so, why, sizeof why)) return cli_usage("serve", "--gpus: %s", why);
            break;
        }
        default: return cli_usage("serve", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
    if (cli_model_choice("serve", model, config)) return EXIT_USAGE;
    if (so.steps > so.max_steps) return cli_usage("serve", "--steps %d is more than --max-steps %d", so.steps, so.max_steps);
    if (so.ngpus && so.device != MG_DEVICE_CUDA) return cli_usage("serve", "--gpus needs --device cuda");
    a->so = so, a->model = model, a->config = config;
    return CLI_PARSED;
}

int cmd_serve(int argc, char **argv) {
    serve_args a;
    int rc = serve_parse(argc, argv, &a);
    if (rc != CLI_PARSED) return rc;
    mg_model *m = NULL;
    mg_status s = cli_load_model(a.model, a.config, 0, &m);
    if (s != MG_OK) return cli_status(s);
    const mg_config *c = mg_model_config(m);
    if (!a.so.quiet)
        fprintf(stderr, "mirage serve | model %s (%s, %.2f M params, %.1f MiB) | %s (%s)\n", a.model ? a.model : "(random)",
                c->name, mg_model_params(m) / 1e6, mg_model_bytes(m) / 1048576.0,
                a.so.device == MG_DEVICE_CUDA ? "cuda" : "cpu", mg_build_features());
    atomic_init(&g_stop, 0);
    a.so.stop = &g_stop;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    s = serve_run(m, &a.so);
    mg_model_free(m);
    if (s != MG_OK) return cli_status(s);
    if (!a.so.quiet) fprintf(stderr, "mirage serve | stopped\n");
    return EXIT_OK;
}
