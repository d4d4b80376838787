#!/bin/sh
# The serving load generator (dev/serve/loadgen.c, issue 8) against a CPU `mirage serve`, and the
# command line of `mirage serve --gpus`: sessions as fast as answered and at a fixed rate, the
# figures it prints and writes, and its errors (no server, bad flags). A tiny random model at
# 32x32 keeps it to ~20 s on a 2-core machine. A build without libwebsockets or libjpeg-turbo has
# no loadgen and no serve: the test says so and skips.
. "$(dirname "$0")/lib.sh"
B=${BUILD:-build}
L=$B/loadgen
# num KEY FILE: a number from loadgen's one-line JSON (top level, or "obj.key" one level down)
num() {
    case $1 in
    *.*) sed -n "s/.*\"${1%%.*}\":{[^}]*\"${1#*.}\":\([-0-9.e]*\).*/\1/p" "$2" ;;
    *) sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p" "$2" ;;
    esac
}
# ge A B: A >= B (decimals)
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

echo "-- mirage serve --gpus: the command line"
expect 2 "--gpus without --device cuda" -- "$M" serve --config tiny --gpus 0
grep_out "needs --device cuda" "the message says --device cuda is needed"
expect 2 "--gpus 0,0 (a GPU twice)" -- "$M" serve --config tiny --device cuda --gpus 0,0
grep_out "given twice" "the message names the repeat"
expect 2 "--gpus 0,x" -- "$M" serve --config tiny --device cuda --gpus 0,x
expect 2 "--gpus '' " -- "$M" serve --config tiny --device cuda --gpus ''
expect 2 "--gpus 64 (beyond any machine)" -- "$M" serve --config tiny --device cuda --gpus 64
# 63 parses; no machine here has it: no CUDA backend, no GPU, or "GPU 63 does not exist"
expect 1 "--device cuda --gpus 63 (a GPU this machine does not have)" -- "$M" serve --config tiny --device cuda --gpus 63 --port 0
if grep -qE "mirage: error: .*(no CUDA backend|no CUDA device found|GPU 63 does not exist)" "$T/out"; then
    ok "a clear error: $(grep 'mirage: error' "$T/out" | head -1)"
else
    bad "no clear error for a missing GPU"
fi

if ! "$M" --version | grep -qw lws || ! "$M" --version | grep -qw jpeg; then
    echo "  SKIPPED: this build has no libwebsockets or no libjpeg-turbo: no mirage serve, no loadgen"
    finish
fi
if [ ! -x "$L" ]; then
    bad "$L is missing (make $L)"
    finish
fi

echo "-- loadgen: its own errors"
expect 2 "loadgen without --port" -- "$L"
expect 2 "loadgen --sessions 0" -- "$L" --port 8080 --sessions 0
expect 2 "loadgen --size 8x8" -- "$L" --port 8080 --size 8x8
expect 1 "loadgen to a port where nothing listens" -- "$L" --port 1 --seconds 1 --first-timeout 5
grep_out "cannot connect" "the failed connection is reported"

echo "-- loadgen against mirage serve (CPU, tiny, 32x32)"
"$M" serve --config tiny --size 32x32 --steps 1 --port 0 --port-file "$T/port" --max-fps 1000 --max-sessions 8 \
    --workers 2 >"$T/serve.log" 2>&1 &
SPID=$!; PIDS=$SPID
i=0
while [ ! -s "$T/port" ] && [ $i -lt 600 ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
PORT=$(cat "$T/port" 2>/dev/null)
if [ -z "$PORT" ]; then cp "$T/serve.log" "$T/out"; bad "mirage serve did not start"; finish; fi

expect 0 "3 sessions as fast as answered, 3 s" -- "$L" --port "$PORT" --sessions 3 --seconds 3 --warmup 0.5 --json "$T/a.json"
cp "$T/out" "$T/a.out"
grep_out "loadgen | result | 3 sessions 32x32" "the result line names the sessions and the size (from the hello)"
echo "        $(grep 'result' "$T/a.out")"
frames=$(num frames "$T/a.json"); fps=$(num fps "$T/a.json"); mn=$(num per_session_fps.min "$T/a.json")
p50=$(num latency_ms.p50 "$T/a.json"); p99=$(num latency_ms.p99 "$T/a.json")
if [ -n "$frames" ] && [ "$frames" -gt 0 ] && ge "$mn" 0.5; then ok "frames served to every session ($frames, $fps/s total, the slowest at $mn/s)"
else bad "frames $frames, the slowest session $mn/s"; fi
if [ "$(num errors "$T/a.json")" = 0 ] && [ "$(num starved "$T/a.json")" = 0 ]; then ok "no errors, no session without output"
else bad "errors or starved sessions in $(cat "$T/a.json")"; fi
if ge "$p50" 0.01 && ge "$p99" "$p50" && ge "$(num model_ms.p50 "$T/a.json")" 0.01; then ok "latency p50 $p50 ms <= p99 $p99 ms, model time from the output header"
else bad "latency figures p50 $p50 p99 $p99"; fi
# one in flight: the total is what the sessions got; the server agrees (its log counts served frames)
if ge "$(num sent "$T/a.json")" "$frames"; then ok "sent >= served in the window"; else bad "sent < served"; fi

expect 0 "2 sessions at 4 frames/s, 3 s" -- "$L" --port "$PORT" --sessions 2 --fps 4 --seconds 3 --warmup 0.5 --json "$T/b.json"
mn=$(num per_session_fps.min "$T/b.json"); mx=$(num per_session_fps.max "$T/b.json")
if ge "$mn" 2.5 && ge 5.5 "$mx"; then ok "a fixed rate is kept: per session $mn..$mx frames/s for 4"
else bad "per session $mn..$mx frames/s for a rate of 4"; fi

sleep 0.5
if grep -q "session 1 open from" "$T/serve.log" && grep -q "session 5 closed (by the page)" "$T/serve.log"; then
    ok "the server logged every session open and closed by the page"
else cp "$T/serve.log" "$T/out"; bad "session lines missing in the server's log"; fi
if grep -q "on GPU" "$T/serve.log"; then cp "$T/serve.log" "$T/out"; bad "a CPU server names a GPU"; else ok "a CPU server names no GPU"; fi
kill -TERM "$SPID"
i=0
while kill -0 "$SPID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
wait "$SPID"; rc=$?
SPID=""; PIDS=""
if [ $rc -eq 0 ] && ! grep -qE "AddressSanitizer|runtime error|LeakSanitizer" "$T/serve.log"; then ok "the server stopped cleanly (exit 0)"
else cp "$T/serve.log" "$T/out"; bad "server exit $rc or a sanitizer report"; fi
finish
