#!/usr/bin/env bash
# Prints the markdown table docs/RESULTS.md uses for a set of `mirage eval` reports: one row per
# report directory (its metrics.json), PSNR at frame 1, over frames 91-110 and the last 20, the
# mean, the input's own score, drift, flicker, the detail and colour-spread ratios, the flags
# (collapse, explosion, freeze, with the frame) and the issue 6 verdict.
#
#   bash scripts/eval_table.sh [-m INDEX] DIR...
#
# DIR: report directories (each with metrics.json) or folders of them (every */metrics.json
# under it, one level down, in the order colorize upscale restore style-* dream). -m INDEX picks
# the model of a --compare report (0: --model, 1: --compare). Needs jq.
set -euo pipefail
M=0
if [ "${1:-}" = -m ]; then M=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n 2,11p "$0" >&2; exit 2; }
command -v jq >/dev/null || { echo "eval_table: needs jq (apt-get install jq)" >&2; exit 1; }
ORDER="autoencoder colorize upscale restore style-toon style-sketch style-thermal dream"

row() { # row LABEL METRICS_JSON
    jq -r --arg l "$1" --argjson k "$M" '.models[$k] as $m | ($m.series.psnr // []) as $p | ($p | length) as $n
        | def mean(a; b): ($p[a:b] | map(select(. != null)) | if length > 0 then add / length else null end);
        def r2: if . == null then "-" else (. * 100 | round / 100) end;
        def flag(f): if $m.flags[f].flagged then "\(f) (\($m.flags[f].frame))" else empty end;
        ([flag("collapse"), flag("explosion"), flag("freeze")] | if length > 0 then join(", ") else "no" end) as $fl
        | "| \($l) | \($p[0] | r2) | \(if $n >= 110 then (mean(90; 110) | r2) else "-" end) | \(mean($n - 20; $n) | r2) | \($m.summary.psnr_mean | r2) | \($m.summary.baseline_psnr_mean | r2) | \($m.summary.drift_db_per_1000 | r2) | \($m.summary.flicker | r2) | \($m.summary.detail_ratio | r2) | \($m.summary.colour_std_ratio | r2) | \($fl) | \(if $m.verdict.pass then "pass" else "FAIL" end) |"' \
        "$2"
}

echo "| prompt | PSNR frame 1 | frames 91-110 | last 20 | mean | the input's own | drift dB/1000 | flicker | detail | colour std | flags | issue 6 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for d in "$@"; do
    if [ -f "$d/metrics.json" ]; then
        row "$(basename "$d")" "$d/metrics.json"
        continue
    fi
    for p in $ORDER; do [ -f "$d/$p/metrics.json" ] && row "${p/-/:}" "$d/$p/metrics.json"; done
done
