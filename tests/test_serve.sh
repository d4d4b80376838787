#!/bin/sh
# mirage serve (issue 7) end to end: the CLI's errors, the browser demo in a real browser
# (headless Chromium with a fake camera fed from a y4m clip, driven over its remote-debugging
# protocol: frames come back transformed, the latency readout fills in, a screenshot is saved and
# the output canvas's pixels are checked), protocol abuse (each hostile client closed with a
# reason while a good one keeps being served; half-open connections dropped), and a 60 s load run
# (16 clients, 2 slow readers, 2 abusive senders; frames served, p50/p99 latency, drops, RSS
# before/after, crashes = 0). A tiny random model at 32x32 / 64x64 keeps it to a 2-core machine.
# Node and Chromium come from scripts/setup.sh: without them this test FAILS (it never passes
# without having run the browser); only a build without libwebsockets skips, and says so.
. "$(dirname "$0")/lib.sh"
M=$(cd "$(dirname "$M")" && pwd)/$(basename "$M")
B=${BUILD:-build}
mkdir -p "$B/test-serve"
KEEP=$(cd "$B/test-serve" && pwd) # the screenshot and the load figures stay here
HERE=$(cd "$(dirname "$0")" && pwd)
loud() { echo "  !!!!  $1"; }

# start_server NAME ARGS...: runs mirage serve on a free port; sets PORT and SPID
start_server() {
    name=$1; shift
    rm -f "$T/$name.port"
    "$M" serve --config tiny --port 0 --port-file "$T/$name.port" "$@" >"$T/$name.log" 2>&1 &
    SPID=$!
    PIDS="$PIDS $SPID"
    i=0
    while [ ! -s "$T/$name.port" ] && [ $i -lt 600 ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    PORT=$(cat "$T/$name.port" 2>/dev/null)
    [ -n "$PORT" ]
}
# stop_server NAME: SIGTERM; it must exit 0 within 10 s with no crash or sanitizer report
stop_server() {
    kill -TERM "$SPID" 2>/dev/null
    i=0
    while kill -0 "$SPID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$SPID" 2>/dev/null; then bad "$1: server still running 10 s after SIGTERM"; kill -9 "$SPID"; return; fi
    wait "$SPID"; rc=$?
    if [ $rc -eq 0 ] && grep -q "mirage serve | stopped" "$T/$1.log" && \
       ! grep -qE "AddressSanitizer|runtime error|LeakSanitizer|Segmentation" "$T/$1.log"; then
        ok "$1: server alive to the end, stopped cleanly on SIGTERM (exit 0)"
    else
        cp "$T/$1.log" "$T/out"; bad "$1: server exit $rc or a crash report in its log"
    fi
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

echo "-- the command line"
expect 0 "serve --help" -- "$M" serve --help
grep_out "--max-sessions" "help lists the limits"
expect 2 "serve without --model" -- "$M" serve
expect 2 "serve --port 70000" -- "$M" serve --config tiny --port 70000
expect 2 "serve --size 30x30 (not multiples of 16)" -- "$M" serve --config tiny --size 30x30
expect 2 "serve --max-fps 0" -- "$M" serve --config tiny --max-fps 0
expect 1 "serve --model missing.safetensors" -- "$M" serve --model "$T/missing.safetensors" --port 0
grep_out "mirage: error:" "a missing model is a clear error"

if ! "$M" --version | grep -qw lws; then
    loud "this build has no libwebsockets: mirage serve is not built in, so its tests cannot run"
    expect 1 "serve says it is not built in" -- "$M" serve --config tiny --port 0
    grep_out "not built in" "the message says so"
    loud "SKIPPED: browser, abuse and load tests (apt-get install libwebsockets-dev libturbojpeg0-dev, then make)"
    finish
fi
expect 1 "serve --web DIR without index.html" -- "$M" serve --config tiny --port 0 --web "$T"
grep_out "no index.html" "a missing page is a clear error"
expect 1 "serve --prompt nosuch" -- "$M" serve --config tiny --port 0 --prompt nosuch
grep_out "no such prompt" "an unknown prompt is a clear error"

missing=""
command -v node >/dev/null 2>&1 || missing="$missing node(nodejs)"
command -v ffmpeg >/dev/null 2>&1 || missing="$missing ffmpeg"
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome)}
[ -n "$CHROMIUM" ] || missing="$missing chromium"
if [ -n "$missing" ]; then
    loud "MISSING:$missing — the browser, abuse and load tests of mirage serve CANNOT RUN"
    loud "install them with scripts/setup.sh (Debian: apt-get install chromium nodejs ffmpeg)"
    fail=$((fail + 1))
    finish
fi

# test material: a camera clip for Chromium, JPEG frames for the node clients
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=320x240:rate=30 -frames:v 90 -pix_fmt yuv420p "$T/clip.y4m" &&
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=32x32 -frames:v 1 "$T/a32.jpg" &&
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=64x64 -frames:v 1 "$T/a64.jpg" &&
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=32x32:rate=10 -frames:v 10 -q:v 3 "$T/f%02d.jpg" ||
    { bad "making the test clips with ffmpeg"; finish; }

echo "-- the port is taken"
if start_server busy --size 32x32; then
    expect 1 "a second server on the same port" -- "$M" serve --config tiny --port "$PORT"
    grep_out "cannot listen" "says it cannot listen"
    stop_server busy
else
    bad "server did not start"; cp "$T/busy.log" "$T/out"
fi

echo "-- the page in headless Chromium, camera from a y4m clip"
if start_server browser --size 64x64 --steps 1; then
    node "$HERE/serve/browser.js" "$CHROMIUM" "$PORT" "$T/clip.y4m" "$KEEP" >"$T/out" 2>&1
    if [ $? -eq 0 ]; then
        ok "browser: page connected, frames back transformed, latency readout filled, output pixels checked"
        echo "        $(grep -o '"state":{[^}]*}' "$T/out")"
        echo "        screenshot: $KEEP/serve_browser.png"
    else
        bad "browser end to end"
    fi
    stop_server browser
else
    bad "server for the browser test did not start"
fi

echo "-- protocol abuse (limits: 64 KiB messages, 320x240 frames, 30 messages/s, 3 s idle, 2 s per message, 2 s handshake)"
if start_server abuse --size 32x32 --max-sessions 4 --max-message 65536 --max-frame 320x240 --max-fps 30 \
        --idle-timeout 3 --message-timeout 2 --handshake-timeout 2; then
    node "$HERE/serve/abuse.js" "$PORT" "$T" >"$T/out" 2>&1
    r=$?
    grep -E "^  (ok|FAIL)" "$T/out"
    if [ $r -eq 0 ]; then ok "abuse: every case"; else bad "abuse"; fi
    stop_server abuse
else
    bad "server for the abuse test did not start"
fi

SECS=${MIRAGE_SERVE_LOAD_SECONDS:-60}
echo "-- load: 16 clients at 10 frames/s, 2 slow readers, 2 abusive senders, ${SECS} s, 32x32, 1 step, 8 KiB send buffers"
if start_server load --size 32x32 --steps 1 --max-sessions 24 --max-message 65536 --max-frame 320x240 --max-fps 30 \
        --send-buffer 8192; then
    rss0=$(rss_kib "$SPID")
    node "$HERE/serve/load.js" "$PORT" "$SECS" 16 2 2 10 "$T" >"$T/out" 2>&1
    r=$?
    grep "^load |" "$T/out"
    sleep 1
    rss1=$(rss_kib "$SPID")
    json=$(tail -1 "$T/out")
    echo "        $json"
    if [ $r -eq 0 ]; then ok "load: every client served, latency bounded, abusers closed with reasons, sessions released"; else bad "load"; fi
    # bounded memory: once everyone has left, the server is back near where it started (the
    # per-session streams are freed; the allocator may keep some pages)
    if ldd "$M" 2>/dev/null | grep -q libasan; then
        loud "load: RSS ${rss0} KiB before, ${rss1} KiB after: not checked under AddressSanitizer (its quarantine holds freed memory); LeakSanitizer checks the frees at exit instead"
    elif [ -n "$rss0" ] && [ -n "$rss1" ] && [ "$rss1" -lt $((rss0 + 65536)) ]; then
        ok "load: RSS ${rss0} KiB before, ${rss1} KiB after (< +64 MiB)"
    else
        bad "load: RSS ${rss0} KiB before, ${rss1} KiB after"
    fi
    printf '{"rss_before_kib":%s,"rss_after_kib":%s,"nproc":%s,"load":%s}\n' "${rss0:-null}" "${rss1:-null}" "$(nproc)" "$json" >"$KEEP/load.json"
    stop_server load
else
    bad "server for the load test did not start"
fi
finish
