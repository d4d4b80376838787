#!/bin/sh
# Issue 6's table for one model or several at several denoising step counts, on a GPU machine:
# every prompt on the held-out clip (256x256, 1000 frames, dream 2000), as dev/train/issue6.sh
# evaluates.
#
#   sh dev/train/issue6.sh clip      here: .evalclip/mm420.y4m.gz
#   sh dev/train/gpu.sh build        here: build-train/mirage and .devlibs
#   sh dev/train/evalsteps.sh        there (carry build-train/mirage, .devlibs, .evalclip): a tar
#                                    of every metrics.json and log in $OUT
#   bash scripts/eval_table.sh DIR   here, for each runs/eval/STEPS folder in the tar
#
# Environment: MODEL (models/mirage-tiny.safetensors), or MODELS ("NAME=FILE ...": several, each
# in its own folder NAME/), STEPS ("2 3 4"), GUIDANCE ("1": the classifier-free guidance scales;
# a folder stepsS-gG for each but 1), PROMPTS (every one), SEEDS ("0": the noise seeds; a seed N
# other than 0 evaluates only SEED_PROMPTS, "colorize", in a folder ...-seedN), AUTOENC (prompts
# scored through the autoencoder alone, `--autoencoder` on the CPU, in a folder autoencoder; none by
# default), FRAMES (1000), GPUS (1), EVAL_BATCH (8: evaluations at a time).
set -u
LOGS=evalsteps-logs
. "$(dirname "$0")/call.sh"
FRAMES=${FRAMES:-1000}
GPUS=${GPUS:-1} # eval_lib.sh: evaluation k on GPU k mod GPUS
MODELS=${MODELS:-}
[ -n "$MODELS" ] || MODELS="=${MODEL:-models/mirage-tiny.safetensors}"
for m in $MODELS; do
    [ -f "${m#*=}" ] || { echo "evalsteps.sh: no model file ${m#*=}" >&2; exit 1; }
    sha256sum "${m#*=}" | tee -a "$O/card.txt"
done
gunzip -c .evalclip/mm420.y4m.gz >"$R/clip.y4m" || exit 1
t0=$(date +%s)
EVAL_BATCH=${EVAL_BATCH:-8}
. "$(dirname "$0")/eval_lib.sh"
ALL="colorize upscale restore style:toon style:sketch style:thermal dream"
for m in $MODELS; do
    name=${m%%=*} file=${m#*=}
    top=${name:+$name/}
    for s in ${STEPS:-2 3 4}; do
        for g in ${GUIDANCE:-1}; do
            for seed in ${SEEDS:-0}; do
                dir=steps$s
                [ "$g" = 1 ] || dir=$dir-g$g
                prompts=${PROMPTS:-$ALL}
                [ "$seed" = 0 ] || { dir=$dir-seed$seed; prompts=${SEED_PROMPTS:-colorize}; }
                for p in $prompts; do
                    ev "$top$dir" "$p" --model "$file" --steps "$s" --guidance "$g" --seed "$seed"
                done
            done
        done
    done
    for p in ${AUTOENC:-}; do ev "${top}autoencoder" "$p" --model "$file" --autoencoder --device cpu; done # the CPU only
done
ev_done "$t0" "$O"
ls -la "$O"
