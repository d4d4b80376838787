#!/bin/sh
# The DiT stage's step on a GPU machine, old encode path against new, in one call (docs/RESULTS.md,
# "trainer step"): the frozen encoder's test (tests/gpu/test_cuda_train_encode.c: latents vs the
# CPU, speed of both encoders on a batch's 96 frames), then `mirage train dit` for SECONDS each
# (default 30) with MG_TRAIN_ENCODE=tae (the training autoencoder's cuda_tae_encode on the main
# thread, as before) and with the default (cuda_tae_encoder; on the batch thread at commit b7cd1f0,
# whose figures docs/RESULTS.md records, on the main thread since e2cb960).
#
#   here:            sh dev/train/gpu.sh build && make BUILD=build-train CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 \
#                    LWS=0 JPEG=1 build-train/tests/gpu/test_cuda_train_encode && cp -L \
#                    /usr/lib/x86_64-linux-gnu/libcmocka.so.0 .devlibs/
#   GPU machine:     OUT=$OUT sh dev/train/encode_ab.sh   (carry build-train/mirage,
#                    build-train/tests/gpu/test_cuda_train_encode, .devlibs, data)
set -u
B=${BUILD:-build-train}
O=${OUT:-train-logs}
S=${SECONDS_EACH:-30}
mkdir -p "$O"
export LD_LIBRARY_PATH="$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi -L | tee "$O/card.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$O/card.txt"
timeout 120 "$B/tests/gpu/test_cuda_train_encode" >"$O/test_cuda_train_encode.log" 2>&1
echo "test_cuda_train_encode: rc $?" | tee -a "$O/test_cuda_train_encode.log"
grep -E "frames|FAIL|PASSED|FAILED" "$O/test_cuda_train_encode.log"
for mode in tae encoder; do
    # shellcheck disable=SC2086
    MG_TRAIN_ENCODE=$mode timeout $((S + 60)) "$B/mirage" train dit --init "${DIT_INIT:-models/mirage-tiny.safetensors}" \
        --data data --out "/tmp/ab-$mode.safetensors" --ckpt "/tmp/ab-$mode.ckpt" --device cuda --steps 8000 \
        --time-limit "$S" --log-every 10 --val-every 0 --sample-every 0 --ckpt-every 0 \
        ${DIT_ARGS:---batch 16 --frames 6 --size 256} >"$O/ab-$mode.log" 2>&1
    echo "train dit, MG_TRAIN_ENCODE=$mode: rc $?" | tee -a "$O/ab-$mode.log"
    grep -E "^(device|  encode|stopped|done)|error" "$O/ab-$mode.log"
    grep '^step' "$O/ab-$mode.log" | tail -n 4
done
