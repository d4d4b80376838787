# Sourced first by the dev/train scripts that run on a GPU machine, after they set LOGS (their
# $OUT by default): B (BUILD, build-train: the binary's folder), O (OUT, else LOGS: what comes
# back), R (RUNS, runs: checkpoints and models that stay there), E ($R/eval: reports); those
# folders made, .devlibs on the library path, and $O/card.txt: the cards, the binary's version
# and features, and the commit where the copy is a git checkout.
B=${BUILD:-build-train}
O=${OUT:-$LOGS}
R=${RUNS:-runs}
E=$R/eval
mkdir -p "$O" "$R" "$E"
export LD_LIBRARY_PATH="$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi -L 2>/dev/null | tee "$O/card.txt"
"$B/mirage" --version | tee -a "$O/card.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$O/card.txt"
# The stage-dit recipe every fine-tune since session 7 shares (run 6's flags, docs/TRAINING.md
# "Measured runs"); each script adds its init, seed, lr, mix, sizes, logging and schedule.
DIT_RECIPE="--data data --dtype bf16 --frames 6 --fades 0.1 --hist-aug 1 --warmup 50 --sample-every 0 --ckpt-every 0"
# The decoder-only stage-tae recipe (run 4's flags): the encoder frozen, so the latents and every
# DiT trained on them stay valid; each script adds its init, detail term, sizes, lr and schedule.
DEC_RECIPE="--freeze-encoder --data data --dtype bf16 --log-every 200 --val-every 1000 --sample-every 0 --ckpt-every 0"
