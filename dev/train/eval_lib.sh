# Shared by dev/train/issue6.sh and dev/train/hfdec.sh (sourced): the evaluations of a call.
#
# ev NAME PROMPT FLAGS...: one `mirage eval` of the held-out clip ($R/clip.y4m, 256x256) in the
# background, the k-th on GPU k mod $GPUS (4); report in $E/NAME/PROMPT, log beside it; dream
# runs twice $FRAMES. It sets n, p, f and d: a caller keeps its own names apart. Needs B, R, E,
# FRAMES; EVAL_THREADS (OpenMP threads each, 2), DEVICE (cuda), EVAL_BATCH (wait for the
# running ones after every N started; 0, the default: never).
#
# ev_done T0 O: waits for them, prints the time since T0 and the logs that name an error, and
# packs every metrics.json and log under $E into O/metrics.tar (what the call brings back).
k=0
ev() {
    n=$1 p=$2
    shift 2
    f=$FRAMES
    [ "$p" = dream ] && f=$((FRAMES * 2))
    d="$E/$n/$(echo "$p" | tr : -)"
    mkdir -p "$d"
    CUDA_VISIBLE_DEVICES=$((k % ${GPUS:-4})) OMP_NUM_THREADS=${EVAL_THREADS:-2} "$B/mirage" eval --input "$R/clip.y4m" \
        --size 256x256 --prompt "$p" --frames "$f" --device "${DEVICE:-cuda}" --report "$d" --quiet "$@" >"$d.log" 2>&1 &
    k=$((k + 1))
    if [ "${EVAL_BATCH:-0}" -gt 0 ] && [ $((k % EVAL_BATCH)) -eq 0 ]; then wait; fi
    return 0
}

ev_done() {
    wait
    echo "evaluation: $(($(date +%s) - $1)) s"
    grep -l -i -E "error|fail" "$E"/*/*.log 2>/dev/null | head
    (cd "$E" && find . -name metrics.json -o -name '*.log') >"$2/list"
    tar cf "$2/metrics.tar" -C "$E" $(cat "$2/list") && rm "$2/list"
}
