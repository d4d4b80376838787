#!/bin/sh
# Runs every libFuzzer target (fuzz/) for SECONDS each (default 60), one at a time, each from
# its committed seeds only (a fresh corpus under build-fuzz/report/, so the figures do not depend
# on earlier runs), and prints a markdown table: executions, exec/s, coverage (cov: edges and
# ft: features from libFuzzer's last line), corpus size, crashes found now, and regression inputs
# kept from crashes fixed before (fuzz/regress/NAME/). Exit 1 when any fuzzer crashed (the input
# is named). Usage: scripts/fuzz_report.sh [SECONDS]   (FUZZERS="proto web" picks some)
set -u
S=${1:-60}
case "$S" in ''|*[!0-9]*) echo "mirage: error: fuzz_report.sh: SECONDS must be a number, found '$S'" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.." || exit 1
FUZZERS=${FUZZERS:-"safetensors y4m shard proto web ckpt model cli"}
echo "fuzz_report: building the fuzzers (make fuzz-build: clang, ASan + UBSan, build-fuzz/)" >&2
nice -n 10 make --no-print-directory fuzz-build FUZZERS="$FUZZERS" >build-fuzz-report-build.log 2>&1 || {
    tail -20 build-fuzz-report-build.log >&2; echo "mirage: error: fuzz_report.sh: make fuzz-build failed" >&2; exit 1; }
rm -f build-fuzz-report-build.log
R=build-fuzz/report
rm -rf "$R" && mkdir -p "$R"
what() {
    case "$1" in
    safetensors) echo "safetensors header + tensor table" ;;
    y4m) echo "y4m stream reader" ;;
    shard) echo "dataset shard (header, index, JPEG frames)" ;;
    proto) echo "serve: frame + control messages, JPEG decode" ;;
    web) echo "serve: HTTP path -> web root file" ;;
    ckpt) echo "checkpoint index + model config metadata" ;;
    model) echo "model file loader (mg_model_load)" ;;
    cli) echo "command line (argv of every subcommand)" ;;
    *) echo "$1" ;;
    esac
}
rows="" fail=0
for f in $FUZZERS; do
    mkdir -p "$R/$f" "$R/artifacts/$f"
    dict=""; [ -f "fuzz/$f.dict" ] && dict="-dict=fuzz/$f.dict"
    seeds=$(ls "fuzz/corpus/$f" 2>/dev/null | wc -l)
    regress=$(ls "fuzz/regress/$f" 2>/dev/null | wc -l)
    echo "fuzz_report: fuzz_$f for $S s ($seeds seeds)" >&2
    nice -n 10 build-fuzz/fuzz/fuzz_$f -max_total_time="$S" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -close_fd_mask=3 $dict -artifact_prefix="$R/artifacts/$f/" "$R/$f" "fuzz/corpus/$f" >"$R/$f.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$R/$f.log")
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$R/$f.log")
    last=$(grep -E '^#[0-9]+.*cov: ' "$R/$f.log" | tail -1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
    crashes=$(ls "$R/artifacts/$f" | wc -l)
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        fail=1
        echo "mirage: error: fuzz_$f exited $rc; inputs: $(ls "$R/artifacts/$f" | sed "s|^|$R/artifacts/$f/|" | tr '\n' ' ')(log: $R/$f.log)" >&2
    fi
    rows="$rows| fuzz_$f | $(what "$f") | ${execs:-?} | ${eps:-?} | ${cov:-?} | ${ft:-?} | $seeds -> ${corp:-?} | $crashes | $regress |
"
done
echo "fuzz_report: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+local changes'), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(clang --version | head -1), $S s each"
echo
echo "| fuzzer | parser | executions | exec/s | cov | ft | corpus (seeds -> units/bytes) | crashes | regression inputs |"
echo "|---|---|---:|---:|---:|---:|---|---:|---:|"
printf '%s' "$rows"
exit $fail
