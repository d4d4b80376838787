#!/bin/sh
# Issue 4, DiT slice (session 5): RoPE folded into attention (MG_CUDA_ROPEATT) and layernorm
# version 3 (MG_CUDA_LN), on the GPU machine in one call. Build here first:
#   nice make BUILD=build-gpu-dit CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 JPEG=0 LWS=0 -j2 \
#     build-gpu-dit/mirage build-gpu-dit/tests/gpu/test_cuda build-gpu-dit/dev/attention \
#     build-gpu-dit/dev/layernorm build-gpu-dit/dev/peaks [build-gpu-dit/tests/gpu/test_cuda_{pipe,fp8}]
# then strip each binary to NAME.s and carry them with .devlibs, or pack the stripped ones into
# $B/bins.tgz (the carry limit is 64 MiB with the tree) and carry that. Environment: TESTS
# (the test binaries, "test_cuda"), LAB (1), SIZES ("256 512"), ROUNDS (2: the A/B settings
# alternate), LNV (0; 1 adds MG_CUDA_LN=4 and 5 to the A/B), WITH_1B (0). One log on stdout.
set -u
B=build-gpu-dit
[ -f $B/bins.tgz ] && tar xzf $B/bins.tgz -C $B
export LD_LIBRARY_PATH="$PWD/.devlibs" MIRAGE_TESTDATA=tests/data
nvidia-smi -L
git log -1 --format='commit %h' 2>/dev/null
echo "==== peaks"
$B/dev/peaks.s | tee /tmp/peaks.txt
set -- $(grep '^peaks:' /tmp/peaks.txt | tail -n 1)
export MG_PEAK_GBS="${2:-0}" MG_PEAK_TFLOPS="${3:-0}"
for t in ${TESTS:-test_cuda}; do
    echo "==== $t"
    s0=$(date +%s)
    timeout 120 $B/tests/gpu/$t.s 2>&1
    echo "==== $t: rc=$? $(($(date +%s) - s0)) s"
done
if [ "${LAB:-1}" = 1 ]; then
    echo "==== lab: layernorm"
    timeout 60 $B/dev/layernorm.s 2>&1
    echo "==== lab: attention"
    timeout 90 $B/dev/attention.s 2>&1
fi
bench() { # label config size iters env...
    b_l=$1 b_c=$2 b_z=$3 b_it=$4
    shift 4
    printf '%-34s ' "$b_l"
    env "$@" timeout 60 $B/mirage.s bench --config "$b_c" --size "$b_z" --steps 2 --device cuda --iters "$b_it" --json 2>&1 |
        grep '^{' | python3 -c 'import json,sys
j=json.loads(sys.stdin.read())
print("p50 %.3f ms p99 %.3f | steps %s | refresh %.3f | encode %.3f decode %.3f" % (j["p50_ms"], j["p99_ms"],
      " ".join("%.3f" % x for x in j["step_ms"]), j["refresh_ms"], j["encode_ms"], j["decode_ms"]))
print(json.dumps(j), file=sys.stderr)' 2>>/tmp/bench.json || echo "FAILED"
}
for z in ${SIZES:-256 512}; do
    echo "==== frame s ${z}x${z} (old = MG_CUDA_ROPEATT=0 MG_CUDA_LN=2, the session's start)"
    r=0
    while [ $r -lt "${ROUNDS:-2}" ]; do
        bench "s $z old" s "${z}x${z}" 30 MG_CUDA_ROPEATT=0 MG_CUDA_LN=2
        bench "s $z ropeatt" s "${z}x${z}" 30 MG_CUDA_ROPEATT=1 MG_CUDA_LN=2
        bench "s $z ln3" s "${z}x${z}" 30 MG_CUDA_ROPEATT=0 MG_CUDA_LN=3
        bench "s $z ropeatt + ln3" s "${z}x${z}" 30 MG_CUDA_ROPEATT=1 MG_CUDA_LN=3
        bench "s $z defaults" s "${z}x${z}" 30
        if [ "${LNV:-0}" = 1 ]; then
            bench "s $z ln4 (1 row/block)" s "${z}x${z}" 30 MG_CUDA_ROPEATT=0 MG_CUDA_LN=4
            bench "s $z ln5 (4 rows/block)" s "${z}x${z}" 30 MG_CUDA_ROPEATT=0 MG_CUDA_LN=5
        fi
        r=$((r + 1))
    done
done
if [ "${WITH_1B:-0}" = 1 ]; then
    echo "==== frame 1b 512x512"
    bench "1b 512 old" 1b 512x512 20 MG_CUDA_ROPEATT=0 MG_CUDA_LN=2
    bench "1b 512 defaults" 1b 512x512 20
fi
echo "==== bench JSON"
cat /tmp/bench.json
