#!/usr/bin/env bash
# Installs what mirage needs on Debian 12 (run as root, or with sudo available).
# Required: a C compiler, make, pkg-config, cJSON, cmocka (tests).
# Optional, detected by the build: OpenBLAS (OpenMP flavour), FFmpeg libraries (libavdevice:
# cameras), SDL2 (the preview window), libpng (compressed frame strips in `mirage eval` reports),
# libjpeg-turbo (training shards), libwebsockets (mirage serve), clang (fuzzers). For the tests: the ffmpeg CLI (clips are
# generated and checked with ffmpeg and ffprobe), Xvfb (the window test, skipped without it),
# chromium and nodejs (tests/test_serve.sh: the page in headless Chromium, and the load clients);
# valgrind (CI's memcheck pass over the unit tests: scripts/valgrind_tests.sh).
set -euo pipefail
pkgs="build-essential pkg-config libcjson-dev libcmocka-dev libopenblas-openmp-dev
      libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libavdevice-dev libsdl2-dev libpng-dev libturbojpeg0-dev libwebsockets-dev
      ffmpeg xvfb xauth chromium nodejs valgrind
      clang libclang-rt-14-dev"  # make fuzz: libFuzzer and the sanitizer runtimes are only a Recommends of clang
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "setup: all packages present"
fi
