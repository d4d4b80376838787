#!/bin/sh
# Issue 6, the detail bar on the DiT's side: the shipped DiT fine-tuned with the adversarial term
# on the latent (`mirage train dit --adv W`, src/train/adv.h: D judges the one-step estimate of
# every frame at sigma >= 0.25) at several weights, side by side (arm k on GPU k mod GPUS), then
# every model evaluated as in dev/train/issue6.sh and hfdec.sh on the held-out clip (2 steps, and
# 4 with STEPS4=1). W = 0 is the control: the same fine-tune without the term. docs/RESULTS.md
# records the runs.
#
#   sh dev/train/issue6.sh clip     here: .evalclip/mm420.y4m.gz (the held-out clip)
#   sh dev/train/gpu.sh build       here: build-train/mirage and .devlibs
#   sh dev/train/advdit.sh check    on a GPU machine: a short run of each stage's --adv on the GPU
#                                   (the step line's figures and D's host time), logs in $OUT
#   sh dev/train/advdit.sh run      on the GPU machine (carry build-train/mirage, .devlibs, data,
#                                   .evalclip): the arms, the evaluations, a tar of every
#                                   metrics.json and log in $OUT, the arms' models
#
# Environment: W ("0 0.01 0.03 0.1": the arms' weights), DIT_SECONDS (270: each arm's time
# limit), DIT_STEPS (3000: the cosine's length), LR (1e-4), GPUS (4), STEPS4 (1), FRAMES (1000;
# dream twice that), TRAIN_THREADS (OpenMP threads per arm, 14), EXTRA (more train flags for
# every arm, e.g. "--adv-lr 2e-3 --adv-start 200"), KEEP (the arms whose models come back: W);
# DEVICE=cpu BATCH=2 TRAIN_SIZE=64 DIT_SECONDS=5 FRAMES=4 GPUS=1 for a dry run here.
set -u
CLIP=.evalclip/mm420.y4m.gz
LOGS=advdit-logs
. "$(dirname "$0")/call.sh"
WS=${W:-0 0.01 0.03 0.1}
GPUS=${GPUS:-4}
FRAMES=${FRAMES:-1000}
DEV=${DEVICE:-cuda}
SHIPPED=models/mirage-tiny.safetensors
COMMON="--init $SHIPPED $DIT_RECIPE --device $DEV --batch ${BATCH:-16} --size ${TRAIN_SIZE:-256} --seed 4
 --lr ${LR:-1e-4} --log-every 100 --val-every 500 ${EXTRA:-}"

if [ "${1:-run}" = check ]; then
    # shellcheck disable=SC2086
    "$B/mirage" train dit $COMMON --adv 0.03 --steps 30 --log-every 5 --val-every 0 --out "$R/check-dit.safetensors" \
        2>&1 | tee "$O/check-dit.log"
    echo "rc $?" | tee -a "$O/check-dit.log"
    # shellcheck disable=SC2086
    "$B/mirage" train dit $COMMON --steps 30 --log-every 5 --val-every 0 --out "$R/check-plain.safetensors" \
        2>&1 | tee "$O/check-plain.log"
    exit 0
fi

t0=$(date +%s)
g=0
for w in $WS; do
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$g OMP_NUM_THREADS=${TRAIN_THREADS:-14} "$B/mirage" train dit $COMMON --adv "$w" \
        --steps "${DIT_STEPS:-3000}" --time-limit "${DIT_SECONDS:-270}" --out "$R/dadv$w.safetensors" \
        >"$O/train-dadv$w.log" 2>&1 &
    g=$(((g + 1) % GPUS))
done
wait
echo "training: $(($(date +%s) - t0)) s"
for w in $WS; do echo "dadv $w: $(grep -E '^(step|val|done|stopped)' "$O/train-dadv$w.log" | tail -n 3 | tr '\n' ' ')"; done
gunzip -c "$CLIP" >"$R/clip.y4m" || exit 1
PROMPTS="colorize upscale restore style:toon style:sketch style:thermal dream"
t0=$(date +%s)
EVAL_BATCH=16 # 16 at a time: the CPU's cores
. "$(dirname "$0")/eval_lib.sh"
for p in $PROMPTS; do
    for w in $WS; do
        ev "dadv$w" "$p" --model "$R/dadv$w.safetensors" --steps 2
        [ "${STEPS4:-1}" = 1 ] && ev "dadv$w-steps4" "$p" --model "$R/dadv$w.safetensors" --steps 4
    done
done
ev_done "$t0" "$O"
# what comes back: the logs and every metrics.json in one tar; the toon and sketch strips of
# every arm; the arms' models (9 MiB each in bf16)
tar cf "$O/logs.tar" -C "$O" $(cd "$O" && ls card.txt train-*.log) && rm -f "$O"/train-*.log
(cd "$E" && find . -path '*style-toon/*.png' -o -path '*style-sketch/*.png' -o -path '*upscale/*.png' | grep -v steps4 |
    tar cf - -T -) >"$O/strips.tar"
if [ "$(wc -c <"$O/strips.tar")" -gt 15000000 ]; then # the return limit is 16 MiB a file
    (cd "$E" && find . -path '*style-toon/strip_000999.png' -o -path '*style-sketch/strip_000999.png' | tar cf - -T -) \
        >"$O/strips.tar"
fi
for w in ${KEEP:-$WS}; do [ "$w" != 0 ] && cp "$R/dadv$w.safetensors" "$O/"; done
ls -la "$O"
