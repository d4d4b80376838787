#!/bin/sh
# Issue 6 in one call of a 4-GPU machine: the history-augmentation ablation and a longer run,
# trained side by side (one GPU each), then every model evaluated the same way on the held-out
# clip (docs/RESULTS.md "Issue 6: the ablation" records a run of this script).
#
#   sh dev/train/issue6.sh clip    here: the held-out clip as a gzipped y4m the GPU machine can
#                                  read without FFmpeg (.evalclip/mm420.y4m.gz: Megamind.avi
#                                  from frame 5, scaled to 256 high with FFmpeg's area filter,
#                                  centre-cropped to 256x256, 4:2:0, 265 frames)
#   sh dev/train/gpu.sh build      here: build-train/mirage and .devlibs
#   sh dev/train/issue6.sh run     on the GPU machine (carry build-train/mirage, .devlibs, data,
#                                  .evalclip): the four arms, the evaluations, tars in $OUT
#
# The arms (same recipe: --fades 0.1 --sigma-ctx 0.1, batch 16 x 6 frames of 256x256, bf16 file):
#   GPU 0 histaug   fresh DiT (seed 1) on the shipped autoencoder, history augmentation on
#   GPU 1 nohist    the same, history augmentation off           (the ablation's other arm)
#   GPU 2 histaug2  as histaug with seed 2 (another init and data order: the seed spread)
#   GPU 3 warm      the shipped DiT continued with the recipe (--lr 2e-4); evaluated at 2 and 4 steps
# Environment: DIT_SECONDS (330), DIT_STEPS (the cosine's length; 16000), FRAMES (1000; dream
# twice that), EXTRA (more train flags for every arm); DEVICE, BATCH, TRAIN_SIZE for a dry run
# on a CPU (DEVICE=cpu BATCH=2 TRAIN_SIZE=32 DIT_SECONDS=5 FRAMES=4).
set -u
CLIP=.evalclip/mm420.y4m.gz
if [ "${1:-run}" = clip ]; then
    src=${2:-/usr/share/doc/opencv-doc/examples/data/Megamind.avi}
    mkdir -p .evalclip
    ffmpeg -loglevel error -y -i "$src" -an -vf "select=gte(n\\,5),scale=-2:256:flags=area,crop=256:256" -vsync 0 \
        -pix_fmt yuv420p -strict -1 -f yuv4mpegpipe - | gzip -9 >"$CLIP.tmp" && mv "$CLIP.tmp" "$CLIP" || exit 1
    ls -la "$CLIP"
    exit 0
fi

LOGS=issue6-logs
. "$(dirname "$0")/call.sh"
SECS=${DIT_SECONDS:-330}
STEPS=${DIT_STEPS:-16000}
FRAMES=${FRAMES:-1000}
SHIPPED=models/mirage-tiny.safetensors
COMMON="--data data --dtype bf16 --device ${DEVICE:-cuda} --batch ${BATCH:-16} --frames 6 --size ${TRAIN_SIZE:-256} --log-every 100 --sample-every 0
 --val-every 500 --ckpt-every 2000 --time-limit $SECS --steps $STEPS --fades 0.1 --sigma-ctx 0.1 ${EXTRA:-}"
arm() { # arm GPU NAME FLAGS...
    g=$1 n=$2
    shift 2
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$g OMP_NUM_THREADS=${TRAIN_THREADS:-14} "$B/mirage" train dit $COMMON --out "$R/$n.safetensors" "$@" \
        >"$O/train-$n.log" 2>&1
    echo "arm $n (GPU $g): rc $?, $(grep -c '^step' "$O/train-$n.log") step lines; $(tail -n 1 "$O/train-$n.log")"
}
t0=$(date +%s)
arm 0 histaug --init "$SHIPPED" --fresh-dit --seed 1 --hist-aug 1 &
arm 1 nohist --init "$SHIPPED" --fresh-dit --seed 1 --hist-aug 0 &
arm 2 histaug2 --init "$SHIPPED" --fresh-dit --seed 2 --hist-aug 1 &
arm 3 warm --init "$SHIPPED" --seed 3 --hist-aug 1 --lr 2e-4 &
wait
echo "training: $(($(date +%s) - t0)) s"
for n in histaug nohist histaug2 warm; do grep -E '^(val|stopped|done)' "$O/train-$n.log" | tail -n 3; done

# evaluation: the clip on local disk, every prompt, one process per (model, prompt), GPUs round robin
gunzip -c "$CLIP" >"$R/clip.y4m" || exit 1
PROMPTS="colorize upscale restore style:toon style:sketch style:thermal dream"
t0=$(date +%s)
. "$(dirname "$0")/eval_lib.sh"
for p in $PROMPTS; do
    ev ablation "$p" --steps 2 --model "$R/histaug.safetensors" --compare "$R/nohist.safetensors"
    ev histaug2 "$p" --steps 2 --model "$R/histaug2.safetensors"
    ev warm "$p" --steps 2 --model "$R/warm.safetensors"
    ev shipped "$p" --steps 2 --model "$SHIPPED"
    ev warm-steps4 "$p" --model "$R/warm.safetensors" --steps 4
done
OMP_NUM_THREADS=8 "$B/mirage" eval --model "$SHIPPED" --input "$R/clip.y4m" --size 256x256 --prompt none \
    --autoencoder --frames "$FRAMES" --report "$E/autoencoder" --quiet >"$E/autoencoder.log" 2>&1 &
wait
echo "evaluation: $(($(date +%s) - t0)) s"
grep -l -i -E "error|fail" "$E"/*/*.log "$E"/*.log 2>/dev/null | head

# what comes back (at most 8 files, 16 MiB each): the logs with card.txt, one tar of reports
# per model (HTML, SVG plots, PNG strips, metrics.json), the two candidate models
cp "$E"/*.log "$O/" 2>/dev/null
tar cf "$O/logs.tar" -C "$O" $(cd "$O" && ls card.txt train-*.log autoencoder.log 2>/dev/null) || echo "logs.tar failed"
rm -f "$O"/train-*.log "$O/card.txt" "$O/autoencoder.log"
for n in ablation warm shipped histaug2; do
    extra=""
    [ $n = histaug2 ] && extra=autoencoder
    [ $n = warm ] && extra=warm-steps4
    ( cd "$E" && tar cf - $n $extra ) >"$O/report-$n.tar"
done
cp "$R/histaug.safetensors" "$R/warm.safetensors" "$O/" 2>/dev/null
ls -la "$O"
