#!/bin/sh
# `mirage data` end to end (issue 5): shards built from small lavfi clips (mp4, mkv) and
# generated photos (png, jpg) through build/mirage. Checks the split by source file (and that
# it follows the name, not the folder), counts and stored sizes, runs spread over a long video,
# identical shards from identical builds, sample clips the same for the same seed and different
# for another, usage errors (exit 2), missing and unreadable sources (exit 1 or a warning, as
# documented), --strict, and that a failing build (an unreadable source with --strict, a full
# disk: a 400 KiB tmpfs, when root may mount one) or a killed one (kill -9 at several moments)
# leaves the previous shards intact and no damaged shard under a final name. Needs FFmpeg and
# libjpeg-turbo in the build and the ffmpeg program; skips (and says so) without them.
. "$(dirname "$0")/lib.sh"
M=$(cd "$(dirname "$M")" && pwd)/$(basename "$M")
MNT=$T/full # the full-disk case's tmpfs, unmounted at exit
t_start=$(date +%s)

# info field: info_num SPLIT FIELD-REGEX  e.g. info_num train 'sources'
info_line() { sed -n "s/^$1 *| \(.*\)/\1/p" "$T/out"; }

if ! $M --version | grep -q ffmpeg || ! $M --version | grep -q jpeg || ! command -v ffmpeg >/dev/null; then
    skipped "mirage data (needs FFmpeg and libjpeg-turbo in the build, and the ffmpeg program)"
    finish
fi

lavfi() { # lavfi SRC FRAMES OUT [extra ffmpeg args]
    src=$1; n=$2; out=$3; shift 3
    ffmpeg -nostdin -v error -y -f lavfi -i "$src" -frames:v "$n" "$@" "$out" 2>"$T/ff.err" || { cat "$T/ff.err"; exit 1; }
}
mkdir -p "$T/src/videos" "$T/src/photos/deeper"
lavfi "testsrc2=size=320x240:rate=25" 40 "$T/src/videos/alpha.mp4" -c:v mpeg4 -q:v 4
lavfi "mandelbrot=size=240x180:rate=25" 30 "$T/src/videos/bravo.mkv" -c:v mpeg4 -q:v 4
lavfi "testsrc=size=200x150:rate=25" 120 "$T/src/videos/charlie.mp4" -c:v mpeg4 -q:v 4  # long: spread runs
lavfi "smptehdbars=size=640x360" 1 "$T/src/photos/delta.png"
lavfi "testsrc2=size=500x400" 1 "$T/src/photos/echo.jpg"
lavfi "mandelbrot=size=300x400" 1 "$T/src/photos/deeper/foxtrot.png"
lavfi "rgbtestsrc=size=256x256" 1 "$T/src/photos/deeper/golf.jpg"
echo "not a picture" >"$T/src/photos/notes.txt"   # ignored in folders: unknown extension
printf 'garbage that claims to be a video' >"$T/junk.mp4"
B="$M data build --size 64 --photo-size 96 --max-frames 24 --run-frames 8 --quiet"

echo "-- build and info"
expect 0 "build from two folders" -- $M data build --size 64 --photo-size 96 --max-frames 24 --run-frames 8 --out "$T/d1" "$T/src/videos" "$T/src/photos"
grep_out "^source 1/7 | video | alpha.mp4" "a progress line per source"
grep_out "1 other files ignored" "the .txt in the folder is ignored"
grep_out "^done | 7 sources (0 skipped)" "summary line"
check '[ -f "$T/d1/train-000.mgshard" ] && [ -f "$T/d1/val-000.mgshard" ]' "train and val shards written"
check '[ -z "$(ls -A "$T/d1" | grep -v "\.mgshard$")" ]' "nothing else left in the output folder"
expect 0 "info" -- $M data info "$T/d1" --list
tr_src=$(info_line train | sed -n 's/.*| \([0-9]*\) sources:.*/\1/p')
va_src=$(info_line val | sed -n 's/.*| \([0-9]*\) sources:.*/\1/p')
check '[ "$((tr_src + va_src))" -eq 7 ] && [ "$va_src" -ge 1 ] && [ "$tr_src" -ge 1 ]' "7 sources, both splits non-empty (train $tr_src, val $va_src)"
check '[ "$(grep -c "^  video" "$T/out")" -eq 3 ] && [ "$(grep -c "^  photo" "$T/out")" -eq 4 ]' "3 videos and 4 photos listed"
check '[ "$(grep -c "alpha.mp4\|bravo.mkv\|charlie.mp4\|delta.png\|echo.jpg\|foxtrot.png\|golf.jpg" "$T/out")" -eq 7 ]' "each source listed once"
check 'grep -q "alpha.mp4 *320x240 *-> *86x64 *24 frames in 3 runs" "$T/out"' "alpha: 40 frames kept as 3 runs of 8, stored 86x64"
check 'grep -q "charlie.mp4 *200x150 *-> *86x64 *24 frames in 3 runs" "$T/out"' "charlie: 120 frames kept as 3 runs of 8"
check 'grep -q "delta.png *640x360 *-> *170x96 *1 frames" "$T/out"' "photos stored with short side 96"
check 'grep -q "golf.jpg *256x256 *-> *96x96 " "$T/out"' "a square photo is 96x96"
frames=$(grep "^train\|^val" "$T/out" | sed -n 's/.*videos (\([0-9]*\) frames.*/\1/p' | awk '{s+=$1} END {print s}')
check '[ "$frames" -eq 72 ]' "video frames: 3 x 24 = 72 (found $frames)"

echo "-- determinism and the split"
expect 0 "the same build again" -- $B --out "$T/d2" "$T/src/videos" "$T/src/photos"
check 'cmp -s "$T/d1/train-000.mgshard" "$T/d2/train-000.mgshard" && cmp -s "$T/d1/val-000.mgshard" "$T/d2/val-000.mgshard"' "identical inputs give identical shards"
# the split follows the file's name, not its folder or the order given
mkdir -p "$T/moved/x/y"
cp "$T/src/videos/"* "$T/src/photos/delta.png" "$T/moved/x/y/"
cp -r "$T/src/photos/deeper" "$T/src/photos/echo.jpg" "$T/moved/"
expect 0 "build from moved files, other order" -- $B --out "$T/d3" "$T/moved"
$M data info "$T/d1" --list | sed -n '/^val/,$p' | grep '^  ' | awk '{print $2}' | sort >"$T/val1"
$M data info "$T/d3" --list | sed -n '/^val/,$p' | grep '^  ' | awk '{print $2}' | sort >"$T/val3"
check '[ -s "$T/val1" ] && cmp -s "$T/val1" "$T/val3"' "the same sources in val ($(tr '\n' ' ' <"$T/val1"))"
# val guarantee: two sources only -> one each
expect 0 "two sources" -- $B --out "$T/two" "$T/src/videos/alpha.mp4" "$T/src/photos/echo.jpg"
expect 0 "info of two" -- $M data info "$T/two"
check 'grep -q "^train | 1 shard | 1 sources" "$T/out" && grep -q "^val   | 1 shard | 1 sources" "$T/out"' "two sources: one train, one val"
# link loops in a folder end (each folder is searched once); the same file twice counts once
mkdir -p "$T/loop/a/b"
cp "$T/src/videos/alpha.mp4" "$T/loop/a/"; cp "$T/src/photos/echo.jpg" "$T/loop/a/b/"
ln -s ../.. "$T/loop/a/b/up"; ln -s .. "$T/loop/a/b/up2"; ln -s "$T/loop" "$T/loop/a/self"
expect 0 "a folder with link loops" -- timeout 60 $B --out "$T/loopd" "$T/loop" "$T/loop/a/alpha.mp4"
expect 0 "info" -- $M data info "$T/loopd"
check '[ "$(sed -n "s/.*| \([0-9]*\) sources:.*/\1/p" "$T/out" | awk "{s+=\$1} END {print s}")" -eq 2 ]' "two sources, each once"
expect 0 "--val-fraction 0: no val" -- $B --val-fraction 0 --out "$T/noval" "$T/src/videos"
expect 0 "info without val" -- $M data info "$T/noval"
grep_out "^val   | no shards" "info says val has no shards"

echo "-- sample clips"
expect 0 "sample 3 clips" -- $M data sample "$T/d1" --out "$T/s1" --clips 3 --frames 4 --size 64 --seed 5
grep_out "ms/frame" "sample prints the time per frame"
expect 0 "sample again, same seed" -- $M data sample "$T/d1" --out "$T/s2" --clips 3 --frames 4 --size 64 --seed 5
expect 0 "sample, another seed" -- $M data sample "$T/d1" --out "$T/s3" --clips 3 --frames 4 --size 64 --seed 6
check 'cmp -s "$T/s1/clip-000.png" "$T/s2/clip-000.png" && cmp -s "$T/s1/clip-002.png" "$T/s2/clip-002.png"' "same seed, same clips"
check '! cmp -s "$T/s1/clip-001.png" "$T/s3/clip-001.png"' "another seed, other clips"
check '[ "$(ffprobe -v error -show_entries stream=width,height -of csv=s=x:p=0 "$T/s1/clip-000.png")" = 256x64 ]' "a clip image is 4 frames of 64x64 side by side"
expect 0 "sample val" -- $M data sample "$T/d1" --split val --out "$T/s4" --clips 1 --frames 2 --size 32

echo "-- usage and bad input"
expect 2 "no subcommand" -- $M data
expect 2 "unknown subcommand" -- $M data frobnicate
expect 0 "--help" -- $M data build --help
grep_out "--val-fraction" "help documents the flags"
expect 2 "build without --out" -- $M data build "$T/src/videos"
expect 2 "build without sources" -- $M data build --out "$T/x"
expect 2 "bad --val-fraction" -- $M data build --out "$T/x" --val-fraction 2 "$T/src"
expect 2 "bad --quality" -- $M data build --out "$T/x" --quality 0 "$T/src"
expect 2 "sample: bad --size" -- $M data sample "$T/d1" --out "$T/s5" --size 60
expect 1 "a source that does not exist" -- $B --out "$T/x" "$T/src/videos" "$T/nope.mp4"
grep_out "mirage: error: .*nope.mp4: No such file" "the message names the missing source"
check '[ ! -e "$T/x/train-000.mgshard" ]' "nothing written"
expect 0 "an unreadable source is skipped" -- $B --out "$T/d4" "$T/src/videos" "$T/junk.mp4"
grep_out "mirage: warning: skipping .*junk.mp4" "with a warning naming it"
expect 1 "only unreadable sources" -- $B --out "$T/x" "$T/junk.mp4"
grep_out "none of the 1 files could be decoded" "says none could be decoded"
expect 1 "info of an empty folder" -- $M data info "$T/src/videos"
grep_out "no shards" "info says there are no shards"
expect 1 "info of a missing folder" -- $M data info "$T/missing"
cp "$T/src/photos/echo.jpg" "$T/d5.jpg"; mkdir -p "$T/d5"; cp "$T/src/photos/echo.jpg" "$T/d5/train-000.mgshard"
expect 1 "info of a foreign file named like a shard" -- $M data info "$T/d5"
grep_out "train-000.mgshard: not a mirage shard" "names the file and says what is wrong"
head -c 5000 "$T/d1/train-000.mgshard" >"$T/d5/train-000.mgshard"
expect 1 "a truncated shard" -- $M data sample "$T/d5" --out "$T/s6"
grep_out "train-000.mgshard: .*truncated" "says it is truncated"

echo "-- failing and killed builds keep the previous shards"
cp -r "$T/d1" "$T/keep"
expect 1 "--strict with an unreadable source" -- $B --strict --out "$T/d1" "$T/src/videos" "$T/src/photos" "$T/junk.mp4"
check 'cmp -s "$T/d1/train-000.mgshard" "$T/keep/train-000.mgshard" && cmp -s "$T/d1/val-000.mgshard" "$T/keep/val-000.mgshard"' "the old shards are untouched"
check '[ -z "$(ls -A "$T/d1" | grep -v "^train-000.mgshard$\|^val-000.mgshard$")" ]' "and no temporary is left"
# a long build killed at several moments: each time every shard under a final name is whole
lavfi "testsrc2=size=480x360:rate=25" 200 "$T/big.mp4" -c:v mpeg4 -q:v 5
killed_ok=1; hits=0
for delay in 0.1 0.3 0.6 0.9; do
    $M data build --size 240 --max-frames 300 --shard-mib 1 --quiet --out "$T/d1" "$T/big.mp4" "$T/src/videos" "$T/src/photos" >/dev/null 2>&1 &
    pid=$!
    sleep $delay
    kill -9 $pid 2>/dev/null && hits=$((hits + 1)) # the build was still running
    wait $pid 2>/dev/null
    # every shard's header and index (info), and the frames of a few clips (sample); a kill
    # between two renames may mix builds: refused with a clear message, never read
    if ! { $M data info "$T/d1" && $M data sample "$T/d1" --out "$T/s7" --clips 4 --frames 2 --size 32; } >"$T/out" 2>&1; then
        grep -q "mixed builds\|different build" "$T/out" || { killed_ok=0; cat "$T/out"; }
    fi
done
check '[ "$killed_ok" = 1 ] && [ "$hits" -ge 1 ]' "kill -9 at 0.1, 0.3, 0.6, 0.9 s ($hits hit a running build): every shard readable (or a mix refused)"
# a full disk while the shards are written: the build fails, the old shards stay, no temporary
if [ "$(id -u)" = 0 ] && mkdir -p "$T/full" && mount -t tmpfs -o size=400k tmpfs "$T/full" 2>/dev/null; then
    expect 0 "a small build on a 400 KiB file system" -- $B --out "$T/full/d" "$T/src/videos" "$T/src/photos"
    cp -r "$T/full/d" "$T/full_keep"
    expect 1 "a larger build there runs out of space" -- $M data build --size 240 --quiet --out "$T/full/d" "$T/big.mp4" "$T/src/videos"
    grep_out "No space left on device" "the message says why"
    check 'cmp -s "$T/full/d/train-000.mgshard" "$T/full_keep/train-000.mgshard" && cmp -s "$T/full/d/val-000.mgshard" "$T/full_keep/val-000.mgshard"' "the old shards are untouched"
    check '[ -z "$(ls -A "$T/full/d" | grep -v "^train-000.mgshard$\|^val-000.mgshard$")" ]' "and no temporary is left"
    umount "$T/full"
else
    skipped "full disk (needs root and a tmpfs mount)"
fi
expect 0 "the next build completes" -- $M data build --size 240 --max-frames 300 --shard-mib 1 --quiet --out "$T/d1" "$T/big.mp4" "$T/src/videos" "$T/src/photos"
check '[ -z "$(ls -A "$T/d1" | grep "tmp")" ]' "and removes the temporaries killed builds left"
expect 0 "info after the kills" -- $M data info "$T/d1"
check '[ "$(ls "$T/d1" | grep -c "^train-")" -ge 2 ]' "several train shards of 1 MiB"

finish
