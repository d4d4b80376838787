#!/bin/sh
# The GPU tests, the benches (mirage, torch eager, torch.compile) and the lab in one call on
# the GPU machine.
#
#   sh dev/cuda/run.sh build   here, where cJSON and cmocka are installed: builds build-gpu/
#                              (CUDA=1, no FFmpeg/OpenBLAS/SDL2/libpng: the GPU machine has
#                              none) and copies the shared libraries it lacks into .devlibs/
#   sh dev/cuda/run.sh run     on the GPU machine (carry build-gpu/{mirage,tests/gpu/test_cuda,
#                              dev} and .devlibs): card, peaks, make test-gpu's binary (the
#                              defaults; fallbacks if it fails), mirage against its own
#                              settings (A/B on the same card), torch eager and torch.compile,
#                              the lab; one combined log in $OUT/run.log
#
# Environment: BUILD (build-gpu), OUT (./gpu-logs), SIZES ("256 512": mirage A/B sizes),
# VARIANTS ("base fused pdl convsplit nohalo": the A/B settings at each size; also "halo",
# "again"), HALO=0 skips the suite and the 1b bench with MG_CUDA_CONVHALO=0 (conv v5 off),
# PROFILE=1 adds ncu per-kernel times of one s frame (PROFILE_SIZE 256x256) for the defaults
# and MG_CUDA_FUSED=1 ($OUT/ncu_*.csv), TORCH_EAGER=0 skips torch eager, WITH_1B=1 adds
# config 1b at 512x512, COMPILE="256 512" (the sizes torch.compile runs at, ~4.5 minutes
# each; "" for none; past the first, only while COMPILE_NEED seconds (330) of BUDGET (570,
# from the start of the script) are left), LAB=1 runs the kernel lab, STEP_TIMEOUT (seconds
# per step, 90; torch.compile gets 420), GPU_TESTS (more test binaries after test_cuda),
# COMPILE_SCOPE (frame: the whole frame as one compiled function, checked against Stream.step
# first; parts: encode, decode and the DiT core compiled apart), COMPILE_TIMEOUT (420),
# WITH_1B_FP8=1 adds 1b with MG_CUDA_FP8=1 and the default again; VARIANTS may name "fp8" and
# "nodefer" (the KV refresh at the end of its own frame, MG_CUDA_DEFER=0); WITH_1B_NODEFER=1
# adds 1b with MG_CUDA_DEFER=0.
set -u
B=${BUILD:-build-gpu}
if [ "${1:-run}" = build ]; then
    # The GPU machine has no libjpeg-turbo or libwebsockets either: objects built with them
    # (a build-gpu/ from before JPEG=0 LWS=0 were passed) are rebuilt without them.
    if [ -x "$B/mirage" ] && ldd "$B/mirage" | grep -qE 'libwebsockets|libturbojpeg'; then
        rm -f "$B"/obj/src/data/*.o "$B"/obj/src/serve/*.o "$B/mirage"
    fi
    # two makes one after the other: `lab` is a sub-make, and two makes rebuilding the same
    # library at once race (seen: a link against a half-written libmirage.a)
    M="make BUILD=$B CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 JPEG=0 LWS=0 -j$(nproc)"
    $M "$B/mirage" "$B/tests/gpu/test_cuda" && $M lab || exit 1
    if ldd "$B/mirage" "$B/tests/gpu/test_cuda" | grep -E 'not found|libwebsockets|libturbojpeg|libav|libopenblas'; then
        echo "run.sh: error: the binaries need shared libraries the GPU machine lacks (above)" >&2
        exit 1
    fi
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
T=${STEP_TIMEOUT:-90}
START=$(date +%s)
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
    grep -E '^(frame|host|work|memory|peaks|copy|gemm|v[0-9]|[di][0-9] |test_cuda|bench_torch|mirage bench)|FAIL|\[  (PASSED|FAILED)|worst|rror|identical|DIFFER|p50' "$O/$name.tmp" | head -n 40
    rm -f "$O/$name.tmp"
    return $rc
}
left() { echo $(( ${BUDGET:-570} - ($(date +%s) - START) )); }

nvidia-smi -L | tee -a "$LOG"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,memory.used,memory.total --format=csv >>"$LOG" 2>&1
step peaks "$B/dev/peaks"
set -- $(grep '^peaks:' "$LOG" | tail -n 1)
export MG_PEAK_GBS="${2:-0}" MG_PEAK_TFLOPS="${3:-0}"

# Optimisation settings (dev/cuda/README.md): MG_CUDA_FUSED (dit.cu's fused DiT kernels,
# default off), MG_CUDA_PDL (programmatic dependent launch, default off), MG_CUDA_SPLITK (the
# fused GEMMs' K split over clusters, default on), MG_CUDA_CONVSPLIT (the small convs' K split
# over clusters, default off), MG_CUDA_LN2 (the layernorm kernel with its loads ahead of its
# stores, default on). The defaults run the whole GPU suite first (it also runs the fused +
# PDL stream and every kernel version); should it fail, the first fallback that passes is
# benched as "chosen". "base" is the first slice's path.
BASE="MG_CUDA_FUSED=0 MG_CUDA_PDL=0 MG_CUDA_CONVSPLIT=0 MG_CUDA_LN2=0"
CHOSEN=none
i=0
for cfg in "" "$BASE"; do
    i=$((i + 1))
    echo "==== settings $i: ${cfg:-defaults}" | tee -a "$LOG"
    if step "test_gpu_$i" env $cfg "$B/tests/gpu/test_cuda"; then CHOSEN=$cfg; break; fi
done
echo "==== chosen: ${CHOSEN:-defaults}" | tee -a "$LOG"
[ "$CHOSEN" = none ] && CHOSEN=$BASE

bench() { # name size config settings
    step "$1" env $4 "$B/mirage" bench --config "$3" --size "$2" --steps 2 --device cuda --json
}
# conv version 5 (halo tiles, MG_CUDA_CONVHALO, the default since slice 3): the whole suite again
# with it off (version 3, the fallback)
[ "${HALO:-1}" = 1 ] && step test_gpu_nohalo env $CHOSEN MG_CUDA_CONVHALO=0 "$B/tests/gpu/test_cuda"
# GPU_TESTS: more of make test-gpu's binaries (carried beside test_cuda), e.g. "test_cuda_fp8 test_cuda_pipe"
for t in ${GPU_TESTS-}; do step "$t" env $CHOSEN "$B/tests/gpu/$t"; done
# VARIANTS: the A/B settings benched after the chosen ones at each size ("again" repeats the
# chosen settings, to show the run-to-run spread next to the A/B deltas)
for sz in ${SIZES-256 512}; do
    bench "bench_s${sz}" "${sz}x${sz}" s "$CHOSEN"
    for v in ${VARIANTS-base fused pdl convsplit nohalo}; do
        case $v in
        base) bench "bench_s${sz}_base" "${sz}x${sz}" s "$BASE" ;;
        fused) bench "bench_s${sz}_fused" "${sz}x${sz}" s "$CHOSEN MG_CUDA_FUSED=1" ;;
        pdl) bench "bench_s${sz}_pdl" "${sz}x${sz}" s "$CHOSEN MG_CUDA_PDL=1" ;;
        convsplit) bench "bench_s${sz}_convsplit" "${sz}x${sz}" s "$CHOSEN MG_CUDA_CONVSPLIT=1" ;;
        halo) bench "bench_s${sz}_halo" "${sz}x${sz}" s "$CHOSEN MG_CUDA_CONVHALO=1" ;;
        nohalo) bench "bench_s${sz}_nohalo" "${sz}x${sz}" s "$CHOSEN MG_CUDA_CONVHALO=0" ;;
        again) bench "bench_s${sz}_again" "${sz}x${sz}" s "$CHOSEN" ;;
        fp8) bench "bench_s${sz}_fp8" "${sz}x${sz}" s "$CHOSEN MG_CUDA_FP8=1" ;;
        nodefer) bench "bench_s${sz}_nodefer" "${sz}x${sz}" s "$CHOSEN MG_CUDA_DEFER=0" ;;
        esac
    done
done
[ "${TORCH_EAGER:-1}" = 1 ] || SKIP_EAGER=1
if [ -z "${SKIP_EAGER:-}" ]; then
    step torch_s256 python3 ref/bench_torch.py --model s --size 256x256 --steps 2 --device cuda --json
    step torch_s512 python3 ref/bench_torch.py --model s --size 512x512 --steps 2 --device cuda --json
fi
if [ -n "${WITH_1B:-}" ]; then
    step bench_1b512 env $CHOSEN "$B/mirage" bench --config 1b --size 512x512 --steps 2 --device cuda --iters 20 --json
    [ -n "${WITH_1B_FP8:-}" ] && step bench_1b512_fp8 env $CHOSEN MG_CUDA_FP8=1 "$B/mirage" bench --config 1b --size 512x512 \
        --steps 2 --device cuda --iters 20 --json
    [ -n "${WITH_1B_FP8:-}" ] && step bench_1b512_again env $CHOSEN "$B/mirage" bench --config 1b --size 512x512 --steps 2 \
        --device cuda --iters 20 --json
    [ -n "${WITH_1B_NODEFER:-}" ] && step bench_1b512_nodefer env $CHOSEN MG_CUDA_DEFER=0 "$B/mirage" bench --config 1b \
        --size 512x512 --steps 2 --device cuda --iters 20 --json
    [ -n "${WITH_1B_BASE:-}" ] && step bench_1b512_base env $BASE "$B/mirage" bench --config 1b --size 512x512 --steps 2 \
        --device cuda --iters 20 --json
    [ "${HALO:-1}" = 1 ] && step bench_1b512_nohalo env $CHOSEN MG_CUDA_CONVHALO=0 "$B/mirage" bench --config 1b --size 512x512 \
        --steps 2 --device cuda --iters 20 --json
fi
if [ -n "${LAB:-}" ]; then
    step lab_attention "$B/dev/attention"
    step lab_conv "$B/dev/conv3x3"
fi
CL=${COMPILE-256 512}
FIRST=${CL%% *}
for sz in $CL; do
    if [ "$sz" != "$FIRST" ] && [ "$(left)" -lt "${COMPILE_NEED:-330}" ]; then
        echo "==== torch.compile at ${sz}: skipped, $(left) s of the budget left" | tee -a "$LOG"
        continue
    fi
    # mirage again just before, so each ratio comes from neighbouring runs on one card
    bench "bench_s${sz}_again" "${sz}x${sz}" s "$CHOSEN"
    # the whole-frame function torch.compile gets, held to Stream.step on this card first (eager)
    [ "${COMPILE_SCOPE:-frame}" = frame ] && step "torch_check_frame_s${sz}" python3 ref/bench_torch.py --model s \
        --size "${sz}x${sz}" --steps 2 --device cuda --check-frame 4
    T0=$T
    T=${COMPILE_TIMEOUT:-420}
    step "torch_compile_s${sz}" python3 ref/bench_torch.py --model s --size "${sz}x${sz}" --steps 2 --device cuda \
        --compile --compile-scope "${COMPILE_SCOPE:-frame}" --json
    T=$T0
done
if [ -n "${PROFILE:-}" ]; then # ncu: per-kernel device times of s frames, eager and graph
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
    j=0
    for cfg in "$CHOSEN" "$CHOSEN MG_CUDA_FUSED=1"; do
        j=$((j + 1))
        echo "==== ncu $j: $cfg" | tee -a "$LOG"
        lim=$(left); [ "$lim" -gt 150 ] && lim=150; [ "$lim" -lt 20 ] && break
        env $cfg timeout "$lim" "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
            --print-units base --log-file "$O/ncu_$j.csv" "$B/mirage" bench --config s --size "${PROFILE_SIZE:-256x256}" \
            --steps 2 --device cuda --warmup 1 --iters 1 >>"$LOG" 2>&1
        echo "==== ncu $j: rc=$?, $(wc -l <"$O/ncu_$j.csv" 2>/dev/null) lines" | tee -a "$LOG"
    done
fi
echo "==== done, $(( $(date +%s) - START )) s" | tee -a "$LOG"
