#!/bin/sh
# mirage train --gpus (issue 8) where there is no GPU (CI): the command line's checks and the
# launcher's errors, each a clear "mirage: error:" with the right exit code, no hang, no file:
#  - usage (exit 2): a bad --gpus (not a count, a repeated GPU, a malformed list), --gpus with
#    --device cpu, a --batch the GPU count does not divide;
#  - runtime (exit 1): NCCL not loadable (MIRAGE_NCCL pointing nowhere), and no GPU: the ranks
#    start, fail, and the launcher returns (within a time limit) with the rank's error;
#    in a build without CUDA or without NCCL, the build's own message.
# The GPU side (curves, throughput, resume across GPU counts) is dev/train/dp.sh.
. "$(dirname "$0")/lib.sh"
EXPECT_TIMEOUT=120 # every command under a time limit: a launcher that hangs fails here instead

mkdir -p "$T/data"
A="--data $T/data --out $T/m.safetensors --config tiny --steps 2"
expect 0 "help lists --gpus" -- $M train --help
grep_out "--gpus N|LIST" "help line"
for g in abc 0 17 0,0 1, ,1 1,,2 0,-1 " 2" 2x; do
    expect 2 "--gpus '$g'" -- $M train dit $A --gpus "$g"
    grep_out "mirage: error: --gpus" "--gpus '$g' message"
done
expect 2 "--gpus with --device cpu" -- $M train dit $A --gpus 2 --device cpu
grep_out "needs --device cuda" "--device cpu message"
expect 2 "--batch 3 over 2 GPUs" -- $M train dit $A --gpus 2 --batch 3
grep_out "not a multiple of the 2 GPUs" "batch message"
expect 2 "--batch 6 over 4 GPUs (tae)" -- $M train tae $A --gpus 4 --batch 6
grep_out "try --batch 8" "batch message suggests a multiple"

if [ -d /proc/driver/nvidia ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "  skip  no-GPU checks: this machine has a GPU (dev/train/dp.sh is the GPU test)"
else
    expect 1 "NCCL not loadable" -- env MIRAGE_NCCL="$T/nowhere/libnccl.so.2" $M train dit $A --gpus 2 --batch 2
    if grep -q "no CUDA" "$T/out"; then ok "a build without CUDA says so"
    elif grep -q "no NCCL" "$T/out"; then ok "a build without NCCL says so"
    else grep_out "cannot load NCCL from MIRAGE_NCCL=$T/nowhere/libnccl.so.2" "NCCL message names the path"; fi
    # the launcher with NCCL found but no GPU: the ranks fail, the command ends (no hang)
    start=$(date +%s)
    expect 1 "--gpus 2 without a GPU" -- $M train dit --data "$T/data" --out "$T/m.safetensors" --config tiny --steps 2 --gpus 2 --batch 2
    grep_out "mirage: error:" "no-GPU message"
    if grep -q "NCCL (libnccl.so.2) not found\|no NCCL\|this build has no CUDA" "$T/out"; then ok "(NCCL or CUDA missing here: the ranks were not started)"
    else grep_out "rank [01] (GPU [01])" "the failing rank is named"; fi
    [ $(($(date +%s) - start)) -lt 60 ] && ok "ended in $(($(date +%s) - start)) s" || bad "took $(($(date +%s) - start)) s"
fi
[ ! -e "$T/m.safetensors" ] && ok "no model file after failures" || bad "a failed run left $T/m.safetensors"
ls "$T"/*.nccl-id* >/dev/null 2>&1 && bad "a rendezvous file was left" || ok "no rendezvous file left"
finish
