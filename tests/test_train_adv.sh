#!/bin/sh
# mirage train tae --adv W / --adv-start N (the adversarial decoder term, src/train/adv.h) end to
# end on the tiny config, on shards built from generated clips:
#  - usage errors exit 2 (bad values, stage dit, --device cuda), with "mirage: error:";
#  - --adv 0 trains exactly as no flag (model files byte for byte);
#  - with --adv the step line shows D's loss, the generator term and D's accuracy; the term is
#    marked off before --adv-start; the run differs from the plain one; D's tensors go into
#    the checkpoint and not into the model file;
#  - 4 steps = 2 + --resume + 2 bit for bit (D's weights and AdamW state come back), the resume
#    adopts --adv / --adv-start from the checkpoint and refuses other values, and a checkpoint
#    without the term refuses --adv on resume.
. "$(dirname "$0")/lib.sh"
losses() { grep '^step ' "$1" | awk '{print $2, $5}'; } # "k/N loss" per step
advs() { grep '^step ' "$1" | sed 's/.*| adv /adv /; s/ | [0-9.]* ms.*//'; } # "adv D .. G .. acc .." per step

if ! command -v ffmpeg >/dev/null 2>&1; then skipped "no ffmpeg program to make test clips"; finish; fi

mkdir -p "$T/src"
for g in testsrc2 rgbtestsrc; do
    ffmpeg -v error -f lavfi -i "$g=size=96x80:rate=10" -frames:v 12 -pix_fmt yuv420p "$T/src/$g.y4m" || bad "ffmpeg $g"
done
ffmpeg -v error -f lavfi -i "mandelbrot=size=96x96" -frames:v 1 "$T/src/photo1.png" || bad "ffmpeg photo"
expect 0 "data build" -- $M data build --out "$T/data" --size 64 --photo-size 96 --val-fraction 0.3 --quiet "$T/src"
D=$T/data
TAE="--data $D --config tiny --steps 4 --batch 2 --size 32 --threads 2 --val-every 0 --sample-every 0 --ckpt-every 0"

# ---- usage ----------------------------------------------------------------------------------
expect 0 "train --help" -- $M train --help
grep_out "adv-start" "help lists --adv-start"
expect 2 "--adv negative" -- $M train tae $TAE --out "$T/x.safetensors" --adv -1
grep_out "mirage: error:" "bad --adv message"
expect 2 "--adv not a number" -- $M train tae $TAE --out "$T/x.safetensors" --adv much
expect 2 "--adv-start negative" -- $M train tae $TAE --out "$T/x.safetensors" --adv 0.1 --adv-start -2
expect 2 "--adv with stage dit" -- $M train dit --data "$D" --out "$T/x.safetensors" --adv 0.1
grep_out "options of stage tae" "stage dit refusal says why"
expect 2 "--adv with --device cuda" -- $M train tae $TAE --out "$T/x.safetensors" --adv 0.1 --device cuda
grep_out "runs on the CPU trainer only so far" "cuda refusal says why"
[ ! -e "$T/x.safetensors" ] && ok "no model file after the refusals" || bad "a refused run left a model file"

# ---- --adv 0 is the plain recipe --------------------------------------------------------------
expect 0 "tae 4 steps, no --adv" -- $M train tae $TAE --out "$T/plain.safetensors"
cp "$T/out" "$T/plain.log"
expect 0 "tae 4 steps, --adv 0" -- $M train tae $TAE --out "$T/zero.safetensors" --adv 0
cmp -s "$T/plain.safetensors" "$T/zero.safetensors" && ok "--adv 0: model file identical to no flag" || bad "--adv 0 changed the model"
grep -q "| adv D" "$T/out" && bad "--adv 0 prints adv figures" || ok "--adv 0 prints no adv figures"

# ---- --adv on ----------------------------------------------------------------------------------
expect 0 "tae 4 steps, --adv 0.5 --adv-start 2" -- $M train tae $TAE --out "$T/adv_a.safetensors" --adv 0.5 --adv-start 2
cp "$T/out" "$T/adv_a.log"
grep_out "adv 0.5 from step 2: PatchGAN D" "the configuration names the term"
grep_out "^step 1/4 | loss .* | adv D [0-9.]* G -*[0-9.]* (off) acc [0-9.]*%" "step 1: D's loss, the term (off), accuracy"
grep_out "^step 3/4 | loss .* | adv D [0-9.]* G -*[0-9.]* acc [0-9.]*%" "step 3: the term on"
grep -q "^step 3/4 .*(off)" "$T/out" && bad "the term still off at step 3" || ok "the term is on from --adv-start"
l_plain=$(losses "$T/plain.log" | sed -n 2p); l_adv=$(losses "$T/adv_a.log" | sed -n 2p)
[ "$l_plain" = "$l_adv" ] && ok "before --adv-start the model trains as without the term ($l_adv)" || bad "step 2 loss $l_adv vs $l_plain"
l_plain=$(losses "$T/plain.log" | sed -n 4p); l_adv=$(losses "$T/adv_a.log" | sed -n 4p)
[ "$l_plain" != "$l_adv" ] && ok "with the term on the run differs ($l_adv vs $l_plain)" || bad "the term changed nothing"
expect 0 "info reads the model" -- $M info "$T/adv_a.safetensors"
if grep -a -q "disc.c0" "$T/adv_a.safetensors"; then bad "D's tensors leaked into the model file"; else ok "no D tensor in the model file"; fi
grep -a -q "aux.param/disc.c0.weight" "$T"/adv_a.ckpt.step4.part* && ok "D's weights in the checkpoint" || bad "no D in the checkpoint"
grep -a -q "aux.v/disc.c3.bias" "$T"/adv_a.ckpt.step4.part* && ok "D's AdamW state in the checkpoint" || bad "no D moments in the checkpoint"

# ---- resume: 2 + 2 = 4, adoption and refusal -----------------------------------------------------
expect 0 "--adv run, 2 steps (--stop-after 2)" -- $M train tae $TAE --out "$T/adv_b.safetensors" --adv 0.5 --adv-start 2 --stop-after 2
cp "$T/out" "$T/adv_b.log"
expect 2 "resume with another --adv" -- $M train tae $TAE --out "$T/adv_b.safetensors" --resume --adv 0.25
grep_out "differs from the checkpoint" "resume names the changed --adv"
expect 2 "resume with another --adv-start" -- $M train tae $TAE --out "$T/adv_b.safetensors" --resume --adv-start 1
expect 2 "resume with --adv 0" -- $M train tae $TAE --out "$T/adv_b.safetensors" --resume --adv 0
expect 0 "resume without the flags: adopted from the checkpoint" -- $M train tae $TAE --out "$T/adv_b.safetensors" --resume
grep_out "adv 0.5 from step 2" "the resumed run has the checkpoint's --adv and --adv-start"
cat "$T/out" >>"$T/adv_b.log"
losses "$T/adv_a.log" >"$T/la"; losses "$T/adv_b.log" >"$T/lb"
advs "$T/adv_a.log" >"$T/aa"; advs "$T/adv_b.log" >"$T/ab"
if cmp -s "$T/la" "$T/lb" && cmp -s "$T/aa" "$T/ab"; then ok "2 steps + resume + 2 steps = 4 steps: losses and adv figures bit-exact"
else bad "resumed --adv run differs"; paste "$T/la" "$T/lb" "$T/aa" "$T/ab" | sed 's/^/        /'; fi
cmp -s "$T/adv_a.safetensors" "$T/adv_b.safetensors" && ok "model files identical after resume" || bad "model files differ after resume"
expect 0 "a plain run, 2 steps" -- $M train tae $TAE --out "$T/p2.safetensors" --stop-after 2
expect 2 "resume it with --adv" -- $M train tae $TAE --out "$T/p2.safetensors" --resume --adv 0.5
grep_out "differs from the checkpoint's 0" "a checkpoint without the term refuses --adv"
finish
