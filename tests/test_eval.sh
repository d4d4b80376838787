#!/bin/sh
# `mirage eval` from the command line: exit codes (0 ok, 1 failure, 2 bad usage), the progress
# lines and summary, and the report files. The metrics themselves are tested in test_eval.c.
. "$(dirname "$0")/lib.sh"
check() { # check DESCRIPTION -- test expression...   (this file's form: a command, not shell code)
    what=$1; shift 2
    if "$@"; then ok "$what"; else bad "$what"; fi
}

expect 0 "eval --help" -- $M eval --help
grep_out "usage: mirage eval" "help text"
expect 0 "help eval" -- $M help eval
$M init --config tiny --seed 3 --out "$T/tiny.safetensors" >/dev/null || bad "mirage init of the test model"
E="$M eval --model $T/tiny.safetensors --input testsrc --size 32x32 --steps 1"
expect 2 "no --report" -- $E --frames 2
expect 2 "no --input" -- $M eval --model "$T/tiny.safetensors" --report "$T/r"
expect 2 "no model" -- $M eval --input testsrc --report "$T/r"
expect 2 "unknown prompt" -- $E --frames 2 --report "$T/r" --prompt style:vangogh
grep_out "no ground truth" "unknown prompt message"
expect 2 "bad --frames" -- $E --frames 0 --report "$T/r"
expect 2 "unknown option" -- $E --frames 2 --report "$T/r" --bogus
expect 1 "missing model file" -- $M eval --model "$T/none.safetensors" --input testsrc --report "$T/r"
expect 1 "missing --compare file" -- $E --frames 2 --report "$T/r" --compare "$T/none.safetensors"
expect 1 "size not a multiple of 16" -- $E --frames 2 --report "$T/r" --size 40x40
check "no report after failures" -- test ! -e "$T/r/index.html"
expect 1 "--autoencoder with dream (no truth)" -- $E --frames 2 --report "$T/r" --autoencoder --prompt dream
grep_out "autoencoder alone" "--autoencoder refusal message"
expect 0 "--autoencoder, 3 frames" -- $E --frames 3 --report "$T/ae" --autoencoder --prompt none
grep_out "decode(encode(truth))" "--autoencoder says what it measures"
check "--autoencoder writes metrics.json" -- test -s "$T/ae/metrics.json"
expect 0 "--autoencoder on a style's truth, 2 frames" -- $E --frames 2 --report "$T/ae2" --autoencoder --prompt style:sketch
grep_out "pencil sketch" "--autoencoder names the truth it encodes"

expect 0 "eval restore, 3 frames, compare" -- $E --frames 3 --report "$T/r" --prompt restore --compare "$T/tiny.safetensors"
grep_out "mirage eval | model B" "configuration names both models"
grep_out "frame 3/3 | psnr" "progress line"
grep_out "drift" "summary"
for f in index.html metrics.json strip_000000.png strip_000002.png; do
    check "report has $f" -- test -s "$T/r/$f"
done
check "no temporary files left" -- test -z "$(ls "$T/r" | grep tmp)"
expect 0 "eval --config (random weights), dream, quiet" -- $M eval --config tiny --input testsrc --size 32x32 --steps 1 \
    --frames 2 --prompt dream --report "$T/d" --quiet
check "quiet prints nothing" -- test ! -s "$T/out"
check "dream report" -- test -s "$T/d/metrics.json"
expect 0 "one frame, truth" -- $E --frames 1 --report "$T/one" --prompt style:toon
expect 0 "one frame, dream" -- $E --frames 1 --report "$T/one-dream" --prompt dream
grep_out "freeze no" "one frame: no window to flag"
expect 1 "report into a file" -- $E --frames 1 --report "$T/r/index.html"

finish
