#!/bin/sh
# mirage train tae|dit --adv W / --adv-start N (the adversarial term, src/train/adv.h) end to
# end on the tiny config, on shards built from generated clips:
#  - usage errors exit 2 (bad values, more than one GPU), with "mirage: error:";
#  - --adv 0 trains exactly as no flag (model files byte for byte);
#  - with --adv the step line shows D's loss, the generator term and D's accuracy; the term is
#    marked off before --adv-start; the run differs from the plain one; D's tensors go into
#    the checkpoint and not into the model file;
#  - 4 steps = 2 + --resume + 2 bit for bit (D's weights and AdamW state come back), the resume
#    adopts --adv / --adv-start from the checkpoint and refuses other values, and a checkpoint
#    without the term refuses --adv on resume;
#  - --device cuda: without a GPU a plain runtime error (no longer a refusal of --adv); with a
#    GPU and a CUDA build, the GPU step's first figures against the CPU's, and a checkpoint
#    moving both ways between the GPU and the CPU trainer (D's aux.* state);
#  - stage dit (D on the latent): --adv 0 is the plain recipe byte for byte, --size not a
#    multiple of 64 is refused, the step line counts the judged frames, the term changes the
#    run, D (4 input channels) goes into the checkpoint only, 2 + resume + 2 = 4 bit for bit;
#    with a GPU, the GPU step's figures against the CPU's.
. "$(dirname "$0")/lib.sh"
losses() { grep '^step ' "$1" | awk '{print $2, $5}'; } # "k/N loss" per step
advs() { grep '^step ' "$1" | sed 's/.*| adv /adv /; s/ | [0-9.]* ms.*//; s/ frames, [0-9.]* ms/ frames/'; } # "adv D .. G .. acc .." per step

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
expect 2 "--adv with --gpus 2" -- $M train tae $TAE --out "$T/x.safetensors" --adv 0.1 --gpus 2
grep_out "not all-reduced" "data-parallel refusal says why"
have_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && $M --version | grep -q cuda; then have_gpu=1; fi
if [ $have_gpu = 0 ]; then
    expect 1 "--adv --device cuda without a GPU (or without CUDA in the build)" -- $M train tae $TAE --out "$T/x.safetensors" --adv 0.1 --device cuda
    grep_out "mirage: error:" "no-GPU message"
    grep -q "CPU trainer only" "$T/out" && bad "--device cuda --adv still refused" || ok "--device cuda --adv is not refused as such"
fi
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

# ---- the GPU trainer (a GPU and a CUDA build only) ------------------------------------------
if [ $have_gpu = 1 ]; then
    expect 0 "GPU: --adv run, 2 steps" -- $M train tae $TAE --out "$T/adv_g.safetensors" --adv 0.5 --adv-start 2 --device cuda --stop-after 2
    cp "$T/out" "$T/adv_g.log"
    grep_out "adv 0.5 from step 2: PatchGAN D" "GPU: the configuration names the term"
    grep_out "^step 1/4 | loss .* | adv D [0-9.]* G -*[0-9.]* (off) acc [0-9.]*%" "GPU: step 1's D figures"
    # step 1 is taken at the same weights on both: the loss and L_D agree to bf16 precision
    c=$(grep '^step 1/4' "$T/adv_a.log" | sed 's/.*| loss \([0-9.]*\) .*adv D \([0-9.]*\) .*/\1 \2/')
    g=$(grep '^step 1/4' "$T/adv_g.log" | sed 's/.*| loss \([0-9.]*\) .*adv D \([0-9.]*\) .*/\1 \2/')
    echo "$c $g" | awk '{ el = ($1 - $3) / $1; ed = ($2 - $4) / $2; if (el < 0) el = -el; if (ed < 0) ed = -ed;
        exit !(el < 0.01 && ed < 0.003) }' && ok "GPU step 1 = CPU step 1 (loss, L_D: cpu $c gpu $g)" || bad "GPU step 1 (loss, L_D) $g vs CPU $c"
    grep -a -q "aux.m/disc.c0.weight" "$T"/adv_g.ckpt.step2.part* && ok "GPU: D's state in the checkpoint" || bad "GPU: no D in the checkpoint"
    expect 0 "GPU checkpoint resumed on the CPU" -- $M train tae $TAE --out "$T/adv_g.safetensors" --resume --device cpu
    grep_out "^step 4/4 | loss .* | adv D [0-9.]* G -*[0-9.]* acc" "GPU -> CPU: the term on at step 4"
    expect 0 "CPU checkpoint resumed on the GPU" -- $M train tae $TAE --out "$T/adv_b2.safetensors" --adv 0.5 --adv-start 2 --stop-after 2
    expect 0 "... resumed on the GPU" -- $M train tae $TAE --out "$T/adv_b2.safetensors" --resume --device cuda
    grep_out "^step 4/4 | loss .* | adv D [0-9.]* G -*[0-9.]* acc" "CPU -> GPU: the term on at step 4"
    # the GPU's step 3 from the CPU's checkpoint against the CPU's own step 3 (adv_a)
    c=$(grep '^step 3/4' "$T/adv_a.log" | sed 's/.*| loss \([0-9.]*\) .*adv D \([0-9.]*\) .*/\1 \2/')
    g=$(grep '^step 3/4' "$T/out" | sed 's/.*| loss \([0-9.]*\) .*adv D \([0-9.]*\) .*/\1 \2/')
    echo "$c $g" | awk '{ el = ($1 - $3) / $1; ed = ($2 - $4) / $2; if (el < 0) el = -el; if (ed < 0) ed = -ed;
        exit !(el < 0.01 && ed < 0.003) }' && ok "CPU state resumed on the GPU: step 3 = the CPU's (cpu $c gpu $g)" || bad "GPU step 3 from the CPU's checkpoint $g vs CPU $c"
else
    skipped "the GPU trainer with --adv: no GPU (tests/gpu/test_cuda_adv.c and this file's GPU part run on one)"
fi

# ---- stage dit: D on the latent ----------------------------------------------------------------
DIT="--data $D --init $T/plain.safetensors --steps 4 --batch 2 --size 64 --frames 4 --threads 2 --val-every 0 --sample-every 0 --ckpt-every 0"
expect 1 "dit --adv at --size 32 (latents of 4x4)" -- $M train dit $DIT --size 32 --out "$T/dx.safetensors" --adv 0.1
grep_out "multiple of 64" "the size refusal says why"
[ ! -e "$T/dx.safetensors" ] && ok "no model file after the size refusal" || bad "a refused dit run left a model file"
expect 0 "dit 4 steps, no --adv" -- $M train dit $DIT --out "$T/dplain.safetensors"
cp "$T/out" "$T/dplain.log"
expect 0 "dit 4 steps, --adv 0" -- $M train dit $DIT --out "$T/dzero.safetensors" --adv 0
cmp -s "$T/dplain.safetensors" "$T/dzero.safetensors" && ok "dit --adv 0: model file identical to no flag" || bad "dit --adv 0 changed the model"
expect 0 "dit 4 steps, --adv 0.5 --adv-start 1" -- $M train dit $DIT --out "$T/dadv.safetensors" --adv 0.5 --adv-start 1
cp "$T/out" "$T/dadv.log"
grep_out "adv 0.5 from step 1: PatchGAN D" "dit: the configuration names the term"
grep_out "^step 1/4 | loss .* | adv D [0-9.]* G -*[0-9.]* (off) acc [0-9.]*% on [0-9]* frames" "dit step 1: D's figures, the term off, frames judged"
grep_out "^step 2/4 | loss .* | adv D [0-9.]* G -*[0-9.]* acc [0-9.]*% on [0-9]* frames" "dit step 2: the term on"
grep -q "on 0 frames" "$T/out" && echo "        (a step judged no frame: every frame under sigma 0.25)" || true
l_plain=$(losses "$T/dplain.log" | sed -n 1p); l_adv=$(losses "$T/dadv.log" | sed -n 1p)
[ "$l_plain" = "$l_adv" ] && ok "dit step 1 (term off) trains as the plain run ($l_adv)" || bad "dit step 1 loss $l_adv vs $l_plain"
l_plain=$(losses "$T/dplain.log" | sed -n 4p); l_adv=$(losses "$T/dadv.log" | sed -n 4p)
[ "$l_plain" != "$l_adv" ] && ok "dit: with the term on the run differs ($l_adv vs $l_plain)" || bad "dit: the term changed nothing"
expect 2 "--adv-lr without --adv" -- $M train dit $DIT --out "$T/dx.safetensors" --adv-lr 1e-3
grep_out "needs --adv" "the --adv-lr refusal says why"
expect 0 "dit --adv --adv-lr 1e-2, 4 steps" -- $M train dit $DIT --out "$T/dlr.safetensors" --adv 0.5 --adv-start 1 --adv-lr 1e-2
grep_out "AdamW at --adv-lr" "the configuration names D's own lr"
cp "$T/out" "$T/dlr.log"
a1=$(advs "$T/dadv.log" | sed -n 2p); a2=$(advs "$T/dlr.log" | sed -n 2p)
[ "$a1" != "$a2" ] && ok "D's lr changes D (step 2: $a2 vs $a1)" || bad "--adv-lr changed nothing"
expect 0 "dit --adv with a checkpoint (2 steps)" -- $M train dit $DIT --out "$T/dadv2.safetensors" --adv 0.5 --adv-start 1 --stop-after 2
cp "$T/out" "$T/dadv2.log"
if grep -a -q "disc.c0" "$T/dadv.safetensors"; then bad "dit: D's tensors leaked into the model file"; else ok "dit: no D tensor in the model file"; fi
grep -a -o 'aux.param/disc.c0.weight":{"dtype":"F32","shape":\[64,4,3,3\]' "$T"/dadv2.ckpt.step2.part* >/dev/null \
    && ok "dit: D (64 x 4 x 3 x 3 first conv: the latent's channels) in the checkpoint" || bad "dit: no latent D in the checkpoint"
expect 2 "dit resume with another --adv-lr" -- $M train dit $DIT --out "$T/dadv2.safetensors" --resume --adv-lr 1e-3
grep_out "differs from the checkpoint" "the resume names the changed --adv-lr"
expect 0 "dit --adv resumed (adopts --adv)" -- $M train dit $DIT --out "$T/dadv2.safetensors" --resume
cat "$T/out" >>"$T/dadv2.log"
losses "$T/dadv.log" >"$T/la"; losses "$T/dadv2.log" >"$T/lb"
advs "$T/dadv.log" >"$T/aa"; advs "$T/dadv2.log" >"$T/ab"
if cmp -s "$T/la" "$T/lb" && cmp -s "$T/aa" "$T/ab"; then ok "dit: 2 steps + resume + 2 steps = 4 steps: losses and adv figures bit-exact"
else bad "resumed dit --adv run differs"; paste "$T/la" "$T/lb" "$T/aa" "$T/ab" | sed 's/^/        /'; fi
cmp -s "$T/dadv.safetensors" "$T/dadv2.safetensors" && ok "dit: model files identical after resume" || bad "dit: model files differ after resume"
if [ $have_gpu = 1 ]; then
    expect 0 "GPU: dit --adv, 2 steps" -- $M train dit $DIT --out "$T/dadv_g.safetensors" --adv 0.5 --adv-start 1 --device cuda --stop-after 2
    cp "$T/out" "$T/dadv_g.log"
    # step 1 at the same weights: the loss and L_D agree to bf16 precision; step 2 follows the term
    for k in 1 2; do
        c=$(grep "^step $k/4" "$T/dadv.log" | sed 's/.*| loss \([0-9.]*\) .*adv D \([0-9.]*\) .*/\1 \2/')
        g=$(grep "^step $k/4" "$T/dadv_g.log" | sed 's/.*| loss \([0-9.]*\) .*adv D \([0-9.]*\) .*/\1 \2/')
        echo "$c $g" | awk '{ el = ($1 - $3) / $1; ed = ($2 - $4) / $2; if (el < 0) el = -el; if (ed < 0) ed = -ed;
            exit !(el < 0.01 && ed < 0.01) }' && ok "GPU dit step $k = CPU step $k (loss, L_D: cpu $c gpu $g)" || bad "GPU dit step $k (loss, L_D) $g vs CPU $c"
    done
fi
finish
