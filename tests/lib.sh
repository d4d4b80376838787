# The harness the shell tests share (tests/test_*.sh). A test sources it first:
#     . "$(dirname "$0")/lib.sh"
# (tests/run_all.sh runs each as `sh tests/test_NAME.sh`, so $0 names the test's own path), and
# ends with `finish`. What it sets:
#   M        the mirage binary: $MIRAGE, else build/mirage
#   T        a fresh folder /tmp/mirage-NAME-XXXXXX, removed at exit
#   PIDS     processes to kill -9 at exit (a test adds the ones it starts in the background)
#   MNT      a mount point to unmount at exit, when set
#   pass fail skip   the counters behind ok, bad and skipped
#   t_start  empty: a test that sets it (t_start=$(date +%s)) gets its skips and its time in the
#            last line
#   EXPECT_TIMEOUT   empty: when set, expect runs each command under `timeout $EXPECT_TIMEOUT`
# A test may redefine any of these functions after sourcing where it needs another form.
M=${MIRAGE:-build/mirage}
lib_name=$(basename "$0" .sh)
T=$(mktemp -d "/tmp/mirage-${lib_name#test_}-XXXXXX") || exit 1
PIDS=""; MNT=""
lib_cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    [ -n "$MNT" ] && umount "$MNT" 2>/dev/null
    rm -rf "$T"
}
trap lib_cleanup EXIT
pass=0; fail=0; skip=0
t_start=""; EXPECT_TIMEOUT="" # not taken from the environment

# ok DESCRIPTION / bad DESCRIPTION (a failure also shows the end of the last command's output);
# both return 0, so `test && bad ... || ok ...` counts once
ok() { pass=$((pass + 1)); echo "  ok    $1"; }
bad() { fail=$((fail + 1)); echo "  FAIL  $1"; if [ -f "$T/out" ]; then sed 's/^/        /' "$T/out" | tail -8; fi; }
skipped() { skip=$((skip + 1)); echo "  skip  $1"; }
# check EXPRESSION DESCRIPTION: EXPRESSION (shell code, eval'd) is true
check() { if eval "$1"; then ok "$2"; else bad "$2 [$1]"; fi; }
# expect CODE DESCRIPTION -- command...   (stdout+stderr in $T/out)
expect() {
    code=$1; what=$2; shift 3
    [ -n "${EXPECT_TIMEOUT:-}" ] && set -- timeout "$EXPECT_TIMEOUT" "$@"
    "$@" >"$T/out" 2>&1
    got=$?
    if [ "$got" -eq "$code" ]; then ok "$what (exit $got)"; else bad "$what: exit $got, expected $code"; fi
}
# grep_out PATTERN DESCRIPTION: the last expect's output contains PATTERN
grep_out() { if grep -q -- "$1" "$T/out"; then ok "$2"; else bad "$2: no '$1' in the output"; fi; }
# finish: the verdict line "test_NAME: P passed, F failed" (", S skipped in N s" where t_start is
# set), then exit 0 when nothing failed, 1 otherwise
finish() {
    if [ -n "${t_start:-}" ]; then
        echo "$lib_name: $pass passed, $fail failed, $skip skipped in $(( $(date +%s) - t_start )) s"
    else
        echo "$lib_name: $pass passed, $fail failed"
    fi
    [ "$fail" -eq 0 ]; exit $?
}
