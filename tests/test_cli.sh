#!/bin/sh
# The command-line contract: exit codes (0 ok, 1 failure, 2 bad usage), "mirage: error:"
# messages, and the subcommands working end to end on a tiny model.
. "$(dirname "$0")/lib.sh"

expect 0 "--version" -- $M --version
grep_out "mirage 0" "--version prints the version"
expect 0 "help" -- $M help
expect 2 "no command" -- $M
expect 2 "unknown command" -- $M frobnicate
grep_out "mirage: error: unknown command" "unknown command message"
for c in run demo bench init info; do expect 0 "$c --help" -- $M $c --help; done
expect 0 "help run" -- $M help run
grep_out "usage: mirage run" "help run shows run's usage"

expect 2 "init without --out" -- $M init --config tiny --seed 1
expect 2 "init bad config" -- $M init --config huge --seed 1 --out "$T/x.safetensors"
grep_out "unknown config 'huge'" "init names the bad config"
expect 2 "init bad seed" -- $M init --config tiny --seed -4 --out "$T/x.safetensors"
expect 2 "init unknown option" -- $M init --config tiny --seed 1 --out "$T/x.safetensors" --bogus
expect 1 "init into a missing directory" -- $M init --config tiny --seed 1 --out "$T/no/such/dir/x.safetensors"
grep_out "mirage: error:" "init failure message"
expect 0 "init tiny" -- $M init --config tiny --seed 1 --out "$T/tiny.safetensors"

expect 0 "info" -- $M info "$T/tiny.safetensors"
grep_out "config          tiny" "info shows the config"
grep_out "colorize" "info lists prompts"
grep_out "format_version 1" "info shows the format version"
expect 2 "info without a file" -- $M info
expect 1 "info on a missing file" -- $M info "$T/missing.safetensors"
printf 'garbage, not a model' >"$T/junk.safetensors"
expect 1 "info on garbage" -- $M info "$T/junk.safetensors"
grep_out "mirage: error: .*junk.safetensors" "the error names the file"
head -c 5000 "$T/tiny.safetensors" >"$T/trunc.safetensors"
expect 1 "info on a truncated file" -- $M info "$T/trunc.safetensors"

R="$M run --model $T/tiny.safetensors --quiet"
expect 0 "run testsrc -> y4m" -- $R --input testsrc --output "$T/a.y4m" --frames 3 --size 64x48
if [ "$(head -c 9 "$T/a.y4m")" = "YUV4MPEG2" ] && [ "$(grep -c FRAME "$T/a.y4m")" -ge 3 ]; then
    ok "run wrote a 3-frame y4m"
else bad "run output is not a 3-frame y4m"; fi
expect 0 "run y4m -> y4m" -- $R --input "$T/a.y4m" --output "$T/b.y4m" --prompt restore
expect 0 "run --skip 2 of a 3-frame input" -- $R --input "$T/a.y4m" --output "$T/s.y4m" --skip 2
if [ "$(grep -c FRAME "$T/s.y4m")" -eq 1 ]; then ok "--skip 2 leaves 1 frame"
else bad "--skip 2 of 3 frames wrote $(grep -c FRAME "$T/s.y4m") frames"; fi
expect 1 "run --skip past the end" -- $R --input "$T/a.y4m" --output "$T/s2.y4m" --skip 5
grep_out "ends before" "--skip past the end says so"
expect 2 "run --skip -1" -- $R --input "$T/a.y4m" --output "$T/s3.y4m" --skip -1
expect 0 "run --degrade --side-by-side (colorize)" -- $R --input "$T/a.y4m" --output "$T/g.y4m" --prompt colorize --degrade --side-by-side
expect 0 "run y4m on stdin -> stdout" -- sh -c "$R --input - --output - < '$T/a.y4m' > '$T/c.y4m'"
cmp -s "$T/b.y4m" "$T/c.y4m" && ok "pipes give the same frames as files" \
    || bad "pipe output differs from file output"
expect 0 "run to null" -- $R --input testsrc --output null --frames 2 --size 32x32
expect 0 "run with guidance and dream" -- $R --input testsrc --output null --frames 2 --size 32x32 --prompt dream --guidance 2
expect 1 "run unknown prompt" -- $R --input testsrc --output null --frames 1 --size 32x32 --prompt paint
grep_out "unknown prompt 'paint'" "run names the unknown prompt"
expect 1 "run size not a multiple of 16" -- $R --input testsrc --output null --frames 1 --size 40x40
expect 2 "run bad size" -- $R --input testsrc --output null --size 64by64
expect 2 "run bad steps" -- $R --input testsrc --output null --steps 0
expect 2 "run bad device" -- $R --input testsrc --output null --device tpu
expect 1 "run --device cuda without the backend" -- $R --input testsrc --output null --frames 1 --size 32x32 --device cuda
expect 2 "run missing --model" -- $M run --input testsrc --output null
expect 1 "run missing input file" -- $R --input "$T/none.y4m" --output null
printf 'YUV4MPEG2 W64 H48 F25:1 C420jpeg\nFRAME\nshort' >"$T/trunc.y4m"
expect 1 "run truncated y4m" -- $R --input "$T/trunc.y4m" --output "$T/d.y4m"
expect 2 "run unsupported output" -- $R --input testsrc --output "$T/x.avi"
expect 1 "run into a missing directory" -- $R --input testsrc --output "$T/no/dir/x.y4m" --frames 1 --size 32x32
[ ! -e "$T/no/dir/x.y4m" ] && ok "no partial output left" || bad "partial output"

expect 0 "bench --json" -- $M bench --config tiny --size 32x32 --steps 1 --iters 2 --json
last=$(tail -n 1 "$T/out")
for k in p50_ms p99_ms fps params device; do
    case "$last" in *"\"$k\""*) ok "bench json has $k" ;;
    *) bad "bench json lacks $k: $last" ;; esac
done
expect 2 "bench needs a model" -- $M bench --size 32x32
expect 1 "bench --device cuda" -- $M bench --config tiny --size 32x32 --device cuda

finish
