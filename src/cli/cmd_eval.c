/* mirage eval: long-rollout evaluation of a model (issue 6). This file parses options and opens
 * the source and the models; the loop, the metrics and the report are in src/eval/. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "eval/degrade.h"
#include "eval/eval.h"
#include "io/fit.h"
#include "io/source.h"

#define AUTO_MAX_SIDE 512 /* as mirage run */

static const char *help =
    "usage: mirage eval --model FILE --input CLIP --prompt P --frames N --report DIR [options]\n\n"
    "Generates N frames and compares every output with the prompt's ground truth made from the\n"
    "same real footage: the input frame is the truth, the model sees it degraded (colorize: grey,\n"
    "upscale: 4x down, restore: blur + noise + JPEG-like blocks), or the truth is the frame\n"
    "restyled (style:toon, style:sketch, style:thermal); dream drops the input and is judged by\n"
    "colour, detail and motion statistics against the clip's own. Writes DIR/index.html (plots,\n"
    "frame strips, summary; opens offline) and DIR/metrics.json (every number). See docs/EVAL.md.\n"
    "  --model FILE      weights (.safetensors); --config NAME instead uses fresh random weights\n"
    "  --input CLIP      anything `mirage run` reads: testsrc, FILE.y4m, FILE.mp4, -, ...; played\n"
    "                    back and forth when shorter than N frames\n"
    "  --prompt P        none, colorize, upscale, restore, style:toon, style:sketch, style:thermal\n"
    "                    or dream (default colorize)\n"
    "  --frames N        frames to generate (default 1000; the acceptance runs use 1000, dream 2000)\n"
    "  --report DIR      where the report goes (created; files replaced atomically)\n"
    "  --compare FILE2   a second model on the same frames, same noise (ablations): both on every\n"
    "                    plot and in the JSON\n"
    "  --size WxH        frame size, multiples of 16 (default as mirage run: the input's, longest\n"
    "                    side 512; testsrc 256x256)\n"
    "  --fit MODE        crop (default), pad or stretch\n"
    "  --steps N         denoising steps per frame (default 2)\n"
    "  --ring K          history frames (default: the model's)\n"
    "  --guidance G      classifier-free guidance scale (default 1 = off)\n"
    "  --device D        cpu or cuda (default cpu)\n"
    "  --seed N          noise seed for the streams and the degradations (default 0)\n"
    "  --autoencoder     measure the autoencoder alone on the prompt's truth, decode(encode(truth))\n"
    "                    (CPU; any prompt but dream): the ceiling of that prompt's outputs\n"
    "  --quiet           no progress lines\n"
    "Prints the configuration, a line per 100 frames (frame, PSNR, SSIM, ms/frame) and a summary\n"
    "with the issue 6 verdicts. Exit status 0 when the report was written, whatever it says.\n";

int eval_parse(int argc, char **argv, eval_args *a) {
    enum { O_FIT = 256, O_COMPARE, O_AE };
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"config", 1, 0, 'c'}, {"input", 1, 0, 'i'}, {"prompt", 1, 0, 'p'},
        {"frames", 1, 0, 'f'}, {"report", 1, 0, 'r'}, {"compare", 1, 0, O_COMPARE}, {"size", 1, 0, 'S'},
        {"fit", 1, 0, O_FIT}, {"steps", 1, 0, 'n'}, {"ring", 1, 0, 'k'}, {"guidance", 1, 0, 'g'},
        {"device", 1, 0, 'd'}, {"seed", 1, 0, 's'}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {"autoencoder", 0, 0, O_AE}, {0, 0, 0, 0}};
    const char *model = NULL, *config = NULL, *compare = NULL, *input = NULL;
    eval_opts eo = eval_opts_default();
    eo.report_dir = NULL;
    fit_mode fit = FIT_CROP;
    int W = 0, H = 0, quiet = 0, o;
    mg_stream_opts so = mg_stream_opts_default(); /* the shared options land here, then in eo */
    so.steps = eo.steps;
    so.ring = eo.ring;
    so.guidance = eo.guidance;
    so.device = eo.device;
    so.seed = eo.seed;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'c': config = optarg; break;
        case 'i': input = optarg; break;
        case 'p': eo.prompt = optarg; break;
        case 'f':
            if (parse_long(optarg, 1, 100000000, &eo.frames)) return cli_usage("eval", "--frames: expected 1..100000000, found '%s'", optarg);
            break;
        case 'r': eo.report_dir = optarg; break;
        case O_COMPARE: compare = optarg; break;
        case 'S':
            if (parse_size(optarg, &W, &H)) return cli_usage("eval", "--size: expected WxH, found '%s'", optarg);
            break;
        case O_FIT:
            if (fit_parse(optarg, &fit)) return cli_usage("eval", "--fit: expected crop, pad or stretch, found '%s'", optarg);
            break;
        case 'q': quiet = 1; break;
        case O_AE: eo.autoencoder = 1; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default:
            if (cli_stream_option("eval", o, optarg, argv[optind - 1], 64, &so)) return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_usage("eval", "unexpected argument '%s'", argv[optind]);
    eo.steps = so.steps;
    eo.ring = so.ring;
    eo.guidance = so.guidance;
    eo.device = so.device;
    eo.seed = so.seed;
    if (cli_model_choice("eval", model, config)) return EXIT_USAGE;
    if (!input) return cli_usage("eval", "--input CLIP is required");
    if (!eo.report_dir) return cli_usage("eval", "--report DIR is required");
    if (!degrade_known(eo.prompt))
        return cli_usage("eval", "--prompt '%s': no ground truth defined for it (none, colorize, upscale, restore, "
                                 "style:toon, style:sketch, style:thermal, dream)", eo.prompt);
    a->model = model, a->config = config, a->compare = compare, a->input = input;
    a->eo = eo, a->fit = fit, a->W = W, a->H = H, a->quiet = quiet;
    return CLI_PARSED;
}

int cmd_eval(int argc, char **argv) {
    eval_args a;
    int parsed = eval_parse(argc, argv, &a);
    if (parsed != CLI_PARSED) return parsed;
    const char *model = a.model, *config = a.config, *compare = a.compare, *input = a.input;
    eval_opts eo = a.eo;
    fit_mode fit = a.fit;
    int W = a.W, H = a.H, quiet = a.quiet;

    source_opts sopt = {0};
    source *src = NULL;
    mg_model *m[2] = {NULL, NULL};
    mg_status s = source_open(&src, input, &sopt);
    if (s != MG_OK) return cli_status(s);
    if (!W) {
        if (!strcmp(input, "testsrc")) W = H = 256;
        else fit_auto_size(src->in_width, src->in_height, AUTO_MAX_SIDE, &W, &H);
    }
    int rc = EXIT_OK;
    if (W % 16 || H % 16) {
        rc = cli_fail("frame size %dx%d: the model needs multiples of 16", W, H);
        goto done;
    }
    if ((s = source_set_size(src, W, H, fit)) != MG_OK) goto fail;
    if ((s = cli_load_model(model, config, 0, &m[0])) != MG_OK) goto fail;
    if (compare && (s = mg_model_load(compare, &m[1])) != MG_OK) goto fail;

    char random_label[64];
    snprintf(random_label, sizeof random_label, "(random %s)", config ? config : "");
    eo.input_label = input;
    eo.model_label[0] = model ? model : random_label;
    eo.model_label[1] = compare;
    eo.log = quiet ? NULL : stdout;
    if ((s = eval_run(&eo, src, m[0], m[1], NULL)) != MG_OK) goto fail;
    goto done;
fail:
    rc = cli_status(s);
done:
    mg_model_free(m[0]);
    mg_model_free(m[1]);
    source_close(src);
    return rc;
}
