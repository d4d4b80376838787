/* mirage bench: time the frame step, per component, with a full history ring. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#ifdef MG_HAVE_OPENMP
#include <omp.h>
#endif

#include "cli/cli.h"
#include "cli/parse.h"
#include "cli/stats.h"
#include "core/timing.h"
#include "io/testsrc.h"
#include "model/stream.h"
#ifdef MG_HAVE_CUDA
#include "cuda/cuda_stream.h"
#endif

static const char *help =
    "usage: mirage bench (--config NAME | --model FILE) [options]\n\n"
    "Times the whole frame step (encode, each denoise step, KV refresh, decode) at batch 1,\n"
    "after warm-up frames that fill the history ring, and prints medians per component.\n"
    "  --config NAME   tiny, s, b or 1b with fresh random weights (seed 0, no adaLN-zero)\n"
    "  --model FILE    a weights file\n"
    "  --size WxH      frame size (default 256x256)\n"
    "  --steps N       denoising steps (default 2)\n"
    "  --ring K        history frames (default: the model's)\n"
    "  --iters N       timed frames (default 30)\n"
    "  --warmup N      untimed frames first (default: ring + 2)\n"
    "  --device D      cpu or cuda (default cpu). On cuda, the timed frames run back to back as\n"
    "                  the captured CUDA graph (p50/p99 of its device time, each frame with the\n"
    "                  KV refresh of the one before in it, and the host-to-host time: u8 frame\n"
    "                  in host memory to u8 frame back); then as many frames with eager launches\n"
    "                  and CUDA events between components (the per-component medians, each stage\n"
    "                  alone); then as many pipelined, 2 in flight (mg_stream_submit/collect): the\n"
    "                  frame rate and host-to-host time when copies overlap the next frame's work\n"
    "  --json          end with one line of JSON (p50_ms, p99_ms, fps, params, device, ...)\n";

static double median(double *x, int n) {
    for (int i = 1; i < n; i++) /* insertion sort: n is small */
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j]; x[j] = x[j - 1]; x[j - 1] = t;
        }
    return n ? x[n / 2] : 0;
}

int bench_parse(int argc, char **argv, bench_args *a) {
    static const struct option opts[] = {
        {"config", 1, 0, 'c'}, {"model", 1, 0, 'm'}, {"size", 1, 0, 'S'}, {"steps", 1, 0, 'n'},
        {"ring", 1, 0, 'k'}, {"iters", 1, 0, 'i'}, {"warmup", 1, 0, 'w'}, {"device", 1, 0, 'd'},
        {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *config = NULL, *model = NULL;
    mg_stream_opts so = mg_stream_opts_default();
    long iters = 30, warmup = -1;
    int json = 0, o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config = optarg; break;
        case 'm': model = optarg; break;
        case 'S':
            if (parse_size(optarg, &so.width, &so.height)) return cli_usage("bench", "--size: expected WxH, found '%s'", optarg);
            break;
        case 'i':
            if (parse_long(optarg, 1, 100000, &iters)) return cli_usage("bench", "--iters: expected 1..100000, found '%s'", optarg);
            break;
        case 'w':
            if (parse_long(optarg, 0, 100000, &warmup)) return cli_usage("bench", "--warmup: expected a count, found '%s'", optarg);
            break;
        case 'j': json = 1; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default:
            if (cli_stream_option("bench", o, optarg, argv[optind - 1], 16, &so)) return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_usage("bench", "unexpected argument '%s'", argv[optind]);
    if (!config == !model) return cli_usage("bench", "give exactly one of --config NAME and --model FILE");
    a->config = config, a->model = model, a->so = so, a->iters = iters, a->warmup = warmup, a->json = json;
    return CLI_PARSED;
}

int cmd_bench(int argc, char **argv) {
    bench_args a;
    int parsed = bench_parse(argc, argv, &a);
    if (parsed != CLI_PARSED) return parsed;
    const char *config = a.config, *model = a.model;
    mg_stream_opts so = a.so;
    long iters = a.iters, warmup = a.warmup;
    int json = a.json;

    mg_model *m = NULL;
    mg_stream *st = NULL;
    mg_status s = cli_load_model(model, config, 0, &m);
    if (s != MG_OK) return cli_status(s);
    if ((s = mg_stream_new(m, &so, &st)) != MG_OK) {
        mg_model_free(m);
        return cli_status(s);
    }
    const mg_config *c = mg_model_config(m);
    int K = so.ring ? so.ring : c->ring, threads = 1;
#ifdef MG_HAVE_OPENMP
    threads = omp_get_max_threads();
#endif
    if (warmup < 0) warmup = K + 2;
    void *cu = stream_cuda(st); /* a cuda_stream, or NULL on the CPU */
    char devdesc[160];
    snprintf(devdesc, sizeof devdesc, "cpu, %d threads", threads);
#ifdef MG_HAVE_CUDA
    if (cu)
        snprintf(devdesc, sizeof devdesc, "cuda (%s), %s, CUDA graph", cuda_stream_device_name(cu),
                 cuda_stream_fp8(cu) ? "bf16 + e4m3 DiT GEMMs (MG_CUDA_FP8=1)" : "bf16");
#endif
    printf("mirage bench | config %s (%.2f M params) | %dx%d | %d steps | ring %d | %s (%s)\n", c->name,
           mg_model_params(m) / 1e6, so.width, so.height, so.steps, K, devdesc, mg_build_features());
    fflush(stdout);

    size_t fb = (size_t)so.width * so.height * 3;
    uint8_t *in = malloc(fb), *out = malloc(fb);
    double *t_enc = calloc(iters, sizeof(double)), *t_ref = calloc(iters, sizeof(double)),
           *t_dec = calloc(iters, sizeof(double)), *t_step = calloc(iters * so.steps, sizeof(double));
    lat_stats *lat = calloc(1, sizeof *lat), *host = calloc(1, sizeof *host);
    int rc = EXIT_OK;
    if (!in || !out || !t_enc || !t_ref || !t_dec || !t_step || !lat || !host) {
        rc = cli_fail("out of memory");
        goto done;
    }
    /* The timed frames run back to back, in the stream's own mode, as a live stream would: on
     * cuda a frame's graph also runs the KV refresh of the frame before (the deferred refresh,
     * cuda_stream.cu), so a profiled frame between two of them would take that refresh out of
     * the timed graph (it runs its refresh inline). The profiled frames come after, below. */
#ifdef MG_HAVE_CUDA
    long long deferred0 = 0, deferred = 0; /* timed frames that carried the frame before's refresh */
#endif
    for (long i = 0; i < warmup + iters; i++) {
        testsrc_render(in, so.width, so.height, i);
        mg_step_timing tm;
        long k = i - warmup;
#ifdef MG_HAVE_CUDA
        if (cu && i == warmup) deferred0 = cuda_stream_deferred(cu);
#endif
        if ((s = mg_stream_step(st, in, out)) != MG_OK) {
            rc = cli_status(s);
            goto done;
        }
        if (i < warmup) continue;
        mg_stream_last_timing(st, &tm);
        if (!cu) {
            t_enc[k] = tm.encode_ms, t_ref[k] = tm.refresh_ms, t_dec[k] = tm.decode_ms;
            for (int j = 0; j < so.steps; j++) t_step[j * iters + k] = tm.step_ms[j];
        }
        double dev_ms = tm.total_ms;
#ifdef MG_HAVE_CUDA
        if (cu) dev_ms = cuda_stream_last_device_ms(cu);
#endif
        lat_add(lat, dev_ms);
        lat_add(host, tm.total_ms);
    }
#ifdef MG_HAVE_CUDA
    if (cu) deferred = cuda_stream_deferred(cu) - deferred0;
    /* the per-component times: profiled frames of eager launches, one stage after the other */
    for (long k = 0; cu && k < iters; k++) {
        testsrc_render(in, so.width, so.height, warmup + iters + k);
        mg_step_timing tm;
        cuda_stream_set_mode(cu, CUDA_MODE_PROFILE);
        s = mg_stream_step(st, in, out);
        cuda_stream_set_mode(cu, CUDA_MODE_GRAPH);
        if (s != MG_OK) {
            rc = cli_status(s);
            goto done;
        }
        mg_stream_last_timing(st, &tm);
        t_enc[k] = tm.encode_ms, t_ref[k] = tm.refresh_ms, t_dec[k] = tm.decode_ms;
        for (int j = 0; j < so.steps; j++) t_step[j * iters + k] = tm.step_ms[j];
    }
#endif
#ifdef MG_HAVE_CUDA
    /* pipelined: 2 frames in flight, u8 in host memory to u8 back; the inputs are rendered first */
    double pipe_fps = 0, pipe_h50 = 0, pipe_h99 = 0;
    lat_stats *pipe = calloc(1, sizeof *pipe);
    uint8_t *pin = malloc(4 * fb);
    if (cu && (!pipe || !pin)) {
        free(pipe), free(pin);
        rc = cli_fail("out of memory");
        goto done;
    }
    if (cu) {
        for (int i = 0; i < 4; i++) testsrc_render(pin + i * fb, so.width, so.height, warmup + 2 * iters + i);
        double t0 = mg_now_ms();
        for (long i = 0; i <= iters && s == MG_OK; i++) {
            if (i < iters) s = mg_stream_submit(st, pin + (i % 4) * fb);
            if (s == MG_OK && i > 0 && (s = mg_stream_collect(st, out)) == MG_OK) {
                mg_step_timing tm;
                mg_stream_last_timing(st, &tm);
                lat_add(pipe, tm.total_ms);
            }
        }
        double wall = mg_now_ms() - t0;
        pipe_fps = iters * 1000.0 / wall, pipe_h50 = lat_quantile(pipe, 0.5), pipe_h99 = lat_quantile(pipe, 0.99);
    }
    free(pipe), free(pin);
    if (s != MG_OK) {
        rc = cli_status(s);
        goto done;
    }
#endif
    double enc = median(t_enc, (int)iters), ref = median(t_ref, (int)iters), dec = median(t_dec, (int)iters);
    double p50 = lat_quantile(lat, 0.5), p99 = lat_quantile(lat, 0.99);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double w_mib = mg_model_bytes(m) / 1048576.0, s_mib = mg_stream_bytes(st) / 1048576.0, rss = ru.ru_maxrss / 1024.0;
    printf("encode    %8.2f ms\n", enc);
    cJSON *steps = cJSON_CreateArray();
    for (int j = 0; j < so.steps; j++) {
        double t = median(t_step + j * iters, (int)iters);
        printf("step %-4d %8.2f ms\n", j, t);
        cJSON_AddItemToArray(steps, cJSON_CreateNumber(t));
    }
    printf("refresh   %8.2f ms\ndecode    %8.2f ms\n", ref, dec);
    printf("frame     %8.2f ms p50 | %.2f ms p99 | %.2f fps | %ld frames%s\n", p50, p99, 1000.0 / p50, iters,
           cu ? " (CUDA graph replay, device time; components above: eager launches)" : "");
#ifdef MG_HAVE_CUDA
    double h50 = lat_quantile(host, 0.5), h99 = lat_quantile(host, 0.99), gpu_mib = 0, gpu_used = 0, flops = 0;
    if (cu) {
        gpu_mib = cuda_stream_device_bytes(cu) / 1048576.0, gpu_used = cuda_stream_device_used_mib(cu);
        flops = cuda_stream_flops(cu);
        if (cuda_stream_defers(cu)) /* the check that the timed frames are steady-state ones */
            printf("refresh   deferred: %lld of the %ld timed frames ran the frame before's KV refresh in their graph%s\n",
                   deferred, iters, deferred == iters ? "" : " (NOT steady state)");
        printf("host      %8.2f ms p50 | %.2f ms p99 (u8 frame in host memory -> u8 frame back) | %.2f fps\n", h50, h99,
               1000.0 / h50);
        printf("pipelined %8.2f fps | host %.2f ms p50 | %.2f ms p99 (2 frames in flight: mg_stream_submit/collect)\n",
               pipe_fps, pipe_h50, pipe_h99);
        printf("work      %.1f GFLOP per frame | %.1f TFLOP/s achieved at p50\n", flops / 1e9, flops / (p50 * 1e9));
        printf("memory    weights %.1f MiB host | GPU %.1f MiB (weights bf16 + buffers + workspace), %.0f MiB in use on "
               "the card | peak RSS %.1f MiB\n", w_mib, gpu_mib, gpu_used, rss);
    } else
#endif
        printf("memory    weights %.1f MiB | stream %.1f MiB | peak RSS %.1f MiB\n", w_mib, s_mib, rss);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "engine", "mirage");
        cJSON_AddStringToObject(j, "device", cu ? "cuda" : "cpu");
#ifdef MG_HAVE_CUDA
        if (cu) {
            cJSON_AddStringToObject(j, "gpu", cuda_stream_device_name(cu));
            cJSON_AddStringToObject(j, "dit_gemm", cuda_stream_fp8(cu) ? "fp8-e4m3" : "bf16");
            cJSON_AddBoolToObject(j, "refresh_deferred", cuda_stream_defers(cu));
            cJSON_AddNumberToObject(j, "refresh_deferred_frames", (double)deferred);
            cJSON_AddNumberToObject(j, "host_p50_ms", h50);
            cJSON_AddNumberToObject(j, "host_p99_ms", h99);
            cJSON_AddNumberToObject(j, "pipelined_fps", pipe_fps);
            cJSON_AddNumberToObject(j, "pipelined_host_p50_ms", pipe_h50);
            cJSON_AddNumberToObject(j, "pipelined_host_p99_ms", pipe_h99);
            cJSON_AddNumberToObject(j, "gpu_mib", gpu_mib);
            cJSON_AddNumberToObject(j, "gpu_used_mib", gpu_used);
            cJSON_AddNumberToObject(j, "gflop_per_frame", flops / 1e9);
            cJSON_AddNumberToObject(j, "tflops", flops / (p50 * 1e9));
        }
#endif
        cJSON_AddStringToObject(j, "config", c->name);
        cJSON_AddNumberToObject(j, "params", (double)mg_model_params(m));
        cJSON_AddNumberToObject(j, "width", so.width);
        cJSON_AddNumberToObject(j, "height", so.height);
        cJSON_AddNumberToObject(j, "steps", so.steps);
        cJSON_AddNumberToObject(j, "ring", K);
        cJSON_AddNumberToObject(j, "threads", threads);
        cJSON_AddNumberToObject(j, "iters", (double)iters);
        cJSON_AddNumberToObject(j, "p50_ms", p50);
        cJSON_AddNumberToObject(j, "p99_ms", p99);
        cJSON_AddNumberToObject(j, "fps", 1000.0 / p50);
        cJSON_AddNumberToObject(j, "encode_ms", enc);
        cJSON_AddItemToObject(j, "step_ms", steps);
        steps = NULL;
        cJSON_AddNumberToObject(j, "refresh_ms", ref);
        cJSON_AddNumberToObject(j, "decode_ms", dec);
        cJSON_AddNumberToObject(j, "weights_mib", w_mib);
        cJSON_AddNumberToObject(j, "stream_mib", s_mib);
        cJSON_AddNumberToObject(j, "peak_rss_mib", rss);
        char *txt = cJSON_PrintUnformatted(j);
        if (txt) printf("%s\n", txt);
        free(txt);
        cJSON_Delete(j);
    }
    cJSON_Delete(steps);
done:
    free(in), free(out), free(t_enc), free(t_ref), free(t_dec), free(t_step), free(lat), free(host);
    mg_stream_free(st);
    mg_model_free(m);
    return rc;
}
