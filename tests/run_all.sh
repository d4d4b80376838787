#!/bin/sh
# Runs every test binary given on the command line and tests/test_*.sh, then prints
# one verdict line: "N passed, N failed".
pass=0; fail=0; failed=""
for t in "$@" tests/test_*.sh; do
    [ -e "$t" ] || continue
    echo "== $t"
    case "$t" in
        *.sh) sh "$t" ;;
        *) "$t" ;;
    esac
    if [ $? -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); failed="$failed $t"; fi
done
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
