#!/bin/sh
# Issue 4, pipelined frames (mg_stream_submit / collect): the one device call behind
# dev/cuda/logs/h100-pipe.log and docs/RESULTS.md's "Pipelined frames". Here:
#   make BUILD=build-gpu-pipe CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 JPEG=0 LWS=0 \
#       build-gpu-pipe/mirage build-gpu-pipe/tests/gpu/test_cuda_pipe (test_cuda, test_cuda_shared)
#   and the build-gpu/mirage from before this work (b94b81a's backend) as mirage-before (the A/B);
#   cp dev/cuda/pipe_run.sh build-gpu-pipe/run.sh; .devlibs as dev/cuda/run.sh build makes it.
# There: run with carry [those binaries, build-gpu-pipe/run.sh, .devlibs]: sh build-gpu-pipe/run.sh
set -u
B=build-gpu-pipe
export LD_LIBRARY_PATH=$PWD/.devlibs MIRAGE_TESTDATA=tests/data
L=$OUT/h100-pipe.log
: >"$L"
step() {
    name=$1; shift
    echo "==== $name: $*" >>"$L"
    t0=$(date +%s.%N)
    timeout "${T:-100}" "$@" >>"$L" 2>&1
    rc=$?
    echo "==== $name: rc=$rc, $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s" >>"$L"
    echo "$name rc=$rc"
}
nvidia-smi -L >>"$L" 2>&1
step test_cuda_pipe $B/tests/gpu/test_cuda_pipe
step test_cuda $B/tests/gpu/test_cuda
step test_cuda_shared $B/tests/gpu/test_cuda_shared
for sz in 256 512; do
    step bench_s$sz $B/mirage bench --config s --size ${sz}x$sz --steps 2 --device cuda --json
    step before_s$sz $B/mirage-before bench --config s --size ${sz}x$sz --steps 2 --device cuda --json
done
$B/mirage init --config s --seed 3 --out /tmp/s.safetensors >/dev/null 2>&1
step run_s256 $B/mirage run --model /tmp/s.safetensors --input testsrc --size 256x256 --frames 200 --device cuda --output /tmp/new.y4m
step run_before_s256 $B/mirage-before run --model /tmp/s.safetensors --input testsrc --size 256x256 --frames 200 --device cuda --output /tmp/old.y4m
step cmp_run cmp /tmp/new.y4m /tmp/old.y4m
T=120 step bench_1b512 $B/mirage bench --config 1b --size 512x512 --steps 2 --device cuda --iters 20 --json
T=60 step before_1b512 $B/mirage-before bench --config 1b --size 512x512 --steps 2 --device cuda --iters 20 --json
echo "==== done" >>"$L"
grep -E "^==== .*rc=|pipelined|^host|^frame |differ|PASSED|FAILED|fps \|" "$L"
