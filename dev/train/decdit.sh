#!/bin/sh
# Issue 6, toon's detail and colorize's drift in one call of two GPUs: the two halves of the
# model that train apart on the same latents, side by side. GPU 0 continues the DiT on a mix
# weighted to colorize and toon; GPU 1 fine-tunes the decoder alone (--freeze-encoder: the
# latents, and so every DiT trained on them, stay valid) in a few arms, each with the adversarial
# term and its own --train-prompts mix (stage tae trains on a prompt's input or styled target
# half the time, so a mix weighted to toon shows the decoder more of toon's hard edges). Then
# every decoder arm spliced under the new DiT (dev/train/splice.c). The models stay in
# $R/decdit for an evaluation call on the same warm machine (evalsteps.sh with MODELS) and come
# back in $OUT. docs/RESULTS.md records the runs.
#
#   sh dev/train/gpu.sh build            here: build-train/mirage, .devlibs; and the splice tool:
#   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -I/usr/include/cjson dev/train/splice.c \
#       src/core/safetensors.c src/core/status.c src/core/tmpfile.c -lcjson -lm -o build-train/splice
#   sh dev/train/decdit.sh               there (carry the binaries, .devlibs, data)
#
# Environment: INIT (the shipped model), DIT_MIX (the DiT's --train-prompts), DIT_SECONDS (470;
# 0: no DiT is trained, the arms go under the DiT of the model DIT and spread over the GPUs),
# PACE_MS (35: the DiT's expected ms a step, which sizes its cosine to 90% of DIT_SECONDS),
# SEED (7), DIT_LR (3e-4), DEC_ARMS ("NAME:W:MIX ...": each decoder arm's adversarial weight
# and --train-prompts, "-" for every prompt uniformly), DEC_SECONDS (200), DEC_STEPS (6000: the
# cosine's length), DEC_LR (1e-4), GPUS (2; 1 puts everything on GPU 0);
# DEVICE=cpu DIT_SECONDS=5 DEC_SECONDS=5 (and small batches and sizes) for a dry run here.
set -u
LOGS=decdit-logs
. "$(dirname "$0")/call.sh"
INIT=${INIT:-models/mirage-tiny.safetensors}
DIT_MIX=${DIT_MIX:-colorize=4,upscale,restore,style:toon=4,style:sketch=2,style:thermal,dream}
DIT_SECONDS=${DIT_SECONDS:-470}
DEC_ARMS=${DEC_ARMS:-toon3:0.03:colorize,upscale,restore,style:toon=4,style:sketch=2,style:thermal,dream toon45:0.045:colorize,upscale,restore,style:toon=4,style:sketch=2,style:thermal,dream plain3:0.03:-}
DEV=${DEVICE:-cuda}
D=$R/decdit
mkdir -p "$D"
G1=1
[ "${GPUS:-2}" -ge 2 ] || G1=0
sha256sum "$INIT" | tee -a "$O/card.txt"
t0=$(date +%s)
dit= # the DiT training's pid
if [ "$DIT_SECONDS" -gt 0 ]; then
    DIT=$D/dit.safetensors
    steps=$(awk -v s="$DIT_SECONDS" -v ms="${PACE_MS:-35}" 'BEGIN { printf "%d", 0.9 * s * 1000 / ms }')
    echo "dit: $steps steps in at most $DIT_SECONDS s, from $INIT, mix $DIT_MIX"
    CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=${DIT_THREADS:-10} "$B/mirage" train dit --init "$INIT" $DIT_RECIPE \
        --device "$DEV" --batch "${DIT_BATCH:-16}" --size "${DIT_SIZE:-256}" --seed "${SEED:-7}" --log-every 100 \
        --val-every 1000 --steps "$steps" --time-limit "$DIT_SECONDS" --lr "${DIT_LR:-3e-4}" \
        --train-prompts "$DIT_MIX" --out "$D/dit.safetensors" \
        >"$O/train-dit.log" 2>&1 &
    dit=$!
else
    DIT=${DIT:?DIT_SECONDS=0 needs DIT, the model whose DiT the arms go under}
    G1=0 # the arms spread over every GPU
fi
pids=""
for arm in $DEC_ARMS; do
    name=${arm%%:*} rest=${arm#*:}
    w=${rest%%:*} mix=${rest#*:}
    set -- --train-prompts "$mix"
    [ "$mix" != - ] || set --
    echo "decoder arm $name: --adv $w $*"
    CUDA_VISIBLE_DEVICES=$G1 OMP_NUM_THREADS=${DEC_THREADS:-2} "$B/mirage" train tae --init "$INIT" $DEC_RECIPE \
        --adv "$w" "$@" --device "$DEV" --batch "${DEC_BATCH:-32}" --size "${DEC_SIZE:-128}" --lr "${DEC_LR:-1e-4}" \
        --steps "${DEC_STEPS:-6000}" --time-limit "${DEC_SECONDS:-200}" --seed "${SEED:-7}" --out "$D/$name.safetensors" \
        >"$O/train-$name.log" 2>&1 &
    pids="$pids $!"
    [ -n "$dit" ] || G1=$(((G1 + 1) % ${GPUS:-2}))
done
fails=0
for p in $pids; do wait "$p" || fails=$((fails + 1)); done
echo "decoder arms: $(($(date +%s) - t0)) s, $fails failed"
[ -z "$dit" ] || wait "$dit" || { echo "dit failed:"; tail -n 5 "$O/train-dit.log"; }
echo "training: $(($(date +%s) - t0)) s"
for f in "$O"/train-*.log; do echo "$(basename "$f" .log): $(grep -E '^(val|done|stopped)' "$f" | tail -n 2 | tr '\n' ' ')"; done
[ -z "$dit" ] || grep -E '^step' "$O/train-dit.log" | tail -n 1
# every decoder under the new DiT
if [ -f "$DIT" ]; then
    for arm in $DEC_ARMS; do
        name=${arm%%:*}
        [ -f "$D/$name.safetensors" ] && "$B/splice" "$DIT" "$D/$name.safetensors" dec. "$D/dit+$name.safetensors"
    done
fi
sha256sum "$D"/*.safetensors | tee -a "$O/card.txt"
# what comes back: the logs in one tar, the new DiT and the decoder arms (the splices are made
# again here from those: dev/train/splice.c)
tar cf "$O/logs.tar" -C "$O" $(cd "$O" && ls card.txt ./*.log) && (cd "$O" && rm -f ./*.log)
for f in "$D"/*.safetensors; do case $f in *+*) ;; *) cp "$f" "$O/" ;; esac; done
ls -la "$O"
