#!/bin/sh
# mirage train (issue 5) end to end on the tiny config, on shards built from generated clips:
#  - usage errors exit 2, runtime errors exit 1, with "mirage: error:";
#  - 2N steps equal N steps + --resume + N steps bit for bit (every loss printed with 9
#    significant digits, and the model files compared byte for byte), for tae and for dit
#    (history augmentation and prompt dropout on);
#  - kill -9 at random moments, many times (also while a checkpoint is being written), always
#    leaves a checkpoint that loads and resumes, and the run still ends bit-identical to the
#    uninterrupted one;
#  - the model file is a normal weights file (mirage info), in f32 and bf16; samples are PNG.
. "$(dirname "$0")/lib.sh"
losses() { grep '^step ' "$1" | awk '{print $2, $5}'; } # "k/N loss" per step

if ! command -v ffmpeg >/dev/null 2>&1; then skipped "no ffmpeg program to make test clips"; finish; fi

# ---- data: 3 videos and 4 photos from FFmpeg's generators --------------------------------
mkdir -p "$T/src"
for g in testsrc2 rgbtestsrc smptehdbars; do
    ffmpeg -v error -f lavfi -i "$g=size=96x80:rate=10" -frames:v 20 -pix_fmt yuv420p "$T/src/$g.y4m" || bad "ffmpeg $g"
done
i=0
for g in mandelbrot "cellauto=rule=110" "life=mold=10:ratio=0.3" "gradients=speed=0.1"; do
    i=$((i + 1))
    ffmpeg -v error -f lavfi -i "$g:size=96x96" -frames:v 1 "$T/src/photo$i.png" 2>/dev/null ||
        ffmpeg -v error -f lavfi -i "${g%%=*}=size=96x96" -frames:v 1 "$T/src/photo$i.png" || bad "ffmpeg $g"
done
expect 0 "data build" -- $M data build --out "$T/data" --size 64 --photo-size 96 --val-fraction 0.3 --quiet "$T/src"
D=$T/data

# ---- usage and runtime errors -------------------------------------------------------------
expect 0 "train --help" -- $M train --help
grep_out "time-limit" "help lists --time-limit"
expect 0 "help train" -- $M help train
expect 2 "train without a stage" -- $M train
expect 2 "train bad stage" -- $M train vae --data "$D" --out "$T/x.safetensors"
grep_out "mirage: error:" "bad stage message"
expect 2 "train without --data" -- $M train tae --out "$T/x.safetensors"
expect 2 "train without --out" -- $M train tae --data "$D"
expect 2 "train bad --size" -- $M train tae --data "$D" --out "$T/x.safetensors" --size 40
expect 2 "train bad --dtype" -- $M train tae --data "$D" --out "$T/x.safetensors" --dtype fp8
expect 2 "train bad --hist-aug" -- $M train dit --data "$D" --out "$T/x.safetensors" --hist-aug 2
expect 2 "train --fresh-dit without --init" -- $M train dit --data "$D" --out "$T/x.safetensors" --fresh-dit --config tiny
expect 2 "train --sigma-ctx out of range" -- $M train dit --data "$D" --out "$T/x.safetensors" --sigma-ctx 0.9
expect 2 "train --fades out of range" -- $M train dit --data "$D" --out "$T/x.safetensors" --fades 2
expect 2 "train unknown option" -- $M train tae --data "$D" --out "$T/x.safetensors" --frobnicate
expect 1 "train missing data dir" -- $M train tae --data "$T/nodata" --out "$T/x.safetensors" --steps 1
grep_out "mirage: error:" "missing data message"
expect 1 "train unknown config" -- $M train tae --data "$D" --out "$T/x.safetensors" --config huge --steps 1
expect 2 "train --train-prompts empty" -- $M train dit --data "$D" --out "$T/x.safetensors" --train-prompts ""
expect 1 "train --init not a model" -- $M train dit --data "$D" --out "$T/x.safetensors" --init "$T/src/photo1.png" --steps 1
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    expect 1 "train --device cuda without a GPU (or without CUDA in the build)" -- $M train tae --data "$D" --out "$T/x.safetensors" --steps 1 --device cuda
    grep_out "mirage: error:" "no-GPU message"
fi
[ ! -e "$T/x.safetensors" ] && ok "no model file after failures" || bad "a failed run left $T/x.safetensors"

# ---- tae: 2N = N + resume + N --------------------------------------------------------------
TAE="--data $D --config tiny --steps 6 --batch 2 --size 32 --threads 2 --val-every 3 --val-clips 2 --sample-every 0"
expect 0 "tae 6 steps" -- $M train tae $TAE --out "$T/tae_a.safetensors" --ckpt-every 0 --sample-every 6
cp "$T/out" "$T/tae_a.log"
grep_out "^step 6/6 | loss" "tae prints a line per step"
grep_out "MFU" "the step line has MFU"
grep_out "^val  step 6" "tae validation loss"
ls "$T"/tae_a.samples/*.png >/dev/null 2>&1 && ok "tae sample PNG written" || bad "no tae sample PNG"
expect 0 "tae: 3 steps (--stop-after 3)" -- $M train tae $TAE --out "$T/tae_b.safetensors" --ckpt-every 0 --stop-after 3
cp "$T/out" "$T/tae_b.log"
grep_out "^stopped at step 3/6: --stop-after" "--stop-after stops cleanly"
expect 0 "tae: resume, 3 more" -- $M train tae $TAE --out "$T/tae_b.safetensors" --resume
grep_out "^resume: .* at step 3" "tae resume says where it continues"
cat "$T/out" >>"$T/tae_b.log"
losses "$T/tae_a.log" >"$T/la"; losses "$T/tae_b.log" >"$T/lb"
if cmp -s "$T/la" "$T/lb"; then ok "tae: 3 steps + resume + 3 steps = 6 steps, losses bit-exact"
else bad "tae resumed losses differ"; paste "$T/la" "$T/lb" | sed 's/^/        /'; fi
cmp -s "$T/tae_a.safetensors" "$T/tae_b.safetensors" && ok "tae model files identical after resume" || bad "tae model files differ"
expect 0 "tae stopped by --time-limit" -- $M train tae $TAE --out "$T/tae_t.safetensors" --ckpt-every 0 --time-limit 1
grep_out "^stopped at step 1/6: time limit" "the time limit stops cleanly after a step"
expect 0 "tae resume after the time limit" -- $M train tae $TAE --out "$T/tae_t.safetensors" --resume
cmp -s "$T/tae_a.safetensors" "$T/tae_t.safetensors" && ok "tae: 1 + resume + 5 = 6, model identical" || bad "tae model after time-limit resume differs"
expect 0 "info reads the trained model" -- $M info "$T/tae_a.safetensors"
expect 2 "resume with a different --batch" -- $M train tae $TAE --out "$T/tae_b.safetensors" --resume --batch 3
grep_out "differs from the checkpoint" "resume names the changed option"

# ---- dit: 4 = 2 + resume + 2, with history augmentation and prompt dropout -----------------
DIT="--data $D --init $T/tae_a.safetensors --steps 4 --batch 2 --size 32 --frames 4 --threads 2 --val-every 2 --val-clips 2 --sample-every 0 --hist-aug 1 --prompt-dropout 0.3"
expect 0 "dit 4 steps" -- $M train dit $DIT --out "$T/dit_a.safetensors" --ckpt-every 0 --sample-every 4 --dtype bf16
cp "$T/out" "$T/dit_a.log"
grep_out "hist-aug 1, prompt-dropout 0.3" "the dit recipe line"
grep -q "hf-loss" "$T/dit_a.log" && bad "a dit run prints the autoencoder's --hf-loss" || ok "the dit recipe line has no tae options"
ls "$T"/dit_a.samples/*.png >/dev/null 2>&1 && ok "dit sample PNG written (streamed)" || bad "no dit sample PNG"
expect 0 "info reads the bf16 model" -- $M info "$T/dit_a.safetensors"
a=$(wc -c <"$T/dit_a.safetensors"); b=$(wc -c <"$T/tae_a.safetensors")
[ "$a" -lt $((b * 6 / 10)) ] && ok "bf16 model file about half the f32 one ($a vs $b bytes)" || bad "bf16 file $a bytes vs f32 $b"

expect 0 "dit: 2 steps (--stop-after 2)" -- $M train dit $DIT --out "$T/dit_s.safetensors" --dtype bf16 --stop-after 2
cp "$T/out" "$T/s1.log"
expect 0 "dit: resume, 2 more" -- $M train dit $DIT --out "$T/dit_s.safetensors" --dtype bf16 --resume
cat "$T/s1.log" "$T/out" >"$T/s2.log"
losses "$T/dit_a.log" >"$T/la"; losses "$T/s2.log" >"$T/ls"
if cmp -s "$T/la" "$T/ls"; then ok "dit: 2 steps + resume + 2 steps = 4 steps, losses bit-exact"
else bad "dit resumed losses differ"; paste "$T/la" "$T/ls" | sed 's/^/        /'; fi
cmp -s "$T/dit_a.safetensors" "$T/dit_s.safetensors" && ok "dit model files identical after resume" || bad "dit model files differ after resume"
expect 0 "dit 4 steps, checkpoint every step" -- $M train dit $DIT --out "$T/dit_c.safetensors" --ckpt-every 1 --dtype bf16
cp "$T/out" "$T/dit_c.log"
losses "$T/dit_a.log" >"$T/la"; losses "$T/dit_c.log" >"$T/lc"
cmp -s "$T/la" "$T/lc" && ok "dit losses do not depend on checkpointing" || bad "dit losses changed with checkpoints"
# a new recipe on the trained autoencoder: fresh DiT, fades, the history's noise level
FR="--data $D --init $T/dit_a.safetensors --fresh-dit --fades 1 --sigma-ctx 0.1 --steps 2 --batch 2 --size 32 --frames 4 --threads 2 --val-every 0 --sample-every 0"
expect 0 "dit --fresh-dit --fades 1 --sigma-ctx 0.1, 2 steps" -- $M train dit $FR --out "$T/dit_f.safetensors"
grep_out "the DiT drawn afresh" "--fresh-dit says what it kept"
grep_out "fades 1, sigma_ctx 0.1" "the recipe line shows fades and sigma_ctx"
l1=$(losses "$T/out" | head -n 1 | cut -d' ' -f2); l0=$(losses "$T/dit_a.log" | head -n 1 | cut -d' ' -f2)
[ -n "$l1" ] && [ "$l1" != "$l0" ] && ok "a fresh DiT starts from another loss ($l1 vs $l0)" || bad "fresh DiT loss '$l1' vs '$l0'"
expect 0 "info of the new recipe's model" -- $M info "$T/dit_f.safetensors"
grep_out "sigma_ctx 0.1" "the model file carries sigma_ctx 0.1"
expect 2 "resume with another --sigma-ctx" -- $M train dit $FR --out "$T/dit_f.safetensors" --resume --sigma-ctx 0.2
grep_out "differs from the checkpoint" "sigma_ctx mismatch message"
expect 2 "resume with another --fades" -- $M train dit $FR --out "$T/dit_f.safetensors" --resume --fades 0.5
# --train-prompts: the items from some prompts only; kept in the checkpoint
expect 1 "--train-prompts with an unknown prompt" -- $M train dit $FR --out "$T/dit_pb.safetensors" --train-prompts style:toon,bogus
grep_out "'bogus' is not a prompt" "--train-prompts names the unknown prompt"
[ ! -e "$T/dit_pb.safetensors" ] && ok "no model file after the refusal" || bad "a refused --train-prompts run left a model file"
expect 1 "--train-prompts with a weight of 0" -- $M train dit $FR --out "$T/dit_pb.safetensors" --train-prompts style:toon=0
grep_out "a weight is a number above 0" "--train-prompts says what a weight is"
expect 0 "dit --train-prompts with weights, 1 step" -- $M train dit $FR --out "$T/dit_pw.safetensors" \
    --train-prompts colorize,style:toon=3 --stop-after 1
grep_out "prompts: colorize,style:toon=3 (--train-prompts" "the configuration names the weighted prompts"
expect 0 "dit --train-prompts style:toon,style:sketch, 1 of 2 steps" -- $M train dit $FR --out "$T/dit_p.safetensors" \
    --train-prompts style:toon,style:sketch --stop-after 1
grep_out "prompts: style:toon,style:sketch (--train-prompts" "the configuration names the prompts"
expect 2 "resume with other --train-prompts" -- $M train dit $FR --out "$T/dit_p.safetensors" --resume --train-prompts style:toon
grep_out "differs from the checkpoint" "--train-prompts mismatch message"
expect 0 "resume without the flag adopts --train-prompts" -- $M train dit $FR --out "$T/dit_p.safetensors" --resume
grep_out "prompts: style:toon,style:sketch (--train-prompts" "the resumed run keeps the prompts"
# a run killed (-9) right after its step-2 checkpoint, then resumed
rm -f "$T"/dit_d.*
$M train dit $DIT --out "$T/dit_d.safetensors" --ckpt-every 1 --dtype bf16 >"$T/d1.log" 2>&1 &
pid=$!
k=0
while kill -0 $pid 2>/dev/null; do
    if grep -q "^ckpt step 2" "$T/d1.log"; then kill -9 $pid; break; fi
    sleep 0.02; k=$((k + 1)); [ $k -gt 3000 ] && break
done
wait $pid 2>/dev/null
expect 0 "dit resume after kill -9" -- $M train dit $DIT --out "$T/dit_d.safetensors" --resume --dtype bf16
cp "$T/out" "$T/d2.log"
losses "$T/d1.log" >"$T/l1"; losses "$T/d2.log" >"$T/l2"
cat "$T/l1" "$T/l2" | sort -u | sort -t/ -k1,1n >"$T/ld"
if cmp -s "$T/la" "$T/ld"; then ok "dit: N steps + kill + resume = 2N steps, losses bit-exact ($(wc -l <"$T/l2") resumed)"
else bad "dit resumed losses differ"; paste "$T/la" "$T/ld" | sed 's/^/        /'; fi
cmp -s "$T/dit_a.safetensors" "$T/dit_d.safetensors" && ok "dit model after kill + resume identical" || bad "dit model after resume differs"

# bf16 moments: a smaller checkpoint, resumable, and the resume says it is not bit-exact
expect 0 "dit with --ckpt-moments bf16, stopped by the time limit" -- $M train dit $DIT --out "$T/dit_h.safetensors" --ckpt-moments bf16 --time-limit 1
expect 0 "dit resume from bf16 moments" -- $M train dit $DIT --out "$T/dit_h.safetensors" --resume
grep_out "not bit-identical" "resume from bf16 moments says so"
expect 2 "bad --ckpt-moments" -- $M train dit $DIT --out "$T/dit_h.safetensors" --ckpt-moments fp8

# ---- decoder-only fine-tune with the Laplacian term (--freeze-encoder --hf-loss) --------------
expect 2 "--hf-loss on stage dit" -- $M train dit $DIT --out "$T/x.safetensors" --hf-loss 1
expect 2 "--freeze-encoder without --init" -- $M train tae --data "$D" --config tiny --out "$T/x.safetensors" --freeze-encoder
expect 2 "--hf-loss out of range" -- $M train tae $TAE --out "$T/x.safetensors" --hf-loss -1
FT="--data $D --init $T/tae_a.safetensors --steps 4 --batch 2 --size 32 --threads 2 --val-every 0 --sample-every 0"
expect 0 "tae decoder-only with --hf-loss 0.5, 3 of 4 steps" -- $M train tae $FT --out "$T/ft.safetensors" --freeze-encoder --hf-loss 0.5 --stop-after 3
grep_out "encoder frozen" "the run says the encoder is frozen"
# tensor offsets of the data section: the encoder's tensors come first, then the decoder's, then the DiT's
hdr() { od -An -t u8 -N 8 "$1" | tr -d ' '; }
off() { grep -ao "\"$2\":{[^}]*}" "$1" | head -1 | sed 's/.*data_offsets":\[\([0-9]*\),.*/\1/'; }
h=$(hdr "$T/ft.safetensors"); h0=$(hdr "$T/tae_a.safetensors")
d0=$(off "$T/ft.safetensors" dec.in.weight); t0=$(off "$T/ft.safetensors" dit.in.weight)
if [ -n "$h" ] && [ -n "$h0" ] && [ "$d0" = "$(off "$T/tae_a.safetensors" dec.in.weight)" ] && [ -n "$t0" ]; then
    # the data sections (the headers' metadata differ); cmp -l: 1-based offsets of differing
    # bytes, all of which must lie in the decoder's tensors
    tail -c +$((8 + h0 + 1)) "$T/tae_a.safetensors" >"$T/data0"; tail -c +$((8 + h + 1)) "$T/ft.safetensors" >"$T/data1"
    r=$(cmp -l "$T/data0" "$T/data1" | awk -v lo=$((d0 + 1)) -v hi=$t0 '$1 < lo || $1 > hi {o++} {n++} END {print n + 0, o + 0}')
    set -- $r
    [ "$1" -gt 0 ] && [ "$2" -eq 0 ] && ok "decoder-only: $1 bytes of the decoder changed; encoder and DiT bytes identical" ||
        bad "decoder-only: $1 bytes differ, $2 of them outside the decoder"
else bad "decoder-only: headers differ in size or offsets not found ($h, $d0, $t0)"; fi
expect 0 "decoder-only resume to 4 steps" -- $M train tae $FT --out "$T/ft.safetensors" --freeze-encoder --hf-loss 0.5 --resume
grep_out "resume: " "decoder-only run resumed"
expect 2 "resume with another --hf-loss" -- $M train tae $FT --out "$T/ft.safetensors" --hf-loss 0.25 --resume

# ---- kill -9 at random moments --------------------------------------------------------------
KILL="--data $D --config tiny --steps 40 --batch 1 --size 32 --threads 2 --val-every 0 --sample-every 0 --ckpt-every 1 --ckpt-part-mib 4"
expect 0 "kill test reference run" -- $M train tae $KILL --out "$T/k_ref.safetensors"
losses "$T/out" >"$T/kref"
kills=0; during=0; resumed=0; errors=0; rounds=0; rnd=12345
while [ $rounds -lt 40 ]; do
    rounds=$((rounds + 1))
    $M train tae $KILL --out "$T/k.safetensors" --resume >"$T/k.log" 2>&1 &
    pid=$!
    # 0.3..1.6 s: startup (0.5..1.5 s here), steps and checkpoint writes all get hit
    rnd=$(( (rnd * 1103515245 + 12345) % 2147483648 ))
    ms=$(( 300 + rnd / 65536 % 1300 )); ms=$((ms / 1000)).$(printf %03d $((ms % 1000)))
    sleep "$ms"
    if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
    wait $pid 2>/dev/null
    grep -q "mirage: error" "$T/k.log" && { errors=$((errors + 1)); sed 's/^/        /' "$T/k.log" | tail -3; }
    grep -q "^resume: .* at step" "$T/k.log" && resumed=$((resumed + 1))
    ls "$T"/k.ckpt*.tmp.* >/dev/null 2>&1 && during=$((during + 1))
    [ -n "$KILL_DEBUG" ] && echo "        round $rounds: ${ms}s, $(grep -c "^step" "$T/k.log") steps, $(grep "^resume" "$T/k.log")"
    grep -q "^done" "$T/k.log" && break
    [ $kills -ge 12 ] && break
done
expect 0 "kill test: finish the run" -- $M train tae $KILL --out "$T/k.safetensors" --resume
grep -q "mirage: error" "$T/out" && errors=$((errors + 1))
[ $errors -eq 0 ] && ok "every restart after kill -9 loaded its checkpoint ($kills kills, $resumed resumes, $during left a half-written checkpoint part or index)" || bad "$errors restarts failed"
cmp -s "$T/k_ref.safetensors" "$T/k.safetensors" && ok "after $kills kills the model is bit-identical to the uninterrupted run" || bad "model after kills differs"
ls "$T"/k.ckpt.step*.part* 2>/dev/null | grep -v '\.tmp\.' | sed 's/.*\.step\([0-9]*\)\..*/\1/' | sort -u >"$T/steps"
[ "$(wc -l <"$T/steps")" -eq 1 ] && ok "only the current checkpoint's parts are kept" || bad "stale checkpoint parts: $(cat "$T/steps" | tr '\n' ' ')"

finish
