#!/bin/sh
# Draws the loss curves of `mirage train` logs as one SVG on stdout: the training loss (as
# logged, every --log-every steps) and the validation loss, against the step. Several logs are
# drawn one after another (a continued run's steps are offset by the earlier runs' last step).
#
#   sh scripts/loss_svg.sh TITLE LOG [LOG...] > curve.svg
set -eu
title=$1
shift
awk -v title="$title" '
FNR == 1 { base = last }
/^step [0-9]+\// { split($2, a, "/"); s = base + a[1]; last = s; n++; ts[n] = s; tl[n] = $5 + 0 }
/^val  step/     { m++; vs[m] = base + $3; vl[m] = $6 + 0 }
END {
    if (n == 0) { print "loss_svg: no step lines" > "/dev/stderr"; exit 1 }
    W = 720; H = 360; L = 70; R = 20; T = 40; B = 50
    xmax = last; ymin = 1e9; ymax = 0
    for (i = 1; i <= n; i++) { if (tl[i] > ymax) ymax = tl[i]; if (tl[i] < ymin) ymin = tl[i] }
    for (i = 1; i <= m; i++) { if (vl[i] > ymax) ymax = vl[i]; if (vl[i] < ymin) ymin = vl[i] }
    # log scale on y
    ly0 = log(ymin * 0.9) / log(10); ly1 = log(ymax * 1.1) / log(10)
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H
    printf "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H
    printf "<text x=\"%d\" y=\"22\" font-size=\"14\">%s</text>\n", L, title
    printf "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", L, T, W - L - R, H - T - B
    for (e = int(ly0) - 1; e <= int(ly1) + 1; e++) for (k = 1; k <= 9; k++) {
        v = k * 10 ^ e; lv = log(v) / log(10)
        if (lv < ly0 || lv > ly1) continue
        y = T + (H - T - B) * (ly1 - lv) / (ly1 - ly0)
        printf "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", L, W - R, y, y
        if (k == 1 || k == 2 || k == 5) printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6, y + 4, v
    }
    for (k = 0; k <= 5; k++) {
        s = xmax * k / 5; x = L + (W - L - R) * k / 5
        printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x, H - B + 16, s
    }
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (W + L) / 2, H - 12
    for (pass = 0; pass < 2; pass++) {
        cnt = pass ? m : n
        if (cnt == 0) continue
        printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", pass ? "#d62728" : "#1f77b4"
        for (i = 1; i <= cnt; i++) {
            s = pass ? vs[i] : ts[i]; v = pass ? vl[i] : tl[i]
            x = L + (W - L - R) * s / xmax; y = T + (H - T - B) * (ly1 - log(v) / log(10)) / (ly1 - ly0)
            printf "%.1f,%.1f ", x, y
        }
        printf "\"/>\n"
    }
    printf "<text x=\"%d\" y=\"%d\" fill=\"#1f77b4\">training loss (logged steps)</text>\n", W - 330, T + 16
    printf "<text x=\"%d\" y=\"%d\" fill=\"#d62728\">validation loss (held-out split)</text>\n", W - 330, T + 32
    print "</svg>"
}' "$@"
