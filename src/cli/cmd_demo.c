/* mirage demo: the main job. Until a trained model ships (models/mirage-s.safetensors, issue
 * 5) it runs a freshly initialised tiny model on the built-in test scene, and says so. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define SHIPPED_MODEL "models/mirage-s.safetensors"

static const char *help =
    "usage: mirage demo [--output FILE.y4m] [--frames N]\n\n"
    "Runs the shipped model (" SHIPPED_MODEL ") on the built-in moving test scene and writes\n"
    "demo.y4m. No trained model ships yet: until one does, the demo uses a freshly initialised\n"
    "tiny model (random weights), so the output shows the pipeline running, not a trained result.\n";

int cmd_demo(int argc, char **argv) {
    const char *output = "demo.y4m", *frames = "100";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return EXIT_OK;
        } else if (!strcmp(argv[i], "--output") && i + 1 < argc) {
            output = argv[++i];
        } else if (!strcmp(argv[i], "--frames") && i + 1 < argc) {
            frames = argv[++i];
        } else {
            return cli_usage("demo", "unexpected argument '%s'", argv[i]);
        }
    }
    int shipped = access(SHIPPED_MODEL, R_OK) == 0;
    if (!shipped)
        fprintf(stderr, "mirage demo | no trained model ships yet (%s): using a freshly initialised tiny model\n"
                        "mirage demo | (random weights: the output shows the pipeline, not a trained transformation)\n",
                SHIPPED_MODEL);
    char *args[] = {"run", shipped ? "--model" : "--config", shipped ? SHIPPED_MODEL : "tiny", "--input", "testsrc",
                    "--output", (char *)output, "--frames", (char *)frames, "--size", "256x256", NULL};
    int rc = cmd_run(11, args);
    if (rc == EXIT_OK) fprintf(stderr, "mirage demo | wrote %s (play it with: ffplay %s, or mpv %s)\n", output, output, output);
    return rc;
}
