#!/bin/sh
# Trains the shipped model on a GPU machine, one call of at most 10 minutes (the device tool's
# limit), the way docs/TRAINING.md records it.
#
#   sh dev/train/gpu.sh build    here (Debian, with cJSON and libjpeg-turbo): builds build-train/mirage
#                                (CUDA, libjpeg-turbo for the shards; no FFmpeg/OpenBLAS/SDL2/libpng,
#                                which the GPU machine lacks) and copies the shared libraries it
#                                lacks into .devlibs/
#   sh dev/train/gpu.sh run      on the GPU machine (carry build-train/mirage, .devlibs and data):
#                                STAGES (default "tae dit") in turn, each with its own time limit;
#                                logs, the model file and samples in $OUT
#
# Environment (run): CONFIG (tiny: docs/TRAINING.md says why), TAE_SECONDS (200), DIT_SECONDS (330), TAE_STEPS (12000),
# DIT_STEPS (8000), TAE_ARGS / DIT_ARGS (extra flags), RUNS (runs: checkpoints and the
# autoencoder stay here, on the machine's disk, for a --resume call while it is warm),
# RESUME=1 adds --resume to the dit stage, DIT_INIT starts the dit stage from another model file
# (a trained autoencoder, or a whole model to continue from: a warm start with fresh moments).
set -u
B=${BUILD:-build-train} # its own folder: its flags (JPEG=1) differ from dev/cuda/run.sh's
if [ "${1:-run}" = build ]; then
    make BUILD="$B" CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 LWS=0 JPEG=1 -j"$(nproc)" "$B/mirage" || exit 1
    mkdir -p .devlibs
    for l in libcjson.so.1 libgomp.so.1 libturbojpeg.so.0; do cp -L "/usr/lib/x86_64-linux-gnu/$l" .devlibs/ || exit 1; done
    du -sh "$B/mirage" .devlibs data
    exit 0
fi

O=${OUT:-train-logs}
R=${RUNS:-runs}
C=${CONFIG:-tiny}
mkdir -p "$O" "$R"
export LD_LIBRARY_PATH="$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi -L | tee "$O/card.txt"
"$B/mirage" --version | tee -a "$O/card.txt"
"$B/mirage" data info data | tee -a "$O/card.txt"
for stage in ${STAGES:-tae dit}; do
    case $stage in
    tae)
        # shellcheck disable=SC2086
        "$B/mirage" train tae --config "$C" --data data --out "$R/tae.safetensors" --device cuda \
            --steps "${TAE_STEPS:-12000}" --time-limit "${TAE_SECONDS:-200}" --log-every 100 \
            --samples "$R/tae-samples" ${TAE_ARGS:-} >"$O/tae.log" 2>&1
        rc=$?
        grep -v '^step' "$O/tae.log" | tail -n 30
        [ $rc = 0 ] || { echo "tae stage failed (rc $rc)"; break; }
        ;;
    dit)
        # shellcheck disable=SC2086
        "$B/mirage" train dit --init "${DIT_INIT:-$R/tae.safetensors}" --data data --out "$O/mirage-$C.safetensors" --dtype bf16 \
            --device cuda \
            --ckpt "$R/dit.ckpt" --steps "${DIT_STEPS:-8000}" --time-limit "${DIT_SECONDS:-330}" --log-every 100 \
            --samples "$R/dit-samples" ${RESUME:+--resume} ${DIT_ARGS:-} >>"$O/dit.log" 2>&1
        rc=$?
        grep -v '^step' "$O/dit.log" | tail -n 30
        [ $rc = 0 ] || { echo "dit stage failed (rc $rc)"; break; }
        ;;
    esac
done
# what comes back (at most 8 files): card.txt, the logs, the model in bf16 (the f32 file is over
# the 16 MiB a returned file may be), the latest samples in one tar
[ -f "$O/mirage-$C.safetensors" ] && "$B/mirage" info "$O/mirage-$C.safetensors" >>"$O/card.txt" 2>&1
ls -la "$R" >>"$O/card.txt"
( cd "$R" && ls -t tae-samples/* 2>/dev/null | head -n 4; ls -t dit-samples/* 2>/dev/null | head -n 8 ) >"$R/keep.txt"
tar cf "$O/samples.tar" -C "$R" -T "$R/keep.txt" 2>/dev/null
