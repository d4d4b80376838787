#!/bin/sh
# The figures of docs/RELIABILITY.md (issue 9), in one command:
#   scripts/reliability.sh [BUILD_DIR]          (default build)
# 1. memory: a 10,000-frame `mirage run` (the shipped model at 64x64, 1 step, testsrc -> mkv)
#    and 120 s of `mirage serve` with sessions coming and going (6 at a time, a quarter of them
#    vanishing mid-frame): VmRSS tables, start, peak, end and the slope after warm-up;
# 2. every fault case of tests/test_faults.sh and its outcome (disk full, signals, sources and
#    clients vanishing mid-frame, no GPU);
# 3. valgrind memcheck over every CPU unit-test binary (CI runs the quick subset);
#    VALGRIND=ci runs only CI's list.
# Builds what is missing first. Parts 1 and 2 take about 10 minutes on a 2-core machine, part 3
# about 30 more (VALGRIND=ci: 2); prints the machine, the date and the commit, and ends with a
# summary. Exit 0 when every part passed.
set -u
cd "$(dirname "$0")/.."
B=${1:-build}
RUN_FRAMES=${RUN_FRAMES:-10000}
SERVE_SECONDS=${SERVE_SECONDS:-120}
LOG=$B/reliability
mkdir -p "$LOG"

echo "== mirage reliability | $(date -u '+%Y-%m-%d %H:%M UTC') | commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)')"
echo "== machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"

tests=$(ls tests/test_*.c | sed "s|tests/\(.*\)\.c|$B/tests/\1|")
if [ ! -x "$B/mirage" ] || ! ls $tests >/dev/null 2>&1; then
    echo "== building $B/mirage and the unit tests"
    make -j"$(nproc)" "BUILD=$B" "$B/mirage" $tests >"$LOG/build.log" 2>&1 || { tail -20 "$LOG/build.log"; echo "reliability: error: the build failed"; exit 1; }
fi
"$B/mirage" --version

echo
echo "== 1 + 2: memory over long runs, and the fault cases (tests/test_faults.sh at full length)"
FAULTS_RUN_FRAMES=$RUN_FRAMES FAULTS_RUN_SIZE=64x64 FAULTS_SERVE_SECONDS=$SERVE_SECONDS FAULTS_RSS_TABLE=1 \
    MIRAGE=$B/mirage BUILD=$B sh tests/test_faults.sh 2>&1 | tee "$LOG/faults.log"
faults_ok=0; grep -q "^test_faults: .* 0 failed" "$LOG/faults.log" && faults_ok=1

echo
echo "== 3: valgrind memcheck over the CPU unit tests"
all=1; [ "${VALGRIND:-all}" = ci ] && all=0
VALGRIND_ALL=$all sh scripts/valgrind_tests.sh "$B" 2>&1 | tee "$LOG/valgrind.log"
vg_ok=0; grep -q "^valgrind: .* 0 failed" "$LOG/valgrind.log" && vg_ok=1

echo
echo "== summary"
grep -E "^        (run|serve) .*RSS start" "$LOG/faults.log" | sed 's/^        /  /'
grep "^test_faults:" "$LOG/faults.log" | sed 's/^/  /'
grep "^valgrind:" "$LOG/valgrind.log" | sed 's/^/  /'
echo "  logs: $LOG/faults.log, $LOG/valgrind.log"
[ $faults_ok -eq 1 ] && [ $vg_ok -eq 1 ]
