#!/usr/bin/env bash
# Evaluates a trained model the way docs/RESULTS.md reports it: the autoencoder alone on the
# held-out clip, then every prompt over FRAMES generated frames (the clip played back and
# forth), each against its ground truth. Prints one markdown table; the reports (HTML, PNG
# strips, metrics.json) stay under OUTDIR.
#
#   bash scripts/eval_model.sh [MODEL] [CLIP] [OUTDIR]
#
# Defaults: models/mirage-tiny.safetensors, opencv-doc's Megamind.avi (the held-out video of
# `make data`), eval-model/. SKIP (5) drops the clip's first frames (losslessly re-encoded with
# the ffmpeg CLI): Megamind.avi opens with a black frame, after which the shipped model does not
# recover (docs/RESULTS.md reports that run on its own: SKIP=0). Environment: SIZE (256x256),
# FRAMES (1000), STEPS (2), GUIDANCE (1), SEED (0) (`STEPS=4 GUIDANCE=2`: the long-stream setting),
# PROMPTS ("colorize upscale restore style:toon style:sketch style:thermal dream"), DEVICE (cpu),
# M (build/mirage), TABLE_ONLY=1 (print the table of an earlier run). Needs jq (installed with apt-get when missing).
set -euo pipefail
MODEL=${1:-models/mirage-tiny.safetensors}
CLIP=${2:-/usr/share/doc/opencv-doc/examples/data/Megamind.avi}
OUTDIR=${3:-eval-model}
M=${M:-build/mirage}
SIZE=${SIZE:-256x256}
FRAMES=${FRAMES:-1000}
STEPS=${STEPS:-2}
GUIDANCE=${GUIDANCE:-1}
SEED=${SEED:-0}
PROMPTS=${PROMPTS:-colorize upscale restore style:toon style:sketch style:thermal dream}
command -v jq >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo; $SUDO apt-get install -y -qq jq >/dev/null; }
[ -f "$CLIP" ] || { echo "eval_model: $CLIP not found (make data installs opencv-doc)" >&2; exit 1; }
mkdir -p "$OUTDIR"
SKIP=${SKIP:-5}
if [ "$SKIP" -gt 0 ]; then
    ffmpeg -loglevel error -y -i "$CLIP" -an -vf "select=gte(n\\,$SKIP)" -vsync 0 -c:v ffv1 "$OUTDIR/clip.mkv"
    CLIP_NAME="$CLIP from frame $SKIP"
    CLIP=$OUTDIR/clip.mkv
fi

echo "mirage eval_model: $MODEL on ${CLIP_NAME:-$CLIP} at $SIZE, $FRAMES frames, $STEPS steps, guidance $GUIDANCE, seed $SEED ($(date -u +%F), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
[ -n "${TABLE_ONLY:-}" ] || "$M" eval --model "$MODEL" --input "$CLIP" --size "$SIZE" --prompt none --autoencoder --frames "$FRAMES" \
    --report "$OUTDIR/autoencoder" --quiet
for p in $PROMPTS; do
    [ -n "${TABLE_ONLY:-}" ] && break
    "$M" eval --model "$MODEL" --input "$CLIP" --size "$SIZE" --prompt "$p" --steps "$STEPS" --guidance "$GUIDANCE" \
        --seed "$SEED" --frames "$FRAMES" --device "${DEVICE:-cpu}" --report "$OUTDIR/${p/:/-}" --quiet
done
echo
bash "$(dirname "$0")/eval_table.sh" "$OUTDIR"
echo
echo "(dream has no per-frame truth: its PSNR is against the clip it was started from; judge it by"
echo " the colour and detail statistics in $OUTDIR/dream/index.html)"
