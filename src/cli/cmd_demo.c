/* mirage demo: the main job. Runs the shipped model (models/mirage-s.safetensors) on the default
 * input and writes demo.mp4 with input and output side by side. Until a trained model ships
 * (issue 5) it runs a freshly initialised tiny model, and says so; until a real clip ships, the
 * default input is the built-in test scene. Without FFmpeg in the build it writes demo.y4m. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "io/sink.h"

#define SHIPPED_MODEL "models/mirage-s.safetensors"

static const char *help =
    "usage: mirage demo [--input SRC] [--output FILE] [--frames N] [--size WxH]\n\n"
    "Runs the shipped model (" SHIPPED_MODEL ") on the default input (the built-in moving test\n"
    "scene) and writes demo.mp4 with input and output side by side (demo.y4m when this build has\n"
    "no FFmpeg). --input takes anything `mirage run --input` does. No trained model ships yet:\n"
    "until one does, the demo uses a freshly initialised tiny model (random weights), so the\n"
    "output shows the pipeline running, not a trained result.\n";

int cmd_demo(int argc, char **argv) {
    const char *output = NULL, *frames = "100", *input = "testsrc", *size = "256x256";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return EXIT_OK;
        } else if (!strcmp(argv[i], "--output") && i + 1 < argc) {
            output = argv[++i];
        } else if (!strcmp(argv[i], "--frames") && i + 1 < argc) {
            frames = argv[++i];
        } else if (!strcmp(argv[i], "--input") && i + 1 < argc) {
            input = argv[++i];
        } else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            size = argv[++i];
        } else {
            return cli_usage("demo", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!output) {
        output = sink_have_ffmpeg() ? "demo.mp4" : "demo.y4m";
        if (!sink_have_ffmpeg())
            fprintf(stderr, "mirage demo | this build has no FFmpeg: writing demo.y4m instead of demo.mp4\n");
    }
    int shipped = access(SHIPPED_MODEL, R_OK) == 0;
    if (!shipped)
        fprintf(stderr, "mirage demo | no trained model ships yet (%s): using a freshly initialised tiny model\n"
                        "mirage demo | (random weights: the output shows the pipeline, not a trained transformation)\n",
                SHIPPED_MODEL);
    char *args[] = {"run", shipped ? "--model" : "--config", shipped ? SHIPPED_MODEL : "tiny", "--input",
                    (char *)input, "--output", (char *)output, "--frames", (char *)frames, "--size", (char *)size,
                    "--side-by-side", NULL};
    int rc = cmd_run(12, args);
    if (rc == EXIT_OK)
        fprintf(stderr, "mirage demo | wrote %s, input | output side by side (play it with: ffplay %s, or mpv %s)\n",
                output, output, output);
    return rc;
}
