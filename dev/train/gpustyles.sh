#!/bin/sh
# The toon and sketch targets made on the GPU (src/cuda/style.cu): the byte-for-byte test, an A/B
# of the trainer's step with the targets made on the CPU (MG_TRAIN_STYLES=cpu) and on the GPU,
# then, when the test passes, a long weighted-mix run (focus.sh) sized from the GPU arm's speed.
#
#   sh dev/train/gpu.sh build                                   here, then build-gpu's test:
#   make BUILD=build-gpu CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 JPEG=0 LWS=0 build-gpu/tests/gpu/test_cuda_train_encode
#   sh dev/train/gpustyles.sh                                   there (carry the binaries, .devlibs, data)
#
# Environment: AB_STEPS (200 a side), TRAIN_SECONDS (370: the long run's budget; 0 skips it),
# MIX (its --train-prompts list), GPUS (1).
set -u
B=${BUILD:-build-train}
O=${OUT:-styles-logs}
R=${RUNS:-runs}
mkdir -p "$O" "$R"
export LD_LIBRARY_PATH="$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
build-gpu/tests/gpu/test_cuda_train_encode >"$O/test_cuda_train_encode.log" 2>&1
rc=$?
tail -n 12 "$O/test_cuda_train_encode.log"
[ $rc = 0 ] || { echo "test_cuda_train_encode failed (rc $rc): no training"; exit 1; }
MIX=${MIX:-colorize,upscale,restore,style:toon=3,style:sketch=3,style:thermal,dream}
AB=${AB_STEPS:-200}
for side in cpu gpu; do
    t0=$(date +%s.%N)
    MG_TRAIN_STYLES=$side OMP_NUM_THREADS=${TRAIN_THREADS:-14} "$B/mirage" train dit --init models/mirage-tiny.safetensors \
        --data data --dtype bf16 --device cuda --batch 16 --frames 6 --size 256 --fades 0.1 --hist-aug 1 --seed 4 \
        --warmup 50 --log-every 50 --sample-every 0 --val-every 0 --ckpt-every 0 --steps "$AB" --lr 3e-4 \
        --train-prompts "$MIX" --out "$R/ab-$side.safetensors" >"$O/ab-$side.log" 2>&1 || { tail -n 5 "$O/ab-$side.log"; exit 1; }
    t1=$(date +%s.%N)
    w=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    echo "$side: $AB steps, $w s wall; $(grep -E '^step' "$O/ab-$side.log" | tail -n 1)"
    eval "wall_$side=$w"
done
S=${TRAIN_SECONDS:-370}
[ "$S" -gt 0 ] || exit 0
# the cosine's length: the steps the GPU arm's pace fits in S (its wall time counts start-up: a
# few percent short, so the schedule ends before the time limit does)
steps=$(awk -v s="$S" -v n="$AB" -v w="$wall_gpu" 'BEGIN { printf "%d", s * n / w }')
echo "long run: $steps steps in at most $S s"
OUT=$O GPUS=${GPUS:-1} KEEP=mix3 EVAL=0 DIT_STEPS=$steps DIT_SECONDS=$((S + 30)) \
    ARMS="mix3 --train-prompts $MIX --lr 3e-4" sh "$(dirname "$0")/focus.sh"
