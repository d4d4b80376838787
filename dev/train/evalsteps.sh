#!/bin/sh
# Issue 6's table for one model at several denoising step counts, on a GPU machine: every prompt
# on the held-out clip (256x256, 1000 frames, dream 2000), as dev/train/issue6.sh evaluates.
#
#   sh dev/train/issue6.sh clip      here: .evalclip/mm420.y4m.gz
#   sh dev/train/gpu.sh build        here: build-train/mirage and .devlibs
#   sh dev/train/evalsteps.sh        there (carry build-train/mirage, .devlibs, .evalclip): a tar
#                                    of every metrics.json and log in $OUT
#   bash scripts/eval_table.sh DIR   here, for each runs/eval/STEPS folder in the tar
#
# Environment: MODEL (models/mirage-tiny.safetensors), STEPS ("2 3 4"), GUIDANCE ("1": the
# classifier-free guidance scales; a folder stepsS-gG for each but 1), PROMPTS (every one),
# FRAMES (1000), GPUS (1), EVAL_BATCH (8: evaluations at a time).
set -u
LOGS=evalsteps-logs
. "$(dirname "$0")/call.sh"
FRAMES=${FRAMES:-1000}
GPUS=${GPUS:-1} # eval_lib.sh: evaluation k on GPU k mod GPUS
MODEL=${MODEL:-models/mirage-tiny.safetensors}
sha256sum "$MODEL" | tee -a "$O/card.txt"
gunzip -c .evalclip/mm420.y4m.gz >"$R/clip.y4m" || exit 1
t0=$(date +%s)
EVAL_BATCH=${EVAL_BATCH:-8}
. "$(dirname "$0")/eval_lib.sh"
for s in ${STEPS:-2 3 4}; do
    for g in ${GUIDANCE:-1}; do
        n=steps$s
        [ "$g" = 1 ] || n=steps$s-g$g
        for p in ${PROMPTS:-colorize upscale restore style:toon style:sketch style:thermal dream}; do
            ev "$n" "$p" --model "$MODEL" --steps "$s" --guidance "$g"
        done
    done
done
ev_done "$t0" "$O"
ls -la "$O"
