#!/bin/sh
# Serving across GPUs (issue 8), measured in one call on a 2-GPU machine: total frames per
# second across many sessions, on 1 GPU and on 2, with build-serve/loadgen as the clients.
#
#   sh dev/serve/gpu.sh build   here: build-serve/ (CUDA, libwebsockets and TurboJPEG on; no
#                               FFmpeg, OpenBLAS, SDL2, libpng: the GPU machine has none) and the
#                               shared libraries the GPU machine lacks, in .devlibs-serve/
#   sh dev/serve/gpu.sh run     on the GPU machine (carry build-serve/mirage, build-serve/loadgen,
#                               build-serve/tests/gpu/test_cuda_shared, .devlibs-serve):
#                               test_cuda_shared, the --gpus errors, then for each model (the
#                               shipped tiny, config s random), size, and GPU set (0; 0,1): one
#                               server, loadgen at each session count. Writes to $OUT (./serve-logs):
#                               run.log (everything), results.jsonl (one loadgen JSON line per run,
#                               with model, size, gpus), stats.jsonl (the server's /stats after its
#                               runs: frames per GPU), smi.csv (nvidia-smi memory every 0.5 s).
#
# Environment: MODELS ("tiny s"), SIZES ("256 512"), SESSIONS ("1 4 16 32"), GPUSETS ("0 0,1"),
# WINDOW (2: the measured window per run, s), WARMUP (0.5), WORKERS (4: threads per GPU);
# DEVICE=cpu tries the script here without a GPU (no --gpus; GPUSETS=0).
set -u
B=${BUILD:-build-serve}
if [ "${1:-run}" = build ]; then
    nice make BUILD="$B" CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 JPEG=1 LWS=1 -j2 "$B/mirage" "$B/loadgen" \
        "$B/tests/gpu/test_cuda_shared" || exit 1
    mkdir -p .devlibs-serve
    for l in libwebsockets.so.17 libturbojpeg.so.0 libcjson.so.1 libgomp.so.1 libcmocka.so.0 libssl.so.3 \
        libcrypto.so.3 libcap.so.2 libz.so.1; do
        cp -L "/usr/lib/x86_64-linux-gnu/$l" .devlibs-serve/ || exit 1
    done
    du -sh "$B/mirage" "$B/loadgen" "$B/tests/gpu/test_cuda_shared" .devlibs-serve
    exit 0
fi

O=${OUT:-serve-logs}
mkdir -p "$O"
LOG=$O/run.log
: >"$LOG"
: >"$O/results.jsonl"
: >"$O/stats.jsonl"
export LD_LIBRARY_PATH="$PWD/.devlibs-serve${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0 MIRAGE_TESTDATA=tests/data
MODELS=${MODELS:-tiny s}
SIZES=${SIZES:-256 512}
SESSIONS=${SESSIONS:-1 4 16 32}
GPUSETS=${GPUSETS:-0 0,1}
WIN=${WINDOW:-2}
WARM=${WARMUP:-0.5}
WORKERS=${WORKERS:-4}
M=$B/mirage
L=$B/loadgen
START=$(date +%s)
BUDGET=${BUDGET:-260} # seconds from the start: no new server after this
say() { echo "== $*" | tee -a "$LOG"; }
stats() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$1/stats', timeout=5).read().decode())" 2>/dev/null; }

say "$(date -u +%FT%TZ) $(git log -1 --format=%h 2>/dev/null || echo '?') $(nvidia-smi -L | tr '\n' ';')"
nvidia-smi --query-gpu=timestamp,index,memory.used --format=csv,noheader -lms 500 >"$O/smi.csv" 2>&1 &
SMI=$!

say "test_cuda_shared"
timeout 120 "$B/tests/gpu/test_cuda_shared" >>"$LOG" 2>&1
say "test_cuda_shared exit $?"
say "serve --device cuda --gpus 0,7 (no GPU 7): must exit 1 with a message"
timeout 30 "$M" serve --config tiny --device cuda --gpus 0,7 --port 0 --quiet >>"$LOG" 2>&1
say "exit $?"

for model in $MODELS; do
    if [ "$model" = tiny ]; then src="--model models/mirage-tiny.safetensors"; else src="--config $model"; fi
    for size in $SIZES; do
        for gpus in $GPUSETS; do
            if [ $(($(date +%s) - START)) -gt "$BUDGET" ]; then say "out of time: $model ${size}x$size --gpus $gpus not run"; continue; fi
            say "$(date +%T.%N | cut -c1-12) server: $model ${size}x$size --gpus $gpus --workers $WORKERS"
            rm -f "$O/port"
            # shellcheck disable=SC2086
            if [ "${DEVICE:-cuda}" = cuda ]; then dev="--device cuda --gpus $gpus"; else dev="--device cpu"; fi
            # shellcheck disable=SC2086
            "$M" serve $src $dev --workers "$WORKERS" --size "${size}x$size" --port 0 \
                --port-file "$O/port" --max-sessions 64 --max-fps 10000 --idle-timeout 60 >"$O/serve.tmp" 2>&1 &
            SPID=$!
            i=0
            while [ ! -s "$O/port" ] && [ $i -lt 600 ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
            PORT=$(cat "$O/port" 2>/dev/null)
            if [ -z "$PORT" ]; then say "server did not start"; cat "$O/serve.tmp" >>"$LOG"; continue; fi
            for n in $SESSIONS; do
                t0=$(date +%T.%N | cut -c1-12)
                timeout 40 "$L" --port "$PORT" --sessions "$n" --seconds "$WIN" --warmup "$WARM" --first-timeout 25 \
                    --json "$O/one.json" --quiet >>"$LOG" 2>&1
                rc=$?
                t1=$(date +%T.%N | cut -c1-12)
                if [ -s "$O/one.json" ]; then
                    sed "s/^{/{\"model\":\"$model\",\"gpus\":\"$gpus\",\"workers_per_gpu\":$WORKERS,\"rc\":$rc,\"t0\":\"$t0\",\"t1\":\"$t1\",/" \
                        "$O/one.json" >>"$O/results.jsonl"
                fi
                rm -f "$O/one.json"
            done
            printf '{"model":"%s","size":%s,"gpus":"%s","stats":%s}\n' "$model" "$size" "$gpus" "$(stats "$PORT" || echo null)" \
                >>"$O/stats.jsonl"
            kill -TERM "$SPID"
            wait "$SPID"
            say "server exit $?"
            grep -E "GPU [0-9]+:|workers|sessions per GPU|stopping|error" "$O/serve.tmp" | grep -v "^mirage serve | 0 sessions" |
                awk '/sessions per GPU/ { n++; if (n % 3) next } { print }' >>"$LOG"
        done
    done
done
rm -f "$O/serve.tmp" "$O/port"
kill "$SMI" 2>/dev/null
say "$(date -u +%FT%TZ) done"
