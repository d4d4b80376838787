#!/bin/sh
# Data-parallel training (issue 8) on a GPU machine of 2 or 4 GPUs, in one call:
#
#   sh dev/train/dp.sh build   here: builds build-dp/mirage (CUDA + NCCL headers, libjpeg-turbo
#                              for the shards; no FFmpeg/OpenBLAS/SDL2/libpng/lws) and copies the
#                              shared libraries the GPU machine lacks into .devlibs/
#   sh dev/train/dp.sh run     there (carry build-dp/mirage, .devlibs, data): the parts in PARTS
#                              (default "curves resume tae faults speed"), logs and a summary in $OUT
#
#   curves  200 DiT steps (--init models/mirage-tiny.safetensors --fresh-dit, batch 8 of 6
#           frames at 128x128, seed 0) on 1 GPU and on 2 GPUs, and on 1 GPU with seed 1 (the
#           scale of batch-to-batch noise): per-step loss differences, max and mean, absolute and
#           relative; validation (every 100 steps) and samples (rank 0) on the way
#   resume  12 steps on 1 GPU; the same run as 4 on 1 GPU + 4 on 2 GPUs + 4 on 1 GPU (--resume,
#           --stop-after 4): the losses of the two, step by step
#   tae     the autoencoder stage, 60 steps on 1 and on 2 GPUs: the loss differences
#   faults  2 GPUs: SIGINT to the launcher (clean stop, checkpoint, --resume), kill -9 of a rank
#           (the others must not hang): exit codes and how long each took
#   speed   steps/s and samples/s at 1, 2 and 4 GPUs (those the machine has) with SPEED_PB clips per
#           GPU (default 8) of config SPEED_CONFIG (s) at SPEED_SIZE (256), 6 frames: median ms of
#           steps 11..SPEED_STEPS (40), scaling efficiency = samples/s at N / (N x at 1), and the
#           median of each phase of the step line; SPEED_GPUS ("1 2 4") may add A/B runs as
#           N:VAR=value (e.g. "2:MIRAGE_DIST_BUCKET_MB=25")
#
# NCCL: the GPU machine has it only in pip's nvidia-nccl-cu13; mirage finds it beside python3
# (or set MIRAGE_NCCL). NCCL_NVLS_ENABLE=0 is exported here too (KINDS.md: NVLink multicast
# must stay off on these machines).
set -u
B=${BUILD:-build-dp}
if [ "${1:-run}" = build ]; then
    make BUILD="$B" CUDA=1 FFMPEG=0 OPENBLAS=0 SDL2=0 PNG=0 LWS=0 JPEG=1 -j2 "$B/mirage" || exit 1
    mkdir -p .devlibs
    for l in libcjson.so.1 libgomp.so.1 libturbojpeg.so.0; do cp -L "/usr/lib/x86_64-linux-gnu/$l" .devlibs/ || exit 1; done
    du -sh "$B/mirage" .devlibs data
    exit 0
fi

export NCCL_NVLS_ENABLE=0
O=${OUT:-dp-logs}
R=${RUNS:-/tmp/dp-runs}
M="$B/mirage"
mkdir -p "$O" "$R"
export LD_LIBRARY_PATH="$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
NG=$(nvidia-smi -L | wc -l)
{ nvidia-smi -L; nproc; git log -1 --format='commit %h %s' 2>/dev/null; } | tee "$O/card.txt"
S="$O/summary.txt"
: >"$S"

# losses A B: "step loss_a loss_b" for the steps both logs have
pair() { awk -F' [|] ' '/^step /{split($1,a," "); split(a[2],b,"/"); sub(/^loss /,"",$2); print b[1], $2}' "$1" | sort -n >"$R/a"
         awk -F' [|] ' '/^step /{split($1,a," "); split(a[2],b,"/"); sub(/^loss /,"",$2); print b[1], $2}' "$2" | sort -n >"$R/b"
         join "$R/a" "$R/b"; }
# diffs: max / mean of |a-b| and of |a-b|/|a| over the pairs on stdin
diffs() { awk '{d=$2-$3; if(d<0)d=-d; r=d/($2<0?-$2:$2); n++; s+=d; sr+=r; if(d>m){m=d; ms=$1}; if(r>mr)mr=r}
               END{printf "%d steps: |diff| max %.3g (step %d), mean %.3g; relative max %.3g, mean %.3g\n", n, m, ms, s/n, mr, sr/n}'; }

DIT="--init models/mirage-tiny.safetensors --fresh-dit --data data --device cuda --batch 8 --frames 6 --size 128 --steps 200 --log-every 1 --ckpt-every 0 --dtype bf16"
for part in ${PARTS:-curves resume tae faults speed}; do
    case $part in
    curves)
        $M train dit $DIT --out "$R/c1.safetensors" --val-every 100 --sample-every 0 >"$O/curve_1gpu.log" 2>&1 || echo "curves: 1 GPU failed" | tee -a "$S"
        $M train dit $DIT --out "$R/c2.safetensors" --val-every 100 --sample-every 200 --samples "$R/c2-samples" --gpus 2 >"$O/curve_2gpu.log" 2>&1 || echo "curves: 2 GPUs failed" | tee -a "$S"
        $M train dit $DIT --out "$R/c1s.safetensors" --val-every 0 --sample-every 0 --seed 1 >"$R/curve_seed1.log" 2>&1 || echo "curves: seed 1 failed" | tee -a "$S"
        pair "$O/curve_1gpu.log" "$O/curve_2gpu.log" >"$O/curve_pairs.txt"
        { echo "== curves: 1 GPU vs 2 GPUs, the same global batch 8 and seed"; diffs <"$O/curve_pairs.txt"
          for k in 1 2 3 10 50 100 150 200; do awk -v k=$k '$1==k{printf "  step %d: %s / %s\n", $1, $2, $3}' "$O/curve_pairs.txt"; done
          printf "  first 20 steps: "; head -n 20 "$O/curve_pairs.txt" | diffs
          printf "  steps 181-200:  "; tail -n 20 "$O/curve_pairs.txt" | diffs
          printf "  noise scale, 1 GPU seed 0 vs seed 1 (other batches): "; pair "$O/curve_1gpu.log" "$R/curve_seed1.log" | diffs
          grep '^val ' "$O/curve_1gpu.log" | sed 's/^/  1 GPU:  /'; grep '^val ' "$O/curve_2gpu.log" | sed 's/^/  2 GPUs: /'
          grep -E '^(data parallel|train:|done|sample)' "$O/curve_2gpu.log" | sed 's/^/  /'
          ls "$R/c2-samples" 2>/dev/null | sed 's/^/  sample: /'; } | tee -a "$S"
        ;;
    resume)
        RS="--init models/mirage-tiny.safetensors --fresh-dit --data data --device cuda --batch 8 --frames 6 --size 128 --steps 12 --log-every 1 --ckpt-every 0 --val-every 0 --sample-every 0 --warmup 2"
        $M train dit $RS --out "$R/r.safetensors" >"$O/resume_whole.log" 2>&1 || echo "resume: whole run failed" | tee -a "$S"
        rm -f "$R"/rr.*
        { $M train dit $RS --out "$R/rr.safetensors" --resume --stop-after 4 &&
          $M train dit $RS --out "$R/rr.safetensors" --resume --stop-after 4 --gpus 2 &&
          $M train dit $RS --out "$R/rr.safetensors" --resume; } >"$O/resume_split.log" 2>&1 || echo "resume: 1 -> 2 -> 1 failed" | tee -a "$S"
        { echo "== resume: 12 steps on 1 GPU vs 4 (1 GPU) + 4 (2 GPUs) + 4 (1 GPU)"; pair "$O/resume_whole.log" "$O/resume_split.log" | tee "$R/rp" | diffs
          awk '{printf "  step %d: %s / %s\n", $1, $2, $3}' "$R/rp"; grep -E '^(resume|stopped|done)' "$O/resume_split.log" | sed 's/^/  /'; } | tee -a "$S"
        ;;
    tae)
        # the autoencoder stage: its pass is one CUDA graph, so its gradients are summed in one
        # all-reduce after it (no overlap); the curves must agree all the same
        TA="--config tiny --data data --device cuda --batch 16 --size 128 --steps 60 --log-every 1 --ckpt-every 0 --val-every 30 --sample-every 0"
        $M train tae $TA --out "$R/t1.safetensors" >"$O/tae_1gpu.log" 2>&1 || echo "tae: 1 GPU failed" | tee -a "$S"
        $M train tae $TA --out "$R/t2.safetensors" --gpus 2 >"$O/tae_2gpu.log" 2>&1 || echo "tae: 2 GPUs failed" | tee -a "$S"
        { echo "== tae: 60 steps, batch 16 at 128x128, 1 GPU vs 2 GPUs"; pair "$O/tae_1gpu.log" "$O/tae_2gpu.log" | diffs
          grep '^val ' "$O/tae_1gpu.log" | sed 's/^/  1 GPU:  /'; grep '^val ' "$O/tae_2gpu.log" | sed 's/^/  2 GPUs: /'; } | tee -a "$S"
        ;;
    faults)
        # Ctrl-C reaches every rank (the launcher forwards it): a clean stop with a checkpoint,
        # then --resume; kill -9 of one rank: the others abort their collectives, the command
        # ends with an error instead of hanging
        FT="--init models/mirage-tiny.safetensors --fresh-dit --data data --device cuda --batch 8 --frames 6 --size 128 --steps 100000 --log-every 1 --ckpt-every 0 --val-every 0 --sample-every 0 --gpus 2"
        rm -f "$R"/f.*
        $M train dit $FT --out "$R/f.safetensors" >"$O/fault_int.log" 2>&1 &
        pid=$!
        for i in $(seq 1 300); do grep -q '^step 20/' "$O/fault_int.log" && break; sleep 0.1; done
        kill -INT $pid; t0=$(date +%s.%N); wait $pid; rc=$?; t1=$(date +%s.%N)
        $M train dit $FT --out "$R/f.safetensors" --resume --stop-after 3 >"$O/fault_resume.log" 2>&1; rc2=$?
        $M train dit $FT --out "$R/f9.safetensors" >"$O/fault_kill.log" 2>&1 &
        pid=$!
        for i in $(seq 1 300); do grep -q '^step 20/' "$O/fault_kill.log" && break; sleep 0.1; done
        kid=$(pgrep -P $pid | tail -n 1)
        kill -9 "$kid"; t2=$(date +%s.%N); wait $pid; rc3=$?; t3=$(date +%s.%N)
        { echo "== faults (2 GPUs)"
          echo "  SIGINT to the launcher: exit $rc after $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.1f", b-a}') s; $(grep -E '^stopped' "$O/fault_int.log")"
          echo "  --resume: exit $rc2; $(grep -E '^(resume|stopped)' "$O/fault_resume.log" | tr '\n' ' ')"
          echo "  kill -9 of rank pid $kid: the command exited $rc3 after $(awk -v a=$t2 -v b=$t3 'BEGIN{printf "%.1f", b-a}') s"
          grep -E 'error' "$O/fault_kill.log" | head -n 4 | sed 's/^/    /'; } | tee -a "$S"
        ;;
    speed)
        PB=${SPEED_PB:-8}
        SP="--data data --device cuda --config ${SPEED_CONFIG:-s} --frames 6 --size ${SPEED_SIZE:-256} --steps ${SPEED_STEPS:-40} --log-every 1 --ckpt-every 0 --val-every 0 --sample-every 0 --dtype bf16"
        echo "== speed: config ${SPEED_CONFIG:-s}, $PB clips of 6 frames at ${SPEED_SIZE:-256}x${SPEED_SIZE:-256} per GPU (fresh init)" | tee -a "$S"
        base=""
        for n in ${SPEED_GPUS:-1 2 4}; do
            case $n in *:*) env=${n#*:}; n=${n%%:*} ;; *) env="" ;; esac # "2:MIRAGE_DIST_BUCKET_MB=25": an A/B
            [ "$n" -le "$NG" ] || continue
            env $env $M train dit $SP --batch $((PB * n)) --out "$R/s$n.safetensors" --gpus $n >"$O/speed_$n$env.log" 2>&1 || echo "speed: $n GPUs failed" | tee -a "$S"
            # median step ms over steps 11.., and the median of each phase
            med=$(awk -F' [|] ' '/^step /{split($1,a," "); split(a[2],b,"/"); if (b[1] > 10) {split($5,m," "); print m[1]}}' "$O/speed_$n$env.log" | sort -n | awk '{v[NR]=$1} END{if(NR) print v[int((NR+1)/2)]; else print 0}')
            dat=$(awk -F' [|] ' '/^step /{split($1,a," "); split(a[2],b,"/"); if (b[1] > 10) {match($5,/data [0-9.]+/); print substr($5,RSTART+5,RLENGTH-5)}}' "$O/speed_$n$env.log" | sort -n | awk '{v[NR]=$1} END{if(NR) print v[int((NR+1)/2)]; else print 0}')
            line=$(awk -v n=$n -v pb=$PB -v ms="$med" -v d="$dat" -v b="${base:-0}" 'BEGIN{ if (ms <= 0) {printf "%d GPU(s): no steps\n", n; exit}
                sps=1000/ms; smp=sps*pb*n; eff=(b>0)? smp/(n*b) : 1;
                printf "%d GPU(s): batch %d, %.1f ms/step (data wait %.1f), %.2f steps/s, %.1f samples/s, efficiency %.0f%%\n", n, pb*n, ms, d, sps, smp, 100*eff}')
            echo "  $line${env:+ ($env)}" | tee -a "$S"
            # the phases' medians (data, encode, aug, step, opt) over the same steps
            awk -F' [|] ' '/^step /{split($1,a," "); split(a[2],b,"/"); if (b[1] > 10) {s=$5; sub(/^[^(]*[(]/,"",s); sub(/[)].*/,"",s); n=split(s,kv,", "); for(i=1;i<=n;i++){split(kv[i],p," "); v[p[1]]=v[p[1]] " " p[2]; names[i]=p[1]}; k=n}}
                END{printf "    medians:"; for(i=1;i<=k;i++){m=split(v[names[i]],x," "); for(j=1;j<=m;j++)for(q=j+1;q<=m;q++)if(x[q]<x[j]){t=x[j];x[j]=x[q];x[q]=t}; printf " %s %s", names[i], x[int((m+1)/2)]}; printf "\n"}' "$O/speed_$n$env.log" | tee -a "$S"
            [ -n "$base" ] || base=$(awk -v pb=$PB -v ms="$med" 'BEGIN{if (ms > 0) print 1000/ms*pb; else print 0}')
        done
        ;;
    esac
done
ls -la "$R" >>"$O/card.txt"
# what comes back (at most 8 files): the summary, and every log in one tar
( cd "$O" && tar cf logs.tar --exclude=logs.tar --exclude=summary.txt . ) && find "$O" -type f ! -name logs.tar ! -name summary.txt -delete
