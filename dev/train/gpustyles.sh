#!/bin/sh
# The toon and sketch targets made on the GPU (src/cuda/style.cu): the byte-for-byte test, an A/B
# of the trainer's step with the targets made on the CPU (MG_TRAIN_STYLES=cpu) and on the GPU,
# then, when the test passes, a long weighted-mix run sized from the GPU side's pace, and that
# model evaluated on the held-out clip (evalsteps.sh). docs/RESULTS.md records the runs.
#
#   sh dev/train/gpu.sh build                                   here, then build-gpu's test:
#   make BUILD=build-gpu CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 JPEG=0 LWS=0 build-gpu/tests/gpu/test_cuda_train_encode
#   sh dev/train/gpustyles.sh                                   there (carry the binaries, .devlibs, data,
#                                                               and .evalclip for EVAL_STEPS)
#
# Environment: TEST (1: run the test first), AB ("cpu gpu": the sides timed, AB_STEPS (200) each;
# the last one sizes the long run), TRAIN_SECONDS (370: the long run's budget; 0 skips it), MIX
# (its --train-prompts list), INIT (the model it starts from: the shipped one), SEED (4), GPUS
# (1: --gpus for every run), EVAL_STEPS (""; e.g. "2 4": evaluate the long run's model at those
# step counts, at each of GUIDANCE). The long run's model comes back as $OUT/mix.safetensors.
set -u
LOGS=styles-logs
. "$(dirname "$0")/call.sh"
G=${GPUS:-1}
if [ "${TEST:-1}" = 1 ]; then
    build-gpu/tests/gpu/test_cuda_train_encode >"$O/test_cuda_train_encode.log" 2>&1
    rc=$?
    tail -n 12 "$O/test_cuda_train_encode.log"
    [ $rc = 0 ] || { echo "test_cuda_train_encode failed (rc $rc): no training"; exit 1; }
fi
MIX=${MIX:-colorize,upscale,restore,style:toon=3,style:sketch=3,style:thermal,dream}
INIT=${INIT:-models/mirage-tiny.safetensors}
train() { # train NAME STEPS SECONDS LOG_EVERY VAL_EVERY: one run of the mix from INIT
    OMP_NUM_THREADS=${TRAIN_THREADS:-14} "$B/mirage" train dit --init "$INIT" $DIT_RECIPE --gpus "$G" \
        --batch 16 --size 256 --seed "${SEED:-4}" --log-every "$4" --val-every "$5" --steps "$2" --time-limit "$3" --lr 3e-4 \
        --train-prompts "$MIX" --out "$R/$1.safetensors" >"$O/train-$1.log" 2>&1 || { tail -n 5 "$O/train-$1.log"; return 1; }
}
AB_STEPS=${AB_STEPS:-200}
wall=0
for side in ${AB:-cpu gpu}; do
    t0=$(date +%s.%N)
    if ! MG_TRAIN_STYLES=$side train "ab-$side" "$AB_STEPS" 120 50 0; then
        [ "$G" != 1 ] || exit 1
        echo "--gpus $G failed: on with --gpus 1"
        G=1
        t0=$(date +%s.%N)
        MG_TRAIN_STYLES=$side train "ab-$side" "$AB_STEPS" 120 50 0 || exit 1
    fi
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    echo "$side: $AB_STEPS steps, $wall s wall; $(grep -E '^step' "$O/train-ab-$side.log" | tail -n 1)"
done
S=${TRAIN_SECONDS:-370}
[ "$S" -gt 0 ] || exit 0
# the cosine's length: the steps the last side's pace (its log's step time, an average over the
# last steps) fits in 90% of S, so the schedule ends before the time limit does
ms=$(grep -E '^step' "$O/train-ab-$side.log" | tail -n 1 | grep -o -E '[0-9.]+ ms \(' | grep -o -E '^[0-9.]+')
steps=$(awk -v s="$S" -v ms="${ms:-0}" -v n="$AB_STEPS" -v w="$wall" 'BEGIN { printf "%d", (ms > 0 ? 0.9 * s * 1000 / ms : s * n / w) }')
echo "long run: $steps steps in at most $S s, from $INIT"
train mix "$steps" $((S + 30)) 100 1000 || exit 1
grep -E '^(val|done|stopped)' "$O/train-mix.log" | tail -n 3
cp "$R/mix.safetensors" "$O/"
if [ -n "${EVAL_STEPS:-}" ]; then
    OUT=$O MODEL=$R/mix.safetensors STEPS=$EVAL_STEPS GPUS=$G EVAL_BATCH=${EVAL_BATCH:-16} \
        sh "$(dirname "$0")/evalsteps.sh" | grep -E "evaluation|error"
fi
tar cf "$O/logs.tar" -C "$O" $(cd "$O" && ls card.txt ./*.log) && (cd "$O" && rm -f ./*.log)
ls -la "$O"
