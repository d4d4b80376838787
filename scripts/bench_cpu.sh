#!/usr/bin/env bash
# CPU speed, same weights, same machine, one run: mirage bench against the PyTorch oracle
# (ref/bench_torch.py, Debian's python3-torch, fp32, torch.set_num_threads(cores)).
# Both get fresh weights from the same initialiser (config, seed 0, full random), 2 steps,
# ring K=3. Each pair is run ROUNDS times, alternating, and the best p50 of each side is
# kept, so a burst of load from elsewhere on the machine does not decide the ratio.
# OpenBLAS: mirage selects OpenBLAS's AVX-512 kernels itself where 0.3.21 misdetects the
# CPU (src/cli/main.c); torch links the same OpenBLAS and gets the same OPENBLAS_CORETYPE here
# so it is a fair peer.
#   usage: scripts/bench_cpu.sh [ROUNDS]      (needs python3-torch; prints a markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PY=/usr/bin/python3
M=build/mirage
core=SkylakeX
grep -q avx512f /proc/cpuinfo || core=Haswell
echo "| config | size | mirage p50 ms | torch p50 ms | speed-up | mirage FPS |"
echo "|---|---|---|---|---|---|"
for cfg in tiny s; do
  for size in 128x128 256x256; do
    iters=20; [ $cfg = s ] && iters=8
    best_m=1e9; best_t=1e9
    for r in $(seq "$ROUNDS"); do
      m=$($M bench --config $cfg --size $size --steps 2 --ring 3 --iters $iters --json | tail -n 1 |
          $PY -c 'import json,sys; print(json.load(sys.stdin)["p50_ms"])')
      t=$(OPENBLAS_CORETYPE=$core $PY ref/bench_torch.py --model $cfg --size $size --steps 2 --ring 3 \
          --device cpu --iters $iters --json | tail -n 1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["p50_ms"])')
      best_m=$($PY -c "print(min($best_m, $m))"); best_t=$($PY -c "print(min($best_t, $t))")
    done
    $PY -c "print(f'| $cfg | $size | {$best_m:.1f} | {$best_t:.1f} | {$best_t/$best_m:.2f}x | {1000/$best_m:.1f} |')"
  done
done
