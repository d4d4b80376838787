#!/bin/sh
# Issue 6, the styles' detail: does more training on the styles alone sharpen the DiT's fit of
# them? The shipped DiT fine-tuned with the items drawn from some prompts only
# (`--train-prompts`), one arm a GPU, then those prompts evaluated on the held-out clip at 2 and
# 4 steps (dev/train/eval_lib.sh; 256x256, 1000 frames). docs/RESULTS.md records the runs.
#
#   sh dev/train/gpu.sh build    here: build-train/mirage and .devlibs
#   sh dev/train/focus.sh        there (carry build-train/mirage, .devlibs, data, .evalclip)
#
# Environment: ARMS (one arm a line, "NAME FLAGS..."; the default below), DIT_SECONDS (330),
# DIT_STEPS (3000: the cosine's length), EVAL_PROMPTS ("style:toon style:sketch"), GPUS (4),
# KEEP (the arms whose model files come back; none by default), EVAL (1; 0: train only), INIT
# (the model the arms start from: the shipped one).
set -u
LOGS=focus-logs
. "$(dirname "$0")/call.sh"
GPUS=${GPUS:-4}
FRAMES=${FRAMES:-1000}
ARMS=${ARMS:-"styles1e-4 --train-prompts style:toon,style:sketch --lr 1e-4
styles3e-4 --train-prompts style:toon,style:sketch --lr 3e-4
sketch3e-4 --train-prompts style:sketch --lr 3e-4
toon3e-4 --train-prompts style:toon --lr 3e-4"}
SHIPPED=${INIT:-models/mirage-tiny.safetensors} # where the arms start
COMMON="--init $SHIPPED $DIT_RECIPE --device ${DEVICE:-cuda} --batch ${BATCH:-16} --size ${TRAIN_SIZE:-256}
 --seed 4 --log-every 100 --val-every 500 --steps ${DIT_STEPS:-3000} --time-limit ${DIT_SECONDS:-330}"
t0=$(date +%s)
g=0
names=""
echo "$ARMS" | {
    while read -r n flags; do
        # shellcheck disable=SC2086
        CUDA_VISIBLE_DEVICES=$g OMP_NUM_THREADS=${TRAIN_THREADS:-14} "$B/mirage" train dit $COMMON $flags \
            --out "$R/$n.safetensors" >"$O/train-$n.log" 2>&1 &
        g=$(((g + 1) % GPUS))
    done
    wait
}
names=$(echo "$ARMS" | awk '{print $1}')
echo "training: $(($(date +%s) - t0)) s"
for n in $names; do echo "$n: $(grep -E '^(val|done|stopped)' "$O/train-$n.log" | tail -n 2 | tr '\n' ' ')"; done
if [ "${EVAL:-1}" = 1 ]; then
    gunzip -c .evalclip/mm420.y4m.gz >"$R/clip.y4m" || exit 1
    t0=$(date +%s)
    EVAL_BATCH=16
    . "$(dirname "$0")/eval_lib.sh"
    for p in ${EVAL_PROMPTS:-style:toon style:sketch}; do
        for n in $names; do
            ev "$n" "$p" --model "$R/$n.safetensors" --steps 2
            ev "$n-steps4" "$p" --model "$R/$n.safetensors" --steps 4
        done
    done
    ev_done "$t0" "$O"
fi
tar cf "$O/logs.tar" -C "$O" $(cd "$O" && ls card.txt train-*.log) && rm -f "$O"/train-*.log
for n in ${KEEP:-}; do cp "$R/$n.safetensors" "$O/"; done # the arms whose models come back (9 MiB each)
ls -la "$O"
