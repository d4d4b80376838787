/* mirage data: build training shards from video and photos, describe them, and draw sample
 * clips from them (issue 5). The format and the reader are in src/data/ and docs/DATA.md. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "core/timing.h"
#include "data/data.h"
#include "eval/files.h"

static const char *help =
    "usage: mirage data build --out DIR [options] SOURCES...\n"
    "       mirage data info DIR [--list]\n"
    "       mirage data sample DIR --out DIR2 [--split S] [--clips N] [--frames T] [--size S] [--seed N]\n\n"
    "build: decodes SOURCES (video files, image files, folders searched recursively for video and\n"
    "image extensions) with FFmpeg and writes JPEG shards DIR/train-NNN.mgshard and\n"
    "DIR/val-NNN.mgshard (format: docs/DATA.md). The split is by source file, from a hash of its\n"
    "base name and --seed; with >= 2 sources val is never empty (and with >= 2 videos it holds a\n"
    "video). A source that cannot be decoded is skipped with a warning (--strict: the build fails);\n"
    "a path that does not exist fails the build before anything is written. Shards appear whole or\n"
    "not at all: a killed build leaves the previous shards as they were.\n"
    "  --out DIR           where the shards go (created)\n"
    "  --size S            short side of stored video frames, pixels (default 256; never upscaled)\n"
    "  --photo-size S      short side of stored photos (default 384: room for synthetic zoom)\n"
    "  --val-fraction F    share of sources held out for validation, 0..0.9 (default 0.1)\n"
    "  --max-frames N      frames kept per video (default 240)\n"
    "  --run-frames N      a longer video is kept as runs of about N consecutive frames spread\n"
    "                      over its length (default 48)\n"
    "  --frame-step K      keep every K-th frame (default 1)\n"
    "  --cut-threshold D   a scene cut (mean luma change of a 32x32 thumbnail above D, default 20)\n"
    "                      ends a run, so no clip spans two shots; blank frames are dropped\n"
    "  --quality Q         JPEG quality 1..100 (default 88)\n"
    "  --shard-mib M       start a new shard past M MiB (default 16)\n"
    "  --seed N            decides the split (default 0)\n"
    "  --exclude GLOB      skip files in folders whose base name matches GLOB (repeatable)\n"
    "  --strict            fail on a source that cannot be decoded\n"
    "  --quiet             no progress lines\n"
    "info: shards, sources, frames and bytes per split; --list names every source.\n"
    "sample: writes N clips of T frames (S x S) drawn from the split as DIR2/clip-NNN.png, the frames\n"
    "side by side, the same bytes for the same seed; prints the time per clip.\n";

static int data_build_parse(int argc, char **argv, data_args *a) {
    enum { O_PHOTO = 256, O_VAL, O_MAX, O_RUN, O_STEP, O_Q, O_SHARD, O_STRICT, O_EXCL, O_CUT };
    static const struct option opts[] = {
        {"out", 1, 0, 'o'}, {"size", 1, 0, 'S'}, {"photo-size", 1, 0, O_PHOTO}, {"val-fraction", 1, 0, O_VAL},
        {"max-frames", 1, 0, O_MAX}, {"run-frames", 1, 0, O_RUN}, {"frame-step", 1, 0, O_STEP},
        {"quality", 1, 0, O_Q}, {"shard-mib", 1, 0, O_SHARD}, {"seed", 1, 0, 's'}, {"strict", 0, 0, O_STRICT}, {"exclude", 1, 0, O_EXCL}, {"cut-threshold", 1, 0, O_CUT},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    data_build_opts bo = data_build_defaults();
    char **excl = a->excl;
    int n_excl = 0;
    long v;
    double f;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'o': bo.out_dir = optarg; break;
        case 'S':
            if (parse_long(optarg, 32, 2048, &v)) return cli_usage("data", "--size: expected 32..2048, found '%s'", optarg);
            bo.video_short = (int)v;
            break;
        case O_PHOTO:
            if (parse_long(optarg, 32, 4096, &v)) return cli_usage("data", "--photo-size: expected 32..4096, found '%s'", optarg);
            bo.photo_short = (int)v;
            break;
        case O_VAL:
            if (parse_float(optarg, 0, 0.9, &f)) return cli_usage("data", "--val-fraction: expected 0..0.9, found '%s'", optarg);
            bo.val_fraction = f;
            break;
        case O_MAX:
            if (parse_long(optarg, 1, 1000000, &bo.max_frames))
                return cli_usage("data", "--max-frames: expected 1..1000000, found '%s'", optarg);
            break;
        case O_RUN:
            if (parse_long(optarg, 1, 100000, &v)) return cli_usage("data", "--run-frames: expected 1..100000, found '%s'", optarg);
            bo.run_frames = (int)v;
            break;
        case O_STEP:
            if (parse_long(optarg, 1, 1000, &v)) return cli_usage("data", "--frame-step: expected 1..1000, found '%s'", optarg);
            bo.frame_step = (int)v;
            break;
        case O_Q:
            if (parse_long(optarg, 1, 100, &v)) return cli_usage("data", "--quality: expected 1..100, found '%s'", optarg);
            bo.quality = (int)v;
            break;
        case O_SHARD:
            if (parse_long(optarg, 1, 4096, &bo.shard_mib)) return cli_usage("data", "--shard-mib: expected 1..4096, found '%s'", optarg);
            break;
        case 's':
            if (parse_u64(optarg, &bo.seed)) return cli_usage("data", "--seed: expected a non-negative integer, found '%s'", optarg);
            break;
        case O_STRICT: bo.strict = 1; break;
        case O_CUT:
            if (parse_float(optarg, 0.1, 255, &f)) return cli_usage("data", "--cut-threshold: expected 0.1..255, found '%s'", optarg);
            bo.cut_mad = (float)f;
            break;
        case O_EXCL:
            if (n_excl == 64) return cli_usage("data", "--exclude: at most 64 patterns");
            excl[n_excl++] = optarg;
            break;
        case 'q': bo.quiet = 1; break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: return cli_usage("data", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!bo.out_dir) return cli_usage("data", "--out DIR is required");
    bo.exclude = excl, bo.n_exclude = n_excl;
    if (optind >= argc) return cli_usage("data", "no SOURCES given (video files, image files or folders)");
    a->bo = bo, a->sources = argv + optind, a->n_sources = argc - optind;
    return CLI_PARSED;
}

static int data_build_cmd(data_args *a) {
    mg_status s = data_build(&a->bo, a->sources, a->n_sources);
    return s == MG_OK ? EXIT_OK : cli_status(s);
}

static int data_info_parse(int argc, char **argv, data_args *a) {
    const char *dir = NULL;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) list = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(help, stdout); return EXIT_OK; }
        else if (argv[i][0] == '-' && argv[i][1]) return cli_usage("data", "unknown option '%s'", argv[i]);
        else if (dir) return cli_usage("data", "unexpected argument '%s'", argv[i]);
        else dir = argv[i];
    }
    if (!dir) return cli_usage("data", "info: DIR is required");
    a->dir = dir, a->list = list;
    return CLI_PARSED;
}

static int data_info_cmd(const data_args *a) {
    const char *dir = a->dir;
    int list = a->list;
    DIR *d = opendir(dir);
    if (!d) return cli_fail("%s: cannot open the data directory: %s", dir, strerror(errno));
    closedir(d);
    const char *splits[2] = {"train", "val"};
    int found = 0;
    double total = 0;
    for (int k = 0; k < 2; k++) {
        dataset *ds = NULL;
        mg_status s = dataset_open(&ds, dir, splits[k]);
        if (s == MG_ERR_IO && strstr(mg_last_error(), "no ")) { /* a split may be absent (one source) */
            printf("%-5s | no shards\n", splits[k]);
            mg_clear_error();
            continue;
        }
        if (s != MG_OK) return cli_status(s);
        found++;
        dataset_info in;
        dataset_describe(ds, &in);
        total += (double)in.bytes;
        printf("%-5s | %d shard%s | %d sources: %d videos (%ld frames in %d runs), %d photos | %.2f MiB (%.2f MiB JPEG) "
               "| build %016llx\n",
               splits[k], in.shards, in.shards == 1 ? "" : "s", in.sources, in.videos, in.video_frames, in.video_clips,
               in.photos, in.bytes / 1048576.0, in.jpeg_bytes / 1048576.0, (unsigned long long)in.build_id);
        if (list) {
            for (int i = 0; i < in.sources; i++) {
                dataset_source src;
                if (dataset_source_get(ds, i, &src)) break;
                printf("  %-5s %-32s %4dx%-4d -> %4dx%-4d %5ld frames", src.is_video ? "video" : "photo", src.name,
                       src.in_width, src.in_height, src.width, src.height, src.frames);
                if (src.is_video) printf(" in %d runs, %.3g fps, step %d", src.clips, src.fps, src.frame_step);
                putchar('\n');
            }
        }
        dataset_close(ds);
    }
    if (!found) return cli_fail("%s: no shards (train-NNN.mgshard, val-NNN.mgshard); make them with `mirage data build`", dir);
    printf("total | %.2f MiB\n", total / 1048576.0);
    return EXIT_OK;
}

static int data_sample_parse(int argc, char **argv, data_args *a) {
    static const struct option opts[] = {{"out", 1, 0, 'o'}, {"split", 1, 0, 'p'}, {"clips", 1, 0, 'n'},
                                         {"frames", 1, 0, 't'}, {"size", 1, 0, 'S'}, {"seed", 1, 0, 's'},
                                         {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL, *split = "train";
    long clips = 4, T = 8, S = 256;
    uint64_t seed = 0;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'o': out = optarg; break;
        case 'p': split = optarg; break;
        case 'n':
            if (parse_long(optarg, 1, 10000, &clips)) return cli_usage("data", "--clips: expected 1..10000, found '%s'", optarg);
            break;
        case 't':
            if (parse_long(optarg, 1, 64, &T)) return cli_usage("data", "--frames: expected 1..64, found '%s'", optarg);
            break;
        case 'S':
            if (parse_long(optarg, 8, 1024, &S) || S % 8)
                return cli_usage("data", "--size: expected a multiple of 8 in 8..1024, found '%s'", optarg);
            break;
        case 's':
            if (parse_u64(optarg, &seed)) return cli_usage("data", "--seed: expected a non-negative integer, found '%s'", optarg);
            break;
        case 'h': fputs(help, stdout); return EXIT_OK;
        default: return cli_usage("data", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage("data", "sample: one DIR is required");
    if (!out) return cli_usage("data", "sample: --out DIR2 is required");
    if (strcmp(split, "train") && strcmp(split, "val")) return cli_usage("data", "--split: expected train or val, found '%s'", split);
    a->dir = argv[optind], a->out = out, a->split = split, a->clips = clips, a->T = T, a->S = S, a->seed = seed;
    return CLI_PARSED;
}

static int data_sample_cmd(const data_args *a) {
    const char *out = a->out, *split = a->split;
    long clips = a->clips, T = a->T, S = a->S;
    uint64_t seed = a->seed;
    dataset *ds = NULL;
    mg_status s = dataset_open(&ds, a->dir, split);
    if (s != MG_OK) return cli_status(s);
    if ((s = files_mkdir_p(out)) != MG_OK) {
        dataset_close(ds);
        return cli_status(s);
    }
    size_t fb = (size_t)S * S * 3;
    uint8_t *clip = malloc(fb * T), *strip = malloc(fb * T);
    if (!clip || !strip) s = mg_fail(MG_ERR_NOMEM, "no memory");
    double total_ms = 0;
    for (long c = 0; c < clips && s == MG_OK; c++) {
        double t0 = mg_now_ms();
        s = dataset_sample_clip(ds, seed + (uint64_t)c, (int)T, (int)S, clip);
        double ms = mg_now_ms() - t0;
        total_ms += ms;
        if (s != MG_OK) break;
        for (long t = 0; t < T; t++) /* frames side by side */
            for (long y = 0; y < S; y++)
                memcpy(strip + ((size_t)y * S * T + (size_t)t * S) * 3, clip + fb * t + (size_t)y * S * 3, (size_t)S * 3);
        char path[4200];
        snprintf(path, sizeof path, "%s/clip-%03ld.png", out, c);
        s = image_write_png(path, strip, (int)(S * T), (int)S);
        if (s == MG_OK) printf("clip %ld/%ld | seed %llu | %.1f ms (%.2f ms/frame) | %s\n", c + 1, clips,
                               (unsigned long long)(seed + c), ms, ms / T, path);
    }
    if (s == MG_OK)
        printf("done | %ld clips of %ldx%ldx%ld | %.2f ms/frame mean\n", clips, T, S, S, total_ms / (clips * T));
    free(clip), free(strip);
    dataset_close(ds);
    return s == MG_OK ? EXIT_OK : cli_status(s);
}

int data_parse(int argc, char **argv, data_args *a) {
    memset(a, 0, sizeof *a);
    if (argc < 2) return cli_usage("data", "expected a subcommand: build, info or sample");
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        fputs(help, stdout);
        return EXIT_OK;
    }
    if (!strcmp(sub, "build")) return a->sub = DATA_BUILD, data_build_parse(argc - 1, argv + 1, a);
    if (!strcmp(sub, "info")) return a->sub = DATA_INFO, data_info_parse(argc - 1, argv + 1, a);
    if (!strcmp(sub, "sample")) return a->sub = DATA_SAMPLE, data_sample_parse(argc - 1, argv + 1, a);
    return cli_usage("data", "unknown subcommand '%s' (build, info or sample)", sub);
}

int cmd_data(int argc, char **argv) {
    data_args a;
    int parsed = data_parse(argc, argv, &a);
    if (parsed != CLI_PARSED) return parsed;
    if (a.sub == DATA_BUILD) return data_build_cmd(&a);
    if (a.sub == DATA_INFO) return data_info_cmd(&a);
    return data_sample_cmd(&a);
}
