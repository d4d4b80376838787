/* mirage train tae|dit (issue 5): parses options; the loop is src/train/trainer.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "cli/train_launch.h"
#include "train/trainer.h"

static const char *help =
    "usage: mirage train tae|dit --data DIR --out FILE [--init FILE | --config NAME] [options]\n\n"
    "Trains the autoencoder (tae: L1 + L2 on single frames) or the DiT (dit: rectified flow with\n"
    "diffusion forcing on clips, the autoencoder frozen) on shards made by `mirage data build`.\n"
    "Writes FILE (the EMA weights, a normal model file for run/eval/info) and a checkpoint at\n"
    "every --ckpt-every steps and at the end; --resume continues bit for bit. See docs/TRAINING.md.\n"
    "  --data DIR            dataset directory (train and val shards)\n"
    "  --out FILE            model file to write (EMA weights)\n"
    "  --init FILE           weights to start from (dit: the trained autoencoder, kept frozen)\n"
    "  --config NAME         start from a fresh model instead: tiny, s, b, 1b (default tiny)\n"
    "  --resume              continue from the checkpoint if there is one (else start)\n"
    "  --ckpt FILE           checkpoint index (default: FILE without .safetensors + .ckpt)\n"
    "  --samples DIR         sample images (default: FILE without .safetensors + .samples)\n"
    "  --steps N             optimizer steps in the run (default 2000)\n"
    "  --batch B             clips (dit) or images (tae) per step (default dit 4, tae 8)\n"
    "  --size S              frame side, a multiple of 16 (default 128)\n"
    "  --frames T            frames per clip, dit (default 6)\n"
    "  --window K            history frames each frame sees, dit (default: the model's ring)\n"
    "  --lr X                peak learning rate (default dit 3e-4, tae 1e-3)\n"
    "  --lr-min X            final learning rate of the cosine (default lr/10)\n"
    "  --warmup N            linear warm-up steps (default 100)\n"
    "  --weight-decay X      AdamW decay on weights (default dit 0.05, tae 0)\n"
    "  --clip X              gradient-norm clipping, 0 = off (default 1)\n"
    "  --ema X               EMA decay of the shipped weights (default 0.999, ramped in early)\n"
    "  --hist-aug 0|1        history augmentation, dit (default 1)\n"
    "  --prompt-dropout P    probability of training with prompt row 0 'none', dit (default 0.1)\n"
    "  --fades P             share of clips that fade to or from black or hold black frames, dit\n"
    "                        (default 0)\n"
    "  --sigma-ctx X         noise level of the history ring, trained and written into the model,\n"
    "                        dit (default: the model's, 0.05 for the named configs)\n"
    "  --fresh-dit           with --init: keep its autoencoder, draw a fresh DiT (seed --seed)\n"
    "  --hf-loss X           tae: add X x mean (lap(rec) - lap(img))^2, the 4-neighbour Laplacian\n"
    "                        (the eval's detail stencil): edges cost by curvature (default 0)\n"
    "  --freeze-encoder      tae with --init: train the decoder only; the latents do not move, so\n"
    "                        the file's DiT stays valid and is written unchanged\n"
    "  --adv W               add W x (-mean D(out)), D a PatchGAN discriminator trained beside the\n"
    "                        model with the hinge loss (its own AdamW, same lr): tae, D on the\n"
    "                        image against the reconstruction; dit, D on the latent against the\n"
    "                        one-step estimate x0 - sigma (v - (eps - x0)) of every frame at\n"
    "                        sigma >= 0.25 (--size a multiple of 64). The step line adds D's\n"
    "                        loss, the term and D's accuracy; CPU or one GPU (default 0: off)\n"
    "  --adv-start N         the term is off for the first N steps while D learns (default 0)\n"
    "  --adv-lr X            D's peak learning rate, on the model's warm-up and cosine (default:\n"
    "                        --lr)\n"
    "  --train-prompts LIST  draw the items from these prompts only, e.g. style:toon,style:sketch,\n"
    "                        uniformly, or in proportion to weights: colorize,style:toon=3 (a\n"
    "                        name without one weighs 1); default: every prompt with training pairs\n"
    "  --val-every N         validation loss every N steps, 0 = off (default 200)\n"
    "  --val-clips N         validation clips (fixed seeds) (default 8)\n"
    "  --sample-every N      sample PNG every N steps, 0 = off (default 500)\n"
    "  --sample-steps N      denoising steps of the dit samples (default 2)\n"
    "  --ckpt-every N        checkpoint every N steps, 0 = only at the end (default 200)\n"
    "  --ckpt-part-mib N     checkpoint part size in MiB (default 15)\n"
    "  --ckpt-moments f32|bf16  AdamW moments in the checkpoint (default f32: exact resume; bf16:\n"
    "                        smaller, resume close but not bit-exact)\n"
    "  --log-every N         a progress line every N steps (default 1)\n"
    "  --device cpu|cuda     where to train (default cpu)\n"
    "  --gpus N|LIST         data parallel over N GPUs (0..N-1) or the listed ones (0,2): a process\n"
    "                        per GPU, --batch split evenly over them, gradients summed with NCCL\n"
    "                        (MIRAGE_NCCL=/path/libnccl.so.2 if it is not found); implies --device cuda\n"
    "  --dtype f32|bf16      model file dtype (default f32; bf16 halves it)\n"
    "  --seed N              run seed: every random choice derives from (seed, step, item) (default 0)\n"
    "  --time-limit SECONDS  stop cleanly with a checkpoint before this much time (default none)\n"
    "  --stop-after N        stop cleanly with a checkpoint after N steps of this call (default none)\n"
    "  --threads N           CPU threads (default all)\n"
    "  --peak-tflops X       peak for the MFU column (default: cuda 989 bf16, cpu 0.15 per thread)\n"
    "Prints the configuration, then a line per step: step, loss, gradient norm, lr, ms/step, MFU, ETA.\n"
    "SIGINT/SIGTERM stop cleanly with a checkpoint. Exit 0 when the run ended or stopped cleanly.\n";

int train_parse(int argc, char **argv, train_opts *a) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(help, stdout);
        return EXIT_OK;
    }
    if (argc < 2 || (strcmp(argv[1], "tae") && strcmp(argv[1], "dit")))
        return cli_usage("train", "expected a stage, tae or dit, found '%s'", argc < 2 ? "" : argv[1]);
    train_opts o = train_opts_default(!strcmp(argv[1], "tae") ? STAGE_TAE : STAGE_DIT);
    int lr_min_given = 0, device_given = 0;
    enum {
        O_DATA = 256, O_OUT, O_INIT, O_CONFIG, O_RESUME, O_CKPT, O_SAMPLES, O_STEPS, O_BATCH, O_SIZE, O_FRAMES,
        O_WINDOW, O_LR, O_LR_MIN, O_WARMUP, O_WD, O_CLIP, O_EMA, O_HIST, O_DROP, O_VAL_EVERY, O_VAL_CLIPS,
        O_SAMPLE_EVERY, O_SAMPLE_STEPS, O_CKPT_EVERY, O_PART, O_LOG, O_DEVICE, O_DTYPE, O_SEED, O_TIME, O_THREADS,
        O_PEAK, O_MOMENTS, O_STOP, O_FADES, O_SIGMA_CTX, O_FRESH_DIT, O_GPUS, O_HF, O_FREEZE, O_ADV, O_ADV_START, O_ADV_LR, O_PROMPTS, O_HELP
    };
    static const struct option opts[] = {
        {"data", 1, 0, O_DATA}, {"out", 1, 0, O_OUT}, {"init", 1, 0, O_INIT}, {"config", 1, 0, O_CONFIG},
        {"resume", 0, 0, O_RESUME}, {"ckpt", 1, 0, O_CKPT}, {"samples", 1, 0, O_SAMPLES}, {"steps", 1, 0, O_STEPS},
        {"batch", 1, 0, O_BATCH}, {"size", 1, 0, O_SIZE}, {"frames", 1, 0, O_FRAMES}, {"window", 1, 0, O_WINDOW},
        {"lr", 1, 0, O_LR}, {"lr-min", 1, 0, O_LR_MIN}, {"warmup", 1, 0, O_WARMUP}, {"weight-decay", 1, 0, O_WD},
        {"clip", 1, 0, O_CLIP}, {"ema", 1, 0, O_EMA}, {"hist-aug", 1, 0, O_HIST}, {"prompt-dropout", 1, 0, O_DROP},
        {"val-every", 1, 0, O_VAL_EVERY}, {"val-clips", 1, 0, O_VAL_CLIPS}, {"sample-every", 1, 0, O_SAMPLE_EVERY},
        {"sample-steps", 1, 0, O_SAMPLE_STEPS}, {"ckpt-every", 1, 0, O_CKPT_EVERY}, {"ckpt-part-mib", 1, 0, O_PART},
        {"log-every", 1, 0, O_LOG}, {"device", 1, 0, O_DEVICE}, {"dtype", 1, 0, O_DTYPE}, {"seed", 1, 0, O_SEED},
        {"time-limit", 1, 0, O_TIME}, {"threads", 1, 0, O_THREADS}, {"peak-tflops", 1, 0, O_PEAK},
        {"ckpt-moments", 1, 0, O_MOMENTS}, {"stop-after", 1, 0, O_STOP}, {"fades", 1, 0, O_FADES}, {"gpus", 1, 0, O_GPUS},
        {"sigma-ctx", 1, 0, O_SIGMA_CTX}, {"fresh-dit", 0, 0, O_FRESH_DIT}, {"hf-loss", 1, 0, O_HF},
        {"freeze-encoder", 0, 0, O_FREEZE}, {"adv", 1, 0, O_ADV}, {"adv-start", 1, 0, O_ADV_START}, {"adv-lr", 1, 0, O_ADV_LR}, {"train-prompts", 1, 0, O_PROMPTS},
        {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    long v;
    double x;
    int c;
    optind = 2;
    opterr = 0;
#define LONG(flag, lo, hi, dst, bit)                                                                          \
    do {                                                                                                    \
        if (parse_long(optarg, lo, hi, &v)) return cli_usage("train", flag ": expected %ld..%ld, found '%s'", (long)(lo), (long)(hi), optarg); \
        dst = v;                                                                                            \
        o.given |= (bit);                                                                                   \
    } while (0)
#define FLOAT(flag, lo, hi, dst, bit)                                                                                  \
    do {                                                                                                             \
        if (parse_float(optarg, lo, hi, &x)) return cli_usage("train", flag ": expected a number in [%g, %g], found '%s'", (double)(lo), (double)(hi), optarg); \
        dst = (float)x;                                                                                              \
        o.given |= (bit);                                                                                            \
    } while (0)
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_DATA: o.data = optarg; break;
        case O_OUT: o.out = optarg; break;
        case O_INIT: o.init = optarg; break;
        case O_CONFIG: o.config = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_CKPT: o.ckpt = optarg; break;
        case O_SAMPLES: o.samples = optarg; break;
        case O_STEPS: LONG("--steps", 1, 100000000, o.steps, TO_STEPS); break;
        case O_BATCH: LONG("--batch", 1, 4096, o.batch, TO_BATCH); break;
        case O_SIZE:
            LONG("--size", 16, 4096, o.size, TO_SIZE);
            if (o.size % 16) return cli_usage("train", "--size: expected a multiple of 16, found %d", o.size);
            break;
        case O_FRAMES: LONG("--frames", 1, 64, o.frames, TO_FRAMES); break;
        case O_WINDOW: LONG("--window", 1, 64, o.window, TO_WINDOW); break;
        case O_LR: FLOAT("--lr", 1e-9, 1.0, o.lr, TO_LR); break;
        case O_LR_MIN: FLOAT("--lr-min", 0.0, 1.0, o.lr_min, TO_LR_MIN); lr_min_given = 1; break;
        case O_WARMUP: LONG("--warmup", 0, 100000000, o.warmup, TO_WARMUP); break;
        case O_WD: FLOAT("--weight-decay", 0.0, 10.0, o.weight_decay, TO_WD); break;
        case O_CLIP: FLOAT("--clip", 0.0, 1e9, o.clip, TO_CLIP); break;
        case O_EMA: FLOAT("--ema", 0.0, 0.999999, o.ema, TO_EMA); break;
        case O_HIST: LONG("--hist-aug", 0, 1, o.hist_aug, TO_HIST_AUG); break;
        case O_DROP: FLOAT("--prompt-dropout", 0.0, 1.0, o.prompt_dropout, TO_DROPOUT); break;
        case O_FADES: FLOAT("--fades", 0.0, 1.0, o.fades, TO_FADES); break;
        case O_SIGMA_CTX: FLOAT("--sigma-ctx", 0.0, 0.5, o.sigma_ctx, TO_SIGMA_CTX); break;
        case O_FRESH_DIT: o.fresh_dit = 1; break;
        case O_HF: FLOAT("--hf-loss", 0.0, 100.0, o.hf_loss, TO_HF); break;
        case O_FREEZE: o.freeze_encoder = 1, o.given |= TO_FREEZE; break;
        case O_VAL_EVERY: LONG("--val-every", 0, 100000000, o.val_every, 0); break;
        case O_VAL_CLIPS: LONG("--val-clips", 0, 100000, o.val_clips, TO_VAL_CLIPS); break;
        case O_SAMPLE_EVERY: LONG("--sample-every", 0, 100000000, o.sample_every, 0); break;
        case O_SAMPLE_STEPS: LONG("--sample-steps", 1, 64, o.sample_steps, 0); break;
        case O_CKPT_EVERY: LONG("--ckpt-every", 0, 100000000, o.ckpt_every, 0); break;
        case O_PART: LONG("--ckpt-part-mib", 1, 65536, v, 0); o.part_bytes = (size_t)v << 20; break;
        case O_LOG: LONG("--log-every", 0, 100000000, o.log_every, 0); break;
        case O_DEVICE:
            device_given = 1;
            if (parse_device(optarg, &o.device)) return cli_usage("train", "--device: expected cpu or cuda, found '%s'", optarg);
            break;
        case O_DTYPE:
            if (!strcmp(optarg, "f32")) o.dtype = ST_F32;
            else if (!strcmp(optarg, "bf16")) o.dtype = ST_BF16;
            else return cli_usage("train", "--dtype: expected f32 or bf16, found '%s'", optarg);
            break;
        case O_SEED:
            if (parse_u64(optarg, &o.seed)) return cli_usage("train", "--seed: expected a non-negative integer, found '%s'", optarg);
            o.given |= TO_SEED;
            break;
        case O_TIME:
            if (parse_float(optarg, 1.0, 1e9, &o.time_limit)) return cli_usage("train", "--time-limit: expected seconds >= 1, found '%s'", optarg);
            break;
        case O_STOP: LONG("--stop-after", 1, 100000000, o.stop_after, 0); break;
        case O_THREADS: LONG("--threads", 1, 1024, o.threads, 0); break;
        case O_PEAK:
            if (parse_float(optarg, 1e-6, 1e6, &o.peak_tflops)) return cli_usage("train", "--peak-tflops: expected a positive number, found '%s'", optarg);
            break;
        case O_MOMENTS:
            if (!strcmp(optarg, "f32")) o.ckpt_moments = ST_F32;
            else if (!strcmp(optarg, "bf16")) o.ckpt_moments = ST_BF16;
            else return cli_usage("train", "--ckpt-moments: expected f32 or bf16, found '%s'", optarg);
            break;
        case O_GPUS:
            if (dist_parse_gpus(optarg, o.gpus, &o.n_gpus) != MG_OK) return cli_usage("train", "%s", mg_last_error());
            break;
        case O_ADV: FLOAT("--adv", 0.0, 1000.0, o.adv, TO_ADV); break;
        case O_ADV_START: LONG("--adv-start", 0, 100000000, o.adv_start, TO_ADV_START); break;
        case O_ADV_LR: FLOAT("--adv-lr", 1e-9, 1.0, o.adv_lr, TO_ADV_LR); break;
        case O_PROMPTS:
            if (!*optarg || strlen(optarg) > 120) return cli_usage("train", "--train-prompts takes a list of prompt names (at most 120 characters)");
            o.train_prompts = optarg, o.given |= TO_PROMPTS;
            break;
        case O_HELP: fputs(help, stdout); return EXIT_OK;
        default: return cli_usage("train", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
#undef LONG
#undef FLOAT
    if (optind < argc) return cli_usage("train", "unexpected argument '%s'", argv[optind]);
    if (!o.data) return cli_usage("train", "--data DIR is required");
    if (!o.out) return cli_usage("train", "--out FILE is required");
    if (o.init && o.config) return cli_usage("train", "--init and --config exclude each other");
    if (o.fresh_dit && (o.stage != STAGE_DIT || !o.init))
        return cli_usage("train", "--fresh-dit needs stage dit and --init (the autoencoder to keep)");
    if ((o.given & TO_HF) && o.stage != STAGE_TAE) return cli_usage("train", "--hf-loss is an option of stage tae");
    if (o.freeze_encoder && (o.stage != STAGE_TAE || (!o.init && !o.resume)))
        return cli_usage("train", "--freeze-encoder needs stage tae and --init (the encoder to keep)");
    if ((o.given & TO_ADV_LR) && !(o.adv > 0.0f) && !o.resume)
        return cli_usage("train", "--adv-lr sets D's learning rate: it needs --adv W");
    if (o.adv > 0.0f && o.n_gpus > 1)
        return cli_usage("train", "--adv with --gpus %d: D's gradients are not all-reduced across the ranks yet; train "
                         "with one GPU (--device cuda or --gpus 1)", o.n_gpus);
    if (o.stage == STAGE_DIT && !o.init && !o.resume)
        fprintf(stderr, "mirage: warning: train dit without --init: the autoencoder is a fresh random one (tests only)\n");
    if (!lr_min_given) o.lr_min = 0.1f * o.lr;
    if (o.lr_min > o.lr) return cli_usage("train", "--lr-min %g is above --lr %g", o.lr_min, o.lr);
    if (o.n_gpus > 0) {
        if (device_given && o.device != MG_DEVICE_CUDA) return cli_usage("train", "--gpus needs --device cuda");
        o.device = MG_DEVICE_CUDA;
        int first, count; /* the batch is split evenly (a resumed run's comes from its checkpoint) */
        if (o.n_gpus > 1 && ((o.given & TO_BATCH) || !o.resume) && dist_split(o.batch, o.n_gpus, 0, &first, &count) != MG_OK)
            return cli_usage("train", "%s", mg_last_error());
    }
    *a = o;
    return CLI_PARSED;
}

int cmd_train(int argc, char **argv) {
    train_opts o;
    int rc = train_parse(argc, argv, &o);
    if (rc != CLI_PARSED) return rc;
    if (o.n_gpus > 1) return train_launch(&o); /* --gpus 1: this process, as --device cuda */
    mg_status s = trainer_run(&o);
    return s == MG_OK ? EXIT_OK : s == MG_ERR_ARG && strstr(mg_last_error(), "differs from the checkpoint") ? cli_usage("train", "%s", mg_last_error()) : cli_status(s);
}
