#!/bin/sh
# Issue 6, the detail bar: does a sharper decoder lift the outputs' detail? One call of a GPU
# machine: the shipped model's decoder fine-tuned alone (--freeze-encoder: the latents, and so
# the DiT, do not move) with a detail term at several weights (DTERM=hf: the Laplacian loss,
# --hf-loss; DTERM=adv: the PatchGAN term, --adv), the arms side by side (arm k on GPU k mod
# GPUS), then every model evaluated the same way as dev/train/issue6.sh on the held-out clip;
# with STEPS_SWEEP=1 also the shipped model at 8 and 32 denoising steps (is the sampler the
# limit?). docs/RESULTS.md records the runs.
#
#   sh dev/train/issue6.sh clip    here: .evalclip/mm420.y4m.gz (the held-out clip)
#   sh dev/train/gpu.sh build      here: build-train/mirage and .devlibs
#   sh dev/train/hfdec.sh run      on the GPU machine (carry build-train/mirage, .devlibs, data,
#                                  .evalclip): the arms, the evaluations, a tar of every
#                                  metrics.json and log in $OUT, the arms' models
#
# Environment: TAE_SECONDS (100: each arm's time limit), TAE_STEPS (6000: the cosine's length),
# DTERM (hf), HF ("0 0.3 1 3": the arms' weights; 0 is the control: the same fine-tune without
# the term), LR (3e-4), GPUS (4), STEPS_SWEEP (1), AE_EVAL (1: the autoencoder alone too, on
# the CPU), FRAMES (1000; dream twice that); DEVICE=cpu BATCH=2 TAE_SECONDS=5 FRAMES=4 for a
# dry run here.
set -u
CLIP=.evalclip/mm420.y4m.gz
HF=${HF:-0 0.3 1 3}
DTERM=${DTERM:-hf}
case $DTERM in
hf) FLAG=--hf-loss ;;
adv) FLAG=--adv ;;
*) echo "hfdec.sh: DTERM is hf or adv, not $DTERM" >&2; exit 2 ;;
esac
GPUS=${GPUS:-4}
FRAMES=${FRAMES:-1000}
DEV=${DEVICE:-cuda}
LOGS=hfdec-logs
. "$(dirname "$0")/call.sh"
SHIPPED=models/mirage-tiny.safetensors
t0=$(date +%s)
g=0
for h in $HF; do
    CUDA_VISIBLE_DEVICES=$g OMP_NUM_THREADS=${TRAIN_THREADS:-3} "$B/mirage" train tae --init "$SHIPPED" $DEC_RECIPE \
        $FLAG "$h" --device "$DEV" --batch "${BATCH:-32}" --size 128 --lr "${LR:-3e-4}" \
        --steps "${TAE_STEPS:-6000}" --time-limit "${TAE_SECONDS:-100}" --out "$R/$DTERM$h.safetensors" >"$O/train-$DTERM$h.log" 2>&1 &
    g=$(((g + 1) % GPUS))
done
wait
echo "training: $(($(date +%s) - t0)) s"
for h in $HF; do echo "$DTERM $h: $(grep -E '^(val|done|stopped)' "$O/train-$DTERM$h.log" | tail -n 2 | tr '\n' ' ')"; done
gunzip -c "$CLIP" >"$R/clip.y4m" || exit 1
PROMPTS="colorize upscale restore style:toon style:sketch style:thermal dream"
t0=$(date +%s)
EVAL_BATCH=16 # 16 at a time: the CPU's 16 cores
. "$(dirname "$0")/eval_lib.sh"
for p in $PROMPTS; do
    for h in $HF; do ev "$DTERM$h" "$p" --model "$R/$DTERM$h.safetensors" --steps 2; done
    ev shipped "$p" --model "$SHIPPED" --steps 2
    if [ "${STEPS_SWEEP:-1}" = 1 ]; then
        ev shipped-steps8 "$p" --model "$SHIPPED" --steps 8
        ev shipped-steps32 "$p" --model "$SHIPPED" --steps 32
    fi
done
wait
# the autoencoder alone (CPU: encode, decode) for each decoder, the ceiling of every prompt
if [ "${AE_EVAL:-1}" = 1 ]; then
    for h in $HF; do
        OMP_NUM_THREADS=4 "$B/mirage" eval --model "$R/$DTERM$h.safetensors" --input "$R/clip.y4m" --size 256x256 \
            --prompt none --autoencoder --frames "$FRAMES" --report "$E/$DTERM$h/autoencoder" --quiet \
            >"$E/$DTERM$h/autoencoder.log" 2>&1 &
    done
    OMP_NUM_THREADS=4 "$B/mirage" eval --model "$SHIPPED" --input "$R/clip.y4m" --size 256x256 --prompt none \
        --autoencoder --frames "$FRAMES" --report "$E/shipped/autoencoder" --quiet >"$E/shipped/autoencoder.log" 2>&1
    wait
fi
# what comes back: the logs and every metrics.json in one tar; the frame strips of the shipped
# model and the strongest arm; the arms' models (9 MiB each in bf16)
ev_done "$t0" "$O"
tar cf "$O/logs.tar" -C "$O" $(cd "$O" && ls card.txt train-*.log) && rm -f "$O"/train-*.log
last=$(echo $HF | awk '{print $NF}')
(cd "$E" && find shipped "$DTERM$last" -name '*.png' | tar cf - -T -) >"$O/strips.tar"
if [ "$(wc -c <"$O/strips.tar")" -gt 15000000 ]; then # the return limit is 16 MiB a file
    (cd "$E" && find shipped/upscale shipped/restore "$DTERM$last/upscale" "$DTERM$last/restore" -name '*.png' | tar cf - -T -) \
        >"$O/strips.tar"
fi
for h in $HF; do [ "$h" != 0 ] && cp "$R/$DTERM$h.safetensors" "$O/"; done
ls -la "$O"
