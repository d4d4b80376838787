#!/bin/sh
# The kernel lab, the GPU tests and the benches in one call on the GPU machine.
#
#   sh dev/cuda/run.sh build   here, where cJSON and cmocka are installed: builds build-gpu/
#                              (CUDA=1, no FFmpeg/OpenBLAS/SDL2: the GPU machine has none) and
#                              copies the shared libraries the GPU machine lacks into .devlibs/
#   sh dev/cuda/run.sh run     on the GPU machine (carry build-gpu and .devlibs): card, peaks,
#                              make test-gpu's binary, benches (mirage and torch eager, same
#                              card), the lab; one combined log in $OUT/run.log
#
# Environment: BUILD (build-gpu), OUT (./gpu-logs), WITH_1B=1 adds config 1b at 512x512,
# STEP_TIMEOUT (seconds per step, 150).
set -u
B=${BUILD:-build-gpu}
if [ "${1:-run}" = build ]; then
    make BUILD="$B" CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 -j"$(nproc)" "$B/mirage" "$B/tests/gpu/test_cuda" lab || exit 1
    mkdir -p .devlibs
    for l in libcjson.so.1 libcmocka.so.0 libgomp.so.1; do cp -L "/usr/lib/x86_64-linux-gnu/$l" .devlibs/ || exit 1; done
    du -sh "$B" .devlibs
    exit 0
fi

O=${OUT:-gpu-logs}
mkdir -p "$O"
LOG=$O/run.log
: >"$LOG"
export LD_LIBRARY_PATH="$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MIRAGE_TESTDATA=tests/data PYTHONUNBUFFERED=1
T=${STEP_TIMEOUT:-150}
# step NAME CMD...: runs CMD with a time limit, appends its output to the log, prints a summary
step() {
    name=$1
    shift
    echo "==== $name: $*" >>"$LOG"
    t0=$(date +%s.%N)
    timeout "$T" "$@" >"$O/$name.tmp" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    cat "$O/$name.tmp" >>"$LOG"
    awk -v n="$name" -v r="$rc" -v a="$t0" -v b="$t1" 'BEGIN { printf "==== %s: rc=%d, %.1f s\n", n, r, b - a }' | tee -a "$LOG"
    grep -E "${GREP:-^(frame|host|encode|step|refresh|decode|work|memory|peaks|copy|gemm|v[0-9]|[di][0-9] |test_cuda|  [a-z].*(ok|FAIL)|\[  (PASSED|FAILED)|\[  FAILED|.*worst|.*rror|bench_torch|p50)}" "$O/$name.tmp" | head -n "${HEAD:-60}"
    rm -f "$O/$name.tmp"
}

nvidia-smi -L | tee -a "$LOG"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,memory.used,memory.total --format=csv >>"$LOG" 2>&1
step peaks "$B/dev/peaks"
set -- $(grep '^peaks:' "$LOG" | tail -n 1)
export MG_PEAK_GBS="${2:-0}" MG_PEAK_TFLOPS="${3:-0}"
step test_gpu "$B/tests/gpu/test_cuda"
step bench_s256 "$B/mirage" bench --config s --size 256x256 --steps 2 --device cuda --json
step torch_s256 python3 ref/bench_torch.py --model s --size 256x256 --steps 2 --device cuda --json
step bench_s512 "$B/mirage" bench --config s --size 512x512 --steps 2 --device cuda --json
step torch_s512 python3 ref/bench_torch.py --model s --size 512x512 --steps 2 --device cuda --json
step lab_attention "$B/dev/attention"
step lab_conv "$B/dev/conv3x3"
if [ -n "${WITH_1B:-}" ]; then
    step bench_1b512 "$B/mirage" bench --config 1b --size 512x512 --steps 2 --device cuda --iters 20 --json
fi
echo "==== done" | tee -a "$LOG"
